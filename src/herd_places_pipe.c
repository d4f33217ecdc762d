/* herd_places_pipe: the node's side of the Places worker's pipe: encoding
 * requests and decoding replies without blocking. See herd_places.h; the
 * worker's side is in herd_places.c. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <czmq.h>

#include "herd_places.h"
#include "herd_places_pipe.h"

int herd_places_request(herd_places_t *p, uint64_t req_id, herd_span_t lat, herd_span_t lng,
                        herd_span_t radius_km, uint32_t bound)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, REQUEST_FIELDS);
    msgpack_pack_uint64(&pk, req_id);
    pack_string(&pk, lat.p ? lat.p : "", lat.len);
    pack_string(&pk, lng.p ? lng.p : "", lng.len);
    pack_string(&pk, radius_km.p ? radius_km.p : "", radius_km.len);
    msgpack_pack_uint32(&pk, bound);
    int rc = -1;
    if (sb.data)
        rc = zmq_send(zsock_resolve(herd_places_sock(p)), sb.data, sb.size, ZMQ_DONTWAIT) < 0 ? -1 : 0;
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

static char *dup_bytes(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        if (n)
            memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

int herd_places_recv(herd_places_t *p, herd_places_reply_t *reply_out)
{
    memset(reply_out, 0, sizeof *reply_out);
    void *raw = zsock_resolve(herd_places_sock(p));
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, raw, ZMQ_DONTWAIT) < 0) {
        int e = errno;
        zmq_msg_close(&m);
        return (e == EAGAIN || e == EINTR) ? 0 : -1;
    }
    int rc = -1;
    bool more = zmq_msg_more(&m);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0, len = zmq_msg_size(&m);
    if (!more && msgpack_unpack_next(&u, zmq_msg_data(&m), len, &off) == MSGPACK_UNPACK_SUCCESS && off == len &&
        u.data.type == MSGPACK_OBJECT_ARRAY && u.data.via.array.size == REPLY_FIELDS) {
        const msgpack_object *a = u.data.via.array.ptr;
        bool shape = a[0].type == MSGPACK_OBJECT_POSITIVE_INTEGER && a[1].type == MSGPACK_OBJECT_STR &&
                     (a[2].type == MSGPACK_OBJECT_STR || a[2].type == MSGPACK_OBJECT_NIL) &&
                     a[3].type == MSGPACK_OBJECT_BOOLEAN && a[4].type == MSGPACK_OBJECT_BOOLEAN &&
                     a[5].type == MSGPACK_OBJECT_BOOLEAN &&
                     (a[6].type == MSGPACK_OBJECT_FLOAT64 || a[6].type == MSGPACK_OBJECT_FLOAT32);
        if (shape) {
            reply_out->req_id = a[0].via.u64;
            reply_out->json = dup_bytes(a[1].via.str.ptr, a[1].via.str.size);
            reply_out->json_len = a[1].via.str.size;
            if (a[2].type == MSGPACK_OBJECT_STR)
                reply_out->note = dup_bytes(a[2].via.str.ptr, a[2].via.str.size);
            reply_out->cache_hit = a[3].via.boolean;
            reply_out->shared = a[4].via.boolean;
            reply_out->upstream = a[5].via.boolean;
            reply_out->upstream_ms = a[6].via.f64;
            if (reply_out->json && (a[2].type == MSGPACK_OBJECT_NIL || reply_out->note))
                rc = 1;
            else
                herd_places_reply_free(reply_out);
        }
    }
    msgpack_unpacked_destroy(&u);
    while (more) {
        zmq_msg_close(&m);
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, raw, ZMQ_DONTWAIT) < 0)
            break;
        more = zmq_msg_more(&m);
    }
    zmq_msg_close(&m);
    return rc;
}

void herd_places_reply_free(herd_places_reply_t *r)
{
    if (!r)
        return;
    free(r->json);
    free(r->note);
    r->json = NULL;
    r->note = NULL;
    r->json_len = 0;
}
