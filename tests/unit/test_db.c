/* Unit tests for lib/db.c without a Postgres: the connection parameters
 * built from wh_db_opts (keywords, units, bounds, the URL last so it
 * wins), and the client-side bounds: the connect timeout against a
 * loopback listener that accepts and never answers, the answer deadline
 * and wh_db_interrupt against a fake server that speaks just enough of the
 * protocol to connect and then stops answering, like a frozen backend. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "db.h"
#include "fake_pg.h"
#include "test.h"

static const char *param(const wh_db_params *p, const char *key)
{
    const char *v = NULL;
    for (int i = 0; p->keys[i]; i++)
        if (strcmp(p->keys[i], key) == 0)
            v = p->values[i];
    return v;
}

static void test_params_defaults(void)
{
    wh_db_params p;
    char err[256];
    const wh_db_opts *o = wh_db_defaults();
    CHECK_INT(o->statement_timeout_ms, 30000);
    CHECK_INT(wh_db_params_build("postgresql://u@h/db", o, &p, err,
                                 sizeof(err)), WH_OK);
    CHECK_STR(param(&p, "keepalives"), "1");
    CHECK_STR(param(&p, "keepalives_idle"), "10");
    CHECK_STR(param(&p, "keepalives_interval"), "5");
    CHECK_STR(param(&p, "keepalives_count"), "3");
    CHECK_STR(param(&p, "tcp_user_timeout"), "30000");
    CHECK_STR(param(&p, "connect_timeout"), "5");
    /* the URL comes last, expanded, so what it says itself wins */
    CHECK(p.n >= 1);
    CHECK_STR(p.keys[p.n - 1], "dbname");
    CHECK_STR(p.values[p.n - 1], "postgresql://u@h/db");
    CHECK(p.keys[p.n] == NULL && p.values[p.n] == NULL);
    CHECK(p.n <= WH_DB_PARAMS_MAX);
}

static void test_params_units_and_off(void)
{
    wh_db_params p;
    char err[256];
    /* libpq counts seconds: milliseconds round up, connect_timeout is at
     * least 2 (libpq's own minimum) */
    wh_db_opts o = {.connect_timeout_ms = 1,
                    .keepalives_idle_ms = 1,
                    .keepalives_interval_ms = 1001,
                    .keepalives_count = 1000,
                    .tcp_user_timeout_ms = 1};
    CHECK_INT(wh_db_params_build("x", &o, &p, err, sizeof(err)), WH_OK);
    CHECK_STR(param(&p, "connect_timeout"), "2");
    CHECK_STR(param(&p, "keepalives_idle"), "1");
    CHECK_STR(param(&p, "keepalives_interval"), "2");
    CHECK_STR(param(&p, "keepalives_count"), "1000");
    CHECK_STR(param(&p, "tcp_user_timeout"), "1");
    /* zero turns each bound off */
    wh_db_opts off = {0};
    CHECK_INT(wh_db_params_build("x", &off, &p, err, sizeof(err)), WH_OK);
    CHECK_STR(param(&p, "keepalives"), "0");
    CHECK(param(&p, "keepalives_idle") == NULL);
    CHECK(param(&p, "tcp_user_timeout") == NULL);
    CHECK(param(&p, "connect_timeout") == NULL);
    CHECK_INT(p.n, 2);
}

static void test_params_bounds(void)
{
    wh_db_params p;
    char err[256];
    wh_db_opts o = *wh_db_defaults();
    o.keepalives_count = 1001;
    CHECK_INT(wh_db_params_build("x", &o, &p, err, sizeof(err)), WH_ERR);
    CHECK(strstr(err, "out of range") != NULL);
    o = *wh_db_defaults();
    o.tcp_user_timeout_ms = (int64_t)INT32_MAX + 1;
    CHECK_INT(wh_db_params_build("x", &o, &p, err, sizeof(err)), WH_ERR);
    o.tcp_user_timeout_ms = INT32_MAX;
    CHECK_INT(wh_db_params_build("x", &o, &p, err, sizeof(err)), WH_OK);
    o = *wh_db_defaults();
    o.statement_timeout_ms = -1;
    CHECK_INT(wh_db_params_build("x", &o, &p, err, sizeof(err)), WH_ERR);
}

static void test_connect_timeout(void)
{
    int port = 0, lfd = silent_listener(&port);
    CHECK(lfd >= 0);
    char url[128], err[512];
    snprintf(url, sizeof(url),
             "postgresql://postgres@127.0.0.1:%d/x?sslmode=disable", port);
    wh_db_opts saved = *wh_db_defaults(), o = saved;
    o.connect_timeout_ms = 300;
    wh_db_set_defaults(&o);
    wh_db *db = (wh_db *)1;
    int64_t t0 = wh_mono_us();
    CHECK_INT(wh_db_connect(url, &db, err, sizeof(err)), WH_ERR);
    int64_t took_ms = (wh_mono_us() - t0) / 1000;
    CHECK(db == NULL);
    CHECK(took_ms >= 250 && took_ms < 2000);
    CHECK(strstr(err, "did not answer in time") != NULL);
    wh_db_set_defaults(&saved);
    close(lfd);
}

