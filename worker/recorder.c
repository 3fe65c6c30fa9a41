/*
 * recorder.c - batches the rows both stages make durable before their
 * offsets move: events (webhooks.events, for replay), attempts
 * (webhooks.attempts) and the retries those attempts scheduled
 * (webhooks.retries), and the changes to ordered lanes (webhooks.lanes,
 * webhooks.parked), written with one COPY per table in one transaction
 * (see worker.h). Retry and lane rows pass the ownership fence: only those
 * whose (partition, epoch) still owns its deliveries-topic partition in
 * webhooks.lane_owners are applied, under a share lock on those rows so an
 * owner change waits for the transaction. Rows are encoded when added, so a
 * flush is one round of PQputCopyData calls per table. A failed flush
 * keeps the batch and retries after a backoff with a fresh connection;
 * nothing is reported durable until the transaction committed.
 *
 * The transaction runs on the recorder's own thread and connection, so
 * the main loop goes on delivering while Postgres writes and commits.
 * Two batches alternate: the main thread fills one while the thread
 * writes the other; a full or due batch is handed over once the previous
 * one committed, so batches commit in the order they were filled. The
 * thread only writes; encoding rows, running the waiters and every other
 * call happen on the main thread, which the thread wakes through an
 * eventfd when a batch is done.
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

/* The rows of one transaction and who waits for them. */
typedef struct {
    wh_buf rows;           /* attempts */
    size_t nattempts;
    wh_buf retries;        /* COPY rows for the staging table */
    size_t nretries;
    wh_buf events;
    size_t nevents;
    wh_buf lanes;          /* COPY rows for lane_stage */
    size_t nlanes;
    waiter *waiters;
    size_t n;
    int64_t first_us;      /* when its oldest row was added */
} batch;

/* What became of the batch handed to the thread. */
enum { HANDED_NONE, HANDED_RUNNING, HANDED_FAILED };

struct wk_recorder {
    wk_ctx *ctx;
    batch b[2];
    batch *fill;           /* main thread adds here */
    batch *handed;         /* the thread's, while state != HANDED_NONE */
    int state;             /* HANDED_*; main thread only */
    size_t cap;            /* waiters per batch */
    int64_t retry_at_us;   /* backoff after a failed write */
    int64_t backoff_ms;
    wk_recorder_stats st;  /* counters; pending and times filled on read */
    bool in_callbacks;     /* running the waiters of a written batch */
    char *line;            /* scratch for one encoded row */
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
};

#define LINE_MAX (8 * 1024)

static void *writer(void *arg);

static int batch_init(batch *b, size_t cap)
{
    wh_buf_init(&b->rows, cap * LINE_MAX);
    /* retries and events carry protobuf as hex: bounded by what is in
     * flight */
    wh_buf_init(&b->retries, SIZE_MAX / 4);
    wh_buf_init(&b->events, SIZE_MAX / 4);
    wh_buf_init(&b->lanes, SIZE_MAX / 4);
    b->waiters = calloc(cap, sizeof(*b->waiters));
    return b->waiters ? WH_OK : WH_ERR;
}

static void batch_free(batch *b)
{
    wh_buf_free(&b->rows);
    wh_buf_free(&b->retries);
    wh_buf_free(&b->events);
    wh_buf_free(&b->lanes);
    free(b->waiters);
}

static void batch_reset(batch *b)
{
    b->n = b->nattempts = b->nretries = b->nevents = b->nlanes = 0;
    wh_buf_reset(&b->lanes);
    wh_buf_reset(&b->rows);
    wh_buf_reset(&b->retries);
    wh_buf_reset(&b->events);
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
    pthread_cond_init(&r->cv, NULL);
    atomic_init(&r->done, false);
    r->line = malloc(LINE_MAX);
    r->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (!r->line || r->efd < 0 || batch_init(&r->b[0], r->cap) != WH_OK ||
        batch_init(&r->b[1], r->cap) != WH_OK) {
        wk_recorder_destroy(r);
        return NULL;
    }
    if (pthread_create(&r->thread, NULL, writer, r) != 0) {
        wk_recorder_destroy(r);
        return NULL;
    }
    r->started = true;
    return r;
}

void wk_recorder_destroy(wk_recorder *r)
{
    if (!r)
        return;
    if (r->started) {
        pthread_mutex_lock(&r->mu);
        r->quit = true;
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
        pthread_join(r->thread, NULL);
    }
    wh_db_close(r->db);
    batch_free(&r->b[0]);
    batch_free(&r->b[1]);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    if (r->efd >= 0)
        close(r->efd);
    free(r->line);
    free(r);
}

