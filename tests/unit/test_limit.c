/*
 * test_limit.c - unit tests for lib/limit.c: token bucket defaults and
 * clamping, admitted counts at 1/s, 10/s, 100,000/s and the maximum,
 * exact waits, no drift over long and irregular runs, rate changes, time
 * going backwards, huge gaps and unlimited buckets; every circuit
 * breaker transition, cool-down doubling and its cap, one trial at a
 * time, reports in each state, and the names.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "limit.h"
#include "test.h"

#define MS 1000LL
#define SEC 1000000LL
#define T0 (5000 * SEC) /* an arbitrary monotonic start */

/* Takes every token available at each step of step_us from start to
 * start + span_us inclusive; returns how many were taken. */
static long long take_all(wh_bucket *b, int64_t start, int64_t span_us,
                          int64_t step_us)
{
    long long n = 0;
    for (int64_t d = 0; d <= span_us; d += step_us)
        while (wh_bucket_take(b, start + d))
            n++;
    return n;
}

static void drain(wh_bucket *b, int64_t now)
{
    while (wh_bucket_take(b, now)) {
    }
}

static void test_bucket_init(void)
{
    wh_bucket b;
    static const struct {
        int64_t rate, burst;
        uint32_t want_rate, want_burst;
    } cases[] = {
        {1, 0, 1, 1},
        {9, 0, 9, 1},
        {10, 0, 10, 1},
        {19, 0, 19, 1},
        {20, 0, 20, 2},
        {100, 0, 100, 10},
        {100000, 0, 100000, 10000},
        {WH_BUCKET_RATE_MAX, 0, WH_BUCKET_RATE_MAX, WH_BUCKET_RATE_MAX / 10},
        {WH_BUCKET_RATE_MAX + 1, 0, WH_BUCKET_RATE_MAX,
         WH_BUCKET_RATE_MAX / 10},
        {INT64_MAX, 0, WH_BUCKET_RATE_MAX, WH_BUCKET_RATE_MAX / 10},
        {0, 0, 0, 1},
        {-5, 0, 0, 1},
        {INT64_MIN, 0, 0, 1},
        {10, 5, 10, 5},
        {10, -1, 10, 1},
        {10, WH_BUCKET_BURST_MAX, 10, WH_BUCKET_BURST_MAX},
        {10, WH_BUCKET_BURST_MAX + 1LL, 10, WH_BUCKET_BURST_MAX},
        {10, INT64_MAX, 10, WH_BUCKET_BURST_MAX},
    };

    CHECK_INT(sizeof(wh_bucket), 24);
    for (size_t i = 0; i < WH_ARRAY_LEN(cases); i++) {
        memset(&b, 0xab, sizeof(b));
        wh_bucket_init(&b, cases[i].rate, cases[i].burst);
        CHECK_INT(b.rate_per_s, cases[i].want_rate);
        CHECK_INT(b.burst, cases[i].want_burst);
        CHECK_INT(b.tokens, (int64_t)cases[i].want_burst * SEC);
    }

    /* A new bucket is full whatever the first time it sees. */
    wh_bucket_init(&b, 10, 3);
    CHECK_INT(wh_bucket_wait_us(&b, INT64_MIN), 0);
    CHECK_INT(take_all(&b, -7 * SEC, 0, 1), 3);
    CHECK_INT(wh_bucket_wait_us(&b, -7 * SEC), 100 * MS);
}

static void test_bucket_rate_10(void)
{
    wh_bucket b;

    /* One token at T0, then one every 100 ms up to T0 + 10 s. */
    wh_bucket_init(&b, 10, 0);
    CHECK_INT(take_all(&b, T0, 10 * SEC, 1 * MS), 10 * 10 + 1);
    CHECK_INT(wh_bucket_wait_us(&b, T0 + 10 * SEC), 100 * MS);

    /* Coarser polling loses nothing as long as it is within the burst. */
    wh_bucket_init(&b, 10, 5);
    CHECK_INT(take_all(&b, T0, 10 * SEC, 500 * MS), 10 * 10 + 5);

    /* Polled slower than the burst covers: tokens beyond it are lost. */
    wh_bucket_init(&b, 10, 0);
    CHECK_INT(take_all(&b, T0, 10 * SEC, 1 * SEC), 10 + 1);
}

