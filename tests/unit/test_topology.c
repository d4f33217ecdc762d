/* Unit tests for herd_topology: the default topology, defaults, every
 * validation error with its exact message, and log_dir resolution. */
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "herd_topology.h"
#include "../../src/herd_topology_int.h" /* herd_topology_is_loopback */

#ifndef HERD_TEST_DATA
#error "HERD_TEST_DATA must name the tests/data folder"
#endif

#define FIXTURE(name) HERD_TEST_DATA "/topology/" name
/* A copy of the repo's topology.json: the working file may carry keys (herdctl keys). */
#define DEFAULT_TOPOLOGY HERD_TEST_DATA "/topology/default.json"
#define PLACES_URL "https://maps.googleapis.com/maps/api/place/nearbysearch/json"

static char tmpdir[PATH_MAX]; /* made by group_setup, one per run */
static char tmpfile_path[PATH_MAX + 16];

static int group_setup(void **state)
{
    (void) state;
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/herd-topology-XXXXXX", base && *base ? base : "/tmp");
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    snprintf(tmpfile_path, sizeof tmpfile_path, "%s/t.json", tmpdir);
    return 0;
}

static int group_teardown(void **state)
{
    (void) state;
    char p[PATH_MAX + 32];
    unlink(tmpfile_path);
    snprintf(p, sizeof p, "%s/sub/t.json", tmpdir);
    unlink(p);
    snprintf(p, sizeof p, "%s/sub", tmpdir);
    rmdir(p);
    snprintf(p, sizeof p, "%s/adir", tmpdir);
    rmdir(p);
    return rmdir(tmpdir);
}

/* Writes text to path; with `quotes`, every ' becomes " so cases stay readable. */
static void write_file(const char *path, const char *text, int quotes)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (const char *p = text; *p; p++)
        fputc(quotes && *p == '\'' ? '"' : *p, f);
    assert_int_equal(fclose(f), 0);
}

/* Loads `json` (single quotes for double) from the temporary file and expects
 * failure with exactly "<path>: <msg>". */
static void expect_error(const char *json, const char *msg)
{
    char err[512], want[PATH_MAX + 512];
    write_file(tmpfile_path, json, 1);
    memset(err, 'x', sizeof err);
    herd_topology_t *t = herd_topology_load(tmpfile_path, err, sizeof err);
    if (t != NULL)
        fail_msg("accepted: %s", json);
    snprintf(want, sizeof want, "%s: %s", tmpfile_path, msg);
    assert_string_equal(err, want);
}

static herd_topology_t *expect_ok_text(const char *json)
{
    char err[512] = "";
    write_file(tmpfile_path, json, 1);
    herd_topology_t *t = herd_topology_load(tmpfile_path, err, sizeof err);
    if (t == NULL)
        fail_msg("rejected: %s\n  error: %s", json, err);
    return t;
}

static herd_topology_t *load_ok(const char *path)
{
    char err[512] = "";
    herd_topology_t *t = herd_topology_load(path, err, sizeof err);
    if (t == NULL)
        fail_msg("rejected %s: %s", path, err);
    return t;
}

/* Building blocks for the error cases: a valid three-server herd. */
#define S_BONA   "'Bona': {'host': '127.0.0.1', 'client_port': 10001, 'peer_port': 11001}"
#define S_CLARK  "'Clark': {'host': '127.0.0.1', 'client_port': 10003, 'peer_port': 11003}"
#define S_JAQUEZ "'Jaquez': {'host': '127.0.0.1', 'client_port': 10004, 'peer_port': 11004}"
#define SERVERS  "'servers': {" S_BONA ", " S_CLARK ", " S_JAQUEZ "}"
#define LINKS    "'links': [['Bona', 'Clark'], ['Clark', 'Jaquez']]"
#define WITH(extra) "{" SERVERS ", " LINKS ", " extra "}"
#define BONA_WITH(fields) \
    "{'servers': {'Bona': {" fields "}, " S_CLARK "}, 'links': []}"

