/*
 * cache.c - the worker's copy of webhooks.endpoints (see cache.h): by id
 * for the delivery stage and by app for the fan-out. Loading is a query
 * (wh_endpoints_query) and an apply that decrypts and indexes the rows;
 * a row that cannot be read is kept quarantined, logged by id and counted,
 * and released (its held deliveries made due) once a later apply reads it.
 * Main thread only.
 */
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "log.h"
#include "pattern.h"
#include "worker.h"

typedef struct {
    const wh_endpoint **eps;
    size_t n, cap;
} app_list;

/* One index of the cache; a reload builds a fresh one and swaps it in. */
typedef struct {
    wh_map *by_id;      /* id -> wh_endpoint* (owned) */
    wh_map *by_app;     /* app -> app_list* (owned) */
    size_t quarantined; /* entries with ep->unreadable */
} index_t;

struct wk_cache {
    wk_ctx *ctx;
    index_t ix;
    wh_map *held;       /* ids to release with wh_endpoints_resume (the
                           values are unused) */
};

static void app_remove(index_t *ix, const wh_endpoint *ep)
{
    app_list *l = wh_map_get(ix->by_app, ep->app);
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++)
        if (l->eps[i] == ep) {
            l->eps[i] = l->eps[--l->n];
            break;
        }
    if (l->n == 0) {
        wh_map_del(ix->by_app, ep->app);
        free(l->eps);
        free(l);
    }
}

