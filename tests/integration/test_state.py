"""Durable state (PROTOCOL.md section 9, state_dir and fsync; issue 13).

Each server keeps its table in state_dir/NAME/ (a CRC-framed journal plus a
snapshot) and loads it before READY. These tests kill whole herds with
SIGKILL while clients write and check what came back, damage the files by
hand (a torn tail, a flipped byte), make the state folder unusable, and
check that state_dir null keeps nothing.

Run: cd tests/integration && HERD_SERVER=.../herd-server python3 -m unittest -v test_state
"""

import http.client
import json
import os
import re
import resource
import signal
import threading
import time
import unittest
import uuid

from herdtest import (AT_RE_B, HOST, HerdTestCase, free_ports, iamat_line, ns_text, run_server,
                      wait_until)

RESTORE_TIMEOUT = 30  # disk load plus rejoin and repair, on a busy 2-core machine


def uid(tag):
    """A client id prefix no other test uses."""
    return "st-%s-%s" % (tag, uuid.uuid4().hex[:8])


def time_ns_of(text):
    """Nanoseconds of a nine-digit client time text."""
    sec, _, frac = text.partition(b".")
    return int(sec) * 10**9 + int(frac.ljust(9, b"0")[:9])


def read_replies(client, n, timeout=10):
    """The next n replies on a connection that was sent WHATSATs: each is the
    AT line (bytes) or None for "? ..."."""
    out = []
    buf = b""
    deadline = time.monotonic() + timeout
    while len(out) < n:
        while True:
            if buf.startswith(b"? "):
                end = buf.find(b"\n")
                if end < 0:
                    break
                out.append(None)
                buf = buf[end + 1:]
            else:
                end = buf.find(b"\n\n")
                if end < 0:
                    break
                out.append(buf.split(b"\n", 1)[0])
                buf = buf[end + 2:]
            if len(out) == n:
                return out
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("only %d of %d WHATSAT replies" % (len(out), n))
        buf += client.recv_until(lambda b: len(b) > 0, timeout=remaining)
    return out


def held_times(herd, name, cids):
    """{cid: client time (ns) of the record `name` holds, or None}."""
    with herd.connect(name) as c:
        c.send(b"".join(b"WHATSAT " + cid + b" 10 1\n" for cid in cids))
        replies = read_replies(c, len(cids), timeout=20)
    held = {}
    for cid, at in zip(cids, replies):
        m = AT_RE_B.match(at) if at is not None else None
        held[cid] = time_ns_of(m.group(5)) if m and m.group(3) == cid else None
    return held


def metrics(herd, name):
    """{metric line name (with labels): value} of /metrics."""
    port = herd.topology["servers"][name]["admin_port"]
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        body = conn.getresponse().read().decode()
    finally:
        conn.close()
    out = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def journal_files(herd, name):
    d = os.path.join(herd.tmpdir, "state", name)
    return sorted(os.path.join(d, f) for f in os.listdir(d) if f.startswith("journal."))


class Writer(threading.Thread):
    """Reports locations of its own clients to one server, one at a time on
    one connection, with growing times; remembers every acknowledgement (the
    client, its time and when the AT reply came) until the connection breaks."""

    def __init__(self, herd, name, prefix, clients):
        super().__init__(daemon=True)
        self.herd, self.name = herd, name
        self.cids = [("%s-%d" % (prefix, i)).encode() for i in range(clients)]
        self.acked = []  # (cid, time ns, monotonic time of the reply), in order
        self.count = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def run(self):
        try:
            with self.herd.connect(self.name) as c:
                k = 0
                while not self.stop.is_set():
                    cid = self.cids[k % len(self.cids)]
                    k += 1
                    t = time.time_ns()
                    c.send(iamat_line(cid, t=ns_text(t)) + b"\n")
                    reply = c.recv_line(timeout=10)
                    m = AT_RE_B.match(reply[:-1])
                    if not m or m.group(3) != cid:
                        return
                    with self.lock:
                        self.acked.append((cid, t, time.monotonic()))
                        self.count += 1
        except Exception:  # the server was killed under us: that is the test
            return

    def snapshot(self):
        with self.lock:
            return list(self.acked)


