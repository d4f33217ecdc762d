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
 * It shares nothing with the node but one inproc PAIR socket (no
 * high-water mark: nothing on it is ever dropped; a connection stops being
 * read at 256 unanswered lines, which bounds what one client queues). */
#ifndef HERD_FETHREAD_H
#define HERD_FETHREAD_H

#include <stddef.h>
#include <stdint.h>

#include "herd_log.h"

typedef struct herd_fethread_t herd_fethread_t;

typedef struct {
    uint32_t index;          /* this thread's number (0..N-1), in its frames and its name */
    const char *server;      /* our server name (copied), for AT lines */
    long idle_timeout_ms;    /* limits.idle_timeout_ms */
    long max_output_bytes;   /* limits.max_output_bytes */
} herd_fethread_conf_t;

/* Makes the thread's reactor, front end, log handle (attached to `log`) and
 * socket pair, and starts the thread. Returns NULL and fills err on
 * failure. */
herd_fethread_t *herd_fethread_new(const herd_fethread_conf_t *conf, herd_log_t *log, char *err, size_t errlen);

/* The node's end of the pair: register it on the node's loop; frames from
 * the thread are herd_msg batches to the node, frames sent to it herd_msg
 * batches to a front end. Owned by the thread object. */
void *herd_fethread_sock(herd_fethread_t *t);

/* Tells the thread to stop, waits for it, closes its connections and frees
 * everything; *p = NULL. NULL-safe. Call from the node's thread. */
void herd_fethread_destroy(herd_fethread_t **p);

/* CPU seconds the thread has used, or -1 when the clock cannot be read. */
double herd_fethread_cpu_seconds(const herd_fethread_t *t);

#endif
