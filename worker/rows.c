/*
 * rows.c - the COPY text encoding of the recorder's rows (see rows.h):
 * webhooks.events, webhooks.attempts, the retries staging table and
 * lane_stage. Every text value passes lib/utf8's sanitizer and its bound
 * before it is escaped, every number is clamped to its column's type, so
 * a row Postgres refuses is a bug or a schema change, not an input; the
 * recorder still isolates such rows with wk_rows_minimal. Called by the
 * recorder on its main thread (adding) and its writer thread (reading the
 * batch it holds); no state besides the wk_rows given.
 */
#include "rows.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "db.h"
#include "utf8.h"

#define INT4_MAX INT64_C(2147483647)

int wk_rows_init(wk_rows *w, size_t cap, size_t attempts_max,
                 size_t blobs_max)
{
    memset(w, 0, sizeof(*w));
    for (int t = 0; t < WK_T_COUNT; t++)
        wh_buf_init(&w->t[t], t == WK_T_ATTEMPTS ? attempts_max : blobs_max);
    w->cap = cap;
    w->items = calloc(cap ? cap : 1, sizeof(*w->items));
    return w->items ? WH_OK : WH_ERR;
}

void wk_rows_cleanup(wk_rows *w)
{
    for (int t = 0; t < WK_T_COUNT; t++)
        wh_buf_free(&w->t[t]);
    free(w->items);
    w->items = NULL;
    w->nitems = w->cap = 0;
}

void wk_rows_reset(wk_rows *w)
{
    for (int t = 0; t < WK_T_COUNT; t++) {
        wh_buf_reset(&w->t[t]);
        w->n[t] = 0;
    }
    w->nitems = 0;
}

/* ---- values ----------------------------------------------------------- */

/* Appends s[0..n) sanitized (at most max bytes of it), COPY-escaped, and
 * a tab; NULL is \N. Sets *clamped when the value was cut. */
static int put_text(wh_buf *b, const char *s, size_t n, size_t max,
                    unsigned flags, bool *clamped)
{
    if (!s)
        return wh_buf_add(b, "\\N\t", 3);
    char clean[256], esc[2 * sizeof(clean)];
    size_t i = 0;
    while (i < n && max > 0) {
        size_t used, cap = max < sizeof(clean) - 1 ? max + 1 : sizeof(clean);
        size_t w = wh_utf8_sanitize(clean, cap, s + i, n - i, flags, &used);
        if (w == 0)
            break; /* the next character does not fit in max */
        size_t pos = 0;
        /* each byte escapes to at most 2: esc always has room */
        if (wh_db_copy_escape(esc, sizeof(esc), &pos, clean, w) != WH_OK)
            return WH_ERR;
        if (wh_buf_add(b, esc, pos) != WH_OK)
            return WH_ERR;
        i += used;
        max -= w;
    }
    if (i < n)
        *clamped = true;
    return wh_buf_addc(b, '\t');
}

static int put_str(wh_buf *b, const char *s, size_t max, bool *clamped)
{
    return put_text(b, s, s ? strlen(s) : 0, max, 0, clamped);
}

/* Appends v clamped to [lo, hi] and a tab. */
static int put_int(wh_buf *b, int64_t v, int64_t lo, int64_t hi,
                   bool *clamped)
{
    if (v < lo || v > hi) {
        *clamped = true;
        v = v < lo ? lo : hi;
    }
    return wh_buf_addf(b, "%" PRId64 "\t", v);
}

/* Appends a wall-clock time (us since the epoch) clamped to
 * [0, WK_ROWS_TS_MAX_US], or 'infinity' for INT64_MAX when allowed, and a
 * tab. */
