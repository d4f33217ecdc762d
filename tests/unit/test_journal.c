/* Unit tests for herd_journal: framing, recovery from damage, DROP records,
 * compaction, idempotent replay, held replies and write failures. Each test
 * works in a fresh folder under /tmp and waits on the writer's reports with
 * a deadline. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "herd_journal.h"
#include "../../src/herd_journal_int.h" /* herd_journal_seq, _done, _failed, _held, _compact, _crc32c */
#include "herd_log.h"
#include "herd_loop.h"
#include "herd_table.h"
#include "journal_kit.h"

#define POS "+34.068930-118.445127"

/* A frame as PROTOCOL's state files hold it (length, CRC32C, kind, data):
 * written here by hand, to check the reader against the format itself. */
static size_t hj_frame_for_test(char *out, char kind, const char *data, size_t len)
{
    uint32_t l = (uint32_t)len + 1;
    out[8] = kind;
    memcpy(out + 9, data, len);
    uint32_t crc = herd_journal_crc32c(0, out + 8, l);
    for (int i = 0; i < 4; i++) {
        out[i] = (char)(l >> (8 * i));
        out[4 + i] = (char)(crc >> (8 * i));
    }
    return 8 + l;
}

/* One test's folder, log and the table records are loaded into. */
typedef struct {
    char tmp[64];        /* the test's folder */
    char dir[96];        /* the state folder inside it */
    herd_log_t *log;
    herd_table_t *table; /* what a node would hold */
    size_t loaded;       /* records handed to load() */
    size_t drops;        /* of which DROPs */
    char last_id[64];    /* id of the last record loaded */
} ctx_t;

static void load(void *arg, const herd_journal_rec_t *rec)
{
    ctx_t *c = arg;
    c->loaded++;
    snprintf(c->last_id, sizeof c->last_id, "%.*s", (int)rec->id_len, rec->id);
    if (rec->kind == 'D') {
        c->drops++;
        herd_table_remove(c->table, rec->id, rec->id_len);
        return;
    }
    assert_int_equal(rec->kind, 'A');
    assert_memory_equal(rec->at + rec->pos_off, POS, rec->pos_len);
    herd_table_update(c->table, rec->id, rec->id_len, rec->time, rec->at, rec->at_len, rec->pos_off, rec->pos_len,
                      NULL);
}

