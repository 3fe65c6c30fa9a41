/*
 * receiver.c - webhook-receiver, the HTTP endpoint that webhooks are
 * delivered to in the local stack (`make run`), the integration and
 * end-to-end tests and the benchmarks.
 *
 * One thread, one epoll loop: an HTTP/1.1 server (keep-alive, pipelining,
 * Content-Length and chunked bodies) that verifies webhook signatures,
 * answers with a configurable status (failure injection for tests) and,
 * per path prefix, configurable body bytes (hostile bodies for tests),
 * records every delivery as a JSON line and optionally prints one line per
 * delivery for demos. Delays (global or per path prefix), record flushes
 * and count-file updates are timers of the same loop; --fail-window rules
 * compare the uptime (since listening) with their window.
 */
#include "base64.h"
#include "buf.h"
#include "sign.h"
#include "wh.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HDR_MAX            (16 * 1024)        /* request line + headers */
#define BODY_MAX           (4 * 1024 * 1024)  /* decoded body */
#define CONN_MAX           1024
#define CHUNK_LINE_MAX     1024               /* chunk-size or trailer line */
#define IN_INIT            HDR_MAX
#define IN_MAX             (HDR_MAX + BODY_MAX + 2 * CHUNK_LINE_MAX)
#define OUT_HIGH           (64 * 1024)        /* stop parsing above this */
#define OUT_MAX            (OUT_HIGH + 8 * 1024)
#define SECRET_MAX         64
#define FAIL_PATH_MAX      64
#define FAIL_WINDOW_MAX    256
#define DELAY_PATH_MAX     64
#define BODY_PATH_MAX      64
#define ANSWER_BODY_MAX    4096               /* --body-path bytes */
#define WINDOW_MAX_MS      (7LL * 24 * 3600 * 1000) /* window bounds: 0..7 d */
#define PREFIX_MAX         255
#define IDS_MAX            (1u << 20)         /* ids tracked by --fail-first */
#define RECORD_FLUSH_US    (100 * 1000)
#define RECORD_FLUSH_BYTES (256 * 1024)
/* base64 body + header values, each byte escaped to at most 6 ("\ufffd") */
#define RECORD_LINE_MAX    ((BODY_MAX + 2) / 3 * 4 + 6 * HDR_MAX + 1024)
#define RECORD_MAX         (RECORD_FLUSH_BYTES + RECORD_LINE_MAX)
#define COUNT_EVERY_US     (200 * 1000)
#define DELAY_MAX_MS       (10 * 60 * 1000)
#define EVENTS_MAX         256
#define ACCEPT_BACKOFF_US  (100 * 1000)       /* after EMFILE and friends */

#define TAG_LISTEN UINT64_MAX
#define TAG_SIGNAL (UINT64_MAX - 1)

/* ---- configuration ---------------------------------------------------- */

typedef struct {
    char prefix[PREFIX_MAX + 1];
    size_t prefix_len;
    wh_secret secret;
} path_secret;

/* --fail-window: 503 for paths starting with prefix while the uptime is in
 * [from_ms, to_ms). */
typedef struct {
    char prefix[PREFIX_MAX + 1];
    size_t prefix_len;
    int64_t from_ms, to_ms;
} fail_window;

/* --delay-path: responses for paths starting with prefix are held delay_ms
 * (the longest matching prefix wins, over --delay-ms), while the uptime is
 * in [from_ms, to_ms) when the rule has a window. */
typedef struct {
    char prefix[PREFIX_MAX + 1];
    size_t prefix_len;
    long delay_ms;
    int64_t from_ms, to_ms; /* to_ms 0: always */
} delay_path;

/* --body-path: answers to paths starting with prefix carry these bytes
 * (the longest matching prefix wins). */
typedef struct {
    char prefix[PREFIX_MAX + 1];
    size_t prefix_len;
    unsigned char body[ANSWER_BODY_MAX];
    size_t body_len;
} body_path;

static struct {
    char listen_host[256];
    char listen_port[8];
    const char *port_file;
    const char *record_path;
    const char *count_file;
    bool have_default_secret;
    wh_secret default_secret;
    path_secret secrets[SECRET_MAX];
    size_t nsecrets;
    const char *fail_paths[FAIL_PATH_MAX];
    size_t nfail_paths;
    fail_window fail_windows[FAIL_WINDOW_MAX];
    size_t nfail_windows;
    delay_path delay_paths[DELAY_PATH_MAX];
    size_t ndelay_paths;
    body_path body_paths[BODY_PATH_MAX];
    size_t nbody_paths;
    int status;          /* 0 = decide per request */
    long fail_first;
    double fail_rate;
    bool have_seed;
    uint64_t seed;
    long delay_ms;
    long retry_after;    /* -1 = no Retry-After header */
    bool print;
} cfg = {.listen_host = "127.0.0.1", .listen_port = "0", .retry_after = -1};

enum {
    OPT_LISTEN = 256, OPT_PORT_FILE, OPT_SECRET, OPT_STATUS, OPT_FAIL_FIRST,
    OPT_FAIL_RATE, OPT_SEED, OPT_DELAY_MS, OPT_FAIL_PATH, OPT_RETRY_AFTER,
    OPT_RECORD, OPT_PRINT, OPT_COUNT_FILE, OPT_FAIL_WINDOW, OPT_DELAY_PATH,
    OPT_BODY_PATH,
    OPT_HELP = 'h'
};

/* The one table of flags: drives getopt_long and --help. */
static const struct {
    const char *name;
    int id;
    const char *arg; /* NULL for a flag without argument */
    const char *help;
} options[] = {
    {"listen", OPT_LISTEN, "ADDR:PORT",
     "address to listen on (default 127.0.0.1:0);\n"
     "port 0 picks a free port, IPv6 as [::1]:PORT,\n"
     "a bare PORT means 127.0.0.1:PORT"},
    {"port-file", OPT_PORT_FILE, "PATH",
     "after listening, write the port to PATH\n"
     "(temporary file + rename)"},
    {"secret", OPT_SECRET, "[PREFIX=]SECRET",
     "verify signatures with SECRET (whsec_...);\n"
     "without PREFIX for every path, with PREFIX\n"
     "(starting with '/') for paths starting with it;\n"
     "the longest matching prefix wins. Repeatable.\n"
     "Without any secret nothing is verified"},
    {"status", OPT_STATUS, "CODE",
     "always answer CODE (200..599)"},
    {"fail-first", OPT_FAIL_FIRST, "N",
     "answer 500 to the first N requests of each\n"
     "distinct webhook-id"},
    {"fail-rate", OPT_FAIL_RATE, "P",
     "answer 500 with probability P (0..1)"},
    {"seed", OPT_SEED, "N",
     "seed for --fail-rate (default: random)"},
    {"delay-ms", OPT_DELAY_MS, "N",
     "hold each webhook response N ms (0..600000);\n"
     "other connections are served meanwhile"},
    {"fail-path", OPT_FAIL_PATH, "PREFIX",
     "answer 500 to requests whose path starts with\n"
     "PREFIX. Repeatable"},
    {"fail-window", OPT_FAIL_WINDOW, "PREFIX=FROM_MS-TO_MS",
     "answer 503 to requests whose path starts with\n"
     "PREFIX while the uptime (ms since the receiver\n"
     "started listening) is in [FROM_MS, TO_MS);\n"
     "0 <= FROM_MS < TO_MS <= 604800000 (7 days).\n"
     "Repeatable (also for one PREFIX), at most 256"},
    {"delay-path", OPT_DELAY_PATH, "PREFIX=MS[@FROM_MS-TO_MS]",
     "hold responses to requests whose path starts\n"
     "with PREFIX for MS ms (0..600000) instead of\n"
     "--delay-ms, only while the uptime is in\n"
     "[FROM_MS, TO_MS) if given; the longest\n"
     "matching prefix wins. Repeatable, at most 64"},
    {"body-path", OPT_BODY_PATH, "PREFIX=HEX",
     "answer requests whose path starts with PREFIX\n"
     "with the bytes HEX encodes as body (any bytes,\n"
     "NUL included; at most 4096), status 200 instead\n"
     "of 204; other statuses keep theirs. The longest\n"
     "matching prefix wins. Repeatable, at most 64"},
    {"retry-after", OPT_RETRY_AFTER, "N",
     "add 'Retry-After: N' to 429 and 503 answers"},
    {"record", OPT_RECORD, "PATH",
     "append one JSON object per webhook request to\n"
     "PATH (JSON Lines, flushed at least every 100 ms)"},
    {"print", OPT_PRINT, NULL,
     "print one line per webhook request to stdout"},
    {"count-file", OPT_COUNT_FILE, "PATH",
     "every 200 ms, rewrite PATH with the number of\n"
     "webhook requests received"},
    {"help", OPT_HELP, NULL, "show this help and exit"},
};

