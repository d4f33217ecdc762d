/* herd_node: the table, Places answers and flooding, and the front-end
 * threads' commands as herd_msg batches. See herd_node.h. */
#define _GNU_SOURCE /* open_memstream */
#include "herd_node.h"

#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "herd_admin.h"
#include "herd_fethread.h"
#include "herd_frontend.h"
#include "herd_journal.h"
#include "herd_links.h"
#include "herd_msg.h"
#include "herd_places.h"
#include "herd_proto.h"
#include "herd_table.h"

#define PENDING_BUCKETS 1024 /* WHATSATs waiting on the Places worker, hashed by request id */
#define HEALTH_TICK_MS 100    /* how often readiness is looked at, so a brief exchange is not missed */
/* A WHATSAT is answered by places.timeout_ms plus this margin even if the
 * worker never answers (a reply lost, a request queued too long): every
 * ticket is answered, and a client is never owed an answer for ever. */
#define PLACES_MARGIN_MS 1000
#define PENDING_SWEEP_MS 100 /* how often the deadlines are looked at */
#define MAX_DEFAULT_FE 4     /* the default front-end threads: min(4, cores - 1), at least 1 */

/* Upper bounds (seconds) of the Places upstream latency histogram. */
static const double latency_bounds[] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
#define N_LATENCY (sizeof latency_bounds / sizeof latency_bounds[0])

/* What the node counts, for /metrics. Only the reactor thread touches it. */
typedef struct {
    uint64_t iamat_stored, iamat_not_newer;        /* IAMATs by outcome */
    uint64_t iamat_refused;                        /* IAMATs answered '?' because they cannot be held */
    uint64_t peer_refused;                         /* updates from neighbours outside the bounds */
    uint64_t whatsat_answered, whatsat_unknown;    /* WHATSATs by outcome */
    uint64_t invalid;                              /* lines answered with "?" (here and in the front ends) */
    uint64_t peer_stored, peer_duplicates;         /* updates from neighbours: stored / not newer */
    uint64_t peer_invalid;                         /* AT lines from neighbours that did not parse */
    uint64_t places_upstream, places_shared, places_cache_hits, places_errors;
    uint64_t places_deadline, places_client_gone;  /* WHATSATs given up: by the node's deadline, client gone */
    uint64_t latency_buckets[N_LATENCY];           /* upstream calls per latency bucket (not cumulative) */
    uint64_t latency_count;                        /* upstream calls timed */
    double latency_sum;                            /* their total seconds */
} counters_t;

/* A WHATSAT waiting for its Places reply. */
typedef struct pending_t {
    struct pending_t *next; /* next in the bucket */
    struct pending_t *older, *newer; /* arrival order, which is deadline order */
    uint64_t req_id;        /* the id given to the worker */
    herd_ticket_t ticket;   /* the line to answer */
    uint32_t fe;            /* the front-end thread it came from */
    uint32_t handle;        /* that front end's slot for it */
    int64_t deadline_ms;    /* when the node answers it itself (herd_loop_now_ms) */
    size_t at_len;          /* bytes of the AT line */
    char at[];              /* the AT line the query was made from */
} pending_t;

struct herd_node_t;

/* One front-end thread, as the node sees it. */
typedef struct {
    struct herd_node_t *node;
    uint32_t index;          /* its number */
    herd_fethread_t *thread; /* the thread */
    herd_msg_buf_t out;      /* this turn's answers and orders for it */
    size_t conns;            /* connections handed to it and not yet closed */
    uint64_t drain;          /* what it last said while draining: 0 unknown, busy + 1 */
} fe_t;

/* What the journal holds for an IAMAT reply waiting on its group commit. */
typedef struct {
    uint32_t fe, handle;
} held_reply_t;

struct herd_node_t {
    herd_loop_t *loop;
    herd_log_t *log;
    const herd_topology_t *topo;  /* the topology in force (owned by main) */
    char *name;                   /* our server name */
    size_t name_len;
    herd_table_t *table;          /* client id -> newest location */
    herd_frontend_t *frontend;    /* the acceptor: the client port, max_clients, refusals */
    fe_t *fes;                    /* the front-end threads */
    size_t n_fes;
    int fe_tick;                  /* tick id of send_answers */
    herd_places_t *places;        /* the Places worker */
    herd_links_t *links;          /* the neighbours */
    herd_admin_t *admin;          /* /metrics, /healthz, /config, or NULL without admin_port */
    int health_timer;             /* timer id of health_tick, or 0 */
    int64_t start_ms;             /* when the node was made: the wait for a neighbour starts here */
    long ready_wait_ms;           /* how long to wait for a first exchange before ready anyway */
    bool ready;                   /* latched: ready once, ready until stopped */
    bool draining;                /* SIGTERM seen: /healthz says draining */
    char ready_reason[96];        /* why it is ready (or what it waits for) */
    herd_journal_t *journal;      /* the table on disk, or NULL without state_dir */
    int journal_tick;             /* tick id of the per-turn group commit */
    int64_t log_window_ms;        /* start of the second that log_budget counts */
    unsigned log_lines;           /* dropped-record lines logged in it */
    uint64_t log_suppressed;      /* ... and not logged */
    counters_t n;                 /* counters for /metrics */
    pending_t *pending[PENDING_BUCKETS];
    pending_t *oldest, *newest;   /* every pending WHATSAT, oldest first */
    size_t n_pending;
    int pending_timer;            /* timer id of the deadline sweep */
    uint64_t next_req_id;
    int expire_timer;             /* drops records past limits.record_ttl_s */
};

/* Queues an answer (or order) for front end `fe`; it goes out at the end of
 * the turn, after the links' flush (flood before reply, PROTOCOL §7). */
