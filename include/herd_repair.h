/* herd_repair: anti-entropy between two neighbours (PROTOCOL.md section 7).
 *
 * Neighbours compare their tables and exchange only what differs, in steps
 * that narrow the difference down (herd_wire.h lists the messages):
 *
 *   A: DIGEST (count, whole-table digest)          ~30 bytes
 *   B: equal -> SYNC_END; else GROUPS (256 digests) 2 KiB
 *   A: BUCKETS: the bucket digests of the groups that differ
 *   B: the records of buckets A has none of (UPDATES); FPRINTS: the
 *      fingerprints of its records in the other buckets that differ
 *   A: the records whose fingerprints B did not list (UPDATES); WANT: the
 *      fingerprints B listed that A lacks
 *   B: those records (UPDATES), and SYNC_END after the last WANT.
 *
 * Both sides merge what they receive by the one ranking, so an exchange
 * never makes a table worse and ends with both holding the higher-ranked
 * record of every client either had. Nothing here keeps state between
 * messages or knows about sockets: each step reads the table and hands the
 * messages it makes to a send callback. The links module decides when to
 * start an exchange and which answers to accept. */
#ifndef HERD_REPAIR_H
#define HERD_REPAIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "herd_table.h"
#include "herd_wire.h"

/* Sends one encoded message to the neighbour; takes ownership of data (a
 * malloc'd buffer). Returns 0, or -1 when it could not be queued. */
typedef int(herd_repair_send_fn)(void *arg, char *data, size_t len);

/* Where a step's messages go, and what it sent. */
typedef struct {
    herd_repair_send_fn *send; /* the neighbour's queue */
    void *arg;                 /* its context */
    uint64_t records;          /* AT lines sent so far (UPDATES), added up by each step */
    uint64_t bytes;            /* message bytes sent so far */
    bool failed;               /* a send could not be queued: the exchange is incomplete */
    /* What this side offered or asked for, so that it answers nothing else
     * (NULL: no such check). A bitmap of HERD_TABLE_BUCKETS bits kept by
     * the caller between the steps of one exchange: on_groups sets the
     * buckets of the groups its BUCKETS lists, and on_fprints answers only
     * those, each once; on_buckets sets the buckets its FPRINTS lists, and
     * on_want answers only those, each once. */
    uint8_t *buckets;
    uint64_t skipped;          /* buckets asked about that were not offered (not answered) */
} herd_repair_io_t;

/* Bytes of the io.buckets bitmap. */
#define HERD_REPAIR_BITMAP_BYTES (HERD_TABLE_BUCKETS / 8u)

/* A: opens an exchange with DIGEST. Returns 0 or -1. */
int herd_repair_start(const herd_table_t *t, herd_repair_io_t *io);

/* B, on DIGEST (or HELLO): returns 1 when the tables are equal (the caller
 * answers SYNC_END), 0 after sending GROUPS, -1 on a failure. */
int herd_repair_on_digest(const herd_table_t *t, uint64_t count, uint64_t digest, herd_repair_io_t *io);

/* A, on GROUPS: returns 1 when no group differs (nothing to do), 0 after
 * sending BUCKETS, -1 on a failure. */
int herd_repair_on_groups(const herd_table_t *t, const herd_msg_t *msg, herd_repair_io_t *io);

/* B, on BUCKETS: sends UPDATES for buckets the other side has none of, then
 * FPRINTS (the last one marked last; at least one, possibly empty).
 * Returns 0 or -1. */
int herd_repair_on_buckets(const herd_table_t *t, const herd_msg_t *msg, herd_repair_io_t *io);

/* A, on FPRINTS: sends UPDATES for its records the other side did not
 * list, then one WANT (marked last when the FPRINTS was). Returns 0 or -1. */
int herd_repair_on_fprints(const herd_table_t *t, const herd_msg_t *msg, herd_repair_io_t *io);

/* B, on WANT: sends UPDATES with the records asked for (those it still
 * holds). Returns 0 or -1; the caller sends SYNC_END after the last. */
int herd_repair_on_want(const herd_table_t *t, const herd_msg_t *msg, herd_repair_io_t *io);

#endif
