#!/usr/bin/env bash
# test_shutdown.sh - SIGTERM always finishes within WORKER_SHUTDOWN_TIMEOUT
# plus a small bound, exits 0 and frees everything (run with the sanitizer
# build, LeakSanitizer and ASan reports at exit fail the test):
#   (a) with requests in flight to a slow endpoint (the worker waits for
#       them up to the timeout, then gives them up),
#   (e) while a worker drains, its fan-out keeps serving the group, so a
#       joining worker gets events partitions before it has exited,
#   (d) with a fan-out message waiting for a produce retry (the broker
#       refuses every Produce),
#   (c) with Postgres stopped,
#   (f) with Postgres frozen (SIGSTOP) while deliveries are being recorded
#       and a lane drains (nothing Postgres does not answer may hold the
#       stop: the recorder's write and the query executor are interrupted),
#   (b) with the broker gone,
#   (g) and when the teardown itself stalls (here the process is stopped
#       with SIGSTOP mid-teardown), the watchdog armed at SIGTERM ends it
#       with exit status 4 once the timeout plus 15 s have passed.
. "$(dirname "$0")/../lib.sh"

TIMEOUT_S=2
BOUND_S=10 # what the teardown may add to the timeout
export WORKER_SHUTDOWN_TIMEOUT=${TIMEOUT_S}s

BROKER_CONTROL_PORT=$(free_port)
stack_up 4
BROKER_PID=${PIDS[0]}


secret=$(new_secret)
start_receiver recv --secret "$secret" --delay-path /slow=60000
port=$(cat "$T/recv.port")
"$BIN/webhookctl" endpoint add --app s --events t.fast --secret "$secret" \
    --url "http://127.0.0.1:$port/fast" >/dev/null
"$BIN/webhookctl" endpoint add --app s --events t.slow --secret "$secret" \
    --url "http://127.0.0.1:$port/slow" --unordered --max-in-flight 4 \
    --timeout 90s >/dev/null

fast_at_least() { [ "$(grep -c '"path":"/fast"' "$T/recv.jsonl" 2>/dev/null || true)" -ge "$1" ]; }
publish() { "$BIN/webhook-produce" --quiet --app s --type "$1" --id "$2" --payload '{"x":1}'; }
assigned() { grep -q "assigned 4 partitions of webhook.deliveries" "$T/$1.log"; }
in_flight_at_least() {
    local v
    v=$(metric "$1" webhook_worker_http_requests_in_flight)
    [ "${v:-0}" -ge "$2" ]
}

# stop_timed NAME: SIGTERM to worker NAME, then waits for it (a watchdog
# kills it after 60 s); sets STOP_RC and STOP_MS.
stop_timed() {
    local pid=${WORKER_PID[$1]} t0 watchdog
    t0=$(date +%s%N)
    kill -TERM "$pid"
    (sleep 60 && kill -9 "$pid" 2>/dev/null) &
    watchdog=$!
    STOP_RC=0
    wait "$pid" || STOP_RC=$?
    STOP_MS=$((($(date +%s%N) - t0) / 1000000))
    kill "$watchdog" 2>/dev/null || true
    wait "$watchdog" 2>/dev/null || true
    log "$1: exit $STOP_RC after $STOP_MS ms"
}
stopped_in_time() {
    check "$1: the worker exits 0" test "$STOP_RC" -eq 0
    check "$1: within ${TIMEOUT_S} s + ${BOUND_S} s ($STOP_MS ms)" \
        test "$STOP_MS" -le $(((TIMEOUT_S + BOUND_S) * 1000))
    check "$1: and says it stopped" grep -q "worker: stopped" "$T/$2.log"
}

# (a) requests in flight to a slow endpoint
start_worker wa WORKER_METRICS_LISTEN=127.0.0.1:0
check "(a) the worker joins its groups" wait_for 30 assigned wa
publish t.fast a-fast
check "(a) it delivers" wait_for 20 got_at_least recv 1
for i in 1 2 3; do publish t.slow "a-slow-$i"; done
check "(a) three requests are in flight to the slow endpoint" \
    wait_for 20 in_flight_at_least wa 3
