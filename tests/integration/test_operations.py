"""Operating a running herd: live topology reload on SIGHUP, the admin
endpoint's /metrics and /healthz (PROTOCOL.md section 9, notes/metrics.md).

Reload: a server re-reads its topology file on SIGHUP and applies it without
a restart and without losing its table, logging "reload: topology applied
(N servers, M links)" and "link to X added/removed by the topology"; an
invalid file is logged as "reload: <reason>; keeping the running topology"
and changes nothing. Each test reads only the part of a log written after
its own signal (the file's size just before it), so an earlier line never
answers a later question.

Where a test must show that an update did NOT reach a server, it first makes
the update's arrival observable: a server that dropped a neighbour rejects
that neighbour's messages and counts them (herd_peer_rejected_total), so the
test waits for the count to move and only then asks the server for the
client.

The admin endpoint is HTTP on the server's admin_port; /metrics is parsed
strictly as the Prometheus text format (every line a comment, blank, or
`name{labels} value`).

Run: cd tests/integration && HERD_SERVER=.../herd-server python3 -m unittest -v test_operations
"""

import http.client
import json
import os
import signal
import socket
import sys
import time
import unittest
import uuid

from herdtest import (AT_RE_B, HOST, PLACES_KEY_ENV, POS, HerdTestCase, free_ports, iamat_line,
                      now_text, wait_until)
from places_standin import PlacesStandIn

# herdctl's own parser of /metrics (deploy/lib/metrics.py): one parser for both.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "deploy", "lib"))
from metrics import Metrics  # noqa: E402

A, B, C, D = "Aspen", "Birch", "Cedar", "Dogwood"
SEEN_TIMEOUT = 5   # a flooded update crosses a link in milliseconds
LINK_TIMEOUT = 10  # a DEALER retries every 50 ms


def uid(tag):
    """A client id no other test uses."""
    return ("ops-%s-%s" % (tag, uuid.uuid4().hex[:10])).encode()


# ------------------------------------------------------------------ HTTP

def http_request(herd, name, method="GET", path="/metrics", timeout=5):
    """(status, headers dict with lower-case names, body bytes)."""
    port = herd.topology["servers"][name]["admin_port"]
    conn = http.client.HTTPConnection(herd.host(name), port, timeout=timeout)
    try:
        conn.request(method, path)
        r = conn.getresponse()
        body = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body
    finally:
        conn.close()


def config(herd, name):
    """The /config document of `name` (a dict)."""
    status, headers, body = http_request(herd, name, path="/config")
    assert status == 200, "/config of %s: HTTP %d %r" % (name, status, body)
    assert headers.get("content-type", "").startswith("application/json"), headers
    return json.loads(body)


def wait_generation(herd, name, generation, timeout=LINK_TIMEOUT):
    """The /config of `name` once its generation reached `generation`."""
    return wait_until(lambda: (lambda c: c if c["generation"] >= generation else None)(config(herd, name)),
                      timeout, msg="%s never reached config generation %d" % (name, generation))


def metrics(herd, name):
    status, headers, body = http_request(herd, name)
    assert status == 200, "/metrics of %s: HTTP %d %r" % (name, status, body)
    assert headers.get("content-type", "").startswith("text/plain; version=0.0.4"), headers
    text = body.decode("utf-8")
    assert text.endswith("\n"), "/metrics does not end with a newline"
    return Metrics(text)


# ------------------------------------------------------------------ helpers

