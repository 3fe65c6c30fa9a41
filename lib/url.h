/*
 * url.h - endpoint URL validation and the outbound address policy that
 * guards deliveries against SSRF.
 *
 * wh_url_check runs wherever an endpoint URL is accepted (webhookctl, the
 * database layer). The address functions run in the HTTP adapter on every
 * socket it is about to connect (the check that counts), and in webhookctl
 * on resolved addresses as an early warning. Everything here is pure and
 * thread-safe; a wh_netlist is read-only after parsing.
 */
#ifndef WH_URL_H
#define WH_URL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "wh.h"

/* Longest host name accepted in a URL (DNS limit plus a trailing dot). */
#define WH_URL_HOST_MAX 254
/* Most entries in one address list, and the longest list text. */
#define WH_NETLIST_MAX 256
#define WH_NETLIST_TEXT_MAX 16384

/*
 * Accepts only absolute http:// or https:// URLs (scheme in any case) of
 * at most WH_URL_MAX bytes with a host, optional port 1..65535, no
 * credentials (user:pass@), no fragment, and only printable ASCII without
 * spaces, '\\', '"', '<', '>' or '`'. The host is a DNS name (letters,
 * digits, '-', '_', non-empty labels of at most 63 bytes), a dotted-quad
 * IPv4 address, or an IPv6 address in brackets without a zone id; a host
 * whose last label is numeric must be a valid dotted quad. Returns WH_OK,
 * or WH_ERR with a message such as "URL must start with https:// or
 * http://", "URL has no host", "URL must not contain credentials".
 */
int wh_url_check(const char *url, char *err, size_t errlen) WH_MUST_CHECK;

/* Checks url like wh_url_check and extracts its host (IPv6 without
 * brackets) into host (size hostlen, at least WH_URL_HOST_MAX + 1 for any
 * host) and its port (explicit, else 443 or 80) into *port. */
int wh_url_host(const char *url, char *host, size_t hostlen, int *port,
                char *err, size_t errlen) WH_MUST_CHECK;

/* Whether url's scheme is https (case-insensitive): what WEBHOOK_HTTPS_ONLY
 * lets through. */
bool wh_url_is_https(const char *url);

/* A list of IPv4 and IPv6 CIDR ranges (an operator allowlist). */
typedef struct wh_netlist wh_netlist;

/*
 * Parses a comma-separated list such as "127.0.0.0/8, ::1/128, 10.1.2.3"
 * (a bare address is a single host). Spaces around entries are ignored;
 * an empty or all-space text gives an empty list. Refuses malformed
 * entries, empty entries, prefixes with host bits set ("10.1.2.3/8"),
 * more than WH_NETLIST_MAX entries or WH_NETLIST_TEXT_MAX bytes. IPv6
 * ranges inside ::ffff:0:0/96 are stored as the IPv4 ranges they denote.
 * On WH_OK the caller owns *out (free with wh_netlist_free).
 */
int wh_netlist_parse(const char *text, wh_netlist **out, char *err,
                     size_t errlen) WH_MUST_CHECK;

void wh_netlist_free(wh_netlist *list);

/* Number of ranges in list. */
size_t wh_netlist_count(const wh_netlist *list);

/* 1 when the address of sa (AF_INET or AF_INET6; an IPv4-mapped IPv6
 * address counts as its IPv4 address) is inside a range of list, else 0.
 * list may be NULL (empty). */
int wh_netlist_contains(const wh_netlist *list, const struct sockaddr *sa);

/*
 * NULL when the address of sa is public. Otherwise the name of the range
 * it is in: "unspecified", "loopback", "private", "carrier-grade NAT",
 * "link-local", "cloud metadata", "reserved", "documentation",
 * "benchmarking", "multicast", "broadcast", "unique-local (IPv6)",
 * "site-local (IPv6)", or "unsupported address family" for families
 * other than AF_INET and AF_INET6. IPv6 addresses that embed an IPv4
 * address (IPv4-mapped ::ffff:0:0/96, NAT64 64:ff9b::/96, 6to4 2002::/16)
 * are judged by the embedded address; other IPv6 outside 2000::/3 is
 * "reserved".
 */
const char *wh_url_blocked_reason(const struct sockaddr *sa);

/* 1 when a connection to sa is allowed: its address is public or inside
 * allow (may be NULL). Otherwise 0, with why (may be NULL) set to e.g.
 * "address 10.0.0.5 is private". */
int wh_url_address_allowed(const struct sockaddr *sa, const wh_netlist *allow,
                           char *why, size_t whylen);

/*
 * Resolves url's host as a worker would (the system resolver, every
 * address family), waiting at most timeout_ms, and judges each address
 * with wh_url_address_allowed. WH_OK: every address is allowed.
 * WH_DECLINED: at least one is refused; msg lists them ("address ::1 is
 * loopback; ..."). WH_AGAIN: the host did not resolve in time or at all
 * (msg says so; nothing was checked). WH_ERR: url has no host (msg).
 * A lookup still running when the time is up is cancelled, or left to
 * the resolver's thread (a few bytes, for a short-lived program such as
 * webhookctl).
 */
int wh_url_resolve_check(const char *url, const wh_netlist *allow,
                         int timeout_ms, char *msg, size_t msglen);

#endif
