/*
 * test_codec.c - unit tests for lib/codec.c: the JSON envelope (fields,
 * compact payload, base64 payload, every rejection with its exact reason),
 * content-type dispatch and sniffing, protobuf Event and Delivery round
 * trips, protobuf strings holding a NUL, the header rules (reserved names
 * and duplicates without case and with _ as -, values), the DeadLetter
 * encoding read back with the generated protobuf-c code and with the
 * codec's decoder at each of its bounds (raw prefix, texts, no bodies),
 * delivery ids checked against an independent SHA-256, and the
 * validators' boundaries.
 */
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base64.h"
#include "codec.h"
#include "test.h"
#include "webhook/v1/webhook.pb-c.h"

#define PMAX WH_PAYLOAD_DEFAULT_MAX
#define EP1 "ep_abcdefgh"
#define EP2 "ep_0123456789abcdefghij"

static char g_err[WH_ERRLEN];

/* Decodes buf and discards the result. Returns 1 for a clean WH_ERR (out
 * set to NULL), 0 for WH_OK, -1 for anything else. g_err gets the
 * reason. */
static int decode_rc(const void *buf, size_t len, const char *ct,
                     size_t pmax)
{
    wh_event_msg *m = (wh_event_msg *)&g_err;
    g_err[0] = '\0';
    int rc = wh_codec_event_decode(buf, len, ct, pmax, &m, g_err,
                                   sizeof(g_err));
    if (rc == WH_OK) {
        wh_codec_event_free(m);
        return 0;
    }
    return rc == WH_ERR && m == NULL ? 1 : -1;
}

/* Decodes a string that must be accepted; the caller frees the result. */
static wh_event_msg *decode_ok(const char *s, const char *ct, size_t pmax)
{
    wh_event_msg *m = NULL;
    g_err[0] = '\0';
    if (wh_codec_event_decode(s, strlen(s), ct, pmax, &m, g_err,
                              sizeof(g_err)) != WH_OK) {
        fprintf(stderr, "unexpected decode error: %s\n  input: %.200s\n",
                g_err, s);
        return NULL;
    }
    return m;
}

#define EXPECT_ERR_FULL(s, len, ct, pmax, want)                          \
    do {                                                                 \
        CHECK_INT(decode_rc((s), (len), (ct), (pmax)), 1);               \
        CHECK_STR(g_err, (want));                                        \
    } while (0)
#define EXPECT_ERR(s, want)                                              \
    EXPECT_ERR_FULL(s, strlen(s), WH_CT_JSON, PMAX, want)
#define EXPECT_OK(s) CHECK_INT(decode_rc((s), strlen(s), WH_CT_JSON, PMAX), 0)

/* The minimal valid envelope with extra members spliced in before the
 * closing brace: "{"id":"e1","app":"shop","type":"order.paid"<extra>}". */
static const char *env(const char *extra)
{
    static char buf[8192];
    int n = snprintf(buf, sizeof(buf),
                     "{\"id\":\"e1\",\"app\":\"shop\","
                     "\"type\":\"order.paid\"%s}",
                     extra);
    if (n < 0 || (size_t)n >= sizeof(buf))
        abort();
    return buf;
}

