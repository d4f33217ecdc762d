/* herd-server: one server of the herd (PROTOCOL.md section 8).
 *
 *   herd-server [--config FILE] [--log-dir DIR] [--ready-wait SEC] NAME
 *   herd-server --check-config [--json] [--config FILE] [--log-dir DIR] [NAME]
 *
 * Exit status: 0 after SIGTERM or SIGINT, or once a reload no longer names
 * this server (or a valid file for --check-config), 2 for a bad command
 * line, topology, name, key, folder or port, 1 for a fault while running.
 *
 * Signals (PROTOCOL section 8): SIGHUP reloads the topology, SIGUSR1 reopens
 * the log and nothing else; SIGTERM or SIGINT stop after every owed reply,
 * and a second one stops at once. */
#define _GNU_SOURCE /* asprintf */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <czmq.h>
#include <jansson.h>
#ifdef HERD_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

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
    const char *log_dir;   /* the folder our log is in (fixed until a restart): --log-dir, or topo's */
    bool log_dir_given;    /* --log-dir: the topology's log_dir does not matter */
    herd_watch_t sig;      /* the signalfd */
    int64_t deadline_ms;   /* shutdown: give up waiting for answers at this time */
    bool stopping;         /* SIGTERM or SIGINT seen, or our name left the topology */
    const char *pending[HERD_TOPOLOGY_MAX_PENDING]; /* settings waiting for a restart */
    size_t n_pending;
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
            "  --check-config    check the topology (and NAME, if given: its secret key, log and\n"
            "                    state folders) as a start would, print \"FILE: N servers, M links\"\n"
            "                    and exit 0, or the reason and exit 2; unknown fields are named in\n"
            "                    warnings on stderr; with --json print the resolved topology as JSON\n",
            HERD_NODE_READY_WAIT_MS / 1000);
}

/* ---------------------------------------------------------------- systemd */

/* sd_notify when the server runs under systemd (Type=notify); nothing
 * without NOTIFY_SOCKET or without libsystemd at build time. */
