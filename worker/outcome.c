/*
 * outcome.c - the delivery stage's attempts: starting one (attempt.h signs
 * and sends it), reading its response, deciding what follows a failure
 * (retry or dead letter), handing the outcome to the recorder with the
 * lane changes it implies, and dead letters with their acknowledgements.
 * The other half of the stage is deliver.c; both share dl.h. Main thread.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dbq.h"
#include "dl.h"
#include "log.h"

/* ---- outcomes ----------------------------------------------------------- */

void wk_dl_recorded(void *opaque, void *arg)
{
    wk_deliver *d = arg;
    dl_job *j = opaque;
    if (j->state == JOB_PARKING)
        wk_dl_lane_flushed(d, j->lane);
    wk_dl_slot_free(d, j);
    wk_dl_job_done(d, j);
}

/* Hands the attempt's outcome (kept in j) to the recorder with the retry
 * it schedules (next_at_us != 0: the encoded delivery is in d->buf), and
 * the lane changes that follow from it. */
static void record(wk_deliver *d, dl_job *j, bool ok, bool final,
                   int64_t next_at_us, uint32_t next_attempt)
{
    const wh_delivery *dv = wh_codec_delivery(j->dm);
    wk_lane *l = j->lane;
    wk_attempt a = {
        .delivery_id = dv->delivery_id,
        .event_id = dv->event.id,
        .endpoint_id = dv->endpoint_id,
        .app = dv->event.app,
        .event_type = dv->event.type,
        .attempt = dv->attempt,
        .succeeded = ok,
        .status_code = j->out.status,
        .latency_ms = j->out.latency_us / 1000,
        .error_class = ok ? NULL : j->out.error_class,
        .error = ok ? NULL : j->out.error,
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
    if (wk_recorder_add(d->ctx->recorder, &a, wk_dl_recorded, j, d) != WH_OK) {
        /* Cannot happen for validated deliveries; never drop silently:
         * leave the offset uncommitted so a restart retries it. */
        WH_ERROR("attempt of delivery %s could not be encoded for the "
                 "history; its offset will not be committed",
                 dv->delivery_id);
    }
    if (l->detached)
        return;
    if (next_at_us && (j->head || wk_dl_ordered(d, l)))
        wk_dl_block(d, l, j, next_attempt);
    else if (j->parked_row)
        wk_dl_unpark(d, l, j);
    if (j->head && !next_at_us)
        wk_dl_unblock(d, l);
    else if (j->head)
        j->head = false; /* wk_dl_block() made its retry the new head attempt */
    /* After a dead letter the slot is kept until the final attempt is
     * durable (wk_dl_recorded() frees it). */
    if (!final || ok)
        wk_dl_slot_free(d, j);
}

/* Notes a failure that happened without a response from the endpoint. */
static void set_failure(dl_job *j, const char *cls, const char *error)
{
    j->req.snippet_len = 0;
    wk_attempt_fail(&j->out, cls, error);
}

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
        wk_dl_dead_letter(d, j, WH_DEAD_ATTEMPTS_EXHAUSTED, err);
        return;
    }
    record(d, j, false, false, due_us, attempt);
}

/* The endpoint answered 410 Gone: disabled on the query executor (the
 * change notification then refreshes the cache), so the loop never waits
 * for Postgres for it. */
typedef struct {
    char id[WH_ID_MAX], reason[WH_ERRLEN];
} gone_job;

static int gone_run(wh_db *db, void *arg, char *err, size_t errlen)
{
    gone_job *g = arg;
    return wh_endpoints_set_disabled(db, g->id, true, g->reason, err,
                                     errlen) == WH_ERR ? WH_ERR : WH_OK;
}

static void gone_done(void *arg, int rc, const char *err)
{
    gone_job *g = arg;
    if (rc != WH_OK)
        WH_ERROR("cannot disable endpoint %s after 410 Gone: %s", g->id,
                 err);
    else
        WH_WARN("endpoint %s disabled: %s", g->id, g->reason);
}

static void disable_gone(wk_deliver *d, const char *id, const char *reason)
{
    gone_job *g = calloc(1, sizeof(*g));
    if (g) {
        wh_strlcpy(g->id, id, sizeof(g->id));
        wh_strlcpy(g->reason, reason ? reason : "", sizeof(g->reason));
    }
    wk_dbq_job job = {.name = "disable after 410", .run = gone_run,
                      .done = gone_done, .release = free, .arg = g};
    if (!g || wk_dbq_submit(d->ctx->dbq, &job, NULL) != WH_OK) {
        free(g);
        WH_ERROR("cannot disable endpoint %s after 410 Gone: the query "
                 "executor is full", id);
    }
}

