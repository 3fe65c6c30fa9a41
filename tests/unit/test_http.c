/*
 * test_http.c - unit tests for lib/http.c against a small HTTP/1.1 server
 * on loopback (a thread of this test): keep-alive reuse, a kept-alive
 * connection the server closes while idle, and more requests than the
 * per-host connection limit.
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

/* ---- the server: answers 204 to every request, keeps connections alive
 * and closes one after idle_ms without a request ---------------------- */

static int srv_fd;
static int srv_port;
static int idle_ms = 150;
static atomic_int accepted, answered, stopping;

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
            if (have < head + body)
                goto more;
            static const char ok[] = "HTTP/1.1 204 No Content\r\n\r\n";
            if (write(fd, ok, sizeof(ok) - 1) != (ssize_t)sizeof(ok) - 1)
                break;
            atomic_fetch_add(&answered, 1);
            memmove(buf, buf + head + body, have - head - body);
            have -= head + body;
            continue;
        }
    more:;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, idle_ms) <= 0 || atomic_load(&stopping))
            break; /* idle: close it */
        ssize_t n = read(fd, buf + have, sizeof(buf) - have);
        if (n <= 0)
            break;
        have += (size_t)n;
    }
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

static int done_n, done_204;

static void on_done(wh_http_req *req, void *opaque)
{
    (void)opaque;
    done_n++;
    if (req->status == 204)
        done_204++;
    else
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

TEST_MAIN(test_keep_alive)
