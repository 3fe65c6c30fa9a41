/*
 * endpoints.c - /v1/apps/{app}/endpoints: list, create, read one, enable
 * and disable, over lib/endpoints.c (the same rules and storage as
 * webhookctl endpoint). Bodies are read and answers built with jansson.
 * An endpoint of another app is answered 404, as one that does not exist.
 */
#include "endpoints_api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "codec.h"
#include "endpoints.h"
#include "log.h"
#include "retry.h"

/* The app of the path (segment 2) when the caller may act on it; else
 * answers 403 (or 404 for an app id that is not one) and returns NULL. */
static const char *path_app(api_req *r)
{
    char err[WH_ERRLEN];
    const char *app = r->seg[2];
    if (wh_codec_check_app(app, err, sizeof(err)) != WH_OK) {
        api_reply_error(r, 404, "not_found", "no app %.64s", app);
        return NULL;
    }
    if (!api_auth_app_allowed(r, app)) {
        api_reply_error(r, 403, "forbidden", "this token may not act on app "
                        "%s", app);
        return NULL;
    }
    return app;
}

/* A JSON array of the comma-separated patterns in list. */
static json_t *patterns(const char *list)
{
    json_t *a = json_array();
    const char *p = list;
    while (a && *p) {
        size_t n = strcspn(p, ",");
        json_array_append_new(a, json_stringn(p, n));
        p += n + (p[n] == ',');
    }
    return a;
}

static json_t *endpoint_json(const wh_endpoint *ep)
{
    char sched[WH_RETRY_TEXT_MAX];
    bool custom = ep->custom_retry &&
                  wh_retry_policy_format(&ep->retry, sched, sizeof(sched)) ==
                      WH_OK;
    return json_pack(
        "{s:s,s:s,s:s,s:s,s:o,s:s,s:b,s:i,s:o,s:o,s:o,s:b,s:o,s:b,s:b,s:s,"
        "s:s}",
        "id", ep->id, "app", ep->app, "url", ep->url, "description",
        ep->description, "events", patterns(ep->event_types), "signature",
        wh_signature_name(ep->signature), "ordered", ep->ordered,
        "max_in_flight", ep->max_in_flight, "rate_limit_per_s",
        ep->rate_limit_per_s ? json_integer(ep->rate_limit_per_s)
                             : json_null(),
        "timeout_ms",
        ep->timeout_ms ? json_integer(ep->timeout_ms) : json_null(),
        "retry_schedule", custom ? json_string(sched) : json_null(),
        "disabled", ep->disabled, "disabled_reason",
        ep->disabled_reason ? json_string(ep->disabled_reason) : json_null(),
        "client_cert", ep->has_tls_cert, "ca_bundle", ep->tls_ca != NULL,
        "created_at", ep->created_at, "updated_at", ep->updated_at);
}

typedef struct {
    const char *app;
    json_t *list;
} list_state;

static void add_listed(wh_endpoint *ep, void *opaque)
{
    list_state *st = opaque;
    if (strcmp(ep->app, st->app) == 0)
        json_array_append_new(st->list, endpoint_json(ep));
    wh_endpoint_free(ep);
}

/* Answers 503 for a Postgres failure. */
static void db_failed(api_req *r, const char *err)
{
    WH_WARN("endpoints: %s", err);
    api_db_drop();
    snprintf(r->retry_after, sizeof(r->retry_after), "1");
    api_reply_error(r, 503, "unavailable", "the database cannot be reached "
                                           "now");
}

void api_endpoints_list(api_req *r)
{
    char err[WH_ERRLEN];
    const char *app = path_app(r);
    if (!app)
        return;
    wh_db *db = api_db(r->ctx, err, sizeof(err));
    list_state st = {app, json_array()};
    if (!db || wh_endpoints_load(db, NULL, NULL, add_listed, &st, NULL, err,
                                 sizeof(err)) != WH_OK) {
        json_decref(st.list);
        db_failed(r, err);
        return;
    }
    api_reply_json(r, 200, json_pack("{s:o}", "data", st.list));
}