/* Decides what follows j's failed attempt (outcome already in j). */
static void after_failure(wk_deliver *d, dl_job *j, const wh_endpoint *ep)
{
    const wh_delivery *dv = wh_codec_delivery(j->dm);
    wk_attempt_next next;
    wk_attempt_after_failure(&j->out, dv, ep, j->url, wh_wall_us(), &next);
    if (next.retry) {
        schedule_retry(d, j, next.attempt, next.due_us);
        return;
    }
    if (next.reason == WH_DEAD_ENDPOINT_GONE)
        disable_gone(d, dv->endpoint_id, next.detail);
    wk_dl_dead_letter(d, j, next.reason, next.detail);
}

/* The retry that `endpoint enable` (or a repaired row) released can
 * arrive before the change notification: a head retry of an endpoint the
 * cache has as disabled or unreadable re-reads the endpoint on the query
 * executor first, and starts once it is read (the lane waits for it
 * anyway). */
typedef struct {
    wk_deliver *d;
    wk_lane *l; /* valid while the job is not cancelled */
    char id[WH_ENDPOINT_ID_MAX];
    wh_db_result *r;
} reread_job;

/* Executor thread. */
static int reread_run(wh_db *db, void *arg, char *err, size_t errlen)
{
    reread_job *rj = arg;
    return wh_endpoints_query(db, rj->id, &rj->r, err, errlen);
}

static void reread_release(void *arg)
{
    reread_job *rj = arg;
    wh_db_result_free(rj->r);
    free(rj);
}

static void reread_done(void *arg, int rc, const char *err)
{
    reread_job *rj = arg;
    wk_lane *l = rj->l;
    assert(!l->detached && l->rereading); /* a detach cancels the job */
    dl_job *j = DL_JOB_OF(l->rereading);
    l->reread_job = 0;
    l->rereading = NULL;
    char e[WH_ERRLEN];
    if (rc != WH_OK)
        WH_WARN("cannot re-read endpoint %s: %s", rj->id, err);
    else if (wk_cache_apply_refresh(rj->d->ctx->cache, rj->id, rj->r, e,
                                    sizeof(e)) != WH_OK)
        WH_WARN("cannot re-read endpoint %s: %s", rj->id, e);
    else
        wk_cache_release_held(rj->d->ctx->cache);
    wk_dl_start(rj->d, j);
}

/* Queues the re-read of j's endpoint; false when it cannot be queued. */
static bool reread(wk_deliver *d, dl_job *j, const char *endpoint_id)
{
    reread_job *rj = calloc(1, sizeof(*rj));
    if (!rj)
        return false;
    rj->d = d;
    rj->l = j->lane;
    wh_strlcpy(rj->id, endpoint_id, sizeof(rj->id));
    wk_dbq_job job = {.name = "endpoint re-read", .run = reread_run,
                      .done = reread_done, .release = reread_release,
                      .arg = rj};
    if (wk_dbq_submit(d->ctx->dbq, &job, &j->lane->reread_job) != WH_OK) {
        free(rj);
        j->lane->reread_job = 0;
        return false;
    }
    j->reread = true;
    j->lane->rereading = &j->link;
    return true;
}

void wk_dl_reread_cancel(wk_deliver *d, wk_lane *l)
{
    if (!l->reread_job)
        return;
    wk_dbq_cancel(d->ctx->dbq, l->reread_job);
    l->reread_job = 0;
    dl_job *j = DL_JOB_OF(l->rereading);
    l->rereading = NULL;
    wk_dl_job_done(d, j);
}

/* Starts j's attempt (it takes a slot of its lane), or records why it
 * cannot be made. */
