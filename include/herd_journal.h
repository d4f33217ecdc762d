/* herd_journal: the table kept on disk (PROTOCOL.md section 9, state_dir).
 *
 * An append-only journal of every stored AT line (and a DROP record for a
 * client the table dropped by its limits), written by a thread of its own,
 * and compacted now and then into a snapshot of the live records. The node
 * appends to an in-memory batch during its turn and hands the batch over
 * once per turn (herd_journal_commit): one write, and with fsync "always"
 * one fsync, covers every update of the turn (group commit). The node never
 * waits on the disk: with "always" it parks each AT reply (herd_journal_hold)
 * until the writer reports that the reply's record is on disk; a record
 * whose write or fsync failed turns its reply into "?" (PROTOCOL §9), as
 * does a disk that does not answer within a deadline. Records that could
 * not be written are retried; if they must be given up, the node writes its
 * whole table to the journal again once writes succeed, and is durable
 * again once that is on disk.
 *
 * Files in the folder: `snapshot` (the live records up to some journal
 * generation), `journal.N` (records appended since, one file per
 * generation), `LOCK` (one server per folder). Every record is framed with
 * its length and a CRC32C, so a torn tail is cut and a damaged record is
 * skipped on load; headers carry a CRC, and a snapshot ends with the CRC of
 * all of it, so a start acts on nothing a checksum does not vouch for.
 * Files that are not ours or fail their checks are set aside as
 * NAME.bad-TIME (kept, logged), never deleted; a damaged snapshot whose
 * good records were loaded only once the whole table is on disk in the
 * journal (until then a start must still find it). Replay at start is
 * idempotent: each AT line is re-offered to the table, whose ranking keeps
 * the winner whatever the order or repetitions. Compaction needs no
 * ranking: the journals hold the table's changes in the order it made
 * them, so the last frame of each client id wins (herd_journal_int.h).
 *
 * Threads: the writer, and the compactor it starts, are zactors (the start
 * handshake, "$TERM" to stop; herd_journal_writer.c). One message style
 * each way: the node hands the writer pointers to owned batches (the
 * writer frees them), the writer answers with fixed-size cumulative
 * reports (herd_journal_recv reads them on the node's loop).
 *
 * Why a journal and not LMDB (bench/state_lmdb.c; figures in the README):
 * a turn costs LMDB a B-tree write transaction and, synced, two fsyncs
 * (pages, then the meta page) against the journal's one write and one
 * fdatasync; LMDB would still have to be read into the node's own table at
 * start, and its smaller size per live record only counts where clients
 * update often, which compaction bounds (about twice the table plus the
 * minimum, compact_min_bytes).
 * Append-only suits a record whose replay is idempotent. */
#ifndef HERD_JOURNAL_H
#define HERD_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "herd_types.h"
#include "herd_journal_rec.h"
#include "herd_log.h"
#include "herd_loop.h"
#include "herd_table.h"
#include "herd_time.h"
#include "herd_topology.h"

typedef struct herd_journal_t herd_journal_t;

/* Called for each record loaded, in the order they were appended. */
typedef void(herd_journal_load_fn)(void *arg, const herd_journal_rec_t *rec);

/* Answers a held reply: `ok` true when its record is on disk (the AT reply
 * may go out), false when it is not ("?"). data/len: the bytes held. */
typedef void(herd_journal_release_fn)(void *arg, herd_ticket_t ticket, const char *data, size_t len, bool ok);

typedef struct {
    const char *dir;              /* the server's own folder, state_dir/NAME (made if missing) */
    herd_fsync_t fsync;           /* when a record is on disk (PROTOCOL §9) */
    uint64_t compact_min_bytes;   /* no compaction before the journals since the snapshot hold
                                     this many bytes; 0 = default (64 MiB) */
    uint64_t backlog_max_bytes;   /* unwritten bytes kept for a retry while writes fail; past
                                     it they are given up and the whole table is written
                                     again later; 0 = default (64 MiB) */
    herd_journal_load_fn *load;   /* receives what is on disk, before open returns */
    herd_loop_t *loop;            /* the node's loop: without "always", turns are gathered
                                     into hand-overs at most 10 ms apart (a timer there);
                                     with "always", held replies' deadlines are checked
                                     there; NULL = hand over at every commit */
    herd_journal_release_fn *release; /* answers held replies outside herd_journal_recv
                                     (end of turn, deadlines); may be NULL */
    void *arg;                    /* context of load and release */
} herd_journal_conf_t;

