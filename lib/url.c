/*
 * url.c - endpoint URL validation, CIDR address lists and the table of
 * special-purpose IPv4/IPv6 ranges that outbound deliveries must not
 * reach (declared in url.h).
 *
 * Pure functions over their arguments: callable from any thread. The
 * range tables follow the IANA special-purpose address registries plus
 * known cloud metadata addresses.
 */
#include "url.h"

#include <arpa/inet.h>
#include <assert.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define ENTRY_MAX 64 /* longest entry of an address list */

/* ---- URLs ---- */

struct url_parts {
    const char *host; /* not NUL-terminated; no brackets */
    size_t hostlen;
    int port;
};

static bool is_host_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '-' || c == '_';
}

static bool all_digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
    }
    return n > 0;
}

static int check_hostname(const char *h, size_t n, char *err, size_t errlen)
{
    const char *label = h, *end = h + n;
    const char *last = h;
    size_t lastlen = 0;
    char tmp[WH_URL_HOST_MAX + 1];

    if (n > WH_URL_HOST_MAX || (n == WH_URL_HOST_MAX && h[n - 1] != '.'))
        return wh_errf(err, errlen, "URL host is longer than %d bytes",
                       WH_URL_HOST_MAX - 1);
    if (h[n - 1] == '.')
        end--;
    while (label <= end) {
        const char *dot = memchr(label, '.', (size_t)(end - label));
        const char *lend = dot ? dot : end;
        size_t llen = (size_t)(lend - label);
        if (llen == 0)
            return wh_errf(err, errlen, "URL host '%.*s' has an empty label",
                           (int)n, h);
        if (llen > 63)
            return wh_errf(err, errlen,
                           "URL host has a label longer than 63 bytes");
        for (size_t i = 0; i < llen; i++) {
            if (!is_host_char(label[i]))
                return wh_errf(err, errlen,
                               "URL host contains the invalid character "
                               "'%c'",
                               label[i]);
        }
        last = label;
        lastlen = llen;
        if (!dot)
            break;
        label = dot + 1;
    }

    /* A numeric last label makes resolvers read the host as an IPv4
     * address in some legacy form (2130706433, 0x7f.1, 127.1); only the
     * dotted quad is accepted. */
    bool hex = lastlen >= 2 && last[0] == '0' && (last[1] | 0x20) == 'x';
    if (all_digits(last, lastlen) || hex) {
        struct in_addr a;
        size_t hl = (size_t)(end - h);
        memcpy(tmp, h, hl);
        tmp[hl] = '\0';
        if (inet_pton(AF_INET, tmp, &a) != 1)
            return wh_errf(err, errlen,
                           "URL host '%s' is not a valid IPv4 address (use "
                           "the dotted-quad form, e.g. 192.0.2.1)",
                           tmp);
    }
    return WH_OK;
}

