/*
 * metrics.c - the operations HTTP server (see metrics.h): a listening
 * socket, a fixed table of connections and a timerfd for their deadlines,
 * all in one epoll set whose descriptor the owner's loop polls. Each
 * connection reads one request, gets one answer and is closed; the series
 * registry renders the Prometheus text format on demand. Runs on the
 * owner's loop thread only (worker and scheduler main threads).
 */
#include "metrics.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "buf.h"
#include "db.h"
#include "kafka.h"
#include "log.h"

#define BACKLOG 64
#define EVENTS_MAX 32          /* epoll events handled per serve */
#define ACCEPT_MAX 64          /* connections accepted per serve */
#define DRAIN_MS 1000          /* lingering close: wait for the peer's FIN */
#define DRAIN_BYTES_MAX 65536  /* request bytes discarded after answering */
#define ACCEPT_PAUSE_MS 1000   /* after EMFILE and the like */
#define WARN_PERIOD_US (60 * 1000000LL)
#define BODY_MAX (1024 * 1024) /* rendered exposition, far above the
                                  largest registry */
#define RESP_MAX (BODY_MAX + 512)
#define TAG_LISTEN 0
#define TAG_TIMER 1
#define TAG_CONN 2             /* + connection index */

typedef struct {
    wh_metric_type type;
    char name[WH_METRICS_NAME_MAX + 1];
    char labels[WH_METRICS_LABELS_MAX + 1]; /* "" or {k="v",...} */
    char help[WH_METRICS_HELP_MAX + 1];
    const int64_t *value;
    wh_metric_fn *fn;
    void *opaque;
} series;

/*
 * Connection states: FREE -> READ (accepted) -> WRITE (request complete
 * or refused; answer queued) -> DRAIN (answer sent, write side shut down,
 * reading until the peer closes so it gets the whole answer) -> FREE.
 * Any state -> FREE on an error, EOF or the deadline.
 */
typedef enum { CONN_FREE, CONN_READ, CONN_WRITE, CONN_DRAIN } conn_state;

typedef struct {
    conn_state state;
    int fd;
    int64_t deadline_us;
    size_t req_len;
    char req[WH_METRICS_REQUEST_MAX];
    wh_buf resp;
    size_t sent;
    size_t drained;
} conn;

struct wh_metrics {
    int lfd, ep, tfd;
    char addr[INET6_ADDRSTRLEN + 8];
    int max_conns;
    int64_t timeout_ms;
    conn *conns;
    int nconns;               /* not FREE */
    int64_t accept_paused_until_us; /* 0: accepting */
    int64_t timer_at_us;      /* armed deadline, 0: disarmed */
    int64_t last_warn_us;
    bool ready;
    char reason[WH_METRICS_REASON_MAX + 1];
    series *series;
    size_t nseries;
    wh_buf body;              /* scratch for the exposition */
};

/* ---- registry ---------------------------------------------------------- */

static bool valid_name(const char *s)
{
    if (!*s || (!(*s >= 'a' && *s <= 'z') && !(*s >= 'A' && *s <= 'Z') &&
                *s != '_' && *s != ':'))
        return false;
    for (; *s; s++)
        if (!(*s >= 'a' && *s <= 'z') && !(*s >= 'A' && *s <= 'Z') &&
            !(*s >= '0' && *s <= '9') && *s != '_' && *s != ':')
            return false;
    return true;
}

static bool valid_label_key(const char *s, size_t n)
{
    if (n == 0 || (n >= 2 && s[0] == '_' && s[1] == '_'))
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                      c == '_';
        if (!letter && !(i > 0 && c >= '0' && c <= '9'))
            return false;
    }
    return true;
}

