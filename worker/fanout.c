/*
 * fanout.c - the fan-out stage (see fanout.h): consumes the events topic,
 * decodes each event, stores it in webhooks.events (for replay, once per
 * event however often its fan-out is repeated), finds the endpoints
 * subscribed to it and produces one Delivery per endpoint to the
 * deliveries topic, keyed by endpoint id. Undecodable events, and events
 * too large for the deliveries topic, go to the dead-letter sender
 * (deadletter.h) instead. An event's offset is stored only after its row
 * is durable and Kafka acknowledged all of its deliveries (or its dead
 * letter). Delivery ids are derived from (app, event, endpoint), so a
 * fan-out done twice makes duplicates, never different deliveries. Main
 * thread only.
 *
 * Order across produce failures. The stage has its own producer, with
 * librdkafka's gapless guarantee: when Kafka refuses a Delivery for good,
 * nothing produced after it to the same partition is written, and the
 * producer fails fatally. The stage then REWINDS: it stops fanning out,
 * gives up every message the producer still holds, waits for their
 * reports, replaces the producer, and seeks every events partition back
 * to its first event not completely fanned out; consumption goes on from
 * there. So a Delivery never reaches its partition after a later event's
 * Delivery to the same endpoint. An event Kafka refused is a suspect:
 * after the rewind it is produced alone (once the producer holds nothing
 * else, and the events after it wait for its reports), so a refusal of
 * its own is told from one of a batch it was in; refused alone twice, it
 * is dead-lettered. One Kafka refused as too large is dead-lettered at
 * once; read again by a rewind, it is skipped, but only once that dead
 * letter is durable (until then the copy read again holds its offset).
 * Rewinds back off from 1 s to 30 s while no event gets through in
 * between.
 *
 * An event whose Delivery finds the producer's queue full WAITS: the
 * endpoints it has not reached yet are kept, consumption pauses, and
 * wk_fanout_tick goes on with them (and then with the events consumed
 * meanwhile, in order) once there is room.
 */
#include "fanout.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deadletter.h"
#include "log.h"
#include "worker.h"

#define RETRY_DELAY_US (1000 * 1000)
/* A rewind waits at least this long (doubling on each rewind that follows
 * another with no event fanned out in between, up to REWIND_DELAY_MAX_US),
 * and gives the producer REWIND_DRAIN_US to report what it held before
 * that is given up once more. */
#define REWIND_DELAY_US (1000 * 1000)
#define REWIND_DELAY_MAX_US (30 * 1000 * 1000)
#define REWIND_DRAIN_US (10 * 1000 * 1000)
/* Refusals after which a suspect event is dead-lettered: one in a batch
 * (or alone), then twice alone. */
#define SUSPECT_GIVE_UP 3
/* Suspects remembered at most (a rewind re-reads them at once; entries of
 * partitions that moved away are forgotten past this). */
#define SUSPECTS_MAX 4096
/* How soon a waiting event tries the producer's queue again when no
 * delivery report wakes the loop first. */
#define WAIT_POLL_MS 10

typedef struct fo_msg {
    wk_msg_tag tag; /* first: producer reports are routed by it */
    wk_item item;
    wk_fanout *f;
    wh_kmsg *km;
    int pending;    /* produced messages not yet acknowledged, +1 while
                       the fan-out itself runs or waits */
    bool failed;    /* repeat the fan-out (one second later) */
    bool refused;   /* Kafka did not take one of its Deliveries: rewind */
    bool noted;     /* ... and refused one itself (suspect_note) */
    bool abandoned; /* a rewind reads it again: never done */
    bool detached;  /* released by a rewind while reports were due: freed
                       by the last of them */
    bool stored;    /* its webhooks.events row was queued */
    bool ended;     /* dead-lettered: done once acknowledged, never
                       repeated */
    bool held;      /* read again while its dead letter is being sent */
    wk_dead dead;
    /* Waiting for room in the producer's queue: the decoded event (NULL
     * when its fan-out has not started yet) and the endpoints not yet
     * reached, from rest[next]. */
    wh_event_msg *em;
    char (*rest)[WH_ENDPOINT_ID_MAX];
    size_t nrest, restcap, next;
    struct fo_msg *wait_next;
    int64_t retry_at_us;
    struct fo_msg *retry_next;
    struct fo_msg *aprev, *anext; /* every message held */
} fo_msg;

