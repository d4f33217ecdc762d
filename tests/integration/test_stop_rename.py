"""Stopping and renaming without losing a reply or a record (PROTOCOL
sections 7 and 8; issues 19 item 2 and 20 item 3).

- SIGTERM while a WHATSAT waits on a Places answer that comes after 6 s
  (places.timeout_ms 10000): the client gets its full answer, then the
  server exits 0. (The stop used to give up after a fixed 5 s.)
- A second SIGTERM cuts the wait short: exit 0, and the log says so.
- A rename (C -> D): every server keeps every record, C's clients included;
  C, no longer in the topology, answers the WHATSAT it was owed, logs why
  and exits 0; D starts and gets the whole table from its neighbour.
- systemd's notify protocol: READY=1, RELOADING=1 then READY=1 with the
  outcome in STATUS=, STOPPING=1 (when built with libsystemd).

Run: cd tests/integration && HERD_SERVER=.../herd-server python3 -m unittest -v test_stop_rename
"""

import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import uuid

from herdtest import (AT_RE_B, PLACES_KEY_ENV, HerdTestCase, free_ports, iamat_line, server_binary,
                      wait_until)
from places_standin import PlacesStandIn

KEY = "stop-test-key"


def uid(tag):
    return ("stop-%s-%s" % (tag, uuid.uuid4().hex[:10])).encode()


class OwedWhatsat:
    """A WHATSAT sent on its own connection; its reply read in a thread."""

    def __init__(self, herd, name, cid):
        self.client = herd.connect(name, timeout=30)
        self.client.send(b"WHATSAT " + cid + b" 10 2\n")
        self.reply = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            self.reply = self.client.read_to_eof(30)
        except OSError as e:
            self.reply = repr(e).encode()

    def result(self, timeout=30):
        self.thread.join(timeout)
        self.client.close()
        return self.reply


class StopCase(HerdTestCase):

    def slow_places(self):
        places = PlacesStandIn(key=KEY).start()
        self.addCleanup(places.stop)
        return places

    def report(self, herd, name, cid):
        reply = herd.send(name, iamat_line(cid) + b"\n")
        self.assertTrue(AT_RE_B.match(reply[:-1]), reply)
        return reply[:-1]


class StopTest(StopCase):

    def test_sigterm_answers_a_slow_whatsat_by_its_deadline(self):
        places = self.slow_places()
        herd = self.make_herd(servers=["S"], places_url=places.url, env={PLACES_KEY_ENV: KEY},
                              places={"timeout_ms": 10000})
        herd.start("S")
        cid = uid("slow")
        at = self.report(herd, "S", cid)
        places.set_mode("slow", delay=6.0)
        owed = OwedWhatsat(herd, "S", cid)
        wait_until(lambda: places.count >= 1, 10, msg="no Places request")
        started = time.monotonic()
        os.kill(herd.pid("S"), signal.SIGTERM)
        herd.wait_log("S", "SIGTERM: stopping")
        reply = owed.result()
        self.assertTrue(reply.startswith(at + b"\n{"), reply[:300])
        self.assertIn(b'"status" : "OK"', reply)
        self.assertTrue(reply.endswith(b"}\n\n"), reply[-100:])
        self.assertEqual(herd.wait_exit("S", 20), 0)
        self.assertGreater(time.monotonic() - started, 5.0)
        self.assertIn("server S stopped", herd.log_text("S"))

    def test_second_sigterm_cuts_the_stop_short(self):
        places = self.slow_places()
        herd = self.make_herd(servers=["S"], places_url=places.url, env={PLACES_KEY_ENV: KEY},
                              places={"timeout_ms": 60000})
        herd.start("S")
        cid = uid("held")
        self.report(herd, "S", cid)
        places.set_mode("hold")
        self.addCleanup(places.release)
        owed = OwedWhatsat(herd, "S", cid)
        wait_until(lambda: places.count >= 1, 10, msg="no Places request")
        os.kill(herd.pid("S"), signal.SIGTERM)
        herd.wait_log("S", "SIGTERM: stopping")
        with self.assertRaises(AssertionError):
            herd.wait_exit("S", 1)
        os.kill(herd.pid("S"), signal.SIGTERM)
        self.assertEqual(herd.wait_exit("S", 10), 0)
        self.assertIn("SIGTERM again: stopping now", herd.log_text("S"))
        owed.result()