class OpsCase(HerdTestCase):

    def herd_with_admin(self, servers, links=(), admin=None, **kw):
        """A herd whose servers in `admin` (default: all) have an admin_port;
        the admin ports are chosen apart from the herd's own ports."""
        herd = self.make_herd(servers=servers, links=links, **kw)
        for name in (servers if admin is None else admin):
            herd.topology["servers"][name]["admin_port"] = self.fresh_port(herd)
        herd.write_topology()
        return herd

    @staticmethod
    def fresh_port(herd):
        used = {p for conf in herd.topology["servers"].values()
                for key, p in conf.items() if key.endswith("_port")}
        while True:
            port = free_ports(1)[0]
            if port not in used:
                return port

    def iamat(self, herd, name, cid, t=None):
        t = now_text() if t is None else t
        reply = herd.send(name, iamat_line(cid, POS, t) + b"\n")
        m = AT_RE_B.match(reply[:-1])
        self.assertTrue(m and reply.endswith(b"\n"), reply)
        self.assertEqual((m.group(1), m.group(3)), (name.encode(), cid), reply)
        return reply[:-1]

    @staticmethod
    def first_line(herd, name, cid):
        """The first line of a WHATSAT reply: the stored AT line, or the
        '? ...' line of a client the server does not know."""
        reply = herd.send(name, b"WHATSAT " + cid + b" 10 5\n")
        return reply.split(b"\n", 1)[0]

    def assert_unknown(self, herd, name, cid):
        self.assertEqual(self.first_line(herd, name, cid), b"? WHATSAT " + cid + b" 10 5")

    def wait_seen(self, herd, name, cid, at, timeout=SEEN_TIMEOUT):
        wait_until(lambda: self.first_line(herd, name, cid) == at, timeout,
                   msg="%s never stored %r; it answers %r"
                   % (name, at, self.first_line(herd, name, cid)))

    def wait_log_after(self, herd, name, offset, text, timeout=LINK_TIMEOUT):
        """The first line written at or after `offset` that holds `text`."""
        def look():
            for line in herd.log_since(name, offset).split("\n"):
                if text in line:
                    return line
            return None
        try:
            return wait_until(look, timeout, interval=0.02)
        except AssertionError:
            self.fail("%s.log has no %r after byte %d; it says:\n%s"
                      % (name, text, offset, herd.log_since(name, offset)[-3000:]))

    def sighup(self, herd, *names):
        """SIGHUP to each; returns {name: log size just before its signal}."""
        offsets = {}
        for name in names:
            offsets[name] = herd.log_size(name)
            os.kill(herd.pid(name), signal.SIGHUP)
        return offsets

    def wait_applied(self, herd, offsets, n_servers, n_links):
        want = "reload: topology applied (%d servers, %d links)" % (n_servers, n_links)
        for name, offset in offsets.items():
            self.wait_log_after(herd, name, offset, want)
            self.assertNotIn("keeping the running topology", herd.log_since(name, offset))


# ------------------------------------------------------------------ reload

