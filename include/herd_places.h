/* herd_places: the Places worker (PROTOCOL.md sections 4 and 10).
 *
 * A thread behind a CZMQ actor pipe. The node hands it requests and cancels
 * (herd_places_msg, each with a request id) and never waits: it polls the
 * pipe for replies. The worker runs at most max_in_flight upstream calls at
 * once with libcurl's multi interface over a bounded connection pool, keeps
 * at most max_queued requests waiting (refusing more with an error
 * object), makes one upstream call per distinct request (position text and
 * radius in metres) and shares it among identical requests, answers repeats
 * from a TTL cache, cancels a call once every request waiting on it is
 * cancelled, cuts `results` to the bound and collapses newlines. A body is
 * cut once per distinct bound and handed to the node once for every request
 * that shares it, as one reference-counted text. It never touches the
 * location table or the log. */
#ifndef HERD_PLACES_H
#define HERD_PLACES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <czmq.h>

#include "herd_places_cut.h"
#include "herd_places_msg.h"
#include "herd_types.h"

typedef struct herd_places_t herd_places_t;

typedef struct {
    const char *url;         /* Nearby Search URL (HERD_PLACES_URL already applied) */
    const char *key;         /* the API key, or NULL / "" when none is configured */
    long timeout_ms;         /* deadline of one upstream call */
    long cache_ttl_ms;       /* response cache lifetime, 0 = no cache */
    size_t cache_max_entries; /* bound on cached bodies (0 = a sane default) */
    long max_in_flight;      /* upstream calls at once (places.max_in_flight; <= 0: the topology's default) */
    long max_queued;         /* requests waiting (places.max_queued; 0: none wait, < 0: the topology's default): every
                                request but the one that started each running call, so those
                                that share a call count too */
} herd_places_conf_t;

/* Starts the worker thread. Returns NULL and fills err on failure. The
 * configuration strings are copied. */
herd_places_t *herd_places_new(const herd_places_conf_t *conf, char *err, size_t errlen);

/* Stops the worker (in-flight calls are abandoned) and frees it; *p = NULL. */
void herd_places_destroy(herd_places_t **p);

/* The socket to poll for replies (ZMQ_POLLIN means herd_places_recv has
 * one; one message may hold several, so read until it returns 0). */
zsock_t *herd_places_sock(herd_places_t *p);

/* Queues one request. `lat` and `lng` are the stored position's halves with
 * their signs, `radius_km` the validated WHATSAT radius text, `bound` 1..20.
 * Never blocks. Returns 0, or -1 when it could not be queued (the caller
 * answers with an error object itself). */
int herd_places_request(herd_places_t *p, uint64_t req_id, herd_span_t lat, herd_span_t lng,
                        herd_span_t radius_km, uint32_t bound);

/* Tells the worker that the answer to req_id is no longer wanted (its client
 * left, or the node answered it on its own deadline): it is dropped, and an
 * upstream call nobody else waits for is stopped. No reply follows. Never
 * blocks. Returns 0, or -1 when the pipe did not take it. */
int herd_places_cancel(herd_places_t *p, uint64_t req_id);

/* Hands the worker reloaded settings (timeout_ms, cache_ttl_ms,
 * max_in_flight, max_queued of conf; url and key are not read): requests
 * from now on use them, and a running call is held to the new timeout
 * counted from its start. Never blocks. Returns 0, or -1 when the pipe did
 * not take it (the caller logs it). */
int herd_places_reconfigure(herd_places_t *p, const herd_places_conf_t *conf);

/* Takes one finished request without blocking. Returns 1 and fills *reply
 * (free it with herd_places_reply_free), 0 when none is ready, -1 on a
 * malformed message from the pipe or out of memory (logged by the caller,
 * never fatal; reply->req_id is then the request's id when it could be
 * read, else 0). */
int herd_places_recv(herd_places_t *p, herd_places_reply_t *reply);

#endif
