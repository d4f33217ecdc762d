/* herd-bench-table: what herd_table costs per operation, in one process.
 *
 * For each client count it fills a table with AT lines like the servers make
 * (about 85 bytes), then times, each over every client in a shuffled order:
 *   - update:   a newer report of a held client (HERD_UPDATE_NEWER), the
 *               node's path for every stored IAMAT and flood;
 *   - repeat:   the same record offered again (herd_table_would_take, then
 *               herd_table_update: SAME), a flood that came by another path;
 *   - find:     herd_table_find, the WHATSAT lookup;
 *   - evict:    with limits.max_records equal to the client count, a report
 *               of a new client into the full table (one record dropped for
 *               each), the bound's path;
 *   - bounded:  a newer report of a held client while that bound is on (the
 *               eviction heap kept).
 * The time to make the lines alone ("gen") is measured the same way and
 * subtracted, so the figures are the table's; times are the thread's CPU
 * time, the best of the rounds. "bytes" is the heap the filled table takes
 * per client (malloc's own count, so its rounding included). Digests are checked against
 * a second table fed the final records in another order.
 *
 *   herd-bench-table [--clients N[,N...]] [--rounds R]
 */
#define _GNU_SOURCE
#include <getopt.h>
#include <inttypes.h>
#include <malloc.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "herd_table.h"

#define POS "+34.068930-118.445127"

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts); /* CPU time: the figures are not what other processes took */
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Writes n as exactly `width` decimal digits. */
static void put_digits(char *p, uint64_t n, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        p[i] = (char)('0' + n % 10);
        n /= 10;
    }
}

/* One client's AT line, made as a server would: "AT Bailey +0.263873386
 * client-NNNNNNNN.example.org POS SSSSSSSSSS.NNNNNNNNN". Fixed widths, so
 * the offsets are constants. */
typedef struct {
    char line[128];
    size_t len, id_off, id_len, pos_off;
} at_t;

static const char TEMPLATE[] = "AT Bailey +0.263873386 client-00000000.example.org " POS " 1621464827.000000000";

static void at_init(at_t *a)
{
    memcpy(a->line, TEMPLATE, sizeof TEMPLATE);
    a->len = sizeof TEMPLATE - 1;
    a->id_off = strlen("AT Bailey +0.263873386 ");
    a->id_len = strlen("client-00000000.example.org");
    a->pos_off = a->id_off + a->id_len + 1;
}

/* Client i's line at version v (its time: base + v seconds, i nanoseconds). */
static void at_make(at_t *a, uint64_t i, uint64_t v)
{
    put_digits(a->line + a->id_off + 7, i, 8);
    put_digits(a->line + a->len - 20, 1621464827u + v, 10);
    put_digits(a->line + a->len - 9, i % 1000000000u, 9);
}

static herd_time_t at_time(uint64_t i, uint64_t v)
{
    return (herd_time_t){(int64_t)(1621464827u + v), (int32_t)(i % 1000000000u)};
}

static herd_update_t offer(herd_table_t *t, const at_t *a, uint64_t i, uint64_t v)
{
    return herd_table_update(t, a->line + a->id_off, a->id_len, at_time(i, v), a->line, a->len, a->pos_off,
                             strlen(POS), NULL);
}

/* A random permutation of 0..n-1 (xorshift, fixed seed: the same every run). */
static uint32_t *shuffled(size_t n, uint64_t seed)
{
    uint32_t *p = malloc(n * sizeof *p);
    if (p == NULL) {
        fprintf(stderr, "herd-bench-table: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++)
        p[i] = (uint32_t)i;
    uint64_t x = seed | 1;
    for (size_t i = n - 1; i > 0; i--) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        size_t j = (size_t)(x % (i + 1));
        uint32_t tmp = p[i];
        p[i] = p[j];
        p[j] = tmp;
    }
    return p;
}

static void check(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "herd-bench-table: check failed: %s\n", what);
        exit(1);
    }
}

/* The best (lowest) of `rounds` timings of one pass, in ns per operation. */
typedef struct {
    double gen, update, repeat, find, evict, bounded;
} figures_t;

static double per_op(uint64_t t0, uint64_t t1, size_t n)
{
    return (double)(t1 - t0) / (double)n;
}

static double min_d(double a, double b)
{
    return a < b ? a : b;
}