static void test_bucket_rate_1(void)
{
    wh_bucket b;

    wh_bucket_init(&b, 1, 0);
    CHECK_INT(b.burst, 1);
    CHECK_INT(take_all(&b, T0, 10 * SEC, 1 * MS), 10 + 1);

    wh_bucket_init(&b, 1, 0);
    CHECK(wh_bucket_take(&b, T0));
    CHECK(!wh_bucket_take(&b, T0));
    CHECK_INT(wh_bucket_wait_us(&b, T0), 1 * SEC);
    CHECK(!wh_bucket_take(&b, T0 + SEC - 1));
    CHECK_INT(wh_bucket_wait_us(&b, T0 + SEC - 1), 1);
    CHECK(wh_bucket_take(&b, T0 + SEC));
    CHECK(!wh_bucket_take(&b, T0 + SEC));
}

static void test_bucket_rate_high(void)
{
    wh_bucket b;

    wh_bucket_init(&b, 100000, 0);
    CHECK_INT(b.burst, 10000);
    CHECK_INT(take_all(&b, T0, 1 * SEC, 1), 100000 + 10000);

    wh_bucket_init(&b, 100000, 0);
    CHECK_INT(take_all(&b, T0, 1 * SEC, 1 * MS), 100000 + 10000);

    /* 100 ms late wake-ups lose nothing at the default burst. */
    wh_bucket_init(&b, 100000, 0);
    CHECK_INT(take_all(&b, T0, 1 * SEC, 100 * MS), 100000 + 10000);

    wh_bucket_init(&b, WH_BUCKET_RATE_MAX, 0);
    CHECK_INT(take_all(&b, T0, 1 * SEC, 1),
              WH_BUCKET_RATE_MAX + WH_BUCKET_RATE_MAX / 10);
}

static void test_bucket_wait_exact(void)
{
    static const int64_t rates[] = {1,      3,      7,      10,
                                    999,    100000, 333333, 999999,
                                    WH_BUCKET_RATE_MAX};
    wh_bucket b;

    for (size_t i = 0; i < WH_ARRAY_LEN(rates); i++) {
        int64_t r = rates[i], now = T0;
        wh_bucket_init(&b, r, 4);
        CHECK_INT(wh_bucket_wait_us(&b, now), 0);
        drain(&b, now);
        for (int k = 1; k <= 200; k++) {
            int64_t w = wh_bucket_wait_us(&b, now);
            CHECK(w >= 1 && w <= 1 * SEC);
            CHECK_INT(wh_bucket_wait_us(&b, now + w), 0);
            CHECK(!wh_bucket_take(&b, now + w - 1));
            CHECK(wh_bucket_take(&b, now + w));
            now += w;
            /* Token k arrives at ceil(k / r) seconds, no rounding drift. */
            CHECK_INT(now - T0, (k * SEC + r - 1) / r);
        }
    }

    /* One token per 333,333.33 us: ceil, then the remainder carries. */
    wh_bucket_init(&b, 3, 2);
    drain(&b, T0);
    CHECK_INT(wh_bucket_wait_us(&b, T0), 333334);
    CHECK(wh_bucket_take(&b, T0 + 333334));
    CHECK_INT(wh_bucket_wait_us(&b, T0 + 333334), 333333);

    /* A bucket of one is full when the token arrives, so the fraction of
     * a microsecond past it is lost: the next wait starts afresh. */
    wh_bucket_init(&b, 3, 1);
    drain(&b, T0);
    CHECK(wh_bucket_take(&b, T0 + 333334));
    CHECK_INT(wh_bucket_wait_us(&b, T0 + 333334), 333334);
}

