"""Every acknowledgement true on disk (PROTOCOL.md section 9; issue 19).

Under `fsync: "always"` an AT reply says the update is on disk. These tests
put the state folder on a small tmpfs (mounted here: the tests need root,
and are skipped with a message when mount is refused), fill it while a
client writes, and check:

- no AT reply for an update that did not reach the disk: every AT line
  acknowledged is in the journal's bytes at that moment, and while the
  folder is full updates are answered "?" (PROTOCOL section 5 form);
- /healthz, /metrics and the log say why while the state cannot be written;
- once space is freed acknowledgements resume by themselves (no 4 MiB of
  free space needed);
- after kill -9 and a restart with more space every acknowledged client is
  there.

And the files a start trusts are checked first: a snapshot whose header
has one bit flipped in its generation field makes the start delete no
journal and lose nothing acknowledged; the bad file is set aside (renamed,
logged), not deleted. And limits.record_ttl_s holds from the first moment
after a start.

Run: cd tests/integration && HERD_SERVER=.../herd-server python3 -m unittest -v test_durability
"""

import http.client
import os
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import time
import unittest
import uuid

from herdtest import AT_RE_B, HOST, HerdTestCase, free_ports, iamat_line, ns_text, wait_until

TMPFS_KIB = 600


def uid(tag):
    """A client id prefix no other test uses."""
    return "du-%s-%s" % (tag, uuid.uuid4().hex[:8])


