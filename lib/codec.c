/*
 * codec.c - event decoding and validation, Delivery and DeadLetter
 * encoding and decoding, with the dead letter's size bounds (see codec.h).
 * Pure functions over caller buffers; called from the worker's fan-out and
 * delivery stages, the scheduler, the producer API and webhookctl.
 */
#include "codec.h"

#include <assert.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base64.h"
#include "json.h"
#include "utf8.h"
#include "webhook/v1/webhook.pb-c.h"

struct wh_event_msg {
    wh_event ev;
    Webhook__V1__Event *pb;   /* set when decoded from protobuf */
    char *arena;              /* storage of a JSON-decoded event */
    const char **endpoints;
    wh_header_kv *headers;
};

struct wh_delivery_msg {
    wh_delivery d;
    Webhook__V1__Delivery *pb;
    const char **endpoints;
    wh_header_kv *headers;
};

/* ---- validation --------------------------------------------------------- */

/* Error texts quote at most this many bytes of what they refuse, as valid
 * UTF-8 without control characters (a bad byte shows as U+FFFD): the
 * texts reach logs, terminals and dead letters. */
#define QUOTE_MAX 64
typedef struct {
    char s[QUOTE_MAX + 1];
} quoted;

static const char *quote(quoted *q, const char *s, size_t n)
{
    wh_utf8_sanitize(q->s, sizeof(q->s), s, n, 0, NULL);
    return q->s;
}

static int id_char(unsigned char c) { return c > 0x20 && c < 0x7f; }

static int name_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.' ||
           c == ':';
}

int wh_codec_check_id(const char *what, const char *s, char *err,
                      size_t errlen)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0)
        return wh_errf(err, errlen, "%s is empty", what);
    if (n > WH_ID_MAX)
        return wh_errf(err, errlen, "%s is %zu bytes, the limit is %d", what,
                       n, WH_ID_MAX);
    for (size_t i = 0; i < n; i++)
        if (!id_char((unsigned char)s[i]))
            return wh_errf(err, errlen,
                           "%s may only hold printable ASCII without "
                           "spaces (byte %zu)", what, i);
    return WH_OK;
}

int wh_codec_check_app(const char *s, char *err, size_t errlen)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0)
        return wh_errf(err, errlen, "app is empty");
    if (n > WH_ID_MAX)
        return wh_errf(err, errlen, "app is %zu bytes, the limit is %d", n,
                       WH_ID_MAX);
    for (size_t i = 0; i < n; i++)
        if (!name_char((unsigned char)s[i]))
            return wh_errf(err, errlen,
                           "app may only hold letters, digits and _ - . :");
    return WH_OK;
}

int wh_codec_check_type(const char *s, char *err, size_t errlen)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0)
        return wh_errf(err, errlen, "type is empty");
    if (n > WH_TYPE_MAX)
        return wh_errf(err, errlen, "type is %zu bytes, the limit is %d", n,
                       WH_TYPE_MAX);
    for (size_t i = 0; i < n; i++) {
        if (!name_char((unsigned char)s[i]))
            return wh_errf(err, errlen,
                           "type may only hold letters, digits and _ - . :");
        if (s[i] == '.' && (i == 0 || i == n - 1 || s[i + 1] == '.'))
            return wh_errf(err, errlen, "type \"%s\" has an empty segment",
                           s);
    }
    return WH_OK;
}

int wh_codec_check_endpoint_id(const char *s, char *err, size_t errlen)
{
    size_t n = s ? strlen(s) : 0;
    if (n < 11 || n > 43 || strncmp(s, "ep_", 3) != 0)
        goto bad;
    for (size_t i = 3; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9')))
            goto bad;
    return WH_OK;
bad:;
    quoted q;
    return wh_errf(err, errlen,
                   "\"%s\" is not an endpoint id (ep_ followed by 8-40 "
                   "lowercase letters or digits)", quote(&q, s ? s : "", n));
}

static int check_content_type(const char *s, char *err, size_t errlen)
{
    size_t n = strlen(s);
    if (n == 0 || n > WH_CONTENT_TYPE_MAX)
        return wh_errf(err, errlen, "content_type must be 1-%d bytes",
                       WH_CONTENT_TYPE_MAX);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
            return wh_errf(err, errlen,
                           "content_type holds a control character");
    return WH_OK;
}

static const char *const reserved_headers[] = {
    "content-type", "content-length", "host", "user-agent", "connection",
    "transfer-encoding", "expect", "te", "upgrade", "trailer",
    "keep-alive", "proxy-authorization", "proxy-connection",
};

#define HEADER_NAME_MAX  64
#define HEADER_VALUE_MAX 1024

/* The name as receivers compare it: lower case, and '_' as '-' (CGI,
 * WSGI, PHP and Rack turn both into the same variable). name holds at
 * most HEADER_NAME_MAX bytes (checked before). */
static void header_key(const char *name, char key[HEADER_NAME_MAX + 1])
{
    size_t i = 0;
    for (; name[i] && i < HEADER_NAME_MAX; i++) {
        char c = name[i];
        key[i] = c == '_' ? '-' : (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
    }
    key[i] = '\0';
}

/* Checks the value: not empty, no space or tab at either end, valid
 * UTF-8, no control character but tab (C1 controls included). */
static int check_header_value(const char *name, const char *v, char *err,
                              size_t errlen)
{
    size_t n = strlen(v);
    if (n == 0)
        return wh_errf(err, errlen, "header %s has an empty value", name);
    if (n > HEADER_VALUE_MAX)
        return wh_errf(err, errlen, "header %s value exceeds %d bytes", name,
                       HEADER_VALUE_MAX);
    if (v[0] == ' ' || v[0] == '\t' || v[n - 1] == ' ' || v[n - 1] == '\t')
        return wh_errf(err, errlen, "header %s value begins or ends with a "
                                    "space or tab", name);
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)v[i];
        int k = wh_utf8_seq(v + i, n - i);
        if (k < 0)
            return wh_errf(err, errlen, "header %s value is not valid UTF-8 "
                                        "(byte %zu)", name, i);
        if ((c < 0x20 && c != '\t') || c == 0x7f ||
            (c == 0xc2 && (unsigned char)v[i + 1] < 0xa0))
            return wh_errf(err, errlen,
                           "header %s value holds a control character", name);
        i += (size_t)k;
    }
    return WH_OK;
}

