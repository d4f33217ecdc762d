/* journal_kit: what the journal's unit tests (test_journal.c,
 * test_journal_compact.c) share: reading a metric of herd_journal_render,
 * waiting on the writer's reports, and whole files of a state folder.
 * Header-only (static inline): each test is one executable. */
#ifndef HERD_TEST_JOURNAL_KIT_H
#define HERD_TEST_JOURNAL_KIT_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "herd_journal.h"
#include "herd_log.h"
#include "herd_loop.h"

/* A fresh test folder /tmp/NAME-XXXXXX (tmp), its state folder for server
 * Bailey (dir, not made: the journal makes it), and a log in it. */
static inline void jk_folder_open(char *tmp, size_t tmp_cap, char *dir, size_t dir_cap, const char *name,
                                  herd_log_t **log)
{
    snprintf(tmp, tmp_cap, "/tmp/%s-XXXXXX", name);
    assert_non_null(mkdtemp(tmp));
    snprintf(dir, dir_cap, "%s/state/Bailey", tmp);
    char path[160], err[256];
    snprintf(path, sizeof path, "%s/test.log", tmp);
    *log = herd_log_open(path, err, sizeof err);
    assert_non_null(*log);
}

/* Closes the log and removes the test folder. */
static inline void jk_folder_close(const char *tmp, herd_log_t **log)
{
    herd_log_close(log);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    assert_int_equal(system(cmd), 0);
}

/* The value of a metric line of herd_journal_render. */
static inline double jk_metric(herd_journal_t *j, const char *name)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    herd_journal_render(j, f);
    fclose(f);
    char key[96];
    snprintf(key, sizeof key, "\n%s ", name);
    char *p = strstr(text, key);
    assert_non_null(p);
    double v = strtod(p + strlen(key), NULL);
    free(text);
    return v;
}

/* Reads the writer's reports (handing held replies to release) for at most
 * 50 ms; fails the test past `deadline` (herd_clock_ms). */
static inline void jk_take_reports(herd_journal_t *j, int64_t deadline, herd_journal_release_fn *release, void *arg)
{
    assert_true(herd_clock_ms() < deadline);
    zmq_pollitem_t it = {herd_journal_sock(j), 0, ZMQ_POLLIN, 0};
    zmq_poll(&it, 1, 50);
    herd_journal_recv(j, release, arg);
}

/* Waits until the metric reaches `want` (within ms). */
static inline void jk_wait_metric(herd_journal_t *j, const char *name, double want, int64_t ms,
                                  herd_journal_release_fn *release, void *arg)
{
    int64_t deadline = herd_clock_ms() + ms;
    while (jk_metric(j, name) < want)
        jk_take_reports(j, deadline, release, arg);
}

/* A file of the folder, whole (malloc'd; *len its size). */
static inline char *jk_slurp(const char *dir, const char *name, size_t *len)
{
    char path[200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = malloc((size_t)n + 1);
    assert_int_equal(fread(p, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return p;
}

/* Writes a file of the folder whole. */
static inline void jk_spill(const char *dir, const char *name, const char *p, size_t len)
{
    char path[200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, len, f), len);
    fclose(f);
}

#endif
