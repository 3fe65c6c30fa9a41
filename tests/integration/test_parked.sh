#!/usr/bin/env bash
# test_parked.sh - parked deliveries of ordered lanes in the worst cases:
#
# 1. Unreadable parked rows. A lane is blocked (its endpoint answers
#    503), the five deliveries behind its head are parked, and two parked
#    rows' bytes are overwritten with garbage: one in the middle and the
#    last one, so the lane reopens right after dealing with one. When the
#    head gets through, the lane drains: each unreadable row is
#    dead-lettered (reason UNDECODABLE, keyed by the endpoint, its position
#    in the detail), its row leaves webhooks.parked, the deliveries around
#    them arrive in order, and the lane row is deleted (open again).
# 2. Many lanes draining at once stay within WORKER_DRAIN_MAX parked
#    deliveries in memory: 30 lanes spill at once (WORKER_LANE_QUEUE_MAX=1,
#    a slow endpoint) and drain with a budget of 4; lanes wait for it
#    (webhook_worker_drain_waits_total > 0), the most ever loaded
#    (webhook_worker_drain_loaded_peak) is at most 4, and every endpoint
#    receives all of its deliveries in order.
# 3. A worker that takes over a partition with many draining lanes: 12
#    lanes spill, their worker is killed with SIGKILL mid-drain, and the
#    next worker (WORKER_DRAIN_MAX=4) loads them all as draining at once;
#    they wait for the budget, at most 4 are loaded at a time, and every
#    endpoint still gets every delivery in order.
# 4. A spilled lane changes owner by a graceful restart: its worker held
#    deliveries in memory (the lane queue) below the parked ones when it
#    got SIGTERM; the next worker's first fetches fail (the broker answers
#    them with NOT_LEADER_FOR_PARTITION), so the partition is taken and its
#    parked rows could be loaded well before those lower offsets are
#    consumed again. It sends no parked delivery before every earlier
#    message of the partition was placed: the endpoint gets every
#    delivery, first receipts in order.
# 5. The same with SIGKILL instead of SIGTERM (and the session timeout
#    before the next worker gets the partition).
. "$(dirname "$0")/../lib.sh"

BROKER_CONTROL_PORT=$(free_port)
stack_up 1
secret=$(new_secret)
"$BIN/webhook-scheduler" >"$T/scheduler.log" 2>&1 &
PIDS+=($!)

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
start_worker w1 WORKER_BREAKER_FAILURES=0 WORKER_METRICS_LISTEN=127.0.0.1:0
check "w1 serves metrics" wait_for 20 has_addr w1
for i in 0 1 2 3 4 5; do
    printf '{"id":"p%d","app":"p","type":"t.x","payload":{"seq":%d}}\n' "$i" "$i"
done | "$BIN/webhook-produce" --quiet
parked_n() { sql "SELECT count(*) FROM webhooks.parked WHERE endpoint_id = '$ep'"; }
five_parked() { [ "$(parked_n)" -eq 5 ]; }
check "the lane is blocked with 5 deliveries parked" wait_for 30 five_parked
check "the lane row names the head" \
    test "$(sql "SELECT count(*) FROM webhooks.lanes WHERE endpoint_id = '$ep' AND head_delivery_id IS NOT NULL")" -eq 1
# the third delivery (seq 2) and the last (seq 5) get unreadable bytes
pos=$(sql "SELECT position FROM webhooks.parked WHERE endpoint_id = '$ep' ORDER BY position OFFSET 1 LIMIT 1")
last=$(sql "SELECT max(position) FROM webhooks.parked WHERE endpoint_id = '$ep'")
sql "UPDATE webhooks.parked SET delivery = '\\x00ff' WHERE endpoint_id = '$ep' AND position = $pos" >/dev/null
sql "UPDATE webhooks.parked SET delivery = 'not a delivery' WHERE endpoint_id = '$ep' AND position = $last" >/dev/null
check "two parked rows are corrupt" \
    test "$(sql "SELECT count(*) FROM webhooks.parked WHERE endpoint_id = '$ep' AND delivery IN ('\\x00ff', 'not a delivery')")" -eq 2
