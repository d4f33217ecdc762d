/* herd_frontend: client connections, line framing, ordered answers,
 * limits and lingering close. See herd_frontend.h. The listener is the
 * layer below (herd_frontend_accept.h): it hands each accepted socket up
 * through a callback and knows nothing of connections. */
#include "herd_frontend.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "herd_frontend_accept.h"
#include "herd_list.h"
#include "herd_proto.h"

#define READ_CHUNK     (64u * 1024u) /* bytes read per connection per turn: the fairness bound */
#define MAX_UNANSWERED 256           /* lines owed an answer before input is paused */
#define RESUME_BELOW   64            /* resume reading once fewer are owed */
/* Back-pressure: a connection whose backlog (unsent and held answers) is at
 * least max_output_bytes / PAUSE_DIV is not read; it is read again once the
 * backlog is under max_output_bytes / RESUME_DIV. The gap between the two
 * lets a pipelining reader take a batch of answers per pause, not one. */
#define PAUSE_DIV      4
#define RESUME_DIV     8
/* A connection whose answers back up (unsent here, and in the kernel's send
 * queue) past max_output_bytes and that takes no byte for this long has
 * stopped reading and is cut (checked by the idle sweep). Over
 * limits.max_output_total_bytes, one with output waiting that took no byte
 * for this long is cut too (largest first); one that took bytes more
 * recently is a reader, and is only not read until the total drains: a
 * shorter time would take a busy client's pause for a stop. */
#define STALL_MS       2000L
/* An answer is logged with at most its first LOG_OUT_HEAD bytes and its
 * length (PROTOCOL §6 allows up to 512): a 17 KB Places answer to a 19-byte
 * WHATSAT then costs about 300 bytes of log, not 20 KB. */
#define LOG_OUT_HEAD   200u
/* A connection owed answers is not idle: the node answers every command by
 * a deadline (a WHATSAT by places.timeout_ms). Past idle_timeout_ms plus
 * this, an answer can only have been lost (an internal failure): the
 * connection is closed rather than kept owed forever. */
#define OWED_GRACE_MS  60000L
#define KEEP_OUT_CAP   (16u * 1024u) /* an empty output buffer larger than this is freed */
/* Lingering close (as nginx's lingering_time): after answering a line that
 * ends the connection, the server stops writing and reads and discards what
 * the client still sends, so that closing with unread input (which makes the
 * kernel send a reset that can destroy the answer before the client reads
 * it) only happens past these bounds. */
#define LINGER_MS        2000L
#define LINGER_MAX_BYTES (4u << 20)

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
    herd_list_node_t lru;     /* on the front end's idle list (or linger list) */
    herd_list_node_t blocked_link; /* on the front end's blocked list */
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
    char peer[FE_PEER_MAX];        /* the client's address:port, for the log */
    char tag[24];         /* "conn N ", the start of its log lines */
    uint8_t tag_len;      /* bytes of tag */
} conn_t;

struct herd_frontend_t {
    herd_loop_t *loop;
    herd_log_t *log;
    herd_frontend_conf_t conf;
    fe_acceptor_t *acceptor; /* the client port's listener (NULL: connections come by herd_frontend_adopt) */
    conn_t **by_fd;          /* open connections by descriptor */
    size_t by_fd_cap;
    size_t n_conns;          /* open connections */
    herd_list_t idle;        /* open connections by idle time, oldest first (conn_t.lru) */
    herd_list_t linger;      /* lingering connections, by when they give up, soonest first (conn_t.lru) */
    herd_list_t blocked;     /* connections with output the kernel did not take (conn_t.blocked_link) */
    size_t out_total;        /* backlog of all connections here (their `counted`) */
    bool serving;            /* serves connections (counts in the process's share of the total cap) */
    herd_time_t read_time;   /* wall clock of the last read from a client (herd_frontend_read_time) */
    int64_t read_mono_ns;    /* the same moment, monotonic */
    conn_t *dirty;           /* connections with output or resumable input */
    conn_t *dead;            /* closed connections to free at the end of the turn */
    char *rbuf;              /* the read buffer shared by all connections (serving only) */
    int idle_timer;          /* timer id of the idle sweep (serving only) */
    int tick;                /* tick id of the end-of-turn settle (serving only) */
    bool draining;           /* shutting down */
    uint64_t cut_total;      /* connections cut for limits.max_output_total_bytes */
    bool total_holding;      /* some connection may be total_held */
    size_t answer_est;       /* size of recent large answers: bounds the answers still to come */
};

static void conn_close(conn_t *c, const char *why);
static void conn_linger(conn_t *c);

/* The backlogs of every serving front end of the process (one server per
 * process), for limits.max_output_total_bytes, and how many front ends
 * share that cap; the connections cut for the output limits. Atomics: the
 * front ends run on threads of their own. */
static atomic_llong process_backlog;
static atomic_int process_serving;
static atomic_ullong process_cut_stalled;
static atomic_ullong process_cut_total;

