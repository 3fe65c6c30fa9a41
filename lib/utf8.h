/*
 * utf8.h - the one UTF-8 rule of the code base: a strict validator
 * (exactly what RFC 3629 allows) and a sanitizer that makes outside bytes
 * safe for Postgres text columns and terminals.
 *
 * Used by the JSON parser, the log writer, the codec, the recorder's row
 * encoding and the CLI's output. Pure functions, no state: any thread.
 */
#ifndef WH_UTF8_H
#define WH_UTF8_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "wh.h"

/* The replacement character U+FFFD, as UTF-8. */
#define WH_UTF8_REPLACEMENT "\xEF\xBF\xBD"

/*
 * Classifies the bytes at s[0..n) (n > 0). Returns the length (1 to 4) of
 * the well-formed sequence there: RFC 3629, so no overlong forms, no
 * surrogates (U+D800..U+DFFF), nothing above U+10FFFF, no C0, C1 or
 * F5..FF lead bytes, no truncated sequence. ASCII, NUL included, is one
 * byte. Otherwise returns minus the length (1 to 3) of the maximal subpart
 * to replace by one U+FFFD (Unicode 15, section 3.9).
 */
int wh_utf8_seq(const void *s, size_t n);

/* True when s[0..n) is well-formed UTF-8 (NUL bytes are well formed;
 * callers that cannot hold them check separately). Otherwise false, and
 * *bad_at (may be NULL) gets the offset of the first bad byte. */
bool wh_utf8_valid(const void *s, size_t n, size_t *bad_at);

/* What the sanitizer keeps besides printable text. */
#define WH_UTF8_KEEP_TAB     1u /* '\t' */
#define WH_UTF8_KEEP_NEWLINE 2u /* '\n' and '\r' */

/*
 * Copies src[0..n) into dst (cap bytes) as well-formed UTF-8 without NUL
 * and without control characters: each maximal invalid subsequence, each
 * C0 control (0x00..0x1F, except tab and newlines as flags allow), DEL
 * and each C1 control (U+0080..U+009F, which terminals obey) becomes one
 * U+FFFD. Writes at most cap - 1 bytes, never splits a character, and
 * NUL-terminates when cap > 0. Returns the bytes written (without the
 * NUL); *used (may be NULL) gets how many input bytes they stand for, so
 * *used < n means the output was cut at cap.
 */
size_t wh_utf8_sanitize(char *dst, size_t cap, const void *src, size_t n,
                        unsigned flags, size_t *used);

/*
 * wh_utf8_sanitize appending to b. Appends as much as fits under b's max
 * and limit more bytes (whichever is less), whole characters only; *used
 * (may be NULL) as above. WH_ERR only when memory ran out (b unchanged).
 */
int wh_utf8_sanitize_buf(wh_buf *b, const void *src, size_t n,
                         unsigned flags, size_t limit,
                         size_t *used) WH_MUST_CHECK;

#endif
