#!/usr/bin/env bash
# test_api.sh - webhook-api, the HTTP front door, against the real stack
# (dev broker, Postgres, a worker and a receiver):
#   - settings: --help, a bad setting and a missing DATABASE_URL;
#   - the probes, /metrics and /v1/openapi.yaml (the contract, byte for
#     byte);
#   - POST /v1/events: one envelope and batches, answered 202 only after
#     Kafka acknowledged them; the worker delivers each, its payload byte
#     for byte, and the standardwebhooks library verifies the signatures;
#     an id already published is answered duplicate and not published
#     again, also inside one batch; Idempotency-Key stands in for an id;
#   - refusals: no token, a bad token, a revoked one (401), a read token
#     and another app's token (403), malformed JSON, a bad envelope, too
#     many events (400), a body and a payload over their limits (413);
#   - limits: the 101st request without a valid token in a minute is
#     answered 429 with Retry-After, a token over its --rate-limit too;
#     API_ALLOW_CIDRS and a token's --allow-cidr refuse other sources;
#   - the broker down: 503 within API_PRODUCE_TIMEOUT, nothing published;
#     the client's retry once it is back publishes the event once;
#   - endpoints: created (hmac and ed25519), listed, read, changed
#     (PATCH), disabled and enabled through the API, with the scopes and apps enforced; one made
#     through the API gets events posted through the API, signed with the
#     secret the API returned;
#   - every response checked against docs/openapi.yaml.
. "$(dirname "$0")/../lib.sh"

A="$BIN/webhook-api"
C="$BIN/webhookctl"
RESP="$T/responses.jsonl"
: >"$RESP"

# ---- settings -------------------------------------------------------------------
rc=0
"$A" --help >"$T/help.out" 2>&1 || rc=$?
check "--help exits 0 and lists the settings" sh -c "[ $rc -eq 0 ] && grep -q API_IP_RATE_LIMIT '$T/help.out'"
rc=0
DATABASE_URL=postgresql://x/y WEBHOOK_SECRET_KEY=$(head -c 32 /dev/urandom | base64) \
    "$A" --threads 0 >"$T/bad.out" 2>&1 || rc=$?
check "a setting out of bounds exits 2 ($rc)" test "$rc" -eq 2
rc=0
env -u DATABASE_URL WEBHOOK_SECRET_KEY=$(head -c 32 /dev/urandom | base64) "$A" >"$T/nodb.out" 2>&1 || rc=$?
check "no DATABASE_URL exits 2 ($rc)" test "$rc" -eq 2
check "saying so" grep -q "DATABASE_URL is required" "$T/nodb.out"

BROKER_CONTROL_PORT=$(free_port)
stack_up 2
secret=$(new_secret)
start_receiver r # records everything; tests/verify checks the signatures
port=$(cat "$T/r.port")
EP=$("$C" endpoint add --app acme --events '*' --secret "$secret" --url "http://127.0.0.1:$port/acme")
start_worker w1

# start_api NAME [VAR=VALUE ...]: a webhook-api on a free port; its base URL
# in $T/NAME.url, its pid in API_PID[NAME]
declare -A API_PID
start_api() {
    local name=$1
    shift
    env API_LISTEN=127.0.0.1:0 LOG_FORMAT=text "$@" "$A" >"$T/$name.log" 2>&1 &
    PIDS+=($!)
    API_PID[$name]=$!
    if wait_for 20 grep -q "webhook-api listening on" "$T/$name.log"; then
        sed -n 's/.*listening on \(http[s]*:\/\/[^ ]*\).*/\1/p' "$T/$name.log" | head -1 >"$T/$name.url"
    fi
}
start_api api API_PRODUCE_TIMEOUT=2s
check "webhook-api starts and says where it listens" test -s "$T/api.url"
U=$(cat "$T/api.url")

# call METHOD PATH [CURL ARGS...]: the response's status in $ST, its body in
# $T/body; every response is also recorded for the contract check
call() {
    local method=$1 path=$2
    shift 2
    ST=$(curl -s -o "$T/body" -D "$T/headers" -w '%{http_code}' -X "$method" "$U$path" "$@")
    python3 - "$method" "$path" "$ST" "$T/headers" "$T/body" >>"$RESP" <<'PY'
import json, sys
method, path, status, hdrs, body = sys.argv[1:]
ct = ""
for line in open(hdrs, errors="replace"):
    if line.lower().startswith("content-type:"):
        ct = line.split(":", 1)[1].strip()
print(json.dumps({"method": method, "path": path.split("?")[0], "status": int(status),
                  "content_type": ct, "body": open(body, "rb").read().decode("utf-8", "replace")}))
PY
}
body_is() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert eval(sys.argv[2]), d' "$T/body" "$1"; }
has_header() { grep -qi "^$1" "$T/headers"; }

