/* fuzz_wire: the msgpack decoder of the inter-server links (herd_wire) on
 * arbitrary frames.
 *
 * Checks, besides the sanitizers:
 * - herd_wire_decode accepts a frame exactly when a small reference reader
 *   written here (it knows only the msgpack forms a valid message can use)
 *   reads it as one of the messages of PROTOCOL.md section 7 and herd_wire.h
 *   (HELLO, UPDATES, SYNC_END and the anti-entropy DIGEST, GROUPS, BUCKETS,
 *   FPRINTS and WANT), and then both read the same content, the binary
 *   arrays at the same addresses;
 * - every span and binary array of a decoded message points into the frame;
 * - a decoded message re-encodes, and the new frame decodes to the same
 *   content;
 * - a refusal leaves an empty message and a one-line reason, and the
 *   decoder writes no more than errlen bytes of it, whatever errlen is. */
#include "fuzz_target.h"

#include <stdbool.h>
#include <string.h>

#include "herd_wire.h"

/* ---------------------------------------------------------------------- */
/* The reference reader */

typedef struct {
    const uint8_t *p; /* the frame */
    size_t n;         /* its length */
    size_t off;       /* next byte */
} rd_t;

/* Reads a big-endian unsigned field of w bytes. */
static bool rd_be(rd_t *r, size_t w, uint64_t *v)
{
    if (r->n - r->off < w)
        return false;
    uint64_t x = 0;
    for (size_t i = 0; i < w; i++)
        x = x << 8 | r->p[r->off + i];
    r->off += w;
    *v = x;
    return true;
}

/* A non-negative integer in any of msgpack's integer forms. */
static bool rd_uint(rd_t *r, uint64_t *v)
{
    if (r->off >= r->n)
        return false;
    uint8_t b = r->p[r->off++];
    if (b <= 0x7f) {
        *v = b;
        return true;
    }
    if (b >= 0xcc && b <= 0xcf)
        return rd_be(r, (size_t) 1 << (b - 0xcc), v);
    if (b >= 0xd0 && b <= 0xd3) {
        size_t w = (size_t) 1 << (b - 0xd0);
        if (!rd_be(r, w, v))
            return false;
        /* A signed form holds a non-negative value when its top bit is 0. */
        return (*v >> (8 * w - 1)) == 0;
    }
    return false;
}

/* A str (always) or a bin (when allow_bin). */
static bool rd_raw(rd_t *r, bool allow_bin, const uint8_t **p, size_t *len)
{
    if (r->off >= r->n)
        return false;
    uint8_t b = r->p[r->off++];
    uint64_t l;
    if (b >= 0xa0 && b <= 0xbf)
        l = b & 0x1f;
    else if (b >= 0xd9 && b <= 0xdb) {
        if (!rd_be(r, (size_t) 1 << (b - 0xd9), &l))
            return false;
    } else if (allow_bin && b >= 0xc4 && b <= 0xc6) {
        if (!rd_be(r, (size_t) 1 << (b - 0xc4), &l))
            return false;
    } else
        return false;
    if (l > r->n - r->off)
        return false;
    *p = r->p + r->off;
    *len = (size_t) l;
    r->off += (size_t) l;
    return true;
}

static bool rd_array(rd_t *r, uint64_t *count)
{
    if (r->off >= r->n)
        return false;
    uint8_t b = r->p[r->off++];
    if (b >= 0x90 && b <= 0x9f) {
        *count = b & 0x0f;
        return true;
    }
    if (b == 0xdc)
        return rd_be(r, 2, count);
    if (b == 0xdd)
        return rd_be(r, 4, count);
    return false;
}

/* A bin (never a str): the binary arrays of the anti-entropy messages. */
static bool rd_bin(rd_t *r, const uint8_t **p, size_t *len)
{
    if (r->off >= r->n)
        return false;
    uint8_t b = r->p[r->off++];
    uint64_t l;
    if (b < 0xc4 || b > 0xc6 || !rd_be(r, (size_t) 1 << (b - 0xc4), &l) || l > r->n - r->off)
        return false;
    *p = r->p + r->off;
    *len = (size_t) l;
    r->off += (size_t) l;
    return true;
}

/* The `last` flag of FPRINTS and WANT: the integer 0 or 1. */
static bool rd_last(rd_t *r, bool *last)
{
    uint64_t v;
    if (!rd_uint(r, &v) || v > 1)
        return false;
    *last = v == 1;
    return true;
}

/* Little-endian reads, written out again here rather than taken from
 * herd_wire.h so that the reference does not share the decoder's helpers. */
