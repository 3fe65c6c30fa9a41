/*
 * db.c - PostgreSQL adapter over libpq (see db.h). Blocking calls, used by
 * the worker's recorder and query executor, webhookctl and the scheduler;
 * each wh_db belongs to one thread. Underneath, every call drives libpq's
 * non-blocking API and waits in poll() with a deadline, so a server that
 * stops answering turns into an error in bounded time (see wh_db_opts).
 */
#include "db.h"

#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "migrate.h"

#define MAX_CHANNELS 4

/* Bounds of every connection opened from now on (wh_db_set_defaults). */
static wh_db_opts defaults = {
    .connect_timeout_ms = 5000,
    .statement_timeout_ms = 30000,
    .tcp_user_timeout_ms = 30000,
    .keepalives_idle_ms = 10000,
    .keepalives_interval_ms = 5000,
    .keepalives_count = 3,
};

struct wh_db {
    PGconn *conn;
    char *url;
    wh_db_opts opts;
    int wake_fd;           /* eventfd: readable once wh_db_interrupt ran */
    char channels[MAX_CHANNELS][64];
    int nchannels;
    char sqlstate[6];      /* of the last result: "" when it succeeded */
};

struct wh_db_result {
    PGresult *res;
};

static void conn_error(const wh_db *db, const char *what, char *err,
                       size_t errlen)
{
    const char *msg = db->conn ? PQerrorMessage(db->conn) : "no connection";
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        n--;
    wh_errf(err, errlen, "%s: %.*s", what, (int)n, msg);
}

static void notice_ignore(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}

void wh_db_set_defaults(const wh_db_opts *o) { defaults = *o; }

int64_t wh_db_answer_grace_ms(int64_t statement_timeout_ms)
{
    int64_t half = statement_timeout_ms / 2;
    return half < WH_DB_ANSWER_GRACE_MS ? half : WH_DB_ANSWER_GRACE_MS;
}

const wh_db_opts *wh_db_defaults(void) { return &defaults; }

/* Milliseconds as whole seconds, rounded up (libpq's unit). */
static int64_t ceil_s(int64_t ms) { return (ms + 999) / 1000; }

static int put_param(wh_db_params *p, const char *key, int64_t value)
{
    if (p->n >= WH_DB_PARAMS_MAX)
        return WH_ERR;
    snprintf(p->text[p->n], sizeof(p->text[0]), "%" PRId64, value);
    p->keys[p->n] = key;
    p->values[p->n] = p->text[p->n];
    p->n++;
    return WH_OK;
}

int wh_db_params_build(const char *url, const wh_db_opts *o, wh_db_params *p,
                       char *err, size_t errlen)
{
    memset(p, 0, sizeof(*p));
    if (o->connect_timeout_ms < 0 || o->statement_timeout_ms < 0 ||
        o->tcp_user_timeout_ms < 0 || o->tcp_user_timeout_ms > INT32_MAX ||
        o->keepalives_idle_ms < 0 || o->keepalives_interval_ms < 0 ||
        o->keepalives_count < 0 || o->keepalives_count > 1000 ||
        o->keepalives_idle_ms > INT32_MAX ||
        o->keepalives_interval_ms > INT32_MAX)
        return wh_errf(err, errlen, "database connection bounds out of range");
    int rc = WH_OK;
    if (o->keepalives_idle_ms == 0) {
        rc |= put_param(p, "keepalives", 0);
    } else {
        rc |= put_param(p, "keepalives", 1);
        rc |= put_param(p, "keepalives_idle", ceil_s(o->keepalives_idle_ms));
        if (o->keepalives_interval_ms > 0)
            rc |= put_param(p, "keepalives_interval",
                            ceil_s(o->keepalives_interval_ms));
        if (o->keepalives_count > 0)
            rc |= put_param(p, "keepalives_count", o->keepalives_count);
    }
    if (o->tcp_user_timeout_ms > 0)
        rc |= put_param(p, "tcp_user_timeout", o->tcp_user_timeout_ms);
    /* libpq's own (it counts whole seconds, at least 2); the adapter also
     * holds the connection attempt to connect_timeout_ms itself */
    if (o->connect_timeout_ms > 0)
        rc |= put_param(p, "connect_timeout",
                        ceil_s(o->connect_timeout_ms) < 2
                            ? 2 : ceil_s(o->connect_timeout_ms));
    if (rc != WH_OK || p->n >= WH_DB_PARAMS_MAX)
        return wh_errf(err, errlen, "too many connection parameters");
    /* last, so that what the URL says itself wins over the defaults */
    p->keys[p->n] = "dbname";
    p->values[p->n] = url;
    p->n++;
    p->keys[p->n] = NULL;
    p->values[p->n] = NULL;
    return WH_OK;
}

