/* herd_journal_writer: the thread that writes the journal, and the one it
 * starts to compact it. See herd_journal_int.h.
 *
 * The writer takes the node's batches in order, copies them into one
 * pending buffer and writes that buffer with one write(2); with "always" it
 * drains every batch already queued before the write, so one fsync covers
 * them all (group commit). With "everysec" it fsyncs at most once a second,
 * when something was written since the last one; with "never", only when it
 * stops. Nothing is reported done that is not: a failed write, or with
 * "always" a failed fsync, leaves the bytes pending (what reached the file
 * is cut off it, since the kernel may have dropped the pages a failed fsync
 * covered), reports their records failed (the node answers their held
 * replies "?") and retries every RETRY_MS; batches that come meanwhile are
 * failed at once and wait for the retry with the rest. Past backlog_max
 * the bytes are given up: a loss (loss_epoch), which the node makes good
 * by handing over its whole table once writes succeed again (a batch that
 * `heals` it). A failed fsync under "everysec" or "never" covers bytes no
 * longer pending: a loss too, made good the same way.
 *
 * Compaction (Redis's AOF rewrite, done Bitcask's way: from the files, not
 * from the live table): the writer closes journal.G, opens journal.G+1 for
 * what comes next, and starts a compactor thread that reads the snapshot
 * and the journals after it up to G with the last frame of each client id
 * winning, writes the new snapshot aside, fsyncs and renames it, and
 * removes those journals. The node never pauses for it; it costs the
 * compactor an index of a few tens of bytes per client while it runs.
 *
 * The threads are named ("herd-journal", "herd-compact") so that top and
 * perf show what each costs. */
#define _GNU_SOURCE
#include "herd_journal_int.h"
#include "herd_thread.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define RETRY_MS 500              /* between retries of a failed write */
/* A compaction that failed (or could not start) is tried again after a
 * pause, doubled at each failure in a row up to the longest: the journals it
 * would have folded in are still counted, so it need not wait for another
 * compact_min of appends, and a cause that lasts (a full file system, a
 * snapshot it cannot vouch for) costs a log line and a try a pause, not one
 * at every wake of the writer. */
#define COMPACT_RETRY_MS 2000
#define COMPACT_RETRY_MAX_MS 64000
#define REPORT_MS 100             /* least time between reports, except with "always" */
/* With "always" the journal is written ahead with zeros in chunks of this
 * size: an fdatasync after writing into space that is already allocated and
 * inside the file's size has no metadata to commit (no new size, no extent
 * to convert), which measured half the latency of one after an append on
 * ext4 -- and the group commit's latency is the reply's. The reader takes a
 * tail of zeros for what it is. It is only an optimisation: it is not tried
 * when the file system has less than PREALLOC_ROOM free, a failure gives
 * the zeros' space back at once, and either way records are appended
 * without it and it is not tried again for PREALLOC_PAUSE_MS. */
#define PREALLOC_BYTES (4u << 20)
#define PREALLOC_ROOM (4ull * PREALLOC_BYTES)
#define PREALLOC_PAUSE_MS 10000

/* A compaction under way. */
typedef struct {
    int dirfd;             /* the state folder (the writer's descriptor) */
    uint64_t upto;         /* the last journal generation it folds in */
    size_t expect;         /* the table's size, to size the index */
    uint64_t since_bytes;  /* the report's since_bytes and journal_records when it began: */
    uint64_t since_records; /* counted again if it fails, the journals being kept */
    int rc;                /* result: 0, -1 or 1 (abandoned) */
    uint64_t records;      /* records in the new snapshot */
    uint64_t bytes;        /* its size */
    double secs;           /* how long it took */
    char err[256];         /* why it failed */
} job_t;