static int parse_url(const char *url, struct url_parts *p, char *err,
                     size_t errlen)
{
    size_t n, skip;

    if (!url || !*url)
        return wh_errf(err, errlen, "URL is empty");
    n = strnlen(url, WH_URL_MAX + 1);
    if (n > WH_URL_MAX)
        return wh_errf(err, errlen, "URL is longer than %d bytes",
                       WH_URL_MAX);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)url[i];
        if (c <= ' ' || c == 0x7f)
            return wh_errf(err, errlen,
                           "URL must not contain whitespace or control "
                           "characters (byte %zu)",
                           i + 1);
        if (c >= 0x80)
            return wh_errf(err, errlen,
                           "URL must be ASCII (percent-encode the path, "
                           "use the punycode form of the host)");
        if (strchr("\\\"<>`", c))
            return wh_errf(err, errlen, "URL must not contain '%c'", c);
    }
    if (strncasecmp(url, "https://", 8) == 0) {
        skip = 8;
        p->port = 443;
    } else if (strncasecmp(url, "http://", 7) == 0) {
        skip = 7;
        p->port = 80;
    } else {
        return wh_errf(err, errlen, "URL must start with https:// or http://");
    }
    if (strchr(url, '#'))
        return wh_errf(err, errlen, "URL must not contain a fragment (#...)");

    const char *auth = url + skip;
    size_t alen = strcspn(auth, "/?");
    const char *aend = auth + alen, *rest;

    if (memchr(auth, '@', alen))
        return wh_errf(err, errlen,
                       "URL must not contain credentials (user:password@)");
    if (alen == 0)
        return wh_errf(err, errlen, "URL has no host");

    if (auth[0] == '[') {
        char tmp[INET6_ADDRSTRLEN];
        struct in6_addr a6;
        const char *close = memchr(auth, ']', alen);
        if (!close)
            return wh_errf(err, errlen,
                           "URL has an IPv6 address without its closing ']'");
        p->host = auth + 1;
        p->hostlen = (size_t)(close - p->host);
        if (p->hostlen == 0)
            return wh_errf(err, errlen, "URL has no host");
        if (memchr(p->host, '%', p->hostlen))
            return wh_errf(err, errlen,
                           "URL must not contain an IPv6 zone identifier");
        if (p->hostlen >= sizeof(tmp))
            return wh_errf(err, errlen,
                           "URL host is not a valid IPv6 address");
        memcpy(tmp, p->host, p->hostlen);
        tmp[p->hostlen] = '\0';
        if (inet_pton(AF_INET6, tmp, &a6) != 1)
            return wh_errf(err, errlen,
                           "URL host [%s] is not a valid IPv6 address", tmp);
        rest = close + 1;
    } else {
        const char *colon = memchr(auth, ':', alen);
        p->host = auth;
        p->hostlen = colon ? (size_t)(colon - auth) : alen;
        if (p->hostlen == 0)
            return wh_errf(err, errlen, "URL has no host");
        if (check_hostname(p->host, p->hostlen, err, errlen) != WH_OK)
            return WH_ERR;
        rest = auth + p->hostlen;
    }

    if (rest < aend) {
        size_t plen = (size_t)(aend - rest - 1);
        if (*rest != ':')
            return wh_errf(err, errlen,
                           "URL has unexpected characters after the host");
        if (plen == 0 || plen > 5 || !all_digits(rest + 1, plen))
            return wh_errf(err, errlen,
                           "URL port must be a number from 1 to 65535");
        int port = atoi(rest + 1); /* at most 5 digits: no overflow */
        if (port < 1 || port > 65535)
            return wh_errf(err, errlen,
                           "URL port must be a number from 1 to 65535");
        p->port = port;
    }
    return WH_OK;
}

int wh_url_check(const char *url, char *err, size_t errlen)
{
    struct url_parts p;
    return parse_url(url, &p, err, errlen);
}

bool wh_url_is_https(const char *url)
{
    return strncasecmp(url, "https://", 8) == 0;
}

int wh_url_host(const char *url, char *host, size_t hostlen, int *port,
                char *err, size_t errlen)
{
    struct url_parts p;

    if (parse_url(url, &p, err, errlen) != WH_OK)
        return WH_ERR;
    if (p.hostlen >= hostlen)
        return wh_errf(err, errlen, "URL host does not fit in %zu bytes",
                       hostlen);
    memcpy(host, p.host, p.hostlen);
    host[p.hostlen] = '\0';
    *port = p.port;
    return WH_OK;
}

/* ---- addresses ---- */

/* An address in both forms: v4 is valid when is_v4 (AF_INET, or IPv6
 * inside ::ffff:0:0/96); v6 always holds the IPv6 form (IPv4-mapped for
 * IPv4). */
struct addr {
    bool is_v4;
    uint8_t v4[4];
    uint8_t v6[16];
};

static const uint8_t mapped_prefix[12] = {0, 0, 0, 0, 0, 0,
                                          0, 0, 0, 0, 0xff, 0xff};

static int load_addr(const struct sockaddr *sa, struct addr *a)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        a->is_v4 = true;
        memcpy(a->v4, &s4->sin_addr, 4);
        memcpy(a->v6, mapped_prefix, 12);
        memcpy(a->v6 + 12, a->v4, 4);
        return WH_OK;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        memcpy(a->v6, &s6->sin6_addr, 16);
        a->is_v4 = memcmp(a->v6, mapped_prefix, 12) == 0;
        if (a->is_v4)
            memcpy(a->v4, a->v6 + 12, 4);
        return WH_OK;
    }
    return WH_ERR;
}

static bool prefix_match(const uint8_t *a, const uint8_t *net,
                         unsigned prefix)
{
    unsigned full = prefix / 8, bits = prefix % 8;
    if (memcmp(a, net, full) != 0)
        return false;
    if (bits == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - bits));
    return (a[full] & mask) == (net[full] & mask);
}

struct net {
    uint8_t addr[16];
    uint8_t is_v4;
    uint8_t prefix;
};

