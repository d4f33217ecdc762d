/* herd_msg: the internal messages between the front-end threads and the
 * node (ARCHITECTURE.md: "front end --msgpack--> node"), one pure codec used
 * by both ends. Nothing here touches a socket, so tests and the fuzzer drive
 * it on bytes.
 *
 * One frame is one batch: everything one front-end turn asks (or one node
 * turn answers), so a pipelined client costs one message per batch, not per
 * command. A frame is a flat sequence of msgpack values (no containers, so a
 * few bytes cannot announce a huge array):
 *
 *   header:   dir, fe, invalid, drain
 *   items:    kind, fields... (repeated until the end of the frame)
 *
 * dir is HERD_MSG_TO_NODE or HERD_MSG_TO_FE; fe is the front-end thread's
 * index; invalid (to the node) is the number of lines this front end
 * answered with "?" since its last frame; drain (to the node) is 0 before a
 * drain and busy connections + 1 after one.
 *
 * To the node (the text already parsed and validated by the front end):
 *   IAMAT:    conn, seq, handle, sec, nsec, id_off, id_len, pos_off, pos_len, at
 *             (at is the AT line the front end made, without its newline;
 *             the id and position are spans of it)
 *   WHATSAT:  conn, seq, handle, id, radius, bound
 *   CLOSED:   conn, owed (a connection ended; owed: it still had answers due)
 * To a front end:
 *   IAMAT:    conn, seq, handle, outcome (HERD_MSG_STORED / NOT_NEWER / REFUSED)
 *   WHATSAT:  conn, seq, handle, outcome (ANSWERED / UNKNOWN / DROPPED), at, json
 *   ADOPT:    fd, serial, peer (serve this accepted connection)
 *   LIMITS:   idle_timeout_ms, max_output_bytes, max_output_total_bytes, log_commands
 *   DRAIN:    (stop reading commands; report busy connections)
 *   STOP:     (leave the thread's loop)
 *
 * conn and seq are the front end's ticket; handle is the front end's own
 * slot for the command's text, echoed back. Every IAMAT and WHATSAT sent to
 * the node is answered exactly once. */
#ifndef HERD_MSG_H
#define HERD_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "herd_types.h"
#include "herd_time.h"

typedef enum {
    HERD_MSG_TO_NODE = 1, /* a front end's batch of commands */
    HERD_MSG_TO_FE = 2,   /* the node's batch of answers and orders */
} herd_msg_dir_t;

typedef enum {
    HERD_MSG_IAMAT = 1,
    HERD_MSG_WHATSAT = 2,
    HERD_MSG_CLOSED = 3, /* to the node only */
    HERD_MSG_ADOPT = 4,  /* to a front end only, as the three below */
    HERD_MSG_LIMITS = 5,
    HERD_MSG_DRAIN = 6,
    HERD_MSG_STOP = 7,
} herd_msg_kind_t;

/* Answer outcomes. */
enum {
    HERD_MSG_STORED = 0,    /* IAMAT: stored (answer the AT line) */
    HERD_MSG_NOT_NEWER = 1, /* IAMAT: not newer than what is held (answer the AT line) */
    HERD_MSG_REFUSED = 2,   /* IAMAT: cannot be held (answer "?") */
    HERD_MSG_ANSWERED = 0,  /* WHATSAT: answer the AT line and the JSON */
    HERD_MSG_UNKNOWN = 1,   /* WHATSAT: unknown client (answer "?") */
    HERD_MSG_DROPPED = 2,   /* WHATSAT: given up, its connection is gone (answer nothing) */
};

/* The frame's header. */
typedef struct {
    herd_msg_dir_t dir;
    uint32_t fe;      /* front-end thread index */
    uint64_t invalid; /* to the node: lines answered "?" by the front end since its last frame */
    uint64_t drain;   /* to the node: 0, or busy connections + 1 once draining */
} herd_msg_header_t;

/* One item. Which fields mean something depends on kind and direction (see
 * the top of this file); spans point into the frame's bytes. */
typedef struct {
    herd_msg_kind_t kind;
    uint64_t conn, seq;      /* IAMAT, WHATSAT: the ticket; CLOSED: conn */
    uint32_t handle;         /* IAMAT, WHATSAT: the front end's slot */
    herd_time_t time;        /* IAMAT to the node: the client time */
    herd_span_t at;          /* IAMAT to the node, WHATSAT to a front end: an AT line */
    uint32_t id_off, id_len; /* IAMAT to the node: the id within at */
    uint32_t pos_off, pos_len; /* IAMAT to the node: the position within at */
    herd_span_t id;          /* WHATSAT to the node: the client id */
    herd_span_t radius;      /* WHATSAT to the node: the radius text (km) */
    uint32_t bound;          /* WHATSAT to the node: 1..20 */
    uint32_t outcome;        /* answers: HERD_MSG_STORED etc.; CLOSED: owed (0 or 1) */
    herd_span_t json;        /* WHATSAT to a front end: the Places JSON */
    int64_t fd;              /* ADOPT: the accepted socket */
    uint64_t serial;         /* ADOPT: the connection's number in the log */
    herd_span_t peer;        /* ADOPT: address:port for the log */
    int64_t idle_timeout_ms, max_output_bytes; /* LIMITS */
    int64_t max_output_total_bytes;            /* LIMITS (<= 0: no cap) */
    uint32_t log_commands;                     /* LIMITS: 0 or 1 */
} herd_msg_item_t;

/* A growing output frame. */
typedef struct {
    char *p;     /* bytes (malloc'd) */
    size_t len;  /* bytes used */
    size_t cap;  /* bytes allocated */
    bool oom;    /* an append failed: the frame is incomplete */
    size_t items; /* items appended since the header */
} herd_msg_buf_t;

/* Starts a frame in b (emptying it, keeping its memory). */
void herd_msg_begin(herd_msg_buf_t *b, const herd_msg_header_t *h);

/* Rewrites the header of the frame begun in b (for counts known only at
 * the end of the batch). */
void herd_msg_set_header(herd_msg_buf_t *b, const herd_msg_header_t *h);

/* Appends one item (kind and direction decide the fields written; the
 * direction is the header's). Sets b->oom when memory runs out. */
void herd_msg_put(herd_msg_buf_t *b, herd_msg_dir_t dir, const herd_msg_item_t *it);

/* Frees b's memory. */
void herd_msg_buf_free(herd_msg_buf_t *b);

/* Reads a frame. */
typedef struct {
    const uint8_t *p, *end; /* what is left */
    herd_msg_dir_t dir;     /* the frame's direction */
} herd_msg_reader_t;

/* Reads the header. Returns 0, or -1 when the frame does not start with a
 * valid one. */
int herd_msg_open(herd_msg_reader_t *r, const char *data, size_t len, herd_msg_header_t *h);

/* Reads the next item: returns 1 and fills *it, 0 at the end of the frame,
 * -1 when the rest is malformed (nothing more can be read). Spans are
 * checked to lie in the frame, the IAMAT spans inside its AT line, nsec
 * below one second and bound in 1..HERD_MAX_BOUND. */
int herd_msg_next(herd_msg_reader_t *r, herd_msg_item_t *it);

#endif
