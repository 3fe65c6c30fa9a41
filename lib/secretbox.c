/*
 * secretbox.c - AES-256-GCM sealing of endpoint secrets (secretbox.h)
 * through OpenSSL EVP, key ids, and reading the master key settings
 * (WEBHOOK_SECRET_KEY[_FILE], WEBHOOK_SECRET_KEY_PREVIOUS[_FILE]).
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
#include <openssl/sha.h>

#define KEY_LEN     32
#define KEY_B64_LEN 44
#define KEY_HEX_LEN 64
#define KEY_FORM    "32 bytes, base64 or hex encoded"
/* Longest key file, and longest previous-key file. */
#define KEY_FILE_MAX 1024
/* Hashed before the key to derive its id (secretbox.h). */
#define KEY_ID_LABEL "webhook-secretbox key id"

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

/* Decodes the key text s[0..n) (n > 0, not necessarily NUL-terminated)
 * into key. On WH_ERR err says what is wrong, starting with what (the
 * setting, and which of its keys), never quoting s. */
static int decode_key(const char *what, const char *s, size_t n,
                      unsigned char key[KEY_LEN], char *err, size_t errlen)
{
    unsigned char buf[KEY_LEN + 1];          /* base64 of 44 may give 33 */
    size_t keylen = 0;
    int ok;

    if (n != KEY_B64_LEN && n != KEY_HEX_LEN)
        return wh_errf(err, errlen,
                       "%s must be " KEY_FORM " (got %s%zu characters, "
                       "expected 44 or 64)", what,
                       n > KEY_HEX_LEN ? "more than " : "",
                       n > KEY_HEX_LEN ? (size_t)KEY_HEX_LEN : n);
    if (n == KEY_B64_LEN)
        ok = wh_base64_decode(s, n, buf, sizeof(buf), &keylen) == WH_OK &&
             keylen == KEY_LEN;
    else
        ok = decode_hex_key(s, buf) == WH_OK;
    if (ok)
        memcpy(key, buf, KEY_LEN);
    OPENSSL_cleanse(buf, sizeof(buf));
    return ok ? WH_OK
              : wh_errf(err, errlen, "%s must be " KEY_FORM " (not valid %s "
                        "of 32 bytes)", what,
                        n == KEY_B64_LEN ? "base64" : "hex");
}

/* k->id from k->key: SHA-256 over the label and the key, cut short. */
static void derive_id(wh_secretbox_key *k)
{
    unsigned char in[sizeof(KEY_ID_LABEL) - 1 + KEY_LEN];
    unsigned char md[SHA256_DIGEST_LENGTH];
    memcpy(in, KEY_ID_LABEL, sizeof(KEY_ID_LABEL) - 1);
    memcpy(in + sizeof(KEY_ID_LABEL) - 1, k->key, KEY_LEN);
    SHA256(in, sizeof(in), md);
    memcpy(k->id, md, sizeof(k->id));
    OPENSSL_cleanse(in, sizeof(in));
    OPENSSL_cleanse(md, sizeof(md));
}

static void format_id(const unsigned char id[WH_SECRETBOX_KEY_ID_LEN],
                      char out[WH_SECRETBOX_KEY_ID_TEXT_LEN])
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < WH_SECRETBOX_KEY_ID_LEN; i++) {
        out[2 * i] = digits[id[i] >> 4];
        out[2 * i + 1] = digits[id[i] & 15];
    }
    out[2 * WH_SECRETBOX_KEY_ID_LEN] = '\0';
}

int wh_secretbox_init(wh_secretbox *sb, const char *key_text, char *err,
                      size_t errlen)
{
    assert(sb);
    OPENSSL_cleanse(sb, sizeof(*sb));
    if (!key_text || !*key_text)
        return wh_errf(err, errlen, "WEBHOOK_SECRET_KEY is not set (" KEY_FORM
                                    ")");
    if (decode_key("WEBHOOK_SECRET_KEY", key_text,
                   strnlen(key_text, KEY_HEX_LEN + 1), sb->keys[0].key, err,
                   errlen) != WH_OK)
        return WH_ERR;
    derive_id(&sb->keys[0]);
    sb->nkeys = 1;
    return WH_OK;
}