static void to_fe(herd_node_t *node, uint32_t fe, const herd_msg_item_t *it)
{
    if (fe < node->n_fes)
        herd_msg_put(&node->fes[fe].out, HERD_MSG_TO_FE, it);
}

/* Answers a WHATSAT with the AT line and the Places JSON. */
static void answer_whatsat(herd_node_t *node, uint32_t fe, herd_ticket_t t, uint32_t handle, const char *at,
                           size_t at_len, const char *json, size_t json_len)
{
    herd_msg_item_t it = {.kind = HERD_MSG_WHATSAT, .conn = t.conn, .seq = t.seq, .handle = handle,
                          .outcome = HERD_MSG_ANSWERED, .at = {at, at_len}, .json = {json, json_len}};
    to_fe(node, fe, &it);
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
    to_fe(node, p->fe, &it);
    free(p);
}

/* Answers every WHATSAT past its deadline with an error object. */
static void pending_sweep(herd_loop_t *loop, void *arg)
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
static void on_closed(herd_node_t *node, uint32_t fe, uint64_t conn, bool owed)
{
    herd_frontend_released(node->frontend);
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

/* Offers an AT line to the table; floods it when stored and `flood`. `from`
 * is the link it came from, or -1 for our own client. */
static herd_update_t store(herd_node_t *node, const herd_at_t *at, const char *line, size_t len, long from,
                           bool flood)
{
    herd_update_t u = herd_table_update(node->table, at->id.p, at->id.len, at->time, line, len,
                                        (size_t)(at->pos.p - line), at->pos.len, NULL);
    if (u == HERD_UPDATE_NEWER && node->journal)
        herd_journal_append(node->journal, line, len);
    if (u == HERD_UPDATE_NEWER && flood)
        herd_links_flood(node->links, line, len, from, at->server);
    else if (u == HERD_UPDATE_ERROR)
        herd_log_event(node->log, "could not store a location: out of memory");
    return u;
}

/* Whether a client time lies more than `slack` seconds past the allowed
 * future (limits.max_future_s) of our clock. */
static bool too_far_ahead(const herd_node_t *node, herd_time_t t, herd_time_t now, int64_t slack)
{
    return t.sec > now.sec + node->topo->max_future_s + slack ||
           (t.sec == now.sec + node->topo->max_future_s + slack && t.nsec > now.nsec);
}

/* Whether the record held for this client is a report of the same time and
 * position made by this server. */
static bool same_report(const herd_node_t *node, const herd_at_t *at)
{
    const herd_record_t *rec = herd_table_find(node->table, at->id.p, at->id.len);
    return rec && herd_time_cmp(rec->time, at->time) == 0 && rec->origin_len == node->name_len &&
           !memcmp(rec->at + 3, node->name, node->name_len) && rec->pos_len == at->pos.len &&
           !memcmp(rec->at + rec->pos_off, at->pos.p, at->pos.len);
}

/* An IAMAT from front end `fe`, its AT line made there; `now` is read once
 * per batch. */
static void do_iamat(herd_node_t *node, uint32_t fe, const herd_msg_item_t *it, herd_time_t now)
{
    herd_msg_item_t a = {.kind = HERD_MSG_IAMAT, .conn = it->conn, .seq = it->seq, .handle = it->handle};
    herd_at_t at = {.id = {it->at.p + it->id_off, it->id_len}, .pos = {it->at.p + it->pos_off, it->pos_len},
                    .time = it->time, .server = {node->name, node->name_len}};
    if (too_far_ahead(node, it->time, now, 0)) {
        node->n.iamat_refused++;
        node->n.invalid++;
        a.outcome = HERD_MSG_REFUSED;
    } else if (same_report(node, &at)) {
        /* The same time, origin and position as the record held: it does
         * not rank above it (PROTOCOL section 3), though its AT line (a new
         * skew) would win the table's last tie-break on the line's bytes. */
        node->n.iamat_not_newer++;
        a.outcome = HERD_MSG_NOT_NEWER;
    } else {
        switch (store(node, &at, it->at.p, it->at.len, -1, true)) {
        case HERD_UPDATE_NEWER:
            node->n.iamat_stored++;
            a.outcome = HERD_MSG_STORED;
            break;
        case HERD_UPDATE_SAME:
        case HERD_UPDATE_OLDER:
            node->n.iamat_not_newer++;
            a.outcome = HERD_MSG_NOT_NEWER;
            break;
        case HERD_UPDATE_REFUSED:
        case HERD_UPDATE_ERROR:
        default:
            /* Not held (expired, the lowest of a full table, or no memory): an
             * AT reply would say it is (PROTOCOL section 6). */
            node->n.iamat_refused++;
            node->n.invalid++;
            a.outcome = HERD_MSG_REFUSED;
            break;
        }
    }
    /* fsync "always": the reply waits for the group commit, the node does not. */
    held_reply_t h = {.fe = fe, .handle = it->handle};
    if (a.outcome != HERD_MSG_REFUSED && node->journal &&
        herd_journal_hold(node->journal, (herd_ticket_t){it->conn, it->seq}, (const char *)&h, sizeof h))
        return;
    to_fe(node, fe, &a);
}

/* The journal's group commit is done: a held IAMAT reply goes out. */
static void release_reply(void *arg, herd_ticket_t t, const char *data, size_t len)
{
    herd_node_t *node = arg;
    held_reply_t h;
    if (len != sizeof h)
        return;
    memcpy(&h, data, sizeof h);
    herd_msg_item_t a = {.kind = HERD_MSG_IAMAT, .conn = t.conn, .seq = t.seq, .handle = h.handle,
                         .outcome = HERD_MSG_STORED};
    to_fe(node, h.fe, &a);
}

static void do_whatsat(herd_node_t *node, uint32_t fe, const herd_msg_item_t *it)
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
        to_fe(node, fe, &a);
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

/* One batch from front end f. */
static void handle_frame(herd_node_t *node, fe_t *f, const void *data, size_t len)
{
    herd_msg_reader_t r;
    herd_msg_header_t h;
    herd_msg_item_t it;
    int rc = herd_msg_open(&r, data, len, &h);
    if (rc == 0) {
        node->n.invalid += h.invalid;
        f->drain = h.drain;
    }
    herd_time_t now = herd_time_now();
    while (rc == 0 && (rc = herd_msg_next(&r, &it)) == 1) {
        rc = 0;
        if (it.kind == HERD_MSG_IAMAT)
            do_iamat(node, f->index, &it, now);
        else if (it.kind == HERD_MSG_WHATSAT)
            do_whatsat(node, f->index, &it);
        else if (it.kind == HERD_MSG_CLOSED)
            on_closed(node, f->index, it.conn, it.outcome != 0);
    }
    if (rc < 0)
        herd_log_event(node->log, "dropped a malformed message from front end %u", f->index);
}

/* Batches from a front-end thread. */
static void fe_ready(herd_loop_t *loop, void *arg)
{
    (void)loop;
    fe_t *f = arg;
    void *sock = herd_fethread_sock(f->thread);
    for (;;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            if (errno == EINTR)
                continue;
            return;
        }
        handle_frame(f->node, f, zmq_msg_data(&m), zmq_msg_size(&m));
        zmq_msg_close(&m);
    }
}

