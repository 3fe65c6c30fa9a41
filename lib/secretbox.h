/*
 * secretbox.h - endpoint signing secrets encrypted at rest: AES-256-GCM
 * under the master key (WEBHOOK_SECRET_KEY or WEBHOOK_SECRET_KEY_FILE),
 * with up to WH_SECRETBOX_PREVIOUS_MAX previous keys that still open what
 * they sealed (WEBHOOK_SECRET_KEY_PREVIOUS[_FILE]), so the key can rotate.
 *
 * Used wherever endpoint rows are written (webhookctl) or loaded (worker).
 * A wh_secretbox is read-only after wh_secretbox_load (or _init), so
 * threads may share one.
 *
 * Sealed format, version 2 (what wh_secretbox_seal writes, always under
 * the current key): version byte (2) | 4-byte key id | 12-byte random
 * nonce | ciphertext | 16-byte tag. The key id is the first 4 bytes of
 * SHA-256 over "webhook-secretbox key id" and the key: it names the key
 * without revealing it. The version byte, the key id and the caller's aad
 * (the endpoint id) are authenticated, so a sealed secret cannot be moved
 * to another row nor relabelled with another key id.
 * Version 1 (written before key ids; opened, never written): version byte
 * (1) | nonce | ciphertext | tag, the version byte and aad authenticated;
 * opening tries each configured key.
 */
#ifndef WH_SECRETBOX_H
#define WH_SECRETBOX_H

#include "wh.h"

#include <stdbool.h>
#include <stddef.h>

#define WH_SECRETBOX_VERSION      2      /* the version seal writes */
#define WH_SECRETBOX_VERSION_1    1      /* no key id: opened, not written */
#define WH_SECRETBOX_KEY_ID_LEN   4
#define WH_SECRETBOX_NONCE_LEN    12
#define WH_SECRETBOX_TAG_LEN      16
/* Bytes a version 2 seal adds to the plaintext. */
#define WH_SECRETBOX_OVERHEAD \
    (1 + WH_SECRETBOX_KEY_ID_LEN + WH_SECRETBOX_NONCE_LEN + \
     WH_SECRETBOX_TAG_LEN)
/* Bytes a version 1 seal added. */
#define WH_SECRETBOX_V1_OVERHEAD \
    (1 + WH_SECRETBOX_NONCE_LEN + WH_SECRETBOX_TAG_LEN)
#define WH_SECRETBOX_PLAIN_MAX    4096   /* largest secret sealed or opened */
#define WH_SECRETBOX_AAD_MAX      256    /* longest aad, without NUL */
/* Key text as generated: base64 of 32 bytes, plus NUL. */
#define WH_SECRETBOX_KEY_TEXT_LEN (44 + 1)
/* Most previous keys a secretbox holds besides the current one. */
#define WH_SECRETBOX_PREVIOUS_MAX 3
/* A key id as text: 8 lowercase hex digits, plus NUL. */
#define WH_SECRETBOX_KEY_ID_TEXT_LEN (2 * WH_SECRETBOX_KEY_ID_LEN + 1)

typedef struct {
    unsigned char key[32];
    unsigned char id[WH_SECRETBOX_KEY_ID_LEN];
} wh_secretbox_key;

typedef struct {
    /* keys[0] is the current key (seals and opens); keys[1..nkeys) the
     * previous ones (open only), none equal to another */
    wh_secretbox_key keys[1 + WH_SECRETBOX_PREVIOUS_MAX];
    size_t nkeys;
} wh_secretbox;

/* Where the keys come from: the settings of the same names. NULL or ""
 * is not given. */
typedef struct {
    const char *key;           /* WEBHOOK_SECRET_KEY */
    const char *key_file;      /* WEBHOOK_SECRET_KEY_FILE */
    const char *previous;      /* WEBHOOK_SECRET_KEY_PREVIOUS */
    const char *previous_file; /* WEBHOOK_SECRET_KEY_PREVIOUS_FILE */
} wh_secretbox_source;