/* ---- small buffers ---- */

static int buf_append(char **buf, size_t *len, size_t *cap, const char *data, size_t n)
{
    if (*len + n > *cap) {
        size_t ncap = *cap ? *cap : 256;
        while (ncap < *len + n)
            ncap *= 2;
        char *p = realloc(*buf, ncap);
        if (!p)
            return -1;
        *buf = p;
        *cap = ncap;
    }
    if (n)
        memcpy(*buf + *len, data, n);
    *len += n;
    return 0;
}

/* ---- bookkeeping lists ---- */

/* The connection of a node on the idle or linger list, or NULL. */
static conn_t *lru_conn(herd_list_node_t *n)
{
    return HERD_LIST_ENTRY(n, conn_t, lru);
}

/* The connection completed something: its idle time starts again. Only a
 * complete, non-empty line or an answer to one counts (PROTOCOL.md section
 * 6), so trickled bytes and empty lines do not keep a connection. */
static void conn_touch(conn_t *c)
{
    if (c->lingering || c->dead)
        return;
    c->last_in_ms = herd_loop_now_ms(c->fe->loop);
    herd_list_remove(&c->fe->idle, &c->lru);
    herd_list_push(&c->fe->idle, &c->lru);
}

static void mark_dirty(conn_t *c)
{
    if (c->dirty || c->dead)
        return;
    c->dirty = true;
    c->dirty_next = c->fe->dirty;
    c->fe->dirty = c;
}

static size_t unanswered(const conn_t *c)
{
    return (size_t)(c->next_seq - c->done_seq);
}

static size_t unsent(const conn_t *c)
{
    return c->out_len - c->out_off;
}

/* Answers made and not yet taken by the client. */
static size_t backlog(const conn_t *c)
{
    return unsent(c) + c->held_bytes;
}

static size_t pause_at(const herd_frontend_t *fe)
{
    long v = fe->conf.max_output_bytes / PAUSE_DIV;
    return v > 0 ? (size_t)v : 1;
}

/* Brings the connection's backlog up to date in the totals. */
static void conn_recount(conn_t *c)
{
    size_t now = c->dead ? 0 : backlog(c);
    if (now == c->counted)
        return;
    herd_frontend_t *fe = c->fe;
    fe->out_total = fe->out_total - c->counted + now;
    atomic_fetch_add(&process_backlog, (long long)now - (long long)c->counted);
    c->counted = now;
}

static void blocked_remove(conn_t *c)
{
    if (!c->blocked)
        return;
    herd_list_remove(&c->fe->blocked, &c->blocked_link);
    c->blocked = false;
}

/* Output is waiting for the client (the kernel took not all of it): from
 * now the sweep watches whether the client takes anything. */
static void blocked_add(conn_t *c)
{
    if (c->blocked)
        return;
    herd_frontend_t *fe = c->fe;
    c->blocked = true;
    c->blocked_written = c->written;
    c->blocked_since_ms = herd_loop_now_ms(fe->loop);
    herd_list_push(&fe->blocked, &c->blocked_link);
}

/* The epoll events a connection needs now. */
static void conn_update_watch(conn_t *c)
{
    uint32_t ev = 0;
    if (!c->eof && !c->closing && !c->paused)
        ev |= EPOLLIN;
    if (unsent(c))
        ev |= EPOLLOUT;
    herd_loop_rewatch(c->fe->loop, &c->watch, ev);
}

/* Logs client bytes: "conn N in ..." or "conn N out ..." (an answer with
 * at most its first LOG_OUT_HEAD bytes), unless log_commands is off. The
 * prefix is put together by hand: this runs twice per command. */
static void log_io(conn_t *c, const char *dir, size_t dir_len, const char *data, size_t len)
{
    if (!c->fe->conf.log_commands)
        return;
    char prefix[sizeof c->tag + 8];
    memcpy(prefix, c->tag, c->tag_len);
    memcpy(prefix + c->tag_len, dir, dir_len + 1);
    herd_log_data_head(c->fe->log, prefix, c->tag_len + dir_len, data, len, LOG_OUT_HEAD);
}

/* ---- answers ---- */

static void out_append(conn_t *c, const char *data, size_t len)
{
    if (buf_append(&c->out, &c->out_len, &c->out_cap, data, len) != 0)
        conn_close(c, "out of memory for its output");
}

