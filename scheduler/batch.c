/*
 * batch.c - one scheduler batch (see scheduler.h): claim due rows of
 * webhooks.retries with FOR UPDATE SKIP LOCKED, produce their deliveries
 * to Kafka, wait for every acknowledgement, then delete the claimed
 * (delivery id, attempt) pairs and commit. Any failure rolls back, so a
 * row leaves the table only after Kafka holds its message. Also the two
 * small codecs the batch needs: Postgres array literals and hex. Called
 * from the scheduler's main loop, main thread only.
 */
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "scheduler.h"

/* Columns of the claim query. */
enum { C_ID, C_ENDPOINT, C_ATTEMPT, C_HEX, C_LAG };

/* The ids and attempts of a batch are copies of what the claim already
 * holds in memory; this only guards against arithmetic surprises. */
#define ARRAY_MAX (SIZE_MAX / 4)

static const char claim_sql[] =
    "SELECT delivery_id, endpoint_id, attempt, encode(delivery, 'hex'), "
    "CASE WHEN isfinite(due_at) "
    "THEN floor(extract(epoch FROM now() - due_at) * 1000)::bigint "
    "ELSE 0 END "
    "FROM webhooks.retries WHERE due_at <= now() "
    "ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED";

/* Runs in the claim's transaction, so now() is the claim time: a row that
 * became due since is included (and gives 0), rows other schedulers hold
 * are not. 'infinity' (endpoint disabled) never becomes due. */
static const char next_due_sql[] =
    "SELECT ceil(extract(epoch FROM due_at - clock_timestamp()) "
    "* 1000)::bigint FROM webhooks.retries "
    "WHERE due_at > now() AND due_at < 'infinity' ORDER BY due_at LIMIT 1";

static const char delete_sql[] =
    "DELETE FROM webhooks.retries r "
    "USING unnest($1::text[], $2::int[]) AS c(delivery_id, attempt) "
    "WHERE r.delivery_id = c.delivery_id AND r.attempt = c.attempt";

static const char postpone_sql[] =
    "UPDATE webhooks.retries SET due_at = now() + interval '" SC_POSTPONE_SQL
    "' WHERE delivery_id = ANY($1::text[])";

static const char *const headers[] = {"content-type",
                                      "application/x-protobuf", NULL};

void sc_batch_init(sc_ctx *ctx)
{
    wh_buf_init(&ctx->value, SC_DELIVERY_MAX);
    wh_buf_init(&ctx->ids, ARRAY_MAX);
    wh_buf_init(&ctx->attempts, ARRAY_MAX);
    wh_buf_init(&ctx->bad_ids, ARRAY_MAX);
}

void sc_batch_cleanup(sc_ctx *ctx)
{
    wh_buf_free(&ctx->value);
    wh_buf_free(&ctx->ids);
    wh_buf_free(&ctx->attempts);
    wh_buf_free(&ctx->bad_ids);
}

int sc_array_add(wh_buf *b, const char *s, size_t n)
{
    bool comma = b->len > 0 && b->data[b->len - 1] != '{';
    size_t need = (comma ? 1 : 0) + 2 + n;
    for (size_t i = 0; i < n; i++)
        need += s[i] == '"' || s[i] == '\\';
    if (need > b->max - b->len)
        return WH_ERR;
    if ((comma && wh_buf_addc(b, ',')) || wh_buf_addc(b, '"'))
        return WH_ERR;
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '"' && s[i] != '\\')
            continue;
        if (wh_buf_add(b, s + start, i - start) || wh_buf_addc(b, '\\'))
            return WH_ERR;
        start = i;
    }
    if (wh_buf_add(b, s + start, n - start) || wh_buf_addc(b, '"'))
        return WH_ERR;
    return WH_OK;
}


void sc_batch_on_report(void *opaque, void *msg_opaque, int ok,
                        const char *errstr)
{
    sc_ctx *ctx = opaque;
    if ((uint64_t)(uintptr_t)msg_opaque != ctx->seq) {
        ctx->late_acks += ok != 0;
        return;
    }
    if (ok) {
        ctx->acked++;
        return;
    }
    if (ctx->nacked++ == 0)
        wh_strlcpy(ctx->report_err, errstr ? errstr : "unknown error",
                   sizeof(ctx->report_err));
}

static void rollback(sc_ctx *ctx)
{
    char e[WH_ERRLEN];
    if (wh_db_alive(ctx->db))
        WH_IGNORE(wh_db_exec(ctx->db, "ROLLBACK", e, sizeof(e)));
}

/* The deadline of a batch's Kafka work, pulled in once a stop was
 * requested. */
static int64_t deadline_now(sc_ctx *ctx, int64_t deadline_us)
{
    if (*ctx->stop && ctx->stop_deadline_us == 0)
        ctx->stop_deadline_us =
            wh_mono_us() + ctx->s->shutdown_timeout_ms * 1000;
    if (ctx->stop_deadline_us && ctx->stop_deadline_us < deadline_us)
        return ctx->stop_deadline_us;
    return deadline_us;
}

