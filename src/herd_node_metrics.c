/* herd_node_metrics: /metrics for the node: its counters, the links',
 * the front ends', the state's and the log's, CPU per thread, the build and
 * the process; the age of updates from neighbours; the data of the page
 * at `/`. See herd_node_int.h. */
#define _GNU_SOURCE /* open_memstream */
#include "herd_node_int.h"

#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "herd_admin_page.h"
#include "herd_version.h"

const double node_latency_bounds[N_LATENCY] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

/* CPU seconds of the log writer: the thread whose name starts "herd-log"
 * or, as CZMQ leaves its actors unnamed, the one the log's writer names
 * (looked up in /proc/self/task). -1 when not found. */
static double log_thread_cpu(void)
{
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return -1;
    double sec = -1;
    long tick = sysconf(_SC_CLK_TCK);
    struct dirent *e;
    while ((e = readdir(d)) && sec < 0) {
        if (e->d_name[0] == '.')
            continue;
        char path[64], comm[32] = "";
        snprintf(path, sizeof path, "/proc/self/task/%.20s/comm", e->d_name);
        FILE *c = fopen(path, "r");
        if (!c)
            continue;
        if (!fgets(comm, sizeof comm, c))
            comm[0] = '\0';
        fclose(c);
        if (strncmp(comm, "herd-log", 8) != 0)
            continue;
        snprintf(path, sizeof path, "/proc/self/task/%.20s/stat", e->d_name);
        FILE *st = fopen(path, "r");
        char buf[512];
        if (!st)
            continue;
        size_t n = fread(buf, 1, sizeof buf - 1, st);
        fclose(st);
        buf[n] = '\0';
        const char *rp = strrchr(buf, ')'); /* fields after the name: state is field 3, utime 14, stime 15 */
        unsigned long long ut, stt;
        if (rp && sscanf(rp + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &stt) == 2 && tick > 0)
            sec = (double)(ut + stt) / (double)tick;
    }
    closedir(d);
    return sec;
}

/* herd_thread_cpu_seconds_total: the node (this thread), each front end,
 * the log writer. */
static void render_cpu(herd_node_t *node, FILE *f)
{
    struct timespec ts;
    fprintf(f, "# HELP herd_thread_cpu_seconds_total CPU seconds used, by thread.\n"
               "# TYPE herd_thread_cpu_seconds_total counter\n");
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) == 0)
        fprintf(f, "herd_thread_cpu_seconds_total{thread=\"node\"} %.6f\n", (double)ts.tv_sec + ts.tv_nsec / 1e9);
    for (size_t i = 0; i < node->n_fes; i++) {
        double s = herd_fethread_cpu_seconds(node->fes[i].thread);
        if (s >= 0)
            fprintf(f, "herd_thread_cpu_seconds_total{thread=\"frontend-%zu\"} %.6f\n", i, s);
    }
    double s = log_thread_cpu();
    if (s >= 0)
        fprintf(f, "herd_thread_cpu_seconds_total{thread=\"log\"} %.6f\n", s);
}

