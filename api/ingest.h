/*
 * ingest.h - POST /v1/events (ingest.c): one JSON envelope or a batch of
 * up to API_BATCH_MAX, checked by the codec like any producer's, ids
 * already published within API_DEDUP_WINDOW_S answered as duplicates,
 * the rest produced to the events topic and answered 202 once Kafka
 * acknowledged every one (503 when it did not in time).
 */
#ifndef API_INGEST_H
#define API_INGEST_H

#include "server.h"

void api_ingest_events(api_req *r);

/* The producer's delivery report callback (wh_kafka_dr_fn); opaque is
 * the api_ctx. Runs on the producer's poll thread. */
void api_ingest_report(void *opaque, void *msg_opaque, int ok,
                       const char *errstr);

#endif
