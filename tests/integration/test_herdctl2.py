"""deploy/herdctl, second round (issue 20): servers it did not start, dead
against stopped, a real question through the client port, --json, an invalid
file, a rolling restart, reload's pending settings, --dry-run, renames and
log rotation.

Same set-up as test_herdctl (a private topology on free ports, HERD_RUN_DIR
private, HERD_SERVER_BIN the server under test). Servers "started by hand"
are started by the harness (herdtest), not by herdctl: herdctl finds them
through their admin endpoint (/config).

Run: cd tests/integration && HERD_SERVER=.../herd-server python3 -m unittest -v test_herdctl2
"""

import json
import os
import re
import signal
import subprocess
import uuid

from herdtest import free_ports, wait_until
from test_herdctl import HerdctlCase, gone


class HandStarted(HerdctlCase):
    """status, reload, restart and down on servers that herdctl did not start."""

    def test_status_reload_down_of_servers_started_by_hand(self):
        t1, t2 = self.t1, self.t2
        self.herd.start_all([t1, t2])
        pids = {n: self.herd.pid(n) for n in (t1, t2)}

        def ready():
            code, rows = self.status(t1, t2)
            return rows if code == 0 else None
        rows = wait_until(ready, 15, msg="status never all ready")
        for name in (t1, t2):
            self.assertEqual((rows[name]["STATE"], rows[name]["PID"], rows[name]["ANSWERS"]),
                             ("running", str(pids[name]), "yes"), rows[name])
        self.assertEqual(rows[t1]["LINKS"], "%s:up" % t2)

        # reload: herdctl finds and signals them; the outcome comes from /config.
        self.herd.topology["links"] = []
        self.herd.write_topology()
        r = self.herdctl("reload")
        self.assertIn("herdctl: %s: topology applied (3 servers, 0 links), link to %s removed\n"
                      % (t1, t2), r.stdout)
        self.assertIn("herdctl: %s: topology applied (3 servers, 0 links), link to %s removed\n"
                      % (t2, t1), r.stdout)

        # down, by name: the processes herdctl never started are gone.
        r = self.herdctl("down", t1)
        self.assertIn("herdctl: stopped %s (pid %d)\n" % (t1, pids[t1]), r.stdout)
        self.assertEqual(self.herd.wait_exit(t1), 0)
        # down without names: every running server of this topology.
        r = self.herdctl("down")
        self.assertIn("herdctl: stopped %s (pid %d)\n" % (t2, pids[t2]), r.stdout)
        self.assertEqual(self.herd.wait_exit(t2), 0)

    def test_restart_takes_over_a_server_started_by_hand(self):
        t1, t2 = self.t1, self.t2
        self.herd.start_all([t1, t2])  # T2: the neighbour T1 is ready with
        old = self.herd.pid(t1)
        r = self.herdctl("restart", t1)
        self.assertIn("%s was not started by herdctl (pid %d)" % (t1, old), r.stdout)
        self.assertEqual(self.herd.wait_exit(t1), 0)
        self.assertNotEqual(self.pid(t1), old)
        self.assertIn("herdctl: %s is ready\n" % t1, r.stdout)

    def seen_running(self, *names):
        """Waits until status finds every one of names running and answering
        (it learns each pid from /config then); returns the rows."""
        def ready():
            code, rows = self.status(*names)
            return rows if all(rows[n]["STATE"] == "running" and rows[n]["ANSWERS"] == "yes"
                               for n in names) else None
        rows = wait_until(ready, 15, msg="status never found %s running" % (names,))
        for name in names:
            self.assertEqual(rows[name]["PID"], str(self.herd.pid(name)), rows[name])
        return rows

    def test_notes_one_per_line(self):
        t1, t2 = self.t1, self.t2
        self.herd.start_all([t1, t2])
        self.seen_running(t1, t2)
        r = self.herdctl("status", t1, t2, check=None)
        notes = [line for line in r.stdout.splitlines() if line.startswith("herdctl: ")]
        self.assertEqual(notes, ["herdctl: %s: was not started by herdctl (pid from its /config)" % n
                                 for n in (t1, t2)], r.stdout)

    def test_killed_by_hand_is_dead(self):
        t1, t2 = self.t1, self.t2
        self.herd.start_all([t1, t2])
        self.seen_running(t1)
        self.herd.kill(t1)
        code, rows = self.status(t1)
        self.assertEqual(code, 3)
        self.assertEqual((rows[t1]["STATE"], rows[t1]["ANSWERS"]), ("dead", "no"), rows[t1])
        r = self.herdctl("status", t1, check=3)
        self.assertIn("herdctl: %s: dead: the process started by hand is gone without a clean stop" % t1,
                      r.stdout)
        # down forgets it: then it is stopped.
        r = self.herdctl("down", t1)
        self.assertIn("%s: not running (forgot the process started by hand" % t1, r.stdout)
        self.assertEqual(self.status(t1)[1][t1]["STATE"], "stopped")

    def test_sigterm_by_hand_is_stopped(self):
        t1, t2 = self.t1, self.t2
        self.herd.start_all([t1, t2])
        self.seen_running(t1)
        self.assertEqual(self.herd.stop(t1), 0)
        code, rows = self.status(t1)
        self.assertEqual(code, 3)
        self.assertEqual((rows[t1]["STATE"], rows[t1]["PID"]), ("stopped", "-"), rows[t1])

    def test_frozen_by_hand_runs_but_does_not_answer(self):
        t1, t2 = self.t1, self.t2
        self.herd.start_all([t1, t2])
        self.seen_running(t1)
        pid = self.herd.pid(t1)
        self.herd.pause(t1)
        try:
            code, rows = self.status(t1)
            self.assertEqual(code, 3)
            self.assertEqual((rows[t1]["STATE"], rows[t1]["PID"], rows[t1]["READY"], rows[t1]["ANSWERS"]),
                             ("running", str(pid), "?", "no"), rows[t1])
            # up does not start a second copy (it could not bind the ports).
            r = self.herdctl("up", t1)
            self.assertIn("herdctl: %s is running but not answering (pid %d" % (t1, pid), r.stdout)
            self.assertFalse(os.path.exists(os.path.join(self.run_dir, t1 + ".pid")))
        finally:
            self.herd.resume(t1)
        self.seen_running(t1)

    def test_a_name_renamed_away_that_exited_is_not_listed(self):
        """Needs PROTOCOL section 7's renames in the server (issue 20 item 3)."""
        t1, t2 = self.t1, self.t2
        self.herd.start_all([t1, t2])
        self.seen_running(t1, t2)
        topo = self.herd.topology
        topo["servers"]["N%s" % uuid.uuid4().hex[:8]] = topo["servers"].pop(t2)
        topo["links"] = []
        self.herd.write_topology()
        os.kill(self.herd.pid(t2), signal.SIGHUP)
        self.assertEqual(self.herd.wait_exit(t2), 0)
        r = self.herdctl("status", check=None)
        self.assertNotRegex(r.stdout, r"(?m)^%s\s" % t2)
        self.assertNotIn("exits at its next reload", r.stdout)


