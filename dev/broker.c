/*
 * broker.c - webhook-devbroker, the Kafka broker of the local stack and the
 * tests: a librdkafka mock cluster with the webhook topics created, an
 * optional fixed bootstrap port (a TCP forwarder to the first mock broker)
 * and an optional control port for fault injection.
 *
 * The mock brokers run on librdkafka's own thread. Everything else (signals,
 * forwarder, control connections) runs in one poll() loop on the main
 * thread. Control protocol: one command per line, one reply line "ok" or
 * "error: <reason>"; usage_text below lists the commands.
 */
#include "wh.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#define PROG "webhook-devbroker"

#define MAX_BROKERS     16
#define MAX_PARTITIONS  1024
#define MAX_TOPICS      32
#define TOPIC_NAME_MAX  249         /* Kafka's own limit */
#define MAX_RELAYS      256         /* forwarded connections at once */
#define RELAY_BUF       (64 * 1024) /* per direction, per connection */
#define MAX_CTL_CONNS   16
#define CTL_LINE_MAX    512
#define CTL_ARGS_MAX    5
#define PUSH_ERRORS_MAX 10000
#define RTT_MAX_MS      600000
#define ADDR_MAX        256
#define LINE_MAX_OUT    1024 /* the KAFKA_BROKERS= line */
#define MAX_POLLFDS     (3 + 2 * MAX_RELAYS + MAX_CTL_CONNS)

#define DEFAULT_TOPICS "webhook.events,webhook.deliveries,webhook.dead"

#define EXIT_USAGE 2

struct options {
    int port;         /* fixed bootstrap port; -1: none, 0: any free port */
    int control_port; /* -1: none */
    int brokers;
    int partitions;
    int ntopics;
    char topics[MAX_TOPICS][TOPIC_NAME_MAX + 1];
    const char *ready_file;
};

/* Bytes read from one socket and not yet written to the other: [off, len). */
struct half {
    size_t len;
    size_t off;
    int eof;  /* source sent FIN; read nothing more */
    int shut; /* FIN passed on to the destination */
    char buf[RELAY_BUF];
};

/* One forwarded connection: client <-> first mock broker. */
struct relay {
    int cfd;
    int ufd;
    int connecting; /* non-blocking connect to the broker in progress */
    int cidx;       /* indices into the pollfd array of this iteration */
    int uidx;
    struct half c2u;
    struct half u2c;
};

struct ctl_conn {
    int fd; /* -1: slot free */
    int idx;
    size_t len;
    char line[CTL_LINE_MAX];
};

struct loop {
    const struct options *opt;
    rd_kafka_mock_cluster_t *mcluster;
    int sig_fd;
    int fwd_fd;
    int ctl_fd;
    struct sockaddr_in upstream;
    struct relay *relays[MAX_RELAYS];
    struct ctl_conn ctls[MAX_CTL_CONNS];
};

struct api_name {
    const char *name;
    int16_t key;
};

/* The request types fault tests usually target; any other by number. */
static const struct api_name api_names[] = {
    {"Produce", 0},          {"Fetch", 1},
    {"ListOffsets", 2},      {"Metadata", 3},
    {"OffsetCommit", 8},     {"OffsetFetch", 9},
    {"FindCoordinator", 10}, {"JoinGroup", 11},
    {"Heartbeat", 12},       {"LeaveGroup", 13},
    {"SyncGroup", 14},       {"ApiVersions", 18},
    {"InitProducerId", 22},  {"AddPartitionsToTxn", 24},
    {"AddOffsetsToTxn", 25}, {"EndTxn", 26},
    {"TxnOffsetCommit", 28},
};

