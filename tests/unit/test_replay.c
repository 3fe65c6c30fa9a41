/*
 * test_replay.c - unit tests for the pure parts of lib/replay.c: decoding
 * a stored event from its hex text (round trip, bad hex, wrong event, the
 * stored-size and payload limits at and past their bounds) and building
 * the replayed Delivery (same id, next attempt, fresh creation time,
 * replay source, the event unchanged, the output bound) and the partition
 * it goes to (the lane's, else the endpoint id's). Selection and
 * sending need Postgres and Kafka and are covered by
 * tests/integration/test_replay.sh.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "replay.h"
#include "test.h"

#define EP "ep_abcdefgh"
#define DID "msg_0123456789abcdef0123456789abcdef"

static char g_err[WH_ERRLEN];

/* Encodes an event with a payload of n bytes as hex into a new string. */
static char *event_hex(const char *app, const char *id, size_t n,
                       size_t *hexlen)
{
    static const char digits[] = "0123456789abcdef";
    uint8_t *payload = malloc(n ? n : 1);
    wh_header_kv h[] = {{"x-trace", "abc"}};
    const char *eps[] = {EP};
    if (!payload)
        return NULL;
    memset(payload, 'p', n);
    wh_event ev = {
        .id = id,
        .app = app,
        .type = "order.paid",
        .content_type = "application/json",
        .payload = payload,
        .payload_len = n,
        .occurred_at_ms = 1700000000000,
        .published_at_us = 1700000000000001,
        .n_endpoints = 1,
        .endpoint_ids = eps,
        .n_headers = 1,
        .headers = h,
    };
    wh_buf b;
    wh_buf_init(&b, WH_REPLAY_EVENT_MAX * 2);
    char *hex = NULL;
    if (wh_codec_event_encode(&ev, &b, g_err, sizeof(g_err)) == WH_OK) {
        hex = malloc(b.len * 2 + 1);
        for (size_t i = 0; hex && i < b.len; i++) {
            hex[2 * i] = digits[(uint8_t)b.data[i] >> 4];
            hex[2 * i + 1] = digits[(uint8_t)b.data[i] & 15];
        }
        if (hex)
            hex[b.len * 2] = '\0';
        *hexlen = b.len * 2;
    }
    wh_buf_free(&b);
    free(payload);
    return hex;
}

static void test_decode_round_trip(void)
{
    size_t n;
    char *hex = event_hex("acme", "evt_1", 5, &n);
    wh_buf scratch;
    wh_event_msg *m = NULL;
    wh_buf_init(&scratch, WH_REPLAY_EVENT_MAX);
    CHECK(hex != NULL);
    CHECK_INT(wh_replay_decode_event(hex, n, "acme", "evt_1", &scratch, &m,
                                     g_err, sizeof(g_err)),
              WH_OK);
    CHECK(m != NULL);
    if (m) {
        const wh_event *ev = wh_codec_event(m);
        CHECK_STR(ev->id, "evt_1");
        CHECK_STR(ev->app, "acme");
        CHECK_STR(ev->type, "order.paid");
        CHECK_MEM(ev->payload, ev->payload_len, "ppppp", 5);
        CHECK_INT(ev->n_headers, 1);
        CHECK_INT(ev->occurred_at_ms, 1700000000000);
        wh_codec_event_free(m);
    }
    /* upper-case hex is hex too */
    for (size_t i = 0; i < n; i++)
        if (hex[i] >= 'a' && hex[i] <= 'f')
            hex[i] = (char)(hex[i] - 'a' + 'A');
    CHECK_INT(wh_replay_decode_event(hex, n, "acme", "evt_1", &scratch, &m,
                                     g_err, sizeof(g_err)),
              WH_OK);
    wh_codec_event_free(m);
    free(hex);
    wh_buf_free(&scratch);
}

