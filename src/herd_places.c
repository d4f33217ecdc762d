/* herd_places: the Places worker thread (PROTOCOL.md sections 4 and 10).
 *
 * The node and the worker share nothing but the actor pipe (an inproc PAIR).
 * Requests, cancels and replies are single frames of herd_places_msg, plus
 * the plain strings "$STOP" / "$STOPPED" used by herd_places_destroy and
 * the actor's "$TERM".
 *
 * The worker sleeps in curl_multi_wait() with the pipe's ZMQ_FD as an extra
 * descriptor. ZMQ_FD only says "something may have changed", so the loop
 * reads the pipe until EAGAIN (or a batch), and goes to sleep only when
 * ZMQ_EVENTS, read after its last send and receive, has nothing for it.
 * Replies are sent with ZMQ_DONTWAIT; what the pipe does not take is queued
 * and sent when it has room again, so the worker never blocks on the node.
 *
 * Thread pattern: zactor (the start handshake; "$TERM", once "$STOP" has
 * emptied the pipe both ways, see herd_places_destroy).
 *
 * Layers, each calling only those below it: this file (the thread, its
 * loop, requests, the node's handle) -> herd_places_flight.c (upstream
 * calls: bounds, queue, sharing, cancels, the connection pool) ->
 * herd_places_reply.c (answers queued for the pipe). */
#include "herd_places.h"
#include "herd_places_cache.h"
#include "herd_places_msg.h"
#include "herd_places_worker.h"
#include "herd_topology.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#define DEFAULT_CACHE_MAX    1024       /* cached bodies when the configuration says 0 */
#define MAX_CACHE_BYTES      (64u << 20) /* all cached bodies together */
#define MAX_IDLE_WAIT_MS     1000L      /* longest sleep with nothing scheduled */
#define MAX_DRAIN            256        /* requests taken per turn, so calls keep moving */
#define PIPE_SLACK           4096       /* pipe room beyond the bounds (see herd_places_new) */

static void handle_request(worker_t *w, uint64_t req_id, herd_span_t lat, herd_span_t lng, herd_span_t radius,
                           uint32_t bound)
{
    herd_span_t la = herd_places_coord(lat), lo = herd_places_coord(lng);
    size_t mcap = radius.len + 16; /* times 1000 adds at most three digits */
    char *metres = malloc(mcap);
    size_t mlen = metres ? herd_proto_radius_metres(radius, metres, mcap) : 0;
    char *what = mlen ? places_printf("location=%.*s,%.*s radius=%s", (int)la.len, la.p, (int)lo.len, lo.p, metres)
                      : NULL;
    /* The radius in metres, not its text: "10", "10.0" and "10.000" are one
     * request, one call and one cache entry. */
    char *key = mlen ? places_printf("%.*s,%.*s %s", (int)la.len, la.p, (int)lo.len, lo.p, metres) : NULL;
    places_how_t none = {0};
    if (!w->key)
        places_reply_error(w, &req_id, 1, "REQUEST_DENIED", "no Places API key is configured", what, none);
    else if (!mlen)
        places_reply_error(w, &req_id, 1, "UNKNOWN_ERROR", "invalid radius", NULL, none);
    else if (!what || !key)
        places_reply_error(w, &req_id, 1, "UNKNOWN_ERROR", "out of memory", NULL, none);
    else {
        size_t cached_len = 0;
        const char *cached = herd_places_cache_get(w->cache, key, zclock_mono(), &cached_len);
        if (cached)
            places_reply_cut(w, &req_id, 1, bound, cached, cached_len, what, (places_how_t){.cache_hit = true});
        else
            places_join(w, req_id, key, what, lat, lng, radius, bound);
    }
    free(metres);
    free(key);
    free(what);
}

/* The bounds the node gives (herd_places_conf_t's meaning); a value it
 * leaves unset takes the topology's default, so the worker has no defaults
 * of its own. */
static void take_bounds(worker_t *w, long timeout_ms, long max_in_flight, long max_queued)
{
    w->timeout_ms = timeout_ms > 0 ? timeout_ms : HERD_TOPOLOGY_PLACES_TIMEOUT_MS;
    w->max_in_flight = max_in_flight > 0 ? max_in_flight : HERD_TOPOLOGY_PLACES_MAX_IN_FLIGHT;
    w->max_queued = max_queued >= 0 ? max_queued : HERD_TOPOLOGY_PLACES_MAX_QUEUED;
}

/* Reloaded settings, the same values the node now uses. Calls already
 * running keep their slot; the queue starts more when max_in_flight grew
 * (places_refill, after the batch). */
