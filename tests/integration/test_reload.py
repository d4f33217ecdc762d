"""Reload, rotation and configuration as an operator meets them (PROTOCOL
sections 8 and 9; issues 19 item 3 and 20 items 1, 2, 4 and 5).

- SIGUSR1 reopens the log and nothing else: a saved edit stays unapplied;
  SIGHUP applies it.
- A setting that only a restart applies keeps its running value and stays
  pending (log, /config, herd_config_restart_needed) across later reloads,
  until the file has the running value again; the server runs what it
  reports (places.url changed: the worker still calls the running URL).
- Unknown fields are named with their path: --check-config (stderr, exit 0,
  --json "warnings"), the log at start and at each reload, /config.
- --check-config NAME refuses what a start refuses: a missing or mismatched
  secret key, a state folder in use by a running server or that cannot be
  made.
- /config carries pid, name, version, topology, the ports in use, running,
  pending and warnings; the log's first line of a run names the version.

Run: cd tests/integration && HERD_SERVER=.../herd-server python3 -m unittest -v test_reload
"""

import http.client
import json
import os
import re
import signal
import subprocess
import unittest
import uuid

from herdtest import (AT_RE_B, HOST, PLACES_KEY_ENV, HerdTestCase, free_ports, iamat_line, run_server,
                      server_binary, wait_until)
from places_standin import PlacesStandIn

A = "Alpha"
KEY = "reload-test-key"


def uid(tag):
    return ("reload-%s-%s" % (tag, uuid.uuid4().hex[:10])).encode()


def http_get(herd, name, path):
    conf = herd.topology["servers"][name]
    conn = http.client.HTTPConnection(HOST, conf["admin_port"], timeout=5)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read().decode("utf-8")
    finally:
        conn.close()


def config(herd, name):
    status, body = http_get(herd, name, "/config")
    assert status == 200, (status, body)
    return json.loads(body)


def metric(herd, name, sample):
    status, body = http_get(herd, name, "/metrics")
    assert status == 200, (status, body)
    m = re.search(r"(?m)^%s (\S+)$" % re.escape(sample), body)
    return float(m.group(1)) if m else None


def wait_generation(herd, name, generation):
    return wait_until(lambda: (lambda c: c if c["generation"] >= generation else None)(config(herd, name)),
                      10, msg="%s never reached config generation %d" % (name, generation))


class ReloadCase(HerdTestCase):

    def lone(self, **kw):
        herd = self.make_herd(servers=[A], **kw)
        herd.add_admin_ports()
        return herd

    def sighup(self, herd, name):
        generation = config(herd, name)["generation"]
        os.kill(herd.pid(name), signal.SIGHUP)
        return wait_generation(herd, name, generation + 1)

    def check_config(self, herd, *args):
        return run_server(["--check-config", "--config", herd.topology_path] + list(args))


class SignalTest(ReloadCase):

    def test_sigusr1_reopens_the_log_and_applies_no_edit(self):
        herd = self.lone()
        herd.start(A)
        before = config(herd, A)
        herd.topology["limits"] = {"max_records": 1234}
        herd.topology["links"] = []
        herd.write_topology()
        mark = herd.log_size(A)
        os.kill(herd.pid(A), signal.SIGUSR1)
        herd.wait_log(A, "SIGUSR1: log reopened")
        after = config(herd, A)
        self.assertEqual(after["generation"], before["generation"])
        self.assertEqual(after["running"]["limits"]["max_records"], before["running"]["limits"]["max_records"])
        self.assertNotIn("reload", herd.log_since(A, mark))
        # SIGHUP applies it.
        doc = self.sighup(herd, A)
        self.assertEqual(doc["running"]["limits"]["max_records"], 1234)
        self.assertTrue(doc["last_reload"]["ok"])
        self.assertEqual(herd.stop(A), 0)


