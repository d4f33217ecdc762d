#!/usr/bin/env python3
"""Durable state benchmarks (issue 13): what the journal costs and how fast
a server comes back.

  bench/state_bench.py                       # 3 runs, 5 s each, 1,000,000 records
  RUNS=5 DURATION=5 RECORDS=1000000 bench/state_bench.py
  RUNS=0 bench/state_bench.py                # start-up figures only
  RECORDS=0 bench/state_bench.py             # throughput only

1. IAMAT throughput of a lone server (no neighbours), 32 connections x 16
   pipelined, 1,000 clients (every IAMAT is stored, so every one is
   journaled), with state_dir null and with fsync never / everysec / always,
   the four interleaved in each run; medians, and each mode's ratio to null.
2. Start-up: RECORDS distinct clients stored (herd-bench mem), the server
   stopped, then started again: time from exec to "READY" (3 times), the
   load time the server logs, and the bytes on disk per record. Then the
   same after a compaction (snapshot instead of journal).

Uses $BUILD_DIR (default build/) herd-server and bench/herd-bench, free
ports on 127.0.0.1 and a temporary folder; every server it starts is stopped.
Human lines go to stderr, the table to stdout.
"""

import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("BUILD_DIR", os.path.join(ROOT, "build"))
SERVER = os.path.join(BUILD, "herd-server")
BENCH = os.path.join(BUILD, "bench", "herd-bench")
RUNS = int(os.environ.get("RUNS", "3"))
DURATION = os.environ.get("DURATION", "5")
RECORDS = int(os.environ.get("RECORDS", "1000000"))
MODES = ["null", "never", "everysec", "always"]


def say(*a):
    print(*a, file=sys.stderr, flush=True)


def free_ports(n):
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Server:
    """One lone herd-server in its own folder."""

    def __init__(self, tmp, mode, compact_hint=None):
        self.dir = tmp
        self.port, peer = free_ports(2)
        topo = {
            "servers": {"Bailey": {"host": "127.0.0.1", "client_port": self.port, "peer_port": peer}},
            "links": [],
            "places": {"url": "http://127.0.0.1:9/none", "key_env": "HERD_BENCH_NO_KEY"},
            "log_dir": "logs",
            "state_dir": None if mode == "null" else "state",
            "fsync": "everysec" if mode == "null" else mode,
        }
        self.topo = os.path.join(tmp, "topology.json")
        with open(self.topo, "w") as f:
            json.dump(topo, f)
        self.proc = None

    def start(self):
        """Starts it; returns seconds from exec to the READY line."""
        t0 = time.monotonic()
        self.proc = subprocess.Popen([SERVER, "--config", self.topo, "Bailey"], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, cwd=self.dir)
        line = self.proc.stdout.readline()
        took = time.monotonic() - t0
        if line.strip() != b"READY Bailey":
            raise SystemExit("server did not start: %r %r" % (line, self.proc.stderr.read()))
        return took

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log(self):
        with open(os.path.join(self.dir, "logs", "Bailey.log"), errors="replace") as f:
            return f.read()

    def trim_log(self):
        path = os.path.join(self.dir, "logs", "Bailey.log")
        if os.path.exists(path):
            open(path, "w").close()

    def state_bytes(self):
        d = os.path.join(self.dir, "state", "Bailey")
        return {f: os.path.getsize(os.path.join(d, f)) for f in sorted(os.listdir(d))}


def bench(*args):
    out = subprocess.run([BENCH] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600)
    for line in out.stdout.decode().splitlines():
        if line.startswith("RESULT"):
            return dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
    raise SystemExit("herd-bench %s: no RESULT: %s" % (" ".join(args), out.stderr.decode()[-2000:]))


def throughput():
    res = {m: [] for m in MODES}
    for r in range(RUNS):
        for mode in MODES:
            tmp = tempfile.mkdtemp(prefix="herd-state-bench-")
            s = Server(tmp, mode)
            try:
                s.start()
                out = bench("load", "--port", str(s.port), "--expect-name", "Bailey", "-c", "32", "-d", "16",
                            "--duration", DURATION, "--pid", str(s.proc.pid), "--label", "run%d" % r)
                res[mode].append(out)
                say("run %d %-8s %10s cmd/s  p50 %s us  p99 %s us" % (r + 1, mode, out["tput"], out["lat_p50_us"],
                                                                      out["lat_p99_us"]))
            finally:
                s.stop()
                shutil.rmtree(tmp, ignore_errors=True)
    return res


