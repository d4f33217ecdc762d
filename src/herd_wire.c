/* herd_wire: msgpack messages between servers, the one codec of the peer
 * boundary: the flood (HELLO, UPDATES, RECORDS, SYNC_END) and the
 * anti-entropy exchanges (DIGEST, GROUPS, BUCKETS, FPRINTS, WANT) share the
 * frame, its checks and the encoders' helpers. Binary arrays are
 * little-endian, whatever the machine.
 *
 * Encoding goes through msgpack-c's sbuffer and packer. Decoding goes through
 * msgpack_unpack_next, whose str and bin objects point into the input buffer
 * (msgpack-c's C unpacker never copies their bytes), so every span in a
 * decoded message points into the caller's frame and nothing big is copied.
 *
 * msgpack-c trusts the counts in container headers: it allocates the slots of
 * an array as soon as it reads the header, so five bytes claiming four billion
 * elements would ask for 128 GB (4G slots of 32 bytes). Before msgpack-c sees
 * a frame, wire_scan walks its encoding once without building anything and
 * rejects counts that the remaining bytes cannot hold, nesting deeper than any
 * message needs, and more objects than the largest valid message has. That
 * bounds what msgpack-c can allocate to about 2 MB, whatever the input. */
#include "herd_wire.h"
#include "herd_proto.h"
#include "herd_record.h"

#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>
#include <msgpack/unpack_define.h> /* MSGPACK_EMBED_STACK_SIZE */

/* Deepest container nesting accepted. Valid messages need 2 (UPDATES); a few
 * more levels let the decoder name a misplaced container precisely ("line 3
 * is an array") instead of a generic depth error. */
#define WIRE_MAX_DEPTH 8

/* Most objects accepted inside all containers of one frame together: the
 * largest valid message is UPDATES with 3 + HERD_WIRE_MAX_UPDATES. The slack
 * lets an UPDATES with one line too many reach the precise check. */
#define WIRE_MAX_OBJECTS ((uint64_t)HERD_WIRE_MAX_UPDATES + 16u)

_Static_assert(WIRE_MAX_DEPTH < MSGPACK_EMBED_STACK_SIZE,
               "msgpack-c must never hit its own stack limit first");

/* Elements of each message type, version and type included. */
#define WIRE_HELLO_ELEMS    6
#define WIRE_UPDATES_ELEMS  3
#define WIRE_SYNC_END_ELEMS 4
#define WIRE_DIGEST_ELEMS   4
#define WIRE_GROUPS_ELEMS   3
#define WIRE_BUCKETS_ELEMS  4
#define WIRE_FPRINTS_ELEMS  6
#define WIRE_WANT_ELEMS     5
#define WIRE_GROUPS_BYTES   (256u * 8u) /* the GROUPS digests, and one group's bucket digests */

