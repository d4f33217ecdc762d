/* herd_log: timestamped event log written by its own thread. See herd_log.h.
 *
 * Shape. A writer (log_writer_t) owns the file descriptor, a ROUTER socket
 * bound to a private inproc endpoint, and a zactor thread that reads that
 * socket and does the writes. Every handle (herd_log_t) owns a DEALER socket
 * connected to it and a buffer. A message is one log_msg_t: for a buffer it
 * carries the pointer, and the buffer belongs to whoever holds the message
 * (the writer frees it once written). Both sockets have no ZeroMQ high-water
 * mark: the queue is bounded by bytes instead (see queue_reserve), which is
 * the only state the threads share besides the /metrics totals, all atomics.
 *
 * Closing. herd_log_close sends SYNC after the last buffer and waits for
 * SYNCED: the ROUTER's pipe from one DEALER is FIFO, so the reply means every
 * line of that handle is written. The first handle then stops the actor. */
#include "herd_log.h"
#include "herd_fs.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <czmq.h>

#define LOG_BUF_CAP   (128u * 1024u)         /* a handle's buffer: hand it over once this full */
#define LOG_QUEUE_CAP (64ull * 1024u * 1024u) /* default cap on bytes queued to the writer */
#define LOG_QUEUE_MIN 4096u                   /* the least cap herd_log_set_queue_cap sets */
#define LOG_MSG_COST  128u                    /* bytes counted per queued buffer beyond its own (message, malloc) */
#define LOG_STAMP_LEN 28                      /* "2026-11-26T05:31:50.123456Z " */
#define LOG_HOLD_MS   10                     /* a reactor's lines wait at most about this long for a hand-over */
#define LOG_HOLD_BYTES (64u * 1024u)         /* ... or until this many bytes are pending (each hand-over
                                                 may wake the writer: at full rate the per-command lines
                                                 fill this a few thousand times a second, not once a turn) */
#define LOG_BATCH     64                      /* buffers written with one writev */
#define LOG_REOPEN_RETRY_MS 1000              /* a failed reopen is tried again this often */
#define LOG_ORDER_MAX_MS 200                  /* the longest the writer holds a line for an earlier one
                                                 of another thread (a thread stuck in a long turn) */
#define LOG_ORDER_POLL_MS 2                   /* while it waits, it looks again this often */
#define LOG_ORDER_IOV 256                     /* runs of lines written with one writev */
#define LOG_TURN_REUSE 32                     /* turn clock: lines per clock reading, at most (about
                                                 16 commands, some 20 us at full load) */

enum { MSG_BUF = 1, MSG_REOPEN, MSG_SYNC, MSG_SYNCED };

/* A buffer in which a line is stamped before the line above it (the
 * system clock was set back): its lines cannot be taken as in order. */
#define MSG_BACKWARDS 1u

/* One message between a handle and the writer (small enough that ZeroMQ
 * keeps it inside the message, no allocation). */
typedef struct {
    uint16_t type;  /* MSG_* */
    uint16_t flags; /* MSG_BUF: MSG_BACKWARDS or 0 */
    uint32_t lines; /* MSG_BUF: lines in buf */
    char *buf;      /* MSG_BUF: the bytes; the holder of the message owns them */
    size_t len;     /* MSG_BUF: bytes in buf */
    size_t cost;    /* MSG_BUF: bytes it counts for in the queue */
} log_msg_t;

/* A buffer the writer holds until its lines' turn (writer thread only). */
typedef struct pend_t {
    struct pend_t *next; /* the sender's next buffer */
    log_msg_t m;         /* the buffer */
    size_t off;          /* bytes of it already written */
    int64_t due_ms;      /* zclock_mono after which its lines wait for no other */
    bool failed;         /* a write of some of its lines failed */
} pend_t;

struct herd_log_t;

/* The buffers of one handle not yet written, in the order sent. */
typedef struct {
    const struct herd_log_t *h; /* the handle (its routing id on the ROUTER) */
    pend_t *head, *tail;
} sender_t;

