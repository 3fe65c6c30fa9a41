/*
 * rows.h - the rows the recorder writes, and their encoding as COPY text
 * rows for webhooks.events, webhooks.attempts, the retries staging table
 * and lane_stage.
 *
 * The encoder is the one place where outside bytes become Postgres text:
 * every text value is made valid UTF-8 without NUL or control characters
 * (lib/utf8.h) and cut to its column's bound, every number is
 * range-checked against its column type, and each table's rows go to a
 * growable buffer with a hard cap. Used by the recorder (recorder.c): rows
 * are added on the main thread; spans, minimal forms and descriptions are
 * also read on the recorder's thread, of the batch it holds. No state of
 * its own beyond the wk_rows it is given.
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
    /* The lane's deliveries-topic partition and its ownership epoch: the
     * retry is written only while the epoch still owns the partition, and
     * with it (webhooks.retries.partition), so the scheduler sends the
     * retry back to the partition its lane waits on. */
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
    WK_LANE_UNPARK,  /* the parked delivery ended (or became the head) */
    WK_LANE_HANDOFF  /* the partition is let go: every message below
                        `position` was consumed (endpoint_id unused) */
} wk_lane_op_kind;

typedef struct {
    wk_lane_op_kind op;
    const char *endpoint_id;
    int32_t partition;
    int64_t epoch;
    const char *delivery_id;
    uint32_t attempt;         /* BLOCK */
    int64_t position;         /* PARK, HANDOFF */
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

/* ---- encoding ------------------------------------------------------------ */

/* The tables of a batch, in the order the recorder writes them. */
typedef enum {
    WK_T_EVENTS,   /* webhooks.events */
    WK_T_ATTEMPTS, /* webhooks.attempts */
    WK_T_RETRIES,  /* retries_stage, applied to webhooks.retries */
    WK_T_LANES,    /* lane_stage, applied to webhooks.lanes and parked */
    WK_T_COUNT
} wk_table;

/* Bounds of text values, in bytes after sanitizing (an invalid byte
 * becomes the 3-byte U+FFFD) and before COPY escaping (which at most
 * doubles them). A longer value is cut at a character boundary. */
#define WK_ROWS_ID_MAX      (4 * WH_ID_MAX)      /* ids, app, worker */
#define WK_ROWS_TYPE_MAX    (4 * WH_TYPE_MAX)
#define WK_ROWS_CLASS_MAX   64                   /* error_class */
#define WK_ROWS_ERROR_MAX   1024                 /* error, last_error */
#define WK_ROWS_SNIPPET_MAX (3 * 1024)           /* 1 KiB of any bytes */
/* The largest encoded attempt row (and retry row without its delivery). */
#define WK_ROWS_ATTEMPT_MAX                                               \
    (2 * (6 * WK_ROWS_ID_MAX + WK_ROWS_TYPE_MAX + WK_ROWS_CLASS_MAX +     \
          WK_ROWS_ERROR_MAX + WK_ROWS_SNIPPET_MAX) + 256)
/* Timestamps are clamped to what every tool reads back: 1970-01-01 to
 * 9999-12-31 (INT64_MAX is 'infinity' where a row allows it). */
#define WK_ROWS_TS_MAX_US   INT64_C(253402300799999999)

/* add_* set this in *notes when a value was out of range (clamped) or too
 * long (cut); the row is still added. */
#define WK_ROWS_CLAMPED 1u

/* Where one item (one add_* call, one waiter) starts in each table. */
typedef struct {
    size_t at[WK_T_COUNT];     /* byte offset */
    size_t before[WK_T_COUNT]; /* rows added before it */
} wk_rows_mark;

/* The encoded rows of one batch: one bounded buffer per table, and the
 * items in the order added, so that any run of items [lo, hi) is a
 * contiguous run of rows in every table. Fields are read-only. */
typedef struct {
    wh_buf t[WK_T_COUNT];
    size_t n[WK_T_COUNT];      /* rows per table */
    wk_rows_mark *items;
    size_t nitems, cap;
} wk_rows;

/* Prepares w for at most cap items, attempts_max bytes of attempt rows and
 * blobs_max bytes in each of the other tables (which carry protobuf as
 * hex). WH_ERR when memory ran out. */
int wk_rows_init(wk_rows *w, size_t cap, size_t attempts_max,
                 size_t blobs_max) WH_MUST_CHECK;
void wk_rows_cleanup(wk_rows *w);
/* Empties w, keeping its memory. */
void wk_rows_reset(wk_rows *w);

/* Each add_* appends one item; WH_ERR (err says why, w unchanged) when w
 * holds cap items or a table's buffer would pass its bound. Text is
 * sanitized (lib/utf8.h: U+FFFD for invalid bytes, NUL and control
 * characters; the snippet keeps tabs and newlines) and cut to its bound;
 * numbers are clamped to their column's range; *notes (may be NULL) gets
 * WK_ROWS_CLAMPED when that changed a value. */

/* The attempt row, and its retry's staging row when a retry is scheduled
 * (next_attempt_at_us != 0); worker names the writer. */
int wk_rows_add_attempt(wk_rows *w, const wk_attempt *a, const char *worker,
                        unsigned *notes, char *err,
                        size_t errlen) WH_MUST_CHECK;
int wk_rows_add_event(wk_rows *w, const wk_event_row *e, unsigned *notes,
                      char *err, size_t errlen) WH_MUST_CHECK;
int wk_rows_add_lane(wk_rows *w, const wk_lane_op *op, unsigned *notes,
                     char *err, size_t errlen) WH_MUST_CHECK;

/* The rows of items [lo, hi) (lo <= hi <= nitems) in table t: *data and
 * *len (valid until w changes) and how many rows. */
void wk_rows_span(const wk_rows *w, wk_table t, size_t lo, size_t hi,
                  const char **data, size_t *len, size_t *rows);

/* Replaces out's content with item i of w in its minimal form: an attempt
 * row without status, latency or snippet and with reason as its error
 * text, and its retry row (if any) with reason as last_error and no
 * status. WH_DECLINED when the item has no smaller form (events and lane
 * changes: the caller drops it); WH_ERR when out is too small. */
int wk_rows_minimal(const wk_rows *w, size_t i, const char *reason,
                    wk_rows *out, char *err, size_t errlen) WH_MUST_CHECK;

/* Describes item i for a log line, e.g. "attempt 3 of delivery dl_..."
 * (as escaped for COPY); NUL-terminated in buf. */
void wk_rows_describe(const wk_rows *w, size_t i, char *buf, size_t cap);

#endif
