/*
 * retry.c - the retry policy (retry.h): schedule parsing and formatting
 * (text and Postgres integer[] forms), jitter windows, exhaustion by
 * attempts and age, Retry-After bounds and failure classification.
 *
 * Pure and allocation-free; called from the delivery stage after every
 * failed attempt, from webhookctl and from endpoint loading, on any
 * thread.
 */
#include "retry.h"

#include <assert.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

_Static_assert(sizeof(wh_retry_policy) <= 144,
               "wh_retry_policy is kept per endpoint: keep it small");
_Static_assert(WH_RETRY_STEP_MAX_MS <= UINT32_MAX,
               "steps are stored as uint32_t milliseconds");

#define SHOW 32        /* longest step text echoed in an error */
#define TOKEN_MAX 32   /* longest step text parsed (longer is invalid) */
#define HINT "(use e.g. 500ms, 5s, 2m, 1h)"

static const uint32_t default_steps_ms[] = {
    5 * 1000,       30 * 1000,       2 * 60 * 1000,   10 * 60 * 1000,
    30 * 60 * 1000, 3600 * 1000,     3 * 3600 * 1000, 6 * 3600 * 1000,
    12 * 3600 * 1000, 24 * 3600 * 1000,
};

static const struct {
    const char *name;
    int64_t ms;
} units[] = {
    {"d", 24LL * 3600 * 1000},
    {"h", 3600LL * 1000},
    {"m", 60LL * 1000},
    {"s", 1000},
    {"ms", 1},
};

void wh_retry_policy_default(wh_retry_policy *p)
{
    memset(p, 0, sizeof(*p));
    p->max_age_ms = WH_RETRY_MAX_AGE_DEFAULT_MS;
    p->n = (uint32_t)WH_ARRAY_LEN(default_steps_ms);
    memcpy(p->steps_ms, default_steps_ms, sizeof(default_steps_ms));
}

static bool is_space(char c) { return c == ' ' || c == '\t'; }

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

/* Narrows [*s, *e) to exclude surrounding spaces and tabs. */
static void trim(const char **s, const char **e)
{
    while (*s < *e && is_space(**s))
        (*s)++;
    while (*e > *s && is_space((*e)[-1]))
        (*e)--;
}

static bool equals(const char *s, const char *e, const char *word)
{
    size_t n = strlen(word);
    return (size_t)(e - s) == n && memcmp(s, word, n) == 0;
}

/* Parses a step written as digits and a unit into *ms. On failure writes
 * the message for step number idx and returns WH_ERR. */
static int parse_duration_step(uint32_t idx, const char *tok, size_t len,
                               int64_t *ms, char *err, size_t errlen)
{
    int show = (int)(len < SHOW ? len : SHOW);
    const char *more = len > SHOW ? "..." : "";
    size_t digits = 0;
    char buf[TOKEN_MAX + 1];

    while (digits < len && is_digit(tok[digits]))
        digits++;
    if (digits == len && len > 0)
        return wh_errf(err, errlen, "step %u '%.*s%s' has no unit " HINT,
                       idx, show, tok, more);
    bool unit_ok = false;
    for (size_t i = 0; i < WH_ARRAY_LEN(units); i++)
        if (equals(tok + digits, tok + len, units[i].name))
            unit_ok = true;
    if (digits == 0 || !unit_ok || len > TOKEN_MAX)
        return wh_errf(err, errlen, "step %u '%.*s%s' is not a duration " HINT,
                       idx, show, tok, more);
    memcpy(buf, tok, len);
    buf[len] = '\0';
    if (wh_parse_duration_ms(buf, ms) != WH_OK)
        *ms = INT64_MAX; /* digits and a valid unit: only overflow fails */
    return WH_OK;
}

/* Parses a step written as a whole number of milliseconds (Postgres
 * integer[] element) into *ms, saturating far above the largest step. */
