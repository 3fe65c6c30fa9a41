/*
 * config.h - settings described once, in a table: each binary declares a
 * static array of wh_opt and this module applies defaults, environment
 * variables and command-line flags from it, prints --help, writes the
 * Markdown settings table for the docs and logs the effective settings.
 *
 * Called from main() of every binary before any thread starts. Reads the
 * process environment, so it is not thread-safe.
 */
#ifndef WH_CONFIG_H
#define WH_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "wh.h"

typedef enum {
    WH_OPT_STRING,   /* const char *; NULL when unset */
    WH_OPT_INT,      /* int64_t, decimal, may be negative */
    WH_OPT_BOOL,     /* bool; true/false, 1/0, yes/no, on/off */
    WH_OPT_DURATION, /* int64_t milliseconds; "250ms", "5s", "2m", "1h" */
    WH_OPT_SIZE      /* int64_t bytes; "512", "64k", "1m", "1g" (KiB...) */
} wh_opt_type;

/* One setting. name is the flag without dashes ("kafka-brokers"); env is
 * the environment variable ("KAFKA_BROKERS") or NULL for a flag-only
 * setting. def is the default written as it would be on the command line,
 * or NULL: a NULL default leaves strings NULL, numbers 0 and booleans
 * false. min and max bound INT, DURATION and SIZE values (inclusive);
 * both 0 means unbounded. offset is offsetof() of the field in the
 * caller's settings struct, whose C type follows wh_opt_type. help is one
 * sentence for --help and the docs. */
typedef struct {
    const char *name;
    const char *env;
    wh_opt_type type;
    const char *def;
    int64_t min, max;
    size_t offset;
    const char *help;
} wh_opt;

/* Longest setting value echoed back in an error message or log line. */
#define WH_CONFIG_SHOW_MAX 64
/* Size of the buffer wh_config_format needs for any value. */
#define WH_CONFIG_VALUE_MAX 1024

/*
 * Fills settings from opts: first every default, then every environment
 * variable that is set and non-empty, then the flags in argv[1..argc).
 * Flags are "--name value" or "--name=value"; a BOOL flag is "--name"
 * (true), "--no-name" (false) or "--name=VALUE", never "--name VALUE".
 * A value that starts with "--" must use the "=" form. Later flags win.
 * Every value is checked where it is found: an invalid environment
 * variable is an error even when a flag overrides it.
 *
 * Parsing stops at "--" or at the first argument that does not start
 * with "-" (a lone "-" counts as an argument). When first_arg is non-NULL
 * it receives the index of that argument (argc when there is none), so a
 * CLI with subcommands can continue from there; when first_arg is NULL,
 * any such argument is an error.
 *
 * String settings point into argv, the environment or opts[].def; nothing
 * is copied, so those must outlive settings (they do in main()).
 *
 * Returns WH_OK; WH_AGAIN when -h or --help was given (the caller prints
 * wh_config_usage and exits 0); WH_ERR with a message naming the flag or
 * variable, e.g. "--batch-size: 0 is below the minimum 1",
 * "unknown option --foo", "missing value for --url". settings may be
 * partly filled after WH_ERR or WH_AGAIN.
 */
int wh_config_load(const wh_opt *opts, size_t nopts, void *settings,
                   int argc, char **argv, int *first_arg, char *err,
                   size_t errlen) WH_MUST_CHECK;

/* Writes --help text: "Usage: <synopsis>", then an aligned table of flag,
 * environment variable, default and help (with bounds), then how to write
 * durations, sizes and booleans. */
void wh_config_usage(FILE *out, const char *synopsis, const wh_opt *opts,
                     size_t nopts);

/* Writes the settings as a Markdown table with the columns
 * | Flag | Environment | Default | Description |, for the docs. */
void wh_config_markdown(FILE *out, const wh_opt *opts, size_t nopts);

/* True when the setting's name marks it as secret: it contains "secret",
 * "password", "token", "credential" or "key" (case-insensitive). */
bool wh_config_is_secret(const char *name);

/* Copies s into out (size outlen, always NUL-terminated, truncated if
 * needed) with secrets hidden: the password of URL userinfo
 * ("postgresql://user:pass@host" -> "postgresql://user:***@host") and the
 * value of every key=value parameter whose key wh_config_is_secret
 * accepts, in conninfo ("password=x"), query strings ("?token=x") and
 * comma-separated property lists ("sasl.password=x,k=v"). */
void wh_config_redact(const char *s, char *out, size_t outlen);

/* Formats the current value of o in settings for display into out (use
 * WH_CONFIG_VALUE_MAX bytes): secret settings as "(set)" or "(unset)",
 * NULL strings as "(unset)", strings through wh_config_redact, durations
 * and sizes in their shortest exact unit ("5m", "64k"). */
void wh_config_format(const wh_opt *o, const void *settings, char *out,
                      size_t outlen);

/* Logs every setting at info level, one line each, as
 * msg "config" with fields setting=<name> value=<wh_config_format>. */
void wh_config_log(const wh_opt *opts, size_t nopts, const void *settings);

#endif
