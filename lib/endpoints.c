/*
 * endpoints.c - the webhooks.endpoints table (see endpoints.h). Secrets
 * are stored as a space-separated list of whsec_ values, sealed with the
 * endpoint id as associated data, moved through SQL as base64. A row is
 * read column by column: one that fails a check is still returned, marked
 * unreadable, so one bad row never fails a whole load. Rekeying re-seals
 * every sealed column (sealed_columns) under the current master key.
 */
#include "endpoints.h"

#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base64.h"
#include "codec.h"
#include "http.h"
#include "limit.h"
#include "pattern.h"
#include "url.h"

void wh_endpoint_free(wh_endpoint *ep)
{
    if (!ep)
        return;
    free(ep->url);
    free(ep->event_types);
    free(ep->description);
    free(ep->disabled_reason);
    free(ep->unreadable);
    free(ep->tls_cert);
    free(ep->tls_ca);
    if (ep->tls_key) {
        explicit_bzero(ep->tls_key, ep->tls_key_len);
        free(ep->tls_key);
    }
    for (size_t i = 0; i < ep->nsecrets; i++)
        wh_sign_clear_secret(&ep->secrets[i]);
    for (size_t i = 0; i < ep->nsignkeys; i++)
        wh_sign_signkey_cleanup(&ep->signkeys[i]);
    free(ep);
}

const char *wh_signature_name(wh_signature_kind kind)
{
    switch (kind) {
    case WH_SIGNATURE_HMAC:
        return "hmac";
    case WH_SIGNATURE_ED25519:
        return "ed25519";
    case WH_SIGNATURE_BOTH:
        return "both";
    }
    return "?";
}

int wh_signature_parse(const char *text, wh_signature_kind *out)
{
    static const wh_signature_kind all[] = {
        WH_SIGNATURE_HMAC, WH_SIGNATURE_ED25519, WH_SIGNATURE_BOTH};
    for (size_t i = 0; text && i < WH_ARRAY_LEN(all); i++)
        if (strcmp(text, wh_signature_name(all[i])) == 0) {
            *out = all[i];
            return WH_OK;
        }
    return WH_ERR;
}

static int new_id(char *out)
{
    static const char alphabet[] = "0123456789abcdefghijklmnopqrstuv";
    unsigned char r[20];
    if (wh_random_bytes(r, sizeof(r)) != WH_OK)
        return WH_ERR;
    memcpy(out, "ep_", 3);
    for (size_t i = 0; i < sizeof(r); i++)
        out[3 + i] = alphabet[r[i] & 31];
    out[3 + sizeof(r)] = '\0';
    return WH_OK;
}

/* The sealed text: up to WH_SIGN_MAX_SECRETS "whsec_...[@expiry]" and as
 * many "whsk_...[@expiry]" tokens, space separated, each kind newest
 * first. */
#define TOKENS_MAX       (2 * WH_SIGN_MAX_SECRETS)
#define SECRETS_TEXT_MAX (TOKENS_MAX * (WH_SECRET_TEXT_MAX + 22))
/* The largest sealed value of any column, raw and as base64 with NUL. */
#define SEALED_MAX (WH_SECRETBOX_OVERHEAD + WH_SECRETBOX_PLAIN_MAX)
#define SEALED_B64_MAX (2 * SEALED_MAX)

/* Seals plain[0..n) for aad into out (SEALED_B64_MAX), as base64. */
static int seal_aad(const wh_secretbox *sb, const char *aad, const char *plain,
                    size_t n, char *out, char *err, size_t errlen)
{
    unsigned char sealed[SEALED_MAX];
    size_t sealed_len;
    if (wh_secretbox_seal(sb, aad, plain, n, sealed, sizeof(sealed),
                          &sealed_len, err, errlen))
        return WH_ERR;
    wh_base64_encode(sealed, sealed_len, out);
    explicit_bzero(sealed, sizeof(sealed));
    return WH_OK;
}

/* Seals the key list text for endpoint id (its aad) into out. */
static int seal(const wh_secretbox *sb, const char *id, const char *text,
                char *out, char *err, size_t errlen)
{
    return seal_aad(sb, id, text, strlen(text), out, err, errlen);
}

/* Decodes the base64 b64[0..b64len) of a sealed value into sealed
 * (SEALED_MAX bytes) and opens it for aad into plain (cap bytes, the
 * plaintext NUL-terminated after *plain_len bytes). On WH_ERR why says
 * what is wrong, and plain holds nothing of the secret. */
static int open_sealed(const wh_secretbox *sb, const char *aad,
                       const char *b64, size_t b64len, unsigned char *sealed,
                       size_t *sealed_len, char *plain, size_t cap,
                       size_t *plain_len, char *why, size_t whylen)
{
    if (wh_base64_decode(b64, b64len, sealed, SEALED_MAX, sealed_len))
        return wh_errf(why, whylen, "not a sealed value (bad length)");
    if (wh_secretbox_open(sb, aad, sealed, *sealed_len, plain, cap - 1,
                          plain_len, why, whylen))
        return WH_ERR;
    plain[*plain_len] = '\0';
    return WH_OK;
}

/* Checks the TLS material of an endpoint: cert and key both or neither,
 * each PEM text a request can use. */
static int check_tls(const char *cert, const char *key, const char *ca,
                     char *err, size_t errlen)
{
    char e[WH_ERRLEN];
    if (!cert != !key)
        return wh_errf(err, errlen, "--client-cert and --client-key go "
                                    "together");
    if (cert && wh_http_check_client_pem(cert, strlen(cert), key, strlen(key),
                                         e, sizeof(e)) != WH_OK)
        return wh_errf(err, errlen, "--client-cert: %s", e);
    if (ca && wh_http_check_ca_pem(ca, strlen(ca), e, sizeof(e)) != WH_OK)
        return wh_errf(err, errlen, "--ca-bundle: %s", e);
    return WH_OK;
}

/* The associated data a client key is sealed with: the endpoint id and
 * the column, so it cannot be moved to another row or column. */
static int tls_key_aad(const char *id, char *aad, size_t cap)
{
    int n = snprintf(aad, cap, "%s:tls_client_key", id);
    return n > 0 && (size_t)n < cap ? WH_OK : WH_ERR;
}

/* Seals key (PEM) for endpoint id into *out (base64, malloc'd). */
static int seal_tls_key(const wh_secretbox *sb, const char *id,
                        const char *key, char **out, char *err, size_t errlen)
{
    char aad[WH_ENDPOINT_ID_MAX + 32];
    size_t n = strlen(key), sealed_len;
    size_t cap = wh_secretbox_sealed_len(n);
    *out = NULL;
    if (tls_key_aad(id, aad, sizeof(aad)) != WH_OK)
        return wh_errf(err, errlen, "endpoint id too long");
    if (cap == 0)
        return wh_errf(err, errlen, "--client-key: too long (at most %d "
                       "bytes)", WH_SECRETBOX_PLAIN_MAX);
    unsigned char *sealed = malloc(cap);
    char *b64 = malloc(wh_base64_encoded_len(cap) + 1);
    int rc = !sealed || !b64 ? wh_errf(err, errlen, "out of memory")
                             : wh_secretbox_seal(sb, aad, key, n, sealed, cap,
                                                 &sealed_len, err, errlen);
    if (rc == WH_OK) {
        wh_base64_encode(sealed, sealed_len, b64);
        *out = b64;
        b64 = NULL;
    }
    free(sealed);
    free(b64);
    return rc;
}