/* ---- connections -------------------------------------------------------- */

typedef struct {
    size_t off, len;   /* relative to the request start; off 0 = absent */
} span;

/* Parse state of the request at the front of a connection's input. */
typedef struct {
    bool have_head;
    size_t hdr_scan;         /* bytes already searched for the blank line */
    size_t head_len;         /* request line + headers + blank line */
    span method, target, id, ts, sig, ctype;
    bool keep_alive, chunked, has_length, expect_continue;
    bool head_method;        /* HEAD: the response carries no body */
    size_t content_length;
    size_t body_len;         /* decoded chunked bytes, at head_len */
    bool chunks_done;        /* the last chunk was seen; trailers follow */
    int minor;               /* HTTP/1.minor */
} request;

/* One client connection. Requests are answered strictly in order; at most
 * one answer is held back at a time (delayed), and parsing pauses while it
 * is or while the output backlog exceeds OUT_HIGH. A connection closes when
 * its output is drained and either side asked for that (close_after,
 * peer_closed), or at once on an I/O error. */
typedef struct conn {
    int fd;
    uint32_t gen;            /* bumped on close; guards stale events */
    bool in_use;
    char *in;
    size_t in_start, in_len, in_cap;
    request req;
    wh_buf out;
    size_t out_off;          /* bytes of out already sent */
    size_t out_ready;        /* bytes of out that may be sent (rest is held) */
    bool delayed;            /* a held response waits for due_us */
    int64_t due_us;
    struct conn *dnext, *dprev;
    bool peer_closed;        /* read returned 0 */
    bool close_after;        /* close once out is drained */
    uint32_t events;         /* current epoll interest */
} conn;

/* ---- server state ------------------------------------------------------- */

typedef struct {
    char *id;
    uint32_t count;
} id_slot;

static struct {
    int ep, lfd, sfd;
    bool listen_paused;
    bool stop;
    conn conns[CONN_MAX];
    int free_idx[CONN_MAX];
    size_t nfree;
    conn *delay_head, *delay_tail;
    uint64_t seq;            /* webhook requests received */
    uint64_t rng;
    id_slot *ids;
    size_t ids_cap, ids_used;
    bool ids_full_warned;
    int record_fd;
    wh_buf record;
    wh_buf line;
    int64_t record_due_us;   /* 0 = nothing pending */
    bool record_err_warned;
    char *b64;
    size_t b64_cap;
    uint64_t count_written;
    int64_t count_due_us;
    int64_t accept_resume_us; /* 0 = accepting is not backed off */
    int64_t started_us;       /* monotonic time the listener opened */
} srv = {.ep = -1, .lfd = -1, .sfd = -1, .record_fd = -1,
         .count_written = UINT64_MAX};

/* ---- small helpers ------------------------------------------------------ */

static _Noreturn void die_usage(const char *fmt, ...) WH_PRINTF(1, 2);

static _Noreturn void die_usage(const char *fmt, ...)
{
    va_list ap;
    fputs("webhook-receiver: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n(see --help)\n", stderr);
    exit(2);
}

static int parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    if (!s || !*s)
        return WH_ERR;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return WH_ERR;
    *out = v;
    return WH_OK;
}

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static const char *span_str(const char *base, span s)
{
    return s.off ? base + s.off : NULL;
}

static const char *reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default:  return "Status";
    }
}

