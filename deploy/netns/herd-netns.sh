#!/usr/bin/env bash
# herd-netns.sh: run the default five-server herd as five "hosts" on this
# machine, one Linux network namespace per server, and check that locations
# flood across a real (virtual) network, that a cut-off server misses what
# happens meanwhile, and that it catches up once its link is back.
#
# Layout (all of it inside namespaces this script creates; the root namespace
# is not touched):
#
#   PREFIX-hub      bridge "br0" at SUBNET.1/24, the switch of the herd; test
#                   clients connect from here, so client traffic crosses the
#                   network too
#   PREFIX-NAME     one per server: "lo" and "eth0" at its own SUBNET.(11+i)/24,
#                   the peer of a veth pair whose other end "v-NAME" is a port
#                   of br0 in the hub
#
# Steps (one PASS or FAIL line each; the first FAIL ends the run):
#   1. start the five servers in their namespaces and wait for READY; an IAMAT
#      at Bailey reaches the four others (WHATSAT's first line = the AT line);
#   2. cut: eth0 of one server (--cut, default Jaquez) goes down, which isolates
#      it; a new client and a newer location of the first one, reported
#      elsewhere, reach every connected server but not the cut one, and a
#      client reported at the cut server reaches no one; the cut links are
#      seen down (heartbeat timeout, about 3 s);
#   3. heal: eth0 comes back up and, through the servers' rejoin exchange, the
#      cut server gets what it missed and the others get what it heard;
#   4. SIGTERM: every server exits 0.
# WHATSAT needs no Places key: the topology names a key variable that is never
# set, so servers answer the AT line and a REQUEST_DENIED object, offline.
#
# PREFIX is "herd" + a short id (pid + random by default, or --id), so runs in
# parallel never share a namespace. Deleting the namespaces removes the bridge
# and every veth with them. Exit status: 0 all steps passed, 1 a step failed,
# 2 usage error, 77 skipped (not permitted to create namespaces, or no `ip`).
#
# Needs root (CAP_NET_ADMIN + CAP_SYS_ADMIN), iproute2, bash 5, coreutils.
set -uo pipefail
set +m # no job control: "$!" must be the server itself

readonly PROG=herd-netns
ROOT=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.." && pwd -P)
readonly ROOT

# Servers and links of PROTOCOL.md section 1; the ports are those of
# topology.json (each server has its own address here, so they could also all
# be the same).
readonly NAMES=(Bailey Bona Campbell Clark Jaquez)
readonly LINKS=("Bailey Bona" "Bailey Campbell" "Bona Campbell" "Bona Clark"
  "Campbell Jaquez" "Clark Jaquez")
readonly SUBNET=10.77.13 # a /24 that exists only inside our namespaces

SERVER_BIN=${HERD_SERVER:-$ROOT/build/herd-server}
ID="$(printf '%x%04x' "$$" "$RANDOM")"
CUT=Jaquez            # the server the cut isolates
READY_TIMEOUT=15      # seconds a server gets to print READY
FLOOD_TIMEOUT=10      # seconds for an update to reach every connected server
NOTICE_TIMEOUT=15     # seconds for the cut links to be seen down
HEAL_TIMEOUT=15       # seconds after the heal for the table to be whole again
STOP_TIMEOUT=10       # seconds between SIGTERM and SIGKILL
KEEP_TMP=${HERD_KEEP_TMP:-}

PREFIX=""             # "herd" + ID, set once the options are read
HUB=""                # the hub namespace
TMP=""                # temporary folder: topology, logs, server output
CREATED_NS=()         # namespaces made so far, for the clean-up
declare -A PID=()     # server name -> pid
declare -A ADDR=()    # server name -> its address
declare -A CPORT=()   # server name -> its client port
CUT_NOW=""            # the server whose link is down right now, if any
FAILED=0

