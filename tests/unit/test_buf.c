/*
 * test_buf.c - unit tests for lib/buf.c: growth, the max bound, formatted
 * appends, reset/free reuse and the JSON string writer (escapes, UTF-8
 * pass-through and replacement, rollback on overflow).
 */
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "test.h"

static void test_empty(void)
{
    wh_buf b;
    wh_buf_init(&b, 16);
    CHECK(b.data == NULL);
    CHECK_INT(b.len, 0);
    CHECK_STR(wh_buf_cstr(&b), "");
    CHECK_INT(wh_buf_add(&b, NULL, 0), WH_OK);
    CHECK(b.data == NULL);
    wh_buf_free(&b);
    CHECK_STR(wh_buf_cstr(&b), "");
}

static void test_add_and_grow(void)
{
    wh_buf b;
    wh_buf_init(&b, 100000);
    CHECK_INT(wh_buf_add(&b, "abc", 3), WH_OK);
    CHECK_INT(b.len, 3);
    CHECK_STR(wh_buf_cstr(&b), "abc");
    CHECK_INT(wh_buf_addc(&b, 'd'), WH_OK);
    CHECK_STR(wh_buf_cstr(&b), "abcd");
    for (int i = 0; i < 1000; i++)
        CHECK_INT(wh_buf_add(&b, "0123456789", 10), WH_OK);
    CHECK_INT(b.len, 10004);
    CHECK(b.cap > b.len);
    CHECK_INT(b.data[b.len], '\0');
    CHECK_MEM(b.data + 9994, 10, "0123456789", 10);

    /* Embedded NUL bytes are content. */
    wh_buf_reset(&b);
    CHECK_INT(wh_buf_add(&b, "a\0b", 3), WH_OK);
    CHECK_INT(b.len, 3);
    CHECK_MEM(b.data, 4, "a\0b\0", 4);

    /* grow hands out room to fill in place, still NUL-terminated */
    void *at = &b;
    CHECK_INT(wh_buf_grow(&b, 0, &at), WH_OK);
    CHECK(at == NULL);
    CHECK_INT(b.len, 3);
    CHECK_INT(wh_buf_grow(&b, 5000, &at), WH_OK);
    CHECK(at == b.data + 3);
    CHECK_INT(b.len, 5003);
    CHECK_INT(b.data[b.len], '\0');
    memset(at, 'g', 5000);
    CHECK_INT(b.data[5002], 'g');
    wh_buf_free(&b);
}

static void test_max(void)
{
    wh_buf b;
    wh_buf_init(&b, 8);
    CHECK_INT(wh_buf_add(&b, "12345678", 8), WH_OK);
    CHECK_INT(b.len, 8);
    CHECK(b.cap <= 9);
    CHECK_STR(wh_buf_cstr(&b), "12345678");
    CHECK_INT(wh_buf_addc(&b, 'x'), WH_ERR);
    CHECK_INT(wh_buf_add(&b, "x", 1), WH_ERR);
    CHECK_INT(wh_buf_addf(&b, "%d", 1), WH_ERR);
    CHECK_INT(wh_buf_json_str(&b, "", 0), WH_ERR);
    void *at = &b;
    CHECK_INT(wh_buf_grow(&b, 1, &at), WH_ERR);
    CHECK(at == NULL);
    CHECK_INT(wh_buf_add(&b, "", 0), WH_OK);
    CHECK_STR(wh_buf_cstr(&b), "12345678");
    CHECK_INT(b.len, 8);

    /* One over the bound in a single add fails and leaves b unchanged. */
    wh_buf_reset(&b);
    CHECK_INT(wh_buf_add(&b, "123", 3), WH_OK);
    CHECK_INT(wh_buf_add(&b, "456789", 6), WH_ERR);
    CHECK_STR(wh_buf_cstr(&b), "123");
    CHECK_INT(wh_buf_add(&b, "45678", 5), WH_OK);
    CHECK_STR(wh_buf_cstr(&b), "12345678");

    /* A huge n must not wrap around the bound check. */
    CHECK_INT(wh_buf_add(&b, "x", (size_t)-1), WH_ERR);
    wh_buf_free(&b);

    /* max of 1 */
    wh_buf_init(&b, 1);
    CHECK_INT(wh_buf_addc(&b, 'z'), WH_OK);
    CHECK_INT(wh_buf_addc(&b, 'z'), WH_ERR);
    CHECK_STR(wh_buf_cstr(&b), "z");
    wh_buf_free(&b);
}

