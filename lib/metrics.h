/*
 * metrics.h - the operations HTTP server of webhook-worker and
 * webhook-scheduler: GET /metrics (Prometheus text format 0.0.4),
 * /healthz and /readyz. Non-blocking and single-threaded: it lives in the
 * owner's event loop, which waits on wh_metrics_fd() among its other
 * descriptors and calls wh_metrics_serve() every iteration. Values are
 * read when a scrape arrives, through pointers or callbacks registered by
 * the owner, on the loop's thread.
 */
#ifndef WH_METRICS_H
#define WH_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#include "wh.h"

#define WH_METRICS_SERIES_MAX 128      /* registered series */
#define WH_METRICS_NAME_MAX 128        /* metric name */
#define WH_METRICS_LABELS_MAX 256      /* label set as exposed: {k="v",...} */
#define WH_METRICS_LABEL_COUNT_MAX 8   /* labels of one series */
#define WH_METRICS_HELP_MAX 256        /* help text */
#define WH_METRICS_REASON_MAX 256      /* not-ready reason */
#define WH_METRICS_REQUEST_MAX 8192    /* request line and headers */
#define WH_METRICS_CONN_MAX 1024       /* largest max_connections */
#define WH_METRICS_CONN_DEFAULT 16
#define WH_METRICS_TIMEOUT_DEFAULT_MS 10000

typedef struct {
    /* "HOST:PORT", "[IPV6]:PORT" or ":PORT" (every interface); HOST may
     * be a name, resolved once. Port 0 picks a free port (see
     * wh_metrics_address). NULL or "" disables the server. */
    const char *listen;
    /* Connections open at once (1..WH_METRICS_CONN_MAX, 0 = default);
     * one more is closed as soon as it is accepted. */
    int max_connections;
    /* A connection is closed when it has not sent a whole request and
     * received the answer within this (0 = default). */
    int64_t timeout_ms;
} wh_metrics_conf;

typedef enum { WH_METRIC_COUNTER, WH_METRIC_GAUGE } wh_metric_type;

/* Returns a series' current value; called on the loop's thread while a
 * scrape is answered. NaN and infinities are exposed as such. */
typedef double wh_metric_fn(void *opaque);

typedef struct wh_metrics wh_metrics;

/*
 * Binds and listens on conf->listen. *out is NULL when the server is
 * disabled (listen NULL or ""); every function below accepts a NULL
 * server and then does nothing (registrations return WH_OK). WH_ERR when
 * the address is malformed, cannot be resolved or bound.
 * Until wh_metrics_set_ready, /readyz answers 503 "starting".
 */
int wh_metrics_new(const wh_metrics_conf *conf, wh_metrics **out, char *err,
                   size_t errlen) WH_MUST_CHECK;
/* Closes the listener and every connection. */
void wh_metrics_destroy(wh_metrics *m);

/* The bound address, e.g. "127.0.0.1:9400" or "[::]:9400" ("" for a
 * NULL server). Valid until wh_metrics_destroy. */
const char *wh_metrics_address(const wh_metrics *m);

/*
 * Registers one series read from *value (which must outlive m). name
 * matches [a-zA-Z_:][a-zA-Z0-9_:]*; a counter's ends in "_total". labels
 * is NULL or "" for none, else "key=value,key=value" (keys
 * [a-zA-Z_][a-zA-Z0-9_]* not starting with "__", values without ',';
 * '"', '\\' and newlines are escaped on output). Series of one name form
 * a family and must agree on type and help; the families are exposed in
 * the order they were first registered, each series in registration
 * order. WH_ERR on an invalid name, labels or help, on a series already
 * registered, on disagreement with the family, or when
 * WH_METRICS_SERIES_MAX series exist.
 */
int wh_metrics_add(wh_metrics *m, wh_metric_type type, const char *name,
                   const char *labels, const char *help, const int64_t *value,
                   char *err, size_t errlen) WH_MUST_CHECK;
/* Same, with the value returned by fn(opaque). */
int wh_metrics_add_fn(wh_metrics *m, wh_metric_type type, const char *name,
                      const char *labels, const char *help, wh_metric_fn *fn,
                      void *opaque, char *err, size_t errlen) WH_MUST_CHECK;

struct wh_db;
/* Registers the series every program exports, named <prefix>_...:
 * ready (1 while /readyz answers ready), uptime_seconds (since
 * *started_us, a wh_mono_us time; help "Seconds since the <program>
 * started."), kafka_data_loss_total (wh_kafka_data_loss_count) and
 * database_connected{connection=main|listen} (1 while *db / *listen_db
 * is alive, i.e. no call on it has failed since it connected: not proof
 * that Postgres answers; the pointers are read at each scrape).
 * Everything pointed to must outlive m. */
int wh_metrics_add_process(wh_metrics *m, const char *prefix,
                           const char *program, const int64_t *started_us,
                           struct wh_db *const *db,
                           struct wh_db *const *listen_db, char *err,
                           size_t errlen) WH_MUST_CHECK;

/* What /readyz answers: 200 "ready", or 503 "not ready: <reason>"
 * (reason copied, cut at WH_METRICS_REASON_MAX bytes; NULL = "not
 * ready"). Cheap enough for a loop to call every iteration. */
void wh_metrics_set_ready(wh_metrics *m, bool ready, const char *reason);

/* One descriptor (an epoll set) that turns readable when the server has
 * work: a connection to accept, a request to read, an answer to write or
 * a connection timed out. Poll it for reading; -1 for a NULL server. */
int wh_metrics_fd(const wh_metrics *m);

/*
 * Accepts, reads requests, answers and closes connections, without
 * blocking. Call it whenever wh_metrics_fd was readable; calling it when
 * it was not is harmless. Answers GET and HEAD of /metrics, /healthz
 * (200 "ok") and /readyz; other paths 404, other methods 405, malformed
 * requests 400, requests over WH_METRICS_REQUEST_MAX 431. Every answer
 * ends with Connection: close.
 */
void wh_metrics_serve(wh_metrics *m);

/* The server's request parsing, on its own for tests/fuzz/fuzz_metrics.c. */

/* True when req[0..len) holds the end of the header block ("\r\n\r\n" or
 * a bare "\n\n"). from: how many leading bytes an earlier call already
 * found incomplete (0 scans everything), so reading in pieces costs no
 * rescans. */
bool wh_metrics_request_complete(const char *req, size_t len, size_t from);

typedef struct {
    int status;         /* 0: answer target; 400 malformed; 405 method */
    bool head;          /* HEAD: the answer has no body */
    const char *target; /* status 0: the path without query or fragment,
                           inside req */
} wh_metrics_request;

/* Reads the request line of a complete request (see above) in req[0..len),
 * splitting it in place (writes NULs into req): "GET|HEAD /path HTTP/1.x";
 * the header lines are not looked at. */
void wh_metrics_request_parse(char *req, size_t len, wh_metrics_request *out);

#endif