/* /metrics, rendered on the reactor thread when the admin thread asks. */
char *node_render_metrics(void *arg, size_t *len)
{
    herd_node_t *node = arg;
    char *text = NULL;
    FILE *f = open_memstream(&text, len);
    if (!f)
        return NULL;
    const counters_t *n = &node->n;
    char reason[256];
    herd_admin_render_process(f);
    fprintf(f,
            "# HELP herd_info The server's name.\n# TYPE herd_info gauge\nherd_info{server=\"%s\"} 1\n"
            "# HELP herd_ready Whether /readyz says ready (see README: health).\n# TYPE herd_ready gauge\n"
            "herd_ready %d\n"
            "# HELP herd_clients Clients held in the location table.\n# TYPE herd_clients gauge\n"
            "herd_clients %zu\n"
            "# HELP herd_client_connections Open client connections.\n# TYPE herd_client_connections gauge\n"
            "herd_client_connections %zu\n",
            node->name, node_health(node, reason, sizeof reason) == HERD_HEALTH_READY ? 1 : 0,
            herd_table_size(node->table),
            herd_frontend_connections(node->frontend));
    fprintf(f,
            "# HELP herd_commands_total Client commands by kind and outcome.\n"
            "# TYPE herd_commands_total counter\n"
            "herd_commands_total{command=\"IAMAT\",outcome=\"stored\"} %" PRIu64 "\n"
            "herd_commands_total{command=\"IAMAT\",outcome=\"not_newer\"} %" PRIu64 "\n"
            "herd_commands_total{command=\"WHATSAT\",outcome=\"answered\"} %" PRIu64 "\n"
            "herd_commands_total{command=\"WHATSAT\",outcome=\"unknown_client\"} %" PRIu64 "\n"
            "herd_commands_total{command=\"IAMAT\",outcome=\"refused\"} %" PRIu64 "\n"
            "# HELP herd_invalid_lines_total Client lines answered with '?'.\n"
            "# TYPE herd_invalid_lines_total counter\nherd_invalid_lines_total %" PRIu64 "\n"
            "# HELP herd_peer_updates_total AT lines from neighbours by outcome: stored (newer), not_newer,\n"
            "# invalid (did not parse, or an origin or time out of bounds), refused (outside the table's bounds).\n"
            "# TYPE herd_peer_updates_total counter\n"
            "herd_peer_updates_total{outcome=\"stored\"} %" PRIu64 "\n"
            "herd_peer_updates_total{outcome=\"not_newer\"} %" PRIu64 "\n"
            "herd_peer_updates_total{outcome=\"invalid\"} %" PRIu64 "\n"
            "herd_peer_updates_total{outcome=\"refused\"} %" PRIu64 "\n"
            "# HELP herd_records_dropped_total Records dropped by limits.max_records or limits.record_ttl_s.\n"
            "# TYPE herd_records_dropped_total counter\nherd_records_dropped_total %" PRIu64 "\n",
            n->iamat_stored, n->iamat_not_newer, n->whatsat_answered, n->whatsat_unknown, n->iamat_refused,
            n->invalid, n->peer_stored, n->peer_duplicates, n->peer_invalid, n->peer_refused,
            herd_table_dropped(node->table));
    herd_links_render(node->links, f);
    herd_log_stats_t ls;
    herd_log_stats(node->log, &ls);
    fprintf(f,
            "# HELP herd_log_lines_written_total Event log lines written to the file.\n"
            "# TYPE herd_log_lines_written_total counter\nherd_log_lines_written_total %" PRIu64 "\n"
            "# HELP herd_log_bytes_written_total Event log bytes written to the file.\n"
            "# TYPE herd_log_bytes_written_total counter\nherd_log_bytes_written_total %" PRIu64 "\n"
            "# HELP herd_log_dropped_lines_total Log lines dropped: the disk did not keep up, or a write failed.\n"
            "# TYPE herd_log_dropped_lines_total counter\nherd_log_dropped_lines_total %" PRIu64 "\n"
            "# HELP herd_log_queue_bytes Log bytes handed to the writer thread and not yet written.\n"
            "# TYPE herd_log_queue_bytes gauge\nherd_log_queue_bytes %" PRIu64 "\n",
            ls.lines_written, ls.bytes_written, ls.lines_dropped, ls.queue_bytes);
    fprintf(f, "# HELP herd_log_reopen_failures_total Log reopens that failed (each retry counts).\n"
               "# TYPE herd_log_reopen_failures_total counter\nherd_log_reopen_failures_total %" PRIu64 "\n",
            ls.reopen_failures);
    herd_frontend_render(node->frontend, f);
    herd_hist_t cmd_hist[HERD_FETHREAD_KINDS] = {0};
    for (size_t i = 0; i < node->n_fes; i++)
        herd_fethread_command_hist(node->fes[i].thread, cmd_hist);
    herd_fethread_render_command_hist(cmd_hist, f);
    render_cpu(node, f);
    if (node->journal)
        herd_journal_render(node->journal, f);
    else
        fprintf(f, "# HELP herd_state_durable Whether every record held is on disk as the fsync setting promises.\n"
                   "# TYPE herd_state_durable gauge\nherd_state_durable 0\n");
    fprintf(f,
            "# HELP herd_places_requests_total WHATSAT Places lookups by how they were answered.\n"
            "# TYPE herd_places_requests_total counter\n"
            "herd_places_requests_total{result=\"upstream\"} %" PRIu64 "\n"
            "herd_places_requests_total{result=\"shared\"} %" PRIu64 "\n"
            "herd_places_requests_total{result=\"cache_hit\"} %" PRIu64 "\n"
            "herd_places_requests_total{result=\"error\"} %" PRIu64 "\n"
            "# HELP herd_places_abandoned_total WHATSATs whose Places lookup was given up, by reason.\n"
            "# TYPE herd_places_abandoned_total counter\n"
            "herd_places_abandoned_total{reason=\"deadline\"} %" PRIu64 "\n"
            "herd_places_abandoned_total{reason=\"client_gone\"} %" PRIu64 "\n"
            "# HELP herd_places_refused_total WHATSATs answered at once with UNKNOWN_ERROR, by reason.\n"
            "# TYPE herd_places_refused_total counter\n"
            "herd_places_refused_total{reason=\"max_queued\"} %" PRIu64 "\n"
            "herd_places_refused_total{reason=\"worker_full\"} %" PRIu64 "\n"
            "# HELP herd_places_pending WHATSATs waiting for their Places answer.\n"
            "# TYPE herd_places_pending gauge\nherd_places_pending %zu\n"
            "# HELP herd_places_upstream_seconds Duration of upstream Places calls.\n"
            "# TYPE herd_places_upstream_seconds histogram\n",
            n->places_upstream, n->places_shared, n->places_cache_hits, n->places_errors, n->places_deadline,
            n->places_client_gone, n->places_refused_queued, n->places_refused_worker, node->n_pending);
    uint64_t cumulative = 0;
    for (size_t b = 0; b < N_LATENCY; b++) {
        cumulative += n->latency_buckets[b];
        fprintf(f, "herd_places_upstream_seconds_bucket{le=\"%g\"} %" PRIu64 "\n", node_latency_bounds[b], cumulative);
    }
    fprintf(f,
            "herd_places_upstream_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n"
            "herd_places_upstream_seconds_sum %.6f\nherd_places_upstream_seconds_count %" PRIu64 "\n",
            n->latency_count, n->latency_sum, n->latency_count);
    fprintf(f, "# HELP herd_update_age_seconds Age of updates stored from neighbours: the clock here minus the\n"
               "# origin's receive time (client time + skew). Clock differences between servers add to it.\n"
               "# TYPE herd_update_age_seconds histogram\n");
    herd_hist_render(&node->update_age[0], f, "herd_update_age_seconds", "via=\"flood\"");
    herd_hist_render(&node->update_age[1], f, "herd_update_age_seconds", "via=\"exchange\"");
    fclose(f);
    return text;
}

