/*
 * main.c - webhook-api: settings (one table: flags, environment, --help,
 * the README's settings table), start-up checks, the Kafka producer and
 * the thread serving its delivery reports, the HTTP server, and the
 * shutdown on SIGTERM: stop accepting, answer what is in flight, flush.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api.h"
#include "auth.h"
#include "config.h"
#include "ingest.h"
#include "log.h"
#include "server.h"

#define S(f) offsetof(api_settings, f)
static const wh_opt opts[] = {
    {"listen", "API_LISTEN", WH_OPT_STRING, "127.0.0.1:8080", 0, 0, S(listen),
     "HOST:PORT to serve on (port 0: any free port, printed at start-up)"},
    {"database-url", "DATABASE_URL", WH_OPT_STRING, NULL, 0, 0,
     S(database_url), "PostgreSQL connection URI (required)"},
    {"kafka-brokers", "KAFKA_BROKERS", WH_OPT_STRING, "localhost:9092", 0, 0,
     S(kafka_brokers), "Kafka bootstrap servers"},
    {"kafka-extra", "KAFKA_EXTRA", WH_OPT_STRING, NULL, 0, 0, S(kafka_extra),
     "more librdkafka properties, k=v,k=v (e.g. security.protocol=ssl)"},
    {"events-topic", "WEBHOOK_EVENTS_TOPIC", WH_OPT_STRING, "webhook.events",
     0, 0, S(events_topic), "topic events are published to"},
    {"payload-max", "WEBHOOK_PAYLOAD_MAX", WH_OPT_SIZE, "512k", 1024,
     16 * 1024 * 1024, S(payload_max), "largest event payload accepted"},
    {"secret-key", "WEBHOOK_SECRET_KEY", WH_OPT_STRING, NULL, 0, 0,
     S(secret_key), "32-byte key (base64 or hex) sealing endpoint secrets "
     "(this or --secret-key-file is required)"},
    {"secret-key-file", "WEBHOOK_SECRET_KEY_FILE", WH_OPT_STRING, NULL, 0, 0,
     S(secret_key_file), "file holding that key, so it is not in the "
     "command line or environment"},
    {"secret-key-previous", "WEBHOOK_SECRET_KEY_PREVIOUS", WH_OPT_STRING,
     NULL, 0, 0, S(secret_key_previous), "keys the current one replaced "
     "(they open, never seal)"},
    {"secret-key-previous-file", "WEBHOOK_SECRET_KEY_PREVIOUS_FILE",
     WH_OPT_STRING, NULL, 0, 0, S(secret_key_previous_file),
     "file holding those keys, one per line"},
    {"threads", "API_THREADS", WH_OPT_INT, "4", 1, 256, S(threads),
     "request threads (a request waiting for Kafka holds none)"},
    {"max-connections", "API_MAX_CONNECTIONS", WH_OPT_INT, "1024", 1, 100000,
     S(max_connections), "client connections open at once; more are "
     "refused"},
    {"body-max", "API_BODY_MAX", WH_OPT_SIZE, "1m", 1024, 64 * 1024 * 1024,
     S(body_max), "largest request body (413 beyond)"},
    {"idle-timeout", "API_IDLE_TIMEOUT", WH_OPT_DURATION, "60s", 1000,
     3600000, S(idle_timeout_ms), "a connection silent this long is closed"},
    {"produce-timeout", "API_PRODUCE_TIMEOUT", WH_OPT_DURATION, "10s", 100,
     300000, S(produce_timeout_ms), "how long an event may wait for Kafka's "
     "acknowledgement before the request is answered 503"},
    {"ip-rate-limit", "API_IP_RATE_LIMIT", WH_OPT_INT, "100", 1, 1000000,
     S(ip_rate_limit), "requests a minute one source address may make "
     "without a valid token (429 beyond)"},
    {"allow-cidrs", "API_ALLOW_CIDRS", WH_OPT_STRING, NULL, 0, 0,
     S(allow_cidrs), "sources allowed at all (403 for others), e.g. "
     "10.0.0.0/8,192.168.0.0/16; unset: any"},
    {"trust-proxy", "API_TRUST_PROXY", WH_OPT_BOOL, "false", 0, 0,
     S(trust_proxy), "take the client address from the last entry of "
     "X-Forwarded-For (only behind a proxy that sets it)"},
    {"tls-cert", "API_TLS_CERT", WH_OPT_STRING, NULL, 0, 0, S(tls_cert),
     "PEM certificate (chain) to serve HTTPS with"},
    {"tls-key", "API_TLS_KEY", WH_OPT_STRING, NULL, 0, 0, S(tls_key),
     "its PEM private key"},
    {"log-format", "LOG_FORMAT", WH_OPT_STRING, "json", 0, 0, S(log_format),
     "json or text"},
    {"log-level", "LOG_LEVEL", WH_OPT_STRING, "info", 0, 0, S(log_level),
     "debug, info, warn or error"},
    WH_DB_OPT_ROWS(offsetof(api_settings, db)),
};

static volatile sig_atomic_t stop_signal;
static atomic_bool poll_stop; /* set once the server answered everything */