/* The deadline of a call that waits for the server (0: none). */
static int64_t answer_deadline(const wh_db *db)
{
    int64_t t = db->opts.statement_timeout_ms;
    if (t <= 0)
        return 0;
    return wh_mono_us() + (t + wh_db_answer_grace_ms(t)) * 1000;
}

/* Gives up the connection after a timeout or an interrupt: the server may
 * still be in the middle of the command, so it cannot be used again. */
static void give_up(wh_db *db)
{
    if (db->conn)
        PQfinish(db->conn);
    db->conn = NULL;
}

/* Waits until the connection's socket is readable (or writable when
 * write). WH_ERR when the deadline passed (deadline_us 0: none) or the
 * connection was interrupted; the connection is then given up. */
static int wait_io(wh_db *db, bool for_write, int64_t deadline_us,
                   const char *what, char *err, size_t errlen)
{
    struct pollfd p[2] = {
        {.fd = PQsocket(db->conn), .events = for_write ? POLLOUT : POLLIN},
        {.fd = db->wake_fd, .events = POLLIN},
    };
    if (p[0].fd < 0) {
        conn_error(db, what, err, errlen);
        return WH_ERR;
    }
    if (for_write)
        p[0].events |= POLLIN; /* the server may answer while we send */
    for (;;) {
        int ms = -1;
        if (deadline_us) {
            int64_t left = deadline_us - wh_mono_us();
            if (left <= 0) {
                give_up(db);
                return wh_errf(err, errlen, "%s: Postgres did not answer "
                               "in time (connection given up)", what);
            }
            ms = (int)((left + 999) / 1000);
        }
        int n = poll(p, 2, ms);
        if (n < 0 && errno != EINTR) {
            wh_errf(err, errlen, "%s: poll(): %s", what, strerror(errno));
            give_up(db);
            return WH_ERR;
        }
        if (n > 0 && p[1].revents) {
            give_up(db);
            return wh_errf(err, errlen, "%s: interrupted", what);
        }
        if (n > 0 && p[0].revents)
            return WH_OK;
    }
}

static int open_conn(wh_db *db, char *err, size_t errlen)
{
    const char *what = "cannot connect to Postgres";
    wh_db_params p;
    if (wh_db_params_build(db->url, &db->opts, &p, err, errlen) != WH_OK)
        return WH_ERR;
    db->conn = PQconnectStartParams(p.keys, p.values, 1);
    if (!db->conn)
        return wh_errf(err, errlen, "%s: out of memory", what);
    int64_t deadline = db->opts.connect_timeout_ms > 0
                           ? wh_mono_us() + db->opts.connect_timeout_ms * 1000
                           : 0;
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    if (PQstatus(db->conn) == CONNECTION_BAD)
        st = PGRES_POLLING_FAILED;
    while (st != PGRES_POLLING_OK) {
        if (st == PGRES_POLLING_FAILED) {
            conn_error(db, what, err, errlen);
            give_up(db);
            return WH_ERR;
        }
        if (wait_io(db, st == PGRES_POLLING_WRITING, deadline, what, err,
                    errlen) != WH_OK) {
            give_up(db); /* a half-open connection is of no use */
            return WH_ERR;
        }
        st = PQconnectPoll(db->conn);
    }
    if (PQsetnonblocking(db->conn, 1) != 0) {
        conn_error(db, what, err, errlen);
        give_up(db);
        return WH_ERR;
    }
    PQsetNoticeProcessor(db->conn, notice_ignore, NULL);
    char sql[64];
    snprintf(sql, sizeof(sql), "SET statement_timeout = %" PRId64,
             db->opts.statement_timeout_ms);
    return wh_db_exec(db, sql, err, errlen);
}

