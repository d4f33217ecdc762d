/* herd_places_cache: TTL cache of Places bodies. See herd_places_cache.h. */
#include "herd_places_cache.h"

#include <stdlib.h>
#include <string.h>

#include <czmq.h>

/* One cached upstream body. */
typedef struct entry_t {
    char *key;                  /* request key (owned) */
    char *body;                 /* the raw body; cut per request */
    size_t len;                 /* its length */
    int64_t expires_ms;         /* monotonic time it stops being served */
    struct entry_t *prev, *next; /* insertion order, oldest first */
} entry_t;

struct herd_places_cache_t {
    long ttl_ms;         /* lifetime of every entry, 0 = off */
    size_t max_entries;  /* most entries */
    size_t max_bytes;    /* most bytes of bodies in all */
    zhashx_t *index;     /* key -> entry_t */
    entry_t *oldest;     /* head of the insertion-order list */
    entry_t *newest;     /* its tail */
    size_t bytes;        /* bytes of all bodies held */
};

herd_places_cache_t *herd_places_cache_new(long ttl_ms, size_t max_entries, size_t max_bytes)
{
    herd_places_cache_t *c = calloc(1, sizeof *c);
    if (!c || !(c->index = zhashx_new())) {
        free(c);
        return NULL;
    }
    c->ttl_ms = ttl_ms > 0 ? ttl_ms : 0;
    c->max_entries = max_entries ? max_entries : 1;
    c->max_bytes = max_bytes;
    return c;
}

static void unlink_free(herd_places_cache_t *c, entry_t *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        c->oldest = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->newest = e->prev;
    c->bytes -= e->len;
    zhashx_delete(c->index, e->key);
    free(e->key);
    free(e->body);
    free(e);
}

void herd_places_cache_destroy(herd_places_cache_t **p)
{
    if (!p || !*p)
        return;
    herd_places_cache_t *c = *p;
    while (c->oldest)
        unlink_free(c, c->oldest);
    zhashx_destroy(&c->index);
    free(c);
    *p = NULL;
}

const char *herd_places_cache_get(herd_places_cache_t *c, const char *key, int64_t now_ms, size_t *len)
{
    if (!c->ttl_ms)
        return NULL;
    while (c->oldest && c->oldest->expires_ms <= now_ms)
        unlink_free(c, c->oldest);
    entry_t *e = zhashx_lookup(c->index, key);
    if (!e)
        return NULL;
    *len = e->len;
    return e->body;
}

void herd_places_cache_put(herd_places_cache_t *c, const char *key, char *body, size_t len, int64_t now_ms)
{
    if (!c->ttl_ms || len > c->max_bytes) {
        free(body);
        return;
    }
    entry_t *old = zhashx_lookup(c->index, key);
    if (old)
        unlink_free(c, old);
    while (c->oldest && (zhashx_size(c->index) >= c->max_entries || c->bytes + len > c->max_bytes))
        unlink_free(c, c->oldest);
    entry_t *e = calloc(1, sizeof *e);
    char *k = strdup(key);
    if (!e || !k) {
        free(e);
        free(k);
        free(body);
        return;
    }
    e->key = k;
    e->body = body;
    e->len = len;
    e->expires_ms = now_ms + c->ttl_ms;
    e->prev = c->newest;
    if (c->newest)
        c->newest->next = e;
    else
        c->oldest = e;
    c->newest = e;
    c->bytes += len;
    zhashx_insert(c->index, key, e);
}

void herd_places_cache_set_ttl(herd_places_cache_t *c, long ttl_ms, int64_t now_ms)
{
    long ttl = ttl_ms > 0 ? ttl_ms : 0;
    if (ttl < c->ttl_ms) {
        /* Every entry was put with the same lifetime, so moving all their
         * ends by the same amount keeps the oldest first to expire. */
        int64_t shorter = c->ttl_ms - ttl;
        for (entry_t *e = c->oldest; e; e = e->next)
            e->expires_ms -= shorter;
    }
    c->ttl_ms = ttl;
    while (c->oldest && (!c->ttl_ms || c->oldest->expires_ms <= now_ms))
        unlink_free(c, c->oldest);
}

size_t herd_places_cache_size(const herd_places_cache_t *c)
{
    return zhashx_size(c->index);
}
