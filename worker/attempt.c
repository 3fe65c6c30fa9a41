/*
 * attempt.c - starting one delivery attempt and reading its outcome (see
 * attempt.h): Standard Webhooks signature and headers, the request handed
 * to the HTTP adapter, success and breaker rules, and the retry policy's
 * verdict after a failure. Main thread; no state.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attempt.h"
#include "retry.h"
#include "sign.h"

void wk_attempt_fail(wk_outcome *o, const char *error_class,
                     const char *error)
{
    o->status = 0;
    o->latency_us = 0;
    o->retry_after_s = -1;
    wh_strlcpy(o->error_class, error_class, sizeof(o->error_class));
    wh_strlcpy(o->error, error, sizeof(o->error));
}

/* The webhook-signature value: a "v1" entry per live HMAC secret, then a
 * "v1a" entry per live ed25519 key, each kind newest first. A key past
 * its overlap signs no more (no restart or refresh needed for that). */
static int sign(const wh_endpoint *ep, const wh_delivery *dv, int64_t ts,
                char *out, size_t cap)
{
    const wh_secret *hmac[WH_SIGN_MAX_SECRETS];
    const wh_signkey *ed[WH_SIGN_MAX_SECRETS];
    size_t nh = 0, ne = 0;
    for (size_t i = 0; i < ep->nsecrets; i++)
        if (ep->secret_expires_s[i] == 0 || ep->secret_expires_s[i] > ts)
            hmac[nh++] = &ep->secrets[i];
    for (size_t i = 0; i < ep->nsignkeys; i++)
        if (ep->signkey_expires_s[i] == 0 || ep->signkey_expires_s[i] > ts)
            ed[ne++] = &ep->signkeys[i];
    if (nh + ne == 0)
        return WH_ERR;
    out[0] = '\0';
    size_t used = 0;
    if (nh) {
        /* wh_sign takes the secrets themselves, in order */
        wh_secret live[WH_SIGN_MAX_SECRETS];
        for (size_t i = 0; i < nh; i++)
            live[i] = *hmac[i];
        int rc = wh_sign(live, nh, dv->delivery_id, ts, dv->event.payload,
                         dv->event.payload_len, out, cap);
        for (size_t i = 0; i < nh; i++)
            wh_sign_clear_secret(&live[i]);
        if (rc != WH_OK)
            return WH_ERR;
        used = strlen(out);
    }
    if (ne) {
        if (used)
            out[used++] = ' ';
        if (wh_sign_ed25519(ed, ne, dv->delivery_id, ts, dv->event.payload,
                            dv->event.payload_len, out + used,
                            cap - used) != WH_OK)
            return WH_ERR;
    }
    return WH_OK;
}

int wk_attempt_start(wh_http *http, wh_http_req *req,
                     char url[WH_URL_MAX + 1], const wh_endpoint *ep,
                     const wh_delivery *dv, int64_t attempted_at_us,
                     const wk_attempt_conf *conf, void *opaque,
                     wk_outcome *o)
{
    char sig[WH_SIGNATURE_HEADER_MAX], err[WH_ERRLEN];
    int64_t ts = attempted_at_us / 1000000;
    if (sign(ep, dv, ts, sig, sizeof(sig)) != WH_OK) {
        wk_attempt_fail(o, "signing", "cannot sign the request");
        return WH_ERR;
    }
    /* header lines: fixed ones plus the event's own */
    char fixed[4][WH_SIGNATURE_HEADER_MAX + WH_CONTENT_TYPE_MAX + 64];
    const char *lines[4 + WH_EVENT_HEADERS_MAX + 1];
    char *extra[WH_EVENT_HEADERS_MAX] = {0};
    size_t n = 0;
    snprintf(fixed[0], sizeof(fixed[0]), "content-type: %s",
             dv->event.content_type);
    snprintf(fixed[1], sizeof(fixed[1]), "webhook-id: %s", dv->delivery_id);
    snprintf(fixed[2], sizeof(fixed[2]), "webhook-timestamp: %lld",
             (long long)ts);
    snprintf(fixed[3], sizeof(fixed[3]), "webhook-signature: %s", sig);
    for (int i = 0; i < 4; i++)
        lines[n++] = fixed[i];
    for (size_t i = 0; i < dv->event.n_headers; i++) {
        const wh_header_kv *h = &dv->event.headers[i];
        size_t len = strlen(h->name) + strlen(h->value) + 3;
        if ((extra[i] = malloc(len)) != NULL) {
            snprintf(extra[i], len, "%s: %s", h->name, h->value);
            lines[n++] = extra[i];
        }
    }
    lines[n] = NULL;
    wh_strlcpy(url, ep->url, WH_URL_MAX + 1);
    memset(req, 0, sizeof(*req));
    req->url = url;
    req->body = dv->event.payload;
    req->body_len = dv->event.payload_len;
    req->headers = lines;
    if (ep->tls_cert && ep->tls_key) {
        req->tls_cert = ep->tls_cert;
        req->tls_cert_len = ep->tls_cert_len;
        req->tls_key = ep->tls_key;
        req->tls_key_len = ep->tls_key_len;
    }
    req->tls_ca = ep->tls_ca;
    req->tls_ca_len = ep->tls_ca_len;
    req->timeout_ms = ep->timeout_ms ? ep->timeout_ms : conf->timeout_ms;
    req->connect_timeout_ms = conf->connect_timeout_ms;
    if (req->connect_timeout_ms > req->timeout_ms)
        req->connect_timeout_ms = req->timeout_ms;
    req->opaque = opaque;
    int rc = wh_http_start(http, req, err, sizeof(err));
    for (size_t i = 0; i < dv->event.n_headers; i++)
        free(extra[i]);
    req->headers = NULL;
    if (rc != WH_OK) {
        wk_attempt_fail(o, "other", err);
        return WH_ERR;
    }
    return WH_OK;
}