static int app_add(index_t *ix, const wh_endpoint *ep)
{
    app_list *l = wh_map_get(ix->by_app, ep->app);
    if (!l) {
        l = calloc(1, sizeof(*l));
        if (!l || wh_map_put(ix->by_app, ep->app, l, NULL) != WH_OK) {
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

static void drop(index_t *ix, const char *id)
{
    wh_endpoint *old = wh_map_del(ix->by_id, id);
    if (old) {
        app_remove(ix, old);
        if (old->unreadable)
            ix->quarantined--;
        wh_endpoint_free(old);
    }
}

/* Puts ep (owned) into ix in place of the entry with its id. was is the
 * entry the worker had before this apply (NULL: none): a quarantined one
 * that is readable now has its held deliveries released. */
static int install(wk_cache *c, index_t *ix, wh_endpoint *ep,
                   const wh_endpoint *was)
{
    if (ep->unreadable)
        WH_ERROR("endpoint %s (app %s) is quarantined: %s; its deliveries "
                 "are held until the row is fixed", ep->id, ep->app,
                 ep->unreadable);
    else if (was && was->unreadable) {
        WH_INFO("endpoint %s is readable again: releasing the deliveries "
                "held while it was quarantined", ep->id);
        if (!ep->disabled &&
            wh_map_put(c->held, ep->id, c, NULL) != WH_OK)
            WH_ERROR("out of memory noting endpoint %s's held deliveries; "
                     "`webhookctl endpoint enable %s` releases them",
                     ep->id, ep->id);
    }
    drop(ix, ep->id);
    if (wh_map_put(ix->by_id, ep->id, ep, NULL) != WH_OK)
        goto oom;
    if (app_add(ix, ep) != WH_OK) {
        wh_map_del(ix->by_id, ep->id);
        goto oom;
    }
    if (ep->unreadable)
        ix->quarantined++;
    return WH_OK;
oom:
    wh_endpoint_free(ep);
    return WH_ERR;
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

static void index_free(index_t *ix)
{
    if (ix->by_id) {
        wh_map_each(ix->by_id, free_ep, NULL);
        wh_map_destroy(ix->by_id);
    }
    if (ix->by_app) {
        wh_map_each(ix->by_app, free_list, NULL);
        wh_map_destroy(ix->by_app);
    }
    memset(ix, 0, sizeof(*ix));
}

int wk_cache_apply_reload(wk_cache *c, const wh_db_result *r, char *err,
                          size_t errlen)
{
    index_t fresh = {.by_id = wh_map_new(), .by_app = wh_map_new()};
    if (!fresh.by_id || !fresh.by_app)
        goto oom;
    for (int i = 0; i < wh_db_rows(r); i++) {
        wh_endpoint *ep;
        if (wh_endpoints_read(r, i, &c->ctx->sb, &ep, err, errlen) != WH_OK)
            goto fail;
        if (install(c, &fresh, ep, wh_map_get(c->ix.by_id, ep->id)) !=
            WH_OK)
            goto oom;
    }
    /* swapped in only when the whole table was read: events are never
     * fanned out against a half-empty cache */
    index_free(&c->ix);
    c->ix = fresh;
    return WH_OK;
oom:
    wh_errf(err, errlen, "out of memory");
fail:
    index_free(&fresh);
    return WH_ERR;
}

int wk_cache_apply_refresh(wk_cache *c, const char *id,
                           const wh_db_result *r, char *err, size_t errlen)
{
    if (wh_db_rows(r) == 0) {
        drop(&c->ix, id); /* deleted */
        return WH_OK;
    }
    wh_endpoint *ep;
    if (wh_endpoints_read(r, 0, &c->ctx->sb, &ep, err, errlen) != WH_OK)
        return WH_ERR;
    if (strcmp(ep->id, id) != 0) {
        wh_endpoint_free(ep);
        return wh_errf(err, errlen, "endpoint %s: the query returned %s",
                       id, ep->id);
    }
    /* install reads the old entry before it replaces it */
    if (install(c, &c->ix, ep, wh_map_get(c->ix.by_id, id)) != WH_OK)
        return wh_errf(err, errlen, "out of memory caching endpoint %s", id);
    return WH_OK;
}

typedef struct {
    char (*ids)[WH_ENDPOINT_ID_MAX];
    size_t n, cap;
} id_list;

static void collect(const char *id, void *value, void *opaque)
{
    (void)value;
    id_list *l = opaque;
    if (l->n < l->cap)
        wh_strlcpy(l->ids[l->n++], id, sizeof(l->ids[0]));
}

void wk_cache_release_held(wk_cache *c)
{
    size_t n = wh_map_size(c->held);
    if (n == 0)
        return;
    /* the map must not change while it is walked: copy the ids first */
    id_list l = {.ids = calloc(n, sizeof(*l.ids)), .cap = n};
    if (!l.ids)
        return; /* tried again at the next refresh or reload */
    wh_map_each(c->held, collect, &l);
    for (size_t i = 0; i < l.n; i++) {
        char err[WH_ERRLEN];
        long released;
        if (wh_endpoints_resume(c->ctx->db, l.ids[i], &released, err,
                                sizeof(err)) != WH_OK) {
            WH_WARN("endpoint %s: cannot release its held deliveries yet: "
                    "%s", l.ids[i], err);
            continue;
        }
        WH_INFO("endpoint %s: %ld held deliveries released", l.ids[i],
                released);
        wh_map_del(c->held, l.ids[i]);
    }
    free(l.ids);
}

int wk_cache_reload(wk_cache *c, char *err, size_t errlen)
{
    wh_db_result *r;
    if (wh_endpoints_query(c->ctx->db, NULL, &r, err, errlen) != WH_OK)
        return WH_ERR;
    int rc = wk_cache_apply_reload(c, r, err, errlen);
    wh_db_result_free(r);
    if (rc == WH_OK)
        wk_cache_release_held(c);
    return rc;
}

int wk_cache_refresh(wk_cache *c, const char *id, char *err, size_t errlen)
{
    wh_db_result *r;
    if (wh_endpoints_query(c->ctx->db, id, &r, err, errlen) != WH_OK)
        return WH_ERR;
    int rc = wk_cache_apply_refresh(c, id, r, err, errlen);
    wh_db_result_free(r);
    if (rc == WH_OK)
        wk_cache_release_held(c);
    return rc;
}

int wk_cache_new(wk_ctx *ctx, wk_cache **out, char *err, size_t errlen)
{
    *out = NULL;
    wk_cache *c = calloc(1, sizeof(*c));
    if (!c)
        return wh_errf(err, errlen, "out of memory");
    c->ctx = ctx;
    c->ix.by_id = wh_map_new();
    c->ix.by_app = wh_map_new();
    c->held = wh_map_new();
    if (!c->ix.by_id || !c->ix.by_app || !c->held) {
        wk_cache_destroy(c);
        return wh_errf(err, errlen, "out of memory");
    }
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
    index_free(&c->ix);
    if (c->held)
        wh_map_destroy(c->held);
    free(c);
}

const wh_endpoint *wk_cache_get(wk_cache *c, const char *id)
{
    return wh_map_get(c->ix.by_id, id);
}

size_t wk_cache_match(wk_cache *c, const char *app, const char *type,
                      void (*fn)(const wh_endpoint *ep, void *opaque),
                      void *opaque)
{
    app_list *l = wh_map_get(c->ix.by_app, app);
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

size_t wk_cache_size(const wk_cache *c) { return wh_map_size(c->ix.by_id); }

size_t wk_cache_quarantined(const wk_cache *c) { return c->ix.quarantined; }
