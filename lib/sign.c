/*
 * sign.c - Standard Webhooks signing and verification: secret parsing and
 * generation, the webhook-signature header, constant-time checks.
 *
 * Called by the worker for every delivery attempt, so signing reads the
 * body in place and keeps one HMAC context per thread (created on first
 * use, freed when the thread exits) instead of building one per call.
 * Any thread may call in.
 */
#include "sign.h"

#include "base64.h"

#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#define PREFIX_LEN   (sizeof(WH_SECRET_PREFIX) - 1)
#define MAC_LEN      32                      /* HMAC-SHA256 output */
#define MAC_B64_LEN  44                      /* base64 of MAC_LEN bytes */
#define KEY_B64_MAX  88                      /* base64 of WH_SECRET_KEY_MAX */
#define TS_DIGITS_MAX 18                     /* timestamps below 10^18 s */

static pthread_once_t mac_once = PTHREAD_ONCE_INIT;
static EVP_MAC *hmac_alg;                    /* fetched once, never freed */
static pthread_key_t mac_key;
static int mac_key_ok;

static void free_thread_ctx(void *p)
{
    EVP_MAC_CTX_free(p);
}

static void mac_init_once(void)
{
    hmac_alg = EVP_MAC_fetch(NULL, OSSL_MAC_NAME_HMAC, NULL);
    mac_key_ok = pthread_key_create(&mac_key, free_thread_ctx) == 0;
}

/* The calling thread's HMAC-SHA256 context, or NULL when OpenSSL or
 * pthreads failed. */
