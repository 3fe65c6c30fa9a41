/*
 * endpoints.h - endpoints as stored in webhooks.endpoints: create, load,
 * enable/disable, re-set secrets. Seals and opens secrets with the
 * secretbox, so rows read here carry usable signing keys, or say why they
 * cannot be used (wh_endpoint.unreadable). Used by webhookctl and by the
 * worker's endpoint cache (one thread per wh_db).
 */
#ifndef WH_ENDPOINTS_H
#define WH_ENDPOINTS_H

#include <stdbool.h>

#include "db.h"
#include "retry.h"
#include "secretbox.h"
#include "sign.h"
#include "wh.h"

#define WH_ENDPOINT_ID_MAX 44

/* Which signatures an endpoint's deliveries carry (webhooks.endpoints.
 * signature): bit flags, so WH_SIGNATURE_BOTH has both bits. */
typedef enum {
    WH_SIGNATURE_HMAC = 1,      /* "v1", whsec_ secrets */
    WH_SIGNATURE_ED25519 = 2,   /* "v1a", whsk_ keys */
    WH_SIGNATURE_BOTH = 3,
} wh_signature_kind;

/* "hmac", "ed25519" or "both". */
const char *wh_signature_name(wh_signature_kind kind);
/* Parses one of those names; WH_ERR for anything else. */
int wh_signature_parse(const char *text,
                       wh_signature_kind *out) WH_MUST_CHECK;

typedef struct wh_endpoint {
    char id[WH_ENDPOINT_ID_MAX];
    char app[WH_ID_MAX + 1];
    char *url;                 /* owned */
    char *event_types;         /* owned; comma-separated patterns */
    char *description;         /* owned */
    wh_secret secrets[WH_SIGN_MAX_SECRETS]; /* the current one first, then
                                               older ones being rotated out */
    int64_t secret_expires_s[WH_SIGN_MAX_SECRETS]; /* unix time after which
                                               it signs no more; 0: never */
    size_t nsecrets;
    wh_signature_kind signature;
    wh_signkey signkeys[WH_SIGN_MAX_SECRETS]; /* ed25519, as secrets */
    int64_t signkey_expires_s[WH_SIGN_MAX_SECRETS];
    size_t nsignkeys;
    /* TLS client identity (mTLS) and CA bundle, PEM, owned; NULL: none.
     * The key is only there when the row was read with a secretbox. */
    char *tls_cert;
    size_t tls_cert_len;
    char *tls_key;
    size_t tls_key_len;
    char *tls_ca;
    size_t tls_ca_len;
    bool has_tls_cert;         /* a client certificate is stored */
    bool ordered;
    int max_in_flight;
    int rate_limit_per_s;      /* 0 = unlimited */
    int64_t timeout_ms;        /* 0 = worker default */
    bool disabled;
    char *disabled_reason;     /* owned, may be NULL */
    char created_at[40];       /* RFC 3339, UTC */
    char updated_at[40];
    bool custom_retry;         /* retry differs from the default */
    wh_retry_policy retry;
    /* NULL when the row is usable. Otherwise (owned) what is wrong with it,
     * naming the column: its secret cannot be opened, or a URL, filter,
     * number or schedule fails its check. Such an endpoint has no secrets
     * (nsecrets 0) and must not be delivered to; the fields that failed
     * hold safe defaults (event_types "" matches nothing). The disabled
     * state and the other fields are read regardless. */
    char *unreadable;
} wh_endpoint;

/* Longest wh_endpoint.unreadable text. */
#define WH_ENDPOINT_UNREADABLE_MAX 256

/* What `endpoint add` asks for. secret may be NULL to generate one. */
typedef struct {
    const char *app;
    const char *url;
    const char *secret;        /* only with WH_SIGNATURE_HMAC in signature */
    wh_signature_kind signature; /* 0 = WH_SIGNATURE_HMAC */
    const char *event_types;   /* NULL = "*" */
    const char *description;
    bool unordered;
    int64_t max_in_flight;     /* 0 = default */
    int64_t rate_limit_per_s;  /* 0 = unlimited */
    int64_t timeout_ms;        /* 0 = default */
    const char *retry_schedule; /* "1s,2s,4s", NULL = default */
    const char *tls_cert;      /* PEM client certificate, NULL = none */
    const char *tls_key;       /* its PEM private key: both or neither */
    const char *tls_ca;        /* PEM CA bundle for the server, NULL = none */
} wh_endpoint_spec;

