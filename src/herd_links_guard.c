/* herd_links_guard: the peer port's guard. See herd_links_int.h.
 *
 * Every decision about a connection is made inside libzmq, through ZAP
 * (ZeroMQ RFC 27): libzmq asks us about each handshake on our ROUTER, with
 * the NULL mechanism as well as CURVE once the ROUTER has a ZAP domain, and
 * closes the connection itself when we refuse. Nothing here touches a file
 * descriptor: the numbers in monitor events are only counted, because by
 * the time an event is read its descriptor may belong to someone else.
 *
 * With CURVE, only the neighbours' keys are let in, and the user id bound to
 * the connection is the neighbour's name, checked against every message
 * (herd_links.c). Without CURVE (loopback, or insecure links), a handshake
 * past the connection cap is refused. libzmq has no accept limit of its
 * own: a connection that never finishes its handshake is dropped after the
 * handshake window. Completed connections cannot be closed one by one
 * through libzmq's API, so two cases drop them all at once (a sweep: the
 * ROUTER is unbound and bound again, and every neighbour reconnects within
 * its retry interval): a neighbour that is running (our link to it is up)
 * but none of whose messages reach us, because another connection holds its
 * name; and completed handshakes that have held the cap for long. */
#include "herd_links_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <czmq.h>

/* Connections on the peer port beyond the neighbours' own: room for
 * reconnects and redials, not for a flood of strangers. */
#define PEER_CAP_BASE   64
#define PEER_CAP_PER_NB 4
#define LOCKOUT_MS      10000  /* a running neighbour unheard this long is locked out of its name */
#define FULL_MS         10000  /* the cap held this long by completed handshakes: sweep */
#define SWEEP_GAP_MS    30000  /* at most one sweep in this long */

bool links_log_ok(herd_links_t *links, links_log_kind_t kind, uint64_t *left_out)
{
    return herd_log_limit_take(&links->log_limit[kind], left_out);
}

void links_log_init(herd_links_t *links)
{
    static const char *const kinds[LINKS_LOG_KINDS] = {
        [LINKS_LOG_STRANGER] = "messages from strangers", [LINKS_LOG_BAD] = "undecodable peer messages",
        [LINKS_LOG_KEY] = "messages under another's key", [LINKS_LOG_REFUSED] = "refused peer connections",
        [LINKS_LOG_REPAIR] = "refused exchange requests", [LINKS_LOG_NAME] = "HELLOs under another name",
    };
    for (size_t k = 0; k < LINKS_LOG_KINDS; k++)
        links->log_limit[k] = HERD_LOG_LIMIT_INIT_N(kinds[k], LINKS_LOG_PER_SEC);
}

uint64_t links_log_left_out(const herd_links_t *links)
{
    uint64_t n = 0;
    for (size_t k = 0; k < LINKS_LOG_KINDS; k++)
        n += links->log_limit[k].left_out_total;
    return n;
}

const char *links_left_out(char *buf, size_t cap, uint64_t left_out)
{
    if (!left_out)
        return "";
    snprintf(buf, cap, " (%" PRIu64 " more like it left out)", left_out);
    return buf;
}

void *links_monitor_open(herd_links_t *links, void *sock, int events, herd_loop_fn *fn, void *arg)
{
    char ep[96];
    snprintf(ep, sizeof ep, "inproc://herd-monitor-%p-%u", (void *)links, links->monitor_seq++);
    void *monitor = zmq_socket(zsys_init(), ZMQ_PAIR);
    if (!monitor)
        return NULL;
    if (zmq_socket_monitor(sock, ep, events) != 0 || zmq_connect(monitor, ep) != 0 ||
        herd_loop_add_zmq(links->loop, monitor, fn, arg) != 0) {
        int e = errno;
        zmq_socket_monitor(sock, NULL, 0);
        zmq_close(monitor);
        errno = e;
        return NULL;
    }
    return monitor;
}

void links_monitor_close(herd_links_t *links, void *sock, void **monitor)
{
    if (!*monitor)
        return;
    herd_loop_remove_zmq(links->loop, *monitor);
    if (sock)
        zmq_socket_monitor(sock, NULL, 0);
    zmq_close(*monitor);
    *monitor = NULL;
}

