/* herd_loop: epoll + ZeroMQ reactor. See herd_loop.h.
 *
 * Lifetimes, in short: the epoll batch being dispatched lives in the loop, so
 * herd_loop_unwatch can drop a watch's event still pending in it (nothing
 * later reads the watch). The passes over ZeroMQ sockets, ticks and timers
 * walk the entries that existed when the pass began; a removal during a pass
 * only marks the entry, and the pass itself sweeps it when it ends. */
#include "herd_loop.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include <czmq.h>

#define MAX_EVENTS 256
#define LOOK_ALL_MS 1000 /* every ZeroMQ socket is looked at least this often on a turn */

/* A registered ZeroMQ socket. On the heap, so that the address epoll holds
 * (&watch) stays put while the table grows. */
typedef struct {
    herd_watch_t watch; /* its ZMQ_FD in epoll */
    void *socket;       /* raw libzmq socket; NULL once removed */
    herd_loop_fn *fn;   /* handler */
    void *arg;          /* its context */
    bool look;          /* it may have input: look at ZMQ_EVENTS in the next pass */
} zmq_entry_t;

typedef struct {
    int id;             /* > 0 while registered, 0 once removed */
    herd_phase_t phase; /* when in the end of the turn it runs */
    uint64_t seq;       /* order of adding: the order within a phase */
    herd_loop_fn *fn;   /* handler */
    void *arg;          /* its context */
} tick_t;

typedef struct {
    int id;             /* > 0 while registered, 0 once removed */
    long interval_ms;   /* period */
    int64_t due_ms;     /* next run */
    herd_loop_fn *fn;   /* handler */
    void *arg;          /* its context */
} timer_t_;

struct herd_loop_t {
    int epfd;               /* the epoll instance */
    bool stop;              /* set by herd_loop_stop */
    bool again;             /* set by herd_loop_again: the next wait does not block */
    bool running;           /* inside herd_loop_run */
    int64_t now_ms;         /* monotonic time at the start of this turn */
    struct epoll_event batch[MAX_EVENTS]; /* the events of this turn */
    int batch_next;         /* the next of them to dispatch */
    int batch_n;            /* how many there are (0 outside dispatch) */
    zmq_entry_t **zmqs;     /* registered ZeroMQ sockets, in order of adding */
    size_t n_zmqs, cap_zmqs;
    bool zmq_busy;          /* a pass over zmqs is running */
    bool zmq_dead;          /* entries removed during it wait for the sweep */
    int64_t look_all_ms;    /* when every ZeroMQ socket was last looked at */
    tick_t *ticks;          /* sorted by (phase, seq) outside a pass */
    size_t n_ticks, cap_ticks;
    bool ticks_busy;        /* a pass over the ticks is running */
    bool ticks_dirty;       /* removed or unsorted entries wait for the sweep */
    uint64_t tick_seq;      /* next tick_t.seq */
    int next_tick_id;
    timer_t_ *timers;       /* in order of adding; removed ones have id 0 */
    size_t n_timers, cap_timers;
    int next_timer_id;
};

int64_t herd_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

herd_loop_t *herd_loop_new(void)
{
    herd_loop_t *loop = calloc(1, sizeof *loop);
    if (!loop)
        return NULL;
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd < 0) {
        free(loop);
        return NULL;
    }
    loop->now_ms = herd_clock_ms();
    loop->next_tick_id = 1;
    loop->next_timer_id = 1;
    return loop;
}

void herd_loop_destroy(herd_loop_t **p)
{
    if (!p || !*p)
        return;
    herd_loop_t *loop = *p;
    assert(!loop->running);
    close(loop->epfd);
    for (size_t i = 0; i < loop->n_zmqs; i++)
        free(loop->zmqs[i]);
    free(loop->zmqs);
    free(loop->ticks);
    free(loop->timers);
    free(loop);
    *p = NULL;
}

/* Grows an array of `size`-byte items so that one more fits. */
static int grow(void **items, size_t n, size_t *cap, size_t size)
{
    if (n < *cap)
        return 0;
    size_t ncap = *cap ? *cap * 2 : 8;
    void *p = realloc(*items, ncap * size);
    if (!p)
        return -1;
    *items = p;
    *cap = ncap;
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Plain descriptors */

int herd_loop_watch(herd_loop_t *loop, herd_watch_t *w, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = w};
    w->events = events;
    return epoll_ctl(loop->epfd, EPOLL_CTL_ADD, w->fd, &ev);
}

