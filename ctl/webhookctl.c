/*
 * webhookctl.c - the admin CLI: schema migrations, endpoints, delivery
 * history, replays and dead letters (API tokens: token.c). Each
 * subcommand parses its own flag table (lib/config.h), talks to Postgres
 * through lib/db.h (replays also to Kafka, through lib/replay.h) and exits
 * 0 on success, 1 when the operation failed (database unreachable, no such
 * endpoint, a delivery not replayed) and 2 on bad usage or invalid input.
 * The helpers every subcommand uses are declared in ctl.h.
 */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "codec.h"
#include "config.h"
#include "ctl.h"
#include "db.h"
#include "http.h"
#include "endpoints.h"
#include "json.h"
#include "log.h"
#include "pattern.h"
#include "retry.h"
#include "replay.h"
#include "secretbox.h"
#include "url.h"

/* A replay gives up on Kafka after this long without an acknowledgement. */
#define REPLAY_ACK_TIMEOUT_MS 30000

typedef struct {
    const char *database_url;
    const char *secret_key;
    const char *secret_key_file;
    const char *secret_key_previous;
    const char *secret_key_previous_file;
    const char *kafka_brokers;
    const char *kafka_extra;
    const char *deliveries_topic;
    bool https_only;
    wh_db_opts db; /* bounds of the Postgres connection */
} global_settings;

static const wh_opt global_opts[] = {
    {"database-url", "DATABASE_URL", WH_OPT_STRING, NULL, 0, 0,
     offsetof(global_settings, database_url),
     "PostgreSQL connection URI"},
    {"secret-key", "WEBHOOK_SECRET_KEY", WH_OPT_STRING, NULL, 0, 0,
     offsetof(global_settings, secret_key),
     "32-byte key (base64 or hex) sealing endpoint secrets"},
    {"secret-key-file", "WEBHOOK_SECRET_KEY_FILE", WH_OPT_STRING, NULL, 0, 0,
     offsetof(global_settings, secret_key_file),
     "file holding that key (instead of WEBHOOK_SECRET_KEY)"},
    {"secret-key-previous", "WEBHOOK_SECRET_KEY_PREVIOUS", WH_OPT_STRING,
     NULL, 0, 0, offsetof(global_settings, secret_key_previous),
     "keys the current one replaced (at most 3, separated by commas or "
     "whitespace): they open secrets sealed under them, never seal"},
    {"secret-key-previous-file", "WEBHOOK_SECRET_KEY_PREVIOUS_FILE",
     WH_OPT_STRING, NULL, 0, 0,
     offsetof(global_settings, secret_key_previous_file),
     "file holding those keys, one per line (instead of "
     "WEBHOOK_SECRET_KEY_PREVIOUS)"},
    {"kafka-brokers", "KAFKA_BROKERS", WH_OPT_STRING, "localhost:9092", 0, 0,
     offsetof(global_settings, kafka_brokers),
     "Kafka bootstrap servers (replays)"},
    {"kafka-extra", "KAFKA_EXTRA", WH_OPT_STRING, NULL, 0, 0,
     offsetof(global_settings, kafka_extra),
     "more librdkafka properties, k=v,k=v (e.g. security.protocol=ssl)"},
    {"deliveries-topic", "WEBHOOK_DELIVERIES_TOPIC", WH_OPT_STRING,
     "webhook.deliveries", 0, 0, offsetof(global_settings, deliveries_topic),
     "topic replayed deliveries are produced to"},
    {"https-only", "WEBHOOK_HTTPS_ONLY", WH_OPT_BOOL, "false", 0, 0,
     offsetof(global_settings, https_only),
     "refuse http:// endpoint URLs (workers with it deliver nothing to them)"},
    WH_DB_OPT_ROWS(offsetof(global_settings, db)),
};

static const char usage_text[] =
    "Usage: webhookctl [global options] COMMAND ...\n"
    "\n"
    "Commands:\n"
    "  migrate                          apply the schema migrations\n"
    "  endpoint add --app A --url URL [--secret whsec_...] [--events 'a.*,b']\n"
    "               [--signature hmac|ed25519|both] [--description D]\n"
    "               [--unordered] [--max-in-flight N] [--rate-limit N/s]\n"
    "               [--timeout 10s] [--retry-schedule 1s,1m]\n"
    "               [--client-cert PEM --client-key PEM] [--ca-bundle PEM]\n"
    "               [--json]\n"
    "                                   register an endpoint; prints its id\n"
    "                                   (and the secret when generated, the\n"
    "                                   whpk_ public key for ed25519)\n"
    "  endpoint import [--json] [FILE]  register the endpoints of FILE (or\n"
    "                                   stdin): one JSON object per line with\n"
    "                                   the members app, url, secret, events,\n"
    "                                   description, unordered, max_in_flight,\n"
    "                                   rate_limit, timeout, retry_schedule,\n"
    "                                   signature; all or none (one\n"
    "                                   transaction); prints ID [SECRET]\n"
    "                                   [PUBLIC_KEY] per endpoint\n"
    "  endpoint list [--app A] [--json] list endpoints (never opens secrets)\n"
    "  endpoint update ID [--url URL] [--events E] [--retry-schedule S|default]\n"
    "               [--ordered|--unordered] [--max-in-flight N]\n"
    "               [--rate-limit N/s|none] [--timeout T] [--description D]\n"
    "               [--secret whsec_...] [--signature hmac|ed25519|both]\n"
    "               [--client-cert PEM --client-key PEM|--no-client-cert]\n"
    "               [--ca-bundle PEM|--no-ca-bundle]\n"
    "                                   change an endpoint (--secret re-seals\n"
    "                                   its secret with the current key)\n"
    "  endpoint rotate-secret ID [--secret whsec_...] [--kind hmac|ed25519]\n"
    "               [--overlap 24h] [--json]\n"
    "                                   new signing secret or key pair (the\n"
    "                                   secret and public key printed); the\n"
    "                                   current ones also sign for the\n"
    "                                   overlap (at most 7d; 4 of each kind)\n"
    "  endpoint get-key ID [--all] [--json]\n"
    "                                   the endpoint's ed25519 public key\n"
    "                                   (whpk_...), for its receiver\n"
    "  endpoint check [ID]              open every secret and check every\n"
    "                                   column; names the rows a worker\n"
    "                                   quarantines, and why (exit 1)\n"
    "  endpoint disable ID [--reason R] stop deliveries to an endpoint\n"
    "  endpoint enable ID               resume deliveries\n"
    "  rekey [--dry-run] [--json]       re-seal the endpoints' secrets not\n"
    "                                   yet under WEBHOOK_SECRET_KEY (opened\n"
    "                                   with WEBHOOK_SECRET_KEY_PREVIOUS);\n"
    "                                   exit 1 when a row cannot be opened\n"
    "  deliveries list [--endpoint ID] [--event ID] [--app A]\n"
    "                  [--outcome succeeded|failed] [--limit N] [--json]\n"
    "                                   delivery attempts, newest first\n"
    "  replay --delivery ID | --event ID [--app A] |\n"
    "         --endpoint ID --since T [--until T]\n"
    "                       [--outcome failed|succeeded]\n"
    "         [--limit N] [--dry-run]   send deliveries again with the same\n"
    "                                   webhook-id\n"
    "  dead-letters list [--endpoint ID] [--app A] [--since T] [--limit N]\n"
    "                    [--json]       deliveries whose last attempt was\n"
    "                                   final and failed, newest first\n"
    "  dead-letters replay [--endpoint ID] [--app A] [--since T] [--limit N]\n"
    "                      [--dry-run]  send them again\n"
    "  token create --name N [--app A] [--scope admin|app|ingest|read]\n"
    "               [--allow-cidr CIDRS] [--rate-limit N/s] [--expires 90d]\n"
    "               [--json]            a bearer token for the HTTP API,\n"
    "                                   printed once (then its id); only its\n"
    "                                   SHA-256 is stored. Scope: app with\n"
    "                                   --app, else admin; never expires\n"
    "                                   unless --expires (at most 3650d)\n"
    "  token list [--json]              every token's id, name, scope, app,\n"
    "                                   limits and times (never the token)\n"
    "  token revoke ID                  the token stops working at once\n"
    "\n"
    "T is a time Postgres reads ('2026-11-23 15:00', '2026-11-23T15:00:00Z')\n"
    "or a duration meaning that long ago (30m, 2h, 7d). Replays read the\n"
    "events stored in webhooks.events, so they reach back as far as its\n"
    "retention. Dead letters are also produced to the webhook.dead topic\n"
    "(webhook.v1.DeadLetter with the original event) for consumers.\n"
    "\n"
    "Run 'webhookctl COMMAND --help' for a command's options.\n";

static global_settings G;