static uint64_t ref_le(const uint8_t *p, size_t w)
{
    uint64_t v = 0;
    for (size_t i = w; i-- > 0;)
        v = v << 8 | p[i];
    return v;
}

/* A message as the reference reads it. */
typedef struct {
    uint64_t type, incarnation, count, digest;
    const uint8_t *name;
    size_t name_len;
    herd_span_t *lines;
    size_t n_lines;
    bool last;                                    /* FPRINTS, WANT */
    const uint8_t *groups, *buckets, *counts;     /* BUCKETS; FPRINTS, WANT; FPRINTS */
    const uint8_t *digests, *fps;                 /* GROUPS, BUCKETS; FPRINTS, WANT */
    size_t n_items, n_fps;                        /* groups or buckets; fingerprints */
} ref_msg_t;

/* The anti-entropy messages (type 4 to 8), after version and type. */
static bool ref_decode_repair(rd_t *r, uint64_t elems, ref_msg_t *m)
{
    size_t nb, nc, nf;
    switch (m->type) {
    case HERD_MSG_DIGEST:
        return elems == 4 && rd_uint(r, &m->count) && rd_uint(r, &m->digest);
    case HERD_MSG_GROUPS:
        /* 256 group digests of 8 bytes. */
        return elems == 3 && rd_bin(r, &m->digests, &nf) && nf == 256 * 8;
    case HERD_MSG_BUCKETS:
        /* n group numbers, strictly increasing, and 256 digests for each. */
        if (elems != 4 || !rd_bin(r, &m->groups, &nb) || !rd_bin(r, &m->digests, &nf))
            return false;
        if (nb > 256 || nf != nb * 256 * 8)
            return false;
        for (size_t i = 1; i < nb; i++)
            if (m->groups[i] <= m->groups[i - 1])
                return false;
        m->n_items = nb;
        return true;
    case HERD_MSG_FPRINTS: {
        /* k u16 buckets, strictly increasing; k u32 counts; as many u64
         * fingerprints as the counts add up to. */
        if (elems != 6 || !rd_last(r, &m->last) || !rd_bin(r, &m->buckets, &nb)
            || !rd_bin(r, &m->counts, &nc) || !rd_bin(r, &m->fps, &nf))
            return false;
        if (nb % 2 != 0 || nb / 2 > 65536 || nc != nb / 2 * 4 || nf % 8 != 0)
            return false;
        uint64_t sum = 0;
        for (size_t i = 0; i < nb / 2; i++) {
            if (i > 0 && ref_le(m->buckets + 2 * i, 2) <= ref_le(m->buckets + 2 * i - 2, 2))
                return false;
            sum += ref_le(m->counts + 4 * i, 4);
        }
        if (sum != nf / 8)
            return false;
        m->n_items = nb / 2;
        m->n_fps = nf / 8;
        return true;
    }
    case HERD_MSG_WANT:
        /* m u16 buckets (any order) and m u64 fingerprints. */
        if (elems != 5 || !rd_last(r, &m->last) || !rd_bin(r, &m->buckets, &nb) || !rd_bin(r, &m->fps, &nf))
            return false;
        if (nb % 2 != 0 || nf != nb / 2 * 8)
            return false;
        m->n_items = nb / 2;
        return true;
    default:
        return false;
    }
}

static bool ref_decode(const uint8_t *p, size_t n, ref_msg_t *m)
{
    rd_t r = { p, n, 0 };
    uint64_t elems, version;
    memset(m, 0, sizeof *m);
    if (n > HERD_WIRE_MAX_FRAME || !rd_array(&r, &elems) || !rd_uint(&r, &version)
        || version != HERD_WIRE_VERSION || !rd_uint(&r, &m->type))
        return false;
    switch (m->type) {
    case HERD_MSG_HELLO:
        if (elems != 6 || !rd_raw(&r, false, &m->name, &m->name_len)
            || !fuzz_ref_name(m->name, m->name_len) || !rd_uint(&r, &m->incarnation)
            || !rd_uint(&r, &m->count) || !rd_uint(&r, &m->digest))
            return false;
        break;
    case HERD_MSG_UPDATES:
    case HERD_MSG_RECORDS: {
        uint64_t k;
        if (elems != 3 || !rd_array(&r, &k) || k > HERD_WIRE_MAX_UPDATES || k > n)
            return false;
        m->lines = k ? calloc((size_t) k, sizeof *m->lines) : NULL;
        FUZZ_CHECK(k == 0 || m->lines != NULL, "out of memory");
        for (size_t i = 0; i < k; i++) {
            const uint8_t *lp;
            size_t ll;
            if (!rd_raw(&r, true, &lp, &ll) || ll == 0 || ll > HERD_AT_MAX)
                return false;
            m->lines[i] = (herd_span_t){ (const char *) lp, ll };
        }
        m->n_lines = (size_t) k;
        break;
    }
    case HERD_MSG_SYNC_END:
        if (elems != 4 || !rd_uint(&r, &m->incarnation) || !rd_uint(&r, &m->count))
            return false;
        break;
    default:
        if (!ref_decode_repair(&r, elems, m))
            return false;
        break;
    }
    return r.off == n;
}

