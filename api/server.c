/*
 * server.c - webhook-api's HTTP server (server.h): a libmicrohttpd daemon
 * with a thread pool on epoll, optional TLS, bounded connections, header
 * memory, bodies and idle time; the route table; the access rules every
 * request passes before its handler (API_ALLOW_CIDRS, then, for /v1/,
 * the bearer token through auth.c); JSON answers. Only this file includes
 * microhttpd.h.
 */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "auth.h"
#include "endpoints_api.h"
#include "ingest.h"
#include "log.h"
#include "routes.h"

#define HEADER_MEMORY (64 * 1024) /* request line and headers, per conn */
#define PEM_MAX (256 * 1024)

enum { REQ_NEW, REQ_SUSPENDED, REQ_ANSWERED };

struct api_server {
    struct MHD_Daemon *d;
    char addr[96];
    char *tls_cert, *tls_key;       /* PEM text, owned */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int suspended;                  /* requests waiting for an answer */
};

/* ---- routes ------------------------------------------------------------ */

typedef enum {
    OPEN,    /* probes and metrics: no allowlist, no limits */
    PUBLIC,  /* the allowlist and the per-address limit, no token */
    TOKEN,   /* a bearer token with one of the route's scopes */
} access_kind;

#define S_ADMIN  (1u << WH_SCOPE_ADMIN)
#define S_APP    (1u << WH_SCOPE_APP)
#define S_INGEST (1u << WH_SCOPE_INGEST)
#define S_READ   (1u << WH_SCOPE_READ)

typedef struct {
    const char *method;
    const char *pattern;            /* segments; "{}" matches any one */
    access_kind access;
    unsigned scopes;
    api_handler *handler;
} route;

static const route routes[] = {
    {"GET", "/healthz", OPEN, 0, api_route_healthz},
    {"GET", "/readyz", OPEN, 0, api_route_readyz},
    {"GET", "/metrics", OPEN, 0, api_route_metrics},
    {"GET", "/v1/openapi.yaml", PUBLIC, 0, api_route_openapi},
    {"POST", "/v1/events", TOKEN, S_ADMIN | S_APP | S_INGEST,
     api_ingest_events},
    {"GET", "/v1/apps/{}/endpoints", TOKEN, S_ADMIN | S_APP | S_READ,
     api_endpoints_list},
    {"POST", "/v1/apps/{}/endpoints", TOKEN, S_ADMIN | S_APP,
     api_endpoints_create},
    {"GET", "/v1/apps/{}/endpoints/{}", TOKEN, S_ADMIN | S_APP | S_READ,
     api_endpoints_get},
    {"PATCH", "/v1/apps/{}/endpoints/{}", TOKEN, S_ADMIN | S_APP,
     api_endpoints_patch},
    {"POST", "/v1/apps/{}/endpoints/{}/enable", TOKEN, S_ADMIN | S_APP,
     api_endpoints_enable},
    {"POST", "/v1/apps/{}/endpoints/{}/disable", TOKEN, S_ADMIN | S_APP,
     api_endpoints_disable},
};

/* Splits r->path into r->seg. WH_ERR for too many segments. */
static int split_path(api_req *r)
{
    wh_strlcpy(r->segbuf, r->path, sizeof(r->segbuf));
    r->nseg = 0;
    char *save = NULL;
    for (char *s = strtok_r(r->segbuf, "/", &save); s;
         s = strtok_r(NULL, "/", &save)) {
        if (r->nseg == API_PATH_SEGMENTS_MAX)
            return WH_ERR;
        r->seg[r->nseg++] = s;
    }
    return WH_OK;
}

static bool pattern_matches(const char *pattern, const api_req *r)
{
    char buf[256];
    wh_strlcpy(buf, pattern, sizeof(buf));
    size_t i = 0;
    char *save = NULL;
    for (char *s = strtok_r(buf, "/", &save); s;
         s = strtok_r(NULL, "/", &save), i++)
        if (i >= r->nseg || (strcmp(s, "{}") != 0 && strcmp(s, r->seg[i])))
            return false;
    return i == r->nseg;
}

/* ---- answers ------------------------------------------------------------ */

void api_reply_raw(api_req *r, int status, const char *content_type,
                   const char *body, size_t len)
{
    free(r->resp);
    r->resp = malloc(len ? len : 1);
    if (!r->resp) {
        r->resp_len = 0;
        r->status = 500;
        r->content_type = "application/json";
        return;
    }
    memcpy(r->resp, body, len);
    r->resp_len = len;
    r->status = status;
    r->content_type = content_type;
}

