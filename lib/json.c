/*
 * json.c - the strict JSON parser and token helpers declared in json.h.
 *
 * wh_json_parse is one iterative pass over the input with an explicit
 * container stack (no recursion) and a token array that grows
 * geometrically up to the caller's limit; the helpers read values back
 * from the token spans without copying the document. No global state.
 */
#include "json.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "utf8.h"

#define TOKS_MIN_CAP 32

/* Classes of bytes inside a string. */
enum { C_PLAIN, C_QUOTE, C_BSLASH, C_CTRL, C_HIGH };

static const uint8_t str_class[256] = {
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, /* 0x00 */
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, /* 0x10 */
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x20 '"' */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, /* 0x50 '\\' */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, /* 0x80 */
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
};

static int is_ws(unsigned char c)
{
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

static size_t skip_ws(const unsigned char *s, size_t len, size_t p)
{
    while (p < len && is_ws(s[p]))
        p++;
    return p;
}

/* 1 when none of the 8 bytes at p is '"', '\\', below 0x20 or above 0x7F.
 * Each term is an exact "some byte matches" test (a borrow can only reach
 * bytes above one that matched). */
static int plain8(const unsigned char *p)
{
    const uint64_t ones = 0x0101010101010101ULL;
    const uint64_t high = 0x8080808080808080ULL;
    uint64_t x, q, b;
    memcpy(&x, p, 8);
    q = x ^ (ones * '"');
    b = x ^ (ones * '\\');
    return ((((x - ones * 0x20) & ~x) | ((q - ones) & ~q) |
             ((b - ones) & ~b) | x) & high) == 0;
}

/* The value of 4 hex digits at s[0..4), or -1. */
static int32_t hex4(const unsigned char *s)
{
    int a = wh_hex_value((char)s[0]), b = wh_hex_value((char)s[1]),
        c = wh_hex_value((char)s[2]), d = wh_hex_value((char)s[3]);
    if ((a | b | c | d) < 0)
        return -1;
    return a << 12 | b << 8 | c << 4 | d;
}

static int syntax_err(char *err, size_t errlen, size_t at, const char *what)
{
    return wh_errf(err, errlen, "invalid JSON at byte %zu: %s", at, what);
}

/* "expected X, found Y" for the byte at p (or the end of input). */
static int unexpected(char *err, size_t errlen, const unsigned char *s,
                      size_t len, size_t p, const char *expected)
{
    if (p >= len)
        return wh_errf(err, errlen,
                       "invalid JSON at byte %zu: unexpected end of input, "
                       "expected %s", p, expected);
    if (s[p] > 0x20 && s[p] < 0x7F)
        return wh_errf(err, errlen,
                       "invalid JSON at byte %zu: expected %s, found '%c'", p,
                       expected, s[p]);
    return wh_errf(err, errlen,
                   "invalid JSON at byte %zu: expected %s, found byte 0x%02x",
                   p, expected, s[p]);
}

/* Scans the string whose opening quote is at q. Returns the offset just
 * past the closing quote, or 0 with err set. */
static size_t scan_string(const unsigned char *s, size_t len, size_t q,
                          char *err, size_t errlen)
{
    size_t p = q + 1;
    for (;;) {
        while (len - p >= 8 && plain8(s + p))
            p += 8;
        while (p < len && str_class[s[p]] == C_PLAIN)
            p++;
        if (p >= len)
            goto unterminated;
        switch (str_class[s[p]]) {
        case C_QUOTE:
            return p + 1;
        case C_CTRL:
            wh_errf(err, errlen,
                    "invalid JSON at byte %zu: unescaped control character "
                    "0x%02x in string", p, s[p]);
            return 0;
        case C_HIGH: {
            int k = wh_utf8_seq(s + p, len - p);
            if (k < 0) {
                syntax_err(err, errlen, p, "invalid UTF-8 in string");
                return 0;
            }
            p += (size_t)k;
            break;
        }
        case C_BSLASH: {
            size_t esc = p++;
            if (p >= len)
                goto unterminated;
            switch (s[p]) {
            case '"': case '\\': case '/': case 'b': case 'f': case 'n':
            case 'r': case 't':
                p++;
                break;
            case 'u': {
                int32_t cp = len - p >= 5 ? hex4(s + p + 1) : -1;
                if (cp < 0) {
                    syntax_err(err, errlen, esc,
                               "\\u must be followed by 4 hex digits");
                    return 0;
                }
                p += 5;
                if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    syntax_err(err, errlen, esc,
                               "lone low surrogate in \\u escape");
                    return 0;
                }
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    int32_t lo = -1;
                    if (len - p >= 6 && s[p] == '\\' && s[p + 1] == 'u')
                        lo = hex4(s + p + 2);
                    if (lo < 0xDC00 || lo > 0xDFFF) {
                        syntax_err(err, errlen, esc,
                                   "high surrogate in \\u escape not followed "
                                   "by a low surrogate");
                        return 0;
                    }
                    p += 6;
                }
                break;
            }
            default:
                if (s[p] > 0x20 && s[p] < 0x7F)
                    wh_errf(err, errlen,
                            "invalid JSON at byte %zu: invalid escape '\\%c'",
                            esc, s[p]);
                else
                    syntax_err(err, errlen, esc, "invalid escape");
                return 0;
            }
            break;
        }
        default:
            assert(0);
        }
    }