/* Checks one header on its own; key gets its name as receivers see it. */
static int check_header(const wh_header_kv *h, char key[HEADER_NAME_MAX + 1],
                        char *err, size_t errlen)
{
    size_t n = strlen(h->name);
    if (n == 0 || n > HEADER_NAME_MAX)
        return wh_errf(err, errlen, "header names must be 1-%d bytes",
                       HEADER_NAME_MAX);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)h->name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '-' || c == '_')) {
            quoted q;
            return wh_errf(err, errlen, "header name \"%s\" is not a token",
                           quote(&q, h->name, n));
        }
    }
    header_key(h->name, key);
    if (strncmp(key, "webhook-", 8) == 0)
        return wh_errf(err, errlen, "header %s is reserved for signing",
                       h->name);
    for (size_t i = 0; i < WH_ARRAY_LEN(reserved_headers); i++)
        if (strcmp(key, reserved_headers[i]) == 0)
            return wh_errf(err, errlen, "header %s cannot be set per event",
                           h->name);
    return check_header_value(h->name, h->value, err, errlen);
}

/* Checks the headers one by one, then that no two name the same header. */
static int check_headers(const wh_header_kv *hs, size_t n, char *err,
                         size_t errlen)
{
    char keys[WH_EVENT_HEADERS_MAX][HEADER_NAME_MAX + 1];
    assert(n <= WH_EVENT_HEADERS_MAX);
    for (size_t i = 0; i < n; i++) {
        if (check_header(&hs[i], keys[i], err, errlen))
            return WH_ERR;
        for (size_t j = 0; j < i; j++)
            if (strcmp(keys[i], keys[j]) == 0)
                return wh_errf(err, errlen,
                               "headers %s and %s name the same header "
                               "(names compare without case, _ as -)",
                               hs[j].name, hs[i].name);
    }
    return WH_OK;
}

int wh_codec_event_validate(const wh_event *ev, size_t payload_max,
                            char *err, size_t errlen)
{
    if (wh_codec_check_id("id", ev->id, err, errlen) ||
        wh_codec_check_app(ev->app, err, errlen) ||
        wh_codec_check_type(ev->type, err, errlen))
        return WH_ERR;
    if (ev->content_type && check_content_type(ev->content_type, err, errlen))
        return WH_ERR;
    if (ev->payload_len > payload_max)
        return wh_errf(err, errlen, "payload is %zu bytes, the limit is %zu",
                       ev->payload_len, payload_max);
    if (ev->n_endpoints > WH_EVENT_ENDPOINTS_MAX)
        return wh_errf(err, errlen, "more than %d endpoints",
                       WH_EVENT_ENDPOINTS_MAX);
    for (size_t i = 0; i < ev->n_endpoints; i++)
        if (wh_codec_check_endpoint_id(ev->endpoint_ids[i], err, errlen))
            return WH_ERR;
    if (ev->n_headers > WH_EVENT_HEADERS_MAX)
        return wh_errf(err, errlen, "more than %d headers",
                       WH_EVENT_HEADERS_MAX);
    if (check_headers(ev->headers, ev->n_headers, err, errlen))
        return WH_ERR;
    if (ev->occurred_at_ms < 0)
        return wh_errf(err, errlen, "occurred_at_ms is negative");
    return WH_OK;
}

/* ---- JSON envelope ------------------------------------------------------ */

typedef struct {
    char *p, *end;
} arena;

static char *arena_take(arena *a, size_t n)
{
    if ((size_t)(a->end - a->p) < n)
        return NULL;
    char *r = a->p;
    a->p += n;
    return r;
}

static int json_str_field(const wh_json *d, int32_t tok, const char *name,
                          arena *a, const char **out, char *err,
                          size_t errlen)
{
    if (d->toks[tok].type != WH_JSON_STRING)
        return wh_errf(err, errlen, "field \"%s\" must be a string", name);
    size_t cap = d->toks[tok].end - d->toks[tok].start;
    char *s = arena_take(a, cap);
    size_t n;
    if (!s || wh_json_string(d, tok, s, cap, &n) != WH_OK)
        return wh_errf(err, errlen, "field \"%s\" is too long", name);
    if (strlen(s) != n)
        return wh_errf(err, errlen, "field \"%s\" contains a NUL character",
                       name);
    *out = s;
    return WH_OK;
}

