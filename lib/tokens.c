/*
 * tokens.c - the webhooks.api_tokens table (see tokens.h): the only place
 * its SQL lives. A token is generated here, hashed with SHA-256 (OpenSSL
 * EVP) and forgotten; the hash moves through SQL as base64. Verifying a
 * presented token is a shape check, one primary-key read and a
 * constant-time comparison of hashes.
 */
#include "tokens.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "base64.h"
#include "codec.h"
#include "url.h"
#include "utf8.h"

#define HASH_LEN      32
#define ID_PREFIX     "tok_"
#define ID_CHARS      16                 /* base32 characters of an id */
#define SECRET_BYTES  32
#define SECRET_CHARS  43                 /* base64url of 32 bytes, unpadded */
/* "wht_" + id characters + "_" + secret characters */
#define TOKEN_LEN (sizeof(WH_TOKEN_PREFIX) - 1 + ID_CHARS + 1 + SECRET_CHARS)
_Static_assert(TOKEN_LEN < WH_TOKEN_TEXT_MAX, "a token fits its buffer");
_Static_assert(sizeof(ID_PREFIX) + ID_CHARS == WH_TOKEN_ID_MAX,
               "an id fits its buffer");

/* RFC 4648 base32, lower case: the characters of an id. */
static const char id_alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";

static const char *const scope_names[] = {
    [WH_SCOPE_ADMIN] = "admin",
    [WH_SCOPE_APP] = "app",
    [WH_SCOPE_INGEST] = "ingest",
    [WH_SCOPE_READ] = "read",
};

const char *wh_token_scope_name(wh_token_scope s)
{
    return (unsigned)s < WH_ARRAY_LEN(scope_names) ? scope_names[s] : "?";
}

int wh_token_scope_parse(const char *text, wh_token_scope *out)
{
    for (size_t i = 0; text && i < WH_ARRAY_LEN(scope_names); i++)
        if (strcmp(text, scope_names[i]) == 0) {
            *out = (wh_token_scope)i;
            return WH_OK;
        }
    return WH_ERR;
}

void wh_token_cleanup(wh_token *t)
{
    free(t->allow_cidrs);
    t->allow_cidrs = NULL;
}

static bool is_id_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '2' && c <= '7');
}

static bool is_base64url_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
           (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/* 1 when s[0..n) are all id characters. */
static bool id_chars(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!is_id_char(s[i]))
            return false;
    return true;
}

int wh_tokens_check_id(const char *id, char *err, size_t errlen)
{
    size_t n = id ? strnlen(id, WH_TOKEN_ID_MAX) : 0;
    if (n != WH_TOKEN_ID_MAX - 1 || strncmp(id, ID_PREFIX, 4) != 0 ||
        !id_chars(id + 4, ID_CHARS))
        return wh_errf(err, errlen, "'%.*s' is not a token id (tok_ and 16 "
                       "characters a-z, 2-7)", (int)n, id ? id : "");
    return WH_OK;
}

/* hash = SHA-256 of text[0..n). */
static int sha256(const char *text, size_t n, unsigned char hash[HASH_LEN])
{
    unsigned int len = 0;
    if (EVP_Digest(text, n, hash, &len, EVP_sha256(), NULL) != 1 ||
        len != HASH_LEN)
        return WH_ERR;
    return WH_OK;
}

int wh_tokens_split(const char *text, char id_out[WH_TOKEN_ID_MAX],
                    unsigned char hash_out[32])
{
    const size_t pre = sizeof(WH_TOKEN_PREFIX) - 1;
    if (!text || strnlen(text, TOKEN_LEN + 1) != TOKEN_LEN ||
        memcmp(text, WH_TOKEN_PREFIX, pre) != 0 ||
        !id_chars(text + pre, ID_CHARS) || text[pre + ID_CHARS] != '_')
        return WH_ERR;
    for (size_t i = pre + ID_CHARS + 1; i < TOKEN_LEN; i++)
        if (!is_base64url_char(text[i]))
            return WH_ERR;
    if (sha256(text, TOKEN_LEN, hash_out) != WH_OK)
        return WH_ERR;
    memcpy(id_out, ID_PREFIX, 4);
    memcpy(id_out + 4, text + pre, ID_CHARS);
    id_out[4 + ID_CHARS] = '\0';
    return WH_OK;
}

bool wh_tokens_hash_equal(const unsigned char a[32], const unsigned char b[32])
{
    return CRYPTO_memcmp(a, b, HASH_LEN) == 0;
}

int wh_tokens_usable(const wh_token *t, int64_t now_s, char *why,
                     size_t whylen)
{
    if (t->revoked_at_s) {
        wh_errf(why, whylen, "revoked");
        return WH_DECLINED;
    }
    if (t->expires_at_s && now_s >= t->expires_at_s) {
        wh_errf(why, whylen, "expired");
        return WH_DECLINED;
    }
    return WH_OK;
}

