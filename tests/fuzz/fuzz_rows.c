/*
 * fuzz_rows.c - libFuzzer target for the recorder's row encoding
 * (worker/rows.c): the input is a little program of attempts, events and
 * lane changes with text, numbers and blobs taken from its bytes, added to
 * a wk_rows whose item cap and buffer bounds come from the first bytes.
 * Every table stays a run of whole COPY text rows, each with its table's
 * column count, valid UTF-8 without NUL or control characters once
 * unescaped (the snippet may keep tabs and newlines), attempt rows within
 * WK_ROWS_ATTEMPT_MAX; an add that fails leaves the batch as it was and
 * the cap is never passed; spans of items tile the tables; every item has
 * a well-formed minimal form or none, and a description that fits.
 * Seeds: corpus/fuzz_rows/.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "rows.h"
#include "utf8.h"

#define STRINGS_MAX 32

/* Reads values off the input; past its end everything is 0 / empty. */
typedef struct {
    const uint8_t *p;
    size_t n, i;
    char *strs[STRINGS_MAX];
    int nstrs;
} reader;

static uint8_t u8(reader *r) { return r->i < r->n ? r->p[r->i++] : 0; }

static uint64_t raw64(reader *r)
{
    uint64_t v = 0;
    for (int k = 0; k < 8; k++)
        v = v << 8 | u8(r);
    return v;
}

/* A number: one of the values at the edges of the columns' ranges, or 8
 * raw bytes. */
static int64_t num(reader *r)
{
    static const int64_t edge[] = {
        0, 1, -1, 200, 2147483647, INT64_C(2147483648), INT64_MAX,
        INT64_MIN, WK_ROWS_TS_MAX_US, WK_ROWS_TS_MAX_US + 1,
        INT64_C(1764000000000000), 4294967295};
    uint8_t sel = u8(r);
    if (sel < 2 * (sizeof(edge) / sizeof(edge[0])))
        return edge[sel / 2];
    return (int64_t)raw64(r);
}

/* A string: a length (one byte, or two when the first is 0xfe; 0xff is
 * NULL), then that many bytes, NUL-terminated in a copy the reader owns.
 * *len gets the bytes taken (which may hold NULs). */
static const char *str(reader *r, size_t *len)
{
    uint8_t l = u8(r);
    if (l == 0xff || r->nstrs == STRINGS_MAX) {
        if (len)
            *len = 0;
        return NULL;
    }
    size_t n = l;
    if (l == 0xfe)
        n = (size_t)u8(r) << 8 | u8(r);
    if (n > r->n - r->i)
        n = r->n - r->i;
    char *s = malloc(n + 1);
    REQUIRE(s != NULL);
    memcpy(s, r->p + r->i, n);
    s[n] = '\0';
    r->i += n;
    r->strs[r->nstrs++] = s;
    if (len)
        *len = n;
    return s;
}

/* Unescapes one COPY text field f[0..n) and checks it is valid UTF-8
 * without NUL or controls (keep: tabs and newlines allowed). */
static void require_field(const char *f, size_t n, bool *keep_seen)
{
    if (n == 2 && f[0] == '\\' && f[1] == 'N')
        return;
    char *u = malloc(n + 1);
    REQUIRE(u != NULL);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        char c = f[i];
        REQUIRE(c != '\t' && c != '\n' && c != '\r' && c != '\0');
        if (c == '\\') {
            REQUIRE(i + 1 < n);
            char e = f[++i];
            REQUIRE(e == '\\' || e == 't' || e == 'n' || e == 'r');
            c = e == 't' ? '\t' : e == 'n' ? '\n' : e == 'r' ? '\r' : '\\';
        }
        u[m++] = c;
    }
    REQUIRE(wh_utf8_valid(u, m, NULL));
    size_t w = 0;
    for (size_t i = 0; i < m; i++) {
        unsigned char c = (unsigned char)u[i];
        if (c == '\t' || c == '\n' || c == '\r')
            *keep_seen = true;
        else
            REQUIRE(c >= 0x20 && c != 0x7f);
        /* C1 controls (U+0080..U+009F) are C2 80..C2 9F */
        if (c == 0xc2 && i + 1 < m)
            REQUIRE((unsigned char)u[i + 1] > 0x9f);
        w++;
    }
    (void)w;
    free(u);
}

