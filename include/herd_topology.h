/* herd_topology: load and validate topology.json (PROTOCOL.md section 9).
 *
 * A loaded topology is plain immutable data. Every error names the file, the
 * problem and, for JSON syntax errors, the line and column. */
#ifndef HERD_TOPOLOGY_H
#define HERD_TOPOLOGY_H

#include <stdbool.h>
#include <stddef.h>

/* One server of the herd. */
typedef struct {
    char *name;       /* 1..64 of [A-Za-z0-9_-] */
    char *host;       /* where it binds and where neighbours reach it */
    int client_port;  /* client TCP port, 1..65535 */
    int peer_port;    /* inter-server ROUTER port, 1..65535 */
    int admin_port;   /* operators' HTTP port, or 0 when not configured */
    char *public_key; /* CURVE public key (Z85, 40 chars), or NULL */
} herd_server_conf_t;

/* One two-way link, as indexes into servers[]. */
typedef struct {
    size_t a, b;
} herd_link_t;

typedef struct {
    char *path;                 /* the file it was loaded from */
    herd_server_conf_t *servers;
    size_t n_servers;
    herd_link_t *links;
    size_t n_links;
    char *places_url;           /* places.url */
    char *places_key_env;       /* places.key_env */
    long places_timeout_ms;     /* places.timeout_ms, default 5000 */
    long places_cache_ttl_ms;   /* places.cache_ttl_ms, default 60000, 0 = off */
    char *log_dir;              /* log_dir resolved against the topology file's folder */
    char *keys_dir;             /* keys_dir (default "keys"), resolved the same way: where each
                                   server finds its CURVE secret key, NAME.key_secret */
    long idle_timeout_ms;       /* limits.idle_timeout_ms, default 300000 */
    long max_output_bytes;      /* limits.max_output_bytes, default 1048576 */
    long max_clients;           /* limits.max_clients, default 50000 */
} herd_topology_t;

/* Loads and validates a topology file. Returns NULL and writes one line
 * (no newline) into err on any problem: unreadable file, JSON syntax error
 * (with line and column), missing field or wrong type, bad server name, port
 * out of range, link to an unknown server or to itself, duplicate link, two
 * servers sharing an address and port. Unknown fields are ignored. */
herd_topology_t *herd_topology_load(const char *path, char *err, size_t errlen);

/* Frees everything; sets *p to NULL. NULL-safe. */
void herd_topology_destroy(herd_topology_t **p);

/* Index of the server called `name`, or -1. */
long herd_topology_find(const herd_topology_t *t, const char *name);

/* True when servers a and b are linked. */
bool herd_topology_linked(const herd_topology_t *t, size_t a, size_t b);

/* Writes the indexes of server idx's neighbours into out (at most cap) and
 * returns how many neighbours it has. */
size_t herd_topology_neighbours(const herd_topology_t *t, size_t idx, size_t *out, size_t cap);

#endif
