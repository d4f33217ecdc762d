"""WHATSATs that wait on Places, under abuse, reload and stop (PROTOCOL.md
sections 4, 6, 8 and 10; issues 18 and 19).

- Every WHATSAT that waits on Places counts against places.max_queued, also
  those that share one upstream call; past it one is answered at once with
  the UNKNOWN_ERROR object and counted in herd_places_refused_total. A flood
  of identical WHATSATs makes one upstream call, and the server's memory
  does not grow with the number of WHATSATs that share its body.
- Connections closing while their WHATSATs wait give up only their own; the
  others still get their answers.
- A reload of the Places settings applies to the node and its worker alike
  (a shorter timeout cuts a call at the new deadline, worker-side).
- At SIGTERM every WHATSAT already read is answered, by its Places deadline
  at the latest, before the server exits 0.

Run: cd tests/integration && HERD_SERVER=.../herd-server python3 -m unittest -v test_places_abuse
"""

import json
import signal
import socket
import struct
import time

from herdtest import (AT_RE_B, PLACES_KEY_ENV, HerdTestCase, free_ports, iamat_line, sanitized_server, status_kb,
                      wait_until)
from places_standin import PlacesStandIn
from test_places import KEY, fresh_position, next_time, standin_body, uid, whatsat_reply

S = "Bailey"


def refused(m, reason):
    return m.get(("herd_places_refused_total", frozenset({("reason", reason)})), 0)


def requests(m, result):
    return m.get(("herd_places_requests_total", frozenset({("result", result)})), 0)


class AbuseCase(HerdTestCase):
    """One server with an admin port, its Places URL a stand-in; a fresh herd
    per test (the settings differ)."""

    places_kw = {}
    results = 5

    def setUp(self):
        self.places = PlacesStandIn(key=KEY, results=self.results).start()
        self.addCleanup(self.places.stop)
        self.addCleanup(self.places.release)

    def start_herd(self, places=None):
        self.herd = self.make_herd(servers=[S], places_url=self.places.url, env={PLACES_KEY_ENV: KEY},
                                   places=places or {},
                                   extra={"state_dir": None, "servers": {S: {"admin_port": free_ports(1)[0]}}})
        self.herd.start(S)
        return self.herd

    def located(self, prefix="a"):
        """A fresh client at a fresh position: (cid, location, AT line)."""
        cid = uid(prefix)
        pos, loc = fresh_position()
        reply = self.herd.send(S, iamat_line(cid, pos, next_time()) + b"\n")
        self.assertTrue(AT_RE_B.match(reply[:-1]), reply)
        return cid, loc, reply

    def error_of(self, reply, at):
        """The error object of a WHATSAT reply (asserting its shape)."""
        self.assertTrue(reply.startswith(at) and reply.endswith(b"}\n\n"), reply[:300])
        obj = json.loads(reply[len(at):-2])
        self.assertEqual(obj["results"], [])
        self.assertEqual(obj["html_attributions"], [])
        self.assertEqual(obj["status"], "UNKNOWN_ERROR", obj)
        return obj


