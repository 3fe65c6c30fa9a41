/*
 * batch.c - one scheduler batch (see scheduler.h): claim and delete due
 * rows of webhooks.retries in one statement (FOR UPDATE SKIP LOCKED),
 * produce their deliveries to Kafka, each to its row's partition (its
 * lane's), wait for every acknowledgement, then commit. Any failure rolls
 * back, so a row leaves the table only after Kafka holds its message. A
 * row the producer cannot send is dead-lettered instead (without its
 * payload) and recorded as a final failed attempt, in the same
 * transaction. Called from the scheduler's main loop, main thread only.
 */
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "log.h"
#include "scheduler.h"

/* Columns of the claim query. C_APP, C_EVENT and C_ATTEMPT are only set
 * for a row whose delivery is larger than the limit ($2); C_PART is NULL
 * for rows written before sql/009_retry_partition.sql. */
enum { C_ID, C_ENDPOINT, C_DELIVERY, C_LAG, C_APP, C_EVENT, C_ATTEMPT,
       C_PART };

_Static_assert(SC_BATCH_MAX < (1 << SC_ROW_BITS), "rows fit SC_ROW_BITS");

/*
 * The claim: locks up to $1 due rows, oldest first, skipping rows other
 * transactions hold, and deletes them in the same statement, returning
 * what the batch produces. The delete commits only after Kafka has
 * acknowledged every message (sc_batch_end); a rollback puts the rows
 * back. Rows whose delivery is larger than $2 bytes cannot be produced:
 * they come back with their app, event id and attempt too, to be
 * dead-lettered and recorded.
 *
 * The rows are found again by their ctid, which the lock keeps stable
 * until the transaction ends: a TID scan, where a join on delivery_id
 * cost a primary-key lookup per row (about three times the whole claim).
 * A locked row that another transaction updated after this statement
 * began is invisible to the delete and simply stays for a later batch.
 *
 * Fetched in binary format (wh_db_query_raw): the delivery as its bytes,
 * the lag, the attempt and the partition cast to text.
 */
static const char claim_sql[] =
    "WITH c AS (SELECT ctid AS t FROM webhooks.retries WHERE due_at <= now() "
    "ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED), "
    "d AS (DELETE FROM webhooks.retries "
    "WHERE ctid = ANY(ARRAY(SELECT t FROM c)) "
    "RETURNING delivery_id, endpoint_id, delivery, due_at, app, event_id, "
    "attempt, partition) "
    "SELECT delivery_id, endpoint_id, delivery, "
    "(CASE WHEN isfinite(due_at) "
    "THEN floor(extract(epoch FROM now() - due_at) * 1000)::bigint "
    "ELSE 0 END)::text, big.app, big.event_id, big.attempt::text, "
    "d.partition::text FROM d "
    "LEFT JOIN LATERAL (SELECT d.app, d.event_id, d.attempt "
    "WHERE octet_length(d.delivery) > $2::bigint) big ON true";

/* A retry that cannot be sent ends here: its final failed attempt, in the
 * batch's transaction. */
static const char attempt_sql[] =
    "INSERT INTO webhooks.attempts (delivery_id, event_id, endpoint_id, app, "
    "event_type, attempt, outcome, latency_ms, error_class, error, worker, "
    "attempted_at, final) VALUES ($1, $2, $3, $4, $5, $6::integer, "
    "'failed', 0, 'retry_unsendable', $7, $8, now(), true)";

/* Runs in the claim's transaction, so now() is the claim time: a row that
 * became due since is included (and gives 0), rows other schedulers hold
 * are not. 'infinity' (endpoint disabled) never becomes due. */
static const char next_due_sql[] =
    "SELECT ceil(extract(epoch FROM due_at - clock_timestamp()) "
    "* 1000)::bigint FROM webhooks.retries "
    "WHERE due_at > now() AND due_at < 'infinity' ORDER BY due_at LIMIT 1";

static const char *const headers[] = {"content-type",
                                      "application/x-protobuf", NULL};

#define ROW_MASK ((1u << SC_ROW_BITS) - 1)
#define DEAD_BIT (1u << SC_ROW_BITS)

/* The opaque of a message: its batch's sequence number, whether it is a
 * dead letter, and its row. */
