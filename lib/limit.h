/*
 * limit.h - per-endpoint admission control for the delivery stage: a
 * token bucket (the endpoint's rate limit) and a circuit breaker (stop
 * sending to an endpoint that keeps failing, probe it with one request
 * after a cool-down). Exports wh_bucket_* and wh_breaker_*.
 *
 * Pure logic over small fixed-size values embedded in each lane: no
 * allocation, no I/O, no clock reads; every call takes now_us from a
 * monotonic clock (wh_mono_us). No locking: a value belongs to one lane
 * and is used on the thread that runs that lane.
 */
#ifndef WH_LIMIT_H
#define WH_LIMIT_H

#include <stdbool.h>
#include <stdint.h>

#include "wh.h"

/* ---- token bucket ------------------------------------------------------
 *
 * Rate r tokens per second (1..WH_BUCKET_RATE_MAX; 0 = unlimited) and a
 * capacity of `burst` tokens. A new bucket starts full. Over any interval
 * of T seconds at most burst + r*T requests are admitted, and a lane that
 * takes tokens as soon as they exist gets exactly that many.
 *
 * Default burst (burst argument 0): r / 10, at least 1 - a tenth of a
 * second's worth. Any one-second window then sees at most r + burst
 * (about 1.1*r) requests, close to what a receiver enforcing "r per
 * second" accepts, and the loop may wake up to 100 ms late without
 * losing tokens (at 100,000/s a burst of 1 would cap a lane at one
 * request per wake-up). A full second's worth would let an endpoint that
 * was idle receive 2*r in one second.
 *
 * Exact integer arithmetic: tokens are counted in millionths, so r
 * tokens/s add exactly r units per microsecond; no rounding, no drift.
 * Tokens that arrive while the bucket is full are lost, as in any token
 * bucket: a lane that polls late with burst 1 falls behind by its
 * lateness (less than 1 us per token when it sleeps for exactly
 * wh_bucket_wait_us).
 * A now_us earlier than one already seen counts as that earlier time
 * (no time passes); gaps of any size saturate at a full bucket.
 */

#define WH_BUCKET_RATE_MAX 1000000  /* per second; webhookctl's maximum */
#define WH_BUCKET_BURST_MAX 1000000 /* tokens */

/* 24 bytes. Read the fields for metrics only; change them only through
 * the functions below. */
typedef struct {
    int64_t tokens;      /* millionths of a token, 0..burst * 1e6 */
    int64_t last_us;     /* time of the last refill; INT64_MIN before any */
    uint32_t rate_per_s; /* 0 = unlimited */
    uint32_t burst;      /* capacity in tokens, >= 1 */
} wh_bucket;

/* Sets up a full bucket. rate_per_s: 0 = unlimited, negative counts as
 * 0, above WH_BUCKET_RATE_MAX counts as the maximum. burst: 0 = the
 * default above, otherwise 1..WH_BUCKET_BURST_MAX (larger is clamped,
 * negative counts as 0). */
void wh_bucket_init(wh_bucket *b, int64_t rate_per_s, int64_t burst);

/* Changes rate and burst (same rules as wh_bucket_init) at now_us.
 * Tokens earned up to now_us at the old rate are kept, up to the new
 * capacity; a bucket that was unlimited starts full. Calling it again
 * with the same values changes nothing, so endpoint reloads may call it
 * every time. */
void wh_bucket_set_rate(wh_bucket *b, int64_t rate_per_s, int64_t burst,
                        int64_t now_us);

/* Takes one token if one is available at now_us. Returns true when the
 * request may start (always when unlimited), false when it must wait
 * (see wh_bucket_wait_us). */
bool wh_bucket_take(wh_bucket *b, int64_t now_us);

/* Microseconds from now_us until wh_bucket_take succeeds: 0 when a token
 * is available now (or unlimited), at most 1 s. Exact: take fails at
 * now_us + wait - 1 and succeeds at now_us + wait (when now_us is not
 * earlier than a time b has seen; then it counts from that time). Does
 * not change b. */