static EVP_MAC_CTX *thread_ctx(void)
{
    if (pthread_once(&mac_once, mac_init_once) != 0 || !hmac_alg ||
        !mac_key_ok)
        return NULL;
    EVP_MAC_CTX *ctx = pthread_getspecific(mac_key);
    if (ctx)
        return ctx;
    ctx = EVP_MAC_CTX_new(hmac_alg);
    if (!ctx)
        return NULL;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    if (!EVP_MAC_CTX_set_params(ctx, params) ||
        pthread_setspecific(mac_key, ctx) != 0) {
        EVP_MAC_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* mac = HMAC-SHA256(key, id "." ts "." body). */
static int signed_content_mac(const wh_secret *key, const char *id,
                              size_t idlen, const char *ts, size_t tslen,
                              const void *body, size_t body_len,
                              unsigned char mac[MAC_LEN])
{
    EVP_MAC_CTX *ctx = thread_ctx();
    size_t maclen = 0;
    if (!ctx)
        return WH_ERR;
    if (!EVP_MAC_init(ctx, key->key, key->len, NULL) ||
        !EVP_MAC_update(ctx, (const unsigned char *)id, idlen) ||
        !EVP_MAC_update(ctx, (const unsigned char *)".", 1) ||
        !EVP_MAC_update(ctx, (const unsigned char *)ts, tslen) ||
        !EVP_MAC_update(ctx, (const unsigned char *)".", 1) ||
        (body_len > 0 &&
         !EVP_MAC_update(ctx, (const unsigned char *)body, body_len)) ||
        !EVP_MAC_final(ctx, mac, &maclen, MAC_LEN) || maclen != MAC_LEN)
        return WH_ERR;
    return WH_OK;
}

static int valid_msg_id(const char *id, size_t len)
{
    return len > 0 && len < WH_ID_MAX && memchr(id, '.', len) == NULL;
}

int wh_sign_parse_secret(const char *text, wh_secret *out, char *err,
                         size_t errlen)
{
    unsigned char key[KEY_B64_MAX];          /* decoded <= 66 bytes */
    size_t keylen = 0;

    assert(out);
    out->len = 0;
    if (!text || !*text)
        return wh_errf(err, errlen, "secret is empty");
    if (strncmp(text, WH_SECRET_PREFIX, PREFIX_LEN) != 0)
        return wh_errf(err, errlen,
                       "secret must start with \"" WH_SECRET_PREFIX "\"");
    const char *b64 = text + PREFIX_LEN;
    size_t n = strnlen(b64, KEY_B64_MAX + 1);
    if (n > KEY_B64_MAX)
        return wh_errf(err, errlen,
                       "secret key too long (maximum %d bytes)",
                       WH_SECRET_KEY_MAX);
    assert(wh_base64_decoded_max(n) <= sizeof(key));
    if (wh_base64_decode(b64, n, key, sizeof(key), &keylen) != WH_OK) {
        OPENSSL_cleanse(key, sizeof(key));
        return wh_errf(err, errlen,
                       "secret is not valid base64 after \""
                       WH_SECRET_PREFIX "\"");
    }
    if (keylen < WH_SECRET_KEY_MIN || keylen > WH_SECRET_KEY_MAX) {
        OPENSSL_cleanse(key, sizeof(key));
        return wh_errf(err, errlen,
                       "secret key too %s (%zu bytes, must be %d to %d)",
                       keylen < WH_SECRET_KEY_MIN ? "short" : "long", keylen,
                       WH_SECRET_KEY_MIN, WH_SECRET_KEY_MAX);
    }
    memcpy(out->key, key, keylen);
    out->len = keylen;
    OPENSSL_cleanse(key, sizeof(key));
    return WH_OK;
}

int wh_sign_generate_secret(char *out, size_t cap)
{
    unsigned char key[WH_SECRET_KEY_GEN];
    size_t need = PREFIX_LEN + wh_base64_encoded_len(sizeof(key)) + 1;

    assert(out || cap == 0);
    if (cap > 0)
        out[0] = '\0';
    if (cap < need || wh_random_bytes(key, sizeof(key)) != WH_OK)
        return WH_ERR;
    memcpy(out, WH_SECRET_PREFIX, PREFIX_LEN);
    wh_base64_encode(key, sizeof(key), out + PREFIX_LEN);
    OPENSSL_cleanse(key, sizeof(key));
    return WH_OK;
}

void wh_sign_clear_secret(wh_secret *s)
{
    OPENSSL_cleanse(s, sizeof(*s));
}

int wh_sign(const wh_secret *secrets, size_t nsecrets, const char *msg_id,
            int64_t timestamp_s, const void *body, size_t body_len,
            char *out, size_t cap)
{
    unsigned char mac[MAC_LEN];
    char ts[24];

    assert(out || cap == 0);
    assert(body || body_len == 0);
    if (cap > 0)
        out[0] = '\0';
    if (!secrets || nsecrets == 0 || nsecrets > WH_SIGN_MAX_SECRETS ||
        !msg_id || timestamp_s < 0)
        return WH_ERR;
    size_t idlen = strnlen(msg_id, WH_ID_MAX);
    if (!valid_msg_id(msg_id, idlen))
        return WH_ERR;
    if (cap < nsecrets * (WH_SIGNATURE_ONE_LEN + 1))
        return WH_ERR;
    int tslen = snprintf(ts, sizeof(ts), "%lld", (long long)timestamp_s);
    assert(tslen > 0 && (size_t)tslen < sizeof(ts));

    char *p = out;
    for (size_t i = 0; i < nsecrets; i++) {
        assert(secrets[i].len >= WH_SECRET_KEY_MIN &&
               secrets[i].len <= WH_SECRET_KEY_MAX);
        if (signed_content_mac(&secrets[i], msg_id, idlen, ts, (size_t)tslen,
                               body, body_len, mac) != WH_OK)
            goto fail;
        if (i > 0)
            *p++ = ' ';
        memcpy(p, "v1,", 3);
        p += 3;
        p += wh_base64_encode(mac, MAC_LEN, p);
    }
    assert((size_t)(p - out) < cap && *p == '\0');
    OPENSSL_cleanse(mac, sizeof(mac));
    return WH_OK;

fail:
    OPENSSL_cleanse(mac, sizeof(mac));
    out[0] = '\0';
    return WH_ERR;
}

/* Parses a webhook-timestamp value: canonical decimal seconds (no sign,
 * no leading zeros, no spaces), as every Standard Webhooks signer writes. */
static int parse_timestamp(const char *s, int64_t *out)
{
    size_t n = strnlen(s, TS_DIGITS_MAX + 1);
    int64_t v = 0;
    if (n == 0 || n > TS_DIGITS_MAX || (s[0] == '0' && n > 1))
        return WH_ERR;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return WH_ERR;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return WH_OK;
}

int wh_sign_verify(const wh_secret *secret, const char *msg_id,
                   const char *timestamp, const void *body, size_t body_len,
                   const char *signature_header, int64_t now_s,
                   int64_t tolerance_s, char *err, size_t errlen)
{
    unsigned char mac[MAC_LEN];
    char expected[MAC_B64_LEN + 1];
    int64_t ts, age;
    int rc = WH_ERR;

    assert(secret && secret->len >= WH_SECRET_KEY_MIN &&
           secret->len <= WH_SECRET_KEY_MAX);
    assert(body || body_len == 0);
    assert(tolerance_s >= 0);
    if (!msg_id || !*msg_id)
        return wh_errf(err, errlen, "missing header webhook-id");
    if (!timestamp || !*timestamp)
        return wh_errf(err, errlen, "missing header webhook-timestamp");
    if (!signature_header || !*signature_header)
        return wh_errf(err, errlen, "missing header webhook-signature");
    size_t idlen = strnlen(msg_id, WH_ID_MAX);
    if (!valid_msg_id(msg_id, idlen))
        return wh_errf(err, errlen,
                       "invalid message id (must be 1 to %d bytes without "
                       "'.')", WH_ID_MAX - 1);
    if (parse_timestamp(timestamp, &ts) != WH_OK)
        return wh_errf(err, errlen, "invalid timestamp");
    if (__builtin_sub_overflow(now_s, ts, &age))
        return wh_errf(err, errlen, "invalid timestamp");
    if (age > tolerance_s)
        return wh_errf(err, errlen,
                       "timestamp too old (%lld s, tolerance %lld s)",
                       (long long)age, (long long)tolerance_s);
    if (age < -tolerance_s)
        return wh_errf(err, errlen,
                       "timestamp in the future (%lld s, tolerance %lld s)",
                       (long long)-age, (long long)tolerance_s);
    size_t hlen = strnlen(signature_header, WH_SIGN_HEADER_MAX + 1);
    if (hlen > WH_SIGN_HEADER_MAX)
        return wh_errf(err, errlen,
                       "signature header too long (maximum %d bytes)",
                       WH_SIGN_HEADER_MAX);

    if (signed_content_mac(secret, msg_id, idlen, timestamp, strlen(timestamp),
                           body, body_len, mac) != WH_OK) {
        wh_errf(err, errlen, "HMAC-SHA256 failed");
        goto done;
    }
    wh_base64_encode(mac, MAC_LEN, expected);

    const char *p = signature_header, *end = signature_header + hlen;
    while (p < end) {
        const char *sp = memchr(p, ' ', (size_t)(end - p));
        const char *tok_end = sp ? sp : end;
        size_t toklen = (size_t)(tok_end - p);
        if (toklen == 3 + MAC_B64_LEN && memcmp(p, "v1,", 3) == 0 &&
            CRYPTO_memcmp(p + 3, expected, MAC_B64_LEN) == 0) {
            rc = WH_OK;
            goto done;
        }
        p = tok_end + 1;
    }
    wh_errf(err, errlen, "no matching signature");

done:
    OPENSSL_cleanse(mac, sizeof(mac));
    OPENSSL_cleanse(expected, sizeof(expected));
    return rc;
}