int herd_loop_rewatch(herd_loop_t *loop, herd_watch_t *w, uint32_t events)
{
    if (w->events == events)
        return 0;
    struct epoll_event ev = {.events = events, .data.ptr = w};
    w->events = events;
    return epoll_ctl(loop->epfd, EPOLL_CTL_MOD, w->fd, &ev);
}

void herd_loop_unwatch(herd_loop_t *loop, herd_watch_t *w)
{
    epoll_ctl(loop->epfd, EPOLL_CTL_DEL, w->fd, NULL);
    /* epoll returns one event per registration, but a handler earlier in the
     * batch may free w right after this: drop its event if still to come. A
     * batch is at most MAX_EVENTS long, so the scan is cheap. */
    for (int i = loop->batch_next; i < loop->batch_n; i++)
        if (loop->batch[i].data.ptr == w)
            loop->batch[i].data.ptr = NULL;
}

/* Dispatches the n events epoll_wait put in loop->batch. */
static void dispatch(herd_loop_t *loop, int n)
{
    loop->batch_n = n;
    loop->batch_next = 0;
    while (loop->batch_next < loop->batch_n) {
        struct epoll_event *ev = &loop->batch[loop->batch_next++];
        herd_watch_t *w = ev->data.ptr;
        if (w) /* NULL: unwatched earlier in this batch */
            w->fn(loop, w, ev->events);
    }
    loop->batch_n = loop->batch_next = 0;
}

/* ---------------------------------------------------------------------- */
/* ZeroMQ sockets */

/* The ZMQ_FD fired: the socket is looked at in the pass after the batch. */
static void zmq_fd_ready(herd_loop_t *loop, herd_watch_t *w, uint32_t events)
{
    (void)loop, (void)events;
    ((zmq_entry_t *)w->arg)->look = true;
}

int herd_loop_add_zmq(herd_loop_t *loop, void *socket, herd_loop_fn *fn, void *arg)
{
    void *raw = zsock_is(socket) ? zsock_resolve(socket) : socket;
    int fd;
    size_t fdlen = sizeof fd;
    if (!fn || zmq_getsockopt(raw, ZMQ_FD, &fd, &fdlen) != 0)
        return -1;
    if (grow((void **)&loop->zmqs, loop->n_zmqs, &loop->cap_zmqs, sizeof *loop->zmqs) != 0)
        return -1;
    zmq_entry_t *e = malloc(sizeof *e);
    if (!e)
        return -1;
    *e = (zmq_entry_t){
        .watch = {.fd = fd, .fn = zmq_fd_ready, .arg = e}, .socket = raw, .fn = fn, .arg = arg, .look = true};
    if (herd_loop_watch(loop, &e->watch, EPOLLIN) != 0) {
        free(e);
        return -1;
    }
    /* Appended: a running pass stops at the count it started with. */
    loop->zmqs[loop->n_zmqs++] = e;
    return 0;
}

/* Frees the removed entries and closes the gaps, keeping the order. */
static void sweep_zmq(herd_loop_t *loop)
{
    size_t kept = 0;
    for (size_t i = 0; i < loop->n_zmqs; i++) {
        if (loop->zmqs[i]->socket)
            loop->zmqs[kept++] = loop->zmqs[i];
        else
            free(loop->zmqs[i]);
    }
    loop->n_zmqs = kept;
    loop->zmq_dead = false;
}

void herd_loop_remove_zmq(herd_loop_t *loop, void *socket)
{
    if (!socket)
        return;
    void *raw = zsock_is(socket) ? zsock_resolve(socket) : socket;
    for (size_t i = 0; i < loop->n_zmqs; i++) {
        zmq_entry_t *e = loop->zmqs[i];
        if (e->socket != raw)
            continue;
        herd_loop_unwatch(loop, &e->watch); /* drops a pending ZMQ_FD event */
        e->socket = NULL;
        e->fn = NULL;
        loop->zmq_dead = true;
        if (!loop->zmq_busy) /* else the pass may still hold e */
            sweep_zmq(loop);
        return;
    }
}

