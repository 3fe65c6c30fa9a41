/* Unit tests for worker/lane.c and worker/parts.c, without broker or
 * database: spilling past lane_queue_max, blocking on a failed head, which
 * retries are admitted, draining and reopening, the transition table and
 * the asserts that catch invalid transitions, in-flight limits of ordered
 * and unordered endpoints, the drain budget's bound and order, and the
 * partition table's held messages. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lane.h"
#include "parts.h"
#include "test.h"

/* Runs fn in a child; true when it died of an assert (SIGABRT). */
static bool aborts(void (*fn)(void))
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stderr))
            _exit(2);
        fn();
        _exit(0);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) != pid)
        return false;
    return WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT;
}

static wk_lane_entry entries[16];

static void test_spill(void)
{
    wk_lane l;
    wk_lane_init(&l, "ep_1", 3, 7);
    CHECK_INT(l.state, WK_LANE_OPEN);
    CHECK_INT(l.partition, 3);
    CHECK_INT(l.epoch, 7);
    /* up to queue_max queue in memory */
    for (int i = 0; i < 3; i++) {
        CHECK_INT(wk_lane_admit(&l, 3), WK_LANE_TO_QUEUE);
        wk_lane_push(&l, &entries[i]);
    }
    CHECK_INT(l.queued, 3);
    CHECK_INT(l.state, WK_LANE_OPEN);
    /* the next one spills: parked, the lane drains */
    CHECK_INT(wk_lane_admit(&l, 3), WK_LANE_TO_PARK);
    CHECK_INT(l.state, WK_LANE_DRAINING);
    CHECK_INT(l.drained_pos, -1);
    CHECK_INT(wk_lane_admit(&l, 1000), WK_LANE_TO_PARK); /* stays parked */
    CHECK_INT(l.queued, 3);
    /* the queue is still sent in order */
    CHECK(wk_lane_pop(&l) == &entries[0]);
    CHECK(wk_lane_pop(&l) == &entries[1]);
    CHECK(wk_lane_pop(&l) == &entries[2]);
    CHECK(wk_lane_pop(&l) == NULL);
    CHECK_INT(l.queued, 0);
}

static void test_block(void)
{
    wk_lane l;
    wk_lane_init(&l, "ep_1", 0, 1);
    wk_lane_push(&l, &entries[0]);
    wk_lane_push(&l, &entries[1]);
    wk_lane_slot_take(&l);
    /* the head failed, its retry is attempt 2 */
    wk_lane_block(&l, "msg_a", 2, -1);
    CHECK_INT(l.state, WK_LANE_BLOCKED);
    CHECK_STR(l.head_id, "msg_a");
    CHECK_INT(l.head_attempt, 2);
    CHECK(!l.head_busy);
    /* nothing starts while blocked, whatever is queued or free */
    wk_lane_slot_give(&l);
    CHECK_INT(wk_lane_next(&l, 10), WK_LANE_IDLE);
    /* arrivals are parked */
    CHECK_INT(wk_lane_admit(&l, 1000), WK_LANE_TO_PARK);
    CHECK_INT(l.state, WK_LANE_BLOCKED);
    /* the head fails again: it waits for the next attempt, from where the
     * parked row was */
    wk_lane_block(&l, "msg_a", 3, 41);
    CHECK_INT(l.state, WK_LANE_BLOCKED);
    CHECK_INT(l.head_attempt, 3);
    CHECK_INT(l.drained_pos, 41);
    /* blocking from DRAINING */
    wk_lane d;
    wk_lane_init(&d, "ep_2", 0, 1);
    wk_lane_load(&d, NULL, 0);
    CHECK_INT(d.state, WK_LANE_DRAINING);
    wk_lane_block(&d, "msg_b", 5, 9);
    CHECK_INT(d.state, WK_LANE_BLOCKED);
    CHECK_INT(d.drained_pos, 9);
}

