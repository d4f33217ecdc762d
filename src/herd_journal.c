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

/* An AT reply waiting for its record to reach the disk. */
typedef struct held_t {
    struct held_t *next;  /* the next one (sequence numbers only grow) */
    uint64_t seq;         /* answer once the writer is done with this record */
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

/* Loads snapshot and journals; leaves the journal to append to open in
 * c->fd. Returns 0 or -1 with err filled. */
static int load(herd_journal_t *j, const herd_journal_conf_t *conf, hj_writer_conf_t *c, char *err, size_t errlen)
{
    load_t l = {.conf = conf};
    hj_scan_t st;
    uint64_t g = 0;
    struct stat sb;
    unlinkat(c->dirfd, HJ_SNAPSHOT_TMP, 0); /* a compaction that did not finish */
    if (fstatat(c->dirfd, HJ_SNAPSHOT, &sb, 0) == 0) {
        int rc = hj_scan(c->dirfd, HJ_SNAPSHOT, HJ_MAGIC_SNAPSHOT, &g, false, load_frame, &l, &st, err, errlen);
        if (rc < 0)
            return -1;
        if (rc == 1)
            herd_log_event(j->log, "state: %s/%s is not a herd snapshot: ignored", conf->dir, HJ_SNAPSHOT);
        else {
            c->snap_gen = g;
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
        if (gens[i] <= c->snap_gen) {
            unlinkat(c->dirfd, name, 0); /* folded into the snapshot already */
            continue;
        }
        last = gens[i];
        bool is_last = i == n - 1;
        uint64_t before = l.records;
        int rc = hj_scan(c->dirfd, name, HJ_MAGIC_JOURNAL, &g, is_last, load_frame, &l, &st, err, errlen);
        if (rc < 0) {
            free(gens);
            return -1;
        }
        if (rc == 1) {
            herd_log_event(j->log, "state: %s/%s has no journal header (%" PRIu64 " bytes): ignored", conf->dir, name,
                           st.torn_bytes);
            continue;
        }
        log_damage(j, conf->dir, name, &st, is_last);
        c->rep.journal_records += l.records - before;
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
        /* No journal to go on with: a new generation. */
        c->gen = last + 1;
        snprintf(name, sizeof name, "journal.%llu", (unsigned long long)c->gen);
        c->fd = openat(c->dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        char head[HJ_HEADER];
        hj_header(head, HJ_MAGIC_JOURNAL, c->gen);
        if (c->fd >= 0 && (hj_write_all(c->fd, head, sizeof head) != 0 || fsync(c->fd) != 0 || fsync(c->dirfd) != 0)) {
            close(c->fd);
            c->fd = -1;
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
    j->lock_fd = -1;
    j->held_tail = &j->held;
    c->fd = c->dirfd = -1;
    c->mode = conf->fsync;
    c->compact_min = conf->compact_min_records ? conf->compact_min_records : HJ_DEFAULT_COMPACT_MIN;
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
    if (conf->loop && j->mode != HERD_FSYNC_ALWAYS) {
        j->timer = herd_loop_add_timer(conf->loop, HANDOVER_MS, handover_timer, j);
        if (j->timer < 0) {
            j->timer = 0;
            snprintf(err, errlen, "cannot set the state writer's timer");
            goto fail;
        }
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
        if (!b)
            nb->len = 0;
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
            herd_log_event(j->log, "state: out of memory for the journal batch: not durable until a restart");
        j->lost = true;
        return j->seq;
    }
    if (j->batch->len == 0)
        j->batch_ms = herd_clock_ms();
    j->batch->len += hj_frame(out, kind, data, len);
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
    if (!j->batch || !j->batch->len)
        return;
    if (j->mode == HERD_FSYNC_ALWAYS || !j->loop || j->batch->len >= HANDOVER_BYTES ||
        herd_clock_ms() - j->batch_ms >= HANDOVER_MS)
        hand_over(j, false);
}

void herd_journal_compact(herd_journal_t *j)
{
    zmq_send(j->sock, "C", 1, ZMQ_DONTWAIT);
}

void *herd_journal_sock(herd_journal_t *j)
{
    return j->sock;
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
        if (r.text[0])
            herd_log_event(j->log, "state: %s", r.text);
        j->rep = r;
    }
    while (j->held && j->held->seq <= j->rep.done_seq) {
        held_t *h = j->held;
        j->held = h->next;
        if (!j->held)
            j->held_tail = &j->held;
        j->n_held--;
        if (release)
            release(arg, h->ticket, h->data, h->len);
        free(h);
    }
    return n;
}

bool herd_journal_hold(herd_journal_t *j, herd_ticket_t ticket, const char *reply, size_t len)
{
    if (j->mode != HERD_FSYNC_ALWAYS || !herd_journal_durable(j) || j->seq <= j->rep.done_seq)
        return false;
    held_t *h = malloc(sizeof *h + len);
    if (!h)
        return false;
    h->next = NULL;
    h->seq = j->seq;
    h->ticket = ticket;
    h->len = len;
    memcpy(h->data, reply, len);
    *j->held_tail = h;
    j->held_tail = &h->next;
    j->n_held++;
    return true;
}

uint64_t herd_journal_seq(const herd_journal_t *j)
{
    return j->seq;
}

uint64_t herd_journal_done(const herd_journal_t *j)
{
    return j->rep.done_seq;
}

bool herd_journal_durable(const herd_journal_t *j)
{
    return j->rep.durable && !j->lost;
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
            "# HELP herd_state_loaded_records Records read from disk at start.\n"
            "# TYPE herd_state_loaded_records gauge\nherd_state_loaded_records %" PRIu64 "\n"
            "# HELP herd_state_damaged_records Damaged records skipped at start.\n"
            "# TYPE herd_state_damaged_records gauge\nherd_state_damaged_records %" PRIu64 "\n"
            "# HELP herd_state_load_seconds Time taken to load the state at start.\n"
            "# TYPE herd_state_load_seconds gauge\nherd_state_load_seconds %.3f\n",
            herd_journal_durable(j) ? 1 : 0, r->write_errors, r->fsyncs, r->bytes_written, r->journal_bytes, r->snapshot_bytes,
            r->compactions, r->backlog_bytes, j->n_held, j->loaded, j->damaged, j->load_s);
}
