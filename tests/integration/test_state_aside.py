"""A damaged snapshot is set aside only once its records are safe elsewhere
(PROTOCOL.md section 9; README "Durable state").

A start that finds a snapshot failing its checks loads its good records and
writes the whole table to the journal again; the snapshot is renamed
snapshot.bad-TIME only once that table is on disk. The tester's steps: a
server stops cleanly with a snapshot, one byte of the snapshot is flipped,
the server is started once while its client port is taken (it loads, then
exits 2 before its first turn), then started normally: every record but
the damaged one must still be there, and after a SIGKILL once the snapshot
was set aside, still.

Run: cd tests/integration && HERD_SERVER=.../herd-server python3 -m unittest -v test_state_aside
"""

import os
import re
import socket
import struct
import time
import unittest
import uuid

from herdtest import AT_RE_B, HOST, HerdTestCase, free_ports, iamat_line, ns_text
from test_durability import crc32c, frame, frames, header


class DamagedSnapshotShortStartTest(HerdTestCase):

    def test_start_that_exits_after_loading_loses_nothing(self):
        admin = free_ports(1)[0]
        herd = self.make_herd(servers=["Bailey"], extra={
            "state_dir": "state", "fsync": "everysec", "servers": {"Bailey": {"admin_port": admin}}})
        herd.start("Bailey")
        folder = os.path.join(herd.tmpdir, "state", "Bailey")
        prefix = "sa-%s" % uuid.uuid4().hex[:8]
        cids = [("%s-%d" % (prefix, i)).encode() for i in range(200)]
        t = ns_text(time.time_ns())
        with herd.connect("Bailey", timeout=20) as c:
            c.send(b"".join(iamat_line(cid, t=t) + b"\n" for cid in cids))
            for cid in cids:
                m = AT_RE_B.match(c.recv_line(timeout=20)[:-1])
                self.assertTrue(m and m.group(3) == cid)
        self.assertEqual(herd.stop("Bailey"), 0)

        # journal.1 made into a snapshot, as a compaction would, then one
        # byte of one record's position flipped: that record and the
        # snapshot's whole-file CRC fail; the other 199 records are good.
        with open(os.path.join(folder, "journal.1"), "rb") as f:
            recs = frames(f.read(), 24)
        self.assertEqual(len(recs), 200)
        snap = header(b"HERDSNP2", 1) + b"".join(frame(k, b) for k, b in recs)
        snap += frame(b"E", struct.pack("<QI", len(recs), crc32c(snap)))
        damaged = cids[7]
        at = snap.find(b" " + damaged + b" +34.")
        self.assertGreater(at, 0)
        snap = bytearray(snap)
        snap[at + len(damaged) + 4] ^= 0x01
        with open(os.path.join(folder, "snapshot"), "wb") as f:
            f.write(snap)
        os.unlink(os.path.join(folder, "journal.1"))

        # A start with the client port taken: it loads, then exits 2.
        blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(blocker.close)
        blocker.bind((HOST, herd.port("Bailey")))
        blocker.listen(1)
        herd.start("Bailey", wait_ready=False)
        self.assertEqual(herd.wait_exit("Bailey"), 2)
        self.assertIn("loaded 199 records", herd.log_text("Bailey"))
        names = os.listdir(folder)
        self.assertIn("snapshot", names)
        self.assertEqual([n for n in names if ".bad-" in n], [])
        blocker.close()

        # A normal start: everything but the damaged record; the snapshot
        # goes aside once the table is on disk.
        mark = herd.log_size("Bailey")
        herd.start("Bailey")
        herd.wait_log("Bailey", re.compile(r"/snapshot fails its body checksum .*: set aside as snapshot\.bad-"))
        self.assertIn("loaded 199 records", herd.log_since("Bailey", mark))
        held = herd.records("Bailey", cids)
        self.assertEqual([c for c in cids if held[c] is None], [damaged])
        self.assertEqual([n for n in os.listdir(folder) if n.startswith("snapshot")][0][:13], "snapshot.bad-")
        herd.kill("Bailey")
        herd.start("Bailey")
        held = herd.records("Bailey", cids)
        self.assertEqual([c for c in cids if held[c] is None], [damaged])
        self.assertEqual(herd.stop("Bailey"), 0)


if __name__ == "__main__":
    unittest.main()
