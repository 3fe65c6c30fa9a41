/*
 * test_metrics.c - unit tests of lib/metrics.c through real sockets on
 * 127.0.0.1: listen addresses, the series registry and its checks, the
 * exposition format, the probes, HTTP errors, the request size limit, the
 * connection cap and the connection timeout.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "metrics.h"
#include "test.h"

#define RESP_MAX (256 * 1024)

static wh_metrics *server(int max_conns, int64_t timeout_ms)
{
    char err[WH_ERRLEN] = "";
    wh_metrics *m = NULL;
    wh_metrics_conf conf = {.listen = "127.0.0.1:0",
                            .max_connections = max_conns,
                            .timeout_ms = timeout_ms};
    int rc = wh_metrics_new(&conf, &m, err, sizeof(err));
    CHECK_INT(rc, WH_OK);
    if (rc != WH_OK) {
        fprintf(stderr, "wh_metrics_new: %s\n", err);
        exit(1);
    }
    return m;
}

static int connect_to(const wh_metrics *m)
{
    const char *addr = wh_metrics_address(m), *colon = strrchr(addr, ':');
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)atoi(colon + 1))};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        perror("connect");
        exit(1);
    }
    return fd;
}

static void send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) {
            perror("send");
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

/* Serves m while reading fd until the server closes it or limit_ms pass;
 * returns the bytes read into out (NUL-terminated). */
static size_t read_answer(wh_metrics *m, int fd, char *out, size_t outmax,
                          int limit_ms)
{
    size_t len = 0;
    int64_t until = wh_mono_us() + limit_ms * 1000LL;
    while (wh_mono_us() < until) {
        wh_metrics_serve(m);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 5) <= 0)
            continue;
        ssize_t n = recv(fd, out + len, outmax - 1 - len, MSG_DONTWAIT);
        if (n > 0) {
            len += (size_t)n;
            if (len == outmax - 1)
                break;
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
            break;
        }
    }
    out[len] = '\0';
    return len;
}

/* One request on a new connection; the whole answer lands in out. */
static size_t exchange(wh_metrics *m, const char *req, size_t reqlen,
                       char *out, size_t outmax)
{
    int fd = connect_to(m);
    send_all(fd, req, reqlen);
    size_t n = read_answer(m, fd, out, outmax, 3000);
    close(fd);
    return n;
}

static int status_of(const char *resp)
{
    return strncmp(resp, "HTTP/1.1 ", 9) == 0 ? atoi(resp + 9) : -1;
}

static const char *body_of(const char *resp)
{
    const char *b = strstr(resp, "\r\n\r\n");
    return b ? b + 4 : "";
}

static char *get(wh_metrics *m, const char *path, int *status)
{
    static char resp[RESP_MAX];
    char req[512];
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.1\r\nHost: localhost\r\n"
                     "User-Agent: test\r\n\r\n", path);
    exchange(m, req, (size_t)n, resp, sizeof(resp));
    *status = status_of(resp);
    return resp;
}

static void test_disabled(void)
{
    char err[WH_ERRLEN];
    wh_metrics *m = (wh_metrics *)1;
    wh_metrics_conf conf = {.listen = NULL};
    CHECK_INT(wh_metrics_new(&conf, &m, err, sizeof(err)), WH_OK);
    CHECK(m == NULL);
    conf.listen = "";
    CHECK_INT(wh_metrics_new(&conf, &m, err, sizeof(err)), WH_OK);
    CHECK(m == NULL);
    int64_t v = 1;
    CHECK_INT(wh_metrics_add(NULL, WH_METRIC_GAUGE, "x", NULL, "x", &v, err,
                             sizeof(err)),
              WH_OK);
    CHECK_INT(wh_metrics_fd(NULL), -1);
    CHECK_STR(wh_metrics_address(NULL), "");
    wh_metrics_set_ready(NULL, true, NULL);
    wh_metrics_serve(NULL);
    wh_metrics_destroy(NULL);
}