/* Opens the sealed client key of ep (base64 b64) into ep->tls_key. */
static int open_tls_key(const wh_secretbox *sb, wh_endpoint *ep,
                        const char *b64, size_t b64len, char *why,
                        size_t whylen)
{
    unsigned char sealed[SEALED_MAX];
    char aad[WH_ENDPOINT_ID_MAX + 32], e[WH_ERRLEN];
    size_t sealed_len, n;
    if (tls_key_aad(ep->id, aad, sizeof(aad)) != WH_OK)
        return wh_errf(why, whylen, "id too long");
    if (!(ep->tls_key = malloc(WH_SECRETBOX_PLAIN_MAX + 1)))
        return wh_errf(why, whylen, "out of memory");
    if (open_sealed(sb, aad, b64, b64len, sealed, &sealed_len, ep->tls_key,
                    WH_SECRETBOX_PLAIN_MAX + 1, &n, e, sizeof(e)) != WH_OK) {
        free(ep->tls_key);
        ep->tls_key = NULL;
        return wh_errf(why, whylen, "tls_client_key_sealed cannot be opened "
                                    "(%s)", e);
    }
    ep->tls_key_len = n;
    return WH_OK;
}

/* Generates an ed25519 key pair: appends its "whsk_" token to keys (cap
 * bytes; after a space when keys is not empty) and writes its public key
 * to pubkey (WH_SIGNKEY_TEXT_MAX). */
static int new_signkey(char *keys, size_t cap, char *pubkey, char *err,
                       size_t errlen)
{
    char text[WH_SIGNKEY_TEXT_MAX];
    wh_signkey k;
    if (wh_sign_generate_signkey(text, sizeof(text)) != WH_OK ||
        wh_sign_parse_signkey(text, &k, err, errlen) != WH_OK) {
        explicit_bzero(text, sizeof(text));
        return wh_errf(err, errlen, "cannot generate an ed25519 key");
    }
    int rc = wh_sign_public_key(&k, pubkey, WH_SIGNKEY_TEXT_MAX);
    wh_sign_signkey_cleanup(&k);
    size_t used = strlen(keys);
    int n = snprintf(keys + used, cap - used, "%s%s", used ? " " : "", text);
    explicit_bzero(text, sizeof(text));
    if (rc != WH_OK || n < 0 || (size_t)n >= cap - used)
        return wh_errf(err, errlen, "cannot store an ed25519 key");
    return WH_OK;
}

int wh_endpoints_add(wh_db *db, const wh_secretbox *sb,
                     const wh_endpoint_spec *spec, char *id_out,
                     char *secret_out, char *pubkey_out, char *err,
                     size_t errlen)
{
    char secret[WH_SECRET_TEXT_MAX] = "";
    char e[WH_ERRLEN];
    secret_out[0] = '\0';
    pubkey_out[0] = '\0';
    if (wh_codec_check_app(spec->app, err, errlen) ||
        wh_url_check(spec->url, err, errlen))
        return WH_ERR;
    const char *types = spec->event_types ? spec->event_types : "*";
    if (wh_pattern_list_check(types, e, sizeof(e)) != WH_OK)
        return wh_errf(err, errlen, "--events: %s", e);
    wh_signature_kind kind = spec->signature ? spec->signature
                                             : WH_SIGNATURE_HMAC;
    char keys[SECRETS_TEXT_MAX] = "";
    if (spec->secret && !(kind & WH_SIGNATURE_HMAC))
        return wh_errf(err, errlen, "--secret: an ed25519 endpoint has no "
                                    "HMAC secret (see --signature)");
    if (spec->secret) {
        wh_secret parsed;
        if (wh_sign_parse_secret(spec->secret, &parsed, e, sizeof(e)))
            return wh_errf(err, errlen, "--secret: %s", e);
        wh_sign_clear_secret(&parsed);
        if (wh_strlcpy(secret, spec->secret, sizeof(secret)) != WH_OK)
            return wh_errf(err, errlen, "--secret: too long");
    } else if ((kind & WH_SIGNATURE_HMAC) &&
               wh_sign_generate_secret(secret, sizeof(secret)) != WH_OK) {
        return wh_errf(err, errlen, "cannot generate a secret");
    }
    if (kind & WH_SIGNATURE_HMAC)
        wh_strlcpy(keys, secret, sizeof(keys));
    if ((kind & WH_SIGNATURE_ED25519) &&
        new_signkey(keys, sizeof(keys), pubkey_out, err, errlen) != WH_OK)
        return WH_ERR;
    if (spec->max_in_flight < 0 || spec->max_in_flight > 1000)
        return wh_errf(err, errlen, "--max-in-flight must be 1-1000");
    if (spec->timeout_ms && (spec->timeout_ms < 100 ||
                             spec->timeout_ms > 120000))
        return wh_errf(err, errlen, "--timeout must be 100ms-120s");
    char retry_pg[WH_RETRY_TEXT_MAX];
    if (spec->retry_schedule) {
        wh_retry_policy rp;
        if (wh_retry_policy_parse(spec->retry_schedule, &rp, e, sizeof(e)))
            return wh_errf(err, errlen, "--retry-schedule: %s", e);
        if (wh_retry_policy_to_pg(&rp, retry_pg, sizeof(retry_pg)) != WH_OK)
            return wh_errf(err, errlen, "--retry-schedule: too long");
    }
    if (check_tls(spec->tls_cert, spec->tls_key, spec->tls_ca, err,
                  errlen) != WH_OK)
        return WH_ERR;
    if (spec->tls_cert && strncmp(spec->url, "https://", 8) != 0)
        return wh_errf(err, errlen, "--client-cert: needs an https:// URL");
    if (new_id(id_out) != WH_OK)
        return wh_errf(err, errlen, "cannot generate an id");
    char *key_b64 = NULL;
    if (spec->tls_key &&
        seal_tls_key(sb, id_out, spec->tls_key, &key_b64, err, errlen) !=
            WH_OK)
        return WH_ERR;
    char sealed_b64[SEALED_B64_MAX];
    int sealed_rc = seal(sb, id_out, keys, sealed_b64, err, errlen);
    explicit_bzero(keys, sizeof(keys));
    if (sealed_rc != WH_OK)
        return WH_ERR;

    char mif[16], rate[16], tmo[16];
    snprintf(mif, sizeof(mif), "%lld",
             (long long)(spec->max_in_flight ? spec->max_in_flight : 1));
    snprintf(rate, sizeof(rate), "%lld", (long long)spec->rate_limit_per_s);
    snprintf(tmo, sizeof(tmo), "%lld", (long long)spec->timeout_ms);
    const char *params[] = {
        id_out, spec->app, spec->url, sealed_b64, types,
        spec->unordered ? "false" : "true", mif,
        spec->rate_limit_per_s ? rate : NULL,
        spec->timeout_ms ? tmo : NULL,
        spec->description ? spec->description : "",
        spec->retry_schedule ? retry_pg : NULL,
        wh_signature_name(kind),
        spec->tls_cert,
        key_b64,
        spec->tls_ca,
    };
    wh_db_result *r;
    int qrc = wh_db_query(db,
                    "INSERT INTO webhooks.endpoints (id, app, url, "
                    "secrets_sealed, event_types, ordered, max_in_flight, "
                    "rate_limit_per_s, timeout_ms, description, "
                    "retry_schedule_ms, signature, tls_client_cert, "
                    "tls_client_key_sealed, tls_ca_bundle) VALUES "
                    "($1, $2, $3, decode($4, 'base64'), $5, $6, $7, $8, $9, "
                    "$10, $11::integer[], $12, $13, decode($14, 'base64'), "
                    "$15)",
                    15, params, &r, err, errlen);
    free(key_b64);
    if (qrc != WH_OK) {
        pubkey_out[0] = '\0';
        return WH_ERR;
    }
    wh_db_result_free(r);
    if (!spec->secret)
        memcpy(secret_out, secret, strlen(secret) + 1);
    explicit_bzero(secret, sizeof(secret));
    return WH_OK;
}

