/*
 * buf.h - a bounded, growable byte buffer (wh_buf) and JSON writing helpers
 * on top of it.
 *
 * Used by any module that builds a string or payload of unknown length.
 * A wh_buf belongs to one thread at a
 * time; it holds no global state.
 */
#ifndef WH_BUF_H
#define WH_BUF_H

#include <stddef.h>

#include "wh.h"

/* data is NULL until the first non-empty add. Once allocated it is always
 * NUL-terminated at data[len]; the NUL is not counted in len, and max
 * bounds len (content bytes only). Callers may read the fields but only
 * the functions below change them. */
typedef struct {
    char *data;
    size_t len, cap, max;
} wh_buf;

/* Prepares an empty buffer that will never hold more than max bytes
 * (max > 0). Allocates nothing. */
void wh_buf_init(wh_buf *b, size_t max);

/* Frees the memory. b is left empty with the same max, so it may be
 * reused directly or re-initialized with wh_buf_init. */
void wh_buf_free(wh_buf *b);

/* Empties the buffer (len = 0) and keeps its memory for reuse. */
void wh_buf_reset(wh_buf *b);

/* The append functions below return WH_OK, or WH_ERR when the content
 * would exceed max or memory ran out. On WH_ERR the buffer is unchanged. */

/* Appends n bytes from p (p may be NULL when n is 0). */
int wh_buf_add(wh_buf *b, const void *p, size_t n) WH_MUST_CHECK;

/* Appends one byte. */
int wh_buf_addc(wh_buf *b, char c) WH_MUST_CHECK;

/* Appends n bytes for the caller to fill and points *at to them (NULL
 * when n is 0); their content is undefined until written. */
int wh_buf_grow(wh_buf *b, size_t n, void **at) WH_MUST_CHECK;

/* Appends printf-style formatted text (WH_ERR also on a formatting
 * error). */
int wh_buf_addf(wh_buf *b, const char *fmt, ...) WH_PRINTF(2, 3) WH_MUST_CHECK;

/* The content as a C string: "" for a buffer that has never been added
 * to. The pointer is valid until the next change to b. */
const char *wh_buf_cstr(wh_buf *b);

/* Appends s[0..n) as a quoted JSON string. Escapes '"', '\\' and control
 * characters (\n \r \t \b \f, the others as \u00XX). Valid UTF-8 is copied
 * as-is; each maximal invalid UTF-8 subsequence (Unicode "maximal subpart"
 * rule) is replaced by the escape \ufffd. s may contain NUL bytes. */
int wh_buf_json_str(wh_buf *b, const char *s, size_t n) WH_MUST_CHECK;

/* Replaces b's content with the bytes the hexadecimal text hex[0..n)
 * encodes. WH_ERR (b left empty) when n is odd, a character is not a hex
 * digit, or the bytes exceed b's max; *bad_at (may be NULL) then gets the
 * offset of the bad digit, or n. */
int wh_buf_set_hex(wh_buf *b, const char *hex, size_t n,
                   size_t *bad_at) WH_MUST_CHECK;

#endif
