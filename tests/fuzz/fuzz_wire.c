/* fuzz_wire: the msgpack decoder of the inter-server links (herd_wire) on
 * arbitrary frames.
 *
 * Checks, besides the sanitizers:
 * - herd_wire_decode accepts a frame exactly when a small reference reader
 *   written here (it knows only the msgpack forms a valid message can use)
 *   reads it as a HELLO, UPDATES or SYNC_END of PROTOCOL.md section 7 and
 *   herd_wire.h, and then both read the same content;
 * - every span of a decoded message points into the frame;
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

/* A message as the reference reads it; lines are stored up to `cap`. */
typedef struct {
    uint64_t type, incarnation, count, digest;
    const uint8_t *name;
    size_t name_len;
    herd_span_t *lines;
    size_t n_lines;
} ref_msg_t;

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
    case HERD_MSG_UPDATES: {
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
        return false;
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

/* The same content: type, the fields that type carries, the lines. */
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
        FUZZ_CHECK(a->n_updates == b->n_updates, "%zu lines vs %zu", a->n_updates, b->n_updates);
        for (size_t i = 0; i < a->n_updates; i++)
            FUZZ_CHECK(spans_equal(a->updates[i], b->updates[i]), "line %zu differs", i);
        break;
    case HERD_MSG_SYNC_END:
        FUZZ_CHECK(a->incarnation == b->incarnation && a->count == b->count,
                   "SYNC_END content differs");
        break;
    default:
        break;
    }
}

/* Re-encodes a decoded message with the public encoders. */
static void check_reencode(const herd_msg_t *msg)
{
    char *out = NULL, *name = NULL;
    size_t len = 0;
    int rc = -1;
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
    case HERD_MSG_SYNC_END:
        rc = herd_wire_encode_sync_end(msg->incarnation, msg->count, &out, &len);
        break;
    default:
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
        FUZZ_CHECK(msg.updates == NULL && msg.n_updates == 0 && msg.name.len == 0,
                   "a refused frame must leave an empty message");
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
        default:
            break;
        }
        check_reencode(&msg);
    }
    herd_wire_msg_free(&msg);
    herd_wire_msg_free(&msg); /* idempotent */
    FUZZ_CHECK(msg.updates == NULL && msg.n_updates == 0, "msg_free must empty the message");
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
