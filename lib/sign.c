/*
 * sign.c - Standard Webhooks signing and verification: secret and key
 * parsing and generation, the webhook-signature header ("v1" HMAC-SHA256
 * and "v1a" ed25519 entries), constant-time checks.
 *
 * Called by the worker for every delivery attempt, so HMAC signing reads
 * the body in place and keeps one HMAC context per thread (created on
 * first use, freed when the thread exits) instead of building one per
 * call. ed25519 signs the message in one piece, so it copies id, timestamp
 * and body into one block; its key object is made once per key, when the
 * key is parsed. Any thread may call in.
 */
#include "sign.h"

#include "base64.h"

#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
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

/* The checks every verification starts with: the three headers present,
 * the id and timestamp valid, the timestamp within tolerance, the header
 * not too long. On WH_OK *idlen and *hlen hold the id's and header's
 * lengths. */
static int check_headers(const char *msg_id, const char *timestamp,
                         const char *signature_header, int64_t now_s,
                         int64_t tolerance_s, size_t *idlen, size_t *hlen,
                         char *err, size_t errlen)
{
    int64_t ts, age;
    assert(tolerance_s >= 0);
    if (!msg_id || !*msg_id)
        return wh_errf(err, errlen, "missing header webhook-id");
    if (!timestamp || !*timestamp)
        return wh_errf(err, errlen, "missing header webhook-timestamp");
    if (!signature_header || !*signature_header)
        return wh_errf(err, errlen, "missing header webhook-signature");
    *idlen = strnlen(msg_id, WH_ID_MAX);
    if (!valid_msg_id(msg_id, *idlen))
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
    *hlen = strnlen(signature_header, WH_SIGN_HEADER_MAX + 1);
    if (*hlen > WH_SIGN_HEADER_MAX)
        return wh_errf(err, errlen,
                       "signature header too long (maximum %d bytes)",
                       WH_SIGN_HEADER_MAX);
    return WH_OK;
}

int wh_sign_verify(const wh_secret *secret, const char *msg_id,
                   const char *timestamp, const void *body, size_t body_len,
                   const char *signature_header, int64_t now_s,
                   int64_t tolerance_s, char *err, size_t errlen)
{
    unsigned char mac[MAC_LEN];
    char expected[MAC_B64_LEN + 1];
    size_t idlen, hlen;
    int rc = WH_ERR;

    assert(secret && secret->len >= WH_SECRET_KEY_MIN &&
           secret->len <= WH_SECRET_KEY_MAX);
    assert(body || body_len == 0);
    if (check_headers(msg_id, timestamp, signature_header, now_s,
                      tolerance_s, &idlen, &hlen, err, errlen) != WH_OK)
        return WH_ERR;
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

/* ---- ed25519 ("v1a") ---------------------------------------------------- */

#define ED_PREFIX_LEN (sizeof(WH_SIGNKEY_PREFIX) - 1)
#define ED_KEY_B64    44                     /* base64 of 32 bytes */
#define ED_SIG_B64    88                     /* base64 of 64 bytes */

/* Decodes "<prefix><base64 of 32 bytes>" into key. */
static int parse_ed_text(const char *text, const char *prefix,
                         const char *what, unsigned char key[WH_ED25519_KEY_LEN],
                         char *err, size_t errlen)
{
    unsigned char buf[ED_KEY_B64];
    size_t n = 0;
    if (!text || !*text)
        return wh_errf(err, errlen, "%s is empty", what);
    if (strncmp(text, prefix, ED_PREFIX_LEN) != 0)
        return wh_errf(err, errlen, "%s must start with \"%s\"", what, prefix);
    const char *b64 = text + ED_PREFIX_LEN;
    size_t len = strnlen(b64, ED_KEY_B64 + 1);
    int rc = WH_OK;
    if (len != ED_KEY_B64 ||
        wh_base64_decode(b64, len, buf, sizeof(buf), &n) != WH_OK ||
        n != WH_ED25519_KEY_LEN)
        rc = wh_errf(err, errlen, "%s must be \"%s\" and the base64 of %d "
                                  "bytes", what, prefix, WH_ED25519_KEY_LEN);
    else
        memcpy(key, buf, WH_ED25519_KEY_LEN);
    OPENSSL_cleanse(buf, sizeof(buf));
    return rc;
}

int wh_sign_parse_signkey(const char *text, wh_signkey *out, char *err,
                          size_t errlen)
{
    unsigned char seed[WH_ED25519_KEY_LEN];
    size_t publen = WH_ED25519_KEY_LEN;
    assert(out);
    memset(out, 0, sizeof(*out));
    if (parse_ed_text(text, WH_SIGNKEY_PREFIX, "signing key", seed, err,
                      errlen) != WH_OK)
        return WH_ERR;
    out->pkey = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed,
                                             sizeof(seed));
    OPENSSL_cleanse(seed, sizeof(seed));
    if (!out->pkey ||
        !EVP_PKEY_get_raw_public_key(out->pkey, out->pub, &publen) ||
        publen != WH_ED25519_KEY_LEN) {
        wh_sign_signkey_cleanup(out);
        return wh_errf(err, errlen, "OpenSSL cannot make an ed25519 key");
    }
    return WH_OK;
}

