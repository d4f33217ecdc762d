/* herd_links_guard: the peer port's guard against a flood of connections:
 * libzmq has no accept limit of its own, so the ROUTER's accept and
 * disconnect events are counted and a connection past the cap is shut at
 * once. See herd_links_int.h. */
#include "herd_links_int.h"

#include <inttypes.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <czmq.h>

/* Connections on the peer port beyond the neighbours' own: room for
 * reconnects and redials, not for a flood of strangers. */
#define PEER_CAP_BASE   64
#define PEER_CAP_PER_NB 4

/* Accept and disconnect events of the ROUTER: counts the connections on the
 * peer port, and shuts one at once when the count passes the cap. libzmq has
 * no accept limit of its own; a connection that never finishes its
 * handshake is dropped after HANDSHAKE_MS anyway, so the cap bounds what a
 * flood of strangers can hold to the cap plus what arrives in that window,
 * and a neighbour that reconnects gets in once the flood's connections go. */
static void router_events(herd_loop_t *loop, void *arg)
{
    (void)loop;
    herd_links_t *links = arg;
    for (;;) {
        zmq_msg_t ev, addr;
        zmq_msg_init(&ev);
        if (zmq_msg_recv(&ev, links->router_monitor, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&ev);
            return;
        }
        uint16_t event = 0;
        int32_t value = -1;
        if (zmq_msg_size(&ev) >= 6) {
            memcpy(&event, zmq_msg_data(&ev), 2);
            memcpy(&value, (char *)zmq_msg_data(&ev) + 2, 4);
        }
        bool more = zmq_msg_more(&ev);
        zmq_msg_close(&ev);
        if (more) {
            zmq_msg_init(&addr);
            zmq_msg_recv(&addr, links->router_monitor, ZMQ_DONTWAIT);
            zmq_msg_close(&addr);
        }
        if (event == ZMQ_EVENT_DISCONNECTED) {
            if (links->peer_conns > 0)
                links->peer_conns--;
        } else if (event == ZMQ_EVENT_ACCEPTED) {
            if (++links->peer_conns <= links->peer_cap || value < 0)
                continue;
            /* libzmq owns the descriptor: shutting it down makes its engine
             * see the end of the connection and close it (and report it). */
            char who[NI_MAXHOST + 24] = "?";
            struct sockaddr_storage sa;
            socklen_t sl = sizeof sa;
            if (getpeername(value, (struct sockaddr *)&sa, &sl) == 0) {
                char host[NI_MAXHOST], serv[16];
                if (getnameinfo((struct sockaddr *)&sa, sl, host, sizeof host, serv, sizeof serv,
                                NI_NUMERICHOST | NI_NUMERICSERV) == 0)
                    snprintf(who, sizeof who, "%s:%s", host, serv);
            }
            shutdown(value, SHUT_RDWR);
            if (links->peer_refused++ % 100 == 0)
                herd_log_event(links->log, "peer port: refused a connection from %s: %ld connections open, the cap "
                               "is %ld (%" PRIu64 " refused so far)", who, links->peer_conns - 1, links->peer_cap,
                               links->peer_refused);
        }
    }
}

/* Watches the ROUTER's connections (router_events). */
int links_watch_router(herd_links_t *links, char *err, size_t errlen)
{
    char mon[96];
    snprintf(mon, sizeof mon, "inproc://herd-router-%p", (void *)links);
    links->router_monitor = zmq_socket(zsys_init(), ZMQ_PAIR);
    if (!links->router_monitor ||
        zmq_socket_monitor(links->router, mon, ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED) != 0 ||
        zmq_connect(links->router_monitor, mon) != 0 ||
        herd_loop_add_zmq(links->loop, links->router_monitor, router_events, links) != 0) {
        snprintf(err, errlen, "cannot watch the peer port's connections: %s", zmq_strerror(errno));
        return -1;
    }
    return 0;
}


void links_set_peer_cap(herd_links_t *links)
{
    links->peer_cap = PEER_CAP_BASE + PEER_CAP_PER_NB * (long)links->n_nb;
}
