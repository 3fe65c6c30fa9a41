/*
 * codec.h - events, deliveries and dead letters on the wire.
 *
 * Decodes what producers put on the events topic (protobuf webhook.v1.Event
 * or the JSON envelope of docs/events.md, told apart by the content-type
 * Kafka header and, without it, by sniffing), validates it, and encodes the
 * Delivery and DeadLetter messages the engine writes. Pure functions, safe
 * from any thread. The only module that includes the generated protobuf-c
 * code.
 */
#ifndef WH_CODEC_H
#define WH_CODEC_H

#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "wh.h"

#define WH_CT_PROTOBUF "application/x-protobuf"
#define WH_CT_JSON     "application/json"
#define WH_EVENT_ENDPOINTS_MAX 100
#define WH_EVENT_HEADERS_MAX   16
#define WH_CONTENT_TYPE_MAX    128
#define WH_PAYLOAD_DEFAULT_MAX (512 * 1024)
/* "msg_" + 32 hex digits */
#define WH_DELIVERY_ID_LEN     36

typedef struct {
    const char *name;
    const char *value;
} wh_header_kv;

/* A decoded event: a view whose storage belongs to the wh_event_msg or
 * wh_delivery_msg it came from (or to the caller, when encoding). */
typedef struct {
    const char *id;
    const char *app;
    const char *type;
    const char *content_type;   /* never NULL after decoding */
    const uint8_t *payload;
    size_t payload_len;
    int64_t occurred_at_ms;
    int64_t published_at_us;
    size_t n_endpoints;
    const char *const *endpoint_ids;
    size_t n_headers;
    const wh_header_kv *headers;
} wh_event;

/* Why a delivery message exists (webhook.v1.Delivery.Kind). */
typedef enum {
    WH_DELIVERY_NEW = 0,    /* made by the fan-out stage */
    WH_DELIVERY_RETRY = 1,  /* a scheduled retry */
    WH_DELIVERY_REPLAY = 2  /* sent again on request */
} wh_delivery_kind;

typedef struct {
    const char *delivery_id;
    const char *endpoint_id;
    uint32_t attempt;
    wh_delivery_kind kind;
    int64_t created_at_us;
    const char *source_topic;
    int32_t source_partition;
    int64_t source_offset;
    wh_event event;
} wh_delivery;

typedef struct wh_event_msg wh_event_msg;
typedef struct wh_delivery_msg wh_delivery_msg;

/* Decodes and validates one events-topic message. content_type is the
 * message's content-type header or NULL. On WH_ERR, err holds the reason
 * that goes into the dead letter ("invalid JSON at byte 12: ...", "missing
 * field \"type\"", "payload is 600000 bytes, the limit is 524288"). */
int wh_codec_event_decode(const void *buf, size_t len,
                          const char *content_type, size_t payload_max,
                          wh_event_msg **out, char *err,
                          size_t errlen) WH_MUST_CHECK;
const wh_event *wh_codec_event(const wh_event_msg *m);
void wh_codec_event_free(wh_event_msg *m);

/* Checks the rules every event must meet, whatever its encoding. */
int wh_codec_event_validate(const wh_event *ev, size_t payload_max,
                            char *err, size_t errlen) WH_MUST_CHECK;

/* Appends the protobuf encoding of ev to out. */
int wh_codec_event_encode(const wh_event *ev, wh_buf *out, char *err,
                          size_t errlen) WH_MUST_CHECK;

int wh_codec_delivery_encode(const wh_delivery *d, wh_buf *out, char *err,
                             size_t errlen) WH_MUST_CHECK;
int wh_codec_delivery_decode(const void *buf, size_t len,
                             wh_delivery_msg **out, char *err,
                             size_t errlen) WH_MUST_CHECK;
const wh_delivery *wh_codec_delivery(const wh_delivery_msg *m);
void wh_codec_delivery_free(wh_delivery_msg *m);

typedef enum {
    WH_DEAD_UNDECODABLE = 1,
    WH_DEAD_ATTEMPTS_EXHAUSTED = 2,
    WH_DEAD_EXPIRED = 3,
    WH_DEAD_ENDPOINT_GONE = 4,
    WH_DEAD_REJECTED = 5,
    WH_DEAD_ADDRESS_REFUSED = 6,
    WH_DEAD_INSECURE_URL = 7,
} wh_dead_reason;

