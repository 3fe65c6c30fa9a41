/*
 * ordercheck.c - webhook-ordercheck, the checker of per-endpoint ordering
 * for the fault tests: reads a webhook-receiver --record file (JSON Lines)
 * and verifies that every endpoint (request path) received its events'
 * payload "seq" values 0..N-1 in order, counting a delivery by the first
 * successful (2xx) receipt of its webhook-id. Duplicate receipts are
 * allowed and counted. Single-threaded command-line program; everything
 * is read into memory, within the limits below.
 */
#include "base64.h"
#include "json.h"
#include "map.h"
#include "wh.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROG "webhook-ordercheck"

#define EXPECT_MAX        10000000L          /* events per endpoint */
#define ENDPOINTS_MAX     100000L            /* distinct paths */
#define RECORDS_MAX       10000000L          /* successful receipts kept */
#define LINE_MAX_DEFAULT  (8L * 1024 * 1024) /* a 4 MiB body, base64 + rest */
#define LINE_MAX_MIN      1024L
#define LINE_MAX_MAX      (64L * 1024 * 1024)
#define PATH_MAX_LEN      2048               /* bytes of a recorded path */
#define ID_MAX_LEN        512                /* bytes of a webhook-id */
#define RECORD_TOKENS_MAX 256                /* JSON tokens of one record */
#define BODY_TOKENS_MAX   65536              /* JSON tokens of one payload */
#define REPORT_DEFAULT    10
#define LIST_MAX          10                 /* values listed per problem */

#define EXIT_VIOLATION 1
#define EXIT_USAGE     2

/* One successful receipt of a webhook request. */
typedef struct {
    uint64_t rseq;   /* the receiver's seq: arrival order */
    uint64_t line;   /* line number in the record file */
    uint32_t path;   /* index into paths */
    bool first;      /* the first successful receipt of its webhook-id */
    int64_t value;   /* the payload's "seq" */
    char *id;        /* webhook-id, owned */
} receipt;

/* One endpoint, identified by its request path. */
typedef struct {
    char *name;          /* owned */
    uint64_t failed;     /* answers outside 200..299 */
    uint64_t ok;         /* 2xx receipts */
    /* results of the check */
    uint64_t delivered;  /* distinct expected values received */
    uint64_t out_of_order, missing, extra, duplicates;
    bool first_ooo_set;
    uint64_t ooo_pos;    /* 1-based position among first receipts */
    int64_t ooo_value, ooo_prev, ooo_high;
    uint64_t ooo_rseq;
    int64_t extras[LIST_MAX];
    size_t nextras;
} endpoint;

static struct {
    const char *record_path;
    long expect;
    long endpoints;      /* 0: whatever the file holds */
    const char *prefix;
    size_t prefix_len;
    long max_report;
    long max_line;
} opt = {.expect = -1, .prefix = "/", .prefix_len = 1,
         .max_report = REPORT_DEFAULT, .max_line = LINE_MAX_DEFAULT};

static struct {
    receipt *recs;
    size_t nrecs, recs_cap;
    endpoint *eps;
    size_t neps, eps_cap;
    wh_map *by_path;     /* path -> endpoint index + 1 */
    uint64_t lines, skipped_prefix, errors, errors_reported;
    uint64_t last_rseq;
    bool have_rseq;
    bool partial_tail;
    uint8_t *seen;       /* one byte per expected value, reused per path */
} st;

/* ---- messages ----------------------------------------------------------- */

static _Noreturn void die_usage(const char *fmt, ...) WH_PRINTF(1, 2);

static _Noreturn void die_usage(const char *fmt, ...)
{
    va_list ap;
    fputs(PROG ": ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n(see --help)\n", stderr);
    exit(EXIT_USAGE);
}

/* A record that cannot be used: counted, the first --max-report shown. */
static void record_error(uint64_t line, const char *fmt, ...) WH_PRINTF(2, 3);

