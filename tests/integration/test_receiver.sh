#!/usr/bin/env bash
# test_receiver.sh - integration test of webhook-receiver (dev/receiver.c),
# the HTTP endpoint used by the dev stack, the end-to-end tests and the
# benchmarks. Starts real receiver processes on free ports and talks to them
# with curl and raw sockets; signatures are computed here with openssl,
# independently of the C code. Needs curl, openssl and jq (or python3).
#
# usage: tests/integration/test_receiver.sh [--build DIR]
#        (or RECEIVER=/path/to/webhook-receiver)
# Last line: "N passed, N failed"; exit status 1 when anything failed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${BUILD_DIR:-build}
while [ $# -gt 0 ]; do
    case "$1" in
    --build) BUILD=$2; shift 2 ;;
    --build=*) BUILD=${1#--build=}; shift ;;
    *) echo "usage: $0 [--build DIR]" >&2; exit 2 ;;
    esac
done
case "$BUILD" in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
RECEIVER=${RECEIVER:-$BUILD/bin/webhook-receiver}
if [ ! -x "$RECEIVER" ]; then
    echo "missing $RECEIVER (run make first)" >&2
    echo "0 passed, 1 failed"
    exit 1
fi
for tool in curl openssl; do
    command -v "$tool" >/dev/null || { echo "needs $tool" >&2; echo "0 passed, 1 failed"; exit 1; }
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/test_receiver.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PASSED=0
FAILED=0
pass() { PASSED=$((PASSED + 1)); echo "ok   - $1"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL - $1${2:+: $2}"; }
# check NAME EXPECTED ACTUAL
check() {
    if [ "$2" = "$3" ]; then pass "$1"; else fail "$1" "expected '$2', got '$3'"; fi
}

# ---- helpers ----------------------------------------------------------------

# start_receiver NAME [ARGS...]: starts a receiver with a port file, a record
# and a count file under $TMP/NAME.*, waits until it listens, sets PORT.
start_receiver() {
    local name=$1
    shift
    "$RECEIVER" --port-file "$TMP/$name.port" --record "$TMP/$name.jsonl" \
        --count-file "$TMP/$name.count" "$@" \
        >"$TMP/$name.out" 2>"$TMP/$name.err" &
    local pid=$!
    PIDS+=("$pid")
    eval "PID_$name=$pid"
    local i
    for i in $(seq 1 100); do
        if [ -s "$TMP/$name.port" ]; then
            PORT=$(cat "$TMP/$name.port")
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            break
        fi
        sleep 0.05
    done
    echo "receiver $name did not start:" >&2
    cat "$TMP/$name.err" >&2
    return 1
}

# wait_lines FILE N: waits (up to 5 s) until FILE has at least N lines.
wait_lines() {
    local i n
    for i in $(seq 1 100); do
        n=$(wc -l <"$1" 2>/dev/null || echo 0)
        [ "$n" -ge "$2" ] && return 0
        sleep 0.05
    done
    return 1
}

# rec FILE ID FIELD: FIELD of the first record whose webhook_id is ID, as
# text (null -> "null", booleans -> true/false).
# RECORD_TOOL=jq|python3|grep forces one of the readers below.
RECORD_TOOL=${RECORD_TOOL:-$(command -v jq >/dev/null && echo jq ||
    { command -v python3 >/dev/null && echo python3; } || echo grep)}
if [ "$RECORD_TOOL" = jq ]; then
    rec() {
        jq -r --arg id "$2" --arg f "$3" \
            'select(.webhook_id == $id) | .[$f] | tostring' "$1" | head -n 1
    }
    rec_count() { jq -r --arg id "$2" 'select(.webhook_id == $id) | .seq' "$1" | wc -l; }
    rec_statuses() { jq -r --arg id "$2" 'select(.webhook_id == $id) | .status' "$1" | tr '\n' ' ' | sed 's/ $//'; }
    rec_seqs() { jq -r '.seq' "$1" | tr '\n' ' ' | sed 's/ $//'; }
elif [ "$RECORD_TOOL" = python3 ]; then
    PYREC='
import json, sys
mode, path = sys.argv[1], sys.argv[2]
rows = [json.loads(l) for l in open(path) if l.strip()]
def text(v):
    return "null" if v is None else ("true" if v is True else "false" if v is False else str(v))
if mode == "seqs":
    print(" ".join(str(r["seq"]) for r in rows)); sys.exit()
sel = [r for r in rows if r.get("webhook_id") == sys.argv[3]]
if mode == "field":
    print(text(sel[0].get(sys.argv[4])) if sel else "")
elif mode == "count":
    print(len(sel))
elif mode == "statuses":
    print(" ".join(str(r["status"]) for r in sel))
'
    rec() { python3 -c "$PYREC" field "$1" "$2" "$3"; }
    rec_count() { python3 -c "$PYREC" count "$1" "$2"; }
    rec_statuses() { python3 -c "$PYREC" statuses "$1" "$2"; }
    rec_seqs() { python3 -c "$PYREC" seqs "$1"; }
else
    # Crude: works for the plain values this test writes.
    rec() {
        grep -F "\"webhook_id\":\"$2\"" "$1" | head -n 1 |
            sed -n -e "s/.*\"$3\":\"\([^\"]*\)\".*/\1/p" \
                -e "t" -e "s/.*\"$3\":\([^,}]*\).*/\1/p"
    }
    rec_count() { grep -cF "\"webhook_id\":\"$2\"" "$1" || true; }
    rec_statuses() {
        grep -F "\"webhook_id\":\"$2\"" "$1" | sed 's/.*"status":\([0-9]*\).*/\1/' |
            tr '\n' ' ' | sed 's/ $//'
    }
    rec_seqs() { sed 's/^{"seq":\([0-9]*\).*/\1/' "$1" | tr '\n' ' ' | sed 's/ $//'; }
fi

# A 32-byte key, as hex (for openssl) and as a whsec_ secret.
new_key() {
    openssl rand 32 >"$TMP/$1.key"
    eval "HEX_$1=$(od -An -v -tx1 "$TMP/$1.key" | tr -d ' \n')"
    eval "SECRET_$1=whsec_$(base64 -w0 "$TMP/$1.key")"
}

# sign HEXKEY ID TS BODYFILE: prints "v1,<base64 HMAC-SHA256(id.ts.body)>".
sign() {
    local mac
    mac=$({ printf '%s.%s.' "$2" "$3"; cat "$4"; } |
        openssl dgst -sha256 -mac HMAC -macopt "hexkey:$1" -binary | base64 -w0)
    printf 'v1,%s' "$mac"
}

# post PORT PATH ID TS SIG BODYFILE: POSTs, prints the status code.
post() {
    curl -s -o /dev/null -w '%{http_code}' -X POST \
        -H "webhook-id: $3" -H "webhook-timestamp: $4" -H "webhook-signature: $5" \
        -H 'Content-Type: application/json' --data-binary "@$6" \
        "http://127.0.0.1:$1$2"
}

# raw PORT: sends stdin over one TCP connection, prints what came back
# until the server closes the connection (or 5 s pass).
raw() {
    local port=$1
    (
        exec 3<>"/dev/tcp/127.0.0.1/$port"
        cat >&3
        timeout 5 cat <&3
    ) || true
}

now() { date +%s; }
ms_now() { echo $(($(date +%s%N) / 1000000)); }

# ---- the main receiver: default secret plus a path secret ---------------------

new_key A
new_key B
start_receiver main --secret "$SECRET_A" --secret "/other=$SECRET_B"
P=$PORT

check "listening line on stderr" "listening on 127.0.0.1:$P" "$(head -n 1 "$TMP/main.err")"
check "port file is just the port" "1" "$(grep -cE '^[0-9]+$' "$TMP/main.port")"
check "GET /healthz -> 200" "200" \
    "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P/healthz")"

