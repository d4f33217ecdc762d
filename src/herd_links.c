/* herd_links: DEALER/ROUTER links, batching, flooding, link state and
 * redials; the exchanges are in herd_links_repair.c. See herd_links.h. */
#include "herd_links.h"
#include "herd_links_int.h"

#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <czmq.h>

#include "herd_record.h"
#include "herd_wire.h"

#define SEND_HWM        2000               /* messages queued per neighbour before dropping */
/* Messages queued per connection on the peer port. libzmq's ROUTER never
 * reads a connection whose routing id is already connected (no handover):
 * its queue stays full for as long as the connection lasts, and an unbind
 * does not end it (the socket's end of its pipe waits for the queue to be
 * read). One message queued, and one more being decoded, is all such a
 * connection can make us hold: at most twice HERD_WIRE_MAX_FRAME. A
 * neighbour's flood is batched into few messages a turn, and the sender's
 * own queue absorbs its bursts. */
#define ROUTER_RCV_HWM  1
/* Our DEALERs are never read (a ROUTER sends nothing back): a peer that
 * sends to them anyway can make them hold one small message. */
#define DEALER_RCV_HWM  1
#define DEALER_MAX_MSG  65536
#define BATCH_BYTES     (256u * 1024u)     /* flush a batch early past this many AT-line bytes */
/* Relays (updates that came from a neighbour, flooded on) wait until this
 * long after the link's last batch, so that under load one message carries
 * the relays of many turns: every message costs both ends' ZeroMQ I/O
 * threads and the receiver's loop a wake-up, which dominate the CPU of a
 * small update. A link that was quiet for as long sends at once, so a lone
 * update is not delayed; under load a relay waits at most this long a hop.
 * An update of our own client's never waits: its AT reply follows it
 * (PROTOCOL section 7), and it takes the relays waiting with it. */
#define RELAY_HOLD_US   500
#define HOLD_TIMER_MS   1                  /* sends held relays when no turn comes sooner */
#define HANDSHAKE_MS    3000               /* a connection must finish its ZMTP handshake this soon */
#define RECONNECT_MS    50                 /* retry interval of a DEALER whose neighbour is away */
#define READY_ALONE_MS  1000               /* ready without an exchange when no neighbour came up */
#define REPAIR_TICK_MS  100                /* how often the anti-entropy timer looks */
#define REDIAL_MIN_MS   250                /* first wait before a refused DEALER is made anew */
#define REDIAL_MAX_MS   5000               /* longest wait between redials */

/* Resolves host to a ZeroMQ tcp endpoint "tcp://ADDR:PORT" (brackets for IPv6). */
static int endpoint(const char *host, int port, char *out, size_t cap, bool *ipv6, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int gai = getaddrinfo(host, NULL, &hints, &res);
    if (gai != 0) {
        snprintf(err, errlen, "cannot resolve %s: %s", host, gai_strerror(gai));
        return -1;
    }
    char addr[NI_MAXHOST];
    int rc = getnameinfo(res->ai_addr, res->ai_addrlen, addr, sizeof addr, NULL, 0, NI_NUMERICHOST);
    *ipv6 = res->ai_family == AF_INET6;
    freeaddrinfo(res);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve %s", host);
        return -1;
    }
    snprintf(out, cap, *ipv6 ? "tcp://[%s]:%d" : "tcp://%s:%d", addr, port);
    return 0;
}

static void set_int(void *sock, int opt, int value)
{
    zmq_setsockopt(sock, opt, &value, sizeof value);
}

/* Options both ends of a link share. */
static void link_options(void *sock, bool ipv6, bool router)
{
    set_int(sock, ZMQ_LINGER, 0);
    set_int(sock, ZMQ_SNDHWM, SEND_HWM);
    set_int(sock, ZMQ_RCVHWM, router ? ROUTER_RCV_HWM : DEALER_RCV_HWM);
    set_int(sock, ZMQ_SNDTIMEO, 0);
    /* No ZMTP heartbeats: libzmq 4.3.4 can abort on an assertion in its
     * heartbeat path under a flood of connections (zeromq/libzmq#4364,
     * #4841). Liveness is the application's instead: the exchange that runs
     * every second must be answered (LIVENESS_MS), and the kernel's TCP
     * keepalive finds a peer host that vanished. A connection that does not
     * finish its handshake soon is dropped, so idle strangers cannot pile up. */
    set_int(sock, ZMQ_TCP_KEEPALIVE, 1);
    set_int(sock, ZMQ_TCP_KEEPALIVE_IDLE, 5);
    set_int(sock, ZMQ_TCP_KEEPALIVE_INTVL, 1);
    set_int(sock, ZMQ_TCP_KEEPALIVE_CNT, 3);
    set_int(sock, ZMQ_HANDSHAKE_IVL, HANDSHAKE_MS);
    /* A fixed, short retry: a restarted neighbour is reached within 50 ms,
     * and a failed connect on a dead port costs next to nothing. (Forcing a
     * reconnect with zmq_disconnect + zmq_connect instead was tried: it can
     * strand the messages queued on the old pipe.) */
    set_int(sock, ZMQ_RECONNECT_IVL, RECONNECT_MS);
    set_int(sock, ZMQ_RECONNECT_IVL_MAX, 0);
    /* A frame past the largest a server sends closes its connection as
     * soon as its header is read, before anything is allocated for it. */
    int64_t maxmsg = router ? HERD_WIRE_MAX_FRAME : DEALER_MAX_MSG;
    zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    if (ipv6)
        set_int(sock, ZMQ_IPV6, 1);
}

