/*
 * sign.h - Standard Webhooks signatures (https://www.standardwebhooks.com/):
 * "whsec_" secrets (HMAC-SHA256, "v1"), "whsk_"/"whpk_" ed25519 key pairs
 * ("v1a"), the webhook-signature header a delivery carries, and its
 * verification.
 *
 * The worker signs every delivery attempt with wh_sign(); webhookctl
 * generates and checks secrets; the development receiver verifies. All
 * functions are thread-safe and may run on any thread.
 */
#ifndef WH_SIGN_H
#define WH_SIGN_H

#include "wh.h"

#include <stddef.h>
#include <stdint.h>

#define WH_SECRET_PREFIX     "whsec_"
#define WH_SECRET_KEY_MIN    24   /* bytes after decoding (spec: 192 bits) */
#define WH_SECRET_KEY_MAX    64   /* bytes after decoding (spec: 512 bits) */
#define WH_SECRET_KEY_GEN    24   /* bytes in a generated secret */
/* "whsec_" + base64 of WH_SECRET_KEY_MAX bytes + NUL: fits any valid secret. */
#define WH_SECRET_TEXT_MAX   (6 + 88 + 1)

#define WH_SIGN_MAX_SECRETS  4    /* current key plus keys being rotated out */
/* One "v1,<base64 of 32 bytes>" entry, without separator or NUL. */
#define WH_SIGNATURE_ONE_LEN (3 + 44)
/* A full webhook-signature value: entries, separating spaces, NUL. */
#define WH_SIGNATURE_MAX     (WH_SIGN_MAX_SECRETS * (WH_SIGNATURE_ONE_LEN + 1))

/* ed25519 ("v1a"): "whsk_" + base64 of the 32-byte private key (seed),
 * "whpk_" + base64 of the 32-byte public key. */
#define WH_SIGNKEY_PREFIX    "whsk_"
#define WH_PUBKEY_PREFIX     "whpk_"
#define WH_ED25519_KEY_LEN   32
#define WH_ED25519_SIG_LEN   64
/* "whsk_"/"whpk_" + base64 of 32 bytes + NUL. */
#define WH_SIGNKEY_TEXT_MAX  (5 + 44 + 1)
/* One "v1a,<base64 of 64 bytes>" entry, without separator or NUL. */
#define WH_SIGNATURE_V1A_LEN (4 + 88)
/* The v1a entries of up to WH_SIGN_MAX_SECRETS keys, spaces, NUL. */
#define WH_SIGNATURE_V1A_MAX (WH_SIGN_MAX_SECRETS * (WH_SIGNATURE_V1A_LEN + 1))
/* A webhook-signature value carrying both kinds, plus NUL. */
#define WH_SIGNATURE_HEADER_MAX (WH_SIGNATURE_MAX + WH_SIGNATURE_V1A_MAX)

#define WH_SIGN_TOLERANCE_S  300  /* the spec's default timestamp tolerance */
/* Longest webhook-signature header wh_sign_verify() accepts. */
#define WH_SIGN_HEADER_MAX   4096

typedef struct {
    unsigned char key[WH_SECRET_KEY_MAX];
    size_t len;
} wh_secret;

/* An ed25519 signing key: the private key and the OpenSSL key object
 * made from it once (signing with it needs no further set-up). Read-only
 * after wh_sign_parse_signkey, so threads may share one. */
struct evp_pkey_st;
typedef struct {
    unsigned char pub[WH_ED25519_KEY_LEN];
    struct evp_pkey_st *pkey;  /* owned */
} wh_signkey;

/* Parses "whsec_<base64>" into out. The key must decode to
 * WH_SECRET_KEY_MIN..WH_SECRET_KEY_MAX bytes. On WH_ERR, err says why
 * (never quoting the secret) and out->len is 0. */
int wh_sign_parse_secret(const char *text, wh_secret *out, char *err,
                         size_t errlen) WH_MUST_CHECK;

/* Writes a new random secret ("whsec_" + base64 of WH_SECRET_KEY_GEN
 * bytes) and its NUL into out. WH_ERR when cap is too small or the system
 * has no randomness. */
int wh_sign_generate_secret(char *out, size_t cap) WH_MUST_CHECK;

/* Overwrites the key material in s. */
void wh_sign_clear_secret(wh_secret *s);

