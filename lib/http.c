/*
 * http.c - HTTP adapter over libcurl's multi interface (see http.h).
 * Owned by one thread (the worker's delivery loop). Easy handles are kept
 * in a free list and reused; connections live in the multi handle's cache.
 *
 * Sockets are watched with epoll through curl's socket interface
 * (CURLMOPT_SOCKETFUNCTION / CURLMOPT_TIMERFUNCTION and
 * curl_multi_socket_action), so one loop iteration costs in proportion to
 * the sockets that have something to say, not to the requests in flight:
 * with a thousand slow endpoints, curl_multi_perform and curl_multi_poll
 * would walk all of them on every wake-up. The caller's own descriptors
 * are polled together with the epoll descriptor, one poll(2) per wait.
 *
 * A response body is read only as far as the snippet (and a bounded drain
 * for keep-alive) needs, and a low-speed limit, checked in curl's progress
 * callback, cuts requests that trickle or stall while being sent or
 * answered.
 */
#include "http.h"

#include <curl/curl.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "map.h"
#include "url.h"

#define POOL_MAX 4096
#define EVENTS_MAX 1024
#define WAIT_FDS_MAX 8

/* Requests to one scheme://host:port: curl is given at most
 * max_host_connections of them at a time, the rest wait here. (curl's own
 * queue for requests over its connection limit is scanned in full on
 * every completed request, which with thousands of endpoints on one host
 * took two thirds of the worker's time.) */
typedef struct wh_http_host {
    int active;               /* handed to curl */
    wh_http_req *qhead, *qtail; /* waiting */
} wh_http_host;

struct wh_http {
    CURLM *multi;
    wh_map *hosts;
    wh_http_conf conf;
    int64_t low_speed_limit; /* bytes per second */
    char *user_agent;
    char *ca_file;
    bool https_only;
    CURL **pool;
    int npool;
    int running;
    wh_http_req *active; /* doubly linked through prev_/next_ */
    wh_http_req *failed; /* queued requests curl refused, via qnext_ */
    int epfd;
    int64_t timer_at_us; /* curl's next timeout, -1: none */
    int nevents;         /* ready sockets found by the last wait */
    struct epoll_event events[EVENTS_MAX];
    uint8_t *fds;        /* per socket: FD_* bits */
    size_t nfds;
};

/* What epoll holds for a socket, so a kept-alive connection stays
 * registered between requests: curl drops its interest at the end of
 * every transfer and asks again at the next, which cost a delete and an
 * add (two or three epoll_ctl calls per request). Only connections curl
 * opened and closes through the adapter's hooks (FD_OWNED) stay: closing
 * a socket takes it out of epoll, and the close hook clears its bits.
 * Other sockets curl watches (its resolver's socket pair, which it
 * closes itself) are deleted when curl lets go of them, as before. */
#define FD_IN 1u
#define FD_OUT 2u
#define FD_REGISTERED 4u /* in epoll with FD_IN / FD_OUT */
#define FD_WATCHED 8u    /* curl wants its events */
#define FD_OWNED 16u     /* opened by on_open_socket, closed by the hook */

static int curl_ready;

const char *wh_http_error_name(wh_http_error e)
{
    switch (e) {
    case WH_HTTP_NONE: return "none";
    case WH_HTTP_TIMEOUT: return "timeout";
    case WH_HTTP_CONNECT: return "connect";
    case WH_HTTP_DNS: return "dns";
    case WH_HTTP_TLS: return "tls";
    case WH_HTTP_BLOCKED: return "blocked_address";
    case WH_HTTP_NETWORK: return "network";
    case WH_HTTP_CANCELLED: return "cancelled";
    case WH_HTTP_OTHER: return "other";
    }
    return "other";
}

/* The state of socket s, or NULL when s is out of range and the table
 * could not grow (then every change goes to epoll). */
static uint8_t *fd_state(wh_http *h, curl_socket_t s)
{
    if (s < 0)
        return NULL;
    if ((size_t)s >= h->nfds) {
        size_t n = h->nfds ? h->nfds : 64;
        while (n <= (size_t)s)
            n *= 2;
        uint8_t *p = realloc(h->fds, n);
        if (!p)
            return NULL;
        memset(p + h->nfds, 0, n - h->nfds);
        h->fds = p;
        h->nfds = n;
    }
    return &h->fds[s];
}