/* Sends one encoded message to a neighbour without blocking; takes data.
 * Returns 0, or -1 when it could not be queued (counted, logged once). */
static int links_send(herd_links_t *links, neighbour_t *nb, char *data, size_t len)
{
    int rc = zmq_send(nb->dealer, data, len, ZMQ_DONTWAIT);
    free(data);
    if (rc >= 0) {
        nb->msgs_out++;
        return 0;
    }
    nb->dropped++; /* the periodic exchange repairs what it missed */
    if (!nb->drop_logged) {
        herd_log_event(links->log, "link to %s: queue full or closed, dropping updates until it is back (%s)",
                       nb->name, zmq_strerror(errno));
        nb->drop_logged = true;
    }
    return -1;
}

static int send_updates(herd_links_t *links, neighbour_t *nb, const herd_span_t *ats, size_t n)
{
    char *data;
    size_t len;
    if (herd_wire_encode_updates(ats, n, &data, &len) != 0)
        return -1;
    if (links_send(links, nb, data, len) != 0)
        return -1;
    nb->updates_out += n;
    return 0;
}

/* Whether the DEALER can take a message now: connected and below its
 * high-water mark (the DEALERs queue nothing for a neighbour that is away). */
static bool links_writable(neighbour_t *nb)
{
    uint32_t ev = 0;
    size_t len = sizeof ev;
    return zmq_getsockopt(nb->dealer, ZMQ_EVENTS, &ev, &len) == 0 && (ev & ZMQ_POLLOUT);
}

/* Monotonic microseconds. */
static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void batch_send(herd_links_t *links, neighbour_t *nb)
{
    if (!nb->n_lines)
        return;
    nb->urgent = false;
    nb->sent_us = now_us();
    herd_span_t *ats = malloc(nb->n_lines * sizeof *ats);
    if (ats) {
        for (size_t i = 0; i < nb->n_lines; i++)
            ats[i] = (herd_span_t){nb->batch + nb->offs[i], nb->offs[i + 1] - nb->offs[i]};
        send_updates(links, nb, ats, nb->n_lines);
        free(ats);
    }
    nb->n_lines = 0;
    nb->batch_len = 0;
}

/* Appends one AT line to a neighbour's batch. */
static int batch_add(neighbour_t *nb, const char *at, size_t len)
{
    if (nb->batch_len + len > nb->batch_cap) {
        size_t cap = nb->batch_cap ? nb->batch_cap : 4096;
        while (cap < nb->batch_len + len)
            cap *= 2;
        char *p = realloc(nb->batch, cap);
        if (!p)
            return -1;
        nb->batch = p;
        nb->batch_cap = cap;
    }
    if (nb->n_lines + 2 > nb->offs_cap) {
        size_t cap = nb->offs_cap ? nb->offs_cap * 2 : 64;
        size_t *p = realloc(nb->offs, cap * sizeof *p);
        if (!p)
            return -1;
        nb->offs = p;
        nb->offs_cap = cap;
    }
    nb->offs[nb->n_lines] = nb->batch_len;
    memcpy(nb->batch + nb->batch_len, at, len);
    nb->batch_len += len;
    nb->offs[++nb->n_lines] = nb->batch_len;
    return 0;
}

void herd_links_flood(herd_links_t *links, const char *at, size_t len, long except, herd_span_t origin)
{
    for (size_t i = 0; i < links->n_nb; i++) {
        neighbour_t *nb = links->nb[i];
        if ((long)i == except || (nb->name_len == origin.len && !memcmp(nb->name, origin.p, origin.len)))
            continue;
        if (batch_add(nb, at, len) != 0) {
            nb->dropped++;
            continue;
        }
        nb->urgent |= except < 0;
        if (nb->batch_len >= BATCH_BYTES || nb->n_lines >= HERD_WIRE_MAX_UPDATES)
            batch_send(links, nb);
    }
}

/* Sends what is queued now (before an exchange message, or at a stop). */
static void links_flush(herd_links_t *links)
{
    for (size_t i = 0; i < links->n_nb; i++)
        batch_send(links, links->nb[i]);
}

