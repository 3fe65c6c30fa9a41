/*
 * main.c - webhook-scheduler: settings, start-up, the loop that moves due
 * retries from webhooks.retries back onto the deliveries topic in bounded
 * batches (batch.c), the wait between batches (a NOTIFY on
 * webhooks_retries, the next due time or the poll interval, whichever
 * comes first), reconnects with backoff, the periodic summary, the
 * operations HTTP server (metrics, health and readiness, served while
 * waiting and between batches), readiness (whether Postgres answers the
 * claim connection) and the graceful stop. One thread;
 * librdkafka's threads only wake it through the producer's pipe.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "metrics.h"
#include "scheduler.h"

#define PROG "webhook-scheduler"
#define CHANNEL "webhooks_retries"
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define SUMMARY_PERIOD_US (10 * 1000 * 1000LL)
/* Room for "message.timeout.ms=N," in front of KAFKA_EXTRA. */
#define EXTRA_PREFIX_MAX 64

/* The settings batch.c reads plus those only main.c reads. */
typedef struct {
    sc_settings sc;
    const char *metrics_listen;
    int64_t probe_interval_ms, probe_timeout_ms;
    wh_db_opts db; /* bounds of every Postgres connection */
} settings;

#define S(f) offsetof(settings, sc.f)

static const wh_opt opts[] = {
    {"kafka-brokers", "KAFKA_BROKERS", WH_OPT_STRING, "localhost:9092", 0, 0,
     S(kafka_brokers), "Kafka bootstrap servers"},
    {"kafka-extra", "KAFKA_EXTRA", WH_OPT_STRING, NULL, 0, 0, S(kafka_extra),
     "more librdkafka properties, k=v,k=v (e.g. security.protocol=ssl)"},
    {"database-url", "DATABASE_URL", WH_OPT_STRING, NULL, 0, 0,
     S(database_url), "PostgreSQL connection URI (required)"},
    {"deliveries-topic", "WEBHOOK_DELIVERIES_TOPIC", WH_OPT_STRING,
     "webhook.deliveries", 0, 0, S(deliveries_topic),
     "topic due retries are produced to"},
    {"dead-topic", "WEBHOOK_DEAD_TOPIC", WH_OPT_STRING, "webhook.dead", 0, 0,
     S(dead_topic), "topic of the dead letters of retries that cannot be "
     "sent"},
    {"payload-max", "WEBHOOK_PAYLOAD_MAX", WH_OPT_SIZE, "512k", 1024,
     16 * 1024 * 1024, S(payload_max),
     "largest event payload accepted (as the worker's): sets the "
     "producer's message.max.bytes and the largest retry sent"},
    {"batch", "SCHEDULER_BATCH", WH_OPT_INT, "1000", 1, SC_BATCH_MAX, S(batch),
     "retries claimed, produced and deleted per transaction"},
    {"pipeline", "SCHEDULER_PIPELINE", WH_OPT_INT, "2", 1, SC_PIPELINE_MAX,
     S(pipeline),
     "batches in flight at once, each on its own database connection: "
     "while Kafka acknowledges one, the next is claimed (1: one at a "
     "time)"},
    {"poll-interval", "SCHEDULER_POLL_INTERVAL", WH_OPT_DURATION, "500ms", 10,
     60000, S(poll_interval_ms),
     "longest sleep when nothing is due (notifications and the next due "
     "time wake it sooner)"},
    {"produce-timeout", "SCHEDULER_PRODUCE_TIMEOUT", WH_OPT_DURATION, "10s",
     1000, 300000, S(produce_timeout_ms),
     "how long Kafka may take to acknowledge a batch before it is rolled "
     "back (also librdkafka's message.timeout.ms)"},
    {"shutdown-timeout", "SCHEDULER_SHUTDOWN_TIMEOUT", WH_OPT_DURATION, "10s",
     0, 600000, S(shutdown_timeout_ms),
     "on SIGTERM, how long the batch in flight may take to finish"},
    {"scheduler-id", "SCHEDULER_ID", WH_OPT_STRING, NULL, 0, 0,
     S(scheduler_id), "name in logs and the Kafka client id (default "
     "hostname-pid)"},
    {"metrics-listen", "SCHEDULER_METRICS_LISTEN", WH_OPT_STRING, NULL, 0, 0,
     offsetof(settings, metrics_listen),
     "HOST:PORT serving /metrics, /healthz and /readyz (port 0 picks one; "
     "unset: off)"},
    {"db-probe-interval", "SCHEDULER_DB_PROBE_INTERVAL", WH_OPT_DURATION,
     "2s", 100, 600000, offsetof(settings, probe_interval_ms),
     "longest the scheduler goes without asking Postgres: when no claim "
     "ran for this long (a longer poll interval, batches held back while "
     "Kafka settles) it claims or sends SELECT 1 (/readyz)"},
    {"db-probe-timeout", "SCHEDULER_DB_PROBE_TIMEOUT", WH_OPT_DURATION, "5s",
     100, 600000, offsetof(settings, probe_timeout_ms),
     "not ready while the last claim or probe took longer than this to "
     "answer, failed, or none was answered for the probe interval plus "
     "this"},
    {"log-format", "LOG_FORMAT", WH_OPT_STRING, "auto", 0, 0, S(log_format),
     "text, json, or auto (text on a terminal)"},
    {"log-level", "LOG_LEVEL", WH_OPT_STRING, "info", 0, 0, S(log_level),
     "debug, info, warn or error"},
    WH_DB_OPT_ROWS(offsetof(settings, db)),
};

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* The operations server (NULL when off) and the totals it exports. */
static wh_metrics *metrics;
static struct {
    int64_t started_us;
    int64_t enqueued, dead, batches, failed, connect_failed;
    int64_t last_claimed;     /* rows claimed by the latest batch */
    int64_t last_lag_ms;      /* its oldest row's lateness; 0 if none */
    int64_t last_batch_wall_us; /* when the latest batch committed */
} totals;

