/* herd_table: client id -> the highest-ranked known location record.
 *
 * One allocation per client holds the record and its strings; the index is an
 * open-addressing hash table. Records rank by one total order (PROTOCOL.md
 * section 3): the client's time, then the origin server's name, then the
 * position text (bytes), then the whole AT line (bytes), the greater winning.
 * Every server ranks the same way, so replays, duplicates and ties all end
 * with the same record everywhere.
 *
 * For anti-entropy the table keeps, incrementally, a digest per bucket
 * (HERD_TABLE_BUCKETS buckets chosen by an unseeded hash of the client id,
 * the same on every server), per group of buckets, and for the whole table:
 * two servers compare the whole digest, then the groups that differ, then
 * the buckets, then the records' fingerprints, and exchange only what
 * differs.
 *
 * Bounds (PROTOCOL.md section 6) go by the origin server's receive time,
 * which the table reads from the record itself (the client's time plus the
 * AT line's skew, herd_record_receive_time), never by the client's time:
 * past max_records the record received longest ago is dropped, and with a
 * ttl a record received more than that long ago is. Equal receive times are
 * ordered by the ranking above, then by the client id, so the eviction
 * order is total. Both bounds depend only on the records and the clock, so
 * every server drops the same ones; nothing here depends on which servers
 * the topology has (a record is kept whatever its origin). */
#ifndef HERD_TABLE_H
#define HERD_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "herd_types.h"
#include "herd_time.h"

#define HERD_TABLE_BUCKETS 65536u /* digest buckets (a power of two) */
#define HERD_TABLE_GROUPS  256u   /* groups of HERD_TABLE_BUCKETS / HERD_TABLE_GROUPS buckets */
#define HERD_TABLE_GROUP_SIZE (HERD_TABLE_BUCKETS / HERD_TABLE_GROUPS)

typedef struct herd_table_t herd_table_t;

/* One stored location. Read-only for callers; valid until the next update of
 * the same client, its removal, or the table's destruction. */
typedef struct {
    herd_time_t time;  /* the client's time, the first rank key */
    uint64_t digest;   /* fingerprint of the AT line (unseeded: the same on every server) */
    uint16_t id_len;   /* bytes of the client id */
    uint16_t at_len;   /* bytes of the AT line (no newline) */
    uint16_t pos_off;  /* offset of the position field inside the AT line */
    uint16_t pos_len;  /* bytes of the position field */
    uint16_t origin_len; /* bytes of the origin server's name (it starts at at + 3) */
    const char *id;    /* the client id (not NUL-terminated) */
    const char *at;    /* the AT line as made by the origin server (NUL-terminated) */
} herd_record_t;

typedef enum {
    HERD_UPDATE_NEWER,   /* stored: it ranks above the stored record (or the client is new) */
    HERD_UPDATE_SAME,    /* not stored: this very record is already held */
    HERD_UPDATE_OLDER,   /* not stored: a higher-ranked record is held */
    HERD_UPDATE_REFUSED, /* not stored: outside the bounds (expired, or first to go from a full table) */
    HERD_UPDATE_ERROR,   /* not stored: out of memory or malformed lengths */
    HERD_UPDATE_REJECTED, /* not stored: it would have been, but the caller's accept said no */
} herd_update_t;

/* herd_table_update_checked's last word on a record about to be stored. */
typedef bool(herd_table_accept_fn)(void *arg);

/* Called for every record the table drops by its bounds, just before it is
 * freed (not for records replaced by a higher-ranked one). */
typedef void(herd_table_drop_fn)(void *arg, const herd_record_t *r);

/* A new, empty table, or NULL when out of memory. No bounds until
 * herd_table_set_limits. */
herd_table_t *herd_table_new(void);

/* Frees the table and every record; sets *p to NULL. NULL-safe. */
void herd_table_destroy(herd_table_t **p);