int herd_frontend_answer(herd_frontend_t *fe, herd_ticket_t t, const char *data, size_t len)
{
    size_t fd = (size_t)(uint32_t)t.conn;
    conn_t *c = fd < fe->by_fd_cap ? fe->by_fd[fd] : NULL;
    if (!c || c->id != t.conn || c->dead || t.seq < c->done_seq || t.seq >= c->next_seq)
        return -1;
    fe->answer_est = len > fe->answer_est ? len : fe->answer_est - fe->answer_est / 64;
    if (len)
        conn_touch(c);
    /* An answer is logged as it joins the output, in the connection's
     * order: one that came early is logged when it is released, so the log's
     * "out" lines are in the order the client reads them. */
    if (t.seq == c->done_seq) {
        if (len)
            log_io(c, "out ", 4, data, len);
        out_append(c, data, len);
        c->done_seq++;
        while (!c->dead && c->slots && c->slots->seq == c->done_seq) {
            slot_t *s = c->slots;
            c->slots = s->next;
            c->held_bytes -= s->len;
            if (s->len)
                log_io(c, "out ", 4, s->data, s->len);
            out_append(c, s->data, s->len);
            c->done_seq++;
            free(s);
        }
    } else {
        slot_t *s = malloc(sizeof *s + len);
        if (!s) {
            conn_close(c, "out of memory for a held answer");
            return -1;
        }
        s->seq = t.seq;
        s->len = len;
        if (len)
            memcpy(s->data, data, len);
        slot_t **at = &c->slots;
        while (*at && (*at)->seq < t.seq)
            at = &(*at)->next;
        s->next = *at;
        *at = s;
        c->held_bytes += len;
    }
    if (c->dead)
        return -1;
    /* Past max_output_bytes the client is not cut at once: the answers of
     * the lines handed on before back-pressure stopped reading may pass it
     * in one turn, and a client that reads takes them. The idle sweep cuts
     * one that takes nothing (stalled_bytes). */
    conn_recount(c);
    mark_dirty(c);
    return 0;
}

/* ---- input ---- */

/* Handles one complete line (line end already removed). */
static void conn_line(conn_t *c, const char *line, size_t len)
{
    herd_frontend_t *fe = c->fe;
    log_io(c, "in ", 3, line, len);
    herd_ticket_t t = {.conn = c->id, .seq = c->next_seq++};
    if (herd_proto_is_blank(line, len)) {
        herd_frontend_answer(fe, t, NULL, 0);
        return;
    }
    conn_touch(c);
    fe->conf.on_line(fe->conf.arg, t, line, len);
}

/* Answers an over-long line with "? " and its first HERD_MAX_LINE bytes, then
 * closes once that is written. */
static void conn_overlong(conn_t *c, const char *line)
{
    char *reply = malloc(HERD_MAX_LINE + 3);
    herd_log_event(c->fe->log, "conn %llu line longer than %d bytes", (unsigned long long)c->serial,
                   HERD_MAX_LINE);
    if (!reply) {
        conn_close(c, "out of memory");
        return;
    }
    reply[0] = '?';
    reply[1] = ' ';
    memcpy(reply + 2, line, HERD_MAX_LINE);
    reply[HERD_MAX_LINE + 2] = '\n';
    herd_ticket_t t = {.conn = c->id, .seq = c->next_seq++};
    c->closing = true;
    herd_frontend_answer(c->fe, t, reply, HERD_MAX_LINE + 3);
    free(reply);
}

/* True when a partial line (no LF yet) is already too long to be valid. A
 * CR right after HERD_MAX_LINE bytes may still be the start of CR LF. */
static bool partial_too_long(const char *p, size_t len)
{
    if (len <= HERD_MAX_LINE)
        return false;
    return !(len == HERD_MAX_LINE + 1 && p[HERD_MAX_LINE] == '\r');
}

/* Processes the complete lines in [p, p+len); returns the bytes consumed.
 * Stops at a partial line, when paused, or when the connection closes. */
static size_t conn_consume(conn_t *c, const char *p, size_t len)
{
    size_t off = 0;
    while (off < len && !c->closing && !c->dead) {
        /* The lines handed on and not yet answered will add about
         * answer_est each: counted now, they cannot carry the backlog far
         * past the pause point once they are answered. */
        if (unanswered(c) >= MAX_UNANSWERED || c->total_held ||
            backlog(c) + unanswered(c) * c->fe->answer_est >= pause_at(c->fe)) {
            c->paused = true;
            break;
        }
        const char *line = p + off;
        size_t avail = len - off;
        const char *nl = memchr(line, '\n', avail);
        if (!nl) {
            if (partial_too_long(line, avail)) {
                conn_overlong(c, line);
                return len;
            }
            break;
        }
        size_t n = (size_t)(nl - line);
        off += n + 1;
        if (n > 0 && line[n - 1] == '\r')
            n--;
        if (n > HERD_MAX_LINE) {
            conn_overlong(c, line);
            return len;
        }
        conn_line(c, line, n);
    }
    return off;
}

/* Keeps unconsumed bytes in c->in. */
static void conn_keep(conn_t *c, const char *p, size_t len)
{
    if (len && buf_append(&c->in, &c->in_len, &c->in_cap, p, len) != 0)
        conn_close(c, "out of memory for its input");
}

