/*
 * wh.h - definitions every module of libwebhook shares: result codes,
 * size limits, time helpers and small macros.
 *
 * Included by every .c file in lib/, worker/, producer/, scheduler/, ctl/
 * and dev/. Contains no state.
 */
#ifndef WH_H
#define WH_H

#include <stddef.h>
#include <stdint.h>

/* Result codes. Functions return one of these and, on WH_ERR, write a
 * human-readable message into a caller-supplied buffer. */
#define WH_OK        0   /* done */
#define WH_ERR      -1   /* failed; the error buffer says why */
#define WH_AGAIN    -2   /* nothing to do now; call again later */
#define WH_DECLINED -3   /* input understood but refused (e.g. filtered out) */

#define WH_MUST_CHECK __attribute__((warn_unused_result))
#define WH_PRINTF(f, a) __attribute__((format(printf, f, a)))
/* Discards a WH_MUST_CHECK result on purpose (best-effort cleanup). */
#define WH_IGNORE(x) do { if (x) {} } while (0)
#define WH_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Limits shared by producers, codecs and the worker. */
#define WH_ID_MAX          128          /* event, endpoint and app ids */
#define WH_TYPE_MAX        256          /* event type, e.g. "order.paid" */
#define WH_URL_MAX         2048         /* endpoint URL */
#define WH_ERRLEN          256          /* size of error buffers */

/* Formats an error message into err (may be NULL) and returns WH_ERR. */
int wh_errf(char *err, size_t errlen, const char *fmt, ...) WH_PRINTF(3, 4);

/* Monotonic and wall-clock time in microseconds. */
int64_t wh_mono_us(void);
int64_t wh_wall_us(void);

/* Copies src into dst (size dstlen), always NUL-terminating. Returns
 * WH_ERR when src did not fit (dst then holds a truncated copy). */
int wh_strlcpy(char *dst, const char *src, size_t dstlen);

/* Parses a duration such as "250ms", "5s", "2m", "1h" or a bare number of
 * milliseconds. Returns WH_ERR on malformed input or overflow. */
int wh_parse_duration_ms(const char *s, int64_t *out_ms) WH_MUST_CHECK;

/* Value of a hexadecimal digit (either case), or -1. */
int wh_hex_value(char c);

/* Fills buf with len cryptographically random bytes. */
int wh_random_bytes(void *buf, size_t len) WH_MUST_CHECK;

#endif