/* Counters of the current summary period, plus the running total. */
typedef struct {
    int64_t since_us;
    uint64_t enqueued, batches, failed, dead;
    int64_t max_lag_ms; /* -1: nothing enqueued this period */
    uint64_t total;
} summary;

static int64_t next_backoff(int64_t ms)
{
    if (ms <= 0)
        return BACKOFF_MIN_MS;
    return ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : ms * 2;
}

static void summary_log(const sc_ctx *ctx, summary *sm, bool force)
{
    int64_t now = wh_mono_us();
    if (!force && now - sm->since_us < SUMMARY_PERIOD_US)
        return;
    double secs = (double)(now - sm->since_us) / 1e6;
    char enq[24], batches[24], failed[24], dead[24], rate[32], lag[24],
        total[24], late[24];
    snprintf(enq, sizeof(enq), "%" PRIu64, sm->enqueued);
    snprintf(batches, sizeof(batches), "%" PRIu64, sm->batches);
    snprintf(failed, sizeof(failed), "%" PRIu64, sm->failed);
    snprintf(dead, sizeof(dead), "%" PRIu64, sm->dead);
    snprintf(rate, sizeof(rate), "%.1f",
             secs > 0 ? (double)sm->enqueued / secs : 0.0);
    snprintf(lag, sizeof(lag), "%" PRId64, sm->max_lag_ms);
    snprintf(total, sizeof(total), "%" PRIu64, sm->total);
    snprintf(late, sizeof(late), "%" PRIu64, ctx->late_acks);
    wh_log_kv(WH_LOG_INFO, "retries enqueued", "enqueued", enq, "batches",
              batches, "failed_batches", failed, "dead_lettered", dead,
              "rate_per_s", rate, "max_lag_ms",
              sm->max_lag_ms >= 0 ? lag : NULL, "total", total,
              "late_acks", late, NULL);
    uint64_t keep = sm->total;
    memset(sm, 0, sizeof(*sm));
    sm->since_us = now;
    sm->max_lag_ms = -1;
    sm->total = keep;
}

