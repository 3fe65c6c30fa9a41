/*
 * test_retry.c - unit tests for lib/retry.c: the default schedule and its
 * span, parsing and formatting (text and Postgres forms) with every error
 * and limit, jitter windows and their growth, exhaustion by attempts and
 * by age, Retry-After bounds, failure classification, and a statistical
 * check of the random draws.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "retry.h"
#include "test.h"

#define SEC 1000LL
#define MIN (60 * SEC)
#define HOUR (60 * MIN)
#define DAY (24 * HOUR)

/* The largest double below 1.0. */
#define RND_TOP (1.0 - 0x1.0p-53)

static const int64_t default_ms[] = {
    5 * SEC,  30 * SEC, 2 * MIN,  10 * MIN,  30 * MIN,
    1 * HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR, 24 * HOUR,
};

static void test_default(void)
{
    wh_retry_policy p;
    char out[WH_RETRY_TEXT_MAX];

    CHECK_INT(sizeof(p), 144);
    memset(&p, 0xab, sizeof(p));
    wh_retry_policy_default(&p);
    CHECK_INT(p.n, 10);
    CHECK_INT(p.max_age_ms, 3 * DAY);
    CHECK_INT(wh_retry_max_attempts(&p), 11);
    for (size_t i = 0; i < WH_ARRAY_LEN(default_ms); i++)
        CHECK_INT(p.steps_ms[i], default_ms[i]);
    for (size_t i = p.n; i < WH_RETRY_MAX_STEPS; i++)
        CHECK_INT(p.steps_ms[i], 0);

    CHECK_INT(wh_retry_policy_format(&p, out, sizeof(out)), WH_OK);
    CHECK_STR(out, "5s,30s,2m,10m,30m,1h,3h,6h,12h,1d");
    CHECK_INT(wh_retry_policy_to_pg(&p, out, sizeof(out)), WH_OK);
    CHECK_STR(out, "{5000,30000,120000,600000,1800000,3600000,10800000,"
                   "21600000,43200000,86400000}");

    /* The windows documented in retry.h, and the span they give. */
    static const int64_t lo_ms[] = {
        2500,     5 * SEC,  30 * SEC, 2 * MIN,  10 * MIN,
        30 * MIN, 1 * HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR,
    };
    int64_t sum_lo = 0, sum_hi = 0;
    for (uint32_t a = 1; a <= p.n; a++) {
        int64_t lo = -1, hi = -1;
        CHECK_INT(wh_retry_window(&p, a, &lo, &hi), WH_OK);
        CHECK_INT(lo, lo_ms[a - 1]);
        CHECK_INT(hi, default_ms[a - 1]);
        sum_lo += lo;
        sum_hi += hi;
    }
    CHECK_INT(sum_hi, 168155 * SEC); /* 46h42m35s of nominal delay */
    CHECK_INT(sum_hi, 46 * HOUR + 42 * MIN + 35 * SEC);
    CHECK_INT(sum_lo, 22 * HOUR + 42 * MIN + 37 * SEC + 500);
    CHECK_INT((sum_lo + sum_hi) / 2, 34 * HOUR + 42 * MIN + 36 * SEC + 250);
    CHECK(sum_hi < p.max_age_ms);

    /* The whole schedule runs within the maximum age at both extremes. */
    static const struct {
        double rnd;
        int64_t span_ms;
    } runs[] = {{0.0, 81757500}, {RND_TOP, 168155000}};
    for (size_t k = 0; k < WH_ARRAY_LEN(runs); k++) {
        int64_t age = 0, delay;
        uint32_t attempt = 1;
        while (wh_retry_next(&p, attempt, age, runs[k].rnd, &delay) ==
               WH_OK) {
            age += delay;
            attempt++;
        }
        CHECK_INT(attempt, 11);
        CHECK_INT(delay, 0);
        CHECK_INT(age, runs[k].span_ms);
    }
}

static void check_parse(const char *text, const int64_t *ms, uint32_t n,
                        const char *canonical, const char *pg)
{
    wh_retry_policy p, q;
    char err[WH_ERRLEN] = "", out[WH_RETRY_TEXT_MAX];

    memset(&p, 0xab, sizeof(p));
    int rc = wh_retry_policy_parse(text, &p, err, sizeof(err));
    if (rc != WH_OK)
        fprintf(stderr, "rejected '%s': %s\n", text, err);
    CHECK_INT(rc, WH_OK);
    CHECK_INT(p.n, n);
    CHECK_INT(p.max_age_ms, WH_RETRY_MAX_AGE_DEFAULT_MS);
    for (uint32_t i = 0; i < n; i++)
        CHECK_INT(p.steps_ms[i], ms[i]);

    CHECK_INT(wh_retry_policy_format(&p, out, sizeof(out)), WH_OK);
    CHECK_STR(out, canonical);
    CHECK_INT(wh_retry_policy_parse(out, &q, err, sizeof(err)), WH_OK);
    CHECK_INT(q.n, p.n);
    CHECK_MEM(q.steps_ms, n * sizeof(uint32_t), p.steps_ms,
              n * sizeof(uint32_t));

    CHECK_INT(wh_retry_policy_to_pg(&p, out, sizeof(out)), WH_OK);
    CHECK_STR(out, pg);
    CHECK_INT(wh_retry_policy_from_pg(out, &q, err, sizeof(err)), WH_OK);
    CHECK_INT(q.n, p.n);
    CHECK_MEM(q.steps_ms, n * sizeof(uint32_t), p.steps_ms,
              n * sizeof(uint32_t));
}

