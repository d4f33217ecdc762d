/* Unit tests for the journal's compaction (herd_journal_file.c hj_compact):
 * a snapshot made with each client id's last frame winning must hold what
 * the node's table holds, and what a replay of the journals by the table's
 * ranking gives; journals the snapshot already covers are not read again;
 * damaged and unreadable frames are left out; the writer compacts by the
 * rule (bytes since the snapshot past the minimum, more records than the
 * table). Each test works in a fresh folder under /tmp. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "herd_journal.h"
#include "../../src/herd_journal_int.h" /* herd_journal_compact, _done, _crc32c; the file format */
#include "herd_log.h"
#include "herd_table.h"
#include "journal_kit.h"

#define POS "+34.068930-118.445127"

typedef struct {
    char tmp[64];        /* the test's folder */
    char dir[96];        /* the state folder inside it */
    herd_log_t *log;
    herd_table_t *model; /* what the node's table holds: the journal's frames are its changes */
    herd_table_t *loaded; /* what a start loaded */
} ctx_t;

static int setup(void **state)
{
    ctx_t *c = calloc(1, sizeof *c);
    jk_folder_open(c->tmp, sizeof c->tmp, c->dir, sizeof c->dir, "herd-compact", &c->log);
    c->model = herd_table_new();
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    ctx_t *c = *state;
    herd_table_destroy(&c->model);
    herd_table_destroy(&c->loaded);
    jk_folder_close(c->tmp, &c->log);
    free(c);
    return 0;
}

/* A start's load: by the table's ranking, as the node does. */
static void load(void *arg, const herd_journal_rec_t *rec)
{
    herd_table_t *t = arg;
    if (rec->kind == 'D') {
        herd_table_remove(t, rec->id, rec->id_len);
        return;
    }
    herd_table_update(t, rec->id, rec->id_len, rec->time, rec->at, rec->at_len, rec->pos_off, rec->pos_len, NULL);
}

/* Opens the journal in `dir`, loading into a fresh c->loaded. */
static herd_journal_t *open_in(ctx_t *c, const char *dir, uint64_t compact_min)
{
    herd_table_destroy(&c->loaded);
    c->loaded = herd_table_new();
    herd_journal_conf_t conf = {
        .dir = dir, .fsync = HERD_FSYNC_NEVER, .compact_min_bytes = compact_min, .load = load, .arg = c->loaded};
    char err[256] = "";
    herd_journal_t *j = herd_journal_open(&conf, c->log, err, sizeof err);
    if (!j)
        fail_msg("open: %s", err);
    return j;
}

/* The AT line of `id` at `sec`. */
static int at_line(char *at, size_t cap, const char *id, long sec)
{
    return snprintf(at, cap, "AT Bailey +0.100000000 %s %s %ld.000000000", id, POS, sec);
}

/* What the node does with a report: the table ranks it, and the journal
 * gets it only when the table stored it as newer. */
static void offer(ctx_t *c, herd_journal_t *j, const char *id, long sec)
{
    char at[256];
    int n = at_line(at, sizeof at, id, sec);
    if (herd_table_update(c->model, id, strlen(id), (herd_time_t){sec, 0}, at, (size_t)n,
                          (size_t)(strstr(at, POS) - at), strlen(POS), NULL) == HERD_UPDATE_NEWER)
        herd_journal_append(j, at, (size_t)n);
}

/* What the node does when a limit drops a client it holds. */
static void drop(ctx_t *c, herd_journal_t *j, const char *id)
{
    if (herd_table_remove(c->model, id, strlen(id)))
        herd_journal_drop(j, id, strlen(id));
}

/* Hands the turn over (the table's size given as 0 so that the compactor's
 * index starts small and must grow) and waits until it is written. */
static void commit_wait(herd_journal_t *j, size_t live)
{
    uint64_t seq = herd_journal_seq(j);
    herd_journal_commit(j, live);
    int64_t deadline = herd_clock_ms() + 10000;
    while (herd_journal_done(j) < seq) {
        jk_take_reports(j, deadline, NULL, NULL);
    }
}


/* Asks for a compaction (with `ask`) and waits until `want` have been
 * written; none may fail. */
