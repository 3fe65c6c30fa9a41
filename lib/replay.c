/*
 * replay.c - re-sending recorded deliveries (see replay.h): the selection
 * queries over webhooks.delivery_log, loading and decoding stored events
 * from webhooks.events, building the replayed Delivery and producing it
 * to its endpoint's lane partition with per-message delivery reports.
 * Called by webhookctl on its only thread; librdkafka's threads reach this
 * code only through the delivery reports served by
 * wh_kafka_producer_poll/flush on that thread.
 */
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "replay.h"

/* The latest attempt of each delivery that matches the inner filters,
 * then the outer filters; as webhooks.delivery_status defines "latest",
 * but with the per-delivery filters (endpoint, app, event, and "some
 * attempt at or after since", which holds exactly when the latest one
 * does) applied before DISTINCT ON, where they can use the indexes.
 * Parameters: $1 delivery id, $2 event id, $3 app, $4 endpoint id,
 * $5 since, $6 until, $7 outcome, $8 row limit. */
#define TS_UTC(col, frac)                                                  \
    "to_char((" col ") AT TIME ZONE 'UTC', "                               \
    "'YYYY-MM-DD\"T\"HH24:MI:SS." frac "\"Z\"')"

#define SELECT_HEAD                                                        \
    "DECLARE wh_replay_cursor NO SCROLL CURSOR FOR "                       \
    "SELECT l.delivery_id, l.endpoint_id, l.app, l.event_id, "             \
    "l.event_type, h.top, l.outcome, coalesce(l.status_code, 0), "         \
    "coalesce(l.error_class, ''), coalesce(l.error, ''), "                 \
    TS_UTC("l.attempted_at", "MS") ", l.final, e.id IS NULL, "             \
    "coalesce(e.disabled, false), coalesce(r.attempt, 0), "                \
    "CASE WHEN r.due_at IS NULL THEN '' "                                  \
    "WHEN isfinite(r.due_at) THEN " TS_UTC("r.due_at", "MS") " "           \
    "ELSE 'infinity' END, coalesce(lp.partition, -1) "                     \
    "FROM (SELECT DISTINCT ON (d.delivery_id) d.delivery_id, "             \
    "d.endpoint_id, d.app, d.event_id, d.event_type, d.outcome, "          \
    "d.status_code, d.error_class, d.error, d.attempted_at, d.final "      \
    "FROM webhooks.delivery_log d "                                        \
    "WHERE ($1::text IS NULL OR d.delivery_id = $1) "                      \
    "AND ($2::text IS NULL OR d.event_id = $2) "                           \
    "AND ($3::text IS NULL OR d.app = $3) "                                \
    "AND ($4::text IS NULL OR d.endpoint_id = $4) "                        \
    "AND ($5::timestamptz IS NULL OR d.attempted_at >= $5) "

/* Dead letters: only deliveries with a final failed attempt are
 * candidates; the outer filter keeps those whose latest attempt is it. */
#define SELECT_DEAD_INNER                                                  \
    "AND d.delivery_id IN (SELECT f.delivery_id "                          \
    "FROM webhooks.delivery_log f WHERE f.final AND f.outcome = 'failed' " \
    "AND ($3::text IS NULL OR f.app = $3) "                                \
    "AND ($4::text IS NULL OR f.endpoint_id = $4) "                        \
    "AND ($5::timestamptz IS NULL OR f.attempted_at >= $5)) "

#define SELECT_MID                                                         \
    "ORDER BY d.delivery_id, d.attempted_at DESC, d.attempt DESC) l "      \
    "CROSS JOIN LATERAL (SELECT max(m.attempt) AS top, "                   \
    "min(m.attempted_at) AS first_at FROM webhooks.delivery_log m "        \
    "WHERE m.delivery_id = l.delivery_id) h "                              \
    "LEFT JOIN webhooks.endpoints e ON e.id = l.endpoint_id "              \
    "LEFT JOIN webhooks.retries r ON r.delivery_id = l.delivery_id "       \
    "LEFT JOIN LATERAL (SELECT partition FROM webhooks.lanes n "           \
    "WHERE n.endpoint_id = l.endpoint_id "                                 \
    "ORDER BY n.updated_at DESC, n.partition LIMIT 1) lp ON true "          \
    "WHERE ($6::timestamptz IS NULL OR l.attempted_at <= $6) "             \
    "AND ($7::text IS NULL OR l.outcome = $7) "

