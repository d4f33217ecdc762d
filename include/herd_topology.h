/* herd_topology: load and validate topology.json (PROTOCOL.md section 9).
 *
 * A loaded topology is plain immutable data. Every error names the file, the
 * problem and, for JSON syntax errors, the line and column. */
#ifndef HERD_TOPOLOGY_H
#define HERD_TOPOLOGY_H

#include <stdbool.h>
#include <stddef.h>

struct json_t;

/* The places block's defaults, where the file leaves a value out (the
 * Places worker takes the same for a value it is not given). */
#define HERD_TOPOLOGY_PLACES_TIMEOUT_MS    5000L
#define HERD_TOPOLOGY_PLACES_CACHE_TTL_MS  60000L
#define HERD_TOPOLOGY_PLACES_MAX_IN_FLIGHT 64L
#define HERD_TOPOLOGY_PLACES_MAX_QUEUED    4096L

/* One server of the herd. */
typedef struct {
    char *name;       /* 1..64 of [A-Za-z0-9_-] */
    char *host;       /* where it binds and where neighbours reach it */
    int client_port;  /* client TCP port, 1..65535 */
    int peer_port;    /* inter-server ROUTER port, 1..65535 */
    int admin_port;   /* operators' HTTP port, or 0 when not configured */
    char *public_key; /* CURVE public key (Z85, 40 chars), or NULL */
    char *admin_host; /* where admin_port binds; default "127.0.0.1" */
    long frontend_threads; /* client front-end threads (0: in-line); -1 = the topology's default */
} herd_server_conf_t;

/* When an update is on disk before its AT reply is written (PROTOCOL §9). */
typedef enum {
    HERD_FSYNC_EVERYSEC = 0, /* default: all but at most the last second's */
    HERD_FSYNC_ALWAYS,       /* the reply waits for the group commit */
    HERD_FSYNC_NEVER,        /* left to the kernel */
} herd_fsync_t;

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
    long max_clients_per_address; /* limits.max_clients_per_address, default 10000 */
    long long max_output_total_bytes; /* limits.max_output_total_bytes, default 268435456 */
    long long max_records;      /* limits.max_records, default 10000000 */
    long long record_ttl_s;     /* limits.record_ttl_s, default 0 = never */
    long long max_future_s;     /* limits.max_future_s, default 86400 */
    long places_max_in_flight;  /* places.max_in_flight, default 64 */
    long places_max_queued;     /* places.max_queued, default 4096 */
    bool insecure_links;        /* insecure_links, default false */
    bool curve_rollout;         /* curve_rollout, default false: a link may have a public_key at one end only */
    char *state_dir;            /* state_dir resolved like log_dir (default "state"), NULL = keep nothing */
    herd_fsync_t fsync;         /* fsync, default everysec */
    long frontend_threads;      /* frontend_threads at the top level (0: in-line); -1 = chosen by the server */
    bool log_commands;          /* log_commands, default true: log each client command and reply */
    char **warnings;            /* one line per unknown field, naming its path (PROTOCOL §9) */
    size_t n_warnings;
} herd_topology_t;

/* Loads and validates a topology file. Returns NULL and writes one line
 * (no newline) into err on any problem: unreadable file, JSON syntax error
 * (with line and column), missing field or wrong type, bad server name, port
 * out of range, link to an unknown server or to itself, duplicate link, two
 * servers sharing an address and port, a link with a public_key at one end
 * only, unauthenticated links between hosts that are not all loopback
 * without "insecure_links": true (PROTOCOL §7). Unknown fields are accepted
 * and each is named, with its path, in t->warnings. */
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

/* The number of front-end threads server `me` runs: its own
 * frontend_threads, else the topology's, else min(4, cores - 1) (the node
 * keeps a core; past 4 the node, not the front ends, is the limit), and 0
 * on two cores or fewer. 0: one front end runs on the node's thread. */
long herd_topology_frontend_threads(const herd_topology_t *t, const herd_server_conf_t *me);

/* Most settings one server can have that only a restart applies. */
#define HERD_TOPOLOGY_MAX_PENDING 32

/* A reload (PROTOCOL §9), one decision per setting: for server `name` (in
 * both), every setting that only a restart applies and whose value in the
 * file `next` differs from the running topology `running` is put back to its
 * running value in `next`, and its name ("client_port", "places.url",
 * ...) written into pending[] (at most HERD_TOPOLOGY_MAX_PENDING). So `next`
 * becomes what the server runs, and a setting stays pending across reloads
 * until the file has its running value again or the server restarts.
 * `log_dir_fixed`: the log folder came from the command line (the file's
 * log_dir does not matter). Returns the number pending, or -1 when out of
 * memory (next is then unusable). */
int herd_topology_keep_running(herd_topology_t *next, const herd_topology_t *running, const char *name,
                               bool log_dir_fixed, const char **pending);

/* The settings server `self` runs with, as a JSON object (a new reference,
 * NULL when out of memory) for /config: fsync, log_dir (`log_dir`, made
 * absolute), state_dir, log_commands, insecure_links, frontend_threads,
 * limits{...}, places{url, key_env, timeout_ms, cache_ttl_ms, max_in_flight,
 * max_queued} (never the key itself). */
struct json_t *herd_topology_running_json(const herd_topology_t *t, size_t self, const char *log_dir);

/* The whole topology as the servers resolve it (for --check-config --json):
 * the topology file, the folders, every server with its addresses, whether
 * it has a public key, its log file, state folder and secret key file, the
 * links and the warnings. A new reference, NULL when out of memory. */
struct json_t *herd_topology_resolved_json(const herd_topology_t *t, const char *log_dir);

/* The document /config serves for server `name` (a new reference, NULL
 * when out of memory or no such server): name, topology (the file's real
 * path), host, client_port, peer_port, admin_host, admin_port, running
 * (herd_topology_running_json), log_dir and state_dir (as running has
 * them), pending (the `n_pending` settings waiting for a restart) and
 * warnings (the file's unknown fields). The caller adds what the process
 * knows (pid, version). */
struct json_t *herd_topology_config_json(const herd_topology_t *t, const char *name, const char *log_dir,
                                         const char *const *pending, size_t n_pending);

/* A reload's changes to the links of server `name` (named in both
 * topologies): appends ", link to X added" or ", link to X removed" to the
 * text in `out` (capacity `cap`, cut to fit) for each neighbour `next` adds
 * to or drops from `cur`. */
void herd_topology_link_changes(const herd_topology_t *cur, const herd_topology_t *next, const char *name, char *out,
                                size_t cap);

#endif