static void compact_wait(herd_journal_t *j, double want, bool ask)
{
    if (ask)
        herd_journal_compact(j);
    int64_t deadline = herd_clock_ms() + 30000;
    while (jk_metric(j, "herd_state_compactions_total") < want) {
        jk_take_reports(j, deadline, NULL, NULL);
    }
    assert_int_equal(jk_metric(j, "herd_state_write_errors_total"), 0);
}

static bool exists(const char *dir, const char *name)
{
    char path[200];
    struct stat sb;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return stat(path, &sb) == 0;
}



static uint32_t le32(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    return (uint32_t)u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 | (uint32_t)u[3] << 24;
}

/* Reads the snapshot by the format alone (header, 'A' frames each with a
 * good CRC, the trailer's count and CRC): every frame into a fresh table,
 * which must not have seen any id twice. Returns it. */
static herd_table_t *read_snapshot(const char *dir)
{
    size_t n;
    char *p = jk_slurp(dir, "snapshot", &n);
    assert_true(n >= HJ_HEADER + HJ_TRAILER);
    assert_memory_equal(p, HJ_MAGIC_SNAPSHOT, 8);
    herd_table_t *t = herd_table_new();
    size_t off = HJ_HEADER, frames = 0;
    for (;;) {
        assert_true(off + HJ_FRAME + 1 <= n);
        uint32_t len = le32(p + off);
        assert_true(off + HJ_FRAME + len <= n);
        assert_int_equal(herd_journal_crc32c(0, p + off + HJ_FRAME, len), le32(p + off + 4));
        const char *body = p + off + HJ_FRAME;
        if (body[0] == 'E') {
            uint64_t count = 0;
            for (int i = 0; i < 8; i++)
                count |= (uint64_t)(unsigned char)body[1 + i] << (8 * i);
            assert_int_equal(count, frames);
            assert_int_equal(le32(body + 9), herd_journal_crc32c(0, p, off));
            assert_int_equal(off + HJ_FRAME + len, n);
            break;
        }
        assert_int_equal(body[0], 'A');
        herd_journal_rec_t rec;
        assert_int_equal(hj_parse_at(body + 1, len - 1, &rec), 0);
        assert_null(herd_table_find(t, rec.id, rec.id_len)); /* each id once */
        assert_int_equal(herd_table_update(t, rec.id, rec.id_len, rec.time, rec.at, rec.at_len, rec.pos_off,
                                           rec.pos_len, NULL),
                         HERD_UPDATE_NEWER);
        frames++;
        off += HJ_FRAME + len;
    }
    free(p);
    return t;
}

/* The snapshot holds exactly what `want` holds, and each record's line. */
static void assert_snapshot_is(const char *dir, const herd_table_t *want)
{
    herd_table_t *t = read_snapshot(dir);
    assert_int_equal(herd_table_size(t), herd_table_size(want));
    assert_int_equal(herd_table_digest(t), herd_table_digest(want));
    size_t cursor = 0;
    const herd_record_t *r;
    while ((r = herd_table_next(want, &cursor)) != NULL) {
        const herd_record_t *s = herd_table_find(t, r->id, r->id_len);
        assert_non_null(s);
        assert_int_equal(s->at_len, r->at_len);
        assert_memory_equal(s->at, r->at, r->at_len);
    }
    herd_table_destroy(&t);
}

/* The time of `id` in t, or -1 when t does not hold it. */
static long time_of(const herd_table_t *t, const char *id)
{
    const herd_record_t *r = herd_table_find(t, id, strlen(id));
    return r ? (long)r->time.sec : -1;
}

static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static uint32_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}

/* A long history -- updates, older reports the table refuses, drops,
 * clients back after a drop with a report older than the one dropped,
 * more clients than the compactor's first index holds -- compacted twice:
 * the snapshot holds what the node's table holds, and what a start that
 * replays every journal by the table's ranking loads. */
