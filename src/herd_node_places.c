/* herd_node_places: WHATSATs on the node's side: the pending list and its
 * deadlines, the Places worker's replies, cancels for clients that left.
 * See herd_node_int.h. */
#include "herd_node_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Answers a WHATSAT with the AT line and the Places JSON. */
static void answer_whatsat(herd_node_t *node, uint32_t fe, herd_ticket_t t, uint32_t handle, const char *at,
                           size_t at_len, const char *json, size_t json_len)
{
    herd_msg_item_t it = {.kind = HERD_MSG_WHATSAT, .conn = t.conn, .seq = t.seq, .handle = handle,
                          .outcome = HERD_MSG_ANSWERED, .at = {at, at_len}, .json = {json, json_len}};
    node_to_fe(node, fe, &it);
}

/* The error object used when even the error object cannot be made. */
static const char OOM_ERROR_JSON[] = "{\"html_attributions\": [], \"results\": [], \"status\": \"UNKNOWN_ERROR\", "
                                     "\"error_message\": \"out of memory\"}";

/* Answers a WHATSAT with an UNKNOWN_ERROR object saying `message`. */
static void answer_places_error(herd_node_t *node, const pending_t *p, const char *message)
{
    char *err = herd_places_error_json("UNKNOWN_ERROR", message);
    answer_whatsat(node, p->fe, p->ticket, p->handle, p->at, p->at_len, err ? err : OOM_ERROR_JSON,
                   err ? strlen(err) : strlen(OOM_ERROR_JSON));
    free(err);
}

/* Takes a pending WHATSAT out of both lists. */
static void pending_unlink(herd_node_t *node, pending_t *p)
{
    pending_t **b = &node->pending[p->req_id % PENDING_BUCKETS];
    while (*b != p)
        b = &(*b)->next;
    *b = p->next;
    if (p->older)
        p->older->newer = p->newer;
    else
        node->oldest = p->newer;
    if (p->newer)
        p->newer->older = p->older;
    else
        node->newest = p->older;
    node->n_pending--;
}

/* The pending WHATSAT with that request id, or NULL. */
static pending_t *pending_find(herd_node_t *node, uint64_t req_id)
{
    pending_t *p = node->pending[req_id % PENDING_BUCKETS];
    while (p && p->req_id != req_id)
        p = p->next;
    return p;
}

/* Gives up a pending WHATSAT: the worker is told to drop it (and to stop
 * its upstream call when nobody else waits), the front end frees its slot,
 * and it is freed. */
static void pending_drop(herd_node_t *node, pending_t *p)
{
    pending_unlink(node, p);
    if (herd_places_cancel(node->places, p->req_id) != 0)
        herd_log_event(node->log, "places: could not cancel request %llu (the worker's pipe is full)",
                       (unsigned long long)p->req_id);
    herd_msg_item_t it = {.kind = HERD_MSG_WHATSAT, .conn = p->ticket.conn, .seq = p->ticket.seq,
                          .handle = p->handle, .outcome = HERD_MSG_DROPPED};
    node_to_fe(node, p->fe, &it);
    free(p);
}

/* Answers every WHATSAT past its deadline with an error object. */
void node_pending_sweep(herd_loop_t *loop, void *arg)
{
    herd_node_t *node = arg;
    int64_t now = herd_loop_now_ms(loop);
    while (node->oldest && now >= node->oldest->deadline_ms) {
        pending_t *p = node->oldest;
        char msg[96];
        snprintf(msg, sizeof msg, "the Places request was not answered within %ld ms",
                 node->topo->places_timeout_ms + PLACES_MARGIN_MS);
        herd_log_event(node->log, "places: request %llu: %s", (unsigned long long)p->req_id, msg);
        node->n.places_deadline++;
        pending_unlink(node, p);
        herd_places_cancel(node->places, p->req_id);
        answer_places_error(node, p, msg);
        free(p);
    }
}

/* A front end closed a connection: it no longer counts against
 * max_clients, and when it was owed answers its WHATSATs are given up, so
 * that no upstream call runs for nobody. */
void node_on_closed(herd_node_t *node, uint32_t fe, uint64_t conn, bool owed)
{
    herd_frontend_released(node->frontend, conn);
    if (node->fes[fe].conns)
        node->fes[fe].conns--;
    if (!owed)
        return;
    pending_t *p = node->oldest;
    while (p) {
        pending_t *next = p->newer;
        if (p->ticket.conn == conn && p->fe == fe) {
            node->n.places_client_gone++;
            pending_drop(node, p);
        }
        p = next;
    }
}

