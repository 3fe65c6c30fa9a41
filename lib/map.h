/*
 * map.h - a string-keyed hash map of pointers (open addressing, linear
 * probing, tombstones). Keys are copied; values are borrowed. Used by the
 * worker for its endpoint cache and lanes. Not thread-safe.
 */
#ifndef WH_MAP_H
#define WH_MAP_H

#include "wh.h"

typedef struct wh_map wh_map;

wh_map *wh_map_new(void);
/* Frees the map and its key copies, not the values. */
void wh_map_destroy(wh_map *m);
void *wh_map_get(const wh_map *m, const char *key);
/* Inserts or replaces; *old (may be NULL) gets the replaced value. */
int wh_map_put(wh_map *m, const char *key, void *value,
               void **old) WH_MUST_CHECK;
/* Removes key and returns its value, or NULL. */
void *wh_map_del(wh_map *m, const char *key);
size_t wh_map_size(const wh_map *m);
/* Calls fn for every entry; fn must not modify the map. */
void wh_map_each(const wh_map *m, void (*fn)(const char *key, void *value,
                                             void *opaque),
                 void *opaque);

#endif