/* Writes text to path through a temporary file and rename(2). */
static int write_file_atomic(const char *path, const char *text, char *err,
                             size_t errlen)
{
    char tmp[4096];
    int n = snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    if (n < 0 || (size_t)n >= sizeof tmp)
        return wh_errf(err, errlen, "%s: path too long", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return wh_errf(err, errlen, "open(%s) failed: %s", tmp,
                       strerror(errno));
    size_t len = strlen(text);
    ssize_t w = write(fd, text, len);
    if (w < 0 || (size_t)w != len) {
        wh_errf(err, errlen, "write(%s) failed: %s", tmp,
                w < 0 ? strerror(errno) : "short write");
        goto fail;
    }
    if (close(fd) != 0) {
        fd = -1;
        wh_errf(err, errlen, "close(%s) failed: %s", tmp, strerror(errno));
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        wh_errf(err, errlen, "rename(%s, %s) failed: %s", tmp, path,
                strerror(errno));
        goto fail;
    }
    return WH_OK;
fail:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    return WH_ERR;
}

/* ---- arguments ---------------------------------------------------------- */

static void usage(FILE *f)
{
    fputs("usage: webhook-receiver [OPTIONS]\n\n"
          "HTTP endpoint for webhook deliveries: verifies signatures, "
          "answers with a\nconfigurable status, records and prints what "
          "it received.\nGET /healthz always answers 200.\n\nOptions:\n",
          f);
    for (size_t i = 0; i < WH_ARRAY_LEN(options); i++) {
        char head[64];
        snprintf(head, sizeof head, "--%s%s%s", options[i].name,
                 options[i].arg ? " " : "",
                 options[i].arg ? options[i].arg : "");
        if (strlen(head) > 25)
            fprintf(f, "  %s\n  %-25s ", head, "");
        else
            fprintf(f, "  %-25s ", head);
        for (const char *p = options[i].help; *p; p++) {
            fputc(*p, f);
            if (*p == '\n')
                fprintf(f, "  %-25s ", "");
        }
        fputc('\n', f);
    }
    fputs("\n"
          "Every POST is a webhook request. Answers: 204 when the signature\n"
          "is valid or unchecked, 401 when invalid; the first matching rule\n"
          "of --fail-path (500), --fail-window (503), --status, --fail-first\n"
          "(500), --fail-rate (500) wins over that, in this order.\n"
          "--fail-first counts every request, also those another rule\n"
          "answered, and counts requests without webhook-id as one id;\n"
          "--fail-rate draws only for requests that reach it. The delay\n"
          "(--delay-path, else --delay-ms) applies to every answer, and so\n"
          "does --body-path's body (a 204 then becomes 200).\n"
          "PREFIX arguments start with '/' and are at most 255 bytes; they\n"
          "match the path without its query string.\n"
          "Other methods get 405, except GET/HEAD /healthz (always 200).\n"
          "\n"
          "Record fields: seq, received_at_us (wall clock), method, path\n"
          "(the request target, query included), webhook_id,\n"
          "webhook_timestamp, webhook_signature, content_type (null when\n"
          "absent), body_len, body_b64, valid (true/false/null when no\n"
          "secret applies), verify_error, status (the code answered).\n"
          "\n"
          "Limits: headers 16 KiB (431), body 4 MiB (413), 1024 connections.\n"
          "SIGINT/SIGTERM flush the record and exit 0; bad arguments exit 2.\n",
          f);
}

static void parse_listen(const char *arg)
{
    const char *host, *port;
    size_t host_len;
    if (arg[0] == '[') {
        const char *close_br = strchr(arg, ']');
        if (!close_br || close_br[1] != ':')
            die_usage("--listen %s: expected [IPV6]:PORT", arg);
        host = arg + 1;
        host_len = (size_t)(close_br - host);
        port = close_br + 2;
    } else {
        const char *colon = strrchr(arg, ':');
        if (colon) {
            host = arg;
            host_len = (size_t)(colon - arg);
            port = colon + 1;
        } else {
            host = "127.0.0.1";
            host_len = strlen(host);
            port = arg;
        }
    }
    long p;
    if (parse_long(port, 0, 65535, &p) != WH_OK)
        die_usage("--listen %s: port must be a number 0..65535", arg);
    if (host_len == 0) {
        host = "127.0.0.1";
        host_len = strlen(host);
    }
    if (host_len >= sizeof cfg.listen_host)
        die_usage("--listen %s: address too long", arg);
    memcpy(cfg.listen_host, host, host_len);
    cfg.listen_host[host_len] = '\0';
    snprintf(cfg.listen_port, sizeof cfg.listen_port, "%ld", p);
}

static void parse_secret(const char *arg)
{
    char err[WH_ERRLEN];
    const char *eq = strchr(arg, '=');
    if (arg[0] == '/' && eq) {
        size_t plen = (size_t)(eq - arg);
        if (plen > PREFIX_MAX)
            die_usage("--secret: path prefix longer than %d bytes",
                      PREFIX_MAX);
        if (cfg.nsecrets == SECRET_MAX)
            die_usage("--secret: at most %d path secrets", SECRET_MAX);
        path_secret *ps = &cfg.secrets[cfg.nsecrets];
        memcpy(ps->prefix, arg, plen);
        ps->prefix[plen] = '\0';
        ps->prefix_len = plen;
        for (size_t i = 0; i < cfg.nsecrets; i++)
            if (strcmp(cfg.secrets[i].prefix, ps->prefix) == 0)
                die_usage("--secret: prefix %s given twice", ps->prefix);
        if (wh_sign_parse_secret(eq + 1, &ps->secret, err, sizeof err) !=
            WH_OK)
            die_usage("--secret for %s: %s", ps->prefix, err);
        cfg.nsecrets++;
        return;
    }
    if (cfg.have_default_secret)
        die_usage("--secret: the default secret (without PREFIX=) was given "
                  "twice");
    if (wh_sign_parse_secret(arg, &cfg.default_secret, err, sizeof err) !=
        WH_OK)
        die_usage("--secret: %s", err);
    cfg.have_default_secret = true;
}

/* Splits "PREFIX=VALUE" at its last '=' into prefix (PREFIX_MAX + 1
 * bytes) and returns VALUE; exits 2 on a malformed argument (syntax is
 * the option's argument form, for the message). */
static const char *split_prefix(const char *opt, const char *syntax,
                                const char *arg, char *prefix,
                                size_t *prefix_len)
{
    const char *eq = strrchr(arg, '=');
    if (!eq)
        die_usage("--%s %s: expected %s", opt, arg, syntax);
    size_t plen = (size_t)(eq - arg);
    if (plen == 0 || arg[0] != '/')
        die_usage("--%s %s: PREFIX must start with '/'", opt, arg);
    if (plen > PREFIX_MAX)
        die_usage("--%s: PREFIX longer than %d bytes", opt, PREFIX_MAX);
    memcpy(prefix, arg, plen);
    prefix[plen] = '\0';
    *prefix_len = plen;
    return eq + 1;
}

/* FROM_MS-TO_MS of option --name (argument arg) into *from_ms, *to_ms. */
static void parse_window(const char *name, const char *arg, const char *range,
                         int64_t *from_ms, int64_t *to_ms)
{
    const char *dash = strchr(range, '-');
    char from[32];
    long a, b;
    if (!dash || (size_t)(dash - range) >= sizeof from)
        die_usage("--%s %s: expected FROM_MS-TO_MS after the prefix", name,
                  arg);
    memcpy(from, range, (size_t)(dash - range));
    from[dash - range] = '\0';
    if (parse_long(from, 0, WINDOW_MAX_MS, &a) != WH_OK ||
        parse_long(dash + 1, 0, WINDOW_MAX_MS, &b) != WH_OK)
        die_usage("--%s %s: FROM_MS and TO_MS must be milliseconds 0..%lld",
                  name, arg, WINDOW_MAX_MS);
    if (a >= b)
        die_usage("--%s %s: FROM_MS must be below TO_MS", name, arg);
    *from_ms = a;
    *to_ms = b;
}

static void parse_fail_window(const char *arg)
{
    if (cfg.nfail_windows == FAIL_WINDOW_MAX)
        die_usage("--fail-window: at most %d windows", FAIL_WINDOW_MAX);
    fail_window *w = &cfg.fail_windows[cfg.nfail_windows];
    const char *range = split_prefix("fail-window", "PREFIX=FROM_MS-TO_MS",
                                     arg, w->prefix, &w->prefix_len);
    parse_window("fail-window", arg, range, &w->from_ms, &w->to_ms);
    cfg.nfail_windows++;
}

static void parse_delay_path(const char *arg)
{
    if (cfg.ndelay_paths == DELAY_PATH_MAX)
        die_usage("--delay-path: at most %d prefixes", DELAY_PATH_MAX);
    delay_path *dp = &cfg.delay_paths[cfg.ndelay_paths];
    const char *ms = split_prefix("delay-path", "PREFIX=MS[@FROM_MS-TO_MS]",
                                  arg, dp->prefix, &dp->prefix_len);
    char num[32];
    const char *at = strchr(ms, '@');
    size_t n = at ? (size_t)(at - ms) : strlen(ms);
    if (n >= sizeof num)
        die_usage("--delay-path %s: MS must be 0..%d", arg, DELAY_MAX_MS);
    memcpy(num, ms, n);
    num[n] = '\0';
    if (parse_long(num, 0, DELAY_MAX_MS, &dp->delay_ms) != WH_OK)
        die_usage("--delay-path %s: MS must be 0..%d", arg, DELAY_MAX_MS);
    dp->from_ms = dp->to_ms = 0;
    if (at)
        parse_window("delay-path", arg, at + 1, &dp->from_ms, &dp->to_ms);
    for (size_t i = 0; i < cfg.ndelay_paths; i++)
        if (strcmp(cfg.delay_paths[i].prefix, dp->prefix) == 0 &&
            (!at || cfg.delay_paths[i].to_ms == 0))
            die_usage("--delay-path: prefix %s given twice without a "
                      "window", dp->prefix);
    cfg.ndelay_paths++;
}

static void parse_body_path(const char *arg)
{
    if (cfg.nbody_paths == BODY_PATH_MAX)
        die_usage("--body-path: at most %d prefixes", BODY_PATH_MAX);
    body_path *bp = &cfg.body_paths[cfg.nbody_paths];
    const char *hex = split_prefix("body-path", "PREFIX=HEX", arg, bp->prefix,
                                   &bp->prefix_len);
    size_t n = strlen(hex);
    if (n % 2 || n / 2 > ANSWER_BODY_MAX)
        die_usage("--body-path %s: HEX must be an even number of hex "
                  "digits, at most %d bytes", arg, ANSWER_BODY_MAX);
    for (size_t i = 0; i < n; i += 2) {
        int hi = wh_hex_value(hex[i]), lo = wh_hex_value(hex[i + 1]);
        if (hi < 0 || lo < 0)
            die_usage("--body-path %s: '%c%c' is not a hex byte", arg, hex[i],
                      hex[i + 1]);
        bp->body[i / 2] = (unsigned char)(hi << 4 | lo);
    }
    bp->body_len = n / 2;
    for (size_t i = 0; i < cfg.nbody_paths; i++)
        if (strcmp(cfg.body_paths[i].prefix, bp->prefix) == 0)
            die_usage("--body-path: prefix %s given twice", bp->prefix);
    cfg.nbody_paths++;
}

static void parse_args(int argc, char **argv)
{
    struct option longopts[WH_ARRAY_LEN(options) + 1];
    for (size_t i = 0; i < WH_ARRAY_LEN(options); i++) {
        longopts[i] = (struct option){options[i].name,
                                      options[i].arg ? required_argument
                                                     : no_argument,
                                      NULL, options[i].id};
    }
    longopts[WH_ARRAY_LEN(options)] = (struct option){NULL, 0, NULL, 0};

    opterr = 0;
    int c;
    long v;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_LISTEN:
            parse_listen(optarg);
            break;
        case OPT_PORT_FILE:
            cfg.port_file = optarg;
            break;
        case OPT_SECRET:
            parse_secret(optarg);
            break;
        case OPT_STATUS:
            if (parse_long(optarg, 200, 599, &v) != WH_OK)
                die_usage("--status %s: expected an HTTP status 200..599",
                          optarg);
            cfg.status = (int)v;
            break;
        case OPT_FAIL_FIRST:
            if (parse_long(optarg, 0, 1000000000, &cfg.fail_first) != WH_OK)
                die_usage("--fail-first %s: expected a count >= 0", optarg);
            break;
        case OPT_FAIL_RATE: {
            char *end;
            errno = 0;
            double p = strtod(optarg, &end);
            if (errno || end == optarg || *end || !(p >= 0.0 && p <= 1.0))
                die_usage("--fail-rate %s: expected a number 0..1", optarg);
            cfg.fail_rate = p;
            break;
        }
        case OPT_SEED: {
            char *end;
            errno = 0;
            if (!optarg[0] || optarg[0] == '-')
                die_usage("--seed %s: expected an unsigned number", optarg);
            unsigned long long s = strtoull(optarg, &end, 0);
            if (errno || *end)
                die_usage("--seed %s: expected an unsigned number", optarg);
            cfg.seed = s;
            cfg.have_seed = true;
            break;
        }
        case OPT_DELAY_MS:
            if (parse_long(optarg, 0, DELAY_MAX_MS, &cfg.delay_ms) != WH_OK)
                die_usage("--delay-ms %s: expected 0..%d", optarg,
                          DELAY_MAX_MS);
            break;
        case OPT_FAIL_PATH:
            if (optarg[0] != '/')
                die_usage("--fail-path %s: must start with '/'", optarg);
            if (cfg.nfail_paths == FAIL_PATH_MAX)
                die_usage("--fail-path: at most %d prefixes", FAIL_PATH_MAX);
            cfg.fail_paths[cfg.nfail_paths++] = optarg;
            break;
        case OPT_FAIL_WINDOW:
            parse_fail_window(optarg);
            break;
        case OPT_DELAY_PATH:
            parse_delay_path(optarg);
            break;
        case OPT_BODY_PATH:
            parse_body_path(optarg);
            break;
        case OPT_RETRY_AFTER:
            if (parse_long(optarg, 0, 31536000, &cfg.retry_after) != WH_OK)
                die_usage("--retry-after %s: expected seconds 0..31536000",
                          optarg);
            break;
        case OPT_RECORD:
            cfg.record_path = optarg;
            break;
        case OPT_PRINT:
            cfg.print = true;
            break;
        case OPT_COUNT_FILE:
            cfg.count_file = optarg;
            break;
        case OPT_HELP:
            usage(stdout);
            exit(0);
        case ':':
            die_usage("%s needs an argument", argv[optind - 1]);
        default:
            die_usage("unknown option %s", argv[optind - 1]);
        }
    }
    if (optind < argc)
        die_usage("unexpected argument '%s'", argv[optind]);
}