static void test_snapshot_is_the_table(void **state)
{
    ctx_t *c = *state;
    herd_journal_t *j = open_in(c, c->dir, UINT64_MAX);
    enum { IDS = 30000, OPS = 200000 };
    char id[32];
    long *last = calloc(IDS, sizeof *last);
    for (int op = 0; op < OPS; op++) {
        int k = (int)(next_rand() % IDS);
        snprintf(id, sizeof id, "c%d", k);
        uint32_t what = next_rand() % 100;
        if (what < 8) {
            drop(c, j, id);
        } else if (what < 20) {
            /* Older than the last report: refused by the table, unless the
             * client was dropped in between. */
            offer(c, j, id, 500 + (long)(next_rand() % 500));
        } else {
            last[k] += 1 + (long)(next_rand() % 3);
            offer(c, j, id, 1000 + last[k]);
        }
        if (op % 997 == 0)
            herd_journal_commit(j, 0);
        if (op == OPS / 2) {
            commit_wait(j, 0);
            compact_wait(j, 1, true);
            assert_snapshot_is(c->dir, c->model);
        }
    }
    free(last);
    /* The named cases, certainly in the history. */
    offer(c, j, "back", 900);
    drop(c, j, "back");
    offer(c, j, "back", 100); /* ranks below the one dropped */
    offer(c, j, "gone", 900);
    drop(c, j, "gone");
    commit_wait(j, 0);
    assert_int_equal(time_of(c->model, "back"), 100);
    assert_int_equal(time_of(c->model, "gone"), -1);

    /* What a replay by ranking of the files as they stand gives. */
    char copy[128], cmd[300];
    snprintf(copy, sizeof copy, "%s/copy", c->tmp);
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s'", c->dir, copy);
    assert_int_equal(system(cmd), 0);
    unlink(strcat(strcpy(cmd, copy), "/LOCK"));

    compact_wait(j, 2, true);
    herd_journal_destroy(&j);
    assert_snapshot_is(c->dir, c->model);
    assert_false(exists(c->dir, "journal.1"));
    assert_false(exists(c->dir, "journal.2"));

    j = open_in(c, copy, UINT64_MAX);
    herd_journal_destroy(&j);
    assert_int_equal(herd_table_digest(c->loaded), herd_table_digest(c->model));
    assert_snapshot_is(c->dir, c->loaded);
    /* And a start from the snapshot loads the same. */
    j = open_in(c, c->dir, UINT64_MAX);
    herd_journal_destroy(&j);
    assert_int_equal(herd_table_size(c->loaded), herd_table_size(c->model));
    assert_int_equal(herd_table_digest(c->loaded), herd_table_digest(c->model));
}

/* A journal the snapshot already covers, left beside it (a stop between
 * the snapshot's rename and the journals' removal), is not read again by
 * the next compaction: its records are older than the snapshot's, and
 * read after it they would win. */
static void test_covered_journal_skipped(void **state)
{
    ctx_t *c = *state;
    herd_journal_t *j = open_in(c, c->dir, UINT64_MAX);
    offer(c, j, "x", 100);
    offer(c, j, "y", 100);
    offer(c, j, "w", 300);
    commit_wait(j, 3);
    size_t len;
    char *old = jk_slurp(c->dir, "journal.1", &len);
    compact_wait(j, 1, true); /* snapshot up to journal.1 */
    offer(c, j, "x", 200);
    drop(c, j, "w");
    offer(c, j, "w", 50); /* back, below the record dropped */
    commit_wait(j, 3);
    compact_wait(j, 2, true); /* snapshot up to journal.2 */
    assert_false(exists(c->dir, "journal.1"));
    assert_false(exists(c->dir, "journal.2"));
    assert_snapshot_is(c->dir, c->model);
    /* journal.1 is back, beside a snapshot that covers it. */
    jk_spill(c->dir, "journal.1", old, len);
    free(old);
    offer(c, j, "z", 100);
    commit_wait(j, 4);
    compact_wait(j, 3, true);
    herd_journal_destroy(&j);
    herd_table_t *t = read_snapshot(c->dir);
    assert_int_equal(time_of(t, "x"), 200);
    assert_int_equal(time_of(t, "w"), 50);
    assert_int_equal(time_of(t, "z"), 100);
    herd_table_destroy(&t);
    assert_snapshot_is(c->dir, c->model);
    assert_false(exists(c->dir, "journal.1")); /* removed with the ones folded in */
}

/* A frame whose CRC fails is left out (the client's earlier record stays),
 * and so is one with a good CRC that is not an AT line. */
