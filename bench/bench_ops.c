/* herd-bench rejoin, conns and mem: the operational figures.
 *
 * rejoin: starts the victim server itself, stores K clients through another
 * server, waits until every server holds the last of them, SIGKILLs the
 * victim and starts it again at once. The figure is the time from the
 * restart (just before fork) until the victim has answered WHATSAT with the
 * exact AT line of every one of the K clients. The check runs in passes over
 * the clients not yet found, WHATSATs pipelined on one connection, and ends
 * when the last one is found: unknown clients cost the server only a table
 * miss, so the passes follow the table as it fills. The victim's own log
 * says when each neighbour's table arrived; that is reported too.
 *
 * conns: opens N connections to one server and keeps them all open, then
 * sends one IAMAT on every one of them at once and checks every reply.
 *
 * mem: stores clients in steps and reads the server's VmRSS at each. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "herd_bench.h"
#include "herd_topology.h"

#define MAX_SERVERS 64

/* The server this process started, so that a signal (a time limit running
 * out) does not leave it behind. */
static volatile pid_t started_pid;

static void on_fatal_signal(int sig)
{
    if (started_pid > 0)
        kill(started_pid, SIGKILL);
    signal(sig, SIG_DFL);
    raise(sig);
}

static pid_t start_tracked(const hb_opts_t *o, uint64_t *t_start, uint64_t *t_ready)
{
    pid_t pid = hb_start_server(o, o->server, t_start, t_ready);
    started_pid = pid;
    return pid;
}

/* Waits until host:port answers the last key with its exact AT line. */
static bool wait_for_key(const hb_opts_t *o, const char *host, int port, uint64_t key, char *const *at)
{
    uint64_t deadline = hb_now_ns() + (uint64_t)(o->timeout * 1e9);
    while (hb_now_ns() < deadline) {
        bool found = false;
        if (hb_check_keys(o, host, port, &key, 1, at, &found, NULL) == 0)
            return true;
        hb_sleep_ns(1000000);
    }
    return false;
}

/* Parses a log stamp "YYYY-MM-DDTHH:MM:SS.uuuuuuZ" into ns since the epoch. */
static uint64_t log_stamp_ns(const char *s)
{
    struct tm tm = {0};
    int us = 0;
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d.%6dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
               &tm.tm_sec, &us) != 7)
        return 0;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (uint64_t)timegm(&tm) * 1000000000u + (uint64_t)us * 1000u;
}

/* Reads the victim's log for "repair: exchange with X done (N records sent
 * to us)" lines after `since` (realtime ns) and appends their times relative
 * to it to kv. */
static void log_tables(const hb_opts_t *o, const char *name, uint64_t since, char *kv, size_t cap)
{
    char path[1024];
    const char *dir = o->log_dir;
    char errb[256];
    herd_topology_t *t = NULL;
    if (!dir) {
        t = herd_topology_load(o->config, errb, sizeof errb);
        dir = t ? t->log_dir : ".";
    }
    snprintf(path, sizeof path, "%s/%s.log", dir, name);
    FILE *f = fopen(path, "r");
    herd_topology_destroy(&t);
    if (!f)
        return;
    char line[2048];
    int k = 0;
    while (fgets(line, sizeof line, f)) {
        const char *who = strstr(line, "repair: exchange with ");
        const char *m = who ? strstr(who, " done (") : NULL;
        if (!m)
            continue;
        uint64_t ts = log_stamp_ns(line);
        if (ts < since)
            continue;
        unsigned long long recs = strtoull(m + 7, NULL, 10);
        char nb[80] = "";
        sscanf(who + 22, "%79s", nb);
        size_t n = strlen(kv);
        snprintf(kv + n, cap - n, " table%d_from=%s table%d_records=%llu table%d_ms=%.1f", k, nb, k, recs, k,
                 (double)(ts - since) / 1e6);
        k++;
    }
    fclose(f);
}

