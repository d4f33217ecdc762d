/* herd_journal internals shared by the node's side (herd_journal.c), the
 * files (herd_journal_file.c) and the writer and compactor threads
 * (herd_journal_writer.c). Not a public interface.
 *
 * File layout: a header, then frames. The header is the 8-byte magic, the
 * generation as a little-endian u64 and, from version 2 on, the CRC32C of
 * those 16 bytes (u32 LE) and 4 zero bytes: 24 bytes (version 1: 16, no
 * CRC; still read). A frame is the body's length (u32 LE), the CRC32C of
 * the body (u32 LE), then the body: one kind byte ('A' + the AT line, 'D' +
 * the client id, or in a version-2 snapshot, last, 'E' + the record count
 * (u64 LE) + the CRC32C of every byte of the file before this frame). A
 * start acts on a generation only when the header's CRC vouches for it, and
 * on a snapshot's completeness only when its 'E' frame does. */
#ifndef HERD_JOURNAL_INT_H
#define HERD_JOURNAL_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <czmq.h>

#include "herd_journal_rec.h"
#include "herd_table.h"
#include "herd_topology.h"

/* The node's journal handle (herd_journal.h), named here only by pointer so
 * that the files and the writer stand below the node's side. */
typedef struct herd_journal_t herd_journal_t;

#define HJ_MAGIC_JOURNAL  "HERDJNL2"
#define HJ_MAGIC_SNAPSHOT "HERDSNP2"
#define HJ_MAGIC_JOURNAL1 "HERDJNL1" /* version 1: read, never written */
#define HJ_MAGIC_SNAPSHOT1 "HERDSNP1"
#define HJ_HEADER         24      /* magic + generation + CRC + zeros (version 2) */
#define HJ_HEADER1        16      /* magic + generation (version 1) */
#define HJ_TRAILER        (HJ_FRAME + 1 + 8 + 4) /* a snapshot's 'E' frame */
#define HJ_FRAME          8       /* length + CRC before each body */
#define HJ_MAX_BODY       65536   /* an AT line is far shorter; anything longer is damage */
#define HJ_SNAPSHOT       "snapshot"
#define HJ_SNAPSHOT_TMP   "snapshot.tmp"
#define HJ_DEFAULT_COMPACT_MIN (64ull << 20) /* journal bytes below which no compaction starts */
#define HJ_DEFAULT_BACKLOG (64ull << 20) /* bytes kept for a retry after failed writes */

/* A turn's records, handed from the node to the writer (by pointer). */
typedef struct {
    uint64_t last_seq; /* sequence number of the last record inside */
    uint64_t heals;    /* a loss (hj_report_t.loss_epoch) this batch makes good: it
                          carries the whole table again; 0 = none */
    uint64_t live;     /* the table's size when it was handed over */
    bool table;        /* it carries the node's whole table (herd_journal_put_table); sent
                          even when empty, so that the writer learns it is on disk */
    size_t len;        /* bytes of frames in data */
    size_t cap;        /* bytes allocated for data */
    char data[];       /* the frames */
} hj_batch_t;

/* What the writer tells the node (one fixed-size message, cumulative). */
typedef struct {
    uint64_t done_seq;          /* every record up to here is on disk as the mode promises */
    uint64_t failed_seq;        /* records past done_seq up to here: their last write or
                                   fsync failed (kept and retried, not on disk now) */
    bool failing;               /* writes fail now; retried every RETRY_MS */
    uint64_t loss_epoch;        /* counts the times records were given up for good */
    uint64_t healed_epoch;      /* the loss made good by a whole-table batch on disk */
    bool durable;               /* false while what the table holds is not all on disk */
    uint64_t write_errors;      /* failed write, fsync, rotate or compaction steps */
    uint64_t fsyncs;            /* fsync calls on the journal */
    uint64_t bytes_written;     /* journal bytes written */
    uint64_t journal_bytes;     /* bytes in the current journal file */
    uint64_t journal_records;   /* records appended since the last snapshot began */
    uint64_t since_bytes;       /* bytes appended since then (every journal it will not cover) */
    uint64_t snapshot_bytes;    /* bytes of the last snapshot written (or found at start) */
    uint64_t snapshot_records;  /* records in it */
    uint64_t compactions;       /* snapshots written */
    uint64_t backlog_bytes;     /* bytes waiting for a retry after a failed write */
    uint64_t set_aside;         /* damaged snapshots set aside by the writer (once the whole
                                   table was on disk in the journal) */
    double last_compaction_s;   /* seconds the last compaction took */
    char why[160];              /* the last failure, while not durable */
    char text[512];             /* something to log, or "" */
} hj_report_t;

