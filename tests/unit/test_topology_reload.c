/* Unit tests for the reload side of herd_topology: unknown fields named
 * with their path (PROTOCOL section 9), one decision per setting at a
 * reload (herd_topology_keep_running: the running values kept, pending
 * compared with what runs), and the JSON of the running settings. */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "herd_topology.h"

static char tmpdir[PATH_MAX];
static char path[PATH_MAX + 16];

static int group_setup(void **state)
{
    (void)state;
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/herd-topology-reload-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmpdir))
        return -1;
    snprintf(path, sizeof path, "%s/t.json", tmpdir);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    unlink(path);
    return rmdir(tmpdir);
}

/* Loads `json` (single quotes for double); fails the test if it is refused. */
static herd_topology_t *load(const char *json)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (const char *p = json; *p; p++)
        fputc(*p == '\'' ? '"' : *p, f);
    assert_int_equal(fclose(f), 0);
    char err[512] = "";
    herd_topology_t *t = herd_topology_load(path, err, sizeof err);
    if (!t)
        fail_msg("refused: %s", err);
    return t;
}

#define SERVERS "'servers': {'A': {'host': '127.0.0.1', 'client_port': 1, 'peer_port': 2}, " \
                "'B': {'host': '127.0.0.1', 'client_port': 3, 'peer_port': 4}}, 'links': [['A', 'B']]"

static void test_unknown_fields_named_with_their_path(void **state)
{
    (void)state;
    herd_topology_t *t = load("{'servers': {'A': {'host': '127.0.0.1', 'client_port': 1, 'peer_port': 2, "
                              "'hots': 1}}, 'links': [], 'fsynk': 'always', 'limits': {'max_record': 5, "
                              "'max_records': 6}, 'places': {'timeoutms': 1}, 'state_dir': null}");
    assert_int_equal(t->n_warnings, 4);
    const char *want[] = {"unknown field servers.A.hots (ignored)", "unknown field places.timeoutms (ignored)",
                          "unknown field limits.max_record (ignored)", "unknown field fsynk (ignored)"};
    for (size_t i = 0; i < 4; i++)
        assert_string_equal(t->warnings[i], want[i]);
    assert_int_equal(t->max_records, 6);
    herd_topology_destroy(&t);

    /* Every field the loader knows gives no warning. */
    t = load("{'servers': {'A': {'host': '127.0.0.1', 'client_port': 1, 'peer_port': 2, 'admin_port': 3, "
             "'admin_host': '127.0.0.1', 'frontend_threads': 1}}, 'links': [], 'log_dir': 'l', 'keys_dir': 'k', "
             "'state_dir': 's', 'fsync': 'never', 'insecure_links': true, 'log_commands': false, "
             "'frontend_threads': 0, 'limits': {'idle_timeout_ms': 1, 'max_output_bytes': 1, "
             "'max_output_total_bytes': 1, 'max_clients': 1, 'max_clients_per_address': 1, 'max_records': 1, "
             "'record_ttl_s': 1, 'max_future_s': 1}, 'places': {'url': 'u', 'key_env': 'K', 'timeout_ms': 1, "
             "'cache_ttl_ms': 1, 'max_in_flight': 1, 'max_queued': 1}}");
    assert_int_equal(t->n_warnings, 0);
    herd_topology_destroy(&t);

    /* A key with odd bytes is quoted, never written raw. */
    t = load("{'servers': {'A': {'host': '127.0.0.1', 'client_port': 1, 'peer_port': 2}}, 'links': [], "
             "'a b\\n': 1}");
    assert_int_equal(t->n_warnings, 1);
    assert_string_equal(t->warnings[0], "unknown field \"a b\\x0a\" (ignored)");
    herd_topology_destroy(&t);
}

