/*
 * recorder.h - the attempt recorder (recorder.c): batches the rows both
 * stages make durable before their offsets move (events, attempts and the
 * retries they schedule, lane changes) and writes each batch in one
 * transaction on its own thread and connection. Rows are encoded by
 * rows.c when added. Called from the main thread only; the thread wakes
 * the loop through wk_recorder_fd.
 */
#ifndef WK_RECORDER_H
#define WK_RECORDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rows.h"
#include "wh.h"

typedef struct wk_ctx wk_ctx;
typedef struct wk_recorder wk_recorder;

/* Called once the row added with (fn, opaque, arg) is durable. */
typedef void wk_recorded_fn(void *opaque, void *arg);

wk_recorder *wk_recorder_new(wk_ctx *ctx);
/* Stops the thread and frees r. A write still running gets grace_ms to
 * finish; then its connection is interrupted (wh_db_interrupt), so this
 * returns within about grace_ms even when Postgres hangs. Rows not
 * committed are given up (their offsets were not stored). */
void wk_recorder_destroy(wk_recorder *r, int64_t grace_ms);
/* Buffer the row (copied), encoded by rows.c: text sanitized and cut to
 * its bound, numbers clamped (counted in rows_clamped and logged). WH_ERR
 * (logged) only when the recorder is full (it holds everything in flight,
 * so it is not). */
int wk_recorder_add(wk_recorder *r, const wk_attempt *a, wk_recorded_fn *fn,
                    void *opaque, void *arg) WH_MUST_CHECK;
int wk_recorder_add_event(wk_recorder *r, const wk_event_row *e,
                          wk_recorded_fn *fn, void *opaque,
                          void *arg) WH_MUST_CHECK;
/* Buffers a lane change; fn (may be NULL) runs once it is durable or was
 * dropped by the ownership fence. */
int wk_recorder_add_lane(wk_recorder *r, const wk_lane_op *op,
                         wk_recorded_fn *fn, void *opaque,
                         void *arg) WH_MUST_CHECK;
/* A stage that goes away: its rows are still written, but nobody is told. */
void wk_recorder_forget(wk_recorder *r, void *arg);
/* Milliseconds until wk_recorder_flush has work (0 = now, -1 = nothing
 * to do until rows are added or wk_recorder_fd turns readable). */
int64_t wk_recorder_due_ms(const wk_recorder *r);
/* Moves the writing on without blocking: settles the batch the recorder's
 * thread finished (its waiters run here, on the calling thread) and hands
 * it the next one. A batch is one transaction: event rows and attempt
 * rows with COPY, and the attempts' retries through a staging table, so a
 * retry is durable exactly when its attempt row is. A write Postgres
 * refuses for a data reason (SQLSTATE class 22, 23, 54) is split until the
 * refused rows are found; each is written in its minimal form or dropped
 * (logged, counted), and its waiter runs all the same. Any other failed
 * write keeps the batch, reconnects, and is tried again after a backoff:
 * WH_ERR reports the failure (once), WH_AGAIN while backing off. */
int wk_recorder_flush(wk_recorder *r, char *err, size_t errlen) WH_MUST_CHECK;
/* Blocks until every row added so far is durable and its waiter ran, for
 * at most about timeout_ms. WH_ERR when that did not happen in time, when
 * a write failed or is backing off after a failure (the rows stay
 * buffered and are written later), or when called from a waiter. */
int wk_recorder_sync(wk_recorder *r, int64_t timeout_ms, char *err,
                     size_t errlen) WH_MUST_CHECK;
/* Readable when the thread finished a batch: call wk_recorder_flush. */
int wk_recorder_fd(const wk_recorder *r);
/* Rows buffered or being written. */
size_t wk_recorder_pending(const wk_recorder *r);

/* What the recorder has done and holds, for /metrics and /readyz. Times
 * are wh_mono_us() values, 0 when there is none. */
typedef struct {
    size_t pending;            /* rows buffered or being written */
    int64_t oldest_pending_us; /* when the oldest uncommitted row was added */
    int64_t last_commit_us;    /* when the last transaction committed */
    int64_t commits;           /* transactions committed */
    int64_t failures;          /* failed writes (retried after a backoff) */
    int64_t splits;            /* batches split to isolate refused rows */
    int64_t rows_isolated;     /* rows written in their minimal form */
    int64_t rows_dropped;      /* rows refused even in their minimal form */
    int64_t rows_clamped;      /* rows whose values were cut or clamped */
} wk_recorder_stats;
/* Fills *st. Main thread, like every other call. */
void wk_recorder_counts(const wk_recorder *r, wk_recorder_stats *st);

#endif
