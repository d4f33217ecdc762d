"""The man pages render without a single warning, within 80 columns.

Every man/*.[1-8] is rendered as an operator would read it,
MANWIDTH=80 man --warnings -l PAGE: the exit status must be 0, nothing may
be written to standard error (groff's warnings go there while man still
exits 0), and no rendered line may pass 80 columns. Skipped, saying so, when
man (Debian package man-db) is not installed.
"""

import glob
import os
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


if __name__ == "__main__":
    unittest.main()