static void test_listen_addresses(void)
{
    const char *bad[] = {"nonsense",        "127.0.0.1",       "127.0.0.1:",
                         "127.0.0.1:65536", "127.0.0.1:80x",   "127.0.0.1:-1",
                         "127.0.0.1:123456", "[::1",           "[::1]80",
                         "::1:80",          "127.0.0.1: 80"};
    char err[WH_ERRLEN];
    for (size_t i = 0; i < WH_ARRAY_LEN(bad); i++) {
        wh_metrics *m = NULL;
        wh_metrics_conf conf = {.listen = bad[i]};
        err[0] = '\0';
        CHECK_INT(wh_metrics_new(&conf, &m, err, sizeof(err)), WH_ERR);
        CHECK(m == NULL);
        CHECK(strstr(err, "metrics address") != NULL);
    }
    wh_metrics *m = NULL;
    wh_metrics_conf conf = {.listen = "127.0.0.1:0", .max_connections = -1};
    CHECK_INT(wh_metrics_new(&conf, &m, err, sizeof(err)), WH_ERR);
    conf.max_connections = WH_METRICS_CONN_MAX + 1;
    CHECK_INT(wh_metrics_new(&conf, &m, err, sizeof(err)), WH_ERR);

    /* port 0: a free port, reported by wh_metrics_address */
    m = server(0, 0);
    const char *addr = wh_metrics_address(m);
    CHECK(strncmp(addr, "127.0.0.1:", 10) == 0);
    CHECK(atoi(addr + 10) > 0);
    CHECK(wh_metrics_fd(m) >= 0);
    /* the same port again is refused */
    char again[64];
    snprintf(again, sizeof(again), "%s", addr);
    wh_metrics *m2 = NULL;
    conf = (wh_metrics_conf){.listen = again};
    CHECK_INT(wh_metrics_new(&conf, &m2, err, sizeof(err)), WH_ERR);
    CHECK(strstr(err, "cannot listen") != NULL);
    CHECK(m2 == NULL);
    wh_metrics_destroy(m);

    /* IPv6, where the host has it */
    conf = (wh_metrics_conf){.listen = "[::1]:0"};
    if (wh_metrics_new(&conf, &m, err, sizeof(err)) == WH_OK) {
        CHECK(strncmp(wh_metrics_address(m), "[::1]:", 6) == 0);
        wh_metrics_destroy(m);
    }

    /* every interface */
    conf = (wh_metrics_conf){.listen = ":0"};
    CHECK_INT(wh_metrics_new(&conf, &m, err, sizeof(err)), WH_OK);
    addr = wh_metrics_address(m);
    CHECK(strncmp(addr, "0.0.0.0:", 8) == 0 || strncmp(addr, "[::]:", 5) == 0);
    wh_metrics_destroy(m);
}