#define SELECT_DEAD_OUTER "AND l.final AND l.outcome = 'failed' "

#define ORDER_REPLAY "ORDER BY h.first_at, l.delivery_id LIMIT $8::bigint"
#define ORDER_NEWEST                                                       \
    "ORDER BY l.attempted_at DESC, l.delivery_id LIMIT $8::bigint"

static const char *const select_sql[2][2] = {
    /* [dead][newest_first] */
    {SELECT_HEAD SELECT_MID ORDER_REPLAY,
     SELECT_HEAD SELECT_MID ORDER_NEWEST},
    {SELECT_HEAD SELECT_DEAD_INNER SELECT_MID SELECT_DEAD_OUTER ORDER_REPLAY,
     SELECT_HEAD SELECT_DEAD_INNER SELECT_MID SELECT_DEAD_OUTER ORDER_NEWEST},
};

/* Columns of the selection. */
enum {
    C_DELIVERY, C_ENDPOINT, C_APP, C_EVENT, C_TYPE, C_TOP, C_OUTCOME,
    C_STATUS, C_ERROR_CLASS, C_ERROR, C_AT, C_FINAL, C_EP_MISSING,
    C_EP_DISABLED, C_RETRY_ATTEMPT, C_RETRY_DUE, C_LANE_PART, C_NCOLS
};

/* Longest piece of user input echoed in a message. */
#define SHOW_MAX 64

#define FETCH_SQL_(n) "FETCH " #n " FROM wh_replay_cursor"
#define FETCH_SQL(n) FETCH_SQL_(n)

static const char event_sql[] =
    "SELECT octet_length(event), CASE WHEN octet_length(event) <= $3::int "
    "THEN encode(event, 'hex') END FROM webhooks.events "
    "WHERE app = $1 AND event_id = $2 ORDER BY received_at DESC LIMIT 1";

static const char apps_sql[] =
    "SELECT DISTINCT app FROM webhooks.delivery_log WHERE event_id = $1 "
    "ORDER BY app LIMIT 3";

/* ---- times -------------------------------------------------------------- */

int wh_replay_resolve_time(wh_db *db, const char *text, char *out,
                           size_t outlen, char *err, size_t errlen)
{
    static const char ago_sql[] =
        "SELECT " TS_UTC("now() - $1::bigint * interval '1 millisecond'",
                         "US");
    static const char ts_sql[] = "SELECT " TS_UTC("$1::timestamptz", "US");
    char e[WH_ERRLEN], num[32];
    int64_t ms;
    wh_db_result *r = NULL;
    assert(outlen >= WH_REPLAY_TIME_MAX);
    out[0] = '\0';
    if (!text || !*text) {
        wh_errf(err, errlen, "time is empty");
        return WH_DECLINED;
    }
    size_t n = strnlen(text, WH_REPLAY_TIME_INPUT_MAX + 1);
    if (n > WH_REPLAY_TIME_INPUT_MAX) {
        wh_errf(err, errlen, "time is longer than %d bytes",
                WH_REPLAY_TIME_INPUT_MAX);
        return WH_DECLINED;
    }
    /* a bare number is no duration here: "2026" is not 2 seconds ago */
    bool ago = strspn(text, "0123456789") < n &&
               wh_parse_duration_ms(text, &ms) == WH_OK;
    const char *param = text;
    if (ago) {
        snprintf(num, sizeof(num), "%lld", (long long)ms);
        param = num;
    }
    if (wh_db_query(db, ago ? ago_sql : ts_sql, 1, &param, &r, e,
                    sizeof(e)) != WH_OK) {
        if (!wh_db_alive(db))
            return wh_errf(err, errlen, "%s", e);
        wh_errf(err, errlen,
                "'%.*s' is not a time (use e.g. '2026-11-23 15:00', "
                "'2026-11-23T15:00:00Z' or a duration ago such as 2h)",
                SHOW_MAX, text);
        return WH_DECLINED;
    }
    int rc = WH_OK;
    if (wh_db_rows(r) != 1 || wh_db_isnull(r, 0, 0) ||
        !*wh_db_get(r, 0, 0)) {
        wh_errf(err, errlen, "'%.*s' is not a finite time", SHOW_MAX,
                text);
        rc = WH_DECLINED;
    } else if (wh_strlcpy(out, wh_db_get(r, 0, 0), outlen) != WH_OK) {
        rc = wh_errf(err, errlen, "time '%s' does not fit",
                     wh_db_get(r, 0, 0));
    }
    wh_db_result_free(r);
    return rc;
}

