/*
 * ingest.c - POST /v1/events (ingest.h).
 *
 * A request's events go through four steps:
 *   1. parse: the body is one envelope or {"events": [...]}; each
 *      envelope's bytes are decoded by the codec (lib/codec.c), so the
 *      rules and messages are the worker's own and the payload's bytes
 *      are kept as they came, never re-serialized. An Idempotency-Key
 *      header gives a single envelope without an id the id
 *      "idk_" + 32 hex digits of SHA-256 of the key.
 *   2. claim: each new (app, id) is claimed 'pending' in
 *      webhooks.api_ingested in one statement; ids published within the
 *      window are answered duplicate; one claimed by a request still in
 *      flight makes the answer 503 (retry), never a false "duplicate".
 *   3. produce: each claimed event, encoded as webhook.v1.Event, keyed by
 *      its app; the request is suspended meanwhile.
 *   4. settle, on the producer's poll thread when the last delivery
 *      report came: acknowledged claims become 'published', the others
 *      are deleted (so the client's retry publishes them), and the
 *      request is answered: 202, or 503 when any event was not
 *      acknowledged (those acknowledged are duplicates on the retry).
 */
#include "ingest.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "codec.h"
#include "json.h"
#include "log.h"

#define TOKENS_MAX 200000      /* JSON tokens in one request body */
#define IDEM_KEY_MAX 200

typedef struct ingest_job ingest_job;

typedef struct {
    ingest_job *job;
    char app[WH_ID_MAX + 1];
    char id[WH_ID_MAX + 1];
    bool duplicate;            /* answered duplicate, not produced */
    bool claimed;              /* this request claimed it */
    int acked;                 /* 1 acknowledged, -1 failed, 0 waiting */
} item;

struct ingest_job {
    api_req *r;
    bool batch;
    size_t n;
    item *items;
    pthread_mutex_t mu;
    size_t outstanding;        /* delivery reports still to come */
    bool too_large;            /* Kafka refused an event for its size */
    char failure[256];
};

static void job_free(void *p)
{
    ingest_job *j = p;
    if (!j)
        return;
    pthread_mutex_destroy(&j->mu);
    free(j->items);
    free(j);
}

/* ---- Postgres ------------------------------------------------------------ */

/* Appends s as an element of a Postgres array literal. */
static int array_add(wh_buf *b, const char *s)
{
    if (b->len > 1 && wh_buf_addc(b, ','))
        return WH_ERR;
    if (wh_buf_addc(b, '"'))
        return WH_ERR;
    for (const char *p = s; *p; p++)
        if ((*p == '"' || *p == '\\') ? wh_buf_addc(b, '\\') ||
                                            wh_buf_addc(b, *p)
                                      : wh_buf_addc(b, *p))
            return WH_ERR;
    return wh_buf_addc(b, '"');
}

/* The apps and ids of j's items that pass want() as two array
 * literals. */
static int arrays(const ingest_job *j, bool (*want)(const item *),
                  wh_buf *apps, wh_buf *ids, size_t *count)
{
    *count = 0;
    if (wh_buf_addc(apps, '{') || wh_buf_addc(ids, '{'))
        return WH_ERR;
    for (size_t i = 0; i < j->n; i++) {
        if (!want(&j->items[i]))
            continue;
        if (array_add(apps, j->items[i].app) || array_add(ids, j->items[i].id))
            return WH_ERR;
        (*count)++;
    }
    return wh_buf_addc(apps, '}') || wh_buf_addc(ids, '}') ? WH_ERR : WH_OK;
}

static bool want_new(const item *it)
{
    return !it->duplicate;
}

static bool want_acked(const item *it)
{
    return it->claimed && it->acked == 1;
}

static bool want_failed(const item *it)
{
    return it->claimed && it->acked != 1;
}

/* Step 2. WH_OK: items claimed or marked duplicate; WH_AGAIN: one is in
 * flight in another request; WH_ERR: Postgres failed (err). */
