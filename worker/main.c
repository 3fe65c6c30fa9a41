/*
 * main.c - webhook-worker: settings, start-up, the event loop and graceful
 * shutdown. One thread waits on curl's sockets plus the Kafka consumers'
 * and producer's wake-up pipes, the recorder's eventfd and the LISTEN
 * connection, then lets each part make progress: fan-out, delivery,
 * delivery reports, HTTP completions, the attempt recorder (whose
 * transactions run on its own thread) and endpoint-cache refreshes; the
 * operations HTTP server (metrics, health and readiness) is served from
 * the same loop. The loop's own Postgres work (endpoint reads,
 * maintenance, the probe, reconnects) is loopdb.c's, run on the query
 * executor's thread (dbq.c), whose completions wake the loop.
 */
#include <malloc.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache.h"
#include "config.h"
#include "dbq.h"
#include "deadletter.h"
#include "log.h"
#include "loopdb.h"
#include "metrics.h"
#include "worker.h"

/* The stages' settings plus those only main.c reads. */
typedef struct {
    wk_settings wk;
    int64_t http_low_speed_ms;    /* the HTTP adapter's low-speed window */
    const char *metrics_listen;
    wh_db_opts db;                /* bounds of every Postgres connection */
    int64_t loop_db_timeout_ms;   /* the loop's own connection (ctx->db) */
    int64_t probe_interval_ms, probe_timeout_ms;
    int64_t ready_stall_ms;
    int64_t dead_letter_give_up_ms; /* the dead-letter sender's bound */
} settings;

#define S(f) offsetof(settings, wk.f)

