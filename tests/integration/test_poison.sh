#!/usr/bin/env bash
# test_poison.sh - no input stalls the recorder. On one worker, the
# endpoints of app "poison" answer 200 with hostile bodies (a UTF-8 encoded
# surrogate ED A0 80, an overlong C0 AF, an F5 lead, NUL and ESC bytes,
# 100 backslashes) while the endpoints of app "clean" answer normally: every
# attempt of every endpoint is recorded, the hostile snippets are stored as
# valid UTF-8 (U+FFFD for what was not), the clean app keeps being
# recorded after the poison, nothing is dropped, and the worker's pending
# messages drain. Rows Postgres refuses (constraints the test adds) are
# written in their minimal form or dropped, counted and logged, while the
# rows batched with them commit. Then an event whose id is 128 backslashes, with a
# 128-byte app and a 256-byte type: the worker does not crash, the
# delivery is made and recorded with the exact ids, and the worker still
# works after a restart. Last, a Delivery on the deliveries topic whose
# attempt number (3,000,000,000) is beyond the attempts column: it is sent,
# recorded with the attempt clamped (logged), and what follows is recorded.
. "$(dirname "$0")/../lib.sh"

N=${POISON_EVENTS:-30}
stack_up 4
# the receiver's --body-path bounds: 4096 bytes, 64 prefixes
hex4096=$(head -c 4096 /dev/zero | od -An -v -tx1 | tr -d ' \n')
# accepts ARGS: the receiver parses ARGS (then --help exits 0)
accepts() { "$BIN/webhook-receiver" "$@" --help >/dev/null; }
check "--body-path takes a body of 4096 bytes" accepts --body-path "/x=$hex4096"
rc=0
"$BIN/webhook-receiver" --body-path "/x=${hex4096}00" >/dev/null 2>&1 || rc=$?
check "but not of 4097 (exit $rc)" test "$rc" = 2
many=()
for ((i = 0; i < 64; i++)); do many+=(--body-path "/m$i=41"); done
check "--body-path takes 64 prefixes" accepts "${many[@]}"
rc=0
"$BIN/webhook-receiver" "${many[@]}" --body-path /m64=41 >/dev/null 2>&1 || rc=$?
check "but not 65 (exit $rc)" test "$rc" = 2

bs100=$(printf '5c%.0s' {1..100})
start_receiver recv \
    --body-path /p/sur/=61eda08062 \
    --body-path /p/over/=61c0af62 \
    --body-path /p/f5/=61f580808062 \
    --body-path /p/nul/=6100621b5b326a6309640a65 \
    --body-path "/p/bs/=$bs100" \
    --body-path /r/=524546555345206d65
port=$(cat "$T/recv.port")
for name in sur over f5 nul bs; do
    "$BIN/webhookctl" endpoint add --app poison --secret "$(new_secret)" \
        --url "http://127.0.0.1:$port/p/$name/hook" >/dev/null
done
for name in a b; do
    "$BIN/webhookctl" endpoint add --app clean --secret "$(new_secret)" \
        --url "http://127.0.0.1:$port/c/$name/hook" >/dev/null
done
"$BIN/webhookctl" endpoint add --app big --secret "$(new_secret)" \
    --url "http://127.0.0.1:$port/big/hook" >/dev/null

# payloads up to 1 MiB, so one event row is more than one COPY chunk
export WEBHOOK_PAYLOAD_MAX=1m
start_worker w1 WORKER_METRICS_LISTEN=127.0.0.1:0

# drained NAME: both stages of NAME have no pending messages
drained() {
    metric_is "$1" 'webhook_worker_pending_messages{stage="fanout"}' 0 &&
        metric_is "$1" 'webhook_worker_pending_messages{stage="deliver"}' 0
}
attempts() { sql "SELECT count(*) FROM webhooks.attempts WHERE app = '$1'"; }
attempts_are() { [ "$(attempts "$1")" = "$2" ]; }

