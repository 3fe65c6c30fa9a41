/*
 * kafka.c - Kafka adapter over librdkafka (see kafka.h). Used by the
 * worker, the producer API and the scheduler from their main thread;
 * librdkafka's own threads only call back into log_cb (thread-safe) and
 * wake the caller's loop through a pipe. A producer asked for partition
 * counts runs one thread of its own (counts_main) that reads them from
 * the cluster's metadata; it shares only the topic table, under the
 * producer's mutex, with the caller's thread. Consumer and producer stay
 * in this one file, past the usual size of a module, because it is the
 * one file that includes librdkafka (docs/architecture.md).
 */
#include "kafka.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

struct wh_kafka_consumer {
    rd_kafka_t *rk;
    rd_kafka_queue_t *queue;
    char *topic;
    wh_kafka_rebalance_fn *cb;
    void *opaque;
    void (*on_eof)(void *opaque, int32_t partition, int64_t next_offset);
    void *eof_opaque;
    int pipe[2];
    int closed;
    int unclean; /* close gave up: destroy must not try again */
    bool assigned_once; /* a rebalance assigned partitions at least once */
};

_Static_assert(WH_KAFKA_PARTITION_ANY == RD_KAFKA_PARTITION_UA,
               "WH_KAFKA_PARTITION_ANY is librdkafka's unassigned partition");

/* Partition counts: how long a lookup may take, how often a count is read
 * again, and how soon after a failed lookup. */
#define COUNT_TIMEOUT_MS 1000
#define COUNT_REFRESH_US (30 * 1000 * 1000)
#define COUNT_RETRY_US (1000 * 1000)
/* A run of failed lookups is logged at its start and every this many. */
#define COUNT_LOG_EVERY 60

/* A topic the producer holds a handle for (wh_kafka_producer_warm, or
 * wh_kafka_producer_partitions). Fields below rkt are the producer's
 * mutex's. */
typedef struct {
    char *name;
    rd_kafka_topic_t *rkt; /* held until the producer is destroyed */
    bool counted;          /* its partition count is kept */
    int32_t count;         /* partitions; 0 while not known */
    int64_t due_us;        /* next lookup (wh_mono_us); 0: at once */
    bool busy;             /* a lookup is running on the thread */
    bool again;            /* look up again once it ended */
    int failures;          /* lookups failed in a row */
    char why[WH_ERRLEN];   /* the last failure */
} ktopic;

struct wh_kafka_producer {
    rd_kafka_t *rk;
    rd_kafka_queue_t *queue;
    wh_kafka_dr_fn *dr;
    void *opaque;
    int pipe[2];
    pthread_mutex_t mu;
    pthread_cond_t cv;       /* wakes counts_main */
    bool thread_started;
    bool stopping;           /* counts_main is to return */
    pthread_t thread;
    ktopic topics[WH_KAFKA_TOPICS_MAX];
    int ntopics;
};

static atomic_uint_fast64_t data_loss;

uint64_t wh_kafka_data_loss_count(void) { return atomic_load(&data_loss); }

const char *wh_kmsg_topic(const wh_kmsg *m)
{
    return rd_kafka_topic_name(((const rd_kafka_message_t *)m)->rkt);
}

int32_t wh_kmsg_partition(const wh_kmsg *m)
{
    return ((const rd_kafka_message_t *)m)->partition;
}

int64_t wh_kmsg_offset(const wh_kmsg *m)
{
    return ((const rd_kafka_message_t *)m)->offset;
}

const void *wh_kmsg_value(const wh_kmsg *m, size_t *len)
{
    const rd_kafka_message_t *rm = (const rd_kafka_message_t *)m;
    *len = rm->len;
    return rm->payload;
}

const void *wh_kmsg_key(const wh_kmsg *m, size_t *len)
{
    const rd_kafka_message_t *rm = (const rd_kafka_message_t *)m;
    *len = rm->key_len;
    return rm->key;
}

int wh_kmsg_header(const wh_kmsg *m, const char *name, const void **val,
                   size_t *len)
{
    rd_kafka_headers_t *hdrs;
    if (rd_kafka_message_headers((const rd_kafka_message_t *)m, &hdrs))
        return WH_DECLINED;
    if (rd_kafka_header_get_last(hdrs, name, val, len))
        return WH_DECLINED;
    return WH_OK;
}

void wh_kmsg_destroy(wh_kmsg *m)
{
    if (m)
        rd_kafka_message_destroy((rd_kafka_message_t *)m);
}

static void log_cb(const rd_kafka_t *rk, int level, const char *fac,
                   const char *buf)
{
    (void)rk;
    /* librdkafka logs an offset reset caused by an error (offset out of
     * range: the data was truncated or expired before it was consumed) as
     * a warning; resets of new groups are only debug-logged. */
    if (level <= 4 && strcmp(fac, "OFFSET") == 0 &&
        strstr(buf, "offset reset")) {
        atomic_fetch_add(&data_loss, 1);
        WH_ERROR("DATA LOSS: kafka %s", buf);
        return;
    }
    /* set on purpose (the fan-out's producer, kafka.h): not a warning */
    if (strcmp(fac, "CONFWARN") == 0 &&
        strstr(buf, "enable.gapless.guarantee is experimental")) {
        WH_DEBUG("kafka %s: %s", fac, buf);
        return;
    }
    if (level <= 3)
        WH_ERROR("kafka %s: %s", fac, buf);
    else if (level <= 4)
        WH_WARN("kafka %s: %s", fac, buf);
    else
        WH_DEBUG("kafka %s: %s", fac, buf);
}

