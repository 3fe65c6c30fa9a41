/*
 * test_dbwatch.c - the scheduler's verdict on whether Postgres answers
 * (scheduler/dbwatch.c): answered, failed and slow round trips, the age
 * of the last answer, and the probe against a fake server that answers a
 * SELECT 1 and then freezes.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fake_pg.h"
#include "scheduler.h"
#include "test.h"

static bool up(wh_db *db, char *why, size_t cap)
{
    return sc_dbwatch_up(db, why, cap);
}

/* The verdicts, on a connection that stays up: what was last reported
 * decides, a slow answer or an old one counts as no answer. */
static void test_verdicts(void)
{
    fake_pg f;
    pthread_t th;
    char why[256];
    sc_dbwatch_stats st;
    wh_db *db = connect_fake(&f, &th, 1, 0);
    CHECK(db != NULL);
    if (!db)
        return;
    sc_dbwatch_conf c = {.probe_interval_ms = 100, .probe_timeout_ms = 200};
    sc_dbwatch_init(&c);
    CHECK(!up(db, why, sizeof(why)));
    CHECK_STR(why, "database: no claim has been answered yet");
    CHECK(!up(NULL, why, sizeof(why)));

    sc_dbwatch_answered(3000);
    CHECK(up(db, why, sizeof(why)));
    CHECK_STR(why, "");
    sc_dbwatch_counts(&st);
    CHECK(st.up);
    CHECK(st.seconds > 0.0029 && st.seconds < 0.0031);
    CHECK(sc_dbwatch_due_us() > wh_mono_us());
    CHECK(!up(NULL, why, sizeof(why)));
    CHECK_STR(why, "no database connection");

    sc_dbwatch_answered(250 * 1000); /* later than the probe timeout */
    CHECK(!up(db, why, sizeof(why)));
    CHECK_STR(why, "database: Postgres took 250 ms to answer");
    sc_dbwatch_counts(&st);
    CHECK(!st.up);

    sc_dbwatch_failed("claiming due retries: Postgres did not answer");
    CHECK(!up(db, why, sizeof(why)));
    CHECK_STR(why, "database: claiming due retries: Postgres did not answer");
    sc_dbwatch_counts(&st);
    CHECK_INT(st.failures, 1);

    /* an answer in time clears it; then it ages past interval + timeout */
    int64_t t0 = wh_mono_us();
    sc_dbwatch_answered(1000);
    CHECK(up(db, why, sizeof(why)));
    while (up(db, why, sizeof(why)) && wh_mono_us() - t0 < 2000 * 1000)
        usleep(10 * 1000);
    CHECK((wh_mono_us() - t0) / 1000 >= 300);
    CHECK(strncmp(why, "database: Postgres has not answered for ", 40) == 0);
    wh_db_close(db);
    pthread_join(th, NULL);
    close(f.lfd);
}

/* The probe: not sent before it is due; answered, it makes Postgres up;
 * on a server that stopped answering it fails at the connection's
 * deadline (statement timeout plus half of it) and says so. */
static void test_probe(void)
{
    fake_pg f;
    pthread_t th;
    char why[256];
    sc_dbwatch_stats st, before;
    /* answers the SET of the statement timeout and one SELECT 1 */
    wh_db *db = connect_fake(&f, &th, 2, 400);
    CHECK(db != NULL);
    if (!db)
        return;
    sc_dbwatch_conf c = {.probe_interval_ms = 100000,
                         .probe_timeout_ms = 5000};
    sc_dbwatch_init(&c);
    sc_dbwatch_answered(1000);
    sc_dbwatch_counts(&before);
    int64_t t0 = wh_mono_us();
    sc_dbwatch_probe(db); /* not due: sends nothing */
    CHECK((wh_mono_us() - t0) / 1000 < 100);

    c.probe_interval_ms = 0; /* due at once from here on */
    sc_dbwatch_init(&c);
    sc_dbwatch_failed("connection lost");
    CHECK(!up(db, why, sizeof(why)));
    sc_dbwatch_probe(db);
    CHECK(up(db, why, sizeof(why)));
    sc_dbwatch_counts(&st);
    CHECK(st.seconds < 0.4);

    t0 = wh_mono_us();
    sc_dbwatch_probe(db); /* the server is frozen now */
    int64_t took_ms = (wh_mono_us() - t0) / 1000;
    CHECK(took_ms >= 550 && took_ms < 1500);
    CHECK(!up(db, why, sizeof(why)));
    CHECK(strncmp(why, "database: the probe failed: ", 28) == 0);
    CHECK(strstr(why, "did not answer in time") != NULL);
    sc_dbwatch_counts(&st);
    CHECK_INT(st.failures, before.failures + 2);
    CHECK(!st.up);
    /* the connection was given up: no probe on it */
    CHECK(!wh_db_alive(db));
    t0 = wh_mono_us();
    sc_dbwatch_probe(db);
    CHECK((wh_mono_us() - t0) / 1000 < 100);
    sc_dbwatch_counts(&st);
    CHECK_INT(st.failures, before.failures + 2);
    wh_db_close(db);
    pthread_join(th, NULL);
    close(f.lfd);
}

TEST_MAIN(test_verdicts, test_probe)
