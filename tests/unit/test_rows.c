/*
 * test_rows.c - unit tests for worker/rows.c: the COPY text rows of the
 * recorder at every limit. Ids of 128 backslashes with a 128-byte app and
 * a 256-byte type, error texts full of backslashes and invalid bytes, the
 * snippet at its maximum and past it, NULs, surrogates and overlongs,
 * attempt numbers above INT32_MAX, out-of-range latencies, status codes
 * and timestamps, the item and buffer caps, spans and minimal forms. Each
 * row is decoded back as Postgres would read it and checked.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "rows.h"
#include "test.h"
#include "utf8.h"

#define R WH_UTF8_REPLACEMENT
#define MAXF 20

/* One row decoded as COPY text format: fields unescaped, \N as NULL. */
typedef struct {
    int n;
    char *f[MAXF];
    size_t len[MAXF];
} row;

static void row_free(row *r)
{
    for (int i = 0; i < r->n; i++)
        free(r->f[i]);
    r->n = 0;
}

/* Decodes the row at data[0..len) (which ends with '\n'). Returns 0 when
 * malformed (an unknown escape, a raw control byte, no newline). */
static int decode(const char *data, size_t len, row *r)
{
    r->n = 0;
    if (len == 0 || data[len - 1] != '\n')
        return 0;
    size_t i = 0;
    while (i < len && r->n < MAXF) {
        char *out = malloc(len + 1);
        size_t o = 0;
        int null = 0;
        if (i + 2 <= len && data[i] == '\\' && data[i + 1] == 'N' &&
            (data[i + 2] == '\t' || data[i + 2] == '\n')) {
            null = 1;
            i += 2;
        }
        for (; !null && data[i] != '\t' && data[i] != '\n'; i++) {
            unsigned char c = (unsigned char)data[i];
            if (c < 0x20 || c == 0x7f) {
                free(out);
                return 0;
            }
            if (c != '\\') {
                out[o++] = (char)c;
                continue;
            }
            char e = data[++i];
            out[o++] = e == '\\' ? '\\' : e == 't' ? '\t' : e == 'n' ? '\n'
                       : e == 'r' ? '\r' : e == 'x' ? 'x' : 0;
            if (out[o - 1] == 0) {
                free(out);
                return 0;
            }
            if (e == 'x') /* bytea \\x: only after a doubled backslash */
                return free(out), 0;
        }
        out[o] = '\0';
        if (null) {
            free(out);
            out = NULL;
        }
        r->len[r->n] = o;
        r->f[r->n++] = out;
        if (data[i] == '\n')
            return i == len - 1;
        i++;
    }
    return 0;
}

/* Decodes the single row of item i in table t. */
static int item_row(const wk_rows *w, wk_table t, size_t i, row *r)
{
    const char *d;
    size_t len, n;
    r->n = 0;
    wk_rows_span(w, t, i, i + 1, &d, &len, &n);
    return n == 1 && decode(d, len, r);
}

static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

/* A valid attempt with a retry; strings owned by the caller. */
static wk_attempt attempt(const char *id, const char *app, const char *type)
{
    static const char delivery[] = "\x0a\x03" "abc";
    return (wk_attempt){
        .delivery_id = id, .event_id = id, .endpoint_id = "ep_abcdefgh",
        .app = app, .event_type = type, .attempt = 2, .succeeded = false,
        .status_code = 500, .latency_ms = 12, .error_class = "http_status",
        .error = "HTTP 500", .snippet = "oops", .snippet_len = 4,
        .attempted_at_us = INT64_C(1700000000123456), .final = false,
        .next_attempt_at_us = INT64_C(1700000060000000),
        .retry_delivery = delivery, .retry_len = sizeof(delivery) - 1,
        .retry_attempt = 3, .partition = 7, .epoch = 42};
}

static int all_text_clean(const row *r)
{
    for (int i = 0; i < r->n; i++) {
        if (!r->f[i])
            continue;
        if (!wh_utf8_valid(r->f[i], r->len[i], NULL) ||
            memchr(r->f[i], '\0', r->len[i]))
            return 0;
    }
    return 1;
}