typedef struct {
    const char *app;
    json_t *found;
} one_state;

static void take_one(wh_endpoint *ep, void *opaque)
{
    one_state *st = opaque;
    if (!st->found && strcmp(ep->app, st->app) == 0)
        st->found = endpoint_json(ep);
    wh_endpoint_free(ep);
}

/* Reads endpoint id of app as JSON; NULL with r answered (404, 503). */
static json_t *read_one(api_req *r, const char *app, const char *id)
{
    char err[WH_ERRLEN];
    if (wh_codec_check_endpoint_id(id, err, sizeof(err)) != WH_OK) {
        api_reply_error(r, 404, "not_found", "no endpoint %.64s", id);
        return NULL;
    }
    wh_db *db = api_db(r->ctx, err, sizeof(err));
    one_state st = {app, NULL};
    if (!db || wh_endpoints_load(db, NULL, id, take_one, &st, NULL, err,
                                 sizeof(err)) != WH_OK) {
        json_decref(st.found);
        db_failed(r, err);
        return NULL;
    }
    if (!st.found)
        api_reply_error(r, 404, "not_found", "no endpoint %s in app %s", id,
                        app);
    return st.found;
}

void api_endpoints_get(api_req *r)
{
    const char *app = path_app(r);
    json_t *ep = app ? read_one(r, app, r->seg[4]) : NULL;
    if (ep)
        api_reply_json(r, 200, ep);
}

/* Parses r's body as a JSON object; NULL with r answered 400. */
static json_t *body_object(api_req *r, bool empty_ok)
{
    json_error_t je;
    if (empty_ok && r->body.len == 0)
        return json_object();
    json_t *o = json_loadb(r->body.data ? (const char *)r->body.data : "",
                           r->body.len, JSON_REJECT_DUPLICATES, &je);
    if (!o || !json_is_object(o)) {
        json_decref(o);
        api_reply_error(r, 400, "bad_request", "the body must be a JSON "
                        "object (%s)", o ? "not an object" : je.text);
        return NULL;
    }
    return o;
}

/* Reads member key of o as a string into *out (NULL when absent); false
 * with r answered 400 when it has another type. */
static bool get_string(api_req *r, json_t *o, const char *key,
                       const char **out)
{
    json_t *v = json_object_get(o, key);
    *out = NULL;
    if (!v || json_is_null(v))
        return true;
    if (!json_is_string(v)) {
        api_reply_error(r, 400, "bad_request", "\"%s\" must be a string", key);
        return false;
    }
    *out = json_string_value(v);
    return true;
}

static bool get_int(api_req *r, json_t *o, const char *key, int64_t lo,
                    int64_t hi, int64_t *out)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return true;
    if (!json_is_integer(v) || json_integer_value(v) < lo ||
        json_integer_value(v) > hi) {
        api_reply_error(r, 400, "bad_request", "\"%s\" must be an integer "
                        "from %lld to %lld", key, (long long)lo,
                        (long long)hi);
        return false;
    }
    *out = json_integer_value(v);
    return true;
}

/* The members an endpoint body may have (create and PATCH alike); false
 * with r answered 400 naming the first other one. */
static bool known_members(api_req *r, json_t *o)
{
    static const char *const known[] = {
        "url", "events", "description", "secret", "signature", "ordered",
        "max_in_flight", "rate_limit_per_s", "timeout_ms", "retry_schedule",
        "client_cert", "client_key", "ca_bundle"};
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v) {
        bool ok = false;
        for (size_t i = 0; i < WH_ARRAY_LEN(known) && !ok; i++)
            ok = strcmp(key, known[i]) == 0;
        if (!ok) {
            api_reply_error(r, 400, "bad_request", "unknown member \"%.64s\"",
                            key);
            return false;
        }
    }
    return true;
}

/* Reads "events", an array of patterns, as one comma-separated list in
 * buf (*out NULL when absent, or null with null_ok); false with r
 * answered 400. */
