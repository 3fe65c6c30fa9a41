#!/usr/bin/env bash
# test_partition.sh - every producer of webhook.deliveries picks the
# partition itself, so a retry or a replay reaches its endpoint's lane
# whatever partitioner KAFKA_EXTRA configures:
# 1. webhook-partcheck against mock clusters of 3 and 16 partitions: for
#    2,000 endpoint-like keys the partition the Kafka adapter computes is
#    the one librdkafka's default partitioner picks by key, and sends to
#    it from a producer configured with partitioner=murmur2 land there
#    (while that producer's own by-key choice differs for most keys).
# 2. Two workers own one deliveries partition each (2 partitions);
#    webhook-scheduler and webhookctl run with
#    KAFKA_EXTRA=partitioner=murmur2, and the endpoints are picked so that
#    murmur2 maps their ids to the other partition than CRC32 does:
#    a. an ordered endpoint failing every delivery's first request: each
#       retry row carries its lane's partition, every retry arrives on it,
#       the lane unblocks each time and all deliveries arrive in order;
#    b. a replay sent while the endpoint's lane is blocked goes to the
#       lane's partition and is parked behind the blocked head (a retry
#       row without a partition, as written before
#       sql/009_retry_partition.sql, goes to the endpoint id's partition);
#       with the lane open, a replay goes to the endpoint id's partition;
#    c. a replay goes to the partition of the endpoint's webhooks.lanes
#       row when there is one, even where the id maps elsewhere;
#    d. a retry row naming a partition the topic does not have goes to the
#       endpoint id's partition (logged) and its lane unblocks.
. "$(dirname "$0")/../lib.sh"

# ---- 1. the computed partition is librdkafka's by-key choice -------------------

for n in 3 16; do
    "$BIN/webhook-devbroker" --port 0 --partitions "$n" --topics partcheck \
        --ready-file "$T/pc$n.env" >"$T/pc$n-broker.out" 2>"$T/pc$n-broker.log" &
    PIDS+=($!)
    check "a mock cluster with $n partitions started" wait_for 20 test -s "$T/pc$n.env"
    brokers=$(sed -n 's/^KAFKA_BROKERS=//p' "$T/pc$n.env")
    rc=0
    "$BIN/webhook-partcheck" --brokers "$brokers" --topic partcheck --keys 2000 \
        >"$T/pc$n.out" 2>"$T/pc$n.log" || rc=$?
    log "$(cat "$T/pc$n.out")"
    check "partcheck with $n partitions exits 0" test "$rc" -eq 0
    check "$n partitions: every key produced by key is on the computed partition" \
        grep -q "by key 2000/2000 on the computed partition" "$T/pc$n.out"
    check "$n partitions: every explicit send under murmur2 is on its partition" \
        grep -q "explicit under murmur2 2000/2000" "$T/pc$n.out"
    check "$n partitions: murmur2 by key maps most keys elsewhere (the check has teeth)" \
        python3 -c 'import re, sys; m = re.search(r"murmur2 by key elsewhere (\d+)/2000", open(sys.argv[1]).read()); sys.exit(0 if m and int(m.group(1)) > 500 else 1)' "$T/pc$n.out"
    check "$n partitions: every partition is used" \
        grep -q "partitions used $n/$n" "$T/pc$n.out"
done

# ---- 2. retries and replays on their lane's partition --------------------------

stack_up 2
secret=$(new_secret)
start_receiver a --secret "$secret" --fail-first 1
start_receiver b --secret "$secret" --fail-first 1
start_receiver c --secret "$secret"
start_receiver d --secret "$secret" --fail-first 1

