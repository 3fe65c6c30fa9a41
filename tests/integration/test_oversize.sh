#!/usr/bin/env bash
# test_oversize.sh - oversize and poison messages on the events topic never
# stall the fan-out: a 1.1 MB garbage message and a 2 MB JSON event,
# followed by valid events with the same key (the same partition), end as
# bounded dead letters in webhook.dead (length and SHA-256 of the whole
# message, at most a 64 KiB prefix) while the valid events are delivered;
# the fan-out's pending messages return to 0, a restart reads none of them
# again and delivers new events at once. An event the broker refuses for
# its size on the deliveries topic is dead-lettered instead of retried; a
# repeated fan-out stores its event once; events that find the producer's
# queue full wait (in order) instead of spinning;
# dead letters the broker keeps refusing fall back to the form without
# bodies, then back off (counted, logged), and SIGTERM still stops the
# worker within WORKER_SHUTDOWN_TIMEOUT plus a small bound, as it does
# while a dead letter waits in the producer for a partition leader. A KAFKA_EXTRA
# that lowers message.max.bytes below what WEBHOOK_PAYLOAD_MAX needs stops
# the worker at start-up with status 2.
. "$(dirname "$0")/../lib.sh"

SHUTDOWN_TIMEOUT_S=3
# SIGTERM to exit: the shutdown timeout, the 1 s flush and purge, leaving
# the group and freeing (measured: about 1 s beyond the timeout)
STOP_BOUND_S=$((SHUTDOWN_TIMEOUT_S + 4))

BROKER_CONTROL_PORT=$(free_port)
export BROKER_CONTROL_PORT



# publish KEY FILE...: each file as one message on the events topic,
# through a producer whose own limit allows them.
publish() {
    local key=$1
    shift
    kcat -P -b "$KAFKA_BROKERS" -t webhook.events -k "$key" \
        -X message.max.bytes=10000000 "$@"
}
# valid KEY ID...: one small JSON event per id, keyed KEY.
valid() {
    local key=$1 id
    shift
    for id in "$@"; do
        printf '{"id":"%s","app":"big","type":"o.small","payload":{"id":"%s"}}\n' \
            "$id" "$id"
    done | kcat -P -b "$KAFKA_BROKERS" -t webhook.events -k "$key"
}

# dead_letters: webhook.dead decoded, one JSON object per line, in
# $T/dead.jsonl
dead_letters() { dead_letters_json "$T/dead.jsonl"; }
dead_count() { dead_letters; wc -l <"$T/dead.jsonl"; }
dead_at_least() { [ "$(dead_count)" -ge "$1" ]; }
# dead_with FIELD VALUE: dead letters whose FIELD is VALUE (after dead_letters)
dead_with() {
    python3 -c '
import sys, json
n = sum(1 for l in open(sys.argv[1]) if str(json.loads(l)[sys.argv[2]]) == sys.argv[3])
print(n)' "$T/dead.jsonl" "$1" "$2"
}


stack_up 4
secret=$(new_secret)
start_receiver recv --secret "$secret"
port=$(cat "$T/recv.port")
"$BIN/webhookctl" endpoint add --app big --events 'o.*' --secret "$secret" \
    --url "http://127.0.0.1:$port/hook" >/dev/null

# --- start-up: message.max.bytes must fit WEBHOOK_PAYLOAD_MAX --------------
rc=0
KAFKA_EXTRA=message.max.bytes=100000 WORKER_ID=low timeout 30 \
    "$BIN/webhook-worker" >"$T/low.log" 2>&1 || rc=$?
check "a KAFKA_EXTRA message.max.bytes below what the payload limit needs: exit 2" \
    test "$rc" -eq 2
check "the error gives the numbers" \
    grep -q "message.max.bytes is 100000 (KAFKA_EXTRA), but WEBHOOK_PAYLOAD_MAX=524288 needs at least 655360" "$T/low.log"

# --- oversize messages among valid ones, one partition ----------------------
head -c 1100000 /dev/urandom >"$T/garbage.bin"
python3 -c '
import json, sys
print(json.dumps({"id": "big-json", "app": "big", "type": "o.big",
                  "payload": {"blob": "x" * 2000000}}), end="")' >"$T/big.json"
garbage_sha=$(sha256sum "$T/garbage.bin" | cut -d' ' -f1)
big_sha=$(sha256sum "$T/big.json" | cut -d' ' -f1)
big_len=$(stat -c %s "$T/big.json")