/* curl tells which sockets to watch for what. */
static int on_socket(CURL *easy, curl_socket_t s, int what, void *arg,
                     void *socketp)
{
    wh_http *h = arg;
    (void)easy;
    (void)socketp;
    uint8_t *st = fd_state(h, s);
    if (what == CURL_POLL_REMOVE) {
        if (st && (*st & FD_OWNED)) {
            *st &= (uint8_t)~FD_WATCHED; /* kept in epoll, see FD_* */
        } else {
            epoll_ctl(h->epfd, EPOLL_CTL_DEL, s, NULL);
            if (st)
                *st = 0;
        }
        return 0;
    }
    uint8_t bits = (uint8_t)(((what & CURL_POLL_IN) ? FD_IN : 0) |
                             ((what & CURL_POLL_OUT) ? FD_OUT : 0));
    if (st && (*st & FD_OWNED) && (*st & FD_REGISTERED) &&
        (*st & (FD_IN | FD_OUT)) == bits) {
        *st |= FD_WATCHED;
        return 0;
    }
    struct epoll_event ev = {0};
    if (bits & FD_IN)
        ev.events |= EPOLLIN;
    if (bits & FD_OUT)
        ev.events |= EPOLLOUT;
    ev.data.fd = s;
    int op = st && (*st & FD_REGISTERED) ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    int rc = epoll_ctl(h->epfd, op, s, &ev);
    if (rc != 0 && op == EPOLL_CTL_MOD && errno == ENOENT)
        rc = epoll_ctl(h->epfd, EPOLL_CTL_ADD, s, &ev);
    else if (rc != 0 && op == EPOLL_CTL_ADD && errno == EEXIST)
        rc = epoll_ctl(h->epfd, EPOLL_CTL_MOD, s, &ev);
    if (st)
        *st = (uint8_t)((*st & FD_OWNED) |
                        (rc == 0 ? FD_REGISTERED | FD_WATCHED | bits : 0));
    return 0;
}

/* curl closes a socket: closing takes it out of epoll. */
static int on_close_socket(void *arg, curl_socket_t s)
{
    wh_http *h = arg;
    if (s >= 0 && (size_t)s < h->nfds)
        h->fds[s] = 0;
    return close(s);
}

/* curl asks to be called back after timeout_ms (-1: never). */
static int on_timer(CURLM *multi, long timeout_ms, void *arg)
{
    wh_http *h = arg;
    (void)multi;
    h->timer_at_us = timeout_ms < 0 ? -1 : wh_mono_us() + timeout_ms * 1000;
    return 0;
}

/* Counts the PEM certificates in bio; WH_ERR when one does not parse
 * (*count then holds those before it). */
static int count_certs(BIO *bio, int *count)
{
    X509 *x;
    *count = 0;
    ERR_clear_error();
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        X509_free(x);
        (*count)++;
    }
    /* the loop ends at the end of the input (PEM_R_NO_START_LINE) or at
     * a block that does not parse */
    unsigned long e = ERR_peek_last_error();
    bool eof = ERR_GET_LIB(e) == ERR_LIB_PEM &&
               ERR_GET_REASON(e) == PEM_R_NO_START_LINE;
    ERR_clear_error();
    return e && !eof ? WH_ERR : WH_OK;
}

int wh_http_check_ca_pem(const void *pem, size_t len, char *err,
                         size_t errlen)
{
    if (len > WH_TLS_CA_MAX)
        return wh_errf(err, errlen, "CA bundle is %zu bytes (at most %d)",
                       len, WH_TLS_CA_MAX);
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    int certs = 0;
    if (!bio)
        return wh_errf(err, errlen, "out of memory");
    int rc = count_certs(bio, &certs);
    BIO_free(bio);
    if (rc != WH_OK)
        return wh_errf(err, errlen, "CA bundle: certificate %d does not "
                       "parse", certs + 1);
    if (certs == 0)
        return wh_errf(err, errlen, "CA bundle: no PEM certificate in it");
    return WH_OK;
}

