/*
 * rebalance.c - the delivery stage's partitions of the deliveries topic:
 * taking an assigned partition (its epoch and its lanes that are not open,
 * read on the query executor, dbq.h, so the loop never waits for Postgres
 * for it), building those lanes and releasing the messages held meanwhile
 * (parts.h keeps the table), and on revoke cancelling what is in flight
 * and detaching the partition's lanes. The other parts of the stage are
 * deliver.c and outcome.c; all share dl.h. Main thread, except where
 * marked.
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "dbq.h"
#include "dl.h"
#include "lanestore.h"
#include "log.h"

typedef struct {
    wk_deliver *d;
    int32_t pid;
    int64_t epoch;
} load_ctx;

static void load_lane(void *opaque, const char *endpoint_id,
                      const char *head_id, uint32_t head_attempt)
{
    load_ctx *lc = opaque;
    wk_lane *l = wk_dl_lane_new(lc->d, endpoint_id, lc->pid, lc->epoch);
    wk_lane_load(l, head_id, head_attempt);
    if (!head_id)
        wk_dl_wake(lc->d, l, 0);
}

/* Taking a partition runs on the query executor, so the loop never waits
 * for Postgres for it: the job bumps the epoch and reads the lanes that
 * are not open; its completion builds them and releases the messages the
 * partition held meanwhile (they wait, in order, until then). A revoke
 * cancels the job: it still runs (its epoch is then superseded by the next
 * take, which runs after it), but nothing is built from it. */
typedef struct {
    char *endpoint_id, *head_id; /* head_id NULL: draining */
    uint32_t head_attempt;
} lane_row;

typedef struct {
    wk_deliver *d;
    int32_t pid;
    const char *topic, *worker; /* the settings' and the context's */
    int64_t epoch;
    int64_t handed_to;          /* the previous owner's hand-off, or -1 */
    lane_row *rows;
    size_t n, cap;
    bool oom;
} part_job;

/* Executor thread. */
static void collect_lane(void *opaque, const char *endpoint_id,
                         const char *head_id, uint32_t head_attempt)
{
    part_job *pj = opaque;
    if (pj->oom)
        return;
    if (pj->n == pj->cap) {
        size_t ncap = pj->cap ? pj->cap * 2 : 16;
        lane_row *nr = realloc(pj->rows, ncap * sizeof(*nr));
        if (!nr) {
            pj->oom = true;
            return;
        }
        pj->rows = nr;
        pj->cap = ncap;
    }
    lane_row *r = &pj->rows[pj->n];
    r->endpoint_id = strdup(endpoint_id);
    r->head_id = head_id ? strdup(head_id) : NULL;
    r->head_attempt = head_attempt;
    if (!r->endpoint_id || (head_id && !r->head_id)) {
        free(r->endpoint_id);
        free(r->head_id);
        pj->oom = true;
        return;
    }
    pj->n++;
}

/* Executor thread. */
static int part_run(wh_db *db, void *arg, char *err, size_t errlen)
{
    part_job *pj = arg;
    int rows = 0;
    if (wk_lanestore_take(db, pj->topic, pj->pid, pj->worker, &pj->epoch,
                          &pj->handed_to, err, errlen) != WH_OK ||
        wk_lanestore_lanes(db, pj->pid, collect_lane, pj, &rows, err,
                           errlen) != WH_OK)
        return WH_ERR;
    if (pj->oom)
        return wh_errf(err, errlen, "out of memory reading %d lanes", rows);
    return WH_OK;
}

static void part_release(void *arg)
{
    part_job *pj = arg;
    for (size_t i = 0; i < pj->n; i++) {
        free(pj->rows[i].endpoint_id);
        free(pj->rows[i].head_id);
    }
    free(pj->rows);
    free(pj);
}

static void part_done(void *arg, int rc, const char *err)
{
    part_job *pj = arg;
    wk_deliver *d = pj->d;
    int32_t pid = pj->pid;
    d->loading[pid] = 0;
    if (rc != WH_OK) {
        WH_WARN("delivery: cannot take partition %d (retrying): %s",
                (int)pid, err);
        if (!d->load_at_us)
            d->load_at_us = wh_mono_us() + 1000 * 1000;
        return;
    }
    /* a revoke cancels the job, so the partition is still waiting */
    assert(wk_parts_next_unloaded(&d->parts, pid) == pid);
    load_ctx lc = {d, pid, pj->epoch};
    for (size_t i = 0; i < pj->n; i++)
        load_lane(&lc, pj->rows[i].endpoint_id, pj->rows[i].head_id,
                  pj->rows[i].head_attempt);
    wk_parts_handed(&d->parts, pid, pj->handed_to);
    if (pj->handed_to >= 0)
        WH_INFO("delivery: partition %d taken (epoch %lld, %zu lanes not "
                "open); handed over at offset %lld: deliveries below it are "
                "checked before they are sent", (int)pid,
                (long long)pj->epoch, pj->n, (long long)pj->handed_to);
    else
        WH_INFO("delivery: partition %d taken (epoch %lld, %zu lanes not "
                "open)", (int)pid, (long long)pj->epoch, pj->n);
    wk_lane_entry *e = wk_parts_loaded(&d->parts, pid, pj->epoch);
    while (e) {
        wk_lane_entry *next = e->next;
        e->next = NULL;
        wk_dl_dispatch(d, DL_JOB_OF(e));
        e = next;
    }
    wk_parts_settle(&d->parts, pid);
}

/* Queues the take of every assigned partition that is not loaded and has
 * no take under way; when the executor is full, tries again in a second. */
