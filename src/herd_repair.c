/* herd_repair: the steps of an anti-entropy exchange. See herd_repair.h.
 *
 * Buckets are chosen by an unseeded hash of the client id, so a hostile
 * neighbour could aim many ids at one bucket. Every per-bucket comparison is
 * therefore a sort and a merge (n log n), never a nested scan. */
#include "herd_repair.h"

#include <stdlib.h>
#include <string.h>

#define UPDATES_BATCH 2048      /* AT lines per RECORDS message at most */
#define BATCH_BYTES   (256u * 1024u) /* ... and bytes: a queue of full messages stays bounded */
/* Every message stays under HERD_WIRE_MAX_FRAME: an FPRINTS holds fewer
 * than FPRINTS_CHUNK fingerprints before its last bucket, a bucket lists
 * at most BUCKET_FPS of its own, and a WANT holds fewer than WANT_CHUNK
 * pairs before its last bucket, at most BUCKET_FPS of each. */
#define FPRINTS_CHUNK 262144    /* fingerprints per FPRINTS message (2 MiB) */
#define WANT_CHUNK    196608    /* pairs per WANT message (1.9 MiB), plus one bucket's at most */
/* A bucket holds about table size / HERD_TABLE_BUCKETS records; only ids
 * aimed at one bucket make it hold more than this. The fingerprints past it
 * are not listed: the other side then sends its records of that bucket
 * that were not listed (some it need not), and the records of ours that
 * were not listed reach it when it opens its own exchange with us, where we
 * send what it does not list. */
#define BUCKET_FPS    131072

static void bit_set(uint8_t *map, uint32_t b)
{
    map[b >> 3] |= (uint8_t)(1u << (b & 7));
}

/* Whether bucket b was offered (always, without a bitmap); clears it, so
 * that each is answered once. */
static bool bit_take(herd_repair_io_t *io, uint32_t b)
{
    if (io->buckets == NULL)
        return true;
    uint8_t bit = (uint8_t)(1u << (b & 7));
    if (!(io->buckets[b >> 3] & bit)) {
        io->skipped++;
        return false;
    }
    io->buckets[b >> 3] &= (uint8_t)~bit;
    return true;
}

static int send_msg(herd_repair_io_t *io, int rc, char *data, size_t len)
{
    if (rc != 0) {
        io->failed = true;
        return -1;
    }
    io->bytes += len;
    if (io->send(io->arg, data, len) != 0) {
        io->failed = true;
        return -1;
    }
    return 0;
}

/* AT lines collected for one UPDATES message. */
typedef struct {
    herd_span_t ats[UPDATES_BATCH];
    size_t n;
    size_t bytes; /* of the AT lines held */
} batch_t;

static int batch_flush(batch_t *b, herd_repair_io_t *io)
{
    if (b->n == 0)
        return 0;
    char *data;
    size_t len;
    int rc = herd_wire_encode_records(b->ats, b->n, &data, &len);
    size_t n = b->n;
    b->n = 0;
    b->bytes = 0;
    if (send_msg(io, rc, data, len) != 0)
        return -1;
    io->records += n;
    return 0;
}

static int batch_add(batch_t *b, const herd_record_t *r, herd_repair_io_t *io)
{
    b->ats[b->n++] = (herd_span_t) {r->at, r->at_len};
    b->bytes += r->at_len;
    return b->n == UPDATES_BATCH || b->bytes >= BATCH_BYTES ? batch_flush(b, io) : 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
    return x < y ? -1 : x > y;
}

/* The records of bucket b, into a growing array. Returns the count or -1. */
static long bucket_records(const herd_table_t *t, uint32_t b, const herd_record_t ***recs, size_t *cap)
{
    size_t n = 0;
    const void *cur = NULL;
    const herd_record_t *r;
    while ((r = herd_table_bucket_next(t, b, &cur)) != NULL) {
        if (n == *cap) {
            size_t ncap = *cap ? *cap * 2 : 64;
            const herd_record_t **p = realloc(*recs, ncap * sizeof *p);
            if (p == NULL)
                return -1;
            *recs = p;
            *cap = ncap;
        }
        (*recs)[n++] = r;
    }
    return (long) n;
}