struct wh_netlist {
    size_t n;
    struct net nets[];
};

/* Parses one trimmed entry "addr" or "addr/prefix". */
static int parse_entry(const char *s, size_t n, struct net *net, char *err,
                       size_t errlen)
{
    char buf[ENTRY_MAX + 1];
    unsigned maxbits, prefix;
    const char *slash;

    if (n > ENTRY_MAX)
        return wh_errf(err, errlen, "address list entry '%.*s...' is too long",
                       20, s);
    memcpy(buf, s, n);
    buf[n] = '\0';
    slash = strchr(buf, '/');
    if (slash)
        buf[slash - buf] = '\0';

    memset(net, 0, sizeof(*net));
    if (strchr(buf, ':')) {
        if (inet_pton(AF_INET6, buf, net->addr) != 1)
            return wh_errf(err, errlen,
                           "'%.*s' is not an IPv6 address or CIDR range",
                           (int)n, s);
        maxbits = 128;
    } else {
        if (inet_pton(AF_INET, buf, net->addr) != 1)
            return wh_errf(err, errlen,
                           "'%.*s' is not an IPv4 address or CIDR range",
                           (int)n, s);
        net->is_v4 = 1;
        maxbits = 32;
    }
    prefix = maxbits;
    if (slash) {
        const char *ps = slash + 1;
        size_t plen = strlen(ps);
        if (plen == 0 || plen > 3 || !all_digits(ps, plen) ||
            (prefix = (unsigned)atoi(ps)) > maxbits)
            return wh_errf(err, errlen,
                           "'%.*s' has an invalid prefix length (0..%u)",
                           (int)n, s, maxbits);
    }
    net->prefix = (uint8_t)prefix;

    for (unsigned bit = prefix; bit < maxbits; bit++) {
        if (net->addr[bit / 8] & (0x80 >> (bit % 8))) {
            char fixed[INET6_ADDRSTRLEN];
            for (; bit < maxbits; bit++)
                net->addr[bit / 8] &= (uint8_t)~(0x80 >> (bit % 8));
            inet_ntop(net->is_v4 ? AF_INET : AF_INET6, net->addr, fixed,
                      sizeof(fixed));
            return wh_errf(err, errlen,
                           "'%.*s' has host bits set (did you mean %s/%u?)",
                           (int)n, s, fixed, prefix);
        }
    }

    if (!net->is_v4 && prefix >= 96 &&
        memcmp(net->addr, mapped_prefix, 12) == 0) {
        memmove(net->addr, net->addr + 12, 4);
        memset(net->addr + 4, 0, 12);
        net->is_v4 = 1;
        net->prefix = (uint8_t)(prefix - 96);
    }
    return WH_OK;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t';
}

int wh_netlist_parse(const char *text, wh_netlist **out, char *err,
                     size_t errlen)
{
    wh_netlist *list = NULL;
    size_t len, count = 1;
    const char *p;

    assert(text && out);
    *out = NULL;
    len = strnlen(text, WH_NETLIST_TEXT_MAX + 1);
    if (len > WH_NETLIST_TEXT_MAX)
        return wh_errf(err, errlen, "address list is longer than %d bytes",
                       WH_NETLIST_TEXT_MAX);
    for (size_t i = 0; i < len; i++)
        count += text[i] == ',';
    if (count > WH_NETLIST_MAX)
        return wh_errf(err, errlen,
                       "address list has more than %d entries",
                       WH_NETLIST_MAX);
    list = calloc(1, sizeof(*list) + count * sizeof(list->nets[0]));
    if (!list)
        return wh_errf(err, errlen, "out of memory");

    p = text;
    while (is_space(*p))
        p++;
    if (*p == '\0') {
        *out = list;
        return WH_OK;
    }
    for (size_t idx = 1;; idx++) {
        const char *e = p + strcspn(p, ",");
        const char *s = p, *t = e;
        while (s < t && is_space(*s))
            s++;
        while (t > s && is_space(t[-1]))
            t--;
        if (s == t) {
            wh_errf(err, errlen, "address list entry %zu is empty", idx);
            goto fail;
        }
        assert(list->n < count);
        if (parse_entry(s, (size_t)(t - s), &list->nets[list->n], err,
                        errlen) != WH_OK)
            goto fail;
        list->n++;
        if (*e == '\0')
            break;
        p = e + 1;
    }
    *out = list;
    return WH_OK;

fail:
    free(list);
    return WH_ERR;
}

