#!/usr/bin/env bash
# tests/verify/openapi_test.sh - self-test of tests/verify/openapi_check.js
# against docs/openapi.yaml with hand-written bodies: what the contract
# accepts (exit 0), what it refuses (1), and what it has no operation or
# response for (2). Run from the repository root:
#
#   bash tests/verify/openapi_test.sh
#
# Needs the npm dependencies of tests/verify (npm ci --prefix tests/verify).
# Prints "N passed, M failed" last; exits non-zero when a check failed.
set -uo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT" || exit 2
# shellcheck source=tests/check.sh
. "$ROOT/tests/check.sh"

SPEC=docs/openapi.yaml
T=$(mktemp -d /tmp/openapi-test.XXXXXX)
trap 'rm -rf "$T"' EXIT

if [ ! -d tests/verify/node_modules/ajv ] ||
   [ ! -d tests/verify/node_modules/@seriousme/openapi-schema-validator ]; then
    not_ok "the npm dependencies are installed (run: npm ci --prefix tests/verify)"
    echo "$passed passed, $failed failed"
    exit 1
fi

oc() { node tests/verify/openapi_check.js --spec "$SPEC" "$@"; }

# expect DESCRIPTION RC ARGS... [< body]: runs the checker (stdin passed on),
# records a pass when it exits RC; prints its output when it does not.
expect() {
    local desc=$1 want=$2 rc
    shift 2
    oc "$@" >"$T/out" 2>&1
    rc=$?
    if [ "$rc" -eq "$want" ]; then
        ok "$desc (exit $rc)"
    else
        not_ok "$desc: exit $rc, expected $want"
        sed 's/^/    /' "$T/out"
    fi
}

# body NAME: stdin to $T/NAME.json
body() { cat >"$T/$1.json"; }

# ---- the document itself --------------------------------------------------------
expect "--check-spec accepts docs/openapi.yaml" 0 --check-spec
sed 's/summary: Liveness probe/sumary: Liveness probe/; s/operationId: getMetrics/operationId: getHealth/' \
    "$SPEC" >"$T/broken.yaml"
expect "--check-spec refuses a broken copy (misspelt member, duplicate operationId)" 1 \
    --spec "$T/broken.yaml" --check-spec
grep -q 'OpenAPI schema: .*"sumary"' "$T/out" &&
    ok "the OpenAPI 3.1 schema catches the misspelt member" ||
    not_ok "the OpenAPI 3.1 schema catches the misspelt member"
grep -q 'operationId getHealth also used' "$T/out" &&
    ok "the broken copy's duplicate operationId is named" ||
    not_ok "the broken copy's duplicate operationId is named"

# ---- endpoints --------------------------------------------------------------------
body endpoint <<'EOF'
{"id": "ep_tir5qpdugrntshkd93kj", "app": "acme", "url": "https://example.com/hooks",
 "description": "", "events": ["order.*", "invoice.paid"], "signature": "hmac",
 "ordered": true, "max_in_flight": 1, "rate_limit_per_s": null, "timeout_ms": 5000,
 "retry_schedule": "1s,10s,1m", "disabled": false, "disabled_reason": null,
 "client_cert": false, "ca_bundle": false,
 "created_at": "2026-11-23T15:39:29.828Z", "updated_at": "2026-11-23T15:39:29.828Z"}
EOF
expect "a valid Endpoint" 0 --method GET --path /v1/apps/acme/endpoints/ep_x --status 200 \
    --content-type 'application/json; charset=utf-8' --body-file "$T/endpoint.json"
expect "the same Endpoint on stdin" 0 --method GET --path /v1/apps/acme/endpoints/ep_x \
    --status 200 <"$T/endpoint.json"
sed 's/"id": "ep_tir5qpdugrntshkd93kj", //' "$T/endpoint.json" >"$T/no-id.json"
expect "an Endpoint without id fails" 1 --method GET --path /v1/apps/acme/endpoints/ep_x \
    --status 200 --body-file "$T/no-id.json"
grep -q "required property 'id'" "$T/out" &&
    ok "the missing id is named" || not_ok "the missing id is named"
