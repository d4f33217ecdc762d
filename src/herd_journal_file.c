/* herd_journal_file: the on-disk format of the state folder, its reading
 * (with damage handling) and compaction. See herd_journal_int.h. */
#define _GNU_SOURCE
#include "herd_journal_int.h"
#include "herd_record.h"

#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------------- */
/* CRC32C: SSE4.2's crc32 instruction when the CPU has it, else a table. */

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_table_make(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[i] = c;
    }
}

static uint32_t crc_soft(uint32_t crc, const unsigned char *p, size_t n)
{
    pthread_once(&crc_once, crc_table_make);
    while (n--)
        crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return crc;
}

#if defined(__x86_64__)
#include <nmmintrin.h>
__attribute__((target("sse4.2"))) static uint32_t crc_hard(uint32_t crc, const unsigned char *p, size_t n)
{
    uint64_t c = crc;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = _mm_crc32_u64(c, w);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (n--)
        c32 = _mm_crc32_u8(c32, *p++);
    return c32;
}
#endif

/*  --------------------------------------------------------------------------
 *  CRC32C of a byte run, continuing from crc (0 to start). */
uint32_t herd_journal_crc32c(uint32_t crc, const void *data, size_t len)
{
    crc = ~crc;
#if defined(__x86_64__)
    if (__builtin_cpu_supports("sse4.2"))
        return ~crc_hard(crc, data, len);
#endif
    return ~crc_soft(crc, data, len);
}

/* ---------------------------------------------------------------------- */
/* Frames and headers */

static void put32(char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (char)(v >> (8 * i));
}

static uint32_t get32(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    return (uint32_t)u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 | (uint32_t)u[3] << 24;
}

size_t hj_frame(char *out, char kind, const char *data, size_t len)
{
    out[HJ_FRAME] = kind;
    memcpy(out + HJ_FRAME + 1, data, len);
    put32(out, (uint32_t)(len + 1));
    put32(out + 4, herd_journal_crc32c(0, out + HJ_FRAME, len + 1));
    return HJ_FRAME + 1 + len;
}

void hj_header(char out[HJ_HEADER], const char *magic, uint64_t gen)
{
    memcpy(out, magic, 8);
    for (int i = 0; i < 8; i++)
        out[8 + i] = (char)(gen >> (8 * i));
    put32(out + 16, herd_journal_crc32c(0, out, 16));
    put32(out + 20, 0);
}

size_t hj_trailer(char out[HJ_TRAILER], uint64_t records, uint32_t crc)
{
    char body[12];
    for (int i = 0; i < 8; i++)
        body[i] = (char)(records >> (8 * i));
    put32(body + 8, crc);
    return hj_frame(out, 'E', body, sizeof body);
}

int hj_set_aside(int dirfd, const char *name, char *aside, size_t cap)
{
    time_t now = time(NULL);
    struct tm tm;
    char stamp[32];
    gmtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
    /* Never over an earlier one set aside in the same second. */
    for (int i = 0; i < 1000; i++) {
        if (i == 0)
            snprintf(aside, cap, "%s.bad-%s", name, stamp);
        else
            snprintf(aside, cap, "%s.bad-%s-%d", name, stamp, i);
        struct stat sb;
        if (fstatat(dirfd, aside, &sb, AT_SYMLINK_NOFOLLOW) == 0)
            continue;
        if (renameat(dirfd, name, dirfd, aside) != 0)
            return -1;
        return fsync(dirfd);
    }
    errno = EEXIST;
    return -1;
}

/* Writes all n bytes, at `off` when `positioned` (leaving the file offset
 * alone) or at the file offset; retries on EINTR and short writes. */
static int write_loop(int fd, const void *p, size_t n, bool positioned, uint64_t off)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = positioned ? pwrite(fd, c, n, (off_t)off) : write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (w == 0)
                errno = EIO;
            return -1;
        }
        c += w;
        off += (uint64_t)w;
        n -= (size_t)w;
    }
    return 0;
}

int hj_write_all(int fd, const void *p, size_t n)
{
    return write_loop(fd, p, n, false, 0);
}