/* clang-format off */
static const char usage_text[] =
"Usage: " PROG " [options]\n"
"\n"
"A Kafka broker for local development and tests, built on librdkafka's\n"
"mock cluster. Prints one line, KAFKA_BROKERS=<bootstrap list>, once it\n"
"is ready, and runs until SIGINT or SIGTERM.\n"
"\n"
"Options:\n"
"  --port N           fixed bootstrap address 127.0.0.1:N, forwarded to\n"
"                     the first mock broker (0: any free port). Clients\n"
"                     then reach every broker at the loopback ports the\n"
"                     metadata advertises.\n"
"  --brokers N        number of mock brokers, ids 1..N (default 1, max %d)\n"
"  --partitions N     partitions per topic (default 8, max %d)\n"
"  --topics a,b,c     topics to create (default webhook.events,\n"
"                     webhook.deliveries,webhook.dead; max %d)\n"
"  --ready-file PATH  also write the KAFKA_BROKERS line to PATH\n"
"                     (atomically) once everything is listening\n"
"  --control-port N   fault-injection commands on 127.0.0.1:N\n"
"  --help             show this text\n"
"\n"
"Control commands, one per line; each reply is \"ok\" or \"error: ...\":\n"
"  ping\n"
"  broker-down ID          close the broker's connections, stop serving\n"
"  broker-up ID            serve it again\n"
"  rtt ID MS               delay the broker's responses by MS\n"
"  push-errors APIKEY COUNT ERRCODE\n"
"                          fail the next COUNT requests of that type.\n"
"                          APIKEY: number or name (Produce, Fetch,\n"
"                          Metadata, JoinGroup, OffsetCommit, ...);\n"
"                          ERRCODE: number or name (NOT_LEADER_FOR_PARTITION)\n"
"  clear-errors APIKEY     drop errors still queued for APIKEY\n"
"  leader TOPIC PARTITION BROKERID\n"
"                          move a partition's leader (TOPIC: one of\n"
"                          --topics; BROKERID -1: no leader)\n"
"\n"
"Limits: the mock keeps only about 5 MB and 100,000 messages per\n"
"partition and silently drops older ones; nothing is persisted. Use\n"
"enough partitions and have tests check that nothing was dropped.\n"
"Consumer groups work; set session.timeout.ms=6000 and\n"
"heartbeat.interval.ms=500 or a rebalance waits up to 45 s.\n"
"At most %d forwarded and %d control connections at once.\n"
"\n"
"Exit status: 0 after SIGINT/SIGTERM, 1 on runtime failure, 2 on bad\n"
"arguments.\n";
/* clang-format on */

static void usage(FILE *out)
{
    fprintf(out, usage_text, MAX_BROKERS, MAX_PARTITIONS, MAX_TOPICS,
            MAX_RELAYS, MAX_CTL_CONNS);
}

/* Parses a whole decimal string within [min, max]. */
static int parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    long v;

    if (!s || !*s)
        return WH_ERR;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return WH_ERR;
    *out = v;
    return WH_OK;
}

static int parse_int_opt(const char *name, const char *s, long min, long max,
                         int *out, char *err, size_t errlen)
{
    long v;

    if (parse_long(s, min, max, &v) != WH_OK)
        return wh_errf(err, errlen,
                       "--%s: expected an integer in %ld..%ld, got '%s'", name,
                       min, max, s);
    *out = (int)v;
    return WH_OK;
}

