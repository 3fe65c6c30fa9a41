#!/usr/bin/env python3
# tests/dead_letters.py - decodes the dead letters kcat reads from
# webhook.dead (-f '%k\t%S\t%s\n') into one JSON object per line, for the
# integration tests (tests/lib.sh dead_letters_json). A small protobuf
# wire reader of webhook.v1.DeadLetter (proto/webhook/v1/webhook.proto),
# since the tests have no protoc.
import hashlib
import json
import sys


def varint(b, i):
    v = s = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << s
        s += 7
        if c < 0x80:
            return v, i


def fields(b):
    """The message's fields by number; the last occurrence wins."""
    i, out = 0, {}
    while i < len(b):
        k, i = varint(b, i)
        n, w = k >> 3, k & 7
        if w == 0:
            v, i = varint(b, i)
        elif w == 2:
            ln, i = varint(b, i)
            v = b[i:i + ln]
            i += ln
        elif w == 1:
            v = b[i:i + 8]
            i += 8
        else:
            v = b[i:i + 4]
            i += 4
        out[n] = v
    return out


def text(b):
    return b.decode("utf-8", "replace")


d = sys.stdin.buffer.read()
i = 0
while i < len(d):
    a = d.index(b"\t", i)
    b = d.index(b"\t", a + 1)
    n = int(d[a + 1:b])
    key = text(d[i:a])
    f = fields(d[b + 1:b + 1 + n])
    i = b + 1 + n + 1
    dv = fields(f.get(3, b""))
    ev = fields(dv.get(4, b""))
    raw = f.get(4, b"")
    print(json.dumps({
        "key": key, "size": n, "reason": f.get(1, 0),
        "detail": text(f.get(2, b"")),
        "raw_prefix": len(raw), "raw_len": f.get(12, 0),
        "raw_sha256": f.get(13, b"").hex(),
        "prefix_sha256": hashlib.sha256(raw).hexdigest(),
        "source_partition": f.get(6, 0), "source_offset": f.get(7, 0),
        "bodies_omitted": f.get(16, 0), "payload_len": f.get(14, 0),
        "delivery_id": text(dv.get(1, b"")), "event_id": text(ev.get(1, b"")),
        "payload": len(ev.get(5, b"")),
    }))