printf '{"type":"order.paid","data":{"id":"ord_1","amount":4200}}' >"$TMP/body1"
TS=$(now)
SIG=$(sign "$HEX_A" msg_signed "$TS" "$TMP/body1")
check "correctly signed POST -> 204" "204" \
    "$(post "$P" /acme/orders msg_signed "$TS" "$SIG" "$TMP/body1")"

printf '{"type":"order.paid","data":{"id":"ord_1","amount":9999}}' >"$TMP/body_tampered"
check "tampered body -> 401" "401" \
    "$(post "$P" /acme/orders msg_tampered "$TS" "$SIG" "$TMP/body_tampered")"

OLD=$((TS - 600))
SIG_OLD=$(sign "$HEX_A" msg_old "$OLD" "$TMP/body1")
check "timestamp outside tolerance -> 401" "401" \
    "$(post "$P" /acme/orders msg_old "$OLD" "$SIG_OLD" "$TMP/body1")"

check "missing signature headers -> 401" "401" \
    "$(curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary @"$TMP/body1" \
        "http://127.0.0.1:$P/acme/orders")"

SIG_B=$(sign "$HEX_B" msg_pathsecret "$TS" "$TMP/body1")
check "path secret: /other/x signed with B -> 204" "204" \
    "$(post "$P" /other/x msg_pathsecret "$TS" "$SIG_B" "$TMP/body1")"