static int topic_name_ok(const char *s, size_t n)
{
    if (n == 0 || n > TOPIC_NAME_MAX)
        return 0;
    if ((n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static int parse_topics(const char *list, struct options *o, char *err,
                        size_t errlen)
{
    const char *p = list;

    o->ntopics = 0;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);

        if (!topic_name_ok(p, n))
            return wh_errf(err, errlen,
                           "--topics: '%.*s' is not a valid topic name "
                           "(1-%d of [a-zA-Z0-9._-])",
                           (int)(n > 64 ? 64 : n), p, TOPIC_NAME_MAX);
        if (o->ntopics == MAX_TOPICS)
            return wh_errf(err, errlen, "--topics: at most %d topics",
                           MAX_TOPICS);
        for (int i = 0; i < o->ntopics; i++)
            if (strlen(o->topics[i]) == n && !memcmp(o->topics[i], p, n))
                return wh_errf(err, errlen, "--topics: '%.*s' listed twice",
                               (int)n, p);
        memcpy(o->topics[o->ntopics], p, n);
        o->topics[o->ntopics][n] = '\0';
        o->ntopics++;
        if (!comma)
            return WH_OK;
        p = comma + 1;
    }
}

/* Returns WH_OK to run, WH_DECLINED after --help, WH_ERR on bad usage. */
static int parse_args(int argc, char **argv, struct options *o, char *err,
                      size_t errlen)
{
    enum {
        O_PORT = 1,
        O_BROKERS,
        O_PARTITIONS,
        O_TOPICS,
        O_READY,
        O_CONTROL,
        O_HELP
    };
    static const struct option longopts[] = {
        {"port", required_argument, NULL, O_PORT},
        {"brokers", required_argument, NULL, O_BROKERS},
        {"partitions", required_argument, NULL, O_PARTITIONS},
        {"topics", required_argument, NULL, O_TOPICS},
        {"ready-file", required_argument, NULL, O_READY},
        {"control-port", required_argument, NULL, O_CONTROL},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    const char *topics = DEFAULT_TOPICS;
    int c;

    memset(o, 0, sizeof(*o));
    o->port = -1;
    o->control_port = -1;
    o->brokers = 1;
    o->partitions = 8;

    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
        switch (c) {
        case O_PORT:
            if (parse_int_opt("port", optarg, 0, 65535, &o->port, err, errlen))
                return WH_ERR;
            break;
        case O_CONTROL:
            if (parse_int_opt("control-port", optarg, 1, 65535,
                              &o->control_port, err, errlen))
                return WH_ERR;
            break;
        case O_BROKERS:
            if (parse_int_opt("brokers", optarg, 1, MAX_BROKERS, &o->brokers,
                              err, errlen))
                return WH_ERR;
            break;
        case O_PARTITIONS:
            if (parse_int_opt("partitions", optarg, 1, MAX_PARTITIONS,
                              &o->partitions, err, errlen))
                return WH_ERR;
            break;
        case O_TOPICS:
            topics = optarg;
            break;
        case O_READY:
            if (!*optarg || strlen(optarg) >= PATH_MAX - 32)
                return wh_errf(err, errlen,
                               "--ready-file: empty or too long path");
            o->ready_file = optarg;
            break;
        case O_HELP:
            return WH_DECLINED;
        case ':':
            return wh_errf(err, errlen, "%s needs a value", argv[optind - 1]);
        default:
            return wh_errf(err, errlen, "unknown option '%s'",
                           argv[optind - 1]);
        }
    }
    if (optind < argc)
        return wh_errf(err, errlen, "unexpected argument '%s'", argv[optind]);
    if (o->port > 0 && o->port == o->control_port)
        return wh_errf(err, errlen, "--port and --control-port must differ");
    return parse_topics(topics, o, err, errlen);
}

static void set_nodelay(int fd)
{
    int on = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
}

/* Listens on 127.0.0.1:port (0: any); stores the bound port in *bound. */
static int listen_loopback(int port, int *fd_out, int *bound, char *err,
                           size_t errlen)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t slen = sizeof(sin);
    int on = 1;
    int fd;

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((uint16_t)port);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return wh_errf(err, errlen, "socket() failed: %s", strerror(errno));
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) < 0) {
        wh_errf(err, errlen, "setsockopt(SO_REUSEADDR) failed: %s",
                strerror(errno));
        goto fail;
    }
    if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
        wh_errf(err, errlen, "bind(127.0.0.1:%d) failed: %s", port,
                strerror(errno));
        goto fail;
    }
    if (listen(fd, 128) < 0) {
        wh_errf(err, errlen, "listen(127.0.0.1:%d) failed: %s", port,
                strerror(errno));
        goto fail;
    }
    if (getsockname(fd, (struct sockaddr *)&sin, &slen) < 0) {
        wh_errf(err, errlen, "getsockname() failed: %s", strerror(errno));
        goto fail;
    }
    *bound = ntohs(sin.sin_port);
    *fd_out = fd;
    return WH_OK;
fail:
    close(fd);
    return WH_ERR;
}

/* Takes the first "host:port" of the mock's bootstrap list. */
static int parse_first_bootstrap(const char *list, struct sockaddr_in *out,
                                 char *err, size_t errlen)
{
    char host[ADDR_MAX];
    const char *colon;
    size_t n = strcspn(list, ",");
    long port;

    if (n == 0 || n >= sizeof(host))
        return wh_errf(err, errlen, "unexpected mock bootstrap list '%s'",
                       list);
    memcpy(host, list, n);
    host[n] = '\0';
    colon = strrchr(host, ':');
    if (!colon || parse_long(colon + 1, 1, 65535, &port) != WH_OK)
        return wh_errf(err, errlen, "unexpected mock broker address '%s'",
                       host);
    host[colon - host] = '\0';
    memset(out, 0, sizeof(*out));
    out->sin_family = AF_INET;
    out->sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &out->sin_addr) != 1)
        return wh_errf(err, errlen,
                       "mock broker host '%s' is not an IPv4 address", host);
    return WH_OK;
}

