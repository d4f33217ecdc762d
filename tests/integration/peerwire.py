"""peerwire: herd's inter-server protocol spoken by hand, for tests (standard library only).

Servers link over ZeroMQ: each connects a DEALER, whose identity is its own
name, to every neighbour's ROUTER on the neighbour's peer port, and every
message is one frame holding one msgpack array (PROTOCOL.md section 7,
include/herd_wire.h). Tests that play a peer -- a neighbour sending garbage,
a stranger, an impostor -- need to choose every byte, including bytes that no
ZeroMQ or msgpack library would ever send, and the tests may depend on the
standard library only. So both layers are written out here, just far enough
for that: nothing a server does in return is decoded beyond the handshake.

ZMTP 3.0 (the wire protocol of ZeroMQ), NULL mechanism only
    ``zmtp_greeting(mechanism=b"NULL")``  the 64-byte greeting.
    ``zmtp_frame_header(flags, size)``   a frame header (short form up to 255
                                         bytes, long form above); flags 0x01
                                         MORE, 0x04 COMMAND.
    ``zmtp_ready(socket_type, identity)`` the body of a READY command.
    ``raw_connection(port, data, timeout=5)`` a plain TCP socket to
        127.0.0.1:port that has sent ``data`` (for bytes that are not ZMTP,
        or ZMTP sent without waiting for the server's half).
    ``Zmtp(port, identity, socket_type=b"DEALER", timeout=5)``
        connects to 127.0.0.1:port and does the whole handshake (greeting
        both ways, READY both ways); raises AssertionError when the server
        does not answer as a ZMTP 3 peer. ``send(*frames)`` sends one
        message; ``closed_by_peer(timeout=5)``; ``close()``; ``sock`` for
        raw bytes.

msgpack, only the forms herd's wire uses
    ``mp_uint(n)``, ``mp_str(b)`` (bytes as a msgpack str, any length),
    ``mp_array_header(n)``;
    ``mp_updates(lines)``  UPDATES, [1, 2, [at_line, ...]];
    ``mp_hello(name, incarnation, count, digest)``  HELLO, [1, 1, name, ...].
    ``mp_digest(count, digest)``  DIGEST, [1, 4, count, digest];
    ``mp_buckets(groups, digests)``  BUCKETS for these group numbers, with
                                  these bucket digests (256 per group);
    ``mp_want(last, pairs)``  WANT for (bucket, fingerprint) pairs.

The server side of a link, for a test that plays a neighbour's ROUTER
    ``ZmtpListener(port)`` listens on 127.0.0.1:port, takes the server's
        DEALER connection(s), answers the handshake as a ROUTER, and counts
        the messages and bytes that arrive (``messages``, ``bytes``), on a
        thread of its own; ``close()``.
"""

import socket
import struct
import threading
import time

__all__ = [
    "Zmtp", "ZmtpListener", "mp_array_header", "mp_buckets", "mp_digest", "mp_hello", "mp_str", "mp_uint",
    "mp_updates", "mp_want",
    "raw_connection", "zmtp_frame_header", "zmtp_greeting", "zmtp_ready",
]

WIRE_VERSION = 1   # HERD_WIRE_VERSION
MSG_HELLO = 1      # HERD_MSG_HELLO
MSG_UPDATES = 2    # HERD_MSG_UPDATES
MSG_DIGEST = 4     # HERD_MSG_DIGEST
MSG_BUCKETS = 6    # HERD_MSG_BUCKETS
MSG_WANT = 8       # HERD_MSG_WANT


# ------------------------------------------------------------------ msgpack

def mp_uint(n):
    """A non-negative integer: positive fixint, else uint 64."""
    if n < 128:
        return bytes([n])
    return b"\xcf" + struct.pack(">Q", n)


def mp_str(b):
    """Bytes b as a msgpack str (fixstr, str 8, str 16 or str 32)."""
    n = len(b)
    if n < 32:
        return bytes([0xa0 | n]) + b
    if n < 256:
        return b"\xd9" + bytes([n]) + b
    if n < 65536:
        return b"\xda" + struct.pack(">H", n) + b
    return b"\xdb" + struct.pack(">I", n) + b


def mp_array_header(n):
    """The header of an array of n elements (fixarray, array 16 or array 32)."""
    if n < 16:
        return bytes([0x90 | n])
    if n < 65536:
        return b"\xdc" + struct.pack(">H", n)
    return b"\xdd" + struct.pack(">I", n)


def mp_updates(lines):
    """The UPDATES message: [1, 2, [at_line, ...]] for a list of AT lines (bytes)."""
    return (mp_array_header(3) + mp_uint(WIRE_VERSION) + mp_uint(MSG_UPDATES)
            + mp_array_header(len(lines)) + b"".join(mp_str(a) for a in lines))


def mp_hello(name, incarnation, count, digest):
    """The HELLO message: [1, 1, name, incarnation, count, digest]."""
    return (mp_array_header(6) + mp_uint(WIRE_VERSION) + mp_uint(MSG_HELLO) + mp_str(name)
            + mp_uint(incarnation) + mp_uint(count) + mp_uint(digest))


def mp_bin(b):
    """Bytes b as a msgpack bin (bin 8, bin 16 or bin 32)."""
    n = len(b)
    if n < 256:
        return b"\xc4" + bytes([n]) + b
    if n < 65536:
        return b"\xc5" + struct.pack(">H", n) + b
    return b"\xc6" + struct.pack(">I", n) + b


def mp_digest(count, digest):
    """The DIGEST message: [1, 4, count, digest]."""
    return mp_array_header(4) + mp_uint(WIRE_VERSION) + mp_uint(MSG_DIGEST) + mp_uint(count) + mp_uint(digest)


