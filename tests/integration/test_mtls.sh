#!/usr/bin/env bash
# test_mtls.sh - TLS client certificates (mTLS) and per-endpoint CA bundles,
# against an HTTPS receiver on Node's own TLS that requires a client
# certificate signed by a test CA (tests/verify/tls_receiver.js), and an
# `openssl s_server` that does the same (Node drops a connection whose
# certificate it does not trust without a TLS alert; OpenSSL sends one):
#   - an endpoint with the right certificate, key and CA bundle gets its
#     deliveries, signed, and the receiver saw the certificate's name;
#   - on the same host, an endpoint without a certificate and one whose CA
#     bundle is missing (the worker's own CAs do not know the test CA) are
#     refused, each attempt recorded with error class tls, while the first
#     keeps being delivered to (no connection carries one endpoint's
#     identity to another); s_server refuses a certificate of another CA,
#     recorded as a tls error too;
#   - the key is stored sealed; webhookctl refuses a key that does not
#     match, an encrypted key, a certificate without its key, a CA bundle
#     that does not parse and a client certificate for an http:// URL;
#   - update --no-client-cert removes the identity, --client-cert puts it
#     back;
#   - `webhookctl rekey` to a new master key re-seals the client keys, and
#     a worker with only the new key still presents the certificate.
. "$(dirname "$0")/../lib.sh"

# ---- certificates -------------------------------------------------------------
mk() { openssl "$@" 2>>"$T/openssl.log"; }
ca() { # ca NAME: a self-signed CA
    mk req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1" \
        -days 2 -keyout "$T/$1.key" -out "$T/$1.pem"
}
leaf() { # leaf NAME CA EXT: a certificate for NAME signed by CA
    mk req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1" \
        -keyout "$T/$1.key" -out "$T/$1.csr"
    printf '%s\n' "$3" >"$T/$1.ext"
    mk x509 -req -in "$T/$1.csr" -CA "$T/$2.pem" -CAkey "$T/$2.key" -CAcreateserial \
        -days 2 -extfile "$T/$1.ext" -out "$T/$1.pem"
}
ca test-ca
ca rogue-ca
leaf server test-ca "subjectAltName=IP:127.0.0.1"
leaf webhook-client test-ca "extendedKeyUsage=clientAuth"
leaf rogue-client rogue-ca "extendedKeyUsage=clientAuth"
mk pkey -in "$T/webhook-client.key" -aes256 -passout pass:secret -out "$T/encrypted.key"
check "the test certificates are made" test -s "$T/server.pem" -a -s "$T/webhook-client.pem" -a -s "$T/rogue-client.pem" -a -s "$T/encrypted.key"

node "$ROOT/tests/verify/tls_receiver.js" --cert "$T/server.pem" --key "$T/server.key" \
    --client-ca "$T/test-ca.pem" --port-file "$T/tls.port" --record "$T/tls.jsonl" \
    --count-file "$T/tls.count" 2>"$T/tls.log" &
PIDS+=($!)
check "the receiver listens" wait_for 20 test -s "$T/tls.port"
port=$(cat "$T/tls.port")
url="https://127.0.0.1:$port"
sport=$(free_port)
openssl s_server -quiet -accept "127.0.0.1:$sport" -cert "$T/server.pem" -key "$T/server.key" \
    -CAfile "$T/test-ca.pem" -Verify 1 -verify_return_error -www >"$T/s_server.log" 2>&1 &
PIDS+=($!)
check "s_server listens" wait_for 20 bash -c "echo >/dev/tcp/127.0.0.1/$sport"

stack_up 1
C="$BIN/webhookctl"
S=$(new_secret)
add() { # add PATH ARGS: an endpoint at url/PATH; prints its id
    local path=$1
    shift
    "$C" endpoint add --app mtls --events '*' --secret "$S" --url "$url/$path" "$@"
}
EP_OK=$(add ok --client-cert "$T/webhook-client.pem" --client-key "$T/webhook-client.key" --ca-bundle "$T/test-ca.pem")
EP_NONE=$(add none --ca-bundle "$T/test-ca.pem")
EP_ROGUE=$("$C" endpoint add --app mtls --events '*' --secret "$S" --url "https://127.0.0.1:$sport/rogue" --client-cert "$T/rogue-client.pem" --client-key "$T/rogue-client.key" --ca-bundle "$T/test-ca.pem")
EP_NOCA=$(add noca --client-cert "$T/webhook-client.pem" --client-key "$T/webhook-client.key")
check "four endpoints added" test -n "$EP_OK" -a -n "$EP_NONE" -a -n "$EP_ROGUE" -a -n "$EP_NOCA"
check "the client key is stored sealed (no PEM text in the table)" \
    test "$(sql "SELECT count(*) FROM webhooks.endpoints WHERE position('PRIVATE KEY' in encode(tls_client_key_sealed, 'escape')) > 0 OR position('PRIVATE KEY' in coalesce(tls_client_cert, '')) > 0")" -eq 0
check "endpoint list --json says which have a client certificate and a CA bundle" sh -c "
    '$C' endpoint list --json | python3 -c 'import json,sys