__attribute__((format(printf, 1, 2))) static void notify(const char *fmt, ...)
{
#ifdef HERD_HAVE_SYSTEMD
    char text[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    sd_notify(0, text);
#else
    (void)fmt;
#endif
}

/* ---------------------------------------------------------------- /config */

/* /config: what the topology says this server runs (herd_topology_config_json)
 * and who runs it: pid, version, commit. */
static void publish_config(server_t *s)
{
    herd_admin_t *admin = herd_node_admin(s->node);
    if (!admin)
        return;
    json_t *doc = herd_topology_config_json(s->topo, s->name, s->log_dir, s->pending, s->n_pending);
    if (!doc || json_object_set_new(doc, "pid", json_integer((json_int_t)getpid())) != 0 ||
        json_object_set_new(doc, "version", json_string(HERD_VERSION)) != 0 ||
        json_object_set_new(doc, "commit", json_string(HERD_COMMIT)) != 0) {
        json_decref(doc);
        herd_log_event(s->log, "out of memory for /config");
        return;
    }
    herd_admin_set_config(admin, doc);
}

/* Every unknown field of the file, in the log (at start and each reload). */
static void log_warnings(server_t *s, const herd_topology_t *t)
{
    for (size_t i = 0; i < t->n_warnings; i++)
        herd_log_event(s->log, "topology %s: warning: %s", t->path, t->warnings[i]);
}

/* ---------------------------------------------------------------- reload */

/* Logs a reload's outcome and hands it to /config, /metrics and systemd.
 * What is pending is reported whatever the outcome: a failed reload leaves
 * it as it was. */
static void reload_outcome(server_t *s, bool ok, const char *reason)
{
    char list[512] = "";
    size_t used = 0;
    for (size_t i = 0; i < s->n_pending && used < sizeof list; i++)
        used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", s->pending[i]);
    if (!ok)
        herd_log_event(s->log, "reload: %s; keeping the running topology", reason);
    else if (s->n_pending)
        herd_log_event(s->log, "reload: %s; needs a restart for: %s (these keep their running values)", reason,
                       list);
    else
        herd_log_event(s->log, "reload: %s", reason);
    herd_admin_reload_done(herd_node_admin(s->node), ok, reason, s->pending, s->n_pending);
    publish_config(s);
    notify("READY=1\nSTATUS=reload %s: %s%s%s", ok ? "applied" : "refused", reason,
           s->n_pending ? "; needs a restart for: " : "", list);
}

/* Shutdown, first step (SIGTERM, SIGINT, or our name gone from the
 * topology): no new connections; every command read is answered, a WHATSAT
 * at the latest by its Places deadline; then the loop ends. */
static void shutdown_check(herd_loop_t *loop, void *arg);

static void begin_stop(server_t *s, const char *why)
{
    herd_loop_t *loop = s->loop;
    herd_log_event(s->log, "%s: stopping: no new connections, finishing owed replies (at most %lld ms)", why,
                   (long long)herd_node_stop_wait_ms(s->node));
    notify("STOPPING=1\nSTATUS=stopping: %s", why);
    s->stopping = true;
    s->deadline_ms = herd_loop_now_ms(loop) + herd_node_stop_wait_ms(s->node);
    herd_node_drain(s->node);
    herd_loop_add_timer(loop, 5, shutdown_check, s);
}

/* While stopping: leave once every owed answer is written, or at the deadline. */
static void shutdown_check(herd_loop_t *loop, void *arg)
{
    server_t *s = arg;
    if (!s->stopping)
        return;
    int64_t now = herd_loop_now_ms(loop), places = herd_node_places_deadline_ms(s->node); /* WHATSATs: §8 */
    if (herd_node_busy(s->node) == 0) {
        herd_loop_stop(loop);
    } else if (now >= s->deadline_ms && now >= places) {
        herd_log_event(s->log, "stop: %zu connections still owed replies at the deadline", herd_node_busy(s->node));
        herd_loop_stop(loop);
    }
}

/* SIGHUP: re-read and apply the topology (the log is reopened by SIGUSR1
 * alone). An invalid file changes nothing; a setting that only a restart
 * applies keeps its running value and stays pending. */
static void reload(server_t *s)
{
    notify("RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading %s",
           (unsigned long long)zclock_usecs(), s->topo->path);
    herd_log_event(s->log, "SIGHUP: reloading %s", s->topo->path);
    char err[512] = "";
    herd_topology_t *next = herd_topology_load(s->topo->path, err, sizeof err);
    if (!next) {
        reload_outcome(s, false, err);
        return;
    }
    log_warnings(s, next);
    if (herd_topology_find(next, s->name) < 0) {
        /* PROTOCOL section 7: renamed or removed. The running topology
         * stays, so the links hand over what was flooded. */
        snprintf(err, sizeof err, "%s has no server named \"%s\" any more: this server stops", next->path, s->name);
        herd_topology_destroy(&next);
        reload_outcome(s, true, err);
        if (!s->stopping)
            begin_stop(s, "removed from the topology");
        return;
    }
    const char *pending[HERD_TOPOLOGY_MAX_PENDING];
    int n = herd_topology_keep_running(next, s->topo, s->name, s->log_dir_given, pending);
    if (n < 0 || herd_node_reload(s->node, next, err, sizeof err) != 0) {
        if (n < 0)
            snprintf(err, sizeof err, "out of memory");
        reload_outcome(s, false, err);
        herd_topology_destroy(&next);
        return;
    }
    char applied[512];
    snprintf(applied, sizeof applied, "topology applied (%zu servers, %zu links)", next->n_servers, next->n_links);
    herd_topology_link_changes(s->topo, next, s->name, applied, sizeof applied);
    herd_topology_destroy(&s->topo);
    s->topo = next;
    if (!s->log_dir_given)
        s->log_dir = next->log_dir; /* the running folder, kept by herd_topology_keep_running */
    s->n_pending = (size_t)n;
    memcpy(s->pending, pending, (size_t)n * sizeof *pending);
    reload_outcome(s, true, applied);
}

static void signal_ready(herd_loop_t *loop, herd_watch_t *w, uint32_t events)
{
    (void)events, (void)loop;
    server_t *s = w->arg;
    struct signalfd_siginfo si;
    while (read(w->fd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo == SIGHUP) {
            reload(s);
        } else if (si.ssi_signo == SIGUSR1) {
            /* Log rotation only: a half-edited topology stays unread. */
            if (herd_log_reopen(s->log) != 0)
                herd_log_event(s->log, "SIGUSR1: cannot reopen the log file: %s", strerror(errno));
            else
                herd_log_event(s->log, "SIGUSR1: log reopened");
        } else if (s->stopping) {
            herd_log_event(s->log, "%s again: stopping now, without waiting for owed replies",
                           si.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM");
            herd_loop_stop(s->loop);
        } else {
            begin_stop(s, si.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM");
        }
    }
}

/* ---------------------------------------------------------- --check-config */

/* Whether `dir` exists as a writable folder or could be made: its nearest
 * existing ancestor is a writable folder. Returns 0, or -1 with why. */
static int check_folder(const char *what, const char *dir, char *why, size_t cap)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s", dir);
    for (;;) {
        struct stat st;
        if (stat(path, &st) == 0) {
            if (!S_ISDIR(st.st_mode)) {
                snprintf(why, cap, "%s %s cannot be made: %s is not a folder", what, dir, path);
                return -1;
            }
            if (access(path, W_OK | X_OK) != 0) {
                snprintf(why, cap, "%s %s %s: %s is not writable: %s", what, dir,
                         strcmp(path, dir) ? "cannot be made" : "cannot be written", path, strerror(errno));
                return -1;
            }
            return 0;
        }
        if (errno != ENOENT && errno != ENOTDIR) {
            snprintf(why, cap, "%s %s: %s: %s", what, dir, path, strerror(errno));
            return -1;
        }
        char *slash = strrchr(path, '/');
        if (!slash) {
            snprintf(path, sizeof path, ".");
        } else if (slash == path) {
            path[1] = '\0';
        } else {
            *slash = '\0';
        }
    }
}

/* The state folder's LOCK (herd_journal.c): a running server holds an
 * exclusive flock on it. Tried without blocking and released at once;
 * nothing is made when the folder or the file does not exist yet. */
static int check_state_lock(const char *dir, char *why, size_t cap)
{
    char path[PATH_MAX + 8];
    snprintf(path, sizeof path, "%s/LOCK", dir);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        snprintf(why, cap, "cannot write state folder %s: %s", dir, strerror(errno));
        return -1;
    }
    int rc = 0;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        snprintf(why, cap, "state folder %s is in use by another running server", dir);
        rc = -1;
    } else {
        flock(fd, LOCK_UN);
    }
    close(fd);
    return rc;
}