/* Sets the bounds: at most max_records records (0 = no bound) and, with
 * ttl_s > 0, no record whose receive time is more than ttl_s seconds before
 * the `now` given to herd_table_expire. Lowering max_records below the size
 * drops the records received longest ago at once. drop (may be NULL) hears of every
 * record dropped by a bound. Returns 0, or -1 when out of memory. */
int herd_table_set_limits(herd_table_t *t, uint64_t max_records, int64_t ttl_s, herd_table_drop_fn *drop,
                          void *arg);

/* Drops every record received more than the ttl before `now` (POSIX
 * seconds); records offered later with such a receive time are refused.
 * Returns how many were dropped. */
size_t herd_table_expire(herd_table_t *t, int64_t now);

/* Offers a location: stores it when it ranks above the stored one (or the
 * client is new) and the bounds allow: a new client's record is refused when
 * its receive time is past the ttl, or when the table is full and it would
 * be the first to go (it was received before every record held; every
 * server refuses it alike). Otherwise, in a full table, the record received
 * longest ago makes room. A held client's newer record never drops anyone. `at` is the whole AT line, whose
 * origin name is its second field; the position field is at
 * [pos_off, pos_off + pos_len). On HERD_UPDATE_NEWER, *stored (if not NULL)
 * points to the new record; otherwise to the record kept (or NULL). */
herd_update_t herd_table_update(herd_table_t *t, const char *id, size_t id_len, herd_time_t time,
                                const char *at, size_t at_len, size_t pos_off, size_t pos_len,
                                const herd_record_t **stored);

/* As herd_table_update, with a last word: when the record would be stored
 * (it ranks above what is held, or the client is new), accept(arg) is asked
 * first, and a false answer leaves the table as it was and returns
 * HERD_UPDATE_REJECTED. For lines that need checking only when they matter:
 * a neighbour's repeat costs one lookup and no validation. */
herd_update_t herd_table_update_checked(herd_table_t *t, const char *id, size_t id_len, herd_time_t time,
                                        const char *at, size_t at_len, size_t pos_off, size_t pos_len,
                                        herd_table_accept_fn *accept, void *arg, const herd_record_t **stored);

/* As herd_table_update, for a report this server just made from a client's
 * IAMAT: one with the same time, origin and position as the record held does
 * not rank above it (PROTOCOL section 3), so it is HERD_UPDATE_SAME even
 * though its AT line (a new skew) would win the last tie-break. A new
 * report is always admitted by max_records (PROTOCOL section 6): its receive
 * time is this server's now, so it is never the first to go unless every
 * record held was received later by a clock ahead of ours; even then the
 * record first in the order makes room for it. */
herd_update_t herd_table_update_report(herd_table_t *t, const char *id, size_t id_len, herd_time_t time,
                                       const char *at, size_t at_len, size_t pos_off, size_t pos_len,
                                       const herd_record_t **stored);

/* An AT line offered with what its parse already found (herd_table_offer),
 * so that the table reads none of it again: its id, client time, position
 * field [pos_off, pos_off + pos_len) and origin name [3, 3 + origin_len)
 * inside the line, and the origin's receive time (herd_record_receive_time).
 * `hash`, when `hashed`, is what herd_table_ahead returned for this id on
 * this table. */
typedef struct {
    const char *id;
    size_t id_len;
    herd_time_t time;
    const char *at;
    size_t at_len;
    size_t pos_off, pos_len;
    size_t origin_len;
    herd_time_t recv;
    uint64_t hash;
    bool hashed;
} herd_table_offer_t;

/* herd_table_update_checked (own false) or herd_table_update_report (own
 * true, accept NULL) of an offer. The fields must agree with the line as
 * herd_table_update would find them (callers take them from one
 * herd_record parse of it). */
herd_update_t herd_table_offer(herd_table_t *t, const herd_table_offer_t *o, bool own, herd_table_accept_fn *accept,
                               void *arg, const herd_record_t **stored);

