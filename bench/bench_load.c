/* herd-bench load: throughput and latency over persistent, pipelined
 * connections (closed loop, or paced open loop with --rate), or one
 * connection per command, half-closed (--oneshot).
 *
 * Closed loop: every connection keeps `depth` commands in flight; each reply
 * is answered at once with a new command, and latency runs from the write.
 * Open loop: command i is due at t0 + i/rate whatever came back; it goes out
 * on the next connection with room, and its latency runs from when it was
 * due, not when it could be written, so a stalled server shows up in the
 * figures instead of quietly slowing the load (no coordinated omission).
 * With --tick-us T the client wakes at most every T us and sends every
 * command due within the next T at once (timed from its write when early):
 * fewer wake-ups, so less of the machine for the client, in burstier
 * arrivals. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "herd_bench.h"

#define MAX_EV     512
#define SHOW_ERRS  5 /* bad replies printed on stderr */

typedef struct {
    const hb_opts_t *o;
    const char *host;
    int port;
    int epfd;
    hb_conn_t **c;
    int nc;
    hb_hist_t *lat;          /* latency of replies received in the window */
    hb_hist_t *lag;          /* open loop: how late commands were written */
    uint64_t t0;             /* first command */
    uint64_t t_measure;      /* window start (after warm-up) */
    uint64_t t_end;          /* window end: no command is due after it */
    uint64_t limit;          /* commands to issue (UINT64_MAX: by time) */
    uint64_t issued;         /* commands queued so far */
    uint64_t answered;       /* replies received */
    uint64_t in_window;      /* replies received inside the window */
    uint64_t errors;         /* bad replies, failed connections, missing replies */
    uint64_t n_whatsat;      /* WHATSATs answered */
    uint64_t st_ok, st_denied, st_other; /* WHATSAT "status" values */
    uint64_t t_last_reply;
    uint64_t rng;
    uint64_t period_ns;      /* open loop: time between two due commands */
    int rr;                  /* open loop: next connection to try */
    int cpu_state;           /* 0 before the window, 1 inside, 2 after */
    double cpu0[3], cpu1[3]; /* CPU seconds of the client, the target, the whole herd */
} load_t;

/* CPU seconds so far of this client, the target server and every --pid. */
static void cpu_snap(const load_t *L, double *v)
{
    v[0] = hb_self_cpu_s();
    v[1] = v[2] = 0;
    for (int i = 0; i < L->o->npids; i++) {
        double c = hb_proc_cpu_s(L->o->pids[i]);
        if (i == 0)
            v[1] = c;
        v[2] += c;
    }
}

/* Takes the CPU readings as the window opens and closes. */
static void cpu_track(load_t *L, uint64_t now, bool last)
{
    if (L->cpu_state == 0 && now >= L->t_measure) {
        cpu_snap(L, L->cpu0);
        L->cpu_state = 1;
    }
    if (L->cpu_state == 1 && (now >= L->t_end || last)) {
        cpu_snap(L, L->cpu1);
        L->cpu_state = 2;
    }
}

static uint64_t rnd(load_t *L)
{
    L->rng ^= L->rng << 13;
    L->rng ^= L->rng >> 7;
    L->rng ^= L->rng << 17;
    return L->rng;
}

/* Reports one bad reply (the first few on stderr). */
static void bad(load_t *L, const char *why, const char *r, size_t len)
{
    if (L->errors++ < SHOW_ERRS)
        fprintf(stderr, "herd-bench: %s: %.*s%s\n", why, (int)(len > 300 ? 300 : len), r ? r : "",
                len > 300 ? "..." : "");
}

