/* herd_table: client id -> newest known location record.
 *
 * One allocation per client holds the record and its strings; the index is an
 * open-addressing hash table. Merging is last-writer-wins on the client time:
 * an update is kept only when strictly newer. */
#ifndef HERD_TABLE_H
#define HERD_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "herd_time.h"

typedef struct herd_table_t herd_table_t;

/* One stored location. Read-only for callers; valid until the next update of
 * the same client or the table's destruction. */
typedef struct {
    herd_time_t time;  /* the client's time, the merge key */
    uint16_t id_len;   /* bytes of the client id */
    uint16_t at_len;   /* bytes of the AT line (no newline) */
    uint16_t pos_off;  /* offset of the position field inside the AT line */
    uint16_t pos_len;  /* bytes of the position field */
    const char *id;    /* the client id (not NUL-terminated) */
    const char *at;    /* the AT line as made by the origin server (NUL-terminated) */
} herd_record_t;

typedef enum {
    HERD_UPDATE_NEWER, /* stored: the time was strictly newer (or the client new) */
    HERD_UPDATE_SAME,  /* not stored: the same time was already known */
    HERD_UPDATE_OLDER, /* not stored: a newer time is already known */
    HERD_UPDATE_ERROR, /* not stored: out of memory */
} herd_update_t;

/* A new, empty table, or NULL when out of memory. */
herd_table_t *herd_table_new(void);

/* Frees the table and every record; sets *p to NULL. NULL-safe. */
void herd_table_destroy(herd_table_t **p);

/* Offers a location: stores it when `time` is strictly newer than the stored
 * one (or the client is new). `at` is the whole AT line; the position field
 * is at [pos_off, pos_off + pos_len). On HERD_UPDATE_NEWER, *stored (if not
 * NULL) points to the new record; otherwise to the record kept (or NULL). */
herd_update_t herd_table_update(herd_table_t *t, const char *id, size_t id_len, herd_time_t time,
                                const char *at, size_t at_len, size_t pos_off, size_t pos_len,
                                const herd_record_t **stored);

/* The record of a client, or NULL when unknown. */
const herd_record_t *herd_table_find(const herd_table_t *t, const char *id, size_t id_len);

/* Number of clients held. */
size_t herd_table_size(const herd_table_t *t);

/* An order-independent digest of every (id, time) held: two tables with the
 * same contents have the same digest. Maintained incrementally, O(1). */
uint64_t herd_table_digest(const herd_table_t *t);

/* Iteration: start with *cursor = 0; each call returns the next record and
 * advances *cursor, or NULL at the end. The table must not change meanwhile. */
const herd_record_t *herd_table_next(const herd_table_t *t, size_t *cursor);

/* Removes a client's record; true when it was held. Records other than
 * this one stay valid. */
bool herd_table_remove(herd_table_t *t, const char *id, size_t id_len);

#endif
