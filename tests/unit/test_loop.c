/* herd_loop: watcher lifetimes and turn phases.
 *
 * The removal tests build an epoll batch that holds two ready events and make
 * the first handler remove the second registration (and free it): the loop
 * must drop the pending event instead of dispatching freed memory (run under
 * ASan, the old loop fails with a heap-use-after-free). The others check the
 * passes over ZeroMQ sockets, ticks and timers while handlers add and remove
 * entries, and the phase order of the ticks. Every run has a 5 s watchdog
 * timer, so a loop that stops turning fails the test instead of hanging. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <cmocka.h>
#include <zmq.h>

#include "herd_loop.h"

#define WATCHDOG_MS 5000

static void *ctx;           /* the ZeroMQ context of every test */
static unsigned pair_seq;   /* makes the inproc endpoints unique */
static bool timed_out;      /* set by the watchdog */
static int sockets_open;    /* ZeroMQ sockets of the tests not closed yet */

/* ---------------------------------------------------------------------- */
/* Helpers */

/* Two connected inproc PAIR sockets: the loop watches `in`, the test sends
 * on `out`. */
typedef struct {
    void *in;  /* registered with the loop */
    void *out; /* the sending end */
} pair_t;

/* Lets a socket take its pending commands and find its pipe empty, so that
 * the next message raises its ZMQ_FD again. */
static void settle(void *s)
{
    int ev = 0;
    size_t len = sizeof ev;
    zmq_getsockopt(s, ZMQ_EVENTS, &ev, &len);
}