# the endpoint recovers: a receiver that answers 204 on the same port
kill "$down_pid"
wait "$down_pid" 2>/dev/null || true
start_receiver up --listen "127.0.0.1:$port" --secret "$secret"
four_ok() { [ "$(seqs up | wc -w)" -ge 4 ]; }
check "the four readable deliveries arrive" wait_for 40 four_ok
check "in order, without the unreadable ones" test "$(seqs up)" = "0 1 3 4"
lane_gone() { [ "$(sql "SELECT count(*) FROM webhooks.lanes WHERE endpoint_id = '$ep'")" -eq 0 ]; }
check "the lane row is gone (open again)" wait_for 20 lane_gone
check "nothing is left in webhooks.parked" test "$(parked_n)" -eq 0
dead_keyed() { # dead_keyed KEY: dead letters keyed KEY
    kcat -b "$KAFKA_BROKERS" -C -t webhook.dead -o beginning -e -q -f '%k\n' 2>/dev/null |
        grep -a -c "^$1\$" || true
}
has_dead() { [ "$(dead_keyed "$ep")" -ge 1 ]; }
two_dead() { [ "$(dead_keyed "$ep")" -ge 2 ]; }
check "dead letters keyed by the endpoint are in webhook.dead" wait_for 20 two_dead
check "exactly two" test "$(dead_keyed "$ep")" -eq 2
dead_text() { kcat -b "$KAFKA_BROKERS" -C -t webhook.dead -o beginning -e -q 2>/dev/null; }
dead_text >"$T/dead.bin"
check "they say which parked rows were unreadable" \
    bash -c 'grep -a -q "parked delivery at position $1 of endpoint $3 is unreadable" "$4" &&
             grep -a -q "parked delivery at position $2 of endpoint $3 is unreadable" "$4"' _ \
    "$pos" "$last" "$ep" "$T/dead.bin"
check "the bytes of the row travel as the raw message" grep -a -q "not a delivery" "$T/dead.bin"
check "counted in webhook_worker_parked_unreadable_total" \
    test "$(metric w1 webhook_worker_parked_unreadable_total)" = 2
check "the worker logged that it dead-lettered them" \
    bash -c 'grep -q "parked delivery at position $1 of endpoint $3 is unreadable (.*); it is dead-lettered" "$4" &&
             grep -q "parked delivery at position $2 of endpoint $3 is unreadable (.*); it is dead-lettered" "$4"' _ \
    "$pos" "$last" "$ep" "$T/w1.log"
more_ok() { [ "$(seqs up | wc -w)" -ge 5 ]; }
"$BIN/webhook-produce" --quiet --app p --type t.x --id p6 --payload '{"seq":6}'
check "the open lane delivers what comes next" wait_for 20 more_ok
check "still in order" test "$(seqs up)" = "0 1 3 4 6"
stop_worker() {
    kill "${WORKER_PID[$1]}"
    wait "${WORKER_PID[$1]}" 2>/dev/null || true
}
stop_worker w1

# ---- 2. many draining lanes, one small budget -------------------------------

rc=0
WORKER_DRAIN_MAX=0 "$BIN/webhook-worker" >"$T/bad.log" 2>&1 || rc=$?
check "WORKER_DRAIN_MAX=0 is refused at start-up" test "$rc" -ne 0
check "naming the setting" grep -q "drain-max\|WORKER_DRAIN_MAX" "$T/bad.log"
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
stop_worker w2

# ---- 3. taking over many draining lanes -------------------------------------

N3=12
EVENTS3=8
start_receiver slow3 --secret "$secret" --delay-ms 300
for i in $(seq 1 $N3); do
    "$BIN/webhookctl" endpoint add --app n --events 'n.*' --secret "$secret" \
        --url "http://127.0.0.1:$(cat "$T/slow3.port")/n$i" >/dev/null
done
start_worker w3 WORKER_LANE_QUEUE_MAX=1
for i in $(seq 0 $((EVENTS3 - 1))); do
    printf '{"id":"n%d","app":"n","type":"n.x","payload":{"seq":%d}}\n' "$i" "$i"
done | "$BIN/webhook-produce" --quiet
n_lanes="SELECT count(*) FROM webhooks.lanes l JOIN webhooks.endpoints e ON e.id = l.endpoint_id WHERE e.app = 'n'"
n_parked="SELECT count(*) FROM webhooks.parked p JOIN webhooks.endpoints e ON e.id = p.endpoint_id WHERE e.app = 'n'"
spilled() { [ "$(sql "$n_lanes")" -eq "$N3" ] && [ "$(sql "$n_parked")" -ge $((N3 * 4)) ]; }
check "all $N3 lanes spilled, with parked deliveries" wait_for 30 spilled
kill -9 "${WORKER_PID[w3]}"
wait "${WORKER_PID[w3]}" 2>/dev/null || true
log "w3 killed with $(sql "$n_parked") deliveries parked in $(sql "$n_lanes") lanes"
start_worker w4 WORKER_LANE_QUEUE_MAX=1 WORKER_DRAIN_MAX=4 \
    WORKER_METRICS_LISTEN=127.0.0.1:0
