/* Unit tests for herd_log: byte escaping, the event lines in the file, the
 * writer thread (order, several handles, close), time stamps, reopen after
 * the file and its folder were moved away, and a disk that does not keep up
 * (a FIFO nobody reads): bounded queue, dropped lines counted and marked. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "herd_log.h"

static void check_escape(const char *in, size_t len, const char *want)
{
    char out[256];
    size_t n = herd_log_escape(out, sizeof out, in, len);
    assert_int_equal(n, strlen(want));
    assert_memory_equal(out, want, n);
}

static void test_escape(void **state)
{
    (void)state;
    check_escape("IAMAT a +1+1 5", 14, "IAMAT a +1+1 5");
    check_escape("", 0, "");
    check_escape("a\tb\r\n", 5, "a\\tb\\r\\n");
    check_escape("q\"b\\", 4, "q\\\"b\\\\");
    check_escape("\x00\x01\x0b\x0c\x1f\x7f\x80\xff", 8, "\\x00\\x01\\x0b\\x0c\\x1f\\x7f\\x80\\xff");
    check_escape("caf\xc3\xa9", 5, "caf\\xc3\\xa9"); /* UTF-8 is escaped too: the log is ASCII */
    check_escape("~ !", 3, "~ !");
}

/* The escape of one byte, the slow and obvious way. */
static size_t escape_byte(char *out, unsigned char c)
{
    switch (c) {
    case '\t': return (size_t)sprintf(out, "\\t");
    case '\n': return (size_t)sprintf(out, "\\n");
    case '\r': return (size_t)sprintf(out, "\\r");
    case '"': return (size_t)sprintf(out, "\\\"");
    case '\\': return (size_t)sprintf(out, "\\\\");
    default:
        if (c < 0x20 || c >= 0x7f)
            return (size_t)sprintf(out, "\\x%02x", c);
        out[0] = (char)c;
        return 1;
    }
}

/* Every byte value at every offset of a plain 40-byte line (the fast path
 * reads eight bytes at a time) is escaped as the slow way says. */
static void test_escape_every_byte_everywhere(void **state)
{
    (void)state;
    for (int c = 0; c < 256; c++) {
        for (size_t at = 0; at < 40; at++) {
            char in[40], want[200], got[200];
            memset(in, 'a' + (int)(at % 26), sizeof in);
            in[at] = (char)c;
            size_t n = 0;
            for (size_t i = 0; i < sizeof in; i++)
                n += escape_byte(want + n, (unsigned char)in[i]);
            size_t m = herd_log_escape(got, sizeof got, in, sizeof in);
            assert_int_equal(m, n);
            assert_memory_equal(got, want, n);
        }
    }
}

/* herd_log_escape_prefix against the slow way on random lines (plain runs
 * of every length, bytes of every kind) cut at random capacities: the
 * output is the longest whole-escape prefix that fits, and *used says how
 * much of the line it covers. */
static void test_escape_prefix_random(void **state)
{
    (void)state;
    srand(4242);
    for (int round = 0; round < 20000; round++) {
        char in[100], want[400], got[400];
        size_t len = (size_t)(rand() % (int)sizeof in), wlen[101];
        for (size_t i = 0; i < len; i++)
            in[i] = (char)(rand() % 8 ? ' ' + rand() % 95 : rand() % 256);
        wlen[0] = 0;
        for (size_t i = 0; i < len; i++)
            wlen[i + 1] = wlen[i] + escape_byte(want + wlen[i], (unsigned char)in[i]);
        size_t cap = (size_t)(rand() % (int)(wlen[len] + 2)), used = 99999;
        size_t whole = 0;
        while (whole < len && wlen[whole + 1] <= cap)
            whole++;
        size_t m = herd_log_escape_prefix(got, cap, in, len, &used);
        assert_int_equal(used, whole);
        assert_int_equal(m, wlen[whole]);
        assert_memory_equal(got, want, m);
    }
}

static void test_escape_stops_at_capacity(void **state)
{
    (void)state;
    char out[5];
    /* Never a partial escape: "ab" then "\x01" would need 4 more bytes. */
    assert_int_equal(herd_log_escape(out, sizeof out, "ab\x01", 3), 2);
    assert_memory_equal(out, "ab", 2);
    assert_int_equal(herd_log_escape(out, sizeof out, "abcdefg", 7), 5);
    assert_memory_equal(out, "abcde", 5);
    assert_int_equal(herd_log_escape(out, 0, "a", 1), 0);
}

