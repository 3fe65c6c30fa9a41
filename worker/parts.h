/*
 * parts.h - the delivery stage's view of its partitions of the deliveries
 * topic (parts.c): which are assigned, the ownership epoch each was taken
 * with (0 until its lanes are loaded), and the messages held until then,
 * in offset order. Pure bookkeeping; the stage (deliver.c) takes the
 * partitions through lanestore.h and reacts to rebalances. Main thread.
 */
#ifndef WK_PARTS_H
#define WK_PARTS_H

#include <stdbool.h>
#include <stdint.h>

#include "lane.h"
#include "tracker.h"

/* partitions of the deliveries topic supported: what the tracker tracks */
#define WK_PARTS_MAX WK_TRACKER_PARTITIONS_MAX

typedef struct {
    bool assigned;
    int64_t epoch;                 /* 0 until the lanes are loaded */
    wk_lane_entry *held, *held_tail;
    /* Every message of the partition before this offset, consumed since
     * the assignment, was placed in its lane (-1: none known yet). */
    int64_t placed;
    int64_t eof_held;              /* the end, reached while holding */
    /* The previous owner handed the partition over at this offset
     * (sql/010_handoff.sql): a delivery below it may have been delivered
     * already and is checked first (-1: none). */
    int64_t check_below;
} wk_parts_slot;

typedef struct {
    wk_parts_slot slot[WK_PARTS_MAX];
} wk_parts;

bool wk_parts_valid(int32_t pid);
/* Assigned, not loaded: messages are held. */
void wk_parts_assign(wk_parts *ps, int32_t pid);
/* Revoked: returns the messages still held (the caller drops them). */
wk_lane_entry *wk_parts_revoke(wk_parts *ps, int32_t pid);
bool wk_parts_assigned(const wk_parts *ps, int32_t pid);
/* The epoch the partition was taken with; 0 while not loaded. */
int64_t wk_parts_epoch(const wk_parts *ps, int32_t pid);
/* Holds e (a message of an assigned partition that is not loaded). */
void wk_parts_hold(wk_parts *ps, int32_t pid, wk_lane_entry *e);
/* The partition's lanes were loaded under epoch (> 0): returns the held
 * messages in arrival order, to dispatch now. */
wk_lane_entry *wk_parts_loaded(wk_parts *ps, int32_t pid, int64_t epoch);
/* The offset the previous owner handed the partition over at (-1: none),
 * as read when it was taken; wk_parts_check_below returns it. */
void wk_parts_handed(wk_parts *ps, int32_t pid, int64_t offset);
int64_t wk_parts_check_below(const wk_parts *ps, int32_t pid);
/* A message at next_offset - 1 was placed in its lane (dispatched). */
void wk_parts_placed(wk_parts *ps, int32_t pid, int64_t next_offset);
/* The consumer reached the end of the partition at next_offset: all before
 * it is placed, or will be once the held messages are (wk_parts_settle). */
void wk_parts_eof(wk_parts *ps, int32_t pid, int64_t next_offset);
/* After the messages wk_parts_loaded returned were dispatched: an end
 * reached while they were held now counts. */
void wk_parts_settle(wk_parts *ps, int32_t pid);
/* The offset before which every message was placed (-1: none known). A
 * parked delivery at a position at or after it must not be sent yet: a
 * message before it (a previous owner's, consumed again) may still join
 * its lane ahead of it. */
int64_t wk_parts_placed_below(const wk_parts *ps, int32_t pid);
/* The first assigned partition at or after from that is not loaded, or
 * -1. */
int32_t wk_parts_next_unloaded(const wk_parts *ps, int32_t from);

#endif
