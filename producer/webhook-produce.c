/*
 * webhook-produce.c - publish events from the shell. One event from flags
 * (--app, --type, --payload), or many as JSON envelopes, one per line, on
 * standard input (the same envelope the events topic accepts; see
 * docs/events.md). Uses the C producer API; exits 0 when every event was
 * acknowledged by Kafka, 1 when Kafka refused some, 2 on invalid input
 * (events before the bad line are still published and flushed).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "json.h"
#include "log.h"
#include "producer.h"

typedef struct {
    const char *brokers, *kafka_extra, *topic;
    const char *app, *type, *id, *payload, *content_type, *endpoint;
    int64_t payload_max;
    bool keep_going, quiet;
} settings;

#define S(f) offsetof(settings, f)
static const wh_opt opts[] = {
    {"kafka-brokers", "KAFKA_BROKERS", WH_OPT_STRING, "localhost:9092", 0, 0,
     S(brokers), "Kafka bootstrap servers"},
    {"kafka-extra", "KAFKA_EXTRA", WH_OPT_STRING, NULL, 0, 0, S(kafka_extra),
     "more librdkafka properties, k=v,k=v"},
    {"topic", "WEBHOOK_EVENTS_TOPIC", WH_OPT_STRING, "webhook.events", 0, 0,
     S(topic), "events topic"},
    {"app", NULL, WH_OPT_STRING, NULL, 0, 0, S(app),
     "application (tenant) of the event; also its Kafka key"},
    {"type", NULL, WH_OPT_STRING, NULL, 0, 0, S(type),
     "event type, e.g. order.paid"},
    {"id", NULL, WH_OPT_STRING, NULL, 0, 0, S(id),
     "event id (idempotency key); generated when omitted"},
    {"payload", NULL, WH_OPT_STRING, NULL, 0, 0, S(payload),
     "JSON body, or @FILE to send a file's bytes"},
    {"content-type", NULL, WH_OPT_STRING, NULL, 0, 0, S(content_type),
     "body content type (default application/json; for @FILE "
     "application/octet-stream unless the file is JSON)"},
    {"endpoint", NULL, WH_OPT_STRING, NULL, 0, 0, S(endpoint),
     "deliver only to this endpoint id (comma-separated list allowed)"},
    {"payload-max", "WEBHOOK_PAYLOAD_MAX", WH_OPT_SIZE, "512k", 1024,
     16 * 1024 * 1024, S(payload_max), "largest payload accepted"},
    {"keep-going", NULL, WH_OPT_BOOL, "false", 0, 0, S(keep_going),
     "with stdin input: report invalid lines and continue"},
    {"quiet", NULL, WH_OPT_BOOL, "false", 0, 0, S(quiet),
     "print nothing on success"},
};

static int read_file(const char *path, size_t max, char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "webhook-produce: cannot open %s: %m\n", path);
        return WH_ERR;
    }
    char *buf = malloc(max + 1);
    size_t n = buf ? fread(buf, 1, max + 1, f) : 0;
    int bad = ferror(f);
    fclose(f);
    if (!buf || bad) {
        free(buf);
        fprintf(stderr, "webhook-produce: cannot read %s\n", path);
        return WH_ERR;
    }
    if (n > max) {
        free(buf);
        fprintf(stderr, "webhook-produce: %s is larger than the payload "
                        "limit of %zu bytes\n", path, max);
        return WH_ERR;
    }
    *out = buf;
    *len = n;
    return WH_OK;
}

static int is_json(const char *buf, size_t len, char *compact, size_t *clen,
                   char *err, size_t errlen)
{
    wh_json d = {0};
    if (wh_json_parse(&d, buf, len, (int32_t)(len + 1), err, errlen) != WH_OK) {
        wh_json_free(&d);
        return 0;
    }
    if (compact)
        *clen = wh_json_compact(&d, 0, compact);
    wh_json_free(&d);
    return 1;
}

static int one_event(const settings *s, wh_producer *p)
{
    char err[1024], idbuf[32];
    if (!s->app || !s->type || !s->payload) {
        fprintf(stderr, "webhook-produce: --app, --type and --payload are "
                        "required (or pipe JSON envelopes on stdin)\n");
        return 2;
    }
    const char *id = s->id;
    if (!id) {
        static const char al[] = "0123456789abcdefghijklmnopqrstuv";
        unsigned char r[20];
        if (wh_random_bytes(r, sizeof(r)) != WH_OK)
            return 1;
        memcpy(idbuf, "evt_", 4);
        for (int i = 0; i < 20; i++)
            idbuf[4 + i] = al[r[i] & 31];
        idbuf[24] = '\0';
        id = idbuf;
    }
    char *body = NULL, *compact = NULL;
    size_t len = 0, clen = 0;
    const char *ct = s->content_type;
    int rc = 2;
    if (s->payload[0] == '@') {
        if (read_file(s->payload + 1, (size_t)s->payload_max, &body, &len))
            return 2;
        if (!ct)
            ct = is_json(body, len, NULL, NULL, err, sizeof(err))
                     ? "application/json"
                     : "application/octet-stream";
    } else {
        len = strlen(s->payload);
        compact = malloc(len + 1);
        if (!compact)
            return 1;
        if ((!ct || strcmp(ct, "application/json") == 0)) {
            if (!is_json(s->payload, len, compact, &clen, err, sizeof(err))) {
                fprintf(stderr, "webhook-produce: --payload: %s\n", err);
                goto out;
            }
            body = compact;
            compact = NULL;
            len = clen;
        } else {
            memcpy(compact, s->payload, len);
            body = compact;
            compact = NULL;
        }
    }
    const char *eps[WH_EVENT_ENDPOINTS_MAX];
    size_t neps = 0;
    char *eplist = s->endpoint ? strdup(s->endpoint) : NULL;
    if (eplist) {
        char *save = NULL;
        for (char *t = strtok_r(eplist, ",", &save); t;
             t = strtok_r(NULL, ",", &save))
            if (neps < WH_EVENT_ENDPOINTS_MAX)
                eps[neps++] = t;
    }
    wh_event ev = {
        .id = id,
        .app = s->app,
        .type = s->type,
        .content_type = ct,
        .payload = (const uint8_t *)body,
        .payload_len = len,
        .endpoint_ids = eps,
        .n_endpoints = neps,
    };
    if (wh_producer_send(p, &ev, err, sizeof(err)) != WH_OK) {
        fprintf(stderr, "webhook-produce: %s\n", err);
        free(eplist);
        goto out;
    }
    free(eplist);
    if (wh_producer_flush(p, 30000, err, sizeof(err)) != WH_OK) {
        fprintf(stderr, "webhook-produce: %s\n", err);
        rc = 1;
        goto out;
    }
    if (!s->quiet)
        printf("%s\n", id);
    rc = 0;
out:
    free(body);
    free(compact);
    return rc;
}

static int from_stdin(const settings *s, wh_producer *p)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long lineno = 0, sent = 0, bad = 0;
    char err[1024];
    int rc = 0;
    while ((n = getline(&line, &cap, stdin)) >= 0) {
        lineno++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        if (n == 0)
            continue;
        wh_event_msg *m;
        if (wh_codec_event_decode(line, (size_t)n, WH_CT_JSON,
                                  (size_t)s->payload_max, &m, err,
                                  sizeof(err)) != WH_OK) {
            fprintf(stderr, "webhook-produce: stdin line %ld: %s\n", lineno,
                    err);
            bad++;
            if (!s->keep_going) {
                rc = 2;
                break;
            }
            continue;
        }
        int sr = wh_producer_send(p, wh_codec_event(m), err, sizeof(err));
        wh_codec_event_free(m);
        if (sr != WH_OK) {
            fprintf(stderr, "webhook-produce: stdin line %ld: %s\n", lineno,
                    err);
            rc = 1;
            break;
        }
        sent++;
    }
    free(line);
    if (wh_producer_flush(p, 60000, err, sizeof(err)) != WH_OK) {
        fprintf(stderr, "webhook-produce: %s\n", err);
        rc = 1;
    }
    if (!s->quiet || rc)
        fprintf(stderr, "webhook-produce: published %llu of %ld events"
                        "%s%ld invalid\n",
                (unsigned long long)wh_producer_acked(p), sent,
                bad ? ", " : ", ", bad);
    if (rc == 0 && bad)
        rc = 2;
    return rc;
}

int main(int argc, char **argv)
{
    settings s;
    char err[1024];
    memset(&s, 0, sizeof(s));
    int first;
    int lr = wh_config_load(opts, WH_ARRAY_LEN(opts), &s, argc, argv, &first,
                            err, sizeof(err));
    if (lr == WH_AGAIN) {
        wh_config_usage(stdout,
                        "webhook-produce --app A --type T --payload JSON|@FILE"
                        " [options]\n       webhook-produce [options] < "
                        "envelopes.ndjson", opts, WH_ARRAY_LEN(opts));
        return 0;
    }
    if (lr != WH_OK) {
        fprintf(stderr, "webhook-produce: %s (see --help)\n", err);
        return 2;
    }
    bool use_stdin = first < argc && strcmp(argv[first], "-") == 0;
    if (first < argc && !use_stdin) {
        fprintf(stderr, "webhook-produce: unexpected argument '%s'\n",
                argv[first]);
        return 2;
    }
    if (!s.type && !s.payload && !s.app)
        use_stdin = true;
    if (wh_log_init("text", "error", "webhook-produce", err, sizeof(err)))
        return 2;
    wh_producer_conf pc = {
        .brokers = s.brokers,
        .topic = s.topic,
        .kafka_extra = s.kafka_extra,
        .payload_max = (size_t)s.payload_max,
    };
    wh_producer *p;
    if (wh_producer_new(&pc, &p, err, sizeof(err)) != WH_OK) {
        fprintf(stderr, "webhook-produce: %s\n", err);
        return 1;
    }
    int rc = use_stdin ? from_stdin(&s, p) : one_event(&s, p);
    wh_producer_destroy(p);
    return rc;
}