/* ---- create ------------------------------------------------------------ */

/* The rules of a spec, each message naming the flag of `token create`. */
static int check_spec(const wh_token_spec *spec, char *err, size_t errlen)
{
    char e[WH_ERRLEN];
    size_t n = spec->name ? strlen(spec->name) : 0;
    if (n == 0)
        return wh_errf(err, errlen, "--name: must not be empty");
    if (n > WH_TOKEN_NAME_MAX)
        return wh_errf(err, errlen, "--name: at most %d bytes (got %zu)",
                       WH_TOKEN_NAME_MAX, n);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)spec->name[i] < 0x20 || spec->name[i] == 0x7f)
            return wh_errf(err, errlen, "--name: no control characters");
    if (!wh_utf8_valid(spec->name, n, NULL))
        return wh_errf(err, errlen, "--name: not valid UTF-8");
    if (spec->app && wh_codec_check_app(spec->app, e, sizeof(e)) != WH_OK)
        return wh_errf(err, errlen, "--app: %s", e);
    if ((unsigned)spec->scope >= WH_ARRAY_LEN(scope_names))
        return wh_errf(err, errlen, "--scope: must be admin, app, ingest or "
                                    "read");
    if (spec->scope == WH_SCOPE_APP && !spec->app)
        return wh_errf(err, errlen, "--scope: app needs --app");
    if (spec->scope == WH_SCOPE_ADMIN && spec->app)
        return wh_errf(err, errlen, "--scope: admin tokens reach every app, "
                                    "so they take no --app (use --scope "
                                    "app)");
    if (spec->allow_cidrs) {
        wh_netlist *list = NULL;
        if (wh_netlist_parse(spec->allow_cidrs, &list, e, sizeof(e)) != WH_OK)
            return wh_errf(err, errlen, "--allow-cidr: %s", e);
        size_t count = wh_netlist_count(list);
        wh_netlist_free(list);
        if (count == 0)
            return wh_errf(err, errlen, "--allow-cidr: no range given (omit "
                                        "it to allow any source)");
    }
    if (spec->rate_limit_per_s < 0 ||
        spec->rate_limit_per_s > WH_TOKEN_RATE_MAX)
        return wh_errf(err, errlen, "--rate-limit: 1 to %d requests a "
                       "second", WH_TOKEN_RATE_MAX);
    if (spec->expires_in_s < 0 || spec->expires_in_s > WH_TOKEN_EXPIRES_MAX_S)
        return wh_errf(err, errlen, "--expires: at most 10 years (3650d)");
    return WH_OK;
}

/* A new token: id_out and the token's text, from fresh randomness. */
static int generate(char id_out[WH_TOKEN_ID_MAX],
                    char token_out[WH_TOKEN_TEXT_MAX])
{
    unsigned char r[ID_CHARS], secret[SECRET_BYTES];
    char b64[((SECRET_BYTES + 2) / 3) * 4 + 1];
    int rc = WH_ERR;
    if (wh_random_bytes(r, sizeof(r)) != WH_OK ||
        wh_random_bytes(secret, sizeof(secret)) != WH_OK)
        goto done;
    memcpy(id_out, ID_PREFIX, 4);
    for (size_t i = 0; i < ID_CHARS; i++)
        id_out[4 + i] = id_alphabet[r[i] & 31];
    id_out[4 + ID_CHARS] = '\0';
    /* base64url: the standard encoding with - and _ for + and /, unpadded */
    size_t n = wh_base64_encode(secret, sizeof(secret), b64);
    while (n > 0 && b64[n - 1] == '=')
        b64[--n] = '\0';
    for (size_t i = 0; i < n; i++)
        b64[i] = b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : b64[i];
    int len = snprintf(token_out, WH_TOKEN_TEXT_MAX, "%s%s_%s",
                       WH_TOKEN_PREFIX, id_out + 4, b64);
    rc = len == (int)TOKEN_LEN ? WH_OK : WH_ERR;
done:
    OPENSSL_cleanse(secret, sizeof(secret));
    OPENSSL_cleanse(b64, sizeof(b64));
    return rc;
}