/* Renders "k=v,k=v" as {k="v",k="v"} into out (WH_METRICS_LABELS_MAX+1). */
static int render_labels(const char *in, char *out, char *err, size_t errlen)
{
    const char *keys[WH_METRICS_LABEL_COUNT_MAX];
    size_t keylens[WH_METRICS_LABEL_COUNT_MAX], nkeys = 0;
    wh_buf b;
    out[0] = '\0';
    if (!in || !*in)
        return WH_OK;
    wh_buf_init(&b, WH_METRICS_LABELS_MAX);
    if (wh_buf_addc(&b, '{'))
        goto too_long;
    for (const char *p = in;;) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', n);
        size_t klen = eq ? (size_t)(eq - p) : 0;
        if (!eq || !valid_label_key(p, klen)) {
            wh_buf_free(&b);
            return wh_errf(err, errlen,
                           "labels '%.64s': expected key=value with key "
                           "[a-zA-Z_][a-zA-Z0-9_]*, not '__'-prefixed", in);
        }
        for (size_t i = 0; i < nkeys; i++)
            if (keylens[i] == klen && memcmp(keys[i], p, klen) == 0) {
                wh_buf_free(&b);
                return wh_errf(err, errlen, "labels '%.64s': key '%.*s' "
                               "given twice", in, (int)klen, p);
            }
        if (nkeys == WH_METRICS_LABEL_COUNT_MAX) {
            wh_buf_free(&b);
            return wh_errf(err, errlen, "labels '%.64s': more than %d", in,
                           WH_METRICS_LABEL_COUNT_MAX);
        }
        keys[nkeys] = p;
        keylens[nkeys++] = klen;
        if ((nkeys > 1 && wh_buf_addc(&b, ',')) || wh_buf_add(&b, p, klen) ||
            wh_buf_add(&b, "=\"", 2))
            goto too_long;
        for (const char *v = eq + 1; v < p + n; v++) {
            int rc = *v == '\\'   ? wh_buf_add(&b, "\\\\", 2)
                     : *v == '"'  ? wh_buf_add(&b, "\\\"", 2)
                     : *v == '\n' ? wh_buf_add(&b, "\\n", 2)
                                  : wh_buf_addc(&b, *v);
            if (rc)
                goto too_long;
        }
        if (wh_buf_addc(&b, '"'))
            goto too_long;
        if (!end)
            break;
        p = end + 1;
    }
    if (wh_buf_addc(&b, '}'))
        goto too_long;
    memcpy(out, b.data, b.len + 1);
    wh_buf_free(&b);
    return WH_OK;
too_long:
    wh_buf_free(&b);
    return wh_errf(err, errlen, "labels '%.64s': longer than %d bytes as "
                   "exposed", in, WH_METRICS_LABELS_MAX);
}

static int add(wh_metrics *m, wh_metric_type type, const char *name,
               const char *labels, const char *help, const int64_t *value,
               wh_metric_fn *fn, void *opaque, char *err, size_t errlen)
{
    char rendered[WH_METRICS_LABELS_MAX + 1];
    if (!m)
        return WH_OK;
    assert(value || fn);
    if (!name || strlen(name) > WH_METRICS_NAME_MAX || !valid_name(name))
        return wh_errf(err, errlen, "metric name '%.64s' is not "
                       "[a-zA-Z_:][a-zA-Z0-9_:]* of at most %d characters",
                       name ? name : "(null)", WH_METRICS_NAME_MAX);
    size_t nlen = strlen(name);
    if (type == WH_METRIC_COUNTER &&
        (nlen < 6 || strcmp(name + nlen - 6, "_total") != 0))
        return wh_errf(err, errlen, "counter %s: name must end in _total",
                       name);
    if (!help || strlen(help) > WH_METRICS_HELP_MAX)
        return wh_errf(err, errlen, "metric %s: help missing or longer than "
                       "%d bytes", name, WH_METRICS_HELP_MAX);
    if (render_labels(labels, rendered, err, errlen) != WH_OK)
        return WH_ERR;
    for (size_t i = 0; i < m->nseries; i++) {
        const series *s = &m->series[i];
        if (strcmp(s->name, name) != 0)
            continue;
        if (s->type != type || strcmp(s->help, help) != 0)
            return wh_errf(err, errlen, "metric %s: registered before with "
                           "another type or help", name);
        if (strcmp(s->labels, rendered) == 0)
            return wh_errf(err, errlen, "metric %s%s: registered twice",
                           name, rendered);
    }
    if (m->nseries == WH_METRICS_SERIES_MAX)
        return wh_errf(err, errlen, "metric %s: more than %d series", name,
                       WH_METRICS_SERIES_MAX);
    series *s = &m->series[m->nseries++];
    s->type = type;
    memcpy(s->name, name, nlen + 1);
    memcpy(s->labels, rendered, strlen(rendered) + 1);
    memcpy(s->help, help, strlen(help) + 1);
    s->value = value;
    s->fn = fn;
    s->opaque = opaque;
    return WH_OK;
}