int wh_db_connect(const char *url, wh_db **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!url || !*url)
        return wh_errf(err, errlen,
                       "no database configured (set DATABASE_URL)");
    wh_db *db = calloc(1, sizeof(*db));
    if (!db || !(db->url = strdup(url))) {
        free(db);
        return wh_errf(err, errlen, "out of memory");
    }
    db->opts = defaults;
    db->wake_fd = -1;
    db->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (db->wake_fd < 0) {
        wh_errf(err, errlen, "eventfd(): %s", strerror(errno));
        goto fail;
    }
    if (open_conn(db, err, errlen) != WH_OK)
        goto fail;
    *out = db;
    return WH_OK;
fail:
    wh_db_close(db);
    return WH_ERR;
}

void wh_db_interrupt(wh_db *db)
{
    uint64_t one = 1;
    if (db && write(db->wake_fd, &one, sizeof(one)) < 0) {
        /* the counter is already set: it stays readable */
    }
}

int wh_db_set_timeout(wh_db *db, int64_t statement_timeout_ms, char *err,
                      size_t errlen)
{
    db->opts.statement_timeout_ms = statement_timeout_ms;
    if (!db->conn)
        return WH_OK; /* applied when it reconnects */
    char sql[64];
    snprintf(sql, sizeof(sql), "SET statement_timeout = %" PRId64,
             statement_timeout_ms);
    return wh_db_exec(db, sql, err, errlen);
}

void wh_db_close(wh_db *db)
{
    if (!db)
        return;
    if (db->conn)
        PQfinish(db->conn);
    if (db->wake_fd >= 0)
        close(db->wake_fd);
    free(db->url);
    free(db);
}

int wh_db_alive(wh_db *db)
{
    return db->conn && PQstatus(db->conn) == CONNECTION_OK;
}

void wh_db_drop(wh_db *db)
{
    if (db->conn)
        PQfinish(db->conn);
    db->conn = NULL;
}

int wh_db_reconnect(wh_db *db, char *err, size_t errlen)
{
    if (db->conn)
        PQfinish(db->conn);
    db->conn = NULL;
    if (open_conn(db, err, errlen) != WH_OK)
        return WH_ERR;
    int n = db->nchannels;
    db->nchannels = 0;
    for (int i = 0; i < n; i++) {
        char ch[64];
        memcpy(ch, db->channels[i], sizeof(ch));
        if (wh_db_listen(db, ch, err, errlen) != WH_OK)
            return WH_ERR;
    }
    return WH_OK;
}

static int result_ok(wh_db *db, PGresult *res, const char *what, char *err,
                     size_t errlen)
{
    ExecStatusType st = PQresultStatus(res);
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    wh_strlcpy(db->sqlstate, state ? state : "", sizeof(db->sqlstate));
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ||
        st == PGRES_COPY_IN)
        return WH_OK;
    const char *msg = PQresultErrorMessage(res);
    if (!msg || !*msg) {
        conn_error(db, what, err, errlen);
        return WH_ERR;
    }
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        n--;
    wh_errf(err, errlen, "%s: %.*s", what, (int)n, msg);
    return WH_ERR;
}

const char *wh_db_sqlstate(const wh_db *db) { return db->sqlstate; }

/* Sends what libpq has queued, reading meanwhile so the server never
 * waits on us. */
static int flush_out(wh_db *db, int64_t deadline, const char *what,
                     char *err, size_t errlen)
{
    int f;
    while ((f = PQflush(db->conn)) == 1) {
        if (wait_io(db, true, deadline, what, err, errlen) != WH_OK)
            return WH_ERR;
        if (PQconsumeInput(db->conn) != 1)
            break;
    }
    if (f != 0) {
        conn_error(db, what, err, errlen);
        return WH_ERR;
    }
    return WH_OK;
}

/* Waits for the results of the command just sent. *out is the result to
 * report: the first error, else the last result; with stop_at_copy, the
 * PGRES_COPY_IN result as soon as it arrives. WH_ERR (err set, *out NULL)
 * when the connection broke, timed out or was interrupted. */
