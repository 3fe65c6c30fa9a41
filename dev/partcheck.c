/*
 * partcheck.c - webhook-partcheck, the check that the partition the Kafka
 * adapter computes for a key (wh_kafka_producer_partition) is the one
 * librdkafka's default partitioner picks when producing by key, and that
 * a send to an explicit partition lands there whatever partitioner the
 * producer is configured with. For each of --keys keys it produces three
 * messages to --topic:
 *
 *   K  by key, from a producer with librdkafka's default partitioner;
 *   E  to the partition the adapter computes, from a producer configured
 *      with partitioner=murmur2 (another mapping);
 *   M  by key from that murmur2 producer, to show it maps keys elsewhere;
 *
 * then reads the topic back (its own consumer group, from the start) and
 * checks where each message landed. Prints one summary line; exits 0 when
 * every K and E message is on the computed partition, 1 when one is not,
 * 2 on bad usage, 3 when Kafka did not take or return the messages in
 * time. Single-threaded command-line program for the tests
 * (tests/integration/test_partition.sh), against any broker, usually
 * webhook-devbroker.
 */
#include "kafka.h"
#include "log.h"
#include "wh.h"

#include <getopt.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PROG "webhook-partcheck"

#define KEYS_MAX    100000
#define KEY_LEN     23       /* "ep_" + 20 characters, like endpoint ids */
#define TIMEOUT_MS  60000    /* for each phase: counts, acks, read-back */
#define EXIT_MISMATCH 1
#define EXIT_USAGE    2
#define EXIT_KAFKA    3

enum { KIND_K, KIND_E, KIND_M, KINDS };
static const char kind_tag[KINDS] = {'K', 'E', 'M'};

typedef struct {
    char key[KEY_LEN + 1];
    int32_t computed;        /* wh_kafka_producer_partition */
    int32_t landed[KINDS];   /* where each message was read back; -1 */
} key_state;

static struct {
    const char *brokers, *topic;
    long keys;
} opt = {.keys = 1000};

static struct {
    key_state *k;
    unsigned long run;       /* tells this run's messages from older ones */
    long acked, refused;
    char first_refusal[WH_ERRLEN];
} st;

static const char usage_text[] =
    "usage: " PROG " --topic TOPIC [--keys N] [--brokers HOST:PORT]\n"
    "\n"
    "Checks that the partition webhook's producers compute for a key is the\n"
    "one librdkafka's default partitioner picks by key, and that explicit\n"
    "sends land on their partition under partitioner=murmur2.\n"
    "\n"
    "  --topic TOPIC        the topic to produce to and read back\n"
    "  --keys N             keys to check (default 1000, max 100000)\n"
    "  --brokers HOST:PORT  bootstrap servers (default $KAFKA_BROKERS)\n"
    "  --help               show this text\n";

static _Noreturn void die(int code, const char *fmt, ...) WH_PRINTF(2, 3);