int herd_node_feed(herd_node_t *node, uint32_t fe, const void *data, size_t len)
{
    if (fe >= node->n_fes)
        return -1;
    handle_frame(node, &node->fes[fe], data, len);
    return 0;
}

char *herd_node_take_answers(herd_node_t *node, uint32_t fe, size_t *len)
{
    if (fe >= node->n_fes || node->fes[fe].out.oom)
        return NULL;
    fe_t *f = &node->fes[fe];
    char *p = malloc(f->out.len ? f->out.len : 1);
    if (!p)
        return NULL;
    memcpy(p, f->out.p, f->out.len);
    *len = f->out.len;
    herd_msg_header_t h = {.dir = HERD_MSG_TO_FE, .fe = f->index};
    herd_msg_begin(&f->out, &h);
    return p;
}

/* End of turn, after the links' flush and the group commit: each front
 * end's answers and orders in one frame. */
static void send_answers(herd_loop_t *loop, void *arg)
{
    (void)loop;
    herd_node_t *node = arg;
    for (size_t i = 0; i < node->n_fes; i++) {
        fe_t *f = &node->fes[i];
        if (!f->out.items)
            continue;
        if (f->out.oom)
            herd_log_event(node->log, "out of memory for the answers to front end %zu", i);
        else
            while (zmq_send(herd_fethread_sock(f->thread), f->out.p, f->out.len, 0) < 0 && errno == EINTR)
                ;
        herd_msg_header_t h = {.dir = HERD_MSG_TO_FE, .fe = f->index};
        herd_msg_begin(&f->out, &h);
    }
}

/* At max_clients: the front ends' batches already sent are read first, so
 * that a connection a front end has closed (and logged as closed) is no
 * longer counted when the next one comes. */
static void on_full(void *arg)
{
    herd_node_t *node = arg;
    for (size_t i = 0; i < node->n_fes; i++)
        fe_ready(node->loop, &node->fes[i]);
}

/* The acceptor's hand-off: each connection goes to the front-end thread
 * serving the fewest. */
static void on_accept(void *arg, int fd, uint64_t serial, const char *peer)
{
    herd_node_t *node = arg;
    size_t best = 0;
    for (size_t i = 1; i < node->n_fes; i++)
        if (node->fes[i].conns < node->fes[best].conns)
            best = i;
    node->fes[best].conns++;
    herd_msg_item_t it = {.kind = HERD_MSG_ADOPT, .fd = fd, .serial = serial, .peer = {peer, strlen(peer)}};
    to_fe(node, (uint32_t)best, &it);
}

/* Servers' clocks may disagree a little: a neighbour's record is refused as
 * from the future only past limits.max_future_s plus this much, so that a
 * record one server accepted is not refused by the next for a clock step. */
#define PEER_CLOCK_SLACK_SEC 60

/* The id, position and time of what looks like an AT line (six fields, one
 * space apart), without validating the rest; false when it does not look
 * like one. */
static bool quick_fields(const char *line, size_t len, herd_span_t *id, herd_span_t *pos, herd_time_t *time)
{
    const char *f[6], *end = line + len, *p = line;
    f[0] = line;
    for (int i = 1; i < 6; i++) {
        const char *sp = memchr(p, ' ', (size_t)(end - p));
        if (!sp)
            return false;
        f[i] = p = sp + 1;
    }
    if (memchr(p, ' ', (size_t)(end - p)))
        return false;
    id->p = f[3];
    id->len = (size_t)(f[4] - f[3] - 1);
    pos->p = f[4];
    pos->len = (size_t)(f[5] - f[4] - 1);
    return herd_time_parse(f[5], (size_t)(end - f[5]), time) == 0;
}

static bool is_server(const herd_topology_t *topo, herd_span_t name);

/* Lines about dropped peer records logged per second: a neighbour sending
 * 65,536 bad lines a message must not be able to fill the disk. */
#define PEER_LOG_PER_SEC 20

/* Whether one more such line may be logged now; says once a second how
 * many were not. */
static bool log_budget(herd_node_t *node)
{
    int64_t now = herd_loop_now_ms(node->loop);
    if (now - node->log_window_ms >= 1000) {
        if (node->log_suppressed)
            herd_log_event(node->log, "peer: %" PRIu64 " more dropped records were not logged (at most %d a second)",
                           node->log_suppressed, PEER_LOG_PER_SEC);
        node->log_window_ms = now;
        node->log_lines = 0;
        node->log_suppressed = 0;
    }
    if (node->log_lines < PEER_LOG_PER_SEC) {
        node->log_lines++;
        return true;
    }
    node->log_suppressed++;
    return false;
}