static int parse_ms_step(uint32_t idx, const char *tok, size_t len,
                         int64_t *ms, char *err, size_t errlen)
{
    int show = (int)(len < SHOW ? len : SHOW);
    const char *more = len > SHOW ? "..." : "";
    int64_t v = 0;

    if (len == 4 && strncasecmp(tok, "null", 4) == 0)
        return wh_errf(err, errlen, "step %u is NULL", idx);
    if (len == 0)
        return wh_errf(err, errlen, "step %u is empty", idx);
    for (size_t i = 0; i < len; i++) {
        if (!is_digit(tok[i]))
            return wh_errf(err, errlen,
                           "step %u '%.*s%s' is not a whole number of "
                           "milliseconds",
                           idx, show, tok, more);
        if (v <= WH_RETRY_STEP_MAX_MS)
            v = v * 10 + (tok[i] - '0');
    }
    *ms = v;
    return WH_OK;
}

/* Parses the comma-separated steps in [s, e) into out (n and steps). */
static int parse_steps(const char *s, const char *e, bool pg,
                       wh_retry_policy *out, char *err, size_t errlen)
{
    const char *prev_tok = NULL;
    size_t prev_len = 0;

    out->n = 0;
    for (uint32_t idx = 1;; idx++) {
        const char *comma = memchr(s, ',', (size_t)(e - s));
        const char *ts = s, *te = comma ? comma : e;
        int64_t ms;

        trim(&ts, &te);
        size_t len = (size_t)(te - ts);
        int show = (int)(len < SHOW ? len : SHOW);
        const char *more = len > SHOW ? "..." : "";
        if (idx > WH_RETRY_MAX_STEPS)
            return wh_errf(err, errlen, "more than %d steps",
                           WH_RETRY_MAX_STEPS);
        if (len == 0)
            return wh_errf(err, errlen, "step %u is empty", idx);
        int rc = pg ? parse_ms_step(idx, ts, len, &ms, err, errlen)
                    : parse_duration_step(idx, ts, len, &ms, err, errlen);
        if (rc != WH_OK)
            return rc;
        if (ms < WH_RETRY_STEP_MIN_MS)
            return wh_errf(err, errlen, "step %u '%.*s%s' is shorter than 1ms",
                           idx, show, ts, more);
        if (ms > WH_RETRY_STEP_MAX_MS)
            return wh_errf(err, errlen, "step %u '%.*s%s' is longer than 7d",
                           idx, show, ts, more);
        if (out->n > 0 && (uint32_t)ms < out->steps_ms[out->n - 1]) {
            int pshow = (int)(prev_len < SHOW ? prev_len : SHOW);
            return wh_errf(err, errlen,
                           "step %u '%.*s%s' is shorter than step %u "
                           "'%.*s%s' (steps must not decrease)",
                           idx, show, ts, more, idx - 1, pshow, prev_tok,
                           prev_len > SHOW ? "..." : "");
        }
        out->steps_ms[out->n++] = (uint32_t)ms;
        prev_tok = ts;
        prev_len = len;
        if (!comma)
            return WH_OK;
        s = comma + 1;
    }
}

/* Common front of both parsers: bounds the input, strips the Postgres
 * braces, recognises the empty schedule, then parses the steps. */
