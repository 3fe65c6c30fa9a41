/*
 * db.h - the PostgreSQL adapter: the only module that includes libpq.
 *
 * Connections, text-format queries with parameters, COPY for batched
 * inserts, LISTEN/NOTIFY and reconnects, each call bounded in time
 * (wh_db_opts). A wh_db is used by one thread at a time. Values travel as text; bytea is moved as base64 (encode/decode in
 * SQL) so callers never see libpq escaping.
 */
#ifndef WH_DB_H
#define WH_DB_H

#include <stdbool.h>
#include <stdint.h>

#include "wh.h"

typedef struct wh_db wh_db;
typedef struct wh_db_result wh_db_result;

/* Bounds of a connection, so that a Postgres that stops answering turns
 * into an error in bounded time. 0 turns a bound off. Each binary reads
 * them from its DATABASE_* settings (WH_DB_OPT_ROWS) and sets them once
 * with wh_db_set_defaults before it connects. */
typedef struct {
    int64_t connect_timeout_ms;     /* establishing a connection */
    /* The server's statement_timeout; the client also gives up a call
     * (and the connection) when no answer came within this plus
     * wh_db_answer_grace_ms of it, which catches a server that is frozen
     * (or a network that silently lost it). */
    int64_t statement_timeout_ms;
    int64_t tcp_user_timeout_ms;    /* unacknowledged data (Linux) */
    int64_t keepalives_idle_ms;     /* 0: no TCP keepalives */
    int64_t keepalives_interval_ms;
    int64_t keepalives_count;
} wh_db_opts;

/* The client's grace beyond a statement timeout: half of it, at most
 * WH_DB_ANSWER_GRACE_MS. */
#define WH_DB_ANSWER_GRACE_MS 2000
int64_t wh_db_answer_grace_ms(int64_t statement_timeout_ms);

/* The rows of a binary's settings table for wh_db_opts at offset base of
 * its settings struct (needs config.h and stddef.h). */
#define WH_DB_OPT_ROWS(base)                                                  \
    {"database-connect-timeout", "DATABASE_CONNECT_TIMEOUT", WH_OPT_DURATION, \
     "5s", 0, 600000, (base) + offsetof(wh_db_opts, connect_timeout_ms),      \
     "longest a connection to Postgres may take to open (0: no limit)"},      \
    {"database-statement-timeout", "DATABASE_STATEMENT_TIMEOUT",              \
     WH_OPT_DURATION, "30s", 0, 86400000,                                     \
     (base) + offsetof(wh_db_opts, statement_timeout_ms),                     \
     "Postgres statement_timeout of every connection; a call still without "  \
     "an answer 2 s later gives the connection up (0: no limit)"},            \
    {"database-tcp-user-timeout", "DATABASE_TCP_USER_TIMEOUT",                \
     WH_OPT_DURATION, "30s", 0, 3600000,                                      \
     (base) + offsetof(wh_db_opts, tcp_user_timeout_ms),                      \
     "how long sent data may stay unacknowledged before the connection is "   \
     "dropped (0: the kernel's default)"},                                    \
    {"database-keepalives-idle", "DATABASE_KEEPALIVES_IDLE",                  \
     WH_OPT_DURATION, "10s", 0, 3600000,                                      \
     (base) + offsetof(wh_db_opts, keepalives_idle_ms),                       \
     "idle time before TCP keepalives probe a Postgres connection (0: no "    \
     "keepalives)"},                                                          \
    {"database-keepalives-interval", "DATABASE_KEEPALIVES_INTERVAL",          \
     WH_OPT_DURATION, "5s", 0, 3600000,                                       \
     (base) + offsetof(wh_db_opts, keepalives_interval_ms),                   \
     "time between unanswered keepalive probes"},                             \
    {"database-keepalives-count", "DATABASE_KEEPALIVES_COUNT", WH_OPT_INT,    \
     "3", 0, 1000, (base) + offsetof(wh_db_opts, keepalives_count),           \
     "unanswered keepalive probes before the connection is dropped"}

/* Sets the bounds of every connection opened afterwards (call before any
 * thread connects; the built-in defaults are those of WH_DB_OPT_ROWS). */
void wh_db_set_defaults(const wh_db_opts *o);
const wh_db_opts *wh_db_defaults(void);

/* libpq connection keywords and values for url with the bounds of o: the
 * bounds first, then url as an expanded "dbname", so that parameters the
 * URL names itself win. The arrays end with NULL. WH_ERR when a bound is
 * out of range. */
#define WH_DB_PARAMS_MAX 8
typedef struct {
    const char *keys[WH_DB_PARAMS_MAX + 1];
    const char *values[WH_DB_PARAMS_MAX + 1];
    char text[WH_DB_PARAMS_MAX][24];
    int n;
} wh_db_params;
int wh_db_params_build(const char *url, const wh_db_opts *o, wh_db_params *p,
                       char *err, size_t errlen) WH_MUST_CHECK;

