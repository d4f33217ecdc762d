/* herd_admin: /metrics, /livez, /readyz, /healthz, /config and the page
 * at / over libmicrohttpd. See herd_admin.h.
 *
 * Threads: libmicrohttpd's own (it serves HTTP; not ours to shape), which
 * asks the reactor over an inproc PAIR; and the sweeper, a zactor like
 * every thread of ours. The locks guard what libmicrohttpd's thread shares
 * with the others (one question at a time, the progress text, the list of
 * connections the sweeper cuts). */
#define _GNU_SOURCE /* asprintf */
#include "herd_admin.h"

#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <czmq.h>
#include <jansson.h>
#include <microhttpd.h>

#include "herd_admin_page.h"
#include "herd_version.h"

#define ASK_TIMEOUT_MS 1500 /* the reactor answers in microseconds; this is for a wedged one */
#define SWEEP_MS 100        /* how often connections past their deadline are looked for */
#define REASON_MAX 256      /* longest health reason */
#define PROGRESS_MAX 200    /* longest start-up progress line */

/* One open HTTP connection, from libmicrohttpd's accept to its close. */
typedef struct conn_t {
    struct conn_t *prev, *next;
    int fd;           /* its socket: open for as long as the conn_t is listed */
    int64_t start_ms; /* accepted at (zclock_mono) */
    bool cut;         /* its deadline passed and its socket was shut down */
} conn_t;

/* The configuration in force and the last reload. Reactor thread only. */
typedef struct {
    json_t *fields;                   /* what the server runs (herd_admin_set_config), or NULL */
    uint64_t generation;              /* reloads handled since start */
    bool reloaded;                    /* whether there was one */
    bool ok;                          /* the last one's outcome (true before any) */
    char *reason;                     /* its one-line reason */
    char at[32];                      /* when it was handled, UTC */
    char **restart;                   /* settings that changed but take a restart */
    size_t n_restart;
} config_t;

struct herd_admin_t {
    herd_loop_t *loop;
    struct MHD_Daemon *daemon;     /* the HTTP server and its thread */
    void *reactor_side;            /* PAIR read by the reactor */
    void *http_side;               /* PAIR used by the HTTP thread only */
    pthread_mutex_t ask_lock;      /* one question at a time on http_side */
    uint64_t seq;                  /* number of the last question (HTTP thread) */
    herd_admin_metrics_fn *metrics;
    herd_admin_health_fn *health;
    herd_admin_page_fn *page;      /* `/` once serving, or NULL */
    void *arg;
    config_t conf;                 /* reactor thread only */

    pthread_mutex_t progress_lock; /* guards serving and progress (any thread) */
    bool serving;                  /* the reactor answers (herd_admin_set_serving) */
    char progress[PROGRESS_MAX];   /* what the start is doing, until serving */

    pthread_mutex_t conns_lock;    /* guards conns and cut_total (HTTP and sweeper threads) */
    conn_t *conns;                 /* open connections, newest first */
    uint64_t cut_total;            /* connections cut: at their deadline, or as the oldest past the cap */
    zactor_t *sweeper;             /* cuts connections past their deadline */
};

const char *herd_health_name(herd_health_t h)
{
    switch (h) {
    case HERD_HEALTH_READY:
        return "ready";
    case HERD_HEALTH_DRAINING:
        return "draining";
    case HERD_HEALTH_NOT_DURABLE:
        return "not durable";
    case HERD_HEALTH_ISOLATED:
        return "isolated";
    case HERD_HEALTH_STARTING:
    default:
        return "starting";
    }
}

/* ------------------------------------------------------------ reactor side */

