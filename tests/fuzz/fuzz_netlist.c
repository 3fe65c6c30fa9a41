/*
 * fuzz_netlist.c - libFuzzer target for CIDR address lists and the
 * outbound address policy of lib/url.c. The input, cut at its first NUL,
 * is an allowlist text (WEBHOOK_ALLOW_NETWORKS). An accepted list has one
 * range per comma-separated entry, at most WH_NETLIST_MAX, and contains
 * the network address of each of its entries; an IPv4 address and its
 * IPv4-mapped IPv6 form are judged alike by wh_netlist_contains and
 * wh_url_blocked_reason; wh_url_address_allowed is exactly "public or in
 * the list". Seeds: corpus/fuzz_netlist/.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "url.h"

static void v4_sa(struct sockaddr_in *sin, const uint8_t a[4])
{
    memset(sin, 0, sizeof(*sin));
    sin->sin_family = AF_INET;
    memcpy(&sin->sin_addr, a, 4);
}

static void v6_sa(struct sockaddr_in6 *sin6, const uint8_t a[16])
{
    memset(sin6, 0, sizeof(*sin6));
    sin6->sin6_family = AF_INET6;
    memcpy(&sin6->sin6_addr, a, 16);
}

static bool same_reason(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* The policy's answers for one address agree with each other. */
static void require_policy(const wh_netlist *list, const struct sockaddr *sa)
{
    char why[256];
    int in = wh_netlist_contains(list, sa);
    const char *reason = wh_url_blocked_reason(sa);
    int allowed = wh_url_address_allowed(sa, list, why, sizeof(why));
    REQUIRE(in == 0 || in == 1);
    REQUIRE(allowed == (reason == NULL || in));
}

/* An IPv4 address and ::ffff:a.b.c.d are the same address to the policy. */
static void require_mapped_alike(const wh_netlist *list, const uint8_t a[4])
{
    struct sockaddr_in sin;
    struct sockaddr_in6 sin6;
    uint8_t m[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    memcpy(m + 12, a, 4);
    v4_sa(&sin, a);
    v6_sa(&sin6, m);
    REQUIRE(wh_netlist_contains(list, (struct sockaddr *)&sin) ==
            wh_netlist_contains(list, (struct sockaddr *)&sin6));
    REQUIRE(same_reason(wh_url_blocked_reason((struct sockaddr *)&sin),
                        wh_url_blocked_reason((struct sockaddr *)&sin6)));
    require_policy(list, (struct sockaddr *)&sin);
    require_policy(list, (struct sockaddr *)&sin6);
}

/* Each entry's own address (host bits are refused, so it is the network
 * address) is inside the list. */
static void require_entries_inside(const wh_netlist *list, const char *text)
{
    const char *p = text;
    for (;;) {
        size_t n = strcspn(p, ",");
        char entry[80];
        size_t s = 0, t = n;
        while (s < t && (p[s] == ' ' || p[s] == '\t'))
            s++;
        while (t > s && (p[t - 1] == ' ' || p[t - 1] == '\t'))
            t--;
        if (t - s < sizeof(entry)) {
            memcpy(entry, p + s, t - s);
            entry[t - s] = '\0';
            entry[strcspn(entry, "/")] = '\0';
            uint8_t a[16];
            if (inet_pton(AF_INET, entry, a) == 1) {
                struct sockaddr_in sin;
                v4_sa(&sin, a);
                REQUIRE(wh_netlist_contains(list, (struct sockaddr *)&sin));
            } else if (inet_pton(AF_INET6, entry, a) == 1) {
                struct sockaddr_in6 sin6;
                v6_sa(&sin6, a);
                REQUIRE(wh_netlist_contains(list, (struct sockaddr *)&sin6));
            } else {
                REQUIRE(0); /* an accepted entry is an address */
            }
        } else {
            REQUIRE(0); /* longer than any address with a prefix */
        }
        if (p[n] == '\0')
            break;
        p += n + 1;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    REQUIRE(text != NULL);
    memcpy(text, data, size);
    text[size] = '\0';
    char err[WH_ERRLEN];
    wh_netlist *list = (wh_netlist *)err;

    /* addresses taken from the input's bytes, judged with and without a
     * list */
    uint8_t a16[16] = {0};
    memcpy(a16, data, size < 16 ? size : 16);
    struct sockaddr_in6 sin6;
    v6_sa(&sin6, a16);
    require_mapped_alike(NULL, a16);
    require_policy(NULL, (struct sockaddr *)&sin6);

    if (wh_netlist_parse(text, &list, err, sizeof(err)) != WH_OK) {
        REQUIRE(list == NULL);
        REQUIRE(err[0] != '\0');
        free(text);
        return 0;
    }
    REQUIRE(list != NULL);
    size_t len = strlen(text), commas = 0;
    REQUIRE(len <= WH_NETLIST_TEXT_MAX);
    for (size_t i = 0; i < len; i++)
        commas += text[i] == ',';
    size_t count = wh_netlist_count(list);
    REQUIRE(count <= WH_NETLIST_MAX);
    if (strspn(text, " \t") == len) {
        REQUIRE(count == 0);
    } else {
        REQUIRE(count == commas + 1);
        require_entries_inside(list, text);
    }
    require_mapped_alike(list, a16);
    require_mapped_alike(list, a16 + 12);
    require_policy(list, (struct sockaddr *)&sin6);
    wh_netlist_free(list);
    free(text);
    return 0;
}
