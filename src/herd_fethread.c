/* herd_fethread: a front-end thread: text in, herd_msg batches to the node,
 * herd_msg answers back, text out. See herd_fethread.h.
 *
 * Thread pattern: zactor. The actor's pipe is the one socket shared with
 * the node (start handshake: the thread signals once its reactor watches
 * the pipe; "$TERM" from zactor_destroy stops the reactor). */
#define _GNU_SOURCE /* pthread_setname_np */
#include "herd_fethread.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <czmq.h>

#include "herd_frontend.h"
#include "herd_loop.h"
#include "herd_msg.h"
#include "herd_proto.h"

#define NO_SLOT UINT32_MAX

/* A command sent to the node, waiting for its answer: the text of both
 * possible replies, so the answer only picks one. data holds "? LINE\n"
 * (line_len + 3 bytes), then for an IAMAT "AT ...\n" (at_len + 1 bytes).
 * A free slot keeps a buffer of up to SLOT_KEEP bytes for the next command,
 * so that the commands of a busy connection cost no allocation each; at most
 * SLOT_BUFFERS buffers are kept, so that a burst of commands in flight (up
 * to 256 a connection) leaves no lasting memory behind. */
typedef struct {
    herd_ticket_t ticket; /* the line it answers */
    char *data;           /* the replies (malloc'd), or NULL */
    uint32_t cap;         /* bytes allocated at data */
    bool used;            /* waiting for the node's answer */
    uint32_t line_len;    /* bytes of the command line */
    uint32_t at_len;      /* bytes of the AT line (IAMAT), without its newline */
    uint32_t next_free;   /* free list */
    uint64_t batch;       /* the number of the batch it went to the node in */
    int64_t start_ns;     /* when its line was complete (CLOCK_MONOTONIC) */
} slot_t;

#define SLOT_KEEP 512     /* a typical IAMAT's two replies fit; longer lines are rare */
#define SLOT_BUFFERS 8192 /* buffers kept at most (4 MiB) */

struct herd_fethread_t {
    uint32_t index;           /* our number */
    char *server;             /* our server name */
    size_t server_len;
    herd_loop_t *loop;        /* this thread's reactor */
    herd_log_t *log;          /* this thread's log handle */
    herd_frontend_t *fe;      /* its connections */
    zactor_t *actor;          /* the thread and its pipe (NULL in-line) */
    void *fe_side;            /* the thread's end of the pipe, while it runs */
    bool start_failed;        /* the thread could not watch its pipe (set before its start signal) */
    bool has_clock;           /* cpu_clock is the thread's CPU-time clock */
    clockid_t cpu_clock;
    bool in_line;             /* on the node's loop: no thread, no sockets */
    herd_fethread_deliver_fn *deliver; /* in-line: where batches go */
    void *deliver_arg;
    int ticks[2];             /* in-line: our ticks on the node's loop */
    herd_msg_buf_t out;       /* the batch being built this turn (on a thread of its own) */
    herd_msg_item_t *items;   /* in-line: the batch being built, unencoded */
    size_t n_items, items_cap;
    bool items_oom;           /* in-line: an item could not be added */
    uint64_t invalid;         /* lines answered "?" here, not yet reported */
    bool draining;            /* DRAIN received: report busy connections */
    uint64_t drain_sent;      /* the last drain value sent (0: none yet) */
    slot_t *slots;            /* commands owed an answer by the node */
    uint32_t n_slots, free_slot;
    uint32_t buffers;         /* slots holding a buffer (used or not) */
    char *reply;              /* scratch for assembled replies */
    size_t reply_cap;
    uint64_t batch;           /* the number of the batch being built */
    uint64_t *closed;         /* CLOSED items (conn << 1 | owed) of the batch being built, kept to send */
    size_t n_closed, closed_cap; /* again should the batch be lost */
    herd_hist_t hist[HERD_FETHREAD_KINDS];   /* command durations, this thread's own */
    herd_hist_t shown[HERD_FETHREAD_KINDS];  /* their copy as of the last turn, for /metrics */
    bool hist_moved;          /* hist changed since it was copied */
    int64_t answer_ns;        /* monotonic time the node's frame being taken came in */
    pthread_mutex_t hist_lock; /* guards shown */
};

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static char *scratch(herd_fethread_t *t, size_t n)
{
    if (n > t->reply_cap) {
        char *p = realloc(t->reply, n);
        if (!p)
            return NULL;
        t->reply = p;
        t->reply_cap = n;
    }
    return t->reply;
}