static char *dup_or_null(const wh_db_result *r, int row, int col)
{
    return wh_db_isnull(r, row, col) ? NULL : strdup(wh_db_get(r, row, col));
}

/* Cuts a stored token "whsec_...@EXPIRES" at its '@' (none: *expires 0,
 * the current secret). WH_ERR when EXPIRES is not a positive number. */
static int split_expiry(char *tok, int64_t *expires)
{
    char *at = strchr(tok, '@'), *end;
    *expires = 0;
    if (!at)
        return WH_OK;
    *at = '\0';
    errno = 0;
    long long v = strtoll(at + 1, &end, 10);
    if (errno || end == at + 1 || *end || v <= 0)
        return WH_ERR;
    *expires = v;
    return WH_OK;
}

/* ---- the sealed key list ------------------------------------------------ */

/* One stored key: its text (whsec_ or whsk_), kind and expiry (0: it is
 * its kind's current key). */
typedef struct {
    char text[WH_SECRET_TEXT_MAX];
    wh_signature_kind kind;
    int64_t expires_s;
} key_token;

typedef struct {
    key_token t[TOKENS_MAX];
    size_t n;
} key_list;

static void key_list_clear(key_list *l)
{
    explicit_bzero(l, sizeof(*l));
}

static size_t key_list_count(const key_list *l, wh_signature_kind kind)
{
    size_t n = 0;
    for (size_t i = 0; i < l->n; i++)
        n += l->t[i].kind == kind;
    return n;
}

/* Parses the opened text (modified in place) into l. A token that is not
 * a valid key is an error with why set, unless skip_bad (then it is
 * dropped: a rewrite must not keep what would quarantine the row). Keys
 * past WH_SIGN_MAX_SECRETS of a kind are dropped. */
static int key_list_parse(char *plain, key_list *l, bool skip_bad, char *why,
                          size_t whylen)
{
    char e[WH_ERRLEN];
    char *save = NULL;
    memset(l, 0, sizeof(*l));
    for (char *tok = strtok_r(plain, " ", &save); tok;
         tok = strtok_r(NULL, " ", &save)) {
        int64_t expires = 0;
        bool ed = strncmp(tok, WH_SIGNKEY_PREFIX,
                          sizeof(WH_SIGNKEY_PREFIX) - 1) == 0;
        int rc = split_expiry(tok, &expires);
        if (rc != WH_OK)
            wh_errf(e, sizeof(e), "bad expiry");
        if (rc == WH_OK && ed) {
            wh_signkey k;
            rc = wh_sign_parse_signkey(tok, &k, e, sizeof(e));
            wh_sign_signkey_cleanup(&k);
        } else if (rc == WH_OK) {
            wh_secret k;
            rc = wh_sign_parse_secret(tok, &k, e, sizeof(e));
            wh_sign_clear_secret(&k);
        }
        if (rc != WH_OK && skip_bad)
            continue;
        if (rc != WH_OK)
            return wh_errf(why, whylen, "stored secret: %s", e);
        wh_signature_kind kind = ed ? WH_SIGNATURE_ED25519 : WH_SIGNATURE_HMAC;
        if (key_list_count(l, kind) == WH_SIGN_MAX_SECRETS ||
            l->n == TOKENS_MAX)
            continue;
        key_token *t = &l->t[l->n++];
        wh_strlcpy(t->text, tok, sizeof(t->text));
        t->kind = kind;
        t->expires_s = expires;
    }
    return WH_OK;
}

/* Writes l as the text to seal (SECRETS_TEXT_MAX). */
static void key_list_format(const key_list *l, char *out, size_t cap)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < l->n; i++) {
        const key_token *t = &l->t[i];
        int n = t->expires_s
                    ? snprintf(out + used, cap - used, "%s%s@%lld",
                               used ? " " : "", t->text,
                               (long long)t->expires_s)
                    : snprintf(out + used, cap - used, "%s%s",
                               used ? " " : "", t->text);
        assert(n > 0 && (size_t)n < cap - used); /* sized for TOKENS_MAX */
        used += (size_t)n;
    }
}

/* Opens the sealed text into plain (SECRETS_TEXT_MAX + 1). */
static int open_text(const wh_secretbox *sb, const char *id, const char *b64,
                     size_t b64len, char *plain, char *why, size_t whylen)
{
    unsigned char sealed[SEALED_MAX];
    size_t sealed_len, plain_len;
    char e[WH_ERRLEN];
    if (open_sealed(sb, id, b64, b64len, sealed, &sealed_len, plain,
                    SECRETS_TEXT_MAX + 1, &plain_len, e, sizeof(e)) != WH_OK)
        return wh_errf(why, whylen, "secrets_sealed cannot be opened (%s)",
                       e);
    return WH_OK;
}

/* Opens the sealed key list into ep's secrets and signing keys, those of
 * the kinds its scheme uses. On WH_ERR, why says what is wrong (without
 * the endpoint id: the caller names the row). */