static void test_damaged_frames_left_out(void **state)
{
    ctx_t *c = *state;
    herd_journal_t *j = open_in(c, c->dir, UINT64_MAX);
    offer(c, j, "x", 100);
    offer(c, j, "y", 100);
    offer(c, j, "x", 200); /* damaged below */
    offer(c, j, "v", 100);
    drop(c, j, "y");       /* damaged below */
    herd_journal_append(j, "AT Bailey +0.100000000 v", 24); /* good CRC, not an AT line */
    offer(c, j, "u", 100);
    commit_wait(j, 4);
    herd_journal_destroy(&j);
    size_t len;
    char *p = jk_slurp(c->dir, "journal.1", &len);
    char *x200 = memmem(p, len, " x " POS " 200.", strlen(" x " POS " 200."));
    assert_non_null(x200);
    x200[1] ^= 0x04; /* a bit flipped on disk */
    /* The DROP frame: kind 'D' and "y", after the x frame. */
    char *d = memmem(x200, len - (size_t)(x200 - p), "Dy", 2);
    assert_non_null(d);
    d[1] = 'Y';
    jk_spill(c->dir, "journal.1", p, len);
    free(p);
    j = open_in(c, c->dir, UINT64_MAX);
    assert_int_equal(jk_metric(j, "herd_state_damaged_records"), 3);
    compact_wait(j, 1, true);
    herd_journal_destroy(&j);
    herd_table_t *t = read_snapshot(c->dir);
    assert_int_equal(herd_table_size(t), 4);
    assert_int_equal(time_of(t, "x"), 100);
    assert_int_equal(time_of(t, "y"), 100);
    assert_int_equal(time_of(t, "v"), 100);
    assert_int_equal(time_of(t, "u"), 100);
    /* What the start before the compaction loaded by ranking. */
    assert_int_equal(herd_table_digest(t), herd_table_digest(c->loaded));
    herd_table_destroy(&t);
}

/* The writer compacts by itself only past the minimum of bytes since the
 * snapshot and with more records than the table holds. The rotation to
 * the next journal comes before the writer reports a batch written, so
 * journal.2's absence says no compaction started. */
static void test_compaction_rule(void **state)
{
    ctx_t *c = *state;
    char id[32], cmd[200];
    /* Many updates of a few clients, but fewer bytes than the minimum. */
    herd_journal_t *j = open_in(c, c->dir, 16384);
    for (int round = 0; round < 10; round++)
        for (int i = 0; i < 10; i++) {
            snprintf(id, sizeof id, "k%d", i);
            offer(c, j, id, 1000 + round);
        }
    commit_wait(j, herd_table_size(c->model));
    assert_false(exists(c->dir, "journal.2"));
    herd_journal_destroy(&j);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", c->dir);
    assert_int_equal(system(cmd), 0);
    herd_table_destroy(&c->model);
    c->model = herd_table_new();

    /* Past the minimum, but every client new: nothing to gain. */
    j = open_in(c, c->dir, 16384);
    for (int i = 0; i < 400; i++) {
        snprintf(id, sizeof id, "k%d", i);
        offer(c, j, id, 1000);
    }
    commit_wait(j, herd_table_size(c->model));
    assert_false(exists(c->dir, "journal.2"));
    /* Then updates of some of them: more records than the table. */
    for (int i = 0; i < 10; i++) {
        snprintf(id, sizeof id, "k%d", i);
        offer(c, j, id, 2000);
    }
    commit_wait(j, herd_table_size(c->model));
    assert_true(exists(c->dir, "journal.2"));
    compact_wait(j, 1, false);
    herd_journal_destroy(&j);
    assert_snapshot_is(c->dir, c->model);
}

/* The writer's thread has a name of its own (top, perf). */
static void test_thread_named(void **state)
{
    ctx_t *c = *state;
    herd_journal_t *j = open_in(c, c->dir, UINT64_MAX);
    DIR *d = opendir("/proc/self/task");
    assert_non_null(d);
    struct dirent *e;
    bool found = false;
    while ((e = readdir(d)) != NULL) {
        char path[300], name[32] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        if (fgets(name, sizeof name, f) && strcmp(name, "herd-journal\n") == 0)
            found = true;
        fclose(f);
    }
    closedir(d);
    assert_true(found);
    herd_journal_destroy(&j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_snapshot_is_the_table, setup, teardown),
        cmocka_unit_test_setup_teardown(test_covered_journal_skipped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged_frames_left_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compaction_rule, setup, teardown),
        cmocka_unit_test_setup_teardown(test_thread_named, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
