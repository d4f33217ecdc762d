/* herd_frontend_accept: the front end's listener: binding the client port,
 * accepting connections, and refusing them past limits.max_clients,
 * limits.max_clients_per_address or when descriptors run out (logged with
 * the peer and the limit, at most a few lines a second per reason, and
 * counted). See herd_frontend_int.h. */
#define _GNU_SOURCE /* accept4 */
#include "herd_frontend_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <czmq.h>

#define ACCEPT_BURST 256 /* connections accepted per turn */

/* Open connections from one IP address (the value of fe->addrs, keyed by
 * the address's text; fe->serials maps each open connection's serial to
 * its entry, so that its end can be counted without its address). */
typedef struct {
    long open;                      /* connections open from it */
    char host[INET6_ADDRSTRLEN];    /* the key */
} fe_addr_t;

/* The IP address of a peer as text (an IPv4-mapped IPv6 address as IPv4,
 * so that one client counts once whichever way it came). */
static void peer_host(const struct sockaddr_storage *ss, char *buf, size_t cap)
{
    snprintf(buf, cap, "?");
    if (ss->ss_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, buf, (socklen_t)cap);
    } else if (ss->ss_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a))
            inet_ntop(AF_INET, &a->s6_addr[12], buf, (socklen_t)cap);
        else
            inet_ntop(AF_INET6, a, buf, (socklen_t)cap);
    }
}

static void addr_destroy(void **item)
{
    free(*item);
    *item = NULL;
}

/* Connections open from host now. */
static long addr_open(herd_frontend_t *fe, const char *host)
{
    fe_addr_t *a = fe->addrs ? zhashx_lookup(fe->addrs, host) : NULL;
    return a ? a->open : 0;
}

/* Counts one more connection (serial) from host. Out of memory it is not
 * counted: the cap errs on the side of serving. */
static void addr_take(herd_frontend_t *fe, const char *host, uint64_t serial)
{
    if (!fe->addrs) {
        fe->addrs = zhashx_new();
        fe->serials = zhashx_new();
        if (!fe->addrs || !fe->serials) {
            fe_addr_free(fe);
            return;
        }
        zhashx_set_destructor(fe->addrs, addr_destroy);
    }
    fe_addr_t *a = zhashx_lookup(fe->addrs, host);
    if (!a) {
        a = calloc(1, sizeof *a);
        if (!a)
            return;
        snprintf(a->host, sizeof a->host, "%s", host);
        if (zhashx_insert(fe->addrs, a->host, a) != 0) {
            free(a);
            return;
        }
    }
    char key[24];
    snprintf(key, sizeof key, "%llu", (unsigned long long)serial);
    if (zhashx_insert(fe->serials, key, a) == 0)
        a->open++;
    else if (a->open == 0) {
        char h[sizeof a->host];
        memcpy(h, a->host, sizeof h);
        zhashx_delete(fe->addrs, h); /* frees a */
    }
}

void fe_addr_release(herd_frontend_t *fe, uint64_t serial)
{
    if (!fe->serials)
        return;
    char key[24];
    snprintf(key, sizeof key, "%llu", (unsigned long long)serial);
    fe_addr_t *a = zhashx_lookup(fe->serials, key);
    if (!a)
        return;
    zhashx_delete(fe->serials, key);
    if (--a->open <= 0) {
        char host[sizeof a->host];
        memcpy(host, a->host, sizeof host);
        zhashx_delete(fe->addrs, host); /* frees a */
    }
}

void fe_addr_free(herd_frontend_t *fe)
{
    zhashx_t *a = fe->addrs, *s = fe->serials;
    zhashx_destroy(&s);
    zhashx_destroy(&a);
    fe->addrs = fe->serials = NULL;
}

