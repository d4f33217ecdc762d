/* herd_admin: the operators' HTTP endpoint (`/metrics`, `/healthz`).
 *
 * libmicrohttpd serves HTTP on its own thread, so a slow or hostile HTTP
 * client never touches the reactor. To answer, that thread asks the reactor
 * over an inproc socket; the reactor renders the few kilobytes of text in one
 * step and hands them back. No state is shared between the threads, so no
 * counter needs a lock or an atomic. */
#ifndef HERD_ADMIN_H
#define HERD_ADMIN_H

#include <stdbool.h>
#include <stddef.h>

#include "herd_loop.h"

typedef struct herd_admin_t herd_admin_t;

/* Renders the Prometheus text (malloc'd; *len its length). Reactor thread. */
typedef char *(herd_admin_metrics_fn)(void *arg, size_t *len);
/* Whether the server is ready (its first rejoin exchange done). Reactor thread. */
typedef bool(herd_admin_ready_fn)(void *arg);

/* Serves HTTP on host:port. Returns NULL and fills err (naming the address)
 * when the port cannot be bound. */
herd_admin_t *herd_admin_new(herd_loop_t *loop, const char *host, int port, herd_admin_metrics_fn *metrics,
                             herd_admin_ready_fn *ready, void *arg, char *err, size_t errlen);

/* Stops the HTTP thread and frees everything; *p = NULL. NULL-safe. */
void herd_admin_destroy(herd_admin_t **p);

#endif
