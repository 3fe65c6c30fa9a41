#!/usr/bin/env bash
# test_intake.sh - events are taken exactly as documented, and responses
# are read only as far as needed. On the events topic: a protobuf Event
# whose id is "pb\0nul" (and a sniffed one with a NUL in a header value),
# events with headers named Webhook_Signature and webhook_id, two headers
# that differ only in case and _ / -, an empty header value and a C1
# control in one; each is dead-lettered with its reason, while the valid
# events around them (one with the id "pb") are delivered, each with its
# own webhook-id. Then an endpoint answering 200 with a 100 MB body is a
# success with a 1 KiB snippet, read in well under a second, its server
# seeing the connection closed long before the body is written; and an
# endpoint trickling its response fails as a timeout after
# WEBHOOK_HTTP_LOW_SPEED_TIME (2 s here), long before WEBHOOK_HTTP_TIMEOUT.
. "$(dirname "$0")/../lib.sh"

LOW_SPEED_S=2
HTTP_TIMEOUT_S=20

stack_up 2
secret=$(new_secret)
start_receiver recv --secret "$secret"
port=$(cat "$T/recv.port")

# A loopback HTTP server for the response tests:
#   /big      200, a 100 MB body (Content-Length); writes the bytes it got
#             out before the client closed to $T/big.written
#   /trickle  200, then one byte of body every 200 ms
python3 - "$T" >"$T/httpd.log" 2>&1 <<'PY' &
import http.server, socketserver, sys, time
T = sys.argv[1]
BIG = 100 * 1024 * 1024
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/big":
            self.send_response(200)
            self.send_header("Content-Length", str(BIG))
            self.end_headers()
            chunk, sent = b"x" * 65536, 0
            try:
                while sent < BIG:
                    self.wfile.write(chunk)
                    sent += len(chunk)
                self.wfile.flush()
            except OSError:
                pass
            with open(T + "/big.written", "w") as f:
                f.write("%d\n" % sent)
        else:
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            try:
                for _ in range(300):
                    self.wfile.write(b"t")
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass
        self.close_connection = True
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
s = S(("127.0.0.1", 0), H)
with open(T + "/httpd.port", "w") as f:
    f.write("%d\n" % s.server_address[1])
s.serve_forever()
PY
PIDS+=($!)
check "the test's HTTP server started" wait_for 10 test -s "$T/httpd.port"
hport=$(cat "$T/httpd.port")

add() { "$BIN/webhookctl" endpoint add --secret "$secret" "$@" >/dev/null; }
add --app intake --events 'i.*' --url "http://127.0.0.1:$port/intake"
add --app resp --events 'r.big' --url "http://127.0.0.1:$hport/big"
add --app resp --events 'r.trickle' --url "http://127.0.0.1:$hport/trickle" \
    --retry-schedule 1h
start_worker w1 WEBHOOK_HTTP_LOW_SPEED_TIME=${LOW_SPEED_S}s \
    WEBHOOK_HTTP_TIMEOUT=${HTTP_TIMEOUT_S}s

# pbevent FILE ID [HEADER_NAME HEADER_VALUE]: a webhook.v1.Event of app
# intake, type i.x and payload {"id":ID}; \0 in ID or the value is a NUL.
pbevent() {
    python3 - "$@" <<'PY'
import sys
def ln(n, b):
    out = bytearray([n << 3 | 2])
    v = len(b)
    while v >= 0x80:
        out.append(v & 0x7f | 0x80); v >>= 7
    out.append(v)
    return bytes(out) + b
a = [x.replace("\\0", "\0").encode() for x in sys.argv[1:]]
msg = ln(1, a[1]) + ln(2, b"intake") + ln(3, b"i.x") + \
      ln(5, b'{"id":"' + a[1].replace(b"\0", b"-") + b'"}')
if len(a) > 2:
    msg += ln(8, ln(1, a[2]) + ln(2, a[3]))
open(sys.argv[1], "wb").write(msg)
PY
}
publish_pb() { # FILE [content-type]
    kcat -P -b "$KAFKA_BROKERS" -t webhook.events -k intake \
        ${2:+-H "content-type=$2"} "$1"
}
json() { # ID HEADERS-JSON
    printf '{"id":"%s","app":"intake","type":"i.x","payload":{"id":"%s"},"headers":%s}\n' \
        "$1" "$1" "$2"
}

pbevent "$T/nul.pb" 'pb\0nul'
pbevent "$T/pb.pb" pb
pbevent "$T/hnul.pb" pb-hnul X-Note 'a\0b'
publish_pb "$T/nul.pb" application/x-protobuf
publish_pb "$T/hnul.pb"
{
    json j-sig '{"Webhook_Signature":"v1,forged"}'
    json j-id '{"webhook_id":"msg_forged"}'
    json j-dup '{"X-Trace":"1","x_trace":"2"}'
    json j-empty '{"X-Note":""}'
    json j-c1 '{"X-Note":"a\u0085b"}'
} | kcat -P -b "$KAFKA_BROKERS" -t webhook.events -k intake
publish_pb "$T/pb.pb" application/x-protobuf
json j-ok '{"X-Trace":"ok","X-Note":"Zo\u00eb"}' |
    kcat -P -b "$KAFKA_BROKERS" -t webhook.events -k intake

