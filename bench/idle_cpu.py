#!/usr/bin/env python3
"""idle_cpu.py: the CPU a server spends when nothing happens and nothing differs
(issue 10: the periodic exchange must cost under 1 % of a core).

Starts the default five servers on free ports (no state on disk), stores
N clients at Bailey, lets floods and exchanges settle, then reads each
server's user + system CPU from /proc over 30 s of quiet.

    HERD_SERVER=build/herd-server python3 bench/idle_cpu.py
"""
import os, sys, time, socket
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
from herdtest import Herd, iamat_line, now_text
herd = Herd(extra={"state_dir": None})
try:
    herd.start_all()
    port = herd.port("Bailey")
    s = socket.create_connection(("127.0.0.1", port))
    N = 20000
    buf = b"".join(iamat_line(b"idle-%d" % i) + b"\n" for i in range(N))
    s.sendall(buf)
    got = 0
    while got < N:
        got += s.recv(1 << 20).count(b"\n")
    s.close()
    time.sleep(5)  # let floods and exchanges settle (a measurement, not a test)
    def cpu(pid):
        f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    pids = {n: herd.pid(n) for n in herd.names}
    c0 = {n: cpu(p) for n, p in pids.items()}
    t0 = time.monotonic()
    time.sleep(30)
    dt = time.monotonic() - t0
    for n, p in pids.items():
        print("%s: %.2f%% of a core over %.0f s with %d clients held, nothing differing" % (n, 100 * (cpu(p) - c0[n]) / dt, dt, N))
finally:
    herd.close()