/* ---- selection ---------------------------------------------------------- */

static int parse_u32(const char *s, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || v > UINT32_MAX || *s == '-')
        return WH_ERR;
    *out = (uint32_t)v;
    return WH_OK;
}

static int row_target(const wh_db_result *r, int i, wh_replay_target *t,
                      char *err, size_t errlen)
{
    uint32_t status;
    char *end;
    memset(t, 0, sizeof(*t));
    t->delivery_id = wh_db_get(r, i, C_DELIVERY);
    t->endpoint_id = wh_db_get(r, i, C_ENDPOINT);
    t->app = wh_db_get(r, i, C_APP);
    t->event_id = wh_db_get(r, i, C_EVENT);
    t->event_type = wh_db_get(r, i, C_TYPE);
    t->last_outcome = wh_db_get(r, i, C_OUTCOME);
    t->last_error_class = wh_db_get(r, i, C_ERROR_CLASS);
    t->last_error = wh_db_get(r, i, C_ERROR);
    t->last_attempt_at = wh_db_get(r, i, C_AT);
    t->last_final = strcmp(wh_db_get(r, i, C_FINAL), "t") == 0;
    t->endpoint_missing = strcmp(wh_db_get(r, i, C_EP_MISSING), "t") == 0;
    t->endpoint_disabled = strcmp(wh_db_get(r, i, C_EP_DISABLED), "t") == 0;
    t->retry_due_at = wh_db_get(r, i, C_RETRY_DUE);
    if (parse_u32(wh_db_get(r, i, C_TOP), &t->attempts) != WH_OK ||
        t->attempts == UINT32_MAX ||
        parse_u32(wh_db_get(r, i, C_STATUS), &status) != WH_OK ||
        status > 999 ||
        parse_u32(wh_db_get(r, i, C_RETRY_ATTEMPT), &t->retry_attempt) !=
            WH_OK)
        return wh_errf(err, errlen, "delivery %s: unexpected attempt or "
                       "status in the history", t->delivery_id);
    t->last_status = (int)status;
    t->next_attempt = t->attempts + 1;
    errno = 0;
    long lane = strtol(wh_db_get(r, i, C_LANE_PART), &end, 10);
    if (errno || *end || lane < -1 || lane > INT32_MAX)
        return wh_errf(err, errlen, "delivery %s: unexpected lane partition "
                       "'%s'", t->delivery_id,
                       wh_db_get(r, i, C_LANE_PART));
    t->lane_partition = (int32_t)lane;
    return WH_OK;
}

static void rollback(wh_db *db)
{
    char e[WH_ERRLEN];
    if (wh_db_alive(db))
        WH_IGNORE(wh_db_exec(db, "ROLLBACK", e, sizeof(e)));
}