bool wk_attempt_outcome(const wh_http_req *req, wk_outcome *o)
{
    bool ok = req->error_class == WH_HTTP_NONE && req->status >= 200 &&
              req->status <= 299;
    o->status = req->status;
    o->latency_us = req->latency_us;
    o->retry_after_s = req->retry_after_s;
    if (req->error_class != WH_HTTP_NONE) {
        wh_strlcpy(o->error_class, wh_http_error_name(req->error_class),
                   sizeof(o->error_class));
        wh_strlcpy(o->error, req->error, sizeof(o->error));
    } else if (!ok) {
        wh_strlcpy(o->error_class, "http_status", sizeof(o->error_class));
        snprintf(o->error, sizeof(o->error), "HTTP %d", req->status);
    }
    return ok;
}

bool wk_attempt_unwell(const wk_outcome *o, bool ok)
{
    return !ok && !(o->status > 0 && o->status < 500 && o->status != 429);
}

void wk_attempt_after_failure(const wk_outcome *o, const wh_delivery *dv,
                              const wh_endpoint *ep, const char *url,
                              int64_t now_us, wk_attempt_next *next)
{
    wh_retry_verdict v = wh_retry_classify(o->status, o->error_class);
    memset(next, 0, sizeof(*next));
    if (v == WH_RETRY_GONE) {
        next->reason = WH_DEAD_ENDPOINT_GONE;
        snprintf(next->detail, sizeof(next->detail), "HTTP 410 Gone from %s",
                 url);
        return;
    }
    if (v == WH_RETRY_REFUSED) {
        next->reason = WH_DEAD_ADDRESS_REFUSED;
        snprintf(next->detail, sizeof(next->detail),
                 "%s: refused by the SSRF guard, not retried (a range "
                 "WEBHOOK_ALLOW_PRIVATE_NETS lists is let through)",
                 o->error);
        return;
    }
    if (v == WH_RETRY_NO) {
        next->reason = WH_DEAD_REJECTED;
        snprintf(next->detail, sizeof(next->detail), "%s is not retried",
                 o->error);
        return;
    }
    wh_retry_policy def;
    const wh_retry_policy *policy = ep ? &ep->retry : NULL;
    if (!policy) {
        wh_retry_policy_default(&def);
        policy = &def;
    }
    int64_t age_ms = dv->created_at_us ? (now_us - dv->created_at_us) / 1000
                                       : 0;
    int64_t delay_ms;
    if (wh_retry_next(policy, dv->attempt, age_ms, wh_retry_random(),
                      &delay_ms) != WH_OK) {
        bool expired = dv->attempt < wh_retry_max_attempts(policy);
        next->reason = expired ? WH_DEAD_EXPIRED : WH_DEAD_ATTEMPTS_EXHAUSTED;
        snprintf(next->detail, sizeof(next->detail), "%s after %u attempts: %s",
                 expired ? "expired" : "gave up", dv->attempt, o->error);
        return;
    }
    if ((o->status == 429 || o->status == 503) && o->retry_after_s >= 0)
        delay_ms = wh_retry_after_delay(policy, o->retry_after_s, delay_ms);
    next->retry = true;
    next->attempt = dv->attempt + 1;
    next->due_us = now_us + delay_ms * 1000;
}
