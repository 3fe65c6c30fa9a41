/*
 * dbq.h - the worker's query executor (dbq.c): one thread with its own
 * Postgres connection runs jobs from a bounded queue, so that the delivery
 * event loop never waits for Postgres. A job's run function executes on
 * that thread with the connection (any number of statements, or a
 * transaction); its done function runs later on the main thread, from
 * wk_dbq_poll, once the loop saw wk_dbq_fd turn readable.
 */
#ifndef WK_DBQ_H
#define WK_DBQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "db.h"
#include "wh.h"

typedef struct wk_dbq wk_dbq;
typedef uint64_t wk_dbq_id;

/* On the executor's thread, with a connected db: the job's work. Returns
 * WH_OK, or WH_ERR with err set. Must touch nothing the main thread uses
 * (arg is the job's own). */
typedef int wk_dbq_run_fn(wh_db *db, void *arg, char *err, size_t errlen);
/* On the main thread: run's result. rc is WH_ERR with err set as well when
 * the job never ran because there was no connection (the executor was
 * backing off after a failed connect). */
typedef void wk_dbq_done_fn(void *arg, int rc, const char *err);

typedef struct {
    const char *name;           /* in logs, e.g. "maintenance" (static) */
    wk_dbq_run_fn *run;
    wk_dbq_done_fn *done;       /* NULL: nothing to tell */
    /* Main thread, exactly once per accepted job, after done (or instead
     * of it when the job was cancelled or the executor destroyed); NULL
     * when arg needs no freeing. */
    void (*release)(void *arg);
    void *arg;
} wk_dbq_job;

#define WK_DBQ_QUEUE_MAX 100000

typedef struct {
    const char *url;            /* DATABASE_URL; copied */
    size_t queue_max;           /* jobs accepted and not yet polled,
                                   1..WK_DBQ_QUEUE_MAX */
    int64_t backoff_min_ms;     /* after a failed connect; doubles ... */
    int64_t backoff_max_ms;     /* ... up to this */
} wk_dbq_conf;

/* Starts the thread; it connects when the first job arrives. */
int wk_dbq_new(const wk_dbq_conf *conf, wk_dbq **out, char *err,
               size_t errlen) WH_MUST_CHECK;
/* Stops the thread and frees q: queued jobs do not run, no done runs, every
 * release does. A running job gets grace_ms to finish; then its connection
 * is interrupted (wh_db_interrupt), so this returns within about grace_ms
 * even when Postgres hangs (plus the connect timeout when the thread is in
 * the middle of connecting). */
void wk_dbq_destroy(wk_dbq *q, int64_t grace_ms);

/* Queues a copy of job. WH_AGAIN when queue_max jobs are accepted and not
 * yet polled: nothing was queued and job->arg is still the caller's. *id
 * (id may be NULL) names the job for wk_dbq_cancel. */
int wk_dbq_submit(wk_dbq *q, const wk_dbq_job *job,
                  wk_dbq_id *id) WH_MUST_CHECK;
/* The job's owner went away: a queued or running job still runs, but its
 * done is skipped (its release still runs). Harmless for an id that is
 * finished or unknown. */
void wk_dbq_cancel(wk_dbq *q, wk_dbq_id id);

/* Readable when finished jobs wait for wk_dbq_poll. */
int wk_dbq_fd(const wk_dbq *q);
/* Runs done and release of every finished job, in the order they finished;
 * returns how many. Main thread. */
size_t wk_dbq_poll(wk_dbq *q);
/* Jobs accepted and not yet polled. */
size_t wk_dbq_pending(const wk_dbq *q);
/* Counters since start, for metrics. */
typedef struct {
    int64_t run;             /* jobs whose run function ran */
    int64_t failed;          /* ... and returned WH_ERR */
    int64_t skipped;         /* jobs failed without running: no connection */
    int64_t connects_failed; /* connection attempts that failed */
} wk_dbq_stats;
void wk_dbq_counts(const wk_dbq *q, wk_dbq_stats *st);

#endif
