#!/usr/bin/env bash
# test_pg_restart.sh - PostgreSQL restarts while deliveries flow. Attempts
# finished meanwhile must reach the history once it is back (nothing is
# committed to Kafka before its row is durable), and the worker must
# re-establish LISTEN so an endpoint added after the restart gets events.
# Its /readyz turns not ready while Postgres is down (the probe finds no
# server) and ready again after, with webhook_worker_database_up back to 1.
. "$(dirname "$0")/../lib.sh"

EVENTS=3000
stack_up 4
secret=$(new_secret)
start_receiver recv --secret "$secret" --delay-ms 2
port=$(cat "$T/recv.port")
for i in 0 1 2; do
    "$BIN/webhookctl" endpoint add --app pg --events "t.$i" \
        --url "http://127.0.0.1:$port/e$i" --secret "$secret" >/dev/null
done
start_worker w1 WORKER_MAINTENANCE_INTERVAL=1s WORKER_METRICS_LISTEN=127.0.0.1:0 \
    WORKER_DB_PROBE_INTERVAL=200ms WORKER_DB_PROBE_TIMEOUT=1s
addr() {
    sed -n 's|.*serving /metrics, /healthz and /readyz on http://\([^ ]*\).*|\1|p' \
        "$T/w1.log" | tail -1
}
has_addr() { [ -n "$(addr)" ]; }
check "the worker serves its probes" wait_for 20 has_addr
A=$(addr)
readyz() { curl -s -o /dev/null --max-time 10 -w '%{http_code}' "http://$A/readyz"; }
is_ready() { [ "$(readyz)" = 200 ]; }
not_ready() { [ "$(readyz)" = 503 ]; }
db_up() {
    [ "$(curl -fsS --max-time 10 "http://$A/metrics" |
        awk '$1 == "webhook_worker_database_up" { print $2 }')" = 1 ]
}
check "the worker is ready" wait_for 30 is_ready
python3 -c '
for i in range(3000):
    print("{\"id\":\"p-%d\",\"app\":\"pg\",\"type\":\"t.%d\",\"payload\":{\"seq\":%d}}" % (i, i % 3, i))' \
    >"$T/events.ndjson"
check "events published" "$BIN/webhook-produce" --quiet <"$T/events.ndjson"

if wait_for 60 got_at_least recv 500; then
    check "PostgreSQL stopped mid-run" "$ROOT/dev/pg.sh" stop "$T/pg"
    check "the worker turns not ready while Postgres is down" wait_for 10 not_ready
    check "PostgreSQL started again" "$ROOT/dev/pg.sh" start "$T/pg"
else
    not_ok "deliveries started"
fi
check "all $EVENTS deliveries arrived" wait_for 120 got_at_least recv "$EVENTS"
check "the worker is ready again" wait_for 30 is_ready
check "webhook_worker_database_up is 1 again" db_up
check "every delivery is in the history after the restart" wait_for 60 sql_at_least \
    "SELECT count(DISTINCT delivery_id) FROM webhooks.delivery_log WHERE outcome = 'succeeded'" "$EVENTS"
check "history holds no failed attempts" test "$(sql "SELECT count(*) FROM webhooks.delivery_log WHERE outcome <> 'succeeded'")" -eq 0

# endpoint changes after the restart still reach the worker (LISTEN again)
"$BIN/webhookctl" endpoint add --app pg --events "late" \
    --url "http://127.0.0.1:$port/late" --secret "$secret" >/dev/null
sleep 3 # let the notification arrive
check "event for the new endpoint published" \
    "$BIN/webhook-produce" --quiet --app pg --type late --id late-1 --payload '{"late":true}'
late_arrived() { grep -q '"path":"/late"' "$T/recv.jsonl"; }
check "the endpoint added after the restart receives events" wait_for 30 late_arrived
finish
