/*
 * base64.h - RFC 4648 base64 (standard alphabet, '=' padding) encoding and
 * strict decoding.
 *
 * Used wherever bytes travel as text (signatures, secrets). Pure functions over caller
 * buffers; safe from any thread.
 */
#ifndef WH_BASE64_H
#define WH_BASE64_H

#include <stddef.h>

#include "wh.h"

/* Length of the padded encoding of n bytes, not counting the NUL. */
size_t wh_base64_encoded_len(size_t n);

/* Encodes src[0..n) into dst, which must hold wh_base64_encoded_len(n) + 1
 * bytes, and NUL-terminates it. Returns the encoded length. */
size_t wh_base64_encode(const void *src, size_t n, char *dst);

/* Upper bound on the decoded size of n characters of base64. */
size_t wh_base64_decoded_max(size_t n);

/* Decodes src[0..n) into dst (cap bytes) and stores the decoded length in
 * *outlen. Accepts padded input and unpadded input (length mod 4 of 2 or
 * 3); tolerates non-zero unused bits in the last character. Returns WH_ERR
 * on a character outside the alphabet (whitespace included), misplaced or
 * excess '=', an impossible length (n mod 4 == 1), or when the output would
 * exceed cap; the size is checked before anything is written, but on a bad
 * character dst may hold part of the output. *outlen is set only on WH_OK. */
int wh_base64_decode(const char *src, size_t n, void *dst, size_t cap,
                     size_t *outlen) WH_MUST_CHECK;

#endif