static int setup(void **state)
{
    ctx_t *c = calloc(1, sizeof *c);
    jk_folder_open(c->tmp, sizeof c->tmp, c->dir, sizeof c->dir, "herd-journal", &c->log);
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

/* What release() heard: answers given as AT replies and as "?". */
static int released_ok, released_refused;

static void release(void *arg, herd_ticket_t t, const char *data, size_t len, bool ok)
{
    (void)arg;
    (void)t;
    (void)data;
    (void)len;
    if (ok)
        released_ok++;
    else
        released_refused++;
}

/* Opens the journal with a fresh table; NULL (err filled) on failure. */
static herd_journal_t *open_j(ctx_t *c, herd_fsync_t mode, uint64_t compact_min, char *err, size_t errlen)
{
    herd_table_destroy(&c->table);
    c->table = herd_table_new();
    c->loaded = c->drops = 0;
    herd_journal_conf_t conf = {
        .dir = c->dir, .fsync = mode, .compact_min_bytes = compact_min, .load = load, .arg = c};
    return herd_journal_open(&conf, c->log, err, errlen);
}

static herd_journal_t *must_open(ctx_t *c, herd_fsync_t mode)
{
    char err[256] = "";
    herd_journal_t *j = open_j(c, mode, 0, err, sizeof err);
    if (!j)
        fail_msg("open: %s", err);
    return j;
}

/* Appends "AT Bailey +0.1 <id> POS <sec>.000000000" and stores it in c->table. */
static uint64_t put(ctx_t *c, herd_journal_t *j, const char *id, long sec)
{
    char at[256];
    int n = snprintf(at, sizeof at, "AT Bailey +0.100000000 %s %s %ld.000000000", id, POS, sec);
    herd_table_update(c->table, id, strlen(id), (herd_time_t){sec, 0}, at, (size_t)n,
                      (size_t)(strstr(at, POS) - at), strlen(POS), NULL);
    return herd_journal_append(j, at, (size_t)n);
}

/* Reads reports until the writer's last write of `seq` failed (5 s at most). */
static void wait_failed(herd_journal_t *j, uint64_t seq)
{
    int64_t deadline = herd_clock_ms() + 5000;
    while (herd_journal_failed(j) < seq) {
        jk_take_reports(j, deadline, release, NULL);
    }
}

/* Reads reports until the writer is done with `seq` (5 s at most). */
static void wait_done(herd_journal_t *j, uint64_t seq)
{
    int64_t deadline = herd_clock_ms() + 5000;
    while (herd_journal_done(j) < seq) {
        jk_take_reports(j, deadline, release, NULL);
    }
}



static off_t file_size(ctx_t *c, const char *name)
{
    char path[160];
    struct stat sb;
    snprintf(path, sizeof path, "%s/%s", c->dir, name);
    return stat(path, &sb) == 0 ? sb.st_size : -1;
}

/* Writes ids c0..c{n-1} at times 1000.. and closes the journal. */
static void write_some(ctx_t *c, int n, herd_fsync_t mode)
{
    herd_journal_t *j = must_open(c, mode);
    uint64_t seq = 0;
    for (int i = 0; i < n; i++) {
        char id[16];
        snprintf(id, sizeof id, "c%d", i);
        seq = put(c, j, id, 1000 + i);
        if (i % 7 == 6)
            herd_journal_commit(j, herd_table_size(c->table));
    }
    herd_journal_commit(j, herd_table_size(c->table));
    wait_done(j, seq);
    herd_journal_destroy(&j);
    assert_null(j);
}

static void test_crc32c(void **state)
{
    (void)state;
    /* The standard check value of CRC-32C (Castagnoli). */
    assert_int_equal(herd_journal_crc32c(0, "123456789", 9), 0xE3069283u);
    /* Continuation gives the same as one pass. */
    uint32_t part = herd_journal_crc32c(0, "12345", 5);
    assert_int_equal(herd_journal_crc32c(part, "6789", 4), 0xE3069283u);
    assert_int_equal(herd_journal_crc32c(0, "", 0), 0);
}

static void test_roundtrip(void **state)
{
    ctx_t *c = *state;
    write_some(c, 100, HERD_FSYNC_ALWAYS);
    herd_journal_t *j = must_open(c, HERD_FSYNC_EVERYSEC);
    assert_int_equal(c->loaded, 100);
    assert_string_equal(c->last_id, "c99"); /* in the order appended */
    assert_int_equal(herd_table_size(c->table), 100);
    const herd_record_t *r = herd_table_find(c->table, "c42", 3);
    assert_non_null(r);
    assert_string_equal(r->at, "AT Bailey +0.100000000 c42 " POS " 1042.000000000");
    assert_true(herd_journal_durable(j));
    herd_journal_destroy(&j);
}

static void test_torn_tail_cut(void **state)
{
    ctx_t *c = *state;
    write_some(c, 20, HERD_FSYNC_NEVER);
    off_t whole = file_size(c, "journal.1");
    /* A crash mid-write: the first 30 bytes of a frame that claims 80. */
    char torn[30] = {80, 0, 0, 0, 1, 2, 3, 4, 'A', 'A', 'T', ' '};
    char path[160];
    snprintf(path, sizeof path, "%s/journal.1", c->dir);
    int fd = open(path, O_WRONLY | O_APPEND);
    assert_int_equal(write(fd, torn, sizeof torn), (ssize_t)sizeof torn);
    close(fd);
    herd_journal_t *j = must_open(c, HERD_FSYNC_NEVER);
    assert_int_equal(c->loaded, 20);
    assert_int_equal(file_size(c, "journal.1"), whole); /* cut back to the last whole record */
    assert_int_equal(jk_metric(j, "herd_state_damaged_records"), 0);
    /* Appends go on after the cut and are read back. */
    uint64_t seq = put(c, j, "after", 5000);
    herd_journal_commit(j, 21);
    wait_done(j, seq);
    herd_journal_destroy(&j);
    j = must_open(c, HERD_FSYNC_NEVER);
    assert_int_equal(c->loaded, 21);
    assert_non_null(herd_table_find(c->table, "after", 5));
    herd_journal_destroy(&j);
}

static void test_zero_tail_is_not_damage(void **state)
{
    ctx_t *c = *state;
    write_some(c, 5, HERD_FSYNC_ALWAYS);
    off_t whole = file_size(c, "journal.1");
    /* What a crash leaves with "always": the preallocated zeros. */
    char path[160];
    snprintf(path, sizeof path, "%s/journal.1", c->dir);
    assert_int_equal(truncate(path, whole + (1 << 20)), 0);
    herd_journal_t *j = must_open(c, HERD_FSYNC_ALWAYS);
    assert_int_equal(c->loaded, 5);
    assert_int_equal(file_size(c, "journal.1"), whole);
    assert_int_equal(jk_metric(j, "herd_state_damaged_records"), 0);
    /* The writer preallocates again and a clean stop trims it off. */
    uint64_t seq = put(c, j, "more", 9000);
    herd_journal_commit(j, 6);
    wait_done(j, seq);
    assert_true(file_size(c, "journal.1") > whole + (1 << 20));
    herd_journal_destroy(&j);
    assert_int_equal(file_size(c, "journal.1"), whole + (off_t)strlen("AT Bailey +0.100000000 more " POS " 9000.000000000") + 9);
    j = must_open(c, HERD_FSYNC_ALWAYS);
    assert_int_equal(c->loaded, 6);
    herd_journal_destroy(&j);
}

static void test_bad_checksum_skipped(void **state)
{
    ctx_t *c = *state;
    write_some(c, 30, HERD_FSYNC_NEVER);
    char path[160];
    snprintf(path, sizeof path, "%s/journal.1", c->dir);
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    char buf[8192];
    size_t n = fread(buf, 1, sizeof buf, f);
    char *p = memmem(buf, n, " c13 ", 5);
    assert_non_null(p);
    p[2] ^= 0x01; /* "c13" becomes "c03": a byte flipped on disk */
    fseek(f, 0, SEEK_SET);
    assert_int_equal(fwrite(buf, 1, n, f), n);
    fclose(f);
    herd_journal_t *j = must_open(c, HERD_FSYNC_NEVER);
    assert_int_equal(c->loaded, 29);
    assert_null(herd_table_find(c->table, "c13", 3));
    assert_non_null(herd_table_find(c->table, "c14", 3));
    assert_non_null(herd_table_find(c->table, "c29", 3));
    assert_int_equal(jk_metric(j, "herd_state_damaged_records"), 1);
    herd_journal_destroy(&j);
    /* A damaged length field: the reader finds the next frame. */
    f = fopen(path, "r+b");
    n = fread(buf, 1, sizeof buf, f);
    p = memmem(buf, n, " c20 ", 5);
    assert_non_null(p);
    char *frame = p;
    while (frame[0] != 'A' || frame[1] != 'T')
        frame--;
    frame[-9] = (char)0xff; /* the length's low byte, before CRC and kind */
    fseek(f, 0, SEEK_SET);
    assert_int_equal(fwrite(buf, 1, n, f), n);
    fclose(f);
    j = must_open(c, HERD_FSYNC_NEVER);
    assert_int_equal(c->loaded, 28);
    assert_null(herd_table_find(c->table, "c20", 3));
    assert_non_null(herd_table_find(c->table, "c21", 3));
    herd_journal_destroy(&j);
}

static void test_drop(void **state)
{
    ctx_t *c = *state;
    herd_journal_t *j = must_open(c, HERD_FSYNC_ALWAYS);
    put(c, j, "gone", 100);
    put(c, j, "kept", 100);
    uint64_t seq = herd_journal_drop(j, "gone", 4);
    herd_journal_commit(j, 1);
    wait_done(j, seq);
    herd_journal_destroy(&j);
    j = must_open(c, HERD_FSYNC_ALWAYS);
    assert_int_equal(c->drops, 1);
    assert_null(herd_table_find(c->table, "gone", 4));
    assert_non_null(herd_table_find(c->table, "kept", 4));
    /* A newer report after the drop brings the client back. */
    seq = put(c, j, "gone", 200);
    herd_journal_commit(j, 2);
    wait_done(j, seq);
    herd_journal_destroy(&j);
    j = must_open(c, HERD_FSYNC_ALWAYS);
    assert_non_null(herd_table_find(c->table, "gone", 4));
    herd_journal_destroy(&j);
}

static void test_compaction_keeps_latest(void **state)
{
    ctx_t *c = *state;
    char err[256];
    herd_journal_t *j = open_j(c, HERD_FSYNC_EVERYSEC, 1000, err, sizeof err);
    assert_non_null(j);
    /* 50 clients, 100 reports each, then one dropped: 5,001 records for 49
     * live ones in one batch, past the table's size and the minimum, so
     * the writer compacts by itself, once. */
    uint64_t seq = 0;
    for (int round = 0; round < 100; round++) {
        for (int i = 0; i < 50; i++) {
            char id[16];
            snprintf(id, sizeof id, "k%d", i);
            seq = put(c, j, id, 1000 + round);
        }
    }
    herd_table_remove(c->table, "k7", 2);
    seq = herd_journal_drop(j, "k7", 2);
    herd_journal_commit(j, herd_table_size(c->table));
    wait_done(j, seq);
    jk_wait_metric(j, "herd_state_compactions_total", 1, 10000, release, NULL);
    uint64_t digest = herd_table_digest(c->table);
    /* More after the compaction, into the new journal. */
    seq = put(c, j, "k1", 5000);
    herd_journal_commit(j, herd_table_size(c->table));
    wait_done(j, seq);
    herd_journal_destroy(&j);
    assert_int_equal(file_size(c, "journal.1"), -1); /* folded into the snapshot */
    assert_true(file_size(c, "snapshot") > 0);
    assert_true(file_size(c, "journal.2") > 0);

    herd_table_t *before = c->table;
    c->table = NULL;
    j = must_open(c, HERD_FSYNC_EVERYSEC);
    assert_int_equal(c->loaded, 49 + 1); /* the snapshot's live records, then journal.2 */
    assert_int_equal(herd_table_size(c->table), 49);
    assert_null(herd_table_find(c->table, "k7", 2));
    const herd_record_t *r = herd_table_find(c->table, "k3", 2);
    assert_non_null(r);
    assert_int_equal(r->time.sec, 1099);
    r = herd_table_find(c->table, "k1", 2);
    assert_int_equal(r->time.sec, 5000);
    assert_int_equal(herd_table_digest(c->table), herd_table_digest(before));
    assert_true(digest != herd_table_digest(before));
    herd_table_destroy(&before);
    /* Asked for by hand: the next generation is folded in as well. */
    herd_journal_compact(j);
    jk_wait_metric(j, "herd_state_compactions_total", 1, 10000, release, NULL);
    herd_journal_destroy(&j);
    assert_int_equal(file_size(c, "journal.2"), -1);
    j = must_open(c, HERD_FSYNC_EVERYSEC);
    assert_int_equal(c->loaded, 49);
    herd_journal_destroy(&j);
}

static void test_replay_idempotent(void **state)
{
    ctx_t *c = *state;
    herd_journal_t *j = must_open(c, HERD_FSYNC_NEVER);
    /* A newer record, then an older one and a repeat (as replays and
     * floods can leave them): the table's ranking keeps the newest. */
    put(c, j, "x", 300);
    char at[128];
    int n = snprintf(at, sizeof at, "AT Bona +0.100000000 x %s 200.000000000", POS);
    herd_journal_append(j, at, (size_t)n);
    uint64_t seq = put(c, j, "x", 300);
    herd_journal_commit(j, 1);
    wait_done(j, seq);
    herd_journal_destroy(&j);
    j = must_open(c, HERD_FSYNC_NEVER);
    herd_table_t *once = c->table;
    assert_int_equal(herd_table_find(once, "x", 1)->time.sec, 300);
    herd_journal_destroy(&j);
    /* Loading the same files into a table that already holds them changes nothing. */
    herd_journal_conf_t conf = {.dir = c->dir, .fsync = HERD_FSYNC_NEVER, .load = load, .arg = c};
    char err[256];
    j = herd_journal_open(&conf, c->log, err, sizeof err);
    assert_non_null(j);
    assert_int_equal(herd_table_size(once), 1);
    assert_int_equal(herd_table_find(once, "x", 1)->time.sec, 300);
    herd_journal_destroy(&j);
}

static void test_hold_until_fsync(void **state)
{
    ctx_t *c = *state;
    herd_journal_t *j = must_open(c, HERD_FSYNC_ALWAYS);
    herd_ticket_t t = {1, 1};
    released_ok = released_refused = 0;
    /* Nothing pending: answer at once. */
    assert_false(herd_journal_hold(j, t, "AT x\n", 5));
    uint64_t seq = put(c, j, "a", 1);
    assert_true(herd_journal_hold(j, t, "AT a\n", 5));
    assert_int_equal(herd_journal_held(j), 1);
    herd_journal_commit(j, 1);
    wait_done(j, seq);
    herd_journal_recv(j, release, NULL);
    assert_int_equal(herd_journal_held(j), 0);
    assert_int_equal(released_ok, 1);
    assert_int_equal(released_refused, 0);
    assert_true(jk_metric(j, "herd_state_fsyncs_total") >= 1);
    herd_journal_destroy(&j);
    /* Other modes never hold. */
    j = must_open(c, HERD_FSYNC_EVERYSEC);
    put(c, j, "b", 1);
    assert_false(herd_journal_hold(j, t, "AT b\n", 5));
    assert_false(herd_journal_refusing(j));
    herd_journal_destroy(&j);
}

/* Sets the process's file-size limit (the writer thread shares it), which
 * stands in for a full disk: writes past it fail with EFBIG. */
static void limit_file_size(rlim_t bytes, struct rlimit *old)
{
    struct rlimit lim;
    getrlimit(RLIMIT_FSIZE, old);
    lim = *old;
    lim.rlim_cur = bytes;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
}

static void test_write_error_survived(void **state)
{
    ctx_t *c = *state;
    herd_journal_t *j = must_open(c, HERD_FSYNC_ALWAYS);
    released_ok = released_refused = 0;
    uint64_t seq = put(c, j, "small", 1);
    herd_journal_commit(j, 1);
    wait_done(j, seq);
    /* A file-size limit at the end of the journal's data (the file may
     * reach further with preallocated zeros): the next write fails (EFBIG),
     * like a full disk. */
    struct rlimit old;
    rlim_t at = (rlim_t)jk_metric(j, "herd_state_journal_bytes");
    assert_true(at > 16 && at < 4096);
    limit_file_size(at, &old);
    seq = put(c, j, "big", 2);
    herd_ticket_t t = {1, 2};
    assert_true(herd_journal_hold(j, t, "AT big\n", 7));
    herd_journal_commit(j, 2);
    wait_failed(j, seq);
    /* The write failed: never reported done, and the held reply is "?". */
    assert_true(herd_journal_done(j) < seq);
    assert_int_equal(herd_journal_held(j), 0);
    assert_int_equal(released_ok, 0);
    assert_int_equal(released_refused, 1);
    assert_false(herd_journal_durable(j));
    assert_true(herd_journal_refusing(j));
    assert_true(jk_metric(j, "herd_state_write_errors_total") >= 1);
    assert_int_equal(jk_metric(j, "herd_state_durable"), 0);
    assert_int_equal(jk_metric(j, "herd_state_writes_failing"), 1);
    char why[256];
    herd_journal_why(j, why, sizeof why);
    assert_non_null(strstr(why, "File too large"));
    /* While failing, a reply is held and answered "?" by the turn's end. */
    put(c, j, "more", 3);
    assert_true(herd_journal_hold(j, t, "AT more\n", 8));
    herd_journal_commit(j, 3);
    herd_journal_recv(j, release, NULL);
    int64_t deadline = herd_clock_ms() + 5000;
    while (released_refused < 2) {
        jk_take_reports(j, deadline, release, NULL);
    }
    assert_int_equal(released_ok, 0);
    /* Room again: the retry writes the backlog by itself and the state is
     * whole; acknowledgements resume. */
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    deadline = herd_clock_ms() + 5000;
    while (!herd_journal_durable(j)) {
        jk_take_reports(j, deadline, release, NULL);
    }
    assert_false(herd_journal_refusing(j));
    seq = put(c, j, "after", 4);
    assert_true(herd_journal_hold(j, t, "AT after\n", 9));
    herd_journal_commit(j, 4);
    wait_done(j, seq);
    herd_journal_recv(j, release, NULL);
    assert_int_equal(released_ok, 1);
    herd_journal_destroy(&j);
    j = must_open(c, HERD_FSYNC_ALWAYS);
    assert_int_equal(c->loaded, 4);
    herd_journal_destroy(&j);
}

/* A write that cannot even be preallocated for is not held up by it: the
 * records are written and acknowledged in the room there is. */
static void test_no_preallocation_needed(void **state)
{
    ctx_t *c = *state;
    herd_journal_t *j = must_open(c, HERD_FSYNC_ALWAYS);
    released_ok = released_refused = 0;
    struct rlimit old;
    rlim_t at = (rlim_t)jk_metric(j, "herd_state_journal_bytes");
    limit_file_size(at + 4096, &old); /* room for records, not for 4 MiB of zeros */
    uint64_t seq = 0;
    herd_ticket_t t = {1, 1};
    for (int i = 0; i < 10; i++) {
        char id[16];
        snprintf(id, sizeof id, "p%d", i);
        seq = put(c, j, id, 100 + i);
        assert_true(herd_journal_hold(j, t, "AT p\n", 5));
        herd_journal_commit(j, (size_t)i + 1);
        wait_done(j, seq);
    }
    herd_journal_recv(j, release, NULL);
    assert_int_equal(released_ok, 10);
    assert_int_equal(released_refused, 0);
    assert_true(herd_journal_durable(j));
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    herd_journal_destroy(&j);
    j = must_open(c, HERD_FSYNC_ALWAYS);
    assert_int_equal(c->loaded, 10);
    herd_journal_destroy(&j);
}

/* A record that never reaches the writer stands in for a hung disk (a
 * write that does not return): its held reply is answered "?" at the
 * deadline, the journal says why and refuses updates until the writer
 * answers again. */
static void test_hung_disk_deadline(void **state)
{
    ctx_t *c = *state;
    herd_journal_t *j = must_open(c, HERD_FSYNC_ALWAYS);
    released_ok = released_refused = 0;
    herd_ticket_t t = {1, 1};
    put(c, j, "stuck", 1);
    assert_true(herd_journal_hold(j, t, "AT stuck\n", 9));
    /* Not committed: the writer never hears of it. */
    int64_t t0 = herd_clock_ms(), deadline = t0 + 15000;
    while (released_refused == 0) {
        assert_true(herd_clock_ms() < deadline);
        zmq_pollitem_t it = {herd_journal_sock(j), 0, ZMQ_POLLIN, 0};
        zmq_poll(&it, 1, 100);
        herd_journal_recv(j, release, NULL);
    }
    assert_true(herd_clock_ms() - t0 >= 4900);
    assert_int_equal(released_ok, 0);
    assert_false(herd_journal_durable(j));
    assert_true(herd_journal_refusing(j));
    assert_int_equal(jk_metric(j, "herd_state_disk_hung"), 1);
    char why[256];
    herd_journal_why(j, why, sizeof why);
    assert_non_null(strstr(why, "hung"));
    /* While hung a new reply is "?" at once. */
    assert_true(herd_journal_hold(j, t, "AT more\n", 8));
    herd_journal_recv(j, release, NULL);
    assert_int_equal(released_refused, 2);
    /* The write finishes: acknowledgements resume. */
    uint64_t seq = herd_journal_seq(j);
    herd_journal_commit(j, 1);
    wait_done(j, seq);
    assert_true(herd_journal_durable(j));
    assert_false(herd_journal_refusing(j));
    seq = put(c, j, "next", 2);
    assert_true(herd_journal_hold(j, t, "AT next\n", 8));
    herd_journal_commit(j, 2);
    wait_done(j, seq);
    herd_journal_recv(j, release, NULL);
    assert_int_equal(released_ok, 1);
    herd_journal_destroy(&j);
}

/* Reads reports until `cond` holds (5 s at most). */
#define WAIT_FOR(j, cond)                                                                                    \
    do {                                                                                                     \
        int64_t until_ = herd_clock_ms() + 5000;                                                             \
        while (!(cond)) {                                                                                    \
            assert_true(herd_clock_ms() < until_);                                                           \
            zmq_pollitem_t it_ = {herd_journal_sock(j), 0, ZMQ_POLLIN, 0};                                   \
            zmq_poll(&it_, 1, 50);                                                                           \
            herd_journal_recv(j, release, NULL);                                                             \
        }                                                                                                    \
    } while (0)

/* Past the backlog bound the unwritten records are given up; once writes
 * succeed the node's whole table goes to the journal again, and only then
 * is the state durable and are updates acknowledged. */
static void test_given_up_backlog_is_made_good(void **state)
{
    ctx_t *c = *state;
    herd_table_destroy(&c->table);
    c->table = herd_table_new();
    herd_journal_conf_t conf = {
        .dir = c->dir, .fsync = HERD_FSYNC_ALWAYS, .backlog_max_bytes = 2048, .load = load, .arg = c};
    char err[256];
    herd_journal_t *j = herd_journal_open(&conf, c->log, err, sizeof err);
    assert_non_null(j);
    released_ok = released_refused = 0;
    uint64_t seq = put(c, j, "first", 1);
    herd_journal_commit(j, 1);
    wait_done(j, seq);
    struct rlimit old;
    limit_file_size((rlim_t)jk_metric(j, "herd_state_journal_bytes"), &old);
    herd_ticket_t t = {1, 1};
    for (int i = 0; i < 60; i++) {
        char id[16];
        snprintf(id, sizeof id, "g%d", i);
        seq = put(c, j, id, 10 + i);
    }
    assert_true(herd_journal_hold(j, t, "AT g\n", 5));
    herd_journal_commit(j, herd_table_size(c->table));
    wait_failed(j, seq);
    WAIT_FOR(j, released_refused == 1);
    assert_false(herd_journal_durable(j));
    assert_true(herd_journal_refusing(j));
    /* Still full: after a retry period the table is asked for, and fails
     * again; nothing is acknowledged meanwhile. */
    WAIT_FOR(j, herd_journal_wants_table(j));
    herd_journal_put_table(j, c->table);
    seq = herd_journal_seq(j);
    herd_journal_commit(j, herd_table_size(c->table));
    wait_failed(j, seq);
    assert_false(herd_journal_durable(j));
    /* Room again: the next request for the table succeeds. */
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    WAIT_FOR(j, herd_journal_wants_table(j));
    herd_journal_put_table(j, c->table);
    seq = herd_journal_seq(j);
    herd_journal_commit(j, herd_table_size(c->table));
    wait_done(j, seq);
    WAIT_FOR(j, herd_journal_durable(j));
    assert_false(herd_journal_refusing(j));
    assert_false(herd_journal_wants_table(j));
    assert_int_equal(released_ok, 0);
    assert_true(jk_metric(j, "herd_state_table_rewrites_total") >= 2);
    herd_journal_destroy(&j);
    j = must_open(c, HERD_FSYNC_ALWAYS);
    assert_int_equal(herd_table_size(c->table), 61);
    assert_non_null(herd_table_find(c->table, "g59", 3));
    herd_journal_destroy(&j);
}



/* How many files of the folder start with `prefix`. */
static int count_files(ctx_t *c, const char *prefix)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "ls '%s' | grep -c '^%s' > '%s/count'", c->dir, prefix, c->tmp);
    (void)!system(cmd);
    snprintf(cmd, sizeof cmd, "%s/count", c->tmp);
    FILE *f = fopen(cmd, "r");
    int n = 0;
    if (f) {
        if (fscanf(f, "%d", &n) != 1)
            n = 0;
        fclose(f);
    }
    return n;
}