/* /readyz: Postgres answers the claim connection (dbwatch.c). */
static void update_ready(const sc_ctx *ctx)
{
    char why[WH_METRICS_REASON_MAX];
    bool up = sc_dbwatch_up(ctx->batch[0].db, why, sizeof(why));
    if (stop_requested)
        wh_metrics_set_ready(metrics, false, "shutting down");
    else
        wh_metrics_set_ready(metrics, up, up ? NULL : why);
}

/* Postgres answered a round trip that took took_us. */
static void db_answered(const sc_ctx *ctx, int64_t took_us)
{
    sc_dbwatch_answered(took_us);
    update_ready(ctx);
}

/* A round trip failed: why says which and how. */
static void db_failed(const sc_ctx *ctx, const char *why)
{
    sc_dbwatch_failed(why);
    update_ready(ctx);
}

/* Reads every pending notification. Returns true when there was one.
 * Drops the LISTEN connection when it broke (the loop re-opens it). */
static bool drain_notifications(sc_ctx *ctx)
{
    char payload[64], err[WH_ERRLEN];
    bool any = false;
    if (!ctx->listen_db || !wh_db_alive(ctx->listen_db))
        return false;
    for (;;) {
        int rc = wh_db_notification(ctx->listen_db, payload, sizeof(payload),
                                    err, sizeof(err));
        if (rc == WH_AGAIN)
            break;
        if (rc == WH_ERR) {
            WH_WARN("%s; polling every %" PRId64 " ms until it is back", err,
                    ctx->s->poll_interval_ms);
            wh_db_drop(ctx->listen_db);
            break;
        }
        any = true;
    }
    return any;
}

/* Reads what arrived on the idle claim connection, so a connection the
 * server closed is noticed (and closed) at once rather than at the next
 * claim. */
static void check_db(sc_ctx *ctx)
{
    char payload[64], err[WH_ERRLEN], why[WH_ERRLEN];
    wh_db *db = ctx->batch[0].db;
    int rc;
    while ((rc = wh_db_notification(db, payload, sizeof(payload), err,
                                    sizeof(err))) == WH_OK) {
    }
    if (rc == WH_ERR) {
        WH_WARN("database connection lost: %s", err);
        wh_db_drop(db);
        snprintf(why, sizeof(why), "connection lost: %.200s", err);
        db_failed(ctx, why);
    }
}

/* Sleeps until until_us (monotonic) or a stop request, serving delivery
 * reports meanwhile. With wake_early, a retry notification or a lost
 * database connection (to be re-opened) ends the sleep too. Returns true
 * when one of those ended it. */
static bool wait_until(sc_ctx *ctx, int64_t until_us, bool wake_early)
{
    while (!stop_requested) {
        int64_t left_us = until_us - wh_mono_us();
        if (left_us <= 0)
            return false;
        struct pollfd pfd[4];
        nfds_t n = 0, ls = 0, ds = 0;
        pfd[n++] = (struct pollfd){wh_kafka_producer_fd(ctx->producer),
                                   POLLIN, 0};
        if (ctx->listen_db && wh_db_socket(ctx->listen_db) >= 0) {
            ls = n;
            pfd[n++] = (struct pollfd){wh_db_socket(ctx->listen_db), POLLIN,
                                       0};
        }
        wh_db *db = ctx->batch[0].db;
        if (db && wh_db_socket(db) >= 0) {
            ds = n;
            pfd[n++] = (struct pollfd){wh_db_socket(db), POLLIN, 0};
        }
        if (metrics)
            pfd[n++] = (struct pollfd){wh_metrics_fd(metrics), POLLIN, 0};
        int rc = poll(pfd, n, (int)((left_us + 999) / 1000));
        if (rc < 0) {
            if (errno == EINTR)
                continue;
            WH_ERROR("poll() failed: %s", strerror(errno));
            usleep(10000);
            continue;
        }
        update_ready(ctx); /* the last answer has aged */
        wh_metrics_serve(metrics);
        if (pfd[0].revents) {
            wh_kafka_fd_drain(pfd[0].fd);
            wh_kafka_producer_poll(ctx->producer, 0);
        }
        if (ds && pfd[ds].revents) {
            check_db(ctx);
            if (wake_early && !wh_db_alive(db))
                return true;
        }
        if (ls && pfd[ls].revents) {
            bool notified = drain_notifications(ctx);
            if (wake_early && (notified || !wh_db_alive(ctx->listen_db)))
                return true;
        }
    }
    return false;
}

