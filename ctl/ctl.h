/*
 * ctl.h - what the files of webhookctl share: the exit codes and the
 * helpers every subcommand uses to parse its flags, report bad usage and
 * reach Postgres (defined in webhookctl.c), and the subcommands that live
 * in files of their own (token.c). Internal to webhookctl, hence no
 * prefix; single-threaded.
 */
#ifndef WH_CTL_H
#define WH_CTL_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "db.h"

#define EXIT_FAIL 1
#define EXIT_USAGE 2

/* Prints "webhookctl: " and fmt (one %s: arg) on stderr; exits 2. */
void die_usage(const char *fmt, const char *arg) __attribute__((noreturn));

/* Connects to DATABASE_URL with the global settings' bounds; exits 2 when
 * it is not set, 1 when the connection fails. */
wh_db *connect_db(void);

/* Parses a subcommand's flags from argv (argv[0] is the subcommand);
 * *first is the first argument that is not a flag. --help prints the
 * synopsis and the flags and exits 0; a bad flag exits 2. */
int parse_sub(const char *synopsis, const wh_opt *opts, size_t n,
              void *settings, int argc, char **argv, int *first);

/* Parses "SUBCOMMAND ARG [flags]" with flags before or after the one
 * argument and returns it (unvalidated); exits 2 naming what ("missing
 * endpoint ID") when it is absent, or on any other argument. */
const char *parse_with_arg(const char *synopsis, const char *what,
                           const wh_opt *opts, size_t nopts, void *settings,
                           int argc, char **argv);

/* "50/s" or "50" as a rate per second (1 to 1000000); exits 2 naming
 * --rate-limit otherwise. */
int64_t parse_rate(const char *s);

/* Unix time t as "YYYY-MM-DDTHH:MM:SSZ". */
void format_utc(int64_t t, char *out, size_t cap);

/* webhookctl token create|list|revoke (token.c). */
int cmd_token(int argc, char **argv);

#endif
