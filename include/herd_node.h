/* herd_node: one server of the herd.
 *
 * The only owner of the location table. It accepts client connections and
 * hands them to the front-end threads (herd_fethread), which speak the text
 * protocol; it takes their commands as herd_msg batches, decides IAMATs at
 * once, sends WHATSATs to the Places worker and answers when it replies,
 * floods stored updates over the peer links and applies what neighbours
 * flood. The node runs on one reactor thread (the caller's); the front
 * ends, the Places worker, the log writer and the journal writer are other
 * threads and share nothing with it but ZeroMQ sockets. */
#ifndef HERD_NODE_H
#define HERD_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "herd_admin.h"
#include "herd_log.h"
#include "herd_loop.h"
#include "herd_topology.h"

typedef struct herd_node_t herd_node_t;

/* Default of herd_node_set_ready_wait: how long a server with neighbours
 * waits for a first exchange with one before /healthz says ready anyway. */
#define HERD_NODE_READY_WAIT_MS 30000

/* Builds server number `self` of `topo` on `loop`: binds the client and peer
 * ports, starts the Places worker, connects to the neighbours. The topology
 * must outlive the node. Returns NULL and fills err (one line) on failure. */
herd_node_t *herd_node_new(herd_loop_t *loop, herd_log_t *log, const herd_topology_t *topo, size_t self,
                           char *err, size_t errlen);

/* Stops everything and frees it; *p = NULL. NULL-safe. */
void herd_node_destroy(herd_node_t **p);

/* Shutdown, first step: stop accepting clients and reading commands;
 * /healthz says draining from now on. */
void herd_node_drain(herd_node_t *node);

/* Applies a reloaded topology without a restart and without touching the
 * table (records are kept whatever their origin, PROTOCOL section 7): links
 * to removed neighbours close (their messages are no longer accepted),
 * links to new ones open, client limits change, and the Places
 * timeout, cache lifetime and bounds go to the node and its worker alike. `topo` must already carry
 * the running values of what takes a restart (herd_topology_keep_running):
 * the node runs what it is given. On success the node uses `topo` from now
 * on (the caller keeps it alive and may free the old one); returns -1 with
 * err filled otherwise. */
int herd_node_reload(herd_node_t *node, const herd_topology_t *topo, char *err, size_t errlen);

/* The node's admin endpoint (to report reloads), or NULL without admin_port. */
herd_admin_t *herd_node_admin(herd_node_t *node);

/* Sets how long the node waits for a first exchange with a neighbour
 * before it says ready without one (default HERD_NODE_READY_WAIT_MS). */
void herd_node_set_ready_wait(herd_node_t *node, long ms);

/* Number of client connections still owed an answer or output. */
size_t herd_node_busy(const herd_node_t *node);

/* For the stop (PROTOCOL section 8): the loop time (herd_loop_now_ms) by
 * which every WHATSAT read so far has had its answer handed to its front
 * end: the latest Places deadline of those waiting (places.timeout_ms in
 * force, the node's margin and one deadline sweep), or a sweep from now
 * while answers are still being handed over; 0 when none is owed. A stop
 * should wait at least until then for herd_node_busy to reach 0. */
int64_t herd_node_places_deadline_ms(const herd_node_t *node);

/* How long a stop may wait for owed answers (PROTOCOL section 8): past the
 * Places deadline of a WHATSAT read just before the stop, with the margins
 * the node and the front ends need to answer it. */
int64_t herd_node_stop_wait_ms(const herd_node_t *node);

#endif
