/*
 * dl.h - internals of the delivery stage shared by its parts: deliver.c
 * (arrivals, lanes, drains and the stage's interface), outcome.c (starting
 * an attempt, what its outcome implies, dead letters) and rebalance.c
 * (taking and revoking partitions). Nothing else includes it. Main thread
 * only. drain.c (refilling draining lanes from webhooks.parked) is part
 * of the stage too.
 *
 * Job states: QUEUED -> SENDING -> [DEAD_LETTERING] -> RECORDING -> DONE,
 * or PARKING -> DONE. A job's lane slot is released when its response
 * arrived, except after a dead letter: then the next delivery of the lane
 * waits until the final attempt is durable, so a dead-lettered head can
 * never be retried after a later delivery succeeded.
 */
#ifndef WK_DL_H
#define WK_DL_H

#include <stddef.h>

#include "attempt.h"
#include "deadletter.h"
#include "deliver.h"
#include "lane.h"
#include "parts.h"

typedef enum {
    JOB_QUEUED,
    JOB_SENDING,
    JOB_DEAD_LETTERING,
    JOB_RECORDING,
    JOB_PARKING,
    JOB_DONE
} dl_job_state;

struct dl_job;

/* The tracker's record of a consumed message; outlives its job until the
 * offset prefix passes it. */
typedef struct {
    wk_item item;
    struct dl_job *job;
} dl_ticket;

typedef struct dl_job {
    wk_msg_tag tag;     /* first: producer reports are routed by it */
    wk_dead dead;       /* its dead letter (deadletter.h) */
    wk_lane_entry link; /* lane queue or held list */
    dl_ticket *tk;      /* NULL for a delivery loaded from webhooks.parked */
    int32_t partition;
    int64_t position;   /* offset, or the parked row's position */
    wh_kmsg *km;
    wh_delivery_msg *dm;
    wk_lane *lane;
    struct dl_job *sprev, *snext; /* SENDING jobs, for revokes */
    struct dl_job *lprev, *lnext; /* jobs without a ticket */
    dl_job_state state;
    bool parked_row; /* a row in webhooks.parked: unpark with its outcome */
    bool head;       /* the retry its blocked lane waits for */
    bool holds_slot; /* counted in its lane's in_flight */
    bool undecodable;
    bool budgeted;   /* loaded from webhooks.parked: a unit of the budget */
    bool reread;     /* its endpoint was read again before it started */
    /* an unreadable parked row (undecodable, no km): its delivery_id and
     * bytes, for its dead letter and its removal */
    char *parked_id;
    void *raw;
    size_t raw_len;
    wh_http_req req;
    char url[WH_URL_MAX + 1];
    int64_t attempted_at_us;
    int64_t queued_at_us; /* QUEUED: since when (WORKER_LANE_PARK_AFTER) */
    wk_outcome out; /* kept while a dead letter is in flight */
} dl_job;

#define DL_JOB_OF(e) ((dl_job *)((char *)(e) - offsetof(dl_job, link)))

struct wk_deliver {
    wk_ctx *ctx;
    wh_kafka_consumer *consumer;
    wk_tracker *tracker;
    wh_map *lanes;
    wk_lane *all_lanes;
    wk_lane *wake;
    wk_lane *placing;   /* lanes waiting for their partition's placed
                           offset to pass a parked position (drain.c) */
    dl_job *sending;
    dl_job *loose;      /* jobs without a ticket */
    wk_parts parts;
    wk_drain_budget budget; /* parked deliveries loaded, over all lanes */
    int64_t load_at_us; /* retry of a failed partition load */
    /* partition loads under way on the query executor (dbq.h), by
     * partition: the job's id, 0 when none */
    uint64_t loading[WK_PARTS_MAX];
    wh_buf buf;         /* the retry or dead letter being encoded */
    bool paused;
    size_t active;      /* consumed jobs not yet done */
    size_t queued;      /* ... of them waiting in lane queues: they can be
                           parked, so they do not count toward the pause */
    int64_t spill_scan_us; /* next look for queues waiting too long */
    int64_t sent, succeeded, failed, parked, stale, blocked, unreadable;
    int64_t spills_count, spills_waited, spills_memory; /* deliver.h */
    int64_t handed_done; /* consumed again below a hand-off, already done */
};

/* ---- deliver.c ---------------------------------------------------------- */

/* The job's outcome is durable (or it was dropped): frees it, lets its
 * offset move and drops its lane reference. */
void wk_dl_job_done(wk_deliver *d, dl_job *j);
/* Gives back j's lane slot, if it holds one, and wakes the lane. */
void wk_dl_slot_free(wk_deliver *d, dl_job *j);
void wk_dl_lane_unref(wk_deliver *d, wk_lane *l);
/* Whether l's endpoint is ordered (a gone endpoint counts as ordered). */
bool wk_dl_ordered(wk_deliver *d, const wk_lane *l);
void wk_dl_sending_add(wk_deliver *d, dl_job *j);
void wk_dl_sending_del(wk_deliver *d, dl_job *j);
/* Buffers a lane change for l; j (may be NULL) is done once it is
 * durable (through wk_dl_recorded). */