static void test_default_topology(void **state)
{
    (void) state;
    herd_topology_t *t = load_ok(DEFAULT_TOPOLOGY);
    static const char *names[] = {"Bailey", "Bona", "Campbell", "Clark", "Jaquez"};
    assert_int_equal(t->n_servers, 5);
    for (size_t i = 0; i < 5; i++) {
        assert_string_equal(t->servers[i].name, names[i]);
        assert_string_equal(t->servers[i].host, "127.0.0.1");
        assert_int_equal(t->servers[i].client_port, 10000 + (int) i);
        assert_int_equal(t->servers[i].peer_port, 11000 + (int) i);
        assert_int_equal(t->servers[i].admin_port, 12000 + (int) i);
        assert_null(t->servers[i].public_key);
        assert_int_equal(herd_topology_find(t, names[i]), (long) i);
    }
    assert_int_equal(t->n_links, 6);
    assert_string_equal(t->path, DEFAULT_TOPOLOGY);
    assert_string_equal(t->places_url, PLACES_URL);
    assert_string_equal(t->places_key_env, "GOOGLE_PLACES_API_KEY");
    assert_int_equal(t->places_timeout_ms, 5000);
    assert_int_equal(t->places_cache_ttl_ms, 60000);
    assert_string_equal(t->log_dir, HERD_TEST_DATA "/topology/logs");
    assert_string_equal(t->keys_dir, HERD_TEST_DATA "/topology/keys");
    assert_int_equal(t->idle_timeout_ms, 300000);
    assert_int_equal(t->max_output_bytes, 1048576);
    assert_int_equal(t->max_clients, 50000);

    /* PROTOCOL.md section 1, as indexes: Bailey 0, Bona 1, Campbell 2, Clark 3, Jaquez 4. */
    static const size_t want[5][3] = {{1, 2}, {0, 2, 3}, {0, 1, 4}, {1, 4}, {2, 3}};
    static const size_t want_n[5] = {2, 3, 3, 2, 2};
    for (size_t i = 0; i < 5; i++) {
        size_t out[8] = {0};
        assert_int_equal(herd_topology_neighbours(t, i, out, 8), want_n[i]);
        for (size_t k = 0; k < want_n[i]; k++)
            assert_int_equal(out[k], want[i][k]);
        for (size_t j = 0; j < 5; j++) {
            int expect = 0;
            for (size_t k = 0; k < want_n[i]; k++)
                expect |= want[i][k] == j;
            assert_int_equal(herd_topology_linked(t, i, j), expect);
            assert_int_equal(herd_topology_linked(t, j, i), expect);
        }
    }
    herd_topology_destroy(&t);
    assert_null(t);
}

static void test_lookups(void **state)
{
    (void) state;
    herd_topology_t *t = load_ok(DEFAULT_TOPOLOGY);
    assert_int_equal(herd_topology_find(t, "Nowhere"), -1);
    assert_int_equal(herd_topology_find(t, "bona"), -1);
    assert_int_equal(herd_topology_find(t, ""), -1);
    assert_int_equal(herd_topology_find(t, NULL), -1);
    assert_false(herd_topology_linked(t, 1, 1));
    assert_false(herd_topology_linked(t, 0, 99));
    /* A short buffer gets only what fits; the count is still the whole. */
    size_t out[2] = {77, 77};
    assert_int_equal(herd_topology_neighbours(t, 1, out, 1), 3);
    assert_int_equal(out[0], 0);
    assert_int_equal(out[1], 77);
    assert_int_equal(herd_topology_neighbours(t, 1, NULL, 0), 3);
    assert_int_equal(herd_topology_neighbours(t, 5, out, 2), 0);
    herd_topology_destroy(&t);
    herd_topology_destroy(&t);
    herd_topology_destroy(NULL);
}

static void test_defaults_and_order(void **state)
{
    (void) state;
    herd_topology_t *t = load_ok(FIXTURE("minimal.json"));
    /* servers[] keeps the file's order, not alphabetical order. */
    assert_int_equal(t->n_servers, 3);
    assert_string_equal(t->servers[0].name, "Zed");
    assert_string_equal(t->servers[1].name, "Alpha");
    assert_string_equal(t->servers[2].name, "Mid");
    /* The same ports on another address are not a clash. */
    assert_string_equal(t->servers[2].host, "127.0.0.2");
    assert_int_equal(t->servers[2].client_port, 20000);
    assert_int_equal(t->n_links, 1);
    assert_int_equal(t->links[0].a, 2);
    assert_int_equal(t->links[0].b, 0);
    assert_true(herd_topology_linked(t, 0, 2));
    assert_int_equal(herd_topology_neighbours(t, 1, NULL, 0), 0);
    assert_string_equal(t->places_url, PLACES_URL);
    assert_string_equal(t->places_key_env, "GOOGLE_PLACES_API_KEY");
    assert_int_equal(t->places_timeout_ms, 5000);
    assert_int_equal(t->places_cache_ttl_ms, 60000);
    assert_string_equal(t->log_dir, HERD_TEST_DATA "/topology/logs");
    assert_int_equal(t->idle_timeout_ms, 300000);
    assert_int_equal(t->max_output_bytes, 1048576);
    assert_int_equal(t->max_clients, 50000);
    assert_true(t->max_records == 10000000LL);
    assert_true(t->record_ttl_s == 0);
    assert_true(t->max_future_s == 86400);
    assert_int_equal(t->places_max_in_flight, 64);
    assert_int_equal(t->places_max_queued, 4096);
    assert_string_equal(t->state_dir, HERD_TEST_DATA "/topology/state");
    assert_int_equal(t->fsync, HERD_FSYNC_EVERYSEC);
    assert_false(t->insecure_links);
    assert_int_equal(t->frontend_threads, -1);
    assert_string_equal(t->servers[0].admin_host, "127.0.0.1");
    herd_topology_destroy(&t);
}

