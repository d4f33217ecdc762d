/* herd-bench: storing many clients, and checking which a server holds.
 * Both keep a window of commands in flight on each connection, so a pass
 * over 100,000 clients costs round trips only at its two ends. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "herd_bench.h"

#define FILL_CONNS  4
#define FILL_WINDOW 256  /* IAMATs in flight per connection */
/* WHATSATs in flight. The server holds the answers that are ready early
 * (a Places cache hit) until the ones before them are, and cuts a client
 * whose held and unsent answers pass limits.max_output_bytes: keep the
 * window small enough that this never comes near. */
#define CHECK_WINDOW 64

long hb_fill(const hb_opts_t *o, const char *host, int port, uint64_t first, uint64_t n, char **ats,
             uint64_t *at_bytes)
{
    if (!n)
        return 0;
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    int nc = n < FILL_CONNS ? (int)n : FILL_CONNS;
    hb_conn_t *c[FILL_CONNS] = {0};
    for (int i = 0; i < nc; i++) {
        int fd = hb_connect(host, port);
        if (fd < 0) {
            fprintf(stderr, "herd-bench: connect %s:%d: %s\n", host, port, strerror(errno));
            for (int k = 0; k < i; k++)
                hb_conn_free(epfd, &c[k]);
            close(epfd);
            return -1;
        }
        c[i] = hb_conn_new(epfd, fd, i);
    }
    uint64_t next = first, end = first + n, done = 0;
    long badn = 0;
    uint64_t last_progress = hb_now_ns();
    struct epoll_event ev[FILL_CONNS];
    for (;;) {
        for (int i = 0; i < nc; i++) {
            while (!c[i]->dead && c[i]->qn < FILL_WINDOW && next < end) {
                char cmd[512];
                hb_req_t rq = {.key = next++, .kind = HB_IAMAT, .tm = hb_next_time()};
                size_t len = hb_fmt_iamat(o, rq.key, rq.tm, cmd, sizeof cmd);
                hb_conn_send(c[i], cmd, len, &rq);
            }
            hb_conn_flush(epfd, c[i]);
        }
        if (done == n)
            break;
        uint64_t now = hb_now_ns();
        if (now - last_progress > (uint64_t)(o->timeout * 1e9)) {
            fprintf(stderr, "herd-bench: fill: no reply for %.0f s\n", o->timeout);
            badn += (long)(n - done);
            break;
        }
        int k = hb_wait(epfd, ev, FILL_CONNS, 1000000000);
        for (int e = 0; e < k; e++) {
            hb_conn_t *x = ev[e].data.ptr;
            ssize_t r;
            while ((r = hb_conn_read(x)) > 0) {
                const char *rep, *cmd;
                size_t len, cmd_len;
                while (hb_conn_reply(x, &rep, &len, &cmd, &cmd_len)) {
                    hb_req_t *rq = hb_conn_head(x);
                    char status[8];
                    bool ok = hb_check_reply(o, cmd, cmd_len, rep, len, status, sizeof status);
                    if (!ok) {
                        if (badn < 5)
                            fprintf(stderr, "herd-bench: fill: unexpected reply: %.*s", (int)len, rep);
                        badn++;
                    } else {
                        if (ats)
                            ats[rq->key - first] = strndup(rep, len - 1);
                        if (at_bytes)
                            *at_bytes += len - 1;
                    }
                    done++;
                    last_progress = hb_now_ns();
                    hb_conn_pop(x, len);
                }
            }
            if (r == 0 || r == -1) {
                fprintf(stderr, "herd-bench: fill: the server closed a connection\n");
                badn += (long)x->qn;
                done += x->qn;
                x->qn = 0;
                x->dead = true;
                epoll_ctl(epfd, EPOLL_CTL_DEL, x->fd, NULL);
                bool any = false;
                for (int i = 0; i < nc; i++)
                    any |= !c[i]->dead;
                if (!any) {
                    badn += (long)(end - next);
                    done = n;
                }
            }
        }
    }
    for (int i = 0; i < nc; i++)
        hb_conn_free(epfd, &c[i]);
    close(epfd);
    return badn;
}

long hb_check_keys(const hb_opts_t *o, const char *host, int port, const uint64_t *keys, size_t n,
                   char *const *ats, bool *found, uint64_t *t_last)
{
    int fd = hb_connect(host, port);
    if (fd < 0)
        return -1;
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    hb_conn_t *c = hb_conn_new(epfd, fd, 0);
    size_t next = 0;
    long missing = 0;
    uint64_t last_progress = hb_now_ns();
    struct epoll_event ev[1];
    for (;;) {
        while (c->qn < CHECK_WINDOW && next < n) {
            size_t i = next++;
            if (found[i])
                continue;
            char cmd[512];
            hb_req_t rq = {.key = keys[i], .kind = HB_WHATSAT, .tag = (uint32_t)i};
            size_t len = hb_fmt_whatsat(o, rq.key, cmd, sizeof cmd);
            hb_conn_send(c, cmd, len, &rq);
        }
        hb_conn_flush(epfd, c);
        if (!c->qn && next == n)
            break;
        if (c->dead || hb_now_ns() - last_progress > (uint64_t)(o->timeout * 1e9)) {
            missing = -1;
            break;
        }
        int k = hb_wait(epfd, ev, 1, 1000000000);
        if (k <= 0)
            continue;
        ssize_t r;
        while ((r = hb_conn_read(c)) > 0) {
            const char *rep, *cmd;
            size_t len, cmd_len;
            uint64_t now = hb_now_ns();
            while (hb_conn_reply(c, &rep, &len, &cmd, &cmd_len)) {
                hb_req_t *rq = hb_conn_head(c);
                size_t i = rq->tag;
                const char *nl = memchr(rep, '\n', len);
                size_t ll = (size_t)(nl - rep);
                bool hit;
                if (ats) {
                    hit = ats[i] && strlen(ats[i]) == ll && memcmp(ats[i], rep, ll) == 0;
                } else {
                    const char *id;
                    size_t idl = hb_cmd_id(cmd, cmd_len, &id);
                    hit = hb_check_at(rep, ll, NULL, id, idl);
                }
                if (hit) {
                    found[i] = true;
                    if (t_last)
                        *t_last = now;
                }
                last_progress = now;
                hb_conn_pop(c, len);
            }
        }
        if (r == 0 || r == -1) {
            missing = -1;
            break;
        }
    }
    if (missing == 0)
        for (size_t i = 0; i < n; i++)
            missing += !found[i];
    hb_conn_free(epfd, &c);
    close(epfd);
    return missing;
}