def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data):
    """CRC-32C (Castagnoli), as the state files use it."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def frames(data, start):
    """The (kind, body) frames of a state file from offset `start`."""
    out = []
    off = start
    while off + 8 <= len(data):
        length, crc = struct.unpack_from("<II", data, off)
        body = data[off + 8:off + 8 + length]
        if length == 0 or len(body) != length or crc32c(body) != crc:
            break
        out.append((body[:1], body[1:]))
        off += 8 + length
    return out


def header(magic, gen):
    """A version-2 header: magic, generation, CRC of both, zeros."""
    head = magic + struct.pack("<Q", gen)
    return head + struct.pack("<I", crc32c(head)) + b"\0" * 4


def frame(kind, body):
    whole = kind + body
    return struct.pack("<II", len(whole), crc32c(whole)) + whole


class TmpfsCase(HerdTestCase):
    """A lone server Bailey whose state folder is on a tmpfs of TMPFS_KIB."""

    def mount_tmpfs(self, kib):
        mnt = tempfile.mkdtemp(prefix="herd-tmpfs-")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%dk" % kib, "tmpfs", mnt],
                           capture_output=True, text=True)
        if r.returncode != 0:
            os.rmdir(mnt)
            self.skipTest("cannot mount a tmpfs here (%s): the small-disk tests need root"
                          % (r.stderr.strip() or "mount exit %d" % r.returncode))

        def unmount():
            subprocess.run(["umount", "-l", mnt], capture_output=True)
            shutil.rmtree(mnt, ignore_errors=True)
        self.addCleanup(unmount)
        return mnt

    def remount(self, mnt, kib):
        subprocess.run(["mount", "-o", "remount,size=%dk" % kib, mnt], check=True, capture_output=True)

    def lone(self, state_dir, **extra):
        admin = free_ports(1)[0]
        topo = {"state_dir": state_dir, "fsync": "always", "servers": {"Bailey": {"admin_port": admin}}}
        topo.update(extra)
        herd = self.make_herd(servers=["Bailey"], extra=topo)
        herd.start("Bailey")
        return herd

    def metric(self, herd, name):
        for (metric, _labels), value in herd.metrics("Bailey").items():
            if metric == name:
                return value
        raise AssertionError("no %s in /metrics" % name)

    def healthz(self, herd):
        conn = http.client.HTTPConnection(HOST, herd.topology["servers"]["Bailey"]["admin_port"], timeout=5)
        try:
            conn.request("GET", "/healthz")
            r = conn.getresponse()
            return r.status, r.read().decode()
        finally:
            conn.close()

    def burst(self, herd, cids, t):
        """IAMATs for cids (time t) pipelined on one connection: {cid: AT
        line (bytes) or None for the "?" reply}."""
        lines = [iamat_line(cid, t=t) for cid in cids]
        out = {}
        with herd.connect("Bailey", timeout=20) as c:
            c.send(b"".join(line + b"\n" for line in lines))
            for cid, line in zip(cids, lines):
                reply = c.recv_line(timeout=20)[:-1]
                if reply.startswith(b"? "):
                    self.assertEqual(reply, b"? " + line, "a '?' reply not in PROTOCOL section 5's form")
                    out[cid] = None
                else:
                    m = AT_RE_B.match(reply)
                    self.assertTrue(m and m.group(3) == cid, reply)
                    out[cid] = reply
        return out

    @staticmethod
    def held_on(disk, at):
        """Whether the update an AT reply acknowledges is in `disk`: its
        client, position and time (a reply to a repeat carries its own skew,
        while the record kept is the first one's)."""
        m = AT_RE_B.match(at)
        return b" %s %s %s" % (m.group(3), m.group(4), m.group(5)) in disk

    def on_disk(self, folder):
        """Every byte of the journals and snapshot in the server's folder."""
        data = b""
        for name in sorted(os.listdir(folder)):
            if name.startswith(("journal.", "snapshot")):
                with open(os.path.join(folder, name), "rb") as f:
                    data += f.read()
        return data


class FullDiskTest(TmpfsCase):

    def test_full_tmpfs_under_always(self):
        mnt = self.mount_tmpfs(TMPFS_KIB)
        herd = self.lone(os.path.join(mnt, "state"))
        folder = os.path.join(mnt, "state", "Bailey")
        # Ballast to free later: most of the tmpfs, so it fills fast.
        ballast = os.path.join(mnt, "ballast")
        with open(ballast, "wb") as f:
            f.write(b"\xa5" * ((TMPFS_KIB - 200) * 1024))
        prefix = uid("full")
        pad = "x" * 180  # long ids: fewer records fill the folder
        acked = {}      # cid -> AT line, every acknowledgement seen
        refused = set()
        t = ns_text(time.time_ns())
        k = 0
        while len(refused) < 200:
            cids = [("%s-%s-%d" % (prefix, pad, k + i)).encode() for i in range(100)]
            k += 100
            self.assertLess(k, 20000, "the folder never filled: %d acknowledged" % len(acked))
            for cid, at in self.burst(herd, cids, t).items():
                if at is None:
                    refused.add(cid)
                else:
                    acked[cid] = at
            # No AT reply for an update that did not reach the disk: every
            # acknowledged AT line is in the files now.
            disk = self.on_disk(folder)
            missing = [cid for cid, at in acked.items() if not self.held_on(disk, at)]
            self.assertEqual(missing[:5], [], "%d acknowledged updates are not on disk" % len(missing))
        self.assertGreater(len(acked), 50)
        # It says why.
        self.assertEqual(self.metric(herd, "herd_state_durable"), 0)
        self.assertEqual(self.metric(herd, "herd_state_writes_failing"), 1)
        status, body = self.healthz(herd)
        self.assertEqual(status, 503, body)
        self.assertIn("No space left on device", body)
        self.assertIn("answered \"?\"", body)
        herd.wait_log("Bailey", re.compile(r"state: cannot (write|fsync) journal\.\d+: No space left on device"))
        # A refused client asked again while still full: "?" again.
        again = sorted(refused)[:20]
        self.assertTrue(all(v is None for v in self.burst(herd, again, t).values()))

        # Space again (far less than 4 MiB): acknowledgements resume alone.
        os.unlink(ballast)
        wait_until(lambda: self.metric(herd, "herd_state_durable") == 1, timeout=15,
                   msg="the state never became durable again after space was freed")
        herd.wait_log("Bailey", re.compile(r"journal\.\d+ is written again"))
        status, body = self.healthz(herd)
        self.assertEqual(status, 200, body)
        for cid, at in self.burst(herd, again, t).items():
            self.assertIsNotNone(at, "still '?' for %r once space was freed" % cid)
            acked[cid] = at
        more = [("%s-more-%d" % (prefix, i)).encode() for i in range(50)]
        for cid, at in self.burst(herd, more, t).items():
            self.assertIsNotNone(at)
            acked[cid] = at
        disk = self.on_disk(folder)
        self.assertEqual([c for c, at in acked.items() if not self.held_on(disk, at)][:5], [])

        # kill -9, more space, restart: every acknowledged client is there.
        herd.kill("Bailey")
        self.remount(mnt, 8192)
        herd.start("Bailey")
        held = herd.records("Bailey", sorted(acked))
        lost = [cid for cid in acked if held[cid] is None]
        self.assertEqual(lost[:5], [], "%d acknowledged clients lost by kill -9" % len(lost))


class HungDiskTest(TmpfsCase):
    """A disk that stops answering: the state folder on a small ext4 image
    frozen with fsfreeze(8), so that journal writes block."""

    def test_held_replies_get_their_answer_on_a_hung_disk(self):
        img = tempfile.mkdtemp(prefix="herd-ext4-")
        mnt = os.path.join(img, "mnt")
        os.mkdir(mnt)
        image = os.path.join(img, "disk.img")
        with open(image, "wb") as f:
            f.truncate(64 << 20)
        steps = [["mkfs.ext4", "-q", "-F", image], ["mount", "-o", "loop", image, mnt]]
        for cmd in steps:
            try:
                r = subprocess.run(cmd, capture_output=True, text=True)
            except OSError as e:
                r = subprocess.CompletedProcess(cmd, 127, "", str(e))
            if r.returncode != 0:
                shutil.rmtree(img, ignore_errors=True)
                self.skipTest("cannot make a loop-mounted ext4 here (%s: %s): the hung-disk test needs root"
                              % (cmd[0], r.stderr.strip()))

        def unmount():
            subprocess.run(["umount", mnt], capture_output=True)
            shutil.rmtree(img, ignore_errors=True)
        self.addCleanup(unmount)
        herd = self.lone(os.path.join(mnt, "state"))

        def thaw():
            subprocess.run(["fsfreeze", "-u", mnt], capture_output=True)
        self.addCleanup(thaw)  # runs before the herd is closed
        prefix = uid("hung")
        t = ns_text(time.time_ns())
        before = self.burst(herd, [("%s-a%d" % (prefix, i)).encode() for i in range(10)], t)
        self.assertTrue(all(before.values()))
        if subprocess.run(["fsfreeze", "-f", mnt], capture_output=True).returncode != 0:
            self.skipTest("fsfreeze is not permitted here")
        # The writes of these block: their replies are held, then "?" at
        # the deadline (not held for ever, never an AT reply).
        frozen = [("%s-b%d" % (prefix, i)).encode() for i in range(10)]
        started = time.monotonic()
        replies = self.burst(herd, frozen, t)
        waited = time.monotonic() - started
        self.assertEqual([c for c, at in replies.items() if at is not None], [])
        self.assertGreater(waited, 3.0)
        herd.wait_log("Bailey", "state: the disk is hung")
        self.assertEqual(self.metric(herd, "herd_state_disk_hung"), 1)
        status, body = self.healthz(herd)
        self.assertEqual(status, 503, body)
        self.assertIn("hung", body)
        # While hung, an update is answered "?" at once.
        more = [("%s-c%d" % (prefix, i)).encode() for i in range(5)]
        started = time.monotonic()
        self.assertTrue(all(v is None for v in self.burst(herd, more, t).values()))
        self.assertLess(time.monotonic() - started, 3.0)
        # The disk answers again: acknowledgements resume by themselves.
        thaw()
        herd.wait_log("Bailey", "state: the disk answers again")
        wait_until(lambda: self.metric(herd, "herd_state_durable") == 1, timeout=10)
        after = self.burst(herd, more, t)
        self.assertTrue(all(after.values()), after)
        herd.kill("Bailey")
        herd.start("Bailey")
        acked = dict(before)
        acked.update(after)
        held = herd.records("Bailey", sorted(acked))
        self.assertEqual([c for c in acked if held[c] is None], [])


class DamagedSnapshotTest(TmpfsCase):

    def test_flipped_generation_bit_deletes_no_journal(self):
        herd = self.lone("state")
        folder = os.path.join(herd.tmpdir, "state", "Bailey")
        prefix = uid("snap")
        t1 = ns_text(time.time_ns())
        first = {cid: at for cid, at in self.burst(
            herd, [("%s-a%d" % (prefix, i)).encode() for i in range(40)], t1).items()}
        self.assertTrue(all(first.values()))
        self.assertEqual(herd.stop("Bailey"), 0)
        # Make journal.1 into a snapshot, as a compaction would: a header
        # for generation 1, its records, the trailer; journal.1 gone.
        with open(os.path.join(folder, "journal.1"), "rb") as f:
            j1 = f.read()
        self.assertEqual(j1[:8], b"HERDJNL2")
        recs = frames(j1, 24)
        self.assertEqual(len(recs), 40)
        snap = header(b"HERDSNP2", 1) + b"".join(frame(k, b) for k, b in recs)
        snap += frame(b"E", struct.pack("<QI", len(recs), crc32c(snap)))
        with open(os.path.join(folder, "snapshot"), "wb") as f:
            f.write(snap)
        os.unlink(os.path.join(folder, "journal.1"))
        herd.start("Bailey")
        herd.wait_log("Bailey", re.compile(r"loaded 40 records .*snapshot up to journal\.1, appending to journal\.2"))
        second = self.burst(herd, [("%s-b%d" % (prefix, i)).encode() for i in range(40)], ns_text(time.time_ns()))
        self.assertTrue(all(second.values()))
        herd.kill("Bailey")  # acknowledged under "always": on disk in journal.2

        def records_in_journal2():
            with open(os.path.join(folder, "journal.2"), "rb") as f:
                return len(frames(f.read(), 24))
        j2 = records_in_journal2()
        self.assertEqual(j2, 40)

        # One bit of the generation field: 1 becomes 2^56 + 1.
        with open(os.path.join(folder, "snapshot"), "r+b") as f:
            f.seek(15)
            b = f.read(1)
            f.seek(15)
            f.write(bytes([b[0] ^ 0x01]))
        herd.start("Bailey")
        herd.wait_log("Bailey", re.compile(r"state: .*/snapshot fails its header checksum .*: set aside as "
                                           r"snapshot\.bad-\d{8}T\d{6}Z"))
        self.assertGreaterEqual(records_in_journal2(), j2)
        names = os.listdir(folder)
        self.assertFalse([n for n in names if n.startswith("journal.7205")], names)
        self.assertEqual(len([n for n in names if n.startswith("snapshot.bad-")]), 1, names)
        acked = dict(first)
        acked.update(second)
        held = herd.records("Bailey", sorted(acked))
        self.assertEqual([c for c in acked if held[c] != acked[c]][:5], [])
        # What only the set-aside file held goes to the journal again: the
        # state is durable once it is there, and a start without the bad
        # file still has everything.
        wait_until(lambda: self.metric(herd, "herd_state_durable") == 1, timeout=10)
        herd.wait_log("Bailey", "the whole table (80 records) is written to the journal again")
        herd.kill("Bailey")
        aside = os.path.join(herd.tmpdir, "aside")
        os.mkdir(aside)
        for n in os.listdir(folder):
            if n.startswith("snapshot.bad-"):
                os.rename(os.path.join(folder, n), os.path.join(aside, n))
        herd.start("Bailey")
        held = herd.records("Bailey", sorted(acked))
        self.assertEqual([c for c in acked if held[c] != acked[c]][:5], [])

    def test_bad_magic_snapshot_is_set_aside_not_overwritten(self):
        herd = self.lone("state")
        folder = os.path.join(herd.tmpdir, "state", "Bailey")
        self.assertEqual(herd.stop("Bailey"), 0)
        junk = b"NOTHERD!" + os.urandom(200)
        with open(os.path.join(folder, "snapshot"), "wb") as f:
            f.write(junk)
        herd.start("Bailey")
        herd.wait_log("Bailey", re.compile(r"/snapshot is not a herd snapshot: set aside as snapshot\.bad-"))
        (name,) = [n for n in os.listdir(folder) if n.startswith("snapshot.bad-")]
        with open(os.path.join(folder, name), "rb") as f:
            self.assertEqual(f.read(), junk)
        self.assertEqual(self.metric(herd, "herd_state_set_aside_files"), 1)


class TtlAtLoadTest(TmpfsCase):

    def test_stale_record_is_not_held_after_a_start(self):
        herd = self.lone("state", limits={"record_ttl_s": 2})
        cid = uid("ttl").encode()
        (at,) = self.burst(herd, [cid], ns_text(time.time_ns())).values()
        self.assertIsNotNone(at)
        received = time.time()
        self.assertEqual(herd.stop("Bailey"), 0)
        wait_until(lambda: time.time() > received + 3, timeout=10, interval=0.1)
        herd.start("Bailey")
        # At once after READY: past its ttl, so not held, not even before
        # the first expiry sweep.
        self.assertIsNone(herd.records("Bailey", [cid])[cid])


if __name__ == "__main__":
    unittest.main()