static void record_error(uint64_t line, const char *fmt, ...)
{
    st.errors++;
    if (st.errors_reported >= (uint64_t)opt.max_report)
        return;
    st.errors_reported++;
    va_list ap;
    printf("ordercheck: line %" PRIu64 ": ", line);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
}

static void usage(FILE *f)
{
    fprintf(f,
"usage: " PROG " --record PATH --expect N [OPTIONS]\n"
"\n"
"Checks a webhook-receiver --record file (JSON Lines) for strict\n"
"per-endpoint ordering. Each distinct request path (starting with\n"
"--prefix) is one endpoint. Its records are taken in receiver order\n"
"(the record's \"seq\"); answers outside 200..299 are skipped, and of the\n"
"successful receipts only the first per webhook_id counts. The payloads\n"
"(body_b64, a JSON object) of those first receipts must carry \"seq\"\n"
"values 0,1,...,N-1 in exactly this order. Later receipts of a\n"
"webhook_id are duplicates: allowed, counted, and must carry the same\n"
"payload seq.\n"
"\n"
"Options:\n"
"  --record PATH     the record file ('-' for standard input)\n"
"  --expect N        events per endpoint, payload seq 0..N-1 (1..%ld)\n"
"  --endpoints M     number of endpoints expected (1..%ld; default: the\n"
"                    number found)\n"
"  --prefix P        only paths starting with P (default \"/\")\n"
"  --max-report K    failing endpoints and bad records described (0..1000000,\n"
"                    default %d); the summary counts all of them\n"
"  --max-line BYTES  longest record line accepted (%ld..%ld, default %ld)\n"
"  --help            show this help and exit\n"
"\n"
"Output: one line per failing endpoint (first out-of-order position with\n"
"its values, missing and extra seqs), one per unusable record, and the\n"
"summary:\n"
"  ordercheck: endpoints OK/M, deliveries D/M*N, out-of-order O, missing S,\n"
"  duplicate receipts U, extra X, failed answers F, record errors E\n"
"where out-of-order counts first receipts that arrived after one with a\n"
"higher seq, extra counts first receipts whose seq is outside 0..N-1 or\n"
"repeats a seq of another webhook_id, and failed answers counts non-2xx\n"
"answers (retried attempts). Record errors: lines that are not JSON\n"
"objects, lack seq, path or status, 2xx receipts without webhook_id or\n"
"with a body that is not a JSON object with an integer \"seq\", the same\n"
"webhook_id carrying two payload seqs, and receiver seqs that do not\n"
"increase from line to line (two receivers writing to one file). A last\n"
"line without newline (a record being written) is ignored.\n"
"\n"
"Limits: %ld endpoints, %ld successful receipts, paths of %d bytes,\n"
"webhook-ids of %d bytes.\n"
"\n"
"Exit status: 0 when every endpoint is complete and in order and no\n"
"record was unusable, 1 on any violation, 2 on bad usage, an unreadable\n"
"file, a line over --max-line or a limit exceeded.\n",
            EXPECT_MAX, ENDPOINTS_MAX, REPORT_DEFAULT, LINE_MAX_MIN,
            LINE_MAX_MAX, LINE_MAX_DEFAULT, ENDPOINTS_MAX, RECORDS_MAX,
            PATH_MAX_LEN, ID_MAX_LEN);
}

/* ---- arguments ---------------------------------------------------------- */

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

/* "1048576", "64k", "8m": bytes with an optional binary unit. */
static int parse_size(const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    if (!s || *s < '0' || *s > '9')
        return WH_ERR;
    long v = strtol(s, &end, 10);
    long mult = 1;
    if (errno)
        return WH_ERR;
    if (*end == 'k' || *end == 'K')
        mult = 1024;
    else if (*end == 'm' || *end == 'M')
        mult = 1024 * 1024;
    else if (*end)
        return WH_ERR;
    if (mult > 1 && end[1])
        return WH_ERR;
    if (v > max / mult || v * mult < min)
        return WH_ERR;
    *out = v * mult;
    return WH_OK;
}

