/*
 * secretbox.c - AES-256-GCM sealing of endpoint secrets (secretbox.h)
 * through OpenSSL EVP, and parsing of the WEBHOOK_SECRET_KEY text.
 *
 * Runs when endpoints are stored or loaded, not per delivery, so each call
 * makes its own cipher context. Any thread may call in.
 */
#include "secretbox.h"

#include "base64.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#define KEY_LEN     32
#define KEY_B64_LEN 44
#define KEY_HEX_LEN 64
#define KEY_FORM    "32 bytes, base64 or hex encoded"

static int decode_hex_key(const char *s, unsigned char key[KEY_LEN])
{
    for (size_t i = 0; i < KEY_LEN; i++) {
        int hi = wh_hex_value(s[2 * i]), lo = wh_hex_value(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return WH_ERR;
        key[i] = (unsigned char)(hi << 4 | lo);
    }
    return WH_OK;
}

int wh_secretbox_init(wh_secretbox *sb, const char *key_text, char *err,
                      size_t errlen)
{
    unsigned char key[KEY_LEN + 1];          /* base64 of 44 may give 33 */
    size_t keylen = 0;
    int ok;

    assert(sb);
    OPENSSL_cleanse(sb, sizeof(*sb));
    if (!key_text || !*key_text)
        return wh_errf(err, errlen, "WEBHOOK_SECRET_KEY is not set (" KEY_FORM
                                    ")");
    size_t n = strnlen(key_text, KEY_HEX_LEN + 1);
    if (n != KEY_B64_LEN && n != KEY_HEX_LEN)
        return wh_errf(err, errlen,
                       "WEBHOOK_SECRET_KEY must be " KEY_FORM " (got %s%zu "
                       "characters, expected 44 or 64)",
                       n > KEY_HEX_LEN ? "more than " : "",
                       n > KEY_HEX_LEN ? (size_t)KEY_HEX_LEN : n);
    if (n == KEY_B64_LEN)
        ok = wh_base64_decode(key_text, n, key, sizeof(key), &keylen) ==
                 WH_OK && keylen == KEY_LEN;
    else
        ok = decode_hex_key(key_text, key) == WH_OK;
    if (ok)
        memcpy(sb->key, key, KEY_LEN);
    OPENSSL_cleanse(key, sizeof(key));
    return ok ? WH_OK
              : wh_errf(err, errlen, "WEBHOOK_SECRET_KEY must be " KEY_FORM
                                     " (not valid %s of 32 bytes)",
                        n == KEY_B64_LEN ? "base64" : "hex");
}

int wh_secretbox_load(wh_secretbox *sb, const char *key_text,
                      const char *key_file, char *err, size_t errlen)
{
    char buf[1025], e[256];
    bool text = key_text && *key_text, file = key_file && *key_file;
    if (text && file)
        return wh_errf(err, errlen, "set WEBHOOK_SECRET_KEY or "
                       "WEBHOOK_SECRET_KEY_FILE, not both");
    if (!text && !file)
        return wh_errf(err, errlen, "WEBHOOK_SECRET_KEY is not set, nor "
                       "WEBHOOK_SECRET_KEY_FILE (the key that seals "
                       "endpoint secrets)");
    if (text)
        return wh_secretbox_init(sb, key_text, err, errlen);
    FILE *f = fopen(key_file, "r");
    if (!f)
        return wh_errf(err, errlen, "WEBHOOK_SECRET_KEY_FILE %s: %s",
                       key_file, strerror(errno));
    size_t n = fread(buf, 1, sizeof(buf), f);
    bool failed = ferror(f);
    fclose(f);
    int rc;
    if (failed)
        rc = wh_errf(err, errlen, "WEBHOOK_SECRET_KEY_FILE %s: cannot be "
                     "read", key_file);
    else if (n == sizeof(buf))
        rc = wh_errf(err, errlen, "WEBHOOK_SECRET_KEY_FILE %s: longer "
                     "than 1 KiB, not a key", key_file);
    else {
        size_t lo = 0;
        while (n > 0 && isspace((unsigned char)buf[n - 1]))
            n--;
        while (lo < n && isspace((unsigned char)buf[lo]))
            lo++;
        buf[n] = '\0';
        rc = wh_secretbox_init(sb, buf + lo, e, sizeof(e));
        if (rc != WH_OK)
            rc = wh_errf(err, errlen, "WEBHOOK_SECRET_KEY_FILE %s holds no "
                         "valid key: %s", key_file, e);
    }
    OPENSSL_cleanse(buf, sizeof(buf));
    return rc;
}

void wh_secretbox_cleanup(wh_secretbox *sb)
{
    OPENSSL_cleanse(sb, sizeof(*sb));
}

int wh_secretbox_generate_key(char *out, size_t cap)
{
    unsigned char key[KEY_LEN];

    assert(out || cap == 0);
    if (cap > 0)
        out[0] = '\0';
    if (cap < wh_base64_encoded_len(KEY_LEN) + 1 ||
        wh_random_bytes(key, sizeof(key)) != WH_OK)
        return WH_ERR;
    wh_base64_encode(key, sizeof(key), out);
    OPENSSL_cleanse(key, sizeof(key));
    return WH_OK;
}

size_t wh_secretbox_sealed_len(size_t plain_len)
{
    if (plain_len > WH_SECRETBOX_PLAIN_MAX)
        return 0;
    return plain_len + WH_SECRETBOX_OVERHEAD;
}

/* Feeds the authenticated data: the version byte, then the caller's aad. */
static int feed_aad(EVP_CIPHER_CTX *ctx, unsigned char version,
                    const char *aad, size_t aadlen)
{
    int len;
    if (!EVP_CipherUpdate(ctx, NULL, &len, &version, 1))
        return WH_ERR;
    if (aadlen > 0 && !EVP_CipherUpdate(ctx, NULL, &len,
                                        (const unsigned char *)aad,
                                        (int)aadlen))
        return WH_ERR;
    return WH_OK;
}

int wh_secretbox_seal(const wh_secretbox *sb, const char *aad,
                      const void *plain, size_t n, unsigned char *out,
                      size_t cap, size_t *outlen, char *err, size_t errlen)
{
    EVP_CIPHER_CTX *ctx = NULL;
    int len = 0;

    assert(sb && aad && outlen);
    assert(plain || n == 0);
    *outlen = 0;
    size_t aadlen = strnlen(aad, WH_SECRETBOX_AAD_MAX + 1);
    if (aadlen > WH_SECRETBOX_AAD_MAX)
        return wh_errf(err, errlen, "secretbox aad too long (maximum %d bytes)",
                       WH_SECRETBOX_AAD_MAX);
    if (n > WH_SECRETBOX_PLAIN_MAX)
        return wh_errf(err, errlen,
                       "secret too long to seal (%zu bytes, maximum %d)", n,
                       WH_SECRETBOX_PLAIN_MAX);
    size_t total = wh_secretbox_sealed_len(n);
    if (cap < total)
        return wh_errf(err, errlen,
                       "sealed secret needs %zu bytes, buffer has %zu", total,
                       cap);

    unsigned char *nonce = out + 1;
    unsigned char *ct = nonce + WH_SECRETBOX_NONCE_LEN;
    unsigned char *tag = ct + n;
    out[0] = WH_SECRETBOX_VERSION;
    if (wh_random_bytes(nonce, WH_SECRETBOX_NONCE_LEN) != WH_OK) {
        wh_errf(err, errlen, "no randomness for the secretbox nonce");
        goto fail;
    }
    ctx = EVP_CIPHER_CTX_new();
    if (!ctx || !EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) ||
        !EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN,
                             WH_SECRETBOX_NONCE_LEN, NULL) ||
        !EVP_EncryptInit_ex(ctx, NULL, NULL, sb->key, nonce) ||
        feed_aad(ctx, WH_SECRETBOX_VERSION, aad, aadlen) != WH_OK ||
        (n > 0 && !EVP_EncryptUpdate(ctx, ct, &len, plain, (int)n)) ||
        (size_t)len != n || !EVP_EncryptFinal_ex(ctx, ct + len, &len) ||
        len != 0 ||
        !EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, WH_SECRETBOX_TAG_LEN,
                             tag)) {
        wh_errf(err, errlen, "AES-256-GCM encryption failed");
        goto fail;
    }
    EVP_CIPHER_CTX_free(ctx);
    *outlen = total;
    return WH_OK;

