/*
 * deliver.h - the delivery stage (deliver.c): consumes the deliveries
 * topic, keeps one lane per endpoint (lane.h), starts attempts (attempt.h),
 * hands outcomes to the recorder and keeps lanes in Postgres (lanestore.h).
 * Driven by the event loop in main.c, on the main thread.
 */
#ifndef WK_DELIVER_H
#define WK_DELIVER_H

#include "worker.h"

int wk_deliver_new(wk_ctx *ctx, wk_deliver **out, char *err,
                   size_t errlen) WH_MUST_CHECK;
/* Consumes up to budget deliveries; returns how many it took. */
int wk_deliver_poll(wk_deliver *d, int budget);
int wk_deliver_fd(wk_deliver *d);
/* HTTP completions. */
void wk_deliver_http_done(wh_http_req *req, void *opaque);
size_t wk_deliver_pending(const wk_deliver *d);
/* Lane work that waits for a time (Postgres backoff) or for the loop
 * (durable outcomes); call every loop iteration. */
void wk_deliver_tick(wk_deliver *d);
/* SIGTERM (ctx->stopping set): no attempt starts any more; what lanes
 * queue in memory is parked in Postgres (its offsets move once that is
 * durable) and lanes with queues become DRAINING, so the partitions' next
 * owner sends it in order after the requests now in flight. */
void wk_deliver_stop(wk_deliver *d);
/* While stopping: serves the consumer's group (rebalances, so partitions
 * move to a replacement at once) and drops what it polls, unstored (the
 * next owner consumes it). Returns how many messages were dropped. */
int wk_deliver_serve(wk_deliver *d, int budget);
/* While stopping: commits the stored offsets now (see
 * wh_kafka_consumer_commit_soon). */
void wk_deliver_commit_soon(wk_deliver *d);
/* Milliseconds until wk_deliver_tick has work (0 = now, -1 = none). */
int64_t wk_deliver_due_ms(const wk_deliver *d);
typedef struct {
    int64_t sent, succeeded, failed; /* attempts */
    int64_t parked;                  /* deliveries parked behind a lane */
    int64_t stale;                   /* stale retries ignored */
    int64_t blocked;                 /* times a lane was blocked */
    int64_t active;                  /* consumed, outcome not yet durable */
    int64_t lanes;                   /* lanes in memory */
    int64_t unreadable;              /* unreadable parked rows dead-lettered */
    int64_t queued;                  /* consumed, waiting in lane queues */
    int64_t handed_done;             /* consumed again after a hand-off,
                                        already delivered: not sent */
    /* lanes whose queue was parked: by count (WORKER_LANE_QUEUE_MAX), by
     * time (WORKER_LANE_PARK_AFTER), for memory (WORKER_MAX_IN_FLIGHT) */
    int64_t spills_count, spills_waited, spills_memory;
    /* the drain budget (WORKER_DRAIN_MAX): parked deliveries loaded now,
     * the most ever, times a lane waited for it, lanes waiting now */
    int64_t drain_loaded, drain_peak, drain_waits, drain_waiting;
} wk_deliver_stats;
void wk_deliver_counts(const wk_deliver *d, wk_deliver_stats *st);
void wk_deliver_destroy(wk_deliver *d);

#endif