static void test_parse(void)
{
    static const int64_t a[] = {1 * SEC, 2 * SEC, 4 * SEC};
    check_parse("1s,2s,4s", a, 3, "1s,2s,4s", "{1000,2000,4000}");
    check_parse(" 1s , 2000ms,\t4s\t", a, 3, "1s,2s,4s", "{1000,2000,4000}");

    static const int64_t b[] = {500, 1 * SEC, 1 * MIN, 1 * HOUR, 1 * DAY};
    check_parse("500ms,1s,1m,1h,1d", b, 5, "500ms,1s,1m,1h,1d",
                "{500,1000,60000,3600000,86400000}");

    static const int64_t c[] = {1500, 90 * SEC, 90 * MIN, 36 * HOUR,
                                7 * DAY};
    check_parse("1500ms,90s,90m,36h,168h", c, 5, "1500ms,90s,90m,36h,7d",
                "{1500,90000,5400000,129600000,604800000}");

    /* Bounds: 1ms and 7d, equal steps, leading zeros. */
    static const int64_t d[] = {1, 1, 60 * SEC, 7 * DAY};
    check_parse("1ms,001ms,60s,604800000ms", d, 4, "1ms,1ms,1m,7d",
                "{1,1,60000,604800000}");

    check_parse("none", NULL, 0, "none", "{}");
    check_parse("  none  ", NULL, 0, "none", "{}");

    static const int64_t e[] = {5 * SEC, 30 * SEC, 2 * MIN, 10 * MIN,
                                30 * MIN, 1 * HOUR, 3 * HOUR, 6 * HOUR,
                                12 * HOUR, 24 * HOUR};
    check_parse("5s,30s,2m,10m,30m,1h,3h,6h,12h,24h", e, 10,
                "5s,30s,2m,10m,30m,1h,3h,6h,12h,1d",
                "{5000,30000,120000,600000,1800000,3600000,10800000,"
                "21600000,43200000,86400000}");

    /* 32 steps is the most. */
    char text[WH_RETRY_INPUT_MAX + 2];
    int64_t ms[WH_RETRY_MAX_STEPS];
    size_t pos = 0;
    for (int i = 0; i < WH_RETRY_MAX_STEPS; i++) {
        ms[i] = (i + 1) * SEC;
        pos += (size_t)snprintf(text + pos, sizeof(text) - pos, "%s%ds",
                                i ? "," : "", i + 1);
    }
    char canon[WH_RETRY_TEXT_MAX];
    CHECK_INT(wh_strlcpy(canon, text, sizeof(canon)), WH_OK);
    char pg[WH_RETRY_TEXT_MAX];
    pos = 0;
    for (int i = 0; i < WH_RETRY_MAX_STEPS; i++)
        pos += (size_t)snprintf(pg + pos, sizeof(pg) - pos, "%s%lld",
                                i ? "," : "{", (long long)ms[i]);
    snprintf(pg + pos, sizeof(pg) - pos, "}");
    check_parse(text, ms, WH_RETRY_MAX_STEPS, canon, pg);

    /* The input may be exactly WH_RETRY_INPUT_MAX bytes long. */
    memset(text, ' ', sizeof(text));
    memcpy(text, "1s", 2);
    text[WH_RETRY_INPUT_MAX] = '\0';
    wh_retry_policy p;
    char err[WH_ERRLEN];
    CHECK_INT(wh_retry_policy_parse(text, &p, err, sizeof(err)), WH_OK);
    CHECK_INT(p.n, 1);
    CHECK_INT(p.steps_ms[0], 1000);

    /* Parsing resets the maximum age to the default. */
    CHECK_INT(wh_retry_policy_set_max_age(&p, 5 * SEC, err, sizeof(err)),
              WH_OK);
    CHECK_INT(wh_retry_policy_parse("1s", &p, err, sizeof(err)), WH_OK);
    CHECK_INT(p.max_age_ms, 3 * DAY);
    CHECK_INT(wh_retry_policy_set_max_age(&p, 5 * SEC, err, sizeof(err)),
              WH_OK);
    CHECK_INT(wh_retry_policy_from_pg("{1000}", &p, err, sizeof(err)),
              WH_OK);
    CHECK_INT(p.max_age_ms, 3 * DAY);
}

