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
 * ZMQ_EVENTS, read after its last send and receive, has nothing for it. Replies are sent with ZMQ_DONTWAIT; what
 * the pipe does not take is queued and sent when it has room again, so the
 * worker never blocks on the node. */
#include "herd_places.h"
#include "herd_places_cache.h"
#include "herd_places_msg.h"

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#define DEFAULT_TIMEOUT_MS   5000L
#define DEFAULT_CACHE_MAX    1024       /* cached bodies when the configuration says 0 */
#define MAX_BODY_BYTES       (16u << 20) /* an upstream body past this is an error */
#define MAX_CACHE_BYTES      (64u << 20) /* all cached bodies together */
#define MAX_IDLE_WAIT_MS     1000L      /* longest sleep with nothing scheduled */
#define MAX_DRAIN            256        /* requests taken per turn, so calls keep moving */
#define DEFAULT_IN_FLIGHT    64L        /* places.max_in_flight when unset */
#define PIPE_SLACK           4096       /* pipe room beyond the bounds (see herd_places_new) */
#define DEFAULT_QUEUED       4096L      /* places.max_queued when unset */
/* Idle upstream connections: libcurl drops one older than MAXAGE_CONN_S
 * when it looks for one to reuse, and the whole pool is closed once no call
 * has run for POOL_IDLE_MS (libcurl keeps idle connections open otherwise). */
#define MAXAGE_CONN_S        30L
#define POOL_IDLE_MS         30000

struct flight_t;

/* One request waiting for an upstream call. */
typedef struct waiter_t {
    uint64_t req_id;         /* the node's id */
    uint32_t bound;          /* its own bound: each waiter gets its own cut */
    bool first;              /* answered from the cache: counted as neither upstream nor shared */
    struct flight_t *flight; /* the call it waits for */
    struct waiter_t *next;   /* next waiter of the same call */
} waiter_t;

/* One upstream call, running or queued for a slot. */
typedef struct flight_t {
    char *key;                     /* dedupe and cache key: "lat,lng metres" */
    char *what;                    /* "location=LAT,LNG radius=M" for notes (no API key) */
    char *url;                     /* the request URL (with the key: never logged) */
    bool running;                  /* started (else waiting in the queue) */
    size_t n_waiters;              /* requests in waiters */
    struct flight_t *q_prev, *q_next; /* the queue, while not running */
    CURL *easy;                    /* the transfer */
    char *body;                    /* bytes received so far */
    size_t len, cap;               /* used and allocated size of body */
    bool too_large;                /* the body passed MAX_BODY_BYTES and was abandoned */
    waiter_t *waiters;             /* everyone who gets this call's answer, first one first */
    waiter_t **tail;               /* where the next waiter is linked */
    struct timespec start;         /* when the call started, for upstream_ms */
    char errbuf[CURL_ERROR_SIZE];  /* libcurl's own error text */
} flight_t;

/* One reply the pipe has not taken yet. */
typedef struct outmsg_t {
    char *data;            /* the frame */
    size_t len;            /* its size */
    struct outmsg_t *next; /* next in sending order */
} outmsg_t;

/* Everything the worker thread owns. Created and freed by the caller's
 * thread, used only by the worker in between. */
typedef struct {
    char *url;                    /* base Nearby Search URL */
    char *key;                    /* API key, NULL when none is configured */
    char *key_escaped;            /* the key as it appears in a URL, for scrubbing */
    long timeout_ms;              /* deadline of one call */
    long max_in_flight;           /* calls running at once */
    long max_queued;              /* requests waiting for a slot */
    CURLM *multi;                 /* all transfers, and the connection pool */
    bool pool_used;               /* the pool may hold idle connections */
    int64_t idle_since;           /* when the last call ended (zclock_mono) */
    zhashx_t *flights;            /* key -> flight_t, running and queued */
    zhashx_t *waiters;            /* req_id ("%" PRIx64) -> waiter_t, for cancels */
    size_t in_flight;             /* running flights */
    size_t queued;                /* waiters of queued flights */
    flight_t *q_head, *q_tail;    /* queued flights, oldest first */
    herd_places_cache_t *cache;   /* OK bodies by key */
    outmsg_t *out_head, *out_tail; /* replies waiting for room in the pipe */
    bool stopping;                /* "$STOP" seen: nothing new is started */
} worker_t;

