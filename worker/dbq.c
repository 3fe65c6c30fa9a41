/*
 * dbq.c - the worker's query executor (see dbq.h). The main thread queues
 * jobs and polls finished ones; the executor's thread owns the connection,
 * (re)connects it with a backoff, and runs the jobs one at a time in the
 * order they were queued.
 *
 * A job moves queued -> running -> finished (-> freed by wk_dbq_poll); a
 * job of a destroyed executor goes from queued straight to freed. The
 * two lists, the running job and the counters are guarded by mu.
 */
#include "dbq.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/queue.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

typedef struct job {
    TAILQ_ENTRY(job) link;
    wk_dbq_job spec;
    wk_dbq_id id;
    bool cancelled;
    int rc;
    char err[WH_ERRLEN];
} job;

TAILQ_HEAD(job_list, job);

struct wk_dbq {
    char *url;
    size_t queue_max;
    int64_t backoff_min_ms, backoff_max_ms;
    int wake_fd;            /* eventfd: finished jobs wait */
    pthread_t thread;
    bool started;

    pthread_mutex_t mu;
    pthread_cond_t cv;      /* a job was queued, or stop */
    pthread_cond_t idle;    /* the thread is about to exit */
    struct job_list queued, finished;
    job *running;
    size_t accepted;        /* queued + running + finished */
    wk_dbq_id next_id;
    bool stop, exited;
    wh_db *db;              /* written by the thread under mu, read by
                               destroy to interrupt it */
    wk_dbq_stats st;
};

/* ---- the executor's thread ------------------------------------------- */

/* Connects when there is no usable connection and the backoff allows it.
 * Thread only; db is the thread's own between calls. */
static int ensure_conn(wk_dbq *q, int64_t *retry_at_us, int64_t *backoff_ms,
                       char *last_err, char *err, size_t errlen)
{
    if (q->db && wh_db_alive(q->db))
        return WH_OK;
    int64_t now = wh_mono_us();
    if (now < *retry_at_us)
        return wh_errf(err, errlen, "no Postgres connection (next attempt "
                       "in %lld ms): %s",
                       (long long)((*retry_at_us - now + 999) / 1000),
                       last_err);
    int rc;
    if (q->db) {
        rc = wh_db_reconnect(q->db, err, errlen);
    } else {
        wh_db *db = NULL;
        rc = wh_db_connect(q->url, &db, err, errlen);
        pthread_mutex_lock(&q->mu);
        q->db = db;
        pthread_mutex_unlock(&q->mu);
    }
    if (rc == WH_OK) {
        *backoff_ms = 0;
        *retry_at_us = 0;
        return WH_OK;
    }
    *backoff_ms = *backoff_ms ? *backoff_ms * 2 : q->backoff_min_ms;
    if (*backoff_ms > q->backoff_max_ms)
        *backoff_ms = q->backoff_max_ms;
    *retry_at_us = wh_mono_us() + *backoff_ms * 1000;
    wh_strlcpy(last_err, err, WH_ERRLEN);
    pthread_mutex_lock(&q->mu);
    q->st.connects_failed++;
    pthread_mutex_unlock(&q->mu);
    WH_WARN("query executor: %s (next attempt in %lld ms)", err,
            (long long)*backoff_ms);
    return WH_ERR;
}

static void *thread_main(void *o)
{
    wk_dbq *q = o;
    int64_t retry_at_us = 0, backoff_ms = 0;
    char last_err[WH_ERRLEN] = "";
    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (!q->stop && TAILQ_EMPTY(&q->queued))
            pthread_cond_wait(&q->cv, &q->mu);
        if (q->stop)
            break;
        job *j = TAILQ_FIRST(&q->queued);
        TAILQ_REMOVE(&q->queued, j, link);
        q->running = j;
        pthread_mutex_unlock(&q->mu);

        bool ran = false;
        j->err[0] = '\0';
        j->rc = ensure_conn(q, &retry_at_us, &backoff_ms, last_err, j->err,
                            sizeof(j->err));
        if (j->rc == WH_OK) {
            ran = true;
            j->rc = j->spec.run(q->db, j->spec.arg, j->err, sizeof(j->err));
            if (j->rc != WH_OK && !j->err[0])
                wh_strlcpy(j->err, "failed", sizeof(j->err));
        }

        pthread_mutex_lock(&q->mu);
        q->running = NULL;
        if (ran) {
            q->st.run++;
            if (j->rc != WH_OK)
                q->st.failed++;
        } else {
            q->st.skipped++;
        }
        TAILQ_INSERT_TAIL(&q->finished, j, link);
        uint64_t one = 1;
        if (write(q->wake_fd, &one, sizeof(one)) < 0) {
            /* the counter is already non-zero: the loop wakes anyway */
        }
    }
    q->exited = true;
    pthread_cond_broadcast(&q->idle);
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

/* ---- the main thread -------------------------------------------------- */

int wk_dbq_new(const wk_dbq_conf *conf, wk_dbq **out, char *err,
               size_t errlen)
{
    *out = NULL;
    if (conf->queue_max < 1 || conf->queue_max > WK_DBQ_QUEUE_MAX ||
        conf->backoff_min_ms < 1 || conf->backoff_max_ms < conf->backoff_min_ms)
        return wh_errf(err, errlen, "query executor: bad configuration");
    wk_dbq *q = calloc(1, sizeof(*q));
    if (!q)
        return wh_errf(err, errlen, "out of memory");
    q->wake_fd = -1;
    q->queue_max = conf->queue_max;
    q->backoff_min_ms = conf->backoff_min_ms;
    q->backoff_max_ms = conf->backoff_max_ms;
    TAILQ_INIT(&q->queued);
    TAILQ_INIT(&q->finished);
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    pthread_cond_init(&q->idle, NULL);
    if (!(q->url = strdup(conf->url ? conf->url : ""))) {
        wh_errf(err, errlen, "out of memory");
        goto fail;
    }
    q->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (q->wake_fd < 0) {
        wh_errf(err, errlen, "eventfd(): %s", strerror(errno));
        goto fail;
    }
    int rc = pthread_create(&q->thread, NULL, thread_main, q);
    if (rc != 0) {
        wh_errf(err, errlen, "pthread_create(): %s", strerror(rc));
        goto fail;
    }
    q->started = true;
    *out = q;
    return WH_OK;
fail:
    wk_dbq_destroy(q, 0);
    return WH_ERR;
}