void die_usage(const char *fmt, const char *arg)
{
    fprintf(stderr, "webhookctl: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    exit(EXIT_USAGE);
}

wh_db *connect_db(void)
{
    char err[1024];
    wh_db *db;
    if (!G.database_url || !*G.database_url) {
        fprintf(stderr, "webhookctl: DATABASE_URL is not set (or pass "
                        "--database-url)\n");
        exit(EXIT_USAGE);
    }
    wh_db_set_defaults(&G.db);
    if (wh_db_connect(G.database_url, &db, err, sizeof(err)) != WH_OK) {
        fprintf(stderr, "webhookctl: %s\n", err);
        exit(EXIT_FAIL);
    }
    return db;
}

static void load_box(wh_secretbox *sb)
{
    char err[512];
    wh_secretbox_source keys = {
        .key = G.secret_key,
        .key_file = G.secret_key_file,
        .previous = G.secret_key_previous,
        .previous_file = G.secret_key_previous_file,
    };
    if (wh_secretbox_load(sb, &keys, err, sizeof(err)) != WH_OK) {
        fprintf(stderr, "webhookctl: %s\n", err);
        exit(EXIT_USAGE);
    }
}

/* wh_url_check, and https:// only under WEBHOOK_HTTPS_ONLY. */
static int url_check(const char *url, char *err, size_t errlen)
{
    if (wh_url_check(url, err, errlen) != WH_OK)
        return WH_ERR;
    if (G.https_only && !wh_url_is_https(url))
        return wh_errf(err, errlen, "URL must start with https:// "
                       "(WEBHOOK_HTTPS_ONLY is on)");
    return WH_OK;
}

/* How long endpoint add and update wait for a URL's host to resolve. */
#define RESOLVE_CHECK_MS 2000

/* Warns on stderr when url's host resolves to an address the workers'
 * SSRF guard refuses (judged with WEBHOOK_ALLOW_PRIVATE_NETS as this
 * process sees it), so deliveries to it would be dead-lettered with
 * reason ADDRESS_REFUSED; or when it does not resolve. Never fails. */
static void warn_address(const char *url)
{
    char msg[1024], err[512];
    wh_netlist *allow = NULL;
    const char *text = getenv("WEBHOOK_ALLOW_PRIVATE_NETS");
    if (text && wh_netlist_parse(text, &allow, err, sizeof(err)) != WH_OK) {
        fprintf(stderr, "webhookctl: warning: WEBHOOK_ALLOW_PRIVATE_NETS: "
                        "%s (the URL's addresses are judged without it)\n",
                err);
        allow = NULL;
    }
    int rc = wh_url_resolve_check(url, allow, RESOLVE_CHECK_MS, msg,
                                  sizeof(msg));
    if (rc == WH_DECLINED)
        fprintf(stderr, "webhookctl: warning: %s resolves to an address "
                        "workers refuse (%s): its deliveries will be "
                        "dead-lettered as ADDRESS_REFUSED unless "
                        "WEBHOOK_ALLOW_PRIVATE_NETS lets it through\n",
                url, msg);
    else if (rc != WH_OK)
        fprintf(stderr, "webhookctl: warning: %s\n", msg);
    wh_netlist_free(allow);
}

int parse_sub(const char *synopsis, const wh_opt *opts, size_t n,
              void *settings, int argc, char **argv, int *first)
{
    char err[512];
    int rc = wh_config_load(opts, n, settings, argc, argv, first, err,
                            sizeof(err));
    if (rc == WH_AGAIN) {
        wh_config_usage(stdout, synopsis, opts, n);
        exit(0);
    }
    if (rc != WH_OK) {
        fprintf(stderr, "webhookctl: %s\n", err);
        exit(EXIT_USAGE);
    }
    return 0;
}

/* ---- migrate ------------------------------------------------------------ */

static int cmd_migrate(int argc, char **argv)
{
    int first;
    parse_sub("webhookctl migrate", NULL, 0, NULL, argc, argv, &first);
    if (first < argc)
        die_usage("migrate takes no arguments (got '%s')", argv[first]);
    wh_db *db = connect_db();
    char err[1024];
    int applied;
    int rc = wh_db_migrate(db, &applied, err, sizeof(err));
    wh_db_close(db);
    if (rc != WH_OK) {
        fprintf(stderr, "webhookctl: %s\n", err);
        return EXIT_FAIL;
    }
    printf("schema up to date (%d migration%s applied)\n", applied,
           applied == 1 ? "" : "s");
    return 0;
}

/* ---- endpoint ----------------------------------------------------------- */

typedef struct {
    const char *app, *url, *secret, *events, *description, *rate_limit;
    const char *retry_schedule, *signature;
    const char *client_cert, *client_key, *ca_bundle;
    bool unordered, json;
    int64_t max_in_flight, timeout_ms;
} add_settings;

#define A(f) offsetof(add_settings, f)
static const wh_opt add_opts[] = {
    {"app", NULL, WH_OPT_STRING, NULL, 0, 0, A(app),
     "application (tenant) the endpoint belongs to (required)"},
    {"url", NULL, WH_OPT_STRING, NULL, 0, 0, A(url),
     "https:// (or http://) URL deliveries are POSTed to (required)"},
    {"secret", NULL, WH_OPT_STRING, NULL, 0, 0, A(secret),
     "signing secret whsec_<base64>; generated when omitted"},
    {"signature", NULL, WH_OPT_STRING, "hmac", 0, 0, A(signature),
     "signatures deliveries carry: hmac (v1, a whsec_ secret), ed25519 (v1a, "
     "a generated key pair; its whpk_ public key is printed) or both"},
    {"client-cert", NULL, WH_OPT_STRING, NULL, 0, 0, A(client_cert),
     "PEM file: the TLS client certificate (and chain) sent to the "
     "endpoint (mTLS; needs --client-key)"},
    {"client-key", NULL, WH_OPT_STRING, NULL, 0, 0, A(client_key),
     "PEM file: its unencrypted private key, stored sealed"},
    {"ca-bundle", NULL, WH_OPT_STRING, NULL, 0, 0, A(ca_bundle),
     "PEM file: the CAs the endpoint's server certificate is checked "
     "against, instead of the worker's"},
    {"events", NULL, WH_OPT_STRING, "*", 0, 0, A(events),
     "event types to receive: comma-separated, '*' per segment, '**' for "
     "the rest"},
    {"description", NULL, WH_OPT_STRING, NULL, 0, 0, A(description),
     "free text shown in listings"},
    {"unordered", NULL, WH_OPT_BOOL, "false", 0, 0, A(unordered),
     "allow concurrent deliveries (no ordering) to this endpoint"},
    {"max-in-flight", NULL, WH_OPT_INT, "1", 1, 1000, A(max_in_flight),
     "concurrent deliveries for an unordered endpoint"},
    {"rate-limit", NULL, WH_OPT_STRING, NULL, 0, 0, A(rate_limit),
     "deliveries per second, e.g. 50/s"},
    {"timeout", NULL, WH_OPT_DURATION, NULL, 0, 120000, A(timeout_ms),
     "per-attempt timeout for this endpoint (100ms-120s)"},
    {"retry-schedule", NULL, WH_OPT_STRING, NULL, 0, 0, A(retry_schedule),
     "delays before each retry, e.g. 1s,2s,4s (default "
     "5s,30s,2m,10m,30m,1h,3h,6h,12h,1d; 'none' for no retries)"},
    {"json", NULL, WH_OPT_BOOL, "false", 0, 0, A(json),
     "print {\"id\":..,\"secret\":..,\"public_key\":..} instead of plain "
     "lines"},
};

/* The text of the PEM file path names (flag names the option), at most
 * max bytes; NULL when path is NULL. Exits 2 when it cannot be read. */
static char *read_pem(const char *flag, const char *path, size_t max)
{
    if (!path)
        return NULL;
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "webhookctl: %s %s: %s\n", flag, path,
                strerror(errno));
        exit(EXIT_USAGE);
    }
    char *buf = malloc(max + 2);
    size_t n = buf ? fread(buf, 1, max + 1, f) : 0;
    bool bad = !buf || ferror(f);
    fclose(f);
    if (bad || n > max || memchr(buf, '\0', n)) {
        fprintf(stderr, "webhookctl: %s %s: %s\n", flag, path,
                !buf ? "out of memory" : bad ? "cannot be read"
                : n > max ? "too large" : "holds a NUL byte");
        if (buf)
            explicit_bzero(buf, max + 2);
        free(buf);
        exit(EXIT_USAGE);
    }
    buf[n] = '\0';
    return buf;
}

/* Frees PEM text read by read_pem, overwriting it first (it may be a
 * key). */
static void free_pem(char *pem)
{
    if (pem) {
        explicit_bzero(pem, strlen(pem));
        free(pem);
    }
}

static wh_signature_kind parse_signature(const char *flag, const char *s)
{
    wh_signature_kind k;
    if (wh_signature_parse(s, &k) != WH_OK) {
        fprintf(stderr, "webhookctl: %s: '%s' is not hmac, ed25519 or both\n",
                flag, s);
        exit(EXIT_USAGE);
    }
    return k;
}

/* "50/s" or "50" as deliveries per second, or -1. */
static int64_t rate_value(const char *s)
{
    char *end;
    long long v = strtoll(s, &end, 10);
    if (end == s || v < 1 || v > 1000000 ||
        (*end && strcmp(end, "/s") != 0))
        return -1;
    return v;
}

int64_t parse_rate(const char *s)
{
    int64_t v = rate_value(s);
    if (v < 0)
        die_usage("--rate-limit: '%s' is not a rate like 50/s", s);
    return v;
}

static int endpoint_add(int argc, char **argv)
{
    add_settings s;
    int first;
    memset(&s, 0, sizeof(s));
    parse_sub("webhookctl endpoint add --app A --url URL [options]", add_opts,
              WH_ARRAY_LEN(add_opts), &s, argc, argv, &first);
    if (first < argc)
        die_usage("unexpected argument '%s'", argv[first]);
    if (!s.app)
        die_usage("%s", "--app is required");
    if (!s.url)
        die_usage("%s", "--url is required");
    char err[1024];
    if (url_check(s.url, err, sizeof(err)) != WH_OK)
        die_usage("--url: %s", err);
    if (wh_codec_check_app(s.app, err, sizeof(err)) != WH_OK)
        die_usage("--app: %s", err);
    if (wh_pattern_list_check(s.events, err, sizeof(err)) != WH_OK)
        die_usage("--events: %s", err);
    if (s.timeout_ms && s.timeout_ms < 100)
        die_usage("%s", "--timeout must be at least 100ms");
    wh_secretbox sb;
    load_box(&sb);
    wh_endpoint_spec spec = {
        .app = s.app,
        .url = s.url,
        .secret = s.secret,
        .event_types = s.events,
        .description = s.description,
        .unordered = s.unordered,
        .max_in_flight = s.max_in_flight,
        .rate_limit_per_s = s.rate_limit ? parse_rate(s.rate_limit) : 0,
        .timeout_ms = s.timeout_ms,
        .retry_schedule = s.retry_schedule,
        .signature = parse_signature("--signature", s.signature),
        .tls_cert = read_pem("--client-cert", s.client_cert, WH_TLS_CERT_MAX),
        .tls_key = read_pem("--client-key", s.client_key, WH_TLS_KEY_MAX),
        .tls_ca = read_pem("--ca-bundle", s.ca_bundle, WH_TLS_CA_MAX),
    };
    char id[WH_ENDPOINT_ID_MAX], secret[WH_SECRET_TEXT_MAX];
    char pubkey[WH_SIGNKEY_TEXT_MAX];
    wh_db *db = connect_db();
    int rc = wh_endpoints_add(db, &sb, &spec, id, secret, pubkey, err,
                              sizeof(err));
    free_pem((char *)spec.tls_cert);
    free_pem((char *)spec.tls_key);
    free_pem((char *)spec.tls_ca);
    wh_db_close(db);
    wh_secretbox_cleanup(&sb);
    if (rc != WH_OK) {
        fprintf(stderr, "webhookctl: %s\n", err);
        return strstr(err, "query failed") ? EXIT_FAIL : EXIT_USAGE;
    }
    if (s.json) {
        printf("{\"id\":\"%s\"", id);
        if (secret[0])
            printf(",\"secret\":\"%s\"", secret);
        if (pubkey[0])
            printf(",\"public_key\":\"%s\"", pubkey);
        printf("}\n");
    } else {
        printf("%s\n", id);
        if (secret[0])
            printf("%s\n", secret);
        if (pubkey[0])
            printf("%s\n", pubkey);
    }
    memset(secret, 0, sizeof(secret));
    fflush(stdout);
    warn_address(s.url);
    return 0;
}