/* A snapshot of journal.1 (records k0..k9), then records in journal.2 kept
 * as a leftover the snapshot claims to cover. Returns after closing. */
static void snapshot_and_leftover(ctx_t *c)
{
    char err[256];
    herd_journal_t *j = open_j(c, HERD_FSYNC_ALWAYS, 1, err, sizeof err);
    assert_non_null(j);
    uint64_t seq = 0;
    for (int i = 0; i < 10; i++) {
        char id[16];
        snprintf(id, sizeof id, "k%d", i);
        seq = put(c, j, id, 1000 + i);
    }
    herd_journal_commit(j, 10);
    wait_done(j, seq);
    herd_journal_compact(j);
    jk_wait_metric(j, "herd_state_compactions_total", 1, 10000, release, NULL);
    seq = put(c, j, "late", 2000);
    herd_journal_commit(j, 11);
    wait_done(j, seq);
    herd_journal_destroy(&j);
    assert_true(file_size(c, "snapshot") > 0);
    assert_true(file_size(c, "journal.2") > 0);
}

static void test_snapshot_header_flip_deletes_nothing(void **state)
{
    ctx_t *c = *state;
    snapshot_and_leftover(c);
    /* One bit of the generation field: 1 becomes 2^56 + 1 (issue 19: a
     * start took journal.2 as covered and deleted it). */
    size_t len;
    char *snap = jk_slurp(c->dir, "snapshot", &len);
    assert_memory_equal(snap, "HERDSNP2", 8);
    snap[15] ^= 0x01;
    jk_spill(c->dir, "snapshot", snap, len);
    free(snap);
    off_t j2 = file_size(c, "journal.2");
    herd_journal_t *j = must_open(c, HERD_FSYNC_ALWAYS);
    /* Nothing lost: the snapshot's records (each with a good CRC) and the
     * journal's. */
    assert_int_equal(herd_table_size(c->table), 11);
    assert_non_null(herd_table_find(c->table, "late", 4));
    assert_non_null(herd_table_find(c->table, "k7", 2));
    assert_true(file_size(c, "journal.2") >= j2);
    assert_int_equal(count_files(c, "journal.72057594037927938"), 0);
    /* The snapshot's records are only in it: it stays where a start reads
     * it until the whole table is in the journal, and then it is set
     * aside, and the state durable. */
    assert_true(file_size(c, "snapshot") > 0);
    assert_int_equal(count_files(c, "snapshot.bad-"), 0);
    assert_int_equal(jk_metric(j, "herd_state_set_aside_files"), 0);
    assert_true(herd_journal_wants_table(j));
    assert_false(herd_journal_durable(j));
    herd_journal_put_table(j, c->table);
    uint64_t seq = herd_journal_seq(j);
    herd_journal_commit(j, 11);
    wait_done(j, seq);
    jk_wait_metric(j, "herd_state_set_aside_files", 1, 5000, release, NULL);
    assert_int_equal(file_size(c, "snapshot"), -1);
    assert_int_equal(count_files(c, "snapshot.bad-"), 1);
    assert_true(herd_journal_durable(j));
    herd_journal_destroy(&j);
    /* Without the file set aside, everything is still there. */
    char path[96], cmd[512];
    snprintf(path, sizeof path, "%s/aside", c->tmp);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' && mv '%s'/snapshot.bad-* '%s'/", path, c->dir, path);
    assert_int_equal(system(cmd), 0);
    j = must_open(c, HERD_FSYNC_ALWAYS);
    assert_int_equal(herd_table_size(c->table), 11);
    herd_journal_destroy(&j);
}