/* ---- helpers ---- */

/* A fresh folder under /tmp, removed by rm_tree. */
static void make_tmp(char *dir, size_t len)
{
    snprintf(dir, len, "/tmp/herd-log-test-XXXXXX");
    assert_non_null(mkdtemp(dir));
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void rm_tree(const char *dir)
{
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* The whole file, NUL-terminated (NULL if it cannot be read). */
/* A new log at DIR/S.log in a fresh temporary folder (dir, path filled). */
static herd_log_t *open_tmp_log(char *dir, size_t dirlen, char *path, size_t pathlen)
{
    char err[256];
    make_tmp(dir, dirlen);
    snprintf(path, pathlen, "%s/S.log", dir);
    herd_log_t *log = herd_log_open(path, err, sizeof err);
    assert_non_null(log);
    return log;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    size_t cap = 4096, len = 0;
    char *s = malloc(cap);
    assert_non_null(s);
    size_t n;
    while ((n = fread(s + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len < 2) {
            cap *= 2;
            s = realloc(s, cap);
            assert_non_null(s);
        }
    }
    fclose(f);
    s[len] = '\0';
    return s;
}

static long count_lines(const char *s)
{
    long n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Spins until the clock has moved on by `us` microseconds (so that two
 * lines read at both ends cannot share a time stamp). */
static void spin_us(int64_t us)
{
    int64_t until = now_us() + us;
    while (now_us() < until) {
    }
}

/* ---- tests ---- */

static void test_lines_in_the_file(void **state)
{
    (void)state;
    char dir[64], path[128];
    make_tmp(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/sub/S.log", dir); /* a missing folder is made */
    char err[256];
    herd_log_t *log = herd_log_open(path, err, sizeof err);
    assert_non_null(log);
    herd_log_event(log, "conn %d opened", 7);
    herd_log_data(log, "conn 7 in ", "WHATSAT\tx\n", 10);
    herd_log_data_n(log, "conn 8 out ...", 11, "AT", 2);
    herd_log_close(&log);
    assert_null(log);

    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[256];
    assert_non_null(fgets(line, sizeof line, f));
    /* 2026-11-26T05:31:50.123456Z conn 7 opened */
    assert_int_equal(strlen(line), 28 + strlen("conn 7 opened\n"));
    assert_int_equal(line[4], '-');
    assert_int_equal(line[10], 'T');
    assert_int_equal(line[19], '.');
    assert_int_equal(line[26], 'Z');
    assert_string_equal(line + 28, "conn 7 opened\n");
    assert_non_null(fgets(line, sizeof line, f));
    assert_string_equal(line + 28, "conn 7 in \"WHATSAT\\tx\\n\"\n");
    assert_non_null(fgets(line, sizeof line, f));
    assert_string_equal(line + 28, "conn 8 out \"AT\"\n");
    assert_null(fgets(line, sizeof line, f));
    fclose(f);
    rm_tree(dir);
}

/* A handle flushed by a reactor (herd_log_attach_loop): per-command lines
 * logged in a few busy turns reach the file once the reactor goes quiet, with no
 * further event or flush of the test's, in order. A second thread watches
 * the log's totals and wakes the reactor (an eventfd) only once the lines
 * are written, so nothing but the log's own timer can hand them over. */
typedef struct {
    herd_log_t *log;
    int turns;
    bool timed_out;
    bool seen; /* the watcher saw the three lines written */
    int efd;
    herd_watch_t watch;
} attached_t;

static void attached_turn(herd_loop_t *loop, void *arg)
{
    attached_t *a = arg;
    if (a->turns < 3) {
        char n = (char)('1' + a->turns++);
        herd_log_data_n(a->log, "turn ", 5, &n, 1); /* a per-command line: it may wait */
        herd_loop_again(loop);
    }
}

static void attached_woken(herd_loop_t *loop, herd_watch_t *w, uint32_t events)
{
    (void)w;
    (void)events;
    herd_loop_stop(loop);
}

static void attached_watchdog(herd_loop_t *loop, void *arg)
{
    ((attached_t *)arg)->timed_out = true;
    herd_loop_stop(loop);
}

static void *attached_watcher(void *arg)
{
    attached_t *a = arg;
    for (int i = 0; i < 10000; i++) {
        herd_log_stats_t st;
        herd_log_stats(a->log, &st);
        if (st.lines_written == 3) {
            a->seen = true;
            break;
        }
        usleep(1000); /* poll interval of this bounded wait */
    }
    uint64_t one = 1;
    assert_int_equal(write(a->efd, &one, sizeof one), (ssize_t)sizeof one);
    return NULL;
}

static void test_attached_to_a_loop(void **state)
{
    (void)state;
    char dir[64], path[128];
    herd_log_t *log = open_tmp_log(dir, sizeof dir, path, sizeof path);
    herd_loop_t *loop = herd_loop_new();
    assert_non_null(loop);
    attached_t a = {.log = log, .efd = eventfd(0, EFD_NONBLOCK)};
    assert_true(a.efd >= 0);
    a.watch = (herd_watch_t){.fd = a.efd, .fn = attached_woken, .arg = &a};
    assert_int_equal(herd_loop_watch(loop, &a.watch, EPOLLIN), 0);
    assert_int_equal(herd_log_attach_loop(log, loop), 0);
    assert_true(herd_loop_add_tick(loop, HERD_PHASE_COMMANDS, attached_turn, &a) > 0);
    assert_true(herd_loop_add_timer(loop, 20000, attached_watchdog, &a) > 0);
    pthread_t watcher;
    assert_int_equal(pthread_create(&watcher, NULL, attached_watcher, &a), 0);
    assert_int_equal(herd_loop_run(loop), 0);
    pthread_join(watcher, NULL);
    assert_false(a.timed_out);
    assert_true(a.seen);
    herd_loop_unwatch(loop, &a.watch);
    close(a.efd);
    herd_log_detach_loop(log);
    herd_log_detach_loop(log); /* twice: nothing more */
    herd_loop_destroy(&loop);
    herd_log_close(&log);
    char *text = slurp(path);
    assert_non_null(text);
    assert_int_equal(count_lines(text), 3);
    char *one = strstr(text, "turn \"1\"\n"), *two = strstr(text, "turn \"2\"\n"),
         *three = strstr(text, "turn \"3\"\n");
    assert_true(one && two && three && one < two && two < three);
    free(text);
    rm_tree(dir);
}

/* A big event (a long Places reply) gets its own buffer, whole, in order. */
static void test_big_event_in_order(void **state)
{
    (void)state;
    char dir[64], path[128];
    herd_log_t *log = open_tmp_log(dir, sizeof dir, path, sizeof path);
    size_t big = 300 * 1024;
    char *data = malloc(big);
    assert_non_null(data);
    memset(data, 'a', big);
    herd_log_event(log, "before");
    herd_log_data(log, "big ", data, big);
    herd_log_event(log, "after");
    herd_log_close(&log);
    char *s = slurp(path);
    assert_non_null(s);
    assert_int_equal(count_lines(s), 3);
    assert_memory_equal(s + 28, "before\n", 7);
    char *l2 = strchr(s, '\n') + 1;
    assert_int_equal(strchr(l2, '\n') - l2, (long)(28 + 4 + 2 + big));
    assert_string_equal(strchr(l2, '\n') + 1 + 28, "after\n");
    free(s);
    free(data);
    rm_tree(dir);
}

/* herd_log_set_now fixes the stamp until the flush; the turn clock reads the
 * clock at the first line of a turn only, and at every event: an event
 * carries its own time, and the per-command lines after it share it. */
static void test_time_stamps(void **state)
{
    (void)state;
    char dir[64], path[128];
    herd_log_t *log = open_tmp_log(dir, sizeof dir, path, sizeof path);
    struct timespec t = {.tv_sec = 1000000000, .tv_nsec = 123456789};
    herd_log_set_now(log, &t);
    herd_log_event(log, "a");
    spin_us(20);
    herd_log_event(log, "b");
    herd_log_flush(log); /* ends the set time */
    herd_log_event(log, "c");
    herd_log_set_turn_clock(log, true);
    herd_log_flush(log);
    herd_log_data_n(log, "d ", 2, "", 0);
    spin_us(20);
    herd_log_data_n(log, "e ", 2, "", 0);
    herd_log_flush(log);
    spin_us(20);
    herd_log_event(log, "f");
    for (int i = 0; i < 40; i++) { /* a long turn: a new reading after 32 lines */
        herd_log_data_n(log, "long ", 5, "x", 1);
        spin_us(2);
    }
    herd_log_set_turn_clock(log, false);
    herd_log_flush(log);
    spin_us(20);
    herd_log_event(log, "g");
    spin_us(20);
    herd_log_event(log, "h");
    herd_log_set_turn_clock(log, true);
    herd_log_flush(log);
    herd_log_data_n(log, "x ", 2, "", 0);
    spin_us(20);
    herd_log_event(log, "y");
    herd_log_data_n(log, "z ", 2, "", 0);
    herd_log_close(&log);

    char *s = slurp(path);
    assert_non_null(s);
    assert_int_equal(count_lines(s), 51);
    char *line[51];
    line[0] = s;
    for (int i = 1; i < 51; i++)
        line[i] = strchr(line[i - 1], '\n') + 1;
    assert_true(memcmp(line[49], line[48], 27) > 0);          /* an event reads the clock */
    assert_memory_equal(line[50], line[49], 27);              /* the lines after it share it */
    /* "f" and "long 0".."long 39" are lines 5..45: readings at 5 and 37. */
    for (int i = 6; i < 37; i++)
        assert_memory_equal(line[i], line[5], 27);
    assert_true(memcmp(line[37], line[36], 27) > 0);
    for (int i = 38; i < 46; i++)
        assert_memory_equal(line[i], line[37], 27);
    memmove(&line[6], &line[46], 2 * sizeof line[0]); /* "g" and "h" as 6 and 7 below */
    assert_memory_equal(line[0], "2001-09-09T01:46:40.123456Z a\n", 30);
    assert_memory_equal(line[1], "2001-09-09T01:46:40.123456Z b\n", 30);
    assert_memory_equal(line[2], "20", 2);
    assert_true(memcmp(line[2], "2001", 4) > 0);              /* the clock again */
    assert_memory_equal(line[3], line[4], 27);                /* one reading for the turn */
    assert_true(memcmp(line[5], line[4], 27) > 0);            /* the next turn reads again */
    assert_true(memcmp(line[7], line[6], 27) > 0);            /* off: a reading per line */
    assert_true(memcmp(line[6], line[5], 27) > 0);
    free(s);
    rm_tree(dir);
}

/* Whether this system lets a thread set itself to SCHED_BATCH (a sandbox's
 * system-call filter may refuse it: the server then runs as before). */
static void *probe_batch(void *arg)
{
    struct sched_param p = {.sched_priority = 0};
    *(int *)arg = sched_setscheduler(0, SCHED_BATCH, &p);
    return NULL;
}

/* The writer thread runs as SCHED_BATCH (herd_thread.h): found among this
 * process's threads by its name once a log is open, its policy read from
 * the kernel. */
static void test_writer_runs_as_batch(void **state)
{
    (void)state;
    int allowed = -1;
    pthread_t probe;
    assert_int_equal(pthread_create(&probe, NULL, probe_batch, &allowed), 0);
    pthread_join(probe, NULL);
    if (allowed != 0)
        skip(); /* not allowed here: nothing to check */
    char dir[64], path[128], err[256];
    make_tmp(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/S.log", dir);
    herd_log_t *log = herd_log_open(path, err, sizeof err);
    assert_non_null(log);
    herd_log_event(log, "one");
    assert_int_equal(herd_log_sync(log), 0); /* the writer has run */
    int policy = -1, writers = 0;
    DIR *d = opendir("/proc/self/task");
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char comm_path[300], comm[32] = "";
        snprintf(comm_path, sizeof comm_path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(comm_path, "r");
        if (!f)
            continue;
        if (fgets(comm, sizeof comm, f) && strcmp(comm, "herd-log\n") == 0) {
            writers++;
            policy = sched_getscheduler((pid_t)atoi(e->d_name));
        }
        fclose(f);
    }
    closedir(d);
    herd_log_close(&log);
    rm_tree(dir);
    assert_int_equal(writers, 1);
    assert_int_equal(policy, SCHED_BATCH);
}

/* `mv S.log x` and the folder removed, then reopen: the lines before (even
 * those not yet flushed) are in x, the lines after in a new S.log in a
 * folder made again, and nothing says "cannot reopen". */
static void test_reopen_after_mv(void **state)
{
    (void)state;
    char dir[64], sub[96], path[128], moved[128], err[256];
    make_tmp(dir, sizeof dir);
    snprintf(sub, sizeof sub, "%s/logs", dir);
    snprintf(path, sizeof path, "%s/S.log", sub);
    snprintf(moved, sizeof moved, "%s/x", dir);
    herd_log_t *log = herd_log_open(path, err, sizeof err);
    assert_non_null(log);
    herd_log_event(log, "one");
    herd_log_flush(log);
    herd_log_event(log, "two");
    assert_int_equal(herd_log_sync(log), 0);
    assert_int_equal(rename(path, moved), 0);
    assert_int_equal(rmdir(sub), 0);
    herd_log_event(log, "three"); /* still buffered when the reopen is asked */
    assert_int_equal(herd_log_reopen(log), 0);
    herd_log_event(log, "four");
    herd_log_close(&log);

    char *old = slurp(moved), *cur = slurp(path);
    assert_non_null(old);
    assert_non_null(cur);
    assert_int_equal(count_lines(old), 3);
    assert_non_null(strstr(old, "Z one\n"));
    assert_non_null(strstr(old, "Z three\n"));
    assert_int_equal(count_lines(cur), 1);
    assert_string_equal(cur + 28, "four\n");
    assert_null(strstr(old, "cannot reopen"));
    free(old);
    free(cur);
    rm_tree(dir);
}

/* When the folder cannot be made again (a file took its name), the writer
 * says so in the old file and keeps writing there. */
static void test_reopen_failure_keeps_old_file(void **state)
{
    (void)state;
    char dir[64], sub[96], path[128], moved[128], err[256];
    make_tmp(dir, sizeof dir);
    snprintf(sub, sizeof sub, "%s/logs", dir);
    snprintf(path, sizeof path, "%s/S.log", sub);
    snprintf(moved, sizeof moved, "%s/x", dir);
    herd_log_t *log = herd_log_open(path, err, sizeof err);
    assert_non_null(log);
    herd_log_event(log, "one");
    assert_int_equal(herd_log_sync(log), 0);
    assert_int_equal(rename(path, moved), 0);
    assert_int_equal(rmdir(sub), 0);
    FILE *blocker = fopen(sub, "w");
    assert_non_null(blocker);
    fclose(blocker);
    assert_int_equal(herd_log_reopen(log), 0);
    herd_log_event(log, "two");
    herd_log_close(&log);
    char *old = slurp(moved);
    assert_non_null(old);
    assert_int_equal(count_lines(old), 3);
    char *why = strstr(old, "Z cannot reopen the log file ");
    assert_non_null(why);
    assert_non_null(strstr(why, "still writing to the old file\n"));
    assert_non_null(strstr(why, "Z two\n"));
    free(old);
    rm_tree(dir);
}

#define PER_THREAD 20000

/* Logs PER_THREAD numbered lines on its own handle, a "turn" every 37. */
static void *second_thread(void *arg)
{
    herd_log_t *first = arg;
    char err[256];
    herd_log_t *log = herd_log_attach(first, err, sizeof err);
    if (!log)
        return NULL;
    for (int i = 0; i < PER_THREAD; i++) {
        herd_log_event(log, "t2 %d", i);
        if (i % 37 == 0)
            herd_log_flush(log);
    }
    herd_log_close(&log);
    return arg;
}

/* Two threads, each on its own handle: every line written once, each
 * thread's lines in its order; the totals count them. */
static void test_two_threads_in_order(void **state)
{
    (void)state;
    char dir[64], path[128];
    herd_log_t *log = open_tmp_log(dir, sizeof dir, path, sizeof path);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, second_thread, log), 0);
    for (int i = 0; i < PER_THREAD; i++) {
        herd_log_event(log, "t1 %d", i);
        if (i % 53 == 0)
            herd_log_flush(log);
    }
    void *ok = NULL;
    assert_int_equal(pthread_join(t, &ok), 0);
    assert_ptr_equal(ok, log);
    assert_int_equal(herd_log_sync(log), 0);
    herd_log_stats_t st;
    herd_log_stats(log, &st);
    assert_int_equal(st.lines_written, 2 * PER_THREAD);
    assert_int_equal(st.lines_dropped, 0);
    assert_int_equal(st.queue_bytes, 0);
    herd_log_close(&log);

    char *s = slurp(path);
    assert_non_null(s);
    assert_int_equal(st.bytes_written, strlen(s));
    int next[3] = {0, 0, 0};
    for (char *l = s; *l; l = strchr(l, '\n') + 1) {
        int who, n;
        assert_int_equal(sscanf(l + 28, "t%d %d", &who, &n), 2);
        assert_true(who == 1 || who == 2);
        assert_int_equal(n, next[who]);
        next[who]++;
    }
    assert_int_equal(next[1], PER_THREAD);
    assert_int_equal(next[2], PER_THREAD);
    free(s);
    rm_tree(dir);
}

/* The system clock set back while a handle's buffer fills: that buffer's
 * lines are not taken as in order, so another handle's line goes where its
 * time puts it among them (the writer looks at each line, as it does for
 * every buffer whose last line is not due). */
static void test_clock_set_back_in_one_buffer(void **state)
{
    (void)state;
    char dir[64], path[128], err[256];
    herd_log_t *a = open_tmp_log(dir, sizeof dir, path, sizeof path);
    herd_log_t *b = herd_log_attach(a, err, sizeof err);
    assert_non_null(b);
    struct timespec t0 = {1000000040, 0}, t1 = {1000000040, 500000000}, t2 = {1000000039, 600000000},
                    tb = {1000000040, 200000000};
    herd_log_set_now(a, &t0);
    herd_log_event(a, "a0");
    herd_log_set_now(a, &t1);
    herd_log_event(a, "a1");
    herd_log_set_now(a, &t2); /* set back */
    herd_log_event(a, "a2");
    herd_log_set_now(b, &tb);
    herd_log_event(b, "b");
    herd_log_flush(b); /* held: a has an earlier line not handed over */
    herd_log_flush(a);
    assert_int_equal(herd_log_sync(a), 0);
    herd_log_close(&b);
    herd_log_close(&a);
    char *s = slurp(path);
    assert_non_null(s);
    assert_int_equal(count_lines(s), 4);
    const char *want[4] = {"a0\n", "b\n", "a1\n", "a2\n"};
    char *l = s;
    for (int i = 0; i < 4; i++, l = strchr(l, '\n') + 1)
        assert_memory_equal(l + 28, want[i], strlen(want[i]));
    free(s);
    rm_tree(dir);
}

/* Reads a FIFO into memory until its writer closes it. */
typedef struct {
    int fd;     /* the FIFO's read end */
    char *data; /* what was read */
    size_t len; /* bytes in data */
    size_t cap; /* bytes allocated */
} fifo_reader_t;

static void *read_fifo(void *arg)
{
    fifo_reader_t *r = arg;
    for (;;) {
        if (r->cap - r->len < 65536) {
            r->cap = r->cap ? r->cap * 2 : 1 << 20;
            r->data = realloc(r->data, r->cap);
            if (!r->data)
                return NULL;
        }
        ssize_t n = read(r->fd, r->data + r->len, r->cap - r->len);
        if (n > 0) {
            r->len += (size_t)n;
        } else if (n == 0) {
            return r; /* the log closed its end */
        } else if (errno == EAGAIN) {
            struct pollfd p = {.fd = r->fd, .events = POLLIN};
            poll(&p, 1, 1000);
        } else if (errno != EINTR) {
            return NULL;
        }
    }
}

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib;
}

#define SLOW_LINES 300000
#define SLOW_CAP   (256 * 1024)

/* A disk that does not keep up: the log is a FIFO nobody reads, so the
 * writer blocks in write(2). The producer goes on without blocking, the
 * queue never passes its cap, whole buffers are dropped and counted, and
 * once the FIFO is read again a marker line stands at each gap with the
 * number of lines missing there. */
static void test_slow_disk_drops_and_marks(void **state)
{
    (void)state;
    char dir[64], path[128], err[256];
    make_tmp(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/S.log", dir);
    assert_int_equal(mkfifo(path, 0600), 0);
    fifo_reader_t r = {.fd = open(path, O_RDONLY | O_NONBLOCK)};
    assert_true(r.fd >= 0);
    herd_log_t *log = herd_log_open(path, err, sizeof err);
    assert_non_null(log);
    herd_log_set_queue_cap(log, SLOW_CAP);

    alarm(60); /* a producer that blocked on the disk would hang here: fail instead */
    long rss0 = rss_kib();
    uint64_t max_queue = 0;
    herd_log_stats_t st;
    for (int i = 0; i < SLOW_LINES; i++) {
        herd_log_event(log, "line %d some padding to make the line longer than a few bytes", i);
        if (i % 50 == 49) { /* the end of a turn */
            herd_log_flush(log);
            herd_log_stats(log, &st);
            if (st.queue_bytes > max_queue)
                max_queue = st.queue_bytes;
        }
    }
    herd_log_flush(log);
    alarm(0);
    long rss1 = rss_kib();
    herd_log_stats(log, &st);
    assert_true(max_queue <= SLOW_CAP);
    assert_true(max_queue > SLOW_CAP / 2); /* it did fill up */
    assert_true(st.lines_dropped > SLOW_LINES / 2);
    assert_true(st.lines_written < 2000); /* the 64 KiB of the pipe, at most */
#ifndef __SANITIZE_ADDRESS__
    /* About 25 MB were logged; the memory held stays near the cap (the
     * sanitizer's quarantine keeps freed memory, so only without it). */
    assert_true(rss1 - rss0 < 8 * 1024);
#else
    (void)rss0;
    (void)rss1;
#endif

    /* The disk comes back: read the FIFO, wait for the queue to empty. */
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, read_fifo, &r), 0);
    int64_t deadline = now_us() + 20 * 1000000;
    do {
        herd_log_stats(log, &st);
    } while (st.queue_bytes > 0 && now_us() < deadline && !sched_yield());
    assert_int_equal(st.queue_bytes, 0);
    herd_log_event(log, "line %d after the disk came back", SLOW_LINES);
    herd_log_close(&log); /* closes the FIFO: the reader sees its end */
    void *ok = NULL;
    assert_int_equal(pthread_join(t, &ok), 0);
    assert_ptr_equal(ok, &r);

    /* Every line is "line N ..." in order, or a marker whose count is the
     * size of the gap it stands in; the markers add up to the totals. */
    long prev = -1, gap = 0, markers = 0, present = 0;
    uint64_t marked_lines = 0, marked_bytes = 0;
    for (char *l = r.data; l < r.data + r.len;) {
        char *nl = memchr(l, '\n', (size_t)(r.data + r.len - l));
        assert_non_null(nl);
        *nl = '\0';
        unsigned long long nlines, nbytes;
        long n;
        if (sscanf(l + 28, "%llu log lines dropped: the disk did not keep up (%llu bytes)", &nlines, &nbytes) == 2) {
            assert_int_equal(gap, 0); /* one marker per gap */
            gap = (long)nlines;
            marked_lines += nlines;
            marked_bytes += nbytes;
            markers++;
        } else {
            assert_int_equal(sscanf(l + 28, "line %ld", &n), 1);
            assert_int_equal(n, prev + 1 + gap);
            prev = n;
            gap = 0;
            present++;
        }
        l = nl + 1;
    }
    assert_int_equal(prev, SLOW_LINES);
    assert_true(markers >= 1);
    assert_int_equal(marked_lines, st.lines_dropped);
    assert_int_equal(marked_bytes, st.bytes_dropped);
    assert_int_equal(present + (long)marked_lines, SLOW_LINES + 1);
    close(r.fd);
    free(r.data);
    rm_tree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape),
        cmocka_unit_test(test_escape_every_byte_everywhere),
        cmocka_unit_test(test_escape_stops_at_capacity),
        cmocka_unit_test(test_escape_prefix_random),
        cmocka_unit_test(test_clock_set_back_in_one_buffer),
        cmocka_unit_test(test_lines_in_the_file),
        cmocka_unit_test(test_big_event_in_order),
        cmocka_unit_test(test_attached_to_a_loop),
        cmocka_unit_test(test_time_stamps),
        cmocka_unit_test(test_writer_runs_as_batch),
        cmocka_unit_test(test_reopen_after_mv),
        cmocka_unit_test(test_reopen_failure_keeps_old_file),
        cmocka_unit_test(test_two_threads_in_order),
        cmocka_unit_test(test_slow_disk_drops_and_marks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