static void test_decode_rejects(void)
{
    size_t n;
    char *hex = event_hex("acme", "evt_1", 5, &n);
    wh_buf scratch;
    wh_event_msg *m = (wh_event_msg *)g_err;
    wh_buf_init(&scratch, WH_REPLAY_EVENT_MAX);
    CHECK(hex != NULL);
    if (!hex)
        return;
    CHECK_INT(wh_replay_decode_event(hex, n, "other", "evt_1", &scratch, &m,
                                     g_err, sizeof(g_err)),
              WH_ERR);
    CHECK(m == NULL);
    CHECK_STR(g_err, "stored event is evt_1 of app acme, expected evt_1 of "
                     "app other");
    CHECK_INT(wh_replay_decode_event(hex, n, "acme", "evt_2", &scratch, &m,
                                     g_err, sizeof(g_err)),
              WH_ERR);
    CHECK_INT(wh_replay_decode_event(hex, n - 1, "acme", "evt_1", &scratch,
                                     &m, g_err, sizeof(g_err)),
              WH_ERR);
    CHECK_STR(g_err, "stored event: odd number of hex digits");
    hex[3] = 'g';
    CHECK_INT(wh_replay_decode_event(hex, n, "acme", "evt_1", &scratch, &m,
                                     g_err, sizeof(g_err)),
              WH_ERR);
    CHECK_STR(g_err, "stored event: bad hex digit at 3");
    CHECK_INT(wh_replay_decode_event("", 0, "acme", "evt_1", &scratch, &m,
                                     g_err, sizeof(g_err)),
              WH_ERR);
    CHECK(strstr(g_err, "does not decode") != NULL);
    CHECK_INT(wh_replay_decode_event("zz", 2, "acme", "evt_1", &scratch, &m,
                                     g_err, sizeof(g_err)),
              WH_ERR);
    free(hex);
    /* a scratch buffer smaller than the event */
    hex = event_hex("acme", "evt_1", 100, &n);
    wh_buf small;
    wh_buf_init(&small, 64);
    CHECK_INT(wh_replay_decode_event(hex, n, "acme", "evt_1", &small, &m,
                                     g_err, sizeof(g_err)),
              WH_ERR);
    CHECK(strstr(g_err, "the limit is 64") != NULL);
    wh_buf_free(&small);
    free(hex);
    wh_buf_free(&scratch);
}

static void test_decode_limits(void)
{
    size_t n;
    wh_buf scratch;
    wh_event_msg *m = NULL;
    wh_buf_init(&scratch, WH_REPLAY_EVENT_MAX);
    /* the largest payload is accepted ... */
    char *hex = event_hex("acme", "evt_1", WH_REPLAY_PAYLOAD_MAX, &n);
    CHECK(hex != NULL);
    CHECK_INT(wh_replay_decode_event(hex, n, "acme", "evt_1", &scratch, &m,
                                     g_err, sizeof(g_err)),
              WH_OK);
    if (m)
        CHECK_INT(wh_codec_event(m)->payload_len, WH_REPLAY_PAYLOAD_MAX);
    wh_codec_event_free(m);
    free(hex);
    /* ... one byte more is not */
    hex = event_hex("acme", "evt_1", WH_REPLAY_PAYLOAD_MAX + 1, &n);
    CHECK(hex != NULL);
    CHECK_INT(wh_replay_decode_event(hex, n, "acme", "evt_1", &scratch, &m,
                                     g_err, sizeof(g_err)),
              WH_ERR);
    CHECK(strstr(g_err, "the limit is 16777216") != NULL);
    free(hex);
    /* stored bytes beyond WH_REPLAY_EVENT_MAX are refused before decoding */
    size_t big = (size_t)WH_REPLAY_EVENT_MAX * 2 + 2;
    char *junk = malloc(big);
    CHECK(junk != NULL);
    if (junk) {
        memset(junk, '0', big);
        CHECK_INT(wh_replay_decode_event(junk, big, "acme", "evt_1",
                                         &scratch, &m, g_err, sizeof(g_err)),
                  WH_ERR);
        CHECK(strstr(g_err, "is 16842753 bytes, the limit is 16842752") !=
              NULL);
        free(junk);
    }
    wh_buf_free(&scratch);
}

