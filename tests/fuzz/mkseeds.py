#!/usr/bin/env python3
"""tests/fuzz/mkseeds.py - writes the seed corpora of the fuzz targets
(tests/fuzz/corpus/<target>/): small, meaningful inputs (valid messages,
edge cases, each bound and its neighbour), named after what they hold.
The seeds are committed; run this again after changing it:

    tests/fuzz/mkseeds.py
"""
import base64
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- protobuf wire format ----------------------------------------------

def varint(v):
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def fv(field, v):
    return varint(field << 3) + varint(v)


def fb(field, data):
    if isinstance(data, str):
        data = data.encode()
    return varint(field << 3 | 2) + varint(len(data)) + data


def event(id="evt_1001", app="acme", type="order.paid",
          payload=b'{"order_id":"ord_1001"}', content_type=None,
          endpoints=(), headers=(), occurred=1767225600000, published=0):
    m = fb(1, id) + fb(2, app) + fb(3, type)
    if occurred:
        m += fv(4, occurred)
    if payload is not None:
        m += fb(5, payload)
    if content_type is not None:
        m += fb(6, content_type)
    for e in endpoints:
        m += fb(7, e)
    for k, v in headers:
        m += fb(8, fb(1, k) + fb(2, v))
    if published:
        m += fv(9, published)
    return m


def delivery(ev, did="msg_" + "0" * 32, ep="ep_abcdefgh", attempt=1,
             created=1767225600000000, topic="webhook.events", part=0,
             offset=0, kind=0):
    m = fb(1, did) + fb(2, ep) + fv(3, attempt) + fb(4, ev)
    m += fv(5, created) + fb(6, topic) + fv(7, part) + fv(8, offset)
    if kind:
        m += fv(9, kind)
    return m


def dead_letter(reason=1, detail="invalid JSON at byte 1", dlv=None,
                raw=None, raw_len=0, sha=None):
    m = fv(1, reason) + fb(2, detail)
    if dlv is not None:
        m += fb(3, dlv)
    if raw is not None:
        m += fb(4, raw)
    m += fb(5, "webhook.events") + fv(6, 3) + fv(7, 42) + fv(8, 5)
    m += fv(9, 500) + fb(10, "HTTP 500") + fv(11, 1767225600000000)
    if raw_len:
        m += fv(12, raw_len)
    if sha is not None:
        m += fb(13, sha)
    return m


def protobuf():
    t = "fuzz_protobuf"
    put(t, "event-minimal", event(payload=None, occurred=0))
    put(t, "event-full", event(
        content_type="application/json",
        endpoints=["ep_abcdefgh", "ep_12345678"],
        headers=[("X-Tenant-Region", "eu-west"), ("X-Source", "crm")],
        published=1767225600000123))
    put(t, "event-binary-payload", event(payload=bytes(range(256)),
                                         content_type="application/octet-stream"))
    put(t, "event-id-123-bytes", event(id="e" * 123))  # sniffs as '{'
    put(t, "event-id-128", event(id="\\" * 128, app="a" * 128, type="t" * 256))
    put(t, "event-id-129", event(id="x" * 129))
    put(t, "event-nul-in-id", event(id="pb\0nul"))
    put(t, "event-nul-in-header", event(headers=[("X-A", "b\0c")]))
    put(t, "event-reserved-header", event(headers=[("Webhook_Signature", "v1,x")]))
    put(t, "event-duplicate-header", event(headers=[("X-A", "1"), ("x_a", "2")]))
    put(t, "event-empty-header-value", event(headers=[("X-A", "")]))
    put(t, "event-surrogate-type", event(type=b"order.\xed\xa0\x80"))
    put(t, "event-100-endpoints", event(endpoints=["ep_%08d" % i for i in range(100)]))
    put(t, "event-101-endpoints", event(endpoints=["ep_%08d" % i for i in range(101)]))
    put(t, "event-16-headers", event(headers=[("X-H%d" % i, "v") for i in range(16)]))
    put(t, "event-17-headers", event(headers=[("X-H%d" % i, "v") for i in range(17)]))
    put(t, "event-negative-time", event(occurred=-1))
    put(t, "event-truncated", event()[:-3])
    put(t, "event-repeated-id", event() + fb(1, "evt_again"))
    put(t, "event-unknown-field", event() + fb(15, "future") + fv(16, 7))
    ev = event(headers=[("X-Tenant-Region", "eu-west")])
    put(t, "delivery-new", delivery(ev))
    put(t, "delivery-retry", delivery(ev, attempt=4, kind=1, part=7, offset=123456))
    put(t, "delivery-replay", delivery(ev, kind=2))
    put(t, "delivery-attempt-max", delivery(ev, attempt=0xFFFFFFFF))
    put(t, "delivery-no-event", fb(1, "msg_" + "0" * 32) + fb(2, "ep_abcdefgh"))
    put(t, "delivery-nul-endpoint", delivery(ev, ep="ep_abc\0defgh"))
    put(t, "dead-letter-raw", dead_letter(raw=b"{\"id\":", raw_len=6,
                                          sha=bytes(32)))
    put(t, "dead-letter-delivery", dead_letter(reason=2, dlv=delivery(ev)))
    put(t, "dead-letter-bad-sha", dead_letter(raw=b"x", sha=bytes(31)))
    put(t, "empty", b"")
    put(t, "varint-overlong", b"\x08" + b"\xff" * 11)


