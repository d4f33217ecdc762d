/* herd_topology: load and validate topology.json (PROTOCOL.md section 9).
 *
 * Validation runs in file order (servers, their addresses, links, then the
 * optional sections) and stops at the first problem, so the one error line a
 * user sees is always the earliest thing to fix. */
#define _GNU_SOURCE /* asprintf */
#include "herd_topology.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "herd_proto.h"
#include "herd_record.h"
#include "herd_topology_int.h"

#define DEFAULT_PLACES_URL       "https://maps.googleapis.com/maps/api/place/nearbysearch/json"
#define DEFAULT_PLACES_KEY_ENV   "GOOGLE_PLACES_API_KEY"
#define DEFAULT_PLACES_TIMEOUT   HERD_TOPOLOGY_PLACES_TIMEOUT_MS
#define DEFAULT_PLACES_CACHE_TTL HERD_TOPOLOGY_PLACES_CACHE_TTL_MS
#define DEFAULT_LOG_DIR          "logs"
#define DEFAULT_IDLE_TIMEOUT     300000L
#define DEFAULT_MAX_OUTPUT       1048576L
#define DEFAULT_MAX_CLIENTS      50000L
#define DEFAULT_MAX_OUTPUT_TOTAL 268435456LL
#define DEFAULT_MAX_PER_ADDRESS  10000L
#define DEFAULT_MAX_RECORDS      10000000LL
#define DEFAULT_MAX_FUTURE_S     86400LL
#define DEFAULT_MAX_IN_FLIGHT    HERD_TOPOLOGY_PLACES_MAX_IN_FLIGHT
#define DEFAULT_MAX_QUEUED       HERD_TOPOLOGY_PLACES_MAX_QUEUED
#define DEFAULT_STATE_DIR        "state"
#define DEFAULT_ADMIN_HOST       "127.0.0.1"
#define FRONTEND_THREADS_MAX     64L
#define FRONTEND_THREADS_WHAT    "an integer from 0 (the front end on the node's thread) to 64"

/* Millisecond and byte limits stop at INT32_MAX so that every consumer
 * (timers, poll timeouts, libcurl) can hold them in an int without thinking. */
#define LIMIT_MAX 2147483647L

#define HOST_WHAT  "a host name or address, without spaces, control characters or brackets (::1, not [::1])"
#define Z85_KEYLEN 40  /* a 32-byte CURVE key in Z85 */
#define QUOTE_MAX  100 /* room for one quoted name in a message */

/* The error sink of one load. */
typedef struct {
    const char *file;   /* the path as the caller gave it, prefixed to every message */
    char *err;          /* the caller's buffer */
    size_t errlen;      /* its size */
    herd_topology_t *t; /* the topology being built: its warnings */
} ctx_t;

__attribute__((format(printf, 2, 3))) static void fail(ctx_t *c, const char *fmt, ...)
{
    if (c->err == NULL || c->errlen == 0)
        return;
    int n = snprintf(c->err, c->errlen, "%s: ", c->file);
    if (n < 0 || (size_t) n >= c->errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err + n, c->errlen - (size_t) n, fmt, ap);
    va_end(ap);
}

/* Writes s as a double-quoted, escaped and possibly shortened string, so that
 * any bytes a file holds can go into a one-line message. */
static const char *quote(const char *s, char *buf, size_t cap)
{
    size_t o = 0;
    buf[o++] = '"';
    for (const unsigned char *p = (const unsigned char *) s; *p; p++) {
        if (o + 10 > cap) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        if (*p == '"' || *p == '\\') {
            buf[o++] = '\\';
            buf[o++] = (char) *p;
        } else if (*p < 0x20 || *p >= 0x7f) {
            o += (size_t) snprintf(buf + o, cap - o, "\\x%02x", *p);
        } else {
            buf[o++] = (char) *p;
        }
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

/* Hosts go into endpoint strings and log lines: printable ASCII, no spaces. */
static bool valid_host(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > HOST_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char) s[i] <= 0x20 || (unsigned char) s[i] >= 0x7f || s[i] == '[' || s[i] == ']')
            return false;
    return true;
}

