/*
 * utf8.c - the strict UTF-8 validator and the sanitizer declared in
 * utf8.h. Every other module that checks or cleans UTF-8 calls these, so
 * there is one rule: what RFC 3629 allows. No state.
 */
#include "utf8.h"

#include <string.h>

int wh_utf8_seq(const void *s, size_t n)
{
    const unsigned char *u = s;
    unsigned char c = u[0], lo = 0x80, hi = 0xBF;
    int len;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0; /* overlong below U+0800 */
        else if (c == 0xED)
            hi = 0x9F; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90; /* overlong below U+10000 */
        else if (c == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
    } else {
        return -1; /* continuation, C0/C1 (overlong) or F5..FF lead */
    }
    for (int i = 1; i < len; i++) {
        if ((size_t)i >= n || u[i] < lo || u[i] > hi)
            return -i;
        lo = 0x80;
        hi = 0xBF;
    }
    return len;
}

bool wh_utf8_valid(const void *s, size_t n, size_t *bad_at)
{
    const unsigned char *u = s;
    for (size_t i = 0; i < n;) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        int k = wh_utf8_seq(u + i, n - i);
        if (k < 0) {
            if (bad_at)
                *bad_at = i;
            return false;
        }
        i += (size_t)k;
    }
    return true;
}

/* The output for the character at u[0..n): sets *out and *outlen and returns
 * the input bytes it stands for. */
static size_t next_char(const unsigned char *u, size_t n, unsigned flags,
                        const unsigned char **out, size_t *outlen)
{
    static const unsigned char repl[] = WH_UTF8_REPLACEMENT;
    unsigned char c = u[0];
    if (c < 0x80) {
        bool keep = c >= 0x20 && c != 0x7F;
        if (c == '\t')
            keep = flags & WH_UTF8_KEEP_TAB;
        else if (c == '\n' || c == '\r')
            keep = flags & WH_UTF8_KEEP_NEWLINE;
        *out = keep ? u : repl;
        *outlen = keep ? 1 : 3;
        return 1;
    }
    int k = wh_utf8_seq(u, n);
    if (k < 0 || (c == 0xC2 && u[1] < 0xA0)) { /* invalid, or C1 control */
        *out = repl;
        *outlen = 3;
        return k < 0 ? (size_t)-k : 2;
    }
    *out = u;
    *outlen = (size_t)k;
    return (size_t)k;
}

size_t wh_utf8_sanitize(char *dst, size_t cap, const void *src, size_t n,
                        unsigned flags, size_t *used)
{
    const unsigned char *u = src;
    size_t o = 0, i = 0;
    while (i < n && cap > 0) {
        /* runs of printable ASCII, the common case, in one copy */
        size_t run = 0;
        while (i + run < n && u[i + run] >= 0x20 && u[i + run] < 0x7F)
            run++;
        if (run > 0) {
            if (run > cap - 1 - o)
                run = cap - 1 - o;
            memcpy(dst + o, u + i, run);
            o += run;
            i += run;
            if (i == n || o == cap - 1)
                break;
        }
        const unsigned char *out;
        size_t outlen, in = next_char(u + i, n - i, flags, &out, &outlen);
        if (o + outlen > cap - 1)
            break;
        memcpy(dst + o, out, outlen);
        o += outlen;
        i += in;
    }
    if (cap > 0)
        dst[o] = '\0';
    if (used)
        *used = i;
    return o;
}

int wh_utf8_sanitize_buf(wh_buf *b, const void *src, size_t n,
                         unsigned flags, size_t limit, size_t *used)
{
    const unsigned char *u = src;
    size_t saved = b->len, i = 0;
    size_t room = b->max > b->len ? b->max - b->len : 0;
    if (limit < room)
        room = limit;
    char chunk[512];
    while (i < n && room > 0) {
        size_t cap = room < sizeof(chunk) - 1 ? room + 1 : sizeof(chunk);
        size_t in, w = wh_utf8_sanitize(chunk, cap, u + i, n - i, flags, &in);
        if (w == 0)
            break; /* the next character does not fit */
        if (wh_buf_add(b, chunk, w) != WH_OK) {
            b->len = saved;
            if (b->data)
                b->data[saved] = '\0';
            return WH_ERR;
        }
        room -= w;
        i += in;
    }
    if (used)
        *used = i;
    return WH_OK;
}