check "the worker serves its metrics" wait_for 20 has_addr w1

# the poison first, then the clean app behind it on the same worker
: >"$T/poison.ndjson"
: >"$T/clean.ndjson"
for ((i = 0; i < N; i++)); do
    echo "{\"id\":\"evp_$i\",\"app\":\"poison\",\"type\":\"t.x\",\"payload\":{\"i\":$i}}" \
        >>"$T/poison.ndjson"
    echo "{\"id\":\"evc_$i\",\"app\":\"clean\",\"type\":\"t.x\",\"payload\":{\"i\":$i}}" \
        >>"$T/clean.ndjson"
done
check "the poison events are published" \
    "$BIN/webhook-produce" --quiet <"$T/poison.ndjson"
check "every poisoned endpoint got its requests" wait_for 40 got_at_least recv $((5 * N))
check "then the clean events are published" \
    "$BIN/webhook-produce" --quiet <"$T/clean.ndjson"

check "every attempt of the poisoned app is recorded ($((5 * N)) rows)" \
    wait_for 40 attempts_are poison $((5 * N))
check "every attempt of the clean app is recorded ($((2 * N)) rows)" \
    wait_for 30 attempts_are clean $((2 * N))
log "attempt rows: poison $(attempts poison), clean $(attempts clean)"
check "the worker's pending messages drain to 0" wait_for 30 drained w1

# snippet NAME: the distinct snippets stored for endpoint path /p/NAME/
snippet() {
    sql "SELECT DISTINCT a.response_snippet FROM webhooks.attempts a
         JOIN webhooks.endpoints e ON e.id = a.endpoint_id
         WHERE e.url LIKE '%/p/$1/%'"
}
R=$'\xef\xbf\xbd'
check "the surrogate is stored as U+FFFD" test "$(snippet sur)" = "a${R}${R}${R}b"
check "the overlong is stored as U+FFFD" test "$(snippet over)" = "a${R}${R}b"
check "the F5 lead is stored as U+FFFD" test "$(snippet f5)" = "a${R}${R}${R}${R}b"
check "NUL and ESC are stored as U+FFFD, tab and newline kept" \
    test "$(snippet nul)" = "a${R}b${R}[2jc"$'\t'"d"$'\n'"e"
check "100 backslashes are stored as they were" \
    test "$(snippet bs)" = "$(printf '\\%.0s' {1..100})"
check "no stored snippet holds a control character but tab and newline" \
    test "$(sql "SELECT count(*) FROM webhooks.attempts
                 WHERE response_snippet ~ '[\x01-\x08\x0b-\x1f\x7f]'")" = 0
check "all attempts succeeded" \
    test "$(sql "SELECT count(*) FROM webhooks.attempts WHERE outcome <> 'succeeded'")" = 0
check "no row was dropped" \
    metric_is w1 webhook_worker_recorder_rows_dropped_total 0
check "no value had to be clamped" \
    metric_is w1 webhook_worker_recorder_rows_clamped_total 0

# an event whose stored row (its protobuf as hex, about 1.8 MB) takes more
# than one COPY chunk (1 MiB)
head -c 900000 /dev/zero | tr '\0' x | sed 's/.*/"&"/' >"$T/big.json"
before=$(received recv)
check "a 900 KB event is published" \
    "$BIN/webhook-produce" --quiet --app big --type t.x --id evbig \
    --payload "@$T/big.json"
big_stored() {
    [ "$(sql "SELECT length(event) > 900000 FROM webhooks.events
              WHERE event_id = 'evbig'")" = t ]
}
check "it is delivered" wait_for 30 got_at_least recv $((before + 1))
check "it is stored for replay whole" wait_for 30 big_stored
check "and its attempt recorded" wait_for 30 attempts_are big 1

