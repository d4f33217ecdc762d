/* herd-server: one server of the herd (PROTOCOL.md section 8).
 *
 *   herd-server [--config FILE] [--log-dir DIR] NAME
 *
 * Exit status: 0 after SIGTERM or SIGINT, 2 for a bad command line, topology,
 * name or port, 1 for a fault while running. */
#define _GNU_SOURCE /* asprintf */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <czmq.h>

#include "herd_log.h"
#include "herd_loop.h"
#include "herd_node.h"
#include "herd_topology.h"

#define EXIT_SETUP 2

typedef struct {
    herd_topology_t *topo; /* the topology in force */
    herd_loop_t *loop;
    herd_log_t *log;
    herd_node_t *node;
    herd_watch_t sig;      /* the signalfd */
    int64_t deadline_ms;   /* shutdown: give up waiting for answers at this time */
    bool stopping;         /* SIGTERM or SIGINT seen */
} server_t;

static void usage(FILE *out)
{
    fprintf(out, "usage: herd-server [--config FILE] [--log-dir DIR] NAME\n"
                 "  --config FILE   topology file (default: topology.json in the current folder)\n"
                 "  --log-dir DIR   folder for NAME.log (default: the topology's log_dir)\n");
}

/* While stopping: leave once every owed answer is written, or at the deadline. */
static void shutdown_check(herd_loop_t *loop, void *arg)
{
    server_t *s = arg;
    if (!s->stopping)
        return;
    if (herd_node_busy(s->node) == 0 || herd_loop_now_ms(loop) >= s->deadline_ms)
        herd_loop_stop(loop);
}

/* End of every turn: the log is written in one go per turn. */
static void log_tick(herd_loop_t *loop, void *arg)
{
    (void)loop;
    herd_log_flush(arg);
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
        herd_log_event(s->log, "reload: %s; keeping the running topology", err);
        return;
    }
    if (herd_node_reload(s->node, next, err, sizeof err) != 0) {
        herd_log_event(s->log, "reload: %s; keeping the running topology", err);
        herd_topology_destroy(&next);
        return;
    }
    herd_topology_destroy(&s->topo);
    s->topo = next;
    herd_log_event(s->log, "reload: topology applied (%zu servers, %zu links)", next->n_servers, next->n_links);
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

int main(int argc, char **argv)
{
    const char *config = "topology.json";
    const char *log_dir = NULL;
    const char *name = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config") && i + 1 < argc)
            config = argv[++i];
        else if (!strcmp(argv[i], "--log-dir") && i + 1 < argc)
            log_dir = argv[++i];
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else if (argv[i][0] == '-' || name) {
            fprintf(stderr, "herd-server: unexpected argument '%s'\n", argv[i]);
            usage(stderr);
            return EXIT_SETUP;
        } else
            name = argv[i];
    }
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
    server_t s = {.topo = topo};
    int status = EXIT_SETUP;
    s.log = herd_log_open(log_path, err, sizeof err);
    if (!s.log) {
        fprintf(stderr, "herd-server: %s\n", err);
        goto out;
    }
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
    /* Registered after the node's ticks, so each turn's events are written
     * once that turn's replies are out. */
    herd_loop_add_tick(s.loop, HERD_PHASE_LOG, log_tick, s.log);
    herd_log_event(s.log, "server %s ready", name);
    herd_log_flush(s.log);
    printf("READY %s\n", name);
    fflush(stdout);

    status = herd_loop_run(s.loop) == 0 ? 0 : 1;
    if (status)
        herd_log_event(s.log, "event loop failed: %s", strerror(errno));
    herd_log_event(s.log, "server %s stopped", name);
out:
    herd_node_destroy(&s.node);
    if (s.sig.fd > 0)
        close(s.sig.fd);
    herd_loop_destroy(&s.loop);
    herd_log_close(&s.log);
    free(log_path);
    herd_topology_destroy(&s.topo);
    return status;
}