/* A free slot's index, or NO_SLOT when memory runs out. */
static uint32_t slot_take(herd_fethread_t *t)
{
    if (t->free_slot == NO_SLOT) {
        uint32_t n = t->n_slots ? t->n_slots * 2 : 256;
        if (n <= t->n_slots || n >= NO_SLOT)
            return NO_SLOT;
        slot_t *p = realloc(t->slots, n * sizeof *p);
        if (!p)
            return NO_SLOT;
        for (uint32_t i = t->n_slots; i < n; i++)
            p[i] = (slot_t){.next_free = i + 1 < n ? i + 1 : NO_SLOT};
        t->slots = p;
        t->free_slot = t->n_slots;
        t->n_slots = n;
    }
    uint32_t i = t->free_slot;
    t->free_slot = t->slots[i].next_free;
    return i;
}

static void slot_put(herd_fethread_t *t, uint32_t i)
{
    slot_t *s = &t->slots[i];
    if (s->data && (s->cap > SLOT_KEEP || t->buffers > SLOT_BUFFERS)) {
        free(s->data);
        s->data = NULL;
        s->cap = 0;
        t->buffers--;
    }
    s->used = false;
    s->next_free = t->free_slot;
    t->free_slot = i;
}

/* Adds an item to the batch being built: encoded for a thread's pipe, as
 * it is in-line (its spans must live until the batch is handed over). */
static void batch_put(herd_fethread_t *t, const herd_msg_item_t *it)
{
    if (!t->in_line) {
        herd_msg_put(&t->out, HERD_MSG_TO_NODE, it);
        return;
    }
    if (t->n_items == t->items_cap) {
        size_t cap = t->items_cap ? t->items_cap * 2 : 64;
        herd_msg_item_t *p = realloc(t->items, cap * sizeof *p);
        if (!p) {
            t->items_oom = true;
            return;
        }
        t->items = p;
        t->items_cap = cap;
    }
    t->items[t->n_items++] = *it;
}

/* Empties the batch being built (its memory kept). */
static void batch_begin(herd_fethread_t *t)
{
    herd_msg_header_t empty = {.dir = HERD_MSG_TO_NODE, .fe = t->index};
    herd_msg_begin(&t->out, &empty);
    t->n_items = 0;
    t->items_oom = false;
}

static bool batch_oom(const herd_fethread_t *t)
{
    return t->in_line ? t->items_oom : t->out.oom;
}

static size_t batch_items(const herd_fethread_t *t)
{
    return t->in_line ? t->n_items : t->out.items;
}

/* Answers "? LINE". */
static void answer_invalid(herd_fethread_t *t, herd_ticket_t tk, const char *line, size_t len)
{
    char *r = scratch(t, len + 3);
    if (!r) {
        herd_frontend_close(t->fe, tk, "out of memory for its answer");
        return;
    }
    r[0] = '?';
    r[1] = ' ';
    memcpy(r + 2, line, len);
    r[len + 2] = '\n';
    herd_frontend_answer(t->fe, tk, r, len + 3);
}

