#!/usr/bin/env python3
"""herdctl's helper: read the topology as the server resolved it, edit keys.

herdctl keeps no rule of the topology: every check is herd-server's own
(`herd-server --check-config --json`), and this helper only turns that JSON
into lines bash can read, or edits public keys into the file.

    topology.py servers              reads the --check-config JSON on stdin;
                                     one line per server, in file order:
                                     NAME TAB HOST TAB CLIENT_PORT TAB PEER_PORT
                                     TAB ADMIN_HOST TAB ADMIN_PORT TAB LOG_FILE
                                     (ADMIN_PORT is "-" when the server has none)
    topology.py keys-dir             reads the same JSON; prints keys_dir
    topology.py names-keys-dir FILE  for a file the server refuses only for its
                                     keys (herdctl keys makes them): the server
                                     names, then keys_dir, one a line, read
                                     without any check
    topology.py set-keys FILE LIST   writes each "NAME PUBLIC_KEY" line of LIST
                                     into FILE as that server's public_key,
                                     editing only those values: formatting,
                                     order, mode and a symlink are kept (the
                                     link's target is written)
    topology.py probe HOST PORT ...  one line per pair: "yes" if a TCP connect
                                     succeeds within the timeout, else "no"

Errors go to stderr as one line, exit status 2.
"""

import json
import os
import socket
import sys
import tempfile

# A wildcard bind address is reachable through loopback.
WILDCARD_HOSTS = {"0.0.0.0": "127.0.0.1", "*": "127.0.0.1", "": "127.0.0.1", "::": "::1"}

PROBE_TIMEOUT_S = 0.5


def fail(message):
    print(f"herdctl: {message}", file=sys.stderr)
    sys.exit(2)


def read_config_json():
    try:
        return json.load(sys.stdin)
    except ValueError as e:
        fail(f"herd-server --check-config --json printed something that is not JSON: {e}")
        return None


def servers():
    doc = read_config_json()
    for s in doc["servers"]:
        admin = s.get("admin_port")
        print("\t".join([s["name"], s["host"], str(s["client_port"]), str(s["peer_port"]),
                         s["admin_host"], str(admin) if admin else "-", s["log_file"]]))


# ------------------------------------------------------------ in-place edit

class _Scanner:
    """Finds where each value of a JSON text starts and ends, so one value
    can be replaced without touching the rest of the text."""

    def __init__(self, text):
        self.text = text

    def ws(self, i):
        while i < len(self.text) and self.text[i] in " \t\r\n":
            i += 1
        return i

    def string(self, i):
        # json's own decoder finds the end of a string literal.
        value, end = json.decoder.scanstring(self.text, i + 1)
        return value, end

    def value(self, i):
        """(node, end): node is (start, end, members) for an object, where
        members maps key -> (key_start, value node); (start, end, None)
        otherwise."""
        i = self.ws(i)
        c = self.text[i]
        if c == "{":
            members, j = {}, self.ws(i + 1)
            if self.text[j] == "}":
                return (i, j + 1, members), j + 1
            while True:
                key, k = self.string(j)
                k = self.ws(k)
                node, k = self.value(k + 1)  # past the ':'
                members[key] = (j, node)
                k = self.ws(k)
                if self.text[k] == "}":
                    return (i, k + 1, members), k + 1
                j = self.ws(k + 1)  # past the ','
        if c == "[":
            j = self.ws(i + 1)
            if self.text[j] == "]":
                return (i, j + 1, None), j + 1
            while True:
                _, j = self.value(j)
                j = self.ws(j)
                if self.text[j] == "]":
                    return (i, j + 1, None), j + 1
                j = j + 1
        if c == '"':
            _, end = self.string(i)
            return (i, end, None), end
        _, end = json.JSONDecoder().raw_decode(self.text, i)
        return (i, end, None), end


def set_keys(path, listing):
    target = os.path.realpath(path)
    try:
        with open(target, encoding="utf-8") as f:
            text = f.read()
        doc = json.loads(text)
        with open(listing, encoding="utf-8") as f:
            wanted = [line.split() for line in f if line.strip()]
    except (OSError, ValueError) as e:
        fail(f"{path}: {e}")
    edits = []  # (start, end, new text), applied from the end
    root, _ = _Scanner(text).value(0)
    servers_node = root[2].get("servers") if root[2] is not None else None
    if servers_node is None or servers_node[1][2] is None:
        fail(f'{path}: no "servers" object')
    members = servers_node[1][2]
    for name, key in wanted:
        if name not in members or members[name][1][2] is None:
            fail(f"{path}: no server named {name!r}")
        start, end, fields = members[name][1]
        quoted = json.dumps(key)
        if "public_key" in fields:
            vstart, vend, _ = fields["public_key"][1]
            edits.append((vstart, vend, quoted))
        elif not fields:
            edits.append((start + 1, end - 1, f'"public_key": {quoted}'))
        else:
            first = min(k for k, _ in fields.values())
            gap = text[start + 1:first]
            sep = gap if "\n" in gap else " "
            edits.append((first, first, f'"public_key": {quoted},{sep}'))
        doc["servers"][name]["public_key"] = key
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    if json.loads(text) != doc:
        fail(f"{path}: could not edit the keys in place (the file was not changed)")
    st = os.stat(target)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), prefix=".topology.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, st.st_mode & 0o7777)
        try:
            os.chown(tmp, st.st_uid, st.st_gid)
        except OSError:
            pass  # not ours to give away: the owner is the caller
        os.replace(tmp, target)
    except OSError as e:
        os.unlink(tmp)
        fail(f"{path}: {e}")


def names_keys_dir(path):
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        names = list(doc["servers"])
        keys = doc.get("keys_dir", "keys")
    except (OSError, ValueError, KeyError, TypeError) as e:
        fail(f"{path}: {e}")
    for name in names:
        print(name)
    print(os.path.join(os.path.dirname(os.path.abspath(path)), keys))


# ------------------------------------------------------------ probing

def probe(host, port):
    host = WILDCARD_HOSTS.get(host, host)
    try:
        with socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S):
            return True
    except (OSError, ValueError):
        return False


def main(argv):
    if len(argv) == 2 and argv[1] == "servers":
        servers()
        return 0
    if len(argv) == 2 and argv[1] == "keys-dir":
        print(read_config_json()["keys_dir"])
        return 0
    if len(argv) == 3 and argv[1] == "names-keys-dir":
        names_keys_dir(argv[2])
        return 0
    if len(argv) == 4 and argv[1] == "set-keys":
        set_keys(argv[2], argv[3])
        return 0
    if len(argv) >= 2 and argv[1] == "probe" and len(argv) % 2 == 0:
        pairs = argv[2:]
        for i in range(0, len(pairs), 2):
            print("yes" if probe(pairs[i], pairs[i + 1]) else "no")
        return 0
    fail("usage: topology.py servers | keys-dir | names-keys-dir FILE | set-keys FILE LISTING | "
         "probe HOST PORT [HOST PORT...]")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