/* Drops every record whose origin is not a server of the topology in force
 * (after a reload that removed a server, or a start with a changed file):
 * every server refuses such records from its neighbours, so every server
 * must drop them too, or the exchanges would resend them for ever. */
static void purge_strangers(herd_node_t *node)
{
    size_t cursor = 0, n = 0, cap = 0;
    char **ids = NULL;
    uint16_t *lens = NULL;
    const herd_record_t *r;
    while ((r = herd_table_next(node->table, &cursor)) != NULL) {
        if (is_server(node->topo, (herd_span_t){r->at + 3, r->origin_len}))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **ni = realloc(ids, cap * sizeof *ni);
            uint16_t *nl = ni ? realloc(lens, cap * sizeof *nl) : NULL;
            if (ni)
                ids = ni;
            if (!ni || !nl)
                break;
            lens = nl;
        }
        if ((ids[n] = malloc(r->id_len ? r->id_len : 1)) == NULL)
            break;
        memcpy(ids[n], r->id, r->id_len);
        lens[n++] = r->id_len;
    }
    for (size_t i = 0; i < n; i++) {
        if (herd_table_remove(node->table, ids[i], lens[i]) && node->journal)
            herd_journal_drop(node->journal, ids[i], lens[i]);
        free(ids[i]);
    }
    if (n)
        herd_log_event(node->log, "dropped %zu records whose origin is not a server of the topology", n);
    free(ids);
    free(lens);
}

/* Whether `name` is a server of the topology (PROTOCOL section 7: only AT
 * lines made by a server of the herd are accepted). */
static bool is_server(const herd_topology_t *topo, herd_span_t name)
{
    for (size_t i = 0; i < topo->n_servers; i++)
        if (strlen(topo->servers[i].name) == name.len && !memcmp(topo->servers[i].name, name.p, name.len))
            return true;
    return false;
}

/* An AT line from a neighbour (a flood or an anti-entropy exchange). */
static void on_peer_update(void *arg, const char *from_name, long from, const char *line, size_t len, bool flood)
{
    herd_node_t *node = arg;
    herd_at_t at;
    /* Most of what neighbours send is already here (each update comes in
     * once per path). A line that could not replace what we hold is dropped
     * before the full validation, which costs several times more. */
    herd_span_t qid, qpos;
    herd_time_t qtime;
    if (quick_fields(line, len, &qid, &qpos, &qtime) &&
        !herd_table_would_take(node->table, qid.p, qid.len, qtime, line, len, (size_t)(qpos.p - line), qpos.len)) {
        node->n.peer_duplicates++;
        return;
    }
    const char *why = NULL;
    if (herd_proto_parse_at(line, len, &at) != 0)
        why = "an invalid AT line";
    else if (!is_server(node->topo, at.server))
        why = "an AT line whose origin is not a server of the topology";
    else if (too_far_ahead(node, at.time, herd_time_now(), PEER_CLOCK_SLACK_SEC))
        why = "an AT line whose client time is too far in the future";
    if (why) {
        node->n.peer_invalid++;
        if (log_budget(node)) {
            char prefix[200];
            snprintf(prefix, sizeof prefix, "peer %s: dropped %s: ", from_name, why);
            herd_log_data(node->log, prefix, line, len > 512 ? 512 : len);
        }
        return;
    }
    switch (store(node, &at, line, len, from, flood)) {
    case HERD_UPDATE_NEWER:
        node->n.peer_stored++;
        break;
    case HERD_UPDATE_REFUSED:
    case HERD_UPDATE_ERROR:
        node->n.peer_refused++;
        break;
    default:
        node->n.peer_duplicates++;
        break;
    }
}

/* Counts one finished Places request. */
static void count_places(herd_node_t *node, const herd_places_reply_t *r)
{
    if (r->note)
        node->n.places_errors++;
    if (r->cache_hit)
        node->n.places_cache_hits++;
    else if (r->shared)
        node->n.places_shared++;
    else if (r->upstream)
        node->n.places_upstream++;
    if (r->upstream && !r->cache_hit) {
        double s = r->upstream_ms / 1000.0;
        size_t b = 0;
        while (b < N_LATENCY && s > latency_bounds[b])
            b++;
        if (b < N_LATENCY)
            node->n.latency_buckets[b]++;
        node->n.latency_count++;
        node->n.latency_sum += s;
    }
}

static bool node_ready(herd_node_t *node);

/* CPU seconds of the log writer: the thread whose name starts "herd-log"
 * or, as CZMQ leaves its actors unnamed, the one the log's writer names
 * (looked up in /proc/self/task). -1 when not found. */
static double log_thread_cpu(void)
{
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return -1;
    double sec = -1;
    long tick = sysconf(_SC_CLK_TCK);
    struct dirent *e;
    while ((e = readdir(d)) && sec < 0) {
        if (e->d_name[0] == '.')
            continue;
        char path[64], comm[32] = "";
        snprintf(path, sizeof path, "/proc/self/task/%.20s/comm", e->d_name);
        FILE *c = fopen(path, "r");
        if (!c)
            continue;
        if (!fgets(comm, sizeof comm, c))
            comm[0] = '\0';
        fclose(c);
        if (strncmp(comm, "herd-log", 8) != 0)
            continue;
        snprintf(path, sizeof path, "/proc/self/task/%.20s/stat", e->d_name);
        FILE *st = fopen(path, "r");
        char buf[512];
        if (!st)
            continue;
        size_t n = fread(buf, 1, sizeof buf - 1, st);
        fclose(st);
        buf[n] = '\0';
        const char *rp = strrchr(buf, ')'); /* fields after the name: state is field 3, utime 14, stime 15 */
        unsigned long long ut, stt;
        if (rp && sscanf(rp + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &stt) == 2 && tick > 0)
            sec = (double)(ut + stt) / (double)tick;
    }
    closedir(d);
    return sec;
}