int wh_http_check_client_pem(const void *cert, size_t cert_len,
                             const void *key, size_t key_len, char *err,
                             size_t errlen)
{
    if (cert_len > WH_TLS_CERT_MAX)
        return wh_errf(err, errlen, "client certificate is %zu bytes (at "
                       "most %d)", cert_len, WH_TLS_CERT_MAX);
    if (key_len > WH_TLS_KEY_MAX)
        return wh_errf(err, errlen, "client key is %zu bytes (at most %d)",
                       key_len, WH_TLS_KEY_MAX);
    BIO *cb = BIO_new_mem_buf(cert, (int)cert_len);
    BIO *kb = BIO_new_mem_buf(key, (int)key_len);
    X509 *x = NULL;
    EVP_PKEY *k = NULL;
    int certs = 0, rc = WH_ERR;
    if (!cb || !kb) {
        wh_errf(err, errlen, "out of memory");
        goto done;
    }
    ERR_clear_error();
    if (!(x = PEM_read_bio_X509(cb, NULL, NULL, NULL))) {
        wh_errf(err, errlen, "client certificate: no PEM certificate in it");
        goto done;
    }
    if (count_certs(cb, &certs) != WH_OK) {
        wh_errf(err, errlen, "client certificate: certificate %d of the "
                "chain does not parse", certs + 2);
        goto done;
    }
    /* an empty passphrase: an encrypted key fails instead of prompting */
    if (!(k = PEM_read_bio_PrivateKey(kb, NULL, NULL, (void *)""))) {
        wh_errf(err, errlen, "client key: no unencrypted PEM private key in "
                             "it");
        goto done;
    }
    if (X509_check_private_key(x, k) != 1) {
        wh_errf(err, errlen, "client key does not belong to the client "
                             "certificate");
        goto done;
    }
    rc = WH_OK;
done:
    ERR_clear_error();
    EVP_PKEY_free(k);
    X509_free(x);
    BIO_free(kb);
    BIO_free(cb);
    return rc;
}

int wh_http_check_ca_file(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return wh_errf(err, errlen, "CA file %s: %s", path, strerror(errno));
    int certs = 0;
    BIO *bio = BIO_new_fp(f, BIO_NOCLOSE);
    if (!bio) {
        fclose(f);
        return wh_errf(err, errlen, "out of memory");
    }
    int rc = count_certs(bio, &certs);
    BIO_free(bio);
    bool read_failed = ferror(f);
    fclose(f);
    if (read_failed)
        return wh_errf(err, errlen, "CA file %s: cannot be read", path);
    if (rc != WH_OK)
        return wh_errf(err, errlen, "CA file %s: certificate %d does not "
                       "parse", path, certs + 1);
    if (certs == 0)
        return wh_errf(err, errlen, "CA file %s: no PEM certificate in it",
                       path);
    return WH_OK;
}

int wh_http_new(const wh_http_conf *conf, wh_http **out, char *err,
                size_t errlen)
{
    *out = NULL;
    if (!curl_ready) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            return wh_errf(err, errlen, "curl_global_init() failed");
        curl_ready = 1;
    }
    wh_http *h = calloc(1, sizeof(*h));
    if (!h)
        return wh_errf(err, errlen, "out of memory");
    h->epfd = epoll_create1(EPOLL_CLOEXEC);
    h->timer_at_us = -1;
    h->conf = *conf;
    h->user_agent = strdup(conf->user_agent ? conf->user_agent : "webhook");
    h->ca_file = conf->ca_file ? strdup(conf->ca_file) : NULL;
    h->https_only = conf->https_only;
    h->pool = calloc(POOL_MAX, sizeof(*h->pool));
    h->multi = curl_multi_init();
    h->hosts = wh_map_new();
    if (!h->user_agent || !h->pool || !h->multi || h->epfd < 0 || !h->hosts ||
        (conf->ca_file && !h->ca_file)) {
        wh_http_destroy(h);
        return wh_errf(err, errlen, "curl_multi_init() failed");
    }
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    if (h->conf.snippet_max < 0 || h->conf.snippet_max > WH_HTTP_SNIPPET_MAX)
        h->conf.snippet_max = WH_HTTP_SNIPPET_MAX;
    if (h->conf.low_speed_time_ms < 0)
        h->conf.low_speed_time_ms = 0;
    h->low_speed_limit = conf->low_speed_limit > 0 ? conf->low_speed_limit
                                                   : WH_HTTP_LOW_SPEED_LIMIT;
    if (conf->max_host_connections > 0)
        curl_multi_setopt(h->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
                          (long)conf->max_host_connections);
    if (conf->max_connections > 0)
        curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS,
                          (long)conf->max_connections);
    *out = h;
    return WH_OK;
}

static void free_host(const char *key, void *value, void *opaque)
{
    (void)key;
    (void)opaque;
    free(value);
}

