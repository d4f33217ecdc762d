#!/usr/bin/env python3
"""herdctl's helper: find the running servers of a topology, whoever started
them, and ask each how it is.

    servers.py locate RUN_DIR CONFIG [--probe] [--json] [NAME...]

reads `herd-server --check-config --json` of CONFIG on stdin ("null" when
the file is invalid: then the run folder's last known addresses are used)
and prints one line per server, TAB-separated (or, with --json, one JSON
document):

    NAME       the server
    STATE      running; dead (a pid file of a process that is gone: killed
               or crashed; or a server started by hand that is gone without
               the log line of a clean stop); stopped
    PID        its pid; "?" when it answers on its admin endpoint but its
               pid is not known or not on this machine; "-"
    MANAGER    herdctl (its pid file), systemd (a unit runs it), hand (found
               through /config only), "-"
    UNIT       the systemd unit that runs it, or "-"
    IN_FILE    "yes" when CONFIG names it, "no" when not, "?" when CONFIG is
               invalid
    READY      with --probe: GET /readyz (/healthz on an older server): "yes"
               (200), else the state it names ("starting", "draining",
               "not-durable", ...); "?" when the admin port does not answer
               but the server runs; "-" without an admin port or when it is
               not running; without --probe "-"
    ANSWERS    with --probe: "yes" when a WHATSAT for an id that cannot exist
               came back "? ..." through the client port (the node answered),
               else "no"; without --probe "-"
    CLIENTS, CONNS, LINKS   with --probe, from GET /metrics, else "-"
    ADMIN_HOST, ADMIN_PORT  where its admin endpoint answered ("-" if not)
    GENERATION the reloads it handled (/config), or "-"

A server is looked for at the addresses it last used (RUN_DIR/NAME.addr,
written here whenever its /config names the ports it uses) and at those of
CONFIG; its /config must name it (an older server's /config has no name:
then the address is trusted). Servers of the run folder that CONFIG no longer
names (a rename, a removal) are listed too, with IN_FILE "no", when no NAME
is given and they still run (or died).

A server started by hand has no pid file: the pid its /config gives and its
log file are kept in RUN_DIR/NAME.hpid, so that a later call can tell a
frozen server (the process runs, its admin endpoint does not answer: state
running, READY "?") and a killed one (the process is gone and its log does
not end with its clean stop: dead) from one that stopped.

With --json and --probe the exit status is herdctl status's: 0 when every
server of the file (or every one named) runs, answers and is ready, else 3.

    servers.py wait-ready HOST PORT TIMEOUT

polls GET /readyz (/healthz on an older server) until it answers 200 (prints
"yes", exit 0) or TIMEOUT seconds pass (prints the last reason, exit 1).

    servers.py dry-run RUN_DIR CONFIG [NAME...]

reads --check-config --json on stdin and prints, per running server, what a
reload of CONFIG would change there against its running /config: its own
addresses (a restart), links added and removed (against its links in
/metrics), settings (those the file sets, paths as the server resolves them,
against /config's "running"), the settings
still pending a restart, an exit when its name left the file; and the file's
warnings (unknown fields).

Usage errors go to stderr as one line, exit status 2.
"""

import json
import os
import secrets
import socket
import string
import subprocess
import sys
import threading
import time

from admin import http_get
from metrics import Metrics
from topology import WILDCARD_HOSTS

PROBE_TIMEOUT_S = 2.0
NAME_CHARS = set(string.ascii_letters + string.digits + "_-")

# An id of 255 bytes (the longest a client may use) drawn at random: no
# client has reported it, so a live node answers "?" after looking it up.
PROBE_ALPHABET = string.ascii_letters + string.digits


def valid_name(name):
    return 0 < len(name) <= 64 and set(name) <= NAME_CHARS


def read_pid_file(run_dir, name):
    """The pid in RUN_DIR/NAME.pid: an int, "bad" when unreadable, None when
    there is no file."""
    try:
        with open(os.path.join(run_dir, name + ".pid"), encoding="ascii") as f:
            text = f.read().strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        return "bad"
    return int(text) if text.isdigit() else "bad"


