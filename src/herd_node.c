/* herd_node: commands, the table, Places answers and flooding. See
 * herd_node.h. */
#define _GNU_SOURCE /* open_memstream */
#include "herd_node.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herd_admin.h"
#include "herd_frontend.h"
#include "herd_journal.h"
#include "herd_links.h"
#include "herd_places.h"
#include "herd_proto.h"
#include "herd_table.h"

#define PENDING_BUCKETS 1024 /* WHATSATs waiting on the Places worker, hashed by request id */

/* Upper bounds (seconds) of the Places upstream latency histogram. */
static const double latency_bounds[] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
#define N_LATENCY (sizeof latency_bounds / sizeof latency_bounds[0])

/* What the node counts, for /metrics. Only the reactor thread touches it. */
typedef struct {
    uint64_t iamat_stored, iamat_not_newer;        /* IAMATs by outcome */
    uint64_t whatsat_answered, whatsat_unknown;    /* WHATSATs by outcome */
    uint64_t invalid;                              /* lines answered with "?" */
    uint64_t peer_stored, peer_duplicates;         /* updates from neighbours: stored / not newer */
    uint64_t peer_invalid;                         /* AT lines from neighbours that did not parse */
    uint64_t places_upstream, places_shared, places_cache_hits, places_errors;
    uint64_t latency_buckets[N_LATENCY];           /* upstream calls per latency bucket (not cumulative) */
    uint64_t latency_count;                        /* upstream calls timed */
    double latency_sum;                            /* their total seconds */
} counters_t;

/* A WHATSAT waiting for its Places reply. */
typedef struct pending_t {
    struct pending_t *next; /* next in the bucket */
    uint64_t req_id;        /* the id given to the worker */
    herd_ticket_t ticket;   /* the line to answer */
    size_t at_len;          /* bytes of the AT line */
    char at[];              /* the AT line the query was made from */
} pending_t;

struct herd_node_t {
    herd_loop_t *loop;
    herd_log_t *log;
    const herd_topology_t *topo;  /* the topology in force (owned by main) */
    char *name;                   /* our server name */
    size_t name_len;
    herd_table_t *table;          /* client id -> newest location */
    herd_frontend_t *frontend;    /* client connections */
    herd_places_t *places;        /* the Places worker */
    herd_links_t *links;          /* the neighbours */
    herd_admin_t *admin;          /* /metrics and /healthz, or NULL without admin_port */
    herd_journal_t *journal;      /* the table on disk, or NULL without state_dir */
    counters_t n;                 /* counters for /metrics */
    pending_t *pending[PENDING_BUCKETS];
    size_t n_pending;
    uint64_t next_req_id;
    char *reply;                  /* scratch buffer for building replies */
    size_t reply_cap;
};

/* Grows the scratch reply buffer to hold n bytes. */
static char *reply_buf(herd_node_t *node, size_t n)
{
    if (n > node->reply_cap) {
        char *p = realloc(node->reply, n);
        if (!p)
            return NULL;
        node->reply = p;
        node->reply_cap = n;
    }
    return node->reply;
}

static void answer_invalid(herd_node_t *node, herd_ticket_t t, const char *line, size_t len)
{
    node->n.invalid++;
    char *r = reply_buf(node, len + 3);
    if (!r)
        return;
    r[0] = '?';
    r[1] = ' ';
    memcpy(r + 2, line, len);
    r[len + 2] = '\n';
    herd_frontend_answer(node->frontend, t, r, len + 3);
}

/* Answers a WHATSAT: the AT line, a newline, the JSON, two newlines. */
static void answer_whatsat(herd_node_t *node, herd_ticket_t t, const char *at, size_t at_len, const char *json,
                           size_t json_len)
{
    char *r = reply_buf(node, at_len + json_len + 3);
    if (!r) {
        herd_log_event(node->log, "out of memory answering a WHATSAT");
        return;
    }
    memcpy(r, at, at_len);
    r[at_len] = '\n';
    memcpy(r + at_len + 1, json, json_len);
    r[at_len + 1 + json_len] = '\n';
    r[at_len + 2 + json_len] = '\n';
    herd_frontend_answer(node->frontend, t, r, at_len + json_len + 3);
}

