/*
 * limit.c - per-endpoint admission control (limit.h): the token bucket
 * that enforces an endpoint's rate limit and the circuit breaker that
 * stops sending to an endpoint that keeps failing.
 *
 * Pure and allocation-free; called by the delivery stage for each lane
 * before it starts an attempt and after the attempt's outcome, on the
 * thread that runs the lane.
 */
#include "limit.h"

#include <assert.h>

#define UNIT 1000000LL /* millionths of a token per token */

_Static_assert(sizeof(wh_bucket) == 24, "wh_bucket is kept per lane");
_Static_assert(sizeof(wh_breaker) <= 48, "wh_breaker is kept per lane");
_Static_assert((int64_t)WH_BUCKET_BURST_MAX * UNIT <= INT64_MAX / 4,
               "a full bucket fits in int64_t with room for one refill");
_Static_assert(WH_BREAKER_COOLDOWN_MAX_US <= INT64_MAX / 4,
               "doubling a cool-down cannot overflow");

/* ---- token bucket ------------------------------------------------------ */

static uint32_t clamp_rate(int64_t rate_per_s)
{
    if (rate_per_s <= 0)
        return 0;
    if (rate_per_s > WH_BUCKET_RATE_MAX)
        return WH_BUCKET_RATE_MAX;
    return (uint32_t)rate_per_s;
}

static uint32_t clamp_burst(int64_t burst, uint32_t rate_per_s)
{
    if (burst <= 0)
        burst = rate_per_s / 10;
    if (burst < 1)
        burst = 1;
    if (burst > WH_BUCKET_BURST_MAX)
        burst = WH_BUCKET_BURST_MAX;
    return (uint32_t)burst;
}

static int64_t capacity(const wh_bucket *b)
{
    return (int64_t)b->burst * UNIT;
}

/* The tokens b holds at now_us, and in *at the time they are counted at:
 * now_us, or the last refill when now_us is earlier. */
static int64_t tokens_at(const wh_bucket *b, int64_t now_us, int64_t *at)
{
    int64_t cap = capacity(b);

    assert(b->burst >= 1 && b->burst <= WH_BUCKET_BURST_MAX);
    assert(b->rate_per_s <= WH_BUCKET_RATE_MAX);
    assert(b->tokens >= 0 && b->tokens <= cap);
    if (b->last_us != INT64_MIN && now_us <= b->last_us) {
        *at = b->last_us;
        return b->tokens;
    }
    *at = now_us;
    if (b->rate_per_s == 0)
        return cap;
    if (b->last_us == INT64_MIN)
        return b->tokens;

    /* now_us > last_us, so the difference fits in uint64_t. Tokens grow
     * by rate_per_s millionths per microsecond; past need / rate the
     * bucket is full, and below it dt * rate <= need cannot overflow. */
    uint64_t dt = (uint64_t)now_us - (uint64_t)b->last_us;
    uint64_t need = (uint64_t)(cap - b->tokens);
    if (dt > need / b->rate_per_s)
        return cap;
    return b->tokens + (int64_t)(dt * b->rate_per_s);
}

static void refill(wh_bucket *b, int64_t now_us)
{
    int64_t at;
    b->tokens = tokens_at(b, now_us, &at);
    b->last_us = at;
}

void wh_bucket_init(wh_bucket *b, int64_t rate_per_s, int64_t burst)
{
    assert(b);
    b->rate_per_s = clamp_rate(rate_per_s);
    b->burst = clamp_burst(burst, b->rate_per_s);
    b->tokens = capacity(b);
    b->last_us = INT64_MIN;
}

void wh_bucket_set_rate(wh_bucket *b, int64_t rate_per_s, int64_t burst,
                        int64_t now_us)
{
    assert(b);
    bool was_unlimited = b->rate_per_s == 0;

    refill(b, now_us);
    b->rate_per_s = clamp_rate(rate_per_s);
    b->burst = clamp_burst(burst, b->rate_per_s);
    if (was_unlimited || b->tokens > capacity(b))
        b->tokens = capacity(b);
}

bool wh_bucket_take(wh_bucket *b, int64_t now_us)
{
    assert(b);
    if (b->rate_per_s == 0)
        return true;
    refill(b, now_us);
    if (b->tokens < UNIT)
        return false;
    b->tokens -= UNIT;
    return true;
}

