/* herd_log: timestamped event log written by its own thread. See herd_log.h;
 * the shape is told in herd_log_int.h, the writer thread is
 * herd_log_writer.c. This file is the handles' side: buffering and
 * stamping lines, handing them over, the per-reactor batching, and the
 * rate limits. */
#include "herd_log_int.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- handles ---- */

/* Counts `cost` bytes into the writer's queue if that stays within the cap
 * (always, when forced). Lock-free: concurrent handles never pass the cap. */
static bool queue_reserve(log_writer_t *w, uint64_t cost, bool force)
{
    uint_fast64_t q = atomic_load_explicit(&w->queued, memory_order_relaxed);
    uint64_t cap = atomic_load_explicit(&w->cap, memory_order_relaxed);
    do {
        if (!force && q + cost > cap)
            return false;
    } while (!atomic_compare_exchange_weak(&w->queued, &q, q + cost));
    return true;
}

/* Sends one buffer (ownership goes with it). On failure the buffer is freed
 * and its lines counted as dropped. */
static int send_buf(herd_log_t *log, char *buf, size_t len, uint32_t lines, size_t cost, uint16_t flags)
{
    log_msg_t m = {.type = MSG_BUF, .flags = flags, .lines = lines, .buf = buf, .len = len, .cost = cost};
    if (zmq_send(zsock_resolve(log->out), &m, sizeof m, ZMQ_DONTWAIT) == (int)sizeof m) {
        atomic_fetch_add(&log->sent, 1);
        return 0;
    }
    free(buf);
    atomic_fetch_sub(&log->w->queued, cost);
    atomic_fetch_add(&log->w->lines_dropped, lines);
    atomic_fetch_add(&log->w->bytes_dropped, len);
    return -1;
}

/* Drops the pending lines (over the cap, or out of memory), counting them;
 * the buffer is kept for the next lines unless it was grown for a big one. */
static void drop_pending(herd_log_t *log)
{
    log->backwards = false;
    log->gap_lines += log->lines;
    log->gap_bytes += log->len;
    atomic_fetch_add(&log->w->lines_dropped, log->lines);
    atomic_fetch_add(&log->w->bytes_dropped, log->len);
    log->len = 0;
    log->lines = 0;
    if (log->cap > LOG_BUF_CAP) {
        free(log->buf);
        log->buf = NULL;
        log->cap = 0;
    }
}

/* Hands the pending lines to the writer, preceded by the marker line if
 * lines were dropped since the last one. Over the cap they are dropped
 * instead (unless forced). A small remainder (the end of a turn) is copied
 * out so the buffer is reused; a fuller one goes as it is, and one grown for
 * a big event goes cut to its size. Returns 0, or -1
 * when the lines were dropped. */
static int hand_over_lines(herd_log_t *log, bool force)
{
    if (log->len == 0 && !(force && log->gap_lines))
        return 0;
    char marker[160];
    size_t mlen = 0;
    if (log->gap_lines) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        hl_format_stamp(marker, &ts, &log->date_sec, log->date);
        int n = snprintf(marker + LOG_STAMP_LEN, sizeof marker - LOG_STAMP_LEN,
                         "%llu log lines dropped: the disk did not keep up (%llu bytes)\n",
                         (unsigned long long)log->gap_lines, (unsigned long long)log->gap_bytes);
        mlen = LOG_STAMP_LEN + (size_t)n;
    }
    bool big = log->cap > LOG_BUF_CAP; /* made for one big event: goes, cut to its size */
    bool copy = !big && log->len <= log->cap / 4;
    size_t cost = (copy || big ? log->len : log->cap) + LOG_MSG_COST;
    size_t mcost = mlen ? mlen + LOG_MSG_COST : 0;
    if (!queue_reserve(log->w, cost + mcost, force)) {
        drop_pending(log);
        return -1;
    }
    if (mlen) {
        char *m = malloc(mlen);
        if (m) {
            memcpy(m, marker, mlen);
            send_buf(log, m, mlen, 1, mcost, 0);
            log->gap_lines = log->gap_bytes = 0;
        } else {
            atomic_fetch_sub(&log->w->queued, mcost);
        }
    }
    if (log->len == 0) {
        atomic_fetch_sub(&log->w->queued, cost);
        return 0;
    }
    char *out = log->buf;
    if (copy) {
        out = malloc(log->len);
        if (!out) {
            atomic_fetch_sub(&log->w->queued, cost);
            drop_pending(log);
            return -1;
        }
        memcpy(out, log->buf, log->len);
    } else {
        if (big) {
            char *cut = realloc(out, log->len);
            if (cut)
                out = cut;
        }
        log->buf = NULL;
        log->cap = 0;
    }
    int rc = send_buf(log, out, log->len, log->lines, cost, log->backwards ? MSG_BACKWARDS : 0);
    log->backwards = false;
    log->len = 0;
    log->lines = 0;
    return rc;
}

