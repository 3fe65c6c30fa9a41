#!/usr/bin/env bash
# test_retries.sh - failures become retries, retries come back through
# webhook-scheduler, and deliveries that run out end in webhook.dead:
# - an endpoint failing its first 2 requests gets exactly 3 attempts with
#   one webhook-id and growing gaps (schedule 1s,4s);
# - an always-failing endpoint (schedule 200ms,400ms) is dead-lettered
#   after its 3rd attempt and the delivery is failed in the history;
# - 410 Gone disables the endpoint with a reason and dead-letters;
# - a 400 is not retried;
# - a retry that comes due while its endpoint is disabled is parked and
#   resumed by enable (events published while disabled are not fanned out
#   to it);
# - a garbage message on the events topic lands in webhook.dead with its
#   reason while the events after it are delivered;
# - a retry sent again for a delivery that already succeeded (its retry row
#   put back) is ignored after the worker asked Postgres, and the event
#   published after it is delivered.
. "$(dirname "$0")/../lib.sh"

stack_up 4
secret=$(new_secret)
start_receiver flaky --secret "$secret" --fail-first 2
start_receiver down --secret "$secret" --status 500
start_receiver gone --secret "$secret" --status 410
start_receiver bad --secret "$secret" --status 400
start_receiver ok --secret "$secret" --fail-first 1
start_receiver again --secret "$secret" --fail-first 1
ep() { # ep NAME TYPE SCHEDULE
    "$BIN/webhookctl" endpoint add --app r --events "$2" --secret "$secret" \
        --url "http://127.0.0.1:$(cat "$T/$1.port")/$1" --retry-schedule "$3"
}
flaky=$(ep flaky t.flaky 1s,4s)
down=$(ep down t.down 200ms,400ms)
gone=$(ep gone t.gone 1s)
bad=$(ep bad t.bad 1s)
ok_ep=$(ep ok t.ok 10s) # first retry 5-10 s later: time to disable it
again_ep=$(ep again t.again 4s) # time to copy the retry row

start_worker w1
"$BIN/webhook-scheduler" >"$T/scheduler.log" 2>&1 &
PIDS+=($!)

publish() { "$BIN/webhook-produce" --quiet --app r --type "$1" --id "$2" --payload "{\"n\":\"$2\"}"; }
publish t.flaky f1
publish t.down d1
publish t.gone g1
publish t.bad b1

check "the flaky endpoint got 3 requests" wait_for 30 got_at_least flaky 3
sleep 1.5 # nothing more may come
check "exactly 3, not more" test "$(received flaky)" -eq 3
check "flaky: 3 requests, one webhook-id, growing gaps within the schedule" \
    python3 - "$T/flaky.jsonl" <<'PY'
import json, sys
r = [json.loads(l) for l in open(sys.argv[1])]
ids = {x["webhook_id"] for x in r}
t = [x["received_at_us"] / 1e6 for x in r]
g1, g2 = t[1] - t[0], t[2] - t[1]
print(f"# gaps {g1:.3f}s {g2:.3f}s, statuses {[x['status'] for x in r]}")
ok = (len(r) == 3 and len(ids) == 1 and [x["status"] for x in r] == [500, 500, 204]
      and 0.45 <= g1 <= 1.6 and 0.95 <= g2 <= 4.6 and g2 > g1 - 0.2)
sys.exit(0 if ok else 1)
PY
check "history: flaky attempts 1,2 failed with a retry, 3 succeeded" \
    test "$(sql "SELECT string_agg(attempt || ':' || outcome || ':' || (next_attempt_at IS NOT NULL), ',' ORDER BY attempt) FROM webhooks.delivery_log WHERE endpoint_id = '$flaky'")" = "1:failed:true,2:failed:true,3:succeeded:false"

dead_for() { # dead_for ENDPOINT: dead letters keyed by the endpoint
    kcat -b "$KAFKA_BROKERS" -C -t webhook.dead -o beginning -e -q -f '%k\n' 2>/dev/null | grep -c "^$1\$" || true
}
has_dead() { [ "$(dead_for "$1")" -ge 1 ]; }
check "always failing: dead-lettered" wait_for 30 has_dead "$down"
check "always failing: 3 attempts" test "$(received down)" -eq 3
check "always failing: final failed attempt in the history" \
    test "$(sql "SELECT count(*) FROM webhooks.delivery_log WHERE endpoint_id = '$down' AND final AND outcome = 'failed' AND attempt = 3")" -eq 1
check "always failing: delivery_status says failed" \
    test "$(sql "SELECT state FROM webhooks.delivery_status WHERE endpoint_id = '$down'")" = failed
check "always failing: no retry left behind" \
    test "$(sql "SELECT count(*) FROM webhooks.retries WHERE endpoint_id = '$down'")" -eq 0

check "410: dead-lettered" wait_for 30 has_dead "$gone"
check "410: one request" test "$(received gone)" -eq 1
check "410: endpoint disabled with the reason" \
    test "$(sql "SELECT disabled || ':' || disabled_reason FROM webhooks.endpoints WHERE id = '$gone'")" = "true:HTTP 410 Gone from http://127.0.0.1:$(cat "$T/gone.port")/gone"
check "400: dead-lettered without retries" wait_for 30 has_dead "$bad"
check "400: one request" test "$(received bad)" -eq 1