/* Feeds freshly read bytes. */
static void conn_feed(conn_t *c, const char *data, size_t len)
{
    if (c->in_len) {
        /* Finish the partial line first; only its bytes are copied. */
        const char *nl = memchr(data, '\n', len);
        size_t take = nl ? (size_t)(nl - data) + 1 : len;
        if (!nl && c->in_len + take > HERD_MAX_LINE + 2)
            take = HERD_MAX_LINE + 2 - c->in_len; /* enough to see it is too long */
        conn_keep(c, data, take);
        if (c->dead)
            return;
        if (!nl) {
            if (partial_too_long(c->in, c->in_len)) {
                conn_overlong(c, c->in);
                c->in_len = 0;
            }
            return;
        }
        size_t used = conn_consume(c, c->in, c->in_len);
        if (c->dead)
            return;
        memmove(c->in, c->in + used, c->in_len - used);
        c->in_len -= used;
        data += take;
        len -= take;
        if (c->in_len) { /* paused or closing: keep the rest unread */
            if (!c->closing)
                conn_keep(c, data, len);
            return;
        }
    }
    size_t used = conn_consume(c, data, len);
    if (!c->dead && !c->closing)
        conn_keep(c, data + used, len - used);
}

/* After the client's EOF, once every complete line is taken: the bytes
 * after the last LF are a last command (PROTOCOL §2), or an over-long line
 * when there are more than HERD_MAX_LINE of them: with no LF to follow, a
 * CR at the end belongs to the line. */
static void conn_last_line(conn_t *c)
{
    if (!c->in_len || c->paused || c->closing || c->dead)
        return;
    size_t n = c->in_len;
    c->in_len = 0;
    if (n > HERD_MAX_LINE)
        conn_overlong(c, c->in);
    else
        conn_line(c, c->in, n);
}

/* The client half-closed: a last line without LF is a command too (taken
 * now, or once reading resumes when the connection is paused). */
static void conn_eof(conn_t *c)
{
    c->eof = true;
    conn_last_line(c);
    mark_dirty(c);
}

/* The clocks of a read: the lines it completes came in now. */
static void read_clocks(herd_frontend_t *fe)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    fe->read_mono_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    fe->read_time = herd_time_now();
}

static void conn_read(conn_t *c)
{
    herd_frontend_t *fe = c->fe;
    ssize_t n = recv(c->watch.fd, fe->rbuf, READ_CHUNK, 0);
    /* Every line this read completes (or an end of file ends) came in now. */
    read_clocks(fe);
    if (n > 0) {
        conn_feed(c, fe->rbuf, (size_t)n);
        if (!c->dead)
            mark_dirty(c);
    } else if (n == 0) {
        conn_eof(c);
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        char why[96];
        snprintf(why, sizeof why, "read error: %s", strerror(errno));
        conn_close(c, why);
    }
}

/* ---- output and life cycle ---- */

