"""Observability (issue 23): the build and process metrics, the update-age
histogram, one peer-update family, /livez and /readyz as Kubernetes uses
them (PROTOCOL.md sections 8 and 9), the admin port while the state loads,
the admin connection cap against many addresses (issue 18 item 7), and the
Grafana dashboard's metric names."""

import http.client
import json
import os
import re
import resource
import socket
import subprocess
import sys
import threading
import time
import unittest
import uuid

from herdtest import HOST, POS, HerdTestCase, free_ports, iamat_line, now_text, ns_text, server_binary, wait_until

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "deploy", "lib"))
from metrics import Metrics  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
DASHBOARD = os.path.join(ROOT, "deploy", "grafana", "herd.json")
LINK_TIMEOUT = 20
# A neighbour that stops answering is down after the links' liveness time
# (5 s) and a handshake time-out: readiness follows within this.
FALL_TIMEOUT = 30



def uid(tag):
    return ("%s-%s" % (tag, uuid.uuid4().hex[:10])).encode()


def http_get(herd, name, path, timeout=5, source=None):
    """(status, headers with lower-case names, body bytes)."""
    port = herd.topology["servers"][name]["admin_port"]
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout,
                                      source_address=(source, 0) if source else None)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def metrics(herd, name):
    status, headers, body = http_get(herd, name, "/metrics")
    assert status == 200, (status, body)
    return Metrics(body.decode())


def readyz(herd, name, path="/readyz"):
    status, _, body = http_get(herd, name, path)
    return status, body.decode()


class ObserveCase(HerdTestCase):

    def herd(self, servers, links=(), admin=None, **kw):
        herd = self.make_herd(servers=servers, links=links, **kw)
        herd.add_admin_ports(admin)
        return herd

    def iamat(self, herd, name, cid, t=None):
        return self.iamat_at(herd, name, cid, t=t)


class ProcessMetricsTest(ObserveCase):

    def test_build_info_and_process_metrics(self):
        herd = self.herd(["A"])
        before = time.time()
        herd.start("A")
        after = time.time()
        pid = herd.pid("A")
        m = metrics(herd, "A")
        version = subprocess.run([server_binary(), "--version"], capture_output=True, text=True).stdout.split()[1]
        (labels,) = [dict(k[1]) for k in m.samples if k[0] == "herd_build_info"]
        self.assertEqual(labels["version"], version)
        self.assertRegex(labels["commit"], r"\A([0-9a-f]{7,}(-dirty)?|unknown)\Z")
        self.assertEqual(m.get("herd_build_info", **labels), 1)
        for name, kind in (("process_cpu_seconds_total", "counter"), ("process_resident_memory_bytes", "gauge"),
                           ("process_open_fds", "gauge"), ("process_max_fds", "gauge"),
                           ("process_start_time_seconds", "gauge"), ("herd_build_info", "gauge")):
            self.assertEqual(m.types.get(name), kind, name)
        # Against what the kernel says about the process.
        with open("/proc/%d/status" % pid) as f:
            rss_kb = int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1))
        self.assertLess(abs(m.get("process_resident_memory_bytes") - rss_kb * 1024), rss_kb * 1024 * 0.5)
        fds = len(os.listdir("/proc/%d/fd" % pid))
        self.assertLess(abs(m.get("process_open_fds") - fds), 8)
        with open("/proc/%d/limits" % pid) as f:
            soft = re.search(r"Max open files\s+(\S+)", f.read()).group(1)
        self.assertEqual(m.get("process_max_fds"), float(soft))
        # Clock ticks (1/100 s) after boot: as precise as the kernel keeps it.
        self.assertGreaterEqual(m.get("process_start_time_seconds"), before - 1)
        self.assertLessEqual(m.get("process_start_time_seconds"), after + 1)
        cpu = m.get("process_cpu_seconds_total")
        self.assertGreaterEqual(cpu, 0)
        herd.send("A", b"".join(iamat_line(uid("cpu")) + b"\n" for _ in range(2000)))
        self.assertGreaterEqual(metrics(herd, "A").get("process_cpu_seconds_total"), cpu)


