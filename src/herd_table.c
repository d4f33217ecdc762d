/* herd_table: client id -> newest known location record.
 *
 * The index is a power-of-two array of record pointers with linear probing.
 * Nothing is ever removed (a client's record is only replaced), so there are
 * no tombstones and a probe stops at the first empty slot.
 *
 * Memory per client: one malloc holding the 40-byte herd_record_t followed by
 * the id bytes and the AT line with its NUL, plus one 8-byte slot at a load of
 * 0.375 to 0.75 (11 to 21 bytes a client). With glibc's chunk header and
 * rounding, 100k to 400k clients measured 74 to 82 bytes beyond the strings. */
#include "herd_table.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define INITIAL_CAPACITY 16

/* One client's record and its bytes, in a single allocation. */
typedef struct {
    herd_record_t r; /* what callers see; r.id and r.at point into data */
    char data[];     /* the id bytes, then the AT line and a NUL */
} rec_t;

struct herd_table_t {
    rec_t **slots;   /* capacity entries, NULL when empty */
    size_t mask;     /* capacity - 1; capacity is a power of two */
    size_t size;     /* records held */
    uint64_t seed;   /* random per table, so clients cannot aim ids at one chain */
    uint64_t digest; /* XOR of entry_digest() over every record */
};

/* A bijective 64-bit finaliser: every input bit affects every output bit. */
static uint64_t mix64(uint64_t x)
{
    x ^= x >> 31;
    x *= 0x9e3779b97f4a7c15ULL;
    x ^= x >> 29;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 32;
    return x;
}

static uint64_t rotl64(uint64_t x, unsigned r)
{
    return (x << r) | (x >> (64 - r));
}

/* The index hash: eight bytes a step, keyed by the table's seed. */
static uint64_t hash_id(uint64_t seed, const char *p, size_t n)
{
    const uint64_t k1 = 0x87c37b91114253d5ULL, k2 = 0xff51afd7ed558ccdULL;
    uint64_t h = seed ^ ((uint64_t) n * k2);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = rotl64(h ^ (w * k1), 31) * k2;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    for (size_t i = 0; i < n; i++)
        w |= (uint64_t) (unsigned char) p[i] << (8 * i);
    h = rotl64(h ^ (w * k1), 31) * k2;
    return mix64(h ^ seed);
}

/* FNV-1a over a byte run; used for the digest, which must come out the same
 * in every process and on every machine, so it is unseeded and byte-wise. */
static uint64_t fnv1a(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* The digest term of one (id, time): FNV-1a over the id bytes, then the
 * seconds (8 bytes) and nanoseconds (4 bytes) little-endian. The fixed-size
 * tail makes the byte string unambiguous. */
static uint64_t entry_digest(const char *id, size_t id_len, herd_time_t t)
{
    unsigned char tail[12];
    uint64_t s = (uint64_t) t.sec;
    uint32_t ns = (uint32_t) t.nsec;
    for (int i = 0; i < 8; i++)
        tail[i] = (unsigned char) (s >> (8 * i));
    for (int i = 0; i < 4; i++)
        tail[8 + i] = (unsigned char) (ns >> (8 * i));
    uint64_t h = fnv1a(0xcbf29ce484222325ULL, id, id_len);
    return mix64(fnv1a(h, tail, sizeof tail));
}

static int time_cmp(herd_time_t a, herd_time_t b)
{
    if (a.sec != b.sec)
        return a.sec < b.sec ? -1 : 1;
    if (a.nsec != b.nsec)
        return a.nsec < b.nsec ? -1 : 1;
    return 0;
}

static uint64_t make_seed(const herd_table_t *t)
{
    uint64_t seed;
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) == (ssize_t) sizeof seed)
        return seed;
    /* No entropy yet (early boot): still differ from run to run. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return mix64((uint64_t) ts.tv_nsec ^ ((uint64_t) ts.tv_sec << 30) ^ (uint64_t) (uintptr_t) t);
}

static bool same_id(const rec_t *r, const char *id, size_t id_len)
{
    return r->r.id_len == id_len && (id_len == 0 || memcmp(r->data, id, id_len) == 0);
}

/* The slot holding `id`, or the empty slot where it would go. The table is
 * never full, so the probe always ends. */
static size_t probe(const herd_table_t *t, const char *id, size_t id_len)
{
    size_t i = (size_t) hash_id(t->seed, id, id_len) & t->mask;
    while (t->slots[i] != NULL && !same_id(t->slots[i], id, id_len))
        i = (i + 1) & t->mask;
    return i;
}

static int grow(herd_table_t *t)
{
    size_t cap = (t->mask + 1) * 2;
    rec_t **slots = calloc(cap, sizeof *slots);
    if (slots == NULL)
        return -1;
    for (size_t i = 0; i <= t->mask; i++) {
        rec_t *r = t->slots[i];
        if (r == NULL)
            continue;
        size_t j = (size_t) hash_id(t->seed, r->data, r->r.id_len) & (cap - 1);
        while (slots[j] != NULL)
            j = (j + 1) & (cap - 1);
        slots[j] = r;
    }
    free(t->slots);
    t->slots = slots;
    t->mask = cap - 1;
    return 0;
}

static rec_t *rec_new(const char *id, size_t id_len, herd_time_t time, const char *at,
                      size_t at_len, size_t pos_off, size_t pos_len)
{
    rec_t *r = malloc(sizeof *r + id_len + at_len + 1);
    if (r == NULL)
        return NULL;
    if (id_len > 0)
        memcpy(r->data, id, id_len);
    if (at_len > 0)
        memcpy(r->data + id_len, at, at_len);
    r->data[id_len + at_len] = '\0';
    r->r = (herd_record_t) {
        .time = time,
        .id_len = (uint16_t) id_len,
        .at_len = (uint16_t) at_len,
        .pos_off = (uint16_t) pos_off,
        .pos_len = (uint16_t) pos_len,
        .id = r->data,
        .at = r->data + id_len,
    };
    return r;
}

