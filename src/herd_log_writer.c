/* herd_log_writer: the log's writer thread, which writes the handles'
 * buffers to the file in stamp order across handles, and reopens it. See
 * herd_log_int.h for the shape; herd_log.c is the handles' side. */
#define _GNU_SOURCE /* SCHED_BATCH (herd_thread.h) */
#include "herd_log_int.h"
#include "herd_fs.h"
#include "herd_thread.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/uio.h>
#include <unistd.h>

/* Makes the folder `path` is in, if it has one. Returns 0, or -1 with errno
 * set and the folder's name in dir (dirlen bytes). */
int hl_make_parent(const char *path, char *dir, size_t dirlen)
{
    const char *slash = strrchr(path, '/');
    if (dirlen)
        dir[0] = '\0';
    size_t n = slash ? (size_t)(slash - path) : 0;
    if (n == 0)
        return 0;
    if (n >= dirlen) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(dir, path, n);
    dir[n] = '\0';
    return herd_mkdirs(dir);
}

int hl_open_file(const char *path)
{
    return open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

/* Formats "YYYY-MM-DDTHH:MM:SS.uuuuuuZ " (LOG_STAMP_LEN bytes, no NUL) into
 * out. The date part is cached per second in date/date_sec. */
void hl_format_stamp(char *out, const struct timespec *ts, time_t *date_sec, char *date)
{
    if (ts->tv_sec != *date_sec) {
        struct tm tm;
        gmtime_r(&ts->tv_sec, &tm);
        strftime(date, 20, "%Y-%m-%dT%H:%M:%S", &tm);
        *date_sec = ts->tv_sec;
    }
    memcpy(out, date, 19);
    long us = ts->tv_nsec / 1000;
    out[19] = '.';
    for (int i = 25; i >= 20; i--) {
        out[i] = (char)('0' + us % 10);
        us /= 10;
    }
    out[26] = 'Z';
    out[27] = ' ';
}

/* ---- the writer thread ---- */

/* Writes iov[0..n) whole (iov is advanced past what was written); returns
 * 0 or an errno. *written (may be NULL) is the number of iovecs written
 * whole, also on an error. */
static int write_all(int fd, struct iovec *iov, int n, int *written)
{
    int done = 0, err = 0;
    while (done < n) {
        ssize_t k = writev(fd, iov + done, n - done);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            err = k < 0 ? errno : EIO;
            break;
        }
        size_t left = (size_t)k;
        while (done < n && left >= iov[done].iov_len)
            left -= iov[done++].iov_len;
        if (left) {
            iov[done].iov_base = (char *)iov[done].iov_base + left;
            iov[done].iov_len -= left;
        }
    }
    if (written)
        *written = done;
    return err;
}

/* Writes a batch of buffers with writev, frees them and counts them. A
 * buffer not fully written when a write fails is counted as dropped. */
static void write_batch(log_writer_t *w, log_msg_t *b, size_t n)
{
    if (n == 0)
        return;
    struct iovec iov[LOG_BATCH];
    for (size_t i = 0; i < n; i++)
        iov[i] = (struct iovec){.iov_base = b[i].buf, .iov_len = b[i].len};
    int written = 0;
    int err = write_all(w->fd, iov, (int)n, &written);
    size_t done = (size_t)written; /* buffers fully written */
    uint64_t wl = 0, wb = 0, dl = 0, db = 0, cost = 0;
    for (size_t i = 0; i < n; i++) {
        if (i < done) {
            wl += b[i].lines;
            wb += b[i].len;
        } else {
            dl += b[i].lines;
            db += b[i].len;
        }
        cost += b[i].cost;
        free(b[i].buf);
    }
    atomic_fetch_add(&w->lines_written, wl);
    atomic_fetch_add(&w->bytes_written, wb);
    if (dl)
        atomic_fetch_add(&w->lines_dropped, dl);
    if (db)
        atomic_fetch_add(&w->bytes_dropped, db);
    atomic_fetch_sub(&w->queued, cost);
    if (err && !w->write_failed)
        fprintf(stderr, "herd: cannot write log %s: %s (dropping lines until it works again)\n", w->path,
                strerror(err));
    w->write_failed = err != 0;
}

