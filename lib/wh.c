/*
 * wh.c - the small helpers declared in wh.h: error formatting, clocks,
 * bounded string copy, duration parsing and random bytes.
 */
#include "wh.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

int wh_errf(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return WH_ERR;
}

int64_t wh_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t wh_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int wh_strlcpy(char *dst, const char *src, size_t dstlen)
{
    size_t n = strlen(src);
    if (dstlen == 0)
        return WH_ERR;
    if (n >= dstlen) {
        memcpy(dst, src, dstlen - 1);
        dst[dstlen - 1] = '\0';
        return WH_ERR;
    }
    memcpy(dst, src, n + 1);
    return WH_OK;
}

int wh_parse_duration_ms(const char *s, int64_t *out_ms)
{
    char *end;
    errno = 0;
    if (!s || !*s || *s == '-' || *s == '+')
        return WH_ERR;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s)
        return WH_ERR;
    long long mult;
    if (*end == '\0' || strcmp(end, "ms") == 0)
        mult = 1;
    else if (strcmp(end, "s") == 0)
        mult = 1000;
    else if (strcmp(end, "m") == 0)
        mult = 60 * 1000;
    else if (strcmp(end, "h") == 0)
        mult = 3600 * 1000;
    else if (strcmp(end, "d") == 0)
        mult = 24LL * 3600 * 1000;
    else
        return WH_ERR;
    if (v > LLONG_MAX / mult)
        return WH_ERR;
    *out_ms = v * mult;
    return WH_OK;
}

int wh_hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int wh_random_bytes(void *buf, size_t len)
{
    unsigned char *p = buf;
    while (len > 0) {
        ssize_t n = getrandom(p, len, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return WH_ERR;
        }
        p += n;
        len -= (size_t)n;
    }
    return WH_OK;
}