/* A flipped byte in a snapshot's magic: the rest of its header still has
 * its CRC, so it is ours, damaged: its records are loaded (not set aside
 * unread), it stays until the whole table is in the journal, then it is set
 * aside byte for byte. A file whose header matches no magic of ours is set
 * aside at once (test_durability, and the journal case below). */
static void test_snapshot_bad_magic_set_aside(void **state)
{
    ctx_t *c = *state;
    snapshot_and_leftover(c);
    size_t len;
    char *snap = jk_slurp(c->dir, "snapshot", &len);
    snap[0] = 'X';
    jk_spill(c->dir, "snapshot", snap, len);
    herd_journal_t *j = must_open(c, HERD_FSYNC_ALWAYS);
    assert_int_equal(herd_table_size(c->table), 11); /* the snapshot's ten and the journal's one */
    assert_true(file_size(c, "snapshot") > 0);
    assert_int_equal(count_files(c, "snapshot.bad-"), 0);
    assert_true(herd_journal_wants_table(j));
    herd_journal_put_table(j, c->table);
    herd_journal_commit(j, 11);
    jk_wait_metric(j, "herd_state_set_aside_files", 1, 5000, release, NULL);
    assert_int_equal(file_size(c, "snapshot"), -1);
    /* A compaction now does not overwrite what was set aside. */
    herd_journal_compact(j);
    jk_wait_metric(j, "herd_state_compactions_total", 1, 10000, release, NULL);
    herd_journal_destroy(&j);
    size_t len2;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "cd '%s' && cp snapshot.bad-* aside.copy", c->dir);
    assert_int_equal(system(cmd), 0);
    char *kept = jk_slurp(c->dir, "aside.copy", &len2);
    assert_int_equal(len2, len);
    assert_memory_equal(kept, snap, len);
    free(kept);
    free(snap);
    /* And nothing was lost on the way. */
    herd_table_destroy(&c->table);
    j = must_open(c, HERD_FSYNC_ALWAYS);
    assert_int_equal(herd_table_size(c->table), 11);
    herd_journal_destroy(&j);
}

