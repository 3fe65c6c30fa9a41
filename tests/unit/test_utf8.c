/*
 * test_utf8.c - unit tests for lib/utf8.c: the strict validator on every
 * class of ill-formed input (overlongs, surrogates, values above
 * U+10FFFF, bad leads, truncation), an exhaustive comparison with a
 * decoder written from RFC 3629, and the sanitizer's replacements and its
 * capacity bound, byte by byte.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "utf8.h"

#define R WH_UTF8_REPLACEMENT

static int seq(const char *s, size_t n) { return wh_utf8_seq(s, n); }

static void test_seq(void)
{
    CHECK_INT(seq("a", 1), 1);
    CHECK_INT(seq("\0", 1), 1);
    CHECK_INT(seq("\x7f", 1), 1);
    CHECK_INT(seq("\xc2\x80", 2), 2);         /* U+0080 */
    CHECK_INT(seq("\xdf\xbf", 2), 2);         /* U+07FF */
    CHECK_INT(seq("\xe0\xa0\x80", 3), 3);     /* U+0800 */
    CHECK_INT(seq("\xed\x9f\xbf", 3), 3);     /* U+D7FF */
    CHECK_INT(seq("\xee\x80\x80", 3), 3);     /* U+E000 */
    CHECK_INT(seq("\xef\xbf\xbf", 3), 3);     /* U+FFFF */
    CHECK_INT(seq("\xf0\x90\x80\x80", 4), 4); /* U+10000 */
    CHECK_INT(seq("\xf4\x8f\xbf\xbf", 4), 4); /* U+10FFFF */
    /* surrogates */
    CHECK_INT(seq("\xed\xa0\x80", 3), -1);
    CHECK_INT(seq("\xed\xbf\xbf", 3), -1);
    /* overlong forms */
    CHECK_INT(seq("\xc0\xaf", 2), -1);
    CHECK_INT(seq("\xc1\xbf", 2), -1);
    CHECK_INT(seq("\xe0\x80\xaf", 3), -1);
    CHECK_INT(seq("\xe0\x9f\xbf", 3), -1);
    CHECK_INT(seq("\xf0\x80\x80\xaf", 4), -1);
    CHECK_INT(seq("\xf0\x8f\xbf\xbf", 4), -1);
    /* above U+10FFFF and leads F5..FF */
    CHECK_INT(seq("\xf4\x90\x80\x80", 4), -1);
    CHECK_INT(seq("\xf5\x80\x80\x80", 4), -1);
    CHECK_INT(seq("\xf8\x88\x80\x80\x80", 5), -1);
    CHECK_INT(seq("\xff", 1), -1);
    CHECK_INT(seq("\xfe", 1), -1);
    /* lone continuation bytes */
    CHECK_INT(seq("\x80", 1), -1);
    CHECK_INT(seq("\xbf", 1), -1);
    /* truncated: the maximal subpart is what was valid so far */
    CHECK_INT(seq("\xe2\x82", 2), -2);
    CHECK_INT(seq("\xf0\x9f\x98", 3), -3);
    CHECK_INT(seq("\xf0\x9f", 2), -2);
    CHECK_INT(seq("\xc3", 1), -1);
    CHECK_INT(seq("\xe2\x82x", 3), -2);
    CHECK_INT(seq("\xf0\x9f\x98\x00", 4), -3);
}

/* The code point of s[0..n) when it is one well-formed character of
 * exactly n bytes per RFC 3629, else -1: written from the table in
 * section 4, independently of utf8.c. */