static void *tag_of(const sc_batch *b, bool dead, size_t row)
{
    return (void *)(uintptr_t)((b->seq << (SC_ROW_BITS + 1)) |
                               (dead ? DEAD_BIT : 0) | (uint32_t)row);
}

void sc_batch_cleanup(sc_ctx *ctx)
{
    for (size_t i = 0; i < SC_PIPELINE_MAX; i++) {
        sc_batch *b = &ctx->batch[i];
        wh_db_result_free(b->rows);
        b->rows = NULL;
        free(b->refused);
        b->refused = NULL;
        wh_db_close(b->db);
        b->db = NULL;
    }
}

void sc_batch_on_report(void *opaque, void *msg_opaque, int ok,
                        const char *errstr)
{
    sc_ctx *ctx = opaque;
    uint64_t tag = (uint64_t)(uintptr_t)msg_opaque;
    uint64_t seq = tag >> (SC_ROW_BITS + 1);
    sc_batch *b = NULL;
    for (int64_t i = 0; i < ctx->s->pipeline && !b; i++)
        if (ctx->batch[i].open && ctx->batch[i].seq == seq)
            b = &ctx->batch[i];
    if (!b) {
        ctx->late_acks += ok != 0;
        return;
    }
    if (ok) {
        b->acked++;
        return;
    }
    if (!(tag & DEAD_BIT) && wh_kafka_error_too_large(errstr) &&
        b->nrefused < (size_t)ctx->s->batch) {
        /* dead-lettered by sc_batch_end */
        b->refused[b->nrefused++] = (uint32_t)(tag & ROW_MASK);
        return;
    }
    if (b->nacked++ == 0)
        wh_strlcpy(b->report_err, errstr ? errstr : "unknown error",
                   sizeof(b->report_err));
}