static void test_registry_checks(void)
{
    char err[WH_ERRLEN];
    int64_t v = 0;
    wh_metrics *m = server(0, 0);
#define ADD(type, name, labels, help)                                       \
    wh_metrics_add(m, type, name, labels, help, &v, err, sizeof(err))
    CHECK_INT(ADD(WH_METRIC_GAUGE, "", NULL, "h"), WH_ERR);
    CHECK_INT(ADD(WH_METRIC_GAUGE, "1abc", NULL, "h"), WH_ERR);
    CHECK_INT(ADD(WH_METRIC_GAUGE, "a-b", NULL, "h"), WH_ERR);
    CHECK_INT(ADD(WH_METRIC_GAUGE, "a b", NULL, "h"), WH_ERR);
    CHECK_INT(ADD(WH_METRIC_GAUGE, "ns:sub_name", NULL, "h"), WH_OK);
    CHECK_INT(ADD(WH_METRIC_COUNTER, "requests", NULL, "h"), WH_ERR);
    CHECK(strstr(err, "_total") != NULL);
    CHECK_INT(ADD(WH_METRIC_COUNTER, "x_total", NULL, NULL), WH_ERR);

    char name[WH_METRICS_NAME_MAX + 2];
    memset(name, 'n', sizeof(name) - 1);
    name[WH_METRICS_NAME_MAX + 1] = '\0';
    CHECK_INT(ADD(WH_METRIC_GAUGE, name, NULL, "h"), WH_ERR);
    name[WH_METRICS_NAME_MAX] = '\0';
    CHECK_INT(ADD(WH_METRIC_GAUGE, name, NULL, "h"), WH_OK);

    char help[WH_METRICS_HELP_MAX + 2];
    memset(help, 'h', sizeof(help) - 1);
    help[WH_METRICS_HELP_MAX + 1] = '\0';
    CHECK_INT(ADD(WH_METRIC_GAUGE, "long_help", NULL, help), WH_ERR);
    help[WH_METRICS_HELP_MAX] = '\0';
    CHECK_INT(ADD(WH_METRIC_GAUGE, "long_help", NULL, help), WH_OK);

    const char *bad_labels[] = {"k",      "=v",         "__k=v",
                                "1k=v",   "k=v,",       "k=v,,j=w",
                                "k-x=v",  "k=v,k=w",    "a=1,b=2,c=3,d=4,e=5,"
                                                         "f=6,g=7,h=8,i=9"};
    for (size_t i = 0; i < WH_ARRAY_LEN(bad_labels); i++) {
        CHECK_INT(ADD(WH_METRIC_GAUGE, "labelled", bad_labels[i], "h"),
                  WH_ERR);
    }
    CHECK_INT(ADD(WH_METRIC_GAUGE, "labelled", "a=1,b=2,c=3,d=4,e=5,f=6,g=7,"
                                               "h=8", "h"),
              WH_OK);
    char labels[WH_METRICS_LABELS_MAX + 8];
    /* {k="...."} is 6 bytes around the value */
    memcpy(labels, "k=", 2);
    memset(labels + 2, 'v', WH_METRICS_LABELS_MAX - 5);
    labels[WH_METRICS_LABELS_MAX - 3] = '\0';
    CHECK_INT(ADD(WH_METRIC_GAUGE, "long_labels", labels, "h"), WH_ERR);
    labels[WH_METRICS_LABELS_MAX - 4] = '\0';
    CHECK_INT(ADD(WH_METRIC_GAUGE, "long_labels", labels, "h"), WH_OK);

    /* families agree; a series exists once */
    CHECK_INT(ADD(WH_METRIC_COUNTER, "fam_total", "k=a", "help"), WH_OK);
    CHECK_INT(ADD(WH_METRIC_COUNTER, "fam_total", "k=a", "help"), WH_ERR);
    CHECK(strstr(err, "twice") != NULL);
    CHECK_INT(ADD(WH_METRIC_COUNTER, "fam_total", "k=b", "other help"),
              WH_ERR);
    CHECK_INT(ADD(WH_METRIC_GAUGE, "ns:sub_name", "k=b", "h"), WH_OK);
    CHECK_INT(ADD(WH_METRIC_COUNTER, "ns:sub_name", "k=c", "h"), WH_ERR);
    CHECK_INT(ADD(WH_METRIC_COUNTER, "fam_total", "k=b", "help"), WH_OK);
    wh_metrics_destroy(m);

    /* the series limit */
    m = server(0, 0);
    int rc = WH_OK;
    size_t i = 0;
    for (; rc == WH_OK && i <= WH_METRICS_SERIES_MAX; i++) {
        snprintf(name, sizeof(name), "s%zu_total", i);
        rc = ADD(WH_METRIC_COUNTER, name, NULL, "h");
    }
    CHECK_INT(rc, WH_ERR);
    CHECK_INT(i, WH_METRICS_SERIES_MAX + 1);
    CHECK(strstr(err, "series") != NULL);
#undef ADD
    wh_metrics_destroy(m);
}

static double half(void *opaque)
{
    return *(const double *)opaque / 2;
}

static double special(void *opaque)
{
    switch (*(const int *)opaque) {
    case 0: return NAN;
    case 1: return INFINITY;
    default: return -INFINITY;
    }
}

