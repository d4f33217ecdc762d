/* herd_node_int.h: what the node's files share. Private to the node.
 *
 * The files, each below the one that calls it (none calls back up):
 *   herd_node.c         commands, the table, floods, the turn, lifetime
 *   herd_node_places.c  WHATSATs and the Places worker's replies
 *   herd_node_state.c   durable state: the load, the group commit, held replies
 *   herd_node_metrics.c /metrics and the page at `/`
 *   herd_node_health.c  readiness: /readyz, /healthz and their log lines
 * They talk to the front ends through this header's node_to_fe, the answer
 * sink: a part queues what goes out, the turn (herd_node.c) sends it. */
#ifndef HERD_NODE_INT_H
#define HERD_NODE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "herd_admin.h"
#include "herd_fethread.h"
#include "herd_frontend.h"
#include "herd_hist.h"
#include "herd_journal.h"
#include "herd_links.h"
#include "herd_log.h"
#include "herd_loop.h"
#include "herd_msg.h"
#include "herd_places.h"
#include "herd_proto.h"
#include "herd_record.h"
#include "herd_table.h"
#include "herd_topology.h"

/* The node (herd_node.h names it too; the parts need only its layout). */
typedef struct herd_node_t herd_node_t;

#define N_TURN_TICKS 2 /* the node's steps of each turn: commit, answers */
#define PENDING_BUCKETS 1024 /* WHATSATs waiting on the Places worker, hashed by request id */
#define HEALTH_TICK_MS 100    /* how often readiness is looked at, so a brief exchange is not missed */
/* A WHATSAT is answered by places.timeout_ms plus this margin even if the
 * worker never answers (a reply lost, a request queued too long): every
 * ticket is answered, and a client is never owed an answer for ever. */
#define PLACES_MARGIN_MS 1000
#define PENDING_SWEEP_MS 100 /* how often the deadlines are looked at */
/* Places answers handed to one front end per turn stop once its batch
 * holds this many bytes (one answer always goes): answers that share one
 * body are copied into a batch a turn's worth at a time, not all at once. */
#define PLACES_BATCH_BYTES (4u << 20)

/* Upper bounds (seconds) of the Places upstream latency histogram
 * (herd_node_metrics.c). */
#define N_LATENCY 10
extern const double node_latency_bounds[N_LATENCY];

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
    uint64_t places_refused_queued;                /* answered at once: places.max_queued were waiting */
    uint64_t places_refused_worker;                /* answered at once: the worker's pipe was full */
    uint64_t latency_buckets[N_LATENCY];           /* upstream calls per latency bucket (not cumulative) */
    uint64_t latency_count;                        /* upstream calls timed */
    double latency_sum;                            /* their total seconds */
} counters_t;

/* A WHATSAT waiting for its Places reply, then (ready) for its turn to be
 * handed to its front end. */
typedef struct pending_t {
    struct pending_t *next; /* next in the bucket (while waiting) */
    struct pending_t *older, *newer; /* waiting: arrival order, which is deadline order; ready: answer order */
    struct pending_t *cprev, *cnext; /* the other pending WHATSATs of the same connection */
    uint64_t req_id;        /* the id given to the worker */
    herd_ticket_t ticket;   /* the line to answer */
    uint32_t fe;            /* the front-end thread it came from */
    uint32_t handle;        /* that front end's slot for it */
    int64_t arrival_ms;     /* when it came (herd_loop_now_ms): its deadline follows places.timeout_ms */
    herd_places_body_t *body; /* ready: the answer, shared with the others it answers */
    size_t at_len;          /* bytes of the AT line */
    char at[];              /* the AT line the query was made from */
} pending_t;

/* A list of pending WHATSATs through their older / newer links. */
typedef struct {
    pending_t *head, *tail; /* the oldest, the newest */
} pending_list_t;

struct herd_node_t;

/* One front-end thread, as the node sees it. */
typedef struct {
    struct herd_node_t *node;
    uint32_t index;          /* its number */
    herd_fethread_t *thread; /* the thread (or the front end in-line) */
    bool in_line;            /* on this thread (frontend_threads 0) */
    herd_msg_buf_t out;      /* this turn's answers and orders for it */
    herd_fethread_iamat_t *iamats; /* in-line: this turn's IAMAT answers, unencoded */
    size_t n_iamats, iamats_cap;
    size_t conns;            /* connections handed to it and not yet closed */
    uint64_t drain;          /* what it last said while draining: 0 unknown, busy + 1 */
} fe_t;