def alive(pid):
    """True while pid exists and has not exited (a zombie has exited)."""
    try:
        with open("/proc/%d/stat" % pid, encoding="utf-8", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def is_server_process(pid, name):
    """True if pid runs a herd-server program with NAME as an argument: a pid
    that was reused by another process is not taken for the server."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        return False
    return any(b"herd-server" in a for a in args) and name.encode() in args


def systemd_unit(pid):
    """The systemd service whose main process pid is, or None. The unit is
    read from the process's cgroup and confirmed with systemctl (a process
    started from a shell inside some other service is that service's child,
    not its main process)."""
    try:
        with open("/proc/%d/cgroup" % pid, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    unit = None
    for line in lines:
        last = line.rsplit("/", 1)[-1]
        if last.endswith(".service"):
            unit = last
    if not unit or not os.path.isdir("/run/systemd/system"):
        return None
    try:
        r = subprocess.run(["systemctl", "show", "--property=MainPID", "--value", unit],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return unit if r.returncode == 0 and r.stdout.strip() == str(pid) else None


def read_hand(run_dir, name):
    """The record of a server started by hand (RUN_DIR/NAME.hpid): a dict
    with an int "pid" and "log" (its log file or None), or None."""
    try:
        with open(os.path.join(run_dir, name + ".hpid"), encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("pid"), int):
        return None
    return doc


def write_hand(run_dir, name, pid, log_dir):
    """Records the pid and log file of a server started by hand, for when
    its admin endpoint stops answering. A relative log folder is the
    server's own (its working directory). Best effort, as write_addr."""
    log = None
    if isinstance(log_dir, str) and log_dir:
        if not os.path.isabs(log_dir):
            try:
                log_dir = os.path.join(os.readlink("/proc/%d/cwd" % pid), log_dir)
            except OSError:
                log_dir = None
        if log_dir:
            log = os.path.join(log_dir, name + ".log")
    doc = {"pid": pid, "log": log}
    try:
        if read_hand(run_dir, name) == doc:
            return
        os.makedirs(run_dir, exist_ok=True)
        tmp = os.path.join(run_dir, ".%s.hpid.tmp" % name)
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f)
            f.write("\n")
        os.replace(tmp, os.path.join(run_dir, name + ".hpid"))
    except OSError:
        pass


def forget_hand(run_dir, name):
    try:
        os.unlink(os.path.join(run_dir, name + ".hpid"))
    except OSError:
        pass


# How far from its end a log is read for the last start or stop: the lines
# after a clean stop (links closing, the journal's last records) are few.
LOG_TAIL_BYTES = 256 * 1024


def stopped_cleanly(log, name):
    """True when the log's last start or stop line of NAME is its stop
    ("server NAME stopped", written as the event loop ends after SIGTERM,
    SIGINT or a rename) with no failed event loop (an exit 1) before it. A
    process killed (SIGKILL) or crashed never writes that line."""
    if not log:
        return False
    try:
        with open(log, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - LOG_TAIL_BYTES))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return False
    start = "server %s starting" % name
    stop = "server %s stopped" % name
    for i in range(len(lines) - 1, -1, -1):
        line = lines[i]
        if line.endswith(" " + stop) or line.endswith(" " + stop + "\r"):
            return not any(" event loop failed: " in before for before in lines[max(0, i - 50):i])
        if start in line:
            return False
    return False


def read_addr(run_dir, name):
    try:
        with open(os.path.join(run_dir, name + ".addr"), encoding="utf-8") as f:
            doc = json.load(f)
        return doc if isinstance(doc, dict) else None
    except (OSError, ValueError):
        return None