void herd_loop_zmq_sent(herd_loop_t *loop, void *socket)
{
    if (!loop || !socket)
        return;
    void *raw = zsock_is(socket) ? zsock_resolve(socket) : socket;
    for (size_t i = 0; i < loop->n_zmqs; i++)
        if (loop->zmqs[i]->socket == raw)
            loop->zmqs[i]->look = true;
}

/* Runs the handler of every ZeroMQ socket that may have input and has; each
 * drains its own socket. Returns true when any handler ran. */
static bool run_zmq(herd_loop_t *loop)
{
    bool ran = false;
    size_t n = loop->n_zmqs;
    if (loop->now_ms - loop->look_all_ms >= LOOK_ALL_MS) {
        loop->look_all_ms = loop->now_ms;
        for (size_t i = 0; i < n; i++)
            loop->zmqs[i]->look = true;
    }
    loop->zmq_busy = true;
    for (size_t i = 0; i < n; i++) {
        zmq_entry_t *e = loop->zmqs[i]; /* the table may move, e does not */
        if (!e->socket || !e->look)
            continue;
        int ev = 0;
        size_t len = sizeof ev;
        /* Looked at now: the edge is consumed, so only the ZMQ_FD, a send or
         * input left behind makes it worth another look. */
        e->look = zmq_getsockopt(e->socket, ZMQ_EVENTS, &ev, &len) == 0 && (ev & ZMQ_POLLIN);
        if (e->look) {
            e->fn(loop, e->arg);
            ran = true;
        }
    }
    loop->zmq_busy = false;
    if (loop->zmq_dead)
        sweep_zmq(loop);
    return ran;
}

/* ---------------------------------------------------------------------- */
/* Ticks */

_Static_assert(offsetof(tick_t, id) == 0 && offsetof(timer_t_, id) == 0, "take_id reads the id at byte 0");

/* The next free id from *counter: > 0, and none that is in use in the n
 * items of `stride` bytes whose int id is at byte 0 (after 2^31 ids the
 * counter wraps, and the oldest registrations may still live). */
static int take_id(int *counter, const void *items, size_t n, size_t stride)
{
    for (;;) {
        int id = *counter;
        *counter = id == INT_MAX ? 1 : id + 1;
        bool used = false;
        for (size_t i = 0; i < n && !used; i++)
            used = *(const int *)((const char *)items + i * stride) == id;
        if (!used)
            return id;
    }
}

static bool tick_before(const tick_t *a, const tick_t *b)
{
    return a->phase != b->phase ? a->phase < b->phase : a->seq < b->seq;
}

/* Drops removed ticks and sorts the rest by (phase, seq). Insertion sort:
 * there are a handful of ticks, and all but the newest are in order. */
static void sweep_ticks(herd_loop_t *loop)
{
    size_t kept = 0;
    for (size_t i = 0; i < loop->n_ticks; i++) {
        if (!loop->ticks[i].id)
            continue;
        tick_t t = loop->ticks[i];
        size_t j = kept++;
        while (j > 0 && tick_before(&t, &loop->ticks[j - 1])) {
            loop->ticks[j] = loop->ticks[j - 1];
            j--;
        }
        loop->ticks[j] = t;
    }
    loop->n_ticks = kept;
    loop->ticks_dirty = false;
}

int herd_loop_add_tick(herd_loop_t *loop, herd_phase_t phase, herd_loop_fn *fn, void *arg)
{
    if (!fn || (int)phase < 0 || phase >= HERD_PHASE_COUNT) {
        errno = EINVAL;
        return -1;
    }
    if (grow((void **)&loop->ticks, loop->n_ticks, &loop->cap_ticks, sizeof *loop->ticks) != 0)
        return -1;
    int id = take_id(&loop->next_tick_id, loop->ticks, loop->n_ticks, sizeof *loop->ticks);
    loop->ticks[loop->n_ticks++] = (tick_t){.id = id, .phase = phase, .seq = loop->tick_seq++, .fn = fn, .arg = arg};
    /* Appended for now: a running pass stops at the count it started with,
     * and sorts when it ends. */
    loop->ticks_dirty = true;
    if (!loop->ticks_busy)
        sweep_ticks(loop);
    return id;
}

void herd_loop_remove_tick(herd_loop_t *loop, int id)
{
    if (id <= 0)
        return;
    for (size_t i = 0; i < loop->n_ticks; i++) {
        if (loop->ticks[i].id != id)
            continue;
        loop->ticks[i].id = 0;
        loop->ticks_dirty = true;
        if (!loop->ticks_busy)
            sweep_ticks(loop);
        return;
    }
}