/* The fleet-crashing event: 128 backslashes as ids, a 128-byte app, a
 * 256-byte type; every value round-trips exactly. */
static void test_backslash_ids(void)
{
    wk_rows w;
    CHECK_INT(wk_rows_init(&w, 4, 1 << 20, 1 << 20), WH_OK);
    char *id = repeat('\\', WH_ID_MAX), *app = repeat('a', WH_ID_MAX),
         *type = repeat('t', WH_TYPE_MAX), *worker = repeat('\\', 127);
    wk_attempt a = attempt(id, app, type);
    unsigned notes = 99;
    char err[WH_ERRLEN];
    CHECK_INT(wk_rows_add_attempt(&w, &a, worker, &notes, err, sizeof(err)),
              WH_OK);
    CHECK_INT(notes, 0);
    row r;
    CHECK(item_row(&w, WK_T_ATTEMPTS, 0, &r));
    CHECK_INT(r.n, 16);
    CHECK_STR(r.f[0], id);
    CHECK_STR(r.f[1], id);
    CHECK_STR(r.f[3], app);
    CHECK_STR(r.f[4], type);
    CHECK_STR(r.f[5], "2");
    CHECK_STR(r.f[6], "failed");
    CHECK_STR(r.f[7], "500");
    CHECK_STR(r.f[11], "oops");
    CHECK_STR(r.f[12], worker);
    CHECK_STR(r.f[13], "2023-11-14 22:13:20.123456+00");
    CHECK_STR(r.f[14], "2023-11-14 22:14:20.000000+00");
    CHECK_STR(r.f[15], "f");
    row_free(&r);
    CHECK(item_row(&w, WK_T_RETRIES, 0, &r));
    CHECK_INT(r.n, 11);
    CHECK_STR(r.f[0], id);
    CHECK_STR(r.f[2], app);
    CHECK_STR(r.f[3], id);
    CHECK_STR(r.f[4], "3");
    CHECK_STR(r.f[6], "\\x0a03616263"); /* bytea hex, once unescaped */
    CHECK_STR(r.f[7], "HTTP 500");
    CHECK_STR(r.f[9], "7");
    CHECK_STR(r.f[10], "42");
    row_free(&r);
    /* an event and a lane change with the same ids */
    wk_event_row ev = {.app = app, .event_id = id, .event_type = type,
                       .event = "\x00\xff", .event_len = 2,
                       .received_at_us = 0};
    CHECK_INT(wk_rows_add_event(&w, &ev, &notes, err, sizeof(err)), WH_OK);
    CHECK(item_row(&w, WK_T_EVENTS, 1, &r));
    CHECK_INT(r.n, 5);
    CHECK_STR(r.f[1], id);
    CHECK_STR(r.f[3], "\\x00ff");
    CHECK_STR(r.f[4], "1970-01-01 00:00:00.000000+00");
    row_free(&r);
    wk_lane_op op = {.op = WK_LANE_PARK, .endpoint_id = "ep_abcdefgh",
                     .partition = 3, .epoch = 9, .delivery_id = id,
                     .attempt = UINT32_MAX, .position = INT64_MAX,
                     .delivery = "\x01", .delivery_len = 1};
    CHECK_INT(wk_rows_add_lane(&w, &op, &notes, err, sizeof(err)), WH_OK);
    CHECK_INT(notes, WK_ROWS_CLAMPED); /* attempt above int4 */
    CHECK(item_row(&w, WK_T_LANES, 2, &r));
    CHECK_INT(r.n, 9);
    CHECK_STR(r.f[0], "0");
    CHECK_STR(r.f[1], "p");
    CHECK_STR(r.f[5], id);
    CHECK_STR(r.f[6], "2147483647");
    CHECK_STR(r.f[7], "9223372036854775807");
    CHECK_STR(r.f[8], "\\x01");
    row_free(&r);
    op.op = WK_LANE_UNPARK;
    op.attempt = 0;
    CHECK_INT(wk_rows_add_lane(&w, &op, &notes, err, sizeof(err)), WH_OK);
    CHECK(item_row(&w, WK_T_LANES, 3, &r));
    CHECK_STR(r.f[0], "1");
    CHECK_STR(r.f[1], "d");
    CHECK(r.f[8] == NULL);
    row_free(&r);
    wk_rows_cleanup(&w);
    free(id);
    free(app);
    free(type);
    free(worker);
}

