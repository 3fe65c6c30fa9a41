/*
 * example.c - a minimal program using the C producer API: publishes a
 * handful of order events for one app and waits for Kafka to acknowledge
 * them. Build: see the Makefile target webhook-produce-example.
 *
 *     webhook-produce-example localhost:9092 acme 3
 */
#include <stdio.h>
#include <stdlib.h>

#include "producer.h"

int main(int argc, char **argv)
{
    const char *brokers = argc > 1 ? argv[1] : "localhost:9092";
    const char *app = argc > 2 ? argv[2] : "acme";
    int count = argc > 3 ? atoi(argv[3]) : 3;
    char err[512];
    wh_producer_conf conf = {.brokers = brokers};
    wh_producer *p;
    if (wh_producer_new(&conf, &p, err, sizeof(err)) != WH_OK) {
        fprintf(stderr, "example: %s\n", err);
        return 1;
    }
    for (int i = 1; i <= count; i++) {
        char id[64], body[128];
        int len = snprintf(body, sizeof(body),
                           "{\"order\":%d,\"total_cents\":%d}", i, i * 1250);
        snprintf(id, sizeof(id), "example-order-%d", i);
        wh_event ev = {
            .id = id,
            .app = app,
            .type = "order.paid",
            .payload = (const uint8_t *)body,
            .payload_len = (size_t)len,
        };
        if (wh_producer_send(p, &ev, err, sizeof(err)) != WH_OK) {
            fprintf(stderr, "example: event %s: %s\n", id, err);
            wh_producer_destroy(p);
            return 1;
        }
    }
    int rc = wh_producer_flush(p, 10000, err, sizeof(err));
    if (rc != WH_OK)
        fprintf(stderr, "example: %s\n", err);
    else
        printf("published %d events for app %s\n", count, app);
    wh_producer_destroy(p);
    return rc == WH_OK ? 0 : 1;
}