/* The client ids the load refused or dropped by the limits (the journal
 * is not open yet, so no DROP could be written then), each once: a flat
 * buffer of ids (a uint16_t length, then the bytes) and an open-addressing
 * set over it (0 empty, else the id's offset + 1). Freed at the end of the
 * load (herd_node_state.c). */
typedef struct {
    char *ids;           /* the ids, one after another */
    size_t len, cap;     /* bytes used, bytes allocated */
    uint64_t *slots;     /* mask + 1 slots, or NULL before the first id */
    size_t n, mask;      /* ids held; slots - 1 */
    bool failed;         /* out of memory: some ids were not kept */
} load_drops_t;

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
    int turn_ticks[N_TURN_TICKS]; /* the node's steps of the turn (turn_ticks in herd_node.c) */
    herd_places_t *places;        /* the Places worker */
    herd_links_t *links;          /* the neighbours */
    herd_admin_t *admin;          /* /metrics, /healthz, /config, or NULL without admin_port */
    int health_timer;             /* timer id of health_tick, or 0 */
    int64_t start_ms;             /* when the node was made: the wait for a neighbour starts here */
    long ready_wait_ms;           /* how long to wait for a first exchange before ready anyway */
    bool started;                 /* latched: the start is over (herd_node_health.c) */
    bool draining;                /* SIGTERM seen: /healthz says draining */
    char start_reason[96];        /* how the start ended (or what it waits for) */
    herd_journal_t *journal;      /* the table on disk, or NULL without state_dir */
    int64_t log_window_ms;        /* start of the second that log_budget counts */
    unsigned log_lines;           /* dropped-record lines logged in it */
    uint64_t log_suppressed;      /* ... and not logged */
    counters_t n;                 /* counters for /metrics */
    pending_t *pending[PENDING_BUCKETS];
    pending_list_t waiting;       /* every WHATSAT waiting on the worker, oldest first */
    pending_list_t ready;         /* answered by the worker, not yet handed to the front ends */
    zhashx_t *pending_conns;      /* "fe:conn" -> that connection's first pending WHATSAT */
    bool places_reconf;           /* reloaded Places settings not yet taken by the worker's pipe */
    herd_log_limit_t refuse_limit; /* the rate of lines about refused WHATSATs */
    size_t n_pending;             /* WHATSATs waiting or ready */
    int pending_timer;            /* timer id of the deadline sweep */
    uint64_t next_req_id;
    int expire_timer;             /* drops records past limits.record_ttl_s */
    herd_hist_t update_age[2];    /* stored peer updates' age here: [0] floods, [1] exchanges */
    bool started_by_wait;         /* started by ready_wait_ms, no exchange done since */
    bool health_seen;             /* a readiness was logged (health_tick) */
    herd_health_t health_last;    /* ... the last one */
    bool health_durable;          /* ... and whether the state was durable then */
    uint64_t load_records;        /* records read from state_dir so far */
    size_t load_expect;           /* about how many there are (from the files' sizes) */
    int64_t load_start_ms, load_said_ms; /* the load's start; its last progress report (herd_clock_ms) */
    bool loading;                 /* the state is loading (node_open_journal) */
    load_drops_t load_drops;      /* ... and the ids it refused or dropped so far */
};

/* Room for one more unencoded IAMAT answer for f. */
static inline bool node_iamat_room(fe_t *f)
{
    if (f->n_iamats < f->iamats_cap)
        return true;
    size_t cap = f->iamats_cap ? f->iamats_cap * 2 : 64;
    herd_fethread_iamat_t *p = (herd_fethread_iamat_t *)realloc(f->iamats, cap * sizeof *p);
    if (!p)
        return false;
    f->iamats = p;
    f->iamats_cap = cap;
    return true;
}

/* An IAMAT's answer for front end `fe`, queued without making a herd_msg
 * item: to the front end on this thread as it is (herd_fethread.h); to a
 * thread, or without memory for the array, in the frame. */
static inline void node_iamat_to_fe(herd_node_t *node, uint32_t fe, herd_ticket_t t, uint32_t handle,
                                    uint32_t outcome)
{
    if (fe >= node->n_fes)
        return;
    fe_t *f = &node->fes[fe];
    if (f->in_line && node_iamat_room(f)) {
        f->iamats[f->n_iamats++] = (herd_fethread_iamat_t){t.conn, t.seq, handle, outcome};
        return;
    }
    herd_msg_item_t it = {.kind = HERD_MSG_IAMAT, .conn = t.conn, .seq = t.seq, .handle = handle, .outcome = outcome};
    herd_msg_put(&f->out, HERD_MSG_TO_FE, &it);
}

