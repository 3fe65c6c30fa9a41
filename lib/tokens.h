/*
 * tokens.h - the bearer tokens of the HTTP API, as stored in
 * webhooks.api_tokens: create, split and verify a presented token, revoke,
 * list, record a use. Only the SHA-256 of a token's text is stored; the
 * text itself exists only in the creator's output. Used by webhookctl
 * (`token create|list|revoke`) and by webhook-api on every request (one
 * thread per wh_db; the functions without a wh_db are pure and
 * thread-safe).
 *
 * A token's text: WH_TOKEN_PREFIX, the 16 base32 characters of its id
 * (the id without "tok_"), "_", and the base64url (no padding) of 32
 * random bytes: "wht_" + 16 + "_" + 43 characters.
 */
#ifndef WH_TOKENS_H
#define WH_TOKENS_H

#include <stdbool.h>
#include <stdint.h>

#include "db.h"
#include "wh.h"

#define WH_TOKEN_PREFIX   "wht_"
#define WH_TOKEN_ID_MAX   21          /* "tok_" + 16 + NUL */
#define WH_TOKEN_TEXT_MAX 80          /* a token's text + NUL */
#define WH_TOKEN_NAME_MAX 100

/* Longest --expires a token may have: 10 years (of 365 days). */
#define WH_TOKEN_EXPIRES_MAX_S (3650LL * 86400)
/* Bounds of a token's --rate-limit, requests per second. */
#define WH_TOKEN_RATE_MAX 1000000

/* What a token may do (webhooks.api_tokens.scope). */
typedef enum {
    WH_SCOPE_ADMIN,   /* every route, every app; never bound to an app */
    WH_SCOPE_APP,     /* every route of its app (always has one) */
    WH_SCOPE_INGEST,  /* publishing events only */
    WH_SCOPE_READ,    /* reading only */
} wh_token_scope;

/* "admin", "app", "ingest" or "read" ("?" for anything else). */
const char *wh_token_scope_name(wh_token_scope s);
/* Parses one of those names; WH_ERR for anything else (NULL included). */
int wh_token_scope_parse(const char *text, wh_token_scope *out) WH_MUST_CHECK;

/* One row of webhooks.api_tokens, without its hash. */
typedef struct {
    char id[WH_TOKEN_ID_MAX];
    char name[WH_TOKEN_NAME_MAX + 1];
    char app[WH_ID_MAX + 1];   /* "" = every app */
    wh_token_scope scope;
    char *allow_cidrs;         /* owned; NULL = any source */
    int64_t rate_limit_per_s;  /* 0 = none */
    int64_t expires_at_s;      /* unix; 0 = never */
    int64_t created_at_s;
    int64_t revoked_at_s;      /* 0 = not revoked */
    int64_t last_used_at_s;    /* 0 = never */
} wh_token;

/* Frees what t owns (allow_cidrs) and leaves it NULL; t itself is the
 * caller's. Safe on a zeroed or already cleaned-up token. */
void wh_token_cleanup(wh_token *t);

/* What `token create` asks for. */
typedef struct {
    const char *name, *app;    /* app NULL = every app */
    wh_token_scope scope;
    const char *allow_cidrs;   /* NULL = any; validated with
                                  wh_netlist_parse (lib/url.h) */
    int64_t rate_limit_per_s;  /* 0 = none */
    int64_t expires_in_s;      /* 0 = never; at most 10 years */
} wh_token_spec;

/* WH_OK when id has the shape of a token id ("tok_" + 16 characters of
 * a-z and 2-7); else WH_ERR with err saying so. No database access. */
int wh_tokens_check_id(const char *id, char *err,
                       size_t errlen) WH_MUST_CHECK;

/* Validates spec (naming the flag in err: "--app: ...", "--scope: app
 * needs --app", ...), generates the token (WH_TOKEN_PREFIX + id without
 * "tok_" + "_" + base64url of 32 random bytes, no padding), stores only its
 * SHA-256, with expires_at now_s + expires_in_s (created_at is the
 * server's time).
 * WH_OK: token_out holds the token's text (the caller should cleanse it
 * once shown) and id_out its id. WH_DECLINED: spec is invalid (nothing
 * stored); WH_ERR: no randomness, or Postgres failed (err says which). */
int wh_tokens_create(wh_db *db, const wh_token_spec *spec, int64_t now_s,
                     char token_out[WH_TOKEN_TEXT_MAX],
                     char id_out[WH_TOKEN_ID_MAX], char *err,
                     size_t errlen) WH_MUST_CHECK;

/* Splits a presented token into the id it names and the SHA-256 of the
 * whole text; WH_ERR when it is not token-shaped (no database access:
 * malformed tokens are refused without a query). Never reads past
 * WH_TOKEN_TEXT_MAX bytes. */
int wh_tokens_split(const char *text, char id_out[WH_TOKEN_ID_MAX],
                    unsigned char hash_out[32]) WH_MUST_CHECK;

/* Reads token id: *out (the caller cleans it up) and its stored hash
 * (hash_out may be NULL). WH_DECLINED when there is no such token (*out
 * then holds nothing to clean up); WH_ERR when Postgres failed or the row
 * does not read back (err). */
int wh_tokens_get(wh_db *db, const char *id, wh_token *out,
                  unsigned char hash_out[32], char *err,
                  size_t errlen) WH_MUST_CHECK;

/* Constant-time comparison of two hashes (CRYPTO_memcmp). */
bool wh_tokens_hash_equal(const unsigned char a[32],
                          const unsigned char b[32]);

/* WH_OK when t may be used at now_s; else WH_DECLINED with why:
 * "revoked", "expired" (from the second expires_at_s on). Revocation wins
 * over expiry. */
int wh_tokens_usable(const wh_token *t, int64_t now_s, char *why,
                     size_t whylen) WH_MUST_CHECK;

/* All of the above: WH_OK and *out (the caller cleans it up) for a valid,
 * usable token; WH_DECLINED (why: "malformed", "unknown", "wrong secret",
 * "revoked", "expired"; never quoting the token; *out then holds nothing to
 * clean up); WH_ERR when Postgres fails (why: its error). A malformed
 * token is refused without touching db. */
int wh_tokens_verify(wh_db *db, const char *text, int64_t now_s,
                     wh_token *out, char *why,
                     size_t whylen) WH_MUST_CHECK;

/* Marks a token revoked (now); WH_DECLINED when no such token (or already
 * revoked: err says which); WH_ERR when Postgres failed. */
int wh_tokens_revoke(wh_db *db, const char *id, char *err,
                     size_t errlen) WH_MUST_CHECK;

/* Calls fn for every token (revoked ones too), newest first; fn takes
 * ownership (wh_token_cleanup + free). WH_ERR when Postgres failed or a
 * row does not read back (fn has then seen the rows before it). */
typedef void wh_token_fn(wh_token *t, void *opaque);
int wh_tokens_list(wh_db *db, wh_token_fn *fn, void *opaque, char *err,
                   size_t errlen) WH_MUST_CHECK;

/* Records a use (last_used_at = now), cheaply; the API calls it at most
 * once a minute per token. It sends no change notification. WH_DECLINED
 * when there is no such token. */
int wh_tokens_touch(wh_db *db, const char *id, char *err,
                    size_t errlen) WH_MUST_CHECK;

#endif
