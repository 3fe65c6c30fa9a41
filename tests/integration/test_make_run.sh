#!/usr/bin/env bash
# test_make_run.sh - the README's `make run` as a user runs it: dev/run.sh
# starts the local stack and the demo, every demo delivery arrives with a
# valid signature, the summary comes from webhooks.delivery_log, and Ctrl-C
# (SIGINT to its process group) stops exactly what it started. Also checks
# that dev/up.sh writes a usable .dev/env and that a second dev-up refuses.
. "$(dirname "$0")/../lib.sh"

export DEV_STATE_DIR=$T/dev
# a free port below the ephemeral range for the "fixed" Kafka address
port=$((20000 + RANDOM % 10000))
while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    port=$((20000 + RANDOM % 10000))
done
export DEV_KAFKA_PORT=$port
export BUILD_DIR=$BUILD

setsid "$ROOT/dev/run.sh" >"$T/run.out" 2>&1 &
run_pid=$!
ready() { grep -q "Press Ctrl-C" "$T/run.out"; }
if ! wait_for 120 ready; then
    not_ok "make run reached its prompt"
    cat "$T/run.out"
    kill -INT -- "-$run_pid" 2>/dev/null
    finish
    exit 1
fi
ok "make run reached its prompt"
check "8 demo deliveries printed with valid signatures" \
    test "$(grep -c 'signature ok -> 204' "$T/run.out")" -eq 8
check "summary from delivery_log" grep -Eq 'acme +\| succeeded +\| +7' "$T/run.out"
check "summary counts globex" grep -Eq 'globex +\| succeeded +\| +1' "$T/run.out"
check ".dev/env has the four settings" test "$(grep -cE '^(KAFKA_BROKERS|DATABASE_URL|WEBHOOK_SECRET_KEY|WEBHOOK_ALLOW_PRIVATE_NETS)=' "$DEV_STATE_DIR/env")" -eq 4
check "the fixed Kafka port is used" grep -q "^KAFKA_BROKERS=127.0.0.1:$DEV_KAFKA_PORT\$" "$DEV_STATE_DIR/env"

# a user's own event through .dev/env, as the README shows
(
    set -a
    . "$DEV_STATE_DIR/env"
    set +a
    kcat -b "$KAFKA_BROKERS" -P -t webhook.events -k acme \
        <<<'{"id":"user-1","app":"acme","type":"order.paid","payload":{"total":42}}'
)
user_event() { grep -q 'signature ok' <(grep '"total":42' "$T/run.out"); }
check "an event published with kcat is delivered" wait_for 30 user_event
check "a second dev-up refuses while the stack runs" \
    bash -c "! '$ROOT/dev/up.sh' >/dev/null 2>&1"

pids=$(cat "$DEV_STATE_DIR"/*.pid)
pgdir=$(cat "$DEV_STATE_DIR/pgdir")
kill -INT -- "-$run_pid"
exited() { ! kill -0 "$run_pid" 2>/dev/null; }
check "Ctrl-C stops make run" wait_for 60 exited
wait "$run_pid"
check "make run exits 0 after Ctrl-C" test $? -eq 0
still=""
for p in $pids; do
    kill -0 "$p" 2>/dev/null && still="$still $p"
done
check "every process it started is gone" test -z "$still"
check "its PostgreSQL data is removed" test ! -e "$pgdir"
check "its state directory is removed" test ! -e "$DEV_STATE_DIR"
finish
