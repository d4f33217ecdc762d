/* herd-state-lmdb: the measurement issue 13 asks for before choosing the
 * durable store: LMDB (one write transaction per node turn, put per stored
 * record) against herd_journal (append per record, one hand-over per turn),
 * on the same workload, with the same durability (sync at every turn /
 * never), then the start-up load of what each left on disk into a herd
 * table, and the bytes on disk per live record.
 *
 *   herd-state-lmdb [--records N] [--keys K] [--batch B] [--dir DIR]
 *
 * N records (default 1,000,000) over K client ids (default N: every record
 * a new client) in turns of B records (default 64). Prints one RESULT line
 * per store and mode. Runs in a fresh folder under DIR (default /tmp). */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "herd_journal.h"
#include "../src/herd_journal_int.h" /* herd_journal_done: a hook for tests and benchmarks */
#include "herd_log.h"
#include "herd_loop.h"
#include "herd_table.h"

#define POS "+34.068930-118.445127"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Record i: client id and AT line. */
static int make(long i, long keys, char *id, char *at)
{
    snprintf(id, 32, "client-%08ld", i % keys);
    return snprintf(at, 160, "AT Bailey +0.263873386 %s %s %ld.959498503", id, POS, 1700000000L + i);
}

static long dir_bytes(const char *dir)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "du -sb --apparent-size '%s' | cut -f1", dir);
    FILE *p = popen(cmd, "r");
    long n = -1;
    if (p && fscanf(p, "%ld", &n) != 1)
        n = -1;
    if (p)
        pclose(p);
    return n;
}

static void check(int rc, const char *what)
{
    if (rc != 0) {
        fprintf(stderr, "herd-state-lmdb: %s: %s\n", what, mdb_strerror(rc));
        exit(1);
    }
}

static void run_lmdb(const char *dir, long n, long keys, long batch, bool sync)
{
    MDB_env *env;
    MDB_dbi dbi;
    MDB_txn *txn;
    mkdir(dir, 0755);
    check(mdb_env_create(&env), "env");
    check(mdb_env_set_mapsize(env, (size_t)8 << 30), "mapsize");
    check(mdb_env_open(env, dir, sync ? 0 : MDB_NOSYNC, 0644), "open");
    char id[32], at[160];
    double t0 = now_s();
    for (long i = 0; i < n;) {
        check(mdb_txn_begin(env, NULL, 0, &txn), "begin");
        if (i == 0)
            check(mdb_dbi_open(txn, NULL, 0, &dbi), "dbi");
        for (long k = 0; k < batch && i < n; k++, i++) {
            int len = make(i, keys, id, at);
            MDB_val key = {strlen(id), id}, val = {(size_t)len, at};
            check(mdb_put(txn, dbi, &key, &val, 0), "put");
        }
        check(mdb_txn_commit(txn), "commit");
    }
    double wt = now_s() - t0;
    mdb_env_close(env);
    /* Start-up: every record into a table. */
    herd_table_t *t = herd_table_new();
    MDB_cursor *cur;
    MDB_val key, val;
    t0 = now_s();
    check(mdb_env_create(&env), "env");
    check(mdb_env_set_mapsize(env, (size_t)8 << 30), "mapsize");
    check(mdb_env_open(env, dir, MDB_RDONLY, 0644), "open");
    check(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), "begin");
    check(mdb_dbi_open(txn, NULL, 0, &dbi), "dbi");
    check(mdb_cursor_open(txn, dbi, &cur), "cursor");
    while (mdb_cursor_get(cur, &key, &val, MDB_NEXT) == 0) {
        herd_journal_rec_t r;
        /* The same field location the journal's loader does. */
        const char *a = val.mv_data;
        const char *p = strstr(a, " " POS " ");
        r.pos_off = (size_t)(p + 1 - a);
        herd_time_parse(p + 2 + strlen(POS), val.mv_size - r.pos_off - strlen(POS) - 1, &r.time);
        herd_table_update(t, key.mv_data, key.mv_size, r.time, a, val.mv_size, r.pos_off, strlen(POS), NULL);
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    double lt = now_s() - t0;
    printf("RESULT store=lmdb sync=%s records=%ld keys=%ld batch=%ld rec_per_s=%.0f turn_us=%.1f load_s=%.3f "
           "bytes_per_live=%.1f\n",
           sync ? "always" : "never", n, keys, batch, n / wt, wt / ((double)n / batch) * 1e6, lt,
           (double)dir_bytes(dir) / (double)herd_table_size(t));
    herd_table_destroy(&t);
}

