"""The Debian package, built, inspected, installed, run and purged in a scratch root.

Builds the package from this build tree (cpack -G DEB into a scratch folder),
checks its file list and metadata (dpkg-deb -c, dpkg-deb -f / -e), installs it
with dpkg --root into a scratch root (maintainer scripts run with DPKG_ROOT,
so the user "herd" is made in the scratch root's own /etc/passwd), runs the
installed herd-server on the installed topology and starts it on free ports,
then removes the package (the conffile stays) and purges it (the conffile,
the state and log folders and the user go). The machine's own /usr, /etc,
/var and users are never touched: that is checked at the end.

Environment (set by ctest): HERD_BUILD_DIR (the configured and built tree),
HERD_CPACK (the cpack binary). HERD_KEEP_TMP=1 keeps the scratch folder.

Run by hand: cd tests/package && HERD_BUILD_DIR=../../build python3 -m unittest -v test_package
"""

import hashlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import herdtest  # noqa: E402  (free ports, deadlines, a client, parent-death signal)

SKIP_MARK = "HERD-PACKAGE-SKIPPED"  # ctest's SKIP_REGULAR_EXPRESSION
SERVER = "Bailey"
SERVERS = ("Bailey", "Bona", "Campbell", "Clark", "Jaquez")

# What the package must hold (dpkg-deb -c names, without the leading ".").
EXPECTED_FILES = {
    "/usr/bin/herd-server": 0o755,
    "/usr/bin/herd-keygen": 0o755,
    "/usr/bin/herdctl": 0o755,
    "/usr/lib/herd/admin.py": 0o644,
    "/usr/lib/herd/client.py": 0o644,
    "/usr/lib/herd/topology.py": 0o644,
    "/usr/lib/herd/servers.py": 0o644,
    "/usr/lib/herd/metrics.py": 0o644,
    "/usr/share/doc/herd/copyright": 0o644,
    "/usr/share/doc/herd/changelog.gz": 0o644,
    "/usr/share/doc/herd/README.md": 0o644,
    "/usr/share/doc/herd/PROTOCOL.md": 0o644,
    "/usr/lib/systemd/system/herd@.service": 0o644,
    "/etc/herd/topology.json": 0o644,
    "/etc/logrotate.d/herd": 0o644,
    "/usr/share/man/man8/herd-server.8.gz": 0o644,
    "/usr/share/man/man8/herdctl.8.gz": 0o644,
    "/usr/share/man/man8/herd-keygen.8.gz": 0o644,
    "/usr/share/man/man5/herd-topology.json.5.gz": 0o644,
}
CONFFILES = ["/etc/herd/topology.json", "/etc/logrotate.d/herd"]

# Host paths the package would touch if it escaped the scratch root.
HOST_WATCH = ["/etc/passwd", "/etc/group", "/etc/shadow", "/etc/herd", "/var/lib/herd",
              "/var/log/herd", "/usr/bin/herd-server", "/usr/lib/herd",
              "/usr/lib/systemd/system/herd@.service", "/etc/logrotate.d/herd"]


def host_snapshot():
    """Per watched host path: None when absent, else a digest of its content
    (files) or its sorted listing (folders), with its mode and owner."""
    snap = {}
    for path in HOST_WATCH:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            snap[path] = None
            continue
        if stat.S_ISDIR(st.st_mode):
            body = "\n".join(sorted(os.listdir(path))).encode()
        else:
            with open(path, "rb") as f:
                body = f.read()
        snap[path] = (st.st_mode, st.st_uid, st.st_gid, hashlib.sha256(body).hexdigest())
    return snap


def run(args, check=True, env=None, timeout=60):
    """Runs a command to completion; on failure (check) raises with its output."""
    proc = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError("%s exited %d\nstdout:\n%s\nstderr:\n%s" % (
            " ".join(args), proc.returncode, proc.stdout.decode(errors="replace"),
            proc.stderr.decode(errors="replace")))
    return proc