static int decode_json(const char *buf, size_t len, size_t payload_max,
                       wh_event_msg *m, char *err, size_t errlen)
{
    wh_json d = {0};
    int rc = WH_ERR;
    if (wh_json_parse(&d, buf, len, (int32_t)(len < 1000000 ? len + 1 : 1000000),
                      err, errlen) != WH_OK)
        goto done;
    if (d.toks[0].type != WH_JSON_OBJECT) {
        wh_errf(err, errlen, "the envelope must be a JSON object");
        goto done;
    }
    size_t cap = 2 * len + 64;
    m->arena = malloc(cap);
    if (!m->arena) {
        wh_errf(err, errlen, "out of memory");
        goto done;
    }
    arena a = {m->arena, m->arena + cap};
    wh_event *ev = &m->ev;
    int32_t payload_tok = -1, b64_tok = -1, ep_tok = -1, hdr_tok = -1;
    int have_occurred = 0;
    for (int32_t k = wh_json_child(&d, 0); k >= 0; k = wh_json_next(&d, k)) {
        int32_t v = k + 1;
        const char **dst = NULL;
        const char *name;
        if (wh_json_streq(&d, k, "id"))
            dst = &ev->id, name = "id";
        else if (wh_json_streq(&d, k, "app"))
            dst = &ev->app, name = "app";
        else if (wh_json_streq(&d, k, "type"))
            dst = &ev->type, name = "type";
        else if (wh_json_streq(&d, k, "content_type"))
            dst = &ev->content_type, name = "content_type";
        else if (wh_json_streq(&d, k, "payload") && payload_tok < 0)
            payload_tok = v;
        else if (wh_json_streq(&d, k, "payload_base64") && b64_tok < 0)
            b64_tok = v;
        else if (wh_json_streq(&d, k, "endpoints") && ep_tok < 0)
            ep_tok = v;
        else if (wh_json_streq(&d, k, "headers") && hdr_tok < 0)
            hdr_tok = v;
        else if (wh_json_streq(&d, k, "occurred_at_ms")) {
            if (have_occurred++) {
                wh_errf(err, errlen, "field \"occurred_at_ms\" appears twice");
                goto done;
            }
            if (wh_json_int64(&d, v, &ev->occurred_at_ms) != WH_OK) {
                wh_errf(err, errlen, "field \"occurred_at_ms\" must be an "
                                     "integer (unix milliseconds)");
                goto done;
            }
        } else {
            char key[64];
            size_t kn;
            quoted q;
            if (wh_json_string(&d, k, key, sizeof(key), &kn) != WH_OK) {
                wh_strlcpy(key, "(long key)", sizeof(key));
                kn = strlen(key);
            }
            wh_errf(err, errlen,
                    "unknown or repeated field \"%s\" (expected id, app, type, "
                    "payload or payload_base64, content_type, endpoints, "
                    "headers, occurred_at_ms)", quote(&q, key, kn));
            goto done;
        }
        if (dst) {
            if (*dst) {
                wh_errf(err, errlen, "field \"%s\" appears twice", name);
                goto done;
            }
            if (json_str_field(&d, v, name, &a, dst, err, errlen))
                goto done;
        }
    }
    if (!ev->id || !ev->app || !ev->type) {
        wh_errf(err, errlen, "missing field \"%s\"",
                !ev->id ? "id" : !ev->app ? "app" : "type");
        goto done;
    }
    if ((payload_tok < 0) == (b64_tok < 0)) {
        wh_errf(err, errlen,
                "exactly one of \"payload\" and \"payload_base64\" is required");
        goto done;
    }
    if (payload_tok >= 0) {
        size_t span = d.toks[payload_tok].end - d.toks[payload_tok].start;
        if (span > payload_max + 64 * 1024 && span > 2 * payload_max) {
            wh_errf(err, errlen, "payload is %zu bytes, the limit is %zu",
                    span, payload_max);
            goto done;
        }
        char *p = arena_take(&a, span + 1);
        if (!p) {
            wh_errf(err, errlen, "out of memory");
            goto done;
        }
        ev->payload_len = wh_json_compact(&d, payload_tok, p);
        ev->payload = (const uint8_t *)p;
        if (!ev->content_type)
            ev->content_type = WH_CT_JSON;
    } else {
        if (d.toks[b64_tok].type != WH_JSON_STRING) {
            wh_errf(err, errlen, "field \"payload_base64\" must be a string");
            goto done;
        }
        /* unescape first: "P\/8=" is valid JSON for P/8= */
        size_t slen = d.toks[b64_tok].end - d.toks[b64_tok].start;
        char *s = arena_take(&a, slen);
        size_t sn;
        if (!s || wh_json_string(&d, b64_tok, s, slen, &sn) != WH_OK) {
            wh_errf(err, errlen, "out of memory");
            goto done;
        }
        size_t dmax = wh_base64_decoded_max(sn);
        char *p = arena_take(&a, dmax + 1);
        size_t n;
        if (!p || wh_base64_decode(s, sn, p, dmax + 1, &n) != WH_OK) {
            wh_errf(err, errlen, "field \"payload_base64\" is not valid "
                                 "base64");
            goto done;
        }
        ev->payload = (const uint8_t *)p;
        ev->payload_len = n;
        if (!ev->content_type)
            ev->content_type = "application/octet-stream";
    }
    if (ep_tok >= 0) {
        if (d.toks[ep_tok].type != WH_JSON_ARRAY) {
            wh_errf(err, errlen, "field \"endpoints\" must be an array of "
                                 "endpoint ids");
            goto done;
        }
        size_t n = (size_t)d.toks[ep_tok].size;
        if (n > WH_EVENT_ENDPOINTS_MAX) {
            wh_errf(err, errlen, "more than %d endpoints",
                    WH_EVENT_ENDPOINTS_MAX);
            goto done;
        }
        m->endpoints = calloc(n + 1, sizeof(*m->endpoints));
        if (!m->endpoints) {
            wh_errf(err, errlen, "out of memory");
            goto done;
        }
        size_t i = 0;
        for (int32_t e = wh_json_child(&d, ep_tok); e >= 0;
             e = wh_json_next(&d, e))
            if (json_str_field(&d, e, "endpoints[]", &a, &m->endpoints[i++],
                               err, errlen))
                goto done;
        ev->endpoint_ids = m->endpoints;
        ev->n_endpoints = n;
    }
    if (hdr_tok >= 0) {
        if (d.toks[hdr_tok].type != WH_JSON_OBJECT) {
            wh_errf(err, errlen, "field \"headers\" must be an object of "
                                 "strings");
            goto done;
        }
        size_t n = (size_t)d.toks[hdr_tok].size;
        if (n > WH_EVENT_HEADERS_MAX) {
            wh_errf(err, errlen, "more than %d headers", WH_EVENT_HEADERS_MAX);
            goto done;
        }
        m->headers = calloc(n + 1, sizeof(*m->headers));
        if (!m->headers) {
            wh_errf(err, errlen, "out of memory");
            goto done;
        }
        size_t i = 0;
        for (int32_t k = wh_json_child(&d, hdr_tok); k >= 0;
             k = wh_json_next(&d, k), i++)
            if (json_str_field(&d, k, "headers", &a, &m->headers[i].name,
                               err, errlen) ||
                json_str_field(&d, k + 1, "headers", &a, &m->headers[i].value,
                               err, errlen))
                goto done;
        ev->headers = m->headers;
        ev->n_headers = n;
    }
    rc = wh_codec_event_validate(ev, payload_max, err, errlen);
done:
    wh_json_free(&d);
    return rc;
}

