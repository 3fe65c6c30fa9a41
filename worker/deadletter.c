/*
 * deadletter.c - the dead-letter sender (see deadletter.h): encoding,
 * producing, the fallback without bodies, the backoff of dead letters
 * that could not be sent and the give-up that stores them in
 * webhooks.unsent_dead_letters instead (the only SQL of that table). Used
 * by the fan-out and the delivery stage, whose per-message structs embed
 * a wk_dead; the producer's delivery reports of dead letters come here
 * through main.c. Main thread only, except store_run (query executor).
 */
#include "deadletter.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base64.h"
#include "dbq.h"
#include "log.h"
#include "utf8.h"

TAILQ_HEAD(dead_list, wk_dead);

/* What the producer holds for one send: a report finds its dead letter
 * through it, or nothing once the dead letter was given up (d NULL). */
typedef struct wk_dead_ticket {
    wk_msg_tag tag; /* first: WK_MSG_DEAD routes reports here */
    wk_dead *d;
    TAILQ_ENTRY(wk_dead_ticket) link;
} dead_ticket;

TAILQ_HEAD(ticket_list, wk_dead_ticket);

struct wk_deadletter {
    wh_kafka_producer *producer;
    wk_dbq *dbq;
    char *topic;
    int64_t give_up_ms;       /* 0: never */
    wh_buf buf;               /* the encoding being sent; max: message_max */
    struct dead_list waiting; /* WAITING, by retry_at_us */
    struct dead_list sending; /* SENDING, by give_up_at_us */
    struct ticket_list tickets; /* every ticket the producer holds */
    wk_dead_stats st;
};

wk_deadletter *wk_deadletter_new(const wk_deadletter_conf *conf)
{
    wk_deadletter *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    if (!(s->topic = strdup(conf->topic))) {
        free(s);
        return NULL;
    }
    s->producer = conf->producer;
    s->dbq = conf->dbq;
    s->give_up_ms = conf->give_up_ms;
    /* what the producer can take, less a record's framing and key */
    size_t max = conf->message_max;
    wh_buf_init(&s->buf, max > WH_KAFKA_FRAMING_MAX
                             ? max - WH_KAFKA_FRAMING_MAX : max);
    TAILQ_INIT(&s->waiting);
    TAILQ_INIT(&s->sending);
    TAILQ_INIT(&s->tickets);
    return s;
}

void wk_deadletter_destroy(wk_deadletter *s)
{
    if (!s)
        return;
    if (!TAILQ_EMPTY(&s->waiting))
        WH_WARN("%lld dead letters were still waiting to be sent again",
                (long long)s->st.waiting);
    /* reports that still come are not routed here any more (main.c) */
    dead_ticket *t;
    while ((t = TAILQ_FIRST(&s->tickets))) {
        TAILQ_REMOVE(&s->tickets, t, link);
        free(t);
    }
    wh_buf_free(&s->buf);
    free(s->topic);
    free(s);
}

static void oom(void)
{
    WH_ERROR("out of memory; exiting so the message is read again");
    abort();
}

/* Copies s0..s3 (NULL stays NULL) into one allocation, *out pointing at
 * each copy. */
static char *copy_strings(const char *const in[4], const char *out[4])
{
    size_t n = 0;
    for (int i = 0; i < 4; i++)
        n += in[i] ? strlen(in[i]) + 1 : 0;
    char *text = malloc(n ? n : 1), *p = text;
    if (!text)
        oom();
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
        snprintf(out, outlen, "delivery %s (event %s) to %s",
                 dv->delivery_id, dv->event.id, dv->endpoint_id);
    else
        snprintf(out, outlen, "message at %s [%d] @ %lld",
                 d->dl.source_topic ? d->dl.source_topic : "?",
                 (int)d->dl.source_partition,
                 (long long)d->dl.source_offset);
}

/* Keeps why as d's last failure, for the give-up's log and row. */
static void note_failure(wk_dead *d, const char *why)
{
    free(d->failure);
    if (!(d->failure = strdup(why)))
        oom();
}

/* Inserts d into list (waiting or sending) ordered by the key at offset
 * key_off; later ones are mostly due last: look from the tail. */
static void insert_by(struct dead_list *list, wk_dead *d, size_t key_off)
{
#define KEY(x) (*(const int64_t *)((const char *)(x) + key_off))
    wk_dead *at = TAILQ_LAST(list, dead_list);
    while (at && KEY(at) > KEY(d))
        at = TAILQ_PREV(at, dead_list, link);
    if (at)
        TAILQ_INSERT_AFTER(list, at, d, link);
    else
        TAILQ_INSERT_HEAD(list, d, link);
#undef KEY
}

static void give_up(wk_deadletter *s, wk_dead *d);