int wh_tokens_create(wh_db *db, const wh_token_spec *spec, int64_t now_s,
                     char token_out[WH_TOKEN_TEXT_MAX],
                     char id_out[WH_TOKEN_ID_MAX], char *err, size_t errlen)
{
    token_out[0] = id_out[0] = '\0';
    if (check_spec(spec, err, errlen) != WH_OK)
        return WH_DECLINED;
    unsigned char hash[HASH_LEN];
    char hash_b64[((HASH_LEN + 2) / 3) * 4 + 1], id[WH_TOKEN_ID_MAX];
    if (generate(id, token_out) != WH_OK ||
        sha256(token_out, TOKEN_LEN, hash) != WH_OK) {
        OPENSSL_cleanse(token_out, WH_TOKEN_TEXT_MAX);
        token_out[0] = '\0';
        return wh_errf(err, errlen, "cannot generate a token: no "
                                    "randomness or SHA-256");
    }
    wh_base64_encode(hash, sizeof(hash), hash_b64);
    char rate[24], expires[24];
    snprintf(rate, sizeof(rate), "%lld", (long long)spec->rate_limit_per_s);
    snprintf(expires, sizeof(expires), "%lld",
             (long long)(now_s + spec->expires_in_s));
    const char *params[] = {
        id, spec->name, spec->app, wh_token_scope_name(spec->scope), hash_b64,
        spec->allow_cidrs, spec->rate_limit_per_s ? rate : NULL,
        spec->expires_in_s ? expires : NULL};
    wh_db_result *r;
    /* created_at: the server's now(), to the microsecond, so listings are
     * newest first even within a second */
    if (wh_db_query(db,
                    "INSERT INTO webhooks.api_tokens (id, name, app, scope, "
                    "token_sha256, allow_cidrs, rate_limit_per_s, expires_at) "
                    "VALUES ($1, $2, $3, $4, decode($5, 'base64'), $6, "
                    "$7::integer, to_timestamp($8::bigint))",
                    (int)WH_ARRAY_LEN(params), params, &r, err,
                    errlen) != WH_OK) {
        OPENSSL_cleanse(token_out, WH_TOKEN_TEXT_MAX);
        token_out[0] = '\0';
        return WH_ERR;
    }
    wh_db_result_free(r);
    memcpy(id_out, id, sizeof(id));
    return WH_OK;
}

/* ---- reading ------------------------------------------------------------ */

/* Unix seconds of a timestamptz column, 0 for NULL. */
#define EPOCH(col) "coalesce(floor(extract(epoch FROM " col "))::bigint, 0)"

/* The columns read_row reads, in its order; get adds the hash. */
#define TOKEN_COLUMNS                                                        \
    "id, name, coalesce(app, ''), scope, allow_cidrs, "                      \
    "coalesce(rate_limit_per_s, 0), " EPOCH("expires_at") ", "               \
    EPOCH("created_at") ", " EPOCH("revoked_at") ", "                        \
    EPOCH("last_used_at")
enum { C_ID, C_NAME, C_APP, C_SCOPE, C_CIDRS, C_RATE, C_EXPIRES, C_CREATED,
       C_REVOKED, C_USED, C_HASH };

/* The non-negative integer of cell (row, col) into *out. */
static int read_count(const wh_db_result *r, int row, int col, int64_t *out)
{
    const char *s = wh_db_get(r, row, col);
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < 0)
        return WH_ERR;
    *out = v;
    return WH_OK;
}

/* Row i of r (TOKEN_COLUMNS) into *t, which owns allow_cidrs on WH_OK. */
static int read_row(const wh_db_result *r, int i, wh_token *t, char *err,
                    size_t errlen)
{
    memset(t, 0, sizeof(*t));
    const char *id = wh_db_get(r, i, C_ID), *bad = NULL;
    if (wh_strlcpy(t->id, id, sizeof(t->id)) != WH_OK)
        bad = "id";
    else if (wh_strlcpy(t->name, wh_db_get(r, i, C_NAME), sizeof(t->name)))
        bad = "name";
    else if (wh_strlcpy(t->app, wh_db_get(r, i, C_APP), sizeof(t->app)))
        bad = "app";
    else if (wh_token_scope_parse(wh_db_get(r, i, C_SCOPE), &t->scope))
        bad = "scope";
    else if (read_count(r, i, C_RATE, &t->rate_limit_per_s) ||
             read_count(r, i, C_EXPIRES, &t->expires_at_s) ||
             read_count(r, i, C_CREATED, &t->created_at_s) ||
             read_count(r, i, C_REVOKED, &t->revoked_at_s) ||
             read_count(r, i, C_USED, &t->last_used_at_s))
        bad = "time or rate";
    else if (!wh_db_isnull(r, i, C_CIDRS) &&
             !(t->allow_cidrs = strdup(wh_db_get(r, i, C_CIDRS))))
        return wh_errf(err, errlen, "out of memory");
    if (bad)
        return wh_errf(err, errlen, "token %.*s: unreadable %s column",
                       WH_TOKEN_ID_MAX, id, bad);
    return WH_OK;
}