static void test_bucket_no_drift(void)
{
    wh_bucket b;

    /* 7 million tokens at 7/s, each taken the moment it exists: exactly
     * 1,000,000 s, the waits summing with no error. */
    wh_bucket_init(&b, 7, 2);
    int64_t now = T0;
    drain(&b, now);
    for (long n = 0; n < 7000000; n++) {
        now += wh_bucket_wait_us(&b, now);
        if (!wh_bucket_take(&b, now)) {
            CHECK(!"token missing after its wait");
            break;
        }
    }
    CHECK_INT(now - T0, 1000000 * SEC);

    /* With a bucket of one, each token lands on a whole microsecond and
     * the fraction past it is lost: under 1 us per token, 6/7 on
     * average here (1,000,006 s instead of 1,000,000 s). */
    wh_bucket_init(&b, 7, 1);
    now = T0;
    drain(&b, now);
    for (long n = 0; n < 7000000; n++) {
        now += wh_bucket_wait_us(&b, now);
        if (!wh_bucket_take(&b, now)) {
            CHECK(!"token missing after its wait");
            break;
        }
    }
    CHECK_INT(now - T0, 1000000 * SEC + 6000000);

    /* Irregular polling within the burst: every token is admitted, so
     * the count is burst + floor(rate * elapsed). */
    wh_bucket_init(&b, 13, 50);
    uint32_t x = 12345;
    now = T0;
    long long n = take_all(&b, now, 0, 1);
    for (int i = 0; i < 200000; i++) {
        x = x * 1103515245u + 12345u;
        now += 1 + (x >> 8) % (3 * SEC);
        while (wh_bucket_take(&b, now))
            n++;
    }
    CHECK_INT(n, 50 + (now - T0) * 13 / SEC);
}

static void test_bucket_set_rate(void)
{
    wh_bucket b;

    /* Half a token earned at 10/s is kept at 1000/s. */
    wh_bucket_init(&b, 10, 0);
    drain(&b, T0);
    wh_bucket_set_rate(&b, 1000, 0, T0 + 50 * MS);
    CHECK_INT(b.rate_per_s, 1000);
    CHECK_INT(b.burst, 100);
    CHECK_INT(b.tokens, SEC / 2);
    CHECK_INT(wh_bucket_wait_us(&b, T0 + 50 * MS), 500);
    CHECK(wh_bucket_take(&b, T0 + 50 * MS + 500));

    /* Full at 1000/s (100 tokens); lowering the rate caps the tokens at
     * the new burst. */
    int64_t now = T0 + 10 * SEC;
    CHECK_INT(wh_bucket_wait_us(&b, now), 0);
    wh_bucket_set_rate(&b, 10, 0, now);
    CHECK_INT(b.burst, 1);
    CHECK_INT(take_all(&b, now, 0, 1), 1);
    CHECK_INT(wh_bucket_wait_us(&b, now), 100 * MS);

    /* An explicit burst, raised then lowered: tokens are kept, not
     * created. */
    wh_bucket_set_rate(&b, 10, 20, now);
    CHECK_INT(b.burst, 20);
    CHECK_INT(take_all(&b, now, 0, 1), 0);
    now += 1 * SEC;
    wh_bucket_set_rate(&b, 10, 5, now);
    CHECK_INT(take_all(&b, now, 0, 1), 5);

    /* The same values again and again change nothing. */
    wh_bucket_init(&b, 10, 0);
    long long n = 0;
    for (int64_t t = T0; t <= T0 + 10 * SEC; t += 1 * MS) {
        wh_bucket_set_rate(&b, 10, 0, t);
        while (wh_bucket_take(&b, t))
            n++;
    }
    CHECK_INT(n, 10 * 10 + 1);

    /* Unlimited to limited starts full; limited to unlimited admits all. */
    wh_bucket_init(&b, 0, 0);
    wh_bucket_set_rate(&b, 50, 0, T0);
    CHECK_INT(b.burst, 5);
    CHECK_INT(take_all(&b, T0, 0, 1), 5);
    wh_bucket_set_rate(&b, 0, 0, T0);
    for (int i = 0; i < 1000; i++)
        CHECK(wh_bucket_take(&b, T0));
    CHECK_INT(wh_bucket_wait_us(&b, T0), 0);
    wh_bucket_set_rate(&b, 50, 0, T0 + 1);
    CHECK_INT(take_all(&b, T0 + 1, 0, 1), 5);

    /* A rate above the maximum is clamped. */
    wh_bucket_set_rate(&b, 5000000, 0, T0 + 2);
    CHECK_INT(b.rate_per_s, WH_BUCKET_RATE_MAX);
}

