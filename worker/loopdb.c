/*
 * loopdb.c - the event loop's own Postgres work on the query executor
 * (see loopdb.h): each job's query runs on the executor's thread and its
 * completion here, on the main thread, when the executor wakes the loop.
 */
#include "loopdb.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "db.h"
#include "dbq.h"
#include "endpoints.h"
#include "log.h"

/* A burst of endpoint changes bigger than this (a bulk import) is read
 * with one reload of every endpoint instead of one query per endpoint. */
#define NOTIFY_BATCH 256

/* When a full endpoint reload is due (0: none); notifications that arrive
 * before it are covered by it. */
static int64_t bulk_reload_at_us;

/* What wk_loopdb_init was given. */
static wk_ctx *lctx;
static wk_loopdb_conf conf;

/* An endpoint read on the query executor: the query runs there, the apply
 * (decrypt and index, no Postgres) here when it completes; reads complete
 * in the order they were queued. */
typedef struct {
    wk_ctx *ctx;
    char id[128];        /* "" = every endpoint */
    wh_db_result *r;
} cache_job;

static int cache_run(wh_db *db, void *arg, char *err, size_t errlen)
{
    cache_job *j = arg;
    return wh_endpoints_query(db, j->id[0] ? j->id : NULL, &j->r, err,
                              errlen);
}

static void cache_done(void *arg, int rc, const char *err)
{
    cache_job *j = arg;
    char e[512];
    if (rc == WH_OK)
        rc = j->id[0] ? wk_cache_apply_refresh(j->ctx->cache, j->id, j->r, e,
                                               sizeof(e))
                      : wk_cache_apply_reload(j->ctx->cache, j->r, e,
                                              sizeof(e));
    else
        wh_strlcpy(e, err, sizeof(e));
    if (rc != WH_OK) {
        if (j->id[0])
            WH_ERROR("endpoint %s refresh failed: %s", j->id, e);
        else
            WH_ERROR("endpoint reload failed: %s", e);
        return;
    }
    if (j->id[0])
        WH_DEBUG("endpoint %s refreshed", j->id);
    wk_cache_release_held(j->ctx->cache);
}

static void cache_release(void *arg)
{
    cache_job *j = arg;
    wh_db_result_free(j->r);
    free(j);
}

/* Queues a read of endpoint id (NULL: every endpoint); false when the
 * executor's queue is full. */
static bool cache_load(wk_ctx *ctx, const char *id)
{
    cache_job *j = calloc(1, sizeof(*j));
    if (!j)
        return false;
    j->ctx = ctx;
    if (id)
        wh_strlcpy(j->id, id, sizeof(j->id));
    wk_dbq_job job = {.name = id ? "endpoint refresh" : "endpoint reload",
                      .run = cache_run, .done = cache_done,
                      .release = cache_release, .arg = j};
    if (wk_dbq_submit(lctx->dbq, &job, NULL) != WH_OK) {
        free(j);
        return false;
    }
    return true;
}

void wk_loopdb_on_notify(void)
{
    wk_ctx *ctx = lctx;
    static char ids[NOTIFY_BATCH][128];
    char scratch[128], err[512];
    size_t n = 0;
    bool overflow = false;
    for (;;) {
        char *id = n < NOTIFY_BATCH ? ids[n] : scratch;
        int rc = wh_db_notification(ctx->listen_db, id, sizeof(ids[0]), err,
                                    sizeof(err));
        if (rc == WH_AGAIN)
            break;
        if (rc == WH_ERR) {
            /* run() reconnects and reloads the endpoints */
            WH_WARN("%s", err);
            wh_db_drop(ctx->listen_db);
            return;
        }
        if (n < NOTIFY_BATCH)
            n++;
        else
            overflow = true;
    }
    if (bulk_reload_at_us)
        return; /* the pending reload reads these changes too */
    if (overflow) {
        /* let the rest of the burst arrive, then read everything once */
        bulk_reload_at_us = wh_mono_us() + 200 * 1000;
        WH_INFO("more than %d endpoints changed at once; reloading all "
                "endpoints", NOTIFY_BATCH);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (!cache_load(ctx, ids[i])) {
            /* the executor is full: read everything once it has room */
            bulk_reload_at_us = wh_mono_us() + 200 * 1000;
            return;
        }
    }
}

/* ---- maintenance ----------------------------------------------------- */

typedef struct {
    char retention[64], period[64]; /* intervals; period "" = no disabling */
    char partitions[128];           /* what webhooks.maintain did */
    char disabled[32];              /* endpoints disabled */
    bool maintained;
} maint_job;