void wh_http_destroy(wh_http *h)
{
    if (!h)
        return;
    wh_http_cancel_all(h);
    for (int i = 0; i < h->npool; i++)
        curl_easy_cleanup(h->pool[i]);
    if (h->multi)
        curl_multi_cleanup(h->multi);
    if (h->epfd >= 0)
        close(h->epfd);
    if (h->hosts) {
        wh_map_each(h->hosts, free_host, NULL);
        wh_map_destroy(h->hosts);
    }
    free(h->pool);
    free(h->fds);
    free(h->user_agent);
    free(h->ca_file);
    free(h);
}

/* Why the adapter ended a transfer itself (wh_http_req.cut_). */
#define CUT_NONE 0
#define CUT_BODY 1 /* the snippet is full and the body too long to drain */
#define CUT_SLOW 2 /* under the low-speed limit */

/* Keeps the snippet and ends the transfer (a write error curl closes the
 * connection for) once the body is longer than the snippet and not worth
 * draining for keep-alive: known to exceed WH_HTTP_DRAIN_MAX past the
 * snippet, or found to. wh_http_perform reports that as the response. */
static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    wh_http_req *req = arg;
    const wh_http *h = req->owner_;
    size_t len = size * n;
    size_t cap = (size_t)h->conf.snippet_max;
    size_t room = req->snippet_len < cap ? cap - req->snippet_len : 0;
    size_t take = len < room ? len : room;
    memcpy(req->snippet + req->snippet_len, data, take);
    req->snippet_len += take;
    req->snippet[req->snippet_len] = '\0';
    req->rx_bytes_ += (int64_t)len;
    req->body_bytes_ += (int64_t)len;
    if (req->body_bytes_ <= (int64_t)cap)
        return len;
    curl_off_t total = -1;
    curl_easy_getinfo(req->easy_, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &total);
    int64_t drain_to = (int64_t)cap + WH_HTTP_DRAIN_MAX;
    if (req->body_bytes_ > drain_to || (int64_t)total > drain_to) {
        req->cut_ = CUT_BODY;
        return 0;
    }
    return len;
}

/* curl connected (or reuses a connection) and is about to send. */
static int on_prereq(void *arg, char *conn_primary_ip, char *conn_local_ip,
                     int conn_primary_port, int conn_local_port)
{
    wh_http_req *req = arg;
    (void)conn_primary_ip;
    (void)conn_local_ip;
    (void)conn_primary_port;
    (void)conn_local_port;
    req->sending_ = 1;
    return CURL_PREREQFUNC_OK;
}

/* The low-speed limit, checked whenever curl reports progress (at least
 * once a second, see launch()). Counts bytes while the request is sent and
 * while the response arrives; the wait between the two is the endpoint's
 * to spend within its timeout. Non-zero ends the transfer. */
static int on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow,
                       curl_off_t ultotal, curl_off_t ulnow)
{
    wh_http_req *req = arg;
    const wh_http *h = req->owner_;
    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    bool sending = req->sending_ && ulnow < (curl_off_t)req->body_len;
    if (!sending && req->rx_bytes_ == 0) {
        req->slow_from_us_ = 0; /* connecting, or the endpoint at work */
        return 0;
    }
    int64_t now = wh_mono_us();
    int64_t moved = (int64_t)ulnow + req->rx_bytes_;
    int64_t need = h->low_speed_limit * h->conf.low_speed_time_ms / 1000;
    if (req->slow_from_us_ == 0 || moved - req->slow_mark_ >= need) {
        req->slow_from_us_ = now;
        req->slow_mark_ = moved;
        return 0;
    }
    if (now - req->slow_from_us_ < h->conf.low_speed_time_ms * 1000)
        return 0;
    req->cut_ = CUT_SLOW;
    return 1;
}

static size_t on_header(char *data, size_t size, size_t n, void *arg)
{
    wh_http_req *req = arg;
    size_t len = size * n;
    req->rx_bytes_ += (int64_t)len;
    static const char name[] = "retry-after:";
    if (len <= sizeof(name) - 1 ||
        strncasecmp(data, name, sizeof(name) - 1) != 0)
        return len;
    char val[64];
    size_t vl = len - (sizeof(name) - 1);
    if (vl >= sizeof(val))
        vl = sizeof(val) - 1;
    memcpy(val, data + sizeof(name) - 1, vl);
    val[vl] = '\0';
    while (vl > 0 && (val[vl - 1] == '\r' || val[vl - 1] == '\n' ||
                      val[vl - 1] == ' '))
        val[--vl] = '\0';
    char *start = val;
    while (*start == ' ')
        start++;
    char *end;
    long long secs = strtoll(start, &end, 10);
    if (end != start && *end == '\0' && secs >= 0) {
        req->retry_after_s = secs;
    } else {
        time_t t = curl_getdate(start, NULL);
        if (t > 0) {
            time_t now = time(NULL);
            req->retry_after_s = t > now ? (int64_t)(t - now) : 0;
        }
    }
    return len;
}

