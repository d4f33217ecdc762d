#!/usr/bin/env python3
"""herdctl's helper: read a herd topology and probe client ports.

herdctl is bash; JSON is read here with the standard library rather than
with a hand-made parser in shell.  This file checks only what herdctl itself
uses (names, hosts, ports, log_dir): the full validation of a topology is the
server's job (PROTOCOL.md section 9), and the server reports it on start.

    topology.py servers FILE         one line per server, in file order:
                                     NAME TAB HOST TAB CLIENT_PORT TAB PEER_PORT TAB LOG_FILE
    topology.py probe HOST PORT ...  one line per pair: "yes" if a TCP connect
                                     succeeds within the timeout, else "no"

Errors go to stderr as one line, exit status 2.
"""

import json
import os
import re
import socket
import sys

# Same rule as PROTOCOL.md section 9; herdctl also relies on it to build
# run/NAME.pid paths safely.
NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")

# A wildcard bind address is reachable through loopback.
WILDCARD_HOSTS = {"0.0.0.0": "127.0.0.1", "*": "127.0.0.1", "": "127.0.0.1", "::": "::1"}

PROBE_TIMEOUT_S = 0.5


def fail(message):
    print(f"herdctl: {message}", file=sys.stderr)
    sys.exit(2)


def is_port(value):
    # bool is a subclass of int in Python; JSON true is not a port.
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535


def load_servers(path):
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        fail(f"cannot read topology {path}: {e.strerror}")
    except UnicodeDecodeError as e:
        fail(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        fail(f"{path}:{e.lineno}:{e.colno}: {e.msg}")
    if not isinstance(doc, dict):
        fail(f"{path}: the topology must be a JSON object")
    servers = doc.get("servers")
    if not isinstance(servers, dict) or not servers:
        fail(f'{path}: "servers" must be a non-empty object')
    log_dir = doc.get("log_dir", "logs")
    if not isinstance(log_dir, str) or not log_dir:
        fail(f'{path}: "log_dir" must be a non-empty string')
    # Relative to the topology file, as the server resolves it (section 8).
    log_dir = os.path.join(os.path.dirname(os.path.abspath(path)), log_dir)

    rows = []
    for name, server in servers.items():
        if not NAME_RE.match(name):
            fail(f"{path}: server name {name!r} is not 1 to 64 letters, digits, '_' or '-'")
        if not isinstance(server, dict):
            fail(f'{path}: server "{name}" must be an object')
        host = server.get("host")
        if not isinstance(host, str) or any(c.isspace() for c in host):
            fail(f'{path}: server "{name}": "host" must be a string without white space')
        for key in ("client_port", "peer_port"):
            if not is_port(server.get(key)):
                fail(f'{path}: server "{name}": "{key}" must be an integer from 1 to 65535')
        log_file = os.path.normpath(os.path.join(log_dir, name + ".log"))
        rows.append((name, host, str(server["client_port"]), str(server["peer_port"]), log_file))
    return rows


def probe(host, port):
    host = WILDCARD_HOSTS.get(host, host)
    try:
        with socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S):
            return True
    except (OSError, ValueError):
        return False


def main(argv):
    if len(argv) == 3 and argv[1] == "servers":
        for row in load_servers(argv[2]):
            print("\t".join(row))
        return 0
    if len(argv) >= 2 and argv[1] == "probe" and len(argv) % 2 == 0:
        pairs = argv[2:]
        for i in range(0, len(pairs), 2):
            print("yes" if probe(pairs[i], pairs[i + 1]) else "no")
        return 0
    fail("usage: topology.py servers FILE | topology.py probe HOST PORT [HOST PORT...]")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