int wh_replay_select(wh_db *db, const wh_replay_filter *f,
                     wh_replay_row_fn *fn, void *opaque, size_t *n_selected,
                     bool *more, char *err, size_t errlen)
{
    char limit[32];
    wh_db_result *r = NULL;
    size_t seen = 0;
    bool beyond = false;
    assert(f->limit >= 1 && f->limit <= WH_REPLAY_LIMIT_MAX);
    assert(f->kind >= WH_REPLAY_BY_DELIVERY && f->kind <= WH_REPLAY_DEAD);
    if (n_selected)
        *n_selected = 0;
    if (more)
        *more = false;
    /* one row more than the limit tells whether more matched */
    snprintf(limit, sizeof(limit), "%lld", (long long)f->limit + 1);
    const char *params[] = {f->delivery_id, f->event_id, f->app,
                            f->endpoint_id, f->since, f->until, f->outcome,
                            limit};
    const char *sql = select_sql[f->kind == WH_REPLAY_DEAD][f->newest_first];
    if (wh_db_exec(db, "BEGIN READ ONLY", err, errlen) != WH_OK)
        return WH_ERR;
    if (wh_db_query(db, sql, (int)WH_ARRAY_LEN(params), params, &r, err,
                    errlen) != WH_OK)
        goto fail;
    wh_db_result_free(r);
    r = NULL;
    for (;;) {
        if (wh_db_query(db, FETCH_SQL(WH_REPLAY_FETCH), 0, NULL, &r, err,
                        errlen) != WH_OK)
            goto fail;
        int n = wh_db_rows(r);
        if (n > 0 && wh_db_cols(r) != C_NCOLS) {
            wh_errf(err, errlen, "selection returned %d columns, expected %d",
                    wh_db_cols(r), C_NCOLS);
            goto fail;
        }
        for (int i = 0; i < n; i++) {
            wh_replay_target t;
            if ((int64_t)seen == f->limit) {
                beyond = true;
                break;
            }
            if (row_target(r, i, &t, err, errlen) != WH_OK)
                goto fail;
            seen++;
            if (fn(opaque, &t, err, errlen) != WH_OK)
                goto fail;
        }
        wh_db_result_free(r);
        r = NULL;
        if (beyond || n < WH_REPLAY_FETCH)
            break;
    }
    if (wh_db_exec(db, "COMMIT", err, errlen) != WH_OK)
        goto fail;
    if (n_selected)
        *n_selected = seen;
    if (more)
        *more = beyond;
    return WH_OK;
fail:
    wh_db_result_free(r);
    rollback(db);
    if (n_selected)
        *n_selected = seen;
    return WH_ERR;
}

/* ---- events and deliveries ---------------------------------------------- */

/* Replaces b's content with the bytes of hex[0..n). */
static int hex_decode(wh_buf *b, const char *hex, size_t n, char *err,
                      size_t errlen)
{
    size_t bad;
    if (n % 2 != 0)
        return wh_errf(err, errlen, "stored event: odd number of hex digits");
    if (n / 2 > b->max)
        return wh_errf(err, errlen, "stored event is %zu bytes, the limit is "
                       "%zu", n / 2, b->max);
    if (wh_buf_set_hex(b, hex, n, &bad) != WH_OK)
        return bad < n ? wh_errf(err, errlen,
                                 "stored event: bad hex digit at %zu", bad)
                       : wh_errf(err, errlen, "out of memory");
    return WH_OK;
}

int wh_replay_decode_event(const char *hex, size_t hexlen, const char *app,
                           const char *event_id, wh_buf *scratch,
                           wh_event_msg **out, char *err, size_t errlen)
{
    char e[WH_ERRLEN];
    *out = NULL;
    if (hexlen / 2 > WH_REPLAY_EVENT_MAX)
        return wh_errf(err, errlen, "stored event is %zu bytes, the limit "
                       "is %d", hexlen / 2, WH_REPLAY_EVENT_MAX);
    if (hex_decode(scratch, hex, hexlen, err, errlen) != WH_OK)
        return WH_ERR;
    wh_event_msg *m;
    if (wh_codec_event_decode(scratch->data, scratch->len, WH_CT_PROTOBUF,
                              WH_REPLAY_PAYLOAD_MAX, &m, e,
                              sizeof(e)) != WH_OK)
        return wh_errf(err, errlen, "stored event does not decode: %s", e);
    const wh_event *ev = wh_codec_event(m);
    if (strcmp(ev->app, app) != 0 || strcmp(ev->id, event_id) != 0) {
        wh_errf(err, errlen, "stored event is %.*s of app %.*s, expected "
                "%.*s of app %.*s", WH_ID_MAX, ev->id, WH_ID_MAX, ev->app,
                WH_ID_MAX, event_id, WH_ID_MAX, app);
        wh_codec_event_free(m);
        return WH_ERR;
    }
    *out = m;
    return WH_OK;
}

