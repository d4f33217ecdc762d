"""The client protocol over TCP (PROTOCOL.md sections 2, 3, 5, 6 and 8).

One server, Bailey, with no links. Its Places URL points at a closed local
port and a dummy key is set, so every WHATSAT for a known client is answered
at once with the stored AT line and an UNKNOWN_ERROR object; the Places body
itself is covered by test_places.py. The server runs with TZ set to a zone
that is not UTC, so a log written in local time is caught.

Run: cd tests/integration && HERD_SERVER=.../herd-server python3 -m unittest -v test_client_protocol
"""

import calendar
import json
import re
import socket
import select
import threading
import time
import unittest
import uuid

from herdtest import (AT_RE_B, PLACES_KEY_ENV, POS, Herd, HerdTestCase, free_ports, iamat_line,
                      now_text, ns_text, wait_until)

S = "Bailey"
KEY = "dummy-key-3f9a1c77"  # must never appear in a reply or in the log
SLACK_NS = 1_000_000_000  # clock tolerance when bracketing the server's receive time


def uid(prefix="c"):
    """A client id no other test uses."""
    return ("%s-%s" % (prefix, uuid.uuid4().hex[:12])).encode()


def time_ns_of(text):
    """The client time text D+[.D+] in nanoseconds, digits past the ninth dropped."""
    sec, _, frac = text.partition(b".")
    return int(sec) * 10**9 + int((frac + b"000000000")[:9])


def skew_ns_of(skew):
    """A skew text [+-]D+.DDDDDDDDD in nanoseconds."""
    sign = -1 if skew[:1] == b"-" else 1
    sec, _, frac = skew[1:].partition(b".")
    return sign * (int(sec) * 10**9 + int(frac))


def closed_url():
    return "http://127.0.0.1:%d/maps/api/place/nearbysearch/json" % free_ports(1)[0]


class ProtocolCase(HerdTestCase):
    """Shared checks; subclasses start their own herd in setUpClass."""

    herd = None

    @classmethod
    def start_herd(cls, **kw):
        cls.herd = Herd(servers=[S], **kw)
        cls.addClassCleanup(cls.herd.close)
        cls.herd.start(S)

    def tearDown(self):
        # Every test must leave the server up. A crash fails the test that
        # caused it (with the server's stderr), and a fresh server on the same
        # ports keeps the next tests from failing in a cascade.
        state = self.herd.state(S, settle=0.05)
        if state:
            self.herd.start(S)
            self.fail("the server died during this test: " + state)

    def send(self, data, timeout=10):
        return self.herd.send(S, data, timeout)

    def assertAt(self, line, cid, pos, t, before_ns=None, after_ns=None):
        """line is one AT reply line including its LF, for IAMAT cid pos t,
        received by Bailey between before_ns and after_ns; returns the skew."""
        self.assertTrue(line.endswith(b"\n"), "no LF at the end of %r" % line)
        m = AT_RE_B.match(line[:-1])
        self.assertIsNotNone(m, "not an AT line: %r" % line)
        self.assertEqual(m.group(1), S.encode(), line)
        self.assertEqual(m.group(3), cid, line)
        self.assertEqual(m.group(4), pos, line)
        self.assertEqual(m.group(5), t, line)
        if before_ns is not None:
            received = time_ns_of(t) + skew_ns_of(m.group(2))
            self.assertGreaterEqual(received, before_ns - SLACK_NS,
                                    "skew %s too small for time %s" % (m.group(2), t))
            self.assertLessEqual(received, after_ns + SLACK_NS,
                                 "skew %s too large for time %s" % (m.group(2), t))
        return m.group(2)

    def iamat_ok(self, cid, pos=POS, t=None):
        """Sends one IAMAT, checks the reply, returns the AT line (with LF)."""
        if t is None:
            t = now_text()
        before = time.time_ns()
        reply = self.send(iamat_line(cid, pos, t) + b"\n")
        after = time.time_ns()
        self.assertEqual(reply.count(b"\n"), 1, reply)
        self.assertAt(reply, cid, pos, t, before, after)
        return reply

    def assertInvalid(self, line, ending=b"\n"):
        self.assertEqual(self.send(line + ending), b"? " + line + b"\n")

    def assertWhatsatReply(self, reply, at_line):
        """reply is a whole WHATSAT reply: the stored AT line, one JSON object
        (UNKNOWN_ERROR here), and a blank line; returns the object."""
        self.assertTrue(reply.startswith(at_line), "reply %r does not start with %r"
                        % (reply[:300], at_line))
        self.assertTrue(reply.endswith(b"}\n\n"), "reply does not end with '}\\n\\n': %r"
                        % reply[-300:])
        self.assertNotIn(b"\n\n", reply[:-1], "a blank line before the end: %r" % reply)
        body = reply[len(at_line):-2]
        obj = json.loads(body.decode("utf-8"))
        self.assertIsInstance(obj, dict)
        self.assertNotIn(KEY.encode(), reply)
        return obj