enum {
    OPT_RECORD = 256, OPT_EXPECT, OPT_ENDPOINTS, OPT_PREFIX, OPT_MAX_REPORT,
    OPT_MAX_LINE, OPT_HELP = 'h'
};

static void parse_args(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"record", required_argument, NULL, OPT_RECORD},
        {"expect", required_argument, NULL, OPT_EXPECT},
        {"endpoints", required_argument, NULL, OPT_ENDPOINTS},
        {"prefix", required_argument, NULL, OPT_PREFIX},
        {"max-report", required_argument, NULL, OPT_MAX_REPORT},
        {"max-line", required_argument, NULL, OPT_MAX_LINE},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_RECORD:
            opt.record_path = optarg;
            break;
        case OPT_EXPECT:
            if (parse_long(optarg, 1, EXPECT_MAX, &opt.expect) != WH_OK)
                die_usage("--expect %s: expected a count 1..%ld", optarg,
                          EXPECT_MAX);
            break;
        case OPT_ENDPOINTS:
            if (parse_long(optarg, 1, ENDPOINTS_MAX, &opt.endpoints) != WH_OK)
                die_usage("--endpoints %s: expected a count 1..%ld", optarg,
                          ENDPOINTS_MAX);
            break;
        case OPT_PREFIX:
            if (optarg[0] != '/')
                die_usage("--prefix %s: must start with '/'", optarg);
            if (strlen(optarg) > PATH_MAX_LEN)
                die_usage("--prefix: longer than %d bytes", PATH_MAX_LEN);
            opt.prefix = optarg;
            opt.prefix_len = strlen(optarg);
            break;
        case OPT_MAX_REPORT:
            if (parse_long(optarg, 0, 1000000, &opt.max_report) != WH_OK)
                die_usage("--max-report %s: expected a count 0..1000000",
                          optarg);
            break;
        case OPT_MAX_LINE:
            if (parse_size(optarg, LINE_MAX_MIN, LINE_MAX_MAX,
                           &opt.max_line) != WH_OK)
                die_usage("--max-line %s: expected bytes %ld..%ld (k and m "
                          "units allowed)",
                          optarg, LINE_MAX_MIN, LINE_MAX_MAX);
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
    if (!opt.record_path)
        die_usage("--record is required");
    if (opt.expect < 0)
        die_usage("--expect is required");
}

/* ---- reading ------------------------------------------------------------ */

/* Returns the index of path's endpoint, adding it; -1 on a limit or
 * allocation failure (err says which). */
static long endpoint_for(const char *path, char *err, size_t errlen)
{
    uintptr_t v = (uintptr_t)wh_map_get(st.by_path, path);
    if (v)
        return (long)(v - 1);
    if (st.neps == ENDPOINTS_MAX) {
        wh_errf(err, errlen, "more than %ld distinct paths", ENDPOINTS_MAX);
        return -1;
    }
    if (st.neps == st.eps_cap) {
        size_t cap = st.eps_cap ? st.eps_cap * 2 : 256;
        endpoint *p = realloc(st.eps, cap * sizeof *p);
        if (!p)
            goto oom;
        st.eps = p;
        st.eps_cap = cap;
    }
    endpoint *e = &st.eps[st.neps];
    memset(e, 0, sizeof *e);
    e->name = strdup(path);
    if (!e->name)
        goto oom;
    if (wh_map_put(st.by_path, path, (void *)(uintptr_t)(st.neps + 1),
                   NULL) != WH_OK) {
        free(e->name);
        goto oom;
    }
    return (long)st.neps++;
oom:
    wh_errf(err, errlen, "out of memory");
    return -1;
}

static int add_receipt(const receipt *r, char *err, size_t errlen)
{
    if (st.nrecs == RECORDS_MAX)
        return wh_errf(err, errlen, "more than %ld successful receipts",
                       RECORDS_MAX);
    if (st.nrecs == st.recs_cap) {
        size_t cap = st.recs_cap ? st.recs_cap * 2 : 4096;
        receipt *p = realloc(st.recs, cap * sizeof *p);
        if (!p)
            return wh_errf(err, errlen, "out of memory");
        st.recs = p;
        st.recs_cap = cap;
    }
    st.recs[st.nrecs++] = *r;
    return WH_OK;
}