static uint64_t realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int hb_mode_rejoin(const hb_opts_t *o)
{
    if (!o->server_bin || !o->config || !o->server) {
        fprintf(stderr, "herd-bench: rejoin needs --server-bin, --config and --server (the victim)\n");
        return 1;
    }
    const char *names[MAX_SERVERS];
    int ports[MAX_SERVERS];
    size_t ns = hb_other_servers(o, NULL, names, ports, MAX_SERVERS);
    const char *fill = o->fill;
    for (size_t i = 0; !fill && i < ns; i++)
        if (strcmp(names[i], o->server))
            fill = names[i];
    const char *vhost, *fhost;
    int vport = hb_server_port(o, o->server, &vhost), fport = fill ? hb_server_port(o, fill, &fhost) : -1;
    if (vport < 0 || fport < 0)
        return 1;
    uint64_t K = o->keys;
    uint64_t t_start, t_ready;
    struct sigaction sa = {.sa_handler = on_fatal_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    pid_t pid = start_tracked(o, &t_start, &t_ready);
    if (pid < 0)
        return 1;
    int rc = 1;
    char **ats = calloc(K, sizeof *ats);
    uint64_t *keys = malloc(K * sizeof *keys);
    bool *found = calloc(K, 1);
    for (uint64_t i = 0; i < K; i++)
        keys[i] = i;
    uint64_t t = hb_now_ns();
    long badn = hb_fill(o, fhost, fport, 0, K, ats, NULL);
    if (badn != 0) {
        fprintf(stderr, "herd-bench: storing %" PRIu64 " clients at %s failed\n", K, fill);
        goto out;
    }
    double fill_s = (double)(hb_now_ns() - t) / 1e9;
    for (size_t i = 0; i < ns; i++) {
        const char *h;
        int p = hb_server_port(o, names[i], &h);
        if (!wait_for_key(o, h, p, K - 1, &ats[K - 1])) {
            fprintf(stderr, "herd-bench: %s never got the last client\n", names[i]);
            goto out;
        }
    }
    double spread_s = (double)(hb_now_ns() - t) / 1e9 - fill_s;
    hb_say(o, "stored %" PRIu64 " clients at %s in %.3f s; every server had the last one %.3f s later", K, fill,
           fill_s, spread_s);

    hb_stop_server(pid, true);
    uint64_t rt_start = realtime_ns();
    pid = start_tracked(o, &t_start, &t_ready);
    if (pid < 0)
        goto out;
    uint64_t t_last = 0, first_pass_found = 0;
    long miss = -1;
    int passes = 0;
    uint64_t deadline = t_start + (uint64_t)(o->timeout * 1e9);
    while (hb_now_ns() < deadline) {
        miss = hb_check_keys(o, vhost, vport, keys, K, ats, found, &t_last);
        if (miss < 0) { /* not listening yet, or the connection broke */
            hb_sleep_ns(200000);
            continue;
        }
        if (passes++ == 0)
            first_pass_found = K - (uint64_t)miss;
        if (miss == 0)
            break;
    }
    char kv[2048];
    double whole_ms = miss == 0 ? (double)(t_last - t_start) / 1e6 : -1;
    snprintf(kv, sizeof kv,
             "victim=%s fill=%s keys=%" PRIu64 " fill_s=%.3f ready_ms=%.1f whole_ms=%.1f passes=%d first_pass_found=%" PRIu64
             " missing=%ld",
             o->server, fill, K, fill_s, (double)(t_ready - t_start) / 1e6, whole_ms, passes, first_pass_found, miss);
    log_tables(o, o->server, rt_start, kv, sizeof kv);
    hb_say(o, "%s restarted: READY after %.1f ms, answered for all %" PRIu64 " clients after %.1f ms (%d passes)",
           o->server, (double)(t_ready - t_start) / 1e6, K, whole_ms, passes);
    hb_result(o, kv);
    rc = miss == 0 ? 0 : 3;
out:
    hb_stop_server(pid, false);
    started_pid = 0;
    for (uint64_t i = 0; i < K; i++)
        free(ats[i]);
    free(ats);
    free(keys);
    free(found);
    return rc;
}

/* ---- conns ---- */

int hb_mode_conns(const hb_opts_t *o)
{
    const char *host = o->host;
    int port = o->port ? o->port : o->server ? hb_server_port(o, o->server, &host) : 0;
    if (port <= 0) {
        fprintf(stderr, "herd-bench: conns needs --port or --config with --server\n");
        return 1;
    }
    int N = o->conns;
    long lim = hb_raise_nofile(N + 64);
    if (lim < N + 16) {
        fprintf(stderr, "herd-bench: cannot have %d descriptors (limit %ld)\n", N + 16, lim);
        return 1;
    }
    long rss_before = o->npids > 0 ? hb_rss_kb(o->pids[0]) : -1;
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    hb_conn_t **c = calloc((size_t)N, sizeof *c);
    uint64_t t0 = hb_now_ns();
    int opened = 0;
    for (; opened < N; opened++) {
        int fd = hb_connect(host, port);
        if (fd < 0) {
            fprintf(stderr, "herd-bench: connection %d: %s\n", opened, strerror(errno));
            break;
        }
        c[opened] = hb_conn_new(epfd, fd, opened);
    }
    double open_s = (double)(hb_now_ns() - t0) / 1e9;
    hb_say(o, "opened %d connections in %.3f s", opened, open_s);
    uint64_t errors = (uint64_t)(N - opened);
    char kv[2048];
    snprintf(kv, sizeof kv, "conns=%d opened=%d open_s=%.3f", N, opened, open_s);
    int rounds = o->count ? (int)o->count : 2;
    struct epoll_event ev[512];
    for (int round = 0; round < rounds; round++) {
        hb_hist_t *lat = hb_hist_new();
        uint64_t ts = hb_now_ns();
        for (int i = 0; i < opened; i++) {
            char cmd[512];
            hb_req_t rq = {.t_ns = hb_now_ns(), .key = (uint64_t)i, .kind = HB_IAMAT, .tm = hb_next_time()};
            size_t len = hb_fmt_iamat(o, rq.key, rq.tm, cmd, sizeof cmd);
            hb_conn_send(c[i], cmd, len, &rq);
            hb_conn_flush(epfd, c[i]);
        }
        uint64_t got = 0, bad = 0, want = 0, last = hb_now_ns();
        for (int i = 0; i < opened; i++)
            want += !c[i]->dead;
        while (got + bad < want && hb_now_ns() - last < (uint64_t)(o->timeout * 1e9)) {
            int n = hb_wait(epfd, ev, 512, 1000000000);
            uint64_t now = hb_now_ns();
            for (int e = 0; e < n; e++) {
                hb_conn_t *x = ev[e].data.ptr;
                if (x->dead)
                    continue;
                if (ev[e].events & EPOLLOUT)
                    hb_conn_flush(epfd, x);
                ssize_t r;
                while ((r = hb_conn_read(x)) > 0) {
                    const char *rep, *cmd;
                    size_t len, cmd_len;
                    while (hb_conn_reply(x, &rep, &len, &cmd, &cmd_len)) {
                        hb_req_t *rq = hb_conn_head(x);
                        char status[8];
                        if (hb_check_reply(o, cmd, cmd_len, rep, len, status, sizeof status)) {
                            got++;
                            hb_hist_add(lat, now - rq->t_ns);
                        } else {
                            bad++;
                        }
                        last = now;
                        hb_conn_pop(x, len);
                    }
                }
                if (r == 0 || r == -1) {
                    bad += x->qn;
                    x->qn = 0;
                    x->dead = true;
                    epoll_ctl(epfd, EPOLL_CTL_DEL, x->fd, NULL);
                }
            }
        }
        double secs = (double)(hb_now_ns() - ts) / 1e9;
        errors += bad + (want - got - bad);
        hb_say(o, "round %d: %" PRIu64 " of %d connections answered in %.3f s (p50 %.1f ms, p99 %.1f ms, max %.1f ms), "
                  "%" PRIu64 " bad",
               round + 1, got, opened, secs, hb_hist_quantile(lat, 0.5) / 1e6, hb_hist_quantile(lat, 0.99) / 1e6,
               lat->max / 1e6, bad);
        if (round == rounds - 1) {
            size_t k = strlen(kv);
            snprintf(kv + k, sizeof kv - k, " answered=%" PRIu64 " round_s=%.3f", got, secs);
            hb_hist_kv(lat, "lat", kv, sizeof kv);
        }
        hb_hist_free(&lat);
    }
    if (o->npids > 0 && opened > 0) {
        long rss = hb_rss_kb(o->pids[0]);
        size_t k = strlen(kv);
        snprintf(kv + k, sizeof kv - k, " server_rss_before_kb=%ld server_rss_kb=%ld bytes_per_conn=%.0f", rss_before,
                 rss, (double)(rss - rss_before) * 1024.0 / opened);
        hb_say(o, "server VmRSS %ld kB before, %ld kB with %d connections open (%.0f bytes each)", rss_before, rss,
               opened, (double)(rss - rss_before) * 1024.0 / opened);
    }
    size_t k = strlen(kv);
    snprintf(kv + k, sizeof kv - k, " errors=%" PRIu64, errors);
    hb_result(o, kv);
    for (int i = 0; i < opened; i++)
        hb_conn_free(epfd, &c[i]);
    free(c);
    close(epfd);
    return errors ? 3 : 0;
}

/* ---- mem ---- */

/* VmRSS once it has stopped moving (the server may still be busy flushing
 * its log or handling its neighbours' echoes of the fill). */
static long settled_rss(pid_t pid)
{
    long prev = hb_rss_kb(pid);
    for (int i = 0; i < 20; i++) {
        hb_sleep_ns(250000000);
        long now = hb_rss_kb(pid);
        if (now == prev)
            return now;
        prev = now;
    }
    return prev;
}

int hb_mode_mem(const hb_opts_t *o)
{
    const char *host = o->host;
    int port = o->port ? o->port : o->server ? hb_server_port(o, o->server, &host) : 0;
    if (port <= 0 || o->npids < 1 || !o->steps) {
        fprintf(stderr, "herd-bench: mem needs --pid, --steps and --port (or --config with --server)\n");
        return 1;
    }
    uint64_t have = 0, id_bytes = 0, at_bytes = 0;
    long rss0 = settled_rss(o->pids[0]);
    if (rss0 < 0) {
        fprintf(stderr, "herd-bench: cannot read /proc/%d/status\n", (int)o->pids[0]);
        return 1;
    }
    char kv[2048];
    snprintf(kv, sizeof kv, "rss0_kb=%ld", rss0);
    hb_say(o, "0 clients: VmRSS %ld kB", rss0);
    const char *p = o->steps;
    int rc = 0;
    while (*p) {
        char *end;
        uint64_t want = strtoull(p, &end, 10);
        if (end == p || (*end && *end != ',')) {
            fprintf(stderr, "herd-bench: bad --steps (numbers separated by commas)\n");
            return 1;
        }
        p = *end ? end + 1 : end;
        if (want <= have)
            continue;
        uint64_t t = hb_now_ns();
        long badn = hb_fill(o, host, port, have, want - have, NULL, &at_bytes);
        if (badn != 0) {
            fprintf(stderr, "herd-bench: storing clients failed (%ld bad)\n", badn);
            rc = 3;
            break;
        }
        double fill_s = (double)(hb_now_ns() - t) / 1e9;
        for (uint64_t k = have; k < want; k++) {
            char id[300];
            id_bytes += hb_fmt_id(o, k, id, sizeof id);
        }
        have = want;
        long rss = settled_rss(o->pids[0]);
        double per = (double)(rss - rss0) * 1024.0 / (double)have;
        double strings = (double)(id_bytes + at_bytes + have) / (double)have; /* id + AT line + NUL */
        hb_say(o, "%" PRIu64 " clients (stored in %.2f s): VmRSS %ld kB, %.1f bytes a client, of which %.1f are "
                  "the id and AT line, %.1f beyond them",
               have, fill_s, rss, per, strings, per - strings);
        size_t k = strlen(kv);
        snprintf(kv + k, sizeof kv - k,
                 " c%" PRIu64 "_rss_kb=%ld c%" PRIu64 "_bytes_per_client=%.1f c%" PRIu64 "_strings=%.1f c%" PRIu64
                 "_beyond=%.1f c%" PRIu64 "_fill_s=%.2f",
                 have, rss, have, per, have, strings, have, per - strings, have, fill_s);
    }
    hb_result(o, kv);
    return rc;
}