int wk_recorder_fd(const wk_recorder *r) { return r->efd; }

/* Copies s into dst as valid UTF-8 without NULs (invalid bytes become
 * '?'), since one bad byte would make Postgres reject the whole COPY. */
static size_t utf8_clean(char *dst, const char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3
                                 : (c >> 3) == 30 ? 4 : 0;
        int ok = len > 0 && i + len <= n && c != 0;
        for (size_t k = 1; ok && k < len; k++)
            ok = ((unsigned char)s[i + k] >> 6) == 2;
        if (ok && len == 2 && c < 0xc2)
            ok = 0;
        if (ok) {
            memcpy(dst + o, s + i, len);
            o += len;
            i += len;
        } else {
            dst[o++] = '?';
            i++;
        }
    }
    return o;
}

static int put_text(char *line, size_t *pos, const char *s, size_t n)
{
    if (!s)
        return *pos + 3 < LINE_MAX
                   ? (memcpy(line + *pos, "\\N\t", 3), *pos += 3, WH_OK)
                   : WH_ERR;
    char clean[WH_HTTP_SNIPPET_MAX + 512];
    if (n > sizeof(clean))
        n = sizeof(clean);
    size_t cn = utf8_clean(clean, s, n);
    if (wh_db_copy_escape(line, LINE_MAX, pos, clean, cn) != WH_OK ||
        *pos + 1 >= LINE_MAX)
        return WH_ERR;
    line[(*pos)++] = '\t';
    return WH_OK;
}

/* Formats a wall-clock time for COPY; INT64_MAX is 'infinity'. */
static void format_ts(int64_t us, char *ts, size_t cap)
{
    if (us == INT64_MAX) {
        wh_strlcpy(ts, "infinity", cap);
        return;
    }
    time_t secs = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t tl = strftime(ts, cap, "%Y-%m-%d %H:%M:%S", &tm);
    snprintf(ts + tl, cap - tl, ".%06lld+00", (long long)(us % 1000000));
}

/* Appends bytes as a COPY text bytea value (\\x + hex). */
static int put_bytea(wh_buf *b, const void *data, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = data;
    char chunk[512];
    if (wh_buf_add(b, "\\\\x", 3))
        return WH_ERR;
    for (size_t i = 0; i < len;) {
        size_t n = 0;
        for (; i < len && n + 2 <= sizeof(chunk); i++) {
            chunk[n++] = hex[p[i] >> 4];
            chunk[n++] = hex[p[i] & 15];
        }
        if (wh_buf_add(b, chunk, n))
            return WH_ERR;
    }
    return WH_OK;
}

/* Appends the staging row of a's retry: delivery_id, endpoint_id, app,
 * event_id, attempt, due_at, delivery (bytea hex), last_error,
 * last_status, part, epoch. */
static int add_retry(wk_recorder *r, const wk_attempt *a)
{
    char ts[64], head[WH_ID_MAX * 4 + 256], tail[600];
    size_t hp = 0, tp = 0;
    format_ts(a->next_attempt_at_us, ts, sizeof(ts));
    char num[16];
    snprintf(num, sizeof(num), "%u", a->retry_attempt);
    if (put_text(head, &hp, a->delivery_id, strlen(a->delivery_id)) ||
        put_text(head, &hp, a->endpoint_id, strlen(a->endpoint_id)) ||
        put_text(head, &hp, a->app, strlen(a->app)) ||
        put_text(head, &hp, a->event_id, strlen(a->event_id)) ||
        put_text(head, &hp, num, strlen(num)) ||
        put_text(head, &hp, ts, strlen(ts)))
        return WH_ERR;
    tail[tp++] = '\t';
    if (put_text(tail, &tp, a->error, a->error ? strlen(a->error) : 0))
        return WH_ERR;
    snprintf(num, sizeof(num), "%d", a->status_code);
    if (put_text(tail, &tp, a->status_code ? num : NULL, strlen(num)))
        return WH_ERR;
    tp += (size_t)snprintf(tail + tp, sizeof(tail) - tp, "%d\t%lld\n",
                           (int)a->partition, (long long)a->epoch);
    if (wh_buf_add(&r->fill->retries, head, hp) ||
        put_bytea(&r->fill->retries, a->retry_delivery, a->retry_len) ||
        wh_buf_add(&r->fill->retries, tail, tp))
        return WH_ERR;
    r->fill->nretries++;
    return WH_OK;
}

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