/* The part of a log shared by its handles; the thread and the file. */
typedef struct {
    char *path;                           /* the file name, kept for reopen */
    int fd;                               /* append-only descriptor; the writer thread's once started */
    bool write_failed;                    /* writer thread: a write error was reported on stderr */
    zsock_t *in;                          /* ROUTER the handles send to; the writer thread's */
    zactor_t *actor;                      /* the writer thread */
    char endpoint[64];                    /* inproc endpoint of `in` */
    atomic_uint_fast64_t queued;          /* bytes handed over and not yet written (with LOG_MSG_COST each) */
    atomic_uint_fast64_t cap;             /* the cap on queued */
    atomic_uint_fast64_t lines_written;   /* totals for herd_log_stats */
    atomic_uint_fast64_t bytes_written;
    atomic_uint_fast64_t lines_dropped;
    atomic_uint_fast64_t bytes_dropped;
    atomic_int attached;                  /* handles from herd_log_attach still open */
    atomic_uint_fast64_t reopen_failures; /* reopens that failed (each retry counts) */
    bool reopen_pending;                  /* writer thread: a reopen failed and is retried */
    int64_t reopen_at_ms;                 /* writer thread: when to retry it (CLOCK_MONOTONIC) */
    uint64_t reopen_streak;               /* writer thread: failures since the last good reopen */
    sender_t *senders;                    /* writer thread: buffers held per handle */
    size_t n_senders;
    size_t n_held;                        /* writer thread: buffers held in all */
    time_t parsed_sec;                    /* writer thread: the second of parsed_text */
    char parsed_text[19];                 /* writer thread: the last date parsed from a stamp */
    pthread_mutex_t handles_lock;         /* guards handles (any thread) */
    struct herd_log_t **handles;          /* every open handle, for the writer's order */
    size_t n_handles;
} log_writer_t;

struct herd_log_t {
    log_writer_t *w;             /* the log; owned by the handle of herd_log_open */
    bool first;                  /* this is the handle of herd_log_open */
    zsock_t *out;                /* DEALER to the writer */
    char *buf;                   /* pending lines (NULL after a hand-over, until the next line) */
    size_t cap;                  /* bytes allocated for buf */
    size_t len;                  /* bytes pending in buf */
    uint32_t lines;              /* lines pending in buf */
    time_t date_sec;             /* second the cached date is for */
    char date[20];               /* cached "YYYY-MM-DDTHH:MM:SS" */
    bool fixed;                  /* lines use fixed_stamp (herd_log_set_now, or the turn clock) */
    uint32_t fixed_left;         /* turn clock: lines that may still reuse fixed_stamp */
    bool turn_clock;             /* herd_log_set_turn_clock: fix the stamp at the first line after a flush */
    char fixed_stamp[LOG_STAMP_LEN]; /* the stamp in force while fixed */
    uint64_t gap_lines;          /* lines dropped since the last marker line */
    uint64_t gap_bytes;          /* their bytes */
    uint64_t fixed_us;           /* fixed_stamp's time (microseconds since the epoch) */
    uint64_t last_us;            /* the time of the last line stamped */
    bool backwards;              /* a pending line is stamped before the one above it */
    atomic_uint_fast64_t unsent_us; /* the oldest line not yet handed to the writer: its time, 0 for
                                       none, 1 while one is being stamped (read by the writer) */
    atomic_uint_fast64_t sent;   /* buffers handed to the writer (read by the writer) */
    uint64_t received;           /* writer thread only: buffers of this handle it received */
    herd_loop_t *loop;           /* herd_log_attach_loop: the reactor whose turns flush it */
    int loop_tick, loop_timer;   /* its end-of-turn tick, and the timer armed while lines wait */
    int64_t handed_ms;           /* the reactor's time of the last hand-over */
    bool urgent;                 /* an event line is pending: it goes at the end of the turn */
};