/* Connects to url (a libpq connection string or URI). On failure *out is
 * NULL and err explains, e.g. "cannot connect to Postgres: ...". */
int wh_db_connect(const char *url, wh_db **out, char *err,
                  size_t errlen) WH_MUST_CHECK;
void wh_db_close(wh_db *db);

/* 1 when the connection is usable. */
int wh_db_alive(wh_db *db);

/* Closes the connection but keeps db for a later wh_db_reconnect. */
void wh_db_drop(wh_db *db);

/* Drops and re-opens the connection (LISTEN channels are re-issued). */
int wh_db_reconnect(wh_db *db, char *err, size_t errlen) WH_MUST_CHECK;

/* Changes this connection's statement timeout (and with it the client's
 * deadline, see wh_db_opts); kept across reconnects. */
int wh_db_set_timeout(wh_db *db, int64_t statement_timeout_ms, char *err,
                      size_t errlen) WH_MUST_CHECK;

/* Any thread: the call db's owner is waiting in, and every later one,
 * fails at once with "interrupted" and gives the connection up. For
 * shutting down a thread that may be stuck on a frozen server. */
void wh_db_interrupt(wh_db *db);

/* The SQLSTATE of the last result the server sent (e.g. "22021"), "" when
 * it succeeded or a command failed without one (connection lost). Read it
 * right after the call that failed. */
const char *wh_db_sqlstate(const wh_db *db);

/* Runs one or more statements that return no rows of interest. */
int wh_db_exec(wh_db *db, const char *sql, char *err,
               size_t errlen) WH_MUST_CHECK;

/* Runs sql with text parameters $1..$n (NULL entries are SQL NULL). On
 * WH_OK *out holds the rows; free it with wh_db_result_free. */
int wh_db_query(wh_db *db, const char *sql, int nparams,
                const char *const *params, wh_db_result **out, char *err,
                size_t errlen) WH_MUST_CHECK;
/* wh_db_query with every column in binary format: text and bytea cells
 * are their raw bytes (NUL-terminated all the same, and a bytea may hold
 * NULs: use wh_db_getlen); cast other types to text in the query. Saves
 * the server hex-encoding a bytea and the client decoding it. */
int wh_db_query_raw(wh_db *db, const char *sql, int nparams,
                    const char *const *params, wh_db_result **out,
                    char *err, size_t errlen) WH_MUST_CHECK;
int wh_db_rows(const wh_db_result *r);
int wh_db_cols(const wh_db_result *r);
const char *wh_db_colname(const wh_db_result *r, int col);
/* Text value of a cell; "" for NULL (see wh_db_isnull). Valid until the
 * result is freed. */
const char *wh_db_get(const wh_db_result *r, int row, int col);
size_t wh_db_getlen(const wh_db_result *r, int row, int col);
int wh_db_isnull(const wh_db_result *r, int row, int col);
/* Number of rows a command touched ("UPDATE 3" -> 3). */
long wh_db_affected(const wh_db_result *r);
void wh_db_result_free(wh_db_result *r);

/* COPY ... FROM STDIN in text format: begin with the COPY statement, put
 * any number of rows (already escaped with wh_db_copy_escape), then end,
 * which reports the server's verdict. */
int wh_db_copy_begin(wh_db *db, const char *copy_sql, char *err,
                     size_t errlen) WH_MUST_CHECK;
int wh_db_copy_put(wh_db *db, const char *data, size_t len, char *err,
                   size_t errlen) WH_MUST_CHECK;
int wh_db_copy_end(wh_db *db, char *err, size_t errlen) WH_MUST_CHECK;

/* Appends src escaped for COPY text format to dst (capacity cap, starting
 * at *pos). Returns WH_ERR when it does not fit. */
int wh_db_copy_escape(char *dst, size_t cap, size_t *pos, const char *src,
                      size_t len) WH_MUST_CHECK;

/* LISTEN on channel; notifications are then read with wh_db_notification
 * after the socket (wh_db_socket) turns readable. */
int wh_db_listen(wh_db *db, const char *channel, char *err,
                 size_t errlen) WH_MUST_CHECK;
int wh_db_socket(wh_db *db);
/* WH_OK with one payload copied to payload, WH_AGAIN when none is pending,
 * WH_ERR when the connection broke. */
int wh_db_notification(wh_db *db, char *payload, size_t cap, char *err,
                       size_t errlen) WH_MUST_CHECK;

/* Applies the embedded migrations not yet recorded in
 * webhooks.schema_migrations, each in its own transaction, under an
 * advisory lock so concurrent migrators wait for each other. *applied
 * counts what ran. */
int wh_db_migrate(wh_db *db, int *applied, char *err,
                  size_t errlen) WH_MUST_CHECK;

#endif
