/*
 * cache.c - the worker's copy of webhooks.endpoints (see cache.h): by id
 * for the delivery stage and by app for the fan-out. Loading is a query
 * (wh_endpoints_query) and an apply that decrypts and indexes the rows;
 * a row that cannot be read is kept quarantined, logged by id and counted,
 * and released (its held deliveries made due) once a later apply reads it;
 * the release's queries run on the query executor (dbq.h). Main thread,
 * except release_run on the executor's thread.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "dbq.h"
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
    /* Endpoints whose held deliveries are to be released with
     * wh_endpoints_resume: id -> the mark (a value of mark_seq, never 0,
     * cast to a pointer) given when it was last noted. */
    wh_map *held;
    uintptr_t mark_seq;
    /* The release job: at most one on the executor; a release asked for
     * while it runs starts when it is done. */
    bool releasing, release_again;
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
            wh_map_put(c->held, ep->id, (void *)++c->mark_seq, NULL) != WH_OK)
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

/* ---- releasing held deliveries ------------------------------------------
 *
 * A release is a job on the query executor, so that the loop never waits
 * for Postgres for it: wk_cache_release_held copies the held ids with
 * their marks, release_run resumes each on the executor's thread, and
 * release_done (main thread) forgets exactly the ids whose resume
 * succeeded and that were not noted again since the copy. The resume makes due whatever was
 * held when it ran; an id noted again after the copy (its row went
 * unreadable and readable again while the job was queued or running) may
 * have had deliveries held after that, so it stays and is released once
 * more, by the run that follows at once. A failed resume stays too, tried
 * again at the next refresh or reload. What is parked after the last
 * resume (a parking the recorder commits late, the endpoint disabled and
 * enabled again) is released by the next `endpoint enable` or `endpoint
 * update --secret` (webhookctl resumes itself) or the next time an apply
 * finds the row readable after quarantine. */

typedef struct {
    char id[WH_ENDPOINT_ID_MAX];
    uintptr_t mark;     /* the held map's value when copied */
    bool released;      /* release_run: the resume succeeded */
} release_id;

typedef struct {
    wk_cache *c;
    release_id *ids;
    size_t n, cap;
    bool ran;           /* release_run ran (the executor had a connection) */
} release_job;

static void collect(const char *id, void *value, void *opaque)
{
    release_job *j = opaque;
    if (j->n < j->cap) {
        wh_strlcpy(j->ids[j->n].id, id, sizeof(j->ids[0].id));
        j->ids[j->n++].mark = (uintptr_t)value;
    }
}

/* Executor thread: touches only the job's copy of the ids. */
static int release_run(wh_db *db, void *arg, char *err, size_t errlen)
{
    release_job *j = arg;
    size_t failed = 0;
    j->ran = true;
    for (size_t i = 0; i < j->n; i++) {
        char e[WH_ERRLEN];
        long released;
        if (wh_endpoints_resume(db, j->ids[i].id, &released, e,
                                sizeof(e)) != WH_OK) {
            WH_WARN("endpoint %s: cannot release its held deliveries yet: "
                    "%s", j->ids[i].id, e);
            failed++;
            continue;
        }
        j->ids[i].released = true;
        WH_INFO("endpoint %s: %ld held deliveries released", j->ids[i].id,
                released);
    }
    if (failed)
        return wh_errf(err, errlen, "%zu of %zu endpoints not released",
                       failed, j->n);
    return WH_OK;
}

static void release_done(void *arg, int rc, const char *err)
{
    release_job *j = arg;
    wk_cache *c = j->c;
    bool noted_again = false;
    if (rc != WH_OK && !j->ran) /* release_run logged each failed resume */
        WH_WARN("cannot release held deliveries yet: %s; the next endpoint "
                "refresh or reload tries again", err);
    for (size_t i = 0; i < j->n; i++) {
        uintptr_t mark = (uintptr_t)wh_map_get(c->held, j->ids[i].id);
        if (mark != j->ids[i].mark)
            noted_again |= mark != 0;
        else if (j->ids[i].released)
            wh_map_del(c->held, j->ids[i].id);
    }
    c->releasing = false;
    if (c->release_again || noted_again) {
        c->release_again = false;
        wk_cache_release_held(c);
    }
}

static void release_free(void *arg)
{
    release_job *j = arg;
    free(j->ids);
    free(j);
}

void wk_cache_release_held(wk_cache *c)
{
    size_t n = wh_map_size(c->held);
    if (n == 0 || !c->ctx->dbq)
        return;
    if (c->releasing) {
        c->release_again = true;
        return;
    }
    release_job *j = calloc(1, sizeof(*j));
    if (!j || !(j->ids = calloc(n, sizeof(*j->ids))))
        goto fail;
    j->c = c;
    j->cap = n;
    wh_map_each(c->held, collect, j);
    wk_dbq_job job = {.name = "release held deliveries", .run = release_run,
                      .done = release_done, .release = release_free,
                      .arg = j};
    if (wk_dbq_submit(c->ctx->dbq, &job, NULL) != WH_OK)
        goto fail;
    c->releasing = true;
    return;
fail:
    WH_WARN("cannot queue the release of %zu endpoints' held deliveries "
            "now; the next endpoint refresh or reload tries again", n);
    if (j)
        release_free(j);
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