static int conf_set(rd_kafka_conf_t *conf, const char *k, const char *v,
                    char *err, size_t errlen)
{
    char e[256];
    if (rd_kafka_conf_set(conf, k, v, e, sizeof(e)) != RD_KAFKA_CONF_OK)
        return wh_errf(err, errlen, "Kafka setting %s: %s", k, e);
    return WH_OK;
}

/* Applies "k=v,k=v" pass-through properties. */
static int conf_extra(rd_kafka_conf_t *conf, const char *extra, char *err,
                      size_t errlen)
{
    if (!extra || !*extra)
        return WH_OK;
    char *copy = strdup(extra), *save = NULL;
    if (!copy)
        return wh_errf(err, errlen, "out of memory");
    int rc = WH_OK;
    for (char *kv = strtok_r(copy, ",", &save); kv && rc == WH_OK;
         kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq) {
            rc = wh_errf(err, errlen,
                         "KAFKA_EXTRA: '%s' is not key=value", kv);
            break;
        }
        *eq = '\0';
        rc = conf_set(conf, kv, eq + 1, err, errlen);
    }
    free(copy);
    return rc;
}

static rd_kafka_conf_t *base_conf(const wh_kafka_conf *c, char *err,
                                  size_t errlen)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char num[32];
    if (!c->brokers || !*c->brokers) {
        wh_errf(err, errlen, "no Kafka brokers configured (set KAFKA_BROKERS)");
        goto fail;
    }
    if (conf_set(conf, "bootstrap.servers", c->brokers, err, errlen) ||
        conf_set(conf, "client.id", c->client_id ? c->client_id : "webhook",
                 err, errlen))
        goto fail;
    if (c->session_timeout_ms > 0) {
        snprintf(num, sizeof(num), "%lld", (long long)c->session_timeout_ms);
        if (conf_set(conf, "session.timeout.ms", num, err, errlen))
            goto fail;
    }
    if (c->heartbeat_ms > 0) {
        snprintf(num, sizeof(num), "%lld", (long long)c->heartbeat_ms);
        if (conf_set(conf, "heartbeat.interval.ms", num, err, errlen))
            goto fail;
    }
    rd_kafka_conf_set_log_cb(conf, log_cb);
    return conf;
fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

static int make_pipe(int p[2], char *err, size_t errlen)
{
    if (pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0)
        return wh_errf(err, errlen, "pipe2() failed: %s", strerror(errno));
    return WH_OK;
}

void wh_kafka_fd_drain(int fd)
{
    char buf[256];
    while (read(fd, buf, sizeof(buf)) > 0) {
    }
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts,
                         void *opaque)
{
    wh_kafka_consumer *c = opaque;
    int cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    int32_t stack_ids[256];
    int32_t *ids = stack_ids;
    if (parts->cnt > (int)WH_ARRAY_LEN(stack_ids)) {
        ids = calloc((size_t)parts->cnt, sizeof(*ids));
        if (!ids)
            abort(); /* cannot track partitions; restart is the safe path */
    }
    for (int i = 0; i < parts->cnt; i++)
        ids[i] = parts->elems[i].partition;

    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        rd_kafka_error_t *e = NULL;
        c->assigned_once = true;
        if (cooperative)
            e = rd_kafka_incremental_assign(rk, parts);
        else
            rd_kafka_assign(rk, parts);
        if (e) {
            WH_ERROR("incremental_assign() failed: %s",
                     rd_kafka_error_string(e));
            rd_kafka_error_destroy(e);
        }
        if (c->cb)
            c->cb(c->opaque, 1, ids, (size_t)parts->cnt);
    } else {
        if (c->cb)
            c->cb(c->opaque, 0, ids, (size_t)parts->cnt);
        if (cooperative) {
            rd_kafka_error_t *e = rd_kafka_incremental_unassign(rk, parts);
            if (e)
                rd_kafka_error_destroy(e);
        } else {
            rd_kafka_assign(rk, NULL);
        }
    }
    if (ids != stack_ids)
        free(ids);
}