/* Makes the folder `path` is in, if it has one. Returns 0, or -1 with errno
 * set and the folder's name in dir (dirlen bytes). */
static int make_parent(const char *path, char *dir, size_t dirlen)
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

static int open_file(const char *path)
{
    return open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

/* Formats "YYYY-MM-DDTHH:MM:SS.uuuuuuZ " (LOG_STAMP_LEN bytes, no NUL) into
 * out. The date part is cached per second in date/date_sec. */
static void format_stamp(char *out, const struct timespec *ts, time_t *date_sec, char *date)
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

static int64_t mono_ms(void)
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
    format_stamp(line, &ts, &sec, date);
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
    int fd = make_parent(w->path, dir, sizeof dir) == 0 ? open_file(w->path) : -1;
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
    w->reopen_at_ms = mono_ms() + LOG_REOPEN_RETRY_MS;
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
static void writer_actor(zsock_t *pipe, void *arg)
{
    log_writer_t *w = arg;
    prctl(PR_SET_NAME, "herd-log"); /* its CPU time shows under this name in /proc/PID/task */
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
            int64_t left = w->reopen_at_ms - mono_ms();
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
        if (w->reopen_pending && mono_ms() >= w->reopen_at_ms)
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
        format_stamp(marker, &ts, &log->date_sec, log->date);
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

/* Appends the time stamp of a line (LOG_STAMP_LEN bytes). The first line
 * not yet handed over publishes its time for the writer's order, and says
 * "being stamped" before the clock is read, so that the writer never takes
 * a later line of another thread for the earliest. */
/* Notes a line stamped at us (first: the first of the pending buffer). */
static void note_order(herd_log_t *log, uint64_t us, bool first)
{
    if (!first && us < log->last_us)
        log->backwards = true;
    log->last_us = us;
}

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
    format_stamp(p, &ts, &log->date_sec, log->date);
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

static void writer_free(log_writer_t *w)
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

herd_log_t *herd_log_open(const char *path, char *err, size_t errlen)
{
    char dir[4096];
    if (make_parent(path, dir, sizeof dir) != 0) {
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
    w->fd = open_file(path);
    if (w->fd < 0) {
        snprintf(err, errlen, "cannot open log file %s: %s", path, strerror(errno));
        writer_free(w);
        return NULL;
    }
    snprintf(w->endpoint, sizeof w->endpoint, "inproc://herd-log-%p", (void *)w);
    w->in = zsock_new(ZMQ_ROUTER);
    if (!w->in) {
        snprintf(err, errlen, "cannot make the log writer's socket");
        writer_free(w);
        return NULL;
    }
    zsock_set_rcvhwm(w->in, 0);
    zsock_set_sndhwm(w->in, 0);
    if (zsock_bind(w->in, "%s", w->endpoint) != 0) {
        snprintf(err, errlen, "cannot bind the log writer's socket: %s", zmq_strerror(zmq_errno()));
        writer_free(w);
        return NULL;
    }
    herd_log_t *log = new_handle(w, err, errlen);
    if (!log) {
        writer_free(w);
        return NULL;
    }
    log->first = true;
    /* The ROUTER passes to the writer thread here and is not touched by this
     * thread again until the thread has ended. */
    w->actor = zactor_new(writer_actor, w);
    if (!w->actor) {
        snprintf(err, errlen, "cannot start the log writer thread");
        zsock_destroy(&log->out);
        free(log);
        writer_free(w);
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
        writer_free(log->w);
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
    format_stamp(log->fixed_stamp, now, &log->date_sec, log->date);
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
    limit_roll(log, lim, mono_ms());
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
    limit_new_second(lim, mono_ms());
    if (!limit_admit(lim))
        return false;
    *left_out = lim->left_out;
    lim->left_out = 0;
    return true;
}

void herd_log_limited_flush(herd_log_t *log, herd_log_limit_t *lim)
{
    if (lim->left_out)
        limit_roll(log, lim, mono_ms());
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
