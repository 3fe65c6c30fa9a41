/*
 * pattern.h - event-type filters: which event types an endpoint
 * subscribes to.
 *
 * An endpoint's filter is a comma-separated list of patterns. Each
 * pattern is an exact type ("invoice.paid"), "*" or "**" (every type), or
 * a dotted pattern whose segments may be "*" (exactly one segment:
 * "order.*" matches "order.paid", not "order" nor "order.paid.late") and
 * whose last segment may be "**" (one or more segments: "order.**"
 * matches "order.paid" and "order.paid.late", not "order"). Matching is
 * case-sensitive.
 *
 * Checks run where filters and types are accepted (webhookctl, producers);
 * matching runs in the fan-out stage for every (event, endpoint) pair, so
 * it allocates nothing. All functions are thread-safe.
 */
#ifndef WH_PATTERN_H
#define WH_PATTERN_H

#include <stddef.h>

#include "wh.h"

/* Most patterns in one list, and the longest list text. */
#define WH_PATTERN_LIST_MAX 64
#define WH_PATTERN_LIST_LEN_MAX 4096

/* Validates one pattern: 1..WH_TYPE_MAX bytes of [A-Za-z0-9_.:-*], no
 * empty segments, '*' only as a whole "*" or "**" segment, "**" only as
 * the last segment. Returns WH_OK or WH_ERR with the reason. */
int wh_pattern_check(const char *pattern, char *err,
                     size_t errlen) WH_MUST_CHECK;

/* Validates an event type: 1..WH_TYPE_MAX bytes of [A-Za-z0-9_.:-], no
 * empty segments. Returns WH_OK or WH_ERR with the reason. */
int wh_pattern_type_check(const char *type, char *err,
                          size_t errlen) WH_MUST_CHECK;

/* 1 when type matches pattern, else 0. The empty type matches nothing.
 * Inputs are meant to have passed the checks above, but any input gets
 * a defined answer. */
int wh_pattern_match(const char *pattern, const char *type);

/* Validates a comma-separated list: 1..WH_PATTERN_LIST_MAX patterns,
 * each valid, spaces around them ignored, at most WH_PATTERN_LIST_LEN_MAX
 * bytes. An empty list is refused (subscribe to everything with "*"). */
int wh_pattern_list_check(const char *csv, char *err,
                          size_t errlen) WH_MUST_CHECK;

/* 1 when type matches any pattern of the list csv (as accepted by
 * wh_pattern_list_check), else 0. An empty list matches nothing. */
int wh_pattern_list_match(const char *csv, const char *type);

#endif
