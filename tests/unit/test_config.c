/*
 * test_config.c - unit tests for lib/config.c: defaults, environment and
 * flag precedence, every value type with its bounds and errors, --help,
 * subcommand arguments, usage/Markdown output and redacted display.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "test.h"

typedef struct {
    const char *brokers;
    const char *db_url;
    const char *secret_key;
    int64_t batch_size;
    int64_t offset;
    bool verbose;
    bool tls;
    int64_t batch_ms;
    int64_t max_body;
} settings;

static const wh_opt opts[] = {
    {"kafka-brokers", "T_KAFKA_BROKERS", WH_OPT_STRING, "localhost:9092", 0,
     0, offsetof(settings, brokers), "Kafka bootstrap servers."},
    {"database-url", "T_DATABASE_URL", WH_OPT_STRING, NULL, 0, 0,
     offsetof(settings, db_url), "Postgres connection URL | conninfo."},
    {"secret-key", "T_SECRET_KEY", WH_OPT_STRING, NULL, 0, 0,
     offsetof(settings, secret_key), "Key that encrypts secrets."},
    {"batch-size", "T_BATCH_SIZE", WH_OPT_INT, "100", 1, 1000,
     offsetof(settings, batch_size), "Messages per batch."},
    {"offset", NULL, WH_OPT_INT, "-5", 0, 0, offsetof(settings, offset),
     "Unbounded, flag only."},
    {"verbose", "T_VERBOSE", WH_OPT_BOOL, NULL, 0, 0,
     offsetof(settings, verbose), "Log more."},
    {"tls", "T_TLS", WH_OPT_BOOL, "true", 0, 0, offsetof(settings, tls),
     "Use TLS."},
    {"batch-ms", "T_BATCH_MS", WH_OPT_DURATION, "250ms", 1, 5 * 60 * 1000,
     offsetof(settings, batch_ms), "Longest wait to fill a batch."},
    {"max-body", "T_MAX_BODY", WH_OPT_SIZE, "256k", 1, INT64_MAX,
     offsetof(settings, max_body), "Largest payload."},
};

static const char *const envs[] = {"T_KAFKA_BROKERS", "T_DATABASE_URL",
                                   "T_SECRET_KEY",    "T_BATCH_SIZE",
                                   "T_VERBOSE",       "T_TLS",
                                   "T_BATCH_MS",      "T_MAX_BODY"};

static void clear_env(void)
{
    for (size_t i = 0; i < WH_ARRAY_LEN(envs); i++)
        unsetenv(envs[i]);
}

/* Loads with argv built from a NULL-terminated list of arguments. */
static int load(settings *s, int *first, char *err, ...)
{
    char *argv[32];
    int argc = 0;
    va_list ap;
    argv[argc++] = (char *)"prog";
    va_start(ap, err);
    for (char *a; (a = va_arg(ap, char *)) != NULL;)
        argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;
    err[0] = '\0';
    return wh_config_load(opts, WH_ARRAY_LEN(opts), s, argc, argv, first,
                          err, WH_ERRLEN);
}

static void test_defaults(void)
{
    settings s;
    char err[WH_ERRLEN];
    int first = -1;

    clear_env();
    memset(&s, 0xAB, sizeof(s));
    CHECK_INT(load(&s, &first, err, NULL), WH_OK);
    CHECK_STR(s.brokers, "localhost:9092");
    CHECK(s.db_url == NULL);
    CHECK(s.secret_key == NULL);
    CHECK_INT(s.batch_size, 100);
    CHECK_INT(s.offset, -5);
    CHECK(!s.verbose);
    CHECK(s.tls);
    CHECK_INT(s.batch_ms, 250);
    CHECK_INT(s.max_body, 256 * 1024);
    CHECK_INT(first, 1);

    /* NULL first_arg with no positional arguments is fine */
    CHECK_INT(load(&s, NULL, err, NULL), WH_OK);
    /* argc 0 (no program name) */
    CHECK_INT(wh_config_load(opts, WH_ARRAY_LEN(opts), &s, 0, NULL, &first,
                             err, sizeof(err)),
              WH_OK);
    CHECK_INT(first, 0);
}