static bool valid_fsync(const char *s)
{
    return !strcmp(s, "always") || !strcmp(s, "everysec") || !strcmp(s, "never");
}

static int z85_value(char ch)
{
    static const char alphabet[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                   ".-:+=^!/*?&<>()[]{}@%$#";
    const char *p = ch ? strchr(alphabet, ch) : NULL;
    return p ? (int) (p - alphabet) : -1;
}

/* A CURVE public key: 40 Z85 characters in which every group of five
 * decodes to a 32-bit value (otherwise zmq_z85_decode would refuse it). */
static bool valid_z85_key(const char *s)
{
    if (strlen(s) != Z85_KEYLEN)
        return false;
    for (size_t g = 0; g < Z85_KEYLEN; g += 5) {
        uint64_t v = 0;
        for (size_t i = 0; i < 5; i++) {
            int d = z85_value(s[g + i]);
            if (d < 0)
                return false;
            v = v * 85 + (uint64_t) d;
        }
        if (v > UINT32_MAX)
            return false;
    }
    return true;
}

static bool valid_nonempty(const char *s)
{
    return s[0] != '\0';
}

/* Writes "prefix.key" (or "key" at the top level) into buf. */
static const char *field_path(const char *prefix, const char *key, char *buf, size_t cap)
{
    if (prefix == NULL || prefix[0] == '\0')
        snprintf(buf, cap, "%s", key);
    else
        snprintf(buf, cap, "%s.%s", prefix, key);
    return buf;
}

/* The field `key` of obj, for the readers below: NULL when it is absent,
 * with *rc 0 when it is optional (the caller's default stays) and -1 with
 * the reason filled when it is `required` (it must be `what`). */
static json_t *lookup(ctx_t *c, json_t *obj, const char *prefix, const char *key, bool required, const char *what,
                      int *rc)
{
    char path[HERD_MAX_NAME + 64];
    json_t *v = json_object_get(obj, key);
    *rc = 0;
    if (v == NULL && required) {
        fail(c, "%s: missing (must be %s)", field_path(prefix, key, path, sizeof path), what);
        *rc = -1;
    }
    return v;
}

/* Fills the reason for a field that is present but not `what`; -1. */
static int wrong(ctx_t *c, const char *prefix, const char *key, const char *what)
{
    char path[HERD_MAX_NAME + 64];
    fail(c, "%s: must be %s", field_path(prefix, key, path, sizeof path), what);
    return -1;
}

/* Reads an integer field into *out. A missing field is an error when
 * `required`, and otherwise leaves *out as it was (the default). `what`
 * describes the accepted values for the message. */
static int get_int(ctx_t *c, json_t *obj, const char *prefix, const char *key, bool required,
                   long lo, long hi, const char *what, long *out)
{
    int rc;
    json_t *v = lookup(c, obj, prefix, key, required, what, &rc);
    if (v == NULL)
        return rc;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return wrong(c, prefix, key, what);
    *out = (long) json_integer_value(v);
    return 0;
}

/* As get_int, optional, for counts and seconds that may pass 2^31. */
static int get_ll(ctx_t *c, json_t *obj, const char *prefix, const char *key, long long lo,
                  long long hi, const char *what, long long *out)
{
    json_t *v = json_object_get(obj, key);
    if (v == NULL)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return wrong(c, prefix, key, what);
    *out = (long long) json_integer_value(v);
    return 0;
}

/* An optional boolean field; *out keeps its default when absent. */
static int get_bool(ctx_t *c, json_t *obj, const char *prefix, const char *key, bool *out)
{
    json_t *v = json_object_get(obj, key);
    if (v == NULL)
        return 0;
    if (!json_is_boolean(v))
        return wrong(c, prefix, key, "true or false");
    *out = json_is_true(v);
    return 0;
}

/* Finds a string field and checks it with `valid`. *out is left as it was
 * (the default) when the field is absent and not required. */
static int get_str_view(ctx_t *c, json_t *obj, const char *prefix, const char *key, bool required,
                        bool (*valid)(const char *), const char *what, const char **out)
{
    int rc;
    json_t *v = lookup(c, obj, prefix, key, required, what, &rc);
    if (v == NULL)
        return rc;
    if (!json_is_string(v) || !valid(json_string_value(v)))
        return wrong(c, prefix, key, what);
    *out = json_string_value(v);
    return 0;
}

/* As get_str_view, into a fresh copy at *out (NULL when absent without a
 * default). */
static int get_string(ctx_t *c, json_t *obj, const char *prefix, const char *key, bool required,
                      const char *def, bool (*valid)(const char *), const char *what, char **out)
{
    const char *s = def;
    *out = NULL;
    if (get_str_view(c, obj, prefix, key, required, valid, what, &s) < 0)
        return -1;
    if (s != NULL && (*out = strdup(s)) == NULL) {
        fail(c, "out of memory");
        return -1;
    }
    return 0;
}

/* An optional section: absent is fine (NULL), present must be an object. */
static int get_section(ctx_t *c, json_t *root, const char *key, json_t **out)
{
    json_t *v = json_object_get(root, key);
    if (v != NULL && !json_is_object(v)) {
        fail(c, "%s: must be an object", key);
        return -1;
    }
    *out = v;
    return 0;
}

/* PROTOCOL section 9: an unknown field is accepted but named, with its
 * path, in a warning. Each section's parser keeps its list of known fields
 * beside it (a NULL-ended array); this names every field of obj (a section,
 * or NULL when absent) that is not on it. */
static int warn_unknown(ctx_t *c, json_t *obj, const char *prefix, const char *const *known)
{
    if (!json_is_object(obj))
        return 0;
    for (void *it = json_object_iter(obj); it; it = json_object_iter_next(obj, it)) {
        const char *key = json_object_iter_key(it);
        size_t i = 0;
        while (known[i] && strcmp(known[i], key))
            i++;
        if (known[i])
            continue;
        char q[QUOTE_MAX], path[HERD_MAX_NAME + 2 * QUOTE_MAX], *line = NULL;
        /* A plain key is written as it is; one with odd bytes is quoted. */
        bool plain = strlen(key) == json_object_iter_key_len(it) && strlen(key) < QUOTE_MAX / 2;
        for (const char *p = key; plain && *p; p++)
            plain = (*p > 0x20 && *p < 0x7f && *p != '"' && *p != '\\');
        const char *shown = plain ? key : quote(key, q, sizeof q);
        field_path(prefix, shown, path, sizeof path);
        char **grown = realloc(c->t->warnings, (c->t->n_warnings + 1) * sizeof *grown);
        if (grown)
            c->t->warnings = grown;
        if (!grown || asprintf(&line, "unknown field %s (ignored)", path) < 0) {
            fail(c, "out of memory");
            return -1;
        }
        c->t->warnings[c->t->n_warnings++] = line;
    }
    return 0;
}

/* The fields of a server (servers.NAME). */
static const char *const server_fields[] = {"host",       "client_port", "peer_port",        "admin_port",
                                            "public_key", "admin_host",  "frontend_threads", NULL};

static int parse_server(ctx_t *c, const char *name, json_t *v, herd_server_conf_t *s)
{
    char prefix[HERD_MAX_NAME + 16];
    snprintf(prefix, sizeof prefix, "servers.%s", name);
    if (!json_is_object(v)) {
        fail(c, "%s: must be an object", prefix);
        return -1;
    }
    s->name = strdup(name);
    if (s->name == NULL) {
        fail(c, "out of memory");
        return -1;
    }
    long client = 0, peer = 0, admin = 0;
    s->frontend_threads = -1;
    static const char port[] = "an integer from 1 to 65535";
    if (get_string(c, v, prefix, "host", true, NULL, valid_host,
                   HOST_WHAT, &s->host) < 0
        || get_int(c, v, prefix, "client_port", true, 1, 65535, port, &client) < 0
        || get_int(c, v, prefix, "peer_port", true, 1, 65535, port, &peer) < 0
        || get_int(c, v, prefix, "admin_port", false, 0, 65535,
                   "an integer from 1 to 65535, or 0 for none", &admin) < 0
        || get_string(c, v, prefix, "public_key", false, NULL, valid_z85_key,
                      "a CURVE public key of 40 Z85 characters", &s->public_key) < 0
        || get_string(c, v, prefix, "admin_host", false, DEFAULT_ADMIN_HOST, valid_host,
                      HOST_WHAT, &s->admin_host) < 0
        || get_int(c, v, prefix, "frontend_threads", false, 0, FRONTEND_THREADS_MAX,
                   FRONTEND_THREADS_WHAT, &s->frontend_threads) < 0)
        return -1;
    s->client_port = (int) client;
    s->peer_port = (int) peer;
    s->admin_port = (int) admin;
    return warn_unknown(c, v, prefix, server_fields);
}

static int parse_servers(ctx_t *c, json_t *root, herd_topology_t *t)
{
    static const char what[] = "an object with at least one server";
    int rc;
    json_t *servers = lookup(c, root, NULL, "servers", true, what, &rc);
    if (servers == NULL || !json_is_object(servers) || json_object_size(servers) == 0)
        return servers == NULL ? rc : wrong(c, NULL, "servers", what);
    t->servers = calloc(json_object_size(servers), sizeof *t->servers);
    if (t->servers == NULL) {
        fail(c, "out of memory");
        return -1;
    }
    /* jansson iterates objects in insertion order, so servers[] keeps the
     * file's order (duplicate names never get here: the parser rejects them). */
    for (void *it = json_object_iter(servers); it != NULL;
         it = json_object_iter_next(servers, it)) {
        const char *name = json_object_iter_key(it);
        if (strlen(name) != json_object_iter_key_len(it) || !herd_record_valid_name(name, strlen(name))) {
            char q[QUOTE_MAX];
            fail(c, "servers: server name %s must be 1 to 64 letters, digits, '_' or '-'",
                 quote(name, q, sizeof q));
            return -1;
        }
        herd_server_conf_t *s = &t->servers[t->n_servers++];
        if (parse_server(c, name, json_object_iter_value(it), s) < 0)
            return -1;
    }
    return 0;
}

/* The address clash check is in herd_topology_addr.c. */
static int check_addresses(ctx_t *c, const herd_topology_t *t)
{
    char msg[2 * HOST_MAX + 3 * HERD_MAX_NAME + 128];
    if (herd_topology_check_addresses(t, msg, sizeof msg) == 0)
        return 0;
    fail(c, "%s", msg);
    return -1;
}

static long find_name(const herd_topology_t *t, const char *name)
{
    for (size_t i = 0; i < t->n_servers; i++)
        if (strcmp(t->servers[i].name, name) == 0)
            return (long) i;
    return -1;
}

static int parse_links(ctx_t *c, json_t *root, herd_topology_t *t)
{
    static const char what[] = "an array of [\"server\", \"server\"] pairs";
    int rc;
    json_t *links = lookup(c, root, NULL, "links", true, what, &rc);
    if (links == NULL || !json_is_array(links))
        return links == NULL ? rc : wrong(c, NULL, "links", what);
    size_t n = json_array_size(links);
    if (n > 0) {
        t->links = calloc(n, sizeof *t->links);
        if (t->links == NULL) {
            fail(c, "out of memory");
            return -1;
        }
    }
    for (size_t k = 0; k < n; k++) {
        json_t *l = json_array_get(links, k);
        if (!json_is_array(l) || json_array_size(l) != 2 || !json_is_string(json_array_get(l, 0))
            || !json_is_string(json_array_get(l, 1))) {
            fail(c, "link %zu: must be an array of two server names", k + 1);
            return -1;
        }
        const char *na = json_string_value(json_array_get(l, 0));
        const char *nb = json_string_value(json_array_get(l, 1));
        char qa[QUOTE_MAX], qb[QUOTE_MAX];
        quote(na, qa, sizeof qa);
        quote(nb, qb, sizeof qb);
        long a = find_name(t, na), b = find_name(t, nb);
        if (a < 0 || b < 0) {
            fail(c, "link %zu [%s, %s] names unknown server %s", k + 1, qa, qb, a < 0 ? qa : qb);
            return -1;
        }
        if (a == b) {
            fail(c, "link %zu [%s, %s] links %s to itself", k + 1, qa, qb, qa);
            return -1;
        }
        for (size_t e = 0; e < t->n_links; e++) {
            const herd_link_t *o = &t->links[e];
            if ((o->a == (size_t) a && o->b == (size_t) b)
                || (o->a == (size_t) b && o->b == (size_t) a)) {
                fail(c, "link %zu [%s, %s] repeats link %zu [\"%s\", \"%s\"]", k + 1, qa, qb, e + 1,
                     t->servers[o->a].name, t->servers[o->b].name);
                return -1;
            }
        }
        t->links[t->n_links++] = (herd_link_t) {(size_t) a, (size_t) b};
    }
    return 0;
}

/* The fields of "places". */
static const char *const places_fields[] = {"url", "key_env", "timeout_ms", "cache_ttl_ms", "max_in_flight",
                                            "max_queued", NULL};

static int parse_places(ctx_t *c, json_t *root, herd_topology_t *t)
{
    json_t *p;
    if (get_section(c, root, "places", &p) < 0)
        return -1;
    t->places_timeout_ms = DEFAULT_PLACES_TIMEOUT;
    t->places_cache_ttl_ms = DEFAULT_PLACES_CACHE_TTL;
    t->places_max_in_flight = DEFAULT_MAX_IN_FLIGHT;
    t->places_max_queued = DEFAULT_MAX_QUEUED;
    /* json_object_get on a NULL section finds nothing, so an absent section
     * takes every default through the same code. */
    if (get_string(c, p, "places", "url", false, DEFAULT_PLACES_URL, valid_nonempty,
                   "a non-empty string", &t->places_url) < 0
        || get_string(c, p, "places", "key_env", false, DEFAULT_PLACES_KEY_ENV, valid_nonempty,
                      "a non-empty string", &t->places_key_env) < 0
        || get_int(c, p, "places", "timeout_ms", false, 1, LIMIT_MAX,
                   "an integer from 1 to 2147483647", &t->places_timeout_ms) < 0
        || get_int(c, p, "places", "cache_ttl_ms", false, 0, LIMIT_MAX,
                   "an integer from 0 to 2147483647 (0 = off)", &t->places_cache_ttl_ms) < 0
        || get_int(c, p, "places", "max_in_flight", false, 1, LIMIT_MAX,
                   "an integer from 1 to 2147483647", &t->places_max_in_flight) < 0
        || get_int(c, p, "places", "max_queued", false, 0, LIMIT_MAX,
                   "an integer from 0 to 2147483647", &t->places_max_queued) < 0)
        return -1;
    return warn_unknown(c, p, "places", places_fields);
}

/* log_dir is relative to the folder that holds the topology file, so a herd
 * started from anywhere logs to the same place. */
static int resolve_log_dir(ctx_t *c, const char *file, const char *dir, char **out)
{
    const char *slash = strrchr(file, '/');
    if (dir[0] == '/' || slash == NULL) {
        *out = strdup(dir);
    } else {
        size_t base = (size_t) (slash - file);
        size_t len = base + 1 + strlen(dir) + 1;
        *out = malloc(len);
        if (*out != NULL)
            snprintf(*out, len, "%.*s/%s", (int) base, file, dir);
    }
    if (*out == NULL) {
        fail(c, "out of memory");
        return -1;
    }
    return 0;
}

/* The fields of "limits". */
static const char *const limits_fields[] = {"idle_timeout_ms",         "max_output_bytes", "max_output_total_bytes",
                                            "max_clients",             "max_clients_per_address",
                                            "max_records",             "record_ttl_s",     "max_future_s",
                                            NULL};

/* The top-level fields ("servers" and "links" are read by their parsers;
 * the rest by parse_rest). */
static const char *const top_fields[] = {"servers",   "links",        "places",         "log_dir",
                                         "keys_dir",  "limits",       "state_dir",      "fsync",
                                         "insecure_links", "log_commands", "frontend_threads", "curve_rollout",
                                         NULL};

static int parse_rest(ctx_t *c, json_t *root, herd_topology_t *t)
{
    const char *dir = DEFAULT_LOG_DIR;
    if (get_str_view(c, root, "", "log_dir", false, valid_nonempty, "a non-empty string", &dir) < 0
        || resolve_log_dir(c, t->path, dir, &t->log_dir) < 0)
        return -1;
    const char *keys = "keys";
    if (get_str_view(c, root, "", "keys_dir", false, valid_nonempty, "a non-empty string", &keys) < 0
        || resolve_log_dir(c, t->path, keys, &t->keys_dir) < 0)
        return -1;

    json_t *l;
    if (get_section(c, root, "limits", &l) < 0)
        return -1;
    t->idle_timeout_ms = DEFAULT_IDLE_TIMEOUT;
    t->max_output_bytes = DEFAULT_MAX_OUTPUT;
    t->max_clients = DEFAULT_MAX_CLIENTS;
    t->max_clients_per_address = DEFAULT_MAX_PER_ADDRESS;
    static const char what[] = "an integer from 1 to 2147483647";
    if (get_int(c, l, "limits", "idle_timeout_ms", false, 1, LIMIT_MAX, what,
                &t->idle_timeout_ms) < 0
        || get_int(c, l, "limits", "max_output_bytes", false, 1, LIMIT_MAX, what,
                   &t->max_output_bytes) < 0
        || get_int(c, l, "limits", "max_clients", false, 1, LIMIT_MAX, what, &t->max_clients) < 0
        || get_int(c, l, "limits", "max_clients_per_address", false, 1, LIMIT_MAX, what,
                   &t->max_clients_per_address) < 0)
        return -1;
    t->max_output_total_bytes = DEFAULT_MAX_OUTPUT_TOTAL;
    if (get_ll(c, l, "limits", "max_output_total_bytes", 1, 1LL << 50, "an integer from 1 to 2^50",
               &t->max_output_total_bytes) < 0)
        return -1;
    t->max_records = DEFAULT_MAX_RECORDS;
    t->record_ttl_s = 0;
    t->max_future_s = DEFAULT_MAX_FUTURE_S;
    if (get_ll(c, l, "limits", "max_records", 1, 1000000000LL, "an integer from 1 to 10^9",
               &t->max_records) < 0
        || get_ll(c, l, "limits", "record_ttl_s", 0, 100000000000LL,
                  "an integer from 0 (never) to 10^11 seconds", &t->record_ttl_s) < 0
        || get_ll(c, l, "limits", "max_future_s", 0, 100000000000LL,
                  "an integer from 0 to 10^11 seconds", &t->max_future_s) < 0
        || warn_unknown(c, l, "limits", limits_fields) < 0)
        return -1;

    /* state_dir: a string, or null to keep nothing on disk. */
    json_t *sd = json_object_get(root, "state_dir");
    if (sd == NULL || json_is_string(sd)) {
        const char *state = sd ? json_string_value(sd) : DEFAULT_STATE_DIR;
        if (!valid_nonempty(state)) {
            fail(c, "state_dir: must be a non-empty string, or null to keep nothing on disk");
            return -1;
        }
        if (resolve_log_dir(c, t->path, state, &t->state_dir) < 0)
            return -1;
    } else if (!json_is_null(sd)) {
        fail(c, "state_dir: must be a non-empty string, or null to keep nothing on disk");
        return -1;
    }
    const char *fs = "everysec";
    if (get_str_view(c, root, "", "fsync", false, valid_fsync, "\"always\", \"everysec\" or \"never\"",
                     &fs) < 0)
        return -1;
    t->fsync = !strcmp(fs, "always") ? HERD_FSYNC_ALWAYS : !strcmp(fs, "never") ? HERD_FSYNC_NEVER
                                                                             : HERD_FSYNC_EVERYSEC;
    t->frontend_threads = -1;
    t->log_commands = true;
    if (get_bool(c, root, "", "insecure_links", &t->insecure_links) < 0
        || get_bool(c, root, "", "curve_rollout", &t->curve_rollout) < 0
        || get_bool(c, root, "", "log_commands", &t->log_commands) < 0
        || get_int(c, root, "", "frontend_threads", false, 0, FRONTEND_THREADS_MAX,
                   FRONTEND_THREADS_WHAT, &t->frontend_threads) < 0)
        return -1;
    return warn_unknown(c, root, "", top_fields);
}

/* PROTOCOL §7: a link is authenticated at both ends or at neither, and
 * unauthenticated links are only for a herd that never leaves this machine,
 * unless the operator says otherwise. */
static int check_security(ctx_t *c, const herd_topology_t *t)
{
    for (size_t i = 0; i < t->n_links; i++) {
        const herd_server_conf_t *a = &t->servers[t->links[i].a], *b = &t->servers[t->links[i].b];
        if (!a->public_key != !b->public_key && !t->curve_rollout) {
            fail(c, "servers.%s has a public_key but servers.%s has none: a link is authenticated at "
                    "both ends or at neither", a->public_key ? a->name : b->name,
                 a->public_key ? b->name : a->name);
            return -1;
        }
    }
    if (t->insecure_links)
        return 0;
    for (size_t i = 0; i < t->n_servers; i++) {
        if (t->servers[i].public_key || herd_topology_is_loopback(t->servers[i].host))
            continue;
        bool linked = false;
        for (size_t k = 0; k < t->n_links && !linked; k++)
            linked = t->links[k].a == i || t->links[k].b == i;
        if (!linked && t->n_servers == 1)
            continue;
        fail(c, "servers.%s: host %s is not a loopback address and has no public_key: links "
                "must be authenticated (herdctl keys), or set \"insecure_links\": true",
             t->servers[i].name, t->servers[i].host);
        return -1;
    }
    return 0;
}

/* Copies jansson's error text into buf with control bytes written as \xNN:
 * the text quotes the bytes near the error ("near '...'"), which may hold a
 * raw line end, and the message must stay one line. */
static const char *escape_controls(const char *s, char *buf, size_t cap)
{
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *) s; *p && o + 5 < cap; p++) {
        if (*p < 0x20 || *p == 0x7f)
            o += (size_t) snprintf(buf + o, cap - o, "\\x%02x", *p);
        else
            buf[o++] = (char) *p;
    }
    buf[o] = '\0';
    return buf;
}