class ReloadTest(OpsCase):

    def test_reload_adds_a_link(self):
        herd = self.herd_with_admin([A, B])
        herd.start_all()
        before = uid("before")
        at_before = self.iamat(herd, A, before)
        self.assert_unknown(herd, B, before)
        self.assertEqual(metrics(herd, A).peers("herd_link_up"), {})

        herd.topology["links"] = [[A, B]]
        herd.write_topology()
        offsets = self.sighup(herd, A, B)
        self.wait_applied(herd, offsets, 2, 1)
        self.wait_log_after(herd, A, offsets[A], "link to %s added by the topology" % B)
        self.wait_log_after(herd, B, offsets[B], "link to %s added by the topology" % A)
        self.wait_log_after(herd, A, offsets[A], "link to %s up" % B)
        self.wait_log_after(herd, B, offsets[B], "link to %s up" % A)

        after = uid("after")
        at_after = self.iamat(herd, A, after)
        self.wait_seen(herd, B, after, at_after)
        # The new link's rejoin exchange brought over what A held before it.
        self.wait_seen(herd, B, before, at_before)
        # The table survived the reload.
        self.assertEqual(self.first_line(herd, A, before), at_before)
        self.assertEqual(metrics(herd, A).peers("herd_link_up"), {B: 1})
        self.assertEqual(metrics(herd, B).peers("herd_link_up"), {A: 1})

    def test_reload_removes_a_link(self):
        herd = self.herd_with_admin([A, B], links=[(A, B)])
        herd.start_all()
        herd.wait_log(A, "link to %s up" % B, LINK_TIMEOUT)
        herd.wait_log(B, "link to %s up" % A, LINK_TIMEOUT)
        linked = uid("linked")
        at_linked = self.iamat(herd, A, linked)
        self.wait_seen(herd, B, linked, at_linked)

        # B drops the link first: A still floods to B, and B must refuse it.
        herd.topology["links"] = []
        herd.write_topology()
        offsets = self.sighup(herd, B)
        self.wait_applied(herd, offsets, 2, 0)
        self.wait_log_after(herd, B, offsets[B], "link to %s removed by the topology" % A)
        self.assertEqual(metrics(herd, B).peers("herd_link_up"), {})
        rejected = metrics(herd, B).get("herd_peer_rejected_total")
        self.assertIsNotNone(rejected)

        refused = uid("refused")
        self.iamat(herd, A, refused)
        wait_until(lambda: metrics(herd, B).get("herd_peer_rejected_total") > rejected,
                   SEEN_TIMEOUT, msg="%s never rejected %s's update" % (B, A))
        self.wait_log_after(herd, B, offsets[B],
                            "dropped a message from a sender that is not a neighbour: \"%s\"" % A)
        self.assert_unknown(herd, B, refused)
        self.assertEqual(self.first_line(herd, B, linked), at_linked)  # kept its table

        # Then A drops it too: it no longer sends anything to B.
        offsets = self.sighup(herd, A)
        self.wait_applied(herd, offsets, 2, 0)
        self.wait_log_after(herd, A, offsets[A], "link to %s removed by the topology" % B)
        m = metrics(herd, A)
        self.assertEqual(m.peers("herd_link_up"), {})
        self.assertEqual(m.peers("herd_flood_dropped_total"), {})
        rejected = metrics(herd, B).get("herd_peer_rejected_total")
        alone = uid("alone")
        at_alone = self.iamat(herd, A, alone)
        self.assertEqual(self.first_line(herd, A, alone), at_alone)
        self.assert_unknown(herd, B, alone)
        self.assertEqual(metrics(herd, B).get("herd_peer_rejected_total"), rejected)

    def test_invalid_reload_keeps_the_running_topology(self):
        herd = self.herd_with_admin([A, B], links=[(A, B)], admin=[A])
        herd.start_all()
        herd.wait_log(A, "link to %s up" % B, LINK_TIMEOUT)
        good = json.loads(json.dumps(herd.topology))

        before = config(herd, A)
        self.assertEqual((before["generation"], before["last_reload"]), (0, None))
        self.assertEqual(metrics(herd, A).get("herd_config_last_reload_success"), 1)
        with open(herd.topology_path, "w") as f:
            f.write("{ this is not a topology\n")
        offsets = self.sighup(herd, A)
        line = self.wait_log_after(herd, A, offsets[A], "keeping the running topology")
        self.assertRegex(line, r"reload: .*topology\.json:1:\d+: .+; keeping the running topology$")
        # The outcome, from the server itself rather than from the log's wording.
        last = wait_generation(herd, A, 1)["last_reload"]
        self.assertFalse(last["ok"])
        self.assertRegex(last["reason"], r"topology\.json:1:\d+: ")
        self.assertEqual(last["needs_restart"], [])
        m = metrics(herd, A)
        self.assertEqual((m.get("herd_config_generation"), m.get("herd_config_last_reload_success")), (1, 0))

        herd.topology["links"].append([A, "Ghost"])
        herd.write_topology()
        offsets = self.sighup(herd, A)
        line = self.wait_log_after(herd, A, offsets[A], "keeping the running topology")
        self.assertIn('names unknown server "Ghost"; keeping the running topology', line)

        for offset in offsets.values():
            text = herd.log_since(A, offset)
            self.assertNotIn("removed by the topology", text)
            self.assertNotIn("topology applied", text)
        self.assertEqual(metrics(herd, A).peers("herd_link_up"), {B: 1})
        cid = uid("kept")
        self.wait_seen(herd, B, cid, self.iamat(herd, A, cid))

        # The good file again: applied, with no link change.
        herd.topology = good
        herd.write_topology()
        offsets = self.sighup(herd, A)
        self.wait_applied(herd, offsets, 2, 1)
        self.assertNotIn("by the topology", herd.log_since(A, offsets[A]))
        last = wait_generation(herd, A, 3)["last_reload"]
        self.assertEqual((last["ok"], last["reason"], last["needs_restart"]),
                         (True, "topology applied (2 servers, 1 links)", []))
        self.assertEqual(metrics(herd, A).get("herd_config_last_reload_success"), 1)

    def test_own_port_change_takes_a_restart(self):
        herd = self.herd_with_admin([A])
        herd.start(A)
        old_port = herd.port(A)
        new_port = self.fresh_port(herd)
        herd.topology["servers"][A]["client_port"] = new_port
        herd.write_topology()
        offsets = self.sighup(herd, A)
        self.wait_log_after(herd, A, offsets[A], "reload: topology applied (1 servers, 0 links); "
                            "needs a restart for: client_port (these keep their running values)")
        self.wait_applied(herd, offsets, 1, 0)
        last = wait_generation(herd, A, 1)["last_reload"]
        self.assertEqual((last["ok"], last["needs_restart"]), (True, ["client_port"]))
        self.assertEqual(metrics(herd, A).get("herd_config_restart_needed"), 1)
        cid = uid("port")
        with socket.create_connection((HOST, old_port), timeout=5) as s:
            s.sendall(iamat_line(cid) + b"\n")
            s.shutdown(socket.SHUT_WR)
            reply = b""
            while not reply.endswith(b"\n"):
                data = s.recv(4096)
                if not data:
                    break
                reply += data
        self.assertTrue(AT_RE_B.match(reply[:-1]), reply)
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection((HOST, new_port), timeout=5).close()

    def test_log_dir_change_takes_a_restart(self):
        # The server keeps its log where it is, says the change needs a
        # restart, and /config names the folder it really writes to.
        herd = self.herd_with_admin([A])
        herd.start(A)
        old_dir = config(herd, A)["log_dir"]
        self.assertEqual(old_dir, os.path.join(os.path.realpath(herd.tmpdir), "logs"))
        herd.topology["log_dir"] = "elsewhere"
        herd.topology["limits"] = dict(herd.topology.get("limits", {}), max_clients=77)
        herd.write_topology()
        self.sighup(herd, A)
        doc = wait_generation(herd, A, 1)
        self.assertEqual(doc["log_dir"], old_dir)
        self.assertEqual((doc["last_reload"]["ok"], doc["last_reload"]["needs_restart"]), (True, ["log_dir"]))
        # The log is written by its own thread: wait for the line to land.
        def logged():
            with open(os.path.join(old_dir, A + ".log")) as f:
                return "needs a restart for: log_dir" in f.read()
        wait_until(logged, 10, msg="no 'needs a restart for: log_dir' in the old log")
        self.assertFalse(os.path.exists(os.path.join(herd.tmpdir, "elsewhere", A + ".log")))

    def test_server_added_by_reload_joins_and_gets_the_table(self):
        herd = self.herd_with_admin([A, B, C], links=[(A, B), (B, C)], admin=[C])
        herd.start_all()
        herd.wait_log(A, "link to %s up" % B, LINK_TIMEOUT)
        herd.wait_log(C, "link to %s up" % B, LINK_TIMEOUT)
        stored = {}
        for name in (A, B, C):
            cid = uid("at-" + name)
            stored[cid] = self.iamat(herd, name, cid)
        for cid, at in stored.items():
            for name in (A, B, C):
                self.wait_seen(herd, name, cid, at)

        client_port, peer_port = self.fresh_port(herd), None
        while peer_port is None or peer_port == client_port:
            peer_port = self.fresh_port(herd)
        herd.topology["servers"][D] = {"host": HOST, "client_port": client_port,
                                       "peer_port": peer_port}
        herd.topology["links"].append([C, D])
        herd.names.append(D)
        herd.write_topology()
        offsets = self.sighup(herd, A, B, C)
        self.wait_applied(herd, offsets, 4, 3)
        self.wait_log_after(herd, C, offsets[C], "link to %s added by the topology" % D)
        for name in (A, B):
            self.assertNotIn("by the topology", herd.log_since(name, offsets[name]))

        herd.start(D)
        self.wait_log_after(herd, C, offsets[C], "link to %s up" % D)
        for cid, at in stored.items():
            self.wait_seen(herd, D, cid, at)
        m = metrics(herd, C)
        self.assertEqual(m.get("herd_link_up", peer=D), 1)
        self.assertGreaterEqual(m.get("herd_repair_rounds_total", peer=D), 1)
        # And D's own clients reach the far end of the herd.
        cid = uid("from-d")
        self.wait_seen(herd, A, cid, self.iamat(herd, D, cid))


