/* herd_topology_json: a topology as JSON, for --check-config --json
 * (herdctl keeps no rule of its own) and for /config (the settings a
 * server runs with). See herd_topology.h. */
#define _GNU_SOURCE /* asprintf */
#include "herd_topology.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <jansson.h>

/* `dir`/`name``suffix` made absolute against the current folder (malloc'd),
 * or NULL for a NULL dir or when out of memory. The folder need not exist. */
static char *abs_path(const char *dir, const char *name, const char *suffix)
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

static const char *fsync_name(herd_fsync_t f)
{
    return f == HERD_FSYNC_ALWAYS ? "always" : f == HERD_FSYNC_NEVER ? "never" : "everysec";
}

static json_t *warnings_json(const herd_topology_t *t)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < t->n_warnings; i++)
        json_array_append_new(a, json_string(t->warnings[i]));
    return a;
}

/*  --------------------------------------------------------------------------
 *  The settings server `self` runs with (never the Places key). */
json_t *herd_topology_running_json(const herd_topology_t *t, size_t self, const char *log_dir)
{
    if (self >= t->n_servers)
        return NULL;
    const herd_server_conf_t *me = &t->servers[self];
    json_t *limits = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "idle_timeout_ms",
                               (json_int_t)t->idle_timeout_ms, "max_output_bytes", (json_int_t)t->max_output_bytes,
                               "max_output_total_bytes", (json_int_t)t->max_output_total_bytes, "max_clients",
                               (json_int_t)t->max_clients, "max_clients_per_address",
                               (json_int_t)t->max_clients_per_address, "max_records", (json_int_t)t->max_records,
                               "record_ttl_s", (json_int_t)t->record_ttl_s, "max_future_s",
                               (json_int_t)t->max_future_s);
    json_t *places = json_pack("{s:s, s:s, s:I, s:I, s:I, s:I}", "url", t->places_url, "key_env", t->places_key_env,
                               "timeout_ms", (json_int_t)t->places_timeout_ms, "cache_ttl_ms",
                               (json_int_t)t->places_cache_ttl_ms, "max_in_flight",
                               (json_int_t)t->places_max_in_flight, "max_queued", (json_int_t)t->places_max_queued);
    json_t *doc = json_pack("{s:s, s:b, s:b, s:I, s:o, s:o}", "fsync", fsync_name(t->fsync), "log_commands",
                            t->log_commands, "insecure_links", t->insecure_links, "frontend_threads",
                            (json_int_t)herd_topology_frontend_threads(t, me), "limits", limits ? limits : json_null(),
                            "places", places ? places : json_null());
    if (!doc)
        return NULL;
    set_path(doc, "log_dir", abs_path(log_dir, "", ""));
    set_path(doc, "state_dir", abs_path(t->state_dir, "", ""));
    set_path(doc, "keys_dir", abs_path(t->keys_dir, "", ""));
    return doc;
}

/*  --------------------------------------------------------------------------
 *  The whole topology as the servers resolve it. */
json_t *herd_topology_resolved_json(const herd_topology_t *t, const char *log_dir)
{
    char real[PATH_MAX];
    json_t *doc = json_object(), *servers = json_array(), *links = json_array();
    if (!doc || !servers || !links) {
        json_decref(doc);
        json_decref(servers);
        json_decref(links);
        return NULL;
    }
    json_object_set_new(doc, "topology", json_string(realpath(t->path, real) ? real : t->path));
    set_path(doc, "log_dir", abs_path(log_dir, "", ""));
    set_path(doc, "state_dir", abs_path(t->state_dir, "", ""));
    set_path(doc, "keys_dir", abs_path(t->keys_dir, "", ""));
    json_object_set_new(doc, "insecure_links", json_boolean(t->insecure_links));
    for (size_t i = 0; i < t->n_servers; i++) {
        const herd_server_conf_t *c = &t->servers[i];
        json_t *o = json_pack("{s:s, s:s, s:i, s:i, s:s, s:b}", "name", c->name, "host", c->host, "client_port",
                              c->client_port, "peer_port", c->peer_port, "admin_host", c->admin_host, "public_key",
                              c->public_key != NULL);
        if (!o)
            continue;
        json_object_set_new(o, "admin_port", c->admin_port ? json_integer(c->admin_port) : json_null());
        set_path(o, "log_file", abs_path(log_dir, c->name, ".log"));
        set_path(o, "state_path", abs_path(t->state_dir, c->name, ""));
        set_path(o, "key_secret", abs_path(t->keys_dir, c->name, ".key_secret"));
        json_array_append_new(servers, o);
    }
    for (size_t i = 0; i < t->n_links; i++)
        json_array_append_new(links, json_pack("[s,s]", t->servers[t->links[i].a].name, t->servers[t->links[i].b].name));
    json_object_set_new(doc, "servers", servers);
    json_object_set_new(doc, "links", links);
    json_object_set_new(doc, "warnings", warnings_json(t));
    return doc;
}

/*  --------------------------------------------------------------------------
 *  /config: who server `name` is, where it listens, what it runs, what waits
 *  for a restart, and the file's unknown fields. */
json_t *herd_topology_config_json(const herd_topology_t *t, const char *name, const char *log_dir,
                                  const char *const *pending, size_t n_pending)
{
    long self = herd_topology_find(t, name);
    if (self < 0)
        return NULL;
    const herd_server_conf_t *me = &t->servers[self];
    char real[PATH_MAX];
    json_t *pend = json_array();
    for (size_t i = 0; pend && i < n_pending; i++)
        json_array_append_new(pend, json_string(pending[i]));
    json_t *running = herd_topology_running_json(t, (size_t)self, log_dir), *warnings = warnings_json(t);
    json_t *doc = json_pack("{s:s, s:s, s:s, s:i, s:i, s:s, s:o, s:o, s:o}", "name", name, "topology",
                            realpath(t->path, real) ? real : t->path, "host", me->host, "client_port",
                            me->client_port, "peer_port", me->peer_port, "admin_host", me->admin_host, "running",
                            running ? running : json_null(), "pending", pend ? pend : json_null(), "warnings",
                            warnings ? warnings : json_null());
    if (!doc)
        return NULL;
    json_object_set_new(doc, "admin_port", me->admin_port ? json_integer(me->admin_port) : json_null());
    /* The folders at the top level too, as before "running" existed. */
    json_t *r = json_object_get(doc, "running");
    json_t *ld = json_object_get(r, "log_dir"), *sd = json_object_get(r, "state_dir");
    json_object_set(doc, "log_dir", ld ? ld : json_null());
    json_object_set(doc, "state_dir", sd ? sd : json_null());
    return doc;
}
