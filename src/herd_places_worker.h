/* herd_places_worker.h: the Places worker's state, private to its layers,
 * each calling only those below it: herd_places.c (the thread, its loop,
 * requests, the node's handle) -> herd_places_flight.c (upstream calls,
 * their queue, the connection pool) -> herd_places_reply.c (answers queued
 * for the pipe); herd_places_pipe.c is the node's end. worker_t is used by the worker
 * thread only, between herd_places_new and herd_places_destroy;
 * herd_places_t by the node's thread. */
#ifndef HERD_PLACES_WORKER_H
#define HERD_PLACES_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <curl/curl.h>
#include <czmq.h>

#include "herd_list.h"
#include "herd_places_cut.h"
#include "herd_places_cache.h"
#include "herd_places_msg.h"
#include "herd_proto.h"

#define MAX_BODY_BYTES (16u << 20) /* an upstream body past this is an error */

struct flight_t;

/* One request waiting for an upstream call. */
typedef struct waiter_t {
    uint64_t req_id;         /* the node's id */
    uint32_t bound;          /* its own bound: each waiter gets its own cut */
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
    herd_list_node_t link;         /* on the queue while not running; on the running list (start order) while running */
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
    herd_list_node_t link; /* on the worker's out list, in sending order */
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
    size_t waiting;               /* waiters but the first of each running flight: what max_queued bounds */
    herd_list_t queue;            /* queued flights, oldest first (flight_t.link) */
    herd_list_t running;          /* running flights, first started first: deadline order (flight_t.link) */
    herd_places_cache_t *cache;   /* OK bodies by key */
    herd_list_t out;              /* replies waiting for room in the pipe, in sending order (outmsg_t.link) */
    bool stopping;                /* "$STOP" seen: nothing new is started */
} worker_t;

/* The node's handle on the worker. */
struct herd_places_t {
    zactor_t *actor;             /* the worker thread and its pipe */
    worker_t *w;                 /* the worker's state, freed after the thread ends */
    herd_places_answer_t inbox;  /* the answer herd_places_recv is handing out, request by request */
    size_t inbox_next;           /* the next of its ids to hand out */
};

/* ---- herd_places_reply.c ---- */

/* printf into a malloc'd string, or NULL. */
char *places_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Milliseconds since t0 (CLOCK_MONOTONIC). */
double places_ms_since(const struct timespec *t0);

/* Replaces the key, raw or URL-escaped, in the malloc'd *s by "***". */
void places_scrub_key(const worker_t *w, char **s);

/* How an answer came about, for its flags (see herd_places_msg.h). */
typedef struct {
    bool cache_hit; /* from the cache */
    bool upstream;  /* the first id made the upstream call */
    bool shared;    /* the others joined a call */
    bool refused;   /* places.max_queued turned them away */
    double upstream_ms;
} places_how_t;

/* Queues one error object with its note for the n requests in ids.
 * `message` must already be free of the key. */
void places_reply_error(worker_t *w, const uint64_t *ids, size_t n, const char *status, const char *message,
                        const char *what, places_how_t how);

/* Cuts a body once for `bound` and queues that one answer for the n
 * requests in ids; a body that is not a JSON object becomes an error
 * object. Returns whether the status is "OK". */
bool places_reply_cut(worker_t *w, const uint64_t *ids, size_t n, uint32_t bound, const char *body, size_t len,
                      const char *what, places_how_t how);

/* Queues a frame (taking data) for the pipe; out of memory it is dropped,
 * and the node answers those requests on its own deadline. */
void places_queue_frame(worker_t *w, char *data, size_t len);

/* Sends queued replies until the pipe is full. */
void places_flush_replies(worker_t *w, void *sock);

/* Drops the queued replies, unsent. */
void places_drop_replies(worker_t *w);

/* ---- herd_places_flight.c ---- */

/* A multi handle whose pool holds at most max_in_flight connections, or NULL. */
CURLM *places_multi_new(long max_in_flight);

/* Closes the idle upstream connections once no call has run for a while. */
void places_pool_prune(worker_t *w);

/* Adds a request the cache did not answer to the call for `key` (starting
 * it, or queueing it for a slot), or answers it with an error object when
 * the bounds refuse it or memory runs out. */
void places_join(worker_t *w, uint64_t req_id, const char *key, const char *what, herd_span_t lat, herd_span_t lng,
                 herd_span_t radius, uint32_t bound);

/* Forgets req_id, stopping (or unqueueing) its call when nobody else waits. */
void places_cancel(worker_t *w, uint64_t req_id);

/* Starts queued calls while there are free slots (after a batch of frames
 * from the node, which may have freed some by cancels). */
void places_refill(worker_t *w);

/* Answers the waiters of running calls past timeout_ms (counted from their
 * start: a reload may have shortened it) with the timeout's error object.
 * Returns the milliseconds until the next such deadline, or -1 for none. */
long places_expire(worker_t *w);

/* Applies new bounds to the connection pool (max_in_flight). */
void places_pool_resize(worker_t *w);

/* Answers the waiters of finished calls and starts queued ones. */
void places_collect(worker_t *w);

/* Drops every call and waiter, unanswered. */
void places_abandon(worker_t *w);

#endif