/* The next command: its kind by the workload, its client by round robin. */
static void next_cmd(load_t *L, hb_req_t *rq, char *buf, size_t cap, size_t *len)
{
    const hb_opts_t *o = L->o;
    uint64_t n = L->issued++;
    rq->key = o->keys ? n % o->keys : n;
    rq->tag = 0;
    bool w = !strcmp(o->workload, "whatsat") ||
             (!strcmp(o->workload, "mix") && (double)(rnd(L) % 1000000u) < o->mix * 1e6);
    if (w) {
        rq->kind = HB_WHATSAT;
        rq->tm = (herd_time_t){0, 0};
        *len = hb_fmt_whatsat(o, rq->key, buf, cap);
    } else {
        rq->kind = HB_IAMAT;
        rq->tm = hb_next_time();
        *len = hb_fmt_iamat(o, rq->key, rq->tm, buf, cap);
    }
}

/* Checks one reply against the command it answers. */
static bool reply_ok(load_t *L, const char *cmd, size_t cmd_len, const char *r, size_t len)
{
    char status[64];
    if (!hb_check_reply(L->o, cmd, cmd_len, r, len, status, sizeof status))
        return false;
    if (cmd[0] == 'W') {
        L->n_whatsat++;
        if (!strcmp(status, "OK") || !strcmp(status, "ZERO_RESULTS"))
            L->st_ok++;
        else if (!strcmp(status, "REQUEST_DENIED"))
            L->st_denied++;
        else
            L->st_other++;
    }
    return true;
}

/* Queues one new command on c, due at `due` (0: now). */
static void issue(load_t *L, hb_conn_t *c, uint64_t due, uint64_t now)
{
    char buf[512];
    size_t len;
    hb_req_t rq;
    next_cmd(L, &rq, buf, sizeof buf, &len);
    /* Late (the client fell behind, or every connection was full): timed
     * from when it was due. Early (sent with its round, --tick-us): timed
     * from the write, so a latency is never shorter than the server took. */
    rq.t_ns = !due ? now : due < now ? due : now;
    if (due && L->lag && due >= L->t_measure)
        hb_hist_add(L->lag, now > due ? now - due : 0);
    hb_conn_send(c, buf, len, &rq);
}

/* Closed loop: more commands for c, up to depth. */
static void refill(load_t *L, hb_conn_t *c, uint64_t now)
{
    while (!c->dead && c->qn < (size_t)L->o->depth && L->issued < L->limit && now < L->t_end)
        issue(L, c, 0, now);
}

/* Open loop: every command due by now goes out on a connection with room. */
static void pace(load_t *L, uint64_t now)
{
    uint64_t horizon = now + (uint64_t)(L->o->tick_us * 1e3);
    while (L->issued < L->limit) {
        uint64_t due = L->t0 + L->issued * L->period_ns;
        if (due > horizon || due >= L->t_end)
            return;
        hb_conn_t *c = NULL;
        for (int k = 0; k < L->nc && !c; k++) {
            hb_conn_t *x = L->c[(L->rr + k) % L->nc];
            if (!x->dead && x->qn < (size_t)L->o->depth) {
                c = x;
                L->rr = (L->rr + k + 1) % L->nc;
            }
        }
        if (!c)
            return; /* every connection is full: the command waits, and its wait counts */
        issue(L, c, due, now);
    }
}

/* Takes every complete reply on c. */
static void drain(load_t *L, hb_conn_t *c, uint64_t now)
{
    const char *r, *cmd;
    size_t len, cmd_len;
    while (hb_conn_reply(c, &r, &len, &cmd, &cmd_len)) {
        hb_req_t *rq = hb_conn_head(c);
        if (!reply_ok(L, cmd, cmd_len, r, len))
            bad(L, "unexpected reply", r, len);
        else if (now >= L->t_measure && now <= L->t_end) {
            L->in_window++;
            hb_hist_add(L->lat, now - rq->t_ns);
        }
        L->answered++;
        L->t_last_reply = now;
        hb_conn_pop(c, len);
    }
}

static size_t outstanding(const load_t *L)
{
    size_t n = 0;
    for (int i = 0; i < L->nc; i++)
        if (!L->c[i]->dead)
            n += L->c[i]->qn;
    return n;
}

