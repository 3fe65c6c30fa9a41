/*
 * routes.c - GET /healthz (the process answers), /readyz (Kafka's metadata
 * for the events topic is known and Postgres answers SELECT 1), /metrics
 * (the request and event counters, Prometheus text format 0.0.4) and
 * /v1/openapi.yaml.
 */
#include "routes.h"

#include <stdio.h>
#include <string.h>

#include "buf.h"
#include "log.h"

void api_route_healthz(api_req *r)
{
    api_reply_json(r, 200, json_pack("{s:s}", "status", "ok"));
}

void api_route_readyz(api_req *r)
{
    api_ctx *ctx = r->ctx;
    char err[WH_ERRLEN], why[WH_ERRLEN + 32] = "";
    int32_t parts = 0;
    if (atomic_load(&ctx->stopping))
        wh_strlcpy(why, "stopping", sizeof(why));
    else if (wh_kafka_producer_partitions(ctx->producer, ctx->s->events_topic,
                                          &parts, err, sizeof(err)) != WH_OK)
        snprintf(why, sizeof(why), "kafka: %s", err);
    else {
        wh_db *db = api_db(ctx, err, sizeof(err));
        if (!db || wh_db_exec(db, "SELECT 1", err, sizeof(err)) != WH_OK) {
            snprintf(why, sizeof(why), "postgres: %s", err);
            if (db)
                api_db_drop();
        }
    }
    if (why[0])
        api_reply_json(r, 503, json_pack("{s:s,s:s}", "status", "not ready",
                                         "reason", why));
    else
        api_reply_json(r, 200, json_pack("{s:s}", "status", "ready"));
}

void api_route_metrics(api_req *r)
{
    const api_stats *st = &r->ctx->stats;
    struct {
        const char *name, *type, *help, *labels;
        const atomic_llong *v;
    } rows[] = {
        {"webhook_api_requests_total", "counter", "requests received", "",
         &st->requests},
        {"webhook_api_responses_total", "counter", "answers by class",
         "{class=\"2xx\"}", &st->responses_2xx},
        {"webhook_api_responses_total", "counter", NULL, "{class=\"4xx\"}",
         &st->responses_4xx},
        {"webhook_api_responses_total", "counter", NULL, "{class=\"5xx\"}",
         &st->responses_5xx},
        {"webhook_api_events_total", "counter",
         "events posted, by what became of them", "{result=\"accepted\"}",
         &st->events_accepted},
        {"webhook_api_events_total", "counter", NULL,
         "{result=\"duplicate\"}", &st->events_duplicate},
        {"webhook_api_events_total", "counter", NULL, "{result=\"failed\"}",
         &st->events_failed},
        {"webhook_api_auth_failures_total", "counter",
         "requests refused 401 or 403", "", &st->auth_failures},
        {"webhook_api_rate_limited_total", "counter",
         "requests refused 429", "", &st->rate_limited},
    };
    wh_buf b;
    wh_buf_init(&b, 64 * 1024);
    int rc = WH_OK;
    for (size_t i = 0; i < WH_ARRAY_LEN(rows) && rc == WH_OK; i++) {
        if (rows[i].help)
            rc = wh_buf_addf(&b, "# HELP %s %s\n# TYPE %s %s\n",
                             rows[i].name, rows[i].help, rows[i].name,
                             rows[i].type);
        if (rc == WH_OK)
            rc = wh_buf_addf(&b, "%s%s %lld\n", rows[i].name, rows[i].labels,
                             (long long)atomic_load_explicit(
                                 rows[i].v, memory_order_relaxed));
    }
    if (rc == WH_OK)
        api_reply_raw(r, 200, "text/plain; version=0.0.4", wh_buf_cstr(&b),
                      b.len);
    else
        api_reply_error(r, 500, "internal", "out of memory");
    wh_buf_free(&b);
}

void api_route_openapi(api_req *r)
{
    api_reply_raw(r, 200, "application/yaml", api_openapi_yaml,
                  api_openapi_yaml_len);
}
