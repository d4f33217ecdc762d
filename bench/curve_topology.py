"""Writes DIR/topology.json for bench/curve_flood.sh: the default herd's links
on free ports on 127.0.0.1, and with KEYED=1 a CURVE key pair per server made
by herd-keygen (keys in DIR/keys, public keys in the topology).

    python3 curve_topology.py DIR KEYED HERD_KEYGEN NAME...
"""
import json
import socket
import subprocess
import sys

LINKS = [["Bailey", "Bona"], ["Bailey", "Campbell"], ["Bona", "Campbell"],
         ["Bona", "Clark"], ["Campbell", "Jaquez"], ["Clark", "Jaquez"]]


def main(argv):
    d, keyed, keygen, names = argv[1], argv[2] == "1", argv[3], argv[4:]
    socks = [socket.socket() for _ in range(2 * len(names))]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    servers = {n: {"host": "127.0.0.1", "client_port": ports[2 * i], "peer_port": ports[2 * i + 1]}
               for i, n in enumerate(names)}
    if keyed:
        out = subprocess.run([keygen, d + "/keys"] + names, check=True, capture_output=True, text=True)
        for line in out.stdout.splitlines():
            name, key = line.split()
            servers[name]["public_key"] = key
    topo = {"servers": servers, "links": [l for l in LINKS if l[0] in servers and l[1] in servers],
            "log_dir": "logs"}
    with open(d + "/topology.json", "w", encoding="utf-8") as f:
        json.dump(topo, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
