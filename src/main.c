/* herd-server: one server of the herd (PROTOCOL.md section 8).
 *
 *   herd-server [--config FILE] [--log-dir DIR] [--ready-wait SEC] NAME
 *   herd-server --check-config [--json] [--config FILE] [--log-dir DIR] [NAME]
 *
 * Exit status: 0 after SIGTERM or SIGINT (or a valid file for
 * --check-config), 2 for a bad command line, topology, name or port, 1 for a
 * fault while running. */
#define _GNU_SOURCE /* asprintf */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <czmq.h>
#include <jansson.h>

#include "herd_admin.h"
#include "herd_log.h"
#include "herd_loop.h"
#include "herd_node.h"
#include "herd_topology.h"
#include "herd_version.h"

#define EXIT_SETUP 2

typedef struct {
    herd_topology_t *topo; /* the topology in force */
    herd_loop_t *loop;
    herd_log_t *log;
    herd_node_t *node;
    const char *name;      /* our server name */
    const char *log_dir;   /* the folder our log is in (fixed until a restart) */
    bool log_dir_given;    /* --log-dir: the topology's log_dir does not matter */
    herd_watch_t sig;      /* the signalfd */
    int64_t deadline_ms;   /* shutdown: give up waiting for answers at this time */
    bool stopping;         /* SIGTERM or SIGINT seen */
} server_t;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: herd-server [--config FILE] [--log-dir DIR] [--ready-wait SEC] NAME\n"
            "       herd-server --check-config [--json] [--config FILE] [--log-dir DIR] [NAME]\n"
            "       herd-server --version\n"
            "  --config FILE     topology file (default: topology.json in the current folder)\n"
            "  --log-dir DIR     folder for NAME.log (default: the topology's log_dir)\n"
            "  --ready-wait SEC  /healthz says ready without a first exchange with a neighbour\n"
            "                    after SEC seconds (default %d)\n"
            "  --check-config    check the topology (and NAME, if given) as a start would, print\n"
            "                    \"FILE: N servers, M links\" and exit 0, or the reason and exit 2;\n"
            "                    with --json print the resolved topology as JSON instead\n",
            HERD_NODE_READY_WAIT_MS / 1000);
}

/* ---------------------------------------------------------------- reload */

/* NULL-safe string equality. */
static bool same(const char *a, const char *b)
{
    return (!a && !b) || (a && b && !strcmp(a, b));
}

#define MAX_RESTART 24 /* more than the settings compared below */

/* The settings of `next` that differ from the running `cur` and that only a
 * restart applies: names into out[], returns how many. */
static size_t restart_needed(const server_t *s, const herd_topology_t *cur, const herd_topology_t *next,
                             const char **out)
{
    size_t n = 0;
    long ci = herd_topology_find(cur, s->name), ni = herd_topology_find(next, s->name);
    const herd_server_conf_t *a = &cur->servers[ci], *b = &next->servers[ni];
#define CHANGED(cond, what)                                                                                            \
    do {                                                                                                               \
        if (cond)                                                                                                      \
            out[n++] = what;                                                                                           \
    } while (0)
    CHANGED(strcmp(a->host, b->host), "host");
    CHANGED(a->client_port != b->client_port, "client_port");
    CHANGED(a->peer_port != b->peer_port, "peer_port");
    CHANGED(!same(a->admin_host, b->admin_host), "admin_host");
    CHANGED(a->admin_port != b->admin_port, "admin_port");
    CHANGED(!same(a->public_key, b->public_key), "public_key");
    /* What the servers would run, not the raw fields: unset and the default's
     * own value are the same. */
    CHANGED(herd_node_frontend_threads(cur, a) != herd_node_frontend_threads(next, b), "frontend_threads");
    CHANGED(!s->log_dir_given && !same(cur->log_dir, next->log_dir), "log_dir");
    CHANGED(!same(cur->state_dir, next->state_dir), "state_dir");
    CHANGED(cur->fsync != next->fsync, "fsync");
    CHANGED(!same(cur->keys_dir, next->keys_dir), "keys_dir");
    CHANGED(!same(cur->places_url, next->places_url), "places.url");
    CHANGED(!same(cur->places_key_env, next->places_key_env), "places.key_env");
    CHANGED(cur->places_timeout_ms != next->places_timeout_ms, "places.timeout_ms");
    CHANGED(cur->places_cache_ttl_ms != next->places_cache_ttl_ms, "places.cache_ttl_ms");
    CHANGED(cur->places_max_in_flight != next->places_max_in_flight, "places.max_in_flight");
    CHANGED(cur->places_max_queued != next->places_max_queued, "places.max_queued");
#undef CHANGED
    return n;
}

/* Appends ", link to X added" / "removed" for each neighbour of ours that
 * `next` adds to or drops from `cur`. */