int wh_replay_build(const wh_replay_target *t, const wh_event *ev,
                    int64_t now_us, wh_buf *out, char *err, size_t errlen)
{
    wh_delivery d = {
        .delivery_id = t->delivery_id,
        .endpoint_id = t->endpoint_id,
        .attempt = t->next_attempt,
        .kind = WH_DELIVERY_REPLAY,
        .created_at_us = now_us,
        .source_topic = WH_REPLAY_SOURCE,
        .source_partition = -1,
        .source_offset = -1,
        .event = *ev,
    };
    assert(t->next_attempt >= 1);
    wh_buf_reset(out);
    if (wh_codec_delivery_encode(&d, out, err, errlen) != WH_OK) {
        wh_buf_reset(out);
        return WH_ERR;
    }
    return WH_OK;
}

/* ---- the run ------------------------------------------------------------ */

/* A produced delivery waiting for its report: the strings follow the
 * struct in the same allocation. */
typedef struct inflight {
    struct inflight *prev, *next;
    uint32_t attempt;
    bool endpoint_disabled;
    const char *delivery_id, *endpoint_id, *app, *event_id;
} inflight;

typedef struct {
    wh_db *db;
    const wh_replay_sink *sink;
    wh_kafka_producer *producer;
    wh_replay_report_fn *report;
    void *opaque;
    wh_replay_counts *counts;
    wh_buf scratch;              /* stored event bytes */
    wh_buf value;                /* encoded Delivery */
    /* the event of the previous delivery, kept for the next one (all
     * deliveries of an event in a row) */
    char ev_app[WH_ID_MAX + 1], ev_id[WH_ID_MAX + 1];
    bool ev_valid;               /* ev_app/ev_id name the cached lookup */
    int ev_rc;                   /* WH_OK, WH_DECLINED or WH_ERR */
    wh_event_msg *ev;
    char ev_err[WH_ERRLEN];
    inflight *head;
    uint64_t reports;            /* delivery reports served */
    bool abandoned;              /* remaining reports are not awaited */
} run_ctx;

static inflight *inflight_new(const wh_replay_target *t)
{
    size_t l1 = strlen(t->delivery_id) + 1, l2 = strlen(t->endpoint_id) + 1,
           l3 = strlen(t->app) + 1, l4 = strlen(t->event_id) + 1;
    inflight *f = malloc(sizeof(*f) + l1 + l2 + l3 + l4);
    if (!f)
        return NULL;
    char *p = (char *)(f + 1);
    memset(f, 0, sizeof(*f));
    f->attempt = t->next_attempt;
    f->endpoint_disabled = t->endpoint_disabled;
    f->delivery_id = memcpy(p, t->delivery_id, l1);
    f->endpoint_id = memcpy(p += l1, t->endpoint_id, l2);
    f->app = memcpy(p += l2, t->app, l3);
    f->event_id = memcpy(p += l3, t->event_id, l4);
    return f;
}

static void inflight_link(run_ctx *c, inflight *f)
{
    f->prev = NULL;
    f->next = c->head;
    if (c->head)
        c->head->prev = f;
    c->head = f;
}

static void inflight_unlink(run_ctx *c, inflight *f)
{
    if (f->prev)
        f->prev->next = f->next;
    else
        c->head = f->next;
    if (f->next)
        f->next->prev = f->prev;
}