static void run(size_t n, int rounds)
{
    at_t a;
    at_init(&a);
    uint32_t *order = shuffled(n, 0x9e3779b97f4a7c15ULL ^ n);
    figures_t f = {1e18, 1e18, 1e18, 1e18, 1e18, 1e18};
    volatile uint64_t sink = 0;

    size_t heap0 = mallinfo2().uordblks;
    herd_table_t *t = herd_table_new();
    check(t != NULL, "herd_table_new");
    uint64_t t0 = now_ns();
    for (size_t k = 0; k < n; k++)
        check(offer(t, (at_make(&a, order[k], 0), &a), order[k], 0) == HERD_UPDATE_NEWER, "fill");
    double fill = per_op(t0, now_ns(), n);
    double bytes = (double)(mallinfo2().uordblks - heap0) / (double)n;

    uint64_t v = 0;
    for (int r = 0; r < rounds; r++) {
        /* gen: the lines alone. */
        t0 = now_ns();
        for (size_t k = 0; k < n; k++) {
            at_make(&a, order[k], v + 1);
            sink += (unsigned char)a.line[a.id_off + 14];
        }
        f.gen = min_d(f.gen, per_op(t0, now_ns(), n));

        v++;
        t0 = now_ns();
        for (size_t k = 0; k < n; k++) {
            at_make(&a, order[k], v);
            if (offer(t, &a, order[k], v) != HERD_UPDATE_NEWER)
                check(false, "update");
        }
        f.update = min_d(f.update, per_op(t0, now_ns(), n));

        t0 = now_ns();
        for (size_t k = 0; k < n; k++) {
            at_make(&a, order[k], v);
            if (herd_table_would_take(t, a.line + a.id_off, a.id_len, at_time(order[k], v), a.line, a.len,
                                      a.pos_off, strlen(POS))
                || offer(t, &a, order[k], v) != HERD_UPDATE_SAME)
                check(false, "repeat");
        }
        f.repeat = min_d(f.repeat, per_op(t0, now_ns(), n));

        t0 = now_ns();
        for (size_t k = 0; k < n; k++) {
            at_make(&a, order[k], v);
            const herd_record_t *rec = herd_table_find(t, a.line + a.id_off, a.id_len);
            sink += rec->at_len;
        }
        f.find = min_d(f.find, per_op(t0, now_ns(), n));
    }

    /* The final contents, offered to a second table in another order, give
     * the same digest. */
    herd_table_t *u = herd_table_new();
    check(u != NULL, "herd_table_new");
    for (size_t k = n; k-- > 0;) {
        at_make(&a, k, v);
        check(offer(u, &a, k, v) == HERD_UPDATE_NEWER, "refill");
    }
    check(herd_table_digest(u) == herd_table_digest(t) && herd_table_size(u) == n, "digests");
    herd_table_destroy(&u);

    /* The bound: max_records = n; new clients evict the lowest each. */
    check(herd_table_set_limits(t, n, 0, NULL, NULL) == 0, "set_limits");
    for (int r = 0; r < rounds; r++) {
        v++;
        t0 = now_ns();
        for (size_t k = 0; k < n; k++) {
            at_make(&a, order[k] + (uint64_t)(r + 1) * n, v);
            if (offer(t, &a, order[k] + (uint64_t)(r + 1) * n, v) != HERD_UPDATE_NEWER)
                check(false, "evict");
        }
        f.evict = min_d(f.evict, per_op(t0, now_ns(), n));
        check(herd_table_size(t) == n, "bounded size");

        v++;
        t0 = now_ns();
        for (size_t k = 0; k < n; k++) {
            at_make(&a, order[k] + (uint64_t)(r + 1) * n, v);
            if (offer(t, &a, order[k] + (uint64_t)(r + 1) * n, v) != HERD_UPDATE_NEWER)
                check(false, "bounded");
        }
        f.bounded = min_d(f.bounded, per_op(t0, now_ns(), n));
    }
    herd_table_destroy(&t);
    free(order);

    printf("clients=%zu fill_ns=%.1f update_ns=%.1f repeat_ns=%.1f find_ns=%.1f evict_ns=%.1f bounded_ns=%.1f"
           " gen_ns=%.1f bytes=%.1f\n",
           n, fill - f.gen, f.update - f.gen, f.repeat - f.gen, f.find - f.gen, f.evict - f.gen,
           f.bounded - f.gen, f.gen, bytes);
    (void)sink;
}

int main(int argc, char **argv)
{
    const char *clients = "100000,1000000";
    int rounds = 3;
    static const struct option opts[] = {
        {"clients", required_argument, NULL, 'n'},
        {"rounds", required_argument, NULL, 'r'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "n:r:", opts, NULL)) != -1) {
        if (c == 'n')
            clients = optarg;
        else if (c == 'r' && atoi(optarg) > 0)
            rounds = atoi(optarg);
        else {
            fprintf(stderr, "usage: herd-bench-table [--clients N[,N...]] [--rounds R]\n");
            return 2;
        }
    }
    for (const char *p = clients; *p;) {
        char *end;
        unsigned long long n = strtoull(p, &end, 10);
        if (end == p || n == 0 || n > 50000000) {
            fprintf(stderr, "herd-bench-table: bad client count in --clients\n");
            return 2;
        }
        run((size_t)n, rounds);
        p = *end == ',' ? end + 1 : end;
    }
    return 0;
}
