/*
 * cache.c - the worker's copy of webhooks.endpoints (see worker.h): by id
 * for the delivery stage and by app for the fan-out. Loaded at start,
 * refreshed one endpoint at a time on NOTIFY webhooks_endpoints and fully
 * every endpoint-refresh period. Main thread only.
 */
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pattern.h"
#include "worker.h"

typedef struct {
    const wh_endpoint **eps;
    size_t n, cap;
} app_list;

struct wk_cache {
    wk_ctx *ctx;
    wh_map *by_id;   /* id -> wh_endpoint* (owned) */
    wh_map *by_app;  /* app -> app_list* (owned) */
};

static void app_remove(wk_cache *c, const wh_endpoint *ep)
{
    app_list *l = wh_map_get(c->by_app, ep->app);
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++)
        if (l->eps[i] == ep) {
            l->eps[i] = l->eps[--l->n];
            break;
        }
    if (l->n == 0) {
        wh_map_del(c->by_app, ep->app);
        free(l->eps);
        free(l);
    }
}

static int app_add(wk_cache *c, const wh_endpoint *ep)
{
    app_list *l = wh_map_get(c->by_app, ep->app);
    if (!l) {
        l = calloc(1, sizeof(*l));
        if (!l || wh_map_put(c->by_app, ep->app, l, NULL) != WH_OK) {
            free(l);
            return WH_ERR;
        }
    }
    if (l->n == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 4;
        const wh_endpoint **n = realloc(l->eps, ncap * sizeof(*n));
        if (!n)
            return WH_ERR;
        l->eps = n;
        l->cap = ncap;
    }
    l->eps[l->n++] = ep;
    return WH_OK;
}

static void drop(wk_cache *c, const char *id)
{
    wh_endpoint *old = wh_map_del(c->by_id, id);
    if (old) {
        app_remove(c, old);
        wh_endpoint_free(old);
    }
}

static void install(wh_endpoint *ep, void *opaque)
{
    wk_cache *c = opaque;
    drop(c, ep->id);
    if (wh_map_put(c->by_id, ep->id, ep, NULL) != WH_OK ||
        app_add(c, ep) != WH_OK) {
        WH_ERROR("out of memory caching endpoint %s", ep->id);
        wh_map_del(c->by_id, ep->id);
        wh_endpoint_free(ep);
    }
}

static void free_ep(const char *key, void *value, void *opaque)
{
    (void)key;
    (void)opaque;
    wh_endpoint_free(value);
}

static void free_list(const char *key, void *value, void *opaque)
{
    (void)key;
    (void)opaque;
    app_list *l = value;
    free(l->eps);
    free(l);
}

static void free_maps(wh_map *by_id, wh_map *by_app)
{
    if (by_id) {
        wh_map_each(by_id, free_ep, NULL);
        wh_map_destroy(by_id);
    }
    if (by_app) {
        wh_map_each(by_app, free_list, NULL);
        wh_map_destroy(by_app);
    }
}

/* Reads every endpoint into fresh maps and swaps them in only when the
 * whole table was read: a failed reload keeps the old cache, so events are
 * never fanned out against a half-empty one. */
int wk_cache_reload(wk_cache *c, char *err, size_t errlen)
{
    wk_cache fresh = {.ctx = c->ctx, .by_id = wh_map_new(),
                      .by_app = wh_map_new()};
    int found;
    if (!fresh.by_id || !fresh.by_app) {
        free_maps(fresh.by_id, fresh.by_app);
        return wh_errf(err, errlen, "out of memory");
    }
    if (wh_endpoints_load(c->ctx->db, &c->ctx->sb, NULL, install, &fresh,
                          &found, err, errlen) != WH_OK) {
        free_maps(fresh.by_id, fresh.by_app);
        return WH_ERR;
    }
    free_maps(c->by_id, c->by_app);
    c->by_id = fresh.by_id;
    c->by_app = fresh.by_app;
    return WH_OK;
}

int wk_cache_new(wk_ctx *ctx, wk_cache **out, char *err, size_t errlen)
{
    wk_cache *c = calloc(1, sizeof(*c));
    if (!c)
        return wh_errf(err, errlen, "out of memory");
    c->ctx = ctx;
    if (wk_cache_reload(c, err, errlen) != WH_OK) {
        wk_cache_destroy(c);
        return WH_ERR;
    }
    *out = c;
    return WH_OK;
}

void wk_cache_destroy(wk_cache *c)
{
    if (!c)
        return;
    free_maps(c->by_id, c->by_app);
    free(c);
}

int wk_cache_refresh(wk_cache *c, const char *id, char *err, size_t errlen)
{
    int found;
    if (wh_endpoints_load(c->ctx->db, &c->ctx->sb, id, install, c, &found,
                          err, errlen) != WH_OK)
        return WH_ERR;
    if (!found)
        drop(c, id);
    return WH_OK;
}

const wh_endpoint *wk_cache_get(wk_cache *c, const char *id)
{
    return wh_map_get(c->by_id, id);
}

size_t wk_cache_match(wk_cache *c, const char *app, const char *type,
                      void (*fn)(const wh_endpoint *ep, void *opaque),
                      void *opaque)
{
    app_list *l = wh_map_get(c->by_app, app);
    size_t n = 0;
    if (!l)
        return 0;
    for (size_t i = 0; i < l->n; i++) {
        const wh_endpoint *ep = l->eps[i];
        if (ep->disabled || !wh_pattern_list_match(ep->event_types, type))
            continue;
        fn(ep, opaque);
        n++;
    }
    return n;
}

size_t wk_cache_size(const wk_cache *c) { return wh_map_size(c->by_id); }
