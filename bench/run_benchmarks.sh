#!/usr/bin/env bash
# Reproduces the benchmark table of the README (issue 6).
#
#   bench/run_benchmarks.sh            # everything, 5 runs of each figure
#   RUNS=3 DURATION=3 bench/run_benchmarks.sh
#   ONLY="iamat prop" bench/run_benchmarks.sh
#
# It builds herd-server, herd-bench and herd-floor (into $BUILD_DIR, default
# build/), then starts its own herd of five servers shaped like topology.json
# (same names and links) on free ports of 127.0.0.1 in a temporary folder,
# with logging on, a local Places stand-in, and herd-floor, the minimal
# IAMAT line server. It never touches a herd someone else is running.
#
# The machine is shared and noisy (2 cores), so every figure is run $RUNS
# times and reported as the median, and every throughput beside the floor's
# from the same run, with the ratio (the median of the per-run ratios).
# Raw "RESULT" lines (and herd-bench's complaints, in stderr.log) are kept
# in $OUT_DIR (default: a folder under /tmp that is printed at the end); the
# per-run human lines go to stderr, the table to stdout. Every process
# started here is stopped on exit. Other knobs: PROP_MAX_COUNT (updates in
# the flat-out propagation run, default 200000), KEEP_TMP=1 (keep the
# topology and the herd's logs). It takes about 10 minutes with the defaults.
#
# Benchmarks (names for ONLY):
#   iamat    IAMAT throughput and latency, 32 connections x 16 pipelined
#   oneshot  one connection per IAMAT, half-closed (the course graders' way)
#   mix      90 % IAMAT / 10 % WHATSAT over 1,000 clients (Places cached)
#   paced    latency at a half and a quarter of the median IAMAT throughput
#            (open loop, paced by herd-bench --rate)
#   prop     propagation at 1,000 updates/s, then flat out with a loss check
#   conns    10,000 connections open on one server, one IAMAT each
#   places   100 WHATSATs at once against a stand-in that answers in 1 s
#   mem      VmRSS at 0, 100,000 and 1,000,000 stored clients
#   rejoin   SIGKILL + restart: time until whole, 10,000, 100,000 and 1,000,000
#            clients (REJOIN_KEYS), with no state on disk: the exchange does it all
#   redis    Redis GEOADD (redis-benchmark), a primary alone and with 4 replicas,
#            32 x 16 and 32 x 1, and herd's Bailey at 32 x 1 beside it
#   cpu      CPU per update (issue 22): a herd of its own with the defaults of
#            topology.json (state on, fsync everysec, admin ports) and
#            CPU_IDS client ids (default 100,000) against Redis primary + 4
#            replicas (appendonly yes, appendfsync everysec), 32 x 1 and
#            32 x 16 in flight; utime + stime of all five servers over the
#            run, divided by the updates acknowledged. Redis runs GEOADD
#            (each moving its member: REDIS_GEOADD, below) and SET of an
#            AT-line-sized string (REDIS_SET), and the bytes its primary
#            sent each replica per update are printed, so that a load that
#            changes nothing shows. Then perf's top
#            symbols of the herd over one 32 x 16 run (when perf works).
#            The raw lines (RESULT, with each run's compactions and the
#            seconds it took the herd to fall quiet) are in $OUT_DIR/cpu_*.
#            Knobs: CPU_OPS_1, CPU_OPS_16 (updates a run, default 100000 and
#            500000: long enough to take in the journal's compactions),
#            PROFILE=0 (no perf), PROFILE_DEPTH=1 (profile 32 x 1 instead).
#            `ONLY=cpu RUNS=3` takes about 4 minutes.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
RUNS=${RUNS:-5}
DURATION=${DURATION:-5}
ONLY=${ONLY:-"iamat oneshot mix paced prop conns places mem rejoin redis cpu"}
TMP=$(mktemp -d /tmp/herd-bench.XXXXXX)
OUT_DIR=${OUT_DIR:-$TMP/results}
mkdir -p "$OUT_DIR"
NAMES=(Bailey Bona Campbell Clark Jaquez)
declare -A PID=()      # server name (or floor, places) -> pid
PLACES_PORT=
FLOOR_PORT=

say() { printf '%s\n' "$*" >&2; }
want() { [[ " $ONLY " == *" $1 "* ]]; }

# ---- build ----

build() {
    if [[ ! -f $BUILD_DIR/CMakeCache.txt ]]; then
        cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$TMP/configure.log" 2>&1 ||
            { cat "$TMP/configure.log" >&2; exit 1; }
    fi
    cmake --build "$BUILD_DIR" -j2 --target herd-server herd-bench herd-floor >"$TMP/build.log" 2>&1 ||
        { tail -40 "$TMP/build.log" >&2; exit 1; }
    SERVER=$BUILD_DIR/herd-server
    BENCH=$BUILD_DIR/bench/herd-bench
    FLOOR=$BUILD_DIR/bench/herd-floor
}

# ---- processes ----