static int write_ready_file(const char *path, const char *line, char *err,
                            size_t errlen)
{
    char tmp[PATH_MAX];
    size_t len = strlen(line);
    int fd;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >=
        (int)sizeof(tmp))
        return wh_errf(err, errlen, "--ready-file path too long");
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return wh_errf(err, errlen, "open(%s) failed: %s", tmp,
                       strerror(errno));
    if (write(fd, line, len) != (ssize_t)len) {
        wh_errf(err, errlen, "write(%s) failed: %s", tmp, strerror(errno));
        goto fail;
    }
    if (fsync(fd) < 0) {
        wh_errf(err, errlen, "fsync(%s) failed: %s", tmp, strerror(errno));
        goto fail;
    }
    if (close(fd) < 0) {
        fd = -1;
        wh_errf(err, errlen, "close(%s) failed: %s", tmp, strerror(errno));
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) < 0) {
        wh_errf(err, errlen, "rename(%s, %s) failed: %s", tmp, path,
                strerror(errno));
        goto fail;
    }
    return WH_OK;
fail:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    return WH_ERR;
}

/* ---- forwarder ---------------------------------------------------------- */

static void relay_free(struct loop *l, int slot)
{
    struct relay *r = l->relays[slot];

    assert(r);
    close(r->cfd);
    close(r->ufd);
    free(r);
    l->relays[slot] = NULL;
}

static void forwarder_accept(struct loop *l)
{
    for (;;) {
        int cfd, ufd, slot = -1;
        struct relay *r;

        cfd = accept4(l->fwd_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
                errno != ECONNABORTED)
                fprintf(stderr, PROG ": accept() failed: %s\n",
                        strerror(errno));
            return;
        }
        for (int i = 0; i < MAX_RELAYS; i++)
            if (!l->relays[i]) {
                slot = i;
                break;
            }
        if (slot < 0) {
            fprintf(stderr,
                    PROG ": forwarder: %d connections open, refusing one\n",
                    MAX_RELAYS);
            close(cfd);
            continue;
        }
        ufd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (ufd < 0) {
            fprintf(stderr, PROG ": forwarder: socket() failed: %s\n",
                    strerror(errno));
            close(cfd);
            continue;
        }
        r = calloc(1, sizeof(*r));
        if (!r) {
            fprintf(stderr, PROG ": forwarder: out of memory\n");
            close(cfd);
            close(ufd);
            continue;
        }
        r->cfd = cfd;
        r->ufd = ufd;
        set_nodelay(cfd);
        set_nodelay(ufd);
        l->relays[slot] = r;
        if (connect(ufd, (struct sockaddr *)&l->upstream,
                    sizeof(l->upstream)) == 0)
            continue;
        if (errno == EINPROGRESS) {
            r->connecting = 1;
            continue;
        }
        fprintf(stderr,
                PROG ": forwarder: connect() to the mock broker failed: %s\n",
                strerror(errno));
        relay_free(l, slot);
    }
}

static short half_in_events(const struct half *h)
{
    return (!h->eof && h->len < sizeof(h->buf)) ? POLLIN : 0;
}

static short half_out_events(const struct half *h)
{
    return h->off < h->len ? POLLOUT : 0;
}

/* Returns WH_ERR when the connection should be dropped. */
static int half_read(int fd, struct half *h)
{
    ssize_t n;

    if (h->eof || h->len == sizeof(h->buf))
        return WH_OK;
    n = recv(fd, h->buf + h->len, sizeof(h->buf) - h->len, 0);
    if (n > 0)
        h->len += (size_t)n;
    else if (n == 0)
        h->eof = 1;
    else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        return WH_ERR;
    return WH_OK;
}

static int half_write(int fd, struct half *h)
{
    ssize_t n;

    if (h->off < h->len) {
        n = send(fd, h->buf + h->off, h->len - h->off, MSG_NOSIGNAL);
        if (n > 0)
            h->off += (size_t)n;
        else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
                 errno != EINTR)
            return WH_ERR;
        if (h->off == h->len)
            h->off = h->len = 0;
    }
    if (h->eof && h->off == h->len && !h->shut) {
        (void)shutdown(fd, SHUT_WR);
        h->shut = 1;
    }
    return WH_OK;
}

static void relay_events(struct relay *r, struct pollfd *pfds, int *n)
{
    short cev, uev;

    if (r->connecting) {
        cev = 0;
        uev = POLLOUT;
    } else {
        cev = half_in_events(&r->c2u) | half_out_events(&r->u2c);
        uev = half_in_events(&r->u2c) | half_out_events(&r->c2u);
    }
    r->cidx = (*n)++;
    pfds[r->cidx] = (struct pollfd){.fd = r->cfd, .events = cev};
    r->uidx = (*n)++;
    pfds[r->uidx] = (struct pollfd){.fd = r->ufd, .events = uev};
}

