/* Unit tests for herd_log: byte escaping and the event lines in the file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

static void test_lines_in_the_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/herd-log-test-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof path, "%s/sub/S.log", dir); /* a missing folder is made */
    char err[256];
    herd_log_t *log = herd_log_open(path, err, sizeof err);
    assert_non_null(log);
    herd_log_event(log, "conn %d opened", 7);
    herd_log_data(log, "conn 7 in ", "WHATSAT\tx\n", 10);
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
    assert_null(fgets(line, sizeof line, f));
    fclose(f);
    unlink(path);
    snprintf(path, sizeof path, "%s/sub", dir);
    rmdir(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape),
        cmocka_unit_test(test_escape_stops_at_capacity),
        cmocka_unit_test(test_lines_in_the_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
