/*
 * recorder.c - batches the rows both stages make durable before their
 * offsets move: events (webhooks.events, for replay), attempts
 * (webhooks.attempts) and the retries those attempts scheduled
 * (webhooks.retries), and the changes to ordered lanes (webhooks.lanes,
 * webhooks.parked), written with one COPY per table in one transaction
 * (see recorder.h). Retry and lane rows pass the ownership fence: only
 * those whose (partition, epoch) still owns its deliveries-topic partition
 * in webhooks.lane_owners are applied, under a share lock on those rows so
 * an owner change waits for the transaction. Rows are encoded by rows.c
 * when added, so a flush is one round of PQputCopyData calls per table.
 *
 * A failed flush is one of two kinds. A transient failure (connection
 * lost, timeout, serialization) keeps the batch and retries it after a
 * backoff with a fresh connection; nothing is reported durable until the
 * transaction committed. A data error (SQLSTATE class 22, 23 or 54: a row
 * Postgres refuses) splits the batch in halves, written in order as
 * successive transactions, down to the refused row, which is written in
 * its minimal form (wk_rows_minimal) or, if that is refused too, dropped
 * with an error log; either way its waiter runs and the batch goes on.
 * The items of a batch that committed form a prefix (done), so a
 * transient failure while splitting resumes after it.
 *
 * The transactions run on the recorder's own thread and connection, so
 * the main loop goes on delivering while Postgres writes and commits.
 * Two batches alternate: the main thread fills one while the thread
 * writes the other; a full or due batch is handed over once the previous
 * one committed, so batches commit in the order they were filled. The
 * thread only writes (and logs refused rows); encoding rows, running the
 * waiters and every other call happen on the main thread, which the
 * thread wakes through an eventfd when a batch is done.
 */
#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "recorder.h"
#include "worker.h"

typedef struct {
    wk_recorded_fn *fn;
    void *opaque, *arg;
} waiter;

/* The rows of one batch and who waits for them: waiters[i] belongs to
 * item i of rows. */
typedef struct {
    wk_rows rows;
    waiter *waiters;
    size_t n;
    int64_t first_us;      /* when its oldest row was added */
    /* Written by the thread while it holds the batch: */
    size_t done;           /* items [0, done) are committed */
    int64_t splits, isolated, dropped;
} batch;

/* What became of the batch handed to the thread. */
enum { HANDED_NONE, HANDED_RUNNING, HANDED_FAILED };

struct wk_recorder {
    wk_ctx *ctx;
    batch b[2];
    batch *fill;           /* main thread adds here */
    batch *handed;         /* the thread's, while state != HANDED_NONE */
    int state;             /* HANDED_*; main thread only */
    size_t cap;            /* items per batch */
    int64_t retry_at_us;   /* backoff after a failed write */
    int64_t backoff_ms;
    wk_recorder_stats st;  /* counters; pending and times filled on read */
    bool in_callbacks;     /* running the waiters of a written batch */
    /* The thread and what it shares with the main thread, under mu. */
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool submitted;        /* handed is to be written */
    atomic_bool done;      /* handed was written (or failed) */
    bool quit;
    int result;            /* of the last write */
    char result_err[WH_ERRLEN];
    int efd;               /* eventfd: the thread finished a batch */
    wh_db *db;             /* the thread's connection */
    wk_rows minimal;       /* the thread's: one refused row, rewritten */
};

/* Bytes handed to one PQputCopyData call. */
#define COPY_CHUNK (1024 * 1024)

static void *writer(void *arg);

/* The largest row of the tables that carry protobuf as hex (events,
 * retries, parked lane changes): a message of at most payload_max plus
 * Kafka's headroom, hex-encoded, beside the largest attempt row's text. */
static size_t blob_row_max(const wk_ctx *ctx)
{
    return 2 * (size_t)wh_kafka_message_max(ctx->s->payload_max) +
           WK_ROWS_ATTEMPT_MAX;
}

