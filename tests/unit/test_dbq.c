/* Unit tests for worker/dbq.c without a Postgres: the queue bound, jobs
 * failed without running while there is no connection (with the connect
 * timeout and the backoff), cancelled jobs (done skipped, release run),
 * completion order and shutdown with jobs queued. The executor is compiled
 * into the test (the Makefile links unit tests with lib/ only). */
#include <poll.h>

#include "../../worker/dbq.c"
#include "fake_pg.h"
#include "test.h"

static int ran, done_ok, done_err, released;
static char last_err[WH_ERRLEN];
static int order[16], norder;

static int run_fn(wh_db *db, void *arg, char *err, size_t errlen)
{
    (void)db;
    (void)arg;
    (void)err;
    (void)errlen;
    __atomic_add_fetch(&ran, 1, __ATOMIC_SEQ_CST);
    return WH_OK;
}

static void done_fn(void *arg, int rc, const char *err)
{
    if (rc == WH_OK)
        done_ok++;
    else
        done_err++;
    wh_strlcpy(last_err, err, sizeof(last_err));
    if (norder < 16)
        order[norder++] = (int)(intptr_t)arg;
}

static void release_fn(void *arg)
{
    (void)arg;
    released++;
}

static void reset(void)
{
    ran = done_ok = done_err = released = norder = 0;
    last_err[0] = '\0';
}

/* Polls q until n jobs were released in total or 5 s passed. */
static void wait_polled(wk_dbq *q, int n)
{
    int64_t until = wh_mono_us() + 5000 * 1000;
    while (released < n && wh_mono_us() < until) {
        struct pollfd p = {.fd = wk_dbq_fd(q), .events = POLLIN};
        if (poll(&p, 1, 50) > 0)
            WH_IGNORE(wk_dbq_poll(q) > 0);
    }
}

static wk_dbq_job job_of(int i)
{
    wk_dbq_job j = {.name = "test", .run = run_fn, .done = done_fn,
                    .release = release_fn, .arg = (void *)(intptr_t)i};
    return j;
}

static void test_bound_and_no_connection(void)
{
    int port = 0, lfd = silent_listener(&port);
    CHECK(lfd >= 0);
    char url[128], err[256];
    snprintf(url, sizeof(url),
             "postgresql://postgres@127.0.0.1:%d/x?sslmode=disable", port);
    wh_db_opts saved = *wh_db_defaults(), o = saved;
    o.connect_timeout_ms = 300;
    wh_db_set_defaults(&o);
    reset();
    wk_dbq_conf conf = {.url = url, .queue_max = 3, .backoff_min_ms = 10000,
                        .backoff_max_ms = 20000};
    wk_dbq *q;
    CHECK_INT(wk_dbq_new(&conf, &q, err, sizeof(err)), WH_OK);
    wk_dbq_id ids[4];
    for (int i = 0; i < 3; i++) {
        wk_dbq_job j = job_of(i);
        CHECK_INT(wk_dbq_submit(q, &j, &ids[i]), WH_OK);
    }
    /* the bound: queue_max accepted and not yet polled */
    wk_dbq_job extra = job_of(3);
    CHECK_INT(wk_dbq_submit(q, &extra, &ids[3]), WH_AGAIN);
    CHECK_INT(wk_dbq_pending(q), 3);
    wk_dbq_cancel(q, ids[1]);
    wait_polled(q, 3);
    /* the first waited for the connect timeout, the others failed at once
     * during the backoff; none ran; the cancelled one told nobody */
    CHECK_INT(ran, 0);
    CHECK_INT(done_err, 2);
    CHECK_INT(released, 3);
    CHECK_INT(norder, 2);
    CHECK_INT(order[0], 0);
    CHECK_INT(order[1], 2);
    CHECK(strstr(last_err, "no Postgres connection") != NULL);
    CHECK_INT(wk_dbq_pending(q), 0);
    wk_dbq_stats st;
    wk_dbq_counts(q, &st);
    CHECK_INT(st.skipped, 3);
    CHECK_INT(st.connects_failed, 1);
    CHECK_INT(st.run, 0);
    /* room again once polled */
    CHECK_INT(wk_dbq_submit(q, &extra, NULL), WH_OK);
    wait_polled(q, 4);
    CHECK_INT(done_err, 3);
    wk_dbq_destroy(q, 100);
    wh_db_set_defaults(&saved);
    close(lfd);
}

