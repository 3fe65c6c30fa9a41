/*
 * auth.c - bearer tokens, scopes, source CIDRs and rate limits for
 * webhook-api (auth.h). A presented token is split (lib/tokens.c) into
 * the id it names and the SHA-256 of its text; the row is read once per
 * API_TOKEN_CACHE_TTL_US and the hashes compared in constant time, so a
 * request costs a map lookup and a hash. Requests without a valid token
 * count against their source address: API_IP_RATE_LIMIT a minute, in
 * fixed one-minute windows. Log lines name the token id, never the token.
 */
#include "auth.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "limit.h"
#include "log.h"
#include "map.h"
#include "server.h"
#include "tokens.h"

#define WINDOW_US (60 * 1000000LL)
#define TOUCH_EVERY_US (60 * 1000000LL)

typedef struct {
    wh_token tok;
    unsigned char hash[32];
    wh_netlist *cidrs;             /* the token's allow_cidrs, NULL = any */
    wh_bucket bucket;              /* its rate limit */
    int64_t fetched_us, touched_us;
} tok_entry;

typedef struct {
    int64_t window_us;             /* start of the current minute */
    int64_t count;
} ip_entry;

struct api_auth {
    api_ctx *ctx;
    pthread_mutex_t mu;
    wh_map *tokens;                /* id -> tok_entry */
    wh_map *ips;                   /* address -> ip_entry */
};

static void free_tok(tok_entry *e)
{
    if (!e)
        return;
    wh_netlist_free(e->cidrs);
    wh_token_cleanup(&e->tok);
    free(e);
}

static void free_tok_cb(const char *key, void *value, void *opaque)
{
    (void)key;
    (void)opaque;
    free_tok(value);
}

static void free_cb(const char *key, void *value, void *opaque)
{
    (void)key;
    (void)opaque;
    free(value);
}

int api_auth_new(api_ctx *ctx, api_auth **out, char *err, size_t errlen)
{
    api_auth *a = calloc(1, sizeof(*a));
    if (!a || !(a->tokens = wh_map_new()) || !(a->ips = wh_map_new())) {
        api_auth_destroy(a);
        return wh_errf(err, errlen, "out of memory");
    }
    a->ctx = ctx;
    pthread_mutex_init(&a->mu, NULL);
    *out = a;
    return WH_OK;
}

void api_auth_destroy(api_auth *a)
{
    if (!a)
        return;
    if (a->tokens) {
        wh_map_each(a->tokens, free_tok_cb, NULL);
        wh_map_destroy(a->tokens);
    }
    if (a->ips) {
        wh_map_each(a->ips, free_cb, NULL);
        wh_map_destroy(a->ips);
        pthread_mutex_destroy(&a->mu);
    }
    free(a);
}

