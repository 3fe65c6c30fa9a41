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
/* The first assigned partition at or after from that is not loaded, or
 * -1. */
int32_t wk_parts_next_unloaded(const wk_parts *ps, int32_t from);

#endif