/* A one-line reason into err (NULL-safe). */
static void __attribute__((format(printf, 3, 4))) wire_reason(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* The reason, and -1 (the decoders' failure) as the value: a macro, so the
 * compiler sees the -1 that every failing path returns. */
#define wire_err(err, errlen, ...) (wire_reason((err), (errlen), __VA_ARGS__), -1)

/* Index of the first byte of `name` that may not appear in a server name, or
 * len when every byte may. */
static size_t wire_name_bad_byte(const char *name, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!herd_record_name_byte((unsigned char)name[i]))
            return i;
    return len;
}

/* ---------------------------------------------------------------- encoding */

/* Bytes msgpack uses for a str of `len` bytes, header included. */
static size_t wire_str_size(size_t len)
{
    if (len < 32)
        return 1 + len;
    if (len < 256)
        return 2 + len;
    if (len < 65536)
        return 3 + len;
    return 5 + len;
}

/* Bytes msgpack uses for the header of an array of `n` elements. */
static size_t wire_array_header_size(size_t n)
{
    if (n < 16)
        return 1;
    if (n < 65536)
        return 3;
    return 5;
}

/* One message being packed: its buffer and the packer writing into it. */
typedef struct {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} wire_out_t;

/* Starts a message of `elems` elements, version and type included, with
 * [version, type], in a buffer of `reserve` bytes made at once (0: grown as
 * needed). Returns msgpack-c's code: 0 when packed. */
static int wire_begin(wire_out_t *w, size_t reserve, size_t elems, uint64_t type)
{
    msgpack_sbuffer_init(&w->sb);
    if (reserve) {
        if (!(w->sb.data = malloc(reserve)))
            return -1;
        w->sb.alloc = reserve;
    }
    msgpack_packer_init(&w->pk, &w->sb, msgpack_sbuffer_write);
    int rc = msgpack_pack_array(&w->pk, elems);
    rc = rc ? rc : msgpack_pack_uint64(&w->pk, HERD_WIRE_VERSION);
    return rc ? rc : msgpack_pack_uint64(&w->pk, type);
}

/* wire_begin for FPRINTS and WANT, whose third element is the "last" flag. */
static int wire_begin_last(wire_out_t *w, size_t elems, uint64_t type, bool last)
{
    int rc = wire_begin(w, 0, elems, type);
    return rc ? rc : msgpack_pack_uint64(&w->pk, last ? 1 : 0);
}

/* Hands the packed bytes to the caller, or frees them when packing failed
 * or made a frame larger than the decoder takes (the encoders' cheap count
 * checks leave out the few bytes of heads). */
static int wire_finish(wire_out_t *w, int rc, char **out, size_t *len)
{
    if (rc != 0 || w->sb.size > HERD_WIRE_MAX_FRAME) {
        msgpack_sbuffer_destroy(&w->sb);
        *out = NULL;
        *len = 0;
        return -1;
    }
    *len = w->sb.size;
    *out = msgpack_sbuffer_release(&w->sb);
    return 0;
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

int herd_wire_encode_hello(const char *name, uint64_t incarnation, uint64_t count, uint64_t digest,
                           char **out, size_t *len)
{
    assert(out != NULL && len != NULL);
    *out = NULL;
    *len = 0;
    if (name == NULL)
        return -1;
    size_t name_len = strnlen(name, HERD_MAX_NAME + 1);
    if (name_len == 0 || name_len > HERD_MAX_NAME || wire_name_bad_byte(name, name_len) != name_len)
        return -1;

    wire_out_t w;
    int rc = wire_begin(&w, 0, WIRE_HELLO_ELEMS, HERD_MSG_HELLO);
    rc = rc ? rc : msgpack_pack_str(&w.pk, name_len);
    rc = rc ? rc : msgpack_pack_str_body(&w.pk, name, name_len);
    rc = rc ? rc : msgpack_pack_uint64(&w.pk, incarnation);
    rc = rc ? rc : msgpack_pack_uint64(&w.pk, count);
    rc = rc ? rc : msgpack_pack_uint64(&w.pk, digest);
    return wire_finish(&w, rc, out, len);
}

/* UPDATES and RECORDS share one layout: [1, type, [at_line, ...]]. */
static int wire_encode_lines(uint64_t type, const herd_span_t *ats, size_t n, char **out, size_t *len)
{
    assert(out != NULL && len != NULL);
    assert(ats != NULL || n == 0);
    *out = NULL;
    *len = 0;
    if (n > HERD_WIRE_MAX_UPDATES)
        return -1;

    /* Refuse anything the decoder would refuse, and size the frame exactly
     * before allocating so that an oversized batch costs nothing. */
    size_t size = 1 + 1 + 1 + wire_array_header_size(n);
    for (size_t i = 0; i < n; i++) {
        if (ats[i].len == 0 || ats[i].len > HERD_AT_MAX || ats[i].p == NULL)
            return -1;
        size += wire_str_size(ats[i].len);
        if (size > HERD_WIRE_MAX_FRAME)
            return -1;
    }

    wire_out_t w;
    int rc = wire_begin(&w, size, WIRE_UPDATES_ELEMS, type);
    rc = rc ? rc : msgpack_pack_array(&w.pk, n);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        rc = msgpack_pack_str(&w.pk, ats[i].len);
        rc = rc ? rc : msgpack_pack_str_body(&w.pk, ats[i].p, ats[i].len);
    }
    assert(rc != 0 || w.sb.size == size);
    return wire_finish(&w, rc, out, len);
}

int herd_wire_encode_updates(const herd_span_t *ats, size_t n, char **out, size_t *len)
{
    return wire_encode_lines(HERD_MSG_UPDATES, ats, n, out, len);
}

int herd_wire_encode_records(const herd_span_t *ats, size_t n, char **out, size_t *len)
{
    return wire_encode_lines(HERD_MSG_RECORDS, ats, n, out, len);
}

int herd_wire_encode_sync_end(uint64_t incarnation, uint64_t sent, char **out, size_t *len)
{
    assert(out != NULL && len != NULL);
    *out = NULL;
    *len = 0;
    wire_out_t w;
    int rc = wire_begin(&w, 0, WIRE_SYNC_END_ELEMS, HERD_MSG_SYNC_END);
    rc = rc ? rc : msgpack_pack_uint64(&w.pk, incarnation);
    rc = rc ? rc : msgpack_pack_uint64(&w.pk, sent);
    return wire_finish(&w, rc, out, len);
}

/* Anti-entropy exchanges (herd_repair). */

int herd_wire_encode_digest(uint64_t count, uint64_t digest, char **out, size_t *len)
{
    wire_out_t w;
    int rc = wire_begin(&w, 0, WIRE_DIGEST_ELEMS, HERD_MSG_DIGEST);
    rc = rc ? rc : msgpack_pack_uint64(&w.pk, count);
    rc = rc ? rc : msgpack_pack_uint64(&w.pk, digest);
    return wire_finish(&w, rc, out, len);
}

int herd_wire_encode_groups(const uint64_t *digests, char **out, size_t *len)
{
    wire_out_t w;
    int rc = wire_begin(&w, 0, WIRE_GROUPS_ELEMS, HERD_MSG_GROUPS);
    rc = rc ? rc : wire_pack_le(&w.pk, digests, 256, 8);
    return wire_finish(&w, rc, out, len);
}

int herd_wire_encode_buckets(const uint8_t *groups, size_t n, const uint64_t *digests, char **out, size_t *len)
{
    if (n > 256)
        return -1;
    wire_out_t w;
    int rc = wire_begin(&w, 0, WIRE_BUCKETS_ELEMS, HERD_MSG_BUCKETS);
    rc = rc ? rc : wire_pack_le(&w.pk, groups, n, 1);
    rc = rc ? rc : wire_pack_le(&w.pk, digests, n * 256, 8);
    return wire_finish(&w, rc, out, len);
}

int herd_wire_encode_fprints(bool last, const uint16_t *buckets, const uint32_t *counts, size_t k,
                             const uint64_t *fps, size_t n_fps, char **out, size_t *len)
{
    if (k > 65536 || n_fps > HERD_WIRE_MAX_FRAME / 8)
        return -1;
    wire_out_t w;
    int rc = wire_begin_last(&w, WIRE_FPRINTS_ELEMS, HERD_MSG_FPRINTS, last);
    rc = rc ? rc : wire_pack_le(&w.pk, buckets, k, 2);
    rc = rc ? rc : wire_pack_le(&w.pk, counts, k, 4);
    rc = rc ? rc : wire_pack_le(&w.pk, fps, n_fps, 8);
    return wire_finish(&w, rc, out, len);
}

int herd_wire_encode_want(bool last, const uint16_t *buckets, const uint64_t *fps, size_t m, char **out,
                          size_t *len)
{
    if (m > HERD_WIRE_MAX_FRAME / 10)
        return -1;
    wire_out_t w;
    int rc = wire_begin_last(&w, WIRE_WANT_ELEMS, HERD_MSG_WANT, last);
    rc = rc ? rc : wire_pack_le(&w.pk, buckets, m, 2);
    rc = rc ? rc : wire_pack_le(&w.pk, fps, m, 8);
    return wire_finish(&w, rc, out, len);
}

/* ---------------------------------------------------------- the pre-scan */

enum { WIRE_SCALAR, WIRE_RAW, WIRE_ARRAY, WIRE_MAP, WIRE_RESERVED };

/* Layout of the msgpack type bytes 0xc0..0xdf (the ones below and above are
 * fixed-size forms handled in wire_scan). */
static const struct {
    uint8_t kind;  /* WIRE_SCALAR: `fixed` payload bytes; RAW: payload of the length field;
                      ARRAY/MAP: elements / pairs given by the length field */
    uint8_t hdr;   /* bytes of the type byte, length field and ext type byte */
    uint8_t lenw;  /* bytes of the big-endian length field right after the type byte */
    uint8_t fixed; /* payload bytes of a fixed-size form */
} wire_fmt[32] = {
    [0x00] = {WIRE_SCALAR, 1, 0, 0},  /* nil */
    [0x01] = {WIRE_RESERVED, 1, 0, 0}, /* never used */
    [0x02] = {WIRE_SCALAR, 1, 0, 0},  /* false */
    [0x03] = {WIRE_SCALAR, 1, 0, 0},  /* true */
    [0x04] = {WIRE_RAW, 2, 1, 0},     /* bin 8 */
    [0x05] = {WIRE_RAW, 3, 2, 0},     /* bin 16 */
    [0x06] = {WIRE_RAW, 5, 4, 0},     /* bin 32 */
    [0x07] = {WIRE_RAW, 3, 1, 0},     /* ext 8 */
    [0x08] = {WIRE_RAW, 4, 2, 0},     /* ext 16 */
    [0x09] = {WIRE_RAW, 6, 4, 0},     /* ext 32 */
    [0x0a] = {WIRE_SCALAR, 1, 0, 4},  /* float 32 */
    [0x0b] = {WIRE_SCALAR, 1, 0, 8},  /* float 64 */
    [0x0c] = {WIRE_SCALAR, 1, 0, 1},  /* uint 8 */
    [0x0d] = {WIRE_SCALAR, 1, 0, 2},  /* uint 16 */
    [0x0e] = {WIRE_SCALAR, 1, 0, 4},  /* uint 32 */
    [0x0f] = {WIRE_SCALAR, 1, 0, 8},  /* uint 64 */
    [0x10] = {WIRE_SCALAR, 1, 0, 1},  /* int 8 */
    [0x11] = {WIRE_SCALAR, 1, 0, 2},  /* int 16 */
    [0x12] = {WIRE_SCALAR, 1, 0, 4},  /* int 32 */
    [0x13] = {WIRE_SCALAR, 1, 0, 8},  /* int 64 */
    [0x14] = {WIRE_SCALAR, 2, 0, 1},  /* fixext 1 */
    [0x15] = {WIRE_SCALAR, 2, 0, 2},  /* fixext 2 */
    [0x16] = {WIRE_SCALAR, 2, 0, 4},  /* fixext 4 */
    [0x17] = {WIRE_SCALAR, 2, 0, 8},  /* fixext 8 */
    [0x18] = {WIRE_SCALAR, 2, 0, 16}, /* fixext 16 */
    [0x19] = {WIRE_RAW, 2, 1, 0},     /* str 8 */
    [0x1a] = {WIRE_RAW, 3, 2, 0},     /* str 16 */
    [0x1b] = {WIRE_RAW, 5, 4, 0},     /* str 32 */
    [0x1c] = {WIRE_ARRAY, 3, 2, 0},   /* array 16 */
    [0x1d] = {WIRE_ARRAY, 5, 4, 0},   /* array 32 */
    [0x1e] = {WIRE_MAP, 3, 2, 0},     /* map 16 */
    [0x1f] = {WIRE_MAP, 5, 4, 0},     /* map 32 */
};

static uint64_t wire_be(const unsigned char *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* Walks the encoding of one msgpack object at the start of p[0..len) without
 * building it. Returns 0 and the object's encoded size in *used, or -1 with a
 * reason when it is truncated, uses the reserved byte, nests deeper than
 * WIRE_MAX_DEPTH or holds more than WIRE_MAX_OBJECTS objects. Iterative, with
 * a fixed-size stack: no input can make it recurse or allocate. */
static int wire_scan(const unsigned char *p, size_t len, size_t *used, char *err, size_t errlen)
{
    uint64_t pending[WIRE_MAX_DEPTH + 1]; /* objects still to read at each level */
    size_t depth = 0;                     /* containers open around the next object */
    uint64_t objects = 0;                 /* objects announced by all containers so far */
    size_t off = 0;
    pending[0] = 1;

    for (;;) {
        while (pending[depth] == 0) {
            if (depth == 0) {
                *used = off;
                return 0;
            }
            depth--;
        }
        pending[depth]--;

        if (off == len)
            goto truncated;
        unsigned char b = p[off];
        size_t avail = len - off;
        int kind;
        uint64_t n; /* payload bytes, or elements of a container */
        if (b <= 0x7f || b >= 0xe0) {
            kind = WIRE_SCALAR;
            n = 0;
            off += 1;
        } else if (b <= 0x8f) {
            kind = WIRE_MAP;
            n = 2u * (uint64_t)(b & 0x0f);
            off += 1;
        } else if (b <= 0x9f) {
            kind = WIRE_ARRAY;
            n = b & 0x0f;
            off += 1;
        } else if (b <= 0xbf) {
            kind = WIRE_RAW;
            n = b & 0x1f;
            off += 1;
        } else {
            const unsigned fi = b - 0xc0u;
            kind = wire_fmt[fi].kind;
            if (kind == WIRE_RESERVED)
                return wire_err(err, errlen, "invalid msgpack type byte 0x%02x at byte %zu", b, off);
            if (avail < wire_fmt[fi].hdr)
                goto truncated;
            n = wire_fmt[fi].lenw ? wire_be(p + off + 1, wire_fmt[fi].lenw) : wire_fmt[fi].fixed;
            if (kind == WIRE_MAP)
                n *= 2;
            off += wire_fmt[fi].hdr;
        }
        avail = len - off;

        if (kind == WIRE_SCALAR || kind == WIRE_RAW) {
            if (n > avail)
                goto truncated;
            off += (size_t)n;
            continue;
        }
        /* A container: every element takes at least one byte, so a count
         * larger than what is left can only be truncation (or a lie). */
        if (depth + 1 > WIRE_MAX_DEPTH)
            return wire_err(err, errlen, "message nested deeper than %d levels", WIRE_MAX_DEPTH);
        if (n > avail)
            return wire_err(err, errlen,
                            "truncated message: a container of %" PRIu64 " objects with %zu bytes left", n,
                            avail);
        if (n > WIRE_MAX_OBJECTS - objects)
            return wire_err(err, errlen, "message holds more than %" PRIu64 " objects", WIRE_MAX_OBJECTS);
        objects += n;
        if (n > 0)
            pending[++depth] = n;
    }

truncated:
    wire_reason(err, errlen, "truncated message (%zu bytes)", len);
    return -1;
}

/* ---------------------------------------------------------------- decoding */

/* The name of a msgpack type, for reasons. */
static const char *wire_type_name(msgpack_object_type t)
{
    switch (t) {
    case MSGPACK_OBJECT_NIL: return "nil";
    case MSGPACK_OBJECT_BOOLEAN: return "a boolean";
    case MSGPACK_OBJECT_POSITIVE_INTEGER: return "an unsigned integer";
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return "a negative integer";
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: return "a float";
    case MSGPACK_OBJECT_STR: return "a string";
    case MSGPACK_OBJECT_ARRAY: return "an array";
    case MSGPACK_OBJECT_MAP: return "a map";
    case MSGPACK_OBJECT_BIN: return "a binary";
    case MSGPACK_OBJECT_EXT: return "an ext";
    }
    return "an unknown object";
}

/* msgpack-c already turns non-negative signed encodings into
 * MSGPACK_OBJECT_POSITIVE_INTEGER, so this accepts both forms. */
static int wire_uint(const msgpack_object *o, const char *what, uint64_t *v, char *err, size_t errlen)
{
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return wire_err(err, errlen, "%s is %s, expected an unsigned integer", what,
                        wire_type_name(o->type));
    *v = o->via.u64;
    return 0;
}

static const char *wire_msg_name(uint64_t type)
{
    switch (type) {
    case HERD_MSG_HELLO: return "HELLO";
    case HERD_MSG_UPDATES: return "UPDATES";
    case HERD_MSG_RECORDS: return "RECORDS";
    case HERD_MSG_SYNC_END: return "SYNC_END";
    case HERD_MSG_DIGEST: return "DIGEST";
    case HERD_MSG_GROUPS: return "GROUPS";
    case HERD_MSG_BUCKETS: return "BUCKETS";
    case HERD_MSG_FPRINTS: return "FPRINTS";
    case HERD_MSG_WANT: return "WANT";
    }
    return "?";
}

static int wire_decode_hello(const msgpack_object *e, herd_msg_t *msg, char *err, size_t errlen)
{
    const msgpack_object *name = &e[2];
    if (name->type != MSGPACK_OBJECT_STR)
        return wire_err(err, errlen, "HELLO name is %s, expected a string", wire_type_name(name->type));
    size_t len = name->via.str.size;
    if (len == 0)
        return wire_err(err, errlen, "HELLO name is empty");
    if (len > HERD_MAX_NAME)
        return wire_err(err, errlen, "HELLO name is %zu bytes, longer than %d", len, HERD_MAX_NAME);
    size_t bad = wire_name_bad_byte(name->via.str.ptr, len);
    if (bad != len)
        return wire_err(err, errlen, "HELLO name has byte 0x%02x at %zu, not a letter, digit, '_' or '-'",
                        (unsigned char)name->via.str.ptr[bad], bad);
    msg->name.p = name->via.str.ptr;
    msg->name.len = len;
    if (wire_uint(&e[3], "HELLO incarnation", &msg->incarnation, err, errlen) != 0 ||
        wire_uint(&e[4], "HELLO count", &msg->count, err, errlen) != 0 ||
        wire_uint(&e[5], "HELLO digest", &msg->digest, err, errlen) != 0)
        return -1;
    return 0;
}

static int wire_decode_updates(const msgpack_object *e, herd_msg_t *msg, char *err, size_t errlen)
{
    const msgpack_object *lines = &e[2];
    if (lines->type != MSGPACK_OBJECT_ARRAY)
        return wire_err(err, errlen, "UPDATES lines are %s, expected an array",
                        wire_type_name(lines->type));
    size_t n = lines->via.array.size;
    if (n > HERD_WIRE_MAX_UPDATES)
        return wire_err(err, errlen, "UPDATES has %zu lines, more than %d", n, HERD_WIRE_MAX_UPDATES);
    if (n == 0)
        return 0;
    herd_span_t *spans = malloc(n * sizeof *spans);
    if (spans == NULL)
        return wire_err(err, errlen, "out of memory for %zu UPDATES lines", n);
    for (size_t i = 0; i < n; i++) {
        const msgpack_object *o = &lines->via.array.ptr[i];
        const char *p;
        size_t len;
        if (o->type == MSGPACK_OBJECT_STR) {
            p = o->via.str.ptr;
            len = o->via.str.size;
        } else if (o->type == MSGPACK_OBJECT_BIN) {
            p = o->via.bin.ptr;
            len = o->via.bin.size;
        } else {
            wire_reason(err, errlen, "UPDATES line %zu is %s, expected a string", i, wire_type_name(o->type));
            free(spans);
            return -1;
        }
        if (len == 0 || len > HERD_AT_MAX) {
            if (len == 0)
                wire_reason(err, errlen, "UPDATES line %zu is empty", i);
            else
                wire_reason(err, errlen, "UPDATES line %zu is %zu bytes, longer than %d", i, len, HERD_AT_MAX);
            free(spans);
            return -1;
        }
        spans[i].p = p;
        spans[i].len = len;
    }
    msg->updates = spans;
    msg->n_updates = n;
    return 0;
}

/* A bin element, its bytes in *p and *n. */
static int wire_bin(const msgpack_object *o, const char *what, const unsigned char **p, size_t *n, char *err,
                    size_t errlen)
{
    if (o->type != MSGPACK_OBJECT_BIN)
        return wire_err(err, errlen, "%s is %s, expected bin", what, wire_type_name(o->type));
    *p = (const unsigned char *)o->via.bin.ptr;
    *n = o->via.bin.size;
    return 0;
}

static int wire_last(const msgpack_object *o, const char *what, bool *last, char *err, size_t errlen)
{
    uint64_t v;
    if (wire_uint(o, what, &v, err, errlen) != 0)
        return -1;
    if (v > 1)
        return wire_err(err, errlen, "%s is %" PRIu64 ", expected 0 or 1", what, v);
    *last = v == 1;
    return 0;
}

/* Decodes the anti-entropy messages (DIGEST to WANT) once the element count
 * is checked. */
static int wire_decode_repair(const msgpack_object *e, herd_msg_t *msg, char *err, size_t errlen)
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
        if (n != WIRE_GROUPS_BYTES)
            return wire_err(err, errlen, "GROUPS digests are %zu bytes, expected %u", n, WIRE_GROUPS_BYTES);
        return 0;
    case HERD_MSG_BUCKETS:
        if (wire_bin(&e[2], "BUCKETS groups", &msg->groups, &n, err, errlen) != 0 ||
            wire_bin(&e[3], "BUCKETS digests", &msg->digests, &m, err, errlen) != 0)
            return -1;
        if (n > 256 || m != n * WIRE_GROUPS_BYTES)
            return wire_err(err, errlen, "BUCKETS has %zu groups and %zu digest bytes", n, m);
        for (size_t i = 1; i < n; i++) {
            if (msg->groups[i] <= msg->groups[i - 1])
                return wire_err(err, errlen, "BUCKETS groups are not increasing at %zu", i);
        }
        msg->n_items = n;
        return 0;
    case HERD_MSG_FPRINTS:
        if (wire_last(&e[2], "FPRINTS last", &msg->last, err, errlen) != 0 ||
            wire_bin(&e[3], "FPRINTS buckets", &msg->buckets, &n, err, errlen) != 0 ||
            wire_bin(&e[4], "FPRINTS counts", &msg->counts, &c, err, errlen) != 0 ||
            wire_bin(&e[5], "FPRINTS fingerprints", &msg->fps, &m, err, errlen) != 0)
            return -1;
        if (n % 2 != 0 || n / 2 > 65536 || c != n * 2 || m % 8 != 0)
            return wire_err(err, errlen, "FPRINTS has %zu bucket, %zu count and %zu fingerprint bytes", n, c, m);
        msg->n_items = n / 2;
        uint64_t sum = 0;
        for (size_t i = 0; i < msg->n_items; i++) {
            if (i > 0 && herd_wire_u16(msg->buckets, i) <= herd_wire_u16(msg->buckets, i - 1))
                return wire_err(err, errlen, "FPRINTS buckets are not increasing at %zu", i);
            sum += herd_wire_u32(msg->counts, i);
        }
        if (sum != m / 8)
            return wire_err(err, errlen, "FPRINTS counts add up to %" PRIu64 " but %zu fingerprints follow", sum,
                            m / 8);
        msg->n_fps = m / 8;
        return 0;
    case HERD_MSG_WANT:
        if (wire_last(&e[2], "WANT last", &msg->last, err, errlen) != 0 ||
            wire_bin(&e[3], "WANT buckets", &msg->buckets, &n, err, errlen) != 0 ||
            wire_bin(&e[4], "WANT fingerprints", &msg->fps, &m, err, errlen) != 0)
            return -1;
        if (n % 2 != 0 || m != n * 4)
            return wire_err(err, errlen, "WANT has %zu bucket and %zu fingerprint bytes", n, m);
        msg->n_items = n / 2;
        return 0;
    default:
        return -1;
    }
}

