/* herd_wire_repair: the anti-entropy messages of herd_wire (DIGEST, GROUPS,
 * BUCKETS, FPRINTS, WANT): encoders and the decoder's checks of their
 * layouts. Binary arrays are little-endian, whatever the machine. */
#include <assert.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "herd_wire.h"
#include "herd_wire_int.h"

/* Packs [version, type] as the start of an array of `elems`. */
static int wire_head(msgpack_packer *pk, size_t elems, uint64_t type)
{
    int rc = msgpack_pack_array(pk, elems);
    rc = rc ? rc : msgpack_pack_uint64(pk, HERD_WIRE_VERSION);
    return rc ? rc : msgpack_pack_uint64(pk, type);
}

/* Packs n little-endian integers of `width` bytes as one bin. */
static int wire_pack_le(msgpack_packer *pk, const void *vals, size_t n, unsigned width)
{
    int rc = msgpack_pack_bin(pk, n * width);
    unsigned char buf[512];
    size_t used = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        uint64_t v = width == 8   ? ((const uint64_t *)vals)[i]
                     : width == 4 ? ((const uint32_t *)vals)[i]
                     : width == 2 ? ((const uint16_t *)vals)[i]
                                  : ((const uint8_t *)vals)[i];
        for (unsigned b = 0; b < width; b++)
            buf[used++] = (unsigned char)(v >> (8 * b));
        if (used + 8 > sizeof buf) {
            rc = msgpack_pack_bin_body(pk, buf, used);
            used = 0;
        }
    }
    return rc ? rc : msgpack_pack_bin_body(pk, buf, used);
}

int herd_wire_encode_digest(uint64_t count, uint64_t digest, char **out, size_t *len)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int rc = wire_head(&pk, WIRE_DIGEST_ELEMS, HERD_MSG_DIGEST);
    rc = rc ? rc : msgpack_pack_uint64(&pk, count);
    rc = rc ? rc : msgpack_pack_uint64(&pk, digest);
    return wire_finish(&sb, rc, out, len);
}

int herd_wire_encode_groups(const uint64_t *digests, char **out, size_t *len)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int rc = wire_head(&pk, WIRE_GROUPS_ELEMS, HERD_MSG_GROUPS);
    rc = rc ? rc : wire_pack_le(&pk, digests, 256, 8);
    return wire_finish(&sb, rc, out, len);
}

int herd_wire_encode_buckets(const uint8_t *groups, size_t n, const uint64_t *digests, char **out, size_t *len)
{
    if (n > 256)
        return -1;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int rc = wire_head(&pk, WIRE_BUCKETS_ELEMS, HERD_MSG_BUCKETS);
    rc = rc ? rc : wire_pack_le(&pk, groups, n, 1);
    rc = rc ? rc : wire_pack_le(&pk, digests, n * 256, 8);
    return wire_finish(&sb, rc, out, len);
}

int herd_wire_encode_fprints(bool last, const uint16_t *buckets, const uint32_t *counts, size_t k,
                             const uint64_t *fps, size_t n_fps, char **out, size_t *len)
{
    if (k > 65536 || n_fps > HERD_WIRE_MAX_FRAME / 8)
        return -1;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int rc = wire_head(&pk, WIRE_FPRINTS_ELEMS, HERD_MSG_FPRINTS);
    rc = rc ? rc : msgpack_pack_uint64(&pk, last ? 1 : 0);
    rc = rc ? rc : wire_pack_le(&pk, buckets, k, 2);
    rc = rc ? rc : wire_pack_le(&pk, counts, k, 4);
    rc = rc ? rc : wire_pack_le(&pk, fps, n_fps, 8);
    return wire_finish(&sb, rc, out, len);
}

int herd_wire_encode_want(bool last, const uint16_t *buckets, const uint64_t *fps, size_t m, char **out,
                          size_t *len)
{
    if (m > HERD_WIRE_MAX_FRAME / 10)
        return -1;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int rc = wire_head(&pk, WIRE_WANT_ELEMS, HERD_MSG_WANT);
    rc = rc ? rc : msgpack_pack_uint64(&pk, last ? 1 : 0);
    rc = rc ? rc : wire_pack_le(&pk, buckets, m, 2);
    rc = rc ? rc : wire_pack_le(&pk, fps, m, 8);
    return wire_finish(&sb, rc, out, len);
}