static void test_build(void)
{
    size_t n;
    char *hex = event_hex("acme", "evt_1", 5, &n);
    wh_buf scratch, out;
    wh_event_msg *m = NULL;
    wh_buf_init(&scratch, WH_REPLAY_EVENT_MAX);
    wh_buf_init(&out, WH_REPLAY_DELIVERY_MAX);
    CHECK(hex != NULL);
    CHECK_INT(wh_replay_decode_event(hex, n, "acme", "evt_1", &scratch, &m,
                                     g_err, sizeof(g_err)),
              WH_OK);
    if (!m)
        return;
    wh_replay_target t = {
        .delivery_id = DID,
        .endpoint_id = EP,
        .app = "acme",
        .event_id = "evt_1",
        .attempts = 3,
        .next_attempt = 4,
    };
    CHECK(wh_buf_addf(&out, "old content") == WH_OK);
    CHECK_INT(wh_replay_build(&t, wh_codec_event(m), 1234567, &out, g_err,
                              sizeof(g_err)),
              WH_OK);
    wh_delivery_msg *dm = NULL;
    CHECK_INT(wh_codec_delivery_decode(out.data, out.len, &dm, g_err,
                                       sizeof(g_err)),
              WH_OK);
    if (dm) {
        const wh_delivery *d = wh_codec_delivery(dm);
        CHECK_STR(d->delivery_id, DID);
        CHECK_STR(d->endpoint_id, EP);
        CHECK_INT(d->attempt, 4);
        CHECK_INT(d->created_at_us, 1234567);
        CHECK_STR(d->source_topic, WH_REPLAY_SOURCE);
        CHECK_INT(d->source_partition, -1);
        CHECK_INT(d->source_offset, -1);
        CHECK_STR(d->event.id, "evt_1");
        CHECK_STR(d->event.app, "acme");
        CHECK_STR(d->event.content_type, "application/json");
        CHECK_MEM(d->event.payload, d->event.payload_len, "ppppp", 5);
        CHECK_INT(d->event.n_headers, 1);
        CHECK_STR(d->event.headers[0].name, "x-trace");
        CHECK_INT(d->event.n_endpoints, 1);
        wh_codec_delivery_free(dm);
    }
    /* an output bound too small: error, buffer left empty */
    wh_buf tiny;
    wh_buf_init(&tiny, 16);
    CHECK_INT(wh_replay_build(&t, wh_codec_event(m), 1, &tiny, g_err,
                              sizeof(g_err)),
              WH_ERR);
    CHECK_INT(tiny.len, 0);
    wh_buf_free(&tiny);
    wh_codec_event_free(m);
    free(hex);
    wh_buf_free(&scratch);
    wh_buf_free(&out);
}

/* The partition a replay goes to: the lane's when the endpoint has one
 * the topic has, else the endpoint id's. */
static void test_partition(void)
{
    wh_replay_target t;
    memset(&t, 0, sizeof(t));
    t.endpoint_id = EP;
    int32_t by_key8 = wh_kafka_partition_of(EP, strlen(EP), 8);
    int32_t other = (by_key8 + 3) % 8;
    t.lane_partition = -1; /* open lane */
    CHECK_INT(wh_replay_partition(&t, 8), by_key8);
    CHECK_INT(wh_replay_partition(&t, 1), 0);
    t.lane_partition = other; /* the lane's partition wins over the key's */
    CHECK_INT(wh_replay_partition(&t, 8), other);
    t.lane_partition = 0;
    CHECK_INT(wh_replay_partition(&t, 8), 0);
    t.lane_partition = 7;
    CHECK_INT(wh_replay_partition(&t, 8), 7);
    /* a lane partition the topic does not have: the key's */
    t.lane_partition = 8;
    CHECK_INT(wh_replay_partition(&t, 8), by_key8);
    t.lane_partition = 5;
    CHECK_INT(wh_replay_partition(&t, 4),
              wh_kafka_partition_of(EP, strlen(EP), 4));
}

TEST_MAIN(test_decode_round_trip, test_decode_rejects, test_decode_limits,
          test_build, test_partition)
