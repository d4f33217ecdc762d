/* Unit tests for herd_places_cache: expiry, bounds, replacement. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "herd_places_cache.h"

static char *dup(const char *s)
{
    char *p = strdup(s);
    assert_non_null(p);
    return p;
}

/* The body for key at now, as a string, or NULL. */
static const char *get(herd_places_cache_t *c, const char *key, int64_t now)
{
    size_t len = 0;
    const char *b = herd_places_cache_get(c, key, now, &len);
    if (b)
        assert_int_equal(len, strlen(b));
    return b;
}

static void test_hit_then_expiry(void **state)
{
    (void)state;
    herd_places_cache_t *c = herd_places_cache_new(1000, 10, 1 << 20);
    herd_places_cache_put(c, "1,2 100", dup("{\"status\": \"OK\"}"), 16, 5000);
    assert_string_equal(get(c, "1,2 100", 5000), "{\"status\": \"OK\"}");
    assert_string_equal(get(c, "1,2 100", 5999), "{\"status\": \"OK\"}");
    assert_null(get(c, "1,2 200", 5999)); /* another radius is another request */
    assert_null(get(c, "1,2 100", 6000)); /* lives exactly ttl_ms */
    assert_int_equal(herd_places_cache_size(c), 0);
    herd_places_cache_destroy(&c);
    assert_null(c);
}

static void test_off_keeps_nothing(void **state)
{
    (void)state;
    herd_places_cache_t *c = herd_places_cache_new(0, 10, 1 << 20);
    herd_places_cache_put(c, "k", dup("body"), 4, 0);
    assert_null(get(c, "k", 0));
    assert_int_equal(herd_places_cache_size(c), 0);
    herd_places_cache_destroy(&c);
}

static void test_oldest_evicted_by_count(void **state)
{
    (void)state;
    herd_places_cache_t *c = herd_places_cache_new(60000, 2, 1 << 20);
    herd_places_cache_put(c, "a", dup("A"), 1, 0);
    herd_places_cache_put(c, "b", dup("B"), 1, 1);
    herd_places_cache_put(c, "c", dup("C"), 1, 2);
    assert_null(get(c, "a", 3));
    assert_string_equal(get(c, "b", 3), "B");
    assert_string_equal(get(c, "c", 3), "C");
    assert_int_equal(herd_places_cache_size(c), 2);
    herd_places_cache_destroy(&c);
}

static void test_oldest_evicted_by_bytes_and_oversized_refused(void **state)
{
    (void)state;
    herd_places_cache_t *c = herd_places_cache_new(60000, 100, 10);
    herd_places_cache_put(c, "a", dup("aaaa"), 4, 0);
    herd_places_cache_put(c, "b", dup("bbbb"), 4, 0);
    herd_places_cache_put(c, "c", dup("cccc"), 4, 0); /* 12 > 10: "a" goes */
    assert_null(get(c, "a", 1));
    assert_string_equal(get(c, "b", 1), "bbbb");
    herd_places_cache_put(c, "big", dup("0123456789A"), 11, 1); /* larger than the whole cache */
    assert_null(get(c, "big", 1));
    assert_string_equal(get(c, "c", 1), "cccc");
    herd_places_cache_destroy(&c);
}

static void test_replace_renews(void **state)
{
    (void)state;
    herd_places_cache_t *c = herd_places_cache_new(100, 10, 1 << 20);
    herd_places_cache_put(c, "k", dup("old"), 3, 0);
    herd_places_cache_put(c, "k", dup("new!"), 4, 50);
    assert_int_equal(herd_places_cache_size(c), 1);
    assert_string_equal(get(c, "k", 120), "new!"); /* the old entry would have expired at 100 */
    assert_null(get(c, "k", 150));
    herd_places_cache_destroy(&c);
    herd_places_cache_destroy(&c); /* NULL-safe */
}

/* A reloaded lifetime: shorter applies to what is held at once (from each
 * entry's put), longer to what comes next, 0 empties the cache. */
static void test_set_ttl(void **state)
{
    (void)state;
    herd_places_cache_t *c = herd_places_cache_new(10000, 10, 1 << 20);
    herd_places_cache_put(c, "a", dup("A"), 1, 1000);
    herd_places_cache_put(c, "b", dup("B"), 1, 3000);
    herd_places_cache_set_ttl(c, 2500, 3000); /* a ends at 3500, b at 5500 */
    assert_string_equal(get(c, "a", 3499), "A");
    assert_null(get(c, "a", 3500));
    assert_string_equal(get(c, "b", 5499), "B");
    herd_places_cache_set_ttl(c, 2000, 5000); /* b now ends at 5000: gone */
    assert_int_equal(herd_places_cache_size(c), 0);
    herd_places_cache_set_ttl(c, 60000, 6000);
    herd_places_cache_put(c, "c", dup("C"), 1, 6000);
    assert_string_equal(get(c, "c", 65999), "C");
    herd_places_cache_set_ttl(c, 0, 7000);
    assert_int_equal(herd_places_cache_size(c), 0);
    herd_places_cache_put(c, "d", dup("D"), 1, 7000); /* off: kept nowhere */
    assert_null(get(c, "d", 7000));
    herd_places_cache_destroy(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hit_then_expiry),
        cmocka_unit_test(test_off_keeps_nothing),
        cmocka_unit_test(test_oldest_evicted_by_count),
        cmocka_unit_test(test_oldest_evicted_by_bytes_and_oversized_refused),
        cmocka_unit_test(test_replace_renews),
        cmocka_unit_test(test_set_ttl),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
