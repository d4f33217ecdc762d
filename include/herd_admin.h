/* herd_admin: the operators' HTTP endpoint (`/metrics`, `/livez`, `/readyz`,
 * `/healthz`, `/config`, and the page at `/`).
 *
 * libmicrohttpd serves HTTP on its own thread, so a slow or hostile HTTP
 * client never touches the reactor. To answer, that thread asks the reactor
 * over an inproc socket; the reactor renders the few kilobytes of text in one
 * step and hands them back. No state is shared between the threads, so no
 * counter needs a lock or an atomic.
 *
 * Hostile HTTP clients are bounded three ways: the endpoint binds admin_host
 * (loopback by default), every connection has an absolute deadline from its
 * accept (a client dripping a byte at a time is cut when it expires, however
 * often it sends), and connections are capped in total and per client
 * address, the total well above the per-address cap, so one address cannot
 * take every slot and blind the probes of another. Many addresses together
 * cannot either: once the open connections reach HERD_ADMIN_SOFT_CONNS, each
 * new one cuts the oldest, so a probe always gets a slot and, being the
 * newest, keeps it for its few milliseconds.
 *
 * The endpoint answers from the first moment, before the state is loaded:
 * until herd_admin_set_serving, its own thread answers /livez (200),
 * /readyz and /healthz (503 "starting" with the load's progress), /metrics
 * (the build and process metrics) and `/`, without the reactor, which is
 * busy loading. */
#ifndef HERD_ADMIN_H
#define HERD_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "herd_loop.h"

#define HERD_ADMIN_DEADLINE_MS 2000  /* a connection's whole life, from accept to the last byte */
#define HERD_ADMIN_MAX_CONNS 256     /* connections at once, all addresses together */
#define HERD_ADMIN_MAX_PER_ADDR 32   /* connections at once from one client address */
/* Past this many open connections a new one cuts the oldest: below
 * HERD_ADMIN_MAX_CONNS by one address's worth, so libmicrohttpd's own cap,
 * which refuses the newest, is never what a probe meets. */
#define HERD_ADMIN_SOFT_CONNS (HERD_ADMIN_MAX_CONNS - HERD_ADMIN_MAX_PER_ADDR)

typedef struct herd_admin_t herd_admin_t;
struct json_t;

/* What /healthz says, in the order a server goes through them. */
typedef enum {
    HERD_HEALTH_STARTING,    /* 503: its first exchange with a neighbour is not done yet */
    HERD_HEALTH_READY,       /* 200: it holds what the herd holds (or has no one to ask) */
    HERD_HEALTH_NOT_DURABLE, /* 503: it answers, but its durable state cannot be written */
    HERD_HEALTH_DRAINING,    /* 503: stopping after SIGTERM, finishing owed replies */
    HERD_HEALTH_ISOLATED,    /* 503: it has neighbours and reaches none of them */
} herd_health_t;

/* Renders the Prometheus text (malloc'd; *len its length). Reactor thread. */
typedef char *(herd_admin_metrics_fn)(void *arg, size_t *len);
/* The server's health, with a one-line reason written into `reason` (the
 * text after "STATE: " in the /healthz body). Reactor thread. */
typedef herd_health_t(herd_admin_health_fn)(void *arg, char *reason, size_t cap);

/* Serves HTTP on host:port. Returns NULL and fills err (naming the address)
 * when the port cannot be bound. */
herd_admin_t *herd_admin_new(herd_loop_t *loop, const char *host, int port, herd_admin_metrics_fn *metrics,
                             herd_admin_health_fn *health, void *arg, char *err, size_t errlen);

/* Stops the HTTP thread and frees everything; *p = NULL. NULL-safe. */
void herd_admin_destroy(herd_admin_t **p);

/* The configuration in force, for /config: a JSON object whose fields
 * (pid, name, topology, ports in use, running settings, pending, warnings:
 * see main.c) are served at the top level of /config beside "generation"
 * and "last_reload". Takes the reference (NULL: none). Reactor thread.
 * NULL-safe on a. */
void herd_admin_set_config(herd_admin_t *a, struct json_t *fields);

/* Records the outcome of one reload (SIGHUP): the generation goes up by one
 * whatever the outcome, so a caller that read it before signalling knows
 * when its own reload is done. `reason` is one line; `restart[0..n)` name
 * the settings that are pending: their value in the file differs from the
 * running one and only a restart applies it (the rest of the file was
 * applied; after a failed reload, what was pending before). Reactor thread. NULL-safe on a. */
void herd_admin_reload_done(herd_admin_t *a, bool ok, const char *reason, const char *const *restart, size_t n);

/* Name of a health state as /healthz writes it ("ready", "starting", ...). */
const char *herd_health_name(herd_health_t h);

/* The page at `/` (HTML, malloc'd; *len its length). Reactor thread. */
typedef char *(herd_admin_page_fn)(void *arg, size_t *len);

/* Serves `page` at `/` once serving (before: a page that says starting).
 * Call before herd_admin_set_serving. NULL-safe on a. */
void herd_admin_set_page(herd_admin_t *a, herd_admin_page_fn *page);

/* What the server is doing while it starts (one line, copied), shown in
 * /readyz, /livez and `/` until herd_admin_set_serving. Any thread.
 * NULL-safe on a. */
void herd_admin_progress(herd_admin_t *a, const char *what);

/* From now on the reactor answers: the metrics and health callbacks are
 * asked (the reactor may start running later; questions wait for it).
 * Any thread. NULL-safe on a. */
void herd_admin_set_serving(herd_admin_t *a);

/* Writes herd_build_info and Prometheus's standard process metrics
 * (process_cpu_seconds_total, process_resident_memory_bytes,
 * process_open_fds, process_max_fds, process_start_time_seconds), read
 * from /proc/self and getrlimit. Any thread. */
void herd_admin_render_process(FILE *f);

#endif
