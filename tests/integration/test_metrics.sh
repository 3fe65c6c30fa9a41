#!/usr/bin/env bash
# test_metrics.sh - the operations HTTP server of webhook-worker and
# webhook-scheduler against the whole stack: /healthz and /readyz answer,
# /metrics is valid Prometheus text whose counters move as events are
# delivered (each first attempt fails, so retries go through the
# scheduler), errors get 404/405, a bad address stops the worker at start,
# a stopping worker turns not-ready while it is still alive, readiness
# and the database probe show in /metrics; a fatal error of the fan-out's
# producer makes it rewind with a new one, and one of the producer of dead
# letters makes the worker not ready and exit 3.
. "$(dirname "$0")/../lib.sh"

BROKER_CONTROL_PORT=$(free_port)
stack_up 4
secret=$(new_secret)
start_receiver recv --secret "$secret" --fail-first 1 --delay-path /slow=4000
port=$(cat "$T/recv.port")
"$BIN/webhookctl" endpoint add --app m --events t.ok --secret "$secret" \
    --url "http://127.0.0.1:$port/ok" --unordered --max-in-flight 10 \
    --retry-schedule 1s,1s >/dev/null
"$BIN/webhookctl" endpoint add --app m --events t.slow --secret "$secret" \
    --url "http://127.0.0.1:$port/slow" --retry-schedule none >/dev/null

# code URL [CURL ARGS]: the HTTP status of a request.
code() {
    local url=$1
    shift
    curl -s -o /dev/null -w '%{http_code}' "$@" "$url"
}
is_code() { [ "$(code "$2")" = "$1" ]; }
# value ADDR SERIES: the value of one series, e.g. 'x_total{k="v"}'.
value() {
    curl -fsS "http://$1/metrics" | awk -v k="$2" '$1 == k { print $2 }'
}
# at_least ADDR SERIES N
at_least() {
    local v
    v=$(value "$1" "$2")
    [ -n "$v" ] && awk -v v="$v" -v n="$3" 'BEGIN { exit !(v + 0 >= n + 0) }'
}
equals() {
    local v
    v=$(value "$1" "$2")
    [ -n "$v" ] && awk -v v="$v" -v n="$3" 'BEGIN { exit !(v + 0 == n + 0) }'
}
# valid_exposition FILE: HELP and TYPE before each family, counters end in
# _total, one "series value" per sample line.
valid_exposition() {
    awk '
        /^# HELP / { help[$3] = 1; next }
        /^# TYPE / {
            if (!($3 in help) || ($4 != "counter" && $4 != "gauge")) bad = 1
            type[$3] = $4; next
        }
        /^#/ { bad = 1; next }
        {
            name = $1; sub(/\{.*/, "", name)
            if (!(name in type) || NF != 2) bad = 1
            if (type[name] == "counter" && name !~ /_total$/) bad = 1
            if ($2 !~ /^-?[0-9][0-9.e+-]*$/ && $2 !~ /^(NaN|[+-]Inf)$/) bad = 1
            n++
        }
        END { exit bad || n == 0 }' "$1"
}

# a malformed address stops the worker before it connects anywhere
rc=0
WORKER_METRICS_LISTEN=nonsense "$BIN/webhook-worker" >"$T/bad.log" 2>&1 || rc=$?
check "a malformed --metrics-listen stops the worker" test "$rc" -ne 0
check "and says why" grep -q "metrics address 'nonsense'" "$T/bad.log"

start_worker w1 WORKER_METRICS_LISTEN=127.0.0.1:0
SCHEDULER_METRICS_LISTEN=127.0.0.1:0 SCHEDULER_POLL_INTERVAL=100ms \
    "$BIN/webhook-scheduler" >"$T/sched.log" 2>&1 &
SCHED_PID=$!
PIDS+=($SCHED_PID)

check "the worker logs where it serves" wait_for 20 has_addr w1
check "the scheduler logs where it serves" wait_for 20 has_addr sched
W=$(addr w1)
S=$(addr sched)
log "worker on $W, scheduler on $S"

check "worker /healthz answers 200 ok" \
    test "$(curl -fsS "http://$W/healthz")" = ok
check "worker /readyz turns 200" wait_for 30 is_code 200 "http://$W/readyz"
check "worker /readyz says ready" test "$(curl -fsS "http://$W/readyz")" = ready
check "scheduler /healthz answers 200" is_code 200 "http://$S/healthz"
check "scheduler /readyz turns 200" wait_for 30 is_code 200 "http://$S/readyz"

curl -fsS -D "$T/headers.txt" "http://$W/metrics" >"$T/before.txt"
check "worker /metrics is valid exposition text" valid_exposition "$T/before.txt"
check "with the 0.0.4 content type" \
    grep -qi '^content-type: text/plain; version=0.0.4' "$T/headers.txt"
curl -fsS "http://$S/metrics" >"$T/sched-before.txt"
check "scheduler /metrics is valid exposition text" \
    valid_exposition "$T/sched-before.txt"
check "both endpoints are cached" equals "$W" webhook_worker_endpoints_cached 2
check "the database connections are up" \
    equals "$W" 'webhook_worker_database_connected{connection="main"}' 1
check "the database probe answers" wait_for 10 equals "$W" \
    webhook_worker_database_up 1
check "its round trip is exported" at_least "$W" \
    webhook_worker_database_probe_seconds 0
check "the worker's ready gauge is 1" equals "$W" webhook_worker_ready 1
check "the scheduler's ready gauge is 1" equals "$S" webhook_scheduler_ready 1
check "no attempt row waits uncommitted" \
    equals "$W" webhook_worker_recorder_oldest_pending_seconds 0
