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

/* A listener that accepts connections (the kernel does, from its
 * backlog) and never says a word, like a frozen postmaster. */
static int silent_listener(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        listen(fd, 16) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        return -1;
    *port = ntohs(a.sin_port);
    return fd;
}

static void test_connect_timeout(void)
{
    int port, lfd = silent_listener(&port);
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
    int port, lfd = silent_listener(&port);
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

/* A fake server: one connection; it answers the start-up and the first
 * `answers` simple queries (CommandComplete "SET", ReadyForQuery), then
 * reads and never answers again. */
typedef struct {
    int lfd;
    int answers;
} fake_pg;

static int read_full(int fd, void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return 0;
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
           (uint32_t)p[2] << 8 | p[3];
}

static void *fake_pg_main(void *o)
{
    fake_pg *f = o;
    int fd = accept(f->lfd, NULL, NULL);
    unsigned char hdr[5], body[4096];
    if (fd < 0)
        return NULL;
    /* StartupMessage: length, then protocol and parameters */
    if (read_full(fd, hdr, 4) != 0 || be32(hdr) < 8 ||
        be32(hdr) - 4 > sizeof(body) || read_full(fd, body, be32(hdr) - 4))
        goto out;
    static const unsigned char ready[] = {
        'R', 0, 0, 0, 8, 0, 0, 0, 0, /* AuthenticationOk */
        'Z', 0, 0, 0, 5, 'I'};       /* ReadyForQuery */
    if (write(fd, ready, sizeof(ready)) != (ssize_t)sizeof(ready))
        goto out;
    for (;;) {
        if (read_full(fd, hdr, 5) != 0 || be32(hdr + 1) < 4 ||
            be32(hdr + 1) - 4 > sizeof(body) ||
            read_full(fd, body, be32(hdr + 1) - 4) != 0)
            break;
        if (hdr[0] == 'X')
            break;
        if (f->answers-- <= 0)
            continue; /* frozen from here on */
        static const unsigned char done[] = {
            'C', 0, 0, 0, 8, 'S', 'E', 'T', 0, /* CommandComplete */
            'Z', 0, 0, 0, 5, 'I'};
        if (write(fd, done, sizeof(done)) != (ssize_t)sizeof(done))
            break;
    }
out:
    close(fd);
    return NULL;
}

/* Connects to a fake server that answers `answers` queries (the SET of
 * the statement timeout is the first); *th runs it. */
static wh_db *connect_fake(fake_pg *f, pthread_t *th, int answers,
                           int64_t statement_timeout_ms)
{
    int port;
    f->lfd = silent_listener(&port);
    f->answers = answers;
    if (f->lfd < 0 || pthread_create(th, NULL, fake_pg_main, f) != 0)
        return NULL;
    char url[160], err[512];
    snprintf(url, sizeof(url),
             "postgresql://postgres@127.0.0.1:%d/x?sslmode=disable"
             "&gssencmode=disable", port);
    wh_db_opts saved = *wh_db_defaults(), o = saved;
    o.statement_timeout_ms = statement_timeout_ms;
    wh_db_set_defaults(&o);
    wh_db *db = NULL;
    if (wh_db_connect(url, &db, err, sizeof(err)) != WH_OK)
        fprintf(stderr, "fake connect: %s\n", err);
    wh_db_set_defaults(&saved);
    return db;
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