static int open_secrets(const wh_secretbox *sb, wh_endpoint *ep,
                        const char *b64, size_t b64len, char *why,
                        size_t whylen)
{
    char plain[SECRETS_TEXT_MAX + 1];
    key_list l;
    char e[WH_ERRLEN];
    int rc = open_text(sb, ep->id, b64, b64len, plain, why, whylen);
    if (rc == WH_OK)
        rc = key_list_parse(plain, &l, false, why, whylen);
    explicit_bzero(plain, sizeof(plain));
    if (rc != WH_OK)
        return WH_ERR;
    for (size_t i = 0; i < l.n && rc == WH_OK; i++) {
        key_token *t = &l.t[i];
        if (!(ep->signature & t->kind))
            continue;
        if (t->kind == WH_SIGNATURE_ED25519) {
            rc = wh_sign_parse_signkey(t->text, &ep->signkeys[ep->nsignkeys],
                                       e, sizeof(e));
            if (rc == WH_OK)
                ep->signkey_expires_s[ep->nsignkeys++] = t->expires_s;
        } else {
            rc = wh_sign_parse_secret(t->text, &ep->secrets[ep->nsecrets], e,
                                      sizeof(e));
            if (rc == WH_OK)
                ep->secret_expires_s[ep->nsecrets++] = t->expires_s;
        }
        if (rc != WH_OK)
            wh_errf(why, whylen, "stored secret: %s", e);
    }
    key_list_clear(&l);
    if (rc == WH_OK && (ep->signature & WH_SIGNATURE_HMAC) && !ep->nsecrets)
        rc = wh_errf(why, whylen, "secrets_sealed holds no secret");
    if (rc == WH_OK && (ep->signature & WH_SIGNATURE_ED25519) &&
        !ep->nsignkeys)
        rc = wh_errf(why, whylen, "secrets_sealed holds no ed25519 key "
                                  "(signature is %s)",
                     wh_signature_name(ep->signature));
    if (rc != WH_OK) {
        for (size_t i = 0; i < ep->nsecrets; i++)
            wh_sign_clear_secret(&ep->secrets[i]);
        for (size_t i = 0; i < ep->nsignkeys; i++)
            wh_sign_signkey_cleanup(&ep->signkeys[i]);
        ep->nsecrets = ep->nsignkeys = 0;
    }
    return rc;
}

/* The integer in s when it lies in [lo, hi]. */
static int read_int(const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return WH_ERR;
    *out = v;
    return WH_OK;
}

int wh_endpoints_query(wh_db *db, const char *id, wh_db_result **out,
                       char *err, size_t errlen)
{
    const char *params[] = {id};
    return wh_db_query(db,
                       "SELECT id, app, url, "
                       "translate(encode(secrets_sealed, 'base64'), E'\\n', "
                       "''), event_types, ordered, max_in_flight, "
                       "coalesce(rate_limit_per_s, 0), coalesce(timeout_ms, 0), "
                       "disabled, disabled_reason, description, "
                       "to_char(created_at AT TIME ZONE 'UTC', "
                       "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
                       "retry_schedule_ms::text, signature, tls_client_cert, "
                       "translate(encode(tls_client_key_sealed, 'base64'), "
                       "E'\\n', ''), tls_ca_bundle, "
                       "to_char(updated_at AT TIME ZONE 'UTC', "
                       "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') "
                       "FROM webhooks.endpoints WHERE $1::text IS NULL OR "
                       "id = $1 ORDER BY created_at, id",
                       1, params, out, err, errlen);
}

int wh_endpoints_read(const wh_db_result *r, int i, const wh_secretbox *sb,
                      wh_endpoint **out, char *err, size_t errlen)
{
    char why[WH_ENDPOINT_UNREADABLE_MAX] = "", e[WH_ERRLEN];
    long long v;
    *out = NULL;
    wh_endpoint *ep = calloc(1, sizeof(*ep));
    if (!ep)
        return wh_errf(err, errlen, "out of memory");
    /* the schema's CHECKs bound id and app; a longer one cannot be the
     * row's key here, so it is refused like any other bad column */
    if (wh_strlcpy(ep->id, wh_db_get(r, i, 0), sizeof(ep->id)) != WH_OK)
        wh_errf(why, sizeof(why), "id is longer than %d bytes",
                WH_ENDPOINT_ID_MAX - 1);
    if (wh_strlcpy(ep->app, wh_db_get(r, i, 1), sizeof(ep->app)) != WH_OK &&
        !why[0])
        wh_errf(why, sizeof(why), "app is longer than %d bytes", WH_ID_MAX);
    ep->ordered = wh_db_get(r, i, 5)[0] == 't';
    ep->disabled = wh_db_get(r, i, 9)[0] == 't';
    ep->disabled_reason = dup_or_null(r, i, 10);
    ep->description = strdup(wh_db_get(r, i, 11));
    wh_strlcpy(ep->created_at, wh_db_get(r, i, 12), sizeof(ep->created_at));
    wh_strlcpy(ep->updated_at, wh_db_get(r, i, 18), sizeof(ep->updated_at));
    const char *url = wh_db_get(r, i, 2);
    if (wh_url_check(url, e, sizeof(e)) != WH_OK) {
        if (!why[0])
            wh_errf(why, sizeof(why), "url: %s", e);
    }
    ep->url = strdup(url);
    const char *types = wh_db_get(r, i, 4);
    if (wh_pattern_list_check(types, e, sizeof(e)) != WH_OK) {
        if (!why[0])
            wh_errf(why, sizeof(why), "event_types: %s", e);
        types = ""; /* matches nothing */
    }
    ep->event_types = strdup(types);
    ep->max_in_flight = 1;
    if (read_int(wh_db_get(r, i, 6), 1, 1000, &v) == WH_OK)
        ep->max_in_flight = (int)v;
    else if (!why[0])
        wh_errf(why, sizeof(why), "max_in_flight is not 1-1000");
    if (read_int(wh_db_get(r, i, 7), 0, INT32_MAX, &v) == WH_OK)
        ep->rate_limit_per_s = (int)v;
    else if (!why[0])
        wh_errf(why, sizeof(why), "rate_limit_per_s is not a rate");
    if (read_int(wh_db_get(r, i, 8), 0, 120000, &v) == WH_OK &&
        (v == 0 || v >= 100))
        ep->timeout_ms = v;
    else if (!why[0])
        wh_errf(why, sizeof(why), "timeout_ms is not 100-120000");
    wh_retry_policy_default(&ep->retry);
    if (!wh_db_isnull(r, i, 13)) {
        if (wh_retry_policy_from_pg(wh_db_get(r, i, 13), &ep->retry, e,
                                    sizeof(e)) == WH_OK) {
            ep->custom_retry = true;
        } else {
            wh_retry_policy_default(&ep->retry);
            if (!why[0])
                wh_errf(why, sizeof(why), "retry_schedule_ms: %s", e);
        }
    }
    if (wh_signature_parse(wh_db_get(r, i, 14), &ep->signature) != WH_OK) {
        ep->signature = WH_SIGNATURE_HMAC;
        if (!why[0])
            wh_errf(why, sizeof(why), "signature is not hmac, ed25519 or "
                                      "both");
    }
    if (sb && !why[0])
        WH_IGNORE(open_secrets(sb, ep, wh_db_get(r, i, 3),
                               wh_db_getlen(r, i, 3), why, sizeof(why)));
    ep->has_tls_cert = !wh_db_isnull(r, i, 15);
    if (ep->has_tls_cert) {
        ep->tls_cert_len = (size_t)wh_db_getlen(r, i, 15);
        if (!(ep->tls_cert = strdup(wh_db_get(r, i, 15))))
            goto oom;
        if (sb && !why[0])
            WH_IGNORE(open_tls_key(sb, ep, wh_db_get(r, i, 16),
                                   wh_db_getlen(r, i, 16), why, sizeof(why)));
    }
    if (!wh_db_isnull(r, i, 17)) {
        ep->tls_ca_len = (size_t)wh_db_getlen(r, i, 17);
        if (!(ep->tls_ca = strdup(wh_db_get(r, i, 17))))
            goto oom;
    }
    if (sb && !why[0] && ep->has_tls_cert &&
        wh_http_check_client_pem(ep->tls_cert, ep->tls_cert_len, ep->tls_key,
                                 ep->tls_key_len, e, sizeof(e)) != WH_OK)
        wh_errf(why, sizeof(why), "tls_client_cert: %s", e);
    if (!why[0] && ep->tls_ca &&
        wh_http_check_ca_pem(ep->tls_ca, ep->tls_ca_len, e, sizeof(e)) != WH_OK)
        wh_errf(why, sizeof(why), "tls_ca_bundle: %s", e);
    if (why[0] && !(ep->unreadable = strdup(why)))
        goto oom;
    if (!ep->url || !ep->event_types || !ep->description ||
        (!wh_db_isnull(r, i, 10) && !ep->disabled_reason))
        goto oom;
    if (ep->unreadable) {
        for (size_t k = 0; k < ep->nsecrets; k++)
            wh_sign_clear_secret(&ep->secrets[k]);
        for (size_t k = 0; k < ep->nsignkeys; k++)
            wh_sign_signkey_cleanup(&ep->signkeys[k]);
        ep->nsecrets = ep->nsignkeys = 0;
        if (ep->tls_key) {
            explicit_bzero(ep->tls_key, ep->tls_key_len);
            free(ep->tls_key);
            ep->tls_key = NULL;
            ep->tls_key_len = 0;
        }
    }
    *out = ep;
    return WH_OK;
oom:
    wh_endpoint_free(ep);
    return wh_errf(err, errlen, "out of memory");
}