class SharedFloodTest(AbuseCase):
    """places.max_queued = 256. 100 connections pipeline 32 identical
    WHATSATs each and read nothing while the one upstream call is held."""

    results = 20  # a body of about 17 KB
    CONNS, EACH, MAX_QUEUED = 100, 32, 256

    def test_shared_waiters_are_bounded(self):
        herd = self.start_herd({"max_queued": self.MAX_QUEUED, "max_in_flight": 4})
        pid = herd.pid(S)
        cid, loc, at = self.located("flood")
        self.places.set_mode("hold", results=self.results)
        rss0 = status_kb(pid, "VmRSS")
        total = self.CONNS * self.EACH
        flood = []
        for _ in range(self.CONNS):
            c = herd.connect(S)
            self.addCleanup(c.close)
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            c.send(b"WHATSAT %s 12 20\n" % cid * self.EACH)
            flood.append(c)

        # Every WHATSAT is decided while the call is held: MAX_QUEUED wait
        # beside the one that made the call, every other one is refused.
        def settled():
            m = herd.metrics(S)
            waiting = m[("herd_places_pending", frozenset())]
            gone = refused(m, "max_queued") + refused(m, "worker_full")
            return m if waiting == self.MAX_QUEUED + 1 and gone + waiting == total else None
        m = wait_until(settled, timeout=20, msg="not every WHATSAT was taken or refused")
        self.assertEqual(refused(m, "max_queued"), total - self.MAX_QUEUED - 1)
        # The worker's call may reach the stand-in a little after the node
        # counted the WHATSATs: wait for it, then check no second one came.
        wait_until(lambda: self.places.count >= 1, timeout=10, msg="the upstream call never came")
        self.assertEqual(self.places.count, 1, "identical WHATSATs made more than one call")

        # One more is refused at once, with the error object, while the call
        # is still held.
        reply = herd.send(S, b"WHATSAT %s 12 20\n" % cid)
        self.assertIn("places.max_queued is %d" % self.MAX_QUEUED, self.error_of(reply, at)["error_message"])

        self.places.release()
        want = self.MAX_QUEUED + 1
        m = wait_until(lambda: (lambda m: m if requests(m, "shared") + requests(m, "upstream") == want else None)(
            herd.metrics(S)), timeout=20, msg="the waiting WHATSATs were not all answered")
        self.assertEqual(requests(m, "upstream"), 1)
        self.assertEqual(requests(m, "shared"), self.MAX_QUEUED)
        wait_until(lambda: herd.metrics(S)[("herd_places_pending", frozenset())] == 0, timeout=20)

        # The first connection's first WHATSAT was among those that waited:
        # it gets the whole body, then the refusals of its later ones.
        first = flood[0].recv_until(b"\n\n", timeout=10)
        self.assertEqual(first, whatsat_reply(at, standin_body(loc, "12000", 20), 20))

        if not sanitized_server():
            # MAX_QUEUED + 1 bodies of 17 KB are 4.4 MB; one per WHATSAT of
            # the flood would be 55 MB, several copies of each more still.
            grown = status_kb(pid, "VmHWM") - rss0
            self.assertLess(grown, 40 * 1024, "peak RSS grew by %d kB" % grown)
        self.assertCleanExit(herd, S)


class ClosingConnectionsTest(AbuseCase):
    """Many connections wait on one held call; most of them close (reset):
    each gives up only its own WHATSATs, the call goes on for the rest."""

    CONNS, EACH, LEAVE = 200, 3, 150

    def test_closing_connections_keep_the_others_answered(self):
        herd = self.start_herd({"max_queued": 4096})
        cid, loc, at = self.located("close")
        self.places.set_mode("hold")
        clients = []
        for _ in range(self.CONNS):
            c = herd.connect(S)
            self.addCleanup(c.close)
            c.send(b"WHATSAT %s 7 3\n" % cid * self.EACH)
            clients.append(c)
        wait_until(lambda: herd.metrics(S)[("herd_places_pending", frozenset())] == self.CONNS * self.EACH,
                   timeout=20, msg="not every WHATSAT reached the node")
        for c in clients[:self.LEAVE]:
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
        keep = (self.CONNS - self.LEAVE) * self.EACH
        m = wait_until(lambda: (lambda m: m if m[("herd_places_pending", frozenset())] == keep else None)(
            herd.metrics(S)), timeout=20, msg="the closed connections' WHATSATs were not given up")
        self.assertEqual(m[("herd_places_abandoned_total", frozenset({("reason", "client_gone")}))],
                         self.LEAVE * self.EACH)
        self.assertEqual(self.places.gone, 0, "the call was stopped though others wait for it")
        self.places.release()
        want = whatsat_reply(at, standin_body(loc, "7000"), 3)
        rest = clients[self.LEAVE:]
        for c in rest:
            for _ in range(self.EACH):
                self.assertEqual(c.recv_until(b"\n\n", timeout=10), want)
        self.assertEqual(self.places.count, 1)
        self.assertCleanExit(herd, S)