/* buf[0..len) is whole rows, each of cols columns (set from the first
 * row when *cols is 0); returns how many rows. */
static size_t require_rows(const char *buf, size_t len, size_t *cols,
                           size_t row_max)
{
    size_t rows = 0, i = 0;
    while (i < len) {
        const char *nl = memchr(buf + i, '\n', len - i);
        REQUIRE(nl != NULL);
        size_t end = (size_t)(nl - buf), c = 0, keeps = 0;
        REQUIRE(row_max == 0 || end - i + 1 <= row_max);
        while (i <= end) {
            size_t f = i;
            while (i < end && buf[i] != '\t')
                i++;
            bool keep = false;
            require_field(buf + f, i - f, &keep);
            keeps += keep;
            c++;
            i++;
        }
        REQUIRE(keeps <= 1); /* only the snippet keeps tabs/newlines */
        if (*cols == 0)
            *cols = c;
        REQUIRE(c == *cols);
        rows++;
    }
    return rows;
}

/* The rows of w past from[t] bytes (which hold n_from[t] rows checked
 * before) are well formed. */
static void require_batch_from(const wk_rows *w, size_t cols[WK_T_COUNT],
                               const size_t from[WK_T_COUNT],
                               const size_t n_from[WK_T_COUNT])
{
    for (int t = 0; t < WK_T_COUNT; t++) {
        REQUIRE(w->t[t].len <= w->t[t].max);
        REQUIRE(from[t] <= w->t[t].len);
        const char *d = w->t[t].data ? w->t[t].data : "";
        REQUIRE(from[t] == 0 || d[from[t] - 1] == '\n');
        size_t rows = require_rows(d + from[t], w->t[t].len - from[t],
                                   &cols[t],
                                   t == WK_T_ATTEMPTS ? WK_ROWS_ATTEMPT_MAX
                                                      : 0);
        REQUIRE(n_from[t] + rows == w->n[t]);
    }
    REQUIRE(w->nitems <= w->cap);
}

static void require_batch(const wk_rows *w, size_t cols[WK_T_COUNT])
{
    static const size_t zero[WK_T_COUNT];
    require_batch_from(w, cols, zero, zero);
}

