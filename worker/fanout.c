/*
 * fanout.c - the fan-out stage: consumes the events topic, decodes each
 * event, stores it in webhooks.events (for replay), finds the endpoints
 * subscribed to it and produces one Delivery per endpoint to the
 * deliveries topic, keyed by endpoint id. An event's offset is stored only
 * after its row is durable and Kafka acknowledged all of its deliveries
 * (or its dead letter); when any of them fails the whole fan-out is repeated,
 * which is safe because delivery ids are derived from (app, event,
 * endpoint). Main thread only.
 */
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "worker.h"

#define RETRY_DELAY_US (1000 * 1000)

typedef struct fo_msg {
    wk_msg_tag tag; /* first: producer reports are routed by it */
    wk_item item;
    wh_kmsg *km;
    int pending;    /* produced messages not yet acknowledged, +1 while
                       the fan-out itself runs */
    bool failed;
    int64_t retry_at_us;
    struct fo_msg *retry_next;
} fo_msg;

struct wk_fanout {
    wk_ctx *ctx;
    wh_kafka_consumer *consumer;
    wk_tracker *tracker;
    wh_buf buf;
    fo_msg *retry_head, *retry_tail;
    bool paused;
    /* scratch for the current event */
    fo_msg *cur;
    const wh_event *cur_ev;
};

static void release(wk_item *item)
{
    fo_msg *m = (fo_msg *)((char *)item - offsetof(fo_msg, item));
    wh_kmsg_destroy(m->km);
    free(m);
}

static void on_rebalance(void *opaque, int assigned, const int32_t *parts,
                         size_t n)
{
    wk_fanout *f = opaque;
    for (size_t i = 0; i < n; i++) {
        if (assigned)
            wk_tracker_assign(f->tracker, parts[i]);
        else
            wk_tracker_revoke(f->tracker, parts[i]);
    }
    WH_INFO("fan-out: %s %zu partitions of %s", assigned ? "assigned" :
            "revoked", n, f->ctx->s->events_topic);
}

int wk_fanout_new(wk_ctx *ctx, wk_fanout **out, char *err, size_t errlen)
{
    *out = NULL;
    wk_fanout *f = calloc(1, sizeof(*f));
    if (!f)
        return wh_errf(err, errlen, "out of memory");
    f->ctx = ctx;
    f->tracker = wk_tracker_new(release);
    wh_buf_init(&f->buf, (size_t)ctx->s->payload_max + 64 * 1024);
    wh_kafka_conf kc = {
        .brokers = ctx->s->kafka_brokers,
        .client_id = ctx->worker_id,
        .extra = ctx->s->kafka_extra,
        .session_timeout_ms = ctx->s->session_timeout_ms,
        .heartbeat_ms = ctx->s->heartbeat_ms,
    };
    if (!f->tracker) {
        wh_errf(err, errlen, "out of memory");
        goto fail;
    }
    if (wh_kafka_consumer_new(&kc, ctx->s->fanout_group,
                              ctx->s->events_topic, on_rebalance, f,
                              &f->consumer, err, errlen) != WH_OK)
        goto fail;
    *out = f;
    return WH_OK;
fail:
    wk_tracker_destroy(f->tracker);
    wh_buf_free(&f->buf);
    free(f);
    return WH_ERR;
}

void wk_fanout_destroy(wk_fanout *f)
{
    if (!f)
        return;
    wh_kafka_consumer_close(f->consumer, 10000);
    wk_recorder_forget(f->ctx->recorder, f);
    wk_tracker_destroy(f->tracker); /* releases held messages */
    wh_kafka_consumer_destroy(f->consumer);
    wh_buf_free(&f->buf);
    free(f);
}

int wk_fanout_fd(wk_fanout *f) { return wh_kafka_consumer_fd(f->consumer); }

size_t wk_fanout_pending(const wk_fanout *f)
{
    return wk_tracker_pending(f->tracker);
}

/* Produces value to topic, waiting for queue space. */
static int produce(wk_ctx *ctx, const char *topic, const char *key,
                   const void *value, size_t len, void *opaque)
{
    char err[WH_ERRLEN];
    for (int tries = 0;; tries++) {
        int rc = wh_kafka_producer_send(ctx->producer, topic, key,
                                        key ? strlen(key) : 0, value, len,
                                        NULL, opaque, err, sizeof(err));
        if (rc == WH_OK)
            return WH_OK;
        if (rc == WH_ERR) {
            WH_ERROR("%s", err);
            return WH_ERR;
        }
        wh_kafka_producer_poll(ctx->producer, 10);
    }
}

