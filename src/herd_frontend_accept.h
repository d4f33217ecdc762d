/* herd_frontend_accept: the listening socket of a server's client port,
 * below the connections (herd_frontend.c) and knowing nothing of them.
 *
 * Binds the port, accepts, and refuses past limits.max_clients,
 * limits.max_clients_per_address or when descriptors run out (logged with
 * the peer and the limit, at most a few lines a second per reason, and
 * counted). Each connection it lets in goes up through one callback with
 * its socket; whoever took it calls fe_acceptor_release when it ends, so
 * that it no longer counts against the limits. Runs on one reactor: one
 * listener watch and one timer (resuming after a descriptor shortage,
 * flushing the refusals' log lines), nothing else. */
#ifndef HERD_FRONTEND_ACCEPT_H
#define HERD_FRONTEND_ACCEPT_H

#include <stddef.h>
#include <stdint.h>

#include "herd_log.h"
#include "herd_loop.h"

/* Room for a peer's "address:port" text. */
#define FE_PEER_MAX 56

typedef struct fe_acceptor_t fe_acceptor_t;

/* A connection that passed the limits: the callee owns fd (nonblocking)
 * from then on; serial is its log number, peer its "address:port". */
typedef void(fe_accepted_fn)(void *arg, int fd, uint64_t serial, const char *peer);

/* Called before a refusal for max_clients, so that connections that have
 * ended elsewhere can be released first. */
typedef void(fe_full_fn)(void *arg);

typedef struct {
    const char *host;              /* address to bind (used only by fe_acceptor_new) */
    int port;                      /* client port */
    long max_clients;              /* connections let in and not yet released, at most */
    long max_clients_per_address;  /* of those, from one IP address (<= 0: any) */
    long sweep_ms;                 /* period of the timer */
    fe_accepted_fn *on_accept;     /* where accepted sockets go */
    fe_full_fn *on_full;           /* told before a refusal for max_clients (NULL: not told) */
    void *arg;                     /* context of both */
} fe_acceptor_conf_t;

/* Refusals so far, by reason. */
typedef struct {
    uint64_t max_clients;  /* limits.max_clients */
    uint64_t per_address;  /* limits.max_clients_per_address */
    uint64_t descriptors;  /* out of file descriptors */
} fe_refusals_t;

/* Binds and listens on conf->port and starts accepting on `loop`. Returns
 * NULL and fills err (naming the address and port) on failure. */
fe_acceptor_t *fe_acceptor_new(herd_loop_t *loop, herd_log_t *log, const fe_acceptor_conf_t *conf, char *err,
                               size_t errlen);

/* The connection numbered `serial` has ended (or was never served): it no
 * longer counts. Unknown serials are ignored. */
void fe_acceptor_release(fe_acceptor_t *a, uint64_t serial);

/* New limits (after a reload); connections already in stay. */
void fe_acceptor_set_limits(fe_acceptor_t *a, long max_clients, long max_clients_per_address);

/* Closes the listener: nothing more is accepted. Idempotent. */
void fe_acceptor_stop(fe_acceptor_t *a);

/* Connections let in and not yet released. */
size_t fe_acceptor_open(const fe_acceptor_t *a);

/* Refusals so far. */
fe_refusals_t fe_acceptor_refusals(const fe_acceptor_t *a);

/* Closes the listener and frees everything; *p = NULL. NULL-safe. */
void fe_acceptor_destroy(fe_acceptor_t **p);

#endif
