/* herd_links_int.h: what the files of the links module share. Private to
 * the module; nothing else includes it. From the top down, each file calls
 * only the ones below it:
 *   herd_links.c         the link manager: ROUTER, DEALERs, batches, the timer
 *   herd_links_repair.c  the exchange protocol of one link, through links_net_t
 *   herd_links_auth.c    CURVE keys of the ROUTER and the DEALERs
 *   herd_links_guard.c   the peer port's guard (ZAP), socket monitors, log limits */
#ifndef HERD_LINKS_INT_H
#define HERD_LINKS_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <czmq.h>

#include "herd_links.h"
#include "herd_wire.h"

/* One neighbour: our DEALER to it, its monitor, and the batch waiting to go.
 * Heap-allocated so the reactor can keep a pointer to it across reloads. */
typedef struct {
    struct herd_links_t *links; /* owner */
    char *name;            /* its server name (owned: outlives a reloaded topology) */
    size_t name_len;       /* strlen(name) */
    void *dealer;          /* our DEALER, connected to its ROUTER */
    void *monitor;         /* PAIR receiving the DEALER's connection events */
    bool up;               /* the DEALER's connection is established */
    bool synced;           /* it sent SYNC_END since our link to it last came up */
    bool drop_logged;      /* a "dropped" line was logged since the link last came up */
    char endpoint[300];    /* its ROUTER, "tcp://ADDR:PORT" */
    bool ipv6;             /* the endpoint is an IPv6 address */
    char key[41];          /* its CURVE public key (Z85), "" when it has none in the topology */
    uint8_t key_bin[32];   /* the same, binary, as ZAP hands it to us */
    char *batch;           /* AT lines waiting, back to back */
    size_t batch_len, batch_cap;
    size_t *offs;          /* start of each line in batch, plus its end */
    size_t n_lines, offs_cap;
    bool urgent;           /* the batch holds an update of our own client's (it goes at the end of the turn) */
    int64_t sent_us;       /* when a batch of floods was last sent to it (monotonic microseconds) */
    uint64_t msgs_out, msgs_in;       /* ZeroMQ messages sent to it / received from it */
    uint64_t updates_out, updates_in; /* AT lines sent to it / received from it */
    uint64_t dropped;      /* messages that could not be queued */
    int64_t hello_ms;      /* when we last sent it HELLO */
    /* Anti-entropy (herd_repair): */
    int64_t round_ms;      /* when our open exchange with it started; 0 = none open */
    int64_t round_end_ms;  /* when our last exchange with it ended */
    bool round_answered;   /* it answered the open exchange's first message */
    int64_t asked_ms;      /* when we last sent it an exchange request (HELLO, DIGEST, BUCKETS) */
    int64_t waiting_ms;    /* when the oldest of our requests it has not answered was sent; 0 = none */
    uint64_t round_records; /* AT lines we sent it in our open exchange */
    int64_t answering_ms;  /* when we answered its exchange with FPRINTS; 0 = its exchange is not open */
    int64_t heavy_window_ms; /* start of the current one-second window of BUCKETS requests */
    unsigned heavy_count;  /* BUCKETS requests from it in that window */
    int64_t light_window_ms; /* start of the current one-second window of HELLO and DIGEST */
    unsigned light_count;  /* HELLO and DIGEST from it in that window */
    int64_t fprints_window_ms; /* start of the current one-second window of FPRINTS */
    unsigned fprints_count; /* FPRINTS from it in that window */
    uint64_t rounds;       /* exchanges we opened with it */
    uint64_t rounds_equal; /* ... that found the tables equal at once */
    uint64_t repair_records_out; /* AT lines sent to it by exchanges */
    uint64_t repair_bytes_out;   /* bytes of exchange messages sent to it */
    uint64_t repair_refused; /* its requests refused (rate, or not asked for) */
    uint64_t answer_records; /* AT lines sent in answer to its open exchange so far */
    /* Redialling a DEALER that libzmq gave up on (a refused handshake): */
    int64_t redial_at_ms;  /* when to make the DEALER anew; 0 = not scheduled */
    long redial_backoff_ms; /* the wait before the next redial */
    uint64_t redials;      /* DEALERs made anew */
    int64_t heard_ms;      /* when a message from it last came in on our ROUTER, or its link came up */
    bool seen_down;        /* its link went down (or never came up) since it last came up */
    int64_t answer_end_ms; /* when our last answer to its BUCKETS ended (its WANT marked last) */
    int64_t answer_gap_ms; /* how long after that its next BUCKETS waits: grows with what the answer sent */
    int64_t groups_ms;     /* when we last sent it GROUPS: a BUCKETS answers that, once */
    uint8_t *offered;      /* two bitmaps of HERD_REPAIR_BITMAP_BYTES (NULL until needed): the buckets our
                              open exchange asked about (BUCKETS), and those our answer offered (FPRINTS) */
    bool differ;           /* the last comparison of our tables with it found them different */
    double success_s;      /* when an exchange with it last ended (wall clock, s); 0 = never */
} neighbour_t;