/* Drops sb's previous keys. */
static void drop_previous(wh_secretbox *sb)
{
    OPENSSL_cleanse(&sb->keys[1], sizeof(sb->keys) - sizeof(sb->keys[0]));
    sb->nkeys = sb->nkeys > 0 ? 1 : 0;
}

int wh_secretbox_add_previous(wh_secretbox *sb, const char *setting,
                              const char *text, char *err, size_t errlen)
{
    static const char seps[] = ", \t\r\n\v\f";
    char what[128];
    size_t pos = 0;

    assert(sb && sb->nkeys == 1 && setting && text);
    for (const char *p = text + strspn(text, seps); *p;
         p += strspn(p, seps)) {
        size_t n = strcspn(p, seps);
        pos++;
        snprintf(what, sizeof(what), "%s: key %zu", setting, pos);
        if (sb->nkeys == 1 + WH_SECRETBOX_PREVIOUS_MAX) {
            wh_errf(err, errlen, "%s: more than %d previous keys", setting,
                    WH_SECRETBOX_PREVIOUS_MAX);
            goto fail;
        }
        wh_secretbox_key *k = &sb->keys[sb->nkeys];
        if (decode_key(what, p, n, k->key, err, errlen) != WH_OK)
            goto fail;
        derive_id(k);
        for (size_t i = 0; i < sb->nkeys; i++) {
            if (memcmp(sb->keys[i].id, k->id, sizeof(k->id)) != 0)
                continue;
            if (CRYPTO_memcmp(sb->keys[i].key, k->key, KEY_LEN) != 0)
                /* 1 in 2^32: open could not tell them apart */
                wh_errf(err, errlen, "%s has the same key id as %s; "
                        "generate another", what,
                        i == 0 ? "the current key" : "an earlier one");
            else if (i == 0)
                wh_errf(err, errlen, "%s is the current key (the previous "
                        "keys are the ones it replaced)", what);
            else
                wh_errf(err, errlen, "%s is key %zu again", what, i);
            goto fail;
        }
        sb->nkeys++;
        p += n;
    }
    return WH_OK;

fail:
    drop_previous(sb);
    return WH_ERR;
}

/* Reads the file path (setting names it in messages) into buf (cap
 * bytes, NUL-terminated, surrounding whitespace cut) and sets *text to
 * its start. WH_ERR when it cannot be read or fills cap - 1 bytes. */
static int read_key_file(const char *setting, const char *path, char *buf,
                         size_t cap, char **text, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return wh_errf(err, errlen, "%s %s: %s", setting, path,
                       strerror(errno));
    size_t n = fread(buf, 1, cap - 1, f);
    bool failed = ferror(f);
    fclose(f);
    if (failed)
        return wh_errf(err, errlen, "%s %s: cannot be read", setting, path);
    if (n == cap - 1)
        return wh_errf(err, errlen, "%s %s: longer than %zu KiB, not a "
                       "key", setting, path, (cap - 2) / 1024);
    size_t lo = 0;
    while (n > 0 && isspace((unsigned char)buf[n - 1]))
        n--;
    while (lo < n && isspace((unsigned char)buf[lo]))
        lo++;
    buf[n] = '\0';
    *text = buf + lo;
    return WH_OK;
}

/* Which of the setting name and its file form name_FILE is given (NULL
 * or "" is not): *which 1 the text, 2 the file, 0 neither. WH_ERR (err)
 * when both are. */
static int text_or_file(const char *name, const char *text, const char *file,
                        int *which, char *err, size_t errlen)
{
    bool t = text && *text, f = file && *file;
    *which = t ? 1 : f ? 2 : 0;
    if (t && f)
        return wh_errf(err, errlen, "set %s or %s_FILE, not both", name,
                       name);
    return WH_OK;
}