static void conn_flush(conn_t *c)
{
    while (unsent(c)) {
        ssize_t n = send(c->watch.fd, c->out + c->out_off, unsent(c), MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (size_t)n;
            c->written += (uint64_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n < 0 && errno == EINTR)
            continue;
        char why[96];
        snprintf(why, sizeof why, "write error: %s", n < 0 ? strerror(errno) : "nothing written");
        conn_close(c, why);
        return;
    }
    if (!unsent(c)) {
        c->out_off = c->out_len = 0;
        if (c->out_cap > KEEP_OUT_CAP) {
            free(c->out);
            c->out = NULL;
            c->out_cap = 0;
        }
    }
}

/* After input or answers: write, resume paused input once the backlog has
 * drained, write what that made, close when done. */
static void conn_settle(conn_t *c)
{
    conn_flush(c);
    if (c->dead)
        return;
    if (c->paused && !c->closing && !c->total_held && unanswered(c) < RESUME_BELOW &&
        backlog(c) < (size_t)(c->fe->conf.max_output_bytes / RESUME_DIV)) {
        c->paused = false;
        read_clocks(c->fe); /* the kept lines are taken in now */
        size_t used = conn_consume(c, c->in, c->in_len);
        if (c->dead)
            return;
        memmove(c->in, c->in + used, c->in_len - used);
        c->in_len -= used;
        if (c->eof)
            conn_last_line(c);
        if (c->dead)
            return;
        conn_flush(c);
        if (c->dead)
            return;
    }
    conn_recount(c);
    if (unsent(c))
        blocked_add(c);
    if ((c->eof || c->closing) && unanswered(c) == 0 && !unsent(c)) {
        if (c->eof || c->fe->draining)
            conn_close(c, c->eof ? "client done" : "server shutting down");
        else
            conn_linger(c);
        return;
    }
    conn_update_watch(c);
}

/* Everything owed is written and the connection must end (an over-long
 * line): stop writing, then read and discard until the client's EOF, for at
 * most LINGER_MS and LINGER_MAX_BYTES. */
static void conn_linger(conn_t *c)
{
    herd_frontend_t *fe = c->fe;
    if (shutdown(c->watch.fd, SHUT_WR) != 0) {
        conn_close(c, "closed after error");
        return;
    }
    free(c->in);
    c->in = NULL;
    c->in_len = c->in_cap = 0;
    herd_list_remove(&fe->idle, &c->lru);
    c->lingering = true;
    c->linger_until = herd_loop_now_ms(fe->loop) + LINGER_MS;
    c->linger_left = LINGER_MAX_BYTES;
    herd_list_push(&fe->linger, &c->lru);
    herd_loop_rewatch(fe->loop, &c->watch, EPOLLIN);
}

/* Reads and discards a lingering connection's input; closes at its EOF or
 * past the byte bound. */
static void linger_read(conn_t *c)
{
    herd_frontend_t *fe = c->fe;
    ssize_t n = recv(c->watch.fd, fe->rbuf, READ_CHUNK, 0);
    if (n > 0) {
        if ((size_t)n >= c->linger_left)
            conn_close(c, "closed after error (the client went on sending)");
        else
            c->linger_left -= (size_t)n;
    } else if (n == 0)
        conn_close(c, "closed after error");
    else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        conn_close(c, "closed after error");
}

static void conn_close(conn_t *c, const char *why)
{
    herd_frontend_t *fe = c->fe;
    if (c->dead)
        return;
    herd_log_event(fe->log, "conn %llu closed (%s): %s", (unsigned long long)c->serial, c->peer, why);
    herd_loop_unwatch(fe->loop, &c->watch);
    close(c->watch.fd);
    fe->by_fd[c->watch.fd] = NULL;
    herd_list_remove(c->lingering ? &fe->linger : &fe->idle, &c->lru);
    blocked_remove(c);
    fe->n_conns--;
    c->dead = true;
    conn_recount(c);
    if (fe->acceptor)
        fe_acceptor_release(fe->acceptor, c->serial);
    c->dead_next = fe->dead; /* freed at the end of the turn: events (and the dirty list) may still name it */
    fe->dead = c;
}

static void conn_free(conn_t *c)
{
    while (c->slots) {
        slot_t *s = c->slots;
        c->slots = s->next;
        free(s);
    }
    free(c->in);
    free(c->out);
    free(c);
}

static void conn_event(herd_loop_t *loop, herd_watch_t *w, uint32_t events)
{
    (void)loop;
    conn_t *c = w->arg;
    if (c->dead)
        return;
    if (c->lingering) {
        if (events & EPOLLIN)
            linger_read(c);
        else if (events & (EPOLLHUP | EPOLLERR))
            conn_close(c, "closed after error");
        return;
    }
    if (events & EPOLLIN)
        conn_read(c);
    else if (events & (EPOLLHUP | EPOLLERR)) {
        conn_close(c, "connection reset");
        return;
    }
    if (!c->dead && (events & EPOLLOUT))
        mark_dirty(c);
}

static int by_backlog_desc(const void *a, const void *b)
{
    size_t x = (*(conn_t *const *)a)->counted, y = (*(conn_t *const *)b)->counted;
    return x < y ? 1 : x > y ? -1 : 0;
}

static void cut_for_total(conn_t *c)
{
    char why[160];
    snprintf(why, sizeof why,
             "unsent output of all connections passed limits.max_output_total_bytes (%lld); this one had %zu bytes",
             c->fe->conf.max_output_total_bytes, c->counted);
    c->fe->cut_total++;
    atomic_fetch_add(&process_cut_total, 1);
    conn_close(c, why);
}

/* Connections held for the total read again: settled now, as the turn may
 * bring no other event for them. */
static void total_release(herd_frontend_t *fe)
{
    fe->total_holding = false;
    for (size_t fd = 0; fd < fe->by_fd_cap; fd++) {
        conn_t *c = fe->by_fd[fd];
        if (c && c->total_held && !c->dead) {
            c->total_held = false;
            conn_settle(c);
        }
    }
}

/* Not read until the total drains (back-pressure, as for its own backlog). */
static void total_hold(conn_t *c)
{
    if (c->total_held)
        return;
    c->total_held = true;
    c->paused = true;
    c->fe->total_holding = true;
    conn_update_watch(c);
}

/* Has output waiting and took none of it for STALL_MS. The progress
 * mark is brought up to date here too (the idle sweep does so more rarely):
 * a client that took bytes since is a reader. */
static bool total_not_reading(conn_t *c, int64_t now)
{
    if (!c->blocked || !unsent(c))
        return false;
    if (c->written != c->blocked_written) {
        c->blocked_written = c->written;
        c->blocked_since_ms = now;
    }
    return now - c->blocked_since_ms >= STALL_MS;
}

/* limits.max_output_total_bytes. One counter holds the backlog of every
 * front end of the process; while it is over the cap, a front end whose own
 * backlog is over its share (the cap over the number of front ends) acts on
 * its largest connections first until it is back within its share or the
 * process within the cap. Front ends under their share do nothing: the sum
 * of the shares is the cap, so while the process is over it some front end
 * is over its share, and that one holds the excess. A client that reads is
 * never cut (PROTOCOL.md section 6): only connections that stopped taking
 * their output are cut; of the rest, the largest are not read (their own
 * answers still come) until the total is under the cap again. */
static void enforce_total(herd_frontend_t *fe)
{
    long long cap = fe->conf.max_output_total_bytes;
    int serving = atomic_load(&process_serving);
    long long share = cap / (serving > 0 ? serving : 1);
    if (cap <= 0 || !fe->serving || atomic_load(&process_backlog) <= cap || (long long)fe->out_total <= share) {
        if (fe->total_holding)
            total_release(fe);
        return;
    }
    int64_t now = herd_loop_now_ms(fe->loop);
    size_t n = 0;
    conn_t **v = malloc((fe->n_conns ? fe->n_conns : 1) * sizeof *v);
    if (!v) { /* no memory to sort: cut every connection that stopped reading, hold the rest */
        for (size_t fd = 0; fd < fe->by_fd_cap; fd++) {
            conn_t *c = fe->by_fd[fd];
            if (!c || c->dead || !c->counted)
                continue;
            if (atomic_load(&process_backlog) > cap && total_not_reading(c, now))
                cut_for_total(c);
            else
                total_hold(c);
        }
        return;
    }
    for (size_t fd = 0; fd < fe->by_fd_cap && n < fe->n_conns; fd++)
        if (fe->by_fd[fd] && !fe->by_fd[fd]->dead && fe->by_fd[fd]->counted)
            v[n++] = fe->by_fd[fd];
    qsort(v, n, sizeof *v, by_backlog_desc);
    for (size_t i = 0; i < n && atomic_load(&process_backlog) > cap && (long long)fe->out_total > share; i++)
        if (total_not_reading(v[i], now))
            cut_for_total(v[i]);
    /* The hard bound: while connections that stopped reading are told from
     * slow readers (STALL_MS), the total may pass the cap, but never twice
     * over: past that the largest go, reading or not, so memory stays
     * bounded whatever many clients do at once. */
    for (size_t i = 0; i < n && atomic_load(&process_backlog) > 2 * cap && (long long)fe->out_total > 2 * share; i++)
        if (!v[i]->dead)
            cut_for_total(v[i]);
    long long excess = atomic_load(&process_backlog) - cap;
    if ((long long)fe->out_total - share < excess)
        excess = (long long)fe->out_total - share;
    for (size_t i = 0; i < n && excess > 0; i++)
        if (!v[i]->dead) {
            total_hold(v[i]);
            excess -= (long long)v[i]->counted;
        }
    free(v);
}

/* End of turn: settle every touched connection, then free the closed ones. */
static void frontend_tick(herd_loop_t *loop, void *arg)
{
    (void)loop;
    herd_frontend_t *fe = arg;
    while (fe->dirty) {
        conn_t *c = fe->dirty;
        fe->dirty = c->dirty_next;
        c->dirty = false;
        if (!c->dead)
            conn_settle(c);
    }
    enforce_total(fe);
    while (fe->dead) {
        conn_t *c = fe->dead;
        fe->dead = c->dead_next;
        if (fe->conf.on_closed)
            fe->conf.on_closed(fe->conf.arg, c->id, unanswered(c) > 0);
        conn_free(c);
    }
}

/* Answers the client has not taken: ours (unsent and held) and those in
 * the kernel's send queue. With back-pressure our own part stays near a
 * quarter of max_output_bytes; for a client that stopped reading, the
 * kernel's queue is full too, and the sum is what it has left unread. */
static size_t stalled_bytes(const conn_t *c)
{
    int queued = 0;
    if (ioctl(c->watch.fd, SIOCOUTQ, &queued) != 0 || queued < 0)
        queued = 0;
    return backlog(c) + (size_t)queued;
}

/* Closes connections that completed no command for limits.idle_timeout_ms
 * and lingering ones past their time. A connection still owed an answer is waiting
 * on us, not idle: the handler answers every ticket by a deadline (the node
 * answers a WHATSAT by places.timeout_ms plus a margin), and the answer
 * starts its idle time again. */
static void idle_sweep(herd_loop_t *loop, void *arg)
{
    herd_frontend_t *fe = arg;
    int64_t now = herd_loop_now_ms(loop);
    conn_t *c = lru_conn(fe->idle.head);
    while (c && now - c->last_in_ms >= fe->conf.idle_timeout_ms) {
        conn_t *next = lru_conn(c->lru.next);
        if (unanswered(c) == 0)
            conn_close(c, "idle timeout");
        else if (now - c->last_in_ms >= fe->conf.idle_timeout_ms + OWED_GRACE_MS)
            conn_close(c, "its commands were never answered (lost to an internal failure)");
        c = next;
    }
    for (c = HERD_LIST_ENTRY(fe->blocked.head, conn_t, blocked_link); c;) {
        conn_t *next = HERD_LIST_ENTRY(c->blocked_link.next, conn_t, blocked_link);
        if (!unsent(c))
            blocked_remove(c);
        else if (c->written != c->blocked_written) {
            c->blocked_written = c->written;
            c->blocked_since_ms = now;
        } else if (now - c->blocked_since_ms >= STALL_MS && stalled_bytes(c) > (size_t)fe->conf.max_output_bytes) {
            atomic_fetch_add(&process_cut_stalled, 1);
            conn_close(c, "unsent output passed limits.max_output_bytes");
        }
        c = next;
    }
    enforce_total(fe);
    while (fe->linger.head && now >= lru_conn(fe->linger.head)->linger_until)
        conn_close(lru_conn(fe->linger.head), "closed after error (no end from the client)");
}

static int index_conn(herd_frontend_t *fe, conn_t *c)
{
    size_t fd = (size_t)c->watch.fd;
    if (fd >= fe->by_fd_cap) {
        size_t ncap = fe->by_fd_cap ? fe->by_fd_cap : 1024;
        while (ncap <= fd)
            ncap *= 2;
        conn_t **p = realloc(fe->by_fd, ncap * sizeof *p);
        if (!p)
            return -1;
        memset(p + fe->by_fd_cap, 0, (ncap - fe->by_fd_cap) * sizeof *p);
        fe->by_fd = p;
        fe->by_fd_cap = ncap;
    }
    fe->by_fd[fd] = c;
    return 0;
}

int herd_frontend_adopt(herd_frontend_t *fe, int fd, uint64_t serial, const char *peer)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    conn_t *c = calloc(1, sizeof *c);
    if (!c) {
        herd_log_event(fe->log, "refused connection from %s: out of memory", peer);
        close(fd);
        return -1;
    }
    c->fe = fe;
    snprintf(c->peer, sizeof c->peer, "%s", peer);
    c->serial = serial;
    c->tag_len = (uint8_t)snprintf(c->tag, sizeof c->tag, "conn %llu ", (unsigned long long)c->serial);
    c->id = (c->serial << 32) | (uint32_t)fd;
    c->watch = (herd_watch_t){.fd = fd, .fn = conn_event, .arg = c};
    c->last_in_ms = herd_loop_now_ms(fe->loop);
    if (index_conn(fe, c) != 0 || herd_loop_watch(fe->loop, &c->watch, EPOLLIN) != 0) {
        if ((size_t)fd < fe->by_fd_cap)
            fe->by_fd[fd] = NULL;
        close(fd);
        free(c);
        return -1;
    }
    herd_list_push(&fe->idle, &c->lru);
    fe->n_conns++;
    herd_log_event(fe->log, "conn %llu opened from %s", (unsigned long long)c->serial, peer);
    if (fe->draining) {
        c->closing = true;
        mark_dirty(c);
    }
    return 0;
}