/* The same for a journal: a flipped magic byte leaves it ours, loaded; a
 * header of nobody's is set aside unread. */
static void test_journal_bad_magic(void **state)
{
    ctx_t *c = *state;
    snapshot_and_leftover(c);
    size_t len;
    char *jn = jk_slurp(c->dir, "journal.2", &len);
    jn[3] ^= 0x20;
    jk_spill(c->dir, "journal.2", jn, len);
    herd_journal_t *j = must_open(c, HERD_FSYNC_ALWAYS);
    assert_non_null(herd_table_find(c->table, "late", 4));
    assert_int_equal(count_files(c, "journal.2.bad-"), 0);
    herd_journal_destroy(&j);
    herd_table_destroy(&c->table);
    memset(jn, 'Z', 24); /* no CRC of ours any more */
    jk_spill(c->dir, "journal.2", jn, len);
    free(jn);
    j = must_open(c, HERD_FSYNC_ALWAYS);
    assert_null(herd_table_find(c->table, "late", 4));
    assert_int_equal(count_files(c, "journal.2.bad-"), 1);
    herd_journal_destroy(&j);
}

static void test_snapshot_body_damage_detected(void **state)
{
    ctx_t *c = *state;
    snapshot_and_leftover(c);
    /* Cut the snapshot's trailer off: every record frame is whole, but the
     * snapshot is not vouched complete. */
    size_t len;
    char *snap = jk_slurp(c->dir, "snapshot", &len);
    jk_spill(c->dir, "snapshot", snap, len - 21);
    free(snap);
    herd_journal_t *j = must_open(c, HERD_FSYNC_ALWAYS);
    assert_int_equal(count_files(c, "snapshot.bad-"), 0); /* not before the table is in the journal */
    assert_int_equal(herd_table_size(c->table), 11);
    assert_true(herd_journal_wants_table(j));
    herd_journal_put_table(j, c->table);
    herd_journal_commit(j, 11);
    jk_wait_metric(j, "herd_state_set_aside_files", 1, 5000, release, NULL);
    assert_int_equal(count_files(c, "snapshot.bad-"), 1);
    herd_journal_destroy(&j);
}

