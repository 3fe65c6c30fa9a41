/*
 * deliver.c - the delivery stage: consumes the deliveries topic, routes
 * each delivery into its endpoint's lane (lane.h), drains lanes from
 * Postgres (lanestore.h) within the drain budget, and is the stage's
 * interface (deliver.h). Attempts and what their outcomes imply are in
 * outcome.c, taking and revoking partitions in rebalance.c. A message's
 * offset is stored only once its outcome is durable in Postgres (an
 * attempt row, a retry, a parked row) or its dead letter is in Kafka.
 * Main thread only.
 *
 * Ordered lanes (docs/guarantees.md, sql/006_lanes.sql; the states and
 * their transitions are in lane.h). OPEN: deliveries queue in memory and
 * an ordered endpoint has one attempt in flight. When an ordered delivery
 * fails and will be retried, the lane becomes BLOCKED in the same
 * transaction as the retry row: it waits for that delivery's retry (the
 * head), and every later delivery is parked in webhooks.parked in
 * partition order (their offsets may then be committed). When the head
 * succeeds or is dead-lettered the lane is DRAINING: parked deliveries
 * are loaded and sent in order, new arrivals are parked behind them, and
 * once none is left the lane row is deleted and the lane is OPEN again. A
 * lane whose queue passes lane_queue_max spills to DRAINING the same way,
 * so a slow endpoint never holds more than its bound in memory.
 *
 * A retry message is sent only while its lane waits for exactly that
 * attempt; other retries of ordered endpoints are ignored when the
 * delivery already ended, and otherwise join the lane like new deliveries.
 *
 * Partitions: on assignment the worker takes each partition by bumping its
 * epoch and loads the partition's lanes; messages are held until that
 * succeeded. Every lane and retry write carries the epoch, and the
 * recorder drops writes of epochs that no longer own their partition. On
 * revoke the partition's lanes are detached: queued deliveries are
 * dropped, requests in flight are cancelled, and only writes already
 * buffered finish (fenced).
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dbq.h"
#include "dl.h"
#include "lanestore.h"
#include "log.h"

#define REFILL_BATCH 256 /* parked deliveries one lane loads at a time */

/* ---- jobs and lanes --------------------------------------------------- */

static void free_job(dl_job *j)
{
    if (wk_dead_cancel(&j->dead) != WH_OK) {
        /* the producer still holds it: its report must find j */
        WH_ERROR("delivery job freed while its dead letter is in the "
                 "producer; keeping it");
        return;
    }
    wh_codec_delivery_free(j->dm);
    wh_kmsg_destroy(j->km);
    free(j->parked_id);
    free(j->raw);
    free(j);
}

static void release(wk_item *item)
{
    dl_ticket *tk = (dl_ticket *)item;
    if (tk->job) {
        /* destroy: the tracker releases what is still held */
        if (tk->job->tk == tk)
            free_job(tk->job);
    }
    free(tk);
}

void wk_dl_lane_unref(wk_deliver *d, wk_lane *l)
{
    assert(l->refs > 0);
    if (--l->refs > 0)
        return;
    assert(l->detached && !l->budget_wait && l->granted == 0);
    if (l->aprev)
        l->aprev->anext = l->anext;
    else
        d->all_lanes = l->anext;
    if (l->anext)
        l->anext->aprev = l->aprev;
    free(l);
}

static void loose_add(wk_deliver *d, dl_job *j)
{
    j->lnext = d->loose;
    j->lprev = NULL;
    if (d->loose)
        d->loose->lprev = j;
    d->loose = j;
}

static void loose_del(wk_deliver *d, dl_job *j)
{
    if (j->lprev)
        j->lprev->lnext = j->lnext;
    else
        d->loose = j->lnext;
    if (j->lnext)
        j->lnext->lprev = j->lprev;
}

void wk_dl_sending_add(wk_deliver *d, dl_job *j)
{
    j->snext = d->sending;
    j->sprev = NULL;
    if (d->sending)
        d->sending->sprev = j;
    d->sending = j;
}

