/* herd_table: client id -> the highest-ranked known location record.
 *
 * The index is a power-of-two array of slots with linear probing; each slot
 * holds the id's full index hash beside the record pointer, so a probe
 * compares hashes in the slot array and dereferences only the record whose
 * hash matches, and growing or shifting slots never rehashes. Removal uses
 * backward-shift deletion, so there are no tombstones and a probe stops at
 * the first empty slot.
 *
 * A record is one allocation: the fields callers see, what the table keeps
 * parsed beside them (the receive time, the digest bucket, the heap
 * position), then the id bytes and the AT line with its NUL, and whatever
 * room the allocator rounded the block up to. A newer record of a held
 * client is written over the old one in place when it fits, which is nearly
 * always (the lines of one client differ by a few bytes at most): the
 * slot, the bucket chain and the allocation stay, and only the digests
 * change, by XOR.
 *
 * Anti-entropy digests: every record has a fingerprint (a 64-bit hash of its
 * AT line, unseeded so every server computes the same one); a bucket's digest
 * is the XOR of its records' fingerprints, a group's the XOR of its buckets',
 * the table's the XOR of all. Each record also sits on its bucket's chain,
 * so a bucket's records can be listed without a scan; the chain changes
 * only when a client comes or goes (or, rarely, its record outgrows its
 * allocation).
 *
 * Bounds (PROTOCOL.md section 6): records leave in the order of the origin's
 * receive time (the client's time plus the AT line's skew, herd_record),
 * ties broken by the rank of section 3, then by the id, so the order is
 * total and every server evicts the same records. A min-heap keeps that
 * order, its entries holding the receive time so that sifting compares
 * without dereferencing records; it is 4-ary, so a record that moves (a
 * newer report of a held client goes to the far end) passes half the
 * levels of a binary heap, each of which writes the heap position into a
 * record. It is only kept while a bound can bite (a ttl is set, or the
 * table has reached max_records), so an unbounded table pays nothing for
 * it on the hot path. */
#include "herd_table.h"

#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "herd_hash.h"
#include "herd_record.h"

#define INITIAL_CAPACITY 16
#define NO_HEAP          UINT32_MAX
#define HEAP_ARITY       4

/* One client's record and its bytes, in a single allocation. */
typedef struct rec_t {
    herd_record_t r;        /* what callers see (first: herd_table_receive_time); r.id and r.at point into data */
    int64_t recv_sec;       /* the origin's receive time (herd_record_receive_time) */
    int32_t recv_nsec;
    uint32_t heap;          /* its index in the heap, NO_HEAP when not in it */
    struct rec_t *bnext;    /* next record in the same digest bucket */
    struct rec_t **bprev;   /* the pointer that points at this record (O(1) unlink: ids can be aimed at one bucket) */
    uint32_t room;          /* bytes usable for data (malloc_usable_size: at least what was asked) */
    uint16_t bucket;        /* its digest bucket */
    char data[];            /* the id bytes, then the AT line and a NUL */
} rec_t;

_Static_assert(HERD_TABLE_BUCKETS <= UINT16_MAX + 1u, "a bucket number fits rec_t.bucket");

/* An index slot: the record, and its id's index hash (rec NULL: empty). */
typedef struct {
    uint64_t hash;
    rec_t *rec;
} slot_t;

/* A heap entry: the record and its receive time, the first key of the
 * eviction order, kept here so that sifting rarely touches the records. */
typedef struct {
    int64_t recv_sec;
    int32_t recv_nsec;
    rec_t *rec;
} hent_t;

struct herd_table_t {
    slot_t *slots;          /* capacity entries */
    size_t mask;            /* capacity - 1; capacity is a power of two */
    size_t size;            /* records held */
    uint64_t seed;          /* random per table: the index's SipHash key is (seed, seed2) */
    uint64_t seed2;
    uint64_t digest;        /* XOR of every record's fingerprint */
    uint64_t *bucket_digest; /* HERD_TABLE_BUCKETS digests */
    rec_t **bucket_head;    /* HERD_TABLE_BUCKETS chains */
    uint64_t group_digest[HERD_TABLE_GROUPS];
    uint64_t max_records;   /* 0 = no bound */
    int64_t ttl_s;          /* 0 = no expiry */
    int64_t floor_sec;      /* records received before this second are expired */
    herd_table_drop_fn *drop; /* told of every record dropped by a bound */
    void *drop_arg;
    uint64_t dropped;       /* records dropped by a bound so far */
    hent_t *heap;           /* min-heap in eviction order, when heap_on */
    size_t heap_cap;
    bool heap_on;           /* every record is in the heap */
};

