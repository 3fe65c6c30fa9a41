/*
 * test_url.c - unit tests for lib/url.c: URL acceptance and error
 * messages, host/port extraction, CIDR list parsing and membership, and
 * the blocked-range table for IPv4, IPv6 and IPv6 forms that embed IPv4
 * (mapped, NAT64, 6to4).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "test.h"
#include "url.h"

static struct sockaddr_storage ss;

/* A sockaddr for a textual IPv4 or IPv6 address. */
static const struct sockaddr *sa(const char *ip)
{
    memset(&ss, 0, sizeof(ss));
    if (strchr(ip, ':')) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(443);
        if (inet_pton(AF_INET6, ip, &s6->sin6_addr) != 1)
            fprintf(stderr, "bad test address %s\n", ip);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons(443);
        if (inet_pton(AF_INET, ip, &s4->sin_addr) != 1)
            fprintf(stderr, "bad test address %s\n", ip);
    }
    return (const struct sockaddr *)&ss;
}

static const char *reason(const char *ip)
{
    const char *r = wh_url_blocked_reason(sa(ip));
    return r ? r : "public";
}

static void test_url_ok(void)
{
    static const char *const good[] = {
        "https://example.com",
        "https://example.com/",
        "http://example.com:8080/hooks?x=1&y=%20z",
        "HTTPS://Example.COM/Path",
        "https://a.b-c.d_e.example/x",
        "https://example.com./x",
        "https://192.0.2.1/x",
        "https://[2001:db8::1]/x",
        "https://[::ffff:1.2.3.4]:8443",
        "https://localhost:1",
        "https://example.com:65535",
        "https://example.com?query",
        "https://xn--bcher-kva.example/",
        "https://host/{id}|^",
    };
    char err[WH_ERRLEN];
    for (size_t i = 0; i < WH_ARRAY_LEN(good); i++) {
        int rc = wh_url_check(good[i], err, sizeof(err));
        if (rc != WH_OK)
            fprintf(stderr, "rejected %s: %s\n", good[i], err);
        CHECK_INT(rc, WH_OK);
    }
}

