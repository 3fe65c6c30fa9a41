/*
 * kafka.h - the Kafka adapter: the only module that includes librdkafka.
 *
 * A consumer (one topic, one consumer group, offsets stored by the caller
 * only once work is durable, auto-committed from there) and an idempotent
 * producer with per-message delivery reports, which sends to a partition
 * its caller chose or to its configured partitioner's, and keeps the
 * partition counts that wh_kafka_partition_of maps keys with. Both expose
 * a file descriptor that turns readable when they have something to
 * serve, so one thread can wait on Kafka, HTTP and Postgres together.
 */
#ifndef WH_KAFKA_H
#define WH_KAFKA_H

#include <stdbool.h>

#include "wh.h"

typedef struct {
    const char *brokers;        /* bootstrap.servers */
    const char *client_id;
    const char *extra;          /* "k=v,k=v" more librdkafka properties */
    int64_t session_timeout_ms; /* consumer group session timeout */
    int64_t heartbeat_ms;
    int64_t linger_ms;          /* producer batching delay */
    /* Producer: message.max.bytes, the largest message it sends (0:
     * librdkafka's default of 1,000,000); see wh_kafka_message_max. A
     * message.max.bytes in extra still wins: read the limit that applies
     * back with wh_kafka_producer_message_max. */
    int64_t message_max;
    /* Producer: never time a message out (message.timeout.ms=0), so with
     * idempotence a message is never given up while a later one to the
     * same partition is delivered; sending waits out broker outages. */
    bool keep_order;
    /* Producer: enable.gapless.guarantee: a message given up (a permanent
     * error) makes the producer fail fatally instead of letting later
     * messages to its partition through, so what was delivered is always
     * a prefix of what was produced. The owner then replaces the producer
     * (wh_kafka_producer_fatal tells). */
    bool gapless;
    /* Consumer: called from wh_kafka_consumer_poll each time the consumer
     * reached the end of a partition (every message before next_offset
     * was returned); NULL: not wanted. */
    void (*on_eof)(void *opaque, int32_t partition, int64_t next_offset);
    void *eof_opaque;
} wh_kafka_conf;

/* A consumed message. Owned by the caller once polled: release it with
 * wh_kmsg_destroy. Accessors never fail. */
typedef struct wh_kmsg wh_kmsg;
const char *wh_kmsg_topic(const wh_kmsg *m);
int32_t wh_kmsg_partition(const wh_kmsg *m);
int64_t wh_kmsg_offset(const wh_kmsg *m);
const void *wh_kmsg_value(const wh_kmsg *m, size_t *len);
const void *wh_kmsg_key(const wh_kmsg *m, size_t *len);
/* Last header called name: WH_OK with *val and *len set, else WH_DECLINED. */
int wh_kmsg_header(const wh_kmsg *m, const char *name, const void **val,
                   size_t *len);
void wh_kmsg_destroy(wh_kmsg *m);

/* Called from wh_kafka_consumer_poll when partitions are assigned
 * (assigned = 1) or revoked/lost (0). On revoke, the callee must finish
 * or abandon its work for those partitions and may call
 * wh_kafka_consumer_store / wh_kafka_consumer_commit before returning. */
typedef void wh_kafka_rebalance_fn(void *opaque, int assigned,
                                   const int32_t *partitions, size_t n);

typedef struct wh_kafka_consumer wh_kafka_consumer;

int wh_kafka_consumer_new(const wh_kafka_conf *conf, const char *group,
                          const char *topic, wh_kafka_rebalance_fn *cb,
                          void *opaque, wh_kafka_consumer **out, char *err,
                          size_t errlen) WH_MUST_CHECK;
/* Readable when poll has something; drain with wh_kafka_fd_drain. */
int wh_kafka_consumer_fd(wh_kafka_consumer *c);
/* Next message, or NULL when none arrived within timeout_ms. Consumer
 * errors are logged. An offset reset caused by an error (the committed
 * position no longer exists: truncation or retention) is logged as DATA
 * LOSS and counted (wh_kafka_data_loss_count). */
wh_kmsg *wh_kafka_consumer_poll(wh_kafka_consumer *c, int timeout_ms);
/* Marks everything before next_offset on partition as done; it is
 * committed with the next automatic or explicit commit. */
int wh_kafka_consumer_store(wh_kafka_consumer *c, int32_t partition,
                            int64_t next_offset);
/* Synchronously commits the stored offsets (during wh_kafka_consumer_close
 * only requests it; the close waits for it). WH_AGAIN if nothing to do. */
int wh_kafka_consumer_commit(wh_kafka_consumer *c, char *err,
                             size_t errlen) WH_MUST_CHECK;