call GET /healthz
check "/healthz answers 200 ok" sh -c "[ $ST = 200 ] && grep -q '\"ok\"' '$T/body'"
ready() { call GET /readyz; [ "$ST" = 200 ]; }
check "/readyz answers 200 once Kafka and Postgres are there" wait_for 30 ready
call GET /metrics
check "/metrics serves Prometheus text" sh -c "[ $ST = 200 ] && grep -q '^webhook_api_requests_total ' '$T/body'"
call GET /v1/openapi.yaml
check "/v1/openapi.yaml is docs/openapi.yaml, byte for byte" cmp -s "$T/body" "$ROOT/docs/openapi.yaml"

# ---- tokens ------------------------------------------------------------------------
ADMIN=$("$C" token create --name admin --scope admin | head -1)
INGEST=$("$C" token create --name acme-ingest --app acme --scope ingest | head -1)
READ=$("$C" token create --name reader --scope read | head -1)
OTHER=$("$C" token create --name other --app other --scope app | head -1)
SLOW=$("$C" token create --name slow --app acme --scope ingest --rate-limit 2/s | head -1)
FAR=$("$C" token create --name far --scope admin --allow-cidr 10.0.0.0/8 | head -1)
check "tokens are made" test -n "$ADMIN" -a -n "$INGEST" -a -n "$READ" -a -n "$OTHER" -a -n "$SLOW" -a -n "$FAR"
auth() { echo "Authorization: Bearer $1"; }
post() { # post TOKEN BODY [CURL ARGS]
    local tok=$1 body=$2
    shift 2
    call POST /v1/events -H "$(auth "$tok")" -H 'Content-Type: application/json' --data-binary "$body" "$@"
}

# ---- ingest ------------------------------------------------------------------------
P1='{"b": [1, 2.50, "\u00e9"], "a":"x"}'
post "$INGEST" "{\"id\":\"e-1\",\"app\":\"acme\",\"type\":\"order.paid\",\"payload\":$P1}"
check "one envelope: 202 after Kafka acknowledged it" sh -c "[ $ST = 202 ]"
check "answering its id, not a duplicate" body_is 'd == {"id": "e-1", "duplicate": False}'
check "the worker delivers it" wait_for 30 got_at_least r 1
check "its payload byte for byte (compact form)" \
    python3 -c 'import base64,json,sys; r=json.loads(open(sys.argv[1]).readline()); assert base64.b64decode(r["body_b64"]) == b"{\"b\":[1,2.50,\"\\u00e9\"],\"a\":\"x\"}", r' "$T/r.jsonl"
post "$INGEST" "{\"id\":\"e-1\",\"app\":\"acme\",\"type\":\"order.paid\",\"payload\":{}}"
check "the same id again: 202, duplicate" sh -c "[ $ST = 202 ] && grep -q '\"duplicate\":true' '$T/body'"
post "$ADMIN" '{"events":[{"id":"b-1","app":"acme","type":"t.x","payload":1},{"id":"b-2","app":"acme","type":"t.x","payload":2},{"id":"b-1","app":"acme","type":"t.x","payload":3},{"id":"e-1","app":"acme","type":"t.x","payload":4}]}'
check "a batch: 202 with one answer per event, in order" sh -c "[ $ST = 202 ]"
check "repeats inside the batch and of an earlier event are duplicates" \
    body_is '[(e["id"], e["duplicate"]) for e in d["events"]] == [("b-1", False), ("b-2", False), ("b-1", True), ("e-1", True)]'
post "$INGEST" '{"app":"acme","type":"t.x","payload":"k"}' -H 'Idempotency-Key: order-77-paid'
IDK=$(python3 -c 'import hashlib; print("idk_" + hashlib.sha256(b"order-77-paid").hexdigest()[:32])')
check "Idempotency-Key stands in for a missing id" sh -c "[ $ST = 202 ] && grep -q '\"id\":\"$IDK\"' '$T/body'"
post "$INGEST" '{"app":"acme","type":"t.x","payload":"k"}' -H 'Idempotency-Key: order-77-paid'
check "the same key again is a duplicate" grep -q '"duplicate":true' "$T/body"
check "the worker delivers e-1, b-1, b-2 and the keyed event once each (4)" wait_for 30 got_at_least r 4
grep '"path":"/acme"' "$T/r.jsonl" >"$T/acme.jsonl"
check "every delivery's signature verifies (standardwebhooks)" \
    node "$ROOT/tests/verify/verify.js" --record "$T/acme.jsonl" --secret "$secret" --expect-count 4

