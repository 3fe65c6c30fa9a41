/*
 * deliver.c - the delivery stage: consumes the deliveries topic, queues
 * each delivery in its endpoint's lane, sends it as a signed POST and
 * hands the outcome to the recorder. A message's offset is stored only
 * once its attempt row is durable in Postgres. Main thread only.
 *
 * Job states: QUEUED (in its lane) -> SENDING (HTTP in flight) ->
 * [DEAD_LETTERING (a failed delivery that ends here: its DeadLetter waits
 * for Kafka's acknowledgement)] -> RECORDING (attempt buffered in the
 * recorder, with the retry it schedules) -> DONE (durable; released by the
 * tracker once every earlier offset is done too). Undecodable messages go
 * straight to DEAD_LETTERING and are DONE on the acknowledgement. A job of a
 * revoked partition that is still QUEUED is dropped unsent: the
 * partition's next owner delivers it.
 *
 * After a failed attempt: a retryable failure (lib/retry.c) schedules the
 * next attempt in webhooks.retries, in the same transaction as the attempt
 * row; an exhausted or permanent failure is dead-lettered, then recorded
 * as final; 410 Gone also disables the endpoint. A delivery to a disabled
 * endpoint is parked as a retry due at 'infinity' until it is enabled.
 *
 * Lanes: an ordered endpoint has at most one attempt in flight, so
 * attempts leave in partition order; an unordered endpoint up to its
 * max_in_flight.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "retry.h"
#include "sign.h"
#include "worker.h"

typedef enum {
    JOB_QUEUED,
    JOB_SENDING,
    JOB_DEAD_LETTERING,
    JOB_RECORDING,
    JOB_DONE
} job_state;

struct lane;

typedef struct dl_job {
    wk_msg_tag tag; /* first: producer reports are routed by it */
    wk_item item;
    wh_kmsg *km;
    wh_delivery_msg *dm;
    struct lane *lane;
    struct dl_job *lane_next;
    job_state state;
    wh_http_req req;
    char url[WH_URL_MAX + 1];
    int64_t attempted_at_us;
    /* outcome of the attempt, kept while a dead letter is in flight */
    int status;
    int64_t latency_us;
    char error_class[32];
    char error[300];
    bool undecodable;
} dl_job;

typedef struct lane {
    char endpoint_id[WH_ENDPOINT_ID_MAX];
    dl_job *head, *tail;
    int in_flight;
} lane;

struct wk_deliver {
    wk_ctx *ctx;
    wh_kafka_consumer *consumer;
    wk_tracker *tracker;
    wh_map *lanes;
    wh_buf buf;
    bool paused;
    int64_t sent, succeeded, failed;
};

static void release(wk_item *item)
{
    dl_job *j = (dl_job *)((char *)item - offsetof(dl_job, item));
    wh_codec_delivery_free(j->dm);
    wh_kmsg_destroy(j->km);
    free(j);
}

static void recorded(void *opaque, void *arg)
{
    wk_deliver *d = arg;
    dl_job *j = opaque;
    j->state = JOB_DONE;
    wk_tracker_done(d->tracker, &j->item, d->consumer);
}

static void drop_revoked_lane(const char *key, void *value, void *opaque)
{
    (void)key;
    wk_deliver *d = opaque;
    lane *l = value;
    dl_job **pp = &l->head, *prev = NULL;
    while (*pp) {
        dl_job *j = *pp;
        if (wk_item_revoked(&j->item)) {
            *pp = j->lane_next;
            if (l->tail == j)
                l->tail = prev;
            j->state = JOB_DONE;
            wk_tracker_done(d->tracker, &j->item, NULL);
        } else {
            prev = j;
            pp = &j->lane_next;
        }
    }
}

static void on_rebalance(void *opaque, int assigned, const int32_t *parts,
                         size_t n)
{
    wk_deliver *d = opaque;
    char err[512];
    if (!assigned) {
        /* Make finished attempts durable so their offsets can be
         * committed before the partitions move. */
        if (wk_recorder_flush(d->ctx->recorder, err, sizeof(err)) == WH_ERR)
            WH_WARN("%s", err);
    }
    for (size_t i = 0; i < n; i++) {
        if (assigned)
            wk_tracker_assign(d->tracker, parts[i]);
        else
            wk_tracker_revoke(d->tracker, parts[i]);
    }
    if (!assigned) {
        wh_map_each(d->lanes, drop_revoked_lane, d);
        if (wh_kafka_consumer_commit(d->consumer, err, sizeof(err)) == WH_ERR)
            WH_WARN("%s", err);
    }
    WH_INFO("delivery: %s %zu partitions of %s",
            assigned ? "assigned" : "revoked", n, d->ctx->s->deliveries_topic);
}

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

static void free_lane(const char *key, void *value, void *opaque)
{
    (void)key;
    (void)opaque;
    free(value);
}

void wk_deliver_destroy(wk_deliver *d)
{
    if (!d)
        return;
    wh_kafka_consumer_close(d->consumer, 10000);
    wh_http_cancel_all(d->ctx->http);
    wk_recorder_forget(d->ctx->recorder, d);
    wk_tracker_destroy(d->tracker); /* releases held messages */
    wh_kafka_consumer_destroy(d->consumer);
    wh_map_each(d->lanes, free_lane, NULL);
    wh_map_destroy(d->lanes);
    wh_buf_free(&d->buf);
    free(d);
}

int wk_deliver_fd(wk_deliver *d) { return wh_kafka_consumer_fd(d->consumer); }

