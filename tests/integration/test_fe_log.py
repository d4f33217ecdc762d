"""What the client front end writes to the log (PROTOCOL sections 6 and 8;
issues 18 and 23):

- An answer is logged with at most its first bytes and its full length, so
  four connections pipelining WHATSATs with ~17 KB answers grow the log by
  at most 20 times the bytes the clients sent.
- "log_commands": false logs the connections (opened, closed) and errors
  but no command line and no answer; a reload turns it back on.

Run: cd tests/integration && HERD_SERVER=.../herd-server python3 -m unittest -v test_fe_log
"""

import re
import socket
import threading
import unittest

from herdtest import PLACES_KEY_ENV, HerdTestCase, iamat_line, wait_until
from places_standin import PlacesStandIn

S = "Bailey"
KEY = "fe-log-test-key"
TIMEOUT = 60
AT_LINE = re.compile(rb"(?m)^AT ")


class FrontEndLogTest(HerdTestCase):

    @classmethod
    def setUpClass(cls):
        cls.places = PlacesStandIn(key=KEY, results=20).start()
        cls.addClassCleanup(cls.places.stop)

    def herd_for(self, threads, **kw):
        herd = self.make_herd(servers=[S], places_url=self.places.url, env={PLACES_KEY_ENV: KEY},
                              extra=dict({"frontend_threads": threads}, **kw.pop("extra", {})), **kw)
        herd.start(S)
        return herd

    def pipeline(self, herd, lines, conns):
        """`conns` connections each send `lines` (bytes) at once and read
        every answer; returns the answers each got."""
        got = [None] * conns

        def run(i):
            sock = socket.create_connection((herd.host(S), herd.port(S)), timeout=TIMEOUT)
            with sock:
                t = threading.Thread(target=lambda: (sock.sendall(lines), sock.shutdown(socket.SHUT_WR)),
                                     daemon=True)
                t.start()
                data = bytearray()
                while True:
                    chunk = sock.recv(1 << 20)
                    if not chunk:
                        break
                    data += chunk
                t.join(TIMEOUT)
            got[i] = bytes(data)
        threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(conns)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT)
        return got

    def test_log_growth_is_bounded_by_the_client_bytes(self):
        for threads in (0, 2):
            with self.subTest(frontend_threads=threads):
                herd = self.herd_for(threads)
                self.assertIn(b"AT ", herd.send(S, iamat_line(b"kiwi", b"+34.068930-118.445127") + b"\n"))
                self.assertGreater(len(herd.send(S, b"WHATSAT kiwi 12 20\n")), 15000)
                wait_until(lambda: herd.log_text(S).count("client done") == 2, TIMEOUT)
                before = herd.log_size(S)
                lines = b"WHATSAT kiwi 12 20\n" * 1000
                got = self.pipeline(herd, lines, 4)
                for data in got:
                    self.assertEqual(len(AT_LINE.findall(data)), 1000)
                wait_until(lambda: herd.log_since(S, before).count("client done") == 4, TIMEOUT,
                           msg="four connections closed")
                grown = herd.log_size(S) - before
                sent = 4 * len(lines)
                received = sum(len(d) for d in got)
                print("\nlog growth, frontend_threads %d: %d client bytes sent, %d received, %d log bytes "
                      "(%.1f x sent)" % (threads, sent, received, grown, grown / sent))
                self.assertLessEqual(grown, 20 * sent)
                # Each answer: its start and its length.
                text = herd.log_since(S, before)
                m = re.search(r'(?m)^\S+ conn \d+ out "AT Bailey [^\n]*"\.\.\. \((\d+) bytes\)$', text)
                self.assertIsNotNone(m, text[-1500:])
                self.assertEqual(int(m.group(1)), len(got[0]) // 1000)
                self.assertCleanExit(herd, S)

    def test_log_commands_false_logs_connections_but_no_commands(self):
        for threads in (0, 2):
            with self.subTest(frontend_threads=threads):
                herd = self.herd_for(threads, extra={"log_commands": False})
                with herd.connect(S) as c:
                    c.send(iamat_line(b"quiet-client") + b"\n")
                    self.assertTrue(c.recv_line().startswith(b"AT "))
                    c.send(b"WHATSAT quiet-client 10 2\nNOT-A-COMMAND quiet\n")
                    c.shutdown_write()
                    c.read_to_eof(TIMEOUT)
                herd.wait_log(S, "client done")
                text = herd.log_text(S)
                self.assertRegex(text, r"(?m)^\S+ conn \d+ opened from 127\.0\.0\.1:\d+$")
                self.assertNotIn("quiet-client", text)
                self.assertNotIn("NOT-A-COMMAND", text)
                self.assertNotRegex(text, r'(?m)^\S+ conn \d+ (in|out) "')
                # A reload turns it on again.
                herd.topology["log_commands"] = True
                herd.write_topology()
                mark = herd.reload([S])[S]
                wait_until(lambda: "reload: topology applied" in herd.log_since(S, mark), TIMEOUT)
                self.assertIn(b"AT ", herd.send(S, iamat_line(b"loud-client") + b"\n"))
                herd.wait_log(S, re.compile(r'(?m)^\S+ conn \d+ in "IAMAT loud-client '))
                herd.wait_log(S, re.compile(r'(?m)^\S+ conn \d+ out "AT Bailey \S+ loud-client '))
                self.assertCleanExit(herd, S)


if __name__ == "__main__":
    unittest.main()
