/* Unit tests for herd_table: the merge rule, growth, iteration and the digest. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "herd_table.h"

#define MANY 100000

static herd_time_t tm(int64_t sec, int32_t nsec)
{
    return (herd_time_t) {sec, nsec};
}

/* Offers "AT <server> +0.000000001 <id> <pos> <time>" made from the parts. */
static herd_update_t offer(herd_table_t *t, const char *id, herd_time_t time, const char *server,
                           const herd_record_t **stored)
{
    char at[512];
    const char *pos = "+34.068930-118.445127";
    int n = snprintf(at, sizeof at, "AT %s +0.000000001 %s %s %lld.%09d", server, id, pos,
                     (long long) time.sec, (int) time.nsec);
    assert_true(n > 0 && (size_t) n < sizeof at);
    size_t pos_off = (size_t) (strstr(at, pos) - at);
    return herd_table_update(t, id, strlen(id), time, at, (size_t) n, pos_off, strlen(pos), stored);
}

static void check_record(const herd_record_t *r, const char *id, herd_time_t time,
                         const char *server)
{
    char at[512];
    snprintf(at, sizeof at, "AT %s +0.000000001 %s +34.068930-118.445127 %lld.%09d", server, id,
             (long long) time.sec, (int) time.nsec);
    assert_non_null(r);
    assert_int_equal(r->id_len, strlen(id));
    assert_memory_equal(r->id, id, strlen(id));
    assert_int_equal(r->time.sec, time.sec);
    assert_int_equal(r->time.nsec, time.nsec);
    assert_int_equal(r->at_len, strlen(at));
    assert_string_equal(r->at, at); /* NUL-terminated right after at_len bytes */
    assert_int_equal(r->pos_len, strlen("+34.068930-118.445127"));
    assert_memory_equal(r->at + r->pos_off, "+34.068930-118.445127", r->pos_len);
}

static void test_empty(void **state)
{
    (void) state;
    herd_table_t *t = herd_table_new();
    assert_non_null(t);
    assert_int_equal(herd_table_size(t), 0);
    assert_int_equal(herd_table_digest(t), 0);
    assert_null(herd_table_find(t, "kiwi", 4));
    assert_null(herd_table_find(t, "", 0));
    size_t cursor = 0;
    assert_null(herd_table_next(t, &cursor));
    assert_null(herd_table_next(t, &cursor));
    herd_table_destroy(&t);
    assert_null(t);
    herd_table_destroy(&t);
    herd_table_destroy(NULL);
}