/* Returns WH_ERR when the relay is finished or failed and must be freed. */
static int relay_serve(struct relay *r, const struct pollfd *pfds)
{
    short cre = pfds[r->cidx].revents;
    short ure = pfds[r->uidx].revents;

    if ((cre & POLLERR) || (ure & POLLERR))
        return WH_ERR;
    if (((cre & POLLHUP) && !(cre & POLLIN)) ||
        ((ure & POLLHUP) && !(ure & POLLIN)))
        return WH_ERR;
    if (r->connecting) {
        int soerr = 0;
        socklen_t sl = sizeof(soerr);

        if (!ure)
            return WH_OK;
        if (getsockopt(r->ufd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr)
            return WH_ERR;
        r->connecting = 0;
        return WH_OK;
    }
    if ((cre & POLLIN) && half_read(r->cfd, &r->c2u) != WH_OK)
        return WH_ERR;
    if ((ure & POLLIN) && half_read(r->ufd, &r->u2c) != WH_OK)
        return WH_ERR;
    if (half_write(r->ufd, &r->c2u) != WH_OK ||
        half_write(r->cfd, &r->u2c) != WH_OK)
        return WH_ERR;
    return (r->c2u.shut && r->u2c.shut) ? WH_ERR : WH_OK;
}

/* ---- control port ------------------------------------------------------- */

static int parse_api_key(const char *s, int16_t *out)
{
    long v;

    for (size_t i = 0; i < WH_ARRAY_LEN(api_names); i++)
        if (!strcasecmp(s, api_names[i].name)) {
            *out = api_names[i].key;
            return WH_OK;
        }
    if (parse_long(s, 0, INT16_MAX, &v) != WH_OK)
        return WH_ERR;
    *out = (int16_t)v;
    return WH_OK;
}

static int parse_err_code(const char *s, rd_kafka_resp_err_t *out)
{
    static const char prefix[] = "RD_KAFKA_RESP_ERR_";
    const struct rd_kafka_err_desc *descs;
    size_t cnt;
    long v;

    if (parse_long(s, 0, INT16_MAX, &v) == WH_OK) {
        *out = (rd_kafka_resp_err_t)v;
        return WH_OK;
    }
    if (!strncasecmp(s, prefix, sizeof(prefix) - 1))
        s += sizeof(prefix) - 1;
    rd_kafka_get_err_descs(&descs, &cnt);
    for (size_t i = 0; i < cnt; i++)
        if (descs[i].name && descs[i].code >= 0 &&
            !strcasecmp(s, descs[i].name)) {
            *out = descs[i].code;
            return WH_OK;
        }
    return WH_ERR;
}

static int topic_known(const struct options *o, const char *topic)
{
    for (int i = 0; i < o->ntopics; i++)
        if (!strcmp(o->topics[i], topic))
            return 1;
    return 0;
}

static int mock_result(rd_kafka_resp_err_t e, char *reply, size_t rlen)
{
    if (e)
        return wh_errf(reply, rlen, "%s", rd_kafka_err2str(e));
    return WH_OK;
}

/* Runs one command line; on WH_ERR reply holds the reason. */
static int ctl_exec(struct loop *l, char *line, char *reply, size_t rlen)
{
    rd_kafka_mock_cluster_t *mc = l->mcluster;
    char *argv[CTL_ARGS_MAX + 1];
    char *save = NULL, *tok;
    int argc = 0;
    long a, b;

    for (tok = strtok_r(line, " \t", &save); tok;
         tok = strtok_r(NULL, " \t", &save)) {
        if (argc == CTL_ARGS_MAX)
            return wh_errf(reply, rlen, "too many arguments");
        argv[argc++] = tok;
    }
    if (argc == 0)
        return wh_errf(reply, rlen, "empty command");

#define WANT_ARGS(n, syntax)                                                   \
    do {                                                                       \
        if (argc != (n) + 1)                                                   \
            return wh_errf(reply, rlen, "usage: %s", syntax);                  \
    } while (0)

    if (!strcmp(argv[0], "ping")) {
        WANT_ARGS(0, "ping");
        return WH_OK;
    }
    if (!strcmp(argv[0], "broker-down") || !strcmp(argv[0], "broker-up")) {
        int down = !strcmp(argv[0], "broker-down");
        WANT_ARGS(1, down ? "broker-down ID" : "broker-up ID");
        if (parse_long(argv[1], 0, INT32_MAX, &a) != WH_OK)
            return wh_errf(reply, rlen, "bad broker id '%s'", argv[1]);
        return mock_result(down ? rd_kafka_mock_broker_set_down(mc, (int32_t)a)
                                : rd_kafka_mock_broker_set_up(mc, (int32_t)a),
                           reply, rlen);
    }
    if (!strcmp(argv[0], "rtt")) {
        WANT_ARGS(2, "rtt ID MS");
        if (parse_long(argv[1], 0, INT32_MAX, &a) != WH_OK)
            return wh_errf(reply, rlen, "bad broker id '%s'", argv[1]);
        if (parse_long(argv[2], 0, RTT_MAX_MS, &b) != WH_OK)
            return wh_errf(reply, rlen, "bad rtt '%s' (0..%d ms)", argv[2],
                           RTT_MAX_MS);
        return mock_result(rd_kafka_mock_broker_set_rtt(mc, (int32_t)a, (int)b),
                           reply, rlen);
    }
    if (!strcmp(argv[0], "push-errors")) {
        static rd_kafka_resp_err_t errs[PUSH_ERRORS_MAX];
        rd_kafka_resp_err_t code;
        int16_t key;

        WANT_ARGS(3, "push-errors APIKEY COUNT ERRCODE");
        if (parse_api_key(argv[1], &key) != WH_OK)
            return wh_errf(reply, rlen, "unknown api key '%s'", argv[1]);
        if (parse_long(argv[2], 1, PUSH_ERRORS_MAX, &a) != WH_OK)
            return wh_errf(reply, rlen, "bad count '%s' (1..%d)", argv[2],
                           PUSH_ERRORS_MAX);
        if (parse_err_code(argv[3], &code) != WH_OK)
            return wh_errf(reply, rlen, "unknown error code '%s'", argv[3]);
        for (long i = 0; i < a; i++)
            errs[i] = code;
        rd_kafka_mock_push_request_errors_array(mc, key, (size_t)a, errs);
        return WH_OK;
    }
    if (!strcmp(argv[0], "clear-errors")) {
        int16_t key;

        WANT_ARGS(1, "clear-errors APIKEY");
        if (parse_api_key(argv[1], &key) != WH_OK)
            return wh_errf(reply, rlen, "unknown api key '%s'", argv[1]);
        rd_kafka_mock_clear_request_errors(mc, key);
        return WH_OK;
    }
    if (!strcmp(argv[0], "leader")) {
        WANT_ARGS(3, "leader TOPIC PARTITION BROKERID");
        if (!topic_known(l->opt, argv[1]))
            return wh_errf(reply, rlen, "unknown topic '%.*s'", TOPIC_NAME_MAX,
                           argv[1]);
        if (parse_long(argv[2], 0, MAX_PARTITIONS - 1, &a) != WH_OK)
            return wh_errf(reply, rlen, "bad partition '%s'", argv[2]);
        if (parse_long(argv[3], -1, INT32_MAX, &b) != WH_OK)
            return wh_errf(reply, rlen, "bad broker id '%s'", argv[3]);
        return mock_result(rd_kafka_mock_partition_set_leader(
                               mc, argv[1], (int32_t)a, (int32_t)b),
                           reply, rlen);
    }
#undef WANT_ARGS
    return wh_errf(reply, rlen, "unknown command '%.64s'", argv[0]);
}

static void ctl_close(struct ctl_conn *c)
{
    close(c->fd);
    c->fd = -1;
    c->len = 0;
}

/* Sends one reply line; returns WH_ERR if the connection must be closed. */
static int ctl_reply(struct ctl_conn *c, int rc, const char *msg)
{
    char out[CTL_LINE_MAX + 16];
    int n = rc == WH_OK ? snprintf(out, sizeof(out), "ok\n")
                        : snprintf(out, sizeof(out), "error: %s\n", msg);
    size_t len = n < (int)sizeof(out) ? (size_t)n : sizeof(out) - 1;

    if (send(c->fd, out, len, MSG_NOSIGNAL) != (ssize_t)len)
        return WH_ERR;
    return WH_OK;
}

static void ctl_accept(struct loop *l)
{
    for (;;) {
        int fd = accept4(l->ctl_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        int slot = -1;

        if (fd < 0)
            return;
        for (int i = 0; i < MAX_CTL_CONNS; i++)
            if (l->ctls[i].fd < 0) {
                slot = i;
                break;
            }
        if (slot < 0) {
            static const char busy[] = "error: too many control connections\n";
            (void)!send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL);
            close(fd);
            continue;
        }
        l->ctls[slot].fd = fd;
        l->ctls[slot].len = 0;
    }
}

static void ctl_serve(struct loop *l, struct ctl_conn *c)
{
    ssize_t n = recv(c->fd, c->line + c->len, sizeof(c->line) - c->len, 0);
    size_t start = 0;

    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) {
        ctl_close(c);
        return;
    }
    c->len += (size_t)n;
    for (size_t i = 0; i < c->len; i++) {
        char reply[CTL_LINE_MAX] = "";
        char *line = c->line + start;
        size_t ll = i - start;
        int rc;

        if (c->line[i] != '\n')
            continue;
        c->line[i] = '\0';
        if (ll > 0 && line[ll - 1] == '\r')
            line[ll - 1] = '\0';
        start = i + 1;
        rc = ctl_exec(l, line, reply, sizeof(reply));
        if (ctl_reply(c, rc, reply) != WH_OK) {
            ctl_close(c);
            return;
        }
    }
    if (start > 0) {
        memmove(c->line, c->line + start, c->len - start);
        c->len -= start;
    } else if (c->len == sizeof(c->line)) {
        (void)ctl_reply(c, WH_ERR, "line too long");
        ctl_close(c);
    }
}