static void test_full(void **state)
{
    (void) state;
    herd_topology_t *t = load_ok(FIXTURE("full.json"));
    assert_int_equal(t->n_servers, 2);
    assert_string_equal(t->servers[0].name, "north-1");
    assert_string_equal(t->servers[0].host, "10.0.0.1");
    assert_int_equal(t->servers[0].client_port, 7001);
    assert_int_equal(t->servers[0].peer_port, 7101);
    assert_int_equal(t->servers[0].admin_port, 7201);
    assert_string_equal(t->servers[0].public_key, "6Jo=X]znAWe@FqGEN-%IXlwGOdd(:JeOus@A$Io>");
    assert_string_equal(t->servers[1].name, "south_2");
    assert_int_equal(t->servers[1].admin_port, 0);
    assert_string_equal(t->servers[1].public_key, "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7");
    assert_string_equal(t->servers[0].admin_host, "127.0.0.1");
    assert_string_equal(t->servers[1].admin_host, "0.0.0.0");
    assert_int_equal(t->servers[0].frontend_threads, -1);
    assert_int_equal(t->servers[1].frontend_threads, 3);
    assert_int_equal(t->frontend_threads, 2);
    assert_null(t->state_dir);
    assert_int_equal(t->fsync, HERD_FSYNC_ALWAYS);
    assert_false(t->insecure_links);
    assert_int_equal(t->places_max_in_flight, 7);
    assert_int_equal(t->places_max_queued, 0);
    assert_true(t->max_records == 1000000000LL);
    assert_true(t->record_ttl_s == 3600);
    assert_true(t->max_future_s == 0);
    assert_int_equal(t->n_links, 1);
    assert_int_equal(t->links[0].a, 1);
    assert_int_equal(t->links[0].b, 0);
    assert_string_equal(t->places_url, "http://127.0.0.1:9999/nearby");
    assert_string_equal(t->places_key_env, "HERD_TEST_KEY");
    assert_int_equal(t->places_timeout_ms, 1500);
    assert_int_equal(t->places_cache_ttl_ms, 0);
    assert_string_equal(t->log_dir, "/var/log/herd"); /* absolute: kept as is */
    assert_int_equal(t->idle_timeout_ms, 2147483647L);
    assert_int_equal(t->max_output_bytes, 4096);
    assert_int_equal(t->max_clients, 1);
    herd_topology_destroy(&t);
}

static void test_unknown_fields(void **state)
{
    (void) state;
    herd_topology_t *t = load_ok(FIXTURE("unknown_fields.json"));
    assert_int_equal(t->n_servers, 2);
    assert_int_equal(t->servers[0].client_port, 1);
    assert_int_equal(t->servers[0].peer_port, 65535);
    assert_int_equal(t->n_links, 1);
    assert_int_equal(t->max_clients, 10);
    assert_int_equal(t->idle_timeout_ms, 300000);
    assert_int_equal(t->places_timeout_ms, 5000);
    herd_topology_destroy(&t);
}

static void test_accepted_edges(void **state)
{
    (void) state;
    /* A 64-character name, an explicit admin_port 0, no links at all. */
    herd_topology_t *t = expect_ok_text(
        "{'servers': {'a234567890123456789012345678901234567890123456789012345678901234': "
        "{'host': 'h', 'client_port': 65535, 'peer_port': 1, 'admin_port': 0}}, 'links': []}");
    assert_int_equal(strlen(t->servers[0].name), 64);
    assert_int_equal(t->n_links, 0);
    assert_int_equal(t->servers[0].admin_port, 0);
    herd_topology_destroy(&t);

    /* Extremes of the optional numbers. */
    t = expect_ok_text(WITH("'places': {'timeout_ms': 1, 'cache_ttl_ms': 2147483647}, "
                            "'limits': {'idle_timeout_ms': 1, 'max_output_bytes': 2147483647}"));
    assert_int_equal(t->places_timeout_ms, 1);
    assert_int_equal(t->places_cache_ttl_ms, 2147483647L);
    assert_int_equal(t->idle_timeout_ms, 1);
    assert_int_equal(t->max_output_bytes, 2147483647L);
    assert_int_equal(t->max_clients, 50000);
    herd_topology_destroy(&t);

    /* Admin ports clash with nothing when distinct; the same port on two
     * hosts is fine. */
    t = expect_ok_text("{'servers': {'A': {'host': '::1', 'client_port': 1, 'peer_port': 2, "
                       "'admin_port': 3, 'admin_host': '::1'}, 'B': {'host': '127.0.0.1', 'client_port': 1, "
                       "'peer_port': 2, 'admin_port': 3}}, 'links': [['B', 'A']]}");
    assert_int_equal(t->servers[1].admin_port, 3);
    herd_topology_destroy(&t);
}

/* One rejected topology and the exact message after "<file>: ". */
typedef struct {
    const char *json;
    const char *msg;
} bad_case_t;