/* Executor thread: creates the coming days' history partitions and drops
 * expired ones (webhooks.maintain; a no-op when another worker holds its
 * lock), then disables endpoints that have been failing for
 * WEBHOOK_DISABLE_AFTER. */
static int maintain_run(wh_db *db, void *arg, char *err, size_t errlen)
{
    maint_job *j = arg;
    const char *params[] = {j->retention};
    wh_db_result *r;
    if (wh_db_query(db, "SELECT webhooks.maintain($1::interval)", 1, params,
                    &r, err, errlen) != WH_OK)
        return WH_ERR;
    wh_strlcpy(j->partitions, wh_db_get(r, 0, 0), sizeof(j->partitions));
    wh_db_result_free(r);
    j->maintained = true;
    if (!j->period[0])
        return WH_OK;
    const char *p2[] = {j->period};
    if (wh_db_query(db,
                    "SELECT webhooks.disable_failing_endpoints($1::interval)",
                    1, p2, &r, err, errlen) != WH_OK)
        return WH_ERR;
    wh_strlcpy(j->disabled, wh_db_get(r, 0, 0), sizeof(j->disabled));
    wh_db_result_free(r);
    return WH_OK;
}

static void maintain_done(void *arg, int rc, const char *err)
{
    maint_job *j = arg;
    if (j->maintained)
        WH_DEBUG("history maintenance: %s", j->partitions);
    if (rc != WH_OK)
        WH_WARN("%s failed: %s", j->maintained ? "endpoint health check"
                                               : "history maintenance", err);
    else if (atoi(j->disabled) > 0)
        WH_WARN("disabled %s endpoints that failed every attempt for %s",
                j->disabled, j->period);
}

/* Queues maintenance; false when the executor's queue is full. */
static bool maintain(wk_ctx *ctx)
{
    maint_job *j = calloc(1, sizeof(*j));
    if (!j)
        return false;
    snprintf(j->retention, sizeof(j->retention), "%lld milliseconds",
             (long long)ctx->s->history_retention_ms);
    if (ctx->s->disable_after_ms > 0)
        snprintf(j->period, sizeof(j->period), "%lld milliseconds",
                 (long long)ctx->s->disable_after_ms);
    wk_dbq_job job = {.name = "maintenance", .run = maintain_run,
                      .done = maintain_done, .release = free, .arg = j};
    if (wk_dbq_submit(lctx->dbq, &job, NULL) != WH_OK) {
        free(j);
        return false;
    }
    return true;
}

/* The Postgres probe: one SELECT 1 at a time through the executor, timed
 * on this thread, so that a server that stops answering shows within
 * WORKER_DB_PROBE_TIMEOUT even when nothing else asks it anything. */
static struct {
    bool in_flight;
    int64_t sent_us, next_us;
    int64_t up;              /* webhook_worker_database_up */
    double seconds;          /* the last answer's round trip */
    char why[WH_ERRLEN];     /* while !up */
} probe = {.why = "no probe has been answered yet"};

static int probe_run(wh_db *db, void *arg, char *err, size_t errlen)
{
    (void)arg;
    return wh_db_exec(db, "SELECT 1", err, errlen);
}

static void probe_done(void *arg, int rc, const char *err)
{
    (void)arg;
    probe.in_flight = false;
    probe.seconds = (double)(wh_mono_us() - probe.sent_us) / 1e6;
    probe.up = rc == WH_OK;
    if (rc != WH_OK)
        snprintf(probe.why, sizeof(probe.why), "the probe failed: %s", err);
}

void wk_loopdb_probe(void)
{
    int64_t now = wh_mono_us();
    if (probe.in_flight) {
        int64_t waited_ms = (now - probe.sent_us) / 1000;
        if (waited_ms > conf.probe_timeout_ms) {
            probe.up = 0;
            snprintf(probe.why, sizeof(probe.why),
                     "Postgres has not answered a probe for %lld ms",
                     (long long)waited_ms);
        }
        return;
    }
    if (now < probe.next_us)
        return;
    probe.next_us = now + conf.probe_interval_ms * 1000;
    wk_dbq_job job = {.name = "probe", .run = probe_run, .done = probe_done};
    if (wk_dbq_submit(lctx->dbq, &job, NULL) != WH_OK) {
        probe.up = 0;
        wh_strlcpy(probe.why, "the query executor's queue is full",
                   sizeof(probe.why));
        return;
    }
    probe.in_flight = true;
    probe.sent_us = now;
}

