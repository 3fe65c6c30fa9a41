#!/usr/bin/env bash
# test_deadletter.sh - the dead-letter sender gives up after
# WORKER_DEAD_LETTER_GIVE_UP and loses nothing: with webhook.dead without a
# partition leader, an undecodable event (fan-out) and two deliveries an
# endpoint rejects (delivery stage, one ordered lane) wait in the producer
# until the bound, are stored in webhooks.unsent_dead_letters (the
# DeadLetter as it would have been produced), logged as errors and counted
# as given up; the deliveries' final attempts are in the history, the lane
# goes on to the next delivery only after the give-up, and the offsets move
# on (a restarted worker reads none of it again). With the broker refusing
# every dead letter (backoff), WORKER_DEAD_LETTER_GIVE_UP=0 keeps retrying
# well past the bound, and a bound then gives that dead letter up too.
. "$(dirname "$0")/../lib.sh"

GIVE_UP_S=3

BROKER_CONTROL_PORT=$(free_port)
export BROKER_CONTROL_PORT

GIVEN_UP='webhook_worker_dead_letters_total{result="given_up"}'
RETRIED='webhook_worker_dead_letters_total{result="retried"}'

# event APP TYPE KEY ID...: one small JSON event per id.
event() {
    local app=$1 type=$2 key=$3 id
    shift 3
    for id in "$@"; do
        printf '{"id":"%s","app":"%s","type":"%s","payload":{"id":"%s"}}\n' \
            "$id" "$app" "$type" "$id"
    done | kcat -P -b "$KAFKA_BROKERS" -t webhook.events -k "$key"
}
publish_file() {
    kcat -P -b "$KAFKA_BROKERS" -t webhook.events -k "$1" "$2"
}
unsent() { sql "SELECT count(*) FROM webhooks.unsent_dead_letters WHERE $1"; }
# stored_json WHERE: the stored DeadLetter of the one row matching WHERE,
# decoded like webhook.dead's (tests/dead_letters.py)
stored_json() {
    sql "SELECT coalesce(kafka_key, '') || ' ' ||
                translate(encode(dead_letter, 'base64'), E'\n', '')
         FROM webhooks.unsent_dead_letters WHERE $1" | python3 -c '
import sys, base64
key, b64 = sys.stdin.read().split(" ")
raw = base64.b64decode(b64)
sys.stdout.buffer.write(key.encode() + b"\t%d\t" % len(raw) + raw + b"\n")' |
        python3 "$ROOT/tests/dead_letters.py"
}
json_field() { python3 -c 'import sys, json; print(json.loads(sys.stdin.read())[sys.argv[1]])' "$1"; }
dead_letters() { dead_letters_json "$T/dead.jsonl"; }
dead_with() {
    dead_letters
    python3 -c '
import sys, json
print(sum(1 for l in open(sys.argv[1]) if str(json.loads(l)[sys.argv[2]]) == sys.argv[3]))' \
        "$T/dead.jsonl" "$1" "$2"
}

stack_up 4
secret=$(new_secret)
start_receiver ok --secret "$secret"
start_receiver rej --secret "$secret" --status 400
"$BIN/webhookctl" endpoint add --app dl --events 'o.*' --secret "$secret" \
    --url "http://127.0.0.1:$(cat "$T/ok.port")/hook" >/dev/null
ep_rej=$("$BIN/webhookctl" endpoint add --app rj --events 'r.*' --secret "$secret" \
    --url "http://127.0.0.1:$(cat "$T/rej.port")/hook")
check "an endpoint that rejects every delivery (400)" test -n "$ep_rej"

# --- the fan-out: webhook.dead has no leader ------------------------------
for p in 0 1 2 3; do broker_ctl "leader webhook.dead $p -1" || true; done
head -c 200000 /dev/urandom >"$T/garbage.bin"
garbage_sha=$(sha256sum "$T/garbage.bin" | cut -d' ' -f1)
publish_file k1 "$T/garbage.bin"
event dl o.x k1 v1 v2
start_worker w1 WORKER_METRICS_LISTEN=127.0.0.1:0 \
    WORKER_DEAD_LETTER_GIVE_UP=${GIVE_UP_S}s