static void pair_open(pair_t *p)
{
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://test-loop-%u", pair_seq++);
    p->in = zmq_socket(ctx, ZMQ_PAIR);
    p->out = zmq_socket(ctx, ZMQ_PAIR);
    assert_non_null(p->in);
    assert_non_null(p->out);
    int zero = 0;
    zmq_setsockopt(p->in, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(p->out, ZMQ_LINGER, &zero, sizeof zero);
    sockets_open += 2;
    assert_int_equal(zmq_bind(p->in, ep), 0);
    assert_int_equal(zmq_connect(p->out, ep), 0);
    settle(p->in);
}

static void pair_send(pair_t *p)
{
    assert_int_equal(zmq_send(p->out, "x", 1, ZMQ_DONTWAIT), 1);
}

static void pair_close(pair_t *p)
{
    if (p->in)
        zmq_close(p->in), sockets_open--;
    if (p->out)
        zmq_close(p->out), sockets_open--;
    p->in = p->out = NULL;
}

/* Receives every pending message; returns how many there were. */
static int drain(void *s)
{
    char buf[8];
    int n = 0;
    while (zmq_recv(s, buf, sizeof buf, ZMQ_DONTWAIT) >= 0)
        n++;
    return n;
}

/* True when a descriptor is readable right now (level, like epoll here). */
static bool readable(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

static int zmq_fd_of(void *s)
{
    int fd = -1;
    size_t len = sizeof fd;
    assert_int_equal(zmq_getsockopt(s, ZMQ_FD, &fd, &len), 0);
    return fd;
}

static void open_pipe(int fds[2])
{
    assert_int_equal(pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
}

static void poke(int wfd)
{
    assert_int_equal(write(wfd, "x", 1), 1);
}

static void watchdog(herd_loop_t *loop, void *arg)
{
    (void)arg;
    timed_out = true;
    herd_loop_stop(loop);
}

/* A loop with the watchdog armed. */
static herd_loop_t *new_loop(void)
{
    herd_loop_t *loop = herd_loop_new();
    assert_non_null(loop);
    timed_out = false;
    assert_true(herd_loop_add_timer(loop, WATCHDOG_MS, watchdog, NULL) > 0);
    return loop;
}

/* Appends one letter to a call record. */
typedef struct {
    char s[64]; /* the letters so far */
    size_t n;   /* how many */
} trace_t;

static void trace(trace_t *t, char c)
{
    assert_true(t->n + 1 < sizeof t->s);
    t->s[t->n++] = c;
    t->s[t->n] = '\0';
}

static int setup_ctx(void **state)
{
    (void)state;
    ctx = zmq_ctx_new();
    return ctx ? 0 : -1;
}

/* A test that failed half-way leaves sockets open, and zmq_ctx_term would
 * wait for them for ever: the context is then left to the exit. */
static int teardown_ctx(void **state)
{
    (void)state;
    return sockets_open == 0 ? zmq_ctx_term(ctx) : 0;
}

/* ---------------------------------------------------------------------- */
/* A ZeroMQ socket removed while its event is pending in the same batch (the
 * SIGHUP -> herd_links_reconfigure -> neighbour_close path). */

typedef struct {
    pair_t trigger;     /* its handler arms the batch */
    pair_t victim;      /* removed by the remover */
    int pipe[2];        /* the remover's descriptor */
    herd_watch_t remover;
    int trigger_calls, victim_calls, remover_calls;
    bool victim_was_ready; /* the victim's ZMQ_FD was readable at removal */
} zrm_t;

static void zrm_victim(herd_loop_t *loop, void *arg)
{
    (void)loop;
    zrm_t *t = arg;
    t->victim_calls++;
    drain(t->victim.in);
}

/* Runs in the pass over the ZeroMQ sockets just before epoll_wait (the victim
 * was registered first, so it has been looked at and found empty): makes the
 * remover's pipe readable, then the victim's ZMQ_FD, so the batch holds the
 * remover's event first and the victim's after it. */
static void zrm_trigger(herd_loop_t *loop, void *arg)
{
    (void)loop;
    zrm_t *t = arg;
    drain(t->trigger.in);
    if (t->trigger_calls++ == 0) {
        poke(t->pipe[1]);
        pair_send(&t->victim);
    }
}

static void zrm_remover(herd_loop_t *loop, herd_watch_t *w, uint32_t events)
{
    (void)events;
    zrm_t *t = w->arg;
    char c;
    assert_int_equal(read(w->fd, &c, 1), 1);
    t->remover_calls++;
    t->victim_was_ready = readable(zmq_fd_of(t->victim.in));
    herd_loop_remove_zmq(loop, t->victim.in);
    pair_close(&t->victim);
    herd_loop_stop(loop);
}

static void zmq_removed_while_its_event_is_pending(void **state)
{
    (void)state;
    herd_loop_t *loop = new_loop();
    zrm_t t = {0};
    pair_open(&t.victim);
    pair_open(&t.trigger);
    open_pipe(t.pipe);
    assert_int_equal(herd_loop_add_zmq(loop, t.victim.in, zrm_victim, &t), 0);
    assert_int_equal(herd_loop_add_zmq(loop, t.trigger.in, zrm_trigger, &t), 0);
    t.remover = (herd_watch_t){.fd = t.pipe[0], .fn = zrm_remover, .arg = &t};
    assert_int_equal(herd_loop_watch(loop, &t.remover, EPOLLIN), 0);
    pair_send(&t.trigger);

    assert_int_equal(herd_loop_run(loop), 0);
    assert_false(timed_out);
    assert_int_equal(t.remover_calls, 1);
    assert_true(t.victim_was_ready); /* its event was in the batch */
    assert_int_equal(t.victim_calls, 0);

    herd_loop_unwatch(loop, &t.remover);
    herd_loop_remove_zmq(loop, t.trigger.in);
    pair_close(&t.trigger);
    close(t.pipe[0]);
    close(t.pipe[1]);
    herd_loop_destroy(&loop);
    assert_null(loop);
}

/* ---------------------------------------------------------------------- */
/* Two plain descriptors ready in one batch: whichever handler runs first
 * unwatches the other and frees it at once. */

typedef struct side side_t;

/* What the two sides share. */
typedef struct {
    int calls;         /* handler calls, both sides */
    side_t *survivor;  /* the side whose handler ran */
} duel_t;

struct side {
    herd_watch_t watch; /* embedded, as herd_frontend does */
    int wfd;            /* the pipe's write end */
    side_t *other;      /* the other side, while it lives */
    duel_t *duel;
};

static void side_ready(herd_loop_t *loop, herd_watch_t *w, uint32_t events)
{
    (void)events;
    side_t *s = w->arg;
    s->duel->calls++;
    s->duel->survivor = s;
    side_t *o = s->other;
    if (o) {
        assert_true(readable(o->watch.fd)); /* so its event is in this batch */
        herd_loop_unwatch(loop, &o->watch);
        close(o->watch.fd);
        close(o->wfd);
        memset(o, 0xAB, sizeof *o);
        free(o);
        s->other = NULL;
    }
    herd_loop_stop(loop);
}

static side_t *side_new(duel_t *duel)
{
    side_t *s = calloc(1, sizeof *s);
    assert_non_null(s);
    int fds[2];
    open_pipe(fds);
    s->watch = (herd_watch_t){.fd = fds[0], .fn = side_ready, .arg = s};
    s->wfd = fds[1];
    s->duel = duel;
    return s;
}

static void fd_unwatched_while_its_event_is_pending(void **state)
{
    (void)state;
    herd_loop_t *loop = new_loop();
    duel_t duel = {0};
    side_t *a = side_new(&duel), *b = side_new(&duel);
    a->other = b;
    b->other = a;
    poke(a->wfd);
    poke(b->wfd);
    assert_int_equal(herd_loop_watch(loop, &a->watch, EPOLLIN), 0);
    assert_int_equal(herd_loop_watch(loop, &b->watch, EPOLLIN), 0);

    assert_int_equal(herd_loop_run(loop), 0);
    assert_false(timed_out);
    assert_int_equal(duel.calls, 1);

    side_t *left = duel.survivor;
    assert_true(left == a || left == b);
    herd_loop_unwatch(loop, &left->watch);
    close(left->watch.fd);
    close(left->wfd);
    free(left);
    herd_loop_destroy(&loop);
}

/* ---------------------------------------------------------------------- */
/* The pass over the ZeroMQ sockets while a handler removes entries: X removes
 * itself and Z; Y must still be called in the same pass, before the pipe's
 * handler (which runs between the pass before epoll_wait and the one after),
 * and Z never. */

typedef struct {
    pair_t x, y, z;
    int pipe[2];
    herd_watch_t marker;
    trace_t trace;
} zpass_t;

static void zpass_x(herd_loop_t *loop, void *arg)
{
    zpass_t *t = arg;
    trace(&t->trace, 'X');
    drain(t->x.in);
    herd_loop_remove_zmq(loop, t->x.in);
    pair_close(&t->x);
    herd_loop_remove_zmq(loop, t->z.in);
    pair_close(&t->z);
}

static void zpass_y(herd_loop_t *loop, void *arg)
{
    (void)loop;
    zpass_t *t = arg;
    trace(&t->trace, 'Y');
    drain(t->y.in);
}

static void zpass_z(herd_loop_t *loop, void *arg)
{
    (void)loop;
    zpass_t *t = arg;
    trace(&t->trace, 'Z');
    drain(t->z.in);
}

static void zpass_marker(herd_loop_t *loop, herd_watch_t *w, uint32_t events)
{
    (void)events;
    zpass_t *t = w->arg;
    char c;
    assert_int_equal(read(w->fd, &c, 1), 1);
    trace(&t->trace, 'P');
    herd_loop_stop(loop);
}

static void zmq_pass_survives_removals(void **state)
{
    (void)state;
    herd_loop_t *loop = new_loop();
    zpass_t t = {0};
    pair_open(&t.x);
    pair_open(&t.y);
    pair_open(&t.z);
    open_pipe(t.pipe);
    assert_int_equal(herd_loop_add_zmq(loop, t.x.in, zpass_x, &t), 0);
    assert_int_equal(herd_loop_add_zmq(loop, t.y.in, zpass_y, &t), 0);
    assert_int_equal(herd_loop_add_zmq(loop, t.z.in, zpass_z, &t), 0);
    t.marker = (herd_watch_t){.fd = t.pipe[0], .fn = zpass_marker, .arg = &t};
    assert_int_equal(herd_loop_watch(loop, &t.marker, EPOLLIN), 0);
    pair_send(&t.x);
    pair_send(&t.y);
    pair_send(&t.z);
    poke(t.pipe[1]);

    assert_int_equal(herd_loop_run(loop), 0);
    assert_false(timed_out);
    assert_string_equal(t.trace.s, "XYP");

    /* Removing what is gone already is ignored. */
    herd_loop_remove_zmq(loop, t.x.in);
    herd_loop_remove_zmq(loop, t.y.in);
    pair_close(&t.y);
    herd_loop_unwatch(loop, &t.marker);
    close(t.pipe[0]);
    close(t.pipe[1]);
    herd_loop_destroy(&loop);
}

/* ---------------------------------------------------------------------- */
/* ZeroMQ sockets added from a handler (enough to move the table). */

#define ADDED 20

typedef struct {
    pair_t first;
    pair_t added[ADDED];
    int got[ADDED];   /* messages each added socket received */
    int total;        /* all of them */
} zadd_t;

/* The running test's state: an added socket's handler gets its slot in
 * added[] as arg. */
static zadd_t *zadd_of;

static void zadd_one(herd_loop_t *loop, void *arg)
{
    pair_t *p = arg;
    size_t i = (size_t)(p - zadd_of->added);
    int n = drain(p->in);
    zadd_of->got[i] += n;
    zadd_of->total += n;
    if (zadd_of->total == ADDED)
        herd_loop_stop(loop);
}

static void zadd_first(herd_loop_t *loop, void *arg)
{
    zadd_t *t = arg;
    if (drain(t->first.in) == 0)
        return;
    for (size_t i = 0; i < ADDED; i++) {
        pair_open(&t->added[i]);
        pair_send(&t->added[i]);
        assert_int_equal(herd_loop_add_zmq(loop, t->added[i].in, zadd_one, &t->added[i]), 0);
    }
}

static void zmq_added_from_a_handler(void **state)
{
    (void)state;
    herd_loop_t *loop = new_loop();
    zadd_t t = {0};
    zadd_of = &t;
    pair_open(&t.first);
    assert_int_equal(herd_loop_add_zmq(loop, t.first.in, zadd_first, &t), 0);
    pair_send(&t.first);

    assert_int_equal(herd_loop_run(loop), 0);
    assert_false(timed_out);
    assert_int_equal(t.total, ADDED);
    for (size_t i = 0; i < ADDED; i++) {
        assert_int_equal(t.got[i], 1);
        herd_loop_remove_zmq(loop, t.added[i].in);
        pair_close(&t.added[i]);
    }
    /* One left registered: the loop frees its own record of it. */
    herd_loop_destroy(&loop);
    pair_close(&t.first);
}

/* ---------------------------------------------------------------------- */
/* Ticks */

/* A descriptor that stays readable, so the loop turns without sleeping. */
typedef struct {
    int pipe[2];
    herd_watch_t watch;
} spinner_t;

static void spinner_ready(herd_loop_t *loop, herd_watch_t *w, uint32_t events)
{
    (void)loop, (void)w, (void)events;
}

static void spinner_start(herd_loop_t *loop, spinner_t *sp)
{
    open_pipe(sp->pipe);
    poke(sp->pipe[1]);
    sp->watch = (herd_watch_t){.fd = sp->pipe[0], .fn = spinner_ready, .arg = sp};
    assert_int_equal(herd_loop_watch(loop, &sp->watch, EPOLLIN), 0);
}

static void spinner_stop(herd_loop_t *loop, spinner_t *sp)
{
    herd_loop_unwatch(loop, &sp->watch);
    close(sp->pipe[0]);
    close(sp->pipe[1]);
}

typedef struct {
    trace_t trace;
    int turns;      /* LOG ticks seen */
    int stop_after; /* stop at this many turns */
    int ids[8];     /* tick ids, by role in the test */
    int state_id;   /* the tick added from a tick */
} ticks_t;

static ticks_t *ticks_of; /* the running test's state */

#define TICK(name, letter)                                                                                    \
    static void name(herd_loop_t *loop, void *arg)                                                            \
    {                                                                                                         \
        (void)loop;                                                                                           \
        assert_ptr_equal(arg, ticks_of);                                                                      \
        trace(&ticks_of->trace, letter);                                                                      \
    }
TICK(tick_links, 'k')
TICK(tick_state, 's')
TICK(tick_frontend_1, 'f')
TICK(tick_frontend_2, 'F')
TICK(tick_commands, 'c')
TICK(tick_answers, 'a')

static void tick_log(herd_loop_t *loop, void *arg)
{
    ticks_t *t = arg;
    trace(&t->trace, 'l');
    if (++t->turns == t->stop_after)
        herd_loop_stop(loop);
}

/* A LOG tick that calls herd_loop_again on the first turn: with no event
 * and no timer due, the second turn still comes at once. */
static void tick_log_again(herd_loop_t *loop, void *arg)
{
    ticks_t *t = arg;
    trace(&t->trace, 'l');
    if (++t->turns == 1)
        herd_loop_again(loop);
    else
        herd_loop_stop(loop);
}

static void again_runs_the_next_turn_at_once(void **state)
{
    (void)state;
    herd_loop_t *loop = new_loop();
    ticks_t t = {0};
    ticks_of = &t;
    assert_true(herd_loop_add_tick(loop, HERD_PHASE_COMMANDS, tick_commands, &t) > 0);
    assert_true(herd_loop_add_tick(loop, HERD_PHASE_LOG, tick_log_again, &t) > 0);
    int64_t start = herd_clock_ms();
    assert_int_equal(herd_loop_run(loop), 0);
    assert_false(timed_out);
    assert_string_equal(t.trace.s, "clcl");
    /* Not woken by the watchdog either: well before it was due. */
    assert_true(herd_clock_ms() - start < WATCHDOG_MS / 2);
    herd_loop_destroy(&loop);
}

static void ticks_run_in_phase_order(void **state)
{
    (void)state;
    herd_loop_t *loop = new_loop();
    ticks_t t = {.stop_after = 1};
    ticks_of = &t;
    /* Added in the reverse of their phases, the two front-end ticks apart. */
    int ids[] = {
        herd_loop_add_tick(loop, HERD_PHASE_LOG, tick_log, &t),
        herd_loop_add_tick(loop, HERD_PHASE_FRONTEND, tick_frontend_1, &t),
        herd_loop_add_tick(loop, HERD_PHASE_STATE, tick_state, &t),
        herd_loop_add_tick(loop, HERD_PHASE_LINKS, tick_links, &t),
        herd_loop_add_tick(loop, HERD_PHASE_FRONTEND, tick_frontend_2, &t),
        herd_loop_add_tick(loop, HERD_PHASE_ANSWERS, tick_answers, &t),
        herd_loop_add_tick(loop, HERD_PHASE_COMMANDS, tick_commands, &t),
    };
    for (size_t i = 0; i < sizeof ids / sizeof *ids; i++) {
        assert_true(ids[i] > 0);
        for (size_t j = 0; j < i; j++)
            assert_int_not_equal(ids[i], ids[j]);
    }
    assert_int_equal(herd_loop_add_tick(loop, HERD_PHASE_COUNT, tick_log, &t), -1);
    assert_int_equal(herd_loop_add_tick(loop, (herd_phase_t)-1, tick_log, &t), -1);
    assert_int_equal(herd_loop_add_tick(loop, HERD_PHASE_LOG, NULL, &t), -1);

    assert_int_equal(herd_loop_run(loop), 0);
    assert_false(timed_out);
    assert_string_equal(t.trace.s, "cksafFl");

    /* Removed from outside a turn: gone from the next one. */
    herd_loop_remove_tick(loop, ids[2]);
    herd_loop_remove_tick(loop, ids[2]);
    herd_loop_remove_tick(loop, 12345);
    t.trace.n = 0;
    t.turns = 0;
    assert_int_equal(herd_loop_run(loop), 0);
    assert_string_equal(t.trace.s, "ckafFl");
    herd_loop_destroy(&loop);
}

/* LINKS removes itself and the first FRONTEND tick (later in the same pass),
 * and on the first turn adds a STATE tick: the removed ones never run again,
 * the added one runs from the next turn, in its phase. */
static void tick_links_removing(herd_loop_t *loop, void *arg)
{
    ticks_t *t = arg;
    trace(&t->trace, 'K');
    herd_loop_remove_tick(loop, t->ids[1]);
    herd_loop_remove_tick(loop, t->ids[0]);
    herd_loop_remove_tick(loop, t->ids[0]);
}

static void tick_frontend_adding(herd_loop_t *loop, void *arg)
{
    ticks_t *t = arg;
    trace(&t->trace, 'F');
    if (!t->state_id)
        t->state_id = herd_loop_add_tick(loop, HERD_PHASE_STATE, tick_state, t);
    assert_true(t->state_id > 0);
}

static void ticks_removed_and_added_by_ticks(void **state)
{
    (void)state;
    herd_loop_t *loop = new_loop();
    spinner_t sp;
    spinner_start(loop, &sp);
    ticks_t t = {.stop_after = 3};
    ticks_of = &t;
    t.ids[2] = herd_loop_add_tick(loop, HERD_PHASE_LOG, tick_log, &t);
    t.ids[1] = herd_loop_add_tick(loop, HERD_PHASE_FRONTEND, tick_frontend_1, &t);
    t.ids[3] = herd_loop_add_tick(loop, HERD_PHASE_FRONTEND, tick_frontend_adding, &t);
    t.ids[0] = herd_loop_add_tick(loop, HERD_PHASE_LINKS, tick_links_removing, &t);
    /* Enough other ticks that adding one moves the table. */
    for (int i = 4; i < 8; i++)
        t.ids[i] = herd_loop_add_tick(loop, HERD_PHASE_LINKS, tick_links, &t);

    assert_int_equal(herd_loop_run(loop), 0);
    assert_false(timed_out);
    assert_string_equal(t.trace.s, "Kkkkk" "Fl"  /* turn 1: f removed before its turn */
                                   "kkkk" "sFl"  /* turn 2: s added in turn 1 */
                                   "kkkk" "sFl"  /* turn 3 */);
    herd_loop_remove_tick(loop, t.state_id);
    spinner_stop(loop, &sp);
    herd_loop_destroy(&loop);
}

/* ---------------------------------------------------------------------- */
/* Timers */

typedef struct {
    int a_id, b_id, c_id;  /* A and B each remove both; C counts */
    int a_calls, b_calls, c_calls;
    int added_ids[ADDED];  /* timers added by a timer */
    int added_calls[ADDED];
    int added_total;
} timers_t;

static timers_t *timers_of; /* the running test's state */

static void timer_a(herd_loop_t *loop, void *arg)
{
    timers_t *t = arg;
    t->a_calls++;
    herd_loop_remove_timer(loop, t->b_id);
    herd_loop_remove_timer(loop, t->a_id);
}

static void timer_b(herd_loop_t *loop, void *arg)
{
    timers_t *t = arg;
    t->b_calls++;
    herd_loop_remove_timer(loop, t->a_id);
    herd_loop_remove_timer(loop, t->b_id);
}

static void timer_c(herd_loop_t *loop, void *arg)
{
    timers_t *t = arg;
    if (++t->c_calls == 3)
        herd_loop_stop(loop);
}

/* Waits (on the clock, not for a fixed time) until timers of 1 ms added
 * before the call are due. */
static void let_1ms_timers_fall_due(void)
{
    int64_t start = herd_clock_ms();
    while (herd_clock_ms() < start + 2)
        poll(NULL, 0, 1);
}

static void timers_removed_by_timers(void **state)
{
    (void)state;
    herd_loop_t *loop = new_loop();
    timers_t t = {0};
    t.a_id = herd_loop_add_timer(loop, 1, timer_a, &t);
    t.b_id = herd_loop_add_timer(loop, 1, timer_b, &t);
    t.c_id = herd_loop_add_timer(loop, 1, timer_c, &t);
    assert_true(t.a_id > 0 && t.b_id > 0 && t.c_id > 0);
    assert_true(t.a_id != t.b_id && t.b_id != t.c_id && t.a_id != t.c_id);
    let_1ms_timers_fall_due(); /* A, B and C run in the same pass */

    assert_int_equal(herd_loop_run(loop), 0);
    assert_false(timed_out);
    assert_int_equal(t.a_calls, 1); /* removed itself */
    assert_int_equal(t.b_calls, 0); /* removed by A earlier in the pass */
    assert_int_equal(t.c_calls, 3);
    herd_loop_remove_timer(loop, t.a_id); /* gone already: ignored */
    herd_loop_remove_timer(loop, t.c_id);
    herd_loop_destroy(&loop);
}

static void timer_added(herd_loop_t *loop, void *arg)
{
    int *id = arg;
    size_t i = (size_t)(id - timers_of->added_ids);
    timers_of->added_calls[i]++;
    herd_loop_remove_timer(loop, *id);
    if (++timers_of->added_total == ADDED)
        herd_loop_stop(loop);
}

static void timer_adding(herd_loop_t *loop, void *arg)
{
    timers_t *t = arg;
    t->a_calls++;
    for (size_t i = 0; i < ADDED; i++) {
        t->added_ids[i] = herd_loop_add_timer(loop, 1, timer_added, &t->added_ids[i]);
        assert_true(t->added_ids[i] > 0);
    }
    herd_loop_remove_timer(loop, t->a_id);
}

static void timers_added_by_a_timer(void **state)
{
    (void)state;
    herd_loop_t *loop = new_loop();
    timers_t t = {0};
    timers_of = &t;
    t.a_id = herd_loop_add_timer(loop, 1, timer_adding, &t);

    assert_int_equal(herd_loop_run(loop), 0);
    assert_false(timed_out);
    assert_int_equal(t.a_calls, 1);
    assert_int_equal(t.added_total, ADDED);
    for (size_t i = 0; i < ADDED; i++)
        assert_int_equal(t.added_calls[i], 1);
    herd_loop_destroy(&loop);
}

/* A timer added by a tick must bound the wait that follows: with nothing else
 * to wake the loop, it would sleep until the watchdog. */
static void timer_stop(herd_loop_t *loop, void *arg)
{
    (void)arg;
    herd_loop_stop(loop);
}

static void tick_adding_timer(herd_loop_t *loop, void *arg)
{
    int *id = arg;
    if (!*id)
        *id = herd_loop_add_timer(loop, 1, timer_stop, NULL);
}

static void timer_added_by_a_tick_wakes_the_loop(void **state)
{
    (void)state;
    herd_loop_t *loop = new_loop();
    int id = 0;
    assert_true(herd_loop_add_tick(loop, HERD_PHASE_LOG, tick_adding_timer, &id) > 0);
    assert_int_equal(herd_loop_run(loop), 0);
    assert_true(id > 0);
    assert_false(timed_out);
    herd_loop_destroy(&loop);
}

/* ---------------------------------------------------------------------- */
/* A send outside a socket's handler may take the ZMQ_FD edge that announced
 * its input (here a look at ZMQ_EVENTS does it for sure): once the owner
 * says so with herd_loop_zmq_sent, the loop looks at the socket after the
 * same turn; without it, only at its once-a-second look at every socket,
 * many turns later (a 1 ms timer keeps turns coming). */

typedef struct {
    pair_t p;
    bool tell;  /* call herd_loop_zmq_sent */
    int turns;  /* ticks run */
    int got;    /* messages the handler drained */
    int got_turn; /* the tick count when it did */
} edge_t;

static void nop_timer(herd_loop_t *loop, void *arg)
{
    (void)loop, (void)arg;
}

static void edge_tick(herd_loop_t *loop, void *arg)
{
    edge_t *e = arg;
    if (e->turns++ != 1) /* the first turn's look at every socket is over */
        return;
    pair_send(&e->p);
    settle(e->p.in); /* takes the edge: the ZMQ_FD stays quiet */
    assert_false(readable(zmq_fd_of(e->p.in)));
    if (e->tell)
        herd_loop_zmq_sent(loop, e->p.in);
}

static void edge_ready(herd_loop_t *loop, void *arg)
{
    edge_t *e = arg;
    e->got += drain(e->p.in);
    e->got_turn = e->turns;
    herd_loop_stop(loop);
}

static void edge_run(edge_t *e)
{
    herd_loop_t *loop = new_loop();
    pair_open(&e->p);
    assert_int_equal(herd_loop_add_zmq(loop, e->p.in, edge_ready, e), 0);
    assert_true(herd_loop_add_tick(loop, HERD_PHASE_LOG, edge_tick, e) > 0);
    assert_true(herd_loop_add_timer(loop, 1, nop_timer, NULL) > 0); /* keeps turns coming */
    assert_int_equal(herd_loop_run(loop), 0);
    herd_loop_remove_zmq(loop, e->p.in);
    herd_loop_destroy(&loop);
    pair_close(&e->p);
}

static void zmq_sent_makes_the_loop_look(void **state)
{
    (void)state;
    edge_t e = {.tell = true};
    edge_run(&e);
    assert_false(timed_out);
    assert_int_equal(e.got, 1);
    assert_int_equal(e.got_turn, 2); /* the turn that sent it */
}

static void zmq_idle_socket_is_not_looked_at(void **state)
{
    (void)state;
    edge_t e = {.tell = false};
    edge_run(&e);
    assert_false(timed_out);
    assert_int_equal(e.got, 1);  /* the look at every socket found it */
    assert_true(e.got_turn > 2); /* but not in the turn that sent it */
}

/* ---------------------------------------------------------------------- */
/* herd_loop_stop from a descriptor's handler: the turn's ticks still run. */

static void stop_ready(herd_loop_t *loop, herd_watch_t *w, uint32_t events)
{
    (void)w, (void)events;
    herd_loop_stop(loop);
}

static void count_tick(herd_loop_t *loop, void *arg)
{
    (void)loop;
    (*(int *)arg)++;
}

static void stop_still_ends_the_turn(void **state)
{
    (void)state;
    herd_loop_t *loop = new_loop();
    int fds[2];
    open_pipe(fds);
    poke(fds[1]);
    herd_watch_t w = {.fd = fds[0], .fn = stop_ready};
    assert_int_equal(herd_loop_watch(loop, &w, EPOLLIN), 0);
    int ticks = 0;
    assert_true(herd_loop_add_tick(loop, HERD_PHASE_LOG, count_tick, &ticks) > 0);
    assert_int_equal(herd_loop_run(loop), 0);
    assert_false(timed_out);
    assert_int_equal(ticks, 2); /* before the wait, and to end the turn */
    herd_loop_unwatch(loop, &w);
    close(fds[0]);
    close(fds[1]);
    herd_loop_destroy(&loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(zmq_removed_while_its_event_is_pending),
        cmocka_unit_test(fd_unwatched_while_its_event_is_pending),
        cmocka_unit_test(zmq_pass_survives_removals),
        cmocka_unit_test(zmq_added_from_a_handler),
        cmocka_unit_test(ticks_run_in_phase_order),
        cmocka_unit_test(ticks_removed_and_added_by_ticks),
        cmocka_unit_test(timers_removed_by_timers),
        cmocka_unit_test(timers_added_by_a_timer),
        cmocka_unit_test(timer_added_by_a_tick_wakes_the_loop),
        cmocka_unit_test(stop_still_ends_the_turn),
        cmocka_unit_test(again_runs_the_next_turn_at_once),
        cmocka_unit_test(zmq_sent_makes_the_loop_look),
        cmocka_unit_test(zmq_idle_socket_is_not_looked_at),
    };
    return cmocka_run_group_tests(tests, setup_ctx, teardown_ctx);
}