/* The gauges of the configuration, appended to the node's metrics. */
static char *render_metrics(herd_admin_t *a, size_t *len)
{
    size_t node_len = 0;
    char *node = a->metrics(a->arg, &node_len);
    uint64_t cut;
    pthread_mutex_lock(&a->conns_lock);
    cut = a->cut_total;
    pthread_mutex_unlock(&a->conns_lock);
    char *text = NULL;
    int n = asprintf(&text,
                     "%s"
                     "# HELP herd_config_generation Reloads (SIGHUP) handled since start.\n"
                     "# TYPE herd_config_generation gauge\nherd_config_generation %" PRIu64 "\n"
                     "# HELP herd_config_last_reload_success Whether the last reload was applied (1 before any).\n"
                     "# TYPE herd_config_last_reload_success gauge\nherd_config_last_reload_success %d\n"
                     "# HELP herd_config_restart_needed Whether the last reload left settings that take a restart.\n"
                     "# TYPE herd_config_restart_needed gauge\nherd_config_restart_needed %d\n"
                     "# HELP herd_admin_connections_cut_total Admin connections cut: deadline or cap.\n"
                     "# TYPE herd_admin_connections_cut_total counter\nherd_admin_connections_cut_total %" PRIu64
                     "\n",
                     node ? node : "", a->conf.generation, a->conf.ok ? 1 : 0, a->conf.n_restart > 0 ? 1 : 0, cut);
    free(node);
    if (n < 0)
        return NULL;
    *len = (size_t)n;
    return text;
}

/* "2ready: reason\n" or "5starting: reason\n": the first byte is the class
 * of the HTTP status. */
static char *render_health(herd_admin_t *a, size_t *len)
{
    char reason[REASON_MAX] = "";
    herd_health_t h = a->health(a->arg, reason, sizeof reason);
    char *text = NULL;
    int n = asprintf(&text, "%c%s: %s\n", h == HERD_HEALTH_READY ? '2' : '5', herd_health_name(h), reason);
    if (n < 0)
        return NULL;
    *len = (size_t)n;
    return text;
}

/* /livez once serving: the reactor answered, so the process serves. */
static char *render_live(size_t *len)
{
    char *text = strdup("2live: the server answers\n");
    if (text)
        *len = strlen(text);
    return text;
}

static json_t *string_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

/* The /config JSON document: the server's fields, the reload counter and
 * the last reload's outcome. */
static char *render_config(herd_admin_t *a, size_t *len)
{
    const config_t *c = &a->conf;
    json_t *last = json_null();
    if (c->reloaded) {
        json_t *restart = json_array();
        for (size_t i = 0; i < c->n_restart; i++)
            json_array_append_new(restart, json_string(c->restart[i]));
        last = json_pack("{s:b, s:o, s:s, s:o}", "ok", c->ok, "reason", string_or_null(c->reason), "at", c->at,
                         "needs_restart", restart);
    }
    json_t *doc = json_object();
    if (doc && c->fields)
        json_object_update(doc, c->fields);
    if (doc) {
        json_object_set_new(doc, "generation", json_integer((json_int_t)c->generation));
        json_object_set_new(doc, "last_reload", last ? last : json_null());
    } else {
        json_decref(last);
    }
    char *text = doc ? json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
    json_decref(doc);
    if (!text)
        return NULL;
    size_t n = strlen(text);
    char *out = realloc(text, n + 2);
    if (!out) {
        free(text);
        return NULL;
    }
    out[n] = '\n';
    out[n + 1] = '\0';
    *len = n + 1;
    return out;
}

/* Reactor side: answer each question [seq][kind] with [seq][text]. */
static void questions_ready(herd_loop_t *loop, void *arg)
{
    (void)loop;
    herd_admin_t *a = arg;
    for (;;) {
        char q[16];
        int n = zmq_recv(a->reactor_side, q, sizeof q, ZMQ_DONTWAIT);
        if (n < 0)
            return;
        if (n != 9)
            continue;
        char *text = NULL;
        size_t len = 0;
        if (q[8] == 'M')
            text = render_metrics(a, &len);
        else if (q[8] == 'C')
            text = render_config(a, &len);
        else if (q[8] == 'L')
            text = render_live(&len);
        else if (q[8] == 'P')
            text = a->page ? a->page(a->arg, &len) : NULL;
        else
            text = render_health(a, &len);
        zmq_send(a->reactor_side, q, 8, ZMQ_DONTWAIT | ZMQ_SNDMORE);
        zmq_send(a->reactor_side, text ? text : "", text ? len : 0, ZMQ_DONTWAIT);
        free(text);
    }
}

