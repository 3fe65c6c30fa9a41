/*
 * endpoints.h - endpoints as stored in webhooks.endpoints: create, load,
 * enable/disable. Seals and opens secrets with the secretbox, so rows read
 * here carry usable signing keys. Used by webhookctl and by the worker's
 * endpoint cache (one thread per wh_db).
 */
#ifndef WH_ENDPOINTS_H
#define WH_ENDPOINTS_H

#include <stdbool.h>

#include "db.h"
#include "retry.h"
#include "secretbox.h"
#include "sign.h"
#include "wh.h"

#define WH_ENDPOINT_ID_MAX 44

typedef struct wh_endpoint {
    char id[WH_ENDPOINT_ID_MAX];
    char app[WH_ID_MAX + 1];
    char *url;                 /* owned */
    char *event_types;         /* owned; comma-separated patterns */
    char *description;         /* owned */
    wh_secret secrets[WH_SIGN_MAX_SECRETS];
    size_t nsecrets;
    bool ordered;
    int max_in_flight;
    int rate_limit_per_s;      /* 0 = unlimited */
    int64_t timeout_ms;        /* 0 = worker default */
    bool disabled;
    char *disabled_reason;     /* owned, may be NULL */
    char created_at[40];
    bool custom_retry;         /* retry differs from the default */
    wh_retry_policy retry;
} wh_endpoint;

/* What `endpoint add` asks for. secret may be NULL to generate one. */
typedef struct {
    const char *app;
    const char *url;
    const char *secret;
    const char *event_types;   /* NULL = "*" */
    const char *description;
    bool unordered;
    int64_t max_in_flight;     /* 0 = default */
    int64_t rate_limit_per_s;  /* 0 = unlimited */
    int64_t timeout_ms;        /* 0 = default */
    const char *retry_schedule; /* "1s,2s,4s", NULL = default */
} wh_endpoint_spec;

/* Validates spec, seals the secret and inserts the row. On WH_OK id_out
 * (WH_ENDPOINT_ID_MAX) holds the new id and, when a secret was generated,
 * secret_out (WH_SECRET_TEXT_MAX) holds it; otherwise secret_out is "". */
int wh_endpoints_add(wh_db *db, const wh_secretbox *sb,
                     const wh_endpoint_spec *spec, char *id_out,
                     char *secret_out, char *err, size_t errlen) WH_MUST_CHECK;

/* Loads endpoints: all of them (id NULL) or one. Calls fn for each row;
 * fn takes ownership of the endpoint (free with wh_endpoint_free). *found
 * (may be NULL) counts rows. A row whose secret cannot be opened is
 * reported through err and fails the load. */
typedef void wh_endpoint_fn(wh_endpoint *ep, void *opaque);
int wh_endpoints_load(wh_db *db, const wh_secretbox *sb, const char *id,
                      wh_endpoint_fn *fn, void *opaque, int *found,
                      char *err, size_t errlen) WH_MUST_CHECK;

/* Sets disabled state. Enabling also makes the endpoint's paused
 * deliveries (retries due at 'infinity') due now. WH_DECLINED when no such
 * endpoint. */
int wh_endpoints_set_disabled(wh_db *db, const char *id, bool disabled,
                              const char *reason, char *err,
                              size_t errlen) WH_MUST_CHECK;

void wh_endpoint_free(wh_endpoint *ep);

#endif