start_worker w1 WORKER_METRICS_LISTEN=127.0.0.1:0 LOG_LEVEL=info
check "the worker serves its metrics" wait_for 20 has_addr w1
valid k1 v0
check "a first valid event is delivered" wait_for 30 all_delivered recv v0
t0=$SECONDS
publish k1 "$T/garbage.bin"
publish k1 "$T/big.json"
valid k1 v1 v2 v3 v4 v5
check "the valid events behind them are delivered" \
    wait_for 60 all_delivered recv v1 v2 v3 v4 v5
log "valid events behind 1.1 MB garbage and a 2 MB event delivered after $((SECONDS - t0)) s"
check "both oversize messages end in webhook.dead" wait_for 30 dead_at_least 2
check "exactly two dead letters" test "$(dead_count)" -eq 2
log "dead letters: $(cat "$T/dead.jsonl" | tr '\n' ' ')"
check "the garbage's dead letter has its whole length and SHA-256" \
    test "$(dead_with raw_sha256 "$garbage_sha")" -eq 1 -a \
    "$(dead_with raw_len 1100000)" -eq 1
check "the 2 MB event's dead letter has its whole length and SHA-256" \
    test "$(dead_with raw_sha256 "$big_sha")" -eq 1 -a \
    "$(dead_with raw_len "$big_len")" -eq 1
check "each carries exactly the 64 KiB prefix" \
    test "$(dead_with raw_prefix 65536)" -eq 2
check "and the prefix is the start of the message" \
    test "$(dead_with prefix_sha256 "$(head -c 65536 "$T/garbage.bin" | sha256sum | cut -d' ' -f1)")" -eq 1 -a \
    "$(dead_with prefix_sha256 "$(head -c 65536 "$T/big.json" | sha256sum | cut -d' ' -f1)")" -eq 1
check "dead letters are small (under 70,000 bytes)" python3 -c '
import json, sys
sys.exit(not all(json.loads(l)["size"] < 70000 for l in open(sys.argv[1])))' "$T/dead.jsonl"
check "the fan-out's pending messages return to 0" \
    wait_for 20 metric_is w1 'webhook_worker_pending_messages{stage="fanout"}' 0
check "both were counted as produced dead letters" \
    metric_at_least w1 'webhook_worker_dead_letters_total{result="produced"}' 2
check "the dead letters were sent once (no retries)" \
    metric_is w1 'webhook_worker_dead_letters_total{result="retried"}' 0
check "each valid event was delivered once" \
    test "$(received recv)" -eq 6

# --- a restart reads none of them again -----------------------------------
stop_worker w1
start_worker w2 WORKER_METRICS_LISTEN=127.0.0.1:0
check "the restarted worker serves its metrics" wait_for 20 has_addr w2
valid k1 v6
check "after a restart a new event on the partition is delivered" \
    wait_for 60 all_delivered recv v6
check "the committed offset passed the oversize messages: not dead-lettered again" \
    test "$(dead_count)" -eq 2
check "nor was any valid event delivered again" test "$(received recv)" -eq 7

# --- the broker refuses an event's Delivery for its size --------------------
# (the dev broker's errors hit every Produce request, the test's own too:
# the event is published while no worker runs; a refusal applies to a
# whole batch, so nothing else is produced with it)
stop_worker w2
valid k1 refused
check "the broker refuses the next Produce for its size" \
    broker_ctl "push-errors Produce 1 MSG_SIZE_TOO_LARGE"
start_worker w3 WORKER_METRICS_LISTEN=127.0.0.1:0
check "worker w3 serves its metrics" wait_for 20 has_addr w3
check "the refused event is dead-lettered" wait_for 30 dead_at_least 3
check "with the reason" grep -q 'cannot go to the deliveries topic' "$T/dead.jsonl"
valid k1 v7
check "the next event is delivered" wait_for 30 all_delivered recv v7
check "the refused one was not delivered" test "$(delivered recv refused)" -eq 0
check "the fan-out's pending messages return to 0" \
    wait_for 20 metric_is w3 'webhook_worker_pending_messages{stage="fanout"}' 0
check "it was not fanned out again (the rewind skipped it)" \
    test "$(grep -c 'refused [0-9]* times, is produced alone' "$T/w3.log" || true)" -eq 0