static int batch_init(batch *b, size_t cap, size_t blob_max)
{
    /* every item may be one of the largest rows: what is in flight (each
     * stage pauses at max_in_flight) always fits */
    if (wk_rows_init(&b->rows, cap, cap * WK_ROWS_ATTEMPT_MAX,
                     cap * blob_max) != WH_OK)
        return WH_ERR;
    b->waiters = calloc(cap, sizeof(*b->waiters));
    return b->waiters ? WH_OK : WH_ERR;
}

static void batch_free(batch *b)
{
    wk_rows_cleanup(&b->rows);
    free(b->waiters);
}

static void batch_reset(batch *b)
{
    wk_rows_reset(&b->rows);
    b->n = b->done = 0;
    b->splits = b->isolated = b->dropped = 0;
}

wk_recorder *wk_recorder_new(wk_ctx *ctx)
{
    wk_recorder *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->ctx = ctx;
    r->efd = -1;
    /* Everything in flight may be waiting here while Postgres is away; each
     * stage pauses consumption at max_in_flight, plus one poll budget. */
    r->cap = 4 * ((size_t)ctx->s->max_in_flight + 4096);
    r->fill = &r->b[0];
    r->handed = &r->b[1];
    pthread_mutex_init(&r->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cv, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&r->done, false);
    r->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    size_t blob_max = blob_row_max(ctx);
    if (r->efd < 0 || batch_init(&r->b[0], r->cap, blob_max) != WH_OK ||
        batch_init(&r->b[1], r->cap, blob_max) != WH_OK ||
        wk_rows_init(&r->minimal, 1, WK_ROWS_ATTEMPT_MAX, blob_max) !=
            WH_OK) {
        wk_recorder_destroy(r, 0);
        return NULL;
    }
    if (pthread_create(&r->thread, NULL, writer, r) != 0) {
        wk_recorder_destroy(r, 0);
        return NULL;
    }
    r->started = true;
    return r;
}

/* The absolute CLOCK_MONOTONIC time ms from now, for r->cv. */
static struct timespec cv_deadline(int64_t ms)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    int64_t ns = t.tv_nsec + (ms % 1000) * 1000000;
    t.tv_sec += (time_t)(ms / 1000 + ns / 1000000000);
    t.tv_nsec = (long)(ns % 1000000000);
    return t;
}

void wk_recorder_destroy(wk_recorder *r, int64_t grace_ms)
{
    if (!r)
        return;
    if (r->started) {
        pthread_mutex_lock(&r->mu);
        r->quit = true;
        pthread_cond_broadcast(&r->cv);
        struct timespec until = cv_deadline(grace_ms);
        while (r->submitted &&
               pthread_cond_timedwait(&r->cv, &r->mu, &until) == 0)
            ;
        if (r->submitted && r->db) {
            /* a Postgres that does not answer: its rows stay unwritten and
             * their messages are consumed again by the next owner */
            WH_WARN("recorder: a write is still running after %lld ms; "
                    "interrupting its connection", (long long)grace_ms);
            wh_db_interrupt(r->db);
        }
        pthread_mutex_unlock(&r->mu);
        pthread_join(r->thread, NULL);
    }
    wh_db_close(r->db);
    batch_free(&r->b[0]);
    batch_free(&r->b[1]);
    wk_rows_cleanup(&r->minimal);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    if (r->efd >= 0)
        close(r->efd);
    free(r);
}

int wk_recorder_fd(const wk_recorder *r) { return r->efd; }

static void add_waiter(wk_recorder *r, wk_recorded_fn *fn, void *opaque,
                       void *arg)
{
    if (r->fill->n == 0)
        r->fill->first_us = wh_mono_us();
    r->fill->waiters[r->fill->n++] = (waiter){fn, opaque, arg};
}