/* Reads the payload "seq" of a 2xx record. Returns WH_ERR with a reason
 * (not a fatal error: the record is counted as unusable). */
static int payload_seq(const wh_json *doc, int32_t b64tok, char **body,
                       size_t *body_cap, wh_json *bdoc, int64_t *out,
                       char *why, size_t whylen)
{
    const wh_json_tok *t = &doc->toks[b64tok];
    if (t->type != WH_JSON_STRING)
        return wh_errf(why, whylen, "body_b64 is not a string");
    /* base64 needs no unescaping; the span holds it between the quotes */
    const char *src = doc->buf + t->start + 1;
    size_t n = t->end - t->start - 2;
    size_t need = wh_base64_decoded_max(n) + 1;
    if (need > *body_cap) {
        char *p = realloc(*body, need);
        if (!p)
            return wh_errf(why, whylen, "out of memory");
        *body = p;
        *body_cap = need;
    }
    size_t len;
    if (wh_base64_decode(src, n, *body, *body_cap, &len) != WH_OK)
        return wh_errf(why, whylen, "body_b64 is not base64");
    char jerr[WH_ERRLEN];
    if (wh_json_parse(bdoc, *body, len, BODY_TOKENS_MAX, jerr,
                      sizeof jerr) != WH_OK)
        return wh_errf(why, whylen, "body is not JSON: %s", jerr);
    if (bdoc->toks[0].type != WH_JSON_OBJECT)
        return wh_errf(why, whylen, "body is not a JSON object");
    if (wh_json_int64(bdoc, wh_json_get(bdoc, 0, "seq"), out) != WH_OK)
        return wh_errf(why, whylen, "body has no integer \"seq\"");
    return WH_OK;
}

/* Parses one record line. Returns WH_OK (used, skipped or counted as an
 * error) or WH_ERR on a fatal condition (limit, memory) with err set. */
static int take_line(char *line, size_t len, uint64_t lineno, wh_json *doc,
                     wh_json *bdoc, char **body, size_t *body_cap, char *err,
                     size_t errlen)
{
    char jerr[WH_ERRLEN], why[WH_ERRLEN];
    char path[PATH_MAX_LEN + 1], id[ID_MAX_LEN + 1];
    int64_t rseq, status;
    size_t plen, idlen;

    while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == ' '))
        len--;
    if (len == 0) {
        record_error(lineno, "empty line");
        return WH_OK;
    }
    if (wh_json_parse(doc, line, len, RECORD_TOKENS_MAX, jerr,
                      sizeof jerr) != WH_OK) {
        record_error(lineno, "not JSON: %s", jerr);
        return WH_OK;
    }
    if (doc->toks[0].type != WH_JSON_OBJECT) {
        record_error(lineno, "not a JSON object");
        return WH_OK;
    }
    if (wh_json_int64(doc, wh_json_get(doc, 0, "seq"), &rseq) != WH_OK ||
        rseq < 0) {
        record_error(lineno, "no \"seq\" (a non-negative integer)");
        return WH_OK;
    }
    if (st.have_rseq && (uint64_t)rseq <= st.last_rseq)
        record_error(lineno,
                     "seq %" PRId64 " does not increase (previous line: %"
                     PRIu64 "); was the file written by two receivers?",
                     rseq, st.last_rseq);
    st.have_rseq = true;
    st.last_rseq = (uint64_t)rseq;

    int32_t ptok = wh_json_get(doc, 0, "path");
    if (ptok < 0 || wh_json_string(doc, ptok, path, sizeof path, &plen) !=
                        WH_OK || strlen(path) != plen) {
        record_error(lineno, "no \"path\" string (of at most %d bytes)",
                     PATH_MAX_LEN);
        return WH_OK;
    }
    if (wh_json_int64(doc, wh_json_get(doc, 0, "status"), &status) !=
        WH_OK) {
        record_error(lineno, "no integer \"status\"");
        return WH_OK;
    }
    if (strncmp(path, opt.prefix, opt.prefix_len) != 0) {
        st.skipped_prefix++;
        return WH_OK;
    }
    long ep = endpoint_for(path, err, errlen);
    if (ep < 0)
        return WH_ERR;
    if (status < 200 || status > 299) {
        st.eps[ep].failed++;
        return WH_OK;
    }

    int32_t itok = wh_json_get(doc, 0, "webhook_id");
    if (itok < 0 || doc->toks[itok].type != WH_JSON_STRING ||
        wh_json_string(doc, itok, id, sizeof id, &idlen) != WH_OK ||
        strlen(id) != idlen || idlen == 0) {
        record_error(lineno, "%s answered %" PRId64 " without a webhook_id "
                     "(string of 1..%d bytes)", path, status, ID_MAX_LEN);
        return WH_OK;
    }
    receipt r = {.rseq = (uint64_t)rseq, .line = lineno, .path = (uint32_t)ep};
    int32_t btok = wh_json_get(doc, 0, "body_b64");
    if (btok < 0) {
        record_error(lineno, "%s: no \"body_b64\"", path);
        return WH_OK;
    }
    if (payload_seq(doc, btok, body, body_cap, bdoc, &r.value, why,
                    sizeof why) != WH_OK) {
        record_error(lineno, "%s, webhook_id %s: %s", path, id, why);
        return WH_OK;
    }
    r.id = strdup(id);
    if (!r.id)
        return wh_errf(err, errlen, "out of memory");
    if (add_receipt(&r, err, errlen) != WH_OK) {
        free(r.id);
        return WH_ERR;
    }
    st.eps[ep].ok++;
    return WH_OK;
}

