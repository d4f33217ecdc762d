/* herd_log: the per-server event log, NAME.log.
 *
 * One event per line, prefixed with a UTC timestamp with microseconds. Client
 * bytes are written escaped, so any byte value (NUL, CR, invalid UTF-8) is
 * safe in the log.
 *
 * Threads. The file belongs to a writer thread, which does every write(2);
 * the threads that log never wait on the disk. A herd_log_t is a producer
 * handle used by one thread: it formats lines into its own buffer and hands
 * the buffer to the writer when it fills and at every herd_log_flush (the
 * end of each reactor turn). Handles share nothing with the writer but an
 * inproc ZeroMQ socket: a message carries a buffer's pointer and the buffer
 * belongs to whoever holds the message. herd_log_open makes the writer and a
 * first handle; herd_log_attach makes one more handle for another thread.
 * Lines of one handle reach the file in the order they were logged.
 *
 * When the disk does not keep up. The bytes handed to the writer and not yet
 * written are capped (herd_log_set_queue_cap, 64 MiB by default). A buffer
 * that would go past the cap is dropped whole, never waited for: the server
 * keeps its speed, memory stays bounded, and the lines are counted
 * (herd_log_stats). The first buffer of that handle that fits again is
 * preceded by the line
 *     N log lines dropped: the disk did not keep up (B bytes)
 * at the place of the gap. Write errors (a full disk) are reported once on
 * stderr and their lines counted as dropped too. */
#ifndef HERD_LOG_H
#define HERD_LOG_H

#include "herd_log_escape.h"
#include "herd_loop.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

typedef struct herd_log_t herd_log_t;

/* Totals of one log (all its handles), for /metrics. */
typedef struct {
    uint64_t lines_written; /* lines written to the file */
    uint64_t bytes_written; /* bytes written to the file */
    uint64_t lines_dropped; /* lines dropped: over the queue cap, or a write error */
    uint64_t bytes_dropped; /* bytes of those lines */
    uint64_t queue_bytes;   /* handed to the writer and not yet written (gauge) */
    uint64_t queue_cap;     /* the cap on queue_bytes */
    uint64_t reopen_failures; /* reopens that failed, retries included */
} herd_log_stats_t;

/* Opens (appends to) `path`, making its folder if missing, and starts the
 * writer thread. Returns the first handle (for the calling thread), or NULL
 * and fills err on failure. */
herd_log_t *herd_log_open(const char *path, char *err, size_t errlen);

/* Makes another handle on the same log, for another thread (make it on that
 * thread, or hand it over before its first use). It must be closed before
 * the handle herd_log_open returned. Returns NULL and fills err on failure. */
herd_log_t *herd_log_attach(herd_log_t *log, char *err, size_t errlen);

/* Hands over what is buffered and waits until the writer has written every
 * line of this handle; the handle of herd_log_open then also stops the
 * writer and closes the file. Sets *p to NULL. NULL-safe. Lines still
 * buffered at close are written even past the queue cap. */
void herd_log_close(herd_log_t **p);

/* Logs one event: timestamp, a space, the formatted text (cut at 1022
 * bytes), a newline. */