static const wh_opt opts[] = {
    {"kafka-brokers", "KAFKA_BROKERS", WH_OPT_STRING, "localhost:9092", 0, 0,
     S(kafka_brokers), "Kafka bootstrap servers"},
    {"kafka-extra", "KAFKA_EXTRA", WH_OPT_STRING, NULL, 0, 0, S(kafka_extra),
     "more librdkafka properties, k=v,k=v (e.g. security.protocol=ssl)"},
    {"database-url", "DATABASE_URL", WH_OPT_STRING, NULL, 0, 0,
     S(database_url), "PostgreSQL connection URI (required)"},
    {"secret-key", "WEBHOOK_SECRET_KEY", WH_OPT_STRING, NULL, 0, 0,
     S(secret_key), "32-byte key (base64 or hex) sealing endpoint secrets "
     "(this or --secret-key-file is required)"},
    {"secret-key-file", "WEBHOOK_SECRET_KEY_FILE", WH_OPT_STRING, NULL, 0, 0,
     S(secret_key_file), "file holding that key, so it is not in the "
     "command line or environment"},
    {"secret-key-previous", "WEBHOOK_SECRET_KEY_PREVIOUS", WH_OPT_STRING,
     NULL, 0, 0, S(secret_key_previous), "keys the current one replaced "
     "(at most 3, separated by commas or whitespace): they open secrets "
     "sealed under them, never seal"},
    {"secret-key-previous-file", "WEBHOOK_SECRET_KEY_PREVIOUS_FILE",
     WH_OPT_STRING, NULL, 0, 0, S(secret_key_previous_file), "file holding "
     "those keys, one per line (instead of WEBHOOK_SECRET_KEY_PREVIOUS)"},
    {"role", "WORKER_ROLE", WH_OPT_STRING, "all", 0, 0, S(role),
     "stages to run: all, fanout or deliver"},
    {"events-topic", "WEBHOOK_EVENTS_TOPIC", WH_OPT_STRING, "webhook.events",
     0, 0, S(events_topic), "topic producers publish events to"},
    {"deliveries-topic", "WEBHOOK_DELIVERIES_TOPIC", WH_OPT_STRING,
     "webhook.deliveries", 0, 0, S(deliveries_topic),
     "topic of per-endpoint deliveries"},
    {"dead-topic", "WEBHOOK_DEAD_TOPIC", WH_OPT_STRING, "webhook.dead", 0, 0,
     S(dead_topic), "dead-letter topic"},
    {"fanout-group", "WEBHOOK_FANOUT_GROUP", WH_OPT_STRING, "webhook-fanout",
     0, 0, S(fanout_group), "consumer group of the fan-out stage"},
    {"deliver-group", "WEBHOOK_DELIVER_GROUP", WH_OPT_STRING,
     "webhook-deliver", 0, 0, S(deliver_group),
     "consumer group of the delivery stage"},
    {"session-timeout", "KAFKA_SESSION_TIMEOUT", WH_OPT_DURATION, "45s", 1000,
     3600000, S(session_timeout_ms),
     "consumer group session timeout (a dead worker's partitions move after "
     "this)"},
    {"heartbeat-interval", "KAFKA_HEARTBEAT_INTERVAL", WH_OPT_DURATION, "3s",
     100, 600000, S(heartbeat_ms), "consumer group heartbeat interval"},
    {"http-timeout", "WEBHOOK_HTTP_TIMEOUT", WH_OPT_DURATION, "15s", 100,
     120000, S(http_timeout_ms),
     "total time allowed for one delivery attempt (per-endpoint override)"},
    {"connect-timeout", "WEBHOOK_CONNECT_TIMEOUT", WH_OPT_DURATION, "5s", 100,
     60000, S(connect_timeout_ms), "time allowed to connect to an endpoint"},
    {"http-low-speed-time", "WEBHOOK_HTTP_LOW_SPEED_TIME", WH_OPT_DURATION,
     "5s", 0, 120000, offsetof(settings, http_low_speed_ms),
     "an attempt under 1 KiB/s for this long while its request is sent or "
     "its response received fails as a timeout; the endpoint's time before "
     "it answers does not count (0 = no limit)"},
    {"allow-private-nets", "WEBHOOK_ALLOW_PRIVATE_NETS", WH_OPT_STRING, NULL,
     0, 0, S(allow_private_nets),
     "CIDR ranges endpoints may resolve to despite being loopback/private, "
     "e.g. 127.0.0.0/8,::1/128"},
    {"max-in-flight", "WORKER_MAX_IN_FLIGHT", WH_OPT_INT, "20000", 10,
     1000000, S(max_in_flight),
     "messages a stage works on before it pauses consumption; deliveries "
     "waiting in lane queues do not count: up to as many again wait there, "
     "then a lane that would queue one more parks its queue in Postgres"},
    {"lane-queue-max", "WORKER_LANE_QUEUE_MAX", WH_OPT_INT, "1000", 1,
     1000000, S(lane_queue_max),
     "deliveries one endpoint's lane queues in memory; later ones wait "
     "parked in Postgres"},
    {"lane-park-after", "WORKER_LANE_PARK_AFTER", WH_OPT_DURATION, "5s", 10,
     3600000, S(lane_park_after_ms),
     "a delivery queued in memory this long behind a slow or failing one "
     "is parked in Postgres with the rest of its lane's queue, so its "
     "offset can be committed"},
    {"drain-max", "WORKER_DRAIN_MAX", WH_OPT_INT, "10000", 1, 10000000,
     S(drain_max),
     "parked deliveries all draining lanes together load into memory; "
     "beyond it lanes wait their turn"},
    {"breaker-failures", "WORKER_BREAKER_FAILURES", WH_OPT_INT, "5", 0, 1000,
     S(breaker_failures),
     "consecutive failures (no response, 429, 5xx) that open an endpoint's "
     "circuit breaker (0 = no breaker)"},
    {"breaker-cooldown", "WORKER_BREAKER_COOLDOWN", WH_OPT_DURATION, "1s", 10,
     3600000, S(breaker_cooldown_ms),
     "first pause of an open breaker before one trial request; doubles on "
     "each failed trial, up to 64 times"},
    {"max-host-connections", "WEBHOOK_MAX_HOST_CONNECTIONS", WH_OPT_INT, "64",
     0, 10000, S(max_host_connections),
     "concurrent connections per endpoint host (0 = unlimited)"},
    {"response-snippet", "WEBHOOK_RESPONSE_SNIPPET", WH_OPT_SIZE, "1k", 0,
     WH_HTTP_SNIPPET_MAX, S(snippet_max),
     "bytes of each response body kept in the history"},
    {"payload-max", "WEBHOOK_PAYLOAD_MAX", WH_OPT_SIZE, "512k", 1024,
     16 * 1024 * 1024, S(payload_max), "largest event payload accepted"},
    {"record-batch", "WORKER_RECORD_BATCH", WH_OPT_INT, "2000", 1, 100000,
     S(record_batch), "attempt rows that trigger a COPY to the history"},
    {"record-flush", "WORKER_RECORD_FLUSH", WH_OPT_DURATION, "20ms", 1, 10000,
     S(record_flush_ms), "longest an attempt row waits before it is written"},
    {"endpoint-refresh", "WORKER_ENDPOINT_REFRESH", WH_OPT_DURATION, "5m",
     1000, 86400000, S(endpoint_refresh_ms),
     "full endpoint reload period (changes also arrive by NOTIFY)"},
    {"history-retention", "WEBHOOK_HISTORY_RETENTION", WH_OPT_DURATION,
     "30d", 86400000, 3650LL * 86400000, S(history_retention_ms),
     "attempt history older than this is dropped (whole days)"},
    {"maintenance-interval", "WORKER_MAINTENANCE_INTERVAL", WH_OPT_DURATION,
     "1h", 1000, 86400000, S(maintenance_ms),
     "how often history partitions are created ahead and expired"},
    {"disable-after", "WEBHOOK_DISABLE_AFTER", WH_OPT_DURATION, "5d", 0,
     365LL * 86400000, S(disable_after_ms),
     "disable an endpoint whose every attempt failed for this long (0: "
     "never)"},
    {"dead-letter-give-up", "WORKER_DEAD_LETTER_GIVE_UP", WH_OPT_DURATION,
     "1h", 0, 30LL * 86400000, offsetof(settings, dead_letter_give_up_ms),
     "a dead letter Kafka has not taken after this long is stored in "
     "webhooks.unsent_dead_letters instead and its message goes on (0: "
     "never give up)"},
    {"shutdown-timeout", "WORKER_SHUTDOWN_TIMEOUT", WH_OPT_DURATION, "20s", 0,
     600000, S(shutdown_timeout_ms),
     "on SIGTERM, how long in-flight attempts may finish"},
    {"worker-id", "WORKER_ID", WH_OPT_STRING, NULL, 0, 0, S(worker_id),
     "name recorded with each attempt (default hostname-pid)"},
    {"ca-file", "WEBHOOK_CA_FILE", WH_OPT_STRING, NULL, 0, 0, S(ca_file),
     "extra CA bundle for endpoint TLS verification (checked at start-up)"},
    {"https-only", "WEBHOOK_HTTPS_ONLY", WH_OPT_BOOL, "false", 0, 0,
     S(https_only),
     "send nothing to http:// endpoints: their deliveries are dead-lettered "
     "as INSECURE_URL (recommended in production)"},
    {"user-agent", "WEBHOOK_USER_AGENT", WH_OPT_STRING, "webhook-worker/0.1",
     0, 0, S(user_agent), "User-Agent of delivery requests"},
    {"metrics-listen", "WORKER_METRICS_LISTEN", WH_OPT_STRING, NULL, 0, 0,
     offsetof(settings, metrics_listen),
     "HOST:PORT serving /metrics, /healthz and /readyz (port 0 picks one; "
     "unset: off)"},
    {"log-format", "LOG_FORMAT", WH_OPT_STRING, "auto", 0, 0, S(log_format),
     "text, json, or auto (text on a terminal)"},
    {"log-level", "LOG_LEVEL", WH_OPT_STRING, "info", 0, 0, S(log_level),
     "debug, info, warn or error"},
    {"loop-db-timeout", "WORKER_LOOP_DB_TIMEOUT", WH_OPT_DURATION, "1s", 100,
     60000, offsetof(settings, loop_db_timeout_ms),
     "how long a revoke waits for the recorder to make finished attempts "
     "durable before the partitions move (what is not is delivered again "
     "by the next owner); also the statement timeout of the loop's own "
     "connection"},
    {"db-probe-interval", "WORKER_DB_PROBE_INTERVAL", WH_OPT_DURATION, "2s",
     100, 600000, offsetof(settings, probe_interval_ms),
     "how often a SELECT 1 checks that Postgres answers (/readyz, "
     "webhook_worker_database_up)"},
    {"db-probe-timeout", "WORKER_DB_PROBE_TIMEOUT", WH_OPT_DURATION, "5s",
     100, 600000, offsetof(settings, probe_timeout_ms),
     "a probe unanswered for this long makes the worker not ready"},
    {"ready-stall", "WORKER_READY_STALL", WH_OPT_DURATION, "30s", 1000,
     3600000, offsetof(settings, ready_stall_ms),
     "not ready while attempt rows wait uncommitted, or a stage holds "
     "messages whose number does not go down, for longer than this"},
    WH_DB_OPT_ROWS(offsetof(settings, db)),
};