static void result_line(load_t *L, double secs, double tput, bool paced)
{
    const hb_opts_t *o = L->o;
    char kv[1024];
    snprintf(kv, sizeof kv,
             "workload=%s conns=%d depth=%d rate=%.0f keys=%" PRIu64 " secs=%.3f ops=%" PRIu64
             " tput=%.1f errors=%" PRIu64,
             o->workload, L->nc, o->depth, o->rate, o->keys, secs, L->limit != UINT64_MAX ? L->answered : L->in_window,
             tput, L->errors);
    hb_hist_kv(L->lat, "lat", kv, sizeof kv);
    if (paced)
        hb_hist_kv(L->lag, "sendlag", kv, sizeof kv);
    if (L->cpu_state == 2 && secs > 0) {
        size_t n = strlen(kv);
        double ops = (double)(L->limit != UINT64_MAX ? L->answered : L->in_window);
        double self = L->cpu1[0] - L->cpu0[0], srv = L->cpu1[1] - L->cpu0[1], herd = L->cpu1[2] - L->cpu0[2];
        snprintf(kv + n, sizeof kv - n, " bench_cpu=%.2f", self / secs);
        n = strlen(kv);
        if (o->npids && ops > 0)
            snprintf(kv + n, sizeof kv - n, " srv_cpu=%.2f srv_us_per_op=%.3f herd_cpu=%.2f herd_us_per_op=%.3f",
                     srv / secs, srv * 1e6 / ops, herd / secs, herd * 1e6 / ops);
        hb_say(o, "CPU (cores busy over the window): client %.2f%s", self / secs, o->npids ? "" : " (give --pid for the server's)");
        if (o->npids && ops > 0)
            hb_say(o, "  target server %.2f (%.2f us a command), all --pid processes %.2f (%.2f us a command)",
                   srv / secs, srv * 1e6 / ops, herd / secs, herd * 1e6 / ops);
    }
    if (L->n_whatsat) {
        size_t n = strlen(kv);
        snprintf(kv + n, sizeof kv - n, " whatsat=%" PRIu64 " status_ok=%" PRIu64 " status_denied=%" PRIu64
                 " status_other=%" PRIu64, L->n_whatsat, L->st_ok, L->st_denied, L->st_other);
    }
    hb_say(o, "%s %s:%d: %" PRIu64 " replies in %.3f s = %.0f/s, p50 %.1f us, p99 %.1f us, p99.9 %.1f us, "
              "max %.1f us, %" PRIu64 " errors",
           o->workload, L->host, L->port, L->limit != UINT64_MAX ? L->answered : L->in_window, secs, tput,
           hb_hist_quantile(L->lat, 0.5) / 1e3, hb_hist_quantile(L->lat, 0.99) / 1e3,
           hb_hist_quantile(L->lat, 0.999) / 1e3, L->lat->max / 1e3, L->errors);
    hb_result(o, kv);
}

/* The measured window: from now (a --count run with no --duration) or after
 * the warm-up, for --duration seconds. */
static void set_window(load_t *L, const hb_opts_t *o, uint64_t now)
{
    L->t0 = now;
    if (L->limit != UINT64_MAX && o->duration <= 0) {
        L->t_measure = now;
        L->t_end = UINT64_MAX;
    } else {
        L->t_measure = now + (uint64_t)(o->warmup * 1e9);
        L->t_end = L->t_measure + (uint64_t)(o->duration * 1e9);
    }
}