static void test_retry_admission(void)
{
    wk_lane l;
    wk_lane_init(&l, "ep_1", 0, 1);
    /* an open lane waits for nobody */
    CHECK_INT(wk_lane_admit_retry(&l, "msg_a", 2), WK_LANE_RETRY_NOT_HEAD);
    wk_lane_block(&l, "msg_a", 2, -1);
    CHECK_INT(wk_lane_admit_retry(&l, "msg_a", 1),
              WK_LANE_RETRY_OTHER_ATTEMPT);
    CHECK_INT(wk_lane_admit_retry(&l, "msg_a", 3),
              WK_LANE_RETRY_OTHER_ATTEMPT);
    CHECK_INT(wk_lane_admit_retry(&l, "msg_b", 2), WK_LANE_RETRY_NOT_HEAD);
    CHECK(!l.head_busy);
    /* only the awaited attempt, once */
    CHECK_INT(wk_lane_admit_retry(&l, "msg_a", 2), WK_LANE_RETRY_HEAD);
    CHECK(l.head_busy);
    CHECK_INT(wk_lane_admit_retry(&l, "msg_a", 2), WK_LANE_RETRY_BUSY);
    /* it failed again: attempt 3 is awaited now, not busy */
    wk_lane_block(&l, "msg_a", 3, -1);
    CHECK_INT(wk_lane_admit_retry(&l, "msg_a", 2),
              WK_LANE_RETRY_OTHER_ATTEMPT);
    CHECK_INT(wk_lane_admit_retry(&l, "msg_a", 3), WK_LANE_RETRY_HEAD);
    /* a partition load restores what is awaited */
    wk_lane r;
    wk_lane_init(&r, "ep_3", 1, 2);
    wk_lane_load(&r, "msg_c", 4);
    CHECK_INT(r.state, WK_LANE_BLOCKED);
    CHECK_INT(wk_lane_admit_retry(&r, "msg_c", 4), WK_LANE_RETRY_HEAD);
}

static void test_drain_reopen(void)
{
    wk_lane l;
    wk_lane_init(&l, "ep_1", 0, 1);
    wk_lane_block(&l, "msg_a", 2, 17);
    CHECK_INT(wk_lane_admit_retry(&l, "msg_a", 2), WK_LANE_RETRY_HEAD);
    wk_lane_slot_take(&l);
    /* the head succeeded */
    wk_lane_unblock(&l);
    CHECK_INT(l.state, WK_LANE_DRAINING);
    CHECK_STR(l.head_id, "");
    CHECK(!l.head_busy);
    CHECK_INT(l.drained_pos, -1);
    /* no load while the head's slot is held */
    CHECK_INT(wk_lane_next(&l, 1), WK_LANE_IDLE);
    wk_lane_slot_give(&l);
    CHECK_INT(wk_lane_next(&l, 1), WK_LANE_REFILL);
    /* loaded deliveries are sent one by one */
    wk_lane_push(&l, &entries[0]);
    wk_lane_push(&l, &entries[1]);
    l.drained_pos = 30;
    CHECK_INT(wk_lane_next(&l, 1), WK_LANE_START);
    CHECK(wk_lane_pop(&l) == &entries[0]);
    wk_lane_slot_take(&l);
    CHECK_INT(wk_lane_next(&l, 1), WK_LANE_IDLE);
    wk_lane_slot_give(&l);
    CHECK(wk_lane_pop(&l) == &entries[1]);
    CHECK_INT(wk_lane_next(&l, 1), WK_LANE_REFILL);
    /* something was parked before the last position: start over */
    wk_lane_redrain(&l);
    CHECK_INT(l.drained_pos, -1);
    CHECK_INT(l.state, WK_LANE_DRAINING);
    /* nothing parked any more */
    wk_lane_reopen(&l);
    CHECK_INT(l.state, WK_LANE_OPEN);
    CHECK_INT(wk_lane_next(&l, 1), WK_LANE_IDLE);
    CHECK_INT(wk_lane_admit(&l, 10), WK_LANE_TO_QUEUE);
}

