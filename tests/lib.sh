# shellcheck shell=bash
# tests/lib.sh - shared helpers for the integration and end-to-end tests.
# Sourced by tests/integration/test_*.sh. Starts real parts in a private
# temp dir: the mock-cluster broker, a throwaway PostgreSQL, workers and
# receivers; counts checks and prints the closing "N passed, N failed".
#
#   . "$(dirname "$0")/../lib.sh"
#   stack_up [PARTITIONS]          broker + Postgres + migrations, env exported
#   start_worker NAME [ENV=V ...]  webhook-worker in the background
#   start_receiver NAME ARGS...    webhook-receiver; port in $T/NAME.port
#   check "what" COMMAND...        records a pass or a failure
#   run CMD... / expect DESC STATUS TEXT CMD...
#                                  a command's exit status ($rc), stdout and
#                                  stderr ($T/out, $T/err); expect checks them
#   finish                         prints the counts, exits 0 only if all pass
#
# BUILD_DIR (default build/) selects the binaries, so the same tests run
# against the sanitizer build.

set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD_DIR:-$ROOT/build}
BIN=$BUILD/bin
# shellcheck source=tests/check.sh
. "$ROOT/tests/check.sh"
T=$(mktemp -d /tmp/webhook-test.XXXXXX)
chmod 755 "$T"
PIDS=()

log() { echo "# $*"; }

# stop_all: stops every process the test started, newest first, so
# workers stop while the broker and Postgres still run.
stop_all() {
    local pid i
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        pid=${PIDS[$i]}
        kill "$pid" 2>/dev/null || continue
        timeout 30 tail --pid="$pid" -f /dev/null 2>/dev/null ||
            kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
}

# addr NAME: where process NAME (logging to $T/NAME.log) serves /metrics,
# /healthz and /readyz, as HOST:PORT; empty until it says so.
addr() {
    sed -n 's|.*serving /metrics, /healthz and /readyz on http://\([^ ]*\).*|\1|p' \
        "$T/$1.log" | tail -1
}
has_addr() { [ -n "$(addr "$1")" ]; }
# metric NAME SERIES: one series of process NAME's /metrics, e.g.
# 'x_total{k="v"}'; empty when it serves none or has no such series.
metric() {
    local a
    a=$(addr "$1")
    [ -n "$a" ] || return 0
    curl -fsS --max-time 30 "http://$a/metrics" 2>/dev/null |
        awk -v k="$2" '$1 == k { print $2 }'
}
metric_is() { [ "$(metric "$1" "$2")" = "$3" ]; }
# metric_at_least NAME SERIES N
metric_at_least() {
    local v
    v=$(metric "$1" "$2")
    [ -n "$v" ] && awk -v v="$v" -v n="$3" 'BEGIN { exit !(v + 0 >= n + 0) }'
}

# delivered RECEIVER ID: requests receiver RECEIVER recorded whose JSON
# payload's "id" is ID.
delivered() {
    python3 -c '
import sys, json, base64
n = 0
try:
    for l in open(sys.argv[1]):
        try:
            n += json.loads(base64.b64decode(json.loads(l)["body_b64"])).get("id") == sys.argv[2]
        except ValueError:
            pass
except FileNotFoundError:
    pass
print(n)' "$T/$1.jsonl" "$2"
}
# all_delivered RECEIVER ID...: each ID was delivered to RECEIVER.
all_delivered() {
    local r=$1 id
    shift
    for id in "$@"; do [ "$(delivered "$r" "$id")" -ge 1 ] || return 1; done
}

# stop_worker NAME: SIGTERM to worker NAME and waits for it (at most 30 s,
# then SIGKILL and a failed check: a worker that does not stop is a bug).
stop_worker() {
    local pid=${WORKER_PID[$1]}
    kill -TERM "$pid"
    if ! timeout 30 tail --pid="$pid" -f /dev/null; then
        kill -9 "$pid" 2>/dev/null || true
        not_ok "worker $1 stopped within 30 s of SIGTERM"
    fi
    wait "$pid" 2>/dev/null || true
}

