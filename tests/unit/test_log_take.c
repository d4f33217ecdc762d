/* Unit tests for herd_log_limit_take: the log's one rate limiter, asked by
 * a caller that writes its lines itself (the peer links, whose lines end in
 * " (N more like it left out)" and whose total is
 * herd_peer_log_left_out_total). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "herd_log.h"

/* A kind with its own number a second: that many lines are taken in a
 * burst, the rest counted; the next line taken in a new second carries the
 * count, once; the total keeps every one left out. */
static void test_take_counts_what_it_leaves_out(void **state)
{
    (void)state;
    herd_log_limit_t lim = HERD_LOG_LIMIT_INIT_N("things for a test", 16);
    uint64_t left = 99;
    int taken = 0;
    for (int i = 0; i < 40; i++)
        taken += herd_log_limit_take(&lim, &left);
    assert_int_equal(taken, 16);
    assert_int_equal(left, 0); /* the last line taken had nothing left out before it */
    assert_int_equal(lim.left_out_total, 24);
    lim.window_ms -= 1000; /* as if the second were over */
    assert_true(herd_log_limit_take(&lim, &left));
    assert_int_equal(left, 24);
    assert_true(herd_log_limit_take(&lim, &left));
    assert_int_equal(left, 0);
    assert_int_equal(lim.left_out_total, 24);
}

/* Without a number of its own, a kind takes HERD_LOG_LIMIT_PER_SEC a
 * second, as herd_log_limited writes. */
static void test_take_defaults_to_the_log_rate(void **state)
{
    (void)state;
    herd_log_limit_t lim = HERD_LOG_LIMIT_INIT("things for a test");
    uint64_t left;
    int taken = 0;
    for (int i = 0; i < 3 * HERD_LOG_LIMIT_PER_SEC; i++)
        taken += herd_log_limit_take(&lim, &left);
    assert_int_equal(taken, HERD_LOG_LIMIT_PER_SEC);
    assert_int_equal(lim.left_out_total, 2 * HERD_LOG_LIMIT_PER_SEC);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_take_counts_what_it_leaves_out),
        cmocka_unit_test(test_take_defaults_to_the_log_rate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
