/* herd_journal: the node's side of the durable state: loading at start,
 * this turn's batch, the hand-over, the held replies. See herd_journal.h. */
#define _GNU_SOURCE
#include "herd_journal.h"
#include "herd_fs.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "herd_journal_int.h"
#include "herd_loop.h"

#define BATCH_INITIAL 16384 /* bytes: a turn of a few hundred updates fits without a realloc */
/* Without "always" nobody waits for the disk, so turns are gathered into
 * fewer, larger hand-overs (one wake-up of the writer, one write): at most
 * this old or this large. Small beside everysec's second. */
#define HANDOVER_MS    10
#define HANDOVER_BYTES (256u * 1024u)
/* With "always", a held reply whose record has not been reported written
 * or failed this long after the hold is answered "?": the disk is hung
 * (a write or fsync that does not return), and a client is not kept
 * waiting on it for ever. Like a WHATSAT's Places deadline. */
#define HOLD_DEADLINE_MS 5000
#define SWEEP_MS 250 /* how often held replies are checked against it */

/* An AT reply waiting for its record to reach the disk. */
typedef struct held_t {
    struct held_t *next;  /* the next one (sequence numbers only grow) */
    uint64_t seq;         /* answer once the writer is done with this record */
    int64_t since_ms;     /* when it was held (monotonic) */
    herd_ticket_t ticket; /* the line it answers */
    size_t len;           /* bytes of the reply */
    char data[];          /* the reply */
} held_t;

struct herd_journal_t {
    herd_log_t *log;        /* the server's log (node thread only) */
    herd_fsync_t mode;      /* the fsync setting */
    zactor_t *writer;       /* the writer thread */
    void *sock;             /* its pipe, raw */
    hj_batch_t *batch;      /* this turn's records, or NULL */
    int64_t batch_ms;       /* when the batch got its first record (monotonic ms) */
    herd_loop_t *loop;      /* the node's loop, for the hand-over timer, or NULL */
    int timer;              /* that timer's id, or 0 */
    int sweep_timer;        /* "always": the held replies' deadline, or 0 */
    herd_journal_release_fn *release; /* answers held replies (conf) */
    void *release_arg;
    uint64_t seq;           /* last sequence number given */
    size_t live;            /* the table's size at the last commit */
    hj_report_t rep;        /* the writer's last report */
    held_t *held, **held_tail; /* replies waiting for the disk, oldest first */
    size_t n_held;
    uint64_t loaded;        /* records loaded at start */
    uint64_t damaged;       /* frames skipped at start */
    uint64_t torn;          /* bytes cut at start */
    double load_s;          /* how long loading took */
    bool lost;              /* a record could not even be queued (no memory): not durable */
    bool need_table;        /* the whole table must reach the journal again (a loss here,
                               or a snapshot set aside at start) */
    uint64_t healing;       /* the writer's loss epoch a whole-table batch was made for */
    bool hung;              /* a held reply passed HOLD_DEADLINE_MS with no word from the writer */
    uint64_t refused;       /* held replies answered "?" */
    uint64_t hangs;         /* times the disk was found hung */
    uint64_t set_aside;     /* files set aside at start */
    uint64_t table_writes;  /* whole-table batches made to make a loss good */
    int lock_fd;            /* holds the folder's LOCK */
};


/* What loading passes around. */
typedef struct {
    const herd_journal_conf_t *conf;
    uint64_t records; /* records handed to the node */
    uint64_t unreadable; /* good frames whose AT line did not parse */
} load_t;

static void load_frame(void *arg, char kind, const char *data, size_t len)
{
    load_t *l = arg;
    herd_journal_rec_t rec;
    if (kind == 'A') {
        if (hj_parse_at(data, len, &rec) != 0) {
            l->unreadable++;
            return;
        }
    } else {
        memset(&rec, 0, sizeof rec);
        rec.kind = 'D';
        rec.id = data;
        rec.id_len = len;
    }
    l->records++;
    l->conf->load(l->conf->arg, &rec);
}

