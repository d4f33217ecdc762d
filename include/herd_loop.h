/* herd_loop: the single-threaded reactor every server runs on.
 *
 * epoll for plain descriptors (client sockets, the listener, signalfd) and
 * ZeroMQ sockets together: a ZeroMQ socket's ZMQ_FD only says "look again",
 * so a registered ZeroMQ handler is called after a turn in which its socket
 * may have got input and has (herd_loop_add_zmq), and must drain it. Timers repeat at a fixed
 * interval. Ticks run at the end of every turn, in phase order.
 *
 * One turn: due timers, then the ticks (phase by phase), then the ZeroMQ
 * handlers, then epoll_wait and the handlers of the descriptors it reported,
 * then the ZeroMQ handlers again; the next turn's timers and ticks close it.
 *
 * Lifetimes: any handler may add or remove any watch, ZeroMQ socket, tick or
 * timer, its own included. Once a remove/unwatch call returns, the loop never
 * calls the removed handler again and never reads the removed registration,
 * even when an event for it is still pending later in the epoll batch being
 * dispatched (that event is dropped) or it comes later in the pass over the
 * ZeroMQ sockets, ticks or timers that is running. Nothing is skipped: every
 * entry that was registered when a pass started and is still registered is
 * visited in that pass. Entries added during a pass are first visited in the
 * next one. A loop belongs to one thread; none of this is thread-safe. */
#ifndef HERD_LOOP_H
#define HERD_LOOP_H

#include <stdbool.h>
#include <stdint.h>

typedef struct herd_loop_t herd_loop_t;
typedef struct herd_watch_t herd_watch_t;

/* Called with the epoll events that fired for a watched descriptor. */
typedef void(herd_watch_fn)(herd_loop_t *loop, herd_watch_t *w, uint32_t events);
/* Called for ZeroMQ sockets, ticks and timers. */
typedef void(herd_loop_fn)(herd_loop_t *loop, void *arg);

/* A watched descriptor. The owner embeds it in its own struct (no allocation
 * per connection). The owner's duties:
 *  - fill fd, fn and arg before herd_loop_watch, and leave fd alone while
 *    watched (the loop hands w itself to epoll);
 *  - keep w at the same address, alive, until herd_loop_unwatch;
 *  - call herd_loop_unwatch before closing fd and before freeing w: closing
 *    alone takes the fd out of epoll but not an event epoll already returned.
 * After herd_loop_unwatch the loop forgets w at once: the owner may close fd
 * and free w right there, even inside a handler and even when w's event is
 * still pending in the current batch (it is dropped). Only the owner's own
 * structures may need a later free (herd_frontend frees its connections at
 * the end of the turn because its dirty list still names them). */
struct herd_watch_t {
    int fd;            /* the descriptor */
    uint32_t events;   /* the epoll events asked for */
    herd_watch_fn *fn; /* handler */
    void *arg;         /* owner's context */
};

/* The end-of-turn phases, run in this order whatever the order in which the
 * ticks were added (within one phase: the order of adding). The whole turn
 * and the promise it keeps are told once, at turn_ticks in herd_node.c. */
typedef enum {
    HERD_PHASE_COMMANDS, /* commands: a front end on this thread hands the
                            turn's commands to the node */
    HERD_PHASE_LINKS,    /* links flush: a stored update is handed to the
                            neighbours before the client's reply is written
                            (PROTOCOL §7) */
    HERD_PHASE_STATE,    /* durable state: a group commit that must be done
                            before the replies that acknowledge it go out */
    HERD_PHASE_ANSWERS,  /* answers: the node hands its answers to the
                            front ends, once what they acknowledge is
                            flooded and committed */
    HERD_PHASE_FRONTEND, /* front-end: the replies are written, closed
                            connections freed */
    HERD_PHASE_LOG,      /* log flush: the turn's events in one write, once
                            its replies are out */
    HERD_PHASE_COUNT     /* the number of phases, not a phase */
} herd_phase_t;

/* A new reactor, or NULL. */
herd_loop_t *herd_loop_new(void);

/* Frees the reactor and its registrations (not the watched descriptors nor
 * the ZeroMQ sockets); *p = NULL. NULL-safe. Not from inside herd_loop_run. */
void herd_loop_destroy(herd_loop_t **p);

/* Starts, changes or stops watching w->fd (see herd_watch_t for the owner's
 * duties). Return 0 or -1 (errno set). herd_loop_unwatch also drops an event
 * for w still pending in the batch being dispatched. */
int herd_loop_watch(herd_loop_t *loop, herd_watch_t *w, uint32_t events);
int herd_loop_rewatch(herd_loop_t *loop, herd_watch_t *w, uint32_t events);
void herd_loop_unwatch(herd_loop_t *loop, herd_watch_t *w);

/* Registers a ZeroMQ socket (a raw void* socket or a zsock_t*): fn(arg) is
 * called after a turn when the socket has input (ZMQ_EVENTS), and must
 * drain it. The loop looks only at sockets that may have input: their
 * ZMQ_FD fired, the last look found input, or herd_loop_zmq_sent said so.
 * Returns 0 or -1. */
int herd_loop_add_zmq(herd_loop_t *loop, void *socket, herd_loop_fn *fn, void *arg);

/* Tells the loop that this thread sent on a registered socket outside the
 * socket's own handler (a send may process the socket's mailbox and eat
 * the ZMQ_FD edge that announced input): the socket is looked at after the
 * turn. Sends inside the socket's own handler need no call. NULL-safe; a
 * socket that is not registered is ignored. */
void herd_loop_zmq_sent(herd_loop_t *loop, void *socket);

/* Stops watching a ZeroMQ socket; call it before closing the socket. Safe
 * from any handler, the socket's own included; fn is not called again. A
 * socket that is not registered is ignored. */
void herd_loop_remove_zmq(herd_loop_t *loop, void *socket);

/* Registers fn(arg) to run at the end of every turn in the given phase.
 * Returns a tick id (> 0), or -1 (an invalid phase, no fn, out of memory). */
int herd_loop_add_tick(herd_loop_t *loop, herd_phase_t phase, herd_loop_fn *fn, void *arg);

/* Stops a tick; safe from any handler, a tick (itself included) too. An
 * unknown or already removed id is ignored. */
void herd_loop_remove_tick(herd_loop_t *loop, int id);

/* Registers fn(arg) to run every interval_ms milliseconds. Returns a timer id
 * (> 0) or -1. */
int herd_loop_add_timer(herd_loop_t *loop, long interval_ms, herd_loop_fn *fn, void *arg);

/* Stops a timer; safe from any handler, a timer (itself included) too. An
 * unknown or already removed id is ignored. */
void herd_loop_remove_timer(herd_loop_t *loop, int id);

/* Runs turns until herd_loop_stop. Returns 0, or -1 on an epoll failure. Not
 * re-entrant. */
int herd_loop_run(herd_loop_t *loop);

/* Makes herd_loop_run return at the end of the current turn, once the due
 * timers and the ticks have run (so the turn's replies and log lines are
 * written). */
void herd_loop_stop(herd_loop_t *loop);

/* Makes the next turn start without waiting for an event: for work a tick
 * left for the phases of the next turn (a late tick made new commands). */
void herd_loop_again(herd_loop_t *loop);

/* Monotonic milliseconds, refreshed once per turn (cheap to call often). */
int64_t herd_loop_now_ms(herd_loop_t *loop);

/* Monotonic milliseconds read from the clock now. */
int64_t herd_clock_ms(void);

#endif
