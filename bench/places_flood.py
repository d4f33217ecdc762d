#!/usr/bin/env python3
"""places_flood.py: the server's peak memory under a shared-call WHATSAT flood
(issue 18, item 1).

One server, its Places URL a local stand-in that answers every call after
DELAY seconds with a 20-place body (about 17 KB). One client reports a
position; then CONNS connections each send PIPELINE copies of
`WHATSAT <id> 12 20` at once and never read. Every WHATSAT asks the same
upstream call, so all of them would share one body. While the flood runs
the script samples the server's VmRSS and /metrics (how long it takes to
answer) every 50 ms, and reports the peak (VmHWM), the metrics that say how
the WHATSATs were answered, and the slowest /metrics.

    HERD_SERVER=build/herd-server python3 bench/places_flood.py [CONNS PIPELINE DELAY]

Defaults: 1000 connections x 128 WHATSATs, Places taking 1 s.
"""
import os
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
from herdtest import PLACES_KEY_ENV, Herd, HerdError, free_ports, iamat_line  # noqa: E402
from places_standin import PlacesStandIn  # noqa: E402


def status_kb(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def main():
    conns = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    pipeline = int(sys.argv[2]) if len(sys.argv) > 2 else 128
    delay = float(sys.argv[3]) if len(sys.argv) > 3 else 1.0
    places = PlacesStandIn(key="flood-key", results=20).start()
    herd = Herd(servers=["Bailey"], places_url=places.url, env={PLACES_KEY_ENV: "flood-key"},
                extra={"state_dir": None, "servers": {"Bailey": {"admin_port": free_ports(1)[0]}}})
    socks = []
    try:
        places.set_mode("slow", delay=delay, results=20)
        herd.start("Bailey")
        pid = herd.pid("Bailey")
        reply = herd.send("Bailey", iamat_line(b"kiwi.flood", pos=b"+34.068930-118.445127") + b"\n")
        assert reply.startswith(b"AT "), reply
        rss0 = status_kb(pid, "VmRSS")
        line = b"WHATSAT kiwi.flood 12 20\n" * pipeline
        port = herd.port("Bailey")
        t0 = time.monotonic()
        for _ in range(conns):
            s = socket.create_connection(("127.0.0.1", port))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(line)
            socks.append(s)
        sent = time.monotonic() - t0
        worst_metrics = 0.0
        peak_rss = 0
        samples = failed = 0
        quiet_since = None
        m = {}
        deadline = time.monotonic() + 60 + 2 * delay
        while time.monotonic() < deadline:
            peak_rss = max(peak_rss, status_kb(pid, "VmRSS"))
            t = time.monotonic()
            try:
                m = herd.metrics("Bailey", timeout=30)
            except (HerdError, OSError):
                failed += 1
                m = {}
            worst_metrics = max(worst_metrics, time.monotonic() - t)
            samples += 1
            pending = m.get(("herd_places_pending", frozenset()), 1)
            if pending == 0 and time.monotonic() - t0 > delay:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since > 1.0:
                    break
            else:
                quiet_since = None
            time.sleep(0.05)
        hwm = status_kb(pid, "VmHWM")
        after = status_kb(pid, "VmRSS")

        def metric(name, **labels):
            return int(m.get((name, frozenset(labels.items())), 0))

        print("flood: %d connections x %d pipelined WHATSATs (sent in %.2f s), Places %.1f s, body 20 places"
              % (conns, pipeline, sent, delay))
        print("server RSS: %.1f MB before, peak (VmHWM) %.1f MB, %.1f MB after; sampled peak %.1f MB"
              % (rss0 / 1024, hwm / 1024, after / 1024, peak_rss / 1024))
        print("/metrics: %d asked, %d failed, slowest %.3f s" % (samples, failed, worst_metrics))
        print("upstream calls %d; WHATSATs: upstream %d, shared %d, errors %d (refused: max_queued %d, "
              "worker_full %d); abandoned: client_gone %d, deadline %d"
              % (places.count, metric("herd_places_requests_total", result="upstream"),
                 metric("herd_places_requests_total", result="shared"),
                 metric("herd_places_requests_total", result="error"),
                 metric("herd_places_refused_total", reason="max_queued"),
                 metric("herd_places_refused_total", reason="worker_full"),
                 metric("herd_places_abandoned_total", reason="client_gone"),
                 metric("herd_places_abandoned_total", reason="deadline")))
    finally:
        for s in socks:
            s.close()
        herd.close()
        places.stop()


if __name__ == "__main__":
    main()