void wk_dl_sending_del(wk_deliver *d, dl_job *j)
{
    if (j->sprev)
        j->sprev->snext = j->snext;
    else
        d->sending = j->snext;
    if (j->snext)
        j->snext->sprev = j->sprev;
    j->sprev = j->snext = NULL;
}

/* Asks the event loop to pump l at due_us (0 = now). */
void wk_dl_wake(wk_deliver *d, wk_lane *l, int64_t due_us)
{
    if (l->waking) {
        if (due_us < l->wake_at_us)
            l->wake_at_us = due_us;
        return;
    }
    l->waking = true;
    l->wake_at_us = due_us;
    l->wake_next = d->wake;
    d->wake = l;
    l->refs++;
}

/* The job's outcome is durable (or it was dropped): its dl_ticket lets the
 * offset move, its lane reference goes. */
void wk_dl_job_done(wk_deliver *d, dl_job *j)
{
    wk_lane *l = j->lane;
    j->state = JOB_DONE;
    if (j->tk) {
        dl_ticket *tk = j->tk;
        tk->job = NULL;
        j->tk = NULL;
        free_job(j);
        assert(d->active > 0);
        d->active--;
        wk_tracker_done(d->tracker, &tk->item, d->consumer);
    } else {
        bool budgeted = j->budgeted;
        loose_del(d, j);
        free_job(j);
        if (budgeted)
            wk_drain_give(&d->budget, 1);
    }
    if (l)
        wk_dl_lane_unref(d, l);
}

void wk_dl_slot_free(wk_deliver *d, dl_job *j)
{
    if (!j->holds_slot)
        return;
    j->holds_slot = false;
    wk_lane_slot_give(j->lane);
    wk_dl_wake(d, j->lane, 0);
}

static void enqueue(wk_lane *l, dl_job *j)
{
    j->state = JOB_QUEUED;
    wk_lane_push(l, &j->link);
}

static dl_job *dequeue(wk_lane *l)
{
    wk_lane_entry *e = wk_lane_pop(l);
    return e ? DL_JOB_OF(e) : NULL;
}

wk_lane *wk_dl_lane_new(wk_deliver *d, const char *endpoint_id,
                         int32_t partition, int64_t epoch)
{
    wk_lane *l = malloc(sizeof(*l));
    if (!l) {
        WH_ERROR("out of memory; exiting so deliveries are redelivered");
        abort();
    }
    wk_lane_init(l, endpoint_id, partition, epoch);
    l->refs = 1; /* the map */
    wh_bucket_init(&l->bucket, 0, 0);
    wh_breaker_init(&l->breaker, (uint32_t)d->ctx->s->breaker_failures,
                    d->ctx->s->breaker_cooldown_ms * 1000,
                    d->ctx->s->breaker_cooldown_ms * 1000 * 64);
    l->anext = d->all_lanes;
    if (d->all_lanes)
        d->all_lanes->aprev = l;
    d->all_lanes = l;
    wk_lane *old = NULL;
    if (wh_map_put(d->lanes, endpoint_id, l, (void **)&old) != WH_OK) {
        WH_ERROR("out of memory; exiting so deliveries are redelivered");
        abort();
    }
    if (old) { /* replaced by a fresh load: the old one is stale */
        old->detached = true;
        wk_drain_cancel(&d->budget, old);
        wk_dl_lane_unref(d, old);
    }
    return l;
}

bool wk_dl_ordered(wk_deliver *d, const wk_lane *l)
{
    const wh_endpoint *ep = wk_cache_get(d->ctx->cache, l->endpoint_id);
    return !ep || ep->ordered;
}

/* ---- lane writes -------------------------------------------------------- */

static void lane_op_done(void *opaque, void *arg)
{
    wk_lane *l = opaque;
    wk_deliver *d = arg;
    l->unflushed--;
    wk_dl_lane_unref(d, l);
}