/* The index hash of an id. */
static uint64_t index_hash(const herd_table_t *t, const char *id, size_t id_len)
{
    /* Keyed by a random 128-bit key per table, so clients cannot aim ids
     * at one probe chain. */
    return herd_hash_siphash13(t->seed, t->seed2, id, id_len);
}

#define BUCKET_SEED 0x6865726462756b31ULL /* fixed: every server must agree */

uint32_t herd_table_bucket_of(const char *id, size_t id_len)
{
    return (uint32_t) (herd_hash_fixed(BUCKET_SEED, id, id_len) >> 48) & (HERD_TABLE_BUCKETS - 1);
}

/* Byte-wise comparison of two runs, the shorter first when one is a prefix. */
static int bytes_cmp(const char *a, size_t na, const char *b, size_t nb)
{
    int c = memcmp(a, b, na < nb ? na : nb);
    if (c != 0)
        return c;
    return na < nb ? -1 : na > nb;
}

/* The ranking's keys after the time: origin, then position. */
static int tie_cmp(herd_span_t oa, herd_span_t pos_a, herd_span_t ob, herd_span_t pos_b)
{
    int c = bytes_cmp(oa.p, oa.len, ob.p, ob.len);
    return c != 0 ? c : bytes_cmp(pos_a.p, pos_a.len, pos_b.p, pos_b.len);
}

/* The contract's own keys of the ranking of two whole AT lines: time,
 * origin, position (the origins are looked for only on a tie of times). */
static int report_cmp(herd_time_t ta, herd_span_t at_a, herd_span_t pos_a, herd_time_t tb, herd_span_t at_b,
                      herd_span_t pos_b)
{
    int c = herd_time_cmp(ta, tb);
    if (c != 0)
        return c;
    return tie_cmp(herd_record_origin(at_a.p, at_a.len), pos_a, herd_record_origin(at_b.p, at_b.len), pos_b);
}

int herd_rank_cmp(herd_time_t ta, herd_span_t at_a, herd_span_t pos_a, herd_time_t tb, herd_span_t at_b,
                  herd_span_t pos_b)
{
    int c = report_cmp(ta, at_a, pos_a, tb, at_b, pos_b);
    return c != 0 ? c : bytes_cmp(at_a.p, at_a.len, at_b.p, at_b.len);
}

/* The eviction order of two records, whole: the receive time, then the
 * rank of section 3 (time, origin, position, the whole AT line), then the
 * id, so that no two records of a table are equal in it. */
static int evict_cmp(const herd_record_t *a, int64_t a_sec, int32_t a_nsec, const herd_record_t *b, int64_t b_sec,
                     int32_t b_nsec)
{
    if (a_sec != b_sec)
        return a_sec < b_sec ? -1 : 1;
    if (a_nsec != b_nsec)
        return a_nsec < b_nsec ? -1 : 1;
    int c = herd_time_cmp(a->time, b->time);
    if (c != 0)
        return c;
    const char *aa = a->at, *ba = b->at;
    if ((c = bytes_cmp(aa + 3, a->origin_len, ba + 3, b->origin_len)) != 0)
        return c;
    if ((c = bytes_cmp(aa + a->pos_off, a->pos_len, ba + b->pos_off, b->pos_len)) != 0)
        return c;
    if ((c = bytes_cmp(aa, a->at_len, ba, b->at_len)) != 0)
        return c;
    return bytes_cmp(a->id, a->id_len, b->id, b->id_len);
}

/* The eviction order of two heap entries. */
static int hent_cmp(const hent_t *a, const hent_t *b)
{
    return evict_cmp(&a->rec->r, a->recv_sec, a->recv_nsec, &b->rec->r, b->recv_sec, b->recv_nsec);
}

