/*
 * auth.h - who may call webhook-api (auth.c): bearer tokens checked
 * against webhooks.api_tokens (lib/tokens.c) and kept in a cache for
 * API_TOKEN_CACHE_TTL, each token's source CIDRs and rate limit, and the
 * per-address limit on requests without a valid token. Any request
 * thread calls in; the cache and the limiters have their own locks.
 */
#ifndef API_AUTH_H
#define API_AUTH_H

#include <sys/socket.h>

#include "api.h"

struct api_req;

/* How long a verified token is used without reading its row again. */
#define API_TOKEN_CACHE_TTL_US (5 * 1000000LL)
/* Tokens and source addresses tracked at once; past that, a new one is
 * refused (429) until older ones age out. */
#define API_AUTH_TRACKED_MAX 65536

int api_auth_new(api_ctx *ctx, api_auth **out, char *err,
                 size_t errlen) WH_MUST_CHECK;
void api_auth_destroy(api_auth *a);

/* Lets r through (WH_OK, r->who filled in) or answers it (WH_ERR: 401
 * without a valid token, 403 outside the token's CIDRs or scopes, 429
 * over a limit, 503 when Postgres cannot be asked). need_token false:
 * only the per-address limit applies. scopes: a bit per wh_token_scope
 * the route accepts. */
int api_auth_request(api_auth *a, struct api_req *r,
                     const struct sockaddr *peer, bool need_token,
                     unsigned scopes);

/* Whether r's caller may act on app: an admin token, or a token of that
 * app (or of every app). */
bool api_auth_app_allowed(const struct api_req *r, const char *app);

#endif
