/* herd_places_pipe.h: the messages on the Places worker's pipe, private to
 * herd_places.c (the worker's side) and herd_places_pipe.c (the node's side).
 *
 *   request: [req_id, lat, lng, radius_km, bound]
 *   reply:   [req_id, json, note | nil, cache_hit, shared, upstream, upstream_ms] */
#ifndef HERD_PLACES_PIPE_H
#define HERD_PLACES_PIPE_H

#include <stddef.h>

#include <msgpack.h>

#define REQUEST_FIELDS 5
#define REPLY_FIELDS   7

static inline void pack_string(msgpack_packer *pk, const char *s, size_t len)
{
    msgpack_pack_str(pk, len);
    msgpack_pack_str_body(pk, s, len);
}

#endif