/* ---- endpoint import ---------------------------------------------------- */

typedef struct {
    bool json;
} import_settings;

static const wh_opt import_opts[] = {
    {"json", NULL, WH_OPT_BOOL, "false", 0, 0,
     offsetof(import_settings, json),
     "print {\"line\":..,\"id\":..,\"secret\":..} instead of plain lines"},
};

/* One string member of an import line into out; absent or null leaves
 * *out NULL. */
static int import_string(const wh_json *d, const char *key, char *buf,
                         size_t cap, const char **out, char *err,
                         size_t errlen)
{
    *out = NULL;
    int32_t t = wh_json_get(d, 0, key);
    if (t < 0 || d->toks[t].type == WH_JSON_NULL)
        return WH_OK;
    size_t len;
    if (wh_json_string(d, t, buf, cap, &len) != WH_OK || strlen(buf) != len)
        return wh_errf(err, errlen, "\"%s\" must be a string (at most %zu "
                       "bytes, no NUL)", key, cap - 1);
    *out = buf;
    return WH_OK;
}

/* Reads one import line (an object with the members `endpoint add` has
 * as flags) into spec; the strings live in bufs. */
static int import_line(const wh_json *d, wh_endpoint_spec *spec,
                       char bufs[][WH_URL_MAX + 1], char *err, size_t errlen)
{
    static const char *const known[] = {
        "app", "url", "secret", "events", "description", "unordered",
        "max_in_flight", "rate_limit", "timeout", "retry_schedule",
        "signature"};
    if (d->toks[0].type != WH_JSON_OBJECT)
        return wh_errf(err, errlen, "expected a JSON object");
    for (int32_t k = wh_json_child(d, 0); k >= 0; k = wh_json_next(d, k)) {
        bool ok = false;
        for (size_t i = 0; i < WH_ARRAY_LEN(known) && !ok; i++)
            ok = wh_json_streq(d, k, known[i]);
        if (!ok) {
            char name[64];
            if (wh_json_string(d, k, name, sizeof(name), NULL) != WH_OK)
                wh_strlcpy(name, "(long name)", sizeof(name));
            return wh_errf(err, errlen, "unknown member \"%s\"", name);
        }
    }
    const char *rate = NULL, *timeout = NULL, *signature = NULL;
    if (import_string(d, "app", bufs[0], WH_URL_MAX + 1, &spec->app, err,
                      errlen) ||
        import_string(d, "url", bufs[1], WH_URL_MAX + 1, &spec->url, err,
                      errlen) ||
        import_string(d, "secret", bufs[2], WH_URL_MAX + 1, &spec->secret,
                      err, errlen) ||
        import_string(d, "events", bufs[3], WH_URL_MAX + 1,
                      &spec->event_types, err, errlen) ||
        import_string(d, "description", bufs[4], WH_URL_MAX + 1,
                      &spec->description, err, errlen) ||
        import_string(d, "rate_limit", bufs[5], WH_URL_MAX + 1, &rate, err,
                      errlen) ||
        import_string(d, "timeout", bufs[6], WH_URL_MAX + 1, &timeout, err,
                      errlen) ||
        import_string(d, "retry_schedule", bufs[7], WH_URL_MAX + 1,
                      &spec->retry_schedule, err, errlen) ||
        import_string(d, "signature", bufs[8], WH_URL_MAX + 1, &signature,
                      err, errlen))
        return WH_ERR;
    if (signature && wh_signature_parse(signature, &spec->signature) != WH_OK)
        return wh_errf(err, errlen, "\"signature\" must be hmac, ed25519 or "
                                    "both");
    if (!spec->app || !spec->url)
        return wh_errf(err, errlen, "\"app\" and \"url\" are required");
    if (url_check(spec->url, err, errlen) != WH_OK)
        return WH_ERR;
    int32_t t = wh_json_get(d, 0, "unordered");
    if (t >= 0) {
        if (d->toks[t].type != WH_JSON_TRUE &&
            d->toks[t].type != WH_JSON_FALSE)
            return wh_errf(err, errlen, "\"unordered\" must be true or false");
        spec->unordered = d->toks[t].type == WH_JSON_TRUE;
    }
    t = wh_json_get(d, 0, "max_in_flight");
    if (t >= 0 && (wh_json_int64(d, t, &spec->max_in_flight) != WH_OK ||
                   spec->max_in_flight < 1 || spec->max_in_flight > 1000))
        return wh_errf(err, errlen, "\"max_in_flight\" must be 1-1000");
    if (rate && (spec->rate_limit_per_s = rate_value(rate)) < 0)
        return wh_errf(err, errlen, "\"rate_limit\": '%s' is not a rate like "
                       "50/s", rate);
    if (timeout && wh_parse_duration_ms(timeout, &spec->timeout_ms) != WH_OK)
        return wh_errf(err, errlen, "\"timeout\": '%s' is not a duration "
                       "like 10s", timeout);
    return WH_OK;
}

/* Creates the endpoints described by FILE (or stdin), one JSON object per
 * line, in one transaction: a bad line adds none of them. */
static int endpoint_import(int argc, char **argv)
{
    import_settings s;
    int first;
    memset(&s, 0, sizeof(s));
    parse_sub("webhookctl endpoint import [--json] [FILE]", import_opts,
              WH_ARRAY_LEN(import_opts), &s, argc, argv, &first);
    if (argc - first > 1)
        die_usage("unexpected argument '%s'", argv[first + 1]);
    FILE *in = stdin;
    const char *name = "stdin";
    if (first < argc && strcmp(argv[first], "-") != 0) {
        name = argv[first];
        if (!(in = fopen(name, "r"))) {
            fprintf(stderr, "webhookctl: cannot open %s: %s\n", name,
                    strerror(errno));
            return EXIT_USAGE;
        }
    }
    wh_secretbox sb;
    load_box(&sb);
    wh_db *db = connect_db();
    char err[1024];
    wh_buf out;
    wh_buf_init(&out, SIZE_MAX / 4);
    wh_json doc = {0};
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long lineno = 0, added = 0;
    int rc = EXIT_USAGE;
    static char bufs[9][WH_URL_MAX + 1];
    if (wh_db_exec(db, "BEGIN", err, sizeof(err)) != WH_OK) {
        rc = EXIT_FAIL;
        goto fail;
    }
    while ((n = getline(&line, &cap, in)) >= 0) {
        lineno++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        if (n == 0)
            continue;
        wh_endpoint_spec spec;
        memset(&spec, 0, sizeof(spec));
        char e[WH_ERRLEN], id[WH_ENDPOINT_ID_MAX], secret[WH_SECRET_TEXT_MAX];
        char pubkey[WH_SIGNKEY_TEXT_MAX];
        if (wh_json_parse(&doc, line, (size_t)n, 256, e, sizeof(e)) != WH_OK ||
            import_line(&doc, &spec, bufs, e, sizeof(e)) != WH_OK) {
            snprintf(err, sizeof(err), "%s line %ld: %s", name, lineno, e);
            goto fail;
        }
        if (wh_endpoints_add(db, &sb, &spec, id, secret, pubkey, e,
                             sizeof(e)) != WH_OK) {
            snprintf(err, sizeof(err), "%s line %ld: %s", name, lineno, e);
            if (strstr(e, "query failed"))
                rc = EXIT_FAIL;
            goto fail;
        }
        added++;
        char row[WH_ENDPOINT_ID_MAX + WH_SECRET_TEXT_MAX +
                 WH_SIGNKEY_TEXT_MAX + 64];
        if (s.json)
            snprintf(row, sizeof(row),
                     "{\"line\":%ld,\"id\":\"%s\"%s%s%s%s%s%s}\n", lineno, id,
                     secret[0] ? ",\"secret\":\"" : "", secret,
                     secret[0] ? "\"" : "",
                     pubkey[0] ? ",\"public_key\":\"" : "", pubkey,
                     pubkey[0] ? "\"" : "");
        else
            snprintf(row, sizeof(row), "%s%s%s%s%s\n", id,
                     secret[0] ? " " : "", secret, pubkey[0] ? " " : "",
                     pubkey);
        if (wh_buf_add(&out, row, strlen(row)) != WH_OK) {
            snprintf(err, sizeof(err), "out of memory");
            rc = EXIT_FAIL;
            goto fail;
        }
    }
    if (ferror(in)) {
        snprintf(err, sizeof(err), "cannot read %s: %s", name,
                 strerror(errno));
        rc = EXIT_FAIL;
        goto fail;
    }
    if (wh_db_exec(db, "COMMIT", err, sizeof(err)) != WH_OK) {
        rc = EXIT_FAIL;
        goto fail;
    }
    fwrite(out.data, 1, out.len, stdout);
    fprintf(stderr, "webhookctl: imported %ld endpoints\n", added);
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "webhookctl: %s; nothing was imported\n", err);
done:
    free(line);
    wh_json_free(&doc);
    wh_buf_free(&out);
    wh_db_close(db);
    wh_secretbox_cleanup(&sb);
    if (in != stdin)
        fclose(in);
    return rc;
}

typedef struct {
    const char *app;
    bool json;
} list_settings;

static const wh_opt list_opts[] = {
    {"app", NULL, WH_OPT_STRING, NULL, 0, 0, offsetof(list_settings, app),
     "only endpoints of this app"},
    {"json", NULL, WH_OPT_BOOL, "false", 0, 0, offsetof(list_settings, json),
     "one JSON object per line"},
};

typedef struct {
    const list_settings *s;
    wh_buf out;
    int shown;
} list_state;