static long ref_decode(const unsigned char *s, size_t n)
{
    static const long min[5] = {0, 0, 0x80, 0x800, 0x10000};
    size_t want = s[0] < 0x80 ? 1 : (s[0] & 0xE0) == 0xC0 ? 2
                  : (s[0] & 0xF0) == 0xE0 ? 3 : (s[0] & 0xF8) == 0xF0 ? 4 : 0;
    if (want == 0 || want != n)
        return -1;
    long cp = want == 1 ? s[0] : s[0] & (0x7F >> want);
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return -1;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    if (cp < min[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return -1;
    return cp;
}

/* Every 1-, 2- and 3-byte string, and every 4-byte string with an F0..F7
 * lead: the validator agrees with the reference decoder. */
static void test_exhaustive(void)
{
    long bad = 0, good = 0;
    unsigned char s[4];
    for (unsigned a = 0; a < 256; a++) {
        s[0] = (unsigned char)a;
        good += (ref_decode(s, 1) >= 0) == wh_utf8_valid(s, 1, NULL);
        for (unsigned b = 0; b < 256; b++) {
            s[1] = (unsigned char)b;
            int want = ref_decode(s, 2) >= 0;
            if (want != (wh_utf8_seq(s, 2) == 2) && a >= 0x80)
                bad++;
            for (unsigned c = 0x70; c < 0xC0; c++) {
                s[2] = (unsigned char)c;
                if (a >= 0xE0 && a < 0xF0 &&
                    (ref_decode(s, 3) >= 0) != (wh_utf8_seq(s, 3) == 3))
                    bad++;
                if (a < 0xF0 || a > 0xF7)
                    continue;
                for (unsigned d = 0x7F; d <= 0xC0; d++) {
                    s[3] = (unsigned char)d;
                    if ((ref_decode(s, 4) >= 0) !=
                        (wh_utf8_seq(s, 4) == 4))
                        bad++;
                }
            }
        }
    }
    CHECK_INT(bad, 0);
    CHECK_INT(good, 256);
}

static void test_valid(void)
{
    size_t at = 99;
    CHECK(wh_utf8_valid("", 0, &at));
    CHECK(wh_utf8_valid("h\xc3\xa9llo \xf0\x9f\x98\x80", 11, &at));
    CHECK(wh_utf8_valid("a\0b", 3, &at));
    CHECK(!wh_utf8_valid("abc\xed\xa0\x80", 6, &at));
    CHECK_INT(at, 3);
    CHECK(!wh_utf8_valid("\xc0\xaf", 2, &at));
    CHECK_INT(at, 0);
    CHECK(!wh_utf8_valid("xy\xf5\x80\x80\x80", 6, &at));
    CHECK_INT(at, 2);
    CHECK(!wh_utf8_valid("\xe2\x82", 2, NULL));
}

static void check_clean(const char *in, size_t n, unsigned flags,
                        const char *want)
{
    char out[256];
    size_t used = 0;
    size_t w = wh_utf8_sanitize(out, sizeof(out), in, n, flags, &used);
    CHECK_STR(out, want);
    CHECK_INT(w, strlen(want));
    CHECK_INT(used, n);
    CHECK(wh_utf8_valid(out, w, NULL));
    CHECK(memchr(out, '\0', w) == NULL);
}

static void test_sanitize(void)
{
    check_clean("plain text", 10, 0, "plain text");
    check_clean("h\xc3\xa9 \xf0\x9f\x98\x80", 8, 0, "h\xc3\xa9 \xf0\x9f\x98\x80");
    check_clean("a\xed\xa0\x80z", 5, 0, "a" R R R "z"); /* surrogate */
    check_clean("\xc0\xaf", 2, 0, R R);                   /* overlong */
    check_clean("\xf5\x80\x80\x80", 4, 0, R R R R);
    check_clean("\xf4\x90\x80\x80", 4, 0, R R R R);
    check_clean("\xe2\x82x", 3, 0, R "x"); /* one maximal subpart */
    check_clean("a\0b\0", 4, 0, "a" R "b" R);
    check_clean("\x1b[31mred", 8, 0, R "[31mred");
    check_clean("\x7f", 1, 0, R);
    check_clean("\xc2\x9b" "2J", 4, 0, R "2J"); /* C1 CSI */
    check_clean("\xc2\xa0", 2, 0, "\xc2\xa0");   /* U+00A0 is text */
    check_clean("a\tb\nc\rd", 7, 0, "a" R "b" R "c" R "d");
    check_clean("a\tb\nc\rd", 7, WH_UTF8_KEEP_TAB, "a\tb" R "c" R "d");
    check_clean("a\tb\nc\rd", 7, WH_UTF8_KEEP_TAB | WH_UTF8_KEEP_NEWLINE,
                "a\tb\nc\rd");
    check_clean("\\\\\\", 3, 0, "\\\\\\");
    check_clean("", 0, 0, "");
}

/* Every capacity from 0 to past the need: never writes past cap, always
 * terminates, never splits a character, reports what it consumed. */
static void test_sanitize_cap(void)
{
    const char in[] = "ab\xed\xa0\x80\xf0\x9f\x98\x80z\0\xc3\xa9";
    size_t n = sizeof(in) - 1;
    char full[64];
    size_t fl = wh_utf8_sanitize(full, sizeof(full), in, n, 0, NULL);
    CHECK_INT(fl, 2 + 9 + 4 + 1 + 3 + 2);
    long bad = 0;
    for (size_t cap = 0; cap <= fl + 2; cap++) {
        char *out = malloc(cap + 1);
        memset(out, 'X', cap + 1);
        size_t used = 99;
        size_t w = wh_utf8_sanitize(out, cap, in, n, 0, &used);
        bad += out[cap] != 'X';                   /* nothing past cap */
        bad += cap > 0 && (w >= cap || out[w] != '\0');
        bad += cap == 0 && (w != 0 || used != 0);
        bad += memcmp(out, full, w) != 0;         /* a prefix of the whole */
        bad += !wh_utf8_valid(out, w, NULL);      /* no split character */
        bad += (used == n) != (w == fl);
        free(out);
    }
    CHECK_INT(bad, 0);
}

static void test_sanitize_buf(void)
{
    wh_buf b;
    wh_buf_init(&b, 10);
    size_t used = 0;
    CHECK_INT(wh_utf8_sanitize_buf(&b, "ab", 2, 0, 100, &used), WH_OK);
    CHECK_INT(used, 2);
    /* 8 bytes of room: "c" and two replacements, not a third */
    CHECK_INT(wh_utf8_sanitize_buf(&b, "c\xff\xff\xff", 4, 0, 100, &used),
              WH_OK);
    CHECK_STR(wh_buf_cstr(&b), "abc" R R);
    CHECK_INT(used, 3);
    CHECK_INT(b.len, 9);
    wh_buf_reset(&b);
    /* the limit bounds it too */
    CHECK_INT(wh_utf8_sanitize_buf(&b, "abcdef", 6, 0, 4, &used), WH_OK);
    CHECK_STR(wh_buf_cstr(&b), "abcd");
    CHECK_INT(used, 4);
    wh_buf_free(&b);

    /* longer than one internal chunk */
    wh_buf_init(&b, 1 << 20);
    char big[3000];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = i % 3 == 0 ? '\xed' : i % 3 == 1 ? '\xa0' : '\x80';
    CHECK_INT(wh_utf8_sanitize_buf(&b, big, sizeof(big), 0, SIZE_MAX, &used),
              WH_OK);
    CHECK_INT(used, sizeof(big));
    CHECK_INT(b.len, 3 * sizeof(big));
    CHECK(wh_utf8_valid(b.data, b.len, NULL));
    wh_buf_free(&b);
}

/* Random byte strings through the sanitizer at random capacities: the
 * output is valid, has no NUL or control character, fits, and is the same
 * prefix whatever the capacity; valid input without controls is copied
 * unchanged. */
static void test_random(void)
{
    uint64_t x = 88172645463325252ULL;
    long bad = 0;
    for (int round = 0; round < 20000; round++) {
        unsigned char in[65] = {0}; /* in[n] is read as the end */
        size_t n = (x >> 20) % (sizeof(in) - 1);
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            /* mostly high bytes, where the rules are */
            in[i] = (unsigned char)(x & 3 ? 0x80 | (x >> 8) : x >> 8);
        }
        char full[4 * sizeof(in)], part[4 * sizeof(in)];
        size_t used;
        size_t fl = wh_utf8_sanitize(full, sizeof(full), in, n, 0, &used);
        bad += used != n || !wh_utf8_valid(full, fl, NULL);
        for (size_t i = 0; i < fl; i++) {
            unsigned char c = (unsigned char)full[i];
            bad += c < 0x20 || c == 0x7f ||
                   (c == 0xC2 && (unsigned char)full[i + 1] < 0xA0);
        }
        bool clean = wh_utf8_valid(in, n, NULL);
        for (size_t i = 0; clean && i < n; i++)
            clean = in[i] >= 0x20 && in[i] != 0x7f &&
                    !(in[i] == 0xC2 && in[i + 1] < 0xA0);
        bad += clean && (fl != n || memcmp(full, in, n) != 0);
        size_t cap = (x >> 40) % (fl + 2);
        size_t pl = wh_utf8_sanitize(part, cap, in, n, 0, NULL);
        bad += cap > 0 && (pl >= cap || memcmp(part, full, pl) != 0);
    }
    CHECK_INT(bad, 0);
}

TEST_MAIN(test_seq, test_exhaustive, test_valid, test_sanitize,
          test_sanitize_cap, test_sanitize_buf, test_random)