/* Offers an AT line to the table; floods it when stored. `from` is the
 * link it came from, or -1 for our own client. */
static herd_update_t store(herd_node_t *node, const herd_at_t *at, const char *line, size_t len, long from)
{
    herd_update_t u = herd_table_update(node->table, at->id.p, at->id.len, at->time, line, len,
                                        (size_t)(at->pos.p - line), at->pos.len, NULL);
    if (u == HERD_UPDATE_NEWER && node->journal)
        herd_journal_append(node->journal, line, len);
    if (u == HERD_UPDATE_NEWER)
        herd_links_flood(node->links, line, len, from, at->server);
    else if (u == HERD_UPDATE_ERROR)
        herd_log_event(node->log, "could not store a location: out of memory");
    return u;
}

static void do_iamat(herd_node_t *node, herd_ticket_t t, const herd_cmd_t *cmd)
{
    char *r = reply_buf(node, HERD_AT_MAX + 1);
    if (!r)
        return;
    size_t n = herd_proto_format_at(r, HERD_AT_MAX, node->name, node->name_len, herd_time_now(), cmd);
    herd_at_t at = {.id = cmd->id, .time = cmd->time, .server = {node->name, node->name_len}};
    at.pos.p = r + n - cmd->time_txt.len - 1 - cmd->pos.len;
    at.pos.len = cmd->pos.len;
    at.id.p = at.pos.p - 1 - cmd->id.len;
    if (store(node, &at, r, n, -1) == HERD_UPDATE_NEWER)
        node->n.iamat_stored++;
    else
        node->n.iamat_not_newer++;
    r[n] = '\n';
    /* fsync "always": the reply waits for the group commit, the node does not. */
    if (!node->journal || !herd_journal_hold(node->journal, t, r, n + 1))
        herd_frontend_answer(node->frontend, t, r, n + 1);
}

static void do_whatsat(herd_node_t *node, herd_ticket_t t, const herd_cmd_t *cmd, const char *line, size_t len)
{
    const herd_record_t *rec = herd_table_find(node->table, cmd->id.p, cmd->id.len);
    if (!rec) {
        node->n.whatsat_unknown++;
        answer_invalid(node, t, line, len);
        return;
    }
    node->n.whatsat_answered++;
    herd_span_t pos = {rec->at + rec->pos_off, rec->pos_len}, lat, lng;
    if (herd_proto_parse_position(pos, &lat, &lng) != 0) {
        answer_invalid(node, t, line, len); /* cannot happen: stored positions are validated */
        return;
    }
    pending_t *p = malloc(sizeof *p + rec->at_len);
    uint64_t req_id = ++node->next_req_id;
    if (!p || herd_places_request(node->places, req_id, lat, lng, cmd->radius, cmd->bound) != 0) {
        char *err = herd_places_error_json("UNKNOWN_ERROR", "the Places worker could not take the request");
        herd_log_event(node->log, "places: request %llu could not be queued", (unsigned long long)req_id);
        if (err)
            answer_whatsat(node, t, rec->at, rec->at_len, err, strlen(err));
        free(err);
        free(p);
        return;
    }
    p->req_id = req_id;
    p->ticket = t;
    p->at_len = rec->at_len;
    memcpy(p->at, rec->at, rec->at_len);
    pending_t **b = &node->pending[req_id % PENDING_BUCKETS];
    p->next = *b;
    *b = p;
    node->n_pending++;
}

/* The front end's line handler. */
static void on_line(void *arg, herd_ticket_t t, const char *line, size_t len)
{
    herd_node_t *node = arg;
    herd_cmd_t cmd;
    herd_proto_parse(line, len, &cmd);
    switch (cmd.kind) {
    case HERD_CMD_IAMAT:
        do_iamat(node, t, &cmd);
        break;
    case HERD_CMD_WHATSAT:
        do_whatsat(node, t, &cmd, line, len);
        break;
    case HERD_CMD_EMPTY:
        herd_frontend_answer(node->frontend, t, NULL, 0);
        break;
    case HERD_CMD_INVALID:
    default:
        answer_invalid(node, t, line, len);
        break;
    }
}

