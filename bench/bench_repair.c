/* herd-bench-repair: what anti-entropy (herd_repair) costs, in one process.
 *
 * Two tables are joined by an in-process link: each side's messages are
 * queued for the other, decoded with herd_wire_decode and handed to the
 * herd_repair step they call for, as herd_links does; UPDATES lines are
 * parsed with herd_record_parse and stored with herd_table_update, as the
 * node does. No sockets, no event loop: the figures are the protocol's and
 * the table's own cost, not ZeroMQ's. Side A always opens the round.
 *
 * It prints, for --clients clients with AT lines like the servers make
 * (~85 bytes):
 *   - a check when nothing differs: bytes, and CPU time per check;
 *   - repairing a table missing --missing-pct percent of the clients (on
 *     the answering side, then on the opening side): bytes exchanged,
 *     against a full table's bytes (the sum of its AT lines), and time;
 *   - filling an empty table from a full one: bytes and time.
 * Every round is checked: both tables end with the same digest and size.
 *
 *   herd-bench-repair [--clients N] [--missing-pct P] [--checks K]
 */
#define _GNU_SOURCE
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "herd_proto.h"
#include "herd_record.h"
#include "herd_repair.h"
#include "herd_table.h"
#include "herd_wire.h"

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("herd-bench-repair: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

/* ------------------------------------------------------- the link */

typedef struct qmsg {
    char *data;        /* an encoded message (owned) */
    size_t len;
    struct qmsg *next;
} qmsg_t;

/* One end of the link: a table, the messages queued for it, what it got. */
typedef struct {
    const char *name;
    herd_table_t *t;
    qmsg_t *head, *tail;                  /* messages sent to this side, oldest first */
    uint64_t msgs_in[HERD_MSG_RECORDS + 1];  /* messages received, by type */
    uint64_t bytes_in[HERD_MSG_RECORDS + 1]; /* their bytes, by type */
    uint64_t lines_in;                    /* AT lines received */
    uint64_t stored;                      /* AT lines that changed the table */
    uint64_t sync_ends;                   /* SYNC_END received */
    uint64_t nothing_differs;             /* on_groups found no group differing */
} side_t;

static int link_send(void *arg, char *data, size_t len)
{
    side_t *to = arg;
    qmsg_t *q = malloc(sizeof *q);
    if (q == NULL)
        die("out of memory");
    *q = (qmsg_t){data, len, NULL};
    if (to->tail)
        to->tail->next = q;
    else
        to->head = q;
    to->tail = q;
    return 0;
}

static void send_sync_end(side_t *peer, uint64_t sent)
{
    char *out;
    size_t len;
    if (herd_wire_encode_sync_end(0, sent, &out, &len) != 0)
        die("cannot encode SYNC_END");
    link_send(peer, out, len);
}

/* Delivers the oldest message queued for `me`, which answers to `peer`. */
static void deliver_one(side_t *me, side_t *peer)
{
    qmsg_t *q = me->head;
    me->head = q->next;
    if (me->head == NULL)
        me->tail = NULL;
    herd_msg_t m;
    char err[256];
    if (herd_wire_decode(q->data, q->len, &m, err, sizeof err) != 0)
        die("%s got a message it cannot decode: %s", me->name, err);
    me->msgs_in[m.type]++;
    me->bytes_in[m.type] += q->len;
    herd_repair_io_t io = {.send = link_send, .arg = peer};
    int rc = 0;
    switch (m.type) {
    case HERD_MSG_DIGEST:
        rc = herd_repair_on_digest(me->t, m.count, m.digest, &io);
        if (rc == 1)
            send_sync_end(peer, 0);
        break;
    case HERD_MSG_GROUPS:
        rc = herd_repair_on_groups(me->t, &m, &io);
        if (rc == 1)
            me->nothing_differs++;
        break;
    case HERD_MSG_BUCKETS: rc = herd_repair_on_buckets(me->t, &m, &io); break;
    case HERD_MSG_FPRINTS: rc = herd_repair_on_fprints(me->t, &m, &io); break;
    case HERD_MSG_WANT:
        rc = herd_repair_on_want(me->t, &m, &io);
        if (rc == 0 && m.last)
            send_sync_end(peer, io.records);
        break;
    case HERD_MSG_UPDATES:
    case HERD_MSG_RECORDS:
        for (size_t i = 0; i < m.n_updates; i++) {
            const char *line = m.updates[i].p;
            size_t len = m.updates[i].len;
            herd_at_t at;
            if (herd_record_parse(line, len, &at) != 0)
                die("%s got an invalid AT line", me->name);
            herd_update_t u = herd_table_update(me->t, at.id.p, at.id.len, at.time, line, len,
                                                (size_t)(at.pos.p - line), at.pos.len, NULL);
            if (u == HERD_UPDATE_ERROR || u == HERD_UPDATE_REFUSED)
                die("%s could not store an AT line", me->name);
            me->stored += u == HERD_UPDATE_NEWER;
        }
        me->lines_in += m.n_updates;
        break;
    case HERD_MSG_SYNC_END: me->sync_ends++; break;
    case HERD_MSG_HELLO: die("%s got a HELLO", me->name);
    }
    if (rc < 0 || io.failed)
        die("%s: a repair step failed", me->name);
    herd_wire_msg_free(&m);
    free(q->data);
    free(q);
}

static void side_reset(side_t *s)
{
    memset(s->msgs_in, 0, sizeof s->msgs_in);
    memset(s->bytes_in, 0, sizeof s->bytes_in);
    s->lines_in = s->stored = s->sync_ends = s->nothing_differs = 0;
}

static uint64_t side_bytes(const side_t *s)
{
    uint64_t n = 0;
    for (int t = 0; t <= HERD_MSG_RECORDS; t++)
        n += s->bytes_in[t];
    return n;
}

/* One round, A opening; returns when neither side has a message waiting. */
static void run_round(side_t *a, side_t *b)
{
    side_reset(a);
    side_reset(b);
    herd_repair_io_t io = {.send = link_send, .arg = b};
    if (herd_repair_start(a->t, &io) != 0)
        die("cannot open a round");
    while (a->head || b->head) {
        if (b->head)
            deliver_one(b, a);
        if (a->head)
            deliver_one(a, b);
    }
    if (a->sync_ends + a->nothing_differs != 1)
        die("the round did not end with one SYNC_END");
}

/* ------------------------------------------------------- the clients */

static const char *const ORIGINS[] = {"Bailey", "Bona", "Campbell", "Clark", "Jaquez"};

/* Client i's AT line, as a server would make it (~85 bytes). */
static size_t client_line(char *buf, size_t cap, uint64_t i)
{
    uint64_t h = (i + 1) * 0x9e3779b97f4a7c15u;
    int n = snprintf(buf, cap, "AT %s +%u.%09u phone-%010" PRIu64 " %+03d.%06u%+04d.%06u %u.%09u",
                     ORIGINS[i % 5], (unsigned)(h >> 62), (unsigned)(h % 1000000000u), i,
                     (int)(h >> 8 & 0x7f) % 90 - 45, (unsigned)(h >> 16) % 1000000u, (int)(h >> 24 & 0xff) % 180 - 90,
                     (unsigned)(h >> 32) % 1000000u, 1700000000u + (unsigned)(i % 86400), (unsigned)(h >> 20) % 1000000000u);
    if (n <= 0 || (size_t)n >= cap)
        die("AT line too long");
    return (size_t)n;
}

/* Offers client i to t; adds its line's bytes to *bytes. */
static void put_client(herd_table_t *t, uint64_t i, uint64_t *bytes)
{
    char line[HERD_AT_MAX];
    size_t len = client_line(line, sizeof line, i);
    herd_at_t at;
    if (herd_record_parse(line, len, &at) != 0)
        die("made an invalid AT line: %s", line);
    if (herd_table_update(t, at.id.p, at.id.len, at.time, line, len, (size_t)(at.pos.p - line), at.pos.len, NULL)
        != HERD_UPDATE_NEWER)
        die("could not store client %" PRIu64, i);
    if (bytes)
        *bytes += len;
}

/* A table of clients 0..n-1, less those `skip` picks. */
static herd_table_t *make_table(uint64_t n, uint64_t *bytes, bool (*skip)(uint64_t i, void *arg), void *arg)
{
    herd_table_t *t = herd_table_new();
    if (t == NULL)
        die("out of memory");
    for (uint64_t i = 0; i < n; i++)
        if (skip == NULL || !skip(i, arg))
            put_client(t, i, bytes);
    return t;
}

/* Picks `pct` percent of the clients, spread at random (fixed seed). */
static bool skip_pct(uint64_t i, void *arg)
{
    double pct = *(const double *)arg;
    uint64_t h = (i ^ 0x5bd1e995u) * 0xff51afd7ed558ccdu;
    h ^= h >> 33;
    return (double)(h % 1000000u) < pct * 10000.0;
}

/* ------------------------------------------------------- measuring */

static double now_s(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef struct {
    double wall, cpu; /* seconds */
} span_t;

static span_t span_start(void)
{
    return (span_t){now_s(CLOCK_MONOTONIC), now_s(CLOCK_PROCESS_CPUTIME_ID)};
}

static span_t span_end(span_t s)
{
    return (span_t){now_s(CLOCK_MONOTONIC) - s.wall, now_s(CLOCK_PROCESS_CPUTIME_ID) - s.cpu};
}

static void check_equal(const side_t *a, const side_t *b, uint64_t want_size)
{
    if (herd_table_digest(a->t) != herd_table_digest(b->t) || herd_table_size(a->t) != herd_table_size(b->t)
        || herd_table_size(a->t) != want_size)
        die("the tables differ after the round (%zu and %zu clients, %" PRIu64 " wanted)",
            herd_table_size(a->t), herd_table_size(b->t), want_size);
}

/* Prints the messages of a round, by type and direction. */
static void print_round(const char *what, const side_t *a, const side_t *b, uint64_t full_bytes, span_t t)
{
    static const char *const names[] = {"", "HELLO", "UPDATES", "SYNC_END", "DIGEST", "GROUPS", "BUCKETS",
                                        "FPRINTS", "WANT", "RECORDS"};
    uint64_t total = side_bytes(a) + side_bytes(b);
    printf("%s\n", what);
    printf("  bytes exchanged: %" PRIu64 " (%.3f%% of the full table's %" PRIu64 " AT-line bytes)\n", total,
           100.0 * (double)total / (double)full_bytes, full_bytes);
    printf("  by message (count/bytes):");
    for (int k = 1; k <= HERD_MSG_RECORDS; k++) {
        const side_t *to[2] = {b, a};
        for (int d = 0; d < 2; d++)
            if (to[d]->msgs_in[k])
                printf(" %s->%s %s %" PRIu64 "/%" PRIu64, to[d] == b ? "A" : "B", to[d] == b ? "B" : "A", names[k],
                       to[d]->msgs_in[k], to[d]->bytes_in[k]);
    }
    printf("\n  AT lines sent: A->B %" PRIu64 ", B->A %" PRIu64 "; stored: by A %" PRIu64 ", by B %" PRIu64 "\n",
           b->lines_in, a->lines_in, a->stored, b->stored);
    printf("  time: %.3f s wall, %.3f s CPU (both sides, one process)\n", t.wall, t.cpu);
}

static void usage(FILE *out)
{
    fprintf(out, "usage: herd-bench-repair [--clients N] [--missing-pct P] [--checks K]\n"
                 "  --clients N      clients in the full table (default 1000000)\n"
                 "  --missing-pct P  percent of them missing from one side (default 1)\n"
                 "  --checks K       rounds timed when nothing differs (default 100000)\n");
}

int main(int argc, char **argv)
{
    uint64_t n = 1000000, checks = 100000;
    double pct = 1.0;
    static const struct option opts[] = {{"clients", required_argument, NULL, 'n'},
                                         {"missing-pct", required_argument, NULL, 'p'},
                                         {"checks", required_argument, NULL, 'k'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'n': n = strtoull(optarg, NULL, 10); break;
        case 'p': pct = strtod(optarg, NULL); break;
        case 'k': checks = strtoull(optarg, NULL, 10); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (n == 0 || !(pct > 0 && pct < 100) || checks == 0) {
        usage(stderr);
        return 2;
    }

    side_t a = {.name = "A"}, b = {.name = "B"};
    uint64_t full_bytes = 0, missing = 0;
    for (uint64_t i = 0; i < n; i++)
        missing += skip_pct(i, &pct);

    span_t t = span_start();
    a.t = make_table(n, &full_bytes, NULL, NULL);
    b.t = make_table(n, NULL, NULL, NULL);
    t = span_end(t);
    printf("herd-bench-repair: %" PRIu64 " clients, %" PRIu64 " bytes of AT lines (%.1f a line); "
           "two tables built in %.2f s\n",
           n, full_bytes, (double)full_bytes / (double)n, t.wall);

    /* 1. Nothing differs. */
    t = span_start();
    for (uint64_t k = 0; k < checks; k++)
        run_round(&a, &b);
    t = span_end(t);
    check_equal(&a, &b, n);
    printf("check, nothing differs (%" PRIu64 " rounds)\n", checks);
    printf("  bytes per check: %" PRIu64 " (DIGEST %" PRIu64 " + SYNC_END %" PRIu64 ")\n", side_bytes(&a) + side_bytes(&b),
           b.bytes_in[HERD_MSG_DIGEST], a.bytes_in[HERD_MSG_SYNC_END]);
    printf("  per check: %.2f us CPU, %.2f us wall (both sides: encode, decode, compare)\n",
           t.cpu / (double)checks * 1e6, t.wall / (double)checks * 1e6);

    /* 2. The answering side (B) misses pct%, then the opening side (A). */
    for (int opener = 0; opener < 2; opener++) {
        side_t *lacking = opener ? &a : &b;
        herd_table_destroy(&lacking->t);
        lacking->t = make_table(n, NULL, skip_pct, &pct);
        t = span_start();
        run_round(&a, &b);
        t = span_end(t);
        check_equal(&a, &b, n);
        char what[160];
        snprintf(what, sizeof what, "repair: %s (%s) missing %.2f%% (%" PRIu64 " clients)", lacking->name,
                 opener ? "the opening side" : "the answering side", pct, missing);
        print_round(what, &a, &b, full_bytes, t);
    }

    /* 3. Filling an empty table from a full one, each side empty in turn. */
    for (int opener = 0; opener < 2; opener++) {
        side_t *empty = opener ? &a : &b;
        herd_table_destroy(&empty->t);
        empty->t = herd_table_new();
        if (empty->t == NULL)
            die("out of memory");
        t = span_start();
        run_round(&a, &b);
        t = span_end(t);
        check_equal(&a, &b, n);
        char what[160];
        snprintf(what, sizeof what, "fill: %s (%s) empty, %" PRIu64 " clients", empty->name,
                 opener ? "the opening side" : "the answering side", n);
        print_round(what, &a, &b, full_bytes, t);
    }
    herd_table_destroy(&a.t);
    herd_table_destroy(&b.t);
    return 0;
}