/* ---------------------------------------------------------------------- */

static bool spans_equal(herd_span_t a, herd_span_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

static bool inside(herd_span_t s, const uint8_t *data, size_t size)
{
    const char *lo = (const char *) data, *hi = lo + size;
    return s.len <= size && s.p >= lo && s.p + s.len <= hi;
}

static bool bytes_equal(const unsigned char *a, const unsigned char *b, size_t n)
{
    return n == 0 || (a != NULL && b != NULL && memcmp(a, b, n) == 0);
}

/* Two readings of a binary array of n bytes agree: the same address, unless
 * it is empty (msgpack-c gives no address for an empty bin; none is read). */
static bool same_bin(const unsigned char *a, const unsigned char *b, size_t n)
{
    return n == 0 || a == b;
}

/* A binary array of n bytes lies inside the frame (an empty one anywhere). */
static bool bin_inside(const unsigned char *p, size_t n, const uint8_t *data, size_t size)
{
    if (n == 0)
        return true;
    const unsigned char *lo = data;
    return p != NULL && n <= size && p >= lo && p + n <= lo + size;
}

/* The same content: type, the fields that type carries, the lines and the
 * bytes of the binary arrays. */
static void check_same(const herd_msg_t *a, const herd_msg_t *b)
{
    FUZZ_CHECK(a->type == b->type, "type %d vs %d", (int) a->type, (int) b->type);
    switch (a->type) {
    case HERD_MSG_HELLO:
        FUZZ_CHECK(spans_equal(a->name, b->name) && a->incarnation == b->incarnation
                       && a->count == b->count && a->digest == b->digest,
                   "HELLO content differs");
        break;
    case HERD_MSG_UPDATES:
    case HERD_MSG_RECORDS:
        FUZZ_CHECK(a->n_updates == b->n_updates, "%zu lines vs %zu", a->n_updates, b->n_updates);
        for (size_t i = 0; i < a->n_updates; i++)
            FUZZ_CHECK(spans_equal(a->updates[i], b->updates[i]), "line %zu differs", i);
        break;
    case HERD_MSG_SYNC_END:
        FUZZ_CHECK(a->incarnation == b->incarnation && a->count == b->count,
                   "SYNC_END content differs");
        break;
    case HERD_MSG_DIGEST:
        FUZZ_CHECK(a->count == b->count && a->digest == b->digest, "DIGEST content differs");
        break;
    case HERD_MSG_GROUPS:
        FUZZ_CHECK(bytes_equal(a->digests, b->digests, 256 * 8), "GROUPS digests differ");
        break;
    case HERD_MSG_BUCKETS:
        FUZZ_CHECK(a->n_items == b->n_items && bytes_equal(a->groups, b->groups, a->n_items)
                       && bytes_equal(a->digests, b->digests, a->n_items * 256 * 8),
                   "BUCKETS content differs");
        break;
    case HERD_MSG_FPRINTS:
        FUZZ_CHECK(a->last == b->last && a->n_items == b->n_items && a->n_fps == b->n_fps
                       && bytes_equal(a->buckets, b->buckets, a->n_items * 2)
                       && bytes_equal(a->counts, b->counts, a->n_items * 4)
                       && bytes_equal(a->fps, b->fps, a->n_fps * 8),
                   "FPRINTS content differs");
        break;
    case HERD_MSG_WANT:
        FUZZ_CHECK(a->last == b->last && a->n_items == b->n_items
                       && bytes_equal(a->buckets, b->buckets, a->n_items * 2)
                       && bytes_equal(a->fps, b->fps, a->n_items * 8),
                   "WANT content differs");
        break;
    }
}

/* The n little-endian integers of width w at p, as a malloc'd array of
 * uint16_t, uint32_t or uint64_t (w 2, 4, 8), for the public encoders. */
static void *le_array(const unsigned char *p, size_t n, size_t w)
{
    void *a = malloc(n ? n * w : 1);
    FUZZ_CHECK(a != NULL, "out of memory");
    for (size_t i = 0; i < n; i++) {
        uint64_t v = ref_le(p + i * w, w);
        if (w == 2)
            ((uint16_t *) a)[i] = (uint16_t) v;
        else if (w == 4)
            ((uint32_t *) a)[i] = (uint32_t) v;
        else
            ((uint64_t *) a)[i] = v;
    }
    return a;
}

/* Re-encodes a decoded message with the public encoders. */
static void check_reencode(const herd_msg_t *msg)
{
    char *out = NULL, *name = NULL;
    size_t len = 0;
    int rc = -1;
    void *a1 = NULL, *a2 = NULL, *a3 = NULL; /* the binary arrays, unpacked */
    switch (msg->type) {
    case HERD_MSG_HELLO:
        name = malloc(msg->name.len + 1);
        FUZZ_CHECK(name != NULL, "out of memory");
        memcpy(name, msg->name.p, msg->name.len);
        name[msg->name.len] = '\0';
        rc = herd_wire_encode_hello(name, msg->incarnation, msg->count, msg->digest, &out, &len);
        break;
    case HERD_MSG_UPDATES:
        rc = herd_wire_encode_updates(msg->updates, msg->n_updates, &out, &len);
        break;
    case HERD_MSG_RECORDS:
        rc = herd_wire_encode_records(msg->updates, msg->n_updates, &out, &len);
        break;
    case HERD_MSG_SYNC_END:
        rc = herd_wire_encode_sync_end(msg->incarnation, msg->count, &out, &len);
        break;
    case HERD_MSG_DIGEST:
        rc = herd_wire_encode_digest(msg->count, msg->digest, &out, &len);
        break;
    case HERD_MSG_GROUPS:
        a1 = le_array(msg->digests, 256, 8);
        rc = herd_wire_encode_groups(a1, &out, &len);
        break;
    case HERD_MSG_BUCKETS:
        a1 = le_array(msg->digests, msg->n_items * 256, 8);
        rc = herd_wire_encode_buckets(msg->groups, msg->n_items, a1, &out, &len);
        break;
    case HERD_MSG_FPRINTS:
        a1 = le_array(msg->buckets, msg->n_items, 2);
        a2 = le_array(msg->counts, msg->n_items, 4);
        a3 = le_array(msg->fps, msg->n_fps, 8);
        rc = herd_wire_encode_fprints(msg->last, a1, a2, msg->n_items, a3, msg->n_fps, &out, &len);
        break;
    case HERD_MSG_WANT:
        a1 = le_array(msg->buckets, msg->n_items, 2);
        a3 = le_array(msg->fps, msg->n_items, 8);
        rc = herd_wire_encode_want(msg->last, a1, a3, msg->n_items, &out, &len);
        break;
    }
    FUZZ_CHECK(rc == 0 && out != NULL && len > 0, "a decoded message must re-encode");

    herd_msg_t again;
    char err[256];
    FUZZ_CHECK(herd_wire_decode(out, len, &again, err, sizeof err) == 0,
               "a re-encoded message must decode: %s", err);
    check_same(msg, &again);
    herd_wire_msg_free(&again);
    free(out);
    free(name);
    free(a1);
    free(a2);
    free(a3);
}

/* Nothing set: a refused frame, or one after herd_wire_msg_free. */
static bool msg_empty(const herd_msg_t *m)
{
    return m->type == 0 && m->name.p == NULL && m->name.len == 0 && m->incarnation == 0 && m->count == 0
           && m->digest == 0 && m->updates == NULL && m->n_updates == 0 && !m->last && m->groups == NULL
           && m->buckets == NULL && m->counts == NULL && m->digests == NULL && m->fps == NULL
           && m->n_items == 0 && m->n_fps == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    herd_msg_t msg;
    char err[256];
    memset(err, 'x', sizeof err);
    int rc = herd_wire_decode((const char *) data, size, &msg, err, sizeof err);

    ref_msg_t ref;
    bool ok = ref_decode(data, size, &ref);
    FUZZ_CHECK((rc == 0) == ok, "decode returned %d (%s), reference %d", rc,
               rc == 0 ? "accepted" : err, ok);

    if (rc != 0) {
        FUZZ_CHECK(memchr(err, '\0', sizeof err) != NULL && err[0] != '\0'
                       && strchr(err, '\n') == NULL,
                   "a refusal needs a one-line reason");
        FUZZ_CHECK(msg_empty(&msg), "a refused frame must leave an empty message");
    } else {
        FUZZ_CHECK(msg.type == ref.type, "type %d, reference %d", (int) msg.type, (int) ref.type);
        switch (msg.type) {
        case HERD_MSG_HELLO:
            FUZZ_CHECK(inside(msg.name, data, size), "name must point into the frame");
            FUZZ_CHECK(msg.name.len == ref.name_len && msg.name.p == (const char *) ref.name
                           && msg.incarnation == ref.incarnation && msg.count == ref.count
                           && msg.digest == ref.digest,
                       "HELLO differs from the reference");
            break;
        case HERD_MSG_UPDATES:
        case HERD_MSG_RECORDS:
            FUZZ_CHECK(msg.n_updates == ref.n_lines, "%zu lines, reference %zu", msg.n_updates,
                       ref.n_lines);
            for (size_t i = 0; i < msg.n_updates; i++)
                FUZZ_CHECK(inside(msg.updates[i], data, size)
                               && msg.updates[i].p == ref.lines[i].p
                               && msg.updates[i].len == ref.lines[i].len,
                           "line %zu differs from the reference", i);
            break;
        case HERD_MSG_SYNC_END:
            FUZZ_CHECK(msg.incarnation == ref.incarnation && msg.count == ref.count,
                       "SYNC_END differs from the reference");
            break;
        case HERD_MSG_DIGEST:
            FUZZ_CHECK(msg.count == ref.count && msg.digest == ref.digest,
                       "DIGEST differs from the reference");
            break;
        case HERD_MSG_GROUPS:
            FUZZ_CHECK(msg.digests == ref.digests && bin_inside(msg.digests, 256 * 8, data, size),
                       "GROUPS differs from the reference");
            break;
        case HERD_MSG_BUCKETS:
            FUZZ_CHECK(msg.n_items == ref.n_items && same_bin(msg.groups, ref.groups, msg.n_items)
                           && same_bin(msg.digests, ref.digests, msg.n_items * 256 * 8)
                           && bin_inside(msg.groups, msg.n_items, data, size)
                           && bin_inside(msg.digests, msg.n_items * 256 * 8, data, size),
                       "BUCKETS differs from the reference");
            break;
        case HERD_MSG_FPRINTS:
            FUZZ_CHECK(msg.last == ref.last && msg.n_items == ref.n_items && msg.n_fps == ref.n_fps
                           && same_bin(msg.buckets, ref.buckets, msg.n_items * 2)
                           && same_bin(msg.counts, ref.counts, msg.n_items * 4)
                           && same_bin(msg.fps, ref.fps, msg.n_fps * 8)
                           && bin_inside(msg.buckets, msg.n_items * 2, data, size)
                           && bin_inside(msg.counts, msg.n_items * 4, data, size)
                           && bin_inside(msg.fps, msg.n_fps * 8, data, size),
                       "FPRINTS differs from the reference");
            for (size_t i = 0; i < msg.n_items; i++)
                FUZZ_CHECK(herd_wire_u16(msg.buckets, i) == ref_le(ref.buckets + 2 * i, 2)
                               && herd_wire_u32(msg.counts, i) == ref_le(ref.counts + 4 * i, 4),
                           "FPRINTS bucket %zu reads differently", i);
            for (size_t i = 0; i < msg.n_fps; i++)
                FUZZ_CHECK(herd_wire_u64(msg.fps, i) == ref_le(ref.fps + 8 * i, 8),
                           "FPRINTS fingerprint %zu reads differently", i);
            break;
        case HERD_MSG_WANT:
            FUZZ_CHECK(msg.last == ref.last && msg.n_items == ref.n_items
                           && same_bin(msg.buckets, ref.buckets, msg.n_items * 2)
                           && same_bin(msg.fps, ref.fps, msg.n_items * 8) && bin_inside(msg.buckets, msg.n_items * 2, data, size)
                           && bin_inside(msg.fps, msg.n_items * 8, data, size),
                       "WANT differs from the reference");
            break;
        }
        check_reencode(&msg);
    }
    herd_wire_msg_free(&msg);
    herd_wire_msg_free(&msg); /* idempotent */
    FUZZ_CHECK(msg_empty(&msg), "msg_free must empty the message");
    free(ref.lines);

    /* A short error buffer on the heap: a write past errlen is a report. */
    size_t errlen = size % 9;
    char *small = malloc(errlen ? errlen : 1);
    FUZZ_CHECK(small != NULL, "out of memory");
    int rc2 = herd_wire_decode((const char *) data, size, &msg, errlen ? small : NULL, errlen);
    FUZZ_CHECK(rc2 == rc, "the error buffer changed the verdict");
    if (rc2 != 0 && errlen > 0)
        FUZZ_CHECK(memchr(small, '\0', errlen) != NULL && strncmp(small, err, errlen - 1) == 0,
                   "a short reason must be the start of the full one");
    herd_wire_msg_free(&msg);
    free(small);
    return 0;
}