static void test_env_and_flags(void)
{
    settings s;
    char err[WH_ERRLEN];
    int first;

    clear_env();
    setenv("T_KAFKA_BROKERS", "env-broker:9092", 1);
    setenv("T_BATCH_SIZE", "7", 1);
    setenv("T_VERBOSE", "yes", 1);
    setenv("T_TLS", "OFF", 1);
    setenv("T_BATCH_MS", "2s", 1);
    setenv("T_MAX_BODY", "1m", 1);
    CHECK_INT(load(&s, &first, err, NULL), WH_OK);
    CHECK_STR(s.brokers, "env-broker:9092");
    CHECK_INT(s.batch_size, 7);
    CHECK(s.verbose);
    CHECK(!s.tls);
    CHECK_INT(s.batch_ms, 2000);
    CHECK_INT(s.max_body, 1024 * 1024);

    /* flags beat the environment, later flags beat earlier ones */
    CHECK_INT(load(&s, &first, err, "--kafka-brokers", "flag:1",
                   "--batch-size=9", "--batch-size", "10", "--no-verbose",
                   "--tls", "--batch-ms", "1m", "--max-body=64KiB",
                   "--offset", "-42", NULL),
              WH_OK);
    CHECK_STR(s.brokers, "flag:1");
    CHECK_INT(s.batch_size, 10);
    CHECK(!s.verbose);
    CHECK(s.tls);
    CHECK_INT(s.batch_ms, 60000);
    CHECK_INT(s.max_body, 65536);
    CHECK_INT(s.offset, -42);

    /* --name=VALUE for booleans */
    CHECK_INT(load(&s, &first, err, "--verbose=on", "--tls=0", NULL), WH_OK);
    CHECK(s.verbose);
    CHECK(!s.tls);

    /* an empty environment variable counts as unset */
    setenv("T_KAFKA_BROKERS", "", 1);
    setenv("T_BATCH_SIZE", "", 1);
    CHECK_INT(load(&s, &first, err, NULL), WH_OK);
    CHECK_STR(s.brokers, "localhost:9092");
    CHECK_INT(s.batch_size, 100);

    /* but an empty flag value is a value */
    CHECK_INT(load(&s, &first, err, "--kafka-brokers=", NULL), WH_OK);
    CHECK_STR(s.brokers, "");
    /* a value starting with "--" needs the = form */
    CHECK_INT(load(&s, &first, err, "--kafka-brokers=--odd", NULL), WH_OK);
    CHECK_STR(s.brokers, "--odd");
    clear_env();
}