static void test_url_bad(void)
{
    static const struct {
        const char *url, *err;
    } bad[] = {
        {"", "URL is empty"},
        {"ftp://example.com/", "URL must start with https:// or http://"},
        {"example.com", "URL must start with https:// or http://"},
        {"//example.com", "URL must start with https:// or http://"},
        {"https:/example.com", "URL must start with https:// or http://"},
        {"javascript:alert(1)", "URL must start with https:// or http://"},
        {"https://", "URL has no host"},
        {"https:///path", "URL has no host"},
        {"https://?q", "URL has no host"},
        {"https://:443/", "URL has no host"},
        {"https://[]/", "URL has no host"},
        {"https://user:pass@example.com/",
         "URL must not contain credentials (user:password@)"},
        {"https://user@example.com/",
         "URL must not contain credentials (user:password@)"},
        {"https://evil.com@169.254.169.254/",
         "URL must not contain credentials (user:password@)"},
        {"https://example.com/#frag", "URL must not contain a fragment (#...)"},
        {"https://example.com/a b",
         "URL must not contain whitespace or control characters (byte 22)"},
        {"https://example.com/\n",
         "URL must not contain whitespace or control characters (byte 21)"},
        {"https://example.com/\t", NULL},
        {"https://exa\x7fmple.com/", NULL},
        {"https://b\xc3\xbc"
         "cher.example/",
         "URL must be ASCII (percent-encode the path, use the punycode form "
         "of the host)"},
        {"https://example.com\\@evil/", "URL must not contain '\\'"},
        {"https://example.com/\"", "URL must not contain '\"'"},
        {"https://example.com/<script>", "URL must not contain '<'"},
        {"https://example.com:0/", "URL port must be a number from 1 to 65535"},
        {"https://example.com:65536/",
         "URL port must be a number from 1 to 65535"},
        {"https://example.com:/", "URL port must be a number from 1 to 65535"},
        {"https://example.com:123456/",
         "URL port must be a number from 1 to 65535"},
        {"https://example.com:8a/",
         "URL port must be a number from 1 to 65535"},
        {"https://example.com:-1/",
         "URL port must be a number from 1 to 65535"},
        {"https://example.com:80:80/",
         "URL port must be a number from 1 to 65535"},
        {"https://[::1/", "URL has an IPv6 address without its closing ']'"},
        {"https://[::1]x/", "URL has unexpected characters after the host"},
        {"https://[fe80::1%25eth0]/",
         "URL must not contain an IPv6 zone identifier"},
        {"https://[fe80::1%eth0]/",
         "URL must not contain an IPv6 zone identifier"},
        {"https://[not:v6:zz]/",
         "URL host [not:v6:zz] is not a valid IPv6 address"},
        {"https://[1.2.3.4]/",
         "URL host [1.2.3.4] is not a valid IPv6 address"},
        {"https://exa_mple..com/",
         "URL host 'exa_mple..com' has an empty label"},
        {"https://.example.com/", "URL host '.example.com' has an empty label"},
        {"https://./", "URL host '.' has an empty label"},
        {"https://ex!ample.com/",
         "URL host contains the invalid character '!'"},
        {"https://ex%41mple.com/",
         "URL host contains the invalid character '%'"},
        {"https://2130706433/",
         "URL host '2130706433' is not a valid IPv4 address (use the "
         "dotted-quad form, e.g. 192.0.2.1)"},
        {"https://127.1/", NULL},
        {"https://0x7f.0.0.1/", NULL},
        {"https://0x7f000001/", NULL},
        {"https://0177.0.0.1/", NULL},
        {"https://1.2.3.4.5/", NULL},
        {"https://256.1.1.1/", NULL},
        {"https://example.123/", NULL},
    };
    char err[WH_ERRLEN];
    for (size_t i = 0; i < WH_ARRAY_LEN(bad); i++) {
        err[0] = '\0';
        int rc = wh_url_check(bad[i].url, err, sizeof(err));
        if (rc != WH_ERR)
            fprintf(stderr, "accepted %s\n", bad[i].url);
        CHECK_INT(rc, WH_ERR);
        if (bad[i].err)
            CHECK_STR(err, bad[i].err);
        else
            CHECK(err[0] != '\0');
    }
    CHECK_INT(wh_url_check(NULL, err, sizeof(err)), WH_ERR);
}