static void test_exposition(void)
{
    char err[WH_ERRLEN];
    wh_metrics *m = server(0, 0);
    int64_t ok = 3, failed = 1, big = INT64_MAX, neg = -7;
    double three = 3.0, tenth = 0.2, large = 1e21;
    int nan = 0, inf = 1, ninf = 2;
    CHECK_INT(wh_metrics_add(m, WH_METRIC_COUNTER, "t_deliveries_total",
                             "outcome=succeeded", "Deliveries by outcome.",
                             &ok, err, sizeof(err)),
              WH_OK);
    CHECK_INT(wh_metrics_add_fn(m, WH_METRIC_GAUGE, "t_ratio", NULL,
                                "A ratio \\ with\na newline.", half, &three,
                                err, sizeof(err)),
              WH_OK);
    /* another series of the first family, registered later */
    CHECK_INT(wh_metrics_add(m, WH_METRIC_COUNTER, "t_deliveries_total",
                             "outcome=failed", "Deliveries by outcome.",
                             &failed, err, sizeof(err)),
              WH_OK);
    CHECK_INT(wh_metrics_add(m, WH_METRIC_GAUGE, "t_int", "a=x y,b=q\"u\\o\n",
                             "Integers.", &big, err, sizeof(err)),
              WH_OK);
    CHECK_INT(wh_metrics_add(m, WH_METRIC_GAUGE, "t_int", "a=neg", "Integers.",
                             &neg, err, sizeof(err)),
              WH_OK);
    CHECK_INT(wh_metrics_add_fn(m, WH_METRIC_GAUGE, "t_double", "v=tenth",
                                "Doubles.", half, &tenth, err, sizeof(err)),
              WH_OK);
    CHECK_INT(wh_metrics_add_fn(m, WH_METRIC_GAUGE, "t_double", "v=large",
                                "Doubles.", half, &large, err, sizeof(err)),
              WH_OK);
    CHECK_INT(wh_metrics_add_fn(m, WH_METRIC_GAUGE, "t_double", "v=nan",
                                "Doubles.", special, &nan, err, sizeof(err)),
              WH_OK);
    CHECK_INT(wh_metrics_add_fn(m, WH_METRIC_GAUGE, "t_double", "v=inf",
                                "Doubles.", special, &inf, err, sizeof(err)),
              WH_OK);
    CHECK_INT(wh_metrics_add_fn(m, WH_METRIC_GAUGE, "t_double", "v=ninf",
                                "Doubles.", special, &ninf, err, sizeof(err)),
              WH_OK);
    int status;
    const char *resp = get(m, "/metrics", &status);
    CHECK_INT(status, 200);
    CHECK(strstr(resp, "\r\nContent-Type: text/plain; version=0.0.4; "
                       "charset=utf-8\r\n") != NULL);
    CHECK(strstr(resp, "\r\nConnection: close\r\n") != NULL);
    const char *want =
        "# HELP t_deliveries_total Deliveries by outcome.\n"
        "# TYPE t_deliveries_total counter\n"
        "t_deliveries_total{outcome=\"succeeded\"} 3\n"
        "t_deliveries_total{outcome=\"failed\"} 1\n"
        "# HELP t_ratio A ratio \\\\ with\\na newline.\n"
        "# TYPE t_ratio gauge\n"
        "t_ratio 1.5\n"
        "# HELP t_int Integers.\n"
        "# TYPE t_int gauge\n"
        "t_int{a=\"x y\",b=\"q\\\"u\\\\o\\n\"} 9223372036854775807\n"
        "t_int{a=\"neg\"} -7\n"
        "# HELP t_double Doubles.\n"
        "# TYPE t_double gauge\n"
        "t_double{v=\"tenth\"} 0.1\n"
        "t_double{v=\"large\"} 5e+20\n"
        "t_double{v=\"nan\"} NaN\n"
        "t_double{v=\"inf\"} +Inf\n"
        "t_double{v=\"ninf\"} -Inf\n";
    CHECK_STR(body_of(resp), want);
    char clen[64];
    snprintf(clen, sizeof(clen), "\r\nContent-Length: %zu\r\n", strlen(want));
    CHECK(strstr(resp, clen) != NULL);

    /* values are read at each scrape */
    ok = 10;
    three = 5;
    resp = get(m, "/metrics", &status);
    CHECK(strstr(body_of(resp), "t_deliveries_total{outcome=\"succeeded\"} "
                                "10\n") != NULL);
    CHECK(strstr(body_of(resp), "\nt_ratio 2.5\n") != NULL);

    /* HEAD: same headers, no body */
    static char head[RESP_MAX];
    const char req[] = "HEAD /metrics HTTP/1.1\r\n\r\n";
    exchange(m, req, sizeof(req) - 1, head, sizeof(head));
    CHECK_INT(status_of(head), 200);
    CHECK_STR(body_of(head), "");
    snprintf(clen, sizeof(clen), "\r\nContent-Length: %zu\r\n",
             strlen(body_of(resp)));
    CHECK(strstr(head, clen) != NULL);
    wh_metrics_destroy(m);
}

