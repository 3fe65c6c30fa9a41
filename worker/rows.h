/*
 * rows.h - the rows the recorder writes, and their encoding as COPY text
 * rows for webhooks.events, webhooks.attempts, the retries staging table
 * and lane_stage.
 *
 * The encoder is the one place where outside bytes become Postgres text:
 * every text value is made valid UTF-8 without NUL or control characters
 * (lib/utf8.h) and cut to its column's bound, every number is
 * range-checked against its column type, and each table's rows go to a
 * growable buffer with a hard cap. Used by the recorder (recorder.c) on
 * the main thread; no state of its own beyond the wk_rows it is given.
 */
#ifndef WK_ROWS_H
#define WK_ROWS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "wh.h"

typedef struct {
    const char *delivery_id;
    const char *event_id;
    const char *endpoint_id;
    const char *app;
    const char *event_type;
    uint32_t attempt;
    bool succeeded;
    int status_code;            /* 0 = no response */
    int64_t latency_ms;
    const char *error_class;    /* NULL on success */
    const char *error;
    const char *snippet;
    size_t snippet_len;
    int64_t attempted_at_us;
    bool final;                 /* the delivery ends with this attempt */
    /* The retry scheduled by this attempt: next_attempt_at_us is 0 when
     * there is none, INT64_MAX while the endpoint is disabled (resumed by
     * `endpoint enable`). retry_delivery is the encoded Delivery to send,
     * with its attempt number set; copied. */
    int64_t next_attempt_at_us;
    const void *retry_delivery;
    size_t retry_len;
    uint32_t retry_attempt;
    /* The deliveries-topic partition and its ownership epoch: the retry is
     * written only while the epoch still owns the partition. */
    int32_t partition;
    int64_t epoch;
} wk_attempt;

/* A change to an ordered lane (sql/006_lanes.sql), written in the batch it
 * was added to, in the order added, and only while (partition, epoch) still
 * owns the partition; otherwise dropped (the partition's new owner redoes
 * the work from the uncommitted offsets). */
typedef enum {
    WK_LANE_BLOCK,   /* wait for delivery_id's retry `attempt` */
    WK_LANE_UNBLOCK, /* the head ended: drain the parked deliveries */
    WK_LANE_PARK,    /* park the delivery (encoded) at `position` */
    WK_LANE_UNPARK   /* the parked delivery ended (or became the head) */
} wk_lane_op_kind;

typedef struct {
    wk_lane_op_kind op;
    const char *endpoint_id;
    int32_t partition;
    int64_t epoch;
    const char *delivery_id;
    uint32_t attempt;         /* BLOCK */
    int64_t position;         /* PARK */
    const void *delivery;     /* PARK: webhook.v1.Delivery, copied */
    size_t delivery_len;
} wk_lane_op;

/* An event as stored for replay: its protobuf encoding. */
typedef struct {
    const char *app;
    const char *event_id;
    const char *event_type;
    const void *event;
    size_t event_len;
    int64_t received_at_us;
} wk_event_row;

#endif