static void count(atomic_llong *c)
{
    atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

/* ---- per-address limit ---------------------------------------------------- */

#define PRUNE_MAX 1024 /* addresses forgotten per pass */

typedef struct {
    int64_t now_us;
    char (*stale)[API_IP_TEXT_MAX];
    size_t nstale;
} prune_state;

static void find_stale(const char *key, void *value, void *opaque)
{
    prune_state *p = opaque;
    const ip_entry *e = value;
    if (p->now_us - e->window_us >= WINDOW_US && p->nstale < PRUNE_MAX)
        wh_strlcpy(p->stale[p->nstale++], key, API_IP_TEXT_MAX);
}

/* Counts one request without a valid token from ip; false when ip is
 * over API_IP_RATE_LIMIT this minute (*retry_s: seconds until the next
 * window) or no more addresses can be tracked. */
static bool ip_admit(api_auth *a, const char *ip, int64_t *retry_s)
{
    int64_t now = wh_mono_us(), limit = a->ctx->s->ip_rate_limit;
    bool ok = true;
    pthread_mutex_lock(&a->mu);
    ip_entry *e = wh_map_get(a->ips, ip);
    if (!e && wh_map_size(a->ips) >= API_AUTH_TRACKED_MAX) {
        /* forget addresses whose window is over (under the lock, so one
         * buffer serves every thread) */
        static char stale[PRUNE_MAX][API_IP_TEXT_MAX];
        prune_state p = {now, stale, 0};
        wh_map_each(a->ips, find_stale, &p);
        for (size_t i = 0; i < p.nstale; i++)
            free(wh_map_del(a->ips, stale[i]));
    }
    if (!e && wh_map_size(a->ips) < API_AUTH_TRACKED_MAX &&
        (e = calloc(1, sizeof(*e))) != NULL &&
        wh_map_put(a->ips, ip, e, NULL) != WH_OK) {
        free(e);
        e = NULL;
    }
    if (!e) {
        ok = false;
        *retry_s = 60;
    } else {
        if (now - e->window_us >= WINDOW_US) {
            e->window_us = now;
            e->count = 0;
        }
        if (e->count >= limit) {
            ok = false;
            *retry_s = (e->window_us + WINDOW_US - now + 999999) / 1000000;
        } else {
            e->count++;
        }
    }
    pthread_mutex_unlock(&a->mu);
    return ok;
}

/* Answers 401 for a request without a valid token, or 429 when its
 * address is over its limit. */
static int refuse_unauthenticated(api_auth *a, api_req *r, const char *why)
{
    int64_t retry_s = 0;
    if (!ip_admit(a, r->ip, &retry_s)) {
        count(&a->ctx->stats.rate_limited);
        snprintf(r->retry_after, sizeof(r->retry_after), "%lld",
                 (long long)(retry_s > 0 ? retry_s : 1));
        api_reply_error(r, 429, "rate_limited", "more than %lld requests a "
                        "minute without a valid token from %s",
                        (long long)a->ctx->s->ip_rate_limit, r->ip);
        return WH_ERR;
    }
    if (!why)
        return WH_OK;
    count(&a->ctx->stats.auth_failures);
    r->www_authenticate = true;
    api_reply_error(r, 401, "unauthorized", "%s", why);
    return WH_ERR;
}

/* ---- tokens ----------------------------------------------------------------- */

/* Reads token id from Postgres into a new cache entry. WH_DECLINED when
 * there is no such token; WH_ERR (err) when Postgres fails. */
static int fetch(api_auth *a, const char *id, tok_entry **out, char *err,
                 size_t errlen)
{
    wh_db *db = api_db(a->ctx, err, errlen);
    if (!db)
        return WH_ERR;
    tok_entry *e = calloc(1, sizeof(*e));
    if (!e)
        return wh_errf(err, errlen, "out of memory");
    int rc = wh_tokens_get(db, id, &e->tok, e->hash, err, errlen);
    if (rc == WH_ERR)
        api_db_drop();
    if (rc == WH_OK && e->tok.allow_cidrs && *e->tok.allow_cidrs &&
        wh_netlist_parse(e->tok.allow_cidrs, &e->cidrs, err, errlen) != WH_OK)
        rc = WH_ERR; /* the store checked it: a row changed behind it */
    if (rc != WH_OK) {
        free_tok(e);
        return rc;
    }
    wh_bucket_init(&e->bucket, e->tok.rate_limit_per_s, 0);
    e->fetched_us = wh_mono_us();
    *out = e;
    return WH_OK;
}

static bool scope_ok(const wh_token *t, unsigned scopes)
{
    return (scopes & (1u << t->scope)) != 0;
}

static bool in_cidrs(const tok_entry *e, const struct sockaddr *peer)
{
    return !e->cidrs || wh_netlist_contains(e->cidrs, peer);
}

int api_auth_request(api_auth *a, api_req *r, const struct sockaddr *peer,
                     bool need_token, unsigned scopes)
{
    if (!need_token)
        return refuse_unauthenticated(a, r, NULL);
    const char *h = api_header(r, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return refuse_unauthenticated(a, r, "an Authorization: Bearer "
                                            "token is required");
    const char *text = h + 7;
    while (*text == ' ')
        text++;
    char id[WH_TOKEN_ID_MAX], err[WH_ERRLEN];
    unsigned char hash[32];
    if (wh_tokens_split(text, id, hash) != WH_OK) {
        WH_INFO("auth: refused a malformed token from %s", r->ip);
        return refuse_unauthenticated(a, r, "the token is not valid");
    }
    int64_t now = wh_mono_us();
    pthread_mutex_lock(&a->mu);
    tok_entry *e = wh_map_get(a->tokens, id);
    bool fresh = e && now - e->fetched_us < API_TOKEN_CACHE_TTL_US;
    pthread_mutex_unlock(&a->mu);
    if (!fresh) {
        tok_entry *n = NULL;
        int rc = fetch(a, id, &n, err, sizeof(err));
        if (rc == WH_ERR) {
            WH_WARN("auth: cannot read token %s: %s", id, err);
            snprintf(r->retry_after, sizeof(r->retry_after), "1");
            api_reply_error(r, 503, "unavailable", "tokens cannot be "
                                                   "checked now");
            return WH_ERR;
        }
        pthread_mutex_lock(&a->mu);
        tok_entry *old = wh_map_del(a->tokens, id);
        if (old && n)
            n->bucket = old->bucket; /* the limit carries over */
        if (old && n)
            n->touched_us = old->touched_us;
        free_tok(old);
        if (n && (wh_map_size(a->tokens) >= API_AUTH_TRACKED_MAX ||
                  wh_map_put(a->tokens, id, n, NULL) != WH_OK)) {
            free_tok(n);
            n = NULL;
        }
        e = n;
        pthread_mutex_unlock(&a->mu);
        if (!e) {
            WH_INFO("auth: refused unknown token %s from %s", id, r->ip);
            return refuse_unauthenticated(a, r, "the token is not valid");
        }
    }
    pthread_mutex_lock(&a->mu);
    e = wh_map_get(a->tokens, id);
    char why[64] = "";
    int verdict = 0; /* 0 ok, 401, 403 cidr, 403 scope, 429 */
    if (!e || !wh_tokens_hash_equal(e->hash, hash))
        verdict = 401, wh_strlcpy(why, "wrong secret", sizeof(why));
    else if (wh_tokens_usable(&e->tok, wh_wall_us() / 1000000, why,
                              sizeof(why)) != WH_OK)
        verdict = 401;
    else if (!in_cidrs(e, peer))
        verdict = 1403;
    else if (!scope_ok(&e->tok, scopes))
        verdict = 403;
    else if (e->tok.rate_limit_per_s && !wh_bucket_take(&e->bucket, now))
        verdict = 429;
    int64_t wait_us = verdict == 429 ? wh_bucket_wait_us(&e->bucket, now) : 0;
    bool touch = false;
    if (!verdict) {
        r->who.authenticated = true;
        r->who.scope = e->tok.scope;
        wh_strlcpy(r->who.token_id, e->tok.id, sizeof(r->who.token_id));
        wh_strlcpy(r->who.app, e->tok.app, sizeof(r->who.app));
        if (now - e->touched_us >= TOUCH_EVERY_US) {
            e->touched_us = now;
            touch = true;
        }
    }
    wh_token_scope scope = e ? e->tok.scope : WH_SCOPE_READ;
    pthread_mutex_unlock(&a->mu);
    switch (verdict) {
    case 0:
        break;
    case 401:
        WH_INFO("auth: refused token %s from %s: %s", id, r->ip, why);
        return refuse_unauthenticated(a, r, "the token is not valid");
    case 1403:
        count(&a->ctx->stats.auth_failures);
        WH_INFO("auth: token %s used from %s, outside its CIDRs", id, r->ip);
        api_reply_error(r, 403, "forbidden", "this token may not be used "
                                             "from %s", r->ip);
        return WH_ERR;
    case 403:
        count(&a->ctx->stats.auth_failures);
        api_reply_error(r, 403, "forbidden", "a token of scope %s may not "
                        "call %s %s", wh_token_scope_name(scope), r->method,
                        r->path);
        return WH_ERR;
    default:
        count(&a->ctx->stats.rate_limited);
        snprintf(r->retry_after, sizeof(r->retry_after), "%lld",
                 (long long)((wait_us + 999999) / 1000000));
        api_reply_error(r, 429, "rate_limited", "token %s is over its rate "
                        "limit", id);
        return WH_ERR;
    }
    if (touch) {
        wh_db *db = api_db(a->ctx, err, sizeof(err));
        if (!db || wh_tokens_touch(db, id, err, sizeof(err)) != WH_OK) {
            WH_WARN("auth: cannot record the use of token %s: %s", id, err);
            if (db)
                api_db_drop();
        }
    }
    return WH_OK;
}

bool api_auth_app_allowed(const api_req *r, const char *app)
{
    return r->who.authenticated &&
           (r->who.scope == WH_SCOPE_ADMIN || !r->who.app[0] ||
            strcmp(r->who.app, app) == 0);
}