# ---- the 128-backslash id, 128-byte app, 256-byte type -------------------
id=$(printf '\\%.0s' {1..128})
app=$(printf 'a%.0s' {1..128})
type=$(printf 't%.0s' {1..256})
"$BIN/webhookctl" endpoint add --app "$app" --secret "$(new_secret)" \
    --url "http://127.0.0.1:$port/c/long/hook" >/dev/null
# the worker's endpoint cache learns of it through LISTEN; wait for that
long_cached() { metric_is w1 webhook_worker_endpoints_cached 9; }
check "the worker caches the new endpoint" wait_for 20 long_cached
before=$(received recv)
check "the long-id event is published" \
    "$BIN/webhook-produce" --quiet --app "$app" --type "$type" --id "$id" \
    --payload '{"long":true}'
long_rows() {
    sql "SELECT count(*) FROM webhooks.attempts
         WHERE event_id = repeat(E'\\\\', 128) AND app = repeat('a', 128)
         AND event_type = repeat('t', 256) AND outcome = 'succeeded'"
}
long_recorded() { [ "$(long_rows)" = 1 ]; }
check "the long-id delivery is made" wait_for 30 got_at_least recv $((before + 1))
check "and recorded with the exact ids" wait_for 30 long_recorded
check "the event is stored for replay with its id" \
    test "$(sql "SELECT count(*) FROM webhooks.events
                 WHERE event_id = repeat(E'\\\\', 128)")" = 1
check "the worker is still running" kill -0 "${WORKER_PID[w1]}"
check "its pending messages drain" wait_for 30 drained w1

# ---- rows Postgres refuses: isolated in a minimal form, or dropped -------
# Constraints only this test adds make Postgres refuse rows the encoder
# cannot know about: a snippet starting with REFUSE (the minimal form,
# without snippet, passes), and every attempt of event evdrop_1 (refused
# in any form). The clean rows batched with them must still commit.
sql "ALTER TABLE webhooks.attempts ADD CONSTRAINT test_refuse_snippet
     CHECK (response_snippet IS NULL OR response_snippet NOT LIKE 'REFUSE%')"
sql "ALTER TABLE webhooks.attempts ADD CONSTRAINT test_refuse_event
     CHECK (event_id <> 'evdrop_1')"
"$BIN/webhookctl" endpoint add --app refuse --secret "$(new_secret)" \
    --url "http://127.0.0.1:$port/r/hook" >/dev/null
check "the worker caches the refusing endpoint" \
    wait_for 20 metric_is w1 webhook_worker_endpoints_cached 10
K=10
: >"$T/refuse.ndjson"
for ((i = 0; i < K; i++)); do
    echo "{\"id\":\"evref_$i\",\"app\":\"refuse\",\"type\":\"t.x\",\"payload\":{}}" \
        >>"$T/refuse.ndjson"
    echo "{\"id\":\"evmix_$i\",\"app\":\"clean\",\"type\":\"t.x\",\"payload\":{}}" \
        >>"$T/refuse.ndjson"
    if ((i == K / 2)); then
        echo '{"id":"evdrop_1","app":"clean","type":"t.x","payload":{}}' \
            >>"$T/refuse.ndjson"
    fi
done
before=$(received recv)
check "refused and clean events are published together" \
    "$BIN/webhook-produce" --quiet <"$T/refuse.ndjson"
check "all of them are delivered" \
    wait_for 30 got_at_least recv $((before + 3 * K + 2))
isolated_rows() {
    sql "SELECT count(*) FROM webhooks.attempts WHERE app = 'refuse'
         AND response_snippet IS NULL AND status_code IS NULL
         AND error = 'row refused by Postgres: SQLSTATE 23514'"
}
isolated_all() { [ "$(isolated_rows)" = "$K" ]; }
check "each refused attempt is recorded in its minimal form ($K rows)" \
    wait_for 30 isolated_all
check "the clean attempts beside them are recorded in full" \
    wait_for 30 attempts_are clean $((2 * N + 2 * K))