int wh_endpoints_load(wh_db *db, const wh_secretbox *sb, const char *id,
                      wh_endpoint_fn *fn, void *opaque, int *found,
                      char *err, size_t errlen)
{
    wh_db_result *r;
    if (found)
        *found = 0;
    if (wh_endpoints_query(db, id, &r, err, errlen) != WH_OK)
        return WH_ERR;
    int rc = WH_OK;
    for (int i = 0; i < wh_db_rows(r); i++) {
        wh_endpoint *ep;
        if ((rc = wh_endpoints_read(r, i, sb, &ep, err, errlen)) != WH_OK)
            break;
        if (found)
            (*found)++;
        fn(ep, opaque);
    }
    wh_db_result_free(r);
    return rc;
}

int wh_endpoints_resume(wh_db *db, const char *id, long *released, char *err,
                        size_t errlen)
{
    const char *params[] = {id};
    wh_db_result *r;
    if (released)
        *released = 0;
    if (wh_db_query(db,
                    "UPDATE webhooks.retries SET due_at = now() "
                    "WHERE endpoint_id = $1 AND due_at = 'infinity' AND "
                    "NOT EXISTS (SELECT 1 FROM webhooks.endpoints e "
                    "WHERE e.id = $1 AND e.disabled)",
                    1, params, &r, err, errlen) != WH_OK)
        return WH_ERR;
    if (released)
        *released = wh_db_affected(r);
    wh_db_result_free(r);
    return WH_OK;
}

/* Ends the transaction the caller began: COMMIT when rc is WH_OK, else
 * ROLLBACK. Returns rc, or WH_ERR when the COMMIT failed. */
static int end_tx(wh_db *db, int rc, char *err, size_t errlen)
{
    if (rc == WH_OK && wh_db_exec(db, "COMMIT", err, errlen) == WH_OK)
        return WH_OK;
    char ignored[WH_ERRLEN];
    WH_IGNORE(wh_db_exec(db, "ROLLBACK", ignored, sizeof(ignored)));
    return rc == WH_OK ? WH_ERR : rc;
}

/* A change to an endpoint's keys: reads its row locked, lets fn change
 * the key list (opened when open is set; empty otherwise) and the scheme,
 * seals the result and writes both. Inside the caller's transaction.
 * WH_DECLINED when no such endpoint. */
typedef int key_change_fn(key_list *l, wh_signature_kind *signature,
                          void *arg, char *err, size_t errlen);

static int change_keys_tx(wh_db *db, const wh_secretbox *sb, const char *id,
                          bool open, key_change_fn *fn, void *arg, char *err,
                          size_t errlen)
{
    const char *p1[] = {id};
    wh_db_result *r;
    if (wh_db_query(db,
                    "SELECT translate(encode(secrets_sealed, 'base64'), "
                    "E'\\n', ''), signature FROM webhooks.endpoints "
                    "WHERE id = $1 FOR UPDATE",
                    1, p1, &r, err, errlen) != WH_OK)
        return WH_ERR;
    if (wh_db_rows(r) == 0) {
        wh_db_result_free(r);
        return WH_DECLINED;
    }
    char plain[SECRETS_TEXT_MAX + 1], why[WH_ERRLEN];
    key_list l;
    wh_signature_kind signature;
    int rc = WH_OK;
    if (wh_signature_parse(wh_db_get(r, 0, 1), &signature) != WH_OK)
        signature = WH_SIGNATURE_HMAC;
    memset(&l, 0, sizeof(l));
    if (open &&
        open_text(sb, id, wh_db_get(r, 0, 0), wh_db_getlen(r, 0, 0), plain,
                  why, sizeof(why)) != WH_OK)
        rc = wh_errf(err, errlen, "the endpoint's secrets cannot be "
                     "opened (%s); repair it with endpoint update --secret",
                     why);
    wh_db_result_free(r);
    if (rc == WH_OK && open)
        rc = key_list_parse(plain, &l, true, why, sizeof(why));
    explicit_bzero(plain, sizeof(plain));
    if (rc == WH_OK)
        rc = fn(&l, &signature, arg, err, errlen);
    char text[SECRETS_TEXT_MAX], sealed_b64[SEALED_B64_MAX];
    if (rc == WH_OK) {
        key_list_format(&l, text, sizeof(text));
        rc = seal(sb, id, text, sealed_b64, err, errlen);
        explicit_bzero(text, sizeof(text));
    }
    key_list_clear(&l);
    if (rc != WH_OK)
        return rc;
    const char *p2[] = {id, sealed_b64, wh_signature_name(signature)};
    if (wh_db_query(db,
                    "UPDATE webhooks.endpoints SET secrets_sealed = "
                    "decode($2, 'base64'), signature = $3, "
                    "updated_at = now() WHERE id = $1",
                    3, p2, &r, err, errlen) != WH_OK)
        return WH_ERR;
    wh_db_result_free(r);
    return WH_OK;
}

/* change_keys_tx in a transaction of its own. */
static int change_keys(wh_db *db, const wh_secretbox *sb, const char *id,
                       bool open, key_change_fn *fn, void *arg, char *err,
                       size_t errlen)
{
    if (wh_db_exec(db, "BEGIN", err, errlen) != WH_OK)
        return WH_ERR;
    return end_tx(db, change_keys_tx(db, sb, id, open, fn, arg, err, errlen),
                  err, errlen);
}

/* Puts a new current key of kind first among its kind: secret (HMAC; NULL:
 * generated) or a generated ed25519 key, reported in *out. */
