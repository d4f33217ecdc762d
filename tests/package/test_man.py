"""The man pages render without a single warning, within 80 columns, and
say what the programs do.

Every man/*.[1-8] is rendered as an operator would read it,
MANWIDTH=80 man --warnings -l PAGE: the exit status must be 0, nothing may
be written to standard error (groff's warnings go there while man still
exits 0), and no rendered line may pass 80 columns. Skipped, saying so, when
man (Debian package man-db) is not installed.

Against behaviour: every option of `herd-server --help` is in herd-server(8)
and every option of its OPTIONS section is in --help; every command of
`herdctl help` is a command herdctl runs and is in herdctl(8) with the same
options, and the reverse; herdctl(8) has every exit status herdctl uses and
the READY words its status prints. HERD_BUILD_DIR (set by ctest) names the
build tree with the herd-server to ask.
"""

import glob
import os
import re
import shutil
import subprocess
import sys
import unittest

SKIP_MARK = "HERD-PACKAGE-SKIPPED"  # ctest's SKIP_REGULAR_EXPRESSION
SOURCE = os.environ.get("HERD_SOURCE_DIR") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..")


class ManPages(unittest.TestCase):
    def test_pages_render_without_warnings(self):
        if not shutil.which("man"):
            print("%s: man not found (Debian package man-db)" % SKIP_MARK, file=sys.stderr)
            self.skipTest("man not found (Debian package man-db)")
        pages = sorted(glob.glob(os.path.join(SOURCE, "man", "*.[1-8]")))
        names = sorted(os.path.basename(p) for p in pages)
        self.assertEqual(names, ["herd-keygen.8", "herd-server.8", "herd-topology.json.5", "herdctl.8"])
        env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8", MAN_KEEP_FORMATTING="")
        env.pop("MANPAGER", None)
        env.pop("PAGER", None)
        for page in pages:
            with self.subTest(page=os.path.basename(page)):
                proc = subprocess.run(["man", "--warnings", "-l", page], env=env,
                                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, timeout=30)
                self.assertEqual(proc.returncode, 0)
                self.assertEqual(proc.stderr.decode(errors="replace"), "")
                text = proc.stdout.decode(errors="replace")
                self.assertIn("NAME", text)
                long_lines = [l for l in text.splitlines() if len(l) > 80]
                self.assertEqual(long_lines, [])


def render(page, width=200):
    """The page as man prints it, WIDTH columns wide, without formatting."""
    env = dict(os.environ, MANWIDTH=str(width), LC_ALL="C.UTF-8", MAN_KEEP_FORMATTING="")
    env.pop("MANPAGER", None)
    env.pop("PAGER", None)
    proc = subprocess.run(["man", "-l", os.path.join(SOURCE, "man", page)], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    text = proc.stdout.decode(errors="replace")
    return re.sub(".\b", "", text).replace("\u2010", "-").replace("\u2212", "-")


def section(text, name):
    """The lines of section NAME (a heading at column 0) of a rendered page."""
    m = re.search(r"^%s\n(.*?)(?=^\S|\Z)" % re.escape(name), text, re.M | re.S)
    return m.group(1) if m else ""


LONG_OPTION = re.compile(r"(?<![\w-])--[a-z][a-z-]*")
HERDCTL = os.path.join(SOURCE, "deploy", "herdctl")


class ManAgainstBehaviour(unittest.TestCase):
    def setUp(self):
        if not shutil.which("man"):
            print("%s: man not found (Debian package man-db)" % SKIP_MARK, file=sys.stderr)
            self.skipTest("man not found (Debian package man-db)")

    def test_herd_server_options(self):
        build = os.environ.get("HERD_BUILD_DIR") or os.path.join(SOURCE, "build")
        server = os.path.join(build, "herd-server")
        if not os.access(server, os.X_OK):
            self.skipTest("no herd-server in %s" % build)
        help_text = subprocess.run([server, "--help"], capture_output=True, text=True,
                                   timeout=30).stdout
        from_help = set(LONG_OPTION.findall(help_text))
        from_help.add("--help")  # it printed: the option is there
        page = render("herd-server.8")
        options = section(page, "OPTIONS")
        self.assertTrue(options, page[:500])
        self.assertEqual(from_help - set(LONG_OPTION.findall(page)), set(),
                         "in --help but not in herd-server(8)")
        self.assertEqual(set(LONG_OPTION.findall(options)) - from_help, set(),
                         "in herd-server(8)'s OPTIONS but not in --help")
        version = subprocess.run([server, "--version"], capture_output=True, text=True, timeout=30)
        self.assertRegex(version.stdout, r"^herd-server \S+\n\Z")
        for word in ("SIGHUP", "SIGUSR1", "SIGTERM", "/livez", "/readyz", "/healthz", "/config"):
            self.assertIn(word, page)

    def herdctl_usage(self):
        text = subprocess.run([HERDCTL, "help"], capture_output=True, text=True, timeout=30,
                              env=dict(os.environ, HERD_SERVER_BIN="/bin/false")).stdout
        commands = text.split("Commands:\n", 1)[1].split("\nOptions:", 1)[0]
        # A command's line: two spaces, its word, its synopsis.
        synopses = {}
        for line in commands.splitlines():
            m = re.match(r"  ([a-z]+)((?: \S+)*)", line)
            if m:
                synopses[m.group(1)] = set(re.findall(r"\[(-[-a-z]+|-n)", m.group(2)))
        options = text.split("\nOptions:\n", 1)[1].split("\n\n", 1)[0]
        return text, synopses, set(LONG_OPTION.findall(options))

    def test_herdctl_commands_and_options(self):
        text, synopses, global_options = self.herdctl_usage()
        self.assertIn("rotate", synopses)
        with open(HERDCTL, encoding="utf-8") as f:
            script = f.read()
        dispatch = re.search(r"case \$command in\n\s*(.*?)\) \"cmd_\$command\"", script).group(1)
        runs = {w.strip() for w in dispatch.split("|")}
        self.assertEqual(set(synopses), runs, "commands in help against those herdctl runs")
        for command in runs:
            self.assertIn("\ncmd_%s() {" % command, script)
        page = render("herdctl.8")
        man_commands = {}
        for line in section(page, "COMMANDS").splitlines():
            # A short tag shares its line with the text, two spaces on.
            m = re.match(r" {7}([a-z]+)((?: \S+)*?)(?: {2,}.*)?$", line)
            if m and m.group(1) in runs | {"build", "test"}:
                man_commands[m.group(1)] = set(re.findall(r"\[(-[-a-z]+|-n)", m.group(2)))
        self.assertEqual(man_commands, synopses, "herdctl(8) COMMANDS against herdctl help")
        self.assertEqual(set(LONG_OPTION.findall(section(page, "OPTIONS"))), global_options)
        # Exit statuses: those herdctl's usage names and returns.
        statuses = set(re.findall(r"^ {7}([0-9])(?: |$)", section(page, "EXIT STATUS"), re.M))
        self.assertEqual(statuses, {"0", "1", "2", "3", "4"})
        for word in ("draining", "not-durable", "starting", "dead", "HERD_RUN_DIR",
                     "need a restart", "--dry-run"):
            self.assertIn(word, page)


if __name__ == "__main__":
    unittest.main()