/* ---- main loop ---------------------------------------------------------- */

static int run_loop(struct loop *l, char *err, size_t errlen)
{
    static struct pollfd pfds[MAX_POLLFDS];

    for (;;) {
        int n = 0, sig_idx, fwd_idx = -1, ctl_idx = -1;

        sig_idx = n++;
        pfds[sig_idx] = (struct pollfd){.fd = l->sig_fd, .events = POLLIN};
        if (l->fwd_fd >= 0) {
            fwd_idx = n++;
            pfds[fwd_idx] = (struct pollfd){.fd = l->fwd_fd, .events = POLLIN};
        }
        if (l->ctl_fd >= 0) {
            ctl_idx = n++;
            pfds[ctl_idx] = (struct pollfd){.fd = l->ctl_fd, .events = POLLIN};
        }
        for (int i = 0; i < MAX_RELAYS; i++)
            if (l->relays[i])
                relay_events(l->relays[i], pfds, &n);
        for (int i = 0; i < MAX_CTL_CONNS; i++)
            if (l->ctls[i].fd >= 0) {
                l->ctls[i].idx = n++;
                pfds[l->ctls[i].idx] =
                    (struct pollfd){.fd = l->ctls[i].fd, .events = POLLIN};
            }
        assert(n <= MAX_POLLFDS);

        if (poll(pfds, (nfds_t)n, -1) < 0) {
            if (errno == EINTR)
                continue;
            return wh_errf(err, errlen, "poll() failed: %s", strerror(errno));
        }
        if (pfds[sig_idx].revents) {
            struct signalfd_siginfo si;
            if (read(l->sig_fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
                fprintf(stderr, PROG ": %s from pid %u, shutting down\n",
                        strsignal((int)si.ssi_signo), si.ssi_pid);
                return WH_OK;
            }
        }
        for (int i = 0; i < MAX_RELAYS; i++)
            if (l->relays[i] && relay_serve(l->relays[i], pfds) != WH_OK)
                relay_free(l, i);
        for (int i = 0; i < MAX_CTL_CONNS; i++)
            if (l->ctls[i].fd >= 0 && pfds[l->ctls[i].idx].revents)
                ctl_serve(l, &l->ctls[i]);
        if (fwd_idx >= 0 && pfds[fwd_idx].revents)
            forwarder_accept(l);
        if (ctl_idx >= 0 && pfds[ctl_idx].revents)
            ctl_accept(l);
    }
}

static void loop_cleanup(struct loop *l)
{
    for (int i = 0; i < MAX_RELAYS; i++)
        if (l->relays[i])
            relay_free(l, i);
    for (int i = 0; i < MAX_CTL_CONNS; i++)
        if (l->ctls[i].fd >= 0)
            ctl_close(&l->ctls[i]);
    if (l->fwd_fd >= 0)
        close(l->fwd_fd);
    if (l->ctl_fd >= 0)
        close(l->ctl_fd);
    if (l->sig_fd >= 0)
        close(l->sig_fd);
}

static rd_kafka_t *mock_handle_new(char *err, size_t errlen)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk;

    if (rd_kafka_conf_set(conf, "client.id", PROG, errstr, sizeof(errstr)) !=
            RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "log_level", "4", errstr, sizeof(errstr)) !=
            RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        wh_errf(err, errlen, "rd_kafka_conf_set() failed: %s", errstr);
        return NULL;
    }
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        wh_errf(err, errlen, "rd_kafka_new() failed: %s", errstr);
    }
    return rk;
}