bool links_monitor_read(void *monitor, uint16_t *event, uint32_t *value)
{
    zmq_msg_t ev;
    zmq_msg_init(&ev);
    if (zmq_msg_recv(&ev, monitor, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&ev);
        return false;
    }
    *event = 0;
    *value = 0;
    if (zmq_msg_size(&ev) >= 6) {
        memcpy(event, zmq_msg_data(&ev), 2);
        memcpy(value, (char *)zmq_msg_data(&ev) + 2, 4);
    }
    bool more = zmq_msg_more(&ev);
    zmq_msg_close(&ev);
    if (more) { /* second frame: the endpoint */
        zmq_msg_t addr;
        zmq_msg_init(&addr);
        zmq_msg_recv(&addr, monitor, ZMQ_DONTWAIT);
        zmq_msg_close(&addr);
    }
    return true;
}

/* Accept and disconnect events of the ROUTER: counted, nothing more. */
static void router_events(herd_loop_t *loop, void *arg)
{
    (void)loop;
    herd_links_t *links = arg;
    uint16_t event;
    uint32_t value;
    while (links_monitor_read(links->router_monitor, &event, &value)) {
        if (event == ZMQ_EVENT_DISCONNECTED) {
            if (links->peer_conns > 0)
                links->peer_conns--;
        } else if (event == ZMQ_EVENT_ACCEPTED) {
            links->peer_conns++;
        }
    }
}

/* The decision on one handshake: a ZAP status, its text, and the user id
 * bound to the connection. */
static const char *zap_decide(herd_links_t *links, zmq_msg_t *mech, zmq_msg_t *key, const char **text,
                              const char **user, links_log_kind_t *kind)
{
    *user = "";
    *kind = LINKS_LOG_REFUSED;
    if (zmq_msg_size(mech) == 5 && !memcmp(zmq_msg_data(mech), "CURVE", 5)) {
        if (key && zmq_msg_size(key) == 32)
            for (size_t i = 0; i < links->n_nb; i++)
                if (!memcmp(links->nb[i]->key_bin, zmq_msg_data(key), 32)) {
                    /* A neighbour's key is let in whatever the count: it
                     * is authenticated, and strangers cannot get this far. */
                    *user = links->nb[i]->name;
                    *text = "OK";
                    return "200";
                }
        if (links->rollout) {
            /* A key roll-out: a neighbour that has no key yet comes with
             * one of its run. It is bound to no name: its messages are
             * heard only under the names of neighbours without a key. */
            *text = "OK";
            return "200";
        }
        *text = "its key is not a neighbour's";
        return "400";
    }
    if (links->cert || zmq_msg_size(mech) != 4 || memcmp(zmq_msg_data(mech), "NULL", 4)) {
        *text = "not the mechanism of this peer port";
        return "400";
    }
    if (links->peer_conns > links->peer_cap) {
        links->peer_refused++;
        if (!links->full_since_ms)
            links->full_since_ms = herd_loop_now_ms(links->loop);
        *text = "the peer port is full";
        return "300";
    }
    links->full_since_ms = 0;
    *text = "OK";
    return "200";
}

/* Answers each ZAP request: version, request id, domain, address, routing
 * id (our own), mechanism, credentials -> version, request id, status, text,
 * user id, metadata. */
static void zap_ready(herd_loop_t *loop, void *arg)
{
    herd_links_t *links = arg;
    for (;;) {
        /* libzmq reports a connection's accept before it asks about its
         * handshake: counting what the monitor holds first makes the count
         * the decision sees exact. */
        router_events(loop, links);
        zmq_msg_t f[8];
        size_t n = 0;
        bool more = true;
        while (more) {
            zmq_msg_t part;
            zmq_msg_init(&part);
            if (zmq_msg_recv(&part, links->zap, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&part);
                if (n == 0)
                    return;
                break;
            }
            more = zmq_msg_more(&part);
            if (n < 8)
                f[n++] = part;
            else
                zmq_msg_close(&part);
        }
        const char *status = "400", *text = "a malformed request", *user = "";
        links_log_kind_t kind = LINKS_LOG_REFUSED;
        char address[64] = "?";
        if (n >= 4)
            snprintf(address, sizeof address, "%.*s", (int)zmq_msg_size(&f[3]), (char *)zmq_msg_data(&f[3]));
        if (n >= 6)
            status = zap_decide(links, &f[5], n >= 7 ? &f[6] : NULL, &text, &user, &kind);
        if (*status != '2') {
            links->rejected++;
            uint64_t left;
            char more_buf[64];
            bool log = links_log_ok(links, kind, &left);
            if (log && *status == '3')
                herd_log_event(links->log, "peer port: refused a connection from %s: %s (%ld connections open, "
                               "the cap is %ld)%s", address, text, links->peer_conns, links->peer_cap,
                               links_left_out(more_buf, sizeof more_buf, left));
            else if (log)
                herd_log_event(links->log, "peer: refused a link from %s: %s%s", address, text,
                               links_left_out(more_buf, sizeof more_buf, left));
        }
        const char *id = n >= 2 ? zmq_msg_data(&f[1]) : "";
        size_t id_len = n >= 2 ? zmq_msg_size(&f[1]) : 0;
        zmq_send(links->zap, "1.0", 3, ZMQ_SNDMORE | ZMQ_DONTWAIT);
        zmq_send(links->zap, id, id_len, ZMQ_SNDMORE | ZMQ_DONTWAIT);
        zmq_send(links->zap, status, 3, ZMQ_SNDMORE | ZMQ_DONTWAIT);
        zmq_send(links->zap, text, strlen(text), ZMQ_SNDMORE | ZMQ_DONTWAIT);
        zmq_send(links->zap, user, strlen(user), ZMQ_SNDMORE | ZMQ_DONTWAIT);
        zmq_send(links->zap, "", 0, ZMQ_DONTWAIT);
        for (size_t i = 0; i < n; i++)
            zmq_msg_close(&f[i]);
    }
}