void api_reply_json(api_req *r, int status, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text) {
        static const char oom[] = "{\"error\":{\"code\":\"internal\","
                                  "\"message\":\"out of memory\"}}";
        api_reply_raw(r, 500, "application/json", oom, sizeof(oom) - 1);
        return;
    }
    free(r->resp);
    r->resp = text;
    r->resp_len = strlen(text);
    r->status = status;
    r->content_type = "application/json";
}

void api_reply_error(api_req *r, int status, const char *code,
                     const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    api_reply_json(r, status, json_pack("{s:{s:s,s:s}}", "error", "code",
                                        code, "message", msg));
}

const char *api_header(const api_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

const char *api_query(const api_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

void api_suspend(api_req *r)
{
    api_server *sv = r->ctx->server;
    pthread_mutex_lock(&sv->mu);
    sv->suspended++;
    pthread_mutex_unlock(&sv->mu);
    r->state = REQ_SUSPENDED;
    MHD_suspend_connection(r->conn);
}

void api_resume(api_req *r)
{
    api_server *sv = r->ctx->server;
    r->state = REQ_ANSWERED;
    MHD_resume_connection(r->conn);
    pthread_mutex_lock(&sv->mu);
    sv->suspended--;
    pthread_cond_broadcast(&sv->cv);
    pthread_mutex_unlock(&sv->mu);
}

static enum MHD_Result send_answer(api_req *r)
{
    api_stats *st = &r->ctx->stats;
    if (r->sent)
        return MHD_YES;
    r->sent = true;
    if (!r->status)
        api_reply_error(r, 500, "internal", "no answer");
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        r->resp_len, r->resp, MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                            r->content_type ? r->content_type
                                            : "application/json");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (r->retry_after[0])
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER,
                                r->retry_after);
    if (r->location[0])
        MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, r->location);
    if (r->www_authenticate)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                                "Bearer");
    enum MHD_Result rc = MHD_queue_response(r->conn, (unsigned)r->status,
                                            resp);
    MHD_destroy_response(resp);
    atomic_fetch_add_explicit(r->status >= 500   ? &st->responses_5xx
                              : r->status >= 400 ? &st->responses_4xx
                                                 : &st->responses_2xx,
                              1, memory_order_relaxed);
    return rc;
}

/* ---- access -------------------------------------------------------------- */

/* The client's address: the peer, or with API_TRUST_PROXY the last
 * address of X-Forwarded-For (the one the proxy in front added). */
static int client_address(api_req *r, struct sockaddr_storage *ss)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    memset(ss, 0, sizeof(*ss));
    const char *xff = r->ctx->s->trust_proxy
                          ? api_header(r, "X-Forwarded-For") : NULL;
    if (xff && *xff) {
        const char *last = strrchr(xff, ',');
        last = last ? last + 1 : xff;
        while (*last == ' ')
            last++;
        wh_strlcpy(r->ip, last, sizeof(r->ip));
        r->ip[strcspn(r->ip, " ")] = '\0';
        struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
        if (inet_pton(AF_INET, r->ip, &in4->sin_addr) == 1) {
            in4->sin_family = AF_INET;
            return WH_OK;
        }
        if (inet_pton(AF_INET6, r->ip, &in6->sin6_addr) == 1) {
            in6->sin6_family = AF_INET6;
            return WH_OK;
        }
        return WH_ERR;
    }
    if (!ci || !ci->client_addr)
        return WH_ERR;
    socklen_t len = ci->client_addr->sa_family == AF_INET6
                        ? sizeof(struct sockaddr_in6)
                        : sizeof(struct sockaddr_in);
    memcpy(ss, ci->client_addr, len);
    if (getnameinfo(ci->client_addr, len, r->ip, sizeof(r->ip), NULL, 0,
                    NI_NUMERICHOST) != 0)
        wh_strlcpy(r->ip, "?", sizeof(r->ip));
    return WH_OK;
}