check "w4 serves metrics" wait_for 20 has_addr w4
taken() { grep -q "partition 0 taken (epoch [0-9]*, [1-9][0-9]* lanes not open)" "$T/w4.log"; }
check "w4 takes the partition with its draining lanes" wait_for 40 taken
all_first() {
    "$BIN/webhook-ordercheck" --record "$T/slow3.jsonl" --expect "$EVENTS3" \
        --endpoints "$N3" >/dev/null 2>&1
}
check "every endpoint gets every delivery, in order" wait_for 60 all_first
n3_lanes_gone() { [ "$(sql "$n_lanes")" -eq 0 ]; }
check "every lane is open again" wait_for 30 n3_lanes_gone
waits=$(metric w4 webhook_worker_drain_waits_total)
peak=$(metric w4 webhook_worker_drain_loaded_peak)
log "w4: drain waits $waits, peak loaded $peak"
check "w4's lanes waited for the drain budget" test "${waits:-0}" -gt 0
check "w4 never loaded more than 4 parked deliveries at once" \
    test -n "$peak" -a "${peak:-99}" -le 4 -a "${peak:-0}" -ge 1
"$BIN/webhook-ordercheck" --record "$T/slow3.jsonl" --expect "$EVENTS3" --endpoints "$N3" | sed 's/^/# /'
stop_all_workers() {
    local w
    for w in "$@"; do
        kill "${WORKER_PID[$w]}" 2>/dev/null || true
        wait "${WORKER_PID[$w]}" 2>/dev/null || true
    done
}
stop_all_workers w4

# ---- 4. and 5. a spilled lane changes owner: SIGTERM, then SIGKILL ---------

# spilled_handover N SIGNAL: an endpoint answering in 100 ms gets 120
# events on a worker whose lane spills past 30; once some arrived its
# worker gets SIGNAL, the broker fails the next fetches and the next
# worker must send every delivery, first receipts in order.
EVENTS4=120
spilled_handover() {
    local n=$1 sig=$2 ep pid
    start_receiver "slow$n" --secret "$secret" --delay-ms 100
    ep=$("$BIN/webhookctl" endpoint add --app "o$n" --events 'o.*' --secret "$secret" \
        --url "http://127.0.0.1:$(cat "$T/slow$n.port")/o")
    start_worker "w$n-a" WORKER_LANE_QUEUE_MAX=30 WORKER_SHUTDOWN_TIMEOUT=1s
    for i in $(seq 0 $((EVENTS4 - 1))); do
        printf '{"id":"o%d","app":"o%s","type":"o.x","payload":{"seq":%d}}\n' "$i" "$n" "$i"
    done | "$BIN/webhook-produce" --quiet
    o_parked="SELECT count(*) FROM webhooks.parked WHERE endpoint_id = '$ep'"
    spilled4() { [ "$(sql "$o_parked")" -ge $((EVENTS4 - 31)) ]; }
    check "case $n: the lane spilled: at least $((EVENTS4 - 31)) deliveries parked" \
        wait_for 30 spilled4
    check "case $n: some deliveries were made before the $sig" wait_for 20 got_at_least "slow$n" 3
    pid=${WORKER_PID[w$n-a]}
    kill "-$sig" "$pid"
    wait "$pid" 2>/dev/null || true
    log "case $n: w$n-a stopped by SIG$sig after $(received "slow$n") receipts, $(sql "$o_parked") parked"
    check "case $n: the broker fails the next fetches" \
        broker_ctl push-errors Fetch 8 NOT_LEADER_FOR_PARTITION
    start_worker "w$n-b"
    all4() {
        "$BIN/webhook-ordercheck" --record "$T/slow$n.jsonl" --expect "$EVENTS4" \
            --endpoints 1 >/dev/null 2>&1
    }
    check "case $n: the next owner sends every delivery, first receipts in order" \
        wait_for 120 all4
    "$BIN/webhook-ordercheck" --record "$T/slow$n.jsonl" --expect "$EVENTS4" --endpoints 1 | sed 's/^/# /'
    check "case $n: and the lane is open again" \
        wait_for 30 test "$(sql "SELECT count(*) FROM webhooks.lanes WHERE endpoint_id = '$ep'")" -eq 0
    stop_worker "w$n-b"
}
spilled_handover 4 TERM
spilled_handover 5 KILL

finish