/* ---- protobuf ----------------------------------------------------------- */

/* protobuf-c hands string fields over NUL-terminated, so "pb\0nul" would
 * read as "pb": the wire form is walked for the lengths of the string
 * fields, as the JSON decoder checks its strings. */
typedef struct pb_str_field {
    uint32_t num;
    const char *name;                /* a string field, or */
    const struct pb_str_field *sub;  /* a message field holding some */
    size_t nsub;
} pb_str_field;

static const pb_str_field header_entry_strs[] = {
    {1, "headers", NULL, 0},
    {2, "headers", NULL, 0},
};
static const pb_str_field event_strs[] = {
    {1, "id", NULL, 0},
    {2, "app", NULL, 0},
    {3, "type", NULL, 0},
    {6, "content_type", NULL, 0},
    {7, "endpoint_ids", NULL, 0},
    {8, NULL, header_entry_strs, WH_ARRAY_LEN(header_entry_strs)},
};
static const pb_str_field delivery_strs[] = {
    {1, "delivery_id", NULL, 0},
    {2, "endpoint_id", NULL, 0},
    {4, NULL, event_strs, WH_ARRAY_LEN(event_strs)},
    {6, "source_topic", NULL, 0},
};
static const pb_str_field dead_letter_strs[] = {
    {3, NULL, delivery_strs, WH_ARRAY_LEN(delivery_strs)},
};

static int wire_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return WH_OK;
    }
    return WH_ERR;
}

/* Checks that no string field of the message at p[0..n) that fields lists
 * holds a NUL byte. The message was unpacked already, so the wire form is
 * sound; WH_ERR on anything unexpected all the same. */
static int pb_check_nul(const uint8_t *p, size_t n, const pb_str_field *fields,
                        size_t nfields, char *err, size_t errlen)
{
    const uint8_t *end = p + n;
    while (p < end) {
        uint64_t tag, len;
        if (wire_varint(&p, end, &tag) != WH_OK)
            goto bad;
        switch (tag & 7) {
        case 0:
            if (wire_varint(&p, end, &len) != WH_OK)
                goto bad;
            continue;
        case 1:
            len = 8;
            break;
        case 5:
            len = 4;
            break;
        case 2:
            if (wire_varint(&p, end, &len) != WH_OK)
                goto bad;
            break;
        default:
            goto bad;
        }
        if (len > (uint64_t)(end - p))
            goto bad;
        if ((tag & 7) == 2) {
            for (size_t i = 0; i < nfields; i++) {
                if (fields[i].num != (tag >> 3))
                    continue;
                if (fields[i].sub) {
                    if (pb_check_nul(p, (size_t)len, fields[i].sub,
                                     fields[i].nsub, err, errlen))
                        return WH_ERR;
                } else if (memchr(p, 0, (size_t)len)) {
                    return wh_errf(err, errlen, "field \"%s\" contains a "
                                   "NUL character", fields[i].name);
                }
            }
        }
        p += len;
    }
    return WH_OK;
bad:
    return wh_errf(err, errlen, "malformed protobuf wire format");
}