/*  --------------------------------------------------------------------------
 *  A new, empty table, or NULL when out of memory. */
herd_table_t *herd_table_new(void)
{
    herd_table_t *t = calloc(1, sizeof *t);
    if (t == NULL)
        return NULL;
    t->slots = calloc(INITIAL_CAPACITY, sizeof *t->slots);
    if (t->slots == NULL) {
        free(t);
        return NULL;
    }
    t->mask = INITIAL_CAPACITY - 1;
    t->seed = make_seed(t);
    return t;
}

/*  --------------------------------------------------------------------------
 *  Frees the table and every record; sets *p to NULL. NULL-safe. */
void herd_table_destroy(herd_table_t **p)
{
    if (p == NULL || *p == NULL)
        return;
    herd_table_t *t = *p;
    for (size_t i = 0; i <= t->mask; i++)
        free(t->slots[i]);
    free(t->slots);
    free(t);
    *p = NULL;
}

/*  --------------------------------------------------------------------------
 *  Offers a location; stores it only when strictly newer than the stored one
 *  (or the client is new). Lengths that do not fit the record's uint16
 *  fields, or a position outside the AT line, are refused with
 *  HERD_UPDATE_ERROR, as is running out of memory. */
herd_update_t herd_table_update(herd_table_t *t, const char *id, size_t id_len, herd_time_t time,
                                const char *at, size_t at_len, size_t pos_off, size_t pos_len,
                                const herd_record_t **stored)
{
    if (stored != NULL)
        *stored = NULL;
    if (id_len > UINT16_MAX || at_len > UINT16_MAX || pos_off > at_len
        || pos_len > at_len - pos_off)
        return HERD_UPDATE_ERROR;

    size_t i = probe(t, id, id_len);
    rec_t *old = t->slots[i];
    if (old != NULL) {
        if (stored != NULL)
            *stored = &old->r;
        int c = time_cmp(time, old->r.time);
        if (c <= 0)
            return c == 0 ? HERD_UPDATE_SAME : HERD_UPDATE_OLDER;
    } else if (t->size + 1 > (t->mask + 1) - (t->mask + 1) / 4) {
        /* Grow before inserting so that a probe always finds an empty slot. */
        if (grow(t) < 0)
            return HERD_UPDATE_ERROR;
        i = probe(t, id, id_len);
    }

    rec_t *r = rec_new(id, id_len, time, at, at_len, pos_off, pos_len);
    if (r == NULL)
        return HERD_UPDATE_ERROR;
    if (old != NULL) {
        t->digest ^= entry_digest(old->data, old->r.id_len, old->r.time);
        free(old);
    } else {
        t->size++;
    }
    t->slots[i] = r;
    t->digest ^= entry_digest(id, id_len, time);
    if (stored != NULL)
        *stored = &r->r;
    return HERD_UPDATE_NEWER;
}

/*  --------------------------------------------------------------------------
 *  The record of a client, or NULL when unknown. */
const herd_record_t *herd_table_find(const herd_table_t *t, const char *id, size_t id_len)
{
    if (id_len > UINT16_MAX)
        return NULL;
    rec_t *r = t->slots[probe(t, id, id_len)];
    return r != NULL ? &r->r : NULL;
}

/*  --------------------------------------------------------------------------
 *  Number of clients held. */
size_t herd_table_size(const herd_table_t *t)
{
    return t->size;
}

/*  --------------------------------------------------------------------------
 *  An order-independent digest of every (id, time) held, kept up to date on
 *  each update. Equal contents give equal digests in any process. */
uint64_t herd_table_digest(const herd_table_t *t)
{
    return t->digest;
}

/*  --------------------------------------------------------------------------
 *  Iteration in slot order: start with *cursor = 0; NULL at the end. */
const herd_record_t *herd_table_next(const herd_table_t *t, size_t *cursor)
{
    for (size_t i = *cursor; i <= t->mask; i++) {
        if (t->slots[i] != NULL) {
            *cursor = i + 1;
            return &t->slots[i]->r;
        }
    }
    *cursor = t->mask + 1;
    return NULL;
}

/*  --------------------------------------------------------------------------
 *  Removes a client's record (a DROP replayed from the journal). Returns
 *  true when it was held. Linear probing without tombstones: the records
 *  after the hole that could live in it are shifted back, so every probe
 *  still stops at the first empty slot. */
bool herd_table_remove(herd_table_t *t, const char *id, size_t id_len)
{
    if (id_len > UINT16_MAX)
        return false;
    size_t i = probe(t, id, id_len);
    rec_t *r = t->slots[i];
    if (r == NULL)
        return false;
    t->digest ^= entry_digest(r->data, r->r.id_len, r->r.time);
    free(r);
    t->slots[i] = NULL;
    t->size--;
    for (size_t j = (i + 1) & t->mask; t->slots[j] != NULL; j = (j + 1) & t->mask) {
        rec_t *e = t->slots[j];
        size_t home = (size_t) hash_id(t->seed, e->data, e->r.id_len) & t->mask;
        /* e stays when its home lies cyclically in (i, j]. */
        bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (!stays) {
            t->slots[i] = e;
            t->slots[j] = NULL;
            i = j;
        }
    }
    return true;
}