/* A slot holding "? LINE\n" and room for `extra` more bytes. */
static uint32_t slot_for(herd_fethread_t *t, herd_ticket_t tk, const char *line, size_t len, size_t extra)
{
    uint32_t i = slot_take(t);
    if (i == NO_SLOT)
        return NO_SLOT;
    slot_t *s = &t->slots[i];
    size_t need = len + 3 + extra;
    if (need > s->cap) {
        size_t cap = need < SLOT_KEEP ? SLOT_KEEP : need;
        char *d = malloc(cap);
        if (!d) {
            slot_put(t, i);
            return NO_SLOT;
        }
        if (s->data)
            free(s->data);
        else
            t->buffers++;
        s->data = d;
        s->cap = (uint32_t)cap;
    }
    char *d = s->data;
    d[0] = '?';
    d[1] = ' ';
    memcpy(d + 2, line, len);
    d[len + 2] = '\n';
    s->used = true;
    s->ticket = tk;
    s->line_len = (uint32_t)len;
    s->at_len = 0;
    s->batch = t->batch;
    s->start_ns = herd_frontend_read_mono_ns(t->fe);
    return i;
}

/* The front end's line handler: the text protocol, then a batch item. */
static void on_line(void *arg, herd_ticket_t tk, const char *line, size_t len)
{
    herd_fethread_t *t = arg;
    herd_cmd_t cmd;
    herd_proto_parse(line, len, &cmd);
    if (cmd.kind == HERD_CMD_EMPTY) {
        herd_frontend_answer(t->fe, tk, NULL, 0);
        return;
    }
    if (cmd.kind != HERD_CMD_IAMAT && cmd.kind != HERD_CMD_WHATSAT) {
        t->invalid++;
        answer_invalid(t, tk, line, len);
        return;
    }
    herd_msg_item_t it = {.kind = cmd.kind == HERD_CMD_IAMAT ? HERD_MSG_IAMAT : HERD_MSG_WHATSAT,
                          .conn = tk.conn, .seq = tk.seq};
    uint32_t i;
    if (cmd.kind == HERD_CMD_IAMAT) {
        /* The AT line is made in the slot, after the line. Its last three
         * fields and their two spaces are at most len - 6 bytes of the
         * line ("IAMAT" and three separators are not in them); before them
         * come "AT ", our name, a space, the skew (less than
         * HERD_TIME_DIFF_MAX) and a space; after them its NUL, which the
         * newline then replaces. */
        size_t most = t->server_len + HERD_TIME_DIFF_MAX + len;
        i = slot_for(t, tk, line, len, most);
        if (i != NO_SLOT) {
            char *a = t->slots[i].data + len + 3;
            size_t n = herd_proto_format_at(a, most, t->server, t->server_len, herd_frontend_read_time(t->fe), &cmd);
            a[n] = '\n';
            t->slots[i].at_len = (uint32_t)n;
            it.at = (herd_span_t){a, n};
            it.time = cmd.time;
            it.pos_off = (uint32_t)(n - cmd.time_txt.len - 1 - cmd.pos.len);
            it.pos_len = (uint32_t)cmd.pos.len;
            it.id_off = (uint32_t)(it.pos_off - 1 - cmd.id.len);
            it.id_len = (uint32_t)cmd.id.len;
        }
    } else {
        /* The spans point into the slot's copy of the line, which lives
         * until the answer (an in-line batch is not encoded). */
        i = slot_for(t, tk, line, len, 0);
        if (i != NO_SLOT) {
            const char *copy = t->slots[i].data + 2;
            it.id = (herd_span_t){copy + (cmd.id.p - line), cmd.id.len};
            it.radius = (herd_span_t){copy + (cmd.radius.p - line), cmd.radius.len};
            it.bound = cmd.bound;
        }
    }
    if (i == NO_SLOT) {
        herd_log_event(t->log, "out of memory holding a command for the node");
        herd_frontend_close(t->fe, tk, "out of memory for its command");
        return;
    }
    it.handle = i;
    batch_put(t, &it);
}

/* A connection ended: the node learns it (max_clients is counted there,
 * and its WHATSATs are given up when it was owed answers). */