/* A folder written in the version-1 format (16-byte headers, no CRC, no
 * trailer) is still read, and its generation is not trusted. */
static void test_version1_read(void **state)
{
    ctx_t *c = *state;
    char cmd[256];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", c->dir);
    assert_int_equal(system(cmd), 0);
    char buf[4096];
    size_t n = 0;
    memcpy(buf, "HERDSNP1", 8);
    memset(buf + 8, 0, 8);
    buf[8] = 5; /* claims to cover journal.5 */
    n = 16;
    const char *at1 = "AT Bailey +0.100000000 old " POS " 100.000000000";
    n += hj_frame_for_test(buf + n, 'A', at1, strlen(at1));
    jk_spill(c->dir, "snapshot", buf, n);
    memcpy(buf, "HERDJNL1", 8);
    memset(buf + 8, 0, 8);
    buf[8] = 3;
    n = 16;
    const char *at2 = "AT Bailey +0.100000000 three " POS " 300.000000000";
    n += hj_frame_for_test(buf + n, 'A', at2, strlen(at2));
    jk_spill(c->dir, "journal.3", buf, n);
    herd_journal_t *j = must_open(c, HERD_FSYNC_ALWAYS);
    assert_non_null(herd_table_find(c->table, "old", 3));
    assert_non_null(herd_table_find(c->table, "three", 5)); /* not skipped as "covered" */
    assert_true(file_size(c, "journal.3") > 0);         /* not deleted */
    uint64_t seq = put(c, j, "new", 400);
    herd_journal_commit(j, 3);
    wait_done(j, seq);
    herd_journal_destroy(&j);
    j = must_open(c, HERD_FSYNC_ALWAYS);
    assert_int_equal(herd_table_size(c->table), 3);
    herd_journal_compact(j);
    jk_wait_metric(j, "herd_state_compactions_total", 1, 10000, release, NULL);
    herd_journal_destroy(&j);
    char *snap = jk_slurp(c->dir, "snapshot", &n);
    assert_memory_equal(snap, "HERDSNP2", 8);
    free(snap);
    j = must_open(c, HERD_FSYNC_ALWAYS);
    assert_int_equal(herd_table_size(c->table), 3);
    herd_journal_destroy(&j);
}

