/* herd_topology_reload: what a reload may change while the server runs,
 * decided once per setting, and what it changed (PROTOCOL section 9). See
 * herd_topology.h. */
#include "herd_topology.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The default front-end threads: min(4, cores - 1); 0 (in-line) on two
 * cores or fewer. */
#define MAX_DEFAULT_FE 4

/*  --------------------------------------------------------------------------
 *  The number of front-end threads server `me` runs. */
long herd_topology_frontend_threads(const herd_topology_t *t, const herd_server_conf_t *me)
{
    if (me && me->frontend_threads >= 0)
        return me->frontend_threads;
    if (t->frontend_threads >= 0)
        return t->frontend_threads;
    /* Two cores or fewer: a thread hop per batch costs more than the other
     * core gives (README, Performance), so the front end runs in-line. */
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores <= 2)
        return 0;
    return cores - 1 > MAX_DEFAULT_FE ? MAX_DEFAULT_FE : cores - 1;
}

/* NULL-safe string equality. */
static bool same(const char *a, const char *b)
{
    return (!a && !b) || (a && b && !strcmp(a, b));
}

/* Puts the running string back into *to. Returns -1 when out of memory. */
static int keep_str(char **to, const char *running)
{
    char *copy = running ? strdup(running) : NULL;
    if (running && !copy)
        return -1;
    free(*to);
    *to = copy;
    return 0;
}

/*  --------------------------------------------------------------------------
 *  Puts every restart-only setting of `next` that differs from `running`
 *  back to its running value and names it in pending[]. */
int herd_topology_keep_running(herd_topology_t *next, const herd_topology_t *running, const char *name,
                               bool log_dir_fixed, const char **pending)
{
    long ni = herd_topology_find(next, name), ri = herd_topology_find(running, name);
    if (ni < 0 || ri < 0)
        return 0;
    herd_server_conf_t *b = &next->servers[ni];
    const herd_server_conf_t *a = &running->servers[ri];
    int n = 0;
    bool oom = false;
    /* One line per setting: the test, the name, and how the running value
     * goes back into `next`. */
#define KEEP_INT(cond, what, assign)                                                                                   \
    do {                                                                                                               \
        if ((cond) && n < HERD_TOPOLOGY_MAX_PENDING) {                                                                 \
            pending[n++] = what;                                                                                       \
            assign;                                                                                                    \
        }                                                                                                              \
    } while (0)
#define KEEP_STR(field_b, field_a, what) KEEP_INT(!same(field_b, field_a), what, oom |= keep_str(&(field_b), field_a) != 0)
    KEEP_STR(b->host, a->host, "host");
    KEEP_INT(a->client_port != b->client_port, "client_port", b->client_port = a->client_port);
    KEEP_INT(a->peer_port != b->peer_port, "peer_port", b->peer_port = a->peer_port);
    KEEP_STR(b->admin_host, a->admin_host, "admin_host");
    KEEP_INT(a->admin_port != b->admin_port, "admin_port", b->admin_port = a->admin_port);
    /* What the server would run, not the raw fields: unset and the
     * default's own value are the same. */
    long fe_running = herd_topology_frontend_threads(running, a);
    KEEP_INT(herd_topology_frontend_threads(next, b) != fe_running, "frontend_threads",
             b->frontend_threads = fe_running);
    if (!log_dir_fixed)
        KEEP_STR(next->log_dir, running->log_dir, "log_dir");
    KEEP_STR(next->state_dir, running->state_dir, "state_dir");
    KEEP_INT(next->fsync != running->fsync, "fsync", next->fsync = running->fsync);
    KEEP_STR(next->places_url, running->places_url, "places.url");
    KEEP_STR(next->places_key_env, running->places_key_env, "places.key_env");
#undef KEEP_STR
#undef KEEP_INT
    return oom ? -1 : n;
}

/*  --------------------------------------------------------------------------
 *  Names the links of server `name` that `next` adds to or drops from `cur`. */
void herd_topology_link_changes(const herd_topology_t *cur, const herd_topology_t *next, const char *name, char *out,
                                size_t cap)
{
    const herd_topology_t *from[2] = {cur, next}, *to[2] = {next, cur};
    static const char *verb[2] = {"added", "removed"};
    size_t used = strlen(out);
    for (int k = 0; k < 2; k++) {
        long me = herd_topology_find(to[k], name), other = herd_topology_find(from[k], name);
        if (me < 0 || other < 0)
            continue;
        for (size_t j = 0; j < to[k]->n_servers; j++) {
            if (!herd_topology_linked(to[k], (size_t)me, j))
                continue;
            long there = herd_topology_find(from[k], to[k]->servers[j].name);
            if (there >= 0 && herd_topology_linked(from[k], (size_t)other, (size_t)there))
                continue;
            if (used < cap)
                used += (size_t)snprintf(out + used, cap - used, ", link to %s %s", to[k]->servers[j].name,
                                         verb[k]);
        }
    }
}