static int claim(ingest_job *j, char *err, size_t errlen)
{
    api_ctx *ctx = j->r->ctx;
    wh_buf apps, ids;
    wh_buf_init(&apps, 1u << 20);
    wh_buf_init(&ids, 1u << 20);
    size_t n = 0;
    int rc = arrays(j, want_new, &apps, &ids, &n);
    if (rc != WH_OK || n == 0) {
        wh_buf_free(&apps);
        wh_buf_free(&ids);
        return rc == WH_OK ? WH_OK : wh_errf(err, errlen, "out of memory");
    }
    char claim_s[24], window_s[24];
    snprintf(claim_s, sizeof(claim_s), "%lld",
             (long long)(2 * ctx->s->produce_timeout_ms / 1000 + 60));
    snprintf(window_s, sizeof(window_s), "%d", API_DEDUP_WINDOW_S);
    const char *params[] = {wh_buf_cstr(&apps), wh_buf_cstr(&ids), claim_s,
                            window_s};
    wh_db *db = api_db(ctx, err, errlen);
    wh_db_result *res = NULL;
    rc = db ? wh_db_query(
                  db,
                  "WITH input AS (SELECT * FROM unnest($1::text[], "
                  "$2::text[]) AS t(app, id)), "
                  "old AS (SELECT e.app, e.id, e.state FROM "
                  "webhooks.api_ingested e JOIN input USING (app, id)), "
                  "claimed AS (INSERT INTO webhooks.api_ingested (app, id, "
                  "state, claim_expires_at) SELECT app, id, 'pending', "
                  "now() + make_interval(secs => $3::int) FROM input "
                  "ON CONFLICT (app, id) DO UPDATE SET state = 'pending', "
                  "claimed_at = now(), claim_expires_at = "
                  "EXCLUDED.claim_expires_at, published_at = NULL WHERE "
                  "(webhooks.api_ingested.state = 'published' AND "
                  "webhooks.api_ingested.published_at < now() - "
                  "make_interval(secs => $4::int)) OR "
                  "(webhooks.api_ingested.state = 'pending' AND "
                  "webhooks.api_ingested.claim_expires_at < now()) "
                  "RETURNING app, id) "
                  "SELECT i.app, i.id, c.id IS NOT NULL, coalesce(o.state, "
                  "'') FROM input i LEFT JOIN claimed c USING (app, id) "
                  "LEFT JOIN old o USING (app, id)",
                  4, params, &res, err, errlen)
            : WH_ERR;
    wh_buf_free(&apps);
    wh_buf_free(&ids);
    if (rc != WH_OK) {
        if (db)
            api_db_drop();
        return WH_ERR;
    }
    bool busy = false;
    for (int row = 0; row < wh_db_rows(res); row++) {
        const char *app = wh_db_get(res, row, 0), *id = wh_db_get(res, row, 1);
        bool got = wh_db_get(res, row, 2)[0] == 't';
        const char *state = wh_db_get(res, row, 3);
        for (size_t i = 0; i < j->n; i++) {
            item *it = &j->items[i];
            if (it->duplicate || strcmp(it->app, app) || strcmp(it->id, id))
                continue;
            if (got)
                it->claimed = true;
            else if (strcmp(state, "published") == 0)
                it->duplicate = true;
            else
                busy = true;
        }
    }
    wh_db_result_free(res);
    return busy ? WH_AGAIN : WH_OK;
}

/* Step 4's Postgres part: settles the claims of j (best effort: a claim
 * left 'pending' expires). */