static void test_roundtrip_random(void)
{
    /* Generated schedules survive text and Postgres round trips. */
    srand(7);
    for (int iter = 0; iter < 2000; iter++) {
        wh_retry_policy p, q;
        char out[WH_RETRY_TEXT_MAX], err[WH_ERRLEN];
        uint32_t n = (uint32_t)(rand() % (WH_RETRY_MAX_STEPS + 1));
        static const int64_t grain[] = {1, SEC, MIN, HOUR, DAY, 7};
        int64_t prev = 1;
        wh_retry_policy_default(&p);
        p.n = n;
        for (uint32_t i = 0; i < n; i++) {
            int64_t g = grain[rand() % (int)WH_ARRAY_LEN(grain)];
            int64_t v = prev + g * (rand() % 4);
            if (v > WH_RETRY_STEP_MAX_MS)
                v = WH_RETRY_STEP_MAX_MS;
            p.steps_ms[i] = (uint32_t)v;
            prev = v;
        }
        CHECK_INT(wh_retry_policy_format(&p, out, sizeof(out)), WH_OK);
        int rc = wh_retry_policy_parse(out, &q, err, sizeof(err));
        if (rc != WH_OK)
            fprintf(stderr, "'%s': %s\n", out, err);
        CHECK_INT(rc, WH_OK);
        CHECK_INT(q.n, n);
        CHECK_MEM(q.steps_ms, n * sizeof(uint32_t), p.steps_ms,
                  n * sizeof(uint32_t));
        CHECK_INT(wh_retry_policy_to_pg(&p, out, sizeof(out)), WH_OK);
        CHECK_INT(wh_retry_policy_from_pg(out, &q, err, sizeof(err)), WH_OK);
        CHECK_INT(q.n, n);
        CHECK_MEM(q.steps_ms, n * sizeof(uint32_t), p.steps_ms,
                  n * sizeof(uint32_t));
    }
}

#define NOT_DURATION " is not a duration (use e.g. 500ms, 5s, 2m, 1h)"
#define NO_UNIT " has no unit (use e.g. 500ms, 5s, 2m, 1h)"

static void check_error(int pg, const char *text, const char *msg)
{
    wh_retry_policy p, before;
    char err[WH_ERRLEN] = "";

    wh_retry_policy_default(&p);
    before = p;
    int rc = pg ? wh_retry_policy_from_pg(text, &p, err, sizeof(err))
                : wh_retry_policy_parse(text, &p, err, sizeof(err));
    CHECK_INT(rc, WH_ERR);
    CHECK_STR(err, msg);
    CHECK_MEM(&p, sizeof(p), &before, sizeof(before));
}

static void test_parse_errors(void)
{
    check_error(0, NULL, "retry schedule is missing");
    check_error(0, "", "retry schedule is empty (use e.g. 5s,30s,2m, or "
                       "none)");
    check_error(0, " \t ", "retry schedule is empty (use e.g. 5s,30s,2m, "
                           "or none)");
    check_error(0, "1s,2s,4x", "step 3 '4x'" NOT_DURATION);
    check_error(0, "5", "step 1 '5'" NO_UNIT);
    check_error(0, "1s, 500 ", "step 2 '500'" NO_UNIT);
    check_error(0, "s", "step 1 's'" NOT_DURATION);
    check_error(0, "ms", "step 1 'ms'" NOT_DURATION);
    check_error(0, "-5s", "step 1 '-5s'" NOT_DURATION);
    check_error(0, "+5s", "step 1 '+5s'" NOT_DURATION);
    check_error(0, "5 s", "step 1 '5 s'" NOT_DURATION);
    check_error(0, "5S", "step 1 '5S'" NOT_DURATION);
    check_error(0, "1.5s", "step 1 '1.5s'" NOT_DURATION);
    check_error(0, "5sec", "step 1 '5sec'" NOT_DURATION);
    check_error(0, "0x10s", "step 1 '0x10s'" NOT_DURATION);
    check_error(0, "1m30s", "step 1 '1m30s'" NOT_DURATION);
    check_error(0, "1s;2s", "step 1 '1s;2s'" NOT_DURATION);
    check_error(0, "none,1s", "step 1 'none'" NOT_DURATION);
    check_error(0, "None", "step 1 'None'" NOT_DURATION);
    check_error(0, "1s,,2s", "step 2 is empty");
    check_error(0, "1s,", "step 2 is empty");
    check_error(0, ",1s", "step 1 is empty");
    check_error(0, "1s, ,2s", "step 2 is empty");
    check_error(0, "0s", "step 1 '0s' is shorter than 1ms");
    check_error(0, "1s,0ms", "step 2 '0ms' is shorter than 1ms");
    check_error(0, "1s,8d", "step 2 '8d' is longer than 7d");
    check_error(0, "169h", "step 1 '169h' is longer than 7d");
    check_error(0, "604800001ms", "step 1 '604800001ms' is longer than 7d");
    check_error(0, "99999999999999999999s",
                "step 1 '99999999999999999999s' is longer than 7d");
    check_error(0, "5s,30s,2s", "step 3 '2s' is shorter than step 2 '30s' "
                                "(steps must not decrease)");
    check_error(0, "1m, 59999ms", "step 2 '59999ms' is shorter than step 1 "
                                  "'1m' (steps must not decrease)");
    check_error(0, "123456789012345678901234567890123456789s",
                "step 1 '12345678901234567890123456789012...'" NOT_DURATION);

    /* 33 steps. */
    char text[WH_RETRY_INPUT_MAX + 2];
    size_t pos = 0;
    for (int i = 0; i <= WH_RETRY_MAX_STEPS; i++)
        pos += (size_t)snprintf(text + pos, sizeof(text) - pos, "%s1s",
                                i ? "," : "");
    check_error(0, text, "more than 32 steps");
    /* One byte too long. */
    memset(text, ' ', sizeof(text));
    memcpy(text, "1s", 2);
    text[WH_RETRY_INPUT_MAX + 1] = '\0';
    check_error(0, text, "retry schedule is longer than 1024 bytes");
    check_error(1, text, "retry schedule is longer than 1024 bytes");

    /* The Postgres form. */
    check_error(1, NULL, "retry schedule is missing");
    check_error(1, "", "retry schedule '' is not an integer array "
                       "(expected e.g. {5000,30000})");
    check_error(1, "{", "retry schedule '{' is not an integer array "
                        "(expected e.g. {5000,30000})");
    check_error(1, "5000,30000", "retry schedule '5000,30000' is not an "
                                 "integer array (expected e.g. "
                                 "{5000,30000})");
    check_error(1, "{5000", "retry schedule '{5000' is not an integer "
                            "array (expected e.g. {5000,30000})");
    check_error(1, "{5000,NULL}", "step 2 is NULL");
    check_error(1, "{null}", "step 1 is NULL");
    check_error(1, "{5000,-1}", "step 2 '-1' is not a whole number of "
                                "milliseconds");
    check_error(1, "{5s}", "step 1 '5s' is not a whole number of "
                           "milliseconds");
    check_error(1, "{1.5}", "step 1 '1.5' is not a whole number of "
                            "milliseconds");
    check_error(1, "{5000,,1}", "step 2 is empty");
    check_error(1, "{0}", "step 1 '0' is shorter than 1ms");
    check_error(1, "{604800001}", "step 1 '604800001' is longer than 7d");
    check_error(1, "{99999999999999999999999999}",
                "step 1 '99999999999999999999999999' is longer than 7d");
    check_error(1, "{30000,5000}", "step 2 '5000' is shorter than step 1 "
                                   "'30000' (steps must not decrease)");
    pos = 0;
    for (int i = 0; i <= WH_RETRY_MAX_STEPS; i++)
        pos += (size_t)snprintf(text + pos, sizeof(text) - pos, "%s1000",
                                i ? "," : "{");
    snprintf(text + pos, sizeof(text) - pos, "}");
    check_error(1, text, "more than 32 steps");

    wh_retry_policy p;
    CHECK_INT(wh_retry_policy_from_pg(" { } ", &p, NULL, 0), WH_OK);
    CHECK_INT(p.n, 0);
    CHECK_INT(wh_retry_policy_from_pg("{ 1000 , 2000 }", &p, NULL, 0),
              WH_OK);
    CHECK_INT(p.n, 2);
    CHECK_INT(p.steps_ms[1], 2000);

    /* Errors are safe with no buffer or a tiny one. */
    char small[8];
    CHECK_INT(wh_retry_policy_parse("4x", &p, NULL, 0), WH_ERR);
    CHECK_INT(wh_retry_policy_parse("4x", &p, small, sizeof(small)), WH_ERR);
    CHECK_STR(small, "step 1 ");
}

