/*
 * test_json.c - unit tests for lib/json.c: valid documents of every type,
 * token spans and subtree links, the iteration and lookup helpers, string
 * unescaping, compact output, integers, the depth and token limits, and
 * invalid input with the byte offsets named in the error messages.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "test.h"

#define MAXTOK 1000

/* Parses the NUL-terminated s; returns the result code. */
static int parse(wh_json *d, const char *s, char *err)
{
    return wh_json_parse(d, s, strlen(s), MAXTOK, err, WH_ERRLEN);
}

/* Checks that s parses and that its root has the given type and span. */
static void check_valid(const char *s, wh_json_type type, int32_t ntoks)
{
    wh_json d = {0};
    char err[WH_ERRLEN] = "";
    int rc = parse(&d, s, err);
    if (rc != WH_OK)
        fprintf(stderr, "rejected %s: %s\n", s, err);
    CHECK_INT(rc, WH_OK);
    if (rc == WH_OK) {
        CHECK_INT(d.toks[0].type, type);
        CHECK_INT(d.ntoks, ntoks);
        CHECK_INT(d.toks[0].next, ntoks);
    }
    wh_json_free(&d);
}

/* Checks that s is rejected with an error containing want. */
static void check_invalid_n(const char *s, size_t n, const char *want)
{
    wh_json d = {0};
    char err[WH_ERRLEN] = "";
    int rc = wh_json_parse(&d, s, n, MAXTOK, err, sizeof(err));
    if (rc != WH_ERR)
        fprintf(stderr, "accepted: %.*s\n", (int)n, s);
    CHECK_INT(rc, WH_ERR);
    CHECK_INT(d.ntoks, 0);
    if (!strstr(err, want)) {
        fprintf(stderr, "for %.*s: error \"%s\" lacks \"%s\"\n", (int)n, s,
                err, want);
        CHECK(0);
    }
    wh_json_free(&d);
}

static void check_invalid(const char *s, const char *want)
{
    check_invalid_n(s, strlen(s), want);
}

static void test_scalars(void)
{
    check_valid("true", WH_JSON_TRUE, 1);
    check_valid("false", WH_JSON_FALSE, 1);
    check_valid("null", WH_JSON_NULL, 1);
    check_valid("\"\"", WH_JSON_STRING, 1);
    check_valid("\"hello\"", WH_JSON_STRING, 1);
    check_valid(" \t\r\n 0 \n", WH_JSON_NUMBER, 1);
    static const char *const numbers[] = {
        "0", "-0", "1", "-1", "10", "1234567890", "0.5", "-0.0", "1.25e10",
        "1E5", "1e+5", "1e-5", "1.5E-05", "123456789012345678901234567890",
        "0e0",
    };
    for (size_t i = 0; i < WH_ARRAY_LEN(numbers); i++)
        check_valid(numbers[i], WH_JSON_NUMBER, 1);

    wh_json d = {0};
    char err[WH_ERRLEN];
    CHECK_INT(parse(&d, "  \"a b\"  ", err), WH_OK);
    CHECK_INT(d.toks[0].start, 2);
    CHECK_INT(d.toks[0].end, 7);
    CHECK_INT(d.toks[0].size, 0);
    CHECK_INT(wh_json_child(&d, 0), -1);
    CHECK_INT(wh_json_next(&d, 0), -1);
    CHECK_INT(parse(&d, "-12.5e3 ", err), WH_OK);
    CHECK_INT(d.toks[0].start, 0);
    CHECK_INT(d.toks[0].end, 7);
    wh_json_free(&d);
}