static uint64_t make_seed(const herd_table_t *t)
{
    uint64_t seed;
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) == (ssize_t) sizeof seed)
        return seed;
    /* No entropy yet (early boot): still differ from run to run. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return herd_hash_mix64((uint64_t) ts.tv_nsec ^ ((uint64_t) ts.tv_sec << 30) ^ (uint64_t) (uintptr_t) t);
}

static bool same_id(const rec_t *r, const char *id, size_t id_len)
{
    return r->r.id_len == id_len && (id_len == 0 || memcmp(r->data, id, id_len) == 0);
}

/* The slot holding `id` (whose index hash is h), or the empty slot where it
 * would go. Only a slot whose hash matches costs a look at its record. The
 * table is never full, so the probe always ends. */
static size_t probe(const herd_table_t *t, uint64_t h, const char *id, size_t id_len)
{
    size_t i = (size_t) h & t->mask;
    for (;;) {
        const slot_t *s = &t->slots[i];
        if (s->rec == NULL || (s->hash == h && same_id(s->rec, id, id_len)))
            return i;
        i = (i + 1) & t->mask;
    }
}

/* Moves the index to `cap` slots (a power of two above the size). */
static int grow_to(herd_table_t *t, size_t cap)
{
    slot_t *slots = calloc(cap, sizeof *slots);
    if (slots == NULL)
        return -1;
    for (size_t i = 0; i <= t->mask; i++) {
        if (t->slots[i].rec == NULL)
            continue;
        size_t j = (size_t) t->slots[i].hash & (cap - 1);
        while (slots[j].rec != NULL)
            j = (j + 1) & (cap - 1);
        slots[j] = t->slots[i];
    }
    free(t->slots);
    t->slots = slots;
    t->mask = cap - 1;
    return 0;
}

static int grow(herd_table_t *t)
{
    return grow_to(t, (t->mask + 1) * 2);
}

int herd_table_reserve(herd_table_t *t, size_t n)
{
    size_t cap = t->mask + 1;
    while (n > cap - cap / 4) {
        if (cap > SIZE_MAX / 4 / sizeof *t->slots)
            return -1;
        cap *= 2;
    }
    return cap == t->mask + 1 ? 0 : grow_to(t, cap);
}

/* Empties slot i and shifts the entries after it back, so that every probe
 * still finds its record without tombstones. */
static void slot_delete(herd_table_t *t, size_t i)
{
    size_t j = i;
    for (;;) {
        j = (j + 1) & t->mask;
        if (t->slots[j].rec == NULL)
            break;
        size_t home = (size_t) t->slots[j].hash & t->mask;
        /* The entry may move to i when i lies on its probe path from home to j. */
        bool movable = i <= j ? (home <= i || home > j) : (home <= i && home > j);
        if (movable) {
            t->slots[i] = t->slots[j];
            i = j;
        }
    }
    t->slots[i] = (slot_t) {0, NULL};
}

/* Bytes a record's data takes: the id, the AT line and its NUL. */
static size_t room_for(size_t id_len, size_t at_len)
{
    return id_len + at_len + 1;
}

/* Writes a record's fields and bytes into r (whose room is enough). The
 * id and line may lie inside r itself (an update offering a record's own
 * bytes), so they are moved, not copied. */
static void rec_fill(rec_t *r, const herd_table_offer_t *o, uint64_t fingerprint)
{
    size_t id_len = o->id_len, at_len = o->at_len;
    if (id_len > 0)
        memmove(r->data, o->id, id_len);
    if (at_len > 0)
        memmove(r->data + id_len, o->at, at_len);
    r->data[id_len + at_len] = '\0';
    r->r = (herd_record_t) {
        .time = o->time,
        .digest = fingerprint,
        .id_len = (uint16_t) id_len,
        .at_len = (uint16_t) at_len,
        .pos_off = (uint16_t) o->pos_off,
        .pos_len = (uint16_t) o->pos_len,
        .origin_len = (uint16_t) o->origin_len,
        .id = r->data,
        .at = r->data + id_len,
    };
    r->recv_sec = o->recv.sec;
    r->recv_nsec = o->recv.nsec;
}