static void print_endpoint(wh_endpoint *ep, void *opaque)
{
    list_state *st = opaque;
    if (st->s->app && strcmp(st->s->app, ep->app) != 0) {
        wh_endpoint_free(ep);
        return;
    }
    st->shown++;
    if (st->s->json) {
        wh_buf *b = &st->out;
        wh_buf_reset(b);
        int rc = wh_buf_addf(b, "{\"id\":\"%s\",\"app\":", ep->id) ||
                 wh_buf_json_str(b, ep->app, strlen(ep->app)) ||
                 wh_buf_add(b, ",\"url\":", 7) ||
                 wh_buf_json_str(b, ep->url, strlen(ep->url)) ||
                 wh_buf_add(b, ",\"events\":", 10) ||
                 wh_buf_json_str(b, ep->event_types,
                                 strlen(ep->event_types)) ||
                 wh_buf_addf(b, ",\"signature\":\"%s\"",
                             wh_signature_name(ep->signature)) ||
                 wh_buf_addf(b, ",\"ordered\":%s,\"max_in_flight\":%d,"
                                "\"rate_limit_per_s\":%d,\"timeout_ms\":%lld,"
                                "\"disabled\":%s,\"disabled_reason\":",
                             ep->ordered ? "true" : "false",
                             ep->max_in_flight, ep->rate_limit_per_s,
                             (long long)ep->timeout_ms,
                             ep->disabled ? "true" : "false");
        if (ep->disabled_reason)
            rc = rc || wh_buf_json_str(b, ep->disabled_reason,
                                       strlen(ep->disabled_reason));
        else
            rc = rc || wh_buf_add(b, "null", 4);
        char sched[WH_RETRY_TEXT_MAX];
        if (ep->custom_retry &&
            wh_retry_policy_format(&ep->retry, sched, sizeof(sched)) == WH_OK)
            rc = rc || wh_buf_addf(b, ",\"retry_schedule\":\"%s\"", sched);
        else
            rc = rc || wh_buf_add(b, ",\"retry_schedule\":null", 22);
        rc = rc || wh_buf_addf(b, ",\"client_cert\":%s,\"ca_bundle\":%s",
                               ep->has_tls_cert ? "true" : "false",
                               ep->tls_ca ? "true" : "false");
        if (ep->unreadable)
            rc = rc || wh_buf_add(b, ",\"unreadable\":", 14) ||
                 wh_buf_json_str(b, ep->unreadable, strlen(ep->unreadable));
        rc = rc || wh_buf_add(b, ",\"description\":", 15) ||
             wh_buf_json_str(b, ep->description, strlen(ep->description)) ||
             wh_buf_addf(b, ",\"created_at\":\"%s\"}", ep->created_at);
        if (!rc)
            printf("%s\n", wh_buf_cstr(b));
    } else {
        printf("%-24s %-12s %-8s %-9s %-16s %s%s%s%s%s\n", ep->id, ep->app,
               ep->disabled ? "disabled" : "enabled",
               ep->ordered ? "ordered" : "unordered", ep->event_types,
               ep->url, ep->disabled_reason ? "  # " : "",
               ep->disabled_reason ? ep->disabled_reason : "",
               ep->unreadable ? "  # unreadable: " : "",
               ep->unreadable ? ep->unreadable : "");
    }
    wh_endpoint_free(ep);
}

static int endpoint_list(int argc, char **argv)
{
    list_settings s;
    int first;
    memset(&s, 0, sizeof(s));
    parse_sub("webhookctl endpoint list [--app A] [--json]", list_opts,
              WH_ARRAY_LEN(list_opts), &s, argc, argv, &first);
    if (first < argc)
        die_usage("unexpected argument '%s'", argv[first]);
    wh_db *db = connect_db();
    list_state st = {.s = &s};
    wh_buf_init(&st.out, 64 * 1024);
    char err[1024];
    if (!s.json)
        printf("%-24s %-12s %-8s %-9s %-16s %s\n", "ID", "APP", "STATE",
               "ORDERING", "EVENTS", "URL");
    /* no secretbox: listing never opens secrets, so a row sealed under
     * another key (or damaged) is listed like the others */
    int rc = wh_endpoints_load(db, NULL, NULL, print_endpoint, &st, NULL,
                               err, sizeof(err));
    wh_buf_free(&st.out);
    wh_db_close(db);
    if (rc != WH_OK) {
        fprintf(stderr, "webhookctl: %s\n", err);
        return EXIT_FAIL;
    }
    return 0;
}

typedef struct {
    int checked, bad;
} check_state;

static void check_endpoint(wh_endpoint *ep, void *opaque)
{
    check_state *st = opaque;
    st->checked++;
    if (ep->unreadable) {
        st->bad++;
        printf("%s %s unreadable: %s\n", ep->id, ep->app, ep->unreadable);
    }
    wh_endpoint_free(ep);
}

/* Opens every endpoint's secret with WEBHOOK_SECRET_KEY and checks each
 * column: names each row a worker would quarantine, and why. */
static int endpoint_check(int argc, char **argv)
{
    int first;
    parse_sub("webhookctl endpoint check [ID]", NULL, 0, NULL, argc, argv,
              &first);
    const char *id = first < argc ? argv[first] : NULL;
    char err[1024];
    if (first + 1 < argc)
        die_usage("unexpected argument '%s'", argv[first + 1]);
    if (id && wh_codec_check_endpoint_id(id, err, sizeof(err)) != WH_OK)
        die_usage("%s", err);
    wh_secretbox sb;
    load_box(&sb);
    wh_db *db = connect_db();
    check_state st = {0, 0};
    int rc = wh_endpoints_load(db, &sb, id, check_endpoint, &st, NULL, err,
                               sizeof(err));
    wh_db_close(db);
    wh_secretbox_cleanup(&sb);
    if (rc != WH_OK) {
        fprintf(stderr, "webhookctl: %s\n", err);
        return EXIT_FAIL;
    }
    if (id && st.checked == 0) {
        fprintf(stderr, "webhookctl: no endpoint %s\n", id);
        return EXIT_FAIL;
    }
    printf("%d endpoints checked, %d unreadable\n", st.checked, st.bad);
    return st.bad ? EXIT_FAIL : 0;
}

typedef struct {
    const char *reason;
} disable_settings;

static const wh_opt disable_opts[] = {
    {"reason", NULL, WH_OPT_STRING, "disabled by operator", 0, 0,
     offsetof(disable_settings, reason), "why, shown in listings"},
};

const char *parse_with_arg(const char *synopsis, const char *what,
                           const wh_opt *opts, size_t nopts, void *settings,
                           int argc, char **argv)
{
    int first, rest_first;
    parse_sub(synopsis, opts, nopts, settings, argc, argv, &first);
    if (first >= argc)
        die_usage("missing %s", what);
    const char *id = argv[first];
    /* Flags may also follow the ID ("disable ID --reason R"): parse the
     * arguments again without it. */
    char **rest = calloc((size_t)argc, sizeof(*rest));
    if (!rest) {
        fprintf(stderr, "webhookctl: out of memory\n");
        exit(EXIT_FAIL);
    }
    int nrest = 0;
    for (int i = 0; i < argc; i++)
        if (i != first)
            rest[nrest++] = argv[i];
    parse_sub(synopsis, opts, nopts, settings, nrest, rest, &rest_first);
    if (rest_first < nrest)
        die_usage("unexpected argument '%s'", rest[rest_first]);
    free(rest);
    return id;
}

/* parse_with_arg for "SUBCOMMAND ID [flags]" naming an endpoint: returns
 * the (validated) ID. */
static const char *parse_with_id(const char *synopsis, const wh_opt *opts,
                                 size_t nopts, void *settings, int argc,
                                 char **argv)
{
    const char *id = parse_with_arg(synopsis, "endpoint ID", opts, nopts,
                                    settings, argc, argv);
    char err[1024];
    if (wh_codec_check_endpoint_id(id, err, sizeof(err)) != WH_OK)
        die_usage("%s", err);
    return id;
}

/* Reports the result of a change to endpoint id; returns the exit code. */
static int changed(int rc, const char *id, const char *err, const char *what)
{
    if (rc == WH_DECLINED) {
        fprintf(stderr, "webhookctl: no endpoint %s\n", id);
        return EXIT_FAIL;
    }
    if (rc != WH_OK) {
        fprintf(stderr, "webhookctl: %s\n", err);
        return EXIT_FAIL;
    }
    printf("%s %s\n", id, what);
    return 0;
}

static int endpoint_toggle(int argc, char **argv, bool disable)
{
    disable_settings s;
    const char *synopsis = disable
                               ? "webhookctl endpoint disable ID [--reason R]"
                               : "webhookctl endpoint enable ID";
    size_t nopts = disable ? WH_ARRAY_LEN(disable_opts) : 0;
    memset(&s, 0, sizeof(s));
    const char *id = parse_with_id(synopsis, disable_opts, nopts, &s, argc,
                                   argv);
    char err[1024];
    wh_db *db = connect_db();
    int rc = wh_endpoints_set_disabled(db, id, disable, s.reason, err,
                                       sizeof(err));
    wh_db_close(db);
    return changed(rc, id, err, disable ? "disabled" : "enabled");
}

/* ---- endpoint rotate-secret ------------------------------------------------ */

typedef struct {
    const char *secret, *kind;
    int64_t overlap_ms;
    bool json;
} rotate_settings;

static const wh_opt rotate_opts[] = {
    {"secret", NULL, WH_OPT_STRING, NULL, 0, 0,
     offsetof(rotate_settings, secret),
     "the new secret (whsec_...; default: a generated one)"},
    {"kind", NULL, WH_OPT_STRING, NULL, 0, 0, offsetof(rotate_settings, kind),
     "rotate only the hmac secret or only the ed25519 key (default: every "
     "kind the endpoint signs with)"},
    {"overlap", NULL, WH_OPT_DURATION, "24h", 0,
     (int64_t)WH_SECRET_OVERLAP_MAX_S * 1000,
     offsetof(rotate_settings, overlap_ms),
     "how long the current secret keeps signing besides the new one (0 to "
     "7d; 0: replaced at once)"},
    {"json", NULL, WH_OPT_BOOL, "false", 0, 0,
     offsetof(rotate_settings, json),
     "print {\"id\":..,\"secret\":..,\"public_key\":..,\"signing\":..,"
     "\"overlap_until\":..}"},
};

void format_utc(int64_t t, char *out, size_t cap)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (!gmtime_r(&tt, &tm) || !strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(out, cap, "%lld", (long long)t);
}

/* Prints the keys a rotation or a change of scheme made: the secret,
 * then the public key, one per line (or as JSON members). */
static void print_new_keys(const wh_rotation *rot, bool json)
{
    if (json) {
        if (rot->secret[0])
            printf(",\"secret\":\"%s\"", rot->secret);
        if (rot->public_key[0])
            printf(",\"public_key\":\"%s\"", rot->public_key);
        return;
    }
    if (rot->secret[0])
        printf("%s\n", rot->secret);
    if (rot->public_key[0])
        printf("%s\n", rot->public_key);
}

/* "2 secrets", "1 ed25519 key", "2 secrets and 2 ed25519 keys". */
static void describe_signing(const wh_rotation *rot, char *out, size_t cap)
{
    char h[40] = "", e[40] = "";
    if (rot->nhmac)
        snprintf(h, sizeof(h), "%zu secret%s", rot->nhmac,
                 rot->nhmac == 1 ? "" : "s");
    if (rot->ned25519)
        snprintf(e, sizeof(e), "%zu ed25519 key%s", rot->ned25519,
                 rot->ned25519 == 1 ? "" : "s");
    snprintf(out, cap, "%s%s%s", h, h[0] && e[0] ? " and " : "", e);
}