int wh_kafka_consumer_new(const wh_kafka_conf *kc, const char *group,
                          const char *topic, wh_kafka_rebalance_fn *cb,
                          void *opaque, wh_kafka_consumer **out, char *err,
                          size_t errlen)
{
    char e[512];
    *out = NULL;
    wh_kafka_consumer *c = calloc(1, sizeof(*c));
    if (!c)
        return wh_errf(err, errlen, "out of memory");
    c->pipe[0] = c->pipe[1] = -1;
    c->cb = cb;
    c->opaque = opaque;
    c->on_eof = kc->on_eof;
    c->eof_opaque = kc->eof_opaque;
    rd_kafka_conf_t *conf = base_conf(kc, err, errlen);
    if (!conf)
        goto fail;
    if (conf_set(conf, "group.id", group, err, errlen) ||
        conf_set(conf, "enable.auto.commit", "true", err, errlen) ||
        conf_set(conf, "auto.commit.interval.ms", "250", err, errlen) ||
        conf_set(conf, "enable.auto.offset.store", "false", err, errlen) ||
        conf_set(conf, "auto.offset.reset", "earliest", err, errlen) ||
        conf_set(conf, "partition.assignment.strategy", "cooperative-sticky",
                 err, errlen) ||
        conf_set(conf, "fetch.wait.max.ms", "50", err, errlen) ||
        conf_set(conf, "enable.partition.eof", kc->on_eof ? "true" : "false",
                 err, errlen) ||
        conf_extra(conf, kc->extra, err, errlen)) {
        rd_kafka_conf_destroy(conf);
        goto fail;
    }
    rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
    rd_kafka_conf_set_opaque(conf, c);
    c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, e, sizeof(e));
    if (!c->rk) {
        rd_kafka_conf_destroy(conf);
        wh_errf(err, errlen, "rd_kafka_new() failed: %s", e);
        goto fail;
    }
    rd_kafka_poll_set_consumer(c->rk);
    c->queue = rd_kafka_queue_get_consumer(c->rk);
    if (!(c->topic = strdup(topic))) {
        wh_errf(err, errlen, "out of memory");
        goto fail;
    }
    if (make_pipe(c->pipe, err, errlen))
        goto fail;
    rd_kafka_queue_io_event_enable(c->queue, c->pipe[1], "1", 1);
    rd_kafka_topic_partition_list_t *topics =
        rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t rerr = rd_kafka_subscribe(c->rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (rerr) {
        wh_errf(err, errlen, "subscribe to %s failed: %s", topic,
                rd_kafka_err2str(rerr));
        goto fail;
    }
    *out = c;
    return WH_OK;
fail:
    if (c->queue)
        rd_kafka_queue_destroy(c->queue);
    if (c->rk)
        rd_kafka_destroy(c->rk);
    if (c->pipe[0] >= 0)
        close(c->pipe[0]);
    if (c->pipe[1] >= 0)
        close(c->pipe[1]);
    free(c->topic);
    free(c);
    return WH_ERR;
}

int wh_kafka_consumer_fd(wh_kafka_consumer *c) { return c->pipe[0]; }

wh_kmsg *wh_kafka_consumer_poll(wh_kafka_consumer *c, int timeout_ms)
{
    for (;;) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, timeout_ms);
        if (!m)
            return NULL;
        if (!m->err)
            return (wh_kmsg *)m;
        if (m->err == RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET) {
            atomic_fetch_add(&data_loss, 1);
            WH_ERROR("DATA LOSS: %s [%d]: offset reset: %s",
                     m->rkt ? rd_kafka_topic_name(m->rkt) : c->topic,
                     (int)m->partition, rd_kafka_message_errstr(m));
        } else if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (c->on_eof)
                c->on_eof(c->eof_opaque, m->partition, m->offset);
        } else {
            WH_WARN("consumer error on %s: %s", c->topic,
                    rd_kafka_message_errstr(m));
        }
        rd_kafka_message_destroy(m);
        timeout_ms = 0;
    }
}

int wh_kafka_consumer_store(wh_kafka_consumer *c, int32_t partition,
                            int64_t next_offset)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, c->topic, partition)->offset =
        next_offset;
    rd_kafka_resp_err_t e = rd_kafka_offsets_store(c->rk, l);
    if (!e && l->elems[0].err)
        e = l->elems[0].err;
    rd_kafka_topic_partition_list_destroy(l);
    if (e) {
        WH_DEBUG("offset store %s [%d] @ %lld: %s", c->topic, (int)partition,
                 (long long)next_offset, rd_kafka_err2str(e));
        return WH_ERR;
    }
    return WH_OK;
}

int wh_kafka_consumer_commit(wh_kafka_consumer *c, char *err, size_t errlen)
{
    /* Within wh_kafka_consumer_close (the final revoke) the commit is only
     * requested: the close waits for it within its own bound, where a
     * synchronous one waited seconds more for a coordinator that is gone. */
    rd_kafka_resp_err_t e = rd_kafka_commit(c->rk, NULL, c->closed);
    if (e == RD_KAFKA_RESP_ERR__NO_OFFSET)
        return WH_AGAIN;
    if (e)
        return wh_errf(err, errlen, "commit on %s failed: %s", c->topic,
                       rd_kafka_err2str(e));
    return WH_OK;
}

void wh_kafka_consumer_commit_soon(wh_kafka_consumer *c)
{
    if (c && !c->closed)
        (void)rd_kafka_commit(c->rk, NULL, 1); /* nothing stored: fine */
}