/* Reads every line of f. Returns WH_ERR with err set when the file cannot
 * be checked (read error, a line over the limit, a limit exceeded). */
static int read_records(FILE *f, char *err, size_t errlen)
{
    size_t cap = (size_t)opt.max_line + 1;
    char *line = malloc(cap);
    char *body = NULL;
    size_t body_cap = 0;
    wh_json doc = {0}, bdoc = {0};
    int rc = WH_ERR;
    if (!line) {
        wh_errf(err, errlen, "out of memory");
        goto fail;
    }
    for (;;) {
        size_t len = 0;
        int ch = EOF;
        while (len < cap && (ch = getc_unlocked(f)) != EOF && ch != '\n')
            line[len++] = (char)ch;
        if (ch == EOF && ferror(f)) {
            wh_errf(err, errlen, "read(%s) failed: %s", opt.record_path,
                    strerror(errno));
            goto fail;
        }
        if (ch == EOF && len == 0)
            break;
        if (len == cap) {
            wh_errf(err, errlen, "line %" PRIu64 " is longer than %ld bytes "
                    "(--max-line)", st.lines + 1, opt.max_line);
            goto fail;
        }
        if (ch == EOF) {
            st.partial_tail = true; /* being written: ignore */
            break;
        }
        st.lines++;
        if (take_line(line, len, st.lines, &doc, &bdoc, &body, &body_cap,
                      err, errlen) != WH_OK)
            goto fail;
    }
    rc = WH_OK;
fail:
    wh_json_free(&doc);
    wh_json_free(&bdoc);
    free(body);
    free(line);
    return rc;
}

/* ---- checking ----------------------------------------------------------- */

static int cmp_u64(uint64_t a, uint64_t b)
{
    return a < b ? -1 : a > b;
}

/* By endpoint, webhook-id, arrival. */
static int by_id(const void *pa, const void *pb)
{
    const receipt *a = pa, *b = pb;
    if (a->path != b->path)
        return a->path < b->path ? -1 : 1;
    int c = strcmp(a->id, b->id);
    if (c)
        return c;
    c = cmp_u64(a->rseq, b->rseq);
    return c ? c : cmp_u64(a->line, b->line);
}

