/*
 * tracker.c - per-partition offset tracking for one consumer (see
 * worker.h). A partition keeps its in-flight items in offset order; when
 * the head items are done they are released and the offset after them is
 * stored, so a committed offset never passes a message whose outcome is
 * not durable. Main thread only.
 *
 * Partition states: ASSIGNED -> (revoke) REVOKED -> freed once its last
 * item is released, or at destroy (a revoked partition stays on the
 * tracker's revoked list until then, so destroy releases every item it
 * ever took). A re-assignment creates a fresh state, so items of the old
 * assignment can never store offsets for the new one.
 */
#include <assert.h>
#include <stdlib.h>
#include <sys/queue.h>

#include "worker.h"

struct wk_part {
    int32_t partition;
    bool revoked;
    wk_item *head, *tail;
    size_t count;
    LIST_ENTRY(wk_part) revoked_link; /* REVOKED: on the tracker's list */
};

struct wk_tracker {
    wk_part *parts[WK_TRACKER_PARTITIONS_MAX]; /* current assignment by partition number */
    LIST_HEAD(, wk_part) revoked; /* revoked partitions that hold items */
    void (*release)(wk_item *item);
    size_t pending;
};

wk_tracker *wk_tracker_new(void (*release)(wk_item *item))
{
    wk_tracker *t = calloc(1, sizeof(*t));
    if (t) {
        t->release = release;
        LIST_INIT(&t->revoked);
    }
    return t;
}

static void free_part_items(wk_tracker *t, wk_part *p)
{
    wk_item *it = p->head;
    while (it) {
        wk_item *next = it->next;
        t->pending--;
        t->release(it);
        it = next;
    }
    free(p);
}

void wk_tracker_destroy(wk_tracker *t)
{
    if (!t)
        return;
    for (int i = 0; i < WK_TRACKER_PARTITIONS_MAX; i++)
        if (t->parts[i])
            free_part_items(t, t->parts[i]);
    while (!LIST_EMPTY(&t->revoked)) {
        wk_part *p = LIST_FIRST(&t->revoked);
        LIST_REMOVE(p, revoked_link);
        free_part_items(t, p);
    }
    assert(t->pending == 0);
    free(t);
}

void wk_tracker_assign(wk_tracker *t, int32_t partition)
{
    if (partition < 0 || partition >= WK_TRACKER_PARTITIONS_MAX || t->parts[partition])
        return;
    wk_part *p = calloc(1, sizeof(*p));
    if (!p)
        abort(); /* a partition we cannot track must not be consumed */
    p->partition = partition;
    t->parts[partition] = p;
}

void wk_tracker_revoke(wk_tracker *t, int32_t partition)
{
    if (partition < 0 || partition >= WK_TRACKER_PARTITIONS_MAX || !t->parts[partition])
        return;
    wk_part *p = t->parts[partition];
    t->parts[partition] = NULL;
    if (!p->head) {
        free(p);
        return;
    }
    p->revoked = true;
    LIST_INSERT_HEAD(&t->revoked, p, revoked_link);
}

int wk_tracker_add(wk_tracker *t, wk_item *item, int32_t partition,
                   int64_t offset)
{
    if (partition < 0 || partition >= WK_TRACKER_PARTITIONS_MAX || !t->parts[partition])
        return WH_DECLINED;
    wk_part *p = t->parts[partition];
    assert(!p->tail || p->tail->offset < offset);
    item->next = NULL;
    item->part = p;
    item->offset = offset;
    item->done = false;
    if (p->tail)
        p->tail->next = item;
    else
        p->head = item;
    p->tail = item;
    p->count++;
    t->pending++;
    return WH_OK;
}

bool wk_item_revoked(const wk_item *item) { return item->part->revoked; }

void wk_tracker_done(wk_tracker *t, wk_item *item, wh_kafka_consumer *c)
{
    wk_part *p = item->part;
    assert(!item->done);
    item->done = true;
    if (p->head != item)
        return;
    int64_t next = -1;
    while (p->head && p->head->done) {
        wk_item *it = p->head;
        p->head = it->next;
        if (!p->head)
            p->tail = NULL;
        p->count--;
        t->pending--;
        next = it->offset + 1;
        t->release(it);
    }
    if (p->revoked) {
        if (!p->head) {
            LIST_REMOVE(p, revoked_link);
            free(p);
        }
        return;
    }
    if (next >= 0 && c)
        WH_IGNORE(wh_kafka_consumer_store(c, p->partition, next));
}

size_t wk_tracker_pending(const wk_tracker *t) { return t->pending; }

/* Releases p's items; p stays (empty). */
static void drop_items(wk_tracker *t, wk_part *p)
{
    wk_item *it = p->head;
    p->head = p->tail = NULL;
    p->count = 0;
    while (it) {
        wk_item *next = it->next;
        t->pending--;
        t->release(it);
        it = next;
    }
}

void wk_tracker_rewind(wk_tracker *t,
                       void (*fn)(int32_t partition, int64_t offset,
                                  void *opaque),
                       void *opaque)
{
    for (int i = 0; i < WK_TRACKER_PARTITIONS_MAX; i++) {
        wk_part *p = t->parts[i];
        if (!p || !p->head)
            continue;
        fn(p->partition, p->head->offset, opaque);
        drop_items(t, p);
    }
    while (!LIST_EMPTY(&t->revoked)) {
        wk_part *p = LIST_FIRST(&t->revoked);
        LIST_REMOVE(p, revoked_link);
        drop_items(t, p);
        free(p);
    }
}