int64_t hl_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Writes one line of the writer's own (stamped now) to the file in use. */
static void writer_line(log_writer_t *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void writer_line(log_writer_t *w, const char *fmt, ...)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    time_t sec = (time_t)-1;
    char date[20], line[4400];
    hl_format_stamp(line, &ts, &sec, date);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line + LOG_STAMP_LEN, sizeof line - LOG_STAMP_LEN - 1, fmt, ap);
    va_end(ap);
    size_t body = n < 0 ? 0 : (size_t)n < sizeof line - LOG_STAMP_LEN - 1 ? (size_t)n : sizeof line - LOG_STAMP_LEN - 2;
    line[LOG_STAMP_LEN + body] = '\n';
    size_t len = LOG_STAMP_LEN + body + 1;
    log_msg_t m = {.type = MSG_BUF, .lines = 1, .buf = malloc(len), .len = len};
    if (m.buf) {
        memcpy(m.buf, line, len);
        atomic_fetch_add(&w->queued, (uint64_t)len);
        m.cost = len;
        write_batch(w, &m, 1);
    }
}

/* Reopens the file by name, making its folder first (it may have been
 * removed with the file). On failure (no descriptor to spare, a folder that
 * cannot be made) the old file stays in use, gets a line saying so at the
 * first failure of a streak, and the reopen is tried again every
 * LOG_REOPEN_RETRY_MS until it works; every failure is counted. */
static void writer_reopen(log_writer_t *w)
{
    char dir[4096];
    int fd = hl_make_parent(w->path, dir, sizeof dir) == 0 ? hl_open_file(w->path) : -1;
    if (fd >= 0) {
        close(w->fd);
        w->fd = fd;
        w->write_failed = false;
        w->reopen_pending = false;
        if (w->reopen_streak)
            writer_line(w, "log file %s reopened after %llu failed attempts", w->path,
                        (unsigned long long)w->reopen_streak);
        w->reopen_streak = 0;
        return;
    }
    int e = errno;
    atomic_fetch_add(&w->reopen_failures, 1);
    if (w->reopen_streak++ == 0) {
        writer_line(w, "cannot reopen the log file %s: %s (trying again every %d ms); still writing to the old file",
                    w->path, strerror(e), LOG_REOPEN_RETRY_MS);
        fprintf(stderr, "herd: cannot reopen log %s: %s\n", w->path, strerror(e));
    }
    w->reopen_pending = true;
    w->reopen_at_ms = hl_mono_ms() + LOG_REOPEN_RETRY_MS;
}

/* ---- one clock: lines of all threads in time order ----
 *
 * Each handle's lines are in the order logged and their stamps come from
 * one clock, but a handle hands its lines over some milliseconds after it
 * stamped them. So the writer writes lines by their stamps across handles
 * (a merge of each handle's queue, whose order is kept), and writes the
 * earliest line it holds only once no handle can still send an earlier
 * one: each handle publishes the time of its oldest line not yet handed
 * over (unsent_us, set before the clock is read) and how many buffers it
 * sent, and the writer waits while one has an older line unsent or a
 * buffer on its way. A thread stuck in a long turn holds the others' lines
 * back at most LOG_ORDER_MAX_MS. The stamps ("YYYY-MM-DDTHH:MM:SS.uuuuuuZ")
 * sort as text. */

#define STAMP_CMP (LOG_STAMP_LEN - 1)