def db_entry(root, db, name):
    """The fields of NAME in ROOT/etc/DB (passwd or group), or None."""
    with open(os.path.join(root, "etc", db), encoding="utf-8") as f:
        for line in f:
            fields = line.rstrip("\n").split(":")
            if fields[0] == name:
                return fields
    return None


class PackageTest(unittest.TestCase):
    """One package build and install shared by the steps, run in name order;
    the last step removes and purges it."""

    @classmethod
    def setUpClass(cls):
        try:
            cls._set_up()
        except unittest.SkipTest as e:
            print("%s: %s" % (SKIP_MARK, e), file=sys.stderr, flush=True)
            raise

    @classmethod
    def _set_up(cls):
        build = os.environ.get("HERD_BUILD_DIR")
        if not build or not os.path.isfile(os.path.join(build, "CPackConfig.cmake")):
            raise unittest.SkipTest("HERD_BUILD_DIR is not a configured build tree "
                                    "(run from ctest, or set it)")
        cls.build = os.path.abspath(build)
        cls.env = dict(os.environ)
        cls.env["PATH"] = cls.env.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"
        cpack = os.environ.get("HERD_CPACK") or shutil.which("cpack")
        if not cpack:
            raise unittest.SkipTest("cpack not found")
        for tool, package in (("dpkg", "dpkg"), ("dpkg-deb", "dpkg"),
                              ("dpkg-shlibdeps", "dpkg-dev"), ("useradd", "passwd")):
            if not shutil.which(tool, path=cls.env["PATH"]):
                raise unittest.SkipTest("%s not found (Debian package %s)" % (tool, package))
        if os.geteuid() != 0:
            raise unittest.SkipTest("not root: the maintainer scripts chown folders in the "
                                    "scratch root")
        cls.host_before = host_snapshot()
        cls.tmp = tempfile.mkdtemp(prefix="herd-package-")
        try:
            cls._build_and_install(cpack)
        except BaseException:
            cls._remove_tmp()
            raise

    @classmethod
    def _build_and_install(cls, cpack):
        out = os.path.join(cls.tmp, "out")
        run([cpack, "-G", "DEB", "--config", os.path.join(cls.build, "CPackConfig.cmake"),
             "-B", out], env=cls.env, timeout=120)
        debs = [f for f in os.listdir(out) if f.endswith(".deb")]
        assert len(debs) == 1, "cpack made %r" % debs
        cls.deb = os.path.join(out, debs[0])

        # The scratch root: an empty dpkg database and a user database with
        # root only (what useradd --prefix edits).
        cls.root = os.path.join(cls.tmp, "root")
        for d in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "var/log", "etc"):
            os.makedirs(os.path.join(cls.root, d))
        for name, text in (("var/lib/dpkg/status", ""), ("var/lib/dpkg/available", ""),
                           ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
                           ("etc/group", "root:x:0:\n"),
                           ("etc/shadow", "root:*:20000:0:99999:7:::\n"),
                           ("etc/gshadow", "root:*::\n")):
            with open(os.path.join(cls.root, name), "w", encoding="utf-8") as f:
                f.write(text)
        if os.path.isfile("/etc/login.defs"):
            shutil.copy("/etc/login.defs", os.path.join(cls.root, "etc", "login.defs"))
        cls.install = cls.dpkg("--install", cls.deb)

    @classmethod
    def dpkg(cls, *args):
        # --force-depends: the scratch root's database holds none of the
        # libraries (the machine's own are used to run the server).
        # --force-script-chrootless: the scripts run here with DPKG_ROOT set.
        # --log: dpkg's log is the scratch root's, not the machine's.
        return run(["dpkg", "--root=" + cls.root,
                    "--log=" + os.path.join(cls.root, "var/log/dpkg.log"),
                    "--force-not-root", "--force-script-chrootless", "--force-depends"]
                   + list(args), env=cls.env)

    @classmethod
    def _remove_tmp(cls):
        if os.environ.get("HERD_KEEP_TMP"):
            print("kept %s" % cls.tmp, file=sys.stderr)
        else:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def tearDownClass(cls):
        cls._remove_tmp()

    def path(self, p):
        return os.path.join(self.root, p.lstrip("/"))

    # ------------------------------------------------------------ the package

    def test_1_file_list(self):
        listing = run(["dpkg-deb", "-c", self.deb]).stdout.decode()
        files = {}
        for line in listing.splitlines():
            perms, owner = line.split()[:2]
            name = line.split(None, 5)[5]
            self.assertEqual(owner, "root/root", line)
            self.assertTrue(name.startswith("./"), line)
            if not perms.startswith("d"):
                files[name[1:]] = perms
        for name, mode in EXPECTED_FILES.items():
            self.assertIn(name, files, "missing from the package:\n" + listing)
            self.assertEqual(files[name][1:], stat.filemode(mode)[1:], name)
        stray = [n for n in files if not n.startswith(("/usr/bin/", "/usr/lib/herd/",
                 "/usr/lib/systemd/system/", "/usr/share/man/", "/usr/share/doc/herd/", "/etc/herd/",
                 "/etc/logrotate.d/"))]
        self.assertEqual(stray, [], "files outside the package's layout")

    def test_2_lintian(self):
        """Debian's own checker finds no error (E:) and no warning (W:)."""
        if not shutil.which("lintian"):
            print("%s: lintian not found (Debian package lintian)" % SKIP_MARK, file=sys.stderr)
            self.skipTest("lintian not found (Debian package lintian)")
        proc = run(["lintian", "--tag-display-limit", "0", self.deb], check=False, timeout=300)
        out = proc.stdout.decode(errors="replace")
        bad = [l for l in out.splitlines() if l.startswith(("E:", "W:"))]
        self.assertEqual(bad, [], out + proc.stderr.decode(errors="replace"))
        self.assertEqual(proc.returncode, 0, out)

    def test_2_metadata(self):
        def field(name):
            return run(["dpkg-deb", "-f", self.deb, name]).stdout.decode().strip()
        self.assertEqual(field("Package"), "herd")
        self.assertEqual(field("Maintainer"), "herd maintainers <herd-maint@example.org>")
        depends = [d.strip() for d in field("Depends").split(",")]
        self.assertIn("python3", depends)
        # Computed by dpkg-shlibdeps from the binaries, with versions.
        for lib in ("libc6", "libzmq5", "libczmq4", "libjansson4", "libcurl4"):
            self.assertTrue(any(re.fullmatch(r"%s \(>= [^)]+\)" % lib, d) for d in depends),
                            "%s not in Depends: %s" % (lib, depends))
        control = os.path.join(self.tmp, "control")
        run(["dpkg-deb", "-e", self.deb, control])
        with open(os.path.join(control, "conffiles"), encoding="utf-8") as f:
            self.assertEqual(sorted(f.read().split()), sorted(CONFFILES))
        for script in ("postinst", "prerm", "postrm"):
            mode = os.stat(os.path.join(control, script)).st_mode
            self.assertEqual(stat.S_IMODE(mode), 0o755, script)
        info = run(["dpkg-deb", "-I", self.deb]).stdout.decode()
        self.assertIn("conffiles", info)

    # ------------------------------------------------------------ installed

    def test_3_installed_layout(self):
        status = run(["dpkg-query", "--admindir=" + self.path("var/lib/dpkg"),
                      "-W", "-f=${Status}", "herd"]).stdout.decode()
        self.assertEqual(status, "install ok installed")
        user = db_entry(self.root, "passwd", "herd")
        group = db_entry(self.root, "group", "herd")
        self.assertIsNotNone(user, "postinst made no user herd in the scratch root")
        self.assertIsNotNone(group, "postinst made no group herd in the scratch root")
        self.assertEqual(user[6], "/usr/sbin/nologin")
        self.assertLess(int(user[2]), 1000, "not a system user: %r" % user)
        uid, gid = int(user[2]), int(group[2])
        for d, owner in (("/var/lib/herd", (uid, gid)), ("/var/log/herd", (uid, gid)),
                         ("/etc/herd/keys", (0, gid))):
            st = os.stat(self.path(d))
            self.assertEqual(stat.S_IMODE(st.st_mode), 0o750, d)
            self.assertEqual((st.st_uid, st.st_gid), owner, d)
        with open(self.path("/usr/lib/systemd/system/herd@.service"), encoding="utf-8") as f:
            unit = f.read()
        for line in ("ExecStart=/usr/bin/herd-server --config /etc/herd/topology.json",
                     "User=herd", "StateDirectory=herd", "LogsDirectory=herd",
                     "ProtectSystem=strict", "MemoryMax=", "\nType=notify\n", "\nNotifyAccess=main\n",
                     "\nExecReload=/usr/bin/herdctl --config /etc/herd/topology.json reload "):
            self.assertIn(line, unit)
        self.assertNotIn("DynamicUser=yes", unit)
        # The memory comment carries no figure that can go stale.
        memory = unit[unit.index("# Memory:"):unit.index("MemoryMax=")]
        self.assertIsNone(re.search(r"\d", memory), memory)
        # logrotate asks for a log reopen (SIGUSR1), never a reload (SIGHUP).
        with open(self.path("/etc/logrotate.d/herd"), encoding="utf-8") as f:
            rotate = f.read()
        self.assertIn("--signal=SIGUSR1 'herd@*.service'", rotate)
        self.assertNotIn("SIGHUP", rotate)
        # The documentation: README, the protocol, copyright, changelog.
        with open(self.path("/usr/share/doc/herd/PROTOCOL.md"), encoding="utf-8") as f:
            self.assertIn("## 9. topology.json", f.read())
        with open(self.path("/usr/share/doc/herd/copyright"), encoding="utf-8") as f:
            self.assertTrue(f.read().startswith("Format: https://www.debian.org/doc/packaging-manuals/"
                                                "copyright-format/1.0/"))
        with open(self.path("/etc/herd/topology.json"), encoding="utf-8") as f:
            topo = json.load(f)
        self.assertEqual(sorted(topo["servers"]), sorted(SERVERS))
        self.assertEqual((topo["state_dir"], topo["log_dir"], topo["keys_dir"]),
                         ("/var/lib/herd", "/var/log/herd", "/etc/herd/keys"))
        self.assertTrue(all(s["host"] == "127.0.0.1" for s in topo["servers"].values()))

    def test_4_check_config(self):
        server = self.path("/usr/bin/herd-server")
        proc = run([server, "--check-config", "--config", self.path("/etc/herd/topology.json"),
                    SERVER], check=False)
        self.assertEqual(proc.returncode, 0, proc.stderr.decode(errors="replace"))

    def test_4_herdctl(self):
        proc = run([self.path("/usr/bin/herdctl"), "help"], env=self.env)
        self.assertIn("usage: herdctl", proc.stdout.decode())

    def test_5_installed_server_runs(self):
        """The installed binary, on a copy of the installed topology whose ports
        are free ones and whose folders are the scratch root's."""
        with open(self.path("/etc/herd/topology.json"), encoding="utf-8") as f:
            topo = json.load(f)
        ports = iter(herdtest.free_ports(3 * len(topo["servers"])))
        for conf in topo["servers"].values():
            for key in ("client_port", "peer_port", "admin_port"):
                conf[key] = next(ports)
        topo["state_dir"] = self.path("/var/lib/herd")
        topo["log_dir"] = self.path("/var/log/herd")
        topo["keys_dir"] = self.path("/etc/herd/keys")
        config = os.path.join(self.tmp, "topology.json")
        with open(config, "w", encoding="utf-8") as f:
            json.dump(topo, f)
        env = dict(self.env)
        env.pop("HERD_PLACES_URL", None)
        proc = subprocess.Popen([self.path("/usr/bin/herd-server"), "--config", config, SERVER],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env, **herdtest._popen_kwargs())
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, b"")),
                                  daemon=True)
        reader.start()
        try:
            herdtest.wait_until(lambda: b"READY %s\n" % SERVER.encode() in lines
                                or proc.poll() is not None, timeout=15,
                                msg="READY from the installed server")
            if proc.poll() is not None:
                self.fail("the installed server exited %d: %s"
                          % (proc.returncode, proc.stderr.read().decode(errors="replace")))
            port = topo["servers"][SERVER]["client_port"]
            with herdtest.Client("127.0.0.1", port) as c:
                c.send(herdtest.iamat_line(b"package-test") + b"\n")
                reply = c.recv_line()
            self.assertTrue(reply.startswith(b"AT %s " % SERVER.encode()), reply)
            proc.send_signal(signal.SIGTERM)
            self.assertEqual(proc.wait(timeout=15), 0)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            reader.join(5)
            proc.stdout.close()
            proc.stderr.close()
        log = self.path("/var/log/herd/%s.log" % SERVER)
        with open(log, "rb") as f:
            self.assertIn(b"package-test", f.read())

    def test_5_reinstall_keeps_edits(self):
        """Installing again (as an upgrade does) keeps an edited conffile and
        the folders, and makes no second user."""
        topology = self.path("/etc/herd/topology.json")
        with open(topology, encoding="utf-8") as f:
            edited = f.read().replace('"fsync": "everysec"', '"fsync": "always"')
        with open(topology, "w", encoding="utf-8") as f:
            f.write(edited)
        before = {d: os.stat(self.path(d)) for d in ("/var/lib/herd", "/var/log/herd")}
        self.dpkg("--force-confold", "--install", self.deb)
        with open(topology, encoding="utf-8") as f:
            self.assertEqual(f.read(), edited)
        for d, st in before.items():
            now = os.stat(self.path(d))
            self.assertEqual((now.st_ino, now.st_uid, now.st_gid, now.st_mode),
                             (st.st_ino, st.st_uid, st.st_gid, st.st_mode), d)
        with open(self.path("/etc/passwd"), encoding="utf-8") as f:
            self.assertEqual([l.split(":")[0] for l in f], ["root", "herd"])

    # ------------------------------------------------------------ remove, purge

    def test_6_remove_then_purge(self):
        self.dpkg("--remove", "herd")
        self.assertFalse(os.path.exists(self.path("/usr/bin/herd-server")))
        self.assertFalse(os.path.exists(self.path("/usr/lib/systemd/system/herd@.service")))
        for kept in CONFFILES + ["/var/lib/herd", "/var/log/herd/%s.log" % SERVER]:
            self.assertTrue(os.path.exists(self.path(kept)), "%s gone after remove" % kept)
        self.assertIsNotNone(db_entry(self.root, "passwd", "herd"), "user gone after remove")

        self.dpkg("--purge", "herd")
        for gone in CONFFILES + ["/etc/herd", "/var/lib/herd", "/var/log/herd"]:
            self.assertFalse(os.path.exists(self.path(gone)), "%s left after purge" % gone)
        self.assertIsNone(db_entry(self.root, "passwd", "herd"), "user left after purge")
        self.assertIsNone(db_entry(self.root, "group", "herd"), "group left after purge")
        status = run(["dpkg-query", "--admindir=" + self.path("var/lib/dpkg"),
                      "-W", "-f=${Status}", "herd"], check=False).stdout.decode()
        self.assertIn(status, ("", "unknown ok not-installed"))

        # Nothing of it reached the machine itself.
        self.assertEqual(host_snapshot(), self.host_before)


if __name__ == "__main__":
    unittest.main()