int main(int argc, char **argv)
{
    struct options opt;
    struct loop l;
    char err[WH_ERRLEN];
    char line[LINE_MAX_OUT];
    const char *bootstraps;
    rd_kafka_t *rk = NULL;
    sigset_t sigs;
    int rc, fwd_port = 0, ctl_port = 0, status = 1;

    rc = parse_args(argc, argv, &opt, err, sizeof(err));
    if (rc == WH_DECLINED) {
        usage(stdout);
        return 0;
    }
    if (rc != WH_OK) {
        fprintf(stderr, PROG ": %s\nTry '" PROG " --help'.\n", err);
        return EXIT_USAGE;
    }

    memset(&l, 0, sizeof(l));
    l.opt = &opt;
    l.sig_fd = l.fwd_fd = l.ctl_fd = -1;
    for (int i = 0; i < MAX_CTL_CONNS; i++)
        l.ctls[i].fd = -1;

    /* Blocked before librdkafka starts its threads, so they inherit it and
     * the signals reach only the signalfd. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    if (pthread_sigmask(SIG_BLOCK, &sigs, NULL) != 0) {
        wh_errf(err, sizeof(err), "pthread_sigmask() failed");
        goto fail;
    }
    signal(SIGPIPE, SIG_IGN);
    l.sig_fd = signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
    if (l.sig_fd < 0) {
        wh_errf(err, sizeof(err), "signalfd() failed: %s", strerror(errno));
        goto fail;
    }

    /* Fixed ports first, so the mock's random ports cannot take them. */
    if (opt.port >= 0 && listen_loopback(opt.port, &l.fwd_fd, &fwd_port, err,
                                         sizeof(err)) != WH_OK)
        goto fail;
    if (opt.control_port > 0 &&
        listen_loopback(opt.control_port, &l.ctl_fd, &ctl_port, err,
                        sizeof(err)) != WH_OK)
        goto fail;

    rk = mock_handle_new(err, sizeof(err));
    if (!rk)
        goto fail;
    l.mcluster = rd_kafka_mock_cluster_new(rk, opt.brokers);
    if (!l.mcluster) {
        wh_errf(err, sizeof(err), "rd_kafka_mock_cluster_new() failed");
        goto fail;
    }
    for (int i = 0; i < opt.ntopics; i++) {
        rd_kafka_resp_err_t e = rd_kafka_mock_topic_create(
            l.mcluster, opt.topics[i], opt.partitions, 1);
        if (e) {
            wh_errf(err, sizeof(err), "creating topic %s failed: %s",
                    opt.topics[i], rd_kafka_err2str(e));
            goto fail;
        }
    }
    bootstraps = rd_kafka_mock_cluster_bootstraps(l.mcluster);

    if (opt.port >= 0) {
        if (parse_first_bootstrap(bootstraps, &l.upstream, err, sizeof(err)) !=
            WH_OK)
            goto fail;
        snprintf(line, sizeof(line), "KAFKA_BROKERS=127.0.0.1:%d\n", fwd_port);
    } else if (snprintf(line, sizeof(line), "KAFKA_BROKERS=%s\n", bootstraps) >=
               (int)sizeof(line)) {
        wh_errf(err, sizeof(err), "mock bootstrap list too long");
        goto fail;
    }

    if (opt.ready_file &&
        write_ready_file(opt.ready_file, line, err, sizeof(err)))
        goto fail;
    fputs(line, stdout);
    fflush(stdout);

    if (run_loop(&l, err, sizeof(err)) != WH_OK)
        goto fail;
    status = 0;
fail:
    if (status != 0)
        fprintf(stderr, PROG ": %s\n", err);
    loop_cleanup(&l);
    if (l.mcluster)
        rd_kafka_mock_cluster_destroy(l.mcluster);
    if (rk)
        rd_kafka_destroy(rk);
    return status;
}