/* The current key of src into sb. */
static int load_current(wh_secretbox *sb, const wh_secretbox_source *src,
                        char *err, size_t errlen)
{
    char buf[KEY_FILE_MAX + 2], e[256], *text;
    int which;
    if (text_or_file("WEBHOOK_SECRET_KEY", src->key, src->key_file, &which,
                     err, errlen) != WH_OK)
        return WH_ERR;
    if (which == 0)
        return wh_errf(err, errlen, "WEBHOOK_SECRET_KEY is not set, nor "
                       "WEBHOOK_SECRET_KEY_FILE (the key that seals "
                       "endpoint secrets)");
    if (which == 1)
        return wh_secretbox_init(sb, src->key, err, errlen);
    int rc = read_key_file("WEBHOOK_SECRET_KEY_FILE", src->key_file, buf,
                           sizeof(buf), &text, err, errlen);
    if (rc == WH_OK && wh_secretbox_init(sb, text, e, sizeof(e)) != WH_OK)
        rc = wh_errf(err, errlen, "WEBHOOK_SECRET_KEY_FILE %s holds no "
                     "valid key: %s", src->key_file, e);
    OPENSSL_cleanse(buf, sizeof(buf));
    return rc;
}

/* The previous keys of src, if any, into sb. */
static int load_previous(wh_secretbox *sb, const wh_secretbox_source *src,
                         char *err, size_t errlen)
{
    char buf[KEY_FILE_MAX + 2], setting[1024], *text;
    int which;
    if (text_or_file("WEBHOOK_SECRET_KEY_PREVIOUS", src->previous,
                     src->previous_file, &which, err, errlen) != WH_OK)
        return WH_ERR;
    if (which == 0)
        return WH_OK;
    if (which == 1)
        return wh_secretbox_add_previous(sb, "WEBHOOK_SECRET_KEY_PREVIOUS",
                                         src->previous, err, errlen);
    int rc = read_key_file("WEBHOOK_SECRET_KEY_PREVIOUS_FILE",
                           src->previous_file, buf, sizeof(buf), &text, err,
                           errlen);
    if (rc == WH_OK) {
        snprintf(setting, sizeof(setting),
                 "WEBHOOK_SECRET_KEY_PREVIOUS_FILE %s", src->previous_file);
        rc = wh_secretbox_add_previous(sb, setting, text, err, errlen);
    }
    OPENSSL_cleanse(buf, sizeof(buf));
    return rc;
}

int wh_secretbox_load(wh_secretbox *sb, const wh_secretbox_source *src,
                      char *err, size_t errlen)
{
    assert(sb && src);
    OPENSSL_cleanse(sb, sizeof(*sb));
    if (load_current(sb, src, err, errlen) != WH_OK)
        return WH_ERR;
    if (load_previous(sb, src, err, errlen) != WH_OK) {
        wh_secretbox_cleanup(sb);
        return WH_ERR;
    }
    return WH_OK;
}

void wh_secretbox_current_id(const wh_secretbox *sb,
                             char out[WH_SECRETBOX_KEY_ID_TEXT_LEN])
{
    assert(sb && sb->nkeys > 0);
    format_id(sb->keys[0].id, out);
}

size_t wh_secretbox_previous_count(const wh_secretbox *sb)
{
    return sb->nkeys > 0 ? sb->nkeys - 1 : 0;
}