sed 's/"ordered": true/"ordered": "yes"/' "$T/endpoint.json" >"$T/bad-type.json"
expect "an Endpoint with ordered as a string fails" 1 --method GET \
    --path /v1/apps/acme/endpoints/ep_x --status 200 --body-file "$T/bad-type.json"
grep -q '^  \$\.ordered: must be boolean' "$T/out" &&
    ok "the JSON path of the wrong type is printed" || not_ok "the JSON path of the wrong type is printed"
sed 's/"ca_bundle": false/"ca_bundle": false, "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"/' \
    "$T/endpoint.json" >"$T/with-secret.json"
expect "a GET Endpoint carrying a secret fails (closed object)" 1 --method GET \
    --path /v1/apps/acme/endpoints/ep_x --status 200 --body-file "$T/with-secret.json"
expect "a created endpoint may carry its generated secret" 0 --method POST \
    --path /v1/apps/acme/endpoints --status 201 --body-file "$T/with-secret.json"
{ printf '{"data": ['; cat "$T/endpoint.json"; printf ']}\n'; } >"$T/list.json"
expect "an endpoint list" 0 --method GET --path /v1/apps/acme/endpoints --status 200 \
    --body-file "$T/list.json"
expect "literal segments win: .../enable answers an Endpoint" 0 --method POST \
    --path /v1/apps/a/endpoints/ep_1/enable --status 200 --body-file "$T/endpoint.json"
echo '{"event_id": "evt_test_k2j4", "delivery_id": "msg_f2f0cd2442f67ea4692d9ec385d5ae1b"}' |
    body test
expect "a test event sent without waiting (202)" 0 --method POST \
    --path '/v1/apps/a/endpoints/ep_1/test' --status 202 --body-file "$T/test.json"
expect "the 202 test answer is not a 200 one (attempt missing)" 1 --method POST \
    --path '/v1/apps/a/endpoints/ep_1/test?wait=10s' --status 200 --body-file "$T/test.json"
expect "DELETE 204 with no body" 0 --method DELETE --path /v1/apps/acme/endpoints/ep_x \
    --status 204 --body-file /dev/null
echo '{"secrets": [{"secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "expires_at": null}], "public_keys": []}' |
    body secrets
expect "an endpoint's secrets" 0 --method GET --path /v1/apps/acme/endpoints/ep_x/secret \
    --status 200 --body-file "$T/secrets.json"

# ---- errors -----------------------------------------------------------------------
echo '{"error": {"code": "not_found", "message": "no endpoint ep_x in app acme"}}' | body err404
expect "an error body" 0 --method GET --path /v1/apps/acme/endpoints/ep_x --status 404 \
    --body-file "$T/err404.json"
expect "an error body whose code does not go with the status fails" 1 --method GET \
    --path /v1/apps/acme/endpoints/ep_x --status 403 --body-file "$T/err404.json"
echo '{"error": {"code": "rate_limited", "message": "slow down"}}' | body err429
expect "429 on the unauthenticated /v1/openapi.yaml" 0 --method GET --path /v1/openapi.yaml \
    --status 429 --body-file "$T/err429.json"

# ---- events -----------------------------------------------------------------------
echo '{"id": "evt_1", "duplicate": false}' | body accepted
expect "a 202 event answer" 0 --method POST --path /v1/events --status 202 \
    --body-file "$T/accepted.json"
echo '{"events": [{"id": "evt_1", "duplicate": false}, {"id": "evt_2", "duplicate": true}]}' |
    body batch
expect "a batch answer" 0 --method POST --path /v1/events --status 202 --body-file "$T/batch.json"
echo '{"events": [{"id": "evt_1", "duplicate": "no"}]}' | body bad-batch
expect "a batch answer with a string duplicate fails" 1 --method POST --path /v1/events \
    --status 202 --body-file "$T/bad-batch.json"
echo '{"events": []}' | body empty-batch
expect "an empty batch answer fails" 1 --method POST --path /v1/events --status 202 \
    --body-file "$T/empty-batch.json"
echo 'not json' | body not-json
expect "a body that is not JSON fails" 1 --method POST --path /v1/events --status 202 \
    --body-file "$T/not-json.json"