class UpdateAgeTest(ObserveCase):

    def test_histogram_counts_the_updates_received(self):
        herd = self.herd(["A", "B"], links=[("A", "B")])
        herd.start_all()
        herd.wait_log("B", "link to A up", LINK_TIMEOUT)
        herd.wait_log("A", "link to B up", LINK_TIMEOUT)  # A floods only on a link that is up
        base = metrics(herd, "B")
        n = 20
        # Reports dated an hour ago: the age is from A's receive time, not
        # the client's, so every one is young.
        hour_ago = time.time_ns() - 3600 * 10**9
        for i in range(n):
            self.iamat(herd, "A", uid("age%d" % i), t=ns_text(hour_ago + i))

        def count(m, **labels):
            return m.get("herd_update_age_seconds_count", via="flood", **labels) or 0
        try:
            wait_until(lambda: count(metrics(herd, "B")) - count(base) == n, 10)
        except AssertionError:
            self.fail("B's herd_update_age_seconds_count{via=flood} never grew by %d:\n%s"
                      % (n, metrics(herd, "B").text))
        m = metrics(herd, "B")
        self.assertEqual(m.types["herd_update_age_seconds"], "histogram")
        buckets = sorted((float(dict(k[1])["le"]), v) for k, v in m.samples.items()
                         if k[0] == "herd_update_age_seconds_bucket" and dict(k[1])["via"] == "flood")
        self.assertEqual(buckets[0][0], 0.00001)
        self.assertEqual(buckets[-2][0], 10.0)
        self.assertEqual(buckets[-1], (float("inf"), m.get("herd_update_age_seconds_count", via="flood")))
        counts = [v for _, v in buckets]
        self.assertEqual(counts, sorted(counts), "buckets must be cumulative")
        base_10s = base.get("herd_update_age_seconds_bucket", via="flood", le="10.000000000")
        self.assertEqual(m.get("herd_update_age_seconds_bucket", via="flood", le="10.000000000") - base_10s, n)
        self.assertLess(m.get("herd_update_age_seconds_sum", via="flood")
                        - base.get("herd_update_age_seconds_sum", via="flood"), n * 10)
        self.assertEqual(m.get("herd_peer_updates_total", outcome="stored")
                         - base.get("herd_peer_updates_total", outcome="stored"), n)
        # A's own clients are not updates from a neighbour.
        self.assertEqual(count(metrics(herd, "A")), 0)

    def test_exchange_updates_are_counted_apart(self):
        herd = self.herd(["A", "B"], links=[("A", "B")])
        herd.start("A")
        cids = [uid("ex%d" % i) for i in range(5)]
        for cid in cids:
            self.iamat(herd, "A", cid)
        herd.start("B")  # B learns them by the exchange, not by a flood
        wait_until(lambda: metrics(herd, "B").get("herd_update_age_seconds_count", via="exchange") == 5,
                   LINK_TIMEOUT, msg="B never counted 5 updates from the exchange")
        self.assertEqual(metrics(herd, "B").get("herd_update_age_seconds_count", via="flood"), 0)


class PeerUpdatesFamilyTest(ObserveCase):

    def test_one_family_with_an_outcome_label(self):
        names = ["A", "B", "C"]
        herd = self.herd(names, links=[("A", "B"), ("A", "C"), ("B", "C")])
        herd.start_all()
        # Every link, A's too: an update A takes before its links are up
        # reaches B and C by A's exchange, which is not flooded on, and
        # neither would then hear it twice.
        for a, b in (("A", "B"), ("A", "C"), ("B", "C"), ("C", "B"), ("B", "A"), ("C", "A")):
            herd.wait_log(a, "link to %s up" % b, LINK_TIMEOUT)
        base = {n: metrics(herd, n) for n in names}
        self.iamat(herd, "A", uid("family"))

        def delta(outcome):
            return sum(metrics(herd, n).get("herd_peer_updates_total", outcome=outcome)
                       - base[n].get("herd_peer_updates_total", outcome=outcome) for n in ("B", "C"))
        # B and C store it once each; whichever hears it again drops it.
        wait_until(lambda: delta("stored") == 2 and delta("not_newer") >= 1, LINK_TIMEOUT,
                   msg="stored %r, not newer %r" % (delta("stored"), delta("not_newer")))
        m = metrics(herd, "B")
        self.assertEqual(m.types["herd_peer_updates_total"], "counter")
        self.assertEqual({dict(k[1])["outcome"] for k in m.samples if k[0] == "herd_peer_updates_total"},
                         {"stored", "not_newer", "invalid", "refused"})
        for old in ("herd_peer_updates_stored_total", "herd_duplicates_dropped_total",
                    "herd_peer_invalid_updates_total", "herd_peer_updates_refused_total",
                    "herd_places_errors_total", "herd_places_cache_hits_total"):
            self.assertNotIn(old, m.types, "%s is counted in a family with labels now" % old)