# delivered ID: requests the receiver recorded for event ID (payload id)
delivered() {
    python3 - "$T/recv.jsonl" "$1" <<'PY'
import sys, json, base64
n = 0
try:
    for l in open(sys.argv[1]):
        body = json.loads(base64.b64decode(json.loads(l)["body_b64"]))
        n += body.get("id") == sys.argv[2]
except FileNotFoundError:
    pass
print(n)
PY
}
both_delivered() { [ "$(delivered pb)" -ge 1 ] && [ "$(delivered j-ok)" -ge 1 ]; }
check "the valid events behind the refused ones are delivered" \
    wait_for 60 both_delivered
check "the event whose id holds a NUL is not delivered (as \"pb\" or otherwise)" \
    test "$(delivered pb-nul)" -eq 0 -a "$(delivered pb)" -eq 1
for id in pb-hnul j-sig j-id j-dup j-empty j-c1; do
    check "event $id is not delivered" test "$(delivered "$id")" -eq 0
done
check "distinct events never share a webhook-id" python3 - "$T/recv.jsonl" <<'PY'
import sys, json
ids = [json.loads(l).get("webhook_id") for l in open(sys.argv[1])]
sys.exit(0 if len(ids) == len(set(ids)) == 2 else 1)
PY
check "the receiver verified both signatures" \
    test "$(grep -c '"valid":true' "$T/recv.jsonl")" -eq 2

# dead letters: the details of webhook.dead, one per line
details() {
    dead_letters_json "$T/dead.jsonl"
    jq -r .detail "$T/dead.jsonl" >"$T/dead.txt"
    wc -l <"$T/dead.txt"
}
seven_dead() { [ "$(details)" -ge 7 ]; }
check "seven dead letters" wait_for 30 seven_dead
check "no more than seven" test "$(details)" -eq 7
while IFS= read -r want; do
    check "dead letter: $want" grep -qxF -- "$want" "$T/dead.txt"
done <<'EOF'
field "id" contains a NUL character
field "headers" contains a NUL character
header Webhook_Signature is reserved for signing
header webhook_id is reserved for signing
headers X-Trace and x_trace name the same header (names compare without case, _ as -)
header X-Note has an empty value
header X-Note value holds a control character
EOF

# --- responses ---------------------------------------------------------------
printf '{"id":"r1","app":"resp","type":"r.big","payload":{}}\n{"id":"r2","app":"resp","type":"r.trickle","payload":{}}\n' |
    "$BIN/webhook-produce" --quiet
attempt() { # TYPE COLUMNS
    sql "SELECT $2 FROM webhooks.delivery_log WHERE app = 'resp' AND event_type = '$1' LIMIT 1"
}
big_recorded() { [ -n "$(attempt r.big outcome)" ]; }
check "the 100 MB response is recorded" wait_for 30 big_recorded
row=$(attempt r.big "outcome || ' ' || status_code || ' ' || length(response_snippet) || ' ' || latency_ms")
log "100 MB body: outcome, status, snippet bytes, latency ms: $row"
read -r outcome status snippet latency <<<"$row"
check "a 200 with a 100 MB body succeeds" test "$outcome $status" = "succeeded 200"
check "its snippet is WEBHOOK_RESPONSE_SNIPPET (1 KiB)" test "$snippet" -eq 1024
check "it took well under a second" test "$latency" -lt 1000
check "the server finished writing" wait_for 20 test -s "$T/big.written"
written=$(cat "$T/big.written")
log "the server wrote $written of 104857600 bytes before the worker closed"
check "the server saw the connection closed long before 100 MB" \
    test "$written" -lt 26214400

trickle_recorded() { [ -n "$(attempt r.trickle outcome)" ]; }
check "the trickling response is recorded" wait_for 40 trickle_recorded
row=$(attempt r.trickle "outcome || '|' || error_class || '|' || latency_ms || '|' || error")
log "trickle: $row"
IFS='|' read -r outcome class latency error <<<"$row"
check "a trickling endpoint fails as a timeout" test "$outcome $class" = "failed timeout"
check "after about WEBHOOK_HTTP_LOW_SPEED_TIME, not WEBHOOK_HTTP_TIMEOUT" \
    test "$latency" -ge $((LOW_SPEED_S * 1000 - 100)) -a "$latency" -lt $((LOW_SPEED_S * 1000 + 3000))
check "the error says why" test "$error" = \
    "under 1024 bytes/s for $((LOW_SPEED_S * 1000)) ms while receiving the response"

finish