static void test_addf(void)
{
    wh_buf b;
    wh_buf_init(&b, 64);
    CHECK_INT(wh_buf_addf(&b, "%s=%d", "n", 42), WH_OK);
    CHECK_STR(wh_buf_cstr(&b), "n=42");
    CHECK_INT(wh_buf_addf(&b, ",%s", "x"), WH_OK);
    CHECK_STR(wh_buf_cstr(&b), "n=42,x");
    CHECK_INT(wh_buf_addf(&b, "%s", ""), WH_OK);
    CHECK_INT(b.len, 6);

    /* Exactly filling max works; one byte more fails and rolls back. */
    char big[80];
    memset(big, 'a', sizeof(big));
    big[58] = '\0';
    CHECK_INT(wh_buf_addf(&b, "%s", big), WH_OK);
    CHECK_INT(b.len, 64);
    wh_buf_reset(&b);
    CHECK_INT(wh_buf_addf(&b, "%s", "hello"), WH_OK);
    big[58] = 'a';
    big[59] = 'a';
    big[60] = '\0'; /* 5 + 60 > 64 */
    CHECK_INT(wh_buf_addf(&b, "%s", big), WH_ERR);
    CHECK_STR(wh_buf_cstr(&b), "hello");
    CHECK_INT(b.len, 5);
    wh_buf_free(&b);

    /* Growth through a format that does not fit the first allocation. */
    wh_buf_init(&b, 10000);
    char line[300];
    memset(line, 'q', sizeof(line) - 1);
    line[sizeof(line) - 1] = '\0';
    CHECK_INT(wh_buf_addf(&b, "[%s]", line), WH_OK);
    CHECK_INT(b.len, 301);
    CHECK_INT(b.data[0], '[');
    CHECK_INT(b.data[300], ']');
    CHECK_INT(b.data[301], '\0');
    wh_buf_free(&b);
}

static void test_reset_free_reuse(void)
{
    wh_buf b;
    wh_buf_init(&b, 32);
    CHECK_INT(wh_buf_add(&b, "abcdef", 6), WH_OK);
    char *mem = b.data;
    wh_buf_reset(&b);
    CHECK_INT(b.len, 0);
    CHECK_STR(wh_buf_cstr(&b), "");
    CHECK(b.data == mem);
    CHECK_INT(wh_buf_add(&b, "xy", 2), WH_OK);
    CHECK_STR(wh_buf_cstr(&b), "xy");
    wh_buf_free(&b);
    CHECK(b.data == NULL);
    CHECK_INT(b.len, 0);
    CHECK_INT(b.max, 32);
    CHECK_INT(wh_buf_add(&b, "again", 5), WH_OK);
    CHECK_STR(wh_buf_cstr(&b), "again");
    wh_buf_free(&b);
    wh_buf_init(&b, 4);
    CHECK_INT(wh_buf_add(&b, "again", 5), WH_ERR);
    wh_buf_free(&b);
}

/* Appends s as a JSON string to a fresh buffer and compares the output. */
static void check_json(const char *s, size_t n, const char *want)
{
    wh_buf b;
    wh_buf_init(&b, 4096);
    CHECK_INT(wh_buf_json_str(&b, s, n), WH_OK);
    CHECK_STR(wh_buf_cstr(&b), want);
    CHECK_INT(b.len, strlen(want));
    wh_buf_free(&b);
}

#define JSON(lit, want) check_json(lit, sizeof(lit) - 1, want)