/* Points ev at the fields of pb; arrays go into the caller's slots. */
static int view_pb_event(const Webhook__V1__Event *pb, wh_event *ev,
                         const char ***endpoints, wh_header_kv **headers,
                         char *err, size_t errlen)
{
    ev->id = pb->id;
    ev->app = pb->app;
    ev->type = pb->type;
    ev->content_type = pb->content_type && *pb->content_type
                           ? pb->content_type
                           : WH_CT_JSON;
    ev->payload = pb->payload.data;
    ev->payload_len = pb->payload.len;
    ev->occurred_at_ms = pb->occurred_at_ms;
    ev->published_at_us = pb->published_at_us;
    if (pb->n_endpoint_ids > WH_EVENT_ENDPOINTS_MAX)
        return wh_errf(err, errlen, "more than %d endpoints",
                       WH_EVENT_ENDPOINTS_MAX);
    if (pb->n_headers > WH_EVENT_HEADERS_MAX)
        return wh_errf(err, errlen, "more than %d headers",
                       WH_EVENT_HEADERS_MAX);
    if (pb->n_endpoint_ids) {
        *endpoints = calloc(pb->n_endpoint_ids, sizeof(**endpoints));
        if (!*endpoints)
            return wh_errf(err, errlen, "out of memory");
        for (size_t i = 0; i < pb->n_endpoint_ids; i++)
            (*endpoints)[i] = pb->endpoint_ids[i];
        ev->endpoint_ids = *endpoints;
        ev->n_endpoints = pb->n_endpoint_ids;
    }
    if (pb->n_headers) {
        *headers = calloc(pb->n_headers, sizeof(**headers));
        if (!*headers)
            return wh_errf(err, errlen, "out of memory");
        for (size_t i = 0; i < pb->n_headers; i++) {
            (*headers)[i].name = pb->headers[i]->key;
            (*headers)[i].value = pb->headers[i]->value;
        }
        ev->headers = *headers;
        ev->n_headers = pb->n_headers;
    }
    return WH_OK;
}

static int looks_like_json(const char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        char c = buf[i];
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
            continue;
        return c == '{';
    }
    return 0;
}

static int decode_pb(const void *buf, size_t len, size_t payload_max,
                     wh_event_msg *m, char *err, size_t errlen)
{
    if (len > payload_max + 64 * 1024)
        return wh_errf(err, errlen, "message is %zu bytes, the limit is %zu",
                       len, payload_max + 64 * 1024);
    m->pb = webhook__v1__event__unpack(NULL, len, buf);
    if (!m->pb)
        return wh_errf(err, errlen, "not a valid protobuf webhook.v1.Event "
                                    "nor a JSON envelope");
    if (pb_check_nul(buf, len, event_strs, WH_ARRAY_LEN(event_strs), err,
                     errlen))
        return WH_ERR;
    if (view_pb_event(m->pb, &m->ev, &m->endpoints, &m->headers, err,
                      errlen))
        return WH_ERR;
    return wh_codec_event_validate(&m->ev, payload_max, err, errlen);
}

/* Frees what a failed decode left in m and zeroes it for another try. */
static void reset_msg(wh_event_msg *m)
{
    if (m->pb)
        webhook__v1__event__free_unpacked(m->pb, NULL);
    free(m->arena);
    free(m->endpoints);
    free(m->headers);
    memset(m, 0, sizeof(*m));
}

int wh_codec_event_decode(const void *buf, size_t len,
                          const char *content_type, size_t payload_max,
                          wh_event_msg **out, char *err, size_t errlen)
{
    *out = NULL;
    wh_event_msg *m = calloc(1, sizeof(*m));
    if (!m)
        return wh_errf(err, errlen, "out of memory");
    int json, sniffed = 0;
    if (content_type && strncmp(content_type, WH_CT_JSON,
                                strlen(WH_CT_JSON)) == 0)
        json = 1;
    else if (content_type && strncmp(content_type, WH_CT_PROTOBUF,
                                     strlen(WH_CT_PROTOBUF)) == 0)
        json = 0;
    else {
        json = looks_like_json(buf, len);
        sniffed = 1;
    }
    if (len == 0) {
        wh_errf(err, errlen, "empty message");
        goto fail;
    }
    if (json) {
        if (decode_json(buf, len, payload_max, m, err, errlen) != WH_OK) {
            /* A protobuf Event starts with field 1's tag, 0x0a (a newline),
             * then the id's length, which is '{' for a 123-byte id: when a
             * sniffed envelope fails, a valid Event is still accepted and
             * otherwise the JSON error stands. */
            if (!sniffed)
                goto fail;
            reset_msg(m);
            if (decode_pb(buf, len, payload_max, m, NULL, 0) != WH_OK)
                goto fail;
        }
    } else if (decode_pb(buf, len, payload_max, m, err, errlen) != WH_OK) {
        goto fail;
    }
    *out = m;
    return WH_OK;
fail:
    wh_codec_event_free(m);
    return WH_ERR;
}

const wh_event *wh_codec_event(const wh_event_msg *m) { return &m->ev; }

void wh_codec_event_free(wh_event_msg *m)
{
    if (!m)
        return;
    if (m->pb)
        webhook__v1__event__free_unpacked(m->pb, NULL);
    free(m->arena);
    free(m->endpoints);
    free(m->headers);
    free(m);
}