int wh_metrics_add(wh_metrics *m, wh_metric_type type, const char *name,
                   const char *labels, const char *help, const int64_t *value,
                   char *err, size_t errlen)
{
    return add(m, type, name, labels, help, value, NULL, NULL, err, errlen);
}

int wh_metrics_add_fn(wh_metrics *m, wh_metric_type type, const char *name,
                      const char *labels, const char *help, wh_metric_fn *fn,
                      void *opaque, char *err, size_t errlen)
{
    return add(m, type, name, labels, help, NULL, fn, opaque, err, errlen);
}

static double process_uptime(void *o)
{
    return (double)(wh_mono_us() - *(const int64_t *)o) / 1e6;
}

static double process_data_loss(void *o)
{
    (void)o;
    return (double)wh_kafka_data_loss_count();
}

static double process_db(void *o)
{
    wh_db *const *db = o;
    return *db && wh_db_alive(*db);
}

static double process_ready(void *o)
{
    const wh_metrics *m = o;
    return m->ready;
}

int wh_metrics_add_process(wh_metrics *m, const char *prefix,
                           const char *program, const int64_t *started_us,
                           wh_db *const *db, wh_db *const *listen_db,
                           char *err, size_t errlen)
{
    char up[WH_METRICS_NAME_MAX + 1], loss[WH_METRICS_NAME_MAX + 1],
        connected[WH_METRICS_NAME_MAX + 1], ready[WH_METRICS_NAME_MAX + 1],
        help[128];
    snprintf(ready, sizeof(ready), "%s_ready", prefix);
    if (m && wh_metrics_add_fn(m, WH_METRIC_GAUGE, ready, NULL,
                               "1 while /readyz answers ready (its body "
                               "says why not).", process_ready, m, err,
                               errlen) != WH_OK)
        return WH_ERR;
    const char *db_help = "1 while the Postgres connection is up.";
    snprintf(up, sizeof(up), "%s_uptime_seconds", prefix);
    snprintf(loss, sizeof(loss), "%s_kafka_data_loss_total", prefix);
    snprintf(connected, sizeof(connected), "%s_database_connected", prefix);
    snprintf(help, sizeof(help), "Seconds since the %s started.", program);
    if (wh_metrics_add_fn(m, WH_METRIC_GAUGE, up, NULL, help, process_uptime,
                          (void *)started_us, err, errlen) != WH_OK ||
        wh_metrics_add_fn(m, WH_METRIC_COUNTER, loss, NULL,
                          "Consumer offset resets caused by an error (DATA "
                          "LOSS in the log).",
                          process_data_loss, NULL, err, errlen) != WH_OK ||
        wh_metrics_add_fn(m, WH_METRIC_GAUGE, connected, "connection=main",
                          db_help, process_db, (void *)db, err,
                          errlen) != WH_OK ||
        wh_metrics_add_fn(m, WH_METRIC_GAUGE, connected, "connection=listen",
                          db_help, process_db, (void *)listen_db, err,
                          errlen) != WH_OK)
        return WH_ERR;
    return WH_OK;
}