def write_addr(run_dir, name, addr):
    """Records the addresses a server uses, for when the file is invalid or
    no longer names it. Best effort: a read-only run folder (a reload run by
    systemd in the unit's sandbox) only loses the hint."""
    try:
        if read_addr(run_dir, name) == addr:
            return
        os.makedirs(run_dir, exist_ok=True)
        tmp = os.path.join(run_dir, ".%s.addr.tmp" % name)
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(addr, f)
            f.write("\n")
        os.replace(tmp, os.path.join(run_dir, name + ".addr"))
    except OSError:
        pass


def get_config(host, port):
    """/config of host:port as a dict, or None."""
    try:
        status, body = http_get(host, port, "/config")
        doc = json.loads(body) if status == 200 else None
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def whatsat_probe(host, port):
    """True when a WHATSAT for an id no client has used comes back "? ..."."""
    host = WILDCARD_HOSTS.get(host, host)
    cid = "".join(secrets.choice(PROBE_ALPHABET) for _ in range(255))
    line = "WHATSAT %s 10 1" % cid
    try:
        with socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S) as s:
            s.settimeout(PROBE_TIMEOUT_S)
            s.sendall(line.encode() + b"\n")
            got = b""
            while b"\n" not in got and len(got) < 4096:
                data = s.recv(4096)
                if not data:
                    break
                got += data
    except (OSError, ValueError):
        return False
    return got.split(b"\n", 1)[0] == ("? " + line).encode()


def health_word(status, body):
    if status == 200:
        return "yes"
    if status in (503, 500) and ":" in body:
        return body.split(":", 1)[0].strip().replace(" ", "-") or "no"
    if status in (503, 500) and body.strip():
        return body.strip().split()[0]
    return "HTTP-%d" % status


def _count(value):
    if value is None:
        return "-"
    return str(int(value)) if value == int(value) else str(value)


