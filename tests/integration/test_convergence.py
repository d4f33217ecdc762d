"""Convergence after overlapping faults (PROTOCOL.md sections 3 and 7; issue 10).

Section 7 promises: once every server is up and the graph is connected, every
server holds the same record for every client within a few seconds, whatever
happened before. Section 3 makes that possible for ties: records rank by the
client time, then the origin server's name, then the position text (bytes),
the greater winning, on every path.

One test (or a few variants) per item of issue 10, checked only through the
public behaviour: the client protocol (the AT line a WHATSAT answers with is
the stored record; REQUEST_DENIED answers without a Places key still carry
it), the log, /metrics. The topologies set "state_dir": null, so a killed
server loses its memory and nothing here depends on durability.

1. A server killed with all its neighbours, restarted first and alone, gets
   back the clients it accepted itself (they survive at a server two links
   away: Clark).
2. A reload that joins two parts of the herd syncs both ways, whichever of
   the two ends applies it first.
3. Ties (one client time) end with the section 3 winner everywhere.
4. With CURVE, a link refused at the handshake (a key rotated before the
   neighbour knows it) is retried until it comes up, without restarting the
   refused server, and updates flow both ways again.
6. A WHATSAT whose Places call never returns is answered with the
   UNKNOWN_ERROR object by places.timeout_ms plus a margin.
(Item 5, the reactor's use-after-free, is a unit test under ASan.)

Every wait is a condition with a deadline. CONVERGE_S is "a few seconds":
periodic anti-entropy runs about every second.

Run: cd tests/integration && HERD_SERVER=.../herd-server HERD_BUILD_DIR=.../build \
     python3 -m unittest -v test_convergence
"""

import datetime
import json
import os
import re
import shutil
import signal
import threading
import time
import unittest
import uuid

from herdtest import (AT_RE_B, DEFAULT_LINKS, DEFAULT_SERVERS, PLACES_KEY_ENV, HerdTestCase,
                      HerdTimeout, at_rank, iamat_line, now_text, wait_until)
from places_standin import PlacesStandIn
from test_curve import REFUSED_RE, key_files, keygen

CONVERGE_S = 10   # all up and connected -> the same records everywhere
LINK_S = 15       # a refused or broken link is retried (back-off included)
RETRY_SPAN_S = 5  # a refused link is still being retried this long after
# Alpha's log line for a refused handshake, with its time stamp as group 1.
REFUSED_TS_RE = re.compile(REFUSED_RE.replace(r"^\S+ ", r"^(\S+) ", 1), re.M)
assert REFUSED_TS_RE.pattern != REFUSED_RE
NO_STATE = {"state_dir": None}
POS_LO = b"+10.000000-020.000000"  # POS_LO < POS_HI as bytes
POS_HI = b"+20.000000-020.000000"


def log_time(stamp):
    """Seconds since the epoch of a log time stamp (2026-12-06T20:51:39.990750Z)."""
    when = datetime.datetime.fromisoformat(stamp)
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


def uid(tag):
    """A client id no other test uses."""
    return ("conv-%s-%s" % (tag, uuid.uuid4().hex[:10])).encode()