void wk_dl_lane_write(wk_deliver *d, wk_lane *l, wk_lane_op *op, dl_job *j);
/* j failed and its retry `attempt` is scheduled: l waits for it, and what
 * is queued behind j is parked (consumed) or left parked (loaded). */
void wk_dl_block(wk_deliver *d, wk_lane *l, dl_job *j, uint32_t attempt);
/* The head ended (succeeded or dead-lettered): drain what is parked. */
void wk_dl_unblock(wk_deliver *d, wk_lane *l);
/* j was loaded from webhooks.parked and ended: its row goes. */
void wk_dl_unpark(wk_deliver *d, wk_lane *l, dl_job *j);
/* Takes the head of l's queue (NULL: empty). */
dl_job *wk_dl_dequeue(wk_deliver *d, wk_lane *l);
/* Starts what the lane may start now. */
void wk_dl_pump(wk_deliver *d, wk_lane *l);
/* Asks the event loop to pump l at due_us (monotonic; 0 = now). */
void wk_dl_wake(wk_deliver *d, wk_lane *l, int64_t due_us);
/* A lane is one endpoint's on one partition: the lanes map's key. */
#define WK_DL_LANE_KEY_MAX (16 + WH_ENDPOINT_ID_MAX)
void wk_dl_lane_key(char *key, int32_t partition, const char *endpoint_id);
/* A fresh OPEN lane of (partition, endpoint_id) in the map, where it must
 * not be yet. */
wk_lane *wk_dl_lane_new(wk_deliver *d, const char *endpoint_id,
                        int32_t partition, int64_t epoch);
/* Routes a decoded message of a loaded partition into its lane. A retry
 * that is not its lane's head is checked on the query executor first
 * (did its delivery end?), and the lane holds later arrivals meanwhile. */
void wk_dl_dispatch(wk_deliver *d, dl_job *j);
/* l goes away: its check is cancelled and the jobs it holds are done. */
void wk_dl_lane_drop_held(wk_deliver *d, wk_lane *l);

/* A parked row a refill loaded (drain.c): queued in l as a job holding one
 * unit of the drain budget; l's drained position moves to it. */
void wk_dl_load_parked(wk_deliver *d, wk_lane *l, int64_t position,
                       const char *delivery_id, const void *delivery,
                       size_t len);

/* ---- drain.c ------------------------------------------------------------ */

#define WK_DRAIN_BATCH 256 /* parked deliveries one lane loads at a time */

/* For a DRAINING lane that is empty and idle: queues the load of its next
 * parked deliveries (or its reopen) on the query executor. WH_DECLINED:
 * the lane is woken when there is something to do (the load finished, its
 * buffered writes are durable, the drain budget granted it a share);
 * WH_AGAIN: try again in a second. Never waits for Postgres. */
int wk_dl_refill(wk_deliver *d, wk_lane *l);
/* Wakes the lanes whose partition has now placed every message before the
 * parked delivery they wait to send. */
void wk_dl_placing_tick(wk_deliver *d);
/* l goes away (detached): its refill is cancelled and the drain budget it
 * held or waited for is given back. */
void wk_dl_drain_stop(wk_deliver *d, wk_lane *l);
/* One of l's buffered lane writes is durable (or dropped). */
void wk_dl_lane_flushed(wk_deliver *d, wk_lane *l);

/* ---- rebalance.c -------------------------------------------------------- */

/* The consumer's rebalance callback (wh_kafka_consumer_new). */
void wk_dl_rebalance(void *opaque, int assigned, const int32_t *parts,
                     size_t n);
/* Takes the assigned partitions not taken yet (on the query executor). */
void wk_dl_load_parts(wk_deliver *d);

/* ---- outcome.c ---------------------------------------------------------- */

/* Starts j's attempt (it takes a slot of its lane), or records why it
 * cannot be made. */
void wk_dl_start(wk_deliver *d, dl_job *j);
/* Sends j's DeadLetter through ctx->dead (deadletter.h); once Kafka has
 * it the final attempt is recorded, or an undecodable message is done. */
void wk_dl_dead_letter(wk_deliver *d, dl_job *j, wh_dead_reason reason,
                       const char *detail);
/* l goes away: the endpoint re-read its head retry waits for is
 * cancelled, and that job is done. */
void wk_dl_reread_cancel(wk_deliver *d, wk_lane *l);
/* Recorder callback: the row written for job `opaque` is durable. */
void wk_dl_recorded(void *opaque, void *arg);

#endif