static int parse(const char *text, bool pg, wh_retry_policy *p, char *err,
                 size_t errlen)
{
    wh_retry_policy tmp;

    if (!text)
        return wh_errf(err, errlen, "retry schedule is missing");
    size_t len = strnlen(text, WH_RETRY_INPUT_MAX + 1);
    if (len > WH_RETRY_INPUT_MAX)
        return wh_errf(err, errlen, "retry schedule is longer than %d bytes",
                       WH_RETRY_INPUT_MAX);
    const char *s = text, *e = text + len;
    trim(&s, &e);
    memset(&tmp, 0, sizeof(tmp));
    tmp.max_age_ms = WH_RETRY_MAX_AGE_DEFAULT_MS;
    if (pg) {
        int show = (int)(e - s < SHOW ? e - s : SHOW);
        if (e - s < 2 || *s != '{' || e[-1] != '}')
            return wh_errf(err, errlen,
                           "retry schedule '%.*s%s' is not an integer array "
                           "(expected e.g. {5000,30000})",
                           show, s, e - s > SHOW ? "..." : "");
        s++;
        e--;
        trim(&s, &e);
        if (s == e)
            goto done;
    } else {
        if (s == e)
            return wh_errf(err, errlen,
                           "retry schedule is empty (use e.g. 5s,30s,2m, or "
                           "none)");
        if (equals(s, e, "none"))
            goto done;
    }
    if (parse_steps(s, e, pg, &tmp, err, errlen) != WH_OK)
        return WH_ERR;
done:
    *p = tmp;
    return WH_OK;
}

int wh_retry_policy_parse(const char *text, wh_retry_policy *p, char *err,
                          size_t errlen)
{
    return parse(text, false, p, err, errlen);
}

int wh_retry_policy_from_pg(const char *text, wh_retry_policy *p, char *err,
                            size_t errlen)
{
    return parse(text, true, p, err, errlen);
}

/* Appends the NUL-terminated piece to out at *pos; on overflow writes
 * what fits and returns WH_ERR. */
static int append(char *out, size_t cap, size_t *pos, const char *piece)
{
    size_t n = strlen(piece);
    if (*pos + n < cap) {
        memcpy(out + *pos, piece, n + 1);
        *pos += n;
        return WH_OK;
    }
    if (*pos < cap) {
        memcpy(out + *pos, piece, cap - 1 - *pos);
        out[cap - 1] = '\0';
        *pos = cap - 1;
    }
    return WH_ERR;
}

static int format(const wh_retry_policy *p, bool pg, char *out, size_t cap)
{
    size_t pos = 0;
    char piece[32];

    assert(p->n <= WH_RETRY_MAX_STEPS);
    if (cap == 0)
        return WH_ERR;
    out[0] = '\0';
    if (p->n == 0)
        return append(out, cap, &pos, pg ? "{}" : "none");
    if (pg && append(out, cap, &pos, "{") != WH_OK)
        return WH_ERR;
    for (uint32_t i = 0; i < p->n; i++) {
        int64_t ms = p->steps_ms[i];
        const char *sep = i > 0 ? "," : "";
        if (pg) {
            snprintf(piece, sizeof(piece), "%s%lld", sep, (long long)ms);
        } else {
            size_t u = 0;
            while (ms % units[u].ms != 0)
                u++;
            snprintf(piece, sizeof(piece), "%s%lld%s", sep,
                     (long long)(ms / units[u].ms), units[u].name);
        }
        if (append(out, cap, &pos, piece) != WH_OK)
            return WH_ERR;
    }
    if (pg && append(out, cap, &pos, "}") != WH_OK)
        return WH_ERR;
    return WH_OK;
}

int wh_retry_policy_format(const wh_retry_policy *p, char *out, size_t cap)
{
    return format(p, false, out, cap);
}

int wh_retry_policy_to_pg(const wh_retry_policy *p, char *out, size_t cap)
{
    return format(p, true, out, cap);
}

int wh_retry_policy_set_max_age(wh_retry_policy *p, int64_t max_age_ms,
                                char *err, size_t errlen)
{
    if (max_age_ms < WH_RETRY_MAX_AGE_MIN_MS ||
        max_age_ms > WH_RETRY_MAX_AGE_MAX_MS)
        return wh_errf(err, errlen,
                       "maximum retry age %lld ms is out of bounds (1s to "
                       "30d)",
                       (long long)max_age_ms);
    p->max_age_ms = max_age_ms;
    return WH_OK;
}

