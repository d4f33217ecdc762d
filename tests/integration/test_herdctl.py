"""deploy/herdctl, the operator's tool, run as an operator would.

Each test writes a private topology on free ports in a temporary folder and
runs `herdctl --config FILE ...` with HERD_SERVER_BIN set to the server
under test (so herdctl neither checks packages nor builds). herdctl keeps
run/NAME.pid at the repo root, keyed by server name, so the servers here
have names nobody else uses ("T1x" and a random tag): a developer's own
herd in the same tree is never touched. Every command names its servers
explicitly (a bare `herdctl down` would stop every herd that herdctl
started), and cleanup runs `down` for them and then kills whatever is left
and removes their run/ files.

Waits are conditions with deadlines (herdctl's own waits included); no
fixed sleeps.

Run: cd tests/integration && HERD_SERVER=.../herd-server python3 -m unittest -v test_herdctl
"""

import atexit
import contextlib
import json
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
RUN_DIR = os.path.join(ROOT, "run")
POS = "+34.068930-118.445127"
COMMAND_TIMEOUT = 60  # one herdctl command; its own waits are shorter

_STARTED = set()  # names whose run/ files this module may have made


def _kill_leftovers(name):
    """SIGKILL the server herdctl recorded for `name` if it still runs, and
    remove its run/ files. Checks the process really is that server."""
    pid_file = os.path.join(RUN_DIR, name + ".pid")
    with contextlib.suppress(OSError, ValueError):
        with open(pid_file) as f:
            pid = int(f.read().strip())
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            args = f.read().split(b"\0")
        if name.encode() in args and any(b"herd-server" in a for a in args):
            os.kill(pid, signal.SIGKILL)
    for suffix in (".pid", ".out", ".err"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(RUN_DIR, name + suffix))


@atexit.register
def _last_resort():
    for name in list(_STARTED):
        _kill_leftovers(name)


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
        _STARTED.update(self.names)
        self.addCleanup(self.cleanup_servers)
        self.env = dict(os.environ, HERD_SERVER_BIN=server_binary())
        for key in ("HERD_PLACES_URL", "HERD_TEST_PLACES_KEY"):
            self.env.pop(key, None)

    def cleanup_servers(self):
        with contextlib.suppress(Exception):
            self.herdctl("down", *self.names, check=None)
        for name in self.names:
            _kill_leftovers(name)
            _STARTED.discard(name)

    def herdctl(self, *args, check=0):
        """Runs herdctl --config FILE ARGS; checks its exit status unless
        check is None. Returns the CompletedProcess (text)."""
        r = subprocess.run([HERDCTL, "--config", self.config] + list(args), env=self.env,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=COMMAND_TIMEOUT, cwd=ROOT)
        if check is not None:
            self.assertEqual(r.returncode, check,
                             "herdctl %s: status %d\nstdout:\n%s\nstderr:\n%s"
                             % (" ".join(args), r.returncode, r.stdout, r.stderr))
        return r

    def pid(self, name):
        with open(os.path.join(RUN_DIR, name + ".pid")) as f:
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
        self.assertIn("herdctl: %s: topology applied (3 servers, 2 links)\n"
                      "    link to %s added by the topology\n" % (t2, t3), r.stdout)
        self.assertIn("herdctl: %s: topology applied (3 servers, 2 links)\n"
                      "    link to %s added by the topology\n" % (t3, t2), r.stdout)
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

        # A server dropped from the file is not signalled, and is named.
        del self.herd.topology["servers"][t3]
        self.herd.topology["links"] = [[t1, t2]]
        self.herd.write_topology()
        r = self.herdctl("reload")
        self.assertIn("%s (pid %d) was started with %s but is no longer in it: not signalled"
                      % (t3, self.pid(t3), self.config), r.stderr)
        self.assertIn("herdctl: %s: topology applied (2 servers, 1 links)\n"
                      "    link to %s removed by the topology\n" % (t2, t3), r.stdout)
        self.assertNotIn("herdctl: %s:" % t3, r.stdout)

        # down: every one stopped, pid files gone.
        pids = {n: self.pid(n) for n in self.names}
        r = self.herdctl("down", t1, t2, t3)
        for name in self.names:
            self.assertIn("herdctl: stopped %s (pid %d)\n" % (name, pids[name]), r.stdout)
            self.assertFalse(os.path.exists(os.path.join(RUN_DIR, name + ".pid")))
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
                     ("frobnicate",), ("status", "--bogus")):
            r = self.herdctl(*args, check=2)
            self.assertTrue(r.stderr.strip(), args)

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


if __name__ == "__main__":
    unittest.main()
