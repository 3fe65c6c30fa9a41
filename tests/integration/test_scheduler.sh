#!/usr/bin/env bash
# test_scheduler.sh - webhook-scheduler against the mock broker and a
# throwaway PostgreSQL. Rows are written to webhooks.retries with psql and
# the deliveries topic is read back with kcat: due rows reach the topic
# byte for byte, keyed by endpoint id, and leave the table; future and
# 'infinity' rows stay; a retry is enqueued about when it is due; two
# replicas enqueue a backlog exactly once; kill -9 mid-backlog loses
# nothing; a broker outage and a PostgreSQL restart are survived; a retry
# the producer cannot send (larger than its message.max.bytes, or refused
# by the broker for its size) is dead-lettered, recorded as a final failed
# attempt and deleted while the other retries keep flowing. Prints the
# drain rate of one scheduler and the duplicates the kill caused.
. "$(dirname "$0")/../lib.sh"

BACKLOG=20000

BROKER_CONTROL_PORT=$(free_port)
export BROKER_CONTROL_PORT


declare -A SCHED_PID
# start_scheduler NAME [VAR=VALUE ...]: pid in SCHED_PID[NAME], log in $T/NAME.log
start_scheduler() {
    local name=$1
    shift
    env LOG_LEVEL=debug SCHEDULER_ID="$name" "$@" "$BIN/webhook-scheduler" \
        >>"$T/$name.log" 2>&1 &
    SCHED_PID[$name]=$!
    PIDS+=($!)
}

# stop_scheduler NAME: SIGTERM, wait; returns its exit status.
stop_scheduler() {
    local pid=${SCHED_PID[$1]} rc=0
    kill -TERM "$pid"
    wait "$pid" || rc=$?
    return "$rc"
}

# insert PREFIX N DUE [FIRST]: N rows PREFIX-FIRST.., endpoint ep-(i%64),
# delivery bytes "PREFIX-i", due at the SQL expression DUE.
insert() {
    local first=${4:-1}
    sql "INSERT INTO webhooks.retries (delivery_id, endpoint_id, app, event_id,
             attempt, due_at, delivery)
         SELECT '$1-' || g, 'ep-' || (g % 64), 'app', 'ev-' || g, 2, $3,
                convert_to('$1-' || g, 'UTF8')
         FROM generate_series($first, $first + $2 - 1) g"
}

rows() { sql "SELECT count(*) FROM webhooks.retries WHERE delivery_id LIKE '$1-%'"; }
row_exists() { [ "$(sql "SELECT count(*) FROM webhooks.retries WHERE delivery_id = '$1'")" -eq 1 ]; }
no_rows() { [ "$(rows "$1")" -eq 0 ]; }
rows_below() { [ "$(rows "$1")" -lt "$2" ]; }

# dump_topic: every message of the deliveries topic as "key<TAB>value hex"
# lines in $T/topic.txt (values may hold any byte, so kcat prints lengths).
dump_topic() {
    kcat -C -b "$KAFKA_BROKERS" -t webhook.deliveries -o beginning -e -q \
        -f '%k\t%S\t%s\n' | python3 -c '
import sys
d = sys.stdin.buffer.read()
i = 0
while i < len(d):
    a = d.index(b"\t", i)
    b = d.index(b"\t", a + 1)
    n = int(d[a + 1:b])
    v = d[b + 1:b + 1 + max(n, 0)]
    sys.stdout.write(d[i:a].decode() + "\t" + v.hex() + "\n")
    i = b + 1 + max(n, 0) + 1
' >"$T/topic.txt"
}
hex() { printf '%s' "$1" | od -An -tx1 | tr -d ' \n'; }
# on_topic PREFIX: messages whose value starts with PREFIX- (after dump_topic)
on_topic() { grep -c -P "\t$(hex "$1-")" "$T/topic.txt" || true; }
distinct_on_topic() { grep -P "\t$(hex "$1-")" "$T/topic.txt" | sort -u | wc -l; }
enqueued_all() { dump_topic; [ "$(distinct_on_topic "$1")" -ge "$2" ]; }

