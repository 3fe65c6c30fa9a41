#!/usr/bin/env bash
# test_ordering.sh - strict per-endpoint ordering under faults. Every
# endpoint is ordered (the default); all events belong to one app, so they
# share one events partition and one total order, and every endpoint must
# see the first successful receipt of each delivery in publish order:
# payload seq 0,1,...,N-1 (checked by webhook-ordercheck on the receiver's
# record). The receiver fails 20% of requests at random and about a tenth
# of the endpoints for stretches of several seconds (--fail-window), so
# deliveries go through retries and webhook-scheduler; two endpoints
# answer slowly (--delay-path), so attempts are in flight when faults hit.
#
# First a self test of webhook-ordercheck on hand-made records, then one
# stack and four scenarios, each with fresh endpoints (app ord-a .. ord-d),
# a fresh receiver and fresh workers:
#   a  three workers, one killed with SIGKILL mid-run and restarted
#   b  one worker, a second one added mid-run
#   c  the broker goes down and comes back, then request errors are
#      injected through the broker's control port (Produce, Fetch,
#      OffsetCommit, Heartbeat)
#   d  PostgreSQL restarts mid-run
#   e  one worker gets SIGTERM mid-run (every endpoint answering in 20 ms,
#      so its lanes hold thousands in memory) and its replacement starts
#      once it exited: nothing new starts after SIGTERM and what its lanes
#      queued is parked for the next owner, so the duplicate receipts are
#      at most the requests in flight at SIGTERM
#   f  one endpoint answers after 2 s among fast ones, then the worker is
#      killed with SIGKILL: queued deliveries are parked after
#      WORKER_LANE_PARK_AFTER (1 s here), so no endpoint gets more
#      duplicates than it received in the few seconds before the kill
#   g  Kafka refuses three Produce requests for good while events are
#      being fanned out: the fan-out rewinds, nothing arrives out of order
#   h  as e, but the replacement starts right after SIGTERM and joins
#      while the old worker drains
# Each scenario waits until every endpoint has all first receipts (or its
# deadline passes), then checks ordering and that nothing was lost: every
# delivery has a 2xx receipt and a succeeded row in the history, nothing
# was dead-lettered, no retry is left, every request was signed correctly.
#
# Environment: ORDERING_LONG=1 (1000 events per endpoint, more faults),
# ORDERING_EVENTS, ORDERING_ENDPOINTS, ORDERING_SCENARIOS ("a b c d e f g h";
# "none" runs the self test only), ORDERING_DEADLINE (seconds per
# scenario).
. "$(dirname "$0")/../lib.sh"

ORD=$BIN/webhook-ordercheck
LONG=${ORDERING_LONG:-0}
# WINDOW_MS: the fail windows start 0..4 steps in and last 4 or 6 steps
if [ "$LONG" = 1 ]; then
    EVENTS=${ORDERING_EVENTS:-1000}
    PARTITIONS=16
    DEADLINE=${ORDERING_DEADLINE:-900}
    POLL=2
    WINDOW_MS=3000
else
    EVENTS=${ORDERING_EVENTS:-100}
    PARTITIONS=8
    DEADLINE=${ORDERING_DEADLINE:-150}
    POLL=1
    WINDOW_MS=1000
fi
ENDPOINTS=${ORDERING_ENDPOINTS:-100}
SCENARIOS=${ORDERING_SCENARIOS:-a b c d e f g h}
if [ "$ENDPOINTS" -lt 20 ] || [ "$ENDPOINTS" -gt 9999 ]; then
    echo "ORDERING_ENDPOINTS must be 20..9999" >&2
    exit 2
fi
# 32 steps (the most a schedule takes): 33 attempts over at least 25 s
# (the jitter windows' lower ends), so a delivery outlives any fail window
# below (at most 6 s, 18 s with ORDERING_LONG) and is never dead-lettered.
SCHEDULE="200ms,400ms,800ms$(printf ',1s%.0s' $(seq 9))$(printf ',2s%.0s' $(seq 20))"

# ---- self test of webhook-ordercheck ------------------------------------------

