/* herd_node_places: WHATSATs on the node's side: the pending list and its
 * deadlines, the Places worker's replies, cancels for clients that left.
 * See herd_node_int.h.
 *
 * A WHATSAT is pending from the moment it is sent to the worker until its
 * answer is handed to its front end. It is in the per-connection index all
 * that time (a closing connection finds its own at once); while waiting on
 * the worker it is in the request-id buckets and the arrival list (its
 * deadline is its arrival plus places.timeout_ms in force, so a reload
 * moves every deadline alike and the list stays in deadline order); once
 * answered it holds a reference to the answer's body, shared with every
 * other WHATSAT that answer is for, in the ready list, which
 * node_places_deliver empties a bounded batch per turn. */
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

/* The per-connection index key of (fe, conn). */
static void conn_key(uint32_t fe, uint64_t conn, char *buf, size_t cap)
{
    snprintf(buf, cap, "%" PRIx32 ":%" PRIx64, fe, conn);
}

/* Adds p to its connection's list. Returns -1 when out of memory. */
static int conn_link(herd_node_t *node, pending_t *p)
{
    char k[32];
    conn_key(p->fe, p->ticket.conn, k, sizeof k);
    pending_t *head = zhashx_lookup(node->pending_conns, k);
    p->cprev = NULL;
    p->cnext = head;
    if (!head)
        return zhashx_insert(node->pending_conns, k, p) == 0 ? 0 : -1;
    head->cprev = p;
    zhashx_update(node->pending_conns, k, p);
    return 0;
}

/* Takes p out of its connection's list. */
static void conn_unlink(herd_node_t *node, pending_t *p)
{
    if (p->cnext)
        p->cnext->cprev = p->cprev;
    if (p->cprev)
        p->cprev->cnext = p->cnext;
    else {
        char k[32];
        conn_key(p->fe, p->ticket.conn, k, sizeof k);
        if (p->cnext)
            zhashx_update(node->pending_conns, k, p->cnext);
        else
            zhashx_delete(node->pending_conns, k);
    }
    p->cprev = p->cnext = NULL;
}

/* Takes p out of list l. */
static void list_unlink(pending_list_t *l, pending_t *p)
{
    if (p->older)
        p->older->newer = p->newer;
    else
        l->head = p->newer;
    if (p->newer)
        p->newer->older = p->older;
    else
        l->tail = p->older;
    p->older = p->newer = NULL;
}

/* Puts p at the newest end of list l, or (front) back at its oldest end. */
static void list_push(pending_list_t *l, pending_t *p, bool front)
{
    p->older = front ? NULL : l->tail;
    p->newer = front ? l->head : NULL;
    if (p->older)
        p->older->newer = p;
    else
        l->head = p;
    if (p->newer)
        p->newer->older = p;
    else
        l->tail = p;
}

/* Takes a WHATSAT waiting on the worker out of the buckets and the arrival
 * list (it stays in its connection's list). */
static void waiting_unlink(herd_node_t *node, pending_t *p)
{
    pending_t **b = &node->pending[p->req_id % PENDING_BUCKETS];
    while (*b != p)
        b = &(*b)->next;
    *b = p->next;
    p->next = NULL;
    list_unlink(&node->waiting, p);
}

/* Frees a pending WHATSAT that is in no list any more. */
static void pending_free(herd_node_t *node, pending_t *p)
{
    node->n_pending--;
    herd_places_body_unref(&p->body);
    free(p);
}

/* The pending WHATSAT waiting on the worker with that request id, or NULL. */
static pending_t *pending_find(herd_node_t *node, uint64_t req_id)
{
    pending_t *p = node->pending[req_id % PENDING_BUCKETS];
    while (p && p->req_id != req_id)
        p = p->next;
    return p;
}

/* After a send to the worker: the loop looks at its pipe again (the send
 * may have taken the wake-up of a reply). */
static void places_sent(herd_node_t *node)
{
    herd_loop_zmq_sent(node->loop, herd_places_sock(node->places));
}

/* Gives up a pending WHATSAT whose connection is gone: the worker is told
 * to drop it when it still waits there (and to stop its upstream call when
 * nobody else waits), the front end frees its slot, and it is freed. */