static void apply_config(worker_t *w, const herd_places_msg_t *m)
{
    long in_flight = w->max_in_flight;
    take_bounds(w, (long)m->timeout_ms, (long)m->max_in_flight, (long)m->max_queued);
    herd_places_cache_set_ttl(w->cache, m->cache_ttl_ms > 0 ? (long)m->cache_ttl_ms : 0, zclock_mono());
    if (in_flight != w->max_in_flight)
        places_pool_resize(w);
}

/* Decodes one frame from the node; a malformed one is answered when its id
 * can be read. */
static void handle_frame(worker_t *w, const char *data, size_t len)
{
    herd_places_msg_t m;
    uint64_t id = 0;
    if (herd_places_msg_decode_to_worker(data, len, &m, &id) != 0) {
        if (id)
            places_reply_error(w, &id, 1, "UNKNOWN_ERROR", "malformed request to the Places worker", NULL,
                               (places_how_t){0});
        return;
    }
    if (m.kind == HERD_PLACES_MSG_CANCEL)
        places_cancel(w, m.req_id);
    else if (m.kind == HERD_PLACES_MSG_CONFIG)
        apply_config(w, &m);
    else
        handle_request(w, m.req_id, m.lat, m.lng, m.radius_km, m.bound);
}

static bool frame_is(const zmq_msg_t *m, const char *word)
{
    size_t n = strlen(word);
    return zmq_msg_size((zmq_msg_t *)m) == n && memcmp(zmq_msg_data((zmq_msg_t *)m), word, n) == 0;
}

/* Reads what the pipe holds (up to MAX_DRAIN frames; ZMQ_EVENTS brings the
 * loop straight back for the rest). Returns true when the worker must end. */
static bool drain_frames(worker_t *w, void *sock)
{
    for (int taken = 0; taken < MAX_DRAIN; taken++) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, sock, ZMQ_DONTWAIT) < 0) {
            int e = errno;
            zmq_msg_close(&m);
            if (e == EINTR)
                continue;
            return e == ETERM;
        }
        bool more = zmq_msg_more(&m);
        bool end = false;
        if (more) {
            /* Not one of ours: skip the rest of it. */
            while (more) {
                zmq_msg_close(&m);
                zmq_msg_init(&m);
                if (zmq_msg_recv(&m, sock, 0) < 0)
                    break;
                more = zmq_msg_more(&m);
            }
        } else if (frame_is(&m, "$TERM"))
            end = true;
        else if (frame_is(&m, "$STOP")) {
            w->stopping = true;
            places_abandon(w);
            places_drop_replies(w);
            char *ack = strdup("$STOPPED");
            if (ack)
                places_queue_frame(w, ack, strlen(ack));
        } else if (!w->stopping)
            handle_frame(w, zmq_msg_data(&m), zmq_msg_size(&m));
        zmq_msg_close(&m);
        if (end)
            return true;
    }
    return false;
}

/* drain_frames, then the slots that cancels freed are refilled. */
static bool drain_pipe(worker_t *w, void *sock)
{
    bool end = drain_frames(w, sock);
    if (!end && !w->stopping)
        places_refill(w);
    return end;
}

static void worker_actor(zsock_t *pipe, void *args)
{
    worker_t *w = args;
    void *sock = zsock_resolve(pipe);
    int fd = -1;
    size_t fdlen = sizeof fd;
    zmq_getsockopt(sock, ZMQ_FD, &fd, &fdlen);
    zsock_signal(pipe, 0);

    while (!drain_pipe(w, sock)) {
        int running = 0;
        curl_multi_perform(w->multi, &running);
        places_collect(w);
        long next_deadline = places_expire(w);
        places_flush_replies(w, sock);
        places_pool_prune(w);

        /* ZMQ_FD is edge-like: only sleep when ZMQ_EVENTS, read after the
         * last send and receive above, says there is nothing to do. */
        int events = 0;
        size_t elen = sizeof events;
        if (zmq_getsockopt(sock, ZMQ_EVENTS, &events, &elen) != 0) {
            if (errno == ETERM)
                break;
            events = 0;
        }
        long wait_ms = MAX_IDLE_WAIT_MS;
        if ((events & ZMQ_POLLIN) || (w->out.head && (events & ZMQ_POLLOUT)))
            wait_ms = 0;
        else {
            long t = -1;
            curl_multi_timeout(w->multi, &t);
            if (t >= 0 && t < wait_ms)
                wait_ms = t;
            if (next_deadline >= 0 && next_deadline < wait_ms)
                wait_ms = next_deadline;
        }
        if (wait_ms > 0) {
            struct curl_waitfd extra = {.fd = fd, .events = CURL_WAIT_POLLIN, .revents = 0};
            curl_multi_wait(w->multi, &extra, 1, (int)wait_ms, NULL);
        }
    }
    places_abandon(w);
    places_drop_replies(w);
}