/* An event Kafka refused a Delivery of, by "partition:offset". */
typedef struct {
    int refusals;
    bool dead;    /* dead-lettered for its size already: skip it */
    bool sending; /* ... but that dead letter is not durable yet: a copy
                     read again by a rewind waits for it */
    char error[WH_ERRLEN];
} suspect;

struct wk_fanout {
    wk_ctx *ctx;
    wh_kafka_consumer *consumer;
    wh_kafka_producer *producer; /* its own, gapless (see the top) */
    wh_kafka_conf pconf;
    wk_tracker *tracker;
    bool rewinding;
    int64_t rewind_at_us;    /* when the rewind may complete */
    int64_t rewind_drain_us; /* ... give up what is left at */
    int64_t rewind_delay_us; /* the next rewind's wait */
    int64_t rewinds;
    wh_map *suspects;
    fo_msg *solo;            /* a suspect produced alone */
    char broken[WH_ERRLEN];  /* a rewind could not seek: restart */
    /* by events partition: the offset below which every event's row is
     * durable, so a rewind does not store them again */
    int64_t durable_below[WK_TRACKER_PARTITIONS_MAX];
    wh_buf buf;
    fo_msg *retry_head, *retry_tail;
    fo_msg *wait_head, *wait_tail; /* in consumption order */
    size_t waiting;
    fo_msg *all;
    bool paused;
    /* scratch for the current event */
    fo_msg *cur;
    const wh_event *cur_ev;
};

static void drop_rest(fo_msg *m)
{
    wh_codec_event_free(m->em);
    m->em = NULL;
    free(m->rest);
    m->rest = NULL;
    m->nrest = m->restcap = m->next = 0;
}

static void free_msg(wk_fanout *f, fo_msg *m);

/* A rewind releases messages whose reports (an events row, a dead letter)
 * are still due: the last of them frees it. */
static void release(wk_item *item)
{
    fo_msg *m = (fo_msg *)((char *)item - offsetof(fo_msg, item));
    if (m->pending > 0 && m->f->rewinding) {
        m->detached = true;
        return;
    }
    free_msg(m->f, m);
}

static void free_msg(wk_fanout *f, fo_msg *m)
{
    if (f->solo == m)
        f->solo = NULL;
    if (wk_dead_cancel(&m->dead) != WH_OK) {
        /* the producer still holds it: its report must find m */
        WH_ERROR("fan-out message freed while its dead letter is in the "
                 "producer; keeping it");
        return;
    }
    if (m->aprev)
        m->aprev->anext = m->anext;
    else
        f->all = m->anext;
    if (m->anext)
        m->anext->aprev = m->aprev;
    drop_rest(m);
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
    /* a Delivery is at most what the producer takes */
    wh_buf_init(&f->buf, (size_t)wh_kafka_message_max(ctx->s->payload_max));
    wh_kafka_conf kc = {
        .brokers = ctx->s->kafka_brokers,
        .client_id = ctx->worker_id,
        .extra = ctx->s->kafka_extra,
        .session_timeout_ms = ctx->s->session_timeout_ms,
        .heartbeat_ms = ctx->s->heartbeat_ms,
    };
    f->pconf = (wh_kafka_conf){
        .brokers = ctx->s->kafka_brokers,
        .client_id = ctx->worker_id,
        .extra = ctx->s->kafka_extra,
        .keep_order = true, /* deliveries keep their events' order */
        .gapless = true,
        .message_max = wh_kafka_message_max(ctx->s->payload_max),
    };
    f->rewind_delay_us = REWIND_DELAY_US;
    f->suspects = wh_map_new();
    if (!f->tracker || !f->suspects) {
        wh_errf(err, errlen, "out of memory");
        goto fail;
    }
    if (wh_kafka_producer_new(&f->pconf, ctx->on_report, ctx, &f->producer,
                              err, errlen) != WH_OK)
        goto fail;
    wh_kafka_producer_warm(f->producer, ctx->s->deliveries_topic);
    if (wh_kafka_consumer_new(&kc, ctx->s->fanout_group,
                              ctx->s->events_topic, on_rebalance, f,
                              &f->consumer, err, errlen) != WH_OK)
        goto fail;
    *out = f;
    return WH_OK;
fail:
    wh_kafka_producer_destroy(f->producer);
    wk_tracker_destroy(f->tracker);
    wh_map_destroy(f->suspects);
    wh_buf_free(&f->buf);
    free(f);
    return WH_ERR;
}