check "worker w1 serves its metrics" wait_for 20 has_addr w1
check "the events behind the undecodable one are fanned out meanwhile" \
    wait_for 30 all_delivered ok v1 v2
check "the undecodable event's dead letter is given up" \
    wait_for 30 metric_at_least w1 "$GIVEN_UP" 1
check "counted once" metric_is w1 "$GIVEN_UP" 1
check "it was never produced" metric_is w1 'webhook_worker_dead_letters_total{result="produced"}' 0
check "the give-up is logged as an error naming the message, the topic and the last error" \
    grep -Eq 'ERROR.*dead letter of message at webhook\.events \[[0-9]\] @ [0-9]+ given up after [0-9]+ ms and 0 retries: webhook\.dead did not take it \(last error: no delivery report after 3000 ms\); stored in webhooks\.unsent_dead_letters \(id [0-9]+\)' "$T/w1.log"
check "stored in webhooks.unsent_dead_letters, reason UNDECODABLE" \
    test "$(unsent "source_topic = 'webhook.events' AND reason = 1 AND dead_topic = 'webhook.dead' AND delivery_id IS NULL AND NOT without_bodies")" -eq 1
check "with the last error" \
    test "$(unsent "source_topic = 'webhook.events' AND last_error LIKE 'no delivery report after 3000 ms%'")" -eq 1
check "given up no sooner than ${GIVE_UP_S} s after its first send" \
    test "$(sql "SELECT bool_and(given_up_at - first_tried_at >= interval '${GIVE_UP_S} s' AND given_up_at - first_tried_at < interval '30 s') FROM webhooks.unsent_dead_letters")" = t
stored=$(stored_json "source_topic = 'webhook.events'")
log "stored fan-out dead letter: $stored"
check "the stored DeadLetter carries the event's whole length and SHA-256" \
    test "$(json_field raw_len <<<"$stored")" -eq 200000 -a \
    "$(json_field raw_sha256 <<<"$stored")" = "$garbage_sha"
check "and its first 64 KiB" test "$(json_field raw_prefix <<<"$stored")" -eq 65536
check "the fan-out's pending messages return to 0 (its offset can move on)" \
    wait_for 20 metric_is w1 'webhook_worker_pending_messages{stage="fanout"}' 0
check "no dead letter waits" metric_is w1 webhook_worker_dead_letters_waiting 0

# --- the delivery stage: a rejected delivery on an ordered lane ------------
event rj r.x k2 r1 r2
check "both rejected deliveries' dead letters are given up" \
    wait_for 40 metric_at_least w1 "$GIVEN_UP" 3
check "each logged with its delivery and event" \
    test "$(grep -Ec "ERROR.*dead letter of delivery [^ ]+ \(event r[12]\) to $ep_rej given up after" "$T/w1.log")" -eq 2
check "stored with delivery, event, endpoint and reason REJECTED" \
    test "$(unsent "event_id IN ('r1', 'r2') AND endpoint_id = '$ep_rej' AND kafka_key = '$ep_rej' AND reason = 5 AND delivery_id IS NOT NULL AND app = 'rj'")" -eq 2
check "their final failed attempts are recorded in the history" \
    wait_for 20 sql_at_least "SELECT count(*) FROM webhooks.delivery_log WHERE event_id IN ('r1', 'r2') AND outcome = 'failed' AND final AND status_code = 400" 2
check "webhookctl dead-letters list shows both" \
    test "$("$BIN/webhookctl" dead-letters list --endpoint "$ep_rej" --json | grep -c '"event_id":"r[12]"')" -eq 2
check "the lane went on to r2 only after r1's dead letter was given up" \
    test "$(sql "SELECT (SELECT attempted_at FROM webhooks.delivery_log WHERE event_id = 'r2') >= (SELECT given_up_at FROM webhooks.unsent_dead_letters WHERE event_id = 'r1')")" = t
check "the delivery stage's pending messages return to 0" \
    wait_for 20 metric_is w1 'webhook_worker_pending_messages{stage="deliver"}' 0

