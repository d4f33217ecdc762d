/* herd-bench: shared pieces of the benchmark client.
 *
 * The client is one thread on epoll with non-blocking sockets. Every command
 * it sends is remembered in its connection's queue (replies come back in
 * command order), so each reply is checked against exactly what was asked
 * and timed from the moment the command was due. Results are printed as
 * one "RESULT key=value ..." line per measurement for scripts, after a
 * human-readable summary. */
#ifndef HERD_BENCH_H
#define HERD_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "herd_time.h"

/* ---- options ---- */

typedef struct {
    const char *mode;        /* load, prop, rejoin, conns, mem */
    const char *host;        /* target address (default 127.0.0.1) */
    int port;                /* target client port, or 0 to take it from --config/--server */
    const char *config;      /* topology file, to find ports by server name */
    const char *server;      /* target server (load, conns, mem), victim (rejoin), source (prop) */
    const char *fill;        /* rejoin: server that receives the fill IAMATs */
    int conns;               /* -c: connections */
    int depth;               /* -d: commands in flight per connection */
    double duration;         /* seconds of measured load (0 with --count: until count) */
    double warmup;           /* seconds of load before measuring starts */
    uint64_t count;          /* commands to send (0: by duration) */
    double rate;             /* commands per second, open loop (0: closed loop) */
    double tick_us;          /* open loop: least time between two sending rounds */
    const char *workload;    /* iamat, whatsat or mix */
    double mix;              /* fraction of WHATSAT in the mix */
    uint64_t keys;           /* client ids in use (0 in prop: a new id per update) */
    const char *prefix;      /* client id prefix */
    uint64_t seed;           /* varies the positions, so Places caches do not hit across runs */
    const char *expect_name; /* server name the AT lines must carry (NULL: any valid name) */
    bool oneshot;            /* one connection per command, half-closed */
    bool no_fill;            /* whatsat/mix: the keys are already stored */
    bool fixed_pos;          /* every client at one position (one Places call, then cache hits) */
    const char *radius;      /* WHATSAT radius text */
    int bound;               /* WHATSAT bound */
    uint64_t sample_every;   /* prop: watch every Nth update */
    double poll_gap_us;      /* prop: pause between two polls of one server */
    bool verify;             /* prop: check every update at every server at the end */
    double timeout;          /* seconds before an unanswered or unseen thing counts as lost */
    const char *server_bin;  /* rejoin: the herd-server binary */
    const char *log_dir;     /* rejoin: --log-dir for the started server */
    pid_t pids[16];          /* --pid: server processes; the first is the target (VmRSS, CPU) */
    int npids;
    const char *steps;       /* mem: comma-separated client counts */
    const char *label;       /* echoed in the RESULT line */
    bool quiet;              /* only RESULT lines */
} hb_opts_t;

/* ---- clock ---- */

/* CLOCK_MONOTONIC in nanoseconds: all latencies use it. */
uint64_t hb_now_ns(void);

/* Sleeps for the given nanoseconds (for pacing set-up steps, never measurement). */
void hb_sleep_ns(uint64_t ns);

/* ---- latency histogram ---- */

/* Log-linear buckets: 128 per power of two, so any value is kept within
 * 1/128 (0.8 %) of itself; values below 128 ns are exact. */
#define HB_SUB_BITS 7
#define HB_SUB      (1u << HB_SUB_BITS)
#define HB_BUCKETS  ((64 - HB_SUB_BITS + 1) * HB_SUB)

typedef struct {
    uint64_t counts[HB_BUCKETS]; /* values per bucket */
    uint64_t n;                  /* values added */
    uint64_t max;                /* largest value, exact */
    uint64_t min;                /* smallest value, exact */
    double sum;                  /* for the mean */
} hb_hist_t;

hb_hist_t *hb_hist_new(void);
void hb_hist_free(hb_hist_t **h);
void hb_hist_add(hb_hist_t *h, uint64_t v);
/* The value at quantile q (0..1): the upper edge of its bucket, at most max. */
uint64_t hb_hist_quantile(const hb_hist_t *h, double q);
/* Appends " name_p50_us=.. name_p99_us=.. name_p999_us=.. name_max_us=.." */
void hb_hist_kv(const hb_hist_t *h, const char *name, char *buf, size_t cap);

/* ---- text of commands and replies ---- */

/* The id of client number `key`: "<prefix><key>". Returns its length. */
size_t hb_fmt_id(const hb_opts_t *o, uint64_t key, char *buf, size_t cap);
/* A position "+DD.dddddd+DDD.dddddd", distinct per (seed, key), or one per
 * seed when o->fixed_pos. */