static void op_attempt(reader *r, wk_attempt *a, const char **worker)
{
    memset(a, 0, sizeof(*a));
    a->delivery_id = str(r, NULL);
    a->event_id = str(r, NULL);
    a->endpoint_id = str(r, NULL);
    a->app = str(r, NULL);
    a->event_type = str(r, NULL);
    a->attempt = (uint32_t)num(r);
    uint8_t flags = u8(r);
    a->succeeded = flags & 1;
    a->final = flags & 2;
    a->status_code = (int)num(r);
    a->latency_ms = num(r);
    a->error_class = str(r, NULL);
    a->error = str(r, NULL);
    a->snippet = str(r, &a->snippet_len);
    a->attempted_at_us = num(r);
    if (flags & 4) {
        a->next_attempt_at_us = num(r);
        a->retry_delivery = str(r, &a->retry_len);
        a->retry_attempt = (uint32_t)num(r);
    }
    a->partition = (int32_t)num(r);
    a->epoch = num(r);
    *worker = str(r, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    reader r = {.p = data, .n = size};
    size_t cap = 1 + u8(&r) % 16;
    size_t attempts_max = 64 + (size_t)u8(&r) * 256;
    size_t blobs_max = 64 + (size_t)u8(&r) * 256;
    wk_rows w, out;
    REQUIRE(wk_rows_init(&w, cap, attempts_max, blobs_max) == WH_OK);
    REQUIRE(wk_rows_init(&out, 1, 2 * WK_ROWS_ATTEMPT_MAX, 1 << 20) ==
            WH_OK);
    size_t cols[WK_T_COUNT] = {0};
    char err[WH_ERRLEN];

    while (r.i < r.n && r.nstrs < STRINGS_MAX - 12) {
        size_t before_len[WK_T_COUNT], before_n[WK_T_COUNT];
        for (int t = 0; t < WK_T_COUNT; t++) {
            before_len[t] = w.t[t].len;
            before_n[t] = w.n[t];
        }
        size_t items = w.nitems;
        unsigned notes = 7;
        int rc;
        uint8_t op = u8(&r) % 3;
        if (op == 0) {
            wk_attempt a;
            const char *worker;
            op_attempt(&r, &a, &worker);
            rc = wk_rows_add_attempt(&w, &a, worker, &notes, err,
                                     sizeof(err));
        } else if (op == 1) {
            wk_event_row e = {0};
            e.app = str(&r, NULL);
            e.event_id = str(&r, NULL);
            e.event_type = str(&r, NULL);
            e.event = str(&r, &e.event_len);
            e.received_at_us = num(&r);
            rc = wk_rows_add_event(&w, &e, &notes, err, sizeof(err));
        } else {
            wk_lane_op l = {0};
            l.op = (wk_lane_op_kind)(u8(&r) % 4);
            l.endpoint_id = str(&r, NULL);
            l.partition = (int32_t)num(&r);
            l.epoch = num(&r);
            l.delivery_id = str(&r, NULL);
            l.attempt = (uint32_t)num(&r);
            l.position = num(&r);
            l.delivery = str(&r, &l.delivery_len);
            rc = wk_rows_add_lane(&w, &l, &notes, err, sizeof(err));
        }
        if (rc == WH_OK) {
            REQUIRE(w.nitems == items + 1);
            REQUIRE(notes == 0 || notes == WK_ROWS_CLAMPED);
        } else {
            REQUIRE(rc == WH_ERR && err[0] != '\0');
            REQUIRE(w.nitems == items);
            for (int t = 0; t < WK_T_COUNT; t++)
                REQUIRE(w.t[t].len == before_len[t] &&
                        w.n[t] == before_n[t]);
        }
        require_batch_from(&w, cols, before_len, before_n);
    }

    /* spans tile the tables */
    for (int t = 0; t < WK_T_COUNT; t++) {
        const char *d0, *d1;
        size_t l0, l1, n0, n1;
        size_t mid = w.nitems / 2;
        wk_rows_span(&w, (wk_table)t, 0, w.nitems, &d0, &l0, &n0);
        REQUIRE(l0 == w.t[t].len && n0 == w.n[t]);
        wk_rows_span(&w, (wk_table)t, 0, mid, &d0, &l0, &n0);
        wk_rows_span(&w, (wk_table)t, mid, w.nitems, &d1, &l1, &n1);
        REQUIRE(l0 + l1 == w.t[t].len && n0 + n1 == w.n[t]);
        REQUIRE(l0 == 0 || l1 == 0 || d0 + l0 == d1);
    }
    /* minimal forms and descriptions */
    for (size_t i = 0; i < w.nitems; i++) {
        char desc[160];
        memset(desc, 'x', sizeof(desc));
        wk_rows_describe(&w, i, desc, sizeof(desc));
        REQUIRE(memchr(desc, '\0', sizeof(desc)) != NULL);
        wk_rows_reset(&out);
        int rc = wk_rows_minimal(&w, i, "fuzz: refused \xed\xa0\x80", &out,
                                 err, sizeof(err));
        REQUIRE(rc == WH_OK || rc == WH_DECLINED || rc == WH_ERR);
        if (rc == WH_OK) {
            size_t ocols[WK_T_COUNT] = {0};
            require_batch(&out, ocols);
            for (int t = 0; t < WK_T_COUNT; t++)
                REQUIRE(ocols[t] == 0 || cols[t] == 0 || ocols[t] == cols[t]);
        }
    }
    wk_rows_cleanup(&out);
    wk_rows_cleanup(&w);
    for (int k = 0; k < r.nstrs; k++)
        free(r.strs[k]);
    return 0;
}