static int collect(wh_db *db, bool stop_at_copy, const char *what,
                   PGresult **out, char *err, size_t errlen)
{
    int64_t deadline = answer_deadline(db);
    PGresult *keep = NULL;
    *out = NULL;
    if (flush_out(db, deadline, what, err, errlen) != WH_OK)
        return WH_ERR;
    for (;;) {
        while (PQisBusy(db->conn)) {
            if (wait_io(db, false, deadline, what, err, errlen) != WH_OK)
                goto lost;
            if (PQconsumeInput(db->conn) != 1) {
                conn_error(db, what, err, errlen);
                goto lost;
            }
        }
        PGresult *res = PQgetResult(db->conn);
        if (!res)
            break;
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT ||
            st == PGRES_COPY_BOTH) {
            /* libpq returns no more results until the COPY ends */
            PQclear(keep);
            keep = res;
            if (!stop_at_copy)
                conn_error(db, what, err, errlen);
            break;
        }
        bool kept_error = keep && PQresultStatus(keep) != PGRES_COMMAND_OK &&
                          PQresultStatus(keep) != PGRES_TUPLES_OK &&
                          PQresultStatus(keep) != PGRES_EMPTY_QUERY;
        if (kept_error) {
            PQclear(res);
        } else {
            PQclear(keep);
            keep = res;
        }
    }
    if (!keep) {
        conn_error(db, what, err, errlen);
        return WH_ERR;
    }
    *out = keep;
    return WH_OK;
lost:
    PQclear(keep);
    return WH_ERR;
}

int wh_db_exec(wh_db *db, const char *sql, char *err, size_t errlen)
{
    if (!db->conn)
        return wh_errf(err, errlen, "PQexec() failed: not connected");
    if (PQsendQuery(db->conn, sql) != 1) {
        conn_error(db, "PQsendQuery() failed", err, errlen);
        return WH_ERR;
    }
    PGresult *res;
    if (collect(db, false, "PQexec() failed", &res, err, errlen) != WH_OK)
        return WH_ERR;
    int rc = result_ok(db, res, "PQexec() failed", err, errlen);
    PQclear(res);
    return rc;
}

static int query(wh_db *db, const char *sql, int nparams,
                 const char *const *params, int format, wh_db_result **out,
                 char *err, size_t errlen)
{
    *out = NULL;
    if (!db->conn)
        return wh_errf(err, errlen, "PQexecParams() failed: not connected");
    if (PQsendQueryParams(db->conn, sql, nparams, NULL, params, NULL, NULL,
                          format) != 1) {
        conn_error(db, "PQsendQueryParams() failed", err, errlen);
        return WH_ERR;
    }
    PGresult *res;
    if (collect(db, false, "query failed", &res, err, errlen) != WH_OK)
        return WH_ERR;
    if (result_ok(db, res, "query failed", err, errlen) != WH_OK) {
        PQclear(res);
        return WH_ERR;
    }
    wh_db_result *r = malloc(sizeof(*r));
    if (!r) {
        PQclear(res);
        return wh_errf(err, errlen, "out of memory");
    }
    r->res = res;
    *out = r;
    return WH_OK;
}

int wh_db_query(wh_db *db, const char *sql, int nparams,
                const char *const *params, wh_db_result **out, char *err,
                size_t errlen)
{
    return query(db, sql, nparams, params, 0, out, err, errlen);
}

int wh_db_query_raw(wh_db *db, const char *sql, int nparams,
                    const char *const *params, wh_db_result **out, char *err,
                    size_t errlen)
{
    return query(db, sql, nparams, params, 1, out, err, errlen);
}

int wh_db_rows(const wh_db_result *r) { return PQntuples(r->res); }
int wh_db_cols(const wh_db_result *r) { return PQnfields(r->res); }

const char *wh_db_colname(const wh_db_result *r, int col)
{
    return PQfname(r->res, col);
}

const char *wh_db_get(const wh_db_result *r, int row, int col)
{
    return PQgetvalue(r->res, row, col);
}

size_t wh_db_getlen(const wh_db_result *r, int row, int col)
{
    return (size_t)PQgetlength(r->res, row, col);
}

int wh_db_isnull(const wh_db_result *r, int row, int col)
{
    return PQgetisnull(r->res, row, col);
}

long wh_db_affected(const wh_db_result *r)
{
    const char *s = PQcmdTuples(r->res);
    return s && *s ? atol(s) : 0;
}

void wh_db_result_free(wh_db_result *r)
{
    if (!r)
        return;
    PQclear(r->res);
    free(r);
}