/* The end of a turn: every tick, in phase order. */
static void run_ticks(herd_loop_t *loop)
{
    size_t n = loop->n_ticks;
    loop->ticks_busy = true;
    for (size_t i = 0; i < n; i++) {
        tick_t t = loop->ticks[i]; /* a copy: the table may move under fn */
        if (t.id)
            t.fn(loop, t.arg);
    }
    loop->ticks_busy = false;
    if (loop->ticks_dirty)
        sweep_ticks(loop);
}

/* ---------------------------------------------------------------------- */
/* Timers */

int herd_loop_add_timer(herd_loop_t *loop, long interval_ms, herd_loop_fn *fn, void *arg)
{
    if (!fn)
        return -1;
    if (grow((void **)&loop->timers, loop->n_timers, &loop->cap_timers, sizeof *loop->timers) != 0)
        return -1;
    if (interval_ms < 1)
        interval_ms = 1;
    int id = take_id(&loop->next_timer_id, loop->timers, loop->n_timers, sizeof *loop->timers);
    loop->timers[loop->n_timers++] = (timer_t_){
        .id = id,
        .interval_ms = interval_ms,
        .due_ms = herd_clock_ms() + interval_ms,
        .fn = fn,
        .arg = arg,
    };
    return id;
}

void herd_loop_remove_timer(herd_loop_t *loop, int id)
{
    if (id <= 0)
        return;
    for (size_t i = 0; i < loop->n_timers; i++)
        if (loop->timers[i].id == id)
            loop->timers[i].id = 0; /* swept after the next pass */
}

/* Runs the due timers, then drops the removed ones. */
static void run_timers(herd_loop_t *loop)
{
    size_t n = loop->n_timers; /* timers added by a handler wait a turn */
    for (size_t i = 0; i < n; i++) {
        timer_t_ *t = &loop->timers[i];
        if (!t->id || t->due_ms > loop->now_ms)
            continue;
        t->due_ms = loop->now_ms + t->interval_ms;
        herd_loop_fn *fn = t->fn;
        void *arg = t->arg;
        fn(loop, arg); /* may move the table: t is not used after this */
    }
    size_t kept = 0;
    for (size_t i = 0; i < loop->n_timers; i++)
        if (loop->timers[i].id)
            loop->timers[kept++] = loop->timers[i];
    loop->n_timers = kept;
}

/* Milliseconds until the next timer is due (0: one is late; -1: none). Read
 * after the ticks, which may have added timers. */
static int next_timeout(herd_loop_t *loop)
{
    int64_t now = herd_clock_ms();
    int64_t next = -1;
    for (size_t i = 0; i < loop->n_timers; i++) {
        if (!loop->timers[i].id)
            continue;
        int64_t wait = loop->timers[i].due_ms - now;
        if (wait < 0)
            wait = 0;
        if (next < 0 || wait < next)
            next = wait;
    }
    return next > INT_MAX ? INT_MAX : (int)next;
}

/* ---------------------------------------------------------------------- */
/* The turn */

void herd_loop_stop(herd_loop_t *loop)
{
    loop->stop = true;
}

void herd_loop_again(herd_loop_t *loop)
{
    loop->again = true;
}

int64_t herd_loop_now_ms(herd_loop_t *loop)
{
    return loop->now_ms;
}

int herd_loop_run(herd_loop_t *loop)
{
    assert(!loop->running);
    loop->running = true;
    loop->stop = false;
    int rc = 0;
    for (;;) {
        /* The end of the previous turn (and the timers' own work). */
        loop->now_ms = herd_clock_ms();
        run_timers(loop);
        run_ticks(loop);
        if (loop->stop)
            break;
        /* A send during the ticks may have consumed a ZMQ_FD edge: look again
         * and, when something was handled, go round without sleeping. */
        int timeout = run_zmq(loop) || loop->again ? 0 : next_timeout(loop);
        loop->again = false;
        int n = epoll_wait(loop->epfd, loop->batch, MAX_EVENTS, timeout);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            rc = -1;
            break;
        }
        loop->now_ms = herd_clock_ms();
        dispatch(loop, n);
        run_zmq(loop);
    }
    loop->running = false;
    return rc;
}