class Server:
    def __init__(self, name, in_file, file_conf):
        self.name = name
        self.in_file = in_file
        self.file_conf = file_conf  # the --check-config entry, or None
        self.state = "stopped"
        self.pid = None             # int, "?" or None
        self.manager = None
        self.unit = None
        self.config = None          # its /config
        self.admin = None           # (host, port) that answered
        self.client = None          # (host, port) it serves clients on
        self.ready = "-"
        self.ready_reason = None
        self.answers = "-"
        self.clients = self.conns = "-"
        self.links = None

    def candidates(self, run_dir):
        """Admin addresses to try, the last known first; and client addresses."""
        admins, clients = [], []
        cached = read_addr(run_dir, self.name)
        for src in (cached, self.file_conf):
            if not src:
                continue
            if src.get("admin_port"):
                a = (src.get("admin_host") or "127.0.0.1", int(src["admin_port"]))
                if a not in admins:
                    admins.append(a)
            if src.get("client_port"):
                c = (src.get("host") or "127.0.0.1", int(src["client_port"]))
                if c not in clients:
                    clients.append(c)
        return admins, clients

    def locate(self, run_dir, config_path, claimed=None):
        admins, clients = self.candidates(run_dir)
        for host, port in admins:
            doc = get_config(host, port)
            if doc is None:
                continue
            if doc.get("name") not in (None, self.name):
                continue  # another server answers there now
            if doc.get("name") is None and (claimed or {}).get((host, port), self.name) != self.name:
                continue  # an older server, last seen there under another name
            self.config, self.admin = doc, (host, port)
            break
        file_pid = read_pid_file(run_dir, self.name)
        hand = read_hand(run_dir, self.name)
        if isinstance(file_pid, int) and alive(file_pid) and is_server_process(file_pid, self.name):
            self.pid, self.manager, self.state = file_pid, "herdctl", "running"
            if hand and hand["pid"] != file_pid:
                forget_hand(run_dir, self.name)  # an earlier process, gone
        elif self.config is not None:
            self.state = "running"
            pid = self.config.get("pid")
            if isinstance(pid, int) and alive(pid) and is_server_process(pid, self.name):
                self.pid = pid
                self.unit = systemd_unit(pid)
                self.manager = "systemd" if self.unit else "hand"
                if self.manager == "hand":
                    write_hand(run_dir, self.name, pid, self.config.get("log_dir"))
            else:
                self.pid, self.manager = "?", "hand"
        elif file_pid is not None:
            self.state = "dead"
        elif hand and alive(hand["pid"]) and is_server_process(hand["pid"], self.name):
            # Started by hand, its admin endpoint silent: frozen (SIGSTOP,
            # a stalled loop), still holding its ports.
            self.pid, self.state = hand["pid"], "running"
            self.unit = systemd_unit(self.pid)
            self.manager = "systemd" if self.unit else "hand"
        elif hand:
            # Gone: a clean stop leaves its last line in the log.
            if stopped_cleanly(hand.get("log"), self.name):
                forget_hand(run_dir, self.name)
            else:
                self.state, self.manager = "dead", "hand"
        if self.state == "running":
            # The addresses in use: /config's; an older server's /config has
            # none: then those recorded when it was first found, else the
            # file's (a file edited since would mislead).
            c, fc = self.config or {}, self.file_conf or {}
            cached = read_addr(run_dir, self.name) or {}
            addr = {k: c.get(k) or cached.get(k) or fc.get(k)
                    for k in ("host", "client_port", "peer_port")}
            if self.admin:
                addr["admin_host"], addr["admin_port"] = self.admin[0], c.get("admin_port") or self.admin[1]
            else:
                addr["admin_host"] = cached.get("admin_host") or fc.get("admin_host") or "127.0.0.1"
                addr["admin_port"] = cached.get("admin_port") or fc.get("admin_port")
            if addr["client_port"]:
                self.client = (addr["host"] or "127.0.0.1", int(addr["client_port"]))
            if all(addr[k] for k in ("host", "client_port", "peer_port")):
                write_addr(run_dir, self.name, addr)
        if self.client is None and clients:
            self.client = clients[0]
        self._admins = admins

    def probe(self):
        if self.state != "running" and self.config is None:
            self.answers = "no"
            return
        self.answers = "yes" if self.client and whatsat_probe(*self.client) else "no"
        if self.admin is None:
            self.ready = "?" if self._admins else "-"
            return
        host, port = self.admin
        try:
            status, body = http_get(host, port, "/readyz")
            if status == 404:
                status, body = http_get(host, port, "/healthz")
            self.ready = health_word(status, body)
            if status != 200:
                self.ready_reason = " ".join(body.split()) or None
            status, body = http_get(host, port, "/metrics")
            if status == 200:
                m = Metrics(body)
                self.clients = _count(m.get("herd_clients"))
                self.conns = _count(m.get("herd_client_connections"))
                self.links = {peer: bool(up) for peer, up in m.peers("herd_link_up").items()}
        except (OSError, ValueError):
            self.ready = "?"

    def links_text(self):
        if self.links is None:
            return "-"
        if not self.links:
            return "none"
        return " ".join("%s:%s" % (p, "up" if up else "down") for p, up in sorted(self.links.items()))

    def row(self):
        pid = "-" if self.pid is None else str(self.pid)
        gen = self.config.get("generation") if self.config else None
        return [self.name, self.state, pid, self.manager or "-", self.unit or "-",
                {True: "yes", False: "no", None: "?"}[self.in_file], self.ready, self.answers, self.clients,
                self.conns, self.links_text(),
                self.admin[0] if self.admin else "-", str(self.admin[1]) if self.admin else "-",
                "-" if gen is None else str(gen)]

    def as_json(self):
        c = self.config or {}
        return {
            "name": self.name, "in_topology": self.in_file, "state": self.state,
            "pid": self.pid if isinstance(self.pid, int) else None,
            "managed_by": self.manager, "unit": self.unit,
            "ready": None if self.ready in ("-", "?") else self.ready == "yes",
            "readiness": self.ready, "ready_reason": self.ready_reason,
            "answers": None if self.answers == "-" else self.answers == "yes",
            "clients": None if self.clients == "-" else float(self.clients),
            "connections": None if self.conns == "-" else float(self.conns),
            "links": self.links,
            "client_address": "%s:%d" % self.client if self.client else None,
            "admin_address": "%s:%d" % self.admin if self.admin else None,
            "version": c.get("version"), "generation": c.get("generation"),
            "pending": c.get("pending"), "warnings": c.get("warnings"),
            "last_reload": c.get("last_reload"), "topology": c.get("topology"),
        }