/* Opens the connection of every slot, or re-opens those that broke. */
static int ensure_db(sc_ctx *ctx, char *err, size_t errlen)
{
    for (int64_t i = 0; i < ctx->s->pipeline; i++) {
        sc_batch *b = &ctx->batch[i];
        if (b->db && wh_db_alive(b->db))
            continue;
        if (!b->db ? wh_db_connect(ctx->s->database_url, &b->db, err, errlen)
                   : wh_db_reconnect(b->db, err, errlen))
            return WH_ERR;
    }
    return WH_OK;
}

/* Opens a fresh LISTEN connection in place of a broken one. */
static int ensure_listen(sc_ctx *ctx, char *err, size_t errlen)
{
    if (ctx->listen_db && wh_db_alive(ctx->listen_db))
        return WH_OK;
    wh_db_close(ctx->listen_db);
    ctx->listen_db = NULL;
    if (wh_db_connect(ctx->s->database_url, &ctx->listen_db, err, errlen) !=
        WH_OK)
        return WH_ERR;
    if (wh_db_listen(ctx->listen_db, CHANNEL, err, errlen) != WH_OK) {
        wh_db_close(ctx->listen_db);
        ctx->listen_db = NULL;
        return WH_ERR;
    }
    return WH_OK;
}

/* Counts a batch that committed. */
static void account(summary *sm, const sc_batch *b)
{
    const sc_batch_result *res = &b->res;
    totals.last_claimed = (int64_t)res->claimed;
    totals.last_lag_ms = res->claimed > 0 ? res->lag_ms : 0;
    totals.last_batch_wall_us = wh_wall_us();
    if (res->claimed == 0)
        return;
    totals.batches++;
    totals.enqueued += (int64_t)res->enqueued;
    totals.dead += (int64_t)res->dead;
    sm->batches++;
    sm->enqueued += res->enqueued;
    sm->total += res->enqueued;
    sm->dead += res->dead;
    if (res->lag_ms > sm->max_lag_ms)
        sm->max_lag_ms = res->lag_ms;
    WH_DEBUG("batch: claimed %zu, enqueued %zu, dead-lettered %zu, lag %" PRId64
             " ms, took %" PRId64 " ms (claim %" PRId64 ", kafka %" PRId64
             ", commit %" PRId64 ")",
             res->claimed, res->enqueued, res->dead, res->lag_ms,
             (wh_mono_us() - b->t_claim) / 1000, res->claim_ms, res->kafka_ms,
             res->commit_ms);
}

/* Counts a batch that was rolled back; a Postgres failure also makes the
 * scheduler not ready until Postgres answers again. */
static void failed(const sc_ctx *ctx, summary *sm, const sc_batch *b,
                   const char *err)
{
    sm->failed++;
    totals.failed++;
    WH_WARN("batch rolled back: %s", err);
    if (b->res.db_failed)
        db_failed(ctx, err);
}

/* sc_batch_begin on b, its outcome counted. */
static int begin_batch(sc_ctx *ctx, summary *sm, sc_batch *b)
{
    char err[1024];
    if (sc_batch_begin(ctx, b, err, sizeof(err)) != WH_OK) {
        failed(ctx, sm, b, err);
        return WH_ERR;
    }
    db_answered(ctx, b->res.claim_ms * 1000);
    if (!b->open)
        account(sm, b); /* nothing was due */
    return WH_OK;
}

/* sc_batch_end on b, its outcome counted. */
static int end_batch(sc_ctx *ctx, summary *sm, sc_batch *b)
{
    char err[1024];
    if (sc_batch_end(ctx, b, err, sizeof(err)) != WH_OK) {
        failed(ctx, sm, b, err);
        return WH_ERR;
    }
    db_answered(ctx, b->res.commit_ms * 1000);
    account(sm, b);
    return WH_OK;
}

/* Ends every open batch, oldest first (the slot after `next` is the
 * oldest). Returns WH_ERR when one of them was rolled back. */
