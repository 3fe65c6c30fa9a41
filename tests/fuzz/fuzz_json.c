/*
 * fuzz_json.c - libFuzzer target for lib/json.c. Parses the input; when it
 * is valid, checks the token invariants and helpers, compacts the root,
 * re-parses the compact form and requires it to compact to itself. Built
 * and run by make fuzz (tests/fuzz/README.md); seeds: corpus/fuzz_json/,
 * dictionary: envelope.dict.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "json.h"

#define MAX_TOKENS 4096

/* Token links, iteration, lookup and the value readers agree. */
static void check_tokens(const wh_json *d)
{
    REQUIRE(d->ntoks >= 1 && d->toks[0].next == d->ntoks);
    for (int32_t i = 0; i < d->ntoks; i++) {
        const wh_json_tok *t = &d->toks[i];
        REQUIRE(t->start < t->end && t->end <= d->len);
        REQUIRE(t->next > i && t->next <= d->ntoks);
        if (t->type == WH_JSON_OBJECT || t->type == WH_JSON_ARRAY) {
            int32_t n = 0, last = -1;
            for (int32_t c = wh_json_child(d, i); c >= 0;
                 c = wh_json_next(d, c)) {
                REQUIRE(c > i && c < t->next);
                if (t->type == WH_JSON_OBJECT) {
                    REQUIRE(d->toks[c].type == WH_JSON_STRING);
                    REQUIRE(wh_json_next(d, c + 1) == wh_json_next(d, c));
                }
                last = c;
                n++;
            }
            REQUIRE(n == t->size);
            if (last >= 0) {
                int32_t lv = t->type == WH_JSON_OBJECT ? last + 1 : last;
                REQUIRE(d->toks[lv].next == t->next);
            }
        } else {
            REQUIRE(t->size == 0 && t->next == i + 1);
            REQUIRE(wh_json_child(d, i) == -1);
        }
        if (t->type == WH_JSON_STRING) {
            size_t cap = t->end - t->start, n = 0;
            char *s = malloc(cap);
            REQUIRE(s != NULL);
            REQUIRE(wh_json_string(d, i, s, cap, &n) == WH_OK);
            REQUIRE(s[n] == '\0' && n + 1 <= cap);
            if (strlen(s) == n)
                REQUIRE(wh_json_streq(d, i, s) == 1);
            free(s);
        }
        if (t->type == WH_JSON_NUMBER) {
            int64_t v;
            (void)wh_json_int64(d, i, &v);
        }
    }
    /* Looking up each key of an object finds a member with an equal key. */
    for (int32_t i = 0; i < d->ntoks; i++) {
        if (d->toks[i].type != WH_JSON_OBJECT)
            continue;
        for (int32_t k = wh_json_child(d, i); k >= 0; k = wh_json_next(d, k)) {
            size_t cap = d->toks[k].end - d->toks[k].start, n = 0;
            char *key = malloc(cap);
            REQUIRE(key != NULL);
            REQUIRE(wh_json_string(d, k, key, cap, &n) == WH_OK);
            if (strlen(key) == n) {
                int32_t v = wh_json_get(d, i, key);
                REQUIRE(v > i && v <= k + 1);
                REQUIRE(wh_json_streq(d, v - 1, key));
            }
            free(key);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static wh_json d1, d2; /* reused across runs, as the worker does */
    char err[WH_ERRLEN];

    if (wh_json_parse(&d1, (const char *)data, size, MAX_TOKENS, err,
                      sizeof(err)) != WH_OK) {
        REQUIRE(strncmp(err, "invalid JSON at byte ", 21) == 0 ||
                strncmp(err, "JSON ", 5) == 0);
        return 0;
    }
    check_tokens(&d1);

    size_t span = d1.toks[0].end - d1.toks[0].start;
    char *c1 = malloc(span), *c2 = malloc(span);
    REQUIRE(c1 && c2);
    size_t n1 = wh_json_compact(&d1, 0, c1);
    REQUIRE(n1 > 0 && n1 <= span);

    REQUIRE(wh_json_parse(&d2, c1, n1, MAX_TOKENS, err, sizeof(err)) == WH_OK);
    REQUIRE(d2.ntoks == d1.ntoks);
    for (int32_t i = 0; i < d1.ntoks; i++) {
        REQUIRE(d2.toks[i].type == d1.toks[i].type);
        REQUIRE(d2.toks[i].size == d1.toks[i].size);
        REQUIRE(d2.toks[i].next == d1.toks[i].next);
    }
    check_tokens(&d2);
    size_t n2 = wh_json_compact(&d2, 0, c2);
    REQUIRE(n2 == n1 && memcmp(c1, c2, n1) == 0);

    free(c1);
    free(c2);
    return 0;
}
