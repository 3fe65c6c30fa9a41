/*
 * deliver.c - the delivery stage: consumes the deliveries topic, queues
 * each delivery in its endpoint's lane, sends it as a signed POST and
 * hands the outcome to the recorder. A message's offset is stored only
 * once its attempt row is durable in Postgres. Main thread only.
 *
 * Job states: QUEUED (in its lane) -> SENDING (HTTP in flight) ->
 * RECORDING (attempt buffered in the recorder) -> DONE (durable; released
 * by the tracker once every earlier offset is done too). A job of a revoked
 * partition that is still QUEUED is dropped unsent: the partition's next
 * owner delivers it.
 *
 * Lanes: an ordered endpoint has at most one attempt in flight, so
 * attempts leave in partition order; an unordered endpoint up to its
 * max_in_flight.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "sign.h"
#include "worker.h"

typedef enum { JOB_QUEUED, JOB_SENDING, JOB_RECORDING, JOB_DONE } job_state;

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
    wk_recorder *recorder;
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
        if (wk_recorder_flush(d->recorder, err, sizeof(err)) == WH_ERR)
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
    d->recorder = wk_recorder_new(ctx, recorded, d);
    d->lanes = wh_map_new();
    wh_buf_init(&d->buf, (size_t)ctx->s->payload_max + 64 * 1024);
    wh_kafka_conf kc = {
        .brokers = ctx->s->kafka_brokers,
        .client_id = ctx->worker_id,
        .extra = ctx->s->kafka_extra,
        .session_timeout_ms = ctx->s->session_timeout_ms,
        .heartbeat_ms = ctx->s->heartbeat_ms,
    };
    if (!d->tracker || !d->recorder || !d->lanes) {
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
    wk_recorder_destroy(d->recorder);
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
    wk_tracker_destroy(d->tracker); /* releases held messages */
    wh_kafka_consumer_destroy(d->consumer);
    wk_recorder_destroy(d->recorder);
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

/* Records the outcome of j's attempt and lets its lane move on. */
static void record(wk_deliver *d, dl_job *j, bool ok, int status,
                   const char *error_class, const char *error,
                   const char *snippet, size_t snippet_len,
                   int64_t latency_us)
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
        .status_code = status,
        .latency_ms = latency_us / 1000,
        .error_class = error_class,
        .error = error,
        .snippet = snippet,
        .snippet_len = snippet_len,
        .attempted_at_us = j->attempted_at_us,
    };
    if (ok)
        d->succeeded++;
    else
        d->failed++;
    j->state = JOB_RECORDING;
    if (wk_recorder_add(d->recorder, &a, j) != WH_OK) {
        /* Cannot happen for validated deliveries; never drop silently:
         * leave the offset uncommitted so a restart retries it. */
        WH_ERROR("attempt of delivery %s could not be encoded for the "
                 "history; its offset will not be committed",
                 dv->delivery_id);
    }
}

static void pump(wk_deliver *d, lane *l);

/* Starts j's attempt, or records why it cannot be made. */
static void start(wk_deliver *d, dl_job *j)
{
    const wh_delivery *dv = wh_codec_delivery(j->dm);
    const wh_endpoint *ep = wk_cache_get(d->ctx->cache, dv->endpoint_id);
    j->attempted_at_us = wh_wall_us();
    if (!ep) {
        record(d, j, false, 0, "endpoint_not_found",
               "endpoint no longer exists", NULL, 0, 0);
        return;
    }
    if (ep->disabled) {
        char why[300];
        snprintf(why, sizeof(why), "endpoint is disabled%s%s",
                 ep->disabled_reason ? ": " : "",
                 ep->disabled_reason ? ep->disabled_reason : "");
        record(d, j, false, 0, "endpoint_disabled", why, NULL, 0, 0);
        return;
    }
    char sig[WH_SIGNATURE_MAX + 1], err[WH_ERRLEN];
    int64_t ts = j->attempted_at_us / 1000000;
    if (wh_sign(ep->secrets, ep->nsecrets, dv->delivery_id, ts,
                dv->event.payload, dv->event.payload_len, sig,
                sizeof(sig)) != WH_OK) {
        record(d, j, false, 0, "signing", "cannot sign the request", NULL, 0,
               0);
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
        record(d, j, false, 0, "other", err, NULL, 0, 0);
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
    char error[300];
    const char *cls = NULL;
    if (req->error_class != WH_HTTP_NONE) {
        cls = wh_http_error_name(req->error_class);
        snprintf(error, sizeof(error), "%s", req->error);
    } else if (!ok) {
        cls = "http_status";
        snprintf(error, sizeof(error), "HTTP %d", req->status);
    }
    record(d, j, ok, req->status, cls, ok ? NULL : error, req->snippet,
           req->snippet_len, req->latency_us);
    pump(d, l);
}

static void dead_letter(wk_deliver *d, dl_job *j, const char *reason)
{
    size_t len;
    const void *raw = wh_kmsg_value(j->km, &len);
    char err[WH_ERRLEN];
    wh_dead_letter dl = {
        .reason = WH_DEAD_UNDECODABLE,
        .detail = reason,
        .raw = raw,
        .raw_len = len,
        .source_topic = wh_kmsg_topic(j->km),
        .source_partition = wh_kmsg_partition(j->km),
        .source_offset = wh_kmsg_offset(j->km),
        .dead_at_us = wh_wall_us(),
    };
    WH_WARN("delivery message at %s [%d] @ %lld is undecodable, "
            "dead-lettered: %s", dl.source_topic, (int)dl.source_partition,
            (long long)dl.source_offset, reason);
    wh_buf_reset(&d->buf);
    d->buf.max = len + 64 * 1024; /* the raw message may be large */
    if (wh_codec_dead_letter_encode(&dl, &d->buf, err, sizeof(err)) != WH_OK ||
        wh_kafka_producer_send(d->ctx->producer, d->ctx->s->dead_topic, NULL,
                               0, d->buf.data, d->buf.len, NULL, j, err,
                               sizeof(err)) != WH_OK)
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
        dead_letter(d, j, "undecodable delivery message");
        return;
    }
    j->state = JOB_DONE;
    wk_tracker_done(d->tracker, &j->item, d->consumer);
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
            dead_letter(d, j, err);
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

int64_t wk_deliver_tick(wk_deliver *d)
{
    int64_t due = wk_recorder_due_ms(d->recorder);
    if (due == 0) {
        char err[512];
        if (wk_recorder_flush(d->recorder, err, sizeof(err)) == WH_ERR)
            WH_ERROR("%s", err);
        due = wk_recorder_due_ms(d->recorder);
    }
    return due;
}