int wh_db_copy_begin(wh_db *db, const char *copy_sql, char *err,
                     size_t errlen)
{
    if (!db->conn)
        return wh_errf(err, errlen, "COPY failed: not connected");
    if (PQsendQuery(db->conn, copy_sql) != 1) {
        conn_error(db, "COPY failed", err, errlen);
        return WH_ERR;
    }
    PGresult *res;
    if (collect(db, true, "COPY failed", &res, err, errlen) != WH_OK)
        return WH_ERR;
    int rc = WH_OK;
    if (PQresultStatus(res) != PGRES_COPY_IN) {
        if (result_ok(db, res, "COPY failed", err, errlen) == WH_OK)
            wh_errf(err, errlen, "COPY failed: server did not enter COPY");
        rc = WH_ERR;
    }
    PQclear(res);
    return rc;
}

int wh_db_copy_put(wh_db *db, const char *data, size_t len, char *err,
                   size_t errlen)
{
    if (len > INT32_MAX)
        return wh_errf(err, errlen, "COPY failed: chunk too large");
    if (!db->conn)
        return wh_errf(err, errlen, "COPY failed: not connected");
    int64_t deadline = answer_deadline(db);
    int rc;
    while ((rc = PQputCopyData(db->conn, data, (int)len)) == 0) {
        /* non-blocking: libpq's buffer is full until the server reads */
        if (wait_io(db, true, deadline, "PQputCopyData() failed", err,
                    errlen) != WH_OK ||
            flush_out(db, deadline, "PQputCopyData() failed", err,
                      errlen) != WH_OK)
            return WH_ERR;
    }
    if (rc != 1) {
        conn_error(db, "PQputCopyData() failed", err, errlen);
        return WH_ERR;
    }
    return WH_OK;
}

int wh_db_copy_end(wh_db *db, char *err, size_t errlen)
{
    if (!db->conn)
        return wh_errf(err, errlen, "COPY failed: not connected");
    int64_t deadline = answer_deadline(db);
    int put;
    while ((put = PQputCopyEnd(db->conn, NULL)) == 0) {
        if (wait_io(db, true, deadline, "PQputCopyEnd() failed", err,
                    errlen) != WH_OK ||
            flush_out(db, deadline, "PQputCopyEnd() failed", err,
                      errlen) != WH_OK)
            return WH_ERR;
    }
    if (put != 1) {
        conn_error(db, "PQputCopyEnd() failed", err, errlen);
        return WH_ERR;
    }
    PGresult *res;
    if (collect(db, false, "COPY failed", &res, err, errlen) != WH_OK)
        return WH_ERR;
    int rc = result_ok(db, res, "COPY failed", err, errlen);
    PQclear(res);
    return rc;
}

int wh_db_copy_escape(char *dst, size_t cap, size_t *pos, const char *src,
                      size_t len)
{
    size_t p = *pos;
    for (size_t i = 0; i < len; i++) {
        /* runs that need no escape, the common case, in one copy */
        size_t run = 0;
        while (i + run < len && src[i + run] != '\\' && src[i + run] != '\t' &&
               src[i + run] != '\n' && src[i + run] != '\r' &&
               src[i + run] != '\0')
            run++;
        if (run > 0) {
            if (p + run >= cap)
                return WH_ERR;
            memcpy(dst + p, src + i, run);
            p += run;
            i += run;
            if (i == len)
                break;
        }
        unsigned char c = (unsigned char)src[i];
        const char *esc = NULL;
        switch (c) {
        case '\\': esc = "\\\\"; break;
        case '\t': esc = "\\t"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\0': esc = ""; break; /* text columns cannot hold NUL */
        default: break;
        }
        if (esc) {
            size_t n = strlen(esc);
            if (p + n >= cap)
                return WH_ERR;
            memcpy(dst + p, esc, n);
            p += n;
        } else {
            if (p + 1 >= cap)
                return WH_ERR;
            dst[p++] = (char)c;
        }
    }
    *pos = p;
    return WH_OK;
}

int wh_db_listen(wh_db *db, const char *channel, char *err, size_t errlen)
{
    if (db->nchannels >= MAX_CHANNELS || strlen(channel) >= 64)
        return wh_errf(err, errlen, "LISTEN %s: too many channels", channel);
    char *quoted = PQescapeIdentifier(db->conn, channel, strlen(channel));
    if (!quoted) {
        conn_error(db, "PQescapeIdentifier() failed", err, errlen);
        return WH_ERR;
    }
    char sql[128];
    snprintf(sql, sizeof(sql), "LISTEN %s", quoted);
    PQfreemem(quoted);
    if (wh_db_exec(db, sql, err, errlen) != WH_OK)
        return WH_ERR;
    wh_strlcpy(db->channels[db->nchannels++], channel, 64);
    return WH_OK;
}