void wk_recorder_forget(wk_recorder *r, void *arg)
{
    for (size_t k = 0; k < 2; k++)
        for (size_t i = 0; i < r->b[k].n; i++)
            if (r->b[k].waiters[i].arg == arg)
                r->b[k].waiters[i].fn = NULL;
}

/* Counts an added row and logs what encoding changed. */
static void added(wk_recorder *r, unsigned notes, wk_recorded_fn *fn,
                  void *opaque, void *arg)
{
    if (notes & WK_ROWS_CLAMPED) {
        char what[256];
        r->st.rows_clamped++;
        wk_rows_describe(&r->fill->rows, r->fill->rows.nitems - 1, what,
                         sizeof(what));
        WH_WARN("recording %s: a value out of its column's range was "
                "clamped or cut", what);
    }
    add_waiter(r, fn, opaque, arg);
    assert(r->fill->n == r->fill->rows.nitems);
}

/* A row the batch cannot take (full: it holds everything in flight, so
 * this is a bug); the caller leaves its offset uncommitted. */
static int not_added(const char *e)
{
    WH_ERROR("the recorder cannot take a row: %s", e);
    return WH_ERR;
}

int wk_recorder_add_lane(wk_recorder *r, const wk_lane_op *op,
                         wk_recorded_fn *fn, void *opaque, void *arg)
{
    unsigned notes;
    char e[WH_ERRLEN];
    if (wk_rows_add_lane(&r->fill->rows, op, &notes, e, sizeof(e)) != WH_OK)
        return not_added(e);
    added(r, notes, fn, opaque, arg);
    return WH_OK;
}

int wk_recorder_add_event(wk_recorder *r, const wk_event_row *ev,
                          wk_recorded_fn *fn, void *opaque, void *arg)
{
    unsigned notes;
    char e[WH_ERRLEN];
    if (wk_rows_add_event(&r->fill->rows, ev, &notes, e, sizeof(e)) != WH_OK)
        return not_added(e);
    added(r, notes, fn, opaque, arg);
    return WH_OK;
}

int wk_recorder_add(wk_recorder *r, const wk_attempt *a, wk_recorded_fn *fn,
                    void *opaque, void *arg)
{
    unsigned notes;
    char e[WH_ERRLEN];
    assert(!a->next_attempt_at_us || a->epoch > 0);
    if (wk_rows_add_attempt(&r->fill->rows, a, r->ctx->worker_id, &notes, e,
                            sizeof(e)) != WH_OK)
        return not_added(e);
    added(r, notes, fn, opaque, arg);
    return WH_OK;
}

int64_t wk_recorder_due_ms(const wk_recorder *r)
{
    if (r->state == HANDED_RUNNING)
        return atomic_load(&r->done) ? 0 : -1; /* the eventfd wakes us */
    int64_t now = wh_mono_us();
    if (r->state == HANDED_FAILED)
        return r->retry_at_us > now ? (r->retry_at_us - now) / 1000 + 1 : 0;
    if (r->fill->n == 0)
        return -1;
    if (r->fill->n >= (size_t)r->ctx->s->record_batch)
        return 0;
    int64_t due = r->fill->first_us + r->ctx->s->record_flush_ms * 1000 - now;
    return due <= 0 ? 0 : due / 1000 + 1;
}

size_t wk_recorder_pending(const wk_recorder *r)
{
    return r->fill->n + (r->state != HANDED_NONE ? r->handed->n : 0);
}

void wk_recorder_counts(const wk_recorder *r, wk_recorder_stats *st)
{
    *st = r->st;
    st->pending = wk_recorder_pending(r);
    /* the handed batch was filled first */
    st->oldest_pending_us = r->state != HANDED_NONE && r->handed->n > 0
                                ? r->handed->first_us
                            : r->fill->n > 0 ? r->fill->first_us
                                             : 0;
}

/* ---- the writer thread ---------------------------------------------------
 * Everything below up to the next section runs on the recorder's thread,
 * on its own connection, reading only the handed batch and settings. */

