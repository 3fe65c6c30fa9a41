/*
 * fuzz_metrics.c - libFuzzer target for the operations server's request
 * parsing in lib/metrics.c (wh_metrics_request_complete and
 * wh_metrics_request_parse). The input is what a client sends, read in
 * pieces whose sizes come from the input itself: the end of the header
 * block is found at the same byte however the bytes arrive, and only
 * within WH_METRICS_REQUEST_MAX (the server answers 431 past it); a
 * complete request is parsed from a buffer of exactly its size, and a
 * request it routes is "GET|HEAD /path HTTP/1.x" with a target inside the
 * buffer, starting with '/', without space, query or fragment.
 * Seeds: corpus/fuzz_metrics/; dictionary: http.dict.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "metrics.h"

/* The shortest prefix of data[0..n) that holds "\n\n" or "\n\r\n" (the
 * end of the header block, read independently), else 0. */
static size_t first_complete(const char *data, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (data[i] != '\n')
            continue;
        if (i + 1 < n && data[i + 1] == '\n')
            return i + 2;
        if (i + 2 < n && data[i + 1] == '\r' && data[i + 2] == '\n')
            return i + 3;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t n = size < WH_METRICS_REQUEST_MAX ? size : WH_METRICS_REQUEST_MAX;
    const char *req = (const char *)data;

    /* read in pieces: piece sizes 1..64 from a generator seeded by the
     * length, the way recv() may split a request */
    size_t want = first_complete(req, n), got = 0, have = 0;
    uint32_t x = (uint32_t)size * 2654435761u + 1;
    while (have < n) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        size_t from = have;
        have += 1 + x % 64;
        if (have > n)
            have = n;
        if (wh_metrics_request_complete(req, have, from)) {
            got = have;
            break;
        }
    }
    if (want == 0) {
        REQUIRE(got == 0);
        REQUIRE(!wh_metrics_request_complete(req, n, 0));
        return 0;
    }
    /* complete exactly from the byte that ends the block, and at the
     * first piece that holds it */
    REQUIRE(wh_metrics_request_complete(req, want, 0));
    REQUIRE(!wh_metrics_request_complete(req, want - 1, 0));
    REQUIRE(got >= want && got - want < 64);
    REQUIRE(wh_metrics_request_complete(req, got, 0));

    char *copy = malloc(got);
    REQUIRE(copy != NULL);
    memcpy(copy, req, got);
    wh_metrics_request r;
    wh_metrics_request_parse(copy, got, &r);
    REQUIRE(r.status == 0 || r.status == 400 || r.status == 405);
    if (r.status == 0) {
        size_t line = strcspn(req, "\r\n");
        bool get = line >= 4 && memcmp(req, "GET ", 4) == 0;
        bool head = line >= 5 && memcmp(req, "HEAD ", 5) == 0;
        REQUIRE(get || head);
        REQUIRE(r.head == head);
        REQUIRE(r.target >= copy && r.target < copy + got);
        size_t tlen = strlen(r.target);
        REQUIRE(r.target + tlen < copy + got);
        REQUIRE(r.target[0] == '/');
        REQUIRE(strcspn(r.target, " ?#") == tlen);
        REQUIRE(memcmp(req + (head ? 5 : 4), r.target, tlen) == 0);
        const char *v = req + (head ? 5 : 4) + strcspn(req + (head ? 5 : 4),
                                                        " ");
        REQUIRE(strncmp(v, " HTTP/1.1", 9) == 0 ||
                strncmp(v, " HTTP/1.0", 9) == 0);
    }
    free(copy);
    return 0;
}
