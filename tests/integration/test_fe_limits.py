"""Client front end limits (PROTOCOL sections 2, 6; issues 18, 19, 23):

- limits.max_clients_per_address: past it a new connection from that
  address is closed at once, logged and counted in
  herd_connections_refused_total{reason="max_clients_per_address"}, while
  another address is served and the first is served again once one of its
  connections ends. Refusals past a few a second are left out of the log
  and counted in a line of their own.
- A 4096-byte line and a CR ended by EOF is 4097 bytes without a line end:
  "? " and its first 4096 bytes, then the connection ends; 4095 bytes and a
  CR is a command (answered "?" with the CR).
- herd_command_duration_seconds{command="IAMAT"|"WHATSAT"} counts the
  commands sent, as a Prometheus histogram.

Each case runs with the front end on the node's thread and on threads of
its own.

Run: cd tests/integration && HERD_SERVER=.../herd-server python3 -m unittest -v test_fe_limits
"""

import re
import socket
import unittest
import urllib.request

from herdtest import AT_RE_B, HerdTestCase, HerdTimeout, iamat_line, wait_until

S = "Bailey"
TIMEOUT = 10


def connect_from(herd, source):
    """A client connection from the local address `source`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    sock.bind((source, 0))
    sock.connect((herd.host(S), herd.port(S)))
    return sock


def served(sock, cid):
    """True when an IAMAT on sock is answered with an AT line; False when
    the server closed the connection without a byte."""
    try:
        sock.sendall(iamat_line(cid) + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                return False
            data += chunk
    except (ConnectionResetError, BrokenPipeError):
        return False
    return AT_RE_B.match(data[:-1]) is not None


def refused(herd):
    return {dict(labels)["reason"]: value for (metric, labels), value in herd.metrics(S).items()
            if metric == "herd_connections_refused_total"}


class FrontEndLimitsTest(HerdTestCase):

    def herd_for(self, threads, **kw):
        herd = self.make_herd(servers=[S], extra={"frontend_threads": threads}, **kw)
        herd.add_admin_ports()
        herd.start(S)
        return herd

    def test_connections_past_max_clients_per_address_are_refused(self):
        for threads in (0, 2):
            with self.subTest(frontend_threads=threads):
                herd = self.herd_for(threads, limits={"max_clients_per_address": 3})
                held = [connect_from(herd, "127.0.0.1") for _ in range(3)]
                for i, s in enumerate(held):
                    self.addCleanup(s.close)
                    self.assertTrue(served(s, b"held%d" % i))
                extra = connect_from(herd, "127.0.0.1")
                self.addCleanup(extra.close)
                self.assertFalse(served(extra, b"extra"), "a 4th connection from 127.0.0.1 was served")
                herd.wait_log(S, re.compile(
                    r"(?m)^\S+ refused connection from 127\.0\.0\.1:%d: limits\.max_clients_per_address \(3\) "
                    r"reached for 127\.0\.0\.1$" % extra.getsockname()[1]))
                self.assertEqual(refused(herd)["max_clients_per_address"], 1)
                # Another address is served; the three held are unharmed.
                other = connect_from(herd, "127.0.0.2")
                self.addCleanup(other.close)
                self.assertTrue(served(other, b"other"))
                for i, s in enumerate(held):
                    self.assertTrue(served(s, b"still%d" % i))
                # A burst of refusals: a few lines a second, the rest counted.
                mark = herd.log_size(S)
                for _ in range(40):
                    with connect_from(herd, "127.0.0.1") as s:
                        self.assertFalse(served(s, b"burst"))
                self.assertEqual(refused(herd)["max_clients_per_address"], 41)
                m = herd.wait_log(S, re.compile(
                    r"(?m)^\S+ (\d+) more refusals for limits\.max_clients_per_address left out of the log "
                    r"\(at most 5 a second are written\)$"), timeout=TIMEOUT)
                def logged():
                    text = herd.log_since(S, mark)
                    lines = len(re.findall(r"(?m)^\S+ refused connection from 127\.0\.0\.1:\d+: "
                                           r"limits\.max_clients_per_address", text))
                    return lines, lines + sum(int(n) for n in re.findall(
                        r"(?m)^\S+ (\d+) more refusals for limits\.max_clients_per_address", text))
                # A burst across a second's end has a second summary line,
                # written a second later (and every line reaches the file a
                # moment after it is logged): wait until all 40 are told.
                try:
                    wait_until(lambda: logged()[1] >= 40, TIMEOUT, interval=0.05)
                except HerdTimeout:
                    pass
                lines, told = logged()
                self.assertLess(lines, 40)
                self.assertEqual(told, 40)
                self.assertIsNotNone(m)
                # One of the three leaves: a newcomer from 127.0.0.1 is served.
                held[0].close()
                def newcomer_served():
                    with connect_from(herd, "127.0.0.1") as s:
                        return served(s, b"newcomer")
                wait_until(newcomer_served, TIMEOUT,
                           msg="no connection from 127.0.0.1 served after one of three closed")
                self.assertCleanExit(herd, S)

    def test_4096_bytes_and_a_cr_ended_by_eof_is_too_long(self):
        for threads in (0, 2):
            with self.subTest(frontend_threads=threads):
                herd = self.herd_for(threads)
                line = b"x" * 4096
                self.assertEqual(herd.send(S, line + b"\r"), b"? " + line + b"\n")
                herd.wait_log(S, "line longer than 4096 bytes")
                short = b"x" * 4095
                self.assertEqual(herd.send(S, short + b"\r"), b"? " + short + b"\r\n")
                # With a LF the CR belongs to the line end: 4096 bytes is a command.
                self.assertEqual(herd.send(S, line + b"\r\n"), b"? " + line + b"\n")
                self.assertCleanExit(herd, S)

    def test_the_command_histograms_count_what_was_sent(self):
        for threads in (0, 2):
            with self.subTest(frontend_threads=threads):
                herd = self.herd_for(threads)
                with herd.connect(S) as c:
                    for i in range(7):
                        c.send(iamat_line(b"hist%d" % i) + b"\n")
                        self.assertTrue(AT_RE_B.match(c.recv_line()[:-1]))
                    for line in (b"WHATSAT hist1 10 5\n", b"WHATSAT nobody-here 10 5\n", b"WHATSAT hist2 10 5\n"):
                        c.send(line)
                    c.send(b"IAMAT not a command\nHELLO\n")
                    c.shutdown_write()
                    c.read_to_eof(TIMEOUT)

                def counts():
                    m = herd.metrics(S)
                    got = {cmd: m.get(("herd_command_duration_seconds_count", frozenset({("command", cmd)})))
                           for cmd in ("IAMAT", "WHATSAT")}
                    return got if got == {"IAMAT": 7, "WHATSAT": 3} else None
                try:
                    wait_until(counts, TIMEOUT)
                except AssertionError:
                    m = herd.metrics(S)
                    self.fail("counts: %r" % {k: v for k, v in m.items() if "command_duration" in k[0]})
                port = herd.topology["servers"][S]["admin_port"]
                with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=TIMEOUT) as r:
                    text = r.read().decode()
                self.assertEqual(text.count("# TYPE herd_command_duration_seconds histogram\n"), 1)
                self.assertEqual(text.count("# HELP herd_command_duration_seconds "), 1)
                text_m = herd.metrics(S)
                for cmd, n in (("IAMAT", 7), ("WHATSAT", 3)):
                    buckets = sorted(((float(dict(l)["le"]), v) for (name, l), v in text_m.items()
                                      if name == "herd_command_duration_seconds_bucket"
                                      and dict(l).get("command") == cmd))
                    self.assertEqual(len(buckets), 20)
                    self.assertEqual(buckets[-1], (float("inf"), n))
                    self.assertEqual(buckets, sorted(buckets, key=lambda b: b[1]), "not cumulative")
                    self.assertLessEqual(buckets[0][0], 0.00001)
                    self.assertGreaterEqual(buckets[-2][0], 10)
                    self.assertGreater(text_m[("herd_command_duration_seconds_sum",
                                               frozenset({("command", cmd)}))], 0)
                self.assertCleanExit(herd, S)


if __name__ == "__main__":
    unittest.main()
