/* herd_wire: msgpack messages between servers (PROTOCOL.md section 7).
 *
 * Every message is one ZeroMQ frame holding one msgpack array whose first
 * element is the wire version and second the message type. The decoder
 * trusts nothing: wrong types, truncation, trailing bytes, oversized fields,
 * unknown versions and unknown types are all rejected with a reason. */
#ifndef HERD_WIRE_H
#define HERD_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "herd_types.h"

#define HERD_WIRE_VERSION     1
/* AT lines in one UPDATES message: more than a flood batch holds (it is
 * sent at 256 KiB of lines), and as many as fit in a frame. */
#define HERD_WIRE_MAX_UPDATES 16384
/* Bytes of one message: above the largest a server sends (an FPRINTS or
 * a WANT of about 2.5 MiB, herd_repair.c; a flood batch of about 256 KiB).
 * The peer port closes a connection that sends a larger frame. */
#define HERD_WIRE_MAX_FRAME   (4u * 1024u * 1024u)

/* Anti-entropy (herd_repair) exchanges: A says DIGEST (or HELLO); B, when
 * its table differs, answers GROUPS; A answers BUCKETS for the groups that
 * differ; B answers with the records of buckets A has none of (UPDATES) and
 * FPRINTS for the other differing buckets; A answers with the records B
 * lacks (UPDATES) and WANT for the ones it lacks; B answers those (UPDATES)
 * and, after the last WANT, SYNC_END. Binary arrays are little-endian.
 * Records an exchange sends go as RECORDS, not UPDATES: the receiver stores
 * them but does not flood them on (its own exchanges with its other
 * neighbours carry them further), so a restarted server that is sent the
 * whole table does not send it all again to every other neighbour. */
typedef enum {
    HERD_MSG_HELLO = 1,    /* [1, 1, name, incarnation, count, digest] */
    HERD_MSG_UPDATES = 2,  /* [1, 2, [at_line, ...]] */
    HERD_MSG_SYNC_END = 3, /* [1, 3, incarnation, sent] */
    HERD_MSG_DIGEST = 4,   /* [1, 4, count, digest]: a periodic check */
    HERD_MSG_GROUPS = 5,   /* [1, 5, bin(256 x u64 group digests)] */
    HERD_MSG_BUCKETS = 6,  /* [1, 6, bin(n x u8 groups, increasing), bin(n x 256 x u64 bucket digests)] */
    HERD_MSG_FPRINTS = 7,  /* [1, 7, last, bin(k x u16 buckets, increasing), bin(k x u32 counts),
                              bin(sum(counts) x u64 fingerprints)] */
    HERD_MSG_WANT = 8,     /* [1, 8, last, bin(m x u16 buckets), bin(m x u64 fingerprints)] */
    HERD_MSG_RECORDS = 9,  /* [1, 9, [at_line, ...]]: UPDATES sent by an exchange, not flooded on */
} herd_msg_type_t;

/* A decoded message. Spans point into the buffer given to herd_wire_decode,
 * which must outlive the message. */
typedef struct {
    herd_msg_type_t type;
    herd_span_t name;      /* HELLO: the sender's server name */
    uint64_t incarnation;  /* HELLO, SYNC_END: the sender's incarnation id */
    uint64_t count;        /* HELLO: clients the sender holds; SYNC_END: records sent */
    uint64_t digest;       /* HELLO: the sender's table digest */
    herd_span_t *updates;  /* UPDATES, RECORDS: the AT lines (owned array; free with herd_wire_msg_free) */
    size_t n_updates;
    bool last;             /* FPRINTS, WANT: the last of its exchange */
    const unsigned char *groups;    /* BUCKETS: n_items group numbers (u8) */
    const unsigned char *buckets;   /* FPRINTS, WANT: n_items bucket numbers (u16) */
    const unsigned char *counts;    /* FPRINTS: n_items fingerprint counts (u32) */
    const unsigned char *digests;   /* GROUPS: 256 u64; BUCKETS: n_items x 256 u64 */
    const unsigned char *fps;       /* FPRINTS: n_fps u64; WANT: n_items u64 */
    size_t n_items;        /* BUCKETS: groups; FPRINTS, WANT: buckets */
    size_t n_fps;          /* FPRINTS: fingerprints in all */
} herd_msg_t;

/* Little-endian readers for the binary arrays of a decoded message. */
static inline uint64_t herd_wire_u64(const unsigned char *p, size_t i)
{
    p += 8 * i;
    return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24 |
           (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 | (uint64_t)p[6] << 48 | (uint64_t)p[7] << 56;
}
static inline uint32_t herd_wire_u32(const unsigned char *p, size_t i)
{
    p += 4 * i;
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint16_t herd_wire_u16(const unsigned char *p, size_t i)
{
    p += 2 * i;
    return (uint16_t)(p[0] | p[1] << 8);
}

/* Encoders: each returns 0 and a malloc'd buffer in *out / *len, or -1. */
int herd_wire_encode_hello(const char *name, uint64_t incarnation, uint64_t count, uint64_t digest,
                           char **out, size_t *len);
int herd_wire_encode_updates(const herd_span_t *ats, size_t n, char **out, size_t *len);
int herd_wire_encode_records(const herd_span_t *ats, size_t n, char **out, size_t *len);
int herd_wire_encode_sync_end(uint64_t incarnation, uint64_t sent, char **out, size_t *len);
int herd_wire_encode_digest(uint64_t count, uint64_t digest, char **out, size_t *len);
/* digests: 256 group digests. */
int herd_wire_encode_groups(const uint64_t *digests, char **out, size_t *len);
/* groups: n increasing group numbers; digests: n x 256 bucket digests. */
int herd_wire_encode_buckets(const uint8_t *groups, size_t n, const uint64_t *digests, char **out, size_t *len);
/* k increasing buckets with their fingerprint counts, then the fingerprints
 * bucket after bucket. */
int herd_wire_encode_fprints(bool last, const uint16_t *buckets, const uint32_t *counts, size_t k,
                             const uint64_t *fps, size_t n_fps, char **out, size_t *len);
/* m (bucket, fingerprint) pairs. */
int herd_wire_encode_want(bool last, const uint16_t *buckets, const uint64_t *fps, size_t m, char **out,
                          size_t *len);

/* Decodes one frame. Returns 0 and fills *msg (free with herd_wire_msg_free),
 * or -1 with a one-line reason in err. Checks: exactly one msgpack array
 * with no trailing bytes, version == HERD_WIRE_VERSION, a known type, the
 * exact element count and types for that type, a server name of 1..64 of
 * [A-Za-z0-9_-], at most HERD_WIRE_MAX_UPDATES AT lines of at most HERD_AT_MAX
 * bytes each. It does not parse the AT lines themselves (herd_record_parse
 * does, in the node). */
int herd_wire_decode(const char *data, size_t len, herd_msg_t *msg, char *err, size_t errlen);

/* Frees what a decoded message owns. NULL-safe, idempotent. */
void herd_wire_msg_free(herd_msg_t *msg);

#endif
