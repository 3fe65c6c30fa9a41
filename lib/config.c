/*
 * config.c - the settings-table machinery declared in config.h: value
 * parsing (integers, booleans, durations, sizes) with bounds, the
 * defaults -> environment -> flags load order, --help and Markdown
 * output, and redacted display of effective settings.
 *
 * Called from main() of each binary before threads start; getenv() makes
 * loading non-thread-safe. Holds no state of its own.
 */
#include "config.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"

#define LABEL_MAX 80  /* "default of --<name>" */
#define CELL_MAX 160  /* one cell of the usage table */
#define HELP_MAX 1024 /* help text plus bounds */
#define COL_CAP 36    /* widest aligned usage column */

static void *field(void *settings, const wh_opt *o)
{
    return (char *)settings + o->offset;
}

static const void *cfield(const void *settings, const wh_opt *o)
{
    return (const char *)settings + o->offset;
}

static bool has_bounds(const wh_opt *o)
{
    return o->min != 0 || o->max != 0;
}

static int parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < WH_ARRAY_LEN(yes); i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return WH_OK;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return WH_OK;
        }
    }
    return WH_ERR;
}

static int parse_int(const char *s, int64_t *out)
{
    char *end;
    if (!*s || isspace((unsigned char)*s) || *s == '+')
        return WH_ERR;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end)
        return WH_ERR;
    *out = v;
    return WH_OK;
}

/* "512", "64k", "1m", "2g", optionally "b", "kb"/"kib", ... in any case;
 * all units are powers of 1024. */
static int parse_size(const char *s, int64_t *out)
{
    char *end;
    if (!isdigit((unsigned char)*s))
        return WH_ERR;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno)
        return WH_ERR;
    static const struct {
        const char *suffix;
        int64_t mult;
    } units[] = {
        {"", 1},
        {"b", 1},
        {"k", 1024},
        {"kb", 1024},
        {"kib", 1024},
        {"m", 1024 * 1024},
        {"mb", 1024 * 1024},
        {"mib", 1024 * 1024},
        {"g", 1024LL * 1024 * 1024},
        {"gb", 1024LL * 1024 * 1024},
        {"gib", 1024LL * 1024 * 1024},
    };
    for (size_t i = 0; i < WH_ARRAY_LEN(units); i++) {
        if (strcasecmp(end, units[i].suffix) == 0) {
            if (v > INT64_MAX / units[i].mult)
                return WH_ERR;
            *out = v * units[i].mult;
            return WH_OK;
        }
    }
    return WH_ERR;
}

struct unit {
    int64_t mult;
    const char *suffix;
};

static const struct unit dur_units[] = {
    {24LL * 3600 * 1000, "d"}, {3600 * 1000, "h"}, {60 * 1000, "m"},
    {1000, "s"},               {1, "ms"},
};

static const struct unit size_units[] = {
    {1024LL * 1024 * 1024, "g"}, {1024 * 1024, "m"}, {1024, "k"}, {1, ""},
};

/* Writes v in the notation of type t: durations and sizes in their
 * largest exact unit. */
static void format_num(wh_opt_type t, int64_t v, char *out, size_t outlen)
{
    const struct unit *u = NULL;
    size_t n = 0;

    if (t == WH_OPT_DURATION) {
        u = dur_units;
        n = WH_ARRAY_LEN(dur_units);
    } else if (t == WH_OPT_SIZE) {
        u = size_units;
        n = WH_ARRAY_LEN(size_units);
    }
    if (v == 0 && t == WH_OPT_DURATION) {
        snprintf(out, outlen, "0s");
        return;
    }
    for (size_t i = 0; i < n && v != 0; i++) {
        if (v % u[i].mult == 0) {
            snprintf(out, outlen, "%lld%s", (long long)(v / u[i].mult),
                     u[i].suffix);
            return;
        }
    }
    snprintf(out, outlen, "%lld", (long long)v);
}

/* Parses text as the value of o and stores it. label names the source in
 * error messages: "--name", "ENV_NAME" or "default of --name". */
