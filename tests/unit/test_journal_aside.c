/* Unit tests for what the journal does with a damaged snapshot and with a
 * compaction that fails: a snapshot that fails its checks at start stays
 * where a start reads it until the whole table is on disk in the journal
 * (a start that ends before that, like a server that exits 2 after its load
 * because its client port is taken, loses nothing), and only then is set
 * aside, in every fsync mode, with no compaction before; a compaction that
 * cannot start its next journal, or that fails, is tried again after a
 * pause (not at every wake of the writer, nor only after another
 * compact_min of appends). Each test works in a fresh folder under /tmp
 * and waits on the writer's reports with a deadline. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "herd_journal.h"
#include "../../src/herd_journal_int.h" /* herd_journal_compact, _seq, _done */
#include "herd_log.h"
#include "herd_table.h"
#include "journal_kit.h"

#define POS "+34.068930-118.445127"

typedef struct {
    char tmp[64];         /* the test's folder */
    char dir[96];         /* the state folder inside it */
    herd_log_t *log;
    herd_table_t *table;  /* what a node would hold: what the last start loaded, and updates since */
} ctx_t;

static int setup(void **state)
{
    ctx_t *c = calloc(1, sizeof *c);
    jk_folder_open(c->tmp, sizeof c->tmp, c->dir, sizeof c->dir, "herd-aside", &c->log);
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    ctx_t *c = *state;
    herd_table_destroy(&c->table);
    jk_folder_close(c->tmp, &c->log);
    free(c);
    return 0;
}

static void load(void *arg, const herd_journal_rec_t *rec)
{
    ctx_t *c = arg;
    if (rec->kind == 'D') {
        herd_table_remove(c->table, rec->id, rec->id_len);
        return;
    }
    herd_table_update(c->table, rec->id, rec->id_len, rec->time, rec->at, rec->at_len, rec->pos_off, rec->pos_len,
                      NULL);
}

/* A start: the journal opened on a fresh table (what the node does). */
static herd_journal_t *start(ctx_t *c, herd_fsync_t mode, uint64_t compact_min)
{
    herd_table_destroy(&c->table);
    c->table = herd_table_new();
    herd_journal_conf_t conf = {.dir = c->dir, .fsync = mode, .compact_min_bytes = compact_min, .load = load, .arg = c};
    char err[256] = "";
    herd_journal_t *j = herd_journal_open(&conf, c->log, err, sizeof err);
    if (!j)
        fail_msg("open: %s", err);
    return j;
}

/* An update stored in the table and appended, as the node does. */
static void put(ctx_t *c, herd_journal_t *j, const char *id, long sec)
{
    char at[256];
    int n = snprintf(at, sizeof at, "AT Bailey +0.100000000 %s %s %ld.000000000", id, POS, sec);
    herd_table_update(c->table, id, strlen(id), (herd_time_t){sec, 0}, at, (size_t)n,
                      (size_t)(strstr(at, POS) - at), strlen(POS), NULL);
    herd_journal_append(j, at, (size_t)n);
}

/* Hands the turn over and waits until it is on disk as the mode promises. */
static void commit_wait(ctx_t *c, herd_journal_t *j)
{
    uint64_t seq = herd_journal_seq(j);
    herd_journal_commit(j, herd_table_size(c->table));
    int64_t deadline = herd_clock_ms() + 10000;
    while (herd_journal_done(j) < seq)
        jk_take_reports(j, deadline, NULL, NULL);
}

/* The node's end of a turn (herd_node_state.c node_state_commit). */
static void node_turn(ctx_t *c, herd_journal_t *j)
{
    if (herd_journal_wants_table(j))
        herd_journal_put_table(j, c->table);
    commit_wait(c, j);
}

static bool exists(ctx_t *c, const char *name)
{
    char path[200];
    struct stat sb;
    snprintf(path, sizeof path, "%s/%s", c->dir, name);
    return stat(path, &sb) == 0;
}

/* How many files of the state folder start with `prefix`. */
static int count_files(ctx_t *c, const char *prefix)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "ls '%s' | grep -c '^%s' > '%s/count'", c->dir, prefix, c->tmp);
    (void)!system(cmd);
    size_t len;
    char *s = jk_slurp(c->tmp, "count", &len);
    int n = atoi(s);
    free(s);
    return n;
}

/* A snapshot of k0..k(n-1) (a compaction of journal.1), then "late" in
 * journal.2; stopped cleanly. Returns the snapshot's bytes (malloc'd). */
