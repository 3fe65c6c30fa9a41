/*
 * fuzz_url.c - libFuzzer target for endpoint URL validation in lib/url.c
 * (wh_url_check, wh_url_host). The input, cut at its first NUL, is a URL.
 * An accepted URL is within WH_URL_MAX bytes, printable ASCII without the
 * refused characters, http(s)://, without a fragment or credentials; its
 * host is non-empty, inside the URL, within WH_URL_HOST_MAX bytes and a
 * name, a dotted quad or a bracketed IPv6 address; its port is explicit or
 * the scheme's; wh_url_host agrees with wh_url_check and honours its
 * buffer size exactly. Seeds: corpus/fuzz_url/; dictionary: url.dict.
 */
#include <arpa/inet.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "check.h"
#include "url.h"

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

/* The host as wh_url_host must report it, by reading the URL again. */
static void require_host(const char *url, const char *host, int port)
{
    bool https = strncasecmp(url, "https://", 8) == 0;
    const char *auth = url + (https ? 8 : 7);
    size_t alen = strcspn(auth, "/?");
    size_t hlen = strlen(host);
    REQUIRE(hlen > 0);
    REQUIRE(memchr(auth, '@', alen) == NULL);
    if (auth[0] == '[') {
        struct in6_addr a6;
        REQUIRE(hlen < alen && memcmp(auth + 1, host, hlen) == 0);
        REQUIRE(auth[1 + hlen] == ']');
        REQUIRE(inet_pton(AF_INET6, host, &a6) == 1);
        REQUIRE(strchr(host, '%') == NULL);
    } else {
        REQUIRE(hlen <= WH_URL_HOST_MAX);
        REQUIRE(hlen <= alen && memcmp(auth, host, hlen) == 0);
        REQUIRE(strspn(host, "abcdefghijklmnopqrstuvwxyz"
                             "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") ==
                hlen);
        /* a numeric last label means a dotted quad */
        const char *last = strrchr(host, '.');
        last = last ? last + 1 : host;
        if (*last && strspn(last, "0123456789") == strlen(last)) {
            struct in_addr a4;
            REQUIRE(inet_pton(AF_INET, host, &a4) == 1);
        }
    }
    const char *after = auth + (auth[0] == '[' ? hlen + 2 : hlen);
    REQUIRE(after <= auth + alen);
    if (after == auth + alen) {
        REQUIRE(port == (https ? 443 : 80));
    } else {
        REQUIRE(*after == ':' && is_digit(after[1]));
        REQUIRE(port == atoi(after + 1));
    }
    REQUIRE(port >= 1 && port <= 65535);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *url = malloc(size + 1);
    REQUIRE(url != NULL);
    memcpy(url, data, size);
    url[size] = '\0';
    char err[WH_ERRLEN], host[WH_URL_HOST_MAX + 1 + 64];
    int port = -1;

    int ok = wh_url_check(url, err, sizeof(err)) == WH_OK;
    int hok = wh_url_host(url, host, sizeof(host), &port, err,
                          sizeof(err)) == WH_OK;
    REQUIRE(ok == hok);
    if (!ok) {
        REQUIRE(err[0] != '\0');
        free(url);
        return 0;
    }
    size_t n = strlen(url);
    REQUIRE(n <= WH_URL_MAX);
    REQUIRE(strncasecmp(url, "https://", 8) == 0 ||
            strncasecmp(url, "http://", 7) == 0);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)url[i];
        REQUIRE(c > ' ' && c < 0x7f);
        REQUIRE(!strchr("\\\"<>`#", c));
    }
    require_host(url, host, port);

    /* the host buffer's size is honoured to the byte */
    size_t hlen = strlen(host);
    char *exact = malloc(hlen + 1);
    REQUIRE(exact != NULL);
    int p2 = -1;
    REQUIRE(wh_url_host(url, exact, hlen + 1, &p2, err, sizeof(err)) ==
            WH_OK);
    REQUIRE(strcmp(exact, host) == 0 && p2 == port);
    REQUIRE(wh_url_host(url, exact, hlen, &p2, err, sizeof(err)) == WH_ERR);
    free(exact);
    free(url);
    return 0;
}
