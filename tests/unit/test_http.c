/*
 * test_http.c - unit tests for lib/http.c against a small HTTP/1.1 server
 * on loopback (a thread of this test): keep-alive reuse, a kept-alive
 * connection the server closes while idle, more requests than the
 * per-host connection limit, how far a response body is read (the
 * snippet, the drain bound, a 100 MB body), and the low-speed limit.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http.h"
#include "test.h"
#include "url.h"

/* ---- the server: answers by path, keeps connections alive and closes
 * one after idle_ms without a request ---------------------------------
 *
 *   /hook          204 No Content
 *   /empty         200 with an empty body
 *   /big/N         200 with an N-byte body (Content-Length)
 *   /big500/N      500 with an N-byte body (Content-Length)
 *   /chunked/N     200 with an N-byte chunked body
 *   /slowheaders   200, then one header line every 200 ms
 *   /trickle       200, then 10 bytes of body every 100 ms
 *   /steady        200, 6000 bytes of body at 2000 bytes/s
 *   /stall         200, 5 bytes of a 1000-byte body, then nothing
 *   /think/MS      waits MS milliseconds, then 200 "ok"
 *   /noread        reads the request's headers but not its body
 *
 * Bodies are the pattern 'a' + i % 26. For /big and /chunked the server
 * records how many body bytes it got written before the client closed. */

static int srv_fd;
static int srv_port;
static int idle_ms = 150;
static atomic_int accepted, answered, stopping;
static atomic_llong body_written; /* by the last /big or /chunked */
static atomic_int body_closed;    /* ... which the client closed early */
static atomic_int body_finished;  /* ... which ended either way */

static char pattern_at(size_t i) { return (char)('a' + i % 26); }

static int send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int send_str(int fd, const char *s)
{
    return send_all(fd, s, strlen(s));
}

/* Sends n pattern bytes, chunked or not; counts them in body_written.
 * -1 when the client closed the connection first. */
static int send_body(int fd, size_t n, int chunked)
{
    static char chunk[64 * 1024];
    size_t sent = 0;
    atomic_store(&body_written, 0);
    atomic_store(&body_closed, 0);
    atomic_store(&body_finished, 0);
    int rc = 0;
    while (sent < n && rc == 0) {
        size_t k = n - sent < sizeof(chunk) ? n - sent : sizeof(chunk);
        for (size_t i = 0; i < k; i++)
            chunk[i] = pattern_at(sent + i);
        char size_line[32];
        snprintf(size_line, sizeof(size_line), "%zx\r\n", k);
        if ((chunked && send_str(fd, size_line) != 0) ||
            send_all(fd, chunk, k) != 0 ||
            (chunked && send_str(fd, "\r\n") != 0))
            rc = -1;
        else
            sent += k;
        atomic_store(&body_written, (long long)sent);
    }
    if (rc == 0 && chunked && send_str(fd, "0\r\n\r\n") != 0)
        rc = -1;
    atomic_store(&body_closed, rc != 0);
    atomic_store(&body_finished, 1);
    return rc;
}

/* Waits for the client to close fd (or for stopping, or 10 s). */
static void wait_closed(int fd)
{
    char b[4096];
    for (int i = 0; i < 100 && !atomic_load(&stopping); i++) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 100) > 0 && read(fd, b, sizeof(b)) <= 0)
            return;
    }
}