/* The acceptor's callback when the connections are served here. */
static void serve_accepted(void *arg, int fd, uint64_t serial, const char *peer)
{
    herd_frontend_t *fe = arg;
    if (herd_frontend_adopt(fe, fd, serial, peer) != 0)
        fe_acceptor_release(fe->acceptor, serial);
}

void herd_frontend_released(herd_frontend_t *fe, uint64_t conn)
{
    if (fe->acceptor)
        fe_acceptor_release(fe->acceptor, conn >> 32);
}

herd_frontend_t *herd_frontend_new(herd_loop_t *loop, herd_log_t *log, const herd_frontend_conf_t *conf,
                                   char *err, size_t errlen)
{
    herd_frontend_t *fe = calloc(1, sizeof *fe);
    if (!fe) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    /* An acceptor that hands its connections on serves none: no read
     * buffer, settle tick or idle sweep of its own. host is only needed to
     * bind, and the topology it points into may be reloaded. */
    *fe = (herd_frontend_t){.loop = loop, .log = log, .conf = *conf, .serving = conf->on_accept == NULL};
    fe->conf.host = NULL;
    if (fe->serving)
        atomic_fetch_add(&process_serving, 1);
    long sweep = conf->idle_timeout_ms / 8;
    sweep = sweep < 5 ? 5 : sweep > 1000 ? 1000 : sweep;
    if (conf->port) {
        fe_acceptor_conf_t ac = {.host = conf->host,
                                 .port = conf->port,
                                 .max_clients = conf->max_clients,
                                 .max_clients_per_address = conf->max_clients_per_address,
                                 .sweep_ms = sweep,
                                 .on_accept = fe->serving ? serve_accepted : conf->on_accept,
                                 .on_full = fe->serving ? NULL : conf->on_full,
                                 .arg = fe->serving ? fe : conf->arg};
        fe->acceptor = fe_acceptor_new(loop, log, &ac, err, errlen);
        if (!fe->acceptor) {
            herd_frontend_destroy(&fe);
            return NULL;
        }
    }
    if (!fe->serving)
        return fe;
    if (!(fe->rbuf = malloc(READ_CHUNK))) {
        snprintf(err, errlen, "out of memory");
        herd_frontend_destroy(&fe);
        return NULL;
    }
    if ((fe->tick = herd_loop_add_tick(loop, HERD_PHASE_FRONTEND, frontend_tick, fe)) < 0 ||
        (fe->idle_timer = herd_loop_add_timer(loop, sweep, idle_sweep, fe)) < 0) {
        snprintf(err, errlen, "cannot set up the front end's timers: %s", strerror(errno));
        herd_frontend_destroy(&fe);
        return NULL;
    }
    return fe;
}