SIG_A2=$(sign "$HEX_A" msg_pathwrong "$TS" "$TMP/body1")
check "path secret: /other/x signed with default -> 401" "401" \
    "$(post "$P" /other/x msg_pathwrong "$TS" "$SIG_A2" "$TMP/body1")"
SIG_ROT=$(sign "$HEX_A" msg_rotation "$TS" "$TMP/body1")
check "several signatures, one matching -> 204" "204" \
    "$(post "$P" /acme/orders msg_rotation "$TS" "v1,AAAA $SIG_ROT" "$TMP/body1")"

# Keep-alive: curl reuses one connection for several URLs.
SIG_KA=$(sign "$HEX_A" msg_keepalive "$TS" "$TMP/body1")
KA=$(curl -s -o /dev/null -w '%{http_code}:%{num_connects} ' -X POST \
    -H "webhook-id: msg_keepalive" -H "webhook-timestamp: $TS" \
    -H "webhook-signature: $SIG_KA" --data-binary @"$TMP/body1" \
    "http://127.0.0.1:$P/ka/1" "http://127.0.0.1:$P/ka/2" "http://127.0.0.1:$P/ka/3")
check "keep-alive: 3 requests, 1 connection" "204:1 204:0 204:0" "$(echo $KA)"

# Pipelining: three requests in one write, the last one closes.
BODY1=$(cat "$TMP/body1")
SIG_PL=$(sign "$HEX_A" msg_pipe "$TS" "$TMP/body1")
REQ="POST /pipe HTTP/1.1\r\nHost: x\r\nwebhook-id: msg_pipe\r\nwebhook-timestamp: $TS\r\nwebhook-signature: $SIG_PL\r\nContent-Length: ${#BODY1}\r\n"
PIPE=$(printf "$REQ\r\n%s${REQ}\r\n%s${REQ}Connection: close\r\n\r\n%s" "$BODY1" "$BODY1" "$BODY1" | raw "$P")
check "pipelining: 3 responses on one connection" "3" \
    "$(printf '%s' "$PIPE" | grep -c '^HTTP/1.1 204')"

# Partial reads: one request dribbled out in pieces.
PARTIAL=$( (
    printf 'POST /partial HTTP/1.1\r\nHost: x\r\nwebhook-id: msg_partial\r\n'
    sleep 0.1
    printf 'webhook-timestamp: %s\r\nwebhook-signature: %s\r\nConnection: close\r\nContent-Le' "$TS" "$(sign "$HEX_A" msg_partial "$TS" "$TMP/body1")"
    sleep 0.1
    printf 'ngth: %d\r\n\r\n%s' "${#BODY1}" "${BODY1:0:10}"
    sleep 0.1
    printf '%s' "${BODY1:10}"
) | raw "$P")
check "partial reads: request in 4 pieces -> 204" "1" \
    "$(printf '%s' "$PARTIAL" | grep -c '^HTTP/1.1 204')"