usage() {
  cat <<EOF
usage: $PROG [--server PATH] [--id ID] [--cut NAME] [--heal-timeout SEC] [--keep-tmp]

Runs the herd of PROTOCOL.md section 1 with one network namespace per server
on $SUBNET.0/24, then checks flooding, a cut that isolates one server, and the
repair after the heal. Prints one PASS or FAIL line per step.

  --server PATH       herd-server binary (default: \$HERD_SERVER, else
                      build/herd-server at the repository root)
  --id ID             suffix of the namespace names "herdID-..." (letters and
                      digits, at most 12; default: pid + random)
  --cut NAME          the server to isolate (default: $CUT)
  --heal-timeout SEC  how long the table may take to be whole again after the
                      heal (default: $HEAL_TIMEOUT)
  --keep-tmp          keep the temporary folder (topology, logs) and print it;
                      so does HERD_KEEP_TMP=1

Exit status: 0 every step passed, 1 a step failed, 2 usage, 77 skipped (not
root / may not create network namespaces / no ip command).
EOF
}

say() { printf '%s: %s\n' "$PROG" "$*"; }
warn() { printf '%s: %s\n' "$PROG" "$*" >&2; }
pass() { printf 'PASS  %s\n' "$*"; }
fail() {
  printf 'FAIL  %s\n' "$*"
  FAILED=1
}
skip() {
  printf 'SKIP  %s\n' "$*"
  exit 77
}
usage_error() {
  warn "$*"
  warn "run '$PROG --help' for usage"
  exit 2
}

# Milliseconds on a clock that never jumps (for deadlines; 10 ms steps).
now_ms() {
  local up _
  read -r up _ </proc/uptime
  printf '%s\n' "$((10#${up/./} * 10))"
}

# A process we started that has not exited (a zombie counts as exited).
alive() {
  local stat
  [[ -r /proc/$1/stat ]] || return 1
  stat=$(<"/proc/$1/stat") 2>/dev/null || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != Z ]]
}

# ---------------------------------------------------------------- clean-up

# Stops every server still running: SIGTERM, then SIGKILL after STOP_TIMEOUT.
stop_servers() {
  local name pid deadline left
  for name in "${!PID[@]}"; do
    alive "${PID[$name]}" && kill -TERM "${PID[$name]}" 2>/dev/null
  done
  deadline=$(($(now_ms) + STOP_TIMEOUT * 1000))
  while :; do
    left=0
    for pid in "${PID[@]}"; do alive "$pid" && left=1; done
    ((left && $(now_ms) < deadline)) || break
    sleep 0.05
  done
  for name in "${!PID[@]}"; do
    pid=${PID[$name]}
    if alive "$pid"; then
      warn "$name (pid $pid) ignored SIGTERM for ${STOP_TIMEOUT}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
  done
  PID=()
}

