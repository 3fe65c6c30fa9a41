#!/usr/bin/env bash
# test_rekey.sh - rotating the master key. Two endpoints sealed under key A
# (one of them in the version 1 format of before key ids, when python3 has
# the cryptography module to write one); a worker with key B and A as its
# previous key still delivers to both, correctly signed; `webhookctl rekey
# --dry-run` reports both to re-seal and changes no byte, `rekey` re-seals
# both under B and a second run re-seals none; then a worker with B alone
# delivers to both and one with A alone quarantines both (log, gauge, held
# deliveries). A row sealed under a key nobody configured makes rekey exit
# 1 naming it, untouched; bad WEBHOOK_SECRET_KEY_PREVIOUS values exit 2.
. "$(dirname "$0")/../lib.sh"

stack_up 2
C="$BIN/webhookctl"
KEY_A=$WEBHOOK_SECRET_KEY
KEY_B=$(head -c 32 /dev/urandom | base64)
KEY_C=$(head -c 32 /dev/urandom | base64)
# key_id KEY: the id the sealed format carries for KEY (docs/security.md)
key_id() {
    python3 -c 'import base64, hashlib, sys
print(hashlib.sha256(b"webhook-secretbox key id" + base64.b64decode(sys.argv[1])).hexdigest()[:8])' "$1"
}
ID_A=$(key_id "$KEY_A")
ID_B=$(key_id "$KEY_B")
ID_C=$(key_id "$KEY_C")
S1=$(new_secret)
S2=$(new_secret)
start_receiver r --secret "/e1=$S1" --secret "/e2=$S2"
port=$(cat "$T/r.port")
E1=$("$C" endpoint add --app rk --secret "$S1" --url "http://127.0.0.1:$port/e1")
E2=$("$C" endpoint add --app rk --secret "$S2" --url "http://127.0.0.1:$port/e2")

# the sealed bytes: version, key id
version_of() { sql "SELECT get_byte(secrets_sealed, 0) FROM webhooks.endpoints WHERE id = '$1'"; }
key_id_of() { sql "SELECT encode(substring(secrets_sealed FROM 2 FOR 4), 'hex') FROM webhooks.endpoints WHERE id = '$1'"; }
sealed_rows() { sql "SELECT string_agg(id || ':' || encode(secrets_sealed, 'hex'), ',' ORDER BY id) FROM webhooks.endpoints"; }
check "endpoint add seals version 2 under key A" \
    test "$(version_of "$E1"):$(key_id_of "$E1")" = "2:$ID_A"

# E2 as a row sealed before key ids: version 1 under A
if python3 -c 'import cryptography' 2>/dev/null; then
    v1=$(python3 - "$KEY_A" "$E2" "$S2" <<'PY'
import base64, os, sys
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
key, aad, secret = base64.b64decode(sys.argv[1]), sys.argv[2].encode(), sys.argv[3].encode()
nonce = os.urandom(12)
print((b"\x01" + nonce + AESGCM(key).encrypt(nonce, secret, b"\x01" + aad)).hex())
PY
)
    sql "UPDATE webhooks.endpoints SET secrets_sealed = decode('$v1', 'hex') WHERE id = '$E2'"
    check "E2 is now a version 1 row" test "$(version_of "$E2")" -eq 1
    check "which webhookctl opens with key A" \
        sh -c "'$C' endpoint check '$E2' >/dev/null"
else
    log "python3 has no cryptography module: E2 stays version 2 under A"
fi

