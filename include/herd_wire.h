/* herd_wire: msgpack messages between servers (PROTOCOL.md section 7).
 *
 * Every message is one ZeroMQ frame holding one msgpack array whose first
 * element is the wire version and second the message type. The decoder
 * trusts nothing: wrong types, truncation, trailing bytes, oversized fields,
 * unknown versions and unknown types are all rejected with a reason. */
#ifndef HERD_WIRE_H
#define HERD_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "herd_proto.h"

#define HERD_WIRE_VERSION     1
#define HERD_WIRE_MAX_UPDATES 65536 /* AT lines in one UPDATES message */
#define HERD_WIRE_MAX_FRAME   (64u * 1024u * 1024u) /* bytes of one message */

typedef enum {
    HERD_MSG_HELLO = 1,    /* [1, 1, name, incarnation, count, digest] */
    HERD_MSG_UPDATES = 2,  /* [1, 2, [at_line, ...]] */
    HERD_MSG_SYNC_END = 3, /* [1, 3, incarnation, sent] */
} herd_msg_type_t;

/* A decoded message. Spans point into the buffer given to herd_wire_decode,
 * which must outlive the message. */
typedef struct {
    herd_msg_type_t type;
    herd_span_t name;      /* HELLO: the sender's server name */
    uint64_t incarnation;  /* HELLO, SYNC_END: the sender's incarnation id */
    uint64_t count;        /* HELLO: clients the sender holds; SYNC_END: records sent */
    uint64_t digest;       /* HELLO: the sender's table digest */
    herd_span_t *updates;  /* UPDATES: the AT lines (owned array; free with herd_wire_msg_free) */
    size_t n_updates;
} herd_msg_t;

/* Encoders: each returns 0 and a malloc'd buffer in *out / *len, or -1. */
int herd_wire_encode_hello(const char *name, uint64_t incarnation, uint64_t count, uint64_t digest,
                           char **out, size_t *len);
int herd_wire_encode_updates(const herd_span_t *ats, size_t n, char **out, size_t *len);
int herd_wire_encode_sync_end(uint64_t incarnation, uint64_t sent, char **out, size_t *len);

/* Decodes one frame. Returns 0 and fills *msg (free with herd_wire_msg_free),
 * or -1 with a one-line reason in err. Checks: exactly one msgpack array
 * with no trailing bytes, version == HERD_WIRE_VERSION, a known type, the
 * exact element count and types for that type, a server name of 1..64 of
 * [A-Za-z0-9_-], at most HERD_WIRE_MAX_UPDATES AT lines of at most HERD_AT_MAX
 * bytes each. It does not parse the AT lines themselves (herd_proto_parse_at
 * does, in the node). */
int herd_wire_decode(const char *data, size_t len, herd_msg_t *msg, char *err, size_t errlen);

/* Frees what a decoded message owns. NULL-safe, idempotent. */
void herd_wire_msg_free(herd_msg_t *msg);

#endif