static void finish(wk_fanout *f, fo_msg *m)
{
    if (m->failed && !wk_item_revoked(&m->item)) {
        m->failed = false;
        m->retry_at_us = wh_mono_us() + RETRY_DELAY_US;
        m->retry_next = NULL;
        if (f->retry_tail)
            f->retry_tail->retry_next = m;
        else
            f->retry_head = m;
        f->retry_tail = m;
        return;
    }
    wk_tracker_done(f->tracker, &m->item, f->consumer);
}

static void unref(wk_fanout *f, fo_msg *m)
{
    if (--m->pending == 0)
        finish(f, m);
}

static void event_recorded(void *opaque, void *arg)
{
    unref(arg, opaque);
}

/* Queues ev's row for webhooks.events; m waits for it. */
static void store_event(wk_fanout *f, fo_msg *m, const wh_event *ev)
{
    char err[WH_ERRLEN];
    wh_buf_reset(&f->buf);
    if (wh_codec_event_encode(ev, &f->buf, err, sizeof(err)) != WH_OK) {
        WH_ERROR("cannot encode event %s for storage: %s", ev->id, err);
        m->failed = true;
        return;
    }
    wk_event_row row = {
        .app = ev->app,
        .event_id = ev->id,
        .event_type = ev->type,
        .event = f->buf.data,
        .event_len = f->buf.len,
        .received_at_us = wh_wall_us(),
    };
    if (wk_recorder_add_event(f->ctx->recorder, &row, event_recorded, m, f) !=
        WH_OK) {
        WH_ERROR("cannot store event %s", ev->id);
        m->failed = true;
        return;
    }
    m->pending++;
}

static void emit(const wh_endpoint *ep, void *opaque)
{
    wk_fanout *f = opaque;
    fo_msg *m = f->cur;
    const wh_event *ev = f->cur_ev;
    char id[WH_DELIVERY_ID_LEN + 1], err[WH_ERRLEN];
    wh_codec_delivery_id(ev->app, ev->id, ep->id, id);
    wh_delivery d = {
        .delivery_id = id,
        .endpoint_id = ep->id,
        .attempt = 1,
        .created_at_us = wh_wall_us(),
        .source_topic = wh_kmsg_topic(m->km),
        .source_partition = wh_kmsg_partition(m->km),
        .source_offset = wh_kmsg_offset(m->km),
        .event = *ev,
    };
    wh_buf_reset(&f->buf);
    if (wh_codec_delivery_encode(&d, &f->buf, err, sizeof(err)) != WH_OK) {
        WH_ERROR("cannot encode delivery %s: %s", id, err);
        m->failed = true;
        return;
    }
    m->pending++;
    if (produce(f->ctx, f->ctx->s->deliveries_topic, ep->id, f->buf.data,
                f->buf.len, m) != WH_OK) {
        m->pending--;
        m->failed = true;
    }
}

static void dead_letter(wk_fanout *f, fo_msg *m, const char *reason)
{
    size_t len;
    const void *raw = wh_kmsg_value(m->km, &len);
    char err[WH_ERRLEN];
    wh_dead_letter dl = {
        .reason = WH_DEAD_UNDECODABLE,
        .detail = reason,
        .raw = raw,
        .raw_len = len,
        .source_topic = wh_kmsg_topic(m->km),
        .source_partition = wh_kmsg_partition(m->km),
        .source_offset = wh_kmsg_offset(m->km),
        .dead_at_us = wh_wall_us(),
    };
    WH_WARN("event at %s [%d] @ %lld is undecodable, dead-lettered: %s",
            dl.source_topic, (int)dl.source_partition,
            (long long)dl.source_offset, reason);
    wh_buf b; /* sized to the raw message, which may exceed payload_max */
    wh_buf_init(&b, len + 64 * 1024);
    if (wh_codec_dead_letter_encode(&dl, &b, err, sizeof(err)) != WH_OK) {
        WH_ERROR("cannot encode dead letter: %s", err);
        m->failed = true;
    } else {
        m->pending++;
        if (produce(f->ctx, f->ctx->s->dead_topic, NULL, b.data, b.len, m) !=
            WH_OK) {
            m->pending--;
            m->failed = true;
        }
    }
    wh_buf_free(&b);
}