static void test_containers(void)
{
    check_valid("{}", WH_JSON_OBJECT, 1);
    check_valid("[]", WH_JSON_ARRAY, 1);
    check_valid(" [ ] ", WH_JSON_ARRAY, 1);
    check_valid("{ }", WH_JSON_OBJECT, 1);
    check_valid("[1,\"a\",true,false,null,{},[]]", WH_JSON_ARRAY, 8);
    check_valid("{\"a\":1,\"b\":[2,3],\"c\":{\"d\":null}}", WH_JSON_OBJECT, 11);

    /*            0123456789012345678901234567890123456 */
    const char *s = "{\"a\": [1, {\"b\": \"x\"}], \"c\": true}";
    wh_json d = {0};
    char err[WH_ERRLEN];
    CHECK_INT(parse(&d, s, err), WH_OK);
    CHECK_INT(d.ntoks, 9);
    /* 0 {  1 "a"  2 [  3 1  4 {  5 "b"  6 "x"  7 "c"  8 true */
    static const wh_json_type types[] = {
        WH_JSON_OBJECT, WH_JSON_STRING, WH_JSON_ARRAY, WH_JSON_NUMBER,
        WH_JSON_OBJECT, WH_JSON_STRING, WH_JSON_STRING, WH_JSON_STRING,
        WH_JSON_TRUE};
    static const int32_t sizes[] = {2, 0, 2, 0, 1, 0, 0, 0, 0};
    static const int32_t nexts[] = {9, 2, 7, 4, 7, 6, 7, 8, 9};
    static const uint32_t starts[] = {0, 1, 6, 7, 10, 11, 16, 23, 28};
    static const uint32_t ends[] = {33, 4, 21, 8, 20, 14, 19, 26, 32};
    for (int i = 0; i < 9; i++) {
        CHECK_INT(d.toks[i].type, types[i]);
        CHECK_INT(d.toks[i].size, sizes[i]);
        CHECK_INT(d.toks[i].next, nexts[i]);
        CHECK_INT(d.toks[i].start, starts[i]);
        CHECK_INT(d.toks[i].end, ends[i]);
    }
    wh_json_free(&d);
    CHECK(d.toks == NULL);
}

static void test_iteration(void)
{
    const char *s = " { \"a\" : [ 1 , [2, 3] , {\"x\": [] } , \"s\" ] ,"
                    " \"b\" : { } , \"c\" : { \"k\" : 7 } } ";
    wh_json d = {0};
    char err[WH_ERRLEN];
    CHECK_INT(parse(&d, s, err), WH_OK);

    /* Object members: key k, value k + 1. */
    static const char *const keys[] = {"a", "b", "c"};
    static const wh_json_type vtypes[] = {WH_JSON_ARRAY, WH_JSON_OBJECT,
                                          WH_JSON_OBJECT};
    int n = 0;
    for (int32_t k = wh_json_child(&d, 0); k >= 0; k = wh_json_next(&d, k)) {
        if (n < 3) {
            CHECK(wh_json_streq(&d, k, keys[n]));
            CHECK_INT(d.toks[k + 1].type, vtypes[n]);
        }
        n++;
    }
    CHECK_INT(n, 3);
    CHECK_INT(d.toks[0].size, 3);

    /* Array elements, including nested containers between them. */
    int32_t arr = wh_json_get(&d, 0, "a");
    CHECK(arr > 0);
    static const wh_json_type etypes[] = {WH_JSON_NUMBER, WH_JSON_ARRAY,
                                          WH_JSON_OBJECT, WH_JSON_STRING};
    n = 0;
    for (int32_t e = wh_json_child(&d, arr); e >= 0; e = wh_json_next(&d, e)) {
        if (n < 4)
            CHECK_INT(d.toks[e].type, etypes[n]);
        n++;
    }
    CHECK_INT(n, 4);
    CHECK_INT(d.toks[arr].size, 4);

    /* The next of an object value is the next key too. */
    int32_t ka = wh_json_child(&d, 0);
    CHECK_INT(wh_json_next(&d, ka + 1), wh_json_next(&d, ka));
    /* Last members and elements. */
    int32_t c = wh_json_get(&d, 0, "c");
    int32_t kk = wh_json_child(&d, c);
    CHECK(wh_json_streq(&d, kk, "k"));
    CHECK_INT(wh_json_next(&d, kk), -1);
    CHECK_INT(wh_json_next(&d, kk + 1), -1);
    CHECK_INT(wh_json_child(&d, wh_json_get(&d, 0, "b")), -1);
    int32_t inner = wh_json_child(&d, arr) + 1; /* [2, 3] */
    CHECK_INT(d.toks[inner].type, WH_JSON_ARRAY);
    int32_t three = wh_json_next(&d, wh_json_child(&d, inner));
    CHECK(three > 0);
    CHECK_INT(wh_json_next(&d, three), -1);
    CHECK_INT(wh_json_next(&d, 0), -1);
    CHECK_INT(wh_json_child(&d, three), -1);
    wh_json_free(&d);
}