static void test_table(void)
{
    const wk_lane_state O = WK_LANE_OPEN, B = WK_LANE_BLOCKED,
                        D = WK_LANE_DRAINING;
    CHECK(!wk_lane_can(O, O));
    CHECK(wk_lane_can(O, B));
    CHECK(wk_lane_can(O, D));
    CHECK(!wk_lane_can(B, O));
    CHECK(wk_lane_can(B, B));
    CHECK(wk_lane_can(B, D));
    CHECK(wk_lane_can(D, O));
    CHECK(wk_lane_can(D, B));
    CHECK(!wk_lane_can(D, D));
    CHECK_STR(wk_lane_state_name(O), "open");
    CHECK_STR(wk_lane_state_name(B), "blocked");
    CHECK_STR(wk_lane_state_name(D), "draining");
}

static void unblock_open(void)
{
    wk_lane l;
    wk_lane_init(&l, "ep", 0, 1);
    wk_lane_unblock(&l);
}

static void reopen_blocked(void)
{
    wk_lane l;
    wk_lane_init(&l, "ep", 0, 1);
    wk_lane_block(&l, "msg_a", 2, -1);
    wk_lane_reopen(&l);
}

static void reopen_open(void)
{
    wk_lane l;
    wk_lane_init(&l, "ep", 0, 1);
    wk_lane_reopen(&l);
}

static void reopen_with_queue(void)
{
    wk_lane l;
    wk_lane_init(&l, "ep", 0, 1);
    wk_lane_load(&l, NULL, 0);
    wk_lane_push(&l, &entries[0]);
    wk_lane_reopen(&l);
}

static void reopen_in_flight(void)
{
    wk_lane l;
    wk_lane_init(&l, "ep", 0, 1);
    wk_lane_load(&l, NULL, 0);
    wk_lane_slot_take(&l);
    wk_lane_reopen(&l);
}

static void push_blocked(void)
{
    wk_lane l;
    wk_lane_init(&l, "ep", 0, 1);
    wk_lane_block(&l, "msg_a", 2, -1);
    wk_lane_push(&l, &entries[0]);
}

static void load_twice(void)
{
    wk_lane l;
    wk_lane_init(&l, "ep", 0, 1);
    wk_lane_load(&l, NULL, 0);
    wk_lane_load(&l, "msg_a", 2);
}

static void redrain_open(void)
{
    wk_lane l;
    wk_lane_init(&l, "ep", 0, 1);
    wk_lane_redrain(&l);
}

static void slot_underflow(void)
{
    wk_lane l;
    wk_lane_init(&l, "ep", 0, 1);
    wk_lane_slot_give(&l);
}

static void valid_sequence(void)
{
    wk_lane l;
    wk_lane_init(&l, "ep", 0, 1);
    wk_lane_block(&l, "msg_a", 2, -1);
    wk_lane_unblock(&l);
    wk_lane_reopen(&l);
}

static void test_invalid(void)
{
    CHECK(!aborts(valid_sequence)); /* the harness itself */
    CHECK(aborts(unblock_open));
    CHECK(aborts(reopen_blocked));
    CHECK(aborts(reopen_open));
    CHECK(aborts(reopen_with_queue));
    CHECK(aborts(reopen_in_flight));
    CHECK(aborts(push_blocked));
    CHECK(aborts(load_twice));
    CHECK(aborts(redrain_open));
    CHECK(aborts(slot_underflow));
}