static void free_suspect(const char *key, void *value, void *opaque)
{
    (void)key;
    (void)opaque;
    free(value);
}

void wk_fanout_destroy(wk_fanout *f)
{
    char err[WH_ERRLEN];
    if (!f)
        return;
    /* what the producer still holds after the shutdown budget is given up
     * (its events are read again by the partitions' next owner); no
     * report arrives after this */
    if (wh_kafka_producer_outq(f->producer) > 0 &&
        wh_kafka_producer_flush(f->producer, wk_stop_left_ms(f->ctx), err,
                                sizeof(err)) != WH_OK) {
        WH_WARN("fan-out: %s; giving them up", err);
        wh_kafka_producer_purge(f->producer);
    }
    wh_kafka_producer_destroy(f->producer);
    f->producer = NULL;
    wh_kafka_consumer_close(f->consumer, wk_stop_left_ms(f->ctx));
    wk_recorder_forget(f->ctx->recorder, f);
    wk_tracker_destroy(f->tracker); /* releases held messages */
    /* messages of revoked partitions the tracker no longer holds */
    while (f->all) {
        fo_msg *m = f->all;
        free_msg(f, m);
        if (f->all == m) /* kept for the producer */
            f->all = m->anext;
    }
    wh_kafka_consumer_destroy(f->consumer);
    wh_map_each(f->suspects, free_suspect, NULL);
    wh_map_destroy(f->suspects);
    wh_buf_free(&f->buf);
    free(f);
}

int wk_fanout_producer_fd(wk_fanout *f)
{
    return wh_kafka_producer_fd(f->producer);
}

void wk_fanout_serve(wk_fanout *f)
{
    wh_kafka_producer_poll(f->producer, 0);
}

size_t wk_fanout_outq(const wk_fanout *f)
{
    return (size_t)wh_kafka_producer_outq(f->producer);
}

int64_t wk_fanout_rewinds(const wk_fanout *f) { return f->rewinds; }

const char *wk_fanout_broken(const wk_fanout *f)
{
    return f->broken[0] ? f->broken : NULL;
}

int wk_fanout_fd(wk_fanout *f) { return wh_kafka_consumer_fd(f->consumer); }

void wk_fanout_commit_soon(wk_fanout *f)
{
    wh_kafka_consumer_commit_soon(f->consumer);
}

size_t wk_fanout_pending(const wk_fanout *f)
{
    return wk_tracker_pending(f->tracker);
}

size_t wk_fanout_waiting(const wk_fanout *f) { return f->waiting; }

static void suspect_key(const fo_msg *m, char *key, size_t len)
{
    snprintf(key, len, "%d:%lld", (int)wh_kmsg_partition(m->km),
             (long long)wh_kmsg_offset(m->km));
}

/* m's entry, or NULL; without a key built while none is remembered (the
 * usual case: every event asks when it is fanned out and when it ends). */
static suspect *suspect_of(wk_fanout *f, const fo_msg *m)
{
    char key[48];
    if (wh_map_size(f->suspects) == 0)
        return NULL;
    suspect_key(m, key, sizeof(key));
    return wh_map_get(f->suspects, key);
}

static void suspect_forget(wk_fanout *f, const fo_msg *m)
{
    char key[48];
    suspect_key(m, key, sizeof(key));
    free(wh_map_del(f->suspects, key));
}

