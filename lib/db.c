/*
 * db.c - PostgreSQL adapter over libpq (see db.h). Blocking calls, used by
 * the worker's recorder and endpoint cache, webhookctl and the scheduler;
 * each wh_db belongs to one thread.
 */
#include "db.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migrate.h"

#define MAX_CHANNELS 4

struct wh_db {
    PGconn *conn;
    char *url;
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

static int open_conn(wh_db *db, char *err, size_t errlen)
{
    db->conn = PQconnectdb(db->url);
    if (!db->conn || PQstatus(db->conn) != CONNECTION_OK) {
        conn_error(db, "cannot connect to Postgres", err, errlen);
        if (db->conn)
            PQfinish(db->conn);
        db->conn = NULL;
        return WH_ERR;
    }
    PQsetNoticeProcessor(db->conn, notice_ignore, NULL);
    return WH_OK;
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
    if (open_conn(db, err, errlen) != WH_OK) {
        free(db->url);
        free(db);
        return WH_ERR;
    }
    *out = db;
    return WH_OK;
}

void wh_db_close(wh_db *db)
{
    if (!db)
        return;
    if (db->conn)
        PQfinish(db->conn);
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

int wh_db_exec(wh_db *db, const char *sql, char *err, size_t errlen)
{
    if (!db->conn)
        return wh_errf(err, errlen, "PQexec() failed: not connected");
    PGresult *res = PQexec(db->conn, sql);
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
    PGresult *res = PQexecParams(db->conn, sql, nparams, NULL, params, NULL,
                                 NULL, format);
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
    PGresult *res = PQexec(db->conn, copy_sql);
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
    if (PQputCopyData(db->conn, data, (int)len) != 1) {
        conn_error(db, "PQputCopyData() failed", err, errlen);
        return WH_ERR;
    }
    return WH_OK;
}

int wh_db_copy_end(wh_db *db, char *err, size_t errlen)
{
    if (PQputCopyEnd(db->conn, NULL) != 1) {
        conn_error(db, "PQputCopyEnd() failed", err, errlen);
        return WH_ERR;
    }
    int rc = WH_OK;
    PGresult *res;
    while ((res = PQgetResult(db->conn)) != NULL) {
        if (rc == WH_OK &&
            result_ok(db, res, "COPY failed", err, errlen) != WH_OK)
            rc = WH_ERR;
        PQclear(res);
    }
    return rc;
}

int wh_db_copy_escape(char *dst, size_t cap, size_t *pos, const char *src,
                      size_t len)
{
    size_t p = *pos;
    for (size_t i = 0; i < len; i++) {
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

int wh_db_migrate(wh_db *db, int *applied, char *err, size_t errlen)
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