/* Logs what one file scan found wrong. */
static void log_damage(herd_journal_t *j, const char *dir, const char *name, const hj_scan_t *st, bool cut)
{
    if (st->bad)
        herd_log_event(j->log, "state: %s/%s: skipped %" PRIu64 " damaged record(s) (%" PRIu64 " bytes); the rest is loaded",
                       dir, name, st->bad, st->bad_bytes);
    if (st->torn_bytes)
        herd_log_event(j->log, "state: %s/%s: torn or damaged tail of %" PRIu64 " bytes %s at offset %" PRIu64, dir,
                       name, st->torn_bytes, cut ? "cut" : "ignored", st->end);
    j->damaged += st->bad;
    j->torn += st->torn_bytes;
}

/* Sets a file aside (renamed, never deleted) and logs why. Returns 0, or
 * -1 with err filled. */
static int set_aside(herd_journal_t *j, int dirfd, const char *dir, const char *name, const char *why, char *err,
                     size_t errlen)
{
    char aside[96];
    if (hj_set_aside(dirfd, name, aside, sizeof aside) != 0) {
        snprintf(err, errlen, "cannot set aside %s/%s (%s): %s", dir, name, why, strerror(errno));
        return -1;
    }
    herd_log_event(j->log, "state: %s/%s %s: set aside as %s (kept, not loaded as state)", dir, name, why, aside);
    j->set_aside++;
    return 0;
}

/* Loads snapshot and journals; leaves the journal to append to open in
 * c->fd. Nothing is deleted or skipped on the word of a header whose CRC
 * does not vouch for it: a snapshot's generation is used (its older
 * journals removed) only when its header and trailer check out; otherwise
 * every journal is replayed after it (replay is idempotent, and journals
 * are removed oldest first, so leftovers replay in order). Files that are
 * not ours are set aside. Returns 0 or -1 with err filled. */