# ---- JSON envelope -----------------------------------------------------

def envelope():
    t = "fuzz_envelope"
    put(t, "docs-order-paid",
        '{"id":"evt_1001","app":"acme","type":"order.paid","payload":'
        '{"order_id":"ord_1001","total_cents":4200,"currency":"EUR"}}')
    put(t, "docs-refunded",
        '{ "id": "evt_1002", "app": "acme", "type": "order.refunded", '
        '"payload": { "order_id" : "ord_1001", "note": "Zo\u00eb \\"VIP\\"  '
        '\\u00e9" }, "headers": {"X-Tenant-Region": "eu-west"}, '
        '"occurred_at_ms": 1767225600000 }')
    put(t, "payload-string", '{"id":"e1","app":"a","type":"t","payload":"just a string"}')
    put(t, "payload-base64",
        '{"id":"e1","app":"a","type":"t","content_type":"application/octet-stream",'
        '"payload_base64":"%s"}' % base64.b64encode(bytes(range(64))).decode())
    put(t, "endpoints",
        '{"id":"e1","app":"a","type":"t","payload":{},"endpoints":'
        '["ep_abcdefgh","ep_12345678"]}')
    put(t, "endpoints-empty", '{"id":"e1","app":"a","type":"t","payload":[],"endpoints":[]}')
    put(t, "headers-16",
        '{"id":"e1","app":"a","type":"t","payload":1,"headers":{%s}}'
        % ",".join('"X-H%d":"v"' % i for i in range(16)))
    put(t, "headers-17",
        '{"id":"e1","app":"a","type":"t","payload":1,"headers":{%s}}'
        % ",".join('"X-H%d":"v"' % i for i in range(17)))
    put(t, "header-reserved", '{"id":"e1","app":"a","type":"t","payload":1,'
                              '"headers":{"webhook_id":"x"}}')
    put(t, "header-duplicate", '{"id":"e1","app":"a","type":"t","payload":1,'
                               '"headers":{"X-A":"1","x_a":"2"}}')
    put(t, "id-128-backslashes",
        '{"id":"%s","app":"%s","type":"%s","payload":null}'
        % ("\\\\" * 128, "a" * 128, "t" * 256))
    put(t, "id-nul", '{"id":"a\\u0000b","app":"a","type":"t","payload":1}')
    put(t, "id-surrogate", '{"id":"\\ud800","app":"a","type":"t","payload":1}')
    put(t, "id-pair", '{"id":"\\ud83d\\ude00","app":"a","type":"t","payload":1}')
    put(t, "raw-surrogate", b'{"id":"e1","app":"a","type":"\xed\xa0\x80","payload":1}')
    put(t, "overlong", b'{"id":"e1","app":"a","type":"\xc0\xaf","payload":1}')
    put(t, "unknown-field", '{"id":"e1","app":"a","type":"t","payload":1,"extra":2}')
    put(t, "repeated-field", '{"id":"e1","id":"e2","app":"a","type":"t","payload":1}')
    put(t, "both-payloads", '{"id":"e1","app":"a","type":"t","payload":1,"payload_base64":"AA=="}')
    put(t, "no-payload", '{"id":"e1","app":"a","type":"t"}')
    put(t, "trailing-data", '{"id":"e1","app":"a","type":"t","payload":1} x')
    put(t, "occurred-big", '{"id":"e1","app":"a","type":"t","payload":1,'
                           '"occurred_at_ms":9223372036854775808}')
    put(t, "deep", '{"id":"e1","app":"a","type":"t","payload":%s1%s}' % ("[" * 200, "]" * 200))
    put(t, "leading-space", ' \n\t{"id":"e1","app":"a","type":"t","payload":1}')
    put(t, "empty", b"")