static rec_t *rec_new(const herd_table_offer_t *o, uint64_t fingerprint, uint32_t bucket)
{
    rec_t *r = malloc(sizeof *r + room_for(o->id_len, o->at_len));
    if (r == NULL)
        return NULL;
    rec_fill(r, o, fingerprint);
    /* The allocator's rounding is room for a longer line later, for free. */
    size_t usable = malloc_usable_size(r) - sizeof *r;
    r->room = (uint32_t) (usable < UINT32_MAX ? usable : UINT32_MAX);
    r->bnext = NULL;
    r->bprev = NULL;
    r->bucket = (uint16_t) bucket;
    r->heap = NO_HEAP;
    return r;
}

/* ---- digests and bucket chains ---- */

/* XORs `fingerprints` into the digests of r's bucket, its group and the
 * table: in, out, or (the XOR of two) one replaced by another. */
static void digest_flip(herd_table_t *t, const rec_t *r, uint64_t fingerprints)
{
    t->digest ^= fingerprints;
    t->bucket_digest[r->bucket] ^= fingerprints;
    t->group_digest[r->bucket / HERD_TABLE_GROUP_SIZE] ^= fingerprints;
}

static void chain_add(herd_table_t *t, rec_t *r)
{
    rec_t **head = &t->bucket_head[r->bucket];
    r->bnext = *head;
    if (r->bnext)
        r->bnext->bprev = &r->bnext;
    r->bprev = head;
    *head = r;
    digest_flip(t, r, r->r.digest);
}

static void chain_del(herd_table_t *t, rec_t *r)
{
    *r->bprev = r->bnext;
    if (r->bnext)
        r->bnext->bprev = r->bprev;
    digest_flip(t, r, r->r.digest);
}

/* ---- the min-heap in eviction order ---- */

static void heap_set(herd_table_t *t, size_t i, hent_t e)
{
    t->heap[i] = e;
    e.rec->heap = (uint32_t) i;
}

static void sift_up(herd_table_t *t, size_t i)
{
    hent_t e = t->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / HEAP_ARITY;
        if (hent_cmp(&t->heap[parent], &e) <= 0)
            break;
        heap_set(t, i, t->heap[parent]);
        i = parent;
    }
    heap_set(t, i, e);
}

static void sift_down(herd_table_t *t, size_t i, size_t n)
{
    hent_t e = t->heap[i];
    for (;;) {
        size_t first = HEAP_ARITY * i + 1, c = first;
        if (first >= n)
            break;
        for (size_t k = first + 1; k < first + HEAP_ARITY && k < n; k++)
            if (hent_cmp(&t->heap[k], &t->heap[c]) < 0)
                c = k;
        if (hent_cmp(&e, &t->heap[c]) <= 0)
            break;
        heap_set(t, i, t->heap[c]);
        i = c;
    }
    heap_set(t, i, e);
}

/* Puts entry i where it belongs after its key changed either way. */
static void heap_fix(herd_table_t *t, size_t i)
{
    sift_down(t, i, t->size);
    if (t->heap[i].rec->heap == i)
        sift_up(t, i);
}

static hent_t hent_of(rec_t *r)
{
    return (hent_t) {r->recv_sec, r->recv_nsec, r};
}

/* Makes room for n records in the heap array. */
static int heap_reserve(herd_table_t *t, size_t n)
{
    if (n <= t->heap_cap)
        return 0;
    size_t cap = t->heap_cap ? t->heap_cap : 64;
    while (cap < n)
        cap *= 2;
    hent_t *h = realloc(t->heap, cap * sizeof *h);
    if (h == NULL)
        return -1;
    t->heap = h;
    t->heap_cap = cap;
    return 0;
}

/* Puts every record into the heap (O(n)); from now on it is kept. */
static int heap_build(herd_table_t *t)
{
    if (t->heap_on)
        return 0;
    if (heap_reserve(t, t->size + 1) != 0)
        return -1;
    size_t n = 0;
    for (size_t i = 0; i <= t->mask; i++)
        if (t->slots[i].rec != NULL)
            heap_set(t, n++, hent_of(t->slots[i].rec));
    for (size_t i = n > 1 ? (n - 2) / HEAP_ARITY + 1 : 0; i-- > 0;) /* every parent, last first */
        sift_down(t, i, n);
    t->heap_on = true;
    return 0;
}