# Chunked body, decoded before verification.
SIG_CH=$(sign "$HEX_A" msg_chunked "$TS" "$TMP/body1")
check "chunked body -> 204" "204" \
    "$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Transfer-Encoding: chunked' \
        -H "webhook-id: msg_chunked" -H "webhook-timestamp: $TS" \
        -H "webhook-signature: $SIG_CH" --data-binary @"$TMP/body1" \
        "http://127.0.0.1:$P/chunked")"

# Bounds: 4 MiB body is accepted, one byte more is 413; 16 KiB of headers.
head -c 4194304 /dev/urandom >"$TMP/body_max"
SIG_MAX=$(sign "$HEX_A" msg_max "$TS" "$TMP/body_max")
check "4 MiB body -> 204" "204" "$(post "$P" /big msg_max "$TS" "$SIG_MAX" "$TMP/body_max")"
BIG=$(printf 'POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 4194305\r\n\r\n' | raw "$P")
check "4 MiB + 1 body -> 413" "1" "$(printf '%s' "$BIG" | grep -c '^HTTP/1.1 413')"
HDR=$(head -c 17000 /dev/zero | tr '\0' 'a')
check "17000-byte header -> 431" "431" \
    "$(curl -s -o /dev/null -w '%{http_code}' -H "X-Big: $HDR" "http://127.0.0.1:$P/healthz")"
check "garbage request line -> 400" "1" \
    "$(printf 'HELLO\r\n\r\n' | raw "$P" | grep -c '^HTTP/1.1 400')"
check "GET on a webhook path -> 405" "405" \
    "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P/acme/orders")"
check "HTTP/1.0 without keep-alive is answered and closed" "1" \
    "$(printf 'GET /healthz HTTP/1.0\r\n\r\n' | raw "$P" | grep -c '^HTTP/1.1 200')"
EXP=$(curl -s -o /dev/null -w '%{http_code} %{time_total}' -H 'Expect: 100-continue' \
    -X POST --data-binary @"$TMP/body1" -H "webhook-id: msg_expect" \
    -H "webhook-timestamp: $TS" -H "webhook-signature: $(sign "$HEX_A" msg_expect "$TS" "$TMP/body1")" \
    "http://127.0.0.1:$P/expect")
if [ "${EXP% *}" = 204 ] && awk -v t="${EXP#* }" 'BEGIN { exit !(t < 0.5) }'; then
    pass "Expect: 100-continue answered without waiting"
else
    fail "Expect: 100-continue answered without waiting" "$EXP"
fi

# The record.
REC=$TMP/main.jsonl
# signed, tampered, old, unsigned, pathsecret, pathwrong, rotation, 3 ka,
# 3 pipe, partial, chunked, max, expect = 17
wait_lines "$REC" 17 || true
check "record has 17 lines" "17" "$(wc -l <"$REC" | tr -d ' ')"
check "record seq runs 1..17" "$(seq -s ' ' 1 17)" "$(rec_seqs "$REC")"
check "record: signed valid" "true" "$(rec "$REC" msg_signed valid)"
check "record: signed status" "204" "$(rec "$REC" msg_signed status)"
check "record: signed path" "/acme/orders" "$(rec "$REC" msg_signed path)"
check "record: signed timestamp" "$TS" "$(rec "$REC" msg_signed webhook_timestamp)"
check "record: signed signature" "$SIG" "$(rec "$REC" msg_signed webhook_signature)"
check "record: content_type" "application/json" "$(rec "$REC" msg_signed content_type)"
check "record: body_len" "${#BODY1}" "$(rec "$REC" msg_signed body_len)"
check "record: body_b64 is the exact body" "$(base64 -w0 "$TMP/body1")" \
    "$(rec "$REC" msg_signed body_b64)"
