#!/usr/bin/env bash
# Flood throughput with and without CURVE on the links, in the same run.
#
#   bench/curve_flood.sh            # RUNS=3 COUNT=100000 BUILD_DIR=build
#
# Starts the default five-server herd (the links of topology.json) on free
# ports, twice: once with plain links, once with a CURVE key pair per server
# (herd-keygen). Each time, herd-bench prop sends COUNT new clients to Bailey
# as fast as it accepts them (32 connections x 64 in flight), then checks
# every update at every server. Prints the medians of updates accepted per
# second and the updates lost. Stops everything it started, also on failure.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
RUNS=${RUNS:-3}
COUNT=${COUNT:-100000}
SERVER=$BUILD_DIR/herd-server
BENCH=$BUILD_DIR/bench/herd-bench
KEYGEN=$BUILD_DIR/herd-keygen
for f in "$SERVER" "$BENCH" "$KEYGEN"; do
    [[ -x $f ]] || { echo "curve_flood: $f not built (cmake --build $BUILD_DIR)" >&2; exit 1; }
done
TMP=$(mktemp -d "${TMPDIR:-/tmp}/herd-curve.XXXXXX")
PIDS=()
stop_all() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
}
trap 'stop_all; rm -rf "$TMP"' EXIT INT TERM
NAMES=(Bailey Bona Campbell Clark Jaquez)

run_mode() {  # run_mode KEYED -> prints "rate lost" per run
    local keyed=$1 r dir
    for ((r = 1; r <= RUNS; r++)); do
        dir=$TMP/$keyed-$r
        mkdir -p "$dir"
        python3 "$ROOT/bench/curve_topology.py" "$dir" "$keyed" "$KEYGEN" "${NAMES[@]}"
        local n
        for n in "${NAMES[@]}"; do
            "$SERVER" --config "$dir/topology.json" "$n" >"$dir/$n.out" 2>"$dir/$n.err" &
            PIDS+=($!)
        done
        for n in "${NAMES[@]}"; do
            for _ in $(seq 1 300); do grep -q "^READY $n$" "$dir/$n.out" 2>/dev/null && break; sleep 0.05; done  # poll for READY, deadline 15 s
            grep -q "^READY $n$" "$dir/$n.out" || { echo "curve_flood: $n did not start: $(cat "$dir/$n.err")" >&2; exit 1; }
        done
        "$BENCH" prop --config "$dir/topology.json" --server Bailey --rate 0 --count "$COUNT" -c 32 -d 64 \
            --sample-every 500 --verify --timeout 20 --prefix c$keyed$r- | grep '^RESULT' |
            tr ' ' '\n' | awk -F= '$1 == "achieved_rate" {r = $2} $1 == "lost_total" {l = $2} END {print r, l}'
        stop_all
    done
}
median() { sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
plain=$(run_mode 0)
curve=$(run_mode 1)
p=$(awk '{print $1}' <<<"$plain" | median)
c=$(awk '{print $1}' <<<"$curve" | median)
printf 'flood, %d updates at Bailey, checked at all five (medians of %d runs)\n' "$COUNT" "$RUNS"
printf '  plain links: %8.0f updates/s, lost %s\n' "$p" "$(awk '{s += $2} END {print s + 0}' <<<"$plain")"
printf '  CURVE links: %8.0f updates/s, lost %s\n' "$c" "$(awk '{s += $2} END {print s + 0}' <<<"$curve")"
awk -v p="$p" -v c="$c" 'BEGIN {printf "  CURVE / plain: %.2f\n", c / p}'