static void test_headerless_journal_set_aside(void **state)
{
    ctx_t *c = *state;
    write_some(c, 5, HERD_FSYNC_ALWAYS);
    jk_spill(c->dir, "journal.2", "garbage, not a journal", 22);
    jk_spill(c->dir, "journal.3", "", 0); /* empty: holds nothing, removed */
    herd_journal_t *j = must_open(c, HERD_FSYNC_ALWAYS);
    assert_int_equal(c->loaded, 5);
    assert_int_equal(count_files(c, "journal.2.bad-"), 1);
    assert_int_equal(count_files(c, "journal.3"), 0);
    /* Appends go to a new generation past every one seen. */
    assert_true(file_size(c, "journal.4") > 0);
    herd_journal_destroy(&j);
}

static void test_unusable_folder(void **state)
{
    ctx_t *c = *state;
    char file[128], err[256] = "";
    snprintf(file, sizeof file, "%s/state", c->tmp);
    int fd = open(file, O_WRONLY | O_CREAT, 0644); /* a file where the folder should be */
    close(fd);
    assert_null(open_j(c, HERD_FSYNC_EVERYSEC, 0, err, sizeof err));
    assert_non_null(strstr(err, "cannot make state folder"));
    assert_non_null(strstr(err, c->dir));
    assert_null(strchr(err, '\n'));
}

