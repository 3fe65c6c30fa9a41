/*
 * deadletter.h - the worker's one dead-letter sender, used by the fan-out
 * and the delivery stage alike: it encodes a dead letter, produces it to
 * the dead-letter topic and owns the outcome until Kafka acknowledged it,
 * then tells the stage through a callback. Main thread only.
 *
 * What it does with failures (one rule for both stages):
 *   - the producer's queue is full: wait and send again, with backoff;
 *   - a dead letter too large to produce (refused by the producer or, in
 *     the delivery report, by the broker): the same dead letter without
 *     bodies (no raw bytes, no event payload; lengths and SHA-256 kept);
 *   - any other refusal or failed delivery report, and a dead letter
 *     without bodies that still fails: send again after a backoff of
 *     WK_DEAD_BACKOFF_MIN_MS doubling to WK_DEAD_BACKOFF_MAX_MS, forever,
 *     with the original reason and detail; every retry is counted and
 *     logged once, with its delay.
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

typedef struct wk_deadletter wk_deadletter;
typedef struct wk_dead wk_dead;

/* Called once the dead letter is acknowledged by Kafka: outcome WH_OK when
 * it was sent as given, WH_DECLINED when only the form without bodies
 * could be. */
typedef void wk_dead_done_fn(wk_dead *d, void *owner, int outcome);

/*
 * One dead letter, embedded in the stage's per-message struct. States:
 * IDLE -> SENDING (in the producer) -> IDLE with done() called; SENDING or
 * IDLE -> WAITING (backoff) -> SENDING. Only IDLE and WAITING ones may be
 * cancelled; a SENDING one is the producer's until its report.
 */
typedef enum { WK_DEAD_IDLE, WK_DEAD_SENDING, WK_DEAD_WAITING } wk_dead_state;

struct wk_dead {
    wk_msg_tag tag;      /* first: WK_MSG_DEAD routes reports here */
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
    TAILQ_ENTRY(wk_dead) link;
};

typedef struct {
    int64_t produced;    /* acknowledged by Kafka */
    int64_t retried;     /* sends repeated after a failure or a full queue */
    int64_t fell_back;   /* sent without bodies because of their size */
    int64_t waiting;     /* backing off now */
} wk_dead_stats;

/* topic: the dead-letter topic; message_max: the producer's
 * message.max.bytes (the largest encoding attempted). NULL when out of
 * memory. */
wk_deadletter *wk_deadletter_new(wh_kafka_producer *p, const char *topic,
                                 size_t message_max);
/* Every dead letter must be idle or cancelled. */
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
/* Stops a waiting dead letter (done is never called), for an owner that
 * frees d. WH_AGAIN when it is in the producer: its report still comes,
 * d must stay; WH_OK otherwise (also for an idle or zeroed d). */
int wk_dead_cancel(wk_dead *d) WH_MUST_CHECK;
/* The delivery report of d's message. */
void wk_deadletter_on_report(wk_deadletter *s, wk_dead *d, int ok,
                             const char *errstr);
/* Sends the dead letters whose backoff ended; call every loop iteration. */
void wk_deadletter_tick(wk_deadletter *s);
/* Milliseconds until wk_deadletter_tick has work (-1: none). */
int64_t wk_deadletter_due_ms(const wk_deadletter *s);
void wk_deadletter_counts(const wk_deadletter *s, wk_dead_stats *st);

#endif