# --- dead letters the broker keeps refusing: fallback, backoff, SIGTERM -----
stop_worker w3
head -c 300000 /dev/urandom >"$T/garbage2.bin"
publish k1 "$T/garbage2.bin"
check "the broker refuses every Produce for its size" \
    broker_ctl "push-errors Produce 10000 MSG_SIZE_TOO_LARGE"
start_worker w4 WORKER_METRICS_LISTEN=127.0.0.1:0 \
    WORKER_SHUTDOWN_TIMEOUT=${SHUTDOWN_TIMEOUT_S}s
check "worker w4 serves its metrics" wait_for 20 has_addr w4
check "the refused dead letter falls back to the form without bodies" \
    wait_for 30 metric_at_least w4 'webhook_worker_dead_letters_total{result="fell_back"}' 1
check "then backs off and is sent again" \
    wait_for 30 metric_at_least w4 'webhook_worker_dead_letters_total{result="retried"}' 4
check "one dead letter waits" metric_is w4 'webhook_worker_dead_letters_waiting' 1
check "each retry is logged with its delay" \
    grep -q 'not sent: .*sending it again in [0-9]* ms (retry 4)' "$T/w4.log"
check "the delay stops doubling at 5 s" \
    wait_for 40 grep -q 'sending it again in 5000 ms (retry 8)' "$T/w4.log"
delays=$(grep -o 'sending it again in [0-9]* ms' "$T/w4.log" | grep -o '[0-9]*' | tr '\n' ' ' || true)
log "dead-letter retry delays (ms): $delays"
check "the delays double from 100 ms to the 5 s cap" \
    test "${delays:0:36}" = "100 200 400 800 1600 3200 5000 5000 "
retries=$(metric w4 'webhook_worker_dead_letters_total{result="retried"}')
sleep 1 # (a count over a fixed span: the backoff keeps it low)
retries2=$(metric w4 'webhook_worker_dead_letters_total{result="retried"}')
log "retries in 1 s while backing off: $((retries2 - retries))"
check "no hot loop: at most 2 retries in a second at this point" \
    test $((retries2 - retries)) -le 2
check "the fan-out's message waits (pending)" \
    metric_at_least w4 'webhook_worker_pending_messages{stage="fanout"}' 1
start_ns=$(date +%s%N)
kill -TERM "${WORKER_PID[w4]}"
rc=0
timeout 60 tail --pid="${WORKER_PID[w4]}" -f /dev/null || rc=$?
stop_ms=$((($(date +%s%N) - start_ns) / 1000000))
kill -9 "${WORKER_PID[w4]}" 2>/dev/null || true
wait "${WORKER_PID[w4]}" 2>/dev/null || true
log "SIGTERM with a dead letter backing off: exited after $stop_ms ms (shutdown timeout ${SHUTDOWN_TIMEOUT_S} s)"
check "SIGTERM with a dead letter backing off: the worker exits within $STOP_BOUND_S s" \
    test "$rc" -eq 0 -a "$stop_ms" -le $((STOP_BOUND_S * 1000))
check "it said it stopped" grep -q 'stopped' "$T/w4.log"
check "the broker takes Produce requests again" broker_ctl "clear-errors Produce"
start_worker w5 WORKER_METRICS_LISTEN=127.0.0.1:0
# the abandoned message was not committed: its new reader dead-letters it
check "the next worker dead-letters the abandoned message" \
    wait_for 60 dead_at_least 4
check "with its whole length" test "$(dead_with raw_len 300000)" -eq 1
valid k1 v9
check "and delivers what follows" wait_for 60 all_delivered recv v9

# --- a repeated fan-out stores its event once ------------------------------
stop_worker w5
valid k1 again
check "the broker fails the next Produce" \
    broker_ctl "push-errors Produce 1 TOPIC_AUTHORIZATION_FAILED"
start_worker w6 WORKER_METRICS_LISTEN=127.0.0.1:0
check "worker w6 serves its metrics" wait_for 30 has_addr w6
check "an event whose Delivery Kafka did not take is delivered" \
    wait_for 60 all_delivered recv again
check "after the fan-out rewound with a new producer" \
    grep -q 'fan-out: rewound with a new producer' "$T/w6.log"
check "and produced it alone" grep -q 'refused 1 times, is produced alone' "$T/w6.log"
# the event is done (its rows durable) once nothing is pending
check "the repeated fan-out ends" \
    wait_for 20 metric_is w6 'webhook_worker_pending_messages{stage="fanout"}' 0