static int cmp_rec_digest(const void *a, const void *b)
{
    uint64_t x = (*(const herd_record_t *const *) a)->digest, y = (*(const herd_record_t *const *) b)->digest;
    return x < y ? -1 : x > y;
}

/*  --------------------------------------------------------------------------
 *  A: DIGEST. */
int herd_repair_start(const herd_table_t *t, herd_repair_io_t *io)
{
    char *data;
    size_t len;
    int rc = herd_wire_encode_digest(herd_table_size(t), herd_table_digest(t), &data, &len);
    return send_msg(io, rc, data, len);
}

/*  --------------------------------------------------------------------------
 *  B: equal, or GROUPS. */
int herd_repair_on_digest(const herd_table_t *t, uint64_t count, uint64_t digest, herd_repair_io_t *io)
{
    if (count == herd_table_size(t) && digest == herd_table_digest(t))
        return 1;
    char *data;
    size_t len;
    int rc = herd_wire_encode_groups(herd_table_group_digests(t), &data, &len);
    return send_msg(io, rc, data, len);
}

/*  --------------------------------------------------------------------------
 *  A: BUCKETS for the groups that differ. */
int herd_repair_on_groups(const herd_table_t *t, const herd_msg_t *msg, herd_repair_io_t *io)
{
    const uint64_t *mine = herd_table_group_digests(t), *buckets = herd_table_bucket_digests(t);
    uint8_t groups[HERD_TABLE_GROUPS];
    size_t n = 0;
    for (size_t g = 0; g < HERD_TABLE_GROUPS; g++)
        if (mine[g] != herd_wire_u64(msg->digests, g))
            groups[n++] = (uint8_t) g;
    if (n == 0)
        return 1;
    uint64_t *digests = malloc(n * HERD_TABLE_GROUP_SIZE * sizeof *digests);
    if (digests == NULL) {
        io->failed = true;
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        memcpy(digests + i * HERD_TABLE_GROUP_SIZE, buckets + (size_t) groups[i] * HERD_TABLE_GROUP_SIZE,
               HERD_TABLE_GROUP_SIZE * sizeof *digests);
        for (uint32_t j = 0; io->buckets != NULL && j < HERD_TABLE_GROUP_SIZE; j++)
            bit_set(io->buckets, (uint32_t) groups[i] * HERD_TABLE_GROUP_SIZE + j);
    }
    char *data;
    size_t len;
    int rc = herd_wire_encode_buckets(groups, n, digests, &data, &len);
    free(digests);
    return send_msg(io, rc, data, len);
}

/* Gives the array *p (p: the address of a pointer to the array) room for n
 * elements of `size` bytes. Returns 0, or -1 with the array as it was. The
 * pointer is read and written with memcpy, so one helper serves arrays of
 * every element type. */
static int resize(void *p, size_t n, size_t size)
{
    void *old, *grown;
    memcpy(&old, p, sizeof old);
    if (!(grown = realloc(old, n * size)))
        return -1;
    memcpy(p, &grown, sizeof grown);
    return 0;
}

/* The FPRINTS being built. */
typedef struct {
    uint16_t *buckets;
    uint32_t *counts;
    size_t k, k_cap;
    uint64_t *fps;
    size_t n, n_cap;
} fprints_t;

static int fprints_send(fprints_t *f, bool last, herd_repair_io_t *io)
{
    char *data;
    size_t len;
    int rc = herd_wire_encode_fprints(last, f->buckets, f->counts, f->k, f->fps, f->n, &data, &len);
    f->k = f->n = 0;
    return send_msg(io, rc, data, len);
}

