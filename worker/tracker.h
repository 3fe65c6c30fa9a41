/*
 * tracker.h - per-partition offset tracking for one consumer (tracker.c):
 * consumed messages are kept per partition in offset order, and the offset
 * after the longest done prefix is stored. Used by the fan-out and delivery
 * stages on the main thread; items are embedded in the stages' own
 * per-message structs.
 */
#ifndef WK_TRACKER_H
#define WK_TRACKER_H

#include <stdbool.h>
#include <stdint.h>

#include "kafka.h"
#include "wh.h"

/* Partitions of one topic a tracker (and so a stage) supports. */
#define WK_TRACKER_PARTITIONS_MAX 1024

typedef struct wk_tracker wk_tracker;
typedef struct wk_part wk_part;
typedef struct wk_item {
    struct wk_item *next;
    wk_part *part;
    int64_t offset;
    bool done;
} wk_item;

/* release frees the struct an item is embedded in, once the item left the
 * tracker. */
wk_tracker *wk_tracker_new(void (*release)(wk_item *item));
void wk_tracker_destroy(wk_tracker *t);
void wk_tracker_assign(wk_tracker *t, int32_t partition);
/* Partition revoked: its items stay until done but store nothing. */
void wk_tracker_revoke(wk_tracker *t, int32_t partition);
/* Appends item for (partition, offset); WH_DECLINED when the partition is
 * not assigned (the message must be dropped). */
int wk_tracker_add(wk_tracker *t, wk_item *item, int32_t partition,
                   int64_t offset) WH_MUST_CHECK;
bool wk_item_revoked(const wk_item *item);
/* Marks item done; items released and offsets stored as the done prefix
 * grows are applied through the consumer. */
void wk_tracker_done(wk_tracker *t, wk_item *item, wh_kafka_consumer *c);
size_t wk_tracker_pending(const wk_tracker *t);
/* Gives every item up, done or not: fn learns, for each assigned
 * partition holding items, the offset of its first one (where its
 * consumption must start again); revoked partitions' items go too. Items
 * are released; nothing is stored. */
void wk_tracker_rewind(wk_tracker *t,
                       void (*fn)(int32_t partition, int64_t offset,
                                  void *opaque),
                       void *opaque);

#endif