static void test_errors(void)
{
    settings s;
    char err[WH_ERRLEN];
    int first;

    clear_env();
    CHECK_INT(load(&s, &first, err, "--foo", NULL), WH_ERR);
    CHECK_STR(err, "unknown option --foo");
    CHECK_INT(load(&s, &first, err, "--foo=bar", NULL), WH_ERR);
    CHECK_STR(err, "unknown option --foo");
    CHECK_INT(load(&s, &first, err, "-x", NULL), WH_ERR);
    CHECK_STR(err, "unknown option -x");
    CHECK_INT(load(&s, &first, err, "--no-batch-size", NULL), WH_ERR);
    CHECK_STR(err, "unknown option --no-batch-size");
    CHECK_INT(load(&s, &first, err, "--no-verbose=1", NULL), WH_ERR);
    CHECK_STR(err, "--no-verbose does not take a value");

    CHECK_INT(load(&s, &first, err, "--batch-size", "0", NULL), WH_ERR);
    CHECK_STR(err, "--batch-size: 0 is below the minimum 1");
    CHECK_INT(load(&s, &first, err, "--batch-size=1001", NULL), WH_ERR);
    CHECK_STR(err, "--batch-size: 1001 is above the maximum 1000");
    CHECK_INT(load(&s, &first, err, "--batch-size=1", NULL), WH_OK);
    CHECK_INT(load(&s, &first, err, "--batch-size=1000", NULL), WH_OK);
    CHECK_INT(load(&s, &first, err, "--batch-size=12x", NULL), WH_ERR);
    CHECK_STR(err, "--batch-size: invalid integer '12x'");
    CHECK_INT(load(&s, &first, err, "--batch-size= 5", NULL), WH_ERR);
    CHECK_INT(load(&s, &first, err, "--batch-size=+5", NULL), WH_ERR);
    CHECK_INT(load(&s, &first, err, "--offset=99999999999999999999", NULL),
              WH_ERR);
    CHECK_STR(err, "--offset: invalid integer '99999999999999999999'");
    CHECK_INT(load(&s, &first, err, "--batch-size", NULL), WH_ERR);
    CHECK_STR(err, "missing value for --batch-size");
    CHECK_INT(load(&s, &first, err, "--kafka-brokers", "--verbose", NULL),
              WH_ERR);
    CHECK_STR(err, "missing value for --kafka-brokers");

    CHECK_INT(load(&s, &first, err, "--batch-ms=10m", NULL), WH_ERR);
    CHECK_STR(err, "--batch-ms: 10m is above the maximum 5m");
    CHECK_INT(load(&s, &first, err, "--batch-ms=0", NULL), WH_ERR);
    CHECK_STR(err, "--batch-ms: 0 is below the minimum 1ms");
    CHECK_INT(load(&s, &first, err, "--batch-ms=5m", NULL), WH_OK);
    CHECK_INT(load(&s, &first, err, "--max-body=0", NULL), WH_ERR);
    CHECK_STR(err, "--max-body: 0 is below the minimum 1");
    CHECK_INT(load(&s, &first, err, "--max-body=1x", NULL), WH_ERR);
    CHECK_STR(err, "--max-body: invalid size '1x' (use e.g. 512, 64k, 1m)");
    CHECK_INT(load(&s, &first, err, "--max-body=-1", NULL), WH_ERR);
    CHECK_INT(load(&s, &first, err, "--max-body=9000000000g", NULL), WH_ERR);
    CHECK_INT(load(&s, &first, err, "--max-body=8589934591g", NULL), WH_OK);
    CHECK_INT(s.max_body, 8589934591LL * 1024 * 1024 * 1024);
    CHECK_INT(load(&s, &first, err, "--verbose=maybe", NULL), WH_ERR);
    CHECK_STR(err, "--verbose: invalid boolean 'maybe' (use true or false)");

    setenv("T_BATCH_MS", "x", 1);
    CHECK_INT(load(&s, &first, err, NULL), WH_ERR);
    CHECK_STR(err, "T_BATCH_MS: invalid duration 'x' (use e.g. 250ms, 5s, "
                   "2m)");
    /* a bad environment variable is an error even if a flag overrides it */
    CHECK_INT(load(&s, &first, err, "--batch-ms=1s", NULL), WH_ERR);
    clear_env();
    setenv("T_BATCH_SIZE", "5000", 1);
    CHECK_INT(load(&s, &first, err, NULL), WH_ERR);
    CHECK_STR(err, "T_BATCH_SIZE: 5000 is above the maximum 1000");
    clear_env();

    /* a long unknown flag is echoed only up to WH_CONFIG_SHOW_MAX bytes */
    char longflag[300];
    memset(longflag, 'a', sizeof(longflag) - 1);
    longflag[0] = longflag[1] = '-';
    longflag[sizeof(longflag) - 1] = '\0';
    CHECK_INT(load(&s, &first, err, longflag, NULL), WH_ERR);
    CHECK_INT(strlen(err), strlen("unknown option --") + WH_CONFIG_SHOW_MAX);
    char longval[300];
    memset(longval, '7', sizeof(longval) - 1);
    longval[sizeof(longval) - 1] = '\0';
    CHECK_INT(load(&s, &first, err, "--batch-size", longval, NULL), WH_ERR);
    CHECK(strlen(err) < 120);

    /* positional arguments without first_arg */
    CHECK_INT(load(&s, NULL, err, "stray", NULL), WH_ERR);
    CHECK_STR(err, "unexpected argument 'stray'");
    CHECK_INT(load(&s, NULL, err, "--", "x", NULL), WH_ERR);
    CHECK_STR(err, "unexpected argument 'x'");
    CHECK_INT(load(&s, NULL, err, "--", NULL), WH_OK);

    /* a bad default is reported as such */
    static const wh_opt bad[] = {{"n", NULL, WH_OPT_INT, "zero", 0, 0,
                                  offsetof(settings, batch_size), "N."}};
    char *argv[] = {(char *)"prog", NULL};
    CHECK_INT(wh_config_load(bad, 1, &s, 1, argv, NULL, err, sizeof(err)),
              WH_ERR);
    CHECK_STR(err, "default of --n: invalid integer 'zero'");
}

