/*
 * lane.c - the lane state machine and the drain budget (see lane.h for the
 * states and their transitions). Decides; never does I/O. Called by the
 * delivery stage on the main thread; unit-tested in tests/unit/test_lane.c.
 */
#include <assert.h>
#include <string.h>

#include "lane.h"

void wk_lane_init(wk_lane *l, const char *endpoint_id, int32_t partition,
                  int64_t epoch)
{
    memset(l, 0, sizeof(*l));
    wh_strlcpy(l->endpoint_id, endpoint_id, sizeof(l->endpoint_id));
    l->partition = partition;
    l->epoch = epoch;
    l->state = WK_LANE_OPEN;
    l->drained_pos = -1;
}

bool wk_lane_can(wk_lane_state from, wk_lane_state to)
{
    switch (from) {
    case WK_LANE_OPEN:
        return to == WK_LANE_BLOCKED || to == WK_LANE_DRAINING;
    case WK_LANE_BLOCKED:
        return to == WK_LANE_BLOCKED || to == WK_LANE_DRAINING;
    case WK_LANE_DRAINING:
        return to == WK_LANE_BLOCKED || to == WK_LANE_OPEN;
    }
    return false;
}

const char *wk_lane_state_name(wk_lane_state s)
{
    switch (s) {
    case WK_LANE_OPEN:
        return "open";
    case WK_LANE_BLOCKED:
        return "blocked";
    case WK_LANE_DRAINING:
        return "draining";
    }
    return "?";
}

static void set_state(wk_lane *l, wk_lane_state to)
{
    assert(wk_lane_can(l->state, to));
    l->state = to;
}

void wk_lane_load(wk_lane *l, const char *head_id, uint32_t head_attempt)
{
    assert(l->state == WK_LANE_OPEN && l->queued == 0 && l->in_flight == 0);
    if (!head_id) {
        set_state(l, WK_LANE_DRAINING);
        l->drained_pos = -1;
        return;
    }
    set_state(l, WK_LANE_BLOCKED);
    wh_strlcpy(l->head_id, head_id, sizeof(l->head_id));
    l->head_attempt = head_attempt;
    l->head_busy = false;
}

wk_lane_place wk_lane_admit(wk_lane *l, size_t queue_max)
{
    if (l->state != WK_LANE_OPEN)
        return WK_LANE_TO_PARK;
    if (l->queued >= queue_max) {
        /* spill: later deliveries wait in Postgres, not in memory */
        wk_lane_spill(l);
        return WK_LANE_TO_PARK;
    }
    return WK_LANE_TO_QUEUE;
}

void wk_lane_spill(wk_lane *l)
{
    set_state(l, WK_LANE_DRAINING);
    l->drained_pos = -1;
}

wk_lane_retry wk_lane_admit_retry(wk_lane *l, const char *delivery_id,
                                  uint32_t attempt)
{
    if (l->state != WK_LANE_BLOCKED || strcmp(l->head_id, delivery_id) != 0)
        return WK_LANE_RETRY_NOT_HEAD;
    if (attempt != l->head_attempt)
        return WK_LANE_RETRY_OTHER_ATTEMPT;
    if (l->head_busy)
        return WK_LANE_RETRY_BUSY;
    l->head_busy = true;
    return WK_LANE_RETRY_HEAD;
}

void wk_lane_push(wk_lane *l, wk_lane_entry *e)
{
    assert(l->state != WK_LANE_BLOCKED);
    e->next = NULL;
    if (l->qtail)
        l->qtail->next = e;
    else
        l->qhead = e;
    l->qtail = e;
    l->queued++;
}

wk_lane_entry *wk_lane_pop(wk_lane *l)
{
    wk_lane_entry *e = l->qhead;
    if (!e)
        return NULL;
    l->qhead = e->next;
    if (!l->qhead)
        l->qtail = NULL;
    e->next = NULL;
    assert(l->queued > 0);
    l->queued--;
    return e;
}

void wk_lane_block(wk_lane *l, const char *delivery_id, uint32_t attempt,
                   int64_t drain_from)
{
    set_state(l, WK_LANE_BLOCKED);
    wh_strlcpy(l->head_id, delivery_id, sizeof(l->head_id));
    l->head_attempt = attempt;
    l->head_busy = false;
    l->drained_pos = drain_from;
}

