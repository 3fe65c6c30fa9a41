#!/usr/bin/env bash
# test_https_only.sh - WEBHOOK_HTTPS_ONLY and the start-up check of
# WEBHOOK_CA_FILE:
#   - webhookctl with WEBHOOK_HTTPS_ONLY refuses http:// URLs in endpoint
#     add, update and import (exit 2, saying why) and takes https:// ones;
#   - a worker with WEBHOOK_HTTPS_ONLY sends nothing to an http:// endpoint
#     (added while the switch was off): each delivery has one attempt,
#     error class insecure_url, no retry, and a dead letter with reason
#     INSECURE_URL (7); a worker without it delivers to the same endpoint;
#   - a worker whose WEBHOOK_CA_FILE is missing, holds no certificate or an
#     unparsable one exits 2 at start-up naming the problem; with a real
#     PEM certificate it runs.
. "$(dirname "$0")/../lib.sh"

stack_up 2
secret=$(new_secret)
start_receiver r --secret "$secret"
port=$(cat "$T/r.port")
url="http://127.0.0.1:$port/plain"

# ---- webhookctl --------------------------------------------------------------
rc=0
WEBHOOK_HTTPS_ONLY=true "$BIN/webhookctl" endpoint add --app ho --events '*' \
    --secret "$secret" --url "$url" >/dev/null 2>"$T/add.err" || rc=$?
check "add of an http:// URL under WEBHOOK_HTTPS_ONLY exits 2 ($rc)" test "$rc" -eq 2
check "saying the URL must be https://" grep -q "URL must start with https:// (WEBHOOK_HTTPS_ONLY is on)" "$T/add.err"
rc=0
WEBHOOK_HTTPS_ONLY=true "$BIN/webhookctl" endpoint add --app ho-s --events '*' \
    --secret "$secret" --url "https://127.0.0.1:$port/tls" >/dev/null 2>&1 || rc=$?
check "add of an https:// URL under WEBHOOK_HTTPS_ONLY exits 0 ($rc)" test "$rc" -eq 0
ep=$("$BIN/webhookctl" endpoint add --app ho --events '*' --secret "$secret" --url "$url")
check "without the switch the http:// endpoint is added" test -n "$ep"
rc=0
WEBHOOK_HTTPS_ONLY=1 "$BIN/webhookctl" endpoint update "$ep" --url "$url/again" \
    >/dev/null 2>"$T/update.err" || rc=$?
check "update to an http:// URL under WEBHOOK_HTTPS_ONLY exits 2 ($rc)" test "$rc" -eq 2
check "and names the switch" grep -q "WEBHOOK_HTTPS_ONLY is on" "$T/update.err"
check "the endpoint keeps its URL" \
    test "$(sql "SELECT url FROM webhooks.endpoints WHERE id = '$ep'")" = "$url"
printf '%s\n' "{\"app\":\"ho-i\",\"url\":\"$url\"}" >"$T/import.ndjson"
rc=0
WEBHOOK_HTTPS_ONLY=on "$BIN/webhookctl" endpoint import "$T/import.ndjson" \
    >/dev/null 2>"$T/import.err" || rc=$?
check "import of an http:// URL under WEBHOOK_HTTPS_ONLY fails ($rc)" test "$rc" -ne 0
check "saying why" grep -q "URL must start with https://" "$T/import.err"
check "and imports nothing" \
    test "$(sql "SELECT count(*) FROM webhooks.endpoints WHERE app = 'ho-i'")" -eq 0

# ---- the worker ------------------------------------------------------------
start_worker w1 WEBHOOK_HTTPS_ONLY=true
for i in 1 2 3; do
    "$BIN/webhook-produce" --quiet --app ho --type t.x --id "ho-$i" --payload "{\"i\":$i}"
done
insecure_dead() {
    dead_letters_json "$T/dead.jsonl"
    [ "$(python3 -c 'import json,sys; print(sum(1 for l in open(sys.argv[1]) if json.loads(l)["reason"] == 7 and "is not https:// (WEBHOOK_HTTPS_ONLY)" in json.loads(l)["detail"]))' "$T/dead.jsonl")" -ge 3 ]
}
check "each delivery is dead-lettered as INSECURE_URL" wait_for 60 insecure_dead
check "one attempt each, error class insecure_url, final" \
    test "$(sql "SELECT count(*) FILTER (WHERE error_class = 'insecure_url' AND final) || '/' || count(*) FROM webhooks.delivery_log WHERE endpoint_id = '$ep'")" = 3/3
check "nothing is retried" \
    test "$(sql "SELECT count(*) FROM webhooks.retries WHERE endpoint_id = '$ep'")" -eq 0
check "the endpoint got no request" test "$(received r)" -eq 0
stop_worker w1
start_worker w2
"$BIN/webhook-produce" --quiet --app ho --type t.x --id ho-4 --payload '{"i":4}'
check "without the switch the same endpoint gets its next event" wait_for 60 got_at_least r 1

# ---- WEBHOOK_CA_FILE at start-up ------------------------------------------------
# ca_start NAME FILE: runs a worker with WEBHOOK_CA_FILE=FILE until it exits
# (at most 10 s); sets CA_RC
ca_start() {
    CA_RC=0
    WEBHOOK_CA_FILE=$2 WORKER_ID=$1 timeout 10 "$BIN/webhook-worker" >"$T/$1.log" 2>&1 || CA_RC=$?
}
ca_start ca-missing "$T/none.pem"
check "a missing CA file: exit 2 ($CA_RC)" test "$CA_RC" -eq 2
check "naming the file and the error" grep -q "WEBHOOK_CA_FILE: CA file $T/none.pem: No such file" "$T/ca-missing.log"
echo "not a certificate" >"$T/junk.pem"
ca_start ca-junk "$T/junk.pem"
check "a CA file without a certificate: exit 2 ($CA_RC)" test "$CA_RC" -eq 2
check "saying so" grep -q "no PEM certificate in it" "$T/ca-junk.log"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=test-ca \
    -days 2 -keyout "$T/ca.key" -out "$T/ca.pem" 2>/dev/null
check "a test CA certificate is made" test -s "$T/ca.pem"
{ cat "$T/ca.pem"; printf -- '-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n'; } >"$T/bad.pem"
ca_start ca-bad "$T/bad.pem"
check "a CA file whose second certificate does not parse: exit 2 ($CA_RC)" test "$CA_RC" -eq 2
check "naming it" grep -q "certificate 2 does not parse" "$T/ca-bad.log"
start_worker ca-ok WEBHOOK_CA_FILE="$T/ca.pem"
check "with a PEM certificate the worker runs" wait_for 30 grep -q "worker ca-ok running" "$T/ca-ok.log"
finish