/* The shortest of %.15g..%.17g that reads back as v. */
static int add_double(wh_buf *b, double v)
{
    if (isnan(v))
        return wh_buf_add(b, "NaN", 3);
    if (isinf(v))
        return v > 0 ? wh_buf_add(b, "+Inf", 4) : wh_buf_add(b, "-Inf", 4);
    char s[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(s, sizeof(s), "%.*g", prec, v);
        if (strtod(s, NULL) == v)
            break;
    }
    return wh_buf_add(b, s, strlen(s));
}

static int add_help(wh_buf *b, const char *help)
{
    for (const char *p = help; *p; p++) {
        int rc = *p == '\\'   ? wh_buf_add(b, "\\\\", 2)
                 : *p == '\n' ? wh_buf_add(b, "\\n", 2)
                              : wh_buf_addc(b, *p);
        if (rc)
            return WH_ERR;
    }
    return WH_OK;
}

/* Every family once, its series together, in registration order. */
static int render(wh_metrics *m, wh_buf *b)
{
    for (size_t i = 0; i < m->nseries; i++) {
        const series *f = &m->series[i];
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = strcmp(m->series[j].name, f->name) == 0;
        if (seen)
            continue;
        if (wh_buf_addf(b, "# HELP %s ", f->name) || add_help(b, f->help) ||
            wh_buf_addf(b, "\n# TYPE %s %s\n", f->name,
                        f->type == WH_METRIC_COUNTER ? "counter" : "gauge"))
            return WH_ERR;
        for (size_t j = i; j < m->nseries; j++) {
            const series *s = &m->series[j];
            if (strcmp(s->name, f->name) != 0)
                continue;
            if (wh_buf_addf(b, "%s%s ", s->name, s->labels))
                return WH_ERR;
            int rc = s->value ? wh_buf_addf(b, "%" PRId64, *s->value)
                              : add_double(b, s->fn(s->opaque));
            if (rc || wh_buf_addc(b, '\n'))
                return WH_ERR;
        }
    }
    return WH_OK;
}

void wh_metrics_set_ready(wh_metrics *m, bool ready, const char *reason)
{
    if (!m)
        return;
    m->ready = ready;
    if (!ready)
        wh_strlcpy(m->reason, reason ? reason : "not ready",
                   sizeof(m->reason));
}

/* ---- server ------------------------------------------------------------ */

static int parse_listen(const char *s, char *host, size_t hostlen,
                        char *port, size_t portlen, char *err, size_t errlen)
{
    const char *h = s, *hend, *p;
    if (*s == '[') {
        h = s + 1;
        hend = strchr(h, ']');
        if (!hend || hend[1] != ':')
            return wh_errf(err, errlen, "metrics address '%.64s': expected "
                           "[IPV6]:PORT", s);
        p = hend + 2;
    } else {
        hend = strrchr(s, ':');
        if (!hend)
            return wh_errf(err, errlen, "metrics address '%.64s': expected "
                           "HOST:PORT", s);
        if (memchr(s, ':', (size_t)(hend - s)))
            return wh_errf(err, errlen, "metrics address '%.64s': write an "
                           "IPv6 address as [ADDR]:PORT", s);
        p = hend + 1;
    }
    size_t hl = (size_t)(hend - h), pl = strlen(p);
    long v = 0;
    for (size_t i = 0; i < pl; i++) {
        if (p[i] < '0' || p[i] > '9' || i >= 5)
            goto bad_port;
        v = v * 10 + (p[i] - '0');
    }
    if (pl == 0 || v > 65535)
        goto bad_port;
    if (hl >= hostlen)
        return wh_errf(err, errlen, "metrics address '%.64s': host longer "
                       "than %zu bytes", s, hostlen - 1);
    memcpy(host, h, hl);
    host[hl] = '\0';
    snprintf(port, portlen, "%ld", v);
    return WH_OK;
bad_port:
    return wh_errf(err, errlen, "metrics address '%.64s': port must be a "
                   "number 0..65535", s);
}