static void on_closed(void *arg, uint64_t conn, bool owed)
{
    herd_fethread_t *t = arg;
    herd_msg_item_t it = {.kind = HERD_MSG_CLOSED, .conn = conn, .outcome = owed ? 1 : 0};
    batch_put(t, &it);
    /* Kept aside too: the node must learn of every end (max_clients and the
     * per-address count), even from a batch lost for want of memory. */
    if (t->n_closed == t->closed_cap) {
        size_t cap = t->closed_cap ? t->closed_cap * 2 : 64;
        uint64_t *p = realloc(t->closed, cap * sizeof *p);
        if (!p) {
            herd_log_event(t->log, "front end %u: out of memory keeping a closed connection for the node", t->index);
            return;
        }
        t->closed = p;
        t->closed_cap = cap;
    }
    t->closed[t->n_closed++] = conn << 1 | (owed ? 1 : 0);
}

/* The slot an answer names, or NULL when it names none of ours. */
static slot_t *answered_slot(herd_fethread_t *t, uint32_t handle, uint64_t conn, uint64_t seq)
{
    if (handle >= t->n_slots || !t->slots[handle].used)
        return NULL;
    slot_t *s = &t->slots[handle];
    return s->ticket.conn == conn && s->ticket.seq == seq ? s : NULL;
}

/* One IAMAT's answer: its AT line, or "? LINE" when refused. */
static void take_iamat(herd_fethread_t *t, uint32_t handle, uint64_t conn, uint64_t seq, uint32_t outcome)
{
    slot_t *s = answered_slot(t, handle, conn, seq);
    if (!s)
        return;
    herd_hist_observe(&t->hist[HERD_FETHREAD_IAMAT], t->answer_ns - s->start_ns);
    t->hist_moved = true;
    if (outcome == HERD_MSG_REFUSED || s->at_len == 0)
        herd_frontend_answer(t->fe, s->ticket, s->data, s->line_len + 3);
    else
        herd_frontend_answer(t->fe, s->ticket, s->data + s->line_len + 3, s->at_len + 1);
    slot_put(t, handle);
}

void herd_fethread_take_iamats(herd_fethread_t *t, const herd_fethread_iamat_t *a, size_t n)
{
    t->answer_ns = mono_ns(); /* taken together, as a frame's */
    for (size_t i = 0; i < n; i++)
        take_iamat(t, a[i].handle, a[i].conn, a[i].seq, a[i].outcome);
}

/* One WHATSAT's answer from the node. */
static void take_whatsat(herd_fethread_t *t, const herd_msg_item_t *it)
{
    slot_t *s = answered_slot(t, it->handle, it->conn, it->seq);
    if (!s)
        return;
    if (it->outcome != HERD_MSG_DROPPED) {
        herd_hist_observe(&t->hist[HERD_FETHREAD_WHATSAT], t->answer_ns - s->start_ns);
        t->hist_moved = true;
    }
    if (it->outcome == HERD_MSG_UNKNOWN) {
        herd_frontend_answer(t->fe, s->ticket, s->data, s->line_len + 3);
    } else if (it->outcome == HERD_MSG_ANSWERED) {
        /* The AT line, a newline, the JSON, two newlines. */
        char *r = scratch(t, it->at.len + it->json.len + 3);
        if (!r) {
            herd_log_event(t->log, "out of memory answering a WHATSAT");
            herd_frontend_close(t->fe, s->ticket, "out of memory for its answer");
        } else {
            memcpy(r, it->at.p, it->at.len);
            r[it->at.len] = '\n';
            memcpy(r + it->at.len + 1, it->json.p, it->json.len);
            r[it->at.len + 1 + it->json.len] = '\n';
            r[it->at.len + 2 + it->json.len] = '\n';
            herd_frontend_answer(t->fe, s->ticket, r, it->at.len + it->json.len + 3);
        }
    }
    slot_put(t, it->handle);
}

/* One frame from the node: from the socket (on a thread of its own) or
 * handed over by the node (in-line). */