int wh_kafka_consumer_seek(wh_kafka_consumer *c, int32_t partition,
                           int64_t offset, char *err, size_t errlen)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, c->topic, partition)->offset = offset;
    rd_kafka_error_t *e = rd_kafka_seek_partitions(c->rk, l, 0);
    int rc = WH_OK;
    if (e) {
        rc = wh_errf(err, errlen, "seek %s [%d] to %lld: %s", c->topic,
                     (int)partition, (long long)offset,
                     rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    } else if (l->elems[0].err &&
               l->elems[0].err != RD_KAFKA_RESP_ERR__IN_PROGRESS) {
        rc = wh_errf(err, errlen, "seek %s [%d] to %lld: %s", c->topic,
                     (int)partition, (long long)offset,
                     rd_kafka_err2str(l->elems[0].err));
    }
    rd_kafka_topic_partition_list_destroy(l);
    return rc;
}

void wh_kafka_consumer_pause_all(wh_kafka_consumer *c, int pause)
{
    rd_kafka_topic_partition_list_t *parts = NULL;
    if (rd_kafka_assignment(c->rk, &parts) || !parts)
        return;
    if (pause)
        rd_kafka_pause_partitions(c->rk, parts);
    else
        rd_kafka_resume_partitions(c->rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
}

/* Whether any partition is still assigned to the consumer. */
static bool consumer_assigned(rd_kafka_t *rk)
{
    rd_kafka_topic_partition_list_t *l = NULL;
    if (rd_kafka_assignment(rk, &l) || !l)
        return false;
    bool any = l->cnt > 0;
    rd_kafka_topic_partition_list_destroy(l);
    return any;
}

void wh_kafka_consumer_close(wh_kafka_consumer *c, int timeout_ms)
{
    if (!c || c->closed)
        return;
    c->closed = 1;
    int64_t deadline = wh_mono_us() + (int64_t)timeout_ms * 1000;
    /* Leave the group first and serve the final revoke through the usual
     * poll: a rebalance served during rd_kafka_consumer_close_queue can
     * hang for good in librdkafka before 2.4 (an incremental unassign
     * that never returns). Messages polled meanwhile are dropped; their
     * offsets were never stored. A consumer still in its first join goes
     * straight to the close: an assignment arriving while it unsubscribes
     * is a path librdkafka 2.0 does not survive either. */
    if (c->assigned_once && !rd_kafka_unsubscribe(c->rk)) {
        while (consumer_assigned(c->rk) && wh_mono_us() < deadline) {
            rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, 50);
            if (m)
                rd_kafka_message_destroy(m);
        }
    }
    rd_kafka_queue_t *q = rd_kafka_queue_new(c->rk);
    rd_kafka_error_t *e = rd_kafka_consumer_close_queue(c->rk, q);
    if (e) {
        WH_WARN("consumer close on %s: %s", c->topic,
                rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
        c->unclean = 1;
    } else {
        if (deadline < wh_mono_us() + 100 * 1000)
            deadline = wh_mono_us() + 100 * 1000; /* a chance to leave */
        while (!rd_kafka_consumer_closed(c->rk)) {
            if (wh_mono_us() >= deadline) {
                WH_WARN("consumer of %s did not leave its group within %d "
                        "ms (Kafka unreachable?); giving up", c->topic,
                        timeout_ms);
                c->unclean = 1;
                break;
            }
            /* The consumer's queue is forwarded here, so messages fetched
             * before the close arrive too: polled as events (a callback
             * poll aborts on them) and dropped, their offsets were never
             * stored. The final revoke is served through rebalance_cb,
             * as a callback or, when returned as an event, here. */
            rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 100);
            if (ev && rd_kafka_event_type(ev) == RD_KAFKA_EVENT_REBALANCE)
                rebalance_cb(c->rk, rd_kafka_event_error(ev),
                             (rd_kafka_topic_partition_list_t *)
                                 rd_kafka_event_topic_partition_list(ev),
                             c);
            if (ev)
                rd_kafka_event_destroy(ev);
        }
    }
    rd_kafka_queue_destroy(q);
}

static void consumer_free(wh_kafka_consumer *c)
{
    close(c->pipe[0]);
    close(c->pipe[1]);
    free(c->topic);
    free(c);
}

/* How long destroy waits for librdkafka after a close that gave up. */
#define UNCLEAN_DESTROY_WAIT_MS 1000

/* An unclean destroy running on its own thread (see below). */
typedef struct {
    wh_kafka_consumer *c;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done, abandoned;
} unclean_destroy;

static void unclean_destroy_free(unclean_destroy *u)
{
    consumer_free(u->c);
    pthread_cond_destroy(&u->cv);
    pthread_mutex_destroy(&u->mu);
    free(u);
}

