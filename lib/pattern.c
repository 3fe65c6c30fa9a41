/*
 * pattern.c - event-type filter validation and matching (pattern.h).
 *
 * Matching walks the pattern and the type segment by segment in place:
 * no allocation, no copies, linear in their lengths. It is called from
 * the fan-out stage for every (event, endpoint) pair; validation is
 * called where filters are written.
 */
#include "pattern.h"

#include <assert.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define SHOW 64 /* longest pattern echoed in an error */

static bool is_type_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '_' || c == ':' || c == '-';
}

/* Writes a printable rendering of c ("'x'" or "byte 0x0a") into buf. */
static const char *show_char(char c, char *buf, size_t len)
{
    unsigned char u = (unsigned char)c;
    if (u > ' ' && u < 0x7f)
        snprintf(buf, len, "'%c'", c);
    else
        snprintf(buf, len, "byte 0x%02x", u);
    return buf;
}

/* Validates p[0..n) as a pattern (wildcards true) or a type. */
static int check_n(const char *p, size_t n, bool wildcards, char *err,
                   size_t errlen)
{
    const char *what = wildcards ? "pattern" : "event type";
    const char *seg = p, *end = p + n;
    int show = (int)(n < SHOW ? n : SHOW);
    char cb[16];

    if (n == 0)
        return wh_errf(err, errlen, "%s is empty", what);
    if (n > WH_TYPE_MAX)
        return wh_errf(err, errlen, "%s '%.*s...' is longer than %d bytes",
                       what, show, p, WH_TYPE_MAX);
    for (;;) {
        const char *dot = memchr(seg, '.', (size_t)(end - seg));
        const char *send = dot ? dot : end;
        size_t slen = (size_t)(send - seg);
        size_t stars = 0;

        if (slen == 0)
            return wh_errf(err, errlen, "%s '%.*s' has an empty segment",
                           what, show, p);
        for (size_t i = 0; i < slen; i++) {
            if (wildcards && seg[i] == '*')
                stars++;
            else if (!is_type_char(seg[i]))
                return wh_errf(err, errlen,
                               "%s '%.*s' contains the invalid character %s",
                               what, show, p,
                               show_char(seg[i], cb, sizeof(cb)));
        }
        if (stars && !(stars == slen && slen <= 2))
            return wh_errf(err, errlen,
                           "pattern '%.*s': '*' must be a whole segment "
                           "('*' or '**')",
                           show, p);
        if (stars == 2 && dot)
            return wh_errf(err, errlen,
                           "pattern '%.*s': '**' must be the last segment",
                           show, p);
        if (!dot)
            return WH_OK;
        seg = dot + 1;
    }
}

int wh_pattern_check(const char *pattern, char *err, size_t errlen)
{
    assert(pattern);
    return check_n(pattern, strnlen(pattern, WH_TYPE_MAX + 1), true, err,
                   errlen);
}

int wh_pattern_type_check(const char *type, char *err, size_t errlen)
{
    assert(type);
    return check_n(type, strnlen(type, WH_TYPE_MAX + 1), false, err, errlen);
}

/* Matches type t[0..tn) against pattern p[0..pn). */
static int match_n(const char *p, size_t pn, const char *t, size_t tn)
{
    const char *pend = p + pn, *tend = t + tn;

    if (tn == 0)
        return 0;
    if (pn == tn && memcmp(p, t, pn) == 0)
        return 1;
    if ((pn == 1 && p[0] == '*') || (pn == 2 && p[0] == '*' && p[1] == '*'))
        return 1;
    for (;;) {
        const char *pdot = memchr(p, '.', (size_t)(pend - p));
        const char *tdot = memchr(t, '.', (size_t)(tend - t));
        const char *ps = pdot ? pdot : pend, *ts = tdot ? tdot : tend;
        size_t pl = (size_t)(ps - p), tl = (size_t)(ts - t);

        if (tl == 0)
            return 0;
        if (pl == 2 && p[0] == '*' && p[1] == '*')
            return 1;
        if (!(pl == 1 && p[0] == '*') && (pl != tl || memcmp(p, t, pl) != 0))
            return 0;
        if (!pdot || !tdot)
            return !pdot && !tdot;
        p = pdot + 1;
        t = tdot + 1;
    }
}

int wh_pattern_match(const char *pattern, const char *type)
{
    assert(pattern && type);
    return match_n(pattern, strlen(pattern), type, strlen(type));
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t';
}

/* Finds the next list entry at or after *pos: sets [*s, *e) to the
 * entry without surrounding spaces and moves *pos past its comma.
 * Returns false at the end of the text. */
static bool next_entry(const char **pos, const char **s, const char **e)
{
    const char *p = *pos, *comma;

    if (!p)
        return false;
    comma = strchr(p, ',');
    *e = comma ? comma : p + strlen(p);
    while (p < *e && is_space(*p))
        p++;
    *s = p;
    while (*e > p && is_space((*e)[-1]))
        (*e)--;
    *pos = comma ? comma + 1 : NULL;
    return true;
}

int wh_pattern_list_check(const char *csv, char *err, size_t errlen)
{
    const char *pos = csv, *s, *e;
    char why[WH_ERRLEN];
    size_t n = 0;

    assert(csv);
    if (strnlen(csv, WH_PATTERN_LIST_LEN_MAX + 1) > WH_PATTERN_LIST_LEN_MAX)
        return wh_errf(err, errlen, "filter list is longer than %d bytes",
                       WH_PATTERN_LIST_LEN_MAX);
    {
        const char *q = csv;
        while (is_space(*q))
            q++;
        if (!*q)
            return wh_errf(err, errlen,
                           "filter list is empty (use * for every event "
                           "type)");
    }
    while (next_entry(&pos, &s, &e)) {
        n++;
        if (n > WH_PATTERN_LIST_MAX)
            return wh_errf(err, errlen,
                           "filter list has more than %d patterns",
                           WH_PATTERN_LIST_MAX);
        if (s == e)
            return wh_errf(err, errlen, "filter list entry %zu is empty", n);
        if (check_n(s, (size_t)(e - s), true, why, sizeof(why)) != WH_OK)
            return wh_errf(err, errlen, "filter list entry %zu: %s", n, why);
    }
    return WH_OK;
}

int wh_pattern_list_match(const char *csv, const char *type)
{
    const char *pos = csv, *s, *e;
    size_t tn;

    assert(csv && type);
    tn = strlen(type);
    while (next_entry(&pos, &s, &e)) {
        if (s < e && match_n(s, (size_t)(e - s), type, tn))
            return 1;
    }
    return 0;
}