static volatile sig_atomic_t stop_requested;

/* The worker's own settings (main() fills them) and the query executor
 * running the loop's Postgres work (loopdb.c) and the stages' jobs. */
static const settings *conf;
static wk_dbq *dbq;
/* Non-zero once the worker must stop for a fatal reason: its exit code. */
static int fatal_rc;

/* The operations server (NULL when off) and what it exports beyond the
 * stages' own state. */
static wh_metrics *metrics;
static int64_t started_us, produced_acked, produced_failed;
static wk_deliver_stats deliver_stats; /* taken just before serving */
static wk_dead_stats dead_stats;       /* likewise */

/* Set once the stages are freed: a delivery report that still comes must
 * not touch the message it names (its stage freed it). */
static bool reports_off;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* What the teardown may add to WORKER_SHUTDOWN_TIMEOUT before the
 * watchdog ends the process: every wait of the teardown is bounded, this
 * catches a library call that never returns (docs/operations.md). */
#define STOP_WATCHDOG_S 15
#define STOP_WATCHDOG_TEXT(s) #s /* the bound, for the message */
#define STOP_WATCHDOG_STR(s) STOP_WATCHDOG_TEXT(s)

static void on_watchdog(int sig)
{
    (void)sig;
    static const char msg[] = "webhook-worker: the shutdown overran "
                              "WORKER_SHUTDOWN_TIMEOUT by "
                              STOP_WATCHDOG_STR(STOP_WATCHDOG_S)
                              " s; exiting (what was not committed is "
                              "consumed again)\n";
    if (write(STDERR_FILENO, msg, sizeof(msg) - 1) < 0) {
        /* nothing more can be done */
    }
    _exit(4);
}

/* Arms the watchdog for a stop that began now. */
static void watchdog_arm(int64_t shutdown_timeout_ms)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_watchdog;
    sigaction(SIGALRM, &sa, NULL);
    alarm((unsigned)((shutdown_timeout_ms + 999) / 1000) + STOP_WATCHDOG_S);
}

static void on_report(void *opaque, void *msg_opaque, int ok,
                      const char *errstr)
{
    wk_ctx *ctx = opaque;
    wk_msg_tag *tag = msg_opaque;
    if (ok)
        produced_acked++;
    else
        produced_failed++;
    if (!tag || reports_off)
        return;
    if (tag->owner == WK_MSG_DEAD)
        wk_deadletter_on_report(ctx->dead, msg_opaque, ok, errstr);
    else if (tag->owner == WK_MSG_FANOUT)
        wk_fanout_on_report(ctx->fanout, msg_opaque, ok, errstr);
    /* the delivery stage produces only dead letters */
}

/* Writes the recorder's batch when it is due; returns ms until the next
 * deadline (-1: nothing buffered). */
static int64_t record(wk_ctx *ctx)
{
    int64_t due = wk_recorder_due_ms(ctx->recorder);
    if (due == 0) {
        char err[512];
        if (wk_recorder_flush(ctx->recorder, err, sizeof(err)) == WH_ERR)
            WH_ERROR("%s", err);
        due = wk_recorder_due_ms(ctx->recorder);
    }
    return due;
}

/* One loop iteration's worth of work; returns true if more is waiting. */
/* While stopping, every STOP_COMMIT_MS and once more at the end: both
 * stages' stored offsets go to the group at once, so a rebalance that a
 * replacement starts meanwhile (the group then refuses commits) cannot
 * leave them uncommitted and sent again. */
#define STOP_COMMIT_MS 100

static void stop_commit(wk_ctx *ctx, bool now)
{
    static int64_t next_us;
    if (!now && wh_mono_us() < next_us)
        return;
    next_us = wh_mono_us() + STOP_COMMIT_MS * 1000;
    if (ctx->fanout)
        wk_fanout_commit_soon(ctx->fanout);
    if (ctx->deliver)
        wk_deliver_commit_soon(ctx->deliver);
}

static bool step(wk_ctx *ctx, bool consume, int timeout_ms)
{
    int fds[9], ready[9] = {0};
    size_t nfds = 0;
    int fo = -1, fp = -1, dl = -1, pr, ls;
    if (ctx->fanout) {
        fds[fo = (int)nfds++] = wk_fanout_fd(ctx->fanout);
        fds[fp = (int)nfds++] = wk_fanout_producer_fd(ctx->fanout);
    }
    if (ctx->deliver)
        fds[dl = (int)nfds++] = wk_deliver_fd(ctx->deliver);
    fds[pr = (int)nfds++] = wh_kafka_producer_fd(ctx->producer);
    /* a written batch wakes the loop; record() settles it (and clears
     * the eventfd) */
    fds[nfds++] = wk_recorder_fd(ctx->recorder);
    ls = wh_db_socket(ctx->listen_db) >= 0 ? (int)nfds : -1;
    if (ls >= 0)
        fds[nfds++] = wh_db_socket(ctx->listen_db);
    if (metrics)
        fds[nfds++] = wh_metrics_fd(metrics);
    int dq = (int)nfds;
    fds[nfds++] = wk_dbq_fd(dbq);
    wh_http_wait(ctx->http, fds, ready, nfds, timeout_ms);
    if (metrics && ctx->deliver)
        wk_deliver_counts(ctx->deliver, &deliver_stats);
    if (metrics && ctx->dead)
        wk_deadletter_counts(ctx->dead, &dead_stats);
    wh_metrics_serve(metrics);

    bool more = false;
    if (ready[dq])
        WH_IGNORE(wk_dbq_poll(dbq) > 0);
    if (fo >= 0 && ready[fo])
        wh_kafka_fd_drain(fds[fo]);
    if (dl >= 0 && ready[dl])
        wh_kafka_fd_drain(fds[dl]);
    if (ready[pr])
        wh_kafka_fd_drain(fds[pr]);
    if (fp >= 0 && ready[fp])
        wh_kafka_fd_drain(fds[fp]);
    if (consume && ctx->fanout)
        more |= wk_fanout_poll(ctx->fanout, 1000) == 1000;
    if (consume && ctx->deliver)
        more |= wk_deliver_poll(ctx->deliver, 1000) == 1000;
    wh_kafka_producer_poll(ctx->producer, 0);
    if (ctx->fanout)
        wk_fanout_serve(ctx->fanout);
    wh_http_perform(ctx->http, wk_deliver_http_done, ctx->deliver);
    wk_deadletter_tick(ctx->dead);
    if (ctx->fanout)
        wk_fanout_tick(ctx->fanout);
    if (ctx->deliver)
        wk_deliver_tick(ctx->deliver);
    if (ls >= 0 && ready[ls])
        wk_loopdb_on_notify();
    return more;
}