/* Buffers a lane change; j (may be NULL) is done once it is durable. */
void wk_dl_lane_write(wk_deliver *d, wk_lane *l, wk_lane_op *op, dl_job *j)
{
    op->endpoint_id = l->endpoint_id;
    op->partition = l->partition;
    op->epoch = l->epoch;
    int rc = j ? wk_recorder_add_lane(d->ctx->recorder, op, wk_dl_recorded, j, d)
               : wk_recorder_add_lane(d->ctx->recorder, op, lane_op_done, l,
                                      d);
    if (rc != WH_OK) {
        /* Nothing is lost: the offset stays uncommitted and the message
         * is redelivered after a restart. */
        WH_ERROR("lane change for endpoint %s could not be buffered; its "
                 "offset will not be committed", l->endpoint_id);
        return;
    }
    if (!j) {
        l->unflushed++;
        l->refs++;
    }
}

/* Parks j (a consumed message) at the end of its lane's parked rows. */
static void park(wk_deliver *d, wk_lane *l, dl_job *j)
{
    size_t len;
    const void *val = wh_kmsg_value(j->km, &len);
    const wh_delivery *dv = wh_codec_delivery(j->dm);
    wk_lane_op op = {
        .op = WK_LANE_PARK,
        .delivery_id = dv->delivery_id,
        .position = j->position,
        .delivery = val,
        .delivery_len = len,
    };
    j->state = JOB_PARKING;
    d->parked++;
    l->unflushed++; /* undone by wk_dl_recorded() */
    wk_dl_lane_write(d, l, &op, j);
}

void wk_dl_unpark(wk_deliver *d, wk_lane *l, dl_job *j)
{
    wk_lane_op op = {.op = WK_LANE_UNPARK,
                     .delivery_id = wh_codec_delivery(j->dm)->delivery_id};
    wk_dl_lane_write(d, l, &op, NULL);
    j->parked_row = false;
}

/* j failed and its retry `attempt` is scheduled: l waits for it, and the
 * deliveries queued behind j are parked (consumed ones) or left in
 * webhooks.parked (loaded ones). */
void wk_dl_block(wk_deliver *d, wk_lane *l, dl_job *j, uint32_t attempt)
{
    const wh_delivery *dv = wh_codec_delivery(j->dm);
    wk_lane_op op = {.op = WK_LANE_BLOCK,
                     .delivery_id = dv->delivery_id,
                     .attempt = attempt};
    bool was_parked = j->parked_row;
    if (l->state != WK_LANE_BLOCKED)
        d->blocked++;
    wk_dl_lane_write(d, l, &op, NULL);
    if (was_parked)
        wk_dl_unpark(d, l, j);
    /* the next drain starts after j, or from the beginning when the
     * queue held consumed messages that are parked now */
    wk_lane_block(l, dv->delivery_id, attempt, was_parked ? j->position : -1);
    dl_job *q;
    while ((q = dequeue(l)) != NULL) {
        if (q->parked_row)
            wk_dl_job_done(d, q);
        else
            park(d, l, q);
    }
}

/* The head ended (succeeded or dead-lettered): drain what is parked. */
void wk_dl_unblock(wk_deliver *d, wk_lane *l)
{
    wk_lane_op op = {.op = WK_LANE_UNBLOCK, .delivery_id = l->head_id};
    wk_dl_lane_write(d, l, &op, NULL);
    wk_lane_unblock(l);
}

/* ---- draining ----------------------------------------------------------- */

typedef struct {
    wk_deliver *d;
    wk_lane *l;
} refill_ctx;

/* One parked row loaded by refill(): queued in its lane as a job, which
 * holds one unit of the drain budget. A row that is not a Delivery is
 * queued all the same, to be dead-lettered in its turn (wk_dl_pump). */