/* Reads the file. Opening it ourselves (rather than json_load_file) gives a
 * precise message for a missing, unreadable or directory path. */
static json_t *read_json(ctx_t *c, const char *path)
{
    FILE *fp = fopen(path, "r");
    if (fp == NULL) {
        fail(c, "cannot open: %s", strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(fp), &st) == 0 && S_ISDIR(st.st_mode)) {
        fail(c, "cannot read: %s", strerror(EISDIR));
        fclose(fp);
        return NULL;
    }
    /* Duplicate keys are refused everywhere: two servers of one name would
     * otherwise silently become one. */
    json_error_t je;
    json_t *root = json_loadf(fp, JSON_REJECT_DUPLICATES, &je);
    if (root == NULL) {
        if (ferror(fp))
            fail(c, "cannot read: %s", strerror(errno));
        else {
            char text[4 * JSON_ERROR_TEXT_LENGTH + 1];
            snprintf(c->err, c->errlen, "%s:%d:%d: %s", path, je.line, je.column,
                     escape_controls(je.text, text, sizeof text));
        }
    } else if (!json_is_object(root)) {
        fail(c, "the top level must be an object");
        json_decref(root);
        root = NULL;
    }
    fclose(fp);
    return root;
}

/*  --------------------------------------------------------------------------
 *  Loads and validates a topology file. Returns NULL and writes one line into
 *  err on any problem. */