static void free_restart(config_t *c)
{
    for (size_t i = 0; i < c->n_restart; i++)
        free(c->restart[i]);
    free(c->restart);
    c->restart = NULL;
    c->n_restart = 0;
}

void herd_admin_set_config(herd_admin_t *a, json_t *fields)
{
    if (!a) {
        json_decref(fields);
        return;
    }
    json_decref(a->conf.fields);
    a->conf.fields = fields;
}

void herd_admin_reload_done(herd_admin_t *a, bool ok, const char *reason, const char *const *restart, size_t n)
{
    if (!a)
        return;
    config_t *c = &a->conf;
    c->generation++;
    c->reloaded = true;
    c->ok = ok;
    free(c->reason);
    c->reason = reason ? strdup(reason) : NULL;
    free_restart(c);
    if (n && (c->restart = calloc(n, sizeof *c->restart))) {
        for (size_t i = 0; i < n; i++)
            if ((c->restart[c->n_restart] = strdup(restart[i])))
                c->n_restart++;
    }
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(c->at, sizeof c->at, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* ------------------------------------------------------------ HTTP side */

/* HTTP side: asks the reactor; returns malloc'd text or NULL on time-out. */
static char *ask(herd_admin_t *a, char kind, size_t *len)
{
    pthread_mutex_lock(&a->ask_lock);
    uint64_t seq = ++a->seq;
    char q[9];
    memcpy(q, &seq, 8);
    q[8] = kind;
    char *text = NULL;
    if (zmq_send(a->http_side, q, sizeof q, ZMQ_DONTWAIT) == (int)sizeof q) {
        int64_t deadline = zclock_mono() + ASK_TIMEOUT_MS;
        for (;;) {
            int64_t left = deadline - zclock_mono();
            zmq_pollitem_t item = {.socket = a->http_side, .events = ZMQ_POLLIN};
            if (left <= 0 || zmq_poll(&item, 1, (long)left) <= 0)
                break;
            zmq_msg_t head, body;
            zmq_msg_init(&head);
            zmq_msg_init(&body);
            bool ok = zmq_msg_recv(&head, a->http_side, 0) >= 0 && zmq_msg_more(&head) &&
                      zmq_msg_recv(&body, a->http_side, 0) >= 0;
            bool match = ok && zmq_msg_size(&head) == 8 && memcmp(zmq_msg_data(&head), &seq, 8) == 0;
            if (match && zmq_msg_size(&body) > 0 && (text = malloc(zmq_msg_size(&body) + 1))) {
                *len = zmq_msg_size(&body);
                memcpy(text, zmq_msg_data(&body), *len);
                text[*len] = '\0';
            }
            zmq_msg_close(&head);
            zmq_msg_close(&body);
            if (match)
                break; /* otherwise: a late answer to an older question */
        }
    }
    pthread_mutex_unlock(&a->ask_lock);
    return text;
}

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, char *body, size_t len,
                             const char *type)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", type);
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(r, "Allow", "GET, HEAD");
    enum MHD_Result rc = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result reply_text(struct MHD_Connection *conn, unsigned status, const char *text)
{
    char *body = strdup(text);
    return body ? reply(conn, status, body, strlen(body), "text/plain; charset=utf-8") : MHD_NO;
}

/* The answers of the HTTP thread itself while the state loads (the
 * reactor is busy): health says starting with the progress, /metrics has
 * what needs no reactor, `/` says starting. Same forms as the reactor's. */
static char *answer_starting(char kind, const char *progress, size_t *len)
{
    char *text = NULL;
    size_t n = 0;
    if (kind == 'M') {
        FILE *f = open_memstream(&text, &n);
        if (!f)
            return NULL;
        herd_admin_render_process(f);
        fprintf(f, "# HELP herd_ready Whether /readyz says ready (see README: health).\n"
                   "# TYPE herd_ready gauge\nherd_ready 0\n");
        if (fclose(f) != 0) {
            free(text);
            return NULL;
        }
        *len = n;
        return text;
    }
    int r;
    if (kind == 'L')
        r = asprintf(&text, "2live: starting: %s\n", progress);
    else if (kind == 'P')
        r = herd_admin_page_starting(progress, &text);
    else if (kind == 'C')
        r = asprintf(&text, "{\"starting\": true}\n");
    else
        r = asprintf(&text, "5starting: %s\n", progress);
    if (r < 0)
        return NULL;
    *len = (size_t)r;
    return text;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_len, void **state)
{
    (void)version, (void)upload;
    herd_admin_t *a = cls;
    if (!*state) { /* first call: headers only; answer on the second */
        *state = a;
        return MHD_YES;
    }
    if (*upload_len) { /* a body we do not want */
        *upload_len = 0;
        return MHD_YES;
    }
    /* /healthz is /readyz under its old name (README: health). */
    char kind = !strcmp(url, "/metrics")                                 ? 'M'
                : !strcmp(url, "/healthz") || !strcmp(url, "/readyz") ? 'H'
                : !strcmp(url, "/livez")                              ? 'L'
                : !strcmp(url, "/config")                             ? 'C'
                : !strcmp(url, "/")                                   ? 'P'
                                                                      : 0;
    if (!kind)
        return reply_text(conn, MHD_HTTP_NOT_FOUND,
                          "not found: try /, /metrics, /livez, /readyz, /healthz or /config\n");
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return reply_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET and HEAD are served here\n");
    size_t len = 0;
    char progress[PROGRESS_MAX];
    pthread_mutex_lock(&a->progress_lock);
    bool serving = a->serving;
    memcpy(progress, a->progress, sizeof progress);
    pthread_mutex_unlock(&a->progress_lock);
    char *text = serving ? ask(a, kind, &len) : answer_starting(kind, progress, &len);
    if (!text && kind == 'L')
        return reply_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "not live: the server did not answer in time\n");
    if (!text)
        return reply_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "the server did not answer in time\n");
    if (kind == 'M')
        return reply(conn, MHD_HTTP_OK, text, len, "text/plain; version=0.0.4; charset=utf-8");
    if (kind == 'C')
        return reply(conn, MHD_HTTP_OK, text, len, "application/json");
    if (kind == 'P')
        return reply(conn, MHD_HTTP_OK, text, len, "text/html; charset=utf-8");
    /* Health: the first byte is the status class, the rest is the body. */
    unsigned status = text[0] == '2' ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE;
    memmove(text, text + 1, len);
    return reply(conn, status, text, len - 1, "text/plain; charset=utf-8");
}