unterminated:
    wh_errf(err, errlen,
            "invalid JSON at byte %zu: unterminated string starting at byte "
            "%zu", len, q);
    return 0;
}

static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* Scans the number starting at p. Returns the offset just past it, or 0
 * with err set. */
static size_t scan_number(const unsigned char *s, size_t len, size_t p,
                          char *err, size_t errlen)
{
    size_t start = p;
    if (s[p] == '-')
        p++;
    if (p >= len || !is_digit(s[p])) {
        unexpected(err, errlen, s, len, p, "a digit after '-'");
        return 0;
    }
    if (s[p] == '0') {
        p++;
        if (p < len && is_digit(s[p])) {
            syntax_err(err, errlen, start, "leading zeros are not allowed");
            return 0;
        }
    } else {
        while (p < len && is_digit(s[p]))
            p++;
    }
    if (p < len && s[p] == '.') {
        p++;
        if (p >= len || !is_digit(s[p])) {
            unexpected(err, errlen, s, len, p, "a digit after '.'");
            return 0;
        }
        while (p < len && is_digit(s[p]))
            p++;
    }
    if (p < len && (s[p] == 'e' || s[p] == 'E')) {
        p++;
        if (p < len && (s[p] == '+' || s[p] == '-'))
            p++;
        if (p >= len || !is_digit(s[p])) {
            unexpected(err, errlen, s, len, p, "a digit in the exponent");
            return 0;
        }
        while (p < len && is_digit(s[p]))
            p++;
    }
    return p;
}

/* Makes room for one more token. Returns the new usable limit
 * (min(cap, max)), or -1 with err set. */
static int32_t grow(wh_json *doc, int32_t max, size_t at, char *err,
                    size_t errlen)
{
    if (doc->ntoks >= max) {
        wh_errf(err, errlen, "JSON has more than %d values (at byte %zu)",
                (int)max, at);
        return -1;
    }
    if (doc->ntoks >= doc->cap) {
        int32_t cap = doc->cap < TOKS_MIN_CAP / 2 ? TOKS_MIN_CAP
                      : doc->cap > max / 2      ? max
                                                : doc->cap * 2;
        if (cap > max)
            cap = max;
        wh_json_tok *t = realloc(doc->toks, (size_t)cap * sizeof(*t));
        if (!t) {
            wh_errf(err, errlen, "out of memory for %d JSON tokens",
                    (int)cap);
            return -1;
        }
        doc->toks = t;
        doc->cap = cap;
    }
    return doc->cap < max ? doc->cap : max;
}

/*
 * The parser's states are the labels below: value (a value starts at p),
 * after_value (a value ended; expect ',', a closing bracket or the end),
 * close_container and key (an object key starts at p). stack holds the
 * open containers.
 */