/* Routes r; answers it unless the handler suspended it. */
static void dispatch(api_req *r)
{
    api_ctx *ctx = r->ctx;
    if (split_path(r) != WH_OK) {
        api_reply_error(r, 404, "not_found", "no such route");
        return;
    }
    const route *rt = NULL;
    bool path_known = false;
    for (size_t i = 0; i < WH_ARRAY_LEN(routes) && !rt; i++)
        if (pattern_matches(routes[i].pattern, r)) {
            path_known = true;
            if (strcmp(routes[i].method, r->method) == 0)
                rt = &routes[i];
        }
    if (!rt) {
        api_reply_error(r, 404, "not_found", path_known
                        ? "%s is not allowed on %s" : "no route %s %s",
                        r->method, r->path);
        return;
    }
    if (rt->access == OPEN) {
        rt->handler(r);
        return;
    }
    struct sockaddr_storage ss;
    if (client_address(r, &ss) != WH_OK) {
        api_reply_error(r, 400, "bad_request", "X-Forwarded-For does not "
                                               "end in an address");
        return;
    }
    if (ctx->allow && !wh_netlist_contains(ctx->allow, (struct sockaddr *)&ss)) {
        api_reply_error(r, 403, "forbidden", "%s is not among the allowed "
                                             "sources", r->ip);
        return;
    }
    if (api_auth_request(ctx->auth, r, (const struct sockaddr *)&ss,
                         rt->access == TOKEN, rt->scopes) != WH_OK)
        return; /* answered: 401, 403, 429 or 503 */
    rt->handler(r); /* a body over the limit was answered 413 already */
}

/* Answers 413 while the body is still coming (the rest is discarded). */
static enum MHD_Result refuse_too_large(api_req *r)
{
    r->state = REQ_ANSWERED;
    api_reply_error(r, 413, "payload_too_large", "the body is over %lld bytes",
                    (long long)r->ctx->s->body_max);
    return send_answer(r);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
                                  const char *url, const char *method,
                                  const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    api_ctx *ctx = cls;
    api_req *r = *con_cls;
    (void)version;
    if (!r) {
        if (!(r = calloc(1, sizeof(*r))))
            return MHD_NO;
        r->ctx = ctx;
        r->conn = conn;
        r->method = method;
        wh_strlcpy(r->path, url, sizeof(r->path));
        wh_buf_init(&r->body, (size_t)ctx->s->body_max);
        *con_cls = r;
        atomic_fetch_add_explicit(&ctx->stats.requests, 1,
                                  memory_order_relaxed);
        /* a body announced too large is refused before it is read */
        const char *cl = MHD_lookup_connection_value(
            conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoll(cl, NULL, 10) > ctx->s->body_max) {
            r->too_large = true;
            return refuse_too_large(r);
        }
        return MHD_YES;
    }
    if (*upload_size) {
        if (!r->too_large &&
            wh_buf_add(&r->body, upload, *upload_size) != WH_OK)
            r->too_large = true;
        *upload_size = 0;
        if (r->too_large && r->state == REQ_NEW)
            return refuse_too_large(r);
        return MHD_YES;
    }
    if (r->state == REQ_NEW) {
        dispatch(r);
        if (r->state == REQ_SUSPENDED)
            return MHD_YES;
        r->state = REQ_ANSWERED;
        return send_answer(r);
    }
    if (r->state == REQ_ANSWERED)
        return send_answer(r); /* resumed, or answered during the upload */
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn,
                         void **con_cls, enum MHD_RequestTerminationCode why)
{
    (void)cls;
    (void)conn;
    (void)why;
    api_req *r = *con_cls;
    if (!r)
        return;
    if (r->async_free)
        r->async_free(r->async);
    wh_buf_free(&r->body);
    free(r->resp);
    free(r);
    *con_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    (void)cls;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    WH_WARN("http: %s", msg);
}

/* ---- per-thread Postgres -------------------------------------------------- */

static pthread_key_t db_key;
static pthread_once_t db_once = PTHREAD_ONCE_INIT;

static void db_close_thread(void *p)
{
    wh_db_close(p);
}

static void db_key_init(void)
{
    if (pthread_key_create(&db_key, db_close_thread) != 0)
        abort();
}

wh_db *api_db(const api_ctx *ctx, char *err, size_t errlen)
{
    pthread_once(&db_once, db_key_init);
    wh_db *db = pthread_getspecific(db_key);
    if (db)
        return db;
    if (wh_db_connect(ctx->s->database_url, &db, err, errlen) != WH_OK)
        return NULL;
    pthread_setspecific(db_key, db);
    return db;
}

void api_db_drop(void)
{
    pthread_once(&db_once, db_key_init);
    wh_db *db = pthread_getspecific(db_key);
    pthread_setspecific(db_key, NULL);
    wh_db_close(db);
}

/* ---- the daemon ------------------------------------------------------------ */

