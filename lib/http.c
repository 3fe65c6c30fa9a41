/*
 * http.c - HTTP adapter over libcurl's multi interface (see http.h).
 * Owned by one thread (the worker's delivery loop). Easy handles are kept
 * in a free list and reused; connections live in the multi handle's cache.
 */
#include "http.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "url.h"

#define POOL_MAX 4096

struct wh_http {
    CURLM *multi;
    wh_http_conf conf;
    char *user_agent;
    char *ca_file;
    CURL **pool;
    int npool;
    int running;
    wh_http_req *active; /* doubly linked through prev_/next_ */
};

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
    h->conf = *conf;
    h->user_agent = strdup(conf->user_agent ? conf->user_agent : "webhook");
    h->ca_file = conf->ca_file ? strdup(conf->ca_file) : NULL;
    h->pool = calloc(POOL_MAX, sizeof(*h->pool));
    h->multi = curl_multi_init();
    if (!h->user_agent || !h->pool || !h->multi ||
        (conf->ca_file && !h->ca_file)) {
        wh_http_destroy(h);
        return wh_errf(err, errlen, "curl_multi_init() failed");
    }
    if (h->conf.snippet_max < 0 || h->conf.snippet_max > WH_HTTP_SNIPPET_MAX)
        h->conf.snippet_max = WH_HTTP_SNIPPET_MAX;
    if (conf->max_host_connections > 0)
        curl_multi_setopt(h->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
                          (long)conf->max_host_connections);
    if (conf->max_connections > 0)
        curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS,
                          (long)conf->max_connections);
    *out = h;
    return WH_OK;
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
    free(h->pool);
    free(h->user_agent);
    free(h->ca_file);
    free(h);
}

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
    return len;
}

static size_t on_header(char *data, size_t size, size_t n, void *arg)
{
    wh_http_req *req = arg;
    size_t len = size * n;
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
    const wh_http *h = req->owner_;
    (void)purpose;
    char why[sizeof(req->blocked_)];
    if (!wh_url_address_allowed(&addr->addr, h->conf.allow, why,
                                sizeof(why))) {
        wh_strlcpy(req->blocked_, why, sizeof(req->blocked_));
        return CURL_SOCKET_BAD;
    }
    return socket(addr->family, addr->socktype, addr->protocol);
}

int wh_http_start(wh_http *h, wh_http_req *req, char *err, size_t errlen)
{
    CURL *e = h->npool > 0 ? h->pool[--h->npool] : curl_easy_init();
    if (!e)
        return wh_errf(err, errlen, "curl_easy_init() failed");
    req->owner_ = h;
    req->easy_ = e;
    req->status = 0;
    req->error_class = WH_HTTP_NONE;
    req->error[0] = '\0';
    req->retry_after_s = -1;
    req->snippet_len = 0;
    req->snippet[0] = '\0';
    req->blocked_[0] = '\0';
    req->slist_ = NULL;
    for (const char *const *hd = req->headers; hd && *hd; hd++) {
        struct curl_slist *n = curl_slist_append(req->slist_, *hd);
        if (!n)
            goto fail;
        req->slist_ = n;
    }
    struct curl_slist *n = curl_slist_append(req->slist_, "Expect:");
    if (!n)
        goto fail;
    req->slist_ = n;

    curl_easy_setopt(e, CURLOPT_URL, req->url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROXY, "");
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
                     (curl_off_t)req->body_len);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, req->slist_);
    curl_easy_setopt(e, CURLOPT_USERAGENT, h->user_agent);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)req->timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)req->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, req);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, req);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, req);
    curl_easy_setopt(e, CURLOPT_PRIVATE, req);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, req->error);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    if (h->ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, h->ca_file);
    req->started_us_ = wh_mono_us();
    if (curl_multi_add_handle(h->multi, e) != CURLM_OK)
        goto fail;
    h->running++;
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

static void release(wh_http *h, wh_http_req *req)
{
    CURL *e = req->easy_;
    curl_multi_remove_handle(h->multi, e);
    curl_slist_free_all(req->slist_);
    req->slist_ = NULL;
    req->easy_ = NULL;
    h->running--;
    if (req->prev_)
        req->prev_->next_ = req->next_;
    else
        h->active = req->next_;
    if (req->next_)
        req->next_->prev_ = req->prev_;
    req->prev_ = req->next_ = NULL;
    if (h->npool < POOL_MAX)
        h->pool[h->npool++] = e;
    else
        curl_easy_cleanup(e);
}

void wh_http_cancel(wh_http *h, wh_http_req *req)
{
    if (req->easy_)
        release(h, req);
}

void wh_http_cancel_all(wh_http *h)
{
    while (h->active)
        release(h, h->active);
}

void wh_http_wait(wh_http *h, const int *fds, int *ready, size_t nfds,
                  int timeout_ms)
{
    struct curl_waitfd w[8];
    size_t n = nfds < WH_ARRAY_LEN(w) ? nfds : WH_ARRAY_LEN(w);
    for (size_t i = 0; i < n; i++) {
        w[i].fd = fds[i];
        w[i].events = CURL_WAIT_POLLIN;
        w[i].revents = 0;
    }
    curl_multi_poll(h->multi, w, (unsigned)n, timeout_ms, NULL);
    for (size_t i = 0; i < n; i++)
        ready[i] = (w[i].revents & CURL_WAIT_POLLIN) != 0;
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
        return WH_HTTP_TLS;
    case CURLE_GOT_NOTHING:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_PARTIAL_FILE:
        return WH_HTTP_NETWORK;
    default:
        return WH_HTTP_OTHER;
    }
}

void wh_http_perform(wh_http *h, wh_http_done_fn *done, void *opaque)
{
    int still;
    curl_multi_perform(h->multi, &still);
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(h->multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE)
            continue;
        CURL *e = m->easy_handle;
        CURLcode rc = m->data.result;
        wh_http_req *req = NULL;
        curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&req);
        long status = 0;
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
        req->latency_us = wh_mono_us() - req->started_us_;
        if (rc == CURLE_OK) {
            req->status = (int)status;
            req->error_class = WH_HTTP_NONE;
        } else {
            req->status = 0;
            req->error_class = classify(rc, req);
            if (req->error_class == WH_HTTP_BLOCKED)
                snprintf(req->error, sizeof(req->error), "%s", req->blocked_);
            else if (req->error[0] == '\0')
                snprintf(req->error, sizeof(req->error), "%s",
                         curl_easy_strerror(rc));
        }
        release(h, req);
        done(req, opaque);
    }
}

int wh_http_running(const wh_http *h) { return h->running; }