static int open_listener(wh_metrics *m, const char *listen_at, char *err,
                         size_t errlen)
{
    char host[256], port[24], why[128] = "no address";
    if (parse_listen(listen_at, host, sizeof(host), port, sizeof(port), err,
                     errlen) != WH_OK)
        return WH_ERR;
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int gai = getaddrinfo(*host ? host : NULL, port, &hints, &res);
    if (gai != 0)
        return wh_errf(err, errlen, "metrics address '%.64s': %s", listen_at,
                       gai_strerror(gai));
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family,
                        ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            snprintf(why, sizeof(why), "socket() failed: %s",
                     strerror(errno));
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 ||
            listen(fd, BACKLOG) != 0) {
            snprintf(why, sizeof(why), "%s", strerror(errno));
            close(fd);
            continue;
        }
        m->lfd = fd;
        break;
    }
    freeaddrinfo(res);
    if (m->lfd < 0)
        return wh_errf(err, errlen, "metrics address '%.64s': cannot listen: "
                       "%s", listen_at, why);
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    socklen_t sl = sizeof(ss);
    char ip[INET6_ADDRSTRLEN] = "?";
    int bound = 0;
    if (getsockname(m->lfd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET6) {
            const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
            bound = ntohs(a->sin6_port);
        } else if (ss.ss_family == AF_INET) {
            const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
            bound = ntohs(a->sin_port);
        }
    }
    snprintf(m->addr, sizeof(m->addr),
             ss.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", ip, bound);
    return WH_OK;
}

static int ep_ctl(wh_metrics *m, int op, int fd, uint32_t events,
                  uint64_t tag)
{
    struct epoll_event ev = {.events = events, .data.u64 = tag};
    return epoll_ctl(m->ep, op, fd, &ev);
}

int wh_metrics_new(const wh_metrics_conf *conf, wh_metrics **out, char *err,
                   size_t errlen)
{
    *out = NULL;
    if (!conf->listen || !*conf->listen)
        return WH_OK;
    if (conf->max_connections < 0 ||
        conf->max_connections > WH_METRICS_CONN_MAX || conf->timeout_ms < 0)
        return wh_errf(err, errlen, "metrics: max_connections must be "
                       "0..%d and timeout_ms not negative",
                       WH_METRICS_CONN_MAX);
    wh_metrics *m = calloc(1, sizeof(*m));
    if (!m)
        return wh_errf(err, errlen, "out of memory");
    m->lfd = m->ep = m->tfd = -1;
    m->max_conns = conf->max_connections ? conf->max_connections
                                         : WH_METRICS_CONN_DEFAULT;
    m->timeout_ms = conf->timeout_ms ? conf->timeout_ms
                                     : WH_METRICS_TIMEOUT_DEFAULT_MS;
    wh_strlcpy(m->reason, "starting", sizeof(m->reason));
    wh_buf_init(&m->body, BODY_MAX);
    m->conns = calloc((size_t)m->max_conns, sizeof(*m->conns));
    m->series = calloc(WH_METRICS_SERIES_MAX, sizeof(*m->series));
    if (!m->conns || !m->series) {
        wh_errf(err, errlen, "out of memory");
        goto fail;
    }
    for (int i = 0; i < m->max_conns; i++) {
        m->conns[i].fd = -1;
        wh_buf_init(&m->conns[i].resp, RESP_MAX);
    }
    if (open_listener(m, conf->listen, err, errlen) != WH_OK)
        goto fail;
    m->ep = epoll_create1(EPOLL_CLOEXEC);
    m->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (m->ep < 0 || m->tfd < 0 ||
        ep_ctl(m, EPOLL_CTL_ADD, m->lfd, EPOLLIN, TAG_LISTEN) != 0 ||
        ep_ctl(m, EPOLL_CTL_ADD, m->tfd, EPOLLIN, TAG_TIMER) != 0) {
        wh_errf(err, errlen, "metrics: epoll/timerfd setup failed: %s",
                strerror(errno));
        goto fail;
    }
    *out = m;
    return WH_OK;
fail:
    wh_metrics_destroy(m);
    return WH_ERR;
}