/* Adds bucket b with the fingerprints of its records. */
static int fprints_add(fprints_t *f, uint32_t b, const herd_record_t **recs, size_t n)
{
    if (f->k == f->k_cap) {
        size_t cap = f->k_cap ? f->k_cap * 2 : 256;
        if (resize(&f->buckets, cap, sizeof *f->buckets) != 0 || resize(&f->counts, cap, sizeof *f->counts) != 0)
            return -1;
        f->k_cap = cap;
    }
    if (f->n + n > f->n_cap) {
        size_t cap = f->n_cap ? f->n_cap : 1024;
        while (cap < f->n + n)
            cap *= 2;
        if (resize(&f->fps, cap, sizeof *f->fps) != 0)
            return -1;
        f->n_cap = cap;
    }
    if (n > BUCKET_FPS)
        n = BUCKET_FPS;
    f->buckets[f->k] = (uint16_t) b;
    f->counts[f->k++] = (uint32_t) n;
    for (size_t i = 0; i < n; i++)
        f->fps[f->n++] = recs[i]->digest;
    return 0;
}

/*  --------------------------------------------------------------------------
 *  B: records of the buckets A lacks entirely, FPRINTS for the rest. */
int herd_repair_on_buckets(const herd_table_t *t, const herd_msg_t *msg, herd_repair_io_t *io)
{
    const uint64_t *mine = herd_table_bucket_digests(t);
    batch_t *batch = calloc(1, sizeof *batch);
    fprints_t f = {0};
    const herd_record_t **recs = NULL;
    size_t cap = 0;
    int rc = batch ? 0 : -1;
    for (size_t i = 0; i < msg->n_items && rc == 0; i++) {
        uint32_t base = (uint32_t) msg->groups[i] * HERD_TABLE_GROUP_SIZE;
        for (uint32_t j = 0; j < HERD_TABLE_GROUP_SIZE && rc == 0; j++) {
            uint32_t b = base + j;
            uint64_t theirs = herd_wire_u64(msg->digests, i * HERD_TABLE_GROUP_SIZE + j);
            if (theirs == mine[b])
                continue;
            long n = bucket_records(t, b, &recs, &cap);
            if (n < 0) {
                rc = -1;
            } else if (theirs == 0) {
                for (long r = 0; r < n && rc == 0; r++)
                    rc = batch_add(batch, recs[r], io);
            } else {
                if (io->buckets != NULL)
                    bit_set(io->buckets, b);
                rc = fprints_add(&f, b, recs, (size_t) n);
                if (rc == 0 && f.n >= FPRINTS_CHUNK)
                    rc = batch_flush(batch, io) == 0 ? fprints_send(&f, false, io) : -1;
            }
        }
    }
    if (rc == 0)
        rc = batch_flush(batch, io);
    if (rc == 0)
        rc = fprints_send(&f, true, io);
    if (rc != 0)
        io->failed = true;
    free(batch);
    free(recs);
    free(f.buckets);
    free(f.counts);
    free(f.fps);
    return rc;
}

/* The WANT being built. */
typedef struct {
    uint16_t *buckets;
    uint64_t *fps;
    size_t m, cap;
} want_t;

static int want_add(want_t *w, uint32_t b, uint64_t fp)
{
    if (w->m == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 256;
        if (resize(&w->buckets, cap, sizeof *w->buckets) != 0 || resize(&w->fps, cap, sizeof *w->fps) != 0)
            return -1;
        w->cap = cap;
    }
    w->buckets[w->m] = (uint16_t) b;
    w->fps[w->m++] = fp;
    return 0;
}

static int want_send(want_t *w, bool last, herd_repair_io_t *io)
{
    char *data;
    size_t len;
    int rc = herd_wire_encode_want(last, w->buckets, w->fps, w->m, &data, &len);
    w->m = 0;
    return send_msg(io, rc, data, len);
}

/*  --------------------------------------------------------------------------
 *  A: what B did not list goes to B; what B listed and A lacks, A wants. */