/* Answers one request for path; -1 closes the connection. */
static int answer(int fd, const char *path)
{
    char head[256];
    unsigned long n;
    if (strcmp(path, "/empty") == 0)
        return send_str(fd, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    if (sscanf(path, "/big/%lu", &n) == 1) {
        snprintf(head, sizeof(head),
                 "HTTP/1.1 200 OK\r\nContent-Length: %lu\r\n\r\n", n);
        return send_str(fd, head) ? -1 : send_body(fd, n, 0);
    }
    if (sscanf(path, "/big500/%lu", &n) == 1) {
        snprintf(head, sizeof(head),
                 "HTTP/1.1 500 Internal Server Error\r\n"
                 "Content-Length: %lu\r\n\r\n", n);
        return send_str(fd, head) ? -1 : send_body(fd, n, 0);
    }
    if (strcmp(path, "/slowheaders") == 0) {
        if (send_str(fd, "HTTP/1.1 200 OK\r\n"))
            return -1;
        for (int i = 0; i < 100 && !atomic_load(&stopping); i++) {
            if (send_str(fd, "X-Slow: 1\r\n") != 0)
                break;
            usleep(200 * 1000);
        }
        return -1;
    }
    if (sscanf(path, "/chunked/%lu", &n) == 1)
        return send_str(fd, "HTTP/1.1 200 OK\r\n"
                            "Transfer-Encoding: chunked\r\n\r\n")
                   ? -1
                   : send_body(fd, n, 1);
    if (strcmp(path, "/trickle") == 0) {
        if (send_str(fd, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"))
            return -1;
        for (int i = 0; i < 1000 && !atomic_load(&stopping); i++) {
            if (send_str(fd, "tricklings") != 0)
                break;
            usleep(100 * 1000);
        }
        return -1;
    }
    if (strcmp(path, "/steady") == 0) {
        if (send_str(fd, "HTTP/1.1 200 OK\r\nContent-Length: 6000\r\n\r\n"))
            return -1;
        char part[200];
        for (size_t i = 0; i < sizeof(part); i++)
            part[i] = pattern_at(i);
        for (int i = 0; i < 30; i++) {
            if (send_all(fd, part, sizeof(part)) != 0)
                return -1;
            usleep(100 * 1000);
        }
        return 0;
    }
    if (strcmp(path, "/stall") == 0) {
        if (send_str(fd, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
                         "stall") == 0)
            wait_closed(fd);
        return -1;
    }
    if (sscanf(path, "/think/%lu", &n) == 1) {
        usleep((useconds_t)n * 1000);
        return send_str(fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    }
    static const char ok[] = "HTTP/1.1 204 No Content\r\n\r\n";
    return send_str(fd, ok);
}

static void *serve_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[8192];
    size_t have = 0;
    for (;;) {
        char *end = have ? memmem(buf, have, "\r\n\r\n", 4) : NULL;
        if (end) {
            size_t head = (size_t)(end + 4 - buf), body = 0;
            char *cl = memmem(buf, head, "Content-Length:", 15);
            if (cl)
                body = (size_t)strtoul(cl + 15, NULL, 10);
            char path[128] = "";
            sscanf(buf, "%*s %127s", path);
            if (strcmp(path, "/noread") == 0) {
                /* until the client hangs up, reading nothing */
                for (int i = 0; i < 100 && !atomic_load(&stopping); i++) {
                    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
                    if (poll(&p, 1, 100) > 0)
                        break;
                }
                break;
            }
            /* the body: what is buffered, then read and dropped */
            size_t inbuf = have - head;
            size_t used = inbuf < body ? inbuf : body;
            size_t left = body - used;
            memmove(buf, buf + head + used, have - head - used);
            have -= head + used;
            while (left > 0) {
                char drop[65536];
                struct pollfd p = {.fd = fd, .events = POLLIN};
                if (poll(&p, 1, 5000) <= 0)
                    goto out;
                ssize_t n = read(fd, drop, left < sizeof(drop) ? left
                                                             : sizeof(drop));
                if (n <= 0)
                    goto out;
                left -= (size_t)n;
            }
            int rc = answer(fd, path);
            atomic_fetch_add(&answered, 1);
            if (rc != 0)
                break;
            continue;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (have == sizeof(buf) || poll(&p, 1, idle_ms) <= 0 ||
            atomic_load(&stopping))
            break; /* idle: close it */
        ssize_t n = read(fd, buf + have, sizeof(buf) - have);
        if (n <= 0)
            break;
        have += (size_t)n;
    }
out:
    close(fd);
    return NULL;
}

static void *serve(void *arg)
{
    (void)arg;
    for (;;) {
        int fd = accept(srv_fd, NULL, NULL);
        if (fd < 0 || atomic_load(&stopping)) {
            if (fd >= 0)
                close(fd);
            return NULL;
        }
        atomic_fetch_add(&accepted, 1);
        pthread_t t;
        if (pthread_create(&t, NULL, serve_conn, (void *)(intptr_t)fd) == 0)
            pthread_detach(t);
        else
            close(fd);
    }
}

static pthread_t srv_thread;

static void server_start(void)
{
    atomic_store(&stopping, 0);
    srv_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (bind(srv_fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        listen(srv_fd, 64) != 0 ||
        getsockname(srv_fd, (struct sockaddr *)&a, &len) != 0) {
        perror("test server");
        exit(1);
    }
    srv_port = ntohs(a.sin_port);
    pthread_create(&srv_thread, NULL, serve, NULL);
}

static void server_stop(void)
{
    atomic_store(&stopping, 1);
    shutdown(srv_fd, SHUT_RDWR);
    pthread_join(srv_thread, NULL);
    close(srv_fd);
}

/* ---- the client side ------------------------------------------------- */

static int done_n, done_204, quiet;

static void on_done(wh_http_req *req, void *opaque)
{
    (void)opaque;
    done_n++;
    if (req->status == 204)
        done_204++;
    else if (!quiet)
        fprintf(stderr, "request: status %d, %s\n", req->status, req->error);
}

static const char *const hdrs[] = {"Content-Type: application/json", NULL};
static char url[64];

static void start(wh_http *h, wh_http_req *req)
{
    memset(req, 0, sizeof(*req));
    req->url = url;
    req->body = "{}";
    req->body_len = 2;
    req->headers = hdrs;
    req->timeout_ms = 5000;
    req->connect_timeout_ms = 5000;
    char err[256];
    CHECK_INT(wh_http_start(h, req, err, sizeof(err)), WH_OK);
}

/* Runs the loop until n more requests are done; returns its iterations. */
static int run_until(wh_http *h, int n)
{
    int target = done_n + n, loops = 0;
    while (done_n < target && loops < 100000) {
        wh_http_wait(h, NULL, NULL, 0, 100);
        wh_http_perform(h, on_done, NULL);
        loops++;
    }
    return loops;
}

static void test_keep_alive(void)
{
    server_start();
    wh_netlist *allow = NULL;
    char err[256];
    CHECK_INT(wh_netlist_parse("127.0.0.0/8", &allow, err, sizeof(err)),
              WH_OK);
    wh_http_conf conf = {.user_agent = "test", .allow = allow,
                         .max_host_connections = 4,
                         .max_connections = 16, .snippet_max = 64};
    wh_http *h = NULL;
    CHECK_INT(wh_http_new(&conf, &h, err, sizeof(err)), WH_OK);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/hook", srv_port);

    /* one request, then more over the same connection */
    wh_http_req req;
    for (int i = 0; i < 50; i++) {
        start(h, &req);
        run_until(h, 1);
    }
    CHECK_INT(done_204, 50);
    CHECK_INT(atomic_load(&accepted), 1);

    /* The server closes the idle connection. The loop notices without
     * spinning on it: a few iterations of its 100 ms wait, not thousands. */
    int loops = 0;
    for (int64_t until = wh_mono_us() + 4 * idle_ms * 1000;
         wh_mono_us() < until; loops++) {
        wh_http_wait(h, NULL, NULL, 0, 100);
        wh_http_perform(h, on_done, NULL);
    }
    CHECK(loops < 100);
    /* the next request gets a new connection */
    start(h, &req);
    run_until(h, 1);
    CHECK_INT(done_204, 51);
    CHECK_INT(atomic_load(&accepted), 2);

    /* 40 at once over at most 4 connections */
    wh_http_req many[40];
    for (int i = 0; i < 40; i++)
        start(h, &many[i]);
    run_until(h, 40);
    CHECK_INT(done_204, 91);
    CHECK(atomic_load(&accepted) <= 2 + 4);
    CHECK_INT(atomic_load(&answered), 91);
    CHECK_INT(wh_http_running(h), 0);

    wh_http_destroy(h);
    wh_netlist_free(allow);
    server_stop();
}

/* ---- how much of a response is read --------------------------------- */

static char url2[128];

/* Sends body (len bytes) to path and runs the loop until it is done. */
static void run_one(wh_http *h, wh_http_req *req, const char *path,
                    const void *body, size_t len, int64_t timeout_ms)
{
    memset(req, 0, sizeof(*req));
    snprintf(url2, sizeof(url2), "http://127.0.0.1:%d%s", srv_port, path);
    req->url = url2;
    req->body = body;
    req->body_len = len;
    req->headers = hdrs;
    req->timeout_ms = timeout_ms;
    req->connect_timeout_ms = 5000;
    char err[256];
    CHECK_INT(wh_http_start(h, req, err, sizeof(err)), WH_OK);
    run_until(h, 1);
}

static int is_pattern(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != pattern_at(i))
            return 0;
    return 1;
}

/* Waits up to 10 s for the server to finish its last body. */
static int body_done(void)
{
    for (int i = 0; i < 1000 && !atomic_load(&body_finished); i++)
        usleep(10 * 1000);
    return atomic_load(&body_finished);
}

static wh_http *client(wh_netlist **allow, int64_t snippet_max,
                       int64_t low_speed_time_ms)
{
    char err[256];
    *allow = NULL;
    CHECK_INT(wh_netlist_parse("127.0.0.0/8", allow, err, sizeof(err)),
              WH_OK);
    wh_http_conf conf = {.user_agent = "test", .allow = *allow,
                         .max_host_connections = 4,
                         .max_connections = 16, .snippet_max = snippet_max,
                         .low_speed_time_ms = low_speed_time_ms};
    wh_http *h = NULL;
    CHECK_INT(wh_http_new(&conf, &h, err, sizeof(err)), WH_OK);
    return h;
}

/* The body is read as far as the snippet needs (plus WH_HTTP_DRAIN_MAX
 * when that keeps the connection): a 100 MB body is a 200 with a snippet,
 * and the server sees the connection closed long before it is written. */
static void test_body_cut(void)
{
    server_start();
    quiet = 1;
    wh_netlist *allow;
    wh_http *h = client(&allow, 100, 0);
    wh_http_req req;
    char path[64];

    int acc = atomic_load(&accepted);
    size_t big = 100u << 20;
    snprintf(path, sizeof(path), "/big/%zu", big);
    int64_t t0 = wh_mono_us();
    run_one(h, &req, path, "{}", 2, 30000);
    int64_t took_us = wh_mono_us() - t0;
    CHECK_INT(req.status, 200);
    CHECK_INT(req.error_class, WH_HTTP_NONE);
    CHECK_STR(req.error, "");
    CHECK_INT(req.snippet_len, 100);
    CHECK(is_pattern(req.snippet, req.snippet_len));
    CHECK(took_us < 2000000);
    CHECK(body_done());
    CHECK_INT(atomic_load(&body_closed), 1);
    long long written = atomic_load(&body_written);
    CHECK(written < (long long)(big / 4));
    printf("100 MB body: done in %lld ms, the server wrote %lld bytes "
           "before the client closed\n",
           (long long)(took_us / 1000), written);
    /* a failure status is kept the same way */
    snprintf(path, sizeof(path), "/big500/%zu", big);
    run_one(h, &req, path, "{}", 2, 30000);
    CHECK_INT(req.status, 500);
    CHECK_INT(req.error_class, WH_HTTP_NONE);
    CHECK_INT(req.snippet_len, 100);
    CHECK(body_done());
    CHECK_INT(atomic_load(&body_closed), 1);
    CHECK(atomic_load(&body_written) < (long long)(big / 4));
    acc++; /* that took a connection of its own */
    /* that connection is gone: the next request opens another */
    run_one(h, &req, "/hook", "{}", 2, 5000);
    CHECK_INT(req.status, 204);
    CHECK_INT(atomic_load(&accepted), acc + 2);

    /* a 2xx with an empty body, on the same connection */
    run_one(h, &req, "/empty", "{}", 2, 5000);
    CHECK_INT(req.status, 200);
    CHECK_INT(req.error_class, WH_HTTP_NONE);
    CHECK_INT(req.snippet_len, 0);
    CHECK_STR(req.snippet, "");
    CHECK_INT(atomic_load(&accepted), acc + 2);

    /* at the snippet's size exactly, and one byte short */
    run_one(h, &req, "/big/100", "{}", 2, 5000);
    CHECK_INT(req.status, 200);
    CHECK_INT(req.snippet_len, 100);
    CHECK(is_pattern(req.snippet, req.snippet_len));
    run_one(h, &req, "/big/99", "{}", 2, 5000);
    CHECK_INT(req.snippet_len, 99);
    CHECK_INT(atomic_load(&accepted), acc + 2);

    /* WH_HTTP_DRAIN_MAX past the snippet is read and the connection kept;
     * one byte more and it is cut (status intact) and closed. Both with a
     * Content-Length and chunked. */
    static const char *const forms[] = {"/big/%d", "/chunked/%d"};
    for (size_t f = 0; f < WH_ARRAY_LEN(forms); f++) {
        acc = atomic_load(&accepted);
        snprintf(path, sizeof(path), forms[f], 100 + WH_HTTP_DRAIN_MAX);
        run_one(h, &req, path, "{}", 2, 5000);
        CHECK_INT(req.status, 200);
        CHECK_INT(req.error_class, WH_HTTP_NONE);
        CHECK_INT(req.snippet_len, 100);
        CHECK(body_done());
        CHECK_INT(atomic_load(&body_closed), 0);
        run_one(h, &req, "/hook", "{}", 2, 5000);
        CHECK_INT(req.status, 204);
        CHECK_INT(atomic_load(&accepted), acc); /* reused */

        snprintf(path, sizeof(path), forms[f], 100 + WH_HTTP_DRAIN_MAX + 1);
        run_one(h, &req, path, "{}", 2, 5000);
        CHECK_INT(req.status, 200);
        CHECK_INT(req.error_class, WH_HTTP_NONE);
        CHECK_STR(req.error, "");
        CHECK_INT(req.snippet_len, 100);
        CHECK(is_pattern(req.snippet, req.snippet_len));
        CHECK(body_done());
        run_one(h, &req, "/hook", "{}", 2, 5000);
        CHECK_INT(req.status, 204);
        CHECK_INT(atomic_load(&accepted), acc + 1); /* a new one */
    }
    CHECK_INT(wh_http_running(h), 0);
    wh_http_destroy(h);
    wh_netlist_free(allow);

    /* a snippet of 0 bytes: nothing kept, the status still read */
    h = client(&allow, 0, 0);
    snprintf(path, sizeof(path), "/big/%zu", big);
    run_one(h, &req, path, "{}", 2, 30000);
    CHECK_INT(req.status, 200);
    CHECK_INT(req.snippet_len, 0);
    CHECK(body_done());
    CHECK_INT(atomic_load(&body_closed), 1);
    wh_http_destroy(h);
    wh_netlist_free(allow);
    quiet = 0;
    server_stop();
}

/* The low-speed limit (1 s here) cuts a trickling or stalled response and
 * a request body the endpoint does not read, long before the total
 * timeout; an endpoint working before it answers is not cut. */
static void test_low_speed(void)
{
    server_start();
    quiet = 1;
    wh_netlist *allow;
    wh_http *h = client(&allow, 1024, 1000);
    wh_http_req req;
    static const char *const slow[] = {"/trickle", "/stall", "/slowheaders"};
    for (size_t i = 0; i < WH_ARRAY_LEN(slow); i++) {
        int64_t t0 = wh_mono_us();
        run_one(h, &req, slow[i], "{}", 2, 10000);
        int64_t took_ms = (wh_mono_us() - t0) / 1000;
        CHECK_INT(req.status, 0);
        CHECK_INT(req.error_class, WH_HTTP_TIMEOUT);
        CHECK_STR(req.error, "under 1024 bytes/s for 1000 ms while receiving "
                             "the response");
        CHECK(took_ms >= 900 && took_ms < 4000);
        printf("%s: cut after %lld ms (timeout 10000 ms)\n", slow[i],
               (long long)took_ms);
    }

    /* twice the limit for three times its window: not cut */
    int64_t t1 = wh_mono_us();
    run_one(h, &req, "/steady", "{}", 2, 10000);
    CHECK_INT(req.status, 200);
    CHECK_INT(req.error_class, WH_HTTP_NONE);
    CHECK_INT(req.snippet_len, 1024);
    CHECK((wh_mono_us() - t1) / 1000 >= 2500);

    /* 2.5 s of work before answering is the endpoint's to take */
    int64_t t0 = wh_mono_us();
    run_one(h, &req, "/think/2500", "{}", 2, 10000);
    CHECK_INT(req.status, 200);
    CHECK_INT(req.error_class, WH_HTTP_NONE);
    CHECK_STR(req.snippet, "ok");
    CHECK((wh_mono_us() - t0) / 1000 >= 2400);

    /* a request body the endpoint never reads */
    size_t n = 64u << 20;
    char *body = malloc(n);
    CHECK(body != NULL);
    if (body) {
        memset(body, 'x', n);
        t0 = wh_mono_us();
        run_one(h, &req, "/noread", body, n, 10000);
        int64_t took_ms = (wh_mono_us() - t0) / 1000;
        CHECK_INT(req.status, 0);
        CHECK_INT(req.error_class, WH_HTTP_TIMEOUT);
        CHECK_STR(req.error, "under 1024 bytes/s for 1000 ms while sending "
                             "the request");
        CHECK(took_ms >= 900 && took_ms < 4000);
        printf("/noread: cut after %lld ms\n", (long long)took_ms);
        free(body);
    }
    wh_http_destroy(h);
    wh_netlist_free(allow);

    /* without the limit only the total timeout ends a trickle */
    h = client(&allow, 1024, 0);
    t0 = wh_mono_us();
    run_one(h, &req, "/trickle", "{}", 2, 2000);
    CHECK_INT(req.error_class, WH_HTTP_TIMEOUT);
    CHECK((wh_mono_us() - t0) / 1000 >= 1900);
    wh_http_destroy(h);
    wh_netlist_free(allow);
    quiet = 0;
    server_stop();
}

TEST_MAIN(test_keep_alive, test_body_cut, test_low_speed)
