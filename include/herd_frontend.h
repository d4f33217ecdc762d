/* herd_frontend: the client side of a server (PROTOCOL.md sections 2 and 6).
 *
 * Owns client connections: frames lines, enforces the limits, and writes
 * answers in command order. It knows nothing of commands or the table: each
 * complete line goes to the line handler with a ticket, and the handler
 * answers that ticket once, now or later (a WHATSAT waits for the Places
 * worker). Answers to later lines that come first are held until the
 * earlier ones are written.
 *
 * Two uses in a server: on the node's thread, an acceptor (the listening
 * socket, max_clients for the whole server, the refusals, on_accept hands
 * each connection on); on each front-end thread, a listener-less instance
 * serving the connections handed to it (herd_frontend_adopt). The listener
 * is a layer below the connections (src/herd_frontend_accept.h): it hands
 * each accepted socket up through a callback and knows nothing of them; an
 * acceptor that hands its connections on keeps no read buffer, settle tick
 * or idle sweep.
 *
 * Output limits (PROTOCOL §6). Back-pressure: while a connection's unsent
 * and held answers are at least a quarter of limits.max_output_bytes (or it
 * is owed 256 answers), no further line of it is read or handed on; lines
 * already handed on are still answered, and reading resumes once the
 * backlog is under an eighth (and fewer than 64 are owed). A client that
 * reads is thus never cut. A connection whose backlog is over
 * max_output_bytes and that has taken no byte for a second has stopped
 * reading: it is cut. All the front ends of the process together keep
 * their backlogs under max_output_total_bytes: one shared counter holds the
 * sum; past it, each front end holding more than its share (the cap over
 * the number of front ends) cuts its own largest backlogs first. */
#ifndef HERD_FRONTEND_H
#define HERD_FRONTEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "herd_log.h"
#include "herd_loop.h"
#include "herd_time.h"
#include "herd_types.h"

typedef struct herd_frontend_t herd_frontend_t;


/* Called for each command line (its bytes, without LF or CR LF; lines of only
 * white space are answered here with nothing and never reach the handler). */
typedef void(herd_line_fn)(void *arg, herd_ticket_t ticket, const char *line, size_t len);

/* Called at the end of the turn in which a connection closed (conn is
 * herd_ticket_t.conn); owed: tickets of it were still unanswered, so the
 * handler can give up the work it started for them. Answering those tickets
 * is then a no-op. */
typedef void(herd_closed_fn)(void *arg, uint64_t conn, bool owed);

/* Acceptor mode: called with each accepted connection that passed the
 * limits (the socket, its log number, "address:port"). The callee owns fd
 * from then on (it serves it elsewhere, herd_frontend_adopt) and calls
 * herd_frontend_released when that connection ends. */
typedef void(herd_accept_fn)(void *arg, int fd, uint64_t serial, const char *peer);

/* Acceptor mode: called before a connection is refused for max_clients,
 * so that connections that have ended elsewhere can be released first. */
typedef void(herd_full_fn)(void *arg);

typedef struct {
    const char *host;        /* address to bind */
    int port;                /* client port; 0: no listener (connections come by herd_frontend_adopt) */
    long max_clients;        /* open connections allowed at once */
    long idle_timeout_ms;    /* close a connection silent this long */
    long max_output_bytes;   /* cut a client whose unsent answers pass this and that takes nothing */
    long max_clients_per_address; /* acceptor: open connections allowed from one IP address (<= 0: any) */
    long long max_output_total_bytes; /* unsent answers of all connections of the process (<= 0: no cap) */
    bool log_commands;       /* log each command line and its answer */
    herd_line_fn *on_line;   /* the command handler */
    herd_closed_fn *on_closed; /* told of closed connections (NULL: not told) */
    herd_accept_fn *on_accept; /* acceptor mode: accepted sockets go there (NULL: served here) */
    herd_full_fn *on_full;     /* acceptor mode: told before a refusal for max_clients (NULL: not told) */
    void *arg;               /* context of both */
} herd_frontend_conf_t;

/* Binds the client port and starts accepting on `loop`. Returns NULL and
 * fills err (naming the address and port) on failure. */
herd_frontend_t *herd_frontend_new(herd_loop_t *loop, herd_log_t *log,
                                   const herd_frontend_conf_t *conf, char *err, size_t errlen);

/* Serves an accepted socket handed over from an acceptor (fd nonblocking;
 * serial and peer as the acceptor gave them). Returns 0, or -1 (fd closed). */
int herd_frontend_adopt(herd_frontend_t *fe, int fd, uint64_t serial, const char *peer);

/* Acceptor mode: the connection `conn` (its herd_ticket_t.conn) handed to
 * on_accept has ended: it no longer counts against max_clients nor its
 * address's max_clients_per_address. */
void herd_frontend_released(herd_frontend_t *fe, uint64_t conn);

/* Closes every connection and the listener; *p = NULL. NULL-safe. */
void herd_frontend_destroy(herd_frontend_t **p);

/* Answers a ticket with `len` bytes (a whole reply, newline included; len 0
 * answers with nothing). A ticket whose connection has gone is ignored.
 * Returns 0, or -1 when the connection is gone. */
int herd_frontend_answer(herd_frontend_t *fe, herd_ticket_t ticket, const char *data, size_t len);

/* Closes the connection of a ticket at once, with `why` in the log: for an
 * internal failure (out of memory) that leaves the handler unable to answer.
 * A ticket whose connection has gone is ignored. */
void herd_frontend_close(herd_frontend_t *fe, herd_ticket_t ticket, const char *why);

/* Writes the front end's own /metrics lines (connections refused at accept,
 * by reason; connections cut for limits.max_output_total_bytes) to f. */
void herd_frontend_render(const herd_frontend_t *fe, FILE *f);

/* Changes the limits and log_commands to those of `conf` (after a topology
 * reload; the other fields of conf are not used). Connections already open
 * over a new max_clients or max_clients_per_address stay open. */
void herd_frontend_set_limits(herd_frontend_t *fe, const herd_frontend_conf_t *conf);

/* Stops accepting new connections and reading new commands (shutdown):
 * answers already owed are still written. */
void herd_frontend_drain(herd_frontend_t *fe);

/* The wall-clock time of the read(2) whose bytes completed the line that
 * on_line is handling: the server's receive time of that command (one
 * clock read a read, not one a line). */
herd_time_t herd_frontend_read_time(const herd_frontend_t *fe);

/* The same moment on the monotonic clock, in nanoseconds (for latencies). */
int64_t herd_frontend_read_mono_ns(const herd_frontend_t *fe);

/* Number of open connections, and of those still owed an answer or holding
 * unwritten output (the shutdown waits for 0). */
size_t herd_frontend_connections(const herd_frontend_t *fe);
size_t herd_frontend_busy(const herd_frontend_t *fe);

#endif
