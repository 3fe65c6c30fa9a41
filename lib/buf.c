/*
 * buf.c - the bounded growable byte buffer declared in buf.h and its JSON
 * string writer.
 *
 * Memory grows geometrically and never past max + 1 bytes (content plus
 * the terminating NUL). Called from any thread on buffers it owns.
 */
#include "buf.h"

#include <assert.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "utf8.h"

#define BUF_MIN_CAP 64

void wh_buf_init(wh_buf *b, size_t max)
{
    assert(max > 0 && max < SIZE_MAX / 2);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

void wh_buf_free(wh_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void wh_buf_reset(wh_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

const char *wh_buf_cstr(wh_buf *b)
{
    return b->data ? b->data : "";
}

/* Makes room for n more content bytes plus the NUL. */
static int reserve(wh_buf *b, size_t n)
{
    assert(b->len <= b->max);
    if (n > b->max - b->len)
        return WH_ERR;
    size_t need = b->len + n + 1;
    if (need <= b->cap)
        return WH_OK;
    size_t cap = b->cap ? b->cap : BUF_MIN_CAP;
    while (cap < need)
        cap *= 2;
    if (cap > b->max + 1)
        cap = b->max + 1;
    char *p = realloc(b->data, cap);
    if (!p)
        return WH_ERR;
    b->data = p;
    b->cap = cap;
    return WH_OK;
}

int wh_buf_add(wh_buf *b, const void *p, size_t n)
{
    if (n == 0)
        return WH_OK;
    if (reserve(b, n) != WH_OK)
        return WH_ERR;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return WH_OK;
}

int wh_buf_addc(wh_buf *b, char c)
{
    return wh_buf_add(b, &c, 1);
}

int wh_buf_grow(wh_buf *b, size_t n, void **at)
{
    *at = NULL;
    if (n == 0)
        return WH_OK;
    if (reserve(b, n) != WH_OK)
        return WH_ERR;
    *at = b->data + b->len;
    b->len += n;
    b->data[b->len] = '\0';
    return WH_OK;
}

int wh_buf_addf(wh_buf *b, const char *fmt, ...)
{
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    size_t avail = b->cap ? b->cap - b->len : 0;
    int n = vsnprintf(avail ? b->data + b->len : NULL, avail, fmt, ap);
    if (n < 0)
        goto fail;
    if ((size_t)n >= avail) {
        /* Did not fit (or nothing allocated yet): grow, format again. */
        if (reserve(b, (size_t)n) != WH_OK)
            goto fail;
        int n2 = vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap2);
        if (n2 != n)
            goto fail;
    }
    b->len += (size_t)n;
    if (b->data)
        b->data[b->len] = '\0';
    va_end(ap2);
    va_end(ap);
    return WH_OK;

fail:
    if (b->data)
        b->data[b->len] = '\0';
    va_end(ap2);
    va_end(ap);
    return WH_ERR;
}

/* Bytes copied unchanged into a JSON string: printable ASCII except '"'
 * and '\\'. */
static int json_plain(unsigned char c)
{
    return c >= 0x20 && c != '"' && c != '\\' && c < 0x80;
}

int wh_buf_json_str(wh_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    size_t saved = b->len, i = 0;

    if (wh_buf_addc(b, '"') != WH_OK)
        goto fail;
    while (i < n) {
        size_t run = i;
        for (;;) {
            while (run < n && json_plain(u[run]))
                run++;
            if (run < n && u[run] >= 0x80) {
                int k = wh_utf8_seq(u + run, n - run);
                if (k > 0) {
                    run += (size_t)k;
                    continue;
                }
            }
            break;
        }
        if (wh_buf_add(b, u + i, run - i) != WH_OK)
            goto fail;
        i = run;
        if (i == n)
            break;

        unsigned char c = u[i];
        char esc[6] = {'\\', 0, 0, 0, 0, 0};
        size_t elen = 2;
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        default:
            elen = 6;
            if (c < 0x20) {
                memcpy(esc + 1, "u00", 3);
                esc[4] = hex[c >> 4];
                esc[5] = hex[c & 0xF];
            } else {
                int k = wh_utf8_seq(u + i, n - i);
                assert(k < 0);
                memcpy(esc + 1, "ufffd", 5);
                i += (size_t)(-k) - 1;
            }
            break;
        }
        if (wh_buf_add(b, esc, elen) != WH_OK)
            goto fail;
        i++;
    }
    if (wh_buf_addc(b, '"') != WH_OK)
        goto fail;
    return WH_OK;

fail:
    b->len = saved;
    if (b->data)
        b->data[saved] = '\0';
    return WH_ERR;
}

int wh_buf_set_hex(wh_buf *b, const char *hex, size_t n, size_t *bad_at)
{
    unsigned char chunk[4096];
    size_t k = 0;
    wh_buf_reset(b);
    if (bad_at)
        *bad_at = n;
    if (n % 2 != 0 || n / 2 > b->max)
        return WH_ERR;
    for (size_t i = 0; i < n; i += 2) {
        int hi = wh_hex_value(hex[i]), lo = wh_hex_value(hex[i + 1]);
        if (hi < 0 || lo < 0) {
            if (bad_at)
                *bad_at = hi < 0 ? i : i + 1;
            goto fail;
        }
        chunk[k++] = (unsigned char)(hi << 4 | lo);
        if (k == sizeof(chunk)) {
            if (wh_buf_add(b, chunk, k) != WH_OK)
                goto fail;
            k = 0;
        }
    }
    if (wh_buf_add(b, chunk, k) != WH_OK)
        goto fail;
    return WH_OK;
fail:
    wh_buf_reset(b);
    return WH_ERR;
}