# ---- refusals ----------------------------------------------------------------------
call POST /v1/events --data-binary '{}'
check "no token: 401 with WWW-Authenticate" sh -c "[ $ST = 401 ] && grep -qi '^WWW-Authenticate: Bearer' '$T/headers'"
post "wht_0123456789abcdef_notthesecret" '{}'
check "a token that is not valid: 401" test "$ST" = 401
post "$READ" '{"id":"r-1","app":"acme","type":"t.x","payload":1}'
check "a read token may not publish: 403" test "$ST" = 403
post "$OTHER" '{"id":"o-1","app":"acme","type":"t.x","payload":1}'
check "another app's token: 403 naming the app" sh -c "[ $ST = 403 ] && grep -q 'app acme is not this token' '$T/body'"
post "$ADMIN" '{"id":"m-1",'
check "malformed JSON: 400" sh -c "[ $ST = 400 ] && grep -q 'not JSON' '$T/body'"
post "$ADMIN" '{"id":"m-2","app":"acme","payload":1}'
check "an envelope without a type: 400 saying so" sh -c "[ $ST = 400 ] && grep -q 'type' '$T/body'"
many=$(python3 -c 'import json; print(json.dumps({"events": [{"id": "n-%d" % i, "app": "acme", "type": "t.x", "payload": i} for i in range(101)]}))')
post "$ADMIN" "$many"
check "101 events in a batch: 400" sh -c "[ $ST = 400 ] && grep -q '1 to 100 events' '$T/body'"
post "$ADMIN" '{"events":[{"id":"k-1","app":"acme","type":"t.x","payload":1}]}' -H 'Idempotency-Key: x'
check "Idempotency-Key with a batch: 400" test "$ST" = 400
head -c 1100000 /dev/zero | tr '\0' 'a' >"$T/big.txt"
call POST /v1/events -H "$(auth "$ADMIN")" --data-binary @"$T/big.txt"
check "a body over API_BODY_MAX (1 MiB): 413" test "$ST" = 413
python3 -c 'import json; print(json.dumps({"id": "p-1", "app": "acme", "type": "t.x", "payload": "x" * 600000}))' >"$T/payload.json"
call POST /v1/events -H "$(auth "$ADMIN")" --data-binary @"$T/payload.json"
check "a payload over WEBHOOK_PAYLOAD_MAX: 413" test "$ST" = 413
call POST /v1/events -H "$(auth "$FAR")" --data-binary '{}'
check "a token used outside its --allow-cidr: 403" test "$ST" = 403
# (not recorded: a route the contract does not have cannot be checked
# against it)
check "an unknown route: 404 not_found" \
    test "$(curl -s -o "$T/body" -w '%{http_code}' "$U/v1/nothing" -H "$(auth "$ADMIN")")" = 404
check "in the error format" body_is 'd["error"]["code"] == "not_found"' 

# ---- endpoints, and the whole path through the API -------------------------------------
call POST /v1/apps/shop/endpoints -H "$(auth "$ADMIN")" \
    --data-binary "{\"url\":\"http://127.0.0.1:$port/shop\",\"events\":[\"order.*\"],\"description\":\"made by the API\"}"
check "POST .../endpoints: 201" test "$ST" = 201
check "with the endpoint, its generated secret and no public key" \
    body_is 'd["app"] == "shop" and d["events"] == ["order.*"] and d["secret"].startswith("whsec_") and "public_key" not in d and d["signature"] == "hmac"'
check "and a Location" grep -qi "^Location: /v1/apps/shop/endpoints/ep_" "$T/headers"
SHOP_EP=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$T/body")
SHOP_SECRET=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["secret"])' "$T/body")
call POST /v1/apps/shop/endpoints -H "$(auth "$ADMIN")" \
    --data-binary "{\"url\":\"https://127.0.0.1:$port/ed\",\"signature\":\"ed25519\",\"events\":[\"never.sent\"]}"
check "an ed25519 endpoint: 201 with its public key, no secret" \
    body_is 'd["public_key"].startswith("whpk_") and "secret" not in d'