static void test_format_limits(void)
{
    wh_retry_policy p;
    char out[WH_RETRY_TEXT_MAX + 8];
    char err[WH_ERRLEN];

    /* The longest output: 32 steps of 604799999ms fill the buffer. */
    CHECK_INT(wh_retry_policy_parse("1s", &p, err, sizeof(err)), WH_OK);
    p.n = WH_RETRY_MAX_STEPS;
    for (int i = 0; i < WH_RETRY_MAX_STEPS; i++)
        p.steps_ms[i] = (uint32_t)(WH_RETRY_STEP_MAX_MS - 1);
    CHECK_INT(wh_retry_policy_format(&p, out, WH_RETRY_TEXT_MAX), WH_OK);
    CHECK_INT(strlen(out), WH_RETRY_TEXT_MAX - 1);
    CHECK_INT(wh_retry_policy_format(&p, out, WH_RETRY_TEXT_MAX - 1),
              WH_ERR);
    CHECK_INT(strlen(out), WH_RETRY_TEXT_MAX - 2);
    wh_retry_policy q;
    CHECK_INT(wh_retry_policy_format(&p, out, WH_RETRY_TEXT_MAX), WH_OK);
    CHECK_INT(wh_retry_policy_parse(out, &q, err, sizeof(err)), WH_OK);
    CHECK_MEM(&q, sizeof(q), &p, sizeof(p));
    CHECK_INT(wh_retry_policy_to_pg(&p, out, WH_RETRY_TEXT_MAX), WH_OK);
    CHECK(strlen(out) < WH_RETRY_TEXT_MAX);
    CHECK_INT(wh_retry_policy_from_pg(out, &q, err, sizeof(err)), WH_OK);
    CHECK_MEM(&q, sizeof(q), &p, sizeof(p));

    /* Every too-small buffer fails and holds a NUL-terminated prefix. */
    static const char *const texts[] = {"1s,2s,4s", "none", "1500ms,7d"};
    for (size_t t = 0; t < WH_ARRAY_LEN(texts); t++) {
        for (int pg = 0; pg <= 1; pg++) {
            char full[WH_RETRY_TEXT_MAX];
            CHECK_INT(wh_retry_policy_parse(texts[t], &p, err, sizeof(err)),
                      WH_OK);
            int rc = pg ? wh_retry_policy_to_pg(&p, full, sizeof(full))
                        : wh_retry_policy_format(&p, full, sizeof(full));
            CHECK_INT(rc, WH_OK);
            size_t len = strlen(full);
            for (size_t cap = 0; cap <= len + 1; cap++) {
                memset(out, 'x', sizeof(out));
                rc = pg ? wh_retry_policy_to_pg(&p, out, cap)
                        : wh_retry_policy_format(&p, out, cap);
                CHECK_INT(rc, cap > len ? WH_OK : WH_ERR);
                if (cap > 0) {
                    size_t got = strnlen(out, cap);
                    CHECK(got < cap);
                    CHECK(memcmp(out, full, got) == 0);
                } else {
                    CHECK(out[0] == 'x');
                }
            }
        }
    }
}