static void test_restart_settings_keep_their_running_values(void **state)
{
    (void)state;
    herd_topology_t *run = load("{" SERVERS ", 'places': {'url': 'http://a/', 'timeout_ms': 5000}, 'fsync': 'always'}");
    herd_topology_t *next = load("{'servers': {'A': {'host': '127.0.0.1', 'client_port': 11, 'peer_port': 2}, "
                                 "'B': {'host': '127.0.0.1', 'client_port': 13, 'peer_port': 4}}, "
                                 "'links': [['A', 'B']], 'places': {'url': 'http://b/', 'timeout_ms': 200}, 'fsync': 'always', "
                                 "'state_dir': 'other', 'limits': {'max_clients': 77}}");
    const char *pending[HERD_TOPOLOGY_MAX_PENDING];
    int n = herd_topology_keep_running(next, run, "A", false, pending);
    assert_int_equal(n, 3);
    assert_string_equal(pending[0], "client_port");
    assert_string_equal(pending[1], "state_dir");
    assert_string_equal(pending[2], "places.url");
    /* What the server runs: the running values of those three... */
    assert_int_equal(next->servers[0].client_port, 1);
    assert_string_equal(next->state_dir, run->state_dir);
    assert_string_equal(next->places_url, "http://a/");
    /* ...the file's for what a reload applies (the Places timeout goes to
     * the node and its worker alike), and other servers' ports. */
    assert_int_equal(next->places_timeout_ms, 200);
    assert_int_equal(next->max_clients, 77);
    assert_int_equal(next->servers[1].client_port, 13);
    herd_topology_destroy(&run);
    run = next;

    /* A later reload that changes something else: still pending, compared
     * with what runs, not with the previous file. */
    next = load("{'servers': {'A': {'host': '127.0.0.1', 'client_port': 11, 'peer_port': 2}, "
                "'B': {'host': '127.0.0.1', 'client_port': 13, 'peer_port': 4}}, "
                "'links': [['A', 'B']], 'places': {'url': 'http://b/', 'timeout_ms': 200}, 'fsync': 'always', "
                "'state_dir': 'other', 'limits': {'max_clients': 78}}");
    n = herd_topology_keep_running(next, run, "A", false, pending);
    assert_int_equal(n, 3);
    herd_topology_destroy(&run);
    run = next;

    /* The running values again: nothing pending. */
    next = load("{'servers': {'A': {'host': '127.0.0.1', 'client_port': 1, 'peer_port': 2}, "
                "'B': {'host': '127.0.0.1', 'client_port': 13, 'peer_port': 4}}, "
                "'links': [['A', 'B']], 'places': {'url': 'http://a/', 'timeout_ms': 5000}, 'fsync': 'always'}");
    assert_int_equal(herd_topology_keep_running(next, run, "A", false, pending), 0);
    herd_topology_destroy(&run);
    herd_topology_destroy(&next);
}

static void test_log_dir_and_frontend_threads(void **state)
{
    (void)state;
    herd_topology_t *run = load("{" SERVERS ", 'frontend_threads': 2}");
    herd_topology_t *next = load("{" SERVERS ", 'log_dir': 'elsewhere', 'frontend_threads': 2, "
                                 "'servers_extra': 1}");
    const char *pending[HERD_TOPOLOGY_MAX_PENDING];
    /* --log-dir given: the file's log_dir does not matter. */
    assert_int_equal(herd_topology_keep_running(next, run, "A", true, pending), 0);
    assert_int_equal(herd_topology_keep_running(next, run, "A", false, pending), 1);
    assert_string_equal(pending[0], "log_dir");
    assert_string_equal(next->log_dir, run->log_dir);
    herd_topology_destroy(&next);
    /* The server's own value equal to what runs: not a change. */
    next = load("{'servers': {'A': {'host': '127.0.0.1', 'client_port': 1, 'peer_port': 2, "
                "'frontend_threads': 2}, 'B': {'host': '127.0.0.1', 'client_port': 3, 'peer_port': 4}}, "
                "'links': [['A', 'B']]}");
    assert_int_equal(herd_topology_keep_running(next, run, "A", false, pending), 0);
    herd_topology_destroy(&next);
    next = load("{" SERVERS ", 'frontend_threads': 3}");
    assert_int_equal(herd_topology_keep_running(next, run, "A", false, pending), 1);
    assert_string_equal(pending[0], "frontend_threads");
    assert_int_equal(herd_topology_frontend_threads(next, &next->servers[0]), 2);
    herd_topology_destroy(&next);
    herd_topology_destroy(&run);
}

static void test_running_json(void **state)
{
    (void)state;
    herd_topology_t *t = load("{" SERVERS ", 'places': {'key_env': 'SECRET_ENV', 'max_queued': 9}, "
                              "'limits': {'max_clients_per_address': 5}, 'fsync': 'never', 'state_dir': null}");
    json_t *doc = herd_topology_running_json(t, 0, "/var/log/herd");
    assert_non_null(doc);
    assert_string_equal(json_string_value(json_object_get(doc, "fsync")), "never");
    assert_true(json_is_null(json_object_get(doc, "state_dir")));
    assert_string_equal(json_string_value(json_object_get(doc, "log_dir")), "/var/log/herd");
    json_t *places = json_object_get(doc, "places"), *limits = json_object_get(doc, "limits");
    assert_int_equal(json_integer_value(json_object_get(places, "max_queued")), 9);
    assert_string_equal(json_string_value(json_object_get(places, "key_env")), "SECRET_ENV");
    assert_int_equal(json_object_size(places), 6);
    assert_int_equal(json_integer_value(json_object_get(limits, "max_clients_per_address")), 5);
    assert_int_equal(json_object_size(limits), 8);
    json_decref(doc);
    assert_null(herd_topology_running_json(t, 5, "x"));
    herd_topology_destroy(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unknown_fields_named_with_their_path),
        cmocka_unit_test(test_restart_settings_keep_their_running_values),
        cmocka_unit_test(test_log_dir_and_frontend_threads),
        cmocka_unit_test(test_running_json),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