static int end_open(sc_ctx *ctx, summary *sm, int64_t next)
{
    int rc = WH_OK;
    for (int64_t k = 1; k <= ctx->s->pipeline; k++) {
        sc_batch *b = &ctx->batch[(next + k) % ctx->s->pipeline];
        if (b->open && end_batch(ctx, sm, b) != WH_OK)
            rc = WH_ERR;
    }
    return rc;
}

static bool any_open(const sc_ctx *ctx)
{
    for (int64_t i = 0; i < ctx->s->pipeline; i++)
        if (ctx->batch[i].open)
            return true;
    return false;
}

/*
 * The loop. Batches run on the slots in turn: a full batch (a backlog) is
 * left open while its messages are acknowledged and the next slot claims
 * the next batch; coming back to a slot ends its batch first. A batch
 * that is not full ends every open one, then the loop sleeps until the
 * next retry is due, a notification, or the poll interval. After a
 * rollback every open batch is ended and no new one is claimed until the
 * producer's queue is empty.
 */
static void run(sc_ctx *ctx)
{
    const sc_settings *s = ctx->s;
    summary sm = {.since_us = wh_mono_us(), .max_lag_ms = -1};
    int64_t backoff_ms = 0, listen_backoff_ms = 0, listen_retry_us = 0;
    int64_t next = 0; /* the slot of the next batch */
    bool settling = false, listened = false;
    char err[1024];

    WH_INFO("scheduler %s running (batch %" PRId64 ", pipeline %" PRId64
            ", poll interval %" PRId64 " ms, topic %s)",
            ctx->id, s->batch, s->pipeline, s->poll_interval_ms,
            s->deliveries_topic);
    while (!stop_requested) {
        summary_log(ctx, &sm, false);
        update_ready(ctx);
        wh_metrics_serve(metrics);
        bool reopen = ctx->batch[0].db && !wh_db_alive(ctx->batch[0].db);
        if (!any_open(ctx) && ensure_db(ctx, err, sizeof(err)) != WH_OK) {
            totals.connect_failed++;
            db_failed(ctx, err);
            backoff_ms = next_backoff(backoff_ms);
            WH_WARN("%s (retrying in %" PRId64 " ms)", err, backoff_ms);
            wait_until(ctx, wh_mono_us() + backoff_ms * 1000, false);
            continue;
        }
        if (reopen)
            WH_INFO("database connection restored");
        update_ready(ctx);
        if ((!ctx->listen_db || !wh_db_alive(ctx->listen_db)) &&
            wh_mono_us() >= listen_retry_us) {
            if (ensure_listen(ctx, err, sizeof(err)) != WH_OK) {
                listen_backoff_ms = next_backoff(listen_backoff_ms);
                listen_retry_us = wh_mono_us() + listen_backoff_ms * 1000;
                WH_WARN("LISTEN " CHANNEL ": %s (polling meanwhile; retrying "
                        "in %" PRId64 " ms)", err, listen_backoff_ms);
            } else {
                if (listened)
                    WH_INFO("retry notifications restored");
                listened = true;
                listen_backoff_ms = 0;
            }
        }
        /* Messages of a rolled-back batch still queued: claiming their rows
         * again before they settle would queue them a second time. With no
         * batch open, anything queued is theirs. */
        int left = any_open(ctx) ? 0 : wh_kafka_producer_outq(ctx->producer);
        if (left > 0) {
            if (!settling)
                WH_INFO("waiting for %d messages of a rolled-back batch "
                        "to settle before claiming more", left);
            settling = true;
            /* no claim meanwhile: Postgres is asked anyway */
            sc_dbwatch_probe(ctx->batch[0].db);
            update_ready(ctx);
            wait_until(ctx, wh_mono_us() + 100 * 1000, false);
            continue;
        }
        settling = false;
        WH_IGNORE(drain_notifications(ctx));

        sc_batch *b = &ctx->batch[next];
        int rc = WH_OK;
        if (b->open)
            rc = end_batch(ctx, &sm, b);
        if (rc == WH_OK)
            rc = begin_batch(ctx, &sm, b);
        if (rc == WH_OK && b->res.claimed == (size_t)s->batch) {
            next = (next + 1) % s->pipeline; /* backlog: claim the next */
            backoff_ms = 0;
            continue;
        }
        if (end_open(ctx, &sm, next) != WH_OK)
            rc = WH_ERR;
        if (rc != WH_OK) {
            backoff_ms = next_backoff(backoff_ms);
            WH_INFO("claiming again in %" PRId64 " ms", backoff_ms);
            wait_until(ctx, wh_mono_us() + backoff_ms * 1000, false);
            continue;
        }
        backoff_ms = 0;
        int64_t until = wh_mono_us() + s->poll_interval_ms * 1000;
        /* the next claim is /readyz's next answer from Postgres */
        if (sc_dbwatch_due_us() < until)
            until = sc_dbwatch_due_us();
        if (b->res.next_due_us > 0 && b->res.next_due_us < until)
            until = b->res.next_due_us;
        if ((!ctx->listen_db || !wh_db_alive(ctx->listen_db)) &&
            listen_retry_us < until)
            until = listen_retry_us;
        WH_IGNORE(wait_until(ctx, until, true));
    }
    /* a stop: the open batches finish (within the shutdown timeout) */
    WH_IGNORE(end_open(ctx, &sm, next));
    wh_metrics_set_ready(metrics, false, "shutting down");
    summary_log(ctx, &sm, true);
}

