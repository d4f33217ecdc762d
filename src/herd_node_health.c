/* herd_node_health: readiness (PROTOCOL section 9): the start (the first
 * exchange with a neighbour, or the wait for one), durability and reach,
 * as /readyz, /healthz, herd_ready and the log say them. It reads the
 * node's parts and changes nothing but its own latch. See herd_node_int.h. */
#include "herd_node_int.h"

#include <stdio.h>

/* The start, latched: over once the first rejoin exchange with a
 * neighbour is done, at once for a server without neighbours, or when
 * ready_wait_ms pass without any exchange (a herd must be able to start
 * from nothing). Until then a restarted server would answer "?" for
 * clients the herd knows, so probes must not route clients to it: it is
 * the first condition of /readyz, the one notion of ready. */
static bool started(herd_node_t *node)
{
    if (node->started) {
        /* Ready by the wait, then a neighbour came: say what is true now. */
        if (node->started_by_wait && herd_links_synced(node->links) > 0) {
            node->started_by_wait = false;
            snprintf(node->start_reason, sizeof node->start_reason, "first exchange with a neighbour done");
        }
        return true;
    }
    size_t self = (size_t)herd_topology_find(node->topo, node->name);
    if (herd_topology_neighbours(node->topo, self, NULL, 0) == 0)
        snprintf(node->start_reason, sizeof node->start_reason, "no neighbour in the topology");
    else if (herd_links_synced(node->links) > 0)
        snprintf(node->start_reason, sizeof node->start_reason, "first exchange with a neighbour done");
    else if (herd_loop_now_ms(node->loop) - node->start_ms >= node->ready_wait_ms)
        node->started_by_wait = snprintf(node->start_reason, sizeof node->start_reason,
                                      "no neighbour answered within %ld s", node->ready_wait_ms / 1000) > 0;
    else
        return false;
    node->started = true;
    return true;
}

/* Each change of readiness is logged once, as /readyz says it. */
void node_health_tick(herd_loop_t *loop, void *arg)
{
    (void)loop;
    herd_node_t *node = arg;
    char reason[256];
    herd_health_t h = node_health(node, reason, sizeof reason);
    bool durable = node_durable(node);
    if (node->health_seen && h == node->health_last && durable == node->health_durable)
        return;
    node->health_seen = true;
    node->health_last = h;
    node->health_durable = durable;
    herd_log_event(node->log, "health: %s: %s", herd_health_name(h), reason);
}

/* /readyz (and /healthz), PROTOCOL section 9: ready when it serves, its
 * state is as durable as configured and it reaches a neighbour when it has
 * any. Draining beats everything; then starting (the first exchange), then
 * durability, then reach.
 *
 * Durability against fsync: under "always" a server whose state cannot be
 * written answers '?' to every IAMAT that would change the table, so
 * clients routed to it cannot report: not ready. Under "everysec" and
 * "never" the contract has it go on from memory and report it: it answers
 * every command as promised, so it stays ready and says "not durable" in
 * its reason, herd_state_durable and the log; taking it out of rotation
 * would only move its clients' load onto the rest, and a fault shared by
 * every server's disk would take the whole herd out. */
herd_health_t node_health(void *arg, char *reason, size_t cap)
{
    herd_node_t *node = arg;
    if (node->draining) {
        snprintf(reason, cap, "stopping after SIGTERM, finishing owed replies");
        return HERD_HEALTH_DRAINING;
    }
    if (!started(node)) {
        snprintf(reason, cap, "waiting for the first exchange with a neighbour (at most %ld s)",
                 node->ready_wait_ms / 1000);
        return HERD_HEALTH_STARTING;
    }
    bool durable = node_durable(node);
    if (!durable && node->topo->fsync == HERD_FSYNC_ALWAYS) {
        herd_journal_why(node->journal, reason, cap);
        return HERD_HEALTH_NOT_DURABLE;
    }
    long self = herd_topology_find(node->topo, node->name);
    size_t neighbours = self < 0 ? 0 : herd_topology_neighbours(node->topo, (size_t)self, NULL, 0);
    if (neighbours > 0 && herd_links_up(node->links) == 0) {
        snprintf(reason, cap, "reaches none of its %zu neighbour%s", neighbours, neighbours == 1 ? "" : "s");
        return HERD_HEALTH_ISOLATED;
    }
    if (durable) {
        snprintf(reason, cap, "%s", node->start_reason);
    } else {
        char why[512] = "";
        if (node->journal)
            herd_journal_why(node->journal, why, sizeof why);
        snprintf(reason, cap, "%s; not durable: %s", node->start_reason,
                 why[0] ? why : "the state cannot be written (see the log)");
    }
    return HERD_HEALTH_READY;
}

bool node_durable(const herd_node_t *node)
{
    return !node->journal || herd_journal_durable(node->journal);
}