/* hand_over_lines, then the writer is told nothing older is pending here. */
static int hand_over(herd_log_t *log, bool force)
{
    int rc = hand_over_lines(log, force);
    if (log->len == 0)
        atomic_store(&log->unsent_us, 0);
    return rc;
}

/* Makes room for `need` more bytes, handing the buffer over first when it
 * is full. A single event larger than the buffer (a multi-megabyte Places
 * reply) gets a buffer of its own size. */
static bool reserve(herd_log_t *log, size_t need)
{
    if (log->buf && log->len + need <= log->cap)
        return true;
    if (log->len)
        hand_over(log, false);
    if (log->buf && log->len + need <= log->cap)
        return true;
    size_t size = need > LOG_BUF_CAP ? need : LOG_BUF_CAP;
    char *grown = realloc(log->buf, size);
    if (!grown) {
        log->gap_lines++;
        atomic_fetch_add(&log->w->lines_dropped, 1);
        return false;
    }
    log->buf = grown;
    log->cap = size;
    return true;
}

/* Notes a line stamped at us (first: the first of the pending buffer). */
static void note_order(herd_log_t *log, uint64_t us, bool first)
{
    if (!first && us < log->last_us)
        log->backwards = true;
    log->last_us = us;
}

/* Appends the time stamp of a line (LOG_STAMP_LEN bytes). The first line
 * not yet handed over publishes its time for the writer's order, and says
 * "being stamped" before the clock is read, so that the writer never takes
 * a later line of another thread for the earliest. */
