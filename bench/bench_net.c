/* herd-bench: buffers, connections, server processes and output. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "herd_bench.h"
#include "herd_topology.h"

#define READ_ROOM (64u * 1024u) /* free bytes kept in an input buffer before each read */

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (!q) {
        fprintf(stderr, "herd-bench: out of memory\n");
        exit(1);
    }
    return q;
}

/* ---- buffers ---- */

/* Makes room for n more bytes after len, sliding live bytes to the front. */
void hb_buf_room(hb_buf_t *b, size_t n)
{
    if (b->off && (b->off == b->len || b->len + n > b->cap)) {
        memmove(b->p, b->p + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n)
            cap *= 2;
        b->p = xrealloc(b->p, cap);
        b->cap = cap;
    }
}

void hb_buf_put(hb_buf_t *b, const char *data, size_t n)
{
    hb_buf_room(b, n);
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

void hb_buf_free(hb_buf_t *b)
{
    free(b->p);
    *b = (hb_buf_t){0};
}

/* ---- connections ---- */

long hb_raise_nofile(long want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -1;
    if ((long)rl.rlim_cur >= want)
        return (long)rl.rlim_cur;
    if ((long)rl.rlim_max < want) {
        struct rlimit up = {(rlim_t)want, (rlim_t)want};
        if (setrlimit(RLIMIT_NOFILE, &up) == 0) /* root may raise the hard limit */
            return want;
    }
    rl.rlim_cur = (long)rl.rlim_max < want ? rl.rlim_max : (rlim_t)want;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
    return (long)rl.rlim_cur;
}

int hb_resolve(const char *host, int port, void *ss, socklen_t *sl)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    if (getaddrinfo(host, ps, &hints, &res) != 0 || !res)
        return -1;
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *sl = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

int hb_connect(const char *host, int port)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    if (hb_resolve(host, port, &ss, &sl) != 0) {
        errno = EINVAL;
        return -1;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&ss, sl) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

hb_conn_t *hb_conn_new(int epfd, int fd, int idx)
{
    hb_conn_t *c = calloc(1, sizeof *c);
    if (!c) {
        fprintf(stderr, "herd-bench: out of memory\n");
        exit(1);
    }
    c->fd = fd;
    c->idx = idx;
    c->ev = EPOLLIN;
    struct epoll_event ev = {.events = c->ev, .data.ptr = c};
    if (epfd >= 0 && epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        perror("herd-bench: epoll_ctl");
        exit(1);
    }
    return c;
}

void hb_conn_free(int epfd, hb_conn_t **p)
{
    hb_conn_t *c = *p;
    if (!c)
        return;
    if (c->fd >= 0) {
        if (epfd >= 0)
            epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    hb_buf_free(&c->in);
    hb_buf_free(&c->out);
    hb_buf_free(&c->sent);
    free(c->q);
    free(c);
    *p = NULL;
}

void hb_conn_send(hb_conn_t *c, const char *cmd, size_t len, const hb_req_t *req)
{
    hb_buf_put(&c->out, cmd, len);
    hb_buf_put(&c->sent, cmd, len);
    if (c->qn == c->qcap) {
        size_t cap = c->qcap ? c->qcap * 2 : 64;
        hb_req_t *q = xrealloc(NULL, cap * sizeof *q);
        for (size_t i = 0; i < c->qn; i++)
            q[i] = c->q[(c->qh + i) % c->qcap];
        free(c->q);
        c->q = q;
        c->qh = 0;
        c->qcap = cap;
    }
    c->q[(c->qh + c->qn) % c->qcap] = *req;
    c->q[(c->qh + c->qn) % c->qcap].cmd_len = (uint32_t)len;
    c->qn++;
}

static void set_events(int epfd, hb_conn_t *c, uint32_t ev)
{
    if (c->ev == ev || epfd < 0)
        return;
    struct epoll_event e = {.events = ev, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &e);
    c->ev = ev;
}

int hb_conn_flush(int epfd, hb_conn_t *c)
{
    if (c->dead)
        return -1;
    while (c->out.len > c->out.off) {
        ssize_t n = send(c->fd, c->out.p + c->out.off, c->out.len - c->out.off, MSG_NOSIGNAL);
        if (n > 0) {
            c->out.off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        c->dead = true;
        return -1;
    }
    if (c->out.off == c->out.len)
        c->out.off = c->out.len = 0;
    set_events(epfd, c, c->out.len ? EPOLLIN | EPOLLOUT : EPOLLIN);
    return 0;
}

ssize_t hb_conn_read(hb_conn_t *c)
{
    hb_buf_room(&c->in, READ_ROOM);
    for (;;) {
        ssize_t n = recv(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len, 0);
        if (n > 0) {
            c->in.len += (size_t)n;
            return n;
        }
        if (n == 0) {
            c->eof = true;
            return 0;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return -2; /* nothing now: not an error */
        c->dead = true;
        return -1;
    }
}

hb_req_t *hb_conn_head(hb_conn_t *c)
{
    return c->qn ? &c->q[c->qh] : NULL;
}

int hb_conn_reply(hb_conn_t *c, const char **r, size_t *len, const char **cmd, size_t *cmd_len)
{
    hb_req_t *h = hb_conn_head(c);
    if (!h || c->in.len == c->in.off)
        return 0;
    size_t n = hb_reply_len(c->in.p + c->in.off, c->in.len - c->in.off, (int)h->kind);
    if (!n)
        return 0;
    *r = c->in.p + c->in.off;
    *len = n;
    if (cmd) {
        *cmd = c->sent.p + c->sent.off;
        *cmd_len = h->cmd_len;
    }
    return 1;
}

void hb_conn_pop(hb_conn_t *c, size_t len)
{
    c->in.off += len;
    if (c->in.off == c->in.len)
        c->in.off = c->in.len = 0;
    c->sent.off += c->q[c->qh].cmd_len;
    if (c->sent.off == c->sent.len)
        c->sent.off = c->sent.len = 0;
    c->qh = (c->qh + 1) % c->qcap;
    c->qn--;
}

/* ---- topology and server processes ---- */

static herd_topology_t *load_topology(const hb_opts_t *o)
{
    static herd_topology_t *topo;
    if (topo)
        return topo;
    if (!o->config) {
        fprintf(stderr, "herd-bench: --config is needed to find servers by name\n");
        return NULL;
    }
    char err[512];
    topo = herd_topology_load(o->config, err, sizeof err);
    if (!topo)
        fprintf(stderr, "herd-bench: %s\n", err);
    return topo;
}

int hb_server_port(const hb_opts_t *o, const char *name, const char **host)
{
    herd_topology_t *topo = load_topology(o);
    if (!topo)
        return -1;
    long i = herd_topology_find(topo, name);
    if (i < 0) {
        fprintf(stderr, "herd-bench: %s has no server %s\n", o->config, name);
        return -1;
    }
    if (host)
        *host = topo->servers[i].host;
    return topo->servers[i].client_port;
}

size_t hb_other_servers(const hb_opts_t *o, const char *except, const char **names, int *ports, size_t cap)
{
    herd_topology_t *topo = load_topology(o);
    size_t n = 0;
    for (size_t i = 0; topo && i < topo->n_servers && n < cap; i++) {
        if (except && !strcmp(topo->servers[i].name, except))
            continue;
        names[n] = topo->servers[i].name;
        ports[n++] = topo->servers[i].client_port;
    }
    return n;
}

pid_t hb_start_server(const hb_opts_t *o, const char *name, uint64_t *t_start, uint64_t *t_ready)
{
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) != 0)
        return -1;
    *t_start = hb_now_ns();
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        dup2(pfd[1], 1);
        struct rlimit rl = {65536, 65536};
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0 && getrlimit(RLIMIT_NOFILE, &rl) == 0) {
            rl.rlim_cur = rl.rlim_max; /* no right to raise the hard limit: take all of it */
            setrlimit(RLIMIT_NOFILE, &rl);
        }
        signal(SIGPIPE, SIG_DFL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        const char *argv[8];
        int a = 0;
        argv[a++] = o->server_bin;
        argv[a++] = "--config";
        argv[a++] = o->config;
        if (o->log_dir) {
            argv[a++] = "--log-dir";
            argv[a++] = o->log_dir;
        }
        argv[a++] = name;
        argv[a] = NULL;
        execv(o->server_bin, (char *const *)argv);
        fprintf(stderr, "herd-bench: cannot run %s: %s\n", o->server_bin, strerror(errno));
        _exit(127);
    }
    close(pfd[1]);
    char line[256];
    size_t len = 0;
    uint64_t deadline = *t_start + (uint64_t)(o->timeout * 1e9);
    char want[128];
    snprintf(want, sizeof want, "READY %s\n", name);
    while (len < sizeof line - 1) {
        uint64_t now = hb_now_ns();
        if (now >= deadline)
            break;
        struct pollfd p = {.fd = pfd[0], .events = POLLIN};
        if (poll(&p, 1, (int)((deadline - now) / 1000000u) + 1) <= 0)
            continue;
        ssize_t n = read(pfd[0], line + len, sizeof line - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        line[len] = '\0';
        if (strstr(line, want)) {
            *t_ready = hb_now_ns();
            close(pfd[0]); /* the server ignores SIGPIPE; it prints nothing more */
            return pid;
        }
    }
    close(pfd[0]);
    fprintf(stderr, "herd-bench: %s did not print READY %s\n", o->server_bin, name);
    hb_stop_server(pid, true);
    return -1;
}

void hb_stop_server(pid_t pid, bool hard)
{
    if (pid <= 0)
        return;
    kill(pid, hard ? SIGKILL : SIGTERM);
    for (int i = 0; i < 1000; i++) { /* up to 10 s, then SIGKILL */
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return;
        hb_sleep_ns(10000000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

long hb_rss_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

double hb_proc_cpu_s(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* Fields after the command name, which may hold spaces: from the last ')'. */
    char *p = strrchr(buf, ')');
    unsigned long long ut, st;
    if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

double hb_self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           (double)ru.ru_stime.tv_usec / 1e6;
}

/* ---- output ---- */

void hb_say(const hb_opts_t *o, const char *fmt, ...)
{
    if (o->quiet)
        return;
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

void hb_result(const hb_opts_t *o, const char *kv)
{
    printf("RESULT mode=%s%s%s %s\n", o->mode, o->label ? " label=" : "", o->label ? o->label : "", kv);
    fflush(stdout);
}

int hb_wait(int epfd, void *events, int max, int64_t timeout_ns)
{
    static bool no_pwait2;
    if (!no_pwait2) {
        struct timespec ts = {.tv_sec = timeout_ns < 0 ? 0 : (time_t)(timeout_ns / 1000000000),
                              .tv_nsec = timeout_ns < 0 ? 0 : (long)(timeout_ns % 1000000000)};
        int n = epoll_pwait2(epfd, events, max, timeout_ns < 0 ? NULL : &ts, NULL);
        if (n >= 0 || errno != ENOSYS)
            return n;
        no_pwait2 = true;
    }
    int ms = timeout_ns < 0 ? -1 : (int)((timeout_ns + 999999) / 1000000);
    return epoll_wait(epfd, events, max, ms);
}
