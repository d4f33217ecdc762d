/* herd_types: the small types several modules share, so that no module
 * includes another's header just for a type. Nothing here depends on any
 * other part of herd. */
#ifndef HERD_TYPES_H
#define HERD_TYPES_H

#include <stddef.h>
#include <stdint.h>

/* A view into a caller's buffer; never owns its bytes. */
typedef struct {
    const char *p; /* first byte (may be NULL when len is 0) */
    size_t len;    /* number of bytes */
} herd_span_t;

/* Names one line of one client connection; answered exactly once. */
typedef struct {
    uint64_t conn; /* connection id (never reused while the process lives) */
    uint64_t seq;  /* the line's number on that connection */
} herd_ticket_t;

#endif
