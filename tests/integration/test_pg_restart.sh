#!/usr/bin/env bash
# test_pg_restart.sh - PostgreSQL restarts while deliveries flow. Attempts
# finished meanwhile must reach the history once it is back (nothing is
# committed to Kafka before its row is durable), and the worker must
# re-establish LISTEN so an endpoint added after the restart gets events.
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
start_worker w1 WORKER_MAINTENANCE_INTERVAL=1s
python3 -c '
for i in range(3000):
    print("{\"id\":\"p-%d\",\"app\":\"pg\",\"type\":\"t.%d\",\"payload\":{\"seq\":%d}}" % (i, i % 3, i))' \
    >"$T/events.ndjson"
check "events published" "$BIN/webhook-produce" --quiet <"$T/events.ndjson"

if wait_for 60 got_at_least recv 500; then
    check "PostgreSQL restarted mid-run" "$ROOT/dev/pg.sh" restart "$T/pg"
else
    not_ok "deliveries started"
fi
check "all $EVENTS deliveries arrived" wait_for 120 got_at_least recv "$EVENTS"
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
