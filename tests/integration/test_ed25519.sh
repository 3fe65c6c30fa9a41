#!/usr/bin/env bash
# test_ed25519.sh - ed25519 ("v1a") signatures: `endpoint add --signature
# ed25519|both` prints the whpk_ public key, `endpoint get-key` prints it
# again; deliveries carry v1a (and for `both` also v1) entries that Node's
# own crypto.verify accepts with the public key (tests/verify), and a
# tampered body or another key fails; rotation works for the key pair
# (both keys sign during the overlap, `get-key --all` lists both) and per
# kind (--kind); `update --signature` adds or drops a kind; bad values are
# refused.
. "$(dirname "$0")/../lib.sh"

stack_up 1
start_receiver r # records everything, verifies nothing
port=$(cat "$T/r.port")
C="$BIN/webhookctl"
url="http://127.0.0.1:$port"

# ---- add --------------------------------------------------------------------
"$C" endpoint add --app ed --events '*' --signature ed25519 --url "$url/ed" >"$T/ed.out"
EP_ED=$(sed -n 1p "$T/ed.out")
PK_ED=$(sed -n 2p "$T/ed.out")
check "add --signature ed25519 prints the id and a whpk_ public key, no secret" \
    test "$(wc -l <"$T/ed.out")" -eq 2 -a "${PK_ED#whpk_}" != "$PK_ED"
"$C" endpoint add --app ed --events '*' --signature both --url "$url/both" >"$T/both.out"
EP_BOTH=$(sed -n 1p "$T/both.out")
S_BOTH=$(sed -n 2p "$T/both.out")
PK_BOTH=$(sed -n 3p "$T/both.out")
check "add --signature both prints the id, a secret and a public key" \
    test "${S_BOTH#whsec_}" != "$S_BOTH" -a "${PK_BOTH#whpk_}" != "$PK_BOTH"
S_HMAC=$(new_secret)
EP_HMAC=$("$C" endpoint add --app ed --events '*' --secret "$S_HMAC" --url "$url/hmac")
check "get-key prints the public key add printed" test "$("$C" endpoint get-key "$EP_ED")" = "$PK_ED"
rc=0
"$C" endpoint get-key "$EP_HMAC" >/dev/null 2>"$T/gk.err" || rc=$?
check "get-key of an HMAC endpoint exits 1 ($rc)" test "$rc" -eq 1
check "saying it does not sign with ed25519" grep -q "does not sign with ed25519 (its signature is hmac" "$T/gk.err"
check "endpoint list --json shows each scheme" sh -c "
    '$C' endpoint list --json | python3 -c 'import json,sys