/* Queues one message, serving delivery reports while the local queue is
 * full. */
static int send_one(sc_ctx *ctx, const char *key, size_t klen,
                    int64_t deadline_us, char *err, size_t errlen)
{
    for (;;) {
        int rc = wh_kafka_producer_send(
            ctx->producer, ctx->s->deliveries_topic, key, klen,
            ctx->value.data, ctx->value.len, headers,
            (void *)(uintptr_t)ctx->seq, err, errlen);
        if (rc != WH_AGAIN)
            return rc;
        if (wh_mono_us() >= deadline_now(ctx, deadline_us))
            return wh_errf(err, errlen, "Kafka producer queue stayed full");
        wh_kafka_producer_poll(ctx->producer, 10);
    }
}

/* Waits until every message of the batch has a delivery report. */
static int wait_acks(sc_ctx *ctx, size_t sent, int64_t deadline_us,
                     char *err, size_t errlen)
{
    char e[WH_ERRLEN];
    for (;;) {
        if (ctx->acked + ctx->nacked >= sent)
            break;
        int64_t left_ms = (deadline_now(ctx, deadline_us) - wh_mono_us()) /
                          1000;
        if (left_ms <= 0)
            break;
        /* flush serves the reports; whether it emptied the queue is
         * judged by the counts */
        WH_IGNORE(wh_kafka_producer_flush(
            ctx->producer, left_ms < 100 ? (int)left_ms : 100, e, sizeof(e)));
    }
    if (ctx->nacked > 0)
        return wh_errf(err, errlen,
                       "Kafka refused %zu of %zu messages: %s", ctx->nacked,
                       sent, ctx->report_err);
    if (ctx->acked < sent)
        return wh_errf(err, errlen,
                       "Kafka acknowledged %zu of %zu messages in time",
                       ctx->acked, sent);
    assert(ctx->acked == sent);
    return WH_OK;
}