void herd_fethread_take(herd_fethread_t *t, const void *data, size_t len)
{
    herd_msg_reader_t r;
    herd_msg_header_t h;
    herd_msg_item_t it;
    int rc = herd_msg_open(&r, data, len, &h);
    t->answer_ns = mono_ns(); /* the answers of a frame are taken together */
    while (rc == 0 && (rc = herd_msg_next(&r, &it)) == 1) {
        rc = 0;
        switch (it.kind) {
        case HERD_MSG_IAMAT:
            take_iamat(t, it.handle, it.conn, it.seq, it.outcome);
            break;
        case HERD_MSG_WHATSAT:
            take_whatsat(t, &it);
            break;
        case HERD_MSG_ADOPT: {
            char peer[64];
            snprintf(peer, sizeof peer, "%.*s", (int)it.peer.len, it.peer.p);
            if (herd_frontend_adopt(t->fe, (int)it.fd, it.serial, peer) != 0) /* not served: the node counts it closed */
                on_closed(t, it.serial << 32 | (uint32_t)it.fd, false);
            break;
        }
        case HERD_MSG_LIMITS: {
            herd_frontend_conf_t lim = {.max_clients = LONG_MAX,
                                        .idle_timeout_ms = (long)it.idle_timeout_ms,
                                        .max_output_bytes = (long)it.max_output_bytes,
                                        .max_output_total_bytes = (long long)it.max_output_total_bytes,
                                        .log_commands = it.log_commands != 0};
            herd_frontend_set_limits(t->fe, &lim);
            break;
        }
        case HERD_MSG_DRAIN:
            t->draining = true;
            herd_frontend_drain(t->fe);
            break;
        case HERD_MSG_STOP:
            if (!t->in_line)
                herd_loop_stop(t->loop);
            break;
        case HERD_MSG_CLOSED:
        default:
            break;
        }
    }
    if (rc < 0)
        herd_log_event(t->log, "front end %u: dropped a malformed message from the node", t->index);
}

/* Frames from the node. */
static void node_ready(herd_loop_t *loop, void *arg)
{
    (void)loop;
    herd_fethread_t *t = arg;
    for (;;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, t->fe_side, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            if (errno == EINTR)
                continue;
            return;
        }
        if (zmq_msg_size(&m) == 5 && memcmp(zmq_msg_data(&m), "$TERM", 5) == 0) {
            zmq_msg_close(&m);
            herd_loop_stop(t->loop);
            return;
        }
        herd_fethread_take(t, zmq_msg_data(&m), zmq_msg_size(&m));
        zmq_msg_close(&m);
    }
}

/* Copies the histograms for /metrics when they changed this turn. */
static void publish_hist(herd_fethread_t *t)
{
    if (!t->hist_moved)
        return;
    pthread_mutex_lock(&t->hist_lock);
    memcpy(t->shown, t->hist, sizeof t->shown);
    pthread_mutex_unlock(&t->hist_lock);
    t->hist_moved = false;
}

/* The batch being built ran out of memory, so it cannot go to the node:
 * every command in it would stay owed forever. Each one's connection is
 * closed (logged), since its answers could no longer come in order; the
 * batch starts again with the closings kept aside (the node must count
 * every end), and those closings come in it again. */
static void batch_lost(herd_fethread_t *t)
{
    herd_log_event(t->log, "front end %u: out of memory for a batch to the node: closing the connections "
                           "whose commands were in it", t->index);
    batch_begin(t);
    for (size_t i = 0; i < t->n_closed; i++) {
        herd_msg_item_t it = {.kind = HERD_MSG_CLOSED, .conn = t->closed[i] >> 1, .outcome = (uint32_t)(t->closed[i] & 1)};
        batch_put(t, &it);
    }
    for (uint32_t i = 0; i < t->n_slots; i++) {
        slot_t *s = &t->slots[i];
        if (!s->used || s->batch != t->batch)
            continue;
        herd_frontend_close(t->fe, s->ticket, "out of memory for a batch to the node: its commands were lost");
        slot_put(t, i);
    }
}

/* The turn's batch goes to the node twice a turn: before the replies are
 * written (so that a "?" is counted in /metrics before its client sees it)
 * and after (the connections closed while writing, the lines of paused
 * connections read again, and, while draining, how many connections are
 * still busy). Each sends only what is new. */