# --- the offsets moved on: a new worker reads none of it again -------------
stop_worker w1
for p in 0 1 2 3; do broker_ctl "leader webhook.dead $p 1" || true; done
start_worker w2 WORKER_METRICS_LISTEN=127.0.0.1:0 \
    WORKER_DEAD_LETTER_GIVE_UP=${GIVE_UP_S}s
check "worker w2 serves its metrics" wait_for 20 has_addr w2
event dl o.x k1 v3
event rj r.x k2 r3
check "an event behind them on the same partition is delivered" \
    wait_for 30 all_delivered ok v3
check "the next delivery to the rejecting endpoint is dead-lettered to Kafka" \
    wait_for 30 metric_at_least w2 'webhook_worker_dead_letters_total{result="produced"}' 1
check "only r3 reaches webhook.dead: what was given up is not read again" \
    test "$(dead_with event_id r3)" -eq 1 -a "$(dead_with event_id r1)" -eq 0 \
    -a "$(dead_with raw_len 200000)" -eq 0
check "nothing given up by w2" metric_is w2 "$GIVEN_UP" 0
check "still three stored dead letters" test "$(unsent true)" -eq 3

# --- give-up 0: keeps retrying a dead letter the broker refuses ------------
stop_worker w2
head -c 100000 /dev/urandom >"$T/garbage2.bin"
publish_file k1 "$T/garbage2.bin"
check "the broker refuses every Produce for its size" \
    broker_ctl "push-errors Produce 10000 MSG_SIZE_TOO_LARGE"
start_worker w3 WORKER_METRICS_LISTEN=127.0.0.1:0 WORKER_DEAD_LETTER_GIVE_UP=0
check "worker w3 serves its metrics" wait_for 20 has_addr w3
# retry 6 comes after 100+200+400+800+1600 ms of backoff and 6 refusals:
# over 3 s, more than the bound that gave the others up
check "with WORKER_DEAD_LETTER_GIVE_UP=0 the dead letter is still retried after the bound" \
    wait_for 40 metric_at_least w3 "$RETRIED" 6
check "it kept retrying past ${GIVE_UP_S} s" \
    grep -q 'not sent: .*sending it again in 3200 ms (retry 6)' "$T/w3.log"
check "nothing given up" metric_is w3 "$GIVEN_UP" 0
check "nothing more stored" test "$(unsent true)" -eq 3
check "it waits, its event pending" \
    metric_is w3 webhook_worker_dead_letters_waiting 1
check "its event stays pending" \
    metric_at_least w3 'webhook_worker_pending_messages{stage="fanout"}' 1
stop_worker w3

# --- ... and a bound gives it up while it backs off -------------------------
start_worker w4 WORKER_METRICS_LISTEN=127.0.0.1:0 WORKER_DEAD_LETTER_GIVE_UP=2s
check "worker w4 serves its metrics" wait_for 20 has_addr w4
check "the refused dead letter is given up after the bound" \
    wait_for 30 metric_at_least w4 "$GIVEN_UP" 1
check "after retries with backoff" metric_at_least w4 "$RETRIED" 3
check "stored without bodies, with the broker's refusal as last error" \
    test "$(unsent "source_topic = 'webhook.events' AND without_bodies AND retries >= 3 AND last_error ILIKE '%too large%'")" -eq 1
stored=$(stored_json "source_topic = 'webhook.events' AND without_bodies")
check "its stored DeadLetter has the whole length, no body" \
    test "$(json_field raw_len <<<"$stored")" -eq 100000 -a \
    "$(json_field raw_prefix <<<"$stored")" -eq 0
check "the fan-out goes on" \
    wait_for 20 metric_is w4 'webhook_worker_pending_messages{stage="fanout"}' 0
stop_worker w4
check "the broker takes Produce requests again" broker_ctl "clear-errors Produce"
start_worker w5 WORKER_METRICS_LISTEN=127.0.0.1:0
check "worker w5 serves its metrics" wait_for 20 has_addr w5
event dl o.x k1 v4
check "the next event on that partition is delivered" wait_for 30 all_delivered ok v4
check "the given-up message is not read again" \
    test "$(dead_with raw_len 100000)" -eq 0 -a "$(unsent true)" -eq 4
finish