check "record: tampered valid" "false" "$(rec "$REC" msg_tampered valid)"
check "record: tampered status" "401" "$(rec "$REC" msg_tampered status)"
check "record: old timestamp valid" "false" "$(rec "$REC" msg_old valid)"
check "record: unsigned request has null id" "1" "$(grep -c '"webhook_id":null' "$REC")"
check "record: path secret valid" "true" "$(rec "$REC" msg_pathsecret valid)"
check "record: keep-alive requests" "3" "$(rec_count "$REC" msg_keepalive)"
check "record: pipelined requests" "204 204 204" "$(rec_statuses "$REC" msg_pipe)"
check "record: partial request valid" "true" "$(rec "$REC" msg_partial valid)"
check "record: chunked body decoded" "$(base64 -w0 "$TMP/body1")" "$(rec "$REC" msg_chunked body_b64)"
check "record: 4 MiB body_len" "4194304" "$(rec "$REC" msg_max body_len)"
check "record: 4 MiB body_b64 round-trips" "$(sha256sum <"$TMP/body_max" | cut -d' ' -f1)" \
    "$(rec "$REC" msg_max body_b64 | base64 -d | sha256sum | cut -d' ' -f1)"
sleep 0.3
check "count file" "17" "$(cat "$TMP/main.count")"

# ---- failure injection: no secret -------------------------------------------

start_receiver ff --fail-first 2
printf '{"type":"x"}' >"$TMP/body2"
FF=""
for i in 1 2 3 4; do
    FF="$FF $(post "$PORT" /ff msg_ff "$(now)" v1,x "$TMP/body2")"
done
check "--fail-first 2: same id" "500 500 204 204" "$(echo $FF)"
check "--fail-first 2: another id starts over" "500" \
    "$(post "$PORT" /ff msg_ff2 "$(now)" v1,x "$TMP/body2")"
wait_lines "$TMP/ff.jsonl" 5 || true
check "--fail-first: recorded statuses" "500 500 204 204" "$(rec_statuses "$TMP/ff.jsonl" msg_ff)"
check "no secret: valid is null" "null" "$(rec "$TMP/ff.jsonl" msg_ff valid)"

start_receiver delay --delay-ms 1000
T0=$(ms_now)
DPIDS=()
for i in 1 2 3 4; do
    curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary @"$TMP/body2" \
        "http://127.0.0.1:$PORT/slow/$i" >"$TMP/d$i.code" &
    DPIDS+=($!)
done
sleep 0.1
HZ0=$(ms_now)
HZ=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/healthz")
HZ1=$(ms_now)
wait "${DPIDS[@]}"
T1=$(ms_now)
check "--delay-ms: delayed responses are 204" "204 204 204 204" "$(for i in 1 2 3 4; do printf '%s ' "$(cat "$TMP/d$i.code")"; done | sed 's/ $//')"
ELAPSED=$((T1 - T0))
# One after the other would take 4000 ms.
if [ "$ELAPSED" -ge 1000 ] && [ "$ELAPSED" -lt 3000 ]; then
    pass "--delay-ms 1000: four concurrent requests took ${ELAPSED} ms in all"
else
    fail "--delay-ms 1000: four concurrent requests took ${ELAPSED} ms (want 1000..3000)"
fi
if [ "$HZ" = 200 ] && [ $((HZ1 - HZ0)) -lt 300 ]; then
    pass "--delay-ms: /healthz answered during the delay"
else
    fail "--delay-ms: /healthz" "$HZ in $((HZ1 - HZ0)) ms"
fi
KAD0=$(ms_now)
KAD=$(curl -s -o /dev/null -w '%{http_code} ' -X POST --data-binary @"$TMP/body2" \
    "http://127.0.0.1:$PORT/a" "http://127.0.0.1:$PORT/b")
KAD1=$(ms_now)
check "--delay-ms: keep-alive requests answered in order" "204 204" "$(echo $KAD)"
if [ $((KAD1 - KAD0)) -ge 1000 ]; then
    pass "--delay-ms: each request on a connection is delayed"
else
    fail "--delay-ms: each request on a connection is delayed" "$((KAD1 - KAD0)) ms"
fi