static void load_parked(void *opaque, int64_t position,
                        const char *delivery_id, const void *delivery,
                        size_t len)
{
    refill_ctx *rc = opaque;
    wk_deliver *d = rc->d;
    wk_lane *l = rc->l;
    l->drained_pos = position;
    dl_job *j = calloc(1, sizeof(*j));
    if (!j) {
        WH_ERROR("out of memory; exiting so deliveries are redelivered");
        abort();
    }
    char e[WH_ERRLEN];
    if (wh_codec_delivery_decode(delivery, len, &j->dm, e, sizeof(e)) !=
        WH_OK) {
        WH_ERROR("parked delivery at position %lld of endpoint %s is "
                 "unreadable (%s); it is dead-lettered",
                 (long long)position, l->endpoint_id, e);
        j->dm = NULL;
        j->undecodable = true;
        j->parked_id = strdup(delivery_id);
        j->raw = malloc(len ? len : 1);
        if (!j->parked_id || !j->raw) {
            WH_ERROR("out of memory; exiting so deliveries are redelivered");
            abort();
        }
        memcpy(j->raw, delivery, len);
        j->raw_len = len;
        wk_attempt_fail(&j->out, "undecodable", e);
    }
    j->tag.owner = WK_MSG_DELIVER;
    j->partition = l->partition;
    j->position = position;
    j->parked_row = true;
    j->budgeted = true;
    j->lane = l;
    l->refs++;
    loose_add(d, j);
    enqueue(l, j);
}

/* Loads the next parked deliveries of a DRAINING lane into its queue, as
 * many as the drain budget grants, or reopens the lane when none is left.
 * WH_AGAIN: Postgres is unavailable, try later. WH_DECLINED: the budget is
 * spent; the lane is woken when it gets its share. */
static int refill(wk_deliver *d, wk_lane *l)
{
    char err[WH_ERRLEN];
    if (l->unflushed > 0) {
        /* what this lane parked or unparked must be visible first */
        if (wk_recorder_sync(d->ctx->recorder, err, sizeof(err)) != WH_OK) {
            WH_WARN("lane %s waits for Postgres: %s", l->endpoint_id, err);
            return WH_AGAIN;
        }
    }
    size_t n = wk_drain_take(&d->budget, l, REFILL_BATCH);
    if (n == 0) {
        WH_DEBUG("lane of endpoint %s waits for the drain budget (%zu "
                 "parked deliveries loaded)", l->endpoint_id,
                 d->budget.used);
        return WH_DECLINED;
    }
    refill_ctx rc = {d, l};
    int rows = 0;
    int q = wk_lanestore_parked(d->ctx->db, l->endpoint_id, l->drained_pos,
                                n, load_parked, &rc, &rows, err,
                                sizeof(err));
    assert(rows >= 0 && (size_t)rows <= n);
    wk_drain_give(&d->budget, n - (size_t)rows); /* what was not loaded */
    if (q != WH_OK)
        goto again;
    if (rows > 0)
        return WH_OK;
    /* Nothing more parked: reopen, unless something was parked meanwhile
     * (then drain again from the start). */
    bool more;
    if (wk_lanestore_reopen(d->ctx->db, l->endpoint_id,
                            d->ctx->s->deliveries_topic, l->partition,
                            l->epoch, &more, err, sizeof(err)) != WH_OK)
        goto again;
    if (more) {
        if (l->drained_pos < 0)
            return WH_AGAIN; /* parked between the two queries: soon */
        wk_lane_redrain(l);
        return WH_OK;
    }
    wk_lane_reopen(l);
    WH_DEBUG("lane of endpoint %s is open again", l->endpoint_id);
    return WH_OK;
again:
    WH_WARN("draining the lane of endpoint %s: %s", l->endpoint_id, err);
    return WH_AGAIN;
}

