"""The peer port's guard, second round (issue 18, PROTOCOL.md sections 6
and 7): connections are refused inside libzmq (ZAP), never by descriptor
number, so churn on the peer port costs no client its reply; a stranger
cannot hold a neighbour's name for good; frames past the largest a server
sends close their connection; repair answers only what was offered, one at
a time; and what strangers make the server log is rate-limited.

Bailey and Campbell run and are linked; Bailey's other neighbour, Bona, is
in the topology but not started, and the tests speak as Bona or as
strangers (the links are not authenticated: the hosts are loopback). Every
wait is a condition with a deadline.
"""

import re
import socket
import struct
import signal
import threading
import time
import unittest

from herdtest import HerdTestCase, iamat_line, sanitized_server, status_kb, wait_until
from peerwire import (Zmtp, ZmtpListener, mp_buckets, mp_digest, mp_updates, mp_want, raw_connection,
                      zmtp_frame_header)

LINK_TIMEOUT = 10
SEEN_TIMEOUT = 10


def uid(tag):
    return ("peer-guard-%s-%d" % (tag, time.monotonic_ns())).encode()


class PeerGuardTest(HerdTestCase):

    def setUp(self):
        self.herd = self.make_herd(servers=["Bailey", "Bona", "Campbell"],
                                   links=[("Bailey", "Bona"), ("Bailey", "Campbell")],
                                   extra={"state_dir": None})
        self.herd.add_admin_ports()
        self.herd.start("Bailey")
        self.herd.start("Campbell")
        self.herd.wait_log("Bailey", re.compile(r"(?m)link to Campbell up$"), LINK_TIMEOUT)
        self.herd.wait_log("Campbell", re.compile(r"(?m)link to Bailey up$"), LINK_TIMEOUT)
        self.port = self.herd.peer_port("Bailey")

    def metric(self, name, metric, **labels):
        return self.herd.metrics(name).get((metric, frozenset(labels.items())), 0)

    def still_linked(self, why):
        """Bailey serves, and a report at Campbell reaches it."""
        self.assertTrue(self.herd.running("Bailey"), "Bailey died: " + why)
        cid = uid("after")
        at = self.iamat_at(self.herd, "Campbell", cid)
        wait_until(lambda: self.stored_at(self.herd, "Bailey", cid) == at, SEEN_TIMEOUT,
                   msg="a report at Campbell did not reach Bailey " + why)

    def test_reset_churn_on_the_peer_port_costs_no_client_reply(self):
        """100 raw connections hold the peer port past its cap while others
        are opened and reset as fast as they can be: every IAMAT that a
        client sends meanwhile, each on a connection of its own, gets its AT
        reply. (A guard that shut descriptors named by accept events shut
        client connections whose descriptors reused those numbers.)"""
        stop = threading.Event()
        held = []
        peak = [0]  # the most held at once

        def hold():
            # Raw connections are dropped after the handshake window: keep
            # 100 open by opening new ones as old ones close.
            while not stop.is_set():
                while len(held) < 100 and not stop.is_set():
                    try:
                        held.append(raw_connection(self.port, b""))
                    except OSError:
                        break
                peak[0] = max(peak[0], len(held))
                for s in list(held):
                    s.setblocking(False)
                    try:
                        if s.recv(4096) == b"":
                            raise ConnectionResetError
                    except BlockingIOError:
                        continue
                    except OSError:
                        pass
                    s.close()
                    held.remove(s)
                stop.wait(0.05)

        churned = [0]

        def churn():
            linger = struct.pack("ii", 1, 0)
            while not stop.is_set():
                try:
                    s = socket.create_connection(("127.0.0.1", self.port), timeout=2)
                except OSError:
                    continue
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                s.close()  # a reset
                churned[0] += 1

        threads = [threading.Thread(target=hold), threading.Thread(target=churn), threading.Thread(target=churn)]
        for t in threads:
            t.start()
        try:
            # The server closes raw connections (handshake window, refusals
            # past the cap) while the holder opens new ones: 100 held at once,
            # at least once, is the condition to go on.
            wait_until(lambda: peak[0] >= 100, 20, msg="the raw connections could not be opened")
            answered, lost = 0, []
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline:
                cid = uid("c")
                line = iamat_line(cid) + b"\n"
                try:
                    reply = self.herd.send("Bailey", line, 10)
                except OSError as e:
                    lost.append("%r: %s" % (cid, e))
                    continue
                if reply.startswith(b"AT Bailey ") and reply.endswith(b"\n"):
                    answered += 1
                else:
                    lost.append("%r: %r" % (cid, reply))
        finally:
            stop.set()
            for t in threads:
                t.join(10)
            for s in held:
                s.close()
        self.assertGreater(churned[0], 100, "the churn did not run")
        self.assertGreater(answered, 100, "too few IAMATs to tell")
        self.assertEqual(lost, [], "%d of %d IAMATs got no AT reply" % (len(lost), answered + len(lost)))
        self.still_linked("after reset churn on the peer port")

    def test_handshakes_past_the_cap_are_refused_and_a_neighbour_gets_back_in(self):
        """Strangers that finish their handshakes (100 at once) fill the cap (64 + 4 x 2):
        the ones past it are refused during the handshake (counted, logged
        with their address, a few lines a second). Held for long, they are
        all dropped at once, so a neighbour that restarts behind them links
        again."""
        mark = self.herd.log_size("Bailey")
        let_in, failed = [], []

        def one(i):
            try:
                let_in.append(Zmtp(self.port, b"stranger-%d" % i, timeout=5))
            except (AssertionError, OSError) as e:
                failed.append(e)
        threads = [threading.Thread(target=one, args=(i,)) for i in range(100)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        for z in let_in:
            self.addCleanup(z.close)
        refused = len(failed)
        self.assertLessEqual(len(let_in), 72, "the peer port let past its cap")
        self.assertGreaterEqual(refused, 100 - 72)
        self.assertGreaterEqual(self.metric("Bailey", "herd_peer_connections_refused_total"), 100 - 72)
        wait_until(lambda: re.search(r"peer port: refused a connection from 127\.0\.0\.1: the peer port is full",
                                     self.herd.log_since("Bailey", mark)), 10,
                   msg="no refusal logged by the peer port")
        self.still_linked("with the peer port full")
        # Campbell restarts: its connection is refused while the strangers
        # hold the cap, until they are dropped.
        self.assertEqual(self.herd.stop("Campbell"), 0)
        for i in range(20):  # strangers take the slots Campbell left, until one is refused
            try:
                z = Zmtp(self.port, b"late-%d" % i, timeout=5)
            except (AssertionError, OSError):
                break
            self.addCleanup(z.close)
            let_in.append(z)
        else:
            self.fail("the peer port let 20 more strangers in")
        self.herd.start("Campbell")
        self.herd.wait_log("Bailey", re.compile(r"peer port: dropping every connection on it"), 30)
        self.still_linked("after Campbell restarted behind strangers holding the cap")
        self.assertTrue(all(z.closed_by_peer(5) for z in let_in), "a stranger's connection outlived the sweep")

    def test_a_stranger_cannot_hold_a_neighbours_name_for_good(self):
        """While Bona is down a stranger connects as Bona and stays silent.
        Once the real Bona runs (Bailey's link to it is up) and nothing of
        it reaches Bailey, Bailey drops every connection on its peer port;
        the real Bona reconnects and its reports reach Bailey."""
        impostor = Zmtp(self.port, b"Bona")
        self.addCleanup(impostor.close)
        self.herd.start("Bona")
        self.herd.wait_log("Bona", re.compile(r"(?m)link to Bailey up$"), LINK_TIMEOUT)
        cid = uid("bona")
        at = self.iamat_at(self.herd, "Bona", cid)
        wait_until(lambda: self.stored_at(self.herd, "Bailey", cid) == at, 40,
                   msg="Bona's report never reached Bailey: the impostor holds its name")
        self.assertTrue(impostor.closed_by_peer(5), "the impostor's connection was not dropped")
        # Logged before Bona's report could get through, but the report being
        # stored does not say the line is written yet.
        self.herd.wait_log("Bailey", re.compile(r"Bona is running .* another connection may hold its name"))

    def test_a_frame_past_the_cap_closes_its_connection(self):
        """A 64 MiB frame is refused at its header: the connection is closed,
        nothing is held for it; frames just under the cap from a neighbour's
        name for a few seconds (at least 24 of them) leave Bailey's peak RSS under
        300 MB."""
        z = Zmtp(self.port, b"Bona")
        self.addCleanup(z.close)
        z.sock.sendall(zmtp_frame_header(0x00, 64 * 1024 * 1024) + b"\x93" * 65536)
        self.assertTrue(z.closed_by_peer(5), "a 64 MiB frame did not close its connection")
        big = b"\x93\x01\x02\x91\xdb" + struct.pack(">I", 4 * 1024 * 1024 - 64) + b"x" * (4 * 1024 * 1024 - 64)
        # For 4 s, and on a loaded machine until 24 frames (96 MiB) are in,
        # within a generous deadline.
        start = time.monotonic()
        deadline = start + 30

        def more():
            now = time.monotonic()
            return now < deadline and (now < start + 4 or sent < 24)
        sent = 0
        while more():
            try:
                z = Zmtp(self.port, b"Bona")
            except (AssertionError, OSError):
                continue
            try:
                while more():
                    z.send(big)
                    sent += 1
            except OSError:
                pass
            z.close()
        self.assertGreater(sent, 10)
        peak = status_kb(self.herd.pid("Bailey"), "VmHWM")
        if not sanitized_server():
            self.assertLess(peak, 300 * 1024, "peak RSS %d kB under near-cap frames" % peak)
        self.still_linked("after oversized frames")

    def test_repair_answers_one_at_a_time_and_only_what_it_offered(self):
        """Speaking as Bona: BUCKETS that no GROUPS asked for is refused; a
        DIGEST, BUCKETS, empty last WANT cycle repeated as fast as it can go
        gets the table sent once per answer gap, not once per cycle (the
        last WANT does not reset the one-at-a-time guard); a WANT for
        buckets that were not offered sends nothing."""
        listener = ZmtpListener(self.herd.peer_port("Bona"))
        self.addCleanup(listener.close)
        # 20,000 records at Bailey, through Campbell.
        lines = b"".join(iamat_line(b"guard-%d" % i) + b"\n" for i in range(20000))
        replies = self.herd.send("Campbell", lines, 60)
        self.assertEqual(replies.count(b"\n"), 20000)
        wait_until(lambda: self.stored_at(self.herd, "Bailey", b"guard-19999") is not None, 20,
                   msg="the records did not reach Bailey")
        wait_until(lambda: self.herd.link_up("Bailey").get("Bona"), LINK_TIMEOUT,
                   msg="Bailey's link to the stand-in Bona is not up")
        bona = Zmtp(self.port, b"Bona")
        self.addCleanup(bona.close)
        zero = [0] * 256

        def records_sent():
            return self.metric("Bailey", "herd_repair_records_sent_total", peer="Bona")

        before = records_sent()
        bona.send(mp_buckets([0], zero))  # no GROUPS asked for it
        wait_until(lambda: self.metric("Bailey", "herd_repair_refused_total", peer="Bona") >= 1, 5,
                   msg="an unasked BUCKETS was not refused")
        self.assertEqual(records_sent(), before)
        started = time.monotonic()
        cycles = 0
        while time.monotonic() - started < 3:
            bona.send(mp_digest(1, 1))
            bona.send(mp_buckets(range(256), zero * 256))
            bona.send(mp_want(True, []))
            cycles += 1
            time.sleep(0.01)
        seconds = time.monotonic() - started
        wait_until(lambda: records_sent() >= before + 20000, 10, msg="the table was never sent")
        # The answers still in flight are counted too: wait until the count
        # has stood still for a moment (the answer gap is over 1 s, so a
        # still count means no answer is on its way).
        last = [records_sent(), time.monotonic()]

        def settled():
            now = records_sent()
            if now != last[0]:
                last[:] = [now, time.monotonic()]
            return time.monotonic() - last[1] >= 0.5
        wait_until(settled, 10, interval=0.05, msg="the records sent never settled")
        sent = records_sent() - before
        # The answer gap after 20,000 records is 20000 / 16 ms = 1.25 s.
        self.assertLessEqual(sent, 20000 * (int(seconds / 1.25) + 2),
                             "%d records sent for %d cycles in %.1f s" % (sent, cycles, seconds))
        self.assertGreater(cycles, 20)
        still = records_sent()
        bona.send(mp_want(True, [(7, 12345)]))  # nothing open, nothing offered
        self.still_linked("after a repair flood")
        self.assertEqual(records_sent(), still)

    def test_stranger_messages_are_logged_a_few_times_a_second(self):
        """A stranger sending one-byte messages for 5 s: under 2 MB of log,
        and the lines left out are counted."""
        z = Zmtp(self.port, b"Eve")
        self.addCleanup(z.close)
        named = Zmtp(self.port, b"Bona")
        self.addCleanup(named.close)
        mark = self.herd.log_size("Bailey")
        deadline = time.monotonic() + 5
        sent = 0
        while time.monotonic() < deadline:
            z.send(b"x")
            named.send(b"\xc1")
            sent += 2
        self.still_linked("after a stranger's flood")
        grown = self.herd.log_size("Bailey") - mark
        self.assertGreater(sent, 10000)
        self.assertLess(grown, 2 * 1024 * 1024, "%d bytes of log for %d messages" % (grown, sent))
        text = self.herd.log_since("Bailey", mark)
        self.assertRegex(text, r"dropped a message from a sender that is not a neighbour \(\d+ more like it left out\)")
        self.assertRegex(text, r"peer Bona: dropped a message: .*\(\d+ more like it left out\)")
        # The peer port reads one message per connection at a time (the
        # ROUTER's queue), so what was sent may still be in the sockets'
        # buffers: wait until the server has handled it.
        wait_until(lambda: self.metric("Bailey", "herd_peer_log_left_out_total") > sent / 2, 60,
                   msg="the left-out lines were not counted")


if __name__ == "__main__":
    unittest.main()


class StopHandsOverTest(HerdTestCase):
    """PROTOCOL.md section 8: a stop gives the neighbours that are up time to
    take what was flooded."""

    def test_sigterm_right_after_a_burst_loses_no_acknowledged_update(self):
        herd = self.make_herd(servers=["Bailey", "Campbell"], links=[("Bailey", "Campbell")],
                              extra={"state_dir": None})
        herd.start("Bailey")
        herd.start("Campbell")
        herd.wait_log("Bailey", re.compile(r"(?m)link to Campbell up$"), LINK_TIMEOUT)
        herd.wait_log("Campbell", re.compile(r"(?m)link to Bailey up$"), LINK_TIMEOUT)
        # Campbell is paused, so what Bailey floods waits in its queues (the
        # positions are long: more than the kernel's socket buffers hold); Bailey
        # is stopped right after the last AT reply, and Campbell resumes.
        herd.pause("Campbell")
        resumed = False
        try:
            pos = b"+34." + b"1" * 1800 + b"-118." + b"1" * 1800  # digits are any number
            cids = [b"stop-%d-%d" % (i, time.monotonic_ns()) for i in range(2000)]
            replies = b""
            with herd.connect("Bailey", 60) as c:
                for i in range(0, len(cids), 100):
                    c.send(b"".join(iamat_line(cid, pos) + b"\n" for cid in cids[i:i + 100]))
                    replies += c.recv_until(lambda got: got.count(b"\n") >= 100, 60)
                herd.process("Bailey").send_signal(signal.SIGTERM)
                herd.resume("Campbell")
                resumed = True
        finally:
            if not resumed:
                herd.resume("Campbell")
        self.assertEqual(replies.count(b"AT Bailey "), len(cids), "not every IAMAT was acknowledged")
        self.assertEqual(herd.wait_exit("Bailey", 30), 0)
        held = herd.records("Campbell", cids, 60, batch=64)
        missing = [cid for cid, at in held.items() if at is None]
        self.assertEqual(missing, [], "%d of %d acknowledged updates never reached Campbell"
                         % (len(missing), len(cids)))