static int put_ts(wh_buf *b, int64_t us, bool infinity_ok, bool *clamped)
{
    if (us == INT64_MAX && infinity_ok)
        return wh_buf_add(b, "infinity\t", 9);
    if (us < 0 || us > WK_ROWS_TS_MAX_US) {
        *clamped = true;
        us = us < 0 ? 0 : WK_ROWS_TS_MAX_US;
    }
    time_t secs = (time_t)(us / 1000000);
    struct tm tm;
    char ts[32];
    if (!gmtime_r(&secs, &tm) ||
        strftime(ts, sizeof(ts), "%Y-%m-%d %H:%M:%S", &tm) == 0)
        return WH_ERR;
    return wh_buf_addf(b, "%s.%06d+00\t", ts, (int)(us % 1000000));
}

/* Appends bytes as a COPY text bytea value (\\x + hex) and a tab. */
static int put_bytea(wh_buf *b, const void *data, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = data;
    void *room;
    if (len > (SIZE_MAX - 4) / 2 ||
        wh_buf_grow(b, 3 + 2 * len + 1, &room) != WH_OK)
        return WH_ERR;
    char *at = room;
    memcpy(at, "\\\\x", 3);
    at += 3;
    for (size_t i = 0; i < len; i++) {
        *at++ = hex[p[i] >> 4];
        *at++ = hex[p[i] & 15];
    }
    *at = '\t';
    return WH_OK;
}

/* Ends the row begun at start: its last tab becomes the newline. */
static void end_row(wh_buf *b, size_t start)
{
    assert(b->len > start && b->data[b->len - 1] == '\t');
    b->data[b->len - 1] = '\n';
}

/* ---- items ------------------------------------------------------------ */

/* Cuts b back to len bytes (wh_buf has no call for it; this keeps its
 * invariant: data NUL-terminated at len). */
static void truncate_to(wh_buf *b, size_t len)
{
    assert(len <= b->len);
    b->len = len;
    if (b->data)
        b->data[len] = '\0';
}

/* Opens an item; rows_undo puts w back if adding it fails. */
static int item_begin(wk_rows *w, char *err, size_t errlen)
{
    if (w->nitems == w->cap)
        return wh_errf(err, errlen, "the batch holds %zu rows already",
                       w->cap);
    wk_rows_mark *m = &w->items[w->nitems];
    for (int t = 0; t < WK_T_COUNT; t++) {
        m->at[t] = w->t[t].len;
        m->before[t] = w->n[t];
    }
    return WH_OK;
}

static int rows_undo(wk_rows *w, const char *what, char *err, size_t errlen)
{
    const wk_rows_mark *m = &w->items[w->nitems];
    for (int t = 0; t < WK_T_COUNT; t++) {
        truncate_to(&w->t[t], m->at[t]);
        w->n[t] = m->before[t];
    }
    return wh_errf(err, errlen, "%s row does not fit in the batch (%s)",
                   what, "buffer bound reached or out of memory");
}

static void item_end(wk_rows *w, bool clamped, unsigned *notes)
{
    w->nitems++;
    if (notes)
        *notes = clamped ? WK_ROWS_CLAMPED : 0;
}

/* The attempt row: delivery_id, event_id, endpoint_id, app, event_type,
 * attempt, outcome, status_code, latency_ms, error_class, error,
 * response_snippet, worker, attempted_at, next_attempt_at, final. */