static void test_merge_rule(void **state)
{
    (void) state;
    herd_table_t *t = herd_table_new();
    const herd_record_t *r = NULL;
    const char *id = "kiwi.cs.ucla.edu";

    assert_int_equal(offer(t, id, tm(1621464827, 959498503), "Clark", &r), HERD_UPDATE_NEWER);
    check_record(r, id, tm(1621464827, 959498503), "Clark");
    assert_ptr_equal(herd_table_find(t, id, strlen(id)), r);
    assert_int_equal(herd_table_size(t), 1);

    /* The same time from another server: kept as it was, the record handed back. */
    const herd_record_t *kept = NULL;
    assert_int_equal(offer(t, id, tm(1621464827, 959498503), "Bona", &kept), HERD_UPDATE_SAME);
    assert_ptr_equal(kept, r);
    check_record(kept, id, tm(1621464827, 959498503), "Clark");

    /* Older by one second, and older by a nanosecond only. */
    assert_int_equal(offer(t, id, tm(1621464826, 959498503), "Bona", &kept), HERD_UPDATE_OLDER);
    assert_ptr_equal(kept, r);
    assert_int_equal(offer(t, id, tm(1621464827, 959498502), "Bona", &kept), HERD_UPDATE_OLDER);
    assert_ptr_equal(kept, r);
    /* More nanoseconds never outweigh fewer seconds. */
    assert_int_equal(offer(t, id, tm(1621464826, 999999999), "Bona", NULL), HERD_UPDATE_OLDER);
    check_record(herd_table_find(t, id, strlen(id)), id, tm(1621464827, 959498503), "Clark");

    /* Newer by one nanosecond: replaced. */
    assert_int_equal(offer(t, id, tm(1621464827, 959498504), "Bona", &r), HERD_UPDATE_NEWER);
    check_record(r, id, tm(1621464827, 959498504), "Bona");
    assert_ptr_equal(herd_table_find(t, id, strlen(id)), r);

    /* Newer by a second with fewer nanoseconds: replaced. */
    assert_int_equal(offer(t, id, tm(1621464828, 0), "Jaquez", &r), HERD_UPDATE_NEWER);
    check_record(r, id, tm(1621464828, 0), "Jaquez");
    assert_int_equal(herd_table_size(t), 1);

    /* The extremes of a time. */
    assert_int_equal(offer(t, "zero", tm(0, 0), "A", NULL), HERD_UPDATE_NEWER);
    assert_int_equal(offer(t, "zero", tm(0, 0), "A", NULL), HERD_UPDATE_SAME);
    assert_int_equal(offer(t, "zero", tm(999999999999999999LL, 999999999), "A", &r),
                     HERD_UPDATE_NEWER);
    assert_int_equal(r->time.sec, 999999999999999999LL);
    assert_int_equal(offer(t, "zero", tm(999999999999999999LL, 999999998), "A", NULL),
                     HERD_UPDATE_OLDER);
    assert_int_equal(herd_table_size(t), 2);
    herd_table_destroy(&t);
}

static void test_ids_are_bytes(void **state)
{
    (void) state;
    herd_table_t *t = herd_table_new();
    static const char *ids[] = {"a", "ab", "abc", "b", "A"};
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(offer(t, ids[i], tm(100 + (int64_t) i, 0), "S", NULL), HERD_UPDATE_NEWER);
    /* Embedded NUL and high bytes: "a\0" differs from "a". */
    const char odd[] = {'a', '\0', (char) 0xff};
    const herd_record_t *r = NULL;
    assert_int_equal(herd_table_update(t, odd, 2, tm(1, 0), "AT x", 4, 0, 0, &r),
                     HERD_UPDATE_NEWER);
    assert_int_equal(herd_table_update(t, odd, 3, tm(1, 0), "AT y", 4, 0, 0, NULL),
                     HERD_UPDATE_NEWER);
    assert_int_equal(herd_table_size(t), 7);
    assert_ptr_equal(herd_table_find(t, odd, 2), r);
    assert_string_equal(herd_table_find(t, odd, 3)->at, "AT y");
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(herd_table_find(t, ids[i], strlen(ids[i]))->time.sec, 100 + (int64_t) i);
    assert_null(herd_table_find(t, "abcd", 4));
    assert_int_equal(herd_table_find(t, "abc", 2)->time.sec, 101); /* that is "ab" */
    /* An empty id and an empty AT line are still records. */
    assert_int_equal(herd_table_update(t, "", 0, tm(5, 5), "", 0, 0, 0, &r), HERD_UPDATE_NEWER);
    assert_int_equal(r->id_len, 0);
    assert_int_equal(r->at_len, 0);
    assert_string_equal(r->at, "");
    assert_ptr_equal(herd_table_find(t, NULL, 0), r);
    herd_table_destroy(&t);
}