/* ---- record, count file and console ------------------------------------ */

static void record_flush(void)
{
    srv.record_due_us = 0;
    if (srv.record.len == 0)
        return;
    const char *p = srv.record.data;
    size_t left = srv.record.len;
    while (left > 0) {
        ssize_t n = write(srv.record_fd, p, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (!srv.record_err_warned)
                fprintf(stderr,
                        "webhook-receiver: write(%s) failed: %s; dropping "
                        "%zu bytes of records\n",
                        cfg.record_path, n < 0 ? strerror(errno) : "0 bytes",
                        left);
            srv.record_err_warned = true;
            break;
        }
        p += n;
        left -= (size_t)n;
    }
    wh_buf_reset(&srv.record);
}

static void count_write(void)
{
    char text[32], err[WH_ERRLEN];
    srv.count_due_us = wh_mono_us() + COUNT_EVERY_US;
    if (srv.count_written == srv.seq)
        return;
    snprintf(text, sizeof text, "%" PRIu64 "\n", srv.seq);
    if (write_file_atomic(cfg.count_file, text, err, sizeof err) != WH_OK) {
        fprintf(stderr, "webhook-receiver: %s\n", err);
        return;
    }
    srv.count_written = srv.seq;
}

typedef struct {
    const char *base;        /* request start in the connection's input */
    const request *r;
    const char *body;
    size_t body_len;
    int valid;               /* 1, 0, or -1 for unchecked */
    const char *verify_error;
    int status;
    int64_t received_at_us;
    uint64_t seq;
} delivery;

static int json_opt_str(wh_buf *b, const char *name, const char *s)
{
    if (wh_buf_addf(b, ",\"%s\":", name) != WH_OK)
        return WH_ERR;
    if (!s)
        return wh_buf_add(b, "null", 4);
    return wh_buf_json_str(b, s, strlen(s));
}

static int record_line(const delivery *d)
{
    wh_buf *b = &srv.line;
    const char *base = d->base;
    wh_buf_reset(b);

    size_t need = wh_base64_encoded_len(d->body_len) + 1;
    if (need > srv.b64_cap) {
        char *p = realloc(srv.b64, need);
        if (!p)
            return WH_ERR;
        srv.b64 = p;
        srv.b64_cap = need;
    }
    size_t b64_len = wh_base64_encode(d->body, d->body_len, srv.b64);

    if (wh_buf_addf(b, "{\"seq\":%" PRIu64 ",\"received_at_us\":%" PRId64
                       ",\"method\":",
                    d->seq, d->received_at_us) != WH_OK ||
        wh_buf_json_str(b, base + d->r->method.off, d->r->method.len) !=
            WH_OK ||
        wh_buf_add(b, ",\"path\":", 8) != WH_OK ||
        wh_buf_json_str(b, base + d->r->target.off, d->r->target.len) !=
            WH_OK ||
        json_opt_str(b, "webhook_id", span_str(base, d->r->id)) != WH_OK ||
        json_opt_str(b, "webhook_timestamp", span_str(base, d->r->ts)) !=
            WH_OK ||
        json_opt_str(b, "webhook_signature", span_str(base, d->r->sig)) !=
            WH_OK ||
        json_opt_str(b, "content_type", span_str(base, d->r->ctype)) !=
            WH_OK ||
        wh_buf_addf(b, ",\"body_len\":%zu,\"body_b64\":\"", d->body_len) !=
            WH_OK ||
        wh_buf_add(b, srv.b64, b64_len) != WH_OK ||
        wh_buf_addf(b, "\",\"valid\":%s",
                    d->valid < 0 ? "null" : d->valid ? "true" : "false") !=
            WH_OK ||
        json_opt_str(b, "verify_error", d->verify_error) != WH_OK ||
        wh_buf_addf(b, ",\"status\":%d}\n", d->status) != WH_OK)
        return WH_ERR;

    if (srv.record.len + b->len > srv.record.max)
        record_flush();
    if (wh_buf_add(&srv.record, b->data, b->len) != WH_OK)
        return WH_ERR;
    if (srv.record.len >= RECORD_FLUSH_BYTES)
        record_flush();
    else if (srv.record_due_us == 0)
        srv.record_due_us = wh_mono_us() + RECORD_FLUSH_US;
    return WH_OK;
}

static void sanitize(char *dst, size_t dstlen, const char *src, size_t n)
{
    assert(dstlen > 0);
    size_t i;
    for (i = 0; i < n && i + 1 < dstlen; i++) {
        unsigned char ch = (unsigned char)src[i];
        dst[i] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '.';
    }
    dst[i] = '\0';
}

static void print_line(const delivery *d)
{
    char when[16], path[128], id[32], body[64];
    time_t secs = (time_t)(d->received_at_us / 1000000);
    struct tm tm;
    localtime_r(&secs, &tm);
    snprintf(when, sizeof when, "%02d:%02d:%02d.%03d", tm.tm_hour, tm.tm_min,
             tm.tm_sec, (int)(d->received_at_us / 1000 % 1000));

    size_t tlen = d->r->target.len;
    sanitize(path, sizeof path, d->base + d->r->target.off, tlen);

    const char *idv = span_str(d->base, d->r->id);
    if (!idv) {
        snprintf(id, sizeof id, "(no id)");
    } else if (d->r->id.len > 20) {
        sanitize(id, 18, idv, 17);
        memcpy(id + 17, "...", 4);
    } else {
        sanitize(id, sizeof id, idv, d->r->id.len);
    }
    sanitize(body, 61, d->body, d->body_len);

    char sig[WH_ERRLEN + 32];
    if (d->valid < 0)
        snprintf(sig, sizeof sig, "unsigned");
    else if (d->valid)
        snprintf(sig, sizeof sig, "signature ok");
    else
        snprintf(sig, sizeof sig, "signature BAD (%s)", d->verify_error);

    printf("%s %s %s  %s  %s  %zu B  %s -> %d\n", when,
           d->base + d->r->method.off, path, id, body, d->body_len, sig,
           d->status);
}

/* ---- decisions ---------------------------------------------------------- */

static const wh_secret *secret_for(const char *path)
{
    const path_secret *best = NULL;
    for (size_t i = 0; i < cfg.nsecrets; i++) {
        const path_secret *ps = &cfg.secrets[i];
        if (strncmp(path, ps->prefix, ps->prefix_len) == 0 &&
            (!best || ps->prefix_len > best->prefix_len))
            best = ps;
    }
    if (best)
        return &best->secret;
    return cfg.have_default_secret ? &cfg.default_secret : NULL;
}

