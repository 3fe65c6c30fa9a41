#!/usr/bin/env bash
# test_parked.sh - parked deliveries of ordered lanes in the worst cases:
#
# 1. An unreadable parked row. A lane is blocked (its endpoint answers
#    503), the deliveries behind its head are parked, and one parked row's
#    bytes are overwritten with garbage. When the head gets through, the
#    lane drains: the unreadable row is dead-lettered (reason UNDECODABLE,
#    keyed by the endpoint, its position in the detail), its row leaves
#    webhooks.parked, the deliveries after it arrive in order, and the lane
#    row is deleted (the lane is open again).
# 2. Many lanes draining at once stay within WORKER_DRAIN_MAX parked
#    deliveries in memory: 30 lanes spill at once (WORKER_LANE_QUEUE_MAX=1,
#    a slow endpoint) and drain with a budget of 4; lanes wait for it
#    (webhook_worker_drain_waits_total > 0), the most ever loaded
#    (webhook_worker_drain_loaded_peak) is at most 4, and every endpoint
#    receives all of its deliveries in order.
. "$(dirname "$0")/../lib.sh"

stack_up 1
secret=$(new_secret)
"$BIN/webhook-scheduler" >"$T/scheduler.log" 2>&1 &
PIDS+=($!)

addr() {
    sed -n 's|.*serving /metrics, /healthz and /readyz on http://\([^ ]*\).*|\1|p' \
        "$T/$1.log" | tail -1
}
has_addr() { [ -n "$(addr "$1")" ]; }
metric() { # metric WORKER SERIES
    curl -fsS "http://$(addr "$1")/metrics" | awk -v k="$2" '$1 == k { print $2 }'
}
# seqs NAME: the payload seq of each 2xx receipt, first per webhook-id, in
# receipt order, space separated.
seqs() {
    python3 - "$T/$1.jsonl" <<'PY'
import base64, json, sys
seen, out = set(), []
for line in open(sys.argv[1]):
    r = json.loads(line)
    if not 200 <= r["status"] <= 299 or r["webhook_id"] in seen:
        continue
    seen.add(r["webhook_id"])
    out.append(str(json.loads(base64.b64decode(r["body_b64"]))["seq"]))
print(" ".join(out))
PY
}

# ---- 1. an unreadable parked row --------------------------------------------

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
start_receiver down --listen "127.0.0.1:$port" --secret "$secret" --status 503
down_pid=${PIDS[-1]}
ep=$("$BIN/webhookctl" endpoint add --app p --events 't.*' --secret "$secret" \
    --url "http://127.0.0.1:$port/p" --retry-schedule "$(printf '1s,%.0s' $(seq 29))1s")
start_worker w1 WORKER_BREAKER_FAILURES=0
for i in 0 1 2 3 4 5; do
    printf '{"id":"p%d","app":"p","type":"t.x","payload":{"seq":%d}}\n' "$i" "$i"
done | "$BIN/webhook-produce" --quiet
parked_n() { sql "SELECT count(*) FROM webhooks.parked WHERE endpoint_id = '$ep'"; }
five_parked() { [ "$(parked_n)" -eq 5 ]; }
check "the lane is blocked with 5 deliveries parked" wait_for 30 five_parked
check "the lane row names the head" \
    test "$(sql "SELECT count(*) FROM webhooks.lanes WHERE endpoint_id = '$ep' AND head_delivery_id IS NOT NULL")" -eq 1
# the third delivery (seq 2) gets unreadable bytes
pos=$(sql "SELECT position FROM webhooks.parked WHERE endpoint_id = '$ep' ORDER BY position OFFSET 1 LIMIT 1")
sql "UPDATE webhooks.parked SET delivery = '\\x00ff' WHERE endpoint_id = '$ep' AND position = $pos" >/dev/null
check "one parked row is corrupt" \
    test "$(sql "SELECT count(*) FROM webhooks.parked WHERE endpoint_id = '$ep' AND delivery = '\\x00ff'")" -eq 1