start_receiver st --status 503 --retry-after 7 --fail-path /broken
ST=$(curl -s -D - -o /dev/null -X POST --data-binary @"$TMP/body2" "http://127.0.0.1:$PORT/x" | tr -d '\r')
check "--status 503" "1" "$(printf '%s\n' "$ST" | grep -c '^HTTP/1.1 503')"
check "--retry-after 7" "Retry-After: 7" "$(printf '%s\n' "$ST" | grep '^Retry-After')"
check "--fail-path wins over --status" "500" \
    "$(curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary @"$TMP/body2" \
        "http://127.0.0.1:$PORT/broken/1")"

start_receiver rate --fail-rate 0.5 --seed 42
R1=""
for i in $(seq 1 20); do
    R1="$R1$(post "$PORT" /r "r$i" 1 v1,x "$TMP/body2" | cut -c1)"
done
start_receiver rate2 --fail-rate 0.5 --seed 42
R2=""
for i in $(seq 1 20); do
    R2="$R2$(post "$PORT" /r "r$i" 1 v1,x "$TMP/body2" | cut -c1)"
done
check "--fail-rate with --seed is deterministic" "$R1" "$R2"
if [[ $R1 == *5* && $R1 == *2* ]]; then
    pass "--fail-rate 0.5: both outcomes seen ($R1)"
else
    fail "--fail-rate 0.5: both outcomes seen" "$R1"
fi

# ---- per-path faults: --fail-window and --delay-path ----------------------------

# /win fails from the start for 3 s, /later from 2.5 s to 10 min; /win/x
# also has --fail-rate 0 behind it and /other has no rule at all. The
# first requests go out right after the receiver listens (well before
# 2.5 s), the second ones once 3.5 s have passed since it started.
W0=$(ms_now)
start_receiver win --fail-window /win=0-3000 --fail-window /later=2500-600000 \
    --fail-rate 0 --retry-after 1
W_EARLY="$(post "$PORT" /win/a fw1 1 v1,x "$TMP/body2") $(post "$PORT" /other fw2 1 v1,x "$TMP/body2") $(post "$PORT" /later/a fw3 1 v1,x "$TMP/body2")"
W_EARLY_MS=$(($(ms_now) - W0))
if [ "$W_EARLY_MS" -lt 2500 ]; then
    check "--fail-window: inside the window 503, other paths and a later window 204" \
        "503 204 204" "$W_EARLY"
else
    fail "--fail-window: early requests took too long to test (${W_EARLY_MS} ms)"
fi
WH=$(curl -s -D - -o /dev/null -X POST --data-binary @"$TMP/body2" \
    "http://127.0.0.1:$PORT/win/b?q=1" | tr -d '\r')
check "--fail-window matches the path without the query, with Retry-After" \
    "HTTP/1.1 503 Service Unavailable|Retry-After: 1" \
    "$(printf '%s\n' "$WH" | grep -E '^(HTTP|Retry-After)' | paste -sd'|')"
while [ $(($(ms_now) - W0)) -lt 3500 ]; do sleep 0.1; done
check "--fail-window: after the window 204, inside the later window 503" "204 204 503" \
    "$(post "$PORT" /win/a fw4 1 v1,x "$TMP/body2") $(post "$PORT" /other fw5 1 v1,x "$TMP/body2") $(post "$PORT" /later/a fw6 1 v1,x "$TMP/body2")"
wait_lines "$TMP/win.jsonl" 7 || true
check "--fail-window: recorded statuses" "503 204" \
    "$(rec_statuses "$TMP/win.jsonl" fw1) $(rec_statuses "$TMP/win.jsonl" fw4)"

# /slow is held 3 s; /slow/quick (longer prefix) and everything else
# fall back to --delay-ms 0 and must not wait for it.
start_receiver dpath --delay-path /slow=3000 --delay-path /slow/quick=0
D0=$(ms_now)
curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary @"$TMP/body2" \
    "http://127.0.0.1:$PORT/slow/1" >"$TMP/dp_slow.code" &