/* The SSRF guard: runs for every socket curl is about to connect, with the
 * address it resolved, so DNS rebinding cannot slip past a URL check. */
static curl_socket_t on_open_socket(void *arg, curlsocktype purpose,
                                    struct curl_sockaddr *addr)
{
    wh_http_req *req = arg;
    wh_http *h = req->owner_;
    (void)purpose;
    char why[sizeof(req->blocked_)];
    if (!wh_url_address_allowed(&addr->addr, h->conf.allow, why,
                                sizeof(why))) {
        wh_strlcpy(req->blocked_, why, sizeof(req->blocked_));
        return CURL_SOCKET_BAD;
    }
    int s = socket(addr->family, addr->socktype, addr->protocol);
    uint8_t *st = fd_state(h, s);
    if (st)
        *st = FD_OWNED; /* in no epoll set yet */
    return s;
}

/* A new easy handle with the options every request shares; handles go
 * back to the pool with them, so a reused one only gets the request's own
 * (this saves copying four strings per request). */
static CURL *easy_new(wh_http *h)
{
    CURL *e = curl_easy_init();
    if (!e)
        return NULL;
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR,
                     h->https_only ? "https" : "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROXY, "");
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, h->user_agent);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, on_close_socket);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, h);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    if (h->ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, h->ca_file);
    curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, on_prereq);
    if (h->conf.low_speed_time_ms > 0) {
        curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, on_progress);
        /* curl's own low-speed check counts the endpoint's working time
         * too, so it is set to 1 byte/s for longer than the request may
         * take (launch()): it never fires, but with it curl looks at the
         * transfer every second, which runs on_progress on a stalled
         * one. */
        curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
    }
    return e;
}

/* Hands req to curl. */
static int launch(wh_http *h, wh_http_req *req, char *err, size_t errlen)
{
    CURL *e = h->npool > 0 ? h->pool[--h->npool] : easy_new(h);
    if (!e)
        return wh_errf(err, errlen, "curl_easy_init() failed");
    req->easy_ = e;
    curl_easy_setopt(e, CURLOPT_URL, req->url);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
                     (curl_off_t)req->body_len);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, req->slist_);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)req->timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)req->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, req);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, req);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, req);
    curl_easy_setopt(e, CURLOPT_PREREQDATA, req);
    if (h->conf.low_speed_time_ms > 0) {
        curl_easy_setopt(e, CURLOPT_XFERINFODATA, req);
        long secs = req->timeout_ms > 0 ? (long)(req->timeout_ms / 1000 + 2)
                                        : 86400L;
        curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, secs);
    }
    if (req->tls_cert || req->tls_ca) {
        /* such a handle is not pooled (release()), so these settings
         * never reach another request; curl's connection cache matches
         * on them, so no connection is shared with other settings */
        req->tls_own_ = 1;
        if (req->tls_cert) {
            struct curl_blob cert = {(void *)req->tls_cert, req->tls_cert_len,
                                     CURL_BLOB_COPY};
            struct curl_blob key = {(void *)req->tls_key, req->tls_key_len,
                                    CURL_BLOB_COPY};
            curl_easy_setopt(e, CURLOPT_SSLCERTTYPE, "PEM");
            curl_easy_setopt(e, CURLOPT_SSLCERT_BLOB, &cert);
            curl_easy_setopt(e, CURLOPT_SSLKEYTYPE, "PEM");
            curl_easy_setopt(e, CURLOPT_SSLKEY_BLOB, &key);
        }
        if (req->tls_ca) {
            struct curl_blob ca = {(void *)req->tls_ca, req->tls_ca_len,
                                   CURL_BLOB_COPY};
            curl_easy_setopt(e, CURLOPT_CAINFO, NULL);
            curl_easy_setopt(e, CURLOPT_CAPATH, NULL);
            curl_easy_setopt(e, CURLOPT_CAINFO_BLOB, &ca);
        }
    }
    /* curl has its own copies now */
    free(req->tls_copy_);
    req->tls_copy_ = NULL;
    curl_easy_setopt(e, CURLOPT_PRIVATE, req);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, req->error);
    req->started_us_ = wh_mono_us();
    if (curl_multi_add_handle(h->multi, e) != CURLM_OK)
        goto fail;
    req->host_->active++;
    req->prev_ = NULL;
    req->next_ = h->active;
    if (h->active)
        h->active->prev_ = req;
    h->active = req;
    return WH_OK;