/* The series every program exports; no database connection: both read 0. */
static void test_process_series(void)
{
    wh_metrics *m = server(4, 1000);
    char err[256];
    int64_t started = wh_mono_us() - 2500000;
    struct wh_db *none = NULL;
    CHECK(wh_metrics_add_process(m, "prog", "program", &started, &none,
                                 &none, err, sizeof(err)) == WH_OK);
    int status;
    const char *body = body_of(get(m, "/metrics", &status));
    CHECK_INT(status, 200);
    CHECK(strstr(body, "# HELP prog_uptime_seconds Seconds since the "
                       "program started.\n# TYPE prog_uptime_seconds gauge\n"
                       "prog_uptime_seconds 2.") != NULL);
    CHECK(strstr(body, "# TYPE prog_kafka_data_loss_total counter\n"
                       "prog_kafka_data_loss_total 0\n") != NULL);
    CHECK(strstr(body, "prog_database_connected{connection=\"main\"} 0\n"
                       "prog_database_connected{connection=\"listen\"} 0\n")
          != NULL);
    /* registering them twice is refused */
    CHECK(wh_metrics_add_process(m, "prog", "program", &started, &none,
                                 &none, err, sizeof(err)) == WH_ERR);
    wh_metrics_destroy(m);
}

static void test_probes(void)
{
    wh_metrics *m = server(0, 0);
    int status;
    const char *resp = get(m, "/healthz", &status);
    CHECK_INT(status, 200);
    CHECK_STR(body_of(resp), "ok\n");
    resp = get(m, "/readyz", &status);
    CHECK_INT(status, 503);
    CHECK_STR(body_of(resp), "not ready: starting\n");
    wh_metrics_set_ready(m, true, NULL);
    resp = get(m, "/readyz", &status);
    CHECK_INT(status, 200);
    CHECK_STR(body_of(resp), "ready\n");
    wh_metrics_set_ready(m, false, "database connection lost");
    resp = get(m, "/readyz", &status);
    CHECK_INT(status, 503);
    CHECK_STR(body_of(resp), "not ready: database connection lost\n");
    wh_metrics_set_ready(m, false, NULL);
    resp = get(m, "/readyz", &status);
    CHECK_STR(body_of(resp), "not ready: not ready\n");
    /* a long reason is cut */
    char reason[WH_METRICS_REASON_MAX + 100];
    memset(reason, 'r', sizeof(reason) - 1);
    reason[sizeof(reason) - 1] = '\0';
    wh_metrics_set_ready(m, false, reason);
    resp = get(m, "/readyz", &status);
    CHECK_INT(status, 503);
    CHECK_INT(strlen(body_of(resp)), strlen("not ready: \n") +
                                         WH_METRICS_REASON_MAX);
    /* healthz is independent of readiness */
    resp = get(m, "/healthz?probe=1", &status);
    CHECK_INT(status, 200);
    wh_metrics_destroy(m);
}

