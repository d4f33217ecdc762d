#!/usr/bin/env python3
"""herdctl's helper: send one client command to a server, print the reply.

    client.py HOST PORT TIMEOUT COMMAND

connects to HOST:PORT, sends COMMAND and a newline, half-closes (the server
then answers and closes, PROTOCOL.md section 2) and copies every byte of
the reply to stdout unchanged. TIMEOUT is the number of seconds to wait for
the connection and then for the whole reply (a WHATSAT waits for the Places
service).

Exit status: 0 when the server closed after its reply; 3 when the
connection could not be made (the server is not there); 1 when the reply
did not end in time or the connection broke (what did arrive is still
printed); 2 for a usage error. Errors go to stderr as one line.
"""

import socket
import sys
import time

from topology import WILDCARD_HOSTS


def fail(status, message):
    sys.stdout.buffer.flush()
    print(f"herdctl: {message}", file=sys.stderr)
    return status


def send(host, port, timeout, command):
    host = WILDCARD_HOSTS.get(host, host)
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        return fail(3, f"cannot connect to {where}: {e.strerror or e}")
    out = sys.stdout.buffer
    deadline = time.monotonic() + timeout
    with sock:
        try:
            sock.sendall(command.encode("utf-8", "surrogateescape") + b"\n")
            sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            # The server may have closed early; what it sent is still readable.
            print(f"herdctl: sending to {where}: {e.strerror or e}", file=sys.stderr)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return fail(1, f"{where} did not finish its reply within {timeout:g} s")
            sock.settimeout(left)
            try:
                data = sock.recv(65536)
            except socket.timeout:
                continue
            except OSError as e:
                return fail(1, f"reading from {where}: {e.strerror or e}")
            if not data:
                out.flush()
                return 0
            out.write(data)


def main(argv):
    try:
        host, port, timeout, command = argv[1], int(argv[2]), float(argv[3]), argv[4]
        if len(argv) != 5 or timeout <= 0:
            raise ValueError
    except (IndexError, ValueError):
        print("herdctl: usage: client.py HOST PORT TIMEOUT COMMAND", file=sys.stderr)
        return 2
    return send(host, port, timeout, command)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
