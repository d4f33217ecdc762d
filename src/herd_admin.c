/* herd_admin: /metrics and /healthz over libmicrohttpd. See herd_admin.h. */
#include "herd_admin.h"

#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <czmq.h>
#include <microhttpd.h>

#define ASK_TIMEOUT_MS 2000 /* the reactor answers in microseconds; this is for a wedged one */

struct herd_admin_t {
    herd_loop_t *loop;
    struct MHD_Daemon *daemon;     /* the HTTP server and its thread */
    void *reactor_side;            /* PAIR read by the reactor */
    void *http_side;               /* PAIR used by the HTTP thread only */
    pthread_mutex_t ask_lock;      /* one question at a time on http_side */
    uint64_t seq;                  /* number of the last question (HTTP thread) */
    herd_admin_metrics_fn *metrics;
    herd_admin_ready_fn *ready;
    void *arg;
};

/* Reactor side: answer each question [seq][kind] with [seq][text]. */
static void questions_ready(herd_loop_t *loop, void *arg)
{
    (void)loop;
    herd_admin_t *a = arg;
    for (;;) {
        char q[16];
        int n = zmq_recv(a->reactor_side, q, sizeof q, ZMQ_DONTWAIT);
        if (n < 0)
            return;
        if (n != 9)
            continue;
        char *text = NULL;
        size_t len = 0;
        if (q[8] == 'M') {
            text = a->metrics(a->arg, &len);
        } else {
            text = strdup(a->ready(a->arg) ? "1" : "0");
            len = text ? 1 : 0;
        }
        zmq_send(a->reactor_side, q, 8, ZMQ_DONTWAIT | ZMQ_SNDMORE);
        zmq_send(a->reactor_side, text ? text : "", len, ZMQ_DONTWAIT);
        free(text);
    }
}

/* HTTP side: asks the reactor; returns malloc'd text or NULL on time-out. */
static char *ask(herd_admin_t *a, char kind, size_t *len)
{
    pthread_mutex_lock(&a->ask_lock);
    uint64_t seq = ++a->seq;
    char q[9];
    memcpy(q, &seq, 8);
    q[8] = kind;
    char *text = NULL;
    if (zmq_send(a->http_side, q, sizeof q, ZMQ_DONTWAIT) == (int)sizeof q) {
        int64_t deadline = zclock_mono() + ASK_TIMEOUT_MS;
        for (;;) {
            int64_t left = deadline - zclock_mono();
            zmq_pollitem_t item = {.socket = a->http_side, .events = ZMQ_POLLIN};
            if (left <= 0 || zmq_poll(&item, 1, (long)left) <= 0)
                break;
            zmq_msg_t head, body;
            zmq_msg_init(&head);
            zmq_msg_init(&body);
            bool ok = zmq_msg_recv(&head, a->http_side, 0) >= 0 && zmq_msg_more(&head) &&
                      zmq_msg_recv(&body, a->http_side, 0) >= 0;
            bool match = ok && zmq_msg_size(&head) == 8 && memcmp(zmq_msg_data(&head), &seq, 8) == 0;
            if (match && (text = malloc(zmq_msg_size(&body) + 1))) {
                *len = zmq_msg_size(&body);
                memcpy(text, zmq_msg_data(&body), *len);
                text[*len] = '\0';
            }
            zmq_msg_close(&head);
            zmq_msg_close(&body);
            if (match)
                break; /* otherwise: a late answer to an older question */
        }
    }
    pthread_mutex_unlock(&a->ask_lock);
    return text;
}

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, char *body, size_t len,
                             const char *type)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", type);
    enum MHD_Result rc = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result reply_text(struct MHD_Connection *conn, unsigned status, const char *text)
{
    char *body = strdup(text);
    return body ? reply(conn, status, body, strlen(body), "text/plain; charset=utf-8") : MHD_NO;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_len, void **state)
{
    (void)version, (void)upload;
    herd_admin_t *a = cls;
    if (!*state) { /* first call: headers only; answer on the second */
        *state = a;
        return MHD_YES;
    }
    if (*upload_len) { /* a body we do not want */
        *upload_len = 0;
        return MHD_YES;
    }
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return reply_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET is served here\n");
    size_t len = 0;
    if (!strcmp(url, "/metrics")) {
        char *text = ask(a, 'M', &len);
        if (!text)
            return reply_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "the server did not answer in time\n");
        return reply(conn, MHD_HTTP_OK, text, len, "text/plain; version=0.0.4; charset=utf-8");
    }
    if (!strcmp(url, "/healthz")) {
        char *text = ask(a, 'H', &len);
        bool ready = text && text[0] == '1';
        free(text);
        return ready ? reply_text(conn, MHD_HTTP_OK, "ready\n")
                     : reply_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "starting\n");
    }
    return reply_text(conn, MHD_HTTP_NOT_FOUND, "not found: try /metrics or /healthz\n");
}