/* Starts what the lane may start now. */
void wk_dl_pump(wk_deliver *d, wk_lane *l)
{
    while (!l->detached) {
        const wh_endpoint *ep = wk_cache_get(d->ctx->cache, l->endpoint_id);
        wk_lane_step step = wk_lane_next(l, wk_lane_limit(ep));
        if (step == WK_LANE_IDLE)
            return;
        if (step == WK_LANE_REFILL) {
            int rc = refill(d, l);
            if (rc == WH_AGAIN) {
                wk_dl_wake(d, l, wh_mono_us() + 1000 * 1000);
                return;
            }
            if (rc == WH_DECLINED)
                return; /* the drain budget wakes it */
            if (!l->qhead && l->state == WK_LANE_DRAINING) {
                wk_dl_wake(d, l, 0);
                return;
            }
            continue;
        }
        dl_job *head = DL_JOB_OF(l->qhead);
        if (head->undecodable) {
            /* an unreadable parked row, in its turn: dead-lettered, it
             * holds the slot until its row is gone */
            char detail[sizeof(head->out.error) + WH_ENDPOINT_ID_MAX + 96];
            dequeue(l);
            head->holds_slot = true;
            wk_lane_slot_take(l);
            d->unreadable++;
            snprintf(detail, sizeof(detail),
                     "parked delivery at position %lld of endpoint %s is "
                     "unreadable: %s", (long long)head->position,
                     l->endpoint_id, head->out.error);
            wk_dl_dead_letter(d, head, WH_DEAD_UNDECODABLE, detail);
            continue;
        }
        /* the endpoint's breaker and rate limit */
        int64_t now = wh_mono_us();
        if (ep)
            wh_bucket_set_rate(&l->bucket, ep->rate_limit_per_s, 0, now);
        int64_t wait = wh_breaker_wait_us(&l->breaker, now);
        if (wait == 0)
            wait = wh_bucket_wait_us(&l->bucket, now);
        if (wait != 0) {
            if (wait > 0) /* else the breaker's trial report wakes it */
                wk_dl_wake(d, l, now + wait);
            return;
        }
        if (!wh_breaker_allow(&l->breaker, now))
            return;
        WH_IGNORE(wh_bucket_take(&l->bucket, now));
        wk_dl_start(d, dequeue(l));
    }
}

/* ---- arrivals ----------------------------------------------------------- */

/* Whether delivery dv already ended (succeeded, or failed for good). On
 * error it is assumed not to have ended: a duplicate is allowed, a loss
 * is not. */
static bool delivery_ended(wk_deliver *d, const wh_delivery *dv)
{
    char err[WH_ERRLEN];
    bool ended = false;
    if (wk_lanestore_delivery_ended(d->ctx->db, dv->delivery_id, &ended, err,
                                    sizeof(err)) != WH_OK) {
        WH_WARN("cannot check delivery %s: %s", dv->delivery_id, err);
        return false;
    }
    return ended;
}

static void ignore_stale(wk_deliver *d, dl_job *j, const char *why)
{
    const wh_delivery *dv = wh_codec_delivery(j->dm);
    WH_INFO("ignoring retry %u of delivery %s to %s: %s", dv->attempt,
            dv->delivery_id, dv->endpoint_id, why);
    d->stale++;
    wk_dl_job_done(d, j);
}

/* Routes a decoded message of a loaded partition into its lane. */
void wk_dl_dispatch(wk_deliver *d, dl_job *j)
{
    const wh_delivery *dv = wh_codec_delivery(j->dm);
    wk_lane *l = wh_map_get(d->lanes, dv->endpoint_id);
    if (!l)
        l = wk_dl_lane_new(d, dv->endpoint_id, j->partition,
                     wk_parts_epoch(&d->parts, j->partition));
    j->lane = l;
    l->refs++;
    bool ordered = wk_dl_ordered(d, l);
    if (dv->kind == WH_DELIVERY_RETRY) {
        switch (wk_lane_admit_retry(l, dv->delivery_id, dv->attempt)) {
        case WK_LANE_RETRY_OTHER_ATTEMPT:
            ignore_stale(d, j, "the lane waits for another attempt");
            return;
        case WK_LANE_RETRY_BUSY:
            ignore_stale(d, j, "this attempt is already in flight");
            return;
        case WK_LANE_RETRY_HEAD:
            j->head = true;
            wk_dl_start(d, j);
            return;
        case WK_LANE_RETRY_NOT_HEAD:
            break;
        }
        if ((ordered || l->state != WK_LANE_OPEN) && delivery_ended(d, dv)) {
            ignore_stale(d, j, "the delivery already ended");
            return;
        }
    }
    if (wk_lane_admit(l, (size_t)d->ctx->s->lane_queue_max) ==
        WK_LANE_TO_PARK) {
        park(d, l, j);
        return;
    }
    enqueue(l, j);
    wk_dl_pump(d, l);
}