/* The held buffers of handle h, made on first use; NULL when out of memory. */
static sender_t *sender_of(log_writer_t *w, const struct herd_log_t *h)
{
    for (size_t i = 0; i < w->n_senders; i++)
        if (w->senders[i].h == h)
            return &w->senders[i];
    sender_t *grown = realloc(w->senders, (w->n_senders + 1) * sizeof *grown);
    if (!grown)
        return NULL;
    w->senders = grown;
    sender_t *s = &w->senders[w->n_senders++];
    memset(s, 0, sizeof *s);
    s->h = h;
    return s;
}

/* The time of a stamp, in microseconds since the epoch (0 for a line that
 * does not start with one). */
static uint64_t stamp_us(log_writer_t *w, const char *t)
{
    if (memcmp(t, w->parsed_text, sizeof w->parsed_text) != 0) {
        struct tm tm = {0};
        if (sscanf(t, "%4d-%2d-%2dT%2d:%2d:%2d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
                   &tm.tm_sec) != 6)
            return 0;
        tm.tm_year -= 1900;
        tm.tm_mon -= 1;
        w->parsed_sec = timegm(&tm);
        memcpy(w->parsed_text, t, sizeof w->parsed_text);
    }
    uint64_t us = 0;
    for (int i = 20; i < 26; i++)
        us = us * 10 + (uint64_t)(t[i] >= '0' && t[i] <= '9' ? t[i] - '0' : 0);
    return (uint64_t)w->parsed_sec * 1000000u + us;
}


/* A run of lines from the held buffers, and the buffers finished by it. */
typedef struct {
    struct iovec iov[LOG_ORDER_IOV];
    pend_t *owner[LOG_ORDER_IOV];
    int n;
    pend_t *done; /* buffers all taken: freed once written */
} emit_t;

/* Writes what e holds, then frees and counts the buffers it finished. */
static void emit_flush(log_writer_t *w, emit_t *e)
{
    int err = e->n ? write_all(w->fd, e->iov, e->n, NULL) : 0;
    if (err)
        for (int i = 0; i < e->n; i++)
            e->owner[i]->failed = true;
    if (err && !w->write_failed)
        fprintf(stderr, "herd: cannot write log %s: %s (dropping lines until it works again)\n", w->path,
                strerror(err));
    if (e->n)
        w->write_failed = err != 0;
    e->n = 0;
    for (pend_t *p = e->done, *next; p; p = next) {
        next = p->next;
        atomic_fetch_add(p->failed ? &w->lines_dropped : &w->lines_written, p->m.lines);
        atomic_fetch_add(p->failed ? &w->bytes_dropped : &w->bytes_written, p->m.len);
        atomic_fetch_sub(&w->queued, p->m.cost);
        free(p->m.buf);
        free(p);
    }
    e->done = NULL;
}

/* Up to when the held lines can be written (microseconds since the
 * epoch): no handle can still send a line earlier than this. It is the
 * oldest line a handle has not handed over yet, or 0 while a handle is
 * stamping one or has a buffer on its way. Lines stamped after this call
 * are later than every line held now, so the answer stays true. */
static uint64_t writable_until(log_writer_t *w)
{
    uint64_t limit = UINT64_MAX;
    pthread_mutex_lock(&w->handles_lock);
    for (size_t i = 0; i < w->n_handles && limit; i++) {
        struct herd_log_t *h = w->handles[i];
        /* unsent first: a handle counts a buffer as sent before it clears
         * unsent, so a cleared unsent comes with its count. */
        uint64_t u = atomic_load(&h->unsent_us);
        if (u != 0 && u < limit)
            limit = u == 1 ? 0 : u;
        if (h->received < atomic_load(&h->sent))
            limit = 0;
    }
    pthread_mutex_unlock(&w->handles_lock);
    return limit;
}

/* Whether the last line of buffer p is no later than `second` (the other
 * handles' earliest held line, or NULL) nor than `lim` (microseconds, or
 * UINT64_MAX): a handle's lines are stamped in order (unless the clock
 * was set back while the buffer filled: MSG_BACKWARDS), so then all of the
 * buffer's rest may go without a look at each line. */
