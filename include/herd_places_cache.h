/* herd_places_cache: the Places worker's response cache.
 *
 * Raw upstream bodies by request key ("lat,lng metres"), each kept for the
 * same time-to-live, so the oldest entry is always the first to expire and
 * the first to be evicted. Bounded in entries and in bytes. Used by the
 * worker thread only. */
#ifndef HERD_PLACES_CACHE_H
#define HERD_PLACES_CACHE_H

#include <stddef.h>
#include <stdint.h>

typedef struct herd_places_cache_t herd_places_cache_t;

/* A cache whose entries live ttl_ms (0: a cache that keeps nothing), with at
 * most max_entries bodies of max_bytes in all. NULL when out of memory. */
herd_places_cache_t *herd_places_cache_new(long ttl_ms, size_t max_entries, size_t max_bytes);

/* Frees every entry; *p = NULL. NULL-safe. */
void herd_places_cache_destroy(herd_places_cache_t **p);

/* The body cached for key at time now_ms (monotonic), or NULL; *len is set
 * when found. Expired entries are dropped on the way. The body stays valid
 * until the next put. */
const char *herd_places_cache_get(herd_places_cache_t *c, const char *key, int64_t now_ms, size_t *len);

/* Stores body (taking ownership; freed at once when the cache is off or the
 * body alone is larger than max_bytes), replacing any entry for key and
 * evicting the oldest entries to stay within bounds. */
void herd_places_cache_put(herd_places_cache_t *c, const char *key, char *body, size_t len, int64_t now_ms);

/* A reloaded lifetime: entries put from now on live ttl_ms (0: the cache
 * keeps nothing, and drops what it holds); an entry held is kept at most
 * ttl_ms from when it was put, so a shorter lifetime applies at once. */
void herd_places_cache_set_ttl(herd_places_cache_t *c, long ttl_ms, int64_t now_ms);

/* Entries held. */
size_t herd_places_cache_size(const herd_places_cache_t *c);

#endif