# pg_freeze / pg_thaw: SIGSTOP / SIGCONT to this test's PostgreSQL, the
# postmaster first (so it forks no new backend), then its children; the
# server is never left stopped (cleanup thaws it)
pg_pids() {
    local pm
    pm=$(head -1 "$T/pg/data/postmaster.pid" 2>/dev/null) || return 0
    [ -n "$pm" ] || return 0
    echo "$pm"
    pgrep -P "$pm" || true
}
FROZEN=0
pg_freeze() {
    # shellcheck disable=SC2046 # one pid per word
    kill -STOP $(pg_pids)
    FROZEN=1
}
pg_thaw() {
    # shellcheck disable=SC2046
    kill -CONT $(pg_pids) 2>/dev/null || true
    FROZEN=0
}

cleanup() {
    [ "$FROZEN" = 0 ] || pg_thaw
    stop_all
    if [ -d "$T/pg" ]; then
        "$ROOT/dev/pg.sh" stop "$T/pg" >/dev/null 2>&1 || true
    fi
    if [ "${KEEP_TEST_DIR:-0}" = 1 ] || [ "$failed" -gt 0 ]; then
        echo "# test files kept in $T"
    else
        rm -rf "$T"
    fi
}
trap cleanup EXIT

# finish: stops everything, fails the test if any process reported a
# sanitizer error or leak, prints the counts, exits 0 only if all passed.
finish() {
    stop_all
    local reports
    reports=$(grep -l -E "ERROR: (Address|Leak)Sanitizer|runtime error:" \
        "$T"/*.log 2>/dev/null || true)
    if [ -n "$reports" ]; then
        not_ok "sanitizer reports in: $(echo "$reports" | xargs -n1 basename | tr '\n' ' ')"
        # shellcheck disable=SC2086 # one file name per word
        grep -h -A20 -E "ERROR: (Address|Leak)Sanitizer|runtime error:" $reports | head -60
    fi
    # writers that wait for each other's locks: Postgres breaks the cycle
    # after deadlock_timeout by failing one of them
    local deadlocks
    deadlocks=$(grep -c "deadlock detected" "$T/pg/postgres.log" 2>/dev/null || true)
    if [ "${deadlocks:-0}" -gt 0 ]; then
        not_ok "Postgres detected $deadlocks deadlocks (pg/postgres.log)"
        grep -h -A3 "deadlock detected" "$T/pg/postgres.log" | head -20
    fi
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}

# wait_for SECONDS COMMAND...: polls COMMAND every 0.2 s until it succeeds.
wait_for() {
    local limit=$1 start=$SECONDS
    shift
    until "$@"; do
        if ((SECONDS - start >= limit)); then
            return 1
        fi
        sleep 0.2
    done
}

# Running webhookctl and friends as a user does (test_cli, test_tokens):
# sanitizer_clean FILE: FILE holds no sanitizer report.
sanitizer_clean() { ! grep -qE 'Sanitizer|runtime error:' "$1"; }

# run CMD...: runs CMD; its exit status lands in $rc, its output in
# $T/out and $T/err. A sanitizer report on stderr is a failure of its own
# (the sanitizer build exits 1, which some checks expect for other reasons).
run() {
    rc=0
    "$@" >"$T/out" 2>"$T/err" || rc=$?
    if ! sanitizer_clean "$T/err"; then
        not_ok "sanitizer report from: $*"
        sed 's/^/# /' "$T/err" | head -40
    fi
}

# expect DESC STATUS TEXT CMD...: CMD exits with STATUS and its stderr
# contains TEXT (any stderr when TEXT is empty).
expect() {
    local desc=$1 want=$2 text=$3
    shift 3
    run "$@"
    if [ "$rc" -eq "$want" ] && { [ -z "$text" ] || grep -qF -- "$text" "$T/err"; }; then
        ok "$desc"
    else
        not_ok "$desc (exit $rc, expected $want; stderr: $(head -c 300 "$T/err"))"
    fi
}

# out_is TEXT / out_has TEXT / err_empty: about the last run's output.
out_is() { [ "$(cat "$T/out")" = "$1" ]; }
out_has() { grep -qF -- "$1" "$T/out"; }
err_empty() { [ ! -s "$T/err" ]; }

sql() {
    psql "$DATABASE_URL" -XAtq -v ON_ERROR_STOP=1 -c "$1"
}

stack_up() {
    local partitions=${1:-8}
    "$ROOT/dev/pg.sh" start "$T/pg" >"$T/pg.env" 2>"$T/pg.log"
    local control=()
    if [ -n "${BROKER_CONTROL_PORT:-}" ]; then
        control=(--control-port "$BROKER_CONTROL_PORT")
    fi
    "$BIN/webhook-devbroker" --port 0 --partitions "$partitions" \
        "${control[@]}" --ready-file "$T/kafka.env" >"$T/broker.out" 2>"$T/broker.log" &
    PIDS+=($!)
    if ! wait_for 20 test -s "$T/kafka.env"; then
        not_ok "broker started"
        cat "$T/broker.log"
        finish
        exit 1
    fi
    set -a
    # shellcheck disable=SC1091
    . "$T/pg.env"
    # shellcheck disable=SC1091
    . "$T/kafka.env"
    set +a
    WEBHOOK_SECRET_KEY=$(head -c 32 /dev/urandom | base64)
    export WEBHOOK_SECRET_KEY
    export WEBHOOK_ALLOW_PRIVATE_NETS=127.0.0.0/8,::1/128
    export KAFKA_SESSION_TIMEOUT=${KAFKA_SESSION_TIMEOUT:-6s} KAFKA_HEARTBEAT_INTERVAL=${KAFKA_HEARTBEAT_INTERVAL:-500ms}
    export LOG_FORMAT=text
    "$BIN/webhookctl" migrate >"$T/migrate.log"
}

# start_worker NAME [VAR=VALUE ...]: the pid lands in WORKER_PID[NAME].
declare -A WORKER_PID
start_worker() {
    local name=$1
    shift
    env "$@" WORKER_ID="$name" "$BIN/webhook-worker" >>"$T/$name.log" 2>&1 &
    # shellcheck disable=SC2034 # read by the tests
    WORKER_PID[$name]=$!
    PIDS+=($!)
}

start_receiver() {
    local name=$1
    shift
    "$BIN/webhook-receiver" --port-file "$T/$name.port" \
        --record "$T/$name.jsonl" --count-file "$T/$name.count" "$@" \
        >"$T/$name.out" 2>"$T/$name.log" &
    PIDS+=($!)
    wait_for 10 test -s "$T/$name.port"
}

# received NAME: requests the receiver recorded so far.
received() {
    if [ -s "$T/$1.count" ]; then cat "$T/$1.count"; else echo 0; fi
}

# got_at_least NAME N: the receiver recorded at least N requests.
got_at_least() {
    [ "$(received "$1")" -ge "$2" ]
}

# sql_at_least QUERY N: the query's single number is at least N.
sql_at_least() {
    [ "$(sql "$1")" -ge "$2" ]
}

# free_port: a loopback port below the ephemeral range that nothing is
# bound to (for the broker's control port).
free_port() {
    python3 -c '
import random, socket
for _ in range(200):
    p = random.randint(20000, 32000)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        s.close()
    print(p)
    break'
}

# broker_ctl CMD...: one fault-injection command to the dev broker's
# control port ($BROKER_CONTROL_PORT, see stack_up); logs the reply and
# succeeds only when it is "ok".
broker_ctl() {
    local fd reply=""
    exec {fd}<>"/dev/tcp/127.0.0.1/$BROKER_CONTROL_PORT" || return 1
    printf '%s\n' "$*" >&"$fd"
    read -r -t 10 reply <&"$fd" || true
    exec {fd}>&-
    log "broker control: $* -> ${reply:-(no reply)}"
    [ "$reply" = ok ]
}

# dead_letters_json FILE: every dead letter in webhook.dead so far, decoded
# into FILE, one JSON object per line (tests/dead_letters.py names the
# fields).
dead_letters_json() {
    kcat -C -b "$KAFKA_BROKERS" -t webhook.dead -o beginning -e -q \
        -f '%k\t%S\t%s\n' | python3 "$ROOT/tests/dead_letters.py" >"$1"
}

new_secret() {
    echo "whsec_$(head -c 24 /dev/urandom | base64)"
}

# verify_from K ARGS: tests/verify/verify.js ARGS over the receipts in
# receiver r's record whose JSON payload has "n" of K or more (the events
# a test published since K); its report in $T/verify.out
verify_from() {
    local k=$1
    shift
    python3 -c 'import base64, json, sys
for l in open(sys.argv[1]):
    if json.loads(base64.b64decode(json.loads(l)["body_b64"]))["n"] >= int(sys.argv[2]):
        print(l, end="")' "$T/r.jsonl" "$k" >"$T/from-$k.jsonl"
    node "$ROOT/tests/verify/verify.js" --record "$T/from-$k.jsonl" "$@" >"$T/verify.out" 2>&1
}
