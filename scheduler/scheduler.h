/*
 * scheduler.h - what the parts of webhook-scheduler share: its settings,
 * the process context, and the batch that moves due retries from
 * webhooks.retries to the deliveries topic (batch.c), and whether
 * Postgres answers (dbwatch.c). main.c owns the loop, the waiting,
 * reconnects, readiness and shutdown. Everything runs on the main
 * thread; librdkafka's threads only wake it through the producer's pipe.
 */
#ifndef SC_SCHEDULER_H
#define SC_SCHEDULER_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "db.h"
#include "kafka.h"
#include "wh.h"

/* Most batches in flight at once (SCHEDULER_PIPELINE). */
#define SC_PIPELINE_MAX 8
/* Most rows per batch (SCHEDULER_BATCH). A message's delivery report
 * carries its batch's sequence number and its row: SC_ROW_BITS hold the
 * row, one more bit tells a dead letter. */
#define SC_BATCH_MAX 100000
#define SC_ROW_BITS 17

typedef struct {
    const char *kafka_brokers;
    const char *kafka_extra;
    const char *database_url;
    const char *deliveries_topic;
    const char *dead_topic;
    int64_t payload_max;
    int64_t batch;
    int64_t pipeline;
    int64_t poll_interval_ms;
    int64_t produce_timeout_ms;
    int64_t shutdown_timeout_ms;
    const char *scheduler_id;
    const char *log_format;
    const char *log_level;
} sc_settings;

/* Outcome of one batch. */
typedef struct {
    size_t claimed;     /* rows the claim took (and deleted) */
    size_t enqueued;    /* produced, acknowledged and deleted */
    size_t dead;        /* rows that could not be sent: dead-lettered,
                           recorded as a final failed attempt, deleted */
    int64_t lag_ms;     /* now - due_at of the oldest row produced; -1 if
                           none was */
    int64_t claim_ms, kafka_ms, commit_ms; /* time spent claiming (and
                            deleting), producing until acknowledged, and
                            committing */
    int64_t next_due_us; /* when claimed < batch: monotonic time (as
                            wh_mono_us) the next retry is due, counting
                            only rows not yet due at the claim (a row that
                            became due since gives "now"); 0 when there is
                            none or the batch was full */
    bool db_failed;     /* after WH_ERR: a Postgres call failed (not Kafka) */
} sc_batch_result;

/* One batch slot: a database connection and the transaction it holds
 * open while Kafka acknowledges the batch's messages. */
typedef struct {
    wh_db *db;                      /* claims and deletes */
    bool open;                      /* a claimed batch awaits sc_batch_end */
    wh_db_result *rows;             /* the claimed rows, until the end */
    /* Delivery reports of the open batch carry its sequence number; those
     * of a batch no longer open are late (sc_ctx.late_acks). */
    uint64_t seq;
    size_t sent, acked, nacked;
    char report_err[WH_ERRLEN];     /* first failure of the batch */
    /* Rows whose delivery Kafka refused for its size (to be
     * dead-lettered), and how many of the batch were dead-lettered. */
    uint32_t *refused;
    size_t nrefused, dead;
    int64_t t_claim, t_kafka, deadline_us;
    sc_batch_result res;
} sc_batch;

typedef struct {
    const sc_settings *s;
    char id[WH_ID_MAX];
    /* s->pipeline slots, each with its own connection: while Kafka
     * acknowledges one batch, the next is claimed and produced on the
     * next slot. batch[0]'s connection is the one /readyz reports on. */
    sc_batch batch[SC_PIPELINE_MAX];
    wh_db *listen_db;               /* LISTEN webhooks_retries */
    wh_kafka_producer *producer;
    /* The largest delivery a retry may be: what the producer takes
     * (message.max.bytes) less a record's framing. */
    size_t delivery_max;
    const volatile sig_atomic_t *stop; /* set by SIGTERM/SIGINT */
    int64_t stop_deadline_us;       /* mono time the shutdown must end by;
                                       0 until a stop was requested */
    uint64_t seq;                   /* sequence number of the latest batch */
    /* Acknowledgements that arrived after their batch was rolled back:
     * each is a message whose row stayed and will be produced again. */
    uint64_t late_acks;
} sc_ctx;