# oc_rec RSEQ PATH WEBHOOK_ID STATUS PAYLOAD_SEQ: one receiver record line.
oc_rec() {
    printf '{"seq":%s,"received_at_us":1,"method":"POST","path":"%s","webhook_id":"%s","webhook_timestamp":"1","webhook_signature":"v1,x","content_type":"application/json","body_len":9,"body_b64":"%s","valid":null,"verify_error":null,"status":%s}\n' \
        "$1" "$2" "$3" "$(printf '{"seq":%s}' "$5" | base64 -w0)" "$4"
}

# oc NAME WANT_EXIT PATTERN ARGS...: runs ordercheck on $T/oc-NAME.jsonl,
# checks the exit status and that the output matches PATTERN (grep -E).
oc() {
    local name=$1 want=$2 pattern=$3 rc=0
    shift 3
    "$ORD" --record "$T/oc-$name.jsonl" "$@" >"$T/oc-$name.out" 2>&1 || rc=$?
    if [ "$rc" = "$want" ] && grep -qE -- "$pattern" "$T/oc-$name.out"; then
        ok "ordercheck $name: exit $rc"
    else
        not_ok "ordercheck $name: exit $rc (want $want), output:"
        sed 's/^/#   /' "$T/oc-$name.out"
    fi
}

{   # in order; a failed attempt and duplicate receipts (one arriving
    # after later seqs) are fine
    oc_rec 1 /e0 a0 204 0
    oc_rec 2 /e1 b0 200 0
    oc_rec 3 /e0 a1 503 1
    oc_rec 4 /e0 a1 204 1
    oc_rec 5 /e1 b1 204 1
    oc_rec 6 /e0 a2 204 2
    oc_rec 7 /e0 a0 204 0
    oc_rec 8 /e1 b2 201 2
    oc_rec 9 /e1 b1 204 1
} >"$T/oc-good.jsonl"
oc good 0 '^ordercheck: endpoints 2/2, deliveries 6/6, out-of-order 0, missing 0, duplicate receipts 2, extra 0, failed answers 1, record errors 0$' \
    --expect 3 --endpoints 2
{   # /e0: a1 failed, a2 overtook it, then a1 succeeded
    oc_rec 1 /e0 a0 204 0
    oc_rec 2 /e0 a1 500 1
    oc_rec 3 /e0 a2 204 2
    oc_rec 4 /e0 a1 204 1
    oc_rec 5 /e1 b0 204 0
    oc_rec 6 /e1 b1 204 1
    oc_rec 7 /e1 b2 204 2
} >"$T/oc-swap.jsonl"
oc swap 1 '^ordercheck: /e0: 3 of 3 delivered; 1 out of order, first at position 3: seq 1 after seq 2' \
    --expect 3 --endpoints 2