/* Error texts of backslashes and invalid bytes; snippets at and past
 * their bound; NULs, surrogates, overlongs, F5 leads and controls. */
static void test_hostile_text(void)
{
    wk_rows w;
    char err[WH_ERRLEN];
    unsigned notes;
    row r;
    CHECK_INT(wk_rows_init(&w, 16, 1 << 20, 1 << 20), WH_OK);

    /* exactly WK_ROWS_ERROR_MAX backslashes: kept whole, escaped to 2x */
    char *bs = repeat('\\', WK_ROWS_ERROR_MAX);
    wk_attempt a = attempt("d1", "app", "t");
    a.error = bs;
    CHECK_INT(wk_rows_add_attempt(&w, &a, "w", &notes, err, sizeof(err)),
              WH_OK);
    CHECK_INT(notes, 0);
    CHECK(item_row(&w, WK_T_ATTEMPTS, 0, &r));
    CHECK_STR(r.f[10], bs);
    row_free(&r);
    CHECK(item_row(&w, WK_T_RETRIES, 0, &r));
    CHECK_STR(r.f[7], bs);
    row_free(&r);
    free(bs);
    /* one more: cut, and the caller is told */
    bs = repeat('\\', 5 * WK_ROWS_ERROR_MAX);
    a.error = bs;
    CHECK_INT(wk_rows_add_attempt(&w, &a, "w", &notes, err, sizeof(err)),
              WH_OK);
    CHECK_INT(notes, WK_ROWS_CLAMPED);
    CHECK(item_row(&w, WK_T_ATTEMPTS, 1, &r));
    CHECK_INT(r.len[10], WK_ROWS_ERROR_MAX);
    row_free(&r);
    free(bs);

    /* invalid bytes everywhere */
    static const char poison[] = "\xed\xa0\x80|\xc0\xaf|\xf5\x80\x80\x80|"
                                 "\0|\x1b[2J|\xff";
    a.error = "bad \xed\xa0\x80 \xc0\xaf \xf4\x90\x80\x80";
    a.error_class = "\x01\x02";
    a.snippet = poison;
    a.snippet_len = sizeof(poison) - 1;
    CHECK_INT(wk_rows_add_attempt(&w, &a, "w", &notes, err, sizeof(err)),
              WH_OK);
    CHECK_INT(notes, 0);
    CHECK(item_row(&w, WK_T_ATTEMPTS, 2, &r));
    CHECK(all_text_clean(&r));
    CHECK_STR(r.f[11], R R R "|" R R "|" R R R R "|" R "|" R "[2J|" R);
    CHECK_STR(r.f[10], "bad " R R R " " R R " " R R R R);
    CHECK_STR(r.f[9], R R);
    row_free(&r);

    /* the largest snippet: 1 KiB of bytes that each become U+FFFD fills
     * WK_ROWS_SNIPPET_MAX exactly; one byte more is cut */
    char *ff = repeat('\xff', 1025);
    a = attempt("d2", "app", "t");
    a.snippet = ff;
    a.snippet_len = 1024;
    CHECK_INT(wk_rows_add_attempt(&w, &a, "w", &notes, err, sizeof(err)),
              WH_OK);
    CHECK_INT(notes, 0);
    CHECK(item_row(&w, WK_T_ATTEMPTS, 3, &r));
    CHECK_INT(r.len[11], WK_ROWS_SNIPPET_MAX);
    CHECK(all_text_clean(&r));
    row_free(&r);
    a.snippet_len = 1025;
    CHECK_INT(wk_rows_add_attempt(&w, &a, "w", &notes, err, sizeof(err)),
              WH_OK);
    CHECK_INT(notes, WK_ROWS_CLAMPED);
    CHECK(item_row(&w, WK_T_ATTEMPTS, 4, &r));
    CHECK_INT(r.len[11], WK_ROWS_SNIPPET_MAX);
    row_free(&r);
    free(ff);
    /* a snippet of backslashes, tabs and newlines: kept (escaped) */
    char *sb = repeat('\\', 1024);
    sb[10] = '\t';
    sb[11] = '\n';
    sb[12] = '\r';
    a.snippet = sb;
    a.snippet_len = 1024;
    CHECK_INT(wk_rows_add_attempt(&w, &a, "w", &notes, err, sizeof(err)),
              WH_OK);
    CHECK(item_row(&w, WK_T_ATTEMPTS, 5, &r));
    CHECK_MEM(r.f[11], r.len[11], sb, 1024);
    row_free(&r);
    free(sb);
    /* an empty snippet is NULL, a NULL error too */
    a.snippet_len = 0;
    a.error = NULL;
    a.error_class = NULL;
    a.succeeded = true;
    a.next_attempt_at_us = 0;
    CHECK_INT(wk_rows_add_attempt(&w, &a, "w", &notes, err, sizeof(err)),
              WH_OK);
    CHECK(item_row(&w, WK_T_ATTEMPTS, 6, &r));
    CHECK(r.f[9] == NULL && r.f[10] == NULL && r.f[11] == NULL &&
          r.f[14] == NULL);
    CHECK_STR(r.f[6], "succeeded");
    row_free(&r);
    const char *d;
    size_t len, n;
    wk_rows_span(&w, WK_T_RETRIES, 6, 7, &d, &len, &n);
    CHECK_INT(n, 0);
    wk_rows_cleanup(&w);
}