static int endpoint_rotate(int argc, char **argv)
{
    rotate_settings s;
    memset(&s, 0, sizeof(s));
    const char *id = parse_with_id(
        "webhookctl endpoint rotate-secret ID [--secret S] [--kind K] "
        "[--overlap 24h]",
        rotate_opts, WH_ARRAY_LEN(rotate_opts), &s, argc, argv);
    wh_signature_kind kind = 0;
    if (s.kind) {
        kind = parse_signature("--kind", s.kind);
        if (kind == WH_SIGNATURE_BOTH)
            die_usage("%s", "--kind: hmac or ed25519 (without --kind, "
                            "both are rotated)");
    }
    char err[1024];
    wh_secretbox sb;
    load_box(&sb);
    int64_t now_s = wh_wall_us() / 1000000, overlap_s = s.overlap_ms / 1000;
    wh_rotation rot;
    wh_db *db = connect_db();
    int rc = wh_endpoints_rotate_secret(db, &sb, id, kind, s.secret, overlap_s,
                                        now_s, &rot, err, sizeof(err));
    wh_db_close(db);
    wh_secretbox_cleanup(&sb);
    if (rc == WH_DECLINED) {
        fprintf(stderr, "webhookctl: no endpoint %s\n", id);
        return EXIT_FAIL;
    }
    if (rc != WH_OK) {
        fprintf(stderr, "webhookctl: %s\n", err);
        return strstr(err, "--") ? EXIT_USAGE : EXIT_FAIL;
    }
    char until[32] = "", signing[80];
    if (overlap_s > 0)
        format_utc(now_s + overlap_s, until, sizeof(until));
    size_t nlive = rot.nhmac + rot.ned25519;
    if (s.json) {
        printf("{\"id\":\"%s\"", id);
        print_new_keys(&rot, true);
        printf(",\"signing\":%zu,\"overlap_until\":%s%s%s}\n", nlive,
               until[0] ? "\"" : "", until[0] ? until : "null",
               until[0] ? "\"" : "");
    } else {
        print_new_keys(&rot, false);
    }
    describe_signing(&rot, signing, sizeof(signing));
    explicit_bzero(&rot, sizeof(rot));
    if (!s.json)
        fprintf(stderr, "webhookctl: %s: %s sign%s its deliveries%s%s\n", id,
                signing, nlive == 1 ? "s" : "",
                until[0] ? "; the previous one until "
                         : " (the previous one no longer)",
                until);
    return 0;
}

/* ---- endpoint get-key ------------------------------------------------------ */

typedef struct {
    bool all, json;
} getkey_settings;

static const wh_opt getkey_opts[] = {
    {"all", NULL, WH_OPT_BOOL, "false", 0, 0, offsetof(getkey_settings, all),
     "every public key that still signs (during a rotation's overlap), "
     "newest first"},
    {"json", NULL, WH_OPT_BOOL, "false", 0, 0, offsetof(getkey_settings, json),
     "print [{\"public_key\":..,\"expires_at\":..}, ...]"},
};

typedef struct {
    const getkey_settings *s;
    int rc;
} getkey_state;

static void print_public_keys(wh_endpoint *ep, void *opaque)
{
    getkey_state *st = opaque;
    int64_t now_s = wh_wall_us() / 1000000;
    char pk[WH_SIGNKEY_TEXT_MAX], until[32];
    st->rc = EXIT_FAIL;
    if (ep->unreadable)
        fprintf(stderr, "webhookctl: %s is unreadable: %s\n", ep->id,
                ep->unreadable);
    else if (!(ep->signature & WH_SIGNATURE_ED25519))
        fprintf(stderr, "webhookctl: %s does not sign with ed25519 (its "
                        "signature is %s; see endpoint update --signature)\n",
                ep->id, wh_signature_name(ep->signature));
    else
        st->rc = 0;
    if (st->rc != 0) {
        wh_endpoint_free(ep);
        return;
    }
    int shown = 0;
    if (st->s->json)
        printf("[");
    for (size_t i = 0; i < ep->nsignkeys; i++) {
        int64_t exp = ep->signkey_expires_s[i];
        if ((exp && exp <= now_s) || (!st->s->all && shown) ||
            wh_sign_public_key(&ep->signkeys[i], pk, sizeof(pk)) != WH_OK)
            continue;
        if (st->s->json) {
            format_utc(exp, until, sizeof(until));
            printf("%s{\"public_key\":\"%s\",\"expires_at\":%s%s%s}",
                   shown ? "," : "", pk, exp ? "\"" : "",
                   exp ? until : "null", exp ? "\"" : "");
        } else {
            printf("%s\n", pk);
        }
        shown++;
    }
    if (st->s->json)
        printf("]\n");
    wh_endpoint_free(ep);
}

/* Prints the endpoint's ed25519 public key(s), for its receiver. */
static int endpoint_get_key(int argc, char **argv)
{
    getkey_settings s;
    memset(&s, 0, sizeof(s));
    const char *id = parse_with_id("webhookctl endpoint get-key ID [--all] "
                                   "[--json]",
                                   getkey_opts, WH_ARRAY_LEN(getkey_opts), &s,
                                   argc, argv);
    char err[1024];
    wh_secretbox sb;
    load_box(&sb);
    wh_db *db = connect_db();
    getkey_state st = {&s, EXIT_FAIL};
    int found = 0;
    int rc = wh_endpoints_load(db, &sb, id, print_public_keys, &st, &found,
                               err, sizeof(err));
    wh_db_close(db);
    wh_secretbox_cleanup(&sb);
    if (rc != WH_OK) {
        fprintf(stderr, "webhookctl: %s\n", err);
        return EXIT_FAIL;
    }
    if (!found) {
        fprintf(stderr, "webhookctl: no endpoint %s\n", id);
        return EXIT_FAIL;
    }
    return st.rc;
}

typedef struct {
    const char *url, *events, *description, *rate_limit, *retry_schedule;
    const char *secret, *signature;
    const char *client_cert, *client_key, *ca_bundle;
    bool ordered, unordered, no_client_cert, no_ca_bundle;
    int64_t max_in_flight, timeout_ms;
} update_settings;

#define U(f) offsetof(update_settings, f)
static const wh_opt update_opts[] = {
    {"url", NULL, WH_OPT_STRING, NULL, 0, 0, U(url), "new URL"},
    {"events", NULL, WH_OPT_STRING, NULL, 0, 0, U(events),
     "new event-type filters"},
    {"description", NULL, WH_OPT_STRING, NULL, 0, 0, U(description),
     "new description"},
    {"retry-schedule", NULL, WH_OPT_STRING, NULL, 0, 0, U(retry_schedule),
     "delays before each retry, e.g. 1s,2s,4s; 'default' for the default "
     "schedule, 'none' for no retries"},
    {"ordered", NULL, WH_OPT_BOOL, "false", 0, 0, U(ordered),
     "deliver in order, one at a time"},
    {"unordered", NULL, WH_OPT_BOOL, "false", 0, 0, U(unordered),
     "allow concurrent deliveries (see --max-in-flight)"},
    {"max-in-flight", NULL, WH_OPT_INT, NULL, 1, 1000, U(max_in_flight),
     "concurrent deliveries for an unordered endpoint"},
    {"rate-limit", NULL, WH_OPT_STRING, NULL, 0, 0, U(rate_limit),
     "deliveries per second, e.g. 50/s; 'none' to remove"},
    {"timeout", NULL, WH_OPT_DURATION, NULL, 0, 120000, U(timeout_ms),
     "per-attempt timeout (100ms-120s)"},
    {"secret", NULL, WH_OPT_STRING, NULL, 0, 0, U(secret),
     "replace the signing secrets with this whsec_ value, sealed with "
     "WEBHOOK_SECRET_KEY (repairs a row whose secret cannot be opened; "
     "releases its held deliveries; an ed25519 endpoint also gets a new "
     "key pair, its public key printed)"},
    {"signature", NULL, WH_OPT_STRING, NULL, 0, 0, U(signature),
     "hmac, ed25519 or both: keys of a kind no longer used are dropped, a "
     "kind newly used gets a generated key (printed: the secret, the "
     "public key)"},
    {"client-cert", NULL, WH_OPT_STRING, NULL, 0, 0, U(client_cert),
     "PEM file: a new TLS client certificate (needs --client-key)"},
    {"client-key", NULL, WH_OPT_STRING, NULL, 0, 0, U(client_key),
     "PEM file: its unencrypted private key, stored sealed"},
    {"no-client-cert", NULL, WH_OPT_BOOL, "false", 0, 0, U(no_client_cert),
     "remove the TLS client certificate and key"},
    {"ca-bundle", NULL, WH_OPT_STRING, NULL, 0, 0, U(ca_bundle),
     "PEM file: a new CA bundle for the endpoint's server certificate"},
    {"no-ca-bundle", NULL, WH_OPT_BOOL, "false", 0, 0, U(no_ca_bundle),
     "check the server certificate against the worker's CAs again"},
};