static bool rest_fits(log_writer_t *w, const pend_t *p, const char *second, uint64_t lim)
{
    if ((p->m.flags & MSG_BACKWARDS) || p->m.len - p->off < 2)
        return false;
    const char *b = p->m.buf, *last = b + p->off;
    for (size_t q = p->m.len - 1; q-- > p->off;) /* the line end before the last */
        if (b[q] == '\n') {
            last = b + q + 1;
            break;
        }
    if ((size_t)(b + p->m.len - last) < STAMP_CMP)
        return false;
    return (!second || memcmp(last, second, STAMP_CMP) <= 0) && (lim == UINT64_MAX || stamp_us(w, last) <= lim);
}

/* Writes the held lines in stamp order: all of them, or those no earlier
 * line can still come before (see above). Returns the monotonic time at
 * which to look again, or -1 when nothing is held. */
static int64_t writer_emit(log_writer_t *w, bool all)
{
    int64_t now = zclock_mono();
    emit_t e;
    e.n = 0;
    e.done = NULL;
    int64_t next_due = -1;
    uint64_t limit = all || !w->n_held ? UINT64_MAX : writable_until(w);
    while (w->n_held) {
        sender_t *best = NULL;
        const char *second = NULL; /* the earliest head line of the other handles */
        for (size_t i = 0; i < w->n_senders; i++) {
            pend_t *p = w->senders[i].head;
            if (!p)
                continue;
            const char *line = p->m.buf + p->off;
            if (!best || memcmp(line, best->head->m.buf + best->head->off, STAMP_CMP) < 0) {
                if (best)
                    second = best->head->m.buf + best->head->off;
                best = &w->senders[i];
            } else if (!second || memcmp(line, second, STAMP_CMP) < 0) {
                second = line;
            }
        }
        pend_t *p = best->head;
        uint64_t lim = now < p->due_ms ? limit : UINT64_MAX; /* past due: waits for no one */
        if (lim != UINT64_MAX && stamp_us(w, p->m.buf + p->off) > lim) {
            next_due = now + LOG_ORDER_POLL_MS < p->due_ms ? now + LOG_ORDER_POLL_MS : p->due_ms;
            break;
        }
        /* A run of this buffer's lines, up to the other handles' earliest
         * held line and the limit. */
        size_t start = p->off, end = p->off;
        if (!second && lim == UINT64_MAX)
            end = p->m.len; /* alone and free: the whole rest */
        else if (rest_fits(w, p, second, lim))
            end = p->m.len; /* its last line is due: so are those before it */
        while (end < p->m.len) {
            const char *nl = memchr(p->m.buf + end, '\n', p->m.len - end);
            end = nl ? (size_t)(nl - p->m.buf) + 1 : p->m.len;
            if (end >= p->m.len || p->m.len - end < STAMP_CMP ||
                (second && memcmp(p->m.buf + end, second, STAMP_CMP) > 0) ||
                (lim != UINT64_MAX && stamp_us(w, p->m.buf + end) > lim))
                break;
        }
        e.iov[e.n] = (struct iovec){.iov_base = p->m.buf + start, .iov_len = end - start};
        e.owner[e.n++] = p;
        p->off = end;
        if (end >= p->m.len) {
            best->head = p->next;
            if (!best->head)
                best->tail = NULL;
            p->next = e.done;
            e.done = p;
            w->n_held--;
        }
        if (e.n == LOG_ORDER_IOV)
            emit_flush(w, &e);
    }
    emit_flush(w, &e);
    return next_due;
}

/* Holds one buffer from the handle of routing id `id` until its lines'
 * turn (written at once when out of memory). */
