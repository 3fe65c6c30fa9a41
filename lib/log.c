/*
 * log.c - the logger declared in log.h: level filter, text and JSON
 * record formatting with escaping, and the single write() per record.
 *
 * Process-wide state: the level and format (atomics, read by every thread)
 * and the component name (set by wh_log_init before threads start). Each
 * record is built in a stack buffer of WH_LOG_LINE_MAX bytes, so logging
 * never allocates.
 */
#include "log.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "utf8.h"

enum { FMT_AUTO, FMT_TEXT, FMT_JSON };

/* Bytes kept free at the end of a record for the closing quote, the
 * truncation marker and the newline. */
#define RESERVE 32

static atomic_int cur_level = WH_LOG_INFO;
static atomic_int cur_format = FMT_AUTO;
static char cur_component[WH_LOG_COMPONENT_MAX + 1];

static const char *const level_json[] = {"debug", "info", "warn", "error"};
static const char *const level_text[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};

struct line {
    char buf[WH_LOG_LINE_MAX];
    size_t len;
    bool cut; /* content did not fit; later puts are dropped */
};

static int resolve_auto(void)
{
    return isatty(STDERR_FILENO) ? FMT_TEXT : FMT_JSON;
}

int wh_log_init(const char *format, const char *level, const char *component,
                char *err, size_t errlen)
{
    int fmt = atomic_load(&cur_format), lvl = atomic_load(&cur_level);

    if (format) {
        if (strcasecmp(format, "text") == 0)
            fmt = FMT_TEXT;
        else if (strcasecmp(format, "json") == 0)
            fmt = FMT_JSON;
        else if (strcasecmp(format, "auto") == 0)
            fmt = FMT_AUTO;
        else
            return wh_errf(err, errlen,
                           "invalid log format '%.32s' (use text, json or "
                           "auto)",
                           format);
    }
    if (level) {
        if (strcasecmp(level, "debug") == 0)
            lvl = WH_LOG_DEBUG;
        else if (strcasecmp(level, "info") == 0)
            lvl = WH_LOG_INFO;
        else if (strcasecmp(level, "warn") == 0 ||
                 strcasecmp(level, "warning") == 0)
            lvl = WH_LOG_WARN;
        else if (strcasecmp(level, "error") == 0)
            lvl = WH_LOG_ERROR;
        else
            return wh_errf(err, errlen,
                           "invalid log level '%.32s' (use debug, info, "
                           "warn or error)",
                           level);
    }
    if (!component)
        component = "";
    size_t clen = strlen(component);
    if (clen > WH_LOG_COMPONENT_MAX)
        return wh_errf(err, errlen,
                       "log component is longer than %d characters",
                       WH_LOG_COMPONENT_MAX);
    for (size_t i = 0; i < clen; i++) {
        char c = component[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-'))
            return wh_errf(err, errlen,
                           "log component '%s' may only contain letters, "
                           "digits, '_', '.' and '-'",
                           component);
    }

    if (fmt == FMT_AUTO)
        fmt = resolve_auto();
    memcpy(cur_component, component, clen + 1);
    atomic_store(&cur_format, fmt);
    atomic_store(&cur_level, lvl);
    return WH_OK;
}

int wh_log_enabled(wh_log_level level)
{
    return (int)level >= atomic_load_explicit(&cur_level,
                                              memory_order_relaxed);
}

/* Appends n bytes unless they would eat into the reserve. */
static void put(struct line *l, const char *s, size_t n)
{
    if (l->cut)
        return;
    if (l->len + n > sizeof(l->buf) - RESERVE) {
        l->cut = true;
        return;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

/* Appends closing bytes; these may use the reserve. */
static void put_tail(struct line *l, const char *s, size_t n)
{
    assert(l->len + n <= sizeof(l->buf));
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

/* Appends s escaped for the inside of a JSON string: each maximal invalid
 * UTF-8 subsequence (lib/utf8.h) becomes \ufffd, and DEL and the C1
 * controls are escaped too, so a JSON log line shown on a terminal cannot
 * drive it. */
static void put_json(struct line *l, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    const unsigned char *end = p + strlen(s);
    char esc[8];

    while (p < end && !l->cut) {
        unsigned c = *p;
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            put(l, esc, 2);
            p++;
        } else if (c < 0x20 || c == 0x7f) {
            const char *named = c == '\n'   ? "\\n"
                                : c == '\r' ? "\\r"
                                : c == '\t' ? "\\t"
                                : c == '\b' ? "\\b"
                                : c == '\f' ? "\\f"
                                            : NULL;
            if (named) {
                put(l, named, 2);
            } else {
                snprintf(esc, sizeof(esc), "\\u%04x", c);
                put(l, esc, 6);
            }
            p++;
        } else if (c < 0x80) {
            put(l, (const char *)p, 1);
            p++;
        } else {
            int n = wh_utf8_seq(p, (size_t)(end - p));
            if (n < 0) {
                put(l, "\\ufffd", 6);
                p += -n;
            } else if (c == 0xC2 && p[1] < 0xA0) { /* C1 control */
                snprintf(esc, sizeof(esc), "\\u%04x", p[1]);
                put(l, esc, 6);
                p += 2;
            } else {
                put(l, (const char *)p, (size_t)n);
                p += n;
            }
        }
    }
}

/* Text values are quoted when they are empty or hold a space, '=', '"',
 * '\\' or a control character. */
static bool needs_quotes(const char *s)
{
    if (!*s)
        return true;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c <= ' ' || c == 0x7f || c == '=' || c == '"' || c == '\\')
            return true;
    }
    return false;
}

/* Appends s with control characters escaped as \xNN (C0, DEL, and the
 * two bytes of a C1 control), and each byte of invalid UTF-8 likewise
 * (lib/utf8.h decides), so a terminal shows them instead of obeying them;
 * inside quotes also '"' and '\\'. */
static void put_text(struct line *l, const char *s, bool quoted)
{
    const unsigned char *p = (const unsigned char *)s;
    const unsigned char *end = p + strlen(s);
    char esc[16];

    while (p < end && !l->cut) {
        unsigned char c = *p;
        if (quoted && (c == '"' || c == '\\')) {
            esc[0] = '\\';
            esc[1] = (char)c;
            put(l, esc, 2);
        } else if (c == '\n') {
            put(l, "\\n", 2);
        } else if (c == '\r') {
            put(l, "\\r", 2);
        } else if (c == '\t') {
            put(l, "\\t", 2);
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof(esc), "\\x%02x", c);
            put(l, esc, 4);
        } else if (c >= 0x80) {
            int n = wh_utf8_seq(p, (size_t)(end - p));
            if (n < 0 || (c == 0xC2 && p[1] < 0xA0)) {
                size_t bad = n < 0 ? (size_t)-n : 2;
                for (size_t i = 0; i < bad; i++) {
                    snprintf(esc, sizeof(esc), "\\x%02x", p[i]);
                    put(l, esc, 4);
                }
                p += bad;
            } else {
                put(l, (const char *)p, (size_t)n);
                p += n;
            }
            continue;
        } else {
            put(l, (const char *)p, 1);
        }
        p++;
    }
}