/* Kafka refused one of m's Deliveries (why): one refusal more. */
static void suspect_note(wk_fanout *f, fo_msg *m, const char *why, bool dead)
{
    char key[48];
    suspect *sp = suspect_of(f, m);
    if (!sp) {
        if (wh_map_size(f->suspects) >= SUSPECTS_MAX) {
            WH_WARN("fan-out: %d events refused by Kafka remembered; "
                    "forgetting them", SUSPECTS_MAX);
            wh_map_each(f->suspects, free_suspect, NULL);
            wh_map_destroy(f->suspects);
            f->suspects = wh_map_new();
        }
        suspect_key(m, key, sizeof(key));
        sp = calloc(1, sizeof(*sp));
        if (!f->suspects || !sp ||
            wh_map_put(f->suspects, key, sp, NULL) != WH_OK) {
            WH_ERROR("out of memory; exiting so the event is redelivered");
            abort();
        }
    }
    sp->refusals++;
    sp->dead |= dead;
    wh_strlcpy(sp->error, why ? why : "unknown error", sizeof(sp->error));
}

/* Kafka did not take a Delivery (why): the stage rewinds (see the top). */
static void rewind_start(wk_fanout *f, const char *why)
{
    if (f->rewinding)
        return;
    int64_t now = wh_mono_us();
    f->rewinding = true;
    f->rewinds++;
    f->rewind_at_us = now + f->rewind_delay_us;
    f->rewind_drain_us = now + REWIND_DRAIN_US;
    WH_WARN("fan-out: Kafka did not take a Delivery (%s); giving up what "
            "the producer holds and reading every events partition again "
            "from its first event not fanned out completely, in %lld ms",
            why, (long long)(f->rewind_delay_us / 1000));
    if (f->rewind_delay_us < REWIND_DELAY_MAX_US)
        f->rewind_delay_us *= 2;
    if (!f->paused) {
        wh_kafka_consumer_pause_all(f->consumer, 1);
        f->paused = true;
    }
    wh_kafka_producer_purge_async(f->producer);
}

