"""Keys rolled out and rotated without an outage (issue 20, PROTOCOL.md
sections 7 and 9). With "curve_rollout": true a link may have a public_key
at one end only: a server with a key accepts CURVE from its keyed
neighbours and from the others (which use a key pair of their run, bound to
no name), and links plainly to neighbours without a key; a server reads its
key pair, and switches its links, at the SIGHUP that gives it a public_key;
removing the flag at the end turns plain links off. A rotated key is read at
the next SIGHUP too. Client traffic through every step gets an AT reply for
every IAMAT, and every update reaches every server.

Alpha - Beta - Gamma; clients report at Alpha and Gamma throughout. Every
wait is a condition with a deadline.
"""

import os
import re
import shutil
import tempfile
import threading
import time
import unittest

from herdtest import iamat_line, wait_until
from peerwire import Zmtp
from test_curve import CurveCase, key_files, keygen

LINK_TIMEOUT = 10
SETTLE_TIMEOUT = 30


class KeyRollTest(CurveCase):

    def traffic(self, herd):
        """Starts clients reporting at Alpha and Gamma; returns (stop, sent,
        bad, threads): acknowledged ids, and IAMATs without an AT reply."""
        stop = threading.Event()
        sent, bad = [], []

        def run(server):
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

        threads = [threading.Thread(target=run, args=(s,)) for s in ("Alpha", "Gamma")]
        for t in threads:
            t.start()
        return stop, sent, bad, threads

    def probe(self, herd, why):
        """A report at Alpha reaches Gamma (through Beta)."""
        cid = b"roll-probe-%d" % time.monotonic_ns()
        at = self.iamat_at(herd, "Alpha", cid)
        wait_until(lambda: self.stored_at(herd, "Gamma", cid) == at, SETTLE_TIMEOUT,
                   msg="Alpha's report did not reach Gamma " + why)

    def test_a_key_roll_out_one_server_at_a_time(self):
        herd = self.make_herd(servers=["Alpha", "Beta", "Gamma"], links=[("Alpha", "Beta"), ("Beta", "Gamma")])
        kdir = os.path.join(herd.tmpdir, "keys")
        keys = keygen(kdir, "Alpha", "Beta", "Gamma")  # on disk; the topology has no public_key yet
        herd.add_admin_ports()
        herd.start_all()
        for a, b in (("Alpha", "Beta"), ("Beta", "Alpha"), ("Beta", "Gamma"), ("Gamma", "Beta")):
            herd.wait_log(a, re.compile(r"(?m)link to %s up$" % b), LINK_TIMEOUT)
        stop, sent, bad, threads = self.traffic(herd)
        try:
            wait_until(lambda: len(sent) >= 20, 10, msg="no traffic")
            # (why, servers given their public_key at this step, curve_rollout)
            steps = [("Beta only", ["Beta"], True), ("every server", ["Alpha", "Gamma"], True),
                     ("plain turned off", [], False)]
            for why, keyed, rollout in steps:
                for name in keyed:
                    herd.topology["servers"][name]["public_key"] = keys[name]
                if rollout:
                    herd.topology["curve_rollout"] = True
                else:
                    herd.topology.pop("curve_rollout", None)
                herd.write_topology()
                marks = herd.reload(["Alpha", "Beta", "Gamma"])
                for name in keyed:
                    herd.wait_log(name, re.compile(r"links are authenticated \(CURVE\) from now on"), 10)
                for name, mark in marks.items():
                    wait_until(lambda: "reload: " in herd.log_since(name, mark), 10, msg=name + " did not reload")
                self.probe(herd, "with keys for " + why)
                n = len(sent)
                wait_until(lambda: len(sent) >= n + 10, 10, msg="traffic stopped")
            # Plain is off: a plain handshake on Beta's peer port fails.
            with self.assertRaises((AssertionError, OSError)):
                Zmtp(herd.peer_port("Beta"), b"Alpha", timeout=3).close()
        finally:
            stop.set()
            for t in threads:
                t.join(20)
        self.assertEqual(bad, [], "IAMATs without an AT reply during the roll-out")
        for name in ("Alpha", "Beta", "Gamma"):
            wait_until(lambda: all(at is not None for at in herd.records(name, sent, 30).values()),
                       SETTLE_TIMEOUT, msg="%s lacks updates acknowledged during the roll-out" % name)
            wait_until(lambda: all(herd.link_up(name).values()), LINK_TIMEOUT, msg="a link of %s is down" % name)

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