/* Asks for a commit of the stored offsets now, without waiting for it
 * (the automatic one runs every 250 ms): for a stop, so what is stored
 * reaches the group before a rebalance can refuse the final commit. */
void wh_kafka_consumer_commit_soon(wh_kafka_consumer *c);
/* Makes an assigned partition's consumption start again at offset (also
 * while paused; messages fetched before are not returned). Asynchronous:
 * WH_ERR only when the seek could not be asked for. */
int wh_kafka_consumer_seek(wh_kafka_consumer *c, int32_t partition,
                           int64_t offset, char *err,
                           size_t errlen) WH_MUST_CHECK;
/* Stops (pause = 1) or resumes fetching for every assigned partition. */
void wh_kafka_consumer_pause_all(wh_kafka_consumer *c, int pause);
/* Leaves the group: the rebalance callback sees the final revoke and the
 * stored offsets are committed. Gives up after timeout_ms when Kafka does
 * not answer (the group then notices the member is gone after its session
 * timeout). Poll returns nothing afterwards. Messages still held by the
 * caller stay valid until destroy. */
void wh_kafka_consumer_close(wh_kafka_consumer *c, int timeout_ms);
/* Closes if needed and frees. Every wh_kmsg of this consumer must have
 * been destroyed first (librdkafka waits for them). After a close that
 * gave up, librdkafka's own stop waits for the group session to time out:
 * it is waited for at most a second, then left to finish on a thread of
 * its own (for callers that are exiting). */
void wh_kafka_consumer_destroy(wh_kafka_consumer *c);

/* Messages lost to offset resets or truncation since start. */
uint64_t wh_kafka_data_loss_count(void);

/* What a message carrying an event may add to its payload of at most
 * WEBHOOK_PAYLOAD_MAX bytes: a Delivery's other fields (the codec's limits
 * keep them under 64 KiB: ids, type, 100 endpoint ids, 16 headers of up
 * to 1 KiB), a dead letter's texts and hashes around such a Delivery, or
 * an undecodable event's dead letter (a raw prefix of at most 64 KiB plus
 * a few KiB), and Kafka's record framing. */
#define WH_KAFKA_HEADROOM (128 * 1024)
/* Room for a record's framing, key and headers within message.max.bytes:
 * a value may be up to message.max.bytes minus this. */
#define WH_KAFKA_FRAMING_MAX 4096

/* The producer limit (message.max.bytes) for events of up to payload_max
 * bytes: payload_max + WH_KAFKA_HEADROOM. */
int64_t wh_kafka_message_max(int64_t payload_max);

/* Delivery report: ok = 1 when the broker acknowledged msg_opaque's
 * message, else errstr says why it was given up on;
 * wh_kafka_error_too_large(errstr) tells a message refused for its size
 * (by the broker or by the producer itself) from other failures. */
typedef void wh_kafka_dr_fn(void *opaque, void *msg_opaque, int ok,
                            const char *errstr);

typedef struct wh_kafka_producer wh_kafka_producer;

/* The partition argument of wh_kafka_producer_send that leaves the choice
 * to the producer's configured partitioner (librdkafka's
 * RD_KAFKA_PARTITION_UA; KAFKA_EXTRA may set `partitioner`). */
#define WH_KAFKA_PARTITION_ANY (-1)
/* Most topics one producer keeps a partition count for (and warms). */
#define WH_KAFKA_TOPICS_MAX 4

/* The partition of a topic with partition_cnt (>= 1) partitions that key
 * maps to: librdkafka's default mapping (partitioner consistent_random),
 * CRC32 of the key modulo partition_cnt, whatever `partitioner` a
 * producer is configured with. Deterministic and needs no broker. An
 * empty key maps to partition 0 (consistent_random would pick any). */
int32_t wh_kafka_partition_of(const void *key, size_t klen,
                              int32_t partition_cnt);
/* A lane's partition: preferred when the topic has it (0 <= preferred <
 * partition_cnt), else the one key maps to (wh_kafka_partition_of). For
 * retries and replays, which go to the partition their lane waits on. */
int32_t wh_kafka_partition_or_key(int32_t preferred, const void *key,
                                  size_t klen, int32_t partition_cnt);

/* An idempotent producer (acks=all). dr may be NULL. */
int wh_kafka_producer_new(const wh_kafka_conf *conf, wh_kafka_dr_fn *dr,
                          void *opaque, wh_kafka_producer **out, char *err,
                          size_t errlen) WH_MUST_CHECK;