class ConvergenceCase(HerdTestCase):
    """Helpers: reports, link waits, and the convergence check."""

    def report(self, herd, name, cid, pos=None, t=None):
        """An acknowledged IAMAT at `name`; returns its AT line."""
        return self.iamat_at(herd, name, cid, pos or b"+34.068930-118.445127", t)

    def wait_converged(self, herd, names, expect, timeout=CONVERGE_S, why=""):
        """Waits until every server of `names` answers WHATSAT for each cid of
        `expect` with exactly expect[cid]; fails with what each one holds."""
        last = {}

        def check():
            for name in names:
                last[name] = herd.records(name, expect)
            return all(last[n][cid] == want for n in names for cid, want in expect.items())
        try:
            wait_until(check, timeout, interval=0.1)
        except HerdTimeout:
            wrong = []
            for cid, want in expect.items():
                bad = {n: last[n][cid] for n in names if last[n][cid] != want}
                if bad:
                    wrong.append("  %r: want %r; %s" % (cid, want, ", ".join(
                        "%s holds %r" % (n, v) for n, v in sorted(bad.items()))))
            self.fail("%s%d of %d clients not the same everywhere %gs after the herd was whole:\n%s"
                      % (why + ": " if why else "", len(wrong), len(expect), timeout,
                         "\n".join(w[:400] for w in wrong[:12])))

    def wait_link_logged(self, herd, name, peer, mark=0, timeout=LINK_S):
        """Waits for `name`'s log to say its link to `peer` is up (after mark)."""
        rx = re.compile(r"(?m)^\S+ link to %s up$" % re.escape(peer))
        wait_until(lambda: rx.search(herd.log_since(name, mark)), timeout, interval=0.02,
                   msg="%s.log never says the link to %s is up; since the mark:\n%s"
                   % (name, peer, herd.log_since(name, mark)[-2000:]))

    def whole_herd(self, herd):
        """Starts every server and waits until a report at each reaches all:
        every link carries updates."""
        herd.start_all()
        expect = {}
        for name in herd.names:
            cid = uid("marker-" + name)
            expect[cid] = self.report(herd, name, cid)
        self.wait_converged(herd, herd.names, expect, why="the fresh herd")
        return expect


# ------------------------------------------------------------------ item 1

class RestartedCentreTest(ConvergenceCase):
    """Issue 10 item 1: Campbell dies with Bailey, Bona and Jaquez (all its
    neighbours); only Clark keeps their clients. Campbell restarts first and
    alone, then its neighbours: every server must end with every client,
    Campbell included with the clients it accepted itself (its AT lines name
    it, and no rule may keep a record from a server that lacks it)."""

    CENTRE = "Campbell"
    NEIGHBOURS = ("Bailey", "Bona", "Jaquez")
    PER_SERVER = 6

    def reported_everywhere(self, herd):
        expect = self.whole_herd(herd)
        for name in herd.names:
            for i in range(self.PER_SERVER):
                cid = uid("c1-%s-%d" % (name, i))
                expect[cid] = self.report(herd, name, cid)
        self.wait_converged(herd, herd.names, expect, why="before the kill")
        return expect

    def test_centre_restarted_first_gets_its_own_clients_back(self):
        """The issue's order: kill four at once, start the centre, wait for its
        READY, then start its three neighbours together."""
        herd = self.make_herd(extra=NO_STATE)
        expect = self.reported_everywhere(herd)
        herd.kill_many((self.CENTRE,) + self.NEIGHBOURS)
        herd.start(self.CENTRE)
        herd.start_all(self.NEIGHBOURS)
        self.wait_converged(herd, herd.names, expect, why="after the restarts")

    def test_centre_gets_its_clients_back_when_the_far_server_comes_late(self):
        """As above, but Clark (the only holder) is paused while the four
        come back, and resumed once the centre's three links are up: the
        first exchanges all happen between empty servers, so only a later
        repair can give Campbell its own clients."""
        herd = self.make_herd(extra=NO_STATE)
        expect = self.reported_everywhere(herd)
        herd.kill_many((self.CENTRE,) + self.NEIGHBOURS)
        herd.pause("Clark")
        try:
            herd.start(self.CENTRE)
            herd.start_all(self.NEIGHBOURS)
            for nb in self.NEIGHBOURS:
                self.wait_link_logged(herd, self.CENTRE, nb)
                self.wait_link_logged(herd, nb, self.CENTRE)
        finally:
            herd.resume("Clark")
        self.wait_converged(herd, herd.names, expect, why="after Clark came back")


# ------------------------------------------------------------------ item 2