static void heap_remove(herd_table_t *t, rec_t *r)
{
    size_t i = r->heap, last = t->size - 1; /* the size still counts r */
    r->heap = NO_HEAP;
    if (i == last)
        return;
    heap_set(t, i, t->heap[last]);
    sift_down(t, i, last);
    if (t->heap[i].rec->heap == i)
        sift_up(t, i);
}

/* ---- removal ---- */

/* Takes r out of every structure and frees it. `bound`: dropped by a bound
 * (counted, and the drop callback hears of it). */
static void rec_delete(herd_table_t *t, rec_t *r, bool bound)
{
    size_t i = probe(t, index_hash(t, r->data, r->r.id_len), r->data, r->r.id_len);
    if (t->heap_on)
        heap_remove(t, r);
    chain_del(t, r);
    slot_delete(t, i);
    t->size--;
    if (bound) {
        t->dropped++;
        if (t->drop)
            t->drop(t->drop_arg, &r->r);
    }
    free(r);
}

/* Drops the first records of the eviction order until the size is within
 * max_records. */
static void enforce_max(herd_table_t *t)
{
    while (t->max_records && t->size > t->max_records && t->heap_on && t->size > 0)
        rec_delete(t, t->heap[0].rec, true);
}

/*  --------------------------------------------------------------------------
 *  A new, empty table, or NULL when out of memory. */
herd_table_t *herd_table_new(void)
{
    herd_table_t *t = calloc(1, sizeof *t);
    if (t == NULL)
        return NULL;
    t->slots = calloc(INITIAL_CAPACITY, sizeof *t->slots);
    t->bucket_digest = calloc(HERD_TABLE_BUCKETS, sizeof *t->bucket_digest);
    t->bucket_head = calloc(HERD_TABLE_BUCKETS, sizeof *t->bucket_head);
    if (t->slots == NULL || t->bucket_digest == NULL || t->bucket_head == NULL) {
        free(t->slots);
        free(t->bucket_digest);
        free(t->bucket_head);
        free(t);
        return NULL;
    }
    t->mask = INITIAL_CAPACITY - 1;
    t->seed = make_seed(t);
    t->seed2 = herd_hash_mix64(make_seed(t) ^ 0x9e3779b97f4a7c15ULL);
    t->floor_sec = INT64_MIN;
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
        free(t->slots[i].rec);
    free(t->slots);
    free(t->bucket_digest);
    free(t->bucket_head);
    free(t->heap);
    free(t);
    *p = NULL;
}

/*  --------------------------------------------------------------------------
 *  Sets the bounds; a lower max_records takes effect at once. */
int herd_table_set_limits(herd_table_t *t, uint64_t max_records, int64_t ttl_s, herd_table_drop_fn *drop,
                          void *arg)
{
    t->max_records = max_records;
    t->ttl_s = ttl_s > 0 ? ttl_s : 0;
    if (t->ttl_s == 0)
        t->floor_sec = INT64_MIN;
    t->drop = drop;
    t->drop_arg = arg;
    if ((t->ttl_s > 0 || (max_records && t->size >= max_records)) && heap_build(t) != 0)
        return -1;
    enforce_max(t);
    return 0;
}

/*  --------------------------------------------------------------------------
 *  Drops every record received longer than the ttl before `now`. */
size_t herd_table_expire(herd_table_t *t, int64_t now)
{
    if (t->ttl_s <= 0)
        return 0;
    t->floor_sec = now - t->ttl_s;
    if (!t->heap_on && heap_build(t) != 0)
        return 0;
    size_t n = 0;
    while (t->size > 0 && t->heap[0].recv_sec < t->floor_sec) {
        rec_delete(t, t->heap[0].rec, true);
        n++;
    }
    return n;
}

/* The checks common to update and would_take. */
static bool lengths_ok(size_t id_len, size_t at_len, size_t pos_off, size_t pos_len)
{
    return id_len <= UINT16_MAX && at_len <= UINT16_MAX && pos_off <= at_len && pos_len <= at_len - pos_off;
}

/*  --------------------------------------------------------------------------
 *  Starts loading what the lookups HERD_TABLE_AHEAD and HERD_TABLE_AHEAD / 2
 *  ahead of the current one will touch. */