stop_pid() { # pid: SIGTERM, then SIGKILL after 10 s
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
    local k
    for k in "${!PID[@]}"; do
        stop_pid "${PID[$k]}"
    done
    PID=()
    if [[ -z ${KEEP_TMP:-} ]]; then
        # Keep the results when they live inside the temporary folder.
        if [[ $OUT_DIR == "$TMP"/* ]]; then
            local keep=/tmp/herd-bench-results.$$
            rm -rf "$keep"
            mv "$OUT_DIR" "$keep" 2>/dev/null && say "raw results: $keep"
        fi
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits until FILE holds LINE (up to 15 s).
wait_line() {
    local file=$1 line=$2 i
    for ((i = 0; i < 300; i++)); do
        grep -q "^$line" "$file" 2>/dev/null && return 0
        sleep 0.05
    done
    say "timed out waiting for '$line' in $file:"
    cat "$file" >&2 || true
    return 1
}

# Free ports: prints a base with base..base+29 all unbound on 127.0.0.1.
free_base() {
    python3 - <<'EOF'
import random, socket
for _ in range(200):
    base = random.randrange(20000, 32000, 10)
    ok = True
    for p in range(base, base + 30):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p))
        except OSError:
            ok = False
        finally:
            s.close()
        if not ok:
            break
    if ok:
        print(base)
        break
EOF
}

pick_ports() {
    BASE=$(free_base)
    [[ -n $BASE ]] || { say "no free ports"; exit 1; }
    FLOOR_PORT=$((BASE + 20))
}

write_topology() {
    local i c p
    {
        echo '{'
        echo '  "servers": {'
        for i in "${!NAMES[@]}"; do
            c=$((BASE + i)); p=$((BASE + 10 + i))
            printf '    "%s": { "host": "127.0.0.1", "client_port": %d, "peer_port": %d }%s\n' \
                "${NAMES[$i]}" "$c" "$p" "$([[ $i -lt 4 ]] && echo ,)"
        done
        echo '  },'
        echo '  "links": [ ["Bailey", "Bona"], ["Bailey", "Campbell"], ["Bona", "Campbell"],'
        echo '             ["Bona", "Clark"], ["Campbell", "Jaquez"], ["Clark", "Jaquez"] ],'
        echo '  "places": { "url": "http://127.0.0.1:1/unused", "key_env": "HERD_BENCH_PLACES_KEY", "timeout_ms": 5000 },'
        echo '  "log_dir": "logs",'
        echo "  \"state_dir\": ${STATE_DIR_JSON:-null},"
        echo "  \"fsync\": \"${FSYNC:-everysec}\""
        echo '}'
    } >"$TMP/topology.json"
}

start_places() {
    python3 "$ROOT/tests/integration/places_standin.py" --port 0 >"$TMP/places.out" 2>"$TMP/places.err" &
    PID[places]=$!
    wait_line "$TMP/places.out" "LISTENING"
    PLACES_PORT=$(awk '/^LISTENING/ {print $2; exit}' "$TMP/places.out")
}

places_mode() { # mode [delay]
    python3 - "$PLACES_PORT" "$1" "${2:-0}" <<'EOF'
import json, sys, urllib.request
port, mode, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
body = {"mode": mode}
if delay:
    body["delay"] = delay
req = urllib.request.Request(f"http://127.0.0.1:{port}/__control/mode", data=json.dumps(body).encode(),
                             headers={"Content-Type": "application/json"}, method="POST")
urllib.request.urlopen(req, timeout=5).read()
EOF
}

start_server() { # name
    local n=$1
    # The hard limit may be below 65536 here: take what there is.
    ( ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
      export HERD_PLACES_URL="http://127.0.0.1:$PLACES_PORT/maps/api/place/nearbysearch/json"
      export HERD_BENCH_PLACES_KEY=bench-key
      exec "$SERVER" --config "$TMP/topology.json" "$n" >"$TMP/$n.out" 2>&1 ) &
    PID[$n]=$!
    wait_line "$TMP/$n.out" "READY $n"
}

start_herd() { # [names...] (default: all five)
    local n names=("$@")
    [[ ${#names[@]} -gt 0 ]] || names=("${NAMES[@]}")
    for n in "${names[@]}"; do
        : >"$TMP/$n.out"
        start_server "$n"
    done
}

stop_herd() {
    local n
    for n in "${NAMES[@]}"; do
        if [[ -n ${PID[$n]:-} ]]; then
            stop_pid "${PID[$n]}"
            unset "PID[$n]"
        fi
    done
    rm -rf "$TMP/logs"
}

start_floor() {
    "$FLOOR" --port "$FLOOR_PORT" --name Floor >"$TMP/floor.out" 2>&1 &
    PID[floor]=$!
    wait_line "$TMP/floor.out" "READY Floor"
}

herd_pids() {
    local n out=
    for n in "${NAMES[@]}"; do
        [[ -n ${PID[$n]:-} ]] && out+="${out:+,}${PID[$n]}"
    done
    echo "$out"
}

# The herd logs every command: empty the logs between runs so the disk does
# not fill (the servers append, so truncating is safe).
trim_logs() {
    local f
    for f in "$TMP"/logs/*.log; do
        [[ -f $f ]] && : >"$f"
    done
    return 0
}

# ---- figures ----

# Runs herd-bench with a time limit; its RESULT lines go to FILE.
bench() { # file args...
    local file=$1
    shift
    local out
    out=$(timeout 120 "$BENCH" "$@" 2>>"$OUT_DIR/stderr.log") || true
    printf '%s\n' "$out" | grep '^RESULT' >>"$file" || say "  (no result: see $OUT_DIR/stderr.log)"
    printf '%s\n' "$out" | grep -v '^RESULT' | sed 's/^/    /' >&2 || true
}

# Values of KEY in the RESULT lines of FILE, one a line.
vals() { [[ -f $1 ]] && grep '^RESULT' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p" || true; }

median() {
    sort -g | awk '{ a[NR] = $1 } END {
        if (NR == 0) { print "-"; exit }
        if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

med() { vals "$1" "$2" | median; }

# Median of the per-run ratios KEY(file a) / KEY(file b).
ratio() { # file_a file_b key
    paste <(vals "$1" "$3") <(vals "$2" "$3") |
        awk 'NF == 2 && $2 > 0 { printf "%.4f\n", $1 / $2 }' | median
}

SUMMARY=()
row() { SUMMARY+=("$(printf '%-46s %16s %16s %8s' "$1" "$2" "$3" "$4")"); }
fmt() { awk -v v="$1" -v d="${2:-0}" 'BEGIN { if (v == "-" || v == "") print "-"; else printf "%.*f\n", d, v }'; }

bench_iamat() {
    local r H=$OUT_DIR/iamat_herd F=$OUT_DIR/iamat_floor
    say "== IAMAT, 32 connections x 16 pipelined, ${DURATION} s, $RUNS runs"
    for ((r = 1; r <= RUNS; r++)); do
        trim_logs
        bench "$H" load --config "$TMP/topology.json" --server Bailey --expect-name Bailey -c 32 -d 16 \
            --duration "$DURATION" --pid "$(herd_pids)" --label run$r
        bench "$F" load --port "$FLOOR_PORT" --expect-name Floor -c 32 -d 16 --duration "$DURATION" \
            --pid "${PID[floor]}" --label run$r
    done
    HERD_TPUT=$(med "$H" tput)
    row "IAMAT throughput, 32 conns x 16 (cmd/s)" "$(fmt "$HERD_TPUT")" "$(fmt "$(med "$F" tput)")" "$(fmt "$(ratio "$H" "$F" tput)" 3)"
    row "  latency p50 (us)" "$(fmt "$(med "$H" lat_p50_us)" 1)" "$(fmt "$(med "$F" lat_p50_us)" 1)" ""
    row "  latency p99 (us)" "$(fmt "$(med "$H" lat_p99_us)" 1)" "$(fmt "$(med "$F" lat_p99_us)" 1)" ""
    row "  latency p99.9 (us)" "$(fmt "$(med "$H" lat_p999_us)" 1)" "$(fmt "$(med "$F" lat_p999_us)" 1)" ""
    row "  latency max (us)" "$(fmt "$(med "$H" lat_max_us)" 1)" "$(fmt "$(med "$F" lat_max_us)" 1)" ""
    row "  CPU of the target per command (us)" "$(fmt "$(med "$H" srv_us_per_op)" 2)" "$(fmt "$(med "$F" srv_us_per_op)" 2)" ""
    row "  CPU of the whole herd per command (us)" "$(fmt "$(med "$H" herd_us_per_op)" 2)" "$(fmt "$(med "$F" herd_us_per_op)" 2)" ""
    row "  client CPU (cores busy)" "$(fmt "$(med "$H" bench_cpu)" 2)" "$(fmt "$(med "$F" bench_cpu)" 2)" ""
    row "  errors (sum)" "$(vals "$H" errors | awk '{s+=$1} END {print s+0}')" "$(vals "$F" errors | awk '{s+=$1} END {print s+0}')" ""
}

bench_oneshot() {
    local r H=$OUT_DIR/oneshot_herd F=$OUT_DIR/oneshot_floor d=$((DURATION < 3 ? DURATION : 3))
    say "== IAMAT, one connection per command (half-closed), 16 at once, $d s, $RUNS runs"
    for ((r = 1; r <= RUNS; r++)); do
        trim_logs
        bench "$H" load --oneshot --config "$TMP/topology.json" --server Bailey --expect-name Bailey -c 16 \
            --duration "$d" --warmup 0.5 --pid "$(herd_pids)" --label run$r
        bench "$F" load --oneshot --port "$FLOOR_PORT" --expect-name Floor -c 16 --duration "$d" --warmup 0.5 \
            --pid "${PID[floor]}" --label run$r
    done
    row "IAMAT one-shot connections, 16 at once (cmd/s)" "$(fmt "$(med "$H" tput)")" "$(fmt "$(med "$F" tput)")" "$(fmt "$(ratio "$H" "$F" tput)" 3)"
    row "  latency p50 / p99 (us)" "$(fmt "$(med "$H" lat_p50_us)" 0) / $(fmt "$(med "$H" lat_p99_us)" 0)" \
        "$(fmt "$(med "$F" lat_p50_us)" 0) / $(fmt "$(med "$F" lat_p99_us)" 0)" ""
}

bench_mix() {
    local r H=$OUT_DIR/mix_herd F=$OUT_DIR/mix_floor
    say "== mix: 10 % WHATSAT over 1,000 clients, 32 x 16, ${DURATION} s, $RUNS runs (floor: IAMAT)"
    places_mode normal
    for ((r = 1; r <= RUNS; r++)); do
        trim_logs
        bench "$H" load --config "$TMP/topology.json" --server Bailey --expect-name Bailey -c 32 -d 16 \
            --workload mix --mix 0.1 --keys 1000 --seed 77 --duration "$DURATION" --pid "$(herd_pids)" --label run$r
        bench "$F" load --port "$FLOOR_PORT" --expect-name Floor -c 32 -d 16 --duration "$DURATION" --label run$r
    done
    row "mix 10 % WHATSAT, 32 conns x 16 (cmd/s)" "$(fmt "$(med "$H" tput)")" "$(fmt "$(med "$F" tput)")" "$(fmt "$(ratio "$H" "$F" tput)" 3)"
    row "  latency p50 / p99 (us)" "$(fmt "$(med "$H" lat_p50_us)" 0) / $(fmt "$(med "$H" lat_p99_us)" 0)" \
        "$(fmt "$(med "$F" lat_p50_us)" 0) / $(fmt "$(med "$F" lat_p99_us)" 0)" ""
}

bench_paced() {
    local r H F rate full frac
    full=${HERD_TPUT:-}
    if [[ -z $full || $full == - ]]; then
        local tmpf=$OUT_DIR/paced_probe
        bench "$tmpf" load --config "$TMP/topology.json" --server Bailey -c 32 -d 16 --duration "$DURATION"
        full=$(med "$tmpf" tput)
    fi
    # Half of the closed-loop figure is the one asked for; a quarter shows
    # how latency falls once the herd is out of its queueing regime.
    for frac in 2 4; do
        rate=$(awk -v t="$full" -v f="$frac" 'BEGIN { printf "%d", t / f }')
        H=$OUT_DIR/paced_${frac}_herd F=$OUT_DIR/paced_${frac}_floor
        say "== latency at 1/$frac of the median IAMAT throughput: $rate cmd/s open loop, 32 x 16, ${DURATION} s, $RUNS runs"
        for ((r = 1; r <= RUNS; r++)); do
            trim_logs
            bench "$H" load --config "$TMP/topology.json" --server Bailey --expect-name Bailey -c 32 -d 16 \
                --rate "$rate" --duration "$DURATION" --pid "$(herd_pids)" --label run$r
            bench "$F" load --port "$FLOOR_PORT" --expect-name Floor -c 32 -d 16 --rate "$rate" \
                --duration "$DURATION" --pid "${PID[floor]}" --label run$r
        done
        row "IAMAT at $rate cmd/s (1/$frac), open loop: answered/s" "$(fmt "$(med "$H" tput)")" "$(fmt "$(med "$F" tput)")" ""
        row "  latency p50 (us)" "$(fmt "$(med "$H" lat_p50_us)" 1)" "$(fmt "$(med "$F" lat_p50_us)" 1)" ""
        row "  latency p99 (us)" "$(fmt "$(med "$H" lat_p99_us)" 1)" "$(fmt "$(med "$F" lat_p99_us)" 1)" ""
        row "  latency p99.9 (us)" "$(fmt "$(med "$H" lat_p999_us)" 1)" "$(fmt "$(med "$F" lat_p999_us)" 1)" ""
        row "  latency max (us)" "$(fmt "$(med "$H" lat_max_us)" 1)" "$(fmt "$(med "$F" lat_max_us)" 1)" ""
        row "  client send lag p99 (us)" "$(fmt "$(med "$H" sendlag_p99_us)" 1)" "$(fmt "$(med "$F" sendlag_p99_us)" 1)" ""
        row "  CPU of the whole herd per command (us)" "$(fmt "$(med "$H" herd_us_per_op)" 2)" "$(fmt "$(med "$F" herd_us_per_op)" 2)" ""
    done
}

bench_prop() {
    local r P=$OUT_DIR/prop_1000 X=$OUT_DIR/prop_max XF=$OUT_DIR/prop_max_floor n=${PROP_MAX_COUNT:-200000}
    say "== propagation at 1,000 updates/s, 10 s, every 20th update watched, $RUNS runs"
    for ((r = 1; r <= RUNS; r++)); do
        trim_logs
        bench "$P" prop --config "$TMP/topology.json" --server Bailey --rate 1000 --duration 10 \
            --sample-every 20 --verify --prefix p1k$r- --label run$r
    done
    row "propagation at 1,000/s, visible at all 4: p50 (us)" "$(fmt "$(med "$P" all_lo_p50_us)" 0)..$(fmt "$(med "$P" all_hi_p50_us)" 0)" "" ""
    row "  p99 (us)" "$(fmt "$(med "$P" all_lo_p99_us)" 0)..$(fmt "$(med "$P" all_hi_p99_us)" 0)" "" ""
    row "  negative poll round trip p50 (us)" "$(fmt "$(med "$P" negrtt_p50_us)" 0)" "" ""
    row "  updates lost (sum over runs)" "$(vals "$P" lost_total | awk '{s+=$1} END {print s+0}')" "" ""
    local runs=$(( RUNS < 3 ? RUNS : 3 ))
    say "== propagation flat out: $n updates, 32 x 64 closed loop, then every update checked everywhere, $runs runs"
    for ((r = 1; r <= runs; r++)); do
        trim_logs
        bench "$X" prop --config "$TMP/topology.json" --server Bailey --rate 0 --count "$n" -c 32 -d 64 \
            --sample-every 500 --verify --timeout 20 --prefix pmax$r- --label run$r
        bench "$XF" load --port "$FLOOR_PORT" --expect-name Floor -c 32 -d 64 --keys 0 --duration 2 \
            --warmup 0.5 --label run$r
    done
    # The floor: new client ids on the same 32 x 64 connections, in the same run.
    paste <(vals "$X" achieved_rate) <(vals "$XF" tput) | awk 'NF == 2 && $2 > 0 { printf "%.4f\n", $1 / $2 }' |
        median >"$OUT_DIR/prop_max_ratio"
    row "flat out: updates accepted per s (32 x 64)" "$(fmt "$(med "$X" achieved_rate)")" "$(fmt "$(med "$XF" tput)")" "$(fmt "$(cat "$OUT_DIR/prop_max_ratio")" 3)"
    row "  visible at all 4: p50 / p99 (ms, upper)" "$(fmt "$(awk -v v="$(med "$X" all_hi_p50_us)" 'BEGIN{print v/1000}')" 1) / $(fmt "$(awk -v v="$(med "$X" all_hi_p99_us)" 'BEGIN{print v/1000}')" 1)" "" ""
    row "  updates lost (sum over runs, of $n each)" "$(vals "$X" lost_total | awk '{s+=$1} END {print s+0}')" "" ""
}

bench_conns() {
    local r C=$OUT_DIR/conns_herd F=$OUT_DIR/conns_floor runs=$(( RUNS < 3 ? RUNS : 3 ))
    say "== 10,000 connections open on Bailey (and on the floor), one IAMAT on each (twice), $runs runs"
    for ((r = 1; r <= runs; r++)); do
        trim_logs
        bench "$C" conns --config "$TMP/topology.json" --server Bailey --expect-name Bailey -c 10000 \
            --pid "${PID[Bailey]}" --label run$r
        bench "$F" conns --port "$FLOOR_PORT" --expect-name Floor -c 10000 --pid "${PID[floor]}" --label run$r
    done
    row "10,000 connections: answered (median)" "$(med "$C" answered)" "$(med "$F" answered)" ""
    row "  open all 10,000 (s)" "$(fmt "$(med "$C" open_s)" 3)" "$(fmt "$(med "$F" open_s)" 3)" "$(fmt "$(ratio "$F" "$C" open_s)" 3)"
    row "  one IAMAT on each, all answered (s)" "$(fmt "$(med "$C" round_s)" 3)" "$(fmt "$(med "$F" round_s)" 3)" "$(fmt "$(ratio "$F" "$C" round_s)" 3)"
    row "  server memory per open connection (bytes)" "$(fmt "$(med "$C" bytes_per_conn)")" "$(fmt "$(med "$F" bytes_per_conn)")" ""
}

bench_places() {
    local r W=$OUT_DIR/places
    say "== 100 WHATSATs at once, distinct positions, Places stand-in answering in 1 s, $RUNS runs"
    places_mode slow 1.0
    for ((r = 1; r <= RUNS; r++)); do
        bench "$W" load --config "$TMP/topology.json" --server Bailey --expect-name Bailey --workload whatsat \
            --keys 100 --count 100 -c 100 -d 1 --prefix pl$r- --seed $((1000 + r)) --timeout 20 --label run$r
    done
    places_mode normal
    row "100 WHATSATs, Places answers in 1 s: all done (s)" "$(fmt "$(med "$W" secs)" 3)" "" ""
    row "  latency p50 / max (ms)" "$(fmt "$(awk -v v="$(med "$W" lat_p50_us)" 'BEGIN{print v/1000}')" 0) / $(fmt "$(awk -v v="$(med "$W" lat_max_us)" 'BEGIN{print v/1000}')" 0)" "" ""
    row "  status OK replies (median of 100)" "$(med "$W" status_ok)" "" ""
}

bench_mem() {
    local M=$OUT_DIR/mem
    say "== memory: a fresh herd, VmRSS of Bailey at 0, 100,000 and 1,000,000 clients (1 run)"
    stop_herd
    start_herd
    bench "$M" mem --config "$TMP/topology.json" --server Bailey --pid "${PID[Bailey]}" --steps 0,100000,1000000 \
        --prefix m- --timeout 30
    row "VmRSS at 0 clients (kB)" "$(med "$M" rss0_kb)" "" ""
    row "VmRSS at 100,000 clients (kB)" "$(med "$M" c100000_rss_kb)" "" ""
    row "  bytes a client (of which id + AT line)" "$(fmt "$(med "$M" c100000_bytes_per_client)" 1) ($(fmt "$(med "$M" c100000_strings)" 1))" "" ""
    row "VmRSS at 1,000,000 clients (kB)" "$(med "$M" c1000000_rss_kb)" "" ""
    row "  bytes a client (of which id + AT line)" "$(fmt "$(med "$M" c1000000_bytes_per_client)" 1) ($(fmt "$(med "$M" c1000000_strings)" 1))" "" ""
    row "  bytes a client beyond the strings" "$(fmt "$(med "$M" c1000000_beyond)" 1)" "" ""
    stop_herd
    start_herd
}

bench_rejoin() {
    local k r R runs=$(( RUNS < 3 ? RUNS : 3 ))
    for k in ${REJOIN_KEYS:-10000 100000 1000000}; do
        R=$OUT_DIR/rejoin_$k
        say "== rejoin with $k clients: Jaquez SIGKILLed and restarted, $runs runs (a fresh herd each)"
        for ((r = 1; r <= runs; r++)); do
            stop_herd
            start_herd Bailey Bona Campbell Clark
            bench "$R" rejoin --config "$TMP/topology.json" --server Jaquez --fill Bailey --server-bin "$SERVER" \
                --keys "$k" --prefix rj$r- --timeout 120 --label run$r
        done
        row "rejoin, $k clients: whole after (ms)" "$(fmt "$(med "$R" whole_ms)" 1)" "" ""
        row "  READY after (ms) / neighbour tables in (ms)" "$(fmt "$(med "$R" ready_ms)" 1) / $(fmt "$(med "$R" table0_ms)" 1), $(fmt "$(med "$R" table1_ms)" 1)" "" ""
    done
    stop_herd
    start_herd
}

# Redis as the yardstick of issue 12: GEOADD through redis-benchmark, a
# primary alone and a primary with 4 replicas on this machine (ports
# BASE+21..25), 32 connections with 16 and with 1 in flight, beside herd's
# Bailey and the floor at 1 in flight in the same run. The redis-server and
# redis-tools packages are installed here when missing; the tests never need
# them.
# Every GEOADD moves its member: redis-benchmark puts an independent random
# number for each __rand_int__ (twelve digits, below -r), so the position is
# NNNNNNNNNNNNe-3 (longitude 0-100) and NNNNNNNNNNNNe-4 (latitude 0-10), as
# the herd's load sends a new position with every IAMAT. A GEOADD that
# leaves a member where it is changes nothing: Redis neither writes it to
# its AOF nor sends it to its replicas. Until session 7 every GEOADD here
# carried the same position, so that after the first of each member Redis
# did no update at all (its AOF grew 4.5 bytes a command, against 68 now).
REDIS_GEOADD=(GEOADD herd __rand_int__e-3 __rand_int__e-4 m:__rand_int__)
# The same for -r 1000000 (the redis part below), whose numbers reach
# 999999: one more place down keeps the longitude within 0-100.
REDIS_GEOADD_1M=(GEOADD herd __rand_int__e-4 __rand_int__e-5 m:__rand_int__)
# The closest Redis has to the herd's table: a keyed record, the client's
# latest AT line (about 85 bytes) as a string, each SET replacing it (Redis
# writes and replicates every SET). GEOADD keeps a sorted geo index, which
# the herd does not; SET keeps what the herd keeps.
REDIS_SET=(SET m:__rand_int__ "AT Bailey +0.000123456 m:__rand_int__ +34.068930-118.445127 1621464827.__rand_int__")

redis_install() {
    command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null && return 0
    local sudo=()
    ((EUID == 0)) || sudo=(sudo -n)
    say "installing redis-server and redis-tools (apt-get) for the Redis comparison"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server redis-tools \
        >"$TMP/redis-install.log" 2>&1 || { say "cannot install Redis: see $TMP/redis-install.log"; return 1; }
}

redis_start() { # port [primary port]
    local args=(--port "$1" --bind 127.0.0.1 --save "" --appendonly no --daemonize no --protected-mode no
                --dir "$TMP" --dbfilename "redis-$1.rdb" --logfile "$TMP/redis-$1.log")
    [[ -n ${2:-} ]] && args+=(--replicaof 127.0.0.1 "$2")
    redis-server "${args[@]}" &
    PID[redis$1]=$!
    local i
    for ((i = 0; i < 100; i++)); do
        redis-cli -p "$1" ping 2>/dev/null | grep -q PONG && return 0
        sleep 0.05
    done
    say "redis on port $1 did not start"
    return 1
}

redis_stop() {
    local k
    for k in "${!PID[@]}"; do
        [[ $k == redis* ]] || continue
        kill "${PID[$k]}" 2>/dev/null || true
        wait "${PID[$k]}" 2>/dev/null || true
        unset "PID[$k]"
    done
}

redis_run() { # file label port depth
    local n=$((DURATION * ($4 > 1 ? 700000 : 120000))) out tput
    out=$(timeout 120 redis-benchmark -h 127.0.0.1 -p "$3" -c 32 -P "$4" -n "$n" -r 1000000 -q \
        "${REDIS_GEOADD_1M[@]}" 2>>"$OUT_DIR/stderr.log") || true
    tput=$(printf '%s\n' "$out" | tr '\r' '\n' | sed -n 's/.*: \([0-9.]*\) requests per second.*/\1/p' | tail -1)
    [[ -n $tput ]] && echo "RESULT mode=redis label=$2 tput=$tput" >>"$1" || say "  (no redis result: $out)"
}

bench_redis() {
    redis_install || return 0
    local r d i p=$((BASE + 21)) R=$OUT_DIR/redis
    say "== Redis GEOADD (redis-benchmark -c 32 -P 16 and -P 1), primary alone and with 4 replicas, $RUNS runs"
    redis_start "$p"
    for ((r = 1; r <= RUNS; r++)); do
        for d in 16 1; do redis_run "${R}_alone_$d" alone "$p" "$d"; done
    done
    for i in 1 2 3 4; do redis_start $((p + i)) "$p"; done
    for ((i = 0; i < 200; i++)); do
        redis-cli -p "$p" info replication | grep -q '^connected_slaves:4' && break
        sleep 0.05
    done
    for ((r = 1; r <= RUNS; r++)); do
        for d in 16 1; do redis_run "${R}_replicas_$d" replicas "$p" "$d"; done
        trim_logs
        bench "$OUT_DIR/iamat1_herd" load --config "$TMP/topology.json" --server Bailey --expect-name Bailey -c 32 \
            -d 1 --duration "$DURATION" --label run$r
        bench "$OUT_DIR/iamat1_floor" load --port "$FLOOR_PORT" --expect-name Floor -c 32 -d 1 \
            --duration "$DURATION" --label run$r
    done
    redis_stop
    row "Redis GEOADD, primary alone, 32 x 16 (cmd/s)" "$(fmt "$(med "${R}_alone_16" tput)")" "" ""
    row "Redis GEOADD, primary + 4 replicas, 32 x 16" "$(fmt "$(med "${R}_replicas_16" tput)")" "" ""
    row "  Bailey of the herd / Redis + 4 replicas" "$(awk -v h="$HERD_TPUT" -v r="$(med "${R}_replicas_16" tput)" \
        'BEGIN { if (h == "" || r == "-" || r == 0) print "-"; else printf "%.3f", h / r }')" "" ""
    row "IAMAT, 32 conns x 1 in flight (cmd/s)" "$(fmt "$(med "$OUT_DIR/iamat1_herd" tput)")" \
        "$(fmt "$(med "$OUT_DIR/iamat1_floor" tput)")" "$(fmt "$(ratio "$OUT_DIR/iamat1_herd" "$OUT_DIR/iamat1_floor" tput)" 3)"
    row "Redis GEOADD, primary alone, 32 x 1" "$(fmt "$(med "${R}_alone_1" tput)")" "" ""
    row "Redis GEOADD, primary + 4 replicas, 32 x 1" "$(fmt "$(med "${R}_replicas_1" tput)")" "" ""
}

# CPU per update, herd against Redis + 4 replicas (issue 22). The herd is a
# second one of its own, on its own free ports, written from the repository's
# topology.json so that it runs with the defaults (state_dir, fsync
# everysec, admin ports, limits); Redis runs a primary and 4 replicas, each
# with appendonly yes and appendfsync everysec (no RDB snapshots: the AOF is
# its durability, as the journal is the herd's). Both hold CPU_IDS ids
# before the first measured run. A run's CPU is utime + stime (and reaped
# children: a Redis AOF rewrite) of the five server processes from before
# the load until the work it caused is done (replicas caught up, the
# servers' CPU quiet), read by bench/cpu_per_update.py; divided by the
# updates acknowledged to the client.

write_cpu_topology() { # file base: clients base+0..4, peers +10..14, admin +20..24
    python3 - "$ROOT/topology.json" "$1" "$2" <<'PY'
import json, sys
src, dst, base = sys.argv[1], sys.argv[2], int(sys.argv[3])
t = json.load(open(src))
for i, name in enumerate(sorted(t["servers"], key=lambda n: t["servers"][n]["client_port"])):
    s = t["servers"][name]
    s["host"] = "127.0.0.1"
    s["client_port"], s["peer_port"], s["admin_port"] = base + i, base + 10 + i, base + 20 + i
# IAMAT only: Places is never asked; the key must still name a variable.
t["places"] = dict(t.get("places", {}), url="http://127.0.0.1:1/unused", key_env="HERD_BENCH_PLACES_KEY")
t["log_dir"], t["state_dir"] = "logs", "state"
json.dump(t, open(dst, "w"), indent=2)
PY
}

cpu_server_start() { # dir name
    local d=$1 n=$2
    : >"$d/$n.out"
    ( ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
      export HERD_PLACES_URL="http://127.0.0.1:1/unused" HERD_BENCH_PLACES_KEY=bench-key
      exec "$SERVER" --config "$d/topology.json" "$n" >"$d/$n.out" 2>&1 ) &
    PID[cpu_$n]=$!
    wait_line "$d/$n.out" "READY $n"
}

cpu_redis_start() { # dir port [primary port]
    local d=$1/redis-$2 i
    mkdir -p "$d"
    local args=(--port "$2" --bind 127.0.0.1 --daemonize no --protected-mode no --save ""
                --appendonly yes --appendfsync everysec --dir "$d" --logfile "$d/redis.log")
    [[ -n ${3:-} ]] && args+=(--replicaof 127.0.0.1 "$3")
    redis-server "${args[@]}" &
    PID[cpu_redis$2]=$!
    for ((i = 0; i < 300; i++)); do
        redis-cli -p "$2" ping 2>/dev/null | grep -q PONG && return 0
        sleep 0.05
    done
    say "redis on port $2 did not start"
    return 1
}

cpu_stop_all() {
    local k
    for k in "${!PID[@]}"; do
        [[ $k == cpu_* ]] || continue
        stop_pid "${PID[$k]}"
        unset "PID[$k]"
    done
}

# Runs COMMAND under cpu_per_update.py and appends one RESULT line to FILE:
# sys, depth, ops (acknowledged), tput, cpu_s, us (CPU us per update).
cpu_measure() { # file sys depth pids redis_ports ops_or_empty [--perf F] -- command...
    local file=$1 sys=$2 depth=$3 pids=$4 rports=$5 nops=$6
    shift 6
    local extra=()
    if [[ $1 == --perf ]]; then extra=(--perf "$2"); shift 2; fi
    shift # --
    local out ops tput cpu
    local comp0=-
    if [[ $sys == herd && -n ${CPU_ADMIN:-} ]]; then comp0=$(herd_compactions "$CPU_ADMIN"); fi
    local repl0=-
    if [[ $sys == redis ]]; then comp0=$(redis_rewrites "$rports"); repl0=$(redis_repl_offset "$rports"); fi
    # In the background, so that the exit trap can stop it (and it, its load and perf).
    python3 "$ROOT/bench/cpu_per_update.py" --pids "$pids" --redis-ports "$rports" "${extra[@]}" \
        --timeout 300 -- "$@" >"$TMP/cpu_run.out" 2>>"$OUT_DIR/stderr.log" &
    PID[cpu_helper]=$!
    wait "${PID[cpu_helper]}" || true
    unset "PID[cpu_helper]"
    out=$(tr '\r' '\n' <"$TMP/cpu_run.out")
    cpu=$(printf '%s\n' "$out" | sed -n 's/^CPU cpu_s=\([0-9.]*\) .*/\1/p' | tail -1)
    if [[ $sys == herd ]]; then
        local res errors
        res=$(printf '%s\n' "$out" | grep '^RESULT' | tail -1)
        ops=$(sed -n 's/.* ops=\([0-9]*\).*/\1/p' <<<"$res")
        tput=$(sed -n 's/.* tput=\([0-9.]*\).*/\1/p' <<<"$res")
        errors=$(sed -n 's/.* errors=\([0-9]*\).*/\1/p' <<<"$res")
        [[ ${errors:-1} == 0 ]] || say "  herd-bench reported ${errors:-no result} errors: see $OUT_DIR/stderr.log"
    else
        ops=$nops
        tput=$(printf '%s\n' "$out" | sed -n 's/.*: \([0-9.]*\) requests per second.*/\1/p' | tail -1)
    fi
    if [[ -z $cpu || -z $ops || -z $tput || $ops == 0 ]]; then
        say "  ($sys 32 x $depth: no result; see $OUT_DIR/stderr.log)"
        return 0
    fi
    local us
    us=$(awk -v c="$cpu" -v n="$ops" 'BEGIN { printf "%.3f", c * 1e6 / n }')
    local comp1=-
    if [[ $sys == herd && -n ${CPU_ADMIN:-} ]]; then comp1=$(herd_compactions "$CPU_ADMIN"); fi
    if [[ $sys == redis ]]; then comp1=$(redis_rewrites "$rports"); fi
    local sw
    sw=$(sed -n 's/^CPU .* ctxsw=\([0-9]*\).*/\1/p' <<<"$out" | tail -1)
    sw=$(awk -v c="${sw:-0}" -v n="$ops" 'BEGIN { printf "%.3f", c / n }')
    local repl=-
    if [[ $sys == redis && $repl0 != - ]]; then
        local repl1
        repl1=$(redis_repl_offset "$rports")
        [[ $repl1 != - ]] && repl=$(awk -v a="$repl0" -v b="$repl1" -v n="$ops" 'BEGIN { printf "%.1f", (b - a) / n }')
    fi
    local kv=" sw=$sw repl_bytes=$repl compactions=$(awk -v a="$comp1" -v b="$comp0" 'BEGIN { if (a == "-" || b == "-") print "-"; else print a - b }')"
    echo "RESULT mode=cpu sys=$sys depth=$depth ops=$ops tput=$tput cpu_s=$cpu us=$us$(sed -n 's/^CPU cpu_s=[0-9.]*\( .*\)/\1/p' <<<"$out" | tail -1)$kv" >>"$file"
    say "  $sys 32 x $depth: $ops updates at $(fmt "$tput")/s, $cpu s CPU of the five servers = $us us an update"
}

# Snapshots written so far by the herd's five servers together
# (herd_state_compactions_total on their admin ports); "-" if unknown.
herd_compactions() { # admin base port
    python3 - "$1" <<'PY2'
import re, sys, urllib.request
total = 0
try:
    for i in range(5):
        with urllib.request.urlopen(f"http://127.0.0.1:{int(sys.argv[1]) + i}/metrics", timeout=5) as r:
            m = re.search(rb"^herd_state_compactions_total (\d+)", r.read(), re.M)
            total += int(m.group(1))
except Exception:
    print("-")
    sys.exit(0)
print(total)
PY2
}

# The replication stream's offset of the Redis primary (the first of PORTS):
# bytes it has sent each replica, "-" if unknown. An update that changes
# nothing adds nothing to it.
redis_repl_offset() { # ports
    local n
    n=$(redis-cli -p "${1%%,*}" info replication 2>/dev/null | tr -d '\r' | sed -n 's/^master_repl_offset://p')
    echo "${n:--}"
}

# AOF rewrites so far of the Redis servers on PORTS (comma-separated) together.
redis_rewrites() { # ports
    local p n total=0
    for p in ${1//,/ }; do
        n=$(redis-cli -p "$p" info persistence 2>/dev/null | tr -d '\r' | sed -n 's/^aof_rewrites://p')
        [[ -n $n ]] || { echo -; return 0; }
        total=$((total + n))
    done
    echo "$total"
}

# RESP for redis-cli --pipe: GEOADD of members m:000000000000..N-1, the names
# redis-benchmark -r N gives __rand_int__, and a SET of each of those keys.
redis_fill_resp() { # n
    python3 - "$1" <<'PY'
import sys
out = sys.stdout.buffer
for i in range(int(sys.argv[1])):
    m = b"m:%012d" % i
    out.write(b"*5\r\n$6\r\nGEOADD\r\n$4\r\nherd\r\n$9\r\n13.361389\r\n$9\r\n38.115556\r\n$%d\r\n%s\r\n" % (len(m), m))
    v = b"AT Bailey +0.000123456 %s +34.068930-118.445127 1621464827.000000000000" % m
    out.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(m), m, len(v), v))
PY
}

perf_works() {
    [[ ${PROFILE:-1} != 0 ]] || return 1
    if ! command -v perf >/dev/null; then
        local sudo=()
        ((EUID == 0)) || sudo=(sudo -n)
        say "installing linux-perf (apt-get) for the profile"
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q linux-perf >"$TMP/perf-install.log" 2>&1 || true
    fi
    command -v perf >/dev/null && perf stat -e task-clock true >/dev/null 2>&1
}

CPU_TABLE=()
bench_cpu() {
    redis_install || { say "no Redis: the CPU comparison is skipped"; return 0; }
    local C=$TMP/cpu CB ids=${CPU_IDS:-100000} n1=${CPU_OPS_1:-100000} n16=${CPU_OPS_16:-500000}
    local R=$OUT_DIR/cpu r d n i hp rp rports herd_pids=
    mkdir -p "$C"
    CB=$(free_base)
    [[ -n $CB ]] || { say "no free ports"; return 1; }
    write_cpu_topology "$C/topology.json" "$CB"
    CPU_ADMIN=$((CB + 20))
    say "== CPU per update (issue 22): herd (defaults, state on, fsync everysec) on $CB-$((CB + 4)) against"
    say "   Redis + 4 replicas (appendonly yes, appendfsync everysec) on $((CB + 25))-$((CB + 29)), $ids ids, $RUNS runs"
    for n in "${NAMES[@]}"; do
        cpu_server_start "$C" "$n"
        herd_pids+="${herd_pids:+,}${PID[cpu_$n]}"
    done
    rp=$((CB + 25))
    rports=$rp
    cpu_redis_start "$C" "$rp"
    for i in 1 2 3 4; do
        cpu_redis_start "$C" $((rp + i)) "$rp"
        rports+=",$((rp + i))"
    done
    local redis_pids=${PID[cpu_redis$rp]}
    for i in 1 2 3 4; do redis_pids+=",${PID[cpu_redis$((rp + i))]}"; done
    for ((i = 0; i < 600; i++)); do
        [[ $(for p in ${rports//,/ }; do redis-cli -p "$p" info replication; done |
             grep -c -e '^connected_slaves:4' -e '^master_link_status:up') == 5 ]] && break
        sleep 0.05
    done
    ((i < 600)) || say "  (the Redis replicas did not all come up)"

    say "  storing $ids ids in both (not measured)"
    cpu_measure "$R.fill" herd 16 "$herd_pids" "" "" -- \
        "$BENCH" load -q --config "$C/topology.json" --server Bailey --expect-name Bailey -c 32 -d 16 \
        --keys "$ids" --count "$ids" --duration 0 --prefix cpu- --timeout 60
    redis_fill_resp "$ids" | redis-cli -p "$rp" --pipe >>"$OUT_DIR/stderr.log" 2>&1 ||
        say "  (filling Redis failed: see $OUT_DIR/stderr.log)"
    # Until the replicas hold them too.
    python3 "$ROOT/bench/cpu_per_update.py" --pids "$redis_pids" --redis-ports "$rports" -- true >/dev/null
    say "  Redis holds $(redis-cli -p "$rp" zcard herd) members and $(($(redis-cli -p "$rp" dbsize) - 1)) keys, herd's Bailey answered $(vals "$R.fill" ops | head -1) fills"

    for ((r = 1; r <= RUNS; r++)); do
        for d in 1 16; do
            n=$([[ $d == 1 ]] && echo "$n1" || echo "$n16")
            cpu_measure "${R}_herd_$d" herd "$d" "$herd_pids" "" "" -- \
                "$BENCH" load -q --config "$C/topology.json" --server Bailey --expect-name Bailey -c 32 -d "$d" \
                --keys "$ids" --count "$n" --duration 0 --prefix cpu- --timeout 60 --label run$r
            cpu_measure "${R}_redis_$d" redis "$d" "$redis_pids" "$rports" "$n" -- \
                redis-benchmark -h 127.0.0.1 -p "$rp" -c 32 -P "$d" -n "$n" -r "$ids" -q \
                "${REDIS_GEOADD[@]}"
            cpu_measure "${R}_redisset_$d" redis "$d" "$redis_pids" "$rports" "$n" -- \
                redis-benchmark -h 127.0.0.1 -p "$rp" -c 32 -P "$d" -n "$n" -r "$ids" -q \
                "${REDIS_SET[@]}"
        done
        for f in "$C"/logs/*.log; do [[ -f $f ]] && : >"$f"; done
    done

    local lo hi
    for d in 1 16; do
        hp=$(paste <(vals "${R}_herd_$d" us) <(vals "${R}_redis_$d" us) |
             awk 'NF == 2 && $2 > 0 { printf "%.4f\n", $1 / $2 }' | median)
        lo=$(paste <(vals "${R}_herd_$d" tput) <(vals "${R}_redis_$d" tput) |
             awk 'NF == 2 && $2 > 0 { printf "%.4f\n", $1 / $2 }' | median)
        local hs
        hs=$(paste <(vals "${R}_herd_$d" us) <(vals "${R}_redisset_$d" us) |
             awk 'NF == 2 && $2 > 0 { printf "%.4f\n", $1 / $2 }' | median)
        CPU_TABLE+=("$(printf '| 32 x %s in flight | %s | %s | %s | %s | %s | %s | %s | %s |' "$d" \
            "$(cpu_cell "${R}_herd_$d" us 2)" "$(cpu_cell "${R}_redis_$d" us 2)" "$(fmt "$hp" 2)" \
            "$(cpu_cell "${R}_redisset_$d" us 2)" "$(fmt "$hs" 2)" \
            "$(cpu_cell "${R}_herd_$d" tput 0)" "$(cpu_cell "${R}_redis_$d" tput 0)" "$(fmt "$lo" 2)")")
    done

    if perf_works; then
        local pd=${PROFILE_DEPTH:-16} pn
        pn=$([[ $pd == 1 ]] && echo "$n1" || echo "$n16")
        say "  profiling one herd run, 32 x $pd, $pn updates (perf record -a -g)"
        for f in "$C"/logs/*.log; do [[ -f $f ]] && : >"$f"; done
        cpu_measure "${R}_perf" herd "$pd" "$herd_pids" "" "" --perf "$C/perf.data" -- \
            "$BENCH" load -q --config "$C/topology.json" --server Bailey --expect-name Bailey -c 32 -d "$pd" \
            --keys "$ids" --count "$pn" --duration 0 --prefix cpu- --timeout 60 --label perf
        cpu_profile "$C/perf.data" "$herd_pids" "32 x $pd" >"$OUT_DIR/cpu_profile.txt" 2>>"$OUT_DIR/stderr.log" ||
            echo "perf report failed: see $OUT_DIR/stderr.log" >"$OUT_DIR/cpu_profile.txt"
    else
        echo "perf is not usable here (perf stat -e task-clock true fails, or PROFILE=0): no profile" >"$OUT_DIR/cpu_profile.txt"
    fi
    cpu_stop_all
}

# "median (min-max)" of KEY in FILE.
cpu_cell() { # file key decimals
    local m lo hi
    m=$(med "$1" "$2")
    [[ $m == - ]] && { echo "-"; return; }
    lo=$(vals "$1" "$2" | sort -g | head -1)
    hi=$(vals "$1" "$2" | sort -g | tail -1)
    if [[ $lo == "$hi" ]]; then fmt "$m" "$3"; else echo "$(fmt "$m" "$3") ($(fmt "$lo" "$3")-$(fmt "$hi" "$3"))"; fi
}

# The herd's share of the samples, its split by thread and by binary, and
# its 15 symbols with the most self time (percent of the herd's own
# samples), counted from perf script: perf report's thread names are not
# to be trusted for processes that were running before the recording.
cpu_profile() { # perf.data pids load
    perf script -i "$1" -F comm,pid,tid,ip,sym,dso -G 2>/dev/null | python3 -c '
import collections, os, re, sys
pids = {int(p) for p in sys.argv[1].split(",")}
line_re = re.compile(r"^\s*(.*?)\s+(\d+)/(\d+)\s+[0-9a-f]+\s+(.*?)\s+\((.*)\)\s*$")
total = 0
thread, dso, sym = collections.Counter(), collections.Counter(), collections.Counter()
by_thread = collections.defaultdict(collections.Counter)
for line in sys.stdin:
    m = line_re.match(line)
    if not m:
        continue
    total += 1
    comm, pid, tid, s, d = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4), os.path.basename(m.group(5))
    if pid not in pids:
        continue
    t = comm + (" (main thread)" if pid == tid else " (unnamed threads)" if comm == "herd-server" else "")
    thread[t] += 1
    dso[d] += 1
    sym[(d, s)] += 1
    by_thread[t][s] += 1
n = sum(dso.values())
if not n:
    print("no samples of the herd in the profile")
    sys.exit(0)
print(f"herd-server processes {sys.argv[1]}: {n} samples, {100 * n / total:.1f} % of all {total} "
      f"on the machine (perf record -a -g, {sys.argv[2]})")
print("by thread (percent of the herd samples):")
for k, v in thread.most_common(6):
    print(f"  {100 * v / n:6.2f} %  {k}")
print("by binary:")
for k, v in dso.most_common(6):
    print(f"  {100 * v / n:6.2f} %  {k}")
print("top 15 symbols by self time:")
for (d, s), v in sym.most_common(15):
    print(f"  {100 * v / n:6.2f} %  {s:<36} {d}")
for t, _ in thread.most_common(3):
    print(f"top 5 in {t}: " + ", ".join(f"{k} {100 * v / n:.1f} %" for k, v in by_thread[t].most_common(5)))
' "$2" "$3"
}

# ---- main ----

say "building in $BUILD_DIR"
build
pick_ports
say "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
NEED_HERD=
for b in iamat oneshot mix paced prop conns places mem rejoin redis; do
    want "$b" && NEED_HERD=1
done
if [[ -n $NEED_HERD ]]; then
    write_topology
    start_places
    start_herd
    start_floor
    say "herd on 127.0.0.1:$BASE-$((BASE + 4)) (peers $((BASE + 10))-$((BASE + 14))), floor on $FLOOR_PORT, Places stand-in on $PLACES_PORT"
fi

HERD_TPUT=
for b in iamat oneshot mix paced prop conns places mem rejoin redis cpu; do
    want "$b" && "bench_$b"
done

if ((${#SUMMARY[@]})); then
    echo
    echo "herd benchmarks: medians of $RUNS runs on $(nproc) cores (load average $(cut -d' ' -f1-3 /proc/loadavg) at the end)"
    printf '%-46s %16s %16s %8s\n' "" "herd" "floor" "ratio"
    for line in "${SUMMARY[@]}"; do
        printf '%s\n' "$line"
    done
fi
if ((${#CPU_TABLE[@]})); then
    echo
    echo "CPU per update, herd (5 servers, defaults) and Redis + 4 replicas (appendonly, everysec), ${CPU_IDS:-100000} ids:"
    echo "medians of $RUNS runs (min-max), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"
    echo
    echo "| load | herd us/update | Redis + 4 GEOADD us/update | herd / GEOADD | Redis + 4 SET us/update | herd / SET | Bailey updates/s | Redis primary GEOADD/s | Bailey / GEOADD |"
    echo "|---|---|---|---|---|---|---|---|---|"
    for line in "${CPU_TABLE[@]}"; do
        printf '%s\n' "$line"
    done
    echo
    echo "context switches of the five servers' threads per update (medians): herd 32 x 1:" \
        "$(fmt "$(med "$OUT_DIR/cpu_herd_1" sw)" 2), 32 x 16: $(fmt "$(med "$OUT_DIR/cpu_herd_16" sw)" 2);" \
        "Redis 32 x 1: $(fmt "$(med "$OUT_DIR/cpu_redis_1" sw)" 2), 32 x 16: $(fmt "$(med "$OUT_DIR/cpu_redis_16" sw)" 2)"
    echo "snapshots written in a run (medians, the five together): herd's journal compactions 32 x 1:" \
        "$(med "$OUT_DIR/cpu_herd_1" compactions), 32 x 16: $(med "$OUT_DIR/cpu_herd_16" compactions)" \
        "(the profiled run: $(med "$OUT_DIR/cpu_perf" compactions)); Redis AOF rewrites 32 x 1:" \
        "$(med "$OUT_DIR/cpu_redis_1" compactions), 32 x 16: $(med "$OUT_DIR/cpu_redis_16" compactions)"
    echo "bytes the Redis primary sent each replica per update (medians; 0 would mean no update happened):" \
        "GEOADD 32 x 1: $(med "$OUT_DIR/cpu_redis_1" repl_bytes), 32 x 16: $(med "$OUT_DIR/cpu_redis_16" repl_bytes);" \
        "SET 32 x 1: $(med "$OUT_DIR/cpu_redisset_1" repl_bytes), 32 x 16: $(med "$OUT_DIR/cpu_redisset_16" repl_bytes)"
    echo
    cat "$OUT_DIR/cpu_profile.txt" 2>/dev/null || true
fi