/* Numbers are clamped to int4, timestamps to what Postgres and tools
 * read back; the caller learns it. */
static void test_ranges(void)
{
    wk_rows w;
    char err[WH_ERRLEN];
    unsigned notes;
    row r;
    CHECK_INT(wk_rows_init(&w, 8, 1 << 20, 1 << 20), WH_OK);
    wk_attempt a = attempt("d", "app", "t");
    a.attempt = (uint32_t)INT32_MAX + 1;
    a.retry_attempt = UINT32_MAX;
    CHECK_INT(wk_rows_add_attempt(&w, &a, "w", &notes, err, sizeof(err)),
              WH_OK);
    CHECK_INT(notes, WK_ROWS_CLAMPED);
    CHECK(item_row(&w, WK_T_ATTEMPTS, 0, &r));
    CHECK_STR(r.f[5], "2147483647");
    row_free(&r);
    CHECK(item_row(&w, WK_T_RETRIES, 0, &r));
    CHECK_STR(r.f[4], "2147483647");
    row_free(&r);

    a = attempt("d", "app", "t");
    a.attempt = (uint32_t)INT32_MAX; /* the largest that fits: unchanged */
    CHECK_INT(wk_rows_add_attempt(&w, &a, "w", &notes, err, sizeof(err)),
              WH_OK);
    CHECK_INT(notes, 0);

    a.attempt = 0; /* the column requires >= 1 */
    a.status_code = -1;
    a.latency_ms = INT64_C(1) << 40;
    a.attempted_at_us = -1;
    a.next_attempt_at_us = INT64_MAX; /* disabled: infinity */
    CHECK_INT(wk_rows_add_attempt(&w, &a, "w", &notes, err, sizeof(err)),
              WH_OK);
    CHECK_INT(notes, WK_ROWS_CLAMPED);
    CHECK(item_row(&w, WK_T_ATTEMPTS, 2, &r));
    CHECK_STR(r.f[5], "1");
    CHECK_STR(r.f[7], "0");
    CHECK_STR(r.f[8], "2147483647");
    CHECK_STR(r.f[13], "1970-01-01 00:00:00.000000+00");
    CHECK_STR(r.f[14], "infinity");
    row_free(&r);
    CHECK(item_row(&w, WK_T_RETRIES, 2, &r));
    CHECK_STR(r.f[5], "infinity");
    CHECK_STR(r.f[8], "0");
    row_free(&r);

    a = attempt("d", "app", "t");
    a.latency_ms = -5;
    a.attempted_at_us = INT64_MAX;            /* not allowed here */
    a.next_attempt_at_us = INT64_MAX - 1;     /* past year 9999 */
    CHECK_INT(wk_rows_add_attempt(&w, &a, "w", &notes, err, sizeof(err)),
              WH_OK);
    CHECK_INT(notes, WK_ROWS_CLAMPED);
    CHECK(item_row(&w, WK_T_ATTEMPTS, 3, &r));
    CHECK_STR(r.f[8], "0");
    CHECK_STR(r.f[13], "9999-12-31 23:59:59.999999+00");
    CHECK_STR(r.f[14], "9999-12-31 23:59:59.999999+00");
    row_free(&r);
    a.latency_ms = INT32_MAX;
    a.attempted_at_us = WK_ROWS_TS_MAX_US;
    a.next_attempt_at_us = WK_ROWS_TS_MAX_US;
    CHECK_INT(wk_rows_add_attempt(&w, &a, "w", &notes, err, sizeof(err)),
              WH_OK);
    CHECK_INT(notes, 0); /* at the bounds: nothing changed */
    wk_rows_cleanup(&w);
}