/* Opens (making it if missing) the state folder, loads the snapshot and
 * replays the journals through conf->load, cuts a torn tail, skips damaged
 * records (each logged), then starts the writer thread. Returns NULL and
 * fills err with one line when the folder cannot be made, locked, read or
 * written. */
herd_journal_t *herd_journal_open(const herd_journal_conf_t *conf, herd_log_t *log, char *err, size_t errlen);

/* Hands over what is pending, lets the writer write and fsync it, stops the
 * writer (waiting for a compaction under way to finish or abandon), frees
 * everything; *p = NULL. Replies still held are dropped. NULL-safe. */
void herd_journal_destroy(herd_journal_t **p);

/* Appends a stored AT line (its whole text, no newline) to this turn's
 * batch. Returns the record's sequence number. */
uint64_t herd_journal_append(herd_journal_t *j, const char *at, size_t at_len);

/* Appends a DROP record: the client's record was dropped by the table's
 * limits and must not come back from disk. Returns its sequence number. */
uint64_t herd_journal_drop(herd_journal_t *j, const char *id, size_t id_len);

/* End of the node's turn: hands the batch to the writer (never blocks; if
 * the writer's queue is full the batch keeps growing and goes next turn).
 * With "always" every turn's batch goes at once; otherwise once it is 10 ms
 * old or 256 KiB large. `live` is the table's size, which the writer
 * compares with the journal's length to decide when to compact (and which
 * sizes the compactor's index). */
void herd_journal_commit(herd_journal_t *j, size_t live);

/* The writer's socket: register it on the node's loop and call
 * herd_journal_recv when it may have input. */
void *herd_journal_sock(herd_journal_t *j);

/* Reads the writer's reports (logging what they say) and answers the held
 * replies whose fate is known: release(arg, ticket, held bytes, ok) with ok
 * true once every record appended before the hold is on disk, false once
 * one of them failed, was given up, or the disk passed its deadline
 * (NULL release: conf's). Returns the number of reports read. */
int herd_journal_recv(herd_journal_t *j, herd_journal_release_fn *release, void *arg);

/* With fsync "always": keeps `reply` (copied) for `ticket` until every
 * record appended so far is on disk (then released ok) or known not to be
 * (released not ok, at the latest at the end of the turn when the state
 * cannot be written now, or HOLD_DEADLINE_MS on a hung disk), and returns
 * true. Without the memory to keep it, it is answered "?" at once through
 * conf's release (true), or false without one. Returns false when the AT
 * reply may be written at once (another mode, or nothing pending and
 * nothing lost): the caller answers it itself. */
bool herd_journal_hold(herd_journal_t *j, herd_ticket_t ticket, const char *reply, size_t len);

/* With fsync "always", whether an update cannot be acknowledged now
 * (writes fail, records given up and not yet made good, or the disk hung):
 * an IAMAT that would change the table is then answered "?" and not
 * stored (PROTOCOL §9). False in the other modes. */
bool herd_journal_refusing(const herd_journal_t *j);

/* Why the state is (not) durable, one line for /healthz and the log. */
void herd_journal_why(const herd_journal_t *j, char *buf, size_t cap);

/* Whether the journal needs the whole table again (records were given up,
 * or the snapshot failed its checks at start) and writes succeed now; then
 * the node calls herd_journal_put_table before the commit. */
bool herd_journal_wants_table(const herd_journal_t *j);

/* Appends every record of `t` to this turn's batch, marked as making good
 * what was lost before; durable again once it is on disk. A snapshot that
 * failed its checks at start is set aside once this batch is written and
 * fsynced (whatever the fsync mode), not before. */
void herd_journal_put_table(herd_journal_t *j, const herd_table_t *t);

/* False while what the table holds is not all on disk as the mode
 * promises: writes failing (until a retry succeeds), records given up
 * (until the whole table is on disk again), or the disk hung. */
bool herd_journal_durable(const herd_journal_t *j);

/* Writes the herd_state_* metrics (Prometheus text). */
void herd_journal_render(const herd_journal_t *j, FILE *f);

#endif
