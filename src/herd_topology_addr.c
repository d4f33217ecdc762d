/* herd_topology_addr: the address and port clash check of the topology
 * loader (PROTOCOL.md section 9). See herd_topology_int.h. */
#include "herd_topology_int.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* One bound port, for the clash check. */
typedef struct {
    size_t server;     /* index into servers[] */
    const char *field; /* "client_port", "peer_port" or "admin_port" */
    const char *host;  /* where it binds: host, or admin_host for the admin port */
    int port;
} bound_t;

/* The addresses a host text stands for, for the clash check: a numeric
 * address (brackets allowed), or "localhost" (both loopbacks). Other names
 * are not resolved here (no DNS at validation); they compare as text. */
static size_t host_addrs(const char *host, struct sockaddr_storage *out, size_t cap)
{
    char buf[HOST_MAX + 1];
    size_t len = strlen(host);
    if (len >= 2 && host[0] == '[' && host[len - 1] == ']' && len - 2 < sizeof buf) {
        memcpy(buf, host + 1, len - 2);
        buf[len - 2] = '\0';
        host = buf;
    }
    const char *names[2] = {host, NULL};
    if (!strcmp(host, "localhost")) {
        names[0] = "127.0.0.1";
        names[1] = "::1";
    }
    size_t n = 0;
    for (int k = 0; k < 2 && names[k] && n < cap; k++) {
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST};
        struct addrinfo *res = NULL;
        if (getaddrinfo(names[k], NULL, &hints, &res) != 0)
            continue;
        for (struct addrinfo *a = res; a && n < cap; a = a->ai_next)
            memcpy(&out[n++], a->ai_addr, a->ai_addrlen);
        freeaddrinfo(res);
    }
    return n;
}

static bool is_wildcard(const struct sockaddr_storage *a)
{
    if (a->ss_family == AF_INET)
        return ((const struct sockaddr_in *) a)->sin_addr.s_addr == htonl(INADDR_ANY);
    if (a->ss_family == AF_INET6)
        return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *) a)->sin6_addr);
    return false;
}

static bool same_ip(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return false;
    if (is_wildcard(a) || is_wildcard(b))
        return true; /* a wildcard bind takes the port on every address */
    if (a->ss_family == AF_INET)
        return ((const struct sockaddr_in *) a)->sin_addr.s_addr == ((const struct sockaddr_in *) b)->sin_addr.s_addr;
    return !memcmp(&((const struct sockaddr_in6 *) a)->sin6_addr, &((const struct sockaddr_in6 *) b)->sin6_addr,
                   sizeof(struct in6_addr));
}

/* Whether binding the same port on hosts a and b would clash: the same
 * text, or numeric forms (or localhost) of one address, or a wildcard. */
static bool same_bind(const char *a, const char *b)
{
    if (!strcmp(a, b))
        return true;
    struct sockaddr_storage x[4], y[4];
    size_t nx = host_addrs(a, x, 4), ny = host_addrs(b, y, 4);
    for (size_t i = 0; i < nx; i++)
        for (size_t j = 0; j < ny; j++)
            if (same_ip(&x[i], &y[j]))
                return true;
    return false;
}

static void format_address(const char *host, int port, char *buf, size_t cap)
{
    if (strchr(host, ':') != NULL && host[0] != '[')
        snprintf(buf, cap, "[%s]:%d", host, port);
    else
        snprintf(buf, cap, "%s:%d", host, port);
}

int herd_topology_check_addresses(const herd_topology_t *t, char *msg, size_t cap)
{
    bound_t *b = calloc(t->n_servers * 3, sizeof *b);
    if (b == NULL) {
        snprintf(msg, cap, "out of memory");
        return -1;
    }
    size_t n = 0;
    for (size_t i = 0; i < t->n_servers; i++) {
        const herd_server_conf_t *s = &t->servers[i];
        b[n++] = (bound_t) {i, "client_port", s->host, s->client_port};
        b[n++] = (bound_t) {i, "peer_port", s->host, s->peer_port};
        if (s->admin_port != 0)
            b[n++] = (bound_t) {i, "admin_port", s->admin_host, s->admin_port};
    }
    int rc = 0;
    for (size_t j = 0; j < n && rc == 0; j++) {
        for (size_t i = 0; i < j; i++) {
            const herd_server_conf_t *si = &t->servers[b[i].server];
            const herd_server_conf_t *sj = &t->servers[b[j].server];
            if (b[i].port != b[j].port || !same_bind(b[i].host, b[j].host))
                continue;
            char addr[2 * HOST_MAX + 32];
            format_address(b[i].host, b[i].port, addr, sizeof addr);
            if (strcmp(b[i].host, b[j].host) != 0) {
                size_t o = strlen(addr);
                snprintf(addr + o, sizeof addr - o, " and ");
                format_address(b[j].host, b[j].port, addr + o + 5, sizeof addr - o - 5);
            }
            if (b[i].server == b[j].server)
                snprintf(msg, cap, "servers.%s.%s and servers.%s.%s both use %s", si->name, b[i].field,
                     sj->name, b[j].field, addr);
            else
                snprintf(msg, cap, "servers.%s and servers.%s both use %s (%s of %s, %s of %s)", si->name,
                     sj->name, addr, b[i].field, si->name, b[j].field, sj->name);
            rc = -1;
            break;
        }
    }
    free(b);
    return rc;
}

