/*
 * parts.c - assignment, epochs and held messages of the delivery stage's
 * partitions (see parts.h). Main thread.
 *
 * Slot states: unassigned -> (assign) assigned, epoch 0, holding ->
 * (loaded) assigned at epoch > 0 -> (revoke) unassigned. A re-assignment
 * starts at epoch 0 again: the partition is taken afresh.
 */
#include <assert.h>
#include <stddef.h>

#include "parts.h"

bool wk_parts_valid(int32_t pid) { return pid >= 0 && pid < WK_PARTS_MAX; }

void wk_parts_assign(wk_parts *ps, int32_t pid)
{
    assert(wk_parts_valid(pid));
    wk_parts_slot *s = &ps->slot[pid];
    s->assigned = true;
    s->epoch = 0;
    s->placed = s->eof_held = s->check_below = -1;
}

wk_lane_entry *wk_parts_revoke(wk_parts *ps, int32_t pid)
{
    assert(wk_parts_valid(pid));
    wk_parts_slot *s = &ps->slot[pid];
    wk_lane_entry *held = s->held;
    s->assigned = false;
    s->epoch = 0;
    s->held = s->held_tail = NULL;
    s->placed = s->eof_held = s->check_below = -1;
    return held;
}

bool wk_parts_assigned(const wk_parts *ps, int32_t pid)
{
    return wk_parts_valid(pid) && ps->slot[pid].assigned;
}

int64_t wk_parts_epoch(const wk_parts *ps, int32_t pid)
{
    return wk_parts_valid(pid) ? ps->slot[pid].epoch : 0;
}

void wk_parts_hold(wk_parts *ps, int32_t pid, wk_lane_entry *e)
{
    assert(wk_parts_valid(pid) && ps->slot[pid].epoch == 0);
    wk_parts_slot *s = &ps->slot[pid];
    e->next = NULL;
    if (s->held_tail)
        s->held_tail->next = e;
    else
        s->held = e;
    s->held_tail = e;
}

wk_lane_entry *wk_parts_loaded(wk_parts *ps, int32_t pid, int64_t epoch)
{
    assert(wk_parts_valid(pid) && epoch > 0);
    wk_parts_slot *s = &ps->slot[pid];
    wk_lane_entry *held = s->held;
    s->epoch = epoch;
    s->held = s->held_tail = NULL;
    return held;
}

void wk_parts_handed(wk_parts *ps, int32_t pid, int64_t offset)
{
    assert(wk_parts_valid(pid));
    ps->slot[pid].check_below = offset;
}

int64_t wk_parts_check_below(const wk_parts *ps, int32_t pid)
{
    return wk_parts_assigned(ps, pid) ? ps->slot[pid].check_below : -1;
}

void wk_parts_placed(wk_parts *ps, int32_t pid, int64_t next_offset)
{
    assert(wk_parts_valid(pid) && ps->slot[pid].epoch > 0);
    if (next_offset > ps->slot[pid].placed)
        ps->slot[pid].placed = next_offset;
}

void wk_parts_eof(wk_parts *ps, int32_t pid, int64_t next_offset)
{
    if (!wk_parts_valid(pid) || !ps->slot[pid].assigned)
        return;
    wk_parts_slot *s = &ps->slot[pid];
    if (s->epoch == 0) {
        if (next_offset > s->eof_held)
            s->eof_held = next_offset;
        return;
    }
    if (next_offset > s->placed)
        s->placed = next_offset;
}

void wk_parts_settle(wk_parts *ps, int32_t pid)
{
    assert(wk_parts_valid(pid) && ps->slot[pid].epoch > 0);
    wk_parts_slot *s = &ps->slot[pid];
    if (s->eof_held > s->placed)
        s->placed = s->eof_held;
    s->eof_held = -1;
}

int64_t wk_parts_placed_below(const wk_parts *ps, int32_t pid)
{
    return wk_parts_assigned(ps, pid) ? ps->slot[pid].placed : -1;
}

int32_t wk_parts_next_unloaded(const wk_parts *ps, int32_t from)
{
    for (int32_t i = from < 0 ? 0 : from; i < WK_PARTS_MAX; i++)
        if (ps->slot[i].assigned && ps->slot[i].epoch == 0)
            return i;
    return -1;
}
