/*
 * cache.h - the worker's endpoint cache (cache.c): every row of
 * webhooks.endpoints, by id for the delivery stage and by app for the
 * fan-out. Loaded at start, refreshed one endpoint at a time on NOTIFY
 * webhooks_endpoints and fully every endpoint-refresh period. A row that
 * cannot be used (wh_endpoint.unreadable) is quarantined: cached, matched
 * by the fan-out like any other, but not deliverable. Main thread only.
 */
#ifndef WK_CACHE_H
#define WK_CACHE_H

#include <stddef.h>

#include "db.h"
#include "endpoints.h"
#include "wh.h"

typedef struct wk_ctx wk_ctx;
typedef struct wk_cache wk_cache;

/* Loads every endpoint. WH_ERR only when the query fails: a bad row is
 * quarantined, never a reason not to start. */
int wk_cache_new(wk_ctx *ctx, wk_cache **out, char *err,
                 size_t errlen) WH_MUST_CHECK;
void wk_cache_destroy(wk_cache *c);
/* Re-reads all endpoints (query on ctx->db, then wk_cache_apply_reload
 * and wk_cache_release_held). On WH_ERR the old cache stays whole. */
int wk_cache_reload(wk_cache *c, char *err, size_t errlen) WH_MUST_CHECK;

/* The apply halves of refresh and reload, for a caller that ran
 * wh_endpoints_query itself (on another thread or connection). They only
 * decrypt and index: no Postgres. r stays the caller's. WH_ERR only when
 * out of memory (the cache is then unchanged). */
int wk_cache_apply_refresh(wk_cache *c, const char *id,
                           const wh_db_result *r, char *err,
                           size_t errlen) WH_MUST_CHECK;
int wk_cache_apply_reload(wk_cache *c, const wh_db_result *r, char *err,
                          size_t errlen) WH_MUST_CHECK;
/* Endpoints an apply found readable again after being quarantined: their
 * held deliveries (parked at 'infinity' while unreadable) are released
 * with wh_endpoints_resume, in a job on the query executor (ctx->dbq), so
 * this never waits for Postgres. One such job at a time: asked for while
 * one runs, another follows it. What fails is tried again at the next
 * refresh or reload. The executor must be destroyed before the cache
 * (its completion updates the cache). */
void wk_cache_release_held(wk_cache *c);

/* The endpoint, or NULL. Valid until the next refresh or reload: callers
 * must not keep it across event-loop iterations. A quarantined one has
 * ep->unreadable set and no secrets: never deliver to it. */
const wh_endpoint *wk_cache_get(wk_cache *c, const char *id);
/* Calls fn for every enabled endpoint of app whose filter matches type,
 * quarantined ones included (their deliveries wait until the row is
 * fixed; an unreadable filter matches nothing). */
size_t wk_cache_match(wk_cache *c, const char *app, const char *type,
                      void (*fn)(const wh_endpoint *ep, void *opaque),
                      void *opaque);
size_t wk_cache_size(const wk_cache *c);
/* Cached endpoints that are quarantined. */
size_t wk_cache_quarantined(const wk_cache *c);

#endif