/* Everything the writer thread owns once started. */
typedef struct {
    char *dir;                 /* the state folder */
    int dirfd;                 /* the folder, for fsync after create / rename */
    int fd;                    /* current journal, O_APPEND */
    uint64_t gen;              /* its generation */
    uint64_t snap_gen;         /* generation the snapshot covers (0 = none, or not vouched for) */
    herd_fsync_t mode;         /* when to fsync */
    uint64_t compact_min;      /* journal bytes (since_bytes) below which no compaction starts */
    uint64_t backlog_max;      /* unwritten bytes kept for a retry; past it they are given up */
    bool aside_snapshot;       /* the snapshot failed its checks at start: its good records
                                  were loaded, and it stays where a start reads them until
                                  the whole table is on disk in the journal (fsynced in every
                                  mode), then it is set aside (renamed NAME.bad-TIME) */
    char aside_why[128];       /* what was wrong with it, for the log */
    hj_report_t rep;           /* the state reported to the node */
} hj_writer_conf_t;

/* Load statistics of one file scan. */
typedef struct {
    uint64_t records;     /* frames read whole with a good CRC */
    uint64_t bad;         /* frames skipped (bad CRC or length, unreadable AT line) */
    uint64_t bad_bytes;   /* bytes skipped with them */
    uint64_t torn_bytes;  /* bytes cut (or ignored) at the end */
    uint64_t zero_bytes;  /* zeros at the end (preallocated, never written): cut silently */
    uint64_t end;         /* offset after the last good frame */
    int version;          /* the header's version (1 or 2) */
    bool header_ok;       /* version 2 and the header's CRC matches (the generation is true) */
    bool magic_damaged;   /* version 2 whose magic is damaged, the rest of its header vouched by its CRC */
    bool trailer_ok;      /* a snapshot whose 'E' frame matches its records and bytes */
} hj_scan_t;

/* Called per good frame with its kind and data (without the kind byte). */
typedef void(hj_frame_fn)(void *arg, char kind, const char *data, size_t len);

/* Writes the frame for (kind, data) at out, which must hold HJ_FRAME + 1 +
 * len bytes. Returns the bytes written. */
size_t hj_frame(char *out, char kind, const char *data, size_t len);

/* hj_frame without its CRC, which hj_seal_frames writes later: the node
 * lays out a batch's frames and the writer thread seals them, so that the
 * CRC is not computed on the node's thread. */
size_t hj_frame_unsealed(char *out, char kind, const char *data, size_t len);

/* Writes the CRC of every frame of a batch of n bytes laid out by
 * hj_frame_unsealed (a frame whose length runs past the end is left as it
 * is). Returns the number of frames. */
uint64_t hj_seal_frames(char *p, size_t n);

/* Writes a version-2 file header (with its CRC). */
void hj_header(char out[HJ_HEADER], const char *magic, uint64_t gen);

/* Writes a snapshot's 'E' frame for `records` records and the CRC32C of
 * every byte before it. Returns HJ_TRAILER. */
size_t hj_trailer(char out[HJ_TRAILER], uint64_t records, uint32_t crc);