stop_timed wa
stopped_in_time "(a) in-flight requests" wa
check "(a) it waited for them up to the timeout" \
    test "$STOP_MS" -ge $((TIMEOUT_S * 1000 - 100))

# (e) while a worker drains (slow requests in flight, a 20 s budget) its
# fan-out keeps serving the group: a worker that joins gets events
# partitions before the first one has exited
start_worker we1 WORKER_SHUTDOWN_TIMEOUT=20s WORKER_METRICS_LISTEN=127.0.0.1:0
check "(e) the first worker joins its groups" wait_for 30 assigned we1
check "(e) requests are in flight to the slow endpoint" \
    wait_for 30 in_flight_at_least we1 1
t0=$(date +%s%N)
kill -TERM "${WORKER_PID[we1]}"
check "(e) the first worker is draining" \
    wait_for 10 grep -q "stopping: finishing" "$T/we1.log"
start_worker we2
fanout_assigned() { grep -q "fan-out: assigned" "$T/we2.log"; }
wait_for 30 fanout_assigned || true
moved_ms=$((($(date +%s%N) - t0) / 1000000))
log "(e) events partitions moved after $moved_ms ms"
check "(e) the joining worker gets events partitions while the first still drains" \
    kill -0 "${WORKER_PID[we1]}"
check "(e) so the rebalance did not wait for the first worker's exit ($moved_ms ms)" \
    test "$moved_ms" -lt 19000
(sleep 90 && kill -9 "${WORKER_PID[we1]}" 2>/dev/null) &
watchdog=$!
rc=0
wait "${WORKER_PID[we1]}" || rc=$?
we1_ms=$((($(date +%s%N) - t0) / 1000000))
kill "$watchdog" 2>/dev/null || true
wait "$watchdog" 2>/dev/null || true
check "(e) the first worker exits 0" test "$rc" -eq 0
check "(e) within 20 s + ${BOUND_S} s ($we1_ms ms)" test "$we1_ms" -le $(((20 + BOUND_S) * 1000))
stop_timed we2
stopped_in_time "(e) the joining worker" we2

# (d) a fan-out message waits for a produce retry: the event is on the
# topic before the broker starts refusing every Produce
publish t.fast d-fast
check "(d) the broker refuses every Produce from now on" \
    broker_ctl push-errors Produce 10000 MSG_SIZE_TOO_LARGE
start_worker wd WORKER_METRICS_LISTEN=127.0.0.1:0
# (SIGTERM before the delivery consumer's first assignment trips an
# assertion in librdkafka 2.0.2's sticky assignor: wait for it)
check "(d) the worker joins its groups" wait_for 30 assigned wd
refused_and_held() {
    local failed held
    failed=$(metric wd 'webhook_worker_kafka_produced_total{result="failed"}')
    held=$(metric wd 'webhook_worker_pending_messages{stage="fanout"}')
    [ "${failed:-0}" -ge 2 ] && [ "${held:-0}" -ge 1 ]
}
check "(d) the fan-out's produce is refused, again after a retry, and the event is held" \
    wait_for 30 refused_and_held
# the refusal rewinds the fan-out; the event read again is not committed
# while its dead letter (refused too) is not durable
copy_waits() { grep -q "waits until its dead letter, sent before the rewind, is durable" "$T/wd.log"; }
check "(d) after the rewind, the event read again waits for its dead letter" \
    wait_for 30 copy_waits
check "(d) and is still held" refused_and_held
stop_timed wd
stopped_in_time "(d) a fan-out message waiting for a retry" wd
check "(d) broker takes Produce again" broker_ctl clear-errors Produce

# (c) Postgres stopped
start_worker wc
check "(c) the worker joins its groups" wait_for 30 assigned wc
check "(c) it delivers the event the last one could not" \
    wait_for 30 fast_at_least 2
