"""The herd across network namespaces: deploy/netns/herd-netns.sh.

The script does the work (one namespace per server, a bridge between them,
flooding, a cut that isolates one server, the heal and the rejoin repair) and
prints one PASS/FAIL line per step; this test runs it with a deadline, asserts
that it passed, and checks that it left no namespace behind.

Skipped, with the reason, when not root, when the ``ip`` command (iproute2)
is missing, or when the script itself exits 77 (namespaces not permitted).

Run: cd tests/integration && HERD_SERVER=.../herd-server python3 -m unittest -v test_netns
"""

import os
import secrets
import shutil
import signal
import subprocess
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.normpath(os.path.join(HERE, "..", "..", "deploy", "netns", "herd-netns.sh"))
RUN_TIMEOUT = 100  # seconds; a passing run takes about 5, ctest allows 300 for both tests
SKIP_STATUS = 77


def server_binary():
    path = os.environ.get("HERD_SERVER") or os.path.join(HERE, "..", "..", "build", "herd-server")
    return os.path.abspath(path)


def namespaces(prefix):
    """Names of the network namespaces that start with prefix."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30)
    names = [line.split()[0] for line in out.stdout.splitlines() if line.strip()]
    return [n for n in names if n.startswith(prefix)]


def remove_namespaces(prefix):
    """Last resort after a killed run: ends what is left inside our namespaces
    (only processes the script started can be there) and deletes them."""
    for ns in namespaces(prefix):
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=30)
        for pid in pids.stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


@unittest.skipUnless(os.geteuid() == 0, "needs root: network namespaces, veth pairs and a bridge")
@unittest.skipUnless(shutil.which("ip"), "needs the ip command (Debian package iproute2)")
class NetnsTest(unittest.TestCase):

    def setUp(self):
        self.assertTrue(os.access(SCRIPT, os.X_OK), "%s is missing or not executable" % SCRIPT)
        self.server = server_binary()
        self.assertTrue(os.access(self.server, os.X_OK), "no herd-server binary at %s" % self.server)
        self.run_id = "t" + secrets.token_hex(4)
        # The dash keeps another id that merely starts with ours out of the check.
        self.prefix = "herd%s-" % self.run_id
        self.addCleanup(remove_namespaces, self.prefix)

    def run_script(self, *args):
        env = dict(os.environ, HERD_SERVER=self.server)
        env.pop("HERD_KEEP_TMP", None)
        # Its own session, so a timeout can stop the script and its helpers
        # together; the servers die with it (the script sets a parent-death
        # signal on them) or are removed from the namespaces by the clean-up.
        proc = subprocess.Popen(
            [SCRIPT, "--id", self.run_id, *args], env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)  # its trap cleans up
            try:
                out, _ = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                out, _ = proc.communicate()
            self.fail("herd-netns.sh took more than %d s:\n%s" % (RUN_TIMEOUT, out.decode("utf-8", "replace")))
        return proc.returncode, out.decode("utf-8", "replace")

    def check_run(self, *args):
        status, out = self.run_script(*args)
        if status == SKIP_STATUS:
            reason = [line for line in out.splitlines() if line.startswith("SKIP")]
            self.skipTest(reason[0] if reason else "herd-netns.sh exited 77 (skipped)")
        self.assertEqual(status, 0, "herd-netns.sh failed (status %d):\n%s" % (status, out))
        lines = out.splitlines()
        self.assertEqual([line for line in lines if line.startswith("FAIL")], [], out)
        # The steps that matter all ran and passed.
        for want in ("PASS  start:", "PASS  cut:", "PASS  heal:", "PASS  stop:"):
            self.assertTrue(any(line.startswith(want) for line in lines), "no %r line:\n%s" % (want, out))
        self.assertEqual(lines[-1], "herd-netns: all steps passed", out)
        self.assertEqual(namespaces(self.prefix), [], "namespaces left behind")
        return out

    def test_flood_cut_and_heal(self):
        out = self.check_run()
        self.assertIn("PASS  cut: eth0 of Jaquez down", out)

    def test_cut_a_server_with_three_neighbours(self):
        out = self.check_run("--cut", "Bona")
        self.assertIn("PASS  cut: eth0 of Bona down (its neighbours: Bailey Campbell Clark)", out)


if __name__ == "__main__":
    unittest.main()
