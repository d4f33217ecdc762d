/* herd_topology_int.h: what herd_topology.c and herd_topology_addr.c share,
 * and the rules its unit test checks one by one. Private to the topology
 * module. */
#ifndef HERD_TOPOLOGY_INT_H
#define HERD_TOPOLOGY_INT_H

#include <stdbool.h>
#include <stddef.h>

#include "herd_topology.h"

#define HOST_MAX 255 /* longest host text accepted (a DNS name is at most 253) */

/* PROTOCOL section 9: no two servers (nor two ports of one) may bind one
 * address and port. One address written two ways (localhost, 127.0.0.1),
 * or a wildcard, counts as the same. Returns 0, or -1 with the reason
 * (without the file name) in msg. */
int herd_topology_check_addresses(const herd_topology_t *t, char *msg, size_t cap);

/* True when host names this machine's loopback (127.0.0.0/8, ::1, localhost). */
bool herd_topology_is_loopback(const char *host);

#endif