/* Servers' clocks may disagree a little; an AT line whose origin says it
 * received the IAMAT later than this past our own clock is not believed. */
#define MAX_CLOCK_AHEAD_SEC 60

/* Whether the origin's receive time (client time + skew) is not in the
 * future. A valid AT line's skew is "[+-]S.NNNNNNNNN", which herd_time_parse
 * reads once the sign is off. */
static bool plausible(const herd_at_t *at, herd_time_t now)
{
    herd_time_t skew;
    if (at->skew.len < 2 || herd_time_parse(at->skew.p + 1, at->skew.len - 1, &skew) != 0)
        return false;
    int64_t sec = at->time.sec, nsec = at->time.nsec;
    if (at->skew.p[0] == '-') {
        sec -= skew.sec;
        nsec -= skew.nsec;
    } else {
        sec += skew.sec;
        nsec += skew.nsec;
    }
    sec += nsec / 1000000000 - (nsec < 0); /* only the seconds matter at this tolerance */
    return sec <= now.sec + MAX_CLOCK_AHEAD_SEC;
}

/* The id and time of what looks like an AT line (six fields, one space
 * apart), without validating the rest; false when it does not look like one. */
static bool quick_id_time(const char *line, size_t len, herd_span_t *id, herd_time_t *time)
{
    const char *f[6], *end = line + len, *p = line;
    f[0] = line;
    for (int i = 1; i < 6; i++) {
        const char *sp = memchr(p, ' ', (size_t)(end - p));
        if (!sp)
            return false;
        f[i] = p = sp + 1;
    }
    if (memchr(p, ' ', (size_t)(end - p)))
        return false;
    id->p = f[3];
    id->len = (size_t)(f[4] - f[3] - 1);
    return herd_time_parse(f[5], (size_t)(end - f[5]), time) == 0;
}

/* An AT line flooded by a neighbour. */
static void on_peer_update(void *arg, const char *from_name, long from, const char *line, size_t len)
{
    herd_node_t *node = arg;
    herd_at_t at;
    /* Most of what neighbours flood is already here (each update comes in
     * once per path). A line that could not replace what we hold is dropped
     * before the full validation, which costs several times more. */
    herd_span_t qid;
    herd_time_t qtime;
    if (quick_id_time(line, len, &qid, &qtime)) {
        const herd_record_t *rec = herd_table_find(node->table, qid.p, qid.len);
        if (rec && herd_time_cmp(qtime, rec->time) <= 0) {
            node->n.peer_duplicates++;
            return;
        }
    }
    const char *why = herd_proto_parse_at(line, len, &at) != 0 ? "an invalid AT line"
                      : !plausible(&at, herd_time_now())      ? "an AT line received in the future"
                                                              : NULL;
    if (why) {
        char prefix[160];
        node->n.peer_invalid++;
        snprintf(prefix, sizeof prefix, "peer %s: dropped %s: ", from_name, why);
        herd_log_data(node->log, prefix, line, len > 512 ? 512 : len);
        return;
    }
    if (store(node, &at, line, len, from) == HERD_UPDATE_NEWER)
        node->n.peer_stored++;
    else
        node->n.peer_duplicates++;
}

/* Counts one finished Places request. */
static void count_places(herd_node_t *node, const herd_places_reply_t *r)
{
    if (r->note)
        node->n.places_errors++;
    if (r->cache_hit)
        node->n.places_cache_hits++;
    else if (r->shared)
        node->n.places_shared++;
    else if (r->upstream)
        node->n.places_upstream++;
    if (r->upstream && !r->cache_hit) {
        double s = r->upstream_ms / 1000.0;
        size_t b = 0;
        while (b < N_LATENCY && s > latency_bounds[b])
            b++;
        if (b < N_LATENCY)
            node->n.latency_buckets[b]++;
        node->n.latency_count++;
        node->n.latency_sum += s;
    }
}