static int set_value(const wh_opt *o, void *settings, const char *text,
                     const char *label, char *err, size_t errlen)
{
    int64_t v = 0;
    const int show = WH_CONFIG_SHOW_MAX;

    switch (o->type) {
    case WH_OPT_STRING:
        *(const char **)field(settings, o) = text;
        return WH_OK;
    case WH_OPT_BOOL: {
        bool b;
        if (parse_bool(text, &b) != WH_OK)
            return wh_errf(err, errlen,
                           "%s: invalid boolean '%.*s' (use true or false)",
                           label, show, text);
        *(bool *)field(settings, o) = b;
        return WH_OK;
    }
    case WH_OPT_INT:
        if (parse_int(text, &v) != WH_OK)
            return wh_errf(err, errlen, "%s: invalid integer '%.*s'", label,
                           show, text);
        break;
    case WH_OPT_DURATION:
        if (wh_parse_duration_ms(text, &v) != WH_OK)
            return wh_errf(err, errlen,
                           "%s: invalid duration '%.*s' (use e.g. 250ms, "
                           "5s, 2m)",
                           label, show, text);
        break;
    case WH_OPT_SIZE:
        if (parse_size(text, &v) != WH_OK)
            return wh_errf(err, errlen,
                           "%s: invalid size '%.*s' (use e.g. 512, 64k, 1m)",
                           label, show, text);
        break;
    default:
        assert(!"unknown wh_opt_type");
        return wh_errf(err, errlen, "%s: unknown option type", label);
    }
    if (has_bounds(o)) {
        char bound[32];
        if (v < o->min) {
            format_num(o->type, o->min, bound, sizeof(bound));
            return wh_errf(err, errlen, "%s: %.*s is below the minimum %s",
                           label, show, text, bound);
        }
        if (v > o->max) {
            format_num(o->type, o->max, bound, sizeof(bound));
            return wh_errf(err, errlen, "%s: %.*s is above the maximum %s",
                           label, show, text, bound);
        }
    }
    *(int64_t *)field(settings, o) = v;
    return WH_OK;
}

static void set_zero(const wh_opt *o, void *settings)
{
    if (o->type == WH_OPT_STRING)
        *(const char **)field(settings, o) = NULL;
    else if (o->type == WH_OPT_BOOL)
        *(bool *)field(settings, o) = false;
    else
        *(int64_t *)field(settings, o) = 0;
}

static const wh_opt *find_opt(const wh_opt *opts, size_t nopts,
                              const char *name, size_t len)
{
    for (size_t i = 0; i < nopts; i++) {
        if (strlen(opts[i].name) == len &&
            memcmp(opts[i].name, name, len) == 0)
            return &opts[i];
    }
    return NULL;
}