check "ordercheck swap: summary counts it" grep -q 'endpoints 1/2, deliveries 6/6, out-of-order 1, missing 0' "$T/oc-swap.out"
# the file is taken in receiver seq order, not line order
{ oc_rec 2 /e0 a1 204 1; oc_rec 1 /e0 a0 204 0; } >"$T/oc-lines.jsonl"
oc lines 1 'line 2: seq 1 does not increase' --expect 2
check "ordercheck lines: still ordered by receiver seq" grep -q 'deliveries 2/2, out-of-order 0' "$T/oc-lines.out"
{
    oc_rec 1 /e0 a0 204 0
    oc_rec 2 /e0 a1 500 1
    oc_rec 3 /e0 a3 204 3
} >"$T/oc-missing.jsonl"
oc missing 1 '^ordercheck: /e0: 2 of 4 delivered; missing 2: 1 2 ' --expect 4
check "ordercheck missing: summary" grep -q 'endpoints 0/1, deliveries 2/4, out-of-order 0, missing 2,' "$T/oc-missing.out"
cp "$T/oc-missing.jsonl" "$T/oc-missing-endpoint.jsonl"
oc missing-endpoint 1 'only 1 of 3 endpoints received anything' --expect 4 --endpoints 3
{
    oc_rec 1 /e0 a0 204 0
    oc_rec 2 /e0 a1 204 1
    oc_rec 3 /e0 a9 204 1
    oc_rec 4 /e0 a5 204 7
} >"$T/oc-extra.jsonl"
oc extra 1 '; extra 2: 1 7' --expect 2
{
    oc_rec 1 /e0 a0 204 0
    echo 'this is not JSON'
    echo '{"path":"/e0","status":204}'
    oc_rec 4 /e0 a1 204 1
    printf '{"seq":5,"path":"/e0","status":204,"webhook_id":"a2","body_b64":"%s"}\n' "$(printf '{"n":2}' | base64 -w0)"
    oc_rec 6 /e0 a1 204 5
    printf '{"seq":7,"path":"/e0",'
} >"$T/oc-errors.jsonl"
oc errors 1 'record errors 4$' --expect 2
check "ordercheck errors: each reported with its line" bash -c "grep -q '^ordercheck: line 2: not JSON' '$T/oc-errors.out' &&
    grep -q '^ordercheck: line 3: no \"seq\"' '$T/oc-errors.out' &&
    grep -q '^ordercheck: line 5: /e0, webhook_id a2: body has no integer \"seq\"' '$T/oc-errors.out' &&
    grep -q '^ordercheck: line 6: /e0: webhook_id a1 carried seq 5 here but seq 1 on line 4' '$T/oc-errors.out' &&
    grep -q 'last line has no newline yet; ignored' '$T/oc-errors.out'"
{
    oc_rec 1 /x/e0 a0 204 0
    oc_rec 2 /e0 a0 204 7
} >"$T/oc-prefix.jsonl"
oc prefix 0 'endpoints 1/1, deliveries 1/1' --expect 1 --prefix /x/ --endpoints 1
{   # bounds: a path over 2048 bytes, a record of over 256 JSON tokens
    oc_rec 1 "/$(head -c 2048 /dev/zero | tr '\0' p)" a0 204 0
    printf '{"seq":2,"path":"/e0","status":204,"x":[%s0]}\n' "$(printf '0,%.0s' $(seq 300))"
    oc_rec 3 /e0 a0 204 0
} >"$T/oc-bounds.jsonl"
oc bounds 1 'deliveries 1/1, .*record errors 2$' --expect 1
check "ordercheck bounds: both reported" bash -c "grep -q '^ordercheck: line 1: no \"path\" string (of at most 2048 bytes)' '$T/oc-bounds.out' &&
    grep -q '^ordercheck: line 2: not JSON: .*more than 256' '$T/oc-bounds.out'"
head -c 5000 /dev/zero | tr '\0' x >"$T/oc-long.jsonl"
oc long 2 'line 1 is longer than 1024 bytes' --expect 1 --max-line 1k
: >"$T/oc-empty.jsonl"
oc empty 1 'no records under /' --expect 1
oc usage 2 'expect is required' --endpoints 3
oc usage-bad 2 'expected a count 1\.\.' --expect 0
"$ORD" --record "$T/does-not-exist" --expect 1 >"$T/oc-nofile.out" 2>&1 && rc=0 || rc=$?
check "ordercheck: unreadable file exits 2" test "$rc" = 2

# ---- the stack ---------------------------------------------------------------

if [ "$SCENARIOS" = none ]; then
    finish
    exit
fi


BROKER_CONTROL_PORT=$(free_port)
stack_up "$PARTITIONS"
secret=$(new_secret)
"$BIN/webhook-scheduler" >"$T/scheduler.log" 2>&1 &
SCHEDULER_PID=$!
PIDS+=("$SCHEDULER_PID")


# stop_workers S: SIGTERM to every worker of scenario S at once, then
# waits for them; notes any that did not exit 0.
stop_workers() {
    local name pid rc names=()
    for name in "${!WORKER_PID[@]}"; do
        [[ $name == "$1"-* ]] || continue
        kill "${WORKER_PID[$name]}" 2>/dev/null && names+=("$name")
    done
    for name in "${names[@]}"; do
        pid=${WORKER_PID[$name]}
        timeout 40 tail --pid="$pid" -f /dev/null 2>/dev/null || kill -9 "$pid" 2>/dev/null || true
        rc=0
        wait "$pid" 2>/dev/null || rc=$?
        [ "$rc" = 0 ] || log "note: worker $name exited with status $rc on SIGTERM: $(tail -n 1 "$T/$name.log")"
    done
}

# progress S: "FIRST_RECEIPTS EXPECTED" of scenario S so far.
progress() {
    "$ORD" --record "$T/recv-$1.jsonl" --expect "$EVENTS" --endpoints "$ENDPOINTS" \
        --prefix /e --max-report 0 2>/dev/null |
        sed -n 's/^ordercheck: endpoints .*, deliveries \([0-9]*\)\/\([0-9]*\),.*/\1 \2/p'
}