/* Validates spec, seals the secret (and, for ed25519, a generated signing
 * key) and inserts the row. On WH_OK id_out (WH_ENDPOINT_ID_MAX) holds the
 * new id; when a secret was generated, secret_out (WH_SECRET_TEXT_MAX)
 * holds it, otherwise ""; pubkey_out (WH_SIGNKEY_TEXT_MAX) holds the
 * public key of the signing key, or "" when the endpoint has none. */
int wh_endpoints_add(wh_db *db, const wh_secretbox *sb,
                     const wh_endpoint_spec *spec, char *id_out,
                     char *secret_out, char *pubkey_out, char *err,
                     size_t errlen) WH_MUST_CHECK;

/* Loading is two steps, so the query can run on another thread than the
 * one that uses the rows:
 *
 * wh_endpoints_query reads the rows of all endpoints (id NULL) or one, in
 * creation order; free *out with wh_db_result_free. It fails only when
 * the query does (Postgres), never because of a row's content. */
int wh_endpoints_query(wh_db *db, const char *id, wh_db_result **out,
                       char *err, size_t errlen) WH_MUST_CHECK;
/* wh_endpoints_read builds row `row` of a wh_endpoints_query result into
 * *out (free with wh_endpoint_free). A row that cannot be used still comes
 * back, with ep->unreadable saying why. sb NULL leaves the secrets sealed
 * (nsecrets 0, and no check of them: for listings). WH_ERR only when out
 * of memory. */
int wh_endpoints_read(const wh_db_result *r, int row, const wh_secretbox *sb,
                      wh_endpoint **out, char *err,
                      size_t errlen) WH_MUST_CHECK;

/* Both steps at once: calls fn for each row, readable or not (see
 * wh_endpoint.unreadable); fn takes ownership of the endpoint. *found (may
 * be NULL) counts rows. sb as for wh_endpoints_read. WH_ERR when the query
 * fails or memory runs out. */
typedef void wh_endpoint_fn(wh_endpoint *ep, void *opaque);
int wh_endpoints_load(wh_db *db, const wh_secretbox *sb, const char *id,
                      wh_endpoint_fn *fn, void *opaque, int *found,
                      char *err, size_t errlen) WH_MUST_CHECK;

/* Longest overlap of a secret rotation: the old secret signs at most this
 * long after it was replaced. */
#define WH_SECRET_OVERLAP_MAX_S (7 * 86400)

/* What a rotation or a change of scheme did: the new secret and public
 * key ("" for a kind left alone) and how many of each kind now sign. */
typedef struct {
    char secret[WH_SECRET_TEXT_MAX];
    char public_key[WH_SIGNKEY_TEXT_MAX];
    size_t nhmac, ned25519;
    wh_signature_kind signature; /* the endpoint's scheme */
} wh_rotation;

/* Rotates the endpoint's signing keys of the kinds in `kinds` (0: every
 * kind its scheme uses; a kind it does not use is refused): for HMAC,
 * secret (a whsec_ value; NULL: one is generated) becomes the current
 * one; for ed25519 a new key pair is generated. The current key of each
 * rotated kind keeps signing for overlap_s seconds
 * (0..WH_SECRET_OVERLAP_MAX_S; 0: it is dropped at once), older ones keep
 * their own expiry; at most WH_SIGN_MAX_SECRETS of each kind stay (the
 * oldest go first) and expired ones are dropped. One transaction, the row
 * locked. *out says what changed. WH_DECLINED when no such endpoint;
 * WH_ERR (err) for a bad secret, kind or overlap, a row whose secrets
 * cannot be opened, or Postgres. */
int wh_endpoints_rotate_secret(wh_db *db, const wh_secretbox *sb,
                               const char *id, wh_signature_kind kinds,
                               const char *secret, int64_t overlap_s,
                               int64_t now_s, wh_rotation *out, char *err,
                               size_t errlen) WH_MUST_CHECK;

/* Replaces the endpoint's keys, without reading them, with secret (one
 * whsec_ value, checked) and, when its scheme signs with ed25519, a new
 * key pair (*out reports both), sealed with sb's key: the way to repair a
 * row whose secrets cannot be opened, or sealed under another key. Also
 * releases the deliveries held while it was unreadable (see
 * wh_endpoints_resume) unless it is disabled. WH_DECLINED when no such
 * endpoint. */
int wh_endpoints_set_secret(wh_db *db, const wh_secretbox *sb, const char *id,
                            const char *secret, wh_rotation *out, char *err,
                            size_t errlen) WH_MUST_CHECK;

/* A change to an endpoint's plain columns; what is NULL, 0 or unset is
 * left as it is. */