static int add_current(key_list *l, wh_signature_kind kind,
                       const char *secret, wh_rotation *out, char *err,
                       size_t errlen)
{
    char text[SECRETS_TEXT_MAX] = "";
    if (l->n == TOKENS_MAX)
        return wh_errf(err, errlen, "too many keys");
    if (kind == WH_SIGNATURE_ED25519) {
        if (new_signkey(text, sizeof(text), out->public_key, err,
                        errlen) != WH_OK)
            return WH_ERR;
    } else if (secret) {
        wh_strlcpy(out->secret, secret, sizeof(out->secret));
        wh_strlcpy(text, secret, sizeof(text));
    } else if (wh_sign_generate_secret(out->secret, sizeof(out->secret)) !=
               WH_OK) {
        return wh_errf(err, errlen, "cannot generate a secret");
    } else {
        wh_strlcpy(text, out->secret, sizeof(text));
    }
    memmove(&l->t[1], &l->t[0], l->n * sizeof(l->t[0]));
    l->n++;
    wh_strlcpy(l->t[0].text, text, sizeof(l->t[0].text));
    explicit_bzero(text, sizeof(text));
    l->t[0].kind = kind;
    l->t[0].expires_s = 0;
    return WH_OK;
}

/* Keeps the keys of the kinds in `keep` that are live at now_s, at most
 * WH_SIGN_MAX_SECRETS of each (the newest), in order; counts them in
 * *out. */
static void prune(key_list *l, wh_signature_kind keep, int64_t now_s,
                  wh_rotation *out)
{
    size_t n = 0;
    out->nhmac = out->ned25519 = 0;
    for (size_t i = 0; i < l->n; i++) {
        key_token *t = &l->t[i];
        size_t *count = t->kind == WH_SIGNATURE_HMAC ? &out->nhmac
                                                     : &out->ned25519;
        if (!(keep & t->kind) || (t->expires_s && t->expires_s <= now_s) ||
            *count == WH_SIGN_MAX_SECRETS)
            continue;
        (*count)++;
        if (n != i)
            l->t[n] = *t;
        n++;
    }
    for (size_t i = n; i < l->n; i++)
        explicit_bzero(&l->t[i], sizeof(l->t[i]));
    l->n = n;
}

typedef struct {
    wh_signature_kind kinds;
    const char *secret;
    int64_t overlap_s, now_s;
    wh_rotation *out;
} rotate_arg;

static int rotate_fn(key_list *l, wh_signature_kind *signature, void *opaque,
                     char *err, size_t errlen)
{
    rotate_arg *a = opaque;
    wh_signature_kind kinds = a->kinds ? a->kinds : *signature;
    a->out->signature = *signature;
    if ((kinds & *signature) != kinds)
        return wh_errf(err, errlen, "--kind: the endpoint signs with %s "
                                    "only (see update --signature)",
                       wh_signature_name(*signature));
    if (a->secret && !(kinds & WH_SIGNATURE_HMAC))
        return wh_errf(err, errlen, "--secret: only for an HMAC rotation");
    static const wh_signature_kind order[] = {WH_SIGNATURE_HMAC,
                                              WH_SIGNATURE_ED25519};
    for (size_t k = 0; k < WH_ARRAY_LEN(order); k++) {
        if (!(kinds & order[k]))
            continue;
        /* the kind's current key expires after the overlap (at once
         * without one), then the new one goes first */
        for (size_t i = 0; i < l->n; i++)
            if (l->t[i].kind == order[k]) {
                if (!l->t[i].expires_s || a->overlap_s == 0)
                    l->t[i].expires_s = a->now_s + a->overlap_s;
                break;
            }
        if (add_current(l, order[k], a->secret, a->out, err, errlen) !=
            WH_OK)
            return WH_ERR;
    }
    prune(l, *signature, a->now_s, a->out);
    return WH_OK;
}

int wh_endpoints_rotate_secret(wh_db *db, const wh_secretbox *sb,
                               const char *id, wh_signature_kind kinds,
                               const char *secret, int64_t overlap_s,
                               int64_t now_s, wh_rotation *out, char *err,
                               size_t errlen)
{
    char e[WH_ERRLEN];
    memset(out, 0, sizeof(*out));
    if (overlap_s < 0 || overlap_s > WH_SECRET_OVERLAP_MAX_S)
        return wh_errf(err, errlen, "--overlap must be 0 to %d days",
                       WH_SECRET_OVERLAP_MAX_S / 86400);
    if (secret) {
        wh_secret parsed;
        if (wh_sign_parse_secret(secret, &parsed, e, sizeof(e)) != WH_OK)
            return wh_errf(err, errlen, "--secret: %s", e);
        wh_sign_clear_secret(&parsed);
        if (strlen(secret) >= WH_SECRET_TEXT_MAX)
            return wh_errf(err, errlen, "--secret: too long");
    }
    rotate_arg a = {kinds, secret, overlap_s, now_s, out};
    int rc = change_keys(db, sb, id, true, rotate_fn, &a, err, errlen);
    if (rc != WH_OK)
        explicit_bzero(out, sizeof(*out));
    return rc;
}

typedef struct {
    wh_signature_kind to;
    int64_t now_s;
    wh_rotation *out;
} scheme_arg;

static int scheme_fn(key_list *l, wh_signature_kind *signature, void *opaque,
                     char *err, size_t errlen)
{
    scheme_arg *a = opaque;
    prune(l, a->to, a->now_s, a->out);
    if ((a->to & WH_SIGNATURE_HMAC) && !a->out->nhmac &&
        add_current(l, WH_SIGNATURE_HMAC, NULL, a->out, err, errlen) != WH_OK)
        return WH_ERR;
    if ((a->to & WH_SIGNATURE_ED25519) && !a->out->ned25519 &&
        add_current(l, WH_SIGNATURE_ED25519, NULL, a->out, err, errlen) !=
            WH_OK)
        return WH_ERR;
    prune(l, a->to, a->now_s, a->out);
    *signature = a->out->signature = a->to;
    return WH_OK;
}

int wh_endpoints_set_signature(wh_db *db, const wh_secretbox *sb,
                               const char *id, wh_signature_kind signature,
                               int64_t now_s, wh_rotation *out, char *err,
                               size_t errlen)
{
    memset(out, 0, sizeof(*out));
    scheme_arg a = {signature, now_s, out};
    int rc = change_keys(db, sb, id, true, scheme_fn, &a, err, errlen);
    if (rc != WH_OK)
        explicit_bzero(out, sizeof(*out));
    return rc;
}

typedef struct {
    const char *secret;
    wh_rotation *out;
} reset_arg;

/* The repair: the keys are replaced (not read) by the given secret and,
 * when the scheme signs with ed25519, a new key pair. */
static int reset_fn(key_list *l, wh_signature_kind *signature, void *opaque,
                    char *err, size_t errlen)
{
    reset_arg *a = opaque;
    a->out->signature = *signature;
    if (add_current(l, WH_SIGNATURE_HMAC, a->secret, a->out, err, errlen) !=
        WH_OK)
        return WH_ERR;
    if ((*signature & WH_SIGNATURE_ED25519) &&
        add_current(l, WH_SIGNATURE_ED25519, NULL, a->out, err, errlen) !=
            WH_OK)
        return WH_ERR;
    return WH_OK;
}

