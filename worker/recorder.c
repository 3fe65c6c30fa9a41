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
 * nothing is reported durable until the transaction committed. Main
 * thread only.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <assert.h>

#include "log.h"
#include "worker.h"

typedef struct {
    wk_recorded_fn *fn;
    void *opaque, *arg;
} waiter;

struct wk_recorder {
    wk_ctx *ctx;
    wh_buf rows;           /* attempts */
    size_t nattempts;
    wh_buf retries;        /* COPY rows for the staging table */
    size_t nretries;
    wh_buf events;
    size_t nevents;
    wh_buf lanes;          /* COPY rows for lane_stage */
    size_t nlanes;
    waiter *waiters;
    size_t n, cap;
    int64_t first_us;      /* when the oldest buffered row was added */
    int64_t retry_at_us;   /* backoff after a failed flush */
    int64_t backoff_ms;
    char *line;            /* scratch for one encoded row */
};

#define LINE_MAX (8 * 1024)

wk_recorder *wk_recorder_new(wk_ctx *ctx)
{
    wk_recorder *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->ctx = ctx;
    /* Everything in flight may be waiting here while Postgres is away; each
     * stage pauses consumption at max_in_flight, plus one poll budget. */
    r->cap = 4 * ((size_t)ctx->s->max_in_flight + 4096);
    r->waiters = calloc(r->cap, sizeof(*r->waiters));
    r->line = malloc(LINE_MAX);
    wh_buf_init(&r->rows, r->cap * LINE_MAX);
    /* retries and events carry protobuf as hex: bounded by what is in
     * flight */
    wh_buf_init(&r->retries, SIZE_MAX / 4);
    wh_buf_init(&r->events, SIZE_MAX / 4);
    wh_buf_init(&r->lanes, SIZE_MAX / 4);
    if (!r->waiters || !r->line) {
        wk_recorder_destroy(r);
        return NULL;
    }
    return r;
}

void wk_recorder_destroy(wk_recorder *r)
{
    if (!r)
        return;
    wh_buf_free(&r->rows);
    wh_buf_free(&r->retries);
    wh_buf_free(&r->events);
    wh_buf_free(&r->lanes);
    free(r->waiters);
    free(r->line);
    free(r);
}

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
    if (wh_buf_add(&r->retries, head, hp) ||
        put_bytea(&r->retries, a->retry_delivery, a->retry_len) ||
        wh_buf_add(&r->retries, tail, tp))
        return WH_ERR;
    r->nretries++;
    return WH_OK;
}

static void add_waiter(wk_recorder *r, wk_recorded_fn *fn, void *opaque,
                       void *arg)
{
    if (r->n == 0)
        r->first_us = wh_mono_us();
    r->waiters[r->n++] = (waiter){fn, opaque, arg};
}

void wk_recorder_forget(wk_recorder *r, void *arg)
{
    for (size_t i = 0; i < r->n; i++)
        if (r->waiters[i].arg == arg)
            r->waiters[i].fn = NULL;
}