void herd_frontend_close(herd_frontend_t *fe, herd_ticket_t t, const char *why)
{
    size_t fd = (size_t)(uint32_t)t.conn;
    conn_t *c = fd < fe->by_fd_cap ? fe->by_fd[fd] : NULL;
    if (c && c->id == t.conn)
        conn_close(c, why);
}

void herd_frontend_render(const herd_frontend_t *fe, FILE *f)
{
    long long total = atomic_load(&process_backlog);
    fe_refusals_t r = fe->acceptor ? fe_acceptor_refusals(fe->acceptor) : (fe_refusals_t){0};
    fprintf(f,
            "# HELP herd_connections_refused_total Client connections closed at accept, by reason.\n"
            "# TYPE herd_connections_refused_total counter\n"
            "herd_connections_refused_total{reason=\"max_clients\"} %llu\n"
            "herd_connections_refused_total{reason=\"max_clients_per_address\"} %llu\n"
            "herd_connections_refused_total{reason=\"descriptors\"} %llu\n"
            "# HELP herd_connections_cut_total Client connections cut for their unsent output, by limit.\n"
            "# TYPE herd_connections_cut_total counter\n"
            "herd_connections_cut_total{reason=\"max_output_bytes\"} %llu\n"
            "herd_connections_cut_total{reason=\"max_output_total_bytes\"} %llu\n"
            "# HELP herd_client_output_bytes Answers made and not yet taken by their clients, all connections.\n"
            "# TYPE herd_client_output_bytes gauge\n"
            "herd_client_output_bytes %lld\n",
            (unsigned long long)r.max_clients, (unsigned long long)r.per_address,
            (unsigned long long)r.descriptors, (unsigned long long)atomic_load(&process_cut_stalled),
            (unsigned long long)atomic_load(&process_cut_total), total > 0 ? total : 0);
}