uint64_t herd_table_ahead(const herd_table_t *t, herd_table_ahead_t *a, const char *id, size_t id_len)
{
    uint64_t h = index_hash(t, id, id_len);
    __builtin_prefetch(&t->slots[(size_t) h & t->mask]);
    __builtin_prefetch(&t->bucket_digest[herd_table_bucket_of(id, id_len)]); /* a store changes it */
    a->hash[a->n % HERD_TABLE_AHEAD] = h;
    if (a->n >= HERD_TABLE_AHEAD / 2) {
        /* The slot of the id named half the distance ago has had time to
         * arrive: its record (the home slot's, or the next one's, which
         * shares its cache line most of the time) is what the lookup reads
         * and a store writes, its fields and then its bytes. */
        uint64_t back = a->hash[(a->n - HERD_TABLE_AHEAD / 2) % HERD_TABLE_AHEAD];
        size_t i = (size_t) back & t->mask;
        const rec_t *r = t->slots[i].rec;
        if (r != NULL && t->slots[i].hash != back)
            r = t->slots[(i + 1) & t->mask].rec;
        if (r != NULL) {
            for (size_t off = 0; off < sizeof *r + 96; off += 64)
                __builtin_prefetch((const char *) r + off);
        }
    }
    a->n++;
    return h;
}

bool herd_table_worth_ahead(const herd_table_t *t)
{
    return t->size >= HERD_TABLE_AHEAD_MIN;
}

herd_time_t herd_table_receive_time(const herd_record_t *r)
{
    const rec_t *rec = (const rec_t *) r; /* r is a rec_t's first member */
    return (herd_time_t) {rec->recv_sec, rec->recv_nsec};
}

/*  --------------------------------------------------------------------------
 *  Whether a record of this rank would replace what is held. */
bool herd_table_would_take(const herd_table_t *t, const char *id, size_t id_len, herd_time_t time,
                           const char *at, size_t at_len, size_t pos_off, size_t pos_len)
{
    if (!lengths_ok(id_len, at_len, pos_off, pos_len))
        return false;
    const rec_t *old = t->slots[probe(t, index_hash(t, id, id_len), id, id_len)].rec;
    if (old == NULL)
        return true;
    herd_span_t a = {at, at_len}, p = {at + pos_off, pos_len};
    herd_span_t oa = {old->r.at, old->r.at_len}, op = {old->r.at + old->r.pos_off, old->r.pos_len};
    return herd_rank_cmp(time, a, p, old->r.time, oa, op) > 0;
}

/* A newer record for the held client `old` (in slot i): written over it
 * when it fits, else moved to a new allocation that takes its place in the
 * slot, the bucket chain and the heap. Returns the record, or NULL when out
 * of memory (old is kept). */
static rec_t *replace(herd_table_t *t, size_t i, rec_t *old, const herd_table_offer_t *o)
{
    uint64_t fingerprint = herd_record_fingerprint(o->at, o->at_len);
    rec_t *r = old;
    if (room_for(o->id_len, o->at_len) <= old->room) {
        digest_flip(t, old, old->r.digest ^ fingerprint);
        rec_fill(old, o, fingerprint);
    } else {
        /* The line may lie inside old: it is copied before old is freed. */
        if ((r = rec_new(o, fingerprint, old->bucket)) == NULL)
            return NULL;
        digest_flip(t, old, old->r.digest ^ fingerprint);
        r->bnext = old->bnext;
        r->bprev = old->bprev;
        *r->bprev = r;
        if (r->bnext)
            r->bnext->bprev = &r->bnext;
        t->slots[i].rec = r;
        if (t->heap_on)
            heap_set(t, old->heap, hent_of(r));
        free(old);
    }
    if (t->heap_on) {
        /* The receive time may have moved either way (another origin's clock). */
        t->heap[r->heap] = hent_of(r);
        heap_fix(t, r->heap);
    }
    return r;
}

/*  --------------------------------------------------------------------------
 *  Offers a location; stores it only when it ranks above the stored one (or
 *  the client is new) and the bounds allow. Lengths that do not fit the
 *  record's uint16 fields, or a position outside the AT line, are refused
 *  with HERD_UPDATE_ERROR, as is running out of memory. `own`: a report this
 *  server just made, which ties on the contract's keys alone and is always
 *  admitted by max_records. */