static void conn_close(wh_metrics *m, conn *c)
{
    assert(c->state != CONN_FREE);
    epoll_ctl(m->ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    c->state = CONN_FREE;
    c->req_len = c->sent = c->drained = 0;
    wh_buf_free(&c->resp);
    m->nconns--;
}

void wh_metrics_destroy(wh_metrics *m)
{
    if (!m)
        return;
    if (m->conns) {
        for (int i = 0; i < m->max_conns; i++)
            if (m->conns[i].state != CONN_FREE)
                conn_close(m, &m->conns[i]);
    }
    if (m->lfd >= 0)
        close(m->lfd);
    if (m->tfd >= 0)
        close(m->tfd);
    if (m->ep >= 0)
        close(m->ep);
    wh_buf_free(&m->body);
    free(m->conns);
    free(m->series);
    free(m);
}

const char *wh_metrics_address(const wh_metrics *m)
{
    return m ? m->addr : "";
}

int wh_metrics_fd(const wh_metrics *m)
{
    return m ? m->ep : -1;
}

static const char *status_text(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    }
    return "Error";
}

/* Queues the answer: status line, headers and (unless head) body. */
static void respond(conn *c, int status, const char *type, const char *body,
                    size_t len, bool head)
{
    wh_buf_reset(&c->resp);
    if (wh_buf_addf(&c->resp,
                    "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
                    "Content-Length: %zu\r\n%sConnection: close\r\n\r\n",
                    status, status_text(status), type, len,
                    status == 405 ? "Allow: GET, HEAD\r\n" : "") ||
        (!head && wh_buf_add(&c->resp, body, len))) {
        /* only when memory ran out: answer without a body */
        wh_buf_reset(&c->resp);
        WH_IGNORE(wh_buf_addf(&c->resp, "HTTP/1.1 500 Internal Server Error"
                              "\r\nContent-Length: 0\r\nConnection: close"
                              "\r\n\r\n"));
    }
    c->sent = 0;
    c->state = CONN_WRITE;
}

static void respond_text(conn *c, int status, const char *text, bool head)
{
    respond(c, status, "text/plain; charset=utf-8", text, strlen(text),
            head);
}

void wh_metrics_request_parse(char *req, size_t len, wh_metrics_request *out)
{
    char *line = req, *eol = memchr(line, '\n', len);
    assert(eol);
    *out = (wh_metrics_request){.status = 400};
    if (memchr(line, '\0', (size_t)(eol - line)))
        return; /* a NUL would cut the line short for the checks below */
    *eol = '\0';
    if (eol > line && eol[-1] == '\r')
        eol[-1] = '\0';
    char *method = line, *target = strchr(method, ' '), *version = NULL;
    if (target) {
        *target++ = '\0';
        version = strchr(target, ' ');
        if (version)
            *version++ = '\0';
    }
    if (!target || !version || !*method || *target != '/' ||
        strchr(version, ' ') ||
        (strcmp(version, "HTTP/1.1") != 0 &&
         strcmp(version, "HTTP/1.0") != 0))
        return;
    out->head = strcmp(method, "HEAD") == 0;
    if (!out->head && strcmp(method, "GET") != 0) {
        out->status = 405;
        return;
    }
    target[strcspn(target, "?#")] = '\0';
    out->status = 0;
    out->target = target;
}