static void pending_drop(herd_node_t *node, pending_t *p)
{
    conn_unlink(node, p);
    if (p->body)
        list_unlink(&node->ready, p);
    else {
        waiting_unlink(node, p);
        int rc = herd_places_cancel(node->places, p->req_id);
        places_sent(node);
        if (rc != 0)
            herd_log_event(node->log, "places: could not cancel request %llu (the worker's pipe is full)",
                           (unsigned long long)p->req_id);
    }
    herd_msg_item_t it = {.kind = HERD_MSG_WHATSAT, .conn = p->ticket.conn, .seq = p->ticket.seq,
                          .handle = p->handle, .outcome = HERD_MSG_DROPPED};
    node_to_fe(node, p->fe, &it);
    pending_free(node, p);
}

/* The node's own deadline for a WHATSAT that came at arrival_ms. */
static int64_t deadline_of(const herd_node_t *node, int64_t arrival_ms)
{
    return arrival_ms + node->topo->places_timeout_ms + PLACES_MARGIN_MS;
}

/* Answers every WHATSAT past its deadline with an error object. */
void node_pending_sweep(herd_loop_t *loop, void *arg)
{
    herd_node_t *node = arg;
    int64_t now = herd_loop_now_ms(loop);
    if (node->places_reconf)
        node_places_reload(node);
    herd_log_limited_flush(node->log, &node->refuse_limit);
    while (node->waiting.head && now >= deadline_of(node, node->waiting.head->arrival_ms)) {
        pending_t *p = node->waiting.head;
        char msg[96];
        snprintf(msg, sizeof msg, "the Places request was not answered within %ld ms",
                 node->topo->places_timeout_ms + PLACES_MARGIN_MS);
        herd_log_event(node->log, "places: request %llu: %s", (unsigned long long)p->req_id, msg);
        node->n.places_deadline++;
        waiting_unlink(node, p);
        conn_unlink(node, p);
        herd_places_cancel(node->places, p->req_id);
        places_sent(node);
        answer_places_error(node, p, msg);
        pending_free(node, p);
    }
}

/* A front end closed a connection: it no longer counts against
 * max_clients, and when it was owed answers its WHATSATs are given up, so
 * that no upstream call runs for nobody. Only that connection's own are
 * looked at. */
void node_on_closed(herd_node_t *node, uint32_t fe, uint64_t conn, bool owed)
{
    herd_frontend_released(node->frontend, conn);
    if (node->fes[fe].conns)
        node->fes[fe].conns--;
    if (!owed)
        return;
    char k[32];
    conn_key(fe, conn, k, sizeof k);
    pending_t *p;
    while ((p = zhashx_lookup(node->pending_conns, k)) != NULL) {
        node->n.places_client_gone++;
        pending_drop(node, p);
    }
}

/* Hands an answered WHATSAT (out of every list but its connection's) to
 * its front end's batch of this turn, unless that batch is full. Returns
 * whether it went (and was freed). */
static bool deliver_one(herd_node_t *node, pending_t *p)
{
    if (p->fe < node->n_fes) {
        const herd_msg_buf_t *out = &node->fes[p->fe].out;
        if (out->items && out->len + p->at_len + p->body->len > PLACES_BATCH_BYTES)
            return false;
        answer_whatsat(node, p->fe, p->ticket, p->handle, p->at, p->at_len, p->body->text, p->body->len);
    }
    conn_unlink(node, p);
    pending_free(node, p);
    return true;
}

/* Hands ready answers to the front ends, oldest first, until a front end's
 * batch for this turn is full; the rest go in the next turns. */
void node_places_deliver(herd_node_t *node)
{
    while (node->ready.head) {
        pending_t *p = node->ready.head;
        list_unlink(&node->ready, p);
        if (!deliver_one(node, p)) {
            list_push(&node->ready, p, true);
            herd_loop_again(node->loop);
            return;
        }
    }
}

int node_places_init(herd_node_t *node)
{
    node->refuse_limit = HERD_LOG_LIMIT_INIT("refused WHATSATs");
    node->pending_conns = zhashx_new();
    return node->pending_conns ? 0 : -1;
}

void node_places_reload(herd_node_t *node)
{
    const herd_topology_t *t = node->topo;
    herd_places_conf_t pc = {.timeout_ms = t->places_timeout_ms, .cache_ttl_ms = t->places_cache_ttl_ms,
                             .max_in_flight = t->places_max_in_flight, .max_queued = t->places_max_queued};
    bool again = node->places_reconf;
    node->places_reconf = herd_places_reconfigure(node->places, &pc) != 0;
    places_sent(node);
    /* A full pipe is retried at every deadline sweep, so the worker runs
     * what the node runs as soon as it can take it. */
    if (node->places_reconf && !again)
        herd_log_event(node->log, "reload: the Places worker's pipe is full; its new settings follow once it "
                                  "has room");
    else if (!node->places_reconf && again)
        herd_log_event(node->log, "reload: the Places worker has its new settings");
}