struct herd_places_t {
    zactor_t *actor; /* the worker thread and its pipe */
    worker_t *w;     /* the worker's state, freed after the thread ends */
};

/* ---------------------------------------------------------------------- */
/* Small helpers */

static char *xstrdup_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xstrdup_printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = n < 0 ? NULL : malloc((size_t)n + 1);
    if (s) {
        va_start(ap, fmt);
        vsnprintf(s, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    return s;
}

static double ms_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

/* Replaces every occurrence of `needle` in the malloc'd *s by "***". */
static void scrub_one(char **s, const char *needle)
{
    if (!*s || !needle || !*needle)
        return;
    size_t nlen = strlen(needle);
    char *hit = strstr(*s, needle);
    while (hit) {
        size_t at = (size_t)(hit - *s);
        char *t = xstrdup_printf("%.*s***%s", (int)at, *s, hit + nlen);
        if (!t) {
            /* Out of memory: better no text than one with the key. */
            free(*s);
            *s = NULL;
            return;
        }
        free(*s);
        *s = t;
        hit = strstr(*s + at + 3, needle);
    }
}

/* The key never leaves the worker in a message or a note. */
static void scrub_key(const worker_t *w, char **s)
{
    scrub_one(s, w->key);
    scrub_one(s, w->key_escaped);
}

/* ---------------------------------------------------------------------- */
/* Replies */

static void queue_frame(worker_t *w, char *data, size_t len)
{
    outmsg_t *m = malloc(sizeof *m);
    if (!m) {
        free(data); /* the node answers that request on its own deadline */
        return;
    }
    m->data = data;
    m->len = len;
    m->next = NULL;
    if (w->out_tail)
        w->out_tail->next = m;
    else
        w->out_head = m;
    w->out_tail = m;
}

/* Queues one reply; `json` and `note` are copied. Out of memory, nothing is
 * sent and the node answers that request on its own deadline. */
static void reply(worker_t *w, uint64_t req_id, const char *json, size_t json_len, const char *note,
                  bool cache_hit, bool shared, bool upstream, double upstream_ms)
{
    herd_places_reply_t r = {.req_id = req_id, .json = (char *)json, .json_len = json_len, .note = (char *)note,
                             .cache_hit = cache_hit, .shared = shared, .upstream = upstream,
                             .upstream_ms = upstream_ms};
    size_t len = 0;
    char *frame = herd_places_msg_encode_reply(&r, &len);
    if (frame)
        queue_frame(w, frame, len);
}

/* Queues an error object with its note for one request. `message` must
 * already be free of the key. */
static void reply_error(worker_t *w, uint64_t req_id, const char *status, const char *message, const char *what,
                        bool shared, bool upstream, double upstream_ms)
{
    char *json = herd_places_error_json(status, message);
    char *note = xstrdup_printf("Places call for %s: %s", what ? what : "a request", message);
    scrub_key(w, &note);
    if (json)
        reply(w, req_id, json, strlen(json), note, false, shared, upstream, upstream_ms);
    free(json);
    free(note);
}

/* Cuts a body for one request and queues the answer; a body that is not a
 * JSON object becomes an error object. Returns whether the status is "OK". */
static bool reply_cut(worker_t *w, uint64_t req_id, uint32_t bound, const char *body, size_t len, const char *what,
                      bool cache_hit, bool first, double upstream_ms)
{
    char *out = NULL;
    size_t out_len = 0;
    bool ok = false;
    char err[200];
    bool shared = !cache_hit && !first, upstream = !cache_hit && first;
    if (herd_places_cut(body, len, bound, &out, &out_len, &ok, err, sizeof err) == 0) {
        reply(w, req_id, out, out_len, NULL, cache_hit, shared, upstream, upstream_ms);
        free(out);
        return ok;
    }
    char *msg = xstrdup_printf("Places service sent a body that is not a JSON object (%s)", err);
    reply_error(w, req_id, "UNKNOWN_ERROR", msg ? msg : "Places service sent a body that is not a JSON object",
                what, shared, upstream, upstream_ms);
    free(msg);
    return false;
}

/* Sends queued replies until the pipe is full. */
static void flush_replies(worker_t *w, void *sock)
{
    while (w->out_head) {
        outmsg_t *m = w->out_head;
        if (zmq_send(sock, m->data, m->len, ZMQ_DONTWAIT) < 0) {
            if (errno == EINTR)
                continue;
            return; /* EAGAIN: the node will read; ETERM: we are going away */
        }
        w->out_head = m->next;
        if (!w->out_head)
            w->out_tail = NULL;
        free(m->data);
        free(m);
    }
}

static void drop_replies(worker_t *w)
{
    while (w->out_head) {
        outmsg_t *m = w->out_head;
        w->out_head = m->next;
        free(m->data);
        free(m);
    }
    w->out_tail = NULL;
}

/* ---------------------------------------------------------------------- */
/* The connection pool */

/* A multi handle whose pool holds at most max_in_flight connections. */
static CURLM *multi_new(long max_in_flight)
{
    CURLM *m = curl_multi_init();
    if (m && (curl_multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, max_in_flight) != CURLM_OK ||
              curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, max_in_flight) != CURLM_OK)) {
        curl_multi_cleanup(m);
        m = NULL;
    }
    return m;
}