/* Share-locks the deliveries topic's ownership rows for the rest of the
 * transaction: an owner change (deliver.c, on assignment) waits for it, so
 * the new owner loads lane state only after these writes. */
static int fence(wk_recorder *r, char *e, size_t elen)
{
    const char *p[1] = {r->ctx->s->deliveries_topic};
    wh_db_result *res = NULL;
    if (wh_db_query(r->db,
                    "SELECT partition FROM webhooks.lane_owners "
                    "WHERE topic = $1 FOR SHARE",
                    1, p, &res, e, elen) != WH_OK)
        return WH_ERR;
    wh_db_result_free(res);
    return WH_OK;
}

/* Drops the staged rows whose (partition, epoch) no longer owns the
 * partition. */
static int fenced_delete(wk_recorder *r, const char *table, const char *col,
                         char *e, size_t elen)
{
    char sql[512];
    const char *p[1] = {r->ctx->s->deliveries_topic};
    wh_db_result *res = NULL;
    snprintf(sql, sizeof(sql),
             "DELETE FROM %s s WHERE NOT EXISTS (SELECT 1 FROM "
             "webhooks.lane_owners o WHERE o.topic = $1 AND "
             "o.partition = s.%s AND o.epoch = s.epoch)", table, col);
    if (wh_db_query(r->db, sql, 1, p, &res, e, elen) != WH_OK)
        return WH_ERR;
    long dropped = wh_db_affected(res);
    wh_db_result_free(res);
    if (dropped > 0)
        WH_INFO("dropped %ld %s rows of partitions this worker no longer "
                "owns", dropped, table);
    return WH_OK;
}

/* COPYs the rows of items [lo, hi) of w in table t with copy_sql, in
 * chunks. */
static int copy_span(wk_recorder *r, const wk_rows *w, wk_table t,
                     size_t lo, size_t hi, const char *copy_sql, char *e,
                     size_t elen)
{
    const char *data;
    size_t len, rows;
    wk_rows_span(w, t, lo, hi, &data, &len, &rows);
    if (wh_db_copy_begin(r->db, copy_sql, e, elen) != WH_OK)
        return WH_ERR;
    for (size_t off = 0; off < len; off += COPY_CHUNK) {
        size_t n = len - off < COPY_CHUNK ? len - off : COPY_CHUNK;
        if (wh_db_copy_put(r->db, data + off, n, e, elen) != WH_OK)
            return WH_ERR;
    }
    return wh_db_copy_end(r->db, e, elen);
}

static size_t span_rows(const wk_rows *w, wk_table t, size_t lo, size_t hi)
{
    const char *data;
    size_t len, rows;
    wk_rows_span(w, t, lo, hi, &data, &len, &rows);
    return rows;
}

/* Applies the staged lane changes: each lane's (partition and endpoint)
 * last block or unblock sets its head, parks create the lane if needed
 * and insert in order (a delivery parked twice keeps its first place),
 * then unparks delete. */
