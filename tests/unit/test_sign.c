/*
 * test_sign.c - unit tests for sign.c: the Standard Webhooks test vector
 * published with the specification's reference libraries (and Svix's),
 * secret parsing and generation, multiple secrets, tampering, timestamp
 * tolerance, malformed headers, and the size limits.
 */
#include "sign.h"

#include "base64.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

/* The vector from the Standard Webhooks libraries' tests (javascript
 * webhook.test.ts "sign function works", go TestWebhookSign, python
 * test_sign_function) and the Svix libraries' tests. */
#define VEC_SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define VEC_ID     "msg_p5jXN8AQM9LWM0D4loKWxJek"
#define VEC_TS     1614265330
#define VEC_TS_S   "1614265330"
#define VEC_BODY   "{\"test\": 2432232314}"
#define VEC_SIG    "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
/* Non-matching signatures used by the same test suites. */
#define VEC_BAD_LAST "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="
#define VEC_OTHER    "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
#define VEC_OTHER_V2 "v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="

static wh_secret vec_secret(void)
{
    wh_secret s;
    char err[WH_ERRLEN];
    if (wh_sign_parse_secret(VEC_SECRET, &s, err, sizeof(err)) != WH_OK) {
        fprintf(stderr, "cannot parse the vector secret: %s\n", err);
        exit(2);
    }
    return s;
}

/* Verifies the vector's id, timestamp and body against header at now_s. */
static int verify_vec(const char *header, int64_t now_s, char *err,
                      size_t errlen)
{
    wh_secret s = vec_secret();
    return wh_sign_verify(&s, VEC_ID, VEC_TS_S, VEC_BODY, strlen(VEC_BODY),
                          header, now_s, WH_SIGN_TOLERANCE_S, err, errlen);
}

static void test_published_vector_sign(void)
{
    wh_secret s = vec_secret();
    char out[WH_SIGNATURE_MAX];
    CHECK_INT(s.len, 24);
    CHECK_INT(wh_sign(&s, 1, VEC_ID, VEC_TS, VEC_BODY, strlen(VEC_BODY), out,
                      sizeof(out)),
              WH_OK);
    CHECK_STR(out, VEC_SIG);
}