/* ---------------------------------------------------------------------- */
/* The node's side */

static void worker_free(worker_t *w)
{
    if (!w)
        return;
    if (w->flights) {
        places_abandon(w);
        zhashx_destroy(&w->flights);
    }
    zhashx_destroy(&w->waiters);
    herd_places_cache_destroy(&w->cache);
    places_drop_replies(w);
    if (w->multi)
        curl_multi_cleanup(w->multi);
    free(w->url);
    if (w->key)
        memset(w->key, 0, strlen(w->key));
    free(w->key);
    free(w->key_escaped);
    free(w);
}

herd_places_t *herd_places_new(const herd_places_conf_t *conf, char *err, size_t errlen)
{
    if (!conf || !conf->url || !conf->url[0]) {
        snprintf(err, errlen, "places: no Places URL is configured");
        return NULL;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(err, errlen, "places: libcurl could not be initialised");
        return NULL;
    }
    herd_places_t *self = calloc(1, sizeof *self);
    worker_t *w = calloc(1, sizeof *w);
    if (!self || !w)
        goto oom;
    self->w = w;
    w->url = strdup(conf->url);
    if (!w->url)
        goto oom;
    if (conf->key && conf->key[0]) {
        w->key = strdup(conf->key);
        /* The key's URL form, taken from a URL built the way requests are. */
        herd_span_t z = {"0", 1};
        char *u = herd_places_url("", z, z, z, conf->key);
        char *k = u ? strstr(u, "&key=") : NULL;
        w->key_escaped = k ? strdup(k + 5) : NULL;
        free(u);
        if (!w->key || !w->key_escaped)
            goto oom;
    }
    take_bounds(w, conf->timeout_ms, conf->max_in_flight, conf->max_queued);
    w->multi = places_multi_new(w->max_in_flight);
    w->flights = zhashx_new();
    w->waiters = zhashx_new();
    w->cache = herd_places_cache_new(conf->cache_ttl_ms,
                                     conf->cache_max_entries ? conf->cache_max_entries : DEFAULT_CACHE_MAX,
                                     MAX_CACHE_BYTES);
    if (!w->multi || !w->flights || !w->waiters || !w->cache)
        goto oom;
    /* The pipe must not refuse a request the bounds would let wait: its
     * high-water mark (CZMQ's global pipe setting, restored at once) leaves
     * room for every call and queued request, plus a burst of cache hits,
     * shared requests and cancels the worker has not read yet. */
    size_t old_hwm = zsys_pipehwm();
    zsys_set_pipehwm((size_t)(w->max_in_flight + w->max_queued) + PIPE_SLACK);
    self->actor = zactor_new(worker_actor, w);
    zsys_set_pipehwm(old_hwm);
    if (!self->actor) {
        snprintf(err, errlen, "places: the worker thread could not be started");
        goto fail;
    }
    return self;

oom:
    snprintf(err, errlen, "places: out of memory");
fail:
    if (self)
        worker_free(self->w);
    else
        free(w);
    free(self);
    curl_global_cleanup();
    return NULL;
}

void herd_places_destroy(herd_places_t **p)
{
    if (!p || !*p)
        return;
    herd_places_t *self = *p;
    /* First make the worker drop its calls and replies and say so, reading
     * (and discarding) replies meanwhile: then the pipe is empty both ways
     * and the actor's "$TERM" and final signal cannot find it full. */
    zsock_t *sock = zactor_sock(self->actor);
    void *raw = zsock_resolve(sock);
    zsock_set_sndtimeo(sock, -1);
    zsock_set_rcvtimeo(sock, -1);
    int rc;
    do
        rc = zmq_send(raw, "$STOP", 5, 0);
    while (rc < 0 && errno == EINTR);
    while (rc >= 0) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        rc = zmq_msg_recv(&m, raw, 0);
        if (rc < 0 && errno == EINTR) {
            rc = 0;
            zmq_msg_close(&m);
            continue;
        }
        bool stopped = rc >= 0 && frame_is(&m, "$STOPPED");
        zmq_msg_close(&m);
        if (stopped)
            break;
    }
    zactor_destroy(&self->actor);
    worker_free(self->w);
    herd_places_answer_free(&self->inbox);
    free(self);
    curl_global_cleanup();
    *p = NULL;
}

zsock_t *herd_places_sock(herd_places_t *p)
{
    return zactor_sock(p->actor);
}