/* Appends ,"key":"value" (or null). A key that does not fit is dropped
 * whole; a value that does not fit is cut and its string closed. */
static void json_field(struct line *l, const char *key, const char *val)
{
    size_t mark = l->len;

    put(l, ",\"", 2);
    put_json(l, key);
    put(l, val ? "\":\"" : "\":null", val ? 3 : 6);
    if (l->cut) {
        l->len = mark;
        return;
    }
    if (val) {
        put_json(l, val);
        put_tail(l, "\"", 1);
    }
}

/* Appends " key=value", quoting the value when needed. */
static void text_field(struct line *l, const char *key, const char *val)
{
    size_t mark = l->len;
    bool quoted = val && needs_quotes(val);

    put(l, " ", 1);
    put_text(l, key, false);
    put(l, quoted ? "=\"" : "=", quoted ? 2 : 1);
    if (l->cut) {
        l->len = mark;
        return;
    }
    put_text(l, val ? val : "(null)", quoted);
    if (quoted)
        put_tail(l, "\"", 1);
}

static void put_timestamp(struct line *l)
{
    int64_t us = wh_wall_us();
    time_t secs = (time_t)(us / 1000000);
    struct tm tm;
    char ts[40];
    size_t n;

    gmtime_r(&secs, &tm);
    n = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(ts + n, sizeof(ts) - n, ".%03dZ",
                          (int)(us / 1000 % 1000));
    put(l, ts, n);
}

static void write_all(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

static int current_format(void)
{
    int fmt = atomic_load_explicit(&cur_format, memory_order_relaxed);
    if (fmt == FMT_AUTO) {
        fmt = resolve_auto();
        atomic_store(&cur_format, fmt);
    }
    return fmt;
}

static void emit(wh_log_level level, const char *msg, va_list *fields)
{
    struct line l;
    const char *key;
    bool json = current_format() == FMT_JSON;

    assert(level >= WH_LOG_DEBUG && level <= WH_LOG_ERROR);
    l.len = 0;
    l.cut = false;
    if (json) {
        put(&l, "{\"ts\":\"", 7);
        put_timestamp(&l);
        put(&l, "\",\"level\":\"", 11);
        put(&l, level_json[level], strlen(level_json[level]));
        put(&l, "\"", 1);
        if (cur_component[0])
            json_field(&l, "component", cur_component);
        json_field(&l, "msg", msg);
        while (fields && (key = va_arg(*fields, const char *)) != NULL)
            json_field(&l, key, va_arg(*fields, const char *));
        if (l.cut)
            put_tail(&l, ",\"truncated\":true", 17);
        put_tail(&l, "}\n", 2);
    } else {
        put_timestamp(&l);
        put(&l, " ", 1);
        put(&l, level_text[level], 5);
        put(&l, " ", 1);
        if (cur_component[0]) {
            put(&l, cur_component, strlen(cur_component));
            put(&l, ": ", 2);
        }
        put_text(&l, msg, false);
        while (fields && (key = va_arg(*fields, const char *)) != NULL)
            text_field(&l, key, va_arg(*fields, const char *));
        if (l.cut)
            put_tail(&l, " [truncated]", 12);
        put_tail(&l, "\n", 1);
    }
    write_all(l.buf, l.len);
}

void wh_log(wh_log_level level, const char *fmt, ...)
{
    char msg[WH_LOG_LINE_MAX];
    va_list ap;

    if (!wh_log_enabled(level))
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    emit(level, msg, NULL);
}

void wh_log_kv(wh_log_level level, const char *msg, ...)
{
    va_list ap;

    if (!wh_log_enabled(level))
        return;
    va_start(ap, msg);
    emit(level, msg, &ap);
    va_end(ap);
}
