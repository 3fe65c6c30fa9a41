#!/usr/bin/env bash
# test_limits.sh - per-endpoint isolation controls: an unordered endpoint
# gets up to --max-in-flight concurrent requests (an ordered one exactly
# one), --rate-limit caps requests per second, and the circuit breaker
# stops hammering an endpoint that keeps failing.
. "$(dirname "$0")/../lib.sh"

stack_up 4
secret=$(new_secret)
start_receiver slow --secret "$secret" --delay-ms 200
start_receiver fast --secret "$secret"
start_receiver down --secret "$secret" --status 503
slow=$(cat "$T/slow.port")
fast=$(cat "$T/fast.port")
down=$(cat "$T/down.port")

add() { "$BIN/webhookctl" endpoint add --secret "$secret" "$@" >/dev/null; }
add --app conc --events 'c.*' --url "http://127.0.0.1:$slow/unordered" \
    --unordered --max-in-flight 8
add --app conc --events 'c.*' --url "http://127.0.0.1:$slow/ordered"
add --app rate --events 'r.*' --url "http://127.0.0.1:$fast/rate" \
    --rate-limit 20/s
add --app brk --events 'b.*' --url "http://127.0.0.1:$down/brk" \
    --unordered --max-in-flight 4 --retry-schedule 1h
start_worker w1 WORKER_BREAKER_FAILURES=5 WORKER_BREAKER_COOLDOWN=1s

events() { # APP TYPE N
    python3 - "$@" <<'PY'
import sys
app, typ, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
for i in range(n):
    print('{"id":"%s-%d","app":"%s","type":"%s","payload":{"seq":%d}}' % (app, i, app, typ, i))
PY
}

# concurrency PATH: the most requests to PATH in flight at once, from the
# receiver's record (arrival time; each is held 200 ms).
concurrency() {
    python3 - "$T/slow.jsonl" "$1" <<'PY'
import json, sys
ts = sorted(r["received_at_us"] for r in map(json.loads, open(sys.argv[1]))
            if r["path"] == sys.argv[2])
print(max(sum(1 for u in ts if t <= u < t + 150000) for t in ts) if ts else 0)
PY
}

events conc c.x 40 | "$BIN/webhook-produce" --quiet
both_done() { [ "$(received slow)" -ge 80 ]; }
check "80 slow deliveries arrive" wait_for 60 both_done
u=$(concurrency /unordered)
o=$(concurrency /ordered)
log "most concurrent requests: unordered $u, ordered $o"
check "the unordered endpoint gets several requests at once (max 8)" \
    test "$u" -ge 4 -a "$u" -le 8
check "the ordered endpoint gets one at a time" test "$o" -eq 1

events rate r.x 60 | "$BIN/webhook-produce" --quiet
rate_done() { [ "$(received fast)" -ge 60 ]; }
check "60 rate-limited deliveries arrive" wait_for 60 rate_done
span=$(python3 - "$T/fast.jsonl" <<'PY'
import json, sys
ts = [r["received_at_us"] for r in map(json.loads, open(sys.argv[1]))]
print("%.2f" % ((max(ts) - min(ts)) / 1e6))
PY
)
log "60 requests at 20/s (burst 2) took $span s"
check "--rate-limit 20/s spreads 60 requests over at least 2.5 s" \
    python3 -c "import sys; sys.exit(0 if $span >= 2.5 else 1)"

events brk b.x 100 | "$BIN/webhook-produce" --quiet
brk_started() { [ "$(received down)" -ge 5 ]; }
check "the failing endpoint is tried" wait_for 30 brk_started
sleep 3
n=$(received down)
log "requests to an endpoint answering 503, 3 s after the breaker opened: $n of 100 deliveries"
check "the open breaker holds back most requests" test "$n" -le 15
check "the held-back deliveries were not attempted" \
    sql_at_least "SELECT 100 - count(DISTINCT delivery_id) FROM webhooks.attempts WHERE endpoint_id IN (SELECT id FROM webhooks.endpoints WHERE app = 'brk')" 80

# The endpoint recovers (moved to a healthy receiver): the next trial
# closes the breaker and the held-back deliveries flow.
ep=$(sql "SELECT id FROM webhooks.endpoints WHERE app = 'brk'")
"$BIN/webhookctl" endpoint update "$ep" --url "http://127.0.0.1:$fast/recovered" >/dev/null
recovered() {
    [ "$(grep -c '"path":"/recovered"' "$T/fast.jsonl")" -ge 80 ]
}
check "after recovery the held-back deliveries arrive" wait_for 60 recovered
finish