static void release(job *j)
{
    if (j->spec.release)
        j->spec.release(j->spec.arg);
    free(j);
}

void wk_dbq_destroy(wk_dbq *q, int64_t grace_ms)
{
    if (!q)
        return;
    struct job_list dropped = TAILQ_HEAD_INITIALIZER(dropped);
    if (q->started) {
        pthread_mutex_lock(&q->mu);
        q->stop = true;
        TAILQ_CONCAT(&dropped, &q->queued, link);
        pthread_cond_broadcast(&q->cv);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        int64_t ns = until.tv_nsec + (grace_ms % 1000) * 1000000;
        until.tv_sec += grace_ms / 1000 + ns / 1000000000;
        until.tv_nsec = ns % 1000000000;
        while (!q->exited &&
               pthread_cond_timedwait(&q->idle, &q->mu, &until) == 0)
            ;
        if (!q->exited && q->db) {
            WH_WARN("query executor: job %s still running after %lld ms; "
                    "interrupting its connection",
                    q->running ? q->running->spec.name : "?",
                    (long long)grace_ms);
            wh_db_interrupt(q->db);
        }
        pthread_mutex_unlock(&q->mu);
        pthread_join(q->thread, NULL);
    }
    /* no done callbacks: their owners are going away too */
    TAILQ_CONCAT(&dropped, &q->finished, link);
    if (q->running) {
        release(q->running); /* only when the thread never got to finish it */
        q->running = NULL;
    }
    job *j;
    while ((j = TAILQ_FIRST(&dropped)) != NULL) {
        TAILQ_REMOVE(&dropped, j, link);
        release(j);
    }
    wh_db_close(q->db);
    if (q->wake_fd >= 0)
        close(q->wake_fd);
    pthread_cond_destroy(&q->idle);
    pthread_cond_destroy(&q->cv);
    pthread_mutex_destroy(&q->mu);
    free(q->url);
    free(q);
}

int wk_dbq_submit(wk_dbq *q, const wk_dbq_job *spec, wk_dbq_id *id)
{
    pthread_mutex_lock(&q->mu);
    if (q->accepted >= q->queue_max) {
        pthread_mutex_unlock(&q->mu);
        return WH_AGAIN;
    }
    pthread_mutex_unlock(&q->mu);
    job *j = calloc(1, sizeof(*j));
    if (!j)
        return WH_AGAIN;
    j->spec = *spec;
    pthread_mutex_lock(&q->mu);
    j->id = ++q->next_id;
    q->accepted++;
    TAILQ_INSERT_TAIL(&q->queued, j, link);
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
    if (id)
        *id = j->id;
    return WH_OK;
}

void wk_dbq_cancel(wk_dbq *q, wk_dbq_id id)
{
    job *j;
    pthread_mutex_lock(&q->mu);
    if (q->running && q->running->id == id)
        q->running->cancelled = true;
    TAILQ_FOREACH(j, &q->queued, link)
        if (j->id == id)
            j->cancelled = true;
    TAILQ_FOREACH(j, &q->finished, link)
        if (j->id == id)
            j->cancelled = true;
    pthread_mutex_unlock(&q->mu);
}

int wk_dbq_fd(const wk_dbq *q) { return q->wake_fd; }

size_t wk_dbq_poll(wk_dbq *q)
{
    uint64_t n;
    if (read(q->wake_fd, &n, sizeof(n)) < 0) {
        /* EAGAIN: nothing finished since the last poll, or already read */
    }
    /* One job at a time, so that a done callback may cancel a job that is
     * still on the list; only those finished before this call, so that a
     * busy thread cannot keep the loop here. */
    pthread_mutex_lock(&q->mu);
    job *last = TAILQ_LAST(&q->finished, job_list);
    pthread_mutex_unlock(&q->mu);
    size_t count = 0;
    while (last) {
        pthread_mutex_lock(&q->mu);
        job *j = TAILQ_FIRST(&q->finished);
        TAILQ_REMOVE(&q->finished, j, link);
        bool cancelled = j->cancelled;
        q->accepted--;
        pthread_mutex_unlock(&q->mu);
        if (!cancelled && j->spec.done)
            j->spec.done(j->spec.arg, j->rc, j->err);
        bool was_last = j == last;
        release(j);
        count++;
        if (was_last)
            break;
    }
    return count;
}

size_t wk_dbq_pending(const wk_dbq *q)
{
    wk_dbq *mq = (wk_dbq *)q; /* the mutex is not part of the value */
    pthread_mutex_lock(&mq->mu);
    size_t n = mq->accepted;
    pthread_mutex_unlock(&mq->mu);
    return n;
}

void wk_dbq_counts(const wk_dbq *q, wk_dbq_stats *st)
{
    wk_dbq *mq = (wk_dbq *)q;
    pthread_mutex_lock(&mq->mu);
    *st = mq->st;
    pthread_mutex_unlock(&mq->mu);
}