size_t hb_fmt_pos(const hb_opts_t *o, uint64_t key, char *buf, size_t cap);
/* "sec.nnnnnnnnn", always 9 fraction digits. */
size_t hb_fmt_time(herd_time_t t, char *buf, size_t cap);
/* The wall clock, strictly later than the last value it returned. */
herd_time_t hb_next_time(void);

/* "IAMAT <id> <pos> <time>\n"; returns its length. */
size_t hb_fmt_iamat(const hb_opts_t *o, uint64_t key, herd_time_t t, char *buf, size_t cap);
/* "WHATSAT <id> <radius> <bound>\n". */
size_t hb_fmt_whatsat(const hb_opts_t *o, uint64_t key, char *buf, size_t cap);
/* The client id in a command's text (its second field); returns its length. */
size_t hb_cmd_id(const char *cmd, size_t len, const char **id);

/* Reply kinds, by the command that asked. */
enum { HB_IAMAT = 1, HB_WHATSAT = 2 };

/* Length of the first complete reply in buf for a command of `kind`, or 0
 * when it has not all arrived. A WHATSAT answered with an AT line ends at the
 * first blank line; every other reply is one line. */
size_t hb_reply_len(const char *buf, size_t len, int kind);

/* Checks an AT line (without LF): "AT <name> <skew> <id> <pos> <time>", a
 * valid server name (equal to expect_name when given), a skew of the form
 * [+-]D+.DDDDDDDDD, and the id equal to `id`. Returns true when it fits. */
bool hb_check_at(const char *line, size_t len, const char *expect_name, const char *id, size_t id_len);

/* Checks a WHATSAT reply (as delimited by hb_reply_len): an AT line for `id`,
 * then a JSON object, then a blank line. Writes the "status" value (or "")
 * into status. Returns true when the shape is right. */
bool hb_check_whatsat(const char *r, size_t len, const char *expect_name, const char *id, size_t id_len,
                      char *status, size_t status_cap);

/* Checks a reply against the text of the command it answers: an IAMAT gets
 * one AT line ending with the command's own three fields; a WHATSAT gets
 * hb_check_whatsat for its id (status as there). Returns true when it fits. */
bool hb_check_reply(const hb_opts_t *o, const char *cmd, size_t cmd_len, const char *r, size_t len, char *status,
                    size_t status_cap);

/* ---- connections ---- */

/* A growable byte buffer. */
typedef struct {
    char *p;
    size_t off, len, cap; /* live bytes are p[off..len) */
} hb_buf_t;

void hb_buf_put(hb_buf_t *b, const char *data, size_t n);
/* Makes room for n more bytes at p + len. */
void hb_buf_room(hb_buf_t *b, size_t n);
void hb_buf_free(hb_buf_t *b);

/* One outstanding command. */
typedef struct {
    uint64_t t_ns;   /* when it was due (open loop) or sent (closed loop) */
    uint64_t key;    /* which client */
    herd_time_t tm;  /* IAMAT: the time sent */
    uint32_t kind;   /* HB_IAMAT or HB_WHATSAT */
    uint32_t tag;    /* mode-specific (prop: sample or probe number) */
    uint32_t cmd_len; /* bytes of its text in the connection's sent buffer */
} hb_req_t;

typedef struct hb_conn {
    int fd;
    int idx;         /* number within its mode */
    hb_buf_t in;     /* received, not yet consumed */
    hb_buf_t out;    /* queued, not yet written */
    hb_buf_t sent;   /* the text of every outstanding command, in order */
    hb_req_t *q;     /* ring of outstanding commands */
    size_t qh, qn, qcap;
    uint32_t ev;     /* epoll events registered */
    bool eof;        /* the server closed */
    bool dead;       /* an error: no longer used */
} hb_conn_t;

/* epoll_wait with a nanosecond timeout (<0: none), so pacing is not held to
 * whole milliseconds. */
int hb_wait(int epfd, void *events, int max, int64_t timeout_ns);

/* Raises RLIMIT_NOFILE to at least `want` descriptors (to the hard limit, or
 * beyond it when allowed). Returns the soft limit now in force. */
long hb_raise_nofile(long want);

/* Resolves host:port into an IPv4/IPv6 socket address. */
int hb_resolve(const char *host, int port, void *ss, socklen_t *sl);

