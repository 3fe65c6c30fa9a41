/*
 * replay.h - re-sending recorded deliveries: selects deliveries from the
 * history (one delivery, every delivery of an event, an endpoint's
 * deliveries in a time range, or the dead letters), loads each one's event
 * from webhooks.events and produces a Delivery with the same delivery id
 * (so the same webhook-id) to the deliveries topic, with the attempt
 * number after the highest one recorded, to the partition of its
 * endpoint's lane.
 *
 * Called by webhookctl (replay, dead-letters list|replay) on its only
 * thread. Uses one wh_db connection and, when sending, one Kafka producer.
 */
#ifndef WH_REPLAY_H
#define WH_REPLAY_H

#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "codec.h"
#include "db.h"
#include "kafka.h"
#include "wh.h"

/* Most deliveries one selection returns. */
#define WH_REPLAY_LIMIT_MAX 1000000
/* Largest payload a stored event may carry (the worker's highest
 * WEBHOOK_PAYLOAD_MAX). */
#define WH_REPLAY_PAYLOAD_MAX (16 * 1024 * 1024)
/* Largest stored event accepted: the payload plus ids, type, endpoint ids
 * and headers, whose own limits (lib/codec.c) add up to less than 64 KiB. */
#define WH_REPLAY_EVENT_MAX (WH_REPLAY_PAYLOAD_MAX + 64 * 1024)
/* Largest encoded Delivery: the event plus delivery id, endpoint id,
 * attempt, times and source. */
#define WH_REPLAY_DELIVERY_MAX (WH_REPLAY_EVENT_MAX + 4096)
/* Longest time text accepted by wh_replay_resolve_time, and the size of
 * the buffer it writes (an ISO 8601 UTC time with microseconds). */
#define WH_REPLAY_TIME_INPUT_MAX 128
#define WH_REPLAY_TIME_MAX 40
/* source_topic of a replayed Delivery. */
#define WH_REPLAY_SOURCE "replay"
/* Rows read from the selection cursor per round trip. */
#define WH_REPLAY_FETCH 200

typedef enum {
    WH_REPLAY_BY_DELIVERY = 1, /* delivery_id */
    WH_REPLAY_BY_EVENT,        /* event_id, optional app */
    WH_REPLAY_BY_ENDPOINT,     /* endpoint_id, since; optional until and
                                  outcome: the latest attempt is in
                                  [since, until] and has that outcome */
    WH_REPLAY_DEAD,            /* the latest attempt is final and failed;
                                  optional endpoint_id, app and since
                                  (latest attempt at or after it) */
} wh_replay_kind;

/* What to select. Strings are borrowed; NULL means "not given". Times are
 * anything Postgres reads as timestamptz (use wh_replay_resolve_time). */
typedef struct {
    wh_replay_kind kind;
    const char *delivery_id;
    const char *event_id;
    const char *app;
    const char *endpoint_id;
    const char *since;
    const char *until;
    const char *outcome;  /* "succeeded", "failed" or NULL */
    int64_t limit;        /* 1..WH_REPLAY_LIMIT_MAX */
    bool newest_first;    /* order by latest attempt, newest first (for
                             listings); otherwise by first attempt, oldest
                             first (the order replays are sent in) */
} wh_replay_filter;

/* One selected delivery, as its latest attempt left it. The strings stay
 * valid only during the callback that receives it. */
typedef struct {
    const char *delivery_id;
    const char *endpoint_id;
    const char *app;
    const char *event_id;
    const char *event_type;
    uint32_t attempts;          /* highest attempt number recorded */
    uint32_t next_attempt;      /* the attempt a replay makes: attempts + 1 */
    const char *last_outcome;   /* "succeeded" or "failed" */
    int last_status;            /* HTTP status, 0 without a response */
    const char *last_error_class; /* "" when none */
    const char *last_error;     /* "" when none */
    const char *last_attempt_at; /* ISO 8601 UTC, milliseconds */
    bool last_final;            /* the latest attempt ended the delivery */
    bool endpoint_missing;      /* the endpoint no longer exists */
    bool endpoint_disabled;
    uint32_t retry_attempt;     /* attempt of a retry already scheduled in
                                   webhooks.retries; 0 when none */
    const char *retry_due_at;   /* its due time ("infinity" when parked),
                                   "" when none */
    int32_t lane_partition;     /* the deliveries partition of the
                                   endpoint's lane (webhooks.lanes) when
                                   it is blocked or draining (of two, as
                                   after a partition count change, the
                                   one changed last); -1 when it is
                                   open */
} wh_replay_target;

/* Called once per selected delivery. Returning WH_ERR stops the
 * selection (wh_replay_select then returns WH_ERR with the message the
 * callback wrote to err). */
typedef int wh_replay_row_fn(void *opaque, const wh_replay_target *t,
                             char *err, size_t errlen);

/*
 * Resolves a time given on the command line: a duration with a unit, as
 * wh_parse_duration_ms reads it ("2h", "30m", "7d"), means that long
 * before the database's now(); anything else (a bare number too) must be
 * a timestamptz Postgres accepts
 * ("2026-11-23 15:00", "2026-11-23T15:00:00Z"). Writes the time as ISO
 * 8601 UTC with microseconds into out (WH_REPLAY_TIME_MAX bytes).
 * Returns WH_OK; WH_DECLINED when text is not a time (err says so);
 * WH_ERR when the query failed for another reason.
 */