# --- command line ---------------------------------------------------------
check "--help lists the settings" sh -c "'$BIN/webhook-scheduler' --help | grep -q SCHEDULER_POLL_INTERVAL"
check "--settings-markdown prints the table" sh -c "'$BIN/webhook-scheduler' --settings-markdown | grep -q SCHEDULER_BATCH"
no_db_status() { env -u DATABASE_URL "$BIN/webhook-scheduler" >/dev/null 2>&1; echo $?; }
check "without DATABASE_URL it exits with status 2" test "$(no_db_status)" -eq 2
bad_batch() { "$BIN/webhook-scheduler" --batch 0 >/dev/null 2>&1; echo $?; }
check "SCHEDULER_BATCH below 1 is refused" test "$(bad_batch)" -eq 2

stack_up 8

# --- basics: what is due moves, byte for byte, keyed by endpoint ---------
sql "INSERT INTO webhooks.retries (delivery_id, endpoint_id, app, event_id,
         attempt, due_at, delivery) VALUES
     ('basic-1', 'ep-a', 'app', 'e1', 2, now() - interval '1 minute', decode('0a03616263', 'hex')),
     ('basic-2', 'ep-b', 'app', 'e2', 3, now(), decode('0a03646566ff000a', 'hex')),
     ('basic-\"q\"', 'ep-c', 'app', 'e3', 2, now(), convert_to('basic-quote', 'UTF8')),
     ('basic-b\\s', 'ep-c', 'app', 'e4', 2, now(), convert_to('basic-backslash', 'UTF8')),
     ('basic-{x,y}', 'ep-d', 'app', 'e5', 4, now(), convert_to('basic-brace', 'UTF8')),
     ('basic-NULL', 'ep-e', 'app', 'e6', 2, now(), convert_to('basic-null', 'UTF8')),
     ('basic-future', 'ep-f', 'app', 'e7', 2, now() + interval '1 hour', decode('00', 'hex')),
     ('basic-off', 'ep-g', 'app', 'e8', 2, 'infinity', decode('01', 'hex'))"
start_scheduler s1
check "due rows leave the table" wait_for 15 sql_at_least \
    "SELECT 6 - count(*) FROM webhooks.retries WHERE delivery_id LIKE 'basic-%'
     AND delivery_id NOT IN ('basic-future', 'basic-off')" 6
dump_topic
cat >"$T/basic.want" <<EOF
ep-a	0a03616263
ep-b	0a03646566ff000a
ep-c	$(hex basic-quote)
ep-c	$(hex basic-backslash)
ep-d	$(hex basic-brace)
ep-e	$(hex basic-null)
EOF
check "exactly the due rows are on the topic, keyed by endpoint, bytes intact" \
    diff <(sort "$T/basic.want") <(sort "$T/topic.txt")
check "messages carry content-type application/x-protobuf" test "$(kcat -C \
    -b "$KAFKA_BROKERS" -t webhook.deliveries -o beginning -e -q -f '%h\n' |
    sort -u)" = "content-type=application/x-protobuf"
check "a row due in an hour stays" row_exists basic-future

# --- timing: enqueued about when due -------------------------------------
# 2 s ahead the insert notifies; 3.5 s ahead it does not (poll path)
due2=$(sql "INSERT INTO webhooks.retries (delivery_id, endpoint_id, app, event_id,
         attempt, due_at, delivery) VALUES ('soon-2', 'ep-s', 'app', 's', 2,
         now() + interval '2 seconds', convert_to('soon-2', 'UTF8'))
         RETURNING extract(epoch FROM due_at)")
due35=$(sql "INSERT INTO webhooks.retries (delivery_id, endpoint_id, app, event_id,
         attempt, due_at, delivery) VALUES ('soon-35', 'ep-s', 'app', 's', 2,
         now() + interval '3.5 seconds', convert_to('soon-35', 'UTF8'))
         RETURNING extract(epoch FROM due_at)")