/* Connects (blocking), then makes the socket non-blocking with TCP_NODELAY.
 * Returns the fd or -1 with errno set. */
int hb_connect(const char *host, int port);

/* A connection wrapper around a connected fd, registered on epfd for input. */
hb_conn_t *hb_conn_new(int epfd, int fd, int idx);
void hb_conn_free(int epfd, hb_conn_t **c);

/* Queues a command and remembers it (and its text, for checking the reply). */
void hb_conn_send(hb_conn_t *c, const char *cmd, size_t len, const hb_req_t *req);
/* Writes what it can and keeps EPOLLOUT registered while output is left.
 * Returns -1 (and marks the connection dead) on a write error. */
int hb_conn_flush(int epfd, hb_conn_t *c);
/* Reads what is available. Returns bytes read, 0 at EOF, -2 when nothing
 * is there yet, -1 on error (the connection is marked dead). */
ssize_t hb_conn_read(hb_conn_t *c);
/* The oldest outstanding command, or NULL. */
hb_req_t *hb_conn_head(hb_conn_t *c);
/* When the reply to the oldest command is complete: returns 1 and points
 * *r / *len at it and *cmd / *cmd_len at the command's text (both valid
 * until the next read or send); the caller then calls hb_conn_pop. Returns 0
 * otherwise. */
int hb_conn_reply(hb_conn_t *c, const char **r, size_t *len, const char **cmd, size_t *cmd_len);
/* Drops the oldest command and its reply of `len` bytes. */
void hb_conn_pop(hb_conn_t *c, size_t len);

/* ---- topology and server processes ---- */

/* The client port of `name` in opts->config (and its host into *host, static
 * storage). Returns -1 with a message on stderr when it cannot be found. */
int hb_server_port(const hb_opts_t *o, const char *name, const char **host);
/* Names of every server of opts->config except `except` (NULL: none), with
 * their ports. Returns how many (at most cap). */
size_t hb_other_servers(const hb_opts_t *o, const char *except, const char **names, int *ports, size_t cap);

/* Starts `bin --config CONFIG [--log-dir DIR] NAME` with RLIMIT_NOFILE raised
 * and waits for its "READY NAME" line (up to timeout seconds). *t_start gets
 * the monotonic time just before fork and *t_ready when READY was read.
 * Returns the pid, or -1. */
pid_t hb_start_server(const hb_opts_t *o, const char *name, uint64_t *t_start, uint64_t *t_ready);
/* SIGTERM (or SIGKILL when hard), then waits for it. */
void hb_stop_server(pid_t pid, bool hard);
/* VmRSS of a process in KiB, or -1. */
long hb_rss_kb(pid_t pid);
/* CPU seconds (user + system) a process has used so far, or -1. */
double hb_proc_cpu_s(pid_t pid);
/* CPU seconds this process has used so far. */
double hb_self_cpu_s(void);

/* ---- output ---- */

/* Prints a human line unless quiet. */
void hb_say(const hb_opts_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints "RESULT mode=<mode> [label=<label>] <kv>". */
void hb_result(const hb_opts_t *o, const char *kv);

/* ---- modes ---- */

int hb_mode_load(const hb_opts_t *o);
int hb_mode_prop(const hb_opts_t *o);
int hb_mode_rejoin(const hb_opts_t *o);
int hb_mode_conns(const hb_opts_t *o);
int hb_mode_mem(const hb_opts_t *o);

/* Stores keys [first, first+n) at host:port with one IAMAT each over a few
 * pipelined connections, and waits for every reply. When ats is not NULL,
 * ats[key - first] gets a malloc'd copy of each AT line (without LF), and
 * *at_bytes (when not NULL) the total length of those lines.
 * Returns the number of bad or missing replies (0 on success), -1 when no
 * connection could be made. */
long hb_fill(const hb_opts_t *o, const char *host, int port, uint64_t first, uint64_t n, char **ats,
             uint64_t *at_bytes);

/* Asks host:port for each of `n` ids (keys[i]) with WHATSAT, over one
 * pipelined connection, and sets found[i] when the reply carries exactly
 * ats[i] as its AT line (ats NULL: any valid AT line for that id). Only the
 * entries with found[i] false are asked. Returns how many are still not
 * found, or -1 when the server cannot be reached. *t_last gets the time the
 * last newly found reply arrived. */
long hb_check_keys(const hb_opts_t *o, const char *host, int port, const uint64_t *keys, size_t n,
                   char *const *ats, bool *found, uint64_t *t_last);

#endif