/* Past HERD_ADMIN_SOFT_CONNS open connections, the oldest not yet cut is
 * cut, as at its deadline: slow connections from any number of addresses
 * cannot hold every slot, and a new probe is never the one refused.
 * conns_lock held. */
static void cut_oldest_past_cap(herd_admin_t *a)
{
    size_t open = 0;
    conn_t *oldest = NULL;
    for (conn_t *k = a->conns; k; k = k->next) {
        if (k->cut)
            continue;
        open++;
        oldest = k;
    }
    if (open > HERD_ADMIN_SOFT_CONNS && oldest) {
        shutdown(oldest->fd, SHUT_RDWR);
        oldest->cut = true;
        a->cut_total++;
    }
}

/* Keeps the list of open connections for the sweeper. libmicrohttpd reports
 * CLOSED before it closes the socket, so a listed fd is always still ours. */
static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    herd_admin_t *a = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *info = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        conn_t *k = calloc(1, sizeof *k);
        if (!k || !info) {
            free(k); /* not tracked: the idle time-out still bounds it */
            return;
        }
        k->fd = info->connect_fd;
        k->start_ms = zclock_mono();
        pthread_mutex_lock(&a->conns_lock);
        k->next = a->conns;
        if (a->conns)
            a->conns->prev = k;
        a->conns = k;
        cut_oldest_past_cap(a);
        pthread_mutex_unlock(&a->conns_lock);
        *socket_context = k;
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED && *socket_context) {
        conn_t *k = *socket_context;
        pthread_mutex_lock(&a->conns_lock);
        if (k->prev)
            k->prev->next = k->next;
        else
            a->conns = k->next;
        if (k->next)
            k->next->prev = k->prev;
        pthread_mutex_unlock(&a->conns_lock);
        free(k);
        *socket_context = NULL;
    }
}