static int endpoint_update(int argc, char **argv)
{
    update_settings s;
    char err[1024];
    memset(&s, 0, sizeof(s));
    const char *id = parse_with_id("webhookctl endpoint update ID [options]",
                                   update_opts, WH_ARRAY_LEN(update_opts), &s,
                                   argc, argv);
    if (s.ordered && s.unordered)
        die_usage("%s", "--ordered and --unordered exclude each other");
    if (s.url && url_check(s.url, err, sizeof(err)) != WH_OK)
        die_usage("--url: %s", err);
    if (s.events && wh_pattern_list_check(s.events, err, sizeof(err)) != WH_OK)
        die_usage("--events: %s", err);
    if (s.timeout_ms && s.timeout_ms < 100)
        die_usage("%s", "--timeout must be at least 100ms");
    bool default_retry = s.retry_schedule &&
                         strcmp(s.retry_schedule, "default") == 0;
    if (s.retry_schedule && !default_retry) {
        wh_retry_policy rp;
        if (wh_retry_policy_parse(s.retry_schedule, &rp, err, sizeof(err)))
            die_usage("--retry-schedule: %s", err);
    }
    wh_endpoint_patch patch = {
        .url = s.url,
        .event_types = s.events,
        .description = s.description,
        .set_retry = s.retry_schedule != NULL,
        .retry_schedule = default_retry ? NULL : s.retry_schedule,
        .ordered = s.ordered ? 1 : s.unordered ? 0 : -1,
        .max_in_flight = s.max_in_flight,
        .set_rate = s.rate_limit != NULL,
        .rate_limit_per_s = s.rate_limit && strcmp(s.rate_limit, "none")
                                ? parse_rate(s.rate_limit) : 0,
        .timeout_ms = s.timeout_ms,
    };
    bool other = s.url || s.events || s.description || s.retry_schedule ||
                 s.ordered || s.unordered || s.max_in_flight ||
                 s.rate_limit || s.timeout_ms;
    if (s.no_client_cert && (s.client_cert || s.client_key))
        die_usage("%s", "--no-client-cert excludes --client-cert and "
                        "--client-key");
    if (s.no_ca_bundle && s.ca_bundle)
        die_usage("%s", "--no-ca-bundle excludes --ca-bundle");
    if (!s.client_cert != !s.client_key)
        die_usage("%s", "--client-cert and --client-key go together");
    bool tls = s.client_cert || s.no_client_cert || s.ca_bundle ||
               s.no_ca_bundle;
    if (!other && !s.secret && !s.signature && !tls)
        die_usage("%s", "nothing to change (see --help)");
    if (s.secret && s.signature)
        die_usage("%s", "--secret and --signature: one at a time");
    wh_signature_kind scheme = 0;
    if (s.signature)
        scheme = parse_signature("--signature", s.signature);
    wh_secretbox sb;
    if (s.secret) {
        wh_secret parsed;
        if (wh_sign_parse_secret(s.secret, &parsed, err, sizeof(err)))
            die_usage("--secret: %s", err);
        wh_sign_clear_secret(&parsed);
    }
    if (s.secret || s.signature || s.client_cert)
        load_box(&sb);
    char *cert = read_pem("--client-cert", s.client_cert, WH_TLS_CERT_MAX);
    char *key = read_pem("--client-key", s.client_key, WH_TLS_KEY_MAX);
    char *ca = read_pem("--ca-bundle", s.ca_bundle, WH_TLS_CA_MAX);
    wh_db *db = connect_db();
    int rc = other ? wh_endpoints_update(db, id, &patch, err, sizeof(err))
                   : WH_OK;
    if (rc == WH_ERR && !strstr(err, "query failed")) {
        fprintf(stderr, "webhookctl: --%s\n", err);
        exit(EXIT_USAGE);
    }
    wh_rotation rot;
    memset(&rot, 0, sizeof(rot));
    if (rc == WH_OK && s.secret)
        rc = wh_endpoints_set_secret(db, &sb, id, s.secret, &rot, err,
                                     sizeof(err));
    if (rc == WH_OK && s.signature)
        rc = wh_endpoints_set_signature(db, &sb, id, scheme,
                                        wh_wall_us() / 1000000, &rot, err,
                                        sizeof(err));
    if (rc == WH_OK && (s.client_cert || s.no_client_cert))
        rc = wh_endpoints_set_client_cert(db, &sb, id, cert, key, err,
                                          sizeof(err));
    if (rc == WH_OK && (s.ca_bundle || s.no_ca_bundle))
        rc = wh_endpoints_set_ca_bundle(db, id, ca, err, sizeof(err));
    free_pem(cert);
    free_pem(key);
    free_pem(ca);
    if (s.secret || s.signature || s.client_cert)
        wh_secretbox_cleanup(&sb);
    wh_db_close(db);
    rc = changed(rc, id, err, "updated");
    if (rc == 0) {
        /* the given secret is not printed back; a generated key is */
        if (s.secret)
            rot.secret[0] = '\0';
        print_new_keys(&rot, false);
    }
    explicit_bzero(&rot, sizeof(rot));
    if (rc == 0 && s.url) {
        fflush(stdout);
        warn_address(s.url);
    }
    return rc;
}

static int cmd_endpoint(int argc, char **argv)
{
    if (argc < 2)
        die_usage("%s", "endpoint: expected add, import, list, update, "
                        "rotate-secret, get-key, check, disable or enable");
    const char *sub = argv[1];
    if (strcmp(sub, "add") == 0)
        return endpoint_add(argc - 1, argv + 1);
    if (strcmp(sub, "import") == 0)
        return endpoint_import(argc - 1, argv + 1);
    if (strcmp(sub, "list") == 0)
        return endpoint_list(argc - 1, argv + 1);
    if (strcmp(sub, "disable") == 0)
        return endpoint_toggle(argc - 1, argv + 1, true);
    if (strcmp(sub, "enable") == 0)
        return endpoint_toggle(argc - 1, argv + 1, false);
    if (strcmp(sub, "update") == 0)
        return endpoint_update(argc - 1, argv + 1);
    if (strcmp(sub, "rotate-secret") == 0)
        return endpoint_rotate(argc - 1, argv + 1);
    if (strcmp(sub, "check") == 0)
        return endpoint_check(argc - 1, argv + 1);
    if (strcmp(sub, "get-key") == 0)
        return endpoint_get_key(argc - 1, argv + 1);
    die_usage("endpoint: unknown command '%s' (add, import, list, update, "
              "rotate-secret, get-key, check, disable, enable)", sub);
    return EXIT_USAGE;
}

/* ---- rekey -------------------------------------------------------------- */

typedef struct {
    bool dry_run, json;
} rekey_settings;

static const wh_opt rekey_opts[] = {
    {"dry-run", NULL, WH_OPT_BOOL, "false", 0, 0,
     offsetof(rekey_settings, dry_run),
     "change nothing; report what would be re-sealed"},
    {"json", NULL, WH_OPT_BOOL, "false", 0, 0, offsetof(rekey_settings, json),
     "print {\"dry_run\":..,\"key_id\":..,\"resealed\":..,\"current\":..,"
     "\"unopenable\":[{\"id\":..,\"reason\":..}]}"},
};

typedef struct {
    bool json;
    wh_buf list; /* --json: the members of the unopenable array */
    bool full;
} rekey_state;

static void print_unopenable(const char *id, const char *why, void *opaque)
{
    rekey_state *st = opaque;
    if (!st->json) {
        printf("%s cannot be opened: %s\n", id, why);
        return;
    }
    if ((st->list.len && wh_buf_addc(&st->list, ',')) ||
        wh_buf_add(&st->list, "{\"id\":", 6) ||
        wh_buf_json_str(&st->list, id, strlen(id)) ||
        wh_buf_add(&st->list, ",\"reason\":", 10) ||
        wh_buf_json_str(&st->list, why, strlen(why)) ||
        wh_buf_addc(&st->list, '}'))
        st->full = true;
}

/* Re-seals every endpoint row not under the current key with it. Exit 0
 * when every row is under the current key afterwards (dry run: would
 * be), 1 when some row cannot be opened or Postgres failed. */
static int cmd_rekey(int argc, char **argv)
{
    rekey_settings s;
    int first;
    memset(&s, 0, sizeof(s));
    parse_sub("webhookctl rekey [--dry-run] [--json]\n\n"
              "Re-seals, row by row, the endpoints' sealed secrets that are "
              "not under\nWEBHOOK_SECRET_KEY, opening them with the keys in "
              "WEBHOOK_SECRET_KEY_PREVIOUS.\nRun it once every worker and "
              "webhookctl has the new key, then drop the\nprevious one "
              "(docs/security.md, Rotating the master key).",
              rekey_opts, WH_ARRAY_LEN(rekey_opts), &s, argc, argv, &first);
    if (first < argc)
        die_usage("unexpected argument '%s'", argv[first]);
    wh_secretbox sb;
    load_box(&sb);
    char err[1024], key_id[WH_SECRETBOX_KEY_ID_TEXT_LEN];
    wh_secretbox_current_id(&sb, key_id);
    rekey_state st = {.json = s.json};
    wh_buf_init(&st.list, 1024 * 1024);
    wh_rekey_stats n;
    wh_db *db = connect_db();
    int rc = wh_endpoints_rekey(db, &sb, s.dry_run, &n, print_unopenable, &st,
                                err, sizeof(err));
    wh_db_close(db);
    wh_secretbox_cleanup(&sb);
    if (rc != WH_OK)
        fprintf(stderr, "webhookctl: rekey stopped: %s\n", err);
    if (s.json)
        printf("{\"dry_run\":%s,\"key_id\":\"%s\",\"resealed\":%ld,"
               "\"current\":%ld,\"unopenable\":[%s]}\n",
               s.dry_run ? "true" : "false", key_id, n.resealed, n.current,
               st.full || !st.list.len ? "" : wh_buf_cstr(&st.list));
    else
        printf("%s %ld, already current %ld, cannot be opened %ld (key id "
               "%s)\n", s.dry_run ? "would re-seal" : "re-sealed",
               n.resealed, n.current, n.unopenable, key_id);
    if (st.full)
        fprintf(stderr, "webhookctl: too many rows that cannot be opened to "
                "list them as JSON\n");
    wh_buf_free(&st.list);
    return rc != WH_OK || n.unopenable ? EXIT_FAIL : 0;
}

/* ---- deliveries --------------------------------------------------------- */

typedef struct {
    const char *endpoint, *event, *app, *outcome;
    int64_t limit;
    bool json;
} dlist_settings;

#define D(f) offsetof(dlist_settings, f)
static const wh_opt dlist_opts[] = {
    {"endpoint", NULL, WH_OPT_STRING, NULL, 0, 0, D(endpoint),
     "only attempts to this endpoint"},
    {"event", NULL, WH_OPT_STRING, NULL, 0, 0, D(event),
     "only attempts for this event id"},
    {"app", NULL, WH_OPT_STRING, NULL, 0, 0, D(app), "only this app"},
    {"outcome", NULL, WH_OPT_STRING, NULL, 0, 0, D(outcome),
     "succeeded or failed"},
    {"limit", NULL, WH_OPT_INT, "100", 1, 100000, D(limit),
     "most rows shown"},
    {"json", NULL, WH_OPT_BOOL, "false", 0, 0, D(json),
     "one JSON object per line"},
};