int wh_db_socket(wh_db *db)
{
    return db->conn ? PQsocket(db->conn) : -1;
}

int wh_db_notification(wh_db *db, char *payload, size_t cap, char *err,
                       size_t errlen)
{
    if (!db->conn)
        return wh_errf(err, errlen, "LISTEN connection lost");
    PGnotify *n = PQnotifies(db->conn);
    if (!n) {
        if (PQconsumeInput(db->conn) != 1 ||
            PQstatus(db->conn) != CONNECTION_OK) {
            conn_error(db, "LISTEN connection lost", err, errlen);
            return WH_ERR;
        }
        n = PQnotifies(db->conn);
    }
    if (!n)
        return WH_AGAIN;
    wh_strlcpy(payload, n->extra ? n->extra : "", cap);
    PQfreemem(n);
    return WH_OK;
}

static int migrate(wh_db *db, int *applied, char *err, size_t errlen)
{
    char e[512];
    *applied = 0;
    if (wh_db_exec(db,
                   "SELECT pg_advisory_lock(72616001);"
                   "CREATE SCHEMA IF NOT EXISTS webhooks;"
                   "CREATE TABLE IF NOT EXISTS webhooks.schema_migrations ("
                   " version integer PRIMARY KEY, name text NOT NULL,"
                   " applied_at timestamptz NOT NULL DEFAULT now())",
                   e, sizeof(e)) != WH_OK)
        goto fail;
    for (size_t i = 0; i < wh_migrations_count; i++) {
        const wh_migration *m = &wh_migrations[i];
        char version[16];
        snprintf(version, sizeof(version), "%d", m->version);
        const char *params[] = {version};
        wh_db_result *r;
        if (wh_db_query(db,
                        "SELECT 1 FROM webhooks.schema_migrations "
                        "WHERE version = $1",
                        1, params, &r, e, sizeof(e)) != WH_OK)
            goto fail;
        int done = wh_db_rows(r) > 0;
        wh_db_result_free(r);
        if (done)
            continue;
        if (wh_db_exec(db, "BEGIN", e, sizeof(e)) != WH_OK)
            goto fail;
        if (wh_db_exec(db, m->sql, e, sizeof(e)) != WH_OK) {
            char e2[WH_ERRLEN];
            WH_IGNORE(wh_db_exec(db, "ROLLBACK", e2, sizeof(e2)));
            wh_errf(err, errlen, "migration %s failed: %s", m->name, e);
            goto unlock;
        }
        const char *p2[] = {version, m->name};
        if (wh_db_query(db,
                        "INSERT INTO webhooks.schema_migrations"
                        " (version, name) VALUES ($1, $2)",
                        2, p2, &r, e, sizeof(e)) != WH_OK)
            goto fail;
        wh_db_result_free(r);
        if (wh_db_exec(db, "COMMIT", e, sizeof(e)) != WH_OK)
            goto fail;
        (*applied)++;
    }
    if (wh_db_exec(db, "SELECT pg_advisory_unlock(72616001)", e,
                   sizeof(e)) != WH_OK)
        goto fail;
    return WH_OK;
fail:
    wh_errf(err, errlen, "migrate: %s", e);
unlock:
    WH_IGNORE(wh_db_exec(db, "ROLLBACK; SELECT pg_advisory_unlock(72616001)",
                         e, sizeof(e)));
    return WH_ERR;
}

int wh_db_migrate(wh_db *db, int *applied, char *err, size_t errlen)
{
    *applied = 0;
    /* a migration may rewrite a large table: no statement timeout (the
     * connection's keepalives still notice a dead server) */
    int64_t timeout_ms = db->opts.statement_timeout_ms;
    if (wh_db_set_timeout(db, 0, err, errlen) != WH_OK)
        return WH_ERR;
    int rc = migrate(db, applied, err, errlen);
    char e2[WH_ERRLEN];
    if (wh_db_set_timeout(db, timeout_ms, e2, sizeof(e2)) != WH_OK &&
        rc == WH_OK)
        return wh_errf(err, errlen, "%s", e2);
    return rc;
}
