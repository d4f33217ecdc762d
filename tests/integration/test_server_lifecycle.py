"""Starting and stopping herd-server (PROTOCOL.md sections 8 and 9).

READY on stdout, clean exit 0 with a flushed log on SIGTERM and SIGINT, and
exit status 2 with one clear stderr line for every start-up problem: a bad
topology file, an unknown name, a port already taken, a missing config file.

Run: cd tests/integration && HERD_SERVER=.../herd-server python3 -m unittest -v test_server_lifecycle
"""

import json
import os
import re
import signal
import socket
import unittest

from herdtest import AT_RE_B, HerdTestCase, iamat_line, run_server

S = "Bailey"


def one_line(test, stderr):
    """Checks stderr is exactly one non-empty line and returns it."""
    text = stderr.decode("utf-8", "replace")
    lines = [line for line in text.splitlines() if line.strip()]
    test.assertEqual(len(lines), 1, "want one stderr line, got %r" % text)
    return lines[0]


class LifecycleTest(HerdTestCase):

    def herd1(self, **kw):
        return self.make_herd(servers=[S], **kw)

    def iamat(self, herd, cid):
        reply = herd.send(S, iamat_line(cid, b"+1.5-2.5") + b"\n")
        m = AT_RE_B.match(reply[:-1])
        self.assertIsNotNone(m, reply)
        self.assertEqual(m.group(3), cid, reply)
        return reply[:-1].decode("latin-1")

    # ------------------------------------------------------------ start

    def test_ready_line(self):
        herd = self.herd1()
        herd.start(S)
        self.assertEqual(herd.stdout_lines(S), ["READY Bailey"])
        # Both ports are bound once READY is printed.
        self.iamat(herd, b"ready")
        socket.create_connection((herd.host(S), herd.peer_port(S)), timeout=5).close()
        self.assertEqual(herd.stop(S), 0)
        self.assertEqual(herd.stdout_lines(S), ["READY Bailey"])

    def test_default_config_is_topology_json_in_cwd(self):
        herd = self.herd1()
        herd.start(S, config=False, cwd=herd.tmpdir)
        self.iamat(herd, b"cwd")
        self.assertEqual(herd.stop(S), 0)

    def test_log_dir_relative_to_topology_file(self):
        herd = self.herd1()
        elsewhere = os.path.join(herd.tmpdir, "elsewhere")
        os.mkdir(elsewhere)
        herd.start(S, cwd=elsewhere)
        at = self.iamat(herd, b"reldir")
        self.assertEqual(herd.stop(S), 0)
        self.assertIn(at, herd.log_text(S))
        self.assertFalse(os.path.exists(os.path.join(elsewhere, "logs")))

    def test_log_dir_option_made_if_missing(self):
        herd = self.herd1()
        log_dir = os.path.join(herd.tmpdir, "custom-logs")
        herd.start(S, extra_args=["--log-dir", log_dir])
        at = self.iamat(herd, b"logdir")
        herd.wait_log(S, at, log_dir=log_dir)
        self.assertEqual(herd.stop(S), 0)
        self.assertIn(at, herd.log_text(S, log_dir=log_dir))
        self.assertFalse(os.path.exists(herd.log_path(S)), "the topology's log_dir was used too")

    def test_restart_on_the_same_ports(self):
        herd = self.herd1()
        herd.start(S)
        with herd.connect(S) as c:  # leaves TIME_WAIT behind on the server side
            c.send(b"HELLO\n")
            self.assertEqual(c.recv_line(), b"? HELLO\n")
            self.assertEqual(herd.stop(S), 0)
            self.assertTrue(c.closed(timeout=5))
        herd.start(S)
        self.iamat(herd, b"again")
        self.assertEqual(herd.stop(S), 0)

    # ------------------------------------------------------------- stop

    def check_signal_stop(self, sig):
        herd = self.herd1()
        herd.start(S)
        with herd.connect(S) as idle, herd.connect(S) as busy:
            busy.send(b"FIRST\n")
            self.assertEqual(busy.recv_line(), b"? FIRST\n")
            at = self.iamat(herd, b"last-before-%d" % sig)
            self.assertEqual(herd.stop(S, sig), 0)
            self.assertTrue(idle.closed(timeout=5))
            self.assertTrue(busy.closed(timeout=5))
        log = herd.log_text(S)  # read at once: the log must be flushed by the exit
        self.assertIn(at, log)
        self.assertIn("FIRST", log)
        self.assertTrue(log.endswith("\n"), log[-200:])

    def test_sigterm_exits_zero_and_flushes_log(self):
        self.check_signal_stop(signal.SIGTERM)

    def test_sigint_exits_zero_and_flushes_log(self):
        self.check_signal_stop(signal.SIGINT)

    def test_sigterm_after_many_replies(self):
        herd = self.herd1()
        herd.start(S)
        data = b"".join(b"NUMBER-%05d\n" % i for i in range(3000))
        reply = herd.send(S, data)
        self.assertEqual(reply, b"".join(b"? NUMBER-%05d\n" % i for i in range(3000)))
        self.assertEqual(herd.stop(S), 0)
        log = herd.log_text(S)
        self.assertIn("NUMBER-02999", log)
        self.assertEqual(len(re.findall(r"NUMBER-\d{5}", log)), 6000, "every input and reply")

    def test_sigterm_with_half_closed_client_waiting(self):
        herd = self.herd1()
        herd.start(S)
        with herd.connect(S) as c:
            c.send(b"ONE\nTWO")
            c.shutdown_write()
            self.assertEqual(c.read_to_eof(), b"? ONE\n? TWO\n")
        self.assertEqual(herd.stop(S), 0)

    # ---------------------------------------------------- start-up errors

    def write(self, herd, name, text):
        path = os.path.join(herd.tmpdir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def assertStartFails(self, args, must_mention=(), cwd=None):
        result = run_server(args, cwd=cwd)
        line = one_line(self, result.stderr)
        self.assertEqual(result.returncode, 2, "exit status; stderr %r" % result.stderr)
        self.assertNotIn(b"READY", result.stdout)
        for word in must_mention:
            self.assertIn(str(word), line)
        return line

    def test_json_syntax_error_names_file_line_column(self):
        herd = self.herd1()
        good = json.dumps(herd.topology, indent=2).splitlines()
        # Line 3 of the dump is Bailey's first field; break it after the colon.
        self.assertIn('"host"', good[3])
        bad = good[:3] + [good[3].replace(":", ": ,", 1)] + good[4:]
        path = self.write(herd, "broken.json", "\n".join(bad) + "\n")
        line = self.assertStartFails(["--config", path, S], must_mention=[path])
        m = (re.search(re.escape(path) + r":(\d+):(\d+)", line)
             or re.search(r"(?i)line\D{0,3}(\d+)\D{1,12}col(?:umn)?\D{0,3}(\d+)", line))
        self.assertIsNotNone(m, "no line and column in %r" % line)
        self.assertEqual(int(m.group(1)), 4, line)
        self.assertGreater(int(m.group(2)), 0, line)

    def test_truncated_and_empty_files(self):
        herd = self.herd1()
        for name, text in (("empty.json", ""), ("cut.json", '{"servers": {'),
                           ("array.json", "[]"), ("garbage.json", "\x00\xff\xfe")):
            path = self.write(herd, name, text)
            with self.subTest(name=name):
                self.assertStartFails(["--config", path, S], must_mention=[path])

    def test_invalid_topologies(self):
        herd = self.make_herd(servers=["Bailey", "Bona"], links=[("Bailey", "Bona")])
        base = herd.topology

        def variant(change):
            topo = json.loads(json.dumps(base))
            change(topo)
            return topo

        b, c = base["servers"]["Bailey"], base["servers"]["Bona"]
        cases = {
            "link to unknown": lambda t: t["links"].append(["Bailey", "Nobody"]),
            "link to itself": lambda t: t["links"].append(["Bona", "Bona"]),
            "duplicate link": lambda t: t["links"].append(["Bailey", "Bona"]),
            "shared address": lambda t: t["servers"]["Bona"].update(client_port=b["client_port"]),
            "peer port = other's client port":
                lambda t: t["servers"]["Bona"].update(peer_port=b["client_port"]),
            "port 0": lambda t: t["servers"]["Bona"].update(client_port=0),
            "port 65536": lambda t: t["servers"]["Bona"].update(peer_port=65536),
            "port as string": lambda t: t["servers"]["Bona"].update(
                client_port=str(c["client_port"])),
            "missing client_port": lambda t: t["servers"]["Bona"].pop("client_port"),
            "missing host": lambda t: t["servers"]["Bona"].pop("host"),
            "missing servers": lambda t: t.pop("servers"),
            "servers not an object": lambda t: t.update(servers=[]),
            "bad server name": lambda t: t["servers"].update({"Bad Name": dict(
                host="127.0.0.1", client_port=1, peer_port=2)}),
            "server name of 65 bytes": lambda t: t["servers"].update({"N" * 65: dict(
                host="127.0.0.1", client_port=1, peer_port=2)}),
            "link not a pair": lambda t: t["links"].append(["Bailey"]),
            "limits of wrong type": lambda t: t.update(limits={"max_clients": "many"}),
        }
        for what, change in cases.items():
            path = self.write(herd, "bad.json", json.dumps(variant(change), indent=2))
            with self.subTest(what=what):
                self.assertStartFails(["--config", path, S])

    def test_unknown_fields_are_ignored(self):
        herd = self.herd1(extra={"future": {"x": 1}, "servers": {S: {"colour": "blue"}}})
        herd.start(S)
        self.iamat(herd, b"future")
        self.assertEqual(herd.stop(S), 0)

    def test_unknown_name(self):
        herd = self.herd1()
        self.assertStartFails(["--config", herd.topology_path, "Nobody"], must_mention=["Nobody"])

    def test_missing_config_file(self):
        herd = self.herd1()
        path = os.path.join(herd.tmpdir, "no-such-dir", "topology.json")
        self.assertStartFails(["--config", path, S], must_mention=[path])

    def test_missing_default_config(self):
        herd = self.herd1()
        empty = os.path.join(herd.tmpdir, "empty")
        os.mkdir(empty)
        self.assertStartFails([S], must_mention=["topology.json"], cwd=empty)

    def check_port_taken(self, which):
        herd = self.herd1()
        port = herd.port(S) if which == "client" else herd.peer_port(S)
        blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            blocker.bind((herd.host(S), port))
            blocker.listen(1)
            herd.start(S, wait_ready=False)
            self.assertEqual(herd.wait_exit(S), 2, herd.stderr_text(S))
            line = one_line(self, herd.stderr_text(S).encode("latin-1"))
            self.assertIn(str(port), line)
            self.assertNotIn("READY " + S, herd.stdout_lines(S))
        finally:
            blocker.close()
        return herd

    def test_client_port_taken(self):
        self.check_port_taken("client")

    def test_peer_port_taken(self):
        herd = self.check_port_taken("peer")
        # It exited: nothing is left listening on its client port.
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection((herd.host(S), herd.port(S)), timeout=5).close()


if __name__ == "__main__":
    unittest.main()
