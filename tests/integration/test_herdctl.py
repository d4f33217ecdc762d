"""deploy/herdctl, the operator's tool, run as an operator would.

Each test writes a private topology on free ports in a temporary folder and
runs `herdctl --config FILE ...` with HERD_SERVER_BIN set to the server
under test (so herdctl neither checks packages nor builds) and HERD_RUN_DIR
set to a private folder. herdctl keeps RUN/ID/NAME.pid, ID named after the
topology file's real path, so two herds never touch each other; the tests
check that with two topologies that name a server alike. Cleanup runs
`down` and then kills whatever is left.

Waits are conditions with deadlines (herdctl's own waits included); no
fixed sleeps.

Run: cd tests/integration && HERD_SERVER=.../herd-server python3 -m unittest -v test_herdctl
"""

import atexit
import contextlib
import glob
import hashlib
import json
import shutil
import stat
import os
import re
import select
import signal
import subprocess
import time
import unittest
import uuid

from herdtest import AT_RE, HerdTestCase, free_ports, now_text, server_binary, wait_until

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
HERDCTL = os.path.join(ROOT, "deploy", "herdctl")
POS = "+34.068930-118.445127"
COMMAND_TIMEOUT = 60  # one herdctl command; its own waits are shorter

_STARTED = set()  # run folders this module may have filled


def run_dir(run_base, config):
    """herdctl's folder for the topology file `config` (README: herdctl)."""
    digest = hashlib.sha256(os.path.realpath(config).encode()).hexdigest()
    return os.path.join(run_base, digest[:16])


def _kill_leftovers(folder):
    """SIGKILL every server herdctl recorded in `folder` that still runs.
    Checks the process really is a herd-server first."""
    for pid_file in glob.glob(os.path.join(folder, "*.pid")):
        with contextlib.suppress(OSError, ValueError):
            with open(pid_file) as f:
                pid = int(f.read().strip())
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                args = f.read().split(b"\0")
            if any(b"herd-server" in a for a in args):
                os.kill(pid, signal.SIGKILL)


@atexit.register
def _last_resort():
    for folder in list(_STARTED):
        _kill_leftovers(folder)


