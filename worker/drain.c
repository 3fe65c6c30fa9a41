/*
 * drain.c - how a DRAINING lane gets its parked deliveries back from
 * webhooks.parked (lane.h, lanestore.h): one refill at a time per lane,
 * run on the query executor (dbq.h) so the event loop never waits for
 * Postgres for it. A refill loads the next parked rows after the lane's
 * drained position, as many as the drain budget grants; when none is
 * left it deletes the lane row in the same job (reopen). Its completion,
 * on the main thread, queues the rows in the lane (wk_dl_load_parked) or
 * reopens the lane. Part of the delivery stage (dl.h). Main thread,
 * except where marked.
 *
 * What the lane itself parked or unparked must be durable before a
 * refill reads webhooks.parked, so a refill waits (without blocking) for
 * the lane's buffered writes; the recorder's callbacks wake it. While a
 * refill runs the lane is empty and idle, so the only change it can see
 * is new arrivals being parked behind it (l->writes tells): then a drain
 * that found nothing does not reopen the lane but drains again.
 *
 * A lane that changed owner (restart, crash, rebalance) may hold parked
 * rows above offsets its partition's new owner has not consumed again
 * yet: a message the previous owner had in memory, or in flight, comes
 * back at its own lower offset and is parked there. So a parked row is
 * sent only once every message of the partition before its position was
 * placed (wk_parts_placed_below); rows at or past that wait, the lane on
 * d->placing, until the partition's consumption passes them.
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "dbq.h"
#include "dl.h"
#include "lanestore.h"
#include "log.h"

typedef struct {
    int64_t position;
    char *delivery_id;
    void *bytes;
    size_t len;
} parked_row;

typedef struct {
    wk_deliver *d;
    wk_lane *l;            /* valid while the job is not cancelled */
    char endpoint_id[WH_ENDPOINT_ID_MAX];
    const char *topic;     /* the settings' */
    int32_t partition;
    int64_t epoch, after;
    size_t limit;          /* drain budget units taken for it */
    uint32_t writes;       /* l->writes when it was queued */
    parked_row *rows;
    size_t n;
    bool oom;
    bool reopen_ran, more; /* nothing loaded: the reopen's result */
} refill_job;

/* Executor thread. */
static void collect(void *opaque, int64_t position, const char *delivery_id,
                    const void *delivery, size_t len)
{
    refill_job *rj = opaque;
    if (rj->oom)
        return;
    assert(rj->n < rj->limit);
    parked_row *r = &rj->rows[rj->n];
    r->position = position;
    r->delivery_id = strdup(delivery_id);
    r->bytes = malloc(len ? len : 1);
    r->len = len;
    if (!r->delivery_id || !r->bytes) {
        free(r->delivery_id);
        free(r->bytes);
        rj->oom = true;
        return;
    }
    memcpy(r->bytes, delivery, len);
    rj->n++;
}

/* Executor thread. */
static int refill_run(wh_db *db, void *arg, char *err, size_t errlen)
{
    refill_job *rj = arg;
    int rows = 0;
    if (wk_lanestore_parked(db, rj->partition, rj->endpoint_id, rj->after,
                            rj->limit, collect, rj, &rows, err,
                            errlen) != WH_OK)
        return WH_ERR;
    if (rj->oom)
        return wh_errf(err, errlen, "out of memory reading %d parked "
                       "deliveries", rows);
    if (rows > 0)
        return WH_OK;
    rj->reopen_ran = true;
    return wk_lanestore_reopen(db, rj->endpoint_id, rj->topic,
                               rj->partition, rj->epoch, &rj->more, err,
                               errlen);
}

static void refill_release(void *arg)
{
    refill_job *rj = arg;
    for (size_t i = 0; i < rj->n; i++) {
        free(rj->rows[i].delivery_id);
        free(rj->rows[i].bytes);
    }
    free(rj->rows);
    free(rj);
}

/* l waits until its partition placed every message before pos. */
static void place_wait(wk_deliver *d, wk_lane *l, int64_t pos)
{
    WH_DEBUG("lane of endpoint %s waits for partition %d to be consumed "
             "past position %lld before it sends that parked delivery",
             l->endpoint_id, (int)l->partition, (long long)pos);
    l->place_wait_pos = pos;
    if (l->place_waiting)
        return;
    l->place_waiting = true;
    l->place_next = d->placing;
    d->placing = l;
    l->refs++;
}

void wk_dl_placing_tick(wk_deliver *d)
{
    for (wk_lane **p = &d->placing; *p;) {
        wk_lane *l = *p;
        if (!l->detached &&
            wk_parts_placed_below(&d->parts, l->partition) <=
                l->place_wait_pos) {
            p = &l->place_next;
            continue;
        }
        *p = l->place_next;
        l->place_waiting = false;
        l->place_next = NULL;
        if (!l->detached)
            wk_dl_wake(d, l, 0);
        wk_dl_lane_unref(d, l);
    }
}

