/*
 * test_pattern.c - unit tests for lib/pattern.c: pattern and event-type
 * validation with their limits, single-pattern matching semantics
 * ("*" one segment, trailing "**" one or more), filter lists, and a
 * check that matching agrees with a naive reference on generated input.
 */
#include <stdlib.h>
#include <string.h>

#include "pattern.h"
#include "test.h"

static void test_check(void)
{
    static const char *const good[] = {
        "invoice.paid", "*",       "**",          "order.*",
        "order.**",     "*.paid",  "*.*",         "a.*.c.**",
        "A_b-c:d.e9",   "x",       "order.*.**",  "urn:x:y",
    };
    char err[WH_ERRLEN];
    for (size_t i = 0; i < WH_ARRAY_LEN(good); i++) {
        int rc = wh_pattern_check(good[i], err, sizeof(err));
        if (rc != WH_OK)
            fprintf(stderr, "rejected %s: %s\n", good[i], err);
        CHECK_INT(rc, WH_OK);
    }

    static const struct {
        const char *p, *err;
    } bad[] = {
        {"", "pattern is empty"},
        {".", "pattern '.' has an empty segment"},
        {"order.", "pattern 'order.' has an empty segment"},
        {".order", "pattern '.order' has an empty segment"},
        {"a..b", "pattern 'a..b' has an empty segment"},
        {"order.pa*", "pattern 'order.pa*': '*' must be a whole segment ('*' "
                      "or '**')"},
        {"order*", "pattern 'order*': '*' must be a whole segment ('*' or "
                   "'**')"},
        {"***", "pattern '***': '*' must be a whole segment ('*' or '**')"},
        {"a.***", "pattern 'a.***': '*' must be a whole segment ('*' or "
                  "'**')"},
        {"**.paid", "pattern '**.paid': '**' must be the last segment"},
        {"a.**.b", "pattern 'a.**.b': '**' must be the last segment"},
        {"order paid", "pattern 'order paid' contains the invalid character "
                       "byte 0x20"},
        {"order/paid", "pattern 'order/paid' contains the invalid character "
                       "'/'"},
        {"order,paid", "pattern 'order,paid' contains the invalid character "
                       "','"},
        {"caf\xc3\xa9", NULL},
        {"a\nb", NULL},
        {"a?", NULL},
    };
    for (size_t i = 0; i < WH_ARRAY_LEN(bad); i++) {
        err[0] = '\0';
        CHECK_INT(wh_pattern_check(bad[i].p, err, sizeof(err)), WH_ERR);
        if (bad[i].err)
            CHECK_STR(err, bad[i].err);
        else
            CHECK(err[0] != '\0');
    }
}

static void test_limits(void)
{
    char p[WH_TYPE_MAX + 2], err[WH_ERRLEN];

    memset(p, 'a', WH_TYPE_MAX);
    p[WH_TYPE_MAX] = '\0';
    CHECK_INT(wh_pattern_check(p, err, sizeof(err)), WH_OK);
    CHECK_INT(wh_pattern_type_check(p, err, sizeof(err)), WH_OK);
    p[WH_TYPE_MAX - 2] = '.';
    p[WH_TYPE_MAX - 1] = '*';
    CHECK_INT(wh_pattern_check(p, err, sizeof(err)), WH_OK);
    CHECK_INT(wh_pattern_type_check(p, err, sizeof(err)), WH_ERR);
    memset(p, 'a', WH_TYPE_MAX + 1);
    p[WH_TYPE_MAX + 1] = '\0';
    CHECK_INT(wh_pattern_check(p, err, sizeof(err)), WH_ERR);
    CHECK(strstr(err, "is longer than 256 bytes") != NULL);
    CHECK(strlen(err) < 120);
    CHECK_INT(wh_pattern_type_check(p, err, sizeof(err)), WH_ERR);
    CHECK(strncmp(err, "event type '", 12) == 0);
}

