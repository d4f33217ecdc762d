/* herd_places_flight: the Places worker's upstream calls: at most
 * max_in_flight at once over a bounded libcurl pool, at most max_queued
 * requests waiting (for a free slot, or on a call another request started),
 * one call per distinct request shared by every request that waits for it,
 * its body cut once per distinct bound and sent once for all the requests
 * with that bound, deadlines counted from each call's start, and cancels
 * that stop a call nobody waits for any more. Runs on the worker thread;
 * see herd_places_worker.h. */
#include "herd_places_worker.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herd_places_cut.h"

/* Idle upstream connections: libcurl drops one older than MAXAGE_CONN_S
 * when it looks for one to reuse, and the whole pool is closed once no call
 * has run for POOL_IDLE_MS (libcurl keeps idle connections open otherwise). */
#define MAXAGE_CONN_S 30L
#define POOL_IDLE_MS  30000

/* ---------------------------------------------------------------------- */
/* The connection pool */

/* A multi handle whose pool holds at most max_in_flight connections. */
CURLM *places_multi_new(long max_in_flight)
{
    CURLM *m = curl_multi_init();
    if (m && (curl_multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, max_in_flight) != CURLM_OK ||
              curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, max_in_flight) != CURLM_OK)) {
        curl_multi_cleanup(m);
        m = NULL;
    }
    return m;
}

void places_pool_resize(worker_t *w)
{
    curl_multi_setopt(w->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, w->max_in_flight);
    curl_multi_setopt(w->multi, CURLMOPT_MAXCONNECTS, w->max_in_flight);
}

/* Closes every idle upstream connection once no call has run for
 * POOL_IDLE_MS, by replacing the multi handle (no transfer is attached to
 * it then). */
