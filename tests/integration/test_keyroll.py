"""A rotated CURVE key at reload (issue 20, PROTOCOL.md sections 7 and 9):
a server whose key pair is replaced and whose public_key changes in the
topology reads the new pair at the next SIGHUP and links again with it, so
it is not cut off until a restart; client traffic through the roll-out gets
an AT reply for every IAMAT, and every update reaches every server.

Alpha - Beta - Gamma, all keyed; Beta's key is rotated while clients report
at Alpha and Gamma. Every wait is a condition with a deadline.
"""

import os
import re
import shutil
import tempfile
import threading
import time
import unittest

from herdtest import iamat_line, wait_until
from test_curve import CurveCase, key_files, keygen

LINK_TIMEOUT = 10
SETTLE_TIMEOUT = 30


class KeyRollTest(CurveCase):

    def test_a_rotated_key_is_read_at_reload_and_nothing_is_lost(self):
        herd, keys, kdir = self.keyed_herd(["Alpha", "Beta", "Gamma"], [("Alpha", "Beta"), ("Beta", "Gamma")])
        herd.start_all()
        for a, b in (("Alpha", "Beta"), ("Beta", "Alpha"), ("Beta", "Gamma"), ("Gamma", "Beta")):
            herd.wait_log(a, re.compile(r"(?m)link to %s up$" % b), LINK_TIMEOUT)

        stop = threading.Event()
        sent, bad = [], []

        def traffic(server):
            i = 0
            while not stop.is_set():
                cid = b"roll-%s-%d-%d" % (server.encode(), i, time.monotonic_ns())
                i += 1
                try:
                    reply = herd.send(server, iamat_line(cid) + b"\n", 10)
                except OSError as e:
                    bad.append((server, cid, repr(e)))
                    continue
                if reply.startswith(b"AT %s " % server.encode()):
                    sent.append(cid)
                else:
                    bad.append((server, cid, reply))
                stop.wait(0.01)

        threads = [threading.Thread(target=traffic, args=(s,)) for s in ("Alpha", "Gamma")]
        for t in threads:
            t.start()
        try:
            wait_until(lambda: len(sent) >= 20, 10, msg="no traffic")
            # Beta's new key pair replaces the old one on disk and in the
            # topology; then every server reloads, Beta first.
            tmp = tempfile.mkdtemp(prefix="herd-keyroll-")
            self.addCleanup(shutil.rmtree, tmp, True)
            new = keygen(tmp, "Beta")["Beta"]
            self.assertNotEqual(new, keys["Beta"])
            for src, dst in zip(key_files(tmp, "Beta"), key_files(kdir, "Beta")):
                shutil.copyfile(src, dst)
            herd.topology["servers"]["Beta"]["public_key"] = new
            herd.write_topology()
            mark = herd.log_size("Beta")
            herd.reload(["Beta"])
            herd.wait_log("Beta", re.compile(r"links: our key pair was read again"), 10)
            herd.reload(["Alpha", "Gamma"])
            # Links come back with the new key: a report at Alpha reaches
            # Gamma through Beta.
            probe = b"roll-probe-%d" % time.monotonic_ns()
            at = self.iamat_at(herd, "Alpha", probe)
            wait_until(lambda: self.stored_at(herd, "Gamma", probe) == at, SETTLE_TIMEOUT,
                       msg="Alpha's report did not reach Gamma after Beta's key was rotated")
            n = len(sent)
            wait_until(lambda: len(sent) >= n + 20, 10, msg="traffic stopped")
        finally:
            stop.set()
            for t in threads:
                t.join(20)
        self.assertEqual(bad, [], "IAMATs without an AT reply during the roll-out")
        self.assertGreater(len(sent), 40)
        for name in ("Alpha", "Beta", "Gamma"):
            wait_until(lambda: all(at is not None for at in herd.records(name, sent, 30).values()),
                       SETTLE_TIMEOUT, msg="%s lacks updates acknowledged during the roll-out" % name)
        self.assertNotRegex(herd.log_since("Beta", mark), r"new key pair cannot be used")


if __name__ == "__main__":
    unittest.main()