int wh_sign_generate_signkey(char *out, size_t cap)
{
    unsigned char seed[WH_ED25519_KEY_LEN];
    assert(out || cap == 0);
    if (cap > 0)
        out[0] = '\0';
    if (cap < WH_SIGNKEY_TEXT_MAX ||
        wh_random_bytes(seed, sizeof(seed)) != WH_OK)
        return WH_ERR;
    memcpy(out, WH_SIGNKEY_PREFIX, ED_PREFIX_LEN);
    wh_base64_encode(seed, sizeof(seed), out + ED_PREFIX_LEN);
    OPENSSL_cleanse(seed, sizeof(seed));
    return WH_OK;
}

int wh_sign_public_key(const wh_signkey *key, char *out, size_t cap)
{
    assert(key && out);
    if (cap < WH_SIGNKEY_TEXT_MAX) {
        if (cap > 0)
            out[0] = '\0';
        return WH_ERR;
    }
    memcpy(out, WH_PUBKEY_PREFIX, ED_PREFIX_LEN);
    wh_base64_encode(key->pub, WH_ED25519_KEY_LEN, out + ED_PREFIX_LEN);
    return WH_OK;
}

int wh_sign_parse_public_key(const char *text,
                             unsigned char pub[WH_ED25519_KEY_LEN], char *err,
                             size_t errlen)
{
    return parse_ed_text(text, WH_PUBKEY_PREFIX, "public key", pub, err,
                         errlen);
}

void wh_sign_signkey_cleanup(wh_signkey *key)
{
    if (!key)
        return;
    EVP_PKEY_free(key->pkey);
    OPENSSL_cleanse(key, sizeof(*key));
}

/* The signed content, id "." ts "." body, in one heap block (ed25519
 * signs a message in one piece). NULL when out of memory. */
static unsigned char *signed_content(const char *id, size_t idlen,
                                     const char *ts, size_t tslen,
                                     const void *body, size_t body_len,
                                     size_t *len)
{
    *len = idlen + 1 + tslen + 1 + body_len;
    unsigned char *m = malloc(*len);
    if (!m)
        return NULL;
    memcpy(m, id, idlen);
    m[idlen] = '.';
    memcpy(m + idlen + 1, ts, tslen);
    m[idlen + 1 + tslen] = '.';
    if (body_len)
        memcpy(m + idlen + tslen + 2, body, body_len);
    return m;
}

/* sig = ed25519 signature of msg by pkey. */
static int ed_sign(struct evp_pkey_st *pkey, const unsigned char *msg,
                   size_t len, unsigned char sig[WH_ED25519_SIG_LEN])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    size_t siglen = WH_ED25519_SIG_LEN;
    int ok = ctx && EVP_DigestSignInit(ctx, NULL, NULL, NULL, pkey) == 1 &&
             EVP_DigestSign(ctx, sig, &siglen, msg, len) == 1 &&
             siglen == WH_ED25519_SIG_LEN;
    EVP_MD_CTX_free(ctx);
    return ok ? WH_OK : WH_ERR;
}

