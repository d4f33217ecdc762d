/* herd-floor: the least a server can do and still answer IAMAT like herd.
 *
 * One thread, epoll, non-blocking sockets. Each line is parsed and
 * validated with herd's own herd_proto_parse and answered with the AT line
 * that herd_proto_format_at makes from the clock ("AT <name> <skew> <id>
 * <pos> <time>"); anything else gets "? <line>". There is no table, no log,
 * no flooding and no Places: what herd does beyond this is what its
 * throughput is compared against. Replies to one read are written with one
 * send; a half-closed connection is closed once its replies are out.
 *
 *   herd-floor [--host H] [--port N] [--name NAME]     prints "READY NAME" */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "herd_proto.h"
#include "herd_time.h"

#define READ_CHUNK (64u * 1024u)

typedef struct {
    int fd;
    char *in;            /* a partial line */
    size_t in_len, in_cap;
    char *out;           /* replies not yet written */
    size_t out_off, out_len, out_cap;
    bool eof;            /* the client half-closed */
    uint32_t events;     /* epoll events registered */
} conn_t;

static volatile sig_atomic_t stop;
static const char *name = "Floor";
static size_t name_len = 5;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (!q) {
        fprintf(stderr, "herd-floor: out of memory\n");
        exit(1);
    }
    return q;
}

static void put(char **buf, size_t *len, size_t *cap, const char *data, size_t n)
{
    if (*len + n > *cap) {
        size_t c = *cap ? *cap : 4096;
        while (c < *len + n)
            c *= 2;
        *buf = xrealloc(*buf, c);
        *cap = c;
    }
    memcpy(*buf + *len, data, n);
    *len += n;
}

/* One line, without its LF or CR LF. */
static void answer(conn_t *c, const char *line, size_t len)
{
    herd_cmd_t cmd;
    herd_proto_parse(line, len, &cmd);
    if (cmd.kind == HERD_CMD_EMPTY)
        return;
    if (cmd.kind == HERD_CMD_IAMAT) {
        char at[HERD_AT_MAX + 1];
        size_t n = herd_proto_format_at(at, sizeof at - 1, name, name_len, herd_time_now(), &cmd);
        if (n) {
            at[n++] = '\n';
            put(&c->out, &c->out_len, &c->out_cap, at, n);
            return;
        }
    }
    put(&c->out, &c->out_len, &c->out_cap, "? ", 2);
    put(&c->out, &c->out_len, &c->out_cap, line, len > HERD_MAX_LINE ? HERD_MAX_LINE : len);
    put(&c->out, &c->out_len, &c->out_cap, "\n", 1);
}

/* Answers every complete line of data (after what c->in holds). */
static void feed(conn_t *c, const char *data, size_t len)
{
    size_t off = 0;
    if (c->in_len) {
        const char *nl = memchr(data, '\n', len);
        size_t take = nl ? (size_t)(nl - data) + 1 : len;
        put(&c->in, &c->in_len, &c->in_cap, data, take);
        off = take;
        if (!nl)
            return;
        size_t n = c->in_len - 1;
        if (n && c->in[n - 1] == '\r')
            n--;
        answer(c, c->in, n);
        c->in_len = 0;
    }
    while (off < len) {
        const char *line = data + off;
        const char *nl = memchr(line, '\n', len - off);
        if (!nl) {
            put(&c->in, &c->in_len, &c->in_cap, line, len - off);
            return;
        }
        size_t n = (size_t)(nl - line);
        off += n + 1;
        if (n && line[n - 1] == '\r')
            n--;
        answer(c, line, n);
    }
}

static void conn_free(int ep, conn_t *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->in);
    free(c->out);
    free(c);
}

/* Writes what it can; returns false when the connection is finished. */
static bool flush(int ep, conn_t *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        } else {
            return false;
        }
    }
    if (c->out_off == c->out_len) {
        c->out_off = c->out_len = 0;
        if (c->eof)
            return false;
    }
    uint32_t want = (c->eof ? 0 : EPOLLIN) | (c->out_len ? EPOLLOUT : 0);
    if (want != c->events) {
        struct epoll_event ev = {.events = want, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        c->events = want;
    }
    return true;
}

static int listen_on(const char *host, int port)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    if (getaddrinfo(host, ps, &hints, &res) != 0)
        return -1;
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 4096) != 0) {
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    int port = 9999;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--host") && i + 1 < argc)
            host = argv[++i];
        else if (!strcmp(argv[i], "--port") && i + 1 < argc)
            port = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--name") && i + 1 < argc)
            name = argv[++i];
        else {
            fprintf(stderr, "usage: herd-floor [--host H] [--port N] [--name NAME]\n");
            return 2;
        }
    }
    name_len = strlen(name);
    if (name_len < 1 || name_len > HERD_MAX_NAME) {
        fprintf(stderr, "herd-floor: the name must be 1 to %d bytes\n", HERD_MAX_NAME);
        return 2;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int lfd = listen_on(host, port);
    if (lfd < 0) {
        fprintf(stderr, "herd-floor: cannot listen on %s:%d: %s\n", host, port, strerror(errno));
        return 2;
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
    printf("READY %s\n", name);
    fflush(stdout);

    char *rbuf = malloc(READ_CHUNK);
    struct epoll_event ev[256];
    while (!stop) {
        int n = epoll_wait(ep, ev, 256, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("herd-floor: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            conn_t *c = ev[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    int one = 1;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    conn_t *nc = calloc(1, sizeof *nc);
                    if (!nc) {
                        close(fd);
                        continue;
                    }
                    nc->fd = fd;
                    nc->events = EPOLLIN;
                    struct epoll_event cev = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
                }
                continue;
            }
            bool alive = true;
            if (ev[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                ssize_t r = recv(c->fd, rbuf, READ_CHUNK, 0);
                if (r > 0) {
                    feed(c, rbuf, (size_t)r);
                } else if (r == 0) {
                    c->eof = true;
                    if (c->in_len) {
                        answer(c, c->in, c->in_len);
                        c->in_len = 0;
                    }
                } else if (errno != EAGAIN && errno != EINTR) {
                    alive = false;
                }
            }
            if (alive)
                alive = flush(ep, c);
            if (!alive)
                conn_free(ep, c);
        }
    }
    close(lfd);
    close(ep);
    free(rbuf);
    return 0;
}
