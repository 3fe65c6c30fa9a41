/*
 * fuzz_protobuf.c - libFuzzer target for the protobuf side of lib/codec.c:
 * the input is decoded as an events-topic webhook.v1.Event (content type
 * application/x-protobuf), as a webhook.v1.Delivery and as a
 * webhook.v1.DeadLetter. What decodes is re-encoded, decoded again and
 * required to be field-for-field equal (check.c); an accepted Event has no
 * NUL inside a string field (protobuf-c would cut the C string there, so
 * two events would share a webhook-id) and its payload bound is exact;
 * what does not decode fails with a reason and dead-letters within the
 * documented prefix. Seeds: corpus/fuzz_protobuf/ (made by mkseeds.py).
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

/* Reads a varint at p[*i..n); false when it runs past n or 10 bytes. */
static bool varint(const uint8_t *p, size_t n, size_t *i, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 70 && *i < n; shift += 7) {
        uint8_t b = p[(*i)++];
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return true;
    }
    return false;
}

/* Walks the fields of one message at p[0..n): calls fn for each
 * length-delimited field; false when the wire format is broken. */
static bool walk(const uint8_t *p, size_t n,
                 void (*fn)(uint32_t field, const uint8_t *v, size_t len,
                            void *opaque),
                 void *opaque)
{
    size_t i = 0;
    while (i < n) {
        uint64_t key, v;
        if (!varint(p, n, &i, &key))
            return false;
        switch (key & 7) {
        case 0:
            if (!varint(p, n, &i, &v))
                return false;
            break;
        case 1:
            if (n - i < 8)
                return false;
            i += 8;
            break;
        case 5:
            if (n - i < 4)
                return false;
            i += 4;
            break;
        case 2:
            if (!varint(p, n, &i, &v) || v > n - i)
                return false;
            fn((uint32_t)(key >> 3), p + i, (size_t)v, opaque);
            i += (size_t)v;
            break;
        default:
            return false;
        }
    }
    return true;
}

/* The bytes of each singular string field (the last occurrence counts)
 * and whether any repeated one holds a NUL. */
typedef struct {
    bool nul[16];      /* singular string field f: its last value has one */
    bool repeated_nul; /* endpoint_ids or a header key or value */
} strings;

static void header_entry(uint32_t f, const uint8_t *v, size_t len, void *o)
{
    if ((f == 1 || f == 2) && memchr(v, 0, len))
        *(bool *)o = true;
}

static void event_field(uint32_t f, const uint8_t *v, size_t len, void *o)
{
    strings *s = o;
    bool nul = len && memchr(v, 0, len) != NULL;
    if (f == 1 || f == 2 || f == 3 || f == 6)
        s->nul[f] = nul;
    else if (f == 7 && nul)
        s->repeated_nul = true;
    else if (f == 8)
        (void)walk(v, len, header_entry, &s->repeated_nul);
}

/* An accepted Event never had a NUL in a string field. */
static void require_no_nul(const uint8_t *msg, size_t len)
{
    strings s;
    memset(&s, 0, sizeof(s));
    if (!walk(msg, len, event_field, &s))
        return; /* protobuf-c accepted what this walk does not read */
    for (size_t f = 0; f < 16; f++)
        REQUIRE(!s.nul[f]);
    REQUIRE(!s.repeated_nul);
}

/* The payload limit holds exactly: one byte less refuses the event. */
static void require_payload_bound(const uint8_t *msg, size_t len,
                                  const wh_event *ev)
{
    char err[WH_ERRLEN];
    wh_event_msg *m = NULL;
    REQUIRE(wh_codec_event_decode(msg, len, WH_CT_PROTOBUF, ev->payload_len,
                                  &m, err, sizeof(err)) == WH_OK);
    wh_codec_event_free(m);
    if (ev->payload_len == 0)
        return;
    m = (wh_event_msg *)err;
    REQUIRE(wh_codec_event_decode(msg, len, WH_CT_PROTOBUF,
                                  ev->payload_len - 1, &m, err,
                                  sizeof(err)) == WH_ERR);
    fuzz_require_failure(err, m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[WH_ERRLEN];

    wh_event_msg *m = (wh_event_msg *)err;
    err[0] = '\0';
    if (wh_codec_event_decode(data, size, WH_CT_PROTOBUF,
                              WH_PAYLOAD_DEFAULT_MAX, &m, err,
                              sizeof(err)) == WH_OK) {
        REQUIRE(m != NULL);
        const wh_event *ev = wh_codec_event(m);
        require_no_nul(data, size);
        require_payload_bound(data, size, ev);
        fuzz_roundtrip_event(ev, WH_PAYLOAD_DEFAULT_MAX);
        wh_codec_event_free(m);
    } else {
        fuzz_require_failure(err, m);
        fuzz_dead_letter_raw(data, size, err);
    }

    wh_delivery_msg *dm = (wh_delivery_msg *)err;
    err[0] = '\0';
    if (wh_codec_delivery_decode(data, size, &dm, err, sizeof(err)) ==
        WH_OK) {
        REQUIRE(dm != NULL);
        fuzz_roundtrip_delivery(wh_codec_delivery(dm));
        wh_codec_delivery_free(dm);
    } else {
        fuzz_require_failure(err, dm);
    }

    wh_dead_letter_msg *dlm = (wh_dead_letter_msg *)err;
    err[0] = '\0';
    if (wh_codec_dead_letter_decode(data, size, &dlm, err, sizeof(err)) ==
        WH_OK) {
        REQUIRE(dlm != NULL);
        const wh_dead_letter *dl = wh_codec_dead_letter(dlm);
        if (dl->delivery)
            fuzz_roundtrip_delivery(dl->delivery);
        REQUIRE(dl->raw_len == 0 || dl->raw != NULL);
        wh_codec_dead_letter_free(dlm);
    } else {
        fuzz_require_failure(err, dlm);
    }
    return 0;
}