int wh_config_load(const wh_opt *opts, size_t nopts, void *settings,
                   int argc, char **argv, int *first_arg, char *err,
                   size_t errlen)
{
    char label[LABEL_MAX];
    const int show = WH_CONFIG_SHOW_MAX;
    int i;

    assert(opts || nopts == 0);
    assert(settings || nopts == 0);
    assert(argc >= 0);

    for (size_t k = 0; k < nopts; k++) {
        const wh_opt *o = &opts[k];
        assert(o->name && o->name[0] && o->name[0] != '-');
        assert(strcmp(o->name, "help") != 0);
        if (!o->def) {
            set_zero(o, settings);
            continue;
        }
        snprintf(label, sizeof(label), "default of --%s", o->name);
        if (set_value(o, settings, o->def, label, err, errlen) != WH_OK)
            return WH_ERR;
    }

    for (size_t k = 0; k < nopts; k++) {
        const wh_opt *o = &opts[k];
        const char *v = o->env ? getenv(o->env) : NULL;
        if (v && *v && set_value(o, settings, v, o->env, err, errlen) != WH_OK)
            return WH_ERR;
    }

    for (i = argc > 0 ? 1 : 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)
            return WH_AGAIN;
        if (a[0] != '-' || a[1] == '\0')
            break;
        if (a[1] != '-')
            return wh_errf(err, errlen, "unknown option %.*s", show, a);

        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const wh_opt *o = find_opt(opts, nopts, name, nlen);
        bool negated = false;

        if (!o && nlen > 3 && memcmp(name, "no-", 3) == 0) {
            o = find_opt(opts, nopts, name + 3, nlen - 3);
            if (o && o->type == WH_OPT_BOOL)
                negated = true;
            else
                o = NULL;
        }
        if (!o)
            return wh_errf(err, errlen, "unknown option --%.*s",
                           (int)(nlen < (size_t)show ? nlen : (size_t)show),
                           name);
        if (negated) {
            if (eq)
                return wh_errf(err, errlen, "--no-%s does not take a value",
                               o->name);
            *(bool *)field(settings, o) = false;
            continue;
        }

        const char *val;
        if (eq) {
            val = eq + 1;
        } else if (o->type == WH_OPT_BOOL) {
            *(bool *)field(settings, o) = true;
            continue;
        } else {
            if (i + 1 >= argc ||
                (argv[i + 1][0] == '-' && argv[i + 1][1] == '-'))
                return wh_errf(err, errlen, "missing value for --%s",
                               o->name);
            val = argv[++i];
        }
        snprintf(label, sizeof(label), "--%s", o->name);
        if (set_value(o, settings, val, label, err, errlen) != WH_OK)
            return WH_ERR;
    }

    if (first_arg)
        *first_arg = i;
    else if (i < argc)
        return wh_errf(err, errlen, "unexpected argument '%.*s'", show,
                       argv[i]);
    return WH_OK;
}

static const char *placeholder(wh_opt_type t)
{
    switch (t) {
    case WH_OPT_STRING:
        return "TEXT";
    case WH_OPT_INT:
        return "N";
    case WH_OPT_DURATION:
        return "DURATION";
    case WH_OPT_SIZE:
        return "SIZE";
    case WH_OPT_BOOL:
        break;
    }
    return "";
}

static void flag_text(const wh_opt *o, char *out, size_t outlen)
{
    if (o->type == WH_OPT_BOOL)
        snprintf(out, outlen, "--[no-]%s", o->name);
    else
        snprintf(out, outlen, "--%s %s", o->name, placeholder(o->type));
}

/* Help text followed by its bounds: "Batch size (1..1000)." */
static void help_text(const wh_opt *o, char *out, size_t outlen)
{
    const char *help = o->help ? o->help : "";
    if (!has_bounds(o) || o->type == WH_OPT_STRING ||
        o->type == WH_OPT_BOOL) {
        snprintf(out, outlen, "%s", help);
        return;
    }
    char lo[32], hi[32], range[80];
    format_num(o->type, o->min, lo, sizeof(lo));
    format_num(o->type, o->max, hi, sizeof(hi));
    if (o->max == INT64_MAX)
        snprintf(range, sizeof(range), "at least %s", lo);
    else if (o->min == INT64_MIN)
        snprintf(range, sizeof(range), "at most %s", hi);
    else
        snprintf(range, sizeof(range), "%s..%s", lo, hi);
    snprintf(out, outlen, "%s%s(%s)", help, *help ? " " : "", range);
}

static size_t min_size(size_t a, size_t b)
{
    return a < b ? a : b;
}

