/* herd_places_cache: TTL cache of Places bodies. See herd_places_cache.h. */
#include "herd_places_cache.h"

#include <stdlib.h>
#include <string.h>

#include <czmq.h>

#include "herd_list.h"

/* One cached upstream body. */
typedef struct entry_t {
    char *key;                  /* request key (owned) */
    char *body;                 /* the raw body; cut per request */
    size_t len;                 /* its length */
    int64_t expires_ms;         /* monotonic time it stops being served */
    herd_list_node_t link;      /* on the cache's list, in insertion order */
} entry_t;

struct herd_places_cache_t {
    long ttl_ms;         /* lifetime of every entry, 0 = off */
    size_t max_entries;  /* most entries */
    size_t max_bytes;    /* most bytes of bodies in all */
    zhashx_t *index;     /* key -> entry_t */
    herd_list_t order;   /* entries in insertion order, oldest first (entry_t.link) */
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

/* The oldest entry, or NULL. */
static entry_t *oldest(const herd_places_cache_t *c)
{
    return HERD_LIST_ENTRY(c->order.head, entry_t, link);
}

static void unlink_free(herd_places_cache_t *c, entry_t *e)
{
    herd_list_remove(&c->order, &e->link);
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
    while (c->order.head)
        unlink_free(c, oldest(c));
    zhashx_destroy(&c->index);
    free(c);
    *p = NULL;
}

const char *herd_places_cache_get(herd_places_cache_t *c, const char *key, int64_t now_ms, size_t *len)
{
    if (!c->ttl_ms)
        return NULL;
    while (c->order.head && oldest(c)->expires_ms <= now_ms)
        unlink_free(c, oldest(c));
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
    while (c->order.head && (zhashx_size(c->index) >= c->max_entries || c->bytes + len > c->max_bytes))
        unlink_free(c, oldest(c));
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
    herd_list_push(&c->order, &e->link);
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
        for (herd_list_node_t *n = c->order.head; n; n = n->next)
            HERD_LIST_ENTRY(n, entry_t, link)->expires_ms -= shorter;
    }
    c->ttl_ms = ttl;
    while (c->order.head && (!c->ttl_ms || oldest(c)->expires_ms <= now_ms))
        unlink_free(c, oldest(c));
}

size_t herd_places_cache_size(const herd_places_cache_t *c)
{
    return zhashx_size(c->index);
}