static void *unclean_destroy_main(void *arg)
{
    unclean_destroy *u = arg;
    rd_kafka_destroy_flags(u->c->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    pthread_mutex_lock(&u->mu);
    u->done = true;
    bool abandoned = u->abandoned;
    pthread_cond_signal(&u->cv);
    pthread_mutex_unlock(&u->mu);
    if (abandoned)
        unclean_destroy_free(u);
    return NULL;
}

void wh_kafka_consumer_destroy(wh_kafka_consumer *c)
{
    if (!c)
        return;
    wh_kafka_consumer_close(c, 10000);
    rd_kafka_queue_destroy(c->queue);
    if (!c->unclean) {
        rd_kafka_destroy(c->rk);
        consumer_free(c);
        return;
    }
    /* The close gave up (Kafka unreachable): librdkafka's destroy then
     * waits for the group session to time out (KAFKA_SESSION_TIMEOUT,
     * 45 s by default). It runs on a thread of its own and is waited for
     * UNCLEAN_DESTROY_WAIT_MS; past that it is left to finish (and free
     * the consumer) while the caller, which is shutting down, goes on. */
    unclean_destroy *u = calloc(1, sizeof(*u));
    pthread_t th;
    if (!u || pthread_mutex_init(&u->mu, NULL) != 0) {
        free(u);
        rd_kafka_destroy_flags(c->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
        consumer_free(c);
        return;
    }
    u->c = c;
    pthread_cond_init(&u->cv, NULL);
    if (pthread_create(&th, NULL, unclean_destroy_main, u) != 0) {
        unclean_destroy_main(u);
        unclean_destroy_free(u);
        return;
    }
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += UNCLEAN_DESTROY_WAIT_MS / 1000;
    until.tv_nsec += (long)(UNCLEAN_DESTROY_WAIT_MS % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&u->mu);
    while (!u->done &&
           pthread_cond_timedwait(&u->cv, &u->mu, &until) == 0)
        ;
    bool done = u->done;
    if (!done) {
        /* c is the thread's from here on */
        WH_WARN("consumer of %s: Kafka's client is still stopping after %d "
                "ms; not waiting for it", c->topic, UNCLEAN_DESTROY_WAIT_MS);
        u->abandoned = true;
    }
    pthread_mutex_unlock(&u->mu);
    if (done) {
        pthread_join(th, NULL);
        unclean_destroy_free(u);
    } else {
        pthread_detach(th);
    }
}

/* ---- producer: partition counts ----------------------------------------- */

int32_t wh_kafka_partition_of(const void *key, size_t klen,
                              int32_t partition_cnt)
{
    assert(partition_cnt >= 1);
    /* librdkafka's consistent partitioner reads only the key and the
     * count (CRC32 of the key modulo the count); consistent_random, the
     * default, uses it for every non-empty key. */
    return rd_kafka_msg_partitioner_consistent(NULL, key, klen,
                                               partition_cnt, NULL, NULL);
}

int32_t wh_kafka_partition_or_key(int32_t preferred, const void *key,
                                  size_t klen, int32_t partition_cnt)
{
    if (preferred >= 0 && preferred < partition_cnt)
        return preferred;
    return wh_kafka_partition_of(key, klen, partition_cnt);
}

/* The entry for topic, or NULL. Under p->mu. */
static ktopic *topic_find(wh_kafka_producer *p, const char *topic)
{
    for (int i = 0; i < p->ntopics; i++)
        if (strcmp(p->topics[i].name, topic) == 0)
            return &p->topics[i];
    return NULL;
}

/* The entry for topic, added with its handle when new; NULL when the
 * table is full or out of memory. Under p->mu. */
static ktopic *topic_get(wh_kafka_producer *p, const char *topic)
{
    ktopic *t = topic_find(p, topic);
    if (t || p->ntopics >= WH_KAFKA_TOPICS_MAX)
        return t;
    t = &p->topics[p->ntopics];
    memset(t, 0, sizeof(*t));
    if (!(t->name = strdup(topic)))
        return NULL;
    /* a new topic handle asks the cluster for the topic's partition
     * leaders in the background */
    if (!(t->rkt = rd_kafka_topic_new(p->rk, topic, NULL))) {
        free(t->name);
        t->name = NULL;
        return NULL;
    }
    p->ntopics++;
    return t;
}

/* Asks for topic's count to be read again at once (a send or a report
 * named a partition it does not have). */
static void count_again(wh_kafka_producer *p, const char *topic)
{
    pthread_mutex_lock(&p->mu);
    ktopic *t = topic_find(p, topic);
    if (t && t->counted) {
        if (t->busy)
            t->again = true;
        else
            t->due_us = 0;
        pthread_cond_signal(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
}

/* Reads rkt's partition count from the cluster (on counts_main). */
static int read_count(rd_kafka_t *rk, rd_kafka_topic_t *rkt, int32_t *count,
                      char *err, size_t errlen)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, rkt, &md,
                                              COUNT_TIMEOUT_MS);
    if (e)
        return wh_errf(err, errlen, "metadata request failed: %s",
                       rd_kafka_err2str(e));
    int rc = WH_OK;
    const char *name = rd_kafka_topic_name(rkt);
    const struct rd_kafka_metadata_topic *mt = NULL;
    for (int i = 0; i < md->topic_cnt && !mt; i++)
        if (strcmp(md->topics[i].topic, name) == 0)
            mt = &md->topics[i];
    if (!mt)
        rc = wh_errf(err, errlen, "the metadata does not list the topic");
    else if (mt->err)
        rc = wh_errf(err, errlen, "%s", rd_kafka_err2str(mt->err));
    else if (mt->partition_cnt < 1)
        rc = wh_errf(err, errlen, "the topic has no partitions");
    else
        *count = mt->partition_cnt;
    rd_kafka_metadata_destroy(md);
    return rc;
}

/* Notes the outcome of a lookup of t's count. Under p->mu. */
static void count_done(ktopic *t, int rc, int32_t count, const char *why)
{
    int64_t now = wh_mono_us();
    t->busy = false;
    if (rc == WH_OK) {
        if (t->failures > 0 && t->count > 0)
            WH_INFO("Kafka topic %s: partition count read again after %d "
                    "failed lookups", t->name, t->failures);
        if (t->count > 0 && count != t->count)
            WH_WARN("Kafka topic %s now has %d partitions (had %d): keys "
                    "map to other partitions from here on", t->name,
                    (int)count, (int)t->count);
        else if (t->count == 0)
            WH_INFO("Kafka topic %s has %d partitions", t->name, (int)count);
        t->count = count;
        t->failures = 0;
        t->why[0] = '\0';
        t->due_us = now + COUNT_REFRESH_US;
    } else {
        if (t->failures++ % COUNT_LOG_EVERY == 0)
            WH_WARN("Kafka topic %s: cannot read its partition count: %s%s",
                    t->name, why,
                    t->count > 0 ? " (the count read before is kept)"
                                 : " (sends that need it wait)");
        wh_strlcpy(t->why, why, sizeof(t->why));
        t->due_us = now + COUNT_RETRY_US;
    }
    if (t->again) {
        t->again = false;
        t->due_us = 0;
    }
}

/* The producer's counting thread: looks up the counted topics' partition
 * counts when they are due, one at a time, outside the mutex. */
static void *counts_main(void *arg)
{
    wh_kafka_producer *p = arg;
    char why[WH_ERRLEN];
    pthread_mutex_lock(&p->mu);
    while (!p->stopping) {
        int64_t now = wh_mono_us(), next_us = INT64_MAX;
        ktopic *due = NULL;
        for (int i = 0; i < p->ntopics && !due; i++) {
            ktopic *t = &p->topics[i];
            if (!t->counted || t->busy)
                continue;
            if (t->due_us <= now)
                due = t;
            else if (t->due_us < next_us)
                next_us = t->due_us;
        }
        if (due) {
            due->busy = true;
            pthread_mutex_unlock(&p->mu);
            int32_t count = 0;
            why[0] = '\0';
            int rc = read_count(p->rk, due->rkt, &count, why, sizeof(why));
            pthread_mutex_lock(&p->mu);
            count_done(due, rc, count, why);
            continue;
        }
        if (next_us == INT64_MAX) {
            pthread_cond_wait(&p->cv, &p->mu);
        } else {
            struct timespec until = {.tv_sec = (time_t)(next_us / 1000000),
                                     .tv_nsec = (long)(next_us % 1000000) *
                                                1000};
            pthread_cond_timedwait(&p->cv, &p->mu, &until);
        }
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int wh_kafka_producer_partitions(wh_kafka_producer *p, const char *topic,
                                 int32_t *partition_cnt, char *err,
                                 size_t errlen)
{
    int rc;
    pthread_mutex_lock(&p->mu);
    ktopic *t = topic_get(p, topic);
    if (!t) {
        rc = wh_errf(err, errlen, "cannot keep the partition count of %s: "
                     "a producer keeps at most %d topics", topic,
                     WH_KAFKA_TOPICS_MAX);
        goto out;
    }
    if (!p->thread_started) {
        int e = pthread_create(&p->thread, NULL, counts_main, p);
        if (e != 0) {
            rc = wh_errf(err, errlen, "cannot start the thread that reads "
                         "partition counts: %s", strerror(e));
            goto out;
        }
        p->thread_started = true;
    }
    if (!t->counted) {
        t->counted = true;
        t->due_us = 0;
        pthread_cond_signal(&p->cv);
    }
    if (t->count > 0) {
        *partition_cnt = t->count;
        rc = WH_OK;
    } else if (t->why[0]) {
        wh_errf(err, errlen, "the partition count of %s is not known yet: "
                "%s", topic, t->why);
        rc = WH_AGAIN;
    } else {
        wh_errf(err, errlen, "the partition count of %s is not known yet: "
                "looking it up", topic);
        rc = WH_AGAIN;
    }
out:
    pthread_mutex_unlock(&p->mu);
    return rc;
}

int wh_kafka_producer_partition(wh_kafka_producer *p, const char *topic,
                                const void *key, size_t klen,
                                int32_t *partition, char *err, size_t errlen)
{
    int32_t n;
    int rc = wh_kafka_producer_partitions(p, topic, &n, err, errlen);
    if (rc == WH_OK)
        *partition = wh_kafka_partition_of(key, klen, n);
    return rc;
}

/* ---- producer ------------------------------------------------------------ */

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    wh_kafka_producer *p = opaque;
    if (m->err == RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION && m->rkt)
        count_again(p, rd_kafka_topic_name(m->rkt));
    if (p->dr)
        p->dr(p->opaque, m->_private, m->err == 0,
              m->err ? rd_kafka_err2str(m->err) : NULL);
}

int wh_kafka_producer_new(const wh_kafka_conf *kc, wh_kafka_dr_fn *dr,
                          void *opaque, wh_kafka_producer **out, char *err,
                          size_t errlen)
{
    char e[512], num[32];
    *out = NULL;
    wh_kafka_producer *p = calloc(1, sizeof(*p));
    if (!p)
        return wh_errf(err, errlen, "out of memory");
    p->pipe[0] = p->pipe[1] = -1;
    p->dr = dr;
    p->opaque = opaque;
    pthread_condattr_t ca;
    if (pthread_mutex_init(&p->mu, NULL) != 0) {
        free(p);
        return wh_errf(err, errlen, "pthread_mutex_init() failed");
    }
    if (pthread_condattr_init(&ca) != 0 ||
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) != 0 ||
        pthread_cond_init(&p->cv, &ca) != 0) {
        pthread_mutex_destroy(&p->mu);
        free(p);
        return wh_errf(err, errlen, "pthread_cond_init() failed");
    }
    pthread_condattr_destroy(&ca);
    rd_kafka_conf_t *conf = base_conf(kc, err, errlen);
    if (!conf)
        goto fail;
    snprintf(num, sizeof(num), "%lld",
             (long long)(kc->linger_ms > 0 ? kc->linger_ms : 5));
    if (conf_set(conf, "enable.idempotence", "true", err, errlen) ||
        conf_set(conf, "acks", "all", err, errlen) ||
        conf_set(conf, "linger.ms", num, err, errlen) ||
        conf_set(conf, "queue.buffering.max.messages", "1000000", err,
                 errlen) ||
        (kc->keep_order &&
         conf_set(conf, "message.timeout.ms", "0", err, errlen)) ||
        (kc->gapless &&
         conf_set(conf, "enable.gapless.guarantee", "true", err, errlen))) {
        rd_kafka_conf_destroy(conf);
        goto fail;
    }
    if (kc->message_max > 0) {
        snprintf(num, sizeof(num), "%lld", (long long)kc->message_max);
        if (conf_set(conf, "message.max.bytes", num, err, errlen)) {
            rd_kafka_conf_destroy(conf);
            goto fail;
        }
    }
    if (conf_extra(conf, kc->extra, err, errlen)) {
        rd_kafka_conf_destroy(conf);
        goto fail;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    rd_kafka_conf_set_opaque(conf, p);
    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, e, sizeof(e));
    if (!p->rk) {
        rd_kafka_conf_destroy(conf);
        wh_errf(err, errlen, "rd_kafka_new() failed: %s", e);
        goto fail;
    }
    p->queue = rd_kafka_queue_get_main(p->rk);
    if (make_pipe(p->pipe, err, errlen))
        goto fail;
    rd_kafka_queue_io_event_enable(p->queue, p->pipe[1], "1", 1);
    *out = p;
    return WH_OK;
fail:
    if (p->queue)
        rd_kafka_queue_destroy(p->queue);
    if (p->rk)
        rd_kafka_destroy(p->rk);
    if (p->pipe[0] >= 0)
        close(p->pipe[0]);
    if (p->pipe[1] >= 0)
        close(p->pipe[1]);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
    return WH_ERR;
}

int wh_kafka_producer_send(wh_kafka_producer *p, const char *topic,
                           int32_t partition, const void *key, size_t klen,
                           const void *value, size_t vlen,
                           const char *const *headers, void *msg_opaque,
                           char *err, size_t errlen)
{
    assert(partition >= 0 || partition == WH_KAFKA_PARTITION_ANY);
    rd_kafka_headers_t *hdrs = NULL;
    if (headers && headers[0]) {
        hdrs = rd_kafka_headers_new(4);
        for (size_t i = 0; headers[i] && headers[i + 1]; i += 2)
            rd_kafka_header_add(hdrs, headers[i], -1, headers[i + 1], -1);
    }
    rd_kafka_resp_err_t e = rd_kafka_producev(
        p->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
        RD_KAFKA_V_KEY(key, klen), RD_KAFKA_V_VALUE((void *)value, vlen),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(msg_opaque),
        RD_KAFKA_V_END);
    if (e) {
        if (hdrs)
            rd_kafka_headers_destroy(hdrs);
        if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL)
            return WH_AGAIN;
        if (e == RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION)
            count_again(p, topic);
        if (partition == WH_KAFKA_PARTITION_ANY)
            wh_errf(err, errlen, "produce to %s failed: %s (%zu bytes)",
                    topic, rd_kafka_err2str(e), vlen);
        else
            wh_errf(err, errlen, "produce to %s [%d] failed: %s (%zu bytes)",
                    topic, (int)partition, rd_kafka_err2str(e), vlen);
        return e == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE ? WH_DECLINED
                                                         : WH_ERR;
    }
    return WH_OK;
}

void wh_kafka_producer_warm(wh_kafka_producer *p, const char *topic)
{
    pthread_mutex_lock(&p->mu);
    (void)topic_get(p, topic); /* NULL when the table is full: not warmed */
    pthread_mutex_unlock(&p->mu);
}

int wh_kafka_producer_fd(wh_kafka_producer *p) { return p->pipe[0]; }

void wh_kafka_producer_poll(wh_kafka_producer *p, int timeout_ms)
{
    rd_kafka_poll(p->rk, timeout_ms);
}

int64_t wh_kafka_message_max(int64_t payload_max)
{
    return payload_max + WH_KAFKA_HEADROOM;
}

int64_t wh_kafka_producer_message_max(wh_kafka_producer *p)
{
    char v[32];
    size_t n = sizeof(v);
    if (rd_kafka_conf_get(rd_kafka_conf(p->rk), "message.max.bytes", v, &n) !=
        RD_KAFKA_CONF_OK)
        return -1;
    char *end;
    long long x = strtoll(v, &end, 10);
    return *end ? -1 : (int64_t)x;
}

bool wh_kafka_error_too_large(const char *errstr)
{
    if (!errstr)
        return false;
    static const rd_kafka_resp_err_t codes[] = {
        RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE,
        RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE,
    };
    for (size_t i = 0; i < WH_ARRAY_LEN(codes); i++)
        if (strstr(errstr, rd_kafka_err2str(codes[i])))
            return true;
    return false;
}

bool wh_kafka_error_consequence(const char *errstr)
{
    if (!errstr)
        return false;
    static const rd_kafka_resp_err_t codes[] = {
        RD_KAFKA_RESP_ERR__FATAL,
        RD_KAFKA_RESP_ERR__PURGE_QUEUE,
        RD_KAFKA_RESP_ERR__PURGE_INFLIGHT,
        RD_KAFKA_RESP_ERR__GAPLESS_GUARANTEE,
    };
    for (size_t i = 0; i < WH_ARRAY_LEN(codes); i++)
        if (strcmp(errstr, rd_kafka_err2str(codes[i])) == 0)
            return true;
    return false;
}

void wh_kafka_producer_purge_async(wh_kafka_producer *p)
{
    rd_kafka_resp_err_t e = rd_kafka_purge(
        p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT |
                   RD_KAFKA_PURGE_F_NON_BLOCKING);
    if (e)
        WH_WARN("rd_kafka_purge() failed: %s", rd_kafka_err2str(e));
}

int wh_kafka_producer_outq(wh_kafka_producer *p)
{
    return rd_kafka_outq_len(p->rk);
}

int wh_kafka_producer_fatal(wh_kafka_producer *p, char *err, size_t errlen)
{
    char reason[512];
    rd_kafka_resp_err_t e = rd_kafka_fatal_error(p->rk, reason,
                                                 sizeof(reason));
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
        return WH_OK;
    return wh_errf(err, errlen, "Kafka producer failed fatally: %s: %s",
                   rd_kafka_err2name(e), reason);
}

int wh_kafka_producer_flush(wh_kafka_producer *p, int timeout_ms, char *err,
                            size_t errlen)
{
    rd_kafka_flush(p->rk, timeout_ms);
    int left = rd_kafka_outq_len(p->rk);
    if (left > 0)
        return wh_errf(err, errlen,
                       "%d messages not acknowledged by Kafka after %d ms",
                       left, timeout_ms);
    return WH_OK;
}

void wh_kafka_producer_purge(wh_kafka_producer *p)
{
    rd_kafka_resp_err_t e =
        rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE |
                                  RD_KAFKA_PURGE_F_INFLIGHT);
    if (e)
        WH_WARN("rd_kafka_purge() failed: %s", rd_kafka_err2str(e));
    /* reports of messages purged in flight come from the broker threads:
     * serve them for up to a second */
    for (int i = 0; i < 100 && rd_kafka_outq_len(p->rk) > 0; i++)
        rd_kafka_poll(p->rk, 10);
}

void wh_kafka_producer_destroy(wh_kafka_producer *p)
{
    if (!p)
        return;
    if (p->thread_started) {
        /* waits out a lookup under way: at most COUNT_TIMEOUT_MS */
        pthread_mutex_lock(&p->mu);
        p->stopping = true;
        pthread_cond_signal(&p->cv);
        pthread_mutex_unlock(&p->mu);
        pthread_join(p->thread, NULL);
    }
    rd_kafka_queue_destroy(p->queue);
    for (int i = 0; i < p->ntopics; i++) {
        rd_kafka_topic_destroy(p->topics[i].rkt);
        free(p->topics[i].name);
    }
    rd_kafka_destroy(p->rk);
    close(p->pipe[0]);
    close(p->pipe[1]);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}
