#!/usr/bin/env python3
"""CPU seconds that a set of server processes spend on one load run.

    cpu_per_update.py --pids 101,102,... [--redis-ports P,R1,R2,...]
                      [--perf FILE] [--timeout S] -- COMMAND ARGS...

Reads utime + stime (and cutime + cstime: children it reaped, such as a
Redis AOF rewrite) of every --pids process from /proc/PID/stat, runs
COMMAND (its output passes through), then waits until the work the run
caused has ended: the Redis replicas (--redis-ports, the primary first)
have applied every byte of the primary's replication stream, and the
processes' CPU has stopped growing (less than --quiet-cpu seconds in a
--quiet-window). Then it reads the CPU again and prints one line

    CPU cpu_s=... run_s=... settle_s=... ctxsw=... rc=...

so that a caller can divide cpu_s by the updates that COMMAND saw
acknowledged: the servers' CPU for the whole run, propagation included.
ctxsw counts the context switches of the processes' threads over the same
span (wake-ups: a thread that ended during it is not counted).
With --perf FILE a system-wide `perf record -a -g` runs over the same
span and stops (SIGINT) before the line is printed. Every process started
here is stopped before it exits, also on SIGINT and SIGTERM.
"""
import argparse
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid):
    """utime + stime + cutime + cstime of PID in seconds (None if gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # The command name may hold spaces and parentheses: fields follow the last ')'.
    fields = data[data.rindex(")") + 2:].split()
    # fields[0] is the state (field 3): utime..cstime are fields 14..17.
    return sum(int(x) for x in fields[11:15]) / CLK_TCK


def total_cpu_s(pids):
    total = 0.0
    for p in pids:
        c = proc_cpu_s(p)
        if c is None:
            raise SystemExit(f"cpu_per_update: process {p} is gone")
        total += c
    return total


def ctx_switches(pids):
    """Context switches so far of every thread of PIDS that is alive now
    (a thread that has ended takes its count with it)."""
    total = 0
    for p in pids:
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tids:
            try:
                with open(f"/proc/{p}/task/{t}/status") as f:
                    for line in f:
                        if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                            total += int(line.split()[1])
            except OSError:
                pass
    return total


def redis_info(port, timeout=2.0):
    """The fields of INFO replication of the Redis on 127.0.0.1:PORT."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"INFO replication\r\n")
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
            # A bulk string: $LEN\r\n<LEN bytes>\r\n
            if buf.startswith(b"$") and b"\r\n" in buf:
                head, _, rest = buf.partition(b"\r\n")
                if len(rest) >= int(head[1:]) + 2:
                    break
    out = {}
    for line in buf.decode("ascii", "replace").splitlines():
        k, sep, v = line.partition(":")
        if sep:
            out[k.strip()] = v.strip()
    return out


def redis_caught_up(ports):
    """True once every replica has applied the primary's whole stream."""
    primary = redis_info(ports[0])
    want = int(primary.get("master_repl_offset", "0"))
    for p in ports[1:]:
        if int(redis_info(p).get("slave_repl_offset", "-1")) < want:
            return False
    return True


def start_perf(out, freq, children):
    """Starts `perf record -a -g` into OUT with its events off, then turns
    them on and waits for perf's acknowledgement: perf takes a while to set
    up on a busy machine, and the run must not begin before it records."""
    tmp = tempfile.mkdtemp(prefix="cpu-perf-")
    ctl, ack = os.path.join(tmp, "ctl"), os.path.join(tmp, "ack")
    os.mkfifo(ctl)
    os.mkfifo(ack)
    perf = subprocess.Popen(["perf", "record", "-a", "-g", "-F", str(freq), "-D", "-1",
                             "--control", f"fifo:{ctl},{ack}", "-o", out, "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children.append(perf)
    # Both ends opened read-write: neither open waits for perf.
    cfd = os.open(ctl, os.O_RDWR)
    afd = os.open(ack, os.O_RDWR | os.O_NONBLOCK)
    try:
        os.write(cfd, b"enable\n")
        ready, _, _ = select.select([afd], [], [], 60)
        if not ready or not os.read(afd, 64).startswith(b"ack"):
            raise SystemExit("cpu_per_update: perf record did not start recording")
    finally:
        os.close(cfd)
        os.close(afd)
        shutil.rmtree(tmp, ignore_errors=True)
    return perf


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pids", required=True, help="comma-separated server pids")
    ap.add_argument("--redis-ports", default="", help="Redis primary port, then its replicas' ports")
    ap.add_argument("--perf", default="", help="perf record -a -g into this file over the run")
    ap.add_argument("--perf-freq", type=int, default=999, help="perf sampling frequency (Hz)")
    ap.add_argument("--timeout", type=float, default=300, help="limit on COMMAND (s)")
    ap.add_argument("--settle-max", type=float, default=60, help="limit on the wait after it (s)")
    ap.add_argument("--quiet-window", type=float, default=0.3, help="seconds of a quiet sample")
    ap.add_argument("--quiet-cpu", type=float, default=0.03,
                    help="CPU seconds, all --pids together, that still count as quiet in a window")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not cmd:
        ap.error("no COMMAND")
    pids = [int(p) for p in a.pids.split(",") if p]
    rports = [int(p) for p in a.redis_ports.split(",") if p]

    children = []
    perf = None

    def stop_children(*_):
        for ch in children:
            if ch.poll() is None:
                ch.send_signal(signal.SIGINT if ch is perf else signal.SIGTERM)
        for ch in children:
            try:
                ch.wait(timeout=20)
            except subprocess.TimeoutExpired:
                ch.kill()
                ch.wait()

    def on_signal(signum, _frame):
        stop_children()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    try:
        if a.perf:
            perf = start_perf(a.perf, a.perf_freq, children)
        ctx0 = ctx_switches(pids)
        cpu0 = total_cpu_s(pids)
        t0 = time.monotonic()
        run = subprocess.Popen(cmd)
        children.append(run)
        try:
            rc = run.wait(timeout=a.timeout)
        except subprocess.TimeoutExpired:
            run.kill()
            rc = run.wait()
            print(f"cpu_per_update: {cmd[0]} ran past {a.timeout} s and was killed", file=sys.stderr)
        t1 = time.monotonic()
        deadline = t1 + a.settle_max
        while rports and time.monotonic() < deadline:
            try:
                if redis_caught_up(rports):
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        # Then until the servers' CPU stops growing (two quiet windows in a
        # row): the herd floods each update on after Bailey has answered it,
        # and writes it to disk. The reading taken as the quiet began ends
        # the span, so idle time is not counted.
        mark, t2, ctx1 = total_cpu_s(pids), time.monotonic(), ctx_switches(pids)
        last, quiet = mark, 0
        while time.monotonic() < deadline and quiet < 2:
            time.sleep(a.quiet_window)
            now = total_cpu_s(pids)
            if now - last <= a.quiet_cpu:
                quiet += 1
            else:
                quiet = 0
                mark, t2, ctx1 = now, time.monotonic(), ctx_switches(pids)
            last = now
        cpu1 = mark
    finally:
        stop_children()
    if perf is not None and perf.returncode not in (0, -signal.SIGINT, 130):
        print(f"cpu_per_update: perf record exited with {perf.returncode}", file=sys.stderr)
    print(f"CPU cpu_s={cpu1 - cpu0:.3f} run_s={t1 - t0:.3f} settle_s={t2 - t1:.3f} ctxsw={ctx1 - ctx0} rc={rc}",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