/* Closes every idle upstream connection once no call has run for
 * POOL_IDLE_MS, by replacing the multi handle (no transfer is attached to
 * it then). */
static void pool_prune(worker_t *w)
{
    if (!w->pool_used || w->in_flight || zclock_mono() - w->idle_since < POOL_IDLE_MS)
        return;
    CURLM *fresh = multi_new(w->max_in_flight);
    if (!fresh)
        return;
    curl_multi_cleanup(w->multi);
    w->multi = fresh;
    w->pool_used = false;
}

/* ---------------------------------------------------------------------- */
/* Upstream calls */

static size_t on_body(char *data, size_t size, size_t nmemb, void *userp)
{
    flight_t *f = userp;
    size_t n = size * nmemb;
    if (n > MAX_BODY_BYTES - f->len) {
        f->too_large = true;
        return 0; /* makes libcurl end the transfer with CURLE_WRITE_ERROR */
    }
    if (f->len + n + 1 > f->cap) {
        size_t cap = f->cap ? f->cap : 16384;
        while (cap < f->len + n + 1)
            cap *= 2;
        char *p = realloc(f->body, cap);
        if (!p)
            return 0;
        f->body = p;
        f->cap = cap;
    }
    memcpy(f->body + f->len, data, n);
    f->len += n;
    return n;
}

static void id_text(uint64_t id, char *buf, size_t cap)
{
    snprintf(buf, cap, "%" PRIx64, id);
}

/* Removes a waiter from the cancel index and frees it. */
static void waiter_forget(worker_t *w, waiter_t *wt)
{
    char k[24];
    id_text(wt->req_id, k, sizeof k);
    zhashx_delete(w->waiters, k);
    free(wt);
}

/* Frees a flight that is in no table, queue or multi handle any more; its
 * waiters are forgotten unanswered. */
static void flight_free(worker_t *w, flight_t *f)
{
    while (f->waiters) {
        waiter_t *n = f->waiters->next;
        waiter_forget(w, f->waiters);
        f->waiters = n;
    }
    if (f->easy)
        curl_easy_cleanup(f->easy);
    if (f->url)
        memset(f->url, 0, strlen(f->url)); /* it holds the key */
    free(f->url);
    free(f->key);
    free(f->what);
    free(f->body);
    free(f);
}

static bool flight_add_waiter(worker_t *w, flight_t *f, uint64_t req_id, uint32_t bound)
{
    waiter_t *wt = calloc(1, sizeof *wt);
    char k[24];
    id_text(req_id, k, sizeof k);
    if (!wt || zhashx_insert(w->waiters, k, wt) != 0) {
        free(wt); /* out of memory, or an id already waiting: refused */
        return false;
    }
    wt->req_id = req_id;
    wt->bound = bound;
    wt->flight = f;
    *f->tail = wt;
    f->tail = &wt->next;
    f->n_waiters++;
    if (!f->running)
        w->queued++;
    return true;
}

/* A flight, not yet running, in the table. Returns NULL when out of memory. */
static flight_t *flight_new(worker_t *w, const char *key, const char *what, herd_span_t lat, herd_span_t lng,
                            herd_span_t radius_km)
{
    flight_t *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->tail = &f->waiters;
    f->key = strdup(key);
    f->what = strdup(what);
    f->url = herd_places_url(w->url, lat, lng, radius_km, w->key);
    if (!f->key || !f->what || !f->url || zhashx_insert(w->flights, key, f) != 0) {
        flight_free(w, f);
        return NULL;
    }
    return f;
}

