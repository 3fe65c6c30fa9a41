/*
 * lane.h - one endpoint's delivery lane as a state machine, and the budget
 * of parked deliveries all draining lanes may hold in memory at once. Pure:
 * no Kafka, Postgres or HTTP; the delivery stage (deliver.c) performs what
 * the transitions imply (lane writes, parking, loads). Main thread only.
 *
 * States (sql/006_lanes.sql mirrors BLOCKED and DRAINING as a lanes row):
 *
 *   OPEN     -> DRAINING  spill: an arrival finds lane_queue_max queued,
 *                         the oldest queued one waited lane_park_after, the
 *                         queues of all lanes are full, or the stage stops
 *                         (SIGTERM) with some queued; the stage parks the
 *                         queue
 *   OPEN     -> BLOCKED   an ordered delivery failed and will be retried
 *   DRAINING -> BLOCKED   a drained (or queued) delivery failed likewise
 *   BLOCKED  -> BLOCKED   the head failed again (waits for its next attempt)
 *   BLOCKED  -> DRAINING  the head ended: succeeded or dead-lettered
 *   DRAINING -> OPEN      nothing is parked any more (the lanes row is gone)
 *   OPEN     -> BLOCKED | DRAINING   a partition load finds the lanes row
 *
 * Every other change is a bug and fails an assert.
 */
#ifndef WK_LANE_H
#define WK_LANE_H

#include <stdbool.h>
#include <stdint.h>

#include "endpoints.h"
#include "limit.h"
#include "wh.h"

typedef enum { WK_LANE_OPEN, WK_LANE_BLOCKED, WK_LANE_DRAINING } wk_lane_state;

/* Link embedded in whatever the lane queues (deliver.c: its jobs). */
typedef struct wk_lane_entry {
    struct wk_lane_entry *next;
} wk_lane_entry;

typedef struct wk_lane {
    char endpoint_id[WH_ENDPOINT_ID_MAX];
    int32_t partition;
    int64_t epoch;            /* the partition's ownership epoch */
    wk_lane_state state;      /* changed only by the functions below */
    char head_id[WH_ID_MAX + 1]; /* BLOCKED: the delivery waited for */
    uint32_t head_attempt;    /* BLOCKED: its attempt waited for */
    bool head_busy;           /* BLOCKED: that attempt is in flight */
    wk_lane_entry *qhead, *qtail;
    size_t queued;
    int in_flight;            /* attempts holding a slot */
    int64_t drained_pos;      /* DRAINING: last parked position taken */
    size_t granted;           /* drain budget granted, not yet loaded */
    bool budget_wait;         /* in the drain budget's wait list */
    struct wk_lane *budget_prev, *budget_next;
    wh_bucket bucket;         /* the endpoint's rate limit */
    wh_breaker breaker;
    /* kept by the delivery stage */
    int unflushed;            /* lane writes still in the recorder */
    uint32_t writes;          /* lane writes buffered, ever (drain.c) */
    bool flush_wait;          /* a refill waits for unflushed to be 0 */
    uint64_t refill_job;      /* the refill on the query executor, 0: none */
    size_t refill_units;      /* drain budget it holds */
    uint64_t check_job;       /* a retry's "did it end" query, 0: none */
    wk_lane_entry *checking;  /* ... that retry (its link) */
    wk_lane_entry *hold_head, *hold_tail; /* arrivals behind the check */
    bool place_waiting;       /* in the stage's list of lanes waiting for
                                 their partition's placed offset */
    int64_t place_wait_pos;   /* ... to pass this parked position */
    struct wk_lane *place_next;
    uint64_t reread_job;      /* the endpoint re-read a head waits for */
    wk_lane_entry *rereading; /* ... that head (its link) */
    int refs;                 /* the map, jobs, buffered writes, wake list */
    bool detached;            /* partition revoked: nothing more starts */
    bool waking;
    int64_t wake_at_us;
    struct wk_lane *wake_next;
    struct wk_lane *aprev, *anext; /* every lane, for destroy */
} wk_lane;

/* An OPEN lane with an empty queue. */
void wk_lane_init(wk_lane *l, const char *endpoint_id, int32_t partition,
                  int64_t epoch);
/* Whether a lane may change from `from` to `to` (the table above). */
bool wk_lane_can(wk_lane_state from, wk_lane_state to);
const char *wk_lane_state_name(wk_lane_state s);

