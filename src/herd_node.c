/* herd_node: the front-end threads' commands as herd_msg batches, the
 * table and floods, the end of each turn, and the node's lifetime. The
 * parts it calls (none calls back): WHATSATs in herd_node_places.c,
 * durable state in herd_node_state.c, readiness in herd_node_health.c,
 * /metrics in herd_node_metrics.c. See herd_node.h and herd_node_int.h. */
#include "herd_node.h"
#include "herd_node_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zmq.h>

/* Offers an AT line to the table; floods it when stored and `flood`. `from`
 * is the link it came from, or -1 for our own client; a neighbour's line is
 * stored only if accept(arg) says so once the table would take it. `at` is
 * the line's parse (its skew and origin found when they point into the
 * line: they are not looked for again); `hash` (NULL: none) the id's index
 * hash from herd_table_ahead. */
static herd_update_t store(herd_node_t *node, const herd_at_t *at, const char *line, size_t len, long from,
                           bool flood, const uint64_t *hash, herd_table_accept_fn *accept, void *arg,
                           const herd_record_t **stored)
{
    herd_table_offer_t o = {
        .id = at->id.p,
        .id_len = at->id.len,
        .time = at->time,
        .at = line,
        .at_len = len,
        .pos_off = (size_t)(at->pos.p - line),
        .pos_len = at->pos.len,
        .origin_len = at->server.p == line + 3 ? at->server.len : herd_record_origin(line, len).len,
        .recv = at->skew.p ? herd_record_receive_time_of(at->skew, at->time)
                           : herd_record_receive_time(line, len, at->time),
        .hash = hash ? *hash : 0,
        .hashed = hash != NULL,
    };
    /* Our own client's report ranks by the contract's keys alone: a resend is not above it. */
    herd_update_t u = herd_table_offer(node->table, &o, from < 0, from < 0 ? NULL : accept, arg, stored);
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

/* An IAMAT from front end `fe`, its AT line made there; `now` is read once
 * per batch. */
static void do_iamat(herd_node_t *node, uint32_t fe, const herd_msg_item_t *it, herd_time_t now,
                     const uint64_t *hash)
{
    uint32_t outcome;
    herd_at_t at = {.id = {it->at.p + it->id_off, it->id_len}, .pos = {it->at.p + it->pos_off, it->pos_len},
                    .time = it->time, .server = {node->name, node->name_len}};
    /* The front end made the line `AT <our name> <skew> <id> ...`: its
     * origin and skew are where our name's length puts them, so the table
     * need not look for them (store() looks when they are not so). */
    size_t skew_at = 3 + node->name_len + 1;
    if (it->id_off > skew_at + 1 && it->at.p[skew_at - 1] == ' ' && it->at.p[it->id_off - 1] == ' '
        && memcmp(it->at.p + 3, node->name, node->name_len) == 0) {
        at.server = (herd_span_t){it->at.p + 3, node->name_len};
        at.skew = (herd_span_t){it->at.p + skew_at, it->id_off - 1 - skew_at};
    }
    if (too_far_ahead(node, it->time, now, 0) ||
        /* fsync "always" while the state cannot be written: an update that
         * would change the table is answered "?" and not stored, since its
         * AT reply would say it is on disk (PROTOCOL section 9). */
        (node->journal && herd_journal_refusing(node->journal) &&
         herd_table_would_take(node->table, at.id.p, at.id.len, at.time, it->at.p, it->at.len, it->pos_off,
                               it->pos_len))) {
        node->n.iamat_refused++;
        node->n.invalid++;
        outcome = HERD_MSG_REFUSED;
    } else {
        switch (store(node, &at, it->at.p, it->at.len, -1, true, hash, NULL, NULL, NULL)) {
        case HERD_UPDATE_NEWER:
            node->n.iamat_stored++;
            outcome = HERD_MSG_STORED;
            break;
        case HERD_UPDATE_SAME:
        case HERD_UPDATE_OLDER:
            node->n.iamat_not_newer++;
            outcome = HERD_MSG_NOT_NEWER;
            break;
        case HERD_UPDATE_REFUSED:
        case HERD_UPDATE_ERROR:
        default:
            /* Not held (expired, the lowest of a full table, or no memory): an
             * AT reply would say it is (PROTOCOL section 6). */
            node->n.iamat_refused++;
            node->n.invalid++;
            outcome = HERD_MSG_REFUSED;
            break;
        }
    }
    /* fsync "always": the reply waits for the group commit, the node does not. */
    held_reply_t h = {.fe = fe, .handle = it->handle};
    herd_ticket_t t = {it->conn, it->seq};
    if (outcome != HERD_MSG_REFUSED && node->journal && herd_journal_hold(node->journal, t, (const char *)&h, sizeof h))
        return;
    node_iamat_to_fe(node, fe, t, it->handle, outcome);
}

/* One item of a batch from front end f. */
static void handle_item(herd_node_t *node, fe_t *f, const herd_msg_item_t *it, herd_time_t now,
                        const uint64_t *hash)
{
    if (it->kind == HERD_MSG_IAMAT)
        do_iamat(node, f->index, it, now, hash);
    else if (it->kind == HERD_MSG_WHATSAT)
        node_do_whatsat(node, f->index, it);
    else if (it->kind == HERD_MSG_CLOSED)
        node_on_closed(node, f->index, it->conn, it->outcome != 0);
}

/* One batch from the front end on this thread: its items as they are. */
static void handle_batch(herd_node_t *node, fe_t *f, const herd_fethread_batch_t *b)
{
    node->n.invalid += b->invalid;
    f->drain = b->drain;
    herd_time_t now = herd_time_now();
    /* Each IAMAT's id is named to the table HERD_TABLE_AHEAD items ahead of
     * the one handled, so that the batch's cache misses overlap. */
    herd_table_ahead_t ahead = {0};
    uint64_t hashes[HERD_TABLE_AHEAD]; /* item k's index hash at k % HERD_TABLE_AHEAD, once named */
    bool worth = herd_table_worth_ahead(node->table);
    size_t named = worth ? 0 : b->n;
    for (size_t i = 0; i < b->n; i++) {
        for (; named < b->n && named < i + HERD_TABLE_AHEAD; named++) {
            const herd_msg_item_t *next = &b->items[named];
            if (next->kind == HERD_MSG_IAMAT)
                hashes[named % HERD_TABLE_AHEAD] =
                    herd_table_ahead(node->table, &ahead, next->at.p + next->id_off, next->id_len);
        }
        handle_item(node, f, &b->items[i], now, worth ? &hashes[i % HERD_TABLE_AHEAD] : NULL);
    }
}

/* One batch from front end f, as a herd_msg frame. */
static void handle_frame(herd_node_t *node, fe_t *f, const void *data, size_t len)
{
    herd_msg_reader_t r;
    herd_msg_header_t h;
    int rc = herd_msg_open(&r, data, len, &h);
    if (rc == 0) {
        node->n.invalid += h.invalid;
        f->drain = h.drain;
    }
    herd_time_t now = herd_time_now();
    /* Items are read HERD_TABLE_AHEAD ahead of the one handled, into a
     * ring, each IAMAT's id named to the table as it is read, so that the
     * batch's cache misses overlap; each item is decoded once. */
    herd_msg_item_t ring[HERD_TABLE_AHEAD];
    uint64_t hashes[HERD_TABLE_AHEAD]; /* the index hash of ring[k]'s id, when named */
    size_t head = 0, queued = 0;
    herd_table_ahead_t ahead = {0};
    bool name_ids = herd_table_worth_ahead(node->table);
    for (;;) {
        while (rc == 0 && queued < HERD_TABLE_AHEAD) {
            herd_msg_item_t *next = &ring[(head + queued) % HERD_TABLE_AHEAD];
            if ((rc = herd_msg_next(&r, next)) != 1)
                break; /* 0: the end; -1: the rest is malformed (what came before is still handled) */
            rc = 0;
            if (name_ids && next->kind == HERD_MSG_IAMAT)
                hashes[(head + queued) % HERD_TABLE_AHEAD] =
                    herd_table_ahead(node->table, &ahead, next->at.p + next->id_off, next->id_len);
            queued++;
        }
        if (queued == 0)
            break;
        const herd_msg_item_t *it = &ring[head];
        const uint64_t *hash = name_ids ? &hashes[head] : NULL;
        head = (head + 1) % HERD_TABLE_AHEAD;
        queued--;
        handle_item(node, f, it, now, hash);
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
    for (size_t i = 0; i < f->n_iamats; i++) { /* in-line answers, encoded as a thread would get them */
        herd_msg_item_t it = {.kind = HERD_MSG_IAMAT, .conn = f->iamats[i].conn, .seq = f->iamats[i].seq,
                              .handle = f->iamats[i].handle, .outcome = f->iamats[i].outcome};
        herd_msg_put(&f->out, HERD_MSG_TO_FE, &it);
    }
    f->n_iamats = 0;
    if (f->out.oom)
        return NULL;
    char *p = malloc(f->out.len ? f->out.len : 1);
    if (!p)
        return NULL;
    memcpy(p, f->out.p, f->out.len);
    *len = f->out.len;
    herd_msg_header_t h = {.dir = HERD_MSG_TO_FE, .fe = f->index};
    herd_msg_begin(&f->out, &h);
    return p;
}

/* Each front end's answers and orders of this turn in one frame; a front
 * end on this thread takes its IAMAT answers first, as they are, then the
 * frame of the rest (a connection's answers are put in order by the front
 * end, whatever order they come in). */
static void send_answers(herd_node_t *node)
{
    for (size_t i = 0; i < node->n_fes; i++) {
        fe_t *f = &node->fes[i];
        if (f->n_iamats) {
            herd_fethread_take_iamats(f->thread, f->iamats, f->n_iamats);
            f->n_iamats = 0;
        }
        if (!f->out.items)
            continue;
        if (f->out.oom)
            herd_log_event(node->log, "out of memory for the answers to front end %zu", i);
        else if (f->in_line)
            herd_fethread_take(f->thread, f->out.p, f->out.len);
        else
        {
            while (zmq_send(herd_fethread_sock(f->thread), f->out.p, f->out.len, 0) < 0 && errno == EINTR)
                ;
            herd_loop_zmq_sent(node->loop, herd_fethread_sock(f->thread));
        }
        herd_msg_header_t h = {.dir = HERD_MSG_TO_FE, .fe = f->index};
        herd_msg_begin(&f->out, &h);
    }
}

/* The turn, in the order of the acknowledgement promise (PROTOCOL sections
 * 7 and 9: a client's reply says its update is flooded and, as fsync
 * promises, on disk). Each step is a phase of the loop (herd_loop.h), run
 * in this order whoever registered it:
 *
 *   1. commands  HERD_PHASE_COMMANDS  a front end on this thread hands its
 *                                     lines; handle_frame stores, queues
 *                                     floods and answers (node_to_fe)
 *   2. flood     HERD_PHASE_LINKS     herd_links sends the stored updates
 *   3. commit    HERD_PHASE_STATE     node_state_commit (below)
 *   4. answers   HERD_PHASE_ANSWERS   Places answers, then every front
 *                                     end's batch (turn_answers, below)
 *   5. writes    HERD_PHASE_FRONTEND  the front ends write the replies
 *   6. log       HERD_PHASE_LOG       the turn's log lines in one write
 *
 * With fsync "always" an IAMAT reply misses its own turn's step 4: the
 * journal holds it until its record is on disk, and herd_node_state.c's
 * release_reply queues it for the step 4 of the turn that learns so.
 * Steps 3 and 4 are the node's: turn_ticks registers them. */
static void turn_commit(herd_loop_t *loop, void *arg)
{
    (void)loop;
    node_state_commit(arg);
}

static void turn_answers(herd_loop_t *loop, void *arg)
{
    (void)loop;
    node_places_deliver(arg);
    send_answers(arg);
}

static const struct {
    herd_phase_t phase;
    herd_loop_fn *fn;
} turn_ticks[N_TURN_TICKS] = {
    {HERD_PHASE_STATE, turn_commit},
    {HERD_PHASE_ANSWERS, turn_answers},
};

/* At max_clients: the front ends' batches already sent are read first, so
 * that a connection a front end has closed (and logged as closed) is no
 * longer counted when the next one comes. */
static void on_full(void *arg)
{
    herd_node_t *node = arg;
    for (size_t i = 0; i < node->n_fes; i++) {
        if (node->fes[i].in_line)
            herd_fethread_flush(node->fes[i].thread);
        else
            fe_ready(node->loop, &node->fes[i]);
    }
}

/* A batch from the front end on this thread. One from the end of the turn
 * (lines of paused connections read again while replies were written) may
 * have stored updates and queued answers after this turn's flush and
 * hand-over: the next turn comes at once rather than at the next event. */
static void in_line_deliver(void *arg, const herd_fethread_batch_t *batch, bool late)
{
    fe_t *f = arg;
    handle_batch(f->node, f, batch);
    if (late)
        herd_loop_again(f->node->loop);
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
    node_to_fe(node, (uint32_t)best, &it);
}

/* How long a stop gives the front ends to write the last answers. */
#define STOP_WRITE_MS 1000

/* Servers' clocks may disagree a little: a neighbour's record is refused as
 * from the future only past limits.max_future_s plus this much, so that a
 * record one server accepted is not refused by the next for a clock step. */
#define PEER_CLOCK_SLACK_SEC 60

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

/* The rest of a neighbour's line's validation, asked by the table only
 * when it would store the line. */
typedef struct {
    herd_node_t *node;
    const herd_at_t *at;
    const char *why; /* why it was refused */
} peer_check_t;

static bool peer_line_ok(void *arg)
{
    peer_check_t *pc = arg;
    if (!herd_record_check(pc->at))
        pc->why = "an invalid AT line";
    else if (too_far_ahead(pc->node, pc->at->time, herd_links_message_time(pc->node->links), PEER_CLOCK_SLACK_SEC))
        pc->why = "an AT line whose client time is too far in the future";
    return pc->why == NULL;
}

/* An AT line from a neighbour (a flood or an anti-entropy exchange). Most of
 * what neighbours send is already here (each update comes in once per path):
 * its fields are found (herd_record_parse_quick), the table looks it up, and
 * only a line it would store is checked further (herd_record_check; quick
 * then check is herd_record_parse). */
static void on_peer_update(void *arg, const char *from_name, long from, const char *line, size_t len,
                           const herd_at_t *at, const uint64_t *hash, bool flood)
{
    herd_node_t *node = arg;
    peer_check_t pc = {.node = node, .at = at};
    herd_update_t u = HERD_UPDATE_REJECTED;
    const herd_record_t *stored = NULL;
    if (at == NULL)
        pc.why = "an invalid AT line";
    else
        u = store(node, at, line, len, from, flood, hash, peer_line_ok, &pc, &stored);
    switch (u) {
    case HERD_UPDATE_REJECTED:
        node->n.peer_invalid++;
        if (log_budget(node)) {
            char prefix[200];
            snprintf(prefix, sizeof prefix, "peer %s: dropped %s: ", from_name, pc.why);
            herd_log_data(node->log, prefix, line, len > 512 ? 512 : len);
        }
        break;
    case HERD_UPDATE_NEWER:
        node->n.peer_stored++;
        node_observe_update_age(node, herd_table_receive_time(stored), flood);
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



/* A record dropped by limits.max_records or limits.record_ttl_s. */
static void on_drop(void *arg, const herd_record_t *r)
{
    herd_node_t *node = arg;
    /* Counted by the table (herd_table_dropped); on disk, a DROP keeps it
     * from coming back at the next start. */
    if (node->journal)
        herd_journal_drop(node->journal, r->id, r->id_len);
    else
        node_state_load_dropped(node, r->id, r->id_len);
}

/* How often records past limits.record_ttl_s are looked for. */
#define EXPIRE_MS 1000

static void expire_tick(herd_loop_t *loop, void *arg)
{
    (void)loop;
    herd_node_t *node = arg;
    herd_table_expire(node->table, herd_time_now().sec);
}

/* The front-end threads (or the front end on this thread), and the
 * acceptor that hands them connections. */
static int start_frontends(herd_node_t *node, const herd_topology_t *topo, const herd_server_conf_t *me, char *err,
                           size_t errlen)
{
    size_t threads = (size_t)herd_topology_frontend_threads(topo, me);
    size_t n = threads ? threads : 1;
    node->fes = calloc(n, sizeof *node->fes);
    if (!node->fes) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        fe_t *f = &node->fes[i];
        f->node = node;
        f->index = (uint32_t)i;
        f->in_line = threads == 0;
        herd_fethread_conf_t tc = {.index = (uint32_t)i,
                                   .server = node->name,
                                   .idle_timeout_ms = topo->idle_timeout_ms,
                                   .max_output_bytes = topo->max_output_bytes,
                                   .max_output_total_bytes = topo->max_output_total_bytes,
                                   .log_commands = topo->log_commands,
                                   .loop = f->in_line ? node->loop : NULL,
                                   .deliver = in_line_deliver,
                                   .deliver_arg = f};
        f->thread = herd_fethread_new(&tc, node->log, err, errlen);
        if (!f->thread)
            return -1;
        node->n_fes = i + 1;
        herd_msg_header_t h = {.dir = HERD_MSG_TO_FE, .fe = f->index};
        herd_msg_begin(&f->out, &h);
        if (f->out.oom ||
            (!f->in_line && herd_loop_add_zmq(node->loop, herd_fethread_sock(f->thread), fe_ready, f) != 0)) {
            snprintf(err, errlen, "cannot watch front end %zu", i);
            return -1;
        }
    }
    for (size_t i = 0; i < N_TURN_TICKS; i++)
        if ((node->turn_ticks[i] = herd_loop_add_tick(node->loop, turn_ticks[i].phase, turn_ticks[i].fn, node)) < 0) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    herd_frontend_conf_t fc = {
        .host = me->host,
        .port = me->client_port,
        .max_clients = topo->max_clients,
        .idle_timeout_ms = topo->idle_timeout_ms,
        .max_output_bytes = topo->max_output_bytes,
        .max_clients_per_address = topo->max_clients_per_address,
        .on_accept = on_accept,
        .on_full = on_full,
        .arg = node,
    };
    node->frontend = herd_frontend_new(node->loop, node->log, &fc, err, errlen);
    if (!node->frontend)
        return -1;
    if (threads)
        herd_log_event(node->log, "%zu front-end thread%s", n, n == 1 ? "" : "s");
    else
        herd_log_event(node->log, "front end on the node's thread (frontend_threads 0)");
    return 0;
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
    /* limits.record_ttl_s from the first moment, not the first sweep: a
     * report already past it is refused (PROTOCOL section 6). */
    herd_table_expire(node->table, herd_time_now().sec);
    /* The admin endpoint first: it answers (starting, with the load's
     * progress) while the state loads. */
    if (me->admin_port) {
        node->admin =
            herd_admin_new(loop, me->admin_host, me->admin_port, node_render_metrics, node_health, node, err, errlen);
        if (!node->admin)
            goto fail;
        herd_admin_set_page(node->admin, node_render_page);
        herd_admin_progress(node->admin, topo->state_dir ? "loading the state" : "setting up");
    }
    if (topo->state_dir && node_open_journal(node, topo, err, errlen) != 0)
        goto fail;
    herd_admin_progress(node->admin, "state loaded; binding the ports, connecting to the neighbours");
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
    if (!node->places || herd_loop_add_zmq(loop, herd_places_sock(node->places), node_places_ready, node) != 0) {
        if (node->places)
            snprintf(err, errlen, "cannot watch the Places worker");
        goto fail;
    }
    if ((node->pending_timer = herd_loop_add_timer(loop, PENDING_SWEEP_MS, node_pending_sweep, node)) < 0) {
        snprintf(err, errlen, "cannot start the Places deadline timer");
        goto fail;
    }
    if (node_places_init(node) != 0) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (!key || !*key)
        herd_log_event(log, "places: no API key in $%s: WHATSAT answers REQUEST_DENIED", topo->places_key_env);

    if (start_frontends(node, topo, me, err, errlen) != 0)
        goto fail;
    node->start_ms = herd_loop_now_ms(loop);
    node->ready_wait_ms = HERD_NODE_READY_WAIT_MS;
    node->health_timer = herd_loop_add_timer(loop, HEALTH_TICK_MS, node_health_tick, node);
    if (node->health_timer < 0) {
        snprintf(err, errlen, "cannot set up the health timer");
        goto fail;
    }
    herd_admin_set_serving(node->admin);
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
    for (size_t i = 0; i < N_TURN_TICKS; i++)
        if (node->turn_ticks[i] > 0)
            herd_loop_remove_tick(node->loop, node->turn_ticks[i]);
    herd_admin_destroy(&node->admin);
    if (node->health_timer > 0)
        herd_loop_remove_timer(node->loop, node->health_timer);
    herd_frontend_destroy(&node->frontend);
    for (size_t i = 0; i < node->n_fes; i++) {
        if (!node->fes[i].in_line)
            herd_loop_remove_zmq(node->loop, herd_fethread_sock(node->fes[i].thread));
        herd_fethread_destroy(&node->fes[i].thread);
        herd_msg_buf_free(&node->fes[i].out);
        free(node->fes[i].iamats);
    }
    free(node->fes);
    if (node->pending_timer > 0)
        herd_loop_remove_timer(node->loop, node->pending_timer);
    if (node->places)
        herd_loop_remove_zmq(node->loop, herd_places_sock(node->places));
    herd_places_destroy(&node->places);
    herd_links_close_gracefully(node->links, 2000); /* PROTOCOL.md section 8: neighbours take what was flooded */
    herd_links_destroy(&node->links);
    if (node->journal)
        herd_loop_remove_zmq(node->loop, herd_journal_sock(node->journal));
    herd_journal_destroy(&node->journal);
    node_places_free(node);
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
        node_to_fe(node, (uint32_t)i, &it);
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


int herd_node_reload(herd_node_t *node, const herd_topology_t *topo, char *err, size_t errlen)
{
    long self = herd_topology_find(topo, node->name);
    if (self < 0) {
        snprintf(err, errlen, "%s has no server named \"%s\"", topo->path, node->name);
        return -1;
    }
    /* What takes a restart (own address, ports, key, Places URL and key) is
     * found and reported by the caller (main.c, herd_node_restart_needed). */
    if (herd_links_reconfigure(node->links, topo, err, errlen) != 0)
        return -1;
    herd_frontend_conf_t fl = {.max_clients = topo->max_clients, .idle_timeout_ms = topo->idle_timeout_ms,
                               .max_output_bytes = topo->max_output_bytes,
                               .max_clients_per_address = topo->max_clients_per_address};
    herd_frontend_set_limits(node->frontend, &fl);
    herd_msg_item_t lim = {.kind = HERD_MSG_LIMITS, .idle_timeout_ms = topo->idle_timeout_ms,
                           .max_output_bytes = topo->max_output_bytes,
                           .max_output_total_bytes = topo->max_output_total_bytes,
                           .log_commands = topo->log_commands};
    for (size_t i = 0; i < node->n_fes; i++)
        node_to_fe(node, (uint32_t)i, &lim);
    if (herd_table_set_limits(node->table, (uint64_t)topo->max_records, topo->record_ttl_s, on_drop, node) != 0)
        herd_log_event(node->log, "reload: out of memory applying limits.max_records");
    herd_table_expire(node->table, herd_time_now().sec); /* a new ttl applies at once */
    /* Records stay whatever their origin (PROTOCOL section 7): a renamed or
     * removed server's clients are still the herd's. */
    node->topo = topo;
    node_places_reload(node);
    return 0;
}

void herd_node_set_ready_wait(herd_node_t *node, long ms)
{
    node->ready_wait_ms = ms;
}

int64_t herd_node_places_deadline_ms(const herd_node_t *node)
{
    return node_places_deadline(node);
}

int64_t herd_node_stop_wait_ms(const herd_node_t *node)
{
    /* The node answers a WHATSAT by its deadline (places.timeout_ms plus its
     * margin, looked at every sweep); the front end then writes it. */
    return node->topo->places_timeout_ms + PLACES_MARGIN_MS + PENDING_SWEEP_MS + STOP_WRITE_MS;
}
