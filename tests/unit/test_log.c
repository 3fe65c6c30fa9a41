/*
 * test_log.c - unit tests for lib/log.c: init validation, level filtering,
 * text and JSON record layout, escaping (control characters, quotes,
 * invalid UTF-8), truncation at WH_LOG_LINE_MAX, and whole records under
 * concurrent logging. stderr is redirected to a temporary file.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "test.h"

#define STARTS(s, lit) (strncmp((s), (lit), strlen(lit)) == 0)

static int cap_fd = -1, saved_fd = -1;
static char cap_path[64];
static char out[1 << 20];

static void cap_start(void)
{
    snprintf(cap_path, sizeof(cap_path), "/tmp/test_log_XXXXXX");
    cap_fd = mkstemp(cap_path);
    saved_fd = dup(2);
    fflush(stderr);
    dup2(cap_fd, 2);
}

/* Restores stderr and returns everything logged since cap_start. */
static const char *cap_end(void)
{
    ssize_t n;
    dup2(saved_fd, 2);
    close(saved_fd);
    n = pread(cap_fd, out, sizeof(out) - 1, 0);
    out[n > 0 ? n : 0] = '\0';
    close(cap_fd);
    unlink(cap_path);
    return out;
}

static int init(const char *fmt, const char *level, const char *comp)
{
    char err[WH_ERRLEN];
    return wh_log_init(fmt, level, comp, err, sizeof(err));
}

/* Checks the "2026-11-23T15:04:05.123Z" shape at s. */
static bool is_timestamp(const char *s)
{
    const char *shape = "dddd-dd-ddTdd:dd:dd.dddZ";
    for (size_t i = 0; shape[i]; i++) {
        if (shape[i] == 'd' ? !(s[i] >= '0' && s[i] <= '9') : s[i] != shape[i])
            return false;
    }
    return true;
}