int wh_endpoints_set_secret(wh_db *db, const wh_secretbox *sb, const char *id,
                            const char *secret, wh_rotation *out, char *err,
                            size_t errlen)
{
    char e[WH_ERRLEN];
    wh_secret parsed;
    memset(out, 0, sizeof(*out));
    if (wh_sign_parse_secret(secret, &parsed, e, sizeof(e)) != WH_OK)
        return wh_errf(err, errlen, "--secret: %s", e);
    wh_sign_clear_secret(&parsed);
    if (strlen(secret) >= WH_SECRET_TEXT_MAX)
        return wh_errf(err, errlen, "--secret: too long");
    reset_arg a = {secret, out};
    int rc = change_keys(db, sb, id, false, reset_fn, &a, err, errlen);
    if (rc != WH_OK)
        return rc;
    out->nhmac = 1;
    out->ned25519 = out->public_key[0] != '\0';
    return wh_endpoints_resume(db, id, NULL, err, errlen);
}

int wh_endpoints_update(wh_db *db, const char *id, const wh_endpoint_patch *p,
                        char *err, size_t errlen)
{
    char e[WH_ERRLEN], retry_pg[WH_RETRY_TEXT_MAX] = "";
    if (p->url && wh_url_check(p->url, e, sizeof(e)) != WH_OK)
        return wh_errf(err, errlen, "url: %s", e);
    if (p->event_types &&
        wh_pattern_list_check(p->event_types, e, sizeof(e)) != WH_OK)
        return wh_errf(err, errlen, "events: %s", e);
    if (p->set_retry && p->retry_schedule) {
        wh_retry_policy rp;
        if (wh_retry_policy_parse(p->retry_schedule, &rp, e, sizeof(e)))
            return wh_errf(err, errlen, "retry_schedule: %s", e);
        if (wh_retry_policy_to_pg(&rp, retry_pg, sizeof(retry_pg)) != WH_OK)
            return wh_errf(err, errlen, "retry_schedule: too long");
    }
    if (p->max_in_flight && (p->max_in_flight < 1 || p->max_in_flight > 1000))
        return wh_errf(err, errlen, "max_in_flight must be 1-1000");
    if (p->set_rate && (p->rate_limit_per_s < 0 ||
                        p->rate_limit_per_s > WH_BUCKET_RATE_MAX))
        return wh_errf(err, errlen, "rate_limit_per_s must be 1-%d",
                       WH_BUCKET_RATE_MAX);
    if (p->timeout_ms && (p->timeout_ms < 100 || p->timeout_ms > 120000))
        return wh_errf(err, errlen, "timeout must be 100ms-120s");
    char rate[24] = "", mif[24] = "", tmo[24] = "";
    if (p->set_rate && p->rate_limit_per_s)
        snprintf(rate, sizeof(rate), "%lld", (long long)p->rate_limit_per_s);
    if (p->max_in_flight)
        snprintf(mif, sizeof(mif), "%lld", (long long)p->max_in_flight);
    if (p->timeout_ms)
        snprintf(tmo, sizeof(tmo), "%lld", (long long)p->timeout_ms);
    const char *params[] = {
        id,
        p->url,
        p->event_types,
        p->description,
        p->set_retry ? "t" : NULL,
        retry_pg[0] ? retry_pg : NULL,
        p->ordered == 1 ? "true" : p->ordered == 0 ? "false" : NULL,
        mif[0] ? mif : NULL,
        p->set_rate ? "t" : NULL,
        rate[0] ? rate : NULL,
        tmo[0] ? tmo : NULL,
    };
    wh_db_result *r;
    if (wh_db_query(
            db,
            "UPDATE webhooks.endpoints SET url = coalesce($2, url), "
            "event_types = coalesce($3, event_types), "
            "description = coalesce($4, description), "
            "retry_schedule_ms = CASE WHEN $5::text IS NULL THEN "
            "retry_schedule_ms ELSE $6::integer[] END, "
            "ordered = coalesce($7::boolean, ordered), "
            "max_in_flight = coalesce($8::integer, max_in_flight), "
            "rate_limit_per_s = CASE WHEN $9::text IS NULL THEN "
            "rate_limit_per_s ELSE $10::integer END, "
            "timeout_ms = coalesce($11::integer, timeout_ms), "
            "updated_at = now() WHERE id = $1",
            11, params, &r, err, errlen) != WH_OK)
        return WH_ERR;
    long n = wh_db_affected(r);
    wh_db_result_free(r);
    return n ? WH_OK : WH_DECLINED;
}

int wh_endpoints_set_client_cert(wh_db *db, const wh_secretbox *sb,
                                 const char *id, const char *cert,
                                 const char *key, char *err, size_t errlen)
{
    if (check_tls(cert, key, NULL, err, errlen) != WH_OK)
        return WH_ERR;
    char *key_b64 = NULL;
    if (key && seal_tls_key(sb, id, key, &key_b64, err, errlen) != WH_OK)
        return WH_ERR;
    const char *params[] = {id, cert, key_b64};
    wh_db_result *r;
    int rc = wh_db_query(db,
                         "UPDATE webhooks.endpoints SET tls_client_cert = $2, "
                         "tls_client_key_sealed = decode($3, 'base64'), "
                         "updated_at = now() WHERE id = $1",
                         3, params, &r, err, errlen);
    free(key_b64);
    if (rc != WH_OK)
        return WH_ERR;
    long n = wh_db_affected(r);
    wh_db_result_free(r);
    return n ? WH_OK : WH_DECLINED;
}

int wh_endpoints_set_ca_bundle(wh_db *db, const char *id, const char *ca,
                               char *err, size_t errlen)
{
    if (check_tls(NULL, NULL, ca, err, errlen) != WH_OK)
        return WH_ERR;
    const char *params[] = {id, ca};
    wh_db_result *r;
    if (wh_db_query(db,
                    "UPDATE webhooks.endpoints SET tls_ca_bundle = $2, "
                    "updated_at = now() WHERE id = $1",
                    2, params, &r, err, errlen) != WH_OK)
        return WH_ERR;
    long n = wh_db_affected(r);
    wh_db_result_free(r);
    return n ? WH_OK : WH_DECLINED;
}

/* The sealed columns of webhooks.endpoints, each with the aad its values
 * are sealed with. wh_endpoints_rekey re-seals every one of them; a new
 * sealed column is one more entry (a NULL value is skipped, so the column
 * may be optional). */
typedef struct {
    const char *column;
    /* writes the aad of endpoint id's value into out (cap bytes) */
    int (*aad)(const char *id, char *out, size_t cap);
} sealed_column;

static int aad_endpoint_id(const char *id, char *out, size_t cap)
{
    return wh_strlcpy(out, id, cap);
}

static const sealed_column sealed_columns[] = {
    {"secrets_sealed", aad_endpoint_id},
    {"tls_client_key_sealed", tls_key_aad},
};
#define NSEALED WH_ARRAY_LEN(sealed_columns)

/* Writes the sealed value (base64) of column (a sealed_columns name) of
 * endpoint id; *n gets the rows changed (0: no such endpoint). */
