/*
 * fanout.h - the fan-out stage (fanout.c): consumes the events topic and
 * produces one Delivery per subscribed endpoint to the deliveries topic
 * with a producer of its own;
 * undecodable and oversize events go to the dead-letter sender
 * (deadletter.h). Called from the worker's event loop (main.c), main
 * thread only.
 */
#ifndef WK_FANOUT_H
#define WK_FANOUT_H

#include <stddef.h>

#include "wh.h"

typedef struct wk_ctx wk_ctx;
typedef struct wk_fanout wk_fanout;

int wk_fanout_new(wk_ctx *ctx, wk_fanout **out, char *err,
                  size_t errlen) WH_MUST_CHECK;
/* Consumes up to budget events; returns how many it took. Takes none
 * while an event waits for room in the producer's queue (consumption is
 * paused then) or once ctx->stopping is set. */
int wk_fanout_poll(wk_fanout *f, int budget);
int wk_fanout_fd(wk_fanout *f);
/* Delivery report for a Delivery the fan-out produced. */
void wk_fanout_on_report(wk_fanout *f, void *msg_opaque, int ok,
                         const char *errstr);
/* Resumes events waiting for room in the producer's queue, then repeats
 * failed fan-outs that are due; call every loop iteration. */
void wk_fanout_tick(wk_fanout *f);
/* While stopping: commits the stored offsets now (see
 * wh_kafka_consumer_commit_soon). */
void wk_fanout_commit_soon(wk_fanout *f);
/* Milliseconds until wk_fanout_tick has work (0 = now, -1 = none). */
int64_t wk_fanout_due_ms(const wk_fanout *f);
/* Consumed events whose offset cannot be committed yet. */
size_t wk_fanout_pending(const wk_fanout *f);
/* Events waiting for room in the producer's queue. */
size_t wk_fanout_waiting(const wk_fanout *f);
/* The stage's own producer (deliveries; see fanout.c on rewinds): its fd
 * for the event loop, serving its reports, messages it holds. */
int wk_fanout_producer_fd(wk_fanout *f);
void wk_fanout_serve(wk_fanout *f);
size_t wk_fanout_outq(const wk_fanout *f);
/* Times Kafka refused a Delivery and the stage rewound. */
int64_t wk_fanout_rewinds(const wk_fanout *f);
/* Why the stage cannot go on (a rewind could not seek back), or NULL:
 * the worker must restart so its partitions are read again. */
const char *wk_fanout_broken(const wk_fanout *f);
/* Leaves the consumer group and frees every event held, abandoning those
 * still waiting (their offsets are not committed: they are read again). */
void wk_fanout_destroy(wk_fanout *f);

#endif