class KillAllTest(HerdTestCase):
    """kill -9 every server while clients write, restart them all."""

    def kill_all_while_writing(self, fsync, margin):
        herd = self.make_herd(extra={"state_dir": "state", "fsync": fsync})
        herd.start_all()
        prefix = uid(fsync)
        writers = [Writer(herd, name, "%s-%s" % (prefix, name), 8) for name in herd.names]
        for w in writers:
            w.start()
        started = time.monotonic()
        wait_until(lambda: time.monotonic() - started >= margin + 1.0
                   and all(w.count >= 20 for w in writers), timeout=30,
                   msg="the writers could not get going")
        # Every server at once, while the writers are mid-flight.
        kill_time = time.monotonic()
        for name in herd.names:
            os.kill(herd.pid(name), signal.SIGKILL)
        for name in herd.names:
            herd.kill(name)
        for w in writers:
            w.stop.set()
            w.join(15)
        must = {}
        for w in writers:
            for cid, t, acked_at in w.snapshot():
                if acked_at <= kill_time - margin:
                    must[cid] = max(t, must.get(cid, 0))
        self.assertGreaterEqual(len(must), 5 * 8, "too few clients acknowledged before the kill")

        herd.start_all()
        cids = sorted(must)

        def all_hold():
            for name in herd.names:
                held = held_times(herd, name, cids)
                behind = [c for c in cids if held[c] is None or held[c] < must[c]]
                if behind:
                    return False
            return True
        wait_until(all_hold, timeout=RESTORE_TIMEOUT, interval=0.2,
                   msg="an acknowledged update was lost by the restart")
        # Each server loaded its own files, not only what its neighbours sent.
        for name in herd.names:
            self.assertRegex(herd.log_text(name), r"state: .*: loaded [1-9]\d* records")

    def test_always_keeps_every_acknowledged_update(self):
        self.kill_all_while_writing("always", 0.0)

    def test_everysec_keeps_updates_older_than_a_second(self):
        self.kill_all_while_writing("everysec", 1.0)