void wk_lane_unblock(wk_lane *l)
{
    assert(l->state == WK_LANE_BLOCKED); /* OPEN -> DRAINING is a spill */
    set_state(l, WK_LANE_DRAINING);
    l->head_busy = false;
    l->head_id[0] = '\0';
    l->drained_pos = -1;
}

void wk_lane_reopen(wk_lane *l)
{
    assert(!l->qhead && l->in_flight == 0);
    set_state(l, WK_LANE_OPEN);
    l->drained_pos = -1;
}

void wk_lane_redrain(wk_lane *l)
{
    assert(l->state == WK_LANE_DRAINING);
    l->drained_pos = -1;
}

int wk_lane_limit(const wh_endpoint *ep)
{
    if (!ep || ep->ordered || ep->max_in_flight < 1)
        return 1;
    return ep->max_in_flight;
}

wk_lane_step wk_lane_next(const wk_lane *l, int limit)
{
    if (l->state == WK_LANE_BLOCKED || l->in_flight >= limit)
        return WK_LANE_IDLE;
    if (l->qhead)
        return WK_LANE_START;
    return l->state == WK_LANE_DRAINING && l->in_flight == 0 ? WK_LANE_REFILL
                                                              : WK_LANE_IDLE;
}

void wk_lane_slot_take(wk_lane *l) { l->in_flight++; }

void wk_lane_slot_give(wk_lane *l)
{
    assert(l->in_flight > 0);
    l->in_flight--;
}

/* ---- drain budget ------------------------------------------------------- */

void wk_drain_budget_init(wk_drain_budget *b, size_t max, size_t chunk,
                          void (*wake)(wk_lane *l, void *opaque),
                          void *opaque)
{
    assert(max > 0 && chunk > 0);
    memset(b, 0, sizeof(*b));
    b->max = max;
    b->chunk = chunk;
    b->wake = wake;
    b->opaque = opaque;
}

static void unwait(wk_drain_budget *b, wk_lane *l)
{
    assert(l->budget_wait && b->waiting > 0);
    if (l->budget_prev)
        l->budget_prev->budget_next = l->budget_next;
    else
        b->wait_head = l->budget_next;
    if (l->budget_next)
        l->budget_next->budget_prev = l->budget_prev;
    else
        b->wait_tail = l->budget_prev;
    l->budget_prev = l->budget_next = NULL;
    l->budget_wait = false;
    b->waiting--;
}

/* Hands what is free to waiting lanes, first come first served. */
static void grant(wk_drain_budget *b)
{
    while (b->wait_head && b->used < b->max) {
        wk_lane *l = b->wait_head;
        unwait(b, l);
        size_t g = b->max - b->used;
        if (g > b->chunk)
            g = b->chunk;
        l->granted += g;
        b->used += g;
        if (b->used > b->peak)
            b->peak = b->used;
        b->wake(l, b->opaque);
    }
}

size_t wk_drain_take(wk_drain_budget *b, wk_lane *l, size_t want)
{
    assert(want > 0);
    if (want > b->chunk)
        want = b->chunk;
    if (l->granted > 0) {
        size_t g = l->granted;
        l->granted = 0;
        if (g > want) {
            wk_drain_give(b, g - want);
            g = want;
        }
        return g;
    }
    if (l->budget_wait)
        return 0;
    if (!b->wait_head && b->used < b->max) {
        size_t g = b->max - b->used;
        if (g > want)
            g = want;
        b->used += g;
        if (b->used > b->peak)
            b->peak = b->used;
        return g;
    }
    l->budget_wait = true;
    l->budget_prev = b->wait_tail;
    l->budget_next = NULL;
    if (b->wait_tail)
        b->wait_tail->budget_next = l;
    else
        b->wait_head = l;
    b->wait_tail = l;
    b->waiting++;
    b->waits++;
    return 0;
}

void wk_drain_give(wk_drain_budget *b, size_t n)
{
    assert(b->used >= n);
    b->used -= n;
    grant(b);
}

void wk_drain_cancel(wk_drain_budget *b, wk_lane *l)
{
    if (l->budget_wait)
        unwait(b, l);
    if (l->granted > 0) {
        size_t g = l->granted;
        l->granted = 0;
        wk_drain_give(b, g);
    }
}