void wh_config_usage(FILE *out, const char *synopsis, const wh_opt *opts,
                     size_t nopts)
{
    char flag[CELL_MAX], help[HELP_MAX];
    size_t wflag = strlen("-h, --help"), wenv = strlen("ENVIRONMENT"),
           wdef = strlen("DEFAULT");
    bool has_dur = false, has_size = false, has_bool = false;

    for (size_t i = 0; i < nopts; i++) {
        const wh_opt *o = &opts[i];
        flag_text(o, flag, sizeof(flag));
        wflag = min_size(COL_CAP, wflag > strlen(flag) ? wflag : strlen(flag));
        if (o->env && strlen(o->env) > wenv)
            wenv = min_size(COL_CAP, strlen(o->env));
        if (o->def && strlen(o->def) > wdef)
            wdef = min_size(COL_CAP, strlen(o->def));
        has_dur |= o->type == WH_OPT_DURATION;
        has_size |= o->type == WH_OPT_SIZE;
        has_bool |= o->type == WH_OPT_BOOL;
    }

    fprintf(out, "Usage: %s\n\nOptions (flags override environment "
                 "variables, which override defaults):\n",
            synopsis ? synopsis : "[options]");
    fprintf(out, "  %-*s  %-*s  %-*s  %s\n", (int)wflag, "FLAG", (int)wenv,
            "ENVIRONMENT", (int)wdef, "DEFAULT", "DESCRIPTION");
    for (size_t i = 0; i < nopts; i++) {
        const wh_opt *o = &opts[i];
        flag_text(o, flag, sizeof(flag));
        help_text(o, help, sizeof(help));
        fprintf(out, "  %-*s  %-*s  %-*s  %s\n", (int)wflag, flag, (int)wenv,
                o->env ? o->env : "-", (int)wdef, o->def ? o->def : "-",
                help);
    }
    fprintf(out, "  %-*s  %-*s  %-*s  %s\n", (int)wflag, "-h, --help",
            (int)wenv, "", (int)wdef, "", "Show this help and exit.");
    if (has_dur)
        fprintf(out, "\nDurations: 250ms, 5s, 2m, 1h, 1d (a bare number is "
                     "milliseconds).\n");
    if (has_size)
        fprintf(out, "%sSizes: 512, 64k, 1m, 1g (bytes; k, m, g are "
                     "KiB, MiB, GiB).\n",
                has_dur ? "" : "\n");
    if (has_bool)
        fprintf(out, "%sBooleans: --name, --no-name or --name=VALUE; "
                     "VALUE and environment variables take "
                     "true/false, 1/0, yes/no, on/off.\n",
                has_dur || has_size ? "" : "\n");
}

/* Writes s into a Markdown table cell: '|' escaped, line breaks as
 * spaces. */
static void md_cell(FILE *out, const char *s)
{
    for (; *s; s++) {
        if (*s == '|')
            fputs("\\|", out);
        else if (*s == '\n' || *s == '\r')
            fputc(' ', out);
        else
            fputc(*s, out);
    }
}

void wh_config_markdown(FILE *out, const wh_opt *opts, size_t nopts)
{
    char flag[CELL_MAX], help[HELP_MAX];

    fputs("| Flag | Environment | Default | Description |\n"
          "|------|-------------|---------|-------------|\n",
          out);
    for (size_t i = 0; i < nopts; i++) {
        const wh_opt *o = &opts[i];
        flag_text(o, flag, sizeof(flag));
        help_text(o, help, sizeof(help));
        fputs("| `", out);
        md_cell(out, flag);
        fputs("` | ", out);
        if (o->env) {
            fputc('`', out);
            md_cell(out, o->env);
            fputc('`', out);
        } else {
            fputs("-", out);
        }
        fputs(" | ", out);
        if (o->def && *o->def) {
            fputc('`', out);
            md_cell(out, o->def);
            fputc('`', out);
        } else {
            fputs("-", out);
        }
        fputs(" | ", out);
        md_cell(out, help);
        fputs(" |\n", out);
    }
}

bool wh_config_is_secret(const char *name)
{
    static const char *const words[] = {"secret", "password", "token",
                                        "credential", "key"};
    for (size_t i = 0; i < WH_ARRAY_LEN(words); i++) {
        if (strcasestr(name, words[i]))
            return true;
    }
    return false;
}

/* Appends n bytes of s to out[*len], keeping room for the NUL. */
static void put(char *out, size_t outlen, size_t *len, const char *s,
                size_t n)
{
    size_t room = outlen - 1 - *len;
    if (n > room)
        n = room;
    memcpy(out + *len, s, n);
    *len += n;
}

static bool is_key_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '.' || c == '-';
}