n=0
publish() {
    n=$((n + 1))
    "$BIN/webhook-produce" --quiet --app rk --type t.x --id "rk-$n" --payload "{\"n\":$n}"
}
# got PATH: requests the receiver recorded for /PATH
got() { grep -c "\"path\":\"/$1\"" "$T/r.jsonl" 2>/dev/null || true; }
# both_got_event N: event rk-N (payload {"n":N}) reached each endpoint
both_got_event() {
    python3 - "$T/r.jsonl" "$1" <<'PY'
import base64, json, sys
paths = set()
try:
    for line in open(sys.argv[1]):
        r = json.loads(line)
        if json.loads(base64.b64decode(r["body_b64"])).get("n") == int(sys.argv[2]):
            paths.add(r["path"])
except (FileNotFoundError, ValueError):
    pass
sys.exit(0 if paths >= {"/e1", "/e2"} else 1)
PY
}
all_valid() { ! grep -q '"valid":false' "$T/r.jsonl"; }
# rekey_rc OUT [VAR=VALUE ...] [-- ARGS...]: exit status of `webhookctl
# rekey ARGS` under those settings; its output in $T/OUT
rekey_rc() {
    local out=$1 rc=0 envs=()
    shift
    while [ $# -gt 0 ] && [ "$1" != -- ]; do
        envs+=("$1")
        shift
    done
    [ $# -eq 0 ] || shift
    env "${envs[@]}" "$C" rekey "$@" >"$T/$out" 2>&1 || rc=$?
    echo "$rc"
}
running() { grep -q "worker $1 running" "$T/$1.log"; }
gauge_is() { metric_is "$1" webhook_worker_endpoints_quarantined "$2"; }

# 1. key A: deliveries signed with the endpoints' secrets
start_worker wa WORKER_METRICS_LISTEN=127.0.0.1:0
check "worker with key A runs" wait_for 30 running wa
check "and logs its key id and no previous key" \
    grep -q "sealing endpoint secrets under key id $ID_A; 0 previous keys open what they sealed" "$T/wa.log"
publish
check "it delivers to both endpoints" wait_for 60 both_got_event 1
check "the signatures verify" all_valid
stop_worker wa

# 2. key B with A as the previous key: the A-sealed rows still open
start_worker wb WORKER_METRICS_LISTEN=127.0.0.1:0 WEBHOOK_SECRET_KEY="$KEY_B" \
    WEBHOOK_SECRET_KEY_PREVIOUS="$KEY_A"
check "worker with key B and previous key A runs" wait_for 30 running wb
check "and logs key B's id and one previous key" \
    grep -q "sealing endpoint secrets under key id $ID_B; 1 previous key opens what they sealed" "$T/wb.log"
check "and never a key" sh -c "! grep -qF -e '$KEY_A' -e '$KEY_B' '$T/wb.log'"
check "it quarantines nothing" wait_for 10 gauge_is wb 0
publish
check "it delivers to both endpoints" wait_for 60 both_got_event 2
check "the signatures verify" all_valid

# 3. rekey --dry-run: reports, changes nothing
KEYS_BA=(WEBHOOK_SECRET_KEY="$KEY_B" WEBHOOK_SECRET_KEY_PREVIOUS="$KEY_A")
before=$(sealed_rows)
check "rekey --dry-run exits 0" test "$(rekey_rc dry.out "${KEYS_BA[@]}" -- --dry-run)" -eq 0
check "and would re-seal both rows" \
    grep -qx "would re-seal 2, already current 0, cannot be opened 0 (key id $ID_B)" "$T/dry.out"
check "without changing a byte" test "$(sealed_rows)" = "$before"
check "rekey --dry-run --json exits 0" \
    test "$(rekey_rc dry.json "${KEYS_BA[@]}" -- --dry-run --json)" -eq 0
check "rekey --dry-run --json says the same" python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
sys.exit(0 if d == {"dry_run": True, "key_id": sys.argv[2], "resealed": 2, "current": 0, "unopenable": []} else 1)' \
    "$T/dry.json" "$ID_B"

# 4. rekey (previous key from a file): both re-sealed under B; again: none
(umask 077 && printf '%s\n' "$KEY_A" >"$T/previous.keys")
KEYS_BA_FILE=(WEBHOOK_SECRET_KEY="$KEY_B" WEBHOOK_SECRET_KEY_PREVIOUS_FILE="$T/previous.keys")
check "rekey exits 0" test "$(rekey_rc rekey.out "${KEYS_BA_FILE[@]}")" -eq 0
check "and re-sealed both rows" \
    grep -qx "re-sealed 2, already current 0, cannot be opened 0 (key id $ID_B)" "$T/rekey.out"
check "both are now version 2 under key B" \
    test "$(version_of "$E1"):$(key_id_of "$E1") $(version_of "$E2"):$(key_id_of "$E2")" = "2:$ID_B 2:$ID_B"
after=$(sealed_rows)
check "their bytes changed" test "$after" != "$before"
check "a second rekey exits 0" test "$(rekey_rc rekey2.out "${KEYS_BA_FILE[@]}")" -eq 0
check "and re-seals nothing" \
    grep -qx "re-sealed 0, already current 2, cannot be opened 0 (key id $ID_B)" "$T/rekey2.out"
check "nor changes a byte" test "$(sealed_rows)" = "$after"
publish
check "the running worker (which the UPDATEs notify) still delivers to both" \
    wait_for 60 both_got_event 3
stop_worker wb

# 5. key B alone: the previous key is no longer needed
start_worker wb2 WORKER_METRICS_LISTEN=127.0.0.1:0 WEBHOOK_SECRET_KEY="$KEY_B"
check "worker with key B alone runs" wait_for 30 running wb2
check "with no previous key" \
    grep -q "sealing endpoint secrets under key id $ID_B; 0 previous keys" "$T/wb2.log"
check "it quarantines nothing" wait_for 10 gauge_is wb2 0
publish
check "it delivers to both endpoints" wait_for 60 both_got_event 4
check "the signatures verify" all_valid
stop_worker wb2

# 6. key A alone: the re-sealed rows are unreadable to it
# held ID: deliveries of ID waiting in Postgres (as test_badrows.sh)
held() {
    sql "SELECT (SELECT count(*) FROM webhooks.retries WHERE endpoint_id = '$1' AND due_at = 'infinity') + (SELECT count(*) FROM webhooks.parked WHERE endpoint_id = '$1')"
}
held_both() { [ "$(held "$E1")" -ge 1 ] && [ "$(held "$E2")" -ge 1 ]; }
got_before="$(got e1) $(got e2)"
start_worker wa2 WORKER_METRICS_LISTEN=127.0.0.1:0
check "worker with key A alone runs" wait_for 30 running wa2
check "and names each row as quarantined, sealed under key B's id" \
    sh -c "grep -q 'endpoint $E1 (app rk) is quarantined: secrets_sealed cannot be opened (sealed under key id $ID_B, which is not configured)' '$T/wa2.log' && grep -q 'endpoint $E2 (app rk) is quarantined' '$T/wa2.log'"
check "its quarantine gauge is 2" wait_for 10 gauge_is wa2 2
publish
check "the new event's deliveries are held" wait_for 30 held_both
check "and nothing more reached the endpoints" test "$(got e1) $(got e2)" = "$got_before"
stop_worker wa2

# 7. a row sealed under key C, which no one configures: left as it is
E3=$(env WEBHOOK_SECRET_KEY="$KEY_C" "$C" endpoint add --app rkc --secret "$(new_secret)" \
    --url "http://127.0.0.1:$port/e3")
check "endpoint add under key C seals under C's id" test "$(key_id_of "$E3")" = "$ID_C"
e3_before=$(sql "SELECT encode(secrets_sealed, 'hex') FROM webhooks.endpoints WHERE id = '$E3'")
check "rekey exits 1 when a row cannot be opened" \
    test "$(rekey_rc rekey3.out "${KEYS_BA[@]}")" -eq 1
check "naming it and why" \
    grep -qx "$E3 cannot be opened: secrets_sealed: sealed under key id $ID_C, which is not configured" "$T/rekey3.out"
check "and counting it" \
    grep -qx "re-sealed 0, already current 2, cannot be opened 1 (key id $ID_B)" "$T/rekey3.out"
check "the row is untouched" \
    test "$(sql "SELECT encode(secrets_sealed, 'hex') FROM webhooks.endpoints WHERE id = '$E3'")" = "$e3_before"
check "rekey --json exits 1 too" \
    test "$(rekey_rc rekey3.json "${KEYS_BA[@]}" -- --json)" -eq 1
check "and lists the row with its reason" python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
sys.exit(0 if d["unopenable"] == [{"id": sys.argv[2], "reason": "secrets_sealed: sealed under key id %s, which is not configured" % sys.argv[3]}] and d["current"] == 2 and d["resealed"] == 0 else 1)' \
    "$T/rekey3.json" "$E3" "$ID_C"
check "with C as a previous key, rekey exits 0" \
    test "$(rekey_rc rekey4.out WEBHOOK_SECRET_KEY="$KEY_B" WEBHOOK_SECRET_KEY_PREVIOUS="$KEY_C")" -eq 0
check "re-sealing that row" \
    grep -qx "re-sealed 1, already current 2, cannot be opened 0 (key id $ID_B)" "$T/rekey4.out"
check "under key B" test "$(key_id_of "$E3")" = "$ID_B"

# 8. bad settings: exit 2, saying which setting and which key, never a key
ctl_rc() { rekey_rc bad.out "$@"; }
check "a previous key that is not a key: exit 2" \
    test "$(ctl_rc WEBHOOK_SECRET_KEY="$KEY_B" WEBHOOK_SECRET_KEY_PREVIOUS="$KEY_A,,nonsense")" -eq 2
check "naming the setting and the key's position, not its text" \
    sh -c "grep -q 'WEBHOOK_SECRET_KEY_PREVIOUS: key 2 must be 32 bytes, base64 or hex encoded' '$T/bad.out' && ! grep -q nonsense '$T/bad.out'"
check "the current key as a previous key: exit 2" \
    test "$(ctl_rc WEBHOOK_SECRET_KEY="$KEY_B" WEBHOOK_SECRET_KEY_PREVIOUS="$KEY_B")" -eq 2
check "saying so" grep -q "WEBHOOK_SECRET_KEY_PREVIOUS: key 1 is the current key" "$T/bad.out"
check "four previous keys: exit 2" \
    test "$(ctl_rc WEBHOOK_SECRET_KEY="$KEY_B" WEBHOOK_SECRET_KEY_PREVIOUS="$KEY_A $KEY_C $(head -c 32 /dev/urandom | base64) $(head -c 32 /dev/urandom | base64)")" -eq 2
check "saying at most 3" grep -q "WEBHOOK_SECRET_KEY_PREVIOUS: more than 3 previous keys" "$T/bad.out"
check "both previous-key settings: exit 2" \
    test "$(ctl_rc "${KEYS_BA[@]}" WEBHOOK_SECRET_KEY_PREVIOUS_FILE="$T/previous.keys")" -eq 2
check "saying not both" grep -q "WEBHOOK_SECRET_KEY_PREVIOUS or WEBHOOK_SECRET_KEY_PREVIOUS_FILE, not both" "$T/bad.out"
printf '%s\nhunter2\n' "$KEY_A" >"$T/bad.keys"
check "a previous-key file with a bad line: exit 2" \
    test "$(ctl_rc WEBHOOK_SECRET_KEY="$KEY_B" WEBHOOK_SECRET_KEY_PREVIOUS_FILE="$T/bad.keys")" -eq 2
check "naming the file and the key, not quoting it" \
    sh -c "grep -q 'WEBHOOK_SECRET_KEY_PREVIOUS_FILE $T/bad.keys: key 2 must be' '$T/bad.out' && ! grep -q hunter2 '$T/bad.out' && ! grep -qF -- '$KEY_A' '$T/bad.out'"
check "rekey with an argument: exit 2" test "$(ctl_rc "${KEYS_BA[@]}" -- extra)" -eq 2
check "saying so" grep -q "unexpected argument 'extra'" "$T/bad.out"
check "rekey with an unknown flag: exit 2" test "$(ctl_rc "${KEYS_BA[@]}" -- --force)" -eq 2
rc=0
env WEBHOOK_SECRET_KEY="$KEY_B" WEBHOOK_SECRET_KEY_PREVIOUS="$KEY_A,x" WORKER_ID=wbad \
    timeout 10 "$BIN/webhook-worker" >"$T/wbad.log" 2>&1 || rc=$?
check "a worker with a bad previous key exits 2 ($rc)" test "$rc" -eq 2
check "saying which" grep -q "WEBHOOK_SECRET_KEY_PREVIOUS: key 2 must be" "$T/wbad.log"
finish
