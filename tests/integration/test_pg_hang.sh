#!/usr/bin/env bash
# test_pg_hang.sh - PostgreSQL frozen with SIGSTOP (this test's own
# postmaster and its backends, found through its pid file) while events
# keep arriving, then resumed.
#
# 1. One worker, Postgres frozen for 30 s: /metrics and /healthz keep
#    answering quickly (the loop is alive), deliveries keep reaching the
#    receiver (they need no Postgres), /readyz turns not ready within its
#    bound and says why, webhook_worker_database_up drops to 0; after the
#    resume every delivery is recorded, every event reached every endpoint
#    and /readyz is ready again.
# 2. Two workers, Postgres frozen for 25 s, one worker killed with SIGKILL
#    2 s in: the survivor takes over the dead worker's partitions during
#    the hang, keeps serving /metrics and delivering its own partitions'
#    endpoints meanwhile, and completes the takeover after the resume with
#    nothing lost.
# 3. The scheduler, Postgres frozen: its /readyz turns 503 within the
#    bound its settings give (a claim waits for DATABASE_STATEMENT_TIMEOUT
#    and its grace, then fails) and says why, webhook_scheduler_database_up
#    drops to 0 and the failures are counted, /healthz keeps answering;
#    after the resume it is ready again.
# Prints the worst /metrics response time of phases 1 and 2.
. "$(dirname "$0")/../lib.sh"

ENDPOINTS=8
RATE=20 # events per second while the producer runs


stack_up 8
secret=$(new_secret)
start_receiver recv --secret "$secret"
port=$(cat "$T/recv.port")
for ((i = 0; i < ENDPOINTS; i++)); do
    "$BIN/webhookctl" endpoint add --app hang --events 't.*' \
        --url "http://127.0.0.1:$port/e$i" --secret "$secret" >/dev/null
done

WORKER_ENV=(WORKER_METRICS_LISTEN=127.0.0.1:0 WORKER_DB_PROBE_INTERVAL=500ms
    WORKER_DB_PROBE_TIMEOUT=2s)

