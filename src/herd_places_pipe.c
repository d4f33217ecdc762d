/* herd_places_pipe: the node's side of the Places worker's pipe: sending
 * requests and cancels and taking replies without blocking. See
 * herd_places.h; the messages are herd_places_msg's, the worker's side is in
 * herd_places.c. One answer from the worker names every request it
 * answers; it is handed out here one request at a time, each with a
 * reference to the one body. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <czmq.h>

#include "herd_places.h"
#include "herd_places_msg.h"
#include "herd_places_worker.h"

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

int herd_places_reconfigure(herd_places_t *p, const herd_places_conf_t *conf)
{
    herd_places_msg_t m = {.kind = HERD_PLACES_MSG_CONFIG, .timeout_ms = conf->timeout_ms,
                           .cache_ttl_ms = conf->cache_ttl_ms, .max_in_flight = conf->max_in_flight,
                           .max_queued = conf->max_queued};
    return send_to_worker(p, &m);
}

/* Reads the next answer frame into p->inbox. Returns 1, 0 when none is
 * waiting, -1 when it is malformed (*first_id: its first id, or 0). */
static int next_answer(herd_places_t *p, uint64_t *first_id)
{
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
    if (!more && herd_places_msg_decode_answer(zmq_msg_data(&m), zmq_msg_size(&m), &p->inbox, first_id) == 0)
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

int herd_places_recv(herd_places_t *p, herd_places_reply_t *reply_out)
{
    memset(reply_out, 0, sizeof *reply_out);
    if (p->inbox_next >= p->inbox.n_ids) {
        herd_places_answer_free(&p->inbox);
        p->inbox_next = 0;
        int rc = next_answer(p, &reply_out->req_id);
        if (rc <= 0)
            return rc;
    }
    herd_places_answer_t *a = &p->inbox;
    size_t i = p->inbox_next++;
    reply_out->req_id = a->ids[i];
    if (a->note && !(reply_out->note = strdup(a->note)))
        return -1;
    reply_out->body = herd_places_body_ref(a->body);
    reply_out->json = reply_out->body->text;
    reply_out->json_len = reply_out->body->len;
    reply_out->cache_hit = a->cache_hit;
    reply_out->upstream = a->upstream && i == 0;
    reply_out->shared = a->shared && !reply_out->upstream;
    reply_out->refused = a->refused;
    reply_out->upstream_ms = a->upstream_ms;
    reply_out->group_index = i;
    reply_out->group_size = a->n_ids;
    if (p->inbox_next == a->n_ids) {
        /* The last one: the replies hold the only references now. */
        herd_places_answer_free(a);
        p->inbox_next = 0;
    }
    return 1;
}