static void test_init(void)
{
    char err[WH_ERRLEN];
    char longname[WH_LOG_COMPONENT_MAX + 2];

    CHECK_INT(wh_log_init("xml", "info", "w", err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "invalid log format 'xml' (use text, json or auto)");
    CHECK_INT(wh_log_init("text", "loud", "w", err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "invalid log level 'loud' (use debug, info, warn or "
                   "error)");
    CHECK_INT(wh_log_init("text", "info", "bad name", err, sizeof(err)),
              WH_ERR);
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    CHECK_INT(wh_log_init("text", "info", longname, err, sizeof(err)),
              WH_ERR);
    longname[WH_LOG_COMPONENT_MAX] = '\0';
    CHECK_INT(wh_log_init("TEXT", "WARNING", longname, err, sizeof(err)),
              WH_OK);
    CHECK(!wh_log_enabled(WH_LOG_INFO));
    CHECK(wh_log_enabled(WH_LOG_WARN));
    CHECK_INT(wh_log_init(NULL, "debug", NULL, err, sizeof(err)), WH_OK);
    CHECK(wh_log_enabled(WH_LOG_DEBUG));
    CHECK_INT(wh_log_init(NULL, "error", "", err, sizeof(err)), WH_OK);
    CHECK(!wh_log_enabled(WH_LOG_WARN));
    CHECK(wh_log_enabled(WH_LOG_ERROR));
}

static int side_effects;

static const char *count_call(void)
{
    side_effects++;
    return "x";
}

static void test_text(void)
{
    const char *s;

    cap_start();
    CHECK_INT(init("text", "info", "worker"), WH_OK);
    wh_log_kv(WH_LOG_WARN, "delivery failed", "endpoint", "ep_1", "error",
              "connect \"refused\"", "empty", "", "nil", NULL, NULL);
    WH_INFO("started %d lanes", 3);
    WH_DEBUG("hidden %s", count_call());
    wh_log(WH_LOG_ERROR, "line1\nline2\ttab\x1b[31m");
    wh_log_kv(WH_LOG_INFO, "k", "a=b", "c\\d", NULL);
    s = cap_end();

    CHECK_INT(side_effects, 0);
    CHECK(is_timestamp(s));
    CHECK(STARTS(s + 24, " WARN  worker: delivery failed endpoint=ep_1 "
                          "error=\"connect \\\"refused\\\"\" empty=\"\" "
                          "nil=(null)\n"));
    s = strchr(s, '\n') + 1;
    CHECK(is_timestamp(s));
    CHECK(STARTS(s + 24, " INFO  worker: started 3 lanes\n"));
    s = strchr(s, '\n') + 1;
    CHECK(STARTS(s + 24, " ERROR worker: line1\\nline2\\ttab\\x1b[31m\n"));
    s = strchr(s, '\n') + 1;
    CHECK(STARTS(s + 24, " INFO  worker: k a=b=\"c\\\\d\"\n"));
    s = strchr(s, '\n') + 1;
    CHECK_STR(s, "");

    /* no component */
    cap_start();
    CHECK_INT(init("text", "debug", NULL), WH_OK);
    WH_DEBUG("hello");
    s = cap_end();
    CHECK(STARTS(s + 24, " DEBUG hello\n"));
}

static void test_json(void)
{
    const char *s;

    cap_start();
    CHECK_INT(init("json", "info", "worker"), WH_OK);
    wh_log_kv(WH_LOG_WARN, "delivery failed", "endpoint", "ep_1", "error",
              "a \"q\" \\ \n\t\x01 caf\xc3\xa9 \xff\xfe end", "nil", NULL,
              NULL);
    WH_ERROR("n=%d", 5);
    WH_DEBUG("hidden");
    s = cap_end();

    CHECK(STARTS(s, "{\"ts\":\""));
    CHECK(is_timestamp(s + 7));
    CHECK(STARTS(s + 31,
                  "\",\"level\":\"warn\",\"component\":\"worker\","
                  "\"msg\":\"delivery failed\",\"endpoint\":\"ep_1\","
                  "\"error\":\"a \\\"q\\\" \\\\ \\n\\t\\u0001 caf\xc3\xa9 "
                  "\\ufffd\\ufffd end\",\"nil\":null}\n"));
    s = strchr(s, '\n') + 1;
    CHECK(strstr(s, "\"level\":\"error\",\"component\":\"worker\","
                    "\"msg\":\"n=5\"}\n") != NULL);
    s = strchr(s, '\n') + 1;
    CHECK_STR(s, "");

    /* invalid UTF-8 forms: overlong, surrogate, above U+10FFFF, truncated */
    cap_start();
    CHECK_INT(init("json", "info", NULL), WH_OK);
    wh_log_kv(WH_LOG_INFO, "m", "v",
              "\xc0\xaf|\xed\xa0\x80|\xf4\x90\x80\x80|"
              "\xe2\x82|\xf0\x9f\x98\x80",
              NULL);
    s = cap_end();
    CHECK(strstr(s, "\"msg\":\"m\",\"v\":\"\\ufffd\\ufffd|"
                    "\\ufffd\\ufffd\\ufffd|"
                    "\\ufffd\\ufffd\\ufffd\\ufffd|\\ufffd|"
                    "\xf0\x9f\x98\x80\"}\n") != NULL);

    /* DEL and C1 controls (CSI as U+009B) are escaped; U+00A0 is text */
    cap_start();
    CHECK_INT(init("json", "info", NULL), WH_OK);
    wh_log_kv(WH_LOG_INFO, "m", "v", "\x7f|\xc2\x9b" "2J|\xc2\xa0|\xf5\x80",
              NULL);
    s = cap_end();
    CHECK(strstr(s, "\"v\":\"\\u007f|\\u009b2J|\xc2\xa0|\\ufffd\\ufffd\"}\n") !=
          NULL);
}

/* Text records show invalid UTF-8 and C1 controls as \xNN, byte by byte
 * per maximal invalid subsequence, and keep valid characters. */
static void test_text_utf8(void)
{
    const char *s;

    cap_start();
    CHECK_INT(init("text", "info", NULL), WH_OK);
    wh_log(WH_LOG_INFO, "a\xed\xa0\x80|\xc0\xaf|\xf5|\xe2\x82|\xc2\x9b|"
                        "caf\xc3\xa9|\xf0\x9f\x98\x80");
    wh_log_kv(WH_LOG_INFO, "k", "v", "x\xffy", NULL);
    s = cap_end();
    CHECK(STARTS(s + 24, " INFO  a\\xed\\xa0\\x80|\\xc0\\xaf|\\xf5|"
                          "\\xe2\\x82|\\xc2\\x9b|caf\xc3\xa9|"
                          "\xf0\x9f\x98\x80\n"));
    s = strchr(s, '\n') + 1;
    CHECK(STARTS(s + 24, " INFO  k v=x\\xffy\n"));
}

static void test_auto(void)
{
    const char *s;

    /* stderr is a file here, so auto picks JSON */
    cap_start();
    CHECK_INT(init("auto", "info", "t"), WH_OK);
    WH_INFO("x");
    s = cap_end();
    CHECK(s[0] == '{');
}

/* Counts lines and checks each is at most WH_LOG_LINE_MAX bytes. */
static size_t check_lines(const char *s, size_t *longest)
{
    size_t n = 0;
    *longest = 0;
    while (*s) {
        const char *nl = strchr(s, '\n');
        if (!nl)
            return (size_t)-1;
        if ((size_t)(nl - s + 1) > *longest)
            *longest = (size_t)(nl - s + 1);
        n++;
        s = nl + 1;
    }
    return n;
}

static void test_truncation(void)
{
    static char big[3 * WH_LOG_LINE_MAX];
    static char quotes[3 * WH_LOG_LINE_MAX];
    const char *s, *nl;
    size_t longest;

    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    memset(quotes, '"', sizeof(quotes) - 1);
    quotes[sizeof(quotes) - 1] = '\0';

    cap_start();
    CHECK_INT(init("json", "info", "worker"), WH_OK);
    wh_log(WH_LOG_INFO, "%s", big);
    wh_log_kv(WH_LOG_INFO, "m", "a", big, "b", "after", NULL);
    wh_log_kv(WH_LOG_INFO, "m", "q", quotes, NULL);
    wh_log_kv(WH_LOG_INFO, "m", "a", big + 4000, "b", "after", NULL);
    s = cap_end();
    CHECK_INT(check_lines(s, &longest), 4);
    CHECK(longest <= WH_LOG_LINE_MAX);
    for (int i = 0; i < 4; i++) {
        nl = strchr(s, '\n');
        CHECK(nl - s > 20 && strncmp(nl - 19, "\",\"truncated\":true}", 19) ==
                                 0);
        /* a cut escape sequence never leaves a dangling backslash */
        const char *q = nl - 19;
        size_t bs = 0;
        while (q > s && q[-1] == '\\') {
            q--;
            bs++;
        }
        CHECK_INT(bs % 2, 0);
        s = nl + 1;
    }

    /* a field whose key no longer fits is dropped whole */
    static char almost[WH_LOG_LINE_MAX];
    memset(almost, 'y', WH_LOG_LINE_MAX - 120);
    almost[WH_LOG_LINE_MAX - 120] = '\0';
    cap_start();
    CHECK_INT(init("json", "info", NULL), WH_OK);
    wh_log_kv(WH_LOG_INFO, almost, "k", "v", "verylongkey_padding_padding_"
              "padding_padding_padding_padding_padding_padding_padding",
              "v", NULL);
    s = cap_end();
    CHECK(strstr(s, "\"k\":\"v\"") != NULL);
    CHECK(strstr(s, "verylongkey") == NULL);
    CHECK(strstr(s, ",\"truncated\":true}\n") != NULL);

    cap_start();
    CHECK_INT(init("text", "info", "worker"), WH_OK);
    wh_log(WH_LOG_INFO, "%s", big);
    wh_log_kv(WH_LOG_INFO, "m", "a", quotes, NULL);
    s = cap_end();
    CHECK_INT(check_lines(s, &longest), 2);
    CHECK(longest <= WH_LOG_LINE_MAX);
    nl = strchr(s, '\n');
    CHECK(strncmp(nl - 12, " [truncated]", 12) == 0);
    s = nl + 1;
    nl = strchr(s, '\n');
    CHECK(strncmp(nl - 13, "\" [truncated]", 13) == 0);
}

static void *log_thread(void *arg)
{
    char id[16];
    snprintf(id, sizeof(id), "t%d", (int)(long)arg);
    for (int i = 0; i < 500; i++)
        wh_log_kv(WH_LOG_INFO, "concurrent", "thread", id, "pad",
                  "0123456789012345678901234567890123456789", NULL);
    return NULL;
}

static void test_threads(void)
{
    pthread_t th[4];
    const char *s;
    size_t lines = 0, whole = 0;

    cap_start();
    CHECK_INT(init("json", "info", "worker"), WH_OK);
    for (long i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, log_thread, (void *)i);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    s = cap_end();
    while (*s) {
        const char *nl = strchr(s, '\n');
        if (!nl)
            break;
        lines++;
        whole += s[0] == '{' && nl[-1] == '}' &&
                 memchr(s + 1, '{', (size_t)(nl - s - 1)) == NULL;
        s = nl + 1;
    }
    CHECK_INT(lines, 2000);
    CHECK_INT(whole, 2000);
}

TEST_MAIN(test_init, test_text, test_json, test_text_utf8, test_auto,
          test_truncation, test_threads)