# ---- deliveries -------------------------------------------------------------------
body deliveries <<'EOF'
{"data": [
  {"delivery_id": "msg_f2f0cd2442f67ea4692d9ec385d5ae1b", "event_id": "evt_1001",
   "endpoint_id": "ep_tir5qpdugrntshkd93kj", "event_type": "order.paid", "attempts": 2,
   "state": "retrying", "last_status_code": 500, "last_error": "HTTP 500",
   "last_attempt_at": "2026-11-23T15:39:29.828Z", "next_attempt_at": "2026-11-23T15:40:00Z"},
  {"delivery_id": "msg_336084403286ca12e6ad1a8edb2ffb57", "event_id": "evt_1000",
   "endpoint_id": "ep_tir5qpdugrntshkd93kj", "event_type": "order.paid", "attempts": 1,
   "state": "succeeded", "last_status_code": 200, "last_error": null,
   "last_attempt_at": "2026-11-23T15:39:28.001Z", "next_attempt_at": null}],
 "next_cursor": "eyJ0IjoxNzY0fQ"}
EOF
expect "a paginated deliveries list" 0 --method GET \
    --path '/v1/apps/acme/deliveries?outcome=failed&limit=2' --status 200 \
    --body-file "$T/deliveries.json"
sed 's/"next_cursor": "eyJ0IjoxNzY0fQ"/"cursor": null/' "$T/deliveries.json" >"$T/no-cursor.json"
expect "a deliveries list without next_cursor fails" 1 --method GET \
    --path /v1/apps/acme/deliveries --status 200 --body-file "$T/no-cursor.json"
body delivery <<'EOF'
{"delivery_id": "msg_f2f0cd2442f67ea4692d9ec385d5ae1b", "event_id": "evt_1001",
 "endpoint_id": "ep_tir5qpdugrntshkd93kj", "event_type": "order.paid", "attempts": 1,
 "state": "failed", "last_status_code": null, "last_error": "address ::1 is loopback",
 "last_attempt_at": "2026-11-23T15:39:29.828Z", "next_attempt_at": null,
 "attempts_detail": [
   {"attempt": 1, "outcome": "failed", "status_code": null, "latency_ms": 3,
    "error_class": "blocked_address", "error": "address ::1 is loopback",
    "response_snippet": null,
    "request_headers": {"webhook-id": "msg_f2f0cd2442f67ea4692d9ec385d5ae1b",
                        "webhook-timestamp": "1795448369",
                        "webhook-signature": "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4="},
    "attempted_at": "2026-11-23T15:39:29.828Z", "worker": "worker-1"}]}
EOF
expect "a delivery with its attempts" 0 --method GET \
    --path /v1/apps/acme/deliveries/msg_f2f0cd2442f67ea4692d9ec385d5ae1b --status 200 \
    --body-file "$T/delivery.json"
sed 's/"latency_ms": 3/"latency_ms": "3ms"/' "$T/delivery.json" >"$T/bad-attempt.json"
expect "a wrong type in an attempt fails" 1 --method GET \
    --path /v1/apps/acme/deliveries/msg_f2f0cd2442f67ea4692d9ec385d5ae1b --status 200 \
    --body-file "$T/bad-attempt.json"
grep -q 'attempts_detail\[0\]\.latency_ms: must be integer' "$T/out" &&
    ok "the attempt's JSON path is printed" || not_ok "the attempt's JSON path is printed"
echo '{"replayed": 3}' | body replayed
expect "a replay answer" 0 --method POST --path /v1/apps/acme/endpoints/ep_x/replay \
    --status 202 --body-file "$T/replayed.json"
body dead <<'EOF'
{"data": [{"delivery_id": "msg_f2f0cd2442f67ea4692d9ec385d5ae1b", "event_id": "evt_1001",
  "endpoint_id": "ep_tir5qpdugrntshkd93kj", "event_type": "order.paid",
  "reason": "ADDRESS_REFUSED", "detail": "address ::1 is loopback", "attempts": 1,
  "dead_at": "2026-11-23T15:39:29.828Z"}], "next_cursor": null}
EOF
expect "a dead-letter list" 0 --method GET --path /v1/apps/acme/dead-letters --status 200 \
    --body-file "$T/dead.json"