# ------------------------------------------------------------------ metrics

# The metrics of notes/metrics.md, with the label sets each must carry.
CONTRACT = [
    ("herd_info", {}), ("herd_ready", None), ("herd_clients", None),
    ("herd_client_connections", None),
    ("herd_commands_total", {"command": "IAMAT", "outcome": "stored"}),
    ("herd_commands_total", {"command": "IAMAT", "outcome": "not_newer"}),
    ("herd_commands_total", {"command": "WHATSAT", "outcome": "answered"}),
    ("herd_commands_total", {"command": "WHATSAT", "outcome": "unknown_client"}),
    ("herd_invalid_lines_total", None),
    ("herd_peer_updates_total", {"outcome": "stored"}), ("herd_peer_updates_total", {"outcome": "not_newer"}),
    ("herd_peer_updates_total", {"outcome": "invalid"}), ("herd_peer_updates_total", {"outcome": "refused"}),
    ("herd_peer_rejected_total", None),
    ("herd_places_requests_total", {"result": "upstream"}),
    ("herd_places_requests_total", {"result": "shared"}),
    ("herd_places_requests_total", {"result": "cache_hit"}),
    ("herd_places_requests_total", {"result": "error"}),
    ("herd_places_upstream_seconds_bucket", {"le": "+Inf"}),
    ("herd_places_upstream_seconds_sum", None), ("herd_places_upstream_seconds_count", None),
]
PER_PEER = ["herd_link_up", "herd_flood_dropped_total", "herd_repair_rounds_total"]
PER_PEER_DIRECTION = ["herd_flood_updates_total", "herd_flood_messages_total"]