static void rollback(sc_batch *b)
{
    char e[WH_ERRLEN];
    b->open = false;
    wh_db_result_free(b->rows);
    b->rows = NULL;
    b->nrefused = 0;
    if (wh_db_alive(b->db))
        WH_IGNORE(wh_db_exec(b->db, "ROLLBACK", e, sizeof(e)));
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

/* Queues one message to partition of topic (WH_KAFKA_PARTITION_ANY: the
 * configured partitioner's), serving delivery reports while the local
 * queue is full. */
static int send_one(sc_ctx *ctx, sc_batch *b, const char *topic,
                    int32_t partition, const char *key, size_t klen,
                    const char *value, size_t vlen, void *tag, char *err,
                    size_t errlen)
{
    for (;;) {
        int rc = wh_kafka_producer_send(ctx->producer, topic, partition, key,
                                        klen, value, vlen, headers, tag, err,
                                        errlen);
        if (rc != WH_AGAIN)
            return rc;
        if (wh_mono_us() >= deadline_now(ctx, b->deadline_us))
            return wh_errf(err, errlen, "Kafka producer queue stayed full");
        wh_kafka_producer_poll(ctx->producer, 10);
    }
}

/* Waits until every message of the batch has a delivery report. Other
 * open batches' reports are served meanwhile too. */
static int wait_acks(sc_ctx *ctx, sc_batch *b, char *err, size_t errlen)
{
    for (;;) {
        if (b->acked + b->nacked + b->nrefused >= b->sent)
            break;
        int64_t left_ms =
            (deadline_now(ctx, b->deadline_us) - wh_mono_us()) / 1000;
        if (left_ms <= 0)
            break;
        /* a poll returns on the first report; the counts tell whether
         * this batch is complete */
        wh_kafka_producer_poll(ctx->producer, left_ms < 100 ? (int)left_ms
                                                            : 100);
    }
    if (b->nacked > 0)
        return wh_errf(err, errlen,
                       "Kafka refused %zu of %zu messages: %s", b->nacked,
                       b->sent, b->report_err);
    if (b->acked + b->nrefused < b->sent)
        return wh_errf(err, errlen,
                       "Kafka acknowledged %zu of %zu messages in time",
                       b->acked, b->sent);
    assert(b->acked + b->nrefused == b->sent);
    return WH_OK;
}

/* Dead-letters row i, whose delivery cannot be sent (why), and records
 * its final failed attempt in the batch's transaction. The dead letter
 * carries the delivery without its payload (length and SHA-256 kept), or,
 * when the bytes are not a Delivery, their first bytes. */
static int dead_letter(sc_ctx *ctx, sc_batch *b, int i, const char *why,
                       char *err, size_t errlen)
{
    wh_db_result *r = b->rows;
    const char *bytes = wh_db_get(r, i, C_DELIVERY);
    size_t len = wh_db_getlen(r, i, C_DELIVERY);
    char e[WH_ERRLEN], detail[WH_ERRLEN + 128];
    wh_delivery_msg *dm = NULL;
    const wh_delivery *dv = NULL;
    if (wh_codec_delivery_decode(bytes, len, &dm, e, sizeof(e)) == WH_OK)
        dv = wh_codec_delivery(dm);
    snprintf(detail, sizeof(detail), "retry not sent: %s%s%s", why,
             dv ? "" : "; not a Delivery: ", dv ? "" : e);
    wh_dead_letter dl = {
        .reason = dv ? WH_DEAD_ATTEMPTS_EXHAUSTED : WH_DEAD_UNDECODABLE,
        .detail = detail,
        .delivery = dv,
        .raw = dv ? NULL : bytes,
        .raw_len = dv ? 0 : len,
        .source_topic = dv ? dv->source_topic : NULL,
        .source_partition = dv ? dv->source_partition : 0,
        .source_offset = dv ? dv->source_offset : 0,
        .attempts = dv ? dv->attempt : 0,
        .last_error = why,
        .dead_at_us = wh_wall_us(),
        .omit_bodies = dv != NULL,
    };
    wh_buf out;
    wh_buf_init(&out, WH_DEAD_RAW_PREFIX_MAX + WH_DEAD_BARE_MAX);
    int rc = wh_codec_dead_letter_encode(&dl, &out, e, sizeof(e));
    if (rc != WH_OK)
        wh_errf(err, errlen, "cannot encode the dead letter of retry %s: %s",
                wh_db_get(r, i, C_ID), e);
    else
        rc = send_one(ctx, b, ctx->s->dead_topic, WH_KAFKA_PARTITION_ANY,
                      wh_db_get(r, i, C_ENDPOINT),
                      wh_db_getlen(r, i, C_ENDPOINT), out.data, out.len,
                      tag_of(b, true, (size_t)i), err, errlen);
    wh_buf_free(&out);
    if (rc != WH_OK) {
        wh_codec_delivery_free(dm);
        return WH_ERR;
    }
    b->sent++;
    char attempt[24];
    const char *event_type = dv ? dv->event.type : "";
    const char *event_id = wh_db_isnull(r, i, C_EVENT)
                               ? (dv ? dv->event.id : "")
                               : wh_db_get(r, i, C_EVENT);
    const char *app = wh_db_isnull(r, i, C_APP) ? (dv ? dv->event.app : "")
                                                : wh_db_get(r, i, C_APP);
    if (wh_db_isnull(r, i, C_ATTEMPT))
        snprintf(attempt, sizeof(attempt), "%u", dv ? dv->attempt : 1);
    else
        wh_strlcpy(attempt, wh_db_get(r, i, C_ATTEMPT), sizeof(attempt));
    const char *p[] = {wh_db_get(r, i, C_ID), event_id,
                       wh_db_get(r, i, C_ENDPOINT), app, event_type, attempt,
                       detail, ctx->id};
    wh_db_result *ar;
    rc = wh_db_query(b->db, attempt_sql, 8, p, &ar, e, sizeof(e));
    if (rc == WH_OK)
        wh_db_result_free(ar);
    else {
        b->res.db_failed = true;
        wh_errf(err, errlen, "recording the dead-lettered retry %s: %s",
                wh_db_get(r, i, C_ID), e);
    }
    wh_log_kv(WH_LOG_ERROR, "retry dead-lettered", "delivery_id",
              wh_db_get(r, i, C_ID), "endpoint_id",
              wh_db_get(r, i, C_ENDPOINT), "reason", detail, NULL);
    wh_codec_delivery_free(dm);
    b->dead++;
    return rc;
}

/* The deliveries partition row i goes back to: its own (the partition
 * its lane waits on) when the topic has it, else the one its endpoint id
 * maps to (rows written before sql/009_retry_partition.sql, or a
 * partition the topic does not have). Waits for the topic's partition
 * count while it is not known, within the batch's deadline. */
static int row_partition(sc_ctx *ctx, sc_batch *b, int i, int32_t *part,
                         char *err, size_t errlen)
{
    wh_db_result *r = b->rows;
    int32_t n;
    int rc;
    while ((rc = wh_kafka_producer_partitions(
                ctx->producer, ctx->s->deliveries_topic, &n, err, errlen)) ==
           WH_AGAIN) {
        if (wh_mono_us() >= deadline_now(ctx, b->deadline_us))
            return WH_ERR; /* err says why the count is not known */
        wh_kafka_producer_poll(ctx->producer, 10);
    }
    if (rc != WH_OK)
        return WH_ERR;
    int32_t lane = -1;
    if (!wh_db_isnull(r, i, C_PART)) {
        char *end;
        long v = strtol(wh_db_get(r, i, C_PART), &end, 10);
        if (*end == '\0' && v >= 0 && v < n)
            lane = (int32_t)v;
        else
            wh_log_kv(WH_LOG_WARN, "retry row names a partition the topic "
                      "does not have; sending it to its endpoint's partition",
                      "delivery_id", wh_db_get(r, i, C_ID), "partition",
                      wh_db_get(r, i, C_PART), NULL);
    }
    *part = wh_kafka_partition_or_key(lane, wh_db_get(r, i, C_ENDPOINT),
                                      wh_db_getlen(r, i, C_ENDPOINT), n);
    return WH_OK;
}

/* Produces the claimed rows; those the producer cannot send are
 * dead-lettered. */
static int produce_rows(sc_ctx *ctx, sc_batch *b, char *err, size_t errlen)
{
    wh_db_result *r = b->rows;
    int n = wh_db_rows(r);
    char why[WH_ERRLEN];
    for (int i = 0; i < n; i++) {
        size_t len = wh_db_getlen(r, i, C_DELIVERY);
        if (!wh_db_isnull(r, i, C_APP) || len > ctx->delivery_max) {
            snprintf(why, sizeof(why),
                     "the delivery is %zu bytes, the producer takes at most "
                     "%zu", len, ctx->delivery_max);
            if (dead_letter(ctx, b, i, why, err, errlen) != WH_OK)
                return WH_ERR;
            continue;
        }
        int64_t lag = strtoll(wh_db_get(r, i, C_LAG), NULL, 10);
        if (lag > b->res.lag_ms)
            b->res.lag_ms = lag;
        int32_t part;
        if (row_partition(ctx, b, i, &part, err, errlen) != WH_OK)
            return WH_ERR;
        int rc = send_one(ctx, b, ctx->s->deliveries_topic, part,
                          wh_db_get(r, i, C_ENDPOINT),
                          wh_db_getlen(r, i, C_ENDPOINT),
                          wh_db_get(r, i, C_DELIVERY), len,
                          tag_of(b, false, (size_t)i), why, sizeof(why));
        if (rc == WH_DECLINED) {
            if (dead_letter(ctx, b, i, why, err, errlen) != WH_OK)
                return WH_ERR;
            continue;
        }
        if (rc != WH_OK) {
            wh_strlcpy(err, why, errlen);
            return WH_ERR;
        }
        b->sent++;
    }
    return WH_OK;
}

/* When fewer rows than a batch were due: when the next one is. */
static int find_next_due(sc_batch *b, char *err, size_t errlen)
{
    char e[WH_ERRLEN];
    wh_db_result *nr;
    if (wh_db_query(b->db, next_due_sql, 0, NULL, &nr, e, sizeof(e)) !=
        WH_OK) {
        b->res.db_failed = true;
        return wh_errf(err, errlen, "finding the next due retry: %s", e);
    }
    if (wh_db_rows(nr) > 0) {
        long long ms = strtoll(wh_db_get(nr, 0, 0), NULL, 10);
        if (ms < 0)
            ms = 0;
        if (ms > 86400000) /* the caller wakes up much sooner anyway */
            ms = 86400000;
        b->res.next_due_us = wh_mono_us() + ms * 1000;
    }
    wh_db_result_free(nr);
    return WH_OK;
}

int sc_batch_begin(sc_ctx *ctx, sc_batch *b, char *err, size_t errlen)
{
    char e[WH_ERRLEN], limit[24], max[24];
    assert(!b->open && !b->rows);
    memset(&b->res, 0, sizeof(b->res));
    b->res.lag_ms = -1;
    b->sent = b->acked = b->nacked = b->nrefused = b->dead = 0;
    b->report_err[0] = '\0';
    if (!b->refused &&
        !(b->refused = calloc((size_t)ctx->s->batch, sizeof(*b->refused))))
        return wh_errf(err, errlen, "out of memory");

    b->t_claim = wh_mono_us();
    b->deadline_us = b->t_claim + (ctx->s->produce_timeout_ms + 1000) * 1000;
    /* The commit does not wait for its WAL flush: losing a committed
     * batch in a Postgres crash only brings its rows back, to be produced
     * a second time (the worker ignores retries of deliveries that already
     * ended), which a crash of the scheduler itself can do too; nothing
     * else is written here. It saves a flush per batch. */
    if (wh_db_exec(b->db, "BEGIN; SET LOCAL synchronous_commit = off", e,
                   sizeof(e)) != WH_OK) {
        b->res.db_failed = true;
        wh_errf(err, errlen, "BEGIN: %s", e);
        goto fail;
    }
    snprintf(limit, sizeof(limit), "%" PRId64, ctx->s->batch);
    snprintf(max, sizeof(max), "%zu", ctx->delivery_max);
    const char *p1[] = {limit, max};
    if (wh_db_query_raw(b->db, claim_sql, 2, p1, &b->rows, e, sizeof(e)) !=
        WH_OK) {
        b->res.db_failed = true;
        wh_errf(err, errlen, "claiming due retries: %s", e);
        goto fail;
    }
    b->res.claimed = (size_t)wh_db_rows(b->rows);
    assert(b->res.claimed <= (size_t)ctx->s->batch);
    if (b->res.claimed < (size_t)ctx->s->batch &&
        find_next_due(b, err, errlen) != WH_OK)
        goto fail;
    b->t_kafka = wh_mono_us();
    b->res.claim_ms = (b->t_kafka - b->t_claim) / 1000;
    if (b->res.claimed == 0) {
        wh_db_result_free(b->rows);
        b->rows = NULL;
        if (wh_db_exec(b->db, "COMMIT", e, sizeof(e)) != WH_OK) {
            b->res.db_failed = true;
            wh_errf(err, errlen, "COMMIT: %s", e);
            goto fail;
        }
        return WH_OK;
    }
    b->seq = ++ctx->seq;
    b->open = true;
    if (produce_rows(ctx, b, err, errlen) != WH_OK)
        goto fail;
    /* the rows stay until the end: a delivery Kafka refuses for its size
     * is dead-lettered from them */
    return WH_OK;
fail:
    rollback(b);
    return WH_ERR;
}

int sc_batch_end(sc_ctx *ctx, sc_batch *b, char *err, size_t errlen)
{
    char e[WH_ERRLEN];
    assert(b->open);
    if (wait_acks(ctx, b, err, errlen) != WH_OK)
        goto fail;
    if (b->nrefused > 0) {
        /* each becomes a dead letter, acknowledged before the commit */
        size_t n = b->nrefused;
        b->nrefused = 0;
        b->sent -= n;
        for (size_t k = 0; k < n; k++)
            if (dead_letter(ctx, b, (int)b->refused[k],
                            "Kafka refused the delivery for its size", err,
                            errlen) != WH_OK)
                goto fail;
        if (wait_acks(ctx, b, err, errlen) != WH_OK || b->nrefused > 0)
            goto fail;
    }
    wh_db_result_free(b->rows);
    b->rows = NULL;
    int64_t t_commit = wh_mono_us();
    b->res.kafka_ms = (t_commit - b->t_kafka) / 1000;
    if (wh_db_exec(b->db, "COMMIT", e, sizeof(e)) != WH_OK) {
        b->res.db_failed = true;
        wh_errf(err, errlen, "COMMIT: %s", e);
        goto fail;
    }
    b->open = false;
    b->res.commit_ms = (wh_mono_us() - t_commit) / 1000;
    b->res.dead = b->dead;
    b->res.enqueued = b->sent - b->dead;
    return WH_OK;
fail:
    rollback(b);
    return WH_ERR;
}