static bool get_events(api_req *r, json_t *o, bool null_ok, wh_buf *buf,
                       const char **out)
{
    json_t *ev = json_object_get(o, "events"), *p;
    size_t i;
    *out = NULL;
    if (!ev || (null_ok && json_is_null(ev)))
        return true;
    bool ok = json_is_array(ev) && json_array_size(ev) > 0;
    json_array_foreach(ev, i, p) {
        ok = ok && json_is_string(p) && json_string_length(p) > 0 &&
             (i == 0 || wh_buf_addc(buf, ',') == WH_OK) &&
             wh_buf_add(buf, json_string_value(p), json_string_length(p)) ==
                 WH_OK;
    }
    if (!ok) {
        api_reply_error(r, 400, "bad_request", "\"events\" must be a "
                        "non-empty array of event-type patterns");
        return false;
    }
    *out = wh_buf_cstr(buf);
    return true;
}

/* Reads "ordered": *out -1 when absent, else 0 or 1; false with r
 * answered 400. */
static bool get_ordered(api_req *r, json_t *o, int *out)
{
    json_t *ord = json_object_get(o, "ordered");
    *out = -1;
    if (ord && !json_is_boolean(ord)) {
        api_reply_error(r, 400, "bad_request", "\"ordered\" must be true or "
                                               "false");
        return false;
    }
    if (ord)
        *out = json_is_true(ord);
    return true;
}

void api_endpoints_create(api_req *r)
{
    char err[WH_ERRLEN];
    const char *app = path_app(r);
    if (!app)
        return;
    json_t *o = body_object(r, false);
    if (!o)
        return;
    wh_buf events;
    wh_buf_init(&events, 64 * 1024);
    if (!known_members(r, o))
        goto done;
    wh_endpoint_spec spec = {.app = app};
    const char *signature = NULL;
    int64_t mif = 0, rate = 0, tmo = 0;
    if (!get_string(r, o, "url", &spec.url) ||
        !get_string(r, o, "description", &spec.description) ||
        !get_string(r, o, "secret", &spec.secret) ||
        !get_string(r, o, "signature", &signature) ||
        !get_string(r, o, "retry_schedule", &spec.retry_schedule) ||
        !get_string(r, o, "client_cert", &spec.tls_cert) ||
        !get_string(r, o, "client_key", &spec.tls_key) ||
        !get_string(r, o, "ca_bundle", &spec.tls_ca) ||
        !get_int(r, o, "max_in_flight", 1, 1000, &mif) ||
        !get_int(r, o, "rate_limit_per_s", 1, 1000000, &rate) ||
        !get_int(r, o, "timeout_ms", 100, 120000, &tmo))
        goto done;
    if (!spec.url) {
        api_reply_error(r, 400, "bad_request", "\"url\" is required");
        goto done;
    }
    if (signature && wh_signature_parse(signature, &spec.signature) != WH_OK) {
        api_reply_error(r, 400, "bad_request", "\"signature\" must be hmac, "
                        "ed25519 or both");
        goto done;
    }
    int ordered;
    if (!get_ordered(r, o, &ordered) ||
        !get_events(r, o, true, &events, &spec.event_types))
        goto done;
    spec.unordered = ordered == 0;
    spec.max_in_flight = mif;
    spec.rate_limit_per_s = rate;
    spec.timeout_ms = tmo;
    char id[WH_ENDPOINT_ID_MAX], secret[WH_SECRET_TEXT_MAX];
    char pubkey[WH_SIGNKEY_TEXT_MAX];
    wh_db *db = api_db(r->ctx, err, sizeof(err));
    int rc = db ? wh_endpoints_add(db, &r->ctx->sb, &spec, id, secret, pubkey,
                                   err, sizeof(err))
                : WH_ERR;
    if (rc != WH_OK) {
        if (!db || strstr(err, "query failed"))
            db_failed(r, err);
        else
            api_reply_error(r, 400, "bad_request", "%s", err);
        goto done;
    }
    json_t *created = read_one(r, app, id);
    if (created) {
        if (secret[0])
            json_object_set_new(created, "secret", json_string(secret));
        if (pubkey[0])
            json_object_set_new(created, "public_key", json_string(pubkey));
        snprintf(r->location, sizeof(r->location), "/v1/apps/%s/endpoints/%s",
                 app, id);
        api_reply_json(r, 201, created);
    }
    explicit_bzero(secret, sizeof(secret));
done:
    wh_buf_free(&events);
    json_decref(o);
}