static double m_lag(void *o)
{
    (void)o;
    return (double)totals.last_lag_ms / 1e3;
}

static double m_last_batch(void *o)
{
    (void)o;
    return (double)totals.last_batch_wall_us / 1e6;
}

static double m_late_acks(void *o)
{
    return (double)((const sc_ctx *)o)->late_acks;
}

/* What dbwatch.c saw of Postgres, read when /metrics is served. */
#define DBWATCH_FN(name, field)                                          \
    static double m_db_##name(void *o)                                   \
    {                                                                    \
        (void)o;                                                         \
        sc_dbwatch_stats st;                                             \
        sc_dbwatch_counts(&st);                                          \
        return (double)st.field;                                         \
    }
DBWATCH_FN(up, up)
DBWATCH_FN(failures, failures)
DBWATCH_FN(seconds, seconds)

static double m_producer_queue(void *o)
{
    const sc_ctx *ctx = o;
    return ctx->producer ? wh_kafka_producer_outq(ctx->producer) : 0;
}

/* What /metrics exports; docs/operations.md explains each. */
static int metrics_register(sc_ctx *ctx, char *err, size_t errlen)
{
    static const struct {
        wh_metric_type type;
        const char *name, *labels, *help;
        const int64_t *value;
        wh_metric_fn *fn;
    } defs[] = {
        {WH_METRIC_COUNTER, "webhook_scheduler_retries_enqueued_total", NULL,
         "Due retries produced to the deliveries topic and deleted.",
         &totals.enqueued, NULL},
        {WH_METRIC_COUNTER, "webhook_scheduler_retries_dead_lettered_total",
         NULL,
         "Retry rows the producer cannot send (too large): dead-lettered, "
         "recorded as a final failed attempt and deleted.", &totals.dead,
         NULL},
        {WH_METRIC_COUNTER, "webhook_scheduler_batches_total", NULL,
         "Committed batches that moved at least one row.", &totals.batches,
         NULL},
        {WH_METRIC_COUNTER, "webhook_scheduler_batch_failures_total", NULL,
         "Batches rolled back (query or Kafka failure).", &totals.failed,
         NULL},
        {WH_METRIC_COUNTER, "webhook_scheduler_connect_failures_total", NULL,
         "Failed attempts to open the database connection.",
         &totals.connect_failed, NULL},
        {WH_METRIC_GAUGE, "webhook_scheduler_last_batch_size", NULL,
         "Rows claimed by the latest batch (the batch size means a "
         "backlog).", &totals.last_claimed, NULL},
        {WH_METRIC_GAUGE, "webhook_scheduler_lag_seconds", NULL,
         "How late the oldest retry of the latest batch was (0 when none "
         "was due).", NULL, m_lag},
        {WH_METRIC_GAUGE, "webhook_scheduler_last_batch_timestamp_seconds",
         NULL,
         "Unix time the latest batch finished without error (0: none yet).",
         NULL, m_last_batch},
        {WH_METRIC_COUNTER, "webhook_scheduler_late_acks_total", NULL,
         "Acknowledgements that arrived after their batch was rolled back "
         "(each one is produced again).", NULL, m_late_acks},
        {WH_METRIC_GAUGE, "webhook_scheduler_database_up", NULL,
         "1 while Postgres answers the claims and probes on the claim "
         "connection (at least every SCHEDULER_DB_PROBE_INTERVAL) within "
         "SCHEDULER_DB_PROBE_TIMEOUT.", NULL, m_db_up},
        {WH_METRIC_GAUGE, "webhook_scheduler_database_probe_seconds", NULL,
         "Round trip of the last claim or probe Postgres answered.", NULL,
         m_db_seconds},
        {WH_METRIC_COUNTER, "webhook_scheduler_database_failures_total", NULL,
         "Claims, commits, probes and connects that failed on Postgres "
         "(one that does not answer fails them after "
         "DATABASE_STATEMENT_TIMEOUT and its grace).", NULL, m_db_failures},
        {WH_METRIC_GAUGE, "webhook_scheduler_kafka_producer_queue_messages",
         NULL, "Produced messages Kafka has not acknowledged yet.", NULL,
         m_producer_queue},
    };
    for (size_t i = 0; i < WH_ARRAY_LEN(defs); i++) {
        int rc = defs[i].value
                     ? wh_metrics_add(metrics, defs[i].type, defs[i].name,
                                      defs[i].labels, defs[i].help,
                                      defs[i].value, err, errlen)
                     : wh_metrics_add_fn(metrics, defs[i].type, defs[i].name,
                                         defs[i].labels, defs[i].help,
                                         defs[i].fn, ctx, err, errlen);
        if (rc != WH_OK)
            return WH_ERR;
    }
    return wh_metrics_add_process(metrics, "webhook_scheduler", "scheduler",
                                  &totals.started_us, &ctx->batch[0].db,
                                  &ctx->listen_db, err, errlen);
}

