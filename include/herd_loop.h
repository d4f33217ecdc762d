/* herd_loop: the single-threaded reactor every server runs on.
 *
 * epoll for plain descriptors (client sockets, the listener, signalfd) and
 * ZeroMQ sockets together: a ZeroMQ socket's ZMQ_FD only says "look again",
 * so every registered ZeroMQ handler is also called after each turn and must
 * drain its socket while ZMQ_EVENTS shows input. Ticks run at the end of every
 * turn (batched writes, log flush); timers repeat at a fixed interval. */
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
 * per connection) and keeps it alive until herd_loop_unwatch. */
struct herd_watch_t {
    int fd;            /* the descriptor */
    uint32_t events;   /* the epoll events asked for */
    herd_watch_fn *fn; /* handler */
    void *arg;         /* owner's context */
};

/* A new reactor, or NULL. */
herd_loop_t *herd_loop_new(void);

/* Frees the reactor (not the watched descriptors); *p = NULL. NULL-safe. */
void herd_loop_destroy(herd_loop_t **p);

/* Starts, changes or stops watching w->fd. Return 0 or -1 (errno set). */
int herd_loop_watch(herd_loop_t *loop, herd_watch_t *w, uint32_t events);
int herd_loop_rewatch(herd_loop_t *loop, herd_watch_t *w, uint32_t events);
void herd_loop_unwatch(herd_loop_t *loop, herd_watch_t *w);

/* Registers a ZeroMQ socket (a raw void* socket or a zsock_t*): fn(arg) is
 * called whenever the socket may have input, and after every turn. Returns
 * 0 or -1. */
int herd_loop_add_zmq(herd_loop_t *loop, void *socket, herd_loop_fn *fn, void *arg);
void herd_loop_remove_zmq(herd_loop_t *loop, void *socket);

/* Registers fn(arg) to run at the end of every turn. Returns 0 or -1. */
int herd_loop_add_tick(herd_loop_t *loop, herd_loop_fn *fn, void *arg);

/* Registers fn(arg) to run every interval_ms milliseconds. Returns a timer id
 * (> 0) or -1. */
int herd_loop_add_timer(herd_loop_t *loop, long interval_ms, herd_loop_fn *fn, void *arg);
void herd_loop_remove_timer(herd_loop_t *loop, int id);

/* Runs turns until herd_loop_stop. Returns 0, or -1 on an epoll failure. */
int herd_loop_run(herd_loop_t *loop);

/* Makes herd_loop_run return after the current turn. */
void herd_loop_stop(herd_loop_t *loop);

/* Monotonic milliseconds, refreshed once per turn (cheap to call often). */
int64_t herd_loop_now_ms(herd_loop_t *loop);

/* Monotonic milliseconds read from the clock now. */
int64_t herd_clock_ms(void);

#endif