class HealthTest(ObserveCase):

    def test_readiness_falls_when_both_neighbours_stop_and_returns(self):
        herd = self.herd(["A", "B", "C"], links=[("A", "B"), ("A", "C")], admin=["A"])
        herd.start_all()
        wait_until(lambda: readyz(herd, "A")[0] == 200, LINK_TIMEOUT, msg="A never ready")
        self.assertEqual(readyz(herd, "A", "/healthz"), readyz(herd, "A"))
        self.assertEqual(metrics(herd, "A").get("herd_ready"), 1)
        # One neighbour gone: it still reaches the other.
        herd.pause("B")
        self.addCleanup(lambda: herd.running("B") and herd.resume("B"))
        wait_until(lambda: herd.link_up("A").get("B") is False, FALL_TIMEOUT, msg="A never saw B down")
        self.assertEqual(readyz(herd, "A")[0], 200)
        # Both: a server cut off from every neighbour is not ready.
        herd.pause("C")
        self.addCleanup(lambda: herd.running("C") and herd.resume("C"))
        wait_until(lambda: readyz(herd, "A")[0] == 503, FALL_TIMEOUT, msg="A still ready, cut off from both")
        self.assertEqual(readyz(herd, "A"), (503, "isolated: reaches none of its 2 neighbours\n"))
        self.assertEqual(readyz(herd, "A", "/healthz"), readyz(herd, "A"))
        self.assertEqual(metrics(herd, "A").get("herd_ready"), 0)
        # Alive all the while: a restart would not help.
        status, headers, body = http_get(herd, "A", "/livez")
        self.assertEqual((status, body), (200, b"live: the server answers\n"))
        self.assertTrue(headers["content-type"].startswith("text/plain"))
        herd.wait_log("A", "health: isolated: reaches none of its 2 neighbours", 5)
        # They continue: ready again.
        herd.resume("B")
        herd.resume("C")
        wait_until(lambda: readyz(herd, "A")[0] == 200, FALL_TIMEOUT, msg="A never ready again")
        self.assertTrue(readyz(herd, "A")[1].startswith("ready: "))
        self.assertEqual(metrics(herd, "A").get("herd_ready"), 1)
        # And killed rather than stopped: the same.
        herd.kill_many(["B", "C"])
        wait_until(lambda: readyz(herd, "A")[0] == 503, FALL_TIMEOUT, msg="A still ready, both killed")
        self.assertEqual(readyz(herd, "A")[1], "isolated: reaches none of its 2 neighbours\n")

    def full_disk_herd(self, fsync):
        admin = free_ports(1)[0]
        herd = self.make_herd(servers=["A"], extra={
            "state_dir": "state", "fsync": fsync, "servers": {"A": {"admin_port": admin}}})
        old = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20000, old[1]))
        try:
            herd.start("A")
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, old)
        self.assertEqual(readyz(herd, "A")[0], 200)
        with herd.connect("A") as c:
            c.send(b"".join(iamat_line(uid("full")) + b"\n" for _ in range(600)))
            for _ in range(600):
                c.recv_line()
        wait_until(lambda: metrics(herd, "A").get("herd_state_durable") == 0, 10,
                   msg="the state never said not durable")
        return herd

    def test_not_durable_under_everysec_stays_ready_and_says_so(self):
        herd = self.full_disk_herd("everysec")
        status, body = readyz(herd, "A")
        self.assertEqual(status, 200, body)
        self.assertRegex(body, r"\Aready: no neighbour in the topology; not durable: [^\n]*; serving from memory\n\Z")
        self.assertEqual(metrics(herd, "A").get("herd_ready"), 1)

    def test_not_durable_under_always_is_not_ready(self):
        herd = self.full_disk_herd("always")
        status, body = readyz(herd, "A")
        self.assertEqual(status, 503, body)
        self.assertRegex(body, r"\Anot durable: [^\n]*; updates are answered \"\?\" until it is\n\Z")
        self.assertEqual(metrics(herd, "A").get("herd_ready"), 0)
        self.assertEqual(http_get(herd, "A", "/livez")[0], 200)


class StartingTest(ObserveCase):

    def test_admin_answers_while_the_state_loads(self):
        bench = os.path.join(os.environ.get("HERD_BUILD_DIR", os.path.join(ROOT, "build")), "bench", "herd-bench")
        if not os.access(bench, os.X_OK):
            self.skipTest("no herd-bench at %s" % bench)
        herd = self.make_herd(servers=["A"], extra={"state_dir": "state"})
        herd.add_admin_ports()
        herd.start("A")
        records = 800000
        r = subprocess.run([bench, "mem", "--port", str(herd.port("A")), "--pid", str(herd.pid("A")),
                            "--steps", str(records), "--prefix", "load"], capture_output=True, timeout=240)
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        self.assertEqual(herd.stop("A"), 0)

        # From the first moment: probe while the server starts, before READY.
        herd.start("A", wait_ready=False)
        port = herd.topology["servers"]["A"]["admin_port"]
        answers = []

        def probe():
            try:
                conn = http.client.HTTPConnection(HOST, port, timeout=2)
                conn.request("GET", "/readyz")
                resp = conn.getresponse()
                got = (resp.status, resp.read().decode())
                conn.close()
                answers.append(got)
                return got[0] == 200
            except OSError:
                return False
        wait_until(probe, 120, interval=0.02, msg="never ready")
        starting = [b for s, b in answers if s == 503]
        self.assertTrue(starting, "the admin port answered only once ready: %r" % answers[:3])
        self.assertTrue(starting[0].startswith("starting: "), starting[0])
        self.assertTrue(any(b.startswith("starting: loading the state") for b in starting), starting[:3])
        herd.wait_ready("A")
        m = metrics(herd, "A")
        self.assertEqual(m.get("herd_state_loaded_records"), records)
        if m.get("herd_state_load_seconds") >= 1.5:
            # A long load says how far it is, at most once a second.
            lines = re.findall(r"state: loading the state: (\d+) records of about \d+ read in ([\d.]+) s",
                               herd.log_text("A"))
            self.assertTrue(lines, "no progress line in a %.1f s load" % m.get("herd_state_load_seconds"))
            self.assertLessEqual(len(lines), m.get("herd_state_load_seconds") + 1)
            counts = [int(n) for n, _ in lines]
            self.assertEqual(counts, sorted(counts))