static int ids_grow(void)
{
    size_t cap = srv.ids_cap ? srv.ids_cap * 2 : 1024;
    id_slot *slots = calloc(cap, sizeof *slots);
    if (!slots)
        return WH_ERR;
    for (size_t i = 0; i < srv.ids_cap; i++) {
        if (!srv.ids[i].id)
            continue;
        size_t j = fnv1a(srv.ids[i].id, strlen(srv.ids[i].id)) & (cap - 1);
        while (slots[j].id)
            j = (j + 1) & (cap - 1);
        slots[j] = srv.ids[i];
    }
    free(srv.ids);
    srv.ids = slots;
    srv.ids_cap = cap;
    return WH_OK;
}

/* Returns how many requests carried this webhook-id so far, this one
 * included; 0 when the id could not be tracked (table full). */
static uint32_t ids_bump(const char *id, size_t n)
{
    if (srv.ids_used < IDS_MAX && (srv.ids_used + 1) * 2 > srv.ids_cap &&
        ids_grow() != WH_OK && srv.ids_cap == 0)
        return 0;
    size_t mask = srv.ids_cap - 1;
    size_t j = fnv1a(id, n) & mask;
    while (srv.ids[j].id) {
        if (strlen(srv.ids[j].id) == n && memcmp(srv.ids[j].id, id, n) == 0) {
            if (srv.ids[j].count < UINT32_MAX)
                srv.ids[j].count++;
            return srv.ids[j].count;
        }
        j = (j + 1) & mask;
    }
    if (srv.ids_used >= IDS_MAX || (srv.ids_used + 1) * 2 > srv.ids_cap) {
        if (!srv.ids_full_warned)
            fprintf(stderr, "webhook-receiver: --fail-first tracks at most "
                            "%u webhook-ids; new ids are not failed\n",
                    IDS_MAX);
        srv.ids_full_warned = true;
        return 0;
    }
    char *copy = strndup(id, n);
    if (!copy)
        return 0;
    srv.ids[j].id = copy;
    srv.ids[j].count = 1;
    srv.ids_used++;
    return 1;
}

static bool path_fails(const char *path)
{
    for (size_t i = 0; i < cfg.nfail_paths; i++)
        if (strncmp(path, cfg.fail_paths[i], strlen(cfg.fail_paths[i])) == 0)
            return true;
    return false;
}

/* Whether a --fail-window rule for path covers the current uptime. */
static bool path_in_fail_window(const char *path, int64_t now_us)
{
    int64_t up_ms = (now_us - srv.started_us) / 1000;
    for (size_t i = 0; i < cfg.nfail_windows; i++) {
        const fail_window *w = &cfg.fail_windows[i];
        if (up_ms >= w->from_ms && up_ms < w->to_ms &&
            strncmp(path, w->prefix, w->prefix_len) == 0)
            return true;
    }
    return false;
}

/* The hold time of a response to path, in ms (0: none). */
static long delay_for(const char *path, int64_t now_us)
{
    const delay_path *best = NULL;
    int64_t up_ms = (now_us - srv.started_us) / 1000;
    for (size_t i = 0; i < cfg.ndelay_paths; i++) {
        const delay_path *dp = &cfg.delay_paths[i];
        if (dp->to_ms != 0 && (up_ms < dp->from_ms || up_ms >= dp->to_ms))
            continue;
        if (strncmp(path, dp->prefix, dp->prefix_len) == 0 &&
            (!best || dp->prefix_len > best->prefix_len))
            best = dp;
    }
    return best ? best->delay_ms : cfg.delay_ms;
}

/* The --body-path answer for path, or NULL. */
static const body_path *body_for(const char *path)
{
    const body_path *best = NULL;
    for (size_t i = 0; i < cfg.nbody_paths; i++) {
        const body_path *bp = &cfg.body_paths[i];
        if (strncmp(path, bp->prefix, bp->prefix_len) == 0 &&
            (!best || bp->prefix_len > best->prefix_len))
            best = bp;
    }
    return best;
}

/* ---- responses ---------------------------------------------------------- */

static void conn_update_interest(conn *c);
static void conn_close(conn *c);

/* Appends a response with body[0..len) (any bytes) to c->out. hold keeps
 * it unsent until the delay timer releases it. Returns WH_ERR when the
 * output bound was hit. */
static int queue_response_n(conn *c, int status, const void *body,
                            size_t len, bool closing, bool hold)
{
    wh_buf *o = &c->out;
    bool no_body = status == 204 || status == 304 || status < 200;
    size_t blen = body && !no_body ? len : 0;
    int rc = wh_buf_addf(o, "HTTP/1.1 %d %s\r\n", status, reason(status));
    if (rc == WH_OK && !no_body)
        rc = wh_buf_addf(o, "Content-Length: %zu\r\n", blen);
    if (rc == WH_OK && blen)
        rc = wh_buf_add(o, "Content-Type: text/plain\r\n", 26);
    if (rc == WH_OK && cfg.retry_after >= 0 && (status == 429 || status == 503))
        rc = wh_buf_addf(o, "Retry-After: %ld\r\n", cfg.retry_after);
    if (rc == WH_OK && closing)
        rc = wh_buf_add(o, "Connection: close\r\n", 19);
    else if (rc == WH_OK && c->req.have_head && c->req.keep_alive &&
             c->req.minor == 0 && status >= 200)
        rc = wh_buf_add(o, "Connection: keep-alive\r\n", 24);
    if (rc == WH_OK)
        rc = wh_buf_add(o, "\r\n", 2);
    if (rc == WH_OK && blen && !c->req.head_method)
        rc = wh_buf_add(o, body, blen);
    if (rc != WH_OK)
        return WH_ERR;
    if (!hold)
        c->out_ready = o->len;
    return WH_OK;
}

/* queue_response_n with a text body (may be NULL). */
static int queue_response(conn *c, int status, const char *body,
                          bool closing, bool hold)
{
    return queue_response_n(c, status, body, body ? strlen(body) : 0,
                            closing, hold);
}

static void delay_unlink(conn *c)
{
    if (!c->delayed)
        return;
    if (c->dprev)
        c->dprev->dnext = c->dnext;
    else
        srv.delay_head = c->dnext;
    if (c->dnext)
        c->dnext->dprev = c->dprev;
    else
        srv.delay_tail = c->dprev;
    c->dnext = c->dprev = NULL;
    c->delayed = false;
}

static void delay_add(conn *c, int64_t due_us)
{
    assert(!c->delayed);
    c->delayed = true;
    c->due_us = due_us;
    /* Delays mostly share one length, so inserting from the tail is
     * usually O(1); at most CONN_MAX entries are walked otherwise. */
    conn *after = srv.delay_tail;
    while (after && after->due_us > due_us)
        after = after->dprev;
    c->dprev = after;
    c->dnext = after ? after->dnext : srv.delay_head;
    if (c->dnext)
        c->dnext->dprev = c;
    else
        srv.delay_tail = c;
    if (after)
        after->dnext = c;
    else
        srv.delay_head = c;
}

/* ---- request parsing ---------------------------------------------------- */

enum { PARSE_MORE = 0, PARSE_DONE = 1 };

static bool has_token(const char *v, const char *tok)
{
    size_t n = strlen(tok);
    const char *p = v;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *s = p;
        while (*p && *p != ',')
            p++;
        const char *e = p;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if ((size_t)(e - s) == n && strncasecmp(s, tok, n) == 0)
            return true;
    }
    return false;
}