/* Whether a stage holding n messages made progress: 1 once their number
 * has not gone down for longer than bound_us (docs/operations.md). */
typedef struct {
    size_t last;
    int64_t since_us; /* when n last went down or was 0 */
} stall_watch;

static bool stalled(stall_watch *w, size_t n, int64_t now, int64_t bound_us)
{
    if (n == 0 || n < w->last || w->since_us == 0)
        w->since_us = now;
    w->last = n;
    return n > 0 && now - w->since_us > bound_us;
}

static stall_watch fanout_watch, deliver_watch;

/* /readyz: the producer works, Postgres answers the probe, the LISTEN
 * connection is up, attempt rows get committed and the stages make
 * progress. The first reason that holds is reported. */
static void update_ready(wk_ctx *ctx)
{
    char why[WH_METRICS_REASON_MAX], e[WH_ERRLEN];
    const char *db_why;
    int64_t now = wh_mono_us(), bound_us = conf->ready_stall_ms * 1000;
    wk_recorder_stats rs;
    wk_recorder_counts(ctx->recorder, &rs);
    why[0] = '\0';
    const char *broken = ctx->fanout ? wk_fanout_broken(ctx->fanout) : NULL;
    bool fatal = wh_kafka_producer_fatal(ctx->producer, e, sizeof(e)) != WH_OK;
    if (!fatal && broken) {
        wh_strlcpy(e, broken, sizeof(e));
        fatal = true;
    }
    if (fatal) {
        wh_strlcpy(why, e, sizeof(why));
        if (!fatal_rc) {
            WH_ERROR("%s; stopping", e);
            fatal_rc = 3;
            stop_requested = 1;
        }
    } else if (!wk_loopdb_db_up(&db_why)) {
        snprintf(why, sizeof(why), "database: %.240s", db_why);
    } else if (!wh_db_alive(ctx->db)) {
        wh_strlcpy(why, "database connection lost", sizeof(why));
    } else if (!wh_db_alive(ctx->listen_db)) {
        wh_strlcpy(why, "endpoint notification connection lost",
                   sizeof(why));
    } else if (rs.pending > 0 && rs.oldest_pending_us > 0 &&
               now - rs.oldest_pending_us > bound_us) {
        snprintf(why, sizeof(why), "%zu attempt rows not committed for %lld "
                 "ms", rs.pending,
                 (long long)((now - rs.oldest_pending_us) / 1000));
    }
    bool fo = ctx->fanout && stalled(&fanout_watch,
                                     wk_fanout_pending(ctx->fanout), now,
                                     bound_us);
    bool dl = ctx->deliver && stalled(&deliver_watch,
                                      wk_deliver_pending(ctx->deliver), now,
                                      bound_us);
    if (!why[0] && (fo || dl))
        snprintf(why, sizeof(why), "the %s stage has held %zu messages "
                 "without progress for %lld ms", fo ? "fan-out" : "delivery",
                 fo ? fanout_watch.last : deliver_watch.last,
                 (long long)((now - (fo ? fanout_watch.since_us
                                        : deliver_watch.since_us)) / 1000));
    wh_metrics_set_ready(metrics, !why[0], why[0] ? why : NULL);
}

static double m_probe_seconds(void *o)
{
    (void)o;
    return wk_loopdb_probe_seconds();
}

static double m_recorder_oldest(void *o)
{
    const wk_ctx *ctx = o;
    wk_recorder_stats rs;
    wk_recorder_counts(ctx->recorder, &rs);
    if (rs.pending == 0 || rs.oldest_pending_us == 0)
        return 0;
    return (double)(wh_mono_us() - rs.oldest_pending_us) / 1e6;
}

static double m_dbq_pending(void *o)
{
    (void)o;
    return dbq ? (double)wk_dbq_pending(dbq) : 0;
}

static double m_in_flight(void *o)
{
    const wk_ctx *ctx = o;
    return ctx->http ? wh_http_running(ctx->http) : 0;
}

static double m_recorder_pending(void *o)
{
    const wk_ctx *ctx = o;
    return ctx->recorder ? (double)wk_recorder_pending(ctx->recorder) : 0;
}

static double m_fanout_pending(void *o)
{
    const wk_ctx *ctx = o;
    return ctx->fanout ? (double)wk_fanout_pending(ctx->fanout) : 0;
}

static double m_deliver_pending(void *o)
{
    const wk_ctx *ctx = o;
    return ctx->deliver ? (double)wk_deliver_pending(ctx->deliver) : 0;
}

static double m_fanout_waiting(void *o)
{
    const wk_ctx *ctx = o;
    return ctx->fanout ? (double)wk_fanout_waiting(ctx->fanout) : 0;
}

static double m_fanout_rewinds(void *o)
{
    const wk_ctx *ctx = o;
    return ctx->fanout ? (double)wk_fanout_rewinds(ctx->fanout) : 0;
}

static double m_producer_queue(void *o)
{
    const wk_ctx *ctx = o;
    return (ctx->producer ? wh_kafka_producer_outq(ctx->producer) : 0) +
           (ctx->fanout ? (double)wk_fanout_outq(ctx->fanout) : 0);
}

static double m_endpoints(void *o)
{
    const wk_ctx *ctx = o;
    return ctx->cache ? (double)wk_cache_size(ctx->cache) : 0;
}