static const bad_case_t bad_cases[] = {
    /* The document and the servers object. */
    {"[]", "the top level must be an object"},
    {"{'links': []}", "servers: missing (must be an object with at least one server)"},
    {"{'servers': [], 'links': []}", "servers: must be an object with at least one server"},
    {"{'servers': {}, 'links': []}", "servers: must be an object with at least one server"},
    {"{'servers': null, 'links': []}", "servers: must be an object with at least one server"},
    {"{'servers': {'Bo na': {}}, 'links': []}",
     "servers: server name \"Bo na\" must be 1 to 64 letters, digits, '_' or '-'"},
    {"{'servers': {'': {}}, 'links': []}",
     "servers: server name \"\" must be 1 to 64 letters, digits, '_' or '-'"},
    {"{'servers': {'B\\u00e9': {}}, 'links': []}",
     "servers: server name \"B\\xc3\\xa9\" must be 1 to 64 letters, digits, '_' or '-'"},
    {"{'servers': {'a\\\\b\\'': {}}, 'links': []}",
     "servers: server name \"a\\\\b\\\"\" must be 1 to 64 letters, digits, '_' or '-'"},
    {"{'servers': {'a2345678901234567890123456789012345678901234567890123456789012345': {}}, "
     "'links': []}",
     "servers: server name \"a2345678901234567890123456789012345678901234567890123456789012345\" "
     "must be 1 to 64 letters, digits, '_' or '-'"},
    {"{'servers': {'Bona': 3}, 'links': []}", "servers.Bona: must be an object"},
    /* host */
    {BONA_WITH("'client_port': 10001, 'peer_port': 11001"),
     "servers.Bona.host: missing "
     "(must be a host name or address, without spaces, control characters or brackets (::1, not [::1]))"},
    {BONA_WITH("'host': '', 'client_port': 10001, 'peer_port': 11001"),
     "servers.Bona.host: must be a host name or address, without spaces, control characters or brackets (::1, not [::1])"},
    {BONA_WITH("'host': 127, 'client_port': 10001, 'peer_port': 11001"),
     "servers.Bona.host: must be a host name or address, without spaces, control characters or brackets (::1, not [::1])"},
    {BONA_WITH("'host': 'local host', 'client_port': 10001, 'peer_port': 11001"),
     "servers.Bona.host: must be a host name or address, without spaces, control characters or brackets (::1, not [::1])"},
    {BONA_WITH("'host': 'a\\nb', 'client_port': 10001, 'peer_port': 11001"),
     "servers.Bona.host: must be a host name or address, without spaces, control characters or brackets (::1, not [::1])"},
    /* ports */
    {BONA_WITH("'host': 'h', 'peer_port': 11001"),
     "servers.Bona.client_port: missing (must be an integer from 1 to 65535)"},
    {BONA_WITH("'host': 'h', 'client_port': 0, 'peer_port': 11001"),
     "servers.Bona.client_port: must be an integer from 1 to 65535"},
    {BONA_WITH("'host': 'h', 'client_port': 65536, 'peer_port': 11001"),
     "servers.Bona.client_port: must be an integer from 1 to 65535"},
    {BONA_WITH("'host': 'h', 'client_port': -10001, 'peer_port': 11001"),
     "servers.Bona.client_port: must be an integer from 1 to 65535"},
    {BONA_WITH("'host': 'h', 'client_port': '10001', 'peer_port': 11001"),
     "servers.Bona.client_port: must be an integer from 1 to 65535"},
    {BONA_WITH("'host': 'h', 'client_port': 10001.0, 'peer_port': 11001"),
     "servers.Bona.client_port: must be an integer from 1 to 65535"},
    {BONA_WITH("'host': 'h', 'client_port': true, 'peer_port': 11001"),
     "servers.Bona.client_port: must be an integer from 1 to 65535"},
    {BONA_WITH("'host': 'h', 'client_port': 10001"),
     "servers.Bona.peer_port: missing (must be an integer from 1 to 65535)"},
    {BONA_WITH("'host': 'h', 'client_port': 10001, 'peer_port': 9223372036854775807"),
     "servers.Bona.peer_port: must be an integer from 1 to 65535"},
    {BONA_WITH("'host': 'h', 'client_port': 10001, 'peer_port': null"),
     "servers.Bona.peer_port: must be an integer from 1 to 65535"},
    {BONA_WITH("'host': 'h', 'client_port': 10001, 'peer_port': 11001, 'admin_port': -1"),
     "servers.Bona.admin_port: must be an integer from 1 to 65535, or 0 for none"},
    {BONA_WITH("'host': 'h', 'client_port': 10001, 'peer_port': 11001, 'admin_port': 65536"),
     "servers.Bona.admin_port: must be an integer from 1 to 65535, or 0 for none"},
    {BONA_WITH("'host': 'h', 'client_port': 10001, 'peer_port': 11001, 'admin_port': '80'"),
     "servers.Bona.admin_port: must be an integer from 1 to 65535, or 0 for none"},
    /* public_key: length, alphabet, a group past 2^32 - 1, type */
    {BONA_WITH("'host': 'h', 'client_port': 1, 'peer_port': 2, "
               "'public_key': '6Jo=X]znAWe@FqGEN-%IXlwGOdd(:JeOus@A$Io'"),
     "servers.Bona.public_key: must be a CURVE public key of 40 Z85 characters"},
    {BONA_WITH("'host': 'h', 'client_port': 1, 'peer_port': 2, "
               "'public_key': '6Jo=X]znAWe@FqGEN-%IXlwGOdd(:JeOus@A$Io>0'"),
     "servers.Bona.public_key: must be a CURVE public key of 40 Z85 characters"},
    {BONA_WITH("'host': 'h', 'client_port': 1, 'peer_port': 2, "
               "'public_key': '6Jo=X]znAWe@FqGEN-%IXlwGOdd(:JeOus@A$Io,'"),
     "servers.Bona.public_key: must be a CURVE public key of 40 Z85 characters"},
    {BONA_WITH("'host': 'h', 'client_port': 1, 'peer_port': 2, "
               "'public_key': '#####]znAWe@FqGEN-%IXlwGOdd(:JeOus@A$Io>'"),
     "servers.Bona.public_key: must be a CURVE public key of 40 Z85 characters"},
    {BONA_WITH("'host': 'h', 'client_port': 1, 'peer_port': 2, 'public_key': 40"),
     "servers.Bona.public_key: must be a CURVE public key of 40 Z85 characters"},
    /* brackets are URL syntax, not an address */
    {BONA_WITH("'host': '[::1]', 'client_port': 10001, 'peer_port': 11001"),
     "servers.Bona.host: must be a host name or address, without spaces, control characters or brackets "
     "(::1, not [::1])"},
    /* one address written two ways, or a wildcard, on one port */
    {"{'servers': {'A': {'host': 'localhost', 'client_port': 7000, 'peer_port': 7001}, "
     "'B': {'host': '127.0.0.1', 'client_port': 7000, 'peer_port': 7002}}, 'links': []}",
     "servers.A and servers.B both use localhost:7000 and 127.0.0.1:7000 (client_port of A, client_port of B)"},
    {"{'servers': {'A': {'host': '0.0.0.0', 'client_port': 7000, 'peer_port': 7001}, "
     "'B': {'host': '127.0.0.2', 'client_port': 7003, 'peer_port': 7000}}, 'links': []}",
     "servers.A and servers.B both use 0.0.0.0:7000 and 127.0.0.2:7000 (client_port of A, peer_port of B)"},
    {"{'servers': {'A': {'host': '::1', 'client_port': 7000, 'peer_port': 7001, 'admin_port': 7002}, "
     "'B': {'host': '127.0.0.1', 'client_port': 7003, 'peer_port': 7004, 'admin_port': 7002}}, 'links': []}",
     "servers.A and servers.B both use 127.0.0.1:7002 (admin_port of A, admin_port of B)"},
    /* state, fsync, new limits and places bounds */
    {WITH("'state_dir': 5"), "state_dir: must be a non-empty string, or null to keep nothing on disk"},
    {WITH("'state_dir': ''"), "state_dir: must be a non-empty string, or null to keep nothing on disk"},
    {WITH("'fsync': 'sometimes'"), "fsync: must be \"always\", \"everysec\" or \"never\""},
    {WITH("'insecure_links': 'yes'"), "insecure_links: must be true or false"},
    {WITH("'frontend_threads': -1"),
     "frontend_threads: must be an integer from 0 (the front end on the node's thread) to 64"},
    {WITH("'frontend_threads': 65"),
     "frontend_threads: must be an integer from 0 (the front end on the node's thread) to 64"},
    {WITH("'limits': {'max_records': 0}"), "limits.max_records: must be an integer from 1 to 10^9"},
    {WITH("'limits': {'record_ttl_s': -1}"),
     "limits.record_ttl_s: must be an integer from 0 (never) to 10^11 seconds"},
    {WITH("'limits': {'max_future_s': 1.5}"), "limits.max_future_s: must be an integer from 0 to 10^11 seconds"},
    {WITH("'places': {'max_in_flight': 0}"), "places.max_in_flight: must be an integer from 1 to 2147483647"},
    {WITH("'places': {'max_queued': -1}"), "places.max_queued: must be an integer from 0 to 2147483647"},
    {BONA_WITH("'host': '127.0.0.1', 'client_port': 10001, 'peer_port': 11001, 'admin_host': ''"),
     "servers.Bona.admin_host: must be a host name or address, without spaces, control characters or brackets (::1, not [::1])"},
    /* PROTOCOL section 7: keys at both ends of a link, and no unauthenticated
     * links off this machine unless the topology says so */
    {"{'servers': {'A': {'host': '127.0.0.1', 'client_port': 1, 'peer_port': 2, "
     "'public_key': '6Jo=X]znAWe@FqGEN-%IXlwGOdd(:JeOus@A$Io>'}, "
     "'B': {'host': '127.0.0.1', 'client_port': 3, 'peer_port': 4}}, 'links': [['B', 'A']]}",
     "servers.A has a public_key but servers.B has none: a link is authenticated at both ends or at neither"},
    {"{'servers': {'A': {'host': '10.1.1.1', 'client_port': 1, 'peer_port': 2}, "
     "'B': {'host': '127.0.0.1', 'client_port': 3, 'peer_port': 4}}, 'links': [['B', 'A']]}",
     "servers.A: host 10.1.1.1 is not a loopback address and has no public_key: links must be "
     "authenticated (herdctl keys), or set \"insecure_links\": true"},
    /* address clashes */
    {"{'servers': {" S_BONA ", 'Clark': {'host': '127.0.0.1', 'client_port': 10001, "
     "'peer_port': 11003}}, 'links': []}",
     "servers.Bona and servers.Clark both use 127.0.0.1:10001 "
     "(client_port of Bona, client_port of Clark)"},
    {"{'servers': {" S_BONA ", 'Clark': {'host': '127.0.0.1', 'client_port': 11001, "
     "'peer_port': 11003}}, 'links': []}",
     "servers.Bona and servers.Clark both use 127.0.0.1:11001 "
     "(peer_port of Bona, client_port of Clark)"},
    {"{'servers': {" S_BONA ", " S_CLARK ", 'Jaquez': {'host': '127.0.0.1', 'client_port': 1, "
     "'peer_port': 2, 'admin_port': 11003}}, 'links': []}",
     "servers.Clark and servers.Jaquez both use 127.0.0.1:11003 "
     "(peer_port of Clark, admin_port of Jaquez)"},
    {"{'servers': {'Bona': {'host': '127.0.0.1', 'client_port': 10001, 'peer_port': 10001}}, "
     "'links': []}",
     "servers.Bona.client_port and servers.Bona.peer_port both use 127.0.0.1:10001"},
    {"{'servers': {'Bona': {'host': '::1', 'client_port': 1, 'peer_port': 2, 'admin_port': 2, "
     "'admin_host': '::1'}}, 'links': []}",
     "servers.Bona.peer_port and servers.Bona.admin_port both use [::1]:2"},
    /* links */
    {"{" SERVERS "}", "links: missing (must be an array of [\"server\", \"server\"] pairs)"},
    {"{" SERVERS ", 'links': {}}", "links: must be an array of [\"server\", \"server\"] pairs"},
    {"{" SERVERS ", 'links': ['Bona']}", "link 1: must be an array of two server names"},
    {"{" SERVERS ", 'links': [['Bona', 'Clark'], []]}",
     "link 2: must be an array of two server names"},
    {"{" SERVERS ", 'links': [['Bona']]}", "link 1: must be an array of two server names"},
    {"{" SERVERS ", 'links': [['Bona', 'Clark', 'Jaquez']]}",
     "link 1: must be an array of two server names"},
    {"{" SERVERS ", 'links': [['Bona', 3]]}", "link 1: must be an array of two server names"},
    {"{" SERVERS ", 'links': [['Bona', 'Clark'], ['Clark', 'Jaquez'], ['Bona', 'Nowhere']]}",
     "link 3 [\"Bona\", \"Nowhere\"] names unknown server \"Nowhere\""},
    {"{" SERVERS ", 'links': [['bona', 'Clark']]}",
     "link 1 [\"bona\", \"Clark\"] names unknown server \"bona\""},
    {"{" SERVERS ", 'links': [['', 'Clark']]}",
     "link 1 [\"\", \"Clark\"] names unknown server \"\""},
    {"{" SERVERS ", 'links': [['Bona', 'Clark'], ['Jaquez', 'Jaquez']]}",
     "link 2 [\"Jaquez\", \"Jaquez\"] links \"Jaquez\" to itself"},
    {"{" SERVERS ", 'links': [['Bona', 'Clark'], ['Clark', 'Jaquez'], ['Bona', 'Clark']]}",
     "link 3 [\"Bona\", \"Clark\"] repeats link 1 [\"Bona\", \"Clark\"]"},
    {"{" SERVERS ", 'links': [['Bona', 'Clark'], ['Clark', 'Jaquez'], ['Jaquez', 'Clark']]}",
     "link 3 [\"Jaquez\", \"Clark\"] repeats link 2 [\"Clark\", \"Jaquez\"]"},
    /* places */
    {WITH("'places': []"), "places: must be an object"},
    {WITH("'places': {'url': ''}"), "places.url: must be a non-empty string"},
    {WITH("'places': {'url': 5}"), "places.url: must be a non-empty string"},
    {WITH("'places': {'key_env': null}"), "places.key_env: must be a non-empty string"},
    {WITH("'places': {'timeout_ms': 0}"),
     "places.timeout_ms: must be an integer from 1 to 2147483647"},
    {WITH("'places': {'timeout_ms': 2147483648}"),
     "places.timeout_ms: must be an integer from 1 to 2147483647"},
    {WITH("'places': {'timeout_ms': 1.5}"),
     "places.timeout_ms: must be an integer from 1 to 2147483647"},
    {WITH("'places': {'cache_ttl_ms': -1}"),
     "places.cache_ttl_ms: must be an integer from 0 to 2147483647 (0 = off)"},
    {WITH("'places': {'cache_ttl_ms': '60000'}"),
     "places.cache_ttl_ms: must be an integer from 0 to 2147483647 (0 = off)"},
    /* log_dir and limits */
    {WITH("'log_dir': ''"), "log_dir: must be a non-empty string"},
    {WITH("'log_dir': ['logs']"), "log_dir: must be a non-empty string"},
    {WITH("'keys_dir': ''"), "keys_dir: must be a non-empty string"},
    {WITH("'keys_dir': 7"), "keys_dir: must be a non-empty string"},
    {WITH("'limits': 5"), "limits: must be an object"},
    {WITH("'limits': {'idle_timeout_ms': 0}"),
     "limits.idle_timeout_ms: must be an integer from 1 to 2147483647"},
    {WITH("'limits': {'max_output_bytes': -1}"),
     "limits.max_output_bytes: must be an integer from 1 to 2147483647"},
    {WITH("'limits': {'max_clients': 0}"),
     "limits.max_clients: must be an integer from 1 to 2147483647"},
    {WITH("'limits': {'max_clients': 2147483648}"),
     "limits.max_clients: must be an integer from 1 to 2147483647"},
    {WITH("'limits': {'max_clients': false}"),
     "limits.max_clients: must be an integer from 1 to 2147483647"},
};