/* The item cap and each table's byte bound: a refused add leaves every
 * table as it was, the retry row's refusal included. */
static void test_caps(void)
{
    wk_rows w;
    char err[WH_ERRLEN] = "";
    unsigned notes;
    CHECK_INT(wk_rows_init(&w, 2, 1 << 20, 1 << 20), WH_OK);
    wk_attempt a = attempt("d", "app", "t");
    CHECK_INT(wk_rows_add_attempt(&w, &a, "w", &notes, err, sizeof(err)),
              WH_OK);
    CHECK_INT(wk_rows_add_attempt(&w, &a, "w", &notes, err, sizeof(err)),
              WH_OK);
    size_t len = w.t[WK_T_ATTEMPTS].len;
    CHECK_INT(wk_rows_add_attempt(&w, &a, "w", &notes, err, sizeof(err)),
              WH_ERR);
    CHECK(strstr(err, "holds 2 rows") != NULL);
    CHECK_INT(w.nitems, 2);
    CHECK_INT(w.t[WK_T_ATTEMPTS].len, len);
    wk_rows_cleanup(&w);

    /* the attempt fits, its retry does not: neither stays */
    CHECK_INT(wk_rows_init(&w, 8, 1 << 20, 160), WH_OK);
    char big[100] = {0};
    a.retry_delivery = big;
    a.retry_len = sizeof(big);
    CHECK_INT(wk_rows_add_attempt(&w, &a, "w", &notes, err, sizeof(err)),
              WH_ERR);
    CHECK(strstr(err, "retry row does not fit") != NULL);
    CHECK_INT(w.nitems, 0);
    CHECK_INT(w.n[WK_T_ATTEMPTS], 0);
    CHECK_INT(w.t[WK_T_ATTEMPTS].len, 0);
    CHECK_INT(w.n[WK_T_RETRIES], 0);
    a.retry_len = 10;
    CHECK_INT(wk_rows_add_attempt(&w, &a, "w", &notes, err, sizeof(err)),
              WH_OK);
    CHECK_INT(w.nitems, 1);
    wk_rows_cleanup(&w);

    /* the largest attempt row fits WK_ROWS_ATTEMPT_MAX */
    CHECK_INT(wk_rows_init(&w, 1, WK_ROWS_ATTEMPT_MAX, 1 << 20), WH_OK);
    char *bs = repeat('\\', 4 * WK_ROWS_SNIPPET_MAX);
    char *ff = repeat('\xff', 4 * WK_ROWS_ERROR_MAX);
    a = attempt(bs, bs, bs);
    a.endpoint_id = bs;
    a.error_class = bs;
    a.error = ff;
    a.snippet = ff;
    a.snippet_len = strlen(ff);
    CHECK_INT(wk_rows_add_attempt(&w, &a, bs, &notes, err, sizeof(err)),
              WH_OK);
    CHECK_INT(notes, WK_ROWS_CLAMPED);
    CHECK(w.t[WK_T_ATTEMPTS].len <= WK_ROWS_ATTEMPT_MAX);
    row r;
    CHECK(item_row(&w, WK_T_ATTEMPTS, 0, &r));
    CHECK_INT(r.len[0], WK_ROWS_ID_MAX);
    CHECK_INT(r.len[4], WK_ROWS_TYPE_MAX);
    CHECK_INT(r.len[9], WK_ROWS_CLASS_MAX);
    CHECK(r.len[10] <= WK_ROWS_ERROR_MAX && r.len[10] > WK_ROWS_ERROR_MAX - 3);
    CHECK(all_text_clean(&r));
    row_free(&r);
    free(bs);
    free(ff);
    wk_rows_cleanup(&w);
}

