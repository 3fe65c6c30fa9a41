/*
 * test_kafka.c - unit tests for the parts of lib/kafka.c that need no
 * broker: the key -> partition mapping (CRC32 of the key modulo the
 * count, checked against known CRC32 values and an independent bitwise
 * CRC32 for 10,000 keys and counts 1 to 64, 1000 and 1024) and the
 * producer's partition counts while the cluster cannot be reached (127.0.0.1
 * port 9, where nothing listens): not known yet, said why, never guessed;
 * the topic bound; a destroy that does not wait for a lookup beyond its
 * timeout. That the mapping is the one librdkafka's partitioner uses when
 * producing by key, and that sends reach the partition they name, is
 * checked against the mock cluster by tests/integration/test_partition.sh.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "kafka.h"
#include "test.h"
#include "wh.h"

/* CRC-32 (IEEE 802.3, reflected, as zlib's crc32), bit by bit: written
 * apart from librdkafka's table-driven one. */
static uint32_t ref_crc32(const void *data, size_t len)
{
    const unsigned char *p = data;
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < len; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return c ^ 0xFFFFFFFFu;
}

static int32_t part_of(const char *key, int32_t n)
{
    return wh_kafka_partition_of(key, strlen(key), n);
}

static void test_known_values(void)
{
    CHECK(ref_crc32("123456789", 9) == 0xCBF43926u); /* the check value */
    /* 0xCBF43926 = 3421780262 */
    CHECK_INT(part_of("123456789", 1000), 262);
    CHECK_INT(part_of("123456789", 8), 6);
    CHECK_INT(part_of("123456789", 3), 2);
    CHECK_INT(part_of("123456789", 2), 0);
    /* 0xDA6B7590 */
    CHECK_INT(part_of("ep_abcdefgh", 1000), 536);
    CHECK_INT(part_of("ep_abcdefgh", 3), 1);
    /* 0xE8B7BE43 */
    CHECK_INT(part_of("a", 8), 3);
    CHECK_INT(part_of("a", 2), 1);
}

static void test_matches_crc32(void)
{
    static const int32_t big[] = {1000, 1024, INT32_MAX};
    char key[64];
    int bad = 0, out_of_range = 0;
    for (int i = 0; i < 10000; i++) {
        int len = snprintf(key, sizeof(key), "ep_%08dx%d", i * 7919, i % 13);
        uint32_t crc = ref_crc32(key, (size_t)len);
        for (int32_t n = 1; n <= 64; n++) {
            int32_t p = wh_kafka_partition_of(key, (size_t)len, n);
            bad += p != (int32_t)(crc % (uint32_t)n);
            out_of_range += p < 0 || p >= n;
        }
        for (size_t j = 0; j < WH_ARRAY_LEN(big); j++) {
            int32_t p = wh_kafka_partition_of(key, (size_t)len, big[j]);
            bad += p != (int32_t)(crc % (uint32_t)big[j]);
            out_of_range += p < 0 || p >= big[j];
        }
    }
    CHECK_INT(bad, 0);
    CHECK_INT(out_of_range, 0);
}

static void test_edges(void)
{
    /* one partition: everything on 0 */
    CHECK_INT(part_of("ep_abcdefgh", 1), 0);
    CHECK_INT(part_of("123456789", 1), 0);
    /* the empty key: CRC32 0, partition 0 whatever the count */
    CHECK_INT(wh_kafka_partition_of("", 0, 7), 0);
    CHECK_INT(wh_kafka_partition_of(NULL, 0, 1000), 0);
    /* the length counts, not a terminator: "ab" != "a" */
    CHECK_INT(wh_kafka_partition_of("ab", 1, 1000), part_of("a", 1000));
    CHECK(part_of("ab", 1000) != part_of("a", 1000));
    /* bytes past a NUL count too */
    CHECK(wh_kafka_partition_of("a\0b", 3, 1000) !=
          wh_kafka_partition_of("a\0c", 3, 1000));
    /* keys spread: 8 partitions each get some of 800 keys */
    int hits[8] = {0};
    char key[32];
    for (int i = 0; i < 800; i++) {
        snprintf(key, sizeof(key), "ep_%d", i);
        hits[part_of(key, 8)]++;
    }
    for (int i = 0; i < 8; i++)
        CHECK(hits[i] > 50 && hits[i] < 150);
}

