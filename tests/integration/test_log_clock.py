"""One clock for the log (issue 19 item 5, issue 23): every event carries
its own time, not its turn's, and the lines of all threads (the node and
its front-end threads) are in the file in time order.

Run: cd tests/integration && HERD_SERVER=.../herd-server python3 -m unittest -v test_log_clock
"""

import re
import threading
import unittest
import uuid

from herdtest import AT_RE_B, HerdTestCase, iamat_line

S = "Clock"
STAMP_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) ")


def stamps(text):
    """The stamp of every line of the log, in file order."""
    out = []
    for line in text.split("\n"):
        if line:
            m = STAMP_RE.match(line)
            assert m, "a log line without a time stamp: %r" % line[:200]
            out.append((m.group(1), line))
    return out


class LogClockTest(HerdTestCase):

    def test_lines_of_all_threads_in_time_order(self):
        herd = self.make_herd(servers=[S], extra={"frontend_threads": 2, "state_dir": "state"})
        herd.start(S)
        errors = []

        def client(k):
            try:
                cids = [("clock-%d-%d-%s" % (k, i, uuid.uuid4().hex[:6])).encode() for i in range(100)]
                data = b"".join(iamat_line(cid) + b"\n" for cid in cids)
                replies = herd.send(S, data, timeout=30).split(b"\n")
                if sum(1 for r in replies if AT_RE_B.match(r)) != len(cids):
                    errors.append("client %d: %d replies" % (k, len(replies)))
            except Exception as e:  # reported below, on the test's thread
                errors.append("client %d: %r" % (k, e))

        for _ in range(3):
            threads = [threading.Thread(target=client, args=(k,)) for k in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
        self.assertEqual(errors, [])
        self.assertEqual(herd.stop(S), 0)
        lines = stamps(herd.log_text(S))
        self.assertGreater(len(lines), 3600)
        for (a, la), (b, lb) in zip(lines, lines[1:]):
            self.assertLessEqual(a, b, "out of time order:\n%s\n%s" % (la[:200], lb[:200]))

    def test_start_up_events_carry_their_own_time(self):
        herd = self.make_herd(servers=[S], extra={"state_dir": "state"})
        herd.start(S)
        self.assertEqual(herd.stop(S), 0)
        lines = stamps(herd.log_text(S))
        starting = next(t for t, line in lines if " server %s starting" % S in line)
        ready = next(t for t, line in lines if line.endswith(" server %s ready" % S))
        self.assertLess(starting, ready, "the start-up lines share one time stamp")


if __name__ == "__main__":
    unittest.main()