static int store_sealed(wh_db *db, const char *id, const char *column,
                        const char *sealed_b64, long *n, char *err,
                        size_t errlen)
{
    char sql[160];
    const char *params[] = {id, sealed_b64};
    wh_db_result *r;
    snprintf(sql, sizeof(sql), "UPDATE webhooks.endpoints SET %s = "
             "decode($2, 'base64'), updated_at = now() WHERE id = $1",
             column);
    if (wh_db_query(db, sql, 2, params, &r, err, errlen) != WH_OK)
        return WH_ERR;
    *n = wh_db_affected(r);
    wh_db_result_free(r);
    return WH_OK;
}

/* ---- rekey ---------------------------------------------------------------- */

/* Ids read per query while walking the table. */
#define REKEY_BATCH 500

/* What rekey_tx found of one row. */
typedef enum {
    ROW_GONE,       /* deleted since it was listed */
    ROW_CURRENT,    /* every value already under the current key */
    ROW_RESEALED,   /* some value was (dry run: would be) re-sealed */
    ROW_UNOPENABLE, /* some value cannot be opened: the row is untouched */
} row_outcome;

/* Opens the sealed columns of endpoint id, locked, inside the caller's
 * transaction, and re-seals (unless dry_run) each value not under the
 * current key; *outcome says which, why (ROW_UNOPENABLE) names the column
 * and what is wrong. WH_ERR only for Postgres or sealing failures. */
static int rekey_tx(wh_db *db, const wh_secretbox *sb, const char *id,
                    bool dry_run, row_outcome *outcome, char *why,
                    size_t whylen, char *err, size_t errlen)
{
    char sql[512], aad[WH_SECRETBOX_AAD_MAX + 1], e[WH_ERRLEN];
    size_t used = (size_t)snprintf(sql, sizeof(sql), "SELECT ");
    for (size_t c = 0; c < NSEALED; c++)
        used += (size_t)snprintf(sql + used, sizeof(sql) - used,
                                 "%stranslate(encode(%s, 'base64'), "
                                 "E'\\n', '')", c ? ", " : "",
                                 sealed_columns[c].column);
    assert(used < sizeof(sql) - 64);
    snprintf(sql + used, sizeof(sql) - used,
             " FROM webhooks.endpoints WHERE id = $1 FOR UPDATE");

    const char *params[] = {id};
    wh_db_result *r;
    if (wh_db_query(db, sql, 1, params, &r, err, errlen) != WH_OK)
        return WH_ERR;
    *outcome = wh_db_rows(r) == 0 ? ROW_GONE : ROW_CURRENT;
    /* re-sealed values, base64, by column; "" when already current */
    char fresh[NSEALED][SEALED_B64_MAX];
    unsigned char sealed[SEALED_MAX];
    char plain[WH_SECRETBOX_PLAIN_MAX + 1];
    size_t sealed_len, plain_len;
    int rc = WH_OK;
    for (size_t c = 0; c < NSEALED && *outcome != ROW_GONE; c++) {
        const sealed_column *col = &sealed_columns[c];
        fresh[c][0] = '\0';
        if (wh_db_isnull(r, 0, (int)c))
            continue;
        if (col->aad(id, aad, sizeof(aad)) != WH_OK) {
            wh_errf(why, whylen, "%s: id too long for an aad", col->column);
            *outcome = ROW_UNOPENABLE;
            break;
        }
        if (open_sealed(sb, aad, wh_db_get(r, 0, (int)c),
                        wh_db_getlen(r, 0, (int)c), sealed, &sealed_len,
                        plain, sizeof(plain), &plain_len, e,
                        sizeof(e)) != WH_OK) {
            wh_errf(why, whylen, "%s: %s", col->column, e);
            *outcome = ROW_UNOPENABLE;
            break;
        }
        if (!wh_secretbox_is_current(sb, sealed, sealed_len)) {
            rc = seal_aad(sb, aad, plain, plain_len, fresh[c], err, errlen);
            *outcome = ROW_RESEALED;
        }
        explicit_bzero(plain, sizeof(plain));
        if (rc != WH_OK)
            break;
    }
    wh_db_result_free(r);
    /* a row with a value that cannot be opened is left as it is */
    for (size_t c = 0; c < NSEALED && rc == WH_OK && !dry_run &&
                       *outcome == ROW_RESEALED; c++) {
        long n = 0;
        if (fresh[c][0])
            rc = store_sealed(db, id, sealed_columns[c].column, fresh[c], &n,
                              err, errlen);
    }
    explicit_bzero(fresh, sizeof(fresh));
    return rc;
}

int wh_endpoints_rekey(wh_db *db, const wh_secretbox *sb, bool dry_run,
                       wh_rekey_stats *stats, wh_endpoints_unopenable_fn *fn,
                       void *opaque, char *err, size_t errlen)
{
    char after[WH_ENDPOINT_ID_MAX] = "", why[WH_ENDPOINT_UNREADABLE_MAX];
    char limit[16];
    memset(stats, 0, sizeof(*stats));
    snprintf(limit, sizeof(limit), "%d", REKEY_BATCH);
    for (;;) {
        const char *params[] = {after[0] ? after : NULL, limit};
        wh_db_result *ids;
        if (wh_db_query(db,
                        "SELECT id FROM webhooks.endpoints WHERE $1::text IS "
                        "NULL OR id > $1 ORDER BY id LIMIT $2::int",
                        2, params, &ids, err, errlen) != WH_OK)
            return WH_ERR;
        int rows = wh_db_rows(ids), rc = WH_OK;
        for (int i = 0; i < rows && rc == WH_OK; i++) {
            const char *id = wh_db_get(ids, i, 0);
            row_outcome outcome = ROW_GONE;
            why[0] = '\0';
            rc = wh_db_exec(db, "BEGIN", err, errlen);
            if (rc == WH_OK)
                rc = end_tx(db, rekey_tx(db, sb, id, dry_run, &outcome, why,
                                         sizeof(why), err, errlen),
                            err, errlen);
            if (rc != WH_OK)
                break;
            if (outcome == ROW_CURRENT)
                stats->current++;
            else if (outcome == ROW_RESEALED)
                stats->resealed++;
            else if (outcome == ROW_UNOPENABLE) {
                stats->unopenable++;
                if (fn)
                    fn(id, why, opaque);
            }
        }
        if (rows > 0)
            wh_strlcpy(after, wh_db_get(ids, rows - 1, 0), sizeof(after));
        wh_db_result_free(ids);
        if (rc != WH_OK)
            return WH_ERR;
        if (rows < REKEY_BATCH)
            return WH_OK;
    }
}

int wh_endpoints_set_disabled(wh_db *db, const char *id, bool disabled,
                              const char *reason, char *err, size_t errlen)
{
    const char *params[] = {id, disabled ? "true" : "false", reason};
    wh_db_result *r;
    if (wh_db_query(db,
                    "UPDATE webhooks.endpoints SET disabled = $2, "
                    "disabled_reason = CASE WHEN $2 THEN $3 END, "
                    "disabled_at = CASE WHEN $2 THEN now() END, "
                    "updated_at = now() WHERE id = $1",
                    3, params, &r, err, errlen) != WH_OK)
        return WH_ERR;
    long n = wh_db_affected(r);
    wh_db_result_free(r);
    if (n == 0)
        return WH_DECLINED;
    if (!disabled)
        return wh_endpoints_resume(db, id, NULL, err, errlen);
    return WH_OK;
}