static void test_long_ids_and_bad_lengths(void **state)
{
    (void) state;
    herd_table_t *t = herd_table_new();
    size_t big = 70000;
    char *id = malloc(big);
    char *at = malloc(big);
    assert_non_null(id);
    assert_non_null(at);
    for (size_t i = 0; i < big; i++) {
        id[i] = (char) ('a' + i % 26);
        at[i] = (char) ('A' + i % 26);
    }
    const herd_record_t *r = (const herd_record_t *) 1;

    /* The longest that fits uint16, for the id and the AT line. */
    assert_int_equal(herd_table_update(t, id, 65535, tm(1, 1), at, 65535, 65000, 535, &r),
                     HERD_UPDATE_NEWER);
    assert_int_equal(r->id_len, 65535);
    assert_int_equal(r->at_len, 65535);
    assert_int_equal(r->pos_off, 65000);
    assert_int_equal(r->pos_len, 535);
    assert_memory_equal(r->id, id, 65535);
    assert_memory_equal(r->at, at, 65535);
    assert_int_equal(r->at[65535], '\0');
    assert_ptr_equal(herd_table_find(t, id, 65535), r);
    uint64_t digest = herd_table_digest(t);

    /* One byte more is refused and stores nothing. */
    r = (const herd_record_t *) 1;
    assert_int_equal(herd_table_update(t, id, 65536, tm(2, 0), at, 10, 0, 1, &r),
                     HERD_UPDATE_ERROR);
    assert_null(r);
    assert_int_equal(herd_table_update(t, id, 10, tm(2, 0), at, 65536, 0, 1, &r),
                     HERD_UPDATE_ERROR);
    assert_null(herd_table_find(t, id, 65536));
    assert_null(herd_table_find(t, id, 10));
    /* A position outside the AT line is refused too. */
    assert_int_equal(herd_table_update(t, id, 10, tm(2, 0), at, 10, 11, 0, NULL),
                     HERD_UPDATE_ERROR);
    assert_int_equal(herd_table_update(t, id, 10, tm(2, 0), at, 10, 5, 6, NULL),
                     HERD_UPDATE_ERROR);
    assert_int_equal(herd_table_update(t, id, 10, tm(2, 0), at, 10, SIZE_MAX, 2, NULL),
                     HERD_UPDATE_ERROR);
    assert_int_equal(herd_table_size(t), 1);
    assert_int_equal(herd_table_digest(t), digest);
    assert_int_equal(herd_table_update(t, id, 10, tm(2, 0), at, 10, 5, 5, NULL),
                     HERD_UPDATE_NEWER);
    assert_int_equal(herd_table_size(t), 2);
    free(id);
    free(at);
    herd_table_destroy(&t);
}

static void many_id(char *buf, size_t cap, size_t i)
{
    snprintf(buf, cap, "client-%zu.example.org", i);
}

static void test_many_clients(void **state)
{
    (void) state;
    herd_table_t *t = herd_table_new();
    char id[64];
    for (size_t i = 0; i < MANY; i++) {
        many_id(id, sizeof id, i);
        assert_int_equal(offer(t, id, tm(1000 + (int64_t) i, (int32_t) i), "Bona", NULL),
                         HERD_UPDATE_NEWER);
        assert_int_equal(herd_table_size(t), i + 1);
    }
    for (size_t i = 0; i < MANY; i++) {
        many_id(id, sizeof id, i);
        check_record(herd_table_find(t, id, strlen(id)), id, tm(1000 + (int64_t) i, (int32_t) i),
                     "Bona");
    }
    assert_null(herd_table_find(t, "client-100000.example.org", 25));

    /* Every other client moves; the rest stay. */
    for (size_t i = 0; i < MANY; i += 2) {
        many_id(id, sizeof id, i);
        assert_int_equal(offer(t, id, tm(1000 + (int64_t) i, (int32_t) i + 1), "Clark", NULL),
                         HERD_UPDATE_NEWER);
        assert_int_equal(offer(t, id, tm(1000 + (int64_t) i, (int32_t) i), "Clark", NULL),
                         HERD_UPDATE_OLDER);
    }
    assert_int_equal(herd_table_size(t), MANY);

    /* Iteration visits each record exactly once. */
    unsigned char *seen = calloc(MANY, 1);
    assert_non_null(seen);
    size_t cursor = 0, visits = 0;
    const herd_record_t *r;
    while ((r = herd_table_next(t, &cursor)) != NULL) {
        char buf[64];
        assert_true(r->id_len < sizeof buf);
        memcpy(buf, r->id, r->id_len);
        buf[r->id_len] = '\0';
        size_t i;
        assert_int_equal(sscanf(buf, "client-%zu.", &i), 1);
        assert_true(i < MANY);
        assert_int_equal(seen[i], 0);
        seen[i] = 1;
        visits++;
        check_record(r, buf, tm(1000 + (int64_t) i, (int32_t) i + (i % 2 == 0)),
                     i % 2 == 0 ? "Clark" : "Bona");
    }
    assert_int_equal(visits, MANY);
    assert_null(herd_table_next(t, &cursor));
    free(seen);
    herd_table_destroy(&t);
}