code() { curl -s -o /dev/null --max-time 30 -w '%{http_code}' "$1"; }
ready() { [ "$(code "http://$1/readyz")" = 200 ]; }
not_ready() { [ "$(code "http://$1/readyz")" = 503 ]; }
value() {
    curl -fsS --max-time 30 "http://$1/metrics" | awk -v k="$2" '$1 == k { print $2 }'
}

# produce NAME SECONDS: RATE events a second for SECONDS, ids NAME-N; every
# id lands in $T/ids
produce() {
    local name=$1 until=$((SECONDS + $2)) n=0 k
    while ((SECONDS < until)); do
        for ((k = 0; k < RATE; k++)); do
            printf '{"id":"%s-%d","app":"hang","type":"t.x","payload":{"k":"%s-%d"}}\n' \
                "$name" "$n" "$name" "$n"
            echo "$name-$n" >>"$T/ids"
            n=$((n + 1))
        done >"$T/batch.$name"
        "$BIN/webhook-produce" --quiet <"$T/batch.$name" || echo "produce failed" >&2
        sleep 1 # pacing, not a wait for a condition
    done
}

# sample NAME ADDR: GET /metrics and /healthz every 0.2 s until
# $T/NAME.stop exists; one "status seconds" line per request
sample() {
    local name=$1 a=$2
    while [ ! -e "$T/$name.stop" ]; do
        curl -s -o /dev/null --max-time 60 -w '%{http_code} %{time_total}\n' \
            "http://$a/metrics" >>"$T/$name.metrics" || echo "000 60" >>"$T/$name.metrics"
        curl -s -o /dev/null --max-time 60 -w '%{http_code} %{time_total}\n' \
            "http://$a/healthz" >>"$T/$name.healthz" || echo "000 60" >>"$T/$name.healthz"
        sleep 0.2
    done
}
worst() { awk 'BEGIN { m = 0 } $2 > m { m = $2 } END { print m }' "$1"; }
all_200() { [ -s "$1" ] && ! awk '$1 != 200 { bad = 1 } END { exit !bad }' "$1"; }
below() { awk -v v="$1" -v n="$2" 'BEGIN { exit !(v + 0 < n + 0) }'; }

# every id in $T/ids reached every endpoint
all_delivered() {
    python3 - "$T/ids" "$T/recv.jsonl" "$ENDPOINTS" <<'PY'
import base64, json, sys
ids = set(open(sys.argv[1]).read().split())
got = set()
for line in open(sys.argv[2]):
    try:
        r = json.loads(line)
        k = json.loads(base64.b64decode(r["body_b64"]))["k"]
    except (ValueError, KeyError):
        continue
    got.add((k, r["path"]))
want = {(i, "/e%d" % e) for i in ids for e in range(int(sys.argv[3]))}
sys.exit(1 if want - got else 0)
PY
}
recorded() {
    local want
    want=$(($(sort -u "$T/ids" | wc -l) * ENDPOINTS))
    [ "$(sql "SELECT count(DISTINCT delivery_id) FROM webhooks.delivery_log
              WHERE outcome = 'succeeded'")" -ge "$want" ]
}

# ---- 1. one worker, Postgres frozen for 30 s ----------------------------
start_worker w1 "${WORKER_ENV[@]}"
check "the worker serves its probes" wait_for 20 has_addr w1
A1=$(addr w1)
check "the worker is ready" wait_for 30 ready "$A1"
produce before 2
check "events before the hang are delivered" wait_for 60 all_delivered

sample one "$A1" &
sampler=$!
PIDS+=($sampler)
produce during 30 &
producer=$!
PIDS+=($producer)
sleep 1
pg_freeze
frozen_at=$SECONDS
log "Postgres frozen (pids $(pg_pids | tr '\n' ' '))"
at_freeze=$(received recv)
check "/readyz turns not ready within 8 s of the freeze" wait_for 8 not_ready "$A1"
log "not ready after $((SECONDS - frozen_at)) s: $(curl -s --max-time 5 "http://$A1/readyz")"
check "/readyz says the database does not answer" \
    sh -c "curl -s --max-time 5 'http://$A1/readyz' | grep -q 'database'"
check "webhook_worker_database_up is 0 during the hang" \
    test "$(value "$A1" webhook_worker_database_up)" = 0
check "webhook_worker_ready is 0 during the hang" \
    test "$(value "$A1" webhook_worker_ready)" = 0
while ((SECONDS - frozen_at < 30)); do
    sleep 1 # the hang lasts 30 s; the sampler measures meanwhile
done
during=$(($(received recv) - at_freeze))
pg_thaw
touch "$T/one.stop"
wait "$producer" "$sampler" || true # the last request may still wait
log "deliveries during the 30 s hang: $during"
check "deliveries kept reaching the receiver during the hang ($during)" \
    test "$during" -ge $((RATE * 20 * ENDPOINTS / 2))
w=$(worst "$T/one.metrics")
log "worst /metrics response during phase 1: ${w} s ($(wc -l <"$T/one.metrics") requests)"
check "/metrics answered every request during the hang" all_200 "$T/one.metrics"
check "/healthz answered every request during the hang" all_200 "$T/one.healthz"
check "worst /metrics response below 1 s (${w} s)" below "$w" 1
check "/readyz is ready again after the resume" wait_for 30 ready "$A1"
produce after 2
check "every event reached every endpoint" wait_for 90 all_delivered
check "every delivery is recorded in the history" wait_for 60 recorded

# ---- 2. two workers, one killed while Postgres hangs ---------------------
start_worker w2 "${WORKER_ENV[@]}"
taken() { grep -q "delivery: partition .* taken" "$T/w2.log"; }
check "a second worker takes partitions" wait_for 60 taken
check "the second worker is ready" wait_for 30 ready "$(addr w2)"
produce settle 2
check "events after the second worker joined are delivered" wait_for 60 all_delivered
assigned_before=$(grep -c "delivery: assigned" "$T/w1.log" || true)
taken_before=$(grep -c "delivery: partition .* taken" "$T/w1.log" || true)

sample two "$A1" &
sampler=$!
PIDS+=($sampler)
produce hang2 25 &
producer=$!
PIDS+=($producer)
sleep 1
pg_freeze
frozen_at=$SECONDS
sleep 2 # into the hang
kill -9 "${WORKER_PID[w2]}"
log "killed w2 with SIGKILL during the hang"
more_assigned() { [ "$(grep -c "delivery: assigned" "$T/w1.log" || true)" -gt "$assigned_before" ]; }
check "the survivor is assigned the dead worker's partitions during the hang" \
    wait_for 20 more_assigned
took_over_at=$SECONDS
sleep 1 # let the takeover begin
at_takeover=$(received recv)
while ((SECONDS - frozen_at < 25)); do
    sleep 1
done
during=$(($(received recv) - at_takeover))
log "takeover began $((took_over_at - frozen_at)) s into the hang; deliveries after it: $during"
pg_thaw
touch "$T/two.stop"
wait "$producer" "$sampler" || true
w=$(worst "$T/two.metrics")
log "worst /metrics response during phase 2: ${w} s ($(wc -l <"$T/two.metrics") requests)"
check "the survivor answered every /metrics request" all_200 "$T/two.metrics"
check "the survivor's worst /metrics response below 1 s (${w} s)" below "$w" 1
check "the survivor kept delivering while it took over ($during)" test "$during" -gt 0
took() { [ "$(grep -c "delivery: partition .* taken" "$T/w1.log" || true)" -gt "$taken_before" ]; }
check "the survivor completes the takeover after the resume" wait_for 60 took
check "every event reached every endpoint after the takeover" wait_for 120 all_delivered
check "every delivery is recorded after the takeover" wait_for 60 recorded
check "the survivor is ready" wait_for 30 ready "$A1"

# ---- 3. the scheduler, Postgres frozen --------------------------------
# a claim on the frozen server fails after 2 s + 1 s of grace; reconnects
# then fail after 2 s each
env SCHEDULER_METRICS_LISTEN=127.0.0.1:0 DATABASE_STATEMENT_TIMEOUT=2s \
    DATABASE_CONNECT_TIMEOUT=2s SCHEDULER_DB_PROBE_TIMEOUT=1s \
    "$BIN/webhook-scheduler" >"$T/s1.log" 2>&1 &
PIDS+=($!)
check "the scheduler serves its probes" wait_for 20 has_addr s1
S1=$(addr s1)
check "the scheduler is ready" wait_for 30 ready "$S1"
check "webhook_scheduler_database_up is 1" \
    test "$(value "$S1" webhook_scheduler_database_up)" = 1
failures=$(value "$S1" webhook_scheduler_database_failures_total)
pg_freeze
frozen_at=$SECONDS
log "Postgres frozen for the scheduler"
check "the scheduler's /readyz turns not ready within 8 s of the freeze" \
    wait_for 8 not_ready "$S1"
reason=$(curl -s --max-time 10 "http://$S1/readyz")
log "scheduler not ready after $((SECONDS - frozen_at)) s: $reason"
check "its /readyz says Postgres does not answer" \
    test "${reason#not ready: database: }" != "$reason"
# every answer until 7 s into the hang (past a reconnect that timed out)
stays_not_ready() {
    while ((SECONDS - frozen_at < 7)); do
        not_ready "$S1" || return 1
        sleep 0.2 # sampling the hang, not waiting for a condition
    done
}
check "it stays not ready while Postgres is frozen" stays_not_ready
check "webhook_scheduler_database_up is 0 during the hang" \
    test "$(value "$S1" webhook_scheduler_database_up)" = 0
check "webhook_scheduler_database_failures_total counts the claim and a reconnect" \
    test "$(value "$S1" webhook_scheduler_database_failures_total)" -ge $((failures + 2))
check "the scheduler's /healthz answers during the hang" \
    test "$(code "http://$S1/healthz")" = 200
pg_thaw
check "the scheduler's /readyz is ready again after the resume" \
    wait_for 30 ready "$S1"
check "webhook_scheduler_database_up is 1 again" \
    test "$(value "$S1" webhook_scheduler_database_up)" = 1
finish