fail:
    curl_slist_free_all(req->slist_);
    req->slist_ = NULL;
    curl_easy_cleanup(e);
    req->easy_ = NULL;
    return wh_errf(err, errlen, "cannot start request to %s", req->url);
}

/* The host key of url: scheme://authority, lower-cased. */
static void host_key(const char *url, char *key, size_t cap)
{
    const char *p = strstr(url, "://");
    size_t n = p ? (size_t)(p - url) + 3 : 0;
    if (p)
        n += strcspn(p + 3, "/?#");
    else
        n = strlen(url);
    if (n >= cap)
        n = cap - 1;
    for (size_t i = 0; i < n; i++)
        key[i] = (char)((url[i] >= 'A' && url[i] <= 'Z') ? url[i] + 32
                                                         : url[i]);
    key[n] = '\0';
}

/* A request that waits for a connection keeps its own copy of its TLS
 * material (the caller's may be gone when it is launched). */
static int copy_tls(wh_http_req *req)
{
    size_t n = req->tls_cert_len + req->tls_key_len + req->tls_ca_len;
    if (n == 0)
        return WH_OK;
    char *p = malloc(n);
    if (!p)
        return WH_ERR;
    req->tls_copy_ = p;
    if (req->tls_cert) {
        req->tls_cert = memcpy(p, req->tls_cert, req->tls_cert_len);
        p += req->tls_cert_len;
    }
    if (req->tls_key) {
        req->tls_key = memcpy(p, req->tls_key, req->tls_key_len);
        p += req->tls_key_len;
    }
    if (req->tls_ca)
        req->tls_ca = memcpy(p, req->tls_ca, req->tls_ca_len);
    return WH_OK;
}

int wh_http_start(wh_http *h, wh_http_req *req, char *err, size_t errlen)
{
    char key[WH_URL_MAX + 1];
    host_key(req->url, key, sizeof(key));
    wh_http_host *host = wh_map_get(h->hosts, key);
    if (!host) {
        if (!(host = calloc(1, sizeof(*host))) ||
            wh_map_put(h->hosts, key, host, NULL) != WH_OK) {
            free(host);
            return wh_errf(err, errlen, "out of memory");
        }
    }
    req->owner_ = h;
    req->host_ = host;
    req->easy_ = NULL;
    req->qprev_ = req->qnext_ = NULL;
    req->wait_ = 0;
    req->status = 0;
    req->error_class = WH_HTTP_NONE;
    req->error[0] = '\0';
    req->retry_after_s = -1;
    req->snippet_len = 0;
    req->snippet[0] = '\0';
    req->rx_bytes_ = req->body_bytes_ = 0;
    req->slow_from_us_ = req->slow_mark_ = 0;
    req->sending_ = 0;
    req->cut_ = CUT_NONE;
    req->blocked_[0] = '\0';
    /* the header lines are copied now: the caller's are gone later */
    req->slist_ = NULL;
    for (const char *const *hd = req->headers; hd && *hd; hd++) {
        struct curl_slist *n = curl_slist_append(req->slist_, *hd);
        if (!n)
            goto oom;
        req->slist_ = n;
    }
    struct curl_slist *n = curl_slist_append(req->slist_, "Expect:");
    if (!n)
        goto oom;
    req->slist_ = n;
    req->tls_copy_ = NULL;
    req->tls_own_ = 0;
    if (h->conf.max_host_connections > 0 &&
        host->active >= h->conf.max_host_connections) {
        if (copy_tls(req) != WH_OK)
            goto oom;
        req->wait_ = 1;
        req->qprev_ = host->qtail;
        if (host->qtail)
            host->qtail->qnext_ = req;
        else
            host->qhead = req;
        host->qtail = req;
        h->running++;
        return WH_OK;
    }
    if (launch(h, req, err, errlen) != WH_OK)
        return WH_ERR;
    h->running++;
    return WH_OK;
oom:
    curl_slist_free_all(req->slist_);
    req->slist_ = NULL;
    return wh_errf(err, errlen, "out of memory");
}