int wh_json_parse(wh_json *doc, const char *buf, size_t len,
                  int32_t max_tokens, char *err, size_t errlen)
{
    const unsigned char *s = (const unsigned char *)buf;
    int32_t stack[WH_JSON_MAX_DEPTH];
    int depth = 0;
    int32_t lim, t, parent;
    wh_json_tok *toks;
    size_t p;

    assert(max_tokens > 0);
    assert((doc->toks == NULL) == (doc->cap == 0));
    doc->buf = buf;
    doc->len = len;
    doc->ntoks = 0;
    lim = doc->cap < max_tokens ? doc->cap : max_tokens;
    toks = doc->toks;
    if (len >= UINT32_MAX) {
        wh_errf(err, errlen, "JSON input too large: %zu bytes (limit %u)", len,
                (unsigned)(UINT32_MAX - 1));
        goto fail;
    }
    p = skip_ws(s, len, 0);
    if (p == len) {
        syntax_err(err, errlen, p, "empty input, expected a value");
        goto fail;
    }

value:
    if (p >= len) {
        unexpected(err, errlen, s, len, p, "a value");
        goto fail;
    }
    if (doc->ntoks >= lim) {
        if ((lim = grow(doc, max_tokens, p, err, errlen)) < 0)
            goto fail;
        toks = doc->toks;
    }
    t = doc->ntoks++;
    toks[t].start = (uint32_t)p;
    toks[t].size = 0;
    toks[t].next = t + 1;
    if (depth > 0 && toks[stack[depth - 1]].type == WH_JSON_ARRAY)
        toks[stack[depth - 1]].size++;
    switch (s[p]) {
    case '{':
    case '[': {
        unsigned char closer = s[p] == '{' ? '}' : ']';
        if (depth == WH_JSON_MAX_DEPTH) {
            wh_errf(err, errlen,
                    "JSON nested deeper than %d levels (at byte %zu)",
                    WH_JSON_MAX_DEPTH, p);
            goto fail;
        }
        toks[t].type = closer == '}' ? WH_JSON_OBJECT : WH_JSON_ARRAY;
        stack[depth++] = t;
        p = skip_ws(s, len, p + 1);
        if (p < len && s[p] == closer) {
            toks[t].end = (uint32_t)(p + 1);
            depth--;
            p++;
            goto after_value;
        }
        if (closer == '}')
            goto key;
        goto value;
    }
    case '"':
        toks[t].type = WH_JSON_STRING;
        if ((p = scan_string(s, len, p, err, errlen)) == 0)
            goto fail;
        break;
    case 't':
    case 'f':
    case 'n': {
        static const char *const lit[] = {"true", "false", "null"};
        static const wh_json_type lit_type[] = {WH_JSON_TRUE, WH_JSON_FALSE,
                                                WH_JSON_NULL};
        int i = s[p] == 't' ? 0 : s[p] == 'f' ? 1 : 2;
        size_t n = strlen(lit[i]);
        if (len - p < n || memcmp(s + p, lit[i], n) != 0) {
            syntax_err(err, errlen, p, "invalid literal");
            goto fail;
        }
        toks[t].type = lit_type[i];
        p += n;
        break;
    }
    default:
        if (s[p] != '-' && !is_digit(s[p])) {
            unexpected(err, errlen, s, len, p, "a value");
            goto fail;
        }
        toks[t].type = WH_JSON_NUMBER;
        if ((p = scan_number(s, len, p, err, errlen)) == 0)
            goto fail;
        break;
    }
    toks[t].end = (uint32_t)p;

after_value:
    p = skip_ws(s, len, p);
    if (depth == 0) {
        if (p != len) {
            syntax_err(err, errlen, p, "unexpected data after the JSON value");
            goto fail;
        }
        return WH_OK;
    }
    parent = stack[depth - 1];
    if (toks[parent].type == WH_JSON_OBJECT) {
        if (p < len && s[p] == ',') {
            p = skip_ws(s, len, p + 1);
            goto key;
        }
        if (p < len && s[p] == '}')
            goto close_container;
        unexpected(err, errlen, s, len, p, "',' or '}' after object member");
        goto fail;
    }
    if (p < len && s[p] == ',') {
        p = skip_ws(s, len, p + 1);
        if (p < len && s[p] == ']') {
            syntax_err(err, errlen, p, "trailing comma before ']'");
            goto fail;
        }
        goto value;
    }
    if (p < len && s[p] == ']')
        goto close_container;
    unexpected(err, errlen, s, len, p, "',' or ']' after array element");
    goto fail;

close_container:
    toks[parent].end = (uint32_t)(p + 1);
    toks[parent].next = doc->ntoks;
    depth--;
    p++;
    goto after_value;

key:
    /* Reached after '{' (not followed by '}') or after ',' in an object. */
    if (p >= len || s[p] != '"') {
        if (p < len && s[p] == '}')
            syntax_err(err, errlen, p, "trailing comma before '}'");
        else
            unexpected(err, errlen, s, len, p, "a string key");
        goto fail;
    }
    if (doc->ntoks >= lim) {
        if ((lim = grow(doc, max_tokens, p, err, errlen)) < 0)
            goto fail;
        toks = doc->toks;
    }
    t = doc->ntoks++;
    toks[t].type = WH_JSON_STRING;
    toks[t].start = (uint32_t)p;
    toks[t].size = 0;
    toks[t].next = t + 1;
    toks[stack[depth - 1]].size++;
    if ((p = scan_string(s, len, p, err, errlen)) == 0)
        goto fail;
    toks[t].end = (uint32_t)p;
    p = skip_ws(s, len, p);
    if (p >= len || s[p] != ':') {
        unexpected(err, errlen, s, len, p, "':' after object key");
        goto fail;
    }
    p = skip_ws(s, len, p + 1);
    goto value;

fail:
    doc->ntoks = 0;
    return WH_ERR;
}