static double m_quarantined(void *o)
{
    const wk_ctx *ctx = o;
    return ctx->cache ? (double)wk_cache_quarantined(ctx->cache) : 0;
}

/* The recorder's counters (recorder.h), read when /metrics is served. */
#define RECORDER_COUNT_FN(field)                                         \
    static double m_recorder_##field(void *o)                            \
    {                                                                    \
        const wk_ctx *ctx = o;                                           \
        wk_recorder_stats st = {0};                                      \
        if (ctx->recorder)                                               \
            wk_recorder_counts(ctx->recorder, &st);                      \
        return (double)st.field;                                         \
    }
RECORDER_COUNT_FN(rows_isolated)
RECORDER_COUNT_FN(rows_dropped)
RECORDER_COUNT_FN(rows_clamped)
RECORDER_COUNT_FN(splits)

static int recorder_metrics_register(wk_ctx *ctx, char *err, size_t errlen)
{
    static const struct {
        const char *name, *help;
        wh_metric_fn *fn;
    } fns[] = {
        {"webhook_worker_recorder_rows_isolated_total",
         "Rows Postgres refused, written in their minimal form (no "
         "response snippet, the refusal as error text).",
         m_recorder_rows_isolated},
        {"webhook_worker_recorder_rows_dropped_total",
         "Rows Postgres refused even in their minimal form, dropped with an "
         "error log naming the delivery.", m_recorder_rows_dropped},
        {"webhook_worker_recorder_rows_clamped_total",
         "Rows with a value clamped or cut to its column's range when "
         "added.", m_recorder_rows_clamped},
        {"webhook_worker_recorder_batch_splits_total",
         "Times a batch was split to find rows Postgres refused.",
         m_recorder_splits},
    };
    for (size_t i = 0; i < WH_ARRAY_LEN(fns); i++)
        if (wh_metrics_add_fn(metrics, WH_METRIC_COUNTER, fns[i].name, NULL,
                              fns[i].help, fns[i].fn, ctx, err,
                              errlen) != WH_OK)
            return WH_ERR;
    return WH_OK;
}