/* The kinds of log line that a stranger or a peer can make us repeat: each
 * kind is logged at most LINKS_LOG_PER_SEC times a second, by herd_log's
 * limiter (herd_log_limit_take), the next line saying how many were left out. */
typedef enum {
    LINKS_LOG_STRANGER,  /* a message from a sender that is not a neighbour */
    LINKS_LOG_BAD,       /* a message that does not decode, or of the wrong frame count */
    LINKS_LOG_KEY,       /* a name used with another key than its own */
    LINKS_LOG_REFUSED,   /* a connection refused by the guard */
    LINKS_LOG_REPAIR,    /* an exchange request refused */
    LINKS_LOG_NAME,      /* a HELLO whose name is not its link's */
    LINKS_LOG_KINDS
} links_log_kind_t;

/* Lines of one kind a second: a burst of distinct faults from one peer (a
 * line each) is logged whole; a flood is not. */
#define LINKS_LOG_PER_SEC 16

/* What the exchanges (herd_links_repair.c) need of the sockets, given by
 * the link manager (herd_links.c), so that the exchange protocol sits below
 * the manager and touches no socket. */
typedef struct {
    /* Sends one encoded message to nb without blocking; takes data. Returns
     * 0, or -1 when it could not be queued (counted, logged once). */
    int (*send)(herd_links_t *links, neighbour_t *nb, char *data, size_t len);
    /* Sends the queued floods now, so that they go before what follows. */
    void (*flush)(herd_links_t *links);
    /* Whether nb's DEALER can take a message now (connected, below its HWM). */
    bool (*writable)(neighbour_t *nb);
} links_net_t;

struct herd_links_t {
    herd_loop_t *loop;
    herd_log_t *log;
    char *self_name;       /* our name, the DEALERs' identity */
    const herd_table_t *table;
    herd_links_update_fn *on_update;
    void *arg;
    void *router;          /* bound on our peer port */
    neighbour_t **nb;      /* our neighbours */
    size_t n_nb, cap_nb;
    uint64_t incarnation;  /* random id of this run */
    uint64_t rejected;     /* messages dropped as invalid or from strangers */
    void *router_monitor;  /* PAIR receiving the ROUTER's accept and disconnect events */
    long peer_conns;       /* connections open on the peer port (accepted, not yet disconnected) */
    long peer_cap;         /* most connections let stay on the peer port */
    uint64_t peer_refused; /* connections shut at once because the peer port was full */
    int64_t start_ms;      /* when the links were made */
    bool ready;            /* the first rejoin exchange is done (latched) */
    unsigned monitor_seq;  /* makes each monitor endpoint unique */
    bool configured;       /* the first topology was applied */
    int repair_timer;      /* the anti-entropy timer's id */
    int flush_tick;        /* the end-of-turn flush's tick id */
    int hold_timer;        /* sends held relays when no turn comes; 0 while nothing is held */
    zcert_t *cert;         /* our CURVE key pair, or NULL when links are not authenticated */
    zcert_t *eph;          /* a key pair of this run, for links to keyed neighbours while we have none
                              (a key roll-out); NULL until needed */
    bool rollout;          /* the topology's curve_rollout: links keyed at one end only are allowed */
    void *zap;             /* REP socket answering ZeroMQ's authentication (ZAP) requests */
    char router_ep[300];   /* where the ROUTER is bound */
    bool router_bound;     /* false between an unbind and the bind that follows it */
    int64_t rebind_ms;     /* when the ROUTER's connections were last all dropped */
    int64_t full_since_ms; /* since when the guard refuses for the cap; 0 = it does not */
    uint64_t rebinds;      /* times the ROUTER's connections were all dropped */
    herd_log_limit_t log_limit[LINKS_LOG_KINDS]; /* the rate limit of each kind of line */
    const links_net_t *net; /* the sockets, as the exchanges see them */
    herd_time_t message_time; /* when the message being handled was taken in */
};

/* The exchange protocol of one link (herd_links_repair.c). */

/* Opens an exchange with nb (HELLO the first time after its link came up,
 * DIGEST after that), or notes that ours ended. */
void links_round_open(herd_links_t *links, neighbour_t *nb, bool hello);
void links_round_close(herd_links_t *links, neighbour_t *nb);

/* Called by the links' timer for each neighbour not being redialled: opens
 * a due exchange, and marks a link whose neighbour answers nothing for a
 * redial (nb->redial_at_ms). */