int hj_pwrite_all(int fd, const void *p, size_t n, uint64_t off)
{
    return write_loop(fd, p, n, true, off);
}

/* ---------------------------------------------------------------------- */
/* Reading */

static bool all_zero(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

/* Whether a whole, good frame starts at off ('E' only where allow_end). */
static bool frame_ok(const char *p, size_t n, size_t off, size_t *body, bool allow_end)
{
    if (n - off < HJ_FRAME + 1)
        return false;
    uint32_t len = get32(p + off);
    if (len < 1 || len > HJ_MAX_BODY || len > n - off - HJ_FRAME)
        return false;
    char kind = p[off + HJ_FRAME];
    if (kind != 'A' && kind != 'D' && !(kind == 'E' && allow_end))
        return false;
    if (herd_journal_crc32c(0, p + off + HJ_FRAME, len) != get32(p + off + 4))
        return false;
    *body = len;
    return true;
}

int hj_scan(int dirfd, const char *name, char kind, uint64_t *gen, bool cut_tail, hj_frame_fn *fn, void *arg,
            hj_scan_t *st, char *err, size_t errlen)
{
    memset(st, 0, sizeof *st);
    int fd = openat(dirfd, name, (cut_tail ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        snprintf(err, errlen, "cannot read %s: %s", name, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    size_t n = (size_t)sb.st_size;
    if (n < HJ_HEADER1) {
        st->torn_bytes = n;
        close(fd);
        return 1;
    }
    const char *p = mmap(NULL, n, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
        snprintf(err, errlen, "cannot read %s: %s", name, strerror(errno));
        close(fd);
        return -1;
    }
    madvise((void *)p, n, MADV_SEQUENTIAL);
    int rc = 0;
    bool snap = kind == 'S';
    size_t head;
    if (memcmp(p, snap ? HJ_MAGIC_SNAPSHOT : HJ_MAGIC_JOURNAL, 8) == 0 && n >= HJ_HEADER) {
        st->version = 2;
        head = HJ_HEADER;
        st->header_ok = herd_journal_crc32c(0, p, 16) == get32(p + 16) && get32(p + 20) == 0;
    } else if (memcmp(p, snap ? HJ_MAGIC_SNAPSHOT1 : HJ_MAGIC_JOURNAL1, 8) == 0) {
        st->version = 1;
        head = HJ_HEADER1;
    } else {
        st->torn_bytes = n;
        rc = 1;
        goto out;
    }
    if (st->header_ok) {
        uint64_t g = 0;
        for (int i = 0; i < 8; i++)
            g |= (uint64_t)(unsigned char)p[8 + i] << (8 * i);
        *gen = g;
    }
    bool allow_end = snap && st->version == 2;
    size_t off = head, body;
    st->end = off;
    while (off < n) {
        if (frame_ok(p, n, off, &body, allow_end)) {
            if (p[off + HJ_FRAME] == 'E') {
                /* The snapshot's last frame: its count and CRC vouch for
                 * everything before it. Anything after it is damage. */
                uint64_t count = 0;
                for (int i = 0; i < 8; i++)
                    count |= (uint64_t)(unsigned char)p[off + HJ_FRAME + 1 + i] << (8 * i);
                st->trailer_ok = body == 13 && count == st->records &&
                                 get32(p + off + HJ_FRAME + 9) == herd_journal_crc32c(0, p, off) &&
                                 off + HJ_FRAME + body == n;
                off += HJ_FRAME + body;
                st->end = off;
                continue;
            }
            fn(arg, p[off + HJ_FRAME], p + off + HJ_FRAME + 1, body - 1);
            st->records++;
            off += HJ_FRAME + body;
            st->end = off;
            continue;
        }
        /* Zeros to the end: space the writer preallocated, not damage. */
        if (all_zero(p + off, n - off)) {
            st->zero_bytes = n - off;
            break;
        }
        /* Damage: find the next good frame. None means the tail is torn or
         * damaged: it is cut (or ignored), and appends go on from there. */
        size_t next = off + 1;
        while (next < n && !frame_ok(p, n, next, &body, allow_end))
            next++;
        if (next >= n) {
            st->torn_bytes = n - off;
            break;
        }
        st->bad++;
        st->bad_bytes += next - off;
        off = next;
    }
    if (st->trailer_ok && (st->bad || st->torn_bytes || st->zero_bytes))
        st->trailer_ok = false;
    if ((st->torn_bytes || st->zero_bytes) && cut_tail && ftruncate(fd, (off_t)st->end) != 0) {
        snprintf(err, errlen, "cannot cut the torn tail of %s: %s", name, strerror(errno));
        rc = -1;
    }
out:
    munmap((void *)p, n);
    close(fd);
    return rc;
}

int hj_parse_at(const char *at, size_t len, herd_journal_rec_t *rec)
{
    herd_at_t a;
    if (herd_record_parse_quick(at, len, &a) != 0)
        return -1;
    memset(rec, 0, sizeof *rec);
    rec->kind = 'A';
    rec->at = at;
    rec->at_len = len;
    rec->id = a.id.p;
    rec->id_len = a.id.len;
    rec->pos_off = (size_t)(a.pos.p - at);
    rec->pos_len = a.pos.len;
    rec->time = a.time;
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

long hj_list_journals(int dirfd, uint64_t **gens)
{
    *gens = NULL;
    int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "journal.", 8) != 0)
            continue;
        char *endp;
        errno = 0;
        unsigned long long g = strtoull(e->d_name + 8, &endp, 10);
        if (errno || *endp || endp == e->d_name + 8 || g == 0)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            uint64_t *q = realloc(*gens, cap * sizeof *q);
            if (!q) {
                free(*gens);
                *gens = NULL;
                closedir(d);
                return -1;
            }
            *gens = q;
        }
        (*gens)[n++] = g;
    }
    closedir(d);
    if (n)
        qsort(*gens, n, sizeof **gens, cmp_u64);
    return (long)n;
}

/* ---------------------------------------------------------------------- */
/* Compaction */

typedef struct {
    herd_table_t *t; /* the private table being rebuilt */
    void *stop;      /* poll for abandonment, or NULL */
    uint64_t seen;   /* frames applied */
    bool stopped;    /* input seen on stop */
    bool oom;        /* the table could not take a record */
} rebuild_t;

static void rebuild_frame(void *arg, char kind, const char *data, size_t len)
{
    rebuild_t *r = arg;
    if (r->stopped || r->oom)
        return;
    if (kind == 'A') {
        herd_journal_rec_t rec;
        if (hj_parse_at(data, len, &rec) == 0 &&
            herd_table_update(r->t, rec.id, rec.id_len, rec.time, rec.at, rec.at_len, rec.pos_off, rec.pos_len,
                              NULL) == HERD_UPDATE_ERROR)
            r->oom = true;
    } else {
        herd_table_remove(r->t, data, len);
    }
    if (r->stop && (++r->seen & 0xffff) == 0) {
        zmq_pollitem_t it = {r->stop, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 0) > 0)
            r->stopped = true;
    }
}