static void test_http_errors(void)
{
    static char resp[RESP_MAX];
    wh_metrics *m = server(0, 0);
    int status;
    get(m, "/", &status);
    CHECK_INT(status, 404);
    get(m, "/metricsx", &status);
    CHECK_INT(status, 404);
    get(m, "/metrics/", &status);
    CHECK_INT(status, 404);
    get(m, "/metrics?name[]=x", &status);
    CHECK_INT(status, 200);

    const struct {
        const char *req;
        int status;
    } cases[] = {
        {"POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi", 405},
        {"DELETE /healthz HTTP/1.1\r\n\r\n", 405},
        {"get /metrics HTTP/1.1\r\n\r\n", 405},
        {"GET /metrics HTTP/1.0\r\n\r\n", 200},
        {"GET /healthz HTTP/1.1\n\n", 200},
        {"GET /healthz HTTP/1.1\r\nHost: x\n\r\n", 200},
        {"HELLO\r\n\r\n", 400},
        {"GET /metrics\r\n\r\n", 400},
        {"GET /metrics HTTP/2.0\r\n\r\n", 400},
        {"GET  /metrics HTTP/1.1\r\n\r\n", 400},
        {"GET metrics HTTP/1.1\r\n\r\n", 400},
        {"GET /metrics HTTP/1.1 x\r\n\r\n", 400},
        {"\r\n\r\n", 400},
    };
    for (size_t i = 0; i < WH_ARRAY_LEN(cases); i++) {
        exchange(m, cases[i].req, strlen(cases[i].req), resp, sizeof(resp));
        CHECK_INT(status_of(resp), cases[i].status);
        if (status_of(resp) != cases[i].status)
            fprintf(stderr, "  request %zu: %s\n", i, cases[i].req);
        if (cases[i].status == 405)
            CHECK(strstr(resp, "\r\nAllow: GET, HEAD\r\n") != NULL);
    }
    /* a NUL in the request line (after the version, in the target) */
    static const char nul_version[] = "GET /metrics HTTP/1.1\0x\r\n\r\n";
    static const char nul_target[] = "GET /metrics\0/x HTTP/1.1\r\n\r\n";
    exchange(m, nul_version, sizeof(nul_version) - 1, resp, sizeof(resp));
    CHECK_INT(status_of(resp), 400);
    exchange(m, nul_target, sizeof(nul_target) - 1, resp, sizeof(resp));
    CHECK_INT(status_of(resp), 400);

    /* a request in pieces */
    int fd = connect_to(m);
    send_all(fd, "GET /hea", 8);
    for (int i = 0; i < 5; i++) {
        wh_metrics_serve(m);
        usleep(2000);
    }
    send_all(fd, "lthz HTTP/1.1\r\n", 15);
    wh_metrics_serve(m);
    send_all(fd, "\r\n", 2);
    read_answer(m, fd, resp, sizeof(resp), 3000);
    close(fd);
    CHECK_INT(status_of(resp), 200);
    CHECK_STR(body_of(resp), "ok\n");

    /* a client that leaves before sending a whole request */
    fd = connect_to(m);
    send_all(fd, "GET /", 5);
    close(fd);
    for (int i = 0; i < 5; i++) {
        wh_metrics_serve(m);
        usleep(2000);
    }
    get(m, "/healthz", &status);
    CHECK_INT(status, 200);
    wh_metrics_destroy(m);
}

static void test_request_limit(void)
{
    static char req[WH_METRICS_REQUEST_MAX + 4096], resp[RESP_MAX];
    wh_metrics *m = server(0, 0);
    /* exactly WH_METRICS_REQUEST_MAX bytes, ending the header block */
    const char *start = "GET /healthz HTTP/1.1\r\nX-Pad: ";
    size_t n = strlen(start);
    memcpy(req, start, n);
    memset(req + n, 'p', WH_METRICS_REQUEST_MAX - n - 4);
    memcpy(req + WH_METRICS_REQUEST_MAX - 4, "\r\n\r\n", 4);
    exchange(m, req, WH_METRICS_REQUEST_MAX, resp, sizeof(resp));
    CHECK_INT(status_of(resp), 200);
    /* one byte more */
    memset(req + n, 'p', WH_METRICS_REQUEST_MAX - n - 3);
    memcpy(req + WH_METRICS_REQUEST_MAX - 3, "\r\n\r\n", 4);
    exchange(m, req, WH_METRICS_REQUEST_MAX + 1, resp, sizeof(resp));
    CHECK_INT(status_of(resp), 431);
    CHECK_STR(body_of(resp), "request too large\n");
    /* far more: the answer still arrives whole */
    memset(req + n, 'p', sizeof(req) - n);
    exchange(m, req, sizeof(req), resp, sizeof(resp));
    CHECK_INT(status_of(resp), 431);
    CHECK_STR(body_of(resp), "request too large\n");
    int status;
    get(m, "/healthz", &status);
    CHECK_INT(status, 200);
    wh_metrics_destroy(m);
}

