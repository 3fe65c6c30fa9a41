#!/usr/bin/env bash
# test_badrows.sh - one bad endpoint row costs only that endpoint. Two
# apps, five endpoints. One row's secrets_sealed is tampered with before
# the worker starts: the worker starts anyway, delivers to every other
# endpoint, names the row in an error line and counts it in
# webhook_worker_endpoints_quarantined. Another row is tampered with at
# runtime (the UPDATE's notification refreshes it): it is quarantined and
# the others go on. `endpoint disable` on a quarantined endpoint takes
# effect; `endpoint list` works for every app without opening secrets;
# `endpoint check` names the bad rows. Repairing a row (re-sealing its
# secret with webhookctl, or restoring its bytes) brings it back and the
# deliveries held while it was quarantined arrive: nothing is lost, and
# nothing is ever sent unsigned.
. "$(dirname "$0")/../lib.sh"

stack_up 4
secret=$(new_secret)
start_receiver recv --secret "$secret"
port=$(cat "$T/recv.port")
declare -A EP
for name in a1 a2 a3; do
    EP[$name]=$("$BIN/webhookctl" endpoint add --app a --secret "$secret" \
        --url "http://127.0.0.1:$port/$name")
done
# b1 unordered: its held deliveries are retries each, not a blocked lane
EP[b1]=$("$BIN/webhookctl" endpoint add --app b --secret "$secret" \
    --url "http://127.0.0.1:$port/b1" --unordered --max-in-flight 4)
EP[b2]=$("$BIN/webhookctl" endpoint add --app b --secret "$secret" \
    --url "http://127.0.0.1:$port/b2")