void wh_netlist_free(wh_netlist *list)
{
    free(list);
}

size_t wh_netlist_count(const wh_netlist *list)
{
    return list ? list->n : 0;
}

int wh_netlist_contains(const wh_netlist *list, const struct sockaddr *sa)
{
    struct addr a;

    if (!list || load_addr(sa, &a) != WH_OK)
        return 0;
    for (size_t i = 0; i < list->n; i++) {
        const struct net *net = &list->nets[i];
        if (net->is_v4 ? a.is_v4 && prefix_match(a.v4, net->addr, net->prefix)
                       : prefix_match(a.v6, net->addr, net->prefix))
            return 1;
    }
    return 0;
}

/* Where an IPv6 range embeds an IPv4 address, ranges with this name
 * defer to the embedded address. */
static const char EMBEDDED[] = "embedded";

struct range {
    uint8_t addr[16];
    uint8_t prefix;
    uint8_t v4_at; /* offset of the embedded IPv4 address (EMBEDDED) */
    const char *name;
};

/* First match wins, so single addresses come before their ranges. */
static const struct range v4_ranges[] = {
    {{169, 254, 169, 254}, 32, 0, "cloud metadata"},
    {{168, 63, 129, 16}, 32, 0, "cloud metadata"}, /* Azure WireServer */
    {{255, 255, 255, 255}, 32, 0, "broadcast"},
    {{0, 0, 0, 0}, 8, 0, "unspecified"},
    {{10, 0, 0, 0}, 8, 0, "private"},
    {{100, 64, 0, 0}, 10, 0, "carrier-grade NAT"},
    {{127, 0, 0, 0}, 8, 0, "loopback"},
    {{169, 254, 0, 0}, 16, 0, "link-local"},
    {{172, 16, 0, 0}, 12, 0, "private"},
    {{192, 0, 0, 0}, 24, 0, "reserved"},
    {{192, 0, 2, 0}, 24, 0, "documentation"},
    {{192, 88, 99, 0}, 24, 0, "reserved"}, /* 6to4 relay anycast */
    {{192, 168, 0, 0}, 16, 0, "private"},
    {{198, 18, 0, 0}, 15, 0, "benchmarking"},
    {{198, 51, 100, 0}, 24, 0, "documentation"},
    {{203, 0, 113, 0}, 24, 0, "documentation"},
    {{224, 0, 0, 0}, 4, 0, "multicast"},
    {{240, 0, 0, 0}, 4, 0, "reserved"},
};

/* ::ffff:0:0/96 never reaches this table: load_addr turns it into IPv4.
 * NAT64 (64:ff9b::/96) is judged by its IPv4 address because DNS64
 * networks give every IPv4-only host such an address. */
static const struct range v6_ranges[] = {
    {{0xfd, 0x00, 0x0e, 0xc2, [14] = 0x02, [15] = 0x54},
     128, 0, "cloud metadata"}, /* fd00:ec2::254 */
    {{0}, 128, 0, "unspecified"},
    {{[15] = 1}, 128, 0, "loopback"},
    {{0x00, 0x64, 0xff, 0x9b}, 96, 12, EMBEDDED},         /* NAT64 */
    {{0x20, 0x02}, 16, 2, EMBEDDED},                      /* 6to4 */
    {{0}, 96, 0, "reserved"},                             /* v4-compatible */
    {{0x00, 0x64, 0xff, 0x9b, 0x00, 0x01}, 48, 0, "reserved"}, /* NAT64 */
    {{0x01, 0x00}, 64, 0, "reserved"},                    /* discard-only */
    {{0x20, 0x01, 0x0d, 0xb8}, 32, 0, "documentation"},
    {{0x20, 0x01}, 23, 0, "reserved"}, /* IETF protocols, Teredo */
    {{0x3f, 0xff}, 20, 0, "documentation"},
    {{0xfc}, 7, 0, "unique-local (IPv6)"},
    {{0xfe, 0x80}, 10, 0, "link-local"},
    {{0xfe, 0xc0}, 10, 0, "site-local (IPv6)"},
    {{0xff}, 8, 0, "multicast"},
};

static const char *classify_v4(const uint8_t v4[4])
{
    for (size_t i = 0; i < WH_ARRAY_LEN(v4_ranges); i++) {
        if (prefix_match(v4, v4_ranges[i].addr, v4_ranges[i].prefix))
            return v4_ranges[i].name;
    }
    return NULL;
}