/* ---- stage interface ---------------------------------------------------- */

/* The drain budget granted l a share: pump it. */
static void budget_wake(wk_lane *l, void *opaque) { wk_dl_wake(opaque, l, 0); }

int wk_deliver_new(wk_ctx *ctx, wk_deliver **out, char *err, size_t errlen)
{
    *out = NULL;
    wk_deliver *d = calloc(1, sizeof(*d));
    if (!d)
        return wh_errf(err, errlen, "out of memory");
    d->ctx = ctx;
    wk_drain_budget_init(&d->budget, (size_t)ctx->s->drain_max, REFILL_BATCH,
                         budget_wake, d);
    d->tracker = wk_tracker_new(release);
    d->lanes = wh_map_new();
    wh_buf_init(&d->buf, (size_t)ctx->s->payload_max + 64 * 1024);
    wh_kafka_conf kc = {
        .brokers = ctx->s->kafka_brokers,
        .client_id = ctx->worker_id,
        .extra = ctx->s->kafka_extra,
        .session_timeout_ms = ctx->s->session_timeout_ms,
        .heartbeat_ms = ctx->s->heartbeat_ms,
    };
    if (!d->tracker || !d->lanes) {
        wh_errf(err, errlen, "out of memory");
        goto fail;
    }
    if (wh_kafka_consumer_new(&kc, ctx->s->deliver_group,
                              ctx->s->deliveries_topic, wk_dl_rebalance, d,
                              &d->consumer, err, errlen) != WH_OK)
        goto fail;
    *out = d;
    return WH_OK;
fail:
    wk_tracker_destroy(d->tracker);
    wh_map_destroy(d->lanes);
    wh_buf_free(&d->buf);
    free(d);
    return WH_ERR;
}

void wk_deliver_destroy(wk_deliver *d)
{
    if (!d)
        return;
    /* revokes everything; bounded by the shutdown budget */
    wh_kafka_consumer_close(d->consumer, wk_stop_left_ms(d->ctx));
    wh_http_cancel_all(d->ctx->http);
    wk_recorder_forget(d->ctx->recorder, d);
    for (int32_t i = 0; i < WK_PARTS_MAX; i++)
        if (d->loading[i]) /* a close that gave up revoked nothing */
            wk_dbq_cancel(d->ctx->dbq, d->loading[i]);
    for (dl_job *j = d->loose, *next; j; j = next) {
        next = j->lnext;
        free_job(j);
    }
    wk_tracker_destroy(d->tracker); /* frees held messages and tickets */
    wh_kafka_consumer_destroy(d->consumer);
    for (wk_lane *l = d->all_lanes, *next; l; l = next) {
        next = l->anext;
        free(l);
    }
    wh_map_destroy(d->lanes);
    wh_buf_free(&d->buf);
    free(d);
}

int wk_deliver_fd(wk_deliver *d) { return wh_kafka_consumer_fd(d->consumer); }

size_t wk_deliver_pending(const wk_deliver *d)
{
    return wk_tracker_pending(d->tracker);
}

