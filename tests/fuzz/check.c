/*
 * check.c - the codec round trips and comparisons of check.h, run by the
 * envelope and protobuf fuzz targets on whatever they decoded.
 */
#include "check.h"

#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "utf8.h"

#define BUF_MAX (4 * 1024 * 1024)

static int mem_eq(const void *a, size_t alen, const void *b, size_t blen)
{
    return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

static int str_eq(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

/* Strings that may be absent: NULL and "" are the same on the wire. */
static int opt_eq(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "") == 0;
}

void fuzz_require_failure(const char *err, const void *out)
{
    REQUIRE(out == NULL);
    REQUIRE(memchr(err, '\0', WH_ERRLEN) != NULL);
    REQUIRE(err[0] != '\0');
}

void fuzz_require_event_eq(const wh_event *a, const wh_event *b)
{
    REQUIRE(str_eq(a->id, b->id));
    REQUIRE(str_eq(a->app, b->app));
    REQUIRE(str_eq(a->type, b->type));
    REQUIRE(str_eq(a->content_type, b->content_type));
    REQUIRE(mem_eq(a->payload, a->payload_len, b->payload, b->payload_len));
    REQUIRE(a->occurred_at_ms == b->occurred_at_ms);
    REQUIRE(a->published_at_us == b->published_at_us);
    REQUIRE(a->n_endpoints == b->n_endpoints);
    for (size_t i = 0; i < a->n_endpoints; i++)
        REQUIRE(str_eq(a->endpoint_ids[i], b->endpoint_ids[i]));
    REQUIRE(a->n_headers == b->n_headers);
    for (size_t i = 0; i < a->n_headers; i++) {
        REQUIRE(str_eq(a->headers[i].name, b->headers[i].name));
        REQUIRE(str_eq(a->headers[i].value, b->headers[i].value));
    }
}

void fuzz_require_delivery_eq(const wh_delivery *a, const wh_delivery *b)
{
    REQUIRE(str_eq(a->delivery_id, b->delivery_id));
    REQUIRE(str_eq(a->endpoint_id, b->endpoint_id));
    REQUIRE(a->attempt == b->attempt);
    REQUIRE(a->kind == b->kind);
    REQUIRE(a->created_at_us == b->created_at_us);
    REQUIRE(opt_eq(a->source_topic, b->source_topic));
    REQUIRE(a->source_partition == b->source_partition);
    REQUIRE(a->source_offset == b->source_offset);
    fuzz_require_event_eq(&a->event, &b->event);
}

/* The header rules of docs/events.md ("Limits"), read independently:
 * names of 1-64 token bytes, compared without case and with '_' as '-',
 * none reserved, no two the same; values of 1-1024 bytes of UTF-8 without
 * controls but tab (C1 included) and without space or tab at either end. */
static void require_documented_headers(const wh_event *ev)
{
    static const char *const reserved[] = {
        "content-type", "content-length", "host", "user-agent",
        "connection", "transfer-encoding", "expect", "te", "upgrade",
        "trailer", "keep-alive", "proxy-authorization", "proxy-connection"};
    char keys[WH_EVENT_HEADERS_MAX][65];
    REQUIRE(ev->n_headers <= WH_EVENT_HEADERS_MAX);
    for (size_t i = 0; i < ev->n_headers; i++) {
        const char *name = ev->headers[i].name, *v = ev->headers[i].value;
        size_t n = strlen(name), vn = strlen(v);
        REQUIRE(n >= 1 && n <= 64);
        REQUIRE(strspn(name, "abcdefghijklmnopqrstuvwxyz"
                             "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") == n);
        for (size_t k = 0; k <= n; k++) {
            char c = name[k];
            keys[i][k] = c == '_' ? '-' : (c >= 'A' && c <= 'Z') ? c + 32 : c;
        }
        REQUIRE(strncmp(keys[i], "webhook-", 8) != 0);
        for (size_t r = 0; r < sizeof(reserved) / sizeof(reserved[0]); r++)
            REQUIRE(strcmp(keys[i], reserved[r]) != 0);
        for (size_t j = 0; j < i; j++)
            REQUIRE(strcmp(keys[i], keys[j]) != 0);
        REQUIRE(vn >= 1 && vn <= 1024);
        REQUIRE(v[0] != ' ' && v[0] != '\t' && v[vn - 1] != ' ' &&
                v[vn - 1] != '\t');
        REQUIRE(wh_utf8_valid(v, vn, NULL));
        for (size_t k = 0; k < vn; k++) {
            unsigned char c = (unsigned char)v[k];
            REQUIRE(c >= 0x20 || c == '\t');
            REQUIRE(c != 0x7f);
            if (c == 0xc2)
                REQUIRE((unsigned char)v[k + 1] >= 0xa0);
        }
    }
}

void fuzz_roundtrip_event(const wh_event *ev, size_t payload_max)
{
    char err[WH_ERRLEN];
    wh_buf b;
    wh_buf_init(&b, BUF_MAX);
    REQUIRE(ev->content_type != NULL);
    REQUIRE(ev->payload_len <= payload_max);
    REQUIRE(ev->n_endpoints <= WH_EVENT_ENDPOINTS_MAX);
    REQUIRE(ev->n_headers <= WH_EVENT_HEADERS_MAX);
    REQUIRE(wh_codec_event_validate(ev, payload_max, err, sizeof(err)) ==
            WH_OK);
    require_documented_headers(ev);

    REQUIRE(wh_codec_event_encode(ev, &b, err, sizeof(err)) == WH_OK);
    wh_event_msg *m2 = NULL;
    REQUIRE(wh_codec_event_decode(b.data, b.len, WH_CT_PROTOBUF, payload_max,
                                  &m2, err, sizeof(err)) == WH_OK);
    fuzz_require_event_eq(wh_codec_event(m2), ev);
    wh_codec_event_free(m2);
    /* sniffing finds protobuf too */
    m2 = NULL;
    REQUIRE(wh_codec_event_decode(b.data, b.len, NULL, payload_max, &m2, err,
                                  sizeof(err)) == WH_OK);
    fuzz_require_event_eq(wh_codec_event(m2), ev);
    wh_codec_event_free(m2);

    char id[WH_DELIVERY_ID_LEN + 1];
    wh_codec_delivery_id(ev->app, ev->id, "ep_fuzz0000", id);
    REQUIRE(strlen(id) == WH_DELIVERY_ID_LEN && memcmp(id, "msg_", 4) == 0);
    wh_delivery d = {
        .delivery_id = id,
        .endpoint_id = "ep_fuzz0000",
        .attempt = 3,
        .kind = WH_DELIVERY_RETRY,
        .created_at_us = 1,
        .source_topic = "webhook.events",
        .source_partition = 2,
        .source_offset = 42,
        .event = *ev,
    };
    wh_buf_reset(&b);
    REQUIRE(wh_codec_delivery_encode(&d, &b, err, sizeof(err)) == WH_OK);
    wh_delivery_msg *dm = NULL;
    REQUIRE(wh_codec_delivery_decode(b.data, b.len, &dm, err, sizeof(err)) ==
            WH_OK);
    fuzz_require_delivery_eq(wh_codec_delivery(dm), &d);
    wh_codec_delivery_free(dm);

    wh_dead_letter dl = {
        .reason = WH_DEAD_ATTEMPTS_EXHAUSTED,
        .detail = "fuzz",
        .delivery = &d,
        .attempts = 3,
        .last_status_code = 500,
        .dead_at_us = 7,
    };
    wh_buf_reset(&b);
    size_t want = wh_codec_dead_letter_size(&dl);
    REQUIRE(wh_codec_dead_letter_encode(&dl, &b, err, sizeof(err)) == WH_OK);
    REQUIRE(b.len == want);
    wh_dead_letter_msg *dlm = NULL;
    REQUIRE(wh_codec_dead_letter_decode(b.data, b.len, &dlm, err,
                                        sizeof(err)) == WH_OK);
    const wh_dead_letter *back = wh_codec_dead_letter(dlm);
    REQUIRE(back->reason == WH_DEAD_ATTEMPTS_EXHAUSTED);
    REQUIRE(str_eq(back->detail, "fuzz"));
    REQUIRE(back->attempts == 3 && back->last_status_code == 500);
    REQUIRE(back->delivery != NULL);
    fuzz_require_delivery_eq(back->delivery, &d);
    wh_codec_dead_letter_free(dlm);

    /* without bodies: bounded, the payload left out but counted */
    dl.omit_bodies = true;
    wh_buf_reset(&b);
    REQUIRE(wh_codec_dead_letter_encode(&dl, &b, err, sizeof(err)) == WH_OK);
    REQUIRE(b.len <= WH_DEAD_BARE_MAX);
    dlm = NULL;
    REQUIRE(wh_codec_dead_letter_decode(b.data, b.len, &dlm, err,
                                        sizeof(err)) == WH_OK);
    back = wh_codec_dead_letter(dlm);
    REQUIRE(back->omit_bodies);
    REQUIRE(back->delivery != NULL);
    REQUIRE(back->delivery->event.payload_len == 0);
    REQUIRE(back->payload_total_len == ev->payload_len);
    wh_codec_dead_letter_free(dlm);
    wh_buf_free(&b);
}

void fuzz_roundtrip_delivery(const wh_delivery *d)
{
    char err[WH_ERRLEN];
    wh_buf b;
    wh_buf_init(&b, BUF_MAX);
    REQUIRE(d->attempt >= 1);
    REQUIRE(d->event.content_type != NULL);
    REQUIRE(wh_codec_delivery_encode(d, &b, err, sizeof(err)) == WH_OK);
    wh_delivery_msg *m2 = NULL;
    REQUIRE(wh_codec_delivery_decode(b.data, b.len, &m2, err, sizeof(err)) ==
            WH_OK);
    fuzz_require_delivery_eq(wh_codec_delivery(m2), d);
    wh_codec_delivery_free(m2);
    wh_buf_free(&b);
}

void fuzz_dead_letter_raw(const uint8_t *raw, size_t len, const char *why)
{
    char err[WH_ERRLEN];
    wh_buf b;
    wh_buf_init(&b, BUF_MAX);
    wh_dead_letter dl = {
        .reason = WH_DEAD_UNDECODABLE,
        .detail = why,
        .raw = raw,
        .raw_len = len,
        .source_topic = "webhook.events",
        .dead_at_us = 1,
    };
    REQUIRE(wh_codec_dead_letter_encode(&dl, &b, err, sizeof(err)) == WH_OK);
    wh_dead_letter_msg *m = NULL;
    REQUIRE(wh_codec_dead_letter_decode(b.data, b.len, &m, err,
                                        sizeof(err)) == WH_OK);
    const wh_dead_letter *back = wh_codec_dead_letter(m);
    size_t keep = len < WH_DEAD_RAW_PREFIX_MAX ? len : WH_DEAD_RAW_PREFIX_MAX;
    REQUIRE(back->delivery == NULL);
    REQUIRE(back->reason == WH_DEAD_UNDECODABLE);
    REQUIRE(back->detail != NULL);
    size_t dn = strlen(back->detail);
    REQUIRE(dn <= WH_DEAD_TEXT_MAX);
    REQUIRE(wh_utf8_valid(back->detail, dn, NULL));
    /* a reason that is clean text already is kept as it is (cut) */
    char clean[WH_ERRLEN];
    size_t wn = strlen(why);
    if (wn < sizeof(clean) &&
        wh_utf8_sanitize(clean, sizeof(clean), why, wn, 0, NULL) == wn &&
        memcmp(clean, why, wn) == 0)
        REQUIRE(strncmp(back->detail, why, dn) == 0);
    REQUIRE(mem_eq(back->raw, back->raw_len, raw, keep));
    REQUIRE(back->raw_total_len == len);
    REQUIRE(len == 0 || back->has_raw_sha256);
    wh_codec_dead_letter_free(m);
    wh_buf_free(&b);
}
