#!/usr/bin/env bash
# test_ssrf.sh - the SSRF guard with no allowlist (WEBHOOK_ALLOW_PRIVATE_NETS
# unset, as in production). Endpoints pointing at this machine in the
# spellings an attacker would try (127.0.0.1, [::1], [::ffff:127.0.0.1],
# 0.0.0.0, localhost in another case, and a second name /etc/hosts maps to
# loopback when it has one) get nothing (and 127.1, 2130706433 or
# 0x7f.0.0.1 are refused by endpoint add):
#   - webhookctl endpoint add warns about each, naming the address and
#     its range, and does not warn once the allowlist lets it through;
#   - each delivery has exactly one attempt, error class blocked_address
#     with the address and its range, no retry, and one dead letter with
#     reason ADDRESS_REFUSED (6);
#   - the receivers (on 127.0.0.1 and ::1) record no request.
# Then a worker whose allowlist covers loopback delivers new events to the
# same endpoints: the receivers were reachable all along, only the guard
# refused. All traffic stays on loopback.
. "$(dirname "$0")/../lib.sh"

stack_up 2
unset WEBHOOK_ALLOW_PRIVATE_NETS
secret=$(new_secret)
start_receiver r4 --secret "$secret"
start_receiver r6 --secret "$secret" --listen "[::1]:0"
check "a receiver listens on ::1" test -s "$T/r6.port"
p4=$(cat "$T/r4.port")
p6=$(cat "$T/r6.port")

# NAME URL RANGE: the endpoints (each its own app, so its own lane)
targets=(
    "v4 http://127.0.0.1:$p4/v4 loopback"
    "v6 http://[::1]:$p6/v6 loopback"
    "mapped http://[::ffff:127.0.0.1]:$p4/mapped loopback"
    "any http://0.0.0.0:$p4/any unspecified"
    "name http://LocalHost:$p4/name loopback"
)
alias=$(awk '$1 ~ /^127\./ { for (i = 2; i <= NF; i++) if (tolower($i) != "localhost") { print $i; exit } }' /etc/hosts)
if [ -n "$alias" ]; then
    targets+=("alias http://$alias:$p4/alias loopback")
    log "/etc/hosts maps $alias to loopback"
else
    log "/etc/hosts has no name for loopback besides localhost"
fi

# the shorthand IPv4 forms getaddrinfo would read as 127.0.0.1 are
# refused outright
for url in "http://127.1:$p4/short" "http://2130706433:$p4/decimal" "http://0x7f.0.0.1:$p4/hex"; do
    rc=0
    "$BIN/webhookctl" endpoint add --app ssrf-bad --events '*' --secret "$secret" \
        --url "$url" >/dev/null 2>"$T/add-bad.err" || rc=$?
    check "endpoint add refuses $url (exit $rc)" test "$rc" -eq 2
    check "saying the host is not a dotted-quad IPv4 address" \
        grep -q "is not a valid IPv4 address" "$T/add-bad.err"
done

declare -A EP RANGE
for t in "${targets[@]}"; do
    read -r name url range <<<"$t"
    rc=0
    EP[$name]=$("$BIN/webhookctl" endpoint add --app "ssrf-$name" --events '*' \
        --secret "$secret" --url "$url" 2>"$T/add-$name.err") || rc=$?
    RANGE[$name]=$range
    check "$name: endpoint add $url succeeds (exit $rc)" test "$rc" -eq 0
    check "$name: and warns that workers refuse the address (it is $range)" \
        grep -q "resolves to an address workers refuse (address .* is $range" "$T/add-$name.err"
done
rc=0
WEBHOOK_ALLOW_PRIVATE_NETS=127.0.0.0/8 "$BIN/webhookctl" endpoint add --app ssrf-ok \
    --events '*' --secret "$secret" --url "http://127.0.0.1:$p4/ok" >/dev/null 2>"$T/add-ok.err" || rc=$?
check "endpoint add with the allowlist covering the address exits 0" test "$rc" -eq 0
check "and warns about nothing" test ! -s "$T/add-ok.err"

start_worker w1 WEBHOOK_ALLOW_PRIVATE_NETS=
for name in "${!EP[@]}"; do
    "$BIN/webhook-produce" --quiet --app "ssrf-$name" --type t.x --id "$name-1" \
        --payload "{\"n\":\"$name\"}"
done
n=${#EP[@]}
dead_count() {
    dead_letters_json "$T/dead.jsonl"
    [ "$(python3 -c 'import json,sys; print(sum(1 for l in open(sys.argv[1]) if json.loads(l)["reason"] == 6))' "$T/dead.jsonl")" -ge "$1" ]
}
check "every delivery is dead-lettered as ADDRESS_REFUSED" wait_for 60 dead_count "$n"
for name in "${!EP[@]}"; do
    ep=${EP[$name]}
    check "$name: one attempt, blocked_address, naming the range (${RANGE[$name]})" \
        test "$(sql "SELECT count(*) FROM webhooks.delivery_log WHERE endpoint_id = '$ep' AND error_class = 'blocked_address' AND error LIKE '%is ${RANGE[$name]}%'")/$(sql "SELECT count(*) FROM webhooks.delivery_log WHERE endpoint_id = '$ep'")" = 1/1
    check "$name: the attempt is final and nothing is retried" \
        test "$(sql "SELECT count(*) FROM webhooks.delivery_log WHERE endpoint_id = '$ep' AND final")/$(sql "SELECT count(*) FROM webhooks.retries WHERE endpoint_id = '$ep'")" = 1/0
    check "$name: its dead letter says the guard refused it" \
        python3 -c 'import json,sys
ok = [d for d in map(json.loads, open(sys.argv[1])) if d["event_id"] == sys.argv[2]]
sys.exit(not (len(ok) == 1 and ok[0]["reason"] == 6 and "refused by the SSRF guard" in ok[0]["detail"]))' "$T/dead.jsonl" "$name-1"
done
check "the receiver on 127.0.0.1 got no request" test "$(received r4)" -eq 0
check "the receiver on ::1 got no request" test "$(received r6)" -eq 0

# teeth: with loopback (and the unspecified address) allowed, the same
# endpoints are reached
stop_worker w1
start_worker w2 WEBHOOK_ALLOW_PRIVATE_NETS=127.0.0.0/8,::1/128,0.0.0.0/32
for name in "${!EP[@]}"; do
    "$BIN/webhook-produce" --quiet --app "ssrf-$name" --type t.x --id "$name-2" \
        --payload "{\"n\":\"$name\"}"
done
delivered() { cat "$T/r4.jsonl" "$T/r6.jsonl" 2>/dev/null | grep -q "\"path\":\"/$1\".*\"status\":204"; }
for name in "${!EP[@]}"; do
    check "$name: delivered once loopback is allowed" wait_for 60 delivered "$name"
done
finish