static void test_bucket_backwards(void)
{
    wh_bucket b;

    wh_bucket_init(&b, 10, 0);
    drain(&b, T0 + 10 * SEC);

    /* Earlier times are the latest time seen: nothing earned. */
    CHECK(!wh_bucket_take(&b, T0 + 5 * SEC));
    CHECK_INT(wh_bucket_wait_us(&b, T0 + 5 * SEC), 100 * MS);
    CHECK(!wh_bucket_take(&b, INT64_MIN));
    CHECK(!wh_bucket_take(&b, T0 + 10 * SEC + 99999));
    CHECK(wh_bucket_take(&b, T0 + 10 * SEC + 100000));
    CHECK(!wh_bucket_take(&b, T0 + 10 * SEC + 100000));

    /* Jittery timestamps (each step back 1 ms) earn what the forward
     * ones do: 10 s at 10/s. */
    wh_bucket_init(&b, 10, 0);
    long long n = 0;
    for (int64_t t = T0; t <= T0 + 10 * SEC; t += 2 * MS) {
        while (wh_bucket_take(&b, t))
            n++;
        while (wh_bucket_take(&b, t - 1 * MS))
            n++;
    }
    CHECK_INT(n, 10 * 10 + 1);
}

static void test_bucket_huge_gaps(void)
{
    wh_bucket b;

    /* The largest possible gap fills the bucket, exactly. */
    wh_bucket_init(&b, WH_BUCKET_RATE_MAX, WH_BUCKET_BURST_MAX);
    drain(&b, INT64_MIN + 1);
    CHECK_INT(wh_bucket_wait_us(&b, INT64_MIN + 1), 1);
    CHECK_INT(wh_bucket_wait_us(&b, INT64_MAX), 0);
    CHECK_INT(take_all(&b, INT64_MAX, 0, 1), WH_BUCKET_BURST_MAX);
    CHECK_INT(wh_bucket_wait_us(&b, INT64_MAX), 1);

    wh_bucket_init(&b, 1, 0);
    drain(&b, -1);
    CHECK_INT(take_all(&b, INT64_MAX, 0, 1), 1);
    CHECK_INT(wh_bucket_wait_us(&b, INT64_MAX), 1 * SEC);

    /* Just short of a full refill at the slowest rate and largest burst. */
    wh_bucket_init(&b, 1, WH_BUCKET_BURST_MAX);
    drain(&b, 0);
    int64_t full_us = (int64_t)WH_BUCKET_BURST_MAX * SEC;
    CHECK_INT(take_all(&b, full_us - 1, 0, 1), WH_BUCKET_BURST_MAX - 1);
    CHECK_INT(take_all(&b, full_us, 0, 1), 1);
}

static void test_bucket_unlimited(void)
{
    wh_bucket b;

    wh_bucket_init(&b, 0, 0);
    for (int i = 0; i < 100000; i++)
        CHECK(wh_bucket_take(&b, T0));
    CHECK_INT(wh_bucket_wait_us(&b, T0), 0);
    CHECK(wh_bucket_take(&b, INT64_MIN));
    CHECK(wh_bucket_take(&b, INT64_MAX));
    CHECK_INT(wh_bucket_wait_us(&b, INT64_MIN), 0);
}

/* ---- circuit breaker --------------------------------------------------- */

static void test_breaker_init(void)
{
    wh_breaker br;

    CHECK(sizeof(wh_breaker) <= 48);
    memset(&br, 0xab, sizeof(br));
    wh_breaker_init(&br, 5, 1 * SEC, 60 * SEC);
    CHECK_INT(wh_breaker_state(&br, T0), WH_BREAKER_CLOSED);
    CHECK_INT(br.failures, 0);
    CHECK_INT(br.open_us, 1 * SEC);
    CHECK(wh_breaker_allow(&br, T0));
    CHECK_INT(wh_breaker_wait_us(&br, T0), 0);

    wh_breaker_init(&br, 5, 0, 0);
    CHECK_INT(br.open_us_min, 1);
    CHECK_INT(br.open_us_max, 1);
    wh_breaker_init(&br, 5, -10, -20);
    CHECK_INT(br.open_us_min, 1);
    CHECK_INT(br.open_us_max, 1);
    wh_breaker_init(&br, 5, 10 * SEC, 1 * SEC);
    CHECK_INT(br.open_us_min, 10 * SEC);
    CHECK_INT(br.open_us_max, 10 * SEC);
    wh_breaker_init(&br, 5, INT64_MAX, INT64_MAX);
    CHECK_INT(br.open_us_min, WH_BREAKER_COOLDOWN_MAX_US);
    CHECK_INT(br.open_us_max, WH_BREAKER_COOLDOWN_MAX_US);
    wh_breaker_init(&br, 5, 1, INT64_MAX);
    CHECK_INT(br.open_us_max, WH_BREAKER_COOLDOWN_MAX_US);
}