/* Partition load found the lane's row: head_id NULL means DRAINING,
 * otherwise BLOCKED waiting for (head_id, head_attempt). */
void wk_lane_load(wk_lane *l, const char *head_id, uint32_t head_attempt);

/* Where an arriving delivery goes. */
typedef enum {
    WK_LANE_TO_QUEUE, /* into the queue (wk_lane_push) */
    WK_LANE_TO_PARK   /* into webhooks.parked */
} wk_lane_place;
/* For a new delivery (or a retry that is not the head's): OPEN queues
 * up to queue_max, then spills to DRAINING; otherwise it is parked. */
wk_lane_place wk_lane_admit(wk_lane *l, size_t queue_max);
/* OPEN -> DRAINING: what is queued and what arrives is parked from now on
 * (the caller parks the queue). */
void wk_lane_spill(wk_lane *l);

typedef enum {
    WK_LANE_RETRY_HEAD,          /* the awaited attempt: start it (head_busy) */
    WK_LANE_RETRY_OTHER_ATTEMPT, /* the head's delivery, another attempt: stale */
    WK_LANE_RETRY_BUSY,          /* the awaited attempt is already in flight */
    WK_LANE_RETRY_NOT_HEAD       /* not the head: admit it like a new one */
} wk_lane_retry;
/* For a retry message of (delivery_id, attempt). */
wk_lane_retry wk_lane_admit_retry(wk_lane *l, const char *delivery_id,
                                  uint32_t attempt);

/* Queue operations. push asserts the lane is not BLOCKED. */
void wk_lane_push(wk_lane *l, wk_lane_entry *e);
wk_lane_entry *wk_lane_pop(wk_lane *l);

/* A delivery failed and its retry `attempt` is scheduled: the lane waits
 * for it. drain_from is where the next drain starts (-1: the beginning).
 * The caller empties the queue (parks consumed deliveries). */
void wk_lane_block(wk_lane *l, const char *delivery_id, uint32_t attempt,
                   int64_t drain_from);
/* The head ended: BLOCKED -> DRAINING, from the first parked delivery. */
void wk_lane_unblock(wk_lane *l);
/* A drain found nothing parked: DRAINING -> OPEN. */
void wk_lane_reopen(wk_lane *l);
/* A drain must start over from the first parked delivery. */
void wk_lane_redrain(wk_lane *l);

/* Attempts a lane may have in flight: 1 for an ordered endpoint or a gone
 * one (ep NULL), else the endpoint's max_in_flight (at least 1). */
int wk_lane_limit(const wh_endpoint *ep);

typedef enum {
    WK_LANE_IDLE,   /* nothing to start now */
    WK_LANE_REFILL, /* DRAINING, empty and idle: load parked deliveries */
    WK_LANE_START   /* the queue's head may start (limits permitting) */
} wk_lane_step;
wk_lane_step wk_lane_next(const wk_lane *l, int limit);

/* An attempt takes / gives back one of the lane's slots. */
void wk_lane_slot_take(wk_lane *l);
void wk_lane_slot_give(wk_lane *l);

/* ---- drain budget ------------------------------------------------------- */

/* Parked deliveries loaded into memory, over every lane, stay at or below
 * max. A lane asks before it loads; when nothing is left it waits in FIFO
 * order and is granted a share (up to `chunk`) as deliveries finish. */
typedef struct {
    size_t max, used, chunk;
    size_t peak;                   /* most ever used */
    wk_lane *wait_head, *wait_tail;
    size_t waiting;
    int64_t waits;                 /* times a lane had to wait */
    void (*wake)(wk_lane *l, void *opaque); /* a waiter was granted */
    void *opaque;
} wk_drain_budget;

void wk_drain_budget_init(wk_drain_budget *b, size_t max, size_t chunk,
                          void (*wake)(wk_lane *l, void *opaque),
                          void *opaque);
/* Units l may load now, at most want (and chunk): its grant if it has
 * one, else what is free unless other lanes wait first. 0: l now waits and
 * is woken through b->wake once granted. The units count as used until
 * given back. */
size_t wk_drain_take(wk_drain_budget *b, wk_lane *l, size_t want);
/* Gives back n units (loaded deliveries that finished, or a take that
 * loaded fewer); grants what is free to waiting lanes. */
void wk_drain_give(wk_drain_budget *b, size_t n);
/* l goes away or stops draining: out of the wait list, its grant back. */
void wk_drain_cancel(wk_drain_budget *b, wk_lane *l);

#endif