static void queue_unlink(worker_t *w, flight_t *f)
{
    if (f->q_prev)
        f->q_prev->q_next = f->q_next;
    else
        w->q_head = f->q_next;
    if (f->q_next)
        f->q_next->q_prev = f->q_prev;
    else
        w->q_tail = f->q_prev;
    f->q_prev = f->q_next = NULL;
}

static void queue_push(worker_t *w, flight_t *f)
{
    f->q_prev = w->q_tail;
    f->q_next = NULL;
    if (w->q_tail)
        w->q_tail->q_next = f;
    else
        w->q_head = f;
    w->q_tail = f;
}

/* Starts the transfer of a flight. Returns -1 when it could not start. */
static int flight_run(worker_t *w, flight_t *f)
{
    CURL *e = f->easy = curl_easy_init();
    if (!e)
        return -1;
    int bad = 0;
    bad |= curl_easy_setopt(e, CURLOPT_URL, f->url) != CURLE_OK; /* libcurl keeps its own copy */
    bad |= curl_easy_setopt(e, CURLOPT_HTTPGET, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK;
#if LIBCURL_VERSION_NUM >= 0x075500
    bad |= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK;
#else
    bad |= curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS)) != CURLE_OK;
#endif
    bad |= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, w->timeout_ms) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_MAXAGE_CONN, MAXAGE_CONN_S) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "") != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_USERAGENT, "herd/0.1") != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_WRITEDATA, f) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, f->errbuf) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_PRIVATE, f) != CURLE_OK;
    if (bad || curl_multi_add_handle(w->multi, e) != CURLM_OK)
        return -1;
    clock_gettime(CLOCK_MONOTONIC, &f->start);
    f->running = true;
    w->in_flight++;
    w->pool_used = true;
    return 0;
}

/* Answers every waiter of a flight that could not start, and frees it. */
static void flight_fail(worker_t *w, flight_t *f, const char *message)
{
    zhashx_delete(w->flights, f->key);
    for (waiter_t *wt = f->waiters; wt; wt = wt->next)
        reply_error(w, wt->req_id, "UNKNOWN_ERROR", message, f->what, false, false, 0);
    flight_free(w, f);
}

/* Starts queued flights while there are free slots. */
static void start_queued(worker_t *w)
{
    while (w->q_head && (long)w->in_flight < w->max_in_flight) {
        flight_t *f = w->q_head;
        queue_unlink(w, f);
        w->queued -= f->n_waiters;
        if (flight_run(w, f) != 0)
            flight_fail(w, f, "could not start the Places request");
    }
}

/* A running flight leaves the multi handle (done or cancelled). */
static void flight_stop(worker_t *w, flight_t *f)
{
    curl_multi_remove_handle(w->multi, f->easy);
    zhashx_delete(w->flights, f->key);
    f->running = false;
    w->in_flight--;
    if (!w->in_flight)
        w->idle_since = zclock_mono();
}

/* Answers every waiter of a finished call, caches a good body, frees it. */
static void flight_done(worker_t *w, flight_t *f, CURLcode result)
{
    double ms = ms_since(&f->start);
    long code = 0;
    curl_easy_getinfo(f->easy, CURLINFO_RESPONSE_CODE, &code);
    flight_stop(w, f);

    bool failed = result != CURLE_OK || f->too_large || code < 200 || code > 299;
    if (failed) {
        char *msg = NULL;
        if (result == CURLE_OPERATION_TIMEDOUT)
            msg = xstrdup_printf("Places request timed out after %ld ms", w->timeout_ms);
        else if (f->too_large)
            msg = xstrdup_printf("Places response is larger than %u bytes", MAX_BODY_BYTES);
        else if (result != CURLE_OK)
            msg = xstrdup_printf("Places request failed: %s", f->errbuf[0] ? f->errbuf : curl_easy_strerror(result));
        else
            msg = xstrdup_printf("Places service answered with HTTP status %ld", code);
        scrub_key(w, &msg);
        for (waiter_t *wt = f->waiters; wt; wt = wt->next)
            reply_error(w, wt->req_id, "UNKNOWN_ERROR", msg ? msg : "Places request failed", f->what,
                        wt != f->waiters, wt == f->waiters, ms);
        free(msg);
        flight_free(w, f);
        return;
    }
    bool status_ok = false;
    for (waiter_t *wt = f->waiters; wt; wt = wt->next)
        status_ok = reply_cut(w, wt->req_id, wt->bound, f->body ? f->body : "", f->len, f->what, false,
                              wt == f->waiters, ms);
    if (status_ok && f->waiters) {
        herd_places_cache_put(w->cache, f->key, f->body, f->len, zclock_mono());
        f->body = NULL;
    }
    flight_free(w, f);
}

