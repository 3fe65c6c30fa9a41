/*
 * fake_pg.h - for unit tests: loopback servers that stand in for a Postgres
 * that stops answering. silent_listener accepts (from the kernel's
 * backlog) and never says a word, like a frozen postmaster; fake_pg speaks
 * just enough of the protocol to connect and answer a few queries, then
 * reads and never answers again, like a frozen backend. Header-only
 * (static functions), included by test_db.c and test_dbq.c.
 */
#ifndef WH_FAKE_PG_H
#define WH_FAKE_PG_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "db.h"

/* A listener that accepts connections (the kernel does, from its
 * backlog) and never says a word, like a frozen postmaster. */
static inline int silent_listener(int *port)
{
    *port = 0;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        listen(fd, 16) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        return -1;
    *port = ntohs(a.sin_port);
    return fd;
}

/* A fake server: one connection; it answers the start-up and the first
 * `answers` simple queries (CommandComplete "SET", ReadyForQuery), then
 * reads and never answers again. */
typedef struct {
    int lfd;
    int answers;
} fake_pg;

static inline int read_full(int fd, void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return 0;
}

static inline uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
           (uint32_t)p[2] << 8 | p[3];
}

static inline void *fake_pg_main(void *o)
{
    fake_pg *f = o;
    int fd = accept(f->lfd, NULL, NULL);
    unsigned char hdr[5], body[4096];
    if (fd < 0)
        return NULL;
    /* StartupMessage: length, then protocol and parameters */
    if (read_full(fd, hdr, 4) != 0 || be32(hdr) < 8 ||
        be32(hdr) - 4 > sizeof(body) || read_full(fd, body, be32(hdr) - 4))
        goto out;
    static const unsigned char ready[] = {
        'R', 0, 0, 0, 8, 0, 0, 0, 0, /* AuthenticationOk */
        'Z', 0, 0, 0, 5, 'I'};       /* ReadyForQuery */
    if (write(fd, ready, sizeof(ready)) != (ssize_t)sizeof(ready))
        goto out;
    for (;;) {
        if (read_full(fd, hdr, 5) != 0 || be32(hdr + 1) < 4 ||
            be32(hdr + 1) - 4 > sizeof(body) ||
            read_full(fd, body, be32(hdr + 1) - 4) != 0)
            break;
        if (hdr[0] == 'X')
            break;
        if (f->answers-- <= 0)
            continue; /* frozen from here on */
        static const unsigned char done[] = {
            'C', 0, 0, 0, 8, 'S', 'E', 'T', 0, /* CommandComplete */
            'Z', 0, 0, 0, 5, 'I'};
        if (write(fd, done, sizeof(done)) != (ssize_t)sizeof(done))
            break;
    }
out:
    close(fd);
    return NULL;
}

/* Connects to a fake server that answers `answers` queries (the SET of
 * the statement timeout is the first); *th runs it. */
static inline wh_db *connect_fake(fake_pg *f, pthread_t *th, int answers,
                           int64_t statement_timeout_ms)
{
    int port = 0;
    f->lfd = silent_listener(&port);
    f->answers = answers;
    if (f->lfd < 0 || pthread_create(th, NULL, fake_pg_main, f) != 0)
        return NULL;
    char url[160], err[512];
    snprintf(url, sizeof(url),
             "postgresql://postgres@127.0.0.1:%d/x?sslmode=disable"
             "&gssencmode=disable", port);
    wh_db_opts saved = *wh_db_defaults(), o = saved;
    o.statement_timeout_ms = statement_timeout_ms;
    wh_db_set_defaults(&o);
    wh_db *db = NULL;
    if (wh_db_connect(url, &db, err, sizeof(err)) != WH_OK)
        fprintf(stderr, "fake connect: %s\n", err);
    wh_db_set_defaults(&saved);
    return db;
}

#endif