static void test_json_str(void)
{
    JSON("", "\"\"");
    JSON("plain text", "\"plain text\"");
    JSON("q\"b\\s/", "\"q\\\"b\\\\s/\"");
    JSON("\n\r\t\b\f", "\"\\n\\r\\t\\b\\f\"");
    JSON("\x01\x1f\x7f", "\"\\u0001\\u001f\x7f\"");
    JSON("a\0b", "\"a\\u0000b\"");
    /* Valid UTF-8 of every length passes through. */
    JSON("\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
         "\"\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");
    JSON("\xed\x9f\xbf\xee\x80\x80\xf4\x8f\xbf\xbf",
         "\"\xed\x9f\xbf\xee\x80\x80\xf4\x8f\xbf\xbf\"");
    /* Invalid UTF-8: one \ufffd per maximal subpart. */
    JSON("\x80", "\"\\ufffd\"");
    JSON("a\xff" "b", "\"a\\ufffdb\"");
    JSON("\xc0\xaf", "\"\\ufffd\\ufffd\"");         /* overlong */
    JSON("\xe0\x80\x80", "\"\\ufffd\\ufffd\\ufffd\""); /* overlong */
    JSON("\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\""); /* surrogate */
    JSON("\xf4\x90\x80\x80",
         "\"\\ufffd\\ufffd\\ufffd\\ufffd\"");        /* > U+10FFFF */
    JSON("\xe2\x82", "\"\\ufffd\"");                /* truncated */
    JSON("\xe2\x82x", "\"\\ufffdx\"");
    JSON("\xf0\x9f\x98", "\"\\ufffd\"");
    JSON("\xf0\x9f\x98\xc3\xa9", "\"\\ufffd\xc3\xa9\"");
    JSON("\xc3", "\"\\ufffd\"");
    JSON("\xfe\xfe", "\"\\ufffd\\ufffd\"");
}

static void test_json_str_bounds(void)
{
    wh_buf b;
    wh_buf_init(&b, 12);
    CHECK_INT(wh_buf_add(&b, "k=", 2), WH_OK);
    /* "\"a\\nb\"" is 6 bytes: fits. */
    CHECK_INT(wh_buf_json_str(&b, "a\nb", 3), WH_OK);
    CHECK_STR(wh_buf_cstr(&b), "k=\"a\\nb\"");
    /* Needs 6 more bytes for "\u0001" alone: fails and rolls back. */
    CHECK_INT(wh_buf_json_str(&b, "\x01", 1), WH_ERR);
    CHECK_STR(wh_buf_cstr(&b), "k=\"a\\nb\"");
    CHECK_INT(b.len, 8);
    /* "\"ab\"" is 4 bytes: exactly reaches max. */
    CHECK_INT(wh_buf_json_str(&b, "ab", 2), WH_OK);
    CHECK_INT(b.len, 12);
    CHECK_STR(wh_buf_cstr(&b), "k=\"a\\nb\"\"ab\"");
    wh_buf_free(&b);

    /* A long string with escapes throughout, through several growths. */
    wh_buf_init(&b, 1 << 20);
    char in[3000];
    for (size_t i = 0; i < sizeof(in); i++)
        in[i] = (char)(i % 3 == 0 ? '"' : 'x');
    CHECK_INT(wh_buf_json_str(&b, in, sizeof(in)), WH_OK);
    CHECK_INT(b.len, 2 + sizeof(in) + sizeof(in) / 3);
    wh_buf_free(&b);
}

static void test_set_hex(void)
{
    wh_buf b;
    size_t bad = 0;
    wh_buf_init(&b, 4);
    CHECK_INT(wh_buf_set_hex(&b, "00ff7Fa0", 8, &bad), WH_OK);
    CHECK_MEM(b.data, b.len, "\x00\xff\x7f\xa0", 4);
    CHECK_INT(wh_buf_set_hex(&b, "", 0, NULL), WH_OK);
    CHECK_INT(b.len, 0);
    CHECK_INT(wh_buf_set_hex(&b, "abc", 3, &bad), WH_ERR);
    CHECK_INT(bad, 3);
    CHECK_INT(wh_buf_set_hex(&b, "00g1", 4, &bad), WH_ERR);
    CHECK_INT(bad, 2);
    CHECK_INT(b.len, 0);
    CHECK_INT(wh_buf_set_hex(&b, "0011223344", 10, &bad), WH_ERR); /* > max */
    CHECK_INT(bad, 10);
    CHECK_INT(b.len, 0);
    wh_buf_free(&b);
    /* more than one internal chunk */
    wh_buf_init(&b, 10000);
    char hex[20001];
    for (int i = 0; i < 10000; i++)
        memcpy(hex + 2 * i, (i % 2) ? "5a" : "a5", 2);
    CHECK_INT(wh_buf_set_hex(&b, hex, 20000, NULL), WH_OK);
    CHECK(b.len == 10000 && (unsigned char)b.data[9999] == 0x5a &&
          (unsigned char)b.data[4096] == 0xa5);
    wh_buf_free(&b);
}

TEST_MAIN(test_set_hex, test_empty, test_add_and_grow, test_max, test_addf,
          test_reset_free_reuse, test_json_str, test_json_str_bounds)
