/* Unit tests for lib/map.c: insert, replace, delete, growth, tombstones. */
#include <stdio.h>

#include "map.h"
#include "test.h"

static void test_basic(void)
{
    wh_map *m = wh_map_new();
    void *old = (void *)1;
    CHECK(wh_map_get(m, "a") == NULL);
    CHECK_INT(wh_map_put(m, "a", (void *)10, &old), WH_OK);
    CHECK(old == NULL);
    CHECK_INT(wh_map_put(m, "a", (void *)11, &old), WH_OK);
    CHECK(old == (void *)10);
    CHECK(wh_map_get(m, "a") == (void *)11);
    CHECK_INT(wh_map_size(m), 1);
    CHECK(wh_map_del(m, "a") == (void *)11);
    CHECK(wh_map_get(m, "a") == NULL);
    CHECK(wh_map_del(m, "a") == NULL);
    CHECK_INT(wh_map_size(m), 0);
    wh_map_destroy(m);
}

static void count_fn(const char *k, void *v, void *opaque)
{
    (void)k;
    *(long *)opaque += (long)(intptr_t)v;
}

static void test_many(void)
{
    wh_map *m = wh_map_new();
    char key[32];
    int ok = 1;
    for (int i = 0; i < 100000; i++) {
        snprintf(key, sizeof(key), "ep_%d", i);
        ok &= wh_map_put(m, key, (void *)(intptr_t)(i + 1), NULL) == WH_OK;
    }
    CHECK(ok);
    CHECK_INT(wh_map_size(m), 100000);
    /* delete odd keys, re-add some: tombstones must not break lookups */
    for (int i = 1; i < 100000; i += 2) {
        snprintf(key, sizeof(key), "ep_%d", i);
        ok &= wh_map_del(m, key) == (void *)(intptr_t)(i + 1);
    }
    CHECK(ok);
    CHECK_INT(wh_map_size(m), 50000);
    for (int i = 0; i < 100000; i += 2) {
        snprintf(key, sizeof(key), "ep_%d", i);
        ok &= wh_map_get(m, key) == (void *)(intptr_t)(i + 1);
    }
    CHECK(ok);
    for (int round = 0; round < 5; round++)
        for (int i = 1; i < 1000; i += 2) {
            snprintf(key, sizeof(key), "ep_%d", i);
            ok &= wh_map_put(m, key, (void *)1, NULL) == WH_OK;
            ok &= wh_map_del(m, key) == (void *)1;
        }
    CHECK(ok);
    long sum = 0;
    wh_map_each(m, count_fn, &sum);
    CHECK_INT(sum, 2500000000L); /* 1 + 3 + ... + 99999 */
    wh_map_destroy(m);
}

TEST_MAIN(test_basic, test_many)
