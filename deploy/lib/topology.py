#!/usr/bin/env python3
"""herdctl's helper: read and check a herd topology, probe client ports.

herdctl is bash; JSON is read here with the standard library rather than
with a hand-made parser in shell.

    topology.py servers FILE         one line per server, in file order:
                                     NAME TAB HOST TAB CLIENT_PORT TAB PEER_PORT
                                     TAB ADMIN_PORT TAB LOG_FILE
                                     (ADMIN_PORT is "-" when the server has none)
    topology.py check FILE           the whole of PROTOCOL.md section 9, as the
                                     server checks it: prints one line
                                     "FILE: N servers, M links" when valid
    topology.py probe HOST PORT ...  one line per pair: "yes" if a TCP connect
                                     succeeds within the timeout, else "no"

"servers" checks only what herdctl itself uses (names, hosts, ports,
log_dir); "check" is for reload, where herdctl must refuse a file that the
running servers would refuse, and say why, before it signals them.

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

HOST_MAX = 255      # longest host text the server accepts
LIMIT_MAX = 2**31 - 1
Z85_ALPHABET = ("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                ".-:+=^!/*?&<>()[]{}@%$#")


class Invalid(Exception):
    """The topology breaks a rule; the message says which, as one line."""


def fail(message):
    print(f"herdctl: {message}", file=sys.stderr)
    sys.exit(2)


def is_int(value):
    # bool is a subclass of int in Python; JSON true is not a number.
    return isinstance(value, int) and not isinstance(value, bool)


def is_port(value):
    return is_int(value) and 1 <= value <= 65535


def _reject_duplicates(pairs):
    # The server's JSON reader refuses a key given twice in one object.
    doc = {}
    for key, value in pairs:
        if key in doc:
            raise Invalid(f"duplicate object key {json.dumps(key)}")
        doc[key] = value
    return doc


def read_document(path):
    """The parsed JSON object of the file; Invalid with file:line:col on a
    syntax error."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise Invalid(f"cannot read topology {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise Invalid(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        doc = json.loads(text, object_pairs_hook=_reject_duplicates)
    except json.JSONDecodeError as e:
        raise Invalid(f"{path}:{e.lineno}:{e.colno}: {e.msg}") from None
    except Invalid as e:
        raise Invalid(f"{path}: {e}") from None
    if not isinstance(doc, dict):
        raise Invalid(f"{path}: the topology must be a JSON object")
    return doc


def load_servers(path):
    try:
        doc = read_document(path)
    except Invalid as e:
        fail(str(e))
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
        admin = server.get("admin_port", 0)
        if not is_int(admin) or not 0 <= admin <= 65535:
            fail(f'{path}: server "{name}": "admin_port" must be an integer from 1 to 65535, or 0 for none')
        log_file = os.path.normpath(os.path.join(log_dir, name + ".log"))
        rows.append((name, host, str(server["client_port"]), str(server["peer_port"]),
                     str(admin) if admin else "-", log_file))
    return rows


# ------------------------------------------------------------ full check

def _valid_host(s):
    return 1 <= len(s.encode("utf-8")) <= HOST_MAX and all(0x20 < ord(c) < 0x7F for c in s)


def _valid_z85_key(s):
    if len(s) != 40 or any(c not in Z85_ALPHABET for c in s):
        return False
    for g in range(0, 40, 5):
        v = 0
        for c in s[g:g + 5]:
            v = v * 85 + Z85_ALPHABET.index(c)
        if v > 0xFFFFFFFF:
            return False
    return True


def _field(obj, prefix, key, required, valid, what):
    """Checks obj[key] (absent is fine unless required) with valid()."""
    where = f"{prefix}.{key}" if prefix else key
    if key not in obj:
        if required:
            raise Invalid(f"{where}: missing (must be {what})")
        return
    if not valid(obj[key]):
        raise Invalid(f"{where}: must be {what}")


def _int_in(lo, hi):
    return lambda v: is_int(v) and lo <= v <= hi


def _string(valid=lambda s: s != ""):
    return lambda v: isinstance(v, str) and valid(v)


def _section(doc, key):
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise Invalid(f"{key}: must be an object")
    return value


def check_document(doc):
    """Raises Invalid on the first rule of PROTOCOL.md section 9 that the
    topology breaks, in the order the server checks them; returns
    (number of servers, number of links)."""
    port = "an integer from 1 to 65535"
    servers = doc.get("servers")
    if servers is None:
        raise Invalid("servers: missing (must be an object with at least one server)")
    if not isinstance(servers, dict) or not servers:
        raise Invalid("servers: must be an object with at least one server")
    for name, server in servers.items():
        if not NAME_RE.match(name):
            raise Invalid(f"servers: server name {name!r} must be 1 to 64 letters, digits, '_' or '-'")
        prefix = f"servers.{name}"
        if not isinstance(server, dict):
            raise Invalid(f"{prefix}: must be an object")
        _field(server, prefix, "host", True, _string(_valid_host),
               "a non-empty string without spaces or control characters")
        _field(server, prefix, "client_port", True, is_port, port)
        _field(server, prefix, "peer_port", True, is_port, port)
        _field(server, prefix, "admin_port", False, _int_in(0, 65535),
               "an integer from 1 to 65535, or 0 for none")
        _field(server, prefix, "public_key", False, _string(_valid_z85_key),
               "a CURVE public key of 40 Z85 characters")

    bound = {}  # (host, port) -> (server, field)
    for name, server in servers.items():
        for key in ("client_port", "peer_port", "admin_port"):
            if not server.get(key):
                continue
            address = (server["host"], server[key])
            if address in bound:
                other, other_key = bound[address]
                shown = (f"[{address[0]}]:{address[1]}" if ":" in address[0]
                         else f"{address[0]}:{address[1]}")
                if other == name:
                    raise Invalid(f"servers.{name}.{other_key} and servers.{name}.{key} both use {shown}")
                raise Invalid(f"servers.{other} and servers.{name} both use {shown} "
                              f"({other_key} of {other}, {key} of {name})")
            bound[address] = (name, key)

    links = doc.get("links")
    what = 'an array of ["server", "server"] pairs'
    if links is None:
        raise Invalid(f"links: missing (must be {what})")
    if not isinstance(links, list):
        raise Invalid(f"links: must be {what}")
    seen = {}
    for k, link in enumerate(links, 1):
        if (not isinstance(link, list) or len(link) != 2
                or not all(isinstance(end, str) for end in link)):
            raise Invalid(f"link {k}: must be an array of two server names")
        a, b = link
        shown = f"[{json.dumps(a)}, {json.dumps(b)}]"
        for end in (a, b):
            if end not in servers:
                raise Invalid(f"link {k} {shown} names unknown server {json.dumps(end)}")
        if a == b:
            raise Invalid(f"link {k} {shown} links {json.dumps(a)} to itself")
        key = frozenset((a, b))
        if key in seen:
            first, (fa, fb) = seen[key]
            raise Invalid(f"link {k} {shown} repeats link {first} [{json.dumps(fa)}, {json.dumps(fb)}]")
        seen[key] = (k, (a, b))

    places = _section(doc, "places")
    _field(places, "places", "url", False, _string(), "a non-empty string")
    _field(places, "places", "key_env", False, _string(), "a non-empty string")
    _field(places, "places", "timeout_ms", False, _int_in(1, LIMIT_MAX), "an integer from 1 to 2147483647")
    _field(places, "places", "cache_ttl_ms", False, _int_in(0, LIMIT_MAX),
           "an integer from 0 to 2147483647 (0 = off)")
    _field(doc, "", "log_dir", False, _string(), "a non-empty string")
    _field(doc, "", "keys_dir", False, _string(), "a non-empty string")
    limits = _section(doc, "limits")
    for key in ("idle_timeout_ms", "max_output_bytes", "max_clients"):
        _field(limits, "limits", key, False, _int_in(1, LIMIT_MAX), "an integer from 1 to 2147483647")
    return len(servers), len(links)


def check(path):
    try:
        doc = read_document(path)
    except Invalid as e:
        fail(str(e))
    try:
        n_servers, n_links = check_document(doc)
    except Invalid as e:
        fail(f"{path}: {e}")
    print(f"{path}: {n_servers} servers, {n_links} links")


# ------------------------------------------------------------ probing

def probe(host, port):
    host = WILDCARD_HOSTS.get(host, host)
    try:
        with socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S):
            return True
    except (OSError, ValueError):
        return False


def keys_dir(path):
    """keys_dir of the topology, resolved beside the file as the server does."""
    doc = read_document(path)
    d = doc.get("keys_dir", "keys")
    if not isinstance(d, str) or not d:
        fail(f'{path}: "keys_dir" must be a non-empty string')
    return os.path.join(os.path.dirname(os.path.abspath(path)), d)


def set_keys(path, listing):
    """Writes each "NAME PUBLIC_KEY" line of the listing file into the
    topology as that server's public_key; the rest of the file is kept."""
    doc = read_document(path)
    with open(listing, encoding="utf-8") as f:
        for line in f:
            name, key = line.split()
            if name not in doc.get("servers", {}):
                fail(f"{path}: no server named {name!r}")
            doc["servers"][name]["public_key"] = key
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def main(argv):
    if len(argv) == 3 and argv[1] == "keys-dir":
        print(keys_dir(argv[2]))
        return 0
    if len(argv) == 4 and argv[1] == "set-keys":
        set_keys(argv[2], argv[3])
        return 0
    if len(argv) == 3 and argv[1] == "servers":
        for row in load_servers(argv[2]):
            print("\t".join(row))
        return 0
    if len(argv) == 3 and argv[1] == "check":
        check(argv[2])
        return 0
    if len(argv) >= 2 and argv[1] == "probe" and len(argv) % 2 == 0:
        pairs = argv[2:]
        for i in range(0, len(pairs), 2):
            print("yes" if probe(pairs[i], pairs[i + 1]) else "no")
        return 0
    fail("usage: topology.py servers FILE | topology.py check FILE | "
         "topology.py probe HOST PORT [HOST PORT...]")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