/* Looking ahead in a batch: a caller about to look up many ids (a peer's
 * message, a front end's batch) names each HERD_TABLE_AHEAD lookups before
 * it makes it, and the table starts loading the id's index slot then and,
 * half that distance later, the record the slot holds and its digest
 * bucket, so that the batch's cache misses overlap instead of coming one
 * after another. Only a hint: nothing changes, and a lookup that was not
 * announced (or whose announcement the table outgrew) works the same. The
 * state starts zeroed, one per batch. */
#define HERD_TABLE_AHEAD 8
/* Below this many records the table stays in the caches, and naming ids
 * ahead costs more than it saves (herd_table_worth_ahead). */
#define HERD_TABLE_AHEAD_MIN 32768
typedef struct {
    uint64_t hash[HERD_TABLE_AHEAD]; /* the last announced ids' index hashes */
    size_t n;                         /* ids announced so far */
} herd_table_ahead_t;

/* Returns the id's index hash, for herd_table_offer's `hash`. */
uint64_t herd_table_ahead(const herd_table_t *t, herd_table_ahead_t *a, const char *id, size_t id_len);

/* Whether a batch should name its ids ahead: the table is large enough
 * (HERD_TABLE_AHEAD_MIN) for its lookups to miss the caches. */
bool herd_table_worth_ahead(const herd_table_t *t);

/* Would a record with this rank be stored? (Cheap: no allocation.) True when
 * the client is unknown or the stored record ranks below it; the bounds are
 * not considered. Used to drop repeats before validating them fully. */
bool herd_table_would_take(const herd_table_t *t, const char *id, size_t id_len, herd_time_t time,
                           const char *at, size_t at_len, size_t pos_off, size_t pos_len);

/* Removes a client's record. Returns true when there was one. */
bool herd_table_remove(herd_table_t *t, const char *id, size_t id_len);

/* The record of a client, or NULL when unknown. */
const herd_record_t *herd_table_find(const herd_table_t *t, const char *id, size_t id_len);

/* The origin's receive time (herd_record_receive_time) of a record a table
 * holds (from herd_table_find, or an update's *stored), kept beside it for
 * the bounds: valid until the table next changes. */
herd_time_t herd_table_receive_time(const herd_record_t *r);

/* Number of clients held, and records dropped by the bounds so far. */
size_t herd_table_size(const herd_table_t *t);
uint64_t herd_table_dropped(const herd_table_t *t);

/* The digest of the whole table: the XOR of every record's fingerprint.
 * Equal contents give equal digests in any process. O(1). */
uint64_t herd_table_digest(const herd_table_t *t);

/* The digest of each group (HERD_TABLE_GROUPS values) and of each bucket
 * (HERD_TABLE_BUCKETS values, group g holding buckets g*GROUP_SIZE onward).
 * The arrays belong to the table and change with it. */
const uint64_t *herd_table_group_digests(const herd_table_t *t);
const uint64_t *herd_table_bucket_digests(const herd_table_t *t);

/* The bucket a client id falls in (the same on every server). */
uint32_t herd_table_bucket_of(const char *id, size_t id_len);

/* Iterates one bucket: start with *cursor = NULL; each call returns the next
 * record of bucket b, or NULL at the end. The table must not change meanwhile. */
const herd_record_t *herd_table_bucket_next(const herd_table_t *t, uint32_t b, const void **cursor);

/* Iteration over every record: start with *cursor = 0; each call returns the
 * next record and advances *cursor, or NULL at the end. The table must not
 * change meanwhile. */
const herd_record_t *herd_table_next(const herd_table_t *t, size_t *cursor);

/* The rank order of PROTOCOL.md section 3, for two AT lines with their
 * client times and position spans: < 0, 0 or > 0 as a ranks below, the
 * same as, or above b. */
int herd_rank_cmp(herd_time_t ta, herd_span_t at_a, herd_span_t pos_a, herd_time_t tb, herd_span_t at_b,
                  herd_span_t pos_b);

/* Makes the index big enough for n clients without growing again (a
 * start that knows about how many records it will load). Returns 0, or -1
 * when out of memory (the table is unchanged and still usable). */
int herd_table_reserve(herd_table_t *t, size_t n);

#endif
