/*
 * attempt.h - one delivery attempt (attempt.c): signing the request,
 * building its headers and handing it to the HTTP adapter, then reading
 * its outcome and deciding what a failure implies (retry when, or dead
 * letter why). Holds no state of its own; the delivery stage calls it on
 * the main thread.
 */
#ifndef WK_ATTEMPT_H
#define WK_ATTEMPT_H

#include <stdbool.h>
#include <stdint.h>

#include "codec.h"
#include "endpoints.h"
#include "http.h"
#include "wh.h"

/* The outcome of one attempt, kept while its dead letter is in flight. */
typedef struct {
    int status;         /* HTTP status, 0 without a response */
    int64_t latency_us;
    int64_t retry_after_s; /* Retry-After, -1 when absent */
    char error_class[32];
    char error[300];
} wk_outcome;

/* Request timeouts: the endpoint's own, else these. */
typedef struct {
    int64_t timeout_ms;
    int64_t connect_timeout_ms;
} wk_attempt_conf;

/* Signs dv for ep with the attempt's start (attempted_at_us, wall clock),
 * builds the headers and starts the POST on http. req and url (copied from
 * ep) belong to the caller until the done callback ran or the request was
 * cancelled; req->opaque is set to opaque. WH_ERR: nothing was sent, o
 * says why (class "signing" or "other"). */
int wk_attempt_start(wh_http *http, wh_http_req *req,
                     char url[WH_URL_MAX + 1], const wh_endpoint *ep,
                     const wh_delivery *dv, int64_t attempted_at_us,
                     const wk_attempt_conf *conf, void *opaque,
                     wk_outcome *o) WH_MUST_CHECK;

/* Notes a failure that happened without a response from the endpoint. */
void wk_attempt_fail(wk_outcome *o, const char *error_class,
                     const char *error);

/* Reads a finished request into o. Returns whether it succeeded (2xx). */
bool wk_attempt_outcome(const wh_http_req *req, wk_outcome *o);

/* Whether a finished request counts against the endpoint's breaker (no
 * response, 429 or 5xx). */
bool wk_attempt_unwell(const wk_outcome *o, bool ok);

/* What follows a failed attempt. */
typedef struct {
    bool retry;            /* schedule attempt `attempt` at due_us */
    uint32_t attempt;
    int64_t due_us;        /* wall clock */
    wh_dead_reason reason; /* !retry: dead-letter it for this reason */
    char detail[WH_URL_MAX + 400];
} wk_attempt_next;

/* Decides, for dv's failed attempt with outcome o to url, by ep's retry
 * policy (NULL: the default) at now_us (wall clock). Pure. A reason of
 * WH_DEAD_ENDPOINT_GONE (410) also means the endpoint is to be disabled
 * with detail as the reason. */
void wk_attempt_after_failure(const wk_outcome *o, const wh_delivery *dv,
                              const wh_endpoint *ep, const char *url,
                              int64_t now_us, wk_attempt_next *next);

#endif