static void send_batch(herd_fethread_t *t, bool late)
{
    publish_hist(t);
    if (batch_oom(t))
        batch_lost(t);
    uint64_t drain = t->draining ? herd_frontend_busy(t->fe) + 1 : 0;
    if (!batch_items(t) && !t->invalid && drain == t->drain_sent)
        return;
    if (batch_oom(t))
        return; /* lost again: the next turn closes what joined it and sends the kept closings again */
    if (t->in_line) {
        herd_fethread_batch_t b = {.items = t->items, .n = t->n_items, .invalid = t->invalid, .drain = drain};
        t->deliver(t->deliver_arg, &b, late);
    } else {
        herd_msg_header_t h = {.dir = HERD_MSG_TO_NODE, .fe = t->index, .invalid = t->invalid, .drain = drain};
        herd_msg_set_header(&t->out, &h);
        while (zmq_send(t->fe_side, t->out.p, t->out.len, 0) < 0 && errno == EINTR)
            ;
        herd_loop_zmq_sent(t->loop, t->fe_side);
    }
    t->invalid = 0;
    t->drain_sent = drain;
    t->n_closed = 0;
    t->batch++;
    batch_begin(t);
}

static void send_early(herd_loop_t *loop, void *arg)
{
    (void)loop;
    send_batch(arg, false);
}

static void send_late(herd_loop_t *loop, void *arg)
{
    (void)loop;
    send_batch(arg, true);
}

void herd_fethread_flush(herd_fethread_t *t)
{
    if (t->in_line)
        send_batch(t, false);
}

/* The thread: watch the pipe, signal the start, run the reactor until
 * "$TERM". */
static void fe_actor(zsock_t *pipe, void *arg)
{
    herd_fethread_t *t = arg;
    char name[16];
    snprintf(name, sizeof name, "herd-fe-%u", t->index);
    pthread_setname_np(pthread_self(), name);
    t->has_clock = pthread_getcpuclockid(pthread_self(), &t->cpu_clock) == 0;
    t->fe_side = zsock_resolve(pipe);
    t->start_failed = herd_loop_add_zmq(t->loop, t->fe_side, node_ready, t) != 0;
    zsock_signal(pipe, 0);
    if (t->start_failed)
        return;
    if (herd_loop_run(t->loop) != 0)
        herd_log_event(t->log, "front end %u: event loop failed: %s", t->index, strerror(errno));
    herd_log_flush(t->log);
    herd_loop_remove_zmq(t->loop, t->fe_side);
    t->fe_side = NULL;
}

/* Starts the thread. Its pipe has no high-water mark (CZMQ's global pipe
 * setting, restored at once): nothing on it is ever dropped. */
static int start_actor(herd_fethread_t *t)
{
    size_t old_hwm = zsys_pipehwm();
    zsys_set_pipehwm(0);
    t->actor = zactor_new(fe_actor, t);
    zsys_set_pipehwm(old_hwm);
    if (t->actor && t->start_failed)
        zactor_destroy(&t->actor);
    return t->actor ? 0 : -1;
}

