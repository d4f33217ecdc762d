"""herdtest: the harness for herd's integration tests (standard library only).

Every integration test starts real ``herd-server`` processes from a topology
written on free ports in a fresh temporary folder, waits for ``READY NAME``,
talks to them over TCP and waits on conditions (a reply, a log line, a closed
socket) with deadlines -- never fixed sleeps. Nothing is left running: every
process is stopped by ``Herd.close()`` (context manager exit or a test
cleanup), by an ``atexit`` hook as a last resort, and -- when it was started
from the main thread -- by the kernel (PR_SET_PDEATHSIG) if the test runner
itself dies.

The binary is ``$HERD_SERVER``, or ``../../build/herd-server`` relative to
this file.

Environment knobs
    HERD_SERVER     path of the herd-server binary
    HERD_KEEP_TMP   when set (non-empty), temporary folders are kept and their
                    paths printed, so logs can be read after the run

Quick reference
---------------
``free_ports(n)``
    n distinct free TCP ports on 127.0.0.1, outside the kernel's ephemeral
    range and never handed to two test processes at once.

``wait_until(fn, timeout=10, interval=0.01, msg="")``
    Polls ``fn()`` until it returns something truthy and returns that value;
    raises ``HerdTimeout`` (an AssertionError) with ``msg`` at the deadline.
    This is the only kind of waiting tests should do.

``ns_text(ns)``, ``now_text()``
    A client time (bytes, nine fraction digits) for ``ns`` nanoseconds since
    the epoch, or for now.

``iamat_line(cid, pos=POS, t=None)``
    ``IAMAT cid pos t`` (bytes, no LF); ``t`` defaults to ``now_text()``.

``at_rank(at)``
    The PROTOCOL section 3 rank of an AT line (bytes) as a comparable tuple:
    client time, origin name, position text, then the whole line.

``run_server(args, env=None, cwd=None, timeout=15)``
    Runs herd-server with ``args`` to completion (for start-up errors) and
    returns ``subprocess.CompletedProcess`` (stdout/stderr as bytes).

``Herd(servers=None, links=None, places_url=None, env=None, limits=None,
       places=None, extra=None, tmpdir=None)``
    Writes ``topology.json`` (PROTOCOL section 9) in a fresh temporary folder.

    servers     list of names; default the five of PROTOCOL section 1
    links       list of name pairs; default the six of section 1 when
                ``servers`` is the default, otherwise no links
    places_url  ``places.url``; default a closed port on 127.0.0.1, so no
                test ever reaches the real Places service by accident
    env         extra environment for every server (a value of None removes
                the variable). Inherited HERD_PLACES_URL and the key variable
                are removed first. The topology's ``places.key_env`` is
                ``PLACES_KEY_ENV`` ("HERD_TEST_PLACES_KEY"), so no key is set
                unless a test passes ``env={PLACES_KEY_ENV: "..."}``.
    limits      dict merged into ``limits`` (idle_timeout_ms, ...)
    places      dict merged into ``places`` (timeout_ms, cache_ttl_ms, ...)
    extra       dict deep-merged into the whole topology (e.g. an
                ``admin_port`` for one server: {"servers": {"Bona":
                {"admin_port": 12345}}}); applied last
    tmpdir      use this folder instead of a fresh one (it is then not removed)

    HERD_TEST_FRONTEND_THREADS in the environment (e.g. 1 or 3) sets the
    topology's top-level ``frontend_threads`` for every Herd of the run
    (before ``extra``, which can still override it): the suite is run with
    the server's default and with that, to cover both.

    Attributes: ``names``, ``links``, ``tmpdir``, ``topology`` (the dict),
    ``topology_path``. After changing ``topology``, call ``write_topology()``.

    Processes
        ``start(name, extra_args=(), env=None, wait_ready=True, cwd=None,
        ready_timeout=15, config=None)`` runs
        ``herd-server --config TOPO *extra_args NAME`` (cwd defaults to the
        temporary folder; ``config`` replaces TOPO, config=False leaves out
        --config) and waits for the exact stdout line ``READY NAME``;
        raises HerdError with the captured stderr if the process exits first
        or the deadline passes. Returns the Popen.
        ``start_all(names=None)`` starts them all, then waits for each READY.
        ``stop(name, sig=SIGTERM, timeout=15)`` -> exit code (Popen style:
        negative for a signal); raises HerdError (after SIGKILL) if the
        process does not exit in time.
        ``kill(name)`` SIGKILL and wait. ``wait_exit(name, timeout)`` -> exit
        code of a process that exits by itself. ``running(name)``,
        ``pid(name)``, ``process(name)``, ``stdout_lines(name)`` (list of
        str, no newlines), ``stderr_text(name)``, ``state(name)`` ("" while
        running, else the exit status and stderr tail; failure messages of
        Client and connect include it, so a crash shows its sanitizer report).
        ``close()`` stops everything (SIGTERM, SIGKILL after a deadline) and
        removes the temporary folder. Idempotent. A Herd is a context manager;
        in unittest use ``self.addCleanup(herd.close)`` or
        ``addClassCleanup``, or derive from ``HerdTestCase``.

    Addresses and logs
        ``host(name)``, ``port(name)`` (client port), ``peer_port(name)``,
        ``log_path(name, log_dir=None)``, ``log_bytes(name)``,
        ``log_text(name)`` (latin-1, "" when the file does not exist yet),
        ``log_size(name)`` (a mark: bytes in the log now) and
        ``log_since(name, mark)`` (latin-1 text written after the mark),
        ``wait_log(name, pattern, timeout=10)``: pattern is a substring (str)
        or a compiled regex (searched in the whole text); returns the first
        matching line (substring) or the re.Match (regex).

    Faults and operations
        ``pause(name)`` / ``resume(name)``: SIGSTOP / SIGCONT (``stop`` and
        ``close`` resume a paused server so that SIGTERM can reach it).
        ``kill_many(names)``: SIGKILL every one first, then wait for each, so
        they die together. ``set_links(links)``: rewrites the topology's link
        set (and ``links``). ``reload(names, links=None)``: optionally
        ``set_links``, then SIGHUP each running name in that order; returns
        {name: log mark just before its signal}.
        ``add_admin_ports(names=None)``: gives each (default every) server an
        ``admin_port`` apart from the herd's own ports and rewrites the file.
        ``metrics(name)`` -> {(sample name, frozenset of (label, value)):
        float} from GET /metrics; ``link_up(name)`` -> {peer: bool} from its
        ``herd_link_up`` samples.
        ``records(name, cids, timeout=10)`` -> {cid: the AT line it holds
        (bytes) or None}: pipelined WHATSATs on one connection per batch.

    Talking to a server
        ``send(name, data, timeout=10)`` -> bytes: connect, sendall,
        shutdown(SHUT_WR), read until EOF.
        ``request(name, line)`` -> str: ``send(line + "\\n")`` decoded latin-1.
        ``connect(name, timeout=10)`` -> ``Client``.

``Client`` (one TCP connection, with its own receive buffer)
    ``send(data)``; ``recv_line(timeout=10)`` -> bytes up to and including
    LF; ``recv_until(term_or_predicate, timeout=10)`` -> bytes through the
    first occurrence of ``term`` (bytes), or the whole buffer once
    ``predicate(buffer)`` is true; ``recv_exact(n, timeout=10)``;
    ``shutdown_write()``; ``read_to_eof(timeout=10)`` -> every remaining
    byte, raising HerdTimeout if the server does not close;
    ``closed(timeout=5)`` -> True once the server has closed (EOF or reset),
    keeping any bytes read meanwhile in ``pending``; ``close()``.
    ``local_port``, ``reset`` (True when the close was a TCP reset).
    A Client is a context manager.

``HerdTestCase`` (a unittest.TestCase)
    ``make_herd(**kw)`` -> a ``Herd`` closed at cleanup; when the test (or
    one of its subtests) failed, its folder and log tails are printed first.
    ``iamat_at(herd, name, cid, pos=POS, t=None)`` -> the AT line (no LF),
    failing unless the reply is exactly one AT line of ``name`` for these
    fields. ``stored_at(herd, name, cid)`` -> the AT line ``name`` holds for
    ``cid`` (first line of a WHATSAT reply that must be an AT line and a JSON
    body), or None when it answers ``? WHATSAT ...``.
    ``assertCleanExit(herd, *names)``: SIGTERM, exit status 0 and no
    sanitizer report in stderr.

Constants and regexes
    ``POS`` a valid position (bytes). ``AT_RE`` (str) and ``AT_RE_B`` (bytes)
    match one AT reply line without its LF: groups server, skew, id,
    position, time.
"""