void wk_dl_start(wk_deliver *d, dl_job *j)
{
    if (d->ctx->stopping)
        return; /* left unfinished: its offset stays, the next owner sends
                   it */
    const wh_delivery *dv = wh_codec_delivery(j->dm);
    const wh_endpoint *ep = wk_cache_get(d->ctx->cache, dv->endpoint_id);
    if (ep && (ep->disabled || ep->unreadable) && j->head && !j->reread &&
        reread(d, j, dv->endpoint_id))
        return; /* reread_done starts it */
    j->attempted_at_us = wh_wall_us();
    j->holds_slot = true;
    wk_lane_slot_take(j->lane);
    bool insecure = ep && d->ctx->s->https_only && !wh_url_is_https(ep->url);
    if (!ep || ep->disabled || ep->unreadable || insecure) /* no request:
                                                  nothing for the breaker */
        wh_breaker_success(&j->lane->breaker, wh_mono_us());
    if (!ep) {
        set_failure(j, "endpoint_not_found", "endpoint no longer exists");
        wk_dl_dead_letter(d, j, WH_DEAD_ENDPOINT_GONE, "endpoint no longer exists");
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
    if (ep->unreadable) {
        /* quarantined (cache.h): never sent unsigned; held like a disabled
         * endpoint until a refresh reads the row again and releases it */
        char why[300];
        snprintf(why, sizeof(why), "endpoint row cannot be read: %s",
                 ep->unreadable);
        set_failure(j, "endpoint_unreadable", why);
        schedule_retry(d, j, dv->attempt, INT64_MAX);
        return;
    }
    if (insecure) {
        char why[WH_URL_MAX + 64];
        snprintf(why, sizeof(why), "%s is not https:// (WEBHOOK_HTTPS_ONLY)",
                 ep->url);
        set_failure(j, "insecure_url", why);
        wk_dl_dead_letter(d, j, WH_DEAD_INSECURE_URL, why);
        return;
    }
    wk_attempt_conf conf = {
        .timeout_ms = d->ctx->s->http_timeout_ms,
        .connect_timeout_ms = d->ctx->s->connect_timeout_ms,
    };
    if (wk_attempt_start(d->ctx->http, &j->req, j->url, ep, dv,
                         j->attempted_at_us, &conf, j, &j->out) != WH_OK) {
        j->req.snippet_len = 0;
        wh_breaker_failure(&j->lane->breaker, wh_mono_us());
        after_failure(d, j, ep);
        return;
    }
    j->state = JOB_SENDING;
    wk_dl_sending_add(d, j);
    d->sent++;
}

void wk_deliver_http_done(wh_http_req *req, void *opaque)
{
    wk_deliver *d = opaque;
    dl_job *j = req->opaque;
    wk_lane *l = j->lane;
    wk_dl_sending_del(d, j);
    bool ok = wk_attempt_outcome(req, &j->out);
    /* the breaker counts what says the endpoint is unwell */
    if (wk_attempt_unwell(&j->out, ok))
        wh_breaker_failure(&l->breaker, wh_mono_us());
    else
        wh_breaker_success(&l->breaker, wh_mono_us());
    l->refs++; /* the job may be done before pump returns */
    if (ok)
        record(d, j, true, true, 0, 0);
    else
        after_failure(d, j,
                      wk_cache_get(d->ctx->cache,
                                   wh_codec_delivery(j->dm)->endpoint_id));
    wk_dl_pump(d, l);
    wk_dl_lane_unref(d, l);
}

/* ---- dead letters ------------------------------------------------------- */

/* j's dead letter is durable: in Kafka, or (outcome WK_DEAD_GIVEN_UP)
 * given up and stored in webhooks.unsent_dead_letters. Either way its
 * final attempt is recorded next, so the delivery stays in the history
 * (`webhookctl dead-letters list/replay` read it there); an undecodable
 * message or parked row, which has no history, is done: its bytes are
 * in that row. */
static void dead_done(wk_dead *dd, void *owner, int outcome)
{
    wk_deliver *d = owner;
    dl_job *j = (dl_job *)((char *)dd - offsetof(dl_job, dead));
    (void)outcome; /* the sender logged a fallback or a give-up */
    if (j->undecodable && j->parked_row) {
        /* the dead letter is durable: the row goes, then the lane goes
         * on (wk_dl_recorded frees its slot) */
        wk_lane_op op = {.op = WK_LANE_UNPARK, .delivery_id = j->parked_id};
        j->state = JOB_RECORDING;
        wk_dl_lane_write(d, j->lane, &op, j);
        return;
    }
    if (j->undecodable) {
        wk_dl_job_done(d, j);
        return;
    }
    record(d, j, false, true, 0, 0);
}

/* Sends j's DeadLetter through the worker's dead-letter sender
 * (deadletter.h: it retries with backoff, keeping this reason and detail,
 * and falls back to the form without bodies); dead_done goes on once
 * Kafka has it. */
void wk_dl_dead_letter(wk_deliver *d, dl_job *j, wh_dead_reason reason,
                        const char *detail)
{
    size_t len = 0;
    const void *raw = NULL;
    if (j->undecodable && j->km)
        raw = wh_kmsg_value(j->km, &len);
    else if (j->undecodable) /* an unreadable parked row */
        raw = j->raw, len = j->raw_len;
    const wh_delivery *dv = j->dm ? wh_codec_delivery(j->dm) : NULL;
    /* keyed by the endpoint when it is known */
    const char *key = dv ? dv->endpoint_id
                         : j->parked_row ? j->lane->endpoint_id : NULL;
    wh_dead_letter dl = {
        .reason = reason,
        .detail = detail,
        .delivery = dv,
        .raw = raw,
        .raw_len = len,
        .source_topic = j->km ? wh_kmsg_topic(j->km)
                              : d->ctx->s->deliveries_topic,
        .source_partition = j->partition,
        .source_offset = j->position,
        .attempts = dv ? dv->attempt : 0,
        .last_status_code = j->out.status,
        .last_error = dv ? j->out.error : NULL,
        .dead_at_us = wh_wall_us(),
    };
    if (j->undecodable)
        WH_WARN("%s at %s [%d] @ %lld is undecodable, dead-lettered: %s",
                j->parked_row ? "parked delivery" : "delivery message",
                dl.source_topic, (int)dl.source_partition,
                (long long)dl.source_offset, detail);
    else
        WH_INFO("delivery %s to %s dead-lettered: %s", dv->delivery_id,
                dv->endpoint_id, detail);
    j->state = JOB_DEAD_LETTERING;
    wk_dead_send(d->ctx->dead, &j->dead, &dl, key, dead_done, d);
}