class RemovedServerTest(ConvergenceCase):
    """A reload that takes a server out of the topology (PROTOCOL section 7):
    its records stay on every server, a server that restarts empty gets them
    back from the others, and the exchanges settle instead of resending
    records for ever."""

    def test_records_of_a_removed_server_stay_everywhere(self):
        names = ("R1", "R2", "R3")
        herd = self.make_herd(servers=names, links=[("R1", "R2"), ("R2", "R3")], extra=NO_STATE)
        herd.add_admin_ports()
        herd.start_all()
        keep, gone = uid("by-R1"), uid("by-R3")
        expect = {keep: self.report(herd, "R1", keep), gone: self.report(herd, "R3", gone)}
        self.wait_converged(herd, names, expect, why="before R3 is removed")
        self.assertEqual(herd.stop("R3"), 0)
        del herd.topology["servers"]["R3"]
        marks = herd.reload(["R1", "R2"], [("R1", "R2")])
        for name in ("R1", "R2"):
            herd.wait_log(name, "reload: topology applied (2 servers, 1 links)")
            self.assertNotIn("dropped", herd.log_since(name, marks[name]))
        self.wait_converged(herd, ["R1", "R2"], expect, why="after the removal")
        # R2 restarts empty: R1 gives it both records, and the exchanges
        # then find the two tables equal (no record resent every second).
        self.assertEqual(herd.stop("R2"), 0)
        herd.start("R2")
        self.wait_converged(herd, ["R1", "R2"], expect, why="after R2 restarted")
        # Two more exchanges each way send no record: the tables are equal.
        def counters():
            m1, m2 = herd.metrics("R1"), herd.metrics("R2")
            key = lambda metric, peer: (metric, frozenset({("peer", peer)}))
            return (m1[key("herd_repair_rounds_total", "R2")] + m2[key("herd_repair_rounds_total", "R1")],
                    m1[key("herd_repair_records_sent_total", "R2")] + m2[key("herd_repair_records_sent_total", "R1")])
        first = counters()[0]
        wait_until(lambda: counters()[0] >= first + 2, 15, msg="no exchanges between R1 and R2")
        rounds, sent = counters()
        wait_until(lambda: counters()[0] >= rounds + 4, 15, msg="no exchanges between R1 and R2")
        self.assertEqual(counters()[1], sent, "records are still being resent between R1 and R2")


class ReloadJoinTest(ConvergenceCase):
    """Issue 10 item 2: I1-I2 linked, I3 alone; a client at I1 and one at I3;
    the link I2-I3 is added and the three reload. Whichever end applies the
    reload first (its HELLO reaching the other before that one knows it as a
    neighbour), all three must end with both clients."""

    NAMES = ("I1", "I2", "I3")

    def split_herd(self):
        herd = self.make_herd(servers=self.NAMES, links=[("I1", "I2")], extra=NO_STATE)
        herd.add_admin_ports()
        herd.start_all()
        c1, c3 = uid("c2-at-I1"), uid("c2-at-I3")
        at1 = self.report(herd, "I1", c1)
        at3 = self.report(herd, "I3", c3)
        self.wait_converged(herd, ["I1", "I2"], {c1: at1}, why="I1's client before the join")
        self.assertIsNone(herd.records("I2", [c3])[c3], "I3's client crossed a missing link")
        return herd, {c1: at1, c3: at3}

    def rejected(self, herd, name):
        return sum(v for (metric, _), v in herd.metrics(name).items()
                   if metric == "herd_peer_rejected_total")

    def join(self, first, second):
        herd, expect = self.split_herd()
        links = [("I1", "I2"), ("I2", "I3")]
        before = self.rejected(herd, second)
        herd.reload([first], links)
        # Let `first` reach `second` before `second` knows it as a neighbour:
        # wait (bounded) for `second` to drop something from it. This only
        # makes the race of the issue likely; the check below holds either way.
        try:
            wait_until(lambda: self.rejected(herd, second) > before, 5, interval=0.005)
        except HerdTimeout:
            pass
        herd.reload([second, "I1"])
        self.wait_converged(herd, self.NAMES, expect, why="after the join (%s first)" % first)

    def test_join_reloading_i2_first(self):
        self.join("I2", "I3")

    def test_join_reloading_i3_first(self):
        self.join("I3", "I2")

    def test_join_reloading_all_at_once(self):
        herd, expect = self.split_herd()
        herd.reload(["I2", "I3", "I1"], [("I1", "I2"), ("I2", "I3")])
        self.wait_converged(herd, self.NAMES, expect, why="after the join")


