"""Authenticated links (PROTOCOL.md sections 7 and 9: `public_key`, CURVE).

When the topology gives a server a `public_key`, its links use CURVE: its key
pair is read from keys_dir/NAME.key and keys_dir/NAME.key_secret (keys_dir is
a top-level topology field, default "keys" beside the topology file), every
neighbour must have a public_key too, and its ROUTER lets in only the
neighbours' keys. Keys are made by the project's own `herd-keygen` in each
test's temporary folder.

Impostors are real herd-server processes started from a second topology (in
its own temporary folder) that points at a real server's peer port:

- one claims the name of a real neighbour but holds a key pair of its own,
  which the real topology does not know: its handshake is refused;
- one holds a real neighbour's key pair (a stolen key) but claims another
  neighbour's name: its handshake succeeds, and every message it sends is
  dropped because the name it claims is not the one bound to its key.

Every wait is a condition with a deadline (a log line, a reply, a process
exit). To show that an update did NOT arrive, a fresh "marker" client is
sent through the impostor and through a real server and its arrival (or
refusal) awaited first.

Run: cd tests/integration && HERD_SERVER=.../herd-server python3 -m unittest -v test_curve
"""

import os
import re
import shutil
import socket
import subprocess
import unittest
import uuid

from herdtest import (AT_RE_B, POS, HerdTestCase, HerdTimeout, iamat_line, now_text, run_server,
                      server_binary, wait_until)
from peerwire import mp_updates, raw_connection, zmtp_frame_header, zmtp_greeting, zmtp_ready

REQ_TIMEOUT = 5    # one client exchange
LINK_TIMEOUT = 10  # links retry every 50 ms; a CURVE handshake takes milliseconds

AUTH_LINE = "links are authenticated (CURVE): only the neighbours' keys are let in"
REFUSED_RE = (r"(?m)^\S+ peer: refused a link from 127\.0\.0\.1\S*: "
              r"its key is not a neighbour's$")


def keygen_binary():
    """herd-keygen: in $HERD_BUILD_DIR, else beside the herd-server binary."""
    build = os.environ.get("HERD_BUILD_DIR") or os.path.dirname(server_binary())
    path = os.path.join(build, "herd-keygen")
    if not os.access(path, os.X_OK):
        raise unittest.SkipTest("herd-keygen not found at %s (set HERD_BUILD_DIR)" % path)
    return path


def keygen(keys_dir, *names):
    """Makes DIR/NAME.key and DIR/NAME.key_secret for each name; returns
    {name: public key} as herd-keygen printed it."""
    out = subprocess.run([keygen_binary(), keys_dir] + list(names), check=True,
                         capture_output=True, timeout=30).stdout.decode()
    keys = dict(line.split(" ", 1) for line in out.splitlines())
    assert sorted(keys) == sorted(names), out
    for key in keys.values():
        assert len(key) == 40, out
    return keys


def key_files(keys_dir, name):
    """(public file, secret file) of name's key pair in keys_dir."""
    path = os.path.join(keys_dir, name + ".key")
    return path, path + "_secret"


def uid(tag):
    return ("curve-%s-%s" % (tag, uuid.uuid4().hex[:10])).encode()