/* The sweeper thread (a zactor: the start handshake, "$TERM" or the end of
 * its pipe to stop): a connection past its deadline gets its socket shut
 * down, which libmicrohttpd sees as the client going away and closes. The
 * idle time-out alone would let a client that sends a byte now and then
 * keep a slot for ever. */
static void sweeper_actor(zsock_t *pipe, void *arg)
{
    herd_admin_t *a = arg;
    zsock_signal(pipe, 0);
    zpoller_t *poller = zpoller_new(pipe, NULL);
    while (poller) {
        if (zpoller_wait(poller, SWEEP_MS) == pipe) {
            char *command = zstr_recv(pipe);
            bool term = !command || streq(command, "$TERM");
            zstr_free(&command);
            if (term)
                break;
            continue;
        }
        if (zpoller_terminated(poller))
            break;
        int64_t now = zclock_mono();
        pthread_mutex_lock(&a->conns_lock);
        for (conn_t *k = a->conns; k; k = k->next) {
            if (!k->cut && now - k->start_ms >= HERD_ADMIN_DEADLINE_MS) {
                shutdown(k->fd, SHUT_RDWR);
                k->cut = true;
                a->cut_total++;
            }
        }
        pthread_mutex_unlock(&a->conns_lock);
    }
    zpoller_destroy(&poller);
}

herd_admin_t *herd_admin_new(herd_loop_t *loop, const char *host, int port, herd_admin_metrics_fn *metrics,
                             herd_admin_health_fn *health, void *arg, char *err, size_t errlen)
{
    herd_admin_t *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    a->loop = loop;
    a->metrics = metrics;
    a->health = health;
    a->arg = arg;
    a->conf.ok = true;
    snprintf(a->progress, sizeof a->progress, "setting up");
    pthread_mutex_init(&a->ask_lock, NULL);
    pthread_mutex_init(&a->progress_lock, NULL);
    pthread_mutex_init(&a->conns_lock, NULL);

    char endpoint[64];
    snprintf(endpoint, sizeof endpoint, "inproc://herd-admin-%p", (void *)a);
    void *ctx = zsys_init();
    a->reactor_side = zmq_socket(ctx, ZMQ_PAIR);
    a->http_side = zmq_socket(ctx, ZMQ_PAIR);
    int zero = 0;
    if (a->reactor_side)
        zmq_setsockopt(a->reactor_side, ZMQ_LINGER, &zero, sizeof zero);
    if (a->http_side)
        zmq_setsockopt(a->http_side, ZMQ_LINGER, &zero, sizeof zero);
    if (!a->reactor_side || !a->http_side || zmq_bind(a->reactor_side, endpoint) != 0 ||
        zmq_connect(a->http_side, endpoint) != 0 ||
        herd_loop_add_zmq(loop, a->reactor_side, questions_ready, a) != 0) {
        snprintf(err, errlen, "cannot set up the admin endpoint: %s", zmq_strerror(errno));
        herd_admin_destroy(&a);
        return NULL;
    }

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res = NULL;
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    int gai = getaddrinfo(host, portstr, &hints, &res);
    if (gai != 0) {
        snprintf(err, errlen, "cannot resolve admin address %s: %s", host, gai_strerror(gai));
        herd_admin_destroy(&a);
        return NULL;
    }
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD;
    if (res->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    errno = 0;
    a->daemon = MHD_start_daemon(
        flags, (uint16_t)port, NULL, NULL, on_request, a, MHD_OPTION_SOCK_ADDR, res->ai_addr,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)((HERD_ADMIN_DEADLINE_MS + 999) / 1000), MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)HERD_ADMIN_MAX_CONNS, MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)HERD_ADMIN_MAX_PER_ADDR,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, a, MHD_OPTION_END);
    int saved = errno;
    freeaddrinfo(res);
    if (!a->daemon) {
        snprintf(err, errlen, "cannot bind admin port %s:%d: %s", host, port,
                 saved ? strerror(saved) : "libmicrohttpd refused to start");
        herd_admin_destroy(&a);
        return NULL;
    }
    a->sweeper = zactor_new(sweeper_actor, a);
    if (!a->sweeper) {
        snprintf(err, errlen, "cannot start the admin endpoint's sweeper thread");
        herd_admin_destroy(&a);
        return NULL;
    }
    return a;
}

