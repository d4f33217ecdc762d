/* Unit tests for the log's bounds (PROTOCOL §6, issue 18): rate-limited
 * events with the count of those left out, answers logged with their start
 * and length, and a reopen that fails being retried and counted until it
 * works. */
#define _GNU_SOURCE
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "herd_log.h"

static void make_tmp(char *dir, size_t len)
{
    snprintf(dir, len, "/tmp/herd-log-limits-XXXXXX");
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

/* The whole file, NUL-terminated (NULL when it does not exist). */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        size_t n = fread(buf + len, 1, 4096, f);
        len += n;
        if (n == 0)
            break;
    }
    fclose(f);
    buf[len] = '\0';
    return buf;
}

static long count(const char *s, const char *what)
{
    long n = 0;
    for (const char *p = s; (p = strstr(p, what)); p += strlen(what))
        n++;
    return n;
}

/* Polls for up to 10 s (10 ms apart) until fn(arg) is true. */
static bool eventually(bool (*fn)(void *), void *arg)
{
    for (int i = 0; i < 1000; i++) {
        if (fn(arg))
            return true;
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    }
    return fn(arg);
}

/* 20 events of one kind in a second: 5 lines, then, once the second is
 * over, one line counting the 15 left out; another kind is apart. */
static void test_limited_events_are_counted(void **state)
{
    (void)state;
    char dir[64], path[96], err[256];
    make_tmp(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/S.log", dir);
    herd_log_t *log = herd_log_open(path, err, sizeof err);
    assert_non_null(log);
    herd_log_limit_t lim = HERD_LOG_LIMIT_INIT("refusals for a test");
    herd_log_limit_t other = HERD_LOG_LIMIT_INIT("other things");
    int written = 0;
    for (int i = 0; i < 20; i++)
        written += herd_log_limited(log, &lim, "refused %d", i);
    assert_int_equal(written, HERD_LOG_LIMIT_PER_SEC);
    assert_true(herd_log_limited(log, &other, "other event"));
    herd_log_limited_flush(log, &lim); /* the second is not over: nothing yet */
    lim.window_ms -= 1000;             /* as if it were */
    herd_log_limited_flush(log, &lim);
    assert_true(herd_log_limited(log, &lim, "refused again"));
    herd_log_close(&log);
    char *s = slurp(path);
    assert_non_null(s);
    assert_int_equal(count(s, "Z refused "), HERD_LOG_LIMIT_PER_SEC + 1);
    assert_non_null(strstr(s, "Z refused 4\n"));
    assert_null(strstr(s, "refused 5\n"));
    assert_int_equal(count(s, "Z 15 more refusals for a test left out of the log (at most 5 a second are written)\n"),
                     1);
    assert_true(strstr(s, "left out") < strstr(s, "refused again"));
    assert_non_null(strstr(s, "Z other event\n"));
    free(s);
    rm_tree(dir);
}

/* An answer longer than the head: its escaped start and its length; a
 * short one whole. */
static void test_data_head(void **state)
{
    (void)state;
    char dir[64], path[96], err[256];
    make_tmp(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/S.log", dir);
    herd_log_t *log = herd_log_open(path, err, sizeof err);
    assert_non_null(log);
    char big[20000];
    memset(big, 'a', sizeof big);
    big[0] = '"';
    herd_log_data_head(log, "conn 1 out ", 11, big, sizeof big, 200);
    herd_log_data_head(log, "conn 1 out ", 11, "AT x\n", 5, 200);
    char bin[300];
    memset(bin, 0xff, sizeof bin);
    herd_log_data_head(log, "conn 2 out ", 11, bin, sizeof bin, 200);
    herd_log_close(&log);
    char *s = slurp(path);
    assert_non_null(s);
    char want[400];
    snprintf(want, sizeof want, "Z conn 1 out \"\\\"%.*s\"... (20000 bytes)\n", 198, big + 1);
    assert_non_null(strstr(s, want));
    assert_non_null(strstr(s, "Z conn 1 out \"AT x\\n\"\n"));
    const char *b = strstr(s, "Z conn 2 out \"");
    assert_non_null(b);
    assert_int_equal(strchr(b, '\n') - b, (long)strlen("Z conn 2 out \"") + 200 + strlen("\"... (300 bytes)"));
    free(s);
    rm_tree(dir);
}

typedef struct {
    herd_log_t *log;
    const char *path;
} reopen_fx_t;

static bool failed_twice(void *arg)
{
    herd_log_stats_t st;
    herd_log_stats(((reopen_fx_t *)arg)->log, &st);
    return st.reopen_failures >= 2;
}

static bool reopened(void *arg)
{
    struct stat st;
    return stat(((reopen_fx_t *)arg)->path, &st) == 0;
}

/* The folder cannot be made again (a file took its name): the writer says
 * so once, keeps writing to the old file, retries and counts each failure;
 * once the file is gone the retry opens the new file by itself. */
static void test_failed_reopen_is_retried(void **state)
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
    assert_int_equal(herd_log_sync(log), 0);
    reopen_fx_t fx = {log, path};
    assert_true(eventually(failed_twice, &fx));
    assert_int_equal(unlink(sub), 0);
    assert_true(eventually(reopened, &fx));
    herd_log_event(log, "three");
    herd_log_close(&log);
    char *old = slurp(moved), *cur = slurp(path);
    assert_non_null(old);
    assert_non_null(cur);
    assert_int_equal(count(old, "cannot reopen the log file "), 1);
    assert_non_null(strstr(old, "Z two\n"));
    assert_null(strstr(old, "three"));
    assert_non_null(strstr(cur, "reopened after "));
    assert_non_null(strstr(cur, "Z three\n"));
    free(old);
    free(cur);
    rm_tree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_limited_events_are_counted),
        cmocka_unit_test(test_data_head),
        cmocka_unit_test(test_failed_reopen_is_retried),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
