/* herd_places_msg: the messages on the Places worker's pipe, one pure codec
 * used by both ends (herd_places_pipe.c, the node's; herd_places.c, the
 * worker's). Each message is one msgpack frame:
 *
 *   request: [0, req_id, lat, lng, radius_km, bound]   node -> worker
 *   cancel:  [1, req_id]                               node -> worker
 *   reply:   [req_id, json, note | nil, cache_hit, shared, upstream, upstream_ms]
 *                                                      worker -> node
 *
 * The node's ids start at 1, so that 0 can mean "no id could be read" when a
 * frame is malformed. Nothing here touches a socket, so tests and the fuzzer
 * drive it on bytes. */
#ifndef HERD_PLACES_MSG_H
#define HERD_PLACES_MSG_H

#include <stddef.h>
#include <stdint.h>

#include "herd_places.h"
#include "herd_proto.h"

/* What the node asks of the worker. */
typedef enum {
    HERD_PLACES_MSG_REQUEST = 0, /* look up a place */
    HERD_PLACES_MSG_CANCEL = 1,  /* the node no longer wants that answer */
} herd_places_msg_kind_t;

/* A decoded node -> worker message. The spans point into the bytes given to
 * herd_places_msg_decode_to_worker and live as long as they do. */
typedef struct {
    herd_places_msg_kind_t kind;
    uint64_t req_id;       /* the node's id for the WHATSAT */
    herd_span_t lat, lng;  /* request: the stored position's halves, with their signs */
    herd_span_t radius_km; /* request: the WHATSAT radius text */
    uint32_t bound;        /* request: 1..20 */
} herd_places_msg_t;

/* Encodes a request or a cancel (for a cancel only kind and req_id are
 * read). Returns a malloc'd frame and sets *len, or NULL when out of memory. */
char *herd_places_msg_encode_to_worker(const herd_places_msg_t *m, size_t *len);

/* Decodes a node -> worker frame. Returns 0, or -1 when it is not one of the
 * two shapes; then *req_id_out (when not NULL) is the frame's id when one
 * could be read, else 0, so that the worker can still answer it. */
int herd_places_msg_decode_to_worker(const char *data, size_t len, herd_places_msg_t *out,
                                     uint64_t *req_id_out);

/* Encodes a reply (json and note are copied; note may be NULL). Returns a
 * malloc'd frame and sets *len, or NULL when out of memory. */
char *herd_places_msg_encode_reply(const herd_places_reply_t *r, size_t *len);

/* Decodes a reply frame into *out (json and note malloc'd, NUL-terminated;
 * free with herd_places_reply_free). Returns 0, or -1 when the frame is
 * malformed or memory ran out; then nothing is owned and out->req_id is the
 * frame's id when one could be read, else 0, so that the node can still
 * answer that WHATSAT. */
int herd_places_msg_decode_reply(const char *data, size_t len, herd_places_reply_t *out);

#endif