static char *snapshot_then_late(ctx_t *c, int n, size_t *len)
{
    herd_journal_t *j = start(c, HERD_FSYNC_ALWAYS, 1);
    for (int i = 0; i < n; i++) {
        char id[16];
        snprintf(id, sizeof id, "k%d", i);
        put(c, j, id, 1000 + i);
    }
    commit_wait(c, j);
    herd_journal_compact(j);
    jk_wait_metric(j, "herd_state_compactions_total", 1, 10000, NULL, NULL);
    put(c, j, "late", 2000);
    commit_wait(c, j);
    herd_journal_destroy(&j);
    return jk_slurp(c->dir, "snapshot", len);
}

/* Flips one byte of the AT line of the snapshot's `which`-th record (from
 * 0), as the tester did: that record fails its CRC, and so does the
 * snapshot's whole-file CRC; the others load. */
static void damage_record(ctx_t *c, char *snap, size_t len, int which)
{
    size_t off = HJ_HEADER;
    for (int i = 0; i < which; i++)
        off += HJ_FRAME + ((size_t)(unsigned char)snap[off] | (size_t)(unsigned char)snap[off + 1] << 8);
    assert_true(off + HJ_FRAME + 10 < len);
    snap[off + HJ_FRAME + 10] ^= 0x20;
    jk_spill(c->dir, "snapshot", snap, len);
}

/* The tester's steps, in each mode: a start that loads a damaged snapshot
 * and ends before its first turn (the node's whole table never written)
 * must leave the snapshot where the next start loads it; a start that
 * writes the table sets it aside only once the table is on disk, and
 * compacts only after that. */
static void damaged_snapshot_survives_a_short_start(ctx_t *c, herd_fsync_t mode)
{
    size_t len;
    char *snap = snapshot_then_late(c, 50, &len);
    damage_record(c, snap, len, 7);
    /* The first start loads, and exits (port taken, SIGKILL after READY)
     * before its first turn: its table is not in the journal. */
    herd_journal_t *j = start(c, mode, 0);
    assert_int_equal(herd_table_size(c->table), 50); /* 49 good of the snapshot's, and "late" */
    assert_true(herd_journal_wants_table(j));
    assert_false(herd_journal_durable(j));
    herd_journal_compact(j); /* asked for: it must wait for the set-aside */
    herd_journal_destroy(&j);
    assert_true(exists(c, "snapshot"));
    assert_int_equal(count_files(c, "snapshot.bad-"), 0);
    /* The next start loads it all again. */
    j = start(c, mode, 0);
    assert_int_equal(herd_table_size(c->table), 50);
    assert_non_null(herd_table_find(c->table, "late", 4));
    herd_journal_compact(j);
    /* Its first turn writes the table; then the snapshot goes aside, its
     * bytes kept as they were (no compaction replaced it first). */
    put(c, j, "fresh", 3000);
    node_turn(c, j);
    jk_wait_metric(j, "herd_state_set_aside_files", 1, 5000, NULL, NULL);
    assert_int_equal(count_files(c, "snapshot.bad-"), 1);
    if (mode == HERD_FSYNC_NEVER)
        assert_true(jk_metric(j, "herd_state_fsyncs_total") >= 1); /* the table fsynced before the rename */
    jk_wait_metric(j, "herd_state_compactions_total", 1, 10000, NULL, NULL);
    /* No compaction was tried with the damaged snapshot in place (the
     * compactor refuses one it cannot vouch for: a write error). */
    assert_int_equal(jk_metric(j, "herd_state_write_errors_total"), 0);
    assert_true(herd_journal_durable(j));
    herd_journal_destroy(&j);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "cd '%s' && mv snapshot.bad-* ../aside.copy", c->dir);
    assert_int_equal(system(cmd), 0);
    size_t len2;
    char *kept = jk_slurp(c->dir, "../aside.copy", &len2);
    assert_int_equal(len2, len);
    assert_memory_equal(kept, snap, len);
    free(kept);
    free(snap);
    /* Without the file set aside, everything is there. */
    j = start(c, mode, 0);
    assert_int_equal(herd_table_size(c->table), 51);
    assert_non_null(herd_table_find(c->table, "late", 4));
    assert_non_null(herd_table_find(c->table, "fresh", 5));
    assert_false(herd_journal_wants_table(j));
    assert_int_equal(jk_metric(j, "herd_state_set_aside_files"), 0);
    herd_journal_destroy(&j);
}

static void test_damaged_snapshot_always(void **state)
{
    damaged_snapshot_survives_a_short_start(*state, HERD_FSYNC_ALWAYS);
}

static void test_damaged_snapshot_everysec(void **state)
{
    damaged_snapshot_survives_a_short_start(*state, HERD_FSYNC_EVERYSEC);
}

static void test_damaged_snapshot_never(void **state)
{
    damaged_snapshot_survives_a_short_start(*state, HERD_FSYNC_NEVER);
}

