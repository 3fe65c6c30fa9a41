/*
 * dbwatch.c - whether Postgres answers the scheduler (see scheduler.h):
 * the outcome of the last round trip on a claim connection (a claim, a
 * commit, a probe, a connect), for /readyz and /metrics, and the probe
 * the loop sends when it has not asked Postgres for a while. Main thread.
 *
 * The loop waits for each call (within DATABASE_STATEMENT_TIMEOUT and its
 * grace, a connect within DATABASE_CONNECT_TIMEOUT) and answers /readyz
 * only between calls, so a server that stops answering shows as the call
 * that failed, or that answered later than the probe timeout, until the
 * next one is answered in time. A connection's state (PQstatus) changes
 * only after a call on it failed, so it is not the test.
 */
#include <inttypes.h>
#include <stdio.h>

#include "scheduler.h"

static sc_dbwatch_conf conf;
static struct {
    int64_t answered_us;  /* when Postgres last answered; 0: never */
    int64_t ended_us;     /* when the last round trip ended, either way */
    int64_t took_us;      /* the last answer's round trip */
    bool up;              /* what sc_dbwatch_up found last */
    int64_t failures;     /* round trips that failed */
    char why[WH_ERRLEN];  /* the last round trip's failure; "" if none */
} pg = {.why = "no claim has been answered yet"};

void sc_dbwatch_init(const sc_dbwatch_conf *c) { conf = *c; }

void sc_dbwatch_answered(int64_t took_us)
{
    pg.answered_us = pg.ended_us = wh_mono_us();
    pg.took_us = took_us;
    pg.why[0] = '\0';
}

void sc_dbwatch_failed(const char *why)
{
    pg.ended_us = wh_mono_us();
    pg.failures++;
    wh_strlcpy(pg.why, why, sizeof(pg.why));
}

int64_t sc_dbwatch_due_us(void)
{
    return pg.ended_us + conf.probe_interval_ms * 1000;
}

void sc_dbwatch_probe(wh_db *db)
{
    char err[WH_ERRLEN], why[WH_ERRLEN];
    if (wh_mono_us() < sc_dbwatch_due_us() || !db || !wh_db_alive(db))
        return;
    int64_t t0 = wh_mono_us();
    if (wh_db_exec(db, "SELECT 1", err, sizeof(err)) != WH_OK) {
        snprintf(why, sizeof(why), "the probe failed: %.200s", err);
        sc_dbwatch_failed(why);
        return;
    }
    sc_dbwatch_answered(wh_mono_us() - t0);
}

bool sc_dbwatch_up(wh_db *db, char *why, size_t cap)
{
    int64_t timeout_us = conf.probe_timeout_ms * 1000;
    int64_t age_us = wh_mono_us() - pg.answered_us;
    why[0] = '\0';
    if (pg.why[0])
        snprintf(why, cap, "database: %.240s", pg.why);
    else if (!db || !wh_db_alive(db))
        snprintf(why, cap, "no database connection");
    else if (pg.took_us > timeout_us)
        snprintf(why, cap, "database: Postgres took %" PRId64
                 " ms to answer", pg.took_us / 1000);
    else if (age_us > conf.probe_interval_ms * 1000 + timeout_us)
        snprintf(why, cap, "database: Postgres has not answered for %" PRId64
                 " ms", age_us / 1000);
    pg.up = !why[0];
    return pg.up;
}

void sc_dbwatch_counts(sc_dbwatch_stats *st)
{
    st->up = pg.up;
    st->failures = pg.failures;
    st->seconds = (double)pg.took_us / 1e6;
}