static int run_persistent(load_t *L)
{
    const hb_opts_t *o = L->o;
    L->epfd = epoll_create1(EPOLL_CLOEXEC);
    L->c = calloc((size_t)o->conns, sizeof *L->c);
    for (int i = 0; i < o->conns; i++) {
        int fd = hb_connect(L->host, L->port);
        if (fd < 0) {
            fprintf(stderr, "herd-bench: connect %s:%d: %s\n", L->host, L->port, strerror(errno));
            return 1;
        }
        L->c[L->nc++] = hb_conn_new(L->epfd, fd, i);
    }
    bool paced = o->rate > 0;
    if (paced) {
        /* Wake-ups are timed to the microsecond: the default 50 us timer
         * slack would otherwise be added to every measured latency. */
        prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
        L->lag = hb_hist_new();
        L->period_ns = (uint64_t)(1e9 / o->rate);
        if (!L->period_ns)
            L->period_ns = 1;
    }
    uint64_t now = hb_now_ns();
    set_window(L, o, now);
    if (paced)
        pace(L, now);
    else
        for (int i = 0; i < L->nc; i++)
            refill(L, L->c[i], now);
    for (int i = 0; i < L->nc; i++)
        hb_conn_flush(L->epfd, L->c[i]);

    struct epoll_event ev[MAX_EV];
    uint64_t grace_end = 0;
    for (;;) {
        now = hb_now_ns();
        cpu_track(L, now, false);
        bool issuing = L->issued < L->limit && now < L->t_end;
        if (!issuing) {
            if (!outstanding(L))
                break;
            if (!grace_end)
                grace_end = now + (uint64_t)(o->timeout * 1e9);
            if (now >= grace_end)
                break;
        }
        int64_t wait = -1;
        if (paced && issuing) {
            uint64_t due = L->t0 + L->issued * L->period_ns;
            uint64_t tick = (uint64_t)(L->o->tick_us * 1e3);
            wait = due > now + tick ? (int64_t)(due - tick - now) : 0;
        } else if (issuing && L->t_end != UINT64_MAX) {
            wait = (int64_t)(L->t_end - now);
        } else if (!issuing) {
            wait = (int64_t)(grace_end - now);
        }
        int n = hb_wait(L->epfd, ev, MAX_EV, wait);
        if (n < 0 && errno != EINTR) {
            perror("herd-bench: epoll");
            return 1;
        }
        now = hb_now_ns();
        for (int i = 0; i < n; i++) {
            hb_conn_t *c = ev[i].data.ptr;
            if (c->dead)
                continue;
            if (ev[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                ssize_t r;
                while ((r = hb_conn_read(c)) > 0)
                    drain(L, c, now);
                if (r == 0 || r == -1) {
                    if (c->qn)
                        bad(L, r == 0 ? "server closed the connection with replies owed" : "read error", NULL, 0);
                    L->errors += c->qn ? c->qn - 1 : 0;
                    c->qn = 0;
                    c->dead = true;
                    epoll_ctl(L->epfd, EPOLL_CTL_DEL, c->fd, NULL);
                    continue;
                }
            }
            if (!paced)
                refill(L, c, now);
            hb_conn_flush(L->epfd, c);
        }
        if (paced) {
            pace(L, now);
            for (int i = 0; i < L->nc; i++)
                if (L->c[i]->out.len)
                    hb_conn_flush(L->epfd, L->c[i]);
        }
    }
    cpu_track(L, hb_now_ns(), true);
    uint64_t missing = outstanding(L);
    if (missing) {
        fprintf(stderr, "herd-bench: %" PRIu64 " replies never came\n", missing);
        L->errors += missing;
    }
    double secs;
    if (L->t_end == UINT64_MAX)
        secs = (double)(L->t_last_reply - L->t0) / 1e9;
    else
        secs = (double)(L->t_end - L->t_measure) / 1e9;
    double ops = (double)(L->t_end == UINT64_MAX ? L->answered : L->in_window);
    result_line(L, secs, secs > 0 ? ops / secs : 0, paced);
    for (int i = 0; i < L->nc; i++)
        hb_conn_free(L->epfd, &L->c[i]);
    free(L->c);
    close(L->epfd);
    return L->errors ? 3 : 0;
}

/* ---- one connection per command ---- */

typedef struct {
    int fd;
    int state;       /* 0 idle, 1 connecting, 2 reading */
    uint64_t start;  /* connect() time */
    hb_req_t rq;
    char cmd[512];
    size_t cmd_len;
    hb_buf_t in;
} slot_t;

static void slot_close(load_t *L, slot_t *s)
{
    if (s->fd >= 0) {
        epoll_ctl(L->epfd, EPOLL_CTL_DEL, s->fd, NULL);
        close(s->fd);
    }
    s->fd = -1;
    s->state = 0;
    s->in.off = s->in.len = 0;
}

static void slot_start(load_t *L, slot_t *s, const struct sockaddr *sa, socklen_t sl, uint64_t now)
{
    if (L->issued >= L->limit || now >= L->t_end)
        return;
    next_cmd(L, &s->rq, s->cmd, sizeof s->cmd, &s->cmd_len);
    s->start = s->rq.t_ns = now;
    s->fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->fd < 0) {
        bad(L, "socket failed", NULL, 0);
        return;
    }
    if (connect(s->fd, sa, sl) != 0 && errno != EINPROGRESS) {
        char why[128];
        snprintf(why, sizeof why, "connect failed: %s", strerror(errno));
        bad(L, why, NULL, 0);
        close(s->fd);
        s->fd = -1;
        return;
    }
    s->state = 1;
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = s};
    epoll_ctl(L->epfd, EPOLL_CTL_ADD, s->fd, &ev);
}