static _Noreturn void die(int code, const char *fmt, ...)
{
    va_list ap;
    fputs(PROG ": ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs(code == EXIT_USAGE ? "\n(see --help)\n" : "\n", stderr);
    exit(code);
}

static void parse_args(int argc, char **argv)
{
    enum { O_TOPIC = 1, O_KEYS, O_BROKERS, O_HELP };
    static const struct option longopts[] = {
        {"topic", required_argument, NULL, O_TOPIC},
        {"keys", required_argument, NULL, O_KEYS},
        {"brokers", required_argument, NULL, O_BROKERS},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    int c;
    char *end;
    opt.brokers = getenv("KAFKA_BROKERS");
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (c) {
        case O_TOPIC:
            opt.topic = optarg;
            break;
        case O_KEYS:
            opt.keys = strtol(optarg, &end, 10);
            if (*end || end == optarg || opt.keys < 1 || opt.keys > KEYS_MAX)
                die(EXIT_USAGE, "--keys %s: expected a count 1..%d", optarg,
                    KEYS_MAX);
            break;
        case O_BROKERS:
            opt.brokers = optarg;
            break;
        case 'h':
        case O_HELP:
            fputs(usage_text, stdout);
            exit(0);
        default:
            die(EXIT_USAGE, "unknown or incomplete option '%s'",
                argv[optind - 1]);
        }
    }
    if (optind < argc)
        die(EXIT_USAGE, "unexpected argument '%s'", argv[optind]);
    if (!opt.topic || !*opt.topic)
        die(EXIT_USAGE, "--topic is required");
    if (!opt.brokers || !*opt.brokers)
        die(EXIT_USAGE, "no brokers: give --brokers or set KAFKA_BROKERS");
}

/* Endpoint-like keys from a fixed generator, so a run can be repeated. */
static void make_keys(void)
{
    static const char alnum[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    uint64_t x = 0x9E3779B97F4A7C15u;
    for (long i = 0; i < opt.keys; i++) {
        key_state *k = &st.k[i];
        memcpy(k->key, "ep_", 3);
        for (int j = 3; j < KEY_LEN; j++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            k->key[j] = alnum[x % (sizeof(alnum) - 1)];
        }
        k->key[KEY_LEN] = '\0';
        for (int j = 0; j < KINDS; j++)
            k->landed[j] = -1;
    }
}

static void on_report(void *opaque, void *msg_opaque, int ok,
                      const char *errstr)
{
    (void)opaque;
    (void)msg_opaque;
    if (ok) {
        st.acked++;
    } else if (st.refused++ == 0) {
        wh_strlcpy(st.first_refusal, errstr ? errstr : "unknown error",
                   sizeof(st.first_refusal));
    }
}

static int64_t deadline(void) { return wh_mono_us() + TIMEOUT_MS * 1000LL; }

/* The topic's partition count as p reads it, waiting for it. */
static int32_t count_of(wh_kafka_producer *p)
{
    char err[WH_ERRLEN];
    int32_t n;
    int64_t until = deadline();
    int rc;
    while ((rc = wh_kafka_producer_partitions(p, opt.topic, &n, err,
                                              sizeof(err))) == WH_AGAIN) {
        if (wh_mono_us() >= until)
            die(EXIT_KAFKA, "%s (after %d ms)", err, TIMEOUT_MS);
        wh_kafka_producer_poll(p, 10);
    }
    if (rc != WH_OK)
        die(EXIT_KAFKA, "%s", err);
    return n;
}

/* Queues message kind of key i to partition (or by key). */
static void send_one(wh_kafka_producer *p, long i, int kind,
                     int32_t partition)
{
    char value[96], err[WH_ERRLEN];
    int n = snprintf(value, sizeof(value), "%lu %c %ld", st.run,
                     kind_tag[kind], i);
    int64_t until = deadline();
    int rc;
    while ((rc = wh_kafka_producer_send(p, opt.topic, partition, st.k[i].key,
                                        KEY_LEN, value, (size_t)n, NULL,
                                        NULL, err, sizeof(err))) ==
           WH_AGAIN) {
        if (wh_mono_us() >= until)
            die(EXIT_KAFKA, "the producer's queue stayed full");
        wh_kafka_producer_poll(p, 10);
    }
    if (rc != WH_OK)
        die(EXIT_KAFKA, "%s", err);
}

static void flush(wh_kafka_producer *p)
{
    char err[WH_ERRLEN];
    if (wh_kafka_producer_flush(p, TIMEOUT_MS, err, sizeof(err)) != WH_OK)
        die(EXIT_KAFKA, "%s", err);
}

/* Reads the topic from the start until every message of this run came
 * back; notes where each landed. */
static void read_back(const wh_kafka_conf *kc)
{
    char err[WH_ERRLEN], group[64], value[96];
    snprintf(group, sizeof(group), PROG "-%lu", st.run);
    wh_kafka_consumer *c;
    if (wh_kafka_consumer_new(kc, group, opt.topic, NULL, NULL, &c, err,
                              sizeof(err)) != WH_OK)
        die(EXIT_KAFKA, "%s", err);
    long want = opt.keys * KINDS, got = 0;
    int64_t until = deadline();
    while (got < want) {
        if (wh_mono_us() >= until)
            die(EXIT_KAFKA, "read back %ld of %ld messages in %d ms", got,
                want, TIMEOUT_MS);
        wh_kmsg *m = wh_kafka_consumer_poll(c, 100);
        if (!m)
            continue;
        size_t len;
        const char *v = wh_kmsg_value(m, &len);
        unsigned long run;
        char tag;
        long i;
        if (v && len < sizeof(value)) {
            memcpy(value, v, len);
            value[len] = '\0';
            if (sscanf(value, "%lu %c %ld", &run, &tag, &i) == 3 &&
                run == st.run && i >= 0 && i < opt.keys) {
                const char *t = memchr(kind_tag, tag, KINDS);
                int kind = t ? (int)(t - kind_tag) : -1;
                if (kind >= 0 && st.k[i].landed[kind] < 0) {
                    st.k[i].landed[kind] = wh_kmsg_partition(m);
                    got++;
                }
            }
        }
        wh_kmsg_destroy(m);
    }
    wh_kafka_consumer_destroy(c);
}

int main(int argc, char **argv)
{
    char err[WH_ERRLEN];
    parse_args(argc, argv);
    if (wh_log_init("text", "warn", PROG, err, sizeof(err)) != WH_OK)
        die(EXIT_USAGE, "%s", err);
    if (!(st.k = calloc((size_t)opt.keys, sizeof(*st.k))))
        die(EXIT_KAFKA, "out of memory");
    st.run = (unsigned long)getpid() * 1000003u ^ (unsigned long)time(NULL);
    make_keys();

    wh_kafka_conf kc = {.brokers = opt.brokers, .client_id = PROG};
    wh_kafka_conf murmur = kc;
    murmur.extra = "partitioner=murmur2";
    wh_kafka_producer *def, *mur;
    if (wh_kafka_producer_new(&kc, on_report, NULL, &def, err,
                              sizeof(err)) != WH_OK ||
        wh_kafka_producer_new(&murmur, on_report, NULL, &mur, err,
                              sizeof(err)) != WH_OK)
        die(EXIT_KAFKA, "%s", err);
    int32_t n = count_of(def), n_mur = count_of(mur);
    if (n != n_mur)
        die(EXIT_MISMATCH, "the two producers read %d and %d partitions",
            (int)n, (int)n_mur);
    for (long i = 0; i < opt.keys; i++) {
        char e2[WH_ERRLEN];
        if (wh_kafka_producer_partition(mur, opt.topic, st.k[i].key, KEY_LEN,
                                        &st.k[i].computed, e2,
                                        sizeof(e2)) != WH_OK)
            die(EXIT_KAFKA, "%s", e2);
        send_one(def, i, KIND_K, WH_KAFKA_PARTITION_ANY);
        send_one(mur, i, KIND_E, st.k[i].computed);
        send_one(mur, i, KIND_M, WH_KAFKA_PARTITION_ANY);
    }
    flush(def);
    flush(mur);
    if (st.refused > 0 || st.acked != opt.keys * KINDS)
        die(EXIT_KAFKA, "Kafka acknowledged %ld of %ld messages (%ld refused"
            "%s%s)", st.acked, opt.keys * KINDS, st.refused,
            st.refused ? ": " : "", st.first_refusal);
    wh_kafka_producer_destroy(def);
    wh_kafka_producer_destroy(mur);
    kc.session_timeout_ms = 6000; /* the dev broker's group joins */
    kc.heartbeat_ms = 500;
    read_back(&kc);

    long by_key = 0, explicit_ok = 0, murmur_elsewhere = 0, shown = 0;
    int used = 0;
    bool *hit = calloc((size_t)n, sizeof(*hit));
    if (!hit)
        die(EXIT_KAFKA, "out of memory");
    for (long i = 0; i < opt.keys; i++) {
        const key_state *k = &st.k[i];
        by_key += k->landed[KIND_K] == k->computed;
        explicit_ok += k->landed[KIND_E] == k->computed;
        murmur_elsewhere += k->landed[KIND_M] != k->computed;
        if (!hit[k->computed]) {
            hit[k->computed] = true;
            used++;
        }
        if (k->landed[KIND_K] != k->computed && shown++ < 5)
            printf("partcheck: key %s: computed partition %d, produced by "
                   "key to %d\n", k->key, (int)k->computed,
                   (int)k->landed[KIND_K]);
    }
    free(hit);
    printf("partcheck: topic %s, %d partitions, %ld keys: by key %ld/%ld on "
           "the computed partition, explicit under murmur2 %ld/%ld, murmur2 "
           "by key elsewhere %ld/%ld, partitions used %d/%d\n",
           opt.topic, (int)n, opt.keys, by_key, opt.keys, explicit_ok,
           opt.keys, murmur_elsewhere, opt.keys, used, (int)n);
    free(st.k);
    return by_key == opt.keys && explicit_ok == opt.keys ? 0 : EXIT_MISMATCH;
}