static void refill_done(void *arg, int rc, const char *err)
{
    refill_job *rj = arg;
    wk_deliver *d = rj->d;
    wk_lane *l = rj->l;
    /* a detach cancels the job, so the lane is still draining */
    assert(!l->detached && l->state == WK_LANE_DRAINING);
    l->refill_job = 0;
    l->refill_units = 0;
    size_t loaded = rc == WH_OK ? rj->n : 0;
    wk_drain_give(&d->budget, rj->limit - loaded); /* what was not read */
    if (rc != WH_OK) {
        WH_WARN("draining the lane of endpoint %s (trying again in a "
                "second): %s", l->endpoint_id, err);
        wk_dl_wake(d, l, wh_mono_us() + 1000 * 1000);
        return;
    }
    int64_t below = wk_parts_placed_below(&d->parts, l->partition);
    loaded = 0;
    while (loaded < rj->n && rj->rows[loaded].position < below) {
        parked_row *r = &rj->rows[loaded++];
        wk_dl_load_parked(d, l, r->position, r->delivery_id, r->bytes,
                          r->len);
    }
    wk_drain_give(&d->budget, rj->n - loaded); /* held back below */
    if (loaded < rj->n) {
        /* the next row waits for its partition's earlier messages */
        place_wait(d, l, rj->rows[loaded].position);
        if (loaded == 0)
            return;
    } else if (loaded == 0) {
        if (rj->more) {
            /* parked at or before the drained position: start over; from
             * the start already, it was parked between the two queries */
            if (l->drained_pos < 0) {
                wk_dl_wake(d, l, wh_mono_us() + 100 * 1000);
                return;
            }
            wk_lane_redrain(l);
        } else if (l->writes == rj->writes) {
            wk_lane_reopen(l);
            WH_DEBUG("lane of endpoint %s is open again", l->endpoint_id);
        }
        /* else arrivals were parked meanwhile (their writes put the lane
         * row back): drain them */
    }
    wk_dl_wake(d, l, 0);
}

int wk_dl_refill(wk_deliver *d, wk_lane *l)
{
    if (l->refill_job || l->place_waiting)
        return WH_DECLINED; /* its completion or placing_tick wakes it */
    if (l->check_job)
        return WH_DECLINED; /* an arrival is not placed yet: check_done */
    if (l->unflushed > 0) {
        /* what this lane parked or unparked must be visible first; the
         * recorder's callback wakes the lane (wk_dl_lane_flushed) */
        char err[WH_ERRLEN];
        l->flush_wait = true;
        if (wk_recorder_flush(d->ctx->recorder, err, sizeof(err)) == WH_ERR)
            WH_WARN("lane %s waits for Postgres: %s", l->endpoint_id, err);
        return WH_DECLINED;
    }
    size_t n = wk_drain_take(&d->budget, l, WK_DRAIN_BATCH);
    if (n == 0) {
        WH_DEBUG("lane of endpoint %s waits for the drain budget (%zu "
                 "parked deliveries loaded)", l->endpoint_id,
                 d->budget.used);
        return WH_DECLINED;
    }
    refill_job *rj = calloc(1, sizeof(*rj));
    if (rj)
        rj->rows = calloc(n, sizeof(*rj->rows));
    if (!rj || !rj->rows) {
        free(rj);
        wk_drain_give(&d->budget, n);
        return WH_AGAIN;
    }
    rj->d = d;
    rj->l = l;
    wh_strlcpy(rj->endpoint_id, l->endpoint_id, sizeof(rj->endpoint_id));
    rj->topic = d->ctx->s->deliveries_topic;
    rj->partition = l->partition;
    rj->epoch = l->epoch;
    rj->after = l->drained_pos;
    rj->limit = n;
    rj->writes = l->writes;
    wk_dbq_job job = {.name = "lane drain", .run = refill_run,
                      .done = refill_done, .release = refill_release,
                      .arg = rj};
    if (wk_dbq_submit(d->ctx->dbq, &job, &l->refill_job) != WH_OK) {
        refill_release(rj);
        l->refill_job = 0;
        wk_drain_give(&d->budget, n);
        return WH_AGAIN; /* the executor is full: in a second */
    }
    l->refill_units = n;
    return WH_DECLINED;
}

void wk_dl_drain_stop(wk_deliver *d, wk_lane *l)
{
    wk_drain_cancel(&d->budget, l);
    if (l->refill_job) {
        wk_dbq_cancel(d->ctx->dbq, l->refill_job);
        wk_drain_give(&d->budget, l->refill_units);
        l->refill_job = 0;
        l->refill_units = 0;
    }
    l->flush_wait = false;
}

void wk_dl_lane_flushed(wk_deliver *d, wk_lane *l)
{
    assert(l->unflushed > 0);
    if (--l->unflushed == 0 && l->flush_wait) {
        l->flush_wait = false;
        wk_dl_wake(d, l, 0);
    }
}
