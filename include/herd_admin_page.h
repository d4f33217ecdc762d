/* herd_admin_page: the page at `/` of the admin endpoint (PROTOCOL §9): the
 * herd as this server sees it, one self-contained HTML document with an
 * inline SVG graph of the topology's servers (on a circle) and links.
 *
 * What a server knows is drawn as known and the rest as unknown: its own
 * record count and readiness, and for each of its own links whether it is
 * up and how long ago its last successful exchange was; a link between two
 * other servers, and their state, it cannot see. The page reloads itself
 * every few seconds (a meta refresh: no script, no external asset). Every
 * name and reason is HTML-escaped. Plain data in, text out: no thread or
 * lock of its own. */
#ifndef HERD_ADMIN_PAGE_H
#define HERD_ADMIN_PAGE_H

#include <stdbool.h>
#include <stddef.h>

#define HERD_PAGE_REFRESH_S 2 /* the page reloads itself this often */
#define HERD_PAGE_NEVER (-1.0)
#define HERD_PAGE_UNKNOWN (-2.0)

/* One server of the topology, as drawn. */
typedef struct {
    const char *name;
    bool self;       /* the server that draws the page */
    int link;        /* a neighbour's link: 1 up, 0 down; -1 not a neighbour (or self) */
} herd_page_server_t;

/* One link of the topology, as drawn. */
typedef struct {
    size_t a, b;      /* indexes into the servers */
    int up;           /* 1 up, 0 down, -1 unknown (a link of two other servers) */
    double age_s;     /* seconds since its last successful exchange; HERD_PAGE_NEVER: none
                         yet; HERD_PAGE_UNKNOWN: not known here (not one of ours) */
} herd_page_link_t;

typedef struct {
    const char *self;     /* this server's name */
    const char *version;  /* the build's version */
    const char *health;   /* its readiness as /readyz names it ("ready", "isolated", ...) */
    const char *reason;   /* and the reason /readyz gives */
    bool ready;           /* whether /readyz answers 200 */
    size_t records;       /* clients in its table */
    size_t connections;   /* open client connections */
    const herd_page_server_t *servers;
    size_t n_servers;
    const herd_page_link_t *links;
    size_t n_links;
} herd_page_t;

/* The page (malloc'd, NUL-terminated; *len its length), or NULL when out
 * of memory. */
char *herd_admin_page_render(const herd_page_t *p, size_t *len);

/* The page while the state loads: says starting and what the start is
 * doing. *out malloc'd; returns its length, or -1 when out of memory. */
int herd_admin_page_starting(const char *progress, char **out);

#endif
