/* herd_frontend_accept: the client port's listener, below the connections.
 * See herd_frontend_accept.h. */
#define _GNU_SOURCE /* accept4 */
#include "herd_frontend_accept.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdbool.h>
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

struct fe_acceptor_t {
    herd_loop_t *loop;
    herd_log_t *log;
    fe_acceptor_conf_t conf;
    herd_watch_t listener;   /* the listening socket (fd -1 once stopped) */
    int reserve_fd;          /* spare descriptor, given up to shed a connection at EMFILE */
    int timer;               /* timer id of the sweep */
    size_t n_open;           /* connections let in and not yet released */
    uint64_t next_serial;    /* serial for the next connection */
    zhashx_t *addrs;         /* "IP" -> fe_addr_t, connections open per address */
    zhashx_t *serials;       /* "serial" -> fe_addr_t of that connection */
    bool paused;             /* out of descriptors with no spare: not accepting for now */
    fe_refusals_t refused;   /* connections closed at accept, by reason */
    herd_log_limit_t lim_max_clients, lim_per_address, lim_descriptors; /* refusals' log lines */
};

static void addrs_free(fe_acceptor_t *fe);

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
static long addr_open(fe_acceptor_t *fe, const char *host)
{
    fe_addr_t *a = fe->addrs ? zhashx_lookup(fe->addrs, host) : NULL;
    return a ? a->open : 0;
}

/* Counts one more connection (serial) from host. Out of memory it is not
 * counted: the cap errs on the side of serving. */