/* herd_thread_cpu_seconds_total: the node (this thread), each front end,
 * the log writer. */
static void render_cpu(herd_node_t *node, FILE *f)
{
    struct timespec ts;
    fprintf(f, "# HELP herd_thread_cpu_seconds_total CPU seconds used, by thread.\n"
               "# TYPE herd_thread_cpu_seconds_total counter\n");
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) == 0)
        fprintf(f, "herd_thread_cpu_seconds_total{thread=\"node\"} %.6f\n", (double)ts.tv_sec + ts.tv_nsec / 1e9);
    for (size_t i = 0; i < node->n_fes; i++) {
        double s = herd_fethread_cpu_seconds(node->fes[i].thread);
        if (s >= 0)
            fprintf(f, "herd_thread_cpu_seconds_total{thread=\"frontend-%zu\"} %.6f\n", i, s);
    }
    double s = log_thread_cpu();
    if (s >= 0)
        fprintf(f, "herd_thread_cpu_seconds_total{thread=\"log\"} %.6f\n", s);
}

/* /metrics, rendered on the reactor thread when the admin thread asks. */
static char *render_metrics(void *arg, size_t *len)
{
    herd_node_t *node = arg;
    char *text = NULL;
    FILE *f = open_memstream(&text, len);
    if (!f)
        return NULL;
    const counters_t *n = &node->n;
    fprintf(f,
            "# HELP herd_info The server's name.\n# TYPE herd_info gauge\nherd_info{server=\"%s\"} 1\n"
            "# HELP herd_ready Whether /healthz says ready (see README: health).\n# TYPE herd_ready gauge\n"
            "herd_ready %d\n"
            "# HELP herd_clients Clients held in the location table.\n# TYPE herd_clients gauge\n"
            "herd_clients %zu\n"
            "# HELP herd_client_connections Open client connections.\n# TYPE herd_client_connections gauge\n"
            "herd_client_connections %zu\n",
            node->name, node_ready(node) ? 1 : 0, herd_table_size(node->table),
            herd_frontend_connections(node->frontend));
    fprintf(f,
            "# HELP herd_commands_total Client commands by kind and outcome.\n"
            "# TYPE herd_commands_total counter\n"
            "herd_commands_total{command=\"IAMAT\",outcome=\"stored\"} %" PRIu64 "\n"
            "herd_commands_total{command=\"IAMAT\",outcome=\"not_newer\"} %" PRIu64 "\n"
            "herd_commands_total{command=\"WHATSAT\",outcome=\"answered\"} %" PRIu64 "\n"
            "herd_commands_total{command=\"WHATSAT\",outcome=\"unknown_client\"} %" PRIu64 "\n"
            "herd_commands_total{command=\"IAMAT\",outcome=\"refused\"} %" PRIu64 "\n"
            "# HELP herd_invalid_lines_total Client lines answered with '?'.\n"
            "# TYPE herd_invalid_lines_total counter\nherd_invalid_lines_total %" PRIu64 "\n"
            "# HELP herd_peer_updates_stored_total Updates from neighbours that were newer and stored.\n"
            "# TYPE herd_peer_updates_stored_total counter\nherd_peer_updates_stored_total %" PRIu64 "\n"
            "# HELP herd_duplicates_dropped_total Updates from neighbours that were not newer.\n"
            "# TYPE herd_duplicates_dropped_total counter\nherd_duplicates_dropped_total %" PRIu64 "\n"
            "# HELP herd_peer_invalid_updates_total AT lines from neighbours that did not parse.\n"
            "# TYPE herd_peer_invalid_updates_total counter\nherd_peer_invalid_updates_total %" PRIu64 "\n"
            "# HELP herd_peer_updates_refused_total Updates from neighbours outside the table's bounds.\n"
            "# TYPE herd_peer_updates_refused_total counter\nherd_peer_updates_refused_total %" PRIu64 "\n"
            "# HELP herd_records_dropped_total Records dropped by limits.max_records or limits.record_ttl_s.\n"
            "# TYPE herd_records_dropped_total counter\nherd_records_dropped_total %" PRIu64 "\n",
            n->iamat_stored, n->iamat_not_newer, n->whatsat_answered, n->whatsat_unknown, n->iamat_refused,
            n->invalid, n->peer_stored, n->peer_duplicates, n->peer_invalid, n->peer_refused,
            herd_table_dropped(node->table));
    herd_links_render(node->links, f);
    herd_log_stats_t ls;
    herd_log_stats(node->log, &ls);
    fprintf(f,
            "# HELP herd_log_lines_written_total Event log lines written to the file.\n"
            "# TYPE herd_log_lines_written_total counter\nherd_log_lines_written_total %" PRIu64 "\n"
            "# HELP herd_log_bytes_written_total Event log bytes written to the file.\n"
            "# TYPE herd_log_bytes_written_total counter\nherd_log_bytes_written_total %" PRIu64 "\n"
            "# HELP herd_log_dropped_lines_total Log lines dropped: the disk did not keep up, or a write failed.\n"
            "# TYPE herd_log_dropped_lines_total counter\nherd_log_dropped_lines_total %" PRIu64 "\n"
            "# HELP herd_log_queue_bytes Log bytes handed to the writer thread and not yet written.\n"
            "# TYPE herd_log_queue_bytes gauge\nherd_log_queue_bytes %" PRIu64 "\n",
            ls.lines_written, ls.bytes_written, ls.lines_dropped, ls.queue_bytes);
    herd_frontend_render(node->frontend, f);
    render_cpu(node, f);
    if (node->journal)
        herd_journal_render(node->journal, f);
    else
        fprintf(f, "# HELP herd_state_durable Whether every record held is on disk as the fsync setting promises.\n"
                   "# TYPE herd_state_durable gauge\nherd_state_durable 0\n");
    fprintf(f,
            "# HELP herd_places_requests_total WHATSAT Places lookups by how they were answered.\n"
            "# TYPE herd_places_requests_total counter\n"
            "herd_places_requests_total{result=\"upstream\"} %" PRIu64 "\n"
            "herd_places_requests_total{result=\"shared\"} %" PRIu64 "\n"
            "herd_places_requests_total{result=\"cache_hit\"} %" PRIu64 "\n"
            "herd_places_requests_total{result=\"error\"} %" PRIu64 "\n"
            "# HELP herd_places_errors_total Places lookups answered with an error object.\n"
            "# TYPE herd_places_errors_total counter\nherd_places_errors_total %" PRIu64 "\n"
            "# HELP herd_places_cache_hits_total Places lookups answered from the cache.\n"
            "# TYPE herd_places_cache_hits_total counter\nherd_places_cache_hits_total %" PRIu64 "\n"
            "# HELP herd_places_abandoned_total WHATSATs whose Places lookup was given up, by reason.\n"
            "# TYPE herd_places_abandoned_total counter\n"
            "herd_places_abandoned_total{reason=\"deadline\"} %" PRIu64 "\n"
            "herd_places_abandoned_total{reason=\"client_gone\"} %" PRIu64 "\n"
            "# HELP herd_places_pending WHATSATs waiting for their Places answer.\n"
            "# TYPE herd_places_pending gauge\nherd_places_pending %zu\n"
            "# HELP herd_places_upstream_seconds Duration of upstream Places calls.\n"
            "# TYPE herd_places_upstream_seconds histogram\n",
            n->places_upstream, n->places_shared, n->places_cache_hits, n->places_errors, n->places_errors,
            n->places_cache_hits, n->places_deadline, n->places_client_gone, node->n_pending);
    uint64_t cumulative = 0;
    for (size_t b = 0; b < N_LATENCY; b++) {
        cumulative += n->latency_buckets[b];
        fprintf(f, "herd_places_upstream_seconds_bucket{le=\"%g\"} %" PRIu64 "\n", latency_bounds[b], cumulative);
    }
    fprintf(f,
            "herd_places_upstream_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n"
            "herd_places_upstream_seconds_sum %.6f\nherd_places_upstream_seconds_count %" PRIu64 "\n",
            n->latency_count, n->latency_sum, n->latency_count);
    fclose(f);
    return text;
}