/* Spans of items map to contiguous rows; minimal forms; descriptions. */
static void test_spans_minimal(void)
{
    wk_rows w, m;
    char err[WH_ERRLEN], what[256];
    unsigned notes;
    CHECK_INT(wk_rows_init(&w, 8, 1 << 20, 1 << 20), WH_OK);
    CHECK_INT(wk_rows_init(&m, 1, 1 << 20, 1 << 20), WH_OK);
    wk_attempt a = attempt("d0", "app", "t");
    wk_event_row ev = {.app = "app", .event_id = "e1", .event_type = "t",
                       .event = "x", .event_len = 1, .received_at_us = 1};
    wk_lane_op op = {.op = WK_LANE_BLOCK, .endpoint_id = "ep_abcdefgh",
                     .delivery_id = "d0", .attempt = 3};
    CHECK_INT(wk_rows_add_event(&w, &ev, &notes, err, sizeof(err)), WH_OK);
    CHECK_INT(wk_rows_add_attempt(&w, &a, "w", &notes, err, sizeof(err)),
              WH_OK);
    CHECK_INT(wk_rows_add_lane(&w, &op, &notes, err, sizeof(err)), WH_OK);
    a.delivery_id = "d3";
    a.next_attempt_at_us = 0;
    CHECK_INT(wk_rows_add_attempt(&w, &a, "w", &notes, err, sizeof(err)),
              WH_OK);
    const char *d;
    size_t len, n;
    wk_rows_span(&w, WK_T_ATTEMPTS, 0, 4, &d, &len, &n);
    CHECK_INT(n, 2);
    CHECK_INT(len, w.t[WK_T_ATTEMPTS].len);
    wk_rows_span(&w, WK_T_ATTEMPTS, 2, 4, &d, &len, &n);
    CHECK_INT(n, 1);
    CHECK(strncmp(d, "d3\t", 3) == 0);
    wk_rows_span(&w, WK_T_RETRIES, 1, 2, &d, &len, &n);
    CHECK_INT(n, 1);
    wk_rows_span(&w, WK_T_RETRIES, 2, 4, &d, &len, &n);
    CHECK_INT(n, 0);
    CHECK_INT(len, 0);
    wk_rows_span(&w, WK_T_EVENTS, 1, 3, &d, &len, &n);
    CHECK_INT(n, 0);
    wk_rows_span(&w, WK_T_LANES, 0, 4, &d, &len, &n);
    CHECK_INT(n, 1);

    /* the attempt's minimal form: no status, latency, snippet; the
     * reason as error; its retry keeps everything but its texts */
    CHECK_INT(wk_rows_minimal(&w, 1, "row refused by Postgres: SQLSTATE "
                              "22021 \\ \xff", &m, err, sizeof(err)),
              WH_OK);
    CHECK_INT(m.nitems, 1);
    row r;
    CHECK(item_row(&m, WK_T_ATTEMPTS, 0, &r));
    CHECK_INT(r.n, 16);
    CHECK_STR(r.f[0], "d0");
    CHECK_STR(r.f[5], "2");
    CHECK(r.f[7] == NULL);
    CHECK_STR(r.f[8], "0");
    CHECK_STR(r.f[9], "http_status");
    CHECK_STR(r.f[10], "row refused by Postgres: SQLSTATE 22021 \\ " R);
    CHECK(r.f[11] == NULL);
    CHECK_STR(r.f[13], "2023-11-14 22:13:20.123456+00");
    CHECK_STR(r.f[14], "2023-11-14 22:14:20.000000+00");
    CHECK_STR(r.f[15], "f");
    row_free(&r);
    CHECK(item_row(&m, WK_T_RETRIES, 0, &r));
    CHECK_INT(r.n, 11);
    CHECK_STR(r.f[6], "\\x0a03616263");
    CHECK_STR(r.f[7], "row refused by Postgres: SQLSTATE 22021 \\ " R);
    CHECK(r.f[8] == NULL);
    CHECK_STR(r.f[10], "42");
    row_free(&r);
    /* without a retry */
    CHECK_INT(wk_rows_minimal(&w, 3, "x", &m, err, sizeof(err)), WH_OK);
    CHECK_INT(m.n[WK_T_RETRIES], 0);
    CHECK_INT(m.n[WK_T_ATTEMPTS], 1);
    /* events and lane changes have no smaller form */
    CHECK_INT(wk_rows_minimal(&w, 0, "x", &m, err, sizeof(err)),
              WH_DECLINED);
    CHECK_INT(wk_rows_minimal(&w, 2, "x", &m, err, sizeof(err)),
              WH_DECLINED);

    wk_rows_describe(&w, 1, what, sizeof(what));
    CHECK_STR(what, "attempt 2 of delivery d0");
    wk_rows_describe(&w, 0, what, sizeof(what));
    CHECK_STR(what, "event e1 of app app");
    wk_rows_describe(&w, 2, what, sizeof(what));
    CHECK_STR(what, "lane change b of endpoint ep_abcdefgh (delivery d0)");
    char tiny[8];
    wk_rows_describe(&w, 1, tiny, sizeof(tiny));
    CHECK_STR(tiny, "attempt");

    wk_rows_reset(&w);
    CHECK_INT(w.nitems, 0);
    wk_rows_span(&w, WK_T_ATTEMPTS, 0, 0, &d, &len, &n);
    CHECK_INT(len, 0);
    CHECK_INT(n, 0);
    wk_rows_cleanup(&w);
    wk_rows_cleanup(&m);
}

