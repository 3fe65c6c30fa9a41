/*
 * api.h - webhook-api, the HTTP front door: its settings, the context its
 * request threads share, and the interfaces between its modules:
 *
 *   main.c     settings, start-up, signals, shutdown
 *   server.c   the libmicrohttpd daemon: requests, bodies, routing,
 *              JSON answers and errors, per-thread Postgres connections
 *   auth.c     bearer tokens (cached), scopes, source CIDRs, rate limits
 *   ingest.c   POST /v1/events: envelopes to Kafka, acknowledged
 *
 * Request handlers run on libmicrohttpd's thread pool; a request that
 * waits for Kafka is suspended (it holds no thread) and resumed by the
 * producer's delivery reports, served on a thread of its own.
 */
#ifndef API_H
#define API_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "db.h"
#include "kafka.h"
#include "secretbox.h"
#include "url.h"
#include "wh.h"

#define API_BATCH_MAX 100           /* events in one POST /v1/events */
#define API_DEDUP_WINDOW_S 86400    /* an event id answered duplicate */

typedef struct {
    const char *listen;             /* HOST:PORT */
    const char *database_url;
    const char *kafka_brokers, *kafka_extra, *events_topic;
    const char *secret_key, *secret_key_file;
    const char *secret_key_previous, *secret_key_previous_file;
    const char *tls_cert, *tls_key;
    const char *allow_cidrs;
    const char *log_format, *log_level;
    int64_t threads;
    int64_t max_connections;
    int64_t body_max;               /* bytes of a request body */
    int64_t payload_max;            /* bytes of an event payload */
    int64_t idle_timeout_ms;        /* a connection with nothing to say */
    int64_t produce_timeout_ms;     /* Kafka's acknowledgement */
    int64_t ip_rate_limit;          /* unauthenticated requests a minute */
    bool trust_proxy;
    wh_db_opts db;
} api_settings;

/* Counters for /metrics (relaxed atomics: any thread adds). */
typedef struct {
    atomic_llong requests, responses_2xx, responses_4xx, responses_5xx;
    atomic_llong events_accepted, events_duplicate, events_failed;
    atomic_llong auth_failures, rate_limited;
} api_stats;

typedef struct api_auth api_auth;
typedef struct api_server api_server;

typedef struct {
    const api_settings *s;
    wh_secretbox sb;
    wh_netlist *allow;              /* API_ALLOW_CIDRS, NULL = any */
    wh_kafka_producer *producer;
    api_auth *auth;
    api_server *server;
    api_stats stats;
    atomic_bool stopping;
    atomic_bool kafka_ok;           /* the last metadata check succeeded */
} api_ctx;

/* The calling thread's Postgres connection (opened on first use, opened
 * again after it broke), or NULL with err set. */
wh_db *api_db(const api_ctx *ctx, char *err, size_t errlen);
/* Closes the calling thread's connection after a failure, so the next
 * api_db opens a fresh one. */
void api_db_drop(void);

#endif
