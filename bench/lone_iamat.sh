#!/usr/bin/env bash
# IAMAT throughput of a lone herd-server (one server, no links, logging on)
# against herd-floor, in the same run: the README's "lone server" figure.
#
#   bench/lone_iamat.sh                                   # build/herd-server
#   bench/lone_iamat.sh before=build-base/herd-server after=build/herd-server
#   RUNS=5 DURATION=3 CONNS=32 DEPTH=16 bench/lone_iamat.sh
#
# Each argument is LABEL=PATH of a herd-server binary; several are compared
# run by run (the machine is shared and noisy: each run measures every binary
# and the floor back to back, and the medians and the median per-run ratio to
# the floor are printed). Every server is started fresh for each run in a
# temporary folder on free ports and stopped after it (its log is removed).
# herd-bench and herd-floor come from $BUILD_DIR (default build/), built if
# missing. Raw RESULT lines are kept in $OUT_DIR (printed at the end).
# Besides herd-bench's figures (the whole process's CPU per command), the
# CPU per command of the server's node (main) thread, of its front-end
# threads (herd-fe-N, together) and of its herd-log writer thread is read
# from /proc/PID/task; the load runs without warm-up so that those cover the
# same commands. FE_THREADS=N sets the topology's frontend_threads (default:
# the server's own default).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
RUNS=${RUNS:-3}
DURATION=${DURATION:-3}
CONNS=${CONNS:-32}
DEPTH=${DEPTH:-16}
TMP=$(mktemp -d /tmp/herd-lone.XXXXXX)
OUT_DIR=${OUT_DIR:-/tmp/herd-lone-results.$$}
mkdir -p "$OUT_DIR"
[[ $# -gt 0 ]] || set -- "herd=$BUILD_DIR/herd-server"

say() { printf '%s\n' "$*" >&2; }

if [[ ! -x $BUILD_DIR/bench/herd-bench || ! -x $BUILD_DIR/bench/herd-floor ]]; then
    cmake -S "$ROOT" -B "$BUILD_DIR" >/dev/null
    cmake --build "$BUILD_DIR" -j2 --target herd-bench herd-floor >/dev/null
fi
BENCH=$BUILD_DIR/bench/herd-bench
FLOOR=$BUILD_DIR/bench/herd-floor

PIDS=()
stop() { # pid: SIGTERM, then SIGKILL after 10 s
    local p=$1 i
    kill "$p" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        kill -0 "$p" 2>/dev/null || { wait "$p" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
}
cleanup() {
    local p
    for p in "${PIDS[@]}"; do stop "$p"; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_line() { # file line: up to 15 s
    local i
    for ((i = 0; i < 300; i++)); do
        grep -q "^$2" "$1" 2>/dev/null && return 0
        sleep 0.05
    done
    say "timed out waiting for '$2' in $1:"
    cat "$1" >&2 || true
    return 1
}

# Three free ports below the ephemeral range (where outgoing connections,
# the load's own among them, would take them).
read -r PORT PEER FPORT < <(python3 -c '
import random, socket
while True:
    base = random.randrange(20000, 32000, 3)
    try:
        socks = [socket.socket() for _ in range(3)]
        for i, s in enumerate(socks):
            s.bind(("127.0.0.1", base + i))
    except OSError:
        continue
    finally:
        for s in socks:
            s.close()
    print(base, base + 1, base + 2)
    break')

FE_JSON=${FE_THREADS:+, \"frontend_threads\": $FE_THREADS}
cat >"$TMP/topology.json" <<EOF
{
  "servers": {"Bailey": {"host": "127.0.0.1", "client_port": $PORT, "peer_port": $PEER}},
  "links": [],
  "places": {"url": "http://127.0.0.1:9/maps/api/place/nearbysearch/json", "key_env": "HERD_PLACES_KEY"},
  "log_dir": "logs"$FE_JSON
}
EOF

"$FLOOR" --port "$FPORT" --name Floor >"$TMP/floor.out" 2>&1 &
PIDS+=($!)
FLOOR_PID=$!
wait_line "$TMP/floor.out" "READY Floor"

bench() { # file args...
    local file=$1 out
    shift
    out=$(timeout 120 "$BENCH" "$@" -q 2>>"$OUT_DIR/stderr.log") || true
    printf '%s\n' "$out" | grep '^RESULT' >>"$file" || say "  (no result: see $OUT_DIR/stderr.log)"
}
vals() { cat "$1" "$1.threads" 2>/dev/null | grep '^RESULT\|^THREADS' | tr ' ' '\n' | sed -n "s/^$2=//p" || true; }

# CPU ticks so far of the server's main (node) thread, of its herd-log
# thread and of its front-end threads (0 when it has none): "MAIN LOG FE".
thread_ticks() {
    local pid=$1 t main=0 log=0 fe=0 comm
    for t in /proc/"$pid"/task/*; do
        comm=$(cat "$t/comm" 2>/dev/null || true)
        if [[ ${t##*/} == "$pid" ]]; then
            main=$(awk '{ print $14 + $15 }' "$t/stat" 2>/dev/null || echo 0)
        elif [[ $comm == herd-log ]]; then
            log=$(awk '{ print $14 + $15 }' "$t/stat" 2>/dev/null || echo 0)
        elif [[ $comm == herd-fe-* ]]; then
            fe=$((fe + $(awk '{ print $14 + $15 }' "$t/stat" 2>/dev/null || echo 0)))
        fi
    done
    echo "$main $log $fe"
}
median() {
    sort -g | awk '{ a[NR] = $1 } END {
        if (NR == 0) { print "-"; exit }
        if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

say "== lone server IAMAT, $CONNS connections x $DEPTH in flight, ${DURATION} s, $RUNS runs"
for ((r = 1; r <= RUNS; r++)); do
    for spec in "$@"; do
        label=${spec%%=*} server=${spec#*=}
        rm -rf "$TMP/logs"
        out=$TMP/server.$r.$label.out # a file of its own: never an earlier run's READY
        "$server" --config "$TMP/topology.json" Bailey >"$out" 2>&1 &
        pid=$!
        PIDS+=("$pid")
        wait_line "$out" "READY Bailey"
        t0=$(thread_ticks "$pid")
        bench "$OUT_DIR/$label" load --port "$PORT" --expect-name Bailey -c "$CONNS" -d "$DEPTH" \
            --duration "$DURATION" --warmup 0 --pid "$pid" --label "run$r"
        t1=$(thread_ticks "$pid")
        stop "$pid"
        ops=$(vals "$OUT_DIR/$label" ops | tail -1)
        read -r main_us log_us fe_us < <(awk -v a="$t0" -v b="$t1" -v ops="${ops:-0}" -v hz="$(getconf CLK_TCK)" 'BEGIN {
            split(a, x, " "); split(b, y, " ")
            if (ops > 0) printf "%.3f %.3f %.3f\n", (y[1] - x[1]) / hz * 1e6 / ops, (y[2] - x[2]) / hz * 1e6 / ops,
                                (y[3] - x[3]) / hz * 1e6 / ops
            else print "- - -" }')
        echo "THREADS label=run$r reactor_us_per_op=$main_us log_us_per_op=$log_us fe_us_per_op=$fe_us" >>"$OUT_DIR/$label.threads"
        say "  run $r $label: $(vals "$OUT_DIR/$label" tput | tail -1) cmd/s, node thread $main_us us/cmd, front ends $fe_us us/cmd, log thread $log_us us/cmd"
    done
    bench "$OUT_DIR/floor" load --port "$FPORT" --expect-name Floor -c "$CONNS" -d "$DEPTH" \
        --duration "$DURATION" --warmup 0 --pid "$FLOOR_PID" --label "run$r"
    say "  run $r floor: $(vals "$OUT_DIR/floor" tput | tail -1) cmd/s"
done

printf '%-10s %12s %10s %14s %14s %14s %14s %12s\n' "" "cmd/s" "to floor" "us CPU/cmd" "node us" "front ends us" "log thread us" "p99 (us)"
for spec in "$@" floor=; do
    label=${spec%%=*}
    ratio=$(paste <(vals "$OUT_DIR/$label" tput) <(vals "$OUT_DIR/floor" tput) |
        awk 'NF == 2 && $2 > 0 { printf "%.4f\n", $1 / $2 }' | median)
    printf '%-10s %12.0f %10.3f %14s %14s %14s %14s %12s\n' "$label" "$(vals "$OUT_DIR/$label" tput | median)" "$ratio" \
        "$(vals "$OUT_DIR/$label" srv_us_per_op | median)" "$(vals "$OUT_DIR/$label" reactor_us_per_op | median)" \
        "$(vals "$OUT_DIR/$label" fe_us_per_op | median)" \
        "$(vals "$OUT_DIR/$label" log_us_per_op | median)" "$(vals "$OUT_DIR/$label" lat_p99_us | median)"
done
say "raw results: $OUT_DIR"