typedef struct {
    const char *url;
    const char *event_types;      /* comma-separated patterns */
    const char *description;
    bool set_retry;               /* retry_schedule: "1s,2s", "none", or
                                     NULL for the default schedule */
    const char *retry_schedule;
    int ordered;                  /* -1 keep, 0 unordered, 1 ordered */
    int64_t max_in_flight;        /* 1..1000; 0 keep */
    bool set_rate;                /* rate_limit_per_s: 0 = none */
    int64_t rate_limit_per_s;
    int64_t timeout_ms;           /* 100..120000; 0 keep */
} wh_endpoint_patch;

/* Checks p (err names the field: "url: ...", "retry_schedule: ...") and
 * applies it in one statement. WH_DECLINED when no such endpoint; WH_ERR
 * for a bad field or Postgres ("query failed" in err). */
int wh_endpoints_update(wh_db *db, const char *id, const wh_endpoint_patch *p,
                        char *err, size_t errlen) WH_MUST_CHECK;

/* Sets the endpoint's TLS client identity: cert (PEM, with its chain)
 * and key (PEM, unencrypted, sealed with sb's key), checked to belong
 * together; cert and key NULL remove it. WH_DECLINED when no such
 * endpoint. */
int wh_endpoints_set_client_cert(wh_db *db, const wh_secretbox *sb,
                                 const char *id, const char *cert,
                                 const char *key, char *err,
                                 size_t errlen) WH_MUST_CHECK;

/* Sets the CA bundle (PEM) the endpoint's server certificate is checked
 * against instead of the worker's; NULL removes it. WH_DECLINED when no
 * such endpoint. */
int wh_endpoints_set_ca_bundle(wh_db *db, const char *id, const char *ca,
                               char *err, size_t errlen) WH_MUST_CHECK;

/* Changes the endpoint's signature scheme: keys of a kind the new scheme
 * does not use are dropped, and a kind it newly uses gets a generated
 * key (reported in *out like a rotation). One transaction, the row
 * locked. WH_DECLINED when no such endpoint. */
int wh_endpoints_set_signature(wh_db *db, const wh_secretbox *sb,
                               const char *id, wh_signature_kind signature,
                               int64_t now_s, wh_rotation *out, char *err,
                               size_t errlen) WH_MUST_CHECK;

/* What wh_endpoints_rekey did, by row. */
typedef struct {
    long resealed;   /* re-sealed under the current key (dry run: would be) */
    long current;    /* already under the current key */
    long unopenable; /* some sealed value cannot be opened: left untouched */
} wh_rekey_stats;

/* Called for each row whose sealed values cannot be opened, with why
 * (naming the column and the reason). */
typedef void wh_endpoints_unopenable_fn(const char *id, const char *why,
                                        void *opaque);

/* Re-seals under sb's current key every sealed value of every endpoint
 * (each sealed column: secrets_sealed, aad the endpoint id, and
 * tls_client_key_sealed, aad "ID:tls_client_key") that is not
 * version 2 under that key, so the previous keys can be dropped. Row by
 * row, each in its own short transaction with the row locked (SELECT ...
 * FOR UPDATE), so a concurrent rotate-secret or set-secret is neither
 * clobbered nor blocked for long. Every value is opened (authenticated)
 * first: a row with one that cannot be opened is left untouched, counted
 * in stats->unopenable and passed to fn (may be NULL). dry_run changes
 * nothing and counts what would be done. A second run re-seals nothing.
 * WH_ERR (err) when Postgres fails; stats then count the rows done. */
int wh_endpoints_rekey(wh_db *db, const wh_secretbox *sb, bool dry_run,
                       wh_rekey_stats *stats, wh_endpoints_unopenable_fn *fn,
                       void *opaque, char *err, size_t errlen) WH_MUST_CHECK;

/* Makes the endpoint's held deliveries (retries due at 'infinity', kept
 * while it was disabled or unreadable) due now, if it is not disabled.
 * *released (may be NULL) gets how many. */
int wh_endpoints_resume(wh_db *db, const char *id, long *released, char *err,
                        size_t errlen) WH_MUST_CHECK;

/* Sets disabled state. Enabling also makes the endpoint's paused
 * deliveries (retries due at 'infinity') due now. WH_DECLINED when no such
 * endpoint. */
int wh_endpoints_set_disabled(wh_db *db, const char *id, bool disabled,
                              const char *reason, char *err,
                              size_t errlen) WH_MUST_CHECK;

void wh_endpoint_free(wh_endpoint *ep);

#endif