/* Answers the complete request in c->req[0..req_len). */
static void handle(wh_metrics *m, conn *c)
{
    wh_metrics_request r;
    wh_metrics_request_parse(c->req, c->req_len, &r);
    if (r.status == 400) {
        respond_text(c, 400, "bad request\n", false);
        return;
    }
    if (r.status == 405) {
        respond_text(c, 405, "method not allowed\n", false);
        return;
    }
    const char *target = r.target;
    bool head = r.head;
    if (strcmp(target, "/healthz") == 0) {
        respond_text(c, 200, "ok\n", head);
    } else if (strcmp(target, "/readyz") == 0) {
        char text[WH_METRICS_REASON_MAX + 32];
        if (m->ready)
            respond_text(c, 200, "ready\n", head);
        else {
            snprintf(text, sizeof(text), "not ready: %s\n", m->reason);
            respond_text(c, 503, text, head);
        }
    } else if (strcmp(target, "/metrics") == 0) {
        wh_buf_reset(&m->body);
        if (render(m, &m->body) != WH_OK)
            respond_text(c, 500, "metrics do not fit\n", head);
        else
            respond(c, 200, "text/plain; version=0.0.4; charset=utf-8",
                    wh_buf_cstr(&m->body), m->body.len, head);
    } else {
        respond_text(c, 404, "not found\n", head);
    }
}

bool wh_metrics_request_complete(const char *req, size_t len, size_t from)
{
    size_t i = from > 3 ? from - 3 : 0;
    for (; i < len; i++) {
        if (req[i] != '\n')
            continue;
        if (i + 1 < len && req[i + 1] == '\n')
            return true;
        if (i + 2 < len && req[i + 1] == '\r' && req[i + 2] == '\n')
            return true;
    }
    return false;
}

static void conn_write(wh_metrics *m, conn *c)
{
    while (c->sent < c->resp.len) {
        ssize_t n = send(c->fd, c->resp.data + c->sent,
                         c->resp.len - c->sent, MSG_NOSIGNAL);
        if (n > 0) {
            c->sent += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (ep_ctl(m, EPOLL_CTL_MOD, c->fd, EPOLLOUT,
                       TAG_CONN + (uint64_t)(c - m->conns)) != 0)
                conn_close(m, c);
            return;
        }
        conn_close(m, c);
        return;
    }
    /* Answer sent. Shut our side, then read what the peer still sends
     * until it closes: closing with unread input would reset the
     * connection and could destroy the answer in flight. */
    wh_buf_free(&c->resp);
    shutdown(c->fd, SHUT_WR);
    c->state = CONN_DRAIN;
    c->deadline_us = wh_mono_us() + DRAIN_MS * 1000LL;
    if (ep_ctl(m, EPOLL_CTL_MOD, c->fd, EPOLLIN,
               TAG_CONN + (uint64_t)(c - m->conns)) != 0)
        conn_close(m, c);
}