static void test_errors(void **state)
{
    (void) state;
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++)
        expect_error(bad_cases[i].json, bad_cases[i].msg);
}

/* The first problem in file order is the one reported. */
static void test_first_error_wins(void **state)
{
    (void) state;
    expect_error("{'servers': {'A': {'host': 'h', 'client_port': 0, 'peer_port': 2}, "
                 "'B': {'host': 'h', 'client_port': 2, 'peer_port': 3}}, 'links': 7, 'limits': 1}",
                 "servers.A.client_port: must be an integer from 1 to 65535");
    expect_error("{'servers': {'A': {'host': 'h', 'client_port': 1, 'peer_port': 2}, "
                 "'B': {'host': 'h', 'client_port': 2, 'peer_port': 3}}, 'links': 7, 'limits': 1}",
                 "servers.A and servers.B both use h:2 (peer_port of A, client_port of B)");
}

static void expect_raw_error(const char *path, const char *want)
{
    char err[512];
    herd_topology_t *t = herd_topology_load(path, err, sizeof err);
    assert_null(t);
    assert_string_equal(err, want);
}

static void test_syntax_errors(void **state)
{
    (void) state;
    /* A missing comma: jansson points at the closing quote of "Clark". */
    expect_raw_error(FIXTURE("syntax_error.json"),
                     FIXTURE("syntax_error.json") ":4:11: '}' expected near '\"Clark\"'");
    /* Two servers of one name would silently become one: refused. */
    expect_raw_error(FIXTURE("duplicate_server.json"),
                     FIXTURE("duplicate_server.json")
                     ":5:10: duplicate object key near '\"Bona\"'");

    char want[PATH_MAX + 128];
    write_file(tmpfile_path, "{\n  \"servers\": {},\n  \"links\": [1, 2,, 3]\n}\n", 0);
    snprintf(want, sizeof want, "%s:3:18: unexpected token near ','", tmpfile_path);
    expect_raw_error(tmpfile_path, want);

    write_file(tmpfile_path, "", 0);
    snprintf(want, sizeof want, "%s:1:0: '[' or '{' expected near end of file", tmpfile_path);
    expect_raw_error(tmpfile_path, want);

    write_file(tmpfile_path, "{\"servers\": {}} {}", 0);
    snprintf(want, sizeof want, "%s:1:17: end of file expected near '{'", tmpfile_path);
    expect_raw_error(tmpfile_path, want);

    /* NUL inside a string is refused by the parser, so names never hide one. */
    write_file(tmpfile_path, "{\"servers\": {\"A\\u0000B\": {}}, \"links\": []}", 0);
    snprintf(want, sizeof want,
             "%s:1:23: NUL byte in object key not supported near '\"A\\u0000B\"'", tmpfile_path);
    expect_raw_error(tmpfile_path, want);
    write_file(tmpfile_path, "{\"servers\": {\"A\": {\"host\": \"a\\u0000\"}}}", 0);
    snprintf(want, sizeof want,
             "%s:1:36: \\u0000 is not allowed without JSON_ALLOW_NUL near '\"a\\u0000\"'",
             tmpfile_path);
    expect_raw_error(tmpfile_path, want);

    /* Found by fuzz_topology: jansson quotes the bytes near the error, here a
     * backslash and a raw LF; the message must stay one line. */
    write_file(tmpfile_path, "{\"a\": \"x\\\ny\"}", 0);
    snprintf(want, sizeof want, "%s:2:0: invalid escape near '\"x\\\\x0a'", tmpfile_path);
    expect_raw_error(tmpfile_path, want);
    write_file(tmpfile_path, "{\"b\": \"\\\t\"}", 0);
    snprintf(want, sizeof want, "%s:1:9: invalid escape near '\"\\\\x09'", tmpfile_path);
    expect_raw_error(tmpfile_path, want);
}