static void finish(wk_fanout *f, fo_msg *m)
{
    if (f->solo == m)
        f->solo = NULL; /* the events after it go on */
    if (m->detached) { /* a rewind released it: its last report is in */
        free_msg(f, m);
        return;
    }
    if (m->abandoned || (f->rewinding && (m->failed || m->refused)))
        return; /* the rewind reads it again */
    if (m->refused) {
        /* refused outside a rewind cannot be: make one */
        rewind_start(f, "a refused Delivery");
        return;
    }
    if (m->failed && !m->ended && !wk_item_revoked(&m->item)) {
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
    const suspect *sp = suspect_of(f, m);
    if (sp && !(m->ended && sp->dead))
        suspect_forget(f, m); /* it got through */
    if (!f->rewinding)
        f->rewind_delay_us = REWIND_DELAY_US; /* progress since */
    wk_tracker_done(f->tracker, &m->item, f->consumer);
}

static void unref(wk_fanout *f, fo_msg *m)
{
    if (--m->pending == 0)
        finish(f, m);
}

/* m's events row is durable, and so is every row queued before it: rows
 * are written in the order they were queued. */
static void event_recorded(void *opaque, void *arg)
{
    wk_fanout *f = arg;
    fo_msg *m = opaque;
    int32_t pid = wh_kmsg_partition(m->km);
    int64_t next = wh_kmsg_offset(m->km) + 1;
    if (pid >= 0 && pid < WK_TRACKER_PARTITIONS_MAX &&
        next > f->durable_below[pid])
        f->durable_below[pid] = next;
    unref(f, m);
}

/* m's dead letter is durable: in Kafka, or (outcome WK_DEAD_GIVEN_UP)
 * given up and stored in webhooks.unsent_dead_letters, the only record of
 * an undecodable event. Either way the event is done. */
static void dead_done(wk_dead *d, void *owner, int outcome)
{
    (void)outcome; /* the sender logged a fallback or a give-up */
    fo_msg *m = (fo_msg *)((char *)d - offsetof(fo_msg, dead));
    suspect *sp = suspect_of(owner, m);
    if (sp)
        sp->sending = false; /* a copy read again may end now */
    unref(owner, m);
}

/* Ends m's event as a dead letter carrying (a prefix of) its raw bytes. */
static void dead_letter(wk_fanout *f, fo_msg *m, const char *detail)
{
    size_t len;
    const void *raw = wh_kmsg_value(m->km, &len);
    wh_dead_letter dl = {
        .reason = WH_DEAD_UNDECODABLE,
        .detail = detail,
        .raw = raw,
        .raw_len = len,
        .source_topic = wh_kmsg_topic(m->km),
        .source_partition = wh_kmsg_partition(m->km),
        .source_offset = wh_kmsg_offset(m->km),
        .dead_at_us = wh_wall_us(),
    };
    WH_WARN("event at %s [%d] @ %lld (%zu bytes) is dead-lettered: %s",
            dl.source_topic, (int)dl.source_partition,
            (long long)dl.source_offset, len, detail);
    m->ended = true;
    m->pending++;
    wk_dead_send(f->ctx->dead, &m->dead, &dl, NULL, dead_done, f);
}

/* The event cannot go to the deliveries topic (why: the producer's or the
 * broker's refusal): it is dead-lettered once, not repeated. */
static void too_large(wk_fanout *f, fo_msg *m, const char *why)
{
    char detail[WH_ERRLEN + 64];
    if (m->ended)
        return;
    snprintf(detail, sizeof(detail),
             "cannot go to the deliveries topic: %s", why);
    dead_letter(f, m, detail);
}

/* Queues ev's row for webhooks.events (once per event); m waits for it. */
static void store_event(wk_fanout *f, fo_msg *m, const wh_event *ev)
{
    char err[WH_ERRLEN];
    int32_t pid = wh_kmsg_partition(m->km);
    if (m->stored)
        return;
    if (pid >= 0 && pid < WK_TRACKER_PARTITIONS_MAX &&
        wh_kmsg_offset(m->km) < f->durable_below[pid]) {
        m->stored = true; /* read again after a rewind: its row is in */
        return;
    }
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
    m->stored = true;
    m->pending++;
}

/* Produces ev's Delivery to ep, to the partition ep's id maps to. WH_AGAIN
 * when the producer's queue is full or the deliveries topic's partition
 * count is not known yet (nothing was produced); otherwise WH_OK, failures
 * being noted in m. */
static int deliver_to(wk_fanout *f, fo_msg *m, const wh_event *ev,
                      const wh_endpoint *ep)
{
    char id[WH_DELIVERY_ID_LEN + 1], err[WH_ERRLEN];
    if (f->rewinding) { /* the rewind fans it out again */
        m->refused = true;
        return WH_OK;
    }
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
        too_large(f, m, err);
        return WH_OK;
    }
    int32_t part;
    int rc = wh_kafka_producer_partition(f->producer,
                                         f->ctx->s->deliveries_topic, ep->id,
                                         strlen(ep->id), &part, err,
                                         sizeof(err));
    if (rc == WH_OK)
        rc = wh_kafka_producer_send(f->producer,
                                    f->ctx->s->deliveries_topic, part, ep->id,
                                    strlen(ep->id), f->buf.data, f->buf.len,
                                    NULL, m, err, sizeof(err));
    if (rc == WH_OK)
        m->pending++;
    else if (rc == WH_DECLINED)
        too_large(f, m, err);
    else if (rc == WH_ERR) {
        /* a producer that failed fatally, or one that cannot send: a new
         * one, and this event again */
        WH_ERROR("fan-out: %s", err);
        m->refused = true;
        rewind_start(f, err);
    }
    return rc == WH_AGAIN ? WH_AGAIN : WH_OK;
}

static void keep_for_later(fo_msg *m, const char *endpoint_id)
{
    if (m->nrest == m->restcap) {
        size_t cap = m->restcap ? 2 * m->restcap : 16;
        void *p = realloc(m->rest, cap * sizeof(*m->rest));
        if (!p) {
            WH_ERROR("out of memory; exiting so the event is redelivered");
            abort();
        }
        m->rest = p;
        m->restcap = cap;
    }
    wh_strlcpy(m->rest[m->nrest++], endpoint_id, sizeof(*m->rest));
}