static void test_get(void)
{
    const char *s = "{\"id\":\"e1\",\"n\":5,\"a\\u0062c\":true,\"a\":1,"
                    "\"sub\":{\"id\":\"inner\"},\"id\":\"dup\",\"\":0}";
    wh_json d = {0};
    char err[WH_ERRLEN];
    CHECK_INT(parse(&d, s, err), WH_OK);
    int32_t t = wh_json_get(&d, 0, "id");
    CHECK(t > 0);
    CHECK(wh_json_streq(&d, t, "e1")); /* first match wins */
    CHECK_INT(d.toks[wh_json_get(&d, 0, "abc")].type, WH_JSON_TRUE);
    CHECK_INT(d.toks[wh_json_get(&d, 0, "")].type, WH_JSON_NUMBER);
    CHECK_INT(wh_json_get(&d, 0, "ab"), -1);
    CHECK_INT(wh_json_get(&d, 0, "abcd"), -1);
    CHECK_INT(wh_json_get(&d, 0, "missing"), -1);
    CHECK_INT(wh_json_get(&d, 0, "inner"), -1); /* values are not keys */
    int32_t sub = wh_json_get(&d, 0, "sub");
    CHECK(wh_json_streq(&d, wh_json_get(&d, sub, "id"), "inner"));
    CHECK_INT(wh_json_get(&d, wh_json_get(&d, 0, "n"), "x"), -1);
    int64_t v = 0;
    CHECK_INT(wh_json_int64(&d, wh_json_get(&d, 0, "n"), &v), WH_OK);
    CHECK_INT(v, 5);
    /* Failed lookups chain. */
    CHECK_INT(wh_json_get(&d, wh_json_get(&d, 0, "nope"), "id"), -1);
    CHECK(!wh_json_streq(&d, wh_json_get(&d, 0, "nope"), ""));
    CHECK_INT(wh_json_int64(&d, -1, &v), WH_ERR);
    CHECK_INT(wh_json_string(&d, -1, err, sizeof(err), NULL), WH_ERR);
    CHECK_INT(wh_json_child(&d, -1), -1);
    CHECK_INT(wh_json_next(&d, -1), -1);
    CHECK(wh_json_streq(&d, wh_json_get(&d, sub, "id"), "inner"));
    CHECK_INT(parse(&d, "[\"id\", 1]", err), WH_OK);
    CHECK_INT(wh_json_get(&d, 0, "id"), -1); /* not an object */
    wh_json_free(&d);
}