static void test_type_check(void)
{
    char err[WH_ERRLEN];

    CHECK_INT(wh_pattern_type_check("invoice.paid", err, sizeof(err)), WH_OK);
    CHECK_INT(wh_pattern_type_check("a-b_c:d.E1", err, sizeof(err)), WH_OK);
    CHECK_INT(wh_pattern_type_check("", err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "event type is empty");
    CHECK_INT(wh_pattern_type_check("order.*", err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "event type 'order.*' contains the invalid character '*'");
    CHECK_INT(wh_pattern_type_check("order..paid", err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "event type 'order..paid' has an empty segment");
    CHECK_INT(wh_pattern_type_check("order.", err, sizeof(err)), WH_ERR);
}

static void test_match(void)
{
    static const struct {
        const char *p, *t;
        int want;
    } cases[] = {
        {"invoice.paid", "invoice.paid", 1},
        {"invoice.paid", "invoice.paid.late", 0},
        {"invoice.paid", "invoice", 0},
        {"invoice.paid", "invoice.pai", 0},
        {"invoice.pai", "invoice.paid", 0},
        {"invoice.paid", "Invoice.paid", 0},
        {"*", "invoice.paid", 1},
        {"*", "x", 1},
        {"*", "a.b.c.d", 1},
        {"**", "a.b.c.d", 1},
        {"*", "", 0},
        {"order.*", "order.paid", 1},
        {"order.*", "order.paid.late", 0},
        {"order.*", "order", 0},
        {"order.*", "order.", 0},
        {"order.*", "orders.paid", 0},
        {"order.*", "ord.paid", 0},
        {"order.**", "order.paid", 1},
        {"order.**", "order.paid.late", 1},
        {"order.**", "order.a.b.c.d.e", 1},
        {"order.**", "order", 0},
        {"order.**", "order.", 0},
        {"order.**", "orders.paid", 0},
        {"*.paid", "order.paid", 1},
        {"*.paid", "invoice.paid", 1},
        {"*.paid", "paid", 0},
        {"*.paid", "a.b.paid", 0},
        {"*.*", "a.b", 1},
        {"*.*", "a", 0},
        {"*.*", "a.b.c", 0},
        {"a.*.c", "a.b.c", 1},
        {"a.*.c", "a.bb.c", 1},
        {"a.*.c", "a.b.d", 0},
        {"a.*.c", "a..c", 0},
        {"a.*.c.**", "a.x.c.d", 1},
        {"a.*.c.**", "a.x.c", 0},
        {"order.*.**", "order.a", 0},
        {"order.*.**", "order.a.b", 1},
        {"x", "x", 1},
        {"x", "", 0},
        {"", "", 0},
        {"", "x", 0},
        {"urn:a.*", "urn:a.b", 1},
    };
    for (size_t i = 0; i < WH_ARRAY_LEN(cases); i++) {
        int got = wh_pattern_match(cases[i].p, cases[i].t);
        if (got != cases[i].want)
            fprintf(stderr, "'%s' vs '%s': ", cases[i].p, cases[i].t);
        CHECK_INT(got, cases[i].want);
    }
}

static void test_list(void)
{
    char err[WH_ERRLEN];

    CHECK_INT(wh_pattern_list_check("invoice.paid", err, sizeof(err)), WH_OK);
    CHECK_INT(wh_pattern_list_check("invoice.paid, order.* ,user.**", err,
                                    sizeof(err)),
              WH_OK);
    CHECK_INT(wh_pattern_list_check("*", err, sizeof(err)), WH_OK);
    CHECK_INT(wh_pattern_list_check("", err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "filter list is empty (use * for every event type)");
    CHECK_INT(wh_pattern_list_check("  ", err, sizeof(err)), WH_ERR);
    CHECK_INT(wh_pattern_list_check("a,,b", err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "filter list entry 2 is empty");
    CHECK_INT(wh_pattern_list_check("a, ", err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "filter list entry 2 is empty");
    CHECK_INT(wh_pattern_list_check(",a", err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "filter list entry 1 is empty");
    CHECK_INT(wh_pattern_list_check("a,b.**.c", err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "filter list entry 2: pattern 'b.**.c': '**' must be the "
                   "last segment");

    CHECK_INT(wh_pattern_list_match("invoice.paid, order.* ,user.**",
                                    "order.paid"),
              1);
    CHECK_INT(wh_pattern_list_match("invoice.paid, order.* ,user.**",
                                    "invoice.paid"),
              1);
    CHECK_INT(wh_pattern_list_match("invoice.paid, order.* ,user.**",
                                    "user.a.b"),
              1);
    CHECK_INT(wh_pattern_list_match("invoice.paid, order.* ,user.**",
                                    "order.paid.late"),
              0);
    CHECK_INT(wh_pattern_list_match("invoice.paid, order.* ,user.**",
                                    "invoice"),
              0);
    CHECK_INT(wh_pattern_list_match("a,b", "a,b"), 0);
    CHECK_INT(wh_pattern_list_match("", "a"), 0);
    CHECK_INT(wh_pattern_list_match(" , ", "a"), 0);
    CHECK_INT(wh_pattern_list_match("x, *", "anything.at.all"), 1);
    CHECK_INT(wh_pattern_list_match("\tinvoice.paid\t", "invoice.paid"), 1);

    /* limits: WH_PATTERN_LIST_MAX patterns, WH_PATTERN_LIST_LEN_MAX bytes */
    static char csv[WH_PATTERN_LIST_LEN_MAX + 2];
    size_t n = 0;
    for (int i = 0; i < WH_PATTERN_LIST_MAX; i++)
        n += (size_t)snprintf(csv + n, sizeof(csv) - n, "%st%d.*",
                              i ? "," : "", i);
    CHECK_INT(wh_pattern_list_check(csv, err, sizeof(err)), WH_OK);
    CHECK_INT(wh_pattern_list_match(csv, "t63.x"), 1);
    CHECK_INT(wh_pattern_list_match(csv, "t64.x"), 0);
    snprintf(csv + n, sizeof(csv) - n, ",t64.*");
    CHECK_INT(wh_pattern_list_check(csv, err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "filter list has more than 64 patterns");
    memset(csv, 'a', WH_PATTERN_LIST_LEN_MAX + 1);
    csv[WH_PATTERN_LIST_LEN_MAX + 1] = '\0';
    CHECK_INT(wh_pattern_list_check(csv, err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "filter list is longer than 4096 bytes");
    /* 4096 bytes of valid list: 16 patterns of 255 bytes + 15 commas
     * + 1 padding space */
    n = 0;
    for (int i = 0; i < 16; i++) {
        if (i)
            csv[n++] = ',';
        memset(csv + n, 'b', 255);
        n += 255;
    }
    csv[n++] = ' ';
    csv[n] = '\0';
    CHECK_INT(n, WH_PATTERN_LIST_LEN_MAX);
    CHECK_INT(wh_pattern_list_check(csv, err, sizeof(err)), WH_OK);
}

/* Reference matcher: splits both strings into segments and compares. */
static int ref_match(const char *p, const char *t)
{
    char pb[64], tb[64];
    char *ps[16], *ts[16];
    int np = 0, nt = 0;

    if (!*t)
        return 0;
    if (strcmp(p, t) == 0 || strcmp(p, "*") == 0 || strcmp(p, "**") == 0)
        return 1;
    snprintf(pb, sizeof(pb), "%s", p);
    snprintf(tb, sizeof(tb), "%s", t);
    for (char *s = pb, *tok; (tok = strsep(&s, ".")) != NULL;)
        ps[np++] = tok;
    for (char *s = tb, *tok; (tok = strsep(&s, ".")) != NULL;)
        ts[nt++] = tok;
    for (int i = 0; i < np; i++) {
        if (strcmp(ps[i], "**") == 0 && i == np - 1) {
            if (i >= nt)
                return 0;
            for (int j = i; j < nt; j++) {
                if (!*ts[j])
                    return 0;
            }
            return 1;
        }
        if (i >= nt || !*ts[i])
            return 0;
        if (strcmp(ps[i], "*") != 0 && strcmp(ps[i], ts[i]) != 0)
            return 0;
    }
    return np == nt;
}

static void test_against_reference(void)
{
    static const char *const psegs[] = {"a", "b", "*", "**"};
    static const char *const tsegs[] = {"a", "b", "c"};
    char p[64], t[64], err[WH_ERRLEN];
    int checked = 0, mismatches = 0;

    srand(7);
    for (int iter = 0; iter < 20000; iter++) {
        int np = 1 + rand() % 4, nt = 1 + rand() % 5;
        size_t n = 0;
        for (int i = 0; i < np; i++)
            n += (size_t)snprintf(p + n, sizeof(p) - n, "%s%s", i ? "." : "",
                                  psegs[rand() % 4]);
        n = 0;
        for (int i = 0; i < nt; i++)
            n += (size_t)snprintf(t + n, sizeof(t) - n, "%s%s", i ? "." : "",
                                  tsegs[rand() % 3]);
        if (wh_pattern_check(p, err, sizeof(err)) != WH_OK)
            continue;
        checked++;
        if (wh_pattern_match(p, t) != ref_match(p, t)) {
            if (mismatches++ < 5)
                fprintf(stderr, "mismatch '%s' vs '%s'\n", p, t);
        }
    }
    CHECK(checked > 5000);
    CHECK_INT(mismatches, 0);
}

TEST_MAIN(test_check, test_limits, test_type_check, test_match, test_list,
          test_against_reference)
