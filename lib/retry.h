/*
 * retry.h - the retry policy: when a failed delivery is attempted again,
 * when it is exhausted, and which failures are worth retrying.
 *
 * Pure functions over a small fixed-size policy value: no allocation, no
 * clock, no I/O (the caller passes the delivery's age and a random draw),
 * so every function is thread-safe. The delivery stage calls
 * wh_retry_classify and wh_retry_next after each failed attempt;
 * webhookctl parses and formats schedules; endpoint loading converts the
 * Postgres integer[] column with wh_retry_policy_from_pg.
 */
#ifndef WH_RETRY_H
#define WH_RETRY_H

#include <stddef.h>
#include <stdint.h>

#include "wh.h"

/*
 * Schedule. A policy is a list of n steps d_1..d_n (0 <= n <= 32) and a
 * maximum age. Step d_k is the nominal delay before retry k, the retry
 * that follows the failure of attempt k, so a delivery gets at most n + 1
 * attempts. Steps never decrease; each is 1 ms .. 7 d.
 *
 * Default: 5s,30s,2m,10m,30m,1h,3h,6h,12h,24h (10 retries, 11 attempts),
 * maximum age 3 days.
 *
 * Jitter. The delay before retry k is drawn uniformly (whole milliseconds)
 * from the window [lo_k, d_k], where
 *
 *     lo_1 = d_1 / 2 (rounded up)
 *     lo_k = min(d_(k-1), d_k / 2 rounded up)     for k > 1.
 *
 * When each step is at least twice the previous one (the default
 * schedule, any doubling schedule), lo_k = d_(k-1): every retry waits at
 * least the previous step's nominal delay and so at least as long as the
 * previous retry actually waited; gaps between attempts never shrink.
 * Steps that grow more slowly (or repeat, "5s,5s,5s") keep a window of at
 * least half the step instead of a window that shrinks to nothing, so
 * retries of many deliveries that failed together still spread out.
 * Lower bounds never decrease from one retry to the next.
 *
 * Default windows: [2.5s,5s] [5s,30s] [30s,2m] [2m,10m] [10m,30m]
 * [30m,1h] [1h,3h] [3h,6h] [6h,12h] [12h,24h]. Summed, the 11th and last
 * attempt starts between 22h42m37.5s (all draws low) and 46h42m35s (all
 * high) after the first attempt failed, about 34h42m36s on average,
 * plus the time the attempts themselves took.
 *
 * Maximum age. A retry is scheduled only if it would start no later than
 * max_age_ms after the delivery was created: age at failure + delay <=
 * max_age_ms. The default (3 days) does not cut the default schedule
 * short for a delivery attempted promptly; it ends deliveries that waited
 * long before their first attempt (parked behind a blocked lane, consumer
 * lag) and bounds custom schedules.
 */

#define WH_RETRY_MAX_STEPS 32
#define WH_RETRY_STEP_MIN_MS 1LL
#define WH_RETRY_STEP_MAX_MS (7LL * 24 * 3600 * 1000)
#define WH_RETRY_MAX_AGE_DEFAULT_MS (3LL * 24 * 3600 * 1000)
#define WH_RETRY_MAX_AGE_MIN_MS 1000LL
#define WH_RETRY_MAX_AGE_MAX_MS (30LL * 24 * 3600 * 1000)
/* Longest schedule text accepted by the parsers. */
#define WH_RETRY_INPUT_MAX 1024
/* Buffer size (NUL included) that always holds the output of
 * wh_retry_policy_format and wh_retry_policy_to_pg: 32 steps of at most
 * 11 bytes ("604799999ms") and 31 commas. */
#define WH_RETRY_TEXT_MAX 384

/* 144 bytes; one per endpoint in memory. Callers may read the fields;
 * build one only with the functions below so the invariants hold
 * (n <= WH_RETRY_MAX_STEPS, steps in bounds and non-decreasing, max age
 * in bounds). */
typedef struct {
    int64_t max_age_ms;
    uint32_t n;
    uint32_t steps_ms[WH_RETRY_MAX_STEPS];
} wh_retry_policy;

/* Fills p with the default schedule and maximum age. */
void wh_retry_policy_default(wh_retry_policy *p);

/* Parses a schedule written as comma-separated durations, "1s,2s,4s"
 * (units ms, s, m, h, d; a unit is required; spaces around steps are
 * ignored), or "none" for no retries. Sets p's steps and the default
 * maximum age. Returns WH_OK, or WH_ERR with a message such as
 * "step 3 '4x' is not a duration (use e.g. 500ms, 5s, 2m, 1h)" (the
 * caller prefixes the setting's name); on WH_ERR *p is unchanged. */
int wh_retry_policy_parse(const char *text, wh_retry_policy *p, char *err,
                          size_t errlen) WH_MUST_CHECK;

/* Parses the Postgres text form of an integer[] of milliseconds,
 * "{5000,30000}" ("{}" for no retries), with the same rules and messages
 * as wh_retry_policy_parse. Sets the default maximum age. On WH_ERR *p is
 * unchanged. */