def med(rows, key):
    return statistics.median(float(r[key]) for r in rows)


def startup():
    tmp = tempfile.mkdtemp(prefix="herd-state-bench-")
    s = Server(tmp, "everysec")
    rows = []
    try:
        s.start()
        say("storing %d clients..." % RECORDS)
        bench("mem", "--port", str(s.port), "--pid", str(s.proc.pid), "--steps", str(RECORDS), "--prefix",
              "st-", "--timeout", "60")
        s.stop()
        files = s.state_bytes()
        say("state files: %s" % files)
        rows.append(("bytes on disk per live record (all files)", "%.1f" % (sum(files.values()) / RECORDS)))
        times = []
        for _ in range(3):
            s.trim_log()
            times.append(s.start())
            s.stop()
        m = re.findall(r"loaded (\d+) records in ([\d.]+) s", s.log())
        say("last start: %s" % [l for l in s.log().splitlines() if "state:" in l])
        m = m[-1] if m else None
        rows.append(("start with %d clients on disk: READY after (s)" % RECORDS,
                     "%.3f (min %.3f)" % (statistics.median(times), min(times))))
        rows.append(("  of which loading (s, server's log)", m[1] if m else "-"))
        # The same table as a snapshot: the writer compacts once the journal
        # holds more records than the table, so every client is stored once
        # more, then a few more updates push the journal past it.
        s.start()
        bench("mem", "--port", str(s.port), "--pid", str(s.proc.pid), "--steps", str(RECORDS), "--prefix",
              "st-", "--timeout", "60")
        # Then small bursts until the writer has compacted (the journal is
        # past the table), so that little lands in the new journal.
        deadline = time.monotonic() + 180
        while "compacted:" not in s.log() and time.monotonic() < deadline:
            bench("load", "--port", str(s.port), "--expect-name", "Bailey", "-c", "8", "-d", "16", "--keys",
                  "1000", "--count", "20000", "--duration", "0", "--warmup", "0")
            time.sleep(0.5)  # pacing of the bursts, not a wait for a result
        m = re.search(r"compacted: snapshot of (\d+) records \((\d+) bytes\).* in ([\d.]+) s", s.log())
        s.stop()
        if m:
            rows.append(("compaction of %s records, off the node thread (s)" % m.group(1), m.group(3)))
            files = s.state_bytes()
            rows.append(("bytes on disk per record (snapshot)", "%.1f" % (files.get("snapshot", 0) / int(m.group(1)))))
            times = []
            for _ in range(3):
                s.trim_log()
                times.append(s.start())
                s.stop()
            m2 = re.findall(r"loaded (\d+) records in ([\d.]+) s", s.log())
            say("last start: %s" % [l for l in s.log().splitlines() if "state:" in l])
            m2 = m2[-1] if m2 else ("?", "-")
            rows.append(("start from the snapshot (+ journal since: %s records loaded): READY after (s)" % m2[0],
                         "%.3f (min %.3f)" % (statistics.median(times), min(times))))
            rows.append(("  of which loading (s, server's log)", m2[1]))
        empty = tempfile.mkdtemp(prefix="herd-state-bench-")
        e = Server(empty, "null")
        t = e.start()
        e.stop()
        shutil.rmtree(empty, ignore_errors=True)
        rows.append(("start with state_dir null: READY after (s)", "%.3f" % t))
    finally:
        s.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def main():
    for path in (SERVER, BENCH):
        if not os.access(path, os.X_OK):
            raise SystemExit("%s missing: build first (cmake --build %s)" % (path, BUILD))
    say("machine: %d cores, load average %s" % (os.cpu_count(), open("/proc/loadavg").read().split()[:3]))
    res = throughput()
    if RUNS > 0:
        print_throughput(res)
    if RECORDS > 0:
        for k, v in startup():
            print("%-62s %s" % (k, v))


def print_throughput(res):
    print("IAMAT, lone server, 32 conns x 16, 1,000 clients, medians of %d runs of %s s" % (RUNS, DURATION))
    print("%-10s %12s %8s %10s %10s" % ("state", "cmd/s", "ratio", "p50 us", "p99 us"))
    base = med(res["null"], "tput")
    for mode in MODES:
        print("%-10s %12.0f %8.3f %10.1f %10.1f" % (mode, med(res[mode], "tput"), med(res[mode], "tput") / base,
                                                  med(res[mode], "lat_p50_us"), med(res[mode], "lat_p99_us")))


if __name__ == "__main__":
    main()
