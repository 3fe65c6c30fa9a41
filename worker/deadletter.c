/*
 * deadletter.c - the dead-letter sender (see deadletter.h): encoding,
 * producing, the fallback without bodies and the backoff of dead letters
 * that could not be sent. Used by the fan-out and the delivery stage,
 * whose per-message structs embed a wk_dead; the producer's delivery
 * reports of dead letters come here through main.c. Main thread only.
 */
#include "deadletter.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

TAILQ_HEAD(dead_list, wk_dead);

struct wk_deadletter {
    wh_kafka_producer *producer;
    char *topic;
    wh_buf buf;               /* the encoding being sent; max: message_max */
    struct dead_list waiting; /* WAITING, by retry_at_us */
    wk_dead_stats st;
};

wk_deadletter *wk_deadletter_new(wh_kafka_producer *p, const char *topic,
                                 size_t message_max)
{
    wk_deadletter *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    if (!(s->topic = strdup(topic))) {
        free(s);
        return NULL;
    }
    s->producer = p;
    /* what the producer can take, less a record's framing and key */
    wh_buf_init(&s->buf, message_max > WH_KAFKA_FRAMING_MAX
                             ? message_max - WH_KAFKA_FRAMING_MAX
                             : message_max);
    TAILQ_INIT(&s->waiting);
    return s;
}

void wk_deadletter_destroy(wk_deadletter *s)
{
    if (!s)
        return;
    if (!TAILQ_EMPTY(&s->waiting))
        WH_WARN("%lld dead letters were still waiting to be sent again",
                (long long)s->st.waiting);
    wh_buf_free(&s->buf);
    free(s->topic);
    free(s);
}

/* Copies s0..s3 (NULL stays NULL) into one allocation, *out pointing at
 * each copy. */
static char *copy_strings(const char *const in[4], const char *out[4])
{
    size_t n = 0;
    for (int i = 0; i < 4; i++)
        n += in[i] ? strlen(in[i]) + 1 : 0;
    char *text = malloc(n ? n : 1), *p = text;
    if (!text) {
        WH_ERROR("out of memory; exiting so the message is read again");
        abort();
    }
    for (int i = 0; i < 4; i++) {
        out[i] = NULL;
        if (!in[i])
            continue;
        size_t len = strlen(in[i]) + 1;
        memcpy(p, in[i], len);
        out[i] = p;
        p += len;
    }
    return text;
}

static void describe(const wk_dead *d, char *out, size_t outlen)
{
    const wh_delivery *dv = d->dl.delivery;
    if (dv)
        snprintf(out, outlen, "delivery %s to %s", dv->delivery_id,
                 dv->endpoint_id);
    else
        snprintf(out, outlen, "message at %s [%d] @ %lld",
                 d->dl.source_topic ? d->dl.source_topic : "?",
                 (int)d->dl.source_partition,
                 (long long)d->dl.source_offset);
}

/* Puts d in the waiting list, due after the next backoff step. */
static void wait_again(wk_deadletter *s, wk_dead *d, const char *why)
{
    char what[WH_ID_MAX * 2 + 64];
    d->backoff_ms = d->backoff_ms ? d->backoff_ms * 2 : WK_DEAD_BACKOFF_MIN_MS;
    if (d->backoff_ms > WK_DEAD_BACKOFF_MAX_MS)
        d->backoff_ms = WK_DEAD_BACKOFF_MAX_MS;
    d->retry_at_us = wh_mono_us() + d->backoff_ms * 1000;
    d->retries++;
    d->state = WK_DEAD_WAITING;
    s->st.retried++;
    s->st.waiting++;
    /* later retries are mostly due last: look from the tail */
    wk_dead *at = TAILQ_LAST(&s->waiting, dead_list);
    while (at && at->retry_at_us > d->retry_at_us)
        at = TAILQ_PREV(at, dead_list, link);
    if (at)
        TAILQ_INSERT_AFTER(&s->waiting, at, d, link);
    else
        TAILQ_INSERT_HEAD(&s->waiting, d, link);
    describe(d, what, sizeof(what));
    WH_WARN("dead letter of %s%s not sent: %s; sending it again in %lld ms "
            "(retry %u)", what, d->dl.omit_bodies ? " (without bodies)" : "",
            why, (long long)d->backoff_ms, d->retries);
}

