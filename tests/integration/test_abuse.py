"""Abuse of a server's two ports (PROTOCOL.md sections 6 and 7).

Client port: a client blasting junk does not starve another client; the
idle time (limits.idle_timeout_ms) counts from the last complete, non-empty
command line, so a connection trickling bytes or sending empty lines is cut
while one sending commands stays; a client that does not read is cut once
its unsent output passes limits.max_output_bytes; connections past
limits.max_clients, or past the process's descriptor limit, are refused,
logged with the peer and the limit, and counted in /metrics; a line of
100 KB without a newline gets its "? " answer and a clean close (lingering
close), not a reset.

Peer port: raw garbage, undecodable and oversized ZeroMQ messages, and
well-formed UPDATES carrying absurd AT lines, sent by a hand-made ZMTP 3.0
peer (NULL mechanism) that calls itself Bona, Bailey's one neighbour (whose
server is not running, so no real link is disturbed). The server logs each
rejection, keeps answering, stores what is valid however odd, and its table
stays right. Messages on one ZMTP connection are handled in order, so once a
"control" update sent after the bad ones is stored, every bad one has been
handled (and logged) too.

Every wait is a condition with a deadline; the only timed pauses are the
pacing of a deliberately slow client.

Run: cd tests/integration && HERD_SERVER=.../herd-server python3 -m unittest -v test_abuse
"""

import os
import random
import re
import resource
import socket
import threading
import time
import unittest
import urllib.request
import uuid

from herdtest import (AT_RE_B, POS, HerdTestCase, HerdTimeout, free_ports, iamat_line, now_text,
                      ns_text, wait_until)
from peerwire import (Zmtp, mp_hello, mp_updates, raw_connection, zmtp_frame_header,
                      zmtp_greeting)

REQ_TIMEOUT = 5      # one client exchange
PROMPT = 0.5         # the most a well-behaved client may wait for an answer under abuse
PEER_TIMEOUT = 10    # a large peer message decoded and handled

MAX_UPDATES = 16384  # HERD_WIRE_MAX_UPDATES (include/herd_wire.h)
MAX_FRAME = 4 * 1024 * 1024  # HERD_WIRE_MAX_FRAME: ZMQ_MAXMSGSIZE on the peer port


def uid(tag):
    return ("abuse-%s-%s" % (tag, uuid.uuid4().hex[:10])).encode()


# ---------------------------------------------------------------- helpers

class AbuseCase(HerdTestCase):

    def wait_since(self, name, mark, pattern, timeout=PEER_TIMEOUT):
        """Waits until the log of `name` after `mark` matches the regex."""
        rx = re.compile(pattern, re.M)
        try:
            return wait_until(lambda: rx.search(self.herd.log_since(name, mark)), timeout,
                              interval=0.02)
        except HerdTimeout:
            self.fail("%s.log has no %r after %gs; since the mark:\n%s"
                      % (name, pattern, timeout, self.herd.log_since(name, mark)[-3000:]))

    def assertServes(self, name, why=""):
        """`name` runs, takes a new report and returns it to a WHATSAT."""
        self.assertTrue(self.herd.running(name), "%s died %s" % (name, why))
        cid = uid("alive")
        self.assertEqual(self.stored_at(self.herd, name, cid), None, why)
        at = self.iamat_at(self.herd, name, cid)
        self.assertEqual(self.stored_at(self.herd, name, cid), at, why)

    def timed_iamat(self, client, name, cid):
        """One IAMAT on an open connection; returns the seconds its answer took."""
        line = iamat_line(cid)
        start = time.monotonic()
        client.send(line + b"\n")
        reply = client.recv_line(REQ_TIMEOUT)
        took = time.monotonic() - start
        m = AT_RE_B.match(reply[:-1])
        self.assertTrue(m, "not an AT line: %r" % reply)
        self.assertEqual(b"IAMAT " + m.group(3) + b" " + m.group(4) + b" " + m.group(5), line)
        return took

    def measure_while(self, name, busy, min_samples=10, what=""):
        """While busy() is true, asks `name` IAMATs back to back on one
        connection; each must be answered within PROMPT. Returns the latencies."""
        times = []
        with self.herd.connect(name) as c:
            while busy() or len(times) < min_samples:
                took = self.timed_iamat(c, name, uid("prompt"))
                times.append(took)
                self.assertLess(took, PROMPT, "IAMAT #%d took %.3fs %s" % (len(times), took, what))
        return times