class RenameTest(StopCase):

    def test_rename_keeps_every_record_and_the_old_server_exits_0(self):
        places = self.slow_places()
        herd = self.make_herd(servers=["RA", "RB", "RC"], links=[("RA", "RB"), ("RB", "RC")],
                              places_url=places.url, env={PLACES_KEY_ENV: KEY}, extra={"state_dir": None})
        herd.start_all()
        herd.wait_log("RB", "link to RC up", 10)
        herd.wait_log("RB", "link to RA up", 10)
        clients = {name: uid("at-" + name) for name in ("RA", "RB", "RC")}
        ats = {cid: self.report(herd, name, cid) for name, cid in clients.items()}

        def holds(name, cid, at):
            reply = herd.send(name, b"WHATSAT " + cid + b" 10 1\n")
            return reply.split(b"\n", 1)[0] == at

        for cid, at in ats.items():
            for name in ("RA", "RB", "RC"):
                wait_until(lambda: holds(name, cid, at), 10, msg="%s lacks %r" % (name, cid))

        # A WHATSAT owed by RC when it learns it is gone.
        places.set_mode("slow", delay=1.5)
        owed = OwedWhatsat(herd, "RC", clients["RC"])
        wait_until(lambda: places.count >= 1, 10, msg="no Places request")

        # RC becomes RD (new ports: RC still holds its own until it exits).
        client_port, peer_port = free_ports(2)
        del herd.topology["servers"]["RC"]
        herd.topology["servers"]["RD"] = {"host": "127.0.0.1", "client_port": client_port,
                                          "peer_port": peer_port}
        herd.names.append("RD")
        marks = herd.reload(["RA", "RB", "RC"], [("RA", "RB"), ("RB", "RD")])
        self.assertEqual(herd.wait_exit("RC", 20), 0)
        reply = owed.result()
        self.assertTrue(reply.startswith(ats[clients["RC"]] + b"\n{"), reply[:300])
        self.assertIn(b'"status" : "OK"', reply)
        log = herd.log_since("RC", marks["RC"])
        self.assertIn('has no server named "RC" any more: this server stops', log)
        self.assertIn("removed from the topology: stopping", log)
        for name in ("RA", "RB"):
            herd.wait_log(name, "reload: topology applied (3 servers, 2 links)")
            self.assertNotIn("dropped", herd.log_since(name, marks[name]))

        herd.start("RD")
        clients["RD"] = uid("at-RD")
        ats[clients["RD"]] = self.report(herd, "RD", clients["RD"])
        for cid, at in ats.items():
            for name in ("RA", "RB", "RD"):
                wait_until(lambda: holds(name, cid, at), 15, msg="%s lacks %r" % (name, cid))
        for name in ("RA", "RB", "RD"):
            self.assertEqual(herd.stop(name), 0)


class NotifyTest(StopCase):

    def test_systemd_notify(self):
        linked = subprocess.run(["ldd", server_binary()], capture_output=True).stdout
        if b"libsystemd" not in linked:
            self.skipTest("herd-server built without libsystemd")
        folder = tempfile.mkdtemp(prefix="herd-notify-")
        path = os.path.join(folder, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        self.addCleanup(sock.close)
        self.addCleanup(lambda: (os.unlink(path), os.rmdir(folder)))
        sock.settimeout(10)
        herd = self.make_herd(servers=["S"], env={"NOTIFY_SOCKET": path})
        herd.start("S")

        def next_message():
            return sock.recv(4096).decode()

        first = next_message()
        self.assertIn("READY=1", first.split("\n"))
        self.assertIn("MAINPID=%d" % herd.pid("S"), first)
        os.kill(herd.pid("S"), signal.SIGHUP)
        reloading = next_message().split("\n")
        self.assertIn("RELOADING=1", reloading)
        self.assertTrue(any(f.startswith("MONOTONIC_USEC=") for f in reloading), reloading)
        done = next_message().split("\n")
        self.assertIn("READY=1", done)
        self.assertIn("STATUS=reload applied: topology applied (1 servers, 0 links)", done)
        os.kill(herd.pid("S"), signal.SIGTERM)
        self.assertIn("STOPPING=1", next_message().split("\n"))
        self.assertEqual(herd.wait_exit("S"), 0)


if __name__ == "__main__":
    unittest.main()