static int write_lanes(wk_recorder *r, const wk_rows *w, size_t lo,
                       size_t hi, char *e, size_t elen)
{
    wh_db *db = r->db;
    if (wh_db_exec(db,
                   "CREATE TEMP TABLE IF NOT EXISTS lane_stage (seq integer, "
                   "op \"char\", endpoint_id text, partition integer, "
                   "epoch bigint, delivery_id text, attempt integer, "
                   "position bigint, delivery bytea) ON COMMIT DELETE ROWS",
                   e, elen) != WH_OK ||
        copy_span(r, w, WK_T_LANES, lo, hi, "COPY lane_stage FROM STDIN", e,
                  elen) != WH_OK ||
        fenced_delete(r, "lane_stage", "partition", e, elen) != WH_OK)
        return WH_ERR;
    /* hand-offs: the partitions' next owners check below these (their
     * own table: an UPDATE of lane_owners here would wait for the share
     * locks another worker's fence holds, while it waits for ours) */
    const char *p[1] = {r->ctx->s->deliveries_topic};
    wh_db_result *res = NULL;
    if (wh_db_query(db,
                    "INSERT INTO webhooks.lane_handoffs AS h (topic, "
                    "partition, epoch, handed_to) "
                    "SELECT DISTINCT ON (partition) $1, partition, epoch, "
                    "position FROM lane_stage WHERE op = 'h' "
                    "ORDER BY partition, seq DESC "
                    "ON CONFLICT (topic, partition) DO UPDATE SET "
                    "epoch = EXCLUDED.epoch, handed_to = EXCLUDED.handed_to, "
                    "handed_at = now()",
                    1, p, &res, e, elen) != WH_OK)
        return WH_ERR;
    wh_db_result_free(res);
    return wh_db_exec(
        db,
        "INSERT INTO webhooks.lanes AS l (partition, endpoint_id, "
        "head_delivery_id, head_attempt) "
        "SELECT DISTINCT ON (partition, endpoint_id) partition, endpoint_id, "
        "CASE WHEN op = 'b' THEN delivery_id END, "
        "CASE WHEN op = 'b' THEN attempt END "
        "FROM lane_stage WHERE op IN ('b', 'u') "
        "ORDER BY partition, endpoint_id, seq DESC "
        "ON CONFLICT (partition, endpoint_id) DO UPDATE SET "
        "head_delivery_id = EXCLUDED.head_delivery_id, "
        "head_attempt = EXCLUDED.head_attempt, updated_at = now(), "
        "blocked_at = CASE WHEN l.head_delivery_id IS NULL AND "
        "EXCLUDED.head_delivery_id IS NOT NULL THEN now() "
        "ELSE l.blocked_at END;"
        "INSERT INTO webhooks.lanes (partition, endpoint_id) "
        "SELECT DISTINCT ON (partition, endpoint_id) partition, endpoint_id "
        "FROM lane_stage WHERE op = 'p' ORDER BY partition, endpoint_id, seq "
        "ON CONFLICT (partition, endpoint_id) DO NOTHING;"
        "INSERT INTO webhooks.parked (partition, endpoint_id, position, "
        "delivery_id, delivery) "
        "SELECT partition, endpoint_id, position, delivery_id, delivery "
        "FROM lane_stage WHERE op = 'p' ORDER BY seq "
        "ON CONFLICT (partition, endpoint_id, delivery_id) DO NOTHING;"
        "DELETE FROM webhooks.parked p USING lane_stage s "
        "WHERE s.op = 'd' AND p.partition = s.partition "
        "AND p.endpoint_id = s.endpoint_id "
        "AND p.delivery_id = s.delivery_id",
        e, elen);
}

/* The outcome of one transaction. */
enum { TX_OK, TX_TRANSIENT, TX_DATA };

/* A SQLSTATE the rows themselves cause: data exceptions (22), integrity
 * violations (23) and program limits such as an index row too large (54).
 * Everything else (connection 08, cancel or timeout 57, serialization
 * and deadlock 40, resources 53, none at all) is worth retrying. */
static bool data_error(const char *state)
{
    return (state[0] == '2' && (state[1] == '2' || state[1] == '3')) ||
           (state[0] == '5' && state[1] == '4');
}

/* Writes items [lo, hi) of w in one transaction on the thread's
 * connection, (re)connecting first when needed. After a data error the
 * transaction is rolled back and the connection kept (*state gets the
 * SQLSTATE); after any other failure the connection is reset so the next
 * try starts clean. */