/* Takes a waiting request out of its host's queue. */
static void unqueue(wh_http_req *req)
{
    wh_http_host *host = req->host_;
    if (req->qprev_)
        req->qprev_->qnext_ = req->qnext_;
    else
        host->qhead = req->qnext_;
    if (req->qnext_)
        req->qnext_->qprev_ = req->qprev_;
    else
        host->qtail = req->qprev_;
    req->qprev_ = req->qnext_ = NULL;
    req->wait_ = 0;
}

/* Hands the host's next waiting request to curl, if a slot is free. */
static void admit(wh_http *h, wh_http_host *host)
{
    while (host->qhead && (h->conf.max_host_connections <= 0 ||
                           host->active < h->conf.max_host_connections)) {
        wh_http_req *req = host->qhead;
        unqueue(req);
        char err[256];
        if (launch(h, req, err, sizeof(err)) != WH_OK) {
            /* reported by the next wh_http_perform */
            wh_strlcpy(req->error, err, sizeof(req->error));
            req->wait_ = 2;
            req->qnext_ = h->failed;
            h->failed = req;
        }
    }
}

static void release(wh_http *h, wh_http_req *req)
{
    CURL *e = req->easy_;
    curl_multi_remove_handle(h->multi, e);
    curl_slist_free_all(req->slist_);
    req->slist_ = NULL;
    req->easy_ = NULL;
    h->running--;
    req->host_->active--;
    if (req->prev_)
        req->prev_->next_ = req->next_;
    else
        h->active = req->next_;
    if (req->next_)
        req->next_->prev_ = req->prev_;
    req->prev_ = req->next_ = NULL;
    int own = req->tls_own_;
    req->tls_own_ = 0;
    if (h->npool < POOL_MAX && !own)
        h->pool[h->npool++] = e;
    else
        curl_easy_cleanup(e);
    admit(h, req->host_);
}

/* Forgets a request that never reached curl. */
static void drop_waiting(wh_http *h, wh_http_req *req)
{
    if (req->wait_ == 1) {
        unqueue(req);
    } else {
        wh_http_req **pp = &h->failed;
        while (*pp && *pp != req)
            pp = &(*pp)->qnext_;
        if (*pp)
            *pp = req->qnext_;
        req->qnext_ = NULL;
        req->wait_ = 0;
    }
    curl_slist_free_all(req->slist_);
    req->slist_ = NULL;
    free(req->tls_copy_);
    req->tls_copy_ = NULL;
    h->running--;
}

void wh_http_cancel(wh_http *h, wh_http_req *req)
{
    if (req->easy_)
        release(h, req);
    else if (req->wait_)
        drop_waiting(h, req);
}

static void drop_queue(const char *key, void *value, void *opaque)
{
    wh_http_host *host = value;
    (void)key;
    while (host->qhead)
        drop_waiting(opaque, host->qhead);
}

void wh_http_cancel_all(wh_http *h)
{
    wh_map_each(h->hosts, drop_queue, h);
    while (h->failed)
        drop_waiting(h, h->failed);
    while (h->active)
        release(h, h->active);
}

void wh_http_wait(wh_http *h, const int *fds, int *ready, size_t nfds,
                  int timeout_ms)
{
    struct pollfd p[1 + WAIT_FDS_MAX];
    size_t n = nfds < WAIT_FDS_MAX ? nfds : WAIT_FDS_MAX;
    p[0].fd = h->epfd;
    p[0].events = POLLIN;
    for (size_t i = 0; i < n; i++) {
        p[1 + i].fd = fds[i];
        p[1 + i].events = POLLIN;
    }
    if (h->timer_at_us >= 0) {
        int64_t left = h->timer_at_us - wh_mono_us();
        int ms = left <= 0 ? 0 : (int)((left + 999) / 1000);
        if (timeout_ms < 0 || ms < timeout_ms)
            timeout_ms = ms;
    }
    if (h->nevents > 0) /* not handed to curl yet */
        timeout_ms = 0;
    int rc = poll(p, 1 + n, timeout_ms);
    for (size_t i = 0; i < n; i++)
        ready[i] = rc > 0 && (p[1 + i].revents & (POLLIN | POLLHUP | POLLERR));
    if (rc > 0 && (p[0].revents & POLLIN) && h->nevents == 0) {
        int got = epoll_wait(h->epfd, h->events, EVENTS_MAX, 0);
        h->nevents = got > 0 ? got : 0;
    }
}
static wh_http_error classify(CURLcode rc, const wh_http_req *req)
{
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT: return WH_HTTP_TIMEOUT;
    case CURLE_COULDNT_RESOLVE_HOST: return WH_HTTP_DNS;
    case CURLE_COULDNT_CONNECT:
        return req->blocked_[0] ? WH_HTTP_BLOCKED : WH_HTTP_CONNECT;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CLIENTCERT:
        return WH_HTTP_TLS;
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
        /* a TLS alert after the handshake (TLS 1.3 servers refuse a
         * client certificate that way) arrives as a read error */
        return strstr(req->error, "SSL_") ? WH_HTTP_TLS : WH_HTTP_NETWORK;
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
        return WH_HTTP_NETWORK;
    default:
        return WH_HTTP_OTHER;
    }
}

