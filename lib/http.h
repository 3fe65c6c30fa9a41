/*
 * http.h - the HTTP adapter: the only module that includes libcurl.
 *
 * Many concurrent POSTs on one curl multi handle with a shared connection
 * cache (keep-alive reuse), per-request connect and total timeouts, a
 * low-speed limit, no redirects, a capped response snippet (the body is
 * read no further than the snippet and a bounded drain need), and an SSRF
 * guard that checks the address of every socket curl actually opens.
 * Single-threaded: the owner calls wh_http_wait / wh_http_perform from its
 * event loop.
 */
#ifndef WH_HTTP_H
#define WH_HTTP_H

#include <stdbool.h>

#include "wh.h"

#define WH_HTTP_SNIPPET_MAX 1024
/* Bytes of a response body read past the snippet so that its connection
 * can be kept alive. A body known (Content-Length) or found to be longer
 * is not read on: the response ends once the snippet is full, as the
 * response it is (status intact), and its connection is closed. */
#define WH_HTTP_DRAIN_MAX   (64 * 1024)
/* Bytes per second under which a request counts as stalled (see
 * wh_http_conf.low_speed_time_ms) unless low_speed_limit says otherwise. */
#define WH_HTTP_LOW_SPEED_LIMIT 1024

struct wh_netlist;

typedef struct {
    const char *user_agent;
    const struct wh_netlist *allow; /* private ranges let through, or NULL */
    int64_t max_host_connections;   /* 0 = unlimited */
    int64_t max_connections;        /* connection cache size */
    int64_t snippet_max;            /* bytes of response body kept */
    const char *ca_file;            /* extra CA bundle, or NULL */
    bool https_only;                /* curl refuses http:// (the worker
                                       does not send it one anyway) */
    /* A request is cut off (WH_HTTP_TIMEOUT) when, while its body is being
     * sent or its response received, fewer than low_speed_limit bytes per
     * second (0: WH_HTTP_LOW_SPEED_LIMIT) move for low_speed_time_ms. The
     * time between the last byte sent and the first byte received (the
     * endpoint at work) does not count. 0 = no low-speed limit. */
    int64_t low_speed_time_ms;
    int64_t low_speed_limit;
} wh_http_conf;

/* Why a request got no usable response. */
typedef enum {
    WH_HTTP_NONE = 0,     /* a response arrived (any status) */
    WH_HTTP_TIMEOUT,
    WH_HTTP_CONNECT,
    WH_HTTP_DNS,
    WH_HTTP_TLS,
    WH_HTTP_BLOCKED,      /* the SSRF guard refused the address */
    WH_HTTP_NETWORK,      /* connection dropped mid-request */
    WH_HTTP_CANCELLED,
    WH_HTTP_OTHER,
} wh_http_error;

/* One request. The caller owns it and everything it points to until the
 * done callback ran or wh_http_cancel returned. */
typedef struct wh_http_req {
    /* in */
    const char *url;
    const void *body;
    size_t body_len;
    const char *const *headers; /* "Name: value" lines, NULL-terminated */
    int64_t timeout_ms;
    int64_t connect_timeout_ms;
    /* TLS for this request alone (NULL/0: none), PEM bytes curl copies:
     * a client certificate (with its chain) and its private key, both or
     * neither; a CA bundle that replaces the configured one for the
     * server's certificate. Read by wh_http_start (copied when the
     * request waits for a connection). */
    const void *tls_cert;
    size_t tls_cert_len;
    const void *tls_key;
    size_t tls_key_len;
    const void *tls_ca;
    size_t tls_ca_len;
    void *opaque;
    /* out, valid in the done callback */
    int status;                 /* HTTP status, 0 without a response */
    wh_http_error error_class;
    char error[256];
    int64_t latency_us;
    int64_t retry_after_s;      /* Retry-After in seconds, -1 if absent */
    size_t snippet_len;
    char snippet[WH_HTTP_SNIPPET_MAX + 1];
    /* private */
    void *easy_;
    void *owner_;
    struct wh_http_req *prev_, *next_; /* requests in flight */
    struct wh_http_req *qprev_, *qnext_; /* waiting for a connection, or
                                            failed to start */
    struct wh_http_host *host_;
    int wait_;                           /* 1: queued, 2: failed to start */
    struct curl_slist *slist_;
    int64_t started_us_;
    int64_t rx_bytes_;       /* response bytes seen, headers included */
    int64_t body_bytes_;     /* response body bytes seen */
    int64_t slow_from_us_;   /* start of the low-speed window, 0: none */
    int64_t slow_mark_;      /* bytes moved when it started */
    int sending_;            /* connected, the request is being sent */
    int cut_;                /* why the adapter ended it early, CUT_* */
    int tls_own_;            /* its handle has per-request TLS settings */
    void *tls_copy_;         /* its TLS material while it waits */
    char blocked_[160];
} wh_http_req;

typedef struct wh_http wh_http;
typedef void wh_http_done_fn(wh_http_req *req, void *opaque);

/* Whether path is a CA bundle TLS verification can use: a readable file
 * holding at least one PEM certificate and nothing unparsable. WH_OK, or
 * WH_ERR with the reason (for a start-up check of WEBHOOK_CA_FILE). */
int wh_http_check_ca_file(const char *path, char *err,
                          size_t errlen) WH_MUST_CHECK;

/* Bounds of the per-endpoint TLS material (the schema's as well). */
#define WH_TLS_CERT_MAX  (64 * 1024)
#define WH_TLS_KEY_MAX   4096  /* = WH_SECRETBOX_PLAIN_MAX: it is sealed */
#define WH_TLS_CA_MAX    (256 * 1024)

/* Checks PEM text a request can use as its TLS client identity: cert
 * holds one or more certificates (the first is the client's), key an
 * unencrypted private key matching the first certificate. WH_OK, or
 * WH_ERR with the reason (never quoting the key). */
int wh_http_check_client_pem(const void *cert, size_t cert_len,
                             const void *key, size_t key_len, char *err,
                             size_t errlen) WH_MUST_CHECK;

/* Checks PEM text as a CA bundle: at least one certificate, nothing that
 * does not parse, at most WH_TLS_CA_MAX bytes. */
int wh_http_check_ca_pem(const void *pem, size_t len, char *err,
                         size_t errlen) WH_MUST_CHECK;

int wh_http_new(const wh_http_conf *conf, wh_http **out, char *err,
                size_t errlen) WH_MUST_CHECK;
void wh_http_destroy(wh_http *h);

/* Starts req; its outcome is reported by a later wh_http_perform. With
 * max_host_connections set, requests beyond it wait in a queue of their
 * host (scheme, host and port) and are handed to curl as connections free
 * up; their timeout starts then. */
int wh_http_start(wh_http *h, wh_http_req *req, char *err,
                  size_t errlen) WH_MUST_CHECK;
/* Aborts req without calling done. */
void wh_http_cancel(wh_http *h, wh_http_req *req);
/* Aborts every request in flight without calling done. */
void wh_http_cancel_all(wh_http *h);

/* Waits up to timeout_ms for network activity or for one of fds to turn
 * readable (ready[i] set to 1 for those). */
void wh_http_wait(wh_http *h, const int *fds, int *ready, size_t nfds,
                  int timeout_ms);
/* Makes progress and calls done for every finished request. */
void wh_http_perform(wh_http *h, wh_http_done_fn *done, void *opaque);
/* Requests in flight. */
int wh_http_running(const wh_http *h);

const char *wh_http_error_name(wh_http_error e);

#endif