fail:
    EVP_CIPHER_CTX_free(ctx);
    OPENSSL_cleanse(out, total);
    return WH_ERR;
}

int wh_secretbox_open(const wh_secretbox *sb, const char *aad,
                      const unsigned char *sealed, size_t n, void *out,
                      size_t cap, size_t *outlen, char *err, size_t errlen)
{
    EVP_CIPHER_CTX *ctx = NULL;
    unsigned char tag[WH_SECRETBOX_TAG_LEN];
    unsigned char fin[WH_SECRETBOX_TAG_LEN];  /* GCM final writes nothing */
    int len = 0;

    assert(sb && aad && outlen);
    assert(sealed || n == 0);
    *outlen = 0;
    size_t aadlen = strnlen(aad, WH_SECRETBOX_AAD_MAX + 1);
    if (aadlen > WH_SECRETBOX_AAD_MAX)
        return wh_errf(err, errlen, "secretbox aad too long (maximum %d bytes)",
                       WH_SECRETBOX_AAD_MAX);
    if (n < WH_SECRETBOX_OVERHEAD)
        return wh_errf(err, errlen,
                       "sealed secret truncated (%zu bytes, minimum %d)", n,
                       WH_SECRETBOX_OVERHEAD);
    if (sealed[0] != WH_SECRETBOX_VERSION)
        return wh_errf(err, errlen,
                       "sealed secret has unknown version %u (expected %d)",
                       sealed[0], WH_SECRETBOX_VERSION);
    size_t plain_len = n - WH_SECRETBOX_OVERHEAD;
    if (plain_len > WH_SECRETBOX_PLAIN_MAX)
        return wh_errf(err, errlen,
                       "sealed secret too long (%zu bytes, maximum %d)", n,
                       WH_SECRETBOX_PLAIN_MAX + WH_SECRETBOX_OVERHEAD);
    if (cap < plain_len)
        return wh_errf(err, errlen,
                       "opened secret needs %zu bytes, buffer has %zu",
                       plain_len, cap);

    const unsigned char *nonce = sealed + 1;
    const unsigned char *ct = nonce + WH_SECRETBOX_NONCE_LEN;
    memcpy(tag, ct + plain_len, sizeof(tag));
    ctx = EVP_CIPHER_CTX_new();
    if (!ctx || !EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) ||
        !EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN,
                             WH_SECRETBOX_NONCE_LEN, NULL) ||
        !EVP_DecryptInit_ex(ctx, NULL, NULL, sb->key, nonce) ||
        feed_aad(ctx, sealed[0], aad, aadlen) != WH_OK ||
        (plain_len > 0 &&
         !EVP_DecryptUpdate(ctx, out, &len, ct, (int)plain_len)) ||
        (size_t)len != plain_len ||
        !EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, WH_SECRETBOX_TAG_LEN,
                             tag)) {
        wh_errf(err, errlen, "AES-256-GCM decryption failed");
        goto fail;
    }
    if (EVP_DecryptFinal_ex(ctx, fin, &len) <= 0) {
        wh_errf(err, errlen,
                "secret failed authentication (wrong WEBHOOK_SECRET_KEY?)");
        goto fail;
    }
    EVP_CIPHER_CTX_free(ctx);
    *outlen = plain_len;
    return WH_OK;

fail:
    EVP_CIPHER_CTX_free(ctx);
    if (plain_len > 0)
        OPENSSL_cleanse(out, plain_len);
    return WH_ERR;
}