herd_fethread_t *herd_fethread_new(const herd_fethread_conf_t *conf, herd_log_t *log, char *err, size_t errlen)
{
    herd_fethread_t *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    t->index = conf->index;
    t->free_slot = NO_SLOT;
    pthread_mutex_init(&t->hist_lock, NULL);
    t->in_line = conf->loop != NULL;
    t->deliver = conf->deliver;
    t->deliver_arg = conf->deliver_arg;
    t->server = strdup(conf->server);
    t->server_len = strlen(conf->server);
    t->loop = t->in_line ? conf->loop : herd_loop_new();
    if (!t->server || !t->loop) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (t->in_line && !t->deliver) {
        snprintf(err, errlen, "front end %u: in-line without a node to deliver to", t->index);
        goto fail;
    }
    t->log = herd_log_attach(log, err, errlen);
    if (!t->log)
        goto fail;
    herd_log_set_turn_clock(t->log, true);
    herd_frontend_conf_t fc = {
        .port = 0,
        .max_clients = LONG_MAX, /* counted by the node's acceptor */
        .idle_timeout_ms = conf->idle_timeout_ms,
        .max_output_bytes = conf->max_output_bytes,
        .max_output_total_bytes = conf->max_output_total_bytes,
        .log_commands = conf->log_commands,
        .on_line = on_line,
        .on_closed = on_closed,
        .arg = t,
    };
    t->fe = herd_frontend_new(t->loop, t->log, &fc, err, errlen);
    if (!t->fe)
        goto fail;
    herd_msg_header_t h = {.dir = HERD_MSG_TO_NODE, .fe = t->index};
    herd_msg_begin(&t->out, &h);
    if (t->out.oom || (t->ticks[0] = herd_loop_add_tick(t->loop, HERD_PHASE_COMMANDS, send_early, t)) < 0 ||
        (t->ticks[1] = herd_loop_add_tick(t->loop, HERD_PHASE_LOG, send_late, t)) < 0 ||
        herd_log_attach_loop(t->log, t->loop) != 0) {
        snprintf(err, errlen, "cannot set up front end %u (its socket, ticks or log): %s", t->index,
                 zmq_strerror(errno));
        goto fail;
    }
    if (t->in_line)
        return t;
    if (start_actor(t) != 0) {
        snprintf(err, errlen, "cannot start front-end thread %u: %s", t->index, zmq_strerror(errno));
        goto fail;
    }
    return t;
fail:
    herd_fethread_destroy(&t);
    return NULL;
}

void *herd_fethread_sock(herd_fethread_t *t)
{
    return t->actor ? zsock_resolve(zactor_sock(t->actor)) : NULL;
}

double herd_fethread_cpu_seconds(const herd_fethread_t *t)
{
    struct timespec ts;
    if (!t->actor || !t->has_clock || clock_gettime(t->cpu_clock, &ts) != 0)
        return -1;
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

void herd_fethread_destroy(herd_fethread_t **p)
{
    if (!p || !*p)
        return;
    herd_fethread_t *t = *p;
    zactor_destroy(&t->actor); /* "$TERM", then waits for the thread's end */
    herd_frontend_destroy(&t->fe);
    herd_log_detach_loop(t->log);
    if (t->in_line) {
        for (int i = 0; i < 2; i++)
            if (t->ticks[i] > 0)
                herd_loop_remove_tick(t->loop, t->ticks[i]);
    } else {
        herd_loop_destroy(&t->loop);
    }
    herd_log_close(&t->log);
    for (uint32_t i = 0; i < t->n_slots; i++)
        free(t->slots[i].data);
    free(t->slots);
    herd_msg_buf_free(&t->out);
    free(t->items);
    free(t->reply);
    free(t->closed);
    free(t->server);
    pthread_mutex_destroy(&t->hist_lock);
    free(t);
    *p = NULL;
}

void herd_fethread_command_hist(herd_fethread_t *t, herd_hist_t out[HERD_FETHREAD_KINDS])
{
    pthread_mutex_lock(&t->hist_lock);
    for (int k = 0; k < HERD_FETHREAD_KINDS; k++)
        herd_hist_merge(&out[k], &t->shown[k]);
    pthread_mutex_unlock(&t->hist_lock);
}

void herd_fethread_render_command_hist(const herd_hist_t h[HERD_FETHREAD_KINDS], FILE *f)
{
    fprintf(f, "# HELP herd_command_duration_seconds Client commands from their complete line to their reply "
               "queued, by command.\n"
               "# TYPE herd_command_duration_seconds histogram\n");
    herd_hist_render(&h[HERD_FETHREAD_IAMAT], f, "herd_command_duration_seconds", "command=\"IAMAT\"");
    herd_hist_render(&h[HERD_FETHREAD_WHATSAT], f, "herd_command_duration_seconds", "command=\"WHATSAT\"");
}