void node_do_whatsat(herd_node_t *node, uint32_t fe, const herd_msg_item_t *it)
{
    herd_ticket_t t = {it->conn, it->seq};
    const herd_record_t *rec = herd_table_find(node->table, it->id.p, it->id.len);
    herd_span_t lat, lng;
    if (!rec || herd_proto_parse_position((herd_span_t){rec->at + rec->pos_off, rec->pos_len}, &lat, &lng) != 0) {
        /* (A stored position always parses: it was validated.) */
        node->n.whatsat_unknown++;
        node->n.invalid++;
        herd_msg_item_t a = {.kind = HERD_MSG_WHATSAT, .conn = t.conn, .seq = t.seq, .handle = it->handle,
                             .outcome = HERD_MSG_UNKNOWN};
        node_to_fe(node, fe, &a);
        return;
    }
    node->n.whatsat_answered++;
    pending_t *p = malloc(sizeof *p + rec->at_len);
    uint64_t req_id = ++node->next_req_id;
    if (!p || herd_places_request(node->places, req_id, lat, lng, it->radius, it->bound) != 0) {
        herd_log_event(node->log, "places: request %llu could not be queued%s", (unsigned long long)req_id,
                       p ? "" : " (out of memory)");
        pending_t tmp = {.ticket = t, .fe = fe, .handle = it->handle};
        char *err = herd_places_error_json("UNKNOWN_ERROR", "the Places worker could not take the request");
        answer_whatsat(node, tmp.fe, t, tmp.handle, rec->at, rec->at_len, err ? err : OOM_ERROR_JSON,
                       err ? strlen(err) : strlen(OOM_ERROR_JSON));
        free(err);
        free(p);
        return;
    }
    p->req_id = req_id;
    p->ticket = t;
    p->fe = fe;
    p->handle = it->handle;
    p->deadline_ms = herd_loop_now_ms(node->loop) + node->topo->places_timeout_ms + PLACES_MARGIN_MS;
    p->at_len = rec->at_len;
    memcpy(p->at, rec->at, rec->at_len);
    pending_t **b = &node->pending[req_id % PENDING_BUCKETS];
    p->next = *b;
    *b = p;
    p->newer = NULL;
    p->older = node->newest;
    if (node->newest)
        node->newest->newer = p;
    else
        node->oldest = p;
    node->newest = p;
    node->n_pending++;
}

/* Counts one finished Places request in exactly one result of
 * herd_places_requests_total (a partition: an upstream call that failed is
 * an error, not also an upstream answer). */
static void count_places(herd_node_t *node, const herd_places_reply_t *r)
{
    if (r->note)
        node->n.places_errors++;
    else if (r->cache_hit)
        node->n.places_cache_hits++;
    else if (r->shared)
        node->n.places_shared++;
    else if (r->upstream)
        node->n.places_upstream++;
    if (r->upstream && !r->cache_hit) {
        double s = r->upstream_ms / 1000.0;
        size_t b = 0;
        while (b < N_LATENCY && s > node_latency_bounds[b])
            b++;
        if (b < N_LATENCY)
            node->n.latency_buckets[b]++;
        node->n.latency_count++;
        node->n.latency_sum += s;
    }
}

/* Replies from the Places worker. */
void node_places_ready(herd_loop_t *loop, void *arg)
{
    (void)loop;
    herd_node_t *node = arg;
    for (;;) {
        herd_places_reply_t reply;
        int rc = herd_places_recv(node->places, &reply);
        if (rc == 0)
            break;
        if (rc < 0) {
            /* Undecodable, or no memory to hold it: its WHATSAT (when the id
             * could be read) is answered now, else by its deadline. */
            pending_t *p = reply.req_id ? pending_find(node, reply.req_id) : NULL;
            herd_log_event(node->log, "places: dropped a malformed message from the worker%s",
                           p ? ", answering its request with an error" : "");
            if (p) {
                pending_unlink(node, p);
                node->n.places_errors++;
                answer_places_error(node, p, "the Places worker's reply could not be read");
                free(p);
            }
            continue;
        }
        pending_t *p = pending_find(node, reply.req_id);
        count_places(node, &reply);
        if (reply.note)
            herd_log_event(node->log, "places: request %llu: %s", (unsigned long long)reply.req_id, reply.note);
        if (p) {
            pending_unlink(node, p);
            answer_whatsat(node, p->fe, p->ticket, p->handle, p->at, p->at_len, reply.json, reply.json_len);
            free(p);
        }
        herd_places_reply_free(&reply);
    }
}