static bool digits(const char *s, size_t n)
{
    if (n == 0 || n > 10)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

/* Produces the claimed rows; unusable ones go to ctx->bad_ids. */
static int produce_rows(sc_ctx *ctx, wh_db_result *r, size_t *sent,
                        size_t *bad, int64_t deadline_us, char *err,
                        size_t errlen)
{
    int n = wh_db_rows(r);
    for (int i = 0; i < n; i++) {
        const char *id = wh_db_get(r, i, C_ID);
        size_t idlen = wh_db_getlen(r, i, C_ID);
        const char *attempt = wh_db_get(r, i, C_ATTEMPT);
        size_t alen = wh_db_getlen(r, i, C_ATTEMPT);
        size_t hexlen = wh_db_getlen(r, i, C_HEX);
        const char *why = NULL;
        if (hexlen / 2 > SC_DELIVERY_MAX)
            why = "delivery larger than the scheduler's limit";
        else if (wh_buf_set_hex(&ctx->value, wh_db_get(r, i, C_HEX),
                                 hexlen, NULL) != WH_OK)
            why = "delivery is not valid hex";
        else if (!digits(attempt, alen))
            why = "attempt is not a number";
        if (why) {
            wh_log_kv(WH_LOG_ERROR, "retry postponed by " SC_POSTPONE_SQL,
                      "delivery_id", id, "reason", why, NULL);
            if (sc_array_add(&ctx->bad_ids, id, idlen) != WH_OK)
                return wh_errf(err, errlen, "out of memory");
            (*bad)++;
            continue;
        }
        if (send_one(ctx, wh_db_get(r, i, C_ENDPOINT),
                     wh_db_getlen(r, i, C_ENDPOINT), deadline_us, err,
                     errlen) != WH_OK)
            return WH_ERR;
        (*sent)++;
        if (sc_array_add(&ctx->ids, id, idlen) != WH_OK ||
            (ctx->attempts.len > 1 && wh_buf_addc(&ctx->attempts, ',')) ||
            wh_buf_add(&ctx->attempts, attempt, alen))
            return wh_errf(err, errlen, "out of memory");
    }
    return WH_OK;
}

/* Runs a statement with array parameters that returns no rows. */
static int exec_arrays(sc_ctx *ctx, const char *sql, int nparams,
                       const char *const *params, long *affected,
                       const char *what, char *err, size_t errlen)
{
    char e[WH_ERRLEN];
    wh_db_result *r;
    if (wh_db_query(ctx->db, sql, nparams, params, &r, e, sizeof(e)) !=
        WH_OK)
        return wh_errf(err, errlen, "%s: %s", what, e);
    if (affected)
        *affected = wh_db_affected(r);
    wh_db_result_free(r);
    return WH_OK;
}

int sc_batch_run(sc_ctx *ctx, sc_batch_result *out, char *err,
                 size_t errlen)
{
    char e[WH_ERRLEN], limit[24];
    wh_db_result *r = NULL;
    size_t sent = 0, bad = 0;
    memset(out, 0, sizeof(*out));
    out->lag_ms = -1;
    out->next_due_us = 0;
    wh_buf_reset(&ctx->ids);
    wh_buf_reset(&ctx->attempts);
    wh_buf_reset(&ctx->bad_ids);

    int64_t t_claim = wh_mono_us(), t_delete = 0;
    if (wh_db_exec(ctx->db, "BEGIN", e, sizeof(e)) != WH_OK) {
        wh_errf(err, errlen, "BEGIN: %s", e);
        goto fail;
    }
    snprintf(limit, sizeof(limit), "%" PRId64, ctx->s->batch);
    const char *p1[] = {limit};
    if (wh_db_query(ctx->db, claim_sql, 1, p1, &r, e, sizeof(e)) != WH_OK) {
        wh_errf(err, errlen, "claiming due retries: %s", e);
        goto fail;
    }
    out->claimed = (size_t)wh_db_rows(r);
    assert(out->claimed <= (size_t)ctx->s->batch);
    if (out->claimed > 0)
        out->lag_ms = strtoll(wh_db_get(r, 0, C_LAG), NULL, 10);

    if (out->claimed < (size_t)ctx->s->batch) {
        wh_db_result *nr;
        if (wh_db_query(ctx->db, next_due_sql, 0, NULL, &nr, e, sizeof(e)) !=
            WH_OK) {
            wh_errf(err, errlen, "finding the next due retry: %s", e);
            goto fail;
        }
        if (wh_db_rows(nr) > 0) {
            long long ms = strtoll(wh_db_get(nr, 0, 0), NULL, 10);
            if (ms < 0)
                ms = 0;
            if (ms > 86400000) /* the caller wakes up much sooner anyway */
                ms = 86400000;
            out->next_due_us = wh_mono_us() + ms * 1000;
        }
        wh_db_result_free(nr);
    }
    if (out->claimed == 0)
        goto commit;

    int64_t t_kafka = wh_mono_us();
    out->claim_ms = (t_kafka - t_claim) / 1000;
    ctx->seq++;
    ctx->acked = ctx->nacked = 0;
    ctx->report_err[0] = '\0';
    int64_t deadline_us =
        wh_mono_us() + (ctx->s->produce_timeout_ms + 1000) * 1000;
    if (wh_buf_addc(&ctx->ids, '{') || wh_buf_addc(&ctx->bad_ids, '{') ||
        wh_buf_addc(&ctx->attempts, '{')) {
        wh_errf(err, errlen, "out of memory");
        goto fail;
    }
    if (produce_rows(ctx, r, &sent, &bad, deadline_us, err, errlen) != WH_OK ||
        wait_acks(ctx, sent, deadline_us, err, errlen) != WH_OK)
        goto fail;
    t_delete = wh_mono_us();
    out->kafka_ms = (t_delete - t_kafka) / 1000;
    if (wh_buf_addc(&ctx->ids, '}') || wh_buf_addc(&ctx->bad_ids, '}') ||
        wh_buf_addc(&ctx->attempts, '}')) {
        wh_errf(err, errlen, "out of memory");
        goto fail;
    }
    if (bad > 0) {
        const char *pp[] = {wh_buf_cstr(&ctx->bad_ids)};
        if (exec_arrays(ctx, postpone_sql, 1, pp, NULL,
                        "postponing unusable retries", err, errlen) != WH_OK)
            goto fail;
    }
    if (sent > 0) {
        long deleted = 0;
        const char *pd[] = {wh_buf_cstr(&ctx->ids),
                            wh_buf_cstr(&ctx->attempts)};
        if (exec_arrays(ctx, delete_sql, 2, pd, &deleted,
                        "deleting enqueued retries", err, errlen) != WH_OK)
            goto fail;
        if ((size_t)deleted != sent)
            WH_WARN("deleted %ld of %zu enqueued retries; the others "
                    "changed while claimed and stay scheduled",
                    deleted, sent);
    }
commit:
    if (wh_db_exec(ctx->db, "COMMIT", e, sizeof(e)) != WH_OK) {
        wh_errf(err, errlen, "COMMIT: %s", e);
        goto fail;
    }
    wh_db_result_free(r);
    if (t_delete)
        out->delete_ms = (wh_mono_us() - t_delete) / 1000;
    else
        out->claim_ms = (wh_mono_us() - t_claim) / 1000;
    out->enqueued = sent;
    out->postponed = bad;
    return WH_OK;
fail:
    rollback(ctx);
    wh_db_result_free(r);
    out->enqueued = 0;
    out->postponed = 0;
    return WH_ERR;
}