uint32_t wh_retry_max_attempts(const wh_retry_policy *p)
{
    assert(p->n <= WH_RETRY_MAX_STEPS);
    return p->n + 1;
}

int wh_retry_window(const wh_retry_policy *p, uint32_t attempt,
                    int64_t *lo_ms, int64_t *hi_ms)
{
    assert(p->n <= WH_RETRY_MAX_STEPS);
    assert(attempt >= 1);
    if (attempt > p->n)
        return WH_DECLINED;
    int64_t d = p->steps_ms[attempt - 1];
    int64_t lo = d - d / 2;
    if (attempt > 1 && p->steps_ms[attempt - 2] < lo)
        lo = p->steps_ms[attempt - 2];
    assert(lo >= 1 && lo <= d);
    *lo_ms = lo;
    *hi_ms = d;
    return WH_OK;
}

int wh_retry_next(const wh_retry_policy *p, uint32_t attempt, int64_t age_ms,
                  double rnd, int64_t *delay_ms)
{
    int64_t lo, hi;

    assert(p->max_age_ms >= WH_RETRY_MAX_AGE_MIN_MS &&
           p->max_age_ms <= WH_RETRY_MAX_AGE_MAX_MS);
    *delay_ms = 0;
    if (wh_retry_window(p, attempt, &lo, &hi) != WH_OK)
        return WH_DECLINED;
    if (!(rnd >= 0.0)) /* negative or NaN */
        rnd = 0.0;
    if (rnd > 1.0)
        rnd = 1.0;
    int64_t width = hi - lo;
    int64_t off = (int64_t)(rnd * (double)(width + 1));
    if (off > width)
        off = width;
    int64_t delay = lo + off;
    if (age_ms < 0)
        age_ms = 0;
    if (delay > p->max_age_ms - age_ms)
        return WH_DECLINED;
    *delay_ms = delay;
    return WH_OK;
}

int64_t wh_retry_after_delay(const wh_retry_policy *p, int64_t retry_after_s,
                             int64_t computed_ms)
{
    assert(p->n <= WH_RETRY_MAX_STEPS);
    assert(computed_ms >= 0);
    if (retry_after_s < 0)
        return computed_ms;
    int64_t cap = p->n > 0 ? (int64_t)p->steps_ms[p->n - 1]
                           : WH_RETRY_STEP_MAX_MS;
    if (cap < computed_ms)
        cap = computed_ms;
    int64_t ra_ms =
        retry_after_s > INT64_MAX / 1000 ? INT64_MAX : retry_after_s * 1000;
    int64_t d = ra_ms > computed_ms ? ra_ms : computed_ms;
    if (d > cap)
        d = cap;
    if (d < 1000)
        d = 1000;
    return d;
}

double wh_retry_random(void)
{
    uint64_t r;
    if (wh_random_bytes(&r, sizeof(r)) != WH_OK)
        return 0.5;
    return (double)(r >> 11) * 0x1.0p-53;
}

wh_retry_verdict wh_retry_classify(int status, const char *error_class)
{
    if (error_class && strcmp(error_class, "blocked_address") == 0)
        return WH_RETRY_REFUSED;
    if (error_class && error_class[0] &&
        strcmp(error_class, "http_status") != 0)
        return WH_RETRY_YES;
    if (status == 408 || status == 425 || status == 429)
        return WH_RETRY_YES;
    if (status == 410)
        return WH_RETRY_GONE;
    if (status >= 100 && status <= 499)
        return WH_RETRY_NO;
    return WH_RETRY_YES; /* no response, 5xx, or not an HTTP status */
}

const char *wh_retry_verdict_name(wh_retry_verdict v)
{
    switch (v) {
    case WH_RETRY_NO: return "permanent";
    case WH_RETRY_YES: return "retry";
    case WH_RETRY_GONE: return "gone";
    case WH_RETRY_REFUSED: return "refused";
    }
    return "unknown";
}