static int cmd_deliveries(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "list") != 0)
        die_usage("%s", "deliveries: expected 'list'");
    dlist_settings s;
    int first;
    memset(&s, 0, sizeof(s));
    parse_sub("webhookctl deliveries list [options]", dlist_opts,
              WH_ARRAY_LEN(dlist_opts), &s, argc - 1, argv + 1, &first);
    if (first < argc - 1)
        die_usage("unexpected argument '%s'", argv[first + 1]);
    if (s.outcome && strcmp(s.outcome, "succeeded") != 0 &&
        strcmp(s.outcome, "failed") != 0)
        die_usage("--outcome must be succeeded or failed, not '%s'",
                  s.outcome);
    char limit[32], err[1024];
    snprintf(limit, sizeof(limit), "%lld", (long long)s.limit);
    const char *params[] = {s.endpoint, s.event, s.app, s.outcome, limit};
    wh_db *db = connect_db();
    wh_db_result *r;
    int rc = wh_db_query(
        db,
        "SELECT to_char(attempted_at AT TIME ZONE 'UTC', "
        "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), delivery_id, event_id, "
        "endpoint_id, app, event_type, attempt, outcome, "
        "coalesce(status_code::text, ''), latency_ms, coalesce(error, ''), "
        "coalesce(error_class, ''), coalesce(response_snippet, '') "
        "FROM webhooks.delivery_log "
        "WHERE ($1::text IS NULL OR endpoint_id = $1) "
        "AND ($2::text IS NULL OR event_id = $2) "
        "AND ($3::text IS NULL OR app = $3) "
        "AND ($4::text IS NULL OR outcome = $4) "
        "ORDER BY attempted_at DESC, delivery_id LIMIT $5::int",
        5, params, &r, err, sizeof(err));
    if (rc != WH_OK) {
        fprintf(stderr, "webhookctl: %s\n", err);
        wh_db_close(db);
        return EXIT_FAIL;
    }
    wh_buf b;
    wh_buf_init(&b, 64 * 1024);
    static const char *const names[] = {
        "attempted_at", "delivery_id", "event_id", "endpoint_id", "app",
        "event_type", "attempt", "outcome", "status_code", "latency_ms",
        "error", "error_class", "response_snippet"};
    if (!s.json)
        printf("%-24s %-36s %-16s %-24s %-16s %3s %-9s %4s %7s %s\n",
               "ATTEMPTED_AT", "DELIVERY_ID", "EVENT_ID", "ENDPOINT_ID",
               "TYPE", "#", "OUTCOME", "HTTP", "MS", "ERROR");
    for (int i = 0; i < wh_db_rows(r); i++) {
        if (s.json) {
            wh_buf_reset(&b);
            int bad = wh_buf_addc(&b, '{');
            for (int c = 0; c < 13; c++) {
                const char *v = wh_db_get(r, i, c);
                bad = bad || (c && wh_buf_addc(&b, ',')) ||
                      wh_buf_addf(&b, "\"%s\":", names[c]);
                if (c == 6 || c == 9 || (c == 8 && *v))
                    bad = bad || wh_buf_add(&b, v, strlen(v));
                else if ((c == 8 || c == 10 || c == 11 || c == 12) && !*v)
                    bad = bad || wh_buf_add(&b, "null", 4);
                else
                    bad = bad || wh_buf_json_str(&b, v, strlen(v));
            }
            bad = bad || wh_buf_addc(&b, '}');
            if (!bad)
                printf("%s\n", wh_buf_cstr(&b));
        } else {
            printf("%-24s %-36s %-16s %-24s %-16s %3s %-9s %4s %7s %s\n",
                   wh_db_get(r, i, 0), wh_db_get(r, i, 1),
                   wh_db_get(r, i, 2), wh_db_get(r, i, 3),
                   wh_db_get(r, i, 5), wh_db_get(r, i, 6),
                   wh_db_get(r, i, 7), wh_db_get(r, i, 8),
                   wh_db_get(r, i, 9), wh_db_get(r, i, 10));
        }
    }
    wh_buf_free(&b);
    wh_db_result_free(r);
    wh_db_close(db);
    return 0;
}

/* ---- replay and dead letters -------------------------------------------- */

typedef struct {
    const char *delivery, *event, *app, *endpoint, *since, *until, *outcome;
    int64_t limit;
    bool dry_run, json;
} replay_settings;

#define R(f) offsetof(replay_settings, f)
static const wh_opt replay_opts[] = {
    {"delivery", NULL, WH_OPT_STRING, NULL, 0, 0, R(delivery),
     "replay this delivery (msg_...)"},
    {"event", NULL, WH_OPT_STRING, NULL, 0, 0, R(event),
     "replay every delivery of this event id, to each endpoint it went to"},
    {"app", NULL, WH_OPT_STRING, NULL, 0, 0, R(app),
     "the app of --event (needed when the id occurs in several apps)"},
    {"endpoint", NULL, WH_OPT_STRING, NULL, 0, 0, R(endpoint),
     "replay deliveries to this endpoint whose latest attempt is in "
     "--since..--until"},
    {"since", NULL, WH_OPT_STRING, NULL, 0, 0, R(since),
     "with --endpoint: latest attempt at or after T (a time, or a duration "
     "ago such as 2h)"},
    {"until", NULL, WH_OPT_STRING, NULL, 0, 0, R(until),
     "with --endpoint: latest attempt at or before T (default: no bound)"},
    {"outcome", NULL, WH_OPT_STRING, NULL, 0, 0, R(outcome),
     "with --endpoint: only deliveries whose latest attempt failed or "
     "succeeded"},
    {"limit", NULL, WH_OPT_INT, "10000", 1, WH_REPLAY_LIMIT_MAX, R(limit),
     "most deliveries replayed"},
    {"dry-run", NULL, WH_OPT_BOOL, "false", 0, 0, R(dry_run),
     "list what would be replayed, send nothing"},
};

static const wh_opt dead_list_opts[] = {
    {"endpoint", NULL, WH_OPT_STRING, NULL, 0, 0, R(endpoint),
     "only dead letters of this endpoint"},
    {"app", NULL, WH_OPT_STRING, NULL, 0, 0, R(app), "only this app"},
    {"since", NULL, WH_OPT_STRING, NULL, 0, 0, R(since),
     "only those whose last attempt was at or after T (a time, or a "
     "duration ago such as 2h)"},
    {"limit", NULL, WH_OPT_INT, "100", 1, 100000, R(limit),
     "most rows shown"},
    {"json", NULL, WH_OPT_BOOL, "false", 0, 0, R(json),
     "one JSON object per line"},
};

static const wh_opt dead_replay_opts[] = {
    {"endpoint", NULL, WH_OPT_STRING, NULL, 0, 0, R(endpoint),
     "only dead letters of this endpoint"},
    {"app", NULL, WH_OPT_STRING, NULL, 0, 0, R(app), "only this app"},
    {"since", NULL, WH_OPT_STRING, NULL, 0, 0, R(since),
     "only those whose last attempt was at or after T (a time, or a "
     "duration ago such as 2h)"},
    {"limit", NULL, WH_OPT_INT, "10000", 1, WH_REPLAY_LIMIT_MAX, R(limit),
     "most deliveries replayed"},
    {"dry-run", NULL, WH_OPT_BOOL, "false", 0, 0, R(dry_run),
     "list what would be replayed, send nothing"},
};

#define DEAD_LETTERS_NOTE                                                   \
    "Dead letters are deliveries whose last attempt was final and failed\n" \
    "(webhooks.delivery_log). Each is also produced to the webhook.dead\n"  \
    "topic as a webhook.v1.DeadLetter with the original event, for\n"       \
    "consumers."

/* Checks the ids a replay or listing was given; exits 2 on a bad one. */
static void check_filter_ids(const replay_settings *s)
{
    char err[512];
    if (s->delivery &&
        wh_codec_check_id("--delivery", s->delivery, err, sizeof(err)))
        die_usage("%s", err);
    if (s->event && wh_codec_check_id("--event", s->event, err, sizeof(err)))
        die_usage("%s", err);
    if (s->app && wh_codec_check_app(s->app, err, sizeof(err)))
        die_usage("--app: %s", err);
    if (s->endpoint &&
        wh_codec_check_endpoint_id(s->endpoint, err, sizeof(err)))
        die_usage("--endpoint: %s", err);
}

/* Resolves a --since/--until value into out; exits 2 when it is not a
 * time, 1 when the database failed. */
static void resolve_time(wh_db *db, const char *flag, const char *text,
                         char *out, size_t outlen)
{
    char err[1024];
    int rc = wh_replay_resolve_time(db, text, out, outlen, err, sizeof(err));
    if (rc == WH_OK)
        return;
    fprintf(stderr, "webhookctl: %s: %s\n", flag, err);
    wh_db_close(db);
    exit(rc == WH_DECLINED ? EXIT_USAGE : EXIT_FAIL);
}

typedef struct {
    bool dry_run;
} replay_out;

static void print_replayed(void *opaque, const wh_replay_target *t,
                           wh_replay_status st, const char *detail)
{
    const replay_out *o = opaque;
    switch (st) {
    case WH_REPLAY_SENT:
    case WH_REPLAY_DRY_RUN:
        printf("%s %s attempt %u\n", t->delivery_id, t->endpoint_id,
               t->next_attempt);
        if (t->endpoint_disabled)
            fprintf(stderr, "webhookctl: note: endpoint %s is disabled; %s "
                    "is held until it is enabled\n", t->endpoint_id,
                    o->dry_run ? "the replay" : t->delivery_id);
        break;
    case WH_REPLAY_SKIPPED:
        fprintf(stderr, "webhookctl: %s to %s skipped: %s\n", t->delivery_id,
                t->endpoint_id, detail);
        break;
    case WH_REPLAY_NO_EVENT:
    case WH_REPLAY_FAILED:
        fprintf(stderr, "webhookctl: %s to %s not replayed: %s\n",
                t->delivery_id, t->endpoint_id, detail);
        break;
    }
}

/* Runs a replay of f and prints its outcome. Returns the exit code. */
static int run_replay(wh_db *db, const wh_replay_filter *f, bool dry_run)
{
    char err[1024];
    wh_kafka_conf kc = {
        .brokers = G.kafka_brokers,
        .client_id = "webhookctl",
        .extra = G.kafka_extra,
    };
    wh_replay_sink sink = {
        .kafka = &kc,
        .topic = G.deliveries_topic,
        .ack_timeout_ms = REPLAY_ACK_TIMEOUT_MS,
    };
    replay_out o = {.dry_run = dry_run};
    wh_replay_counts n;
    if (!dry_run && (!G.deliveries_topic || !*G.deliveries_topic)) {
        fprintf(stderr, "webhookctl: WEBHOOK_DELIVERIES_TOPIC is empty\n");
        return EXIT_USAGE;
    }
    fflush(stdout);
    int rc = wh_replay_run(db, f, dry_run ? NULL : &sink, print_replayed, &o,
                           &n, err, sizeof(err));
    if (rc == WH_DECLINED) {
        fprintf(stderr, "webhookctl: %s: pass --app\n", err);
        return EXIT_USAGE;
    }
    if (rc != WH_OK)
        fprintf(stderr, "webhookctl: replay stopped: %s\n", err);
    if (rc == WH_OK && n.selected == 0 && f->kind == WH_REPLAY_BY_DELIVERY) {
        fprintf(stderr, "webhookctl: no delivery %s in the history\n",
                f->delivery_id);
        return EXIT_FAIL;
    }
    if (rc == WH_OK && n.selected == 0 && f->kind == WH_REPLAY_BY_EVENT) {
        fprintf(stderr, "webhookctl: no deliveries of event %s%s%s in the "
                "history\n", f->event_id, f->app ? " of app " : "",
                f->app ? f->app : "");
        return EXIT_FAIL;
    }
    printf("%s %zu deliver%s", dry_run ? "would replay" : "replayed", n.sent,
           n.sent == 1 ? "y" : "ies");
    if (n.skipped)
        printf(", %zu skipped (retry scheduled)", n.skipped);
    if (n.no_event + n.failed)
        printf(", %zu not replayed", n.no_event + n.failed);
    printf("\n");
    if (n.more)
        fprintf(stderr, "webhookctl: more deliveries match than --limit "
                "%lld; only the first were taken\n", (long long)f->limit);
    return rc != WH_OK || n.no_event || n.failed ? EXIT_FAIL : 0;
}

