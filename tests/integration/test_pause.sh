#!/usr/bin/env bash
# test_pause.sh - slow endpoints with a backlog do not pause consumption
# for fast ones. Twenty ordered endpoints answer after 3 s and ten answer
# at once, all on two partitions; the worker may work on 50 messages
# (WORKER_MAX_IN_FLIGHT=50). The slow lanes queue far more than that
# behind their heads, but queued deliveries do not count toward the limit:
# past it a lane that has to queue parks its queue in Postgres instead
# (webhook_worker_lane_spills_total{reason="memory"}), and the fast
# endpoints get every event while the slow ones are still on their first
# few. Counting queued deliveries toward the limit paused both partitions
# until the slow lanes' queues were gone (about two and a half minutes
# here).
. "$(dirname "$0")/../lib.sh"

EVENTS=50
SLOW=20
FAST=10
stack_up 2

secret=$(new_secret)
start_receiver fast --secret "$secret"
start_receiver slow --secret "$secret" --delay-ms 3000
fast=$(cat "$T/fast.port")
slow=$(cat "$T/slow.port")
for ((i = 0; i < SLOW; i++)); do
    echo "http://127.0.0.1:$slow/s$i"
done | xargs -P 8 -I URL "$BIN/webhookctl" endpoint add --app pause \
    --events 'p.*' --url URL --secret "$secret" --timeout 10s >/dev/null
for ((i = 0; i < FAST; i++)); do
    echo "http://127.0.0.1:$fast/f$i"
done | xargs -P 8 -I URL "$BIN/webhookctl" endpoint add --app pause \
    --events 'p.*' --url URL --secret "$secret" >/dev/null
check "$((SLOW + FAST)) endpoints added" test \
    "$(sql "SELECT count(*) FROM webhooks.endpoints WHERE app = 'pause'")" = $((SLOW + FAST))

start_worker w1 WORKER_MAX_IN_FLIGHT=50 WORKER_METRICS_LISTEN=127.0.0.1:0
check "the worker serves its metrics" wait_for 20 has_addr w1
check "the worker owns its partitions" wait_for 30 grep -q 'delivery: assigned' "$T/w1.log"

for ((i = 0; i < EVENTS; i++)); do
    printf '{"id":"p-%d","app":"pause","type":"p.x","payload":{"seq":%d}}\n' "$i" "$i"
done >"$T/events.ndjson"
t0=$SECONDS
check "$EVENTS events published" "$BIN/webhook-produce" --quiet <"$T/events.ndjson"
if wait_for 30 got_at_least fast $((EVENTS * FAST)); then
    ok "the fast endpoints got all $((EVENTS * FAST)) deliveries in $((SECONDS - t0))s"
else
    not_ok "the fast endpoints got all $((EVENTS * FAST)) deliveries within 30s (got $(received fast))"
fi
n=$(received slow)
log "the slow endpoints got $n requests meanwhile"
check "while the slow endpoints were still on their first few ($n of $((EVENTS * SLOW)))" \
    test "$n" -lt $((EVENTS * SLOW / 4))
check "lanes parked their queues to stay within the limit" \
    metric_at_least w1 'webhook_worker_lane_spills_total{reason="memory"}' 1
check "the slow lanes' later deliveries wait parked" \
    sql_at_least "SELECT count(*) FROM webhooks.parked" 1
queued=$(metric w1 webhook_worker_deliveries_queued)
check "deliveries queued in memory ($queued) stay within the limit" test "${queued:-999}" -le 51
stop_worker w1
finish
