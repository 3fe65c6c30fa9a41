/*
 * lanestore.h - the lane store's SQL (lanestore.c): taking a partition of
 * the deliveries topic (its epoch in webhooks.lane_owners), loading its
 * lanes that are not open, loading parked deliveries, reopening a drained
 * lane, and asking whether a delivery already ended. Lane changes
 * themselves (block, unblock, park, unpark) are written by the recorder
 * (recorder.h, wk_recorder_add_lane). Every call here is blocking on the
 * connection it is given: taking a partition and loading its lanes run on
 * the query executor's thread (dbq.h), the others on the delivery stage's
 * (the main thread).
 */
#ifndef WK_LANESTORE_H
#define WK_LANESTORE_H

#include <stdbool.h>
#include <stdint.h>

#include "db.h"
#include "wh.h"

/* Takes (topic, partition) for worker: bumps its epoch and returns it,
 * with the offset the previous owner handed the partition over at
 * (webhooks.lane_handoffs, sql/012_lane_handoffs.sql; -1: none, it
 * crashed or never wrote one). */
int wk_lanestore_take(wh_db *db, const char *topic, int32_t partition,
                      const char *worker, int64_t *epoch, int64_t *handed_to,
                      char *err, size_t errlen) WH_MUST_CHECK;

/* A lane of the partition that is not open: head_id NULL when it is
 * draining, else the blocked lane's head and the attempt it waits for. */
typedef void wk_lanestore_lane_fn(void *opaque, const char *endpoint_id,
                                  const char *head_id,
                                  uint32_t head_attempt);
/* Calls fn for each lane row of partition; *count is how many. */
int wk_lanestore_lanes(wh_db *db, int32_t partition,
                       wk_lanestore_lane_fn *fn, void *opaque, int *count,
                       char *err, size_t errlen) WH_MUST_CHECK;

/* A parked delivery: its bytes (an encoded webhook.v1.Delivery, or not,
 * when the row is corrupt), valid only during the call. */
typedef void wk_lanestore_parked_fn(void *opaque, int64_t position,
                                    const char *delivery_id,
                                    const void *delivery, size_t len);
/* Calls fn for the deliveries parked in endpoint_id's lane of partition
 * after position `after`, in position order, at most limit of them;
 * *count is how many. */
int wk_lanestore_parked(wh_db *db, int32_t partition,
                        const char *endpoint_id, int64_t after,
                        size_t limit, wk_lanestore_parked_fn *fn,
                        void *opaque, int *count, char *err,
                        size_t errlen) WH_MUST_CHECK;

/* Deletes endpoint_id's draining lane row of partition if nothing is
 * parked in that lane and (topic, partition) is still at epoch; *parked
 * says whether deliveries are parked (the row then stays). */
int wk_lanestore_reopen(wh_db *db, const char *endpoint_id,
                        const char *topic, int32_t partition, int64_t epoch,
                        bool *parked, char *err,
                        size_t errlen) WH_MUST_CHECK;

/* Whether delivery_id already ended (succeeded, or its final attempt is
 * recorded). */
int wk_lanestore_delivery_ended(wh_db *db, const char *delivery_id,
                                bool *ended, char *err,
                                size_t errlen) WH_MUST_CHECK;

#endif