gone2="" gone35=""
for ((i = 0; i < 300; i++)); do
    left=$(sql "SELECT count(*) FILTER (WHERE delivery_id = 'soon-2') || ' ' ||
                count(*) FILTER (WHERE delivery_id = 'soon-35')
                FROM webhooks.retries")
    now=$(date +%s.%N)
    [ "${left% *}" = 1 ] || gone2=${gone2:-$now}
    [ "${left#* }" = 1 ] || gone35=${gone35:-$now}
    [ -n "$gone2" ] && [ -n "$gone35" ] && break
    sleep 0.01
done
late2=$(python3 -c "print('%.3f' % (${gone2:-1e12} - $due2))")
late35=$(python3 -c "print('%.3f' % (${gone35:-1e12} - $due35))")
log "retry due in 2 s (notified) enqueued ${late2} s after its due time"
log "retry due in 3.5 s (polled) enqueued ${late35} s after its due time"
log "as the scheduler saw it, claimed after due by: $(grep 'batch: claimed 1,' "$T/s1.log" | grep -o 'lag [0-9]* ms' | tr '\n' ' ')(psql polling above adds up to ~0.1 s)"
check "a retry due in 2 s is enqueued within 1.5 s of its due time" \
    python3 -c "import sys; sys.exit(not (-0.05 <= $late2 <= 1.5))"
check "a retry due in 3.5 s is enqueued within 1.5 s of its due time" \
    python3 -c "import sys; sys.exit(not (-0.05 <= $late35 <= 1.5))"
check "SIGTERM stops the scheduler with status 0" stop_scheduler s1
check "'infinity' rows are never enqueued" row_exists basic-off
dump_topic
check "the disabled endpoint's row never reached the topic" \
    test "$(grep -c '^ep-g' "$T/topic.txt" || true)" -eq 0

# --- drain rate of one scheduler over a backlog --------------------------
insert rate "$BACKLOG" "now() - interval '1 minute'"
start=$(date +%s.%N)
start_scheduler s2
check "one scheduler drains a $BACKLOG-row backlog" wait_for 60 no_rows rate
elapsed=$(python3 -c "print('%.2f' % ($(date +%s.%N) - $start))")
rate=$(python3 -c "print(int($BACKLOG / $elapsed))")
log "drain rate: $BACKLOG retries in ${elapsed} s = ${rate} retries/s (one scheduler, batch 1000, including start-up and psql polling)"
# steady state from the scheduler's own batch lines: after the first batch
# (which waits for the producer's first connection) to the last
steady=$(grep 'batch: claimed 1000' "$T/s2.log" | python3 -c '
import sys, datetime
t = [datetime.datetime.strptime(l.split()[0], "%Y-%m-%dT%H:%M:%S.%fZ") for l in sys.stdin]
print(int((len(t) - 1) * 1000 / max((t[-1] - t[0]).total_seconds(), 0.001)))')
log "drain rate, steady state: ${steady} retries/s ($(grep -m1 'batch: claimed 1000' "$T/s2.log" | grep -o 'took.*'), first batch)"
dump_topic
check "each of the $BACKLOG retries is on the topic once" \
    test "$(on_topic rate)" -eq "$BACKLOG" -a "$(distinct_on_topic rate)" -eq "$BACKLOG"
check "scheduler s2 stops cleanly" stop_scheduler s2

# --- two replicas share a backlog, each row once -------------------------
insert two "$BACKLOG" "now() - interval '1 minute'"
start_scheduler s3 SCHEDULER_BATCH=500 SCHEDULER_PIPELINE=1
start_scheduler s4 SCHEDULER_BATCH=500 SCHEDULER_PIPELINE=4
check "two schedulers drain a $BACKLOG-row backlog" wait_for 60 no_rows two
check "scheduler s3 stops cleanly" stop_scheduler s3
check "scheduler s4 stops cleanly" stop_scheduler s4
dump_topic
check "two replicas: exactly $BACKLOG messages, all distinct" \
    test "$(on_topic two)" -eq "$BACKLOG" -a "$(distinct_on_topic two)" -eq "$BACKLOG"
total_of() { grep -o 'total=[0-9]*' "$T/$1.log" | tail -1 | cut -d= -f2; }
log "replica s3 enqueued $(total_of s3), s4 $(total_of s4)"
check "both replicas took part" test "$(total_of s3)" -gt 0 -a "$(total_of s4)" -gt 0

# --- kill -9 mid-backlog, then a restart: nothing lost -------------------
insert kill "$BACKLOG" "now() - interval '1 minute'"
check "broker answers slowly (rtt 100 ms)" broker_ctl "rtt 1 100"
start_scheduler s5
if wait_for 30 rows_below kill $((BACKLOG - 2000)); then
    kill -9 "${SCHED_PID[s5]}"
    wait "${SCHED_PID[s5]}" 2>/dev/null || true
    ok "scheduler killed with SIGKILL mid-backlog ($(rows kill) rows left)"
else
    not_ok "backlog started draining before the kill"
fi
# SIGTERM while the broker is slow: the batch in flight finishes, exit 0
start_scheduler s6
left=$(rows kill)
if wait_for 30 rows_below kill $((left - 500)); then
    t0=$SECONDS
    check "SIGTERM mid-backlog: exit status 0" stop_scheduler s6
    check "SIGTERM mid-backlog: stopped within 5 s" test $((SECONDS - t0)) -le 5
    check "SIGTERM mid-backlog: the batch in flight was committed, not rolled back" \
        test "$(grep -c 'rolled back' "$T/s6.log" || true)" -eq 0
else
    not_ok "the restarted scheduler made progress"
fi
check "broker back to full speed" broker_ctl "rtt 1 0"
start_scheduler s8
check "after a restart the rest of the backlog drains" wait_for 60 no_rows kill
check "scheduler s8 stops cleanly" stop_scheduler s8
dump_topic
killed_total=$(on_topic kill)
log "kill -9: $killed_total messages for $BACKLOG retries, $((killed_total - BACKLOG)) duplicates (the batches in flight)"
check "kill -9: every retry enqueued" test "$(distinct_on_topic kill)" -eq "$BACKLOG"
# the default pipeline keeps two batches of 1000 open at once
check "kill -9: duplicates at most the batches in flight" test $((killed_total - BACKLOG)) -le 2000

# --- Kafka unavailable: nothing is deleted, then everything moves --------
start_scheduler s7 SCHEDULER_PRODUCE_TIMEOUT=1s SCHEDULER_POLL_INTERVAL=60s
sleep 0.5
check "broker goes down" broker_ctl "broker-down 1"
insert kdown 50 "now()"
sleep 3
check "with the broker down the rows stay" test "$(rows kdown)" -eq 50
check "failed batches are rolled back and logged" grep -q "batch rolled back" "$T/s7.log"
check "broker comes back" broker_ctl "broker-up 1"
check "after the outage the rows are enqueued" wait_for 30 no_rows kdown
check "every row of the outage reached the topic" wait_for 10 enqueued_all kdown 50
log "broker outage: $(on_topic kdown) messages for 50 retries"

# --- PostgreSQL restart: reconnect, LISTEN again --------------------------
pg_restart() { "$ROOT/dev/pg.sh" restart "$T/pg" >"$T/pg-restart.log" 2>&1; }
check "PostgreSQL restarted" pg_restart
restored() { grep -q "retry notifications restored" "$T/s7.log"; }
check "the scheduler listens again after the restart" wait_for 30 restored
insert pg 10 "now()"
# the poll interval is 60 s: only the notification can wake it this fast
check "a retry inserted after the restart is enqueued at once" wait_for 3 no_rows pg
check "scheduler s7 kept running" kill -0 "${SCHED_PID[s7]}"
check "scheduler s7 stops cleanly" stop_scheduler s7
# (librdkafka's own complaints while the broker was down are not counted)
check "no scheduler logged an error" \
    test "$(cat "$T"/s[1-8].log | grep ' ERROR ' | grep -vc 'scheduler: kafka ' || true)" -eq 0

# --- a retry the producer cannot send is dead-lettered, not retried -------
# big-valid: a Delivery with a 1,100,000-byte payload; big-raw: 1,100,000
# bytes that are no Delivery. Both exceed what the producer takes (the
# default WEBHOOK_PAYLOAD_MAX of 512k plus headroom: 651,264 bytes; and
# librdkafka's default of 1,000,000). They are due first, among 300
# ordinary rows; 300 more follow.
python3 - "$T/big.sql" <<'PY'
import sys
def varint(n):
    out = b""
    while True:
        b = n & 0x7f
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])
def field(num, data):
    return varint(num << 3 | 2) + varint(len(data)) + data