/* Fills pb (and the caller's scratch arrays) from ev without copying. */
static int fill_pb_event(const wh_event *ev, Webhook__V1__Event *pb,
                         Webhook__V1__Event__HeadersEntry *entries,
                         Webhook__V1__Event__HeadersEntry **entry_ptrs)
{
    webhook__v1__event__init(pb);
    pb->id = (char *)ev->id;
    pb->app = (char *)ev->app;
    pb->type = (char *)ev->type;
    pb->content_type = (char *)(ev->content_type ? ev->content_type : "");
    pb->payload.data = (uint8_t *)ev->payload;
    pb->payload.len = ev->payload_len;
    pb->occurred_at_ms = ev->occurred_at_ms;
    pb->published_at_us = ev->published_at_us;
    pb->n_endpoint_ids = ev->n_endpoints;
    pb->endpoint_ids = (char **)ev->endpoint_ids;
    if (ev->n_headers > WH_EVENT_HEADERS_MAX)
        return WH_ERR;
    for (size_t i = 0; i < ev->n_headers; i++) {
        webhook__v1__event__headers_entry__init(&entries[i]);
        entries[i].key = (char *)ev->headers[i].name;
        entries[i].value = (char *)ev->headers[i].value;
        entry_ptrs[i] = &entries[i];
    }
    pb->n_headers = ev->n_headers;
    pb->headers = ev->n_headers ? entry_ptrs : NULL;
    return WH_OK;
}

static int append_packed(wh_buf *out, size_t need, char *err, size_t errlen,
                         uint8_t **dst)
{
    assert(out->len <= out->max);
    if (need > out->max - out->len)
        return wh_errf(err, errlen, "encoded message of %zu bytes "
                                    "exceeds the buffer limit", need);
    void *at;
    if (wh_buf_grow(out, need, &at) != WH_OK)
        return wh_errf(err, errlen, "out of memory");
    *dst = at;
    return WH_OK;
}

int wh_codec_event_encode(const wh_event *ev, wh_buf *out, char *err,
                          size_t errlen)
{
    Webhook__V1__Event pb;
    Webhook__V1__Event__HeadersEntry e[WH_EVENT_HEADERS_MAX];
    Webhook__V1__Event__HeadersEntry *ep[WH_EVENT_HEADERS_MAX];
    if (fill_pb_event(ev, &pb, e, ep) != WH_OK)
        return wh_errf(err, errlen, "more than %d headers",
                       WH_EVENT_HEADERS_MAX);
    size_t n = webhook__v1__event__get_packed_size(&pb);
    uint8_t *dst;
    if (append_packed(out, n, err, errlen, &dst))
        return WH_ERR;
    webhook__v1__event__pack(&pb, dst);
    return WH_OK;
}

static void fill_pb_delivery(const wh_delivery *d, Webhook__V1__Delivery *pb,
                             Webhook__V1__Event *ev)
{
    webhook__v1__delivery__init(pb);
    pb->delivery_id = (char *)d->delivery_id;
    pb->endpoint_id = (char *)d->endpoint_id;
    pb->attempt = d->attempt;
    pb->event = ev;
    pb->created_at_us = d->created_at_us;
    pb->source_topic = (char *)(d->source_topic ? d->source_topic : "");
    pb->source_partition = d->source_partition;
    pb->source_offset = d->source_offset;
    pb->kind = (Webhook__V1__Delivery__Kind)d->kind;
}

int wh_codec_delivery_encode(const wh_delivery *d, wh_buf *out, char *err,
                             size_t errlen)
{
    Webhook__V1__Delivery pb;
    Webhook__V1__Event ev;
    Webhook__V1__Event__HeadersEntry e[WH_EVENT_HEADERS_MAX];
    Webhook__V1__Event__HeadersEntry *ep[WH_EVENT_HEADERS_MAX];
    if (fill_pb_event(&d->event, &ev, e, ep) != WH_OK)
        return wh_errf(err, errlen, "more than %d headers",
                       WH_EVENT_HEADERS_MAX);
    fill_pb_delivery(d, &pb, &ev);
    size_t n = webhook__v1__delivery__get_packed_size(&pb);
    uint8_t *dst;
    if (append_packed(out, n, err, errlen, &dst))
        return WH_ERR;
    webhook__v1__delivery__pack(&pb, dst);
    return WH_OK;
}

/* Points d at the fields of pb (arrays into the caller's slots) and checks
 * the rules a delivery meets before it becomes an HTTP request. */
static int view_pb_delivery(const Webhook__V1__Delivery *pb, wh_delivery *d,
                            const char ***endpoints, wh_header_kv **headers,
                            char *err, size_t errlen)
{
    d->delivery_id = pb->delivery_id;
    d->endpoint_id = pb->endpoint_id;
    d->attempt = pb->attempt ? pb->attempt : 1;
    d->created_at_us = pb->created_at_us;
    d->source_topic = pb->source_topic;
    d->source_partition = pb->source_partition;
    d->source_offset = pb->source_offset;
    d->kind = pb->kind == WEBHOOK__V1__DELIVERY__KIND__KIND_RETRY
                  ? WH_DELIVERY_RETRY
              : pb->kind == WEBHOOK__V1__DELIVERY__KIND__KIND_REPLAY
                  ? WH_DELIVERY_REPLAY
                  : WH_DELIVERY_NEW;
    if (view_pb_event(pb->event, &d->event, endpoints, headers, err,
                      errlen))
        return WH_ERR;
    /* The event's rules hold here too: its headers and content type go
     * into the HTTP request. The payload limit was applied at fan-out. */
    if (wh_codec_check_endpoint_id(d->endpoint_id, err, errlen) ||
        wh_codec_check_id("delivery_id", d->delivery_id, err, errlen) ||
        wh_codec_event_validate(&d->event, SIZE_MAX, err, errlen))
        return WH_ERR;
    return WH_OK;
}