static int attempt_row(wh_buf *b, const wk_attempt *a, const char *worker,
                       bool *c)
{
    size_t start = b->len;
    size_t sn = a->snippet && a->snippet_len ? a->snippet_len : 0;
    if (put_str(b, a->delivery_id, WK_ROWS_ID_MAX, c) ||
        put_str(b, a->event_id, WK_ROWS_ID_MAX, c) ||
        put_str(b, a->endpoint_id, WK_ROWS_ID_MAX, c) ||
        put_str(b, a->app, WK_ROWS_ID_MAX, c) ||
        put_str(b, a->event_type, WK_ROWS_TYPE_MAX, c) ||
        put_int(b, a->attempt, 1, INT4_MAX, c) ||
        wh_buf_add(b, a->succeeded ? "succeeded\t" : "failed\t",
                   a->succeeded ? 10 : 7) ||
        (a->status_code ? put_int(b, a->status_code, 0, INT4_MAX, c)
                        : wh_buf_add(b, "\\N\t", 3)) ||
        put_int(b, a->latency_ms, 0, INT4_MAX, c) ||
        put_str(b, a->error_class, WK_ROWS_CLASS_MAX, c) ||
        put_str(b, a->error, WK_ROWS_ERROR_MAX, c) ||
        put_text(b, sn ? a->snippet : NULL, sn, WK_ROWS_SNIPPET_MAX,
                 WH_UTF8_KEEP_TAB | WH_UTF8_KEEP_NEWLINE, c) ||
        put_str(b, worker, WK_ROWS_ID_MAX, c) ||
        put_ts(b, a->attempted_at_us, false, c) ||
        (a->next_attempt_at_us ? put_ts(b, a->next_attempt_at_us, true, c)
                               : wh_buf_add(b, "\\N\t", 3)) ||
        wh_buf_add(b, a->final ? "t\t" : "f\t", 2))
        return WH_ERR;
    end_row(b, start);
    return WH_OK;
}

/* The retry staging row: delivery_id, endpoint_id, app, event_id,
 * attempt, due_at, delivery (bytea), last_error, last_status, part,
 * epoch. */
static int retry_row(wh_buf *b, const wk_attempt *a, bool *c)
{
    size_t start = b->len;
    if (put_str(b, a->delivery_id, WK_ROWS_ID_MAX, c) ||
        put_str(b, a->endpoint_id, WK_ROWS_ID_MAX, c) ||
        put_str(b, a->app, WK_ROWS_ID_MAX, c) ||
        put_str(b, a->event_id, WK_ROWS_ID_MAX, c) ||
        put_int(b, a->retry_attempt, 1, INT4_MAX, c) ||
        put_ts(b, a->next_attempt_at_us, true, c) ||
        put_bytea(b, a->retry_delivery, a->retry_len) ||
        put_str(b, a->error, WK_ROWS_ERROR_MAX, c) ||
        (a->status_code ? put_int(b, a->status_code, 0, INT4_MAX, c)
                        : wh_buf_add(b, "\\N\t", 3)) ||
        wh_buf_addf(b, "%" PRId32 "\t%" PRId64 "\t", a->partition,
                    a->epoch))
        return WH_ERR;
    end_row(b, start);
    return WH_OK;
}

int wk_rows_add_attempt(wk_rows *w, const wk_attempt *a, const char *worker,
                        unsigned *notes, char *err, size_t errlen)
{
    bool c = false;
    if (item_begin(w, err, errlen) != WH_OK)
        return WH_ERR;
    if (attempt_row(&w->t[WK_T_ATTEMPTS], a, worker, &c) != WH_OK)
        return rows_undo(w, "the attempt", err, errlen);
    w->n[WK_T_ATTEMPTS]++;
    if (a->next_attempt_at_us) {
        if (retry_row(&w->t[WK_T_RETRIES], a, &c) != WH_OK)
            return rows_undo(w, "the retry", err, errlen);
        w->n[WK_T_RETRIES]++;
    }
    item_end(w, c, notes);
    return WH_OK;
}

/* app, event_id, event_type, event (bytea), received_at */
int wk_rows_add_event(wk_rows *w, const wk_event_row *e, unsigned *notes,
                      char *err, size_t errlen)
{
    bool c = false;
    if (item_begin(w, err, errlen) != WH_OK)
        return WH_ERR;
    wh_buf *b = &w->t[WK_T_EVENTS];
    size_t start = b->len;
    if (put_str(b, e->app, WK_ROWS_ID_MAX, &c) ||
        put_str(b, e->event_id, WK_ROWS_ID_MAX, &c) ||
        put_str(b, e->event_type, WK_ROWS_TYPE_MAX, &c) ||
        put_bytea(b, e->event, e->event_len) ||
        put_ts(b, e->received_at_us, false, &c))
        return rows_undo(w, "the event", err, errlen);
    end_row(b, start);
    w->n[WK_T_EVENTS]++;
    item_end(w, c, notes);
    return WH_OK;
}