herd_topology_t *herd_topology_load(const char *path, char *err, size_t errlen)
{
    char dummy[1];
    if (err == NULL || errlen == 0) {
        err = dummy;
        errlen = sizeof dummy;
    }
    err[0] = '\0';
    ctx_t c = {path, err, errlen, NULL};
    json_t *root = read_json(&c, path);
    if (root == NULL)
        return NULL;
    herd_topology_t *t = calloc(1, sizeof *t);
    if (t == NULL || (t->path = strdup(path)) == NULL) {
        fail(&c, "out of memory");
        free(t);
        json_decref(root);
        return NULL;
    }
    c.t = t;
    if (parse_servers(&c, root, t) < 0 || check_addresses(&c, t) < 0
        || parse_links(&c, root, t) < 0 || parse_places(&c, root, t) < 0
        || parse_rest(&c, root, t) < 0 || check_security(&c, t) < 0)
        herd_topology_destroy(&t);
    json_decref(root);
    return t;
}

/*  --------------------------------------------------------------------------
 *  Frees everything; sets *p to NULL. NULL-safe. */
void herd_topology_destroy(herd_topology_t **p)
{
    if (p == NULL || *p == NULL)
        return;
    herd_topology_t *t = *p;
    for (size_t i = 0; i < t->n_servers; i++) {
        free(t->servers[i].name);
        free(t->servers[i].host);
        free(t->servers[i].public_key);
        free(t->servers[i].admin_host);
    }
    free(t->servers);
    free(t->links);
    free(t->path);
    free(t->places_url);
    free(t->places_key_env);
    free(t->log_dir);
    free(t->keys_dir);
    free(t->state_dir);
    for (size_t i = 0; i < t->n_warnings; i++)
        free(t->warnings[i]);
    free(t->warnings);
    free(t);
    *p = NULL;
}