static void emit(const wh_endpoint *ep, void *opaque)
{
    wk_fanout *f = opaque;
    fo_msg *m = f->cur;
    if (m->ended)
        return;
    if (m->nrest > 0 || deliver_to(f, m, f->cur_ev, ep) == WH_AGAIN)
        keep_for_later(m, ep->id);
}

/* The endpoint an event names, or NULL (logged) when it cannot get it. */
static const wh_endpoint *named_endpoint(wk_fanout *f, const wh_event *ev,
                                         const char *id)
{
    const wh_endpoint *ep = wk_cache_get(f->ctx->cache, id);
    if (!ep || strcmp(ep->app, ev->app) != 0)
        WH_WARN("event %s names endpoint %s, which app %s does not have",
                ev->id, id, ev->app);
    else if (ep->disabled)
        WH_INFO("event %s: endpoint %s is disabled", ev->id, ep->id);
    else
        return ep;
    return NULL;
}

/* Goes on with a waiting event: the endpoints it did not reach. Returns
 * true while it still waits; otherwise m may be gone. */
static bool go_on(wk_fanout *f, fo_msg *m)
{
    const wh_event *ev = wh_codec_event(m->em);
    while (m->next < m->nrest && !m->ended) {
        const wh_endpoint *ep = named_endpoint(f, ev, m->rest[m->next]);
        if (ep && deliver_to(f, m, ev, ep) == WH_AGAIN)
            return true;
        m->next++;
    }
    drop_rest(m);
    unref(f, m);
    return false;
}

/* Fans m's event out (again). Returns true when it waits for room in the
 * producer's queue (m is then to be resumed with go_on); otherwise m may
 * be gone. */
static bool fan_out(wk_fanout *f, fo_msg *m)
{
    size_t len;
    const void *val = wh_kmsg_value(m->km, &len);
    const void *ct = NULL;
    size_t ctlen = 0;
    char ctype[WH_CONTENT_TYPE_MAX + 1], err[WH_ERRLEN];
    const char *ctp = NULL;
    if (f->solo || f->rewinding)
        return true; /* behind a suspect's reports, or a rewind */
    const suspect *sp = suspect_of(f, m);
    if (sp && sp->dead) { /* dead-lettered before the rewind */
        m->pending = 1;
        if (sp->sending) {
            /* held until that dead letter is durable: looked at again a
             * second later */
            if (!m->held)
                WH_INFO("fan-out: %s [%d] @ %lld waits until its dead "
                        "letter, sent before the rewind, is durable",
                        wh_kmsg_topic(m->km), (int)wh_kmsg_partition(m->km),
                        (long long)wh_kmsg_offset(m->km));
            m->held = true;
            m->failed = true;
        } else
            m->ended = true;
        unref(f, m);
        return false;
    }
    if (sp && sp->refusals >= SUSPECT_GIVE_UP) {
        char detail[WH_ERRLEN + 96];
        snprintf(detail, sizeof(detail),
                 "cannot go to the deliveries topic: Kafka refused it %d "
                 "times, twice alone: %s", sp->refusals, sp->error);
        m->pending = 1;
        suspect_forget(f, m);
        dead_letter(f, m, detail);
        unref(f, m);
        return false;
    }
    if (sp) {
        /* alone: once the producer holds nothing else, and what follows
         * waits for its reports */
        if (wh_kafka_producer_outq(f->producer) > 0)
            return true;
        WH_INFO("fan-out: %s [%d] @ %lld, refused %d times, is produced "
                "alone", wh_kmsg_topic(m->km), (int)wh_kmsg_partition(m->km),
                (long long)wh_kmsg_offset(m->km), sp->refusals);
        f->solo = m;
    }
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
        return false;
    }
    const wh_event *ev = wh_codec_event(em);
    store_event(f, m, ev);
    f->cur = m;
    f->cur_ev = ev;
    if (ev->n_endpoints) {
        for (size_t i = 0; i < ev->n_endpoints; i++) {
            const wh_endpoint *ep = named_endpoint(f, ev,
                                                   ev->endpoint_ids[i]);
            if (ep)
                emit(ep, f);
        }
    } else {
        wk_cache_match(f->ctx->cache, ev->app, ev->type, emit, f);
    }
    f->cur = NULL;
    f->cur_ev = NULL;
    if (m->nrest > 0 && !m->ended) {
        m->em = em; /* go_on continues with it */
        return true;
    }
    wh_codec_event_free(em);
    drop_rest(m);
    unref(f, m);
    return false;
}