/* Readiness, latched: ready once the first rejoin exchange with a
 * neighbour is done, at once for a server without neighbours, or when
 * ready_wait_ms pass without any exchange (a herd must be able to start
 * from nothing). Until then a restarted server would answer "?" for
 * clients the herd knows, so probes must not route clients to it. */
static bool node_ready(herd_node_t *node)
{
    if (node->ready)
        return true;
    size_t self = (size_t)herd_topology_find(node->topo, node->name);
    if (herd_topology_neighbours(node->topo, self, NULL, 0) == 0)
        snprintf(node->ready_reason, sizeof node->ready_reason, "no neighbour in the topology");
    else if (herd_links_synced(node->links) > 0)
        snprintf(node->ready_reason, sizeof node->ready_reason, "first exchange with a neighbour done");
    else if (herd_loop_now_ms(node->loop) - node->start_ms >= node->ready_wait_ms)
        snprintf(node->ready_reason, sizeof node->ready_reason, "no neighbour answered within %ld s",
                 node->ready_wait_ms / 1000);
    else
        return false;
    node->ready = true;
    herd_log_event(node->log, "health: ready: %s", node->ready_reason);
    return true;
}

static void health_tick(herd_loop_t *loop, void *arg)
{
    herd_node_t *node = arg;
    if (node_ready(node) && node->health_timer > 0) {
        herd_loop_remove_timer(loop, node->health_timer);
        node->health_timer = 0;
    }
}

/* /healthz: draining beats everything; then starting or ready. */
static herd_health_t node_health(void *arg, char *reason, size_t cap)
{
    herd_node_t *node = arg;
    if (node->draining) {
        snprintf(reason, cap, "stopping after SIGTERM, finishing owed replies");
        return HERD_HEALTH_DRAINING;
    }
    if (!node_ready(node)) {
        snprintf(reason, cap, "waiting for the first exchange with a neighbour (at most %ld s)",
                 node->ready_wait_ms / 1000);
        return HERD_HEALTH_STARTING;
    }
    if (!herd_node_durable(node)) {
        snprintf(reason, cap, "serving from memory: the state in %s cannot be written (see the log)",
                 node->topo->state_dir);
        return HERD_HEALTH_NOT_DURABLE;
    }
    snprintf(reason, cap, "%s", node->ready_reason);
    return HERD_HEALTH_READY;
}

/* Replies from the Places worker. */
static void places_ready(herd_loop_t *loop, void *arg)
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

/* A record dropped by limits.max_records or limits.record_ttl_s. */
static void on_drop(void *arg, const herd_record_t *r)
{
    herd_node_t *node = arg;
    /* Counted by the table (herd_table_dropped); on disk, a DROP keeps it
     * from coming back at the next start. */
    if (node->journal)
        herd_journal_drop(node->journal, r->id, r->id_len);
}

/* How often records past limits.record_ttl_s are looked for. */
#define EXPIRE_MS 1000