int wh_retry_policy_from_pg(const char *text, wh_retry_policy *p,
                            char *err, size_t errlen) WH_MUST_CHECK;

/* Writes p's schedule into out as wh_retry_policy_parse reads it, each
 * step in its largest exact unit ("5s,30s,2m,10m,30m,1h,3h,6h,12h,1d"),
 * "none" when there are no steps. Returns WH_OK, or WH_ERR when cap is
 * too small (out then holds a truncated, NUL-terminated prefix if cap >
 * 0). A buffer of WH_RETRY_TEXT_MAX always suffices. */
int wh_retry_policy_format(const wh_retry_policy *p, char *out,
                           size_t cap) WH_MUST_CHECK;

/* Writes p's schedule as a Postgres integer[] literal of milliseconds,
 * "{5000,30000}", "{}" when there are no steps. Same results as
 * wh_retry_policy_format. */
int wh_retry_policy_to_pg(const wh_retry_policy *p, char *out,
                          size_t cap) WH_MUST_CHECK;

/* Sets the maximum age, WH_RETRY_MAX_AGE_MIN_MS..WH_RETRY_MAX_AGE_MAX_MS.
 * Returns WH_OK, or WH_ERR with the reason (p unchanged). */
int wh_retry_policy_set_max_age(wh_retry_policy *p, int64_t max_age_ms,
                                char *err, size_t errlen) WH_MUST_CHECK;

/* Most attempts a delivery gets under p: n + 1. */
uint32_t wh_retry_max_attempts(const wh_retry_policy *p);

/* The jitter window [*lo_ms, *hi_ms] of the retry that follows the
 * failure of attempt number attempt (1 = the first attempt). Returns
 * WH_OK, or WH_DECLINED when p has no retry after that attempt. */
int wh_retry_window(const wh_retry_policy *p, uint32_t attempt,
                    int64_t *lo_ms, int64_t *hi_ms);

/* Decides what follows the failure of attempt number attempt (>= 1)
 * when the delivery is age_ms old (since its creation; negative ages,
 * from clock skew, count as 0). rnd is a uniform draw in [0, 1) (from
 * wh_retry_random, or fixed in tests); values outside are clamped, NaN
 * counts as 0. Returns WH_OK with *delay_ms in the retry's window, or
 * WH_DECLINED with *delay_ms = 0 when the delivery is exhausted: no step
 * left, or the retry would start more than max_age_ms after creation. */
int wh_retry_next(const wh_retry_policy *p, uint32_t attempt,
                  int64_t age_ms, double rnd, int64_t *delay_ms);

/* The delay to use when the endpoint answered 429 or 503 with a
 * Retry-After of retry_after_s seconds (negative: header absent, the
 * result is computed_ms). Otherwise: the later of computed_ms (from
 * wh_retry_next) and the Retry-After, capped at p's largest step (at
 * least computed_ms; WH_RETRY_STEP_MAX_MS when p has no steps), and at
 * least 1 s. Exhaustion was decided by wh_retry_next with computed_ms, so
 * an honoured Retry-After can start the last retry up to one largest step
 * after the maximum age. Call it for 429 and 503 only. */
int64_t wh_retry_after_delay(const wh_retry_policy *p, int64_t retry_after_s,
                             int64_t computed_ms);

/* A uniform draw in [0, 1) with 53 random bits from wh_random_bytes.
 * Returns 0.5 (the middle of every window) if the kernel's random source
 * fails. */
double wh_retry_random(void);

typedef enum {
    WH_RETRY_NO = 0, /* permanent failure: dead-letter now */
    WH_RETRY_YES,    /* transient failure: retry per the schedule */
    WH_RETRY_GONE,   /* 410 Gone: dead-letter and disable the endpoint */
    WH_RETRY_REFUSED, /* the SSRF guard refused the address: dead-letter */
} wh_retry_verdict;

/* Classifies a failed attempt by its recorded outcome: status is the HTTP
 * status (0 without a response), error_class the attempt's error class
 * (NULL or "http_status" when a response arrived).
 *
 * blocked_address (the SSRF guard refused the address the host resolved
 * to) is REFUSED: a refusal is a verdict on where the endpoint points,
 * not a network fault, and retrying it for the whole schedule would only
 * knock on the refused address again. Any other error class than
 * "http_status" means no usable response and is retried: timeout,
 * connect, dns, tls, network, other, signing, endpoint_not_found (the
 * worker's cache may lag a new endpoint) and endpoint_disabled (an
 * endpoint re-enabled within the maximum age gets its deliveries).
 * Otherwise, by status:
 *   0 (no response), 408, 425, 429, 500-599   YES
 *   410                                       GONE
 *   other 400-499                             NO
 *   100-199, 300-399                          NO (redirects are not
 *                                             followed, so a 3xx is a
 *                                             misconfigured URL)
 *   200-299                                   NO (success; callers do
 *                                             not classify successes)
 *   anything else (not an HTTP status)        YES, as a server fault */
wh_retry_verdict wh_retry_classify(int status, const char *error_class);

/* "permanent", "retry", "gone" or "refused", for logs. */
const char *wh_retry_verdict_name(wh_retry_verdict v);

#endif