int wh_replay_resolve_time(wh_db *db, const char *text, char *out,
                           size_t outlen, char *err,
                           size_t errlen) WH_MUST_CHECK;

/*
 * Selects the deliveries f describes and calls fn for each, at most
 * f->limit of them, reading WH_REPLAY_FETCH rows at a time from a cursor
 * in a read-only transaction (fn may run other queries on db meanwhile).
 * *n_selected (may be NULL) counts the calls; *more (may be NULL) is set
 * when further deliveries matched beyond the limit. Returns WH_OK, or
 * WH_ERR when a query failed or fn stopped the selection; the transaction
 * is over either way.
 */
int wh_replay_select(wh_db *db, const wh_replay_filter *f,
                     wh_replay_row_fn *fn, void *opaque, size_t *n_selected,
                     bool *more, char *err, size_t errlen) WH_MUST_CHECK;

/*
 * Decodes a stored event given as the hex text of its protobuf bytes
 * (encode(event, 'hex')), using scratch for the bytes (its max should be
 * at least WH_REPLAY_EVENT_MAX). Checks that it is the event of app and
 * event_id. On WH_OK the caller frees *out with wh_codec_event_free.
 * Returns WH_ERR with the reason for bad hex, more than
 * WH_REPLAY_EVENT_MAX bytes, an event that does not decode (payload limit
 * WH_REPLAY_PAYLOAD_MAX) or one of another app or id.
 */
int wh_replay_decode_event(const char *hex, size_t hexlen, const char *app,
                           const char *event_id, wh_buf *scratch,
                           wh_event_msg **out, char *err,
                           size_t errlen) WH_MUST_CHECK;

/*
 * Encodes the Delivery that replays t with event ev into out (replacing
 * its content): t's delivery id and endpoint id, attempt t->next_attempt,
 * created_at_us now_us (the retry age limit counts from the replay),
 * source topic WH_REPLAY_SOURCE, partition and offset -1. Returns WH_ERR
 * when it does not encode or exceeds out's max.
 */
int wh_replay_build(const wh_replay_target *t, const wh_event *ev,
                    int64_t now_us, wh_buf *out, char *err,
                    size_t errlen) WH_MUST_CHECK;

/* The deliveries partition (of partition_cnt >= 1) that replays t:
 * t->lane_partition when the topic has it, so the replay joins the lane
 * that holds the endpoint's deliveries; otherwise the partition the
 * endpoint id maps to (wh_kafka_partition_of), where the fan-out sends
 * them. Never the producer's configured partitioner's choice. */
int32_t wh_replay_partition(const wh_replay_target *t, int32_t partition_cnt);

/* Where replayed deliveries go. */
typedef struct {
    const wh_kafka_conf *kafka;
    const char *topic;          /* the deliveries topic */
    int64_t ack_timeout_ms;     /* stop waiting for acknowledgements after
                                   this long without one */
} wh_replay_sink;

typedef enum {
    WH_REPLAY_SENT = 1,   /* acknowledged by Kafka */
    WH_REPLAY_DRY_RUN,    /* would be sent (no sink given) */
    WH_REPLAY_NO_EVENT,   /* the event is no longer stored */
    WH_REPLAY_SKIPPED,    /* a retry is already scheduled; not sent */
    WH_REPLAY_FAILED,     /* not sent: endpoint gone, event unusable, or
                             Kafka refused or did not acknowledge it */
} wh_replay_status;

/* Reports the fate of one selected delivery. detail is "" for SENT and
 * DRY_RUN, else a sentence saying why ("event evt_1 of app acme is no
 * longer stored (retention)"). t is valid during the call only; for SENT
 * and FAILED after sending, only its delivery_id, endpoint_id, app,
 * event_id, attempts, next_attempt and endpoint_disabled are set. */
typedef void wh_replay_report_fn(void *opaque, const wh_replay_target *t,
                                 wh_replay_status st, const char *detail);

typedef struct {
    size_t selected;
    size_t sent;      /* acknowledged, or would be sent in a dry run */
    size_t no_event;
    size_t skipped;
    size_t failed;
    bool more;        /* deliveries beyond the limit were not selected */
} wh_replay_counts;

/*
 * Replays the deliveries f selects: for each, checks its endpoint still
 * exists and no retry is scheduled, loads its event, builds the Delivery
 * (wh_replay_build) and produces it to sink->topic keyed by the endpoint
 * id, to the partition wh_replay_partition picks, with header
 * content-type application/x-protobuf; then waits for every
 * acknowledgement. With sink NULL nothing is produced (dry run).
 * Every selected delivery is reported exactly once through report. When
 * f selects by event without an app and the event id occurs in more than
 * one app, nothing is selected and WH_DECLINED is returned with err
 * naming the apps. Returns WH_OK when the selection ran to its end (per
 * delivery failures are in *counts), WH_ERR when it stopped early (query
 * failed, producer could not be created); deliveries produced before the
 * stop are still awaited and reported.
 */
int wh_replay_run(wh_db *db, const wh_replay_filter *f,
                  const wh_replay_sink *sink, wh_replay_report_fn *report,
                  void *opaque, wh_replay_counts *counts, char *err,
                  size_t errlen) WH_MUST_CHECK;

#endif