static int cmd_replay(int argc, char **argv)
{
    replay_settings s;
    int first;
    memset(&s, 0, sizeof(s));
    parse_sub("webhookctl replay --delivery ID | --event ID [--app A] | "
              "--endpoint ID --since T [--until T] [--outcome O] [options]",
              replay_opts, WH_ARRAY_LEN(replay_opts), &s, argc, argv, &first);
    if (first < argc)
        die_usage("unexpected argument '%s'", argv[first]);
    int selectors = !!s.delivery + !!s.event + !!s.endpoint;
    if (selectors == 0)
        die_usage("%s", "replay: say what to replay: --delivery ID, --event "
                        "ID or --endpoint ID --since T");
    if (selectors > 1)
        die_usage("%s", "replay: --delivery, --event and --endpoint exclude "
                        "each other");
    if (s.app && !s.event)
        die_usage("%s", "replay: --app goes with --event");
    if ((s.since || s.until || s.outcome) && !s.endpoint)
        die_usage("%s", "replay: --since, --until and --outcome go with "
                        "--endpoint");
    if (s.endpoint && !s.since)
        die_usage("%s",
                  "replay: --endpoint needs --since T (e.g. --since 1h)");
    if (s.outcome && strcmp(s.outcome, "succeeded") != 0 &&
        strcmp(s.outcome, "failed") != 0)
        die_usage("--outcome must be succeeded or failed, not '%s'",
                  s.outcome);
    check_filter_ids(&s);
    char since[WH_REPLAY_TIME_MAX], until[WH_REPLAY_TIME_MAX];
    wh_db *db = connect_db();
    if (s.since)
        resolve_time(db, "--since", s.since, since, sizeof(since));
    if (s.until)
        resolve_time(db, "--until", s.until, until, sizeof(until));
    wh_replay_filter f = {
        .kind = s.delivery ? WH_REPLAY_BY_DELIVERY
                : s.event  ? WH_REPLAY_BY_EVENT
                           : WH_REPLAY_BY_ENDPOINT,
        .delivery_id = s.delivery,
        .event_id = s.event,
        .app = s.app,
        .endpoint_id = s.endpoint,
        .since = s.since ? since : NULL,
        .until = s.until ? until : NULL,
        .outcome = s.outcome,
        .limit = s.limit,
    };
    int rc = run_replay(db, &f, s.dry_run);
    wh_db_close(db);
    return rc;
}

typedef struct {
    bool json;
    wh_buf out;
    int bad;
} dead_list_state;

static int print_dead_letter(void *opaque, const wh_replay_target *t,
                             char *err, size_t errlen)
{
    dead_list_state *st = opaque;
    (void)err;
    (void)errlen;
    if (!st->json) {
        char status[16] = "";
        if (t->last_status)
            snprintf(status, sizeof(status), "%d", t->last_status);
        printf("%-24s %-36s %-16s %-24s %3u %4s %s\n", t->last_attempt_at,
               t->delivery_id, t->event_id, t->endpoint_id, t->attempts,
               status, t->last_error);
        return WH_OK;
    }
    wh_buf *b = &st->out;
    wh_buf_reset(b);
    int bad = wh_buf_add(b, "{\"delivery_id\":", 15) ||
              wh_buf_json_str(b, t->delivery_id, strlen(t->delivery_id)) ||
              wh_buf_add(b, ",\"event_id\":", 12) ||
              wh_buf_json_str(b, t->event_id, strlen(t->event_id)) ||
              wh_buf_add(b, ",\"endpoint_id\":", 15) ||
              wh_buf_json_str(b, t->endpoint_id, strlen(t->endpoint_id)) ||
              wh_buf_add(b, ",\"app\":", 7) ||
              wh_buf_json_str(b, t->app, strlen(t->app)) ||
              wh_buf_add(b, ",\"event_type\":", 14) ||
              wh_buf_json_str(b, t->event_type, strlen(t->event_type)) ||
              wh_buf_addf(b, ",\"attempts\":%u,\"status_code\":",
                          t->attempts);
    if (t->last_status)
        bad = bad || wh_buf_addf(b, "%d", t->last_status);
    else
        bad = bad || wh_buf_add(b, "null", 4);
    bad = bad || wh_buf_add(b, ",\"error_class\":", 15);
    if (*t->last_error_class)
        bad = bad || wh_buf_json_str(b, t->last_error_class,
                                     strlen(t->last_error_class));
    else
        bad = bad || wh_buf_add(b, "null", 4);
    bad = bad || wh_buf_add(b, ",\"error\":", 9);
    if (*t->last_error)
        bad = bad ||
              wh_buf_json_str(b, t->last_error, strlen(t->last_error));
    else
        bad = bad || wh_buf_add(b, "null", 4);
    bad = bad || wh_buf_addf(b, ",\"dead_at\":\"%s\"}", t->last_attempt_at);
    if (bad)
        st->bad++;
    else
        printf("%s\n", wh_buf_cstr(b));
    return WH_OK;
}

static int dead_letters_list(int argc, char **argv)
{
    replay_settings s;
    int first;
    memset(&s, 0, sizeof(s));
    parse_sub("webhookctl dead-letters list [options]\n\n" DEAD_LETTERS_NOTE,
              dead_list_opts,
              WH_ARRAY_LEN(dead_list_opts), &s, argc, argv, &first);
    if (first < argc)
        die_usage("unexpected argument '%s'", argv[first]);
    check_filter_ids(&s);
    char since[WH_REPLAY_TIME_MAX], err[1024];
    wh_db *db = connect_db();
    if (s.since)
        resolve_time(db, "--since", s.since, since, sizeof(since));
    wh_replay_filter f = {
        .kind = WH_REPLAY_DEAD,
        .app = s.app,
        .endpoint_id = s.endpoint,
        .since = s.since ? since : NULL,
        .limit = s.limit,
        .newest_first = true,
    };
    dead_list_state st = {.json = s.json};
    wh_buf_init(&st.out, 64 * 1024);
    if (!s.json)
        printf("%-24s %-36s %-16s %-24s %3s %4s %s\n", "DEAD_AT",
               "DELIVERY_ID", "EVENT_ID", "ENDPOINT_ID", "#", "HTTP",
               "ERROR");
    bool more;
    int rc = wh_replay_select(db, &f, print_dead_letter, &st, NULL, &more,
                              err, sizeof(err));
    wh_buf_free(&st.out);
    wh_db_close(db);
    if (rc != WH_OK) {
        fprintf(stderr, "webhookctl: %s\n", err);
        return EXIT_FAIL;
    }
    if (st.bad)
        fprintf(stderr, "webhookctl: %d dead letters too large to print\n",
                st.bad);
    if (more)
        fprintf(stderr, "webhookctl: more dead letters match than --limit "
                "%lld\n", (long long)s.limit);
    return st.bad ? EXIT_FAIL : 0;
}

static int dead_letters_replay(int argc, char **argv)
{
    replay_settings s;
    int first;
    memset(&s, 0, sizeof(s));
    parse_sub("webhookctl dead-letters replay [options]\n\n" DEAD_LETTERS_NOTE,
              dead_replay_opts,
              WH_ARRAY_LEN(dead_replay_opts), &s, argc, argv, &first);
    if (first < argc)
        die_usage("unexpected argument '%s'", argv[first]);
    check_filter_ids(&s);
    char since[WH_REPLAY_TIME_MAX];
    wh_db *db = connect_db();
    if (s.since)
        resolve_time(db, "--since", s.since, since, sizeof(since));
    wh_replay_filter f = {
        .kind = WH_REPLAY_DEAD,
        .app = s.app,
        .endpoint_id = s.endpoint,
        .since = s.since ? since : NULL,
        .limit = s.limit,
    };
    int rc = run_replay(db, &f, s.dry_run);
    wh_db_close(db);
    return rc;
}

static int cmd_dead_letters(int argc, char **argv)
{
    if (argc < 2)
        die_usage("%s", "dead-letters: expected list or replay");
    if (strcmp(argv[1], "list") == 0)
        return dead_letters_list(argc - 1, argv + 1);
    if (strcmp(argv[1], "replay") == 0)
        return dead_letters_replay(argc - 1, argv + 1);
    die_usage("dead-letters: unknown command '%s' (list, replay)", argv[1]);
    return EXIT_USAGE;
}

int main(int argc, char **argv)
{
    char err[512];
    int first;
    int rc = wh_config_load(global_opts, WH_ARRAY_LEN(global_opts), &G, argc,
                            argv, &first, err, sizeof(err));
    if (rc == WH_AGAIN || (rc == WH_OK && first >= argc)) {
        FILE *out = rc == WH_AGAIN ? stdout : stderr;
        fputs(usage_text, out);
        fputs("\nGlobal options:\n", out);
        wh_config_usage(out, "webhookctl [global options] COMMAND",
                        global_opts, WH_ARRAY_LEN(global_opts));
        return rc == WH_AGAIN ? 0 : EXIT_USAGE;
    }
    if (rc != WH_OK) {
        fprintf(stderr, "webhookctl: %s\n", err);
        return EXIT_USAGE;
    }
    if (wh_log_init("text", "warn", "webhookctl", err, sizeof(err)) != WH_OK)
        return EXIT_USAGE;
    const char *cmd = argv[first];
    int sub_argc = argc - first;
    char **sub_argv = argv + first;
    if (strcmp(cmd, "migrate") == 0)
        return cmd_migrate(sub_argc, sub_argv);
    if (strcmp(cmd, "endpoint") == 0 || strcmp(cmd, "endpoints") == 0)
        return cmd_endpoint(sub_argc, sub_argv);
    if (strcmp(cmd, "rekey") == 0)
        return cmd_rekey(sub_argc, sub_argv);
    if (strcmp(cmd, "deliveries") == 0)
        return cmd_deliveries(sub_argc, sub_argv);
    if (strcmp(cmd, "replay") == 0)
        return cmd_replay(sub_argc, sub_argv);
    if (strcmp(cmd, "dead-letters") == 0)
        return cmd_dead_letters(sub_argc, sub_argv);
    if (strcmp(cmd, "token") == 0 || strcmp(cmd, "tokens") == 0)
        return cmd_token(sub_argc, sub_argv);
    fprintf(stderr, "webhookctl: unknown command '%s'\n\n%s", cmd,
            usage_text);
    return EXIT_USAGE;
}