static void test_max_age(void)
{
    wh_retry_policy p;
    char err[WH_ERRLEN];

    wh_retry_policy_default(&p);
    CHECK_INT(wh_retry_policy_set_max_age(&p, 999, err, sizeof(err)),
              WH_ERR);
    CHECK_STR(err, "maximum retry age 999 ms is out of bounds (1s to 30d)");
    CHECK_INT(p.max_age_ms, 3 * DAY);
    CHECK_INT(wh_retry_policy_set_max_age(&p, -1, err, sizeof(err)), WH_ERR);
    CHECK_INT(wh_retry_policy_set_max_age(&p, 30 * DAY + 1, err,
                                          sizeof(err)),
              WH_ERR);
    CHECK_INT(p.max_age_ms, 3 * DAY);
    CHECK_INT(wh_retry_policy_set_max_age(&p, 1000, err, sizeof(err)),
              WH_OK);
    CHECK_INT(p.max_age_ms, 1000);
    CHECK_INT(wh_retry_policy_set_max_age(&p, 30 * DAY, err, sizeof(err)),
              WH_OK);
    CHECK_INT(p.max_age_ms, 30 * DAY);
}

/* The delay for rnd, which must be granted. */
static int64_t next(const wh_retry_policy *p, uint32_t attempt, double rnd)
{
    int64_t d = -1;
    CHECK_INT(wh_retry_next(p, attempt, 0, rnd, &d), WH_OK);
    return d;
}

static void test_jitter_bounds(void)
{
    wh_retry_policy p;
    wh_retry_policy_default(&p);

    int64_t prev_lo = 0, prev_hi = 0;
    for (uint32_t a = 1; a <= p.n; a++) {
        int64_t lo, hi;
        CHECK_INT(wh_retry_window(&p, a, &lo, &hi), WH_OK);
        int64_t w = hi - lo;
        CHECK_INT(next(&p, a, 0.0), lo);
        CHECK_INT(next(&p, a, 0.5), lo + (w + 1) / 2);
        int64_t top = next(&p, a, 0.999999);
        CHECK(top <= hi);
        CHECK(top >= hi - (int64_t)ceil(1e-6 * (double)(w + 1)));
        CHECK_INT(next(&p, a, RND_TOP), hi);
        /* Out-of-range draws are clamped. */
        CHECK_INT(next(&p, a, 1.0), hi);
        CHECK_INT(next(&p, a, 7.5), hi);
        CHECK_INT(next(&p, a, INFINITY), hi);
        CHECK_INT(next(&p, a, -0.5), lo);
        CHECK_INT(next(&p, a, -INFINITY), lo);
        CHECK_INT(next(&p, a, NAN), lo);
        /* Lower bounds grow, and for the default schedule each window
         * starts where the previous one ended: gaps never shrink. */
        CHECK(lo >= prev_lo);
        if (a == 1)
            CHECK_INT(lo, hi / 2);
        else
            CHECK_INT(lo, prev_hi);
        CHECK(hi > lo);
        prev_lo = lo;
        prev_hi = hi;
    }

    /* Draws from the kernel: every sequence of delays is non-decreasing. */
    for (int run = 0; run < 1000; run++) {
        int64_t last = 0;
        for (uint32_t a = 1; a <= p.n; a++) {
            int64_t d = next(&p, a, wh_retry_random());
            CHECK(d >= last);
            last = d;
        }
    }
}

static void check_windows(const char *text, const int64_t (*want)[2],
                          uint32_t n)
{
    wh_retry_policy p;
    char err[WH_ERRLEN];
    CHECK_INT(wh_retry_policy_parse(text, &p, err, sizeof(err)), WH_OK);
    CHECK_INT(p.n, n);
    int64_t prev_lo = 0;
    for (uint32_t a = 1; a <= n; a++) {
        int64_t lo = -1, hi = -1;
        CHECK_INT(wh_retry_window(&p, a, &lo, &hi), WH_OK);
        CHECK_INT(lo, want[a - 1][0]);
        CHECK_INT(hi, want[a - 1][1]);
        CHECK(lo >= prev_lo);
        CHECK(lo >= 1);
        prev_lo = lo;
    }
    int64_t lo, hi;
    CHECK_INT(wh_retry_window(&p, n + 1, &lo, &hi), WH_DECLINED);
}