/* Reads a nullable member: *present when it is there, *out its string
 * (NULL for null). False with r answered 400 for another type. */
static bool get_nullable(api_req *r, json_t *o, const char *key,
                         bool *present, const char **out)
{
    json_t *v = json_object_get(o, key);
    *present = v != NULL;
    *out = NULL;
    if (v && !json_is_null(v) && !json_is_string(v)) {
        api_reply_error(r, 400, "bad_request", "\"%s\" must be a string or "
                        "null", key);
        return false;
    }
    *out = v && json_is_string(v) ? json_string_value(v) : NULL;
    return true;
}

/* The endpoint's current scheme and URL; false with r answered. */
static bool current(api_req *r, const char *app, const char *id,
                    wh_signature_kind *scheme, char *url, size_t cap)
{
    json_t *cur = read_one(r, app, id);
    if (!cur)
        return false;
    if (wh_signature_parse(json_string_value(json_object_get(cur, "signature")),
                           scheme) != WH_OK)
        *scheme = WH_SIGNATURE_HMAC;
    wh_strlcpy(url, json_string_value(json_object_get(cur, "url")), cap);
    json_decref(cur);
    return true;
}

void api_endpoints_patch(api_req *r)
{
    char err[WH_ERRLEN], url[WH_URL_MAX + 1];
    const char *app = path_app(r), *id = r->seg[4];
    wh_signature_kind scheme;
    if (!app || !current(r, app, id, &scheme, url, sizeof(url)))
        return;
    json_t *o = body_object(r, false);
    if (!o)
        return;
    wh_buf events;
    wh_buf_init(&events, 64 * 1024);
    wh_rotation rot;
    memset(&rot, 0, sizeof(rot));
    if (json_object_size(o) == 0) {
        api_reply_error(r, 400, "bad_request", "nothing to change");
        goto done;
    }
    if (!known_members(r, o))
        goto done;
    wh_endpoint_patch p = {.ordered = -1};
    const char *secret = NULL, *signature = NULL, *cert, *tkey, *ca;
    bool has_cert, has_key, has_ca, has_retry, has_rate, has_tmo;
    int64_t mif = 0, rate = 0, tmo = 0;
    if (!get_string(r, o, "url", &p.url) ||
        !get_string(r, o, "description", &p.description) ||
        !get_string(r, o, "secret", &secret) ||
        !get_string(r, o, "signature", &signature) ||
        !get_nullable(r, o, "retry_schedule", &has_retry, &p.retry_schedule) ||
        !get_nullable(r, o, "client_cert", &has_cert, &cert) ||
        !get_nullable(r, o, "client_key", &has_key, &tkey) ||
        !get_nullable(r, o, "ca_bundle", &has_ca, &ca) ||
        !get_int(r, o, "max_in_flight", 1, 1000, &mif) ||
        !get_int(r, o, "rate_limit_per_s", 1, 1000000, &rate) ||
        !get_int(r, o, "timeout_ms", 100, 120000, &tmo))
        goto done;
    has_rate = json_object_get(o, "rate_limit_per_s") != NULL;
    has_tmo = json_object_get(o, "timeout_ms") != NULL;
    p.set_retry = has_retry;
    p.max_in_flight = mif;
    p.set_rate = has_rate;
    p.rate_limit_per_s = rate;
    p.timeout_ms = tmo;
    if (!get_ordered(r, o, &p.ordered) ||
        !get_events(r, o, false, &events, &p.event_types))
        goto done;
    wh_signature_kind to = scheme;
    if (signature && wh_signature_parse(signature, &to) != WH_OK) {
        api_reply_error(r, 400, "bad_request", "\"signature\" must be hmac, "
                        "ed25519 or both");
        goto done;
    }
    if (secret && signature) {
        api_reply_error(r, 400, "bad_request", "\"secret\" and \"signature\": "
                        "one at a time");
        goto done;
    }
    if (secret && !(scheme & WH_SIGNATURE_HMAC)) {
        api_reply_error(r, 409, "conflict", "the endpoint signs with %s only: "
                        "it has no HMAC secret", wh_signature_name(scheme));
        goto done;
    }
    if (has_cert != has_key || (has_cert && !cert != !tkey)) {
        api_reply_error(r, 400, "bad_request", "\"client_cert\" and "
                        "\"client_key\" go together");
        goto done;
    }
    if (cert && strncmp(p.url ? p.url : url, "https://", 8) != 0) {
        api_reply_error(r, 409, "conflict", "a client certificate needs an "
                        "https:// URL");
        goto done;
    }
    bool plain = p.url || p.event_types || p.description || has_retry ||
                 p.ordered >= 0 || mif || has_rate || has_tmo;
    wh_db *db = api_db(r->ctx, err, sizeof(err));
    int rc = db ? WH_OK : WH_ERR;
    if (rc == WH_OK && plain)
        rc = wh_endpoints_update(db, id, &p, err, sizeof(err));
    if (rc == WH_OK && secret)
        rc = wh_endpoints_set_secret(db, &r->ctx->sb, id, secret, &rot, err,
                                     sizeof(err));
    if (rc == WH_OK && signature && to != scheme)
        rc = wh_endpoints_set_signature(db, &r->ctx->sb, id, to,
                                        wh_wall_us() / 1000000, &rot, err,
                                        sizeof(err));
    if (rc == WH_OK && has_cert)
        rc = wh_endpoints_set_client_cert(db, &r->ctx->sb, id, cert, tkey,
                                          err, sizeof(err));
    if (rc == WH_OK && has_ca)
        rc = wh_endpoints_set_ca_bundle(db, id, ca, err, sizeof(err));
    if (rc == WH_DECLINED) {
        api_reply_error(r, 404, "not_found", "no endpoint %s in app %s", id,
                        app);
        goto done;
    }
    if (rc != WH_OK) {
        if (!db || strstr(err, "query failed"))
            db_failed(r, err);
        else
            api_reply_error(r, 400, "bad_request", "%s", err);
        goto done;
    }
    json_t *now = read_one(r, app, id);
    if (now) {
        if (rot.secret[0] && !secret)
            json_object_set_new(now, "secret", json_string(rot.secret));
        if (rot.public_key[0])
            json_object_set_new(now, "public_key",
                                json_string(rot.public_key));
        api_reply_json(r, 200, now);
    }
done:
    explicit_bzero(&rot, sizeof(rot));
    wh_buf_free(&events);
    json_decref(o);
}

static void toggle(api_req *r, bool disable)
{
    char err[WH_ERRLEN];
    const char *app = path_app(r);
    if (!app)
        return;
    const char *id = r->seg[4];
    json_t *cur = read_one(r, app, id); /* 404 for another app's */
    if (!cur)
        return;
    json_decref(cur);
    const char *reason = "disabled through the API";
    json_t *o = NULL;
    if (disable) {
        if (!(o = body_object(r, true)) ||
            !get_string(r, o, "reason", &reason)) {
            json_decref(o);
            return;
        }
        if (!reason)
            reason = "disabled through the API";
    }
    wh_db *db = api_db(r->ctx, err, sizeof(err));
    int rc = db ? wh_endpoints_set_disabled(db, id, disable, reason, err,
                                            sizeof(err))
                : WH_ERR;
    json_decref(o);
    if (rc == WH_ERR) {
        db_failed(r, err);
        return;
    }
    json_t *now = read_one(r, app, id);
    if (now)
        api_reply_json(r, 200, now);
}

void api_endpoints_enable(api_req *r)
{
    toggle(r, false);
}

void api_endpoints_disable(api_req *r)
{
    toggle(r, true);
}