static void test_limits(void)
{
    wh_endpoint ep;
    memset(&ep, 0, sizeof(ep));
    CHECK_INT(wk_lane_limit(NULL), 1); /* gone: one at a time */
    ep.ordered = true;
    ep.max_in_flight = 50;
    CHECK_INT(wk_lane_limit(&ep), 1);
    ep.ordered = false;
    CHECK_INT(wk_lane_limit(&ep), 50);
    ep.max_in_flight = 0;
    CHECK_INT(wk_lane_limit(&ep), 1);
    ep.max_in_flight = 3;
    wk_lane l;
    wk_lane_init(&l, "ep", 0, 1);
    for (int i = 0; i < 5; i++)
        wk_lane_push(&l, &entries[i]);
    int started = 0;
    while (wk_lane_next(&l, wk_lane_limit(&ep)) == WK_LANE_START) {
        CHECK(wk_lane_pop(&l) != NULL);
        wk_lane_slot_take(&l);
        started++;
    }
    CHECK_INT(started, 3); /* unordered: up to max_in_flight */
    CHECK_INT(l.in_flight, 3);
    ep.ordered = true;
    CHECK_INT(wk_lane_next(&l, wk_lane_limit(&ep)), WK_LANE_IDLE);
    wk_lane_slot_give(&l);
    wk_lane_slot_give(&l);
    CHECK_INT(wk_lane_next(&l, wk_lane_limit(&ep)), WK_LANE_IDLE);
    wk_lane_slot_give(&l);
    CHECK_INT(wk_lane_next(&l, wk_lane_limit(&ep)), WK_LANE_START);
    wk_lane_slot_take(&l);
    CHECK(wk_lane_pop(&l) != NULL);
    CHECK_INT(wk_lane_next(&l, wk_lane_limit(&ep)), WK_LANE_IDLE);
}

/* ---- drain budget ------------------------------------------------------- */

static wk_lane *woken[8];
static int nwoken;

static void on_wake(wk_lane *l, void *opaque)
{
    (void)opaque;
    if (nwoken < 8)
        woken[nwoken++] = l;
}

static void test_budget(void)
{
    wk_drain_budget b;
    wk_lane a, c, e, f;
    wk_lane_init(&a, "a", 0, 1);
    wk_lane_init(&c, "c", 0, 1);
    wk_lane_init(&e, "e", 0, 1);
    wk_lane_init(&f, "f", 0, 1);
    nwoken = 0;
    wk_drain_budget_init(&b, 10, 4, on_wake, NULL);
    CHECK_INT(wk_drain_take(&b, &a, 256), 4); /* at most a chunk */
    CHECK_INT(wk_drain_take(&b, &c, 3), 3);   /* at most what it wants */
    CHECK_INT(wk_drain_take(&b, &e, 256), 3); /* what is left */
    CHECK_INT(b.used, 10);
    CHECK_INT(b.peak, 10);
    /* the bound is hit: the next lane waits */
    CHECK_INT(wk_drain_take(&b, &f, 256), 0);
    CHECK(f.budget_wait);
    CHECK_INT(b.waits, 1);
    CHECK_INT(b.waiting, 1);
    CHECK_INT(wk_drain_take(&b, &f, 256), 0); /* still waiting, once */
    CHECK_INT(b.waits, 1);
    /* a lane that comes later waits behind it, even when some is free */
    wk_drain_give(&b, 1);
    CHECK_INT(nwoken, 1);
    CHECK(woken[0] == &f);
    CHECK_INT(f.granted, 1);
    CHECK_INT(b.used, 10);
    CHECK_INT(wk_drain_take(&b, &a, 256), 0);
    CHECK_INT(wk_drain_take(&b, &c, 256), 0);
    CHECK_INT(b.waiting, 2);
    /* the granted lane takes its grant */
    CHECK_INT(wk_drain_take(&b, &f, 256), 1);
    CHECK_INT(f.granted, 0);
    /* deliveries finish: waiters are granted in order */
    wk_drain_give(&b, 6);
    CHECK_INT(nwoken, 3);
    CHECK(woken[1] == &a);
    CHECK(woken[2] == &c);
    CHECK_INT(a.granted, 4);
    CHECK_INT(c.granted, 2);
    CHECK_INT(b.used, 10);
    CHECK_INT(b.waiting, 0);
    /* a grant larger than wanted: the rest goes back */
    CHECK_INT(wk_drain_take(&b, &a, 1), 1);
    CHECK_INT(b.used, 7);
    /* a waiting lane that goes away leaves the list; a granted one gives
     * its grant back */
    CHECK_INT(wk_drain_take(&b, &e, 256), 3);
    CHECK_INT(b.used, 10);
    CHECK_INT(wk_drain_take(&b, &f, 256), 0);
    wk_drain_cancel(&b, &f);
    CHECK(!f.budget_wait);
    CHECK_INT(b.waiting, 0);
    CHECK(b.wait_head == NULL && b.wait_tail == NULL);
    wk_drain_cancel(&b, &c); /* its 2 back */
    CHECK_INT(b.used, 8);
    CHECK_INT(c.granted, 0);
    /* never more than max in use */
    CHECK_INT(wk_drain_take(&b, &f, 256), 2);
    CHECK_INT(b.used, 10);
    CHECK_INT(wk_drain_take(&b, &c, 256), 0);
    CHECK_INT(wk_drain_take(&b, &a, 256), 0);
    wk_drain_cancel(&b, &c); /* from the head of the list */
    CHECK(b.wait_head == &a && b.wait_tail == &a);
    wk_drain_give(&b, 10);
    CHECK_INT(b.used, 4);
    CHECK_INT(a.granted, 4);
    wk_drain_cancel(&b, &a);
    CHECK_INT(b.used, 0);
    CHECK_INT(b.peak, 10); /* never above max */
}

