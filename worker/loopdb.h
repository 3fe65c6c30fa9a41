/*
 * loopdb.h - the Postgres work of the worker's event loop itself, run as
 * jobs on the query executor (dbq.h) so that none of it holds the loop:
 * endpoint reads (after a change notification, the periodic reload, a
 * burst of changes read as one reload), history maintenance and the
 * disabling of failing endpoints, the readiness probe, and reopening the
 * loop's and the LISTEN connections. Main thread only; one per process.
 */
#ifndef WK_LOOPDB_H
#define WK_LOOPDB_H

#include <stdbool.h>
#include <stdint.h>

#include "worker.h"

typedef struct {
    int64_t loop_db_timeout_ms; /* statement timeout of a reopened ctx->db */
    int64_t probe_interval_ms;  /* between probes */
    int64_t probe_timeout_ms;   /* a probe unanswered this long: down */
} wk_loopdb_conf;

/* Starts the schedule (the first periodic reload is one
 * WORKER_ENDPOINT_REFRESH away, maintenance is due at once). ctx (with its
 * dbq) must outlive every other call. */
void wk_loopdb_init(wk_ctx *ctx, const wk_loopdb_conf *conf);
/* Sends a probe when one is due, or marks Postgres down when the one in
 * flight has waited past probe_timeout_ms. */
void wk_loopdb_probe(void);
/* The LISTEN connection turned readable: reads its notifications and
 * queues the endpoint reads they ask for. */
void wk_loopdb_on_notify(void);
/* Queues what is due: the bulk or periodic endpoint reload, reconnects of
 * lost connections, maintenance (only with the delivery stage). */
void wk_loopdb_tick(void);
/* Whether the last probe was answered in time; *why (may be NULL) says
 * what is wrong while it was not. */
bool wk_loopdb_db_up(const char **why);
/* webhook_worker_database_up (1 or 0), stable for the process's life. */
const int64_t *wk_loopdb_up_gauge(void);
/* Round trip of the last answered probe, in seconds. */
double wk_loopdb_probe_seconds(void);

#endif
