"""The server's log, NAME.log, written by its own thread (herd_log).

- `mv NAME.log x`, the folder removed, then SIGUSR1: the lines before the signal
  are in x, the folder and a new NAME.log are made again, the lines after go
  there, and no "cannot reopen" is logged on the way.
- The writes happen on a thread of their own, named herd-log.
- SIGTERM writes every line out before the exit, down to "stopped".

Run: cd tests/integration && HERD_SERVER=.../herd-server python3 -m unittest -v test_log
"""

import os
import re
import signal
import unittest

from herdtest import AT_RE_B, HerdTestCase, iamat_line, wait_until

S = "Bailey"


class LogTest(HerdTestCase):

    def iamat(self, herd, cid):
        reply = herd.send(S, iamat_line(cid, b"+1.5-2.5") + b"\n")
        self.assertIsNotNone(AT_RE_B.match(reply[:-1]), reply)

    def read(self, path):
        try:
            with open(path, "rb") as f:
                return f.read().decode("latin-1")
        except FileNotFoundError:
            return ""

    def test_sigusr1_after_mv_and_removed_folder(self):
        herd = self.make_herd(servers=[S])
        herd.start(S)
        path = herd.log_path(S)
        folder = os.path.dirname(path)
        moved = os.path.join(herd.tmpdir, "x")
        self.iamat(herd, b"before-rotation")
        herd.wait_log(S, "before-rotation")
        os.rename(path, moved)
        os.rmdir(folder)
        os.kill(herd.pid(S), signal.SIGUSR1)
        herd.wait_log(S, "SIGUSR1: log reopened")
        self.iamat(herd, b"after-rotation")
        herd.wait_log(S, "after-rotation")
        self.assertEqual(herd.stop(S), 0)

        old, new = self.read(moved), herd.log_text(S)
        self.assertIn("before-rotation", old)
        self.assertNotIn("after-rotation", old)
        self.assertNotIn("before-rotation", new)
        self.assertNotIn("cannot reopen", old + new)
        # The reopen's line is in the new file, and SIGUSR1 reloads nothing.
        self.assertRegex(new, r"(?m)^\S+ SIGUSR1: log reopened")
        self.assertNotIn("reload", old + new)

    def test_out_lines_in_the_order_the_client_reads_them(self):
        """An invalid line is answered by the front end at once, an IAMAT
        after the node has stored it: pipelined, the "?" is held behind the
        AT reply on the wire, and its "out" line must come after the AT
        reply's in the log too."""
        herd = self.make_herd(servers=[S])
        herd.start(S)
        cid = b"log-order"
        data = (iamat_line(cid, b"+1.5-2.5") + b"\nIAMAT bad line\n" + iamat_line(cid + b"-2", b"+1.5-2.5")
                + b"\nbad2\n")
        reply = herd.send(S, data)
        lines = reply.decode("latin-1").splitlines()
        self.assertEqual(len(lines), 4, reply)
        self.assertTrue(lines[0].startswith("AT ") and lines[2].startswith("AT "), reply)
        self.assertEqual((lines[1], lines[3]), ("? IAMAT bad line", "? bad2"), reply)
        herd.wait_log(S, "client done")
        outs = re.findall(r'(?m)^\S+ conn \d+ out "(.*)\\n"$', herd.log_text(S))
        self.assertEqual(outs, lines, "the log's out lines, against the replies in order")
        self.assertEqual(herd.stop(S), 0)

    def test_writer_thread_and_flush_on_sigterm(self):
        herd = self.make_herd(servers=[S])
        herd.start(S)
        task = "/proc/%d/task" % herd.pid(S)

        def names():
            out = []
            for tid in os.listdir(task):
                try:
                    with open(os.path.join(task, tid, "comm")) as f:
                        out.append(f.read().strip())
                except FileNotFoundError:
                    pass  # a thread that just ended
            return out
        wait_until(lambda: "herd-log" in names(), timeout=5, msg="no herd-log thread")
        for i in range(200):
            self.iamat(herd, b"flush-%d" % i)
        self.assertEqual(herd.stop(S, signal.SIGTERM), 0)
        log = herd.log_text(S)
        self.assertEqual(len(re.findall(r"(?m)^\S+ conn \d+ in \"IAMAT flush-\d+ ", log)), 200)
        self.assertRegex(log, r"(?m)^\S+ SIGTERM: stopping")
        self.assertTrue(log.endswith(" server Bailey stopped\n"), log[-300:])


if __name__ == "__main__":
    unittest.main()