void wk_fanout_on_report(wk_fanout *f, void *msg_opaque, int ok,
                         const char *errstr)
{
    fo_msg *m = msg_opaque;
    if (!ok && wh_kafka_error_consequence(errstr)) {
        /* given up because another one was refused */
        m->refused = true;
        rewind_start(f, errstr);
    } else if (!ok) {
        bool size = wh_kafka_error_too_large(errstr);
        if (!m->noted && !m->abandoned && !m->detached) {
            m->noted = true;
            /* one refusal per event and fan-out, however many of its
             * Deliveries the refused request held */
            WH_WARN("fan-out of %s [%d] @ %lld: Kafka refused a Delivery: "
                    "%s", wh_kmsg_topic(m->km), (int)wh_kmsg_partition(m->km),
                    (long long)wh_kmsg_offset(m->km), errstr);
            suspect_note(f, m, errstr, size);
        }
        if (size && !m->ended) {
            suspect *sp = suspect_of(f, m);
            if (sp)
                sp->sending = true; /* until dead_done */
            too_large(f, m, errstr); /* dead-lettered once, not repeated */
        }
        m->refused = true;
        rewind_start(f, errstr);
    }
    unref(f, m);
}

static void wait_append(wk_fanout *f, fo_msg *m)
{
    if (!f->wait_head)
        WH_DEBUG("fan-out: the producer's queue is full; %s [%d] @ %lld "
                 "waits for room (consumption paused)", wh_kmsg_topic(m->km),
                 (int)wh_kmsg_partition(m->km),
                 (long long)wh_kmsg_offset(m->km));
    m->wait_next = NULL;
    if (f->wait_tail)
        f->wait_tail->wait_next = m;
    else
        f->wait_head = m;
    f->wait_tail = m;
    f->waiting++;
}

int wk_fanout_poll(wk_fanout *f, int budget)
{
    int n = 0;
    size_t limit = (size_t)f->ctx->s->max_in_flight;
    bool hold = f->wait_head || f->ctx->stopping || f->rewinding;
    if (!f->paused && (hold || wk_tracker_pending(f->tracker) >= limit)) {
        wh_kafka_consumer_pause_all(f->consumer, 1);
        f->paused = true;
    } else if (f->paused && !hold &&
               wk_tracker_pending(f->tracker) < limit / 2) {
        wh_kafka_consumer_pause_all(f->consumer, 0);
        f->paused = false;
    }
    while (n < budget) {
        /* polled while paused too: rebalances and the poll interval */
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
        m->f = f;
        if (wk_tracker_add(f->tracker, &m->item, wh_kmsg_partition(km),
                           wh_kmsg_offset(km)) != WH_OK) {
            wh_kmsg_destroy(km);
            free(m);
            continue;
        }
        m->anext = f->all;
        if (f->all)
            f->all->aprev = m;
        f->all = m;
        /* behind a waiting event, events wait too: deliveries keep
         * their order */
        if (f->wait_head || f->ctx->stopping || f->rewinding)
            wait_append(f, m);
        else if (fan_out(f, m))
            wait_append(f, m);
    }
    return n;
}

