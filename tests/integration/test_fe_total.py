"""limits.max_output_total_bytes against readers (PROTOCOL section 6):

Several clients pipeline thousands of WHATSATs (~17 KB answers) and read,
and one pipelines as many and reads nothing, so that the unsent output of
all of them passes limits.max_output_total_bytes. Only the one that does
not read is cut (logged with the total's reason); every reader gets all of
its answers, in full: a client that pipelines and reads is never cut, it is
only not read while the total is over the cap (back-pressure).

Each case runs with the front end on the node's thread (frontend_threads 0)
and on two threads of its own.

Run: cd tests/integration && HERD_SERVER=.../herd-server python3 -m unittest -v test_fe_total
"""

import re
import socket
import threading
import unittest

from herdtest import PLACES_KEY_ENV, HerdTestCase, iamat_line
from places_standin import PlacesStandIn

S = "Bailey"
KEY = "fe-total-test-key"
RESULTS = 20            # the stand-in's answer: about 17 KB of JSON
READERS = 6
PIPELINED = 2000        # WHATSATs each reader pipelines (about 35 MB of answers)
TIMEOUT = 120
AT_LINE = re.compile(rb"(?m)^AT ")
# Each connection pauses at a quarter of max_output_bytes (256 KiB): seven of
# them pass the 1.5 MiB total, but stay under twice it, where the largest
# would go whether they read or not (the hard bound on memory).
LIMITS = {"max_output_bytes": 1 << 20, "max_output_total_bytes": 3 << 19}


class TotalCapTest(HerdTestCase):

    @classmethod
    def setUpClass(cls):
        cls.places = PlacesStandIn(key=KEY, results=RESULTS).start()
        cls.addClassCleanup(cls.places.stop)

    def start(self, threads):
        herd = self.make_herd(servers=[S], places_url=self.places.url, env={PLACES_KEY_ENV: KEY},
                              limits=LIMITS, extra={"frontend_threads": threads})
        herd.add_admin_ports()
        herd.start(S)
        self.assertIn(b"AT ", herd.send(S, iamat_line(b"kiwi", b"+34.068930-118.445127") + b"\n"))
        self.assertGreater(len(herd.send(S, b"WHATSAT kiwi 10 20\n")), 15000)
        return herd

    def connect(self, herd, rcvbuf=None):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(sock.close)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(TIMEOUT)
        sock.connect((herd.host(S), herd.port(S)))
        return sock

    @staticmethod
    def reader(sock, got):
        """Sends the pipeline on one thread and reads every answer on this one."""
        def send():
            try:
                sock.sendall(b"WHATSAT kiwi 10 20\n" * PIPELINED)
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # cut: the test reports the answers it got
        t = threading.Thread(target=send, daemon=True)
        t.start()
        data = bytearray()
        try:
            while True:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        t.join(TIMEOUT)
        got.append((len(AT_LINE.findall(data)), data.endswith(b"\n\n")))

    def test_only_the_client_that_does_not_read_is_cut(self):
        for threads in (0, 2):
            with self.subTest(frontend_threads=threads):
                herd = self.start(threads)
                mark = herd.log_size(S)
                idle = self.connect(herd, rcvbuf=4096)
                idle_port = idle.getsockname()[1]
                threading.Thread(target=lambda: self.quiet_send(idle), daemon=True).start()
                socks = [self.connect(herd) for _ in range(READERS)]
                ports = [s.getsockname()[1] for s in socks]
                results = [[] for _ in socks]
                threads_ = [threading.Thread(target=self.reader, args=(s, r), daemon=True)
                            for s, r in zip(socks, results)]
                for t in threads_:
                    t.start()
                for t in threads_:
                    t.join(TIMEOUT * 2)
                log = herd.log_since(S, mark)
                cut = re.findall(r"(?m)^\S+ conn \d+ closed \(127\.0\.0\.1:(\d+)\): unsent output", log)
                for port, r in zip(ports, results):
                    self.assertEqual(r, [(PIPELINED, True)], "reader on port %d; cut ports %s; log:\n%s"
                                     % (port, cut, "\n".join(l for l in log.splitlines()
                                                            if "closed" in l)[-3000:]))
                herd.wait_log(S, re.compile(
                    r"(?m)^\S+ conn \d+ closed \(127\.0\.0\.1:%d\): unsent output" % idle_port), timeout=30)
                self.assertEqual(set(cut) - {str(idle_port)}, set())
                self.assertCleanExit(herd, S)

    @staticmethod
    def quiet_send(sock):
        try:
            sock.sendall(b"WHATSAT kiwi 10 20\n" * PIPELINED)
        except OSError:
            pass  # cut, as the test expects


if __name__ == "__main__":
    unittest.main()