/* Queues a copy of the message to partition of topic, or, with
 * WH_KAFKA_PARTITION_ANY, to the one the configured partitioner picks for
 * key. headers is NULL or a NULL-terminated name, value, name, value, ...
 * list. WH_AGAIN when the local queue is full (serve reports with
 * wh_kafka_producer_poll and try again); WH_DECLINED when the message is
 * larger than the producer's message.max.bytes (it never will be sent);
 * WH_ERR otherwise (a partition the topic does not have among them: the
 * topic's partition count is then looked up again). */
int wh_kafka_producer_send(wh_kafka_producer *p, const char *topic,
                           int32_t partition, const void *key, size_t klen,
                           const void *value, size_t vlen,
                           const char *const *headers, void *msg_opaque,
                           char *err, size_t errlen) WH_MUST_CHECK;
/*
 * The number of partitions of topic, as this producer last read it from
 * the cluster's metadata. The first call for a topic starts keeping it:
 * a thread of the producer's own looks it up (rd_kafka_metadata, at most
 * a second per request), again every 30 s, a second after a failed
 * lookup, and at once when a send or a delivery report names a partition
 * the topic does not have. Never blocks. WH_OK with *partition_cnt set;
 * WH_AGAIN while the count is not known yet (err says why: the first
 * lookup is under way, or what the last one failed with); WH_ERR when it
 * cannot be kept (more than WH_KAFKA_TOPICS_MAX topics, no thread).
 */
int wh_kafka_producer_partitions(wh_kafka_producer *p, const char *topic,
                                 int32_t *partition_cnt, char *err,
                                 size_t errlen) WH_MUST_CHECK;
/* The partition of topic that key maps to (wh_kafka_partition_of with
 * the count of wh_kafka_producer_partitions), for a send that must not
 * depend on the configured partitioner. Returns as
 * wh_kafka_producer_partitions. */
int wh_kafka_producer_partition(wh_kafka_producer *p, const char *topic,
                                const void *key, size_t klen,
                                int32_t *partition, char *err,
                                size_t errlen) WH_MUST_CHECK;
/* Looks up topic's partition leaders now, in the background, so the first
 * message to it is not held back while they are found (without this the
 * first message after start-up waits hundreds of milliseconds). Up to
 * WH_KAFKA_TOPICS_MAX topics per producer, counting those
 * wh_kafka_producer_partitions keeps. */
void wh_kafka_producer_warm(wh_kafka_producer *p, const char *topic);
int wh_kafka_producer_fd(wh_kafka_producer *p);
/* Serves delivery reports (calls dr). */
void wh_kafka_producer_poll(wh_kafka_producer *p, int timeout_ms);
/* The message.max.bytes that applies (after KAFKA_EXTRA), or -1 when it
 * cannot be read. */
int64_t wh_kafka_producer_message_max(wh_kafka_producer *p);
/* True when a delivery report's errstr (or a send's err) says the message
 * was refused for its size: librdkafka's MSG_SIZE_TOO_LARGE (locally or
 * from the broker) or the broker's RECORD_LIST_TOO_LARGE. */
bool wh_kafka_error_too_large(const char *errstr);
/* True when a delivery report's errstr says the message failed only
 * because of another one: the producer failed fatally, or the message was
 * purged (queued or in flight) before it could be sent. */
bool wh_kafka_error_consequence(const char *errstr);
/* Messages not yet acknowledged. */
int wh_kafka_producer_outq(wh_kafka_producer *p);
/* Gives up on every message not yet acknowledged without waiting: each
 * gets a failed delivery report, served by wh_kafka_producer_poll. */
void wh_kafka_producer_purge_async(wh_kafka_producer *p);
/* WH_ERR, with librdkafka's reason in err, once the producer has failed
 * fatally (rd_kafka_fatal_error: e.g. the idempotent producer cannot keep
 * its ordering guarantee); it delivers nothing more: its owner replaces
 * it with a new one or the process restarts. WH_OK while it is healthy. */
int wh_kafka_producer_fatal(wh_kafka_producer *p, char *err,
                            size_t errlen) WH_MUST_CHECK;
/* Waits up to timeout_ms for every queued message to be acknowledged.
 * WH_ERR when some remain. */
int wh_kafka_producer_flush(wh_kafka_producer *p, int timeout_ms,
                            char *err, size_t errlen) WH_MUST_CHECK;
/* Gives up on every message not yet acknowledged: each gets a failed
 * delivery report, served by this call (waiting up to a second for those
 * in flight), so no report arrives after the callers' state is freed.
 * For shutdown, once flushing ran out of time. */
void wh_kafka_producer_purge(wh_kafka_producer *p);
void wh_kafka_producer_destroy(wh_kafka_producer *p);

/* Empties the wake-up pipe behind a consumer or producer fd. */
void wh_kafka_fd_drain(int fd);

#endif
