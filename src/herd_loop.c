/* herd_loop: epoll + ZeroMQ reactor. See herd_loop.h. */
#include "herd_loop.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include <czmq.h>

#define MAX_EVENTS 256

typedef struct {
    void *socket;      /* raw libzmq socket */
    herd_watch_t watch; /* its ZMQ_FD in epoll */
    herd_loop_fn *fn;
    void *arg;
} zmq_entry_t;

typedef struct {
    herd_loop_fn *fn;
    void *arg;
} tick_t;

typedef struct {
    int id;            /* > 0 while in use, 0 when free */
    long interval_ms;
    int64_t due_ms;    /* next run */
    herd_loop_fn *fn;
    void *arg;
} timer_t_;

struct herd_loop_t {
    int epfd;
    bool stop;            /* set by herd_loop_stop */
    int64_t now_ms;       /* monotonic time at the start of this turn */
    zmq_entry_t *zmqs;    /* registered ZeroMQ sockets */
    size_t n_zmqs, cap_zmqs;
    tick_t *ticks;
    size_t n_ticks, cap_ticks;
    timer_t_ *timers;
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
    loop->next_timer_id = 1;
    return loop;
}

void herd_loop_destroy(herd_loop_t **p)
{
    if (!p || !*p)
        return;
    herd_loop_t *loop = *p;
    close(loop->epfd);
    free(loop->zmqs);
    free(loop->ticks);
    free(loop->timers);
    free(loop);
    *p = NULL;
}

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

/* Nothing to do when the ZMQ_FD fires: the zmq handlers run after each turn. */
static void zmq_fd_ready(herd_loop_t *loop, herd_watch_t *w, uint32_t events)
{
    (void)loop, (void)w, (void)events;
}

int herd_loop_add_zmq(herd_loop_t *loop, void *socket, herd_loop_fn *fn, void *arg)
{
    void *raw = zsock_is(socket) ? zsock_resolve(socket) : socket;
    int fd;
    size_t fdlen = sizeof fd;
    if (zmq_getsockopt(raw, ZMQ_FD, &fd, &fdlen) != 0)
        return -1;
    if (grow((void **)&loop->zmqs, loop->n_zmqs, &loop->cap_zmqs, sizeof *loop->zmqs) != 0)
        return -1;
    /* Entries move when the array grows, so epoll gets a stable copy. */
    herd_watch_t *w = malloc(sizeof *w);
    if (!w)
        return -1;
    *w = (herd_watch_t){.fd = fd, .fn = zmq_fd_ready, .arg = NULL};
    if (herd_loop_watch(loop, w, EPOLLIN) != 0) {
        free(w);
        return -1;
    }
    zmq_entry_t *e = &loop->zmqs[loop->n_zmqs++];
    e->socket = raw;
    e->watch = *w;
    e->watch.arg = w; /* remember the heap copy to free it */
    e->fn = fn;
    e->arg = arg;
    return 0;
}

void herd_loop_remove_zmq(herd_loop_t *loop, void *socket)
{
    void *raw = zsock_is(socket) ? zsock_resolve(socket) : socket;
    for (size_t i = 0; i < loop->n_zmqs; i++) {
        if (loop->zmqs[i].socket != raw)
            continue;
        herd_watch_t *w = loop->zmqs[i].watch.arg;
        herd_loop_unwatch(loop, w);
        free(w);
        loop->zmqs[i] = loop->zmqs[--loop->n_zmqs];
        return;
    }
}

int herd_loop_add_tick(herd_loop_t *loop, herd_loop_fn *fn, void *arg)
{
    if (grow((void **)&loop->ticks, loop->n_ticks, &loop->cap_ticks, sizeof *loop->ticks) != 0)
        return -1;
    loop->ticks[loop->n_ticks++] = (tick_t){fn, arg};
    return 0;
}

int herd_loop_add_timer(herd_loop_t *loop, long interval_ms, herd_loop_fn *fn, void *arg)
{
    if (grow((void **)&loop->timers, loop->n_timers, &loop->cap_timers, sizeof *loop->timers) != 0)
        return -1;
    int id = loop->next_timer_id++;
    loop->timers[loop->n_timers++] = (timer_t_){
        .id = id,
        .interval_ms = interval_ms > 0 ? interval_ms : 1,
        .due_ms = herd_clock_ms() + (interval_ms > 0 ? interval_ms : 1),
        .fn = fn,
        .arg = arg,
    };
    return id;
}

void herd_loop_remove_timer(herd_loop_t *loop, int id)
{
    for (size_t i = 0; i < loop->n_timers; i++)
        if (loop->timers[i].id == id)
            loop->timers[i].id = 0; /* swept after the timers run */
}

void herd_loop_stop(herd_loop_t *loop)
{
    loop->stop = true;
}

int64_t herd_loop_now_ms(herd_loop_t *loop)
{
    return loop->now_ms;
}

/* Runs the handler of every ZeroMQ socket that has input; each drains its
 * own socket. Returns true when any handler ran. */
static bool run_zmq(herd_loop_t *loop)
{
    bool ran = false;
    for (size_t i = 0; i < loop->n_zmqs; i++) {
        zmq_entry_t *e = &loop->zmqs[i];
        uint32_t ev = 0;
        size_t len = sizeof ev;
        if (zmq_getsockopt(e->socket, ZMQ_EVENTS, &ev, &len) == 0 && (ev & ZMQ_POLLIN)) {
            e->fn(loop, e->arg);
            ran = true;
        }
    }
    return ran;
}

/* Runs due timers and returns the milliseconds until the next one (-1: none). */
static int run_timers(herd_loop_t *loop)
{
    int64_t next = -1;
    for (size_t i = 0; i < loop->n_timers; i++) {
        timer_t_ *t = &loop->timers[i];
        if (t->id && t->due_ms <= loop->now_ms) {
            t->due_ms = loop->now_ms + t->interval_ms;
            t->fn(loop, t->arg);
            t = &loop->timers[i]; /* the handler may have added timers */
        }
    }
    size_t kept = 0;
    for (size_t i = 0; i < loop->n_timers; i++) {
        if (!loop->timers[i].id)
            continue;
        loop->timers[kept++] = loop->timers[i];
        int64_t wait = loop->timers[i].due_ms - loop->now_ms;
        if (next < 0 || wait < next)
            next = wait < 0 ? 0 : wait;
    }
    loop->n_timers = kept;
    return (int)next;
}

int herd_loop_run(herd_loop_t *loop)
{
    struct epoll_event events[MAX_EVENTS];
    loop->stop = false;
    while (!loop->stop) {
        loop->now_ms = herd_clock_ms();
        int timeout = run_timers(loop);
        for (size_t i = 0; i < loop->n_ticks; i++)
            loop->ticks[i].fn(loop, loop->ticks[i].arg);
        if (loop->stop)
            break;
        /* A send during the ticks may have consumed a ZMQ_FD edge: look again
         * and, when something was handled, go round without sleeping. */
        if (run_zmq(loop))
            timeout = 0;
        int n = epoll_wait(loop->epfd, events, MAX_EVENTS, timeout);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        loop->now_ms = herd_clock_ms();
        for (int i = 0; i < n; i++) {
            herd_watch_t *w = events[i].data.ptr;
            w->fn(loop, w, events[i].events);
        }
        run_zmq(loop);
    }
    return 0;
}