def mp_buckets(groups, digests):
    """The BUCKETS message: [1, 6, bin(groups as u8), bin(digests as u64 LE)]."""
    return (mp_array_header(4) + mp_uint(WIRE_VERSION) + mp_uint(MSG_BUCKETS) + mp_bin(bytes(groups))
            + mp_bin(b"".join(struct.pack("<Q", d) for d in digests)))


def mp_want(last, pairs):
    """The WANT message: [1, 8, last, bin(buckets as u16 LE), bin(fingerprints as u64 LE)]."""
    return (mp_array_header(5) + mp_uint(WIRE_VERSION) + mp_uint(MSG_WANT) + (b"\xc3" if last else b"\xc2")
            + mp_bin(b"".join(struct.pack("<H", b) for b, _ in pairs))
            + mp_bin(b"".join(struct.pack("<Q", f) for _, f in pairs)))


# ----------------------------------------------------------------- ZMTP 3.0

def zmtp_greeting(mechanism=b"NULL"):
    """The greeting: signature, version 3.0, mechanism, as-server 0, filler."""
    return (b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + mechanism.ljust(20, b"\x00")
            + b"\x00" + b"\x00" * 31)


def zmtp_frame_header(flags, size):
    """The header of a frame of `size` bytes; the long form is chosen by size."""
    if size > 255:
        return bytes([flags | 0x02]) + struct.pack(">Q", size)
    return bytes([flags, size])


def _prop(name, value):
    return bytes([len(name)]) + name + struct.pack(">I", len(value)) + value


def zmtp_ready(socket_type=b"DEALER", identity=b""):
    """The body of a READY command with these Socket-Type and Identity properties."""
    return b"\x05READY" + _prop(b"Socket-Type", socket_type) + _prop(b"Identity", identity)


def raw_connection(port, data, timeout=5):
    """A plain TCP connection to 127.0.0.1:port that has sent `data`. The
    server may close or reset it part-way through, which is no error here:
    what it did is for the test to look at. The socket is a context manager."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
    except (ConnectionResetError, BrokenPipeError):
        pass
    except BaseException:
        s.close()
        raise
    return s


class Zmtp:
    """One ZMTP 3.0 connection (NULL mechanism) to a server's peer port,
    handshake done: it acts as a DEALER peer called `identity`."""

    def __init__(self, port, identity, socket_type=b"DEALER", timeout=5):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.sendall(zmtp_greeting())
        greeting = self._recv(64)
        if greeting[0] != 0xff or greeting[9] != 0x7f or greeting[10] != 3:
            raise AssertionError("not a ZMTP 3 greeting: %r" % greeting)
        self._frame(0x04, zmtp_ready(socket_type, identity))
        flags, body = self._read_frame()
        if not flags & 0x04 or not body.startswith(b"\x05READY"):
            raise AssertionError("no READY from the server: %r %r" % (flags, body))

    def _frame(self, flags, body):
        self.sock.sendall(zmtp_frame_header(flags, len(body)) + body)

    def _recv(self, n):
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise AssertionError("the server closed the ZMTP connection")
            out += chunk
        return out

    def _read_frame(self):
        flags = self._recv(1)[0]
        size = struct.unpack(">Q", self._recv(8))[0] if flags & 0x02 else self._recv(1)[0]
        return flags, self._recv(size)

    def send(self, *frames):
        """One message of these frames."""
        for i, frame in enumerate(frames):
            self._frame(0x01 if i + 1 < len(frames) else 0x00, frame)

    def closed_by_peer(self, timeout=5):
        """True once the server has closed this connection (EOF or reset)
        within `timeout` seconds; anything it sends meanwhile is discarded."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                if self.sock.recv(65536) == b"":
                    return True
            except (ConnectionResetError, BrokenPipeError):
                return True
            except socket.timeout:
                return False
        return False

    def close(self):
        self.sock.close()


class ZmtpListener:
    """A stand-in for a neighbour's ROUTER on 127.0.0.1:port (NULL
    mechanism): every connection that arrives is answered as a ROUTER and
    drained on a thread; ``messages`` and ``bytes`` count what came in."""

    def __init__(self, port):
        self.messages = 0
        self.bytes = 0
        self._closed = False
        self._conns = []
        self._lock = threading.Lock()
        self._srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._srv.bind(("127.0.0.1", port))
        self._srv.listen(16)
        self._srv.settimeout(0.2)
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        while not self._closed:
            try:
                conn, _ = self._srv.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _recv(conn, n):
        out = b""
        while len(out) < n:
            chunk = conn.recv(n - len(out))
            if not chunk:
                raise OSError("closed")
            out += chunk
        return out

    def _serve(self, conn):
        try:
            conn.settimeout(None)
            conn.sendall(zmtp_greeting())
            self._recv(conn, 64)
            body = zmtp_ready(b"ROUTER", b"")
            conn.sendall(zmtp_frame_header(0x04, len(body)) + body)
            while not self._closed:
                flags = self._recv(conn, 1)[0]
                size = struct.unpack(">Q", self._recv(conn, 8))[0] if flags & 0x02 else self._recv(conn, 1)[0]
                self._recv(conn, size)
                if not flags & 0x04 and not flags & 0x01:
                    with self._lock:
                        self.messages += 1
                        self.bytes += size
        except OSError:
            pass

    def close(self):
        self._closed = True
        self._srv.close()
        with self._lock:
            for c in self._conns:
                c.close()
        self._thread.join(2)