DPSLOW=$!
sleep 0.1
F0=$(ms_now)
FAST="$(curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary @"$TMP/body2" "http://127.0.0.1:$PORT/fast") $(curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary @"$TMP/body2" "http://127.0.0.1:$PORT/slow/quick/1")"
F1=$(ms_now)
wait "$DPSLOW"
D1=$(ms_now)
check "--delay-path: all answered 204" "204 204 204" "$(cat "$TMP/dp_slow.code") $FAST"
if [ $((F1 - F0)) -lt 2000 ]; then
    pass "--delay-path: other paths answered while /slow is held ($((F1 - F0)) ms)"
else
    fail "--delay-path: other paths answered while /slow is held" "$((F1 - F0)) ms"
fi
if [ $((D1 - D0)) -ge 3000 ] && [ $((D1 - D0)) -lt 6000 ]; then
    pass "--delay-path /slow=3000: held $((D1 - D0)) ms"
else
    fail "--delay-path /slow=3000: held 3000..6000 ms" "$((D1 - D0)) ms"
fi
start_receiver dboth --delay-ms 3000 --delay-path /now=0
B0=$(ms_now)
BQ=$(curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary @"$TMP/body2" "http://127.0.0.1:$PORT/now/1")
B1=$(ms_now)
if [ "$BQ" = 204 ] && [ $((B1 - B0)) -lt 2000 ]; then
    pass "--delay-path PREFIX=0 exempts a path from --delay-ms"
else
    fail "--delay-path PREFIX=0 exempts a path from --delay-ms" "$BQ in $((B1 - B0)) ms"
fi
# a windowed delay: /w is held 2 s only while the uptime is in [0, 1500)
start_receiver dwin --delay-path /w=2000@0-1500
V0=$(ms_now)
VQ=$(curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary @"$TMP/body2" "http://127.0.0.1:$PORT/w/1")
V1=$(ms_now)
while [ $(($(ms_now) - V0)) -lt 2100 ]; do sleep 0.1; done
V2=$(ms_now)
VR=$(curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary @"$TMP/body2" "http://127.0.0.1:$PORT/w/2")
V3=$(ms_now)
if [ "$VQ $VR" = "204 204" ] && [ $((V1 - V0)) -ge 2000 ] && [ $((V3 - V2)) -lt 1000 ]; then
    pass "--delay-path PREFIX=MS@FROM-TO: held inside the window, not after"
else
    fail "--delay-path PREFIX=MS@FROM-TO: held inside the window, not after" \
        "$VQ in $((V1 - V0)) ms, $VR in $((V3 - V2)) ms"
fi
"$RECEIVER" --delay-path /w=5@9-3 >/dev/null 2>"$TMP/dwin.err" && rc=0 || rc=$?
check "--delay-path with an empty window is refused" "2 yes" \
    "$rc $(grep -q 'FROM_MS must be below TO_MS' "$TMP/dwin.err" && echo yes)"

# ---- --print -------------------------------------------------------------------

start_receiver pr --print --secret "$SECRET_A"
SIG_PR=$(sign "$HEX_A" msg_print "$TS" "$TMP/body1")
post "$PORT" /acme/orders msg_print "$TS" "$SIG_PR" "$TMP/body1" >/dev/null
for i in $(seq 1 40); do [ -s "$TMP/pr.out" ] && break; sleep 0.05; done
if grep -qE '^[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3} POST /acme/orders  msg_print  \{"type":"order.paid".*  [0-9]+ B  signature ok -> 204$' "$TMP/pr.out"; then
    pass "--print line"
else
    fail "--print line" "$(cat "$TMP/pr.out")"
fi

# ---- shutdown -------------------------------------------------------------------

# Many requests, then SIGTERM right away: every one must be in the record.
for i in $(seq 1 30); do
    echo "url = \"http://127.0.0.1:$P/burst/$i\""
    echo 'output = "/dev/null"'
done >"$TMP/burst.cfg"
curl -s -X POST --data-binary @"$TMP/body2" -K "$TMP/burst.cfg"
kill -TERM "$PID_main"
set +e
wait "$PID_main"
RC=$?
set -e
check "SIGTERM: exit status 0" "0" "$RC"
check "SIGTERM: record flushed (17 + 30 lines)" "47" "$(wc -l <"$REC" | tr -d ' ')"
check "SIGTERM: count file final" "47" "$(cat "$TMP/main.count")"

