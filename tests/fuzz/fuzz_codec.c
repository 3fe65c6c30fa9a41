/*
 * fuzz_codec.c - libFuzzer target for lib/codec.c. The first input byte
 * picks the content type (none, JSON, protobuf, other) and the payload
 * limit; the rest is decoded as an events-topic message and as a Delivery.
 * What decodes is re-encoded (Event, Delivery, DeadLetter), decoded again
 * and required to be field-for-field equal; what does not must fail
 * cleanly with a reason, and is dead-lettered with its raw bytes intact.
 *
 *   make   # generates build/gen
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE \
 *       -std=c11 -Ilib -Iproducer -Ibuild/gen tests/fuzz/fuzz_codec.c \
 *       lib/codec.c lib/json.c lib/base64.c lib/buf.c lib/wh.c \
 *       build/gen/webhook/v1/webhook.pb-c.c \
 *       $(pkg-config --cflags --libs libprotobuf-c libcrypto) \
 *       -o /tmp/fuzz_codec
 *   /tmp/fuzz_codec -max_total_time=60
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "codec.h"
#include "webhook/v1/webhook.pb-c.h"

#define BUF_MAX (4 * 1024 * 1024)
#define SMALL_PAYLOAD_MAX 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(c)                                                       \
    do {                                                                 \
        if (!(c))                                                        \
            __builtin_trap();                                            \
    } while (0)

static int mem_eq(const void *a, size_t alen, const void *b, size_t blen)
{
    return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

static int str_eq(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

/* An error result: a non-empty, terminated reason and no message. */
static void require_failure(const char *err, const void *out)
{
    REQUIRE(out == NULL);
    REQUIRE(err[0] != '\0');
    REQUIRE(memchr(err, '\0', WH_ERRLEN) != NULL);
}

static void require_event_eq(const wh_event *a, const wh_event *b)
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

/* The generated code reads the same event back from a DeadLetter. */
static void require_pb_event_eq(const Webhook__V1__Event *pe,
                                const wh_event *ev)
{
    REQUIRE(pe != NULL);
    REQUIRE(str_eq(pe->id, ev->id));
    REQUIRE(str_eq(pe->app, ev->app));
    REQUIRE(str_eq(pe->type, ev->type));
    REQUIRE(str_eq(pe->content_type, ev->content_type));
    REQUIRE(mem_eq(pe->payload.data, pe->payload.len, ev->payload,
                   ev->payload_len));
    REQUIRE(pe->occurred_at_ms == ev->occurred_at_ms);
    REQUIRE(pe->published_at_us == ev->published_at_us);
    REQUIRE(pe->n_endpoint_ids == ev->n_endpoints);
    for (size_t i = 0; i < ev->n_endpoints; i++)
        REQUIRE(str_eq(pe->endpoint_ids[i], ev->endpoint_ids[i]));
    REQUIRE(pe->n_headers == ev->n_headers);
    for (size_t i = 0; i < ev->n_headers; i++) {
        REQUIRE(str_eq(pe->headers[i]->key, ev->headers[i].name));
        REQUIRE(str_eq(pe->headers[i]->value, ev->headers[i].value));
    }
}

static void require_delivery_eq(const wh_delivery *a, const wh_delivery *b)
{
    REQUIRE(str_eq(a->delivery_id, b->delivery_id));
    REQUIRE(str_eq(a->endpoint_id, b->endpoint_id));
    REQUIRE(a->attempt == b->attempt);
    REQUIRE(a->created_at_us == b->created_at_us);
    REQUIRE(str_eq(a->source_topic, b->source_topic));
    REQUIRE(a->source_partition == b->source_partition);
    REQUIRE(a->source_offset == b->source_offset);
    require_event_eq(&a->event, &b->event);
}

/* Event -> protobuf -> Event; Event inside a Delivery -> Delivery; that
 * Delivery inside a DeadLetter -> the generated code. */