void wk_dl_load_parts(wk_deliver *d)
{
    d->load_at_us = 0;
    for (int32_t i = wk_parts_next_unloaded(&d->parts, 0); i >= 0;
         i = wk_parts_next_unloaded(&d->parts, i + 1)) {
        if (d->loading[i])
            continue;
        part_job *pj = calloc(1, sizeof(*pj));
        if (pj) {
            pj->d = d;
            pj->pid = i;
            pj->topic = d->ctx->s->deliveries_topic;
            pj->worker = d->ctx->worker_id;
        }
        wk_dbq_job job = {.name = "partition take", .run = part_run,
                          .done = part_done, .release = part_release,
                          .arg = pj};
        if (!pj || wk_dbq_submit(d->ctx->dbq, &job, &d->loading[i]) !=
                       WH_OK) {
            free(pj);
            d->loading[i] = 0;
            d->load_at_us = wh_mono_us() + 1000 * 1000;
            return;
        }
    }
}

static void detach(wk_deliver *d, wk_lane *l)
{
    dl_job *j;
    l->detached = true;
    wk_dl_drain_stop(d, l);
    wk_dl_lane_drop_held(d, l);
    while ((j = wk_dl_dequeue(d, l)) != NULL)
        wk_dl_job_done(d, j);
    char key[WK_DL_LANE_KEY_MAX];
    wk_dl_lane_key(key, l->partition, l->endpoint_id);
    WH_IGNORE(wh_map_del(d->lanes, key));
    wk_dl_lane_unref(d, l);
}

/* Records where pid is handed over: every message below the offset its
 * consumption placed was consumed here, and what was finished is in the
 * recorder ahead of this row (sql/010_handoff.sql). */
static void hand_over(wk_deliver *d, int32_t pid)
{
    if (!wk_parts_valid(pid) || wk_parts_epoch(&d->parts, pid) == 0)
        return;
    int64_t placed = wk_parts_placed_below(&d->parts, pid);
    if (placed < 0)
        return;
    wk_lane_op op = {.op = WK_LANE_HANDOFF,
                     .endpoint_id = "",
                     .partition = pid,
                     .epoch = wk_parts_epoch(&d->parts, pid),
                     .delivery_id = "",
                     .position = placed};
    if (wk_recorder_add_lane(d->ctx->recorder, &op, NULL, NULL, d) != WH_OK)
        WH_WARN("delivery: partition %d handed over without its offset; its "
                "next owner sends again what was delivered since the last "
                "commit", (int)pid);
}

void wk_dl_rebalance(void *opaque, int assigned, const int32_t *parts,
                         size_t n)
{
    wk_deliver *d = opaque;
    char err[512];
    if (!assigned) {
        /* Hand the partitions over (sql/010_handoff.sql), then make
         * finished attempts durable so their offsets can be committed
         * before the partitions move, waiting no longer than the loop
         * waits for Postgres: what is not durable by then is delivered
         * again by the next owner (a duplicate, never a loss). */
        for (size_t i = 0; i < n; i++)
            hand_over(d, parts[i]);
        int64_t wait_ms = d->ctx->loop_wait_ms;
        if (d->ctx->stopping && wk_stop_left_ms(d->ctx) < wait_ms)
            wait_ms = wk_stop_left_ms(d->ctx);
        if (wk_recorder_sync(d->ctx->recorder, wait_ms, err, sizeof(err)) !=
            WH_OK)
            WH_WARN("revoking partitions of %s before every finished "
                    "attempt is recorded (they are delivered again by the "
                    "next owner): %s", d->ctx->s->deliveries_topic, err);
    }
    for (size_t i = 0; i < n; i++) {
        int32_t pid = parts[i];
        if (!wk_parts_valid(pid)) {
            WH_ERROR("partition %d of %s is beyond the %d supported",
                     (int)pid, d->ctx->s->deliveries_topic, WK_PARTS_MAX);
            continue;
        }
        if (assigned) {
            wk_tracker_assign(d->tracker, pid);
            wk_parts_assign(&d->parts, pid);
            continue;
        }
        wk_tracker_revoke(d->tracker, pid);
        if (d->loading[pid]) { /* its completion must build nothing */
            wk_dbq_cancel(d->ctx->dbq, d->loading[pid]);
            d->loading[pid] = 0;
        }
        wk_lane_entry *e = wk_parts_revoke(&d->parts, pid);
        while (e) {
            wk_lane_entry *next = e->next;
            wk_dl_job_done(d, DL_JOB_OF(e));
            e = next;
        }
    }
    if (assigned) {
        wk_dl_load_parts(d);
    } else {
        /* stop touching the partitions' lanes: cancel what is in flight,
         * drop what is queued */
        for (dl_job *j = d->sending, *next; j; j = next) {
            next = j->snext;
            if (!wk_parts_assigned(&d->parts, j->partition)) {
                wh_http_cancel(d->ctx->http, &j->req);
                wk_dl_sending_del(d, j);
                wk_dl_slot_free(d, j);
                wk_dl_job_done(d, j);
            }
        }
        for (wk_lane *l = d->all_lanes, *next; l; l = next) {
            next = l->anext;
            if (!l->detached && !wk_parts_assigned(&d->parts, l->partition)) {
                l->refs++; /* keep next valid */
                detach(d, l);
                next = l->anext;
                wk_dl_lane_unref(d, l);
            }
        }
        if (wh_kafka_consumer_commit(d->consumer, err, sizeof(err)) == WH_ERR)
            WH_WARN("%s", err);
    }
    WH_INFO("delivery: %s %zu partitions of %s",
            assigned ? "assigned" : "revoked", n, d->ctx->s->deliveries_topic);
}
