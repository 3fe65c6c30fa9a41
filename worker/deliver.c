/*
 * deliver.c - the delivery stage: consumes the deliveries topic, keeps one
 * lane per endpoint, sends each delivery as a signed POST and hands the
 * outcome to the recorder. A message's offset is stored only once its
 * outcome is durable in Postgres (an attempt row, a retry, a parked row) or
 * its dead letter is in Kafka. Main thread only.
 *
 * Ordered lanes (docs/guarantees.md, sql/006_lanes.sql). A lane is OPEN,
 * BLOCKED or DRAINING. OPEN: deliveries queue in memory and an ordered
 * endpoint has one attempt in flight. When an ordered delivery fails and
 * will be retried, the lane becomes BLOCKED in the same transaction as the
 * retry row: it waits for that delivery's retry (the head), and every
 * later delivery is parked in webhooks.parked in partition order (their
 * offsets may then be committed). When the head succeeds or is
 * dead-lettered the lane is DRAINING: parked deliveries are loaded and
 * sent in order, new arrivals are parked behind them, and once none is
 * left the lane row is deleted and the lane is OPEN again. A lane whose
 * queue passes lane_queue_max spills to DRAINING the same way, so a slow
 * endpoint never holds more than its bound in memory.
 *
 * A retry message is sent only while its lane waits for exactly that
 * attempt; other retries of ordered endpoints are ignored when the
 * delivery already ended, and otherwise join the lane like new deliveries.
 *
 * Partitions: on assignment the worker takes each partition by bumping its
 * epoch in webhooks.lane_owners and loads the partition's lanes; messages
 * wait until that succeeded. Every lane and retry write carries the epoch,
 * and the recorder drops writes of epochs that no longer own their
 * partition. On revoke the partition's lanes are detached: queued
 * deliveries are dropped, requests in flight are cancelled, and only
 * writes already buffered finish (fenced).
 *
 * Job states: QUEUED -> SENDING -> [DEAD_LETTERING] -> RECORDING -> DONE,
 * or PARKING -> DONE. A job's lane slot is released when its response
 * arrived, except after a dead letter: then the next delivery of the lane
 * waits until the final attempt is durable, so a dead-lettered head can
 * never be retried after a later delivery succeeded.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "limit.h"
#include "log.h"
#include "retry.h"
#include "sign.h"
#include "worker.h"

#define MAX_PARTS 1024

typedef enum {
    JOB_QUEUED,
    JOB_SENDING,
    JOB_DEAD_LETTERING,
    JOB_RECORDING,
    JOB_PARKING,
    JOB_DONE
} job_state;

typedef enum { LANE_OPEN, LANE_BLOCKED, LANE_DRAINING } lane_state;

struct lane;
struct dl_job;

/* The tracker's record of a consumed message; outlives its job until the
 * offset prefix passes it. */
typedef struct {
    wk_item item;
    struct dl_job *job;
} ticket;

typedef struct dl_job {
    wk_msg_tag tag; /* first: producer reports are routed by it */
    ticket *tk;     /* NULL for a delivery loaded from webhooks.parked */
    int32_t partition;
    int64_t position;   /* offset, or the parked row's position */
    wh_kmsg *km;
    wh_delivery_msg *dm;
    struct lane *lane;
    struct dl_job *next;          /* lane queue or held list */
    struct dl_job *sprev, *snext; /* SENDING jobs, for revokes */
    struct dl_job *lprev, *lnext; /* jobs without a ticket */
    job_state state;
    bool parked_row; /* a row in webhooks.parked: unpark with its outcome */
    bool head;       /* the retry its blocked lane waits for */
    bool holds_slot; /* counted in its lane's in_flight */
    bool undecodable;
    wh_http_req req;
    char url[WH_URL_MAX + 1];
    int64_t attempted_at_us;
    /* outcome of the attempt, kept while a dead letter is in flight */
    int status;
    int64_t latency_us;
    char error_class[32];
    char error[300];
} dl_job;

typedef struct lane {
    char endpoint_id[WH_ENDPOINT_ID_MAX];
    int32_t partition;
    int64_t epoch;
    lane_state state;
    char head_id[WH_ID_MAX + 1]; /* BLOCKED: the delivery waited for */
    uint32_t head_attempt;
    bool head_busy;
    dl_job *qhead, *qtail;
    size_t queued;
    int in_flight;
    int64_t drained_pos; /* DRAINING: position of the last parked one taken */
    int unflushed;       /* lane writes still in the recorder */
    wh_bucket bucket;    /* the endpoint's rate limit */
    wh_breaker breaker;
    int refs;            /* the map, jobs, buffered lane writes, wake list */
    bool detached;       /* partition revoked: nothing more is started */
    bool waking;
    int64_t wake_at_us;
    struct lane *wake_next;
    struct lane *aprev, *anext; /* every lane, for destroy */
} lane;

typedef struct {
    bool assigned;
    int64_t epoch;      /* 0 until the partition's lanes are loaded */
    dl_job *held, *held_tail;
} part;

struct wk_deliver {
    wk_ctx *ctx;
    wh_kafka_consumer *consumer;
    wk_tracker *tracker;
    wh_map *lanes;
    lane *all_lanes;
    lane *wake;
    dl_job *sending;
    dl_job *loose;      /* jobs without a ticket */
    part parts[MAX_PARTS];
    int64_t load_at_us; /* retry of a failed partition load */
    wh_buf buf;
    bool paused;
    size_t active;      /* consumed jobs not yet done */
    int64_t sent, succeeded, failed, parked, stale, blocked;
};