static void test_windows_custom(void)
{
    /* Doubling: each window starts at the previous step. */
    static const int64_t a[][2] = {{500, 1000}, {1000, 2000}, {2000, 4000}};
    check_windows("1s,2s,4s", a, 3);
    /* Steps growing more slowly keep half of each step as jitter. */
    static const int64_t b[][2] = {{30 * SEC, MIN},
                                   {45 * SEC, 90 * SEC},
                                   {60 * SEC, 2 * MIN}};
    check_windows("1m,90s,2m", b, 3);
    static const int64_t c[][2] = {{2500, 5000}, {2500, 5000}, {2500, 5000}};
    check_windows("5s,5s,5s", c, 3);
    /* Odd and tiny steps: half rounds up, so no delay is 0. */
    static const int64_t d[][2] = {{1, 1}, {1, 1}, {1, 3}, {3, 7}};
    check_windows("1ms,1ms,3ms,7ms", d, 4);
    static const int64_t e[][2] = {{302400000, 604800000},
                                   {302400000, 604800000}};
    check_windows("7d,7d", e, 2);

    wh_retry_policy p;
    char err[WH_ERRLEN];
    CHECK_INT(wh_retry_policy_parse("1ms", &p, err, sizeof(err)), WH_OK);
    CHECK_INT(next(&p, 1, 0.0), 1);
    CHECK_INT(next(&p, 1, RND_TOP), 1);
    CHECK_INT(wh_retry_policy_parse("3ms", &p, err, sizeof(err)), WH_OK);
    CHECK_INT(next(&p, 1, 0.0), 2);
    CHECK_INT(next(&p, 1, 0.49), 2);
    CHECK_INT(next(&p, 1, 0.5), 3);
    CHECK_INT(next(&p, 1, RND_TOP), 3);
}

static void test_exhaustion(void)
{
    wh_retry_policy p;
    char err[WH_ERRLEN];
    int64_t d;

    /* By attempts. */
    wh_retry_policy_default(&p);
    CHECK_INT(wh_retry_next(&p, 10, 0, 0.5, &d), WH_OK);
    CHECK(d >= 12 * HOUR && d <= 24 * HOUR);
    d = -1;
    CHECK_INT(wh_retry_next(&p, 11, 0, 0.5, &d), WH_DECLINED);
    CHECK_INT(d, 0);
    CHECK_INT(wh_retry_next(&p, 12, 0, 0.5, &d), WH_DECLINED);
    CHECK_INT(wh_retry_next(&p, UINT32_MAX, 0, 0.5, &d), WH_DECLINED);

    CHECK_INT(wh_retry_policy_parse("none", &p, err, sizeof(err)), WH_OK);
    CHECK_INT(wh_retry_max_attempts(&p), 1);
    CHECK_INT(wh_retry_next(&p, 1, 0, 0.5, &d), WH_DECLINED);
    CHECK_INT(d, 0);

    char text[WH_RETRY_INPUT_MAX];
    size_t pos = 0;
    for (int i = 0; i < WH_RETRY_MAX_STEPS; i++)
        pos += (size_t)snprintf(text + pos, sizeof(text) - pos, "%s1s",
                                i ? "," : "");
    CHECK_INT(wh_retry_policy_parse(text, &p, err, sizeof(err)), WH_OK);
    CHECK_INT(wh_retry_max_attempts(&p), 33);
    CHECK_INT(wh_retry_next(&p, 32, 0, 0.5, &d), WH_OK);
    CHECK_INT(wh_retry_next(&p, 33, 0, 0.5, &d), WH_DECLINED);

    /* By age: the retry must start no later than max_age_ms. */
    wh_retry_policy_default(&p);
    int64_t max = p.max_age_ms;
    CHECK_INT(wh_retry_next(&p, 1, max - 2500, 0.0, &d), WH_OK);
    CHECK_INT(d, 2500);
    CHECK_INT(wh_retry_next(&p, 1, max - 2500, 0.5, &d), WH_DECLINED);
    CHECK_INT(d, 0);
    CHECK_INT(wh_retry_next(&p, 1, max - 2499, 0.0, &d), WH_DECLINED);
    CHECK_INT(wh_retry_next(&p, 1, max - 5000, RND_TOP, &d), WH_OK);
    CHECK_INT(d, 5000);
    CHECK_INT(wh_retry_next(&p, 1, max, 0.0, &d), WH_DECLINED);
    CHECK_INT(wh_retry_next(&p, 1, max + 1, 0.0, &d), WH_DECLINED);
    CHECK_INT(wh_retry_next(&p, 1, INT64_MAX, 0.0, &d), WH_DECLINED);
    /* Negative ages (clock skew) count as 0. */
    CHECK_INT(wh_retry_next(&p, 10, -5 * DAY, RND_TOP, &d), WH_OK);
    CHECK_INT(d, 24 * HOUR);
    CHECK_INT(wh_retry_next(&p, 10, INT64_MIN, 0.0, &d), WH_OK);
    CHECK_INT(d, 12 * HOUR);

    /* A delivery first attempted 60 h after its creation gets the retries
     * that fit into the remaining 12 h. */
    int64_t age = 60 * HOUR;
    uint32_t attempt = 1;
    while (wh_retry_next(&p, attempt, age, RND_TOP, &d) == WH_OK) {
        age += d;
        attempt++;
    }
    /* 5s+30s+2m+10m+30m+1h+3h+6h = 10h42m35s fits, 12h more does not. */
    CHECK_INT(attempt, 9);
    CHECK_INT(age, 60 * HOUR + 10 * HOUR + 42 * MIN + 35 * SEC);
    CHECK(age <= max);

    /* A short maximum age ends a custom schedule early. */
    CHECK_INT(wh_retry_policy_parse("600ms,1s", &p, err, sizeof(err)), WH_OK);
    CHECK_INT(wh_retry_policy_set_max_age(&p, 1000, err, sizeof(err)),
              WH_OK);
    CHECK_INT(wh_retry_next(&p, 1, 0, 0.0, &d), WH_OK);
    CHECK_INT(d, 300);
    CHECK_INT(wh_retry_next(&p, 2, 500, 0.0, &d), WH_OK);
    CHECK_INT(d, 500);
    CHECK_INT(wh_retry_next(&p, 2, 501, 0.0, &d), WH_DECLINED);
}