void herd_admin_destroy(herd_admin_t **p)
{
    if (!p || !*p)
        return;
    herd_admin_t *a = *p;
    zactor_destroy(&a->sweeper); /* "$TERM", then waits for its end */
    if (a->daemon)
        MHD_stop_daemon(a->daemon); /* joins the HTTP thread: nothing uses http_side after this */
    if (a->reactor_side) {
        herd_loop_remove_zmq(a->loop, a->reactor_side);
        zmq_close(a->reactor_side);
    }
    if (a->http_side)
        zmq_close(a->http_side);
    json_decref(a->conf.fields);
    free(a->conf.reason);
    free_restart(&a->conf);
    pthread_mutex_destroy(&a->ask_lock);
    pthread_mutex_destroy(&a->progress_lock);
    pthread_mutex_destroy(&a->conns_lock);
    free(a);
    *p = NULL;
}

void herd_admin_set_page(herd_admin_t *a, herd_admin_page_fn *page)
{
    if (a)
        a->page = page;
}

void herd_admin_progress(herd_admin_t *a, const char *what)
{
    if (!a)
        return;
    pthread_mutex_lock(&a->progress_lock);
    snprintf(a->progress, sizeof a->progress, "%s", what);
    pthread_mutex_unlock(&a->progress_lock);
}

void herd_admin_set_serving(herd_admin_t *a)
{
    if (!a)
        return;
    pthread_mutex_lock(&a->progress_lock);
    a->serving = true;
    pthread_mutex_unlock(&a->progress_lock);
}

/* The fields of /proc/self/stat after the command name: utime, stime (clock
 * ticks), starttime (ticks after boot) and rss (pages). */
static bool read_stat(unsigned long long *utime, unsigned long long *stime, unsigned long long *start, long *rss)
{
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    if (!f)
        return false;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *rp = strrchr(buf, ')'); /* the name may hold spaces and parentheses */
    return rp && sscanf(rp + 2,
                        "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d %*d %llu %*u %ld",
                        utime, stime, start, rss) == 4;
}

/* The boot time, seconds since the epoch (btime of /proc/stat), or -1. */
static long long boot_time(void)
{
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return -1;
    char line[256];
    long long bt = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "btime %lld", &bt) == 1)
            break;
    fclose(f);
    return bt;
}

/* Open descriptors, the one reading the folder left out; -1 on failure. */
static long open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    long n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1;
}

void herd_admin_render_process(FILE *f)
{
    fprintf(f,
            "# HELP herd_build_info The running build: version and commit.\n# TYPE herd_build_info gauge\n"
            "herd_build_info{version=\"%s\",commit=\"%s\"} 1\n",
            HERD_VERSION, HERD_COMMIT);
    unsigned long long ut, st, start;
    long rss;
    long tick = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    if (read_stat(&ut, &st, &start, &rss) && tick > 0) {
        fprintf(f,
                "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n"
                "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total %.2f\n"
                "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
                "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %lld\n",
                (double)(ut + st) / (double)tick, (long long)rss * (page > 0 ? page : 4096));
        long long bt = boot_time();
        if (bt >= 0)
            fprintf(f,
                    "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n"
                    "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds %.2f\n",
                    (double)bt + (double)start / (double)tick);
    }
    long fds = open_fds();
    if (fds >= 0)
        fprintf(f, "# HELP process_open_fds Number of open file descriptors.\n"
                   "# TYPE process_open_fds gauge\nprocess_open_fds %ld\n", fds);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        fprintf(f, "# HELP process_max_fds Maximum number of open file descriptors.\n"
                   "# TYPE process_max_fds gauge\nprocess_max_fds %.0f\n",
                rl.rlim_cur == RLIM_INFINITY ? 1.8446744073709552e19 : (double)rl.rlim_cur);
}