/* Many lanes, a budget of max (1 or 3): whatever order they ask and give
 * back in, never more than max in use, every waiter is granted in turn,
 * and all of it comes back. */
static void budget_many(size_t max)
{
    enum { LANES = 50 };
    static wk_lane ls[LANES];
    wk_drain_budget b;
    nwoken = 0;
    wk_drain_budget_init(&b, max, 256, on_wake, NULL);
    size_t held[LANES] = {0};
    for (int i = 0; i < LANES; i++) {
        wk_lane_init(&ls[i], "l", 0, 1);
        held[i] = wk_drain_take(&b, &ls[i], 2);
    }
    CHECK_INT(b.used, max);
    /* max 3: 2 + 1 taken, max 1: 1 taken; the rest wait */
    CHECK_INT(b.waiting, LANES - (max == 3 ? 2 : 1));
    int rounds = 0;
    for (int done = 0; done < LANES && rounds < 10000; rounds++) {
        done = 0;
        for (int i = 0; i < LANES; i++) {
            if (held[i] == (size_t)-1) {
                done++;
                continue;
            }
            if (held[i] > 0) { /* its deliveries finished */
                size_t n = held[i];
                held[i] = (size_t)-1;
                wk_drain_give(&b, n);
            } else if (ls[i].granted > 0) {
                held[i] = wk_drain_take(&b, &ls[i], 2);
            }
            CHECK(b.used <= max);
        }
    }
    CHECK(rounds < 10000); /* nobody starved */
    CHECK_INT(b.used, 0);
    CHECK_INT(b.waiting, 0);
    CHECK_INT(b.peak, max);
    CHECK(b.waits >= LANES - 2);
}

static void test_budget_many(void)
{
    budget_many(3);
    budget_many(1);
}

static void give_too_much(void)
{
    wk_drain_budget b;
    wk_drain_budget_init(&b, 10, 4, on_wake, NULL);
    wk_drain_give(&b, 1);
}

static void test_budget_invalid(void) { CHECK(aborts(give_too_much)); }

/* ---- partitions ----------------------------------------------------------- */

