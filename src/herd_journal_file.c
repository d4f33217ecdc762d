/* herd_journal_file: the on-disk format of the state folder, its reading
 * (with damage handling) and compaction. See herd_journal_int.h. */
#define _GNU_SOURCE
#include "herd_journal_int.h"
#include "herd_hash.h"
#include "herd_record.h"

#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
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

size_t hj_frame_unsealed(char *out, char kind, const char *data, size_t len)
{
    out[HJ_FRAME] = kind;
    memcpy(out + HJ_FRAME + 1, data, len);
    put32(out, (uint32_t)(len + 1));
    put32(out + 4, 0);
    return HJ_FRAME + 1 + len;
}

size_t hj_frame(char *out, char kind, const char *data, size_t len)
{
    size_t n = hj_frame_unsealed(out, kind, data, len);
    put32(out + 4, herd_journal_crc32c(0, out + HJ_FRAME, len + 1));
    return n;
}

uint64_t hj_seal_frames(char *p, size_t n)
{
    uint64_t frames = 0;
    for (size_t off = 0; off + HJ_FRAME <= n; frames++) {
        size_t len = get32(p + off);
        if (len > n - off - HJ_FRAME)
            break;
        put32(p + off + 4, herd_journal_crc32c(0, p + off + HJ_FRAME, len));
        off += HJ_FRAME + len;
    }
    return frames;
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

/* Whether a version-2 header whose first eight bytes are not `magic` has
 * the CRC of a header that starts with `magic` (and the zeros after it):
 * one of ours whose magic was damaged. A foreign file matches by chance
 * once in 2^32. */
static bool magic_damaged(const char *p, const char *magic)
{
    char head[16];
    memcpy(head, magic, 8);
    memcpy(head + 8, p + 8, 8);
    return herd_journal_crc32c(0, head, 16) == get32(p + 16) && get32(p + 20) == 0;
}

/* Reads a whole file's bytes (p, n; n >= HJ_HEADER1) as hj_scan does:
 * the header, then every good frame to fn. Returns 0, or 1 when the magic
 * is missing or not ours. */
static int scan_bytes(const char *p, size_t n, char kind, uint64_t *gen, hj_frame_fn *fn, void *arg, hj_scan_t *st)
{
    bool snap = kind == 'S';
    size_t head;
    if (memcmp(p, snap ? HJ_MAGIC_SNAPSHOT : HJ_MAGIC_JOURNAL, 8) == 0 && n >= HJ_HEADER) {
        st->version = 2;
        head = HJ_HEADER;
        st->header_ok = herd_journal_crc32c(0, p, 16) == get32(p + 16) && get32(p + 20) == 0;
    } else if (memcmp(p, snap ? HJ_MAGIC_SNAPSHOT1 : HJ_MAGIC_JOURNAL1, 8) == 0) {
        st->version = 1;
        head = HJ_HEADER1;
    } else if (n >= HJ_HEADER && magic_damaged(p, snap ? HJ_MAGIC_SNAPSHOT : HJ_MAGIC_JOURNAL)) {
        /* Ours, with a damaged magic: read as a file whose header fails its
         * check (its good frames loaded, its generation not trusted), not
         * set aside with every record in it unread. */
        st->version = 2;
        st->magic_damaged = true;
        head = HJ_HEADER;
    } else {
        st->torn_bytes = n;
        return 1;
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
    return 0;
}

/* Maps dir/name read-only: *p and *n (*p NULL when it is shorter than a
 * header, which is not mapped). With fd_out, the descriptor (opened for
 * writing too) is left open there. Returns 0, or -1 with err filled. */
static int map_file(int dirfd, const char *name, bool rw, const char **p, size_t *n, int *fd_out, char *err,
                    size_t errlen)
{
    *p = NULL;
    *n = 0;
    int fd = openat(dirfd, name, (rw ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        snprintf(err, errlen, "cannot read %s: %s", name, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    *n = (size_t)sb.st_size;
    if (*n >= HJ_HEADER1) {
        void *m = mmap(NULL, *n, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            snprintf(err, errlen, "cannot read %s: %s", name, strerror(errno));
            close(fd);
            return -1;
        }
        *p = m;
    }
    if (fd_out)
        *fd_out = fd;
    else
        close(fd);
    return 0;
}

int hj_scan(int dirfd, const char *name, char kind, uint64_t *gen, bool cut_tail, hj_frame_fn *fn, void *arg,
            hj_scan_t *st, char *err, size_t errlen)
{
    memset(st, 0, sizeof *st);
    const char *p;
    size_t n;
    int fd;
    if (map_file(dirfd, name, cut_tail, &p, &n, &fd, err, errlen) != 0)
        return -1;
    if (!p) {
        st->torn_bytes = n;
        close(fd);
        return 1;
    }
    madvise((void *)p, n, MADV_SEQUENTIAL);
    int rc = scan_bytes(p, n, kind, gen, fn, arg, st);
    if (rc == 0 && (st->torn_bytes || st->zero_bytes) && cut_tail && ftruncate(fd, (off_t)st->end) != 0) {
        snprintf(err, errlen, "cannot cut the torn tail of %s: %s", name, strerror(errno));
        rc = -1;
    }
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
/* Compaction
 *
 * The journals are the table's history in order: the node appends an AT
 * line exactly when its table stored it as newer, a DROP when a limit
 * dropped the client, and its whole table again after a loss. So the
 * snapshot, then every journal after the snapshot's generation, read in
 * file order with the last frame of each client id winning (a DROP leaving
 * the id out), is the table as of the last of those journals. That needs no
 * table: no ranking (so no parse of the time), no digests, no record
 * copied. The files are mapped read-only; a private index keeps, per id,
 * where its latest frame lies; the snapshot is those frames copied out
 * again as they are (their CRCs were checked on the way in), in file
 * order. Its memory is the index and each id's bytes once, a few tens of
 * bytes per id, whatever the journals' length (their pages are the page
 * cache's).
 *
 * Last-write-wins must never see a journal twice: a journal the snapshot
 * already covers (left by a stop between the snapshot's rename and the
 * journals' removal) holds records older than the snapshot's, so it is
 * skipped by generation, as the start does. */

/* Where a frame lies: its file (in reading order) above REF_FILE_SHIFT,
 * its offset below, and REF_DROP when it is a DROP. Sorted as integers,
 * live references come in file order. */
#define REF_FILE_SHIFT 40
#define REF_DROP (1ull << 63)
#define REF_MAX_FILES (1u << 22)

/* One client id in the compactor's index. The id's bytes are kept once in
 * an arena, so that telling two ids apart reads a small, dense copy rather
 * than the frame in a file far away. */
typedef struct {
    uint64_t ref;    /* its latest frame; 0: the slot is free (no frame lies at offset 0) */
    uint32_t hash;   /* low bits of the id's keyed hash: its home slot, and a compare before the id's */
    uint32_t id_off; /* the id in the arena: a 16-bit length (LE), then the bytes */
} slot_t;

/* A file mapped for the compaction. */
typedef struct {
    const char *p;
    size_t n;
} map_t;

/* A frame read but not yet applied: the index's slot for it is fetched
 * into the cache while the next frames are read. */
typedef struct {
    uint64_t ref;
    uint32_t hash;
    uint32_t id_len;
    const char *id;
} pend_t;

#define LEAN_AHEAD 16 /* frames read ahead of the one applied (a power of two) */

typedef struct {
    slot_t *slots;      /* open addressing with linear probing, a power of two long */
    size_t mask;        /* slots - 1 */
    size_t used;        /* slots taken: ids seen, live or dropped */
    char *arena;        /* the ids */
    size_t arena_len, arena_cap;
    uint64_t k0, k1;    /* this compaction's SipHash key */
    const char *base;   /* the file being read, mapped */
    uint64_t file;      /* its number in reading order */
    pend_t ahead[LEAN_AHEAD]; /* frames read ahead, oldest at head */
    unsigned head, n_ahead;
    void *stop;         /* poll for abandonment, or NULL */
    uint64_t seen;      /* frames read */
    bool stopped;       /* input seen on stop */
    bool oom;           /* the index or the arena could not grow */
} lean_t;

/* The client id a frame is about: a DROP's data, or an AT line's fourth
 * field ("AT <origin> <skew> <id> <pos> <time>"). False for a line that is
 * not six fields one space apart with "AT" first and a non-empty id and
 * position (what herd_record_parse_quick refuses, but for the time, which
 * is not parsed: the node journals only lines it parsed), and for an id
 * longer than a frame can hold. */
static bool frame_id(char kind, const char *data, size_t len, const char **id, size_t *id_len)
{
    if (kind == 'D') {
        *id = data;
        *id_len = len;
        return len <= UINT16_MAX;
    }
    if (len < 3 || memcmp(data, "AT ", 3) != 0)
        return false;
    const char *end = data + len, *f = data + 3;
    for (int k = 1; k < 3; k++) { /* past the origin and the skew */
        const char *sp = memchr(f, ' ', (size_t)(end - f));
        if (!sp)
            return false;
        f = sp + 1;
    }
    const char *id_end = memchr(f, ' ', (size_t)(end - f));
    if (!id_end || id_end == f)
        return false;
    const char *pos = id_end + 1, *pos_end = memchr(pos, ' ', (size_t)(end - pos));
    if (!pos_end || pos_end == pos || memchr(pos_end + 1, ' ', (size_t)(end - pos_end - 1)))
        return false;
    *id = f;
    *id_len = (size_t)(id_end - f);
    return true;
}

static bool lean_init(lean_t *x, size_t expect)
{
    size_t cap = 1024;
    while (cap < expect * 2 && cap < ((size_t)1 << 31))
        cap *= 2;
    x->slots = calloc(cap, sizeof *x->slots);
    if (!x->slots && cap > 1024) /* a smaller start, grown as it goes */
        x->slots = calloc(cap = 1024, sizeof *x->slots);
    x->mask = cap - 1;
    if (getrandom(&x->k0, sizeof x->k0, GRND_NONBLOCK) != (ssize_t)sizeof x->k0 ||
        getrandom(&x->k1, sizeof x->k1, GRND_NONBLOCK) != (ssize_t)sizeof x->k1) {
        /* No entropy yet (early boot): still differ from run to run. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        x->k0 = herd_hash_mix64((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ (uint64_t)(uintptr_t)x);
        x->k1 = herd_hash_mix64(x->k0 ^ 0x9e3779b97f4a7c15ULL);
    }
    return x->slots != NULL;
}

/* Doubles the index (kept at most half full, so a probe is short). */
static bool lean_grow(lean_t *x)
{
    size_t cap = (x->mask + 1) * 2;
    slot_t *s = calloc(cap, sizeof *s);
    if (!s)
        return false;
    for (size_t i = 0; i <= x->mask; i++) {
        if (!x->slots[i].ref)
            continue;
        size_t k = x->slots[i].hash & (cap - 1);
        while (s[k].ref)
            k = (k + 1) & (cap - 1);
        s[k] = x->slots[i];
    }
    free(x->slots);
    x->slots = s;
    x->mask = cap - 1;
    return true;
}

/* Keeps an id in the arena. Returns its offset, or UINT32_MAX when out of
 * memory (or past what an offset holds). */
static uint32_t arena_put(lean_t *x, const char *id, size_t len)
{
    size_t need = x->arena_len + 2 + len;
    if (need > UINT32_MAX)
        return UINT32_MAX;
    if (need > x->arena_cap) {
        size_t cap = x->arena_cap ? x->arena_cap : 65536;
        while (cap < need)
            cap *= 2;
        char *a = realloc(x->arena, cap);
        if (!a)
            return UINT32_MAX;
        x->arena = a;
        x->arena_cap = cap;
    }
    uint32_t off = (uint32_t)x->arena_len;
    x->arena[off] = (char)(len & 0xff);
    x->arena[off + 1] = (char)(len >> 8);
    memcpy(x->arena + off + 2, id, len);
    x->arena_len = need;
    return off;
}

/* Makes a read-ahead frame its id's latest. */
static void lean_apply(lean_t *x, const pend_t *f)
{
    if ((x->used + 1) * 2 > x->mask + 1 && !lean_grow(x)) {
        x->oom = true;
        return;
    }
    for (size_t k = f->hash & x->mask;; k = (k + 1) & x->mask) {
        slot_t *s = &x->slots[k];
        if (!s->ref) {
            uint32_t off = arena_put(x, f->id, f->id_len);
            if (off == UINT32_MAX) {
                x->oom = true;
                return;
            }
            *s = (slot_t){f->ref, f->hash, off};
            x->used++;
            return;
        }
        if (s->hash != f->hash)
            continue;
        const unsigned char *a = (const unsigned char *)x->arena + s->id_off;
        if (((size_t)a[0] | (size_t)a[1] << 8) == f->id_len && memcmp(a + 2, f->id, f->id_len) == 0) {
            s->ref = f->ref;
            return;
        }
    }
}

/* Applies every frame read ahead, in the order read. */
static void lean_drain(lean_t *x)
{
    while (x->n_ahead && !x->oom) {
        lean_apply(x, &x->ahead[x->head]);
        x->head = (x->head + 1) & (LEAN_AHEAD - 1);
        x->n_ahead--;
    }
}

/* A good frame of the file being read: read ahead (its slot fetched),
 * applied once LEAN_AHEAD more have been read, or at the file's end. */
static void lean_frame(void *arg, char kind, const char *data, size_t len)
{
    lean_t *x = arg;
    if (x->stopped || x->oom)
        return;
    if (x->stop && (++x->seen & 0xffff) == 0) {
        zmq_pollitem_t it = {x->stop, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 0) > 0) {
            x->stopped = true;
            return;
        }
    }
    const char *id;
    size_t id_len;
    if (!frame_id(kind, data, len, &id, &id_len))
        return; /* not an AT line: left out, as a start would */
    if (x->n_ahead == LEAN_AHEAD) {
        lean_apply(x, &x->ahead[x->head]);
        x->head = (x->head + 1) & (LEAN_AHEAD - 1);
        x->n_ahead--;
    }
    pend_t *f = &x->ahead[(x->head + x->n_ahead++) & (LEAN_AHEAD - 1)];
    f->hash = (uint32_t)herd_hash_siphash13(x->k0, x->k1, id, id_len);
    f->ref = (x->file << REF_FILE_SHIFT) | (uint64_t)(data - 1 - HJ_FRAME - x->base) |
             (kind == 'D' ? REF_DROP : 0);
    f->id = id;
    f->id_len = (uint32_t)id_len;
    __builtin_prefetch(&x->slots[f->hash & x->mask]);
}

/* Sorts n references in place (least significant byte first; a byte
 * every key shares is skipped). tmp holds n. */
static void sort_refs(uint64_t *a, uint64_t *tmp, size_t n)
{
    uint64_t all_or = 0, all_and = ~0ull;
    for (size_t i = 0; i < n; i++) {
        all_or |= a[i];
        all_and &= a[i];
    }
    for (unsigned shift = 0; shift < 64; shift += 8) {
        if ((((all_or ^ all_and) >> shift) & 0xff) == 0)
            continue;
        size_t count[257] = {0};
        for (size_t i = 0; i < n; i++)
            count[((a[i] >> shift) & 0xff) + 1]++;
        for (int b = 0; b < 256; b++)
            count[b + 1] += count[b];
        for (size_t i = 0; i < n; i++)
            tmp[count[(a[i] >> shift) & 0xff]++] = a[i];
        memcpy(a, tmp, n * sizeof *a);
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

int hj_compact(int dirfd, uint64_t upto, size_t expect, void *stop, uint64_t *records, uint64_t *bytes,
               char *err, size_t errlen)
{
    lean_t x = {.stop = stop};
    out_t o = {.fd = -1, .cap = 1 << 20};
    o.buf = malloc(o.cap);
    uint64_t *gens = NULL;
    map_t *maps = NULL;
    size_t n_maps = 0;
    int rc = -1;
    hj_scan_t st;
    uint64_t g = 0, snap_gen = 0;
    bool ok = lean_init(&x, expect);
    long n = ok && o.buf ? hj_list_journals(dirfd, &gens) : 0;
    if (n >= 0 && ok && o.buf)
        maps = calloc((size_t)n + 1, sizeof *maps);
    if (!ok || !o.buf || (n >= 0 && !maps)) {
        snprintf(err, errlen, "compaction: out of memory");
        goto out;
    }
    if (n < 0) {
        snprintf(err, errlen, "compaction: cannot list the state folder: %s", strerror(errno));
        goto out;
    }
    struct stat sb;
    if (fstatat(dirfd, HJ_SNAPSHOT, &sb, 0) == 0) {
        map_t *m = &maps[n_maps++];
        if (map_file(dirfd, HJ_SNAPSHOT, false, &m->p, &m->n, NULL, err, errlen) != 0)
            goto out;
        if (m->n >> REF_FILE_SHIFT) {
            snprintf(err, errlen, "compaction: %s is too large to read", HJ_SNAPSHOT);
            goto out;
        }
        memset(&st, 0, sizeof st);
        x.base = m->p;
        int src = m->p ? scan_bytes(m->p, m->n, 'S', &g, lean_frame, &x, &st) : 1;
        lean_drain(&x);
        /* A snapshot that is not ours, or whose checksums fail, would be
         * replaced by one without its records: it stays, and so do the
         * journals, until a start sets it aside. */
        if (src == 1 || (st.version == 2 && !(st.header_ok && st.trailer_ok))) {
            snprintf(err, errlen, "compaction: %s cannot be vouched for (%s); not replaced", HJ_SNAPSHOT,
                     src == 1 ? "not a herd snapshot" : "checksum mismatch");
            goto out;
        }
        /* A version-1 snapshot's generation is not vouched for: every
         * journal is read after it, as the start does. */
        if (st.version == 2)
            snap_gen = g;
    }
    for (long i = 0; i < n && !x.stopped && !x.oom; i++) {
        if (n_maps >= REF_MAX_FILES) {
            snprintf(err, errlen, "compaction: more than %u journals to fold in", REF_MAX_FILES - 1);
            goto out;
        }
        if (gens[i] > upto || gens[i] <= snap_gen)
            continue;
        char name[40];
        snprintf(name, sizeof name, "journal.%llu", (unsigned long long)gens[i]);
        map_t *m = &maps[n_maps++];
        if (map_file(dirfd, name, false, &m->p, &m->n, NULL, err, errlen) != 0)
            goto out;
        if (m->n >> REF_FILE_SHIFT) {
            snprintf(err, errlen, "compaction: %s is too large to fold in", name);
            goto out;
        }
        memset(&st, 0, sizeof st);
        x.file = n_maps - 1;
        x.base = m->p;
        if (!m->p || scan_bytes(m->p, m->n, 'J', &g, lean_frame, &x, &st) == 1) {
            snprintf(err, errlen, "compaction: %s has no journal header; not folded in", name);
            goto out;
        }
        lean_drain(&x);
    }
    if (x.oom) {
        snprintf(err, errlen, "compaction: out of memory");
        goto out;
    }
    if (x.stopped) {
        rc = 1;
        goto out;
    }
    /* The live records' references, in file order: the index is done
     * with, and its memory holds them (a reference is half a slot, so
     * none is written over a slot not yet read). */
    free(x.arena);
    x.arena = NULL;
    uint64_t *refs = (uint64_t *)x.slots, *tmp = malloc((x.used ? x.used : 1) * sizeof *tmp);
    if (!tmp) {
        snprintf(err, errlen, "compaction: out of memory");
        goto out;
    }
    size_t live = 0;
    for (size_t i = 0; i <= x.mask; i++) {
        uint64_t ref = x.slots[i].ref;
        if (ref && !(ref & REF_DROP))
            refs[live++] = ref;
    }
    sort_refs(refs, tmp, live);
    free(tmp);
    o.fd = openat(dirfd, HJ_SNAPSHOT_TMP, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (o.fd < 0) {
        snprintf(err, errlen, "compaction: cannot create %s: %s", HJ_SNAPSHOT_TMP, strerror(errno));
        goto out;
    }
    char head[HJ_HEADER], trailer[HJ_TRAILER];
    hj_header(head, HJ_MAGIC_SNAPSHOT, upto);
    out_put(&o, head, sizeof head);
    for (size_t i = 0; i < live; i++) {
        const char *frame = maps[refs[i] >> REF_FILE_SHIFT].p + (refs[i] & ((1ull << REF_FILE_SHIFT) - 1));
        out_put(&o, frame, HJ_FRAME + get32(frame));
    }
    out_put(&o, trailer, hj_trailer(trailer, live, o.crc));
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
     * only leaves files that the next start and compaction skip by
     * generation. */
    for (long i = 0; i < n; i++) {
        if (gens[i] > upto)
            continue;
        char name[40];
        snprintf(name, sizeof name, "journal.%llu", (unsigned long long)gens[i]);
        unlinkat(dirfd, name, 0);
    }
    *records = live;
    *bytes = o.bytes;
    rc = 0;
out:
    if (o.fd >= 0) {
        close(o.fd);
        if (rc != 0)
            unlinkat(dirfd, HJ_SNAPSHOT_TMP, 0);
    }
    for (size_t i = 0; i < n_maps; i++)
        if (maps[i].p)
            munmap((void *)maps[i].p, maps[i].n);
    free(maps);
    free(o.buf);
    free(gens);
    free(x.slots);
    free(x.arena);
    return rc;
}