static void roundtrip_event(const wh_event *ev, size_t payload_max)
{
    char err[WH_ERRLEN];
    wh_buf b;
    wh_buf_init(&b, BUF_MAX);
    REQUIRE(ev->content_type != NULL);
    REQUIRE(wh_codec_event_validate(ev, payload_max, err, sizeof(err)) ==
            WH_OK);

    REQUIRE(wh_codec_event_encode(ev, &b, err, sizeof(err)) == WH_OK);
    wh_event_msg *m2 = NULL;
    REQUIRE(wh_codec_event_decode(b.data, b.len, WH_CT_PROTOBUF, payload_max,
                                  &m2, err, sizeof(err)) == WH_OK);
    require_event_eq(wh_codec_event(m2), ev);
    wh_codec_event_free(m2);
    /* sniffing finds protobuf too */
    m2 = NULL;
    REQUIRE(wh_codec_event_decode(b.data, b.len, NULL, payload_max, &m2, err,
                                  sizeof(err)) == WH_OK);
    require_event_eq(wh_codec_event(m2), ev);
    wh_codec_event_free(m2);

    char id[WH_DELIVERY_ID_LEN + 1];
    wh_codec_delivery_id(ev->app, ev->id, "ep_fuzz0000", id);
    REQUIRE(strlen(id) == WH_DELIVERY_ID_LEN && memcmp(id, "msg_", 4) == 0);
    wh_delivery d = {
        .delivery_id = id,
        .endpoint_id = "ep_fuzz0000",
        .attempt = 3,
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
    require_delivery_eq(wh_codec_delivery(dm), &d);
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
    REQUIRE(wh_codec_dead_letter_encode(&dl, &b, err, sizeof(err)) == WH_OK);
    Webhook__V1__DeadLetter *pb = webhook__v1__dead_letter__unpack(
        NULL, b.len, (const uint8_t *)b.data);
    REQUIRE(pb != NULL);
    REQUIRE(pb->delivery != NULL);
    REQUIRE(str_eq(pb->delivery->delivery_id, id));
    REQUIRE(pb->delivery->attempt == 3);
    require_pb_event_eq(pb->delivery->event, ev);
    webhook__v1__dead_letter__free_unpacked(pb, NULL);
    wh_buf_free(&b);
}

/* Delivery -> protobuf -> Delivery. */
static void roundtrip_delivery(const wh_delivery *d)
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
    require_delivery_eq(wh_codec_delivery(m2), d);
    wh_codec_delivery_free(m2);
    wh_buf_free(&b);
}

/* An undecodable message is dead-lettered with its bytes intact. */
static void dead_letter_raw(const uint8_t *raw, size_t len, const char *why)
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
    Webhook__V1__DeadLetter *pb = webhook__v1__dead_letter__unpack(
        NULL, b.len, (const uint8_t *)b.data);
    REQUIRE(pb != NULL);
    REQUIRE(pb->delivery == NULL);
    REQUIRE(str_eq(pb->detail, why));
    REQUIRE(mem_eq(pb->raw.data, pb->raw.len, raw, len));
    webhook__v1__dead_letter__free_unpacked(pb, NULL);
    wh_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const cts[] = {NULL, WH_CT_JSON, WH_CT_PROTOBUF,
                                      "text/plain"};
    if (size < 1)
        return 0;
    const char *ct = cts[data[0] & 3];
    size_t payload_max =
        data[0] & 4 ? SMALL_PAYLOAD_MAX : WH_PAYLOAD_DEFAULT_MAX;
    const uint8_t *msg = data + 1;
    size_t len = size - 1;
    char err[WH_ERRLEN];

    wh_event_msg *m = (wh_event_msg *)err;
    err[0] = '\0';
    if (wh_codec_event_decode(msg, len, ct, payload_max, &m, err,
                              sizeof(err)) == WH_OK) {
        REQUIRE(m != NULL);
        roundtrip_event(wh_codec_event(m), payload_max);
        wh_codec_event_free(m);
    } else {
        require_failure(err, m);
        if (data[0] & 8)
            dead_letter_raw(msg, len, err);
    }

    wh_delivery_msg *dm = (wh_delivery_msg *)err;
    err[0] = '\0';
    if (wh_codec_delivery_decode(msg, len, &dm, err, sizeof(err)) == WH_OK) {
        REQUIRE(dm != NULL);
        roundtrip_delivery(wh_codec_delivery(dm));
        wh_codec_delivery_free(dm);
    } else {
        require_failure(err, dm);
    }
    return 0;
}