static void test_strings(void)
{
    const char *s = "[\"plain\", \"q\\\"\\\\\\/\\b\\f\\n\\r\\t\", "
                    "\"\\u0041\\u00e9\\u20AC\\ud83d\\ude00\", "
                    "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\", \"a\\u0000b\", \"\"]";
    wh_json d = {0};
    char err[WH_ERRLEN], out[64];
    size_t n = 0;
    CHECK_INT(parse(&d, s, err), WH_OK);
    CHECK_INT(d.toks[0].size, 6);

    CHECK_INT(wh_json_string(&d, 1, out, sizeof(out), &n), WH_OK);
    CHECK_STR(out, "plain");
    CHECK_INT(n, 5);
    CHECK_INT(wh_json_string(&d, 2, out, sizeof(out), &n), WH_OK);
    CHECK_STR(out, "q\"\\/\b\f\n\r\t");
    CHECK(wh_json_streq(&d, 2, "q\"\\/\b\f\n\r\t"));
    CHECK(!wh_json_streq(&d, 2, "q\"\\/\b\f\n\r"));
    CHECK_INT(wh_json_string(&d, 3, out, sizeof(out), &n), WH_OK);
    CHECK_STR(out, "A\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
    CHECK(wh_json_streq(&d, 3, "A\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"));
    CHECK_INT(wh_json_string(&d, 4, out, sizeof(out), &n), WH_OK);
    CHECK_STR(out, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
    CHECK(wh_json_streq(&d, 4, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"));
    CHECK_INT(wh_json_string(&d, 5, out, sizeof(out), &n), WH_OK);
    CHECK_MEM(out, n + 1, "a\0b", 4);
    CHECK(!wh_json_streq(&d, 5, "a"));
    CHECK(!wh_json_streq(&d, 5, "ab"));
    CHECK_INT(wh_json_string(&d, 6, out, sizeof(out), &n), WH_OK);
    CHECK_STR(out, "");
    CHECK_INT(n, 0);
    CHECK(wh_json_streq(&d, 6, ""));
    CHECK(!wh_json_streq(&d, 6, "x"));

    /* Capacity: "plain" needs 6 bytes with the NUL. */
    CHECK_INT(wh_json_string(&d, 1, out, 6, NULL), WH_OK);
    CHECK_INT(wh_json_string(&d, 1, out, 5, &n), WH_ERR);
    CHECK_STR(out, "");
    CHECK_INT(wh_json_string(&d, 6, out, 1, NULL), WH_OK);
    CHECK_INT(wh_json_string(&d, 6, out, 0, NULL), WH_ERR);
    /* The surrogate pair needs its 4 bytes to fit whole. */
    CHECK_INT(wh_json_string(&d, 3, out, 11, NULL), WH_OK);
    CHECK_INT(wh_json_string(&d, 3, out, 10, NULL), WH_ERR);
    CHECK_INT(wh_json_string(&d, 3, out, 7, NULL), WH_ERR);
    /* end - start always suffices. */
    for (int32_t i = 1; i < d.ntoks; i++)
        CHECK_INT(wh_json_string(&d, i, out, d.toks[i].end - d.toks[i].start,
                                 NULL), WH_OK);
    /* Not a string. */
    CHECK_INT(wh_json_string(&d, 0, out, sizeof(out), NULL), WH_ERR);
    CHECK(!wh_json_streq(&d, 0, ""));
    wh_json_free(&d);
}

/* Every byte value at every position of an 8-byte-block-crossing string
 * is accepted or rejected exactly as the byte-by-byte rules say. */
static void test_string_bytes(void)
{
    char s[24];
    wh_json d = {0};
    char err[WH_ERRLEN];
    for (int c = 0; c < 256; c++) {
        int ok = c >= 0x20 && c < 0x80 && c != '"' && c != '\\';
        for (int pos = 1; pos < 22; pos++) {
            memset(s, 'a', sizeof(s));
            s[0] = '"';
            s[22] = '"';
            s[pos] = (char)c;
            int rc = wh_json_parse(&d, s, 23, 4, err, sizeof(err));
            if ((rc == WH_OK) != ok) {
                fprintf(stderr, "byte 0x%02x at %d: rc %d\n", c, pos, rc);
                CHECK(0);
            }
        }
    }
    wh_json_free(&d);
}

static void test_compact(void)
{
    const char *s = "{ \"a\" : [1, 2 ] , \"b\":\"x y\" }";
    wh_json d = {0};
    char err[WH_ERRLEN], out[128];
    CHECK_INT(parse(&d, s, err), WH_OK);
    size_t n = wh_json_compact(&d, 0, out);
    CHECK_MEM(out, n, "{\"a\":[1,2],\"b\":\"x y\"}", 21);
    n = wh_json_compact(&d, 2, out);
    CHECK_MEM(out, n, "[1,2]", 5);
    n = wh_json_compact(&d, 6, out);
    CHECK_MEM(out, n, "\"x y\"", 5);

    s = "\n[ \"a \\\" , \\\\\" ,\t{ \"k\\n\" :\r\n\"\\u0020 \" } , -1.5e3 ,"
        " true,false , null , [ ] , { } ]\n";
    CHECK_INT(parse(&d, s, err), WH_OK);
    n = wh_json_compact(&d, 0, out);
    const char *want = "[\"a \\\" , \\\\\",{\"k\\n\":\"\\u0020 \"},-1.5e3,"
                       "true,false,null,[],{}]";
    CHECK_MEM(out, n, want, strlen(want));
    CHECK(n <= d.toks[0].end - d.toks[0].start);

    /* Already compact input is reproduced exactly. */
    CHECK_INT(parse(&d, want, err), WH_OK);
    n = wh_json_compact(&d, 0, out);
    CHECK_MEM(out, n, want, strlen(want));
    wh_json_free(&d);
}

static void test_int64(void)
{
    static const struct {
        const char *s;
        int rc;
        int64_t v;
    } cases[] = {
        {"0", WH_OK, 0},
        {"-0", WH_OK, 0},
        {"42", WH_OK, 42},
        {"-42", WH_OK, -42},
        {"9223372036854775807", WH_OK, INT64_MAX},
        {"-9223372036854775808", WH_OK, INT64_MIN},
        {"9223372036854775808", WH_ERR, 0},
        {"-9223372036854775809", WH_ERR, 0},
        {"18446744073709551616", WH_ERR, 0},
        {"99999999999999999999999", WH_ERR, 0},
        {"1.0", WH_ERR, 0},
        {"1e3", WH_ERR, 0},
        {"-1E0", WH_ERR, 0},
        {"\"5\"", WH_ERR, 0},
        {"true", WH_ERR, 0},
        {"[1]", WH_ERR, 0},
    };
    wh_json d = {0};
    char err[WH_ERRLEN];
    for (size_t i = 0; i < WH_ARRAY_LEN(cases); i++) {
        int64_t v = 12345;
        CHECK_INT(parse(&d, cases[i].s, err), WH_OK);
        int rc = wh_json_int64(&d, 0, &v);
        if (rc != cases[i].rc)
            fprintf(stderr, "int64 of %s\n", cases[i].s);
        CHECK_INT(rc, cases[i].rc);
        CHECK(v == (rc == WH_OK ? cases[i].v : 12345));
    }
    wh_json_free(&d);
}

static void test_invalid_syntax(void)
{
    check_invalid("", "invalid JSON at byte 0: empty input");
    check_invalid("   \n", "invalid JSON at byte 4: empty input");
    check_invalid("[1,2,]", "at byte 5: trailing comma before ']'");
    check_invalid("{\"a\":1,}", "at byte 7: trailing comma before '}'");
    check_invalid("{\"a\":1 , }", "at byte 9: trailing comma before '}'");
    check_invalid("[,1]", "at byte 1: expected a value, found ','");
    check_invalid("[1,,2]", "at byte 3: expected a value, found ','");
    check_invalid("{,}", "at byte 1: expected a string key, found ','");
    check_invalid("{\"a\" 1}", "at byte 5: expected ':' after object key");
    check_invalid("{\"a\":1 \"b\":2}",
                  "at byte 7: expected ',' or '}' after object member");
    check_invalid("[1 2]", "at byte 3: expected ',' or ']' after array element");
    check_invalid("{a:1}", "at byte 1: expected a string key, found 'a'");
    check_invalid("{'a':1}", "at byte 1: expected a string key");
    check_invalid("{1:1}", "at byte 1: expected a string key, found '1'");
    check_invalid("[1}", "at byte 2: expected ',' or ']' after array element, "
                         "found '}'");
    check_invalid("{\"a\":1]", "at byte 6: expected ',' or '}'");
    check_invalid("[", "at byte 1: unexpected end of input, expected a value");
    check_invalid("[1", "at byte 2: unexpected end of input, expected ','");
    check_invalid("{", "at byte 1: unexpected end of input, expected a string");
    check_invalid("{\"a\"", "at byte 4: unexpected end of input, expected ':'");
    check_invalid("{\"a\":", "at byte 5: unexpected end of input");
    check_invalid("]", "at byte 0: expected a value, found ']'");
    check_invalid("1 2", "at byte 2: unexpected data after the JSON value");
    check_invalid("{} {}", "at byte 3: unexpected data after the JSON value");
    check_invalid("null x", "at byte 5: unexpected data after");
    check_invalid("truex", "at byte 4: unexpected data after");
    check_invalid("[truex]", "at byte 5: expected ',' or ']'");
    check_invalid("tru", "at byte 0: invalid literal");
    check_invalid("[nul]", "at byte 1: invalid literal");
    check_invalid("True", "at byte 0: expected a value, found 'T'");
    check_invalid("NaN", "at byte 0: expected a value");
    check_invalid("undefined", "at byte 0: expected a value");
    check_invalid("\xef\xbb\xbf{}", "at byte 0: expected a value, found byte "
                                   "0xef");
    check_invalid_n("[1]\0", 4, "at byte 3: unexpected data after");
    check_invalid_n("\0", 1, "at byte 0: expected a value, found byte 0x00");
    check_invalid("[1]\f", "at byte 3: unexpected data after"); /* not ws */
    check_invalid("/* c */ 1", "at byte 0: expected a value, found '/'");
}

static void test_invalid_numbers(void)
{
    check_invalid("01", "at byte 0: leading zeros are not allowed");
    check_invalid("[-012]", "at byte 1: leading zeros are not allowed");
    check_invalid("00", "at byte 0: leading zeros");
    check_invalid("+1", "at byte 0: expected a value, found '+'");
    check_invalid("-", "at byte 1: unexpected end of input, expected a digit "
                       "after '-'");
    check_invalid("-a", "at byte 1: expected a digit after '-', found 'a'");
    check_invalid("[- 1]", "at byte 2: expected a digit after '-'");
    check_invalid("1.", "at byte 2: unexpected end of input, expected a digit "
                        "after '.'");
    check_invalid("[1.e5]", "at byte 3: expected a digit after '.'");
    check_invalid(".5", "at byte 0: expected a value, found '.'");
    check_invalid("1e", "at byte 2: unexpected end of input, expected a digit "
                        "in the exponent");
    check_invalid("1e+", "at byte 3: unexpected end of input");
    check_invalid("[1E-x]", "at byte 4: expected a digit in the exponent");
    check_invalid("1.5.3", "at byte 3: unexpected data after");
    check_invalid("0x10", "at byte 1: unexpected data after");
    check_invalid("1_000", "at byte 1: unexpected data after");
    check_invalid("Infinity", "at byte 0: expected a value");
    check_invalid("-Infinity", "at byte 1: expected a digit after '-'");
}

static void test_invalid_strings(void)
{
    check_invalid("\"abc", "at byte 4: unterminated string starting at byte 0");
    check_invalid("[\"a\\\"]",
                  "at byte 6: unterminated string starting at byte 1");
    check_invalid("\"abc\\", "at byte 5: unterminated string");
    check_invalid("{\"k", "at byte 3: unterminated string starting at byte 1");
    check_invalid("\"a\nb\"",
                  "at byte 2: unescaped control character 0x0a in string");
    check_invalid("\"a\tb\"", "at byte 2: unescaped control character 0x09");
    check_invalid_n("\"a\0b\"", 5, "at byte 2: unescaped control character "
                                  "0x00");
    check_invalid("[\"\x1f\"]", "at byte 2: unescaped control character 0x1f");
    check_invalid("\"\\x41\"", "at byte 1: invalid escape '\\x'");
    check_invalid("\"\\a\"", "at byte 1: invalid escape '\\a'");
    check_invalid("\"\\'\"", "at byte 1: invalid escape '\\''");
    check_invalid("\"ab\\U0041\"", "at byte 3: invalid escape '\\U'");
    check_invalid("\"\\u12\"", "at byte 1: \\u must be followed by 4 hex");
    check_invalid("\"\\u12g4\"", "at byte 1: \\u must be followed by 4 hex");
    check_invalid("\"\\u", "at byte 1: \\u must be followed by 4 hex");
    check_invalid("\"x\\ud83d\"", "at byte 2: high surrogate in \\u escape "
                                  "not followed by a low surrogate");
    check_invalid("\"\\ud83dx\\ude00\"", "at byte 1: high surrogate");
    check_invalid("\"\\ud83d\\u0041\"", "at byte 1: high surrogate");
    check_invalid("\"\\ud83d\\ud83d\"", "at byte 1: high surrogate");
    check_invalid("\"\\ud83d\\n\"", "at byte 1: high surrogate");
    check_invalid("\"\\ude00\"", "at byte 1: lone low surrogate");
    check_invalid("\"\\ude00\\ud83d\"", "at byte 1: lone low surrogate");
    check_invalid("\"\\uDFFF\"", "at byte 1: lone low surrogate");
    /* Invalid UTF-8. */
    check_invalid("\"\x80\"", "at byte 1: invalid UTF-8 in string");
    check_invalid("\"ab\xff\"", "at byte 3: invalid UTF-8");
    check_invalid("\"\xc0\xaf\"", "at byte 1: invalid UTF-8");     /* overlong */
    check_invalid("\"\xe0\x9f\xbf\"", "at byte 1: invalid UTF-8"); /* overlong */
    check_invalid("\"\xf0\x8f\xbf\xbf\"", "at byte 1: invalid UTF-8");
    check_invalid("\"\xed\xa0\x80\"", "at byte 1: invalid UTF-8"); /* surrogate */
    check_invalid("\"\xf4\x90\x80\x80\"", "at byte 1: invalid UTF-8");
    check_invalid("\"\xe2\x82\"", "at byte 1: invalid UTF-8");     /* truncated */
    check_invalid("\"\xe2\x82", "at byte 1: invalid UTF-8");
    check_invalid("\"\xf5\x80\x80\x80\"", "at byte 1: invalid UTF-8");
    check_invalid("\"\xc1\xbf\"", "at byte 1: invalid UTF-8");   /* overlong */
    check_invalid("\"ok\xed\xbf\xbf\"", "at byte 3: invalid UTF-8");
    check_invalid("\"\xfe\"", "at byte 1: invalid UTF-8");
    check_invalid("{\"k\xc3\":1}", "at byte 3: invalid UTF-8");
    /* The boundaries of each UTF-8 length are accepted. */
    check_valid("\"\xc2\x80\xdf\xbf\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80"
                "\xef\xbf\xbf\xf0\x90\x80\x80\xf4\x8f\xbf\xbf\x7f\"",
                WH_JSON_STRING, 1);
    check_valid("\"\\ud800\\udc00\\udbff\\udfff\\uFFFF\\u0000\"",
                WH_JSON_STRING, 1);
}

static void test_depth_limit(void)
{
    char s[2 * (WH_JSON_MAX_DEPTH + 1) + 1];
    wh_json d = {0};
    char err[WH_ERRLEN];

    /* 64 levels parse. */
    memset(s, '[', WH_JSON_MAX_DEPTH);
    memset(s + WH_JSON_MAX_DEPTH, ']', WH_JSON_MAX_DEPTH);
    CHECK_INT(wh_json_parse(&d, s, 2 * WH_JSON_MAX_DEPTH, MAXTOK, err,
                            sizeof(err)), WH_OK);
    CHECK_INT(d.ntoks, WH_JSON_MAX_DEPTH);
    CHECK_INT(d.toks[WH_JSON_MAX_DEPTH - 1].size, 0);
    CHECK_INT(d.toks[0].size, 1);

    /* 65 do not; the error names the 65th bracket. */
    memset(s, '[', WH_JSON_MAX_DEPTH + 1);
    memset(s + WH_JSON_MAX_DEPTH + 1, ']', WH_JSON_MAX_DEPTH + 1);
    CHECK_INT(wh_json_parse(&d, s, 2 * (WH_JSON_MAX_DEPTH + 1), MAXTOK, err,
                            sizeof(err)), WH_ERR);
    CHECK_STR(err, "JSON nested deeper than 64 levels (at byte 64)");

    /* Objects count too: 63 objects, then two arrays. */
    char deep[WH_JSON_MAX_DEPTH * 6 + 4];
    size_t n = 0;
    for (int i = 0; i < WH_JSON_MAX_DEPTH - 1; i++) {
        memcpy(deep + n, "{\"a\":", 5);
        n += 5;
    }
    deep[n++] = '[';
    deep[n++] = '[';
    CHECK_INT(wh_json_parse(&d, deep, n, MAXTOK, err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "JSON nested deeper than 64 levels (at byte 316)");
    wh_json_free(&d);
}

static void test_token_limit(void)
{
    wh_json d = {0};
    char err[WH_ERRLEN];
    const char *s = "[1,2,3,4]"; /* 5 tokens */
    CHECK_INT(wh_json_parse(&d, s, strlen(s), 5, err, sizeof(err)), WH_OK);
    CHECK_INT(d.ntoks, 5);
    CHECK(d.cap <= 5);
    CHECK_INT(wh_json_parse(&d, s, strlen(s), 4, err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "JSON has more than 4 values (at byte 7)");
    CHECK_INT(d.ntoks, 0);
    /* Keys count. */
    s = "{\"a\":1}";
    CHECK_INT(wh_json_parse(&d, s, strlen(s), 2, err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "JSON has more than 2 values (at byte 5)");
    CHECK_INT(wh_json_parse(&d, s, strlen(s), 3, err, sizeof(err)), WH_OK);
    CHECK_INT(wh_json_parse(&d, "1", 1, 1, err, sizeof(err)), WH_OK);
    /* The array kept from an earlier, larger parse does not lift the
     * limit. */
    wh_json_free(&d);
    char big[4096];
    size_t n = 0;
    big[n++] = '[';
    for (int i = 0; i < 1000; i++) {
        big[n++] = '0';
        big[n++] = ',';
    }
    big[n - 1] = ']';
    CHECK_INT(wh_json_parse(&d, big, n, 1001, err, sizeof(err)), WH_OK);
    CHECK_INT(d.ntoks, 1001);
    CHECK(d.cap >= 1001 && d.cap <= 1001);
    CHECK_INT(wh_json_parse(&d, big, n, 10, err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "JSON has more than 10 values (at byte 19)");
    CHECK_INT(wh_json_parse(&d, big, n, 1000, err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "JSON has more than 1000 values (at byte 1999)");
    wh_json_free(&d);
}

static void test_input_size_limit(void)
{
    wh_json d = {0};
    char err[WH_ERRLEN];
    /* Rejected before any byte is read. */
    CHECK_INT(wh_json_parse(&d, "1", (size_t)UINT32_MAX, MAXTOK, err,
                            sizeof(err)), WH_ERR);
    CHECK_STR(err, "JSON input too large: 4294967295 bytes (limit "
                   "4294967294)");
    CHECK_INT(d.ntoks, 0);
    wh_json_free(&d);
}

static void test_reuse(void)
{
    wh_json d = {0};
    char err[WH_ERRLEN];
    CHECK_INT(parse(&d, "[1,2,3]", err), WH_OK);
    wh_json_tok *toks = d.toks;
    CHECK_INT(parse(&d, "{\"a\":[true]}", err), WH_OK);
    CHECK(d.toks == toks); /* no new allocation */
    CHECK_INT(d.ntoks, 4);
    CHECK_INT(parse(&d, "[1,", err), WH_ERR);
    CHECK_INT(d.ntoks, 0);
    CHECK_INT(parse(&d, "\"ok\"", err), WH_OK);
    CHECK(wh_json_streq(&d, 0, "ok"));
    wh_json_free(&d);
    CHECK(d.toks == NULL);
    CHECK_INT(d.cap, 0);
    CHECK_INT(parse(&d, "[]", err), WH_OK);
    wh_json_free(&d);
    wh_json_free(&d); /* freeing twice is harmless */
}

/* Large document: growth of the token array over many steps. */
static void test_large(void)
{
    size_t cap = 400000;
    char *s = malloc(cap);
    CHECK(s != NULL);
    if (!s)
        return;
    size_t n = 0;
    s[n++] = '[';
    for (int i = 0; i < 10000; i++)
        n += (size_t)snprintf(s + n, cap - n, "%s{\"i\":%d,\"s\":\"v%d\"}",
                              i ? "," : "", i, i);
    s[n++] = ']';
    wh_json d = {0};
    char err[WH_ERRLEN];
    CHECK_INT(wh_json_parse(&d, s, n, 100000, err, sizeof(err)), WH_OK);
    CHECK_INT(d.ntoks, 1 + 10000 * 5);
    CHECK_INT(d.toks[0].size, 10000);
    int count = 0;
    int64_t sum = 0;
    for (int32_t e = wh_json_child(&d, 0); e >= 0; e = wh_json_next(&d, e)) {
        int64_t v = 0;
        CHECK_INT(wh_json_int64(&d, wh_json_get(&d, e, "i"), &v), WH_OK);
        sum += v;
        count++;
    }
    CHECK_INT(count, 10000);
    CHECK_INT(sum, 10000LL * 9999 / 2);
    char *out = malloc(n);
    size_t m = wh_json_compact(&d, 0, out);
    CHECK_MEM(out, m, s, n);
    free(out);
    wh_json_free(&d);
    free(s);
}

TEST_MAIN(test_scalars, test_containers, test_iteration, test_get,
          test_strings, test_string_bytes, test_compact, test_int64,
          test_invalid_syntax, test_invalid_numbers, test_invalid_strings,
          test_depth_limit, test_token_limit, test_input_size_limit, test_reuse,
          test_large)
