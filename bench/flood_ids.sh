#!/usr/bin/env bash
# flood_ids.sh: one client storing fresh client ids as fast as it can against a
# lone server with limits.max_records 1,000,000 (issue 11's benchmark).
#
#   BUILD_DIR=build FLOOD_S=60 bench/flood_ids.sh
#
# Prints the server's VmRSS at the end of the flood (the table is bounded: the
# lowest-ranked records are dropped past the bound), and the IAMAT latency of a
# well-behaved client (1,000 commands/s, open loop, its own 1,000 ids) with and
# without the flood beside it. Everything runs on 127.0.0.1 on free ports and
# is stopped at the end.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
FLOOD_S=${FLOOD_S:-60}
MAX_RECORDS=${MAX_RECORDS:-1000000}
SERVER=$BUILD_DIR/herd-server
BENCH=$BUILD_DIR/bench/herd-bench
[[ -x $SERVER && -x $BENCH ]] || { echo "flood_ids: build herd-server and herd-bench into $BUILD_DIR first" >&2; exit 2; }

TMP=$(mktemp -d /tmp/herd-flood-ids.XXXXXX)
PID=
cleanup() { [[ -n $PID ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT

read -r PORT PEER < <(python3 -c 'import socket
s=[socket.socket() for _ in range(2)]
[x.bind(("127.0.0.1", 0)) for x in s]
print(*[x.getsockname()[1] for x in s])')
cat >"$TMP/topology.json" <<EOF
{ "servers": { "Solo": { "host": "127.0.0.1", "client_port": $PORT, "peer_port": $PEER } },
  "links": [], "log_dir": "logs", "state_dir": null,
  "places": { "url": "http://127.0.0.1:1/unused", "key_env": "HERD_FLOOD_NO_KEY" },
  "limits": { "max_records": $MAX_RECORDS, "idle_timeout_ms": 600000 } }
EOF
"$SERVER" --config "$TMP/topology.json" Solo >"$TMP/out" 2>"$TMP/err" &
PID=$!
for _ in $(seq 100); do grep -q '^READY' "$TMP/out" && break; sleep 0.1; done
grep -q '^READY' "$TMP/out" || { echo "flood_ids: the server did not start: $(cat "$TMP/err")" >&2; exit 1; }

good() { # duration label
    "$BENCH" load --port "$PORT" -c 1 -d 1 --rate 1000 --duration "$1" --keys 1000 --prefix good- -q --label "$2" |
        grep '^RESULT'
}
echo "== a well-behaved client alone (1,000 IAMAT/s for 20 s)"
good 20 alone
echo "== the same beside one connection storing fresh ids flat out for $FLOOD_S s (max_records $MAX_RECORDS)"
"$BENCH" load --port "$PORT" -c 1 -d 64 --duration "$FLOOD_S" --keys 4000000000 --prefix fresh- -q \
    --label flood --timeout 30 >"$TMP/flood.out" &
FLOOD=$!
good $((FLOOD_S - 10)) beside-flood
wait "$FLOOD" || true
grep '^RESULT' "$TMP/flood.out" || cat "$TMP/flood.out"
echo "VmRSS of the server after the flood: $(awk '/^VmRSS/ {print $2, $3}' "/proc/$PID/status")"
printf 'WHATSAT good-0 10 1\n' | timeout 5 nc -N 127.0.0.1 "$PORT" | head -1