static void test_published_vector_verify(void)
{
    char err[WH_ERRLEN];
    CHECK_INT(verify_vec(VEC_SIG, VEC_TS, err, sizeof(err)), WH_OK);
    /* the libraries' "invalid signature" cases */
    CHECK_INT(verify_vec(VEC_BAD_LAST, VEC_TS, err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "no matching signature");
    CHECK_INT(verify_vec(VEC_OTHER, VEC_TS, err, sizeof(err)), WH_ERR);
    CHECK_INT(verify_vec("v1,dawfeoifkpqwoekfpqoekf", VEC_TS, err,
                         sizeof(err)),
              WH_ERR);
    /* "partial signature": the first 8 characters, and "v1," alone */
    CHECK_INT(verify_vec("v1,g0hM9", VEC_TS, err, sizeof(err)), WH_ERR);
    CHECK_INT(verify_vec("v1,", VEC_TS, err, sizeof(err)), WH_ERR);
    /* "multi sig payload is valid" */
    CHECK_INT(verify_vec(VEC_OTHER " " VEC_OTHER_V2 " " VEC_SIG " " VEC_OTHER,
                         VEC_TS, err, sizeof(err)),
              WH_OK);
    /* the right signature under another version identifier is skipped */
    CHECK_INT(verify_vec("v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
                         VEC_TS, err, sizeof(err)),
              WH_ERR);
    CHECK_INT(verify_vec("v1a,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
                         VEC_TS, err, sizeof(err)),
              WH_ERR);
}

/* Vectors computed independently with Python's hmac and base64 modules:
 * a 64-byte key with an empty body, and a binary body at timestamp 0. */
static void test_independent_vectors(void)
{
    wh_secret s;
    char err[WH_ERRLEN], out[WH_SIGNATURE_MAX];

    CHECK_INT(wh_sign_parse_secret(
                  "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUm"
                  "JygpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw==",
                  &s, err, sizeof(err)),
              WH_OK);
    CHECK_INT(s.len, 64);
    CHECK_INT(wh_sign(&s, 1, "evt_1", 1700000000, NULL, 0, out, sizeof(out)),
              WH_OK);
    CHECK_STR(out, "v1,IQtaVgX4Rz+iUYk/nP+c6bnTIZnsGs8iqCShgZ1t1ks=");
    CHECK_INT(wh_sign_verify(&s, "evt_1", "1700000000", NULL, 0, out,
                             1700000000, 300, err, sizeof(err)),
              WH_OK);

    static const unsigned char bin[] = {0, 1, 2, 0xff, 0x80};
    CHECK_INT(wh_sign_parse_secret("whsec_oKGio6SlpqeoqaqrrK2ur7CxsrO0tba3",
                                   &s, err, sizeof(err)),
              WH_OK);
    CHECK_INT(wh_sign(&s, 1, "evt_2", 0, bin, sizeof(bin), out, sizeof(out)),
              WH_OK);
    CHECK_STR(out, "v1,i9yKcPk7ABeMiUGWWBf3c+XtAivQ5q7P3l356C1Dl8o=");
}

static void test_multiple_secrets(void)
{
    wh_secret s[WH_SIGN_MAX_SECRETS], other;
    char out[WH_SIGNATURE_MAX], one[WH_SIGNATURE_MAX], err[WH_ERRLEN];
    const char *body = "{\"a\":1}";

    s[0] = vec_secret();
    for (size_t i = 1; i < WH_SIGN_MAX_SECRETS; i++) {
        char text[WH_SECRET_TEXT_MAX];
        CHECK_INT(wh_sign_generate_secret(text, sizeof(text)), WH_OK);
        CHECK_INT(wh_sign_parse_secret(text, &s[i], err, sizeof(err)), WH_OK);
    }
    CHECK_INT(wh_sign(s, WH_SIGN_MAX_SECRETS, "msg_1", 1000, body,
                      strlen(body), out, sizeof(out)),
              WH_OK);
    CHECK_INT(strlen(out), WH_SIGNATURE_MAX - 1);

    /* entries come in secret order and equal single-secret signatures */
    const char *p = out;
    for (size_t i = 0; i < WH_SIGN_MAX_SECRETS; i++) {
        CHECK_INT(wh_sign(&s[i], 1, "msg_1", 1000, body, strlen(body), one,
                          sizeof(one)),
                  WH_OK);
        CHECK(strncmp(p, one, WH_SIGNATURE_ONE_LEN) == 0);
        p += WH_SIGNATURE_ONE_LEN;
        CHECK(*p == (i + 1 < WH_SIGN_MAX_SECRETS ? ' ' : '\0'));
        p++;
        /* each secret alone verifies the combined header (rotation) */
        CHECK_INT(wh_sign_verify(&s[i], "msg_1", "1000", body, strlen(body),
                                 out, 1000, 300, err, sizeof(err)),
                  WH_OK);
    }

    char text[WH_SECRET_TEXT_MAX];
    CHECK_INT(wh_sign_generate_secret(text, sizeof(text)), WH_OK);
    CHECK_INT(wh_sign_parse_secret(text, &other, err, sizeof(err)), WH_OK);
    CHECK_INT(wh_sign_verify(&other, "msg_1", "1000", body, strlen(body), out,
                             1000, 300, err, sizeof(err)),
              WH_ERR);
    CHECK_STR(err, "no matching signature");

    /* bounds on the number of secrets */
    CHECK_INT(wh_sign(s, 0, "msg_1", 1000, body, strlen(body), out,
                      sizeof(out)),
              WH_ERR);
    CHECK_INT(wh_sign(NULL, 1, "msg_1", 1000, body, strlen(body), out,
                      sizeof(out)),
              WH_ERR);
    wh_secret five[WH_SIGN_MAX_SECRETS + 1];
    for (size_t i = 0; i < WH_ARRAY_LEN(five); i++)
        five[i] = s[0];
    char big[2 * WH_SIGNATURE_MAX];
    CHECK_INT(wh_sign(five, WH_SIGN_MAX_SECRETS + 1, "msg_1", 1000, body,
                      strlen(body), big, sizeof(big)),
              WH_ERR);
    CHECK_STR(big, "");
}

static void test_tampering(void)
{
    wh_secret s = vec_secret();
    char err[WH_ERRLEN];
    const char *tampered_body = "{\"test\": 2432232315}";

    CHECK_INT(wh_sign_verify(&s, VEC_ID, VEC_TS_S, tampered_body,
                             strlen(tampered_body), VEC_SIG, VEC_TS, 300, err,
                             sizeof(err)),
              WH_ERR);
    CHECK_STR(err, "no matching signature");
    /* body shortened by one byte */
    CHECK_INT(wh_sign_verify(&s, VEC_ID, VEC_TS_S, VEC_BODY,
                             strlen(VEC_BODY) - 1, VEC_SIG, VEC_TS, 300, err,
                             sizeof(err)),
              WH_ERR);
    CHECK_INT(wh_sign_verify(&s, "msg_p5jXN8AQM9LWM0D4loKWxJeK", VEC_TS_S,
                             VEC_BODY, strlen(VEC_BODY), VEC_SIG, VEC_TS, 300,
                             err, sizeof(err)),
              WH_ERR);
    CHECK_STR(err, "no matching signature");
    CHECK_INT(wh_sign_verify(&s, VEC_ID, "1614265331", VEC_BODY,
                             strlen(VEC_BODY), VEC_SIG, VEC_TS, 300, err,
                             sizeof(err)),
              WH_ERR);
    CHECK_STR(err, "no matching signature");
    /* another key */
    wh_secret k = s;
    k.key[0] ^= 1;
    CHECK_INT(wh_sign_verify(&k, VEC_ID, VEC_TS_S, VEC_BODY, strlen(VEC_BODY),
                             VEC_SIG, VEC_TS, 300, err, sizeof(err)),
              WH_ERR);
    /* the signature with one character flipped */
    char sig[] = VEC_SIG;
    sig[10] ^= 0x20;
    CHECK_INT(verify_vec(sig, VEC_TS, err, sizeof(err)), WH_ERR);
}

static void test_tolerance(void)
{
    char err[WH_ERRLEN];

    CHECK_INT(verify_vec(VEC_SIG, VEC_TS + 300, err, sizeof(err)), WH_OK);
    CHECK_INT(verify_vec(VEC_SIG, VEC_TS + 301, err, sizeof(err)), WH_ERR);
    CHECK(strstr(err, "timestamp too old") == err);
    CHECK_INT(verify_vec(VEC_SIG, VEC_TS - 300, err, sizeof(err)), WH_OK);
    CHECK_INT(verify_vec(VEC_SIG, VEC_TS - 301, err, sizeof(err)), WH_ERR);
    CHECK(strstr(err, "timestamp in the future") == err);

    /* a custom tolerance, including zero */
    wh_secret s = vec_secret();
    CHECK_INT(wh_sign_verify(&s, VEC_ID, VEC_TS_S, VEC_BODY, strlen(VEC_BODY),
                             VEC_SIG, VEC_TS, 0, err, sizeof(err)),
              WH_OK);
    CHECK_INT(wh_sign_verify(&s, VEC_ID, VEC_TS_S, VEC_BODY, strlen(VEC_BODY),
                             VEC_SIG, VEC_TS + 1, 0, err, sizeof(err)),
              WH_ERR);
    CHECK_INT(wh_sign_verify(&s, VEC_ID, VEC_TS_S, VEC_BODY, strlen(VEC_BODY),
                             VEC_SIG, VEC_TS + 3600, 3600, err, sizeof(err)),
              WH_OK);
    /* extreme clocks neither overflow nor pass */
    CHECK_INT(verify_vec(VEC_SIG, INT64_MIN, err, sizeof(err)), WH_ERR);
    CHECK_INT(verify_vec(VEC_SIG, INT64_MAX, err, sizeof(err)), WH_ERR);
    CHECK_INT(wh_sign_verify(&s, VEC_ID, VEC_TS_S, VEC_BODY, strlen(VEC_BODY),
                             VEC_SIG, INT64_MIN, INT64_MAX, err, sizeof(err)),
              WH_ERR);
}

static void test_malformed_headers(void)
{
    wh_secret s = vec_secret();
    char err[WH_ERRLEN];

    /* missing headers */
    CHECK_INT(wh_sign_verify(&s, NULL, VEC_TS_S, VEC_BODY, strlen(VEC_BODY),
                             VEC_SIG, VEC_TS, 300, err, sizeof(err)),
              WH_ERR);
    CHECK(strstr(err, "missing header") == err);
    CHECK_INT(wh_sign_verify(&s, "", VEC_TS_S, VEC_BODY, strlen(VEC_BODY),
                             VEC_SIG, VEC_TS, 300, err, sizeof(err)),
              WH_ERR);
    CHECK(strstr(err, "missing header") == err);
    CHECK_INT(wh_sign_verify(&s, VEC_ID, NULL, VEC_BODY, strlen(VEC_BODY),
                             VEC_SIG, VEC_TS, 300, err, sizeof(err)),
              WH_ERR);
    CHECK(strstr(err, "missing header") == err);
    CHECK_INT(wh_sign_verify(&s, VEC_ID, VEC_TS_S, VEC_BODY, strlen(VEC_BODY),
                             NULL, VEC_TS, 300, err, sizeof(err)),
              WH_ERR);
    CHECK(strstr(err, "missing header") == err);
    CHECK_INT(verify_vec("", VEC_TS, err, sizeof(err)), WH_ERR);
    CHECK(strstr(err, "missing header") == err);

    /* invalid timestamps */
    static const char *bad_ts[] = {
        "hello",       "-1614265330",         "+1614265330", "01614265330",
        " 1614265330", "1614265330 ",         "1614265330.0", "16142653e3",
        "0x60384df2",  "1000000000000000000", "1614265330\n",
    };
    for (size_t i = 0; i < WH_ARRAY_LEN(bad_ts); i++) {
        err[0] = '\0';
        CHECK_INT(wh_sign_verify(&s, VEC_ID, bad_ts[i], VEC_BODY,
                                 strlen(VEC_BODY), VEC_SIG, VEC_TS, 300, err,
                                 sizeof(err)),
                  WH_ERR);
        CHECK_STR(err, "invalid timestamp");
    }

    /* invalid message ids */
    CHECK_INT(wh_sign_verify(&s, "msg.1", VEC_TS_S, VEC_BODY,
                             strlen(VEC_BODY), VEC_SIG, VEC_TS, 300, err,
                             sizeof(err)),
              WH_ERR);
    CHECK(strstr(err, "invalid message id") == err);
    char long_id[WH_ID_MAX + 1];
    memset(long_id, 'a', WH_ID_MAX);
    long_id[WH_ID_MAX] = '\0';
    CHECK_INT(wh_sign_verify(&s, long_id, VEC_TS_S, VEC_BODY,
                             strlen(VEC_BODY), VEC_SIG, VEC_TS, 300, err,
                             sizeof(err)),
              WH_ERR);
    CHECK(strstr(err, "invalid message id") == err);

    /* separators: extra spaces are skipped, other separators are not */
    CHECK_INT(verify_vec("  " VEC_SIG, VEC_TS, err, sizeof(err)), WH_OK);
    CHECK_INT(verify_vec(VEC_OTHER "   " VEC_SIG "  ", VEC_TS, err,
                         sizeof(err)),
              WH_OK);
    CHECK_INT(verify_vec(VEC_OTHER "," VEC_SIG, VEC_TS, err, sizeof(err)),
              WH_ERR);
    CHECK_INT(verify_vec(VEC_OTHER "\t" VEC_SIG, VEC_TS, err, sizeof(err)),
              WH_ERR);
    CHECK_INT(verify_vec("   ", VEC_TS, err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "no matching signature");
    CHECK_INT(verify_vec("v1", VEC_TS, err, sizeof(err)), WH_ERR);
    CHECK_INT(verify_vec(",", VEC_TS, err, sizeof(err)), WH_ERR);
    CHECK_INT(verify_vec("g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", VEC_TS,
                         err, sizeof(err)),
              WH_ERR);
    /* trailing garbage glued to the right signature */
    CHECK_INT(verify_vec(VEC_SIG "x", VEC_TS, err, sizeof(err)), WH_ERR);
    CHECK_INT(verify_vec(VEC_SIG ",", VEC_TS, err, sizeof(err)), WH_ERR);
    CHECK_INT(verify_vec("V1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
                         VEC_TS, err, sizeof(err)),
              WH_ERR);

    /* the header length limit: a valid entry at the very end of a
     * WH_SIGN_HEADER_MAX header is found; one byte more is refused */
    char *h = malloc(WH_SIGN_HEADER_MAX + 2);
    size_t siglen = strlen(VEC_SIG);
    memset(h, ' ', WH_SIGN_HEADER_MAX);
    memcpy(h + WH_SIGN_HEADER_MAX - siglen, VEC_SIG, siglen);
    h[WH_SIGN_HEADER_MAX] = '\0';
    CHECK_INT(verify_vec(h, VEC_TS, err, sizeof(err)), WH_OK);
    memset(h, ' ', WH_SIGN_HEADER_MAX + 1);
    memcpy(h + WH_SIGN_HEADER_MAX + 1 - siglen, VEC_SIG, siglen);
    h[WH_SIGN_HEADER_MAX + 1] = '\0';
    CHECK_INT(verify_vec(h, VEC_TS, err, sizeof(err)), WH_ERR);
    CHECK(strstr(err, "signature header too long") == err);
    free(h);

    /* a NULL error buffer is allowed */
    CHECK_INT(verify_vec(VEC_OTHER, VEC_TS, NULL, 0), WH_ERR);
}

static void test_sign_limits(void)
{
    wh_secret s = vec_secret();
    char out[WH_SIGNATURE_MAX];
    const char *body = "x";

    /* cap: exactly one entry plus NUL fits, one byte less does not */
    CHECK_INT(wh_sign(&s, 1, "m", 1, body, 1, out, WH_SIGNATURE_ONE_LEN + 1),
              WH_OK);
    CHECK_INT(strlen(out), WH_SIGNATURE_ONE_LEN);
    memset(out, 'z', sizeof(out));
    CHECK_INT(wh_sign(&s, 1, "m", 1, body, 1, out, WH_SIGNATURE_ONE_LEN),
              WH_ERR);
    CHECK_STR(out, "");
    CHECK_INT(wh_sign(&s, 1, "m", 1, body, 1, NULL, 0), WH_ERR);
    wh_secret two[2] = {s, s};
    CHECK_INT(wh_sign(two, 2, "m", 1, body, 1, out,
                      2 * (WH_SIGNATURE_ONE_LEN + 1)),
              WH_OK);
    CHECK_INT(wh_sign(two, 2, "m", 1, body, 1, out,
                      2 * (WH_SIGNATURE_ONE_LEN + 1) - 1),
              WH_ERR);

    /* message ids: no '.', 1..WH_ID_MAX-1 bytes */
    CHECK_INT(wh_sign(&s, 1, "evt.1", 1, body, 1, out, sizeof(out)), WH_ERR);
    CHECK_STR(out, "");
    CHECK_INT(wh_sign(&s, 1, "", 1, body, 1, out, sizeof(out)), WH_ERR);
    CHECK_INT(wh_sign(&s, 1, NULL, 1, body, 1, out, sizeof(out)), WH_ERR);
    char id[WH_ID_MAX + 1];
    memset(id, 'i', WH_ID_MAX - 1);
    id[WH_ID_MAX - 1] = '\0';
    CHECK_INT(wh_sign(&s, 1, id, 1, body, 1, out, sizeof(out)), WH_OK);
    char err[WH_ERRLEN];
    CHECK_INT(wh_sign_verify(&s, id, "1", body, 1, out, 1, 0, err,
                             sizeof(err)),
              WH_OK);
    id[WH_ID_MAX - 1] = 'i';
    id[WH_ID_MAX] = '\0';
    CHECK_INT(wh_sign(&s, 1, id, 1, body, 1, out, sizeof(out)), WH_ERR);

    /* timestamps: 0 and the largest verifiable one sign; negatives do not */
    CHECK_INT(wh_sign(&s, 1, "m", 0, body, 1, out, sizeof(out)), WH_OK);
    CHECK_INT(wh_sign_verify(&s, "m", "0", body, 1, out, 0, 0, err,
                             sizeof(err)),
              WH_OK);
    CHECK_INT(wh_sign(&s, 1, "m", 999999999999999999LL, body, 1, out,
                      sizeof(out)),
              WH_OK);
    CHECK_INT(wh_sign_verify(&s, "m", "999999999999999999", body, 1, out,
                             999999999999999999LL, 0, err, sizeof(err)),
              WH_OK);
    CHECK_INT(wh_sign(&s, 1, "m", -1, body, 1, out, sizeof(out)), WH_ERR);

    /* an empty body, given as NULL or as a pointer */
    char a[WH_SIGNATURE_MAX], b[WH_SIGNATURE_MAX];
    CHECK_INT(wh_sign(&s, 1, "m", 5, NULL, 0, a, sizeof(a)), WH_OK);
    CHECK_INT(wh_sign(&s, 1, "m", 5, "", 0, b, sizeof(b)), WH_OK);
    CHECK_STR(a, b);
}

static void test_parse_secret(void)
{
    wh_secret s;
    char err[WH_ERRLEN];

    CHECK_INT(wh_sign_parse_secret(VEC_SECRET, &s, err, sizeof(err)), WH_OK);
    CHECK_INT(s.len, 24);

    /* the prefix is required */
    s.len = 99;
    CHECK_INT(wh_sign_parse_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &s, err,
                                   sizeof(err)),
              WH_ERR);
    CHECK_STR(err, "secret must start with \"whsec_\"");
    CHECK_INT(s.len, 0);
    CHECK(strstr(err, "MfKQ") == NULL);
    CHECK_INT(wh_sign_parse_secret("WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                                   &s, err, sizeof(err)),
              WH_ERR);
    CHECK_INT(wh_sign_parse_secret("whsk_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                                   &s, err, sizeof(err)),
              WH_ERR);
    CHECK_INT(wh_sign_parse_secret("", &s, err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "secret is empty");
    CHECK_INT(wh_sign_parse_secret(NULL, &s, err, sizeof(err)), WH_ERR);

    /* bad base64, and no quoting of the secret in the message */
    static const char *bad[] = {
        "whsec_not base64!",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS", /* decodes to 23 bytes */
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw ",
        "whsec_MfKQ9r8GKYqrTwjUPD8I\nLPZIo2LaLaSw",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLa-w",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw=",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwM",
    };
    for (size_t i = 0; i < WH_ARRAY_LEN(bad); i++) {
        err[0] = '\0';
        CHECK_INT(wh_sign_parse_secret(bad[i], &s, err, sizeof(err)), WH_ERR);
        CHECK_INT(s.len, 0);
        CHECK(strstr(err, "MfKQ") == NULL);
        CHECK(strstr(err, "base64") || strstr(err, "too short"));
    }
    CHECK_INT(wh_sign_parse_secret("whsec_not base64!", &s, err, sizeof(err)),
              WH_ERR);
    CHECK_STR(err, "secret is not valid base64 after \"whsec_\"");

    /* key sizes: 23 too short, 24 and 64 fine, 65 too long */
    unsigned char raw[WH_SECRET_KEY_MAX + 8];
    char text[8 + 4 * sizeof(raw) / 3 + 8];
    for (size_t i = 0; i < sizeof(raw); i++)
        raw[i] = (unsigned char)(i * 37 + 11);
    static const struct {
        size_t len;
        int rc;
        const char *err;
    } sizes[] = {
        {0, WH_ERR, "secret key too short (0 bytes, must be 24 to 64)"},
        {23, WH_ERR, "secret key too short (23 bytes, must be 24 to 64)"},
        {24, WH_OK, NULL},
        {32, WH_OK, NULL},
        {64, WH_OK, NULL},
        {65, WH_ERR, "secret key too long (65 bytes, must be 24 to 64)"},
        {66, WH_ERR, "secret key too long (66 bytes, must be 24 to 64)"},
        {67, WH_ERR, "secret key too long (maximum 64 bytes)"},
    };
    for (size_t i = 0; i < WH_ARRAY_LEN(sizes); i++) {
        memcpy(text, "whsec_", 6);
        wh_base64_encode(raw, sizes[i].len, text + 6);
        int rc = wh_sign_parse_secret(text, &s, err, sizeof(err));
        CHECK_INT(rc, sizes[i].rc);
        if (rc == WH_OK) {
            CHECK_MEM(s.key, s.len, raw, sizes[i].len);
        } else {
            CHECK_STR(err, sizes[i].err);
            CHECK_INT(s.len, 0);
        }
    }

    /* a very long text is refused without reading all of it as base64 */
    char *huge = malloc(100000);
    memcpy(huge, "whsec_", 6);
    memset(huge + 6, 'A', 100000 - 7);
    huge[100000 - 1] = '\0';
    CHECK_INT(wh_sign_parse_secret(huge, &s, err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "secret key too long (maximum 64 bytes)");
    free(huge);

    /* a NULL error buffer is allowed */
    CHECK_INT(wh_sign_parse_secret("nope", &s, NULL, 0), WH_ERR);

    wh_sign_clear_secret(&s);
    CHECK_INT(s.len, 0);
}

static void test_generate_secret(void)
{
    char a[WH_SECRET_TEXT_MAX], b[WH_SECRET_TEXT_MAX], err[WH_ERRLEN];
    wh_secret s;
    const size_t gen_len = 6 + 32;  /* "whsec_" + base64 of 24 bytes */

    CHECK_INT(wh_sign_generate_secret(a, sizeof(a)), WH_OK);
    CHECK_INT(wh_sign_generate_secret(b, sizeof(b)), WH_OK);
    CHECK_INT(strlen(a), gen_len);
    CHECK(strncmp(a, "whsec_", 6) == 0);
    CHECK(strcmp(a, b) != 0);
    CHECK_INT(wh_sign_parse_secret(a, &s, err, sizeof(err)), WH_OK);
    CHECK_INT(s.len, WH_SECRET_KEY_GEN);

    /* a signature made with the parsed secret verifies */
    char sig[WH_SIGNATURE_MAX];
    CHECK_INT(wh_sign(&s, 1, "msg_gen", 42, "{}", 2, sig, sizeof(sig)), WH_OK);
    CHECK_INT(wh_sign_verify(&s, "msg_gen", "42", "{}", 2, sig, 42, 300, err,
                             sizeof(err)),
              WH_OK);

    /* cap: exact size works, one less fails and leaves "" */
    char c[64];
    CHECK_INT(wh_sign_generate_secret(c, gen_len + 1), WH_OK);
    CHECK_INT(strlen(c), gen_len);
    CHECK_INT(wh_sign_generate_secret(c, gen_len), WH_ERR);
    CHECK_STR(c, "");
    CHECK_INT(wh_sign_generate_secret(NULL, 0), WH_ERR);
}

/* Signing from several threads at once gives the same answers as from one
 * (each thread has its own HMAC context). */
#define NTHREADS 4
#define NROUNDS  500

static void *sign_thread(void *arg)
{
    int *failures = arg;
    wh_secret s = vec_secret();
    char out[WH_SIGNATURE_MAX];
    for (int i = 0; i < NROUNDS; i++) {
        if (wh_sign(&s, 1, VEC_ID, VEC_TS, VEC_BODY, strlen(VEC_BODY), out,
                    sizeof(out)) != WH_OK ||
            strcmp(out, VEC_SIG) != 0)
            (*failures)++;
    }
    return NULL;
}

static void test_threads(void)
{
    pthread_t t[NTHREADS];
    int failures[NTHREADS] = {0};
    for (int i = 0; i < NTHREADS; i++)
        CHECK_INT(pthread_create(&t[i], NULL, sign_thread, &failures[i]), 0);
    for (int i = 0; i < NTHREADS; i++) {
        CHECK_INT(pthread_join(t[i], NULL), 0);
        CHECK_INT(failures[i], 0);
    }
}


/* ---- ed25519 ----------------------------------------------------------- */

/* RFC 8032 section 7.1, test 1: the private key (seed) and its public key;
 * the v1a signature over the Standard Webhooks vector's id, timestamp and
 * body was made with Node's crypto.sign, not with this code. */
#define ED_SK  "whsk_nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A="
#define ED_PK  "whpk_11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
#define ED_SIG "v1a,fldxM4gAKugP6nnt1hdz3sgGfZ6d99nzrMFnZOELIxbzEHoVmAb2ADp" \
               "kJK7zgPePmPsle0zV9jSeGlHFG2NVAw=="

static void test_ed25519_vector(void)
{
    wh_signkey k;
    char err[WH_ERRLEN], pk[WH_SIGNKEY_TEXT_MAX], out[WH_SIGNATURE_V1A_MAX];
    unsigned char pub[WH_ED25519_KEY_LEN];
    CHECK_INT(wh_sign_parse_signkey(ED_SK, &k, err, sizeof(err)), WH_OK);
    CHECK_INT(wh_sign_public_key(&k, pk, sizeof(pk)), WH_OK);
    CHECK_STR(pk, ED_PK);
    const wh_signkey *keys[] = {&k};
    CHECK_INT(wh_sign_ed25519(keys, 1, VEC_ID, VEC_TS, VEC_BODY,
                              strlen(VEC_BODY), out, sizeof(out)),
              WH_OK);
    CHECK_STR(out, ED_SIG);
    CHECK_INT(strlen(out), WH_SIGNATURE_V1A_LEN);
    CHECK_INT(wh_sign_parse_public_key(ED_PK, pub, err, sizeof(err)), WH_OK);
    CHECK_INT(wh_sign_verify_ed25519(pub, VEC_ID, VEC_TS_S, VEC_BODY,
                                     strlen(VEC_BODY), ED_SIG, VEC_TS, 300,
                                     err, sizeof(err)),
              WH_OK);
    /* with HMAC entries around it, and an unknown version */
    CHECK_INT(wh_sign_verify_ed25519(pub, VEC_ID, VEC_TS_S, VEC_BODY,
                                     strlen(VEC_BODY),
                                     VEC_SIG " v2,abc " ED_SIG, VEC_TS, 300,
                                     err, sizeof(err)),
              WH_OK);
    /* the HMAC verifier skips v1a entries */
    wh_secret s = vec_secret();
    CHECK_INT(wh_sign_verify(&s, VEC_ID, VEC_TS_S, VEC_BODY, strlen(VEC_BODY),
                             ED_SIG " " VEC_SIG, VEC_TS, 300, err,
                             sizeof(err)),
              WH_OK);
    wh_sign_signkey_cleanup(&k);
    CHECK(k.pkey == NULL);
}

static void test_ed25519_tampering(void)
{
    wh_signkey k;
    char err[WH_ERRLEN];
    unsigned char pub[WH_ED25519_KEY_LEN];
    CHECK_INT(wh_sign_parse_signkey(ED_SK, &k, err, sizeof(err)), WH_OK);
    CHECK_INT(wh_sign_parse_public_key(ED_PK, pub, err, sizeof(err)), WH_OK);
    const char *body = "{\"test\": 2432232315}"; /* one digit changed */
    CHECK_INT(wh_sign_verify_ed25519(pub, VEC_ID, VEC_TS_S, body, strlen(body),
                                     ED_SIG, VEC_TS, 300, err, sizeof(err)),
              WH_ERR);
    CHECK_STR(err, "no matching signature");
    CHECK_INT(wh_sign_verify_ed25519(pub, "msg_other", VEC_TS_S, VEC_BODY,
                                     strlen(VEC_BODY), ED_SIG, VEC_TS, 300,
                                     err, sizeof(err)),
              WH_ERR);
    CHECK_INT(wh_sign_verify_ed25519(pub, VEC_ID, "1614265331", VEC_BODY,
                                     strlen(VEC_BODY), ED_SIG, VEC_TS, 300,
                                     err, sizeof(err)),
              WH_ERR);
    /* one signature byte changed */
    char bad[] = ED_SIG;
    bad[10] = bad[10] == 'A' ? 'B' : 'A';
    CHECK_INT(wh_sign_verify_ed25519(pub, VEC_ID, VEC_TS_S, VEC_BODY,
                                     strlen(VEC_BODY), bad, VEC_TS, 300, err,
                                     sizeof(err)),
              WH_ERR);
    /* another key's signature */
    char other[WH_SIGNKEY_TEXT_MAX], sig[WH_SIGNATURE_V1A_MAX];
    wh_signkey k2;
    CHECK_INT(wh_sign_generate_signkey(other, sizeof(other)), WH_OK);
    CHECK_INT(wh_sign_parse_signkey(other, &k2, err, sizeof(err)), WH_OK);
    const wh_signkey *keys2[] = {&k2};
    CHECK_INT(wh_sign_ed25519(keys2, 1, VEC_ID, VEC_TS, VEC_BODY,
                              strlen(VEC_BODY), sig, sizeof(sig)),
              WH_OK);
    CHECK_INT(wh_sign_verify_ed25519(pub, VEC_ID, VEC_TS_S, VEC_BODY,
                                     strlen(VEC_BODY), sig, VEC_TS, 300, err,
                                     sizeof(err)),
              WH_ERR);
    /* the header and timestamp checks are the HMAC verifier's */
    CHECK_INT(wh_sign_verify_ed25519(pub, VEC_ID, VEC_TS_S, VEC_BODY,
                                     strlen(VEC_BODY), ED_SIG, VEC_TS + 301,
                                     300, err, sizeof(err)),
              WH_ERR);
    CHECK(strncmp(err, "timestamp too old", 17) == 0);
    CHECK_INT(wh_sign_verify_ed25519(pub, VEC_ID, VEC_TS_S, VEC_BODY,
                                     strlen(VEC_BODY), "", VEC_TS, 300, err,
                                     sizeof(err)),
              WH_ERR);
    CHECK_STR(err, "missing header webhook-signature");
    wh_sign_signkey_cleanup(&k);
    wh_sign_signkey_cleanup(&k2);
}

static void test_ed25519_keys(void)
{
    wh_signkey k;
    char err[WH_ERRLEN], a[WH_SIGNKEY_TEXT_MAX], b[WH_SIGNKEY_TEXT_MAX];
    unsigned char pub[WH_ED25519_KEY_LEN];
    CHECK_INT(wh_sign_generate_signkey(a, sizeof(a)), WH_OK);
    CHECK_INT(wh_sign_generate_signkey(b, sizeof(b)), WH_OK);
    CHECK_INT(strlen(a), WH_SIGNKEY_TEXT_MAX - 1);
    CHECK(strncmp(a, "whsk_", 5) == 0);
    CHECK(strcmp(a, b) != 0);
    CHECK_INT(wh_sign_generate_signkey(a, WH_SIGNKEY_TEXT_MAX - 1), WH_ERR);
    CHECK_STR(a, "");

    /* refusals, never quoting the key */
    CHECK_INT(wh_sign_parse_signkey("", &k, err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "signing key is empty");
    CHECK_INT(wh_sign_parse_signkey("whsec_nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDus"
                                    "Axyuf2A=", &k, err, sizeof(err)),
              WH_ERR);
    CHECK_STR(err, "signing key must start with \"whsk_\"");
    CHECK_INT(wh_sign_parse_signkey("whsk_nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDus",
                                    &k, err, sizeof(err)),
              WH_ERR);
    CHECK(strstr(err, "base64 of 32 bytes") != NULL);
    CHECK(strstr(err, "nWGx") == NULL);
    CHECK_INT(wh_sign_parse_signkey("whsk_!WGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusA"
                                    "xyuf2A=", &k, err, sizeof(err)),
              WH_ERR);
    CHECK_INT(wh_sign_parse_signkey(ED_PK, &k, err, sizeof(err)), WH_ERR);
    CHECK_INT(wh_sign_parse_public_key(ED_SK, pub, err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "public key must start with \"whpk_\"");

    /* several keys: one entry each, in order, each verifying */
    wh_signkey ks[WH_SIGN_MAX_SECRETS];
    const wh_signkey *kp[WH_SIGN_MAX_SECRETS + 1];
    for (int i = 0; i < WH_SIGN_MAX_SECRETS; i++) {
        CHECK_INT(wh_sign_generate_signkey(a, sizeof(a)), WH_OK);
        CHECK_INT(wh_sign_parse_signkey(a, &ks[i], err, sizeof(err)), WH_OK);
        kp[i] = &ks[i];
    }
    kp[WH_SIGN_MAX_SECRETS] = &ks[0];
    char out[WH_SIGNATURE_V1A_MAX];
    CHECK_INT(wh_sign_ed25519(kp, WH_SIGN_MAX_SECRETS, "m", 7, "x", 1, out,
                              sizeof(out)),
              WH_OK);
    CHECK_INT(strlen(out), WH_SIGNATURE_V1A_MAX - 1);
    for (int i = 0; i < WH_SIGN_MAX_SECRETS; i++) {
        char one[WH_SIGNATURE_V1A_MAX];
        const wh_signkey *k1[] = {&ks[i]};
        CHECK_INT(wh_sign_ed25519(k1, 1, "m", 7, "x", 1, one, sizeof(one)),
                  WH_OK);
        CHECK(strncmp(out + (size_t)i * (WH_SIGNATURE_V1A_LEN + 1), one,
                      WH_SIGNATURE_V1A_LEN) == 0);
        CHECK_INT(wh_sign_verify_ed25519(ks[i].pub, "m", "7", "x", 1, out, 7,
                                         300, err, sizeof(err)),
                  WH_OK);
    }
    /* limits: too many keys, none, a short buffer, bad id or timestamp */
    CHECK_INT(wh_sign_ed25519(kp, WH_SIGN_MAX_SECRETS + 1, "m", 7, "x", 1, out,
                              sizeof(out)),
              WH_ERR);
    CHECK_INT(wh_sign_ed25519(kp, 0, "m", 7, "x", 1, out, sizeof(out)),
              WH_ERR);
    CHECK_INT(wh_sign_ed25519(kp, 1, "m", 7, "x", 1, out,
                              WH_SIGNATURE_V1A_LEN),
              WH_ERR);
    CHECK_STR(out, "");
    CHECK_INT(wh_sign_ed25519(kp, 1, "m", 7, "x", 1, out,
                              WH_SIGNATURE_V1A_LEN + 1),
              WH_OK);
    CHECK_INT(wh_sign_ed25519(kp, 1, "m.1", 7, "x", 1, out, sizeof(out)),
              WH_ERR);
    CHECK_INT(wh_sign_ed25519(kp, 1, "m", -1, "x", 1, out, sizeof(out)),
              WH_ERR);
    CHECK_INT(wh_sign_ed25519(kp, 1, "m", 7, NULL, 0, out, sizeof(out)),
              WH_OK);
    CHECK_INT(wh_sign_verify_ed25519(ks[0].pub, "m", "7", "", 0, out, 7, 300,
                                     err, sizeof(err)),
              WH_OK);
    for (int i = 0; i < WH_SIGN_MAX_SECRETS; i++)
        wh_sign_signkey_cleanup(&ks[i]);
}

TEST_MAIN(test_published_vector_sign, test_published_vector_verify,
          test_independent_vectors, test_multiple_secrets, test_tampering,
          test_tolerance, test_malformed_headers, test_sign_limits,
          test_parse_secret, test_generate_secret, test_threads,
          test_ed25519_vector, test_ed25519_tampering, test_ed25519_keys)