class StatusTruth(HerdctlCase):
    """What status says is what is: dead, frozen, moved, --json, bad file."""

    def test_dead_is_not_stopped(self):
        t1, t2 = self.t1, self.t2
        self.herdctl("up", t1)
        pid = self.pid(t1)
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: gone(pid), 10)
        code, rows = self.status(t1, t2)
        self.assertEqual(code, 3)
        self.assertEqual((rows[t1]["STATE"], rows[t1]["ANSWERS"]), ("dead", "no"))
        self.assertEqual((rows[t2]["STATE"], rows[t2]["PID"]), ("stopped", "-"))
        r = self.herdctl("status", check=3)
        self.assertIn("%s: dead: its pid file names a process that is gone" % t1, r.stdout)
        # down clears the pid file: then it is stopped.
        r = self.herdctl("down", t1)
        self.assertIn("%s: not running (removed the stale pid file" % t1, r.stdout)
        self.assertEqual(self.status(t1)[1][t1]["STATE"], "stopped")

    def test_a_frozen_server_does_not_answer(self):
        """A stopped process still accepts TCP connections (the kernel does);
        the WHATSAT probe needs the node itself."""
        t3 = self.t3
        self.herdctl("up", t3)
        pid = self.pid(t3)
        self.assertEqual(self.status(t3)[1][t3]["ANSWERS"], "yes")
        os.kill(pid, signal.SIGSTOP)
        try:
            code, rows = self.status(t3)
            self.assertEqual(code, 3)
            self.assertEqual((rows[t3]["STATE"], rows[t3]["ANSWERS"]), ("running", "no"))
        finally:
            os.kill(pid, signal.SIGCONT)
        self.assertEqual(self.status(t3)[1][t3]["ANSWERS"], "yes")

    def test_json(self):
        t1, t2, t3 = self.names
        self.herdctl("up", t1, t3)
        # T2 is down: 3, and T1 may still be starting (no neighbour yet).
        r = self.herdctl("status", "--json", check=3)
        doc = json.loads(r.stdout)
        by = {s["name"]: s for s in doc["servers"]}
        self.assertEqual(list(by), self.names)
        self.assertTrue(doc["valid"])
        self.assertEqual((by[t1]["state"], by[t1]["pid"], by[t1]["managed_by"], by[t1]["answers"]),
                         ("running", self.pid(t1), "herdctl", True))
        self.assertEqual(by[t1]["links"], {t2: False})
        self.assertEqual(by[t1]["client_address"],
                         "127.0.0.1:%d" % self.herd.topology["servers"][t1]["client_port"])
        self.assertEqual((by[t2]["state"], by[t2]["pid"], by[t2]["answers"]), ("stopped", None, False))
        self.assertEqual((by[t3]["ready"], by[t3]["admin_address"]), (None, None))
        # Every server named runs: 0.
        r = self.herdctl("status", "--json", t3)
        self.assertEqual([s["name"] for s in json.loads(r.stdout)["servers"]], [t3])

    def test_status_and_down_use_the_running_addresses(self):
        """After an edit (new ports, not applied yet) and with the file
        invalid, status and down still reach the running servers."""
        t1 = self.t1
        self.herdctl("up", t1)
        pid = self.pid(t1)
        conf = self.herd.topology["servers"][t1]
        conf["client_port"] += 7000
        conf["admin_port"] += 7000
        self.herd.write_topology()
        rows = wait_until(lambda: (lambda c: c[1] if c[1][t1]["READY"] not in ("?", "-") else None)(
            self.status(t1)), 15, msg="status never reached the running server's admin port")
        self.assertEqual((rows[t1]["STATE"], rows[t1]["PID"], rows[t1]["ANSWERS"]),
                         ("running", str(pid), "yes"))
        # Half-edited: the file is not JSON. status says so and goes on.
        with open(self.config, "w") as f:
            f.write('{"servers": {')
        r = self.herdctl("status", check=None)
        self.assertIn("is invalid", r.stderr)
        self.assertRegex(r.stdout, r"%s\s+running\s+%d\s+\S+\s+yes\s" % (t1, pid))
        r = self.herdctl("down")
        self.assertIn("herdctl: stopped %s (pid %d)\n" % (t1, pid), r.stdout)
        self.assertTrue(gone(pid))