import atexit
import contextlib
import copy
import ctypes
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

__all__ = [
    "AT_RE", "AT_RE_B", "DEFAULT_LINKS", "DEFAULT_SERVERS", "HOST", "PLACES_KEY_ENV", "POS",
    "Client", "Herd", "HerdError", "HerdTestCase", "HerdTimeout",
    "at_rank", "free_ports", "iamat_line", "now_text", "ns_text", "run_server", "server_binary",
    "wait_until",
]

AT_RE = re.compile(r"^AT (\S+) ([+-]\d+\.\d{9}) (\S+) (\S+) (\S+)$")
AT_RE_B = re.compile(rb"^AT (\S+) ([+-]\d+\.\d{9}) (\S+) (\S+) (\S+)$")

# One /metrics sample line (Prometheus text format), and one of its labels.
_SAMPLE_RE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)\Z")
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')

DEFAULT_SERVERS = ("Bailey", "Bona", "Campbell", "Clark", "Jaquez")
DEFAULT_LINKS = (("Bailey", "Bona"), ("Bailey", "Campbell"), ("Bona", "Campbell"),
                 ("Bona", "Clark"), ("Campbell", "Jaquez"), ("Clark", "Jaquez"))

# The topology's places.key_env: a name of our own, so a developer's real
# GOOGLE_PLACES_API_KEY is never picked up by a test server.
PLACES_KEY_ENV = "HERD_TEST_PLACES_KEY"

HOST = "127.0.0.1"

POS = b"+34.068930-118.445127"  # a valid position (UCLA), for tests that need any