# tamper ID: flips one bit of the sealed secret (the UPDATE fires the
# change notification); the original bytes are kept in $T/ID.sealed.
tamper() {
    sql "SELECT encode(secrets_sealed, 'hex') FROM webhooks.endpoints WHERE id = '$1'" >"$T/$1.sealed"
    sql "UPDATE webhooks.endpoints SET secrets_sealed = set_byte(secrets_sealed, 20, get_byte(secrets_sealed, 20) # 1) WHERE id = '$1'"
}
restore() {
    sql "UPDATE webhooks.endpoints SET secrets_sealed = decode('$(cat "$T/$1.sealed")', 'hex') WHERE id = '$1'"
}
# got NAME: requests the receiver recorded for endpoint NAME.
got() { grep -c "\"path\":\"/$1\"" "$T/recv.jsonl" 2>/dev/null || true; }
got_n() { [ "$(got "$1")" -ge "$2" ]; }
# got_all NAME N [NAME N ...]: each endpoint got at least N requests.
got_all() {
    while [ $# -gt 0 ]; do
        got_n "$1" "$2" || return 1
        shift 2
    done
}
# held NAME: deliveries of NAME waiting in Postgres: retries parked at
# 'infinity' plus, behind an ordered lane's blocked head, parked ones.
held() {
    sql "SELECT (SELECT count(*) FROM webhooks.retries WHERE endpoint_id = '${EP[$1]}' AND due_at = 'infinity') + (SELECT count(*) FROM webhooks.parked WHERE endpoint_id = '${EP[$1]}')"
}
unreadable_attempts() {
    sql "SELECT count(DISTINCT delivery_id) FROM webhooks.attempts WHERE endpoint_id = '${EP[$1]}' AND error_class = 'endpoint_unreadable'"
}
held_n() { [ "$(held "$1")" -eq "$2" ]; }
publish() { # APP FIRST LAST
    for ((i = $2; i <= $3; i++)); do
        "$BIN/webhook-produce" --quiet --app "$1" --type t.x --id "$1-$i" \
            --payload "{\"n\":$i}"
    done
}
addr() {
    sed -n 's|.*serving /metrics, /healthz and /readyz on http://\([^ ]*\).*|\1|p' \
        "$T/w1.log" | tail -1
}
gauge() { curl -fsS "http://$(addr)/metrics" 2>/dev/null | awk '$1 == "webhook_worker_endpoints_quarantined" { print $2 }'; }
gauge_is() { [ "$(gauge)" = "$1" ]; }

tamper "${EP[a3]}"
start_worker w1 WORKER_METRICS_LISTEN=127.0.0.1:0
SCHEDULER_POLL_INTERVAL=100ms "$BIN/webhook-scheduler" >"$T/scheduler.log" 2>&1 &
PIDS+=($!)
check "the worker starts despite the tampered row" \
    wait_for 30 grep -q "worker w1 running" "$T/w1.log"
if ! grep -q "worker w1 running" "$T/w1.log"; then
    tail -5 "$T/w1.log"
    finish
    exit 1
fi
check "and names the row at error level" \
    grep -q "ERROR.*endpoint ${EP[a3]} (app a) is quarantined: secrets_sealed cannot be opened" "$T/w1.log"
check "the quarantine gauge is 1" wait_for 10 gauge_is 1

publish a 1 5
publish b 1 5
check "the other endpoints of app a get every event" \
    wait_for 30 got_all a1 5 a2 5
check "so do the endpoints of app b" \
    wait_for 30 got_all b1 5 b2 5
check "the quarantined endpoint's deliveries are held, not lost" wait_for 20 held_n a3 5
check "its lane's head attempt failed with the error class endpoint_unreadable" \
    test "$(unreadable_attempts a3)" -eq 1
check "and nothing reached it" test "$(got a3)" -eq 0

# at runtime: the UPDATE that tampers b1 notifies the worker
tamper "${EP[b1]}"
check "a row tampered with at runtime is quarantined" wait_for 20 gauge_is 2
check "and named" \
    wait_for 10 grep -q "endpoint ${EP[b1]} (app b) is quarantined" "$T/w1.log"
publish b 6 8
check "the other endpoint of app b goes on" \
    wait_for 30 got_all b2 8
check "b1's new deliveries are held" wait_for 20 held_n b1 3
check "each attempt failed with the error class endpoint_unreadable" \
    test "$(unreadable_attempts b1)" -eq 3
check "b1 got nothing more" test "$(got b1)" -eq 5

check "endpoint list works for app a" "$BIN/webhookctl" endpoint list --app a
check "and lists the quarantined row" \
    bash -c "'$BIN/webhookctl' endpoint list --app a | grep -q '${EP[a3]}'"
check "endpoint list works for app b" "$BIN/webhookctl" endpoint list --app b
check "endpoint list --json works" "$BIN/webhookctl" endpoint list --json
check "list needs no secret key" \
    env -u WEBHOOK_SECRET_KEY "$BIN/webhookctl" endpoint list
"$BIN/webhookctl" endpoint check >"$T/check.out" 2>&1 && rc=0 || rc=$?
check "endpoint check fails with bad rows" test "$rc" -eq 1
check "and names each with what is wrong" \
    bash -c "grep -q '^${EP[a3]} a unreadable: secrets_sealed cannot be opened' '$T/check.out' && grep -q '^${EP[b1]} b unreadable: ' '$T/check.out' && grep -q '5 endpoints checked, 2 unreadable' '$T/check.out'"

# disable the quarantined b1; repair its bytes: it stays disabled
"$BIN/webhookctl" endpoint disable "${EP[b1]}" --reason "bad row" >/dev/null
restore "${EP[b1]}"
check "the repaired row leaves quarantine" wait_for 20 gauge_is 1
publish b 9 11
check "b2 gets the events sent while b1 is disabled" \
    wait_for 30 got_all b2 11
check "disable took effect on the quarantined endpoint: nothing reached it" \
    test "$(got b1)" -eq 5
check "its held deliveries stay held while disabled" held_n b1 3
"$BIN/webhookctl" endpoint enable "${EP[b1]}" >/dev/null
check "enable releases them" wait_for 30 got_n b1 8

# repair a3 through webhookctl: the secret is sealed again with the key
"$BIN/webhookctl" endpoint update "${EP[a3]}" --secret "$secret" >/dev/null
check "re-sealing the secret ends the quarantine" wait_for 20 gauge_is 0
check "and releases the held deliveries: all 5 arrive" wait_for 30 got_n a3 5
publish a 6 6
check "new events reach it too" \
    wait_for 30 got_all a3 6 a1 6 a2 6

# restoring the bytes with psql (no webhookctl): the worker's refresh
# finds the row readable and releases what it held itself
tamper "${EP[a2]}"
check "a2 is quarantined" wait_for 20 gauge_is 1
publish a 7 8
check "a1 and a3 get the new events" wait_for 30 got_all a1 8 a3 8
check "a2's are held" wait_for 20 held_n a2 2
restore "${EP[a2]}"
check "restoring the bytes ends the quarantine" wait_for 20 gauge_is 0
check "the worker releases the held deliveries: they arrive" wait_for 30 got_n a2 8
check "endpoint check passes now" "$BIN/webhookctl" endpoint check
check "every request carried a valid signature" \
    bash -c "! grep -q '\"valid\":false' '$T/recv.jsonl'"
check "nothing was delivered twice" \
    test "$(grep -o '"path":"/[a-z0-9]*"' "$T/recv.jsonl" | wc -l)" -eq $((8 * 3 + 8 + 11))
finish