/* A heap string of n copies of c (NUL-terminated). */
static char *rep(char c, size_t n)
{
    char *s = malloc(n + 1);
    if (!s)
        abort();
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

/* ---- JSON envelope: accepted forms -------------------------------------- */

static void test_json_minimal(void)
{
    const char *in = "{\"id\":\"evt_1\",\"app\":\"shop\","
                     "\"type\":\"order.paid\","
                     "\"payload\":{\"a\":1}}";
    wh_event_msg *m = decode_ok(in, NULL, PMAX);
    CHECK(m != NULL);
    if (!m)
        return;
    const wh_event *ev = wh_codec_event(m);
    CHECK_STR(ev->id, "evt_1");
    CHECK_STR(ev->app, "shop");
    CHECK_STR(ev->type, "order.paid");
    CHECK_STR(ev->content_type, "application/json");
    CHECK_MEM(ev->payload, ev->payload_len, "{\"a\":1}", 7);
    CHECK_INT(ev->occurred_at_ms, 0);
    CHECK_INT(ev->published_at_us, 0);
    CHECK_INT(ev->n_endpoints, 0);
    CHECK_INT(ev->n_headers, 0);
    wh_codec_event_free(m);

    /* the same with the JSON content type, with parameters */
    m = decode_ok(in, "application/json; charset=utf-8", PMAX);
    CHECK(m != NULL);
    wh_codec_event_free(m);
    wh_codec_event_free(NULL);
}

static void test_json_payload_compact(void)
{
    const char *in = "{ \"id\" : \"e\" ,\n \"app\":\"a\", \"type\":\"t\",\n"
                     "  \"payload\" : {\n    \"a\" : [ 1 , 2 ] ,\r\n"
                     "\t\"s\" : \"x y\"\n  }\n}\n";
    wh_event_msg *m = decode_ok(in, NULL, PMAX);
    CHECK(m != NULL);
    if (m) {
        const wh_event *ev = wh_codec_event(m);
        const char *want = "{\"a\":[1,2],\"s\":\"x y\"}";
        CHECK_MEM(ev->payload, ev->payload_len, want, strlen(want));
        wh_codec_event_free(m);
    }

    /* escapes are copied as written, not re-encoded */
    const char *esc = "{\"e\":\"caf\\u00e9\",\"q\":\"say \\\"hi\\\"\","
                      "\"b\":\"back\\\\slash \\/ \\n\",\"u\":\"\xc3\xa9\"}";
    char in2[512];
    snprintf(in2, sizeof(in2),
             "{\"id\":\"e\",\"app\":\"a\",\"type\":\"t\","
             "\"payload\": %s }", esc);
    m = decode_ok(in2, NULL, PMAX);
    CHECK(m != NULL);
    if (m) {
        const wh_event *ev = wh_codec_event(m);
        CHECK_MEM(ev->payload, ev->payload_len, esc, strlen(esc));
        wh_codec_event_free(m);
    }

    /* any JSON value is a payload */
    static const struct {
        const char *in, *out;
    } vals[] = {
        {"\"hello world\"", "\"hello world\""},
        {" [ ] ", "[]"},
        {"-12.5e3", "-12.5e3"},
        {"null", "null"},
        {"true", "true"},
        {"{ }", "{}"},
    };
    for (size_t i = 0; i < WH_ARRAY_LEN(vals); i++) {
        char p[128];
        snprintf(p, sizeof(p), ",\"payload\":%s", vals[i].in);
        m = decode_ok(env(p), WH_CT_JSON, PMAX);
        CHECK(m != NULL);
        if (m) {
            const wh_event *ev = wh_codec_event(m);
            CHECK_MEM(ev->payload, ev->payload_len, vals[i].out,
                      strlen(vals[i].out));
            wh_codec_event_free(m);
        }
    }

    /* an explicit content_type is kept with a JSON payload */
    m = decode_ok(env(",\"payload\":{},\"content_type\":"
                      "\"application/cloudevents+json\""),
                  NULL, PMAX);
    CHECK(m != NULL);
    if (m) {
        CHECK_STR(wh_codec_event(m)->content_type,
                  "application/cloudevents+json");
        wh_codec_event_free(m);
    }
}

static void test_json_base64(void)
{
    static const uint8_t bin[] = {0x00, 0x01, 0x02, 0xff, 0x00, 0x68, 0x00};
    wh_event_msg *m = decode_ok(env(",\"payload_base64\":\"AAEC/wBoAA==\","
                                    "\"content_type\":\"image/x-test\""),
                                NULL, PMAX);
    CHECK(m != NULL);
    if (m) {
        const wh_event *ev = wh_codec_event(m);
        CHECK_MEM(ev->payload, ev->payload_len, bin, sizeof(bin));
        CHECK_STR(ev->content_type, "image/x-test");
        wh_codec_event_free(m);
    }

    /* unpadded, and without content_type */
    m = decode_ok(env(",\"payload_base64\":\"AAEC/wBoAA\""), NULL, PMAX);
    CHECK(m != NULL);
    if (m) {
        const wh_event *ev = wh_codec_event(m);
        CHECK_MEM(ev->payload, ev->payload_len, bin, sizeof(bin));
        CHECK_STR(ev->content_type, "application/octet-stream");
        wh_codec_event_free(m);
    }

    /* empty payload */
    m = decode_ok(env(",\"payload_base64\":\"\""), NULL, PMAX);
    CHECK(m != NULL);
    if (m) {
        CHECK_INT(wh_codec_event(m)->payload_len, 0);
        wh_codec_event_free(m);
    }

    /* every byte value */
    uint8_t all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    char enc[400], extra[500];
    CHECK(wh_base64_encoded_len(sizeof(all)) < sizeof(enc));
    wh_base64_encode(all, sizeof(all), enc);
    snprintf(extra, sizeof(extra), ",\"payload_base64\":\"%s\"", enc);
    m = decode_ok(env(extra), NULL, PMAX);
    CHECK(m != NULL);
    if (m) {
        const wh_event *ev = wh_codec_event(m);
        CHECK_MEM(ev->payload, ev->payload_len, all, sizeof(all));
        wh_codec_event_free(m);
    }
}

static void test_json_endpoints_headers(void)
{
    wh_event_msg *m = decode_ok(
        env(",\"payload\":{},\"endpoints\":[\"" EP1 "\", \"" EP2 "\"],"
            "\"headers\":{\"X-Tenant\":\"t1\",\"x_trace\":\"a\\tb \xc3\xa9\","
            "\"X-Price\":\"\\u20ac 5\"},\"occurred_at_ms\":1700000000123"),
        NULL, PMAX);
    CHECK(m != NULL);
    if (!m)
        return;
    const wh_event *ev = wh_codec_event(m);
    CHECK_INT(ev->n_endpoints, 2);
    if (ev->n_endpoints == 2) {
        CHECK_STR(ev->endpoint_ids[0], EP1);
        CHECK_STR(ev->endpoint_ids[1], EP2);
    }
    CHECK_INT(ev->n_headers, 3);
    if (ev->n_headers == 3) {
        CHECK_STR(ev->headers[0].name, "X-Tenant");
        CHECK_STR(ev->headers[0].value, "t1");
        CHECK_STR(ev->headers[1].name, "x_trace");
        CHECK_STR(ev->headers[1].value, "a\tb \xc3\xa9");
        CHECK_STR(ev->headers[2].name, "X-Price");
        CHECK_STR(ev->headers[2].value, "\xe2\x82\xac 5");
    }
    CHECK_INT(ev->occurred_at_ms, 1700000000123LL);
    wh_codec_event_free(m);

    /* empty arrays and objects mean "none" */
    m = decode_ok(env(",\"payload\":1,\"endpoints\":[],\"headers\":{},"
                      "\"occurred_at_ms\":-0"),
                  NULL, PMAX);
    CHECK(m != NULL);
    if (m) {
        CHECK_INT(wh_codec_event(m)->n_endpoints, 0);
        CHECK_INT(wh_codec_event(m)->n_headers, 0);
        CHECK_INT(wh_codec_event(m)->occurred_at_ms, 0);
        wh_codec_event_free(m);
    }

    /* string fields are unescaped */
    EXPECT_ERR("{\"\\u0069d\":\"e\\u0031\",\"app\":\"sh\\/op\",\"type\":\"t\","
               "\"payload\":0}",
               "app may only hold letters, digits and _ - . :");
    m = decode_ok("{\"\\u0069d\":\"e\\u0031\",\"app\":\"s\\u0068op\","
                  "\"type\":\"t\",\"payload\":0}",
                  NULL, PMAX);
    CHECK(m != NULL);
    if (m) {
        CHECK_STR(wh_codec_event(m)->id, "e1");
        CHECK_STR(wh_codec_event(m)->app, "shop");
        wh_codec_event_free(m);
    }
}

/* ---- JSON envelope: rejections ------------------------------------------ */

static void test_json_structure_errors(void)
{
    EXPECT_ERR("[1,2]", "the envelope must be a JSON object");
    EXPECT_ERR("\"str\"", "the envelope must be a JSON object");
    EXPECT_ERR("42", "the envelope must be a JSON object");
    EXPECT_ERR("{\"id\":\"a\",}",
               "invalid JSON at byte 10: trailing comma before '}'");
    EXPECT_ERR("{\"id\":\"a\" \"app\":\"b\"}",
               "invalid JSON at byte 10: expected ',' or '}' after object "
               "member, found '\"'");
    EXPECT_ERR(env(",\"payload\":{\"a\":tru}"),
               "invalid JSON at byte 59: invalid literal");
    EXPECT_ERR("   ", "invalid JSON at byte 3: empty input, expected a value");
    EXPECT_ERR("{\"id\":\"a\"", "invalid JSON at byte 9: unexpected end of "
                                "input, expected ',' or '}' after object "
                                "member");

    /* empty message, whatever the content type */
    EXPECT_ERR_FULL("", 0, NULL, PMAX, "empty message");
    EXPECT_ERR_FULL("", 0, WH_CT_JSON, PMAX, "empty message");
    EXPECT_ERR_FULL("", 0, WH_CT_PROTOBUF, PMAX, "empty message");
    EXPECT_ERR_FULL(NULL, 0, NULL, PMAX, "empty message");
}

static void test_json_field_errors(void)
{
    /* missing fields, named in order id, app, type */
    EXPECT_ERR("{\"app\":\"a\",\"type\":\"t\",\"payload\":1}",
               "missing field \"id\"");
    EXPECT_ERR("{\"id\":\"i\",\"type\":\"t\",\"payload\":1}",
               "missing field \"app\"");
    EXPECT_ERR("{\"id\":\"i\",\"app\":\"a\",\"payload\":1}",
               "missing field \"type\"");
    EXPECT_ERR("{}", "missing field \"id\"");

    /* payload forms */
    const char *one = "exactly one of \"payload\" and \"payload_base64\" is "
                      "required";
    EXPECT_ERR(env(""), one);
    EXPECT_ERR(env(",\"payload\":{},\"payload_base64\":\"AA==\""), one);
    EXPECT_ERR(env(",\"content_type\":\"text/plain\""), one);

    /* unknown and repeated fields */
    EXPECT_ERR(env(",\"payload\":1,\"extra\":1"),
               "unknown or repeated field \"extra\" (expected id, app, type, "
               "payload or payload_base64, content_type, endpoints, headers, "
               "occurred_at_ms)");
    EXPECT_ERR(env(",\"payload\":1,\"Id\":\"x\""),
               "unknown or repeated field \"Id\" (expected id, app, type, "
               "payload or payload_base64, content_type, endpoints, headers, "
               "occurred_at_ms)");
    char *longkey = rep('k', 100);
    char extra[256];
    snprintf(extra, sizeof(extra), ",\"payload\":1,\"%s\":1", longkey);
    EXPECT_ERR(env(extra),
               "unknown or repeated field \"(long key)\" (expected id, app, "
               "type, payload or payload_base64, content_type, endpoints, "
               "headers, occurred_at_ms)");
    free(longkey);
    EXPECT_ERR(env(",\"payload\":1,\"payload\":2"),
               "unknown or repeated field \"payload\" (expected id, app, type, "
               "payload or payload_base64, content_type, endpoints, headers, "
               "occurred_at_ms)");
    EXPECT_ERR(env(",\"payload_base64\":\"\",\"payload_base64\":\"\""),
               "unknown or repeated field \"payload_base64\" (expected id, "
               "app, type, payload or payload_base64, content_type, endpoints, "
               "headers, occurred_at_ms)");
    EXPECT_ERR(env(",\"payload\":1,\"endpoints\":[],\"endpoints\":[]"),
               "unknown or repeated field \"endpoints\" (expected id, app, "
               "type, payload or payload_base64, content_type, endpoints, "
               "headers, occurred_at_ms)");
    EXPECT_ERR(env(",\"payload\":1,\"headers\":{},\"headers\":{}"),
               "unknown or repeated field \"headers\" (expected id, app, "
               "type, payload or payload_base64, content_type, endpoints, "
               "headers, occurred_at_ms)");
    EXPECT_ERR(env(",\"payload\":1,\"id\":\"e1\""),
               "field \"id\" appears twice");
    EXPECT_ERR(env(",\"payload\":1,\"app\":\"x\""),
               "field \"app\" appears twice");
    EXPECT_ERR(env(",\"payload\":1,\"type\":\"x\""),
               "field \"type\" appears twice");
    EXPECT_ERR(env(",\"payload\":1,\"content_type\":\"a/b\","
                   "\"content_type\":\"a/b\""),
               "field \"content_type\" appears twice");
    EXPECT_ERR(env(",\"payload\":1,\"occurred_at_ms\":1,"
                   "\"occurred_at_ms\":2"),
               "field \"occurred_at_ms\" appears twice");

    /* wrong types */
    EXPECT_ERR("{\"id\":5,\"app\":\"a\",\"type\":\"t\",\"payload\":1}",
               "field \"id\" must be a string");
    EXPECT_ERR("{\"id\":\"i\",\"app\":null,\"type\":\"t\",\"payload\":1}",
               "field \"app\" must be a string");
    EXPECT_ERR("{\"id\":\"i\",\"app\":\"a\",\"type\":[\"t\"],\"payload\":1}",
               "field \"type\" must be a string");
    EXPECT_ERR(env(",\"payload\":1,\"content_type\":true"),
               "field \"content_type\" must be a string");
    EXPECT_ERR(env(",\"payload_base64\":5"),
               "field \"payload_base64\" must be a string");
    EXPECT_ERR(env(",\"payload_base64\":[\"AA==\"]"),
               "field \"payload_base64\" must be a string");
    const char *ts = "field \"occurred_at_ms\" must be an integer (unix "
                     "milliseconds)";
    EXPECT_ERR(env(",\"payload\":1,\"occurred_at_ms\":\"1\""), ts);
    EXPECT_ERR(env(",\"payload\":1,\"occurred_at_ms\":1.5"), ts);
    EXPECT_ERR(env(",\"payload\":1,\"occurred_at_ms\":1e3"), ts);
    EXPECT_ERR(env(",\"payload\":1,\"occurred_at_ms\":null"), ts);
    EXPECT_ERR(env(",\"payload\":1,\"occurred_at_ms\":9223372036854775808"),
               ts);
    EXPECT_ERR(env(",\"payload\":1,\"occurred_at_ms\":-1"),
               "occurred_at_ms is negative");
    EXPECT_ERR(env(",\"payload\":1,\"endpoints\":\"" EP1 "\""),
               "field \"endpoints\" must be an array of endpoint ids");
    EXPECT_ERR(env(",\"payload\":1,\"endpoints\":{}"),
               "field \"endpoints\" must be an array of endpoint ids");
    EXPECT_ERR(env(",\"payload\":1,\"endpoints\":[\"" EP1 "\",1]"),
               "field \"endpoints[]\" must be a string");
    EXPECT_ERR(env(",\"payload\":1,\"headers\":[]"),
               "field \"headers\" must be an object of strings");
    EXPECT_ERR(env(",\"payload\":1,\"headers\":\"X-A: 1\""),
               "field \"headers\" must be an object of strings");
    EXPECT_ERR(env(",\"payload\":1,\"headers\":{\"X-A\":1}"),
               "field \"headers\" must be a string");

    /* embedded NUL characters */
    EXPECT_ERR("{\"id\":\"a\\u0000b\",\"app\":\"a\",\"type\":\"t\","
               "\"payload\":1}",
               "field \"id\" contains a NUL character");
    EXPECT_ERR(env(",\"payload\":1,\"headers\":{\"X-A\":\"v\\u0000\"}"),
               "field \"headers\" contains a NUL character");

    /* bad base64 */
    const char *b64 = "field \"payload_base64\" is not valid base64";
    EXPECT_ERR(env(",\"payload_base64\":\"abc!\""), b64);
    EXPECT_ERR(env(",\"payload_base64\":\"A\""), b64);
    EXPECT_ERR(env(",\"payload_base64\":\"AA AA\""), b64);
    EXPECT_ERR(env(",\"payload_base64\":\"AA==AA==\""), b64);
    EXPECT_ERR(env(",\"payload_base64\":\"AAA\\n\""), b64);
    /* the string is unescaped before decoding ("\/" as PHP writes it) */
    wh_event_msg *m = decode_ok(env(",\"payload_base64\":\"\\/w==\""),
                                WH_CT_JSON, PMAX);
    CHECK(m && wh_codec_event(m)->payload_len == 1 &&
          wh_codec_event(m)->payload[0] == 0xff);
    wh_codec_event_free(m);
    EXPECT_OK(env(",\"payload_base64\":\"AA\\u003d\\u003d\""));
    EXPECT_OK(env(",\"payload_base64\":\"/w==\""));
    EXPECT_ERR(env(",\"payload_base64\":\"AA\\u0020AA\""), b64);
}

static void test_json_limits(void)
{
    char extra[600];

    /* payload_max: the compact size counts */
    const char *p16 = ",\"payload\":{ \"k\" : \"0123456789\" }"; /* 18 */
    EXPECT_ERR_FULL(env(p16), strlen(env(p16)), WH_CT_JSON, 17,
                    "payload is 18 bytes, the limit is 17");
    CHECK_INT(decode_rc(env(p16), strlen(env(p16)), WH_CT_JSON, 18), 0);

    /* a payload span far beyond the limit is refused before copying */
    size_t big = 70000;
    char *s = rep('x', big);
    size_t inlen = big + 100;
    char *in = malloc(inlen);
    CHECK(in != NULL);
    if (in) {
        snprintf(in, inlen,
                 "{\"id\":\"e\",\"app\":\"a\",\"type\":\"t\","
                 "\"payload\":\"%s\"}",
                 s);
        EXPECT_ERR_FULL(in, strlen(in), WH_CT_JSON, 16,
                        "payload is 70002 bytes, the limit is 16");
        EXPECT_ERR_FULL(in, strlen(in), WH_CT_JSON, 70001,
                        "payload is 70002 bytes, the limit is 70001");
        CHECK_INT(decode_rc(in, strlen(in), WH_CT_JSON, 70002), 0);
        free(in);
    }
    free(s);

    /* the default limit, hit exactly and by one byte */
    size_t n = WH_PAYLOAD_DEFAULT_MAX - 2;
    s = rep('y', n);
    inlen = n + 100;
    in = malloc(inlen);
    CHECK(in != NULL);
    if (in) {
        snprintf(in, inlen,
                 "{\"id\":\"e\",\"app\":\"a\",\"type\":\"t\","
                 "\"payload\":\"%s\"}",
                 s);
        CHECK_INT(decode_rc(in, strlen(in), NULL, PMAX), 0);
        snprintf(in, inlen,
                 "{\"id\":\"e\",\"app\":\"a\",\"type\":\"t\","
                 "\"payload\":\"%sy\"}",
                 s);
        EXPECT_ERR_FULL(in, strlen(in), NULL, PMAX,
                        "payload is 524289 bytes, the limit is 524288");
        free(in);
    }
    free(s);

    /* base64: the decoded size counts */
    EXPECT_ERR_FULL(env(",\"payload_base64\":\"AAAA\""),
                    strlen(env(",\"payload_base64\":\"AAAA\"")), NULL, 2,
                    "payload is 3 bytes, the limit is 2");
    CHECK_INT(decode_rc(env(",\"payload_base64\":\"AAAA\""),
                        strlen(env(",\"payload_base64\":\"AAAA\"")), NULL, 3),
              0);

    /* id: 128 bytes pass, 129 do not */
    s = rep('i', 128);
    snprintf(extra, sizeof(extra),
             "{\"id\":\"%s\",\"app\":\"a\",\"type\":\"t\",\"payload\":1}", s);
    EXPECT_OK(extra);
    snprintf(extra, sizeof(extra),
             "{\"id\":\"%si\",\"app\":\"a\",\"type\":\"t\",\"payload\":1}", s);
    EXPECT_ERR(extra, "id is 129 bytes, the limit is 128");
    free(s);
    EXPECT_ERR("{\"id\":\"a b\",\"app\":\"a\",\"type\":\"t\",\"payload\":1}",
               "id may only hold printable ASCII without spaces (byte 1)");
    EXPECT_ERR("{\"id\":\"\",\"app\":\"a\",\"type\":\"t\",\"payload\":1}",
               "id is empty");
    EXPECT_ERR("{\"id\":\"\xc3\xa9\",\"app\":\"a\",\"type\":\"t\","
               "\"payload\":1}",
               "id may only hold printable ASCII without spaces (byte 0)");

    /* app and type */
    EXPECT_ERR("{\"id\":\"i\",\"app\":\"my app\",\"type\":\"t\",\"payload\":1}",
               "app may only hold letters, digits and _ - . :");
    EXPECT_ERR("{\"id\":\"i\",\"app\":\"a/b\",\"type\":\"t\",\"payload\":1}",
               "app may only hold letters, digits and _ - . :");
    EXPECT_ERR("{\"id\":\"i\",\"app\":\"\",\"type\":\"t\",\"payload\":1}",
               "app is empty");
    EXPECT_ERR("{\"id\":\"i\",\"app\":\"a\",\"type\":\"order..paid\","
               "\"payload\":1}",
               "type \"order..paid\" has an empty segment");
    EXPECT_ERR("{\"id\":\"i\",\"app\":\"a\",\"type\":\".x\",\"payload\":1}",
               "type \".x\" has an empty segment");
    EXPECT_ERR("{\"id\":\"i\",\"app\":\"a\",\"type\":\"x.\",\"payload\":1}",
               "type \"x.\" has an empty segment");
    EXPECT_ERR("{\"id\":\"i\",\"app\":\"a\",\"type\":\"order paid\","
               "\"payload\":1}",
               "type may only hold letters, digits and _ - . :");

    /* content_type */
    EXPECT_ERR(env(",\"payload\":1,\"content_type\":\"\""),
               "content_type must be 1-128 bytes");
    s = rep('c', 129);
    snprintf(extra, sizeof(extra), ",\"payload\":1,\"content_type\":\"%s\"", s);
    EXPECT_ERR(env(extra), "content_type must be 1-128 bytes");
    s[128] = '\0';
    snprintf(extra, sizeof(extra), ",\"payload\":1,\"content_type\":\"%s\"", s);
    EXPECT_OK(env(extra));
    free(s);
    EXPECT_ERR(env(",\"payload\":1,\"content_type\":\"text/plain\\r\\nX: y\""),
               "content_type holds a control character");
    EXPECT_ERR(env(",\"payload\":1,\"content_type\":\"text/\xc3\xa9\""),
               "content_type holds a control character");
}

/* ",\"payload\":1,\"endpoints\":[n ids]" */
static const char *endpoints_extra(size_t n)
{
    static char buf[4096];
    size_t k = (size_t)snprintf(buf, sizeof(buf),
                                ",\"payload\":1,\"endpoints\":[");
    for (size_t i = 0; i < n; i++)
        k += (size_t)snprintf(buf + k, sizeof(buf) - k, "%s\"ep_%08zu\"",
                              i ? "," : "", i);
    snprintf(buf + k, sizeof(buf) - k, "]");
    return buf;
}

/* ",\"payload\":1,\"headers\":{n headers}" */
static const char *headers_extra(size_t n)
{
    static char buf[4096];
    size_t k =
        (size_t)snprintf(buf, sizeof(buf), ",\"payload\":1,\"headers\":{");
    for (size_t i = 0; i < n; i++)
        k += (size_t)snprintf(buf + k, sizeof(buf) - k, "%s\"X-H%zu\":\"%zu\"",
                              i ? "," : "", i, i);
    snprintf(buf + k, sizeof(buf) - k, "}");
    return buf;
}

static void test_json_endpoint_header_limits(void)
{
    wh_event_msg *m = decode_ok(env(endpoints_extra(100)), NULL, PMAX);
    CHECK(m != NULL);
    if (m) {
        CHECK_INT(wh_codec_event(m)->n_endpoints, 100);
        CHECK_STR(wh_codec_event(m)->endpoint_ids[99], "ep_00000099");
        wh_codec_event_free(m);
    }
    EXPECT_ERR(env(endpoints_extra(101)), "more than 100 endpoints");
    EXPECT_ERR(env(",\"payload\":1,\"endpoints\":[\"ep_ABCDEFGH\"]"),
               "\"ep_ABCDEFGH\" is not an endpoint id (ep_ followed by 8-40 "
               "lowercase letters or digits)");
    EXPECT_ERR(env(",\"payload\":1,\"endpoints\":[\"" EP1 "\",\"ep_1\"]"),
               "\"ep_1\" is not an endpoint id (ep_ followed by 8-40 "
               "lowercase letters or digits)");

    m = decode_ok(env(headers_extra(16)), NULL, PMAX);
    CHECK(m != NULL);
    if (m) {
        CHECK_INT(wh_codec_event(m)->n_headers, 16);
        CHECK_STR(wh_codec_event(m)->headers[15].name, "X-H15");
        CHECK_STR(wh_codec_event(m)->headers[15].value, "15");
        wh_codec_event_free(m);
    }
    EXPECT_ERR(env(headers_extra(17)), "more than 16 headers");

    EXPECT_ERR(env(",\"payload\":1,\"headers\":{\"webhook-id\":\"x\"}"),
               "header webhook-id is reserved for signing");
    EXPECT_ERR(env(",\"payload\":1,\"headers\":{\"Webhook-Signature\":\"x\"}"),
               "header Webhook-Signature is reserved for signing");
    EXPECT_ERR(env(",\"payload\":1,\"headers\":{\"Content-Type\":\"x\"}"),
               "header Content-Type cannot be set per event");
    EXPECT_ERR(env(",\"payload\":1,\"headers\":{\"host\":\"x\"}"),
               "header host cannot be set per event");
    EXPECT_ERR(env(",\"payload\":1,\"headers\":{\"TRANSFER-ENCODING\":\"x\"}"),
               "header TRANSFER-ENCODING cannot be set per event");
    EXPECT_ERR(env(",\"payload\":1,\"headers\":{\"X-A\":\"a\\r\\nEvil: 1\"}"),
               "header X-A value holds a control character");
    EXPECT_ERR(env(",\"payload\":1,\"headers\":{\"X-A\":\"a\\nb\"}"),
               "header X-A value holds a control character");
    EXPECT_ERR(env(",\"payload\":1,\"headers\":{\"X-A\":\"a\\rb\"}"),
               "header X-A value holds a control character");
    EXPECT_ERR(env(",\"payload\":1,\"headers\":{\"X-A\":\"a\\u007f\"}"),
               "header X-A value holds a control character");
    EXPECT_ERR(env(",\"payload\":1,\"headers\":{\"X A\":\"1\"}"),
               "header name \"X A\" is not a token");
    EXPECT_ERR(env(",\"payload\":1,\"headers\":{\"X:A\":\"1\"}"),
               "header name \"X:A\" is not a token");
    EXPECT_ERR(env(",\"payload\":1,\"headers\":{\"\":\"1\"}"),
               "header names must be 1-64 bytes");

    char extra[1400];
    char *name = rep('n', 65);
    snprintf(extra, sizeof(extra), ",\"payload\":1,\"headers\":{\"%s\":\"1\"}",
             name);
    EXPECT_ERR(env(extra), "header names must be 1-64 bytes");
    name[64] = '\0';
    snprintf(extra, sizeof(extra), ",\"payload\":1,\"headers\":{\"%s\":\"1\"}",
             name);
    EXPECT_OK(env(extra));
    free(name);

    char *val = rep('v', 1025);
    snprintf(extra, sizeof(extra),
             ",\"payload\":1,\"headers\":{\"X-A\":\"%s\"}",
             val);
    EXPECT_ERR(env(extra), "header X-A value exceeds 1024 bytes");
    val[1024] = '\0';
    snprintf(extra, sizeof(extra),
             ",\"payload\":1,\"headers\":{\"X-A\":\"%s\"}",
             val);
    EXPECT_OK(env(extra));
    free(val);
}

/* ---- content-type dispatch ---------------------------------------------- */

/* Encodes ev with wh_codec_event_encode into b (initialized here). */
static int encode_event(const wh_event *ev, wh_buf *b)
{
    wh_buf_init(b, 4 * 1024 * 1024);
    char err[WH_ERRLEN];
    if (wh_codec_event_encode(ev, b, err, sizeof(err)) != WH_OK) {
        fprintf(stderr, "encode failed: %s\n", err);
        return WH_ERR;
    }
    return WH_OK;
}

static void test_content_type_dispatch(void)
{
    const char *js = "\r\n\t {\"id\":\"e\",\"app\":\"a\",\"type\":\"t\","
                     "\"payload\":1}";
    CHECK_INT(decode_rc(js, strlen(js), NULL, PMAX), 0);
    CHECK_INT(decode_rc(js, strlen(js), WH_CT_JSON, PMAX), 0);
    CHECK_INT(decode_rc(js, strlen(js), "text/plain", PMAX), 0);
    EXPECT_ERR_FULL(js, strlen(js), WH_CT_PROTOBUF, PMAX,
                    "not a valid protobuf webhook.v1.Event nor a JSON "
                    "envelope");

    wh_event ev = {.id = "e", .app = "a", .type = "t",
                   .payload = (const uint8_t *)"{}", .payload_len = 2};
    wh_buf b;
    CHECK_INT(encode_event(&ev, &b), WH_OK);
    CHECK_INT(decode_rc(b.data, b.len, NULL, PMAX), 0);
    CHECK_INT(decode_rc(b.data, b.len, WH_CT_PROTOBUF, PMAX), 0);
    CHECK_INT(decode_rc(b.data, b.len, "application/x-protobuf; v=1", PMAX),
              0);
    CHECK_INT(decode_rc(b.data, b.len, "application/octet-stream", PMAX), 0);
    /* protobuf bytes with a JSON content type are parsed as JSON */
    CHECK_INT(decode_rc(b.data, b.len, WH_CT_JSON, PMAX), 1);
    CHECK(strncmp(g_err, "invalid JSON at byte ", 21) == 0);
    wh_buf_free(&b);

    /* without a content type, what does not start with '{' is protobuf */
    EXPECT_ERR_FULL("[1]", 3, NULL, PMAX,
                    "not a valid protobuf webhook.v1.Event nor a JSON "
                    "envelope");
    /* two spaces are a protobuf Event with occurred_at_ms = 32 */
    EXPECT_ERR_FULL("  ", 2, NULL, PMAX, "id is empty");
    /* a broken JSON envelope keeps its JSON error */
    EXPECT_ERR_FULL("{\"id\":", 6, NULL, PMAX,
                    "invalid JSON at byte 6: unexpected end of input, "
                    "expected a value");
    EXPECT_ERR_FULL(" [1]", 4, WH_CT_JSON, PMAX,
                    "the envelope must be a JSON object");

    /* A protobuf Event begins with 0x0a (field 1, a newline to the sniffer)
     * and the id's length: a 123-byte id makes that '{', a 10-byte id
     * starting with '{' makes it "\n\n{". Both are still protobuf. */
    char *id123 = rep('a', 123);
    const char *ids[] = {id123, "{abcdefgh}",
                         "{abcdefghijklmnopqrstuvwxyz0123}"};
    for (size_t i = 0; i < WH_ARRAY_LEN(ids); i++) {
        wh_event e2 = {.id = ids[i], .app = "a", .type = "t"};
        CHECK_INT(encode_event(&e2, &b), WH_OK);
        CHECK(b.len > 2 && b.data[0] == '\n');
        wh_event_msg *m = NULL;
        CHECK_INT(wh_codec_event_decode(b.data, b.len, NULL, PMAX, &m, g_err,
                                        sizeof(g_err)),
                  WH_OK);
        if (m) {
            CHECK_STR(wh_codec_event(m)->id, ids[i]);
            CHECK_STR(wh_codec_event(m)->type, "t");
            wh_codec_event_free(m);
        }
        /* an invalid event of that shape is refused; without a content
         * type the JSON error is the one reported */
        e2.type = "t.";
        wh_buf_free(&b);
        CHECK_INT(encode_event(&e2, &b), WH_OK);
        CHECK_INT(decode_rc(b.data, b.len, NULL, PMAX), 1);
        CHECK(strncmp(g_err, "invalid JSON at byte ", 21) == 0);
        EXPECT_ERR_FULL(b.data, b.len, WH_CT_PROTOBUF, PMAX,
                        "type \"t.\" has an empty segment");
        wh_buf_free(&b);
    }
    free(id123);
}

/* ---- protobuf ----------------------------------------------------------- */

static const uint8_t bin_payload[] = {0x00, 0xff, 0x10, 0x00, 'a', 0x7f, 0x0a};

static void check_event_eq(const wh_event *a, const wh_event *b)
{
    CHECK_STR(a->id, b->id);
    CHECK_STR(a->app, b->app);
    CHECK_STR(a->type, b->type);
    CHECK_STR(a->content_type, b->content_type);
    CHECK_INT(a->payload_len, b->payload_len);
    if (a->payload_len == b->payload_len && a->payload_len)
        CHECK_MEM(a->payload, a->payload_len, b->payload, b->payload_len);
    CHECK_INT(a->occurred_at_ms, b->occurred_at_ms);
    CHECK_INT(a->published_at_us, b->published_at_us);
    CHECK_INT(a->n_endpoints, b->n_endpoints);
    for (size_t i = 0; i < a->n_endpoints && i < b->n_endpoints; i++)
        CHECK_STR(a->endpoint_ids[i], b->endpoint_ids[i]);
    CHECK_INT(a->n_headers, b->n_headers);
    for (size_t i = 0; i < a->n_headers && i < b->n_headers; i++) {
        CHECK_STR(a->headers[i].name, b->headers[i].name);
        CHECK_STR(a->headers[i].value, b->headers[i].value);
    }
}

static const char *const full_eps[] = {EP1, EP2};
static const wh_header_kv full_hdrs[] = {
    {"X-Tenant", "t1"},
    {"x_trace", "a\tb \xc3\xa9"},
    {"X-Price", "\xe2\x82\xac 5"},
};

static wh_event full_event(void)
{
    wh_event ev = {
        .id = "evt_01HZX",
        .app = "shop.eu:prod",
        .type = "order.paid",
        .content_type = "application/x-thing",
        .payload = bin_payload,
        .payload_len = sizeof(bin_payload),
        .occurred_at_ms = 1700000000123LL,
        .published_at_us = 1700000000456789LL,
        .n_endpoints = WH_ARRAY_LEN(full_eps),
        .endpoint_ids = full_eps,
        .n_headers = WH_ARRAY_LEN(full_hdrs),
        .headers = full_hdrs,
    };
    return ev;
}

static void test_protobuf_roundtrip(void)
{
    wh_event ev = full_event();
    wh_buf b;
    CHECK_INT(encode_event(&ev, &b), WH_OK);
    const char *cts[] = {WH_CT_PROTOBUF, NULL};
    for (size_t i = 0; i < WH_ARRAY_LEN(cts); i++) {
        wh_event_msg *m = NULL;
        CHECK_INT(wh_codec_event_decode(b.data, b.len, cts[i], PMAX, &m, g_err,
                                        sizeof(g_err)),
                  WH_OK);
        if (m) {
            check_event_eq(wh_codec_event(m), &ev);
            wh_codec_event_free(m);
        }
    }

    /* the encoding is what the generated code reads */
    Webhook__V1__Event *pb = webhook__v1__event__unpack(
        NULL, b.len, (const uint8_t *)b.data);
    CHECK(pb != NULL);
    if (pb) {
        CHECK_STR(pb->id, ev.id);
        CHECK_STR(pb->content_type, ev.content_type);
        CHECK_INT(pb->n_headers, 3);
        CHECK_STR(pb->headers[1]->key, "x_trace");
        CHECK_INT(pb->n_endpoint_ids, 2);
        CHECK_INT(pb->published_at_us, ev.published_at_us);
        webhook__v1__event__free_unpacked(pb, NULL);
    }

    /* encoding appends */
    size_t first = b.len;
    CHECK_INT(wh_codec_event_encode(&ev, &b, g_err, sizeof(g_err)), WH_OK);
    CHECK_INT(b.len, 2 * first);
    CHECK_MEM(b.data, first, b.data + first, first);
    wh_buf_free(&b);

    /* no content type and no payload: defaults come back */
    wh_event bare = {.id = "e", .app = "a", .type = "t"};
    CHECK_INT(encode_event(&bare, &b), WH_OK);
    wh_event_msg *m = NULL;
    CHECK_INT(wh_codec_event_decode(b.data, b.len, NULL, PMAX, &m, g_err,
                                    sizeof(g_err)),
              WH_OK);
    if (m) {
        CHECK_STR(wh_codec_event(m)->content_type, WH_CT_JSON);
        CHECK_INT(wh_codec_event(m)->payload_len, 0);
        CHECK_INT(wh_codec_event(m)->n_endpoints, 0);
        CHECK_INT(wh_codec_event(m)->n_headers, 0);
        wh_codec_event_free(m);
    }
    wh_buf_free(&b);

    /* a JSON-decoded event survives the protobuf round trip */
    m = decode_ok(env(",\"payload\":{\"a\": [1, 2]},\"endpoints\":[\"" EP1
                      "\"],\"headers\":{\"X-A\":\"1\"},\"occurred_at_ms\":5"),
                  NULL, PMAX);
    CHECK(m != NULL);
    if (m) {
        CHECK_INT(encode_event(wh_codec_event(m), &b), WH_OK);
        wh_event_msg *m2 = NULL;
        CHECK_INT(wh_codec_event_decode(b.data, b.len, WH_CT_PROTOBUF, PMAX,
                                        &m2, g_err, sizeof(g_err)),
                  WH_OK);
        if (m2) {
            check_event_eq(wh_codec_event(m2), wh_codec_event(m));
            wh_codec_event_free(m2);
        }
        wh_buf_free(&b);
        wh_codec_event_free(m);
    }
}

static void test_protobuf_errors(void)
{
    const char *bad = "not a valid protobuf webhook.v1.Event nor a JSON "
                      "envelope";
    EXPECT_ERR_FULL("\xff\xff\xff\xff", 4, NULL, PMAX, bad);
    EXPECT_ERR_FULL("\xff\xff\xff\xff", 4, WH_CT_PROTOBUF, PMAX, bad);
    EXPECT_ERR_FULL("\x0a\x05" "ab", 4, WH_CT_PROTOBUF, PMAX, bad);
    EXPECT_ERR_FULL("\x0b", 1, WH_CT_PROTOBUF, PMAX, bad);

    /* validation applies to protobuf events too */
    wh_buf b;
    wh_event ev = full_event();
    ev.type = "order..paid";
    CHECK_INT(encode_event(&ev, &b), WH_OK);
    EXPECT_ERR_FULL(b.data, b.len, WH_CT_PROTOBUF, PMAX,
                    "type \"order..paid\" has an empty segment");
    wh_buf_free(&b);

    ev = full_event();
    ev.id = "";
    CHECK_INT(encode_event(&ev, &b), WH_OK);
    EXPECT_ERR_FULL(b.data, b.len, WH_CT_PROTOBUF, PMAX, "id is empty");
    wh_buf_free(&b);

    ev = full_event();
    ev.app = "a b";
    CHECK_INT(encode_event(&ev, &b), WH_OK);
    EXPECT_ERR_FULL(b.data, b.len, WH_CT_PROTOBUF, PMAX,
                    "app may only hold letters, digits and _ - . :");
    wh_buf_free(&b);

    ev = full_event();
    ev.occurred_at_ms = -5;
    CHECK_INT(encode_event(&ev, &b), WH_OK);
    EXPECT_ERR_FULL(b.data, b.len, WH_CT_PROTOBUF, PMAX,
                    "occurred_at_ms is negative");
    wh_buf_free(&b);

    static const wh_header_kv reserved[] = {{"webhook-id", "x"}};
    ev = full_event();
    ev.headers = reserved;
    ev.n_headers = 1;
    CHECK_INT(encode_event(&ev, &b), WH_OK);
    EXPECT_ERR_FULL(b.data, b.len, WH_CT_PROTOBUF, PMAX,
                    "header webhook-id is reserved for signing");
    wh_buf_free(&b);

    static const char *const bad_ep[] = {"ep_Nope1234"};
    ev = full_event();
    ev.endpoint_ids = bad_ep;
    ev.n_endpoints = 1;
    CHECK_INT(encode_event(&ev, &b), WH_OK);
    EXPECT_ERR_FULL(b.data, b.len, WH_CT_PROTOBUF, PMAX,
                    "\"ep_Nope1234\" is not an endpoint id (ep_ followed by "
                    "8-40 lowercase letters or digits)");
    wh_buf_free(&b);

    /* 101 endpoint ids encode, but do not decode */
    const char *many[101];
    for (size_t i = 0; i < 101; i++)
        many[i] = EP1;
    ev = full_event();
    ev.endpoint_ids = many;
    ev.n_endpoints = 100;
    CHECK_INT(encode_event(&ev, &b), WH_OK);
    CHECK_INT(decode_rc(b.data, b.len, WH_CT_PROTOBUF, PMAX), 0);
    wh_buf_free(&b);
    ev.n_endpoints = 101;
    CHECK_INT(encode_event(&ev, &b), WH_OK);
    EXPECT_ERR_FULL(b.data, b.len, WH_CT_PROTOBUF, PMAX,
                    "more than 100 endpoints");
    wh_buf_free(&b);

    /* 17 headers cannot be encoded by the codec; build them by hand */
    wh_header_kv h17[17];
    char names[17][8];
    for (size_t i = 0; i < 17; i++) {
        snprintf(names[i], sizeof(names[i]), "X-%zu", i);
        h17[i].name = names[i];
        h17[i].value = "v";
    }
    ev = full_event();
    ev.headers = h17;
    ev.n_headers = 17;
    wh_buf_init(&b, 1 << 20);
    CHECK_INT(wh_codec_event_encode(&ev, &b, g_err, sizeof(g_err)), WH_ERR);
    CHECK_STR(g_err, "more than 16 headers");
    CHECK_INT(b.len, 0);
    Webhook__V1__Event pb;
    Webhook__V1__Event__HeadersEntry ent[17], *entp[17];
    webhook__v1__event__init(&pb);
    pb.id = "e";
    pb.app = "a";
    pb.type = "t";
    for (size_t i = 0; i < 17; i++) {
        webhook__v1__event__headers_entry__init(&ent[i]);
        ent[i].key = names[i];
        ent[i].value = "v";
        entp[i] = &ent[i];
    }
    pb.headers = entp;
    pb.n_headers = 16;
    uint8_t packed[1024];
    size_t plen = webhook__v1__event__pack(&pb, packed);
    CHECK_INT(decode_rc(packed, plen, WH_CT_PROTOBUF, PMAX), 0);
    pb.n_headers = 17;
    CHECK(webhook__v1__event__get_packed_size(&pb) <= sizeof(packed));
    plen = webhook__v1__event__pack(&pb, packed);
    EXPECT_ERR_FULL(packed, plen, WH_CT_PROTOBUF, PMAX, "more than 16 headers");
    wh_buf_free(&b);

    /* payload_max applies to protobuf payloads, and the whole message is
     * bounded by payload_max + 64 KiB */
    uint8_t *big = calloc(1, 200000);
    CHECK(big != NULL);
    if (big) {
        ev = full_event();
        ev.payload = big;
        ev.payload_len = 100;
        CHECK_INT(encode_event(&ev, &b), WH_OK);
        CHECK_INT(decode_rc(b.data, b.len, WH_CT_PROTOBUF, 100), 0);
        EXPECT_ERR_FULL(b.data, b.len, WH_CT_PROTOBUF, 99,
                        "payload is 100 bytes, the limit is 99");
        wh_buf_free(&b);
        ev.payload_len = 200000;
        CHECK_INT(encode_event(&ev, &b), WH_OK);
        char want[128];
        snprintf(want, sizeof(want), "message is %zu bytes, the limit is %d",
                 b.len, 1000 + 64 * 1024);
        EXPECT_ERR_FULL(b.data, b.len, WH_CT_PROTOBUF, 1000, want);
        wh_buf_free(&b);
        free(big);
    }
}

static void test_encode_limits(void)
{
    wh_event ev = full_event();
    wh_buf b;
    CHECK_INT(encode_event(&ev, &b), WH_OK);
    size_t need = b.len;
    wh_buf_free(&b);

    /* exactly enough room */
    wh_buf_init(&b, need);
    CHECK_INT(wh_codec_event_encode(&ev, &b, g_err, sizeof(g_err)), WH_OK);
    CHECK_INT(b.len, need);
    wh_buf_free(&b);

    /* one byte short: an error, and the buffer keeps what it held */
    wh_buf_init(&b, need + 2);
    CHECK_INT(wh_buf_add(&b, "xyz", 3), WH_OK);
    CHECK_INT(wh_codec_event_encode(&ev, &b, g_err, sizeof(g_err)), WH_ERR);
    char want[128];
    snprintf(want, sizeof(want),
             "encoded message of %zu bytes exceeds the buffer limit", need);
    CHECK_STR(g_err, want);
    CHECK_INT(b.len, 3);
    CHECK_STR(wh_buf_cstr(&b), "xyz");
    wh_buf_free(&b);

    /* an empty event encodes to nothing */
    wh_event empty = {0};
    wh_buf_init(&b, 16);
    CHECK_INT(wh_codec_event_encode(&empty, &b, g_err, sizeof(g_err)), WH_OK);
    CHECK_INT(b.len, 0);
    wh_buf_free(&b);
}

/* ---- deliveries --------------------------------------------------------- */

static wh_delivery full_delivery(void)
{
    wh_delivery d = {
        .delivery_id = "msg_0123456789abcdef0123456789abcdef",
        .endpoint_id = EP2,
        .attempt = 7,
        .created_at_us = 1700000000999999LL,
        .source_topic = "webhook.events",
        .source_partition = 11,
        .source_offset = 1234567890123LL,
        .event = full_event(),
    };
    return d;
}

static void check_delivery_eq(const wh_delivery *a, const wh_delivery *b)
{
    CHECK_STR(a->delivery_id, b->delivery_id);
    CHECK_STR(a->endpoint_id, b->endpoint_id);
    CHECK_INT(a->attempt, b->attempt);
    CHECK_INT(a->created_at_us, b->created_at_us);
    CHECK_STR(a->source_topic, b->source_topic);
    CHECK_INT(a->source_partition, b->source_partition);
    CHECK_INT(a->source_offset, b->source_offset);
    check_event_eq(&a->event, &b->event);
}

static void test_delivery_roundtrip(void)
{
    wh_delivery d = full_delivery();
    wh_buf b;
    wh_buf_init(&b, 1 << 20);
    CHECK_INT(wh_codec_delivery_encode(&d, &b, g_err, sizeof(g_err)), WH_OK);
    wh_delivery_msg *m = NULL;
    CHECK_INT(wh_codec_delivery_decode(b.data, b.len, &m, g_err,
                                       sizeof(g_err)),
              WH_OK);
    if (m) {
        check_delivery_eq(wh_codec_delivery(m), &d);
        wh_codec_delivery_free(m);
    }
    wh_buf_free(&b);
    wh_codec_delivery_free(NULL);

    /* attempt 0 (absent) reads as the first attempt; a NULL topic is "" */
    d.attempt = 0;
    d.source_topic = NULL;
    d.event.content_type = NULL;
    CHECK_INT(wh_codec_delivery_encode(&d, &b, g_err, sizeof(g_err)), WH_OK);
    CHECK_INT(wh_codec_delivery_decode(b.data, b.len, &m, g_err,
                                       sizeof(g_err)),
              WH_OK);
    if (m) {
        CHECK_INT(wh_codec_delivery(m)->attempt, 1);
        CHECK_STR(wh_codec_delivery(m)->source_topic, "");
        CHECK_STR(wh_codec_delivery(m)->event.content_type, WH_CT_JSON);
        wh_codec_delivery_free(m);
    }
    wh_buf_free(&b);

    /* limits */
    d = full_delivery();
    CHECK_INT(wh_codec_delivery_encode(&d, &b, g_err, sizeof(g_err)), WH_OK);
    size_t need = b.len;
    wh_buf_free(&b);
    wh_buf_init(&b, need - 1);
    CHECK_INT(wh_codec_delivery_encode(&d, &b, g_err, sizeof(g_err)), WH_ERR);
    CHECK_INT(b.len, 0);
    wh_buf_free(&b);
    wh_header_kv h17[17];
    for (size_t i = 0; i < 17; i++)
        h17[i] = full_hdrs[0];
    d.event.headers = h17;
    d.event.n_headers = 17;
    wh_buf_init(&b, 1 << 20);
    CHECK_INT(wh_codec_delivery_encode(&d, &b, g_err, sizeof(g_err)), WH_ERR);
    CHECK_STR(g_err, "more than 16 headers");
    wh_buf_free(&b);
}

static int delivery_decode_err(const void *buf, size_t len)
{
    wh_delivery_msg *m = (wh_delivery_msg *)&g_err;
    g_err[0] = '\0';
    int rc = wh_codec_delivery_decode(buf, len, &m, g_err, sizeof(g_err));
    if (rc == WH_OK) {
        wh_codec_delivery_free(m);
        return 0;
    }
    return rc == WH_ERR && m == NULL ? 1 : -1;
}

static void test_delivery_errors(void)
{
    const char *bad = "not a valid protobuf webhook.v1.Delivery";
    CHECK_INT(delivery_decode_err("\xff\xff\xff", 3), 1);
    CHECK_STR(g_err, bad);
    CHECK_INT(delivery_decode_err("", 0), 1);
    CHECK_STR(g_err, bad);
    CHECK_INT(delivery_decode_err("{\"delivery_id\":1}", 17), 1);
    CHECK_STR(g_err, bad);

    /* a Delivery without its event */
    Webhook__V1__Delivery pb;
    webhook__v1__delivery__init(&pb);
    pb.delivery_id = "msg_x";
    pb.endpoint_id = EP1;
    uint8_t packed[256];
    size_t n = webhook__v1__delivery__pack(&pb, packed);
    CHECK_INT(delivery_decode_err(packed, n), 1);
    CHECK_STR(g_err, bad);

    wh_buf b;
    wh_delivery d = full_delivery();
    d.endpoint_id = "ep_BAD12345";
    wh_buf_init(&b, 1 << 20);
    CHECK_INT(wh_codec_delivery_encode(&d, &b, g_err, sizeof(g_err)), WH_OK);
    CHECK_INT(delivery_decode_err(b.data, b.len), 1);
    CHECK_STR(g_err, "\"ep_BAD12345\" is not an endpoint id (ep_ followed by "
                     "8-40 lowercase letters or digits)");
    wh_buf_reset(&b);

    d = full_delivery();
    d.endpoint_id = "";
    CHECK_INT(wh_codec_delivery_encode(&d, &b, g_err, sizeof(g_err)), WH_OK);
    CHECK_INT(delivery_decode_err(b.data, b.len), 1);
    CHECK_STR(g_err, "\"\" is not an endpoint id (ep_ followed by 8-40 "
                     "lowercase letters or digits)");
    wh_buf_reset(&b);

    d = full_delivery();
    d.delivery_id = "";
    CHECK_INT(wh_codec_delivery_encode(&d, &b, g_err, sizeof(g_err)), WH_OK);
    CHECK_INT(delivery_decode_err(b.data, b.len), 1);
    CHECK_STR(g_err, "delivery_id is empty");
    wh_buf_reset(&b);

    d = full_delivery();
    d.delivery_id = "msg bad";
    CHECK_INT(wh_codec_delivery_encode(&d, &b, g_err, sizeof(g_err)), WH_OK);
    CHECK_INT(delivery_decode_err(b.data, b.len), 1);
    CHECK_STR(g_err, "delivery_id may only hold printable ASCII without "
                     "spaces (byte 3)");
    wh_buf_free(&b);

    /* the nested event is validated, except for the payload limit */
    wh_buf_init(&b, 4 * 1024 * 1024);
    static const wh_header_kv crlf[] = {{"X-A", "1\r\nX-Injected: 1"}};
    d = full_delivery();
    d.event.headers = crlf;
    d.event.n_headers = 1;
    CHECK_INT(wh_codec_delivery_encode(&d, &b, g_err, sizeof(g_err)), WH_OK);
    CHECK_INT(delivery_decode_err(b.data, b.len), 1);
    CHECK_STR(g_err, "header X-A value holds a control character");
    wh_buf_reset(&b);

    static const wh_header_kv host[] = {{"Host", "evil.example"}};
    d = full_delivery();
    d.event.headers = host;
    d.event.n_headers = 1;
    CHECK_INT(wh_codec_delivery_encode(&d, &b, g_err, sizeof(g_err)), WH_OK);
    CHECK_INT(delivery_decode_err(b.data, b.len), 1);
    CHECK_STR(g_err, "header Host cannot be set per event");
    wh_buf_reset(&b);

    d = full_delivery();
    d.event.content_type = "text/plain\r\nX-Injected: 1";
    CHECK_INT(wh_codec_delivery_encode(&d, &b, g_err, sizeof(g_err)), WH_OK);
    CHECK_INT(delivery_decode_err(b.data, b.len), 1);
    CHECK_STR(g_err, "content_type holds a control character");
    wh_buf_reset(&b);

    d = full_delivery();
    d.event.id = "";
    CHECK_INT(wh_codec_delivery_encode(&d, &b, g_err, sizeof(g_err)), WH_OK);
    CHECK_INT(delivery_decode_err(b.data, b.len), 1);
    CHECK_STR(g_err, "id is empty");
    wh_buf_reset(&b);

    uint8_t *large = calloc(1, PMAX + 1);
    CHECK(large != NULL);
    if (large) {
        d = full_delivery();
        d.event.payload = large;
        d.event.payload_len = PMAX + 1;
        CHECK_INT(wh_codec_delivery_encode(&d, &b, g_err, sizeof(g_err)),
                  WH_OK);
        CHECK_INT(delivery_decode_err(b.data, b.len), 0);
        free(large);
    }
    wh_buf_free(&b);

    /* too many endpoints in the nested event */
    Webhook__V1__Event ev;
    webhook__v1__event__init(&ev);
    char *eps[101];
    for (size_t i = 0; i < 101; i++)
        eps[i] = EP1;
    ev.endpoint_ids = eps;
    ev.n_endpoint_ids = 101;
    pb.event = &ev;
    uint8_t big[4096];
    CHECK(webhook__v1__delivery__get_packed_size(&pb) <= sizeof(big));
    n = webhook__v1__delivery__pack(&pb, big);
    CHECK_INT(delivery_decode_err(big, n), 1);
    CHECK_STR(g_err, "more than 100 endpoints");
}

/* ---- protobuf strings with a NUL, header rules -------------------------- */

/* Replaces the first byte of the marker "QQQQ" in b with a NUL. */
static int nul_at_marker(wh_buf *b)
{
    char *q = memmem(b->data, b->len, "QQQQ", 4);
    if (!q)
        return 0;
    *q = '\0';
    return 1;
}

/* A string field of an Event holding a NUL on the wire is refused, naming
 * the field, whatever the content-type; "pb\0nul" is never "pb". */
static void test_protobuf_nul(void)
{
    static const char *const fields[] = {"id", "app", "type",
                                         "content_type", "endpoint_ids",
                                         "headers", "headers"};
    for (size_t f = 0; f < WH_ARRAY_LEN(fields); f++) {
        wh_event ev = full_event();
        const char *eps[] = {EP1, "ep_abcQQQQ"};
        wh_header_kv hs[] = {{"X-A", "1"}, {"X-B", "2"}};
        switch (f) {
        case 0: ev.id = "pbQQQQnul"; break;
        case 1: ev.app = "shopQQQQ"; break;
        case 2: ev.type = "order.QQQQ"; break;
        case 3: ev.content_type = "text/QQQQ"; break;
        case 4: ev.endpoint_ids = eps; ev.n_endpoints = 2; break;
        case 5: hs[1].name = "X-QQQQ"; ev.headers = hs; ev.n_headers = 2;
            break;
        case 6: hs[0].value = "vQQQQ"; ev.headers = hs; ev.n_headers = 2;
            break;
        }
        wh_buf b;
        CHECK_INT(encode_event(&ev, &b), WH_OK);
        CHECK(nul_at_marker(&b));
        char want[96];
        snprintf(want, sizeof(want), "field \"%s\" contains a NUL character",
                 fields[f]);
        EXPECT_ERR_FULL(b.data, b.len, WH_CT_PROTOBUF, PMAX, want);
        EXPECT_ERR_FULL(b.data, b.len, NULL, PMAX, want);
        wh_buf_free(&b);
    }
    /* the same events without the NUL are fine (the markers are valid) */
    wh_event ev = full_event();
    ev.id = "pbQQQQnul";
    wh_buf b;
    CHECK_INT(encode_event(&ev, &b), WH_OK);
    CHECK_INT(decode_rc(b.data, b.len, WH_CT_PROTOBUF, PMAX), 0);
    wh_buf_free(&b);

    /* a Delivery: its own strings and its event's */
    static const char *const dfields[] = {"delivery_id", "source_topic",
                                          "id"};
    for (size_t f = 0; f < WH_ARRAY_LEN(dfields); f++) {
        wh_delivery d = full_delivery();
        if (f == 0)
            d.delivery_id = "msg_QQQQ";
        else if (f == 1)
            d.source_topic = "webhook.QQQQ";
        else
            d.event.id = "evQQQQ";
        wh_buf_init(&b, 1 << 20);
        CHECK_INT(wh_codec_delivery_encode(&d, &b, g_err, sizeof(g_err)),
                  WH_OK);
        CHECK(nul_at_marker(&b));
        CHECK_INT(delivery_decode_err(b.data, b.len), 1);
        char want[96];
        snprintf(want, sizeof(want), "field \"%s\" contains a NUL character",
                 dfields[f]);
        CHECK_STR(g_err, want);
        /* and inside a dead letter */
        wh_dead_letter dl = {.reason = WH_DEAD_EXPIRED, .delivery = &d};
        wh_buf_reset(&b);
        CHECK_INT(wh_codec_dead_letter_encode(&dl, &b, g_err, sizeof(g_err)),
                  WH_OK);
        CHECK(nul_at_marker(&b));
        wh_dead_letter_msg *m = NULL;
        CHECK_INT(wh_codec_dead_letter_decode(b.data, b.len, &m, g_err,
                                              sizeof(g_err)),
                  WH_ERR);
        CHECK_STR(g_err, want);
        wh_buf_free(&b);
    }
}

static int validate_headers(const wh_header_kv *hs, size_t n)
{
    wh_event ev = full_event();
    ev.headers = hs;
    ev.n_headers = n;
    g_err[0] = '\0';
    return wh_codec_event_validate(&ev, PMAX, g_err, sizeof(g_err));
}

/* Names compare without case and with _ as -, for the reserved names and
 * for duplicates; values are non-empty UTF-8 without controls. */
static void test_header_rules(void)
{
    static const char *const signing[] = {
        "webhook_id", "Webhook_Signature", "WEBHOOK_TIMESTAMP",
        "webhook-id", "Webhook_x", "webhook__"};
    for (size_t i = 0; i < WH_ARRAY_LEN(signing); i++) {
        wh_header_kv h = {signing[i], "x"};
        CHECK_INT(validate_headers(&h, 1), WH_ERR);
        char want[96];
        snprintf(want, sizeof(want), "header %s is reserved for signing",
                 signing[i]);
        CHECK_STR(g_err, want);
    }
    static const char *const reserved[] = {
        "content_type", "Content_Length", "user_agent", "Transfer_Encoding",
        "keep_alive", "PROXY_AUTHORIZATION", "proxy_connection"};
    for (size_t i = 0; i < WH_ARRAY_LEN(reserved); i++) {
        wh_header_kv h = {reserved[i], "x"};
        CHECK_INT(validate_headers(&h, 1), WH_ERR);
        char want[96];
        snprintf(want, sizeof(want), "header %s cannot be set per event",
                 reserved[i]);
        CHECK_STR(g_err, want);
    }

    /* duplicates, however they are spelled */
    wh_header_kv dup[] = {{"X-Trace", "1"}, {"X-Other", "2"},
                          {"x_trace", "3"}};
    CHECK_INT(validate_headers(dup, 3), WH_ERR);
    CHECK_STR(g_err, "headers X-Trace and x_trace name the same header "
                     "(names compare without case, _ as -)");
    wh_header_kv dup2[] = {{"X-A", "1"}, {"x-a", "1"}};
    CHECK_INT(validate_headers(dup2, 2), WH_ERR);
    CHECK_STR(g_err, "headers X-A and x-a name the same header "
                     "(names compare without case, _ as -)");
    wh_header_kv nodup[] = {{"X-A", "1"}, {"X-AA", "1"}, {"XA", "1"}};
    CHECK_INT(validate_headers(nodup, 3), WH_OK);
    /* 16 distinct names are fine, the 16th equal to the 1st is not */
    char names[16][8];
    wh_header_kv h16[16];
    for (size_t i = 0; i < 16; i++) {
        snprintf(names[i], sizeof(names[i]), "X-%zu", i);
        h16[i].name = names[i];
        h16[i].value = "v";
    }
    CHECK_INT(validate_headers(h16, 16), WH_OK);
    h16[15].name = "x_0";
    CHECK_INT(validate_headers(h16, 16), WH_ERR);
    CHECK_STR(g_err, "headers X-0 and x_0 name the same header "
                     "(names compare without case, _ as -)");

    /* values */
    static const struct {
        const char *v, *want;
    } bad[] = {
        {"", "header X-A has an empty value"},
        {" a", "header X-A value begins or ends with a space or tab"},
        {"a\t", "header X-A value begins or ends with a space or tab"},
        {" ", "header X-A value begins or ends with a space or tab"},
        {"a\xc0\xaf", "header X-A value is not valid UTF-8 (byte 1)"},
        {"ab\xed\xa0\x80", "header X-A value is not valid UTF-8 (byte 2)"},
        {"\xf4\x90\x80\x80", "header X-A value is not valid UTF-8 (byte 0)"},
        {"\xf5\x80\x80\x80", "header X-A value is not valid UTF-8 (byte 0)"},
        {"a\xe2\x82", "header X-A value is not valid UTF-8 (byte 1)"},
        {"a\xff", "header X-A value is not valid UTF-8 (byte 1)"},
        {"a\xc2\x85", "header X-A value holds a control character"},
        {"a\xc2\x9f", "header X-A value holds a control character"},
        {"a\x1b[2J", "header X-A value holds a control character"},
    };
    for (size_t i = 0; i < WH_ARRAY_LEN(bad); i++) {
        wh_header_kv h = {"X-A", bad[i].v};
        CHECK_INT(validate_headers(&h, 1), WH_ERR);
        CHECK_STR(g_err, bad[i].want);
    }
    static const char *const good[] = {
        "a", "a b", "a\tb", "\xc2\xa0x", "\xf4\x8f\xbf\xbf",
        "\xed\x9f\xbf", "\xee\x80\x80", "Zo\xc3\xab"};
    for (size_t i = 0; i < WH_ARRAY_LEN(good); i++) {
        wh_header_kv h = {"X-A", good[i]};
        CHECK_INT(validate_headers(&h, 1), WH_OK);
    }
    /* the value's limit: 1024 bytes, whole characters */
    char *v = rep('v', 1025);
    wh_header_kv hv = {"X-A", v};
    CHECK_INT(validate_headers(&hv, 1), WH_ERR);
    CHECK_STR(g_err, "header X-A value exceeds 1024 bytes");
    v[1024] = '\0';
    CHECK_INT(validate_headers(&hv, 1), WH_OK);
    free(v);

    /* through each encoding */
    EXPECT_ERR(env(",\"payload\":1,\"headers\":{\"webhook_id\":\"x\"}"),
               "header webhook_id is reserved for signing");
    EXPECT_ERR(env(",\"payload\":1,\"headers\":{\"X-A\":\"1\",\"x_a\":\"2\"}"),
               "headers X-A and x_a name the same header "
               "(names compare without case, _ as -)");
    EXPECT_ERR(env(",\"payload\":1,\"headers\":{\"X-A\":\"1\",\"X-A\":\"1\"}"),
               "headers X-A and X-A name the same header "
               "(names compare without case, _ as -)");
    EXPECT_ERR(env(",\"payload\":1,\"headers\":{\"X-A\":\"\"}"),
               "header X-A has an empty value");
    wh_event ev = full_event();
    wh_header_kv pbh[] = {{"Webhook_Signature", "v1,forged"}};
    ev.headers = pbh;
    ev.n_headers = 1;
    wh_buf b;
    CHECK_INT(encode_event(&ev, &b), WH_OK);
    EXPECT_ERR_FULL(b.data, b.len, WH_CT_PROTOBUF, PMAX,
                    "header Webhook_Signature is reserved for signing");
    wh_buf_free(&b);
    /* a protobuf map with one key twice */
    wh_header_kv twice[] = {{"X-A", "1"}, {"X-A", "2"}};
    ev.headers = twice;
    ev.n_headers = 2;
    CHECK_INT(encode_event(&ev, &b), WH_OK);
    EXPECT_ERR_FULL(b.data, b.len, WH_CT_PROTOBUF, PMAX,
                    "headers X-A and X-A name the same header "
                    "(names compare without case, _ as -)");
    wh_buf_free(&b);
    wh_header_kv empty[] = {{"X-A", ""}};
    ev.headers = empty;
    ev.n_headers = 1;
    CHECK_INT(encode_event(&ev, &b), WH_OK);
    EXPECT_ERR_FULL(b.data, b.len, WH_CT_PROTOBUF, PMAX,
                    "header X-A has an empty value");
    wh_buf_free(&b);
}

/* Error texts quote refused input as valid UTF-8 without controls, at
 * most 64 bytes of it. */
static void test_error_quotes(void)
{
    CHECK_INT(wh_codec_check_endpoint_id("ep_\x1b[2Jabcdefgh", g_err,
                                         sizeof(g_err)),
              WH_ERR);
    CHECK_STR(g_err, "\"ep_\xef\xbf\xbd[2Jabcdefgh\" is not an endpoint id "
                     "(ep_ followed by 8-40 lowercase letters or digits)");
    CHECK_INT(wh_codec_check_endpoint_id("ep_\xed\xa0\x80zz", g_err,
                                         sizeof(g_err)),
              WH_ERR);
    CHECK_STR(g_err, "\"ep_\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbdzz\" is not an "
                     "endpoint id (ep_ followed by 8-40 lowercase letters or "
                     "digits)");
    char *longid = rep('A', 100);
    memcpy(longid, "ep_", 3);
    CHECK_INT(wh_codec_check_endpoint_id(longid, g_err, sizeof(g_err)),
              WH_ERR);
    char want[256];
    snprintf(want, sizeof(want), "\"%.64s\" is not an endpoint id (ep_ "
             "followed by 8-40 lowercase letters or digits)", longid);
    CHECK_STR(g_err, want);
    free(longid);

    wh_header_kv h = {"X\xff" "A", "1"};
    CHECK_INT(validate_headers(&h, 1), WH_ERR);
    CHECK_STR(g_err, "header name \"X\xef\xbf\xbd" "A\" is not a token");

    EXPECT_ERR(env(",\"payload\":1,\"x\\u001by\":1"),
               "unknown or repeated field \"x\xef\xbf\xbdy\" (expected id, "
               "app, type, payload or payload_base64, content_type, "
               "endpoints, headers, occurred_at_ms)");
}

/* ---- dead letters ------------------------------------------------------- */

static void test_dead_letter(void)
{
    wh_delivery d = full_delivery();
    wh_dead_letter dl = {
        .reason = WH_DEAD_ATTEMPTS_EXHAUSTED,
        .detail = "gave up after 12 attempts",
        .delivery = &d,
        .raw = NULL,
        .raw_len = 99, /* ignored without raw */
        .source_topic = "webhook.deliveries",
        .source_partition = 3,
        .source_offset = 987654321,
        .attempts = 12,
        .last_status_code = 503,
        .last_error = "HTTP 503",
        .dead_at_us = 1700000001000000LL,
    };
    wh_buf b;
    wh_buf_init(&b, 1 << 20);
    CHECK_INT(wh_codec_dead_letter_encode(&dl, &b, g_err, sizeof(g_err)),
              WH_OK);
    Webhook__V1__DeadLetter *pb = webhook__v1__dead_letter__unpack(
        NULL, b.len, (const uint8_t *)b.data);
    CHECK(pb != NULL);
    if (pb) {
        CHECK_INT(pb->reason,
                  WEBHOOK__V1__DEAD_LETTER__REASON__REASON_ATTEMPTS_EXHAUSTED);
        CHECK_STR(pb->detail, "gave up after 12 attempts");
        CHECK_INT(pb->raw.len, 0);
        CHECK_STR(pb->source_topic, "webhook.deliveries");
        CHECK_INT(pb->source_partition, 3);
        CHECK_INT(pb->source_offset, 987654321);
        CHECK_INT(pb->attempts, 12);
        CHECK_INT(pb->last_status_code, 503);
        CHECK_STR(pb->last_error, "HTTP 503");
        CHECK_INT(pb->dead_at_us, 1700000001000000LL);
        CHECK(pb->delivery != NULL);
        if (pb->delivery) {
            Webhook__V1__Delivery *pd = pb->delivery;
            CHECK_STR(pd->delivery_id, d.delivery_id);
            CHECK_STR(pd->endpoint_id, d.endpoint_id);
            CHECK_INT(pd->attempt, 7);
            CHECK_INT(pd->created_at_us, d.created_at_us);
            CHECK_STR(pd->source_topic, "webhook.events");
            CHECK_INT(pd->source_partition, 11);
            CHECK_INT(pd->source_offset, d.source_offset);
            CHECK(pd->event != NULL);
            if (pd->event) {
                Webhook__V1__Event *pe = pd->event;
                CHECK_STR(pe->id, d.event.id);
                CHECK_STR(pe->app, d.event.app);
                CHECK_STR(pe->type, d.event.type);
                CHECK_STR(pe->content_type, d.event.content_type);
                CHECK_MEM(pe->payload.data, pe->payload.len, bin_payload,
                          sizeof(bin_payload));
                CHECK_INT(pe->occurred_at_ms, d.event.occurred_at_ms);
                CHECK_INT(pe->published_at_us, d.event.published_at_us);
                CHECK_INT(pe->n_endpoint_ids, 2);
                if (pe->n_endpoint_ids == 2) {
                    CHECK_STR(pe->endpoint_ids[0], EP1);
                    CHECK_STR(pe->endpoint_ids[1], EP2);
                }
                CHECK_INT(pe->n_headers, 3);
                for (size_t i = 0; i < pe->n_headers && i < 3; i++) {
                    CHECK_STR(pe->headers[i]->key, full_hdrs[i].name);
                    CHECK_STR(pe->headers[i]->value, full_hdrs[i].value);
                }
            }
        }
        webhook__v1__dead_letter__free_unpacked(pb, NULL);
    }

    wh_buf_reset(&b);

    /* an undecodable event: raw bytes, no delivery */
    static const uint8_t raw[] = {'{', 0x00, 0xff, '"', 0x00};
    wh_dead_letter ul = {
        .reason = WH_DEAD_UNDECODABLE,
        .detail = "invalid JSON at byte 1: expected a string (object key)",
        .raw = raw,
        .raw_len = sizeof(raw),
        .source_topic = "webhook.events",
        .source_partition = -1,
        .source_offset = 0,
        .dead_at_us = 1,
    };
    CHECK_INT(wh_codec_dead_letter_encode(&ul, &b, g_err, sizeof(g_err)),
              WH_OK);
    pb = webhook__v1__dead_letter__unpack(NULL, b.len,
                                          (const uint8_t *)b.data);
    CHECK(pb != NULL);
    if (pb) {
        CHECK_INT(pb->reason,
                  WEBHOOK__V1__DEAD_LETTER__REASON__REASON_UNDECODABLE);
        CHECK_STR(pb->detail, ul.detail);
        CHECK(pb->delivery == NULL);
        CHECK_MEM(pb->raw.data, pb->raw.len, raw, sizeof(raw));
        CHECK_STR(pb->source_topic, "webhook.events");
        CHECK_INT(pb->source_partition, -1);
        CHECK_INT(pb->source_offset, 0);
        CHECK_INT(pb->attempts, 0);
        CHECK_INT(pb->last_status_code, 0);
        CHECK_STR(pb->last_error, "");
        CHECK_INT(pb->dead_at_us, 1);
        webhook__v1__dead_letter__free_unpacked(pb, NULL);
    }
    wh_buf_reset(&b);

    /* NULL strings encode as empty; every reason maps to the proto enum */
    static const struct {
        wh_dead_reason r;
        int pbr;
    } reasons[] = {
        {WH_DEAD_UNDECODABLE,
         WEBHOOK__V1__DEAD_LETTER__REASON__REASON_UNDECODABLE},
        {WH_DEAD_ATTEMPTS_EXHAUSTED,
         WEBHOOK__V1__DEAD_LETTER__REASON__REASON_ATTEMPTS_EXHAUSTED},
        {WH_DEAD_EXPIRED, WEBHOOK__V1__DEAD_LETTER__REASON__REASON_EXPIRED},
        {WH_DEAD_ENDPOINT_GONE,
         WEBHOOK__V1__DEAD_LETTER__REASON__REASON_ENDPOINT_GONE},
    };
    for (size_t i = 0; i < WH_ARRAY_LEN(reasons); i++) {
        wh_dead_letter e = {.reason = reasons[i].r};
        wh_buf_reset(&b);
        CHECK_INT(wh_codec_dead_letter_encode(&e, &b, g_err, sizeof(g_err)),
                  WH_OK);
        pb = webhook__v1__dead_letter__unpack(NULL, b.len,
                                              (const uint8_t *)b.data);
        CHECK(pb != NULL);
        if (pb) {
            CHECK_INT(pb->reason, reasons[i].pbr);
            CHECK_STR(pb->detail, "");
            CHECK_STR(pb->source_topic, "");
            CHECK_STR(pb->last_error, "");
            CHECK(pb->delivery == NULL);
            webhook__v1__dead_letter__free_unpacked(pb, NULL);
        }
    }
    wh_buf_free(&b);

    /* limits: the raw bytes must fit the buffer */
    uint8_t *big = calloc(1, 4096);
    CHECK(big != NULL);
    if (big) {
        ul.raw = big;
        ul.raw_len = 4096;
        wh_buf_init(&b, 4096);
        CHECK_INT(wh_codec_dead_letter_encode(&ul, &b, g_err, sizeof(g_err)),
                  WH_ERR);
        CHECK(strstr(g_err, "exceeds the buffer limit") != NULL);
        CHECK_INT(b.len, 0);
        wh_buf_free(&b);
        free(big);
    }
    wh_header_kv h17[17];
    for (size_t i = 0; i < 17; i++)
        h17[i] = full_hdrs[0];
    d.event.headers = h17;
    d.event.n_headers = 17;
    wh_buf_init(&b, 1 << 20);
    CHECK_INT(wh_codec_dead_letter_encode(&dl, &b, g_err, sizeof(g_err)),
              WH_ERR);
    CHECK_STR(g_err, "more than 16 headers");
    wh_buf_free(&b);
}

/* SHA-256 computed independently of the codec. */
static void sha256_of(const void *p, size_t n, uint8_t md[WH_SHA256_LEN])
{
    unsigned int mdlen = 0;
    if (EVP_Digest(p, n, md, &mdlen, EVP_sha256(), NULL) != 1 ||
        mdlen != WH_SHA256_LEN)
        abort();
}

/* Encodes dl into a buffer of max bytes, checks that the size function
 * agrees, and decodes it back (NULL when either step failed). */
static wh_dead_letter_msg *dl_roundtrip(const wh_dead_letter *dl, size_t max,
                                        size_t *enc_len)
{
    wh_buf b;
    wh_buf_init(&b, max);
    wh_dead_letter_msg *m = NULL;
    *enc_len = 0;
    int rc = wh_codec_dead_letter_encode(dl, &b, g_err, sizeof(g_err));
    CHECK_INT(rc, WH_OK);
    if (rc == WH_OK) {
        *enc_len = b.len;
        CHECK_INT(wh_codec_dead_letter_size(dl), b.len);
        rc = wh_codec_dead_letter_decode(b.data, b.len, &m, g_err,
                                         sizeof(g_err));
        CHECK_INT(rc, WH_OK);
        if (rc != WH_OK)
            fprintf(stderr, "dead letter decode: %s\n", g_err);
    }
    wh_buf_free(&b);
    return m;
}

static int ends_with(const char *s, const char *tail)
{
    size_t n = strlen(s), t = strlen(tail);
    return n >= t && strcmp(s + n - t, tail) == 0;
}

/* An undecodable message of 2 MB keeps its first WH_DEAD_RAW_PREFIX_MAX
 * bytes, its length and its SHA-256; without bodies none of its bytes. */
static void test_dead_letter_raw_prefix(void)
{
    size_t big = 2u << 20;
    uint8_t *raw = malloc(big), md[WH_SHA256_LEN];
    if (!raw)
        abort();
    for (size_t i = 0; i < big; i++)
        raw[i] = (uint8_t)(i * 7 + (i >> 11));
    sha256_of(raw, big, md);
    wh_dead_letter dl = {
        .reason = WH_DEAD_UNDECODABLE,
        .detail = "message is 2097152 bytes, the limit is 589824",
        .raw = raw,
        .raw_len = big,
        .source_topic = "webhook.events",
        .source_partition = 4,
        .source_offset = 77,
        .dead_at_us = 1700000000000001LL,
    };
    size_t n;
    /* the buffer's max is the bound itself: a bigger encoding fails */
    wh_dead_letter_msg *m =
        dl_roundtrip(&dl, WH_DEAD_RAW_PREFIX_MAX + 1024, &n);
    CHECK(n > WH_DEAD_RAW_PREFIX_MAX && n < WH_DEAD_RAW_PREFIX_MAX + 1024);
    if (m) {
        const wh_dead_letter *r = wh_codec_dead_letter(m);
        CHECK_INT(r->reason, WH_DEAD_UNDECODABLE);
        CHECK_STR(r->detail, dl.detail);
        CHECK(r->delivery == NULL);
        CHECK_MEM(r->raw, r->raw_len, raw, WH_DEAD_RAW_PREFIX_MAX);
        CHECK_INT(r->raw_total_len, big);
        CHECK(r->has_raw_sha256);
        CHECK_MEM(r->raw_sha256, WH_SHA256_LEN, md, WH_SHA256_LEN);
        CHECK(!r->has_payload_sha256);
        CHECK_INT(r->payload_total_len, 0);
        CHECK(!r->omit_bodies);
        CHECK_STR(r->source_topic, "webhook.events");
        CHECK_INT(r->source_partition, 4);
        CHECK_INT(r->source_offset, 77);
        CHECK_INT(r->dead_at_us, 1700000000000001LL);
        wh_codec_dead_letter_free(m);
    }

    /* at the bound exactly the whole message is kept, one byte over it
     * the last byte goes */
    static const size_t lens[] = {0, 1, WH_DEAD_RAW_PREFIX_MAX - 1,
                                  WH_DEAD_RAW_PREFIX_MAX,
                                  WH_DEAD_RAW_PREFIX_MAX + 1};
    for (size_t i = 0; i < WH_ARRAY_LEN(lens); i++) {
        dl.raw_len = lens[i];
        sha256_of(raw, lens[i], md);
        m = dl_roundtrip(&dl, 1 << 20, &n);
        if (!m)
            continue;
        const wh_dead_letter *r = wh_codec_dead_letter(m);
        size_t kept = lens[i] < WH_DEAD_RAW_PREFIX_MAX
                          ? lens[i]
                          : WH_DEAD_RAW_PREFIX_MAX;
        CHECK_INT(r->raw_len, kept);
        if (kept)
            CHECK_MEM(r->raw, r->raw_len, raw, kept);
        CHECK_INT(r->raw_total_len, lens[i]);
        CHECK(r->has_raw_sha256);
        CHECK_MEM(r->raw_sha256, WH_SHA256_LEN, md, WH_SHA256_LEN);
        wh_codec_dead_letter_free(m);
    }

    /* without bodies: no raw byte, the same length and hash, a note */
    dl.raw_len = big;
    dl.omit_bodies = true;
    sha256_of(raw, big, md);
    m = dl_roundtrip(&dl, 2048, &n);
    CHECK(n > 0 && n < 512);
    if (m) {
        const wh_dead_letter *r = wh_codec_dead_letter(m);
        CHECK(r->raw == NULL);
        CHECK_INT(r->raw_len, 0);
        CHECK_INT(r->raw_total_len, big);
        CHECK(r->has_raw_sha256);
        CHECK_MEM(r->raw_sha256, WH_SHA256_LEN, md, WH_SHA256_LEN);
        CHECK(r->omit_bodies);
        CHECK(strncmp(r->detail, dl.detail, strlen(dl.detail)) == 0);
        CHECK(ends_with(r->detail, "[raw message left out; raw_len and "
                                   "raw_sha256 identify it]"));
        wh_codec_dead_letter_free(m);
    }
    free(raw);
}

/* The largest delivery the checks let through: every id, header and
 * endpoint at its limit, a payload of the default limit. Its dead letter
 * without bodies stays within WH_DEAD_BARE_MAX. */
static void test_dead_letter_bare(void)
{
    char *id = rep('i', WH_ID_MAX), *app = rep('a', WH_ID_MAX),
         *type = rep('t', WH_TYPE_MAX), *ct = rep('c', WH_CONTENT_TYPE_MAX),
         *ep = rep('e', 43), *topic = rep('k', 249),
         *longtext = rep('x', 3 * WH_DEAD_TEXT_MAX);
    memcpy(ep, "ep_", 3);
    const char *eps[WH_EVENT_ENDPOINTS_MAX];
    for (size_t i = 0; i < WH_EVENT_ENDPOINTS_MAX; i++)
        eps[i] = ep;
    char names[WH_EVENT_HEADERS_MAX][65];
    char *value = rep('v', 1024);
    wh_header_kv hdrs[WH_EVENT_HEADERS_MAX];
    for (size_t i = 0; i < WH_EVENT_HEADERS_MAX; i++) {
        memset(names[i], 'h', 64);
        names[i][0] = (char)('a' + i);
        names[i][64] = '\0';
        hdrs[i].name = names[i];
        hdrs[i].value = value;
    }
    uint8_t *payload = malloc(PMAX), md[WH_SHA256_LEN];
    if (!payload)
        abort();
    for (size_t i = 0; i < PMAX; i++)
        payload[i] = (uint8_t)(i ^ (i >> 8));
    sha256_of(payload, PMAX, md);
    wh_delivery d = {
        .delivery_id = "msg_0123456789abcdef0123456789abcdef",
        .endpoint_id = ep,
        .attempt = UINT32_MAX,
        .created_at_us = INT64_MAX,
        .source_topic = topic,
        .source_partition = INT32_MAX,
        .source_offset = INT64_MAX,
        .kind = WH_DELIVERY_RETRY,
        .event = {
            .id = id, .app = app, .type = type, .content_type = ct,
            .payload = payload, .payload_len = PMAX,
            .occurred_at_ms = INT64_MAX, .published_at_us = INT64_MAX,
            .n_endpoints = WH_EVENT_ENDPOINTS_MAX, .endpoint_ids = eps,
            .n_headers = WH_EVENT_HEADERS_MAX, .headers = hdrs,
        },
    };
    wh_dead_letter dl = {
        .reason = WH_DEAD_ATTEMPTS_EXHAUSTED,
        .detail = longtext,
        .delivery = &d,
        .source_topic = topic,
        .source_partition = INT32_MAX,
        .source_offset = INT64_MAX,
        .attempts = UINT32_MAX,
        .last_status_code = INT32_MIN,
        .last_error = longtext,
        .dead_at_us = INT64_MAX,
        .omit_bodies = true,
    };
    size_t n;
    wh_dead_letter_msg *m = dl_roundtrip(&dl, WH_DEAD_BARE_MAX, &n);
    CHECK(n > 16 * 1024 && n <= WH_DEAD_BARE_MAX);
    printf("the largest dead letter without bodies: %zu bytes (bound %d)\n",
           n, WH_DEAD_BARE_MAX);
    if (m) {
        const wh_dead_letter *r = wh_codec_dead_letter(m);
        CHECK(r->omit_bodies);
        CHECK(r->raw == NULL);
        CHECK(!r->has_raw_sha256);
        CHECK_INT(r->payload_total_len, PMAX);
        CHECK(r->has_payload_sha256);
        CHECK_MEM(r->payload_sha256, WH_SHA256_LEN, md, WH_SHA256_LEN);
        CHECK_INT(strlen(r->detail), WH_DEAD_TEXT_MAX);
        CHECK(ends_with(r->detail, "[event payload left out; payload_len "
                                   "and payload_sha256 identify it]"));
        CHECK_INT(strlen(r->last_error), WH_DEAD_TEXT_MAX);
        CHECK(r->delivery != NULL);
        if (r->delivery) {
            wh_delivery want = d;
            want.event.payload_len = 0;
            check_delivery_eq(r->delivery, &want);
            CHECK_INT(r->delivery->kind, WH_DELIVERY_RETRY);
        }
        CHECK_INT(r->attempts, UINT32_MAX);
        CHECK_INT(r->last_status_code, INT32_MIN);
        CHECK_INT(r->dead_at_us, INT64_MAX);
        wh_codec_dead_letter_free(m);
    }

    /* with bodies the payload is there and the hash describes it */
    dl.omit_bodies = false;
    m = dl_roundtrip(&dl, PMAX + WH_DEAD_BARE_MAX, &n);
    CHECK(n > PMAX && n <= PMAX + WH_DEAD_BARE_MAX);
    if (m) {
        const wh_dead_letter *r = wh_codec_dead_letter(m);
        CHECK(!r->omit_bodies);
        CHECK(r->delivery != NULL);
        if (r->delivery)
            check_delivery_eq(r->delivery, &d);
        CHECK_INT(r->payload_total_len, PMAX);
        CHECK_MEM(r->payload_sha256, WH_SHA256_LEN, md, WH_SHA256_LEN);
        CHECK_INT(strlen(r->detail), WH_DEAD_TEXT_MAX);
        CHECK(strspn(r->detail, "x") == WH_DEAD_TEXT_MAX);
        wh_codec_dead_letter_free(m);
    }
    /* more headers than an event may have: not encodable, size 0 */
    wh_header_kv h17[WH_EVENT_HEADERS_MAX + 1];
    for (size_t i = 0; i < WH_ARRAY_LEN(h17); i++)
        h17[i] = hdrs[0];
    d.event.headers = h17;
    d.event.n_headers = WH_ARRAY_LEN(h17);
    CHECK_INT(wh_codec_dead_letter_size(&dl), 0);
    d.event.headers = hdrs;
    d.event.n_headers = WH_EVENT_HEADERS_MAX;
    CHECK_INT(wh_codec_dead_letter_size(&dl), n);
    /* one byte too small a buffer: refused, nothing appended */
    wh_buf b;
    wh_buf_init(&b, n - 1);
    CHECK_INT(wh_codec_dead_letter_encode(&dl, &b, g_err, sizeof(g_err)),
              WH_ERR);
    CHECK(strstr(g_err, "exceeds the buffer limit") != NULL);
    CHECK_INT(b.len, 0);
    wh_buf_free(&b);
    free(payload);
    free(value);
    free(id);
    free(app);
    free(type);
    free(ct);
    free(ep);
    free(topic);
    free(longtext);
}

/* Texts are cut at WH_DEAD_TEXT_MAX bytes on a character boundary and
 * hold only valid UTF-8 without control characters but tab. */
static void test_dead_letter_text(void)
{
    /* "a" then 2-byte characters: byte 1024 is the middle of one */
    size_t chars = WH_DEAD_TEXT_MAX;
    char *s = malloc(1 + 2 * chars + 1);
    if (!s)
        abort();
    s[0] = 'a';
    for (size_t i = 0; i < chars; i++)
        memcpy(s + 1 + 2 * i, "\xc3\xa9", 2);
    s[1 + 2 * chars] = '\0';
    wh_dead_letter dl = {.reason = WH_DEAD_REJECTED, .detail = s,
                         .last_error = s + 1 + 2 * (chars - 50)};
    size_t n;
    wh_dead_letter_msg *m = dl_roundtrip(&dl, 1 << 16, &n);
    if (m) {
        const wh_dead_letter *r = wh_codec_dead_letter(m);
        CHECK_INT(strlen(r->detail), WH_DEAD_TEXT_MAX - 1);
        CHECK(strncmp(r->detail, s, WH_DEAD_TEXT_MAX - 1) == 0);
        /* short enough: kept whole */
        CHECK_STR(r->last_error, s + 1 + 2 * (chars - 50));
        CHECK_INT(r->reason, WH_DEAD_REJECTED);
        wh_codec_dead_letter_free(m);
    }
    /* exactly WH_DEAD_TEXT_MAX bytes stay whole */
    s[WH_DEAD_TEXT_MAX - 1] = 'z';
    s[WH_DEAD_TEXT_MAX] = '\0';
    m = dl_roundtrip(&dl, 1 << 16, &n);
    if (m) {
        CHECK_STR(wh_codec_dead_letter(m)->detail, s);
        wh_codec_dead_letter_free(m);
    }
    free(s);
    /* outside bytes in a text become U+FFFD: invalid UTF-8, controls */
    dl.detail = "id \"\xed\xa0\x80\" \x1b[2J\tend";
    dl.last_error = "HTTP 500: \xff\xc2\x85\n";
    m = dl_roundtrip(&dl, 1 << 16, &n);
    if (m) {
        CHECK_STR(wh_codec_dead_letter(m)->detail,
                  "id \"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\" "
                  "\xef\xbf\xbd[2J\tend");
        CHECK_STR(wh_codec_dead_letter(m)->last_error,
                  "HTTP 500: \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
        wh_codec_dead_letter_free(m);
    }
}

/* Decoding: garbage is refused, a dead letter written before raw_len
 * existed reads as whole, a bad embedded delivery is refused. */
static void test_dead_letter_decode(void)
{
    wh_dead_letter_msg *m = (wh_dead_letter_msg *)g_err;
    static const uint8_t junk[] = {0xff, 0xff, 0xff};
    CHECK_INT(wh_codec_dead_letter_decode(junk, sizeof(junk), &m, g_err,
                                          sizeof(g_err)),
              WH_ERR);
    CHECK(m == NULL);
    CHECK_STR(g_err, "not a valid protobuf webhook.v1.DeadLetter");

    Webhook__V1__DeadLetter pb = WEBHOOK__V1__DEAD_LETTER__INIT;
    uint8_t raw[5] = {1, 2, 3, 4, 5}, out[256];
    pb.reason = WEBHOOK__V1__DEAD_LETTER__REASON__REASON_UNDECODABLE;
    pb.raw.data = raw;
    pb.raw.len = sizeof(raw);
    size_t n = webhook__v1__dead_letter__pack(&pb, out);
    CHECK_INT(wh_codec_dead_letter_decode(out, n, &m, g_err, sizeof(g_err)),
              WH_OK);
    if (m) {
        const wh_dead_letter *r = wh_codec_dead_letter(m);
        CHECK_MEM(r->raw, r->raw_len, raw, sizeof(raw));
        CHECK_INT(r->raw_total_len, sizeof(raw));
        CHECK(!r->has_raw_sha256);
        CHECK(!r->omit_bodies);
        wh_codec_dead_letter_free(m);
    }

    pb.raw_sha256.data = raw;
    pb.raw_sha256.len = sizeof(raw);
    n = webhook__v1__dead_letter__pack(&pb, out);
    CHECK_INT(wh_codec_dead_letter_decode(out, n, &m, g_err, sizeof(g_err)),
              WH_ERR);
    CHECK_STR(g_err, "a SHA-256 in the dead letter is not 32 bytes");

    wh_delivery d = full_delivery();
    d.endpoint_id = "nope";
    wh_dead_letter dl = {.reason = WH_DEAD_EXPIRED, .delivery = &d};
    wh_buf b;
    wh_buf_init(&b, 1 << 16);
    CHECK_INT(wh_codec_dead_letter_encode(&dl, &b, g_err, sizeof(g_err)),
              WH_OK);
    CHECK_INT(wh_codec_dead_letter_decode(b.data, b.len, &m, g_err,
                                          sizeof(g_err)),
              WH_ERR);
    CHECK(m == NULL);
    CHECK(strstr(g_err, "is not an endpoint id") != NULL);
    wh_buf_free(&b);
}

/* ---- delivery ids ------------------------------------------------------- */

/* The expected id, computed independently: "msg_" + the first 16 bytes of
 * SHA-256(app "\0" event "\0" endpoint) in lowercase hex. */
static void expected_id(const char *app, const char *ev, const char *ep,
                        char out[WH_DELIVERY_ID_LEN + 1])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    if (!c || EVP_DigestInit_ex(c, EVP_sha256(), NULL) != 1 ||
        EVP_DigestUpdate(c, app, strlen(app) + 1) != 1 ||
        EVP_DigestUpdate(c, ev, strlen(ev) + 1) != 1 ||
        EVP_DigestUpdate(c, ep, strlen(ep)) != 1 ||
        EVP_DigestFinal_ex(c, md, &mdlen) != 1 || mdlen != 32)
        abort();
    EVP_MD_CTX_free(c);
    int n = snprintf(out, WH_DELIVERY_ID_LEN + 1, "msg_");
    for (int i = 0; i < 16; i++)
        n += snprintf(out + n, (size_t)(WH_DELIVERY_ID_LEN + 1 - n), "%02x",
                      md[i]);
}

static int is_id_format(const char *s)
{
    if (strlen(s) != WH_DELIVERY_ID_LEN || strncmp(s, "msg_", 4) != 0)
        return 0;
    for (size_t i = 4; i < WH_DELIVERY_ID_LEN; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

static void test_delivery_id(void)
{
    char a[WH_DELIVERY_ID_LEN + 1], b[WH_DELIVERY_ID_LEN + 1],
        want[WH_DELIVERY_ID_LEN + 1];
    memset(a, 'Z', sizeof(a));
    wh_codec_delivery_id("shop", "evt_1", EP1, a);
    CHECK(is_id_format(a));
    wh_codec_delivery_id("shop", "evt_1", EP1, b);
    CHECK_STR(a, b);
    expected_id("shop", "evt_1", EP1, want);
    CHECK_STR(a, want);
    /* the first 16 bytes of SHA-256("shop\0evt_1\0ep_abcdefgh"), pinned so
     * the ids of events already delivered never change */
    CHECK_STR(a, "msg_05a2cffefd5cf78f59864cdc2f04354a");

    wh_codec_delivery_id("shop2", "evt_1", EP1, b);
    CHECK(strcmp(a, b) != 0);
    wh_codec_delivery_id("shop", "evt_2", EP1, b);
    CHECK(strcmp(a, b) != 0);
    wh_codec_delivery_id("shop", "evt_1", EP2, b);
    CHECK(strcmp(a, b) != 0);
    /* the separators keep the parts apart */
    wh_codec_delivery_id("sho", "pevt_1", EP1, b);
    CHECK(strcmp(a, b) != 0);
    wh_codec_delivery_id("shop", "evt_", "1" EP1, b);
    CHECK(strcmp(a, b) != 0);

    /* the longest valid inputs */
    char *app = rep('a', WH_ID_MAX), *ev = rep('e', WH_ID_MAX),
         *ep = rep('0', 43);
    memcpy(ep, "ep_", 3);
    wh_codec_delivery_id(app, ev, ep, a);
    expected_id(app, ev, ep, want);
    CHECK_STR(a, want);
    CHECK(is_id_format(a));
    free(app);
    free(ev);
    free(ep);

    /* empty parts */
    wh_codec_delivery_id("", "", "", a);
    expected_id("", "", "", want);
    CHECK_STR(a, want);
}

/* ---- validators --------------------------------------------------------- */

static void test_validators(void)
{
    char err[WH_ERRLEN];
    char *s;

    /* check_id */
    CHECK_INT(wh_codec_check_id("id", "a", err, sizeof(err)), WH_OK);
    CHECK_INT(wh_codec_check_id("id", "!~", err, sizeof(err)), WH_OK);
    CHECK_INT(wh_codec_check_id("id", "", err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "id is empty");
    CHECK_INT(wh_codec_check_id("event id", NULL, err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "event id is empty");
    s = rep('x', WH_ID_MAX);
    CHECK_INT(wh_codec_check_id("id", s, err, sizeof(err)), WH_OK);
    free(s);
    s = rep('x', WH_ID_MAX + 1);
    CHECK_INT(wh_codec_check_id("id", s, err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "id is 129 bytes, the limit is 128");
    free(s);
    CHECK_INT(wh_codec_check_id("id", "ab\x7f", err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "id may only hold printable ASCII without spaces (byte 2)");
    CHECK_INT(wh_codec_check_id("id", "\tx", err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "id may only hold printable ASCII without spaces (byte 0)");
    CHECK_INT(wh_codec_check_id("id", "x\x80", err, sizeof(err)), WH_ERR);
    CHECK_INT(wh_codec_check_id("id", "x ", err, sizeof(err)), WH_ERR);
    CHECK_INT(wh_codec_check_id("id", "x ", NULL, 0), WH_ERR);

    /* check_app */
    CHECK_INT(wh_codec_check_app("aZ09_-.:", err, sizeof(err)), WH_OK);
    s = rep('a', WH_ID_MAX);
    CHECK_INT(wh_codec_check_app(s, err, sizeof(err)), WH_OK);
    free(s);
    s = rep('a', WH_ID_MAX + 1);
    CHECK_INT(wh_codec_check_app(s, err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "app is 129 bytes, the limit is 128");
    free(s);
    CHECK_INT(wh_codec_check_app("", err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "app is empty");
    CHECK_INT(wh_codec_check_app(NULL, err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "app is empty");
    static const char *const bad_apps[] = {"a b", "a/b", "a@b", "\xc3\xa9",
                                           "a\tb", "a,b", "a+b"};
    for (size_t i = 0; i < WH_ARRAY_LEN(bad_apps); i++) {
        CHECK_INT(wh_codec_check_app(bad_apps[i], err, sizeof(err)), WH_ERR);
        CHECK_STR(err, "app may only hold letters, digits and _ - . :");
    }

    /* check_type */
    static const char *const good_types[] = {"a", "order.paid", "a.b.c",
                                             "A-b_c:d.e", "0.1"};
    for (size_t i = 0; i < WH_ARRAY_LEN(good_types); i++)
        CHECK_INT(wh_codec_check_type(good_types[i], err, sizeof(err)), WH_OK);
    s = rep('t', WH_TYPE_MAX);
    CHECK_INT(wh_codec_check_type(s, err, sizeof(err)), WH_OK);
    s[1] = '.';
    CHECK_INT(wh_codec_check_type(s, err, sizeof(err)), WH_OK);
    s[WH_TYPE_MAX - 1] = '.';
    CHECK_INT(wh_codec_check_type(s, err, sizeof(err)), WH_ERR);
    free(s);
    s = rep('t', WH_TYPE_MAX + 1);
    CHECK_INT(wh_codec_check_type(s, err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "type is 257 bytes, the limit is 256");
    free(s);
    CHECK_INT(wh_codec_check_type("", err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "type is empty");
    CHECK_INT(wh_codec_check_type(NULL, err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "type is empty");
    static const char *const empty_seg[] = {".", "..", ".x", "x.", "a..b",
                                            "a.b.", "a...b"};
    for (size_t i = 0; i < WH_ARRAY_LEN(empty_seg); i++) {
        char want[64];
        snprintf(want, sizeof(want), "type \"%s\" has an empty segment",
                 empty_seg[i]);
        CHECK_INT(wh_codec_check_type(empty_seg[i], err, sizeof(err)), WH_ERR);
        CHECK_STR(err, want);
    }
    CHECK_INT(wh_codec_check_type("a b", err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "type may only hold letters, digits and _ - . :");
    CHECK_INT(wh_codec_check_type("a/b", err, sizeof(err)), WH_ERR);
    CHECK_INT(wh_codec_check_type("a*", err, sizeof(err)), WH_ERR);

    /* check_endpoint_id: ep_ + 8..40 of [a-z0-9] */
    const char *epmsg = "is not an endpoint id (ep_ followed by 8-40 "
                        "lowercase letters or digits)";
    char ep[64], want[160];
    for (size_t n = 0; n <= 45; n++) {
        memcpy(ep, "ep_", 3);
        for (size_t i = 0; i < n; i++)
            ep[3 + i] = (char)(i % 2 ? 'a' + (char)(i % 26)
                                     : '0' + (char)(i % 10));
        ep[3 + n] = '\0';
        int ok = n >= 8 && n <= 40;
        CHECK_INT(wh_codec_check_endpoint_id(ep, err, sizeof(err)),
                  ok ? WH_OK : WH_ERR);
        if (!ok) {
            snprintf(want, sizeof(want), "\"%s\" %s", ep, epmsg);
            CHECK_STR(err, want);
        }
    }
    static const char *const bad_eps[] = {"EP_abcdefgh", "ep-abcdefgh",
                                          "ep_abcdefgH", "ep_abcd_efgh",
                                          "ep_abcdefg.", "xp_abcdefgh",
                                          "ep_abcdefg\xc3\xa9", ""};
    for (size_t i = 0; i < WH_ARRAY_LEN(bad_eps); i++) {
        CHECK_INT(wh_codec_check_endpoint_id(bad_eps[i], err, sizeof(err)),
                  WH_ERR);
        snprintf(want, sizeof(want), "\"%s\" %s", bad_eps[i], epmsg);
        CHECK_STR(err, want);
    }
    CHECK_INT(wh_codec_check_endpoint_id(NULL, err, sizeof(err)), WH_ERR);
    snprintf(want, sizeof(want), "\"\" %s", epmsg);
    CHECK_STR(err, want);
    /* a long bad id is quoted up to 64 bytes */
    s = rep('z', 100);
    CHECK_INT(wh_codec_check_endpoint_id(s, err, sizeof(err)), WH_ERR);
    s[64] = '\0';
    snprintf(want, sizeof(want), "\"%s\" %s", s, epmsg);
    CHECK_STR(err, want);
    free(s);
}

static void test_event_validate(void)
{
    char err[WH_ERRLEN];
    wh_event ev = full_event();
    CHECK_INT(wh_codec_event_validate(&ev, PMAX, err, sizeof(err)), WH_OK);
    CHECK_INT(wh_codec_event_validate(&ev, sizeof(bin_payload), err,
                                      sizeof(err)),
              WH_OK);
    CHECK_INT(wh_codec_event_validate(&ev, sizeof(bin_payload) - 1, err,
                                      sizeof(err)),
              WH_ERR);
    CHECK_STR(err, "payload is 7 bytes, the limit is 6");

    /* a NULL content_type is allowed (the default applies) */
    ev.content_type = NULL;
    CHECK_INT(wh_codec_event_validate(&ev, PMAX, err, sizeof(err)), WH_OK);

    ev = full_event();
    const char *eps[101];
    for (size_t i = 0; i < 101; i++)
        eps[i] = EP1;
    ev.endpoint_ids = eps;
    ev.n_endpoints = 100;
    CHECK_INT(wh_codec_event_validate(&ev, PMAX, err, sizeof(err)), WH_OK);
    ev.n_endpoints = 101;
    CHECK_INT(wh_codec_event_validate(&ev, PMAX, err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "more than 100 endpoints");

    ev = full_event();
    wh_header_kv h[17];
    char names[17][8];
    for (size_t i = 0; i < 17; i++) {
        snprintf(names[i], sizeof(names[i]), "X-%zu", i);
        h[i].name = names[i];
        h[i].value = "v";
    }
    ev.headers = h;
    ev.n_headers = 16;
    CHECK_INT(wh_codec_event_validate(&ev, PMAX, err, sizeof(err)), WH_OK);
    ev.n_headers = 17;
    CHECK_INT(wh_codec_event_validate(&ev, PMAX, err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "more than 16 headers");

    /* every reserved header name, in any case */
    static const char *const reserved[] = {
        "content-type", "Content-Length", "HOST", "user-agent", "connection",
        "transfer-encoding", "expect", "TE", "upgrade", "trailer",
        "keep-alive", "proxy-authorization", "proxy-connection"};
    ev = full_event();
    for (size_t i = 0; i < WH_ARRAY_LEN(reserved); i++) {
        wh_header_kv one = {reserved[i], "x"};
        ev.headers = &one;
        ev.n_headers = 1;
        char w[96];
        snprintf(w, sizeof(w), "header %s cannot be set per event",
                 reserved[i]);
        CHECK_INT(wh_codec_event_validate(&ev, PMAX, err, sizeof(err)),
                  WH_ERR);
        CHECK_STR(err, w);
    }
    /* names that merely resemble reserved ones are fine */
    static const char *const fine[] = {"X-Host", "webhook", "Content-Types",
                                       "tee", "Authorization", "X-Webhook-Id"};
    for (size_t i = 0; i < WH_ARRAY_LEN(fine); i++) {
        wh_header_kv one = {fine[i], "x"};
        ev.headers = &one;
        ev.n_headers = 1;
        CHECK_INT(wh_codec_event_validate(&ev, PMAX, err, sizeof(err)),
                  WH_OK);
    }
    wh_header_kv tab = {"X-A", "a\tb"};
    ev.headers = &tab;
    CHECK_INT(wh_codec_event_validate(&ev, PMAX, err, sizeof(err)), WH_OK);
    wh_header_kv hi = {"X-A", "\xe2\x82\xac"};
    ev.headers = &hi;
    CHECK_INT(wh_codec_event_validate(&ev, PMAX, err, sizeof(err)), WH_OK);
    wh_header_kv nul = {"X-A", "a\x01"};
    ev.headers = &nul;
    CHECK_INT(wh_codec_event_validate(&ev, PMAX, err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "header X-A value holds a control character");

    ev = full_event();
    ev.occurred_at_ms = 0;
    CHECK_INT(wh_codec_event_validate(&ev, PMAX, err, sizeof(err)), WH_OK);
    ev.occurred_at_ms = INT64_MIN;
    CHECK_INT(wh_codec_event_validate(&ev, PMAX, err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "occurred_at_ms is negative");
}

TEST_MAIN(test_json_minimal, test_json_payload_compact, test_json_base64,
          test_json_endpoints_headers, test_json_structure_errors,
          test_json_field_errors, test_json_limits,
          test_json_endpoint_header_limits, test_content_type_dispatch,
          test_protobuf_roundtrip, test_protobuf_errors, test_encode_limits,
          test_delivery_roundtrip, test_delivery_errors, test_dead_letter,
          test_dead_letter_raw_prefix, test_dead_letter_bare,
          test_dead_letter_text, test_dead_letter_decode, test_protobuf_nul,
          test_header_rules, test_error_quotes, test_delivery_id,
          test_validators,
          test_event_validate)
