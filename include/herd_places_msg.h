/* herd_places_msg: the messages on the Places worker's pipe, one pure codec
 * used by both ends (herd_places_pipe.c, the node's; herd_places.c, the
 * worker's). Each message is one msgpack frame:
 *
 *   request: [0, req_id, lat, lng, radius_km, bound]   node -> worker
 *   cancel:  [1, req_id]                               node -> worker
 *   config:  [2, timeout_ms, cache_ttl_ms, max_in_flight, max_queued]
 *                                                      node -> worker
 *   answer:  [ids, json, note | nil, cache_hit, shared, upstream, upstream_ms, refused]
 *                                                      worker -> node
 *
 * An answer carries one JSON text for every request it names: ids is a
 * msgpack bin of 8-byte big-endian request ids, at least one. The requests
 * that share one upstream call and one bound get one answer, so the body
 * crosses the pipe once, not once per request; upstream says the first id
 * made the call, shared that the others (all of them when upstream is
 * false) joined it; refused that places.max_queued turned them away.
 *
 * The node's ids start at 1, so that 0 can mean "no id could be read" when a
 * frame is malformed. Nothing here touches a socket, so tests and the fuzzer
 * drive it on bytes. */
#ifndef HERD_PLACES_MSG_H
#define HERD_PLACES_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "herd_proto.h"

/* A JSON text shared by every request it answers: counted references, used
 * by one thread at a time (the node's). */
typedef struct herd_places_body_t {
    size_t refs;  /* references held */
    size_t len;   /* bytes of text */
    char text[];  /* the text, NUL-terminated */
} herd_places_body_t;

/* A new body holding a copy of text (one reference), or NULL when out of
 * memory. */
herd_places_body_t *herd_places_body_new(const char *text, size_t len);

/* One more reference to b; returns b. */
herd_places_body_t *herd_places_body_ref(herd_places_body_t *b);

/* Drops one reference (the last frees it); *b = NULL. NULL-safe. */
void herd_places_body_unref(herd_places_body_t **b);

/* One finished request, as handed back to the node. */
typedef struct {
    uint64_t req_id;  /* the id given to herd_places_request */
    herd_places_body_t *body; /* one reference to the JSON text; json points into it */
    const char *json; /* the JSON text to send (cut, newlines collapsed, no trailing newline) */
    size_t json_len;
    char *note;       /* NULL, or a log line saying what went wrong upstream (never the key); owned */
    bool cache_hit;   /* answered from the cache, no upstream call */
    bool shared;      /* answered by an upstream call another request had started */
    bool upstream;    /* this request made an upstream call */
    bool refused;     /* turned away at once: places.max_queued requests were waiting */
    double upstream_ms; /* duration of that upstream call, when upstream or shared */
    size_t group_index, group_size; /* this request is number group_index of group_size answered by
                                       the same body and note (log the note once, at index 0) */
} herd_places_reply_t;

/* Frees the owned parts of a reply (drops its body reference). */
void herd_places_reply_free(herd_places_reply_t *reply);

/* What the node asks of the worker. */
typedef enum {
    HERD_PLACES_MSG_REQUEST = 0, /* look up a place */
    HERD_PLACES_MSG_CANCEL = 1,  /* the node no longer wants that answer */
    HERD_PLACES_MSG_CONFIG = 2,  /* settings reloaded: use these from now on */
} herd_places_msg_kind_t;

/* A decoded node -> worker message. The spans point into the bytes given to
 * herd_places_msg_decode_to_worker and live as long as they do. */
typedef struct {
    herd_places_msg_kind_t kind;
    uint64_t req_id;       /* the node's id for the WHATSAT */
    herd_span_t lat, lng;  /* request: the stored position's halves, with their signs */
    herd_span_t radius_km; /* request: the WHATSAT radius text */
    uint32_t bound;        /* request: 1..20 */
    int64_t timeout_ms, cache_ttl_ms, max_in_flight, max_queued; /* config (herd_places_conf_t's meaning) */
} herd_places_msg_t;

/* A decoded or to-be-encoded worker -> node answer. */
typedef struct {
    uint64_t *ids;            /* the requests it answers, first one first (decode: malloc'd) */
    size_t n_ids;             /* at least one */
    herd_span_t json;         /* the JSON text (decode: points into body) */
    herd_places_body_t *body; /* decode: the text, NUL-terminated, one reference; encode: unused */
    char *note;               /* NULL, or what went wrong upstream (decode: malloc'd) */
    bool cache_hit, shared, upstream, refused;
    double upstream_ms;
} herd_places_answer_t;

/* Encodes a request, a cancel or a config (for a cancel only kind and
 * req_id are read; for a config only kind and the four settings). Returns a malloc'd frame and sets *len, or NULL when out of memory. */
char *herd_places_msg_encode_to_worker(const herd_places_msg_t *m, size_t *len);

/* Decodes a node -> worker frame. Returns 0, or -1 when it is not one of the
 * three shapes; then *req_id_out (when not NULL) is the frame's id when one
 * could be read, else 0, so that the worker can still answer it. */
int herd_places_msg_decode_to_worker(const char *data, size_t len, herd_places_msg_t *out,
                                     uint64_t *req_id_out);

/* Encodes an answer (json and note are copied; note may be NULL; n_ids at
 * least one). Returns a malloc'd frame and sets *len, or NULL when out of
 * memory or without an id. */
char *herd_places_msg_encode_answer(const herd_places_answer_t *a, size_t *len);

/* Decodes an answer frame into *out (ids and note malloc'd, the text in a
 * new body; free with herd_places_answer_free). Returns 0, or -1 when the
 * frame is malformed or memory ran out; then nothing is owned and
 * *first_id (when not NULL) is the frame's first id when one could be
 * read, else 0, so that the node can still answer that WHATSAT. */
int herd_places_msg_decode_answer(const char *data, size_t len, herd_places_answer_t *out, uint64_t *first_id);

/* Frees the owned parts of a decoded answer (its body reference too). */
void herd_places_answer_free(herd_places_answer_t *a);

#endif