static void test_help_and_subcommands(void)
{
    settings s;
    char err[WH_ERRLEN];
    int first = -1;

    clear_env();
    CHECK_INT(load(&s, &first, err, "--help", NULL), WH_AGAIN);
    CHECK_INT(load(&s, &first, err, "--verbose", "-h", NULL), WH_AGAIN);
    CHECK_INT(load(&s, NULL, err, "-h", "--foo", NULL), WH_AGAIN);
    /* after the first argument, --help belongs to the subcommand */
    CHECK_INT(load(&s, &first, err, "list", "--help", NULL), WH_OK);
    CHECK_INT(first, 1);

    CHECK_INT(load(&s, &first, err, "--batch-size", "5", "endpoints", "add",
                   "--url", "x", NULL),
              WH_OK);
    CHECK_INT(first, 3);
    CHECK_INT(s.batch_size, 5);
    CHECK_INT(load(&s, &first, err, "--verbose", "--", "--batch-size", NULL),
              WH_OK);
    CHECK_INT(first, 3);
    CHECK_INT(s.batch_size, 100);
    /* a lone "-" is an argument (stdin) */
    CHECK_INT(load(&s, &first, err, "--tls", "-", NULL), WH_OK);
    CHECK_INT(first, 2);
    /* a bare boolean flag does not swallow the next argument */
    CHECK_INT(load(&s, &first, err, "--verbose", "list", NULL), WH_OK);
    CHECK(s.verbose);
    CHECK_INT(first, 2);
}

/* Returns what fn wrote, NUL-terminated, in a static buffer. */
static char *capture(void (*fn)(FILE *))
{
    static char buf[16384];
    FILE *f = fmemopen(buf, sizeof(buf), "w");
    fn(f);
    long n = ftell(f);
    fclose(f);
    buf[n >= 0 && (size_t)n < sizeof(buf) ? (size_t)n : 0] = '\0';
    return buf;
}

static void write_usage(FILE *f)
{
    wh_config_usage(f, "prog [options] COMMAND", opts, WH_ARRAY_LEN(opts));
}

static void write_markdown(FILE *f)
{
    wh_config_markdown(f, opts, WH_ARRAY_LEN(opts));
}