class MetricsTest(OpsCase):

    def test_metrics_is_prometheus_text_with_the_contract_names(self):
        herd = self.herd_with_admin([A, B], links=[(A, B)], admin=[A])
        herd.start_all()
        herd.wait_log(A, "link to %s up" % B, LINK_TIMEOUT)
        m = metrics(herd, A)  # parses every line strictly
        self.assertEqual(m.get("herd_info", server=A), 1)
        missing = [(name, labels) for name, labels in CONTRACT
                   if name != "herd_info" and m.get(name, **(labels or {})) is None]
        self.assertEqual(missing, [], "missing samples; /metrics:\n" + m.text)
        for name in PER_PEER:
            self.assertEqual(list(m.peers(name)), [B], name)
        for name in PER_PEER_DIRECTION:
            for direction in ("out", "in"):
                self.assertIsNotNone(m.get(name, direction=direction, peer=B), (name, direction))
        self.assertEqual(m.types["herd_places_upstream_seconds"], "histogram")
        buckets = sorted(((float(dict(k[1])["le"]), v) for k, v in m.samples.items()
                          if k[0] == "herd_places_upstream_seconds_bucket"))
        counts = [v for _, v in buckets]
        self.assertEqual(counts, sorted(counts), "buckets must be cumulative")
        self.assertEqual(buckets[-1][0], float("inf"))
        self.assertEqual(buckets[-1][1], m.get("herd_places_upstream_seconds_count"))
        for name, kind in (("herd_clients", "gauge"), ("herd_link_up", "gauge"),
                           ("herd_commands_total", "counter"),
                           ("herd_flood_updates_total", "counter")):
            self.assertEqual(m.types.get(name), kind, name)
        # CPU seconds of every thread: the node, each front end, the log writer.
        self.assertEqual(m.types.get("herd_thread_cpu_seconds_total"), "counter")
        threads = sorted(dict(k[1])["thread"] for k in m.samples if k[0] == "herd_thread_cpu_seconds_total")
        # frontend_threads: the topology's, else min(4, cores - 1), and 0 (the
        # front end on the node's thread, counted there) on 2 cores or fewer.
        cores = os.cpu_count() or 1
        fes = herd.topology.get("frontend_threads", 0 if cores <= 2 else min(4, cores - 1))
        self.assertIn("node", threads)
        self.assertIn("log", threads)
        self.assertEqual(sorted(t for t in threads if t.startswith("frontend-")),
                         sorted("frontend-%d" % i for i in range(fes)), threads)
        self.assertGreater(m.get("herd_thread_cpu_seconds_total", thread="node"), 0)

    def test_metrics_follow_the_traffic(self):
        names = [A, B, C]
        herd = self.herd_with_admin(names, links=[(A, B), (B, C), (A, C)])
        herd.start_all()
        for name in names:
            wait_until(lambda name=name: list(metrics(herd, name).peers("herd_link_up").values())
                       == [1, 1], LINK_TIMEOUT, msg="links of %s never all up" % name)
        base = {name: metrics(herd, name) for name in names}
        cid, unknown = uid("traffic"), uid("nobody")
        t_new, t_old = now_text(), b"1621464827.959498503"

        with herd.connect(A) as c:
            wait_until(lambda: metrics(herd, A).get("herd_client_connections") == 1, 5,
                       msg="herd_client_connections never 1 with one client open")
            c.send(iamat_line(cid, POS, t_new) + b"\n")
            at = c.recv_line()[:-1]
            self.assertTrue(AT_RE_B.match(at), at)
            c.send(iamat_line(cid, POS, t_new) + b"\n")  # same time
            c.recv_line()
            c.send(iamat_line(cid, POS, t_old) + b"\n")  # older
            c.recv_line()
            c.send(b"WHATSAT " + cid + b" 10 5\n")
            self.assertEqual(c.recv_until(b"\n\n").split(b"\n", 1)[0], at)
            c.send(b"WHATSAT " + unknown + b" 10 5\n")
            self.assertEqual(c.recv_line(), b"? WHATSAT " + unknown + b" 10 5\n")
            c.send(b"HELLO there\n")
            self.assertEqual(c.recv_line(), b"? HELLO there\n")
            self.assertEqual(metrics(herd, A).get("herd_client_connections"), 1)
        wait_until(lambda: metrics(herd, A).get("herd_client_connections") == 0, 5,
                   msg="herd_client_connections never back to 0")

        def delta(m, name, server, **labels):
            before = base[server].get(name, **labels) or 0
            return (m.get(name, **labels) or 0) - before

        m = metrics(herd, A)
        for (command, outcome), want in {("IAMAT", "stored"): 1, ("IAMAT", "not_newer"): 2,
                                         ("WHATSAT", "answered"): 1,
                                         ("WHATSAT", "unknown_client"): 1}.items():
            self.assertEqual(delta(m, "herd_commands_total", A, command=command, outcome=outcome),
                             want, (command, outcome))
        # Every line answered with "?": the bad command and the unknown client.
        self.assertEqual(delta(m, "herd_invalid_lines_total", A), 2)
        self.assertEqual(delta(m, "herd_clients", A), 1)
        self.assertEqual(delta(m, "herd_flood_updates_total", A, direction="out", peer=B), 1)
        self.assertEqual(delta(m, "herd_flood_updates_total", A, direction="out", peer=C), 1)
        self.assertGreaterEqual(delta(m, "herd_flood_messages_total", A, direction="out", peer=B), 1)

        # A triangle: A sends to B and C; each of them stores it once and
        # floods it on to the other (never back to A, who made it). If B's
        # copy reaches C before A's, C stores B's and has no one left to send
        # to. So, in all: 4 AT lines sent and received (3 in that order),
        # 2 stored from peers, the rest dropped as duplicates.
        def settled():
            ms = {name: metrics(herd, name) for name in names}

            def total(name, **labels):
                return sum(ms[n].total(name, **labels) - base[n].total(name, **labels)
                           for n in names)
            got = (total("herd_flood_updates_total", direction="out"),
                   total("herd_flood_updates_total", direction="in"),
                   total("herd_peer_updates_total", outcome="stored"),
                   total("herd_peer_updates_total", outcome="not_newer"),
                   [ms[n].get("herd_clients") - base[n].get("herd_clients") for n in names])
            ok = got[0] in (3, 4) and got[1] == got[0] and got[2] == 2 and got[3] == got[1] - 2
            return got if ok and got[4] == [1, 1, 1] else None
        try:
            wait_until(settled, SEEN_TIMEOUT)
        except AssertionError:
            ms = {name: metrics(herd, name).text for name in names}
            self.fail("the flood counters never settled at 4 (or 3) out and in, 2 stored, the rest dropped:\n"
                      + "\n".join("--- %s\n%s" % kv for kv in ms.items()))
        for name in (B, C):
            self.assertEqual(self.first_line(herd, name, cid), at)

    def test_places_results_are_a_partition(self):
        """herd_places_requests_total{result} counts each lookup once: an
        upstream call that failed is an error, not an upstream answer too."""
        with PlacesStandIn() as places:
            herd = self.herd_with_admin([A], env={"HERD_PLACES_URL": places.url, PLACES_KEY_ENV: "k"},
                                        places={"cache_ttl_ms": 60000})
            herd.start(A)
            cid = uid("partition")
            self.iamat(herd, A, cid)

            def ask(radius):
                c = socket.create_connection((HOST, herd.port(A)), timeout=10)
                with c:
                    c.sendall(b"WHATSAT " + cid + b" %d 5\n" % radius)
                    c.shutdown(socket.SHUT_WR)
                    data = b""
                    while not data.endswith(b"\n\n"):
                        chunk = c.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    return data
            ask(10)                       # upstream, OK
            ask(10)                       # cache hit
            places.set_mode("http_error")
            ask(20)                       # upstream, failed: an error
            m = metrics(herd, A)
            got = {r: m.get("herd_places_requests_total", result=r)
                   for r in ("upstream", "shared", "cache_hit", "error")}
            self.assertEqual(got, {"upstream": 1, "shared": 0, "cache_hit": 1, "error": 1})
            self.assertIsNone(m.get("herd_places_errors_total"))  # counted once, in the family above

    def test_flood_counters_per_peer(self):
        herd = self.herd_with_admin([A, B], links=[(A, B)])
        herd.start_all()
        herd.wait_log(A, "link to %s up" % B, LINK_TIMEOUT)
        herd.wait_log(B, "link to %s up" % A, LINK_TIMEOUT)
        base_a, base_b = metrics(herd, A), metrics(herd, B)
        cids = [uid("n%d" % i) for i in range(5)]
        for cid in cids:
            self.iamat(herd, A, cid)

        def moved():
            a, b = metrics(herd, A), metrics(herd, B)
            return (a.get("herd_flood_updates_total", direction="out", peer=B)
                    - base_a.get("herd_flood_updates_total", direction="out", peer=B),
                    b.get("herd_flood_updates_total", direction="in", peer=A)
                    - base_b.get("herd_flood_updates_total", direction="in", peer=A),
                    b.get("herd_peer_updates_total", outcome="stored")
                    - base_b.get("herd_peer_updates_total", outcome="stored"),
                    b.get("herd_clients") - base_b.get("herd_clients"))
        wait_until(lambda: moved() == (5, 5, 5, 5), SEEN_TIMEOUT,
                   msg="A->B counters: %r, want (5, 5, 5, 5)" % (moved(),))
        a = metrics(herd, A)
        self.assertEqual(a.get("herd_flood_dropped_total", peer=B), 0)
        self.assertGreaterEqual(a.get("herd_flood_messages_total", direction="out", peer=B)
                                - base_a.get("herd_flood_messages_total", direction="out", peer=B), 1)
        self.assertEqual(a.get("herd_peer_updates_total", outcome="not_newer"),
                         base_a.get("herd_peer_updates_total", outcome="not_newer"))


