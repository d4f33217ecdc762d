"""The page at `/` of the admin port (issue 23, PROTOCOL.md section 9): the
herd as this server sees it, an inline SVG graph of the topology, each of
its links up or down, refreshed by itself, with no external asset. Checked
by its HTML (and its SVG parsed as XML) always, and in headless Chromium
with a screenshot where /usr/bin/chromium exists."""

import http.client
import os
import re
import shutil
import subprocess
import tempfile
import unittest
import xml.etree.ElementTree as ET

from herdtest import HOST, HerdTestCase, wait_until

LINK_TIMEOUT = 20
CHROMIUM = "/usr/bin/chromium"
SVG_NS = "{http://www.w3.org/2000/svg}"
SERVERS = ["Bailey", "Bona", "Campbell", "Clark", "Jaquez"]
LINKS = [("Bailey", "Bona"), ("Bailey", "Campbell"), ("Bona", "Campbell"), ("Bona", "Clark"),
         ("Campbell", "Jaquez"), ("Clark", "Jaquez")]


def output_dir():
    """Where screenshots go: $HERD_TEST_OUTPUT, else test-output/ in the build folder."""
    out = os.environ.get("HERD_TEST_OUTPUT") or os.path.join(
        os.environ.get("HERD_BUILD_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "build")),
        "test-output")
    os.makedirs(out, exist_ok=True)
    return out


class AdminPageTest(HerdTestCase):

    def setUp(self):
        self.herd = self.make_herd(servers=SERVERS, links=LINKS)
        self.herd.add_admin_ports(["Bona"])
        self.herd.start_all()
        for peer in ("Bailey", "Campbell", "Clark"):
            self.herd.wait_log("Bona", "link to %s up" % peer, LINK_TIMEOUT)
        # Links up is not yet ready: that is the first rejoin exchange done,
        # which Bona logs (the page said "starting" once in a CI run).
        self.herd.wait_log("Bona", "ready: ", LINK_TIMEOUT)
        self.url = "http://%s:%d/" % (HOST, self.herd.topology["servers"]["Bona"]["admin_port"])

    def page(self):
        port = self.herd.topology["servers"]["Bona"]["admin_port"]
        conn = http.client.HTTPConnection(HOST, port, timeout=5)
        try:
            conn.request("GET", "/")
            r = conn.getresponse()
            body = r.read().decode("utf-8")
            self.assertEqual(r.status, 200)
            self.assertEqual(r.getheader("Content-Type"), "text/html; charset=utf-8")
            return body
        finally:
            conn.close()

    def svg(self, html):
        """The inline SVG, parsed: it must be well-formed XML."""
        m = re.search(r"<svg\b.*?</svg>", html, re.S)
        self.assertIsNotNone(m, "no inline SVG")
        return ET.fromstring(m.group(0))

    @staticmethod
    def states(svg):
        servers = {g.get("data-name"): g.get("data-state") for g in svg.iter(SVG_NS + "g")
                   if g.get("class") == "server"}
        links = {(g.get("data-a"), g.get("data-b")): g.get("data-state") for g in svg.iter(SVG_NS + "g")
                 if g.get("class") == "link"}
        return servers, links

    def test_page_shows_every_server_and_a_link_down(self):
        html = self.page()
        # Self-contained and refreshed by itself.
        self.assertRegex(html, r'<meta http-equiv="refresh" content="\d+">')
        self.assertNotRegex(html, r'\b(src|href)="(https?:)?//')
        self.assertNotIn("<script", html)
        self.assertIn("<title>herd: Bona</title>", html)
        servers, links = self.states(self.svg(html))
        self.assertEqual(set(servers), set(SERVERS))
        self.assertEqual(set(links), set(LINKS))
        self.assertEqual(servers["Bona"], "ready")
        for peer in ("Bailey", "Campbell", "Clark"):
            self.assertEqual(servers[peer], "link up", peer)
        self.assertEqual(servers["Jaquez"], "unknown")  # not a neighbour: not known here
        for link, state in links.items():
            self.assertEqual(state, "up" if "Bona" in link else "unknown", link)
        self.assertRegex(html, r"\d+ records &middot;")
        for name in SERVERS:
            self.assertIn(">%s</text>" % name, html)
        self.screenshot("admin-page-up")

        self.herd.kill("Clark")

        def clark_down():
            s, li = self.states(self.svg(self.page()))
            return (s, li) if li[("Bona", "Clark")] == "down" else None
        servers, links = wait_until(clark_down, LINK_TIMEOUT, msg="the page never showed Bona-Clark down")
        self.assertEqual(servers["Clark"], "link down")
        self.assertEqual(links[("Bona", "Bailey") if ("Bona", "Bailey") in links else ("Bailey", "Bona")], "up")
        html = self.page()
        self.assertIn('<tr data-peer="Clark" data-state="down">', html)
        self.assertIn('<tr data-peer="Bailey" data-state="up">', html)
        self.screenshot("admin-page-clark-down")

    def screenshot(self, tag):
        """In headless Chromium, where installed: the page renders (the DOM
        it builds has every server), and a screenshot goes to the output
        folder."""
        if not os.access(CHROMIUM, os.X_OK):
            return
        profile = tempfile.mkdtemp(prefix="herd-chromium-")
        self.addCleanup(shutil.rmtree, profile, True)
        png = os.path.join(output_dir(), "%s.png" % tag)
        common = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--user-data-dir=" + profile, "--window-size=760,980", "--hide-scrollbars"]
        r = subprocess.run(common + ["--dump-dom", self.url], capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        dom = r.stdout
        for name in SERVERS:
            self.assertRegex(dom, r'<g class="server" data-name="%s"' % name)
        if os.path.exists(png):
            os.remove(png)
        r = subprocess.run(common + ["--screenshot=" + png, self.url], capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        self.assertTrue(os.path.getsize(png) > 10000, "a screenshot of %d bytes" % os.path.getsize(png))
        with open(png, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")


if __name__ == "__main__":
    unittest.main()