class PendingTest(ReloadCase):

    def test_pending_settings_survive_reloads_until_reverted(self):
        places = PlacesStandIn(key=KEY).start()
        self.addCleanup(places.stop)
        herd = self.lone(places_url=places.url, env={PLACES_KEY_ENV: KEY})
        herd.start(A)
        self.assertEqual(config(herd, A)["pending"], [])
        self.assertEqual(metric(herd, A, "herd_config_restart_needed"), 0)

        running_url = herd.topology["places"]["url"]
        herd.topology["places"]["url"] = "http://127.0.0.1:1/elsewhere"
        herd.write_topology()
        doc = self.sighup(herd, A)
        self.assertEqual(doc["pending"], ["places.url"])
        self.assertEqual(doc["last_reload"]["needs_restart"], ["places.url"])
        self.assertEqual(doc["running"]["places"]["url"], running_url)
        self.assertEqual(metric(herd, A, "herd_config_restart_needed"), 1)

        # The server runs what it reports: the worker still calls the running
        # URL (the stand-in), not the pending one.
        cid = uid("slow")
        at = herd.send(A, iamat_line(cid) + b"\n")
        self.assertTrue(AT_RE_B.match(at[:-1]), at)
        places.set_mode("slow", delay=1.5)
        reply = herd.send(A, b"WHATSAT " + cid + b" 10 2\n", timeout=15)
        self.assertTrue(reply.startswith(at), reply[:300])
        self.assertIn(b'"status" : "OK"', reply)

        # A later reload of something else: still pending.
        herd.topology["limits"] = {"max_clients": 77}
        herd.write_topology()
        doc = self.sighup(herd, A)
        self.assertEqual(doc["pending"], ["places.url"])
        self.assertEqual(doc["last_reload"]["needs_restart"], ["places.url"])
        self.assertEqual(doc["running"]["limits"]["max_clients"], 77)
        self.assertEqual(metric(herd, A, "herd_config_restart_needed"), 1)
        herd.wait_log(A, "needs a restart for: places.url (these keep their running values)")

        # An invalid file changes nothing, the pending setting included.
        with open(herd.topology_path, "w") as f:
            f.write("{ not json\n")
        doc = self.sighup(herd, A)
        self.assertFalse(doc["last_reload"]["ok"])
        self.assertEqual(doc["pending"], ["places.url"])
        self.assertEqual(metric(herd, A, "herd_config_restart_needed"), 1)

        # The running value again: nothing pending.
        herd.topology["places"]["url"] = running_url
        herd.write_topology()
        doc = self.sighup(herd, A)
        self.assertEqual((doc["pending"], doc["last_reload"]["needs_restart"]), ([], []))
        self.assertEqual(metric(herd, A, "herd_config_restart_needed"), 0)
        self.assertEqual(herd.stop(A), 0)

    def test_state_dir_change_stays_where_the_journal_is(self):
        herd = self.lone(extra={"state_dir": "state"})
        herd.start(A)
        old = config(herd, A)["state_dir"]
        herd.topology["state_dir"] = "elsewhere"
        herd.write_topology()
        doc = self.sighup(herd, A)
        self.assertEqual(doc["pending"], ["state_dir"])
        self.assertEqual((doc["state_dir"], doc["running"]["state_dir"]), (old, old))
        status, body = http_get(herd, A, "/healthz")
        self.assertNotIn("elsewhere", body)
        self.assertEqual(herd.stop(A), 0)