static bool is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch >= '0' && ch <= '9') || (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* Parses the request line and headers once the blank line is in. Returns
 * PARSE_MORE, PARSE_DONE (head parsed) or an HTTP error status. Values of
 * interesting headers are NUL-terminated in place. */
static int parse_head(conn *c)
{
    request *r = &c->req;
    /* A client may send empty lines between requests. */
    while (c->in_len - c->in_start >= 2 && r->hdr_scan == 0 &&
           c->in[c->in_start] == '\r' && c->in[c->in_start + 1] == '\n')
        c->in_start += 2;
    char *base = c->in + c->in_start;
    size_t avail = c->in_len - c->in_start;
    size_t from = r->hdr_scan > 3 ? r->hdr_scan - 3 : 0;
    if (avail < 4 || from > avail - 4) {
        r->hdr_scan = avail;
        return avail >= HDR_MAX ? 431 : PARSE_MORE;
    }
    char *blank = memmem(base + from, avail - from, "\r\n\r\n", 4);
    if (!blank) {
        /* Lines must end in CRLF; answer bare-LF clients instead of
         * waiting for a blank line that never comes. */
        if (memmem(base + from, avail - from, "\n\n", 2))
            return 400;
        r->hdr_scan = avail;
        return avail >= HDR_MAX ? 431 : PARSE_MORE;
    }
    r->head_len = (size_t)(blank - base) + 4;
    if (r->head_len > HDR_MAX)
        return 431;

    /* request line: METHOD SP TARGET SP HTTP/1.x CRLF */
    char *p = base, *eol = memchr(base, '\r', r->head_len);
    assert(eol);
    if (eol[1] != '\n')
        return 400;
    while (p < eol && is_tchar((unsigned char)*p))
        p++;
    if (p == base || p >= eol || *p != ' ')
        return 400;
    r->method = (span){0, (size_t)(p - base)};
    r->head_method = p - base == 4 && memcmp(base, "HEAD", 4) == 0;
    *p++ = '\0';
    char *t = p;
    while (p < eol && *p != ' ' && (unsigned char)*p > 0x20 &&
           (unsigned char)*p != 0x7f)
        p++;
    if (p == t || p >= eol || *p != ' ' || *t != '/')
        return 400;
    r->target = (span){(size_t)(t - base), (size_t)(p - t)};
    *p++ = '\0';
    if (eol - p != 8 || memcmp(p, "HTTP/1.", 7) != 0)
        return (eol - p == 8 && memcmp(p, "HTTP/", 5) == 0) ? 505 : 400;
    int minor = p[7] - '0';
    if (minor != 0 && minor != 1)
        return 505;
    r->minor = minor;
    r->keep_alive = minor == 1;
    bool ka_token = false, close_token = false;

    /* header lines */
    char *line = eol + 2;
    char *head_end = base + r->head_len - 2;
    while (line < head_end) {
        char *le = memchr(line, '\r', (size_t)(head_end - line + 1));
        assert(le);
        if (le[1] != '\n')
            return 400;
        char *colon = line;
        while (colon < le && is_tchar((unsigned char)*colon))
            colon++;
        if (colon == line || colon >= le || *colon != ':')
            return 400;
        size_t nlen = (size_t)(colon - line);
        char *v = colon + 1, *ve = le;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        for (char *q = v; q < ve; q++)
            if (*q == '\0' || *q == '\n' || *q == '\r')
                return 400;
        *ve = '\0';
        span val = {(size_t)(v - base), (size_t)(ve - v)};
#define IS(name) (nlen == sizeof(name) - 1 && strncasecmp(line, name, nlen) == 0)
        if (IS("content-length")) {
            if (val.len == 0)
                return 400;
            size_t cl = 0;
            for (size_t i = 0; i < val.len; i++) {
                if (v[i] < '0' || v[i] > '9')
                    return 400;
                if (cl > BODY_MAX)
                    continue;
                cl = cl * 10 + (size_t)(v[i] - '0');
            }
            if (r->has_length && r->content_length != cl)
                return 400;
            r->has_length = true;
            r->content_length = cl;
        } else if (IS("transfer-encoding")) {
            if (r->chunked || strcasecmp(v, "chunked") != 0)
                return 501;
            r->chunked = true;
        } else if (IS("connection")) {
            if (has_token(v, "close"))
                close_token = true;
            if (has_token(v, "keep-alive"))
                ka_token = true;
        } else if (IS("expect")) {
            if (strcasecmp(v, "100-continue") == 0)
                r->expect_continue = true;
        } else if (IS("webhook-id")) {
            r->id = val;
        } else if (IS("webhook-timestamp")) {
            r->ts = val;
        } else if (IS("webhook-signature")) {
            r->sig = val;
        } else if (IS("content-type")) {
            r->ctype = val;
        }
#undef IS
        line = le + 2;
    }
    if (r->chunked && r->has_length)
        return 400;
    if (r->has_length && r->content_length > BODY_MAX)
        return 413;
    if (close_token)
        r->keep_alive = false;
    else if (minor == 0 && ka_token)
        r->keep_alive = true;
    r->have_head = true;
    return PARSE_DONE;
}

/* Decodes the chunked body in place, as far as it has arrived: chunk data
 * is moved down to follow the head, and the unread rest of the input is
 * moved after it. Returns PARSE_MORE, PARSE_DONE or an HTTP error status. */
static int parse_chunked(conn *c)
{
    request *r = &c->req;
    char *base = c->in + c->in_start;
    size_t avail = c->in_len - c->in_start;
    size_t dst = r->head_len + r->body_len; /* end of the decoded body */
    size_t pos = dst;                       /* first unread raw byte */
    int rc = PARSE_MORE;

    for (;;) {
        char *le = memmem(base + pos, avail - pos, "\r\n", 2);
        if (!le) {
            if (avail - pos > CHUNK_LINE_MAX)
                rc = 400;
            break;
        }
        size_t llen = (size_t)(le - (base + pos));
        if (llen > CHUNK_LINE_MAX) {
            rc = 400;
            break;
        }
        if (r->chunks_done) {
            pos += llen + 2;
            if (llen == 0) {
                rc = PARSE_DONE;
                break;
            }
            continue; /* trailer field, ignored */
        }
        size_t size = 0, i = 0;
        for (; i < llen; i++) {
            char ch = base[pos + i];
            int d = ch >= '0' && ch <= '9'   ? ch - '0'
                    : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                    : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                             : -1;
            if (d < 0)
                break;
            if (size > BODY_MAX)
                continue;
            size = size * 16 + (size_t)d;
        }
        if (i == 0 || (i < llen && base[pos + i] != ';' &&
                       base[pos + i] != ' ' && base[pos + i] != '\t')) {
            rc = 400;
            break;
        }
        if (size > BODY_MAX - r->body_len) {
            rc = 413;
            break;
        }
        if (size == 0) {
            r->chunks_done = true;
            pos += llen + 2;
            continue;
        }
        size_t data = pos + llen + 2;
        if (avail - data < size + 2)
            break; /* wait for the whole chunk */
        if (base[data + size] != '\r' || base[data + size + 1] != '\n') {
            rc = 400;
            break;
        }
        memmove(base + dst, base + data, size);
        dst += size;
        r->body_len += size;
        pos = data + size + 2;
    }
    if (rc >= 400)
        return rc;
    /* Close the gap between the decoded body and the unread input. */
    if (pos > dst) {
        memmove(base + dst, base + pos, avail - pos);
        c->in_len -= pos - dst;
    }
    return rc;
}

/* ---- request handling --------------------------------------------------- */

static void handle_webhook(conn *c, const char *base, const char *body,
                           size_t body_len, bool closing)
{
    request *r = &c->req;
    char verr[WH_ERRLEN] = "";
    char path[HDR_MAX];
    const char *target = base + r->target.off;
    size_t plen = strcspn(target, "?");
    memcpy(path, target, plen);
    path[plen] = '\0';

    delivery d = {.base = base, .r = r, .body = body,
                  .body_len = body_len, .valid = -1,
                  .received_at_us = wh_wall_us(), .seq = ++srv.seq};

    const wh_secret *secret = secret_for(path);
    if (secret) {
        const char *id = span_str(base, r->id);
        const char *ts = span_str(base, r->ts);
        const char *sig = span_str(base, r->sig);
        if (wh_sign_verify(secret, id, ts, body, body_len, sig,
                           d.received_at_us / 1000000, WH_SIGN_TOLERANCE_S,
                           verr, sizeof verr) == WH_OK) {
            d.valid = 1;
        } else {
            d.valid = 0;
            d.verify_error = verr[0] ? verr : "invalid signature";
        }
    }

    const char *text = NULL;
    int status;
    uint32_t nth = 0;
    if (cfg.fail_first > 0)
        nth = r->id.off ? ids_bump(base + r->id.off, r->id.len)
                        : ids_bump("", 0);
    if (path_fails(path)) {
        status = 500;
        text = "injected failure (--fail-path)\n";
    } else if (path_in_fail_window(path, wh_mono_us())) {
        status = 503;
        text = "injected failure (--fail-window)\n";
    } else if (cfg.status) {
        status = cfg.status;
    } else if (nth > 0 && nth <= (uint32_t)cfg.fail_first) {
        status = 500;
        text = "injected failure (--fail-first)\n";
    } else if (cfg.fail_rate > 0.0 &&
               (double)(splitmix64(&srv.rng) >> 11) * 0x1.0p-53 <
                   cfg.fail_rate) {
        status = 500;
        text = "injected failure (--fail-rate)\n";
    } else if (d.valid == 0) {
        status = 401;
        text = "invalid signature\n";
    } else {
        status = 204;
    }
    if (!text && status >= 300)
        text = reason(status);
    const body_path *bp = body_for(path);
    if (bp && status == 204)
        status = 200;
    d.status = status;

    if (srv.record_fd >= 0 && record_line(&d) != WH_OK)
        fprintf(stderr, "webhook-receiver: request %" PRIu64
                        " not recorded: out of memory\n", d.seq);
    if (cfg.print)
        print_line(&d);

    long delay_ms = delay_for(path, wh_mono_us());
    bool hold = delay_ms > 0;
    if ((bp ? queue_response_n(c, status, bp->body, bp->body_len, closing,
                               hold)
            : queue_response(c, status, text, closing, hold)) != WH_OK) {
        c->close_after = true;
        return;
    }
    if (hold)
        delay_add(c, wh_mono_us() + (int64_t)delay_ms * 1000);
}

static void request_reset(conn *c)
{
    memset(&c->req, 0, sizeof c->req);
}

/* Parses and answers the requests in c's input, in order, until one is
 * incomplete or the connection must wait (delay, output backlog). */
static void conn_process(conn *c)
{
    int rc;
    while (!c->delayed && !c->close_after && c->out.len < OUT_HIGH &&
           c->in_start < c->in_len) {
        request *r = &c->req;
        if (!r->have_head) {
            rc = parse_head(c);
            if (rc == PARSE_MORE)
                break;
            if (rc >= 400)
                goto bad;
            if (r->expect_continue && !r->chunked &&
                c->in_len - c->in_start < r->head_len + r->content_length) {
                if (queue_response(c, 100, NULL, false, false) != WH_OK)
                    goto overflow;
            } else if (r->expect_continue && r->chunked &&
                       c->in_len - c->in_start == r->head_len) {
                if (queue_response(c, 100, NULL, false, false) != WH_OK)
                    goto overflow;
            }
        }
        size_t total;
        char *base = c->in + c->in_start;
        const char *body = base + r->head_len;
        size_t body_len;
        if (r->chunked) {
            rc = parse_chunked(c);
            if (rc == PARSE_MORE)
                break;
            if (rc >= 400)
                goto bad;
            body_len = r->body_len;
            total = r->head_len + r->body_len;
        } else {
            body_len = r->has_length ? r->content_length : 0;
            total = r->head_len + body_len;
            if (c->in_len - c->in_start < total)
                break;
        }

        bool closing = !r->keep_alive;
        const char *method = base + r->method.off;
        const char *target = base + r->target.off;
        size_t plen = strcspn(target, "?");
        int rq;
        if ((strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0) &&
            plen == 8 && memcmp(target, "/healthz", 8) == 0) {
            rq = queue_response(c, 200, "ok\n", closing, false);
        } else if (strcmp(method, "POST") != 0) {
            rq = queue_response(c, 405, "only POST is accepted here\n",
                                closing, false);
        } else {
            handle_webhook(c, base, body, body_len, closing);
            rq = WH_OK;
        }
        if (rq != WH_OK)
            goto overflow;
        c->in_start += total;
        request_reset(c);
        if (closing)
            c->close_after = true;
    }
    if (c->in_start == c->in_len && !c->req.have_head) {
        c->in_start = c->in_len = 0;
        c->req.hdr_scan = 0;
        if (c->in_cap > IN_INIT) {
            char *p = realloc(c->in, IN_INIT);
            if (p) {
                c->in = p;
                c->in_cap = IN_INIT;
            }
        }
    }
    return;
bad:
    /* Best effort: the connection closes whether or not the answer fits. */
    (void)queue_response(c, rc, reason(rc), true, false);
    c->close_after = true;
    return;
overflow:
    c->close_after = true;
}

/* ---- connection I/O ----------------------------------------------------- */

static uint64_t conn_tag(const conn *c)
{
    return (uint64_t)(c - srv.conns) | ((uint64_t)c->gen << 32);
}

static void listen_pause(bool pause)
{
    if (srv.listen_paused == pause)
        return;
    struct epoll_event ev = {.events = pause ? 0 : EPOLLIN,
                             .data.u64 = TAG_LISTEN};
    if (epoll_ctl(srv.ep, EPOLL_CTL_MOD, srv.lfd, &ev) == 0)
        srv.listen_paused = pause;
}

static void conn_close(conn *c)
{
    assert(c->in_use);
    delay_unlink(c);
    epoll_ctl(srv.ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->in);
    wh_buf_free(&c->out);
    uint32_t gen = c->gen + 1;
    memset(c, 0, sizeof *c);
    c->gen = gen;
    c->fd = -1;
    srv.free_idx[srv.nfree++] = (int)(c - srv.conns);
    listen_pause(false);
}

static void conn_update_interest(conn *c)
{
    uint32_t ev = 0;
    if (!c->peer_closed && !c->close_after && !c->delayed &&
        c->out.len < OUT_HIGH)
        ev |= EPOLLIN | EPOLLRDHUP;
    if (c->out_off < c->out_ready)
        ev |= EPOLLOUT;
    if (ev == c->events)
        return;
    struct epoll_event e = {.events = ev, .data.u64 = conn_tag(c)};
    if (epoll_ctl(srv.ep, EPOLL_CTL_MOD, c->fd, &e) == 0)
        c->events = ev;
}

/* Returns WH_ERR when the connection broke. */
static int conn_read(conn *c)
{
    request *r = &c->req;
    if (c->in_start > 0) {
        memmove(c->in, c->in + c->in_start, c->in_len - c->in_start);
        c->in_len -= c->in_start;
        c->in_start = 0;
    }
    if (c->in_len == c->in_cap) {
        size_t want = c->in_cap * 2;
        if (r->have_head && !r->chunked &&
            r->head_len + r->content_length > want)
            want = r->head_len + r->content_length;
        if (want > IN_MAX)
            want = IN_MAX;
        if (want <= c->in_cap)
            return WH_ERR; /* cannot happen while the limits hold */
        char *p = realloc(c->in, want);
        if (!p)
            return WH_ERR;
        c->in = p;
        c->in_cap = want;
    }
    ssize_t n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
    if (n > 0) {
        c->in_len += (size_t)n;
        return WH_OK;
    }
    if (n == 0) {
        c->peer_closed = true;
        return WH_OK;
    }
    if (errno == EAGAIN || errno == EINTR)
        return WH_OK;
    return WH_ERR;
}

static int conn_flush(conn *c)
{
    while (c->out_off < c->out_ready) {
        ssize_t n = send(c->fd, c->out.data + c->out_off,
                         c->out_ready - c->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                break;
            return WH_ERR;
        }
        c->out_off += (size_t)n;
    }
    if (c->out_off == c->out.len) {
        wh_buf_reset(&c->out);
        c->out_off = c->out_ready = 0;
    }
    return WH_OK;
}

/* Processes what arrived, sends what is ready and decides whether the
 * connection lives on. */
static void conn_run(conn *c)
{
    for (;;) {
        conn_process(c);
        bool blocked = c->out.len >= OUT_HIGH;
        if (conn_flush(c) != WH_OK) {
            conn_close(c);
            return;
        }
        if (!blocked || c->out.len >= OUT_HIGH)
            break;
    }
    bool drained = c->out.len == 0 && !c->delayed;
    if (drained && (c->close_after || c->peer_closed)) {
        conn_close(c);
        return;
    }
    conn_update_interest(c);
}

static void on_accept(void)
{
    for (;;) {
        if (srv.nfree == 0) {
            listen_pause(true);
            return;
        }
        int fd = accept4(srv.lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EAGAIN)
                return;
            /* Out of descriptors or memory: stop accepting for a while
             * instead of spinning on the ready listener. */
            fprintf(stderr, "webhook-receiver: accept4() failed: %s; "
                            "pausing accepts for %d ms\n",
                    strerror(errno), ACCEPT_BACKOFF_US / 1000);
            listen_pause(true);
            srv.accept_resume_us = wh_mono_us() + ACCEPT_BACKOFF_US;
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conn *c = &srv.conns[srv.free_idx[--srv.nfree]];
        assert(!c->in_use);
        c->in = malloc(IN_INIT);
        if (!c->in) {
            close(fd);
            srv.nfree++;
            return;
        }
        c->in_use = true;
        c->fd = fd;
        c->in_cap = IN_INIT;
        wh_buf_init(&c->out, OUT_MAX);
        c->events = EPOLLIN | EPOLLRDHUP;
        struct epoll_event ev = {.events = c->events, .data.u64 = conn_tag(c)};
        if (epoll_ctl(srv.ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
            fprintf(stderr, "webhook-receiver: epoll_ctl() failed: %s\n",
                    strerror(errno));
            conn_close(c);
        }
    }
}

static void on_conn_event(uint64_t tag, uint32_t events)
{
    uint32_t idx = (uint32_t)tag, gen = (uint32_t)(tag >> 32);
    if (idx >= CONN_MAX)
        return;
    conn *c = &srv.conns[idx];
    if (!c->in_use || c->gen != gen)
        return; /* closed earlier in this batch */
    if (events & EPOLLERR) {
        conn_close(c);
        return;
    }
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)) {
        if (!(c->events & EPOLLIN) && (events & EPOLLHUP)) {
            conn_close(c);
            return;
        }
        if ((c->events & EPOLLIN) && conn_read(c) != WH_OK) {
            conn_close(c);
            return;
        }
    }
    conn_run(c);
}