/* wk_tracker_rewind: consumption of partition starts again at offset. */
static void seek_back(int32_t partition, int64_t offset, void *opaque)
{
    wk_fanout *f = opaque;
    char err[WH_ERRLEN];
    WH_INFO("fan-out: %s [%d] is read again from offset %lld",
            f->ctx->s->events_topic, (int)partition, (long long)offset);
    if (wh_kafka_consumer_seek(f->consumer, partition, offset, err,
                               sizeof(err)) != WH_OK) {
        /* the group's committed offset is at or before offset: a restart
         * reads it again */
        wh_strlcpy(f->broken, err, sizeof(f->broken));
    }
}

/* Ends a rewind once the producer reported everything it held: a new
 * producer, every message held given up, consumption from the first event
 * of each partition not fanned out completely. */
static void rewind_finish(wk_fanout *f)
{
    char err[WH_ERRLEN];
    int64_t now = wh_mono_us();
    if (now < f->rewind_at_us)
        return;
    if (wh_kafka_producer_outq(f->producer) > 0) {
        if (now < f->rewind_drain_us)
            return;
        WH_WARN("fan-out: %d Deliveries still unreported after %d s; "
                "giving them up", wh_kafka_producer_outq(f->producer),
                REWIND_DRAIN_US / 1000000);
        wh_kafka_producer_purge(f->producer);
    }
    wh_kafka_producer *p = NULL;
    if (wh_kafka_producer_new(&f->pconf, f->ctx->on_report, f->ctx, &p, err,
                              sizeof(err)) != WH_OK) {
        WH_ERROR("fan-out: a new producer: %s (trying again in a second)",
                 err);
        f->rewind_at_us = now + RETRY_DELAY_US;
        return;
    }
    wh_kafka_producer_destroy(f->producer);
    f->producer = p;
    wh_kafka_producer_warm(p, f->ctx->s->deliveries_topic);
    /* what waits (to be fanned out, or again) is read again */
    for (fo_msg *m = f->wait_head, *next; m; m = next) {
        next = m->wait_next;
        m->abandoned = true;
        if (m->em) {
            drop_rest(m);
            unref(f, m);
        }
    }
    f->wait_head = f->wait_tail = NULL;
    f->waiting = 0;
    for (fo_msg *m = f->retry_head; m; m = m->retry_next)
        m->abandoned = true;
    f->retry_head = f->retry_tail = NULL;
    f->solo = NULL;
    wk_tracker_rewind(f->tracker, seek_back, f);
    f->rewinding = false;
    WH_INFO("fan-out: rewound with a new producer (%lld rewinds so far)",
            (long long)f->rewinds);
}

void wk_fanout_tick(wk_fanout *f)
{
    if (f->ctx->stopping)
        return; /* what waits is read again by the next owner */
    if (f->rewinding) {
        rewind_finish(f);
        return;
    }
    while (f->wait_head) {
        fo_msg *m = f->wait_head, *next = m->wait_next;
        bool waits;
        if (wk_item_revoked(&m->item)) {
            /* its new owner fans it out: produce no more of it */
            if (m->em)
                drop_rest(m);
            else
                m->pending = 1;
            waits = false;
            unref(f, m);
        } else {
            waits = m->em ? go_on(f, m) : fan_out(f, m);
        }
        if (waits)
            return;
        f->wait_head = next;
        if (!next)
            f->wait_tail = NULL;
        f->waiting--;
    }
    int64_t now = wh_mono_us();
    while (f->retry_head && f->retry_head->retry_at_us <= now) {
        fo_msg *m = f->retry_head;
        f->retry_head = m->retry_next;
        if (!f->retry_head)
            f->retry_tail = NULL;
        if (wk_item_revoked(&m->item))
            wk_tracker_done(f->tracker, &m->item, f->consumer);
        else if (fan_out(f, m)) {
            wait_append(f, m);
            return;
        }
    }
}

int64_t wk_fanout_due_ms(const wk_fanout *f)
{
    if (f->ctx->stopping)
        return -1;
    if (f->rewinding || f->wait_head)
        return WAIT_POLL_MS;
    if (!f->retry_head)
        return -1;
    int64_t now = wh_mono_us();
    return f->retry_head->retry_at_us > now
               ? (f->retry_head->retry_at_us - now) / 1000 + 1
               : 0;
}