/* xorshift: a fixed sequence, so a failure reproduces */
static uint64_t rnd_state = 0x9E3779B97F4A7C15ULL;
static uint64_t rnd(void)
{
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 7;
    rnd_state ^= rnd_state << 17;
    return rnd_state;
}

/* Random bytes, biased towards the ones that matter: backslashes, tabs,
 * newlines, NUL, and lead and continuation bytes. */
static char *random_text(size_t n)
{
    static const unsigned char hot[] = {'\\', '\t', '\n', '\r', 0,    0xED,
                                        0xA0, 0x80, 0xC0, 0xF5, 0xF4, 0x90,
                                        0xC2, 0x9B, 0x7F, 'N'};
    char *s = malloc(n + 1);
    for (size_t i = 0; i < n; i++) {
        uint64_t r = rnd();
        s[i] = (char)(r & 1 ? hot[(r >> 8) % sizeof(hot)] : (r >> 16) & 0xFF);
    }
    s[n] = '\0';
    return s;
}

/* Thousands of attempts with random text everywhere: every row decodes
 * as COPY text, with 16 (or 11) fields, every value valid UTF-8 without
 * NUL, and within its bound. */
static void test_random(void)
{
    long bad = 0;
    for (int round = 0; round < 2000; round++) {
        wk_rows w;
        char err[WH_ERRLEN];
        unsigned notes;
        if (wk_rows_init(&w, 1, WK_ROWS_ATTEMPT_MAX, 1 << 20) != WH_OK) {
            bad++;
            continue;
        }
        char *t[8];
        for (int i = 0; i < 8; i++)
            t[i] = random_text(i == 7 ? 5000 : rnd() % 700);
        wk_attempt a = attempt(t[0], t[1], t[2]);
        a.endpoint_id = t[3];
        a.error_class = t[4];
        a.error = t[5];
        a.snippet = t[7];
        a.snippet_len = rnd() % 5001; /* NULs inside, past strlen */
        a.attempt = (uint32_t)rnd();
        a.latency_ms = (int64_t)rnd();
        a.status_code = (int)rnd();
        a.attempted_at_us = (int64_t)rnd();
        a.next_attempt_at_us = (int64_t)(rnd() | 1);
        a.retry_attempt = (uint32_t)rnd();
        if (wk_rows_add_attempt(&w, &a, t[6], &notes, err, sizeof(err)) !=
            WH_OK) {
            bad++;
            fprintf(stderr, "round %d: %s\n", round, err);
        } else {
            row r;
            static const size_t amax[16] = {
                WK_ROWS_ID_MAX, WK_ROWS_ID_MAX, WK_ROWS_ID_MAX,
                WK_ROWS_ID_MAX, WK_ROWS_TYPE_MAX, 10, 9, 10, 10,
                WK_ROWS_CLASS_MAX, WK_ROWS_ERROR_MAX, WK_ROWS_SNIPPET_MAX,
                WK_ROWS_ID_MAX, 32, 32, 1};
            if (!item_row(&w, WK_T_ATTEMPTS, 0, &r) || r.n != 16 ||
                !all_text_clean(&r))
                bad++;
            for (int f = 0; f < r.n && f < 16; f++)
                bad += r.f[f] && r.len[f] > amax[f];
            row_free(&r);
            if (!item_row(&w, WK_T_RETRIES, 0, &r) || r.n != 11 ||
                !all_text_clean(&r))
                bad++;
            row_free(&r);
        }
        for (int i = 0; i < 8; i++)
            free(t[i]);
        wk_rows_cleanup(&w);
    }
    CHECK_INT(bad, 0);
}