typedef struct {
    const char *url;
    int rc;
    char err[512];
    int64_t took_ms;
} connect_arg;

static void *connect_thread(void *o)
{
    connect_arg *a = o;
    wh_db *db;
    int64_t t0 = wh_mono_us();
    a->rc = wh_db_connect(a->url, &db, a->err, sizeof(a->err));
    a->took_ms = (wh_mono_us() - t0) / 1000;
    if (a->rc == WH_OK)
        wh_db_close(db);
    return NULL;
}

/* A longer connect timeout holds the attempt that long, no less (the
 * URL's own connect_timeout=0 does not lift the adapter's deadline). */
static void test_no_timeout_waits(void)
{
    int port = 0, lfd = silent_listener(&port);
    CHECK(lfd >= 0);
    char url[128];
    snprintf(url, sizeof(url),
             "postgresql://postgres@127.0.0.1:%d/x?sslmode=disable"
             "&connect_timeout=0", port);
    wh_db_opts saved = *wh_db_defaults(), o = saved;
    o.connect_timeout_ms = 1200;
    wh_db_set_defaults(&o);
    connect_arg a = {.url = url};
    pthread_t th;
    CHECK_INT(pthread_create(&th, NULL, connect_thread, &a), 0);
    usleep(500 * 1000);
    /* still waiting: nothing but the deadline ends it */
    CHECK_INT(pthread_tryjoin_np(th, NULL), EBUSY);
    pthread_join(th, NULL);
    CHECK_INT(a.rc, WH_ERR);
    CHECK(a.took_ms >= 1100 && a.took_ms < 3000);
    wh_db_set_defaults(&saved);
    close(lfd);
}

/* The answer deadline: statement timeout plus half of it (under 4 s). */
static void test_answer_deadline(void)
{
    fake_pg f;
    pthread_t th;
    wh_db *db = connect_fake(&f, &th, 1, 400);
    CHECK(db != NULL);
    if (!db)
        return;
    CHECK(wh_db_alive(db));
    CHECK_INT(wh_db_answer_grace_ms(400), 200);
    CHECK_INT(wh_db_answer_grace_ms(30000), WH_DB_ANSWER_GRACE_MS);
    char err[512];
    int64_t t0 = wh_mono_us();
    CHECK_INT(wh_db_exec(db, "SELECT 1", err, sizeof(err)), WH_ERR);
    int64_t took_ms = (wh_mono_us() - t0) / 1000;
    CHECK(took_ms >= 550 && took_ms < 1500);
    CHECK(strstr(err, "did not answer in time") != NULL);
    /* the connection is given up, later calls fail at once */
    CHECK(!wh_db_alive(db));
    t0 = wh_mono_us();
    CHECK_INT(wh_db_exec(db, "SELECT 1", err, sizeof(err)), WH_ERR);
    CHECK(strstr(err, "not connected") != NULL);
    CHECK((wh_mono_us() - t0) / 1000 < 100);
    wh_db_close(db);
    pthread_join(th, NULL);
    close(f.lfd);
}

typedef struct {
    wh_db *db;
    int rc;
    char err[512];
} exec_arg;

static void *exec_thread(void *o)
{
    exec_arg *a = o;
    a->rc = wh_db_exec(a->db, "SELECT 1", a->err, sizeof(a->err));
    return NULL;
}

/* No statement timeout: only wh_db_interrupt (from another thread) ends
 * a call the server never answers. */
static void test_interrupt(void)
{
    fake_pg f;
    pthread_t th, ex;
    wh_db *db = connect_fake(&f, &th, 1, 0);
    CHECK(db != NULL);
    if (!db)
        return;
    exec_arg a = {.db = db};
    CHECK_INT(pthread_create(&ex, NULL, exec_thread, &a), 0);
    usleep(300 * 1000);
    CHECK_INT(pthread_tryjoin_np(ex, NULL), EBUSY); /* still waiting */
    int64_t t0 = wh_mono_us();
    wh_db_interrupt(db);
    pthread_join(ex, NULL);
    CHECK((wh_mono_us() - t0) / 1000 < 500);
    CHECK_INT(a.rc, WH_ERR);
    CHECK(strstr(a.err, "interrupted") != NULL);
    CHECK(!wh_db_alive(db));
    wh_db_close(db);
    pthread_join(th, NULL);
    close(f.lfd);
}

TEST_MAIN(test_params_defaults, test_params_units_and_off, test_params_bounds,
          test_connect_timeout, test_no_timeout_waits, test_answer_deadline,
          test_interrupt)