/* The CURVE secret key, checked as the links check it at start. */
static int check_key(const herd_topology_t *t, const herd_server_conf_t *me, char *why, size_t cap)
{
    if (!me->public_key)
        return 0;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s.key", t->keys_dir, me->name);
    char secret[PATH_MAX + 8];
    snprintf(secret, sizeof secret, "%s_secret", path);
    if (access(secret, R_OK) != 0) {
        snprintf(why, cap, "links are authenticated (%s has a public_key) but %s cannot be read: %s", me->name,
                 secret, strerror(errno));
        return -1;
    }
    zcert_t *cert = zcert_load(path);
    static const uint8_t zero[32];
    int rc = -1;
    if (!cert)
        snprintf(why, cap, "links are authenticated (%s has a public_key) but %s_secret cannot be read", me->name,
                 path);
    else if (!memcmp(zcert_secret_key(cert), zero, 32))
        snprintf(why, cap, "%s_secret holds no secret key", path);
    else if (strcmp(zcert_public_txt(cert), me->public_key) != 0)
        snprintf(why, cap, "the key in %s_secret is not the public_key of %s in %s", path, me->name, t->path);
    else
        rc = 0;
    zcert_destroy(&cert);
    return rc;
}

/* The checks of a start that need no port, for server `name`. */
static int check_server(const herd_topology_t *t, const char *name, const char *log_dir, char *why, size_t cap)
{
    const herd_server_conf_t *me = &t->servers[herd_topology_find(t, name)];
    if (check_key(t, me, why, cap) != 0 || check_folder("log folder", log_dir, why, cap) != 0)
        return -1;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s.log", log_dir, name);
    if (access(path, F_OK) == 0 && access(path, W_OK) != 0) {
        snprintf(why, cap, "cannot open log file %s: %s", path, strerror(errno));
        return -1;
    }
    if (!t->state_dir)
        return 0;
    snprintf(path, sizeof path, "%s/%s", t->state_dir, name);
    if (check_folder("state folder", path, why, cap) != 0 || check_state_lock(path, why, cap) != 0)
        return -1;
    return 0;
}