static void test_usage_and_markdown(void)
{
    char *u = capture(write_usage);
    CHECK(strncmp(u, "Usage: prog [options] COMMAND\n", 30) == 0);
    CHECK(strstr(u, "--batch-size N") != NULL);
    CHECK(strstr(u, "T_BATCH_SIZE") != NULL);
    CHECK(strstr(u, "Messages per batch. (1..1000)") != NULL);
    CHECK(strstr(u, "Longest wait to fill a batch. (1ms..5m)") != NULL);
    CHECK(strstr(u, "Largest payload. (at least 1)") != NULL);
    CHECK(strstr(u, "--[no-]verbose") != NULL);
    CHECK(strstr(u, "-h, --help") != NULL);
    CHECK(strstr(u, "Durations:") != NULL);
    CHECK(strstr(u, "Sizes:") != NULL);
    /* columns are aligned: every description starts at the same column */
    const char *a = strstr(u, "Messages per batch.");
    const char *b = strstr(u, "Kafka bootstrap servers.");
    const char *la = a, *lb = b;
    while (la > u && la[-1] != '\n')
        la--;
    while (lb > u && lb[-1] != '\n')
        lb--;
    CHECK_INT(a - la, b - lb);

    char *m = capture(write_markdown);
    CHECK(strncmp(m, "| Flag | Environment | Default | Description |\n", 46) ==
          0);
    CHECK(strstr(m, "| `--batch-size N` | `T_BATCH_SIZE` | `100` | Messages "
                    "per batch. (1..1000) |\n") != NULL);
    CHECK(strstr(m, "| `--offset N` | - | `-5` |") != NULL);
    CHECK(strstr(m, "| `--database-url TEXT` | `T_DATABASE_URL` | - | "
                    "Postgres connection URL \\| conninfo. |\n") != NULL);
}

static void test_secret_and_redact(void)
{
    char out[WH_CONFIG_VALUE_MAX];

    CHECK(wh_config_is_secret("secret-key"));
    CHECK(wh_config_is_secret("db-password"));
    CHECK(wh_config_is_secret("API_KEY"));
    CHECK(wh_config_is_secret("ingest-token"));
    CHECK(!wh_config_is_secret("kafka-brokers"));
    CHECK(!wh_config_is_secret("database-url"));

    wh_config_redact("postgresql://user:pass@host:5432/db", out, sizeof(out));
    CHECK_STR(out, "postgresql://user:***@host:5432/db");
    wh_config_redact("postgresql://user@host/db", out, sizeof(out));
    CHECK_STR(out, "postgresql://user@host/db");
    wh_config_redact("postgresql://u:p@ss@host/db", out, sizeof(out));
    CHECK_STR(out, "postgresql://u:***@host/db");
    wh_config_redact("http://host:8080/x?user=a&password=hunter2&y=1", out,
                     sizeof(out));
    CHECK_STR(out, "http://host:8080/x?user=a&password=***&y=1");
    wh_config_redact("host=db user=wh password=s3cret dbname=wh", out,
                     sizeof(out));
    CHECK_STR(out, "host=db user=wh password=*** dbname=wh");
    wh_config_redact("host=db password='a b\\' c' port=1", out, sizeof(out));
    CHECK_STR(out, "host=db password=*** port=1");
    wh_config_redact("sasl://a:b@h1,sasl://c:d@h2", out, sizeof(out));
    CHECK_STR(out, "sasl://a:***@h1,sasl://c:***@h2");
    wh_config_redact("security.protocol=sasl_ssl,sasl.username=u,"
                     "sasl.password=p,w,d,ssl.key.password=k", out,
                     sizeof(out));
    CHECK_STR(out, "security.protocol=sasl_ssl,sasl.username=u,"
                   "sasl.password=***,ssl.key.password=***");
    wh_config_redact("https://h/x?api_key=abc&page=2", out, sizeof(out));
    CHECK_STR(out, "https://h/x?api_key=***&page=2");
    wh_config_redact("user=a password= host=b", out, sizeof(out));
    CHECK_STR(out, "user=a password=*** host=b");
    wh_config_redact("keyboard layout=us", out, sizeof(out));
    CHECK_STR(out, "keyboard layout=us");
    wh_config_redact("monkey=banana", out, sizeof(out));
    CHECK_STR(out, "monkey=***");
    wh_config_redact("", out, sizeof(out));
    CHECK_STR(out, "");
    /* truncation keeps the output terminated and still hides the password */
    char small[20];
    wh_config_redact("postgresql://user:pass@host/db", small, sizeof(small));
    CHECK_STR(small, "postgresql://user:*");
    char one[1];
    wh_config_redact("abc", one, sizeof(one));
    CHECK_STR(one, "");

    settings s;
    char err[WH_ERRLEN];
    int first;
    clear_env();
    setenv("T_DATABASE_URL", "postgresql://wh:topsecret@db/wh", 1);
    setenv("T_SECRET_KEY", "c2VjcmV0", 1);
    CHECK_INT(load(&s, &first, err, NULL), WH_OK);
    wh_config_format(&opts[1], &s, out, sizeof(out));
    CHECK_STR(out, "postgresql://wh:***@db/wh");
    wh_config_format(&opts[2], &s, out, sizeof(out));
    CHECK_STR(out, "(set)");
    wh_config_format(&opts[7], &s, out, sizeof(out));
    CHECK_STR(out, "250ms");
    wh_config_format(&opts[8], &s, out, sizeof(out));
    CHECK_STR(out, "256k");
    wh_config_format(&opts[6], &s, out, sizeof(out));
    CHECK_STR(out, "true");
    wh_config_format(&opts[4], &s, out, sizeof(out));
    CHECK_STR(out, "-5");
    clear_env();
    CHECK_INT(load(&s, &first, err, "--batch-ms=2h", NULL), WH_ERR);
    CHECK_INT(load(&s, &first, err, "--batch-ms=120s", NULL), WH_OK);
    wh_config_format(&opts[7], &s, out, sizeof(out));
    CHECK_STR(out, "2m");
    wh_config_format(&opts[1], &s, out, sizeof(out));
    CHECK_STR(out, "(unset)");
    wh_config_format(&opts[2], &s, out, sizeof(out));
    CHECK_STR(out, "(unset)");
}

