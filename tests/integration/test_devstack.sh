#!/usr/bin/env bash
# test_devstack.sh - integration test of the local stack's infrastructure:
# webhook-devbroker behind a fixed bootstrap port (topics, produce/consume,
# consumer group, control port, clean shutdown) and a throwaway PostgreSQL
# from dev/pg.sh (start, query, restart).
#
# Usage: tests/integration/test_devstack.sh [--build DIR]
# DIR (or $BUILD_DIR) holds bin/webhook-devbroker; default: build/.
# Needs kcat and psql. Prints "N passed, N failed" last; exits 1 on failure.
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "$0")/../.." && pwd)
BUILD=${BUILD_DIR:-$ROOT/build}
if [ "${1:-}" = --build ] && [ -n "${2:-}" ]; then
    BUILD=$2
fi
BROKER=$BUILD/bin/webhook-devbroker
PG_SH=$ROOT/dev/pg.sh
TOPICS=(webhook.events webhook.deliveries webhook.dead)
GROUP_OPTS=(-X auto.offset.reset=earliest -X session.timeout.ms=6000
            -X heartbeat.interval.ms=500)

# shellcheck source=tests/check.sh
. "$ROOT/tests/check.sh"
work=""
pgdir=""
broker_pid=""

port_in_use() {
    if command -v ss >/dev/null 2>&1; then
        [ -n "$(ss -Htan "sport = :$1" 2>/dev/null)" ]
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
    fi
}

# Prints a loopback port nothing listens on (and not in $1..., already taken).
free_port() {
    local port i taken
    for ((i = 0; i < 100; i++)); do
        port=$((20000 + RANDOM % 12768)) # below the ephemeral port range
        taken=0
        for t in "$@"; do [ "$t" = "$port" ] && taken=1; done
        if [ "$taken" -eq 0 ] && ! port_in_use "$port"; then
            echo "$port"
            return 0
        fi
    done
    echo "no free port found" >&2
    return 1
}

# Sends one command to the broker's control port and prints the reply line.
control() {
    local reply=""
    exec 4<>"/dev/tcp/127.0.0.1/$cport" || return 1
    printf '%s\n' "$1" >&4
    IFS= read -r -t 5 reply <&4 || true
    exec 4>&-
    printf '%s\n' "$reply"
}

wait_for_file() {
    local file=$1 tries=$2
    while [ ! -s "$file" ] && [ "$tries" -gt 0 ]; do
        kill -0 "$broker_pid" 2>/dev/null || return 1
        sleep 0.1
        tries=$((tries - 1))
    done
    [ -s "$file" ]
}

cleanup() {
    local rc=$?
    set +e
    if [ -n "$broker_pid" ] && kill -0 "$broker_pid" 2>/dev/null; then
        kill -TERM "$broker_pid"
        wait "$broker_pid" 2>/dev/null
    fi
    if [ -n "$pgdir" ]; then
        "$PG_SH" stop "$pgdir" >/dev/null 2>&1
        rm -rf -- "$pgdir"
    fi
    if [ -n "$work" ]; then
        if [ "$failed" -gt 0 ] || [ "$rc" -ne 0 ]; then
            for f in "$work"/broker.err "$work"/pg.err; do
                [ -s "$f" ] && { echo "--- $f"; tail -n 20 "$f"; }
            done
        fi
        rm -rf -- "$work"
    fi
    if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
        failed=1
        echo "FAIL - test script aborted (exit $rc)"
    fi
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ] || exit 1
    exit 0
}
trap cleanup EXIT

for tool in kcat psql; do
    command -v "$tool" >/dev/null || { not_ok "$tool is installed"; exit 1; }
done
[ -x "$BROKER" ] || { not_ok "$BROKER exists (run make)"; exit 1; }

work=$(mktemp -d)
kport=$(free_port)
cport=$(free_port "$kport")
bootstrap=127.0.0.1:$kport

# --- broker -----------------------------------------------------------------

"$BROKER" --port "$kport" --control-port "$cport" --ready-file "$work/broker.ready" \
    >"$work/broker.out" 2>"$work/broker.err" &
broker_pid=$!
if ! wait_for_file "$work/broker.ready" 150; then
    not_ok "broker becomes ready within 15 s"
    exit 1
fi
ok "broker becomes ready"
check "broker prints KAFKA_BROKERS with the fixed port" \
    [ "$(cat "$work/broker.out")" = "KAFKA_BROKERS=$bootstrap" ]
