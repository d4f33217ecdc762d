/* herd_wire_int.h: what herd_wire.c and herd_wire_repair.c share. Private
 * to the wire module. */
#ifndef HERD_WIRE_INT_H
#define HERD_WIRE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "herd_wire.h"

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
void wire_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Hands the packed bytes to the caller, or frees them when packing failed
 * (or the frame would pass HERD_WIRE_MAX_FRAME). */
int wire_finish(msgpack_sbuffer *sb, int rc, char **out, size_t *len);

/* The name of a msgpack type, for reasons. */
const char *wire_type_name(msgpack_object_type t);

/* An unsigned integer element, or -1 with a reason. */
int wire_uint(const msgpack_object *o, const char *what, uint64_t *v, char *err, size_t errlen);

/* Decodes the anti-entropy messages (DIGEST to WANT) once the element count
 * is checked. */
int wire_decode_repair(const msgpack_object *e, herd_msg_t *msg, char *err, size_t errlen);

#endif