static void writer_hold(log_writer_t *w, const unsigned char *id, size_t idlen, const log_msg_t *m)
{
    struct herd_log_t *h = NULL;
    if (idlen == 1 + sizeof h)
        memcpy(&h, id + 1, sizeof h);
    /* The handle is open: it waits for its SYNC's answer before it closes,
     * and that answer comes after this buffer. */
    if (h)
        h->received++;
    sender_t *s = sender_of(w, h);
    pend_t *p = s ? calloc(1, sizeof *p) : NULL;
    if (!p || m->len == 0) {
        free(p);
        log_msg_t copy = *m;
        write_batch(w, &copy, 1);
        return;
    }
    p->m = *m;
    p->due_ms = zclock_mono() + LOG_ORDER_MAX_MS;
    if (s->tail)
        s->tail->next = p;
    else
        s->head = p;
    s->tail = p;
    w->n_held++;
}

/* Reads every message waiting on the ROUTER, in order: buffers are held for
 * writer_emit; a command first writes every held line. */
static void writer_drain(log_writer_t *w)
{
    void *in = zsock_resolve(w->in);
    for (;;) {
        unsigned char id[256];
        int idlen = zmq_recv(in, id, sizeof id, ZMQ_DONTWAIT);
        if (idlen < 0)
            break; /* EAGAIN: nothing more for now */
        log_msg_t m;
        if (zmq_recv(in, &m, sizeof m, 0) != (int)sizeof m)
            continue; /* cannot happen: only our own handles know the endpoint */
        if (m.type == MSG_BUF) {
            writer_hold(w, id, (size_t)idlen, &m);
            continue;
        }
        writer_emit(w, true);
        if (m.type == MSG_REOPEN) {
            writer_reopen(w);
        } else if (m.type == MSG_SYNC) {
            m.type = MSG_SYNCED;
            zmq_send(in, id, (size_t)idlen, ZMQ_SNDMORE);
            zmq_send(in, &m, sizeof m, 0);
        }
    }
}

/* The writer thread: writes what arrives until the owner's $TERM. Every
 * handle has synced by then, so the last drain finds nothing of theirs. */
void hl_writer_actor(zsock_t *pipe, void *arg)
{
    log_writer_t *w = arg;
    prctl(PR_SET_NAME, "herd-log"); /* its CPU time shows under this name in /proc/PID/task */
    herd_thread_background();
    zsock_signal(pipe, 0);
    zmq_pollitem_t items[] = {
        {zsock_resolve(pipe), 0, ZMQ_POLLIN, 0},
        {zsock_resolve(w->in), 0, ZMQ_POLLIN, 0},
    };
    int64_t due = -1;
    for (;;) {
        long wait = due < 0 ? -1 : (long)(due - zclock_mono());
        if (due >= 0 && wait < 1)
            wait = 1;
        if (w->reopen_pending) {
            int64_t left = w->reopen_at_ms - hl_mono_ms();
            if (left < 0)
                left = 0;
            if (wait < 0 || left < wait)
                wait = (long)left;
        }
        if (zmq_poll(items, 2, wait) < 0) {
            if (errno == EINTR)
                continue;
            break; /* the context is ending */
        }
        if (items[1].revents & ZMQ_POLLIN)
            writer_drain(w);
        if (w->reopen_pending && hl_mono_ms() >= w->reopen_at_ms)
            writer_reopen(w);
        due = writer_emit(w, false);
        if (items[0].revents & ZMQ_POLLIN) {
            char *cmd = zstr_recv(pipe);
            bool term = !cmd || !strcmp(cmd, "$TERM");
            zstr_free(&cmd);
            if (term)
                break;
        }
    }
    writer_drain(w);
    writer_emit(w, true);
}

void hl_writer_free(log_writer_t *w)
{
    zactor_destroy(&w->actor);
    zsock_destroy(&w->in);
    free(w->senders); /* the actor wrote every held buffer before it ended */
    free(w->handles);
    pthread_mutex_destroy(&w->handles_lock);
    if (w->fd >= 0)
        close(w->fd);
    free(w->path);
    free(w);
}