/* The answer sink: queues an answer (or order) for front end `fe`; it goes
 * out at the end of the turn (turn_answers in herd_node.c), after the links'
 * flush and the group commit (flood before reply, PROTOCOL section 7). */
static inline void node_to_fe(herd_node_t *node, uint32_t fe, const herd_msg_item_t *it)
{
    if (it->kind == HERD_MSG_IAMAT)
        node_iamat_to_fe(node, fe, (herd_ticket_t){it->conn, it->seq}, it->handle, it->outcome);
    else if (fe < node->n_fes)
        herd_msg_put(&node->fes[fe].out, HERD_MSG_TO_FE, it);
}

/* WHATSATs (herd_node_places.c): one from front end `fe`; the worker's
 * replies; the deadline sweep (a timer); a connection that closed while
 * owed answers; the turn's hand-over of answers the worker gave (oldest
 * first, a bounded batch per front end; the rest wait for the next turn). */
void node_do_whatsat(herd_node_t *node, uint32_t fe, const herd_msg_item_t *it);
void node_places_ready(herd_loop_t *loop, void *arg);
void node_pending_sweep(herd_loop_t *loop, void *arg);
void node_on_closed(herd_node_t *node, uint32_t fe, uint64_t conn, bool owed);
void node_places_deliver(herd_node_t *node);

/* The loop time by which every WHATSAT read so far has had its answer
 * handed to its front end, or 0 (see herd_node_places_deadline_ms). */
int64_t node_places_deadline(const herd_node_t *node);

/* The node's WHATSAT state: node_places_init (0, or -1 out of memory) makes
 * the per-connection index; node_places_reload gives the worker the
 * reloaded Places settings the node now uses; node_places_free drops every
 * pending WHATSAT unanswered. */
int node_places_init(herd_node_t *node);
void node_places_reload(herd_node_t *node);
void node_places_free(herd_node_t *node);

/* Durable state (herd_node_state.c): node_open_journal loads state_dir/NAME
 * into the table and starts the writer (0, or -1 with err filled);
 * node_state_commit hands the turn's records to the writer (nothing
 * without a state_dir). */
int node_open_journal(herd_node_t *node, const herd_topology_t *topo, char *err, size_t errlen);
void node_state_commit(herd_node_t *node);

/* A record the table dropped by its limits while no journal is open: while
 * the state loads, its id is kept, and once the journal is open it gets a
 * DROP unless the load ended holding the client again. Nothing otherwise
 * (no state_dir). */
void node_state_load_dropped(herd_node_t *node, const char *id, size_t id_len);

/* /metrics, rendered on the reactor thread when the admin thread asks
 * (herd_node_metrics.c). */
char *node_render_metrics(void *arg, size_t *len);

/* /readyz and /healthz (herd_node_health.c): the state and its reason;
 * node_health_tick (a timer) logs each change of it once; node_durable is
 * false when the table is no longer all on disk (a write or fsync failed),
 * true without a state_dir. */
herd_health_t node_health(void *arg, char *reason, size_t cap);
void node_health_tick(herd_loop_t *loop, void *arg);
bool node_durable(const herd_node_t *node);

/* The page at `/` (herd_node_metrics.c, herd_admin_page.c). */
char *node_render_page(void *arg, size_t *len);

/* Counts a stored update from a neighbour in herd_update_age_seconds: our
 * clock now minus the origin's receive time `recv` (client time + skew, as
 * the table keeps it). `flood`: it came by flooding, not by an exchange. */
void node_observe_update_age(herd_node_t *node, herd_time_t recv, bool flood);

/* For tests of the node's side of the msgpack boundary, without its
 * front-end threads' sockets: handles one herd_msg batch as if front end
 * `fe` had sent it (returns -1 for no such front end), and takes the frame
 * of answers and orders queued for front end `fe` that the end of the turn
 * would send (malloc'd, *len set; NULL when out of memory). */
int herd_node_feed(herd_node_t *node, uint32_t fe, const void *data, size_t len);
char *herd_node_take_answers(herd_node_t *node, uint32_t fe, size_t *len);

#endif