/* Checks the decoded array against the message layouts and fills *msg. */
static int wire_decode_object(const msgpack_object *root, herd_msg_t *msg, char *err, size_t errlen)
{
    if (root->type != MSGPACK_OBJECT_ARRAY)
        return wire_err(err, errlen, "message is %s, not an array", wire_type_name(root->type));
    size_t n = root->via.array.size;
    const msgpack_object *e = root->via.array.ptr;
    if (n < 2)
        return wire_err(err, errlen, "message array has %zu elements, too few for version and type", n);
    uint64_t version, type;
    if (wire_uint(&e[0], "wire version", &version, err, errlen) != 0)
        return -1;
    if (version != HERD_WIRE_VERSION)
        return wire_err(err, errlen, "unknown wire version %" PRIu64, version);
    if (wire_uint(&e[1], "message type", &type, err, errlen) != 0)
        return -1;
    size_t want;
    switch (type) {
    case HERD_MSG_HELLO: want = WIRE_HELLO_ELEMS; break;
    case HERD_MSG_UPDATES:
    case HERD_MSG_RECORDS: want = WIRE_UPDATES_ELEMS; break;
    case HERD_MSG_SYNC_END: want = WIRE_SYNC_END_ELEMS; break;
    case HERD_MSG_DIGEST: want = WIRE_DIGEST_ELEMS; break;
    case HERD_MSG_GROUPS: want = WIRE_GROUPS_ELEMS; break;
    case HERD_MSG_BUCKETS: want = WIRE_BUCKETS_ELEMS; break;
    case HERD_MSG_FPRINTS: want = WIRE_FPRINTS_ELEMS; break;
    case HERD_MSG_WANT: want = WIRE_WANT_ELEMS; break;
    default: return wire_err(err, errlen, "unknown message type %" PRIu64, type);
    }
    if (n != want)
        return wire_err(err, errlen, "%s has %zu elements, expected %zu", wire_msg_name(type), n, want);
    msg->type = (herd_msg_type_t)type;
    switch (msg->type) {
    case HERD_MSG_HELLO: return wire_decode_hello(e, msg, err, errlen);
    case HERD_MSG_UPDATES:
    case HERD_MSG_RECORDS: return wire_decode_updates(e, msg, err, errlen);
    case HERD_MSG_SYNC_END:
        if (wire_uint(&e[2], "SYNC_END incarnation", &msg->incarnation, err, errlen) != 0 ||
            wire_uint(&e[3], "SYNC_END sent", &msg->count, err, errlen) != 0)
            return -1;
        return 0;
    default:
        return wire_decode_repair(e, msg, err, errlen);
    }
    return -1; /* unreachable: type was checked above */
}