static void report_inflight(run_ctx *c, const inflight *f,
                            wh_replay_status st, const char *detail)
{
    wh_replay_target t;
    memset(&t, 0, sizeof(t));
    t.delivery_id = f->delivery_id;
    t.endpoint_id = f->endpoint_id;
    t.app = f->app;
    t.event_id = f->event_id;
    t.next_attempt = f->attempt;
    t.attempts = f->attempt - 1;
    t.endpoint_disabled = f->endpoint_disabled;
    c->report(c->opaque, &t, st, detail);
}

static void on_report(void *opaque, void *msg_opaque, int ok,
                      const char *errstr)
{
    run_ctx *c = opaque;
    inflight *f = msg_opaque;
    char detail[WH_ERRLEN];
    c->reports++;
    inflight_unlink(c, f);
    if (!c->abandoned) {
        if (ok) {
            c->counts->sent++;
            report_inflight(c, f, WH_REPLAY_SENT, "");
        } else {
            c->counts->failed++;
            snprintf(detail, sizeof(detail), "Kafka refused it: %s",
                     errstr ? errstr : "unknown error");
            report_inflight(c, f, WH_REPLAY_FAILED, detail);
        }
    }
    free(f);
}

static void report_target(run_ctx *c, const wh_replay_target *t,
                          wh_replay_status st, const char *detail)
{
    switch (st) {
    case WH_REPLAY_SENT:
    case WH_REPLAY_DRY_RUN:
        c->counts->sent++;
        break;
    case WH_REPLAY_NO_EVENT:
        c->counts->no_event++;
        break;
    case WH_REPLAY_SKIPPED:
        c->counts->skipped++;
        break;
    case WH_REPLAY_FAILED:
        c->counts->failed++;
        break;
    }
    c->report(c->opaque, t, st, detail);
}

/* Looks up the event of t, reusing the previous lookup when it was the
 * same event. Returns WH_OK (c->ev set), WH_DECLINED (not stored), WH_ERR
 * with c->ev_err (unusable row), or WH_AGAIN when the query failed (the
 * transaction is lost; err says why). */
static int lookup_event(run_ctx *c, const wh_replay_target *t, char *err,
                        size_t errlen)
{
    char max[32];
    wh_db_result *r;
    if (c->ev_valid && strcmp(c->ev_app, t->app) == 0 &&
        strcmp(c->ev_id, t->event_id) == 0)
        return c->ev_rc;
    wh_codec_event_free(c->ev);
    c->ev = NULL;
    c->ev_valid = false;
    c->ev_err[0] = '\0';
    snprintf(max, sizeof(max), "%d", WH_REPLAY_EVENT_MAX);
    const char *params[] = {t->app, t->event_id, max};
    if (wh_db_query(c->db, event_sql, 3, params, &r, err, errlen) != WH_OK)
        return WH_AGAIN;
    if (wh_db_rows(r) == 0) {
        c->ev_rc = WH_DECLINED;
    } else if (wh_db_isnull(r, 0, 1)) {
        c->ev_rc = wh_errf(c->ev_err, sizeof(c->ev_err),
                           "stored event is %s bytes, the limit is %d",
                           wh_db_get(r, 0, 0), WH_REPLAY_EVENT_MAX);
    } else {
        c->ev_rc = wh_replay_decode_event(
            wh_db_get(r, 0, 1), wh_db_getlen(r, 0, 1), t->app, t->event_id,
            &c->scratch, &c->ev, c->ev_err, sizeof(c->ev_err));
    }
    wh_db_result_free(r);
    wh_buf_reset(&c->scratch);
    c->ev_valid =
        wh_strlcpy(c->ev_app, t->app, sizeof(c->ev_app)) == WH_OK &&
        wh_strlcpy(c->ev_id, t->event_id, sizeof(c->ev_id)) == WH_OK;
    return c->ev_rc;
}

int32_t wh_replay_partition(const wh_replay_target *t, int32_t partition_cnt)
{
    assert(partition_cnt >= 1);
    return wh_kafka_partition_or_key(t->lane_partition, t->endpoint_id,
                                     strlen(t->endpoint_id), partition_cnt);
}