/* By endpoint, arrival. */
static int by_arrival(const void *pa, const void *pb)
{
    const receipt *a = pa, *b = pb;
    if (a->path != b->path)
        return a->path < b->path ? -1 : 1;
    int c = cmp_u64(a->rseq, b->rseq);
    return c ? c : cmp_u64(a->line, b->line);
}

/* Marks the first successful receipt of each webhook-id; counts the
 * others as duplicates and checks they carry the same payload seq. */
static void mark_firsts(void)
{
    if (st.nrecs == 0)
        return; /* qsort wants a non-null array */
    qsort(st.recs, st.nrecs, sizeof *st.recs, by_id);
    const receipt *first = NULL;
    for (size_t i = 0; i < st.nrecs; i++) {
        receipt *r = &st.recs[i];
        if (!first || first->path != r->path || strcmp(first->id, r->id)) {
            r->first = true;
            first = r;
            continue;
        }
        st.eps[r->path].duplicates++;
        if (r->value != first->value)
            record_error(r->line, "%s: webhook_id %s carried seq %" PRId64
                         " here but seq %" PRId64 " on line %" PRIu64,
                         st.eps[r->path].name, r->id, r->value, first->value,
                         first->line);
    }
}

/* Checks one endpoint's first receipts, recs[from..to) in arrival order. */
static void check_endpoint(endpoint *e, size_t from, size_t to)
{
    uint64_t n = (uint64_t)opt.expect, pos = 0;
    int64_t high = -1, prev = -1;
    memset(st.seen, 0, n);
    for (size_t i = from; i < to; i++) {
        const receipt *r = &st.recs[i];
        if (!r->first)
            continue;
        pos++;
        int64_t v = r->value;
        if (v < 0 || (uint64_t)v >= n || st.seen[v]) {
            if (e->nextras < LIST_MAX)
                e->extras[e->nextras++] = v;
            e->extra++;
        } else {
            st.seen[v] = 1;
            e->delivered++;
            if (v < high) {
                if (!e->first_ooo_set) {
                    e->first_ooo_set = true;
                    e->ooo_pos = pos;
                    e->ooo_value = v;
                    e->ooo_prev = prev;
                    e->ooo_high = high;
                    e->ooo_rseq = r->rseq;
                }
                e->out_of_order++;
            }
            if (v > high)
                high = v;
        }
        prev = v;
    }
    e->missing = n - e->delivered;
}

/* Prints up to LIST_MAX missing values of the last checked endpoint. */
static void print_missing(const endpoint *e)
{
    printf("; missing %" PRIu64 ":", e->missing);
    size_t shown = 0;
    for (uint64_t v = 0; v < (uint64_t)opt.expect && shown < LIST_MAX; v++)
        if (!st.seen[v]) {
            printf(" %" PRIu64, v);
            shown++;
        }
    if (e->missing > shown)
        printf(" ... (%" PRIu64 " more)", e->missing - shown);
}

static void report_endpoint(const endpoint *e)
{
    printf("ordercheck: %s: %" PRIu64 " of %ld delivered", e->name,
           e->delivered, opt.expect);
    if (e->out_of_order) {
        printf("; %" PRIu64 " out of order, first at position %" PRIu64
               ": seq %" PRId64 " after seq %" PRId64,
               e->out_of_order, e->ooo_pos, e->ooo_value, e->ooo_prev);
        if (e->ooo_prev != e->ooo_high)
            printf(" (highest so far %" PRId64 ")", e->ooo_high);
        printf(" (receiver seq %" PRIu64 ")", e->ooo_rseq);
    }
    if (e->missing)
        print_missing(e);
    if (e->extra) {
        printf("; extra %" PRIu64 ":", e->extra);
        for (size_t i = 0; i < e->nextras; i++)
            printf(" %" PRId64, e->extras[i]);
        if (e->extra > e->nextras)
            printf(" ... (%" PRIu64 " more)", e->extra - e->nextras);
    }
    printf(" (%" PRIu64 " duplicate receipts, %" PRIu64 " failed answers)\n",
           e->duplicates, e->failed);
}