static herd_update_t update(herd_table_t *t, const herd_table_offer_t *o, bool own, herd_table_accept_fn *accept,
                            void *arg, const herd_record_t **stored)
{
    if (stored != NULL)
        *stored = NULL;
    if (!lengths_ok(o->id_len, o->at_len, o->pos_off, o->pos_len) || (o->origin_len && o->origin_len + 3 > o->at_len))
        return HERD_UPDATE_ERROR;

    uint64_t h = o->hashed ? o->hash : index_hash(t, o->id, o->id_len);
    size_t i = probe(t, h, o->id, o->id_len);
    rec_t *old = t->slots[i].rec;
    if (old != NULL) {
        if (stored != NULL)
            *stored = &old->r;
        herd_span_t p = {o->at + o->pos_off, o->pos_len}, origin = {o->at + 3, o->origin_len};
        herd_span_t op = {old->r.at + old->r.pos_off, old->r.pos_len}, oo = {old->r.at + 3, old->r.origin_len};
        int c = herd_time_cmp(o->time, old->r.time);
        if (c == 0)
            c = tie_cmp(origin, p, oo, op);
        if (c == 0 && (own || (c = bytes_cmp(o->at, o->at_len, old->r.at, old->r.at_len)) == 0))
            return HERD_UPDATE_SAME;
        if (c < 0)
            return HERD_UPDATE_OLDER;
    }
    if (accept != NULL && !accept(arg))
        return HERD_UPDATE_REJECTED;
    if (o->recv.sec < t->floor_sec)
        return HERD_UPDATE_REFUSED; /* expired already: it would be dropped at once */

    rec_t *r;
    if (old != NULL) {
        /* A held client: the size does not change, so no bound is crossed. */
        if ((r = replace(t, i, old, o)) == NULL)
            return HERD_UPDATE_ERROR;
    } else {
        bool full = t->max_records && t->size >= t->max_records;
        if (full && heap_build(t) != 0)
            return HERD_UPDATE_ERROR;
        if (full && !own && t->size > 0) {
            /* A record from elsewhere that would come first in the eviction
             * order of a full table is refused, as it would be dropped at once
             * (every server decides alike). */
            herd_record_t probe_rec = {.time = o->time, .id_len = (uint16_t) o->id_len,
                                       .at_len = (uint16_t) o->at_len, .pos_off = (uint16_t) o->pos_off,
                                       .pos_len = (uint16_t) o->pos_len, .origin_len = (uint16_t) o->origin_len,
                                       .id = o->id, .at = o->at};
            const hent_t *low = &t->heap[0];
            if (evict_cmp(&probe_rec, o->recv.sec, o->recv.nsec, &low->rec->r, low->recv_sec, low->recv_nsec) < 0)
                return HERD_UPDATE_REFUSED;
        }
        if ((t->size + 1 > (t->mask + 1) - (t->mask + 1) / 4 && grow(t) < 0)
            || (t->heap_on && heap_reserve(t, t->size + 1) != 0))
            return HERD_UPDATE_ERROR;
        r = rec_new(o, herd_record_fingerprint(o->at, o->at_len), herd_table_bucket_of(o->id, o->id_len));
        if (r == NULL)
            return HERD_UPDATE_ERROR;
        /* Room first: the record that comes first in the eviction order goes
         * (for a report of our own even when the new one would come before
         * it: a new report is always admitted). */
        while (t->max_records && t->size >= t->max_records && t->heap_on && t->size > 0)
            rec_delete(t, t->heap[0].rec, true);
        i = probe(t, h, o->id, o->id_len);
        t->slots[i] = (slot_t) {h, r};
        chain_add(t, r);
        t->size++;
        if (t->heap_on) {
            heap_set(t, t->size - 1, hent_of(r));
            sift_up(t, t->size - 1);
        }
    }
    if (stored != NULL)
        *stored = &r->r;
    return HERD_UPDATE_NEWER;
}

/* The offer of an AT line given by its parts: its origin and receive time
 * found in the line. */