void places_pool_prune(worker_t *w)
{
    if (!w->pool_used || w->in_flight || zclock_mono() - w->idle_since < POOL_IDLE_MS)
        return;
    CURLM *fresh = places_multi_new(w->max_in_flight);
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

/* What a flight adds to w->waiting: all its waiters, but the one whose
 * call runs. Taken off before a flight changes and added back after. */
static size_t waiting_of(const flight_t *f)
{
    return f->running && f->n_waiters ? f->n_waiters - 1 : f->n_waiters;
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
    w->waiting -= waiting_of(f);
    *f->tail = wt;
    f->tail = &wt->next;
    f->n_waiters++;
    w->waiting += waiting_of(f);
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

/* The flight of a node on the queue or the running list (a flight is on
 * one of them, by f->running), or NULL. */
static flight_t *flight_of(herd_list_node_t *n)
{
    return HERD_LIST_ENTRY(n, flight_t, link);
}

static void queue_unlink(worker_t *w, flight_t *f)
{
    herd_list_remove(&w->queue, &f->link);
}

static void queue_push(worker_t *w, flight_t *f)
{
    herd_list_push(&w->queue, &f->link);
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
    /* No CURLOPT_TIMEOUT_MS: places_expire holds every running call to the
     * timeout in force, counted from its start, so a reload that changes
     * it applies to calls already running too. */
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
    w->waiting -= waiting_of(f);
    f->running = true;
    w->waiting += waiting_of(f);
    herd_list_push(&w->running, &f->link);
    w->in_flight++;
    w->pool_used = true;
    return 0;
}

/* The ids of a flight's waiters (all, or those with `bound` when bound is
 * not 0), first one first, in ids (room for n_waiters). Returns how many. */
static size_t waiter_ids(const flight_t *f, uint32_t bound, uint64_t *ids)
{
    size_t n = 0;
    for (const waiter_t *wt = f->waiters; wt; wt = wt->next)
        if (!bound || wt->bound == bound)
            ids[n++] = wt->req_id;
    return n;
}

/* Answers every waiter of a flight with one error object (the first made
 * the call when `called`), takes the flight out of w->waiting and frees
 * it. The flight is in no table, queue or running list any more. */
static void flight_answer_error(worker_t *w, flight_t *f, const char *message, bool called, double ms)
{
    w->waiting -= waiting_of(f);
    uint64_t *ids = f->n_waiters ? malloc(f->n_waiters * sizeof *ids) : NULL;
    if (ids) {
        size_t n = waiter_ids(f, 0, ids);
        places_how_t how = {.upstream = called, .shared = called && n > 1, .upstream_ms = ms};
        places_reply_error(w, ids, n, "UNKNOWN_ERROR", message, f->what, how);
    }
    /* (Out of memory: the node answers them on its own deadline.) */
    free(ids);
    flight_free(w, f);
}

/* Answers every waiter of a flight that could not start, and frees it. */
static void flight_fail(worker_t *w, flight_t *f, const char *message)
{
    zhashx_delete(w->flights, f->key);
    flight_answer_error(w, f, message, false, 0);
}

/* Starts queued flights while there are free slots. */
static void start_queued(worker_t *w)
{
    while (w->queue.head && (long)w->in_flight < w->max_in_flight) {
        flight_t *f = flight_of(w->queue.head);
        queue_unlink(w, f);
        if (flight_run(w, f) != 0)
            flight_fail(w, f, "could not start the Places request");
    }
}

/* A running flight leaves the multi handle (done or cancelled); its
 * waiters still count in w->waiting. */
static void flight_stop(worker_t *w, flight_t *f)
{
    curl_multi_remove_handle(w->multi, f->easy);
    zhashx_delete(w->flights, f->key);
    herd_list_remove(&w->running, &f->link);
    w->waiting -= waiting_of(f);
    f->running = false;
    w->waiting += waiting_of(f);
    w->in_flight--;
    if (!w->in_flight)
        w->idle_since = zclock_mono();
}

/* The timeout's error message, free of the key (NULL when out of memory). */
static char *timeout_message(const worker_t *w)
{
    char *msg = places_printf("Places request timed out after %ld ms", w->timeout_ms);
    places_scrub_key(w, &msg);
    return msg;
}

long places_expire(worker_t *w)
{
    bool any = false;
    while (w->running.head) {
        flight_t *f = flight_of(w->running.head);
        double ms = places_ms_since(&f->start);
        if (ms < (double)w->timeout_ms) {
            if (any)
                start_queued(w);
            return (long)((double)w->timeout_ms - ms) + 1;
        }
        flight_stop(w, f);
        char *msg = timeout_message(w);
        flight_answer_error(w, f, msg ? msg : "Places request timed out", true, ms);
        free(msg);
        any = true;
    }
    if (any)
        start_queued(w);
    return -1;
}

/* Answers every waiter of a finished call (one answer per distinct bound,
 * cut once), caches a good body, frees it. */
static void flight_done(worker_t *w, flight_t *f, CURLcode result)
{
    double ms = places_ms_since(&f->start);
    long code = 0;
    curl_easy_getinfo(f->easy, CURLINFO_RESPONSE_CODE, &code);
    flight_stop(w, f);

    bool failed = result != CURLE_OK || f->too_large || code < 200 || code > 299;
    if (failed) {
        char *msg = NULL;
        if (result == CURLE_OPERATION_TIMEDOUT)
            msg = timeout_message(w);
        else if (f->too_large)
            msg = places_printf("Places response is larger than %u bytes", MAX_BODY_BYTES);
        else if (result != CURLE_OK)
            msg = places_printf("Places request failed: %s", f->errbuf[0] ? f->errbuf : curl_easy_strerror(result));
        else
            msg = places_printf("Places service answered with HTTP status %ld", code);
        places_scrub_key(w, &msg);
        flight_answer_error(w, f, msg ? msg : "Places request failed", true, ms);
        free(msg);
        return;
    }
    w->waiting -= waiting_of(f);
    bool status_ok = false;
    uint64_t *ids = f->n_waiters ? malloc(f->n_waiters * sizeof *ids) : NULL;
    /* Bounds are 1..HERD_MAX_BOUND: one pass per distinct bound, in the
     * order their first waiters came. */
    uint32_t done[HERD_MAX_BOUND + 1] = {0};
    for (const waiter_t *wt = f->waiters; ids && wt; wt = wt->next) {
        uint32_t b = wt->bound <= HERD_MAX_BOUND ? wt->bound : 0;
        if (b && done[b])
            continue;
        size_t n = 0;
        if (b) {
            done[b] = 1;
            n = waiter_ids(f, b, ids);
        } else
            ids[n++] = wt->req_id; /* (not a bound the node sends: cut alone) */
        bool first = wt == f->waiters;
        places_how_t how = {.upstream = first, .shared = !first || n > 1, .upstream_ms = ms};
        status_ok = places_reply_cut(w, ids, n, wt->bound, f->body ? f->body : "", f->len, f->what, how);
    }
    free(ids);
    if (status_ok && f->waiters) {
        herd_places_cache_put(w->cache, f->key, f->body, f->len, zclock_mono());
        f->body = NULL;
    }
    flight_free(w, f);
}

void places_collect(worker_t *w)
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
void places_cancel(worker_t *w, uint64_t req_id)
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
    w->waiting -= waiting_of(f);
    f->n_waiters--;
    w->waiting += waiting_of(f);
    waiter_forget(w, wt);
    if (f->waiters)
        return;
    if (f->running) {
        /* Its slot is refilled once the pipe is drained (places_refill), so
         * that a queued call cancelled by a later frame of the same batch is
         * never started. */
        flight_stop(w, f);
        flight_free(w, f);
    } else {
        queue_unlink(w, f);
        zhashx_delete(w->flights, f->key);
        flight_free(w, f);
    }
}

void places_refill(worker_t *w)
{
    start_queued(w);
}

void places_abandon(worker_t *w)
{
    for (flight_t *f = zhashx_first(w->flights); f; f = zhashx_next(w->flights)) {
        if (f->running)
            curl_multi_remove_handle(w->multi, f->easy);
        flight_free(w, f);
    }
    zhashx_purge(w->flights);
    w->queue = (herd_list_t){0};
    w->running = (herd_list_t){0};
    w->in_flight = w->waiting = 0;
}

void places_join(worker_t *w, uint64_t req_id, const char *key, const char *what, herd_span_t lat,
                        herd_span_t lng, herd_span_t radius, uint32_t bound)
{
    flight_t *f = zhashx_lookup(w->flights, key); /* an identical call answers this one too */
    /* Every request waits, and counts, but one that starts a call of its
     * own at once: joining a running call is waiting too, so a flood of
     * identical requests is bounded like distinct ones. */
    bool starts_now = !f && (long)w->in_flight < w->max_in_flight && !w->queue.head;
    places_how_t none = {0};
    if (!starts_now && (long)w->waiting >= w->max_queued) {
        char *msg = places_printf("too many Places requests are waiting (places.max_queued is %ld)", w->max_queued);
        places_reply_error(w, &req_id, 1, "UNKNOWN_ERROR", msg ? msg : "too many Places requests are waiting", what,
                           (places_how_t){.refused = true});
        free(msg);
        return;
    }
    bool fresh = !f;
    if (fresh && !(f = flight_new(w, key, what, lat, lng, radius))) {
        places_reply_error(w, &req_id, 1, "UNKNOWN_ERROR", "could not start the Places request", what, none);
        return;
    }
    if (!flight_add_waiter(w, f, req_id, bound)) {
        places_reply_error(w, &req_id, 1, "UNKNOWN_ERROR", "could not start the Places request", what, none);
        if (fresh) {
            zhashx_delete(w->flights, key);
            w->waiting -= waiting_of(f);
            flight_free(w, f);
        }
        return;
    }
    if (fresh) {
        queue_push(w, f);
        start_queued(w);
    }
}