/* True when fd was closed by the server without an answer. */
static bool closed_silently(wh_metrics *m, int fd, int limit_ms)
{
    char buf[64];
    return read_answer(m, fd, buf, sizeof(buf), limit_ms) == 0;
}

static void test_connection_limits(void)
{
    static char resp[RESP_MAX];
    wh_metrics *m = server(2, 300);
    int a = connect_to(m), b = connect_to(m);
    for (int i = 0; i < 10; i++) {
        wh_metrics_serve(m);
        usleep(1000);
    }
    /* a third connection is closed at once */
    int c = connect_to(m);
    int64_t t0 = wh_mono_us();
    CHECK(closed_silently(m, c, 1000));
    CHECK(wh_mono_us() - t0 < 200 * 1000);
    close(c);
    /* the first two still work */
    const char req[] = "GET /healthz HTTP/1.1\r\n\r\n";
    send_all(a, req, sizeof(req) - 1);
    read_answer(m, a, resp, sizeof(resp), 1000);
    CHECK_INT(status_of(resp), 200);
    close(a);

    /* b sends nothing: closed at its deadline, woken by the server's fd
     * alone (no other activity) */
    int64_t deadline = t0 + 2000 * 1000;
    bool woke = false;
    while (wh_mono_us() < deadline) {
        struct pollfd p = {.fd = wh_metrics_fd(m), .events = POLLIN};
        if (poll(&p, 1, 100) > 0) {
            wh_metrics_serve(m);
            struct pollfd q = {.fd = b, .events = POLLIN};
            if (poll(&q, 1, 0) > 0) {
                woke = true;
                break;
            }
        }
    }
    CHECK(woke);
    int64_t waited = wh_mono_us() - t0;
    CHECK(waited >= 200 * 1000 && waited < 1500 * 1000);
    CHECK(closed_silently(m, b, 100));
    close(b);

    /* a slow sender is cut off at the same deadline */
    int s = connect_to(m);
    send_all(s, "GET /healthz HTTP/1.1\r\n", 23);
    t0 = wh_mono_us();
    CHECK(closed_silently(m, s, 2000));
    waited = wh_mono_us() - t0;
    CHECK(waited >= 200 * 1000 && waited < 1500 * 1000);
    close(s);

    /* room again */
    int status;
    get(m, "/healthz", &status);
    CHECK_INT(status, 200);
    wh_metrics_destroy(m);
}

/* The descriptor of this process whose peer is fd's local address: the
 * server's end of a connection to it. */
static int server_end(int fd)
{
    struct sockaddr_in me, peer;
    socklen_t len = sizeof(me);
    if (getsockname(fd, (struct sockaddr *)&me, &len) != 0)
        return -1;
    for (int i = 3; i < 1024; i++) {
        len = sizeof(peer);
        if (i != fd && getpeername(i, (struct sockaddr *)&peer, &len) == 0 &&
            peer.sin_family == AF_INET && peer.sin_port == me.sin_port &&
            peer.sin_addr.s_addr == me.sin_addr.s_addr)
            return i;
    }
    return -1;
}

/* An answer larger than the socket buffers goes out in several writes
 * while the client is slow to read. */