s = {r[\"id\"]: (r[\"client_cert\"], r[\"ca_bundle\"]) for r in map(json.loads, sys.stdin)}
assert s == {\"$EP_OK\": (True, True), \"$EP_NONE\": (False, True), \"$EP_ROGUE\": (True, True), \"$EP_NOCA\": (True, False)}, s'"

start_worker w1
"$BIN/webhook-scheduler" >"$T/scheduler.log" 2>&1 &
PIDS+=($!)
for i in 1 2 3 4 5 6; do
    "$BIN/webhook-produce" --quiet --app mtls --type t.x --id "m-$i" --payload "{\"n\":$i}"
done
delivered_ok() { [ "$(grep -c '"path":"/ok"' "$T/tls.jsonl")" -ge "$1" ]; }
check "the endpoint with the right certificate gets all six events" wait_for 60 delivered_ok 6
check "the receiver saw its certificate's name" \
    test "$(grep '"path":"/ok"' "$T/tls.jsonl" | grep -c '"client_cn":"webhook-client"')" -eq 6
check "and the signatures verify" \
    node "$ROOT/tests/verify/verify.js" --record "$T/tls.jsonl" --secret "$S" --expect-count 6
tls_failures() { # tls_failures EP: its failed attempts / those with error class tls
    sql "SELECT count(*) FILTER (WHERE error_class = 'tls') || '/' || count(*) FROM webhooks.delivery_log WHERE endpoint_id = '$1' AND outcome = 'failed'"
}
all_tls() { local f; f=$(tls_failures "$1"); [ "${f%/*}" -ge "$2" ] && [ "${f%/*}" = "${f#*/}" ]; }
check "the endpoint without a certificate is refused: its attempts fail with error class tls" wait_for 60 all_tls "$EP_NONE" 1
check "s_server refuses the one with another CA's certificate: error class tls" wait_for 60 all_tls "$EP_ROGUE" 1
check "saying the CA is unknown" \
    test "$(sql "SELECT count(*) FROM webhooks.delivery_log WHERE endpoint_id = '$EP_ROGUE' AND error LIKE '%alert unknown ca%'")" -ge 1
check "and the one without the CA bundle (the server certificate is not trusted)" wait_for 60 all_tls "$EP_NOCA" 1
check "that one says why" \
    test "$(sql "SELECT count(*) FROM webhooks.delivery_log WHERE endpoint_id = '$EP_NOCA' AND error ILIKE '%certificate%'")" -ge 1
check "none of them got anything through" test "$(grep -vc '"path":"/ok"' "$T/tls.jsonl")" -eq 0
check "the receiver refused handshakes" wait_for 30 sh -c "[ \"\$(cut -d' ' -f2 '$T/tls.count')\" -ge 1 ]"
check "no attempt of the right endpoint failed" test "$(tls_failures "$EP_OK")" = "0/0"

# ---- update ---------------------------------------------------------------------
"$C" endpoint update "$EP_OK" --no-client-cert >/dev/null
"$BIN/webhook-produce" --quiet --app mtls --type t.x --id m-7 --payload '{"n":7}'
check "after update --no-client-cert its deliveries are refused too" wait_for 60 all_tls "$EP_OK" 1
"$C" endpoint update "$EP_OK" --client-cert "$T/webhook-client.pem" --client-key "$T/webhook-client.key" >/dev/null
check "with the certificate back, m-7 arrives (a retry)" wait_for 90 delivered_ok 7

# ---- a new master key: rekey re-seals the client keys too ------------------------
KEY_A=$WEBHOOK_SECRET_KEY
KEY_B=$(head -c 32 /dev/urandom | base64)
rc=0
WEBHOOK_SECRET_KEY=$KEY_B WEBHOOK_SECRET_KEY_PREVIOUS=$KEY_A "$C" rekey >"$T/rekey.out" 2>&1 || rc=$?
check "rekey to a new master key exits 0 ($rc)" test "$rc" -eq 0
check "re-sealing all four rows" grep -q "^re-sealed 4, already current 0, cannot be opened 0" "$T/rekey.out"
stop_worker w1
start_worker w2 WEBHOOK_SECRET_KEY="$KEY_B"
"$BIN/webhook-produce" --quiet --app mtls --type t.x --id m-8 --payload '{"n":8}'
check "a worker with only the new key opens the client key and delivers m-8" wait_for 60 delivered_ok 8
check "its client certificate was used" test "$(tail -1 "$T/tls.jsonl" | grep -c '"client_cn":"webhook-client"')" -eq 1
export WEBHOOK_SECRET_KEY=$KEY_B

# ---- refusals -------------------------------------------------------------------
refused() { # refused MESSAGE ARGS: endpoint add exits 2 saying MESSAGE
    local msg=$1 rc=0
    shift
    "$C" endpoint add --app mtls --secret "$S" "$@" >/dev/null 2>"$T/refused.err" || rc=$?
    [ "$rc" -eq 2 ] && grep -q -- "$msg" "$T/refused.err"
}
check "a key of another certificate is refused" \
    refused "client key does not belong to the client certificate" --url "$url/x" \
    --client-cert "$T/webhook-client.pem" --client-key "$T/rogue-client.key"
check "an encrypted key is refused" \
    refused "no unencrypted PEM private key" --url "$url/x" \
    --client-cert "$T/webhook-client.pem" --client-key "$T/encrypted.key"
check "a certificate without its key is refused" \
    refused "--client-cert and --client-key go together" --url "$url/x" \
    --client-cert "$T/webhook-client.pem"
echo "not a certificate" >"$T/junk.pem"
check "a CA bundle without a certificate is refused" \
    refused "--ca-bundle: CA bundle: no PEM certificate in it" --url "$url/x" --ca-bundle "$T/junk.pem"
check "a key file that is not there is refused" \
    refused "--client-key $T/none.key: No such file" --url "$url/x" \
    --client-cert "$T/webhook-client.pem" --client-key "$T/none.key"
check "a client certificate for an http:// URL is refused" \
    refused "needs an https:// URL" --url "http://127.0.0.1:$port/x" \
    --client-cert "$T/webhook-client.pem" --client-key "$T/webhook-client.key"
check "the key is never printed in an error" sh -c "! grep -q 'PRIVATE' '$T/refused.err'"
check "no endpoint was added by the refusals" test "$(sql "SELECT count(*) FROM webhooks.endpoints")" -eq 4
finish