static int write_tx(wk_recorder *r, const wk_rows *w, size_t lo, size_t hi,
                    char *state, char *e, size_t elen)
{
    state[0] = '\0';
    if (!r->db) {
        wh_db *db;
        if (wh_db_connect(r->ctx->s->database_url, &db, e, elen) != WH_OK)
            return TX_TRANSIENT;
        pthread_mutex_lock(&r->mu); /* destroy may interrupt it */
        r->db = db;
        pthread_mutex_unlock(&r->mu);
    } else if (!wh_db_alive(r->db) &&
               wh_db_reconnect(r->db, e, elen) != WH_OK) {
        return TX_TRANSIENT;
    }
    wh_db *db = r->db;
    size_t nevents = span_rows(w, WK_T_EVENTS, lo, hi),
           nattempts = span_rows(w, WK_T_ATTEMPTS, lo, hi),
           nretries = span_rows(w, WK_T_RETRIES, lo, hi),
           nlanes = span_rows(w, WK_T_LANES, lo, hi);
    if (wh_db_exec(db, "BEGIN", e, elen) != WH_OK)
        goto fail;
    if (nevents > 0 &&
        copy_span(r, w, WK_T_EVENTS, lo, hi,
                  "COPY webhooks.events (app, event_id, event_type, "
                  "event, received_at) FROM STDIN",
                  e, elen) != WH_OK)
        goto fail;
    if (nattempts > 0 &&
        copy_span(r, w, WK_T_ATTEMPTS, lo, hi,
                  "COPY webhooks.attempts (delivery_id, event_id, "
                  "endpoint_id, app, event_type, attempt, outcome, "
                  "status_code, latency_ms, error_class, error, "
                  "response_snippet, worker, attempted_at, "
                  "next_attempt_at, final) FROM STDIN",
                  e, elen) != WH_OK)
        goto fail;
    if ((nretries > 0 || nlanes > 0) && fence(r, e, elen) != WH_OK)
        goto fail;
    if (nretries > 0 &&
        (wh_db_exec(db,
                    "CREATE TEMP TABLE IF NOT EXISTS retries_stage "
                    "(LIKE webhooks.retries INCLUDING DEFAULTS, "
                    "part integer, epoch bigint) ON COMMIT DELETE ROWS",
                    e, elen) != WH_OK ||
         copy_span(r, w, WK_T_RETRIES, lo, hi,
                   "COPY retries_stage (delivery_id, endpoint_id, app, "
                   "event_id, attempt, due_at, delivery, last_error, "
                   "last_status, part, epoch) FROM STDIN",
                   e, elen) != WH_OK ||
         fenced_delete(r, "retries_stage", "part", e, elen) != WH_OK ||
         /* the newest attempt of a delivery wins; a redelivered older
          * attempt never moves its retry back. partition: the lane's,
          * where the scheduler sends the retry back to */
         wh_db_exec(db,
                    "INSERT INTO webhooks.retries (delivery_id, endpoint_id, "
                    "app, event_id, attempt, due_at, delivery, last_error, "
                    "last_status, partition) SELECT DISTINCT ON "
                    "(delivery_id) delivery_id, endpoint_id, app, event_id, "
                    "attempt, due_at, delivery, last_error, last_status, "
                    "part FROM retries_stage "
                    "ORDER BY delivery_id, attempt DESC "
                    "ON CONFLICT (delivery_id) DO UPDATE SET "
                    "attempt = EXCLUDED.attempt, due_at = EXCLUDED.due_at, "
                    "delivery = EXCLUDED.delivery, "
                    "last_error = EXCLUDED.last_error, "
                    "last_status = EXCLUDED.last_status, "
                    "partition = EXCLUDED.partition "
                    "WHERE EXCLUDED.attempt >= webhooks.retries.attempt",
                    e, elen) != WH_OK))
        goto fail;
    if (nlanes > 0 && write_lanes(r, w, lo, hi, e, elen) != WH_OK)
        goto fail;
    if (wh_db_exec(db, "COMMIT", e, elen) != WH_OK)
        goto fail;
    return TX_OK;
fail:;
    char e2[WH_ERRLEN];
    wh_strlcpy(state, wh_db_sqlstate(db), 6);
    if (data_error(state) && wh_db_alive(db) &&
        wh_db_exec(db, "ROLLBACK", e2, sizeof(e2)) == WH_OK)
        return TX_DATA;
    /* start the retry on a clean connection */
    WH_IGNORE(wh_db_reconnect(db, e2, sizeof(e2)));
    return TX_TRANSIENT;
}