/* Puts d in the waiting list, due after the next backoff step (never
 * after its give-up time, which is then kept), or gives it up when that
 * time has come. */
static void wait_again(wk_deadletter *s, wk_dead *d, const char *why)
{
    char what[WH_ID_MAX * 3 + 64];
    int64_t now = wh_mono_us();
    if (!d->given_up) {
        note_failure(d, why);
        if (now >= d->give_up_at_us) {
            give_up(s, d);
            return;
        }
    }
    d->backoff_ms = d->backoff_ms ? d->backoff_ms * 2 : WK_DEAD_BACKOFF_MIN_MS;
    if (d->backoff_ms > WK_DEAD_BACKOFF_MAX_MS)
        d->backoff_ms = WK_DEAD_BACKOFF_MAX_MS;
    d->retry_at_us = now + d->backoff_ms * 1000;
    if (!d->given_up && d->retry_at_us > d->give_up_at_us)
        d->retry_at_us = d->give_up_at_us;
    d->state = WK_DEAD_WAITING;
    s->st.waiting++;
    insert_by(&s->waiting, d, offsetof(wk_dead, retry_at_us));
    describe(d, what, sizeof(what));
    if (d->given_up) {
        s->st.store_failed++;
        WH_WARN("dead letter of %s, given up, not stored in Postgres: %s; "
                "storing it again in %lld ms", what, why,
                (long long)d->backoff_ms);
        return;
    }
    d->retries++;
    s->st.retried++;
    WH_WARN("dead letter of %s%s not sent: %s; sending it again in %lld ms "
            "(retry %u)", what, d->dl.omit_bodies ? " (without bodies)" : "",
            why, (long long)d->backoff_ms, d->retries);
}

static void fall_back(wk_deadletter *s, wk_dead *d, const char *why)
{
    char what[WH_ID_MAX * 3 + 64];
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
    dead_ticket *t = calloc(1, sizeof(*t));
    if (!t)
        oom();
    t->tag.owner = WK_MSG_DEAD;
    t->d = d;
    for (;;) {
        wh_buf_reset(&s->buf);
        int rc = wh_codec_dead_letter_encode(&d->dl, &s->buf, err,
                                             sizeof(err));
        if (rc == WH_OK)
            rc = wh_kafka_producer_send(s->producer, s->topic,
                                        WH_KAFKA_PARTITION_ANY, d->key,
                                        d->key ? strlen(d->key) : 0,
                                        s->buf.data, s->buf.len, NULL, t, err,
                                        sizeof(err));
        else if (!d->dl.omit_bodies)
            rc = WH_DECLINED; /* does not fit what the producer takes */
        if (rc == WH_OK) {
            TAILQ_INSERT_TAIL(&s->tickets, t, link);
            d->ticket = t;
            d->state = WK_DEAD_SENDING;
            insert_by(&s->sending, d, offsetof(wk_dead, give_up_at_us));
            return;
        }
        if (rc == WH_DECLINED && !d->dl.omit_bodies) {
            fall_back(s, d, err);
            continue;
        }
        free(t);
        wait_again(s, d, rc == WH_AGAIN ? "the producer's queue is full"
                                        : err);
        return;
    }
}

/* ---- giving up: the row in webhooks.unsent_dead_letters ---------------- */

#define STORE_PARAMS 16

static const char store_sql[] =
    "INSERT INTO webhooks.unsent_dead_letters (dead_topic, kafka_key, "
    "reason, detail, delivery_id, event_id, endpoint_id, app, source_topic, "
    "source_partition, source_offset, retries, first_tried_at, last_error, "
    "without_bodies, dead_letter) VALUES ($1, $2, $3::integer, $4, $5, $6, "
    "$7, $8, $9, $10::integer, $11::bigint, $12::integer, "
    "to_timestamp($13::double precision / 1e6), $14, $15::boolean, "
    "decode($16, 'base64')) RETURNING id";

/* One insert: the parameters (their text in one allocation) and, for the
 * main thread, the dead letter it belongs to and the row's id. */
typedef struct {
    wk_deadletter *s;
    wk_dead *d;
    const char *params[STORE_PARAMS];
    char *text;
    char id[24];
} store_job;

static void store_release(void *arg)
{
    store_job *j = arg;
    free(j->text);
    free(j);
}

static int store_run(wh_db *db, void *arg, char *err, size_t errlen)
{
    store_job *j = arg;
    wh_db_result *r;
    if (wh_db_query(db, store_sql, STORE_PARAMS, j->params, &r, err,
                    errlen) != WH_OK)
        return WH_ERR;
    if (wh_db_rows(r) == 1)
        wh_strlcpy(j->id, wh_db_get(r, 0, 0), sizeof(j->id));
    wh_db_result_free(r);
    return WH_OK;
}

