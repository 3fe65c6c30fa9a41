/*
 * json.h - a strict RFC 8259 JSON parser that produces a flat token array
 * over the caller's buffer (in the style of jsmn), plus helpers to walk the
 * tokens and read values.
 *
 * Used by every module that reads JSON; the worker parses each event with
 * it, so it is built for speed: one pass, no per-token allocation. A
 * wh_json belongs to one thread at a time; there is no global state.
 */
#ifndef WH_JSON_H
#define WH_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "wh.h"

#define WH_JSON_MAX_DEPTH 64 /* nesting of objects and arrays */

typedef enum {
    WH_JSON_OBJECT,
    WH_JSON_ARRAY,
    WH_JSON_STRING,
    WH_JSON_NUMBER,
    WH_JSON_TRUE,
    WH_JSON_FALSE,
    WH_JSON_NULL
} wh_json_type;

/*
 * One value (or object key). Tokens are stored in document order: a
 * container is followed by its whole subtree, and an object's children
 * alternate key, value, key, value... so the value of key k is token k+1.
 */
typedef struct {
    wh_json_type type;
    uint32_t start, end; /* byte span [start, end) of the input; strings
                            include their quotes */
    int32_t size;        /* members of an object, elements of an array,
                            0 otherwise */
    int32_t next;        /* index just past this token's subtree: the next
                            sibling, if there is one */
} wh_json_tok;

typedef struct {
    const char *buf; /* the parsed input, not owned */
    size_t len;
    wh_json_tok *toks; /* owned; toks[0] is the root */
    int32_t ntoks, cap;
} wh_json;

/*
 * Parses buf[0..len) as exactly one JSON value, optionally surrounded by
 * whitespace. doc must be zero-initialized (wh_json doc = {0};) before its
 * first parse; it may then be parsed into again, reusing its token array,
 * and must be released with wh_json_free whatever the results were. The
 * tokens point into buf, which must stay unchanged while doc is used.
 *
 * Strict: validates string escapes (\uXXXX surrogates must pair), rejects
 * raw control characters and invalid UTF-8 in strings, enforces the number
 * grammar, rejects trailing commas and anything after the value. Limits:
 * nesting depth WH_JSON_MAX_DEPTH, at most max_tokens (> 0) tokens, input
 * shorter than 4 GiB. Returns WH_OK, or WH_ERR with a message naming the
 * byte offset and the problem in err (then doc->ntoks is 0).
 */
int wh_json_parse(wh_json *doc, const char *buf, size_t len,
                  int32_t max_tokens, char *err, size_t errlen) WH_MUST_CHECK;

/* Frees the token array; doc is left zeroed and may be parsed into again. */
void wh_json_free(wh_json *doc);

/*
 * The helpers below take token indices from 0 to doc->ntoks - 1 of a
 * successfully parsed doc. All but wh_json_compact also accept -1 (a failed
 * lookup) and then return -1, 0 or WH_ERR, so lookups can be chained:
 *     wh_json_streq(d, wh_json_get(d, wh_json_get(d, 0, "data"), "id"), x)
 */

/*
 * Walking the tree. wh_json_child returns the first child of an object
 * (its first key) or array (its first element), or -1 when tok is empty or
 * not a container. wh_json_next takes an array element or an object key
 * and returns the next element or key of the same parent, or -1 after the
 * last. Given an object value it also returns the next key.
 *
 *     for (int32_t k = wh_json_child(d, obj); k >= 0; k = wh_json_next(d, k))
 *         use(k, k + 1);              // key token, value token
 *
 *     for (int32_t e = wh_json_child(d, arr); e >= 0; e = wh_json_next(d, e))
 *         use(e);                     // element token
 */
int32_t wh_json_child(const wh_json *doc, int32_t tok);
int32_t wh_json_next(const wh_json *doc, int32_t tok);

/* Returns the token index of the value of the first member of object obj
 * whose unescaped key equals key, or -1 (also when obj is not an object). */
int32_t wh_json_get(const wh_json *doc, int32_t obj, const char *key);

/* Unescapes string token tok into out (cap bytes) as UTF-8, NUL-terminated;
 * *outlen (may be NULL) gets the length without the NUL. The value may
 * itself contain NUL bytes (from \u0000). Returns WH_ERR when tok is not a
 * string or the value plus NUL does not fit; cap >= end - start always
 * suffices. */
int wh_json_string(const wh_json *doc, int32_t tok, char *out, size_t cap,
                   size_t *outlen) WH_MUST_CHECK;

/* Returns 1 if tok is a string whose unescaped value equals s, else 0. */
int wh_json_streq(const wh_json *doc, int32_t tok, const char *s);

/*
 * Writes the compact serialization of token tok's value into out: every
 * byte of the input span except whitespace outside strings, so strings
 * (and their escapes) are copied byte for byte. out needs end - start
 * bytes; no NUL is added. Returns the number of bytes written.
 *     { "a" : [1, 2 ] , "b":"x y" }  ->  {"a":[1,2],"b":"x y"}
 */
size_t wh_json_compact(const wh_json *doc, int32_t tok, char *out);

/* Reads an integer number token (no fraction or exponent; "-0" is 0) into
 * *out. Returns WH_ERR for other tokens or values outside int64_t. */
int wh_json_int64(const wh_json *doc, int32_t tok, int64_t *out) WH_MUST_CHECK;

#endif
