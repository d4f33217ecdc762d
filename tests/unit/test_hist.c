/* herd_hist: buckets, cumulative rendering, merge. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "herd_hist.h"

static char *render(const herd_hist_t *h, const char *labels)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    herd_hist_render(h, f, "x_seconds", labels);
    fclose(f);
    return buf;
}

static void test_buckets_are_cumulative(void **state)
{
    (void)state;
    herd_hist_t h = {0};
    herd_hist_observe(&h, 10000);      /* exactly on the first bound */
    herd_hist_observe(&h, 10001);      /* the next bucket */
    herd_hist_observe(&h, -5);         /* counts as 0 */
    herd_hist_observe(&h, 20000000000); /* past the last bound: +Inf only */
    char *t = render(&h, "command=\"IAMAT\"");
    assert_non_null(strstr(t, "x_seconds_bucket{command=\"IAMAT\",le=\"0.000010000\"} 2\n"));
    assert_non_null(strstr(t, "x_seconds_bucket{command=\"IAMAT\",le=\"0.000025000\"} 3\n"));
    assert_non_null(strstr(t, "x_seconds_bucket{command=\"IAMAT\",le=\"10.000000000\"} 3\n"));
    assert_non_null(strstr(t, "x_seconds_bucket{command=\"IAMAT\",le=\"+Inf\"} 4\n"));
    assert_non_null(strstr(t, "x_seconds_sum{command=\"IAMAT\"} 20.000020001\n"));
    assert_non_null(strstr(t, "x_seconds_count{command=\"IAMAT\"} 4\n"));
    free(t);
}

static void test_merge_and_no_labels(void **state)
{
    (void)state;
    herd_hist_t a = {0}, b = {0};
    herd_hist_observe(&a, 1000000);
    herd_hist_observe(&b, 1000000);
    herd_hist_merge(&a, &b);
    char *t = render(&a, "");
    assert_non_null(strstr(t, "x_seconds_bucket{le=\"0.001000000\"} 2\n"));
    assert_non_null(strstr(t, "x_seconds_sum 0.002000000\n"));
    assert_non_null(strstr(t, "x_seconds_count 2\n"));
    for (int i = 1; i < HERD_HIST_BUCKETS; i++)
        assert_true(herd_hist_bound_ns(i) > herd_hist_bound_ns(i - 1));
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buckets_are_cumulative),
        cmocka_unit_test(test_merge_and_no_labels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