class UnknownFieldTest(ReloadCase):

    def test_unknown_fields_are_named(self):
        herd = self.lone(extra={"fsynk": "always", "limits": {"max_record": 5}})
        herd.topology["servers"][A]["hots"] = "127.0.0.1"
        herd.write_topology()
        want = ["unknown field servers.%s.hots (ignored)" % A, "unknown field limits.max_record (ignored)",
                "unknown field fsynk (ignored)"]

        r = self.check_config(herd)
        self.assertEqual(r.returncode, 0, r.stderr)
        err = r.stderr.decode()
        for w in want:
            self.assertIn("herd-server: warning: %s: %s" % (herd.topology_path, w), err)
        r = self.check_config(herd, "--json", A)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(sorted(json.loads(r.stdout)["warnings"]), sorted(want))

        mark = herd.log_size(A)
        herd.start(A)
        text = herd.log_since(A, mark)
        for w in want:
            self.assertIn(w, text)
        self.assertEqual(sorted(config(herd, A)["warnings"]), sorted(want))

        herd.topology["places"]["timeoutms"] = 3
        herd.write_topology()
        mark = herd.log_size(A)
        doc = self.sighup(herd, A)
        self.assertIn("unknown field places.timeoutms (ignored)", doc["warnings"])
        herd.wait_log(A, "unknown field places.timeoutms (ignored)")
        # Logged in the same turn, but not necessarily in the same write.
        wait_until(lambda: "unknown field fsynk (ignored)" in herd.log_since(A, mark), 10,
                   msg="no 'unknown field fsynk (ignored)' in the log since the SIGHUP")
        self.assertEqual(herd.stop(A), 0)

    def test_known_fields_give_no_warning(self):
        herd = self.lone(extra={
            "fsync": "never", "log_commands": True, "insecure_links": False, "frontend_threads": 0,
            "keys_dir": "keys", "state_dir": None,
            "limits": {"idle_timeout_ms": 1000, "max_output_bytes": 100000, "max_output_total_bytes": 1000000,
                       "max_clients": 10, "max_clients_per_address": 5, "max_records": 10,
                       "record_ttl_s": 0, "max_future_s": 10},
            "places": {"cache_ttl_ms": 0, "max_in_flight": 2, "max_queued": 3}})
        herd.topology["servers"][A].update(admin_host="127.0.0.1", frontend_threads=0)
        herd.write_topology()
        r = self.check_config(herd, "--json", A)
        self.assertEqual((r.returncode, r.stderr), (0, b""))
        self.assertEqual(json.loads(r.stdout)["warnings"], [])


class CheckConfigTest(ReloadCase):

    def test_refuses_a_state_folder_in_use(self):
        herd = self.lone(extra={"state_dir": "state"})
        self.assertEqual(self.check_config(herd, A).returncode, 0)
        # Nothing is made by the check.
        self.assertFalse(os.path.exists(os.path.join(herd.tmpdir, "state")))
        herd.start(A)
        r = self.check_config(herd, A)
        self.assertEqual(r.returncode, 2, r)
        self.assertRegex(r.stderr.decode(), r"state folder \S+/state/%s is in use by another running server" % A)
        self.assertEqual(herd.stop(A), 0)
        r = self.check_config(herd, A)
        self.assertEqual((r.returncode, r.stderr), (0, b""))
        # The check released the lock at once: the server starts.
        herd.start(A)
        self.assertEqual(herd.stop(A), 0)

    def test_refuses_a_state_folder_that_cannot_be_made(self):
        herd = self.lone(extra={"state_dir": "blocked/state"})
        with open(os.path.join(herd.tmpdir, "blocked"), "w") as f:
            f.write("a file, not a folder\n")
        r = self.check_config(herd, A)
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("is not a folder", r.stderr.decode())
        start = run_server(["--config", herd.topology_path, A])
        self.assertEqual(start.returncode, 2)

    def test_refuses_a_missing_or_mismatched_secret_key(self):
        keygen = os.path.join(os.path.dirname(server_binary()), "herd-keygen")
        if not os.access(keygen, os.X_OK):
            self.skipTest("herd-keygen not found beside herd-server")
        herd = self.make_herd(servers=[A, "Beta"], links=[(A, "Beta")])
        kdir = os.path.join(herd.tmpdir, "keys")
        out = subprocess.run([keygen, kdir, A, "Beta"], check=True, capture_output=True).stdout.decode()
        keys = dict(line.split(" ", 1) for line in out.splitlines())
        for name in (A, "Beta"):
            herd.topology["servers"][name]["public_key"] = keys[name]
        herd.write_topology()
        r = self.check_config(herd, A)
        self.assertEqual((r.returncode, r.stderr), (0, b""))

        # Mismatched: Beta's key pair in Alpha's files.
        os.rename(os.path.join(kdir, A + ".key_secret"), os.path.join(kdir, "saved"))
        with open(os.path.join(kdir, "Beta.key_secret"), "rb") as src, \
                open(os.path.join(kdir, A + ".key_secret"), "wb") as dst:
            dst.write(src.read())
        r = self.check_config(herd, A)
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("is not the public_key of %s" % A, r.stderr.decode())
        self.assertEqual(run_server(["--config", herd.topology_path, A]).returncode, 2)

        # Missing.
        os.remove(os.path.join(kdir, A + ".key_secret"))
        r = self.check_config(herd, A)
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("%s.key_secret cannot be read" % os.path.join(kdir, A), r.stderr.decode())
        self.assertEqual(run_server(["--config", herd.topology_path, A]).returncode, 2)

        # Without NAME only the file is checked.
        self.assertEqual(self.check_config(herd).returncode, 0)