int wk_recorder_add_lane(wk_recorder *r, const wk_lane_op *op,
                         wk_recorded_fn *fn, void *opaque, void *arg)
{
    static const char ops[] = {[WK_LANE_BLOCK] = 'b', [WK_LANE_UNBLOCK] = 'u',
                               [WK_LANE_PARK] = 'p', [WK_LANE_UNPARK] = 'd'};
    char head[WH_ID_MAX * 2 + 160];
    size_t hp = 0, before = r->lanes.len;
    if (r->n == r->cap)
        return WH_ERR;
    int n = snprintf(head, sizeof(head), "%zu\t%c\t", r->nlanes,
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
    if (wh_buf_add(&r->lanes, head, hp) ||
        (op->op == WK_LANE_PARK
             ? put_bytea(&r->lanes, op->delivery, op->delivery_len)
             : wh_buf_add(&r->lanes, "\\N", 2)) ||
        wh_buf_add(&r->lanes, "\n", 1)) {
        r->lanes.len = before;
        return WH_ERR;
    }
    r->nlanes++;
    add_waiter(r, fn, opaque, arg);
    return WH_OK;
}

int wk_recorder_add_event(wk_recorder *r, const wk_event_row *e,
                          wk_recorded_fn *fn, void *opaque, void *arg)
{
    char head[WH_ID_MAX * 2 + WH_TYPE_MAX + 64], ts[64];
    size_t hp = 0, before = r->events.len;
    if (r->n == r->cap)
        return WH_ERR;
    format_ts(e->received_at_us, ts, sizeof(ts));
    if (put_text(head, &hp, e->app, strlen(e->app)) ||
        put_text(head, &hp, e->event_id, strlen(e->event_id)) ||
        put_text(head, &hp, e->event_type, strlen(e->event_type)))
        return WH_ERR;
    if (wh_buf_add(&r->events, head, hp) ||
        put_bytea(&r->events, e->event, e->event_len) ||
        wh_buf_addf(&r->events, "\t%s\n", ts)) {
        r->events.len = before;
        return WH_ERR;
    }
    r->nevents++;
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
    if (r->n == r->cap)
        return WH_ERR;
    size_t rows_len = r->rows.len, retries_len = r->retries.len;
    assert(!a->next_attempt_at_us || a->epoch > 0);
    if (wh_buf_add(&r->rows, l, pos) != WH_OK ||
        (a->next_attempt_at_us && add_retry(r, a) != WH_OK)) {
        r->rows.len = rows_len; /* keep the batch consistent */
        r->retries.len = retries_len;
        return WH_ERR;
    }
    r->nattempts++;
    add_waiter(r, fn, opaque, arg);
    return WH_OK;
}

int64_t wk_recorder_due_ms(const wk_recorder *r)
{
    if (r->n == 0)
        return -1;
    int64_t now = wh_mono_us();
    if (r->retry_at_us > now)
        return (r->retry_at_us - now) / 1000 + 1;
    if (r->n >= (size_t)r->ctx->s->record_batch)
        return 0;
    int64_t due = r->first_us + r->ctx->s->record_flush_ms * 1000 - now;
    return due <= 0 ? 0 : due / 1000 + 1;
}

size_t wk_recorder_pending(const wk_recorder *r) { return r->n; }

/* Share-locks the deliveries topic's ownership rows for the rest of the
 * transaction: an owner change (deliver.c, on assignment) waits for it, so
 * the new owner loads lane state only after these writes. */
static int fence(wk_recorder *r, char *e, size_t elen)
{
    const char *p[1] = {r->ctx->s->deliveries_topic};
    wh_db_result *res = NULL;
    if (wh_db_query(r->ctx->db,
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
    if (wh_db_query(r->ctx->db, sql, 1, p, &res, e, elen) != WH_OK)
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
static int write_lanes(wk_recorder *r, char *e, size_t elen)
{
    wh_db *db = r->ctx->db;
    if (wh_db_exec(db,
                   "CREATE TEMP TABLE IF NOT EXISTS lane_stage (seq integer, "
                   "op \"char\", endpoint_id text, partition integer, "
                   "epoch bigint, delivery_id text, attempt integer, "
                   "position bigint, delivery bytea) ON COMMIT DELETE ROWS",
                   e, elen) != WH_OK ||
        wh_db_copy_begin(db, "COPY lane_stage FROM STDIN", e, elen) !=
            WH_OK ||
        wh_db_copy_put(db, r->lanes.data, r->lanes.len, e, elen) != WH_OK ||
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

int wk_recorder_flush(wk_recorder *r, char *err, size_t errlen)
{
    if (r->n == 0)
        return WH_OK;
    int64_t now = wh_mono_us();
    if (r->retry_at_us > now)
        return WH_AGAIN;
    wh_db *db = r->ctx->db;
    char e[512];
    if (!wh_db_alive(db) && wh_db_reconnect(db, e, sizeof(e)) != WH_OK)
        goto fail;
    if (wh_db_exec(db, "BEGIN", e, sizeof(e)) != WH_OK)
        goto fail;
    if (r->nevents > 0 &&
        (wh_db_copy_begin(db,
                          "COPY webhooks.events (app, event_id, event_type, "
                          "event, received_at) FROM STDIN",
                          e, sizeof(e)) != WH_OK ||
         wh_db_copy_put(db, r->events.data, r->events.len, e, sizeof(e)) !=
             WH_OK ||
         wh_db_copy_end(db, e, sizeof(e)) != WH_OK))
        goto fail;
    if (r->nattempts > 0 && (wh_db_copy_begin(db,
                         "COPY webhooks.attempts (delivery_id, event_id, "
                         "endpoint_id, app, event_type, attempt, outcome, "
                         "status_code, latency_ms, error_class, error, "
                         "response_snippet, worker, attempted_at, "
                         "next_attempt_at, final) FROM STDIN",
                         e, sizeof(e)) != WH_OK ||
        wh_db_copy_put(db, r->rows.data, r->rows.len, e, sizeof(e)) != WH_OK ||
        wh_db_copy_end(db, e, sizeof(e)) != WH_OK))
        goto fail;
    if ((r->nretries > 0 || r->nlanes > 0) && fence(r, e, sizeof(e)) != WH_OK)
        goto fail;
    if (r->nretries > 0 &&
        (wh_db_exec(db,
                    "CREATE TEMP TABLE IF NOT EXISTS retries_stage "
                    "(LIKE webhooks.retries INCLUDING DEFAULTS, "
                    "part integer, epoch bigint) ON COMMIT DELETE ROWS",
                    e, sizeof(e)) != WH_OK ||
         wh_db_copy_begin(db,
                          "COPY retries_stage (delivery_id, endpoint_id, app, "
                          "event_id, attempt, due_at, delivery, last_error, "
                          "last_status, part, epoch) FROM STDIN",
                          e, sizeof(e)) != WH_OK ||
         wh_db_copy_put(db, r->retries.data, r->retries.len, e, sizeof(e)) !=
             WH_OK ||
         wh_db_copy_end(db, e, sizeof(e)) != WH_OK ||
         fenced_delete(r, "retries_stage", "part", e, sizeof(e)) != WH_OK ||
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
                    e, sizeof(e)) != WH_OK))
        goto fail;
    if (r->nlanes > 0 && write_lanes(r, e, sizeof(e)) != WH_OK)
        goto fail;
    if (wh_db_exec(db, "COMMIT", e, sizeof(e)) != WH_OK)
        goto fail;
    size_t n = r->n;
    r->n = r->nattempts = r->nretries = r->nevents = r->nlanes = 0;
    wh_buf_reset(&r->lanes);
    wh_buf_reset(&r->rows);
    wh_buf_reset(&r->retries);
    wh_buf_reset(&r->events);
    r->backoff_ms = 0;
    for (size_t i = 0; i < n; i++)
        if (r->waiters[i].fn)
            r->waiters[i].fn(r->waiters[i].opaque, r->waiters[i].arg);
    return WH_OK;
fail:
    r->backoff_ms = r->backoff_ms ? r->backoff_ms * 2 : 100;
    if (r->backoff_ms > 5000)
        r->backoff_ms = 5000;
    r->retry_at_us = wh_mono_us() + r->backoff_ms * 1000;
    char e2[256]; /* start the retry on a clean connection */
    WH_IGNORE(wh_db_reconnect(db, e2, sizeof(e2)));
    return wh_errf(err, errlen, "recording %zu attempts failed (retrying in "
                   "%lld ms): %s", r->n, (long long)r->backoff_ms, e);
}