int wh_sign_ed25519(const wh_signkey *const *keys, size_t nkeys,
                    const char *msg_id, int64_t timestamp_s, const void *body,
                    size_t body_len, char *out, size_t cap)
{
    unsigned char sig[WH_ED25519_SIG_LEN];
    char ts[24];
    size_t len;

    assert(out || cap == 0);
    assert(body || body_len == 0);
    if (cap > 0)
        out[0] = '\0';
    if (!keys || nkeys == 0 || nkeys > WH_SIGN_MAX_SECRETS || !msg_id ||
        timestamp_s < 0 || cap < nkeys * (WH_SIGNATURE_V1A_LEN + 1))
        return WH_ERR;
    size_t idlen = strnlen(msg_id, WH_ID_MAX);
    if (!valid_msg_id(msg_id, idlen))
        return WH_ERR;
    int tslen = snprintf(ts, sizeof(ts), "%lld", (long long)timestamp_s);
    assert(tslen > 0 && (size_t)tslen < sizeof(ts));
    unsigned char *msg = signed_content(msg_id, idlen, ts, (size_t)tslen,
                                        body, body_len, &len);
    if (!msg)
        return WH_ERR;
    char *p = out;
    int rc = WH_OK;
    for (size_t i = 0; i < nkeys && rc == WH_OK; i++) {
        assert(keys[i] && keys[i]->pkey);
        if ((rc = ed_sign(keys[i]->pkey, msg, len, sig)) != WH_OK)
            break;
        if (i > 0)
            *p++ = ' ';
        memcpy(p, "v1a,", 4);
        p += 4;
        p += wh_base64_encode(sig, sizeof(sig), p);
    }
    free(msg);
    if (rc != WH_OK)
        out[0] = '\0';
    assert(rc != WH_OK || ((size_t)(p - out) < cap && *p == '\0'));
    return rc;
}

int wh_sign_verify_ed25519(const unsigned char pub[WH_ED25519_KEY_LEN],
                           const char *msg_id, const char *timestamp,
                           const void *body, size_t body_len,
                           const char *signature_header, int64_t now_s,
                           int64_t tolerance_s, char *err, size_t errlen)
{
    unsigned char sig[ED_SIG_B64];           /* decoded <= 66 bytes */
    size_t idlen, hlen, len, siglen;

    assert(pub);
    assert(body || body_len == 0);
    if (check_headers(msg_id, timestamp, signature_header, now_s,
                      tolerance_s, &idlen, &hlen, err, errlen) != WH_OK)
        return WH_ERR;
    EVP_PKEY *pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pub,
                                                 WH_ED25519_KEY_LEN);
    unsigned char *msg = signed_content(msg_id, idlen, timestamp,
                                        strlen(timestamp), body, body_len,
                                        &len);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int rc = WH_ERR;
    if (!pkey || !msg || !ctx) {
        wh_errf(err, errlen, "ed25519 verification cannot start");
        goto done;
    }
    const char *p = signature_header, *end = signature_header + hlen;
    while (p < end && rc != WH_OK) {
        const char *sp = memchr(p, ' ', (size_t)(end - p));
        const char *tok_end = sp ? sp : end;
        size_t toklen = (size_t)(tok_end - p);
        if (toklen == 4 + ED_SIG_B64 && memcmp(p, "v1a,", 4) == 0 &&
            wh_base64_decode(p + 4, ED_SIG_B64, sig, sizeof(sig), &siglen) ==
                WH_OK &&
            siglen == WH_ED25519_SIG_LEN &&
            EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, pkey) == 1 &&
            EVP_DigestVerify(ctx, sig, siglen, msg, len) == 1)
            rc = WH_OK;
        p = tok_end + 1;
    }
    if (rc != WH_OK)
        wh_errf(err, errlen, "no matching signature");
done:
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(pkey);
    free(msg);
    return rc;
}