/* True when s starts with "key=" (a following parameter). */
static bool at_param(const char *s)
{
    size_t k = 0;
    while (is_key_char(s[k]))
        k++;
    return k > 0 && s[k] == '=';
}

/* Length of the parameter value starting at s: a quoted conninfo value
 * ('a b\'c') with its quotes, else up to a space, tab, '&', or a ','
 * that starts another key=value. */
static size_t param_value_len(const char *s)
{
    size_t i = 0;

    if (*s == '\'') {
        for (i = 1; s[i] && s[i] != '\''; i++) {
            if (s[i] == '\\' && s[i + 1])
                i++;
        }
        return s[i] ? i + 1 : i;
    }
    for (; s[i]; i++) {
        if (s[i] == ' ' || s[i] == '\t' || s[i] == '&' ||
            (s[i] == ',' && at_param(s + i + 1)))
            break;
    }
    return i;
}

static bool secret_key(const char *key, size_t n)
{
    char buf[WH_CONFIG_SHOW_MAX + 1];
    if (n > WH_CONFIG_SHOW_MAX)
        n = WH_CONFIG_SHOW_MAX;
    memcpy(buf, key, n);
    buf[n] = '\0';
    return wh_config_is_secret(buf);
}

void wh_config_redact(const char *s, char *out, size_t outlen)
{
    const char *start = s;
    size_t len = 0;

    assert(out && outlen > 0);
    while (*s && len < outlen - 1) {
        if (s[0] == ':' && s[1] == '/' && s[2] == '/') {
            const char *auth = s + 3;
            size_t alen = strcspn(auth, "/?#, \t");
            const char *at = NULL;
            for (size_t i = 0; i < alen; i++) {
                if (auth[i] == '@')
                    at = auth + i;
            }
            const char *colon =
                at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
            if (colon) {
                put(out, outlen, &len, s, (size_t)(colon + 1 - s));
                put(out, outlen, &len, "***", 3);
                s = at;
            } else {
                put(out, outlen, &len, s, 3);
                s += 3;
            }
            continue;
        }
        char prev = s > start ? s[-1] : ' ';
        if (is_key_char(*s) && strchr(" \t?&;,", prev)) {
            size_t k = 0;
            while (is_key_char(s[k]))
                k++;
            if (s[k] == '=' && secret_key(s, k)) {
                put(out, outlen, &len, s, k + 1);
                put(out, outlen, &len, "***", 3);
                s += k + 1;
                s += param_value_len(s);
            } else {
                put(out, outlen, &len, s, k);
                s += k;
            }
            continue;
        }
        put(out, outlen, &len, s, 1);
        s++;
    }
    out[len] = '\0';
}

void wh_config_format(const wh_opt *o, const void *settings, char *out,
                      size_t outlen)
{
    const void *f = cfield(settings, o);

    assert(out && outlen > 0);
    switch (o->type) {
    case WH_OPT_STRING: {
        const char *s = *(const char *const *)f;
        if (!s)
            snprintf(out, outlen, "(unset)");
        else if (wh_config_is_secret(o->name))
            snprintf(out, outlen, "%s", *s ? "(set)" : "(unset)");
        else
            wh_config_redact(s, out, outlen);
        return;
    }
    case WH_OPT_BOOL:
        snprintf(out, outlen, "%s",
                 wh_config_is_secret(o->name)  ? "(set)"
                 : *(const bool *)f ? "true"
                                    : "false");
        return;
    default:
        if (wh_config_is_secret(o->name))
            snprintf(out, outlen, "(set)");
        else
            format_num(o->type, *(const int64_t *)f, out, outlen);
        return;
    }
}

void wh_config_log(const wh_opt *opts, size_t nopts, const void *settings)
{
    char value[WH_CONFIG_VALUE_MAX];

    if (!wh_log_enabled(WH_LOG_INFO))
        return;
    for (size_t i = 0; i < nopts; i++) {
        wh_config_format(&opts[i], settings, value, sizeof(value));
        wh_log_kv(WH_LOG_INFO, "config", "setting", opts[i].name, "value",
                  value, NULL);
    }
}