/* /metrics, rendered on the reactor thread when the admin thread asks. */
static char *render_metrics(void *arg, size_t *len)
{
    herd_node_t *node = arg;
    char *text = NULL;
    FILE *f = open_memstream(&text, len);
    if (!f)
        return NULL;
    const counters_t *n = &node->n;
    fprintf(f,
            "# HELP herd_info The server's name.\n# TYPE herd_info gauge\nherd_info{server=\"%s\"} 1\n"
            "# HELP herd_ready Whether the first rejoin exchange is done.\n# TYPE herd_ready gauge\n"
            "herd_ready %d\n"
            "# HELP herd_clients Clients held in the location table.\n# TYPE herd_clients gauge\n"
            "herd_clients %zu\n"
            "# HELP herd_client_connections Open client connections.\n# TYPE herd_client_connections gauge\n"
            "herd_client_connections %zu\n",
            node->name, herd_links_ready(node->links) ? 1 : 0, herd_table_size(node->table),
            herd_frontend_connections(node->frontend));
    fprintf(f,
            "# HELP herd_commands_total Client commands by kind and outcome.\n"
            "# TYPE herd_commands_total counter\n"
            "herd_commands_total{command=\"IAMAT\",outcome=\"stored\"} %" PRIu64 "\n"
            "herd_commands_total{command=\"IAMAT\",outcome=\"not_newer\"} %" PRIu64 "\n"
            "herd_commands_total{command=\"WHATSAT\",outcome=\"answered\"} %" PRIu64 "\n"
            "herd_commands_total{command=\"WHATSAT\",outcome=\"unknown_client\"} %" PRIu64 "\n"
            "# HELP herd_invalid_lines_total Client lines answered with '?'.\n"
            "# TYPE herd_invalid_lines_total counter\nherd_invalid_lines_total %" PRIu64 "\n"
            "# HELP herd_peer_updates_stored_total Updates from neighbours that were newer and stored.\n"
            "# TYPE herd_peer_updates_stored_total counter\nherd_peer_updates_stored_total %" PRIu64 "\n"
            "# HELP herd_duplicates_dropped_total Updates from neighbours that were not newer.\n"
            "# TYPE herd_duplicates_dropped_total counter\nherd_duplicates_dropped_total %" PRIu64 "\n"
            "# HELP herd_peer_invalid_updates_total AT lines from neighbours that did not parse.\n"
            "# TYPE herd_peer_invalid_updates_total counter\nherd_peer_invalid_updates_total %" PRIu64 "\n",
            n->iamat_stored, n->iamat_not_newer, n->whatsat_answered, n->whatsat_unknown, n->invalid,
            n->peer_stored, n->peer_duplicates, n->peer_invalid);
    herd_links_render(node->links, f);
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
            "# HELP herd_places_errors_total Places lookups answered with an error object.\n"
            "# TYPE herd_places_errors_total counter\nherd_places_errors_total %" PRIu64 "\n"
            "# HELP herd_places_cache_hits_total Places lookups answered from the cache.\n"
            "# TYPE herd_places_cache_hits_total counter\nherd_places_cache_hits_total %" PRIu64 "\n"
            "# HELP herd_places_upstream_seconds Duration of upstream Places calls.\n"
            "# TYPE herd_places_upstream_seconds histogram\n",
            n->places_upstream, n->places_shared, n->places_cache_hits, n->places_errors, n->places_errors,
            n->places_cache_hits);
    uint64_t cumulative = 0;
    for (size_t b = 0; b < N_LATENCY; b++) {
        cumulative += n->latency_buckets[b];
        fprintf(f, "herd_places_upstream_seconds_bucket{le=\"%g\"} %" PRIu64 "\n", latency_bounds[b], cumulative);
    }
    fprintf(f,
            "herd_places_upstream_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n"
            "herd_places_upstream_seconds_sum %.6f\nherd_places_upstream_seconds_count %" PRIu64 "\n",
            n->latency_count, n->latency_sum, n->latency_count);
    fclose(f);
    return text;
}

static bool is_ready(void *arg)
{
    herd_node_t *node = arg;
    return herd_links_ready(node->links);
}