static void fan_out(wk_fanout *f, fo_msg *m)
{
    size_t len;
    const void *val = wh_kmsg_value(m->km, &len);
    const void *ct = NULL;
    size_t ctlen = 0;
    char ctype[WH_CONTENT_TYPE_MAX + 1], err[WH_ERRLEN];
    const char *ctp = NULL;
    if (wh_kmsg_header(m->km, "content-type", &ct, &ctlen) == WH_OK &&
        ctlen < sizeof(ctype)) {
        memcpy(ctype, ct, ctlen);
        ctype[ctlen] = '\0';
        ctp = ctype;
    }
    m->pending = 1;
    wh_event_msg *em;
    if (wh_codec_event_decode(val, len, ctp, (size_t)f->ctx->s->payload_max,
                              &em, err, sizeof(err)) != WH_OK) {
        dead_letter(f, m, err);
        unref(f, m);
        return;
    }
    const wh_event *ev = wh_codec_event(em);
    store_event(f, m, ev);
    f->cur = m;
    f->cur_ev = ev;
    if (ev->n_endpoints) {
        for (size_t i = 0; i < ev->n_endpoints; i++) {
            const wh_endpoint *ep = wk_cache_get(f->ctx->cache,
                                                 ev->endpoint_ids[i]);
            if (!ep || strcmp(ep->app, ev->app) != 0)
                WH_WARN("event %s names endpoint %s, which app %s does not "
                        "have", ev->id, ev->endpoint_ids[i], ev->app);
            else if (ep->disabled)
                WH_INFO("event %s: endpoint %s is disabled", ev->id, ep->id);
            else
                emit(ep, f);
        }
    } else {
        wk_cache_match(f->ctx->cache, ev->app, ev->type, emit, f);
    }
    f->cur = NULL;
    f->cur_ev = NULL;
    wh_codec_event_free(em);
    unref(f, m);
}

void wk_fanout_on_report(wk_fanout *f, void *msg_opaque, int ok,
                         const char *errstr)
{
    fo_msg *m = msg_opaque;
    if (!ok) {
        WH_WARN("fan-out of %s [%d] @ %lld: Kafka did not take a message: "
                "%s; the event will be fanned out again",
                wh_kmsg_topic(m->km), (int)wh_kmsg_partition(m->km),
                (long long)wh_kmsg_offset(m->km), errstr);
        m->failed = true;
    }
    unref(f, m);
}

int wk_fanout_poll(wk_fanout *f, int budget)
{
    int n = 0;
    size_t limit = (size_t)f->ctx->s->max_in_flight;
    if (!f->paused && wk_tracker_pending(f->tracker) >= limit) {
        wh_kafka_consumer_pause_all(f->consumer, 1);
        f->paused = true;
    } else if (f->paused && wk_tracker_pending(f->tracker) < limit / 2) {
        wh_kafka_consumer_pause_all(f->consumer, 0);
        f->paused = false;
    }
    while (n < budget) {
        wh_kmsg *km = wh_kafka_consumer_poll(f->consumer, 0);
        if (!km)
            break;
        n++;
        fo_msg *m = calloc(1, sizeof(*m));
        if (!m) {
            WH_ERROR("out of memory; exiting so the event is redelivered");
            abort();
        }
        m->tag.owner = WK_MSG_FANOUT;
        m->km = km;
        if (wk_tracker_add(f->tracker, &m->item, wh_kmsg_partition(km),
                           wh_kmsg_offset(km)) != WH_OK) {
            wh_kmsg_destroy(km);
            free(m);
            continue;
        }
        fan_out(f, m);
    }
    return n;
}

void wk_fanout_tick(wk_fanout *f)
{
    int64_t now = wh_mono_us();
    while (f->retry_head && f->retry_head->retry_at_us <= now) {
        fo_msg *m = f->retry_head;
        f->retry_head = m->retry_next;
        if (!f->retry_head)
            f->retry_tail = NULL;
        if (wk_item_revoked(&m->item))
            wk_tracker_done(f->tracker, &m->item, f->consumer);
        else
            fan_out(f, m);
    }
}