int64_t wh_bucket_wait_us(const wh_bucket *b, int64_t now_us)
{
    assert(b);
    if (b->rate_per_s == 0)
        return 0;
    int64_t at;
    int64_t tokens = tokens_at(b, now_us, &at);
    if (tokens >= UNIT)
        return 0;
    return (UNIT - tokens + b->rate_per_s - 1) / b->rate_per_s;
}

/* ---- circuit breaker --------------------------------------------------- */

static int64_t clamp_us(int64_t v, int64_t lo, int64_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

static int64_t add_sat(int64_t t, int64_t d)
{
    assert(d >= 0);
    return t > INT64_MAX - d ? INT64_MAX : t + d;
}

static void trip(wh_breaker *br, int64_t now_us)
{
    br->state = WH_BREAKER_OPEN;
    br->failures = 0;
    br->open_until_us = add_sat(now_us, br->open_us);
}

void wh_breaker_init(wh_breaker *br, uint32_t threshold, int64_t open_us_min,
                     int64_t open_us_max)
{
    assert(br);
    br->state = WH_BREAKER_CLOSED;
    br->threshold = threshold;
    br->failures = 0;
    br->open_us_min = clamp_us(open_us_min, 1, WH_BREAKER_COOLDOWN_MAX_US);
    br->open_us_max =
        clamp_us(open_us_max, br->open_us_min, WH_BREAKER_COOLDOWN_MAX_US);
    br->open_us = br->open_us_min;
    br->open_until_us = 0;
}

bool wh_breaker_allow(wh_breaker *br, int64_t now_us)
{
    assert(br);
    switch (br->state) {
    case WH_BREAKER_CLOSED:
        return true;
    case WH_BREAKER_OPEN:
        if (now_us < br->open_until_us)
            return false;
        br->state = WH_BREAKER_HALF_OPEN;
        return true;
    case WH_BREAKER_HALF_OPEN:
        return false;
    }
    assert(!"unknown breaker state");
    return false;
}

void wh_breaker_success(wh_breaker *br, int64_t now_us)
{
    assert(br);
    (void)now_us;
    switch (br->state) {
    case WH_BREAKER_CLOSED:
        br->failures = 0;
        break;
    case WH_BREAKER_OPEN:
        break;
    case WH_BREAKER_HALF_OPEN:
        br->state = WH_BREAKER_CLOSED;
        br->failures = 0;
        br->open_us = br->open_us_min;
        break;
    }
}

void wh_breaker_failure(wh_breaker *br, int64_t now_us)
{
    assert(br);
    switch (br->state) {
    case WH_BREAKER_CLOSED:
        if (br->threshold == 0)
            break;
        assert(br->failures < br->threshold);
        if (++br->failures >= br->threshold)
            trip(br, now_us);
        break;
    case WH_BREAKER_OPEN:
        break;
    case WH_BREAKER_HALF_OPEN:
        br->open_us = br->open_us > br->open_us_max / 2 ? br->open_us_max
                                                        : br->open_us * 2;
        trip(br, now_us);
        break;
    }
}

int64_t wh_breaker_wait_us(const wh_breaker *br, int64_t now_us)
{
    assert(br);
    switch (br->state) {
    case WH_BREAKER_CLOSED:
        return 0;
    case WH_BREAKER_OPEN: {
        if (now_us >= br->open_until_us)
            return 0;
        uint64_t left = (uint64_t)br->open_until_us - (uint64_t)now_us;
        return left > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)left;
    }
    case WH_BREAKER_HALF_OPEN:
        return WH_BREAKER_WAIT_TRIAL;
    }
    assert(!"unknown breaker state");
    return 0;
}

wh_breaker_st wh_breaker_state(const wh_breaker *br, int64_t now_us)
{
    assert(br);
    if (br->state == WH_BREAKER_OPEN && now_us >= br->open_until_us)
        return WH_BREAKER_HALF_OPEN;
    return br->state;
}

const char *wh_breaker_state_name(wh_breaker_st s)
{
    switch (s) {
    case WH_BREAKER_CLOSED:
        return "closed";
    case WH_BREAKER_OPEN:
        return "open";
    case WH_BREAKER_HALF_OPEN:
        return "half_open";
    }
    return "unknown";
}