static void store_done(void *arg, int rc, const char *err)
{
    store_job *j = arg;
    wk_deadletter *s = j->s;
    wk_dead *d = j->d;
    char what[WH_ID_MAX * 3 + 64];
    assert(d->state == WK_DEAD_STORING);
    d->state = WK_DEAD_IDLE;
    if (rc != WH_OK) {
        wait_again(s, d, err);
        return;
    }
    describe(d, what, sizeof(what));
    WH_ERROR("dead letter of %s given up after %lld ms and %u retries: %s "
             "did not take it (last error: %s); stored in "
             "webhooks.unsent_dead_letters (id %s) instead, its message "
             "goes on", what,
             (long long)((wh_mono_us() - d->first_at_us) / 1000), d->retries,
             s->topic, d->failure ? d->failure : "none", j->id);
    s->st.given_up++;
    free(d->text);
    d->text = NULL;
    free(d->failure);
    d->failure = NULL;
    d->done(d, d->owner, WK_DEAD_GIVEN_UP);
}

/* Appends the parameter text src (NULL: SQL NULL) to b, sanitized as
 * Postgres text must be (valid UTF-8, no NUL) and cut to
 * WH_DEAD_TEXT_MAX; *off gets its offset in b (-1 for NULL). */
static void add_text(wh_buf *b, const char *src, ptrdiff_t *off)
{
    *off = -1;
    if (!src)
        return;
    *off = (ptrdiff_t)b->len;
    if (wh_utf8_sanitize_buf(b, src, strlen(src),
                             WH_UTF8_KEEP_TAB | WH_UTF8_KEEP_NEWLINE,
                             WH_DEAD_TEXT_MAX, NULL) != WH_OK ||
        wh_buf_add(b, "", 1) != WH_OK)
        oom();
}

/* Queues the insert of d (encoded in s->buf) on the query executor;
 * a full executor is treated like a failed insert. */
static void store(wk_deadletter *s, wk_dead *d)
{
    char err[WH_ERRLEN], num[5][24];
    const wh_delivery *dv = d->dl.delivery;
    wh_buf_reset(&s->buf);
    if (wh_codec_dead_letter_encode(&d->dl, &s->buf, err, sizeof(err)) !=
        WH_OK) {
        /* the form without bodies always fits (WH_DEAD_BARE_MAX) */
        assert(!d->dl.omit_bodies);
        d->dl.omit_bodies = true;
        wh_buf_reset(&s->buf);
        if (wh_codec_dead_letter_encode(&d->dl, &s->buf, err, sizeof(err)) !=
            WH_OK) {
            wait_again(s, d, err);
            return;
        }
    }
    store_job *j = calloc(1, sizeof(*j));
    if (!j)
        oom();
    j->s = s;
    j->d = d;
    /* first_tried_at: the wall clock at wk_dead_send */
    int64_t first_wall_us = wh_wall_us() - (wh_mono_us() - d->first_at_us);
    snprintf(num[0], sizeof(num[0]), "%d", (int)d->dl.reason);
    snprintf(num[1], sizeof(num[1]), "%d", (int)d->dl.source_partition);
    snprintf(num[2], sizeof(num[2]), "%lld", (long long)d->dl.source_offset);
    snprintf(num[3], sizeof(num[3]), "%u", d->retries);
    snprintf(num[4], sizeof(num[4]), "%lld", (long long)first_wall_us);
    const char *in[STORE_PARAMS] = {
        s->topic, d->key, num[0], d->dl.detail ? d->dl.detail : "",
        dv ? dv->delivery_id : NULL, dv ? dv->event.id : NULL,
        dv ? dv->endpoint_id : NULL, dv ? dv->event.app : NULL,
        d->dl.source_topic ? d->dl.source_topic : "", num[1], num[2],
        num[3], num[4], d->failure ? d->failure : "",
        d->dl.omit_bodies ? "true" : "false", NULL};
    ptrdiff_t off[STORE_PARAMS];
    wh_buf b;
    /* the texts, cut to WH_DEAD_TEXT_MAX, and the encoding in base64 */
    wh_buf_init(&b, STORE_PARAMS * (WH_DEAD_TEXT_MAX + 8) +
                        wh_base64_encoded_len(s->buf.len) + 1);
    for (int i = 0; i < STORE_PARAMS - 1; i++)
        add_text(&b, in[i], &off[i]);
    off[STORE_PARAMS - 1] = (ptrdiff_t)b.len;
    void *at;
    if (wh_buf_grow(&b, wh_base64_encoded_len(s->buf.len) + 1, &at) !=
        WH_OK)
        oom();
    wh_base64_encode(s->buf.data, s->buf.len, at); /* with its NUL */
    j->text = b.data; /* the buffer's bytes are the job's from here */
    for (int i = 0; i < STORE_PARAMS; i++)
        j->params[i] = off[i] < 0 ? NULL : j->text + off[i];
    wk_dbq_job job = {.name = "unsent dead letter", .run = store_run,
                      .done = store_done, .release = store_release,
                      .arg = j};
    wk_dbq_id id;
    d->state = WK_DEAD_STORING;
    if (wk_dbq_submit(s->dbq, &job, &id) != WH_OK) {
        store_release(j);
        d->state = WK_DEAD_IDLE;
        wait_again(s, d, "the query executor is full");
        return;
    }
    d->store_job = id;
}

