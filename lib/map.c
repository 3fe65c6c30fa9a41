/*
 * map.c - open-addressing string hash map (see map.h). FNV-1a hashing,
 * capacity a power of two, grown at 70% load counting tombstones.
 */
#include "map.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    char *key;      /* NULL = empty; TOMB = deleted */
    uint64_t hash;
    void *value;
} slot;

struct wh_map {
    slot *slots;
    size_t cap, size, used; /* used = size + tombstones */
};

static char tomb_;
#define TOMB (&tomb_)

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

wh_map *wh_map_new(void)
{
    wh_map *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->cap = 16;
    m->slots = calloc(m->cap, sizeof(slot));
    if (!m->slots) {
        free(m);
        return NULL;
    }
    return m;
}

void wh_map_destroy(wh_map *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].key && m->slots[i].key != TOMB)
            free(m->slots[i].key);
    free(m->slots);
    free(m);
}

static slot *find(const wh_map *m, const char *key, uint64_t h)
{
    size_t mask = m->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        slot *s = &m->slots[i];
        if (!s->key)
            return NULL;
        if (s->key != TOMB && s->hash == h && strcmp(s->key, key) == 0)
            return s;
    }
}

void *wh_map_get(const wh_map *m, const char *key)
{
    slot *s = find(m, key, hash_str(key));
    return s ? s->value : NULL;
}

static int grow(wh_map *m)
{
    size_t ncap = m->size * 2 >= m->cap ? m->cap * 2 : m->cap;
    slot *ns = calloc(ncap, sizeof(slot));
    if (!ns)
        return WH_ERR;
    for (size_t i = 0; i < m->cap; i++) {
        slot *s = &m->slots[i];
        if (!s->key || s->key == TOMB)
            continue;
        size_t j = s->hash & (ncap - 1);
        while (ns[j].key)
            j = (j + 1) & (ncap - 1);
        ns[j] = *s;
    }
    free(m->slots);
    m->slots = ns;
    m->cap = ncap;
    m->used = m->size;
    return WH_OK;
}

int wh_map_put(wh_map *m, const char *key, void *value, void **old)
{
    uint64_t h = hash_str(key);
    slot *s = find(m, key, h);
    if (old)
        *old = s ? s->value : NULL;
    if (s) {
        s->value = value;
        return WH_OK;
    }
    if ((m->used + 1) * 10 >= m->cap * 7 && grow(m) != WH_OK)
        return WH_ERR;
    char *k = strdup(key);
    if (!k)
        return WH_ERR;
    size_t mask = m->cap - 1, i = h & mask;
    while (m->slots[i].key && m->slots[i].key != TOMB)
        i = (i + 1) & mask;
    if (!m->slots[i].key)
        m->used++;
    m->slots[i].key = k;
    m->slots[i].hash = h;
    m->slots[i].value = value;
    m->size++;
    return WH_OK;
}

void *wh_map_del(wh_map *m, const char *key)
{
    slot *s = find(m, key, hash_str(key));
    if (!s)
        return NULL;
    void *v = s->value;
    free(s->key);
    s->key = TOMB;
    s->value = NULL;
    m->size--;
    return v;
}

size_t wh_map_size(const wh_map *m) { return m->size; }

void wh_map_each(const wh_map *m,
                 void (*fn)(const char *key, void *value, void *opaque),
                 void *opaque)
{
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].key && m->slots[i].key != TOMB)
            fn(m->slots[i].key, m->slots[i].value, opaque);
}