/* Replies from the Places worker. */
static void places_ready(herd_loop_t *loop, void *arg)
{
    (void)loop;
    herd_node_t *node = arg;
    for (;;) {
        herd_places_reply_t reply;
        int rc = herd_places_recv(node->places, &reply);
        if (rc == 0)
            break;
        if (rc < 0) {
            herd_log_event(node->log, "places: dropped a malformed message from the worker");
            continue;
        }
        pending_t **at = &node->pending[reply.req_id % PENDING_BUCKETS];
        while (*at && (*at)->req_id != reply.req_id)
            at = &(*at)->next;
        pending_t *p = *at;
        count_places(node, &reply);
        if (reply.note)
            herd_log_event(node->log, "places: request %llu: %s", (unsigned long long)reply.req_id, reply.note);
        if (p) {
            *at = p->next;
            node->n_pending--;
            answer_whatsat(node, p->ticket, p->at, p->at_len, reply.json, reply.json_len);
            free(p);
        }
        herd_places_reply_free(&reply);
    }
}

/* A record found on disk at start: offered to the table like any update
 * (its ranking makes replay idempotent), or removed for a DROP. */
static void load_record(void *arg, const herd_journal_rec_t *rec)
{
    herd_node_t *node = arg;
    if (rec->kind == 'D')
        herd_table_remove(node->table, rec->id, rec->id_len);
    else
        herd_table_update(node->table, rec->id, rec->id_len, rec->time, rec->at, rec->at_len, rec->pos_off,
                          rec->pos_len, NULL);
}

/* End of every turn: this turn's records go to the writer in one batch. */
static void journal_tick(herd_loop_t *loop, void *arg)
{
    (void)loop;
    herd_node_t *node = arg;
    herd_journal_commit(node->journal, herd_table_size(node->table));
}

/* The writer's reports: held replies whose records are on disk go out. */
static void journal_ready(herd_loop_t *loop, void *arg)
{
    (void)loop;
    herd_node_t *node = arg;
    herd_journal_recv(node->journal, node->frontend);
}