# ---- stats ------------------------------------------------------------------------
body stats <<'EOF'
{"window": "1h", "attempts": 0, "succeeded": 0, "failed": 0, "success_rate": null,
 "latency_ms": {"p50": null, "p95": null, "p99": null}, "payload_bytes": null,
 "retrying": 0, "parked": 0, "last_success_at": null, "last_failure_at": null}
EOF
expect "endpoint stats with no attempts" 0 --method GET \
    --path '/v1/apps/acme/endpoints/ep_x/stats?window=1h' --status 200 --body-file "$T/stats.json"
expect "app stats need endpoints" 1 --method GET --path /v1/apps/acme/stats --status 200 \
    --body-file "$T/stats.json"
sed 's/"window": "1h"/"window": "1h", "endpoints": 3/' "$T/stats.json" >"$T/app-stats.json"
expect "app stats" 0 --method GET --path /v1/apps/acme/stats --status 200 \
    --body-file "$T/app-stats.json"

# ---- operations routes --------------------------------------------------------------
echo '{"status": "ok"}' | body healthz
expect "/healthz" 0 --method GET --path /healthz --status 200 --body-file "$T/healthz.json"
echo '# TYPE x counter' | body metrics
expect "/metrics as Prometheus text" 0 --method GET --path /metrics --status 200 \
    --content-type 'text/plain; version=0.0.4; charset=utf-8' --body-file "$T/metrics.json"
expect "/metrics as JSON is not in the contract" 1 --method GET --path /metrics --status 200 \
    --content-type application/json --body-file "$T/healthz.json"

# ---- not in the contract (exit 2) ---------------------------------------------------------
expect "a status the operation does not document" 2 --method GET \
    --path /v1/apps/acme/endpoints/ep_x --status 418 --body-file "$T/err404.json"
expect "a path that matches no operation" 2 --method GET --path /v1/nothing/here --status 200 \
    --body-file "$T/healthz.json"
expect "a method the path does not have" 2 --method PUT --path /v1/apps/acme/endpoints/ep_x \
    --status 200 --body-file "$T/endpoint.json"
expect "bad usage" 2 --method GET --status 200 --body-file "$T/healthz.json"

# ---- --record ---------------------------------------------------------------------
rec() { # METHOD PATH STATUS CONTENT_TYPE BODYFILE
    node -e 'const [m, p, s, ct, f] = process.argv.slice(1);
        process.stdout.write(JSON.stringify({method: m, path: p, status: Number(s),
            content_type: ct, body: require("fs").readFileSync(f, "utf8")}) + "\n")' "$@"
}
{
    rec GET /v1/apps/acme/endpoints/ep_x 200 application/json "$T/endpoint.json"
    rec POST /v1/events 202 application/json "$T/batch.json"
    rec GET /v1/apps/acme/deliveries 200 application/json "$T/deliveries.json"
    rec DELETE /v1/apps/acme/endpoints/ep_x 204 "" /dev/null
    rec GET /metrics 200 'text/plain; version=0.0.4' "$T/metrics.json"
} >"$T/good.jsonl"
expect "--record over valid responses" 0 --record "$T/good.jsonl"
grep -qx 'checked 5 responses, 0 failed' "$T/out" &&
    ok "--record prints its count" || not_ok "--record prints its count"
{
    cat "$T/good.jsonl"
    rec GET /v1/apps/acme/endpoints/ep_x 200 application/json "$T/no-id.json"
} >"$T/bad.jsonl"
expect "--record with an invalid response" 1 --record "$T/bad.jsonl"
grep -qx 'checked 6 responses, 1 failed' "$T/out" && grep -q '^line 6: ' "$T/out" &&
    ok "--record names the failing line" || not_ok "--record names the failing line"
{
    cat "$T/good.jsonl"
    rec GET /v1/apps/acme/endpoints/ep_x 418 application/json "$T/err404.json"
} >"$T/unmatched.jsonl"
expect "--record with a response the contract does not have" 2 --record "$T/unmatched.jsonl"
for _ in $(seq 40); do cat "$T/good.jsonl"; done >"$T/many.jsonl"
expect "--record over 200 responses (each schema compiled once)" 0 --record "$T/many.jsonl"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