# the endpoint recovers: a receiver that answers 204 on the same port
kill "$down_pid"
wait "$down_pid" 2>/dev/null || true
start_receiver up --listen "127.0.0.1:$port" --secret "$secret"
five_ok() { [ "$(seqs up | wc -w)" -ge 5 ]; }
check "the five readable deliveries arrive" wait_for 40 five_ok
check "in order, without the unreadable one" test "$(seqs up)" = "0 1 3 4 5"
lane_gone() { [ "$(sql "SELECT count(*) FROM webhooks.lanes WHERE endpoint_id = '$ep'")" -eq 0 ]; }
check "the lane row is gone (open again)" wait_for 20 lane_gone
check "nothing is left in webhooks.parked" test "$(parked_n)" -eq 0
dead_keyed() { # dead_keyed KEY: dead letters keyed KEY
    kcat -b "$KAFKA_BROKERS" -C -t webhook.dead -o beginning -e -q -f '%k\n' 2>/dev/null |
        grep -a -c "^$1\$" || true
}
has_dead() { [ "$(dead_keyed "$ep")" -ge 1 ]; }
check "a dead letter keyed by the endpoint is in webhook.dead" wait_for 20 has_dead
check "exactly one" test "$(dead_keyed "$ep")" -eq 1
dead_text() { kcat -b "$KAFKA_BROKERS" -C -t webhook.dead -o beginning -e -q 2>/dev/null; }
check "it says which parked row was unreadable" \
    grep -a -q "parked delivery at position $pos of endpoint $ep is unreadable" <(dead_text)
check "the worker logged that it dead-lettered it" \
    grep -q "parked delivery at position $pos of endpoint $ep is unreadable (.*); it is dead-lettered" "$T/w1.log"
more_ok() { [ "$(seqs up | wc -w)" -ge 6 ]; }
"$BIN/webhook-produce" --quiet --app p --type t.x --id p6 --payload '{"seq":6}'
check "the open lane delivers what comes next" wait_for 20 more_ok
check "still in order" test "$(seqs up)" = "0 1 3 4 5 6"
stop_worker() {
    kill "${WORKER_PID[$1]}"
    wait "${WORKER_PID[$1]}" 2>/dev/null || true
}
stop_worker w1

# ---- 2. many draining lanes, one small budget -------------------------------

N=30
EVENTS=12
start_receiver slow --secret "$secret" --delay-ms 300
for i in $(seq 1 $N); do
    "$BIN/webhookctl" endpoint add --app m --events 'm.*' --secret "$secret" \
        --url "http://127.0.0.1:$(cat "$T/slow.port")/m$i" >/dev/null
done
start_worker w2 WORKER_LANE_QUEUE_MAX=1 WORKER_DRAIN_MAX=4 \
    WORKER_METRICS_LISTEN=127.0.0.1:0
check "w2 serves metrics" wait_for 20 has_addr w2
for i in $(seq 0 $((EVENTS - 1))); do
    printf '{"id":"m%d","app":"m","type":"m.x","payload":{"seq":%d}}\n' "$i" "$i"
done | "$BIN/webhook-produce" --quiet
all_in() { [ "$(received slow)" -ge $((N * EVENTS)) ]; }
check "all $((N * EVENTS)) deliveries arrive" wait_for 90 all_in
m_lanes="SELECT count(*) FROM webhooks.lanes l JOIN webhooks.endpoints e ON e.id = l.endpoint_id WHERE e.app = 'm'"
no_lanes() { [ "$(sql "$m_lanes")" -eq 0 ]; }
check "every lane is open again" wait_for 30 no_lanes
check "nothing is left parked" test "$(sql "SELECT count(*) FROM webhooks.parked p JOIN webhooks.endpoints e ON e.id = p.endpoint_id WHERE e.app = 'm'")" -eq 0
parked=$(metric w2 webhook_worker_deliveries_parked_total)
waits=$(metric w2 webhook_worker_drain_waits_total)
peak=$(metric w2 webhook_worker_drain_loaded_peak)
loaded=$(metric w2 webhook_worker_drain_loaded)
log "parked $parked, drain waits $waits, peak loaded $peak, loaded now $loaded"
check "lanes spilled and parked deliveries" test "${parked:-0}" -ge "$N"
check "lanes waited for the drain budget" test "${waits:-0}" -gt 0
check "at most WORKER_DRAIN_MAX parked deliveries were loaded at once" \
    test -n "$peak" -a "${peak:-99}" -le 4 -a "${peak:-0}" -ge 1
check "none is loaded once the drains are done" test "${loaded:-1}" -eq 0
check "every endpoint got its deliveries in order" \
    "$BIN/webhook-ordercheck" --record "$T/slow.jsonl" --expect "$EVENTS" --endpoints "$N"
finish