class ReloadTest(AbuseCase):
    """places.* reloaded by SIGHUP reach the worker as well as the node."""

    def reload(self, herd, **places):
        herd.topology["places"].update(places)
        herd.write_topology()
        mark = herd.reload([S])[S]
        wait_until(lambda: b"reload: " in herd.log_bytes(S)[mark:], msg="no reload outcome in the log")

    def test_shorter_timeout_applies_to_the_worker(self):
        herd = self.start_herd({"timeout_ms": 5000, "cache_ttl_ms": 0})
        cid, loc, at = self.located("reload")
        self.places.set_mode("slow", delay=3.0)

        # A WHATSAT already waiting on a call when the timeout shrinks is cut
        # by the worker at the new deadline (counted from the call's start).
        early = herd.connect(S)
        self.addCleanup(early.close)
        early.send(b"WHATSAT %s 5 2\n" % cid)
        wait_until(lambda: self.places.count == 1, msg="the first call did not start")
        self.reload(herd, timeout_ms=200)
        t_reload = time.monotonic()
        obj = self.error_of(early.recv_until(b"\n\n", timeout=5), at)
        self.assertLess(time.monotonic() - t_reload, 1.0)
        self.assertIn("timed out after 200 ms", obj["error_message"])

        # A new one: cut at about 200 ms by the worker, not by the node's
        # own deadline (200 ms plus its margin).
        t0 = time.monotonic()
        reply = herd.send(S, b"WHATSAT %s 6 2\n" % cid, timeout=5)
        elapsed = time.monotonic() - t0
        obj = self.error_of(reply, at)
        self.assertIn("timed out after 200 ms", obj["error_message"])
        self.assertGreaterEqual(elapsed, 0.19)
        self.assertLess(elapsed, 1.0, "answered after %.2f s" % elapsed)

        # And back up: the worker waits for a 1 s answer again.
        self.reload(herd, timeout_ms=5000)
        self.places.set_mode("slow", delay=1.0)
        reply = herd.send(S, b"WHATSAT %s 7 2\n" % cid, timeout=10)
        self.assertEqual(reply, whatsat_reply(at, standin_body(loc, "7000"), 2))
        self.assertCleanExit(herd, S)

    def test_queue_bound_and_cache_reloaded(self):
        herd = self.start_herd({"max_queued": 8, "max_in_flight": 1, "cache_ttl_ms": 60000})
        cid, loc, at = self.located("bounds")
        # The cache on: a repeat is a cache hit.
        self.assertEqual(herd.send(S, b"WHATSAT %s 3 1\n" % cid), whatsat_reply(at, standin_body(loc, "3000"), 1))
        herd.send(S, b"WHATSAT %s 3 1\n" % cid)
        self.assertEqual(self.places.count, 1)
        self.reload(herd, max_queued=2, cache_ttl_ms=0)
        # The cache off: the same request goes upstream again.
        herd.send(S, b"WHATSAT %s 3 1\n" % cid)
        self.assertEqual(self.places.count, 2)
        # max_queued 2: a call running and two waiting, the fourth refused.
        self.places.set_mode("hold")
        clients = []
        for r in ("11", "12", "13", "14"):
            c = herd.connect(S)
            self.addCleanup(c.close)
            c.send(b"WHATSAT %s %s 1\n" % (cid, r.encode()))
            clients.append(c)
        obj = self.error_of(clients[3].recv_until(b"\n\n", timeout=5), at)
        self.assertIn("places.max_queued is 2", obj["error_message"])
        self.places.set_mode("normal")
        self.places.release()
        for c, r in zip(clients[:3], ("11000", "12000", "13000")):
            self.assertEqual(c.recv_until(b"\n\n", timeout=10), whatsat_reply(at, standin_body(loc, r), 1))
        self.assertCleanExit(herd, S)


class StopTest(AbuseCase):
    """SIGTERM while WHATSATs wait on a slow Places service: each is answered
    by its Places deadline (places.timeout_ms 6000), past the stop's own
    grace for other output, and the server exits 0."""

    def test_sigterm_answers_every_waiting_whatsat(self):
        herd = self.start_herd({"timeout_ms": 6000})
        cid, loc, at = self.located("stop")
        cid2, loc2, at2 = self.located("stop")
        self.places.set_location_mode(loc, "slow", delay=5.5)
        self.places.set_location_mode(loc2, "hold")
        slow, never = herd.connect(S), herd.connect(S)
        self.addCleanup(slow.close)
        self.addCleanup(never.close)
        slow.send(b"WHATSAT %s 4 2\n" % cid)
        never.send(b"WHATSAT %s 4 2\n" % cid2)
        wait_until(lambda: self.places.count == 2, msg="the calls did not start")
        t0 = time.monotonic()
        herd.process(S).send_signal(signal.SIGTERM)
        self.assertEqual(slow.recv_until(b"\n\n", timeout=10), whatsat_reply(at, standin_body(loc, "4000"), 2))
        obj = self.error_of(never.recv_until(b"\n\n", timeout=10), at2)
        self.assertIn("timed out after 6000 ms", obj["error_message"])
        self.assertTrue(never.closed(timeout=5), "the connection stayed open after its answer")
        code = herd.wait_exit(S, timeout=10)
        self.assertEqual(code, 0)
        self.assertLess(time.monotonic() - t0, 9.0)