static void test_destroy_with_jobs_queued(void)
{
    int port = 0, lfd = silent_listener(&port);
    CHECK(lfd >= 0);
    char url[128], err[256];
    snprintf(url, sizeof(url),
             "postgresql://postgres@127.0.0.1:%d/x?sslmode=disable", port);
    wh_db_opts saved = *wh_db_defaults(), o = saved;
    o.connect_timeout_ms = 500;
    wh_db_set_defaults(&o);
    reset();
    wk_dbq_conf conf = {.url = url, .queue_max = 10, .backoff_min_ms = 100,
                        .backoff_max_ms = 100};
    wk_dbq *q;
    CHECK_INT(wk_dbq_new(&conf, &q, err, sizeof(err)), WH_OK);
    for (int i = 0; i < 5; i++) {
        wk_dbq_job j = job_of(i);
        CHECK_INT(wk_dbq_submit(q, &j, NULL), WH_OK);
    }
    /* the first job is connecting; destroy waits for that attempt (its
     * connect timeout), runs no done and releases every job */
    int64_t t0 = wh_mono_us();
    wk_dbq_destroy(q, 50);
    int64_t took_ms = (wh_mono_us() - t0) / 1000;
    CHECK(took_ms < 1500);
    CHECK_INT(done_ok + done_err, 0);
    CHECK_INT(released, 5);
    CHECK_INT(ran, 0);
    wh_db_set_defaults(&saved);
    close(lfd);
}

static void test_bad_conf(void)
{
    char err[256];
    wk_dbq *q = (wk_dbq *)1;
    wk_dbq_conf conf = {.url = "x", .queue_max = 0, .backoff_min_ms = 1,
                        .backoff_max_ms = 1};
    CHECK_INT(wk_dbq_new(&conf, &q, err, sizeof(err)), WH_ERR);
    CHECK(q == NULL);
    conf.queue_max = WK_DBQ_QUEUE_MAX + 1;
    CHECK_INT(wk_dbq_new(&conf, &q, err, sizeof(err)), WH_ERR);
    conf.queue_max = WK_DBQ_QUEUE_MAX;
    CHECK_INT(wk_dbq_new(&conf, &q, err, sizeof(err)), WH_OK);
    wk_dbq_destroy(q, 0);
}

static int select_run(wh_db *db, void *arg, char *err, size_t errlen)
{
    (void)arg;
    __atomic_add_fetch(&ran, 1, __ATOMIC_SEQ_CST);
    return wh_db_exec(db, "SELECT 1", err, errlen);
}

/* A job runs on the executor's connection and its done runs here; then a
 * job waits on a server that no longer answers (no statement timeout), and
 * destroy interrupts it after its grace. */
static void test_run_and_interrupt(void)
{
    fake_pg f;
    pthread_t th;
    /* answers the executor's SET and one SELECT, then freezes */
    int port = 0;
    f.lfd = silent_listener(&port);
    f.answers = 2;
    CHECK(f.lfd >= 0);
    CHECK_INT(pthread_create(&th, NULL, fake_pg_main, &f), 0);
    char url[160], err[256];
    snprintf(url, sizeof(url),
             "postgresql://postgres@127.0.0.1:%d/x?sslmode=disable"
             "&gssencmode=disable", port);
    wh_db_opts saved = *wh_db_defaults(), o = saved;
    o.statement_timeout_ms = 0; /* only the interrupt ends a hung call */
    wh_db_set_defaults(&o);
    reset();
    wk_dbq_conf conf = {.url = url, .queue_max = 4, .backoff_min_ms = 100,
                        .backoff_max_ms = 100};
    wk_dbq *q;
    CHECK_INT(wk_dbq_new(&conf, &q, err, sizeof(err)), WH_OK);
    wk_dbq_job j = job_of(7);
    j.run = select_run;
    CHECK_INT(wk_dbq_submit(q, &j, NULL), WH_OK);
    wait_polled(q, 1);
    CHECK_INT(done_ok, 1);
    CHECK_INT(order[0], 7);
    /* the next one hangs */
    CHECK_INT(wk_dbq_submit(q, &j, NULL), WH_OK);
    usleep(300 * 1000);
    CHECK_INT(ran, 2);
    CHECK_INT(wk_dbq_pending(q), 1);
    int64_t t0 = wh_mono_us();
    wk_dbq_destroy(q, 200);
    int64_t took_ms = (wh_mono_us() - t0) / 1000;
    CHECK(took_ms >= 150 && took_ms < 1000);
    CHECK_INT(done_ok + done_err, 1); /* no done at shutdown */
    CHECK_INT(released, 2);
    wh_db_set_defaults(&saved);
    pthread_join(th, NULL);
    close(f.lfd);
}

TEST_MAIN(test_bound_and_no_connection, test_destroy_with_jobs_queued,
          test_bad_conf, test_run_and_interrupt)