static void collect_done(worker_t *w)
{
    CURLMsg *m;
    int left;
    bool any = false;
    while ((m = curl_multi_info_read(w->multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE)
            continue;
        CURL *e = m->easy_handle;
        CURLcode result = m->data.result; /* m is invalid once the handle is removed */
        char *priv = NULL;
        curl_easy_getinfo(e, CURLINFO_PRIVATE, &priv);
        if (priv) {
            flight_done(w, (flight_t *)priv, result);
            any = true;
        }
    }
    if (any)
        start_queued(w);
}

/* The node no longer wants req_id's answer: forget it, and stop its call
 * (or take it out of the queue) when nobody else waits for it. */
static void handle_cancel(worker_t *w, uint64_t req_id)
{
    char k[24];
    id_text(req_id, k, sizeof k);
    waiter_t *wt = zhashx_lookup(w->waiters, k);
    if (!wt)
        return; /* already answered */
    flight_t *f = wt->flight;
    waiter_t **at = &f->waiters;
    while (*at != wt)
        at = &(*at)->next;
    *at = wt->next;
    if (f->tail == &wt->next)
        f->tail = at;
    f->n_waiters--;
    if (!f->running)
        w->queued--;
    waiter_forget(w, wt);
    if (f->waiters)
        return;
    if (f->running) {
        flight_stop(w, f);
        flight_free(w, f);
        start_queued(w);
    } else {
        queue_unlink(w, f);
        zhashx_delete(w->flights, f->key);
        flight_free(w, f);
    }
}

static void abandon_flights(worker_t *w)
{
    for (flight_t *f = zhashx_first(w->flights); f; f = zhashx_next(w->flights)) {
        if (f->running)
            curl_multi_remove_handle(w->multi, f->easy);
        flight_free(w, f);
    }
    zhashx_purge(w->flights);
    w->q_head = w->q_tail = NULL;
    w->in_flight = w->queued = 0;
}

/* ---------------------------------------------------------------------- */
/* Requests from the node */

static herd_span_t strip_plus(herd_span_t v)
{
    if (v.len > 0 && v.p[0] == '+') {
        v.p++;
        v.len--;
    }
    return v;
}

/* Finds or makes the flight for a request that the cache did not answer,
 * and adds the request to it; answers it with an error object when the
 * bounds refuse it or memory runs out. */
static void join_flight(worker_t *w, uint64_t req_id, const char *key, const char *what, herd_span_t lat,
                        herd_span_t lng, herd_span_t radius, uint32_t bound)
{
    flight_t *f = zhashx_lookup(w->flights, key); /* an identical call answers this one too */
    bool full = (!f || !f->running) && (long)w->queued >= w->max_queued &&
                !(!f && (long)w->in_flight < w->max_in_flight);
    if (full) {
        char *msg = xstrdup_printf("too many Places requests are waiting (places.max_queued is %ld)", w->max_queued);
        reply_error(w, req_id, "UNKNOWN_ERROR", msg ? msg : "too many Places requests are waiting", what, false,
                    false, 0);
        free(msg);
        return;
    }
    bool fresh = !f;
    if (fresh && !(f = flight_new(w, key, what, lat, lng, radius))) {
        reply_error(w, req_id, "UNKNOWN_ERROR", "could not start the Places request", what, false, false, 0);
        return;
    }
    if (!flight_add_waiter(w, f, req_id, bound)) {
        reply_error(w, req_id, "UNKNOWN_ERROR", "could not start the Places request", what, false, false, 0);
        if (fresh) {
            zhashx_delete(w->flights, key);
            flight_free(w, f);
        }
        return;
    }
    if (fresh) {
        queue_push(w, f);
        start_queued(w);
    }
}

static void handle_request(worker_t *w, uint64_t req_id, herd_span_t lat, herd_span_t lng, herd_span_t radius,
                           uint32_t bound)
{
    herd_span_t la = strip_plus(lat), lo = strip_plus(lng);
    size_t mcap = radius.len + 16; /* times 1000 adds at most three digits */
    char *metres = malloc(mcap);
    size_t mlen = metres ? herd_proto_radius_metres(radius, metres, mcap) : 0;
    char *what = mlen ? xstrdup_printf("location=%.*s,%.*s radius=%s", (int)la.len, la.p, (int)lo.len, lo.p, metres)
                      : NULL;
    /* The radius in metres, not its text: "10", "10.0" and "10.000" are one
     * request, one call and one cache entry. */
    char *key = mlen ? xstrdup_printf("%.*s,%.*s %s", (int)la.len, la.p, (int)lo.len, lo.p, metres) : NULL;
    if (!w->key)
        reply_error(w, req_id, "REQUEST_DENIED", "no Places API key is configured", what, false, false, 0);
    else if (!mlen)
        reply_error(w, req_id, "UNKNOWN_ERROR", "invalid radius", NULL, false, false, 0);
    else if (!what || !key)
        reply_error(w, req_id, "UNKNOWN_ERROR", "out of memory", NULL, false, false, 0);
    else {
        size_t cached_len = 0;
        const char *cached = herd_places_cache_get(w->cache, key, zclock_mono(), &cached_len);
        if (cached)
            reply_cut(w, req_id, bound, cached, cached_len, what, true, false, 0);
        else
            join_flight(w, req_id, key, what, lat, lng, radius, bound);
    }
    free(metres);
    free(key);
    free(what);
}

/* Decodes one frame from the node; a malformed one is answered when its id
 * can be read. */
static void handle_frame(worker_t *w, const char *data, size_t len)
{
    herd_places_msg_t m;
    uint64_t id = 0;
    if (herd_places_msg_decode_to_worker(data, len, &m, &id) != 0) {
        if (id)
            reply_error(w, id, "UNKNOWN_ERROR", "malformed request to the Places worker", NULL, false, false, 0);
        return;
    }
    if (m.kind == HERD_PLACES_MSG_CANCEL)
        handle_cancel(w, m.req_id);
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
static bool drain_pipe(worker_t *w, void *sock)
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
            abandon_flights(w);
            drop_replies(w);
            char *ack = strdup("$STOPPED");
            if (ack)
                queue_frame(w, ack, strlen(ack));
        } else if (!w->stopping)
            handle_frame(w, zmq_msg_data(&m), zmq_msg_size(&m));
        zmq_msg_close(&m);
        if (end)
            return true;
    }
    return false;
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
        collect_done(w);
        flush_replies(w, sock);
        pool_prune(w);

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
        if ((events & ZMQ_POLLIN) || (w->out_head && (events & ZMQ_POLLOUT)))
            wait_ms = 0;
        else {
            long t = -1;
            curl_multi_timeout(w->multi, &t);
            if (t >= 0 && t < wait_ms)
                wait_ms = t;
        }
        if (wait_ms > 0) {
            struct curl_waitfd extra = {.fd = fd, .events = CURL_WAIT_POLLIN, .revents = 0};
            curl_multi_wait(w->multi, &extra, 1, (int)wait_ms, NULL);
        }
    }
    abandon_flights(w);
    drop_replies(w);
}

/* ---------------------------------------------------------------------- */
/* The node's side */

static void worker_free(worker_t *w)
{
    if (!w)
        return;
    if (w->flights) {
        abandon_flights(w);
        zhashx_destroy(&w->flights);
    }
    zhashx_destroy(&w->waiters);
    herd_places_cache_destroy(&w->cache);
    drop_replies(w);
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
    w->timeout_ms = conf->timeout_ms > 0 ? conf->timeout_ms : DEFAULT_TIMEOUT_MS;
    w->max_in_flight = conf->max_in_flight > 0 ? conf->max_in_flight : DEFAULT_IN_FLIGHT;
    w->max_queued = conf->max_queued >= 0 ? conf->max_queued : DEFAULT_QUEUED;
    w->multi = multi_new(w->max_in_flight);
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
    free(self);
    curl_global_cleanup();
    *p = NULL;
}

zsock_t *herd_places_sock(herd_places_t *p)
{
    return zactor_sock(p->actor);
}