bool wh_secretbox_is_current(const wh_secretbox *sb,
                             const unsigned char *sealed, size_t n)
{
    return sb->nkeys > 0 && n >= WH_SECRETBOX_OVERHEAD &&
           sealed[0] == WH_SECRETBOX_VERSION &&
           memcmp(sealed + 1, sb->keys[0].id, WH_SECRETBOX_KEY_ID_LEN) == 0;
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

/* Feeds the authenticated data: the header (version byte, and the key id
 * from version 2 on), then the caller's aad. */
static int feed_aad(EVP_CIPHER_CTX *ctx, const unsigned char *header,
                    size_t headerlen, const char *aad, size_t aadlen)
{
    int len;
    if (!EVP_CipherUpdate(ctx, NULL, &len, header, (int)headerlen))
        return WH_ERR;
    if (aadlen > 0 && !EVP_CipherUpdate(ctx, NULL, &len,
                                        (const unsigned char *)aad,
                                        (int)aadlen))
        return WH_ERR;
    return WH_OK;
}

/* The length of aad, or WH_ERR (err) when longer than the maximum. */
static int check_aad(const char *aad, size_t *aadlen, char *err,
                     size_t errlen)
{
    *aadlen = strnlen(aad, WH_SECRETBOX_AAD_MAX + 1);
    if (*aadlen > WH_SECRETBOX_AAD_MAX)
        return wh_errf(err, errlen, "secretbox aad too long (maximum %d bytes)",
                       WH_SECRETBOX_AAD_MAX);
    return WH_OK;
}

int wh_secretbox_seal(const wh_secretbox *sb, const char *aad,
                      const void *plain, size_t n, unsigned char *out,
                      size_t cap, size_t *outlen, char *err, size_t errlen)
{
    EVP_CIPHER_CTX *ctx = NULL;
    int len = 0;
    size_t aadlen;

    assert(sb && sb->nkeys > 0 && aad && outlen);
    assert(plain || n == 0);
    *outlen = 0;
    if (check_aad(aad, &aadlen, err, errlen) != WH_OK)
        return WH_ERR;
    if (n > WH_SECRETBOX_PLAIN_MAX)
        return wh_errf(err, errlen,
                       "secret too long to seal (%zu bytes, maximum %d)", n,
                       WH_SECRETBOX_PLAIN_MAX);
    size_t total = wh_secretbox_sealed_len(n);
    if (cap < total)
        return wh_errf(err, errlen,
                       "sealed secret needs %zu bytes, buffer has %zu", total,
                       cap);

    const wh_secretbox_key *k = &sb->keys[0];
    unsigned char *nonce = out + 1 + WH_SECRETBOX_KEY_ID_LEN;
    unsigned char *ct = nonce + WH_SECRETBOX_NONCE_LEN;
    unsigned char *tag = ct + n;
    out[0] = WH_SECRETBOX_VERSION;
    memcpy(out + 1, k->id, WH_SECRETBOX_KEY_ID_LEN);
    if (wh_random_bytes(nonce, WH_SECRETBOX_NONCE_LEN) != WH_OK) {
        wh_errf(err, errlen, "no randomness for the secretbox nonce");
        goto fail;
    }
    ctx = EVP_CIPHER_CTX_new();
    if (!ctx || !EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) ||
        !EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN,
                             WH_SECRETBOX_NONCE_LEN, NULL) ||
        !EVP_EncryptInit_ex(ctx, NULL, NULL, k->key, nonce) ||
        feed_aad(ctx, out, 1 + WH_SECRETBOX_KEY_ID_LEN, aad, aadlen) !=
            WH_OK ||
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

/* One sealed value taken apart (pointers into it). */
typedef struct {
    const unsigned char *header; /* authenticated: version [| key id] */
    size_t headerlen;
    const unsigned char *nonce, *ct, *tag;
    size_t plain_len;
} parts;

/* Decrypts p under key into out (p->plain_len bytes). WH_DECLINED when it
 * fails authentication, WH_ERR (err) when OpenSSL fails; out may then
 * hold garbage, the caller cleanses it. */
static int gcm_open(const unsigned char *key, const parts *p, const char *aad,
                    size_t aadlen, void *out, char *err, size_t errlen)
{
    unsigned char tag[WH_SECRETBOX_TAG_LEN];
    unsigned char fin[WH_SECRETBOX_TAG_LEN];  /* GCM final writes nothing */
    int len = 0, rc = WH_OK;

    memcpy(tag, p->tag, sizeof(tag));
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (!ctx || !EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) ||
        !EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN,
                             WH_SECRETBOX_NONCE_LEN, NULL) ||
        !EVP_DecryptInit_ex(ctx, NULL, NULL, key, p->nonce) ||
        feed_aad(ctx, p->header, p->headerlen, aad, aadlen) != WH_OK ||
        (p->plain_len > 0 &&
         !EVP_DecryptUpdate(ctx, out, &len, p->ct, (int)p->plain_len)) ||
        (size_t)len != p->plain_len ||
        !EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, WH_SECRETBOX_TAG_LEN,
                             tag))
        rc = wh_errf(err, errlen, "AES-256-GCM decryption failed");
    else if (EVP_DecryptFinal_ex(ctx, fin, &len) <= 0)
        rc = WH_DECLINED;
    EVP_CIPHER_CTX_free(ctx);
    return rc;
}