class HerdError(Exception):
    """A server could not be started or stopped as asked."""


class HerdTimeout(AssertionError):
    """A deadline passed while waiting on a server (counts as a test failure)."""


# ---------------------------------------------------------------- utilities

def server_binary():
    """Path of the herd-server binary ($HERD_SERVER or ../../build/herd-server)."""
    path = os.environ.get("HERD_SERVER")
    if not path:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                            "..", "..", "build", "herd-server")
    path = os.path.abspath(path)
    if not os.access(path, os.X_OK):
        raise HerdError("herd-server binary not found or not executable at %s "
                        "(set HERD_SERVER)" % path)
    return path


def sanitized_server():
    """Whether the server binary is an ASan build: its allocator keeps freed
    memory in quarantine and maps shadow memory, so its RSS says nothing of
    the server's own bounds (memory checks skip themselves then)."""
    with open(server_binary(), "rb") as f:
        return b"__asan_init" in f.read()


def status_kb(pid, field):
    """A kB field of /proc/PID/status (VmRSS, VmHWM, ...)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError("no %s for pid %d" % (field, pid))


# Ports for test servers are taken outside the kernel's ephemeral range:
# a port the kernel handed out for bind(0) can be handed again, a moment later,
# as the local port of some outgoing connection (a client, a ZeroMQ link of any
# test running beside this one), and the server then fails to bind it. Ports
# are taken in blocks of _PORT_BLOCK; a block is held with flock() on a file in
# a folder shared by every test process of this user for as long as this
# process lives, so two tests running at once never pick the same port.
_PORT_BLOCK = 64
_PORT_LOCK_DIR = os.path.join(tempfile.gettempdir(), "herd-test-ports-%d" % os.getuid())
_port_lock = threading.Lock()
_port_blocks = []      # open lock files of the blocks this process holds
_port_next = 0         # the next port to try in the last block taken
_port_end = 0          # the end (exclusive) of the last block taken


def _port_span():
    """The widest span of ports in 20000..65535 outside the ephemeral range,
    as (first, last), or None when there is no span of a few blocks. (Below
    20000 are the ports of the shipped topology.json, 10000-12004, which a
    developer's own herd may be using.)"""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            low, high = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        return None
    spans = [(20000, low - 1), (high + 1, 65535)]
    first, last = max(spans, key=lambda s: s[1] - s[0])
    return (first, last) if last - first + 1 >= 8 * _PORT_BLOCK else None


def _take_port_block(span):
    """Locks a block of the span no other test process holds; returns its
    first port. Blocks are aligned to absolute multiples of _PORT_BLOCK and
    their lock files named by their first port, so that checkouts whose span
    differs (another commit's harness running beside) still exclude each
    other."""
    import fcntl
    os.makedirs(_PORT_LOCK_DIR, exist_ok=True)
    first = -(-span[0] // _PORT_BLOCK) * _PORT_BLOCK  # the first aligned block in the span
    nblocks = (span[1] + 1 - first) // _PORT_BLOCK
    if nblocks <= 0:
        raise HerdError("no whole block of %d test ports in %d-%d" % ((_PORT_BLOCK,) + span))
    start = int.from_bytes(os.urandom(4), "little") % nblocks
    for i in range(nblocks):
        base = first + ((start + i) % nblocks) * _PORT_BLOCK
        f = open(os.path.join(_PORT_LOCK_DIR, "ports-%d" % base), "a+b")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        _port_blocks.append(f)
        return base
    raise HerdError("every block of test ports %d-%d is held by another process" % span)


def _forget_port_blocks():
    """In a forked child: the parent's blocks (and their flock, shared with
    the child) stay the parent's; the child takes blocks of its own."""
    global _port_next, _port_end
    _port_next = _port_end = 0
    del _port_blocks[:]


os.register_at_fork(after_in_child=_forget_port_blocks)


def _bindable(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((HOST, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_ports(n):
    """n distinct TCP ports on 127.0.0.1, free now and not handed out to anyone
    else: outside the kernel's ephemeral range, in a block this process holds
    locked, never given twice by one process. Where the ephemeral range leaves
    no room, ports come from the kernel (bind to port 0) as a fallback."""
    global _port_next, _port_end
    span = _port_span()
    if span is None:
        socks = []
        try:
            for _ in range(n):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.bind((HOST, 0))
                socks.append(s)
            return [s.getsockname()[1] for s in socks]
        finally:
            for s in socks:
                s.close()
    ports = []
    with _port_lock:
        while len(ports) < n:
            if _port_next >= _port_end:
                _port_next = _take_port_block(span)
                _port_end = _port_next + _PORT_BLOCK
            port = _port_next
            _port_next += 1
            if _bindable(port):
                ports.append(port)
    return ports


def wait_until(fn, timeout=10, interval=0.01, msg=""):
    """Polls fn() until it returns a truthy value, and returns that value.

    Raises HerdTimeout(msg) once `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise HerdTimeout("timed out after %gs%s" % (timeout, ": " + msg if msg else ""))
        time.sleep(interval)  # poll interval of the deadline loop above, not a fixed wait


def ns_text(ns):
    """The client time text, nine fraction digits, of `ns` nanoseconds since the epoch."""
    return b"%d.%09d" % divmod(ns, 10**9)


def now_text():
    """The client time text of now."""
    return ns_text(time.time_ns())


def at_rank(at):
    """The rank of an AT line (bytes) under PROTOCOL section 3, as a tuple that
    Python compares in the same order: the client time exactly (seconds,
    nanoseconds; fraction digits past the ninth ignored), then the origin
    server's name, then the position text, both as bytes; then the whole line,
    the last tie-break, so that two different lines never rank equal."""
    m = AT_RE_B.match(at)
    if not m:
        raise ValueError("not an AT line: %r" % (at,))
    sec, _, frac = m.group(5).partition(b".")
    nsec = int((frac[:9] + b"000000000")[:9])
    return (int(sec), nsec, m.group(1), m.group(4), at)


def iamat_line(cid, pos=POS, t=None):
    """IAMAT cid pos t (bytes, no LF); t defaults to now."""
    return b"IAMAT " + cid + b" " + pos + b" " + (now_text() if t is None else t)


def _deep_merge(dst, src):
    for key, value in src.items():
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _deep_merge(dst[key], value)
        else:
            dst[key] = copy.deepcopy(value)
    return dst


# PR_SET_PDEATHSIG: the kernel kills a server whose parent thread dies, so a
# test runner killed by a timeout leaves nothing behind. The signal follows
# the thread that forked, hence only for servers started from the main thread.
try:
    _LIBC = ctypes.CDLL(None, use_errno=True)
    _PRCTL = _LIBC.prctl
except (OSError, AttributeError):
    _PRCTL = None
_PR_SET_PDEATHSIG = 1


def _preexec_for(parent_pid):
    def preexec():
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl
            os._exit(1)
    return preexec


def _popen_kwargs():
    kw = {}
    if _PRCTL is not None and threading.current_thread() is threading.main_thread():
        kw["preexec_fn"] = _preexec_for(os.getpid())
    return kw


def run_server(args, env=None, cwd=None, timeout=15):
    """Runs herd-server with `args` to completion and returns the
    CompletedProcess (stdout and stderr as bytes). For start-up failures;
    raises HerdError (after killing it) if it is still running at the deadline."""
    full_env = os.environ.copy()
    full_env.pop("HERD_PLACES_URL", None)
    for key, value in (env or {}).items():
        if value is None:
            full_env.pop(key, None)
        else:
            full_env[key] = value
    proc = subprocess.Popen([server_binary()] + list(args), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env,
                            cwd=cwd, **_popen_kwargs())
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise HerdError("herd-server %s still running after %gs; stderr: %r"
                        % (" ".join(args), timeout, err)) from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


# ------------------------------------------------------------------ client

class Client:
    """One TCP connection to a server's client port, with a receive buffer."""

    def __init__(self, host, port, timeout=10, label="", describe=None):
        self.label = label or "%s:%d" % (host, port)
        self.describe = describe  # (settle) -> str: the server's state, for failure messages
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.local_port = self.sock.getsockname()[1]
        self.buf = bytearray()  # received, not yet returned
        self.eof = False        # the server closed (or reset) the connection
        self.reset = False      # the close was a TCP reset

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def pending(self):
        """Bytes received and not yet returned by a recv_* call."""
        return bytes(self.buf)

    def send(self, data):
        self.sock.sendall(data)

    def shutdown_write(self):
        """Half-closes: the server sees EOF after what was sent."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    def close(self):
        with contextlib.suppress(OSError):
            self.sock.close()

    def _fill(self, deadline):
        """Reads once (blocking until deadline). False on timeout or EOF."""
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return False
        except (ConnectionResetError, ConnectionAbortedError):
            self.eof = self.reset = True
            return False
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _why(self, what, timeout):
        state = "connection closed by the server" if self.eof else "timed out after %gs" % timeout
        msg = "%s waiting for %s from %s; received so far: %r" % (state, what, self.label,
                                                                   bytes(self.buf[:2000]))
        # A closed connection may be a crash: give a dying server a moment.
        extra = self.describe(1.0 if self.eof else 0) if self.describe else ""
        return msg + ("; " + extra if extra else "")

    def recv_until(self, term, timeout=10):
        """Returns bytes through the first occurrence of `term` (bytes), or,
        when `term` is a callable, the whole buffer once term(buffer) is true."""
        deadline = time.monotonic() + timeout
        while True:
            if callable(term):
                if term(bytes(self.buf)):
                    out = bytes(self.buf)
                    self.buf.clear()
                    return out
            else:
                i = self.buf.find(term)
                if i >= 0:
                    out = bytes(self.buf[:i + len(term)])
                    del self.buf[:i + len(term)]
                    return out
            if not self._fill(deadline):
                raise HerdTimeout(self._why(repr(term), timeout))

    def recv_line(self, timeout=10):
        """Returns the next line, including its LF."""
        return self.recv_until(b"\n", timeout)

    def recv_exact(self, n, timeout=10):
        deadline = time.monotonic() + timeout
        while len(self.buf) < n:
            if not self._fill(deadline):
                raise HerdTimeout(self._why("%d bytes" % n, timeout))
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_to_eof(self, timeout=10):
        """Returns everything up to the server's close; HerdTimeout if it
        does not close in time."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            if not self._fill(deadline) and not self.eof:
                raise HerdTimeout(self._why("EOF", timeout))
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def closed(self, timeout=5):
        """True once the server has closed the connection (within timeout)."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            if not self._fill(deadline) and not self.eof:
                return False
        return True


# -------------------------------------------------------------------- herd

class _Proc:
    """One running (or finished) server process and its captured output."""

    def __init__(self, name, popen):
        self.name = name
        self.popen = popen
        self.cond = threading.Condition()
        self.out = []  # stdout lines, bytes without LF
        self.err = []  # stderr lines, bytes with their LF
        self.threads = [threading.Thread(target=self._read, args=(popen.stdout, self.out, True),
                                         daemon=True),
                        threading.Thread(target=self._read, args=(popen.stderr, self.err, False),
                                         daemon=True)]
        for t in self.threads:
            t.start()

    def _read(self, pipe, lines, strip):
        try:
            for line in iter(pipe.readline, b""):
                with self.cond:
                    lines.append(line.rstrip(b"\n") if strip else line)
                    self.cond.notify_all()
        finally:
            pipe.close()
            with self.cond:
                self.cond.notify_all()

    def join_readers(self, timeout=5):
        for t in self.threads:
            t.join(timeout)

    def stderr_text(self):
        with self.cond:
            return b"".join(self.err).decode("latin-1")


_LIVE = set()  # herds not yet closed, for the atexit hook
_LIVE_LOCK = threading.Lock()


@atexit.register
def _close_all_live():
    with _LIVE_LOCK:
        herds = list(_LIVE)
    for herd in herds:
        with contextlib.suppress(Exception):
            herd.close(grace=2)


class Herd:
    """A topology on free ports in a temporary folder, and its server processes."""

    def __init__(self, servers=None, links=None, places_url=None, env=None, limits=None,
                 places=None, extra=None, tmpdir=None):
        default = servers is None
        self.names = list(DEFAULT_SERVERS if default else servers)
        if links is None:
            links = DEFAULT_LINKS if default else ()
        self.links = [tuple(link) for link in links]
        self.env = dict(env or {})
        self._own_tmp = tmpdir is None
        self.tmpdir = tempfile.mkdtemp(prefix="herd-") if tmpdir is None else str(tmpdir)
        self._procs = {}
        self._closed = False
        with _LIVE_LOCK:
            _LIVE.add(self)
        try:
            ports = free_ports(2 * len(self.names) + 1)
            if places_url is None:
                # The last port was free a moment ago: nothing listens there.
                places_url = "http://%s:%d/maps/api/place/nearbysearch/json" % (HOST, ports[-1])
            topo = {
                "servers": {name: {"host": HOST, "client_port": ports[2 * i],
                                   "peer_port": ports[2 * i + 1]}
                            for i, name in enumerate(self.names)},
                "links": [list(link) for link in self.links],
                "places": {"url": places_url, "key_env": PLACES_KEY_ENV, "timeout_ms": 5000},
                "log_dir": "logs",
                "limits": {},
            }
            topo["places"].update(places or {})
            topo["limits"].update(limits or {})
            if not topo["limits"]:
                del topo["limits"]
            forced = os.environ.get("HERD_TEST_FRONTEND_THREADS")
            if forced:
                topo["frontend_threads"] = int(forced)
            _deep_merge(topo, extra or {})
            self.topology = topo
            self.topology_path = os.path.join(self.tmpdir, "topology.json")
            self.write_topology()
        except BaseException:
            self.close()
            raise

    # -- context manager
    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.report(sys.stderr)
        self.close()

    def __repr__(self):
        return "<Herd %s in %s>" % (",".join(self.names), self.tmpdir)

    def write_topology(self):
        """(Re)writes topology.json from self.topology. The new file replaces
        the old one at once (rename), so a server reloading meanwhile reads
        one or the other, never half of one."""
        tmp = self.topology_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.topology, f, indent=2)
            f.write("\n")
        os.replace(tmp, self.topology_path)

    def report(self, out=sys.stderr):
        """Prints the folder and the tail of every log and stderr (for failures)."""
        print("\n--- herd in %s%s" % (self.tmpdir, " (kept)" if self._keep() else ""), file=out)
        for name in self.names:
            log = self.log_text(name)
            if log:
                print("--- %s.log (tail)\n%s" % (name, log[-3000:]), file=out)
            if name in self._procs:
                err = self._procs[name].stderr_text()
                if err:
                    print("--- %s stderr\n%s" % (name, err[-3000:]), file=out)

    # -- addresses and files
    def _conf(self, name):
        try:
            return self.topology["servers"][name]
        except KeyError:
            raise HerdError("no server %r in this herd" % name) from None

    def host(self, name):
        return self._conf(name)["host"]

    def port(self, name):
        return self._conf(name)["client_port"]

    def peer_port(self, name):
        return self._conf(name)["peer_port"]

    def log_path(self, name, log_dir=None):
        if log_dir is None:
            log_dir = os.path.join(os.path.dirname(self.topology_path),
                                   self.topology.get("log_dir", "logs"))
        return os.path.join(log_dir, name + ".log")

    def log_bytes(self, name, log_dir=None):
        try:
            with open(self.log_path(name, log_dir), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return b""

    def log_text(self, name, log_dir=None):
        return self.log_bytes(name, log_dir).decode("latin-1")

    def log_size(self, name, log_dir=None):
        """The log's size now: a mark for log_since."""
        return len(self.log_bytes(name, log_dir))

    def log_since(self, name, mark, log_dir=None):
        """The log text written after `mark` (a log_size), as latin-1."""
        return self.log_bytes(name, log_dir)[mark:].decode("latin-1")

    def wait_log(self, name, pattern, timeout=10, log_dir=None):
        """Waits until the log holds `pattern` (substring or compiled regex).
        Returns the first matching line (substring) or the re.Match (regex)."""
        def look():
            text = self.log_text(name, log_dir)
            if isinstance(pattern, re.Pattern):
                return pattern.search(text)
            i = text.find(pattern)
            if i < 0:
                return None
            start = text.rfind("\n", 0, i) + 1
            end = text.find("\n", i)
            return text[start:end if end >= 0 else len(text)]
        try:
            return wait_until(look, timeout, interval=0.02)
        except HerdTimeout:
            raise HerdTimeout("%s.log does not contain %r after %gs; log tail:\n%s"
                              % (name, getattr(pattern, "pattern", pattern), timeout,
                                 self.log_text(name, log_dir)[-2000:])) from None

    # -- processes
    def _server_env(self, env):
        full = os.environ.copy()
        full.pop("HERD_PLACES_URL", None)
        full.pop(self.topology.get("places", {}).get("key_env", PLACES_KEY_ENV), None)
        for extra in (self.env, env or {}):
            for key, value in extra.items():
                if value is None:
                    full.pop(key, None)
                else:
                    full[key] = value
        return full

    def start(self, name, extra_args=(), env=None, wait_ready=True, cwd=None, ready_timeout=15,
              config=None):
        """Starts `herd-server --config TOPO *extra_args NAME`; waits for READY.
        `config` replaces TOPO; config=False leaves out --config altogether."""
        if self._closed:
            raise HerdError("herd already closed")
        if self.running(name):
            raise HerdError("%s is already running" % name)
        if config is None:
            config = self.topology_path
        argv = ([server_binary()] + (["--config", str(config)] if config is not False else [])
                + list(extra_args) + [name])
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, env=self._server_env(env),
                                 cwd=cwd or self.tmpdir, **_popen_kwargs())
        self._procs[name] = _Proc(name, popen)
        if wait_ready:
            self.wait_ready(name, ready_timeout)
        return popen

    def wait_ready(self, name, timeout=15):
        """Waits for the exact stdout line `READY NAME`."""
        proc = self._procs[name]
        want = ("READY " + name).encode()
        deadline = time.monotonic() + timeout
        while True:
            with proc.cond:
                if want in proc.out:
                    return
                if proc.popen.poll() is None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise HerdError("%s printed no %r within %gs; stdout %r; stderr %r"
                                        % (name, want, timeout, proc.out, b"".join(proc.err)))
                    proc.cond.wait(min(remaining, 0.05))
                    continue
            proc.join_readers()  # it exited: collect its last words
            with proc.cond:
                if want in proc.out:
                    return
                raise HerdError("%s exited with status %s before READY; stdout %r; stderr %r"
                                % (name, proc.popen.returncode, proc.out, b"".join(proc.err)))

    def start_all(self, names=None, ready_timeout=15):
        """Starts every server (or `names`) at once, then waits for each READY."""
        names = list(self.names if names is None else names)
        for name in names:
            self.start(name, wait_ready=False)
        for name in names:
            self.wait_ready(name, ready_timeout)

    def process(self, name):
        return self._procs[name].popen

    def running(self, name):
        proc = self._procs.get(name)
        return proc is not None and proc.popen.poll() is None

    def pid(self, name):
        return self._procs[name].popen.pid

    def stdout_lines(self, name):
        proc = self._procs[name]
        with proc.cond:
            return [line.decode("latin-1") for line in proc.out]

    def stderr_text(self, name):
        return self._procs[name].stderr_text()

    def wait_exit(self, name, timeout=15):
        """Waits for a process that exits by itself; returns its exit code."""
        proc = self._procs[name]
        try:
            code = proc.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise HerdTimeout("%s still running after %gs" % (name, timeout)) from None
        proc.join_readers()
        return code

    def stop(self, name, sig=signal.SIGTERM, timeout=15):
        """Sends `sig` and waits for the exit; returns the exit code. Raises
        HerdError, after a SIGKILL, if the process outlives the timeout."""
        proc = self._procs[name]
        if proc.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.popen.send_signal(sig)
                proc.popen.send_signal(signal.SIGCONT)  # a paused server must see it
        try:
            code = proc.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.popen.kill()
            proc.popen.wait()
            proc.join_readers()
            raise HerdError("%s did not exit within %gs of signal %d; killed"
                            % (name, timeout, sig)) from None
        proc.join_readers()
        return code

    def kill(self, name):
        """SIGKILL and wait; returns the exit code."""
        proc = self._procs[name]
        if proc.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.popen.kill()
        code = proc.popen.wait()
        proc.join_readers()
        return code

    def close(self, grace=10):
        """Stops every server (SIGTERM, then SIGKILL after `grace` seconds)
        and removes the temporary folder. Safe to call more than once."""
        try:
            live = [p for p in self._procs.values() if p.popen.poll() is None]
            for p in live:
                with contextlib.suppress(ProcessLookupError):
                    p.popen.send_signal(signal.SIGTERM)
                    p.popen.send_signal(signal.SIGCONT)  # a paused server must see it
            deadline = time.monotonic() + grace
            for p in live:
                try:
                    p.popen.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        p.popen.kill()
                    p.popen.wait()
            for p in self._procs.values():
                p.join_readers(1)
        finally:
            with _LIVE_LOCK:
                _LIVE.discard(self)
            if not self._closed:
                self._closed = True
                if self._keep():
                    print("herdtest: kept %s" % self.tmpdir, file=sys.stderr)
                elif self._own_tmp:
                    shutil.rmtree(self.tmpdir, ignore_errors=True)

    # -- faults and operations
    def pause(self, name):
        """SIGSTOP: the process freezes, its sockets stay open. Returns once
        the kernel shows it stopped (state T), so a check that follows sees
        a frozen server, not one still finishing its turn."""
        popen = self._procs[name].popen
        popen.send_signal(signal.SIGSTOP)

        def stopped():
            try:
                with open("/proc/%d/stat" % popen.pid) as f:
                    return f.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
            except OSError:
                return True  # gone: nothing left to wait for
        wait_until(stopped, 5, msg="%s did not stop after SIGSTOP" % name)

    def resume(self, name):
        """SIGCONT after pause()."""
        self._procs[name].popen.send_signal(signal.SIGCONT)

    def kill_many(self, names):
        """SIGKILL every one of `names` first, then waits for each: they die
        together, none outlives another by the time a wait takes."""
        procs = [self._procs[name] for name in names]
        for proc in procs:
            if proc.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.popen.kill()
        for proc in procs:
            proc.popen.wait()
            proc.join_readers()

    def set_links(self, links):
        """Rewrites the topology file with this link set."""
        self.links = [tuple(link) for link in links]
        self.topology["links"] = [list(link) for link in self.links]
        self.write_topology()

    def reload(self, names, links=None):
        """set_links(links) when given, then SIGHUP to each running server of
        `names`, in that order. Returns {name: log mark just before its signal}."""
        if links is not None:
            self.set_links(links)
        marks = {}
        for name in names:
            if self.running(name):
                marks[name] = self.log_size(name)
                self._procs[name].popen.send_signal(signal.SIGHUP)
        return marks

    def add_admin_ports(self, names=None):
        """Gives each server of `names` (default: all) an admin_port, apart
        from every port of the topology, and rewrites the file."""
        used = {p for conf in self.topology["servers"].values()
                for key, p in conf.items() if key.endswith("_port")}
        for name in (self.names if names is None else names):
            port = next(p for p in iter(lambda: free_ports(1)[0], None) if p not in used)
            used.add(port)
            self.topology["servers"][name]["admin_port"] = port
        self.write_topology()

    def metrics(self, name, timeout=5):
        """GET /metrics on the admin port: {(sample name, frozenset of
        (label, value) pairs): value}. Raises HerdError on an HTTP error."""
        conf = self._conf(name)
        conn = http.client.HTTPConnection(conf.get("admin_host", HOST), conf["admin_port"],
                                          timeout=timeout)
        try:
            conn.request("GET", "/metrics")
            r = conn.getresponse()
            body = r.read().decode("utf-8")
        finally:
            conn.close()
        if r.status != 200:
            raise HerdError("/metrics of %s: HTTP %d %r" % (name, r.status, body[:300]))
        samples = {}
        for line in body.split("\n"):
            m = _SAMPLE_RE.match(line)
            if m:
                labels = frozenset(_LABEL_RE.findall(m.group(2) or ""))
                samples[(m.group(1), labels)] = float(m.group(3))
        return samples

    def link_up(self, name):
        """{peer: bool} from the herd_link_up samples of `name`'s /metrics."""
        return {dict(labels)["peer"]: value == 1
                for (metric, labels), value in self.metrics(name).items()
                if metric == "herd_link_up" and "peer" in dict(labels)}

    def records(self, name, cids, timeout=10, batch=256):
        """{cid: the AT line `name` holds for cid (bytes, no LF), or None when
        it answers "? WHATSAT ..."}: WHATSATs pipelined on one connection per
        batch. A reply of any other shape raises HerdError."""
        cids = list(cids)
        out = {}
        for i in range(0, len(cids), batch):
            part = cids[i:i + batch]
            data = b"".join(b"WHATSAT " + cid + b" 10 1\n" for cid in part)
            replies = self.send(name, data, timeout)
            pos = 0
            for cid in part:
                if replies.startswith(b"? ", pos):
                    end = replies.find(b"\n", pos)
                    line = replies[pos:end]
                    if end < 0 or line != b"? WHATSAT " + cid + b" 10 1":
                        raise HerdError("%s: bad WHATSAT reply for %r: %r"
                                        % (name, cid, replies[pos:pos + 300]))
                    out[cid] = None
                    pos = end + 1
                    continue
                end = replies.find(b"\n\n", pos)
                at = replies[pos:replies.find(b"\n", pos)]
                m = AT_RE_B.match(at)
                if end < 0 or not m or m.group(3) != cid:
                    raise HerdError("%s: bad WHATSAT reply for %r: %r"
                                    % (name, cid, replies[pos:pos + 300]))
                out[cid] = at
                pos = end + 2
            if pos != len(replies):
                raise HerdError("%s: bytes after the last WHATSAT reply: %r"
                                % (name, replies[pos:pos + 300]))
        return out

    @staticmethod
    def _keep():
        return bool(os.environ.get("HERD_KEEP_TMP"))

    # -- talking to servers
    def connect(self, name, timeout=10):
        try:
            return Client(self.host(name), self.port(name), timeout, label=name,
                          describe=lambda settle: self.state(name, settle))
        except OSError as e:
            extra = self.state(name, 1.0)
            if extra:
                raise HerdError("cannot connect to %s (%s); %s" % (name, e, extra)) from e
            raise

    def state(self, name, settle=0):
        """"" while `name` runs (or was never started); otherwise its exit
        status and the tail of its stderr, for failure messages. `settle`:
        seconds to wait for a process that may be dying."""
        proc = self._procs.get(name)
        if proc is None:
            return ""
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(settle)
        if proc.popen.poll() is None:
            return ""
        proc.join_readers(1)
        return "%s exited with status %s; stderr tail: %r" % (
            name, proc.popen.returncode, proc.stderr_text()[-1500:])

    def send(self, name, data, timeout=10):
        """Connects, sends `data`, half-closes and returns all bytes until EOF."""
        with self.connect(name, timeout) as c:
            try:
                c.send(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server closed early; what it sent is still readable
            c.shutdown_write()
            return c.read_to_eof(timeout)

    def request(self, name, line, timeout=10):
        """send(line + "\\n") decoded as latin-1."""
        return self.send(name, (line + "\n").encode("latin-1"), timeout).decode("latin-1")


class HerdTestCase(unittest.TestCase):
    """A TestCase whose `make_herd(**kw)` herds are closed at cleanup, and
    whose folder and log tails are printed when the test failed; plus the
    client exchanges and checks that many tests share."""

    def make_herd(self, **kw):
        herd = Herd(**kw)
        self.addCleanup(self._close_herd, herd)
        return herd

    def _close_herd(self, herd):
        if self._failed():
            herd.report(sys.stderr)
        herd.close()

    def _failed(self):
        """True when this test or one of its subtests has failed or errored
        so far. Python 3.11 reports each failure to the result at once, and
        _Outcome.success cannot tell: it is set to True again for every
        cleanup. So the result's lists are read (a subtest's entry names its
        test in .test_case)."""
        result = getattr(getattr(self, "_outcome", None), "result", None)
        reported = list(getattr(result, "failures", ())) + list(getattr(result, "errors", ()))
        return any(test is self or getattr(test, "test_case", None) is self
                   for test, _ in reported)

    def iamat_at(self, herd, name, cid, pos=POS, t=None, timeout=10):
        """IAMAT at `name`; checks the reply is exactly one AT line of `name`
        for these fields, and returns it without its LF."""
        t = now_text() if t is None else t
        reply = herd.send(name, iamat_line(cid, pos, t) + b"\n", timeout)
        m = AT_RE_B.match(reply[:-1])
        self.assertTrue(m and reply.endswith(b"\n") and reply.count(b"\n") == 1,
                        "%s: not one AT line: %r" % (name, reply))
        self.assertEqual((m.group(1), m.group(3), m.group(4), m.group(5)),
                         (name.encode(), cid, pos, t), reply)
        return reply[:-1]

    def stored_at(self, herd, name, cid, timeout=10):
        """The AT line `name` stores for cid, or None when it answers
        "? WHATSAT ..."; any other reply shape fails the test."""
        line = b"WHATSAT " + cid + b" 10 5"
        reply = herd.send(name, line + b"\n", timeout)
        if reply.startswith(b"? "):
            self.assertEqual(reply, b"? " + line + b"\n", name)
            return None
        at, sep, rest = reply.partition(b"\n")
        self.assertTrue(sep and AT_RE_B.match(at) and rest.endswith(b"}\n\n"),
                        "%s: not an AT line and a JSON body: %r" % (name, reply[:500]))
        return at

    def assertCleanExit(self, herd, *names):
        """SIGTERM: each exits 0 with no sanitizer report: it never crashed."""
        for name in names:
            code = herd.stop(name)
            err = herd.stderr_text(name)
            self.assertEqual(code, 0, "%s: exit status after SIGTERM; stderr tail %r"
                             % (name, err[-2000:]))
            self.assertNotRegex(err, r"AddressSanitizer|LeakSanitizer|runtime error", name)
