"""Strangers and hostile neighbours on the peer port (issue 11, PROTOCOL.md
section 7): they cannot make a server send more than an exchange needs,
knock a real neighbour's link off, or pile up connections, and the server
stays up and linked throughout.

Bailey and Campbell run and are linked; Bailey's other neighbour, Bona, is
in the topology but never started, and the tests speak as Bona (the links
are not authenticated: the hosts are loopback). Every wait is a condition
with a deadline.
"""

import re
import time
import unittest

from herdtest import HerdTestCase, HerdTimeout, POS, now_text, wait_until
from peerwire import Zmtp, mp_hello, mp_updates, raw_connection

LINK_TIMEOUT = 10
SEEN_TIMEOUT = 10


def uid(tag):
    return ("peer-abuse-%s-%d" % (tag, time.monotonic_ns())).encode()


class PeerAbuseTest(HerdTestCase):

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

    def zmtp(self, identity):
        z = Zmtp(self.port, identity)
        self.addCleanup(z.close)
        return z

    def still_linked(self, why):
        """Bailey serves, and a report at Campbell reaches it."""
        self.assertTrue(self.herd.running("Bailey"), "Bailey died: " + why)
        cid = uid("after")
        at = self.iamat_at(self.herd, "Campbell", cid)
        wait_until(lambda: self.stored_at(self.herd, "Bailey", cid) == at, SEEN_TIMEOUT,
                   msg="a report at Campbell did not reach Bailey " + why)
        wait_until(lambda: self.herd.link_up("Bailey").get("Campbell"), LINK_TIMEOUT,
                   msg="Bailey's link to Campbell is not up " + why)

    def test_a_hello_flood_is_answered_at_a_bounded_rate(self):
        """20,000 HELLOs claiming a table that differs: each would cost an
        answer and a log line; past 20 a second they cost neither."""
        bona = self.zmtp(b"Bona")
        mark = self.herd.log_size("Bailey")
        hello = mp_hello(b"Bona", 7, 123456, 0xdeadbeef)
        started = time.monotonic()
        for _ in range(20000):
            bona.send(hello)
        # Everything sent before this update was handled once it is stored.
        cid = uid("control")
        at = b"AT Bona +0.000000001 " + cid + b" " + POS + b" " + now_text()
        bona.send(mp_updates([at]))
        wait_until(lambda: self.stored_at(self.herd, "Bailey", cid) == at, SEEN_TIMEOUT,
                   msg="the control update after the flood was not stored")
        seconds = time.monotonic() - started

        def counts():
            logged = len(re.findall(r"(?m)rejoin: HELLO from Bona", self.herd.log_since("Bailey", mark)))
            refused = self.herd.metrics("Bailey")[("herd_repair_refused_total", frozenset({("peer", "Bona")}))]
            return logged, refused
        # Every HELLO was handled, but the last ones' lines may reach the
        # file a moment after the control is stored: wait until the lines
        # and the refusals account for all of them.
        try:
            wait_until(lambda: sum(counts()) >= 20000, SEEN_TIMEOUT, interval=0.05)
        except HerdTimeout:
            pass
        logged, refused = counts()
        self.assertLessEqual(logged, 20 * (int(seconds) + 2), "HELLOs logged in %.1f s" % seconds)
        self.assertGreaterEqual(refused, 20000 - logged, "refused HELLOs")
        wait_until(lambda: "HELLO past the rate limit" in self.herd.log_since("Bailey", mark), 10,
                   msg="no 'HELLO past the rate limit' in the log")
        self.still_linked("after a HELLO flood")

    def test_a_second_connection_under_a_connected_name_is_refused(self):
        """With the real Campbell connected, a stranger claiming to be
        Campbell is not let in, and the real link is not disturbed."""
        mark = self.herd.log_size("Campbell")
        for _ in range(20):
            try:
                z = Zmtp(self.port, b"Campbell", timeout=2)
            except (AssertionError, OSError):
                continue  # refused during the handshake: as good
            self.addCleanup(z.close)
            z.send(b"\x93\x01\x02\x90")  # an empty UPDATES
        self.still_linked("after 20 impostors named Campbell")
        self.assertNotRegex(self.herd.log_since("Campbell", mark), r"(?m)link to Bailey down$",
                            "an impostor knocked Campbell's link off")

    def test_a_connection_flood_on_the_peer_port_is_capped(self):
        """250 raw connections that never start a handshake: the real link
        stays up, and a neighbour that reconnects later gets in once their
        handshake window is over. (Handshakes past the cap are refused
        inside libzmq: test_peer_guard.py.)"""
        conns = []
        for _ in range(250):
            s = raw_connection(self.port, b"")
            self.addCleanup(s.close)
            conns.append(s)
        self.still_linked("during a connection flood on the peer port")
        # Campbell restarts: once the strangers' connections are gone (their
        # handshake window), it links again.
        self.assertEqual(self.herd.stop("Campbell"), 0)
        self.herd.start("Campbell")
        self.herd.wait_log("Campbell", re.compile(r"(?m)link to Bailey up$"), 15)
        self.still_linked("after Campbell restarted behind a connection flood")

    def test_idle_connections_to_the_peer_port_are_dropped(self):
        """Raw TCP connections that never finish a ZMTP handshake are closed
        by the server within its handshake window (3 s), so they cannot pile
        up; the server stays linked meanwhile."""
        conns = []
        for _ in range(300):
            s = raw_connection(self.port, b"")
            self.addCleanup(s.close)
            conns.append(s)
        self.still_linked("with 300 idle connections on the peer port")

        def closed(s):
            # Whatever the server sent (its half of a greeting) is read and
            # dropped; closed means end of file or a reset.
            s.setblocking(False)
            try:
                while True:
                    if s.recv(65536) == b"":
                        return True
            except (ConnectionResetError, BrokenPipeError):
                return True
            except BlockingIOError:
                return False
        wait_until(lambda: all(closed(s) for s in conns), 15,
                   msg="idle peer-port connections were not closed")
        self.still_linked("after the idle connections")


if __name__ == "__main__":
    unittest.main()