int wh_secretbox_open(const wh_secretbox *sb, const char *aad,
                      const unsigned char *sealed, size_t n, void *out,
                      size_t cap, size_t *outlen, char *err, size_t errlen)
{
    size_t aadlen;
    int rc = WH_DECLINED;

    assert(sb && sb->nkeys > 0 && aad && outlen);
    assert(sealed || n == 0);
    *outlen = 0;
    if (check_aad(aad, &aadlen, err, errlen) != WH_OK)
        return WH_ERR;
    if (n > 0 && sealed[0] != WH_SECRETBOX_VERSION &&
        sealed[0] != WH_SECRETBOX_VERSION_1)
        return wh_errf(err, errlen,
                       "sealed secret has unknown version %u (expected %d "
                       "or %d)", sealed[0], WH_SECRETBOX_VERSION_1,
                       WH_SECRETBOX_VERSION);
    bool v1 = n > 0 && sealed[0] == WH_SECRETBOX_VERSION_1;
    size_t overhead = v1 ? WH_SECRETBOX_V1_OVERHEAD : WH_SECRETBOX_OVERHEAD;
    if (n < overhead)
        return wh_errf(err, errlen,
                       "sealed secret truncated (%zu bytes, minimum %zu)", n,
                       overhead);
    parts p = {.header = sealed, .headerlen = v1 ? 1 : 1 +
                                                       WH_SECRETBOX_KEY_ID_LEN,
               .plain_len = n - overhead};
    if (p.plain_len > WH_SECRETBOX_PLAIN_MAX)
        return wh_errf(err, errlen,
                       "sealed secret too long (%zu bytes, maximum %zu)", n,
                       WH_SECRETBOX_PLAIN_MAX + overhead);
    if (cap < p.plain_len)
        return wh_errf(err, errlen,
                       "opened secret needs %zu bytes, buffer has %zu",
                       p.plain_len, cap);
    p.nonce = sealed + p.headerlen;
    p.ct = p.nonce + WH_SECRETBOX_NONCE_LEN;
    p.tag = p.ct + p.plain_len;

    if (v1) {
        /* no key id: the key that authenticates it is the one */
        for (size_t i = 0; i < sb->nkeys && rc == WH_DECLINED; i++) {
            rc = gcm_open(sb->keys[i].key, &p, aad, aadlen, out, err, errlen);
            if (rc == WH_DECLINED && p.plain_len > 0)
                OPENSSL_cleanse(out, p.plain_len);
        }
        if (rc == WH_DECLINED)
            wh_errf(err, errlen,
                    "secret failed authentication (wrong WEBHOOK_SECRET_KEY?)");
    } else {
        const wh_secretbox_key *k = NULL;
        for (size_t i = 0; i < sb->nkeys && !k; i++)
            if (memcmp(sb->keys[i].id, sealed + 1,
                       WH_SECRETBOX_KEY_ID_LEN) == 0)
                k = &sb->keys[i];
        if (!k) {
            char id[WH_SECRETBOX_KEY_ID_TEXT_LEN];
            format_id(sealed + 1, id);
            return wh_errf(err, errlen, "sealed under key id %s, which is "
                           "not configured", id);
        }
        rc = gcm_open(k->key, &p, aad, aadlen, out, err, errlen);
        if (rc == WH_DECLINED)
            wh_errf(err, errlen, "secret failed authentication (tampered "
                    "with, or sealed for another row)");
    }
    if (rc != WH_OK) {
        if (p.plain_len > 0)
            OPENSSL_cleanse(out, p.plain_len);
        return WH_ERR;
    }
    *outlen = p.plain_len;
    return WH_OK;
}
