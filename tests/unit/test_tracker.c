/* Unit tests for worker/tracker.c: offsets are released only as a done
 * prefix, revoked partitions store nothing and free themselves, items of an
 * unassigned partition are refused. */
#include <stdlib.h>

#include "test.h"
#include "tracker.h"

static int released;

static void release(wk_item *item)
{
    released++;
    free(item);
}

static wk_item *item(void) { return calloc(1, sizeof(wk_item)); }

static void test_prefix(void)
{
    wk_tracker *t = wk_tracker_new(release);
    released = 0;
    wk_tracker_assign(t, 3);
    wk_item *a = item(), *b = item(), *c = item();
    CHECK_INT(wk_tracker_add(t, a, 3, 10), WH_OK);
    CHECK_INT(wk_tracker_add(t, b, 3, 11), WH_OK);
    CHECK_INT(wk_tracker_add(t, c, 3, 15), WH_OK);
    CHECK_INT(wk_tracker_pending(t), 3);
    wk_tracker_done(t, c, NULL); /* later offset first: nothing released */
    CHECK_INT(released, 0);
    wk_tracker_done(t, b, NULL);
    CHECK_INT(released, 0);
    CHECK_INT(wk_tracker_pending(t), 3);
    wk_tracker_done(t, a, NULL); /* head done: all three go */
    CHECK_INT(released, 3);
    CHECK_INT(wk_tracker_pending(t), 0);
    wk_tracker_destroy(t);
}

static void test_unassigned(void)
{
    wk_tracker *t = wk_tracker_new(release);
    wk_item *a = item();
    CHECK_INT(wk_tracker_add(t, a, 1, 0), WH_DECLINED);
    CHECK_INT(wk_tracker_add(t, a, -1, 0), WH_DECLINED);
    CHECK_INT(wk_tracker_add(t, a, 5000, 0), WH_DECLINED);
    free(a);
    wk_tracker_destroy(t);
}

static void test_revoke(void)
{
    wk_tracker *t = wk_tracker_new(release);
    released = 0;
    wk_tracker_assign(t, 0);
    wk_item *a = item(), *b = item();
    CHECK_INT(wk_tracker_add(t, a, 0, 1), WH_OK);
    CHECK_INT(wk_tracker_add(t, b, 0, 2), WH_OK);
    wk_tracker_revoke(t, 0);
    CHECK(wk_item_revoked(a));
    /* a new assignment is a fresh state: old items never store into it */
    wk_tracker_assign(t, 0);
    wk_item *c = item();
    CHECK_INT(wk_tracker_add(t, c, 0, 1), WH_OK);
    CHECK(!wk_item_revoked(c));
    wk_tracker_done(t, b, NULL);
    wk_tracker_done(t, a, NULL); /* revoked state freed with its items */
    CHECK_INT(released, 2);
    wk_tracker_done(t, c, NULL);
    CHECK_INT(released, 3);
    CHECK_INT(wk_tracker_pending(t), 0);
    wk_tracker_destroy(t);
}

static void test_destroy_releases(void)
{
    wk_tracker *t = wk_tracker_new(release);
    released = 0;
    wk_tracker_assign(t, 7);
    for (int i = 0; i < 100; i++)
        CHECK_INT(wk_tracker_add(t, item(), 7, i), WH_OK);
    wk_tracker_destroy(t); /* undone items are released, never stored */
    CHECK_INT(released, 100);
}

/* Items of revoked partitions that are never done (shutdown: the consumer
 * closed with work in flight) are released at destroy too; they used to
 * leak, and librdkafka's destroy waited for their messages forever. */
static void test_destroy_releases_revoked(void)
{
    wk_tracker *t = wk_tracker_new(release);
    released = 0;
    for (int p = 0; p < 3; p++) {
        wk_tracker_assign(t, p);
        for (int i = 0; i < 10; i++)
            CHECK_INT(wk_tracker_add(t, item(), p, i), WH_OK);
    }
    wk_item *done = item();
    wk_tracker_assign(t, 3);
    CHECK_INT(wk_tracker_add(t, done, 3, 0), WH_OK);
    for (int p = 0; p < 4; p++)
        wk_tracker_revoke(t, p);
    wk_tracker_done(t, done, NULL); /* partition 3 leaves the revoked list */
    CHECK_INT(released, 1);
    CHECK_INT(wk_tracker_pending(t), 30);
    wk_tracker_destroy(t);
    CHECK_INT(released, 31);
}

/* wk_tracker_rewind: the offsets each partition starts again at. */
static int64_t rewound[8];
static int rewinds;

static void note_rewind(int32_t partition, int64_t offset, void *opaque)
{
    (void)opaque;
    rewound[partition] = offset;
    rewinds++;
}

static void test_rewind(void)
{
    wk_tracker *t = wk_tracker_new(release);
    released = 0;
    rewinds = 0;
    for (int p = 0; p < 8; p++)
        rewound[p] = -1;
    wk_tracker_assign(t, 1);
    wk_tracker_assign(t, 2);
    wk_tracker_assign(t, 4);
    wk_item *a = item(), *b = item(), *c = item(), *d = item(), *e = item();
    CHECK_INT(wk_tracker_add(t, a, 1, 10), WH_OK);
    CHECK_INT(wk_tracker_add(t, b, 1, 11), WH_OK);
    CHECK_INT(wk_tracker_add(t, c, 1, 12), WH_OK);
    CHECK_INT(wk_tracker_add(t, d, 2, 7), WH_OK);
    CHECK_INT(wk_tracker_add(t, e, 4, 3), WH_OK);
    wk_tracker_done(t, a, NULL); /* released: 1 starts again at 11 */
    wk_tracker_done(t, c, NULL); /* done behind b: given up with it */
    wk_tracker_revoke(t, 4);     /* revoked: given up, not sought */
    CHECK_INT(released, 1);
    wk_tracker_rewind(t, note_rewind, NULL);
    CHECK_INT(rewinds, 2);
    CHECK_INT(rewound[1], 11);
    CHECK_INT(rewound[2], 7);
    CHECK_INT(rewound[4], -1);
    CHECK_INT(released, 5);
    CHECK_INT(wk_tracker_pending(t), 0);
    /* the partitions stay assigned and take offsets from the start again */
    wk_item *f = item();
    CHECK_INT(wk_tracker_add(t, f, 1, 11), WH_OK);
    wk_item *g = item();
    CHECK_INT(wk_tracker_add(t, g, 4, 3), WH_DECLINED); /* still revoked */
    free(g);
    wk_tracker_done(t, f, NULL);
    CHECK_INT(released, 6);
    wk_tracker_destroy(t);
}

TEST_MAIN(test_prefix, test_unassigned, test_revoke, test_destroy_releases,
          test_destroy_releases_revoked, test_rewind)