herd_admin_t *herd_admin_new(herd_loop_t *loop, const char *host, int port, herd_admin_metrics_fn *metrics,
                             herd_admin_ready_fn *ready, void *arg, char *err, size_t errlen)
{
    herd_admin_t *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    a->loop = loop;
    a->metrics = metrics;
    a->ready = ready;
    a->arg = arg;
    pthread_mutex_init(&a->ask_lock, NULL);

    char endpoint[64];
    snprintf(endpoint, sizeof endpoint, "inproc://herd-admin-%p", (void *)a);
    void *ctx = zsys_init();
    a->reactor_side = zmq_socket(ctx, ZMQ_PAIR);
    a->http_side = zmq_socket(ctx, ZMQ_PAIR);
    int zero = 0;
    if (a->reactor_side)
        zmq_setsockopt(a->reactor_side, ZMQ_LINGER, &zero, sizeof zero);
    if (a->http_side)
        zmq_setsockopt(a->http_side, ZMQ_LINGER, &zero, sizeof zero);
    if (!a->reactor_side || !a->http_side || zmq_bind(a->reactor_side, endpoint) != 0 ||
        zmq_connect(a->http_side, endpoint) != 0 ||
        herd_loop_add_zmq(loop, a->reactor_side, questions_ready, a) != 0) {
        snprintf(err, errlen, "cannot set up the admin endpoint: %s", zmq_strerror(errno));
        herd_admin_destroy(&a);
        return NULL;
    }

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res = NULL;
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    int gai = getaddrinfo(host, portstr, &hints, &res);
    if (gai != 0) {
        snprintf(err, errlen, "cannot resolve admin address %s: %s", host, gai_strerror(gai));
        herd_admin_destroy(&a);
        return NULL;
    }
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD;
    if (res->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    a->daemon = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, on_request, a, MHD_OPTION_SOCK_ADDR,
                                 res->ai_addr, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
                                 MHD_OPTION_CONNECTION_LIMIT, (unsigned)64, MHD_OPTION_END);
    int saved = errno;
    freeaddrinfo(res);
    if (!a->daemon) {
        snprintf(err, errlen, "cannot bind admin port %s:%d: %s", host, port,
                 saved ? strerror(saved) : "libmicrohttpd refused to start");
        herd_admin_destroy(&a);
        return NULL;
    }
    return a;
}

void herd_admin_destroy(herd_admin_t **p)
{
    if (!p || !*p)
        return;
    herd_admin_t *a = *p;
    if (a->daemon)
        MHD_stop_daemon(a->daemon); /* joins the HTTP thread: nothing uses http_side after this */
    if (a->reactor_side) {
        herd_loop_remove_zmq(a->loop, a->reactor_side);
        zmq_close(a->reactor_side);
    }
    if (a->http_side)
        zmq_close(a->http_side);
    pthread_mutex_destroy(&a->ask_lock);
    free(a);
    *p = NULL;
}