class AdminCapTest(ObserveCase):
    """Issue 18 item 7: slow connections from many addresses cannot take
    every admin slot; a probe always gets its answer."""

    def test_many_addresses_cannot_blind_the_probe(self):
        herd = self.herd(["A"])
        herd.start("A")
        port = herd.topology["servers"]["A"]["admin_port"]
        held, lock, stop = [], threading.Lock(), threading.Event()
        self.addCleanup(lambda: [s.close() for s in held])
        self.addCleanup(stop.set)
        sources = ["127.0.0.%d" % i for i in range(2, 21)]

        def open_one(source):
            s = socket.socket()
            s.settimeout(2)
            try:
                s.bind((source, 0))
                s.connect((HOST, port))
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finished
            except OSError:
                s.close()
                return None
            return s

        for source in sources:  # 19 addresses x 32: more than the total
            for _ in range(32):
                s = open_one(source)
                if s:
                    held.append(s)

        # Slow clients that come back as soon as they are cut, all along.
        rounds = [0]  # refill rounds done

        def refill():
            i = 0
            while not stop.is_set():
                with lock:
                    alive = []
                    for s in held:
                        try:
                            s.setblocking(False)
                            gone = s.recv(1) == b""
                        except BlockingIOError:
                            gone = False
                        except OSError:
                            gone = True
                        if gone:
                            s.close()
                        else:
                            alive.append(s)
                    held[:] = alive
                for _ in range(19 * 32 - len(alive)):
                    s = open_one(sources[i % len(sources)])
                    i += 1
                    if s:
                        with lock:
                            held.append(s)
                rounds[0] += 1
                stop.wait(0.05)  # the attacker's pace; it ends at once on stop
        t = threading.Thread(target=refill, daemon=True)
        t.start()
        self.addCleanup(t.join, 5)

        def probe():
            s = socket.create_connection((HOST, port), timeout=3)
            with s:
                s.sendall(b"GET /readyz HTTP/1.0\r\n\r\n")
                data = b""
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        return data
                    data += chunk
        # Every probe is answered, at once, while the slots are held.
        for _ in range(10):
            t0 = time.monotonic()
            try:
                data = probe()
            except OSError as e:
                self.fail("a probe got no answer: %s (%d slow connections held)" % (e, len(held)))
            self.assertIn(b"ready: ", data, "a probe got no answer (%d slow connections held)" % len(held))
            self.assertLess(time.monotonic() - t0, 1.5)
            # The next probe comes after the slow clients were made whole again.
            seen = rounds[0]
            wait_until(lambda: rounds[0] > seen + 1, 10, interval=0.01, msg="the refill stopped")
        stop.set()
        t.join(5)
        self.assertGreater(metrics(herd, "A").get("herd_admin_connections_cut_total"), 0)


class DashboardTest(ObserveCase):

    def test_every_metric_of_the_dashboard_exists(self):
        with open(DASHBOARD) as f:
            doc = json.load(f)
        exprs = []

        def walk(panels):
            for p in panels:
                exprs.extend(t["expr"] for t in p.get("targets", []) if "expr" in t)
                walk(p.get("panels", []))
        walk(doc["panels"])
        self.assertGreater(len(exprs), 8)
        names = set()
        for e in exprs:
            for word in re.findall(r"\b(?:herd|process)_[a-z0-9_]+", e):
                names.add(word)
        herd = self.herd(["A", "B"], links=[("A", "B")])
        herd.start_all()
        herd.wait_log("A", "link to B up", LINK_TIMEOUT)
        m = metrics(herd, "A")
        missing = []
        for name in sorted(names):
            base = re.sub(r"_(bucket|sum|count)\Z", "", name)
            family = base if m.types.get(base) == "histogram" else name
            if family in m.types:
                continue
            missing.append(name)
        self.assertEqual(missing, [], "the dashboard uses metrics that /metrics lacks")


if __name__ == "__main__":
    unittest.main()