call POST /v1/apps/shop/endpoints -H "$(auth "$ADMIN")" --data-binary '{"url":"ftp://x"}'
check "a bad URL: 400" test "$ST" = 400
call POST /v1/apps/shop/endpoints -H "$(auth "$ADMIN")" --data-binary '{"url":"http://127.0.0.1:1/x","colour":"red"}'
check "an unknown member: 400 naming it" sh -c "[ $ST = 400 ] && grep -q colour '$T/body'"
call POST /v1/apps/shop/endpoints -H "$(auth "$READ")" --data-binary '{"url":"http://127.0.0.1:1/x"}'
check "a read token may not create: 403" test "$ST" = 403
call GET /v1/apps/shop/endpoints -H "$(auth "$READ")"
check "but may list: the app's two endpoints" body_is 'len(d["data"]) == 2 and all(e["app"] == "shop" for e in d["data"])'
call GET "/v1/apps/shop/endpoints/$SHOP_EP" -H "$(auth "$OTHER")"
check "another app's token: 403" test "$ST" = 403
call GET "/v1/apps/acme/endpoints/$SHOP_EP" -H "$(auth "$ADMIN")"
check "the endpoint under another app: 404" test "$ST" = 404
call POST "/v1/apps/shop/endpoints/$SHOP_EP/disable" -H "$(auth "$ADMIN")" --data-binary '{"reason":"paused by test"}'
check "disable: 200, disabled with the reason" body_is 'd["disabled"] and d["disabled_reason"] == "paused by test"'
call POST "/v1/apps/shop/endpoints/$SHOP_EP/enable" -H "$(auth "$ADMIN")"
check "enable: 200, enabled" body_is 'not d["disabled"] and d["disabled_reason"] is None'
call PATCH "/v1/apps/shop/endpoints/$SHOP_EP" -H "$(auth "$ADMIN")" \
    --data-binary '{"description":"changed","events":["order.*","refund.*"],"rate_limit_per_s":50,"retry_schedule":"1s,2s"}'
check "PATCH: 200 with the fields changed" \
    body_is 'd["description"] == "changed" and d["events"] == ["order.*", "refund.*"] and d["rate_limit_per_s"] == 50 and d["retry_schedule"] == "1s,2s"'
call PATCH "/v1/apps/shop/endpoints/$SHOP_EP" -H "$(auth "$ADMIN")" --data-binary '{"rate_limit_per_s":null,"retry_schedule":null}'
check "null puts the defaults back" body_is 'd["rate_limit_per_s"] is None and d["retry_schedule"] is None'
call PATCH "/v1/apps/shop/endpoints/$SHOP_EP" -H "$(auth "$ADMIN")" --data-binary '{"signature":"both"}'
check "PATCH signature both: the new public key is returned" body_is 'd["signature"] == "both" and d["public_key"].startswith("whpk_")'
call PATCH "/v1/apps/shop/endpoints/$SHOP_EP" -H "$(auth "$ADMIN")" --data-binary '{"signature":"hmac"}'
check "and back to hmac" body_is 'd["signature"] == "hmac" and "public_key" not in d'
ED_EP=$(curl -s "$U/v1/apps/shop/endpoints" -H "$(auth "$ADMIN")" | python3 -c 'import json,sys; print([e["id"] for e in json.load(sys.stdin)["data"] if e["signature"] == "ed25519"][0])')
call PATCH "/v1/apps/shop/endpoints/$ED_EP" -H "$(auth "$ADMIN")" --data-binary "{\"secret\":\"$(new_secret)\"}"
check "PATCH secret of an ed25519 endpoint: 409" test "$ST" = 409
call PATCH "/v1/apps/shop/endpoints/$SHOP_EP" -H "$(auth "$ADMIN")" --data-binary '{}'
check "PATCH with nothing to change: 400" test "$ST" = 400
call PATCH "/v1/apps/shop/endpoints/$SHOP_EP" -H "$(auth "$ADMIN")" --data-binary '{"timeout_ms":5}'
check "PATCH with a field out of bounds: 400" test "$ST" = 400
call PATCH "/v1/apps/shop/endpoints/$SHOP_EP" -H "$(auth "$OTHER")" --data-binary '{"description":"x"}'
check "PATCH with another app's token: 403" test "$ST" = 403
SHOP_INGEST=$("$C" token create --name shop --app shop --scope ingest | head -1)
for i in 1 2 3; do
    post "$SHOP_INGEST" "{\"id\":\"shop-$i\",\"app\":\"shop\",\"type\":\"order.paid\",\"payload\":{\"n\":$i}}"