# ------------------------------------------------------------------ item 3

class TieTest(ConvergenceCase):
    """Issue 10 item 3: reports with one client time rank by origin name, then
    position text (bytes), the greater winning, on every path; every server
    must end with that one record."""

    def at_once(self, herd, sends):
        """Sends each (server, line) on its own connection, all before any
        reply is read; returns the replies' AT lines in the same order."""
        clients = [herd.connect(name) for name, _ in sends]
        try:
            for c, (_, line) in zip(clients, sends):
                c.send(line + b"\n")
            replies = [c.recv_line()[:-1] for c in clients]
        finally:
            for c in clients:
                c.close()
        for (name, line), at in zip(sends, replies):
            m = AT_RE_B.match(at)
            self.assertTrue(m and m.group(1) == name.encode(), "%s: %r" % (name, at))
            self.assertEqual(b"IAMAT " + b" ".join(at.split(b" ")[3:]), line)
        return replies

    def test_simultaneous_ties_at_two_servers(self):
        herd = self.make_herd(extra=NO_STATE)
        self.whole_herd(herd)
        expect = {}
        # (a, b): far apart and neighbours; the greater name gets the smaller
        # position, so the origin must be compared before the position.
        pairs = [("Bailey", "Clark"), ("Campbell", "Jaquez"), ("Bona", "Bailey"),
                 ("Jaquez", "Bailey"), ("Clark", "Bona")]
        for round_ in range(3):
            for a, b in pairs:
                for same_pos in (False, True):
                    cid, t = uid("tie-%s-%s" % (a, b)), now_text()
                    lo_hi = (POS_HI, POS_LO) if a < b else (POS_LO, POS_HI)
                    pa, pb = (POS_LO, POS_LO) if same_pos else lo_hi
                    ats = self.at_once(herd, [(a, iamat_line(cid, pa, t)),
                                              (b, iamat_line(cid, pb, t))])
                    expect[cid] = max(ats, key=at_rank)
                    self.assertEqual(expect[cid], ats[0] if a > b else ats[1])
        self.wait_converged(herd, herd.names, expect, why="ties sent at once to two servers")

    def test_ties_in_sequence_rank_by_origin_then_position(self):
        """Deterministic orders: the later report of a tie must replace the
        stored one exactly when it ranks above it."""
        herd = self.make_herd(extra=NO_STATE)
        self.whole_herd(herd)
        cases = [
            # (first server, first pos, second server, second pos)
            ("Clark", POS_LO, "Bailey", POS_HI),  # later loses on origin
            ("Bailey", POS_HI, "Clark", POS_LO),  # later wins on origin
            ("Bona", POS_HI, "Bona", POS_LO),     # same origin: later loses on position
            ("Bona", POS_LO, "Bona", POS_HI),     # same origin: later wins on position
            ("Jaquez", POS_LO, "Bona", POS_HI),   # neighbours of Clark, later loses
            ("Bona", POS_HI, "Jaquez", POS_LO),   # later wins on origin
        ]
        expect = {}
        for s1, p1, s2, p2 in cases:
            cid, t = uid("seq-%s-%s" % (s1, s2)), now_text()
            first = self.report(herd, s1, cid, p1, t)
            self.wait_converged(herd, herd.names, {cid: first}, why="the first of a tie")
            second = self.report(herd, s2, cid, p2, t)  # answered with its own line either way
            expect[cid] = max(first, second, key=at_rank)
        self.wait_converged(herd, herd.names, expect, why="ties sent one after the other")


# ------------------------------------------------------------------ item 4