def refused_counts(herd, name):
    """herd_connections_refused_total by reason, from `name`'s /metrics."""
    port = herd.topology["servers"][name]["admin_port"]
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=REQ_TIMEOUT) as r:
        text = r.read().decode()
    found = dict(re.findall(r'(?m)^herd_connections_refused_total\{reason="(\w+)"\} (\d+)$', text))
    return {k: int(v) for k, v in found.items()}


class Pump(threading.Thread):
    """A thread that runs fn(), keeping its exception for the test."""

    def __init__(self, fn):
        super().__init__(daemon=True)
        self.fn = fn
        self.error = None
        self.result = None

    def run(self):
        try:
            self.result = self.fn()
        except BaseException as e:  # reported by the test thread
            self.error = e


# ------------------------------------------------------------ client port

class ClientAbuseTest(AbuseCase):

    def test_a_junk_blaster_does_not_starve_another_client(self):
        """A client sends 50 MB of junk lines as fast as it can (and reads
        its "? ..." answers on another thread). Meanwhile another client's
        IAMATs are each answered within PROMPT, and the blaster gets exactly
        one "? LINE" answer per junk line."""
        # Its answers may pile up while its reader thread waits for the GIL:
        # a high output bound keeps this test about fairness alone.
        self.herd = self.make_herd(servers=["Bailey"], limits={"max_output_bytes": 1 << 30})
        self.herd.start("Bailey")

        rnd = random.Random(7)
        lines = []
        for i in range(4000):
            body = bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz0123456789!#$%&*()[]{}<>;:,.?~^")
                         for _ in range(rnd.randrange(10, 400)))
            lines.append(b"JUNK%d %s" % (i, body))
        block = b"".join(l + b"\n" for l in lines)
        answers_per_block = sum(len(l) + 3 for l in lines)     # "? " + line + LF
        repeat = max(1, (50 * 1024 * 1024) // len(block))
        want_bytes = repeat * answers_per_block

        blaster = self.herd.connect("Bailey")
        self.addCleanup(blaster.close)
        got = {"n": 0, "head": b""}

        def send_all():
            for _ in range(repeat):
                blaster.sock.sendall(block)

        def drain():
            blaster.sock.settimeout(30)
            while got["n"] < want_bytes:
                chunk = blaster.sock.recv(1 << 20)
                if not chunk:
                    break
                if len(got["head"]) < len(block):
                    got["head"] += chunk
                got["n"] += len(chunk)

        sender, reader = Pump(send_all), Pump(drain)
        sender.start()
        reader.start()
        times = self.measure_while("Bailey", lambda: reader.is_alive(), what="during the blast")
        sender.join(30)
        reader.join(30)
        self.assertIsNone(sender.error, "the blaster could not send: %r" % sender.error)
        self.assertIsNone(reader.error, "the blaster's reader: %r" % reader.error)
        self.assertEqual(got["n"], want_bytes, "answer bytes to %d MB of junk"
                         % (repeat * len(block) >> 20))
        self.assertTrue(got["head"].startswith(b"? " + lines[0] + b"\n? " + lines[1] + b"\n"))
        self.assertGreaterEqual(len(times), 10)
        self.assertServes("Bailey", "after the blast")
        self.assertCleanExit(self.herd, "Bailey")

    # The idle timeout of the drip tests, and the gaps either side of it (wide
    # margins: a loaded machine may pause either process for a while).
    IDLE_MS = 500
    FAST_GAP = 0.05
    SLOW_GAP = 2.0

    def trickle_until_cut(self, c, data):
        """Sends `data` a few bytes at a time, FAST_GAP apart, until the
        server closes the connection; returns the seconds that took, or fails
        when all of it went out first."""
        start = time.monotonic()
        for i in range(0, len(data), 2):
            try:
                c.send(data[i:i + 2])
            except OSError:  # already closed: the reset of a write after the close
                break
            # The pacing under test, and the wait for the server's close.
            if c.closed(self.FAST_GAP):
                break
        else:
            self.fail("sent %d bytes over %.1fs without being cut" % (len(data), time.monotonic() - start))
        return time.monotonic() - start

    def test_a_command_trickled_byte_by_byte_is_idle(self):
        """Bytes that never complete a line do not keep a connection: it is
        cut IDLE_MS after it opened, before its command is complete."""
        self.herd = self.make_herd(servers=["Bailey"], limits={"idle_timeout_ms": self.IDLE_MS})
        self.herd.start("Bailey")
        cid = b"drip" + uuid.uuid4().hex[:6].encode()
        line = iamat_line(cid, b"+1+1", b"1621464827") + b" " * 200 + b"\n"
        with self.herd.connect("Bailey") as c:
            took = self.trickle_until_cut(c, line)
            self.assertEqual(c.pending, b"", "a partial command got an answer")
        self.assertGreaterEqual(took, self.IDLE_MS / 1000 - 0.05, "cut before the idle timeout")
        self.herd.wait_log("Bailey", re.compile(
            r"(?m)^\S+ conn \d+ closed \(127\.0\.0\.1:%d\): idle timeout$" % c.local_port))
        self.assertEqual(self.stored_at(self.herd, "Bailey", cid), None)
        self.assertServes("Bailey", "after the idle cut")

    def test_empty_lines_do_not_keep_a_connection(self):
        """Lines of only white space are no commands: a connection sending
        them every FAST_GAP is cut at the idle timeout, after one command."""
        self.herd = self.make_herd(servers=["Bailey"], limits={"idle_timeout_ms": self.IDLE_MS})
        self.herd.start("Bailey")
        with self.herd.connect("Bailey") as c:
            c.send(b"HELLO\n")
            self.assertEqual(c.recv_line(REQ_TIMEOUT), b"? HELLO\n")
            took = self.trickle_until_cut(c, b"\n \r\n\t\n" * 40)
            self.assertEqual(c.pending, b"")
        self.assertGreaterEqual(took, self.IDLE_MS / 1000 - 0.05, "cut before the idle timeout")
        self.herd.wait_log("Bailey", re.compile(
            r"(?m)^\S+ conn \d+ closed \(127\.0\.0\.1:%d\): idle timeout$" % c.local_port))

    def test_commands_faster_than_the_idle_timeout_keep_a_connection(self):
        """Complete commands, each well inside the idle timeout, keep a
        connection for several timeouts; every one is answered."""
        self.herd = self.make_herd(servers=["Bailey"], limits={"idle_timeout_ms": self.IDLE_MS})
        self.herd.start("Bailey")
        mark = self.herd.log_size("Bailey")
        with self.herd.connect("Bailey") as c:
            start = time.monotonic()
            n = 0
            while time.monotonic() - start < 4 * self.IDLE_MS / 1000:
                self.timed_iamat(c, "Bailey", uid("steady%d" % n))
                n += 1
                # The pacing under test: a command every 2 * FAST_GAP.
                self.assertFalse(c.closed(2 * self.FAST_GAP), "cut after %d commands" % n)
            c.shutdown_write()
            self.assertEqual(c.read_to_eof(REQ_TIMEOUT), b"")
        self.wait_since("Bailey", mark, r"^\S+ conn \d+ closed \(127\.0\.0\.1:%d\): client done$"
                        % c.local_port)
        self.assertNotIn("idle timeout", self.herd.log_since("Bailey", mark))
        self.assertCleanExit(self.herd, "Bailey")

    def test_a_partial_command_after_a_command_is_cut_at_the_idle_timeout(self):
        """Idle time counts from the last command: a command, then two bytes
        of the next FAST_GAP apart (the next would come SLOW_GAP later): the
        connection is cut IDLE_MS after the command's answer, not after the
        last byte."""
        self.herd = self.make_herd(servers=["Bailey"], limits={"idle_timeout_ms": self.IDLE_MS})
        self.herd.start("Bailey")
        with self.herd.connect("Bailey") as c:
            c.send(b"HELLO\n")
            self.assertEqual(c.recv_line(REQ_TIMEOUT), b"? HELLO\n")
            answered = time.monotonic()
            c.send(b"I")
            time.sleep(self.FAST_GAP)  # drip pacing, well inside the server's idle deadline
            c.send(b"A")
            self.assertTrue(c.closed(self.SLOW_GAP), "not cut before its next byte was due")
            waited = time.monotonic() - answered
            self.assertEqual(c.pending, b"", "a partial command got an answer")
        self.assertGreaterEqual(waited, self.IDLE_MS / 1000 - 0.01, "cut before the idle timeout")
        self.herd.wait_log("Bailey", re.compile(
            r"(?m)^\S+ conn \d+ closed \(127\.0\.0\.1:%d\): idle timeout$" % c.local_port))
        self.assertServes("Bailey", "after the idle cut")
        self.assertCleanExit(self.herd, "Bailey")

    def test_a_client_that_does_not_read_is_cut_at_max_output_bytes(self):
        self.herd = self.make_herd(servers=["Bailey"], limits={"max_output_bytes": 65536})
        self.herd.start("Bailey")
        mark = self.herd.log_size("Bailey")
        cid = uid("flood")
        line = iamat_line(cid) + b"\n"
        chunk = line * 1000
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(sock.close)
        # A small receive window, so the server's output backs up sooner.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(30)
        sock.connect((self.herd.host("Bailey"), self.herd.port("Bailey")))
        port = sock.getsockname()[1]

        def flood():
            sent = 0
            while sent < 256 * 1024 * 1024:
                try:
                    sock.sendall(chunk)
                except (ConnectionResetError, BrokenPipeError):
                    return sent
                sent += len(chunk)
            raise AssertionError("sent %d bytes without being cut" % sent)

        flooder = Pump(flood)
        flooder.start()
        self.measure_while("Bailey", lambda: flooder.is_alive(), what="while a client floods")
        flooder.join(30)
        self.assertIsNone(flooder.error, repr(flooder.error))
        self.wait_since("Bailey", mark, r"^\S+ conn \d+ closed \(127\.0\.0\.1:%d\): "
                        r"unsent output passed limits\.max_output_bytes$" % port)
        # Its first IAMAT was stored; the server serves the rest of the world.
        self.assertIsNotNone(self.stored_at(self.herd, "Bailey", cid))
        self.assertServes("Bailey", "after the flooder was cut")

        # The contrast: a client that reads late, but whose unsent answers
        # stay under the bound (300 answers of ~100 bytes), keeps them all.
        late = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(late.close)
        late.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        late.settimeout(REQ_TIMEOUT)
        late.connect((self.herd.host("Bailey"), self.herd.port("Bailey")))
        lines = [iamat_line(uid("late%d" % i)) for i in range(300)]
        late.sendall(b"".join(l + b"\n" for l in lines))
        last = lines[-1].split(b" ")[1]
        # The last one stored means all 300 were answered (and are waiting).
        wait_until(lambda: self.stored_at(self.herd, "Bailey", last), REQ_TIMEOUT, msg="the 300th IAMAT")
        late.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            chunk = late.recv(65536)
            if not chunk:
                break
            data += chunk
        got = data.split(b"\n")
        self.assertEqual(got[-1], b"")
        self.assertEqual(len(got) - 1, 300)
        for line, reply in zip(lines, got):
            m = AT_RE_B.match(reply)
            self.assertTrue(m, reply)
            self.assertEqual(b"IAMAT %s %s %s" % m.group(3, 4, 5), line)
        self.assertNotRegex(self.herd.log_since("Bailey", mark), r"\(127\.0\.0\.1:%d\): unsent output"
                            % late.getsockname()[1])
        self.assertCleanExit(self.herd, "Bailey")

    def admin_herd(self, **kw):
        """One server, Bailey, with an admin port."""
        herd = self.make_herd(servers=["Bailey"], **kw)
        herd.topology["servers"]["Bailey"]["admin_port"] = free_ports(1)[0]
        herd.write_topology()
        return herd

    def test_connections_past_max_clients_are_refused_and_logged(self):
        self.herd = self.admin_herd(limits={"max_clients": 3})
        self.herd.start("Bailey")
        self.assertEqual(refused_counts(self.herd, "Bailey"), {"max_clients": 0, "max_clients_per_address": 0, "descriptors": 0})
        clients = [self.herd.connect("Bailey") for _ in range(3)]
        for c in clients:
            self.addCleanup(c.close)
            self.timed_iamat(c, "Bailey", uid("held"))   # accepted and counted

        with self.herd.connect("Bailey") as extra:
            self.assertTrue(extra.closed(REQ_TIMEOUT), "a 4th connection was kept")
            self.assertEqual(extra.pending, b"")
        self.herd.wait_log("Bailey", re.compile(
            r"(?m)^\S+ refused connection from 127\.0\.0\.1:%d: limits\.max_clients \(3\) reached$"
            % extra.local_port))
        for c in clients:   # the three are unharmed
            self.timed_iamat(c, "Bailey", uid("still"))
        self.assertEqual(refused_counts(self.herd, "Bailey"), {"max_clients": 1, "max_clients_per_address": 0, "descriptors": 0})

        # One leaves; then a newcomer is let in.
        mark = self.herd.log_size("Bailey")
        clients[0].shutdown_write()
        self.assertEqual(clients[0].read_to_eof(REQ_TIMEOUT), b"")
        self.wait_since("Bailey", mark, r"^\S+ conn \d+ closed \(127\.0\.0\.1:%d\): client done$"
                        % clients[0].local_port)
        with self.herd.connect("Bailey") as newcomer:
            self.timed_iamat(newcomer, "Bailey", uid("newcomer"))
        self.assertCleanExit(self.herd, "Bailey")


    def test_connections_past_the_descriptor_limit_are_refused_logged_and_counted(self):
        """With the server's RLIMIT_NOFILE lowered to a few more than it has
        open, clients connect until one is refused: it is closed at once (not
        left in the backlog), the log names its address and the limit, the
        metric counts it, and the server serves again once descriptors free."""
        self.herd = self.admin_herd()
        self.herd.start("Bailey")
        pid = self.herd.pid("Bailey")
        soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        limit = len(os.listdir("/proc/%d/fd" % pid)) + 3
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, hard))
        held, refused = [], None
        for i in range(20):
            c = self.herd.connect("Bailey")
            self.addCleanup(c.close)
            c.send(iamat_line(uid("fd%d" % i)) + b"\n")
            try:
                c.recv_line(REQ_TIMEOUT)
            except HerdTimeout:
                self.assertTrue(c.eof, "connection %d neither answered nor closed" % i)
                self.assertEqual(c.pending, b"")
                refused = c
                break
            held.append(c)
        self.assertIsNotNone(refused, "20 connections at a limit of %d descriptors" % limit)
        self.assertGreaterEqual(len(held), 1)
        self.herd.wait_log("Bailey", re.compile(
            r"(?m)^\S+ refused connection from 127\.0\.0\.1:%d: out of file descriptors "
            r"\(the process limit RLIMIT_NOFILE, %d, is reached\)$" % (refused.local_port, limit)))
        for c in held:
            self.timed_iamat(c, "Bailey", uid("still"))   # the held ones are unharmed
            c.close()
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
        wait_until(lambda: refused_counts(self.herd, "Bailey").get("descriptors", 0) >= 1,
                   REQ_TIMEOUT, msg="herd_connections_refused_total{reason=\"descriptors\"}")
        self.assertEqual(refused_counts(self.herd, "Bailey")["max_clients"], 0)
        self.assertServes("Bailey", "after running out of descriptors")
        self.assertCleanExit(self.herd, "Bailey")

    def test_a_100_kb_line_gets_its_answer_and_a_clean_close(self):
        """A line of 100 KB without a newline (and 1 MB, sent while the
        server answers) gets "? ", its first 4096 bytes and LF, then a clean
        end of stream: the server stops writing and drains what is left
        before it closes, so no reset destroys the answer."""
        self.herd = self.make_herd(servers=["Bailey"])
        self.herd.start("Bailey")
        for size in (100 * 1024, 1024 * 1024):
            with self.subTest(size=size):
                line = bytes(random.Random(size).choice(b"abcdefghij") for _ in range(size))
                with self.herd.connect("Bailey") as c:
                    sender = Pump(lambda: c.sock.sendall(line))
                    sender.start()
                    got = c.read_to_eof(REQ_TIMEOUT)
                    self.assertFalse(c.reset, "the connection was reset after %d bytes" % len(got))
                    sender.join(REQ_TIMEOUT)
                    self.assertIsNone(sender.error, "the client could not send its line: %r"
                                      % sender.error)
                self.assertEqual(got, b"? " + line[:4096] + b"\n")
                self.herd.wait_log("Bailey", re.compile(
                    r"(?m)^\S+ conn \d+ closed \(127\.0\.0\.1:%d\): closed after error$" % c.local_port))
        self.assertServes("Bailey", "after the long lines")
        self.assertCleanExit(self.herd, "Bailey")