static void hold_timer_fired(herd_loop_t *loop, void *arg);

/* The end of a turn: every batch that holds an update of our own, or whose
 * link was quiet for RELAY_HOLD_US, is sent; the others wait for a later
 * turn or the hold timer, which runs only while something waits. */
static void links_flush_due(herd_links_t *links)
{
    bool held = false;
    int64_t now = 0;
    for (size_t i = 0; i < links->n_nb; i++) {
        neighbour_t *nb = links->nb[i];
        if (!nb->n_lines)
            continue;
        if (!nb->urgent && now == 0)
            now = now_us();
        if (nb->urgent || now - nb->sent_us >= RELAY_HOLD_US)
            batch_send(links, nb);
        else
            held = true;
    }
    if (held && links->hold_timer <= 0)
        links->hold_timer = herd_loop_add_timer(links->loop, HOLD_TIMER_MS, hold_timer_fired, links);
    else if (!held && links->hold_timer > 0) {
        herd_loop_remove_timer(links->loop, links->hold_timer);
        links->hold_timer = 0;
    }
}

static void hold_timer_fired(herd_loop_t *loop, void *arg)
{
    (void)loop;
    links_flush_due(arg);
}

/* What the exchanges (herd_links_repair.c) need of the sockets. */
static const links_net_t links_net = {.send = links_send, .flush = links_flush, .writable = links_writable};

herd_time_t herd_links_message_time(const herd_links_t *links)
{
    return links->message_time;
}

size_t herd_links_up(const herd_links_t *links)
{
    size_t n = 0;
    for (size_t i = 0; i < links->n_nb; i++)
        n += links->nb[i]->up;
    return n;
}

size_t herd_links_synced(const herd_links_t *links)
{
    size_t n = 0;
    for (size_t i = 0; i < links->n_nb; i++)
        n += links->nb[i]->up && links->nb[i]->synced;
    return n;
}

/* Whether the first rejoin exchange is done: every neighbour whose link is
 * up has sent its table (or we hold what it holds), or no neighbour came up
 * within a second of start, or there are none. Once true, stays true (and
 * logged then). */
static bool links_ready(herd_links_t *links)
{
    if (links->ready)
        return true;
    size_t up = 0, synced = 0;
    for (size_t i = 0; i < links->n_nb; i++) {
        up += links->nb[i]->up;
        synced += links->nb[i]->up && links->nb[i]->synced;
    }
    if ((up > 0 && synced == up) || links->n_nb == 0 ||
        (up == 0 && herd_loop_now_ms(links->loop) - links->start_ms >= READY_ALONE_MS)) {
        links->ready = true;
        herd_log_event(links->log, "ready: %s", up ? "first rejoin exchange done" : "no neighbour is up");
    }
    return links->ready;
}

static void flush_tick(herd_loop_t *loop, void *arg)
{
    (void)loop;
    links_flush_due(arg);
    links_ready(arg); /* logs the moment it becomes ready; O(1) once it is */
}


/* Why a handshake failed, for the log. */
static const char *handshake_why(uint16_t event, uint32_t value, char *buf, size_t cap)
{
    if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
        snprintf(buf, cap, "it refused our key (ZAP status %u)", (unsigned)value);
    else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL)
        snprintf(buf, cap, "a ZMTP protocol error (code 0x%x): are the keys on both ends right?", (unsigned)value);
    else
        snprintf(buf, cap, "%s", zmq_strerror((int)value));
    return buf;
}

/* Connection events of one DEALER: the link going up or down, or its
 * handshake failing. libzmq does not reconnect a DEALER whose handshake was
 * refused (a wrong or unknown key), so that DEALER is made anew after a
 * back-off, for as long as both ends run. */
static void monitor_ready(herd_loop_t *loop, void *arg)
{
    neighbour_t *nb = arg;
    herd_links_t *links = nb->links;
    uint16_t event;
    uint32_t value;
    while (links_monitor_read(nb->monitor, &event, &value)) {
        /* Only a finished handshake counts: a TCP connect alone also succeeds
         * against a frozen process. */
        if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
            nb->redial_backoff_ms = REDIAL_MIN_MS;
            nb->redial_at_ms = 0; /* libzmq's own retry got through: nothing to make anew */
            if (nb->seen_down) { /* the guard gives it from now on to be heard (not after a mere redial) */
                nb->seen_down = false;
                nb->heard_ms = herd_loop_now_ms(loop);
            }
            if (!nb->up) {
                nb->up = true;
                nb->synced = false;
                nb->drop_logged = false;
                nb->waiting_ms = 0;
                herd_log_event(links->log, "link to %s up", nb->name);
                links_round_open(links, nb, true);
            }
        } else if (event == ZMQ_EVENT_DISCONNECTED) {
            nb->seen_down = true;
            if (nb->up) {
                nb->up = false;
                herd_log_event(links->log, "link to %s down", nb->name);
            }
            links_round_close(links, nb);
        } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH || event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL ||
                   event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) {
            char why[160];
            nb->seen_down = true;
            if (nb->up)
                herd_log_event(links->log, "link to %s down", nb->name);
            nb->up = false;
            links_round_close(links, nb);
            if (!nb->redial_at_ms) {
                herd_log_event(links->log, "link to %s: the handshake failed: %s; retrying in %ld ms", nb->name,
                               handshake_why(event, value, why, sizeof why), nb->redial_backoff_ms);
                nb->redial_at_ms = herd_loop_now_ms(loop) + nb->redial_backoff_ms;
                nb->redial_backoff_ms = nb->redial_backoff_ms * 2 > REDIAL_MAX_MS ? REDIAL_MAX_MS
                                                                                  : nb->redial_backoff_ms * 2;
            }
        }
    }
}

