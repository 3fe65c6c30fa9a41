/*
 * endpoints_api.h - the routes of /v1/apps/{app}/endpoints (endpoints.c).
 * Path segments: 0 "v1", 1 "apps", 2 the app, 3 "endpoints", 4 the
 * endpoint id, 5 the action.
 */
#ifndef API_ENDPOINTS_API_H
#define API_ENDPOINTS_API_H

#include "server.h"

void api_endpoints_list(api_req *r);
void api_endpoints_create(api_req *r);
void api_endpoints_get(api_req *r);
void api_endpoints_patch(api_req *r);
void api_endpoints_enable(api_req *r);
void api_endpoints_disable(api_req *r);

#endif
