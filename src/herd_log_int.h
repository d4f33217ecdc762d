/* herd_log internals shared by the handles (herd_log.c) and the writer
 * thread (herd_log_writer.c). Not a public interface.
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
#ifndef HERD_LOG_INT_H
#define HERD_LOG_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <time.h>

#include <czmq.h>

#include "herd_log.h"

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
int hl_make_parent(const char *path, char *dir, size_t dirlen);

/* Opens the log file for appending (made if missing). */
int hl_open_file(const char *path);

/* Formats "YYYY-MM-DDTHH:MM:SS.uuuuuuZ " (LOG_STAMP_LEN bytes, no NUL) into
 * out. The date part is cached per second in date/date_sec. */
void hl_format_stamp(char *out, const struct timespec *ts, time_t *date_sec, char *date);

/* CLOCK_MONOTONIC in milliseconds. */
int64_t hl_mono_ms(void);

/* The writer thread (a zactor): writes what the handles send to w->in, in
 * stamp order across handles, until "$TERM". */
void hl_writer_actor(zsock_t *pipe, void *arg);

/* Stops the writer thread and frees the writer: every handle is closed. */
void hl_writer_free(log_writer_t *w);

#endif