static void handle_message(herd_links_t *links, size_t from, const char *data, size_t len)
{
    neighbour_t *nb = links->nb[from];
    herd_msg_t msg;
    char why[160];
    if (herd_wire_decode(data, len, &msg, why, sizeof why) != 0) {
        links->rejected++;
        uint64_t left;
        char more[64];
        if (links_log_ok(links, LINKS_LOG_BAD, &left))
            herd_log_event(links->log, "peer %s: dropped a message: %s%s", nb->name, why,
                           links_left_out(more, sizeof more, left));
        return;
    }
    nb->msgs_in++;
    nb->heard_ms = herd_loop_now_ms(links->loop);
    links->message_time = herd_time_now();
    if (msg.type == HERD_MSG_UPDATES || msg.type == HERD_MSG_RECORDS) {
        nb->updates_in += msg.n_updates;
        /* Each line is parsed once, a few lines ahead of the one handed on,
         * and its id named to the table then, so that the lookups' cache
         * misses overlap. */
        herd_table_ahead_t ahead = {0};
        herd_at_t fields[HERD_TABLE_AHEAD];
        bool ok[HERD_TABLE_AHEAD];
        uint64_t hashes[HERD_TABLE_AHEAD];
        bool worth = herd_table_worth_ahead(links->table);
        size_t named = 0;
        for (size_t i = 0; i < msg.n_updates; i++) {
            for (; named < msg.n_updates && named < i + HERD_TABLE_AHEAD; named++) {
                size_t k = named % HERD_TABLE_AHEAD;
                const herd_span_t *line = &msg.updates[named];
                ok[k] = line->len <= UINT16_MAX && herd_record_parse_quick(line->p, line->len, &fields[k]) == 0;
                if (worth && ok[k])
                    hashes[k] = herd_table_ahead(links->table, &ahead, fields[k].id.p, fields[k].id.len);
            }
            size_t k = i % HERD_TABLE_AHEAD;
            links->on_update(links->arg, nb->name, (long)from, msg.updates[i].p, msg.updates[i].len,
                             ok[k] ? &fields[k] : NULL, worth && ok[k] ? &hashes[k] : NULL,
                             msg.type == HERD_MSG_UPDATES);
        }
    } else {
        links_exchange(links, nb, &msg);
    }
    herd_wire_msg_free(&msg);
}

/* True while the current multi-frame message has more frames. */
static bool more_pending(void *sock)
{
    int more = 0;
    size_t len = sizeof more;
    return zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &len) == 0 && more;
}

static long find_neighbour(const herd_links_t *links, const char *name, size_t len)
{
    for (size_t i = 0; i < links->n_nb; i++)
        if (strlen(links->nb[i]->name) == len && memcmp(links->nb[i]->name, name, len) == 0)
            return (long)i;
    return -1;
}