/* Queues the encoded delivery in c->value to its partition
 * (wh_replay_partition), waiting while the topic's partition count is not
 * known yet or the producer's queue is full, as long as reports keep
 * arriving. Returns WH_OK, WH_ERR when Kafka refused this message, or
 * WH_AGAIN when it could not be queued for the sink's timeout (Kafka is
 * not taking anything, or its metadata cannot be read). */
static int produce(run_ctx *c, const wh_replay_target *t, char *err,
                   size_t errlen)
{
    static const char *const headers[] = {"content-type", WH_CT_PROTOBUF,
                                          NULL};
    char why[WH_ERRLEN];
    inflight *f = inflight_new(t);
    if (!f)
        return wh_errf(err, errlen, "out of memory");
    uint64_t seen = c->reports;
    int64_t progress_us = wh_mono_us();
    for (;;) {
        int32_t n;
        bool counted = false;
        int rc = wh_kafka_producer_partitions(c->producer, c->sink->topic, &n,
                                              why, sizeof(why));
        if (rc == WH_OK) {
            counted = true;
            rc = wh_kafka_producer_send(
                c->producer, c->sink->topic, wh_replay_partition(t, n),
                t->endpoint_id, strlen(t->endpoint_id), c->value.data,
                c->value.len, headers, f, err, errlen);
        } else if (rc == WH_ERR) {
            wh_strlcpy(err, why, errlen);
        }
        if (rc == WH_OK) {
            inflight_link(c, f);
            wh_kafka_producer_poll(c->producer, 0);
            return WH_OK;
        }
        if (rc != WH_AGAIN) {
            free(f);
            return WH_ERR;
        }
        wh_kafka_producer_poll(c->producer, 50);
        if (c->reports != seen) {
            seen = c->reports;
            progress_us = wh_mono_us();
        } else if (wh_mono_us() - progress_us >
                   c->sink->ack_timeout_ms * 1000) {
            free(f);
            if (counted)
                wh_errf(err, errlen, "Kafka producer queue stayed full for "
                        "%lld ms", (long long)c->sink->ack_timeout_ms);
            else
                wh_errf(err, errlen, "%s (for %lld ms)", why,
                        (long long)c->sink->ack_timeout_ms);
            return WH_AGAIN;
        }
    }
}

static int on_row(void *opaque, const wh_replay_target *t, char *err,
                  size_t errlen)
{
    run_ctx *c = opaque;
    char detail[WH_ERRLEN + 64];
    if (t->endpoint_missing) {
        snprintf(detail, sizeof(detail), "endpoint %s no longer exists",
                 t->endpoint_id);
        report_target(c, t, WH_REPLAY_FAILED, detail);
        return WH_OK;
    }
    if (t->retry_attempt > 0) {
        snprintf(detail, sizeof(detail),
                 "a retry (attempt %u) is already scheduled for %s; the "
                 "scheduler sends it", t->retry_attempt, t->retry_due_at);
        report_target(c, t, WH_REPLAY_SKIPPED, detail);
        return WH_OK;
    }
    int rc = lookup_event(c, t, err, errlen);
    if (rc == WH_AGAIN)
        return WH_ERR;
    if (rc == WH_DECLINED) {
        snprintf(detail, sizeof(detail),
                 "event %s of app %s is no longer stored (retention)",
                 t->event_id, t->app);
        report_target(c, t, WH_REPLAY_NO_EVENT, detail);
        return WH_OK;
    }
    if (rc != WH_OK) {
        report_target(c, t, WH_REPLAY_FAILED, c->ev_err);
        return WH_OK;
    }
    char e[WH_ERRLEN];
    if (wh_replay_build(t, wh_codec_event(c->ev), wh_wall_us(), &c->value, e,
                        sizeof(e)) != WH_OK) {
        snprintf(detail, sizeof(detail), "cannot encode the delivery: %s", e);
        report_target(c, t, WH_REPLAY_FAILED, detail);
        return WH_OK;
    }
    if (!c->sink) {
        report_target(c, t, WH_REPLAY_DRY_RUN, "");
        return WH_OK;
    }
    rc = produce(c, t, e, sizeof(e));
    if (rc != WH_OK)
        report_target(c, t, WH_REPLAY_FAILED, e);
    if (rc == WH_AGAIN)
        return wh_errf(err, errlen, "%s", e);
    return WH_OK;
}