check "and it is stored in webhooks.events once" \
    test "$(sql "SELECT count(*) FROM webhooks.events WHERE event_id = 'again'")" -eq 1

# --- a full producer queue: events wait, nothing spins, order kept ---------
stop_worker w6
check "the broker answers slowly (rtt 200 ms)" broker_ctl "rtt 1 200"
start_worker w7 LOG_LEVEL=debug WORKER_METRICS_LISTEN=127.0.0.1:0 \
    KAFKA_EXTRA=queue.buffering.max.messages=2,batch.num.messages=1
check "worker w7 serves its metrics" wait_for 30 has_addr w7
QUEUED=40
ids=()
for ((i = 0; i < QUEUED; i++)); do ids+=("q$i"); done
valid k2 "${ids[@]}"
check "$QUEUED events through a producer queue of 2 are all delivered" \
    wait_for 90 all_delivered recv "${ids[@]}"
check "events waited for room in the producer's queue" \
    grep -q "the producer's queue is full; .* waits for room" "$T/w7.log"
in_order() {
    python3 -c '
import sys, json, base64
seen = []
for l in open(sys.argv[1]):
    try:
        i = json.loads(base64.b64decode(json.loads(l)["body_b64"])).get("id", "")
    except ValueError:
        continue
    if i.startswith("q"):
        seen.append(int(i[1:]))
sys.exit(seen != sorted(seen) or len(set(seen)) != int(sys.argv[2]))' "$T/recv.jsonl" "$QUEUED"
}
check "in order, each once" in_order
check "no event waits any more" metric_is w7 webhook_worker_fanout_waiting_events 0
check "the fan-out's pending messages return to 0" \
    wait_for 20 metric_is w7 'webhook_worker_pending_messages{stage="fanout"}' 0
check "the broker back to full speed" broker_ctl "rtt 1 0"

# --- SIGTERM while a dead letter waits in the producer (no leader) --------
stop_worker w7
for p in 0 1 2 3; do broker_ctl "leader webhook.dead $p -1" || true; done
head -c 200000 /dev/urandom >"$T/garbage3.bin"
publish k1 "$T/garbage3.bin"
start_worker w8 WORKER_METRICS_LISTEN=127.0.0.1:0 \
    WORKER_SHUTDOWN_TIMEOUT=${SHUTDOWN_TIMEOUT_S}s
check "worker w8 serves its metrics" wait_for 30 has_addr w8
check "its dead letter waits in the producer (no leader for webhook.dead)" \
    wait_for 30 metric_at_least w8 webhook_worker_kafka_producer_queue_messages 1
check "and the event stays pending" \
    metric_at_least w8 'webhook_worker_pending_messages{stage="fanout"}' 1
# the delivery stage joins its group too before the SIGTERM: a first
# assignment that arrives in the middle of the shutdown is another path
# (librdkafka may not return from that close; the watchdog ends it at the
# shutdown timeout + 15 s), not the one this bound is about
check "and its delivery stage has its partitions" wait_for 30 grep -q 'delivery: assigned' "$T/w8.log"
start_ns=$(date +%s%N)
kill -TERM "${WORKER_PID[w8]}"
rc=0
timeout 60 tail --pid="${WORKER_PID[w8]}" -f /dev/null || rc=$?
stop_ms=$((($(date +%s%N) - start_ns) / 1000000))
kill -9 "${WORKER_PID[w8]}" 2>/dev/null || true
wait "${WORKER_PID[w8]}" 2>/dev/null || true
log "SIGTERM with a dead letter in the producer: exited after $stop_ms ms (shutdown timeout ${SHUTDOWN_TIMEOUT_S} s)"
check "SIGTERM with a dead letter in the producer: the worker exits within $STOP_BOUND_S s" \
    test "$rc" -eq 0 -a "$stop_ms" -le $((STOP_BOUND_S * 1000))
check "it gave the unacknowledged message up" grep -q 'giving them up' "$T/w8.log"
for p in 0 1 2 3; do broker_ctl "leader webhook.dead $p 1" || true; done
start_worker w9
check "the next worker dead-letters it" wait_for 60 dead_at_least 5
check "with its whole length" test "$(dead_with raw_len 200000)" -eq 1
finish