static herd_table_offer_t offer_of(const char *id, size_t id_len, herd_time_t time, const char *at, size_t at_len,
                                   size_t pos_off, size_t pos_len)
{
    return (herd_table_offer_t) {.id = id, .id_len = id_len, .time = time, .at = at, .at_len = at_len,
                                 .pos_off = pos_off, .pos_len = pos_len,
                                 .origin_len = herd_record_origin(at, at_len).len,
                                 .recv = herd_record_receive_time(at, at_len, time)};
}

herd_update_t herd_table_update(herd_table_t *t, const char *id, size_t id_len, herd_time_t time,
                                const char *at, size_t at_len, size_t pos_off, size_t pos_len,
                                const herd_record_t **stored)
{
    herd_table_offer_t o = offer_of(id, id_len, time, at, at_len, pos_off, pos_len);
    return update(t, &o, false, NULL, NULL, stored);
}

herd_update_t herd_table_update_checked(herd_table_t *t, const char *id, size_t id_len, herd_time_t time,
                                        const char *at, size_t at_len, size_t pos_off, size_t pos_len,
                                        herd_table_accept_fn *accept, void *arg, const herd_record_t **stored)
{
    herd_table_offer_t o = offer_of(id, id_len, time, at, at_len, pos_off, pos_len);
    return update(t, &o, false, accept, arg, stored);
}

/*  --------------------------------------------------------------------------
 *  A report made by this server: the same time, origin and position as the
 *  held record is SAME, whatever its AT line (its skew) says; a new client's
 *  report is admitted by max_records whatever the order says. */
herd_update_t herd_table_update_report(herd_table_t *t, const char *id, size_t id_len, herd_time_t time,
                                       const char *at, size_t at_len, size_t pos_off, size_t pos_len,
                                       const herd_record_t **stored)
{
    herd_table_offer_t o = offer_of(id, id_len, time, at, at_len, pos_off, pos_len);
    return update(t, &o, true, NULL, NULL, stored);
}

herd_update_t herd_table_offer(herd_table_t *t, const herd_table_offer_t *o, bool own, herd_table_accept_fn *accept,
                               void *arg, const herd_record_t **stored)
{
    return update(t, o, own, accept, arg, stored);
}

/*  --------------------------------------------------------------------------
 *  Removes a client's record. */
bool herd_table_remove(herd_table_t *t, const char *id, size_t id_len)
{
    if (id_len > UINT16_MAX)
        return false;
    rec_t *r = t->slots[probe(t, index_hash(t, id, id_len), id, id_len)].rec;
    if (r == NULL)
        return false;
    rec_delete(t, r, false);
    return true;
}

/*  --------------------------------------------------------------------------
 *  The record of a client, or NULL when unknown. */
const herd_record_t *herd_table_find(const herd_table_t *t, const char *id, size_t id_len)
{
    if (id_len > UINT16_MAX)
        return NULL;
    rec_t *r = t->slots[probe(t, index_hash(t, id, id_len), id, id_len)].rec;
    return r != NULL ? &r->r : NULL;
}

size_t herd_table_size(const herd_table_t *t)
{
    return t->size;
}

uint64_t herd_table_dropped(const herd_table_t *t)
{
    return t->dropped;
}

uint64_t herd_table_digest(const herd_table_t *t)
{
    return t->digest;
}

const uint64_t *herd_table_group_digests(const herd_table_t *t)
{
    return t->group_digest;
}

const uint64_t *herd_table_bucket_digests(const herd_table_t *t)
{
    return t->bucket_digest;
}

/*  --------------------------------------------------------------------------
 *  Iterates bucket b's chain. */
const herd_record_t *herd_table_bucket_next(const herd_table_t *t, uint32_t b, const void **cursor)
{
    const rec_t *r = *cursor == NULL ? t->bucket_head[b & (HERD_TABLE_BUCKETS - 1)]
                                     : ((const rec_t *) *cursor)->bnext;
    *cursor = r;
    return r != NULL ? &r->r : NULL;
}

/*  --------------------------------------------------------------------------
 *  Iteration in slot order: start with *cursor = 0; NULL at the end. */
const herd_record_t *herd_table_next(const herd_table_t *t, size_t *cursor)
{
    for (size_t i = *cursor; i <= t->mask; i++) {
        if (t->slots[i].rec != NULL) {
            *cursor = i + 1;
            return &t->slots[i].rec->r;
        }
    }
    *cursor = t->mask + 1;
    return NULL;
}