static void test_breaker_closed_counts(void)
{
    wh_breaker br;

    wh_breaker_init(&br, 3, 1 * SEC, 8 * SEC);
    for (int round = 0; round < 5; round++) {
        wh_breaker_failure(&br, T0);
        wh_breaker_failure(&br, T0);
        CHECK_INT(br.failures, 2);
        CHECK_INT(wh_breaker_state(&br, T0), WH_BREAKER_CLOSED);
        CHECK(wh_breaker_allow(&br, T0));
        wh_breaker_success(&br, T0);
        CHECK_INT(br.failures, 0);
    }
    wh_breaker_success(&br, T0);
    CHECK_INT(br.failures, 0);

    /* The third consecutive failure opens it for open_us_min. */
    wh_breaker_failure(&br, T0);
    wh_breaker_failure(&br, T0);
    wh_breaker_failure(&br, T0 + 7);
    CHECK_INT(wh_breaker_state(&br, T0 + 7), WH_BREAKER_OPEN);
    CHECK_INT(br.open_until_us, T0 + 7 + 1 * SEC);
    CHECK_INT(br.failures, 0);

    /* Threshold 1 opens on the first failure. */
    wh_breaker_init(&br, 1, 1 * SEC, 8 * SEC);
    wh_breaker_failure(&br, T0);
    CHECK_INT(wh_breaker_state(&br, T0), WH_BREAKER_OPEN);
    CHECK(!wh_breaker_allow(&br, T0));

    /* Threshold 0 never opens. */
    wh_breaker_init(&br, 0, 1 * SEC, 8 * SEC);
    for (int i = 0; i < 100000; i++)
        wh_breaker_failure(&br, T0 + i);
    CHECK_INT(wh_breaker_state(&br, T0), WH_BREAKER_CLOSED);
    CHECK(wh_breaker_allow(&br, T0));
    CHECK_INT(br.failures, 0);

    /* The largest threshold counts up to it. */
    wh_breaker_init(&br, UINT32_MAX, 1, 1);
    br.failures = UINT32_MAX - 2;
    wh_breaker_failure(&br, T0);
    CHECK_INT(wh_breaker_state(&br, T0), WH_BREAKER_CLOSED);
    wh_breaker_failure(&br, T0);
    CHECK_INT(wh_breaker_state(&br, T0), WH_BREAKER_OPEN);
}

static void open_it(wh_breaker *br, int64_t now)
{
    for (uint32_t i = 0; i < br->threshold; i++)
        wh_breaker_failure(br, now);
}