/* Loopback hosts, and insecure_links as the operator's explicit choice. */
static void test_link_security(void **state)
{
    (void) state;
    assert_true(herd_topology_is_loopback("127.0.0.1"));
    assert_true(herd_topology_is_loopback("127.255.3.9"));
    assert_true(herd_topology_is_loopback("::1"));
    assert_true(herd_topology_is_loopback("[::1]"));
    assert_true(herd_topology_is_loopback("localhost"));
    assert_false(herd_topology_is_loopback("128.0.0.1"));
    assert_false(herd_topology_is_loopback("127.0.0.1.example.com"));
    assert_false(herd_topology_is_loopback("10.0.0.1"));
    assert_false(herd_topology_is_loopback("0.0.0.0"));
    herd_topology_t *t = expect_ok_text("{'servers': {'A': {'host': '10.1.1.1', 'client_port': 1, 'peer_port': 2}, "
                                        "'B': {'host': '10.1.1.2', 'client_port': 3, 'peer_port': 4}}, "
                                        "'links': [['B', 'A']], 'insecure_links': true}");
    assert_true(t->insecure_links);
    herd_topology_destroy(&t);
    /* A lone server off loopback has no links to secure. */
    t = expect_ok_text("{'servers': {'A': {'host': '10.1.1.1', 'client_port': 1, 'peer_port': 2}}, 'links': []}");
    herd_topology_destroy(&t);
}

