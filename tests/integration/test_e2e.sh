#!/usr/bin/env bash
# test_e2e.sh - end to end: 1,000 events (half through webhook-produce, half
# as JSON envelopes through kcat) fanned out to 10 endpoints of one app and
# delivered to a local receiver. Every one of the 10,000 deliveries must
# arrive once with the exact compact payload and a valid Standard Webhooks
# signature (checked by the receiver and again by the independent
# standardwebhooks library), webhooks.delivery_log must match what
# arrived and webhooks.events must hold every event.
. "$(dirname "$0")/../lib.sh"

EVENTS=${E2E_EVENTS:-1000}
ENDPOINTS=10
stack_up 8

start_receiver recv
port=$(cat "$T/recv.port")
secret_args=()
verify_args=()
for ((i = 0; i < ENDPOINTS; i++)); do
    s=$(new_secret)
    # stop receiver prefixes overlapping: /e1/ vs /e10/
    secret_args+=(--secret "/e$i/=$s")
    verify_args+=(--secret "/e$i/=$s")
    "$BIN/webhookctl" endpoint add --app shop --url "http://127.0.0.1:$port/e$i/hook" \
        --secret "$s" >>"$T/endpoints.txt"
done
# restart the receiver with the secrets now known
kill "${PIDS[-1]}"
wait "${PIDS[-1]}" 2>/dev/null || true
unset 'PIDS[-1]'
rm -f "$T/recv.port"
"$BIN/webhook-receiver" --listen "127.0.0.1:$port" --port-file "$T/recv.port" \
    --record "$T/recv.jsonl" --count-file "$T/recv.count" "${secret_args[@]}" \
    >"$T/recv.out" 2>"$T/recv.log" &
PIDS+=($!)
wait_for 10 test -s "$T/recv.port"
check "10 endpoints registered" test "$(wc -l <"$T/endpoints.txt")" -eq "$ENDPOINTS"

start_worker w1

# Envelopes with spaces inside the payload, escapes and non-ASCII text;
# the expected body is the compact serialization of the same JSON text.
python3 - "$EVENTS" "$T" <<'PY'
import json, sys
n, t = int(sys.argv[1]), sys.argv[2]
with open(f"{t}/a.ndjson", "w") as a, open(f"{t}/b.ndjson", "w") as b, \
     open(f"{t}/expected.json", "w") as exp:
    expected = {}
    for i in range(n):
        obj = {"seq": i, "note": "caf\u00e9 \"quoted\" \\ tab\t", "items": [i, i * 2, {"k": None}],
               "ok": i % 2 == 0, "price": i / 4}
        spaced = json.dumps(obj, separators=(" , ", " : "))
        compact = json.dumps(obj, separators=(",", ":"))
        line = '{"id": "evt-%d", "app": "shop", "type": "order.paid",  "payload": %s }' % (i, spaced)
        (a if i % 2 == 0 else b).write(line + "\n")
        expected["evt-%d" % i] = compact
    json.dump(expected, exp)
PY

check "webhook-produce published its half" \
    "$BIN/webhook-produce" --quiet <"$T/a.ndjson"
check "kcat published its half" \
    kcat -b "$KAFKA_BROKERS" -P -t webhook.events -k shop -l "$T/b.ndjson"

total=$((EVENTS * ENDPOINTS))
if wait_for 180 got_at_least recv "$total"; then
    ok "receiver got $total requests"
else
    not_ok "receiver got $(received recv) of $total requests"
fi
# history is written within record-flush; give the last batch a moment
wait_for 20 sql_at_least "SELECT count(*) FROM webhooks.delivery_log" "$total" || true

sql "SELECT delivery_id, event_id, endpoint_id, outcome, status_code FROM webhooks.delivery_log" \
    >"$T/history.txt"
psql "$DATABASE_URL" -XAtq -c "SELECT id, url FROM webhooks.endpoints" >"$T/eps.txt"
check "receiver, payloads and history agree" python3 - "$T" "$total" <<'PY'
import base64, json, sys
t, total = sys.argv[1], int(sys.argv[2])
expected = json.load(open(f"{t}/expected.json"))
recs = [json.loads(l) for l in open(f"{t}/recv.jsonl")]
eps = dict(l.strip().split("|") for l in open(f"{t}/eps.txt"))
path_of = {ep: url.split(":", 2)[2].split("/", 1)[1] for ep, url in eps.items()}
problems = []
seen = {}
for r in recs:
    body = base64.b64decode(r["body_b64"]).decode()
    evt = "evt-%d" % json.loads(body)["seq"]
    if body != expected[evt]:
        problems.append(f"body mismatch for {evt}: {body[:80]}")
    if r["valid"] is not True:
        problems.append(f"invalid signature on {r['path']}: {r.get('verify_error')}")
    seen.setdefault((evt, r["path"]), set()).add(r["webhook_id"])
hist = [l.rstrip("\n").split("|") for l in open(f"{t}/history.txt")]
ok_rows = [h for h in hist if h[3] == "succeeded" and h[4] == "204"]
hist_ids = {h[0] for h in ok_rows}
recv_ids = {r["webhook_id"] for r in recs}
pairs = {(h[1], "/" + path_of[h[2]]) for h in ok_rows}
checks = [
    ("every request has the exact body and a valid signature", not problems),
    ("every (event, endpoint) pair arrived", len(seen) == total),
    ("no request arrived twice", len(recs) == total),
    ("each delivery kept one webhook-id", all(len(v) == 1 for v in seen.values())),
    ("history has one succeeded row per delivery", len(ok_rows) == total and len(hist_ids) == total),
    ("history ids equal received webhook-ids", hist_ids == recv_ids),
    ("history (event, endpoint) pairs equal received ones", pairs == set(seen)),
]
for name, good in checks:
    print(("ok - " if good else "FAIL - ") + name)
for p in problems[:5]:
    print("#", p)
print(f"# {len(recs)} requests, {len(hist)} history rows")
sys.exit(0 if all(g for _, g in checks) else 1)
PY

check "every event is stored for replay" \
    test "$(sql "SELECT count(DISTINCT (app, event_id)) FROM webhooks.events")" -eq "$EVENTS"

if [ -d "$ROOT/tests/verify/node_modules" ]; then
    check "the standardwebhooks library verifies all $total requests" \
        node "$ROOT/tests/verify/verify.js" --record "$T/recv.jsonl" \
        "${verify_args[@]}" --expect-count "$total"
else
    not_ok "tests/verify/node_modules missing: run 'npm ci --prefix tests/verify' (part of the README set-up)"
fi
finish