# ------------------------------------------------------------------ healthz

class HealthzTest(OpsCase):
    """/healthz: "STATE: reason", 200 for ready, 503 for starting and
    draining (README: health)."""

    def healthz(self, herd, name):
        status, _, body = http_request(herd, name, path="/healthz")
        self.assertRegex(body, rb"\A(ready|starting|draining|not durable|isolated): [^\n]+\n\Z")
        self.assertEqual(status, 200 if body.startswith(b"ready:") else 503, body)
        return status, body.decode()

    def test_ready_comes_after_the_exchange_with_a_neighbour(self):
        herd = self.herd_with_admin([A, B], links=[(A, B)], admin=[A])
        herd.start(B)
        cid = uid("held")
        at = self.iamat(herd, B, cid)
        herd.start(A)
        wait_until(lambda: self.healthz(herd, A)[0] == 200, LINK_TIMEOUT,
                   msg="%s never became ready" % A)
        self.assertEqual(self.healthz(herd, A)[1], "ready: first exchange with a neighbour done\n")
        # Ready means the exchange is done: A holds B's table at once.
        self.assertEqual(self.first_line(herd, A, cid), at)
        self.assertEqual(metrics(herd, A).get("herd_ready"), 1)
        # The log has its own writer thread: wait for the line to land.
        log = wait_until(lambda: (lambda t: t if "health: ready: first exchange" in t else None)(herd.log_text(A)),
                         10, msg="no health: ready line in %s's log" % A)
        self.assertLess(log.index("repair: exchange with %s done" % B),
                        log.index("health: ready: first exchange with a neighbour done"))

    def test_not_ready_while_no_neighbour_answers(self):
        # Its neighbour is in the topology but never started: a restarted
        # server that says ready now would answer "?" for clients the herd
        # knows. It stays "starting" past the old one-second rule...
        herd = self.herd_with_admin([A, B], links=[(A, B)], admin=[A])
        herd.start(A)
        started = time.monotonic()
        wait_until(lambda: time.monotonic() - started >= 1.5, 3, interval=0.05)
        status, body = self.healthz(herd, A)
        self.assertEqual((status, body),
                         (503, "starting: waiting for the first exchange with a neighbour (at most 30 s)\n"))
        self.assertEqual(metrics(herd, A).get("herd_ready"), 0)
        # ...and becomes ready as soon as the neighbour comes and they exchange.
        herd.start(B)
        wait_until(lambda: self.healthz(herd, A)[0] == 200, LINK_TIMEOUT, msg="never ready")
        self.assertEqual(self.healthz(herd, A)[1], "ready: first exchange with a neighbour done\n")

    def test_ready_when_the_configured_wait_expires(self):
        # Past its wait a server stops waiting for the first exchange, but a
        # server that reaches none of its neighbours is still not ready
        # (PROTOCOL section 9): "isolated" until one comes.
        herd = self.herd_with_admin([A, B], links=[(A, B)], admin=[A])
        herd.start(A, extra_args=("--ready-wait", "1"))
        started = time.monotonic()
        status, body = self.healthz(herd, A)
        if time.monotonic() - started < 0.5:  # otherwise a slow machine may be past it
            self.assertEqual((status, body),
                             (503, "starting: waiting for the first exchange with a neighbour (at most 1 s)\n"))
        wait_until(lambda: self.healthz(herd, A)[1].startswith("isolated:"), 3.0, msg="still starting after 1 s")
        self.assertEqual(self.healthz(herd, A), (503, "isolated: reaches none of its 1 neighbour\n"))
        herd.wait_log(A, "health: isolated: reaches none of its 1 neighbour", 2)
        herd.start(B)
        wait_until(lambda: self.healthz(herd, A)[0] == 200, LINK_TIMEOUT, msg="not ready once B came")
        wait_until(lambda: self.healthz(herd, A)[1] == "ready: first exchange with a neighbour done\n",
                   LINK_TIMEOUT, msg="the reason never said the exchange")

    def test_server_without_neighbours_is_ready_at_once(self):
        herd = self.herd_with_admin([A])
        herd.start(A)
        self.assertEqual(self.healthz(herd, A), (200, "ready: no neighbour in the topology\n"))

    def test_draining_after_sigterm(self):
        with PlacesStandIn() as places:
            places.set_mode("hold")
            herd = self.herd_with_admin([A], env={"HERD_PLACES_URL": places.url, PLACES_KEY_ENV: "k"})
            herd.start(A)
            cid = uid("drain")
            self.iamat(herd, A, cid)
            # A WHATSAT held upstream: the server owes a reply, so it drains.
            c = socket.create_connection((HOST, herd.port(A)), timeout=10)
            self.addCleanup(c.close)
            c.sendall(b"WHATSAT " + cid + b" 10 5\n")
            self.assertTrue(places.wait_for_count(1, timeout=5))
            os.kill(herd.pid(A), signal.SIGTERM)
            wait_until(lambda: self.healthz(herd, A)[0] == 503, 5, msg="never said draining")
            self.assertEqual(self.healthz(herd, A),
                             (503, "draining: stopping after SIGTERM, finishing owed replies\n"))
            places.release()
            self.assertTrue(c.recv(65536).startswith(b"AT "))
            self.assertEqual(herd.wait_exit(A, 10), 0)

    def test_methods_and_paths(self):
        herd = self.herd_with_admin([A])
        herd.start(A)
        status, headers, body = http_request(herd, A, path="/healthz")
        self.assertEqual(status, 200)
        self.assertTrue(headers["content-type"].startswith("text/plain"), headers)
        for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
            for path in ("/metrics", "/healthz", "/config", "/", "/livez", "/readyz"):
                status, headers, _ = http_request(herd, A, method=method, path=path)
                self.assertEqual(status, 405, (method, path))
                self.assertEqual(headers.get("allow"), "GET, HEAD", (method, path))
        for method in ("GET", "OPTIONS", "POST"):
            for path in ("/nope", "/metrics/x", "/healthzz", "/METRICS", "/index.html"):
                status, headers, _ = http_request(herd, A, method=method, path=path)
                self.assertEqual(status, 404, (method, path))
                self.assertNotIn("allow", headers)
        doc = config(herd, A)
        self.assertEqual(doc["topology"], os.path.realpath(herd.topology_path))
        self.assertEqual(doc["generation"], 0)
        # The server is still whole.
        cid = uid("after-http")
        self.assertEqual(self.first_line(herd, A, cid), b"? WHATSAT " + cid + b" 10 5")


