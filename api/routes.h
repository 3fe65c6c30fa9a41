/*
 * routes.h - webhook-api's routes other than ingest (routes.c): the
 * probes, /metrics and the contract. Handlers run on a request thread
 * (see server.h).
 */
#ifndef API_ROUTES_H
#define API_ROUTES_H

#include "server.h"

/* The contract, docs/openapi.yaml, embedded at build time. */
extern const char api_openapi_yaml[];
extern const size_t api_openapi_yaml_len;

void api_route_healthz(api_req *r);
void api_route_readyz(api_req *r);
void api_route_metrics(api_req *r);
void api_route_openapi(api_req *r);

#endif