static void test_digest(void **state)
{
    (void) state;
    enum { N = 5000 };
    herd_table_t *a = herd_table_new(), *b = herd_table_new();
    char id[64];
    for (size_t i = 0; i < N; i++) {
        many_id(id, sizeof id, i);
        offer(a, id, tm(5000 + (int64_t) i, 7), "A", NULL);
        many_id(id, sizeof id, N - 1 - i);
        offer(b, id, tm(5000 + (int64_t) (N - 1 - i), 7), "B", NULL);
    }
    /* Same (id, time) pairs in another order, with other AT lines: equal. */
    uint64_t d = herd_table_digest(a);
    assert_int_not_equal(d, 0);
    assert_int_equal(herd_table_digest(b), d);

    /* SAME and OLDER offers leave it alone. */
    many_id(id, sizeof id, 42);
    assert_int_equal(offer(b, id, tm(5042, 7), "B", NULL), HERD_UPDATE_SAME);
    assert_int_equal(offer(b, id, tm(5042, 6), "B", NULL), HERD_UPDATE_OLDER);
    assert_int_equal(herd_table_digest(b), d);

    /* A nanosecond newer changes it; the same update on the other table
     * brings them together again. */
    assert_int_equal(offer(b, id, tm(5042, 8), "B", NULL), HERD_UPDATE_NEWER);
    assert_int_not_equal(herd_table_digest(b), d);
    assert_int_equal(offer(a, id, tm(5042, 8), "A", NULL), HERD_UPDATE_NEWER);
    assert_int_equal(herd_table_digest(a), herd_table_digest(b));

    /* A new client changes it. */
    uint64_t before = herd_table_digest(a);
    assert_int_equal(offer(a, "newcomer", tm(1, 0), "A", NULL), HERD_UPDATE_NEWER);
    assert_int_not_equal(herd_table_digest(a), before);
    herd_table_destroy(&a);
    herd_table_destroy(&b);

    /* The digest depends on the newest state only, not on the path to it. */
    a = herd_table_new();
    b = herd_table_new();
    offer(a, "x", tm(1, 0), "A", NULL);
    offer(a, "x", tm(2, 0), "A", NULL);
    offer(a, "x", tm(3, 500), "A", NULL);
    offer(b, "x", tm(3, 500), "B", NULL);
    assert_int_equal(herd_table_digest(a), herd_table_digest(b));
    /* The id and the time both count, seconds and nanoseconds apart. */
    herd_table_t *c = herd_table_new(), *e = herd_table_new(), *f = herd_table_new();
    offer(c, "y", tm(3, 500), "A", NULL);
    offer(e, "x", tm(3, 501), "A", NULL);
    offer(f, "x", tm(500, 3), "A", NULL);
    assert_int_not_equal(herd_table_digest(c), herd_table_digest(a));
    assert_int_not_equal(herd_table_digest(e), herd_table_digest(a));
    assert_int_not_equal(herd_table_digest(f), herd_table_digest(a));
    herd_table_destroy(&a);
    herd_table_destroy(&b);
    herd_table_destroy(&c);
    herd_table_destroy(&e);
    herd_table_destroy(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),           cmocka_unit_test(test_merge_rule),
        cmocka_unit_test(test_ids_are_bytes),   cmocka_unit_test(test_long_ids_and_bad_lengths),
        cmocka_unit_test(test_many_clients),    cmocka_unit_test(test_digest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
