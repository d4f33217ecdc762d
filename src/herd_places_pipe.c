/* herd_places_pipe: the node's side of the Places worker's pipe: sending
 * requests and cancels and taking replies without blocking. See
 * herd_places.h; the messages are herd_places_msg's, the worker's side is in
 * herd_places.c. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <czmq.h>

#include "herd_places.h"
#include "herd_places_msg.h"

/* Sends one node -> worker message without blocking. */
static int send_to_worker(herd_places_t *p, const herd_places_msg_t *m)
{
    size_t len = 0;
    char *frame = herd_places_msg_encode_to_worker(m, &len);
    if (!frame)
        return -1;
    int rc = zmq_send(zsock_resolve(herd_places_sock(p)), frame, len, ZMQ_DONTWAIT) < 0 ? -1 : 0;
    free(frame);
    return rc;
}

int herd_places_request(herd_places_t *p, uint64_t req_id, herd_span_t lat, herd_span_t lng,
                        herd_span_t radius_km, uint32_t bound)
{
    herd_places_msg_t m = {.kind = HERD_PLACES_MSG_REQUEST, .req_id = req_id, .lat = lat, .lng = lng,
                           .radius_km = radius_km, .bound = bound};
    return send_to_worker(p, &m);
}

int herd_places_cancel(herd_places_t *p, uint64_t req_id)
{
    herd_places_msg_t m = {.kind = HERD_PLACES_MSG_CANCEL, .req_id = req_id};
    return send_to_worker(p, &m);
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
    if (!more && herd_places_msg_decode_reply(zmq_msg_data(&m), zmq_msg_size(&m), reply_out) == 0)
        rc = 1;
    while (more) { /* not one of ours: skip the rest of it */
        zmq_msg_close(&m);
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, raw, ZMQ_DONTWAIT) < 0)
            break;
        more = zmq_msg_more(&m);
    }
    zmq_msg_close(&m);
    return rc;
}
