/*
 * token.c - `webhookctl token create|list|revoke`: the operator's side of
 * the HTTP API's bearer tokens (lib/tokens.h). create prints a token once
 * and nothing else ever shows it again; list shows every token's settings,
 * never a token or its hash; revoke ends one at once (API servers hear of
 * it through the webhooks_api_tokens notification). Exit codes as in
 * webhookctl.c: 1 when the operation failed, 2 on bad usage or input.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "buf.h"
#include "ctl.h"
#include "tokens.h"

/* ---- token create ------------------------------------------------------- */

typedef struct {
    const char *name, *app, *scope, *allow_cidr, *rate_limit;
    int64_t expires_ms;
    bool json;
} create_settings;

#define S(f) offsetof(create_settings, f)
static const wh_opt create_opts[] = {
    {"name", NULL, WH_OPT_STRING, NULL, 0, 0, S(name),
     "what the token is for, shown in listings (1 to 100 bytes; required)"},
    {"app", NULL, WH_OPT_STRING, NULL, 0, 0, S(app),
     "the only app (tenant) the token reaches (default: every app)"},
    {"scope", NULL, WH_OPT_STRING, NULL, 0, 0, S(scope),
     "admin (every route, every app), app (every route of --app), ingest "
     "(publishing only) or read (GET routes only); default: app with --app, "
     "else admin"},
    {"allow-cidr", NULL, WH_OPT_STRING, NULL, 0, 0, S(allow_cidr),
     "comma-separated address ranges the token may be used from, e.g. "
     "10.0.0.0/8,2001:db8::/32 (default: any)"},
    {"rate-limit", NULL, WH_OPT_STRING, NULL, 0, 0, S(rate_limit),
     "requests per second the token may make, e.g. 50/s (default: none)"},
    {"expires", NULL, WH_OPT_DURATION, NULL, 0, 0, S(expires_ms),
     "lifetime, e.g. 90d or 12h, at most 3650d (default: never expires)"},
    {"json", NULL, WH_OPT_BOOL, "false", 0, 0, S(json),
     "print {\"id\":..,\"token\":..,\"name\":..,\"scope\":..,\"app\":..,"
     "\"expires_at\":..} instead of the token and the id on two lines"},
};
#undef S

/* Appends ,"key":"text" to b, or ,"key":null when text is NULL. */
static int add_str(wh_buf *b, const char *key, const char *text)
{
    if (wh_buf_addf(b, ",\"%s\":", key))
        return WH_ERR;
    return text ? wh_buf_json_str(b, text, strlen(text))
                : wh_buf_add(b, "null", 4);
}

/* Appends ,"key":"YYYY-MM-DDTHH:MM:SSZ" to b, or null when t is 0. */
static int add_time(wh_buf *b, const char *key, int64_t t)
{
    char when[32];
    if (!t)
        return add_str(b, key, NULL);
    format_utc(t, when, sizeof(when));
    return add_str(b, key, when);
}

static int token_create(int argc, char **argv)
{
    create_settings s;
    int first;
    memset(&s, 0, sizeof(s));
    parse_sub("webhookctl token create --name N [--app A] [--scope S] "
              "[--allow-cidr CIDRS] [--rate-limit N/s] [--expires 90d] "
              "[--json]",
              create_opts, WH_ARRAY_LEN(create_opts), &s, argc, argv, &first);
    if (first < argc)
        die_usage("unexpected argument '%s'", argv[first]);
    if (!s.name)
        die_usage("%s", "--name is required");
    wh_token_spec spec = {
        .name = s.name,
        .app = s.app,
        .scope = s.app ? WH_SCOPE_APP : WH_SCOPE_ADMIN,
        .allow_cidrs = s.allow_cidr,
        .rate_limit_per_s = s.rate_limit ? parse_rate(s.rate_limit) : 0,
        /* whole seconds, rounding up: "--expires 500ms" is not "never" */
        .expires_in_s = s.expires_ms / 1000 + (s.expires_ms % 1000 != 0),
    };
    if (s.scope && wh_token_scope_parse(s.scope, &spec.scope) != WH_OK)
        die_usage("--scope: '%s' is not admin, app, ingest or read",
                  s.scope);
    char token[WH_TOKEN_TEXT_MAX], id[WH_TOKEN_ID_MAX], err[1024];
    int64_t now_s = wh_wall_us() / 1000000;
    wh_db *db = connect_db();
    int rc = wh_tokens_create(db, &spec, now_s, token, id, err, sizeof(err));
    wh_db_close(db);
    if (rc != WH_OK) {
        fprintf(stderr, "webhookctl: %s\n", err);
        return rc == WH_DECLINED ? EXIT_USAGE : EXIT_FAIL;
    }
    int64_t expires_at = spec.expires_in_s ? now_s + spec.expires_in_s : 0;
    wh_buf b;
    wh_buf_init(&b, 4096);
    if (s.json) {
        rc = wh_buf_addf(&b, "{\"id\":\"%s\"", id) ||
             add_str(&b, "token", token) || add_str(&b, "name", s.name) ||
             add_str(&b, "scope", wh_token_scope_name(spec.scope)) ||
             add_str(&b, "app", s.app) ||
             add_time(&b, "expires_at", expires_at) || wh_buf_add(&b, "}", 1);
    } else {
        rc = wh_buf_addf(&b, "%s\n%s", token, id);
    }
    OPENSSL_cleanse(token, sizeof(token));
    if (rc == WH_OK)
        printf("%s\n", wh_buf_cstr(&b));
    fflush(stdout);
    if (b.data)
        OPENSSL_cleanse(b.data, b.cap);
    wh_buf_free(&b);
    if (rc != WH_OK) {
        fprintf(stderr, "webhookctl: out of memory; token %s was stored "
                        "but cannot be shown: revoke it\n", id);
        return EXIT_FAIL;
    }
    fprintf(stderr, "webhookctl: token %s (%s scope%s%s) created; it is "
                    "shown only this once and cannot be read back, so "
                    "store it now\n",
            id, wh_token_scope_name(spec.scope), s.app ? ", app " : "",
            s.app ? s.app : "");
    return 0;
}