static void load_rec(void *arg, const herd_journal_rec_t *r)
{
    herd_table_update(arg, r->id, r->id_len, r->time, r->at, r->at_len, r->pos_off, r->pos_len, NULL);
}

static void ignore(void *arg, const herd_journal_rec_t *r)
{
    (void)arg;
    (void)r;
}

static void run_journal(const char *dir, long n, long keys, long batch, herd_fsync_t mode, herd_log_t *log)
{
    char err[256];
    herd_journal_conf_t conf = {.dir = dir, .fsync = mode, .load = ignore, .compact_min_bytes = (uint64_t)n * 1000};
    herd_journal_t *j = herd_journal_open(&conf, log, err, sizeof err);
    if (!j) {
        fprintf(stderr, "herd-state-lmdb: %s\n", err);
        exit(1);
    }
    char id[32], at[160];
    double t0 = now_s();
    uint64_t seq = 0;
    for (long i = 0; i < n;) {
        for (long k = 0; k < batch && i < n; k++, i++) {
            int len = make(i, keys, id, at);
            seq = herd_journal_append(j, at, (size_t)len);
        }
        herd_journal_commit(j, (size_t)(i < keys ? i : keys));
        /* With "always" a turn's replies wait for its commit; measure that
         * (the node itself would go on with the next turn meanwhile). */
        while (mode == HERD_FSYNC_ALWAYS && herd_journal_done(j) < seq) {
            zmq_pollitem_t it = {herd_journal_sock(j), 0, ZMQ_POLLIN, 0};
            zmq_poll(&it, 1, 100);
            herd_journal_recv(j, NULL, NULL);
        }
    }
    herd_journal_destroy(&j); /* written and fsynced */
    double wt = now_s() - t0;
    herd_table_t *t = herd_table_new();
    conf.load = load_rec;
    conf.arg = t;
    t0 = now_s();
    j = herd_journal_open(&conf, log, err, sizeof err);
    double lt = now_s() - t0;
    herd_journal_destroy(&j);
    printf("RESULT store=journal sync=%s records=%ld keys=%ld batch=%ld rec_per_s=%.0f turn_us=%.1f load_s=%.3f "
           "bytes_per_live=%.1f\n",
           mode == HERD_FSYNC_ALWAYS ? "always" : "never", n, keys, batch, n / wt, wt / ((double)n / batch) * 1e6,
           lt, (double)dir_bytes(dir) / (double)herd_table_size(t));
    herd_table_destroy(&t);
}

int main(int argc, char **argv)
{
    long n = 1000000, keys = 0, batch = 64;
    const char *base = "/tmp";
    static const struct option opts[] = {{"records", required_argument, 0, 'n'},
                                         {"keys", required_argument, 0, 'k'},
                                         {"batch", required_argument, 0, 'b'},
                                         {"dir", required_argument, 0, 'd'},
                                         {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'n': n = atol(optarg); break;
        case 'k': keys = atol(optarg); break;
        case 'b': batch = atol(optarg); break;
        case 'd': base = optarg; break;
        default:
            fprintf(stderr, "usage: herd-state-lmdb [--records N] [--keys K] [--batch B] [--dir DIR]\n");
            return 2;
        }
    }
    if (keys <= 0)
        keys = n;
    char tmp[256], dir[300], err[256];
    snprintf(tmp, sizeof tmp, "%s/herd-state-lmdb-XXXXXX", base);
    if (!mkdtemp(tmp)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(dir, sizeof dir, "%s/bench.log", tmp);
    herd_log_t *log = herd_log_open(dir, err, sizeof err);
    if (!log) {
        fprintf(stderr, "herd-state-lmdb: %s\n", err);
        return 1;
    }
    const char *names[] = {"lmdb-never", "journal-never", "lmdb-always", "journal-always"};
    for (int i = 0; i < 4; i++) {
        snprintf(dir, sizeof dir, "%s/%s", tmp, names[i]);
        bool sync = i >= 2;
        if (i % 2 == 0)
            run_lmdb(dir, n, keys, batch, sync);
        else
            run_journal(dir, n, keys, batch, sync ? HERD_FSYNC_ALWAYS : HERD_FSYNC_NEVER, log);
        fflush(stdout);
    }
    herd_log_close(&log);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    return system(cmd) == 0 ? 0 : 1;
}