class CurveCase(HerdTestCase):
    """Herds with keys, plus the few client helpers these tests need."""

    def keyed_herd(self, servers, links, keyed=None, keys_dir=None):
        """A herd whose servers of `keyed` (default: all) have key pairs and
        public_keys. keys_dir, when given, is set in the topology; otherwise
        the keys go where the server looks by default ("keys" beside the
        topology). Returns (herd, {name: public key}, the keys folder)."""
        herd = self.make_herd(servers=servers, links=links,
                              extra={"keys_dir": keys_dir} if keys_dir else None)
        kdir = os.path.join(herd.tmpdir, keys_dir or "keys")
        keys = keygen(kdir, *(servers if keyed is None else keyed))
        for name, key in keys.items():
            herd.topology["servers"][name]["public_key"] = key
        herd.write_topology()
        return herd, keys, kdir

    def impostor(self, name, real, victim, public_key, pair, start=True):
        """Starts a herd-server called `name` from a topology of its own, whose
        one neighbour is `victim` of the real herd `real` (same address, peer
        port and public_key). `public_key` is what that topology says is
        `name`'s key, and pair = (public file, secret file) is copied in
        as its key pair. Returns the impostor's Herd (not started when
        start=False). Make it while the real servers run, so that its free
        ports cannot be theirs."""
        imp = self.make_herd(servers=[name, victim], links=[(name, victim)])
        conf = real.topology["servers"][victim]
        imp.topology["servers"][victim] = dict(conf)
        imp.topology["servers"][name]["public_key"] = public_key
        imp.write_topology()
        kdir = os.path.join(imp.tmpdir, "keys")
        os.makedirs(kdir)
        shutil.copyfile(pair[0], os.path.join(kdir, name + ".key"))
        shutil.copyfile(pair[1], os.path.join(kdir, name + ".key_secret"))
        if start:
            imp.start(name)
        return imp

    # ------------------------------------------------------------ logs

    def wait_lines(self, herd, name, pattern, count, mark=0, timeout=LINK_TIMEOUT):
        """Waits until the log of `name` (from byte `mark`) holds at least
        `count` lines matching the regex `pattern`; returns how many it holds."""
        rx = re.compile(pattern, re.M)
        try:
            return wait_until(lambda: len(rx.findall(herd.log_since(name, mark))) >= count
                              and len(rx.findall(herd.log_since(name, mark))), timeout,
                              interval=0.02)
        except HerdTimeout:
            self.fail("%s.log has fewer than %d lines matching %r after %gs; since the mark:\n%s"
                      % (name, count, pattern, timeout, herd.log_since(name, mark)[-3000:]))

    def wait_link_up(self, herd, a, b):
        herd.wait_log(a, re.compile(r"(?m)^\S+ link to %s up$" % re.escape(b)), LINK_TIMEOUT)

    # ---------------------------------------------------------- clients

    def wait_seen(self, herd, names, cid, at, timeout=5):
        last = {}

        def check():
            last.update({n: self.stored_at(herd, n, cid) for n in names if last.get(n) != at})
            return all(last[n] == at for n in names)
        try:
            wait_until(check, timeout)
        except HerdTimeout:
            self.fail("%r: want %r at %s within %gs; hold %r" % (cid, at, names, timeout, last))

    def assertUnknown(self, herd, names, cid, why):
        self.assertEqual({n: self.stored_at(herd, n, cid) for n in names},
                         {n: None for n in names}, why)