/* Loads the current key from key_text: base64 (44 characters) or hex (64
 * characters) of 32 bytes; no previous keys. On WH_ERR err says what is
 * wrong, never quoting the text, and sb holds no key. */
int wh_secretbox_init(wh_secretbox *sb, const char *key_text, char *err,
                      size_t errlen) WH_MUST_CHECK;

/* Adds the previous keys listed in text (each as for wh_secretbox_init,
 * separated by commas or whitespace; empty entries are skipped) to sb,
 * which holds its current key. setting names the source in messages.
 * WH_ERR, sb left without any previous key, when an entry is not a key
 * (err names setting and the entry's position among the keys, 1-based,
 * never its text), when a key equals the current key or an earlier one,
 * or when the list has more than WH_SECRETBOX_PREVIOUS_MAX keys. */
int wh_secretbox_add_previous(wh_secretbox *sb, const char *setting,
                              const char *text, char *err,
                              size_t errlen) WH_MUST_CHECK;

/* Loads the keys of src. The current key: from src->key or from the file
 * src->key_file names (its text, surrounding whitespace ignored, at most
 * 1 KiB); exactly one of them must be given. The previous keys
 * (optional): from src->previous or from the file src->previous_file
 * names (one key per line, at most 1 KiB), not both; see
 * wh_secretbox_add_previous. A key in a file stays out of the process's
 * command line and environment. On WH_ERR err says what is wrong (naming
 * the setting, never quoting a key) and sb holds no key. */
int wh_secretbox_load(wh_secretbox *sb, const wh_secretbox_source *src,
                      char *err, size_t errlen) WH_MUST_CHECK;

/* Overwrites the keys in sb. */
void wh_secretbox_cleanup(wh_secretbox *sb);

/* The current key's id as text into out. */
void wh_secretbox_current_id(const wh_secretbox *sb,
                             char out[WH_SECRETBOX_KEY_ID_TEXT_LEN]);

/* How many previous keys sb holds. */
size_t wh_secretbox_previous_count(const wh_secretbox *sb);

/* True when sealed[0..n) is a version 2 value under sb's current key (by
 * its header: it is not authenticated here; wh_secretbox_open does). */
bool wh_secretbox_is_current(const wh_secretbox *sb,
                             const unsigned char *sealed, size_t n);

/* Writes base64 of 32 random bytes plus NUL into out (cap of at least
 * WH_SECRETBOX_KEY_TEXT_LEN). WH_ERR when cap is too small or the system
 * has no randomness. */
int wh_secretbox_generate_key(char *out, size_t cap) WH_MUST_CHECK;

/* Size of the sealed form of plain_len bytes; 0 when plain_len exceeds
 * WH_SECRETBOX_PLAIN_MAX. */
size_t wh_secretbox_sealed_len(size_t plain_len);

/* Encrypts plain[0..n) under the current key, bound to aad
 * (NUL-terminated, at most WH_SECRETBOX_AAD_MAX bytes), into out (cap
 * bytes) as version 2 and sets *outlen to wh_secretbox_sealed_len(n).
 * Uses a fresh random nonce each call. */
int wh_secretbox_seal(const wh_secretbox *sb, const char *aad,
                      const void *plain, size_t n, unsigned char *out,
                      size_t cap, size_t *outlen, char *err,
                      size_t errlen) WH_MUST_CHECK;

/* Decrypts and authenticates sealed[0..n) for aad into out (cap bytes) and
 * sets *outlen to the plaintext length. Version 2 opens with the
 * configured key (current or previous) whose id it carries; version 1
 * with whichever configured key authenticates it. On WH_ERR nothing of
 * the plaintext is left in out; err says whether the input was truncated,
 * of an unknown version, too large for cap, sealed under a key id that is
 * not configured ("sealed under key id 1a2b3c4d, which is not
 * configured"), or failed authentication (wrong aad or tampered bytes;
 * for version 1 also a wrong key). */
int wh_secretbox_open(const wh_secretbox *sb, const char *aad,
                      const unsigned char *sealed, size_t n, void *out,
                      size_t cap, size_t *outlen, char *err,
                      size_t errlen) WH_MUST_CHECK;

#endif