check "ready file holds the same line" \
    [ "$(cat "$work/broker.ready")" = "KAFKA_BROKERS=$bootstrap" ]

if timeout 20 kcat -b "$bootstrap" -L >"$work/metadata.txt" 2>"$work/kcat.err"; then
    ok "kcat -L through the fixed port"
else
    not_ok "kcat -L through the fixed port"
fi
for t in "${TOPICS[@]}"; do
    check "topic $t has 8 partitions" \
        grep -qF "topic \"$t\" with 8 partitions:" "$work/metadata.txt"
done

key=devstack-$$-$RANDOM
printf '%s:hello %s\n' "$key" "$key" |
    timeout 20 kcat -b "$bootstrap" -P -t webhook.events -K: 2>>"$work/kcat.err" || true
timeout 20 kcat -b "$bootstrap" -C -t webhook.events -o beginning -e -q -f '%k:%s\n' \
    >"$work/consumed.txt" 2>>"$work/kcat.err" || true
check "message round-trips through webhook.events" \
    grep -qxF "$key:hello $key" "$work/consumed.txt"

seq 1 200 | timeout 20 kcat -b "$bootstrap" -P -t webhook.deliveries 2>>"$work/kcat.err" || true
timeout 60 kcat -b "$bootstrap" -G "devstack-$$" "${GROUP_OPTS[@]}" -e -q webhook.deliveries \
    >"$work/group.txt" 2>>"$work/kcat.err" || true
check "consumer group reads all 200 messages once" \
    [ "$(sort -un "$work/group.txt" | wc -l):$(wc -l <"$work/group.txt")" = 200:200 ]

check "control: ping" [ "$(control ping)" = ok ]
check "control: unknown command is an error" \
    [ "$(control frobnicate | cut -c1-6)" = "error:" ]
check "control: broker-down 1" [ "$(control 'broker-down 1')" = ok ]
check "metadata fails while broker 1 is down" \
    bash -c "! timeout 10 kcat -b '$bootstrap' -L -m 2 >/dev/null 2>&1"
check "control: broker-up 1" [ "$(control 'broker-up 1')" = ok ]
check "metadata works again after broker-up" \
    bash -c "timeout 20 kcat -b '$bootstrap' -L -t webhook.dead 2>/dev/null | grep -qF 'webhook.dead'"

check "broker still running" kill -0 "$broker_pid"
kill -TERM "$broker_pid" 2>/dev/null || true
brc=0
wait "$broker_pid" || brc=$?
broker_pid=""
check "broker exits 0 on SIGTERM" [ "$brc" -eq 0 ]

# --- postgres ---------------------------------------------------------------

pgdir=$(mktemp -d)
if "$PG_SH" start "$pgdir" >"$work/pg.out" 2>"$work/pg.err"; then
    ok "pg.sh start"
else
    not_ok "pg.sh start"
fi
url=$(sed -n 's/^DATABASE_URL=//p' "$work/pg.out")
url_re='^postgresql://postgres@127\.0\.0\.1:[0-9]+/webhooks$'
if [[ $url =~ $url_re ]]; then
    ok "pg.sh prints DATABASE_URL on 127.0.0.1"
else
    not_ok "pg.sh prints DATABASE_URL on 127.0.0.1 (got '$url')"
fi
check "psql select 1" \
    [ "$(timeout 20 psql "$url" -X -Atc 'select 1' 2>>"$work/pg.err")" = 1 ]
check "fsync and synchronous_commit are on" \
    [ "$(timeout 20 psql "$url" -X -Atc "select current_setting('fsync') || current_setting('synchronous_commit')" 2>>"$work/pg.err")" = onon ]

if "$PG_SH" restart "$pgdir" >"$work/pg2.out" 2>>"$work/pg.err"; then
    ok "pg.sh restart"
else
    not_ok "pg.sh restart"
fi
check "restart keeps the same DATABASE_URL" \
    [ "$(sed -n 's/^DATABASE_URL=//p' "$work/pg2.out")" = "$url" ]
check "psql select 1 after restart" \
    [ "$(timeout 20 psql "$url" -X -Atc 'select 1' 2>>"$work/pg.err")" = 1 ]
check "pg.sh stop" "$PG_SH" stop "$pgdir" 2>>"$work/pg.err"
check "pg.sh stop is idempotent" "$PG_SH" stop "$pgdir" 2>>"$work/pg.err"