/* What /metrics exports; docs/operations.md explains each. */
static int metrics_register(wk_ctx *ctx, char *err, size_t errlen)
{
    if (wh_metrics_add_process(metrics, "webhook_worker", "worker",
                               &started_us, &ctx->db, &ctx->listen_db, err,
                               errlen) != WH_OK)
        return WH_ERR;
    static const struct {
        wh_metric_type type;
        const char *name, *labels, *help;
        wh_metric_fn *fn;
    } fns[] = {
        {WH_METRIC_GAUGE, "webhook_worker_http_requests_in_flight", NULL,
         "Delivery attempts waiting for their HTTP response.", m_in_flight},
        {WH_METRIC_GAUGE, "webhook_worker_recorder_pending_rows", NULL,
         "Rows buffered for the next write to Postgres.",
         m_recorder_pending},
        {WH_METRIC_GAUGE, "webhook_worker_pending_messages", "stage=fanout",
         "Consumed messages whose offset cannot be committed yet.",
         m_fanout_pending},
        {WH_METRIC_GAUGE, "webhook_worker_pending_messages", "stage=deliver",
         "Consumed messages whose offset cannot be committed yet.",
         m_deliver_pending},
        {WH_METRIC_GAUGE, "webhook_worker_fanout_waiting_events", NULL,
         "Consumed events waiting for room in the producer's queue, or "
         "for the deliveries topic's partition count (consumption is "
         "paused meanwhile).", m_fanout_waiting},
        {WH_METRIC_COUNTER, "webhook_worker_fanout_rewinds_total", NULL,
         "Times Kafka refused a Delivery and the fan-out read its "
         "partitions again from the first event not fanned out "
         "completely, with a new producer.", m_fanout_rewinds},
        {WH_METRIC_GAUGE, "webhook_worker_kafka_producer_queue_messages",
         NULL, "Produced messages Kafka has not acknowledged yet.",
         m_producer_queue},
        {WH_METRIC_GAUGE, "webhook_worker_endpoints_cached", NULL,
         "Endpoints in the in-memory cache.", m_endpoints},
        {WH_METRIC_GAUGE, "webhook_worker_endpoints_quarantined", NULL,
         "Cached endpoints whose row cannot be read (secret cannot be "
         "opened, or a column fails its check); their deliveries are held.",
         m_quarantined},
    };
    for (size_t i = 0; i < WH_ARRAY_LEN(fns); i++)
        if (wh_metrics_add_fn(metrics, fns[i].type, fns[i].name,
                              fns[i].labels, fns[i].help, fns[i].fn, ctx, err,
                              errlen) != WH_OK)
            return WH_ERR;
    if (recorder_metrics_register(ctx, err, errlen) != WH_OK)
        return WH_ERR;
    static const struct {
        wh_metric_type type;
        const char *name, *labels, *help;
        const int64_t *value;
    } values[] = {
        {WH_METRIC_COUNTER, "webhook_worker_delivery_requests_total", NULL,
         "HTTP requests sent to endpoints.", &deliver_stats.sent},
        {WH_METRIC_COUNTER, "webhook_worker_delivery_attempts_total",
         "outcome=succeeded", "Delivery attempts by outcome.",
         &deliver_stats.succeeded},
        {WH_METRIC_COUNTER, "webhook_worker_delivery_attempts_total",
         "outcome=failed", "Delivery attempts by outcome.",
         &deliver_stats.failed},
        {WH_METRIC_COUNTER, "webhook_worker_deliveries_parked_total", NULL,
         "Deliveries parked in Postgres behind a blocked ordered lane.",
         &deliver_stats.parked},
        {WH_METRIC_COUNTER, "webhook_worker_lane_blocks_total", NULL,
         "Times an ordered lane was blocked by a failed head.",
         &deliver_stats.blocked},
        {WH_METRIC_COUNTER, "webhook_worker_stale_retries_total", NULL,
         "Retries ignored because their delivery had moved on.",
         &deliver_stats.stale},
        {WH_METRIC_GAUGE, "webhook_worker_deliveries_active", NULL,
         "Deliveries consumed whose outcome is not durable yet.",
         &deliver_stats.active},
        {WH_METRIC_COUNTER, "webhook_worker_handoff_skipped_total", NULL,
         "Deliveries consumed again after their partition was handed over "
         "that had already ended: not sent again.",
         &deliver_stats.handed_done},
        {WH_METRIC_GAUGE, "webhook_worker_deliveries_queued", NULL,
         "Deliveries consumed and waiting in lane queues (they do not count "
         "toward WORKER_MAX_IN_FLIGHT).", &deliver_stats.queued},
        {WH_METRIC_COUNTER, "webhook_worker_lane_spills_total",
         "reason=count",
         "Lanes whose in-memory queue was parked in Postgres, by reason.",
         &deliver_stats.spills_count},
        {WH_METRIC_COUNTER, "webhook_worker_lane_spills_total",
         "reason=waited",
         "Lanes whose in-memory queue was parked in Postgres, by reason.",
         &deliver_stats.spills_waited},
        {WH_METRIC_COUNTER, "webhook_worker_lane_spills_total",
         "reason=memory",
         "Lanes whose in-memory queue was parked in Postgres, by reason.",
         &deliver_stats.spills_memory},
        {WH_METRIC_GAUGE, "webhook_worker_lanes", NULL,
         "Endpoint lanes held in memory.", &deliver_stats.lanes},
        {WH_METRIC_COUNTER, "webhook_worker_parked_unreadable_total", NULL,
         "Unreadable parked rows dead-lettered and removed.",
         &deliver_stats.unreadable},
        {WH_METRIC_GAUGE, "webhook_worker_drain_loaded", NULL,
         "Parked deliveries of draining lanes loaded in memory "
         "(at most WORKER_DRAIN_MAX).", &deliver_stats.drain_loaded},
        {WH_METRIC_GAUGE, "webhook_worker_drain_loaded_peak", NULL,
         "Most parked deliveries ever loaded at once.",
         &deliver_stats.drain_peak},
        {WH_METRIC_COUNTER, "webhook_worker_drain_waits_total", NULL,
         "Times a draining lane waited for the WORKER_DRAIN_MAX budget.",
         &deliver_stats.drain_waits},
        {WH_METRIC_GAUGE, "webhook_worker_drain_waiting", NULL,
         "Draining lanes waiting for the WORKER_DRAIN_MAX budget now.",
         &deliver_stats.drain_waiting},
    };
    for (size_t i = 0; i < WH_ARRAY_LEN(values); i++)
        if (wh_metrics_add(metrics, values[i].type, values[i].name,
                           values[i].labels, values[i].help, values[i].value,
                           err, errlen) != WH_OK)
            return WH_ERR;
    if (wh_metrics_add(metrics, WH_METRIC_GAUGE,
                       "webhook_worker_database_up", NULL,
                       "1 while Postgres answers the worker's probe (a "
                       "SELECT 1 every WORKER_DB_PROBE_INTERVAL) within "
                       "WORKER_DB_PROBE_TIMEOUT.", wk_loopdb_up_gauge(), err,
                       errlen) != WH_OK ||
        wh_metrics_add_fn(metrics, WH_METRIC_GAUGE,
                          "webhook_worker_database_probe_seconds", NULL,
                          "Round trip of the last answered probe.",
                          m_probe_seconds, ctx, err, errlen) != WH_OK ||
        wh_metrics_add_fn(metrics, WH_METRIC_GAUGE,
                          "webhook_worker_recorder_oldest_pending_seconds",
                          NULL, "Age of the oldest attempt row not yet "
                          "committed (0: none).", m_recorder_oldest, ctx, err,
                          errlen) != WH_OK ||
        wh_metrics_add_fn(metrics, WH_METRIC_GAUGE,
                          "webhook_worker_db_jobs_pending", NULL,
                          "Jobs queued on or run by the query executor.",
                          m_dbq_pending, ctx, err, errlen) != WH_OK)
        return WH_ERR;
    const char *produced = "Messages produced to Kafka, by delivery report.";
    if (wh_metrics_add(metrics, WH_METRIC_COUNTER,
                       "webhook_worker_kafka_produced_total", "result=acked",
                       produced, &produced_acked, err, errlen) != WH_OK ||
        wh_metrics_add(metrics, WH_METRIC_COUNTER,
                       "webhook_worker_kafka_produced_total", "result=failed",
                       produced, &produced_failed, err, errlen) != WH_OK)
        return WH_ERR;
    const char *dead = "Dead letters by what became of them: produced "
                       "(acknowledged), retried (sent again, with backoff), "
                       "fell_back (sent without bodies), given_up (stored "
                       "in webhooks.unsent_dead_letters instead), "
                       "store_failed (that insert failed, tried again).";
    if (wh_metrics_add(metrics, WH_METRIC_COUNTER,
                       "webhook_worker_dead_letters_total", "result=produced",
                       dead, &dead_stats.produced, err, errlen) != WH_OK ||
        wh_metrics_add(metrics, WH_METRIC_COUNTER,
                       "webhook_worker_dead_letters_total", "result=retried",
                       dead, &dead_stats.retried, err, errlen) != WH_OK ||
        wh_metrics_add(metrics, WH_METRIC_COUNTER,
                       "webhook_worker_dead_letters_total",
                       "result=fell_back", dead, &dead_stats.fell_back, err,
                       errlen) != WH_OK ||
        wh_metrics_add(metrics, WH_METRIC_COUNTER,
                       "webhook_worker_dead_letters_total",
                       "result=given_up", dead, &dead_stats.given_up, err,
                       errlen) != WH_OK ||
        wh_metrics_add(metrics, WH_METRIC_COUNTER,
                       "webhook_worker_dead_letters_total",
                       "result=store_failed", dead, &dead_stats.store_failed,
                       err, errlen) != WH_OK ||
        wh_metrics_add(metrics, WH_METRIC_GAUGE,
                       "webhook_worker_dead_letters_waiting", NULL,
                       "Dead letters waiting out a backoff before they are "
                       "sent again.", &dead_stats.waiting, err,
                       errlen) != WH_OK)
        return WH_ERR;
    return WH_OK;
}