/* ---- jobs and lanes --------------------------------------------------- */

static void free_job(dl_job *j)
{
    wh_codec_delivery_free(j->dm);
    wh_kmsg_destroy(j->km);
    free(j);
}

static void release(wk_item *item)
{
    ticket *tk = (ticket *)item;
    if (tk->job) {
        /* destroy: the tracker releases what is still held */
        if (tk->job->tk == tk)
            free_job(tk->job);
    }
    free(tk);
}

static void lane_unref(wk_deliver *d, lane *l)
{
    assert(l->refs > 0);
    if (--l->refs > 0)
        return;
    assert(l->detached);
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

static void sending_add(wk_deliver *d, dl_job *j)
{
    j->snext = d->sending;
    j->sprev = NULL;
    if (d->sending)
        d->sending->sprev = j;
    d->sending = j;
}

static void sending_del(wk_deliver *d, dl_job *j)
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
static void wake(wk_deliver *d, lane *l, int64_t due_us)
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

/* The job's outcome is durable (or it was dropped): its ticket lets the
 * offset move, its lane reference goes. */
static void job_done(wk_deliver *d, dl_job *j)
{
    lane *l = j->lane;
    j->state = JOB_DONE;
    if (j->tk) {
        ticket *tk = j->tk;
        tk->job = NULL;
        j->tk = NULL;
        free_job(j);
        assert(d->active > 0);
        d->active--;
        wk_tracker_done(d->tracker, &tk->item, d->consumer);
    } else {
        loose_del(d, j);
        free_job(j);
    }
    if (l)
        lane_unref(d, l);
}

static void slot_free(wk_deliver *d, dl_job *j)
{
    if (!j->holds_slot)
        return;
    j->holds_slot = false;
    j->lane->in_flight--;
    wake(d, j->lane, 0);
}

static void enqueue(lane *l, dl_job *j)
{
    j->state = JOB_QUEUED;
    j->next = NULL;
    if (l->qtail)
        l->qtail->next = j;
    else
        l->qhead = j;
    l->qtail = j;
    l->queued++;
}

static dl_job *dequeue(lane *l)
{
    dl_job *j = l->qhead;
    if (!j)
        return NULL;
    l->qhead = j->next;
    if (!l->qhead)
        l->qtail = NULL;
    j->next = NULL;
    l->queued--;
    return j;
}

static lane *lane_new(wk_deliver *d, const char *endpoint_id,
                      int32_t partition)
{
    lane *l = calloc(1, sizeof(*l));
    if (!l) {
        WH_ERROR("out of memory; exiting so deliveries are redelivered");
        abort();
    }
    wh_strlcpy(l->endpoint_id, endpoint_id, sizeof(l->endpoint_id));
    l->partition = partition;
    l->epoch = d->parts[partition].epoch;
    l->drained_pos = -1;
    l->refs = 1; /* the map */
    wh_bucket_init(&l->bucket, 0, 0);
    wh_breaker_init(&l->breaker, (uint32_t)d->ctx->s->breaker_failures,
                    d->ctx->s->breaker_cooldown_ms * 1000,
                    d->ctx->s->breaker_cooldown_ms * 1000 * 64);
    l->anext = d->all_lanes;
    if (d->all_lanes)
        d->all_lanes->aprev = l;
    d->all_lanes = l;
    lane *old = NULL;
    if (wh_map_put(d->lanes, endpoint_id, l, (void **)&old) != WH_OK) {
        WH_ERROR("out of memory; exiting so deliveries are redelivered");
        abort();
    }
    if (old) { /* replaced by a fresh load: the old one is stale */
        old->detached = true;
        lane_unref(d, old);
    }
    return l;
}

static bool lane_ordered(wk_deliver *d, const lane *l)
{
    const wh_endpoint *ep = wk_cache_get(d->ctx->cache, l->endpoint_id);
    return !ep || ep->ordered;
}

/* Attempts a lane of endpoint ep (NULL: gone) may have in flight. */
static int lane_limit(const wh_endpoint *ep)
{
    if (!ep || ep->ordered || ep->max_in_flight < 1)
        return 1;
    return ep->max_in_flight;
}

/* ---- lane writes -------------------------------------------------------- */

static void lane_op_done(void *opaque, void *arg)
{
    lane *l = opaque;
    wk_deliver *d = arg;
    l->unflushed--;
    lane_unref(d, l);
}

static void recorded(void *opaque, void *arg);

/* Buffers a lane change; j (may be NULL) is done once it is durable. */
static void lane_write(wk_deliver *d, lane *l, wk_lane_op *op, dl_job *j)
{
    op->endpoint_id = l->endpoint_id;
    op->partition = l->partition;
    op->epoch = l->epoch;
    int rc = j ? wk_recorder_add_lane(d->ctx->recorder, op, recorded, j, d)
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
static void park(wk_deliver *d, lane *l, dl_job *j)
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
    l->unflushed++; /* undone by recorded() */
    lane_write(d, l, &op, j);
}

static void unpark(wk_deliver *d, lane *l, dl_job *j)
{
    wk_lane_op op = {.op = WK_LANE_UNPARK,
                     .delivery_id = wh_codec_delivery(j->dm)->delivery_id};
    lane_write(d, l, &op, NULL);
    j->parked_row = false;
}

/* j failed and its retry `attempt` is scheduled: l waits for it, and the
 * deliveries queued behind j are parked (consumed ones) or left in
 * webhooks.parked (loaded ones). */
static void block(wk_deliver *d, lane *l, dl_job *j, uint32_t attempt)
{
    const wh_delivery *dv = wh_codec_delivery(j->dm);
    wk_lane_op op = {.op = WK_LANE_BLOCK,
                     .delivery_id = dv->delivery_id,
                     .attempt = attempt};
    bool was_parked = j->parked_row;
    if (l->state != LANE_BLOCKED)
        d->blocked++;
    lane_write(d, l, &op, NULL);
    if (was_parked)
        unpark(d, l, j);
    l->state = LANE_BLOCKED;
    wh_strlcpy(l->head_id, dv->delivery_id, sizeof(l->head_id));
    l->head_attempt = attempt;
    l->head_busy = false;
    /* the next drain starts after j, or from the beginning when the
     * queue held consumed messages that are parked now */
    l->drained_pos = was_parked ? j->position : -1;
    dl_job *q;
    while ((q = dequeue(l)) != NULL) {
        if (q->parked_row)
            job_done(d, q);
        else
            park(d, l, q);
    }
}

/* The head ended (succeeded or dead-lettered): drain what is parked. */
static void unblock(wk_deliver *d, lane *l)
{
    wk_lane_op op = {.op = WK_LANE_UNBLOCK, .delivery_id = l->head_id};
    lane_write(d, l, &op, NULL);
    l->state = LANE_DRAINING;
    l->head_busy = false;
    l->head_id[0] = '\0';
    l->drained_pos = -1;
}

/* ---- attempts ----------------------------------------------------------- */

static void recorded(void *opaque, void *arg)
{
    wk_deliver *d = arg;
    dl_job *j = opaque;
    if (j->state == JOB_PARKING)
        j->lane->unflushed--;
    slot_free(d, j);
    job_done(d, j);
}

/* Hands the attempt's outcome (kept in j) to the recorder with the retry
 * it schedules (next_at_us != 0: the encoded delivery is in d->buf), and
 * the lane changes that follow from it. */
static void record(wk_deliver *d, dl_job *j, bool ok, bool final,
                   int64_t next_at_us, uint32_t next_attempt)
{
    const wh_delivery *dv = wh_codec_delivery(j->dm);
    lane *l = j->lane;
    wk_attempt a = {
        .delivery_id = dv->delivery_id,
        .event_id = dv->event.id,
        .endpoint_id = dv->endpoint_id,
        .app = dv->event.app,
        .event_type = dv->event.type,
        .attempt = dv->attempt,
        .succeeded = ok,
        .status_code = j->status,
        .latency_ms = j->latency_us / 1000,
        .error_class = ok ? NULL : j->error_class,
        .error = ok ? NULL : j->error,
        .snippet = j->req.snippet,
        .snippet_len = j->req.snippet_len,
        .attempted_at_us = j->attempted_at_us,
        .final = final,
        .next_attempt_at_us = next_at_us,
        .retry_delivery = next_at_us ? d->buf.data : NULL,
        .retry_len = next_at_us ? d->buf.len : 0,
        .retry_attempt = next_attempt,
        .partition = l->partition,
        .epoch = l->epoch,
    };
    if (ok)
        d->succeeded++;
    else
        d->failed++;
    j->state = JOB_RECORDING;
    if (wk_recorder_add(d->ctx->recorder, &a, recorded, j, d) != WH_OK) {
        /* Cannot happen for validated deliveries; never drop silently:
         * leave the offset uncommitted so a restart retries it. */
        WH_ERROR("attempt of delivery %s could not be encoded for the "
                 "history; its offset will not be committed",
                 dv->delivery_id);
    }
    if (l->detached)
        return;
    if (next_at_us && (j->head || lane_ordered(d, l)))
        block(d, l, j, next_attempt);
    else if (j->parked_row)
        unpark(d, l, j);
    if (j->head && !next_at_us)
        unblock(d, l);
    else if (j->head)
        j->head = false; /* block() made its retry the new head attempt */
    /* After a dead letter the slot is kept until the final attempt is
     * durable (recorded() frees it). */
    if (!final || ok)
        slot_free(d, j);
}

/* Notes a failure that happened without a response from the endpoint. */
static void set_failure(dl_job *j, const char *cls, const char *error)
{
    j->status = 0;
    j->latency_us = 0;
    j->req.snippet_len = 0;
    wh_strlcpy(j->error_class, cls, sizeof(j->error_class));
    wh_strlcpy(j->error, error, sizeof(j->error));
}

static void dead_letter(wk_deliver *d, dl_job *j, wh_dead_reason reason,
                        const char *detail);

/* Encodes j's delivery as a retry with attempt number `attempt` into d->buf
 * and records the failed attempt with that retry due at due_us. */
static void schedule_retry(wk_deliver *d, dl_job *j, uint32_t attempt,
                           int64_t due_us)
{
    wh_delivery next = *wh_codec_delivery(j->dm);
    char err[WH_ERRLEN];
    next.attempt = attempt;
    next.kind = WH_DELIVERY_RETRY;
    wh_buf_reset(&d->buf);
    d->buf.max = next.event.payload_len + 64 * 1024;
    if (wh_codec_delivery_encode(&next, &d->buf, err, sizeof(err)) != WH_OK) {
        WH_ERROR("cannot encode the retry of %s: %s", next.delivery_id, err);
        dead_letter(d, j, WH_DEAD_ATTEMPTS_EXHAUSTED, err);
        return;
    }
    record(d, j, false, false, due_us, attempt);
}

/* Decides what follows j's failed attempt (outcome already in j). */
static void after_failure(wk_deliver *d, dl_job *j, const wh_endpoint *ep)
{
    const wh_delivery *dv = wh_codec_delivery(j->dm);
    wh_retry_verdict v = wh_retry_classify(j->status, j->error_class);
    char detail[400];
    if (v == WH_RETRY_GONE) {
        char err[WH_ERRLEN], reason[WH_URL_MAX + 64];
        snprintf(reason, sizeof(reason), "HTTP 410 Gone from %s", j->url);
        if (wh_endpoints_set_disabled(d->ctx->db, dv->endpoint_id, true,
                                      reason, err, sizeof(err)) == WH_ERR)
            WH_ERROR("cannot disable endpoint %s after 410 Gone: %s",
                     dv->endpoint_id, err);
        else
            WH_WARN("endpoint %s disabled: %s", dv->endpoint_id, reason);
        dead_letter(d, j, WH_DEAD_ENDPOINT_GONE, reason);
        return;
    }
    if (v == WH_RETRY_NO) {
        snprintf(detail, sizeof(detail), "%s is not retried", j->error);
        dead_letter(d, j, WH_DEAD_REJECTED, detail);
        return;
    }
    wh_retry_policy def;
    const wh_retry_policy *policy = ep ? &ep->retry : NULL;
    if (!policy) {
        wh_retry_policy_default(&def);
        policy = &def;
    }
    int64_t now = wh_wall_us();
    int64_t age_ms = dv->created_at_us ? (now - dv->created_at_us) / 1000 : 0;
    int64_t delay_ms;
    if (wh_retry_next(policy, dv->attempt, age_ms, wh_retry_random(),
                      &delay_ms) != WH_OK) {
        bool expired = dv->attempt < wh_retry_max_attempts(policy);
        snprintf(detail, sizeof(detail), "%s after %u attempts: %s",
                 expired ? "expired" : "gave up", dv->attempt, j->error);
        dead_letter(d, j, expired ? WH_DEAD_EXPIRED
                                  : WH_DEAD_ATTEMPTS_EXHAUSTED, detail);
        return;
    }
    if ((j->status == 429 || j->status == 503) && j->req.retry_after_s >= 0)
        delay_ms = wh_retry_after_delay(policy, j->req.retry_after_s, delay_ms);
    schedule_retry(d, j, dv->attempt + 1, now + delay_ms * 1000);
}

/* Starts j's attempt (it takes a slot of its lane), or records why it
 * cannot be made. */
static void start(wk_deliver *d, dl_job *j)
{
    const wh_delivery *dv = wh_codec_delivery(j->dm);
    const wh_endpoint *ep = wk_cache_get(d->ctx->cache, dv->endpoint_id);
    if (ep && ep->disabled && j->head) {
        /* The retry that `endpoint enable` released can arrive before the
         * change notification: read the endpoint again before parking. */
        char err[WH_ERRLEN];
        if (wk_cache_refresh(d->ctx->cache, dv->endpoint_id, err,
                             sizeof(err)) != WH_OK)
            WH_WARN("cannot re-read endpoint %s: %s", dv->endpoint_id, err);
        ep = wk_cache_get(d->ctx->cache, dv->endpoint_id);
    }
    j->attempted_at_us = wh_wall_us();
    j->holds_slot = true;
    j->lane->in_flight++;
    if (!ep || ep->disabled) /* no request: nothing for the breaker */
        wh_breaker_success(&j->lane->breaker, wh_mono_us());
    if (!ep) {
        set_failure(j, "endpoint_not_found", "endpoint no longer exists");
        dead_letter(d, j, WH_DEAD_ENDPOINT_GONE, "endpoint no longer exists");
        return;
    }
    if (ep->disabled) {
        /* waits as a retry due at 'infinity' until `endpoint enable` */
        char why[300];
        snprintf(why, sizeof(why), "endpoint is disabled%s%s",
                 ep->disabled_reason ? ": " : "",
                 ep->disabled_reason ? ep->disabled_reason : "");
        set_failure(j, "endpoint_disabled", why);
        schedule_retry(d, j, dv->attempt, INT64_MAX);
        return;
    }
    char sig[WH_SIGNATURE_MAX + 1], err[WH_ERRLEN];
    int64_t ts = j->attempted_at_us / 1000000;
    if (wh_sign(ep->secrets, ep->nsecrets, dv->delivery_id, ts,
                dv->event.payload, dv->event.payload_len, sig,
                sizeof(sig)) != WH_OK) {
        set_failure(j, "signing", "cannot sign the request");
        wh_breaker_failure(&j->lane->breaker, wh_mono_us());
        after_failure(d, j, ep);
        return;
    }
    /* header lines: fixed ones plus the event's own */
    char fixed[4][WH_SIGNATURE_MAX + WH_CONTENT_TYPE_MAX + 64];
    const char *lines[4 + WH_EVENT_HEADERS_MAX + 1];
    char *extra[WH_EVENT_HEADERS_MAX] = {0};
    size_t n = 0;
    snprintf(fixed[0], sizeof(fixed[0]), "content-type: %s",
             dv->event.content_type);
    snprintf(fixed[1], sizeof(fixed[1]), "webhook-id: %s", dv->delivery_id);
    snprintf(fixed[2], sizeof(fixed[2]), "webhook-timestamp: %lld",
             (long long)ts);
    snprintf(fixed[3], sizeof(fixed[3]), "webhook-signature: %s", sig);
    for (int i = 0; i < 4; i++)
        lines[n++] = fixed[i];
    for (size_t i = 0; i < dv->event.n_headers; i++) {
        const wh_header_kv *h = &dv->event.headers[i];
        size_t len = strlen(h->name) + strlen(h->value) + 3;
        if ((extra[i] = malloc(len)) != NULL) {
            snprintf(extra[i], len, "%s: %s", h->name, h->value);
            lines[n++] = extra[i];
        }
    }
    lines[n] = NULL;
    wh_strlcpy(j->url, ep->url, sizeof(j->url));
    memset(&j->req, 0, sizeof(j->req));
    j->req.url = j->url;
    j->req.body = dv->event.payload;
    j->req.body_len = dv->event.payload_len;
    j->req.headers = lines;
    j->req.timeout_ms = ep->timeout_ms ? ep->timeout_ms
                                       : d->ctx->s->http_timeout_ms;
    j->req.connect_timeout_ms = d->ctx->s->connect_timeout_ms;
    if (j->req.connect_timeout_ms > j->req.timeout_ms)
        j->req.connect_timeout_ms = j->req.timeout_ms;
    j->req.opaque = j;
    int rc = wh_http_start(d->ctx->http, &j->req, err, sizeof(err));
    for (size_t i = 0; i < dv->event.n_headers; i++)
        free(extra[i]);
    j->req.headers = NULL;
    if (rc != WH_OK) {
        set_failure(j, "other", err);
        wh_breaker_failure(&j->lane->breaker, wh_mono_us());
        after_failure(d, j, ep);
        return;
    }
    j->state = JOB_SENDING;
    sending_add(d, j);
    d->sent++;
}

/* ---- draining ----------------------------------------------------------- */

/* Loads the next parked deliveries of a DRAINING lane into its queue, or
 * reopens the lane when none is left. WH_AGAIN: Postgres is unavailable,
 * try later. */
static int refill(wk_deliver *d, lane *l)
{
    char err[WH_ERRLEN], pos[24], part_s[16], epoch_s[24];
    wh_db_result *r = NULL;
    if (l->unflushed > 0) {
        /* what this lane parked or unparked must be visible first */
        if (wk_recorder_sync(d->ctx->recorder, err, sizeof(err)) != WH_OK) {
            WH_WARN("lane %s waits for Postgres: %s", l->endpoint_id, err);
            return WH_AGAIN;
        }
    }
    snprintf(pos, sizeof(pos), "%lld", (long long)l->drained_pos);
    const char *p[4] = {l->endpoint_id, pos, NULL, NULL};
    if (wh_db_query(d->ctx->db,
                    "SELECT position, delivery FROM webhooks.parked "
                    "WHERE endpoint_id = $1 AND position > $2::bigint "
                    "ORDER BY position LIMIT 256",
                    2, p, &r, err, sizeof(err)) != WH_OK)
        goto again;
    int rows = wh_db_rows(r);
    for (int i = 0; i < rows; i++) {
        int64_t position = strtoll(wh_db_get(r, i, 0), NULL, 10);
        const char *hex = wh_db_get(r, i, 1);
        wh_buf raw;
        wh_buf_init(&raw, wh_db_getlen(r, i, 1));
        dl_job *j = calloc(1, sizeof(*j));
        char e[WH_ERRLEN];
        if (!j || strncmp(hex, "\\x", 2) != 0 ||
            wh_buf_set_hex(&raw, hex + 2, strlen(hex + 2), NULL) != WH_OK ||
            wh_codec_delivery_decode(raw.data, raw.len, &j->dm, e,
                                     sizeof(e)) != WH_OK) {
            WH_ERROR("parked delivery at position %lld of endpoint %s is "
                     "unreadable; it is left in webhooks.parked",
                     (long long)position, l->endpoint_id);
            free(j);
            wh_buf_free(&raw);
            l->drained_pos = position;
            continue;
        }
        wh_buf_free(&raw);
        j->tag.owner = WK_MSG_DELIVER;
        j->partition = l->partition;
        j->position = position;
        j->parked_row = true;
        j->lane = l;
        l->refs++;
        loose_add(d, j);
        enqueue(l, j);
        l->drained_pos = position;
    }
    wh_db_result_free(r);
    r = NULL;
    if (rows > 0)
        return l->qhead ? WH_OK : WH_AGAIN; /* only unreadable rows */
    /* Nothing more parked: reopen, unless something was parked meanwhile
     * (then drain again from the start). */
    snprintf(part_s, sizeof(part_s), "%d", (int)l->partition);
    snprintf(epoch_s, sizeof(epoch_s), "%lld", (long long)l->epoch);
    const char *q[4] = {l->endpoint_id, d->ctx->s->deliveries_topic, part_s,
                        epoch_s};
    if (wh_db_query(d->ctx->db,
                    "WITH gone AS (DELETE FROM webhooks.lanes "
                    "WHERE endpoint_id = $1 AND head_delivery_id IS NULL "
                    "AND NOT EXISTS (SELECT 1 FROM webhooks.parked "
                    "WHERE endpoint_id = $1) AND EXISTS (SELECT 1 FROM "
                    "webhooks.lane_owners WHERE topic = $2 AND "
                    "partition = $3::int AND epoch = $4::bigint) "
                    "RETURNING 1) SELECT EXISTS (SELECT 1 FROM "
                    "webhooks.parked WHERE endpoint_id = $1)",
                    4, q, &r, err, sizeof(err)) != WH_OK)
        goto again;
    bool more = strcmp(wh_db_get(r, 0, 0), "t") == 0;
    wh_db_result_free(r);
    if (more) {
        if (l->drained_pos < 0)
            return WH_AGAIN; /* cannot happen: parked rows unreadable */
        l->drained_pos = -1;
        return WH_OK;
    }
    l->state = LANE_OPEN;
    WH_DEBUG("lane of endpoint %s is open again", l->endpoint_id);
    return WH_OK;
again:
    wh_db_result_free(r);
    WH_WARN("draining the lane of endpoint %s: %s", l->endpoint_id, err);
    return WH_AGAIN;
}

/* Starts what the lane may start now. */
static void pump(wk_deliver *d, lane *l)
{
    while (!l->detached && l->state != LANE_BLOCKED) {
        const wh_endpoint *ep = wk_cache_get(d->ctx->cache, l->endpoint_id);
        if (l->in_flight >= lane_limit(ep))
            return;
        if (!l->qhead) {
            if (l->state != LANE_DRAINING || l->in_flight > 0)
                return;
            if (refill(d, l) == WH_AGAIN) {
                wake(d, l, wh_mono_us() + 1000 * 1000);
                return;
            }
            if (!l->qhead && l->state == LANE_DRAINING) {
                wake(d, l, 0);
                return;
            }
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
                wake(d, l, now + wait);
            return;
        }
        if (!wh_breaker_allow(&l->breaker, now))
            return;
        WH_IGNORE(wh_bucket_take(&l->bucket, now));
        start(d, dequeue(l));
    }
}

/* ---- arrivals ----------------------------------------------------------- */

/* Whether delivery dv already ended (succeeded, or failed for good). On
 * error it is assumed not to have ended: a duplicate is allowed, a loss
 * is not. */
static bool delivery_ended(wk_deliver *d, const wh_delivery *dv)
{
    char err[WH_ERRLEN];
    const char *p[1] = {dv->delivery_id};
    wh_db_result *r = NULL;
    if (wh_db_query(d->ctx->db,
                    "SELECT EXISTS (SELECT 1 FROM webhooks.attempts "
                    "WHERE delivery_id = $1 AND (outcome = 'succeeded' "
                    "OR final))",
                    1, p, &r, err, sizeof(err)) != WH_OK) {
        WH_WARN("cannot check delivery %s: %s", dv->delivery_id, err);
        return false;
    }
    bool ended = strcmp(wh_db_get(r, 0, 0), "t") == 0;
    wh_db_result_free(r);
    return ended;
}

static void ignore_stale(wk_deliver *d, dl_job *j, const char *why)
{
    const wh_delivery *dv = wh_codec_delivery(j->dm);
    WH_INFO("ignoring retry %u of delivery %s to %s: %s", dv->attempt,
            dv->delivery_id, dv->endpoint_id, why);
    d->stale++;
    job_done(d, j);
}

/* Routes a decoded message of a loaded partition into its lane. */
static void dispatch(wk_deliver *d, dl_job *j)
{
    const wh_delivery *dv = wh_codec_delivery(j->dm);
    lane *l = wh_map_get(d->lanes, dv->endpoint_id);
    if (!l)
        l = lane_new(d, dv->endpoint_id, j->partition);
    j->lane = l;
    l->refs++;
    bool ordered = lane_ordered(d, l);
    if (dv->kind == WH_DELIVERY_RETRY) {
        if (l->state == LANE_BLOCKED &&
            strcmp(l->head_id, dv->delivery_id) == 0) {
            if (dv->attempt != l->head_attempt)
                ignore_stale(d, j, "the lane waits for another attempt");
            else if (l->head_busy)
                ignore_stale(d, j, "this attempt is already in flight");
            else {
                j->head = true;
                l->head_busy = true;
                start(d, j);
            }
            return;
        }
        if ((ordered || l->state != LANE_OPEN) && delivery_ended(d, dv)) {
            ignore_stale(d, j, "the delivery already ended");
            return;
        }
    }
    if (l->state != LANE_OPEN) {
        park(d, l, j);
        return;
    }
    if (l->queued >= (size_t)d->ctx->s->lane_queue_max) {
        /* spill: later deliveries wait in Postgres, not in memory */
        l->state = LANE_DRAINING;
        l->drained_pos = -1;
        park(d, l, j);
        return;
    }
    enqueue(l, j);
    pump(d, l);
}

/* ---- partitions --------------------------------------------------------- */

/* Takes partition pid (bumps its epoch) and loads its lanes. */
static int load_part(wk_deliver *d, int32_t pid)
{
    char err[WH_ERRLEN], ps[16];
    wh_db_result *r = NULL;
    snprintf(ps, sizeof(ps), "%d", (int)pid);
    const char *p[3] = {d->ctx->s->deliveries_topic, ps, d->ctx->worker_id};
    if (wh_db_query(d->ctx->db,
                    "INSERT INTO webhooks.lane_owners AS o (topic, partition, "
                    "epoch, worker) VALUES ($1, $2::int, 1, $3) "
                    "ON CONFLICT (topic, partition) DO UPDATE SET "
                    "epoch = o.epoch + 1, worker = EXCLUDED.worker, "
                    "assigned_at = now() RETURNING epoch",
                    3, p, &r, err, sizeof(err)) != WH_OK)
        goto fail;
    int64_t epoch = strtoll(wh_db_get(r, 0, 0), NULL, 10);
    wh_db_result_free(r);
    r = NULL;
    if (wh_db_query(d->ctx->db,
                    "SELECT endpoint_id, head_delivery_id, head_attempt "
                    "FROM webhooks.lanes WHERE partition = $1::int",
                    1, p + 1, &r, err, sizeof(err)) != WH_OK)
        goto fail;
    part *pt = &d->parts[pid];
    pt->epoch = epoch;
    int rows = wh_db_rows(r);
    for (int i = 0; i < rows; i++) {
        lane *l = lane_new(d, wh_db_get(r, i, 0), pid);
        if (wh_db_isnull(r, i, 1)) {
            l->state = LANE_DRAINING;
            wake(d, l, 0);
        } else {
            l->state = LANE_BLOCKED;
            wh_strlcpy(l->head_id, wh_db_get(r, i, 1), sizeof(l->head_id));
            l->head_attempt = (uint32_t)strtoul(wh_db_get(r, i, 2), NULL, 10);
        }
    }
    wh_db_result_free(r);
    WH_INFO("delivery: partition %d taken (epoch %lld, %d lanes not open)",
            (int)pid, (long long)epoch, rows);
    dl_job *j = pt->held;
    pt->held = pt->held_tail = NULL;
    while (j) {
        dl_job *next = j->next;
        j->next = NULL;
        dispatch(d, j);
        j = next;
    }
    return WH_OK;
fail:
    wh_db_result_free(r);
    WH_WARN("delivery: cannot take partition %d (retrying): %s", (int)pid,
            err);
    return WH_ERR;
}

static void load_parts(wk_deliver *d)
{
    bool failed = false;
    for (int32_t i = 0; i < MAX_PARTS && !failed; i++)
        if (d->parts[i].assigned && d->parts[i].epoch == 0)
            failed = load_part(d, i) != WH_OK;
    d->load_at_us = failed ? wh_mono_us() + 1000 * 1000 : 0;
}

static void detach(wk_deliver *d, lane *l)
{
    dl_job *q;
    l->detached = true;
    while ((q = dequeue(l)) != NULL)
        job_done(d, q);
    WH_IGNORE(wh_map_del(d->lanes, l->endpoint_id));
    lane_unref(d, l);
}

static void on_rebalance(void *opaque, int assigned, const int32_t *parts,
                         size_t n)
{
    wk_deliver *d = opaque;
    char err[512];
    if (!assigned) {
        /* Make finished attempts durable so their offsets can be
         * committed before the partitions move. */
        if (wk_recorder_sync(d->ctx->recorder, err, sizeof(err)) != WH_OK)
            WH_WARN("%s", err);
    }
    for (size_t i = 0; i < n; i++) {
        int32_t pid = parts[i];
        if (pid < 0 || pid >= MAX_PARTS) {
            WH_ERROR("partition %d of %s is beyond the %d supported",
                     (int)pid, d->ctx->s->deliveries_topic, MAX_PARTS);
            continue;
        }
        part *pt = &d->parts[pid];
        if (assigned) {
            wk_tracker_assign(d->tracker, pid);
            pt->assigned = true;
            pt->epoch = 0;
            continue;
        }
        wk_tracker_revoke(d->tracker, pid);
        pt->assigned = false;
        pt->epoch = 0;
        dl_job *j = pt->held;
        pt->held = pt->held_tail = NULL;
        while (j) {
            dl_job *next = j->next;
            job_done(d, j);
            j = next;
        }
    }
    if (assigned) {
        load_parts(d);
    } else {
        /* stop touching the partitions' lanes: cancel what is in flight,
         * drop what is queued */
        for (dl_job *j = d->sending, *next; j; j = next) {
            next = j->snext;
            if (!d->parts[j->partition].assigned) {
                wh_http_cancel(d->ctx->http, &j->req);
                sending_del(d, j);
                slot_free(d, j);
                job_done(d, j);
            }
        }
        for (lane *l = d->all_lanes, *next; l; l = next) {
            next = l->anext;
            if (!l->detached && !d->parts[l->partition].assigned) {
                l->refs++; /* keep next valid */
                detach(d, l);
                next = l->anext;
                lane_unref(d, l);
            }
        }
        if (wh_kafka_consumer_commit(d->consumer, err, sizeof(err)) == WH_ERR)
            WH_WARN("%s", err);
    }
    WH_INFO("delivery: %s %zu partitions of %s",
            assigned ? "assigned" : "revoked", n, d->ctx->s->deliveries_topic);
}

/* ---- stage interface ---------------------------------------------------- */

int wk_deliver_new(wk_ctx *ctx, wk_deliver **out, char *err, size_t errlen)
{
    *out = NULL;
    wk_deliver *d = calloc(1, sizeof(*d));
    if (!d)
        return wh_errf(err, errlen, "out of memory");
    d->ctx = ctx;
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
                              ctx->s->deliveries_topic, on_rebalance, d,
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
    wh_kafka_consumer_close(d->consumer, 10000); /* revokes everything */
    wh_http_cancel_all(d->ctx->http);
    wk_recorder_forget(d->ctx->recorder, d);
    for (dl_job *j = d->loose, *next; j; j = next) {
        next = j->lnext;
        free_job(j);
    }
    wk_tracker_destroy(d->tracker); /* frees held messages and tickets */
    wh_kafka_consumer_destroy(d->consumer);
    for (lane *l = d->all_lanes, *next; l; l = next) {
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

void wk_deliver_http_done(wh_http_req *req, void *opaque)
{
    wk_deliver *d = opaque;
    dl_job *j = req->opaque;
    lane *l = j->lane;
    sending_del(d, j);
    bool ok = req->error_class == WH_HTTP_NONE && req->status >= 200 &&
              req->status <= 299;
    j->status = req->status;
    j->latency_us = req->latency_us;
    if (req->error_class != WH_HTTP_NONE) {
        wh_strlcpy(j->error_class, wh_http_error_name(req->error_class),
                   sizeof(j->error_class));
        wh_strlcpy(j->error, req->error, sizeof(j->error));
    } else if (!ok) {
        wh_strlcpy(j->error_class, "http_status", sizeof(j->error_class));
        snprintf(j->error, sizeof(j->error), "HTTP %d", req->status);
    }
    /* the breaker counts what says the endpoint is unwell */
    if (ok || (req->status > 0 && req->status < 500 && req->status != 429))
        wh_breaker_success(&l->breaker, wh_mono_us());
    else
        wh_breaker_failure(&l->breaker, wh_mono_us());
    l->refs++; /* the job may be done before pump returns */
    if (ok)
        record(d, j, true, true, 0, 0);
    else
        after_failure(d, j,
                      wk_cache_get(d->ctx->cache,
                                   wh_codec_delivery(j->dm)->endpoint_id));
    pump(d, l);
    lane_unref(d, l);
}

/* Produces j's DeadLetter; the acknowledgement (wk_deliver_on_report)
 * records the final attempt, or for an undecodable message marks it done. */
static void dead_letter(wk_deliver *d, dl_job *j, wh_dead_reason reason,
                        const char *detail)
{
    size_t len;
    const void *raw = j->undecodable ? wh_kmsg_value(j->km, &len) : NULL;
    const wh_delivery *dv = j->dm ? wh_codec_delivery(j->dm) : NULL;
    char err[WH_ERRLEN];
    wh_dead_letter dl = {
        .reason = reason,
        .detail = detail,
        .delivery = dv,
        .raw = raw,
        .raw_len = raw ? len : 0,
        .source_topic = j->km ? wh_kmsg_topic(j->km)
                              : d->ctx->s->deliveries_topic,
        .source_partition = j->partition,
        .source_offset = j->position,
        .attempts = dv ? dv->attempt : 0,
        .last_status_code = j->status,
        .last_error = dv ? j->error : NULL,
        .dead_at_us = wh_wall_us(),
    };
    if (j->undecodable)
        WH_WARN("delivery message at %s [%d] @ %lld is undecodable, "
                "dead-lettered: %s", dl.source_topic,
                (int)dl.source_partition, (long long)dl.source_offset,
                detail);
    else
        WH_INFO("delivery %s to %s dead-lettered: %s", dv->delivery_id,
                dv->endpoint_id, detail);
    j->state = JOB_DEAD_LETTERING;
    wh_buf_reset(&d->buf);
    d->buf.max = (raw ? len : dv->event.payload_len) + 64 * 1024;
    if (wh_codec_dead_letter_encode(&dl, &d->buf, err, sizeof(err)) != WH_OK ||
        wh_kafka_producer_send(d->ctx->producer, d->ctx->s->dead_topic,
                               dv ? dv->endpoint_id : NULL,
                               dv ? strlen(dv->endpoint_id) : 0, d->buf.data,
                               d->buf.len, NULL, j, err, sizeof(err)) != WH_OK)
        WH_ERROR("cannot dead-letter %s [%d] @ %lld: %s; its offset will "
                 "not be committed", dl.source_topic,
                 (int)dl.source_partition, (long long)dl.source_offset, err);
}

void wk_deliver_on_report(wk_deliver *d, void *msg_opaque, int ok,
                          const char *errstr)
{
    dl_job *j = msg_opaque;
    if (!ok) {
        WH_WARN("dead letter not accepted by Kafka (%s); sending again",
                errstr);
        dead_letter(d, j,
                    j->undecodable ? WH_DEAD_UNDECODABLE
                                   : WH_DEAD_ATTEMPTS_EXHAUSTED,
                    "dead letter sent again after a Kafka error");
        return;
    }
    if (j->undecodable) {
        job_done(d, j);
        return;
    }
    record(d, j, false, true, 0, 0);
}

static void hold(part *pt, dl_job *j)
{
    j->next = NULL;
    if (pt->held_tail)
        pt->held_tail->next = j;
    else
        pt->held = j;
    pt->held_tail = j;
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
        ticket *tk = calloc(1, sizeof(*tk));
        if (!j || !tk) {
            WH_ERROR("out of memory; exiting so the delivery is redelivered");
            abort();
        }
        if (pid < 0 || pid >= MAX_PARTS ||
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
            dead_letter(d, j, WH_DEAD_UNDECODABLE, err);
            continue;
        }
        part *pt = &d->parts[pid];
        if (pt->epoch == 0)
            hold(pt, j); /* until the partition's lanes are loaded */
        else
            dispatch(d, j);
    }
    return n;
}

void wk_deliver_tick(wk_deliver *d)
{
    int64_t now = wh_mono_us();
    if (d->load_at_us && now >= d->load_at_us)
        load_parts(d);
    lane *list = d->wake, *later = NULL;
    d->wake = NULL;
    while (list) {
        lane *l = list;
        list = l->wake_next;
        if (l->wake_at_us > now) {
            l->wake_next = later;
            later = l;
            continue;
        }
        l->waking = false;
        pump(d, l);
        lane_unref(d, l);
    }
    /* lanes woken while pumping are already on d->wake */
    while (later) {
        lane *l = later;
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
    for (const lane *l = d->wake; l; l = l->wake_next) {
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
}