/* A dead letter keeps at most this many leading bytes of an undecodable
 * message (DeadLetter.raw), with the whole message's length and SHA-256. */
#define WH_DEAD_RAW_PREFIX_MAX (64 * 1024)
/* detail and last_error are cut to at most this many bytes each (whole
 * UTF-8 characters; the note of a bodiless dead letter included). */
#define WH_DEAD_TEXT_MAX       1024
/* The encoding without bodies (omit_bodies) never exceeds this, for any
 * delivery that passed wh_codec_delivery_decode's checks and a source
 * topic within Kafka's 249 bytes. */
#define WH_DEAD_BARE_MAX       (32 * 1024)
#define WH_SHA256_LEN          32

typedef struct {
    wh_dead_reason reason;
    const char *detail;
    const wh_delivery *delivery; /* or NULL */
    const void *raw;             /* undecodable bytes, or NULL */
    size_t raw_len;              /* of raw: the whole message */
    const char *source_topic;
    int32_t source_partition;
    int64_t source_offset;
    uint32_t attempts;
    int32_t last_status_code;
    const char *last_error;
    int64_t dead_at_us;
    /* Encoding: leave out raw and the delivery's event payload, keeping
     * their lengths and SHA-256 and noting it in detail; the fallback
     * when the bounded form cannot be produced. Decoding: the flag read
     * back. */
    bool omit_bodies;
    /* Set by wh_codec_dead_letter_decode (raw and raw_len are then the
     * prefix carried); the encoder ignores them and computes them from
     * raw and delivery. */
    uint64_t raw_total_len;
    bool has_raw_sha256;
    uint8_t raw_sha256[WH_SHA256_LEN];
    uint64_t payload_total_len;
    bool has_payload_sha256;
    uint8_t payload_sha256[WH_SHA256_LEN];
} wh_dead_letter;

typedef struct wh_dead_letter_msg wh_dead_letter_msg;

/*
 * Appends the DeadLetter encoding of dl to out: raw cut to its first
 * WH_DEAD_RAW_PREFIX_MAX bytes, detail and last_error to WH_DEAD_TEXT_MAX
 * bytes of valid UTF-8, and, with omit_bodies, no raw bytes and no event
 * payload at all (at most WH_DEAD_BARE_MAX bytes then). WH_ERR when the
 * encoding exceeds out's max ("... exceeds the buffer limit"; out is then
 * unchanged) or memory ran out.
 */
int wh_codec_dead_letter_encode(const wh_dead_letter *dl, wh_buf *out,
                                char *err, size_t errlen) WH_MUST_CHECK;

/* The number of bytes wh_codec_dead_letter_encode would append for dl
 * (0 when the delivery has more than WH_EVENT_HEADERS_MAX headers). */
size_t wh_codec_dead_letter_size(const wh_dead_letter *dl);

/* Decodes a DeadLetter. The embedded delivery, when present, is checked as
 * wh_codec_delivery_decode checks one. The view wh_codec_dead_letter
 * returns lives as long as *out. */
int wh_codec_dead_letter_decode(const void *buf, size_t len,
                                wh_dead_letter_msg **out, char *err,
                                size_t errlen) WH_MUST_CHECK;
const wh_dead_letter *wh_codec_dead_letter(const wh_dead_letter_msg *m);
void wh_codec_dead_letter_free(wh_dead_letter_msg *m);

/* The delivery id of (app, event, endpoint): "msg_" + 32 hex digits of
 * SHA-256, so the fan-out of a redelivered event yields the same ids and
 * receivers can deduplicate on webhook-id. out must hold
 * WH_DELIVERY_ID_LEN + 1 bytes. */
void wh_codec_delivery_id(const char *app, const char *event_id,
                          const char *endpoint_id, char *out);

/* Validators shared with the CLIs. */
int wh_codec_check_id(const char *what, const char *s, char *err,
                      size_t errlen) WH_MUST_CHECK;
int wh_codec_check_app(const char *s, char *err, size_t errlen) WH_MUST_CHECK;
int wh_codec_check_type(const char *s, char *err,
                        size_t errlen) WH_MUST_CHECK;
int wh_codec_check_endpoint_id(const char *s, char *err,
                               size_t errlen) WH_MUST_CHECK;

#endif