cleanup() {
  local status=$? ns i pid
  trap '' INT TERM # finish the clean-up even when interrupted again
  stop_servers
  for ((i = ${#CREATED_NS[@]} - 1; i >= 0; i--)); do
    ns=${CREATED_NS[$i]}
    # A client helper we started may still be inside (a timed-out request).
    for pid in $(ip netns pids "$ns" 2>/dev/null); do
      kill -KILL "$pid" 2>/dev/null
    done
    ip netns del "$ns" 2>/dev/null || warn "could not delete namespace $ns"
  done
  if [[ -n $PREFIX ]] && ip netns list 2>/dev/null | grep -q "^$PREFIX-"; then
    warn "namespaces left behind: $(ip netns list | grep "^$PREFIX-" | tr '\n' ' ')"
    ((status == 0)) && status=1
  fi
  if [[ -n $TMP && -d $TMP ]]; then
    if [[ -n $KEEP_TMP ]]; then
      say "kept $TMP (topology.json, logs/, NAME.out, NAME.err)"
    else
      rm -rf -- "$TMP"
    fi
  fi
  exit "$status"
}

# ---------------------------------------------------------------- set-up

parse_args() {
  while (($# > 0)); do
    case $1 in
    --server) (($# > 1)) || usage_error "--server needs a path"; SERVER_BIN=$2; shift 2 ;;
    --id) (($# > 1)) || usage_error "--id needs a value"; ID=$2; shift 2 ;;
    --cut) (($# > 1)) || usage_error "--cut needs a server name"; CUT=$2; shift 2 ;;
    --heal-timeout) (($# > 1)) || usage_error "--heal-timeout needs seconds"; HEAL_TIMEOUT=$2; shift 2 ;;
    --keep-tmp) KEEP_TMP=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage_error "unknown argument: $1" ;;
    esac
  done
  [[ $ID =~ ^[A-Za-z0-9]{1,12}$ ]] || usage_error "--id: 1 to 12 letters or digits, not '$ID'"
  [[ $HEAL_TIMEOUT =~ ^[1-9][0-9]{0,3}$ ]] || usage_error "--heal-timeout: whole seconds, not '$HEAL_TIMEOUT'"
  local n ok=0
  for n in "${NAMES[@]}"; do [[ $n == "$CUT" ]] && ok=1; done
  ((ok)) || usage_error "--cut: one of ${NAMES[*]}, not '$CUT'"
  PREFIX="herd$ID"
  HUB="$PREFIX-hub"
}

# add_ns NS: makes a namespace (and remembers it for the clean-up) with lo up.
add_ns() {
  local out
  if ! out=$(ip netns add "$1" 2>&1); then
    if ((${#CREATED_NS[@]} == 0)); then
      skip "cannot create network namespaces here (ip netns add: ${out:-failed}); needs root or CAP_SYS_ADMIN + CAP_NET_ADMIN"
    fi
    fail "ip netns add $1: $out"
    exit 1
  fi
  CREATED_NS+=("$1")
  ip -n "$1" link set lo up || { fail "$1: cannot bring lo up"; exit 1; }
}

# Builds the hub, one namespace per server and the veth pairs between them.
make_network() {
  local i name ns out
  add_ns "$HUB"
  if ! out=$(ip -n "$HUB" link add br0 type bridge 2>&1); then
    skip "cannot create a bridge (ip link add type bridge: $out)"
  fi
  if ! { ip -n "$HUB" addr add "$SUBNET.1/24" dev br0 && ip -n "$HUB" link set br0 up; }; then
    fail "hub: cannot configure br0"
    exit 1
  fi
  for i in "${!NAMES[@]}"; do
    name=${NAMES[$i]}
    ns="$PREFIX-$name"
    ADDR[$name]="$SUBNET.$((11 + i))"
    CPORT[$name]=$((10000 + i))
    add_ns "$ns"
    # Both ends are made directly inside their namespaces.
    if ! out=$(ip -n "$HUB" link add "v-$name" type veth peer name eth0 netns "$ns" 2>&1); then
      skip "cannot create a veth pair (ip link add type veth: $out)"
    fi
    if ! { ip -n "$HUB" link set "v-$name" master br0 up &&
      ip -n "$ns" addr add "${ADDR[$name]}/24" dev eth0 &&
      ip -n "$ns" link set eth0 up; }; then
      fail "$name: cannot configure its veth pair"
      exit 1
    fi
  done
  pass "network: hub $HUB with bridge br0 at $SUBNET.1, ${#NAMES[@]} server namespaces $PREFIX-NAME on $SUBNET.11-$((10 + ${#NAMES[@]}))"
}

write_topology() {
  local i name sep="" links=""
  for i in "${!LINKS[@]}"; do
    read -r a b <<<"${LINKS[$i]}"
    links+="${sep}[\"$a\", \"$b\"]"
    sep=", "
  done
  {
    printf '{\n  "servers": {\n'
    for i in "${!NAMES[@]}"; do
      name=${NAMES[$i]}
      printf '    "%s": { "host": "%s", "client_port": %d, "peer_port": %d }%s\n' \
        "$name" "${ADDR[$name]}" "${CPORT[$name]}" $((11000 + i)) \
        "$( ((i + 1 < ${#NAMES[@]})) && printf ,)"
    done
    printf '  },\n  "links": [ %s ],\n' "$links"
    # No key is ever set (the variable is removed from the servers' environment),
    # so WHATSAT answers REQUEST_DENIED and nothing leaves the namespaces.
    printf '  "places": { "url": "http://127.0.0.1:9/places", "key_env": "HERD_NETNS_NO_PLACES_KEY", "timeout_ms": 1000 },\n'
    # The namespaces' addresses are not loopback: links between them would need
    # keys (PROTOCOL section 7); this throw-away herd says so explicitly instead.
    printf '  "insecure_links": true,\n'
    printf '  "state_dir": null,\n'
    printf '  "log_dir": "%s"\n}\n' "$TMP/logs"
  } >"$TMP/topology.json"
}

start_servers() {
  local name ns deadline pdeath=()
  # The kernel stops a server whose parent (this script) dies without its trap.
  if command -v setpriv >/dev/null 2>&1 && setpriv --help 2>&1 | grep -q -- --pdeathsig; then
    pdeath=(setpriv --pdeathsig KILL --)
  fi
  for name in "${NAMES[@]}"; do
    ns="$PREFIX-$name"
    # ip netns exec and setpriv exec in place: $! is the server's pid.
    env -u HERD_PLACES_URL -u HERD_NETNS_NO_PLACES_KEY \
      ip netns exec "$ns" "${pdeath[@]}" "$SERVER_BIN" --config "$TMP/topology.json" "$name" \
      </dev/null >"$TMP/$name.out" 2>"$TMP/$name.err" &
    PID[$name]=$!
  done
  deadline=$(($(now_ms) + READY_TIMEOUT * 1000))
  for name in "${NAMES[@]}"; do
    while ! grep -qx "READY $name" "$TMP/$name.out" 2>/dev/null; do
      if ! alive "${PID[$name]}"; then
        wait "${PID[$name]}"
        fail "start: $name exited with status $? before READY: $(head -c 500 "$TMP/$name.err")"
        return 1
      fi
      if (($(now_ms) >= deadline)); then
        fail "start: $name did not print READY within ${READY_TIMEOUT}s"
        return 1
      fi
      sleep 0.05
    done
  done
  pass "start: ${NAMES[*]} each print READY inside their own namespace"
}

# ---------------------------------------------------------------- clients

# Fails (and says so) when a server has exited: nothing here stops one before
# the last step, so an exit is a crash or a signal from outside.
servers_alive() {
  local name status
  for name in "${!PID[@]}"; do
    if ! alive "${PID[$name]}"; then
      wait "${PID[$name]}"
      status=$?
      unset "PID[$name]"
      fail "$name is no longer running (exit status $status$( ((status > 128)) && printf ', signal %d' $((status - 128)))): $(tail -c 300 "$TMP/$name.err")"
      return 1
    fi
  done
}

# ask NAME LINE: sends LINE to NAME's client port and prints the first line of
# its reply. Clients connect from the hub, over the bridge; a server whose link
# is cut is asked from inside its own namespace. A WHATSAT answer (an AT line)
# is read through its final blank line before the connection is closed, so the
# server never writes into a closed socket.
ask() {
  local name=$1 line=$2 ns=$HUB
  [[ $name == "$CUT_NOW" ]] && ns="$PREFIX-$name"
  # shellcheck disable=SC2016 # expanded by the inner bash
  ip netns exec "$ns" timeout 5 bash -c '
    exec 3<>"/dev/tcp/$1/$2" || exit 3
    printf "%s\n" "$3" >&3 || exit 3
    IFS= read -r reply <&3 || exit 4
    printf "%s\n" "$reply"
    case $3 in WHATSAT*) ;; *) exit 0 ;; esac
    case $reply in "AT "*) ;; *) exit 0 ;; esac
    while IFS= read -r more <&3 && [ -n "$more" ]; do :; done' _ "${ADDR[$name]}" "${CPORT[$name]}" "$line" 2>/dev/null
}

client_time() {
  local t=$EPOCHREALTIME
  printf '%s.%s000\n' "${t%[.,]*}" "${t#*[.,]}"
}

# iamat NAME CLIENT POS: reports CLIENT at NAME; prints the AT line, or fails.
AT_LINE=""
iamat() {
  local name=$1 client=$2 pos=$3 t reply
  t=$(client_time)
  reply=$(ask "$name" "IAMAT $client $pos $t")
  # "AT NAME SKEW CLIENT POS TIME", the last three byte for byte as sent.
  local rest=${reply#"AT $name "} skew
  skew=${rest%% *}
  if [[ $reply == "AT $name "* && $skew =~ ^[+-][0-9]+\.[0-9]{9}$ && ${rest#* } == "$client $pos $t" ]]; then
    AT_LINE=$reply
    pass "IAMAT $client at $name: $reply"
    return 0
  fi
  fail "IAMAT $client at $name: want an AT line, got '${reply}'"
  return 1
}

# whatsat NAME CLIENT: the first line of NAME's answer to WHATSAT about CLIENT.
whatsat() { ask "$1" "WHATSAT $2 10 5"; }

# wait_known TIMEOUT CLIENT WANT NAME...: waits until each NAME answers WHATSAT
# about CLIENT with WANT as its first line.
wait_known() {
  local timeout=$1 client=$2 want=$3 name deadline got start
  shift 3
  start=$(now_ms)
  deadline=$((start + timeout * 1000))
  for name in "$@"; do
    while got=$(whatsat "$name" "$client"); [[ $got != "$want" ]]; do
      servers_alive || return 1
      if (($(now_ms) >= deadline)); then
        fail "$name about $client: want '$want', still '$got' after ${timeout}s"
        return 1
      fi
      sleep 0.05
    done
  done
  pass "$client known at $* within $(($(now_ms) - start)) ms"
}

# unknown_at CLIENT NAME...: each NAME has never heard of CLIENT (WHATSAT is "?").
unknown_at() {
  local client=$1 name got
  shift
  for name in "$@"; do
    got=$(whatsat "$name" "$client")
    if [[ $got != "? WHATSAT $client 10 5" ]]; then
      fail "$name should not know $client yet: got '$got'"
      return 1
    fi
  done
  pass "$client unknown at $*"
}

# still_at CLIENT LINE NAME...: each NAME still holds LINE for CLIENT.
still_at() {
  local client=$1 want=$2 name got
  shift 2
  for name in "$@"; do
    got=$(whatsat "$name" "$client")
    if [[ $got != "$want" ]]; then
      fail "$name about $client: want the old '$want', got '$got'"
      return 1
    fi
  done
  pass "$client still at its old location at $*"
}

# wait_noticed TIMEOUT A B: waits until one end of the link A-B has logged
# it down ("link to B down" in A's log, or the other way round). One end is
# enough: it proves the break outlasted the heartbeat timeout.
wait_noticed() {
  local timeout=$1 a=$2 b=$3 deadline start who=""
  start=$(now_ms)
  deadline=$((start + timeout * 1000))
  while :; do
    grep -q -- "link to $b down" "$TMP/logs/$a.log" 2>/dev/null && who+=" $a"
    grep -q -- "link to $a down" "$TMP/logs/$b.log" 2>/dev/null && who+=" $b"
    [[ -n $who ]] && break
    servers_alive || return 1
    if (($(now_ms) >= deadline)); then
      fail "link $a-$b: neither $a.log nor $b.log says it went down within ${timeout}s"
      return 1
    fi
    sleep 0.05
  done
  pass "link $a-$b seen down by$who (after $(($(now_ms) - start)) ms)"
}

# SIGTERM to every server; each must exit 0 within STOP_TIMEOUT.
stop_cleanly() {
  local name deadline status bad=""
  for name in "${NAMES[@]}"; do kill -TERM "${PID[$name]}" 2>/dev/null; done
  deadline=$(($(now_ms) + STOP_TIMEOUT * 1000))
  for name in "${NAMES[@]}"; do
    while alive "${PID[$name]}" && (($(now_ms) < deadline)); do sleep 0.05; done
    if alive "${PID[$name]}"; then
      bad+=" $name:still-running"
      continue # the clean-up kills it
    fi
    wait "${PID[$name]}"
    status=$?
    ((status == 0)) || bad+=" $name:$status"
    unset "PID[$name]"
  done
  if [[ -n $bad ]]; then
    fail "stop: not every server exited 0 within ${STOP_TIMEOUT}s of SIGTERM:$bad"
    return 1
  fi
  pass "stop: every server exits 0 on SIGTERM"
}

# ---------------------------------------------------------------- the run

# Neighbours of a server, from LINKS.
neighbours() {
  local l a b out=()
  for l in "${LINKS[@]}"; do
    read -r a b <<<"$l"
    [[ $a == "$1" ]] && out+=("$b")
    [[ $b == "$1" ]] && out+=("$a")
  done
  printf '%s\n' "${out[@]}"
}

show_logs() {
  local name
  for name in "${NAMES[@]}"; do
    printf -- '--- %s: stderr\n' "$name"
    tail -n 5 "$TMP/$name.err" 2>/dev/null
    printf -- '--- %s: last lines of %s.log\n' "$name" "$name"
    tail -n 25 "$TMP/logs/$name.log" 2>/dev/null
  done
}

# step COMMAND...: runs a step; the first failure ends the run.
step() {
  "$@" && ((!FAILED)) && return 0
  say "stopping at the first failure; server logs follow"
  show_logs
  exit 1
}

main() {
  parse_args "$@"
  ((EUID == 0)) || skip "needs root (network namespaces, veth pairs, a bridge); running as uid $EUID"
  command -v ip >/dev/null 2>&1 || skip "the ip command (iproute2) is not installed"
  command -v timeout >/dev/null 2>&1 || skip "the timeout command (coreutils) is not installed"
  [[ -x $SERVER_BIN ]] || usage_error "server binary not found or not executable: $SERVER_BIN"
  SERVER_BIN=$(readlink -f -- "$SERVER_BIN")

  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  TMP=$(mktemp -d "${TMPDIR:-/tmp}/herd-netns.XXXXXX") || { warn "mktemp failed"; exit 1; }
  mkdir -p "$TMP/logs"
  say "namespaces $PREFIX-*, subnet $SUBNET.0/24, server $SERVER_BIN, temp $TMP"

  make_network
  write_topology
  step start_servers

  local others=() rest=() apart=() n nbs
  mapfile -t nbs < <(neighbours "$CUT")
  for n in "${NAMES[@]}"; do [[ $n != "${NAMES[0]}" ]] && others+=("$n"); done
  for n in "${NAMES[@]}"; do [[ $n != "$CUT" ]] && rest+=("$n"); done
  for n in "${rest[@]}"; do [[ " ${nbs[*]} " != *" $n "* ]] && apart+=("$n"); done
  # Reports during the cut go to servers other than the cut one, preferably
  # not its neighbours, so that the cut link is not simply the first hop.
  apart+=("${rest[@]}")
  local far=${apart[0]} near=${apart[1]}

  # 1. A location reported to one server reaches all the others.
  local c1="kiwi.$PREFIX" c2="mango.$PREFIX" c3="fig.$PREFIX" at1 at1b at2 at3
  step iamat "${NAMES[0]}" "$c1" "+34.068930-118.445127"
  at1=$AT_LINE
  step wait_known "$FLOOD_TIMEOUT" "$c1" "$at1" "${others[@]}"

  # 2. Cut: the cut server's own interface goes down, which isolates it.
  ip -n "$PREFIX-$CUT" link set eth0 down || { fail "cut: ip link set eth0 down in $PREFIX-$CUT"; exit 1; }
  CUT_NOW=$CUT
  pass "cut: eth0 of $CUT down (its neighbours: ${nbs[*]})"

  # While cut, a new client and a newer location of the first one reach every
  # connected server but not the cut one, and what the cut server hears
  # reaches nobody else.
  step iamat "$far" "$c2" "-33.8688+151.2093"
  at2=$AT_LINE
  step iamat "$near" "$c1" "+48.8566+2.3522"
  at1b=$AT_LINE
  step wait_known "$FLOOD_TIMEOUT" "$c2" "$at2" "${rest[@]}"
  step wait_known "$FLOOD_TIMEOUT" "$c1" "$at1b" "${rest[@]}"
  step unknown_at "$c2" "$CUT"
  step still_at "$c1" "$at1" "$CUT"
  step iamat "$CUT" "$c3" "+35.6762+139.6503"
  at3=$AT_LINE
  step unknown_at "$c3" "${rest[@]}"

  # The break must be noticed (heartbeats), so the repair below is the
  # rejoin exchange on reconnect rather than a TCP retransmission.
  for n in "${nbs[@]}"; do
    step wait_noticed "$NOTICE_TIMEOUT" "$CUT" "$n"
  done
  step unknown_at "$c2" "$CUT"

  # 3. Heal: the table is whole again everywhere.
  ip -n "$PREFIX-$CUT" link set eth0 up || { fail "heal: ip link set eth0 up in $PREFIX-$CUT"; exit 1; }
  CUT_NOW=""
  pass "heal: eth0 of $CUT up"
  step wait_known "$HEAL_TIMEOUT" "$c2" "$at2" "$CUT"
  step wait_known "$HEAL_TIMEOUT" "$c1" "$at1b" "$CUT"
  step wait_known "$HEAL_TIMEOUT" "$c3" "$at3" "${rest[@]}"

  # 4. Every server stops cleanly.
  step stop_cleanly
  say "all steps passed"
}

main "$@"