/* Hands curl what the last wait found and what timed out. */
static void act(wh_http *h)
{
    int still;
    int n = h->nevents;
    h->nevents = 0;
    for (int i = 0; i < n; i++) {
        uint32_t e = h->events[i].events;
        int fd = h->events[i].data.fd;
        if ((size_t)fd < h->nfds && !(h->fds[fd] & FD_WATCHED)) {
            /* an idle kept-alive connection (closed by its server, say):
             * curl looks at it when it reuses it */
            epoll_ctl(h->epfd, EPOLL_CTL_DEL, fd, NULL);
            h->fds[fd] &= FD_OWNED;
            continue;
        }
        int mask = 0;
        if (e & EPOLLIN)
            mask |= CURL_CSELECT_IN;
        if (e & EPOLLOUT)
            mask |= CURL_CSELECT_OUT;
        if (e & (EPOLLERR | EPOLLHUP))
            mask |= CURL_CSELECT_ERR;
        curl_multi_socket_action(h->multi, fd, mask, &still);
    }
    if (h->timer_at_us >= 0 && wh_mono_us() >= h->timer_at_us) {
        h->timer_at_us = -1;
        curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &still);
    }
}

void wh_http_perform(wh_http *h, wh_http_done_fn *done, void *opaque)
{
    /* Requests started by done callbacks are sent in the same call: curl
     * asks for an immediate timeout when a handle is added. */
    for (int round = 0; round < 4; round++) {
        act(h);
        CURLMsg *m;
        int left, finished = 0;
        while ((m = curl_multi_info_read(h->multi, &left)) != NULL) {
            if (m->msg != CURLMSG_DONE)
                continue;
            finished++;
            CURL *e = m->easy_handle;
            CURLcode rc = m->data.result;
            wh_http_req *req = NULL;
            curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&req);
            long status = 0;
            curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
            req->latency_us = wh_mono_us() - req->started_us_;
            if (rc == CURLE_OK ||
                (rc == CURLE_WRITE_ERROR && req->cut_ == CUT_BODY)) {
                req->status = (int)status;
                req->error_class = WH_HTTP_NONE;
                req->error[0] = '\0';
            } else if (rc == CURLE_ABORTED_BY_CALLBACK &&
                       req->cut_ == CUT_SLOW) {
                req->status = 0;
                req->error_class = WH_HTTP_TIMEOUT;
                snprintf(req->error, sizeof(req->error),
                         "under %lld bytes/s for %lld ms while %s",
                         (long long)h->low_speed_limit,
                         (long long)h->conf.low_speed_time_ms,
                         req->rx_bytes_ ? "receiving the response"
                                        : "sending the request");
            } else {
                req->status = 0;
                req->error_class = classify(rc, req);
                if (req->error_class == WH_HTTP_BLOCKED)
                    snprintf(req->error, sizeof(req->error), "%s",
                             req->blocked_);
                else if (req->error[0] == '\0')
                    snprintf(req->error, sizeof(req->error), "%s",
                             curl_easy_strerror(rc));
            }
            release(h, req);
            done(req, opaque);
        }
        while (h->failed) {
            wh_http_req *req = h->failed;
            drop_waiting(h, req);
            req->status = 0;
            req->error_class = WH_HTTP_OTHER;
            req->latency_us = 0;
            finished++;
            done(req, opaque);
        }
        if (finished == 0 || h->timer_at_us < 0 ||
            h->timer_at_us > wh_mono_us())
            break;
    }
}

int wh_http_running(const wh_http *h) { return h->running; }