/* KAFKA_EXTRA with message.timeout.ms set to the produce timeout in
 * front, so messages of a batch that timed out are given up by librdkafka
 * too (an explicit message.timeout.ms in KAFKA_EXTRA still wins). Returns
 * a malloc'd string or NULL when out of memory. */
static char *kafka_extra(const sc_settings *s)
{
    const char *user = s->kafka_extra ? s->kafka_extra : "";
    size_t n = strlen(user) + EXTRA_PREFIX_MAX;
    char *out = malloc(n);
    if (!out)
        return NULL;
    snprintf(out, n, "message.timeout.ms=%" PRId64 "%s%s",
             s->produce_timeout_ms, *user ? "," : "", user);
    return out;
}

int main(int argc, char **argv)
{
    settings cfg;
    sc_settings s;
    sc_ctx ctx;
    char err[1024];
    char *extra = NULL;
    int rc = 1;
    memset(&cfg, 0, sizeof(cfg));
    memset(&ctx, 0, sizeof(ctx));
    ctx.s = &s;
    totals.started_us = wh_mono_us();
    ctx.stop = &stop_requested;

    if (argc == 2 && strcmp(argv[1], "--settings-markdown") == 0) {
        wh_config_markdown(stdout, opts, WH_ARRAY_LEN(opts));
        return 0;
    }
    int lr = wh_config_load(opts, WH_ARRAY_LEN(opts), &cfg, argc, argv, NULL,
                            err, sizeof(err));
    s = cfg.sc;
    if (lr == WH_AGAIN) {
        wh_config_usage(stdout, PROG " [options]", opts, WH_ARRAY_LEN(opts));
        return 0;
    }
    if (lr != WH_OK) {
        fprintf(stderr, PROG ": %s (see --help)\n", err);
        return 2;
    }
    if (wh_log_init(s.log_format, s.log_level, "scheduler", err,
                    sizeof(err)) != WH_OK) {
        fprintf(stderr, PROG ": %s\n", err);
        return 2;
    }
    if (!s.database_url || !*s.database_url) {
        fprintf(stderr, PROG ": DATABASE_URL is not set (see --help)\n");
        return 2;
    }
    wh_db_set_defaults(&cfg.db);
    sc_dbwatch_conf wc = {.probe_interval_ms = cfg.probe_interval_ms,
                          .probe_timeout_ms = cfg.probe_timeout_ms};
    sc_dbwatch_init(&wc);
    if (s.scheduler_id && *s.scheduler_id) {
        if (wh_strlcpy(ctx.id, s.scheduler_id, sizeof(ctx.id)) != WH_OK) {
            fprintf(stderr, PROG ": SCHEDULER_ID is longer than %zu bytes\n",
                    sizeof(ctx.id) - 1);
            return 2;
        }
    } else {
        char host[64] = "scheduler";
        gethostname(host, sizeof(host) - 1);
        host[sizeof(host) - 1] = '\0';
        snprintf(ctx.id, sizeof(ctx.id), "%s-%d", host, (int)getpid());
    }
    wh_config_log(opts, WH_ARRAY_LEN(opts), &cfg);

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    wh_metrics_conf mc = {.listen = cfg.metrics_listen};
    if (wh_metrics_new(&mc, &metrics, err, sizeof(err)) != WH_OK ||
        metrics_register(&ctx, err, sizeof(err)) != WH_OK) {
        WH_ERROR("%s", err);
        goto out;
    }
    if (metrics)
        WH_INFO("serving /metrics, /healthz and /readyz on http://%s",
                wh_metrics_address(metrics));
    if (!(extra = kafka_extra(&s))) {
        WH_ERROR("out of memory");
        goto out;
    }
    wh_kafka_conf kc = {
        .brokers = s.kafka_brokers,
        .client_id = ctx.id,
        .extra = extra,
        .message_max = wh_kafka_message_max(s.payload_max),
    };
    if (wh_kafka_producer_new(&kc, sc_batch_on_report, &ctx, &ctx.producer,
                              err, sizeof(err)) != WH_OK) {
        WH_ERROR("%s", err);
        goto out;
    }
    int64_t message_max = wh_kafka_producer_message_max(ctx.producer);
    if (message_max < kc.message_max) {
        WH_ERROR("message.max.bytes is %" PRId64 " (KAFKA_EXTRA), but "
                 "WEBHOOK_PAYLOAD_MAX=%" PRId64 " needs at least %" PRId64
                 " (the payload plus %d bytes for a Delivery's other fields)",
                 message_max, s.payload_max, kc.message_max,
                 WH_KAFKA_HEADROOM);
        rc = 2;
        goto out;
    }
    ctx.delivery_max = (size_t)(message_max - WH_KAFKA_FRAMING_MAX);
    WH_INFO("retries of up to %zu bytes are sent (message.max.bytes %" PRId64
            "); larger ones are dead-lettered", ctx.delivery_max,
            message_max);
    wh_kafka_producer_warm(ctx.producer, ctx.s->deliveries_topic);
    wh_kafka_producer_warm(ctx.producer, ctx.s->dead_topic);
    run(&ctx);
    rc = 0;
    int64_t deadline = ctx.stop_deadline_us
                           ? ctx.stop_deadline_us
                           : wh_mono_us() + s.shutdown_timeout_ms * 1000;
    int64_t left_ms = (deadline - wh_mono_us()) / 1000;
    if (wh_kafka_producer_outq(ctx.producer) > 0 &&
        wh_kafka_producer_flush(ctx.producer,
                                left_ms > 0 ? (int)left_ms : 0, err,
                                sizeof(err)) != WH_OK)
        WH_WARN("%s (their retries were rolled back and stay scheduled)",
                err);
out:
    wh_kafka_producer_destroy(ctx.producer);
    wh_db_close(ctx.listen_db);
    sc_batch_cleanup(&ctx);
    wh_metrics_destroy(metrics);
    free(extra);
    WH_INFO("stopped");
    return rc;
}