/* Waits for the reports of everything produced; reports the rest as
 * failed once no report arrived for the sink's timeout. */
static void await_reports(run_ctx *c)
{
    char e[WH_ERRLEN], detail[WH_ERRLEN];
    uint64_t seen = c->reports;
    int64_t progress_us = wh_mono_us();
    while (c->head) {
        WH_IGNORE(wh_kafka_producer_flush(c->producer, 100, e, sizeof(e)));
        if (c->reports != seen) {
            seen = c->reports;
            progress_us = wh_mono_us();
        } else if (wh_mono_us() - progress_us >
                   c->sink->ack_timeout_ms * 1000) {
            break;
        }
    }
    snprintf(detail, sizeof(detail),
             "not acknowledged by Kafka within %lld ms (it may still arrive)",
             (long long)c->sink->ack_timeout_ms);
    for (inflight *f = c->head; f; f = f->next) {
        c->counts->failed++;
        report_inflight(c, f, WH_REPLAY_FAILED, detail);
    }
    c->abandoned = true;
}

/* Refuses an event id without an app when it occurs in several apps. */
static int check_event_apps(wh_db *db, const char *event_id, char *err,
                            size_t errlen)
{
    wh_db_result *r;
    if (wh_db_query(db, apps_sql, 1, &event_id, &r, err, errlen) != WH_OK)
        return WH_ERR;
    int n = wh_db_rows(r), rc = WH_OK;
    if (n > 1) {
        wh_errf(err, errlen, "event %s occurs in apps %s, %s%s", event_id,
                wh_db_get(r, 0, 0), wh_db_get(r, 1, 0),
                n > 2 ? " and more" : "");
        rc = WH_DECLINED;
    }
    wh_db_result_free(r);
    return rc;
}

int wh_replay_run(wh_db *db, const wh_replay_filter *f,
                  const wh_replay_sink *sink, wh_replay_report_fn *report,
                  void *opaque, wh_replay_counts *counts, char *err,
                  size_t errlen)
{
    run_ctx c;
    size_t n = 0;
    bool more = false;
    int rc = WH_ERR;
    memset(counts, 0, sizeof(*counts));
    memset(&c, 0, sizeof(c));
    c.db = db;
    c.sink = sink;
    c.report = report;
    c.opaque = opaque;
    c.counts = counts;
    wh_buf_init(&c.scratch, WH_REPLAY_EVENT_MAX);
    wh_buf_init(&c.value, WH_REPLAY_DELIVERY_MAX);
    if (f->kind == WH_REPLAY_BY_EVENT && !f->app) {
        rc = check_event_apps(db, f->event_id, err, errlen);
        if (rc != WH_OK)
            goto done;
    }
    if (sink) {
        assert(sink->topic && sink->ack_timeout_ms > 0);
        if (wh_kafka_producer_new(sink->kafka, on_report, &c, &c.producer,
                                  err, errlen) != WH_OK) {
            rc = WH_ERR;
            goto done;
        }
    }
    rc = wh_replay_select(db, f, on_row, &c, &n, &more, err, errlen);
    counts->selected = n;
    counts->more = more;
    if (c.producer)
        await_reports(&c);
done:
    if (c.producer)
        wh_kafka_producer_destroy(c.producer);
    /* reports abandoned by await_reports, if librdkafka never served them */
    while (c.head) {
        inflight *next = c.head->next;
        free(c.head);
        c.head = next;
    }
    wh_codec_event_free(c.ev);
    wh_buf_free(&c.scratch);
    wh_buf_free(&c.value);
    return rc;
}