class CurveTest(CurveCase):

    def test_iamat_crosses_an_authenticated_line_of_three(self):
        names = ["Alpha", "Beta", "Gamma"]
        # keys_dir set explicitly (relative: resolved beside the topology file).
        herd, keys, kdir = self.keyed_herd(names, [("Alpha", "Beta"), ("Beta", "Gamma")],
                                           keys_dir="secrets")
        self.assertEqual(kdir, os.path.join(herd.tmpdir, "secrets"))
        self.assertFalse(os.path.exists(os.path.join(herd.tmpdir, "keys")))
        herd.start_all()
        for a, b in (("Alpha", "Beta"), ("Beta", "Alpha"), ("Beta", "Gamma"), ("Gamma", "Beta")):
            self.wait_link_up(herd, a, b)

        for origin, far in (("Alpha", "Gamma"), ("Gamma", "Alpha"), ("Beta", "Alpha")):
            with self.subTest(origin=origin):
                cid = uid("line-" + origin)
                at = self.iamat_at(herd, origin, cid)
                self.wait_seen(herd, names, cid, at)

        for name in names:
            log = herd.log_text(name)
            self.assertEqual(log.count(AUTH_LINE), 1, "%s.log:\n%s" % (name, log[-2000:]))
            self.assertNotIn("NOT authenticated", log, name)
            self.assertNotIn("refused a link", log, name)
            self.assertNotIn("dropped", log, name)
        self.assertCleanExit(herd, *names)

    def test_without_keys_links_are_logged_as_not_authenticated_once(self):
        herd = self.make_herd(servers=["Alpha", "Beta"], links=[("Alpha", "Beta")])
        herd.start_all()
        self.wait_link_up(herd, "Alpha", "Beta")
        self.wait_link_up(herd, "Beta", "Alpha")
        cid = uid("plain")
        self.wait_seen(herd, ["Alpha", "Beta"], cid, self.iamat_at(herd, "Alpha", cid))
        for name in ("Alpha", "Beta"):
            log = herd.log_text(name)
            want = "links are NOT authenticated: the topology gives %s no public_key" % name
            self.assertEqual(len(re.findall(r"(?m)^\S+ %s$" % re.escape(want), log)), 1,
                             "%s.log:\n%s" % (name, log[-2000:]))
            self.assertEqual(log.count("authenticated"), 1, name)

    def test_a_key_pair_that_does_not_match_the_topology_cannot_start(self):
        herd, keys, kdir = self.keyed_herd(["Alpha", "Beta"], [("Alpha", "Beta")])
        other = os.path.join(herd.tmpdir, "other")
        other_key = keygen(other, "Beta")["Beta"]
        self.assertNotEqual(other_key, keys["Beta"])
        for suffix in (".key", ".key_secret"):
            shutil.copyfile(os.path.join(other, "Beta" + suffix),
                            os.path.join(kdir, "Beta" + suffix))

        r = run_server(["--config", herd.topology_path, "Beta"], cwd=herd.tmpdir)
        err = r.stderr.decode("latin-1")
        self.assertEqual(r.returncode, 2, err)
        self.assertEqual(r.stdout, b"", "printed READY with a wrong key")
        self.assertEqual(err.count("\n"), 1, "not one line: %r" % err)
        self.assertIn(os.path.join(kdir, "Beta.key_secret"), err)
        self.assertIn("is not the public_key of Beta", err)
        # Its neighbour, whose key is right, starts.
        herd.start("Alpha")
        self.assertIn(AUTH_LINE, herd.log_text("Alpha"))

    def test_a_missing_secret_key_file_cannot_start(self):
        herd, keys, kdir = self.keyed_herd(["Alpha", "Beta"], [("Alpha", "Beta")])
        secret = os.path.join(kdir, "Alpha.key_secret")
        # Only the public file left; then neither file.
        for remove in ("Alpha.key_secret", "Alpha.key"):
            with self.subTest(removed=remove):
                os.remove(os.path.join(kdir, remove))
                r = run_server(["--config", herd.topology_path, "Alpha"], cwd=herd.tmpdir)
                err = r.stderr.decode("latin-1")
                self.assertEqual(r.returncode, 2, err)
                self.assertEqual(r.stdout, b"")
                self.assertEqual(err.count("\n"), 1, "not one line: %r" % err)
                self.assertIn(secret, err)

    def test_a_neighbour_without_a_public_key_is_fatal_and_named(self):
        herd, keys, kdir = self.keyed_herd(["Alpha", "Beta", "Gamma"],
                                           [("Alpha", "Beta"), ("Beta", "Gamma")],
                                           keyed=["Alpha", "Beta"])
        r = run_server(["--config", herd.topology_path, "Beta"], cwd=herd.tmpdir)
        err = r.stderr.decode("latin-1")
        self.assertEqual(r.returncode, 2, err)
        self.assertEqual(r.stdout, b"")
        self.assertEqual(err.count("\n"), 1, "not one line: %r" % err)
        self.assertIn("servers.Beta has a public_key but servers.Gamma has none", err)
        # The topology as a whole is invalid, so every server refuses it (one
        # validator: a herd never runs half on one reading and half on another).
        r = run_server(["--config", herd.topology_path, "Alpha"], cwd=herd.tmpdir)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn(b"servers.Beta has a public_key but servers.Gamma has none", r.stderr)

    def test_a_server_without_a_key_next_to_one_with_a_key_is_fatal(self):
        """Gamma has no key but its neighbour Beta has one: the link could
        never come up, so Gamma refuses to start and says why."""
        herd, keys, kdir = self.keyed_herd(["Alpha", "Beta", "Gamma"],
                                           [("Alpha", "Beta"), ("Beta", "Gamma")],
                                           keyed=["Alpha", "Beta"])
        r = run_server(["--config", herd.topology_path, "Gamma"], cwd=herd.tmpdir)
        err = r.stderr.decode("latin-1")
        self.assertEqual(r.returncode, 2, err)
        self.assertEqual(err.count("\n"), 1, "not one line: %r" % err)
        self.assertIn("servers.Beta has a public_key but servers.Gamma has none", err)

    def test_a_plain_zmtp_peer_cannot_talk_to_an_authenticated_server(self):
        """A NULL-mechanism peer (what a server without keys speaks) is
        disconnected during the greeting, before any READY; what it sends
        is never stored."""
        herd, keys, kdir = self.keyed_herd(["Alpha", "Beta"], [("Alpha", "Beta")])
        herd.start("Alpha")
        cid = uid("null")
        at = b"AT Beta +0.000000001 " + cid + b" " + POS + b" " + now_text()
        body = mp_updates([at])
        ready = zmtp_ready(b"DEALER", b"Beta")
        s = raw_connection(herd.peer_port("Alpha"),
                           zmtp_greeting() + zmtp_frame_header(0x04, len(ready)) + ready
                           + zmtp_frame_header(0x00, len(body)) + body)
        self.addCleanup(s.close)
        got = bytearray()

        def closed():
            try:
                chunk = s.recv(4096)
            except ConnectionResetError:
                return True
            except socket.timeout:
                return False
            got.extend(chunk)
            return not chunk
        s.settimeout(0.2)
        wait_until(closed, 5, interval=0, msg="Alpha kept a NULL-mechanism connection open")
        # (A reset may come before even the signature: got may be empty.)
        self.assertTrue(b"READY" not in got and len(got) < 64,
                        "Alpha went past the greeting with a NULL peer: %r" % bytes(got))
        self.assertIsNone(self.stored_at(herd, "Alpha", cid))
        self.assertCleanExit(herd, "Alpha")

    def test_an_impostor_with_a_key_not_in_the_topology_is_refused(self):
        """The impostor calls itself Gamma (a real neighbour of Beta, running
        too) but holds a key pair of its own. It takes a report while Beta is
        down, so the update is queued (and in its table) before its first
        handshake with Beta; Beta comes back and refuses it."""
        names = ["Alpha", "Beta", "Gamma"]
        herd, keys, kdir = self.keyed_herd(names, [("Alpha", "Beta"), ("Beta", "Gamma")])
        herd.start_all()
        for a, b in (("Alpha", "Beta"), ("Beta", "Alpha"), ("Beta", "Gamma"), ("Gamma", "Beta")):
            self.wait_link_up(herd, a, b)
        side = os.path.join(herd.tmpdir, "impostor-keys")
        fake_key = keygen(side, "Gamma")["Gamma"]
        self.assertNotIn(fake_key, keys.values())
        imp = self.impostor("Gamma", herd, "Beta", fake_key,
                            key_files(side, "Gamma"),
                            start=False)
        self.assertEqual(herd.stop("Beta"), 0)
        imp.start("Gamma")
        cid = uid("impostor")
        reply = imp.send("Gamma", iamat_line(cid) + b"\n", REQ_TIMEOUT)
        self.assertTrue(AT_RE_B.match(reply[:-1]), reply)
        self.assertEqual(self.stored_at(imp, "Gamma", cid), reply[:-1])

        mark = herd.log_size("Beta")
        herd.start("Beta")
        self.wait_lines(herd, "Beta", REFUSED_RE, 1, mark)
        # The real links come back and the rejoin exchange runs on them.
        for nb in ("Alpha", "Gamma"):
            self.wait_lines(herd, "Beta", r"^\S+ link to %s up$" % nb, 1, mark)
            self.wait_lines(herd, "Beta", r"^\S+ repair: exchange with %s done" % nb, 1, mark)
        marker = uid("marker")
        self.wait_seen(herd, names, marker, self.iamat_at(herd, "Gamma", marker))
        self.assertUnknown(herd, names, cid, "the impostor's update reached the herd")
        # Beta logs the real Gamma's HELLO once their link is back; the
        # marker being stored does not say that line is written yet.
        self.wait_lines(herd, "Beta", r"rejoin: HELLO from Gamma ", 1, mark)

        self.assertNotRegex(imp.log_text("Gamma"), r"(?m)link to Beta up$",
                            "the impostor's link came up")
        # The real Gamma holds no client yet; the impostor holds one. Every
        # HELLO that Beta heard under Gamma's name is the real one's.
        beta_log = herd.log_since("Beta", mark)
        hellos = re.findall(r"rejoin: HELLO from Gamma \(incarnation \w+, (\d+) clients\)",
                            beta_log)
        self.assertTrue(hellos and set(hellos) == {"0"}, "HELLOs from Gamma: %r" % hellos)
        self.assertNotRegex(beta_log, r"(?m)link to (Alpha|Gamma) down$",
                            "the impostor disturbed a real link")
        self.assertNotIn("dropped", beta_log)
        self.assertCleanExit(imp, "Gamma")
        self.assertCleanExit(herd, *names)

    def test_an_impostor_with_a_stolen_key_claiming_another_name_is_dropped(self):
        """The impostor holds Gamma's real key pair but calls itself Alpha
        (whose server is not running, so no real link is in the way)."""
        names = ["Alpha", "Beta", "Gamma"]
        herd, keys, kdir = self.keyed_herd(names, [("Alpha", "Beta"), ("Beta", "Gamma")])
        herd.start_all(["Beta", "Gamma"])
        self.wait_link_up(herd, "Beta", "Gamma")
        self.wait_link_up(herd, "Gamma", "Beta")
        mark = herd.log_size("Beta")
        claims = (r"(?m)^\S+ peer: dropped a message that claims to be from Alpha "
                  r"but comes with the key of Gamma$")

        imp = self.impostor("Alpha", herd, "Beta", keys["Gamma"],
                            key_files(kdir, "Gamma"))
        # The handshake passes (the key is a neighbour's): the impostor's
        # link comes up and its HELLO is the first message dropped.
        self.wait_link_up(imp, "Alpha", "Beta")
        n = self.wait_lines(herd, "Beta", claims, 1, mark)
        self.assertEqual(n, 1, "a link-up sends one HELLO")

        cid = uid("thief")
        reply = imp.send("Alpha", iamat_line(cid) + b"\n", REQ_TIMEOUT)
        self.assertTrue(AT_RE_B.match(reply[:-1]), reply)
        # Its UPDATES is the second message, dropped the same way.
        self.wait_lines(herd, "Beta", claims, 2, mark)
        self.assertUnknown(herd, ["Beta", "Gamma"], cid, "the thief's update was stored")

        beta_log = herd.log_since("Beta", mark)
        self.assertNotIn("rejoin: HELLO from Alpha", beta_log)
        self.assertNotRegex(beta_log, r"(?m)link to Gamma down$")
        # Beta and Gamma still flood to each other.
        marker = uid("marker")
        self.wait_seen(herd, ["Beta", "Gamma"], marker, self.iamat_at(herd, "Gamma", marker))
        self.assertCleanExit(imp, "Alpha")
        self.assertCleanExit(herd, "Beta", "Gamma")

    def test_an_impostor_with_a_stolen_key_does_not_cut_off_the_neighbour_it_names(self):
        """As above, but the real Alpha is running and linked to Beta. The
        impostor gets through the handshake; whether Beta then drops its
        messages (and logs it) or ZeroMQ discards them because the name is
        taken, the real Alpha's link must not suffer: a report at Alpha made
        after the impostor's arrives at Beta and Gamma promptly, and the
        impostor's never does."""
        names = ["Alpha", "Beta", "Gamma"]
        herd, keys, kdir = self.keyed_herd(names, [("Alpha", "Beta"), ("Beta", "Gamma")])
        herd.start_all()
        for a, b in (("Alpha", "Beta"), ("Beta", "Alpha"), ("Beta", "Gamma"), ("Gamma", "Beta")):
            self.wait_link_up(herd, a, b)
        # The real Alpha's HELLO must be in Beta's log before the mark: the
        # links being up says nothing of whether it has come, or is written.
        self.wait_lines(herd, "Beta", r"rejoin: HELLO from Alpha \(incarnation ", 1)
        marks = {n: herd.log_size(n) for n in names}

        imp = self.impostor("Alpha", herd, "Beta", keys["Gamma"],
                            key_files(kdir, "Gamma"))
        self.wait_link_up(imp, "Alpha", "Beta")
        fake = uid("thief")
        reply = imp.send("Alpha", iamat_line(fake) + b"\n", REQ_TIMEOUT)
        self.assertTrue(AT_RE_B.match(reply[:-1]), reply)

        # A flooded update normally arrives in milliseconds; 2 s is well
        # under the 3 s heartbeat timeout that would hide a cut link.
        cid = uid("real-alpha")
        at = self.iamat_at(herd, "Alpha", cid)
        self.wait_seen(herd, names, cid, at, timeout=2)
        self.assertUnknown(herd, names, fake, "the thief's update was stored")
        self.assertNotRegex(herd.log_since("Alpha", marks["Alpha"]), r"(?m)link to Beta down$",
                            "the impostor cut the real Alpha's link to Beta")
        # Every HELLO Beta took under Alpha's name came from the real Alpha
        # (the incarnation it announced before the impostor came).
        hello = r"rejoin: HELLO from Alpha \(incarnation (\w+),"
        real = set(re.findall(hello, herd.log_text("Beta")[:marks["Beta"]]))
        beta_log = herd.log_since("Beta", marks["Beta"])
        self.assertEqual(len(real), 1, real)
        self.assertLessEqual(set(re.findall(hello, beta_log)), real,
                             "Beta took the impostor's HELLO")
        self.assertNotIn("dropped a message from", beta_log)
        self.assertCleanExit(imp, "Alpha")
        self.assertCleanExit(herd, *names)


if __name__ == "__main__":
    unittest.main()