static void settle_claims(ingest_job *j)
{
    static const struct {
        bool (*want)(const item *);
        const char *sql;
    } steps[] = {
        {want_acked,
         "UPDATE webhooks.api_ingested e SET state = 'published', "
         "published_at = now() FROM unnest($1::text[], $2::text[]) AS "
         "t(app, id) WHERE e.app = t.app AND e.id = t.id"},
        {want_failed,
         "DELETE FROM webhooks.api_ingested e USING unnest($1::text[], "
         "$2::text[]) AS t(app, id) WHERE e.app = t.app AND e.id = t.id "
         "AND e.state = 'pending'"},
    };
    char err[WH_ERRLEN];
    for (size_t s = 0; s < WH_ARRAY_LEN(steps); s++) {
        wh_buf apps, ids;
        wh_buf_init(&apps, 1u << 20);
        wh_buf_init(&ids, 1u << 20);
        size_t n = 0;
        if (arrays(j, steps[s].want, &apps, &ids, &n) == WH_OK && n > 0) {
            const char *params[] = {wh_buf_cstr(&apps), wh_buf_cstr(&ids)};
            wh_db *db = api_db(j->r->ctx, err, sizeof(err));
            wh_db_result *res = NULL;
            if (!db || wh_db_query(db, steps[s].sql, 2, params, &res, err,
                                   sizeof(err)) != WH_OK) {
                WH_WARN("ingest: cannot settle %zu claims: %s", n, err);
                if (db)
                    api_db_drop();
            }
            wh_db_result_free(res);
        }
        wh_buf_free(&apps);
        wh_buf_free(&ids);
    }
}

/* ---- answers --------------------------------------------------------------- */

static void answer(ingest_job *j)
{
    api_req *r = j->r;
    api_stats *st = &r->ctx->stats;
    size_t failed = 0;
    for (size_t i = 0; i < j->n; i++)
        failed += j->items[i].claimed && j->items[i].acked != 1;
    if (failed) {
        atomic_fetch_add_explicit(&st->events_failed, (long long)failed,
                                  memory_order_relaxed);
        if (j->too_large) {
            api_reply_error(r, 413, "payload_too_large", "Kafka refused an "
                            "event for its size: %s", j->failure);
            return;
        }
        snprintf(r->retry_after, sizeof(r->retry_after), "1");
        api_reply_error(r, 503, "unavailable", "%zu of %zu events were not "
                        "acknowledged by Kafka (%s); retry: those that were "
                        "are answered as duplicates", failed, j->n,
                        j->failure);
        return;
    }
    json_t *list = json_array();
    for (size_t i = 0; i < j->n; i++) {
        const item *it = &j->items[i];
        atomic_fetch_add_explicit(it->duplicate ? &st->events_duplicate
                                                : &st->events_accepted,
                                  1, memory_order_relaxed);
        json_array_append_new(list, json_pack("{s:s,s:b}", "id", it->id,
                                              "duplicate", it->duplicate));
    }
    if (j->batch) {
        api_reply_json(r, 202, json_pack("{s:o}", "events", list));
        return;
    }
    json_t *one = json_incref(json_array_get(list, 0));
    json_decref(list);
    api_reply_json(r, 202, one);
}

/* Step 4: the last report of j came. */
static void settle(ingest_job *j)
{
    settle_claims(j);
    answer(j);
    api_resume(j->r);
}

/* Records the outcome of item it (NULL: none, the handler's own hold)
 * and settles j after the last one. */
static void report(ingest_job *j, item *it, int ok, bool too_large,
                   const char *errstr)
{
    pthread_mutex_lock(&j->mu);
    if (it)
        it->acked = ok ? 1 : -1;
    if (it && !ok) {
        if (!j->failure[0])
            wh_strlcpy(j->failure, errstr ? errstr : "failed",
                       sizeof(j->failure));
        if (too_large || (errstr && wh_kafka_error_too_large(errstr)))
            j->too_large = true;
    }
    bool last = --j->outstanding == 0;
    pthread_mutex_unlock(&j->mu);
    if (last)
        settle(j);
}

void api_ingest_report(void *opaque, void *msg_opaque, int ok,
                       const char *errstr)
{
    (void)opaque;
    item *it = msg_opaque;
    if (it)
        report(it->job, it, ok, false, errstr);
}

/* ---- parsing ------------------------------------------------------------------ */

/* The id an Idempotency-Key stands for. */
static void idem_id(const char *key, char out[WH_ID_MAX + 1])
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_Digest(key, strlen(key), md, &mdlen, EVP_sha256(), NULL);
    memcpy(out, "idk_", 4);
    for (size_t i = 0; i < 16; i++)
        snprintf(out + 4 + 2 * i, 3, "%02x", md[i]);
}