/* seq, op, endpoint_id, partition, epoch, delivery_id, attempt, position,
 * delivery (bytea or \N); seq orders the rows of one transaction. */
int wk_rows_add_lane(wk_rows *w, const wk_lane_op *op, unsigned *notes,
                     char *err, size_t errlen)
{
    static const char ops[] = {[WK_LANE_BLOCK] = 'b', [WK_LANE_UNBLOCK] = 'u',
                               [WK_LANE_PARK] = 'p', [WK_LANE_UNPARK] = 'd',
                               [WK_LANE_HANDOFF] = 'h'};
    bool c = false;
    assert((unsigned)op->op < sizeof(ops));
    if (item_begin(w, err, errlen) != WH_OK)
        return WH_ERR;
    wh_buf *b = &w->t[WK_T_LANES];
    size_t start = b->len;
    if (wh_buf_addf(b, "%zu\t%c\t", w->n[WK_T_LANES], ops[op->op]) ||
        put_str(b, op->endpoint_id, WK_ROWS_ID_MAX, &c) ||
        wh_buf_addf(b, "%" PRId32 "\t%" PRId64 "\t", op->partition,
                    op->epoch) ||
        put_str(b, op->delivery_id, WK_ROWS_ID_MAX, &c) ||
        put_int(b, op->attempt, 0, INT4_MAX, &c) ||
        wh_buf_addf(b, "%" PRId64 "\t", op->position) ||
        (op->op == WK_LANE_PARK ? put_bytea(b, op->delivery, op->delivery_len)
                                : wh_buf_add(b, "\\N\t", 3)))
        return rows_undo(w, "the lane", err, errlen);
    end_row(b, start);
    w->n[WK_T_LANES]++;
    item_end(w, c, notes);
    return WH_OK;
}

/* ---- spans, minimal forms --------------------------------------------- */

static size_t mark_at(const wk_rows *w, size_t i, wk_table t)
{
    return i < w->nitems ? w->items[i].at[t] : w->t[t].len;
}

static size_t mark_before(const wk_rows *w, size_t i, wk_table t)
{
    return i < w->nitems ? w->items[i].before[t] : w->n[t];
}

void wk_rows_span(const wk_rows *w, wk_table t, size_t lo, size_t hi,
                  const char **data, size_t *len, size_t *rows)
{
    assert(lo <= hi && hi <= w->nitems);
    size_t a = mark_at(w, lo, t), z = mark_at(w, hi, t);
    *data = w->t[t].data ? w->t[t].data + a : "";
    *len = z - a;
    *rows = mark_before(w, hi, t) - mark_before(w, lo, t);
}

/* The row of item i in table t (without its newline), or NULL. */
static const char *item_row(const wk_rows *w, size_t i, wk_table t,
                            size_t *len)
{
    const char *data;
    size_t rows;
    wk_rows_span(w, t, i, i + 1, &data, len, &rows);
    if (rows != 1)
        return NULL;
    assert(*len > 0 && data[*len - 1] == '\n');
    (*len)--;
    return data;
}

/* Field k of a row (fields are tab-separated; COPY escapes tabs inside
 * values): sets *flen and returns where it starts. */
static const char *field(const char *row, size_t len, int k, size_t *flen)
{
    size_t a = 0;
    for (int f = 0; f < k && a <= len; f++) {
        const char *tab = memchr(row + a, '\t', len - a);
        a = tab ? (size_t)(tab - row) + 1 : len + 1;
    }
    if (a > len) {
        *flen = 0;
        return row + len;
    }
    const char *tab = memchr(row + a, '\t', len - a);
    *flen = tab ? (size_t)(tab - row) - a : len - a;
    return row + a;
}

/* Copies row with the fields listed in repl (ascending, -1 ends) replaced
 * by the given encoded values. */
