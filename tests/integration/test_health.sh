#!/usr/bin/env bash
# test_health.sh - an endpoint that fails every attempt for longer than
# WEBHOOK_DISABLE_AFTER is disabled automatically with a recorded reason,
# its pending retries are parked, a healthy endpoint of the same app is
# left alone, and `endpoint enable` resumes the parked deliveries.
. "$(dirname "$0")/../lib.sh"

stack_up 4
secret=$(new_secret)
start_receiver sick --secret "$secret" --status 503
start_receiver well --secret "$secret"
sick=$("$BIN/webhookctl" endpoint add --app h --events t.sick --secret "$secret" \
    --url "http://127.0.0.1:$(cat "$T/sick.port")/sick" \
    --retry-schedule 1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s)
well=$("$BIN/webhookctl" endpoint add --app h --events t.well --secret "$secret" \
    --url "http://127.0.0.1:$(cat "$T/well.port")/well")
start_worker w1 WEBHOOK_DISABLE_AFTER=3s WORKER_MAINTENANCE_INTERVAL=1s
"$BIN/webhook-scheduler" >"$T/scheduler.log" 2>&1 &
PIDS+=($!)

"$BIN/webhook-produce" --quiet --app h --type t.sick --id s1 --payload '{"s":1}'
"$BIN/webhook-produce" --quiet --app h --type t.well --id w1 --payload '{"w":1}'

disabled() { [ "$(sql "SELECT disabled FROM webhooks.endpoints WHERE id = '$1'")" = t ]; }
check "the failing endpoint is disabled automatically" wait_for 30 disabled "$sick"
check "with a reason" \
    bash -c "psql '$DATABASE_URL' -XAtq -c \"SELECT disabled_reason FROM webhooks.endpoints WHERE id = '$sick'\" | grep -q '^every attempt failed since .* (longer than 00:00:03)$'"
check "the healthy endpoint stays enabled" \
    test "$(sql "SELECT disabled FROM webhooks.endpoints WHERE id = '$well'")" = f
parked() { [ "$(sql "SELECT count(*) FROM webhooks.retries WHERE endpoint_id = '$sick' AND due_at = 'infinity'")" -eq 1 ]; }
check "its pending retry is parked" wait_for 20 parked
n=$(received sick)
sleep 2
check "no more requests reach it" test "$(received sick)" -eq "$n"
check "it got more than one attempt before" test "$n" -ge 3

# the endpoint recovers: a healthy receiver on the same port, then enable
kill "${PIDS[1]}"
wait "${PIDS[1]}" 2>/dev/null || true
"$BIN/webhook-receiver" --listen "127.0.0.1:$(cat "$T/sick.port")" \
    --secret "$secret" --record "$T/sick2.jsonl" --count-file "$T/sick2.count" \
    >/dev/null 2>"$T/sick2.log" &
PIDS+=($!)
sleep 0.5
"$BIN/webhookctl" endpoint enable "$sick" >/dev/null
check "enable resumes the parked delivery" wait_for 30 got_at_least sick2 1
check "and it succeeds" wait_for 10 bash -c \
    "[ \"\$(psql '$DATABASE_URL' -XAtq -c \"SELECT state FROM webhooks.delivery_status WHERE endpoint_id = '$sick'\")\" = succeeded ]"
# Maintenance runs every second here (disable-after 3 s): failures from
# before the enable must not disable it again.
sleep 2
check "enabling it started its failing streak again: it stays enabled" \
    test "$(sql "SELECT disabled FROM webhooks.endpoints WHERE id = '$sick'")" = f
finish