class RollingRestart(HerdctlCase):

    def test_one_at_a_time_each_ready_before_the_next(self):
        t1, t2, t3 = self.names
        self.herdctl("up")
        r = self.herdctl("restart", t1, t2, t3)
        events = re.findall(r"^herdctl: (stopped|started|\S+ is ready)(?: (\S+))?", r.stdout, re.M)
        order = [(what.split()[0], "ready") if who == "" else (who, what) for what, who in events]
        expect = []
        for name in (t1, t2, t3):
            expect += [(name, "stopped"), (name, "started"), (name, "ready")]
        self.assertEqual(order, expect, r.stdout)

    def test_a_server_that_does_not_get_ready_stops_the_roll(self):
        t1, t2, t3 = self.names
        self.herdctl("up", t1)  # T2 down: T1 finds no neighbour to exchange with
        r = self.herdctl("restart", "--timeout", "3", t1, t3, check=1)
        self.assertIn("restart: %s runs but is not ready after 3 s" % t1, r.stderr)
        self.assertIn("not restarted: %s" % t3, r.stderr)
        self.assertEqual(self.status(t3)[1][t3]["STATE"], "stopped")
        self.assertEqual(self.status(t2)[1][t2]["STATE"], "stopped")


class ReloadOutcomes(HerdctlCase):

    def test_dry_run_says_what_would_change_and_signals_nothing(self):
        t1, t2, t3 = self.names
        self.herdctl("up", t1, t2)
        wait_until(lambda: self.status(t1, t2)[0] == 0, 15, msg="never ready")
        before = self.herdctl("status", "--json", check=None).stdout
        gens = {s["name"]: s["generation"] for s in json.loads(before)["servers"]}
        self.herd.topology["links"] = [[t1, t3]]
        self.herd.write_topology()
        r = self.herdctl("reload", "--dry-run")
        self.assertRegex(r.stdout, r"%s: would change: link to %s added; link to %s removed" % (t1, t3, t2))
        self.assertRegex(r.stdout, r"%s: would change: link to %s removed" % (t2, t1))
        self.assertIn("%s: not running" % t3, r.stdout)
        after = json.loads(self.herdctl("status", "--json", check=None).stdout)
        self.assertEqual({s["name"]: s["generation"] for s in after["servers"]}, gens)

    def test_pending_settings_keep_reload_at_4_until_a_restart(self):
        """Needs the server's /config "pending" (issue 20 item 2)."""
        t1, t2 = self.t1, self.t2
        self.herdctl("up", t1, t2)  # T2: the neighbour T1 is ready with after its restart
        used = {p for conf in self.herd.topology["servers"].values() for p in conf.values()
                if isinstance(p, int)}
        self.herd.topology["servers"][t1]["client_port"] = [
            p for p in free_ports(8) if p not in used][0]
        self.herd.write_topology()
        r = self.herdctl("reload", t1, check=4)
        self.assertIn("%s: needs a restart for: client_port" % t1, r.stderr)
        # A later reload with no new edit: still pending, still 4.
        r = self.herdctl("reload", t1, check=4)
        self.assertIn("%s: needs a restart for: client_port" % t1, r.stderr)
        r = self.herdctl("reload", "--dry-run", t1)
        self.assertIn("still pending a restart: client_port", r.stdout)
        self.herdctl("restart", t1)
        self.herdctl("reload", t1)

    def test_a_renamed_server_exits_and_the_new_name_starts(self):
        """Needs PROTOCOL section 7's renames in the server (issue 20 item 3)."""
        t1, t2 = self.t1, self.t2
        new = "N%s" % uuid.uuid4().hex[:8]
        self.herdctl("up", t1, t2)
        cid = "rename-" + uuid.uuid4().hex[:8]
        at = self.iamat(t2, cid)
        self.wait_seen(t1, cid, at)
        old_pid = self.pid(t2)
        topo = self.herd.topology
        topo["servers"][new] = topo["servers"].pop(t2)
        topo["links"] = [[t1, new]]
        self.herd.write_topology()
        r = self.herdctl("reload", "--start")
        self.assertIn("%s is no longer in %s (renamed or removed)" % (t2, self.config), r.stdout)
        self.assertIn("herdctl: %s: exited, as a server whose name left the topology does" % t2, r.stdout)
        self.assertIn("herdctl: started %s" % new, r.stdout)
        self.assertTrue(gone(old_pid))
        # The old name, gone, is no longer listed.
        r = self.herdctl("status", check=None)
        self.assertNotRegex(r.stdout, r"(?m)^%s\s" % t2)
        self.assertNotIn("exits at its next reload", r.stdout)
        # Every record is kept, the old origin's too, and the new name has it.
        self.assertEqual(self.first_line(t1, cid), at)
        self.wait_seen(new, cid, at)

    def test_rotate_reopens_the_log_and_applies_no_edit(self):
        """Needs SIGUSR1 in the server (issue 20 item 1)."""
        t1 = self.t1
        self.herdctl("up", t1)
        log = os.path.join(self.herd.tmpdir, "logs", t1 + ".log")
        gen = json.loads(self.herdctl("status", "--json", t1, check=None).stdout)["servers"][0]["generation"]
        os.rename(log, log + ".1")
        self.herd.topology["links"] = []  # saved, not meant to go live yet
        self.herd.write_topology()
        r = self.herdctl("rotate")
        self.assertIn("%s: SIGUSR1 sent" % t1, r.stdout)
        wait_until(lambda: os.path.exists(log), 10, msg="no new log after rotate")
        self.send(t1, "HELLO rotated")
        wait_until(lambda: "HELLO rotated" in open(log, errors="replace").read(), 10)
        self.assertNotIn("HELLO rotated", open(log + ".1", errors="replace").read())
        doc = json.loads(self.herdctl("status", "--json", t1, check=None).stdout)["servers"][0]
        self.assertEqual(doc["generation"], gen)
        self.assertEqual(doc["links"], {self.t2: False})


class Keys(HerdctlCase):

    def test_secrets_readable_by_the_group_herd(self):
        if subprocess.run(["getent", "group", "herd"], capture_output=True).returncode != 0:
            self.skipTest("no group herd on this machine (the package makes it)")
        self.herdctl("keys", self.t1)
        path = os.path.join(self.herd.tmpdir, "keys", self.t1 + ".key_secret")
        st = os.stat(path)
        self.assertEqual(st.st_mode & 0o777, 0o640)
        import grp
        self.assertEqual(grp.getgrgid(st.st_gid).gr_name, "herd")