static int rewrite(wh_buf *b, const char *row, size_t len, const int *which,
                   const char *const *vals)
{
    size_t pos = 0;
    for (int f = 0; pos <= len; f++) {
        size_t flen;
        const char *v = field(row, len, f, &flen);
        pos = (size_t)(v - row) + flen + 1;
        int r = -1;
        for (int k = 0; which[k] >= 0; k++)
            if (which[k] == f)
                r = k;
        if ((r >= 0 ? wh_buf_add(b, vals[r], strlen(vals[r]))
                    : wh_buf_add(b, v, flen)) != WH_OK ||
            wh_buf_addc(b, pos <= len ? '\t' : '\n') != WH_OK)
            return WH_ERR;
    }
    return WH_OK;
}

int wk_rows_minimal(const wk_rows *w, size_t i, const char *reason,
                    wk_rows *out, char *err, size_t errlen)
{
    assert(i < w->nitems);
    size_t alen, rlen;
    const char *arow = item_row(w, i, WK_T_ATTEMPTS, &alen);
    const char *rrow = item_row(w, i, WK_T_RETRIES, &rlen);
    if (!arow)
        return WH_DECLINED;
    wk_rows_reset(out);
    if (item_begin(out, err, errlen) != WH_OK)
        return WH_ERR;
    /* the reason, sanitized and escaped like any error text */
    char clean[WK_ROWS_ERROR_MAX + 1], esc[2 * WK_ROWS_ERROR_MAX + 1];
    size_t elen = 0;
    size_t cl = wh_utf8_sanitize(clean, sizeof(clean), reason, strlen(reason),
                                 0, NULL);
    if (wh_db_copy_escape(esc, sizeof(esc), &elen, clean, cl) != WH_OK)
        return rows_undo(out, "the minimal attempt", err, errlen);
    esc[elen] = '\0';
    static const int afields[] = {7, 8, 10, 11, -1};
    const char *avals[] = {"\\N", "0", esc, "\\N"};
    static const int rfields[] = {7, 8, -1};
    const char *rvals[] = {esc, "\\N"};
    int rc = rewrite(&out->t[WK_T_ATTEMPTS], arow, alen, afields, avals);
    if (rc == WH_OK)
        out->n[WK_T_ATTEMPTS]++;
    if (rc == WH_OK && rrow) {
        rc = rewrite(&out->t[WK_T_RETRIES], rrow, rlen, rfields, rvals);
        if (rc == WH_OK)
            out->n[WK_T_RETRIES]++;
    }
    if (rc != WH_OK)
        return rows_undo(out, "the minimal attempt", err, errlen);
    item_end(out, false, NULL);
    return WH_OK;
}

void wk_rows_describe(const wk_rows *w, size_t i, char *buf, size_t cap)
{
    size_t len, f1, f2;
    const char *row, *a, *b;
    if ((row = item_row(w, i, WK_T_ATTEMPTS, &len))) {
        a = field(row, len, 5, &f1);
        b = field(row, len, 0, &f2);
        snprintf(buf, cap, "attempt %.*s of delivery %.*s", (int)f1, a,
                 (int)f2, b);
    } else if ((row = item_row(w, i, WK_T_EVENTS, &len))) {
        a = field(row, len, 1, &f1);
        b = field(row, len, 0, &f2);
        snprintf(buf, cap, "event %.*s of app %.*s", (int)f1, a, (int)f2, b);
    } else if ((row = item_row(w, i, WK_T_LANES, &len))) {
        a = field(row, len, 1, &f1);
        b = field(row, len, 5, &f2);
        const char *ep;
        size_t f3;
        ep = field(row, len, 2, &f3);
        snprintf(buf, cap, "lane change %.*s of endpoint %.*s (delivery "
                 "%.*s)", (int)f1, a, (int)f3, ep, (int)f2, b);
    } else if (cap > 0) {
        snprintf(buf, cap, "an empty row");
    }
}
