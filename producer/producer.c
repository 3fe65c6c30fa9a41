/*
 * producer.c - the C producer API (see producer.h): validation, protobuf
 * encoding and keyed, acknowledged publishing through the Kafka adapter.
 */
#include "producer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kafka.h"

struct wh_producer {
    wh_kafka_producer *kp;
    char *topic;
    size_t payload_max;
    wh_buf buf;
    uint64_t acked, failed, failed_reported;
    char last_error[WH_ERRLEN];
};

static void on_report(void *opaque, void *msg_opaque, int ok,
                      const char *errstr)
{
    wh_producer *p = opaque;
    (void)msg_opaque;
    if (ok) {
        p->acked++;
    } else {
        p->failed++;
        wh_strlcpy(p->last_error, errstr ? errstr : "unknown error",
                   sizeof(p->last_error));
    }
}

int wh_producer_new(const wh_producer_conf *conf, wh_producer **out,
                    char *err, size_t errlen)
{
    *out = NULL;
    wh_producer *p = calloc(1, sizeof(*p));
    if (!p)
        return wh_errf(err, errlen, "out of memory");
    p->topic = strdup(conf->topic ? conf->topic : "webhook.events");
    p->payload_max = conf->payload_max ? conf->payload_max
                                       : WH_PAYLOAD_DEFAULT_MAX;
    wh_buf_init(&p->buf, p->payload_max + 64 * 1024);
    wh_kafka_conf kc = {
        .brokers = conf->brokers,
        .client_id = conf->client_id ? conf->client_id : "webhook-produce",
        .extra = conf->kafka_extra,
    };
    if (!p->topic) {
        wh_errf(err, errlen, "out of memory");
        goto fail;
    }
    if (wh_kafka_producer_new(&kc, on_report, p, &p->kp, err, errlen))
        goto fail;
    wh_kafka_producer_warm(p->kp, p->topic);
    *out = p;
    return WH_OK;
fail:
    free(p->topic);
    free(p);
    return WH_ERR;
}

int wh_producer_send(wh_producer *p, const wh_event *ev, char *err,
                     size_t errlen)
{
    wh_event e = *ev;
    if (!e.published_at_us)
        e.published_at_us = wh_wall_us();
    if (wh_codec_event_validate(&e, p->payload_max, err, errlen))
        return WH_ERR;
    wh_buf_reset(&p->buf);
    if (wh_codec_event_encode(&e, &p->buf, err, errlen))
        return WH_ERR;
    static const char *const headers[] = {"content-type", WH_CT_PROTOBUF,
                                          NULL};
    for (;;) {
        int rc = wh_kafka_producer_send(p->kp, p->topic,
                                        WH_KAFKA_PARTITION_ANY, e.app,
                                        strlen(e.app), p->buf.data,
                                        p->buf.len, headers, NULL, err,
                                        errlen);
        if (rc != WH_AGAIN)
            return rc;
        wh_kafka_producer_poll(p->kp, 100);
    }
}

int wh_producer_flush(wh_producer *p, int timeout_ms, char *err,
                      size_t errlen)
{
    int rc = wh_kafka_producer_flush(p->kp, timeout_ms, err, errlen);
    wh_kafka_producer_poll(p->kp, 0);
    if (rc != WH_OK)
        return rc;
    if (p->failed > p->failed_reported) {
        uint64_t n = p->failed - p->failed_reported;
        p->failed_reported = p->failed;
        return wh_errf(err, errlen, "%llu events were not accepted by "
                       "Kafka; last error: %s", (unsigned long long)n,
                       p->last_error);
    }
    return WH_OK;
}

uint64_t wh_producer_acked(const wh_producer *p) { return p->acked; }
uint64_t wh_producer_failed(const wh_producer *p) { return p->failed; }

void wh_producer_destroy(wh_producer *p)
{
    if (!p)
        return;
    wh_kafka_producer_destroy(p->kp);
    wh_buf_free(&p->buf);
    free(p->topic);
    free(p);
}
