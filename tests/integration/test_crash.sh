#!/usr/bin/env bash
# test_crash.sh - kill -9 the worker twice while 10,000 events are being
# fanned out and delivered, restarting it each time. Every event must reach
# its endpoint at least once, every copy of a delivery must carry the same
# webhook-id and a valid signature, and the history must hold one
# succeeded row per delivery. Prints the measured duplicates and time.
. "$(dirname "$0")/../lib.sh"

EVENTS=${CRASH_EVENTS:-10000}
ENDPOINTS=10
stack_up 8

secret=$(new_secret)
start_receiver recv --secret "$secret"
port=$(cat "$T/recv.port")
for ((i = 0; i < ENDPOINTS; i++)); do
    "$BIN/webhookctl" endpoint add --app crash --events "t.$i" \
        --url "http://127.0.0.1:$port/e$i" --secret "$secret" >/dev/null
done

python3 - "$EVENTS" >"$T/events.ndjson" <<'PY'
import sys
for i in range(int(sys.argv[1])):
    print('{"id":"c-%d","app":"crash","type":"t.%d","payload":{"seq":%d}}' % (i, i % 10, i))
PY

start=$SECONDS
start_worker w1
check "events published" "$BIN/webhook-produce" --quiet <"$T/events.ndjson"

for at in $((EVENTS / 5)) $((EVENTS * 3 / 5)); do
    if wait_for 120 got_at_least recv "$at"; then
        kill -9 "${WORKER_PID[w1]}"
        wait "${WORKER_PID[w1]}" 2>/dev/null || true
        log "killed the worker with SIGKILL after $(received recv) receipts"
        start_worker w1
    else
        not_ok "deliveries reached $at before the kill"
    fi
done

all_arrived() {
    [ "$(python3 - "$T/recv.jsonl" <<'PY'
import base64, json, sys
seen = set()
for line in open(sys.argv[1]):
    try:
        r = json.loads(line)
    except ValueError:
        continue
    seen.add(json.loads(base64.b64decode(r["body_b64"]))["seq"])
print(len(seen))
PY
)" -ge "$EVENTS" ]
}
if wait_for 240 all_arrived; then
    ok "all $EVENTS events arrived after two SIGKILLs"
else
    not_ok "some events never arrived"
fi
elapsed=$((SECONDS - start))
wait_for 30 sql_at_least "SELECT count(DISTINCT delivery_id) FROM webhooks.delivery_log WHERE outcome = 'succeeded'" "$EVENTS" || true

sql "SELECT delivery_id, count(*) FROM webhooks.delivery_log WHERE outcome = 'succeeded' GROUP BY 1" >"$T/history.txt"
check "history, receipts and webhook-ids agree" python3 - "$T" "$EVENTS" "$elapsed" <<'PY'
import base64, json, sys
t, n, elapsed = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ids, bad_sig, receipts = {}, 0, 0
for line in open(f"{t}/recv.jsonl"):
    r = json.loads(line)
    receipts += 1
    seq = json.loads(base64.b64decode(r["body_b64"]))["seq"]
    ids.setdefault(seq, set()).add(r["webhook_id"])
    bad_sig += r["valid"] is not True
hist = dict(l.strip().split("|") for l in open(f"{t}/history.txt"))
all_ids = set().union(*ids.values())
checks = [
    ("every event delivered at least once", set(ids) == set(range(n))),
    ("duplicates carry the same webhook-id", all(len(v) == 1 for v in ids.values())),
    ("every request carried a valid signature", bad_sig == 0),
    ("history has a succeeded row for every delivery", set(hist) == all_ids and len(hist) == n),
]
for name, good in checks:
    print(("ok - " if good else "FAIL - ") + name)
print(f"# events {n}, deliveries {len(all_ids)}, receipts {receipts}, "
      f"duplicates {receipts - len(all_ids)}, history rows {sum(map(int, hist.values()))}, "
      f"time {elapsed}s")
sys.exit(0 if all(g for _, g in checks) else 1)
PY
finish