static char *read_pem(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        wh_errf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(PEM_MAX + 1);
    size_t n = buf ? fread(buf, 1, PEM_MAX + 1, f) : 0;
    bool bad = !buf || ferror(f) || n > PEM_MAX || n == 0;
    fclose(f);
    if (bad) {
        wh_errf(err, errlen, "%s: %s", path,
                !buf ? "out of memory" : n > PEM_MAX ? "too large"
                : n == 0 ? "empty" : "cannot be read");
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

static int parse_listen(const char *s, struct sockaddr_storage *ss,
                        char *err, size_t errlen)
{
    char host[256];
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || !colon[1])
        return wh_errf(err, errlen, "API_LISTEN '%s': expected HOST:PORT", s);
    size_t hl = (size_t)(colon - s);
    if (s[0] == '[' && hl >= 2 && s[hl - 1] == ']') {
        s++;
        hl -= 2;
    }
    if (hl >= sizeof(host))
        return wh_errf(err, errlen, "API_LISTEN: host too long");
    memcpy(host, s, hl);
    host[hl] = '\0';
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &res);
    if (rc != 0 || !res)
        return wh_errf(err, errlen, "API_LISTEN '%s': %s", s,
                       gai_strerror(rc));
    memset(ss, 0, sizeof(*ss));
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return WH_OK;
}

int api_server_start(api_ctx *ctx, char *err, size_t errlen)
{
    const api_settings *s = ctx->s;
    api_server *sv = calloc(1, sizeof(*sv));
    if (!sv)
        return wh_errf(err, errlen, "out of memory");
    pthread_mutex_init(&sv->mu, NULL);
    pthread_cond_init(&sv->cv, NULL);
    ctx->server = sv;
    struct sockaddr_storage ss;
    if (parse_listen(s->listen, &ss, err, errlen) != WH_OK)
        return WH_ERR;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
                     MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    bool tls = s->tls_cert && *s->tls_cert;
    if (tls != (s->tls_key && *s->tls_key))
        return wh_errf(err, errlen, "API_TLS_CERT and API_TLS_KEY go "
                                    "together");
    if (tls) {
        if (!(sv->tls_cert = read_pem(s->tls_cert, err, errlen)) ||
            !(sv->tls_key = read_pem(s->tls_key, err, errlen)))
            return WH_ERR;
        flags |= MHD_USE_TLS;
    }
    struct MHD_OptionItem none = {MHD_OPTION_END, 0, NULL};
    struct MHD_OptionItem tls_opts[] = {
        {MHD_OPTION_HTTPS_MEM_CERT, 0, sv->tls_cert},
        {MHD_OPTION_HTTPS_MEM_KEY, 0, sv->tls_key},
        {MHD_OPTION_END, 0, NULL},
    };
    sv->d = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, ctx,
        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)s->threads,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)s->max_connections,
        MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)((s->idle_timeout_ms + 999) / 1000),
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HEADER_MEMORY,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
        MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u,
        MHD_OPTION_ARRAY, tls ? tls_opts : &none,
        MHD_OPTION_END);
    if (!sv->d)
        return wh_errf(err, errlen, "cannot listen on %s%s", s->listen,
                       tls ? " (or the TLS certificate or key is not "
                             "usable)" : "");
    const union MHD_DaemonInfo *di =
        MHD_get_daemon_info(sv->d, MHD_DAEMON_INFO_BIND_PORT);
    char host[128];
    if (getnameinfo((struct sockaddr *)&ss, sizeof(ss), host, sizeof(host),
                    NULL, 0, NI_NUMERICHOST) != 0)
        wh_strlcpy(host, "?", sizeof(host));
    snprintf(sv->addr, sizeof(sv->addr), ss.ss_family == AF_INET6 ?
             "[%s]:%u" : "%s:%u", host, di ? di->port : 0);
    return WH_OK;
}

const char *api_server_address(const api_ctx *ctx)
{
    return ctx->server ? ctx->server->addr : "";
}

void api_server_stop(api_ctx *ctx)
{
    api_server *sv = ctx->server;
    if (!sv)
        return;
    if (sv->d) {
        MHD_quiesce_daemon(sv->d);
        /* suspended requests are answered by their delivery reports
         * (bounded by API_PRODUCE_TIMEOUT) before the daemon goes */
        pthread_mutex_lock(&sv->mu);
        while (sv->suspended > 0)
            pthread_cond_wait(&sv->cv, &sv->mu);
        pthread_mutex_unlock(&sv->mu);
        MHD_stop_daemon(sv->d);
    }
    if (sv->tls_key)
        explicit_bzero(sv->tls_key, strlen(sv->tls_key));
    free(sv->tls_key);
    free(sv->tls_cert);
    pthread_cond_destroy(&sv->cv);
    pthread_mutex_destroy(&sv->mu);
    free(sv);
    ctx->server = NULL;
}