static void test_breaker_open(void)
{
    wh_breaker br;

    wh_breaker_init(&br, 2, 1 * SEC, 8 * SEC);
    open_it(&br, T0);
    CHECK_INT(wh_breaker_state(&br, T0), WH_BREAKER_OPEN);
    CHECK(!wh_breaker_allow(&br, T0));
    CHECK_INT(wh_breaker_wait_us(&br, T0), 1 * SEC);
    CHECK_INT(wh_breaker_wait_us(&br, T0 + 400 * MS), 600 * MS);
    CHECK(!wh_breaker_allow(&br, T0 + SEC - 1));
    CHECK_INT(wh_breaker_wait_us(&br, T0 + SEC - 1), 1);
    CHECK_INT(wh_breaker_state(&br, T0 + SEC - 1), WH_BREAKER_OPEN);

    /* Reports while OPEN come from requests started before: ignored. */
    wh_breaker_success(&br, T0 + 500 * MS);
    wh_breaker_failure(&br, T0 + 500 * MS);
    CHECK_INT(br.state, WH_BREAKER_OPEN);
    CHECK_INT(br.open_until_us, T0 + 1 * SEC);
    CHECK_INT(br.open_us, 1 * SEC);

    /* Time going backwards only lengthens the wait. */
    CHECK(!wh_breaker_allow(&br, T0 - 10 * SEC));
    CHECK_INT(wh_breaker_wait_us(&br, T0 - 10 * SEC), 11 * SEC);
    CHECK_INT(wh_breaker_wait_us(&br, INT64_MIN), INT64_MAX);

    /* The cool-down is over: the state reads HALF_OPEN, waits are 0, and
     * reports still change nothing until the trial starts. */
    CHECK_INT(wh_breaker_state(&br, T0 + SEC), WH_BREAKER_HALF_OPEN);
    CHECK_INT(wh_breaker_wait_us(&br, T0 + SEC), 0);
    CHECK_INT(wh_breaker_wait_us(&br, T0 + 100 * SEC), 0);
    wh_breaker_success(&br, T0 + SEC);
    CHECK_INT(br.state, WH_BREAKER_OPEN);
    wh_breaker_failure(&br, T0 + SEC);
    CHECK_INT(br.state, WH_BREAKER_OPEN);
    CHECK_INT(br.open_until_us, T0 + 1 * SEC);
}

static void test_breaker_trial(void)
{
    wh_breaker br;

    wh_breaker_init(&br, 2, 1 * SEC, 8 * SEC);
    open_it(&br, T0);

    /* Exactly one trial, however often and however late it is asked. */
    CHECK(wh_breaker_allow(&br, T0 + 3 * SEC));
    CHECK_INT(wh_breaker_state(&br, T0 + 3 * SEC), WH_BREAKER_HALF_OPEN);
    for (int i = 0; i < 100; i++)
        CHECK(!wh_breaker_allow(&br, T0 + 3 * SEC + i * SEC));
    CHECK_INT(wh_breaker_wait_us(&br, T0 + 3 * SEC), WH_BREAKER_WAIT_TRIAL);
    CHECK_INT(wh_breaker_wait_us(&br, INT64_MAX), WH_BREAKER_WAIT_TRIAL);

    /* Its success closes the breaker. */
    wh_breaker_success(&br, T0 + 4 * SEC);
    CHECK_INT(wh_breaker_state(&br, T0 + 4 * SEC), WH_BREAKER_CLOSED);
    CHECK_INT(br.failures, 0);
    CHECK(wh_breaker_allow(&br, T0 + 4 * SEC));
    CHECK(wh_breaker_allow(&br, T0 + 4 * SEC));
    CHECK_INT(wh_breaker_wait_us(&br, T0 + 4 * SEC), 0);

    /* The count starts again from zero after closing. */
    wh_breaker_failure(&br, T0 + 5 * SEC);
    CHECK_INT(wh_breaker_state(&br, T0 + 5 * SEC), WH_BREAKER_CLOSED);
    wh_breaker_failure(&br, T0 + 5 * SEC);
    CHECK_INT(wh_breaker_state(&br, T0 + 5 * SEC), WH_BREAKER_OPEN);

    /* Its failure re-opens it, from the time of the report. */
    CHECK(wh_breaker_allow(&br, T0 + 6 * SEC));
    wh_breaker_failure(&br, T0 + 7 * SEC);
    CHECK_INT(wh_breaker_state(&br, T0 + 7 * SEC), WH_BREAKER_OPEN);
    CHECK_INT(wh_breaker_wait_us(&br, T0 + 7 * SEC), 2 * SEC);
    CHECK(!wh_breaker_allow(&br, T0 + 9 * SEC - 1));
    CHECK(wh_breaker_allow(&br, T0 + 9 * SEC));
    CHECK(!wh_breaker_allow(&br, T0 + 9 * SEC));

    /* A report while the trial is out is taken as the trial's; the
     * trial's own report then lands in CLOSED. */
    wh_breaker_success(&br, T0 + 9 * SEC + 1);
    CHECK_INT(br.state, WH_BREAKER_CLOSED);
    wh_breaker_failure(&br, T0 + 9 * SEC + 2);
    CHECK_INT(br.state, WH_BREAKER_CLOSED);
    CHECK_INT(br.failures, 1);
}