/* Reads the file at dir/name, a journal (`kind` 'J') or a snapshot ('S'):
 * checks the header (magic of either version; *gen filled only when
 * st->header_ok), calls fn per good frame, skips damaged frames, and with
 * cut_tail truncates the file after the last good frame when its tail is
 * torn or damaged. A version-2 header whose CRC fails still has its frames
 * read (each vouches for itself), but not its generation. Returns 0, 1
 * when the magic is missing or not ours (nothing read), or -1 with err
 * filled when the file cannot be read. */
int hj_scan(int dirfd, const char *name, char kind, uint64_t *gen, bool cut_tail, hj_frame_fn *fn, void *arg,
            hj_scan_t *st, char *err, size_t errlen);

/* Renames dir/name to name.bad-<UTC time> (never deleted: an operator may
 * want what is in it) and fsyncs the folder. Returns 0 and the new name in
 * `aside`, or -1 with errno set. */
int hj_set_aside(int dirfd, const char *name, char *aside, size_t cap);

/* Locates the fields of an AT line (six fields one space apart) for the
 * table: id, position and time. Returns 0 or -1 when it is not one. */
int hj_parse_at(const char *at, size_t len, herd_journal_rec_t *rec);

/* write(2) until done, across EINTR and short writes. Returns 0 or -1. */
int hj_write_all(int fd, const void *p, size_t n);

/* pwrite(2) at `off` until done. Returns 0 or -1. */
int hj_pwrite_all(int fd, const void *p, size_t n, uint64_t off);

/* The generations of the journal.N files in the folder, sorted. Returns
 * the count (and a malloc'd array in *gens, NULL when 0) or -1. */
long hj_list_journals(int dirfd, uint64_t **gens);

/* Writes a new snapshot for journal generation `upto` from the snapshot
 * (when there is one; one that cannot be read or vouched for stops the
 * compaction, so it is never overwritten unread) and the journals after
 * its generation up to `upto`, read in file order with each client id's
 * last frame winning (a DROP leaving it out): the journals are the table's
 * history, so that is the table. A journal the snapshot already covers is
 * skipped (read again after it, its older records would win); a
 * version-1 snapshot vouches for no generation, so every journal is read
 * after it. Writes the snapshot aside, fsyncs, renames it in place, fsyncs
 * the folder and removes the journals up to `upto`. `expect` (the table's
 * size) sizes the index at first. `stop`, when not NULL, is polled now and
 * then: input there abandons the work. Returns 0 and fills *records /
 * *bytes, or -1 with err filled (or 1 abandoned). */
int hj_compact(int dirfd, uint64_t upto, size_t expect, void *stop, uint64_t *records, uint64_t *bytes,
               char *err, size_t errlen);

/* The writer's state made from conf (which it then owns: descriptors, dir),
 * or NULL when out of memory. */
void *hj_writer_new(const hj_writer_conf_t *conf);

/* Frees a writer that was never started (closes what it owns). */
void hj_writer_free(void *writer);

/* The writer thread (a zactor); args is an hj_writer_new() result it owns. */
void hj_writer_actor(zsock_t *pipe, void *args);

/* The CRC32C (Castagnoli) of a byte run, continuing from `crc` (0 to start). */
uint32_t herd_journal_crc32c(uint32_t crc, const void *data, size_t len);

/* For tests and benchmarks, which wait on the writer without a node:
 * herd_journal_compact asks the writer to compact as soon as it may (not
 * while a compaction is under way or a failed one's pause runs, nor while
 * a damaged snapshot waits to be set aside); herd_journal_seq, _done and _failed are the
 * sequence numbers of the last record appended, of the last one on disk as
 * the mode promises (every one before it too, or given up), and of the
 * last one whose write failed (not on disk, retried); herd_journal_held
 * is the number of AT replies held for the disk. */
void herd_journal_compact(herd_journal_t *j);
uint64_t herd_journal_seq(const herd_journal_t *j);
uint64_t herd_journal_done(const herd_journal_t *j);
uint64_t herd_journal_failed(const herd_journal_t *j);
size_t herd_journal_held(const herd_journal_t *j);

#endif