static void test_parts(void)
{
    static wk_parts ps;
    memset(&ps, 0, sizeof(ps));
    CHECK(wk_parts_valid(0));
    CHECK(wk_parts_valid(WK_PARTS_MAX - 1));
    CHECK(!wk_parts_valid(WK_PARTS_MAX));
    CHECK(!wk_parts_valid(-1));
    CHECK(!wk_parts_assigned(&ps, WK_PARTS_MAX));
    CHECK_INT(wk_parts_next_unloaded(&ps, 0), -1);
    wk_parts_assign(&ps, 5);
    wk_parts_assign(&ps, 9);
    CHECK(wk_parts_assigned(&ps, 5));
    CHECK_INT(wk_parts_epoch(&ps, 5), 0);
    CHECK_INT(wk_parts_next_unloaded(&ps, 0), 5);
    CHECK_INT(wk_parts_next_unloaded(&ps, 6), 9);
    /* held until loaded, in arrival order */
    wk_parts_hold(&ps, 5, &entries[0]);
    wk_parts_hold(&ps, 5, &entries[1]);
    wk_lane_entry *e = wk_parts_loaded(&ps, 5, 12);
    CHECK(e == &entries[0] && e->next == &entries[1] && !e->next->next);
    CHECK_INT(wk_parts_epoch(&ps, 5), 12);
    CHECK_INT(wk_parts_next_unloaded(&ps, 0), 9);
    /* revoked: what is held comes back, the epoch is forgotten */
    wk_parts_hold(&ps, 9, &entries[2]);
    e = wk_parts_revoke(&ps, 9);
    CHECK(e == &entries[2] && !e->next);
    CHECK(!wk_parts_assigned(&ps, 9));
    CHECK_INT(wk_parts_next_unloaded(&ps, 0), -1);
    /* re-assigned: taken afresh */
    wk_parts_assign(&ps, 5);
    CHECK_INT(wk_parts_epoch(&ps, 5), 0);
    CHECK_INT(wk_parts_next_unloaded(&ps, 0), 5);
}

/* What a partition placed: dispatched messages and the end of the
 * partition, the end reached while messages were held counting only once
 * they are dispatched; a revoke forgets it. */
static void test_parts_placed(void)
{
    static wk_parts ps;
    memset(&ps, 0, sizeof(ps));
    wk_parts_assign(&ps, 3);
    CHECK_INT(wk_parts_placed_below(&ps, 3), -1);
    wk_parts_hold(&ps, 3, &entries[0]);
    wk_parts_eof(&ps, 3, 40); /* reached while holding */
    CHECK_INT(wk_parts_placed_below(&ps, 3), -1);
    (void)wk_parts_loaded(&ps, 3, 1);
    wk_parts_placed(&ps, 3, 20); /* the held message, dispatched */
    CHECK_INT(wk_parts_placed_below(&ps, 3), 20);
    wk_parts_settle(&ps, 3);
    CHECK_INT(wk_parts_placed_below(&ps, 3), 40);
    wk_parts_placed(&ps, 3, 30); /* never backwards */
    CHECK_INT(wk_parts_placed_below(&ps, 3), 40);
    wk_parts_placed(&ps, 3, 41);
    wk_parts_eof(&ps, 3, 45);
    CHECK_INT(wk_parts_placed_below(&ps, 3), 45);
    wk_parts_eof(&ps, 7, 99); /* not assigned: ignored */
    CHECK_INT(wk_parts_placed_below(&ps, 7), -1);
    (void)wk_parts_revoke(&ps, 3);
    CHECK_INT(wk_parts_placed_below(&ps, 3), -1);
    wk_parts_assign(&ps, 3);
    CHECK_INT(wk_parts_placed_below(&ps, 3), -1);
    CHECK_INT(wk_parts_placed_below(&ps, WK_PARTS_MAX), -1);
}

TEST_MAIN(test_spill, test_block, test_retry_admission, test_drain_reopen,
          test_table, test_invalid, test_limits, test_budget,
          test_budget_many, test_budget_invalid, test_parts,
          test_parts_placed)