done
check "events for the new endpoint accepted" test "$ST" = 202
shop_got() { [ "$(grep -c '"path":"/shop"' "$T/r.jsonl")" -ge 3 ]; }
check "the endpoint made through the API gets them" wait_for 30 shop_got
grep '"path":"/shop"' "$T/r.jsonl" >"$T/shop.jsonl"
check "signed with the secret the API returned (standardwebhooks)" \
    node "$ROOT/tests/verify/verify.js" --record "$T/shop.jsonl" --secret "$SHOP_SECRET" --expect-count 3

# ---- limits ------------------------------------------------------------------------
slow_limited() {
    local i
    for i in 1 2 3 4 5 6 7 8; do
        post "$SLOW" "{\"id\":\"s-$RANDOM$i\",\"app\":\"acme\",\"type\":\"t.x\",\"payload\":1}"
        [ "$ST" = 429 ] && has_header Retry-After && return 0
    done
    return 1
}
check "a token over its --rate-limit 2/s: 429 with Retry-After" slow_limited
start_api lim API_IP_RATE_LIMIT=100
L=$(cat "$T/lim.url")
codes=$(for i in $(seq 1 101); do curl -s -o /dev/null -w '%{http_code}\n' -X POST "$L/v1/events"; done | sort | uniq -c | tr -s ' ' | tr '\n' ';')
check "100 requests without a token get 401, the 101st 429 ($codes)" test "$codes" = " 100 401; 1 429;"
curl -s -D "$T/lim.h" -o /dev/null -X POST "$L/v1/events"
check "with Retry-After" grep -qi '^Retry-After: [0-9]' "$T/lim.h"
check "a valid token still passes" \
    test "$(curl -s -o /dev/null -w '%{http_code}' -X POST "$L/v1/events" -H "$(auth "$INGEST")" --data-binary '{"id":"l-1","app":"acme","type":"t.x","payload":1}')" = 202
start_api far API_ALLOW_CIDRS=10.0.0.0/8
check "API_ALLOW_CIDRS refuses other sources: 403" \
    test "$(curl -s -o /dev/null -w '%{http_code}' "$(cat "$T/far.url")/v1/openapi.yaml")" = 403
GONE_OUT=$("$C" token create --name gone2 --scope admin)
GONE=$(echo "$GONE_OUT" | sed -n 1p)
post "$GONE" '{"id":"g-1","app":"acme","type":"t.x","payload":1}'
check "a fresh token works" test "$ST" = 202
"$C" token revoke "$(echo "$GONE_OUT" | sed -n 2p)" >/dev/null
revoked() { post "$GONE" '{"id":"g-2","app":"acme","type":"t.x","payload":1}'; [ "$ST" = 401 ]; }
check "once revoked it is refused within the cache's 5 s" wait_for 15 revoked

# ---- the broker down ------------------------------------------------------------------
broker_ctl "broker-down 1"
start_ns=$(date +%s%N)
post "$INGEST" '{"id":"d-1","app":"acme","type":"t.x","payload":{"down":1}}'
took_ms=$((($(date +%s%N) - start_ns) / 1000000))
check "with the broker down: 503 with Retry-After ($ST after $took_ms ms)" sh -c "[ $ST = 503 ] && grep -qi '^Retry-After' '$T/headers'"
check "within API_PRODUCE_TIMEOUT (2 s) and librdkafka's timeout scan" test "$took_ms" -lt 12000
broker_ctl "broker-up 1"
retry_ok() { post "$INGEST" '{"id":"d-1","app":"acme","type":"t.x","payload":{"down":1}}'; [ "$ST" = 202 ]; }
check "once it is back the client's retry is accepted" wait_for 60 retry_ok
check "as a new event, not a duplicate (nothing was published)" grep -q '"duplicate":false' "$T/body"
delivered_down() { [ "$(grep -c "$(printf '{"down":1}' | base64)" "$T/r.jsonl")" -ge 1 ]; }
check "the worker delivers it" wait_for 60 delivered_down
check "once" test "$(grep -c "$(printf '{"down":1}' | base64)" "$T/r.jsonl")" -eq 1

# ---- the contract -------------------------------------------------------------------
check "every response matches docs/openapi.yaml" \
    node "$ROOT/tests/verify/openapi_check.js" --spec "$ROOT/docs/openapi.yaml" --record "$RESP"
node "$ROOT/tests/verify/openapi_check.js" --spec "$ROOT/docs/openapi.yaml" --record "$RESP" 2>&1 | tail -5 | sed 's/^/# /'
check "webhook-api stops on SIGTERM" sh -c "kill -TERM ${API_PID[api]} && timeout 20 tail --pid=${API_PID[api]} -f /dev/null"
check "saying so" grep -q "stopped" "$T/api.log"
finish
