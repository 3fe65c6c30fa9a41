/*
 * producer.h - the C producer API: publish events to the events topic from
 * any C program. Events are validated before they leave the process,
 * encoded as protobuf webhook.v1.Event, keyed by app id (so one app's
 * events keep their order), and acknowledged by all in-sync replicas.
 *
 *     wh_producer *p;
 *     wh_producer_conf conf = {.brokers = "localhost:9092"};
 *     if (wh_producer_new(&conf, &p, err, sizeof(err)) != WH_OK) ...
 *     wh_event ev = {.id = "evt_1", .app = "acme", .type = "order.paid",
 *                    .payload = (const uint8_t *)"{\"total\":42}",
 *                    .payload_len = 12};
 *     if (wh_producer_send(p, &ev, err, sizeof(err)) != WH_OK) ...
 *     if (wh_producer_flush(p, 10000, err, sizeof(err)) != WH_OK) ...
 *     wh_producer_destroy(p);
 *
 * A wh_producer is used from one thread at a time.
 */
#ifndef WH_PRODUCER_H
#define WH_PRODUCER_H

#include "codec.h"
#include "wh.h"

typedef struct {
    const char *brokers;      /* required, e.g. "kafka-1:9092,kafka-2:9092" */
    const char *topic;        /* NULL = "webhook.events" */
    const char *kafka_extra;  /* "k=v,k=v" librdkafka properties, or NULL */
    size_t payload_max;       /* 0 = WH_PAYLOAD_DEFAULT_MAX */
    const char *client_id;    /* NULL = "webhook-produce" */
} wh_producer_conf;

typedef struct wh_producer wh_producer;

int wh_producer_new(const wh_producer_conf *conf, wh_producer **out,
                    char *err, size_t errlen) WH_MUST_CHECK;

/* Validates ev and queues it. ev and what it points to may be reused as
 * soon as this returns. WH_ERR on invalid events (err says why) or when
 * Kafka refuses the message; waits for queue space when the local queue
 * is full. ev->published_at_us is filled in when 0. */
int wh_producer_send(wh_producer *p, const wh_event *ev, char *err,
                     size_t errlen) WH_MUST_CHECK;

/* Waits up to timeout_ms until every queued event is acknowledged. WH_ERR
 * when some were not, or some failed since the last flush (err gives the
 * count and the last reason). */
int wh_producer_flush(wh_producer *p, int timeout_ms, char *err,
                      size_t errlen) WH_MUST_CHECK;

/* Events acknowledged / failed since creation. */
uint64_t wh_producer_acked(const wh_producer *p);
uint64_t wh_producer_failed(const wh_producer *p);

/* Frees p; events not yet flushed may be lost: flush first. */
void wh_producer_destroy(wh_producer *p);

#endif