const char *wh_url_blocked_reason(const struct sockaddr *sa)
{
    struct addr a;

    assert(sa);
    if (load_addr(sa, &a) != WH_OK)
        return "unsupported address family";
    if (a.is_v4)
        return classify_v4(a.v4);
    for (size_t i = 0; i < WH_ARRAY_LEN(v6_ranges); i++) {
        const struct range *r = &v6_ranges[i];
        if (!prefix_match(a.v6, r->addr, r->prefix))
            continue;
        if (r->name == EMBEDDED)
            return classify_v4(a.v6 + r->v4_at);
        return r->name;
    }
    if ((a.v6[0] & 0xe0) != 0x20) /* outside 2000::/3 global unicast */
        return "reserved";
    return NULL;
}

int wh_url_address_allowed(const struct sockaddr *sa, const wh_netlist *allow,
                           char *why, size_t whylen)
{
    char ip[INET6_ADDRSTRLEN];
    const char *reason;

    assert(sa);
    if (sa->sa_family != AF_INET && sa->sa_family != AF_INET6) {
        wh_errf(why, whylen, "address family %d is not allowed",
                (int)sa->sa_family);
        return 0;
    }
    if (wh_netlist_contains(allow, sa))
        return 1;
    reason = wh_url_blocked_reason(sa);
    if (!reason)
        return 1;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, ip,
                  sizeof(ip));
    else
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, ip,
                  sizeof(ip));
    wh_errf(why, whylen, "address %s is %s", ip, reason);
    return 0;
}

/* One lookup of wh_url_resolve_check: on the heap, since a lookup that
 * outlives its time may still be written by the resolver's thread. */
typedef struct {
    char host[WH_URL_MAX + 1];
    struct addrinfo hints;
    struct gaicb req;
} lookup;

int wh_url_resolve_check(const char *url, const wh_netlist *allow,
                         int timeout_ms, char *msg, size_t msglen)
{
    char why[128];
    int port;
    msg[0] = '\0';
    lookup *lk = calloc(1, sizeof(*lk));
    if (!lk)
        return wh_errf(msg, msglen, "out of memory");
    if (wh_url_host(url, lk->host, sizeof(lk->host), &port, msg, msglen) !=
        WH_OK) {
        free(lk);
        return WH_ERR;
    }
    lk->hints.ai_family = AF_UNSPEC;
    lk->hints.ai_socktype = SOCK_STREAM;
    lk->req.ar_name = lk->host;
    lk->req.ar_request = &lk->hints;
    struct gaicb *list[1] = {&lk->req};
    int rc = getaddrinfo_a(GAI_NOWAIT, list, 1, NULL);
    int64_t deadline = wh_mono_us() + (int64_t)timeout_ms * 1000;
    while (rc == 0) {
        if ((rc = gai_error(&lk->req)) != EAI_INPROGRESS)
            break; /* 0 when resolved */
        rc = 0;
        int64_t left = deadline - wh_mono_us();
        if (left <= 0) {
            wh_errf(msg, msglen, "%s did not resolve within %d ms (not "
                    "checked)", lk->host, timeout_ms);
            if (gai_cancel(&lk->req) == EAI_CANCELED)
                free(lk);
            /* else the resolver's thread still holds lk: left to it */
            return WH_AGAIN;
        }
        struct timespec ts = {.tv_sec = (time_t)(left / 1000000),
                              .tv_nsec = (long)(left % 1000000) * 1000};
        const struct gaicb *wait[1] = {&lk->req};
        WH_IGNORE(gai_suspend(wait, 1, &ts));
    }
    if (rc != 0) {
        wh_errf(msg, msglen, "cannot resolve %s: %s (not checked)", lk->host,
                gai_strerror(rc));
        free(lk);
        return WH_AGAIN;
    }
    int refused = 0;
    size_t used = 0;
    for (struct addrinfo *ai = lk->req.ar_result; ai; ai = ai->ai_next) {
        if (wh_url_address_allowed(ai->ai_addr, allow, why, sizeof(why)))
            continue;
        int n = snprintf(msg + used, msglen - used, "%s%s",
                         refused ? "; " : "", why);
        if (n > 0 && (size_t)n < msglen - used)
            used += (size_t)n;
        refused++;
    }
    freeaddrinfo(lk->req.ar_result);
    free(lk);
    return refused ? WH_DECLINED : WH_OK;
}