static void conn_drain(wh_metrics *m, conn *c)
{
    char scratch[4096];
    for (;;) {
        ssize_t n = recv(c->fd, scratch, sizeof(scratch), 0);
        if (n > 0) {
            c->drained += (size_t)n;
            if (c->drained > DRAIN_BYTES_MAX)
                break;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        break;
    }
    conn_close(m, c);
}

static void conn_read(wh_metrics *m, conn *c)
{
    for (;;) {
        size_t room = sizeof(c->req) - c->req_len;
        if (room == 0) {
            respond_text(c, 431, "request too large\n", false);
            conn_write(m, c);
            return;
        }
        ssize_t n = recv(c->fd, c->req + c->req_len, room, 0);
        if (n > 0) {
            size_t from = c->req_len;
            c->req_len += (size_t)n;
            if (wh_metrics_request_complete(c->req, c->req_len, from)) {
                handle(m, c);
                conn_write(m, c);
                return;
            }
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        conn_close(m, c); /* EOF or error before a whole request */
        return;
    }
}

static void conn_event(wh_metrics *m, conn *c)
{
    switch (c->state) {
    case CONN_READ: conn_read(m, c); break;
    case CONN_WRITE: conn_write(m, c); break;
    case CONN_DRAIN: conn_drain(m, c); break;
    case CONN_FREE: break; /* closed earlier in this round */
    }
}

static void pause_accept(wh_metrics *m, int64_t now, const char *why)
{
    m->accept_paused_until_us = now + ACCEPT_PAUSE_MS * 1000LL;
    if (ep_ctl(m, EPOLL_CTL_MOD, m->lfd, 0, TAG_LISTEN) != 0)
        WH_WARN("metrics: epoll_ctl() failed: %s", strerror(errno));
    WH_WARN("metrics: accept() failed: %s; pausing for %d ms", why,
            ACCEPT_PAUSE_MS);
}

static void accept_all(wh_metrics *m, int64_t now)
{
    for (int i = 0; i < ACCEPT_MAX; i++) {
        int fd = accept4(m->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                pause_accept(m, now, strerror(errno));
            return;
        }
        conn *c = NULL;
        for (int j = 0; j < m->max_conns && !c; j++)
            if (m->conns[j].state == CONN_FREE)
                c = &m->conns[j];
        if (!c) {
            close(fd);
            if (now - m->last_warn_us >= WARN_PERIOD_US) {
                m->last_warn_us = now;
                WH_WARN("metrics: %d connections open, closing new ones",
                        m->max_conns);
            }
            continue;
        }
        c->fd = fd;
        c->state = CONN_READ;
        c->deadline_us = now + m->timeout_ms * 1000;
        c->req_len = c->sent = c->drained = 0;
        m->nconns++;
        if (ep_ctl(m, EPOLL_CTL_ADD, fd, EPOLLIN,
                   TAG_CONN + (uint64_t)(c - m->conns)) != 0) {
            conn_close(m, c);
            continue;
        }
        conn_read(m, c); /* the request has often arrived already */
    }
}

/* Closes connections past their deadline, resumes a paused listener and
 * arms the timer for the next of those moments. */
static void expire(wh_metrics *m, int64_t now)
{
    int64_t next = 0;
    if (m->accept_paused_until_us) {
        if (now >= m->accept_paused_until_us) {
            m->accept_paused_until_us = 0;
            if (ep_ctl(m, EPOLL_CTL_MOD, m->lfd, EPOLLIN, TAG_LISTEN) != 0)
                WH_WARN("metrics: epoll_ctl() failed: %s", strerror(errno));
        } else {
            next = m->accept_paused_until_us;
        }
    }
    for (int i = 0; i < m->max_conns && m->nconns > 0; i++) {
        conn *c = &m->conns[i];
        if (c->state == CONN_FREE)
            continue;
        if (now >= c->deadline_us) {
            conn_close(m, c);
            continue;
        }
        if (!next || c->deadline_us < next)
            next = c->deadline_us;
    }
    if (next == m->timer_at_us)
        return;
    struct itimerspec its;
    memset(&its, 0, sizeof(its));
    if (next) { /* absolute CLOCK_MONOTONIC, as wh_mono_us */
        its.it_value.tv_sec = next / 1000000;
        its.it_value.tv_nsec = (long)(next % 1000000) * 1000;
    }
    if (timerfd_settime(m->tfd, TFD_TIMER_ABSTIME, &its, NULL) == 0)
        m->timer_at_us = next;
}

void wh_metrics_serve(wh_metrics *m)
{
    if (!m)
        return;
    struct epoll_event ev[EVENTS_MAX];
    int n = epoll_wait(m->ep, ev, EVENTS_MAX, 0);
    int64_t now = wh_mono_us();
    for (int i = 0; i < n; i++) {
        uint64_t tag = ev[i].data.u64;
        if (tag == TAG_LISTEN) {
            accept_all(m, now);
        } else if (tag == TAG_TIMER) {
            uint64_t expirations;
            WH_IGNORE(read(m->tfd, &expirations, sizeof(expirations)) < 0);
            m->timer_at_us = 0; /* fired: re-armed by expire */
        } else {
            assert(tag - TAG_CONN < (uint64_t)m->max_conns);
            conn_event(m, &m->conns[tag - TAG_CONN]);
        }
    }
    expire(m, now);
}
