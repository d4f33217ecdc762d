/* herd_places_reply: the Places worker's answers to the node, the lowest
 * layer of the worker: encoding an answer or an error object for the
 * requests it answers, the queue of frames the pipe has not taken, and
 * keeping the API key out of every text that leaves the worker. Runs on the
 * worker thread; see herd_places_worker.h. */
#include "herd_places_worker.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "herd_places_cut.h"
#include "herd_places_msg.h"

/* ---------------------------------------------------------------------- */
/* Small helpers */

char *places_printf(const char *fmt, ...)
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

double places_ms_since(const struct timespec *t0)
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
        char *t = places_printf("%.*s***%s", (int)at, *s, hit + nlen);
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
void places_scrub_key(const worker_t *w, char **s)
{
    scrub_one(s, w->key);
    scrub_one(s, w->key_escaped);
}

/* ---------------------------------------------------------------------- */
/* Replies */

void places_queue_frame(worker_t *w, char *data, size_t len)
{
    outmsg_t *m = malloc(sizeof *m);
    if (!m) {
        free(data); /* the node answers that request on its own deadline */
        return;
    }
    m->data = data;
    m->len = len;
    herd_list_push(&w->out, &m->link);
}

/* Unlinks and frees the first queued reply. */
static void drop_first(worker_t *w)
{
    outmsg_t *m = HERD_LIST_ENTRY(w->out.head, outmsg_t, link);
    herd_list_remove(&w->out, &m->link);
    free(m->data);
    free(m);
}

/* Queues one answer for the n requests in ids; `json` and `note` are
 * copied. Out of memory, nothing is sent and the node answers those
 * requests on its own deadline. */
static void reply(worker_t *w, const uint64_t *ids, size_t n, const char *json, size_t json_len, const char *note,
                  places_how_t how)
{
    herd_places_answer_t a = {.ids = (uint64_t *)ids, .n_ids = n, .json = {json, json_len}, .note = (char *)note,
                              .cache_hit = how.cache_hit, .shared = how.shared, .upstream = how.upstream,
                              .refused = how.refused, .upstream_ms = how.upstream_ms};
    size_t len = 0;
    char *frame = n ? herd_places_msg_encode_answer(&a, &len) : NULL;
    if (frame)
        places_queue_frame(w, frame, len);
}

void places_reply_error(worker_t *w, const uint64_t *ids, size_t n, const char *status, const char *message,
                        const char *what, places_how_t how)
{
    char *json = herd_places_error_json(status, message);
    char *note = places_printf("Places call for %s: %s", what ? what : "a request", message);
    places_scrub_key(w, &note);
    if (json)
        reply(w, ids, n, json, strlen(json), note, how);
    free(json);
    free(note);
}

bool places_reply_cut(worker_t *w, const uint64_t *ids, size_t n, uint32_t bound, const char *body, size_t len,
                      const char *what, places_how_t how)
{
    char *out = NULL;
    size_t out_len = 0;
    bool ok = false;
    char err[200];
    if (herd_places_cut(body, len, bound, &out, &out_len, &ok, err, sizeof err) == 0) {
        reply(w, ids, n, out, out_len, NULL, how);
        free(out);
        return ok;
    }
    char *msg = places_printf("Places service sent a body that is not a JSON object (%s)", err);
    places_reply_error(w, ids, n, "UNKNOWN_ERROR",
                       msg ? msg : "Places service sent a body that is not a JSON object", what, how);
    free(msg);
    return false;
}

void places_flush_replies(worker_t *w, void *sock)
{
    while (w->out.head) {
        const outmsg_t *m = HERD_LIST_ENTRY(w->out.head, outmsg_t, link);
        if (zmq_send(sock, m->data, m->len, ZMQ_DONTWAIT) < 0) {
            if (errno == EINTR)
                continue;
            return; /* EAGAIN: the node will read; ETERM: we are going away */
        }
        drop_first(w);
    }
}

void places_drop_replies(worker_t *w)
{
    while (w->out.head)
        drop_first(w);
}