class AdminAbuseTest(OpsCase):
    """The admin endpoint against slow and many clients (issue 11)."""

    def test_drip_feeders_cannot_blind_healthz(self):
        herd = self.herd_with_admin([A])
        herd.start(A)
        port = herd.topology["servers"][A]["admin_port"]
        drippers = []
        self.addCleanup(lambda: [d.close() for d in drippers])
        for _ in range(70):
            d = socket.socket()
            d.settimeout(5)
            try:
                d.connect((HOST, port))
                d.sendall(b"G")
            except OSError:
                d.close()
                continue
            drippers.append(d)
        self.assertGreaterEqual(len(drippers), 30)

        def probe(source):
            s = socket.create_connection((HOST, port), timeout=3, source_address=(source, 0))
            with s:
                s.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
                data = b""
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        return data
                    data += chunk

        # Another address is not held back by the per-address cap at all.
        t0 = time.monotonic()
        self.assertIn(b"ready: ", probe("127.0.0.2"))
        self.assertLess(time.monotonic() - t0, 2.0)

        # The same address: the drippers are cut at their deadline however
        # often they send, so the probe gets a slot within a couple of seconds.
        def drip_and_probe():
            for d in drippers:
                try:
                    d.sendall(b"E")
                except OSError:
                    pass
            try:
                return b"ready: " in probe(HOST)
            except OSError:
                return False
        wait_until(drip_and_probe, 4, interval=0.2, msg="/healthz blinded by 70 drip-feeding connections")
        self.assertGreater(metrics(herd, A).get("herd_admin_connections_cut_total"), 0)

    def test_admin_binds_admin_host(self):
        herd = self.herd_with_admin([A])
        herd.topology["servers"][A]["admin_host"] = "127.0.0.2"
        herd.write_topology()
        herd.start(A)
        port = herd.topology["servers"][A]["admin_port"]
        with socket.create_connection(("127.0.0.2", port), timeout=5):
            pass
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection((HOST, port), timeout=5).close()


if __name__ == "__main__":
    unittest.main()