static void test_retry_after(void)
{
    wh_retry_policy p;
    char err[WH_ERRLEN];
    wh_retry_policy_default(&p);

    /* Absent: the computed delay, untouched. */
    CHECK_INT(wh_retry_after_delay(&p, -1, 2500), 2500);
    CHECK_INT(wh_retry_after_delay(&p, -1, 0), 0);
    CHECK_INT(wh_retry_after_delay(&p, INT64_MIN, 7), 7);
    /* Never earlier than computed. */
    CHECK_INT(wh_retry_after_delay(&p, 0, 2500), 2500);
    CHECK_INT(wh_retry_after_delay(&p, 2, 2500), 2500);
    CHECK_INT(wh_retry_after_delay(&p, 3, 2500), 3000);
    CHECK_INT(wh_retry_after_delay(&p, 120, 5000), 120 * SEC);
    CHECK_INT(wh_retry_after_delay(&p, 3600, 20 * HOUR), 20 * HOUR);
    /* At most the largest step (24 h). */
    CHECK_INT(wh_retry_after_delay(&p, 86400, 5000), 24 * HOUR);
    CHECK_INT(wh_retry_after_delay(&p, 86401, 5000), 24 * HOUR);
    CHECK_INT(wh_retry_after_delay(&p, 1000000000, 5000), 24 * HOUR);
    CHECK_INT(wh_retry_after_delay(&p, INT64_MAX / 1000 + 1, 5000),
              24 * HOUR);
    CHECK_INT(wh_retry_after_delay(&p, INT64_MAX, 5000), 24 * HOUR);
    /* At least 1 s when the endpoint asked to wait. */
    CHECK_INT(wh_retry_after_delay(&p, 0, 0), 1000);
    CHECK_INT(wh_retry_after_delay(&p, 0, 999), 1000);
    CHECK_INT(wh_retry_after_delay(&p, 0, 1001), 1001);

    /* A schedule of short steps: the cap is its largest step, the 1 s
     * floor wins over it. */
    CHECK_INT(wh_retry_policy_parse("50ms,100ms", &p, err, sizeof(err)),
              WH_OK);
    CHECK_INT(wh_retry_after_delay(&p, 0, 60), 1000);
    CHECK_INT(wh_retry_after_delay(&p, 30, 60), 1000);
    CHECK_INT(wh_retry_after_delay(&p, -1, 60), 60);
    CHECK_INT(wh_retry_policy_parse("1s,2m", &p, err, sizeof(err)), WH_OK);
    CHECK_INT(wh_retry_after_delay(&p, 90, 1000), 90 * SEC);
    CHECK_INT(wh_retry_after_delay(&p, 600, 1000), 2 * MIN);
    /* The cap never goes below the computed delay. */
    CHECK_INT(wh_retry_after_delay(&p, 600, 3 * MIN), 3 * MIN);
    /* No steps: capped at the longest step allowed. */
    CHECK_INT(wh_retry_policy_parse("none", &p, err, sizeof(err)), WH_OK);
    CHECK_INT(wh_retry_after_delay(&p, 30, 0), 30 * SEC);
    CHECK_INT(wh_retry_after_delay(&p, 30 * 86400, 0), 7 * DAY);
}