static void link_changes(const server_t *s, const herd_topology_t *cur, const herd_topology_t *next, char *out,
                         size_t cap)
{
    const herd_topology_t *from[2] = {cur, next}, *to[2] = {next, cur};
    static const char *verb[2] = {"added", "removed"};
    size_t used = strlen(out);
    for (int k = 0; k < 2; k++) {
        size_t me = (size_t)herd_topology_find(to[k], s->name), other = (size_t)herd_topology_find(from[k], s->name);
        for (size_t j = 0; j < to[k]->n_servers; j++) {
            if (!herd_topology_linked(to[k], me, j))
                continue;
            long there = herd_topology_find(from[k], to[k]->servers[j].name);
            if (there >= 0 && herd_topology_linked(from[k], other, (size_t)there))
                continue;
            if (used < cap)
                used += (size_t)snprintf(out + used, cap - used, ", link to %s %s", to[k]->servers[j].name,
                                         verb[k]);
        }
    }
}

/* Logs a reload's outcome and hands it to /config and /metrics. */
static void reload_outcome(server_t *s, bool ok, const char *reason, const char **restart, size_t n)
{
    char list[512] = "";
    size_t used = 0;
    for (size_t i = 0; i < n && used < sizeof list; i++)
        used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", restart[i]);
    if (!ok)
        herd_log_event(s->log, "reload: %s; keeping the running topology", reason);
    else if (n)
        herd_log_event(s->log, "reload: %s; needs a restart for: %s (these keep their running values)", reason,
                       list);
    else
        herd_log_event(s->log, "reload: %s", reason);
    herd_admin_reload_done(herd_node_admin(s->node), ok, reason, restart, n);
}

/* While stopping: leave once every owed answer is written, or at the deadline. */
static void shutdown_check(herd_loop_t *loop, void *arg)
{
    server_t *s = arg;
    if (!s->stopping)
        return;
    int64_t now = herd_loop_now_ms(loop), places = herd_node_places_deadline_ms(s->node); /* WHATSATs: §8 */
    if (herd_node_busy(s->node) == 0 || (now >= s->deadline_ms && now >= places))
        herd_loop_stop(loop);
}

/* SIGHUP: reopen the log (logrotate), then re-read and apply the topology.
 * An invalid file changes nothing. */
static void reload(server_t *s)
{
    if (herd_log_reopen(s->log) != 0)
        herd_log_event(s->log, "SIGHUP: cannot reopen the log file: %s", strerror(errno));
    herd_log_event(s->log, "SIGHUP: log reopened; reloading %s", s->topo->path);
    char err[512] = "";
    herd_topology_t *next = herd_topology_load(s->topo->path, err, sizeof err);
    if (!next) {
        reload_outcome(s, false, err, NULL, 0);
        return;
    }
    const char *restart[MAX_RESTART];
    size_t n = herd_topology_find(next, s->name) >= 0 ? restart_needed(s, s->topo, next, restart) : 0;
    if (herd_node_reload(s->node, next, err, sizeof err) != 0) {
        reload_outcome(s, false, err, NULL, 0);
        herd_topology_destroy(&next);
        return;
    }
    char applied[512];
    snprintf(applied, sizeof applied, "topology applied (%zu servers, %zu links)", next->n_servers, next->n_links);
    link_changes(s, s->topo, next, applied, sizeof applied);
    herd_topology_destroy(&s->topo);
    s->topo = next;
    reload_outcome(s, true, applied, restart, n);
}

