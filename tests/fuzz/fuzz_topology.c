/* fuzz_topology: the topology loader (herd_topology_load) on arbitrary file
 * contents.
 *
 * herd_topology_load takes a path, so each input is written to one memfd
 * made once per process and loaded through /proc/self/fd/N: no disk, no
 * temporary files left behind, and opening that path gives a fresh file
 * offset every time.
 *
 * Checks, besides the sanitizers:
 * - a loaded topology obeys PROTOCOL.md section 9 and herd_topology.h: at
 *   least one server, names of 1..64 [A-Za-z0-9_-], hosts of printable
 *   ASCII, ports in range, no two servers sharing an address and port, links
 *   between two different known servers and never twice, limits in range;
 * - herd_topology_find, herd_topology_linked and herd_topology_neighbours
 *   agree with the arrays;
 * - a refusal has a non-empty one-line reason; the same input refused with
 *   a tiny error buffer gives the start of that reason, and nothing is
 *   written past the buffer. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memfd_create */
#endif
#include "fuzz_target.h"

#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "herd_topology.h"

static int memfd = -1;
static char path[64];

static void write_input(const uint8_t *data, size_t size)
{
    if (memfd < 0) {
        memfd = memfd_create("herd_fuzz_topology", MFD_CLOEXEC);
        FUZZ_CHECK(memfd >= 0, "memfd_create failed");
        snprintf(path, sizeof path, "/proc/self/fd/%d", memfd);
    }
    FUZZ_CHECK(ftruncate(memfd, 0) == 0, "ftruncate failed");
    size_t done = 0;
    while (done < size) {
        ssize_t w = pwrite(memfd, data + done, size - done, (off_t) done);
        FUZZ_CHECK(w > 0, "pwrite failed");
        done += (size_t) w;
    }
}

static bool name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 64)
        return false;
    return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") == n;
}

static bool host_ok(const char *s)
{
    if (s[0] == '\0')
        return false;
    for (const unsigned char *p = (const unsigned char *) s; *p; p++)
        if (*p <= ' ' || *p >= 0x7f)
            return false;
    return true;
}

static void check_topology(const herd_topology_t *t)
{
    FUZZ_CHECK(t->n_servers >= 1 && t->servers != NULL, "a topology has at least one server");
    FUZZ_CHECK(t->path != NULL && strcmp(t->path, path) == 0, "path must be kept");
    for (size_t i = 0; i < t->n_servers; i++) {
        const herd_server_conf_t *s = &t->servers[i];
        FUZZ_CHECK(s->name && name_ok(s->name), "server %zu: bad name", i);
        FUZZ_CHECK(s->host && host_ok(s->host), "server %zu: bad host", i);
        FUZZ_CHECK(s->client_port >= 1 && s->client_port <= 65535 && s->peer_port >= 1
                       && s->peer_port <= 65535 && s->admin_port >= 0 && s->admin_port <= 65535,
                   "server %zu: port out of range", i);
        FUZZ_CHECK(s->public_key == NULL || strlen(s->public_key) == 40, "server %zu: key", i);
        FUZZ_CHECK(herd_topology_find(t, s->name) == (long) i, "find(%s) must be %zu", s->name, i);

        int ports[3] = { s->client_port, s->peer_port, s->admin_port };
        for (size_t j = 0; j <= i; j++) {
            const herd_server_conf_t *o = &t->servers[j];
            int oports[3] = { o->client_port, o->peer_port, o->admin_port };
            if (j < i)
                FUZZ_CHECK(strcmp(s->name, o->name) != 0, "servers %zu and %zu share a name", j, i);
            if (strcmp(s->host, o->host) != 0)
                continue;
            for (size_t a = 0; a < 3; a++)
                for (size_t b = 0; b < 3; b++) {
                    if (j == i && b <= a)
                        continue;
                    if (ports[a] != 0 && ports[a] == oports[b])
                        FUZZ_CHECK(false, "servers %zu and %zu share %s:%d", j, i, s->host, ports[a]);
                }
        }
    }
    for (size_t k = 0; k < t->n_links; k++) {
        const herd_link_t *l = &t->links[k];
        FUZZ_CHECK(l->a < t->n_servers && l->b < t->n_servers && l->a != l->b, "link %zu", k);
        FUZZ_CHECK(herd_topology_linked(t, l->a, l->b) && herd_topology_linked(t, l->b, l->a),
                   "link %zu must be seen both ways", k);
        for (size_t e = 0; e < k; e++) {
            const herd_link_t *o = &t->links[e];
            FUZZ_CHECK(!((o->a == l->a && o->b == l->b) || (o->a == l->b && o->b == l->a)),
                       "links %zu and %zu repeat", e, k);
        }
    }
    /* Neighbour lists: every link counted twice in total. */
    size_t total = 0;
    size_t *out = malloc(t->n_servers * sizeof *out);
    FUZZ_CHECK(out != NULL, "out of memory");
    for (size_t i = 0; i < t->n_servers; i++) {
        size_t n = herd_topology_neighbours(t, i, out, t->n_servers);
        FUZZ_CHECK(n < t->n_servers, "server %zu has %zu neighbours", i, n);
        for (size_t k = 0; k < n; k++)
            FUZZ_CHECK(herd_topology_linked(t, i, out[k]), "neighbour not linked");
        FUZZ_CHECK(herd_topology_neighbours(t, i, NULL, 0) == n, "count without room");
        total += n;
    }
    free(out);
    FUZZ_CHECK(total == 2 * t->n_links, "%zu neighbour entries for %zu links", total, t->n_links);
    FUZZ_CHECK(herd_topology_find(t, "") == -1, "the empty name is no server");

    FUZZ_CHECK(t->places_url && t->places_url[0] && t->places_key_env && t->places_key_env[0],
               "places strings");
    FUZZ_CHECK(t->log_dir && t->log_dir[0], "log_dir");
    FUZZ_CHECK(t->places_timeout_ms >= 1 && t->places_timeout_ms <= 2147483647L
                   && t->places_cache_ttl_ms >= 0 && t->places_cache_ttl_ms <= 2147483647L
                   && t->idle_timeout_ms >= 1 && t->idle_timeout_ms <= 2147483647L
                   && t->max_output_bytes >= 1 && t->max_output_bytes <= 2147483647L
                   && t->max_clients >= 1 && t->max_clients <= 2147483647L,
               "limits out of range");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    write_input(data, size);

    char err[512];
    memset(err, 'x', sizeof err);
    herd_topology_t *t = herd_topology_load(path, err, sizeof err);
    if (t != NULL) {
        check_topology(t);
        herd_topology_destroy(&t);
        FUZZ_CHECK(t == NULL, "destroy must clear the pointer");
        herd_topology_destroy(&t);
        return 0;
    }
    FUZZ_CHECK(memchr(err, '\0', sizeof err) != NULL && err[0] != '\0',
               "a refusal needs a reason");
    FUZZ_CHECK(strchr(err, '\n') == NULL && strchr(err, '\r') == NULL,
               "the reason must be one line: %s", err);

    /* The same refusal into a small heap buffer. */
    size_t small_len = 1 + size % 24;
    char *small = malloc(small_len);
    FUZZ_CHECK(small != NULL, "out of memory");
    t = herd_topology_load(path, small, small_len);
    FUZZ_CHECK(t == NULL, "the error buffer changed the verdict");
    FUZZ_CHECK(memchr(small, '\0', small_len) != NULL && strncmp(small, err, small_len - 1) == 0,
               "a short reason must be the start of the full one");
    free(small);
    return 0;
}