event = (field(1, b"ev-big") + field(2, b"app") + field(3, b"t.big") +
         field(5, b"p" * 1100000) + field(6, b"application/json"))
delivery = (field(1, b"msg_0123456789abcdef0123456789abcdef") +
            field(2, b"ep_bigvalid0") + varint(3 << 3) + varint(2) +
            field(4, event))
with open(sys.argv[1], "w") as f:
    f.write("INSERT INTO webhooks.retries (delivery_id, endpoint_id, app, "
            "event_id, attempt, due_at, delivery) VALUES "
            "('big-valid', 'ep_bigvalid0', 'app', 'ev-big', 2, "
            "now() - interval '2 minutes', decode('%s', 'hex')), "
            "('big-raw', 'ep_bigraw0', 'app', 'ev-raw', 3, "
            "now() - interval '2 minutes', convert_to(repeat('x', 1100000), 'UTF8'));\n"
            % delivery.hex())
PY
psql "$DATABASE_URL" -XAtq -v ON_ERROR_STOP=1 -f "$T/big.sql"
insert flow 300 "now() - interval '1 minute'"
start_scheduler s9 SCHEDULER_BATCH=100
check "the unsendable rows leave the table" wait_for 30 no_rows big
insert flow 300 "now()" 301
check "the other retries keep flowing" wait_for 30 no_rows flow
dump_topic
check "every other retry reached the topic" test "$(distinct_on_topic flow)" -eq 600
check "no unsendable row reached the deliveries topic" \
    test "$(grep -c -E '^ep_big' "$T/topic.txt" || true)" -eq 0