int main(int argc, char **argv)
{
    char err[WH_ERRLEN];
    int status = EXIT_USAGE;
    FILE *f = NULL;

    parse_args(argc, argv);
    st.by_path = wh_map_new();
    st.seen = malloc((size_t)opt.expect);
    if (!st.by_path || !st.seen) {
        fprintf(stderr, PROG ": out of memory\n");
        goto done;
    }
    if (strcmp(opt.record_path, "-") == 0) {
        f = stdin;
    } else {
        f = fopen(opt.record_path, "r");
        if (!f) {
            fprintf(stderr, PROG ": cannot open %s: %s\n", opt.record_path,
                    strerror(errno));
            goto done;
        }
    }
    if (read_records(f, err, sizeof err) != WH_OK) {
        fprintf(stderr, PROG ": %s: %s\n", opt.record_path, err);
        goto done;
    }

    mark_firsts();
    if (st.nrecs > 0)
        qsort(st.recs, st.nrecs, sizeof *st.recs, by_arrival);
    uint64_t good = 0, delivered = 0, ooo = 0, missing = 0, dups = 0;
    uint64_t extra = 0, failed = 0, reported = 0;
    size_t i = 0;
    for (uint32_t p = 0; p < st.neps; p++) {
        endpoint *e = &st.eps[p];
        size_t from = i;
        while (i < st.nrecs && st.recs[i].path == p)
            i++;
        check_endpoint(e, from, i);
        bool ok = !e->out_of_order && !e->missing && !e->extra;
        good += ok;
        delivered += e->delivered;
        ooo += e->out_of_order;
        missing += e->missing;
        dups += e->duplicates;
        extra += e->extra;
        failed += e->failed;
        if (!ok && reported < (uint64_t)opt.max_report) {
            report_endpoint(e);
            reported++;
        }
    }
    uint64_t bad_eps = st.neps - good;
    if (bad_eps > reported)
        printf("ordercheck: ... and %" PRIu64 " more failing endpoints\n",
               bad_eps - reported);
    if (st.errors > st.errors_reported)
        printf("ordercheck: ... and %" PRIu64 " more record errors\n",
               st.errors - st.errors_reported);

    uint64_t want = opt.endpoints ? (uint64_t)opt.endpoints : st.neps;
    bool count_ok = st.neps == want;
    if (st.neps < want) {
        printf("ordercheck: only %zu of %" PRIu64 " endpoints received "
               "anything under %s\n",
               st.neps, want, opt.prefix);
        missing += (want - st.neps) * (uint64_t)opt.expect;
    } else if (st.neps > want) {
        printf("ordercheck: %zu endpoints under %s, expected %" PRIu64 "\n",
               st.neps, opt.prefix, want);
    }
    if (st.neps == 0)
        printf("ordercheck: no records under %s in %s\n", opt.prefix,
               opt.record_path);
    if (st.partial_tail)
        printf("ordercheck: the last line has no newline yet; ignored\n");
    printf("ordercheck: endpoints %" PRIu64 "/%" PRIu64 ", deliveries %"
           PRIu64 "/%" PRIu64 ", out-of-order %" PRIu64 ", missing %" PRIu64
           ", duplicate receipts %" PRIu64 ", extra %" PRIu64
           ", failed answers %" PRIu64 ", record errors %" PRIu64 "\n",
           good < want ? good : want, want, delivered,
           want * (uint64_t)opt.expect, ooo, missing, dups, extra, failed,
           st.errors);
    status = good == st.neps && count_ok && st.neps > 0 && st.errors == 0
                 ? 0
                 : EXIT_VIOLATION;
done:
    if (f && f != stdin)
        fclose(f);
    for (size_t k = 0; k < st.nrecs; k++)
        free(st.recs[k].id);
    free(st.recs);
    for (size_t k = 0; k < st.neps; k++)
        free(st.eps[k].name);
    free(st.eps);
    wh_map_destroy(st.by_path);
    free(st.seen);
    return status;
}