static void on_signal(int sig)
{
    stop_signal = sig;
}

/* Serves the producer's delivery reports (which answer suspended
 * requests) until the server has answered every request. */
static void *poll_main(void *arg)
{
    api_ctx *ctx = arg;
    while (!atomic_load(&poll_stop))
        wh_kafka_producer_poll(ctx->producer, 100);
    return NULL;
}

int main(int argc, char **argv)
{
    api_settings s;
    api_ctx ctx;
    char err[1024];
    int rc = 1;
    memset(&s, 0, sizeof(s));
    memset(&ctx, 0, sizeof(ctx));
    ctx.s = &s;
    if (argc == 2 && strcmp(argv[1], "--settings-markdown") == 0) {
        wh_config_markdown(stdout, opts, WH_ARRAY_LEN(opts));
        return 0;
    }
    int lr = wh_config_load(opts, WH_ARRAY_LEN(opts), &s, argc, argv, NULL,
                            err, sizeof(err));
    if (lr == WH_AGAIN) {
        wh_config_usage(stdout, "webhook-api [options]", opts,
                        WH_ARRAY_LEN(opts));
        return 0;
    }
    if (lr != WH_OK) {
        fprintf(stderr, "webhook-api: %s (see --help)\n", err);
        return 2;
    }
    if (wh_log_init(s.log_format, s.log_level, "api", err, sizeof(err)) !=
        WH_OK) {
        fprintf(stderr, "webhook-api: %s\n", err);
        return 2;
    }
    if (!s.database_url || !*s.database_url) {
        fprintf(stderr, "webhook-api: DATABASE_URL is required\n");
        return 2;
    }
    wh_secretbox_source keys = {
        .key = s.secret_key,
        .key_file = s.secret_key_file,
        .previous = s.secret_key_previous,
        .previous_file = s.secret_key_previous_file,
    };
    if (wh_secretbox_load(&ctx.sb, &keys, err, sizeof(err)) != WH_OK) {
        fprintf(stderr, "webhook-api: %s\n", err);
        return 2;
    }
    if (s.allow_cidrs && *s.allow_cidrs &&
        wh_netlist_parse(s.allow_cidrs, &ctx.allow, err, sizeof(err)) !=
            WH_OK) {
        fprintf(stderr, "webhook-api: API_ALLOW_CIDRS: %s\n", err);
        return 2;
    }
    wh_config_log(opts, WH_ARRAY_LEN(opts), &s);
    wh_db_set_defaults(&s.db);

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    char ttl[32];
    snprintf(ttl, sizeof(ttl), "message.timeout.ms=%lld",
             (long long)s.produce_timeout_ms);
    char extra[2048];
    snprintf(extra, sizeof(extra), "%s%s%s", ttl,
             s.kafka_extra && *s.kafka_extra ? "," : "",
             s.kafka_extra ? s.kafka_extra : "");
    wh_kafka_conf kc = {
        .brokers = s.kafka_brokers,
        .client_id = "webhook-api",
        .extra = extra,
        .linger_ms = 2,
        .message_max = wh_kafka_message_max(s.payload_max),
    };
    pthread_t poller;
    bool polling = false;
    if (wh_kafka_producer_new(&kc, api_ingest_report, &ctx, &ctx.producer,
                              err, sizeof(err)) != WH_OK ||
        api_auth_new(&ctx, &ctx.auth, err, sizeof(err)) != WH_OK) {
        WH_ERROR("%s", err);
        goto out;
    }
    wh_kafka_producer_warm(ctx.producer, s.events_topic);
    if (pthread_create(&poller, NULL, poll_main, &ctx) != 0) {
        WH_ERROR("cannot start the producer's report thread");
        goto out;
    }
    polling = true;
    if (api_server_start(&ctx, err, sizeof(err)) != WH_OK) {
        WH_ERROR("%s", err);
        goto out;
    }
    WH_INFO("webhook-api listening on %s://%s",
            s.tls_cert && *s.tls_cert ? "https" : "http",
            api_server_address(&ctx));
    while (!stop_signal)
        usleep(100 * 1000);
    WH_INFO("stopping: answering the requests in flight");
    rc = 0;
out:
    atomic_store(&ctx.stopping, true);
    api_server_stop(&ctx);
    atomic_store(&poll_stop, true);
    if (polling)
        pthread_join(poller, NULL);
    if (ctx.producer && wh_kafka_producer_flush(ctx.producer, 5000, err,
                                                sizeof(err)) != WH_OK)
        WH_WARN("%s", err);
    wh_kafka_producer_destroy(ctx.producer);
    api_auth_destroy(ctx.auth);
    api_db_drop();
    wh_netlist_free(ctx.allow);
    wh_secretbox_cleanup(&ctx.sb);
    WH_INFO("stopped");
    return rc;
}