# endpoint update changes the schedule
check "update --retry-schedule" "$BIN/webhookctl" endpoint update "$bad" --retry-schedule 2s,8s
check "the new schedule is stored" test "$(sql "SELECT retry_schedule_ms::text FROM webhooks.endpoints WHERE id = '$bad'")" = "{2000,8000}"
check "endpoint list --json shows it" bash -c "'$BIN/webhookctl' endpoint list --json | grep '\"id\":\"$bad\"' | grep -q '\"retry_schedule\":\"2s,8s\"'"
check "update --retry-schedule default" "$BIN/webhookctl" endpoint update "$bad" --retry-schedule default
check "the default is restored" test -z "$(sql "SELECT retry_schedule_ms FROM webhooks.endpoints WHERE id = '$bad'")"
rc=0
"$BIN/webhookctl" endpoint update "$bad" --retry-schedule 5s,1s >/dev/null 2>"$T/upd.err" || rc=$?
check "a decreasing schedule is refused with exit 2" test "$rc" -eq 2
check "with a clear message" grep -q "retry-schedule: step 2" "$T/upd.err"
rc=0
"$BIN/webhookctl" endpoint update ep_00000000nosuch --url http://127.0.0.1:1/x >/dev/null 2>&1 || rc=$?
check "updating an unknown endpoint exits 1" test "$rc" -eq 1

# a pending retry is parked while the endpoint is disabled, resumed on enable
publish t.ok p1
check "first attempt to the ok endpoint failed" wait_for 20 got_at_least ok 1
"$BIN/webhookctl" endpoint disable "$ok_ep" --reason "maintenance" >/dev/null
parked() { [ "$(sql "SELECT count(*) FROM webhooks.retries WHERE endpoint_id = '$ok_ep' AND due_at = 'infinity'")" -eq 1 ]; }
check "the retry that came due while disabled is parked" wait_for 20 parked
check "nothing is sent while disabled" test "$(received ok)" -eq 1
check "the parked attempt is in the history as endpoint_disabled" \
    test "$(sql "SELECT count(*) FROM webhooks.delivery_log WHERE endpoint_id = '$ok_ep' AND error_class = 'endpoint_disabled' AND next_attempt_at = 'infinity'")" -eq 1
"$BIN/webhookctl" endpoint enable "$ok_ep" >/dev/null
check "enable resumes the parked delivery" wait_for 20 got_at_least ok 2
check "the resumed delivery succeeded" \
    test "$(sql "SELECT state FROM webhooks.delivery_status WHERE endpoint_id = '$ok_ep'")" = succeeded

# garbage on the events topic: dead-lettered with its reason, flow goes on
printf 'this is not an event\n' | kcat -b "$KAFKA_BROKERS" -P -t webhook.events -k r
publish t.ok after-garbage
after() { grep -q 'after-garbage' <(python3 -c '
import base64, json, sys
for l in open(sys.argv[1]):
    print(base64.b64decode(json.loads(l)["body_b64"]).decode())' "$T/ok.jsonl"); }
check "the event after the garbage is delivered" wait_for 20 after
garbage_dead() { kcat -b "$KAFKA_BROKERS" -C -t webhook.dead -o beginning -e -q 2>/dev/null |
    grep -a -q "not a valid protobuf webhook.v1.Event nor a JSON envelope"; }
check "the garbage is in webhook.dead with its reason" wait_for 20 garbage_dead

# a stale retry: the retry row of a delivery that succeeded, put back
publish t.again a1
retry_row() {
    [ "$(sql "SELECT count(*) FROM webhooks.retries WHERE endpoint_id = '$again_ep'")" -eq 1 ]
}
check "the first attempt to the again endpoint failed and its retry is scheduled" \
    wait_for 20 retry_row
sql "CREATE TABLE public.stale_retry AS SELECT * FROM webhooks.retries
     WHERE endpoint_id = '$again_ep'" >/dev/null
check "the retry succeeds" wait_for 20 got_at_least again 2
no_retry() {
    [ "$(sql "SELECT count(*) FROM webhooks.retries WHERE endpoint_id = '$again_ep'")" -eq 0 ]
}
check "no retry row is left" wait_for 20 no_retry
a1_delivery=$(sql "SELECT delivery_id FROM public.stale_retry")
sql "INSERT INTO webhooks.retries SELECT * FROM public.stale_retry" >/dev/null
sql "UPDATE webhooks.retries SET due_at = now() WHERE endpoint_id = '$again_ep'" >/dev/null
publish t.again a2
ignored() {
    grep -q "ignoring retry 2 of delivery $a1_delivery to $again_ep: the delivery already ended" "$T/w1.log"
}
check "the stale retry is ignored: the delivery already ended" wait_for 30 ignored
bodies() { python3 -c '
import base64, json, sys
for l in open(sys.argv[1]):
    print(base64.b64decode(json.loads(l)["body_b64"]).decode())' "$T/again.jsonl"; }
a2_received() { bodies | grep -q '"n":"a2"'; }
check "the event after it is delivered" wait_for 30 a2_received
check "the stale retry sent nothing: a1 had 2 requests" \
    test "$(bodies | grep -c '"n":"a1"')" -eq 2
finish
