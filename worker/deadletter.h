/*
 * deadletter.h - the worker's one dead-letter sender, used by the fan-out
 * and the delivery stage alike: it encodes a dead letter, produces it to
 * the dead-letter topic and owns the outcome until Kafka acknowledged it
 * (or, given up, Postgres stored it), then tells the stage through a
 * callback. Main thread only; the store runs on the query executor.
 *
 * What it does with failures (one rule for both stages):
 *   - the producer's queue is full: wait and send again, with backoff;
 *   - a dead letter too large to produce (refused by the producer or, in
 *     the delivery report, by the broker): the same dead letter without
 *     bodies (no raw bytes, no event payload; lengths and SHA-256 kept);
 *   - any other refusal or failed delivery report, and a dead letter
 *     without bodies that still fails: send again after a backoff of
 *     WK_DEAD_BACKOFF_MIN_MS doubling to WK_DEAD_BACKOFF_MAX_MS, with the
 *     original reason and detail; every retry is counted and logged once,
 *     with its delay;
 *   - not acknowledged give_up_ms after wk_dead_send (0: never), whether
 *     backing off or still in the producer (a partition without leader:
 *     the worker's producer never times a message out): given up. The
 *     dead letter, encoded as it would have been produced, is inserted
 *     into webhooks.unsent_dead_letters; once that row is committed it is
 *     logged as an error (what it is about, the topic, the last error),
 *     counted, and done() runs with WK_DEAD_GIVEN_UP, so the stage goes
 *     on and its offset moves. The insert is the one thing never given
 *     up (it is what makes giving up lose nothing): a failed insert, or a
 *     full query executor, is tried again with the same backoff, counted
 *     as store_failed; the message stays pending meanwhile. A message
 *     still in the producer when it was given up may reach Kafka later
 *     too (a duplicate, as after any redelivery).
 */
#ifndef WK_DEADLETTER_H
#define WK_DEADLETTER_H

#include <stdbool.h>
#include <sys/queue.h>

#include "codec.h"
#include "kafka.h"
#include "worker.h"

#define WK_DEAD_BACKOFF_MIN_MS 100
#define WK_DEAD_BACKOFF_MAX_MS 5000

/* done()'s outcome for a dead letter given up and stored in Postgres
 * instead (WH_OK and WH_DECLINED: acknowledged by Kafka). */
#define WK_DEAD_GIVEN_UP 1

typedef struct wk_deadletter wk_deadletter;
typedef struct wk_dead wk_dead;

/* Called once the dead letter is durable: outcome WH_OK when Kafka
 * acknowledged it as given, WH_DECLINED when only the form without bodies
 * could be sent, WK_DEAD_GIVEN_UP when Kafka did not take it within the
 * give-up bound and its row in webhooks.unsent_dead_letters is committed.
 * Either way the stage may go on and commit its message's offset. */
typedef void wk_dead_done_fn(wk_dead *d, void *owner, int outcome);

/*
 * One dead letter, embedded in the stage's per-message struct. States:
 *   IDLE -> SENDING (in the producer) -> IDLE with done() called;
 *   SENDING or IDLE -> WAITING (backoff) -> SENDING;
 *   SENDING or WAITING past give_up_at_us -> STORING (the insert into
 *   webhooks.unsent_dead_letters runs) -> IDLE with done() called;
 *   STORING -> WAITING (the insert failed; given_up set) -> STORING.
 * Only IDLE, WAITING and STORING ones may be cancelled; a SENDING one is
 * the producer's until its report.
 */
typedef enum {
    WK_DEAD_IDLE,
    WK_DEAD_SENDING,
    WK_DEAD_WAITING,
    WK_DEAD_STORING
} wk_dead_state;

struct wk_dead_ticket; /* what the producer holds for a send (deadletter.c) */

struct wk_dead {
    wk_dead_state state;
    wk_deadletter *sender; /* set by wk_dead_send */
    wh_dead_letter dl;   /* its strings point into text */
    char *text;          /* detail, last_error, key and topic, copied */
    const char *key;     /* NULL: no key */
    wk_dead_done_fn *done;
    void *owner;
    uint32_t retries;
    int64_t backoff_ms;  /* the last delay waited (0: none yet) */
    int64_t retry_at_us; /* WAITING: when it is sent again (monotonic) */
    int64_t first_at_us; /* wk_dead_send (monotonic) */
    int64_t give_up_at_us; /* first_at_us + the bound; INT64_MAX: never */
    bool given_up;       /* WAITING or STORING: it goes to Postgres */
    char *failure;       /* the last failure (NULL: none yet); owned */
    struct wk_dead_ticket *ticket; /* SENDING: the producer's message */
    uint64_t store_job;  /* STORING: the query executor's job id */
    TAILQ_ENTRY(wk_dead) link; /* in the waiting or the sending list */
};

typedef struct {
    int64_t produced;    /* acknowledged by Kafka */
    int64_t retried;     /* sends repeated after a failure or a full queue */
    int64_t fell_back;   /* sent without bodies because of their size */
    int64_t waiting;     /* backing off now */
    int64_t given_up;    /* given up and stored in Postgres */
    int64_t store_failed; /* inserts of those that failed (tried again) */
} wk_dead_stats;

struct wk_dbq;

typedef struct {
    wh_kafka_producer *producer;
    struct wk_dbq *dbq;  /* runs the inserts of the dead letters given up */
    const char *topic;   /* the dead-letter topic; copied */
    size_t message_max;  /* the producer's message.max.bytes (the largest
                            encoding attempted) */
    int64_t give_up_ms;  /* give up after this long (0: never) */
} wk_deadletter_conf;

/* NULL when out of memory. */
wk_deadletter *wk_deadletter_new(const wk_deadletter_conf *conf);
/* Every dead letter must be idle or cancelled; what the producer still
 * holds is forgotten (its reports must not reach the sender any more). */
void wk_deadletter_destroy(wk_deadletter *s);

/*
 * Sends dl (reason, detail, delivery or raw bytes, source position, ...)
 * keyed by key (may be NULL). Its strings are copied; dl->delivery and
 * dl->raw must stay valid until done runs or d is cancelled (they are
 * encoded again for every retry). d must be idle. Never fails: the outcome
 * is done(d, owner, ...), called from wk_deadletter_on_report.
 */
void wk_dead_send(wk_deadletter *s, wk_dead *d, const wh_dead_letter *dl,
                  const char *key, wk_dead_done_fn *done, void *owner);
/* Stops a waiting or storing dead letter (done is never called), for an
 * owner that frees d; an insert already running may still commit its row
 * (the message is read again, like after a crash). WH_AGAIN when it is in
 * the producer: its report still comes, d must stay; WH_OK otherwise
 * (also for an idle or zeroed d). */
int wk_dead_cancel(wk_dead *d) WH_MUST_CHECK;
/* The delivery report of a dead letter's message (msg_opaque as given to
 * the producer: its first member is a wk_msg_tag, WK_MSG_DEAD). */
void wk_deadletter_on_report(wk_deadletter *s, void *msg_opaque, int ok,
                             const char *errstr);
/* Sends the dead letters whose backoff ended and gives up those past the
 * bound; call every loop iteration. */
void wk_deadletter_tick(wk_deadletter *s);
/* Milliseconds until wk_deadletter_tick has work (-1: none). */
int64_t wk_deadletter_due_ms(const wk_deadletter *s);
void wk_deadletter_counts(const wk_deadletter *s, wk_dead_stats *st);

#endif
