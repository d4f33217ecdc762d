/* herd_links: the inter-server links of one server (PROTOCOL.md section 7).
 *
 * One ROUTER bound on the peer port receives from every neighbour; one
 * DEALER per neighbour (identity = our own name) sends to it. Sending never
 * blocks: a send high-water mark, a zero send timeout, and queueing only on
 * a live connection (ZMQ_IMMEDIATE); what cannot be queued is dropped,
 * because the exchanges repair it. Updates are batched per neighbour and sent
 * at the end of each reactor turn, before the front end writes its replies.
 *
 * Anti-entropy (herd_links_repair.c, herd_repair.h): when a link comes up,
 * and at least once a second after, each server opens an exchange with each
 * neighbour; the exchange finds what the two tables hold differently and
 * sends only that, both ways. A neighbour that answers no exchange for 5 s
 * has its link made anew, and a DEALER whose handshake was refused (libzmq
 * gives up on those) is made anew after a back-off. */
#ifndef HERD_LINKS_H
#define HERD_LINKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "herd_log.h"
#include "herd_types.h"
#include "herd_loop.h"
#include "herd_record.h"
#include "herd_table.h"
#include "herd_time.h"
#include "herd_topology.h"

typedef struct herd_links_t herd_links_t;

/* Called for each AT line a neighbour sent. `from` names the link for
 * herd_links_flood's `except` (valid during the call only); `flood` is false
 * for records an anti-entropy exchange sent (stored, not flooded on).
 * `fields` is the line's herd_record_parse_quick (each line is parsed once,
 * here), or NULL when it has not the six fields of an AT line; `hash` (NULL
 * when the table was too small to look ahead) is the id's index hash that
 * herd_table_ahead gave. */
typedef void(herd_links_update_fn)(void *arg, const char *from_name, long from, const char *at, size_t len,
                                   const herd_at_t *fields, const uint64_t *hash, bool flood);

/* Binds the peer port and connects to every neighbour of server `self`.
 * `table` is read (never written) to answer HELLOs. The topology is not
 * kept. Returns NULL and fills
 * err on failure (naming the address for a port that cannot be bound). */
herd_links_t *herd_links_new(herd_loop_t *loop, herd_log_t *log, const herd_topology_t *topo, size_t self,
                             const herd_table_t *table, herd_links_update_fn *on_update, void *arg,
                             char *err, size_t errlen);

/* Prepares the links for a stop that hands over what was flooded: sends
 * what is queued now, and lets each link that is up keep sending for up to
 * `ms` after herd_links_destroy closes it (ZMQ_LINGER; libzmq's context,
 * terminated at exit, waits for those sends). A link that is down, or that
 * herd_links_destroy closes without this call, drops what it still holds
 * (the exchanges repair it). NULL-safe. */
void herd_links_close_gracefully(herd_links_t *links, int ms);

/* Closes every link; *p = NULL. NULL-safe. */
void herd_links_destroy(herd_links_t **p);

/* Queues an AT line for every neighbour except the link `except` (the
 * `from` of an update being passed on; -1: none) and the server `origin`
 * (the AT line's own server field: it made the line, so it has it).
 * Sent at the end of this reactor turn. */
void herd_links_flood(herd_links_t *links, const char *at, size_t len, long except, herd_span_t origin);

/* Number of neighbours whose link is up (the health check's "no link up"). */
size_t herd_links_up(const herd_links_t *links);

/* The wall-clock time the message whose lines herd_links_update_fn is
 * being called for was taken in (read once a message). */
herd_time_t herd_links_message_time(const herd_links_t *links);

/* Number of neighbours whose link is up and whose rejoin exchange is done
 * (they sent their table, or we hold what they hold). */
size_t herd_links_synced(const herd_links_t *links);

/* Applies a new topology: links to neighbours that are gone (or moved) are
 * closed, links to new neighbours are made; the others stay as they are.
 * Our own name must still be in it. Returns 0, or -1 with err filled (links
 * already changed stay changed). The topology need not outlive the call. */
int herd_links_reconfigure(herd_links_t *links, const herd_topology_t *topo, char *err, size_t errlen);

/* Writes the links' metrics in the Prometheus text format. */
void herd_links_render(herd_links_t *links, FILE *f);

#endif