/* A bin element, its bytes in *p and *n. */
static int wire_bin(const msgpack_object *o, const char *what, const unsigned char **p, size_t *n, char *err,
                    size_t errlen)
{
    if (o->type != MSGPACK_OBJECT_BIN) {
        wire_err(err, errlen, "%s is %s, expected bin", what, wire_type_name(o->type));
        return -1;
    }
    *p = (const unsigned char *)o->via.bin.ptr;
    *n = o->via.bin.size;
    return 0;
}

static int wire_last(const msgpack_object *o, const char *what, bool *last, char *err, size_t errlen)
{
    uint64_t v;
    if (wire_uint(o, what, &v, err, errlen) != 0)
        return -1;
    if (v > 1) {
        wire_err(err, errlen, "%s is %" PRIu64 ", expected 0 or 1", what, v);
        return -1;
    }
    *last = v == 1;
    return 0;
}

int wire_decode_repair(const msgpack_object *e, herd_msg_t *msg, char *err, size_t errlen)
{
    size_t n, m, c;
    switch (msg->type) {
    case HERD_MSG_DIGEST:
        return wire_uint(&e[2], "DIGEST count", &msg->count, err, errlen) != 0 ||
                       wire_uint(&e[3], "DIGEST digest", &msg->digest, err, errlen) != 0
                   ? -1
                   : 0;
    case HERD_MSG_GROUPS:
        if (wire_bin(&e[2], "GROUPS digests", &msg->digests, &n, err, errlen) != 0)
            return -1;
        if (n != WIRE_GROUPS_BYTES) {
            wire_err(err, errlen, "GROUPS digests are %zu bytes, expected %u", n, WIRE_GROUPS_BYTES);
            return -1;
        }
        return 0;
    case HERD_MSG_BUCKETS:
        if (wire_bin(&e[2], "BUCKETS groups", &msg->groups, &n, err, errlen) != 0 ||
            wire_bin(&e[3], "BUCKETS digests", &msg->digests, &m, err, errlen) != 0)
            return -1;
        if (n > 256 || m != n * WIRE_GROUPS_BYTES) {
            wire_err(err, errlen, "BUCKETS has %zu groups and %zu digest bytes", n, m);
            return -1;
        }
        for (size_t i = 1; i < n; i++) {
            if (msg->groups[i] <= msg->groups[i - 1]) {
                wire_err(err, errlen, "BUCKETS groups are not increasing at %zu", i);
                return -1;
            }
        }
        msg->n_items = n;
        return 0;
    case HERD_MSG_FPRINTS:
        if (wire_last(&e[2], "FPRINTS last", &msg->last, err, errlen) != 0 ||
            wire_bin(&e[3], "FPRINTS buckets", &msg->buckets, &n, err, errlen) != 0 ||
            wire_bin(&e[4], "FPRINTS counts", &msg->counts, &c, err, errlen) != 0 ||
            wire_bin(&e[5], "FPRINTS fingerprints", &msg->fps, &m, err, errlen) != 0)
            return -1;
        if (n % 2 != 0 || n / 2 > 65536 || c != n * 2 || m % 8 != 0) {
            wire_err(err, errlen, "FPRINTS has %zu bucket, %zu count and %zu fingerprint bytes", n, c, m);
            return -1;
        }
        msg->n_items = n / 2;
        uint64_t sum = 0;
        for (size_t i = 0; i < msg->n_items; i++) {
            if (i > 0 && herd_wire_u16(msg->buckets, i) <= herd_wire_u16(msg->buckets, i - 1)) {
                wire_err(err, errlen, "FPRINTS buckets are not increasing at %zu", i);
                return -1;
            }
            sum += herd_wire_u32(msg->counts, i);
        }
        if (sum != m / 8) {
            wire_err(err, errlen, "FPRINTS counts add up to %" PRIu64 " but %zu fingerprints follow", sum, m / 8);
            return -1;
        }
        msg->n_fps = m / 8;
        return 0;
    case HERD_MSG_WANT:
        if (wire_last(&e[2], "WANT last", &msg->last, err, errlen) != 0 ||
            wire_bin(&e[3], "WANT buckets", &msg->buckets, &n, err, errlen) != 0 ||
            wire_bin(&e[4], "WANT fingerprints", &msg->fps, &m, err, errlen) != 0)
            return -1;
        if (n % 2 != 0 || m != n * 4) {
            wire_err(err, errlen, "WANT has %zu bucket and %zu fingerprint bytes", n, m);
            return -1;
        }
        msg->n_items = n / 2;
        return 0;
    default:
        return -1;
    }
}