class ClientProtocolTest(ProtocolCase):

    @classmethod
    def setUpClass(cls):
        cls.start_herd(env={PLACES_KEY_ENV: KEY, "HERD_PLACES_URL": closed_url(),
                            "TZ": "PST8PDT"})

    # ------------------------------------------------------------ IAMAT

    def test_course_example(self):
        t = b"1621464827.959498503"
        before = time.time_ns()
        reply = self.send(b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503\n")
        after = time.time_ns()
        self.assertRegex(reply, rb"\AAT Bailey \+\d+\.\d{9} kiwi\.cs\.ucla\.edu "
                                rb"\+34\.068930-118\.445127 1621464827\.959498503\n\Z")
        self.assertAt(reply, b"kiwi.cs.ucla.edu", POS, t, before, after)

    def test_skew_for_time_near_now(self):
        cid, t = uid(), now_text()
        before = time.time_ns()
        reply = self.send(iamat_line(cid, POS, t) + b"\n")
        after = time.time_ns()
        skew = self.assertAt(reply, cid, POS, t, before, after)
        self.assertTrue(skew.startswith(b"+"), skew)
        self.assertLess(abs(skew_ns_of(skew)), 5 * 10**9, skew)

    def test_skew_negative_for_future_time(self):
        cid, t = uid(), ns_text(time.time_ns() + 1000 * 10**9 + 123456789)
        before = time.time_ns()
        reply = self.send(iamat_line(cid, POS, t) + b"\n")
        after = time.time_ns()
        skew = self.assertAt(reply, cid, POS, t, before, after)
        self.assertTrue(skew.startswith(b"-"), skew)
        self.assertAlmostEqual(skew_ns_of(skew) / 1e9, -1000, delta=5)

    def test_time_fraction_digits_echoed(self):
        sec = b"%d" % (time.time() - 100)
        for t in (sec, sec + b".1234567", sec + b".123456789", sec + b".123456789987",
                  sec + b".000000000", sec + b".5", b"000" + sec + b".25", b"0", b"0.0"):
            with self.subTest(t=t):
                self.iamat_ok(uid(), POS, t)

    def test_valid_positions_echoed(self):
        for pos in (b"+90-180", b"-90+180", b"+90.000000000-180.00000", b"+0+0", b"-0-0",
                    b"+00000090.0+000180", b"+1+1", b"-89.999999999999999999+179.9999999999999",
                    b"+12.345678901234567890-123.45678901234567890"):
            with self.subTest(pos=pos):
                self.iamat_ok(uid(), pos)

    def test_client_id_limits(self):
        self.iamat_ok(b"i" * 255)
        self.iamat_ok(b"x" * 200 + uid()[:55])
        self.assertInvalid(iamat_line(b"j" * 256, POS, b"1621464827.5"))
        # Any byte that is not white space belongs to the id.
        self.iamat_ok(b"\x00\x01\x7f\x80\xff" + uid(), POS)
        self.iamat_ok(b"IAMAT", POS)

    def test_newer_older_equal(self):
        cid = uid("order")
        base = time.time_ns() - 50 * 10**9
        t2 = ns_text(base)
        at2 = self.iamat_ok(cid, b"+10+10", t2)
        whatsat = b"WHATSAT " + cid + b" 10 5\n"
        self.assertWhatsatReply(self.send(whatsat), at2)

        # Older: answered with its own AT line, not stored.
        self.iamat_ok(cid, b"+20+20", ns_text(base - 10**9))
        self.assertWhatsatReply(self.send(whatsat), at2)
        self.iamat_ok(cid, b"+20+20", ns_text(base - 1))
        self.assertWhatsatReply(self.send(whatsat), at2)

        # Equal, exactly (trailing zeros, digits past the ninth), from the same
        # server: PROTOCOL section 3 ranks by position text (bytes) next, the
        # greater winning. A smaller position is not stored...
        for t in (t2, t2 + b"000", t2 + b"999"):
            with self.subTest(t=t, pos="smaller"):
                self.iamat_ok(cid, b"+05+05", t)
                self.assertWhatsatReply(self.send(whatsat), at2)
        # ... a greater one is, once; the same position again is not.
        at_eq = self.iamat_ok(cid, b"+30+30", t2 + b"000")
        self.assertWhatsatReply(self.send(whatsat), at_eq)
        for t in (t2, t2 + b"999"):
            with self.subTest(t=t, pos="same"):
                self.iamat_ok(cid, b"+30+30", t)
                self.assertWhatsatReply(self.send(whatsat), at_eq)

        # One nanosecond newer: stored, whatever its position.
        at3 = self.iamat_ok(cid, b"+01+01", ns_text(base + 1))
        self.assertWhatsatReply(self.send(whatsat), at3)

    # ---------------------------------------------------------- invalid

    def test_invalid_lines_echoed(self):
        t = b"1621464827.959498503"
        nobody = uid("nobody")
        lines = [
            b"HELLO", b"HELLO world", b"iamat kiwi " + POS + b" " + t,
            b"Iamat kiwi " + POS + b" " + t, b"whatsat kiwi.cs.ucla.edu 10 5",
            b"IAMAT", b"IAMAT kiwi", b"IAMAT kiwi " + POS, b"IAMAT kiwi " + POS + b" " + t + b" x",
            b"WHATSAT", b"WHATSAT kiwi.cs.ucla.edu", b"WHATSAT kiwi.cs.ucla.edu 10",
            b"WHATSAT kiwi.cs.ucla.edu 10 5 5", b"IAMATkiwi " + POS + b" " + t,
            b"AT Bailey +0.263873386 kiwi.cs.ucla.edu " + POS + b" " + t,
            b"AT", b"?", b"? IAMAT",
            b"WHATSAT " + nobody + b" 10 5",
            b"IAMAT\tx  +1+1 5 extra",
        ]
        for pos in (b"34.068930-118.445127", b"+34.068930118.445127", b"+34.068930",
                    b"+91-100", b"-91+100", b"+90.000000001+0", b"-90.1+0", b"+0+180.000000001",
                    b"+0-181", b"+34.-118", b"+34-118.", b"+.5+1", b"+1+.5", b"++34-118",
                    b"+34--118", b"+34-118-1", b"+34.0689a0-118.4", b"+34,5-118", b"+1e1+1",
                    b"+", b"+-", b"+0x1+1", b"+100000000000000000000+0"):
            lines.append(b"IAMAT " + uid() + b" " + pos + b" " + t)
        for tt in (b"-1621464827", b"+1621464827", b"1.6e9", b"1621464827.", b".5",
                   b"1621464827.5.5", b"abc", b"1621464827,5", b"0x10", b"1621464827.5x",
                   b"1621464827e0", b"\xd9\xa1"):
            lines.append(b"IAMAT " + uid() + b" " + POS + b" " + tt)
        for line in lines:
            with self.subTest(line=line):
                self.assertInvalid(line)

    def test_invalid_command_stores_nothing(self):
        for bad in (lambda c: iamat_line(c, b"+91+0"), lambda c: iamat_line(c) + b" extra",
                    lambda c: b"AT Bailey +0.000000001 " + c + b" +1+1 5",
                    lambda c: iamat_line(c, POS, b"-5")):
            cid = uid("nostore")
            with self.subTest(line=bad(cid)):
                self.assertInvalid(bad(cid))
                self.assertInvalid(b"WHATSAT " + cid + b" 10 5")

    def test_whatsat_unknown_client(self):
        self.assertInvalid(b"WHATSAT " + uid("unknown") + b" 10 5")

    def test_whatsat_radius_and_bound_validation(self):
        cid = uid("near")
        at = self.iamat_ok(cid)
        for radius, bound in ((b"0", b"5"), (b"0.0", b"5"), (b"51", b"5"), (b"50.0000001", b"5"),
                              (b"-1", b"5"), (b"+1", b"5"), (b"1e1", b"5"), (b".5", b"5"),
                              (b"5.", b"5"), (b"abc", b"5"), (b"0x10", b"5"),
                              (b"1000000000000000000000", b"5"),
                              (b"10", b"0"), (b"10", b"21"), (b"10", b"-1"), (b"10", b"+5"),
                              (b"10", b"5.0"), (b"10", b"1e1"), (b"10", b"x"), (b"10", b"00"),
                              (b"10", b"100000000000000000000005")):
            line = b"WHATSAT " + cid + b" " + radius + b" " + bound
            with self.subTest(line=line):
                self.assertInvalid(line)
        for radius, bound in ((b"50", b"20"), (b"0.001", b"1"), (b"050.000", b"020"),
                              (b"10", b"5"), (b"1", b"00001"), (b"0.000000000000000001", b"3")):
            line = b"WHATSAT " + cid + b" " + radius + b" " + bound
            with self.subTest(line=line):
                obj = self.assertWhatsatReply(self.send(line + b"\n"), at)
                self.assertEqual(obj.get("status"), "UNKNOWN_ERROR", obj)
                self.assertEqual(obj.get("results"), [], obj)
                self.assertEqual(obj.get("html_attributions"), [], obj)
                self.assertIsInstance(obj.get("error_message"), str, obj)

    def test_raw_bytes_echoed(self):
        for line in (b"\x00\xff\xfe GARBAGE \x80\x01", b"\x00", b"\xff" * 100,
                     bytes(b for b in range(256) if b != 10),
                     b"IAMAT \x00 " + POS + b" \x001621464827"):
            with self.subTest(line=line[:40]):
                self.assertInvalid(line)
        self.assertTrue(self.herd.running(S))
        self.iamat_ok(uid())

    # ---------------------------------------------------------- lexical

    def test_line_ends(self):
        self.assertEqual(self.send(b"BOGUS line\r\n"), b"? BOGUS line\n")
        self.assertEqual(self.send(b"FOO\rBAR\n"), b"? FOO\rBAR\n")
        self.assertEqual(self.send(b"FOO\r\r\n"), b"? FOO\r\n")
        self.assertEqual(self.send(b"  FOO  \t\n"), b"?   FOO  \t\n")
        self.assertEqual(self.send(b"\x0bFOO\x0c\r\n"), b"? \x0bFOO\x0c\n")
        cid, t = uid(), now_text()
        self.assertAt(self.send(b"IAMAT " + cid + b" " + POS + b" " + t + b"\r\n"), cid, POS, t)

    def test_white_space_separators(self):
        t = now_text()
        for fmt in (b"IAMAT\t%s\x0b%s\x0c%s\n", b"IAMAT\r%s\r%s\r%s\n",
                    b" \t\x0b\x0cIAMAT %s %s %s \t\x0c\x0b\r\n",
                    b"IAMAT \t\x0b\x0c\r %s \t %s\t\t\t%s\n", b"\r\rIAMAT %s %s %s\r\r\n"):
            cid = uid()
            with self.subTest(fmt=fmt):
                self.assertAt(self.send(fmt % (cid, POS, t)), cid, POS, t)

    def test_blank_lines_get_no_reply(self):
        cid, t = uid(), now_text()
        with self.herd.connect(S) as c:
            c.send(b"\n" + b"   \t\x0b\x0c\r\n" + b"\r\n" + b"\r\r\r\n"
                   + iamat_line(cid, POS, t) + b"\n")
            self.assertAt(c.recv_line(), cid, POS, t)
            c.send(b" \t \n\n\nFOO\n")
            self.assertEqual(c.recv_line(), b"? FOO\n")
            c.send(b"  \t ")
            c.shutdown_write()
            self.assertEqual(c.read_to_eof(), b"")
        self.assertEqual(self.send(b""), b"")
        self.assertEqual(self.send(b"\n\n"), b"")

    # ------------------------------------------------------- pipelining

    def test_pipelining_iamat(self):
        ids = [uid("pipe") for _ in range(200)]
        t = now_text()
        reply = self.send(b"".join(iamat_line(cid, POS, t) + b"\n" for cid in ids))
        lines = reply.split(b"\n")
        self.assertEqual(lines[-1], b"", reply[-200:])
        self.assertEqual(len(lines) - 1, len(ids))
        for cid, line in zip(ids, lines):
            self.assertAt(line + b"\n", cid, POS, t)

    def test_pipelining_mixed(self):
        known = uid("known")
        at = self.iamat_ok(known)
        data, expect = [], []
        for i in range(50):
            cid, t = uid("mix"), now_text()
            data.append(iamat_line(cid, POS, t) + b"\n")
            expect.append((cid, t))
            bad = b"BAD %d\t x" % i
            data.append(bad + b"\r\n")
            expect.append(b"? " + bad + b"\n")
            data.append(b"\n")
            nobody = b"WHATSAT " + uid("nobody") + b" 10 5"
            data.append(nobody + b"\n")
            expect.append(b"? " + nobody + b"\n")
            if i % 10 == 0:
                data.append(b"WHATSAT " + known + b" 10 %d\n" % (i % 20 + 1))
                expect.append("whatsat")
        with self.herd.connect(S) as c:
            c.send(b"".join(data))
            c.shutdown_write()
            for want in expect:
                if want == "whatsat":
                    self.assertWhatsatReply(c.recv_until(b"\n\n"), at)
                elif isinstance(want, tuple):
                    self.assertAt(c.recv_line(), want[0], POS, want[1])
                else:
                    self.assertEqual(c.recv_line(), want)
            self.assertEqual(c.read_to_eof(), b"")

    def test_blank_lines_behind_a_pending_whatsat(self):
        cid = uid("held")
        at = self.iamat_ok(cid)
        with self.herd.connect(S) as c:
            c.send(b"WHATSAT " + cid + b" 10 5\n\n \t\nFOO\n\n")
            c.shutdown_write()
            self.assertWhatsatReply(c.recv_until(b"\n\n"), at)
            self.assertEqual(c.read_to_eof(), b"? FOO\n")
        self.assertTrue(self.herd.running(S))

    def test_byte_by_byte(self):
        cid, t = uid("slow"), now_text()
        with self.herd.connect(S) as c:
            c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for b in iamat_line(cid, POS, t) + b"\r\nNOPE\n":
                c.send(bytes([b]))
            self.assertAt(c.recv_line(), cid, POS, t)
            self.assertEqual(c.recv_line(), b"? NOPE\n")

    def test_many_commands_one_connection(self):
        with self.herd.connect(S) as c:
            for i in range(300):
                cid, t = uid("seq"), now_text()
                c.send(iamat_line(cid, POS, t) + b"\n")
                self.assertAt(c.recv_line(), cid, POS, t)

    # --------------------------------------------------------------- EOF

    def single_read_after_half_close(self, data):
        """Sends data, half-closes, returns one recv and checks EOF follows."""
        s = socket.create_connection((self.herd.host(S), self.herd.port(S)), timeout=10)
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            first = s.recv(1 << 20)
            rest = b""
            while True:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                rest += chunk
            self.assertEqual(rest, b"", "the reply came in more than one read: %r then %r"
                             % (first, rest))
            return first
        finally:
            s.close()

    def test_eof_terminated_command(self):
        cid, t = uid("eof"), now_text()
        self.assertAt(self.single_read_after_half_close(iamat_line(cid, POS, t)), cid, POS, t)
        self.assertEqual(self.single_read_after_half_close(b"FOO bar"), b"? FOO bar\n")
        self.assertEqual(self.send(b"NOPE\nFOO"), b"? NOPE\n? FOO\n")

    def test_eof_terminated_whatsat(self):
        cid = uid("eofw")
        at = self.iamat_ok(cid)
        reply = self.single_read_after_half_close(b"WHATSAT " + cid + b" 10 5")
        obj = self.assertWhatsatReply(reply, at)
        self.assertEqual(obj.get("status"), "UNKNOWN_ERROR", obj)

    # ------------------------------------------------------- line limit

    def test_line_of_4096_bytes_is_processed(self):
        line = b"A" * 4096
        with self.herd.connect(S) as c:
            c.send(line + b"\n")
            self.assertEqual(c.recv_line(), b"? " + line + b"\n")
            cid, t = uid(), now_text()
            c.send(iamat_line(cid, POS, t) + b"\n")
            self.assertAt(c.recv_line(), cid, POS, t)

    def test_line_of_4096_bytes_with_crlf_is_processed(self):
        line = b"IAMAT " + b"a" * 4090
        with self.herd.connect(S) as c:
            c.send(line + b"\r\n")
            self.assertEqual(c.recv_line(), b"? " + line + b"\n")
            c.send(b"NEXT\n")
            self.assertEqual(c.recv_line(), b"? NEXT\n")

    def test_line_of_4096_bytes_at_eof(self):
        line = b"Z" * 4096
        self.assertEqual(self.send(line), b"? " + line + b"\n")

    def test_longest_valid_iamat(self):
        cid = b"L" * 255
        t = now_text()
        room = 4096 - len(b"IAMAT  ") - len(cid) - len(t) - 1
        lat_digits = room // 2 - len(b"+1.")
        lng_digits = room - room // 2 - len(b"+1.")
        pos = b"+1." + b"0" * lat_digits + b"+1." + b"0" * lng_digits
        line = iamat_line(cid, pos, t)
        self.assertEqual(len(line), 4096)
        self.assertAt(self.send(line + b"\n"), cid, pos, t)

    def test_line_of_4097_bytes_closes(self):
        line = b"B" * 4097
        with self.herd.connect(S) as c:
            c.send(line)
            self.assertEqual(c.read_to_eof(), b"? " + line[:4096] + b"\n")

    def test_overlong_line_after_command(self):
        cid, t = uid(), now_text()
        with self.herd.connect(S) as c:
            c.send(iamat_line(cid, POS, t) + b"\n" + b"C" * 5000 + b"\n" + b"IAMAT x +1+1 5\n")
            self.assertAt(c.recv_line(), cid, POS, t)
            self.assertEqual(c.read_to_eof(), b"? " + b"C" * 4096 + b"\n")

    def test_overlong_line_in_small_writes(self):
        with self.herd.connect(S) as c:
            for _ in range(41):
                try:
                    c.send(b"D" * 100)
                except (BrokenPipeError, ConnectionResetError):
                    break
            self.assertEqual(c.read_to_eof(), b"? " + b"D" * 4096 + b"\n")

    # ---------------------------------------------------------------- log

    TS_RE = re.compile(r"^\[?(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:[.,]\d+)?"
                       r"(?:Z|[+-]00:?00|\s?UTC)?\]?(?=\s)")

    def test_log_input_reply_and_connections(self):
        cid = uid("log") + b"\x01\xff"
        t = now_text()
        with self.herd.connect(S) as c:
            port = c.local_port
            c.send(b"IAMAT\t" + cid + b" +1+1 " + t + b"\n")
            reply = c.recv_line()
            c.send(b"JUNK\x00\x7f\n")
            self.assertEqual(c.recv_line(), b"? JUNK\x00\x7f\n")
        self.assertAt(reply, cid, b"+1+1", t)
        esc_id = re.escape(cid[:-2].decode()) + r"\\x01\\x[fF][fF]"
        self.herd.wait_log(S, re.compile(r"IAMAT\\t" + esc_id + re.escape(" +1+1 " + t.decode())))
        skew = AT_RE_B.match(reply[:-1]).group(2).decode()
        self.herd.wait_log(S, re.compile(re.escape("AT Bailey " + skew + " ") + esc_id
                                         + re.escape(" +1+1 " + t.decode())))
        self.herd.wait_log(S, re.compile(r"JUNK\\x00\\x7[fF]"))
        # The open is logged naming the client's port; the close names the
        # port too, or the connection the way the open line did ("conn 7 ...").
        opened = self.herd.wait_log(S, re.compile(
            r"(?im)^\S+ (.*?)\b(open|accept|connect|new)\w*\b(?=.*\b%d\b).*$" % port))
        tag = opened.group(1).strip()
        close_re = r"(?im)^(?=.*\b%d\b)(?=.*clos).*$" % port
        if tag:
            close_re += r"|^\S+ %s\b.*clos.*$" % re.escape(tag)
        close_re = re.compile(close_re)
        wait_until(lambda: close_re.search(self.herd.log_text(S), opened.end()), timeout=10,
                   msg="no close logged for the connection of %r" % opened.group(0))

    def test_log_lines_have_utc_timestamps_and_no_raw_bytes(self):
        self.assertInvalid(b"\x00\x01\x02\x1b[31m\xc3\xa9\xff")  # make sure there is something
        self.herd.wait_log(S, re.compile(r"\\x1[bB]\[31m"))
        data = self.herd.log_bytes(S)
        bad = sorted({b for b in data if not (0x20 <= b < 0x7f or b == 0x0a)})
        self.assertEqual(bad, [], "raw bytes in the log")
        now = time.time()
        lines = data.decode("ascii").splitlines()
        self.assertGreater(len(lines), 0)
        for line in lines:
            m = self.TS_RE.match(line)
            self.assertIsNotNone(m, "log line without a timestamp: %r" % line)
            stamp = calendar.timegm(tuple(int(g) for g in m.groups()) + (0, 0, 0))
            self.assertLess(abs(stamp - now), 3600, "timestamp not UTC (or not now): %r" % line)
        self.assertNotIn(KEY, data.decode("ascii"))

    # -------------------------------------------------------- concurrency

    def test_many_concurrent_clients(self):
        n, rounds = 200, 3
        errors = []
        barrier = threading.Barrier(n, timeout=30)

        def client(i):
            try:
                with self.herd.connect(S, timeout=30) as c:
                    barrier.wait()
                    for r in range(rounds):
                        cid, t = b"conc-%d-%d-" % (i, r) + uid(), now_text()
                        c.send(iamat_line(cid, POS, t) + b"\n")
                        line = c.recv_line(timeout=30)
                        m = AT_RE_B.match(line[:-1])
                        if not m or m.group(3) != cid or m.group(5) != t:
                            errors.append((i, r, line))
            except Exception as e:  # reported below, with the client's number
                errors.append((i, repr(e)))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
        self.assertFalse(any(th.is_alive() for th in threads), "clients still running")
        self.assertEqual(errors, [])


class NoPlacesKeyTest(ProtocolCase):
    """No key configured: WHATSAT still answers, with REQUEST_DENIED."""

    @classmethod
    def setUpClass(cls):
        cls.start_herd(env={"HERD_PLACES_URL": closed_url()})

    def test_whatsat_without_key(self):
        cid = uid("nokey")
        at = self.iamat_ok(cid)
        obj = self.assertWhatsatReply(self.send(b"WHATSAT " + cid + b" 10 5\n"), at)
        self.assertEqual(obj.get("status"), "REQUEST_DENIED", obj)
        self.assertEqual(obj.get("results"), [], obj)
        self.assertEqual(obj.get("html_attributions"), [], obj)
        self.assertIsInstance(obj.get("error_message"), str, obj)


class IdleTimeoutTest(ProtocolCase):

    @classmethod
    def setUpClass(cls):
        cls.start_herd(limits={"idle_timeout_ms": 300})

    def test_idle_connection_closed(self):
        start = time.monotonic()
        with self.herd.connect(S) as c:
            self.assertTrue(c.closed(timeout=10), "idle connection still open after 10s")
            elapsed = time.monotonic() - start
            self.assertEqual(c.pending, b"")
        self.assertGreaterEqual(elapsed, 0.29, "closed after %.3fs, before the idle timeout"
                                % elapsed)

    def test_idle_after_commands(self):
        with self.herd.connect(S) as c:
            c.send(b"FOO\n")
            self.assertEqual(c.recv_line(), b"? FOO\n")
            start = time.monotonic()
            self.assertTrue(c.closed(timeout=10), "idle connection still open after 10s")
            self.assertGreaterEqual(time.monotonic() - start, 0.25)

    def test_active_connection_stays_open(self):
        with self.herd.connect(S) as c:
            start = time.monotonic()
            n = 0
            while time.monotonic() - start < 1.2:  # four idle timeouts of traffic
                c.send(b"PING %d\n" % n)
                self.assertEqual(c.recv_line(timeout=5), b"? PING %d\n" % n)
                n += 1
            self.assertTrue(c.closed(timeout=10))

    def test_partial_line_is_no_activity(self):
        # Section 6: idle time counts from the last complete command line.
        with self.herd.connect(S) as c:
            start = time.monotonic()
            while time.monotonic() - start < 10:
                try:
                    c.send(b"x")
                except OSError:
                    break
                if c.closed(timeout=0.05):
                    break
            self.assertTrue(c.eof, "a trickle of bytes kept the connection for 10s")
            self.assertEqual(c.pending, b"")


class MaxClientsTest(ProtocolCase):

    @classmethod
    def setUpClass(cls):
        cls.start_herd(limits={"max_clients": 2})

    def served(self, c):
        c.send(b"HELLO\n")
        return c.recv_line(timeout=5) == b"? HELLO\n"

    def test_third_client_closed_at_once(self):
        c1, c2 = self.herd.connect(S), self.herd.connect(S)
        try:
            self.assertTrue(self.served(c1))
            self.assertTrue(self.served(c2))
            with self.herd.connect(S) as c3:
                start = time.monotonic()
                self.assertTrue(c3.closed(timeout=5), "third connection not closed")
                self.assertLess(time.monotonic() - start, 2)
                self.assertEqual(c3.pending, b"")
            # The refusal is logged, naming the refused client's port.
            self.herd.wait_log(S, re.compile(
                r"(?im)^(?=.*\b%d\b)(?=.*(max[_ ]?clients|too many|limit|refus|reject)).*$"
                % c3.local_port))
            self.assertTrue(self.served(c1))
            c1.close()

            def a_new_client_is_served():
                with self.herd.connect(S) as c:
                    try:
                        return self.served(c)
                    except (AssertionError, OSError):
                        return False
            wait_until(a_new_client_is_served, timeout=10,
                       msg="no new client served after one of two closed")
        finally:
            c1.close()
            c2.close()


class MaxOutputTest(ProtocolCase):

    @classmethod
    def setUpClass(cls):
        cls.start_herd(limits={"max_output_bytes": 65536})

    def test_client_that_stops_reading_is_cut_off(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect((self.herd.host(S), self.herd.port(S)))
        s.setblocking(False)
        t = now_text()
        pos = b"+1." + b"0" * 1800 + b"+1." + b"0" * 1800
        chunk = b"".join(iamat_line(b"o" * 200 + b"%03d" % i, pos, t) + b"\n" for i in range(64))
        todo = memoryview(b"")
        sent, cut = 0, None
        deadline = time.monotonic() + 60
        last_progress = time.monotonic()
        try:
            while cut is None and sent < 512 * 2**20:
                now = time.monotonic()
                self.assertLess(now, deadline, "not cut off after sending %d bytes" % sent)
                self.assertLess(now - last_progress, 15,
                                "the server stopped reading after %d bytes instead of cutting "
                                "the client off" % sent)
                _, writable, _ = select.select([], [s], [], 0.1)
                if not writable:
                    continue
                if not todo:
                    todo = memoryview(chunk)
                try:
                    n = s.send(todo)
                except (BrokenPipeError, ConnectionResetError) as e:
                    cut = e
                    break
                except BlockingIOError:
                    continue
                todo = todo[n:]
                sent += n
                last_progress = time.monotonic()
            self.assertIsNotNone(cut, "never cut off after %d bytes" % sent)
        finally:
            s.close()
        self.assertTrue(self.herd.running(S))
        self.assertAt(self.send(b"IAMAT after +1+1 5\n"), b"after", b"+1+1", b"5")


if __name__ == "__main__":
    unittest.main()