int wk_recorder_add_lane(wk_recorder *r, const wk_lane_op *op,
                         wk_recorded_fn *fn, void *opaque, void *arg)
{
    static const char ops[] = {[WK_LANE_BLOCK] = 'b', [WK_LANE_UNBLOCK] = 'u',
                               [WK_LANE_PARK] = 'p', [WK_LANE_UNPARK] = 'd'};
    char head[WH_ID_MAX * 2 + 160];
    size_t hp = 0, before = r->fill->lanes.len;
    if (r->fill->n == r->cap)
        return WH_ERR;
    int n = snprintf(head, sizeof(head), "%zu\t%c\t", r->fill->nlanes,
                     ops[op->op]);
    hp = (size_t)n;
    if (put_text(head, &hp, op->endpoint_id, strlen(op->endpoint_id)))
        return WH_ERR;
    n = snprintf(head + hp, sizeof(head) - hp, "%d\t%lld\t",
                 (int)op->partition, (long long)op->epoch);
    hp += (size_t)n;
    if (put_text(head, &hp, op->delivery_id, strlen(op->delivery_id)))
        return WH_ERR;
    n = snprintf(head + hp, sizeof(head) - hp, "%u\t%lld\t", op->attempt,
                 (long long)op->position);
    hp += (size_t)n;
    if (wh_buf_add(&r->fill->lanes, head, hp) ||
        (op->op == WK_LANE_PARK
             ? put_bytea(&r->fill->lanes, op->delivery, op->delivery_len)
             : wh_buf_add(&r->fill->lanes, "\\N", 2)) ||
        wh_buf_add(&r->fill->lanes, "\n", 1)) {
        r->fill->lanes.len = before;
        return WH_ERR;
    }
    r->fill->nlanes++;
    add_waiter(r, fn, opaque, arg);
    return WH_OK;
}

int wk_recorder_add_event(wk_recorder *r, const wk_event_row *e,
                          wk_recorded_fn *fn, void *opaque, void *arg)
{
    char head[WH_ID_MAX * 2 + WH_TYPE_MAX + 64], ts[64];
    size_t hp = 0, before = r->fill->events.len;
    if (r->fill->n == r->cap)
        return WH_ERR;
    format_ts(e->received_at_us, ts, sizeof(ts));
    if (put_text(head, &hp, e->app, strlen(e->app)) ||
        put_text(head, &hp, e->event_id, strlen(e->event_id)) ||
        put_text(head, &hp, e->event_type, strlen(e->event_type)))
        return WH_ERR;
    if (wh_buf_add(&r->fill->events, head, hp) ||
        put_bytea(&r->fill->events, e->event, e->event_len) ||
        wh_buf_addf(&r->fill->events, "\t%s\n", ts)) {
        r->fill->events.len = before;
        return WH_ERR;
    }
    r->fill->nevents++;
    add_waiter(r, fn, opaque, arg);
    return WH_OK;
}