def gone(pid):
    """True once `pid` has exited (a zombie has exited too)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return True


class HerdctlCase(HerdTestCase):
    """A private topology of three servers: T1 and T2 linked, both with an
    admin port; T3 alone and without one (status falls back to TCP)."""

    def setUp(self):
        tag = uuid.uuid4().hex[:8]
        self.t1, self.t2, self.t3 = ("T%dx%s" % (i, tag) for i in (1, 2, 3))
        self.names = [self.t1, self.t2, self.t3]
        self.herd = self.make_herd(servers=self.names, links=[(self.t1, self.t2)])
        used = {p for conf in self.herd.topology["servers"].values() for p in conf.values()
                if isinstance(p, int)}
        admin = [p for p in free_ports(4) if p not in used][:2]
        self.assertEqual(len(admin), 2)
        for name, port in zip((self.t1, self.t2), admin):
            self.herd.topology["servers"][name]["admin_port"] = port
        self.herd.write_topology()
        self.config = self.herd.topology_path
        self.run_base = os.path.join(self.herd.tmpdir, "run")
        self.run_dir = run_dir(self.run_base, self.config)
        _STARTED.add(self.run_dir)
        self.addCleanup(self.cleanup_servers, self.config, self.run_dir)
        self.env = dict(os.environ, HERD_SERVER_BIN=server_binary(), HERD_RUN_DIR=self.run_base)
        for key in ("HERD_PLACES_URL", "HERD_TEST_PLACES_KEY"):
            self.env.pop(key, None)

    def cleanup_servers(self, config, folder):
        with contextlib.suppress(Exception):
            self.herdctl("down", check=None, config=config)
        _kill_leftovers(folder)
        _STARTED.discard(folder)

    def herdctl(self, *args, check=0, config=None, herdctl=HERDCTL, env=None):
        """Runs herdctl --config FILE ARGS; checks its exit status unless
        check is None. Returns the CompletedProcess (text)."""
        r = subprocess.run([herdctl, "--config", config or self.config] + list(args), env=env or self.env,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=COMMAND_TIMEOUT, cwd=ROOT)
        if check is not None:
            self.assertEqual(r.returncode, check,
                             "herdctl %s: status %d\nstdout:\n%s\nstderr:\n%s"
                             % (" ".join(args), r.returncode, r.stdout, r.stderr))
        return r

    def pid(self, name, folder=None):
        with open(os.path.join(folder or self.run_dir, name + ".pid")) as f:
            return int(f.read())

    def status(self, *names):
        """(exit status, {name: row dict}) of `herdctl status`."""
        r = self.herdctl("status", *names, check=None)
        self.assertIn(r.returncode, (0, 3), r.stderr)
        lines = r.stdout.splitlines()
        header = lines[0].split()
        self.assertEqual(header, ["SERVER", "STATE", "PID", "READY", "ANSWERS", "CLIENTS",
                                  "CONNS", "LINKS"])
        rows = {}
        for line in lines[1:]:
            fields = line.split(None, len(header) - 1)
            rows[fields[0]] = dict(zip(header, fields))
        return r.returncode, rows

    def send(self, name, command, check=0):
        return self.herdctl("send", name, command, check=check)

    def iamat(self, name, cid):
        out = self.send(name, "IAMAT %s %s %s" % (cid, POS, now_text().decode())).stdout
        self.assertTrue(out.endswith("\n") and out.count("\n") == 1, repr(out))
        m = AT_RE.match(out[:-1])
        self.assertTrue(m, out)
        self.assertEqual((m.group(1), m.group(3)), (name, cid))
        return out[:-1]

    def first_line(self, name, cid):
        return self.send(name, "WHATSAT %s 10 5" % cid).stdout.split("\n", 1)[0]

    def wait_seen(self, name, cid, at, timeout=10):
        wait_until(lambda: self.first_line(name, cid) == at, timeout,
                   msg="%s never answered %r for %s" % (name, at, cid))


class HerdctlOperations(HerdctlCase):

    def test_up_status_send_reload_restart_down(self):
        t1, t2, t3 = self.names
        r = self.herdctl("up", t1, t2, t3)
        for name in self.names:
            self.assertRegex(r.stdout, r"herdctl: started %s \(pid %d\)" % (name, self.pid(name)))

        # status: ready from /healthz, links from /metrics, "-" without an admin port.
        def all_well():
            code, rows = self.status(t1, t2, t3)
            return rows if code == 0 else None
        rows = wait_until(all_well, 10, msg="status never all ready")
        for name in self.names:
            self.assertEqual(rows[name]["STATE"], "running")
            self.assertEqual(rows[name]["PID"], str(self.pid(name)))
            self.assertEqual(rows[name]["ANSWERS"], "yes")
        self.assertEqual([rows[n]["READY"] for n in self.names], ["yes", "yes", "-"])
        self.assertEqual([rows[n]["CLIENTS"] for n in self.names], ["0", "0", "-"])
        self.assertEqual([rows[n]["CONNS"] for n in self.names], ["0", "0", "-"])
        self.assertEqual([rows[n]["LINKS"] for n in self.names],
                         ["%s:up" % t2, "%s:up" % t1, "-"])

        # send: one command, the whole reply, byte for byte.
        cid = "herdctl-" + uuid.uuid4().hex[:8]
        at = self.iamat(t1, cid)
        self.wait_seen(t2, cid, at)
        reply = self.send(t2, "WHATSAT %s 10 5" % cid).stdout
        self.assertTrue(reply.startswith(at + "\n{") and reply.endswith("}\n\n"), repr(reply))
        self.assertEqual(self.send(t3, "WHATSAT %s 10 5" % cid).stdout,
                         "? WHATSAT %s 10 5\n" % cid)
        self.assertEqual(self.send(t1, "HELLO  there").stdout, "? HELLO  there\n")
        _, rows = self.status(t1, t2)
        self.assertEqual([rows[n]["CLIENTS"] for n in (t1, t2)], ["1", "1"])

        # reload: a new link T2 - T3; T3 gets the table by the rejoin exchange.
        self.herd.topology["links"].append([t2, t3])
        self.herd.write_topology()
        r = self.herdctl("reload")
        self.assertIn("herdctl: %s: topology applied (3 servers, 2 links)\n" % t1, r.stdout)
        self.assertIn("herdctl: %s: topology applied (3 servers, 2 links), link to %s added\n"
                      % (t2, t3), r.stdout)
        # T3 has no admin port: signalled, and herdctl says it cannot tell more.
        self.assertIn("herdctl: %s: signalled; it has no admin_port" % t3, r.stdout)
        self.herd.wait_log(t3, "reload: topology applied (3 servers, 2 links), link to %s added" % t2, 10)
        self.wait_seen(t3, cid, at)
        wait_until(lambda: self.status(t2)[1][t2]["LINKS"] == "%s:up %s:up" % tuple(sorted((t1, t3))),
                   10, msg="status never showed both links of %s up" % t2)

        # An invalid topology is refused before any signal.
        good = json.loads(json.dumps(self.herd.topology))
        sizes = {n: len(self.herd.log_bytes(n)) for n in self.names}
        self.herd.topology["links"].append([t1, "Ghost"])
        self.herd.write_topology()
        r = self.herdctl("reload", check=2)
        self.assertIn('names unknown server "Ghost"', r.stderr)
        self.assertIn("reload refused", r.stderr)
        self.assertNotIn("SIGHUP", "".join(self.herd.log_text(n)[sizes[n]:] for n in self.names))
        self.herd.topology = good
        self.herd.write_topology()

        # restart: a new process that gets its table back from its neighbour.
        old = self.pid(t1)
        r = self.herdctl("restart", t1)
        new = self.pid(t1)
        self.assertNotEqual(old, new)
        self.assertIn("herdctl: stopped %s (pid %d)\n" % (t1, old), r.stdout)
        self.assertIn("herdctl: started %s (pid %d)\n" % (t1, new), r.stdout)
        self.wait_seen(t1, cid, at)

        # logs --no-follow prints the log as it is.
        r = self.herdctl("logs", "--no-follow", t1)
        self.assertTrue(self.herd.log_text(t1).startswith(r.stdout))
        self.assertIn("server %s starting" % t1, r.stdout)
        self.assertIn(" conn ", r.stdout)

        # down: every one stopped, pid files gone.
        pids = {n: self.pid(n) for n in self.names}
        r = self.herdctl("down", t1, t2, t3)
        for name in self.names:
            self.assertIn("herdctl: stopped %s (pid %d)\n" % (name, pids[name]), r.stdout)
            self.assertFalse(os.path.exists(os.path.join(self.run_dir, name + ".pid")))
            self.assertTrue(gone(pids[name]), name)

    def test_logs_follows_the_log(self):
        t1 = self.t1
        self.herdctl("up", t1)
        follower = subprocess.Popen([HERDCTL, "--config", self.config, "logs", t1], env=self.env,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL)
        self.addCleanup(self._stop, follower)
        shown = bytearray()

        def read_until(text):
            deadline = time.monotonic() + 10
            while text.encode() not in shown:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([follower.stdout], [], [], left)[0]:
                    self.fail("herdctl logs never showed %r; it showed:\n%s"
                              % (text, shown.decode("latin-1")))
                data = os.read(follower.stdout.fileno(), 65536)
                if not data:
                    self.fail("herdctl logs ended (status %s) before showing %r; it showed:\n%s"
                              % (follower.wait(), text, shown.decode("latin-1")))
                shown.extend(data)
        read_until("server %s starting" % t1)
        cid = "follow-" + uuid.uuid4().hex[:8]
        self.iamat(t1, cid)
        read_until('in "IAMAT %s ' % cid)

    @staticmethod
    def _stop(proc):
        # herdctl exec'd tail, so this pid is tail itself.
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        proc.wait(10)
        proc.stdout.close()


class HerdctlMistakes(HerdctlCase):

    def test_unknown_server_is_a_usage_error(self):
        for args in (("up", "Nope"), ("status", "Nope"), ("reload", "Nope"), ("restart", "Nope"),
                     ("logs", "Nope"), ("send", "Nope", "WHATSAT a 1 1")):
            r = self.herdctl(*args, check=2)
            self.assertIn("unknown server 'Nope' (the topology %s has: %s)"
                          % (self.config, " ".join(self.names)), r.stderr, args)

    def test_usage_errors(self):
        for args in (("send", self.t1), ("send", self.t1, "a\nb"), ("logs",),
                     ("logs", self.t1, self.t2), ("restart",), ("reload", "--timeout", "x"),
                     ("frobnicate",), ("status", "--bogus"), ("send", self.t1, "")):
            r = self.herdctl(*args, check=2)
            # One line that says what is wrong and where help is, no usage dump.
            self.assertEqual(len(r.stderr.splitlines()), 1, (args, r.stderr))
            self.assertIn("see herdctl --help", r.stderr, args)
        self.assertIn("unknown command 'frobnicate'", self.herdctl("frobnicate", check=2).stderr)
        self.assertIn("send: the command is empty", self.herdctl("send", self.t1, "", check=2).stderr)

    def test_server_not_running(self):
        t1 = self.t1
        r = self.send(t1, "WHATSAT nobody 10 5", check=1)
        self.assertIn("%s is not running (start it with 'herdctl up %s')" % (t1, t1), r.stderr)
        self.assertEqual(r.stdout, "")
        r = self.herdctl("reload", t1, check=1)
        self.assertIn("reload: %s is not running" % t1, r.stderr)
        r = self.herdctl("reload")
        self.assertIn("nothing to reload", r.stdout)
        r = self.herdctl("logs", "--no-follow", t1, check=1)
        self.assertIn("%s has no log yet" % t1, r.stderr)
        code, rows = self.status()
        self.assertEqual(code, 3)
        for name in self.names:
            self.assertEqual((rows[name]["STATE"], rows[name]["PID"], rows[name]["ANSWERS"]),
                             ("stopped", "-", "no"))
        r = self.herdctl("down", t1)
        self.assertEqual(r.stdout, "herdctl: %s: not running\n" % t1)

    def test_invalid_topology_is_refused_with_the_reason(self):
        with open(self.config, "w") as f:
            f.write('{"servers": {\n  "x": 1,\n')
        r = self.herdctl("reload", check=2)
        self.assertRegex(r.stderr, re.escape(self.config) + r":\d+:\d+: ")
        self.assertIn("reload refused", r.stderr)
        r = self.herdctl("restart", self.t1, check=2)
        self.assertIn("restart refused", r.stderr)


# A valid CURVE public key (Z85, 40 characters): the libzmq test vector.
SOME_KEY = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"


class HerdctlHerds(HerdctlCase):
    """Issue 14: one validator (the server's), herds kept apart, honest
    reload outcomes, and the small things."""

    def other_topology(self, name):
        """A second topology, in another folder, with one server `name`."""
        folder = os.path.join(self.herd.tmpdir, "other")
        os.mkdir(folder)
        used = {p for conf in self.herd.topology["servers"].values() for p in conf.values()
                if isinstance(p, int)}
        ports = [p for p in free_ports(6) if p not in used][:3]
        path = os.path.join(folder, "topology.json")
        with open(path, "w") as f:
            json.dump({"servers": {name: {"host": "127.0.0.1", "client_port": ports[0],
                                          "peer_port": ports[1], "admin_port": ports[2]}},
                       "links": [], "state_dir": None}, f)
        other_dir = run_dir(self.run_base, path)
        _STARTED.add(other_dir)
        self.addCleanup(self.cleanup_servers, path, other_dir)
        return path, other_dir

    def test_two_topologies_with_a_server_named_alike(self):
        t1 = self.t1
        other, other_dir = self.other_topology(t1)
        self.assertNotEqual(other_dir, self.run_dir)
        r = self.herdctl("up", t1)
        mine = self.pid(t1)
        self.assertIn("started %s (pid %d)" % (t1, mine), r.stdout)
        # The other herd's T1 is not "already running": it is another server.
        r = self.herdctl("up", config=other)
        theirs = self.pid(t1, other_dir)
        self.assertIn("started %s (pid %d)" % (t1, theirs), r.stdout)
        self.assertNotEqual(mine, theirs)
        code, rows = self.status(t1)
        self.assertEqual(rows[t1]["PID"], str(mine))
        # down with the other file and no names stops only its own servers.
        r = self.herdctl("down", config=other)
        self.assertEqual(r.stdout, "herdctl: stopped %s (pid %d)\n" % (t1, theirs))
        wait_until(lambda: gone(theirs), 10)
        self.assertFalse(gone(mine))
        self.assertEqual(self.status(t1)[1][t1]["STATE"], "running")
        r = self.herdctl("down")
        self.assertIn("stopped %s (pid %d)" % (t1, mine), r.stdout)
        self.assertTrue(gone(mine))

    def test_half_keyed_topology_is_refused_before_anything_is_signalled(self):
        t1, t2 = self.t1, self.t2
        self.herdctl("up", t1, t2)
        pids = {n: self.pid(n) for n in (t1, t2)}
        sizes = {n: len(self.herd.log_bytes(n)) for n in (t1, t2)}
        self.herd.topology["servers"][t1]["public_key"] = SOME_KEY
        self.herd.write_topology()
        # The server's own check, as a start would do it.
        r = subprocess.run([server_binary(), "--check-config", "--config", self.config],
                           capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
        self.assertEqual(r.returncode, 2, r)
        reason = r.stderr.strip()
        self.assertTrue(reason.startswith("herd-server: ") and "public_key" in reason, reason)
        self.assertEqual(len(r.stderr.splitlines()), 1, r.stderr)
        # herdctl gives the same reason and signals, stops nothing.
        for args in (("reload",), ("restart", t1)):
            r = self.herdctl(*args, check=2)
            self.assertIn(reason.replace("herd-server: ", "herdctl: "), r.stderr, args)
            self.assertIn("%s refused" % args[0], r.stderr)
        for name in (t1, t2):
            self.assertEqual(self.pid(name), pids[name])
            self.assertFalse(gone(pids[name]))
            self.assertNotIn("SIGHUP", self.herd.log_text(name)[sizes[name]:])

    def test_check_config_json(self):
        r = subprocess.run([server_binary(), "--check-config", "--json", "--config", self.config, self.t1],
                           capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
        self.assertEqual(r.returncode, 0, r.stderr)
        doc = json.loads(r.stdout)
        self.assertEqual(doc["topology"], os.path.realpath(self.config))
        by_name = {s["name"]: s for s in doc["servers"]}
        self.assertEqual(list(by_name), self.names)
        conf = self.herd.topology["servers"][self.t1]
        self.assertEqual((by_name[self.t1]["client_port"], by_name[self.t1]["admin_port"],
                          by_name[self.t1]["admin_host"], by_name[self.t1]["public_key"]),
                         (conf["client_port"], conf["admin_port"], "127.0.0.1", False))
        self.assertIsNone(by_name[self.t3]["admin_port"])
        self.assertEqual(by_name[self.t1]["log_file"],
                         os.path.join(os.path.realpath(self.herd.tmpdir), "logs", self.t1 + ".log"))
        r = subprocess.run([server_binary(), "--check-config", "--config", self.config, "Nope"],
                           capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
        self.assertEqual((r.returncode, r.stderr), (2, 'herd-server: %s has no server named "Nope"\n'
                                                       % self.config))
        r = subprocess.run([server_binary(), "--config"], capture_output=True, text=True,
                           timeout=COMMAND_TIMEOUT)
        self.assertEqual(r.returncode, 2)
        self.assertIn("option --config needs a value", r.stderr)

    def test_reload_of_log_dir_needs_a_restart_and_logs_follows_the_server(self):
        t1 = self.t1
        self.herdctl("up", t1)
        running_log = self.herd.log_text(t1)
        self.herd.topology["log_dir"] = "logs-new"
        self.herd.write_topology()
        r = self.herdctl("reload", t1, check=4)
        self.assertIn("herdctl: %s: topology applied" % t1, r.stdout)
        self.assertIn("herdctl: %s: needs a restart for: log_dir" % t1, r.stderr)
        # logs reads the folder the running server writes to, not the file's.
        # herdctl took the outcome from the admin endpoint: the log line
        # may reach the file a moment later.
        wait_until(lambda: "needs a restart for: log_dir" in self.herd.log_text(
            t1, log_dir=os.path.join(self.herd.tmpdir, "logs")), 10,
            msg="no 'needs a restart for: log_dir' in the running server's log")
        r = self.herdctl("logs", "--no-follow", t1)
        self.assertTrue(r.stdout.startswith(running_log), r.stdout[:300])
        self.assertIn("needs a restart for: log_dir", r.stdout)
        r = self.herdctl("logs", "--no-follow", "-n", "3", t1)
        self.assertEqual(len(r.stdout.splitlines()), 3, r.stdout)
        # The last three lines when it ran (the log may have grown since).
        self.assertIn("\n" + r.stdout, self.herdctl("logs", "--no-follow", t1).stdout)
        self.assertNotIn("server %s starting" % t1, r.stdout)

    def test_keys_edits_only_the_keys_in_place(self):
        # The topology is a symlink to a hand-formatted file of mode 0640.
        real = os.path.join(self.herd.tmpdir, "real-topology.json")
        with open(self.config) as f:
            doc = json.load(f)
        names = list(doc["servers"])
        text = "{\n  \"servers\": {\n" + ",\n".join(
            "    %s:   %s" % (json.dumps(n), json.dumps(doc["servers"][n])) for n in names) + "\n  },\n"
        text += "  \"links\": %s,\n  \"keys_dir\": \"k\"\n}\n" % json.dumps(doc["links"])
        with open(real, "w") as f:
            f.write(text)
        os.chmod(real, 0o640)
        os.unlink(self.config)
        os.symlink(real, self.config)
        r = self.herdctl("keys", self.t1)
        self.assertTrue(os.path.islink(self.config))
        self.assertEqual(stat.S_IMODE(os.stat(real).st_mode), 0o640)
        with open(real) as f:
            after = f.read()
        with open(os.path.join(self.herd.tmpdir, "k", self.t1 + ".key")) as f:
            key = re.search(r'public-key = "(.{40})"', f.read()).group(1)
        self.assertEqual(after, text.replace('"%s":   {' % self.t1,
                                             '"%s":   {"public_key": %s, ' % (self.t1, json.dumps(key))))
        # Half-keyed now: the server's loader says so, and herdctl passes it on.
        self.assertIn("the topology is not yet valid", r.stderr)

    def test_curve_roll_out_keeps_the_table(self):
        """The README's roll-out: `herdctl keys` for every server, then restart
        them all. With state on disk (the default), every client reported
        before is still known afterwards, at every server, over CURVE links."""
        self.herdctl("up")
        cids = {}
        for name in self.names:
            cid = "rollout-%s" % uuid.uuid4().hex[:10]
            cids[cid] = self.iamat(name, cid)
        for cid, at in cids.items():
            if at.split()[1] != self.t3:  # T3 has no neighbour: only it knows its own
                for name in (self.t1, self.t2):
                    self.wait_seen(name, cid, at)
        self.herdctl("keys")
        # All at once: in this roll-out plain and CURVE links do not meet.
        self.herdctl("down")
        self.herdctl("up")
        for cid, at in cids.items():
            holders = (self.t3,) if at.split()[1] == self.t3 else (self.t1, self.t2)
            for name in holders:
                self.assertEqual(self.first_line(name, cid), at,
                                 "%s lost %s across the CURVE roll-out" % (name, cid))
        with open(self.config) as f:
            doc = json.load(f)
        self.assertTrue(all("public_key" in conf for conf in doc["servers"].values()))
        # The links are authenticated now, and a new report still floods.
        cid = "rollout-after-%s" % uuid.uuid4().hex[:10]
        self.wait_seen(self.t2, cid, self.iamat(self.t1, cid))

    def test_installed_layout(self):
        # /usr/bin/herdctl, helpers in /usr/lib/herd, binaries beside herdctl,
        # no source tree: it neither builds nor looks for build/.
        prefix = os.path.join(self.herd.tmpdir, "usr")
        os.makedirs(os.path.join(prefix, "bin"))
        shutil.copytree(os.path.join(ROOT, "deploy", "lib"), os.path.join(prefix, "lib", "herd"))
        herdctl = os.path.join(prefix, "bin", "herdctl")
        shutil.copy2(HERDCTL, herdctl)
        os.symlink(server_binary(), os.path.join(prefix, "bin", "herd-server"))
        env = dict(self.env)
        del env["HERD_SERVER_BIN"]
        r = self.herdctl("--help", herdctl=herdctl, env=env)
        self.assertIn("/etc/herd/topology.json when installed", r.stdout)
        r = self.herdctl("build", herdctl=herdctl, env=env, check=1)
        self.assertIn("works in a source tree only", r.stderr)
        r = self.herdctl("up", self.t3, herdctl=herdctl, env=env)
        self.assertIn("started %s" % self.t3, r.stdout)
        r = self.herdctl("status", self.t3, herdctl=herdctl, env=env)
        self.assertRegex(r.stdout, r"%s\s+running\s+%d" % (self.t3, self.pid(self.t3)))
        # A server started by someone else (systemd, say) is running; its pid
        # comes from its /config (test_herdctl2 checks that part).
        self.herd.start(self.t2)
        r = self.herdctl("status", self.t2, herdctl=herdctl, env=env, check=None)
        self.assertRegex(r.stdout, r"%s\s+running\s+(\?|\d+)\s" % self.t2)
        self.assertIn("was not started by herdctl", r.stdout)
        self.herdctl("down", self.t3, herdctl=herdctl, env=env)
        self.herd.stop(self.t2)


if __name__ == "__main__":
    unittest.main()
