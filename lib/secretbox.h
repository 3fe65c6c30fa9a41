/*
 * secretbox.h - endpoint signing secrets encrypted at rest: AES-256-GCM
 * under a key taken from the WEBHOOK_SECRET_KEY environment variable.
 *
 * Used wherever endpoint rows are written (webhookctl) or loaded (worker).
 * A wh_secretbox is read-only after init, so threads may share one.
 *
 * Sealed format: version byte (1) | 12-byte random nonce | ciphertext |
 * 16-byte tag. The version byte and the caller's aad (the endpoint id) are
 * authenticated, so a sealed secret cannot be moved to another row.
 */
#ifndef WH_SECRETBOX_H
#define WH_SECRETBOX_H

#include "wh.h"

#include <stddef.h>

#define WH_SECRETBOX_VERSION      1
#define WH_SECRETBOX_NONCE_LEN    12
#define WH_SECRETBOX_TAG_LEN      16
#define WH_SECRETBOX_OVERHEAD \
    (1 + WH_SECRETBOX_NONCE_LEN + WH_SECRETBOX_TAG_LEN)
#define WH_SECRETBOX_PLAIN_MAX    4096   /* largest secret sealed or opened */
#define WH_SECRETBOX_AAD_MAX      256    /* longest aad, without NUL */
/* Key text as generated: base64 of 32 bytes, plus NUL. */
#define WH_SECRETBOX_KEY_TEXT_LEN (44 + 1)

typedef struct {
    unsigned char key[32];
} wh_secretbox;

/* Loads the key from key_text: base64 (44 characters) or hex (64
 * characters) of 32 bytes. On WH_ERR err says what is wrong, never
 * quoting the text, and sb holds no key. */
int wh_secretbox_init(wh_secretbox *sb, const char *key_text, char *err,
                      size_t errlen) WH_MUST_CHECK;

/* Loads the key from key_text or from the file key_file names (its text,
 * surrounding whitespace ignored, at most 1 KiB): exactly one of them
 * must be given (NULL or "" is not given). A key in a file stays out of
 * the process's command line and environment. On WH_ERR err says what is
 * wrong (naming the setting, never quoting the key). */
int wh_secretbox_load(wh_secretbox *sb, const char *key_text,
                      const char *key_file, char *err,
                      size_t errlen) WH_MUST_CHECK;

/* Overwrites the key in sb. */
void wh_secretbox_cleanup(wh_secretbox *sb);

/* Writes base64 of 32 random bytes plus NUL into out (cap of at least
 * WH_SECRETBOX_KEY_TEXT_LEN). WH_ERR when cap is too small or the system
 * has no randomness. */
int wh_secretbox_generate_key(char *out, size_t cap) WH_MUST_CHECK;

/* Size of the sealed form of plain_len bytes; 0 when plain_len exceeds
 * WH_SECRETBOX_PLAIN_MAX. */
size_t wh_secretbox_sealed_len(size_t plain_len);

/* Encrypts plain[0..n) bound to aad (NUL-terminated, at most
 * WH_SECRETBOX_AAD_MAX bytes) into out (cap bytes) and sets *outlen to
 * wh_secretbox_sealed_len(n). Uses a fresh random nonce each call. */
int wh_secretbox_seal(const wh_secretbox *sb, const char *aad,
                      const void *plain, size_t n, unsigned char *out,
                      size_t cap, size_t *outlen, char *err,
                      size_t errlen) WH_MUST_CHECK;

/* Decrypts and authenticates sealed[0..n) for aad into out (cap bytes) and
 * sets *outlen to the plaintext length (n - WH_SECRETBOX_OVERHEAD). On
 * WH_ERR nothing of the plaintext is left in out; err says whether the
 * input was truncated, of an unknown version, too large for cap, or failed
 * authentication (wrong key, wrong aad or tampered bytes). */
int wh_secretbox_open(const wh_secretbox *sb, const char *aad,
                      const unsigned char *sealed, size_t n, void *out,
                      size_t cap, size_t *outlen, char *err,
                      size_t errlen) WH_MUST_CHECK;

#endif
