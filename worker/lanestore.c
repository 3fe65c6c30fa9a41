/*
 * lanestore.c - the SQL of ordered lanes (sql/006_lanes.sql) that the
 * delivery stage runs itself: taking a partition, loading its lanes and
 * their parked deliveries, reopening a lane, and checking whether a
 * delivery ended. See lanestore.h. Called on the main thread.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "lanestore.h"

int wk_lanestore_take(wh_db *db, const char *topic, int32_t partition,
                      const char *worker, int64_t *epoch, int64_t *handed_to,
                      char *err, size_t errlen)
{
    char ps[16];
    wh_db_result *r = NULL;
    snprintf(ps, sizeof(ps), "%d", (int)partition);
    const char *p[3] = {topic, ps, worker};
    if (wh_db_query(db,
                    /* the previous owner's hand-off, if it made one at
                     * the epoch this take ends (two takes at once may both
                     * read it: checking a delivery needlessly costs a
                     * query, never a delivery) */
                    "WITH before AS (SELECT h.handed_to "
                    "FROM webhooks.lane_handoffs h "
                    "JOIN webhooks.lane_owners o ON o.topic = h.topic "
                    "AND o.partition = h.partition AND o.epoch = h.epoch "
                    "WHERE h.topic = $1 AND h.partition = $2::int) "
                    "INSERT INTO webhooks.lane_owners AS o (topic, partition, "
                    "epoch, worker) VALUES ($1, $2::int, 1, $3) "
                    "ON CONFLICT (topic, partition) DO UPDATE SET "
                    "epoch = o.epoch + 1, worker = EXCLUDED.worker, "
                    "assigned_at = now() "
                    "RETURNING epoch, (SELECT handed_to FROM before)",
                    3, p, &r, err, errlen) != WH_OK)
        return WH_ERR;
    *epoch = strtoll(wh_db_get(r, 0, 0), NULL, 10);
    *handed_to = wh_db_isnull(r, 0, 1)
                     ? -1
                     : strtoll(wh_db_get(r, 0, 1), NULL, 10);
    wh_db_result_free(r);
    return WH_OK;
}

int wk_lanestore_lanes(wh_db *db, int32_t partition,
                       wk_lanestore_lane_fn *fn, void *opaque, int *count,
                       char *err, size_t errlen)
{
    char ps[16];
    wh_db_result *r = NULL;
    snprintf(ps, sizeof(ps), "%d", (int)partition);
    const char *p[1] = {ps};
    if (wh_db_query(db,
                    "SELECT endpoint_id, head_delivery_id, head_attempt "
                    "FROM webhooks.lanes WHERE partition = $1::int",
                    1, p, &r, err, errlen) != WH_OK)
        return WH_ERR;
    int rows = wh_db_rows(r);
    for (int i = 0; i < rows; i++) {
        if (wh_db_isnull(r, i, 1))
            fn(opaque, wh_db_get(r, i, 0), NULL, 0);
        else
            fn(opaque, wh_db_get(r, i, 0), wh_db_get(r, i, 1),
               (uint32_t)strtoul(wh_db_get(r, i, 2), NULL, 10));
    }
    wh_db_result_free(r);
    *count = rows;
    return WH_OK;
}

int wk_lanestore_parked(wh_db *db, int32_t partition,
                        const char *endpoint_id, int64_t after,
                        size_t limit, wk_lanestore_parked_fn *fn,
                        void *opaque, int *count, char *err, size_t errlen)
{
    char ps[16], pos[24], lim[24];
    wh_db_result *r = NULL;
    snprintf(ps, sizeof(ps), "%d", (int)partition);
    snprintf(pos, sizeof(pos), "%lld", (long long)after);
    snprintf(lim, sizeof(lim), "%zu", limit);
    const char *p[4] = {endpoint_id, pos, lim, ps};
    if (wh_db_query(db,
                    "SELECT position, delivery_id, delivery "
                    "FROM webhooks.parked "
                    "WHERE partition = $4::int AND endpoint_id = $1 "
                    "AND position > $2::bigint "
                    "ORDER BY position LIMIT $3::bigint",
                    4, p, &r, err, errlen) != WH_OK)
        return WH_ERR;
    int rows = wh_db_rows(r);
    for (int i = 0; i < rows; i++) {
        int64_t position = strtoll(wh_db_get(r, i, 0), NULL, 10);
        const char *hex = wh_db_get(r, i, 2);
        size_t hexlen = wh_db_getlen(r, i, 2);
        wh_buf raw;
        wh_buf_init(&raw, hexlen);
        if (hexlen >= 2 && strncmp(hex, "\\x", 2) == 0 &&
            wh_buf_set_hex(&raw, hex + 2, hexlen - 2, NULL) == WH_OK)
            fn(opaque, position, wh_db_get(r, i, 1), raw.data, raw.len);
        else /* not bytea's hex output: pass the text as it came */
            fn(opaque, position, wh_db_get(r, i, 1), hex, hexlen);
        wh_buf_free(&raw);
    }
    wh_db_result_free(r);
    *count = rows;
    return WH_OK;
}

int wk_lanestore_reopen(wh_db *db, const char *endpoint_id,
                        const char *topic, int32_t partition, int64_t epoch,
                        bool *parked, char *err, size_t errlen)
{
    char part_s[16], epoch_s[24];
    wh_db_result *r = NULL;
    snprintf(part_s, sizeof(part_s), "%d", (int)partition);
    snprintf(epoch_s, sizeof(epoch_s), "%lld", (long long)epoch);
    const char *q[4] = {endpoint_id, topic, part_s, epoch_s};
    if (wh_db_query(db,
                    "WITH gone AS (DELETE FROM webhooks.lanes "
                    "WHERE partition = $3::int AND endpoint_id = $1 "
                    "AND head_delivery_id IS NULL "
                    "AND NOT EXISTS (SELECT 1 FROM webhooks.parked "
                    "WHERE partition = $3::int AND endpoint_id = $1) "
                    "AND EXISTS (SELECT 1 FROM "
                    "webhooks.lane_owners WHERE topic = $2 AND "
                    "partition = $3::int AND epoch = $4::bigint) "
                    "RETURNING 1) SELECT EXISTS (SELECT 1 FROM "
                    "webhooks.parked WHERE partition = $3::int "
                    "AND endpoint_id = $1)",
                    4, q, &r, err, errlen) != WH_OK)
        return WH_ERR;
    *parked = strcmp(wh_db_get(r, 0, 0), "t") == 0;
    wh_db_result_free(r);
    return WH_OK;
}

int wk_lanestore_delivery_ended(wh_db *db, const char *delivery_id,
                                bool *ended, char *err, size_t errlen)
{
    const char *p[1] = {delivery_id};
    wh_db_result *r = NULL;
    if (wh_db_query(db,
                    "SELECT EXISTS (SELECT 1 FROM webhooks.attempts "
                    "WHERE delivery_id = $1 AND (outcome = 'succeeded' "
                    "OR final))",
                    1, p, &r, err, errlen) != WH_OK)
        return WH_ERR;
    *ended = strcmp(wh_db_get(r, 0, 0), "t") == 0;
    wh_db_result_free(r);
    return WH_OK;
}
