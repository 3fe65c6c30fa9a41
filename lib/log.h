/*
 * log.h - structured logging to stderr, one record per line: readable
 * text on a terminal, JSON objects in production.
 *
 * wh_log_init is called once from main() before threads start; the
 * logging calls are safe from any thread (each record is one write() of
 * at most WH_LOG_LINE_MAX bytes, so records never interleave).
 */
#ifndef WH_LOG_H
#define WH_LOG_H

#include <stddef.h>

#include "wh.h"

typedef enum {
    WH_LOG_DEBUG,
    WH_LOG_INFO,
    WH_LOG_WARN,
    WH_LOG_ERROR
} wh_log_level;

/* Longest record, newline included. Longer records are cut: a JSON record
 * stays valid and gets "truncated":true, a text record ends in
 * " [truncated]". Equal to PIPE_BUF, so writes to a pipe are atomic. */
#define WH_LOG_LINE_MAX 4096
/* Longest component name. */
#define WH_LOG_COMPONENT_MAX 32

/*
 * Configures logging. format is "text", "json" or "auto" (text when stderr
 * is a terminal, JSON otherwise); level is "debug", "info", "warn" (or
 * "warning") or "error"; component names the program part in every record
 * ("worker"), at most WH_LOG_COMPONENT_MAX characters of [A-Za-z0-9_.-],
 * or NULL/"" for none. NULL format or level keep the defaults (auto,
 * info). Returns WH_ERR, changing nothing, on an unknown value.
 * Until it is called: auto format, info level, no component.
 */
int wh_log_init(const char *format, const char *level, const char *component,
                char *err, size_t errlen) WH_MUST_CHECK;

/* 1 when records at level are written, else 0. */
int wh_log_enabled(wh_log_level level);

/* Writes a record whose message is printf-formatted. */
void wh_log(wh_log_level level, const char *fmt, ...) WH_PRINTF(2, 3);

/* Writes a record with message msg and fields given as key, value pairs
 * of strings, ended by a NULL key:
 *   wh_log_kv(WH_LOG_WARN, "delivery failed", "endpoint", id,
 *             "error", msg, NULL);
 * A NULL value is written as JSON null, or "(null)" in text. */
void wh_log_kv(wh_log_level level, const char *msg, ...)
    __attribute__((sentinel));

/* These skip formatting the arguments when the level is disabled. */
#define WH_LOG_AT_(lvl, ...)                                            \
    do {                                                                \
        if (wh_log_enabled(lvl))                                        \
            wh_log(lvl, __VA_ARGS__);                                   \
    } while (0)
#define WH_DEBUG(...) WH_LOG_AT_(WH_LOG_DEBUG, __VA_ARGS__)
#define WH_INFO(...) WH_LOG_AT_(WH_LOG_INFO, __VA_ARGS__)
#define WH_WARN(...) WH_LOG_AT_(WH_LOG_WARN, __VA_ARGS__)
#define WH_ERROR(...) WH_LOG_AT_(WH_LOG_ERROR, __VA_ARGS__)

#endif
