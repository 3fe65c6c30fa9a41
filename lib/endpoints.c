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
#include "pattern.h"
#include "url.h"

#include <openssl/crypto.h>

void wh_endpoint_free(wh_endpoint *ep)
{
    if (!ep)
        return;
    free(ep->url);
    free(ep->event_types);
    free(ep->description);
    free(ep->disabled_reason);
    free(ep->unreadable);
    for (size_t i = 0; i < ep->nsecrets; i++)
        wh_sign_clear_secret(&ep->secrets[i]);
    free(ep);
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

/* The sealed text: up to WH_SIGN_MAX_SECRETS "whsec_...[@expiry]" tokens,
 * space separated. */
#define SECRETS_TEXT_MAX (WH_SIGN_MAX_SECRETS * (WH_SECRET_TEXT_MAX + 22))
/* The largest sealed value of any column, raw and as base64 with NUL. */
#define SEALED_MAX (WH_SECRETBOX_OVERHEAD + WH_SECRETBOX_PLAIN_MAX)
#define SEALED_B64_MAX (2 * SEALED_MAX)

/* Seals plain[0..n) for aad into out (SEALED_B64_MAX), as base64. */
static int seal(const wh_secretbox *sb, const char *aad, const char *plain,
                size_t n, char *out, char *err, size_t errlen)
{
    unsigned char sealed[SEALED_MAX];
    size_t sealed_len;
    if (wh_secretbox_seal(sb, aad, plain, n, sealed, sizeof(sealed),
                          &sealed_len, err, errlen))
        return WH_ERR;
    wh_base64_encode(sealed, sealed_len, out);
    return WH_OK;
}

int wh_endpoints_add(wh_db *db, const wh_secretbox *sb,
                     const wh_endpoint_spec *spec, char *id_out,
                     char *secret_out, char *err, size_t errlen)
{
    char secret[WH_SECRET_TEXT_MAX];
    char e[WH_ERRLEN];
    secret_out[0] = '\0';
    if (wh_codec_check_app(spec->app, err, errlen) ||
        wh_url_check(spec->url, err, errlen))
        return WH_ERR;
    const char *types = spec->event_types ? spec->event_types : "*";
    if (wh_pattern_list_check(types, e, sizeof(e)) != WH_OK)
        return wh_errf(err, errlen, "--events: %s", e);
    if (spec->secret) {
        wh_secret parsed;
        if (wh_sign_parse_secret(spec->secret, &parsed, e, sizeof(e)))
            return wh_errf(err, errlen, "--secret: %s", e);
        wh_sign_clear_secret(&parsed);
        if (wh_strlcpy(secret, spec->secret, sizeof(secret)) != WH_OK)
            return wh_errf(err, errlen, "--secret: too long");
    } else if (wh_sign_generate_secret(secret, sizeof(secret)) != WH_OK) {
        return wh_errf(err, errlen, "cannot generate a secret");
    }
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
    if (new_id(id_out) != WH_OK)
        return wh_errf(err, errlen, "cannot generate an id");
    char sealed_b64[SEALED_B64_MAX];
    if (seal(sb, id_out, secret, strlen(secret), sealed_b64, err,
             errlen) != WH_OK)
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
    };
    wh_db_result *r;
    if (wh_db_query(db,
                    "INSERT INTO webhooks.endpoints (id, app, url, "
                    "secrets_sealed, event_types, ordered, max_in_flight, "
                    "rate_limit_per_s, timeout_ms, description, "
                    "retry_schedule_ms) VALUES "
                    "($1, $2, $3, decode($4, 'base64'), $5, $6, $7, $8, $9, "
                    "$10, $11::integer[])",
                    11, params, &r, err, errlen) != WH_OK)
        return WH_ERR;
    wh_db_result_free(r);
    if (!spec->secret)
        memcpy(secret_out, secret, strlen(secret) + 1);
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

/* Opens the sealed secret list into ep->secrets. On WH_ERR, why says what
 * is wrong (without the endpoint id: the caller names the row). */
static int open_secrets(const wh_secretbox *sb, wh_endpoint *ep,
                        const char *b64, size_t b64len, char *why,
                        size_t whylen)
{
    unsigned char sealed[SEALED_MAX];
    char plain[WH_SECRETBOX_PLAIN_MAX + 1];
    size_t sealed_len, plain_len;
    char e[WH_ERRLEN];
    if (open_sealed(sb, ep->id, b64, b64len, sealed, &sealed_len, plain,
                    sizeof(plain), &plain_len, e, sizeof(e)) != WH_OK)
        return wh_errf(why, whylen, "secrets_sealed cannot be opened (%s)",
                       e);
    char *save = NULL;
    int rc = WH_OK;
    for (char *tok = strtok_r(plain, " ", &save); tok;
         tok = strtok_r(NULL, " ", &save)) {
        if (ep->nsecrets == WH_SIGN_MAX_SECRETS)
            break;
        int64_t expires = 0;
        if (split_expiry(tok, &expires) != WH_OK) {
            rc = wh_errf(why, whylen, "stored secret: bad expiry");
            break;
        }
        if (wh_sign_parse_secret(tok, &ep->secrets[ep->nsecrets], e,
                                 sizeof(e))) {
            rc = wh_errf(why, whylen, "stored secret: %s", e);
            break;
        }
        ep->secret_expires_s[ep->nsecrets] = expires;
        ep->nsecrets++;
    }
    memset(plain, 0, sizeof(plain));
    if (rc == WH_OK && ep->nsecrets == 0)
        rc = wh_errf(why, whylen, "secrets_sealed holds no secret");
    if (rc != WH_OK) {
        for (size_t i = 0; i < ep->nsecrets; i++)
            wh_sign_clear_secret(&ep->secrets[i]);
        ep->nsecrets = 0;
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
                       "retry_schedule_ms::text "
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
    if (sb && !why[0])
        WH_IGNORE(open_secrets(sb, ep, wh_db_get(r, i, 3),
                               wh_db_getlen(r, i, 3), why, sizeof(why)));
    if (why[0] && !(ep->unreadable = strdup(why)))
        goto oom;
    if (!ep->url || !ep->event_types || !ep->description ||
        (!wh_db_isnull(r, i, 10) && !ep->disabled_reason))
        goto oom;
    if (ep->unreadable)
        for (size_t k = 0; k < ep->nsecrets; k++)
            wh_sign_clear_secret(&ep->secrets[k]);
    if (ep->unreadable)
        ep->nsecrets = 0;
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

int wh_endpoints_set_secret(wh_db *db, const wh_secretbox *sb, const char *id,
                            const char *secret, char *err, size_t errlen)
{
    char sealed_b64[SEALED_B64_MAX], e[WH_ERRLEN];
    wh_secret parsed;
    if (wh_sign_parse_secret(secret, &parsed, e, sizeof(e)) != WH_OK)
        return wh_errf(err, errlen, "--secret: %s", e);
    wh_sign_clear_secret(&parsed);
    if (seal(sb, id, secret, strlen(secret), sealed_b64, err, errlen) != WH_OK)
        return WH_ERR;
    long n = 0;
    if (store_sealed(db, id, "secrets_sealed", sealed_b64, &n, err,
                     errlen) != WH_OK)
        return WH_ERR;
    if (n == 0)
        return WH_DECLINED;
    return wh_endpoints_resume(db, id, NULL, err, errlen);
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

/* The rotation's reads and writes, inside its transaction. */
static int rotate_tx(wh_db *db, const wh_secretbox *sb, const char *id,
                     const char *secret, int64_t overlap_s, int64_t now_s,
                     size_t *nlive, char *err, size_t errlen)
{
    const char *p1[] = {id};
    wh_db_result *r;
    if (wh_db_query(db,
                    "SELECT translate(encode(secrets_sealed, 'base64'), "
                    "E'\\n', '') FROM webhooks.endpoints WHERE id = $1 "
                    "FOR UPDATE",
                    1, p1, &r, err, errlen) != WH_OK)
        return WH_ERR;
    if (wh_db_rows(r) == 0) {
        wh_db_result_free(r);
        return WH_DECLINED;
    }
    unsigned char sealed[SEALED_MAX];
    char plain[WH_SECRETBOX_PLAIN_MAX + 1], e[WH_ERRLEN];
    size_t sealed_len, plain_len;
    int rc = open_sealed(sb, id, wh_db_get(r, 0, 0), wh_db_getlen(r, 0, 0),
                         sealed, &sealed_len, plain, sizeof(plain),
                         &plain_len, e, sizeof(e));
    wh_db_result_free(r);
    if (rc != WH_OK)
        return wh_errf(err, errlen, "the endpoint's secrets cannot be "
                       "opened (%s); repair it with endpoint update "
                       "--secret", e);
    /* the new secret first, then the current one (expiring after the
     * overlap; at once without one), then the older ones still live, as
     * many as fit */
    char next[SECRETS_TEXT_MAX];
    size_t used = (size_t)snprintf(next, sizeof(next), "%s", secret);
    *nlive = 1;
    char *save = NULL;
    bool first = true;
    for (char *tok = strtok_r(plain, " ", &save); tok;
         tok = strtok_r(NULL, " ", &save)) {
        int64_t expires = 0;
        bool current = first;
        first = false;
        wh_secret check;
        if (split_expiry(tok, &expires) != WH_OK ||
            wh_sign_parse_secret(tok, &check, e, sizeof(e)) != WH_OK)
            continue; /* unreadable: dropped (it would quarantine the row) */
        wh_sign_clear_secret(&check);
        if (current)
            expires = overlap_s > 0 ? now_s + overlap_s : 0;
        if (expires <= now_s || *nlive == WH_SIGN_MAX_SECRETS)
            continue;
        int n = snprintf(next + used, sizeof(next) - used, " %s@%lld", tok,
                         (long long)expires);
        if (n < 0 || (size_t)n >= sizeof(next) - used)
            break;
        used += (size_t)n;
        (*nlive)++;
    }
    memset(plain, 0, sizeof(plain));
    char sealed_b64[SEALED_B64_MAX];
    rc = seal(sb, id, next, strlen(next), sealed_b64, err, errlen);
    memset(next, 0, sizeof(next));
    if (rc != WH_OK)
        return WH_ERR;
    long n = 0;
    return store_sealed(db, id, "secrets_sealed", sealed_b64, &n, err,
                        errlen);
}

int wh_endpoints_rotate_secret(wh_db *db, const wh_secretbox *sb,
                               const char *id, const char *secret,
                               int64_t overlap_s, int64_t now_s,
                               char *secret_out, size_t *nlive, char *err,
                               size_t errlen)
{
    char e[WH_ERRLEN];
    wh_secret parsed;
    secret_out[0] = '\0';
    if (overlap_s < 0 || overlap_s > WH_SECRET_OVERLAP_MAX_S)
        return wh_errf(err, errlen, "--overlap must be 0 to %d days",
                       WH_SECRET_OVERLAP_MAX_S / 86400);
    if (secret) {
        if (wh_sign_parse_secret(secret, &parsed, e, sizeof(e)) != WH_OK)
            return wh_errf(err, errlen, "--secret: %s", e);
        wh_sign_clear_secret(&parsed);
        if (strlen(secret) >= WH_SECRET_TEXT_MAX)
            return wh_errf(err, errlen, "--secret: too long");
        wh_strlcpy(secret_out, secret, WH_SECRET_TEXT_MAX);
    } else if (wh_sign_generate_secret(secret_out, WH_SECRET_TEXT_MAX) !=
               WH_OK) {
        return wh_errf(err, errlen, "cannot generate a secret");
    }
    if (wh_db_exec(db, "BEGIN", err, errlen) != WH_OK)
        return WH_ERR;
    int rc = end_tx(db, rotate_tx(db, sb, id, secret_out, overlap_s, now_s,
                                  nlive, err, errlen),
                    err, errlen);
    if (rc != WH_OK)
        memset(secret_out, 0, WH_SECRET_TEXT_MAX);
    return rc;
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
            rc = seal(sb, aad, plain, plain_len, fresh[c], err, errlen);
            *outcome = ROW_RESEALED;
        }
        OPENSSL_cleanse(plain, sizeof(plain));
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
    OPENSSL_cleanse(fresh, sizeof(fresh));
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