# -------------------------------------------------------------- peer port

class PeerAbuseTest(AbuseCase):
    """Bailey runs; its one neighbour Bona does not, and we speak as Bona."""

    def setUp(self):
        self.herd = self.make_herd(servers=["Bailey", "Bona"], links=[("Bailey", "Bona")])
        self.herd.start("Bailey")
        self.port = self.herd.peer_port("Bailey")
        self.bona = self.zmtp(b"Bona")
        # Two legitimate records: one from Bailey's own client, one flooded by "Bona".
        self.own = uid("own")
        self.own_at = self.iamat_at(self.herd, "Bailey", self.own)
        self.flooded = uid("flooded")
        self.flooded_at = self.at_line(self.flooded)
        self.bona.send(mp_updates([self.flooded_at]))
        wait_until(lambda: self.stored_at(self.herd, "Bailey", self.flooded) == self.flooded_at, PEER_TIMEOUT,
                   msg="a valid update from Bona was not stored")

    def zmtp(self, identity):
        z = Zmtp(self.port, identity)
        self.addCleanup(z.close)
        return z

    @staticmethod
    def at_line(cid, skew=b"+0.000000001", pos=POS, t=None, server=b"Bona"):
        return b"AT " + server + b" " + skew + b" " + cid + b" " + pos + b" " + (
            now_text() if t is None else t)

    def control(self, z=None):
        """Sends a fresh valid update on `z` (default: self.bona) and waits
        until it is stored: everything sent before it on `z` was handled."""
        cid = uid("control")
        at = self.at_line(cid)
        (z or self.bona).send(mp_updates([at]))
        wait_until(lambda: self.stored_at(self.herd, "Bailey", cid) == at, PEER_TIMEOUT,
                   msg="the control update was not stored")
        return cid, at

    def assertTableRight(self, why):
        self.assertTrue(self.herd.running("Bailey"), "Bailey died: " + why)
        self.assertEqual(self.stored_at(self.herd, "Bailey", self.own), self.own_at, why)
        self.assertEqual(self.stored_at(self.herd, "Bailey", self.flooded), self.flooded_at, why)
        self.assertServes("Bailey", why)

    def dropped_lines(self, mark):
        return re.findall(r"(?m)^\S+ (peer.*dropped.*)$", self.herd.log_since("Bailey", mark))

    def test_raw_garbage_on_the_peer_port(self):
        cases = [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                 iamat_line(uid("raw")) + b"\n",
                 bytes(random.Random(3).getrandbits(8) for _ in range(1 << 16)),
                 zmtp_greeting(b"PLAIN") + b"\x04\x05HELLO",
                 zmtp_greeting()[:11] + b"\x00" * 100,
                 zmtp_greeting() + b"\x06" + b"\xff" * 8]     # a command of 2**64-1 bytes
        for data in cases:
            with self.subTest(data=data[:30]):
                with raw_connection(self.port, data):
                    self.assertTableRight("with %r open" % data[:30])
                self.assertTableRight("after %r" % data[:30])
        self.control()
        self.assertTableRight("at the end")
        self.assertCleanExit(self.herd, "Bailey")

    def test_undecodable_messages_are_dropped_and_logged(self):
        mark = self.herd.log_size("Bailey")
        deep = b"\x93\x01\x02" + b"\x91" * 20 + b"\xc0"
        cases = [  # (frames, what the log line must say)
            ([b"\xc1garbage"], r"peer Bona: dropped a message: .*not an array"),
            ([b""], r"peer Bona: dropped a message: empty message"),
            ([b"\x93\x01\x02"], r"peer Bona: dropped a message: truncated"),
            ([b"\x93\x02\x02\x90"], r"peer Bona: dropped a message: unknown wire version 2"),
            ([b"\x93\x01\x0a\x90"], r"peer Bona: dropped a message: unknown message type 10"),
            ([b"\xdd\xff\xff\xff\xff\x01\x02"], r"peer Bona: dropped a message: .*4294967295"),
            ([deep], r"peer Bona: dropped a message: .*nested deeper"),
            ([b"\x93\x01\x02\x91\x2a"], r"peer Bona: dropped a message: UPDATES line 0 is an "
                                        r"unsigned integer"),
            ([mp_updates([b"AT x"]) + b"\x00"], r"peer Bona: dropped a message: 1 trailing byte"),
            ([mp_hello(b"Mallory", 1, 0, 0)],
             r"peer: dropped a HELLO whose name does not match its link: \"Mallory\"$"),
            ([mp_updates([self.at_line(uid("two"))]), b"second frame"],
             r"peer Bona: dropped a message of 2 frames \(expected 1\)"),
        ]
        for frames, _ in cases:
            self.bona.send(*frames)
        mallory = self.zmtp(b"Mallory")
        stranger = uid("stranger")
        mallory.send(mp_updates([self.at_line(stranger, server=b"Mallory")]))
        self.control()
        self.wait_since("Bailey", mark,
                        r"peer: dropped a message from a sender that is not a neighbour: "
                        r"\"Mallory\"$")
        # Mallory's line may reach the log before Bona's (its own connection
        # can overtake them): wait for Bona's last one too. The control update
        # above says Bona's messages were handled, not that the log writer
        # has written their lines yet.
        self.wait_since("Bailey", mark, r"peer Bona: dropped a message of 2 frames \(expected 1\)")

        got = self.dropped_lines(mark)
        self.assertEqual(len(got), len(cases) + 1,
                         "one line per dropped message:\n" + "\n".join(got))
        # Mallory's line may come anywhere (another connection); Bona's are in order.
        got = [line for line in got if "Mallory" not in line or "HELLO" in line]
        for (frames, want), line in zip(cases, got):
            self.assertRegex(line, "^" + want, "for %r" % frames[0][:40])
        self.assertIsNone(self.stored_at(self.herd, "Bailey", stranger))
        self.assertTableRight("after undecodable messages")
        self.assertCleanExit(self.herd, "Bailey")

    def test_oversized_messages(self):
        mark = self.herd.log_size("Bailey")
        ten_mb = 3 * 1024 * 1024  # just under the frame cap
        big_id = uid("big") + b"x" * (1 << 20)
        self.bona.send(b"\x00" * ten_mb)                                   # not msgpack at all
        self.bona.send(mp_updates([b"A" * ten_mb]))                        # one 3 MB AT line
        self.bona.send(mp_updates([self.at_line(big_id)]))                 # an id of 1 MB
        self.control()
        # The log writer orders lines by time: the three may reach the file
        # a moment after the control record is stored.
        try:
            wait_until(lambda: len(self.dropped_lines(mark)) >= 3, 10, interval=0.02)
        except HerdTimeout:
            pass
        got = self.dropped_lines(mark)
        self.assertEqual(len(got), 3, "\n".join(got))
        self.assertRegex(got[0], r"^peer Bona: dropped a message: .*not an array")
        self.assertRegex(got[1], r"^peer Bona: dropped a message: UPDATES line 0 is %d bytes, "
                                 r"longer than \d+$" % ten_mb)
        self.assertRegex(got[2], r"^peer Bona: dropped a message: UPDATES line 0 is %d bytes, "
                                 r"longer than \d+$" % len(self.at_line(big_id)))
        self.assertIsNone(self.stored_at(self.herd, "Bailey", big_id[:200]))
        self.assertTableRight("after 3 MB messages")

        # Past ZeroMQ's limit on the peer port the connection is closed as
        # soon as the frame header is read: the 4 MiB are never sent.
        self.bona.sock.sendall(zmtp_frame_header(0, MAX_FRAME + 1) + b"\x93\x01\x02")
        self.assertTrue(self.bona.closed_by_peer(5), "a frame over 4 MiB was not refused")
        self.assertTableRight("after a frame over 4 MiB")
        self.control(self.zmtp(b"Bona"))      # Bona may come back
        self.assertCleanExit(self.herd, "Bailey")

    def test_absurd_values_in_valid_updates(self):
        mark = self.herd.log_size("Bailey")
        now = time.time_ns()
        # PROTOCOL section 6: a client time more than limits.max_future_s (one
        # day here) ahead is refused on the peer path too (with a minute of
        # slack for clocks). The origin's receive time (client time + skew)
        # plays no part: ranking goes by the client's time.
        day = 86400 * 10**9
        ahead = uid("ahead")
        ahead_at = self.at_line(ahead, t=ns_text(now + 30 * 10**9))
        skewed = uid("skewed")
        skewed_at = self.at_line(skewed, skew=b"+999999999.000000000", t=ns_text(now + 3600 * 10**9))
        ok = [ahead_at, skewed_at]

        # Each of these claims a NEWER report of a client Bailey holds, so a
        # wrong acceptance would show in the table.
        later = ns_text(now + 1)
        t_huge = 999999999999999999 * 10**9 + 123456789
        future = [self.at_line(self.flooded, t=ns_text(now + day + 3600 * 10**9)),
                  self.at_line(self.own, t=b"253402300799.999999999"),
                  self.at_line(self.flooded, skew=b"-" + ns_text(t_huge - now), t=ns_text(t_huge))]
        invalid = [self.at_line(self.own, pos=b"+90.000001+0", t=later),
                   self.at_line(self.own, pos=b"+0-180.5", t=later),
                   self.at_line(self.flooded, pos=b"+9999999999999999999999+0", t=later),
                   self.at_line(b"i" * 256, t=later),                          # id over 255 bytes
                   self.at_line(self.own, t=b"1" * 19),                        # 19-digit time
                   self.at_line(self.own, t=later + b"x"),
                   self.at_line(self.own, skew=b"+1.5", t=later),
                   self.at_line(self.flooded, t=later, server=b"Bad/Name"),
                   self.at_line(self.flooded, t=later) + b" extra",
                   self.at_line(self.flooded, t=later).replace(b" ", b"  ", 1),
                   iamat_line(self.flooded, POS, later)]
        # One message with them all, valid lines among them: each line is judged alone.
        self.bona.send(mp_updates(future + invalid[:5] + ok + invalid[5:]))
        self.control()

        # The log writer puts every thread's lines in time order, so the
        # lines may reach the file a little after the control is stored.
        want = len(future) + len(invalid)
        try:
            wait_until(lambda: len(self.dropped_lines(mark)) >= want, PEER_TIMEOUT)
        except HerdTimeout:
            pass
        got = self.dropped_lines(mark)
        self.assertEqual(len(got), want, "\n".join(got))
        for at in future:
            self.assertIn('peer Bona: dropped an AT line whose client time is too far in the future: "%s"'
                          % at.decode("latin-1"), got)
        for at in invalid:
            self.assertIn('peer Bona: dropped an invalid AT line: "%s"' % at.decode("latin-1"), got)
        self.assertEqual(self.stored_at(self.herd, "Bailey", ahead), ahead_at)
        self.assertEqual(self.stored_at(self.herd, "Bailey", skewed), skewed_at)
        self.assertIsNone(self.stored_at(self.herd, "Bailey", b"i" * 255), "a cut-down id was stored")
        self.assertTableRight("after absurd AT lines")
        self.assertCleanExit(self.herd, "Bailey")

    def test_many_lines_in_one_message(self):
        tag = uuid.uuid4().hex[:8].encode()
        t = now_text()

        def batch(n, what):
            return [b"AT Bona +0.000000001 %s-%s-%d %s %s" % (what, tag, i, POS, t)
                    for i in range(n)]
        mark = self.herd.log_size("Bailey")
        # Past the limit: the whole message is dropped, none of its lines stored.
        too_many = batch(MAX_UPDATES + 1, b"over")
        self.bona.send(mp_updates(too_many))
        way_too_many = batch(40000, b"way")  # still under the frame cap
        self.bona.send(mp_updates(way_too_many))
        # At the limit: every line is stored.
        full = batch(MAX_UPDATES, b"full")
        self.bona.send(mp_updates(full))
        self.control()

        # The stored control says both messages were handled, not that the
        # log writer has written their lines yet: wait for both.
        try:
            wait_until(lambda: len(self.dropped_lines(mark)) >= 2, PEER_TIMEOUT, interval=0.02)
        except HerdTimeout:
            pass
        got = self.dropped_lines(mark)
        self.assertEqual(len(got), 2, "\n".join(got))
        self.assertEqual(got[0], "peer Bona: dropped a message: UPDATES has %d lines, more than %d"
                         % (MAX_UPDATES + 1, MAX_UPDATES))
        self.assertRegex(got[1], r"^peer Bona: dropped a message: .*more than \d+ ")
        for at in (too_many[0], too_many[-1], way_too_many[0], way_too_many[-1]):
            self.assertIsNone(self.stored_at(self.herd, "Bailey", at.split(b" ")[3]), at)
        for at in (full[0], full[1], full[MAX_UPDATES // 2], full[-1]):
            self.assertEqual(self.stored_at(self.herd, "Bailey", at.split(b" ")[3]), at)
        self.assertTableRight("after %d lines in one message" % MAX_UPDATES)
        self.assertCleanExit(self.herd, "Bailey")


if __name__ == "__main__":
    unittest.main()
