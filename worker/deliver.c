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
 * lane whose queue passes lane_queue_max, whose oldest queued delivery
 * waited lane_park_after, or that would queue past the stage's bound on
 * queued deliveries (max_in_flight) spills to DRAINING the same way and
 * parks its queue: a slow endpoint never holds more than its bound in
 * memory nor its partition's committed offset for long, and queued
 * deliveries do not count toward pausing consumption.
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

static void enqueue(wk_deliver *d, wk_lane *l, dl_job *j)
{
    j->state = JOB_QUEUED;
    j->queued_at_us = wh_mono_us();
    if (j->tk)
        d->queued++;
    wk_lane_push(l, &j->link);
}

dl_job *wk_dl_dequeue(wk_deliver *d, wk_lane *l)
{
    wk_lane_entry *e = wk_lane_pop(l);
    if (!e)
        return NULL;
    dl_job *j = DL_JOB_OF(e);
    if (j->tk) {
        assert(d->queued > 0);
        d->queued--;
    }
    return j;
}

void wk_dl_lane_key(char *key, int32_t partition, const char *endpoint_id)
{
    snprintf(key, WK_DL_LANE_KEY_MAX, "%d/%s", (int)partition, endpoint_id);
}

wk_lane *wk_dl_lane_new(wk_deliver *d, const char *endpoint_id,
                         int32_t partition, int64_t epoch)
{
    char key[WK_DL_LANE_KEY_MAX];
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
    wk_dl_lane_key(key, partition, endpoint_id);
    if (wh_map_put(d->lanes, key, l, (void **)&old) != WH_OK) {
        WH_ERROR("out of memory; exiting so deliveries are redelivered");
        abort();
    }
    if (old) {
        /* a partition's lanes are built once per assignment, before any
         * of its messages is placed, and a revoke removes them: one that
         * is there already would hold jobs no offset may pass */
        WH_ERROR("lane of endpoint %s on partition %d built twice; exiting "
                 "so its deliveries are redelivered", endpoint_id,
                 (int)partition);
        abort();
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
    wk_dl_lane_flushed(d, l);
    wk_dl_lane_unref(d, l);
}

/* Buffers a lane change; j (may be NULL) is done once it is durable. */
void wk_dl_lane_write(wk_deliver *d, wk_lane *l, wk_lane_op *op, dl_job *j)
{
    op->endpoint_id = l->endpoint_id;
    op->partition = l->partition;
    op->epoch = l->epoch;
    l->writes++;
    int rc = j ? wk_recorder_add_lane(d->ctx->recorder, op, wk_dl_recorded, j, d)
               : wk_recorder_add_lane(d->ctx->recorder, op, lane_op_done, l,
                                      d);
    if (rc != WH_OK) {
        /* Nothing is lost: the offset stays uncommitted and the message
         * is redelivered after a restart. */
        WH_ERROR("lane change for endpoint %s could not be buffered; its "
                 "offset will not be committed", l->endpoint_id);
        if (j && j->state == JOB_PARKING)
            l->unflushed--; /* no write will come back for it */
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
    while ((q = wk_dl_dequeue(d, l)) != NULL) {
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

/* A row that is not a Delivery is queued all the same, to be
 * dead-lettered in its turn (wk_dl_pump). */
void wk_dl_load_parked(wk_deliver *d, wk_lane *l, int64_t position,
                       const char *delivery_id, const void *delivery,
                       size_t len)
{
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
    enqueue(d, l, j);
}

/* Starts what the lane may start now. */
void wk_dl_pump(wk_deliver *d, wk_lane *l)
{
    if (d->ctx->stopping)
        return; /* nothing new starts; wk_deliver_stop parked the queue */
    while (!l->detached) {
        const wh_endpoint *ep = wk_cache_get(d->ctx->cache, l->endpoint_id);
        wk_lane_step step = wk_lane_next(l, wk_lane_limit(ep));
        if (step == WK_LANE_IDLE)
            return;
        if (step == WK_LANE_REFILL) {
            /* WH_DECLINED: the refill's completion, the recorder or the
             * drain budget wakes the lane */
            if (wk_dl_refill(d, l) == WH_AGAIN)
                wk_dl_wake(d, l, wh_mono_us() + 1000 * 1000);
            return;
        }
        dl_job *head = DL_JOB_OF(l->qhead);
        if (head->undecodable) {
            /* an unreadable parked row, in its turn: dead-lettered, it
             * holds the slot until its row is gone */
            char detail[sizeof(head->out.error) + WH_ENDPOINT_ID_MAX + 96];
            wk_dl_dequeue(d, l);
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
        wk_dl_start(d, wk_dl_dequeue(d, l));
    }
}

/* ---- arrivals ----------------------------------------------------------- */

static void ignore_stale(wk_deliver *d, dl_job *j, const char *why)
{
    const wh_delivery *dv = wh_codec_delivery(j->dm);
    if (dv->kind == WH_DELIVERY_RETRY) {
        WH_INFO("ignoring retry %u of delivery %s to %s: %s", dv->attempt,
                dv->delivery_id, dv->endpoint_id, why);
        d->stale++;
    } else {
        /* consumed again below a hand-off: the previous owner sent it */
        WH_DEBUG("not sending delivery %s to %s again: %s", dv->delivery_id,
                 dv->endpoint_id, why);
        d->handed_done++;
    }
    wk_dl_job_done(d, j);
}

/* The lane spills (OPEN -> DRAINING) and what it queues goes: consumed
 * deliveries are parked, so their offsets can be committed, and loaded
 * ones are left where they are, in webhooks.parked. Returns how many were
 * parked; *left counts the loaded ones. */
static size_t spill(wk_deliver *d, wk_lane *l, size_t *left)
{
    size_t parked = 0;
    dl_job *j;
    if (l->state == WK_LANE_OPEN)
        wk_lane_spill(l);
    assert(!l->qhead || l->state == WK_LANE_DRAINING);
    while ((j = wk_dl_dequeue(d, l)) != NULL) {
        if (j->parked_row) {
            wk_dl_job_done(d, j);
            (*left)++;
        } else {
            park(d, l, j);
            parked++;
        }
    }
    return parked;
}

/* Into the lane's queue, or parked behind what it holds in Postgres. A
 * lane that spills here parks its queue too: nothing it held in memory
 * pins its partition's committed offset. */
static void place(wk_deliver *d, wk_lane *l, dl_job *j)
{
    bool was_open = l->state == WK_LANE_OPEN;
    size_t left = 0;
    if (wk_lane_admit(l, (size_t)d->ctx->s->lane_queue_max) ==
        WK_LANE_TO_PARK) {
        if (was_open) { /* spilled past WORKER_LANE_QUEUE_MAX */
            spill(d, l, &left);
            d->spills_count++;
        }
        park(d, l, j);
        return;
    }
    enqueue(d, l, j);
    wk_dl_pump(d, l);
    /* queued deliveries over all lanes stay within WORKER_MAX_IN_FLIGHT:
     * beyond it a lane that has to queue parks instead */
    if (l->state == WK_LANE_OPEN && l->qhead &&
        d->queued > (size_t)d->ctx->s->max_in_flight) {
        spill(d, l, &left);
        d->spills_memory++;
    }
}

/* Parks the queue of every open lane whose oldest queued delivery has
 * waited WORKER_LANE_PARK_AFTER, looking a few times per that period and
 * only while something is queued. */
static void spill_waiting(wk_deliver *d, int64_t now)
{
    int64_t after_us = d->ctx->s->lane_park_after_ms * 1000;
    if (d->queued == 0 || d->ctx->stopping || now < d->spill_scan_us)
        return;
    d->spill_scan_us = now + after_us / 4;
    size_t left = 0;
    for (wk_lane *l = d->all_lanes; l; l = l->anext) {
        if (l->detached || l->state != WK_LANE_OPEN || !l->qhead)
            continue;
        if (now - DL_JOB_OF(l->qhead)->queued_at_us < after_us)
            continue;
        size_t n = spill(d, l, &left);
        d->spills_waited++;
        WH_DEBUG("lane of endpoint %s: %zu queued deliveries waited %lld ms "
                 "and are parked", l->endpoint_id, n,
                 (long long)d->ctx->s->lane_park_after_ms);
    }
}

/* Whether a retry that is not its lane's head already ended (succeeded,
 * or failed for good) is asked on the query executor. Meanwhile the lane
 * holds every later arrival, in order, so nothing overtakes the retry. */
typedef struct {
    wk_deliver *d;
    wk_lane *l; /* valid while the job is not cancelled */
    char delivery_id[WH_ID_MAX + 1];
    bool ended;
} check_job;

/* Executor thread. */
static int check_run(wh_db *db, void *arg, char *err, size_t errlen)
{
    check_job *cj = arg;
    return wk_lanestore_delivery_ended(db, cj->delivery_id, &cj->ended, err,
                                       errlen);
}

static void admit(wk_deliver *d, wk_lane *l, dl_job *j);

/* Admits what the lane held behind its check, until another check
 * starts. */
static void release_held(wk_deliver *d, wk_lane *l)
{
    while (l->hold_head && !l->check_job) {
        wk_lane_entry *e = l->hold_head;
        l->hold_head = e->next;
        if (!l->hold_head)
            l->hold_tail = NULL;
        e->next = NULL;
        admit(d, l, DL_JOB_OF(e));
    }
}

static void check_done(void *arg, int rc, const char *err)
{
    check_job *cj = arg;
    wk_deliver *d = cj->d;
    wk_lane *l = cj->l;
    assert(!l->detached && l->checking); /* a detach cancels the job */
    dl_job *j = DL_JOB_OF(l->checking);
    l->check_job = 0;
    l->checking = NULL;
    if (rc != WH_OK) {
        /* a duplicate is allowed, a loss is not */
        WH_WARN("cannot check delivery %s (sending it): %s",
                cj->delivery_id, err);
        place(d, l, j);
    } else if (cj->ended) {
        ignore_stale(d, j, "the delivery already ended");
    } else {
        place(d, l, j);
    }
    release_held(d, l);
    wk_dl_wake(d, l, 0); /* a drain may have waited for the check */
}

/* Asks whether j's delivery ended; j waits in l->checking. */
static void check(wk_deliver *d, wk_lane *l, dl_job *j)
{
    check_job *cj = calloc(1, sizeof(*cj));
    if (cj) {
        cj->d = d;
        cj->l = l;
        wh_strlcpy(cj->delivery_id, wh_codec_delivery(j->dm)->delivery_id,
                   sizeof(cj->delivery_id));
    }
    wk_dbq_job job = {.name = "delivery check", .run = check_run,
                      .done = check_done, .release = free, .arg = cj};
    if (!cj || wk_dbq_submit(d->ctx->dbq, &job, &l->check_job) != WH_OK) {
        free(cj);
        l->check_job = 0;
        WH_WARN("cannot check delivery %s (the query executor is full): "
                "sending it", wh_codec_delivery(j->dm)->delivery_id);
        place(d, l, j);
        return;
    }
    l->checking = &j->link;
}

void wk_dl_lane_drop_held(wk_deliver *d, wk_lane *l)
{
    wk_dl_reread_cancel(d, l);
    if (l->check_job) {
        wk_dbq_cancel(d->ctx->dbq, l->check_job);
        l->check_job = 0;
    }
    if (l->checking) {
        dl_job *j = DL_JOB_OF(l->checking);
        l->checking = NULL;
        wk_dl_job_done(d, j);
    }
    while (l->hold_head) {
        wk_lane_entry *e = l->hold_head;
        l->hold_head = e->next;
        wk_dl_job_done(d, DL_JOB_OF(e));
    }
    l->hold_tail = NULL;
}

/* Puts j, a delivery of l's endpoint, where it goes now. */
static void admit(wk_deliver *d, wk_lane *l, dl_job *j)
{
    const wh_delivery *dv = wh_codec_delivery(j->dm);
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
        if (wk_dl_ordered(d, l) || l->state != WK_LANE_OPEN) {
            check(d, l, j);
            return;
        }
    } else if (j->tk &&
               j->position < wk_parts_check_below(&d->parts, j->partition)) {
        /* the previous owner consumed it: it may have been delivered
         * (its offset commit refused during the hand-off) */
        check(d, l, j);
        return;
    }
    place(d, l, j);
}

/* Routes a decoded message of a loaded partition into its lane. */
void wk_dl_dispatch(wk_deliver *d, dl_job *j)
{
    const wh_delivery *dv = wh_codec_delivery(j->dm);
    char key[WK_DL_LANE_KEY_MAX];
    wk_dl_lane_key(key, j->partition, dv->endpoint_id);
    wk_lane *l = wh_map_get(d->lanes, key);
    if (!l)
        l = wk_dl_lane_new(d, dv->endpoint_id, j->partition,
                     wk_parts_epoch(&d->parts, j->partition));
    j->lane = l;
    l->refs++;
    wk_parts_placed(&d->parts, j->partition, j->position + 1);
    if (l->check_job) { /* behind the retry being checked, in order */
        j->link.next = NULL;
        if (l->hold_tail)
            l->hold_tail->next = &j->link;
        else
            l->hold_head = &j->link;
        l->hold_tail = &j->link;
        return;
    }
    admit(d, l, j);
}

/* ---- stage interface ---------------------------------------------------- */

void wk_deliver_stop(wk_deliver *d)
{
    assert(d->ctx->stopping);
    size_t parked = 0, left = 0;
    for (wk_lane *l = d->all_lanes; l; l = l->anext)
        if (!l->detached && l->qhead)
            parked += spill(d, l, &left);
    char err[WH_ERRLEN];
    if (wk_recorder_flush(d->ctx->recorder, err, sizeof(err)) == WH_ERR)
        WH_WARN("%s", err);
    WH_INFO("stopping: %zu queued deliveries parked and %zu loaded ones "
            "left parked for the partitions' next owner", parked, left);
}

void wk_deliver_commit_soon(wk_deliver *d)
{
    wh_kafka_consumer_commit_soon(d->consumer);
}

int wk_deliver_serve(wk_deliver *d, int budget)
{
    int n = 0;
    wh_kmsg *km;
    while (n < budget && (km = wh_kafka_consumer_poll(d->consumer, 0))) {
        wh_kmsg_destroy(km); /* never tracked: its offset is not stored */
        n++;
    }
    return n;
}

/* The drain budget granted l a share: pump it. */
static void budget_wake(wk_lane *l, void *opaque) { wk_dl_wake(opaque, l, 0); }

/* The consumer reached the end of a partition. */
static void on_eof(void *opaque, int32_t partition, int64_t next_offset)
{
    wk_deliver *d = opaque;
    wk_parts_eof(&d->parts, partition, next_offset);
}

int wk_deliver_new(wk_ctx *ctx, wk_deliver **out, char *err, size_t errlen)
{
    *out = NULL;
    wk_deliver *d = calloc(1, sizeof(*d));
    if (!d)
        return wh_errf(err, errlen, "out of memory");
    d->ctx = ctx;
    wk_drain_budget_init(&d->budget, (size_t)ctx->s->drain_max, WK_DRAIN_BATCH,
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
        .on_eof = on_eof,
        .eof_opaque = d,
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
        if (l->refill_job)
            wk_dbq_cancel(d->ctx->dbq, l->refill_job);
        if (l->check_job)
            wk_dbq_cancel(d->ctx->dbq, l->check_job);
        if (l->reread_job)
            wk_dbq_cancel(d->ctx->dbq, l->reread_job);
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
    size_t working = d->active - d->queued; /* queued ones can be parked */
    if (!d->paused && (working >= limit || held >= 16 * limit)) {
        wh_kafka_consumer_pause_all(d->consumer, 1);
        d->paused = true;
    } else if (d->paused && working < limit / 2 && held < 8 * limit) {
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
    if (d->placing)
        wk_dl_placing_tick(d);
    spill_waiting(d, now);
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
    if (d->queued > 0 && !d->ctx->stopping) {
        int64_t ms = d->spill_scan_us > now
                         ? (d->spill_scan_us - now) / 1000 + 1 : 0;
        if (due < 0 || ms < due)
            due = ms;
    }
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
    st->queued = (int64_t)d->queued;
    st->handed_done = d->handed_done;
    st->spills_count = d->spills_count;
    st->spills_waited = d->spills_waited;
    st->spills_memory = d->spills_memory;
    st->drain_loaded = (int64_t)d->budget.used;
    st->drain_peak = (int64_t)d->budget.peak;
    st->drain_waits = d->budget.waits;
    st->drain_waiting = (int64_t)d->budget.waiting;
}
