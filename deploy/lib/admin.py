#!/usr/bin/env python3
"""herdctl's helper: ask servers how they are, over their admin endpoints.

    admin.py status HOST CLIENT_PORT ADMIN_HOST ADMIN_PORT [...]

prints one line per server, in argument order, with five TAB-separated
fields (ADMIN_PORT "-" means the server has none):

    ANSWERS   "yes" if the client port accepts a TCP connection, else "no"
    READY     from GET /healthz: "yes" (200); on 503 the state it names:
              "starting", "draining", "not-durable"; "?" when the server
              answers on its client port but not on its admin port; "-"
              without an admin port or when the server is not there
    CLIENTS   herd_clients from GET /metrics, or "-"
    CONNS     herd_client_connections from GET /metrics, or "-"
    LINKS     herd_link_up per neighbour, by name: "Bona:up Clark:down";
              "none" for a server without neighbours; "-" without metrics

    admin.py config ADMIN_HOST ADMIN_PORT

prints GET /config as one TAB-separated line: GENERATION, LAST_OK ("yes",
"no", or "-" before any reload), NEEDS_RESTART (the last reload's
comma-separated settings, or "-"), LOG_DIR, PENDING (every setting still
waiting for a restart, whatever reloads came since: comma-separated, "-" for
none, "?" from an older server that does not say), REASON ("-" before any
reload); exit status 3 when the endpoint does not answer.

Every server is asked at the same time, so a herd of servers that do not
answer costs one time-out, not one per server. HTTP goes straight to the
server: proxy settings in the environment are ignored (they would send a
request for 127.0.0.1 to a proxy).

Usage errors go to stderr as one line, exit status 2.
"""

import json
import sys
import threading
import urllib.error
import urllib.request

from metrics import Metrics
from topology import WILDCARD_HOSTS, probe

HTTP_TIMEOUT_S = 2.0

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

def http_get(host, port, path):
    """(status, body text) of GET http://host:port/path; OSError when the
    server cannot be reached."""
    host = WILDCARD_HOSTS.get(host, host)
    shown = f"[{host}]" if ":" in host else host
    try:
        with _OPENER.open(f"http://{shown}:{port}{path}", timeout=HTTP_TIMEOUT_S) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        try:
            return e.code, e.read().decode("utf-8", "replace")
        finally:
            e.close()
    except urllib.error.URLError as e:
        raise OSError(str(e.reason)) from None


def _count(value):
    if value is None:
        return "-"
    return str(int(value)) if value == int(value) else str(value)


def health_word(status, body):
    """READY of the status table from a /healthz reply."""
    if status == 200:
        return "yes"
    if status == 503 and ":" in body:
        return body.split(":", 1)[0].strip().replace(" ", "-")
    return f"HTTP-{status}"


def server_status(host, client_port, admin_host, admin_port):
    """The five fields of one status line (see the module text)."""
    answers = "yes" if probe(host, client_port) else "no"
    if admin_port == "-":
        return [answers, "-", "-", "-", "-"]
    ready = clients = conns = links = "-"
    try:
        status, body = http_get(admin_host, admin_port, "/healthz")
        ready = health_word(status, body)
        status, body = http_get(admin_host, admin_port, "/metrics")
        if status == 200:
            m = Metrics(body)
            clients = _count(m.get("herd_clients"))
            conns = _count(m.get("herd_client_connections"))
            peers = [f"{peer}:{'up' if up else 'down'}" for peer, up in m.peers("herd_link_up").items()]
            links = " ".join(sorted(peers)) if peers else "none"
    except (OSError, ValueError):
        if answers == "yes":
            ready = "?" if ready == "-" else ready
    return [answers, ready, clients, conns, links]


def status(args):
    if not args or len(args) % 4 != 0:
        print("herdctl: usage: admin.py status HOST CLIENT_PORT ADMIN_HOST ADMIN_PORT ...", file=sys.stderr)
        return 2
    triples = [args[i:i + 4] for i in range(0, len(args), 4)]
    rows = [None] * len(triples)

    def ask(i, host, client_port, admin_host, admin_port):
        rows[i] = server_status(host, client_port, admin_host, admin_port)

    threads = [threading.Thread(target=ask, args=(i, *t), daemon=True) for i, t in enumerate(triples)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for row in rows:
        print("\t".join(row or ["no", "-", "-", "-", "-"]))
    return 0


def config(host, port):
    try:
        status, body = http_get(host, port, "/config")
        if status != 200:
            return 3
        doc = json.loads(body)
    except (OSError, ValueError):
        return 3
    last = doc.get("last_reload") or {}
    ok = "-" if not last else ("yes" if last.get("ok") else "no")
    restart = ",".join(last.get("needs_restart") or []) or "-"
    reason = " ".join(str(last.get("reason") or "-").split())
    running = doc.get("running") if isinstance(doc.get("running"), dict) else {}
    log_dir = running.get("log_dir") or doc.get("log_dir") or "-"
    pending = doc.get("pending")
    pending = "?" if not isinstance(pending, list) else (",".join(map(str, pending)) or "-")
    print("\t".join([str(doc.get("generation", 0)), ok, restart, str(log_dir), pending, reason]))
    return 0


def main(argv):
    if len(argv) >= 2 and argv[1] == "status":
        return status(argv[2:])
    if len(argv) == 4 and argv[1] == "config":
        return config(argv[2], argv[3])
    print("herdctl: usage: admin.py status HOST CLIENT_PORT ADMIN_HOST ADMIN_PORT ... | "
          "admin.py config ADMIN_HOST ADMIN_PORT", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
