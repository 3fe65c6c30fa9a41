#!/usr/bin/env bash
# test_rotation.sh - webhookctl endpoint rotate-secret: during the overlap
# every delivery carries one signature per live secret, newest first, and
# the standardwebhooks library (tests/verify) accepts it with either
# secret; a secret past its overlap is dropped by the running worker (no
# restart); at most 4 secrets sign; bad overlaps and secrets are refused.
. "$(dirname "$0")/../lib.sh"

stack_up 2
start_receiver r # records everything, verifies nothing
port=$(cat "$T/r.port")
S1=$(new_secret)
ep=$("$BIN/webhookctl" endpoint add --app rot --events '*' --secret "$S1" \
    --url "http://127.0.0.1:$port/rot")
start_worker w1
n=0
publish() {
    n=$((n + 1))
    "$BIN/webhook-produce" --quiet --app rot --type t.x --id "rot-$n" --payload "{\"n\":$n}"
}
# sigs_of N: the secrets (by name, in header order) whose HMAC matches the
# signatures of the receipt of event rot-N, e.g. "S2 S1"; "?" for an entry
# no known secret made
sigs_of() {
    python3 - "$T/r.jsonl" "rot-$1" "S1=$S1" "S2=${S2:-}" "S3=${S3:-}" "S4=${S4:-}" <<'PY'
import base64, hashlib, hmac, json, sys
keys = {}
for a in sys.argv[3:]:
    name, _, s = a.partition("=")
    if s:
        keys[name] = base64.b64decode(s[len("whsec_"):])
for line in open(sys.argv[1]):
    r = json.loads(line)
    body = base64.b64decode(r["body_b64"])
    if json.loads(body)["n"] != int(sys.argv[2].split("-")[1]):
        continue
    content = ("%s.%s." % (r["webhook_id"], r["webhook_timestamp"])).encode() + body
    out = []
    for entry in r["webhook_signature"].split(" "):
        sig = entry.split(",", 1)[1]
        names = [n for n, k in keys.items()
                 if hmac.compare_digest(base64.b64encode(hmac.new(k, content, hashlib.sha256).digest()).decode(), sig)]
        out.append(names[0] if names else "?")
    print(" ".join(out))
    break
PY
}
signed_by() { [ "$(sigs_of "$1")" = "$2" ]; }
has_receipt() { [ -n "$(sigs_of "$1")" ]; }
# publish_until WANT: publishes events (one every 0.5 s, 60 s at most)
# until one's receipt is signed by WANT
publish_until() {
    local deadline=$((SECONDS + 60))
    while ((SECONDS < deadline)); do
        publish
        if wait_for 5 has_receipt "$n" && signed_by "$n" "$1"; then
            return 0
        fi
        sleep 0.5 # pacing the events, the condition is the receipt
    done
    return 1
}

check "before any rotation one secret signs" publish_until "S1"

# ---- rotate with a 1 h overlap --------------------------------------------------
rc=0
S2=$("$BIN/webhookctl" endpoint rotate-secret "$ep" --overlap 1h 2>"$T/rot1.err") || rc=$?
check "rotate-secret exits 0 and prints the new secret ($rc)" test "$rc" -eq 0 -a "${S2#whsec_}" != "$S2"
check "and says two secrets sign, the previous one until a time" \
    grep -qE "2 secrets sign its deliveries; the previous one until 20[0-9-]+T[0-9:]+Z" "$T/rot1.err"
check "the worker signs with both, newest first" publish_until "S2 S1"
first=$n
for _ in 1 2 3; do publish; done
check "three more receipts" wait_for 30 has_receipt "$n"
check "standardwebhooks accepts them with the new secret alone" verify_from "$first" --secret "$S2"
check "and with the old secret alone" verify_from "$first" --secret "$S1"
check "and not with a secret that never signed (the check has teeth)" \
    sh -c "! node '$ROOT/tests/verify/verify.js' --record '$T/from-$first.jsonl' --secret '$(new_secret)' >/dev/null 2>&1"

# ---- a 3 s overlap: that secret is dropped without a restart ----------------------
given=$(new_secret)
rc=0
S3=$("$BIN/webhookctl" endpoint rotate-secret "$ep" --secret "$given" --overlap 3s 2>/dev/null) || rc=$?
check "a given secret is taken ($rc)" test "$rc" -eq 0 -a "$S3" = "$given"
check "three secrets sign" publish_until "S3 S2 S1"
check "3 s later the second is dropped by the running worker" publish_until "S3 S1"
check "the worker was not restarted" test "$(grep -c "worker w1 running" "$T/w1.log")" -eq 1

# ---- at most four -------------------------------------------------------------
for _ in 1 2 3; do
    out=$("$BIN/webhookctl" endpoint rotate-secret "$ep" --overlap 2h --json)
done
signing=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["signing"])')
check "after more rotations four secrets sign, no more ($signing)" test "$signing" -eq 4
S4=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])')
publish
four() { [ "$(sigs_of "$n" | wc -w)" -eq 4 ] && [ "$(sigs_of "$n" | cut -d' ' -f1)" = S4 ]; }
check "the last receipt has four signatures, S4 first" wait_for 30 four

# ---- refusals ---------------------------------------------------------------
rc=0
"$BIN/webhookctl" endpoint rotate-secret "$ep" --overlap 8d >/dev/null 2>"$T/bad1.err" || rc=$?
check "an overlap over 7 days is refused (exit $rc)" test "$rc" -eq 2
rc=0
"$BIN/webhookctl" endpoint rotate-secret "$ep" --secret whsec_abc >/dev/null 2>"$T/bad2.err" || rc=$?
check "a malformed secret is refused (exit $rc)" test "$rc" -eq 2
check "saying why" grep -q "\-\-secret" "$T/bad2.err"
rc=0
"$BIN/webhookctl" endpoint rotate-secret ep_00000000000000nosuch >/dev/null 2>"$T/bad3.err" || rc=$?
check "an unknown endpoint: exit 1 ($rc)" test "$rc" -eq 1
check "saying so" grep -q "no endpoint ep_00000000000000nosuch" "$T/bad3.err"
finish