/* Frees what the slots hold and closes their connections. */
void sc_batch_cleanup(sc_ctx *ctx);

/*
 * A batch is one transaction on one slot, in two halves.
 *
 * sc_batch_begin: BEGIN, claim up to s->batch due rows (FOR UPDATE SKIP
 * LOCKED, oldest due first) and delete them in the same statement, then
 * queue each row's delivery bytes to the deliveries topic keyed by its
 * endpoint id. A row the producer cannot send (larger than
 * ctx->delivery_max, or refused for its size) is dead-lettered instead,
 * without its payload, and recorded in webhooks.attempts as a final
 * failed attempt in the same transaction. Returns WH_OK with b->res
 * filled so far;
 * b->open is then true when rows were claimed (the transaction stays open
 * for sc_batch_end), false when none were due (it committed). Rows claimed
 * by another open slot are skipped.
 *
 * sc_batch_end: waits until Kafka has acknowledged every message of the
 * batch (at most s->produce_timeout_ms plus one second from the claim,
 * less once a stop was requested), dead-letters the rows whose delivery
 * Kafka refused for its size (waiting for those too) and commits, which
 * is when the claimed rows leave the table. Returns WH_OK with b->res
 * complete.
 *
 * Both return WH_ERR after rolling back (b->open false) when a query
 * failed (b->res.db_failed set; wh_db_alive(b->db) tells whether the
 * connection survived) or when Kafka refused or did not acknowledge a
 * message; no row is deleted
 * then, and messages already produced will be produced again by a later
 * batch. Messages of an abandoned batch may still be in the producer's
 * queue afterwards (wh_kafka_producer_outq); the caller should let them
 * settle before claiming again.
 */
int sc_batch_begin(sc_ctx *ctx, sc_batch *b, char *err,
                   size_t errlen) WH_MUST_CHECK;
int sc_batch_end(sc_ctx *ctx, sc_batch *b, char *err,
                 size_t errlen) WH_MUST_CHECK;

/* Delivery report callback for wh_kafka_producer_new (opaque: sc_ctx). */
void sc_batch_on_report(void *opaque, void *msg_opaque, int ok,
                        const char *errstr);

/*
 * Whether Postgres answers (dbwatch.c), for /readyz and /metrics: the
 * loop reports the outcome of every round trip on a claim connection (a
 * claim, a commit, a connect) and, when it has not asked Postgres for
 * probe_interval_ms, sends a probe.
 */
typedef struct {
    int64_t probe_interval_ms;  /* SCHEDULER_DB_PROBE_INTERVAL */
    int64_t probe_timeout_ms;   /* SCHEDULER_DB_PROBE_TIMEOUT */
} sc_dbwatch_conf;

void sc_dbwatch_init(const sc_dbwatch_conf *conf);
/* Postgres answered a round trip that took took_us. */
void sc_dbwatch_answered(int64_t took_us);
/* A round trip failed; why (copied) says which and how. */
void sc_dbwatch_failed(const char *why);
/* Monotonic time (wh_mono_us) by which the loop should ask Postgres
 * again: probe_interval_ms after the last round trip ended. */
int64_t sc_dbwatch_due_us(void);
/* SELECT 1 on db (connected, no transaction open) when that time has
 * come; its outcome is reported like any round trip. */
void sc_dbwatch_probe(wh_db *db);
/* True while the last round trip was answered, within probe_timeout_ms,
 * at most probe_interval_ms + probe_timeout_ms ago, and db is connected;
 * else false with why (cap bytes) saying which, e.g. "database: claiming
 * due retries: ...". Sets webhook_scheduler_database_up. */
bool sc_dbwatch_up(wh_db *db, char *why, size_t cap);
/* For /metrics. */
typedef struct {
    bool up;            /* as the last sc_dbwatch_up found */
    int64_t failures;   /* round trips that failed, since start */
    double seconds;     /* the last answer's round trip */
} sc_dbwatch_stats;
void sc_dbwatch_counts(sc_dbwatch_stats *st);


#endif
