"""Client output under load (PROTOCOL section 6; issue 18 item 4):

- A client that pipelines thousands of WHATSATs with ~17 KB answers and
  reads gets every answer: while its unsent answers are large the server
  reads no further commands from it (back-pressure) and goes on once they
  drain, so it is never cut as if it had stopped reading.
- A client that sends the same and reads nothing is still cut, with the
  limits.max_output_bytes line in the log and herd_connections_cut_total.
- limits.max_output_total_bytes: past it, the connection with the most
  unsent bytes is cut; a small one beside it keeps every answer.

Each case runs with the front end on the node's thread (frontend_threads 0)
and on two threads of its own.

Run: cd tests/integration && HERD_SERVER=.../herd-server python3 -m unittest -v test_backpressure
"""

import re
import socket
import threading
import unittest

from herdtest import PLACES_KEY_ENV, HerdTestCase, iamat_line, wait_until
from places_standin import PlacesStandIn

S = "Bailey"
KEY = "backpressure-test-key"
RESULTS = 20            # the stand-in's answer: about 17 KB of JSON
PIPELINED = 5000        # WHATSATs one reader pipelines (about 85 MB of answers)
TIMEOUT = 120
AT_LINE = re.compile(rb"(?m)^AT ")


def cut_counts(herd, name):
    """herd_connections_cut_total by reason."""
    return {dict(labels)["reason"]: value for (metric, labels), value in herd.metrics(name).items()
            if metric == "herd_connections_cut_total"}


class BackPressureTest(HerdTestCase):

    @classmethod
    def setUpClass(cls):
        cls.places = PlacesStandIn(key=KEY, results=RESULTS).start()
        cls.addClassCleanup(cls.places.stop)

    def start(self, threads, limits=None):
        herd = self.make_herd(servers=[S], places_url=self.places.url, env={PLACES_KEY_ENV: KEY},
                              limits=limits or {}, extra={"frontend_threads": threads})
        herd.add_admin_ports()
        herd.start(S)
        self.assertIn(b"AT ", herd.send(S, iamat_line(b"kiwi", b"+34.068930-118.445127") + b"\n"))
        first = herd.send(S, b"WHATSAT kiwi 10 20\n")
        self.assertGreater(len(first), 15000, first[:300])
        return herd

    def sender(self, sock, data, close=True):
        """Sends data on a thread (the main thread reads meanwhile)."""
        def run():
            try:
                sock.sendall(data)
                if close:
                    sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # cut: the test checks the log
        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t

    def test_a_pipelining_reader_gets_every_answer(self):
        for threads in (0, 2):
            with self.subTest(frontend_threads=threads):
                herd = self.start(threads)
                mark = herd.log_size(S)
                sock = socket.create_connection((herd.host(S), herd.port(S)), timeout=TIMEOUT)
                self.addCleanup(sock.close)
                port = sock.getsockname()[1]
                t = self.sender(sock, b"WHATSAT kiwi 10 20\n" * PIPELINED)
                data = bytearray()
                while True:
                    chunk = sock.recv(1 << 20)
                    if not chunk:
                        break
                    data += chunk
                t.join(TIMEOUT)
                answers = len(AT_LINE.findall(data))
                self.assertEqual(answers, PIPELINED, "answers received of %d (%d bytes); log since:\n%s"
                                 % (PIPELINED, len(data), herd.log_since(S, mark)[-2000:]))
                self.assertTrue(data.endswith(b"\n\n"))
                herd.wait_log(S, re.compile(r"(?m)^\S+ conn \d+ closed \(127\.0\.0\.1:%d\): client done$" % port))
                self.assertEqual(cut_counts(herd, S).get("max_output_bytes"), 0)
                self.assertCleanExit(herd, S)

    def test_a_client_that_does_not_read_is_still_cut(self):
        for threads in (0, 2):
            with self.subTest(frontend_threads=threads):
                herd = self.start(threads)
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                self.addCleanup(sock.close)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.settimeout(TIMEOUT)
                sock.connect((herd.host(S), herd.port(S)))
                port = sock.getsockname()[1]
                t = self.sender(sock, b"WHATSAT kiwi 10 20\n" * PIPELINED, close=False)
                herd.wait_log(S, re.compile(
                    r"(?m)^\S+ conn \d+ closed \(127\.0\.0\.1:%d\): unsent output passed "
                    r"limits\.max_output_bytes$" % port), timeout=30)
                t.join(TIMEOUT)
                self.assertGreaterEqual(cut_counts(herd, S).get("max_output_bytes"), 1)
                self.assertIn(b"AT ", herd.send(S, iamat_line(b"after-cut") + b"\n"))
                self.assertCleanExit(herd, S)

    def test_the_total_cap_cuts_the_largest_backlog(self):
        """Two clients that do not read yet: one pipelines thousands of
        WHATSATs, the other twenty. With limits.max_output_total_bytes at
        1 MB (and max_output_bytes high, so that only the total cuts), the
        large one is cut, logged and counted; the small one then reads all
        of its twenty answers."""
        for threads in (0, 2):
            with self.subTest(frontend_threads=threads):
                herd = self.start(threads, limits={"max_output_total_bytes": 1 << 20,
                                                   "max_output_bytes": 64 << 20})
                small = herd.connect(S)
                self.addCleanup(small.close)
                small.send(b"WHATSAT kiwi 10 20\n" * 20)
                big = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                self.addCleanup(big.close)
                big.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                big.settimeout(TIMEOUT)
                big.connect((herd.host(S), herd.port(S)))
                port = big.getsockname()[1]
                t = self.sender(big, b"WHATSAT kiwi 10 20\n" * PIPELINED, close=False)
                herd.wait_log(S, re.compile(
                    r"(?m)^\S+ conn \d+ closed \(127\.0\.0\.1:%d\): unsent output of all connections passed "
                    r"limits\.max_output_total_bytes \(1048576\); this one had \d+ bytes$" % port), timeout=30)
                t.join(TIMEOUT)
                wait_until(lambda: cut_counts(herd, S).get("max_output_total_bytes", 0) >= 1, 10,
                           msg="herd_connections_cut_total{reason=\"max_output_total_bytes\"}")
                small.shutdown_write()
                data = small.read_to_eof(TIMEOUT)
                self.assertEqual(len(AT_LINE.findall(data)), 20)
                self.assertCleanExit(herd, S)


if __name__ == "__main__":
    unittest.main()