int wk_recorder_add(wk_recorder *r, const wk_attempt *a, wk_recorded_fn *fn,
                    void *opaque, void *arg)
{
    char num[96];
    size_t pos = 0;
    char *l = r->line;
    char ts[64], next[64] = "";
    format_ts(a->attempted_at_us, ts, sizeof(ts));

    if (put_text(l, &pos, a->delivery_id, strlen(a->delivery_id)) ||
        put_text(l, &pos, a->event_id, strlen(a->event_id)) ||
        put_text(l, &pos, a->endpoint_id, strlen(a->endpoint_id)) ||
        put_text(l, &pos, a->app, strlen(a->app)) ||
        put_text(l, &pos, a->event_type, strlen(a->event_type)))
        return WH_ERR;
    snprintf(num, sizeof(num), "%u", a->attempt);
    if (put_text(l, &pos, num, strlen(num)) ||
        put_text(l, &pos, a->succeeded ? "succeeded" : "failed",
                 a->succeeded ? 9 : 6))
        return WH_ERR;
    snprintf(num, sizeof(num), "%d", a->status_code);
    if (put_text(l, &pos, a->status_code ? num : NULL, strlen(num)))
        return WH_ERR;
    snprintf(num, sizeof(num), "%lld", (long long)a->latency_ms);
    if (put_text(l, &pos, num, strlen(num)) ||
        put_text(l, &pos, a->error_class,
                 a->error_class ? strlen(a->error_class) : 0) ||
        put_text(l, &pos, a->error, a->error ? strlen(a->error) : 0) ||
        put_text(l, &pos, a->snippet_len ? a->snippet : NULL,
                 a->snippet_len) ||
        put_text(l, &pos, r->ctx->worker_id, strlen(r->ctx->worker_id)) ||
        put_text(l, &pos, ts, strlen(ts)))
        return WH_ERR;
    if (a->next_attempt_at_us)
        format_ts(a->next_attempt_at_us, next, sizeof(next));
    if (put_text(l, &pos, a->next_attempt_at_us ? next : NULL, strlen(next)) ||
        put_text(l, &pos, a->final ? "t" : "f", 1))
        return WH_ERR;
    l[pos - 1] = '\n';
    if (r->fill->n == r->cap)
        return WH_ERR;
    size_t rows_len = r->fill->rows.len, retries_len = r->fill->retries.len;
    assert(!a->next_attempt_at_us || a->epoch > 0);
    if (wh_buf_add(&r->fill->rows, l, pos) != WH_OK ||
        (a->next_attempt_at_us && add_retry(r, a) != WH_OK)) {
        r->fill->rows.len = rows_len; /* keep the batch consistent */
        r->fill->retries.len = retries_len;
        return WH_ERR;
    }
    r->fill->nattempts++;
    add_waiter(r, fn, opaque, arg);
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

/* Applies the staged lane changes: each endpoint's last block or unblock
 * sets its lane's head, parks create the lane if needed and insert in
 * order (a delivery parked twice keeps its first place), then unparks
 * delete. */
static int write_lanes(wk_recorder *r, const batch *b, char *e, size_t elen)
{
    wh_db *db = r->db;
    if (wh_db_exec(db,
                   "CREATE TEMP TABLE IF NOT EXISTS lane_stage (seq integer, "
                   "op \"char\", endpoint_id text, partition integer, "
                   "epoch bigint, delivery_id text, attempt integer, "
                   "position bigint, delivery bytea) ON COMMIT DELETE ROWS",
                   e, elen) != WH_OK ||
        wh_db_copy_begin(db, "COPY lane_stage FROM STDIN", e, elen) !=
            WH_OK ||
        wh_db_copy_put(db, b->lanes.data, b->lanes.len, e, elen) != WH_OK ||
        wh_db_copy_end(db, e, elen) != WH_OK ||
        fenced_delete(r, "lane_stage", "partition", e, elen) != WH_OK)
        return WH_ERR;
    return wh_db_exec(
        db,
        "INSERT INTO webhooks.lanes AS l (endpoint_id, partition, "
        "head_delivery_id, head_attempt) "
        "SELECT DISTINCT ON (endpoint_id) endpoint_id, partition, "
        "CASE WHEN op = 'b' THEN delivery_id END, "
        "CASE WHEN op = 'b' THEN attempt END "
        "FROM lane_stage WHERE op IN ('b', 'u') ORDER BY endpoint_id, seq DESC "
        "ON CONFLICT (endpoint_id) DO UPDATE SET "
        "partition = EXCLUDED.partition, "
        "head_delivery_id = EXCLUDED.head_delivery_id, "
        "head_attempt = EXCLUDED.head_attempt, updated_at = now(), "
        "blocked_at = CASE WHEN l.head_delivery_id IS NULL AND "
        "EXCLUDED.head_delivery_id IS NOT NULL THEN now() "
        "ELSE l.blocked_at END;"
        "INSERT INTO webhooks.lanes (endpoint_id, partition) "
        "SELECT DISTINCT ON (endpoint_id) endpoint_id, partition "
        "FROM lane_stage WHERE op = 'p' ORDER BY endpoint_id, seq "
        "ON CONFLICT (endpoint_id) DO NOTHING;"
        "INSERT INTO webhooks.parked (endpoint_id, position, delivery_id, "
        "delivery) SELECT endpoint_id, position, delivery_id, delivery "
        "FROM lane_stage WHERE op = 'p' ORDER BY seq "
        "ON CONFLICT (endpoint_id, delivery_id) DO NOTHING;"
        "DELETE FROM webhooks.parked p USING lane_stage s "
        "WHERE s.op = 'd' AND p.endpoint_id = s.endpoint_id "
        "AND p.delivery_id = s.delivery_id",
        e, elen);
}

/* Writes b in one transaction on the thread's connection, (re)connecting
 * first when needed. On failure the connection is reset so the next try
 * starts clean. */
static int write_batch(wk_recorder *r, const batch *b, char *e, size_t elen)
{
    if (!r->db ? wh_db_connect(r->ctx->s->database_url, &r->db, e, elen)
               : !wh_db_alive(r->db) &&
                     wh_db_reconnect(r->db, e, elen) != WH_OK)
        return WH_ERR;
    wh_db *db = r->db;
    if (wh_db_exec(db, "BEGIN", e, elen) != WH_OK)
        goto fail;
    if (b->nevents > 0 &&
        (wh_db_copy_begin(db,
                          "COPY webhooks.events (app, event_id, event_type, "
                          "event, received_at) FROM STDIN",
                          e, elen) != WH_OK ||
         wh_db_copy_put(db, b->events.data, b->events.len, e, elen) !=
             WH_OK ||
         wh_db_copy_end(db, e, elen) != WH_OK))
        goto fail;
    if (b->nattempts > 0 && (wh_db_copy_begin(db,
                         "COPY webhooks.attempts (delivery_id, event_id, "
                         "endpoint_id, app, event_type, attempt, outcome, "
                         "status_code, latency_ms, error_class, error, "
                         "response_snippet, worker, attempted_at, "
                         "next_attempt_at, final) FROM STDIN",
                         e, elen) != WH_OK ||
        wh_db_copy_put(db, b->rows.data, b->rows.len, e, elen) != WH_OK ||
        wh_db_copy_end(db, e, elen) != WH_OK))
        goto fail;
    if ((b->nretries > 0 || b->nlanes > 0) && fence(r, e, elen) != WH_OK)
        goto fail;
    if (b->nretries > 0 &&
        (wh_db_exec(db,
                    "CREATE TEMP TABLE IF NOT EXISTS retries_stage "
                    "(LIKE webhooks.retries INCLUDING DEFAULTS, "
                    "part integer, epoch bigint) ON COMMIT DELETE ROWS",
                    e, elen) != WH_OK ||
         wh_db_copy_begin(db,
                          "COPY retries_stage (delivery_id, endpoint_id, app, "
                          "event_id, attempt, due_at, delivery, last_error, "
                          "last_status, part, epoch) FROM STDIN",
                          e, elen) != WH_OK ||
         wh_db_copy_put(db, b->retries.data, b->retries.len, e, elen) !=
             WH_OK ||
         wh_db_copy_end(db, e, elen) != WH_OK ||
         fenced_delete(r, "retries_stage", "part", e, elen) != WH_OK ||
         /* the newest attempt of a delivery wins; a redelivered older
          * attempt never moves its retry back */
         wh_db_exec(db,
                    "INSERT INTO webhooks.retries (delivery_id, endpoint_id, "
                    "app, event_id, attempt, due_at, delivery, last_error, "
                    "last_status) SELECT DISTINCT ON (delivery_id) "
                    "delivery_id, endpoint_id, app, event_id, attempt, "
                    "due_at, delivery, last_error, last_status "
                    "FROM retries_stage ORDER BY delivery_id, attempt DESC "
                    "ON CONFLICT (delivery_id) DO UPDATE SET "
                    "attempt = EXCLUDED.attempt, due_at = EXCLUDED.due_at, "
                    "delivery = EXCLUDED.delivery, "
                    "last_error = EXCLUDED.last_error, "
                    "last_status = EXCLUDED.last_status "
                    "WHERE EXCLUDED.attempt >= webhooks.retries.attempt",
                    e, elen) != WH_OK))
        goto fail;
    if (b->nlanes > 0 && write_lanes(r, b, e, elen) != WH_OK)
        goto fail;
    if (wh_db_exec(db, "COMMIT", e, elen) != WH_OK)
        goto fail;
    return WH_OK;
fail:;
    char e2[256]; /* start the retry on a clean connection */
    WH_IGNORE(wh_db_reconnect(db, e2, sizeof(e2)));
    return WH_ERR;
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
        int rc = write_batch(r, r->handed, e, sizeof(e));
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
 * committed, or schedules another try. With wait, first waits for the
 * thread. Returns WH_AGAIN while the batch is still being written. */
static int collect(wk_recorder *r, bool wait, char *err, size_t errlen)
{
    if (r->state != HANDED_RUNNING)
        return WH_OK;
    pthread_mutex_lock(&r->mu);
    while (wait && !atomic_load(&r->done))
        pthread_cond_wait(&r->cv, &r->mu);
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
    int rc = collect(r, false, err, errlen);
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

int wk_recorder_sync(wk_recorder *r, char *err, size_t errlen)
{
    if (r->in_callbacks)
        return wh_errf(err, errlen, "the recorder is running callbacks");
    for (;;) {
        if (collect(r, true, err, errlen) != WH_OK)
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