static void test_file_errors(void **state)
{
    (void) state;
    char path[PATH_MAX + 32], want[PATH_MAX + 128];
    snprintf(path, sizeof path, "%s/missing.json", tmpdir);
    snprintf(want, sizeof want, "%s: cannot open: No such file or directory", path);
    expect_raw_error(path, want);

    snprintf(path, sizeof path, "%s/adir", tmpdir);
    assert_int_equal(mkdir(path, 0700), 0);
    snprintf(want, sizeof want, "%s: cannot read: Is a directory", path);
    expect_raw_error(path, want);

    /* A short or absent error buffer is never overrun. */
    char small[8];
    memset(small, 'x', sizeof small);
    assert_null(herd_topology_load(path, small, 5));
    assert_int_equal(strlen(small), 4);
    assert_int_equal(small[5], 'x');
    assert_null(herd_topology_load(path, NULL, 0));
}

static void test_log_dir(void **state)
{
    (void) state;
    char sub[PATH_MAX + 16], file[PATH_MAX + 32], want[PATH_MAX + 32];
    const char *json = "{'servers': {'A': {'host': 'h', 'client_port': 1, 'peer_port': 2}}, "
                       "'links': [], 'log_dir': 'out/logs'}";

    /* Relative to the folder of the file, however the file was named. */
    snprintf(sub, sizeof sub, "%s/sub", tmpdir);
    assert_int_equal(mkdir(sub, 0700), 0);
    snprintf(file, sizeof file, "%s/t.json", sub);
    write_file(file, json, 1);
    herd_topology_t *t = load_ok(file);
    snprintf(want, sizeof want, "%s/out/logs", sub);
    assert_string_equal(t->log_dir, want);
    snprintf(want, sizeof want, "%s/keys", sub); /* keys_dir defaults to "keys" beside the file */
    assert_string_equal(t->keys_dir, want);
    herd_topology_destroy(&t);

    int cwd = open(".", O_RDONLY | O_DIRECTORY);
    assert_true(cwd >= 0);
    assert_int_equal(chdir(tmpdir), 0);
    t = load_ok("sub/t.json");
    assert_string_equal(t->log_dir, "sub/out/logs");
    assert_string_equal(t->path, "sub/t.json");
    herd_topology_destroy(&t);
    t = load_ok("./sub/t.json");
    assert_string_equal(t->log_dir, "./sub/out/logs");
    herd_topology_destroy(&t);
    assert_int_equal(chdir("sub"), 0);
    t = load_ok("t.json"); /* a bare file name: its folder is the current one */
    assert_string_equal(t->log_dir, "out/logs");
    herd_topology_destroy(&t);
    assert_int_equal(fchdir(cwd), 0);
    close(cwd);

    /* The default "logs" next to the file, and an absolute path kept. */
    t = expect_ok_text("{'servers': {'A': {'host': 'h', 'client_port': 1, 'peer_port': 2}}, "
                       "'links': []}");
    snprintf(want, sizeof want, "%s/logs", tmpdir);
    assert_string_equal(t->log_dir, want);
    herd_topology_destroy(&t);
    t = expect_ok_text("{'servers': {'A': {'host': 'h', 'client_port': 1, 'peer_port': 2}}, "
                       "'links': [], 'log_dir': '/srv/herd/logs'}");
    assert_string_equal(t->log_dir, "/srv/herd/logs");
    herd_topology_destroy(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_topology), cmocka_unit_test(test_lookups),
        cmocka_unit_test(test_defaults_and_order), cmocka_unit_test(test_full),
        cmocka_unit_test(test_unknown_fields),   cmocka_unit_test(test_accepted_edges),
        cmocka_unit_test(test_errors),           cmocka_unit_test(test_first_error_wins),
        cmocka_unit_test(test_syntax_errors),    cmocka_unit_test(test_file_errors),
        cmocka_unit_test(test_log_dir),          cmocka_unit_test(test_link_security),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