void node_observe_update_age(herd_node_t *node, herd_time_t recv, bool flood)
{
    herd_time_t now = herd_links_message_time(node->links);
    /* now - recv, in seconds and nanoseconds: a receive time's seconds are
     * within about 2 * 10^18 of zero (herd_record_receive_time), so the
     * difference does not overflow. */
    int64_t sec = now.sec - recv.sec;
    int64_t nsec = (int64_t)now.nsec - recv.nsec;
    int64_t ns;
    if (sec > 1000000000 || sec < -1000000000)
        ns = sec < 0 ? -1 : INT64_MAX;
    else
        ns = sec * 1000000000 + nsec;
    herd_hist_observe(&node->update_age[flood ? 0 : 1], ns);
}

/* Per-neighbour facts for the page, read from the links' own metrics text
 * (herd_link_up, herd_exchange_last_success_timestamp_seconds), so the page
 * shows what /metrics shows. */
typedef struct {
    char *text;
    size_t len;
} links_text_t;

/* The value of `metric{peer="NAME"}` in the links' text, or `missing`. */
static double peer_value(const links_text_t *t, const char *metric, const char *name, double missing)
{
    char key[HERD_MAX_NAME + 128];
    int k = snprintf(key, sizeof key, "\n%s{peer=\"%s\"} ", metric, name);
    if (k < 0 || (size_t)k >= sizeof key || !t->text)
        return missing;
    const char *p = strstr(t->text, key);
    if (!p)
        return missing;
    return strtod(p + k, NULL);
}

char *node_render_page(void *arg, size_t *len)
{
    herd_node_t *node = arg;
    const herd_topology_t *topo = node->topo;
    links_text_t lt = {NULL, 0};
    FILE *f = open_memstream(&lt.text, &lt.len);
    if (f) {
        fputc('\n', f);
        herd_links_render(node->links, f);
        fclose(f);
    }
    herd_page_server_t *servers = calloc(topo->n_servers ? topo->n_servers : 1, sizeof *servers);
    herd_page_link_t *links = calloc(topo->n_links ? topo->n_links : 1, sizeof *links);
    char *out = NULL;
    if (servers && links) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double now = (double)ts.tv_sec + ts.tv_nsec / 1e9;
        long self = herd_topology_find(topo, node->name);
        for (size_t i = 0; i < topo->n_servers; i++) {
            servers[i].name = topo->servers[i].name;
            servers[i].self = (long)i == self;
            servers[i].link = -1;
        }
        for (size_t i = 0; i < topo->n_links; i++) {
            herd_page_link_t *l = &links[i];
            l->a = topo->links[i].a;
            l->b = topo->links[i].b;
            l->up = -1;
            l->age_s = HERD_PAGE_UNKNOWN;
            if (self < 0 || (l->a != (size_t)self && l->b != (size_t)self))
                continue;
            size_t other = l->a == (size_t)self ? l->b : l->a;
            const char *name = topo->servers[other].name;
            l->up = peer_value(&lt, "herd_link_up", name, 0) > 0 ? 1 : 0;
            servers[other].link = l->up;
            double last = peer_value(&lt, "herd_exchange_last_success_timestamp_seconds", name, -1);
            l->age_s = last < 0 ? HERD_PAGE_UNKNOWN : last == 0 ? HERD_PAGE_NEVER : (now > last ? now - last : 0);
        }
        char reason[256];
        herd_health_t h = node_health(node, reason, sizeof reason);
        herd_page_t page = {.self = node->name,
                            .version = HERD_VERSION,
                            .health = herd_health_name(h),
                            .reason = reason,
                            .ready = h == HERD_HEALTH_READY,
                            .records = herd_table_size(node->table),
                            .connections = herd_frontend_connections(node->frontend),
                            .servers = servers,
                            .n_servers = topo->n_servers,
                            .links = links,
                            .n_links = topo->n_links};
        out = herd_admin_page_render(&page, len);
    }
    free(servers);
    free(links);
    free(lt.text);
    return out;
}

