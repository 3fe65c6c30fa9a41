/*
 * server.h - webhook-api's HTTP server over libmicrohttpd (server.c): one
 * api_req per request, its body read up to API_BODY_MAX, the route table,
 * and the answers handlers give (JSON built with jansson, errors as
 * {"error": {"code", "message"}}). A handler runs on one of the daemon's
 * threads; one that must wait (for Kafka) suspends its request and
 * another thread answers and resumes it.
 */
#ifndef API_SERVER_H
#define API_SERVER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "api.h"
#include "tokens.h"

#define API_PATH_SEGMENTS_MAX 8
#define API_IP_TEXT_MAX 64

typedef struct api_req api_req;

/* Who is calling: the token that authenticated the request. */
typedef struct {
    bool authenticated;
    wh_token_scope scope;
    char token_id[WH_TOKEN_ID_MAX];
    char app[WH_ID_MAX + 1];        /* "" = every app */
} api_principal;

struct api_req {
    api_ctx *ctx;
    struct MHD_Connection *conn;
    const char *method;
    char path[1024];                 /* without the query */
    const char *seg[API_PATH_SEGMENTS_MAX]; /* path segments, in segbuf */
    size_t nseg;
    char segbuf[1024];
    wh_buf body;
    bool too_large;                  /* the body passed API_BODY_MAX */
    char ip[API_IP_TEXT_MAX];        /* the client (see API_TRUST_PROXY) */
    api_principal who;
    /* the answer */
    int status;
    char *resp;                      /* owned */
    size_t resp_len;
    const char *content_type;
    char retry_after[24];            /* "" = no Retry-After */
    bool www_authenticate;
    char location[256];              /* "" = no Location */
    /* a suspended request: set by the handler, freed with the request */
    int state;                       /* server.c's REQ_* */
    bool sent;                       /* the answer is queued */
    void *async;
    void (*async_free)(void *async);
};

/* A request header's value, or NULL. */
const char *api_header(const api_req *r, const char *name);
/* A query argument's value, or NULL. */
const char *api_query(const api_req *r, const char *name);

/* Answers: each sets the status and takes or copies the body. */
void api_reply_json(api_req *r, int status, json_t *body); /* takes body */
void api_reply_raw(api_req *r, int status, const char *content_type,
                   const char *body, size_t len);
void api_reply_error(api_req *r, int status, const char *code,
                     const char *fmt, ...) WH_PRINTF(4, 5);

/* For a handler that answers later: suspends r (returns at once); the
 * answer is given from any thread with api_reply_* and then
 * api_resume(r). */
void api_suspend(api_req *r);
void api_resume(api_req *r);

typedef void api_handler(api_req *r);

int api_server_start(api_ctx *ctx, char *err, size_t errlen) WH_MUST_CHECK;
/* The address the server listens on ("127.0.0.1:8080"). */
const char *api_server_address(const api_ctx *ctx);
/* Stops accepting, finishes what is in flight (waits for suspended
 * requests to be answered), frees the server. */
void api_server_stop(api_ctx *ctx);

#endif