/* Writes items [lo, hi) of b, isolating refused rows: on a data error
 * the range is split in halves written in order; a single refused item is
 * written in its minimal form, or dropped. Moves b->done past what is
 * settled. WH_ERR on a transient failure (b->done says where to resume). */
static int write_range(wk_recorder *r, batch *b, size_t lo, size_t hi,
                       char *e, size_t elen)
{
    char state[6];
    if (lo == hi)
        return WH_OK;
    int tx = write_tx(r, &b->rows, lo, hi, state, e, elen);
    if (tx == TX_TRANSIENT)
        return WH_ERR;
    if (tx == TX_OK) {
        b->done = hi;
        return WH_OK;
    }
    if (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        b->splits++;
        return write_range(r, b, lo, mid, e, elen) == WH_OK
                   ? write_range(r, b, mid, hi, e, elen)
                   : WH_ERR;
    }
    char what[256], reason[128], refused[WH_ERRLEN], me[WH_ERRLEN];
    char first[6];
    wh_strlcpy(first, state, sizeof(first));
    wk_rows_describe(&b->rows, lo, what, sizeof(what));
    wh_strlcpy(refused, e, sizeof(refused));
    snprintf(reason, sizeof(reason), "row refused by Postgres: SQLSTATE %s",
             state);
    int rc = wk_rows_minimal(&b->rows, lo, reason, &r->minimal, me,
                             sizeof(me));
    if (rc == WH_OK) {
        tx = write_tx(r, &r->minimal, 0, 1, state, e, elen);
        if (tx == TX_TRANSIENT)
            return WH_ERR;
        if (tx == TX_OK) {
            b->isolated++;
            b->done = hi;
            WH_WARN("recording %s: Postgres refused the row (SQLSTATE %s), "
                    "wrote it without its response and error texts; it "
                    "said: %s", what, first, refused);
            return WH_OK;
        }
        wh_strlcpy(refused, e, sizeof(refused));
    }
    b->dropped++;
    b->done = hi;
    WH_ERROR("recording %s: dropped it, Postgres refused the row%s "
             "(SQLSTATE %s); it said: %s", what,
             rc == WH_OK ? " also in its minimal form" : "", state, refused);
    return WH_OK;
}