int wh_tokens_get(wh_db *db, const char *id, wh_token *out,
                  unsigned char hash_out[32], char *err, size_t errlen)
{
    const char *params[] = {id};
    wh_db_result *r;
    memset(out, 0, sizeof(*out));
    if (wh_db_query(db,
                    "SELECT " TOKEN_COLUMNS ", encode(token_sha256, "
                    "'base64') FROM webhooks.api_tokens WHERE id = $1",
                    1, params, &r, err, errlen) != WH_OK)
        return WH_ERR;
    int rc = wh_db_rows(r) == 0 ? WH_DECLINED
                                : read_row(r, 0, out, err, errlen);
    size_t n;
    unsigned char hash[HASH_LEN];
    if (rc == WH_OK &&
        (wh_base64_decode(wh_db_get(r, 0, C_HASH),
                          wh_db_getlen(r, 0, C_HASH), hash, sizeof(hash),
                          &n) != WH_OK ||
         n != HASH_LEN)) {
        wh_token_cleanup(out);
        rc = wh_errf(err, errlen, "token %s: unreadable hash", out->id);
    }
    if (rc == WH_OK && hash_out)
        memcpy(hash_out, hash, HASH_LEN);
    wh_db_result_free(r);
    return rc;
}

int wh_tokens_verify(wh_db *db, const char *text, int64_t now_s,
                     wh_token *out, char *why, size_t whylen)
{
    char id[WH_TOKEN_ID_MAX];
    unsigned char presented[HASH_LEN], stored[HASH_LEN];
    memset(out, 0, sizeof(*out));
    if (wh_tokens_split(text, id, presented) != WH_OK) {
        wh_errf(why, whylen, "malformed");
        return WH_DECLINED;
    }
    int rc = wh_tokens_get(db, id, out, stored, why, whylen);
    if (rc == WH_DECLINED)
        wh_errf(why, whylen, "unknown");
    else if (rc == WH_OK && !wh_tokens_hash_equal(presented, stored)) {
        wh_errf(why, whylen, "wrong secret");
        rc = WH_DECLINED;
    } else if (rc == WH_OK)
        rc = wh_tokens_usable(out, now_s, why, whylen);
    if (rc != WH_OK)
        wh_token_cleanup(out);
    OPENSSL_cleanse(presented, sizeof(presented));
    return rc;
}

int wh_tokens_list(wh_db *db, wh_token_fn *fn, void *opaque, char *err,
                   size_t errlen)
{
    wh_db_result *r;
    if (wh_db_query(db,
                    "SELECT " TOKEN_COLUMNS " FROM webhooks.api_tokens "
                    "ORDER BY created_at DESC, id DESC",
                    0, NULL, &r, err, errlen) != WH_OK)
        return WH_ERR;
    int rc = WH_OK;
    for (int i = 0; i < wh_db_rows(r) && rc == WH_OK; i++) {
        wh_token *t = malloc(sizeof(*t));
        if (!t)
            rc = wh_errf(err, errlen, "out of memory");
        else if ((rc = read_row(r, i, t, err, errlen)) != WH_OK)
            free(t);
        else
            fn(t, opaque);
    }
    wh_db_result_free(r);
    return rc;
}

/* ---- changes ------------------------------------------------------------ */

int wh_tokens_revoke(wh_db *db, const char *id, char *err, size_t errlen)
{
    const char *params[] = {id};
    wh_db_result *r;
    /* one statement: the outer SELECT sees the row as it was before the
     * UPDATE, so it tells "no such token" from "revoked before" */
    if (wh_db_query(db,
                    "WITH u AS (UPDATE webhooks.api_tokens SET revoked_at = "
                    "now() WHERE id = $1 AND revoked_at IS NULL RETURNING id) "
                    "SELECT (SELECT count(*) FROM u), EXISTS (SELECT 1 FROM "
                    "webhooks.api_tokens WHERE id = $1), (SELECT "
                    "to_char(revoked_at AT TIME ZONE 'UTC', "
                    "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM "
                    "webhooks.api_tokens WHERE id = $1)",
                    1, params, &r, err, errlen) != WH_OK)
        return WH_ERR;
    int rc = WH_OK;
    if (strcmp(wh_db_get(r, 0, 0), "1") != 0) {
        if (wh_db_get(r, 0, 1)[0] != 't')
            wh_errf(err, errlen, "no token %s", id);
        else
            wh_errf(err, errlen, "token %s was already revoked (at %s)", id,
                    wh_db_get(r, 0, 2));
        rc = WH_DECLINED;
    }
    wh_db_result_free(r);
    return rc;
}

int wh_tokens_touch(wh_db *db, const char *id, char *err, size_t errlen)
{
    const char *params[] = {id};
    wh_db_result *r;
    if (wh_db_query(db,
                    "UPDATE webhooks.api_tokens SET last_used_at = now() "
                    "WHERE id = $1",
                    1, params, &r, err, errlen) != WH_OK)
        return WH_ERR;
    long n = wh_db_affected(r);
    wh_db_result_free(r);
    return n == 0 ? WH_DECLINED : WH_OK;
}