def json_parser():
    t = "fuzz_json"
    put(t, "object", '{"a":1,"b":[true,false,null],"c":{"d":"e"}}')
    put(t, "numbers", '[0,-0,1.5e10,-2E-3,9223372036854775807,-9223372036854775808,1e400]')
    put(t, "escapes", '["\\"\\\\\\/\\b\\f\\n\\r\\t","\\u00e9\\ud83d\\ude00"]')
    put(t, "utf8", '"Zo\u00eb \u2603 \U0001f600"')
    put(t, "lone-surrogate", '"\\udc00"')
    put(t, "deep", "[" * 300 + "]" * 300)
    put(t, "duplicate-keys", '{"a":1,"a":2}')
    put(t, "bad-utf8", b'"\xed\xa0\x80\xc0\xaf\xf5"')
    put(t, "scalar", "true")


# ---- URLs and address lists --------------------------------------------

def urls():
    t = "fuzz_url"
    for name, u in [
        ("https", "https://example.com/hooks?x=1"),
        ("http-port", "http://example.com:8080/"),
        ("upper-scheme", "HTTPS://Example.COM"),
        ("ipv4", "http://192.0.2.1:65535/x"),
        ("ipv6", "https://[2001:db8::1]:443/hook"),
        ("ipv6-mapped", "http://[::ffff:127.0.0.1]/"),
        ("ipv6-zone", "http://[fe80::1%25eth0]/"),
        ("credentials", "https://user:pass@example.com/"),
        ("fragment", "https://example.com/#frag"),
        ("port-0", "http://example.com:0/"),
        ("port-65536", "http://example.com:65536/"),
        ("numeric-label", "http://example.123/"),
        ("octal-ish", "http://0177.0.0.1/"),
        ("label-63", "https://" + "a" * 63 + ".example/"),
        ("label-64", "https://" + "a" * 64 + ".example/"),
        ("host-253", "https://" + ".".join(["a" * 62] * 4)[:253] + "/"),
        ("host-255", "https://" + ".".join(["a" * 63] * 4) + "/"),
        ("url-2048", "https://example.com/" + "p" * (2048 - 20)),
        ("url-2049", "https://example.com/" + "p" * (2049 - 20)),
        ("backslash", "https://example.com\\@evil.com/"),
        ("ftp", "ftp://example.com/"),
        ("empty-host", "http:///x"),
        ("trailing-dot", "https://example.com./"),
    ]:
        put(t, name, u)