void node_places_free(herd_node_t *node)
{
    while (node->waiting.head) {
        pending_t *p = node->waiting.head;
        waiting_unlink(node, p);
        pending_free(node, p);
    }
    while (node->ready.head) {
        pending_t *p = node->ready.head;
        list_unlink(&node->ready, p);
        pending_free(node, p);
    }
    zhashx_destroy(&node->pending_conns);
}

int64_t node_places_deadline(const herd_node_t *node)
{
    int64_t until = 0;
    if (node->waiting.tail)
        until = deadline_of(node, node->waiting.tail->arrival_ms) + PENDING_SWEEP_MS;
    if (node->ready.head && until < herd_loop_now_ms(node->loop) + PENDING_SWEEP_MS)
        until = herd_loop_now_ms(node->loop) + PENDING_SWEEP_MS;
    return until;
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
    pending_t *p = calloc(1, sizeof *p + rec->at_len);
    uint64_t req_id = ++node->next_req_id;
    if (p) {
        p->fe = fe;
        p->ticket = t;
    }
    if (!p || conn_link(node, p) != 0) {
        herd_log_event(node->log, "places: request %llu could not be queued (out of memory)",
                       (unsigned long long)req_id);
        answer_whatsat(node, fe, t, it->handle, rec->at, rec->at_len, OOM_ERROR_JSON, strlen(OOM_ERROR_JSON));
        free(p);
        return;
    }
    p->req_id = req_id;
    p->handle = it->handle;
    p->arrival_ms = herd_loop_now_ms(node->loop);
    p->at_len = rec->at_len;
    memcpy(p->at, rec->at, rec->at_len);
    node->n_pending++;
    int sent = herd_places_request(node->places, req_id, lat, lng, it->radius, it->bound);
    places_sent(node);
    if (sent != 0) {
        /* The worker's pipe is full: it holds more than the bounds let
         * wait, so this one would be refused there too. */
        node->n.places_refused_worker++;
        /* A client can make thousands a second; each is counted in /metrics. */
        herd_log_limited(node->log, &node->refuse_limit,
                         "places: request %llu could not be queued (the worker's pipe is full)",
                         (unsigned long long)req_id);
        conn_unlink(node, p);
        answer_places_error(node, p, "the Places worker could not take the request");
        pending_free(node, p);
        return;
    }
    pending_t **b = &node->pending[req_id % PENDING_BUCKETS];
    p->next = *b;
    *b = p;
    list_push(&node->waiting, p, false);
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

/* Logs what a reply's note says, once for the requests it answers; a
 * refusal (which a client can make thousands of a second) within the
 * refusals' rate. */
static void log_note(herd_node_t *node, const herd_places_reply_t *r)
{
    char more[48] = "";
    if (r->group_size > 1)
        snprintf(more, sizeof more, " and %zu more", r->group_size - 1);
    const char *s = r->group_size > 1 ? "s" : "";
    if (r->refused)
        herd_log_limited(node->log, &node->refuse_limit, "places: request%s %llu%s: %s", s,
                         (unsigned long long)r->req_id, more, r->note);
    else
        herd_log_event(node->log, "places: request%s %llu%s: %s", s, (unsigned long long)r->req_id, more, r->note);
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
                waiting_unlink(node, p);
                conn_unlink(node, p);
                node->n.places_errors++;
                answer_places_error(node, p, "the Places worker's reply could not be read");
                pending_free(node, p);
            }
            continue;
        }
        pending_t *p = pending_find(node, reply.req_id);
        count_places(node, &reply);
        if (reply.refused)
            node->n.places_refused_queued++;
        if (reply.note && reply.group_index == 0)
            log_note(node, &reply);
        if (p) {
            /* Its turn comes in node_places_deliver, with the body shared. */
            /* It goes now when its front end's batch has room and none
             * is ahead of it, else in node_places_deliver's turn. */
            waiting_unlink(node, p);
            p->body = reply.body;
            reply.body = NULL;
            if (node->ready.head || !deliver_one(node, p))
                list_push(&node->ready, p, false);
        }
        herd_places_reply_free(&reply);
    }
}

