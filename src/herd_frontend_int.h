/* herd_frontend_int.h: the front end's state, private to herd_frontend.c
 * (connections: framing, answers, limits) and herd_frontend_accept.c (the
 * listener: binding, accepting, refusing). */
#ifndef HERD_FRONTEND_INT_H
#define HERD_FRONTEND_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "herd_frontend.h"

/* An answer that came before an earlier line's answer: held until its turn. */
typedef struct slot_t {
    struct slot_t *next; /* next held answer, in seq order */
    uint64_t seq;        /* the line it answers */
    size_t len;          /* bytes of data */
    char data[];         /* the answer */
} slot_t;

typedef struct conn_t {
    herd_watch_t watch;   /* fd and epoll registration (watch.arg = this) */
    herd_frontend_t *fe;  /* owner */
    uint64_t id;          /* serial << 32 | fd */
    uint64_t serial;      /* the number the log calls it by */
    char *in;             /* unprocessed input: a partial line, or lines held while paused */
    size_t in_len, in_cap;
    char *out;            /* answers not yet written */
    size_t out_off, out_len, out_cap;
    uint64_t next_seq;    /* number of the next line read */
    uint64_t done_seq;    /* number of the next answer to write */
    slot_t *slots;        /* answers held for order */
    size_t held_bytes;    /* bytes in slots */
    int64_t last_in_ms;   /* when the client last completed a non-empty line, or got an answer */
    int64_t linger_until; /* lingering: when to give up waiting for the client's end */
    size_t linger_left;   /* lingering: bytes still to discard before giving up */
    size_t counted;       /* backlog (unsent + held) counted in the front end's and the process's totals */
    uint64_t written;     /* bytes the client has taken, in all */
    uint64_t blocked_written; /* blocked: `written` when last seen moving */
    int64_t blocked_since_ms; /* blocked: when `written` last moved */
    struct conn_t *lru_prev, *lru_next; /* idle order (or linger order), oldest first */
    struct conn_t *blocked_prev, *blocked_next; /* list of blocked connections */
    struct conn_t *dirty_next;          /* list of connections to flush this turn */
    struct conn_t *dead_next;           /* list of closed connections to free (apart from the dirty list:
                                           one closed while on it must not cut the rest of it off) */
    bool dirty;           /* on the dirty list */
    bool eof;             /* the client half-closed */
    bool closing;         /* read no more; close once everything owed is written */
    bool paused;          /* too many lines owed: not reading */
    bool dead;            /* closed, waiting to be freed at the end of the turn */
    bool lingering;       /* answered and shut down for writing: discarding input until EOF */
    bool blocked;         /* output waits for the client: on the blocked list */
    bool total_held;      /* not read while the output of all connections is over max_output_total_bytes */
    char peer[56];        /* the client's address:port, for the log */
    char tag[24];         /* "conn N ", the start of its log lines */
    uint8_t tag_len;      /* bytes of tag */
} conn_t;

/* A list of connections through lru_prev / lru_next, oldest first. */
typedef struct {
    conn_t *head, *tail;
} conn_list_t;

struct herd_frontend_t {
    herd_loop_t *loop;
    herd_log_t *log;
    herd_frontend_conf_t conf;
    herd_watch_t listener;   /* the listening socket (fd -1 once drained) */
    int reserve_fd;          /* spare descriptor, given up to shed a connection at EMFILE */
    conn_t **by_fd;          /* open connections by descriptor */
    size_t by_fd_cap;
    size_t n_conns;          /* open connections */
    uint64_t next_serial;    /* serial for the next connection */
    conn_list_t idle;        /* open connections by idle time, oldest first */
    conn_list_t linger;      /* lingering connections, by when they give up, soonest first */
    conn_t *blocked;         /* connections with output the kernel did not take (blocked_next) */
    size_t out_total;        /* backlog of all connections here (their `counted`) */
    bool serving;            /* serves connections (counts in the process's share of the total cap) */
    void *addrs;             /* acceptor: zhashx "IP" -> fe_addr_t, connections open per address */
    void *serials;           /* acceptor: zhashx "serial" -> fe_addr_t of that connection */
    conn_t *dirty;           /* connections with output or resumable input */
    conn_t *dead;            /* closed connections to free at the end of the turn */
    char *rbuf;              /* the read buffer shared by all connections */
    int idle_timer;          /* timer id of the idle sweep */
    int tick;                /* tick id of the end-of-turn settle */
    bool draining;           /* shutting down */
    bool accept_paused;      /* out of descriptors with no spare: not accepting for now */
    uint64_t refused_max_clients; /* connections closed at accept: limits.max_clients */
    uint64_t refused_descriptors; /* connections closed at accept: out of descriptors */
    uint64_t refused_per_address; /* connections closed at accept: limits.max_clients_per_address */
    uint64_t cut_total;      /* connections cut for limits.max_output_total_bytes */
    bool total_holding;      /* some connection may be total_held */
    size_t answer_est;       /* size of recent large answers: bounds the answers still to come */
    herd_log_limit_t lim_max_clients, lim_per_address, lim_descriptors; /* refusals' log lines */
};

/* ---- herd_frontend.c ---- */

/* Appends c to the end of l. */
void fe_list_push(conn_list_t *l, conn_t *c);

/* Puts c on the list settled at the end of the turn. */
void fe_mark_dirty(conn_t *c);

/* The epoll handler of a client connection. */
void fe_conn_event(herd_loop_t *loop, herd_watch_t *w, uint32_t events);

/* ---- herd_frontend_accept.c ---- */

/* A connection accepted by this front end (self-serving) has closed: its
 * address counts one fewer. */
void fe_addr_release(herd_frontend_t *fe, uint64_t serial);

/* Frees the address tables. */
void fe_addr_free(herd_frontend_t *fe);

/* The epoll handler of the listener: accepts, or refuses and logs. */
void fe_accept_ready(herd_loop_t *loop, herd_watch_t *w, uint32_t events);

/* Binds and listens on the client port; returns the descriptor, or -1 with
 * err filled. */
int fe_bind_listener(const herd_frontend_conf_t *conf, char *err, size_t errlen);

#endif