/* A damaged snapshot none of whose records is good, and no journal after
 * it: the table is empty, and its (empty) write still lets the snapshot go
 * aside and the state become durable. */
static void test_damaged_snapshot_empty_table(void **state)
{
    ctx_t *c = *state;
    herd_journal_t *j = start(c, HERD_FSYNC_EVERYSEC, 1);
    put(c, j, "only", 1000);
    commit_wait(c, j);
    herd_journal_compact(j);
    jk_wait_metric(j, "herd_state_compactions_total", 1, 10000, NULL, NULL);
    herd_journal_destroy(&j);
    size_t len;
    char *snap = jk_slurp(c->dir, "snapshot", &len);
    damage_record(c, snap, len, 0);
    free(snap);
    j = start(c, HERD_FSYNC_EVERYSEC, 0);
    assert_int_equal(herd_table_size(c->table), 0);
    assert_true(herd_journal_wants_table(j));
    node_turn(c, j);
    jk_wait_metric(j, "herd_state_set_aside_files", 1, 5000, NULL, NULL);
    assert_false(exists(c, "snapshot"));
    assert_true(herd_journal_durable(j));
    assert_false(herd_journal_wants_table(j));
    herd_journal_destroy(&j);
}

/* The next journal cannot be made (a folder stands where it would go, as a
 * file system out of inodes refuses it): the compaction is put off for a
 * pause, not tried, logged and counted at every wake of the writer; and it
 * happens once the journal can be made. */
static void test_next_journal_refused_is_paused(void **state)
{
    ctx_t *c = *state;
    herd_journal_t *j = start(c, HERD_FSYNC_NEVER, 1);
    char path[200];
    snprintf(path, sizeof path, "%s/journal.2", c->dir);
    assert_int_equal(mkdir(path, 0755), 0);
    /* One client updated over and over: every turn is a wake of the writer
     * with a compaction due. */
    for (int i = 0; i < 40; i++) {
        put(c, j, "busy", 1000 + i);
        commit_wait(c, j);
    }
    double errors = jk_metric(j, "herd_state_write_errors_total");
    assert_true(errors >= 1);
    assert_true(errors <= 3);
    assert_int_equal(jk_metric(j, "herd_state_compactions_total"), 0);
    assert_int_equal(rmdir(path), 0);
    jk_wait_metric(j, "herd_state_compactions_total", 1, 20000, NULL, NULL);
    herd_journal_destroy(&j);
    j = start(c, HERD_FSYNC_NEVER, 0);
    assert_int_equal(herd_table_find(c->table, "busy", 4)->time.sec, 1039);
    herd_journal_destroy(&j);
}

/* A compaction that fails (its snapshot.tmp cannot be made) keeps the
 * count of what it was to fold in: it is tried again after a pause with no
 * new append (not after another compact_min of them), without a new empty
 * journal for the retry. */
static void test_failed_compaction_retried(void **state)
{
    ctx_t *c = *state;
    herd_journal_t *j = start(c, HERD_FSYNC_NEVER, 2000);
    char path[200];
    snprintf(path, sizeof path, "%s/snapshot.tmp", c->dir);
    assert_int_equal(mkdir(path, 0755), 0);
    /* 60 updates of 3 clients in one turn: past 2000 bytes, more records
     * than the table. */
    for (int i = 0; i < 60; i++) {
        char id[8];
        snprintf(id, sizeof id, "c%d", i % 3);
        put(c, j, id, 1000 + i);
    }
    commit_wait(c, j);
    jk_wait_metric(j, "herd_state_write_errors_total", 1, 10000, NULL, NULL);
    assert_int_equal(jk_metric(j, "herd_state_compactions_total"), 0);
    assert_int_equal(rmdir(path), 0);
    /* No append from here on. */
    jk_wait_metric(j, "herd_state_compactions_total", 1, 20000, NULL, NULL);
    assert_true(exists(c, "snapshot"));
    assert_false(exists(c, "journal.1"));
    assert_true(exists(c, "journal.2"));
    assert_false(exists(c, "journal.3"));
    herd_journal_destroy(&j);
    j = start(c, HERD_FSYNC_NEVER, 0);
    assert_int_equal(herd_table_size(c->table), 3);
    assert_int_equal(herd_table_find(c->table, "c2", 2)->time.sec, 1059);
    herd_journal_destroy(&j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_damaged_snapshot_always, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged_snapshot_everysec, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged_snapshot_never, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged_snapshot_empty_table, setup, teardown),
        cmocka_unit_test_setup_teardown(test_next_journal_refused_is_paused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_compaction_retried, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