static void addr_take(fe_acceptor_t *fe, const char *host, uint64_t serial)
{
    if (!fe->addrs) {
        fe->addrs = zhashx_new();
        fe->serials = zhashx_new();
        if (!fe->addrs || !fe->serials) {
            addrs_free(fe);
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

void fe_acceptor_release(fe_acceptor_t *fe, uint64_t serial)
{
    if (fe->n_open > 0)
        fe->n_open--;
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

static void addrs_free(fe_acceptor_t *fe)
{
    zhashx_destroy(&fe->serials);
    zhashx_destroy(&fe->addrs);
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

/* accept4 failed with EMFILE or ENFILE (error e): gives up the spare
 * descriptor to accept and close one waiting connection, so the listener
 * does not stay readable forever, and logs it with the limit. Without a
 * spare, accepting pauses until the idle sweep can make one again. */
static void refuse_no_descriptors(fe_acceptor_t *fe, int e)
{
    if (fe->reserve_fd >= 0) {
        close(fe->reserve_fd);
        fe->reserve_fd = -1;
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int shed = accept4(fe->listener.fd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
        if (shed >= 0) {
            close(shed);
            char peer[FE_PEER_MAX];
            describe_peer(&ss, peer, sizeof peer);
            fe->refused.descriptors++;
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
    if (fe->reserve_fd < 0 && !fe->paused) {
        fe->paused = true;
        herd_loop_rewatch(fe->loop, &fe->listener, 0);
        herd_log_event(fe->log, "not accepting connections: out of file descriptors with none to spare");
    }
}

static void accept_ready(herd_loop_t *loop, herd_watch_t *w, uint32_t events)
{
    (void)events;
    (void)loop;
    fe_acceptor_t *fe = w->arg;
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
        char peer[FE_PEER_MAX];
        describe_peer(&ss, peer, sizeof peer);
        if ((long)fe->n_open >= fe->conf.max_clients && fe->conf.on_full)
            fe->conf.on_full(fe->conf.arg);
        if ((long)fe->n_open >= fe->conf.max_clients) {
            fe->refused.max_clients++;
            herd_log_limited(fe->log, &fe->lim_max_clients, "refused connection from %s: limits.max_clients (%ld) reached",
                             peer, fe->conf.max_clients);
            close(fd);
            continue;
        }
        char host[INET6_ADDRSTRLEN];
        peer_host(&ss, host, sizeof host);
        if (fe->conf.max_clients_per_address > 0 && addr_open(fe, host) >= fe->conf.max_clients_per_address) {
            fe->refused.per_address++;
            herd_log_limited(fe->log, &fe->lim_per_address,
                             "refused connection from %s: limits.max_clients_per_address (%ld) reached for %s", peer,
                             fe->conf.max_clients_per_address, host);
            close(fd);
            continue;
        }
        uint64_t serial = ++fe->next_serial;
        addr_take(fe, host, serial);
        fe->n_open++; /* until fe_acceptor_release */
        fe->conf.on_accept(fe->conf.arg, fd, serial, peer);
    }
}

/* Binds and listens on the client port; returns the descriptor, or -1 with
 * err filled. */
static int bind_listener(const fe_acceptor_conf_t *conf, char *err, size_t errlen)
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

/* Resumes accepting once a spare descriptor can be had again; writes the
 * refusals' held log lines. */
static void sweep(herd_loop_t *loop, void *arg)
{
    fe_acceptor_t *fe = arg;
    herd_log_limited_flush(fe->log, &fe->lim_max_clients);
    herd_log_limited_flush(fe->log, &fe->lim_per_address);
    herd_log_limited_flush(fe->log, &fe->lim_descriptors);
    if (fe->paused && fe->listener.fd >= 0) {
        if (fe->reserve_fd < 0)
            fe->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fe->reserve_fd >= 0 && herd_loop_rewatch(loop, &fe->listener, EPOLLIN) == 0) {
            fe->paused = false;
            herd_log_event(fe->log, "accepting connections again");
        }
    }
}

fe_acceptor_t *fe_acceptor_new(herd_loop_t *loop, herd_log_t *log, const fe_acceptor_conf_t *conf, char *err,
                               size_t errlen)
{
    fe_acceptor_t *fe = calloc(1, sizeof *fe);
    if (!fe) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    fe->loop = loop;
    fe->log = log;
    fe->conf = *conf;
    fe->conf.host = NULL; /* only needed to bind; the topology it points into may be reloaded */
    fe->lim_max_clients = HERD_LOG_LIMIT_INIT("refusals for limits.max_clients");
    fe->lim_per_address = HERD_LOG_LIMIT_INIT("refusals for limits.max_clients_per_address");
    fe->lim_descriptors = HERD_LOG_LIMIT_INIT("refusals for want of file descriptors");
    fe->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int fd = bind_listener(conf, err, errlen);
    fe->listener = (herd_watch_t){.fd = fd, .fn = accept_ready, .arg = fe};
    if (fd < 0) {
        fe_acceptor_destroy(&fe);
        return NULL;
    }
    if (herd_loop_watch(loop, &fe->listener, EPOLLIN) != 0 ||
        (fe->timer = herd_loop_add_timer(loop, conf->sweep_ms, sweep, fe)) < 0) {
        snprintf(err, errlen, "cannot watch the client port: %s", strerror(errno));
        fe_acceptor_destroy(&fe);
        return NULL;
    }
    return fe;
}

void fe_acceptor_set_limits(fe_acceptor_t *fe, long max_clients, long max_clients_per_address)
{
    fe->conf.max_clients = max_clients;
    fe->conf.max_clients_per_address = max_clients_per_address;
}

void fe_acceptor_stop(fe_acceptor_t *fe)
{
    if (fe->listener.fd < 0)
        return;
    herd_loop_unwatch(fe->loop, &fe->listener);
    close(fe->listener.fd);
    fe->listener.fd = -1;
}

size_t fe_acceptor_open(const fe_acceptor_t *fe)
{
    return fe->n_open;
}

fe_refusals_t fe_acceptor_refusals(const fe_acceptor_t *fe)
{
    return fe->refused;
}

void fe_acceptor_destroy(fe_acceptor_t **p)
{
    if (!p || !*p)
        return;
    fe_acceptor_t *fe = *p;
    fe_acceptor_stop(fe);
    if (fe->timer > 0)
        herd_loop_remove_timer(fe->loop, fe->timer);
    if (fe->reserve_fd >= 0)
        close(fe->reserve_fd);
    addrs_free(fe);
    free(fe);
    *p = NULL;
}
