/*
 * fuzz_utf8.c - libFuzzer target for lib/utf8.c, the one UTF-8 rule that
 * makes outside bytes safe for Postgres and terminals. The first input
 * byte picks the sanitizer's flags and output capacity; the rest is the
 * text. The validator and wh_utf8_seq agree (and reject what the RFC 3629
 * decoder here rejects); the sanitizer's output fits its capacity, is
 * NUL-terminated, valid, free of controls it may not keep, reports how
 * much input it stands for, is a fixed point of the sanitizer, equals a
 * clean input, and matches wh_utf8_sanitize_buf. Seeds: corpus/fuzz_utf8/.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "check.h"
#include "utf8.h"

/* An independent reading of RFC 3629 at s[0..n): the code point's length,
 * or 0 when the bytes there are not a well-formed sequence. */
static int rfc3629(const uint8_t *s, size_t n, uint32_t *cp)
{
    uint8_t b = s[0];
    int len;
    uint32_t min;
    if (b < 0x80) {
        *cp = b;
        return 1;
    } else if (b >= 0xc2 && b <= 0xdf) {
        len = 2, min = 0x80, *cp = b & 0x1f;
    } else if (b >= 0xe0 && b <= 0xef) {
        len = 3, min = 0x800, *cp = b & 0x0f;
    } else if (b >= 0xf0 && b <= 0xf4) {
        len = 4, min = 0x10000, *cp = b & 0x07;
    } else {
        return 0;
    }
    if (n < (size_t)len)
        return 0;
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        *cp = *cp << 6 | (s[i] & 0x3f);
    }
    if (*cp < min || *cp > 0x10ffff || (*cp >= 0xd800 && *cp <= 0xdfff))
        return 0;
    return len;
}

/* Every character of s[0..n) is well formed and one the sanitizer keeps. */
static void require_clean(const char *s, size_t n, unsigned flags)
{
    const uint8_t *p = (const uint8_t *)s;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int len = rfc3629(p + i, n - i, &cp);
        REQUIRE(len > 0);
        bool control = cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f);
        if (control) {
            REQUIRE((cp == '\t' && (flags & WH_UTF8_KEEP_TAB)) ||
                    ((cp == '\n' || cp == '\r') &&
                     (flags & WH_UTF8_KEEP_NEWLINE)));
        }
        i += (size_t)len;
    }
}

static bool is_clean(const uint8_t *s, size_t n, unsigned flags)
{
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int len = rfc3629(s + i, n - i, &cp);
        if (len == 0)
            return false;
        if (cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f)) {
            if (!((cp == '\t' && (flags & WH_UTF8_KEEP_TAB)) ||
                  ((cp == '\n' || cp == '\r') &&
                   (flags & WH_UTF8_KEEP_NEWLINE))))
                return false;
        }
        i += (size_t)len;
    }
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned flags = data[0] & 3;
    const uint8_t *s = data + 1;
    size_t n = size - 1;

    /* the validator, wh_utf8_seq and the RFC agree */
    size_t bad_at = (size_t)-1, first_bad = n;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int seq = wh_utf8_seq(s + i, n - i);
        int want = rfc3629(s + i, n - i, &cp);
        REQUIRE(seq != 0 && seq >= -3 && seq <= 4);
        if (seq > 0) {
            REQUIRE(seq == want);
            i += (size_t)seq;
        } else {
            REQUIRE(want == 0);
            REQUIRE((size_t)-seq <= n - i);
            if (first_bad == n)
                first_bad = i;
            i += (size_t)-seq;
        }
    }
    bool valid = wh_utf8_valid(s, n, &bad_at);
    REQUIRE(valid == (first_bad == n));
    if (!valid)
        REQUIRE(bad_at == first_bad);

    /* the sanitizer, with a capacity from the first byte (0 = ample) */
    size_t cap = data[0] >> 2 ? (size_t)(data[0] >> 2) : 3 * n + 4;
    char *out = malloc(cap);
    REQUIRE(out != NULL);
    size_t used = (size_t)-1;
    size_t w = wh_utf8_sanitize(out, cap, s, n, flags, &used);
    REQUIRE(w < cap && out[w] == '\0');
    REQUIRE(used <= n);
    require_clean(out, w, flags);
    if (cap == 3 * n + 4)
        REQUIRE(used == n);
    if (used == n && is_clean(s, n, flags))
        REQUIRE(w == n && memcmp(out, s, n) == 0);

    /* sanitized text is a fixed point */
    char *again = malloc(w + 1);
    REQUIRE(again != NULL);
    size_t used2 = 0;
    size_t w2 = wh_utf8_sanitize(again, w + 1, out, w, flags, &used2);
    REQUIRE(w2 == w && used2 == w && memcmp(again, out, w) == 0);
    free(again);

    /* the buffer form writes the same bytes under the same bound */
    wh_buf b;
    wh_buf_init(&b, 1 << 20);
    size_t used3 = 0;
    REQUIRE(wh_utf8_sanitize_buf(&b, s, n, flags, cap - 1, &used3) == WH_OK);
    REQUIRE(b.len == w && used3 == used);
    REQUIRE(w == 0 || memcmp(b.data, out, w) == 0);
    wh_buf_free(&b);
    free(out);
    return 0;
}