class CurveRetryTest(ConvergenceCase):
    """Issue 10 item 4: Beta is restarted with a new key pair while Alpha
    still runs on the topology that has Beta's old key: Alpha refuses Beta's
    handshakes. Once Alpha has the new key (reload or restart), the link
    comes back and updates flow both ways -- Beta is not restarted again, so
    its refused link must have been retried all along."""

    NAMES = ("Alpha", "Beta")

    def rotated(self):
        herd = self.make_herd(servers=self.NAMES, links=[self.NAMES], extra=NO_STATE)
        herd.add_admin_ports()
        kdir = os.path.join(herd.tmpdir, "keys")
        for name, key in keygen(kdir, *self.NAMES).items():
            herd.topology["servers"][name]["public_key"] = key
        herd.write_topology()
        expect = self.whole_herd(herd)

        side = os.path.join(herd.tmpdir, "new-keys")
        new_key = keygen(side, "Beta")["Beta"]
        self.assertEqual(herd.stop("Beta"), 0)
        for src, dst in zip(key_files(side, "Beta"), key_files(kdir, "Beta")):
            shutil.copyfile(src, dst)
        herd.topology["servers"]["Beta"]["public_key"] = new_key
        herd.write_topology()  # Alpha is not told yet
        mark = herd.log_size("Alpha")
        herd.start("Beta")
        # Refused, and still refused RETRY_SPAN_S later: Beta keeps trying.
        first = self.refusals(herd, mark, 1, LINK_S)[0]
        self.refusals(herd, mark, 1, RETRY_SPAN_S + LINK_S, after=first + RETRY_SPAN_S)
        during = uid("c4-during")
        expect[during] = self.report(herd, "Beta", during)
        return herd, expect

    def refusals(self, herd, mark, count, timeout, after=0.0):
        """Waits until Alpha's log (from mark) holds `count` refusals of a
        link logged at or after the epoch time `after`; returns their times."""
        def times():
            return [ts for ts in (log_time(m.group(1)) for m in
                                  REFUSED_TS_RE.finditer(herd.log_since("Alpha", mark)))
                    if ts >= after]
        try:
            return wait_until(lambda: len(times()) >= count and times(), timeout, interval=0.05)
        except HerdTimeout:
            self.fail("Alpha logged %s within %gs: the refused link is not retried for as "
                      "long as both run; Alpha.log since Beta's restart:\n%s"
                      % ("no refusal of Beta's new key %gs or more after the first" % RETRY_SPAN_S
                         if after else "no refusal of Beta's new key", timeout,
                         herd.log_since("Alpha", mark)[-2000:]))

    def flows_both_ways(self, herd, expect, beta_pid):
        for name in self.NAMES:
            cid = uid("c4-after-" + name)
            expect[cid] = self.report(herd, name, cid)
        self.wait_converged(herd, self.NAMES, expect, timeout=LINK_S,
                            why="after Alpha learnt Beta's new key")
        wait_until(lambda: herd.link_up("Beta").get("Alpha") and herd.link_up("Alpha").get("Beta"),
                   LINK_S, msg="herd_link_up: Beta %r, Alpha %r"
                   % (herd.link_up("Beta"), herd.link_up("Alpha")))
        self.assertEqual(herd.pid("Beta"), beta_pid, "Beta was restarted")
        self.assertTrue(herd.running("Beta"), herd.state("Beta"))

    def test_refused_link_comes_back_after_the_neighbour_reloads(self):
        herd, expect = self.rotated()
        beta_pid, alpha_pid = herd.pid("Beta"), herd.pid("Alpha")
        marks = herd.reload(["Alpha"])
        herd.wait_log("Alpha", re.compile(r"reload: topology applied"), 10)
        self.assertNotIn("keeping the running topology", herd.log_since("Alpha", marks["Alpha"]))
        self.flows_both_ways(herd, expect, beta_pid)
        self.assertEqual(herd.pid("Alpha"), alpha_pid)

    def test_refused_link_comes_back_after_the_neighbour_restarts(self):
        herd, expect = self.rotated()
        beta_pid = herd.pid("Beta")
        # Beta came back empty (no state) and could not link: the reports made
        # before its restart live only at Alpha, and die with it (PROTOCOL
        # section 7: every server that held them died). What Beta took while
        # refused must survive.
        expect = {cid: at for cid, at in expect.items() if b"c4-during" in cid}
        self.assertEqual(herd.stop("Alpha"), 0)
        herd.start("Alpha")  # empty (no state): everything it gets comes from Beta
        self.flows_both_ways(herd, expect, beta_pid)