/* The COPY escaping rows.c relies on (lib/db.c): exact output, and at
 * every capacity either all of it (with a byte to spare) or WH_ERR with
 * *pos unchanged and nothing written past the capacity. */
static void test_copy_escape(void)
{
    static const char in[] = "ab\\cd\tef\ngh\rij\0kl";
    static const char want[] = "ab\\\\cd\\tef\\ngh\\rijkl";
    char out[64];
    size_t pos = 0;
    CHECK_INT(wh_db_copy_escape(out, sizeof(out), &pos, in, sizeof(in) - 1),
              WH_OK);
    CHECK_MEM(out, pos, want, sizeof(want) - 1);
    long bad = 0;
    for (size_t cap = 0; cap < sizeof(want) + 2; cap++) {
        memset(out, 'X', sizeof(out));
        size_t p = 0;
        int rc = wh_db_copy_escape(out, cap, &p, in, sizeof(in) - 1);
        bad += (rc == WH_OK) != (cap > sizeof(want) - 1);
        bad += rc == WH_OK ? p != sizeof(want) - 1 : p != 0;
        for (size_t i = cap; i < sizeof(out); i++)
            bad += out[i] != 'X';
    }
    CHECK_INT(bad, 0);
}

TEST_MAIN(test_backslash_ids, test_hostile_text, test_ranges, test_caps,
          test_spans_minimal, test_random, test_copy_escape)