/* A fresh connection opened on the executor's thread, handed to the loop
 * in place of a broken one, so that connecting never holds the loop. */
typedef struct {
    wk_ctx *ctx;
    bool listen;       /* the LISTEN connection, else the loop's own */
    wh_db *db;
} reconnect_job;

static bool reconnecting[2];

static int reconnect_run(wh_db *unused, void *arg, char *err, size_t errlen)
{
    (void)unused;
    reconnect_job *j = arg;
    if (wh_db_connect(j->ctx->s->database_url, &j->db, err, errlen) != WH_OK)
        return WH_ERR;
    if (j->listen)
        return wh_db_listen(j->db, "webhooks_endpoints", err, errlen);
    return wh_db_set_timeout(j->db, conf.loop_db_timeout_ms, err, errlen);
}

static void reconnect_done(void *arg, int rc, const char *err)
{
    reconnect_job *j = arg;
    wk_ctx *ctx = j->ctx;
    reconnecting[j->listen] = false;
    if (rc != WH_OK) {
        WH_WARN("%s", err);
        return;
    }
    wh_db **slot = j->listen ? &ctx->listen_db : &ctx->db;
    wh_db_close(*slot);
    *slot = j->db;
    j->db = NULL;
    if (!j->listen) {
        WH_INFO("database connection restored");
        return;
    }
    /* notifications may have been missed: read everything again */
    if (!cache_load(ctx, NULL))
        bulk_reload_at_us = wh_mono_us() + 200 * 1000;
    WH_INFO("endpoint change notifications restored");
}

static void reconnect_release(void *arg)
{
    reconnect_job *j = arg;
    wh_db_close(j->db);
    free(j);
}

/* Queues a reconnect of the LISTEN connection or the loop's own, unless
 * one is under way. */
static void reconnect(wk_ctx *ctx, bool listen)
{
    if (reconnecting[listen])
        return;
    reconnect_job *j = calloc(1, sizeof(*j));
    if (!j)
        return;
    j->ctx = ctx;
    j->listen = listen;
    wk_dbq_job job = {.name = "reconnect", .run = reconnect_run,
                      .done = reconnect_done, .release = reconnect_release,
                      .arg = j};
    if (wk_dbq_submit(lctx->dbq, &job, NULL) != WH_OK) {
        free(j);
        return;
    }
    reconnecting[listen] = true;
}

/* ---- the schedule ------------------------------------------------------- */

static int64_t next_reload, next_maintain, next_listen_retry, next_db_retry;

void wk_loopdb_init(wk_ctx *ctx, const wk_loopdb_conf *c)
{
    lctx = ctx;
    conf = *c;
    next_reload = wh_mono_us() + ctx->s->endpoint_refresh_ms * 1000;
    next_maintain = next_listen_retry = next_db_retry = 0;
}

void wk_loopdb_tick(void)
{
    wk_ctx *ctx = lctx;
    if (bulk_reload_at_us && wh_mono_us() >= bulk_reload_at_us &&
        wh_db_alive(ctx->listen_db)) {
        wk_loopdb_on_notify(); /* what arrived until now is in the reload */
        bulk_reload_at_us = 0;
        next_reload = 0;
    }
    if (wh_mono_us() >= next_reload)
        next_reload = wh_mono_us() + (cache_load(ctx, NULL)
                                          ? ctx->s->endpoint_refresh_ms
                                          : 1000) * 1000;
    if (!wh_db_alive(ctx->db) && wh_mono_us() >= next_db_retry) {
        /* the connection for loads (the recorder and the executor
         * have their own), opened on the executor's thread */
        next_db_retry = wh_mono_us() + 1000 * 1000;
        reconnect(ctx, false);
    }
    if (!wh_db_alive(ctx->listen_db) && wh_mono_us() >= next_listen_retry) {
        /* lost LISTEN: reconnect, then reload what we may have missed */
        next_listen_retry = wh_mono_us() + 2 * 1000 * 1000;
        reconnect(ctx, true);
    }
    if (ctx->deliver && wh_mono_us() >= next_maintain)
        next_maintain = wh_mono_us() +
                        (maintain(ctx) ? ctx->s->maintenance_ms : 1000) *
                            1000;
}

bool wk_loopdb_db_up(const char **why)
{
    if (why)
        *why = probe.up ? NULL : probe.why;
    return probe.up;
}

const int64_t *wk_loopdb_up_gauge(void) { return &probe.up; }

double wk_loopdb_probe_seconds(void) { return probe.seconds; }