# ------------------------------------------------------------------ item 6

KEY = "AIzaConv-k3y_0a1b"
PLACES_TIMEOUT_MS = 1000
MARGIN_S = 1.5


class WhatsatDeadlineTest(ConvergenceCase):
    """Issue 10 item 6: every WHATSAT is answered. With a Places service that
    never answers, each WHATSAT gets its AT line and the UNKNOWN_ERROR object
    within places.timeout_ms plus a margin of its arrival -- also those that
    wait behind places.max_in_flight, and those pipelined behind one."""

    def setUp(self):
        self.places = PlacesStandIn(key=KEY).start()
        self.addCleanup(self.places.stop)
        self.addCleanup(self.places.release)  # runs first: frees held handler threads
        self.places.set_mode("hold")
        self.herd = self.make_herd(servers=["Solo"], places_url=self.places.url,
                                   env={PLACES_KEY_ENV: KEY}, extra=NO_STATE,
                                   places={"timeout_ms": PLACES_TIMEOUT_MS, "max_in_flight": 2,
                                           "cache_ttl_ms": 0})
        self.herd.start("Solo")

    def assertUnknownError(self, reply, at):
        self.assertTrue(reply.startswith(at + b"\n") and reply.endswith(b"}\n\n"),
                        "not the AT line and a JSON object: %r" % reply[:500])
        obj = json.loads(reply[len(at) + 1:-2].decode("utf-8"))
        self.assertEqual(obj.get("status"), "UNKNOWN_ERROR", reply)
        self.assertEqual((obj.get("results"), obj.get("html_attributions")), ([], []), reply)
        self.assertTrue(obj.get("error_message"), reply)
        self.assertNotIn(KEY.encode(), reply)

    def test_held_places_calls_are_answered_in_time(self):
        n = 6  # three times max_in_flight: most of them wait in the queue
        located = []
        for i in range(n):
            cid = uid("c6-%d" % i)
            pos = b"+%d.000000-118.000000" % (10 + i)  # a Places call of its own each
            located.append((cid, self.report(self.herd, "Solo", cid, pos)))
        deadline_s = PLACES_TIMEOUT_MS / 1000 + MARGIN_S
        clients = [self.herd.connect("Solo") for _ in located]
        for c in clients:
            self.addCleanup(c.close)
        results = [None] * n
        start = time.monotonic()

        def ask(i):
            cid, at = located[i]
            clients[i].send(b"WHATSAT " + cid + b" 10 5\n")
            try:
                reply = clients[i].recv_until(b"\n\n", timeout=deadline_s)
                results[i] = (time.monotonic() - start, reply)
            except HerdTimeout as e:
                results[i] = (None, str(e).encode())
        threads = [threading.Thread(target=ask, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(deadline_s + 5)
        late = [(located[i][0], r[1][:200]) for i, r in enumerate(results) if r[0] is None]
        self.assertEqual(late, [], "WHATSATs not answered within %gs of being sent" % deadline_s)
        for (cid, at), (elapsed, reply) in zip(located, results):
            self.assertUnknownError(reply, at)

    def test_a_pipelined_command_behind_a_held_whatsat_is_answered(self):
        cid = uid("c6-pipe")
        at = self.report(self.herd, "Solo", cid, b"+33.000000-117.000000")
        other = uid("c6-pipe-other")
        t = now_text()
        deadline_s = PLACES_TIMEOUT_MS / 1000 + MARGIN_S
        with self.herd.connect("Solo") as c:
            c.send(b"WHATSAT " + cid + b" 10 5\n" + iamat_line(other, b"+1+1", t) + b"\n")
            c.shutdown_write()
            start = time.monotonic()
            reply = c.recv_until(b"\n\n", timeout=deadline_s)
            rest = c.read_to_eof(timeout=1)
        self.assertLess(time.monotonic() - start, deadline_s + 1)
        self.assertUnknownError(reply, at)
        m = AT_RE_B.match(rest[:-1])
        self.assertTrue(m and rest.endswith(b"\n") and m.group(3) == other, rest)


if __name__ == "__main__":
    unittest.main()