/* Parses "whsk_<base64 of 32 bytes>" into out (release with
 * wh_sign_signkey_cleanup). On WH_ERR err says why, never quoting the
 * key, and out holds nothing to release. */
int wh_sign_parse_signkey(const char *text, wh_signkey *out, char *err,
                          size_t errlen) WH_MUST_CHECK;

/* Writes a new random "whsk_..." private key and its NUL into out (cap
 * of at least WH_SIGNKEY_TEXT_MAX). WH_ERR when cap is too small or the
 * system has no randomness. */
int wh_sign_generate_signkey(char *out, size_t cap) WH_MUST_CHECK;

/* Writes key's public key as "whpk_<base64>" and NUL into out (cap of at
 * least WH_SIGNKEY_TEXT_MAX). */
int wh_sign_public_key(const wh_signkey *key, char *out,
                       size_t cap) WH_MUST_CHECK;

/* Parses "whpk_<base64 of 32 bytes>" into pub. */
int wh_sign_parse_public_key(const char *text,
                             unsigned char pub[WH_ED25519_KEY_LEN], char *err,
                             size_t errlen) WH_MUST_CHECK;

/* Frees key's OpenSSL object and overwrites it. */
void wh_sign_signkey_cleanup(wh_signkey *key);

/* Writes the webhook-signature header value for one delivery attempt into
 * out: "v1,<base64>" per secret, in the given order, space separated, NUL
 * terminated. Each entry is base64(HMAC-SHA256(key, msg_id "." timestamp_s
 * "." body)). body is read in place (may be NULL when body_len is 0).
 * nsecrets must be 1..WH_SIGN_MAX_SECRETS; msg_id must be 1..WH_ID_MAX-1
 * bytes without '.' (the spec forbids it: it would make the signed
 * content ambiguous); timestamp_s must not be negative. cap of
 * WH_SIGNATURE_MAX always suffices. Returns WH_ERR on any violation (out
 * then holds ""). */
int wh_sign(const wh_secret *secrets, size_t nsecrets, const char *msg_id,
            int64_t timestamp_s, const void *body, size_t body_len,
            char *out, size_t cap) WH_MUST_CHECK;

/* Writes the ed25519 entries of a webhook-signature value into out:
 * "v1a,<base64>" per key, in the given order, space separated, NUL
 * terminated; each is the ed25519 signature of msg_id "." timestamp_s "."
 * body. nkeys must be 1..WH_SIGN_MAX_SECRETS, msg_id and timestamp_s as
 * for wh_sign; cap of WH_SIGNATURE_V1A_MAX always suffices. WH_ERR on any
 * violation or when memory for the signed content runs out (out then
 * holds ""). */
int wh_sign_ed25519(const wh_signkey *const *keys, size_t nkeys,
                    const char *msg_id, int64_t timestamp_s, const void *body,
                    size_t body_len, char *out, size_t cap) WH_MUST_CHECK;

/* Checks a received delivery: the webhook-id, webhook-timestamp and
 * webhook-signature header values (NULL or "" when absent) and the raw
 * body. Returns WH_OK when the timestamp is within tolerance_s (>= 0)
 * seconds of now_s in either direction (WH_SIGN_TOLERANCE_S is the spec's
 * default) and any space-separated "v1,<sig>" entry matches secret; entries
 * with other versions are skipped. Otherwise WH_ERR with one of
 * "missing header ...", "invalid message id", "invalid timestamp",
 * "timestamp too old", "timestamp in the future",
 * "signature header too long" or "no matching signature" in err. */
int wh_sign_verify(const wh_secret *secret, const char *msg_id,
                   const char *timestamp, const void *body, size_t body_len,
                   const char *signature_header, int64_t now_s,
                   int64_t tolerance_s, char *err,
                   size_t errlen) WH_MUST_CHECK;

/* wh_sign_verify for "v1a,<sig>" entries: any of them must be a valid
 * ed25519 signature by the public key pub; "v1" and other entries are
 * skipped. The same header and timestamp checks and errors, and
 * "no matching signature" when no v1a entry verifies. */
int wh_sign_verify_ed25519(const unsigned char pub[WH_ED25519_KEY_LEN],
                           const char *msg_id, const char *timestamp,
                           const void *body, size_t body_len,
                           const char *signature_header, int64_t now_s,
                           int64_t tolerance_s, char *err,
                           size_t errlen) WH_MUST_CHECK;

#endif