int links_guard_start(herd_links_t *links, char *err, size_t errlen)
{
    void *ctx = zsys_init();
    links->zap = zmq_socket(ctx, ZMQ_REP);
    if (!links->zap || zmq_bind(links->zap, "inproc://zeromq.zap.01") != 0 ||
        herd_loop_add_zmq(links->loop, links->zap, zap_ready, links) != 0) {
        snprintf(err, errlen, "cannot start the peer port's guard (ZAP handler): %s", zmq_strerror(errno));
        return -1;
    }
    /* With a domain, libzmq asks ZAP about NULL handshakes too. */
    zmq_setsockopt(links->router, ZMQ_ZAP_DOMAIN, "herd", 4);
    links->router_monitor = links_monitor_open(links, links->router, ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED,
                                               router_events, links);
    if (!links->router_monitor) {
        snprintf(err, errlen, "cannot watch the peer port's connections: %s", zmq_strerror(errno));
        return -1;
    }
    return 0;
}

void links_guard_stop(herd_links_t *links)
{
    links_monitor_close(links, links->router, &links->router_monitor);
    if (links->zap) {
        herd_loop_remove_zmq(links->loop, links->zap);
        zmq_close(links->zap);
        links->zap = NULL;
    }
}

void links_set_peer_cap(herd_links_t *links)
{
    links->peer_cap = PEER_CAP_BASE + PEER_CAP_PER_NB * (long)links->n_nb;
}

/* A sweep: the ROUTER is unbound (libzmq closes what its listener accepted)
 * and bound again at once, or on a later tick while the old listener is
 * still being closed. */
void links_rebind(herd_links_t *links, int64_t now, const char *why)
{
    links->rebind_ms = now;
    links->rebinds++;
    links->full_since_ms = 0;
    herd_log_event(links->log, "peer port: dropping every connection on it (neighbours reconnect at once): %s", why);
    router_events(links->loop, links);
    if (zmq_unbind(links->router, links->router_ep) != 0) {
        herd_log_event(links->log, "peer port: cannot unbind %s: %s", links->router_ep, zmq_strerror(errno));
        return;
    }
    /* libzmq reports no disconnection for the connections an unbind closes. */
    links->peer_conns = 0;
    links->router_bound = zmq_bind(links->router, links->router_ep) == 0;
}

void links_guard_tick(herd_links_t *links, int64_t now)
{
    if (!links->router_bound) {
        if (zmq_bind(links->router, links->router_ep) == 0) {
            links->router_bound = true;
            herd_log_event(links->log, "peer port: bound again at %s", links->router_ep);
        } else if (now - links->rebind_ms > 5000 && (now - links->rebind_ms) % 5000 < 100) {
            herd_log_event(links->log, "peer port: cannot bind %s again yet: %s", links->router_ep,
                           zmq_strerror(errno));
        }
        return;
    }
    if (links->rebind_ms && now - links->rebind_ms < SWEEP_GAP_MS)
        return;
    for (size_t i = 0; i < links->n_nb; i++) {
        neighbour_t *nb = links->nb[i];
        if (nb->up && nb->heard_ms && now - nb->heard_ms > LOCKOUT_MS) {
            char why[200];
            snprintf(why, sizeof why, "%s is running (our link to it is up) but none of its messages reached us "
                     "for %lld ms: another connection may hold its name", nb->name, (long long)(now - nb->heard_ms));
            nb->heard_ms = now;
            links_rebind(links, now, why);
            return;
        }
    }
    if (links->full_since_ms && now - links->full_since_ms > FULL_MS)
        links_rebind(links, now, "connections that are not neighbours have held the connection cap for 10 s");
}