int wh_codec_delivery_decode(const void *buf, size_t len,
                             wh_delivery_msg **out, char *err, size_t errlen)
{
    *out = NULL;
    wh_delivery_msg *m = calloc(1, sizeof(*m));
    if (!m)
        return wh_errf(err, errlen, "out of memory");
    m->pb = webhook__v1__delivery__unpack(NULL, len, buf);
    if (!m->pb || !m->pb->event) {
        wh_errf(err, errlen, "not a valid protobuf webhook.v1.Delivery");
        goto fail;
    }
    if (pb_check_nul(buf, len, delivery_strs, WH_ARRAY_LEN(delivery_strs),
                     err, errlen))
        goto fail;
    if (view_pb_delivery(m->pb, &m->d, &m->endpoints, &m->headers, err,
                         errlen))
        goto fail;
    *out = m;
    return WH_OK;
fail:
    wh_codec_delivery_free(m);
    return WH_ERR;
}

const wh_delivery *wh_codec_delivery(const wh_delivery_msg *m)
{
    return &m->d;
}

void wh_codec_delivery_free(wh_delivery_msg *m)
{
    if (!m)
        return;
    if (m->pb)
        webhook__v1__delivery__free_unpacked(m->pb, NULL);
    free(m->endpoints);
    free(m->headers);
    free(m);
}

/* ---- dead letters ------------------------------------------------------ */

struct wh_dead_letter_msg {
    wh_dead_letter dl;
    wh_delivery d;
    Webhook__V1__DeadLetter *pb;
    const char **endpoints;
    wh_header_kv *headers;
};

/* Appended to the detail of a dead letter without bodies. */
static const char raw_note[] =
    " [raw message left out; raw_len and raw_sha256 identify it]";
static const char payload_note[] =
    " [event payload left out; payload_len and payload_sha256 identify it]";

/* What one dead letter's protobuf form points into. */
typedef struct {
    Webhook__V1__DeadLetter pb;
    Webhook__V1__Delivery dpb;
    Webhook__V1__Event ev;
    Webhook__V1__Event__HeadersEntry e[WH_EVENT_HEADERS_MAX];
    Webhook__V1__Event__HeadersEntry *ep[WH_EVENT_HEADERS_MAX];
    uint8_t raw_md[WH_SHA256_LEN], payload_md[WH_SHA256_LEN];
    char detail[WH_DEAD_TEXT_MAX + 1], last_error[WH_DEAD_TEXT_MAX + 1];
} dl_pb;

/* Copies s into dst (max + 1 bytes) as at most max bytes of valid UTF-8
 * without control characters but tab, whole characters only. Returns the
 * bytes written. */
static size_t copy_text(char *dst, size_t max, const char *s)
{
    return wh_utf8_sanitize(dst, max + 1, s ? s : "", s ? strlen(s) : 0,
                            WH_UTF8_KEEP_TAB, NULL);
}

/* Fills x from dl, applying the bounds. WH_ERR only for too many headers. */
static int fill_pb_dead_letter(const wh_dead_letter *dl, dl_pb *x)
{
    Webhook__V1__DeadLetter *pb = &x->pb;
    webhook__v1__dead_letter__init(pb);
    pb->reason = (Webhook__V1__DeadLetter__Reason)dl->reason;
    if (dl->omit_bodies && (dl->raw || dl->delivery)) {
        const char *note = dl->raw ? raw_note : payload_note;
        size_t nl = strlen(note);
        size_t n = copy_text(x->detail, WH_DEAD_TEXT_MAX - nl, dl->detail);
        memcpy(x->detail + n, note, nl + 1);
    } else {
        copy_text(x->detail, WH_DEAD_TEXT_MAX, dl->detail);
    }
    pb->detail = x->detail;
    if (dl->delivery) {
        const wh_event *ev = &dl->delivery->event;
        if (fill_pb_event(ev, &x->ev, x->e, x->ep) != WH_OK)
            return WH_ERR;
        fill_pb_delivery(dl->delivery, &x->dpb, &x->ev);
        pb->delivery = &x->dpb;
        SHA256(ev->payload_len ? ev->payload : (const uint8_t *)"",
               ev->payload_len, x->payload_md);
        pb->payload_len = ev->payload_len;
        pb->payload_sha256.data = x->payload_md;
        pb->payload_sha256.len = sizeof(x->payload_md);
        if (dl->omit_bodies) {
            x->ev.payload.data = NULL;
            x->ev.payload.len = 0;
        }
    }
    if (dl->raw) {
        SHA256(dl->raw_len ? dl->raw : (const uint8_t *)"", dl->raw_len,
               x->raw_md);
        pb->raw_len = dl->raw_len;
        pb->raw_sha256.data = x->raw_md;
        pb->raw_sha256.len = sizeof(x->raw_md);
        if (!dl->omit_bodies) {
            pb->raw.data = (uint8_t *)dl->raw;
            pb->raw.len = dl->raw_len < WH_DEAD_RAW_PREFIX_MAX
                              ? dl->raw_len
                              : WH_DEAD_RAW_PREFIX_MAX;
        }
    }
    pb->bodies_omitted = dl->omit_bodies;
    pb->source_topic = (char *)(dl->source_topic ? dl->source_topic : "");
    pb->source_partition = dl->source_partition;
    pb->source_offset = dl->source_offset;
    pb->attempts = dl->attempts;
    pb->last_status_code = dl->last_status_code;
    copy_text(x->last_error, WH_DEAD_TEXT_MAX, dl->last_error);
    pb->last_error = x->last_error;
    pb->dead_at_us = dl->dead_at_us;
    return WH_OK;
}