static void expire_tick(herd_loop_t *loop, void *arg)
{
    (void)loop;
    herd_node_t *node = arg;
    herd_table_expire(node->table, herd_time_now().sec);
}

/* A record found on disk at start: offered to the table like any update
 * (its ranking makes replay idempotent), or removed for a DROP. */
static void load_record(void *arg, const herd_journal_rec_t *rec)
{
    herd_node_t *node = arg;
    if (rec->kind == 'D')
        herd_table_remove(node->table, rec->id, rec->id_len);
    else
        herd_table_update(node->table, rec->id, rec->id_len, rec->time, rec->at, rec->at_len, rec->pos_off,
                          rec->pos_len, NULL);
}

/* End of every turn: this turn's records go to the writer in one batch. */
static void journal_tick(herd_loop_t *loop, void *arg)
{
    (void)loop;
    herd_node_t *node = arg;
    herd_journal_commit(node->journal, herd_table_size(node->table));
}

/* The writer's reports: held replies whose records are on disk go out. */
static void journal_ready(herd_loop_t *loop, void *arg)
{
    (void)loop;
    herd_node_t *node = arg;
    herd_journal_recv(node->journal, release_reply, node);
}

/* Loads state_dir/NAME into the table and starts the writer. */
static int open_journal(herd_node_t *node, const herd_topology_t *topo, char *err, size_t errlen)
{
    char *dir = NULL;
    if (asprintf(&dir, "%s/%s", topo->state_dir, node->name) < 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    herd_journal_conf_t jc = {
        .dir = dir, .fsync = topo->fsync, .load = load_record, .arg = node, .loop = node->loop};
    node->journal = herd_journal_open(&jc, node->log, err, errlen);
    free(dir);
    if (!node->journal)
        return -1;
    if (herd_loop_add_zmq(node->loop, herd_journal_sock(node->journal), journal_ready, node) != 0 ||
        (node->journal_tick = herd_loop_add_tick(node->loop, HERD_PHASE_STATE, journal_tick, node)) < 0) {
        snprintf(err, errlen, "cannot watch the state writer");
        return -1;
    }
    return 0;
}

/* The front-end threads, and the acceptor that hands them connections. */
static int start_frontends(herd_node_t *node, const herd_topology_t *topo, const herd_server_conf_t *me, char *err,
                           size_t errlen)
{
    size_t n = (size_t)herd_node_frontend_threads(topo, me);
    node->fes = calloc(n, sizeof *node->fes);
    if (!node->fes) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        fe_t *f = &node->fes[i];
        f->node = node;
        f->index = (uint32_t)i;
        herd_fethread_conf_t tc = {.index = (uint32_t)i,
                                   .server = node->name,
                                   .idle_timeout_ms = topo->idle_timeout_ms,
                                   .max_output_bytes = topo->max_output_bytes};
        f->thread = herd_fethread_new(&tc, node->log, err, errlen);
        if (!f->thread)
            return -1;
        node->n_fes = i + 1;
        herd_msg_header_t h = {.dir = HERD_MSG_TO_FE, .fe = f->index};
        herd_msg_begin(&f->out, &h);
        if (f->out.oom || herd_loop_add_zmq(node->loop, herd_fethread_sock(f->thread), fe_ready, f) != 0) {
            snprintf(err, errlen, "cannot watch front end %zu", i);
            return -1;
        }
    }
    if ((node->fe_tick = herd_loop_add_tick(node->loop, HERD_PHASE_FRONTEND, send_answers, node)) < 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    herd_frontend_conf_t fc = {
        .host = me->host,
        .port = me->client_port,
        .max_clients = topo->max_clients,
        .idle_timeout_ms = topo->idle_timeout_ms,
        .max_output_bytes = topo->max_output_bytes,
        .on_accept = on_accept,
        .on_full = on_full,
        .arg = node,
    };
    node->frontend = herd_frontend_new(node->loop, node->log, &fc, err, errlen);
    if (!node->frontend)
        return -1;
    herd_log_event(node->log, "%zu front-end thread%s", n, n == 1 ? "" : "s");
    return 0;
}

long herd_node_frontend_threads(const herd_topology_t *topo, const herd_server_conf_t *me)
{
    if (me && me->frontend_threads > 0)
        return me->frontend_threads;
    if (topo->frontend_threads > 0)
        return topo->frontend_threads;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    long n = cores - 1;
    return n < 1 ? 1 : n > MAX_DEFAULT_FE ? MAX_DEFAULT_FE : n;
}

bool herd_node_durable(const herd_node_t *node)
{
    return !node->journal || herd_journal_durable(node->journal);
}

herd_node_t *herd_node_new(herd_loop_t *loop, herd_log_t *log, const herd_topology_t *topo, size_t self,
                           char *err, size_t errlen)
{
    herd_node_t *node = calloc(1, sizeof *node);
    if (!node) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    const herd_server_conf_t *me = &topo->servers[self];
    node->loop = loop;
    node->log = log;
    node->topo = topo;
    node->name = strdup(me->name);
    node->name_len = strlen(me->name);
    node->table = herd_table_new();
    if (!node->table || !node->name ||
        herd_table_set_limits(node->table, (uint64_t)topo->max_records, topo->record_ttl_s, on_drop, node) != 0 ||
        (node->expire_timer = herd_loop_add_timer(loop, EXPIRE_MS, expire_tick, node)) < 0) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (topo->state_dir && open_journal(node, topo, err, errlen) != 0)
        goto fail;
    purge_strangers(node); /* records on disk from servers the topology no longer has */
    /* Links first: their end-of-turn flush must run before the front end
     * writes replies, so that an update is on its way before the AT reply. */
    node->links = herd_links_new(loop, log, topo, self, node->table, on_peer_update, node, err, errlen);
    if (!node->links)
        goto fail;

    const char *url = getenv("HERD_PLACES_URL");
    const char *key = topo->places_key_env ? getenv(topo->places_key_env) : NULL;
    herd_places_conf_t pc = {
        .url = url && *url ? url : topo->places_url,
        .key = key,
        .timeout_ms = topo->places_timeout_ms,
        .cache_ttl_ms = topo->places_cache_ttl_ms,
        .max_in_flight = topo->places_max_in_flight,
        .max_queued = topo->places_max_queued,
    };
    node->places = herd_places_new(&pc, err, errlen);
    if (!node->places || herd_loop_add_zmq(loop, herd_places_sock(node->places), places_ready, node) != 0) {
        if (node->places)
            snprintf(err, errlen, "cannot watch the Places worker");
        goto fail;
    }
    if ((node->pending_timer = herd_loop_add_timer(loop, PENDING_SWEEP_MS, pending_sweep, node)) < 0) {
        snprintf(err, errlen, "cannot start the Places deadline timer");
        goto fail;
    }
    if (!key || !*key)
        herd_log_event(log, "places: no API key in $%s: WHATSAT answers REQUEST_DENIED", topo->places_key_env);

    if (start_frontends(node, topo, me, err, errlen) != 0)
        goto fail;
    node->start_ms = herd_loop_now_ms(loop);
    node->ready_wait_ms = HERD_NODE_READY_WAIT_MS;
    node->health_timer = herd_loop_add_timer(loop, HEALTH_TICK_MS, health_tick, node);
    if (node->health_timer < 0) {
        snprintf(err, errlen, "cannot set up the health timer");
        goto fail;
    }
    if (me->admin_port) {
        node->admin =
            herd_admin_new(loop, me->admin_host, me->admin_port, render_metrics, node_health, node, err, errlen);
        if (!node->admin)
            goto fail;
    }
    return node;
fail:
    herd_node_destroy(&node);
    return NULL;
}

void herd_node_destroy(herd_node_t **p)
{
    if (!p || !*p)
        return;
    herd_node_t *node = *p;
    herd_admin_destroy(&node->admin);
    if (node->health_timer > 0)
        herd_loop_remove_timer(node->loop, node->health_timer);
    herd_frontend_destroy(&node->frontend);
    for (size_t i = 0; i < node->n_fes; i++) {
        herd_loop_remove_zmq(node->loop, herd_fethread_sock(node->fes[i].thread));
        herd_fethread_destroy(&node->fes[i].thread);
        herd_msg_buf_free(&node->fes[i].out);
    }
    free(node->fes);
    if (node->fe_tick > 0)
        herd_loop_remove_tick(node->loop, node->fe_tick);
    if (node->pending_timer > 0)
        herd_loop_remove_timer(node->loop, node->pending_timer);
    if (node->places)
        herd_loop_remove_zmq(node->loop, herd_places_sock(node->places));
    herd_places_destroy(&node->places);
    herd_links_destroy(&node->links);
    if (node->journal_tick > 0)
        herd_loop_remove_tick(node->loop, node->journal_tick);
    if (node->journal)
        herd_loop_remove_zmq(node->loop, herd_journal_sock(node->journal));
    herd_journal_destroy(&node->journal);
    for (size_t i = 0; i < PENDING_BUCKETS; i++) {
        while (node->pending[i]) {
            pending_t *q = node->pending[i];
            node->pending[i] = q->next;
            free(q);
        }
    }
    if (node->expire_timer > 0)
        herd_loop_remove_timer(node->loop, node->expire_timer);
    herd_table_destroy(&node->table);
    free(node->name);
    free(node);
    *p = NULL;
}

void herd_node_drain(herd_node_t *node)
{
    node->draining = true;
    herd_frontend_drain(node->frontend);
    herd_msg_item_t it = {.kind = HERD_MSG_DRAIN};
    for (size_t i = 0; i < node->n_fes; i++) {
        node->fes[i].drain = 0; /* busy until it says otherwise */
        to_fe(node, (uint32_t)i, &it);
    }
}

size_t herd_node_busy(const herd_node_t *node)
{
    size_t busy = 0;
    for (size_t i = 0; i < node->n_fes; i++)
        busy += node->fes[i].drain ? (size_t)(node->fes[i].drain - 1) : 1;
    return busy;
}

herd_admin_t *herd_node_admin(herd_node_t *node)
{
    return node->admin;
}

void herd_node_set_ready_wait(herd_node_t *node, long ms)
{
    node->ready_wait_ms = ms;
}

int herd_node_reload(herd_node_t *node, const herd_topology_t *topo, char *err, size_t errlen)
{
    long self = herd_topology_find(topo, node->name);
    if (self < 0) {
        snprintf(err, errlen, "%s has no server named \"%s\"", topo->path, node->name);
        return -1;
    }
    /* What takes a restart (own address, ports, key, Places settings) is
     * found and reported by the caller (main.c, herd_node_restart_needed). */
    if (herd_links_reconfigure(node->links, topo, err, errlen) != 0)
        return -1;
    herd_frontend_set_limits(node->frontend, topo->max_clients, topo->idle_timeout_ms, topo->max_output_bytes);
    herd_msg_item_t lim = {.kind = HERD_MSG_LIMITS, .idle_timeout_ms = topo->idle_timeout_ms,
                           .max_output_bytes = topo->max_output_bytes};
    for (size_t i = 0; i < node->n_fes; i++)
        to_fe(node, (uint32_t)i, &lim);
    if (herd_table_set_limits(node->table, (uint64_t)topo->max_records, topo->record_ttl_s, on_drop, node) != 0)
        herd_log_event(node->log, "reload: out of memory applying limits.max_records");
    node->topo = topo;
    purge_strangers(node);
    return 0;
}