void wh_json_free(wh_json *doc)
{
    free(doc->toks);
    memset(doc, 0, sizeof(*doc));
}

int32_t wh_json_child(const wh_json *doc, int32_t tok)
{
    assert(tok < doc->ntoks);
    if (tok < 0)
        return -1;
    const wh_json_tok *t = &doc->toks[tok];
    if ((t->type == WH_JSON_OBJECT || t->type == WH_JSON_ARRAY) && t->size > 0)
        return tok + 1;
    return -1;
}

/* The input is known to be valid, so the first byte after a token tells
 * its role: ':' after a key, ',' before a sibling, '}' or ']' (or the end
 * of input) after the last child. */
int32_t wh_json_next(const wh_json *doc, int32_t tok)
{
    const unsigned char *s = (const unsigned char *)doc->buf;
    assert(tok < doc->ntoks);
    if (tok < 0)
        return -1;
    const wh_json_tok *t = &doc->toks[tok];
    size_t p = skip_ws(s, doc->len, t->end);
    if (p < doc->len && s[p] == ':') {
        assert(tok + 1 < doc->ntoks);
        t = &doc->toks[tok + 1];
        p = skip_ws(s, doc->len, t->end);
    }
    if (p < doc->len && s[p] == ',')
        return t->next;
    return -1;
}

int32_t wh_json_get(const wh_json *doc, int32_t obj, const char *key)
{
    assert(obj < doc->ntoks);
    const wh_json_tok *toks = doc->toks;
    if (obj < 0 || toks[obj].type != WH_JSON_OBJECT)
        return -1;
    int32_t k = obj + 1;
    for (int32_t i = 0; i < toks[obj].size; i++) {
        if (wh_json_streq(doc, k, key))
            return k + 1;
        k = toks[k + 1].next;
    }
    return -1;
}

static void put_utf8(uint32_t cp, unsigned char *o, size_t *n)
{
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        *n = 1;
    } else if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | cp >> 6);
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        *n = 2;
    } else if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | cp >> 12);
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        *n = 3;
    } else {
        o[0] = (unsigned char)(0xF0 | cp >> 18);
        o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
        o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[3] = (unsigned char)(0x80 | (cp & 0x3F));
        *n = 4;
    }
}

/* Decodes the (already validated) escape at *pp into o[0..*n) and moves
 * *pp past it. */
static void unescape(const unsigned char **pp, unsigned char o[4], size_t *n)
{
    const unsigned char *p = *pp + 1;
    uint32_t cp;
    switch (*p) {
    case 'b': cp = '\b'; break;
    case 'f': cp = '\f'; break;
    case 'n': cp = '\n'; break;
    case 'r': cp = '\r'; break;
    case 't': cp = '\t'; break;
    case 'u':
        cp = (uint32_t)hex4(p + 1);
        p += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            uint32_t lo = (uint32_t)hex4(p + 3);
            assert(p[1] == '\\' && p[2] == 'u' && lo >= 0xDC00 &&
                   lo <= 0xDFFF);
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            p += 6;
        }
        break;
    default:
        assert(*p == '"' || *p == '\\' || *p == '/');
        cp = *p;
        break;
    }
    *pp = p + 1;
    put_utf8(cp, o, n);
}