static void test_url_limits(void)
{
    static char url[WH_URL_MAX + 2];
    char err[WH_ERRLEN];
    size_t n;

    /* exactly WH_URL_MAX bytes is accepted, one more is not */
    n = (size_t)snprintf(url, sizeof(url), "https://example.com/");
    memset(url + n, 'a', WH_URL_MAX - n);
    url[WH_URL_MAX] = '\0';
    CHECK_INT(wh_url_check(url, err, sizeof(err)), WH_OK);
    url[WH_URL_MAX] = 'a';
    url[WH_URL_MAX + 1] = '\0';
    CHECK_INT(wh_url_check(url, err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "URL is longer than 2048 bytes");

    /* labels up to 63 bytes, hosts up to 253 bytes (+ trailing dot) */
    char host[300];
    memset(host, 'a', 63);
    host[63] = '\0';
    snprintf(url, sizeof(url), "https://%s.com/", host);
    CHECK_INT(wh_url_check(url, err, sizeof(err)), WH_OK);
    memset(host, 'a', 64);
    host[64] = '\0';
    snprintf(url, sizeof(url), "https://%s.com/", host);
    CHECK_INT(wh_url_check(url, err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "URL host has a label longer than 63 bytes");

    /* 4 labels of 63 + 3 dots = 255 > 253; 3 x 63 + 61 + 3 = 253 */
    for (int i = 0; i < 4; i++) {
        memset(host + i * 64, 'b', 63);
        host[i * 64 + 63] = '.';
    }
    host[4 * 64 - 1] = '\0';
    snprintf(url, sizeof(url), "https://%s/", host);
    CHECK_INT(wh_url_check(url, err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "URL host is longer than 253 bytes");
    host[3 * 64 + 61] = '\0';
    CHECK_INT(strlen(host), 253);
    snprintf(url, sizeof(url), "https://%s/", host);
    CHECK_INT(wh_url_check(url, err, sizeof(err)), WH_OK);
    snprintf(url, sizeof(url), "https://%s./", host);
    CHECK_INT(wh_url_check(url, err, sizeof(err)), WH_OK);
    host[3 * 64 + 61] = 'b';
    host[3 * 64 + 62] = '\0';
    snprintf(url, sizeof(url), "https://%s/", host);
    CHECK_INT(wh_url_check(url, err, sizeof(err)), WH_ERR);
}

static void test_url_host(void)
{
    char host[WH_URL_HOST_MAX + 1], err[WH_ERRLEN];
    int port = 0;

    CHECK_INT(wh_url_host("https://Example.com/x", host, sizeof(host), &port,
                          err, sizeof(err)),
              WH_OK);
    CHECK_STR(host, "Example.com");
    CHECK_INT(port, 443);
    CHECK_INT(wh_url_host("http://example.com?x", host, sizeof(host), &port,
                          err, sizeof(err)),
              WH_OK);
    CHECK_INT(port, 80);
    CHECK_INT(wh_url_host("http://[2001:db8::1]:8080/", host, sizeof(host),
                          &port, err, sizeof(err)),
              WH_OK);
    CHECK_STR(host, "2001:db8::1");
    CHECK_INT(port, 8080);
    CHECK_INT(wh_url_host("https://10.0.0.1:9/", host, sizeof(host), &port,
                          err, sizeof(err)),
              WH_OK);
    CHECK_STR(host, "10.0.0.1");
    CHECK_INT(port, 9);
    char small[4];
    CHECK_INT(wh_url_host("https://example.com/", small, sizeof(small), &port,
                          err, sizeof(err)),
              WH_ERR);
    CHECK_INT(wh_url_host("ftp://x/", host, sizeof(host), &port, err,
                          sizeof(err)),
              WH_ERR);
}

static void test_blocked_v4(void)
{
    static const struct {
        const char *ip, *why;
    } cases[] = {
        {"0.0.0.0", "unspecified"},
        {"0.255.255.255", "unspecified"},
        {"10.0.0.5", "private"},
        {"10.255.255.255", "private"},
        {"11.0.0.1", "public"},
        {"100.63.255.255", "public"},
        {"100.64.0.0", "carrier-grade NAT"},
        {"100.127.255.255", "carrier-grade NAT"},
        {"100.128.0.0", "public"},
        {"127.0.0.1", "loopback"},
        {"127.255.255.254", "loopback"},
        {"169.254.0.1", "link-local"},
        {"169.254.169.254", "cloud metadata"},
        {"169.254.169.253", "link-local"},
        {"168.63.129.16", "cloud metadata"},
        {"172.15.255.255", "public"},
        {"172.16.0.0", "private"},
        {"172.31.255.255", "private"},
        {"172.32.0.0", "public"},
        {"192.0.0.8", "reserved"},
        {"192.0.1.1", "public"},
        {"192.0.2.1", "documentation"},
        {"192.88.99.1", "reserved"},
        {"192.167.255.255", "public"},
        {"192.168.1.1", "private"},
        {"192.169.0.0", "public"},
        {"198.17.255.255", "public"},
        {"198.18.0.0", "benchmarking"},
        {"198.19.255.255", "benchmarking"},
        {"198.20.0.0", "public"},
        {"198.51.100.7", "documentation"},
        {"203.0.113.9", "documentation"},
        {"223.255.255.255", "public"},
        {"224.0.0.1", "multicast"},
        {"239.255.255.255", "multicast"},
        {"240.0.0.1", "reserved"},
        {"254.255.255.255", "reserved"},
        {"255.255.255.255", "broadcast"},
        {"8.8.8.8", "public"},
        {"1.1.1.1", "public"},
    };
    for (size_t i = 0; i < WH_ARRAY_LEN(cases); i++) {
        const char *r = reason(cases[i].ip);
        if (strcmp(r, cases[i].why) != 0)
            fprintf(stderr, "%s: ", cases[i].ip);
        CHECK_STR(r, cases[i].why);
    }
}

static void test_blocked_v6(void)
{
    static const struct {
        const char *ip, *why;
    } cases[] = {
        {"::", "unspecified"},
        {"::1", "loopback"},
        {"::2", "reserved"},
        {"::127.0.0.1", "reserved"}, /* IPv4-compatible, deprecated */
        /* IPv4-mapped: judged as the IPv4 address */
        {"::ffff:127.0.0.1", "loopback"},
        {"::ffff:7f00:1", "loopback"},
        {"::ffff:10.1.2.3", "private"},
        {"::ffff:169.254.169.254", "cloud metadata"},
        {"::ffff:0.0.0.0", "unspecified"},
        {"::ffff:8.8.8.8", "public"},
        /* IPv4-translated ::ffff:0:0:0/96 is not mapped */
        {"::ffff:0:808:808", "reserved"},
        /* NAT64 */
        {"64:ff9b::127.0.0.1", "loopback"},
        {"64:ff9b::a9fe:a9fe", "cloud metadata"},
        {"64:ff9b::8.8.8.8", "public"},
        {"64:ff9b:1::1", "reserved"},
        /* 6to4 */
        {"2002:0a00:0001::1", "private"},
        {"2002:7f00:1::", "loopback"},
        {"2002:0808:0808::1", "public"},
        {"100::1", "reserved"},
        {"2001::1", "reserved"}, /* Teredo */
        {"2001:1ff::1", "reserved"},
        {"2001:200::1", "public"},
        {"2001:db8::1", "documentation"},
        {"2001:db9::1", "public"},
        {"3fff::1", "documentation"},
        {"3fff:fff::1", "documentation"},
        {"3fff:1000::1", "public"},
        {"fc00::1", "unique-local (IPv6)"},
        {"fd12:3456::1", "unique-local (IPv6)"},
        {"fd00:ec2::254", "cloud metadata"},
        {"fd00:ec2::253", "unique-local (IPv6)"},
        {"fe80::1", "link-local"},
        {"febf::1", "link-local"},
        {"fec0::1", "site-local (IPv6)"},
        {"ff02::1", "multicast"},
        {"ff0e::1", "multicast"},
        {"4000::1", "reserved"},
        {"1fff::1", "reserved"},
        {"2606:4700:4700::1111", "public"},
        {"2a00:1450:4001::200e", "public"},
    };
    for (size_t i = 0; i < WH_ARRAY_LEN(cases); i++) {
        const char *r = reason(cases[i].ip);
        if (strcmp(r, cases[i].why) != 0)
            fprintf(stderr, "%s: ", cases[i].ip);
        CHECK_STR(r, cases[i].why);
    }

    struct sockaddr_un un;
    memset(&un, 0, sizeof(un));
    un.sun_family = AF_UNIX;
    CHECK_STR(wh_url_blocked_reason((struct sockaddr *)&un),
              "unsupported address family");
}

static void test_netlist(void)
{
    wh_netlist *l = NULL;
    char err[WH_ERRLEN];

    CHECK_INT(wh_netlist_parse(" 127.0.0.0/8 ,::1/128,10.1.2.3, fd00::/8, "
                               "::ffff:192.168.0.0/112",
                               &l, err, sizeof(err)),
              WH_OK);
    CHECK_INT(wh_netlist_count(l), 5);
    CHECK(wh_netlist_contains(l, sa("127.9.9.9")));
    CHECK(wh_netlist_contains(l, sa("::ffff:127.0.0.1")));
    CHECK(wh_netlist_contains(l, sa("::1")));
    CHECK(!wh_netlist_contains(l, sa("::2")));
    CHECK(wh_netlist_contains(l, sa("10.1.2.3")));
    CHECK(!wh_netlist_contains(l, sa("10.1.2.4")));
    CHECK(wh_netlist_contains(l, sa("fd12::1")));
    CHECK(!wh_netlist_contains(l, sa("fe80::1")));
    CHECK(wh_netlist_contains(l, sa("192.168.44.1")));
    CHECK(!wh_netlist_contains(l, sa("192.169.0.1")));
    CHECK(!wh_netlist_contains(l, sa("128.0.0.1")));
    wh_netlist_free(l);

    /* a v6 range covering ::ffff:0:0/96 also covers IPv4 */
    CHECK_INT(wh_netlist_parse("::/0", &l, err, sizeof(err)), WH_OK);
    CHECK(wh_netlist_contains(l, sa("2001:db8::1")));
    CHECK(wh_netlist_contains(l, sa("10.0.0.1")));
    wh_netlist_free(l);
    CHECK_INT(wh_netlist_parse("0.0.0.0/0", &l, err, sizeof(err)), WH_OK);
    CHECK(wh_netlist_contains(l, sa("10.0.0.1")));
    CHECK(wh_netlist_contains(l, sa("::ffff:10.0.0.1")));
    CHECK(!wh_netlist_contains(l, sa("::1")));
    wh_netlist_free(l);
    /* prefix boundaries inside a byte */
    CHECK_INT(wh_netlist_parse("172.16.0.0/12,fe80::/10", &l, err,
                               sizeof(err)),
              WH_OK);
    CHECK(wh_netlist_contains(l, sa("172.31.255.255")));
    CHECK(!wh_netlist_contains(l, sa("172.32.0.0")));
    CHECK(wh_netlist_contains(l, sa("febf::1")));
    CHECK(!wh_netlist_contains(l, sa("fec0::1")));
    wh_netlist_free(l);

    /* empty text: empty list */
    CHECK_INT(wh_netlist_parse("", &l, err, sizeof(err)), WH_OK);
    CHECK_INT(wh_netlist_count(l), 0);
    CHECK(!wh_netlist_contains(l, sa("127.0.0.1")));
    wh_netlist_free(l);
    CHECK_INT(wh_netlist_parse("  ", &l, err, sizeof(err)), WH_OK);
    wh_netlist_free(l);
    CHECK(!wh_netlist_contains(NULL, sa("127.0.0.1")));

    static const struct {
        const char *text, *err;
    } bad[] = {
        {"10.0.0.0/8,,::1", "address list entry 2 is empty"},
        {"10.0.0.0/8,", "address list entry 2 is empty"},
        {"10.0.0.0/33", "'10.0.0.0/33' has an invalid prefix length (0..32)"},
        {"::/129", "'::/129' has an invalid prefix length (0..128)"},
        {"10.0.0.0/", "'10.0.0.0/' has an invalid prefix length (0..32)"},
        {"10.0.0.0/-1", "'10.0.0.0/-1' has an invalid prefix length (0..32)"},
        {"10.0.0.0/8x", "'10.0.0.0/8x' has an invalid prefix length (0..32)"},
        {"10.1.2.3/8",
         "'10.1.2.3/8' has host bits set (did you mean 10.0.0.0/8?)"},
        {"fe80::1/10", "'fe80::1/10' has host bits set (did you mean "
                       "fe80::/10?)"},
        {"10.0.0", "'10.0.0' is not an IPv4 address or CIDR range"},
        {"localhost", "'localhost' is not an IPv4 address or CIDR range"},
        {"fe80::1%eth0", "'fe80::1%eth0' is not an IPv6 address or CIDR "
                         "range"},
        {"1::2::3", "'1::2::3' is not an IPv6 address or CIDR range"},
    };
    for (size_t i = 0; i < WH_ARRAY_LEN(bad); i++) {
        l = (wh_netlist *)&l;
        CHECK_INT(wh_netlist_parse(bad[i].text, &l, err, sizeof(err)),
                  WH_ERR);
        CHECK(l == NULL);
        CHECK_STR(err, bad[i].err);
    }

    /* limits: WH_NETLIST_MAX entries, entry length, text length */
    static char text[WH_NETLIST_TEXT_MAX + 2];
    size_t n = 0;
    for (int i = 0; i < WH_NETLIST_MAX; i++)
        n += (size_t)snprintf(text + n, sizeof(text) - n, "%s10.0.%d.0/24",
                              i ? "," : "", i % 256);
    CHECK_INT(wh_netlist_parse(text, &l, err, sizeof(err)), WH_OK);
    CHECK_INT(wh_netlist_count(l), WH_NETLIST_MAX);
    CHECK(wh_netlist_contains(l, sa("10.0.255.1")));
    wh_netlist_free(l);
    snprintf(text + n, sizeof(text) - n, ",10.1.0.0/16");
    CHECK_INT(wh_netlist_parse(text, &l, err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "address list has more than 256 entries");
    memset(text, ' ', WH_NETLIST_TEXT_MAX + 1);
    text[WH_NETLIST_TEXT_MAX + 1] = '\0';
    CHECK_INT(wh_netlist_parse(text, &l, err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "address list is longer than 16384 bytes");
    text[WH_NETLIST_TEXT_MAX] = '\0';
    CHECK_INT(wh_netlist_parse(text, &l, err, sizeof(err)), WH_OK);
    wh_netlist_free(l);
    memset(text, '1', 100);
    text[100] = '\0';
    CHECK_INT(wh_netlist_parse(text, &l, err, sizeof(err)), WH_ERR);
    CHECK(strstr(err, "is too long") != NULL);
}

static void test_address_allowed(void)
{
    wh_netlist *allow = NULL;
    char why[WH_ERRLEN], err[WH_ERRLEN];

    CHECK_INT(wh_url_address_allowed(sa("8.8.8.8"), NULL, why, sizeof(why)),
              1);
    CHECK_INT(wh_url_address_allowed(sa("10.0.0.5"), NULL, why, sizeof(why)),
              0);
    CHECK_STR(why, "address 10.0.0.5 is private");
    CHECK_INT(wh_url_address_allowed(sa("::ffff:127.0.0.1"), NULL, why,
                                     sizeof(why)),
              0);
    CHECK_STR(why, "address ::ffff:127.0.0.1 is loopback");
    CHECK_INT(wh_url_address_allowed(sa("fd00:ec2::254"), NULL, why,
                                     sizeof(why)),
              0);
    CHECK_STR(why, "address fd00:ec2::254 is cloud metadata");
    CHECK_INT(wh_url_address_allowed(sa("10.0.0.5"), NULL, NULL, 0), 0);

    CHECK_INT(wh_netlist_parse("127.0.0.0/8,::1", &allow, err, sizeof(err)),
              WH_OK);
    CHECK_INT(wh_url_address_allowed(sa("127.0.0.1"), allow, why,
                                     sizeof(why)),
              1);
    CHECK_INT(wh_url_address_allowed(sa("::ffff:127.0.0.1"), allow, why,
                                     sizeof(why)),
              1);
    CHECK_INT(wh_url_address_allowed(sa("::1"), allow, why, sizeof(why)), 1);
    CHECK_INT(wh_url_address_allowed(sa("169.254.169.254"), allow, why,
                                     sizeof(why)),
              0);
    CHECK_STR(why, "address 169.254.169.254 is cloud metadata");
    CHECK_INT(wh_url_address_allowed(sa("1.2.3.4"), allow, why, sizeof(why)),
              1);
    wh_netlist_free(allow);

    struct sockaddr_un un;
    memset(&un, 0, sizeof(un));
    un.sun_family = AF_UNIX;
    CHECK_INT(wh_url_address_allowed((struct sockaddr *)&un, NULL, why,
                                     sizeof(why)),
              0);
    CHECK_STR(why, "address family 1 is not allowed");
}

static void test_is_https(void)
{
    CHECK(wh_url_is_https("https://a.example/h"));
    CHECK(wh_url_is_https("HTTPS://a.example/h"));
    CHECK(!wh_url_is_https("http://a.example/h"));
    CHECK(!wh_url_is_https("https:/a.example"));
    CHECK(!wh_url_is_https(""));
}

/* Literal addresses and localhost (/etc/hosts) only: nothing here may
 * send a DNS query off the machine. */
static void test_resolve_check(void)
{
    wh_netlist *allow = NULL;
    char msg[512], err[WH_ERRLEN];

    CHECK_INT(wh_url_resolve_check("https://8.8.8.8/h", NULL, 2000, msg,
                                   sizeof(msg)),
              WH_OK);
    CHECK_STR(msg, "");
    CHECK_INT(wh_url_resolve_check("http://127.0.0.1:8080/h", NULL, 2000, msg,
                                   sizeof(msg)),
              WH_DECLINED);
    CHECK_STR(msg, "address 127.0.0.1 is loopback");
    CHECK_INT(wh_url_resolve_check("http://[::ffff:10.1.2.3]/h", NULL, 2000,
                                   msg, sizeof(msg)),
              WH_DECLINED);
    CHECK_STR(msg, "address ::ffff:10.1.2.3 is private");
    CHECK_INT(wh_url_resolve_check("http://169.254.169.254/latest", NULL, 2000,
                                   msg, sizeof(msg)),
              WH_DECLINED);
    CHECK_STR(msg, "address 169.254.169.254 is cloud metadata");
    CHECK_INT(wh_url_resolve_check("http://LocalHost:9/h", NULL, 2000, msg,
                                   sizeof(msg)),
              WH_DECLINED);
    CHECK(strstr(msg, "is loopback") != NULL);

    CHECK_INT(wh_netlist_parse("127.0.0.0/8,::1", &allow, err, sizeof(err)),
              WH_OK);
    CHECK_INT(wh_url_resolve_check("http://127.0.0.1:8080/h", allow, 2000,
                                   msg, sizeof(msg)),
              WH_OK);
    CHECK_INT(wh_url_resolve_check("http://localhost:8080/h", allow, 2000,
                                   msg, sizeof(msg)),
              WH_OK);
    CHECK_INT(wh_url_resolve_check("http://10.0.0.1/h", allow, 2000, msg,
                                   sizeof(msg)),
              WH_DECLINED);
    CHECK_STR(msg, "address 10.0.0.1 is private");
    wh_netlist_free(allow);

    /* every refused address is named, the message cut to fit */
    char small[24];
    CHECK_INT(wh_url_resolve_check("http://127.0.0.1/h", NULL, 2000, small,
                                   sizeof(small)),
              WH_DECLINED);
    CHECK(strlen(small) < sizeof(small));
    CHECK_INT(wh_url_resolve_check("not a url", NULL, 2000, msg, sizeof(msg)),
              WH_ERR);
    CHECK(msg[0] != '\0');
}

TEST_MAIN(test_url_ok, test_url_bad, test_url_limits, test_url_host,
          test_blocked_v4, test_blocked_v6, test_netlist,
          test_address_allowed, test_resolve_check, test_is_https)