check "each is recorded as a final failed attempt" \
    sql_at_least "SELECT count(*) FROM webhooks.attempts WHERE delivery_id IN
                  ('big-valid', 'big-raw') AND final AND outcome = 'failed'
                  AND error_class = 'retry_unsendable'" 2
check "with the delivery's attempt number and the reason" \
    sql_at_least "SELECT count(*) FROM webhooks.attempts WHERE delivery_id = 'big-raw'
                  AND attempt = 3 AND error LIKE 'retry not sent: the delivery is 1100000 bytes%'" 1
check "and logged" grep -q 'retry dead-lettered.*big-valid' "$T/s9.log"
# dead_topic: webhook.dead decoded, "key size reason raw_len raw_prefix
# bodies_omitted payload_len delivery_id detail" per line
dead_topic() {
    dead_letters_json "$T/dead.jsonl"
    jq -r '[.key, .size, .reason, .raw_len, .raw_prefix, .bodies_omitted,
            .payload_len, .delivery_id, (.detail | gsub(" "; "_"))]
           | map(tostring) | join(" ")' "$T/dead.jsonl" >"$T/dead.txt"
}
dead_topic
log "dead letters: $(tr '\n' ';' <"$T/dead.txt")"
check "the Delivery's dead letter keeps it without its payload (length kept)" \
    grep -q '^ep_bigvalid0 [0-9]* 2 0 0 1 1100000 msg_0123456789abcdef0123456789abcdef retry_not_sent' "$T/dead.txt"
check "the other's dead letter has its length and a 64 KiB prefix" \
    grep -q '^ep_bigraw0 [0-9]* 1 1100000 65536 0 0  retry_not_sent' "$T/dead.txt"
check "the dead letters are small" \
    test "$(awk '$2 > 70000' "$T/dead.txt" | wc -l)" -eq 0
# the broker refuses a retry for its size: dead-lettered, the rest flows
check "the broker refuses the next Produce for its size" \
    broker_ctl "push-errors Produce 1 MSG_SIZE_TOO_LARGE"
insert refused 1 "now()"
check "the refused retry leaves the table" wait_for 30 no_rows refused
insert after 20 "now()"
check "the retries after it flow" wait_for 30 no_rows after
dead_topic
check "the refused retry is dead-lettered with the reason" \
    grep -q 'Kafka_refused_the_delivery_for_its_size' "$T/dead.txt"
check "and recorded" sql_at_least "SELECT count(*) FROM webhooks.attempts
    WHERE delivery_id = 'refused-1' AND final" 1
check "scheduler s9 stops cleanly" stop_scheduler s9
finish