static void test_log_settings(void)
{
    settings s;
    char err[WH_ERRLEN];
    int first;
    char path[] = "/tmp/test_config_XXXXXX";
    int fd = mkstemp(path);
    int saved = dup(2);

    CHECK(fd >= 0 && saved >= 0);
    clear_env();
    setenv("T_SECRET_KEY", "c2VjcmV0", 1);
    setenv("T_DATABASE_URL", "postgresql://wh:topsecret@db/wh", 1);
    CHECK_INT(load(&s, &first, err, NULL), WH_OK);
    clear_env();

    fflush(stderr);
    dup2(fd, 2);
    CHECK_INT(wh_log_init("json", "info", "test", err, sizeof(err)), WH_OK);
    wh_config_log(opts, WH_ARRAY_LEN(opts), &s);
    dup2(saved, 2);
    close(saved);

    char buf[8192];
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    CHECK(n > 0);
    buf[n > 0 ? n : 0] = '\0';
    close(fd);
    unlink(path);
    CHECK(strstr(buf, "c2VjcmV0") == NULL);
    CHECK(strstr(buf, "topsecret") == NULL);
    CHECK(strstr(buf, "\"msg\":\"config\",\"setting\":\"secret-key\","
                      "\"value\":\"(set)\"") != NULL);
    CHECK(strstr(buf, "\"setting\":\"database-url\",\"value\":"
                      "\"postgresql://wh:***@db/wh\"") != NULL);
    CHECK(strstr(buf, "\"setting\":\"batch-ms\",\"value\":\"250ms\"") !=
          NULL);
    size_t lines = 0;
    for (char *p = buf; *p; p++)
        lines += *p == '\n';
    CHECK_INT(lines, WH_ARRAY_LEN(opts));
}

TEST_MAIN(test_defaults, test_env_and_flags, test_errors,
          test_help_and_subcommands, test_usage_and_markdown,
          test_secret_and_redact, test_log_settings)