static void run_timers(void)
{
    int64_t now = wh_mono_us();
    while (srv.delay_head && srv.delay_head->due_us <= now) {
        conn *c = srv.delay_head;
        delay_unlink(c);
        c->out_ready = c->out.len;
        conn_run(c);
    }
    if (srv.accept_resume_us && srv.accept_resume_us <= now) {
        srv.accept_resume_us = 0;
        if (srv.nfree > 0)
            listen_pause(false);
    }
    if (srv.record_due_us && srv.record_due_us <= now)
        record_flush();
    if (cfg.count_file && srv.count_due_us <= now)
        count_write();
}

static int next_timeout_ms(void)
{
    int64_t now = wh_mono_us(), next = INT64_MAX;
    if (srv.delay_head)
        next = srv.delay_head->due_us;
    if (srv.record_due_us && srv.record_due_us < next)
        next = srv.record_due_us;
    if (srv.accept_resume_us && srv.accept_resume_us < next)
        next = srv.accept_resume_us;
    if (cfg.count_file && srv.count_due_us < next)
        next = srv.count_due_us;
    if (next == INT64_MAX)
        return -1;
    if (next <= now)
        return 0;
    int64_t ms = (next - now + 999) / 1000;
    return ms > 60000 ? 60000 : (int)ms;
}