/* --check-config: the same loader, the same one-line reasons and the same
 * checks as a start, but for the ports. */
static int check_config(const char *config, const char *log_dir, const char *name, bool json)
{
    char err[3 * PATH_MAX + 512] = ""; /* room for the paths a reason names */
    herd_topology_t *topo = herd_topology_load(config, err, sizeof err);
    if (!topo) {
        fprintf(stderr, "herd-server: %s\n", err);
        return EXIT_SETUP;
    }
    for (size_t i = 0; i < topo->n_warnings; i++)
        fprintf(stderr, "herd-server: warning: %s: %s\n", topo->path, topo->warnings[i]);
    int status = 0;
    if (!log_dir)
        log_dir = topo->log_dir;
    if (name && herd_topology_find(topo, name) < 0) {
        fprintf(stderr, "herd-server: %s has no server named \"%s\"\n", config, name);
        status = EXIT_SETUP;
    } else if (name && check_server(topo, name, log_dir, err, sizeof err) != 0) {
        fprintf(stderr, "herd-server: %s\n", err);
        status = EXIT_SETUP;
    } else if (json) {
        json_t *doc = herd_topology_resolved_json(topo, log_dir);
        status = doc && json_dumpf(doc, stdout, JSON_INDENT(2)) == 0 && fputc('\n', stdout) != EOF ? 0 : 1;
        json_decref(doc);
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
    sigaddset(&sigs, SIGUSR1);
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
    /* Per-command lines share a clock reading within a turn (at most 32
     * lines); every event reads the clock. */
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
    herd_log_event(s.log, "herd-server %s (commit %s): server %s starting: client port %s:%d, peer port %s:%d, topology %s",
                   HERD_VERSION, HERD_COMMIT, name, me->host, me->client_port, me->host, me->peer_port, topo->path);
    log_warnings(&s, topo);
    s.node = herd_node_new(s.loop, s.log, topo, (size_t)self, err, sizeof err);
    if (!s.node) {
        fprintf(stderr, "herd-server: %s\n", err);
        herd_log_event(s.log, "cannot start: %s", err);
        goto out;
    }
    herd_node_set_ready_wait(s.node, ready_wait_ms);
    publish_config(&s);
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
    notify("READY=1\nMAINPID=%ld\nSTATUS=ready: %s", (long)getpid(), name);

    status = herd_loop_run(s.loop) == 0 ? 0 : 1;
    if (status)
        herd_log_event(s.log, "event loop failed: %s", strerror(errno));
    herd_log_event(s.log, "server %s stopped", name);
    /* The end of the stop: the node's destroy below closes the links and
     * hands the journal its last records; the log is flushed last. */
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