static void put_stamp(herd_log_t *log)
{
    char *p = log->buf + log->len;
    bool first = atomic_load_explicit(&log->unsent_us, memory_order_relaxed) == 0;
    if (first)
        atomic_store(&log->unsent_us, 1);
    log->len += LOG_STAMP_LEN;
    /* The turn clock's reading is not reused for a first line: published
     * late, an old time could come after a later line of another thread. */
    if (log->fixed && log->fixed_left && !(first && log->turn_clock)) {
        log->fixed_left--;
        memcpy(p, log->fixed_stamp, LOG_STAMP_LEN);
        if (first)
            atomic_store(&log->unsent_us, log->fixed_us);
        note_order(log, log->fixed_us, first);
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    hl_format_stamp(p, &ts, &log->date_sec, log->date);
    uint64_t us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    if (first)
        atomic_store(&log->unsent_us, us);
    note_order(log, us, first);
    if (log->turn_clock) {
        memcpy(log->fixed_stamp, p, LOG_STAMP_LEN);
        log->fixed_us = us;
        log->fixed = true;
        log->fixed_left = LOG_TURN_REUSE - 1;
    }
}

/* Takes a handle off the writer's list (before it is freed). */
static void forget_handle(log_writer_t *w, herd_log_t *log)
{
    pthread_mutex_lock(&w->handles_lock);
    for (size_t i = 0; i < w->n_handles; i++) {
        if (w->handles[i] == log) {
            w->handles[i] = w->handles[--w->n_handles];
            break;
        }
    }
    pthread_mutex_unlock(&w->handles_lock);
}

static herd_log_t *new_handle(log_writer_t *w, char *err, size_t errlen)
{
    herd_log_t *log = calloc(1, sizeof *log);
    if (!log) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    log->w = w;
    log->date_sec = (time_t)-1;
    log->out = zsock_new(ZMQ_DEALER);
    if (!log->out) {
        snprintf(err, errlen, "cannot make the log's socket");
        free(log);
        return NULL;
    }
    zsock_set_sndhwm(log->out, 0); /* bounded by bytes (queue_reserve), not by messages */
    zsock_set_rcvhwm(log->out, 0);
    /* The routing id names the handle, for the writer's order: a byte (ids
     * starting with a zero byte are libzmq's) and the pointer. */
    unsigned char id[1 + sizeof log];
    id[0] = 'L';
    memcpy(id + 1, &log, sizeof log);
    zmq_setsockopt(zsock_resolve(log->out), ZMQ_ROUTING_ID, id, sizeof id);
    herd_log_t **grown = NULL;
    pthread_mutex_lock(&w->handles_lock);
    grown = realloc(w->handles, (w->n_handles + 1) * sizeof *grown);
    if (grown) {
        w->handles = grown;
        w->handles[w->n_handles++] = log;
    }
    pthread_mutex_unlock(&w->handles_lock);
    if (!grown || zsock_connect(log->out, "%s", w->endpoint) != 0) {
        snprintf(err, errlen, "cannot connect the log's socket: %s", grown ? zmq_strerror(zmq_errno()) : "out of memory");
        if (grown)
            forget_handle(w, log);
        zsock_destroy(&log->out);
        free(log);
        return NULL;
    }
    return log;
}

herd_log_t *herd_log_open(const char *path, char *err, size_t errlen)
{
    char dir[4096];
    if (hl_make_parent(path, dir, sizeof dir) != 0) {
        snprintf(err, errlen, "cannot make log folder %s: %s", dir, strerror(errno));
        return NULL;
    }
    log_writer_t *w = calloc(1, sizeof *w);
    if (!w || !(w->path = strdup(path))) {
        snprintf(err, errlen, "out of memory");
        free(w);
        return NULL;
    }
    atomic_init(&w->queued, 0);
    atomic_init(&w->cap, LOG_QUEUE_CAP);
    atomic_init(&w->lines_written, 0);
    atomic_init(&w->bytes_written, 0);
    atomic_init(&w->lines_dropped, 0);
    atomic_init(&w->bytes_dropped, 0);
    atomic_init(&w->attached, 0);
    atomic_init(&w->reopen_failures, 0);
    pthread_mutex_init(&w->handles_lock, NULL);
    w->fd = hl_open_file(path);
    if (w->fd < 0) {
        snprintf(err, errlen, "cannot open log file %s: %s", path, strerror(errno));
        hl_writer_free(w);
        return NULL;
    }
    snprintf(w->endpoint, sizeof w->endpoint, "inproc://herd-log-%p", (void *)w);
    w->in = zsock_new(ZMQ_ROUTER);
    if (!w->in) {
        snprintf(err, errlen, "cannot make the log writer's socket");
        hl_writer_free(w);
        return NULL;
    }
    zsock_set_rcvhwm(w->in, 0);
    zsock_set_sndhwm(w->in, 0);
    if (zsock_bind(w->in, "%s", w->endpoint) != 0) {
        snprintf(err, errlen, "cannot bind the log writer's socket: %s", zmq_strerror(zmq_errno()));
        hl_writer_free(w);
        return NULL;
    }
    herd_log_t *log = new_handle(w, err, errlen);
    if (!log) {
        hl_writer_free(w);
        return NULL;
    }
    log->first = true;
    /* The ROUTER passes to the writer thread here and is not touched by this
     * thread again until the thread has ended. */
    w->actor = zactor_new(hl_writer_actor, w);
    if (!w->actor) {
        snprintf(err, errlen, "cannot start the log writer thread");
        zsock_destroy(&log->out);
        free(log);
        hl_writer_free(w);
        return NULL;
    }
    return log;
}

herd_log_t *herd_log_attach(herd_log_t *log, char *err, size_t errlen)
{
    herd_log_t *h = new_handle(log->w, err, errlen);
    if (h)
        atomic_fetch_add(&log->w->attached, 1);
    return h;
}

int herd_log_sync(herd_log_t *log)
{
    hand_over(log, false);
    void *out = zsock_resolve(log->out);
    log_msg_t m = {.type = MSG_SYNC};
    if (zmq_send(out, &m, sizeof m, 0) != (int)sizeof m)
        return -1;
    for (;;) {
        int n = zmq_recv(out, &m, sizeof m, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == (int)sizeof m && m.type == MSG_SYNCED)
            return 0;
    }
}

void herd_log_close(herd_log_t **p)
{
    if (!p || !*p)
        return;
    herd_log_t *log = *p;
    hand_over(log, true);
    herd_log_sync(log);
    zsock_destroy(&log->out);
    forget_handle(log->w, log);
    if (log->first) {
        /* Every other handle must be closed first: it would send to a writer
         * that is gone. */
        assert(atomic_load(&log->w->attached) == 0);
        hl_writer_free(log->w);
    } else {
        atomic_fetch_sub(&log->w->attached, 1);
    }
    free(log->buf);
    free(log);
    *p = NULL;
}

int herd_log_flush(herd_log_t *log)
{
    int rc = hand_over(log, false);
    log->fixed = false;
    return rc;
}

int herd_log_reopen(herd_log_t *log)
{
    hand_over(log, false);
    log_msg_t m = {.type = MSG_REOPEN};
    return zmq_send(zsock_resolve(log->out), &m, sizeof m, ZMQ_DONTWAIT) == (int)sizeof m ? 0 : -1;
}

/* A reactor's hand-over: at the end of a turn, the lines go to the writer
 * when an event line (herd_log_event, herd_log_data: a connection, a link,
 * a fault) is
 * among them, once LOG_HOLD_BYTES are pending, or once LOG_HOLD_MS have
 * passed since the last hand-over. The per-command lines of a busy reactor
 * thus wake the writer about a hundred times a second rather than once a
 * turn, and events are on their way as soon as before; a timer armed while
 * lines wait hands over the rest when the reactor goes quiet. */
static void loop_timer_fired(herd_loop_t *loop, void *arg);

static void loop_hand_over(herd_log_t *log, bool now)
{
    int64_t t = herd_loop_now_ms(log->loop);
    if (now || log->urgent || log->len >= LOG_HOLD_BYTES || t - log->handed_ms >= LOG_HOLD_MS) {
        hand_over(log, false);
        log->handed_ms = t;
        log->urgent = false;
    }
    if (log->len == 0 && log->loop_timer > 0) {
        herd_loop_remove_timer(log->loop, log->loop_timer);
        log->loop_timer = 0;
    } else if (log->len > 0 && log->loop_timer <= 0) {
        log->loop_timer = herd_loop_add_timer(log->loop, LOG_HOLD_MS, loop_timer_fired, log);
        if (log->loop_timer < 0)
            hand_over(log, false); /* no timer: nothing may wait for one */
    }
}

static void loop_timer_fired(herd_loop_t *loop, void *arg)
{
    (void)loop;
    loop_hand_over(arg, true);
}

static void loop_tick(herd_loop_t *loop, void *arg)
{
    (void)loop;
    herd_log_t *log = arg;
    loop_hand_over(log, false);
    log->fixed = false;
}

int herd_log_attach_loop(herd_log_t *log, herd_loop_t *loop)
{
    log->loop = loop;
    log->handed_ms = herd_loop_now_ms(loop);
    log->loop_tick = herd_loop_add_tick(loop, HERD_PHASE_LOG, loop_tick, log);
    if (log->loop_tick < 0) {
        log->loop = NULL;
        return -1;
    }
    return 0;
}

void herd_log_detach_loop(herd_log_t *log)
{
    if (!log || !log->loop)
        return;
    if (log->loop_tick > 0)
        herd_loop_remove_tick(log->loop, log->loop_tick);
    if (log->loop_timer > 0)
        herd_loop_remove_timer(log->loop, log->loop_timer);
    log->loop = NULL;
    log->loop_tick = log->loop_timer = 0;
    herd_log_flush(log);
}

void herd_log_set_now(herd_log_t *log, const struct timespec *now)
{
    struct timespec ts;
    if (!now) {
        clock_gettime(CLOCK_REALTIME, &ts);
        now = &ts;
    }
    hl_format_stamp(log->fixed_stamp, now, &log->date_sec, log->date);
    log->fixed_us = (uint64_t)now->tv_sec * 1000000u + (uint64_t)now->tv_nsec / 1000u;
    log->fixed = true;
    log->fixed_left = UINT32_MAX; /* the caller's time holds until the flush */
}

void herd_log_set_turn_clock(herd_log_t *log, bool on)
{
    log->turn_clock = on;
}

void herd_log_set_queue_cap(herd_log_t *log, size_t bytes)
{
    atomic_store(&log->w->cap, bytes < LOG_QUEUE_MIN ? LOG_QUEUE_MIN : (uint64_t)bytes);
}

void herd_log_stats(const herd_log_t *log, herd_log_stats_t *out)
{
    log_writer_t *w = log->w;
    out->lines_written = atomic_load(&w->lines_written);
    out->bytes_written = atomic_load(&w->bytes_written);
    out->lines_dropped = atomic_load(&w->lines_dropped);
    out->bytes_dropped = atomic_load(&w->bytes_dropped);
    out->queue_bytes = atomic_load(&w->queued);
    out->queue_cap = atomic_load(&w->cap);
    out->reopen_failures = atomic_load(&w->reopen_failures);
}

static void log_vevent(herd_log_t *log, const char *fmt, va_list ap)
{
    if (!reserve(log, LOG_STAMP_LEN + 1024))
        return;
    if (log->turn_clock)
        log->fixed_left = 0; /* an event reads the clock: its own time, not its turn's */
    put_stamp(log);
    int n = vsnprintf(log->buf + log->len, 1023, fmt, ap);
    if (n < 0)
        n = 0;
    if (n > 1022)
        n = 1022; /* an over-long event is cut, never overflows */
    log->len += (size_t)n;
    log->buf[log->len++] = '\n';
    log->lines++;
    log->urgent = true;
}

void herd_log_event(herd_log_t *log, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vevent(log, fmt, ap);
    va_end(ap);
}

static uint32_t limit_per_sec(const herd_log_limit_t *lim)
{
    return lim->per_sec ? lim->per_sec : HERD_LOG_LIMIT_PER_SEC;
}

/* Starts a new second for lim when the last one is over; returns whether it
 * did. */
static bool limit_new_second(herd_log_limit_t *lim, int64_t now)
{
    if (now - lim->window_ms < 1000)
        return false;
    lim->logged = 0;
    lim->window_ms = now;
    return true;
}

/* Counts one event: true when its line may be written in this second. */
static bool limit_admit(herd_log_limit_t *lim)
{
    if (lim->logged >= limit_per_sec(lim)) {
        lim->left_out++;
        lim->left_out_total++;
        return false;
    }
    lim->logged++;
    return true;
}

/* Starts a new second for lim when the last one is over, first writing how
 * many events of it were left out. */
static void limit_roll(herd_log_t *log, herd_log_limit_t *lim, int64_t now)
{
    if (!limit_new_second(lim, now))
        return;
    if (lim->left_out)
        herd_log_event(log, "%llu more %s left out of the log (at most %u a second are written)",
                       (unsigned long long)lim->left_out, lim->kind, (unsigned)limit_per_sec(lim));
    lim->left_out = 0;
}

bool herd_log_limited(herd_log_t *log, herd_log_limit_t *lim, const char *fmt, ...)
{
    limit_roll(log, lim, hl_mono_ms());
    if (!limit_admit(lim))
        return false;
    va_list ap;
    va_start(ap, fmt);
    log_vevent(log, fmt, ap);
    va_end(ap);
    return true;
}

bool herd_log_limit_take(herd_log_limit_t *lim, uint64_t *left_out)
{
    limit_new_second(lim, hl_mono_ms());
    if (!limit_admit(lim))
        return false;
    *left_out = lim->left_out;
    lim->left_out = 0;
    return true;
}

void herd_log_limited_flush(herd_log_t *log, herd_log_limit_t *lim)
{
    if (lim->left_out)
        limit_roll(log, lim, hl_mono_ms());
}

/* The line PREFIX"ESCAPED" for data, its escaped text cut at `head` bytes,
 * and `... (N bytes)` after it when that cut some of data. */
static void data_line(herd_log_t *log, const char *prefix, size_t plen, const char *data, size_t len, size_t head)
{
    size_t room = len < head / 4 + 1 ? 4 * len : head; /* escaped bytes at most */
    size_t need = LOG_STAMP_LEN + plen + 3 + room + 40;
    if (!reserve(log, need))
        return;
    put_stamp(log);
    memcpy(log->buf + log->len, prefix, plen);
    log->len += plen;
    log->buf[log->len++] = '"';
    size_t used;
    log->len += herd_log_escape_prefix(log->buf + log->len, room, data, len, &used);
    log->buf[log->len++] = '"';
    if (used < len)
        log->len += (size_t)snprintf(log->buf + log->len, 40, "... (%zu bytes)", len);
    log->buf[log->len++] = '\n';
    log->lines++;
}

void herd_log_data_n(herd_log_t *log, const char *prefix, size_t plen, const char *data, size_t len)
{
    data_line(log, prefix, plen, data, len, SIZE_MAX);
}

void herd_log_data_head(herd_log_t *log, const char *prefix, size_t plen, const char *data, size_t len, size_t head)
{
    data_line(log, prefix, plen, data, len, head);
}

void herd_log_data(herd_log_t *log, const char *prefix, const char *data, size_t len)
{
    if (log->turn_clock)
        log->fixed_left = 0; /* an event reads the clock: its own time, not its turn's */
    herd_log_data_n(log, prefix, strlen(prefix), data, len);
    log->urgent = true;
}
