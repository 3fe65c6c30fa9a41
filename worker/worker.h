/*
 * worker.h - what the parts of webhook-worker share: its settings, the
 * process-wide context handed to the fan-out and delivery stages, and the
 * interfaces of those stages, the endpoint cache, the offset tracker and
 * the attempt recorder. Everything runs on the main thread's event loop
 * (main.c) except the recorder's transactions, which run on its own
 * thread and wake the loop through an eventfd; librdkafka's threads only
 * wake it through pipes.
 */
#ifndef WH_WORKER_H
#define WH_WORKER_H

#include <stdbool.h>

#include "buf.h"
#include "codec.h"
#include "db.h"
#include "endpoints.h"
#include "http.h"
#include "kafka.h"
#include "map.h"
#include "secretbox.h"
#include "url.h"
#include "wh.h"

typedef struct {
    const char *kafka_brokers;
    const char *kafka_extra;
    const char *database_url;
    const char *secret_key;
    const char *secret_key_file;
    const char *secret_key_previous;
    const char *secret_key_previous_file;
    const char *role;
    const char *events_topic;
    const char *deliveries_topic;
    const char *dead_topic;
    const char *fanout_group;
    const char *deliver_group;
    int64_t session_timeout_ms;
    int64_t heartbeat_ms;
    int64_t http_timeout_ms;
    int64_t connect_timeout_ms;
    const char *allow_private_nets;
    int64_t max_in_flight;
    int64_t lane_queue_max;
    int64_t lane_park_after_ms;
    int64_t drain_max;
    int64_t breaker_failures;
    int64_t breaker_cooldown_ms;
    int64_t max_host_connections;
    int64_t snippet_max;
    int64_t payload_max;
    int64_t record_batch;
    int64_t record_flush_ms;
    int64_t endpoint_refresh_ms;
    int64_t history_retention_ms;
    int64_t maintenance_ms;
    int64_t disable_after_ms;
    int64_t shutdown_timeout_ms;
    const char *worker_id;
    const char *ca_file;
    bool https_only;
    const char *user_agent;
    const char *log_format;
    const char *log_level;
} wk_settings;

typedef struct wk_cache wk_cache;
typedef struct wk_recorder wk_recorder;
typedef struct wk_fanout wk_fanout;
typedef struct wk_deliver wk_deliver;
typedef struct wk_deadletter wk_deadletter;

typedef struct wk_ctx {
    const wk_settings *s;
    char worker_id[128];
    wh_secretbox sb;
    wh_db *db;                   /* start-up reads (the endpoint cache);
                                    no query runs on it from the loop */
    int64_t loop_wait_ms;        /* longest the loop waits for Postgres
                                    (WORKER_LOOP_DB_TIMEOUT) */
    wh_db *listen_db;            /* LISTEN webhooks_endpoints */
    struct wk_dbq *dbq;          /* query executor (dbq.h): maintenance,
                                    endpoint reads, disables, the probe */
    wh_netlist *allow;
    wh_kafka_producer *producer; /* dead letters (the fan-out has its
                                    own for deliveries) */
    wh_kafka_dr_fn *on_report;   /* delivery reports of both producers */
    wh_http *http;
    wk_cache *cache;
    wk_recorder *recorder;       /* events, attempts and retries */
    wk_fanout *fanout;
    wk_deliver *deliver;
    wk_deadletter *dead;         /* both stages' dead letters */
    bool stopping;               /* SIGTERM: stages start no new work */
    int64_t stop_deadline_us;    /* shutdown budget's end (0: running) */
} wk_ctx;

/* Least time each wait of the teardown gets (consumer close, producer
 * flush, last recorder write) once the shutdown budget is spent, so each
 * still gets a chance; the teardown's overrun is bounded by a few of
 * these (docs/operations.md). */
#define WK_STOP_STEP_MIN_MS 500

/* Milliseconds a teardown wait may take: what is left of the shutdown
 * budget (ctx->stop_deadline_us), at least WK_STOP_STEP_MIN_MS. */
static inline int wk_stop_left_ms(const wk_ctx *ctx)
{
    int64_t left_ms = (ctx->stop_deadline_us - wh_mono_us()) / 1000;
    if (left_ms < WK_STOP_STEP_MIN_MS)
        return WK_STOP_STEP_MIN_MS;
    return left_ms > 600000 ? 600000 : (int)left_ms;
}

/* ---- endpoint cache: cache.h --------------------------------------- */

#include "cache.h"

/* ---- offset tracker: tracker.h ---------------------------------------- */

#include "tracker.h"

/* ---- attempt recorder: recorder.h ------------------------------------- */

#include "recorder.h"

/* ---- fan-out stage: fanout.h ------------------------------------------ */

#include "fanout.h"

/* Producer messages carry a tag so reports reach the right stage. */
typedef enum {
    WK_MSG_FANOUT = 1,
    WK_MSG_DELIVER = 2,
    WK_MSG_DEAD = 3 /* a dead letter (deadletter.h), of either stage */
} wk_msg_owner;
typedef struct {
    wk_msg_owner owner;
} wk_msg_tag;

/* ---- delivery stage: deliver.h ----------------------------------------- */

#include "deliver.h"

#endif