/* Fails every trial of br from now and returns the successive
 * cool-downs in out[0..n). */
static void cooldowns(wh_breaker *br, int64_t now, int64_t *out, int n)
{
    open_it(br, now);
    for (int i = 0; i < n; i++) {
        out[i] = wh_breaker_wait_us(br, now);
        now += out[i];
        CHECK(!wh_breaker_allow(br, now - 1));
        CHECK(wh_breaker_allow(br, now));
        wh_breaker_failure(br, now);
    }
}

static void test_breaker_doubling(void)
{
    wh_breaker br;
    int64_t got[8];

    wh_breaker_init(&br, 3, 1 * SEC, 10 * SEC);
    cooldowns(&br, T0, got, 7);
    static const int64_t want1[] = {1, 2, 4, 8, 10, 10, 10};
    for (int i = 0; i < 7; i++)
        CHECK_INT(got[i], want1[i] * SEC);

    /* A successful trial resets the cool-down to the minimum. */
    int64_t now = br.open_until_us;
    CHECK(wh_breaker_allow(&br, now));
    wh_breaker_success(&br, now);
    CHECK_INT(br.open_us, 1 * SEC);
    cooldowns(&br, now, got, 3);
    CHECK_INT(got[0], 1 * SEC);
    CHECK_INT(got[1], 2 * SEC);
    CHECK_INT(got[2], 4 * SEC);

    /* Cap not a power-of-two multiple of the minimum. */
    wh_breaker_init(&br, 1, 3 * SEC, 10 * SEC);
    cooldowns(&br, T0, got, 4);
    CHECK_INT(got[0], 3 * SEC);
    CHECK_INT(got[1], 6 * SEC);
    CHECK_INT(got[2], 10 * SEC);
    CHECK_INT(got[3], 10 * SEC);

    /* min == max: no doubling. */
    wh_breaker_init(&br, 1, 5 * SEC, 5 * SEC);
    cooldowns(&br, T0, got, 3);
    for (int i = 0; i < 3; i++)
        CHECK_INT(got[i], 5 * SEC);

    /* Doubling up to the largest cool-down, then staying there. */
    wh_breaker_init(&br, 1, 1, WH_BREAKER_COOLDOWN_MAX_US);
    open_it(&br, 0);
    int64_t t = 0;
    for (int i = 0; i < 64; i++) {
        t = br.open_until_us;
        CHECK(wh_breaker_allow(&br, t));
        wh_breaker_failure(&br, t);
    }
    CHECK_INT(br.open_us, WH_BREAKER_COOLDOWN_MAX_US);
    CHECK_INT(wh_breaker_wait_us(&br, t), WH_BREAKER_COOLDOWN_MAX_US);

    /* Opening near the end of time saturates instead of overflowing. */
    wh_breaker_init(&br, 1, 10 * SEC, 10 * SEC);
    wh_breaker_failure(&br, INT64_MAX - 5);
    CHECK_INT(br.open_until_us, INT64_MAX);
    CHECK(!wh_breaker_allow(&br, INT64_MAX - 1));
    CHECK_INT(wh_breaker_wait_us(&br, INT64_MAX - 1), 1);
    CHECK(wh_breaker_allow(&br, INT64_MAX));
}

static void test_breaker_names(void)
{
    CHECK_STR(wh_breaker_state_name(WH_BREAKER_CLOSED), "closed");
    CHECK_STR(wh_breaker_state_name(WH_BREAKER_OPEN), "open");
    CHECK_STR(wh_breaker_state_name(WH_BREAKER_HALF_OPEN), "half_open");
    CHECK_STR(wh_breaker_state_name((wh_breaker_st)42), "unknown");
}

TEST_MAIN(test_bucket_init, test_bucket_rate_10, test_bucket_rate_1,
          test_bucket_rate_high, test_bucket_wait_exact, test_bucket_no_drift,
          test_bucket_set_rate, test_bucket_backwards, test_bucket_huge_gaps,
          test_bucket_unlimited, test_breaker_init, test_breaker_closed_counts,
          test_breaker_open, test_breaker_trial, test_breaker_doubling,
          test_breaker_names)