/* Connected: the whole command in one write, then the half-close. */
static void slot_send(load_t *L, slot_t *s)
{
    int err = 0;
    socklen_t el = sizeof err;
    getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &el);
    ssize_t n = err ? -1 : send(s->fd, s->cmd, s->cmd_len, MSG_NOSIGNAL);
    if (n != (ssize_t)s->cmd_len || shutdown(s->fd, SHUT_WR) != 0) {
        bad(L, "connect or send failed", NULL, 0);
        slot_close(L, s);
        return;
    }
    s->state = 2;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = s};
    epoll_ctl(L->epfd, EPOLL_CTL_MOD, s->fd, &ev);
}

/* Reads until the server closes; the whole input must be exactly one reply. */
static void slot_read(load_t *L, slot_t *s, uint64_t now)
{
    for (;;) {
        hb_buf_room(&s->in, 4096);
        ssize_t n = recv(s->fd, s->in.p + s->in.len, s->in.cap - s->in.len, 0);
        if (n > 0) {
            s->in.len += (size_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        break;
    }
    const char *r = s->in.p + s->in.off;
    size_t len = s->in.len - s->in.off;
    size_t rl = hb_reply_len(r, len, (int)s->rq.kind);
    if (!rl || rl != len || !reply_ok(L, s->cmd, s->cmd_len, r, len)) {
        bad(L, "unexpected one-shot reply", r, len);
    } else {
        L->answered++;
        L->t_last_reply = now;
        if (now >= L->t_measure && now <= L->t_end) {
            L->in_window++;
            hb_hist_add(L->lat, now - s->start);
        }
    }
    slot_close(L, s);
}

static int run_oneshot(load_t *L)
{
    const hb_opts_t *o = L->o;
    struct sockaddr_storage ss;
    socklen_t sl;
    if (hb_resolve(L->host, L->port, &ss, &sl) != 0) {
        fprintf(stderr, "herd-bench: cannot resolve %s\n", L->host);
        return 1;
    }
    hb_raise_nofile(o->conns + 64);
    L->epfd = epoll_create1(EPOLL_CLOEXEC);
    L->nc = o->conns;
    slot_t *slots = calloc((size_t)o->conns, sizeof *slots);
    uint64_t now = hb_now_ns();
    set_window(L, o, now);
    for (int i = 0; i < o->conns; i++) {
        slots[i].fd = -1;
        slot_start(L, &slots[i], (struct sockaddr *)&ss, sl, now);
    }
    struct epoll_event ev[MAX_EV];
    uint64_t deadline = 0;
    for (;;) {
        now = hb_now_ns();
        cpu_track(L, now, false);
        int busy = 0;
        for (int i = 0; i < o->conns; i++)
            busy += slots[i].fd >= 0;
        bool issuing = L->issued < L->limit && now < L->t_end;
        if (!busy && !issuing)
            break;
        if (!issuing && !deadline)
            deadline = now + (uint64_t)(o->timeout * 1e9);
        if (deadline && now >= deadline) {
            L->errors += (uint64_t)busy;
            fprintf(stderr, "herd-bench: %d one-shot commands never finished\n", busy);
            break;
        }
        int64_t wait = deadline ? (int64_t)(deadline - now) : L->t_end != UINT64_MAX ? (int64_t)(L->t_end - now) : -1;
        if (issuing && busy < o->conns && (wait < 0 || wait > 1000000))
            wait = 1000000; /* a slot whose connect failed tries again in 1 ms */
        int n = hb_wait(L->epfd, ev, MAX_EV, wait);
        now = hb_now_ns();
        for (int i = 0; i < n; i++) {
            slot_t *s = ev[i].data.ptr;
            if (s->state == 1)
                slot_send(L, s);
            else if (s->state == 2)
                slot_read(L, s, now);
            if (s->state == 0)
                slot_start(L, s, (struct sockaddr *)&ss, sl, now);
        }
        /* Slots whose start failed are retried here. */
        for (int i = 0; i < o->conns; i++)
            if (slots[i].state == 0)
                slot_start(L, &slots[i], (struct sockaddr *)&ss, sl, now);
    }
    cpu_track(L, hb_now_ns(), true);
    double secs = L->t_end == UINT64_MAX ? (double)(L->t_last_reply - L->t0) / 1e9
                                         : (double)(L->t_end - L->t_measure) / 1e9;
    double ops = (double)(L->t_end == UINT64_MAX ? L->answered : L->in_window);
    result_line(L, secs, secs > 0 ? ops / secs : 0, false);
    for (int i = 0; i < o->conns; i++) {
        slot_close(L, &slots[i]);
        hb_buf_free(&slots[i].in);
    }
    free(slots);
    close(L->epfd);
    return L->errors ? 3 : 0;
}

int hb_mode_load(const hb_opts_t *o)
{
    load_t L = {.o = o, .host = o->host, .port = o->port, .rng = o->seed * 2 + 88172645463325252ULL};
    if (!L.port && o->server) {
        L.port = hb_server_port(o, o->server, &L.host);
        if (L.port < 0)
            return 1;
    }
    if (!L.port) {
        fprintf(stderr, "herd-bench: load needs --port or --config with --server\n");
        return 1;
    }
    if (strcmp(o->workload, "iamat") && strcmp(o->workload, "whatsat") && strcmp(o->workload, "mix")) {
        fprintf(stderr, "herd-bench: --workload must be iamat, whatsat or mix\n");
        return 1;
    }
    if (strcmp(o->workload, "iamat") && !o->no_fill) {
        uint64_t t = hb_now_ns();
        long badn = hb_fill(o, L.host, L.port, 0, o->keys, NULL, NULL);
        if (badn != 0) {
            fprintf(stderr, "herd-bench: storing the %" PRIu64 " clients failed (%ld bad replies)\n", o->keys, badn);
            return 1;
        }
        hb_say(o, "stored %" PRIu64 " clients in %.3f s", o->keys, (double)(hb_now_ns() - t) / 1e9);
    }
    L.limit = o->count ? o->count : UINT64_MAX;
    L.lat = hb_hist_new();
    int rc = o->oneshot ? run_oneshot(&L) : run_persistent(&L);
    hb_hist_free(&L.lat);
    if (L.lag)
        hb_hist_free(&L.lag);
    return rc;
}