/* Loads state_dir/NAME into the table and starts the writer. */
static int open_journal(herd_node_t *node, const herd_topology_t *topo, char *err, size_t errlen)
{
    char *dir = NULL;
    if (asprintf(&dir, "%s/%s", topo->state_dir, node->name) < 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    herd_journal_conf_t jc = {
        .dir = dir, .fsync = topo->fsync, .load = load_record, .arg = node, .loop = node->loop};
    node->journal = herd_journal_open(&jc, node->log, err, errlen);
    free(dir);
    if (!node->journal)
        return -1;
    if (herd_loop_add_zmq(node->loop, herd_journal_sock(node->journal), journal_ready, node) != 0 ||
        herd_loop_add_tick(node->loop, journal_tick, node) != 0) {
        snprintf(err, errlen, "cannot watch the state writer");
        return -1;
    }
    return 0;
}

bool herd_node_durable(const herd_node_t *node)
{
    return !node->journal || herd_journal_durable(node->journal);
}

herd_node_t *herd_node_new(herd_loop_t *loop, herd_log_t *log, const herd_topology_t *topo, size_t self,
                           char *err, size_t errlen)
{
    herd_node_t *node = calloc(1, sizeof *node);
    if (!node) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    const herd_server_conf_t *me = &topo->servers[self];
    node->loop = loop;
    node->log = log;
    node->topo = topo;
    node->name = strdup(me->name);
    node->name_len = strlen(me->name);
    node->table = herd_table_new();
    if (!node->table || !node->name) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (topo->state_dir && open_journal(node, topo, err, errlen) != 0)
        goto fail;
    /* Links first: their end-of-turn flush must run before the front end
     * writes replies, so that an update is on its way before the AT reply. */
    node->links = herd_links_new(loop, log, topo, self, node->table, on_peer_update, node, err, errlen);
    if (!node->links)
        goto fail;

    const char *url = getenv("HERD_PLACES_URL");
    const char *key = topo->places_key_env ? getenv(topo->places_key_env) : NULL;
    herd_places_conf_t pc = {
        .url = url && *url ? url : topo->places_url,
        .key = key,
        .timeout_ms = topo->places_timeout_ms,
        .cache_ttl_ms = topo->places_cache_ttl_ms,
    };
    node->places = herd_places_new(&pc, err, errlen);
    if (!node->places || herd_loop_add_zmq(loop, herd_places_sock(node->places), places_ready, node) != 0) {
        if (node->places)
            snprintf(err, errlen, "cannot watch the Places worker");
        goto fail;
    }
    if (!key || !*key)
        herd_log_event(log, "places: no API key in $%s: WHATSAT answers REQUEST_DENIED", topo->places_key_env);

    herd_frontend_conf_t fc = {
        .host = me->host,
        .port = me->client_port,
        .max_clients = topo->max_clients,
        .idle_timeout_ms = topo->idle_timeout_ms,
        .max_output_bytes = topo->max_output_bytes,
        .on_line = on_line,
        .arg = node,
    };
    node->frontend = herd_frontend_new(loop, log, &fc, err, errlen);
    if (!node->frontend)
        goto fail;
    if (me->admin_port) {
        node->admin = herd_admin_new(loop, me->admin_host, me->admin_port, render_metrics, is_ready, node, err, errlen);
        if (!node->admin)
            goto fail;
    }
    return node;
fail:
    herd_node_destroy(&node);
    return NULL;
}

void herd_node_destroy(herd_node_t **p)
{
    if (!p || !*p)
        return;
    herd_node_t *node = *p;
    herd_admin_destroy(&node->admin);
    herd_frontend_destroy(&node->frontend);
    if (node->places)
        herd_loop_remove_zmq(node->loop, herd_places_sock(node->places));
    herd_places_destroy(&node->places);
    herd_links_destroy(&node->links);
    if (node->journal)
        herd_loop_remove_zmq(node->loop, herd_journal_sock(node->journal));
    herd_journal_destroy(&node->journal);
    for (size_t i = 0; i < PENDING_BUCKETS; i++) {
        while (node->pending[i]) {
            pending_t *q = node->pending[i];
            node->pending[i] = q->next;
            free(q);
        }
    }
    herd_table_destroy(&node->table);
    free(node->name);
    free(node->reply);
    free(node);
    *p = NULL;
}

void herd_node_drain(herd_node_t *node)
{
    herd_frontend_drain(node->frontend);
}

size_t herd_node_busy(const herd_node_t *node)
{
    return herd_frontend_busy(node->frontend);
}

/* NULL-safe string equality. */
static bool same(const char *a, const char *b)
{
    return (!a && !b) || (a && b && !strcmp(a, b));
}

int herd_node_reload(herd_node_t *node, const herd_topology_t *topo, char *err, size_t errlen)
{
    long self = herd_topology_find(topo, node->name);
    if (self < 0) {
        snprintf(err, errlen, "%s has no server named \"%s\"", topo->path, node->name);
        return -1;
    }
    const herd_server_conf_t *old = &node->topo->servers[herd_topology_find(node->topo, node->name)];
    const herd_server_conf_t *me = &topo->servers[self];
    if (strcmp(old->host, me->host) || old->client_port != me->client_port || old->peer_port != me->peer_port ||
        old->admin_port != me->admin_port || !same(old->public_key, me->public_key))
        herd_log_event(node->log, "reload: this server's own address, ports or key changed: "
                                  "that takes a restart; the running ones stay");
    if (!same(node->topo->places_url, topo->places_url) || !same(node->topo->places_key_env, topo->places_key_env) ||
        node->topo->places_timeout_ms != topo->places_timeout_ms ||
        node->topo->places_cache_ttl_ms != topo->places_cache_ttl_ms)
        herd_log_event(node->log, "reload: the places settings changed: that takes a restart");
    if (herd_links_reconfigure(node->links, topo, err, errlen) != 0)
        return -1;
    herd_frontend_set_limits(node->frontend, topo->max_clients, topo->idle_timeout_ms, topo->max_output_bytes);
    node->topo = topo;
    return 0;
}