static int run(wk_ctx *ctx)
{
    wk_loopdb_conf lc = {.loop_db_timeout_ms = conf->loop_db_timeout_ms,
                         .probe_interval_ms = conf->probe_interval_ms,
                         .probe_timeout_ms = conf->probe_timeout_ms};
    wk_loopdb_init(ctx, &lc);
    int timeout = 0;
    WH_INFO("worker %s running (role %s, %zu endpoints cached)",
            ctx->worker_id, ctx->s->role, wk_cache_size(ctx->cache));
    while (!stop_requested) {
        wk_loopdb_probe();
        update_ready(ctx);
        bool more = step(ctx, true, timeout);
        int64_t due = record(ctx);
        timeout = more ? 0 : 100;
        if (due >= 0 && due < timeout)
            timeout = (int)due;
        due = ctx->deliver ? wk_deliver_due_ms(ctx->deliver) : -1;
        if (due >= 0 && due < timeout)
            timeout = (int)due;
        due = ctx->fanout ? wk_fanout_due_ms(ctx->fanout) : -1;
        if (due >= 0 && due < timeout)
            timeout = (int)due;
        due = wk_deadletter_due_ms(ctx->dead);
        if (due >= 0 && due < timeout)
            timeout = (int)due;
        wk_loopdb_tick();
    }
    ctx->stopping = true;
    wh_metrics_set_ready(metrics, false, "shutting down");
    WH_INFO("stopping: finishing %d attempts in flight (up to %lld ms)",
            wh_http_running(ctx->http),
            (long long)ctx->s->shutdown_timeout_ms);
    ctx->stop_deadline_us = wh_mono_us() + ctx->s->shutdown_timeout_ms * 1000;
    watchdog_arm(ctx->s->shutdown_timeout_ms);
    if (ctx->deliver)
        wk_deliver_stop(ctx->deliver);
    while (wh_mono_us() < ctx->stop_deadline_us &&
           (wh_http_running(ctx->http) > 0 ||
            (ctx->fanout && wk_fanout_outq(ctx->fanout) > 0))) {
        step(ctx, false, 50);
        /* both stages keep serving their groups meanwhile, so a
         * rebalance moves their partitions without waiting for this
         * worker; what they poll now they hold or drop, unstored
         * (ctx->stopping) */
        if (ctx->fanout)
            (void)wk_fanout_poll(ctx->fanout, 1000);
        if (ctx->deliver)
            (void)wk_deliver_serve(ctx->deliver, 1000);
        WH_IGNORE(record(ctx) >= 0);
        stop_commit(ctx, false);
    }
    /* Last rows to Postgres so their offsets can be committed, within
     * what is left of the budget (at least WK_STOP_STEP_MIN_MS): rows a
     * Postgres that is down cannot take stay unwritten, and their
     * messages are consumed again by the partitions' next owner. */
    int64_t until = wh_mono_us() + (int64_t)wk_stop_left_ms(ctx) * 1000;
    while (wk_recorder_pending(ctx->recorder) > 0 && wh_mono_us() < until) {
        step(ctx, false, 20);
        WH_IGNORE(record(ctx) >= 0);
        stop_commit(ctx, false);
    }
    stop_commit(ctx, true);
    if (wk_recorder_pending(ctx->recorder) > 0)
        WH_WARN("stopping with %zu rows not written to Postgres; their "
                "messages will be consumed again",
                wk_recorder_pending(ctx->recorder));
    return fatal_rc;
}

