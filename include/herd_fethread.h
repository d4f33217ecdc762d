/* herd_fethread: one front-end thread (ARCHITECTURE.md: "front end (N)").
 *
 * A thread with its own reactor, its own client connections (handed over by
 * the node's acceptor) and its own log handle. It speaks the text protocol
 * and nothing else: it frames and parses lines, answers the invalid ones
 * itself, makes the AT line of each IAMAT (the skew from the time the line
 * was read), and sends the node one herd_msg batch per turn of what the
 * node must decide (IAMAT: store or not; WHATSAT: the record and its
 * places). From the node's answers it writes every reply's bytes, in
 * command order per connection.
 *
 * Thread pattern: zactor (start handshake, "$TERM" to stop). It shares
 * nothing with the node but the actor's pipe, an inproc PAIR with no
 * high-water mark (nothing on it is ever dropped; a connection stops being
 * read at 256 unanswered lines or at a backlog of a quarter of
 * limits.max_output_bytes, which bounds what one client queues).
 *
 * In-line (conf.loop set: frontend_threads 0) the same front end runs on
 * the node's reactor and thread, with no thread, socket or copy of its own:
 * its batches go to conf.deliver in the turn's COMMANDS phase (and, for
 * what the replies' writing produced, its LOG phase), and the node hands
 * its answers back in its ANSWERS phase. On one thread nothing is encoded:
 * a batch is the array of herd_msg items itself (their spans point into
 * the front end's slots, which live until the command is answered), and
 * the IAMAT answers come back as an array (herd_fethread_take_iamats);
 * the node's other answers and orders are herd_msg frames either way
 * (herd_fethread_take). */
#ifndef HERD_FETHREAD_H
#define HERD_FETHREAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "herd_hist.h"
#include "herd_log.h"
#include "herd_loop.h"
#include "herd_msg.h"

typedef struct herd_fethread_t herd_fethread_t;

/* In-line: one batch for the node, what a herd_msg frame to the node would
 * carry, unencoded. The items and their spans are valid during the call. */
typedef struct {
    const herd_msg_item_t *items;
    size_t n;
    uint64_t invalid; /* the header's: lines answered "?" since the last batch */
    uint64_t drain;   /* the header's: 0, or busy connections + 1 once draining */
} herd_fethread_batch_t;

/* In-line: hands a batch to the node. late: it comes from the end of the
 * turn (the LOG phase), after the node's answers of this turn were handed
 * over. */
typedef void(herd_fethread_deliver_fn)(void *arg, const herd_fethread_batch_t *batch, bool late);

/* In-line: the node's answer to one IAMAT (a herd_msg IAMAT item to a front
 * end, unencoded). */
typedef struct {
    uint64_t conn, seq; /* the ticket */
    uint32_t handle;    /* the front end's slot */
    uint32_t outcome;   /* HERD_MSG_STORED, NOT_NEWER or REFUSED */
} herd_fethread_iamat_t;

typedef struct {
    uint32_t index;          /* this thread's number (0..N-1), in its frames and its name */
    const char *server;      /* our server name (copied), for AT lines */
    long idle_timeout_ms;    /* limits.idle_timeout_ms */
    long max_output_bytes;   /* limits.max_output_bytes */
    long long max_output_total_bytes; /* limits.max_output_total_bytes (<= 0: no cap) */
    bool log_commands;       /* log_commands: log each command line and its answer */
    herd_loop_t *loop;       /* NULL: a thread of its own; else run in-line on this reactor */
    herd_fethread_deliver_fn *deliver; /* in-line: where the batches go */
    void *deliver_arg;
} herd_fethread_conf_t;

/* Makes the thread's reactor, front end, log handle (attached to `log`) and
 * socket pair, and starts the thread. Returns NULL and fills err on
 * failure. */
herd_fethread_t *herd_fethread_new(const herd_fethread_conf_t *conf, herd_log_t *log, char *err, size_t errlen);

/* The node's end of the pair: register it on the node's loop; frames from
 * the thread are herd_msg batches to the node, frames sent to it herd_msg
 * batches to a front end. Owned by the thread object. NULL in-line. */
void *herd_fethread_sock(herd_fethread_t *t);

/* In-line: a herd_msg frame from the node (its answers and orders), taken
 * at once. */
void herd_fethread_take(herd_fethread_t *t, const void *frame, size_t len);

/* In-line: n IAMAT answers from the node, taken at once (as the same items
 * of a frame would be). */
void herd_fethread_take_iamats(herd_fethread_t *t, const herd_fethread_iamat_t *a, size_t n);

/* In-line: hands what the front end has batched so far to the node now. */
void herd_fethread_flush(herd_fethread_t *t);

/* Tells the thread to stop, waits for it, closes its connections and frees
 * everything; *p = NULL. NULL-safe. Call from the node's thread. */
void herd_fethread_destroy(herd_fethread_t **p);

/* herd_command_duration_seconds (issue 23): for each command of the two
 * kinds, from its complete line to its reply queued for writing, measured
 * by the front end. Index of each kind in the arrays below. */
enum { HERD_FETHREAD_IAMAT = 0, HERD_FETHREAD_WHATSAT = 1, HERD_FETHREAD_KINDS = 2 };

/* Adds the front end's command histograms (as of the end of its last turn)
 * into out[HERD_FETHREAD_KINDS]. Any thread. */
void herd_fethread_command_hist(herd_fethread_t *t, herd_hist_t out[HERD_FETHREAD_KINDS]);

/* Writes the family herd_command_duration_seconds (HELP, TYPE and both
 * commands) from histograms merged with herd_fethread_command_hist. */
void herd_fethread_render_command_hist(const herd_hist_t h[HERD_FETHREAD_KINDS], FILE *f);

/* CPU seconds the thread has used, or -1 when the clock cannot be read (or
 * the front end is in-line: its time is the node thread's). */
double herd_fethread_cpu_seconds(const herd_fethread_t *t);

#endif