static bool idem_key_ok(const char *k)
{
    size_t n = strlen(k);
    if (n == 0 || n > IDEM_KEY_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (k[i] < 0x20 || k[i] > 0x7e)
            return false;
    return true;
}

/* Decodes one envelope, [p, p+len), into item it (app and id) and the
 * encoded event to produce (appended to enc). WH_ERR with err. */
static int decode_one(api_req *r, const char *p, size_t len, item *it,
                      wh_buf *enc, char *err, size_t errlen)
{
    wh_event_msg *m = NULL;
    char e[WH_ERRLEN];
    if (wh_codec_event_decode(p, len, WH_CT_JSON,
                              (size_t)r->ctx->s->payload_max, &m, e,
                              sizeof(e)) != WH_OK)
        return wh_errf(err, errlen, "%s", e);
    wh_event ev = *wh_codec_event(m);
    if (!ev.published_at_us)
        ev.published_at_us = wh_wall_us();
    wh_strlcpy(it->app, ev.app, sizeof(it->app));
    wh_strlcpy(it->id, ev.id, sizeof(it->id));
    int rc = wh_codec_event_encode(&ev, enc, e, sizeof(e));
    wh_codec_event_free(m);
    if (rc != WH_OK)
        return wh_errf(err, errlen, "%s", e);
    return WH_OK;
}

void api_ingest_events(api_req *r)
{
    api_ctx *ctx = r->ctx;
    const char *body = wh_buf_cstr(&r->body);
    size_t len = r->body.len;
    char err[WH_ERRLEN], e[WH_ERRLEN];
    wh_json doc = {0};
    wh_buf spliced, enc;
    wh_buf_init(&spliced, (size_t)ctx->s->body_max + 256);
    wh_buf_init(&enc, (size_t)ctx->s->body_max * 2 + (1u << 20));
    size_t *offs = NULL; /* each event's end in enc */
    ingest_job *j = NULL;

    if (wh_json_parse(&doc, body, len, TOKENS_MAX, e, sizeof(e)) != WH_OK) {
        api_reply_error(r, 400, "bad_request", "the body is not JSON: %s", e);
        goto done;
    }
    if (doc.toks[0].type != WH_JSON_OBJECT) {
        api_reply_error(r, 400, "bad_request", "the body must be an event "
                        "envelope or {\"events\": [...]}");
        goto done;
    }
    int32_t events = wh_json_get(&doc, 0, "events");
    const char *idem = api_header(r, "Idempotency-Key");
    if (idem && !idem_key_ok(idem)) {
        api_reply_error(r, 400, "bad_request", "Idempotency-Key must be 1 to "
                        "%d printable ASCII characters", IDEM_KEY_MAX);
        goto done;
    }
    size_t n = 1;
    if (events >= 0) {
        if (doc.toks[0].size != 1 || doc.toks[events].type != WH_JSON_ARRAY) {
            api_reply_error(r, 400, "bad_request", "a batch is {\"events\": "
                            "[envelope, ...]} and nothing else");
            goto done;
        }
        n = (size_t)doc.toks[events].size;
        if (n < 1 || n > API_BATCH_MAX) {
            api_reply_error(r, 400, "bad_request", "a batch holds 1 to %d "
                            "events, not %zu", API_BATCH_MAX, n);
            goto done;
        }
        if (idem) {
            api_reply_error(r, 400, "bad_request", "Idempotency-Key is for a "
                            "single event; give each event of a batch an "
                            "id");
            goto done;
        }
    }
    if (!(j = calloc(1, sizeof(*j))) || !(j->items = calloc(n, sizeof(item))) ||
        !(offs = calloc(n, sizeof(*offs)))) {
        api_reply_error(r, 500, "internal", "out of memory");
        goto done;
    }
    pthread_mutex_init(&j->mu, NULL);
    j->r = r;
    j->batch = events >= 0;
    j->n = n;
    /* step 1 */
    int32_t t = events >= 0 ? wh_json_child(&doc, events) : 0;
    for (size_t i = 0; i < n; i++, t = events >= 0 ? wh_json_next(&doc, t) : t) {
        const wh_json_tok *tok = &doc.toks[t];
        const char *p = body + tok->start;
        size_t plen = tok->end - tok->start;
        item *it = &j->items[i];
        it->job = j;
        if (tok->type != WH_JSON_OBJECT) {
            api_reply_error(r, 400, "bad_request", "events[%zu]: an event "
                            "envelope is a JSON object", i);
            goto done;
        }
        if (idem) {
            if (wh_json_get(&doc, t, "id") >= 0) {
                api_reply_error(r, 400, "bad_request", "Idempotency-Key "
                                "with an envelope that has an id");
                goto done;
            }
            char id[WH_ID_MAX + 1];
            idem_id(idem, id);
            /* the id goes in front of the other members; the rest of the
             * bytes, the payload's among them, stay as they came */
            if (wh_buf_addf(&spliced, "{\"id\":\"%s\"%s", id,
                            tok->size > 0 ? "," : "") ||
                wh_buf_add(&spliced, p + 1, plen - 1)) {
                api_reply_error(r, 413, "payload_too_large", "the event is "
                                "too large");
                goto done;
            }
            p = wh_buf_cstr(&spliced);
            plen = spliced.len;
        }
        char at[32] = "";
        if (j->batch)
            snprintf(at, sizeof(at), "events[%zu]: ", i);
        if (decode_one(r, p, plen, it, &enc, e, sizeof(e)) != WH_OK) {
            int status = strstr(e, "the limit is") ? 413 : 400;
            api_reply_error(r, status, status == 413 ? "payload_too_large"
                                                     : "bad_request",
                            "%s%s", at, e);
            goto done;
        }
        offs[i] = enc.len;
        if (!api_auth_app_allowed(r, it->app)) {
            api_reply_error(r, 403, "forbidden", "%sapp %s is not this "
                            "token's", at, it->app);
            goto done;
        }
        for (size_t k = 0; k < i && !it->duplicate; k++)
            it->duplicate = !strcmp(j->items[k].app, it->app) &&
                            !strcmp(j->items[k].id, it->id);
    }
    /* step 2 */
    int rc = claim(j, err, sizeof(err));
    if (rc == WH_ERR) {
        WH_WARN("ingest: cannot check event ids: %s", err);
        snprintf(r->retry_after, sizeof(r->retry_after), "1");
        api_reply_error(r, 503, "unavailable", "event ids cannot be checked "
                        "now");
        goto done;
    }
    if (rc == WH_AGAIN) {
        snprintf(r->retry_after, sizeof(r->retry_after), "1");
        api_reply_error(r, 503, "unavailable", "an event with one of these "
                        "ids is being published by another request; retry");
        settle_claims(j); /* nothing was produced: release ours */
        goto done;
    }
    /* step 3 */
    size_t sending = 0;
    for (size_t i = 0; i < n; i++)
        sending += j->items[i].claimed;
    if (sending == 0) {
        answer(j);
        goto done;
    }
    /* one more than the reports to come: the handler's own hold, so the
     * request is not answered (and freed) while events are still being
     * handed to the producer */
    j->outstanding = sending + 1;
    r->async = j;
    r->async_free = job_free;
    api_suspend(r);
    static const char *const headers[] = {"content-type", WH_CT_PROTOBUF,
                                          NULL};
    for (size_t i = 0; i < n; i++) {
        item *it = &j->items[i];
        if (!it->claimed)
            continue;
        size_t from = i ? offs[i - 1] : 0;
        int src = wh_kafka_producer_send(
            ctx->producer, ctx->s->events_topic, WH_KAFKA_PARTITION_ANY,
            it->app, strlen(it->app), enc.data + from, offs[i] - from,
            headers, it, e, sizeof(e));
        if (src != WH_OK)
            report(j, it, 0, src == WH_DECLINED,
                   src == WH_DECLINED ? "the event is over Kafka's message "
                                        "size limit" : e);
    }
    ingest_job *held = j;
    j = NULL; /* the request owns it now, and r may be gone after this */
    report(held, NULL, 1, false, NULL);
done:
    if (j && r->async != j)
        job_free(j);
    free(offs);
    wh_buf_free(&spliced);
    wh_buf_free(&enc);
    wh_json_free(&doc);
}