int wh_codec_dead_letter_encode(const wh_dead_letter *dl, wh_buf *out,
                                char *err, size_t errlen)
{
    dl_pb *x = malloc(sizeof(*x));
    if (!x)
        return wh_errf(err, errlen, "out of memory");
    int rc = WH_ERR;
    if (fill_pb_dead_letter(dl, x) != WH_OK) {
        wh_errf(err, errlen, "more than %d headers", WH_EVENT_HEADERS_MAX);
        goto done;
    }
    size_t n = webhook__v1__dead_letter__get_packed_size(&x->pb);
    uint8_t *dst;
    if (append_packed(out, n, err, errlen, &dst))
        goto done;
    webhook__v1__dead_letter__pack(&x->pb, dst);
    rc = WH_OK;
done:
    free(x);
    return rc;
}

size_t wh_codec_dead_letter_size(const wh_dead_letter *dl)
{
    dl_pb *x = malloc(sizeof(*x));
    size_t n = 0;
    if (x && fill_pb_dead_letter(dl, x) == WH_OK)
        n = webhook__v1__dead_letter__get_packed_size(&x->pb);
    free(x);
    return n;
}

int wh_codec_dead_letter_decode(const void *buf, size_t len,
                                wh_dead_letter_msg **out, char *err,
                                size_t errlen)
{
    *out = NULL;
    wh_dead_letter_msg *m = calloc(1, sizeof(*m));
    if (!m)
        return wh_errf(err, errlen, "out of memory");
    m->pb = webhook__v1__dead_letter__unpack(NULL, len, buf);
    if (!m->pb) {
        wh_errf(err, errlen, "not a valid protobuf webhook.v1.DeadLetter");
        goto fail;
    }
    if (pb_check_nul(buf, len, dead_letter_strs,
                     WH_ARRAY_LEN(dead_letter_strs), err, errlen))
        goto fail;
    const Webhook__V1__DeadLetter *pb = m->pb;
    wh_dead_letter *dl = &m->dl;
    if (pb->delivery) {
        if (!pb->delivery->event) {
            wh_errf(err, errlen, "the dead letter's delivery has no event");
            goto fail;
        }
        if (view_pb_delivery(pb->delivery, &m->d, &m->endpoints,
                             &m->headers, err, errlen))
            goto fail;
        dl->delivery = &m->d;
    }
    if ((pb->raw_sha256.len && pb->raw_sha256.len != WH_SHA256_LEN) ||
        (pb->payload_sha256.len && pb->payload_sha256.len != WH_SHA256_LEN)) {
        wh_errf(err, errlen, "a SHA-256 in the dead letter is not 32 bytes");
        goto fail;
    }
    dl->reason = (wh_dead_reason)pb->reason;
    dl->detail = pb->detail;
    dl->raw = pb->raw.len ? pb->raw.data : NULL;
    dl->raw_len = pb->raw.len;
    dl->source_topic = pb->source_topic;
    dl->source_partition = pb->source_partition;
    dl->source_offset = pb->source_offset;
    dl->attempts = pb->attempts;
    dl->last_status_code = pb->last_status_code;
    dl->last_error = pb->last_error;
    dl->dead_at_us = pb->dead_at_us;
    dl->omit_bodies = pb->bodies_omitted;
    /* dead letters written before raw_len existed carried the whole
     * message */
    dl->raw_total_len = pb->raw_len ? pb->raw_len : pb->raw.len;
    dl->has_raw_sha256 = pb->raw_sha256.len == WH_SHA256_LEN;
    if (dl->has_raw_sha256)
        memcpy(dl->raw_sha256, pb->raw_sha256.data, WH_SHA256_LEN);
    dl->payload_total_len = pb->payload_len;
    dl->has_payload_sha256 = pb->payload_sha256.len == WH_SHA256_LEN;
    if (dl->has_payload_sha256)
        memcpy(dl->payload_sha256, pb->payload_sha256.data, WH_SHA256_LEN);
    *out = m;
    return WH_OK;
fail:
    wh_codec_dead_letter_free(m);
    return WH_ERR;
}

const wh_dead_letter *wh_codec_dead_letter(const wh_dead_letter_msg *m)
{
    return &m->dl;
}

void wh_codec_dead_letter_free(wh_dead_letter_msg *m)
{
    if (!m)
        return;
    if (m->pb)
        webhook__v1__dead_letter__free_unpacked(m->pb, NULL);
    free(m->endpoints);
    free(m->headers);
    free(m);
}

void wh_codec_delivery_id(const char *app, const char *event_id,
                          const char *endpoint_id, char *out)
{
    unsigned char in[2 * WH_ID_MAX + 64], md[SHA256_DIGEST_LENGTH];
    static const char hex[] = "0123456789abcdef";
    size_t a = strnlen(app, WH_ID_MAX), e = strnlen(event_id, WH_ID_MAX),
           p = strnlen(endpoint_id, 62);
    memcpy(in, app, a);
    in[a] = '\0';
    memcpy(in + a + 1, event_id, e);
    in[a + 1 + e] = '\0';
    memcpy(in + a + e + 2, endpoint_id, p);
    SHA256(in, a + e + 2 + p, md);
    memcpy(out, "msg_", 4);
    for (int i = 0; i < 16; i++) {
        out[4 + 2 * i] = hex[md[i] >> 4];
        out[5 + 2 * i] = hex[md[i] & 15];
    }
    out[WH_DELIVERY_ID_LEN] = '\0';
}