class DamageTest(HerdTestCase):
    """Files damaged by hand: the server still starts, says what it did."""

    def lone(self, **extra):
        admin = free_ports(1)[0]
        topo = {"state_dir": "state", "fsync": "always",
                "servers": {"Bailey": {"admin_port": admin}}}
        topo.update(extra)
        herd = self.make_herd(servers=["Bailey"], extra=topo)
        herd.start("Bailey")
        return herd

    def fill(self, herd, prefix, n):
        cids = [("%s-%d" % (prefix, i)).encode() for i in range(n)]
        for i, cid in enumerate(cids):
            self.iamat_at(herd, "Bailey", cid, t=b"%d.000000001" % (1700000000 + i))
        return cids

    def test_torn_tail_is_cut_and_logged(self):
        herd = self.lone()
        cids = self.fill(herd, uid("torn"), 10)
        self.assertEqual(herd.stop("Bailey"), 0)
        (path,) = journal_files(herd, "Bailey")
        whole = os.path.getsize(path)
        torn = b"\x5a\x00\x00\x00\x01\x02\x03\x04AAT Bailey +0.0"  # claims 90 bytes
        with open(path, "ab") as f:
            f.write(torn)
        herd.start("Bailey")
        herd.wait_log("Bailey", re.compile(r"journal\.\d+: torn or damaged tail of %d bytes cut at offset %d"
                                           % (len(torn), whole)))
        held = held_times(herd, "Bailey", cids)
        self.assertTrue(all(held[c] is not None for c in cids), held)
        self.assertEqual(os.path.getsize(path), whole)
        m = metrics(herd, "Bailey")
        self.assertEqual(m["herd_state_durable"], 1)
        self.assertEqual(m["herd_state_loaded_records"], 10)

    def test_flipped_byte_skips_one_record(self):
        herd = self.lone()
        cids = self.fill(herd, uid("flip"), 10)
        self.assertEqual(herd.stop("Bailey"), 0)
        (path,) = journal_files(herd, "Bailey")
        with open(path, "rb") as f:
            data = bytearray(f.read())
        at = data.find(b" " + cids[4] + b" +34.")
        self.assertGreater(at, 0)
        data[at + len(cids[4]) + 4] ^= 0x01  # a digit of the position
        with open(path, "wb") as f:
            f.write(data)
        herd.start("Bailey")
        herd.wait_log("Bailey", "skipped 1 damaged record(s)")
        held = held_times(herd, "Bailey", cids)
        self.assertIsNone(held[cids[4]])
        self.assertTrue(all(held[c] is not None for c in cids if c != cids[4]), held)
        m = metrics(herd, "Bailey")
        self.assertEqual(m["herd_state_damaged_records"], 1)
        self.assertEqual(m["herd_state_loaded_records"], 9)

    def test_unusable_state_dir_refuses_to_start(self):
        herd = self.make_herd(servers=["Bailey"], extra={"state_dir": "blocker/state"})
        with open(os.path.join(herd.tmpdir, "blocker"), "w") as f:
            f.write("a file where a folder should be\n")
        r = run_server(["--config", herd.topology_path, "Bailey"], cwd=herd.tmpdir)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertEqual(r.stdout, b"")
        lines = r.stderr.decode().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertRegex(lines[0], r"^herd-server: cannot make state folder .*blocker/state/Bailey: ")

    def test_full_disk_is_survived_and_counted(self):
        # A file-size limit stands in for a full disk: the server inherits it
        # (the test process keeps it only while starting the server), and
        # its journal writes fail with EFBIG once past it.
        admin = free_ports(1)[0]
        herd = self.make_herd(servers=["Bailey"], extra={
            "state_dir": "state", "fsync": "everysec", "servers": {"Bailey": {"admin_port": admin}}})
        old = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20000, old[1]))
        try:
            herd.start("Bailey")
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, old)
        self.assertEqual(metrics(herd, "Bailey")["herd_state_durable"], 1)
        cids = [("%s-%d" % (uid("full"), i)).encode() for i in range(600)]
        with herd.connect("Bailey") as c:
            c.send(b"".join(iamat_line(cid) + b"\n" for cid in cids))
            for cid in cids:
                m = AT_RE_B.match(c.recv_line()[:-1])
                self.assertTrue(m and m.group(3) == cid)
        wait_until(lambda: metrics(herd, "Bailey")["herd_state_durable"] == 0, timeout=10,
                   msg="/metrics never said the state is not durable")
        self.assertGreaterEqual(metrics(herd, "Bailey")["herd_state_write_errors_total"], 1)
        # Still serving from memory, every update held.
        held = held_times(herd, "Bailey", cids)
        self.assertTrue(all(held[c] is not None for c in cids))
        self.assertEqual(herd.stop("Bailey"), 0)

    def test_state_dir_null_keeps_nothing(self):
        herd = self.make_herd(servers=["Bailey"], extra={"state_dir": None})
        herd.start("Bailey")
        (cid,) = self.fill(herd, uid("null"), 1)
        herd.kill("Bailey")
        herd.start("Bailey")
        self.assertIsNone(self.stored_at(herd, "Bailey", cid))
        self.assertFalse(os.path.exists(os.path.join(herd.tmpdir, "state")))

    def test_dropped_records_do_not_come_back(self):
        herd = self.lone(limits={"max_records": 5})
        if "herd_records_dropped_total" not in metrics(herd, "Bailey"):
            self.skipTest("this server does not drop records by limits.max_records "
                          "(no herd_records_dropped_total in /metrics)")
        cids = self.fill(herd, uid("drop"), 10)
        wait_until(lambda: metrics(herd, "Bailey")["herd_records_dropped_total"] >= 5)
        herd.kill("Bailey")
        herd.start("Bailey")
        held = held_times(herd, "Bailey", cids)
        self.assertEqual([c for c in cids if held[c] is not None], cids[5:])

    def test_records_of_a_removed_server_are_kept_at_start(self):
        """PROTOCOL section 7: a record is the client's newest location, not
        its origin server's property. A record on disk whose origin has left
        the topology since (edited while the server was down) is kept at
        start, with the server's other records."""
        herd = self.make_herd(servers=["Bailey", "Gone"], links=[("Bailey", "Gone")],
                              extra={"state_dir": "state", "fsync": "always"})
        herd.start_all()
        (mine,) = self.fill(herd, uid("mine"), 1)
        theirs = uid("theirs").encode()
        at = self.iamat_at(herd, "Gone", theirs)
        wait_until(lambda: self.stored_at(herd, "Bailey", theirs) == at, 10,
                   msg="Bailey never stored Gone's record")
        self.assertEqual(herd.stop("Bailey"), 0)
        self.assertEqual(herd.stop("Gone"), 0)
        del herd.topology["servers"]["Gone"]
        herd.topology["links"] = []
        herd.write_topology()

        for _ in range(2):
            herd.start("Bailey")
            self.assertEqual(self.stored_at(herd, "Bailey", theirs), at)
            self.assertIsNotNone(self.stored_at(herd, "Bailey", mine))
            self.assertEqual(herd.stop("Bailey"), 0)
        self.assertNotIn("dropped", herd.log_text("Bailey"))


if __name__ == "__main__":
    unittest.main()