# all_first_receipts S: every endpoint of S has a 2xx receipt of every event.
all_first_receipts() {
    local p
    p=$(progress "$1")
    [ -n "$p" ] && [ "${p% *}" = "${p#* }" ]
}

# history_complete S: a succeeded attempt of every delivery of S is in
# the history.
history_complete() {
    local n
    n=$(sql "SELECT count(DISTINCT delivery_id) FROM webhooks.delivery_log
             WHERE app = 'ord-$1' AND outcome = 'succeeded'" 2>/dev/null) || return 1
    [ "$n" -ge $((EVENTS * ENDPOINTS)) ]
}

# no_retries S: no retry of S is waiting.
no_retries() {
    [ "$(sql "SELECT count(*) FROM webhooks.retries WHERE app = 'ord-$1'" 2>/dev/null)" = 0 ]
}

# workers_ready S N: workers S-w1..S-wN have been assigned partitions of
# both stages (as their logs say).
workers_ready() {
    local i
    for ((i = 1; i <= $2; i++)); do
        grep -q 'fan-out: assigned' "$T/$1-w$i.log" 2>/dev/null &&
            grep -q 'delivery: assigned' "$T/$1-w$i.log" 2>/dev/null || return 1
    done
}

# workers_alive S: some worker of scenario S runs.
workers_alive() {
    local name
    for name in "${!WORKER_PID[@]}"; do
        [[ $name == "$1"-* ]] && kill -0 "${WORKER_PID[$name]}" 2>/dev/null && return 0
    done
    return 1
}

# wait_scenario S SECONDS INTERVAL COMMAND...: polls COMMAND until it
# succeeds (0), SECONDS pass (1) or no worker of S runs any more (2).
wait_scenario() {
    local s=$1 limit=$2 every=$3 start=$SECONDS
    shift 3
    until "$@"; do
        ((SECONDS - start >= limit)) && return 1
        if ! workers_alive "$s"; then
            log "scenario $s: no worker is running any more"
            return 2
        fi
        sleep "$every"
    done
}

# at_fraction S F: the receiver of S got F percent of the deliveries
# (requests, failed ones included), waiting at most the deadline.
at_fraction() {
    if wait_scenario "$1" "$DEADLINE" 0.2 got_at_least "recv-$1" $((EVENTS * ENDPOINTS * $2 / 100)); then
        return 0
    fi
    not_ok "scenario $1: $2% of the deliveries arrived before the fault"
    return 1
}

# begin S WORKERS: fresh endpoints, WORKERS workers, the receiver, then
# publishes the events; sets START.
begin() {
    local s=$1 workers=$2 i k port from len t0=$SECONDS
    port=$(free_port)
    # eight at a time: each add waits for its own durable commit
    for ((i = 0; i < ENDPOINTS; i++)); do
        printf 'http://127.0.0.1:%s/e%04d\n' "$port" "$i"
    done | xargs -P 8 -I URL "$BIN/webhookctl" endpoint add --app "ord-$s" \
        --events 'o.*' --secret "$secret" --url URL --retry-schedule "$SCHEDULE" \
        >/dev/null 2>"$T/endpoints-$s.err" ||
        not_ok "scenario $s: adding endpoints failed: $(head -n 3 "$T/endpoints-$s.err")"
    check "scenario $s: $ENDPOINTS endpoints added" test \
        "$(sql "SELECT count(*) FROM webhooks.endpoints WHERE app = 'ord-$s'")" = "$ENDPOINTS"
    log "scenario $s: $ENDPOINTS endpoints added in $((SECONDS - t0))s"
    for ((i = 1; i <= workers; i++)); do
        start_worker "$s-w$i"
    done
    # the fail windows count from the receiver's start: start it once the
    # workers own partitions, so the first deliveries follow at once
    if ! wait_for 40 workers_ready "$s" "$workers"; then
        log "scenario $s: workers not all assigned partitions after 40s; going on"
    fi
    # a tenth of the endpoints fail for 4 or 6 s, starting 0.5..4.5 s in
    # (times 3 with ORDERING_LONG)
    local windows=()
    for ((k = 0; k < 10; k++)); do
        from=$((WINDOW_MS / 2 + (k % 5) * WINDOW_MS))
        len=$(((4 + (k / 5) * 2) * WINDOW_MS))
        windows+=(--fail-window "$(printf '/e%04d' $((k * ENDPOINTS / 10)))=$from-$((from + len))")
    done
    # two slow endpoints (50 ms per answer) keep attempts in flight when
    # the faults hit
    start_receiver "recv-$s" --listen "127.0.0.1:$port" --secret "$secret" \
        --fail-rate 0.2 "${windows[@]}" \
        --delay-path "$(printf '/e%04d' $((ENDPOINTS / 20)))=50" \
        --delay-path "$(printf '/e%04d' $((ENDPOINTS * 11 / 20)))=50" \
        "${RECV_ARGS[@]}"
    for ((i = 0; i < EVENTS; i++)); do
        printf '{"id":"ord-%s-%d","app":"ord-%s","type":"o.created","payload":{"seq":%d}}\n' \
            "$s" "$i" "$s" "$i"
    done >"$T/events-$s.ndjson"
    START=$SECONDS
    if [ -n "${PUBLISH_RATE:-}" ]; then
        # PUBLISH_RATE events a second, in the background (PUBLISH_PID);
        # $T/published-S.txt gets "SEQ WALL_US" as each one is passed on
        python3 -u -c '
import sys, time
rate, t0, log = float(sys.argv[1]), time.monotonic(), open(sys.argv[2], "w")
for i, line in enumerate(sys.stdin):
    time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
    sys.stdout.write(line)
    log.write(f"{i} {time.time_ns() // 1000}\n")
    log.flush()
' "$PUBLISH_RATE" "$T/published-$s.txt" <"$T/events-$s.ndjson" | "$BIN/webhook-produce" --quiet &
        PUBLISH_PID=$!
        return
    fi
    check "scenario $s: $EVENTS events published" "$BIN/webhook-produce" --quiet <"$T/events-$s.ndjson"
}

# finish_scenario S WHAT: waits for completion, checks order and
# completeness, prints the figures, stops the scenario's workers.
finish_scenario() {
    local s=$1 what=$2 took rc=0 name
    if wait_scenario "$s" "$DEADLINE" "$POLL" all_first_receipts "$s"; then
        took=$((SECONDS - START))
        ok "scenario $s ($what): every endpoint received all $EVENTS events in ${took}s"
    else
        took=$((SECONDS - START))
        not_ok "scenario $s ($what): deliveries incomplete after ${took}s: $(progress "$s")"
    fi
    for name in "${!WORKER_PID[@]}"; do
        [[ $name == "$s"-* ]] || continue
        kill -0 "${WORKER_PID[$name]}" 2>/dev/null || not_ok "scenario $s: worker $name exited (see $T/$name.log)"
    done
    kill -0 "$SCHEDULER_PID" 2>/dev/null || not_ok "scenario $s: the scheduler exited"

    "$ORD" --record "$T/recv-$s.jsonl" --expect "$EVENTS" --endpoints "$ENDPOINTS" \
        --prefix /e >"$T/ordercheck-$s.txt" 2>&1 || rc=$?
    sed 's/^/# /' "$T/ordercheck-$s.txt"
    if [ "$rc" = 0 ]; then
        ok "scenario $s ($what): strict order at every endpoint"
    else
        not_ok "scenario $s ($what): ordercheck exit $rc"
    fi

    # nothing lost: the history holds a succeeded attempt for every
    # delivery that got a 2xx, and there is one per (event, endpoint)
    wait_for 60 history_complete "$s" || true
    sql "SELECT DISTINCT delivery_id FROM webhooks.delivery_log
         WHERE app = 'ord-$s' AND outcome = 'succeeded'" >"$T/history-$s.txt" 2>&1 || true
    # a duplicate may have failed after its delivery succeeded: its retry
    # comes back within a second or so and succeeds again
    wait_for 30 no_retries "$s" || true
    local dead left
    dead=$(sql "SELECT count(*) FROM webhooks.delivery_log WHERE app = 'ord-$s' AND final AND outcome = 'failed'" 2>&1 || true)
    left=$(sql "SELECT count(*) FROM webhooks.retries WHERE app = 'ord-$s'" 2>&1 || true)
    check "scenario $s: nothing dead-lettered" test "$dead" = 0
    check "scenario $s: no retry left" test "$left" = 0
    check "scenario $s: receipts and history agree, nothing lost" \
        python3 - "$T/recv-$s.jsonl" "$T/history-$s.txt" "$((EVENTS * ENDPOINTS))" "$s" "$took" <<'PY'
import base64, json, sys
rec, hist, want, s, took = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
ok_ids, pairs, requests, bad_sig, windowed = set(), set(), 0, 0, set()
for line in open(rec):
    try:
        r = json.loads(line)
    except ValueError:
        continue  # a line being written
    requests += 1
    bad_sig += r["valid"] is not True
    if r["status"] == 503:
        windowed.add(r["path"])
    if 200 <= r["status"] < 300:
        ok_ids.add(r["webhook_id"])
        pairs.add((r["path"], json.loads(base64.b64decode(r["body_b64"]))["seq"]))
history = {l.strip() for l in open(hist) if l.strip()}
checks = [
    ("every (endpoint, event) got a 2xx receipt", len(pairs) == want),
    ("one webhook-id per (endpoint, event)", len(ok_ids) == want),
    ("every 2xx receipt has a succeeded row in the history", ok_ids <= history),
    ("every succeeded row was received", history <= ok_ids),
    ("every request carried a valid signature", bad_sig == 0),
    # a check of the harness: some fail window overlapped the deliveries
    # (how many depends on the timing of faults and rebalances)
    (f"{len(windowed)} of 10 fail windows answered 503s", len(windowed) >= 1),
]
for name, good in checks:
    print(("# ok: " if good else "# FAIL: ") + name)
print(f"# scenario {s}: {took}s, requests {requests}, 2xx deliveries {len(ok_ids)}/{want}, "
      f"history {len(history)}, bad signatures {bad_sig}")
sys.exit(0 if all(g for _, g in checks) else 1)
PY
    SUMMARY+=("scenario $s ($what): ${took}s; $(tail -n 1 "$T/ordercheck-$s.txt" | sed 's/^ordercheck: //')")
    local t0=$SECONDS
    stop_workers "$s"
    log "scenario $s: workers stopped in $((SECONDS - t0))s"
}

SUMMARY=()
RECV_ARGS=() # more receiver options for the next scenario

scenario_a() {
    begin a 3
    local at victim=2
    for at in $([ "$LONG" = 1 ] && echo 20 45 70 || echo 30); do
        at_fraction a "$at" || break
        kill -9 "${WORKER_PID[a-w$victim]}"
        wait "${WORKER_PID[a-w$victim]}" 2>/dev/null || true
        log "killed worker a-w$victim with SIGKILL after $(received recv-a) requests"
        start_worker "a-w$victim"
        victim=$((victim % 3 + 1))
    done
    finish_scenario a "SIGKILL and restart"
}

scenario_b() {
    begin b 1
    local at n=1
    for at in $([ "$LONG" = 1 ] && echo 25 55 || echo 30); do
        at_fraction b "$at" || break
        n=$((n + 1))
        start_worker "b-w$n"
        log "added worker b-w$n after $(received recv-b) requests"
    done
    finish_scenario b "worker added"
}

# inject_errors: makes the next few requests of several kinds fail.
inject_errors() {
    broker_ctl push-errors Produce 5 NOT_LEADER_FOR_PARTITION &&
        broker_ctl push-errors Fetch 5 NOT_LEADER_FOR_PARTITION &&
        broker_ctl push-errors OffsetCommit 3 REQUEST_TIMED_OUT &&
        broker_ctl push-errors Heartbeat 3 NOT_COORDINATOR
}

scenario_c() {
    begin c 2
    local rounds=1 r
    [ "$LONG" = 1 ] && rounds=2
    for ((r = 0; r < rounds; r++)); do
        at_fraction c $((20 + r * 40)) || break
        check "scenario c: broker down" broker_ctl broker-down 1
        sleep 3
        check "scenario c: broker up" broker_ctl broker-up 1
        at_fraction c $((35 + r * 40)) || break
        check "scenario c: request errors injected" inject_errors
    done
    finish_scenario c "broker down/up, request errors"
}

# pg_restart: stops PostgreSQL and starts it again on the same port.
# dev/pg.sh refuses a port that still has server-side sockets other than
# TIME-WAIT (FIN-WAIT-2 until each client notices the shutdown), so the
# start is retried for a while.
pg_restart() {
    local start=$SECONDS
    "$ROOT/dev/pg.sh" stop "$T/pg" >>"$T/pg-restart.log" 2>&1 || return 1
    until "$ROOT/dev/pg.sh" start "$T/pg" >>"$T/pg-restart.log" 2>&1; do
        ((SECONDS - start < 60)) || return 1
        sleep 1
    done
    log "PostgreSQL was down for $((SECONDS - start))s"
}

scenario_d() {
    begin d 2
    local at
    for at in $([ "$LONG" = 1 ] && echo 25 60 || echo 30); do
        at_fraction d "$at" || break
        check "scenario d: PostgreSQL restarted after $(received recv-d) requests" pg_restart
    done
    finish_scenario d "PostgreSQL restart"
}

# graceful_restart S WHEN WHAT: one worker gets SIGTERM once 30% arrived
# (every answer takes 20 ms, so its lanes have a backlog, more than a 2 s
# stop could send); its replacement starts once it exited (WHEN = after)
# or right after the signal (at-once). Duplicate receipts must be at most
# the requests in flight at SIGTERM.
graceful_restart() {
    local s=$1 when=$2 what=$3 pid in_flight=0 dups t0 rc=0
    RECV_ARGS=(--delay-ms 20 --fail-rate 0)
    export WORKER_SHUTDOWN_TIMEOUT=2s
    begin "$s" 1
    unset WORKER_SHUTDOWN_TIMEOUT
    RECV_ARGS=()
    if at_fraction "$s" 30; then
        pid=${WORKER_PID[$s-w1]}
        t0=$SECONDS
        kill -TERM "$pid"
        [ "$when" = at-once ] && start_worker "$s-w2"
        timeout 60 tail --pid="$pid" -f /dev/null 2>/dev/null || kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || rc=$?
        unset "WORKER_PID[$s-w1]"
        [ "$when" = after ] && start_worker "$s-w2"
        check "scenario $s: the stopped worker exits 0 (status $rc)" test "$rc" = 0
        in_flight=$(sed -n 's/.*stopping: finishing \([0-9]*\) attempts in flight.*/\1/p' "$T/$s-w1.log" | tail -1)
        log "scenario $s: $s-w1 stopped in $((SECONDS - t0))s with ${in_flight:-?} attempts in flight at SIGTERM; $(grep -o 'stopping: [0-9]* queued deliveries parked.*' "$T/$s-w1.log" | tail -1)"
        check "scenario $s: the stopped worker started nothing new and parked its queues" \
            grep -q "stopping: [0-9]* queued deliveries parked" "$T/$s-w1.log"
        check "scenario $s: the replacement took the partitions with their hand-off offsets" \
            wait_for 30 grep -q 'handed over at offset' "$T/$s-w2.log"
    fi
    finish_scenario "$s" "$what"
    dups=$(sed -n 's/.*duplicate receipts \([0-9]*\).*/\1/p' "$T/ordercheck-$s.txt" | tail -1)
    check "scenario $s: duplicate receipts (${dups:-?}) at most the requests in flight at SIGTERM (${in_flight:-?})" \
        test "${dups:-999999}" -le "${in_flight:-0}"
}

scenario_e() { graceful_restart e after "SIGTERM, replacement started after the exit"; }

# crash_dups_within S KILL_US WINDOW_S: every duplicate 2xx receipt of S
# is of a delivery that was received, or whose event was published, in
# the WINDOW_S seconds before KILL_US (wall clock, as the receiver
# records it): a crash re-sends only what its partitions' committed
# offsets had not passed yet. Needs $T/published-S.txt (PUBLISH_RATE).
crash_dups_within() {
    python3 - "$T/recv-$1.jsonl" "$T/published-$1.txt" "$2" "$3" <<'PY'
import base64, json, sys
rec, pub, kill_us, window_us = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(float(sys.argv[4]) * 1e6)
since = kill_us - window_us
published = {int(a): int(b) for a, b in (l.split() for l in open(pub) if l.strip())}
first, dups, late = {}, 0, {}
for line in open(rec):
    try:
        r = json.loads(line)
    except ValueError:
        continue
    if not 200 <= r["status"] < 300:
        continue
    wid = r["webhook_id"]
    if wid not in first:
        first[wid] = r["received_at_us"]
        continue
    dups += 1
    seq = json.loads(base64.b64decode(r["body_b64"]))["seq"]
    if first[wid] < since and published.get(seq, kill_us) < since:
        late.setdefault(r["path"], []).append((seq, (kill_us - first[wid]) / 1e6))
n = sum(len(v) for v in late.values())
print(f"# {dups} duplicate receipts; {n} of them (at {len(late)} endpoints) of deliveries "
      f"received and published more than {window_us / 1e6:g}s before the kill")
for p, v in sorted(late.items())[:5]:
    print(f"# {p}: {len(v)}, e.g. seq {v[0][0]} first received {v[0][1]:.1f}s before the kill")
sys.exit(1 if n else 0)
PY
}

scenario_f() {
    # one endpoint answers after 2 s for the first 16 s, its partition-mates
    # at once; lanes park what waited 1 s in their queue, so neither the
    # slow lane's queue nor its partition-mates' deliveries pin the
    # partition's committed offset when the worker is killed
    local slow kill_us bound rc
    slow=$(printf '/e%04d' 7)
    RECV_ARGS=(--fail-rate 0 --delay-path "$slow=2000@0-16000")
    export WORKER_LANE_PARK_AFTER=1s
    # events arrive over about 17 s, so every endpoint has had receipts
    # for a while when the worker is killed 11 s in
    PUBLISH_RATE=6
    begin f 1
    RECV_ARGS=()
    unset PUBLISH_RATE
    while ((SECONDS - START < 11)); do sleep 0.2; done
    kill -9 "${WORKER_PID[f-w1]}"
    kill_us=$(date +%s%6N)
    wait "${WORKER_PID[f-w1]}" 2>/dev/null || true
    unset 'WORKER_PID[f-w1]'
    log "killed worker f-w1 with SIGKILL after $(received recv-f) requests"
    start_worker f-w2
    check "scenario f: $EVENTS events published" wait "$PUBLISH_PID"
    unset WORKER_LANE_PARK_AFTER
    finish_scenario f "slow endpoint among fast ones, SIGKILL"
    # the window: the park-after period a scan may overshoot by a quarter,
    # the slow endpoint's 2 s attempt in flight, and a second for the
    # recorder's flush and the 250 ms auto-commit
    bound=4.5
    crash_dups_within f "$kill_us" "$bound" >"$T/crashdups-f.txt" 2>&1 && rc=0 || rc=$?
    cat "$T/crashdups-f.txt"
    check "scenario f: every duplicate is of a delivery received or published in the ${bound}s before SIGKILL" test "$rc" = 0
}

scenario_g() {
    # the events are published before any worker runs, then Kafka refuses
    # the next three Produce requests for good, which are the fan-out's:
    # it rewinds with a new producer each time, and no endpoint gets an
    # event after a later one
    local rewinds
    begin g 0
    check "scenario g: the next three Produce requests are refused (INVALID_RECORD)" \
        broker_ctl push-errors Produce 3 INVALID_RECORD
    start_worker g-w1
    start_worker g-w2
    finish_scenario g "Produce refused during the fan-out"
    rewinds=$(cat "$T"/g-w*.log | grep -c 'fan-out: rewound with a new producer' || true)
    log "scenario g: $rewinds fan-out rewinds"
    check "scenario g: the fan-out rewound ($rewinds times)" test "$rewinds" -ge 1
}

# as e, but the replacement starts right after SIGTERM (a rolling update):
# it joins while the old worker drains, so the group refuses the old
# worker's last commits; the hand-off keeps what it delivered from being
# sent again
scenario_h() { graceful_restart h at-once "SIGTERM, replacement started at once"; }

log "ordering: $ENDPOINTS endpoints x $EVENTS events, $PARTITIONS partitions, scenarios: $SCENARIOS"
for s in $SCENARIOS; do
    case $s in
    a | b | c | d | e | f | g | h) "scenario_$s" ;;
    *) not_ok "unknown scenario '$s' in ORDERING_SCENARIOS" ;;
    esac
done
for line in "${SUMMARY[@]}"; do
    log "$line"
done
finish