class ConfigTest(ReloadCase):

    def test_config_names_what_runs(self):
        herd = self.lone(extra={"fsync": "never", "state_dir": "st"},
                         places={"cache_ttl_ms": 7, "max_in_flight": 3, "max_queued": 9},
                         env={PLACES_KEY_ENV: KEY})
        herd.start(A)
        conf = herd.topology["servers"][A]
        doc = config(herd, A)
        self.assertEqual(doc["pid"], herd.pid(A))
        self.assertEqual(doc["name"], A)
        version = subprocess.run([server_binary(), "--version"], capture_output=True).stdout.decode().split()[1]
        self.assertEqual(doc["version"], version)
        self.assertTrue(os.path.isabs(doc["topology"]) and os.path.exists(doc["topology"]), doc["topology"])
        self.assertEqual(os.path.realpath(doc["topology"]), os.path.realpath(herd.topology_path))
        self.assertEqual((doc["host"], doc["client_port"], doc["peer_port"], doc["admin_port"]),
                         (conf["host"], conf["client_port"], conf["peer_port"], conf["admin_port"]))
        run = doc["running"]
        self.assertEqual(run["fsync"], "never")
        self.assertEqual(run["state_dir"], os.path.join(os.path.realpath(herd.tmpdir), "st"))
        self.assertEqual(run["log_dir"], os.path.join(os.path.realpath(herd.tmpdir), "logs"))
        self.assertEqual((run["log_commands"], run["insecure_links"]), (True, False))
        self.assertIsInstance(run["frontend_threads"], int)
        self.assertEqual(set(run["limits"]), {"idle_timeout_ms", "max_output_bytes", "max_output_total_bytes",
                                              "max_clients", "max_clients_per_address", "max_records",
                                              "record_ttl_s", "max_future_s"})
        self.assertEqual(run["places"], {"url": herd.topology["places"]["url"], "key_env": PLACES_KEY_ENV,
                                         "timeout_ms": 5000, "cache_ttl_ms": 7, "max_in_flight": 3,
                                         "max_queued": 9})
        self.assertNotIn(KEY, json.dumps(doc))
        self.assertEqual((doc["pending"], doc["warnings"]), ([], []))
        self.assertIn("herd-server %s (commit " % version, herd.log_text(A))

        # The ports in use, not the file's.
        old = conf["client_port"]
        herd.topology["servers"][A]["client_port"] = free_ports(1)[0]
        herd.write_topology()
        doc = self.sighup(herd, A)
        self.assertEqual(doc["client_port"], old)
        self.assertEqual(doc["pending"], ["client_port"])
        self.assertEqual(herd.stop(A), 0)


if __name__ == "__main__":
    unittest.main()