int wk_deliver_poll(wk_deliver *d, int budget)
{
    int n = 0;
    size_t limit = (size_t)d->ctx->s->max_in_flight;
    /* Consumption pauses on what is active (not on done messages waiting
     * behind a slow one for the offset to move), with a hard cap on those
     * too. */
    size_t held = wk_tracker_pending(d->tracker);
    if (!d->paused && (d->active >= limit || held >= 16 * limit)) {
        wh_kafka_consumer_pause_all(d->consumer, 1);
        d->paused = true;
    } else if (d->paused && d->active < limit / 2 && held < 8 * limit) {
        wh_kafka_consumer_pause_all(d->consumer, 0);
        d->paused = false;
    }
    while (n < budget) {
        wh_kmsg *km = wh_kafka_consumer_poll(d->consumer, 0);
        if (!km)
            break;
        n++;
        int32_t pid = wh_kmsg_partition(km);
        dl_job *j = calloc(1, sizeof(*j));
        dl_ticket *tk = calloc(1, sizeof(*tk));
        if (!j || !tk) {
            WH_ERROR("out of memory; exiting so the delivery is redelivered");
            abort();
        }
        if (!wk_parts_valid(pid) ||
            wk_tracker_add(d->tracker, &tk->item, pid, wh_kmsg_offset(km)) !=
                WH_OK) {
            wh_kmsg_destroy(km);
            free(j);
            free(tk);
            continue;
        }
        tk->job = j;
        j->tk = tk;
        d->active++;
        j->tag.owner = WK_MSG_DELIVER;
        j->km = km;
        j->partition = pid;
        j->position = wh_kmsg_offset(km);
        size_t len;
        const void *val = wh_kmsg_value(km, &len);
        char err[WH_ERRLEN];
        if (wh_codec_delivery_decode(val, len, &j->dm, err, sizeof(err))) {
            j->undecodable = true;
            wk_dl_dead_letter(d, j, WH_DEAD_UNDECODABLE, err);
            continue;
        }
        if (wk_parts_epoch(&d->parts, pid) == 0)
            wk_parts_hold(&d->parts, pid, &j->link); /* until it is loaded */
        else
            wk_dl_dispatch(d, j);
    }
    return n;
}

void wk_deliver_tick(wk_deliver *d)
{
    int64_t now = wh_mono_us();
    if (d->load_at_us && now >= d->load_at_us)
        wk_dl_load_parts(d);
    wk_lane *list = d->wake, *later = NULL;
    d->wake = NULL;
    while (list) {
        wk_lane *l = list;
        list = l->wake_next;
        if (l->wake_at_us > now) {
            l->wake_next = later;
            later = l;
            continue;
        }
        l->waking = false;
        wk_dl_pump(d, l);
        wk_dl_lane_unref(d, l);
    }
    /* lanes woken while pumping are already on d->wake */
    while (later) {
        wk_lane *l = later;
        later = l->wake_next;
        l->wake_next = d->wake;
        d->wake = l;
    }
}

int64_t wk_deliver_due_ms(const wk_deliver *d)
{
    int64_t now = wh_mono_us(), due = -1;
    if (d->load_at_us)
        due = d->load_at_us > now ? (d->load_at_us - now) / 1000 + 1 : 0;
    for (const wk_lane *l = d->wake; l; l = l->wake_next) {
        int64_t ms = l->wake_at_us > now ? (l->wake_at_us - now) / 1000 + 1
                                         : 0;
        if (due < 0 || ms < due)
            due = ms;
    }
    return due;
}

void wk_deliver_counts(const wk_deliver *d, wk_deliver_stats *st)
{
    st->sent = d->sent;
    st->succeeded = d->succeeded;
    st->failed = d->failed;
    st->parked = d->parked;
    st->stale = d->stale;
    st->blocked = d->blocked;
    st->active = (int64_t)d->active;
    st->lanes = (int64_t)wh_map_size(d->lanes);
    st->unreadable = d->unreadable;
    st->drain_loaded = (int64_t)d->budget.used;
    st->drain_peak = (int64_t)d->budget.peak;
    st->drain_waits = d->budget.waits;
    st->drain_waiting = (int64_t)d->budget.waiting;
}