check "the metric counts the isolated rows" \
    wait_for 10 metric_is w1 webhook_worker_recorder_rows_isolated_total "$K"
check "the metric counts the 2 dropped rows" \
    wait_for 10 metric_is w1 webhook_worker_recorder_rows_dropped_total 2
check "the drop is logged with its delivery" \
    grep -q "ERROR worker: recording attempt 1 of delivery msg_[0-9a-f]*: dropped it, Postgres refused the row also in its minimal form (SQLSTATE 23514)" "$T/w1.log"
check "batches were split to find them" \
    test "$(metric w1 webhook_worker_recorder_batch_splits_total)" -ge 1
check "and the pending messages still drain" wait_for 30 drained w1
sql "ALTER TABLE webhooks.attempts DROP CONSTRAINT test_refuse_snippet"
sql "ALTER TABLE webhooks.attempts DROP CONSTRAINT test_refuse_event"

# restart: the next owner starts from the committed offsets and works
kill "${WORKER_PID[w1]}" 2>/dev/null || true
rc=0
wait "${WORKER_PID[w1]}" || rc=$?
check "the worker stopped cleanly (status $rc)" test "$rc" = 0
start_worker w2 WORKER_METRICS_LISTEN=127.0.0.1:0
check "the restarted worker serves its metrics" wait_for 20 has_addr w2
check "the restarted worker drains" wait_for 30 drained w2
before=$(received recv)
check "an event after the restart is published" \
    "$BIN/webhook-produce" --quiet --app clean --type t.x --id evc_after \
    --payload '{"after":true}'
check "and delivered" wait_for 30 got_at_least recv $((before + 2))
check "and recorded" \
    wait_for 30 attempts_are clean $((2 * N + 2 * K + 2))
check "the long-id delivery was not made twice" long_recorded
check "the restarted worker is still running" kill -0 "${WORKER_PID[w2]}"

# a Delivery whose attempt number does not fit the attempts column
clean_ep=$(sql "SELECT id FROM webhooks.endpoints WHERE app = 'clean' ORDER BY id LIMIT 1")
python3 - "$clean_ep" "$T/huge_attempt.pb" <<'PY'
import sys
def varint(n):
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out
def field(num, wire, data):
    key = varint(num << 3 | wire)
    return key + (varint(data) if wire == 0 else varint(len(data)) + data)
event = (field(1, 2, b"evhuge_1") + field(2, 2, b"clean") + field(3, 2, b"t.x")
         + field(5, 2, b'{"huge":true}'))
delivery = (field(1, 2, b"dlv_huge_attempt") + field(2, 2, sys.argv[1].encode())
            + field(3, 0, 3000000000) + field(4, 2, event) + field(9, 0, 2))
open(sys.argv[2], "wb").write(delivery)
PY
kcat -b "$KAFKA_BROKERS" -P -t webhook.deliveries -k "$clean_ep" "$T/huge_attempt.pb"
huge_recorded() {
    [ "$(sql "SELECT attempt FROM webhooks.attempts WHERE delivery_id = 'dlv_huge_attempt'")" = 2147483647 ]
}
check "an attempt number beyond the column is recorded clamped to 2147483647" \
    wait_for 30 huge_recorded
check "the clamp is logged with its delivery" \
    grep -q "recording attempt .* of delivery dlv_huge_attempt: a value out of its column's range was clamped or cut" "$T/w2.log"
check "the metric counts it" \
    test "$(metric w2 webhook_worker_recorder_rows_clamped_total)" -ge 1
before=$(received recv)
"$BIN/webhook-produce" --quiet --app clean --type t.x --id evc_after_huge --payload '{}'
check "an event after it is delivered" wait_for 30 got_at_least recv $((before + 2))
check "and recorded" wait_for 30 attempts_are clean $((2 * N + 2 * K + 5))
finish
