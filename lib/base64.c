/*
 * base64.c - the RFC 4648 base64 codec declared in base64.h.
 *
 * Table driven, one pass, no allocation. Decoding checks the length and
 * padding, and that the output fits, before it writes anything.
 */
#include "base64.h"

#include <assert.h>
#include <stdint.h>

static const char enc_tab[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Maps a character to its 6-bit value, or 0xFF when it is not in the
 * alphabet ('=' included). */
static const uint8_t dec_tab[256] = {
#define X 0xFF
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  62, X,  X,  X,  63,
    52, 53, 54, 55, 56, 57, 58, 59, 60, 61, X,  X,  X,  X,  X,  X,
    X,  0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14,
    15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, X,  X,  X,  X,  X,
    X,  26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
    41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, X,  X,  X,  X,  X,
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
#undef X
};

size_t wh_base64_encoded_len(size_t n)
{
    assert(n / 3 < SIZE_MAX / 4);
    return (n / 3 + (n % 3 != 0)) * 4;
}

size_t wh_base64_encode(const void *src, size_t n, char *dst)
{
    const uint8_t *s = src;
    char *d = dst;
    size_t i = 0;

    for (; n - i >= 3; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        d[0] = enc_tab[v >> 18];
        d[1] = enc_tab[(v >> 12) & 63];
        d[2] = enc_tab[(v >> 6) & 63];
        d[3] = enc_tab[v & 63];
        d += 4;
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)s[i] << 16;
        d[0] = enc_tab[v >> 18];
        d[1] = enc_tab[(v >> 12) & 63];
        d[2] = '=';
        d[3] = '=';
        d += 4;
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8;
        d[0] = enc_tab[v >> 18];
        d[1] = enc_tab[(v >> 12) & 63];
        d[2] = enc_tab[(v >> 6) & 63];
        d[3] = '=';
        d += 4;
    }
    *d = '\0';
    return (size_t)(d - dst);
}

size_t wh_base64_decoded_max(size_t n)
{
    return n / 4 * 3 + n % 4 * 3 / 4;
}

int wh_base64_decode(const char *src, size_t n, void *dst, size_t cap,
                     size_t *outlen)
{
    const uint8_t *s = (const uint8_t *)src;
    uint8_t *d = dst;

    /* Strip padding: only as one or two '=' completing a 4-char group. */
    if (n > 0 && s[n - 1] == '=') {
        if (n % 4 != 0)
            return WH_ERR;
        n -= (n >= 2 && s[n - 2] == '=') ? 2 : 1;
    }
    size_t tail = n % 4;
    if (tail == 1)
        return WH_ERR;
    size_t out = n / 4 * 3 + (tail ? tail - 1 : 0);
    if (out > cap)
        return WH_ERR;

    size_t i = 0;
    for (; n - i >= 4; i += 4) {
        uint8_t a = dec_tab[s[i]], b = dec_tab[s[i + 1]];
        uint8_t c = dec_tab[s[i + 2]], e = dec_tab[s[i + 3]];
        if ((a | b | c | e) & 0x80)
            return WH_ERR;
        uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 |
                     (uint32_t)c << 6 | e;
        d[0] = (uint8_t)(v >> 16);
        d[1] = (uint8_t)(v >> 8);
        d[2] = (uint8_t)v;
        d += 3;
    }
    if (tail) {
        uint8_t a = dec_tab[s[i]], b = dec_tab[s[i + 1]];
        uint8_t c = tail == 3 ? dec_tab[s[i + 2]] : 0;
        if ((a | b | c) & 0x80)
            return WH_ERR;
        uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6;
        d[0] = (uint8_t)(v >> 16);
        if (tail == 3)
            d[1] = (uint8_t)(v >> 8);
    }
    *outlen = out;
    return WH_OK;
}