s = {r[\"id\"]: r[\"signature\"] for r in map(json.loads, sys.stdin)}
assert s == {\"$EP_ED\": \"ed25519\", \"$EP_BOTH\": \"both\", \"$EP_HMAC\": \"hmac\"}, s'"
check "the private key is sealed: the table holds no whsk_ text" \
    test "$(sql "SELECT count(*) FROM webhooks.endpoints WHERE position('whsk_' in encode(secrets_sealed, 'escape')) > 0")" -eq 0

start_worker w1
n=0
publish() {
    n=$((n + 1))
    "$BIN/webhook-produce" --quiet --app ed --type t.x --id "ed-$n" --payload "{\"n\":$n}"
}
# versions PATH N: the signature entries' versions of the receipt of event
# ed-N at PATH, e.g. "v1 v1a v1a"
versions() {
    python3 - "$T/r.jsonl" "$1" "$2" <<'PY'
import base64, json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["path"] != sys.argv[2] or json.loads(base64.b64decode(r["body_b64"]))["n"] != int(sys.argv[3]):
        continue
    print(" ".join(e.split(",", 1)[0] for e in r["webhook_signature"].split(" ")))
    break
PY
}
has() { [ "$(versions "$1" "$2")" = "$3" ]; }
has_receipt() { [ -n "$(versions "$1" "$2")" ]; }
# publish_until PATH WANT: publishes (every 0.5 s, 60 s at most) until an
# event's receipt at PATH carries the signature versions WANT
publish_until() {
    local deadline=$((SECONDS + 60))
    while ((SECONDS < deadline)); do
        publish
        if wait_for 5 has_receipt "$1" "$n" && has "$1" "$n" "$2"; then
            return 0
        fi
        sleep 0.5 # pacing the events, the condition is the receipt
    done
    return 1
}
fails() { ! "$@"; }

check "an ed25519 endpoint's deliveries carry one v1a signature" publish_until /ed "v1a"
first=$n
check "a both endpoint's carry v1 then v1a" wait_for 30 has /both "$n" "v1 v1a"
check "an HMAC endpoint's carry v1 only" wait_for 30 has /hmac "$n" "v1"
for _ in 1 2 3; do publish; done
check "three more receipts at each" wait_for 30 has /hmac "$n" "v1"
check "node:crypto verifies the v1a signatures with the public keys, the library the v1 ones" \
    verify_from "$first" --public-key "/ed=$PK_ED" --public-key "/both=$PK_BOTH" \
    --secret "/both=$S_BOTH" --secret "/hmac=$S_HMAC"
check "every receipt was checked" grep -q "verified 12 of 12 requests" "$T/verify.out"
check "another endpoint's public key does not verify (the check has teeth)" \
    fails verify_from "$first" --public-key "/ed=$PK_BOTH"
# a tampered body: one byte of each /ed receipt's body changed
python3 - "$T/from-$first.jsonl" >"$T/tampered.jsonl" <<'PY'
import base64, json, sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    if r["path"] == "/ed":
        b = bytearray(base64.b64decode(r["body_b64"]))
        b[-2] ^= 1
        r["body_b64"] = base64.b64encode(bytes(b)).decode()
        print(json.dumps(r))
PY
check "a tampered body fails" sh -c "! node '$ROOT/tests/verify/verify.js' --record '$T/tampered.jsonl' --public-key '/ed=$PK_ED' >'$T/tampered.out' 2>&1"
check "saying no v1a signature matches" grep -q "No matching v1a signature found" "$T/tampered.out"

# ---- rotation of the key pair ---------------------------------------------------
rc=0
"$C" endpoint rotate-secret "$EP_ED" --overlap 1h >"$T/rot.out" 2>"$T/rot.err" || rc=$?
PK_ED2=$(sed -n 1p "$T/rot.out")
check "rotate-secret of an ed25519 endpoint prints only the new public key ($rc)" \
    test "$rc" -eq 0 -a "$(wc -l <"$T/rot.out")" -eq 1 -a "${PK_ED2#whpk_}" != "$PK_ED2" -a "$PK_ED2" != "$PK_ED"
check "and says two keys sign" grep -q "2 ed25519 keys sign its deliveries; the previous one until" "$T/rot.err"
check "get-key prints the new key" test "$("$C" endpoint get-key "$EP_ED")" = "$PK_ED2"
check "get-key --all prints both, newest first" \
    test "$("$C" endpoint get-key "$EP_ED" --all | tr '\n' ' ')" = "$PK_ED2 $PK_ED "
check "get-key --all --json gives the old one's expiry" sh -c "
    '$C' endpoint get-key '$EP_ED' --all --json | python3 -c 'import json,sys
k = json.load(sys.stdin)
assert [x[\"public_key\"] for x in k] == [\"$PK_ED2\", \"$PK_ED\"], k
assert k[0][\"expires_at\"] is None and k[1][\"expires_at\"].endswith(\"Z\"), k'"
check "during the overlap both keys sign" publish_until /ed "v1a v1a"
first=$n
check "the new public key verifies" verify_from "$first" --public-key "/ed=$PK_ED2" --public-key "/both=$PK_BOTH" --secret "/hmac=$S_HMAC"
check "and so does the old one" verify_from "$first" --public-key "/ed=$PK_ED" --public-key "/both=$PK_BOTH" --secret "/hmac=$S_HMAC"

# ---- per kind ---------------------------------------------------------------------
rc=0
"$C" endpoint rotate-secret "$EP_BOTH" --kind ed25519 --overlap 0 >"$T/rot2.out" 2>/dev/null || rc=$?
PK_BOTH2=$(cat "$T/rot2.out")
check "rotate-secret --kind ed25519 of a both endpoint prints just a public key ($rc)" \
    test "$rc" -eq 0 -a "${PK_BOTH2#whpk_}" != "$PK_BOTH2"
check "without an overlap the old key is dropped at once, the secret kept" publish_until /both "v1 v1a"
first=$n
check "the secret and the new key verify" verify_from "$first" --public-key "/both=$PK_BOTH2" --secret "/both=$S_BOTH" --public-key "/ed=$PK_ED2" --secret "/hmac=$S_HMAC"
check "the dropped key does not" fails verify_from "$first" --public-key "/both=$PK_BOTH" --public-key "/ed=$PK_ED2" --secret "/hmac=$S_HMAC"
rc=0
"$C" endpoint rotate-secret "$EP_HMAC" --kind ed25519 >/dev/null 2>"$T/rot3.err" || rc=$?
check "rotate-secret --kind ed25519 of an HMAC endpoint exits 2 ($rc)" test "$rc" -eq 2
check "saying it signs with hmac only" grep -q "signs with hmac only" "$T/rot3.err"

# ---- changing the scheme --------------------------------------------------------
"$C" endpoint update "$EP_HMAC" --signature both >"$T/up.out"
PK_HMAC=$(sed -n 2p "$T/up.out")
check "update --signature both prints the new public key" \
    test "$(sed -n 1p "$T/up.out")" = "$EP_HMAC updated" -a "${PK_HMAC#whpk_}" != "$PK_HMAC" -a "$(wc -l <"$T/up.out")" -eq 2
check "the HMAC endpoint now signs with both" publish_until /hmac "v1 v1a"
first=$n
check "its old secret and its new key verify" verify_from "$first" --public-key "/hmac=$PK_HMAC" --secret "/hmac=$S_HMAC" --public-key "/ed=$PK_ED2" --public-key "/both=$PK_BOTH2"
"$C" endpoint update "$EP_BOTH" --signature hmac >/dev/null
check "update --signature hmac drops the key pair" publish_until /both "v1"
rc=0
"$C" endpoint get-key "$EP_BOTH" >/dev/null 2>&1 || rc=$?
check "and get-key says so (exit $rc)" test "$rc" -eq 1

# ---- refusals -------------------------------------------------------------------
rc=0
"$C" endpoint add --app ed --signature rsa --url "$url/x" >/dev/null 2>"$T/bad1.err" || rc=$?
check "an unknown --signature: exit 2 ($rc)" test "$rc" -eq 2
check "naming the choices" grep -q "'rsa' is not hmac, ed25519 or both" "$T/bad1.err"
rc=0
"$C" endpoint add --app ed --signature ed25519 --secret "$(new_secret)" --url "$url/x" >/dev/null 2>"$T/bad2.err" || rc=$?
check "--secret with --signature ed25519: exit 2 ($rc)" test "$rc" -eq 2
check "saying an ed25519 endpoint has no HMAC secret" grep -q "an ed25519 endpoint has no HMAC secret" "$T/bad2.err"
rc=0
"$C" endpoint rotate-secret "$EP_ED" --kind hmac >/dev/null 2>&1 || rc=$?
check "rotate-secret --kind hmac of an ed25519 endpoint: exit 2 ($rc)" test "$rc" -eq 2
check "no endpoint was added by the refusals" test "$(sql "SELECT count(*) FROM webhooks.endpoints")" -eq 3
finish