void herd_log_event(herd_log_t *log, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Logs `prefix` followed by the bytes `data` quoted and escaped
 * ("..." with \\, \", \t, \r, \n and \xNN for other non-printable bytes). */
void herd_log_data(herd_log_t *log, const char *prefix, const char *data, size_t len);

/* herd_log_data with the prefix's length given (`prefix` need not end in a
 * NUL): for the per-command lines, where the caller knows it. Unlike an
 * event, such a line may wait a little for its hand-over (see
 * herd_log_attach_loop). */
void herd_log_data_n(herd_log_t *log, const char *prefix, size_t plen, const char *data, size_t len);

/* herd_log_data_n for output that may be long: at most `head` bytes of the
 * escaped text (the start of data) are written, followed by "... (N bytes)"
 * with data's full length when that is not all of it (PROTOCOL §6: the log
 * cannot be made to grow faster than the traffic). */
void herd_log_data_head(herd_log_t *log, const char *prefix, size_t plen, const char *data, size_t len,
                        size_t head);

/* Rate-limited events (PROTOCOL §6): an event that a stranger or a peer can
 * make us repeat (a refused connection, a dropped message) is written at
 * most HERD_LOG_LIMIT_PER_SEC times a second per kind (or the kind's own
 * number), and the ones left out are counted: when the next second starts,
 * the line
 *     N more KIND left out of the log (at most 5 a second are written)
 * goes first. One herd_log_limit_t per kind, owned by the thread that logs
 * with it (plain data, no lock), made with HERD_LOG_LIMIT_INIT:
 *     static or member:  herd_log_limit_t lim = HERD_LOG_LIMIT_INIT("refused connections");
 *     per event:         herd_log_limited(log, &lim, "refused connection from %s: ...", peer);
 *     from a timer:      herd_log_limited_flush(log, &lim);  (the count of a quiet kind)
 * A caller that writes its lines itself (an escaped field, herd_log_data)
 * asks herd_log_limit_take instead and says the count in its next line. */
#define HERD_LOG_LIMIT_PER_SEC 5

typedef struct {
    const char *kind;  /* what is counted, plural, for the count line ("refused connections") */
    uint32_t per_sec;  /* lines written a second at most; 0: HERD_LOG_LIMIT_PER_SEC */
    int64_t window_ms; /* start of the current second (CLOCK_MONOTONIC, ms) */
    uint32_t logged;   /* lines written in that second */
    uint64_t left_out; /* events left out since the last count line (or the last line taken) */
    uint64_t left_out_total; /* events left out in all, for a metric */
} herd_log_limit_t;

#define HERD_LOG_LIMIT_INIT(kind_text) ((herd_log_limit_t){.kind = (kind_text)})
/* A kind with its own number of lines a second: a burst of distinct faults
 * (a peer's bad messages, one line each) is written whole. */
#define HERD_LOG_LIMIT_INIT_N(kind_text, n) ((herd_log_limit_t){.kind = (kind_text), .per_sec = (n)})

/* Logs one event as herd_log_event does, unless lim's number of lines were
 * written in the current second: then it is only counted. Returns true when
 * the line was written. */
bool herd_log_limited(herd_log_t *log, herd_log_limit_t *lim, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Writes lim's count line if events were left out and their second is over
 * (call it now and then: a kind that goes quiet still reports its count). */
void herd_log_limited_flush(herd_log_t *log, herd_log_limit_t *lim);

/* The same limit for a line the caller writes itself: returns true when one
 * more line of lim's kind may be written now, with *left_out the events left
 * out since the last line taken (the caller says that count in its line; no
 * count line is written for them); false when the event is only counted. */
bool herd_log_limit_take(herd_log_limit_t *lim, uint64_t *left_out);

/* Hands what is buffered to the writer now and ends the time stamp set by
 * herd_log_set_now. Never waits on the disk. Returns 0, or -1 when the
 * lines were dropped (over the queue cap). */
int herd_log_flush(herd_log_t *log);

/* Lets `loop` (the thread's reactor) flush the handle: at the end of each of
 * its turns (the LOG phase) the turn's time stamp ends, and the lines go to
 * the writer when an event line (herd_log_event, herd_log_data) is among
 * them, once 16 KiB are pending, or once 10 ms have passed since the last
 * hand-over; a timer hands over the rest when the reactor goes quiet. An
 * event thus reaches the writer at the end of its turn and a per-command
 * line (herd_log_data_n)
 * within about 20 ms, and a busy reactor's per-command lines wake the writer
 * about a hundred times a second instead of once a turn. Returns 0 or -1.
 * Call herd_log_detach_loop before the loop or the handle goes. */
int herd_log_attach_loop(herd_log_t *log, herd_loop_t *loop);

/* Undoes herd_log_attach_loop and hands over what is pending. NULL-safe. */
void herd_log_detach_loop(herd_log_t *log);

/* Hands over what is buffered, then asks the writer to reopen the file by
 * name (after logrotate or `mv NAME.log x` moved it), making its folder if it
 * was removed. The writer does it in order: lines logged before go to the old
 * file, lines after to the new one. If the writer cannot reopen, it says so
 * in the old file and on stderr, keeps writing there, and tries again every
 * second until it can (each failure counted in herd_log_stats). Returns 0 once
 * asked, -1 if the request could not be sent. */
int herd_log_reopen(herd_log_t *log);

/* Hands over what is buffered and waits until the writer has written every
 * line of this handle. Blocks on the disk: for shutdown and tests. Returns 0,
 * or -1 if the writer could not be reached. */
int herd_log_sync(herd_log_t *log);

/* Time stamps without a clock read per line. With `now`, the lines of this
 * handle carry that time until the next herd_log_set_now or herd_log_flush;
 * with NULL, the clock is read once now for them. Call it where one reading
 * stays true to the microsecond for the lines that follow (after each read(2)
 * of a batch of client input, or as the reactor wakes). Without it, each
 * line reads the clock. */
void herd_log_set_now(herd_log_t *log, const struct timespec *now);

/* Per-turn time stamps: when on, a line reads the clock only when the last
 * reading is from before the last herd_log_flush or 32 lines old: one reading
 * per turn when turns are short, one per 32 lines (16 commands, about 20 us
 * at full load, where a turn may last a millisecond) when they are long. A
 * stamp is late by at most that. Off by default: a reading per line. */
void herd_log_set_turn_clock(herd_log_t *log, bool on);

/* Sets the cap on bytes queued to the writer for the whole log (at least
 * 4 KiB is used). */
void herd_log_set_queue_cap(herd_log_t *log, size_t bytes);

/* Fills *out with the log's totals (every handle). Any thread. */
void herd_log_stats(const herd_log_t *log, herd_log_stats_t *out);

#endif