static int load(herd_journal_t *j, const herd_journal_conf_t *conf, hj_writer_conf_t *c, char *err, size_t errlen)
{
    load_t l = {.conf = conf};
    hj_scan_t st;
    uint64_t g = 0;
    struct stat sb;
    unlinkat(c->dirfd, HJ_SNAPSHOT_TMP, 0); /* a compaction that did not finish: its journals are all there */
    if (fstatat(c->dirfd, HJ_SNAPSHOT, &sb, 0) == 0) {
        int rc = hj_scan(c->dirfd, HJ_SNAPSHOT, 'S', &g, false, load_frame, &l, &st, err, errlen);
        if (rc < 0)
            return -1;
        if (rc == 1) {
            if (set_aside(j, c->dirfd, conf->dir, HJ_SNAPSHOT, "is not a herd snapshot", err, errlen) != 0)
                return -1;
        } else if (st.version == 2 && !(st.header_ok && st.trailer_ok)) {
            /* Its records each carry a good CRC and are loaded; its
             * generation and completeness are not vouched for, so no journal
             * is taken as covered, and the whole table goes to the journal
             * again. Until that is on disk the snapshot is the only copy of
             * its records, so it stays where a start reads it: the writer
             * sets it aside once the table is fsynced (a start that ends
             * sooner, or a crash, finds it here again and loads it again). */
            log_damage(j, conf->dir, HJ_SNAPSHOT, &st, false);
            snprintf(c->aside_why, sizeof c->aside_why, "%s (%" PRIu64 " good records loaded from it)",
                     st.magic_damaged ? "has a damaged magic (the rest of its header checks)"
                     : !st.header_ok  ? "fails its header checksum"
                                      : "fails its body checksum",
                     st.records);
            herd_log_event(j->log, "state: %s/%s %s: kept in place until the whole table is on disk in the journal, "
                           "then set aside", conf->dir, HJ_SNAPSHOT, c->aside_why);
            c->aside_snapshot = true;
            j->need_table = true;
        } else {
            if (st.version == 2)
                c->snap_gen = g;
            else
                herd_log_event(j->log, "state: %s/%s is in the version-1 format (no checksum): loaded, every journal "
                               "kept and replayed; the next compaction rewrites it", conf->dir, HJ_SNAPSHOT);
            c->rep.snapshot_bytes = (uint64_t)sb.st_size;
            c->rep.snapshot_records = st.records;
            log_damage(j, conf->dir, HJ_SNAPSHOT, &st, false);
        }
    }
    uint64_t *gens;
    long n = hj_list_journals(c->dirfd, &gens);
    if (n < 0) {
        snprintf(err, errlen, "cannot list state folder %s: %s", conf->dir, strerror(errno));
        return -1;
    }
    uint64_t append_gen = 0, last = c->snap_gen;
    for (long i = 0; i < n; i++) {
        char name[40];
        snprintf(name, sizeof name, "journal.%llu", (unsigned long long)gens[i]);
        if (gens[i] > last)
            last = gens[i];
        if (gens[i] <= c->snap_gen) {
            /* Folded into a snapshot whose CRCs vouch for its generation:
             * a compaction stopped before removing it. */
            if (unlinkat(c->dirfd, name, 0) == 0)
                herd_log_event(j->log, "state: %s/%s is covered by the snapshot (up to journal.%llu): removed",
                               conf->dir, name, (unsigned long long)c->snap_gen);
            continue;
        }
        bool is_last = i == n - 1;
        uint64_t before = l.records;
        int rc = hj_scan(c->dirfd, name, 'J', &g, is_last, load_frame, &l, &st, err, errlen);
        if (rc < 0) {
            free(gens);
            return -1;
        }
        if (rc == 1 && st.torn_bytes == 0) {
            /* Empty: made by a start or a rotation that stopped there. */
            if (unlinkat(c->dirfd, name, 0) == 0)
                herd_log_event(j->log, "state: %s/%s is empty: removed", conf->dir, name);
            continue;
        }
        if (rc == 1) {
            char why[96];
            snprintf(why, sizeof why, "has no journal header (%" PRIu64 " bytes)", st.torn_bytes);
            if (set_aside(j, c->dirfd, conf->dir, name, why, err, errlen) != 0) {
                free(gens);
                return -1;
            }
            continue;
        }
        if (st.version == 2 && !st.header_ok)
            herd_log_event(j->log, "state: %s/%s: its header fails its checksum; its records (each with its own) "
                           "are loaded", conf->dir, name);
        else if (st.header_ok && g != gens[i])
            herd_log_event(j->log, "state: %s/%s: its header says generation %llu; loaded as named", conf->dir,
                           name, (unsigned long long)g);
        log_damage(j, conf->dir, name, &st, is_last);
        c->rep.journal_records += l.records - before;
        c->rep.since_bytes += st.end;
        if (is_last) {
            append_gen = gens[i];
            c->rep.journal_bytes = st.end;
        }
    }
    free(gens);
    if (l.unreadable)
        herd_log_event(j->log, "state: %" PRIu64 " record(s) with a good checksum but no readable AT line: skipped",
                       l.unreadable);
    j->damaged += l.unreadable;
    j->loaded = l.records;

    char name[40];
    if (append_gen) {
        snprintf(name, sizeof name, "journal.%llu", (unsigned long long)append_gen);
        c->fd = openat(c->dirfd, name, O_WRONLY | O_CLOEXEC); /* written at offsets: see the writer */
        c->gen = append_gen;
    } else {
        /* No journal to go on with: a new generation past every one seen. */
        c->gen = last + 1;
        snprintf(name, sizeof name, "journal.%llu", (unsigned long long)c->gen);
        c->fd = openat(c->dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        char head[HJ_HEADER];
        hj_header(head, HJ_MAGIC_JOURNAL, c->gen);
        if (c->fd >= 0 && (hj_write_all(c->fd, head, sizeof head) != 0 || fsync(c->fd) != 0 || fsync(c->dirfd) != 0)) {
            int e = errno;
            close(c->fd);
            c->fd = -1;
            unlinkat(c->dirfd, name, 0); /* ours, just made, holds nothing */
            errno = e;
        }
        c->rep.journal_bytes = HJ_HEADER;
        c->rep.journal_records = 0;
    }
    if (c->fd < 0) {
        snprintf(err, errlen, "cannot write state folder %s: %s: %s", conf->dir, name, strerror(errno));
        return -1;
    }
    return 0;
}

static void settle(herd_journal_t *j, herd_journal_release_fn *release, void *arg);

/* "always": held replies past their deadline are answered. */
static void sweep_timer(herd_loop_t *loop, void *arg)
{
    (void)loop;
    herd_journal_t *j = arg;
    settle(j, j->release, j->release_arg);
}

/* Hands over what waited HANDOVER_MS when no turn did it. */
static void handover_timer(herd_loop_t *loop, void *arg)
{
    (void)loop;
    herd_journal_t *j = arg;
    herd_journal_commit(j, j->live);
}

herd_journal_t *herd_journal_open(const herd_journal_conf_t *conf, herd_log_t *log, char *err, size_t errlen)
{
    herd_journal_t *j = calloc(1, sizeof *j);
    hj_writer_conf_t *c = calloc(1, sizeof *c);
    if (!j || !c) {
        snprintf(err, errlen, "out of memory");
        free(j);
        free(c);
        return NULL;
    }
    j->log = log;
    j->mode = conf->fsync;
    j->release = conf->release;
    j->release_arg = conf->arg;
    j->lock_fd = -1;
    j->held_tail = &j->held;
    c->fd = c->dirfd = -1;
    c->mode = conf->fsync;
    c->compact_min = conf->compact_min_bytes ? conf->compact_min_bytes : HJ_DEFAULT_COMPACT_MIN;
    c->backlog_max = conf->backlog_max_bytes ? conf->backlog_max_bytes : HJ_DEFAULT_BACKLOG;
    /* A file-size limit must show as a failed write (EFBIG), which is
     * survived, not as SIGXFSZ, which would kill the server. */
    signal(SIGXFSZ, SIG_IGN);
    int64_t t0 = herd_clock_ms();
    if (herd_mkdirs(conf->dir) != 0) {
        snprintf(err, errlen, "cannot make state folder %s: %s", conf->dir, strerror(errno));
        goto fail;
    }
    c->dirfd = open(conf->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (c->dirfd < 0) {
        snprintf(err, errlen, "cannot open state folder %s: %s", conf->dir, strerror(errno));
        goto fail;
    }
    j->lock_fd = openat(c->dirfd, "LOCK", O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (j->lock_fd < 0) {
        snprintf(err, errlen, "cannot write state folder %s: %s", conf->dir, strerror(errno));
        goto fail;
    }
    if (flock(j->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        snprintf(err, errlen, "state folder %s is in use by another running server", conf->dir);
        goto fail;
    }
    if (!(c->dir = strdup(conf->dir))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (load(j, conf, c, err, errlen) != 0)
        goto fail;
    j->load_s = (double)(herd_clock_ms() - t0) / 1000.0;
    j->rep = c->rep;
    j->rep.durable = true;
    herd_log_event(log, "state: %s: loaded %" PRIu64 " records in %.3f s (snapshot up to journal.%llu, appending to journal.%llu, fsync %s)",
                   conf->dir, j->loaded, j->load_s, (unsigned long long)c->snap_gen, (unsigned long long)c->gen,
                   j->mode == HERD_FSYNC_ALWAYS ? "always" : j->mode == HERD_FSYNC_NEVER ? "never" : "everysec");
    void *w = hj_writer_new(c);
    if (!w) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    free(c); /* its contents belong to the writer now */
    c = NULL;
    j->writer = zactor_new(hj_writer_actor, w);
    if (!j->writer) {
        hj_writer_free(w);
        snprintf(err, errlen, "cannot start the state writer thread");
        goto fail;
    }
    j->sock = zsock_resolve(zactor_sock(j->writer));
    if (conf->loop) {
        /* "always": the held replies' deadlines; otherwise the hand-over of
         * gathered turns. */
        bool always = j->mode == HERD_FSYNC_ALWAYS;
        int id = herd_loop_add_timer(conf->loop, always ? SWEEP_MS : HANDOVER_MS, always ? sweep_timer : handover_timer,
                                     j);
        if (id < 0) {
            snprintf(err, errlen, "cannot set the state writer's timer");
            goto fail;
        }
        *(always ? &j->sweep_timer : &j->timer) = id;
        j->loop = conf->loop;
    }
    return j;
fail:
    if (c) {
        if (c->fd >= 0)
            close(c->fd);
        if (c->dirfd >= 0)
            close(c->dirfd);
        free(c->dir);
        free(c);
    }
    herd_journal_destroy(&j);
    return NULL;
}

/* Hands the batch to the writer. With `wait`, blocks until the queue takes
 * it (only at the end). Returns 0, or -1 when it stays with us. */
static int hand_over(herd_journal_t *j, bool wait)
{
    char msg[1 + sizeof(hj_batch_t *)];
    msg[0] = 'B';
    memcpy(msg + 1, &j->batch, sizeof j->batch);
    j->batch->live = j->live;
    int rc;
    do
        rc = zmq_send(j->sock, msg, sizeof msg, wait ? 0 : ZMQ_DONTWAIT);
    while (rc < 0 && errno == EINTR);
    if (rc < 0)
        return -1;
    herd_loop_zmq_sent(j->loop, j->sock);
    j->batch = NULL;
    return 0;
}

void herd_journal_destroy(herd_journal_t **p)
{
    if (!p || !*p)
        return;
    herd_journal_t *j = *p;
    if (j->timer)
        herd_loop_remove_timer(j->loop, j->timer);
    if (j->sweep_timer)
        herd_loop_remove_timer(j->loop, j->sweep_timer);
    if (j->writer) {
        /* Bounded, so a writer that is gone cannot hang the stop. */
        zsock_set_sndtimeo(zactor_sock(j->writer), 10000);
        if (j->batch)
            hand_over(j, true);
        zactor_destroy(&j->writer); /* the writer writes and fsyncs what it took, then ends */
    }
    free(j->batch);
    while (j->held) {
        held_t *h = j->held;
        j->held = h->next;
        free(h);
    }
    if (j->lock_fd >= 0)
        close(j->lock_fd);
    free(j);
    *p = NULL;
}

/* Room for one more frame of `len` data bytes in this turn's batch. */
static char *reserve(herd_journal_t *j, size_t len)
{
    size_t need = HJ_FRAME + 1 + len;
    hj_batch_t *b = j->batch;
    if (!b || b->len + need > b->cap) {
        size_t cap = b ? b->cap * 2 : BATCH_INITIAL;
        while (cap < (b ? b->len : 0) + need)
            cap *= 2;
        hj_batch_t *nb = realloc(b, sizeof *nb + cap);
        if (!nb)
            return NULL;
        if (!b) {
            nb->len = 0;
            nb->heals = 0;
            nb->table = false;
        }
        nb->cap = cap;
        j->batch = b = nb;
    }
    return b->data + b->len;
}

static uint64_t append(herd_journal_t *j, char kind, const char *data, size_t len)
{
    char *out = reserve(j, len);
    if (!out) {
        /* The record cannot reach the disk: the state is no longer whole. */
        if (!j->lost)
            herd_log_event(j->log, "state: out of memory for the journal batch: not durable until the whole "
                                   "table is written again");
        j->lost = true;
        j->need_table = true;
        return j->seq;
    }
    if (j->batch->len == 0)
        j->batch_ms = herd_clock_ms();
    j->batch->len += hj_frame_unsealed(out, kind, data, len); /* the writer seals it */
    j->batch->last_seq = ++j->seq;
    return j->seq;
}

uint64_t herd_journal_append(herd_journal_t *j, const char *at, size_t at_len)
{
    return append(j, 'A', at, at_len);
}

uint64_t herd_journal_drop(herd_journal_t *j, const char *id, size_t id_len)
{
    return append(j, 'D', id, id_len);
}

void herd_journal_commit(herd_journal_t *j, size_t live)
{
    j->live = live;
    if (j->batch && (j->batch->len || j->batch->table) &&
        (j->mode == HERD_FSYNC_ALWAYS || !j->loop || j->batch->len >= HANDOVER_BYTES ||
         herd_clock_ms() - j->batch_ms >= HANDOVER_MS))
        hand_over(j, false);
    /* Replies held this turn that cannot wait ("?" while the state cannot
     * be written) go out with the turn's other answers. */
    if (j->held)
        settle(j, j->release, j->release_arg);
}

bool herd_journal_wants_table(const herd_journal_t *j)
{
    if (j->rep.failing)
        return false; /* first the writes must succeed again */
    return j->need_table || (j->rep.loss_epoch != j->rep.healed_epoch && j->rep.loss_epoch != j->healing);
}

void herd_journal_put_table(herd_journal_t *j, const herd_table_t *t)
{
    uint64_t epoch = j->rep.loss_epoch;
    j->lost = false;
    size_t cursor = 0;
    const herd_record_t *r;
    while ((r = herd_table_next(t, &cursor)) != NULL)
        append(j, 'A', r->at, r->at_len);
    /* A batch even for an empty table: it tells the writer that the table
     * is whole on disk once it is written (a loss made good, a damaged
     * snapshot free to be set aside). */
    if (!j->batch && reserve(j, 0)) {
        j->batch->last_seq = j->seq;
        j->batch_ms = herd_clock_ms();
    }
    j->table_writes++;
    if (j->lost || !j->batch) {
        j->lost = true;
        j->need_table = true; /* out of memory again: tried again later */
        return;
    }
    j->need_table = false;
    j->healing = epoch;
    j->batch->heals = epoch;
    j->batch->table = true;
    herd_log_event(j->log, "state: the whole table (%zu records) is written to the journal again, to make good "
                           "what was not written", herd_table_size(t));
}

void herd_journal_compact(herd_journal_t *j)
{
    zmq_send(j->sock, "C", 1, ZMQ_DONTWAIT);
    herd_loop_zmq_sent(j->loop, j->sock);
}

void *herd_journal_sock(herd_journal_t *j)
{
    return j->sock;
}

/* Whether an AT reply may be sent for what is on disk: nothing given up
 * and not made good, and the disk not hung. */
static bool acks_ok(const herd_journal_t *j)
{
    return !j->lost && !j->need_table && j->rep.loss_epoch == j->rep.healed_epoch && !j->hung;
}

/* Answers the held replies whose fate is known, oldest first: the AT reply
 * once the record is on disk (and nothing is lost or hung), "?" once its
 * write failed, or once it waited HOLD_DEADLINE_MS (the disk is hung). */
static void settle(herd_journal_t *j, herd_journal_release_fn *release, void *arg)
{
    int64_t now = herd_clock_ms();
    size_t hung_now = 0;
    while (j->held) {
        held_t *h = j->held;
        bool ok;
        if (h->seq <= j->rep.done_seq && acks_ok(j))
            ok = true;
        else if (h->seq <= j->rep.done_seq || h->seq <= j->rep.failed_seq || j->lost || j->need_table)
            ok = false;
        else if (now - h->since_ms >= HOLD_DEADLINE_MS) {
            ok = false;
            hung_now++;
        } else if (j->hung)
            ok = false;
        else
            break;
        j->held = h->next;
        if (!j->held)
            j->held_tail = &j->held;
        j->n_held--;
        if (!ok)
            j->refused++;
        if (release)
            release(arg, h->ticket, h->data, h->len, ok);
        free(h);
    }
    if (hung_now && !j->hung) {
        j->hung = true;
        j->hangs++;
        herd_log_event(j->log, "state: the disk is hung: a journal write has not finished in %d s; %zu held AT "
                               "replies answered \"?\", and so are updates until it finishes",
                       HOLD_DEADLINE_MS / 1000, hung_now);
    }
}

int herd_journal_recv(herd_journal_t *j, herd_journal_release_fn *release, void *arg)
{
    int n = 0;
    for (;;) {
        hj_report_t r;
        int rc = zmq_recv(j->sock, &r, sizeof r, ZMQ_DONTWAIT);
        if (rc < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (rc != (int)sizeof r)
            continue; /* not a report (a stray signal frame) */
        n++;
        r.text[sizeof r.text - 1] = '\0';
        r.why[sizeof r.why - 1] = '\0';
        if (r.text[0])
            herd_log_event(j->log, "state: %s", r.text);
        /* Word from the writer about records it had not finished: the disk
         * answers again. */
        if (j->hung && (r.done_seq > j->rep.done_seq || r.failed_seq > j->rep.failed_seq)) {
            j->hung = false;
            herd_log_event(j->log, "state: the disk answers again (journal writes finish)");
        }
        j->rep = r;
    }
    if (!release) {
        release = j->release;
        arg = j->release_arg;
    }
    settle(j, release, arg);
    return n;
}

bool herd_journal_hold(herd_journal_t *j, herd_ticket_t ticket, const char *reply, size_t len)
{
    if (j->mode != HERD_FSYNC_ALWAYS)
        return false;
    /* Nothing waits for the disk and nothing was lost: the AT reply is true
     * now. Otherwise it waits (or is answered "?" at the end of the turn). */
    if (j->seq <= j->rep.done_seq && acks_ok(j) && !j->rep.failing)
        return false;
    held_t *h = malloc(sizeof *h + len);
    if (!h) {
        /* No memory to wait with it: an AT reply now could claim what is
         * not on disk, so it is answered "?" at once where we can. */
        if (!j->release)
            return false;
        j->refused++;
        j->release(j->release_arg, ticket, reply, len, false);
        return true;
    }
    h->next = NULL;
    h->seq = j->seq;
    h->since_ms = herd_clock_ms();
    h->ticket = ticket;
    h->len = len;
    memcpy(h->data, reply, len);
    *j->held_tail = h;
    j->held_tail = &h->next;
    j->n_held++;
    return true;
}

bool herd_journal_refusing(const herd_journal_t *j)
{
    return j->mode == HERD_FSYNC_ALWAYS && (!herd_journal_durable(j) || j->hung);
}

void herd_journal_why(const herd_journal_t *j, char *buf, size_t cap)
{
    const char *effect = j->mode == HERD_FSYNC_ALWAYS ? "updates are answered \"?\" until it is"
                                                      : "serving from memory";
    if (j->hung)
        snprintf(buf, cap, "the disk is hung (a journal write has not finished in %d s); %s",
                 HOLD_DEADLINE_MS / 1000, effect);
    else if (j->rep.failing)
        snprintf(buf, cap, "%s (retrying); %s", j->rep.why[0] ? j->rep.why : "journal writes fail",
                 effect);
    else if (j->lost || j->need_table || j->rep.loss_epoch != j->rep.healed_epoch)
        snprintf(buf, cap, "records were not written%s%s; the whole table is being written again; %s",
                 j->rep.why[0] ? " after: " : "", j->rep.why, effect);
    else
        snprintf(buf, cap, "durable");
}

uint64_t herd_journal_seq(const herd_journal_t *j)
{
    return j->seq;
}

uint64_t herd_journal_done(const herd_journal_t *j)
{
    return j->rep.done_seq;
}

uint64_t herd_journal_failed(const herd_journal_t *j)
{
    return j->rep.failed_seq;
}

bool herd_journal_durable(const herd_journal_t *j)
{
    return j->rep.durable && !j->lost && !j->need_table && !j->hung;
}

size_t herd_journal_held(const herd_journal_t *j)
{
    return j->n_held;
}

void herd_journal_render(const herd_journal_t *j, FILE *f)
{
    const hj_report_t *r = &j->rep;
    fprintf(f,
            "# HELP herd_state_durable Whether every record held is on disk as the fsync setting promises.\n"
            "# TYPE herd_state_durable gauge\nherd_state_durable %d\n"
            "# HELP herd_state_write_errors_total Failed journal writes, fsyncs and compactions.\n"
            "# TYPE herd_state_write_errors_total counter\nherd_state_write_errors_total %" PRIu64 "\n"
            "# HELP herd_state_fsyncs_total fsync calls on the journal.\n"
            "# TYPE herd_state_fsyncs_total counter\nherd_state_fsyncs_total %" PRIu64 "\n"
            "# HELP herd_state_written_bytes_total Bytes appended to the journal.\n"
            "# TYPE herd_state_written_bytes_total counter\nherd_state_written_bytes_total %" PRIu64 "\n"
            "# HELP herd_state_journal_bytes Bytes in the current journal file.\n"
            "# TYPE herd_state_journal_bytes gauge\nherd_state_journal_bytes %" PRIu64 "\n"
            "# HELP herd_state_snapshot_bytes Bytes in the snapshot.\n"
            "# TYPE herd_state_snapshot_bytes gauge\nherd_state_snapshot_bytes %" PRIu64 "\n"
            "# HELP herd_state_compactions_total Snapshots written.\n"
            "# TYPE herd_state_compactions_total counter\nherd_state_compactions_total %" PRIu64 "\n"
            "# HELP herd_state_backlog_bytes Journal bytes waiting for a retry after a failed write.\n"
            "# TYPE herd_state_backlog_bytes gauge\nherd_state_backlog_bytes %" PRIu64 "\n"
            "# HELP herd_state_replies_held AT replies waiting for their record to reach the disk.\n"
            "# TYPE herd_state_replies_held gauge\nherd_state_replies_held %zu\n"
            "# HELP herd_state_writes_failing Whether journal writes fail now (retried until they succeed).\n"
            "# TYPE herd_state_writes_failing gauge\nherd_state_writes_failing %d\n"
            "# HELP herd_state_disk_hung Whether a journal write has not finished within the held replies' deadline.\n"
            "# TYPE herd_state_disk_hung gauge\nherd_state_disk_hung %d\n"
            "# HELP herd_state_replies_refused_total Held AT replies answered \"?\" because their record is not on disk.\n"
            "# TYPE herd_state_replies_refused_total counter\nherd_state_replies_refused_total %" PRIu64 "\n"
            "# HELP herd_state_table_rewrites_total Whole-table batches written to make good records not written.\n"
            "# TYPE herd_state_table_rewrites_total counter\nherd_state_table_rewrites_total %" PRIu64 "\n"
            "# HELP herd_state_set_aside_files Damaged or foreign state files set aside (renamed *.bad-TIME, kept).\n"
            "# TYPE herd_state_set_aside_files gauge\nherd_state_set_aside_files %" PRIu64 "\n"
            "# HELP herd_state_loaded_records Records read from disk at start.\n"
            "# TYPE herd_state_loaded_records gauge\nherd_state_loaded_records %" PRIu64 "\n"
            "# HELP herd_state_damaged_records Damaged records skipped at start.\n"
            "# TYPE herd_state_damaged_records gauge\nherd_state_damaged_records %" PRIu64 "\n"
            "# HELP herd_state_load_seconds Time taken to load the state at start.\n"
            "# TYPE herd_state_load_seconds gauge\nherd_state_load_seconds %.3f\n",
            herd_journal_durable(j) ? 1 : 0, r->write_errors, r->fsyncs, r->bytes_written, r->journal_bytes, r->snapshot_bytes,
            r->compactions, r->backlog_bytes, j->n_held, r->failing ? 1 : 0, j->hung ? 1 : 0, j->refused,
            j->table_writes, j->set_aside + r->set_aside, j->loaded, j->damaged, j->load_s);
}