static void signal_ready(herd_loop_t *loop, herd_watch_t *w, uint32_t events)
{
    (void)events;
    server_t *s = w->arg;
    struct signalfd_siginfo si;
    while (read(w->fd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo == SIGHUP) {
            reload(s);
            continue;
        }
        if (s->stopping)
            continue;
        herd_log_event(s->log, "%s: stopping: no new connections, finishing owed replies",
                       si.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM");
        s->stopping = true;
        s->deadline_ms = herd_loop_now_ms(loop) + 5000;
        herd_node_drain(s->node);
        herd_loop_add_timer(loop, 5, shutdown_check, s);
    }
}

/* dir/name+suffix made absolute against the current folder (malloc'd), or
 * NULL for a NULL dir. The folder need not exist yet. */
static char *join(const char *dir, const char *name, const char *suffix)
{
    char *p = NULL, cwd[PATH_MAX];
    if (!dir)
        return NULL;
    const char *base = dir[0] == '/' ? "" : getcwd(cwd, sizeof cwd) ? cwd : ".";
    int n = asprintf(&p, "%s%s%s%s%s%s", base, *base ? "/" : "", dir, *name ? "/" : "", name, suffix);
    return n < 0 ? NULL : p;
}

/* Adds key: string-or-null to obj (the path is freed). */
static void set_path(json_t *obj, const char *key, char *path)
{
    json_object_set_new(obj, key, path ? json_string(path) : json_null());
    free(path);
}

/* --check-config --json: the topology as the server resolved it, for
 * herdctl (which keeps no rule of its own): every server with its
 * addresses, whether it has a public key, its log file and state folder. */
static int print_config_json(const herd_topology_t *t, const char *log_dir)
{
    char real[PATH_MAX];
    json_t *doc = json_object(), *servers = json_array(), *links = json_array();
    json_object_set_new(doc, "topology", json_string(realpath(t->path, real) ? real : t->path));
    set_path(doc, "log_dir", join(log_dir, "", ""));
    set_path(doc, "state_dir", join(t->state_dir, "", ""));
    set_path(doc, "keys_dir", join(t->keys_dir, "", ""));
    json_object_set_new(doc, "insecure_links", json_boolean(t->insecure_links));
    for (size_t i = 0; i < t->n_servers; i++) {
        const herd_server_conf_t *c = &t->servers[i];
        json_t *o = json_pack("{s:s, s:s, s:i, s:i, s:s, s:b}", "name", c->name, "host", c->host, "client_port",
                              c->client_port, "peer_port", c->peer_port, "admin_host", c->admin_host, "public_key",
                              c->public_key != NULL);
        if (!o)
            continue;
        json_object_set_new(o, "admin_port", c->admin_port ? json_integer(c->admin_port) : json_null());
        set_path(o, "log_file", join(log_dir, c->name, ".log"));
        set_path(o, "state_path", join(t->state_dir, c->name, ""));
        set_path(o, "key_secret", join(t->keys_dir, c->name, ".key_secret"));
        json_array_append_new(servers, o);
    }
    for (size_t i = 0; i < t->n_links; i++)
        json_array_append_new(links, json_pack("[s,s]", t->servers[t->links[i].a].name, t->servers[t->links[i].b].name));
    json_object_set_new(doc, "servers", servers);
    json_object_set_new(doc, "links", links);
    int rc = json_dumpf(doc, stdout, JSON_INDENT(2)) == 0 && fputc('\n', stdout) != EOF ? 0 : 1;
    json_decref(doc);
    return rc;
}

/* --check-config: the same loader and the same one-line reasons as a start. */
static int check_config(const char *config, const char *log_dir, const char *name, bool json)
{
    char err[512] = "";
    herd_topology_t *topo = herd_topology_load(config, err, sizeof err);
    if (!topo) {
        fprintf(stderr, "herd-server: %s\n", err);
        return EXIT_SETUP;
    }
    int status = 0;
    if (name && herd_topology_find(topo, name) < 0) {
        fprintf(stderr, "herd-server: %s has no server named \"%s\"\n", config, name);
        status = EXIT_SETUP;
    } else if (json) {
        status = print_config_json(topo, log_dir ? log_dir : topo->log_dir);
    } else {
        printf("%s: %zu servers, %zu links\n", topo->path, topo->n_servers, topo->n_links);
    }
    herd_topology_destroy(&topo);
    return status;
}

int main(int argc, char **argv)
{
    const char *config = "topology.json";
    const char *log_dir = NULL;
    const char *name = NULL;
    bool check = false, json = false;
    long ready_wait_ms = HERD_NODE_READY_WAIT_MS;
    enum { OPT_CHECK = 256, OPT_JSON, OPT_READY_WAIT, OPT_VERSION };
    static const struct option options[] = {
        {"config", required_argument, NULL, 'c'},     {"log-dir", required_argument, NULL, 'l'},
        {"check-config", no_argument, NULL, OPT_CHECK}, {"json", no_argument, NULL, OPT_JSON},
        {"ready-wait", required_argument, NULL, OPT_READY_WAIT}, {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, OPT_VERSION},  {NULL, 0, NULL, 0},
    };
    opterr = 0; /* our own one-line messages */
    for (;;) {
        int opt = getopt_long(argc, argv, ":h", options, NULL);
        if (opt == -1)
            break;
        char *end = NULL;
        switch (opt) {
        case 'c':
            config = optarg;
            break;
        case 'l':
            log_dir = optarg;
            break;
        case OPT_CHECK:
            check = true;
            break;
        case OPT_JSON:
            json = true;
            break;
        case OPT_READY_WAIT:
            errno = 0;
            ready_wait_ms = strtol(optarg, &end, 10);
            if (errno || end == optarg || *end || ready_wait_ms < 0 || ready_wait_ms > 86400) {
                fprintf(stderr, "herd-server: --ready-wait needs a number of seconds (0 to 86400), not '%s'\n",
                        optarg);
                return EXIT_SETUP;
            }
            ready_wait_ms *= 1000;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case OPT_VERSION:
            printf("herd-server %s\n", HERD_VERSION);
            return 0;
        case ':':
            fprintf(stderr, "herd-server: option %s needs a value (see herd-server --help)\n", argv[optind - 1]);
            return EXIT_SETUP;
        default:
            fprintf(stderr, "herd-server: unknown option '%s' (see herd-server --help)\n", argv[optind - 1]);
            return EXIT_SETUP;
        }
    }
    if (optind < argc)
        name = argv[optind++];
    if (optind < argc) {
        fprintf(stderr, "herd-server: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return EXIT_SETUP;
    }
    if (json && !check) {
        fprintf(stderr, "herd-server: --json goes with --check-config\n");
        return EXIT_SETUP;
    }
    if (check)
        return check_config(config, log_dir, name, json);
    if (!name) {
        fprintf(stderr, "herd-server: missing server NAME\n");
        usage(stderr);
        return EXIT_SETUP;
    }

    /* Signals are read from a signalfd on the reactor, so they are blocked
     * before any thread (ZeroMQ's, the Places worker) exists to inherit them. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    sigprocmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    zsys_handler_set(NULL); /* CZMQ must not install its own SIGINT handler */

    char err[512] = "";
    herd_topology_t *topo = herd_topology_load(config, err, sizeof err);
    if (!topo) {
        fprintf(stderr, "herd-server: %s\n", err);
        return EXIT_SETUP;
    }
    long self = herd_topology_find(topo, name);
    if (self < 0) {
        fprintf(stderr, "herd-server: %s has no server named \"%s\"\n", config, name);
        herd_topology_destroy(&topo);
        return EXIT_SETUP;
    }

    char *log_path = NULL;
    if (asprintf(&log_path, "%s/%s.log", log_dir ? log_dir : topo->log_dir, name) < 0) {
        fprintf(stderr, "herd-server: out of memory\n");
        return EXIT_SETUP;
    }
    server_t s = {.topo = topo, .name = name, .log_dir = log_dir ? log_dir : topo->log_dir, .log_dir_given = log_dir};
    int status = EXIT_SETUP;
    s.log = herd_log_open(log_path, err, sizeof err);
    if (!s.log) {
        fprintf(stderr, "herd-server: %s\n", err);
        goto out;
    }
    /* Stamps read once per turn (or every 32 lines): microsecond truth
     * without a clock call per line. */
    herd_log_set_turn_clock(s.log, true);
    s.loop = herd_loop_new();
    s.sig.fd = signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
    s.sig.fn = signal_ready;
    s.sig.arg = &s;
    if (!s.loop || s.sig.fd < 0 || herd_loop_watch(s.loop, &s.sig, EPOLLIN) != 0) {
        fprintf(stderr, "herd-server: cannot set up the event loop: %s\n", strerror(errno));
        goto out;
    }
    const herd_server_conf_t *me = &topo->servers[self];
    herd_log_event(s.log, "server %s starting: client port %s:%d, peer port %s:%d, topology %s", name, me->host,
                   me->client_port, me->host, me->peer_port, topo->path);
    s.node = herd_node_new(s.loop, s.log, topo, (size_t)self, err, sizeof err);
    if (!s.node) {
        fprintf(stderr, "herd-server: %s\n", err);
        herd_log_event(s.log, "cannot start: %s", err);
        goto out;
    }
    herd_node_set_ready_wait(s.node, ready_wait_ms);
    {
        char real[PATH_MAX];
        herd_admin_set_config(herd_node_admin(s.node), realpath(topo->path, real) ? real : topo->path, s.log_dir,
                              topo->state_dir);
    }
    /* The log phase comes after the links and the front end, so each turn's
     * events are handed to the writer once that turn's replies are out. */
    if (herd_log_attach_loop(s.log, s.loop) != 0) {
        fprintf(stderr, "herd-server: out of memory\n");
        status = 1;
        goto out;
    }
    herd_log_event(s.log, "server %s ready", name);
    /* Everything about the start (state loaded, links, keys) is on disk
     * before READY says so; later lines follow within a turn. */
    herd_log_sync(s.log);
    printf("READY %s\n", name);
    fflush(stdout);

    status = herd_loop_run(s.loop) == 0 ? 0 : 1;
    if (status)
        herd_log_event(s.log, "event loop failed: %s", strerror(errno));
    herd_log_event(s.log, "server %s stopped", name);
out:
    herd_node_destroy(&s.node);
    herd_log_detach_loop(s.log);
    if (s.sig.fd > 0)
        close(s.sig.fd);
    herd_loop_destroy(&s.loop);
    herd_log_close(&s.log);
    free(log_path);
    herd_topology_destroy(&s.topo);
    return status;
}