int64_t wh_bucket_wait_us(const wh_bucket *b, int64_t now_us);

/* ---- circuit breaker ---------------------------------------------------
 *
 * States and transitions:
 *
 *   CLOSED    requests flow. A failure counts; a success resets the
 *             count. `threshold` consecutive failures -> OPEN with the
 *             current cool-down (open_us_min after a close).
 *   OPEN      nothing is allowed until the cool-down has passed. The
 *             first wh_breaker_allow after it -> HALF_OPEN and that
 *             request is the trial. Reports are ignored (they come from
 *             requests started before the breaker opened).
 *   HALF_OPEN the one trial is in flight; nothing else is allowed. Its
 *             report decides: success -> CLOSED (count and cool-down
 *             reset); failure -> OPEN with the cool-down doubled, capped
 *             at open_us_max.
 *
 * The breaker cannot tell which request a report belongs to: in
 * HALF_OPEN the next report is taken as the trial's. With several
 * requests in flight when it opened, a straggler's report may decide
 * instead; the trial's own report then lands in CLOSED or OPEN and is
 * handled there.
 *
 * threshold 0 disables the breaker: it stays CLOSED.
 */

#define WH_BREAKER_COOLDOWN_MAX_US (24LL * 3600 * 1000000) /* 1 day */
/* wh_breaker_wait_us while the trial is in flight: no time bound, ask
 * again after reporting the trial's outcome. */
#define WH_BREAKER_WAIT_TRIAL (-1)

typedef enum {
    WH_BREAKER_CLOSED = 0,
    WH_BREAKER_OPEN,
    WH_BREAKER_HALF_OPEN,
} wh_breaker_st;

/* 48 bytes. Read the fields for metrics only. */
typedef struct {
    wh_breaker_st state;
    uint32_t threshold;     /* consecutive failures that open; 0 = off */
    uint32_t failures;      /* consecutive failures while CLOSED */
    int64_t open_us_min;    /* first cool-down */
    int64_t open_us_max;    /* cap of the doubling */
    int64_t open_us;        /* cool-down of the current/next opening */
    int64_t open_until_us;  /* end of the cool-down while OPEN */
} wh_breaker;

/* Sets up a CLOSED breaker. open_us_min is clamped to
 * 1..WH_BREAKER_COOLDOWN_MAX_US, open_us_max to
 * open_us_min..WH_BREAKER_COOLDOWN_MAX_US. */
void wh_breaker_init(wh_breaker *br, uint32_t threshold, int64_t open_us_min,
                     int64_t open_us_max);

/* Whether a request may start at now_us: true when CLOSED; when OPEN
 * and the cool-down has passed, true once (that request is the trial,
 * state -> HALF_OPEN); false otherwise. Every request it allows must be
 * reported with wh_breaker_success or wh_breaker_failure. */
bool wh_breaker_allow(wh_breaker *br, int64_t now_us);

/* Reports the outcome of an allowed request, at now_us. */
void wh_breaker_success(wh_breaker *br, int64_t now_us);
void wh_breaker_failure(wh_breaker *br, int64_t now_us);

/* Microseconds from now_us until wh_breaker_allow returns true: 0 when
 * CLOSED or the cool-down has passed, the rest of the cool-down when
 * OPEN, WH_BREAKER_WAIT_TRIAL when HALF_OPEN. Does not change br. */
int64_t wh_breaker_wait_us(const wh_breaker *br, int64_t now_us);

/* The state at now_us, as wh_breaker_allow sees it: OPEN whose cool-down
 * has passed reads HALF_OPEN (a trial may start). Does not change br. */
wh_breaker_st wh_breaker_state(const wh_breaker *br, int64_t now_us);

/* "closed", "open" or "half_open", for logs and metrics labels. */
const char *wh_breaker_state_name(wh_breaker_st s);

#endif