/* Messages on our ROUTER: [sender identity][one msgpack frame]. */
static void router_ready(herd_loop_t *loop, void *arg)
{
    (void)loop;
    herd_links_t *links = arg;
    for (int budget = 0; budget < 4096; budget++) {
        zmq_msg_t id, body;
        zmq_msg_init(&id);
        if (zmq_msg_recv(&id, links->router, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&id);
            return;
        }
        /* Expect exactly one body frame; anything more is drained and dropped. */
        size_t frames = 0;
        zmq_msg_init(&body);
        if (zmq_msg_more(&id) && zmq_msg_recv(&body, links->router, ZMQ_DONTWAIT) >= 0) {
            frames = 1;
            while (more_pending(links->router)) {
                zmq_msg_t extra;
                zmq_msg_init(&extra);
                zmq_msg_recv(&extra, links->router, ZMQ_DONTWAIT);
                zmq_msg_close(&extra);
                frames++;
            }
        }
        /* Who is it? Only a neighbour of the topology is heard. */
        const char *who = zmq_msg_data(&id);
        size_t who_len = zmq_msg_size(&id);
        long from = find_neighbour(links, who, who_len);
        uint64_t left;
        char more[64];
        if (from < 0) {
            links->rejected++;
            if (links_log_ok(links, LINKS_LOG_STRANGER, &left)) {
                char prefix[160];
                snprintf(prefix, sizeof prefix, "peer: dropped a message from a sender that is not a neighbour%s: ",
                         links_left_out(more, sizeof more, left));
                herd_log_data(links->log, prefix, who, who_len);
            }
        } else if (frames != 1) {
            links->rejected++;
            if (links_log_ok(links, LINKS_LOG_BAD, &left))
                herd_log_event(links->log, "peer %s: dropped a message of %zu frames (expected 1)%s",
                               links->nb[from]->name, frames, links_left_out(more, sizeof more, left));
        } else if (links->cert && !herd_links_auth_matches(links, &body, links->nb[from])) {
            /* A name is bound to its key: a neighbour that uses another's
             * name is not heard under it. */
            links->rejected++;
            const char *uid = zmq_msg_gets(&body, "User-Id");
            if (links_log_ok(links, LINKS_LOG_KEY, &left))
                herd_log_event(links->log,
                               "peer: dropped a message that claims to be from %s but comes with the key of %s%s",
                               links->nb[from]->name, uid ? uid : "nobody", links_left_out(more, sizeof more, left));
        } else {
            handle_message(links, (size_t)from, zmq_msg_data(&body), zmq_msg_size(&body));
        }
        zmq_msg_close(&body);
        zmq_msg_close(&id);
    }
}

/* Closes a neighbour's DEALER and its monitor (the neighbour stays). */
static void links_dealer_close(herd_links_t *links, neighbour_t *nb)
{
    links_monitor_close(links, nb->dealer, &nb->monitor);
    if (nb->dealer) {
        zmq_close(nb->dealer);
        nb->dealer = NULL;
    }
    nb->up = false;
}

/* Makes a neighbour's DEALER (our name as identity, its CURVE key when links
 * are authenticated) and the monitor that reports its connection events, and
 * starts connecting. Returns 0, or -1 with err filled. */
static int links_dealer_open(herd_links_t *links, neighbour_t *nb, char *err, size_t errlen)
{
    nb->dealer = zmq_socket(zsys_init(), ZMQ_DEALER);
    if (!nb->dealer) {
        snprintf(err, errlen, "cannot make the link to %s: %s", nb->name, zmq_strerror(errno));
        return -1;
    }
    link_options(nb->dealer, nb->ipv6, false);
    /* Queue only on a finished connection: nothing piles up for a neighbour
     * that is away (the exchange after it is back repairs that), and
     * ZMQ_EVENTS tells whether the link can take a message. */
    set_int(nb->dealer, ZMQ_IMMEDIATE, 1);
    zmq_setsockopt(nb->dealer, ZMQ_ROUTING_ID, links->self_name, strlen(links->self_name));
    /* CURVE to a neighbour with a key; plain to one without (only during a
     * roll-out when we have a key ourselves). */
    if (nb->key[0] && herd_links_auth_dealer(links, nb, nb->name, nb->key, err, errlen) != 0) {
        links_dealer_close(links, nb);
        return -1;
    }
    int events = ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                 ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL;
    if (!(nb->monitor = links_monitor_open(links, nb->dealer, events, monitor_ready, nb))) {
        snprintf(err, errlen, "cannot watch the link to %s: %s", nb->name, zmq_strerror(errno));
        links_dealer_close(links, nb);
        return -1;
    }
    if (zmq_connect(nb->dealer, nb->endpoint) != 0) {
        snprintf(err, errlen, "cannot connect to %s at %s: %s", nb->name, nb->endpoint, zmq_strerror(errno));
        links_dealer_close(links, nb);
        return -1;
    }
    return 0;
}

static void neighbour_close(herd_links_t *links, neighbour_t *nb)
{
    if (!nb)
        return;
    links_dealer_close(links, nb);
    free(nb->name);
    free(nb->offered);
    free(nb->batch);
    free(nb->offs);
    free(nb);
}