static void test_large_answer(void)
{
    static char resp[RESP_MAX];
    char err[WH_ERRLEN], name[64], help[WH_METRICS_HELP_MAX + 1];
    int64_t v = 42;
    wh_metrics *m = server(0, 0);
    memset(help, 'h', WH_METRICS_HELP_MAX);
    help[WH_METRICS_HELP_MAX] = '\0';
    int rc = WH_OK;
    for (int i = 0; rc == WH_OK && i < WH_METRICS_SERIES_MAX; i++) {
        snprintf(name, sizeof(name), "big_%03d_total", i);
        rc = wh_metrics_add(m, WH_METRIC_COUNTER, name, "k=v", help, &v, err,
                            sizeof(err));
    }
    CHECK_INT(rc, WH_OK);

    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    const char *addr = wh_metrics_address(m);
    struct sockaddr_in sa = {
        .sin_family = AF_INET,
        .sin_port = htons((uint16_t)atoi(strrchr(addr, ':') + 1))};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    CHECK_INT(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    /* the server's end of the connection lives in this process: shrink
     * its send buffer too, so the answer cannot go out in one write */
    for (int i = 0; i < 10; i++) {
        wh_metrics_serve(m);
        usleep(1000);
    }
    int peer = server_end(fd);
    CHECK(peer >= 0);
    if (peer >= 0)
        setsockopt(peer, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    const char req[] = "GET /metrics HTTP/1.1\r\n\r\n";
    send_all(fd, req, sizeof(req) - 1);
    for (int i = 0; i < 20; i++) { /* the server fills the buffers */
        wh_metrics_serve(m);
        usleep(1000);
    }
    size_t n = read_answer(m, fd, resp, sizeof(resp), 5000);
    close(fd);
    CHECK_INT(status_of(resp), 200);
    const char *body = body_of(resp);
    size_t want = (size_t)WH_METRICS_SERIES_MAX *
                  (strlen("# HELP big_000_total \n") + WH_METRICS_HELP_MAX +
                   strlen("# TYPE big_000_total counter\n") +
                   strlen("big_000_total{k=\"v\"} 42\n"));
    CHECK_INT(strlen(body), want);
    CHECK(n > 40 * 1000);
    char clen[64];
    snprintf(clen, sizeof(clen), "\r\nContent-Length: %zu\r\n", want);
    CHECK(strstr(resp, clen) != NULL);
    CHECK(strstr(body, "big_127_total{k=\"v\"} 42\n") != NULL);
    wh_metrics_destroy(m);
}

/* Out of descriptors: accepting pauses instead of spinning, and resumes. */
static void test_accept_pause(void)
{
    static char resp[RESP_MAX];
    wh_metrics *m = server(0, 0);
    int c = connect_to(m);
    const char req[] = "GET /healthz HTTP/1.1\r\n\r\n";
    send_all(c, req, sizeof(req) - 1);
    struct rlimit saved, low;
    CHECK_INT(getrlimit(RLIMIT_NOFILE, &saved), 0);
    int lowest = dup(0);
    close(lowest);
    low = saved;
    low.rlim_cur = (rlim_t)lowest;
    CHECK_INT(setrlimit(RLIMIT_NOFILE, &low), 0);
    wh_metrics_serve(m); /* accept() fails with EMFILE */
    struct pollfd p = {.fd = wh_metrics_fd(m), .events = POLLIN};
    CHECK_INT(poll(&p, 1, 200), 0); /* not readable: nothing spins */
    CHECK_INT(setrlimit(RLIMIT_NOFILE, &saved), 0);
    int64_t t0 = wh_mono_us();
    read_answer(m, c, resp, sizeof(resp), 3000);
    close(c);
    CHECK_INT(status_of(resp), 200);
    CHECK(wh_mono_us() - t0 >= 500 * 1000); /* resumed by the timer */
    wh_metrics_destroy(m);
}

/* Many requests in a row: connections are recycled. */
static void test_many_requests(void)
{
    wh_metrics *m = server(2, 0);
    int64_t v = 0;
    char err[WH_ERRLEN];
    CHECK_INT(wh_metrics_add(m, WH_METRIC_COUNTER, "n_total", NULL, "n", &v,
                             err, sizeof(err)),
              WH_OK);
    int good = 0;
    for (int i = 0; i < 200; i++) {
        int status;
        v = i;
        const char *resp = get(m, "/metrics", &status);
        char want[64];
        snprintf(want, sizeof(want), "\nn_total %d\n", i);
        good += status == 200 && strstr(resp, want) != NULL;
    }
    CHECK_INT(good, 200);
    wh_metrics_destroy(m);
}

TEST_MAIN(test_disabled, test_listen_addresses, test_registry_checks,
          test_exposition, test_process_series, test_probes, test_http_errors, test_request_limit,
          test_connection_limits, test_large_answer, test_accept_pause,
          test_many_requests)