def claimed_admins(run_dir, names):
    """{(admin host, admin port): name} from the run folder's last known
    addresses: who answered where, for an older server's /config that does
    not name itself."""
    out = {}
    for name in names:
        addr = read_addr(run_dir, name)
        if addr and addr.get("admin_port"):
            out[(addr.get("admin_host") or "127.0.0.1", int(addr["admin_port"]))] = name
    return out


def run_dir_names(run_dir):
    names = set()
    try:
        entries = os.listdir(run_dir)
    except OSError:
        return names
    for entry in entries:
        for suffix in (".pid", ".addr", ".hpid"):
            if entry.endswith(suffix) and valid_name(entry[:-len(suffix)]):
                names.add(entry[:-len(suffix)])
    return names


def locate(args):
    probe = "--probe" in args
    as_json = "--json" in args
    args = [a for a in args if a not in ("--probe", "--json")]
    if len(args) < 2:
        print("herdctl: usage: servers.py locate RUN_DIR CONFIG [--probe] [--json] [NAME...]",
              file=sys.stderr)
        return 2
    run_dir, config_path, wanted = args[0], args[1], args[2:]
    try:
        topo = json.load(sys.stdin)
    except ValueError:
        topo = None
    file_servers = {}
    order = []
    if isinstance(topo, dict):
        for s in topo.get("servers") or []:
            file_servers[s["name"]] = s
            order.append(s["name"])
    if wanted:
        names = wanted
    else:
        extra = sorted(run_dir_names(run_dir) - set(order))
        names = order + extra
    # With an invalid file nobody can tell which servers it names.
    valid = isinstance(topo, dict)
    servers = [Server(n, (n in file_servers) if valid else None, file_servers.get(n)) for n in names]

    claimed = claimed_admins(run_dir, run_dir_names(run_dir))

    def work(s):
        s.locate(run_dir, config_path, claimed)
        if probe:
            s.probe()

    threads = [threading.Thread(target=work, args=(s,), daemon=True) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if not wanted:
        # A name the file no longer has, that no longer runs: nothing to
        # show or do (its last known address stays, for a name reused).
        servers = [s for s in servers if s.in_file is not False or s.state != "stopped"]
    if as_json:
        json.dump({"topology": config_path, "valid": isinstance(topo, dict),
                   "servers": [s.as_json() for s in servers]}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        if probe:
            # herdctl status's exit status: 3 unless every server of the file
            # (or every one named) runs, answers and is ready.
            well = all(s.state == "running" and s.answers == "yes" and s.ready in ("yes", "-")
                       for s in servers if s.in_file is not False or wanted)
            return 0 if well else 3
    else:
        for s in servers:
            print("\t".join(s.row()))
    return 0


def wait_ready(host, port, timeout):
    """Polls /readyz (/healthz on an older server) until it answers 200 or
    timeout seconds pass. Prints "yes", or the last state and reason."""
    deadline = time.monotonic() + timeout
    last = "no answer from its admin endpoint"
    while True:
        try:
            status, body = http_get(host, port, "/readyz")
            if status == 404:
                status, body = http_get(host, port, "/healthz")
            if status == 200:
                print("yes")
                return 0
            last = " ".join(body.split()) or "HTTP %d" % status
        except OSError:
            pass
        if time.monotonic() >= deadline:
            print(last)
            return 1
        time.sleep(0.1)


def flat(prefix, value, out):
    """Dotted paths of the leaves of a JSON value (PROTOCOL section 9 names
    settings so: limits.max_records)."""
    if isinstance(value, dict):
        for k, v in value.items():
            flat(prefix + "." + k if prefix else k, v, out)
    else:
        out[prefix] = value
    return out


def neighbours(topo, name):
    out = set()
    for a, b in topo.get("links") or []:
        if a == name:
            out.add(b)
        elif b == name:
            out.add(a)
    return out


def dry_run(args):
    """What a reload of the file on stdin (--check-config --json) would
    change at each running server, against its running /config."""
    if len(args) < 2:
        print("herdctl: usage: servers.py dry-run RUN_DIR CONFIG [NAME...]", file=sys.stderr)
        return 2
    run_dir, config_path, wanted = args[0], args[1], args[2:]
    topo = json.load(sys.stdin)
    file_servers = {s["name"]: s for s in topo.get("servers") or []}
    names = wanted or ([s["name"] for s in topo.get("servers") or []]
                       + sorted(run_dir_names(run_dir) - set(file_servers)))
    servers = [Server(n, n in file_servers, file_servers.get(n)) for n in names]
    claimed = claimed_admins(run_dir, run_dir_names(run_dir))
    for s in servers:
        s.locate(run_dir, config_path, claimed)
    for w in topo.get("warnings") or []:
        print("file: warning: %s" % w)
    # The file's settings as written (--check-config --json resolves only
    # the paths): a setting the file leaves out is not compared.
    try:
        with open(config_path, encoding="utf-8") as f:
            raw = json.load(f)
    except (OSError, ValueError):
        raw = {}
    skip = ("servers", "links", "topology", "warnings")
    file_settings = flat("", {k: v for k, v in raw.items() if k not in skip}, {})
    file_settings.update(flat("", {k: v for k, v in topo.items() if k not in skip}, {}))
    for s in servers:
        if s.state != "running":
            if s.in_file:
                print("%s: not running (the file would be used at its next start)" % s.name)
            continue
        if not s.in_file:
            print("%s: would exit: its name is no longer in the topology (it finishes its "
                  "replies, hands over its floods and exits 0)" % s.name)
            continue
        if s.config is None:
            print("%s: cannot tell: its admin endpoint does not answer" % s.name)
            continue
        c, f = s.config, s.file_conf
        changes = []
        for key in ("host", "client_port", "peer_port", "admin_port"):
            if key in c and c.get(key) != f.get(key):
                changes.append("%s %s -> %s (takes a restart)" % (key, c.get(key), f.get(key)))
        try:
            status, body = http_get(s.admin[0], s.admin[1], "/metrics")
            running_links = set(Metrics(body).peers("herd_link_up")) if status == 200 else None
        except (OSError, ValueError):
            running_links = None
        if running_links is not None:
            want = neighbours(topo, s.name)
            for peer in sorted(want - running_links):
                changes.append("link to %s added" % peer)
            for peer in sorted(running_links - want):
                changes.append("link to %s removed" % peer)
        running = flat("", c.get("running") or {}, {})
        for key in ("log_dir", "state_dir"):
            if key in c and key not in running:
                running[key] = c[key]
        for key in sorted(set(running) & set(file_settings)):
            if running[key] != file_settings[key]:
                changes.append("%s %s -> %s" % (key, json.dumps(running[key]),
                                                json.dumps(file_settings[key])))
        pending = c.get("pending")
        if pending:
            changes.append("still pending a restart: %s" % ", ".join(pending))
        if changes:
            print("%s: would change: %s" % (s.name, "; ".join(changes)))
        else:
            print("%s: no change" % s.name)
    return 0


USAGE = ("herdctl: usage: servers.py locate RUN_DIR CONFIG [--probe] [--json] [NAME...] | "
         "wait-ready HOST PORT TIMEOUT | dry-run RUN_DIR CONFIG [NAME...]")


def main(argv):
    if len(argv) >= 2 and argv[1] == "locate":
        return locate(argv[2:])
    if len(argv) == 5 and argv[1] == "wait-ready":
        return wait_ready(argv[2], argv[3], float(argv[4]))
    if len(argv) >= 2 and argv[1] == "dry-run":
        return dry_run(argv[2:])
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