static void test_classify(void)
{
    static const struct {
        int status;
        const char *cls;
        wh_retry_verdict want;
    } cases[] = {
        /* No usable response: retried, whatever the status field says. */
        {0, "timeout", WH_RETRY_YES},
        {0, "connect", WH_RETRY_YES},
        {0, "dns", WH_RETRY_YES},
        {0, "tls", WH_RETRY_YES},
        {0, "network", WH_RETRY_YES},
        {0, "other", WH_RETRY_YES},
        {0, "cancelled", WH_RETRY_YES},
        {0, "blocked_address", WH_RETRY_REFUSED},
        {500, "blocked_address", WH_RETRY_REFUSED},
        {0, "endpoint_not_found", WH_RETRY_YES},
        {0, "endpoint_disabled", WH_RETRY_YES},
        {0, "signing", WH_RETRY_YES},
        {0, "some_future_class", WH_RETRY_YES},
        {200, "network", WH_RETRY_YES},
        {404, "timeout", WH_RETRY_YES},
        {0, NULL, WH_RETRY_YES},
        {0, "", WH_RETRY_YES},
        {0, "http_status", WH_RETRY_YES},
        /* Retried statuses. */
        {408, "http_status", WH_RETRY_YES},
        {425, "http_status", WH_RETRY_YES},
        {429, "http_status", WH_RETRY_YES},
        {429, NULL, WH_RETRY_YES},
        {500, "http_status", WH_RETRY_YES},
        {502, "http_status", WH_RETRY_YES},
        {503, "http_status", WH_RETRY_YES},
        {504, "http_status", WH_RETRY_YES},
        {599, "http_status", WH_RETRY_YES},
        /* Gone. */
        {410, "http_status", WH_RETRY_GONE},
        {410, NULL, WH_RETRY_GONE},
        {410, "", WH_RETRY_GONE},
        /* Permanent. */
        {400, "http_status", WH_RETRY_NO},
        {401, "http_status", WH_RETRY_NO},
        {403, "http_status", WH_RETRY_NO},
        {404, "http_status", WH_RETRY_NO},
        {405, "http_status", WH_RETRY_NO},
        {407, "http_status", WH_RETRY_NO},
        {409, "http_status", WH_RETRY_NO},
        {411, "http_status", WH_RETRY_NO},
        {413, "http_status", WH_RETRY_NO},
        {415, "http_status", WH_RETRY_NO},
        {422, "http_status", WH_RETRY_NO},
        {424, "http_status", WH_RETRY_NO},
        {426, "http_status", WH_RETRY_NO},
        {428, "http_status", WH_RETRY_NO},
        {431, "http_status", WH_RETRY_NO},
        {451, "http_status", WH_RETRY_NO},
        {499, "http_status", WH_RETRY_NO},
        {100, "http_status", WH_RETRY_NO},
        {199, "http_status", WH_RETRY_NO},
        {300, "http_status", WH_RETRY_NO},
        {301, "http_status", WH_RETRY_NO},
        {302, "http_status", WH_RETRY_NO},
        {304, "http_status", WH_RETRY_NO},
        {307, "http_status", WH_RETRY_NO},
        {308, "http_status", WH_RETRY_NO},
        {399, "http_status", WH_RETRY_NO},
        /* Successes are not failures. */
        {200, NULL, WH_RETRY_NO},
        {204, "http_status", WH_RETRY_NO},
        {299, NULL, WH_RETRY_NO},
        /* Not HTTP statuses: treated as a server fault. */
        {1, "http_status", WH_RETRY_YES},
        {99, "http_status", WH_RETRY_YES},
        {600, "http_status", WH_RETRY_YES},
        {999, "http_status", WH_RETRY_YES},
        {-1, "http_status", WH_RETRY_YES},
    };
    for (size_t i = 0; i < WH_ARRAY_LEN(cases); i++) {
        wh_retry_verdict v = wh_retry_classify(cases[i].status, cases[i].cls);
        if (v != cases[i].want)
            fprintf(stderr, "classify(%d, %s)\n", cases[i].status,
                    cases[i].cls ? cases[i].cls : "NULL");
        CHECK_INT(v, cases[i].want);
    }
    /* Every status from 0 to 999 with a response, by range. */
    for (int s = 0; s <= 999; s++) {
        wh_retry_verdict want;
        if (s == 410)
            want = WH_RETRY_GONE;
        else if (s == 408 || s == 425 || s == 429)
            want = WH_RETRY_YES;
        else if (s >= 100 && s <= 499)
            want = WH_RETRY_NO;
        else
            want = WH_RETRY_YES;
        CHECK_INT(wh_retry_classify(s, "http_status"), want);
    }

    CHECK_STR(wh_retry_verdict_name(WH_RETRY_NO), "permanent");
    CHECK_STR(wh_retry_verdict_name(WH_RETRY_YES), "retry");
    CHECK_STR(wh_retry_verdict_name(WH_RETRY_GONE), "gone");
    CHECK_STR(wh_retry_verdict_name(WH_RETRY_REFUSED), "refused");
    CHECK_STR(wh_retry_verdict_name((wh_retry_verdict)42), "unknown");
}

static void test_random(void)
{
    enum { DRAWS = 10000 };

    /* wh_retry_random itself: in [0, 1), mean 0.5, both halves hit. */
    double sum = 0;
    int low = 0, in_range = 0;
    for (int i = 0; i < DRAWS; i++) {
        double r = wh_retry_random();
        in_range += r >= 0.0 && r < 1.0;
        low += r < 0.5;
        sum += r;
    }
    CHECK_INT(in_range, DRAWS);
    /* Standard error of the mean: 0.289 / 100; 0.02 is about 7 of them. */
    CHECK(fabs(sum / DRAWS - 0.5) < 0.02);
    CHECK(low > DRAWS / 2 - 400 && low < DRAWS / 2 + 400);

    /* Delays of every default step: within the window, mean in the
     * middle (tolerance 2% of the width, about 7 standard errors). */
    wh_retry_policy p;
    wh_retry_policy_default(&p);
    for (uint32_t a = 1; a <= p.n; a++) {
        int64_t lo, hi, d, min = INT64_MAX, max = 0;
        double total = 0;
        int ok = 0;
        CHECK_INT(wh_retry_window(&p, a, &lo, &hi), WH_OK);
        for (int i = 0; i < DRAWS; i++) {
            if (wh_retry_next(&p, a, 0, wh_retry_random(), &d) != WH_OK)
                continue;
            ok += d >= lo && d <= hi;
            if (d < min)
                min = d;
            if (d > max)
                max = d;
            total += (double)d;
        }
        CHECK_INT(ok, DRAWS);
        double mid = ((double)lo + (double)hi) / 2;
        double width = (double)(hi - lo);
        CHECK(fabs(total / DRAWS - mid) < 0.02 * width);
        /* The draws cover the window. */
        CHECK((double)(min - lo) < 0.01 * width);
        CHECK((double)(hi - max) < 0.01 * width);
    }
}

TEST_MAIN(test_default, test_parse, test_roundtrip_random, test_parse_errors,
          test_format_limits, test_max_age, test_jitter_bounds,
          test_windows_custom, test_exhaustion, test_retry_after,
          test_classify, test_random)