check "the query executor's queue is exported" \
    sh -c "test -n \"\$(curl -fsS 'http://$W/metrics' | awk '\$1 == \"webhook_worker_db_jobs_pending\" { print \$2 }')\""
check "nothing attempted yet" \
    equals "$W" 'webhook_worker_delivery_attempts_total{outcome="succeeded"}' 0

EVENTS=5
for ((i = 1; i <= EVENTS; i++)); do
    "$BIN/webhook-produce" --quiet --app m --type t.ok --id "ok$i" --payload "{\"i\":$i}"
done
check "every event arrives after one failure" \
    wait_for 60 got_at_least recv $((2 * EVENTS))
check "successes are counted" wait_for 20 at_least "$W" \
    'webhook_worker_delivery_attempts_total{outcome="succeeded"}' "$EVENTS"
check "failures are counted" at_least "$W" \
    'webhook_worker_delivery_attempts_total{outcome="failed"}' "$EVENTS"
check "requests are counted" at_least "$W" \
    webhook_worker_delivery_requests_total $((2 * EVENTS))
check "the fan-out's deliveries were acknowledged by Kafka" at_least "$W" \
    'webhook_worker_kafka_produced_total{result="acked"}' "$EVENTS"
check "no produce failed" \
    equals "$W" 'webhook_worker_kafka_produced_total{result="failed"}' 0
check "the scheduler counts the retries it enqueued" \
    at_least "$S" webhook_scheduler_retries_enqueued_total "$EVENTS"
check "and its batches" at_least "$S" webhook_scheduler_batches_total 1
check "and when the last one finished" \
    at_least "$S" webhook_scheduler_last_batch_timestamp_seconds 1700000000
check "no batch failed" equals "$S" webhook_scheduler_batch_failures_total 0
check "the recorder drains" wait_for 20 equals "$W" \
    webhook_worker_recorder_pending_rows 0
check "no delivery left active" wait_for 20 equals "$W" \
    webhook_worker_deliveries_active 0
check "no data loss" equals "$W" webhook_worker_kafka_data_loss_total 0
check "uptime moves" at_least "$W" webhook_worker_uptime_seconds 0.5
curl -fsS "http://$W/metrics" >"$T/after.txt"
check "still valid after traffic" valid_exposition "$T/after.txt"

check "unknown paths get 404" is_code 404 "http://$W/nope"
check "POST gets 405" test "$(code "http://$W/metrics" -X POST -d x)" = 405
check "HEAD works" test "$(code "http://$W/healthz" -I)" = 200

# a stopping worker is alive but not ready while its attempt finishes
"$BIN/webhook-produce" --quiet --app m --type t.slow --id slow1 --payload '{}'
check "the slow attempt is in flight" wait_for 20 equals "$W" \
    webhook_worker_http_requests_in_flight 1
kill -TERM "${WORKER_PID[w1]}"
not_ready() {
    [ "$(code "http://$W/readyz")" = 503 ] &&
        curl -sS "http://$W/readyz" | grep -q 'shutting down'
}
check "a stopping worker answers /readyz 503 shutting down" wait_for 3 not_ready
check "while /healthz still answers 200" is_code 200 "http://$W/healthz"
wait "${WORKER_PID[w1]}" || true
check "the worker has stopped serving" \
    test "$(code "http://$W/healthz" --max-time 2)" = 000

# Kafka refusing the fan-out's Delivery with OUT_OF_ORDER_SEQUENCE_NUMBER,
# which librdkafka treats as fatal for an idempotent producer: the fan-out
# replaces its producer, reads the event again and delivers it; the worker
# keeps running
kill "$SCHED_PID" && wait "$SCHED_PID" || true # its producer would take the errors
"$BIN/webhook-produce" --quiet --app m --type t.ok --id fatal1 --payload '{"id":"fatal1"}'
check "the broker will refuse the next produce request" \
    broker_ctl push-errors Produce 1 OUT_OF_ORDER_SEQUENCE_NUMBER
start_worker w2 WORKER_METRICS_LISTEN=127.0.0.1:0
check "worker w2 serves its metrics" wait_for 20 has_addr w2
check "the fan-out rewinds with a new producer after a fatal error" \
    wait_for 30 grep -q 'fan-out: rewound with a new producer' "$T/w2.log"
check "and delivers the event" wait_for 30 all_delivered recv fatal1
check "the rewind is counted" \
    metric_at_least w2 webhook_worker_fanout_rewinds_total 1
W2=$(addr w2)
check "the worker stays ready" is_code 200 "http://$W2/readyz"
stop_worker w2

# a fatal error of the producer of dead letters: an undecodable event's
# dead letter is the next produce request; the worker must turn not ready
# and exit 3
printf 'not an event' | kcat -P -b "$KAFKA_BROKERS" -t webhook.events -k m
check "the broker will refuse the next produce requests" \
    broker_ctl push-errors Produce 3 OUT_OF_ORDER_SEQUENCE_NUMBER
start_worker w3 WORKER_METRICS_LISTEN=127.0.0.1:0
gone() { ! kill -0 "${WORKER_PID[w3]}" 2>/dev/null; }
check "the worker stops after a fatal producer error" wait_for 30 gone
rc=0
if gone; then # else it is still running: the check below fails, finish stops it
    wait "${WORKER_PID[w3]}" || rc=$?
fi
check "with exit status 3 ($rc)" test "$rc" -eq 3
check "it said why" grep -q "Kafka producer failed fatally: OUT_OF_ORDER_SEQUENCE_NUMBER" "$T/w3.log"
finish