void herd_frontend_set_limits(herd_frontend_t *fe, const herd_frontend_conf_t *conf)
{
    fe->conf.max_clients = conf->max_clients;
    fe->conf.idle_timeout_ms = conf->idle_timeout_ms;
    fe->conf.max_output_bytes = conf->max_output_bytes;
    fe->conf.max_clients_per_address = conf->max_clients_per_address;
    fe->conf.max_output_total_bytes = conf->max_output_total_bytes;
    fe->conf.log_commands = conf->log_commands;
    if (fe->acceptor)
        fe_acceptor_set_limits(fe->acceptor, conf->max_clients, conf->max_clients_per_address);
}

void herd_frontend_drain(herd_frontend_t *fe)
{
    fe->draining = true;
    if (fe->acceptor)
        fe_acceptor_stop(fe->acceptor);
    for (size_t fd = 0; fd < fe->by_fd_cap; fd++) {
        conn_t *c = fe->by_fd[fd];
        if (!c)
            continue;
        c->closing = true;
        mark_dirty(c);
    }
}

herd_time_t herd_frontend_read_time(const herd_frontend_t *fe)
{
    return fe->read_time;
}

int64_t herd_frontend_read_mono_ns(const herd_frontend_t *fe)
{
    return fe->read_mono_ns;
}

size_t herd_frontend_connections(const herd_frontend_t *fe)
{
    /* An acceptor that hands its connections on counts them until they are released. */
    return fe->serving || !fe->acceptor ? fe->n_conns : fe_acceptor_open(fe->acceptor);
}

size_t herd_frontend_busy(const herd_frontend_t *fe)
{
    size_t busy = 0;
    for (size_t fd = 0; fd < fe->by_fd_cap; fd++) {
        const conn_t *c = fe->by_fd[fd];
        if (c && (unanswered(c) || unsent(c)))
            busy++;
    }
    return busy;
}

void herd_frontend_destroy(herd_frontend_t **p)
{
    if (!p || !*p)
        return;
    herd_frontend_t *fe = *p;
    for (size_t fd = 0; fd < fe->by_fd_cap; fd++)
        if (fe->by_fd[fd])
            conn_close(fe->by_fd[fd], "server stopped");
    fe->dirty = NULL;
    while (fe->dead) {
        conn_t *c = fe->dead;
        fe->dead = c->dead_next;
        conn_free(c);
    }
    fe_acceptor_destroy(&fe->acceptor);
    if (fe->idle_timer > 0)
        herd_loop_remove_timer(fe->loop, fe->idle_timer);
    if (fe->tick > 0)
        herd_loop_remove_tick(fe->loop, fe->tick);
    if (fe->serving)
        atomic_fetch_sub(&process_serving, 1);
    free(fe->by_fd);
    free(fe->rbuf);
    free(fe);
    *p = NULL;
}