static double since_s(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) +
           (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

/* A producer whose cluster does not answer: counts stay unknown. */
static void test_count_unknown(void)
{
    char err[WH_ERRLEN];
    wh_kafka_conf kc = {.brokers = "127.0.0.1:9", .client_id = "test_kafka"};
    wh_kafka_producer *p = NULL;
    CHECK_INT(wh_kafka_producer_new(&kc, NULL, NULL, &p, err, sizeof(err)),
              WH_OK);
    if (!p)
        return;
    int32_t n = -7, part = -7;
    err[0] = '\0';
    CHECK_INT(wh_kafka_producer_partitions(p, "t.a", &n, err, sizeof(err)),
              WH_AGAIN);
    CHECK_INT(n, -7); /* not guessed */
    CHECK(strstr(err, "partition count of t.a is not known yet") != NULL);
    CHECK_INT(wh_kafka_producer_partition(p, "t.a", "k", 1, &part, err,
                                          sizeof(err)),
              WH_AGAIN);
    CHECK_INT(part, -7);
    /* the failed lookup (at most a second) is what err says next */
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc;
    while ((rc = wh_kafka_producer_partitions(p, "t.a", &n, err,
                                              sizeof(err))) == WH_AGAIN &&
           strstr(err, "looking it up") && since_s(&t0) < 10)
        nanosleep(&(struct timespec){.tv_nsec = 20 * 1000 * 1000}, NULL);
    CHECK_INT(rc, WH_AGAIN);
    CHECK(strstr(err, "looking it up") == NULL);
    CHECK(strstr(err, "not known yet: ") != NULL);
    /* WH_KAFKA_TOPICS_MAX topics, warmed ones included; then WH_ERR */
    wh_kafka_producer_warm(p, "t.b");
    CHECK_INT(wh_kafka_producer_partitions(p, "t.b", &n, err, sizeof(err)),
              WH_AGAIN);
    CHECK_INT(wh_kafka_producer_partitions(p, "t.c", &n, err, sizeof(err)),
              WH_AGAIN);
    CHECK_INT(wh_kafka_producer_partitions(p, "t.d", &n, err, sizeof(err)),
              WH_AGAIN);
    CHECK_INT(wh_kafka_producer_partitions(p, "t.e", &n, err, sizeof(err)),
              WH_ERR);
    CHECK(strstr(err, "at most 4 topics") != NULL);
    wh_kafka_producer_warm(p, "t.f"); /* full: ignored */
    CHECK_INT(wh_kafka_producer_partitions(p, "t.a", &n, err, sizeof(err)),
              WH_AGAIN);
    /* a send to an explicit partition is only queued (Kafka is away) */
    CHECK_INT(wh_kafka_producer_send(p, "t.a", 3, "k", 1, "v", 1, NULL, NULL,
                                     err, sizeof(err)),
              WH_OK);
    wh_kafka_producer_purge(p);
    /* destroy waits for a lookup under way: at most its one-second bound
     * (plus librdkafka's own stop) */
    clock_gettime(CLOCK_MONOTONIC, &t0);
    wh_kafka_producer_destroy(p);
    double took = since_s(&t0);
    printf("# destroy took %.3f s\n", took);
    CHECK(took < 3.0);
}

/* A lane's partition when the topic has it, else the key's. */
static void test_or_key(void)
{
    CHECK_INT(wh_kafka_partition_or_key(5, "123456789", 9, 1000), 5);
    CHECK_INT(wh_kafka_partition_or_key(0, "123456789", 9, 1000), 0);
    CHECK_INT(wh_kafka_partition_or_key(999, "123456789", 9, 1000), 999);
    CHECK_INT(wh_kafka_partition_or_key(-1, "123456789", 9, 1000), 262);
    CHECK_INT(wh_kafka_partition_or_key(1000, "123456789", 9, 1000), 262);
    CHECK_INT(wh_kafka_partition_or_key(INT32_MAX, "123456789", 9, 1000),
              262);
}

TEST_MAIN(test_known_values, test_matches_crc32, test_edges,
          test_count_unknown, test_or_key)