/* Formats a peer address for the log. */
static void describe_peer(const struct sockaddr_storage *ss, char *buf, size_t cap)
{
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        port = ntohs(a->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
        port = ntohs(a->sin6_port);
    }
    snprintf(buf, cap, "%s:%d", host, port);
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

/* accept4 failed with EMFILE or ENFILE (error e): gives up the spare
 * descriptor to accept and close one waiting connection, so the listener
 * does not stay readable forever, and logs it with the limit. Without a
 * spare, accepting pauses until the idle sweep can make one again. */
static void refuse_no_descriptors(herd_frontend_t *fe, int e)
{
    if (fe->reserve_fd >= 0) {
        close(fe->reserve_fd);
        fe->reserve_fd = -1;
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int shed = accept4(fe->listener.fd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
        if (shed >= 0) {
            close(shed);
            char peer[sizeof ((conn_t *)0)->peer];
            describe_peer(&ss, peer, sizeof peer);
            fe->refused_descriptors++;
            struct rlimit rl;
            if (e == EMFILE && getrlimit(RLIMIT_NOFILE, &rl) == 0)
                herd_log_limited(fe->log, &fe->lim_descriptors, "refused connection from %s: out of file descriptors "
                                 "(the process limit RLIMIT_NOFILE, %llu, is reached)",
                                 peer, (unsigned long long)rl.rlim_cur);
            else
                herd_log_limited(fe->log, &fe->lim_descriptors, "refused connection from %s: out of file descriptors "
                                 "(the system's file table, fs.file-max, is full)", peer);
        }
        fe->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    }
    if (fe->reserve_fd < 0 && !fe->accept_paused) {
        fe->accept_paused = true;
        herd_loop_rewatch(fe->loop, &fe->listener, 0);
        herd_log_event(fe->log, "not accepting connections: out of file descriptors with none to spare");
    }
}

void fe_accept_ready(herd_loop_t *loop, herd_watch_t *w, uint32_t events)
{
    (void)events;
    (void)loop;
    herd_frontend_t *fe = w->arg;
    for (int i = 0; i < ACCEPT_BURST && fe->listener.fd >= 0; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(fe->listener.fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE)
                refuse_no_descriptors(fe, errno);
            break;
        }
        char peer[sizeof ((conn_t *)0)->peer];
        describe_peer(&ss, peer, sizeof peer);
        if ((long)fe->n_conns >= fe->conf.max_clients && fe->conf.on_full)
            fe->conf.on_full(fe->conf.arg);
        if ((long)fe->n_conns >= fe->conf.max_clients) {
            fe->refused_max_clients++;
            herd_log_limited(fe->log, &fe->lim_max_clients, "refused connection from %s: limits.max_clients (%ld) reached",
                             peer, fe->conf.max_clients);
            close(fd);
            continue;
        }
        char host[INET6_ADDRSTRLEN];
        peer_host(&ss, host, sizeof host);
        if (fe->conf.max_clients_per_address > 0 && addr_open(fe, host) >= fe->conf.max_clients_per_address) {
            fe->refused_per_address++;
            herd_log_limited(fe->log, &fe->lim_per_address,
                             "refused connection from %s: limits.max_clients_per_address (%ld) reached for %s", peer,
                             fe->conf.max_clients_per_address, host);
            close(fd);
            continue;
        }
        uint64_t serial = ++fe->next_serial;
        addr_take(fe, host, serial);
        if (fe->conf.on_accept) {
            fe->n_conns++; /* until herd_frontend_released */
            fe->conf.on_accept(fe->conf.arg, fd, serial, peer);
            continue;
        }
        if (herd_frontend_adopt(fe, fd, serial, peer) != 0)
            fe_addr_release(fe, serial);
    }
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
    c->watch = (herd_watch_t){.fd = fd, .fn = fe_conn_event, .arg = c};
    c->last_in_ms = herd_loop_now_ms(fe->loop);
    if (index_conn(fe, c) != 0 || herd_loop_watch(fe->loop, &c->watch, EPOLLIN) != 0) {
        if ((size_t)fd < fe->by_fd_cap)
            fe->by_fd[fd] = NULL;
        close(fd);
        free(c);
        return -1;
    }
    fe_list_push(&fe->idle, c);
    fe->n_conns++;
    herd_log_event(fe->log, "conn %llu opened from %s", (unsigned long long)c->serial, peer);
    if (fe->draining) {
        c->closing = true;
        fe_mark_dirty(c);
    }
    return 0;
}

void herd_frontend_released(herd_frontend_t *fe, uint64_t conn)
{
    if (fe->n_conns > 0)
        fe->n_conns--;
    fe_addr_release(fe, conn >> 32);
}

int fe_bind_listener(const herd_frontend_conf_t *conf, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res = NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", conf->port);
    int gai = getaddrinfo(conf->host, port, &hints, &res);
    if (gai != 0) {
        snprintf(err, errlen, "cannot resolve client address %s: %s", conf->host, gai_strerror(gai));
        return -1;
    }
    int fd = -1, saved = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            saved = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 4096) == 0)
            break;
        saved = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        snprintf(err, errlen, "cannot bind client port %s:%d: %s", conf->host, conf->port, strerror(saved));
    return fd;
}