static void fall_back(wk_deadletter *s, wk_dead *d, const char *why)
{
    char what[WH_ID_MAX * 2 + 64];
    describe(d, what, sizeof(what));
    WH_WARN("dead letter of %s is too large to produce (%s); sending it "
            "without its bodies", what, why);
    d->dl.omit_bodies = true;
    s->st.fell_back++;
}

/* Encodes d and hands it to the producer, falling back to the form
 * without bodies when the full one is too large. */
static void attempt(wk_deadletter *s, wk_dead *d)
{
    char err[WH_ERRLEN];
    for (;;) {
        wh_buf_reset(&s->buf);
        int rc = wh_codec_dead_letter_encode(&d->dl, &s->buf, err,
                                             sizeof(err));
        if (rc == WH_OK)
            rc = wh_kafka_producer_send(s->producer, s->topic, d->key,
                                        d->key ? strlen(d->key) : 0,
                                        s->buf.data, s->buf.len, NULL, d, err,
                                        sizeof(err));
        else if (!d->dl.omit_bodies)
            rc = WH_DECLINED; /* does not fit what the producer takes */
        if (rc == WH_OK) {
            d->state = WK_DEAD_SENDING;
            return;
        }
        if (rc == WH_DECLINED && !d->dl.omit_bodies) {
            fall_back(s, d, err);
            continue;
        }
        wait_again(s, d, rc == WH_AGAIN ? "the producer's queue is full"
                                        : err);
        return;
    }
}

void wk_dead_send(wk_deadletter *s, wk_dead *d, const wh_dead_letter *dl,
                  const char *key, wk_dead_done_fn *done, void *owner)
{
    if (d->state != WK_DEAD_IDLE) {
        WH_ERROR("dead letter sent while another is in flight");
        abort();
    }
    const char *in[4] = {dl->detail, dl->last_error, key, dl->source_topic};
    const char *out[4];
    d->tag.owner = WK_MSG_DEAD;
    d->sender = s;
    d->dl = *dl;
    d->text = copy_strings(in, out);
    d->dl.detail = out[0];
    d->dl.last_error = out[1];
    d->key = out[2];
    d->dl.source_topic = out[3];
    d->done = done;
    d->owner = owner;
    d->retries = 0;
    d->backoff_ms = 0;
    attempt(s, d);
}

int wk_dead_cancel(wk_dead *d)
{
    if (d->state == WK_DEAD_SENDING)
        return WH_AGAIN;
    if (d->state == WK_DEAD_WAITING) {
        TAILQ_REMOVE(&d->sender->waiting, d, link);
        d->sender->st.waiting--;
    }
    d->state = WK_DEAD_IDLE;
    free(d->text);
    d->text = NULL;
    return WH_OK;
}

void wk_deadletter_on_report(wk_deadletter *s, wk_dead *d, int ok,
                             const char *errstr)
{
    if (d->state != WK_DEAD_SENDING) {
        WH_ERROR("delivery report for a dead letter not being sent");
        abort();
    }
    d->state = WK_DEAD_IDLE;
    if (!ok) {
        if (wh_kafka_error_too_large(errstr) && !d->dl.omit_bodies) {
            fall_back(s, d, errstr);
            attempt(s, d);
        } else {
            wait_again(s, d, errstr ? errstr : "unknown error");
        }
        return;
    }
    s->st.produced++;
    int outcome = d->dl.omit_bodies ? WH_DECLINED : WH_OK;
    free(d->text);
    d->text = NULL;
    d->done(d, d->owner, outcome);
}

void wk_deadletter_tick(wk_deadletter *s)
{
    int64_t now = wh_mono_us();
    wk_dead *d;
    while ((d = TAILQ_FIRST(&s->waiting)) && d->retry_at_us <= now) {
        TAILQ_REMOVE(&s->waiting, d, link);
        s->st.waiting--;
        d->state = WK_DEAD_IDLE;
        attempt(s, d);
    }
}

int64_t wk_deadletter_due_ms(const wk_deadletter *s)
{
    const wk_dead *d = TAILQ_FIRST(&s->waiting);
    if (!d)
        return -1;
    int64_t now = wh_mono_us();
    return d->retry_at_us > now ? (d->retry_at_us - now) / 1000 + 1 : 0;
}

void wk_deadletter_counts(const wk_deadletter *s, wk_dead_stats *st)
{
    *st = s->st;
}
