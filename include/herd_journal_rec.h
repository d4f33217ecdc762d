/* herd_journal_rec: one record of the journal as loading finds it. Shared
 * by the node's side of the journal and its files, so it stands below both. */
#ifndef HERD_JOURNAL_REC_H
#define HERD_JOURNAL_REC_H

#include <stddef.h>

#include "herd_time.h"

/* One record found on disk at start. */
typedef struct {
    char kind;          /* 'A': an AT line to offer; 'D': the client was dropped */
    const char *id;     /* the client id (not NUL-terminated) */
    size_t id_len;
    const char *at;     /* 'A' only: the whole AT line (not NUL-terminated) */
    size_t at_len;
    size_t pos_off;     /* 'A' only: the position field inside the AT line */
    size_t pos_len;
    herd_time_t time;   /* 'A' only: the client's time */
} herd_journal_rec_t;

#endif