/*  --------------------------------------------------------------------------
 *  True when host names this machine's loopback: an IPv4 address in
 *  127.0.0.0/8, ::1 (with or without brackets), or "localhost". */
bool herd_topology_is_loopback(const char *host)
{
    if (host == NULL)
        return false;
    if (!strcmp(host, "localhost") || !strcmp(host, "::1") || !strcmp(host, "[::1]"))
        return true;
    unsigned a, b, cc, d;
    char tail;
    return sscanf(host, "%u.%u.%u.%u%c", &a, &b, &cc, &d, &tail) == 4 && a == 127 && b < 256 && cc < 256
           && d < 256;
}

/*  --------------------------------------------------------------------------
 *  Index of the server called `name`, or -1. */
long herd_topology_find(const herd_topology_t *t, const char *name)
{
    if (t == NULL || name == NULL)
        return -1;
    return find_name(t, name);
}

/*  --------------------------------------------------------------------------
 *  True when servers a and b are linked. */
bool herd_topology_linked(const herd_topology_t *t, size_t a, size_t b)
{
    if (t == NULL || a == b)
        return false;
    for (size_t i = 0; i < t->n_links; i++) {
        const herd_link_t *l = &t->links[i];
        if ((l->a == a && l->b == b) || (l->a == b && l->b == a))
            return true;
    }
    return false;
}

/*  --------------------------------------------------------------------------
 *  Writes the indexes of server idx's neighbours into out (at most cap), in
 *  servers[] order, and returns how many neighbours it has. */
size_t herd_topology_neighbours(const herd_topology_t *t, size_t idx, size_t *out, size_t cap)
{
    if (t == NULL || idx >= t->n_servers)
        return 0;
    size_t n = 0;
    for (size_t j = 0; j < t->n_servers; j++) {
        if (!herd_topology_linked(t, idx, j))
            continue;
        if (n < cap && out != NULL)
            out[n] = j;
        n++;
    }
    return n;
}