int main(int argc, char **argv)
{
    settings cfg;
    wk_settings s;
    wk_ctx ctx;
    char err[1024];
    int rc = 1;
    memset(&cfg, 0, sizeof(cfg));
    memset(&ctx, 0, sizeof(ctx));
    ctx.s = &s;
    started_us = wh_mono_us();
    /* Deliveries come and go by the thousand: keep freed memory in the
     * heap instead of returning it to the kernel and faulting it back in
     * (page faults were a tenth of the worker's time under load). */
    mallopt(M_TRIM_THRESHOLD, 256 * 1024 * 1024);
    mallopt(M_MMAP_THRESHOLD, 4 * 1024 * 1024);

    if (argc == 2 && strcmp(argv[1], "--settings-markdown") == 0) {
        wh_config_markdown(stdout, opts, WH_ARRAY_LEN(opts));
        return 0;
    }
    int lr = wh_config_load(opts, WH_ARRAY_LEN(opts), &cfg, argc, argv, NULL,
                            err, sizeof(err));
    s = cfg.wk;
    conf = &cfg;
    if (lr == WH_AGAIN) {
        wh_config_usage(stdout, "webhook-worker [options]", opts,
                        WH_ARRAY_LEN(opts));
        return 0;
    }
    if (lr != WH_OK) {
        fprintf(stderr, "webhook-worker: %s (see --help)\n", err);
        return 2;
    }
    if (wh_log_init(s.log_format, s.log_level, "worker", err,
                    sizeof(err)) != WH_OK) {
        fprintf(stderr, "webhook-worker: %s\n", err);
        return 2;
    }
    bool fanout = strcmp(s.role, "all") == 0 || strcmp(s.role, "fanout") == 0;
    bool deliver = strcmp(s.role, "all") == 0 ||
                   strcmp(s.role, "deliver") == 0;
    if (!fanout && !deliver) {
        fprintf(stderr, "webhook-worker: --role must be all, fanout or "
                        "deliver, not '%s'\n", s.role);
        return 2;
    }
    wh_secretbox_source keys = {
        .key = s.secret_key,
        .key_file = s.secret_key_file,
        .previous = s.secret_key_previous,
        .previous_file = s.secret_key_previous_file,
    };
    if (wh_secretbox_load(&ctx.sb, &keys, err, sizeof(err)) != WH_OK) {
        fprintf(stderr, "webhook-worker: %s\n", err);
        return 2;
    }
    if (s.ca_file && wh_http_check_ca_file(s.ca_file, err, sizeof(err)) !=
                         WH_OK) {
        fprintf(stderr, "webhook-worker: WEBHOOK_CA_FILE: %s\n", err);
        return 2;
    }
    if (s.allow_private_nets && *s.allow_private_nets &&
        wh_netlist_parse(s.allow_private_nets, &ctx.allow, err,
                         sizeof(err)) != WH_OK) {
        fprintf(stderr, "webhook-worker: WEBHOOK_ALLOW_PRIVATE_NETS: %s\n",
                err);
        return 2;
    }
    if (s.worker_id)
        wh_strlcpy(ctx.worker_id, s.worker_id, sizeof(ctx.worker_id));
    else {
        char host[64] = "worker";
        gethostname(host, sizeof(host) - 1);
        snprintf(ctx.worker_id, sizeof(ctx.worker_id), "%s-%d", host,
                 (int)getpid());
    }
    wh_config_log(opts, WH_ARRAY_LEN(opts), &cfg);
    char key_id[WH_SECRETBOX_KEY_ID_TEXT_LEN];
    wh_secretbox_current_id(&ctx.sb, key_id);
    size_t nprev = wh_secretbox_previous_count(&ctx.sb);
    WH_INFO("sealing endpoint secrets under key id %s; %zu previous key%s "
            "open%s what they sealed", key_id, nprev, nprev == 1 ? "" : "s",
            nprev == 1 ? "s" : "");

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

    wh_db_set_defaults(&cfg.db);
    wk_dbq_conf qc = {.url = s.database_url, .queue_max = 1024,
                      .backoff_min_ms = 100, .backoff_max_ms = 5000};
    if (wk_dbq_new(&qc, &dbq, err, sizeof(err)) != WH_OK) {
        WH_ERROR("%s", err);
        goto out;
    }
    ctx.dbq = dbq;
    if (wh_db_connect(s.database_url, &ctx.db, err, sizeof(err)) != WH_OK ||
        wh_db_connect(s.database_url, &ctx.listen_db, err, sizeof(err)) !=
            WH_OK ||
        wh_db_listen(ctx.listen_db, "webhooks_endpoints", err, sizeof(err)) !=
            WH_OK) {
        WH_ERROR("%s", err);
        goto out;
    }
    if (wk_cache_new(&ctx, &ctx.cache, err, sizeof(err)) != WH_OK) {
        WH_ERROR("loading endpoints: %s", err);
        goto out;
    }
    /* from now on the loop waits on ctx.db only this long */
    ctx.loop_wait_ms = cfg.loop_db_timeout_ms;
    if (wh_db_set_timeout(ctx.db, cfg.loop_db_timeout_ms, err, sizeof(err)) !=
        WH_OK) {
        WH_ERROR("%s", err);
        goto out;
    }
    wh_kafka_conf kc = {
        .brokers = s.kafka_brokers,
        .client_id = ctx.worker_id,
        .extra = s.kafka_extra,
        /* dead letters: never timed out (the sender gives up itself) */
        .keep_order = true,
        .message_max = wh_kafka_message_max(s.payload_max),
    };
    if (!(ctx.recorder = wk_recorder_new(&ctx))) {
        WH_ERROR("out of memory");
        goto out;
    }
    ctx.on_report = on_report;
    if (wh_kafka_producer_new(&kc, on_report, &ctx, &ctx.producer, err,
                              sizeof(err)) != WH_OK) {
        WH_ERROR("%s", err);
        goto out;
    }
    int64_t message_max = wh_kafka_producer_message_max(ctx.producer);
    if (message_max < kc.message_max) {
        WH_ERROR("message.max.bytes is %lld (KAFKA_EXTRA), but "
                 "WEBHOOK_PAYLOAD_MAX=%lld needs at least %lld (the payload "
                 "plus %d bytes for a Delivery's other fields or a dead "
                 "letter)", (long long)message_max, (long long)s.payload_max,
                 (long long)kc.message_max, WH_KAFKA_HEADROOM);
        rc = 2;
        goto out;
    }
    wk_deadletter_conf dc = {.producer = ctx.producer, .dbq = dbq,
                             .topic = s.dead_topic,
                             .message_max = (size_t)message_max,
                             .give_up_ms = cfg.dead_letter_give_up_ms};
    if (!(ctx.dead = wk_deadletter_new(&dc))) {
        WH_ERROR("out of memory");
        goto out;
    }
    wh_kafka_producer_warm(ctx.producer, s.dead_topic);
    wh_http_conf hc = {
        .user_agent = s.user_agent,
        .allow = ctx.allow,
        .max_host_connections = s.max_host_connections,
        .max_connections = 10000,
        .snippet_max = s.snippet_max,
        .low_speed_time_ms = cfg.http_low_speed_ms,
        .ca_file = s.ca_file,
        .https_only = s.https_only,
    };
    if (wh_http_new(&hc, &ctx.http, err, sizeof(err)) != WH_OK) {
        WH_ERROR("%s", err);
        goto out;
    }
    if ((fanout && wk_fanout_new(&ctx, &ctx.fanout, err, sizeof(err))) ||
        (deliver && wk_deliver_new(&ctx, &ctx.deliver, err, sizeof(err)))) {
        WH_ERROR("%s", err);
        goto out;
    }
    rc = run(&ctx);
out:
    /* What the producer still holds after the shutdown timeout is given up
     * while the stages that own it exist (they are read again by the next
     * owner); consumers then leave their groups, committing stored
     * offsets. */
    if (!ctx.stop_deadline_us) { /* start-up failed: no stop budget yet */
        ctx.stop_deadline_us = wh_mono_us() + s.shutdown_timeout_ms * 1000;
        watchdog_arm(s.shutdown_timeout_ms);
    }
    if (ctx.producer && wh_kafka_producer_outq(ctx.producer) > 0 &&
        wh_kafka_producer_flush(ctx.producer, wk_stop_left_ms(&ctx), err,
                                sizeof(err)) != WH_OK) {
        WH_WARN("%s; giving them up", err);
        wh_kafka_producer_purge(ctx.producer);
    }
    wk_fanout_destroy(ctx.fanout);
    if (ctx.producer &&
        wh_kafka_producer_flush(ctx.producer, wk_stop_left_ms(&ctx), err,
                                sizeof(err)) != WH_OK)
        WH_WARN("%s", err);
    wk_deliver_destroy(ctx.deliver);
    wk_deadletter_destroy(ctx.dead);
    reports_off = true; /* the stages are gone */
    wh_kafka_producer_destroy(ctx.producer);
    wh_http_destroy(ctx.http);
    wk_recorder_destroy(ctx.recorder, wk_stop_left_ms(&ctx));
    wk_dbq_destroy(dbq, 1000); /* before what its completions touch */
    wk_cache_destroy(ctx.cache);
    wh_db_close(ctx.listen_db);
    wh_db_close(ctx.db);
    wh_netlist_free(ctx.allow);
    wh_secretbox_cleanup(&ctx.sb);
    wh_metrics_destroy(metrics);
    WH_INFO("stopped");
    return rc;
}