/* ---- setup -------------------------------------------------------------- */

static int open_listener(char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    int fd = -1;
    int gai = getaddrinfo(cfg.listen_host, cfg.listen_port, &hints, &ai);
    if (gai != 0)
        return wh_errf(err, errlen, "cannot resolve %s: %s", cfg.listen_host,
                       gai_strerror(gai));
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        wh_errf(err, errlen, "socket() failed: %s", strerror(errno));
        goto fail;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        wh_errf(err, errlen, "bind(%s:%s) failed: %s", cfg.listen_host,
                cfg.listen_port, strerror(errno));
        goto fail;
    }
    if (listen(fd, 4096) != 0) {
        wh_errf(err, errlen, "listen() failed: %s", strerror(errno));
        goto fail;
    }
    freeaddrinfo(ai);
    srv.lfd = fd;
    return WH_OK;
fail:
    if (fd >= 0)
        close(fd);
    freeaddrinfo(ai);
    return WH_ERR;
}

static int announce(char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port;
    bool v6 = false;
    if (getsockname(srv.lfd, (struct sockaddr *)&ss, &sl) != 0)
        return wh_errf(err, errlen, "getsockname() failed: %s",
                       strerror(errno));
    if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof host);
        port = ntohs(s6->sin6_port);
        v6 = true;
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &s4->sin_addr, host, sizeof host);
        port = ntohs(s4->sin_port);
    }
    if (cfg.port_file) {
        char text[16];
        snprintf(text, sizeof text, "%u\n", port);
        if (write_file_atomic(cfg.port_file, text, err, errlen) != WH_OK)
            return WH_ERR;
    }
    fprintf(stderr, v6 ? "listening on [%s]:%u\n" : "listening on %s:%u\n",
            host, port);
    return WH_OK;
}

static int setup(char *err, size_t errlen)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < CONN_MAX + 64 &&
        rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max < CONN_MAX + 64 ? rl.rlim_max : CONN_MAX + 64;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    for (int i = CONN_MAX - 1; i >= 0; i--) {
        srv.conns[i].fd = -1;
        srv.free_idx[srv.nfree++] = i;
    }
    wh_buf_init(&srv.record, RECORD_MAX);
    wh_buf_init(&srv.line, RECORD_LINE_MAX);
    if (cfg.have_seed) {
        srv.rng = cfg.seed;
    } else if (wh_random_bytes(&srv.rng, sizeof srv.rng) != WH_OK) {
        srv.rng = (uint64_t)wh_wall_us() ^ ((uint64_t)getpid() << 32);
    }

    if (cfg.record_path) {
        srv.record_fd = open(cfg.record_path,
                             O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (srv.record_fd < 0)
            return wh_errf(err, errlen, "open(%s) failed: %s",
                           cfg.record_path, strerror(errno));
    }

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    if (sigprocmask(SIG_BLOCK, &mask, NULL) != 0)
        return wh_errf(err, errlen, "sigprocmask() failed: %s",
                       strerror(errno));
    signal(SIGPIPE, SIG_IGN);
    srv.sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (srv.sfd < 0)
        return wh_errf(err, errlen, "signalfd() failed: %s", strerror(errno));

    srv.ep = epoll_create1(EPOLL_CLOEXEC);
    if (srv.ep < 0)
        return wh_errf(err, errlen, "epoll_create1() failed: %s",
                       strerror(errno));
    if (open_listener(err, errlen) != WH_OK)
        return WH_ERR;
    srv.started_us = wh_mono_us();
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG_LISTEN};
    struct epoll_event sev = {.events = EPOLLIN, .data.u64 = TAG_SIGNAL};
    if (epoll_ctl(srv.ep, EPOLL_CTL_ADD, srv.lfd, &ev) != 0 ||
        epoll_ctl(srv.ep, EPOLL_CTL_ADD, srv.sfd, &sev) != 0)
        return wh_errf(err, errlen, "epoll_ctl() failed: %s",
                       strerror(errno));
    if (cfg.count_file)
        count_write();
    return announce(err, errlen);
}

static void teardown(void)
{
    if (srv.record_fd >= 0) {
        record_flush();
        close(srv.record_fd);
    }
    if (cfg.count_file)
        count_write();
    for (size_t i = 0; i < CONN_MAX; i++)
        if (srv.conns[i].in_use)
            conn_close(&srv.conns[i]);
    for (size_t i = 0; i < srv.ids_cap; i++)
        free(srv.ids[i].id);
    wh_sign_clear_secret(&cfg.default_secret);
    for (size_t i = 0; i < cfg.nsecrets; i++)
        wh_sign_clear_secret(&cfg.secrets[i].secret);
    free(srv.ids);
    free(srv.b64);
    wh_buf_free(&srv.record);
    wh_buf_free(&srv.line);
    if (srv.lfd >= 0)
        close(srv.lfd);
    if (srv.sfd >= 0)
        close(srv.sfd);
    if (srv.ep >= 0)
        close(srv.ep);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    char err[WH_ERRLEN];
    parse_args(argc, argv);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (setup(err, sizeof err) != WH_OK) {
        fprintf(stderr, "webhook-receiver: %s\n", err);
        teardown();
        return 1;
    }

    struct epoll_event events[EVENTS_MAX];
    while (!srv.stop) {
        int n = epoll_wait(srv.ep, events, EVENTS_MAX, next_timeout_ms());
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "webhook-receiver: epoll_wait() failed: %s\n",
                    strerror(errno));
            teardown();
            return 1;
        }
        for (int i = 0; i < n; i++) {
            uint64_t tag = events[i].data.u64;
            if (tag == TAG_LISTEN) {
                on_accept();
            } else if (tag == TAG_SIGNAL) {
                struct signalfd_siginfo si;
                while (read(srv.sfd, &si, sizeof si) == (ssize_t)sizeof si)
                    srv.stop = true;
            } else {
                on_conn_event(tag, events[i].events);
            }
        }
        run_timers();
    }
    teardown();
    return 0;
}