/* Makes the link to one neighbour. The connection itself comes up later. */
static neighbour_t *neighbour_open(herd_links_t *links, const herd_server_conf_t *peer, char *err, size_t errlen)
{
    neighbour_t *nb = calloc(1, sizeof *nb);
    if (!nb || !(nb->name = strdup(peer->name))) {
        free(nb);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    nb->name_len = strlen(nb->name);
    nb->links = links;
    nb->redial_backoff_ms = REDIAL_MIN_MS;
    nb->seen_down = true;
    if (endpoint(peer->host, peer->peer_port, nb->endpoint, sizeof nb->endpoint, &nb->ipv6, err, errlen) != 0) {
        neighbour_close(links, nb);
        return NULL;
    }
    if ((links->cert && !links->rollout && !peer->public_key) ||
        (peer->public_key && strlen(peer->public_key) >= sizeof nb->key)) {
        snprintf(err, errlen, "links are authenticated but %s has no valid public_key in the topology", peer->name);
        neighbour_close(links, nb);
        return NULL;
    }
    if (peer->public_key)
        snprintf(nb->key, sizeof nb->key, "%s", peer->public_key);
    if (links_dealer_open(links, nb, err, errlen) != 0) {
        neighbour_close(links, nb);
        return NULL;
    }
    return nb;
}

static int neighbours_add(herd_links_t *links, neighbour_t *nb)
{
    if (links->n_nb == links->cap_nb) {
        size_t cap = links->cap_nb ? links->cap_nb * 2 : 8;
        neighbour_t **p = realloc(links->nb, cap * sizeof *p);
        if (!p)
            return -1;
        links->nb = p;
        links->cap_nb = cap;
    }
    links->nb[links->n_nb++] = nb;
    return 0;
}

/* The links' timer: the guard's work, the redial of DEALERs that libzmq
 * gave up on (or whose neighbour went silent), then each neighbour's
 * exchange (which one to open, and a silent link to make anew). */
static void links_tick(herd_loop_t *loop, void *arg)
{
    herd_links_t *links = arg;
    int64_t now = herd_loop_now_ms(loop);
    links_guard_tick(links, now);
    for (size_t i = 0; i < links->n_nb; i++) {
        neighbour_t *nb = links->nb[i];
        if (nb->redial_at_ms && now >= nb->redial_at_ms) {
            char err[256];
            nb->redial_at_ms = 0;
            links_dealer_close(links, nb);
            if (links_dealer_open(links, nb, err, sizeof err) != 0) {
                herd_log_event(links->log, "link to %s: cannot make it anew: %s", nb->name, err);
                nb->redial_at_ms = now + nb->redial_backoff_ms;
            } else {
                nb->redials++;
            }
            continue;
        }
        links_exchange_tick(links, nb, now);
    }
}

herd_links_t *herd_links_new(herd_loop_t *loop, herd_log_t *log, const herd_topology_t *topo, size_t self,
                             const herd_table_t *table, herd_links_update_fn *on_update, void *arg,
                             char *err, size_t errlen)
{
    herd_links_t *links = calloc(1, sizeof *links);
    if (!links || !(links->self_name = strdup(topo->servers[self].name))) {
        free(links);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    links->loop = loop;
    links->log = log;
    links->table = table;
    links->on_update = on_update;
    links->arg = arg;
    links->start_ms = herd_loop_now_ms(loop);
    links->net = &links_net;
    links_log_init(links);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    links->incarnation = ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 16);

    void *ctx = zsys_init();
    const herd_server_conf_t *me = &topo->servers[self];
    char ep[300];
    bool ipv6;
    if (!ctx || endpoint(me->host, me->peer_port, ep, sizeof ep, &ipv6, err, errlen) != 0)
        goto fail;
    if (me->public_key) {
        if (herd_links_auth_setup(links, topo, me, err, errlen) != 0)
            goto fail;
        herd_log_event(log, "links are authenticated (CURVE): only the neighbours' keys are let in");
    } else {
        /* The topology loader has checked that no neighbour has a key. */
        herd_log_event(log, "links are NOT authenticated: the topology gives %s no public_key", me->name);
    }
    links->router = zmq_socket(ctx, ZMQ_ROUTER);
    link_options(links->router, ipv6, true);
    /* No handover: a connection that claims a name already connected is
     * refused, so a stranger cannot knock a real neighbour's link off by
     * claiming its name. A restarted neighbour's old connection closes with
     * the old process (the kernel sends FIN), and its DEALER retries every
     * 50 ms until the name is free. */
    set_int(links->router, ZMQ_ROUTER_HANDOVER, 0);
    if (links->cert)
        herd_links_auth_router(links, links->router);
    if (links_guard_start(links, err, errlen) != 0)
        goto fail;
    snprintf(links->router_ep, sizeof links->router_ep, "%s", ep);
    if (zmq_bind(links->router, ep) != 0) {
        snprintf(err, errlen, "cannot bind peer port %s:%d: %s", me->host, me->peer_port, zmq_strerror(errno));
        goto fail;
    }
    links->router_bound = true;
    if (herd_loop_add_zmq(loop, links->router, router_ready, links) != 0) {
        snprintf(err, errlen, "cannot watch the peer port");
        goto fail;
    }
    if (herd_links_reconfigure(links, topo, err, errlen) != 0)
        goto fail;
    if ((links->flush_tick = herd_loop_add_tick(loop, HERD_PHASE_LINKS, flush_tick, links)) < 0 ||
        (links->repair_timer = herd_loop_add_timer(loop, REPAIR_TICK_MS, links_tick, links)) < 0) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    return links;
fail:
    herd_links_destroy(&links);
    return NULL;
}

int herd_links_reconfigure(herd_links_t *links, const herd_topology_t *topo, char *err, size_t errlen)
{
    long self = herd_topology_find(topo, links->self_name);
    if (self < 0) {
        snprintf(err, errlen, "the topology has no server named \"%s\"", links->self_name);
        return -1;
    }
    size_t *idx = malloc((topo->n_servers + 1) * sizeof *idx);
    if (!idx) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    size_t n = herd_topology_neighbours(topo, (size_t)self, idx, topo->n_servers);

    /* A rotated key of ours is read at once, and our links become
     * authenticated (or plain) as the topology now says: every link is made
     * anew, so the server is not cut off until a restart. */
    links->rollout = topo->curve_rollout;
    bool rekeyed = false;
    if (links->configured) {
        int rk = herd_links_auth_reconfigure(links, topo, &topo->servers[self], err, errlen);
        if (rk < 0)
            herd_log_event(links->log, "links: our public_key changed but the new key pair cannot be used: %s; "
                           "the links keep the old one", err);
        rekeyed = rk > 0;
    }

    /* Drop the links that are gone or whose address changed. */
    for (size_t i = 0; i < links->n_nb;) {
        neighbour_t *nb = links->nb[i];
        bool keep = false;
        for (size_t j = 0; j < n && !keep; j++) {
            const herd_server_conf_t *peer = &topo->servers[idx[j]];
            char ep[300], ignored[64];
            bool v6;
            /* A name lookup that fails now (DNS at a SIGHUP) keeps the
             * working link rather than closing it. */
            keep = !strcmp(peer->name, nb->name) &&
                   (endpoint(peer->host, peer->peer_port, ep, sizeof ep, &v6, ignored, sizeof ignored) != 0 ||
                    !strcmp(ep, nb->endpoint)) &&
                   (peer->public_key ? !strcmp(peer->public_key, nb->key) : !nb->key[0]);
        }
        if (keep && (!rekeyed || !nb->key[0])) {
            i++; /* a plain DEALER does not use our key: it stays, and its connection too */
            continue;
        }
        if (keep) { /* the same neighbour: its DEALER is made anew with our new key */
            char why[256];
            batch_send(links, nb);
            links_dealer_close(links, nb);
            if (links_dealer_open(links, nb, why, sizeof why) != 0) {
                herd_log_event(links->log, "link to %s: cannot make it anew: %s", nb->name, why);
                nb->redial_at_ms = herd_loop_now_ms(links->loop) + nb->redial_backoff_ms;
            }
            i++;
            continue;
        }
        herd_log_event(links->log, "link to %s removed by the topology", nb->name);
        batch_send(links, nb);
        neighbour_close(links, nb);
        links->nb[i] = links->nb[--links->n_nb]; /* order does not matter */
    }
    /* Make the new ones. */
    int rc = 0;
    for (size_t j = 0; j < n; j++) {
        const herd_server_conf_t *peer = &topo->servers[idx[j]];
        if (find_neighbour(links, peer->name, strlen(peer->name)) >= 0)
            continue;
        neighbour_t *nb = neighbour_open(links, peer, err, errlen);
        if (!nb || neighbours_add(links, nb) != 0) {
            /* The others are still made; the next reload tries this one again. */
            herd_log_event(links->log, "link to %s cannot be made: %s", peer->name, nb ? "out of memory" : err);
            neighbour_close(links, nb);
            rc = -1;
            continue;
        }
        if (links->configured)
            herd_log_event(links->log, "link to %s added by the topology", nb->name);
    }
    free(idx);
    links->configured = true;
    links_set_peer_cap(links);
    if (rc == 0 && links->n_nb == 0)
        herd_log_event(links->log, "no neighbours in the topology: this server floods to no one");
    return rc;
}

/* Writes one gauge or counter with a value per neighbour. */
#define PEER_METRIC(f, links, metric, help, type, field)                                                  \
    do {                                                                                                   \
        fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", metric, help, metric, type);                             \
        for (size_t i_ = 0; i_ < (links)->n_nb; i_++)                                                      \
            fprintf(f, "%s{peer=\"%s\"} %" PRIu64 "\n", metric, (links)->nb[i_]->name,                     \
                    (uint64_t)(links)->nb[i_]->field);                                                     \
    } while (0)

/* Writes one counter with a value per neighbour and direction. */
#define PEER_IN_OUT(f, links, metric, help, out, in)                                                       \
    do {                                                                                                   \
        fprintf(f, "# HELP %s %s\n# TYPE %s counter\n", metric, help, metric);                             \
        for (size_t i_ = 0; i_ < (links)->n_nb; i_++) {                                                    \
            const neighbour_t *nb_ = (links)->nb[i_];                                                      \
            fprintf(f, "%s{direction=\"out\",peer=\"%s\"} %" PRIu64 "\n", metric, nb_->name, nb_->out);    \
            fprintf(f, "%s{direction=\"in\",peer=\"%s\"} %" PRIu64 "\n", metric, nb_->name, nb_->in);      \
        }                                                                                                  \
    } while (0)

void herd_links_render(herd_links_t *links, FILE *f)
{
    PEER_METRIC(f, links, "herd_link_up", "Whether the link to the neighbour is up.", "gauge", up);
    PEER_IN_OUT(f, links, "herd_flood_updates_total", "AT lines sent to or received from a neighbour.", updates_out,
                updates_in);
    PEER_IN_OUT(f, links, "herd_flood_messages_total", "ZeroMQ messages sent to or received from a neighbour.",
                msgs_out, msgs_in);
    PEER_METRIC(f, links, "herd_flood_dropped_total", "Messages to a neighbour that could not be queued.",
                "counter", dropped);
    PEER_METRIC(f, links, "herd_repair_rounds_total", "Anti-entropy exchanges opened with a neighbour.",
                "counter", rounds);
    PEER_METRIC(f, links, "herd_repair_records_sent_total", "AT lines sent to a neighbour by anti-entropy exchanges.",
                "counter", repair_records_out);
    PEER_METRIC(f, links, "herd_repair_bytes_sent_total", "Bytes of anti-entropy messages sent to a neighbour.",
                "counter", repair_bytes_out);
    PEER_METRIC(f, links, "herd_repair_refused_total",
                "Anti-entropy requests from a neighbour refused (rate limit, or not asked for).", "counter",
                repair_refused);
    PEER_METRIC(f, links, "herd_link_redials_total", "Links made anew after a refused handshake.", "counter",
                redials);
    PEER_METRIC(f, links, "herd_tables_differ",
                "Whether the last comparison of this server's table with the neighbour's found them different.",
                "gauge", differ);
    fprintf(f, "# HELP herd_exchange_last_success_timestamp_seconds When an anti-entropy exchange with the "
               "neighbour last ended (0: never).\n"
               "# TYPE herd_exchange_last_success_timestamp_seconds gauge\n");
    for (size_t i = 0; i < links->n_nb; i++)
        fprintf(f, "herd_exchange_last_success_timestamp_seconds{peer=\"%s\"} %.3f\n", links->nb[i]->name,
                links->nb[i]->success_s);
    fprintf(f, "# HELP herd_peer_connections Connections open on the peer port.\n"
               "# TYPE herd_peer_connections gauge\nherd_peer_connections %ld\n"
               "# HELP herd_peer_connections_refused_total Peer-port handshakes refused: the port was full.\n"
               "# TYPE herd_peer_connections_refused_total counter\nherd_peer_connections_refused_total %" PRIu64 "\n"
               "# HELP herd_peer_sweeps_total Times every connection on the peer port was dropped (a neighbour "
               "locked out of its name, or the cap held by strangers).\n"
               "# TYPE herd_peer_sweeps_total counter\nherd_peer_sweeps_total %" PRIu64 "\n"
               "# HELP herd_peer_log_left_out_total Log lines about strangers and peers left out by the rate limit.\n"
               "# TYPE herd_peer_log_left_out_total counter\nherd_peer_log_left_out_total %" PRIu64 "\n",
            links->peer_conns, links->peer_refused, links->rebinds, links_log_left_out(links));
    fprintf(f, "# HELP herd_peer_rejected_total Peer messages rejected (malformed, or from a stranger).\n"
               "# TYPE herd_peer_rejected_total counter\nherd_peer_rejected_total %" PRIu64 "\n",
            links->rejected);
}

void herd_links_close_gracefully(herd_links_t *links, int ms)
{
    if (!links)
        return;
    links_flush(links);
    for (size_t i = 0; i < links->n_nb; i++)
        if (links->nb[i]->dealer && links->nb[i]->up)
            set_int(links->nb[i]->dealer, ZMQ_LINGER, ms > 0 ? ms : 0);
}

void herd_links_destroy(herd_links_t **p)
{
    if (!p || !*p)
        return;
    herd_links_t *links = *p;
    if (links->repair_timer > 0)
        herd_loop_remove_timer(links->loop, links->repair_timer);
    if (links->flush_tick > 0)
        herd_loop_remove_tick(links->loop, links->flush_tick);
    if (links->hold_timer > 0)
        herd_loop_remove_timer(links->loop, links->hold_timer);
    for (size_t i = 0; i < links->n_nb; i++)
        neighbour_close(links, links->nb[i]);
    links_guard_stop(links);
    if (links->router) {
        herd_loop_remove_zmq(links->loop, links->router);
        zmq_close(links->router);
    }
    herd_links_auth_close(links);
    free(links->nb);
    free(links->self_name);
    free(links);
    *p = NULL;
}