static void test_one_server_per_folder(void **state)
{
    ctx_t *c = *state;
    herd_journal_t *j = must_open(c, HERD_FSYNC_EVERYSEC);
    char err[256] = "";
    herd_table_t *keep = c->table;
    c->table = NULL;
    assert_null(open_j(c, HERD_FSYNC_EVERYSEC, 0, err, sizeof err));
    assert_non_null(strstr(err, "in use"));
    herd_table_destroy(&keep);
    herd_journal_destroy(&j);
}

/* herd_table_remove (added for DROP replay): linear probing with backward
 * shift, so every record after a hole must stay findable. */
static void test_table_remove(void **state)
{
    (void)state;
    herd_table_t *t = herd_table_new(), *kept = herd_table_new();
    char id[32], at[160];
    for (int i = 0; i < 20000; i++) {
        int n = snprintf(id, sizeof id, "r%d", i);
        int m = snprintf(at, sizeof at, "AT Bailey +0.100000000 %s %s %d.000000000", id, POS, 1000 + i);
        size_t pos = (size_t)(strstr(at, POS) - at);
        herd_table_update(t, id, (size_t)n, (herd_time_t){1000 + i, 0}, at, (size_t)m, pos, strlen(POS), NULL);
        if (i % 3)
            herd_table_update(kept, id, (size_t)n, (herd_time_t){1000 + i, 0}, at, (size_t)m, pos, strlen(POS),
                              NULL);
    }
    for (int i = 0; i < 20000; i += 3) {
        int n = snprintf(id, sizeof id, "r%d", i);
        assert_true(herd_table_remove(t, id, (size_t)n));
        assert_false(herd_table_remove(t, id, (size_t)n));
    }
    assert_int_equal(herd_table_size(t), herd_table_size(kept));
    assert_int_equal(herd_table_digest(t), herd_table_digest(kept));
    for (int i = 0; i < 20000; i++) {
        int n = snprintf(id, sizeof id, "r%d", i);
        const herd_record_t *r = herd_table_find(t, id, (size_t)n);
        if (i % 3 == 0)
            assert_null(r);
        else {
            assert_non_null(r);
            assert_int_equal(r->time.sec, 1000 + i);
        }
    }
    size_t cursor = 0, seen = 0;
    while (herd_table_next(t, &cursor))
        seen++;
    assert_int_equal(seen, herd_table_size(kept));
    herd_table_destroy(&t);
    herd_table_destroy(&kept);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c),
        cmocka_unit_test(test_table_remove),
        cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail_cut, setup, teardown),
        cmocka_unit_test_setup_teardown(test_zero_tail_is_not_damage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_checksum_skipped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compaction_keeps_latest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replay_idempotent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hold_until_fsync, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_error_survived, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_preallocation_needed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hung_disk_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_given_up_backlog_is_made_good, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_header_flip_deletes_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_bad_magic_set_aside, setup, teardown),
        cmocka_unit_test_setup_teardown(test_journal_bad_magic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_body_damage_detected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_version1_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_headerless_journal_set_aside, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unusable_folder, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_server_per_folder, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