size_t wk_deliver_pending(const wk_deliver *d)
{
    return wk_tracker_pending(d->tracker);
}

/* Hands the attempt's outcome (kept in j) to the recorder, with the retry
 * it schedules (next_at_us != 0: the encoded delivery is in d->buf). */
static void record(wk_deliver *d, dl_job *j, bool ok, bool final,
                   int64_t next_at_us, uint32_t next_attempt)
{
    const wh_delivery *dv = wh_codec_delivery(j->dm);
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

/* Encodes j's delivery with attempt number `attempt` into d->buf and
 * records the failed attempt with a retry due at due_us. */
static void schedule_retry(wk_deliver *d, dl_job *j, uint32_t attempt,
                           int64_t due_us)
{
    wh_delivery next = *wh_codec_delivery(j->dm);
    char err[WH_ERRLEN];
    next.attempt = attempt;
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

static void pump(wk_deliver *d, lane *l);

/* Starts j's attempt, or records why it cannot be made. */
static void start(wk_deliver *d, dl_job *j)
{
    const wh_delivery *dv = wh_codec_delivery(j->dm);
    const wh_endpoint *ep = wk_cache_get(d->ctx->cache, dv->endpoint_id);
    j->attempted_at_us = wh_wall_us();
    if (!ep) {
        set_failure(j, "endpoint_not_found", "endpoint no longer exists");
        dead_letter(d, j, WH_DEAD_ENDPOINT_GONE, "endpoint no longer exists");
        return;
    }
    if (ep->disabled) {
        /* parked until `endpoint enable` makes the retry due */
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
        after_failure(d, j, ep);
        return;
    }
    j->state = JOB_SENDING;
    j->lane->in_flight++;
    d->sent++;
}

static int lane_limit(wk_deliver *d, const lane *l)
{
    const wh_endpoint *ep = wk_cache_get(d->ctx->cache, l->endpoint_id);
    if (!ep || ep->ordered || ep->max_in_flight < 1)
        return 1;
    return ep->max_in_flight;
}

static void pump(wk_deliver *d, lane *l)
{
    int limit = lane_limit(d, l);
    while (l->head && l->in_flight < limit) {
        dl_job *j = l->head;
        l->head = j->lane_next;
        if (!l->head)
            l->tail = NULL;
        if (wk_item_revoked(&j->item)) {
            j->state = JOB_DONE;
            wk_tracker_done(d->tracker, &j->item, NULL);
            continue;
        }
        start(d, j);
    }
}

void wk_deliver_http_done(wh_http_req *req, void *opaque)
{
    wk_deliver *d = opaque;
    dl_job *j = req->opaque;
    lane *l = j->lane;
    l->in_flight--;
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
    if (ok)
        record(d, j, true, true, 0, 0);
    else
        after_failure(d, j,
                      wk_cache_get(d->ctx->cache,
                                   wh_codec_delivery(j->dm)->endpoint_id));
    pump(d, l);
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
        .source_topic = wh_kmsg_topic(j->km),
        .source_partition = wh_kmsg_partition(j->km),
        .source_offset = wh_kmsg_offset(j->km),
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
        j->state = JOB_DONE;
        wk_tracker_done(d->tracker, &j->item, d->consumer);
        return;
    }
    record(d, j, false, true, 0, 0);
}

static lane *lane_for(wk_deliver *d, const char *endpoint_id)
{
    lane *l = wh_map_get(d->lanes, endpoint_id);
    if (l)
        return l;
    l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    wh_strlcpy(l->endpoint_id, endpoint_id, sizeof(l->endpoint_id));
    if (wh_map_put(d->lanes, endpoint_id, l, NULL) != WH_OK) {
        free(l);
        return NULL;
    }
    return l;
}

int wk_deliver_poll(wk_deliver *d, int budget)
{
    int n = 0;
    size_t limit = (size_t)d->ctx->s->max_in_flight;
    if (!d->paused && wk_tracker_pending(d->tracker) >= limit) {
        wh_kafka_consumer_pause_all(d->consumer, 1);
        d->paused = true;
    } else if (d->paused && wk_tracker_pending(d->tracker) < limit / 2) {
        wh_kafka_consumer_pause_all(d->consumer, 0);
        d->paused = false;
    }
    while (n < budget) {
        wh_kmsg *km = wh_kafka_consumer_poll(d->consumer, 0);
        if (!km)
            break;
        n++;
        dl_job *j = calloc(1, sizeof(*j));
        if (!j) {
            WH_ERROR("out of memory; exiting so the delivery is redelivered");
            abort();
        }
        j->tag.owner = WK_MSG_DELIVER;
        j->km = km;
        if (wk_tracker_add(d->tracker, &j->item, wh_kmsg_partition(km),
                           wh_kmsg_offset(km)) != WH_OK) {
            wh_kmsg_destroy(km);
            free(j);
            continue;
        }
        size_t len;
        const void *val = wh_kmsg_value(km, &len);
        char err[WH_ERRLEN];
        if (wh_codec_delivery_decode(val, len, &j->dm, err, sizeof(err))) {
            j->undecodable = true;
            dead_letter(d, j, WH_DEAD_UNDECODABLE, err);
            continue;
        }
        lane *l = lane_for(d, wh_codec_delivery(j->dm)->endpoint_id);
        if (!l) {
            WH_ERROR("out of memory; exiting so the delivery is redelivered");
            abort();
        }
        j->lane = l;
        j->state = JOB_QUEUED;
        if (l->tail)
            l->tail->lane_next = j;
        else
            l->head = j;
        l->tail = j;
        pump(d, l);
    }
    return n;
}

