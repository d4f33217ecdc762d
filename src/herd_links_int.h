/* herd_links_int.h: what herd_links.c and herd_links_auth.c share. Private
 * to the links module; nothing else includes it. */
#ifndef HERD_LINKS_INT_H
#define HERD_LINKS_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <czmq.h>

#include "herd_links.h"

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
    char key[41];          /* its CURVE public key (Z85), "" when links are not authenticated */
    uint8_t key_bin[32];   /* the same, binary, as ZAP hands it to us */
    char *batch;           /* AT lines waiting, back to back */
    size_t batch_len, batch_cap;
    size_t *offs;          /* start of each line in batch, plus its end */
    size_t n_lines, offs_cap;
    uint64_t msgs_out, msgs_in;       /* ZeroMQ messages sent to it / received from it */
    uint64_t updates_out, updates_in; /* AT lines sent to it / received from it */
    uint64_t dropped;      /* messages that could not be queued */
    uint64_t snapshots;    /* full tables sent to it */
    int64_t hello_ms;      /* when we last sent it HELLO */
    bool resync;           /* updates to it were dropped while the link was up: send it our table */
    int64_t resync_ms;     /* when we last sent it a table for that reason */
} neighbour_t;

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
    int64_t start_ms;      /* when the links were made */
    bool ready;            /* the first rejoin exchange is done (latched) */
    unsigned monitor_seq;  /* makes each monitor endpoint unique */
    bool configured;       /* the first topology was applied */
    zcert_t *cert;         /* our CURVE key pair, or NULL when links are not authenticated */
    void *zap;             /* REP socket answering ZeroMQ's authentication (ZAP) requests */
};

/* Authenticated links (herd_links_auth.c). */

/* Loads our key pair from keys_dir/NAME.key_secret, checks it against our
 * public_key in the topology, and starts answering ZAP requests. */
int herd_links_auth_setup(herd_links_t *links, const herd_topology_t *topo, const herd_server_conf_t *me,
                          char *err, size_t errlen);

/* Sets the CURVE options of our ROUTER. */
void herd_links_auth_router(herd_links_t *links, void *router);

/* Sets the CURVE options of a neighbour's DEALER from its public_key. */
int herd_links_auth_dealer(herd_links_t *links, neighbour_t *nb, const herd_server_conf_t *peer, char *err,
                           size_t errlen);

/* Whether the key a message came with belongs to `name`. */
bool herd_links_auth_matches(zmq_msg_t *msg, const char *name);

/* Stops answering ZAP and forgets our key pair. */
void herd_links_auth_close(herd_links_t *links);

#endif