/* Buffered frame output for the snapshot. */
typedef struct {
    int fd;
    char *buf;
    size_t len, cap;
    uint64_t bytes;
    uint32_t crc; /* CRC32C of every byte put so far (for the trailer) */
    int err; /* errno of the first failure, or 0 */
} out_t;

static void out_put(out_t *o, const char *p, size_t n)
{
    if (o->err)
        return;
    if (o->len + n > o->cap) {
        if (hj_write_all(o->fd, o->buf, o->len) != 0) {
            o->err = errno;
            return;
        }
        o->len = 0;
    }
    memcpy(o->buf + o->len, p, n);
    o->len += n;
    o->bytes += n;
    o->crc = herd_journal_crc32c(o->crc, p, n);
}

int hj_compact(int dirfd, uint64_t upto, void *stop, uint64_t *records, uint64_t *bytes,
               char *err, size_t errlen)
{
    rebuild_t r = {.t = herd_table_new(), .stop = stop};
    out_t o = {.fd = -1, .cap = 1 << 20};
    o.buf = malloc(o.cap);
    uint64_t *gens = NULL;
    int rc = -1;
    hj_scan_t st;
    uint64_t g;
    if (!r.t || !o.buf) {
        snprintf(err, errlen, "compaction: out of memory");
        goto out;
    }
    struct stat sb;
    if (fstatat(dirfd, HJ_SNAPSHOT, &sb, 0) == 0) {
        int src = hj_scan(dirfd, HJ_SNAPSHOT, 'S', &g, false, rebuild_frame, &r, &st, err, errlen);
        if (src < 0)
            goto out;
        /* A snapshot that is not ours, or whose checksums fail, would be
         * replaced by one without its records: it stays, and so do the
         * journals, until a start sets it aside. */
        if (src == 1 || (st.version == 2 && !(st.header_ok && st.trailer_ok))) {
            snprintf(err, errlen, "compaction: %s cannot be vouched for (%s); not replaced", HJ_SNAPSHOT,
                     src == 1 ? "not a herd snapshot" : "checksum mismatch");
            goto out;
        }
    }
    long n = hj_list_journals(dirfd, &gens);
    if (n < 0) {
        snprintf(err, errlen, "compaction: cannot list the state folder: %s", strerror(errno));
        goto out;
    }
    /* Every journal up to `upto`, also those the snapshot may already
     * cover: replay is idempotent, and a generation is never taken on
     * trust here. */
    for (long i = 0; i < n && !r.stopped; i++) {
        if (gens[i] > upto)
            continue;
        char name[40];
        snprintf(name, sizeof name, "journal.%llu", (unsigned long long)gens[i]);
        int jrc = hj_scan(dirfd, name, 'J', &g, false, rebuild_frame, &r, &st, err, errlen);
        if (jrc < 0)
            goto out;
        if (jrc == 1) {
            snprintf(err, errlen, "compaction: %s has no journal header; not folded in", name);
            goto out;
        }
    }
    if (r.oom) {
        snprintf(err, errlen, "compaction: out of memory");
        goto out;
    }
    if (r.stopped) {
        rc = 1;
        goto out;
    }
    o.fd = openat(dirfd, HJ_SNAPSHOT_TMP, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (o.fd < 0) {
        snprintf(err, errlen, "compaction: cannot create %s: %s", HJ_SNAPSHOT_TMP, strerror(errno));
        goto out;
    }
    char head[HJ_HEADER], frame[HJ_FRAME + 1 + UINT16_MAX];
    hj_header(head, HJ_MAGIC_SNAPSHOT, upto);
    out_put(&o, head, sizeof head);
    size_t cursor = 0;
    const herd_record_t *rec;
    uint64_t count = 0;
    while ((rec = herd_table_next(r.t, &cursor)) != NULL) {
        out_put(&o, frame, hj_frame(frame, 'A', rec->at, rec->at_len));
        count++;
    }
    out_put(&o, frame, hj_trailer(frame, count, o.crc));
    if (!o.err && hj_write_all(o.fd, o.buf, o.len) != 0)
        o.err = errno;
    if (!o.err && fsync(o.fd) != 0)
        o.err = errno;
    if (o.err) {
        snprintf(err, errlen, "compaction: cannot write %s: %s", HJ_SNAPSHOT_TMP, strerror(o.err));
        goto out;
    }
    if (renameat(dirfd, HJ_SNAPSHOT_TMP, dirfd, HJ_SNAPSHOT) != 0 || fsync(dirfd) != 0) {
        snprintf(err, errlen, "compaction: cannot put the snapshot in place: %s", strerror(errno));
        goto out;
    }
    /* The snapshot now covers these journals; a crash before they are gone
     * only leaves files that the next start skips by generation. */
    for (long i = 0; i < n; i++) {
        if (gens[i] > upto)
            continue;
        char name[40];
        snprintf(name, sizeof name, "journal.%llu", (unsigned long long)gens[i]);
        unlinkat(dirfd, name, 0);
    }
    *records = herd_table_size(r.t);
    *bytes = o.bytes;
    rc = 0;
out:
    if (o.fd >= 0) {
        close(o.fd);
        if (rc != 0)
            unlinkat(dirfd, HJ_SNAPSHOT_TMP, 0);
    }
    free(o.buf);
    free(gens);
    herd_table_destroy(&r.t);
    return rc;
}