/* d's time is up: it is stored in Postgres instead of sent. */
static void give_up(wk_deadletter *s, wk_dead *d)
{
    d->given_up = true;
    d->backoff_ms = 0; /* the store's own backoff */
    store(s, d);
}

/* ---- the stages' interface --------------------------------------------- */

void wk_dead_send(wk_deadletter *s, wk_dead *d, const wh_dead_letter *dl,
                  const char *key, wk_dead_done_fn *done, void *owner)
{
    if (d->state != WK_DEAD_IDLE) {
        WH_ERROR("dead letter sent while another is in flight");
        abort();
    }
    const char *in[4] = {dl->detail, dl->last_error, key, dl->source_topic};
    const char *out[4];
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
    d->first_at_us = wh_mono_us();
    d->give_up_at_us = s->give_up_ms > 0
                           ? d->first_at_us + s->give_up_ms * 1000
                           : INT64_MAX;
    d->given_up = false;
    d->failure = NULL;
    d->ticket = NULL;
    attempt(s, d);
}

int wk_dead_cancel(wk_dead *d)
{
    if (d->state == WK_DEAD_SENDING)
        return WH_AGAIN;
    if (d->state == WK_DEAD_WAITING) {
        TAILQ_REMOVE(&d->sender->waiting, d, link);
        d->sender->st.waiting--;
    } else if (d->state == WK_DEAD_STORING) {
        /* the insert may still commit; its done will not run */
        wk_dbq_cancel(d->sender->dbq, d->store_job);
    }
    d->state = WK_DEAD_IDLE;
    free(d->text);
    d->text = NULL;
    free(d->failure);
    d->failure = NULL;
    return WH_OK;
}

void wk_deadletter_on_report(wk_deadletter *s, void *msg_opaque, int ok,
                             const char *errstr)
{
    dead_ticket *t = msg_opaque;
    wk_dead *d = t->d;
    TAILQ_REMOVE(&s->tickets, t, link);
    free(t);
    if (!d) {
        /* given up while the producer held it, already in Postgres */
        if (ok)
            WH_WARN("a dead letter given up (in webhooks.unsent_dead_letters) "
                    "reached %s after all: it is in both", s->topic);
        return;
    }
    if (d->state != WK_DEAD_SENDING) {
        WH_ERROR("delivery report for a dead letter not being sent");
        abort();
    }
    TAILQ_REMOVE(&s->sending, d, link);
    d->ticket = NULL;
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
    free(d->failure);
    d->failure = NULL;
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
        if (d->given_up)
            store(s, d);
        else if (now >= d->give_up_at_us)
            give_up(s, d);
        else
            attempt(s, d);
    }
    /* in the producer past the bound: its report, if one ever comes, will
     * find nothing (the ticket stays until then) */
    while ((d = TAILQ_FIRST(&s->sending)) && d->give_up_at_us <= now) {
        char why[WH_ERRLEN];
        TAILQ_REMOVE(&s->sending, d, link);
        d->ticket->d = NULL;
        d->ticket = NULL;
        d->state = WK_DEAD_IDLE;
        snprintf(why, sizeof(why), "no delivery report after %lld ms%s%.200s",
                 (long long)s->give_up_ms,
                 d->failure ? "; before: " : "",
                 d->failure ? d->failure : "");
        note_failure(d, why);
        give_up(s, d);
    }
}

int64_t wk_deadletter_due_ms(const wk_deadletter *s)
{
    const wk_dead *w = TAILQ_FIRST(&s->waiting);
    const wk_dead *g = TAILQ_FIRST(&s->sending);
    int64_t at = w ? w->retry_at_us : INT64_MAX;
    if (g && g->give_up_at_us < at)
        at = g->give_up_at_us;
    if (at == INT64_MAX)
        return -1;
    int64_t now = wh_mono_us();
    return at > now ? (at - now) / 1000 + 1 : 0;
}

void wk_deadletter_counts(const wk_deadletter *s, wk_dead_stats *st)
{
    *st = s->st;
}