void links_exchange_tick(herd_links_t *links, neighbour_t *nb, int64_t now);

/* Handles one exchange message (HELLO, DIGEST, GROUPS, BUCKETS, FPRINTS,
 * WANT, SYNC_END) from nb. */
void links_exchange(herd_links_t *links, neighbour_t *nb, const herd_msg_t *msg);

/* The peer port's guard (herd_links_guard.c). */

/* Watches sock's connection events (the mask `events`) on a PAIR read by
 * fn in the reactor. Returns the PAIR, or NULL with errno set (nothing is
 * left open). */
void *links_monitor_open(herd_links_t *links, void *sock, int events, herd_loop_fn *fn, void *arg);

/* Stops watching sock and closes its monitor; *monitor = NULL. NULL-safe. */
void links_monitor_close(herd_links_t *links, void *sock, void **monitor);

/* Reads one event from a socket monitor (a PAIR connected to the endpoint
 * given to zmq_socket_monitor) without waiting: its number and value, its
 * endpoint frame read and dropped. Returns false when none is waiting. */
bool links_monitor_read(void *monitor, uint16_t *event, uint32_t *value);

/* Starts answering ZeroMQ's authentication (ZAP) requests for the ROUTER,
 * with the NULL mechanism as well as CURVE (it sets the ROUTER's ZAP
 * domain), and counts the ROUTER's connections. Must come before the bind. */
int links_guard_start(herd_links_t *links, char *err, size_t errlen);

/* Stops the guard (NULL-safe parts). */
void links_guard_stop(herd_links_t *links);

/* Sets the cap from the number of neighbours. */
void links_set_peer_cap(herd_links_t *links);

/* The guard's timer work: binds the ROUTER again after a sweep, and sweeps
 * (drops every connection on the peer port) when a neighbour that is
 * running is locked out of its own name, or when completed handshakes have
 * held the cap for long. */
void links_guard_tick(herd_links_t *links, int64_t now);

/* Whether a line of this kind may be logged now (herd_log_limit_take on
 * its limit). When true, *left_out is the number left out since the last
 * one (to be said in the line); when false, the line is counted as left out. */
bool links_log_ok(herd_links_t *links, links_log_kind_t kind, uint64_t *left_out);

/* Makes the limits of the kinds of line. */
void links_log_init(herd_links_t *links);

/* Lines left out by the limits, all kinds together. */
uint64_t links_log_left_out(const herd_links_t *links);

/* " (N more like it left out)" for a count, or "" (into buf). */
const char *links_left_out(char *buf, size_t cap, uint64_t left_out);

/* Authenticated links (herd_links_auth.c). */

/* Loads our key pair from keys_dir/NAME.key_secret and checks it against
 * our public_key in the topology. */
int herd_links_auth_setup(herd_links_t *links, const herd_topology_t *topo, const herd_server_conf_t *me,
                          char *err, size_t errlen);

/* Reads our key pair again (a rotated key) as herd_links_auth_setup does,
 * and gives it to the ROUTER for its next bind. Returns 0, or -1 with err
 * filled and the old key pair kept. */
int herd_links_auth_rekey(herd_links_t *links, const herd_topology_t *topo, const herd_server_conf_t *me,
                          char *err, size_t errlen);

/* Unbinds the ROUTER and binds it again (every connection on the peer port
 * is dropped and made anew), now or on the next tick (herd_links_guard.c). */
void links_rebind(herd_links_t *links, int64_t now, const char *why);

/* Sets the CURVE options of our ROUTER. */
void herd_links_auth_router(herd_links_t *links, void *router);

/* Switches our own links between plain and authenticated when our
 * public_key appears in the topology or leaves it (a key roll-out), or
 * reads a rotated key pair: returns 1 when the links must be made anew
 * (the caller remakes the DEALERs; the ROUTER is bound again here), 0 when
 * nothing changed, -1 with err filled (nothing changed). */
int herd_links_auth_reconfigure(herd_links_t *links, const herd_topology_t *topo, const herd_server_conf_t *me,
                                char *err, size_t errlen);

/* Sets the CURVE options of a neighbour's DEALER from its public key (Z85):
 * our key pair, or one of this run while we have none (a roll-out). */
int herd_links_auth_dealer(herd_links_t *links, neighbour_t *nb, const char *name, const char *public_key,
                           char *err, size_t errlen);

/* Whether the key a message came with may speak for neighbour nb: its
 * own key when it has one; during a roll-out, a neighbour that has none
 * comes with a key of its run, bound to no name. */
bool herd_links_auth_matches(herd_links_t *links, zmq_msg_t *msg, const neighbour_t *nb);

/* Forgets our key pair. */
void herd_links_auth_close(herd_links_t *links);

#endif