# parts KEY: the partition of 2 that CRC32 (librdkafka's default, the
# fan-out's) and murmur2 (Java's, librdkafka's partitioner=murmur2) map KEY
# to, "CRC MURMUR"
parts() {
    python3 - "$1" <<'PY'
import sys, zlib
def murmur2(data):
    m = 0x5bd1e995
    h = (0x9747b28c ^ len(data)) & 0xffffffff
    for i in range(len(data) // 4):
        k = int.from_bytes(data[4 * i:4 * i + 4], "little")
        k = (k * m) & 0xffffffff
        k ^= k >> 24
        k = (k * m) & 0xffffffff
        h = ((h * m) & 0xffffffff) ^ k
    rest, at = len(data) % 4, len(data) & ~3
    if rest == 3:
        h ^= data[at + 2] << 16
    if rest >= 2:
        h ^= data[at + 1] << 8
    if rest >= 1:
        h = ((h ^ data[at]) * m) & 0xffffffff
    h ^= h >> 13
    h = (h * m) & 0xffffffff
    h ^= h >> 15
    return h
k = sys.argv[1].encode()
print(zlib.crc32(k) % 2, (murmur2(k) & 0x7fffffff) % 2)
PY
}

# pick NAME SCHEDULE: adds ordered endpoints (each its own app NAME-i) to
# receiver NAME until one's id maps to different partitions under CRC32
# and murmur2; sets EP, APP, PART (its lane's partition) and MURMUR.
pick() {
    local i id crc mur
    for i in $(seq 1 40); do
        id=$("$BIN/webhookctl" endpoint add --app "$1-$i" --events '*' --secret "$secret" \
            --url "http://127.0.0.1:$(cat "$T/$1.port")/$1" --retry-schedule "$2")
        read -r crc mur < <(parts "$id")
        if [ "$crc" != "$mur" ]; then
            EP=$id APP=$1-$i PART=$crc MURMUR=$mur
            log "endpoint $1: $EP, lane partition $PART, murmur2 partition $MURMUR"
            return 0
        fi
    done
    return 1
}
pick a 2s
EP_A=$EP APP_A=$APP P_A=$PART
pick b 6s
EP_B=$EP APP_B=$APP P_B=$PART
pick c 1s
EP_C=$EP APP_C=$APP P_C=$PART M_C=$MURMUR
pick d 6s
EP_D=$EP APP_D=$APP P_D=$PART

start_worker w1
start_worker w2
two_owners() {
    [ "$(sql "SELECT count(DISTINCT worker) FROM webhooks.lane_owners WHERE topic = 'webhook.deliveries'")" = 2 ]
}
check "the two workers own one deliveries partition each" wait_for 60 two_owners
KAFKA_EXTRA=partitioner=murmur2 "$BIN/webhook-scheduler" >"$T/scheduler.log" 2>&1 &
PIDS+=($!)

publish() { # publish APP ID
    "$BIN/webhook-produce" --quiet --app "$1" --type t.x --id "$2" --payload "{\"id\":\"$2\"}"
}
# ok_ids RECEIVER: the payload id of every 2xx receipt, in receipt order
ok_ids() {
    python3 - "$T/$1.jsonl" <<'PY'
import base64, json, sys
out = []
try:
    for line in open(sys.argv[1]):
        r = json.loads(line)
        if 200 <= r["status"] <= 299:
            out.append(json.loads(base64.b64decode(r["body_b64"]))["id"])
except FileNotFoundError:
    pass
print(" ".join(out))
PY
}
ok_ids_are() { [ "$(ok_ids "$1")" = "$2" ]; }
# on_partitions KEY: "PARTITION:COUNT ..." of the deliveries messages keyed KEY
on_partitions() {
    kcat -C -b "$KAFKA_BROKERS" -t webhook.deliveries -o beginning -e -q -f '%k %p\n' 2>/dev/null |
        awk -v k="$1" '$1 == k { n[$2]++ } END { for (p in n) printf "%s:%d ", p, n[p] }'
}
# only_on KEY PARTITION MIN: every deliveries message keyed KEY is on
# PARTITION, and there are at least MIN
only_on() {
    local got
    got=$(on_partitions "$1")
    log "messages keyed $1: $got"
    [[ $got =~ ^$2:([0-9]+)\ $ ]] && [ "${BASH_REMATCH[1]}" -ge "$3" ]
}
lane_open() { [ "$(sql "SELECT count(*) FROM webhooks.lanes WHERE endpoint_id = '$1'")" -eq 0 ]; }
lane_blocked() {
    [ "$(sql "SELECT count(*) FROM webhooks.lanes WHERE endpoint_id = '$1' AND head_delivery_id IS NOT NULL")" -eq 1 ]
}
succeeded() { # succeeded EVENT ENDPOINT
    [ "$(sql "SELECT state FROM webhooks.delivery_status WHERE event_id = '$1' AND endpoint_id = '$2'")" = succeeded ]
}
delivery_of() { sql "SELECT DISTINCT delivery_id FROM webhooks.delivery_log WHERE event_id = '$1' AND endpoint_id = '$2'"; }

# -- a. retries of an ordered endpoint, each on its lane's partition
for i in 1 2 3 4; do publish "$APP_A" "a$i"; done
retry_row_on_lane() {
    [ "$(sql "SELECT count(*) FROM webhooks.retries WHERE endpoint_id = '$EP_A' AND partition = $P_A" 2>/dev/null || echo 0)" -ge 1 ]
}
check "a: the retry row carries its lane's partition ($P_A)" wait_for 30 retry_row_on_lane
check "a: every delivery arrives after its retry, in order" wait_for 60 ok_ids_are a "a1 a2 a3 a4"
check "a: each delivery failed once first (8 requests)" wait_for 10 got_at_least a 8
check "a: the 4 deliveries and their 4 retries are all on partition $P_A" only_on "$EP_A" "$P_A" 8
check "a: the lane is open again" wait_for 30 lane_open "$EP_A"

# -- b. replays sent by murmur2 webhookctl
publish "$APP_B" b1
check "b: b1 succeeded after its retry" wait_for 60 succeeded b1 "$EP_B"
check "b: the lane is open" wait_for 30 lane_open "$EP_B"
publish "$APP_B" b2
check "b: b2's failure blocks the lane" wait_for 30 lane_blocked "$EP_B"
# as a row written before sql/009_retry_partition.sql
check "b: b2's retry row loses its partition" \
    test "$(sql "UPDATE webhooks.retries SET partition = NULL WHERE endpoint_id = '$EP_B' RETURNING 1")" = 1
b1_id=$(delivery_of b1 "$EP_B")
rc=0
KAFKA_EXTRA=partitioner=murmur2 "$BIN/webhookctl" replay --delivery "$b1_id" >"$T/replay-b1.out" 2>&1 || rc=$?
check "b: replay of b1 sent (exit 0)" test "$rc" -eq 0
check "b: the lane was still blocked on b2 when the replay was acknowledged" lane_blocked "$EP_B"
check "b: b1, b1's retry, b2 and the replay are all on partition $P_B" only_on "$EP_B" "$P_B" 4
check "b: b2 arrives after its retry (NULL partition: the id's), then the replay, parked behind it" \
    wait_for 60 ok_ids_are b "b1 b2 b1"
check "b: the lane is open again" wait_for 30 lane_open "$EP_B"
b2_id=$(delivery_of b2 "$EP_B")
rc=0
KAFKA_EXTRA=partitioner=murmur2 "$BIN/webhookctl" replay --delivery "$b2_id" >"$T/replay-b2.out" 2>&1 || rc=$?
check "b: replay of b2 to the open lane sent (exit 0)" test "$rc" -eq 0
check "b: it went to the id's partition $P_B too (6 messages there, none elsewhere)" only_on "$EP_B" "$P_B" 6
check "b: and arrives" wait_for 30 ok_ids_are b "b1 b2 b1 b2"

# -- c. the lanes row's partition wins over the id's
publish "$APP_C" c1
check "c: c1 delivered" wait_for 30 succeeded c1 "$EP_C"
check "c: the lane is open" wait_for 30 lane_open "$EP_C"
sql "INSERT INTO webhooks.lanes (endpoint_id, partition) VALUES ('$EP_C', $M_C)" >/dev/null
rc=0
"$BIN/webhookctl" replay --delivery "$(delivery_of c1 "$EP_C")" >"$T/replay-c1.out" 2>&1 || rc=$?
sql "DELETE FROM webhooks.lanes WHERE endpoint_id = '$EP_C'" >/dev/null
check "c: replay of c1 sent (exit 0)" test "$rc" -eq 0
check "c: the fan-out's c1 on the id's partition $P_C, the replay on the lane row's $M_C" \
    test "$(on_partitions "$EP_C" | tr ' ' '\n' | sort | tr '\n' ' ')" = "$(printf '%s\n' "$P_C:1" "$M_C:1" | sort | tr '\n' ' ')"
check "c: the replay arrives" wait_for 30 ok_ids_are c "c1 c1"

# -- d. a retry row naming a partition the topic does not have
publish "$APP_D" d1
retry_row() { [ "$(sql "SELECT count(*) FROM webhooks.retries WHERE endpoint_id = '$EP_D'")" -eq 1 ]; }
check "d: d1's failure schedules a retry" wait_for 30 retry_row
check "d: the retry row is made to name partition 99" \
    test "$(sql "UPDATE webhooks.retries SET partition = 99 WHERE endpoint_id = '$EP_D' RETURNING 1")" = 1
check "d: d1 arrives after its retry" wait_for 60 ok_ids_are d d1
check "d: the scheduler said it sent the row to its endpoint's partition" \
    grep -q "retry row names a partition the topic does not have" "$T/scheduler.log"
check "d: both messages on the id's partition $P_D" only_on "$EP_D" "$P_D" 2
check "d: the lane is open again" wait_for 30 lane_open "$EP_D"

check "the scheduler read the deliveries topic's partition count" \
    grep -q "Kafka topic webhook.deliveries has 2 partitions" "$T/scheduler.log"

# ---- 3. a lane is one endpoint's on one partition ------------------------------
# After a partition count change an endpoint has messages on two
# partitions. Made here by moving retry rows to the other partition: one
# worker owns both partitions and has an endpoint's deliveries of both
# queued (each request answered after 0.7 s, one at a time, nothing
# parked, no breaker pausing the endpoints whose first attempts all fail),
# then a second worker joins and takes one partition. The revoke
# touches only that partition's lanes: the deliveries of the partition the
# first worker keeps are still sent (a lane keyed by endpoint alone and
# built on the revoked partition dropped them, their offsets passed).
stop_worker w1
stop_worker w2
start_receiver e --secret "$secret" --fail-first 1 --delay-path /e=700
eport=$(cat "$T/e.port")
# pick_on PART: an unordered endpoint (its own app) whose id maps to PART;
# prints "ID APP"
pick_on() {
    local i id crc mur
    for i in $(seq 1 40); do
        id=$("$BIN/webhookctl" endpoint add --app "e$1-$i" --events '*' --secret "$secret" \
            --url "http://127.0.0.1:$eport/e/$1" --retry-schedule 1h --unordered \
            --max-in-flight 1)
        read -r crc mur < <(parts "$id")
        if [ "$crc" = "$1" ]; then
            echo "$id e$1-$i"
            return 0
        fi
    done
    return 1
}
read -r E0 APP_E0 < <(pick_on 0)
read -r E1 APP_E1 < <(pick_on 1)
log "endpoint $E0 maps to partition 0, $E1 to partition 1"
start_worker w3 WORKER_LANE_PARK_AFTER=300s WORKER_BREAKER_FAILURES=0
one_owner() {
    [ "$(sql "SELECT string_agg(DISTINCT worker, ',') FROM webhooks.lane_owners WHERE topic = 'webhook.deliveries'")" = w3 ]
}
check "e: one worker owns both deliveries partitions" wait_for 60 one_owner
N=20
for i in $(seq 1 $N); do
    publish "$APP_E0" "e0-$i"
    publish "$APP_E1" "e1-$i"
done
retries_of() { [ "$(sql "SELECT count(*) FROM webhooks.retries WHERE endpoint_id IN ('$E0', '$E1')")" -eq $((2 * N)) ]; }
check "e: every first attempt failed and has its retry row" wait_for 90 retries_of
check "e: the retry rows move to the other partition, due now" \
    test "$(sql "UPDATE webhooks.retries SET partition = 1 - partition, due_at = now() WHERE endpoint_id IN ('$E0', '$E1') RETURNING 1" | wc -l)" -eq $((2 * N))
succeeded_of() { sql "SELECT count(*) FROM webhooks.delivery_status WHERE endpoint_id = '$1' AND state = 'succeeded'"; }
both_sending() { [ "$(succeeded_of "$E0")" -ge 2 ] && [ "$(succeeded_of "$E1")" -ge 2 ]; }
check "e: both endpoints get their retries, from both partitions' queues" wait_for 60 both_sending
start_worker w4 WORKER_BREAKER_FAILURES=0
two_again() {
    [ "$(sql "SELECT count(DISTINCT worker) FROM webhooks.lane_owners WHERE topic = 'webhook.deliveries'")" = 2 ]
}
check "e: a second worker takes one partition" wait_for 60 two_again
check "e: the first worker revoked it while both lanes had queued deliveries" \
    test "$(succeeded_of "$E0")" -lt "$N" -o "$(succeeded_of "$E1")" -lt "$N"
all_e() { [ "$(succeeded_of "$E0")" -eq "$N" ] && [ "$(succeeded_of "$E1")" -eq "$N" ]; }
check "e: every delivery of both endpoints succeeds" wait_for 90 all_e
log "e: E0 $(succeeded_of "$E0")/$N, E1 $(succeeded_of "$E1")/$N succeeded"
finish