/* ---- token list --------------------------------------------------------- */

typedef struct {
    bool json;
} tlist_settings;

static const wh_opt tlist_opts[] = {
    {"json", NULL, WH_OPT_BOOL, "false", 0, 0, offsetof(tlist_settings, json),
     "one JSON object per line"},
};

typedef struct {
    bool json;
    wh_buf out;
    bool failed;
} tlist_state;

/* t's time t as text for the plain listing ("-" for none). */
static const char *when(int64_t t, char *buf, size_t cap)
{
    if (!t)
        return "-";
    format_utc(t, buf, cap);
    return buf;
}

static void print_token(wh_token *t, void *opaque)
{
    tlist_state *st = opaque;
    wh_buf *b = &st->out;
    const char *app = t->app[0] ? t->app : NULL;
    wh_buf_reset(b);
    int rc;
    if (st->json) {
        rc = wh_buf_addf(b, "{\"id\":\"%s\"", t->id) ||
             add_str(b, "name", t->name) ||
             add_str(b, "scope", wh_token_scope_name(t->scope)) ||
             add_str(b, "app", app) ||
             add_str(b, "allow_cidrs", t->allow_cidrs);
        if (t->rate_limit_per_s)
            rc = rc || wh_buf_addf(b, ",\"rate_limit_per_s\":%lld",
                                   (long long)t->rate_limit_per_s);
        else
            rc = rc || wh_buf_add(b, ",\"rate_limit_per_s\":null", 24);
        rc = rc || add_time(b, "created_at", t->created_at_s) ||
             add_time(b, "expires_at", t->expires_at_s) ||
             add_time(b, "last_used_at", t->last_used_at_s) ||
             add_time(b, "revoked_at", t->revoked_at_s) ||
             wh_buf_add(b, "}", 1);
    } else {
        char c[32], e[32], u[32], r[32], rate[24] = "-";
        if (t->rate_limit_per_s)
            snprintf(rate, sizeof(rate), "%lld/s",
                     (long long)t->rate_limit_per_s);
        rc = wh_buf_addf(b, "%-21s %-6s %-12s %-20s %-20s %-20s %-20s %-9s "
                            "%-18s %s",
                         t->id, wh_token_scope_name(t->scope),
                         app ? app : "*", when(t->created_at_s, c, sizeof(c)),
                         when(t->expires_at_s, e, sizeof(e)),
                         when(t->last_used_at_s, u, sizeof(u)),
                         when(t->revoked_at_s, r, sizeof(r)), rate,
                         t->allow_cidrs ? t->allow_cidrs : "any", t->name);
    }
    if (rc == WH_OK)
        printf("%s\n", wh_buf_cstr(b));
    else
        st->failed = true;
    wh_token_cleanup(t);
    free(t);
}

static int token_list(int argc, char **argv)
{
    tlist_settings s;
    int first;
    memset(&s, 0, sizeof(s));
    parse_sub("webhookctl token list [--json]", tlist_opts,
              WH_ARRAY_LEN(tlist_opts), &s, argc, argv, &first);
    if (first < argc)
        die_usage("unexpected argument '%s'", argv[first]);
    wh_db *db = connect_db();
    tlist_state st = {.json = s.json};
    wh_buf_init(&st.out, 64 * 1024);
    char err[1024];
    if (!s.json)
        printf("%-21s %-6s %-12s %-20s %-20s %-20s %-20s %-9s %-18s %s\n",
               "ID", "SCOPE", "APP", "CREATED", "EXPIRES", "LAST USED",
               "REVOKED", "RATE", "ALLOW", "NAME");
    int rc = wh_tokens_list(db, print_token, &st, err, sizeof(err));
    wh_buf_free(&st.out);
    wh_db_close(db);
    if (rc != WH_OK) {
        fprintf(stderr, "webhookctl: %s\n", err);
        return EXIT_FAIL;
    }
    if (st.failed) {
        fprintf(stderr, "webhookctl: a token's line did not fit in memory\n");
        return EXIT_FAIL;
    }
    return 0;
}

/* ---- token revoke ------------------------------------------------------- */

static int token_revoke(int argc, char **argv)
{
    const char *id = parse_with_arg("webhookctl token revoke ID", "token ID",
                                    NULL, 0, NULL, argc, argv);
    char err[1024];
    if (wh_tokens_check_id(id, err, sizeof(err)) != WH_OK)
        die_usage("%s", err);
    wh_db *db = connect_db();
    int rc = wh_tokens_revoke(db, id, err, sizeof(err));
    wh_db_close(db);
    if (rc != WH_OK) {
        fprintf(stderr, "webhookctl: %s\n", err);
        return EXIT_FAIL;
    }
    printf("%s revoked\n", id);
    return 0;
}

int cmd_token(int argc, char **argv)
{
    if (argc < 2)
        die_usage("%s", "token: expected create, list or revoke");
    const char *sub = argv[1];
    if (strcmp(sub, "create") == 0)
        return token_create(argc - 1, argv + 1);
    if (strcmp(sub, "list") == 0)
        return token_list(argc - 1, argv + 1);
    if (strcmp(sub, "revoke") == 0)
        return token_revoke(argc - 1, argv + 1);
    die_usage("token: unknown command '%s' (create, list, revoke)", sub);
}