static void *writer(void *arg)
{
    wk_recorder *r = arg;
    char e[WH_ERRLEN];
    pthread_mutex_lock(&r->mu);
    for (;;) {
        while (!r->submitted && !r->quit)
            pthread_cond_wait(&r->cv, &r->mu);
        if (!r->submitted)
            break;
        pthread_mutex_unlock(&r->mu);
        e[0] = '\0';
        batch *b = r->handed;
        int rc = write_range(r, b, b->done, b->n, e, sizeof(e));
        pthread_mutex_lock(&r->mu);
        r->result = rc;
        wh_strlcpy(r->result_err, e, sizeof(r->result_err));
        r->submitted = false;
        atomic_store(&r->done, true);
        pthread_cond_broadcast(&r->cv);
        uint64_t one = 1;
        WH_IGNORE(write(r->efd, &one, sizeof(one)) < 0);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* ---- main thread: handing over and collecting ----------------------------- */

static void submit(wk_recorder *r)
{
    pthread_mutex_lock(&r->mu);
    atomic_store(&r->done, false);
    r->submitted = true;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    r->state = HANDED_RUNNING;
}

/* Settles a handed batch the thread finished: runs its waiters when it
 * committed, or schedules another try. First waits up to wait_ms for the
 * thread. Returns WH_AGAIN while the batch is still being written. */
static int collect(wk_recorder *r, int64_t wait_ms, char *err,
                   size_t errlen)
{
    if (r->state != HANDED_RUNNING)
        return WH_OK;
    pthread_mutex_lock(&r->mu);
    if (wait_ms > 0) {
        struct timespec until = cv_deadline(wait_ms);
        while (!atomic_load(&r->done) &&
               pthread_cond_timedwait(&r->cv, &r->mu, &until) == 0)
            ;
    }
    bool done = atomic_load(&r->done);
    int rc = r->result;
    char e[WH_ERRLEN];
    wh_strlcpy(e, r->result_err, sizeof(e));
    pthread_mutex_unlock(&r->mu);
    if (!done)
        return WH_AGAIN;
    uint64_t n;
    WH_IGNORE(read(r->efd, &n, sizeof(n)) < 0);
    batch *b = r->handed;
    if (rc != WH_OK) {
        r->st.failures++;
        r->state = HANDED_FAILED;
        r->backoff_ms = r->backoff_ms ? r->backoff_ms * 2 : 100;
        if (r->backoff_ms > 5000)
            r->backoff_ms = 5000;
        r->retry_at_us = wh_mono_us() + r->backoff_ms * 1000;
        return wh_errf(err, errlen, "recording %zu attempts failed (retrying "
                       "in %lld ms): %s", b->n, (long long)r->backoff_ms, e);
    }
    r->backoff_ms = 0;
    r->st.commits++;
    r->st.last_commit_us = wh_mono_us();
    r->st.splits += b->splits;
    r->st.rows_isolated += b->isolated;
    r->st.rows_dropped += b->dropped;
    r->in_callbacks = true;
    for (size_t i = 0; i < b->n; i++)
        if (b->waiters[i].fn)
            b->waiters[i].fn(b->waiters[i].opaque, b->waiters[i].arg);
    r->in_callbacks = false;
    batch_reset(b);
    r->state = HANDED_NONE;
    return WH_OK;
}

/* Hands the filled batch to the thread (the handed one must be settled). */
static void hand_over(wk_recorder *r)
{
    assert(r->state == HANDED_NONE);
    batch *t = r->handed;
    r->handed = r->fill;
    r->fill = t;
    submit(r);
}

int wk_recorder_flush(wk_recorder *r, char *err, size_t errlen)
{
    if (r->in_callbacks)
        return WH_OK; /* the caller's loop comes back */
    int rc = collect(r, 0, err, errlen);
    if (rc == WH_ERR)
        return WH_ERR;
    if (r->state == HANDED_RUNNING)
        return WH_OK;
    if (r->state == HANDED_FAILED) {
        if (r->retry_at_us > wh_mono_us())
            return WH_AGAIN;
        submit(r); /* the same batch again */
        return WH_OK;
    }
    if (r->fill->n > 0)
        hand_over(r);
    return WH_OK;
}

int wk_recorder_sync(wk_recorder *r, int64_t timeout_ms, char *err,
                     size_t errlen)
{
    if (r->in_callbacks)
        return wh_errf(err, errlen, "the recorder is running callbacks");
    int64_t until_us = wh_mono_us() + timeout_ms * 1000;
    for (;;) {
        int64_t left_ms = (until_us - wh_mono_us() + 999) / 1000;
        int rc = collect(r, left_ms > 0 ? left_ms : 0, err, errlen);
        if (rc == WH_AGAIN)
            return wh_errf(err, errlen, "Postgres did not commit the "
                           "recorder's rows within %lld ms",
                           (long long)timeout_ms);
        if (rc != WH_OK)
            return WH_ERR;
        if (r->state == HANDED_FAILED) {
            if (r->retry_at_us > wh_mono_us())
                return wh_errf(err, errlen, "recording is backing off "
                               "after a failure");
            submit(r);
            continue;
        }
        if (r->fill->n == 0)
            return WH_OK;
        hand_over(r);
    }
}