int herd_repair_on_fprints(const herd_table_t *t, const herd_msg_t *msg, herd_repair_io_t *io)
{
    batch_t *batch = calloc(1, sizeof *batch);
    want_t w = {0};
    const herd_record_t **recs = NULL;
    size_t cap = 0, off = 0, theirs_cap = 0;
    uint64_t *theirs = NULL;
    int rc = batch ? 0 : -1;
    for (size_t i = 0; i < msg->n_items && rc == 0; i++) {
        uint32_t b = herd_wire_u16(msg->buckets, i);
        size_t c = herd_wire_u32(msg->counts, i);
        if (c > theirs_cap) {
            uint64_t *p = realloc(theirs, c * sizeof *p);
            if (p == NULL) {
                rc = -1;
                break;
            }
            theirs = p;
            theirs_cap = c;
        }
        for (size_t j = 0; j < c; j++)
            theirs[j] = herd_wire_u64(msg->fps, off + j);
        off += c;
        if (!bit_take(io, b))
            continue; /* a bucket we did not ask about, or asked about and answered already */
        if (c > 1) /* theirs and recs are NULL while nothing was listed: qsort must not see them */
            qsort(theirs, c, sizeof *theirs, cmp_u64);
        long n = bucket_records(t, b, &recs, &cap);
        if (n < 0) {
            rc = -1;
            break;
        }
        if (n > 1)
            qsort(recs, (size_t) n, sizeof *recs, cmp_rec_digest);
        /* Merge the two sorted lists. */
        size_t x = 0, y = 0, wanted = 0;
        while (rc == 0 && (x < (size_t) n || y < c)) {
            if (y == c || (x < (size_t) n && recs[x]->digest < theirs[y])) {
                rc = batch_add(batch, recs[x++], io); /* ours only */
            } else if (x == (size_t) n || theirs[y] < recs[x]->digest) {
                if ((y == 0 || theirs[y] != theirs[y - 1]) && wanted < BUCKET_FPS) {
                    rc = want_add(&w, b, theirs[y]); /* theirs only */
                    wanted++;
                }
                y++;
            } else {
                x++;
                y++;
            }
        }
        /* A WANT ends at a bucket's end: the other side answers each
         * bucket once. */
        if (rc == 0 && w.m >= WANT_CHUNK)
            rc = want_send(&w, false, io);
    }
    if (rc == 0)
        rc = batch_flush(batch, io);
    if (rc == 0)
        rc = want_send(&w, msg->last, io);
    if (rc != 0)
        io->failed = true;
    free(batch);
    free(recs);
    free(theirs);
    free(w.buckets);
    free(w.fps);
    return rc;
}

/* One wanted (bucket, fingerprint) pair. */
typedef struct {
    uint32_t bucket;
    uint64_t fp;
} pair_t;

static int cmp_pair(const void *a, const void *b)
{
    const pair_t *x = a, *y = b;
    if (x->bucket != y->bucket)
        return x->bucket < y->bucket ? -1 : 1;
    return x->fp < y->fp ? -1 : x->fp > y->fp;
}

/*  --------------------------------------------------------------------------
 *  B: the records asked for. */
int herd_repair_on_want(const herd_table_t *t, const herd_msg_t *msg, herd_repair_io_t *io)
{
    size_t m = msg->n_items;
    if (m == 0)
        return 0;
    pair_t *pairs = malloc(m * sizeof *pairs);
    batch_t *batch = calloc(1, sizeof *batch);
    int rc = pairs && batch ? 0 : -1;
    for (size_t i = 0; i < m && rc == 0; i++)
        pairs[i] = (pair_t) {herd_wire_u16(msg->buckets, i), herd_wire_u64(msg->fps, i)};
    if (rc == 0)
        qsort(pairs, m, sizeof *pairs, cmp_pair);
    for (size_t i = 0; i < m && rc == 0;) {
        size_t j = i;
        while (j < m && pairs[j].bucket == pairs[i].bucket)
            j++;
        if (!bit_take(io, pairs[i].bucket)) {
            i = j;
            continue; /* not offered, or answered already */
        }
        /* Walk the bucket once; look each record up among the wanted. */
        const void *cur = NULL;
        const herd_record_t *r;
        while (rc == 0 && (r = herd_table_bucket_next(t, pairs[i].bucket, &cur)) != NULL) {
            pair_t key = {pairs[i].bucket, r->digest};
            if (bsearch(&key, pairs + i, j - i, sizeof *pairs, cmp_pair) != NULL)
                rc = batch_add(batch, r, io);
        }
        i = j;
    }
    if (rc == 0)
        rc = batch_flush(batch, io);
    if (rc != 0)
        io->failed = true;
    free(pairs);
    free(batch);
    return rc;
}