def netlists():
    t = "fuzz_netlist"
    for name, s in [
        ("loopback", "127.0.0.0/8, ::1/128"),
        ("single", "10.1.2.3"),
        ("host-bits", "10.1.2.3/8"),
        ("mapped", "::ffff:10.0.0.0/104"),
        ("zero", "0.0.0.0/0,::/0"),
        ("spaces", "  10.0.0.0/8 ,\t192.168.0.0/16  "),
        ("empty-entry", "10.0.0.0/8,,10.1.0.0/16"),
        ("empty", ""),
        ("blank", "   "),
        ("prefix-33", "10.0.0.0/33"),
        ("prefix-129", "::/129"),
        ("prefix-leading-zero", "10.0.0.0/008"),
        ("v6-full", "2001:0db8:0000:0000:0000:0000:0000:0001/128"),
        ("entry-64", "1111:2222:3333:4444:5555:6666:7777:8888/128" + " " * 21),
        ("256-entries", ",".join("10.0.%d.%d" % (i // 256, i % 256) for i in range(256))),
        ("257-entries", ",".join("10.0.%d.%d" % (i // 256, i % 256) for i in range(257))),
        ("metadata", "169.254.169.254/32, fd00:ec2::254"),
    ]:
        put(t, name, s)


# ---- the metrics server's requests -------------------------------------

def requests():
    t = "fuzz_metrics"
    for name, r in [
        ("get-metrics", "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("head-readyz", "HEAD /readyz HTTP/1.0\r\n\r\n"),
        ("healthz-query", "GET /healthz?x=1#f HTTP/1.1\n\n"),
        ("post", "POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"),
        ("http2", "GET / HTTP/2\r\n\r\n"),
        ("no-version", "GET /metrics\r\n\r\n"),
        ("double-space", "GET  /metrics HTTP/1.1\r\n\r\n"),
        ("absolute-form", "GET http://x/metrics HTTP/1.1\r\n\r\n"),
        ("nul-in-line", "GET /metrics\0 HTTP/1.1\r\n\r\n"),
        ("bare-lf-cr", "GET / HTTP/1.1\n\r\n"),
        ("incomplete", "GET /metrics HTTP/1.1\r\nHost: x\r\n"),
        ("header-8191", "GET / HTTP/1.1\r\nX: " + "a" * (8192 - 23) + "\r\n\r\n"),
        ("header-8192", "GET / HTTP/1.1\r\nX: " + "a" * (8192 - 22) + "\r\n\r\n"),
    ]:
        put(t, name, r)


def utf8():
    t = "fuzz_utf8"
    for name, flags, s in [
        ("ascii", 0, b"hello world"),
        ("controls-kept", 3, b"a\tb\nc\rd"),
        ("controls-dropped", 0, b"a\tb\nc\x00d\x7f\x1b[31m"),
        ("c1", 0, "\u0085\u009b".encode()),
        ("surrogate", 0, b"\xed\xa0\x80"),
        ("overlong", 0, b"\xc0\xaf\xe0\x80\xaf\xf0\x80\x80\xaf"),
        ("above-max", 0, b"\xf4\x90\x80\x80"),
        ("max", 0, b"\xf4\x8f\xbf\xbf"),
        ("f5-ff", 0, b"\xf5\xf8\xfc\xfe\xff"),
        ("truncated", 0, b"\xe2\x82"),
        ("mixed", 1, "Zo\u00eb \u2603 \U0001f600".encode() + b"\x80"),
        ("cut-cap-4", 4 << 2, "\u2603\u2603".encode()),
        ("cut-cap-3", 3 << 2, "\u2603\u2603".encode()),
    ]:
        put(t, name, bytes([flags]) + s)


# ---- the recorder's rows -----------------------------------------------

def rs(s):
    """A string as fuzz_rows reads it (None is NULL)."""
    if s is None:
        return b"\xff"
    if isinstance(s, str):
        s = s.encode()
    if len(s) < 0xFE:
        return bytes([len(s)]) + s
    return b"\xfe" + struct.pack(">H", len(s)) + s


def rn(v):
    """A number as fuzz_rows reads it: 8 raw bytes after selector 0xff."""
    return b"\xff" + struct.pack(">q", v)


def attempt(did="msg_" + "0" * 32, eid="evt_1", ep="ep_abcdefgh", app="acme",
            typ="order.paid", n=1, flags=2, status=200, latency=12,
            cls=None, err=None, snippet=b"ok", at=1767225600000000,
            retry=None, worker="worker-1"):
    b = b"\x00" + rs(did) + rs(eid) + rs(ep) + rs(app) + rs(typ) + rn(n)
    b += bytes([flags | (4 if retry else 0)]) + rn(status) + rn(latency)
    b += rs(cls) + rs(err) + rs(snippet) + rn(at)
    if retry:
        due, blob, rn_attempt = retry
        b += rn(due) + rs(blob) + rn(rn_attempt)
    b += rn(3) + rn(7) + rs(worker)
    return b


def rows():
    t = "fuzz_rows"
    head = b"\x0f\xff\xff"  # 16 items, large bounds
    put(t, "attempt-ok", head + attempt(flags=3))
    put(t, "attempt-retry", head + attempt(status=503, cls="http_status",
                                           err="HTTP 503", snippet=b"busy\n",
                                           retry=(1767225660000000, b"\x0a\x01x", 2)))
    put(t, "attempt-hostile", head + attempt(
        did="\\" * 128, app="a" * 128, typ="t" * 256, status=200,
        err="\\" * 2000, snippet=b"\xed\xa0\x80\x00\xc0\xaf\x1b[2J" * 200,
        n=2 ** 31, latency=-5, at=-1))
    put(t, "attempt-infinity", head + attempt(
        status=0, retry=(2 ** 63 - 1, b"", 2 ** 32 - 1)))
    ev = b"\x01" + rs("acme") + rs("evt_1") + rs("order.paid") + rs(bytes(range(40))) + rn(1767225600000000)
    put(t, "event", head + ev)
    lanes = b""
    for op in range(4):
        lanes += b"\x02" + bytes([op]) + rs("ep_abcdefgh") + rn(3) + rn(7)
        lanes += rs("msg_" + "1" * 32) + rn(2) + rn(op) + rs(b"\x0a\x00")
    put(t, "lanes", head + lanes)
    put(t, "cap-1", b"\x00\xff\xff" + attempt() + attempt())
    put(t, "small-buffer", b"\x0f\x00\x00" + attempt(err="e" * 300) + ev)
    put(t, "mixed", head + attempt() + ev + lanes[:40] + attempt(flags=0, status=500))


if __name__ == "__main__":
    protobuf()
    envelope()
    json_parser()
    urls()
    netlists()
    requests()
    utf8()
    rows()