typedef struct {
    hj_writer_conf_t c;    /* files, mode and the report */
    void *pipe;            /* to the node */
    char *pend;            /* bytes not yet written */
    size_t pend_len, pend_cap;
    uint64_t pend_seq;     /* last sequence number in pend */
    uint64_t pend_heals;   /* the loss a batch in pend makes good, or 0 */
    bool pend_table;       /* pend holds the node's whole table (hj_batch_t.table) */
    bool aside_due;        /* the whole table is on disk: the damaged snapshot
                              (c.aside_snapshot) is to be renamed, retried after a failure */
    int64_t aside_try_ms;  /* last failed try of that rename */
    uint64_t live;         /* the table's size, from the last batch */
    uint64_t alloc;        /* bytes in the journal file: data, then preallocated zeros */
    bool dirty;            /* written since the last fsync */
    bool failing;          /* the last write failed; retrying */
    int64_t last_fsync_ms; /* monotonic */
    int64_t last_try_ms;   /* last failed write */
    int64_t prealloc_after_ms; /* no preallocation before this (monotonic) */
    int64_t last_report_ms;
    bool report_due;       /* the report changed since it was last sent */
    bool compact_asked;    /* the node asked for a compaction */
    int64_t compact_after_ms; /* no compaction before this (after a failure; monotonic) */
    int compact_pause_ms;  /* the pause after the last failure, 0 after a success */
    uint64_t failed_upto;  /* the last generation a failed compaction was to fold in, or 0 */
    zactor_t *compactor;   /* the compaction under way, or NULL */
    job_t *job;            /* its work */
} writer_t;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Adds a line to the next report's text. */
static void say(writer_t *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(writer_t *w, const char *fmt, ...)
{
    char *t = w->c.rep.text;
    size_t used = strlen(t), cap = sizeof w->c.rep.text;
    if (used && used + 2 < cap) {
        memcpy(t + used, "; ", 3);
        used += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    if (used < cap)
        vsnprintf(t + used, cap - used, fmt, ap);
    va_end(ap);
    w->report_due = true;
}

static void send_report(writer_t *w, bool force)
{
    if (!w->report_due)
        return;
    int64_t now = now_ms();
    if (!force && !w->c.rep.text[0] && now - w->last_report_ms < REPORT_MS)
        return;
    w->c.rep.failing = w->failing;
    w->c.rep.durable = !w->failing && w->c.rep.loss_epoch == w->c.rep.healed_epoch;
    if (w->c.rep.durable)
        w->c.rep.why[0] = '\0';
    w->c.rep.backlog_bytes = w->pend_len;
    /* A node that does not read (its queue full) is tried again later,
     * not in a busy loop. */
    w->last_report_ms = now;
    if (zmq_send(w->pipe, &w->c.rep, sizeof w->c.rep, ZMQ_DONTWAIT) == (int)sizeof w->c.rep) {
        w->c.rep.text[0] = '\0';
        w->report_due = false;
    }
}

/* Whether records were given up and not yet made good. */
static bool lost(const writer_t *w)
{
    return w->c.rep.loss_epoch != w->c.rep.healed_epoch;
}

/* Records the reason the state is not durable, for /healthz. */
static void why(writer_t *w, const char *what, int err)
{
    snprintf(w->c.rep.why, sizeof w->c.rep.why, "%s journal.%llu: %s", what, (unsigned long long)w->c.gen,
             strerror(err));
}

/* Records that bytes which will never reach the disk were given up. */
static void give_up(writer_t *w)
{
    w->c.rep.loss_epoch++;
    w->report_due = true;
}

/* fsync of what "everysec" and "never" wrote earlier (with "always" flush
 * fsyncs each write itself). A failure cannot be retried: the written
 * bytes are no longer pending and the kernel may have dropped them.
 * Returns 0, or -1 when the fsync failed (a loss). */
static int do_fsync(writer_t *w)
{
    if (!w->dirty)
        return 0;
    w->dirty = false;
    w->last_fsync_ms = now_ms();
    w->c.rep.fsyncs++;
    if (fdatasync(w->c.fd) != 0) {
        int e = errno;
        w->c.rep.write_errors++;
        why(w, "cannot fsync", e);
        say(w, "cannot fsync journal.%llu: %s; serving from memory, the whole table is written again once "
               "writes succeed", (unsigned long long)w->c.gen, strerror(e));
        give_up(w);
        w->report_due = true;
        return -1;
    }
    w->report_due = true;
    return 0;
}

/* "always": makes the file reach past end with zeros, in whole chunks, when
 * there is room; a failure gives the space back and pauses it. Never a
 * condition for writing a record. */
static void preallocate(writer_t *w, uint64_t end)
{
    static const char zeros[65536];
    if (w->c.mode != HERD_FSYNC_ALWAYS || end <= w->alloc || now_ms() < w->prealloc_after_ms)
        return;
    struct statvfs vs;
    if (fstatvfs(w->c.fd, &vs) != 0 || (uint64_t)vs.f_bavail * vs.f_frsize < PREALLOC_ROOM) {
        w->prealloc_after_ms = now_ms() + PREALLOC_PAUSE_MS;
        return;
    }
    uint64_t from = w->alloc > w->c.rep.journal_bytes ? w->alloc : w->c.rep.journal_bytes;
    uint64_t to = (end + PREALLOC_BYTES) & ~(uint64_t)4095;
    while (from < to) {
        size_t n = to - from < sizeof zeros ? (size_t)(to - from) : sizeof zeros;
        if (hj_pwrite_all(w->c.fd, zeros, n, from) != 0) {
            uint64_t keep = w->alloc > w->c.rep.journal_bytes ? w->alloc : w->c.rep.journal_bytes;
            (void)!ftruncate(w->c.fd, (off_t)keep);
            w->prealloc_after_ms = now_ms() + PREALLOC_PAUSE_MS;
            return;
        }
        from += n;
    }
    w->alloc = to;
}

/* A write or fsync of what is pending failed: the file is cut back to its
 * whole records, the records are reported failed (not done) and kept for
 * the retry; past backlog_max they are given up. */
static void write_failed(writer_t *w, uint64_t off, const char *what, int e)
{
    w->c.rep.write_errors++;
    w->last_try_ms = now_ms();
    /* Cut what a short write left (or what a failed fsync may not have
     * kept), so the retry starts whole; preallocated zeros go too, giving
     * their space to the records. If the cut fails the bytes beyond are
     * overwritten by the retry or cut as a torn tail at the next start. */
    (void)!ftruncate(w->c.fd, (off_t)off);
    w->alloc = off;
    why(w, what, e);
    if (!w->failing)
        say(w, "%s journal.%llu: %s; %s, retrying", what, (unsigned long long)w->c.gen, strerror(e),
            w->c.mode == HERD_FSYNC_ALWAYS ? "updates are answered \"?\" until it succeeds"
                                           : "serving from memory");
    w->failing = true;
    w->c.rep.failed_seq = w->pend_seq;
    if (w->pend_len > w->c.backlog_max) {
        say(w, "gave up %zu unwritten journal bytes; the whole table is written again once writes succeed",
            w->pend_len);
        w->pend_len = 0;
        w->pend_heals = 0;
        w->pend_table = false;
        give_up(w);
    }
}

/* Renames the damaged snapshot aside (the whole table is on disk). A
 * snapshot already gone counts as done; another failure is retried every
 * RETRY_MS, the snapshot staying where a start loads it meanwhile. */
static void try_aside(writer_t *w)
{
    char aside[96];
    if (hj_set_aside(w->c.dirfd, HJ_SNAPSHOT, aside, sizeof aside) == 0) {
        w->c.rep.set_aside++;
        say(w, "%s/%s %s: set aside as %s now that the whole table is on disk in journal.%llu (kept, not "
               "loaded as state)", w->c.dir, HJ_SNAPSHOT, w->c.aside_why, aside, (unsigned long long)w->c.gen);
    } else if (errno != ENOENT) {
        int e = errno;
        if (!w->aside_due) {
            w->c.rep.write_errors++;
            say(w, "cannot set aside %s/%s (%s): %s; it stays and is loaded at the next start, retrying",
                w->c.dir, HJ_SNAPSHOT, w->c.aside_why, strerror(e));
        }
        w->aside_due = true;
        w->aside_try_ms = now_ms();
        return;
    }
    w->c.aside_snapshot = false;
    w->aside_due = false;
}

/* The node's whole table is written: a damaged snapshot kept since the
 * start holds nothing the journal does not, once that is fsynced (the
 * rename makes the snapshot's copy unreadable to a start, so the journal's
 * must be on disk first, whatever the mode). A failed fsync is a loss: the
 * node writes the table again and this is tried after it. */
static void table_on_disk(writer_t *w)
{
    if (!w->c.aside_snapshot)
        return;
    if (do_fsync(w) != 0)
        return;
    try_aside(w);
}

/* Writes what is pending; with "always", fsyncs it too. Records are
 * reported done only once they are written (and with "always" fsynced);
 * otherwise failed and kept for a retry. */
static void flush(writer_t *w)
{
    if (w->pend_len == 0) {
        /* An empty table's batch: every record before it is written or
         * given up, which is all it says. */
        if (w->pend_table || w->pend_heals) {
            if (w->pend_seq > w->c.rep.done_seq)
                w->c.rep.done_seq = w->pend_seq;
            if (w->pend_heals > w->c.rep.healed_epoch)
                w->c.rep.healed_epoch = w->pend_heals;
            w->pend_heals = 0;
            w->report_due = true;
        }
        if (w->pend_table) {
            w->pend_table = false;
            table_on_disk(w);
        }
        return;
    }
    uint64_t off = w->c.rep.journal_bytes, end = off + w->pend_len;
    preallocate(w, end);
    if (hj_pwrite_all(w->c.fd, w->pend, w->pend_len, off) != 0) {
        write_failed(w, off, "cannot write", errno);
        w->report_due = true;
        return;
    }
    if (end > w->alloc)
        w->alloc = end;
    if (w->c.mode == HERD_FSYNC_ALWAYS) {
        w->c.rep.fsyncs++;
        if (fdatasync(w->c.fd) != 0) {
            write_failed(w, off, "cannot fsync", errno);
            w->report_due = true;
            return;
        }
        w->last_fsync_ms = now_ms();
    } else {
        w->dirty = true;
    }
    w->c.rep.bytes_written += w->pend_len;
    w->c.rep.journal_bytes = end;
    w->pend_len = 0;
    w->c.rep.done_seq = w->pend_seq;
    if (w->pend_heals > w->c.rep.healed_epoch)
        w->c.rep.healed_epoch = w->pend_heals;
    w->pend_heals = 0;
    if (w->failing) {
        w->failing = false;
        say(w, "journal.%llu is written again%s", (unsigned long long)w->c.gen,
            lost(w) ? " (records were given up: the whole table is written again)" : "");
    }
    w->report_due = true;
    if (w->pend_table) {
        w->pend_table = false;
        table_on_disk(w);
    }
}

static int take_batch(writer_t *w, hj_batch_t *b)
{
    if (w->pend_len + b->len > w->pend_cap) {
        size_t cap = w->pend_cap ? w->pend_cap : 65536;
        while (cap < w->pend_len + b->len)
            cap *= 2;
        char *p = realloc(w->pend, cap);
        if (!p) {
            w->c.rep.write_errors++;
            say(w, "out of memory in the journal writer: a batch was given up; the whole table is written "
                   "again");
            snprintf(w->c.rep.why, sizeof w->c.rep.why, "out of memory in the journal writer");
            w->pend_seq = b->last_seq;
            w->c.rep.failed_seq = b->last_seq;
            give_up(w);
            free(b);
            return -1;
        }
        w->pend = p;
        w->pend_cap = cap;
    }
    if (b->len) /* an empty table's batch may come before any buffer */
        memcpy(w->pend + w->pend_len, b->data, b->len);
    w->pend_len += b->len;
    w->pend_seq = b->last_seq;
    if (b->heals > w->pend_heals)
        w->pend_heals = b->heals;
    if (b->table)
        w->pend_table = true;
    w->live = b->live;
    free(b);
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Compaction */

static void compactor_actor(zsock_t *pipe, void *args)
{
    job_t *job = args;
    prctl(PR_SET_NAME, "herd-compact", 0, 0, 0);
    herd_thread_background();
    zsock_signal(pipe, 0);
    int64_t t0 = now_ms();
    job->rc = hj_compact(job->dirfd, job->upto, job->expect, zsock_resolve(pipe), &job->records, &job->bytes,
                         job->err, sizeof job->err);
    job->secs = (double)(now_ms() - t0) / 1000.0;
    if (job->rc == 1)
        return; /* abandoned: a "$TERM" is waiting, which zactor's own end answers */
    zstr_send(pipe, "DONE");
    char *s;
    while ((s = zstr_recv(pipe)) != NULL) {
        bool term = !strcmp(s, "$TERM");
        zstr_free(&s);
        if (term)
            break;
    }
}

/* A compaction failed or could not start: the journals it would have
 * folded in are kept, and so is their count (it is tried again after the
 * pause, not after another compact_min of appends). */
static void compaction_put_off(writer_t *w, const job_t *job)
{
    if (job) {
        w->c.rep.since_bytes += job->since_bytes;
        w->c.rep.journal_records += job->since_records;
        w->failed_upto = job->upto;
    }
    w->compact_pause_ms = w->compact_pause_ms ? 2 * w->compact_pause_ms : COMPACT_RETRY_MS;
    if (w->compact_pause_ms > COMPACT_RETRY_MAX_MS)
        w->compact_pause_ms = COMPACT_RETRY_MAX_MS;
    w->compact_after_ms = now_ms() + w->compact_pause_ms;
}

/* Starts a new journal generation and a compaction of the ones before. A
 * retry after a failure starts no new generation while the current one
 * holds no record, so a cause that lasts does not pile up empty journals. */
static void start_compaction(writer_t *w)
{
    flush(w);
    if (w->failing || lost(w))
        return;
    uint64_t upto;
    if (w->failed_upto && w->failed_upto + 1 == w->c.gen && w->c.rep.journal_bytes <= HJ_HEADER) {
        upto = w->failed_upto;
    } else {
        char name[40];
        uint64_t next = w->c.gen + 1;
        snprintf(name, sizeof name, "journal.%llu", (unsigned long long)next);
        int fd = openat(w->c.dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        char head[HJ_HEADER];
        hj_header(head, HJ_MAGIC_JOURNAL, next);
        if (fd < 0 || hj_write_all(fd, head, sizeof head) != 0 || fsync(fd) != 0 || fsync(w->c.dirfd) != 0) {
            int e = errno;
            if (fd >= 0) {
                close(fd);
                unlinkat(w->c.dirfd, name, 0);
            }
            compaction_put_off(w, NULL);
            w->c.rep.write_errors++;
            say(w, "cannot start %s: %s; compaction put off for %d s", name, strerror(e),
                w->compact_pause_ms / 1000);
            return;
        }
        /* The old journal is fsynced with the rest when the mode asks for it;
         * its records reach the snapshot through the page cache either way. */
        if (w->c.mode != HERD_FSYNC_NEVER)
            do_fsync(w);
        close(w->c.fd);
        w->c.fd = fd;
        w->dirty = false;
        upto = w->c.gen;
        w->c.gen = next;
        w->c.rep.journal_bytes = HJ_HEADER;
        w->alloc = HJ_HEADER;
    }
    job_t start = {.dirfd = w->c.dirfd,
                   .upto = upto,
                   .expect = (size_t)w->live,
                   .since_bytes = w->c.rep.since_bytes,
                   .since_records = w->c.rep.journal_records};
    w->c.rep.journal_records = 0;
    w->c.rep.since_bytes = 0;
    w->job = malloc(sizeof *w->job);
    if (w->job) {
        *w->job = start;
        w->compactor = zactor_new(compactor_actor, w->job);
    }
    if (!w->compactor) {
        free(w->job);
        w->job = NULL;
        compaction_put_off(w, &start);
        w->c.rep.write_errors++;
        say(w, "cannot start the compaction thread; put off for %d s", w->compact_pause_ms / 1000);
    }
}

static void finish_compaction(writer_t *w)
{
    char *s = zstr_recv(w->compactor);
    zstr_free(&s);
    zactor_destroy(&w->compactor);
    job_t *job = w->job;
    w->job = NULL;
    if (job->rc == 0) {
        w->c.snap_gen = job->upto;
        w->c.rep.compactions++;
        w->c.rep.snapshot_bytes = job->bytes;
        w->c.rep.snapshot_records = job->records;
        w->c.rep.last_compaction_s = job->secs;
        w->failed_upto = 0;
        w->compact_pause_ms = 0;
        say(w, "compacted: snapshot of %llu records (%llu bytes) up to journal.%llu in %.3f s",
            (unsigned long long)job->records, (unsigned long long)job->bytes, (unsigned long long)job->upto,
            job->secs);
    } else {
        compaction_put_off(w, job);
        w->c.rep.write_errors++;
        say(w, "%s; the journals are kept, compaction tried again in %d s", job->err, w->compact_pause_ms / 1000);
    }
    free(job);
}

/* Whether a compaction is called for, whatever the time (see
 * want_compaction). Never while a damaged snapshot waits to be set aside:
 * the compactor would refuse it, and its records may be only there. */
static bool compaction_due(const writer_t *w)
{
    if (w->compactor || w->failing || lost(w) || w->c.aside_snapshot)
        return false;
    if (w->compact_asked)
        return true;
    /* Redis's AOF rewrite rule with its defaults (auto-aof-rewrite-min-size
     * 64mb, auto-aof-rewrite-percentage 100): at least compact_min bytes
     * appended since the snapshot, and more records than the table holds
     * (the stand-in for 100 % growth: the snapshot and the journals then
     * hold more stale records than the snapshot has records, and a journal
     * of clients that are all new is not compacted for nothing). A start
     * then reads at most about twice the table plus the minimum. Below the
     * minimum a compaction costs a read of the whole snapshot for a few
     * stale records: compacting at every table's worth of updates made the
     * compactor a large share of a busy herd's CPU. */
    return w->c.rep.since_bytes >= w->c.compact_min && w->c.rep.journal_records > w->live;
}

/* Whether to start a compaction now: one is due and no failure's pause
 * runs. */
static bool want_compaction(const writer_t *w, int64_t now)
{
    return now >= w->compact_after_ms && compaction_due(w);
}

/* ---------------------------------------------------------------------- */
/* The thread */

/* Reads every message queued from the node. Returns true on "$TERM". */
static bool drain(writer_t *w)
{
    for (;;) {
        char msg[16];
        int n = zmq_recv(w->pipe, msg, sizeof msg, ZMQ_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == ETERM;
        }
        if (n == 1 + (int)sizeof(hj_batch_t *) && msg[0] == 'B') {
            hj_batch_t *b;
            memcpy(&b, msg + 1, sizeof b);
            /* The node laid the frames out; their CRCs are written here
             * (and they are counted, for the compaction rule). */
            uint64_t frames = hj_seal_frames(b->data, b->len), len = b->len;
            if (take_batch(w, b) == 0) {
                w->c.rep.journal_records += frames;
                w->c.rep.since_bytes += len;
            }
        } else if (n == 1 && msg[0] == 'C') {
            w->compact_asked = true;
        } else if (n == 5 && !memcmp(msg, "$TERM", 5)) {
            return true;
        }
    }
}

void *hj_writer_new(const hj_writer_conf_t *conf)
{
    writer_t *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->c = *conf;
    w->last_fsync_ms = w->last_report_ms = now_ms();
    w->alloc = w->c.rep.journal_bytes; /* loading cut any tail */
    return w;
}

void hj_writer_free(void *arg)
{
    writer_t *w = arg;
    close(w->c.fd);
    close(w->c.dirfd);
    free(w->c.dir);
    free(w->pend);
    free(w);
}

void hj_writer_actor(zsock_t *pipe, void *args)
{
    writer_t *w = args;
    prctl(PR_SET_NAME, "herd-journal", 0, 0, 0);
    w->pipe = zsock_resolve(pipe);
    zsock_signal(pipe, 0);

    bool term = false;
    while (!term) {
        long timeout = -1;
        int64_t now = now_ms();
        if (w->dirty && w->c.mode == HERD_FSYNC_EVERYSEC)
            timeout = w->last_fsync_ms + 1000 - now;
        if (w->failing) {
            long t = (long)(w->last_try_ms + RETRY_MS - now);
            timeout = timeout < 0 || t < timeout ? t : timeout;
        }
        if (w->report_due) {
            long t = (long)(w->last_report_ms + REPORT_MS - now);
            timeout = timeout < 0 || t < timeout ? t : timeout;
        }
        if (w->aside_due) {
            long t = (long)(w->aside_try_ms + RETRY_MS - now);
            timeout = timeout < 0 || t < timeout ? t : timeout;
        }
        if (w->compact_after_ms > now && compaction_due(w)) {
            long t = (long)(w->compact_after_ms - now);
            timeout = timeout < 0 || t < timeout ? t : timeout;
        }
        if (timeout < -1)
            timeout = 0;
        zmq_pollitem_t items[2] = {{w->pipe, 0, ZMQ_POLLIN, 0}, {NULL, 0, ZMQ_POLLIN, 0}};
        int n_items = 1;
        if (w->compactor) {
            items[1].socket = zsock_resolve(zactor_sock(w->compactor));
            n_items = 2;
        }
        if (zmq_poll(items, n_items, timeout) < 0 && errno == ETERM)
            break;
        term = drain(w);
        now = now_ms();
        if (w->failing && !w->pend_len && now - w->last_try_ms >= RETRY_MS) {
            /* Given up, nothing left to retry: the node's whole table is
             * the next attempt (it hands it over once it sees a loss and
             * no failure), once a retry period, so a disk that stays full
             * costs one try a period, not a busy loop. */
            w->failing = false;
            w->report_due = true;
        }
        if (!w->failing || now - w->last_try_ms >= RETRY_MS)
            flush(w);
        else if (w->pend_len && w->c.rep.failed_seq != w->pend_seq) {
            /* Waiting to retry: these records are not on disk, and their
             * held replies must not wait for the retry. */
            w->c.rep.failed_seq = w->pend_seq;
            w->report_due = true;
        }
        if (w->dirty && w->c.mode == HERD_FSYNC_EVERYSEC && now - w->last_fsync_ms >= 1000)
            do_fsync(w);
        if (w->aside_due && now - w->aside_try_ms >= RETRY_MS)
            try_aside(w);
        if (n_items == 2 && (items[1].revents & ZMQ_POLLIN))
            finish_compaction(w);
        if (!term && want_compaction(w, now_ms())) {
            w->compact_asked = false;
            start_compaction(w);
        }
        send_report(w, w->c.mode == HERD_FSYNC_ALWAYS);
    }
    /* Stopping: everything taken is written and fsynced, in every mode. */
    flush(w);
    do_fsync(w);
    /* A clean stop leaves the file exactly its records long. */
    if (w->alloc > w->c.rep.journal_bytes && !w->failing)
        (void)!ftruncate(w->c.fd, (off_t)w->c.rep.journal_bytes);
    if (w->compactor) {
        zactor_destroy(&w->compactor); /* abandons it, or waits for its end */
        free(w->job);
    }
    hj_writer_free(w);
}