int wh_json_string(const wh_json *doc, int32_t tok, char *out, size_t cap,
                   size_t *outlen)
{
    assert(tok < doc->ntoks);
    if (tok < 0 || doc->toks[tok].type != WH_JSON_STRING || cap == 0)
        return WH_ERR;
    const wh_json_tok *t = &doc->toks[tok];
    const unsigned char *p = (const unsigned char *)doc->buf + t->start + 1;
    const unsigned char *e = (const unsigned char *)doc->buf + t->end - 1;
    size_t o = 0;
    while (p < e) {
        const unsigned char *bs = memchr(p, '\\', (size_t)(e - p));
        size_t n = (size_t)((bs ? bs : e) - p);
        if (n >= cap - o)
            goto fail;
        memcpy(out + o, p, n);
        o += n;
        p += n;
        if (bs) {
            unsigned char u[4];
            unescape(&p, u, &n);
            if (n >= cap - o)
                goto fail;
            memcpy(out + o, u, n);
            o += n;
        }
    }
    out[o] = '\0';
    if (outlen)
        *outlen = o;
    return WH_OK;

fail:
    out[0] = '\0';
    return WH_ERR;
}

int wh_json_streq(const wh_json *doc, int32_t tok, const char *str)
{
    assert(tok < doc->ntoks);
    if (tok < 0 || doc->toks[tok].type != WH_JSON_STRING)
        return 0;
    const wh_json_tok *t = &doc->toks[tok];
    const unsigned char *p = (const unsigned char *)doc->buf + t->start + 1;
    const unsigned char *e = (const unsigned char *)doc->buf + t->end - 1;
    const unsigned char *q = (const unsigned char *)str;
    while (p < e) {
        if (*p != '\\') {
            if (*q != *p)
                return 0;
            p++;
            q++;
            continue;
        }
        unsigned char u[4];
        size_t n;
        unescape(&p, u, &n);
        for (size_t i = 0; i < n; i++, q++)
            if (*q == '\0' || *q != u[i])
                return 0;
    }
    return *q == '\0';
}

size_t wh_json_compact(const wh_json *doc, int32_t tok, char *out)
{
    assert(tok >= 0 && tok < doc->ntoks);
    const wh_json_tok *toks = doc->toks;
    const char *s = doc->buf;
    size_t p = toks[tok].start, o = 0;

    /* Tokens of the subtree are in input order: copy the gaps between
     * strings without whitespace, and each string span whole. */
    for (int32_t i = tok; i < toks[tok].next; i++) {
        if (toks[i].type != WH_JSON_STRING)
            continue;
        for (; p < toks[i].start; p++)
            if (!is_ws((unsigned char)s[p]))
                out[o++] = s[p];
        memcpy(out + o, s + p, toks[i].end - p);
        o += toks[i].end - p;
        p = toks[i].end;
    }
    for (; p < toks[tok].end; p++)
        if (!is_ws((unsigned char)s[p]))
            out[o++] = s[p];
    return o;
}

int wh_json_int64(const wh_json *doc, int32_t tok, int64_t *out)
{
    assert(tok < doc->ntoks);
    if (tok < 0 || doc->toks[tok].type != WH_JSON_NUMBER)
        return WH_ERR;
    const wh_json_tok *t = &doc->toks[tok];
    const char *s = doc->buf;
    size_t p = t->start;
    int neg = s[p] == '-';
    uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    uint64_t v = 0;
    for (p += (size_t)neg; p < t->end; p++) {
        if (!is_digit((unsigned char)s[p]))
            return WH_ERR;
        unsigned d = (unsigned)(s[p] - '0');
        if (v > (limit - d) / 10)
            return WH_ERR;
        v = v * 10 + d;
    }
    if (neg)
        *out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
    else
        *out = (int64_t)v;
    return WH_OK;
}