"$ROOT/dev/pg.sh" stop "$T/pg" >/dev/null
publish t.fast c-fast
stop_timed wc
stopped_in_time "(c) Postgres stopped" wc
"$ROOT/dev/pg.sh" start "$T/pg" >/dev/null

# (f) Postgres frozen: deliveries keep arriving, so the recorder's thread
# waits in a write and the revoke would wait for it
start_worker wf WORKER_METRICS_LISTEN=127.0.0.1:0
check "(f) the worker joins its groups" wait_for 30 assigned wf
publish t.fast f-fast-0
check "(f) it delivers" wait_for 30 fast_at_least 3
pg_freeze
for i in 1 2 3 4 5; do publish t.fast "f-fast-$i"; done
check "(f) it delivers while Postgres is frozen" wait_for 30 fast_at_least 8
pending() {
    local v
    v=$(metric wf webhook_worker_recorder_pending_rows)
    [ "${v:-0}" -ge 1 ]
}
check "(f) the recorder holds rows it cannot write" wait_for 10 pending
stop_timed wf
pg_thaw
stopped_in_time "(f) Postgres frozen" wf
check "(f) it gave the unwritten rows up" \
    grep -q "rows not written to Postgres" "$T/wf.log"
start_worker wf2
check "(f) the next worker joins its groups" wait_for 30 assigned wf2
recorded_f() {
    [ "$(sql "SELECT count(DISTINCT event_id) FROM webhooks.attempts
              WHERE event_id LIKE 'f-fast-%' AND outcome = 'succeeded'")" -ge 6 ]
}
check "(f) the next worker records every delivery (redelivered)" \
    wait_for 60 recorded_f
stop_timed wf2
stopped_in_time "(f) the next worker" wf2

# (g) a teardown that stalls: the watchdog ends it
start_worker wg WORKER_METRICS_LISTEN=127.0.0.1:0
check "(g) the worker joins its groups" wait_for 30 assigned wg
publish t.slow g-slow
check "(g) a request is in flight to the slow endpoint" \
    wait_for 20 in_flight_at_least wg 1
t0=$(date +%s%N)
kill -TERM "${WORKER_PID[wg]}"
check "(g) the worker starts its teardown" \
    wait_for 10 grep -q "stopping: finishing" "$T/wg.log"
kill -STOP "${WORKER_PID[wg]}"
# SIGALRM (14) pending: the watchdog's alarm went off while it was stopped
alarm_pending() {
    local pnd
    pnd=$(awk '/^ShdPnd:/ { print $2 }' "/proc/${WORKER_PID[wg]}/status")
    (((16#$pnd >> 13) & 1))
}
check "(g) the watchdog's alarm goes off" wait_for $((TIMEOUT_S + 30)) alarm_pending
kill -CONT "${WORKER_PID[wg]}"
rc=0
wait "${WORKER_PID[wg]}" || rc=$?
g_ms=$((($(date +%s%N) - t0) / 1000000))
log "wg: exit $rc after $g_ms ms"
check "(g) the watchdog ends the worker with exit status 4" test "$rc" -eq 4
check "(g) not before the timeout plus 15 s ($g_ms ms)" \
    test "$g_ms" -ge $(((TIMEOUT_S + 15) * 1000 - 500))
check "(g) and says why" grep -q "the shutdown overran WORKER_SHUTDOWN_TIMEOUT" "$T/wg.log"

# (b) the broker gone
start_worker wb
check "(b) the worker joins its groups" wait_for 30 assigned wb
kill "$BROKER_PID"
wait "$BROKER_PID" 2>/dev/null || true
publish_rc=0
timeout 5 "$BIN/webhook-produce" --quiet --app s --type t.fast --id b-fast \
    --payload '{"x":1}' 2>/dev/null || publish_rc=$?
check "(b) the broker is gone (producing fails)" test "$publish_rc" -ne 0
stop_timed wb
stopped_in_time "(b) broker gone" wb
finish