# ---- connection limit ---------------------------------------------------------

if command -v python3 >/dev/null; then
    start_receiver lim
    LIM=$(python3 - "$PORT" <<'PY'
import socket, sys, time
port = int(sys.argv[1])
held = []
for _ in range(1024):
    s = socket.create_connection(("127.0.0.1", port))
    held.append(s)
# The 1024 connections are open; a request on one more is not served ...
extra = socket.create_connection(("127.0.0.1", port))
extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
extra.settimeout(0.5)
try:
    first = extra.recv(100)
except socket.timeout:
    first = b""
# ... until one of them closes.
held.pop().close()
extra.settimeout(5)
second = b"" if first else extra.recv(100)
# the held connections still work
held[0].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
held[0].settimeout(5)
third = held[0].recv(100)
print("blocked" if not first else "served-early",
      second.split(b"\r\n")[0].decode(), third.split(b"\r\n")[0].decode())
PY
)
    check "1024 connections: the next waits until one closes" \
        "blocked HTTP/1.1 200 OK HTTP/1.1 200 OK" "$LIM"
fi

# ---- arguments -------------------------------------------------------------------

set +e
"$RECEIVER" --bogus >/dev/null 2>&1; A1=$?
"$RECEIVER" --status 99 >/dev/null 2>&1; A2=$?
"$RECEIVER" --fail-rate 1.5 >/dev/null 2>&1; A3=$?
"$RECEIVER" --secret whsec_short >/dev/null 2>&1; A4=$?
"$RECEIVER" --listen 127.0.0.1:99999 >/dev/null 2>&1; A5=$?
"$RECEIVER" extra >/dev/null 2>&1; A6=$?
"$RECEIVER" --help >"$TMP/help" 2>&1; A7=$?
BADW=""
for arg in "--fail-window /x=5-3" "--fail-window /x=3-3" "--fail-window x=0-1" \
    "--fail-window /x=a-1" "--fail-window /x" "--fail-window /x=1-" \
    "--fail-window /x=0-604800001" "--delay-path /x=-1" "--delay-path /x" \
    "--delay-path /x=600001" "--delay-path /x=1 --delay-path /x=2" \
    "--delay-path =5"; do
    # shellcheck disable=SC2086 # one option and its argument per word
    "$RECEIVER" $arg >/dev/null 2>"$TMP/arg.err"
    rc=$?
    [ "$rc" = 2 ] && grep -q -- "${arg%% *}" "$TMP/arg.err" ||
        BADW="$BADW [$arg: exit $rc, $(head -n 1 "$TMP/arg.err")]"
done
set -e
check "bad arguments exit 2" "2 2 2 2 2 2" "$A1 $A2 $A3 $A4 $A5 $A6"
check "bad --fail-window/--delay-path exit 2 naming the option" "" "$BADW"
check "--help exits 0" "0" "$A7"
MISSING=""
for flag in listen port-file secret status fail-first fail-rate seed delay-ms \
    fail-path fail-window delay-path retry-after record print count-file help; do
    grep -q -- "--$flag" "$TMP/help" || MISSING="$MISSING $flag"
done
check "--help documents every flag" "" "$MISSING"

# ---- every receiver exits cleanly (no sanitizer reports) ----------------------------

BAD=""
for name in ff delay st rate rate2 win dpath dboth pr lim; do
    eval "pid=\${PID_$name:-}"
    [ -n "$pid" ] || continue
    kill -TERM "$pid" 2>/dev/null || true
    set +e
    wait "$pid"
    rc=$?
    set -e
    [ "$rc" = 0 ] || BAD="$BAD $name:exit=$rc"
done
for f in "$TMP"/*.err; do
    if grep -qE 'Sanitizer|runtime error' "$f"; then
        BAD="$BAD $(basename "$f" .err):sanitizer"
        cat "$f"
    fi
done
check "all receivers exit 0 on SIGTERM, no sanitizer reports" "" "$BAD"

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