int herd_wire_decode(const char *data, size_t len, herd_msg_t *msg, char *err, size_t errlen)
{
    assert(msg != NULL);
    assert(data != NULL || len == 0);
    memset(msg, 0, sizeof *msg);
    if (err != NULL && errlen > 0)
        err[0] = '\0';

    if (len == 0)
        return wire_err(err, errlen, "empty message");
    if (len > HERD_WIRE_MAX_FRAME)
        return wire_err(err, errlen, "message of %zu bytes is larger than %u", len, HERD_WIRE_MAX_FRAME);
    const unsigned char *u = (const unsigned char *)data;
    if (!((u[0] >= 0x90 && u[0] <= 0x9f) || u[0] == 0xdc || u[0] == 0xdd))
        return wire_err(err, errlen, "message is not an array (first byte 0x%02x)", u[0]);
    size_t used;
    if (wire_scan(u, len, &used, err, errlen) != 0)
        return -1;
    if (used != len)
        return wire_err(err, errlen, "%zu trailing bytes after the message array", len - used);

    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    msgpack_unpack_return r = msgpack_unpack_next(&up, data, len, &off);
    int rc;
    if (r != MSGPACK_UNPACK_SUCCESS || off != len) {
        /* The scan accepts only what msgpack-c can parse; this is a resource
         * failure (its zone could not allocate) or a disagreement between the
         * two. Either way the frame is refused, not trusted. */
        wire_reason(err, errlen, "msgpack-c could not unpack the message (code %d)", (int)r);
        rc = -1;
    } else {
        rc = wire_decode_object(&up.data, msg, err, errlen);
    }
    msgpack_unpacked_destroy(&up);
    if (rc != 0)
        herd_wire_msg_free(msg);
    return rc;
}

void herd_wire_msg_free(herd_msg_t *msg)
{
    if (msg == NULL)
        return;
    free(msg->updates);
    memset(msg, 0, sizeof *msg);
}
