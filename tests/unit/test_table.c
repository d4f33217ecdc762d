/* Unit tests for herd_table: the ranking, growth, iteration, removal, the
 * anti-entropy digests and the bounds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "herd_record.h"
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

    /* The same record again: SAME, the record handed back. */
    const herd_record_t *kept = NULL;
    assert_int_equal(offer(t, id, tm(1621464827, 959498503), "Clark", &kept), HERD_UPDATE_SAME);
    assert_ptr_equal(kept, r);
    /* The same time from a server whose name is smaller: it ranks below. */
    assert_int_equal(offer(t, id, tm(1621464827, 959498503), "Bona", &kept), HERD_UPDATE_OLDER);
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

/* herd_table_reserve: a table sized in advance holds and finds the same
 * records, a half-full one reserved again keeps every record findable, and
 * an impossible size fails and leaves the table as it was. */
static void test_reserve(void **state)
{
    (void) state;
    herd_table_t *t = herd_table_new();
    assert_int_equal(herd_table_reserve(t, MANY), 0);
    assert_int_equal(herd_table_reserve(t, 0), 0);
    char id[64];
    for (size_t i = 0; i < MANY / 2; i++) {
        many_id(id, sizeof id, i);
        assert_int_equal(offer(t, id, tm(1000 + (int64_t) i, 0), "Bona", NULL), HERD_UPDATE_NEWER);
    }
    assert_int_equal(herd_table_reserve(t, 4 * MANY), 0); /* grown with records inside */
    for (size_t i = MANY / 2; i < MANY; i++) {
        many_id(id, sizeof id, i);
        assert_int_equal(offer(t, id, tm(1000 + (int64_t) i, 0), "Bona", NULL), HERD_UPDATE_NEWER);
    }
    assert_int_equal(herd_table_reserve(t, SIZE_MAX), -1);
    assert_int_equal(herd_table_size(t), MANY);
    for (size_t i = 0; i < MANY; i++) {
        many_id(id, sizeof id, i);
        check_record(herd_table_find(t, id, strlen(id)), id, tm(1000 + (int64_t) i, 0), "Bona");
    }
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
        offer(b, id, tm(5000 + (int64_t) (N - 1 - i), 7), "A", NULL);
    }
    /* The same records in another order: equal. */
    uint64_t d = herd_table_digest(a);
    assert_int_not_equal(d, 0);
    assert_int_equal(herd_table_digest(b), d);

    /* SAME and OLDER offers leave it alone. */
    many_id(id, sizeof id, 42);
    assert_int_equal(offer(b, id, tm(5042, 7), "A", NULL), HERD_UPDATE_SAME);
    assert_int_equal(offer(b, id, tm(5042, 6), "B", NULL), HERD_UPDATE_OLDER);
    assert_int_equal(herd_table_digest(b), d);

    /* A nanosecond newer changes it; the same update on the other table
     * brings them together again. */
    assert_int_equal(offer(b, id, tm(5042, 8), "A", NULL), HERD_UPDATE_NEWER);
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
    offer(b, "x", tm(3, 500), "A", NULL);
    assert_int_equal(herd_table_digest(a), herd_table_digest(b));
    /* The same (id, time) from another origin is another record. */
    herd_table_t *g = herd_table_new();
    offer(g, "x", tm(3, 500), "B", NULL);
    assert_int_not_equal(herd_table_digest(g), herd_table_digest(a));
    herd_table_destroy(&g);
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

/* Offers an AT line made from every part, for the tie-break tests. */
static herd_update_t offer_full(herd_table_t *t, const char *id, herd_time_t time, const char *server,
                                const char *skew, const char *pos, const herd_record_t **stored)
{
    char at[512];
    int n = snprintf(at, sizeof at, "AT %s %s %s %s %lld.%09d", server, skew, id, pos, (long long) time.sec,
                     (int) time.nsec);
    size_t pos_off = (size_t) (strstr(at + 3 + strlen(server) + strlen(skew) + strlen(id), pos) - at);
    return herd_table_update(t, id, strlen(id), time, at, (size_t) n, pos_off, strlen(pos), stored);
}

/* herd_table_would_take for a whole AT line (position: its fifth field). */
static bool would(herd_table_t *t, const char *id, herd_time_t time, const char *at)
{
    const char *p = at;
    for (int i = 0; i < 4; i++)
        p = strchr(p, ' ') + 1;
    size_t pos_len = (size_t) (strchr(p, ' ') - p);
    return herd_table_would_take(t, id, strlen(id), time, at, strlen(at), (size_t) (p - at), pos_len);
}

/* PROTOCOL section 3: equal times rank by origin name, then position text,
 * both as bytes; this table adds the whole AT line last, so the order is
 * total. Any arrival order ends with the same record. */
static void test_ties(void **state)
{
    (void) state;
    struct {
        const char *server, *skew, *pos;
    } offers[] = {
        {"Bona", "+0.1", "+1+1"},     {"Clark", "+0.1", "+1+1"},  {"Clark", "+0.1", "+2+1"},
        {"Clark", "+0.1", "+10+1"},   {"Clark", "-0.5", "+2+1"},  {"Bailey", "+9.9", "+9+9"},
        {"Clar", "+0.1", "+99+99"},   {"Clark", "+0.2", "+2+1"},  {"Clark\xff", "+0.1", "+0+0"},
    };
    enum { N = sizeof offers / sizeof offers[0] };
    /* The winner: greatest origin bytes ("Clark\xff"), whatever else. */
    const herd_time_t t0 = tm(1700000000, 5);
    uint64_t digest = 0;
    for (unsigned perm = 0; perm < 200; perm++) {
        herd_table_t *t = herd_table_new();
        unsigned order[N];
        for (unsigned i = 0; i < N; i++)
            order[i] = i;
        unsigned x = perm * 2654435761u + 1;
        for (unsigned i = N - 1; i > 0; i--) {
            x = x * 1103515245u + 12345u;
            unsigned j = (x >> 16) % (i + 1), tmp = order[i];
            order[i] = order[j];
            order[j] = tmp;
        }
        for (unsigned i = 0; i < N; i++)
            offer_full(t, "tie", t0, offers[order[i]].server, offers[order[i]].skew, offers[order[i]].pos, NULL);
        const herd_record_t *r = herd_table_find(t, "tie", 3);
        assert_non_null(r);
        assert_string_equal(r->at, "AT Clark\xff +0.1 tie +0+0 1700000000.000000005");
        if (perm == 0)
            digest = herd_table_digest(t);
        assert_true(herd_table_digest(t) == digest);
        herd_table_destroy(&t);
    }
    /* Without it: "Clark" wins; among Clark's, position "+2+1" > "+10+1" > "+1+1" as bytes; among the
     * three "+2+1" lines, the greatest AT line ('-' is 0x2d, above '+', 0x2b). */
    herd_table_t *t = herd_table_new();
    for (unsigned i = 0; i < N - 1; i++)
        offer_full(t, "tie", t0, offers[i].server, offers[i].skew, offers[i].pos, NULL);
    assert_string_equal(herd_table_find(t, "tie", 3)->at, "AT Clark -0.5 tie +2+1 1700000000.000000005");
    /* would_take agrees with update. */
    assert_false(would(t, "tie", t0, "AT Clark +0.2 tie +2+1 1700000000.000000005"));
    assert_false(would(t, "tie", t0, "AT Clark -0.5 tie +2+1 1700000000.000000005"));
    assert_true(would(t, "tie", t0, "AT Clark -0.5 tie +3+1 1700000000.000000005"));
    assert_true(would(t, "tie", tm(1700000000, 6), "AT A +0 tie +0+0 1700000000.000000006"));
    assert_true(would(t, "other", tm(1, 0), "AT A +0 other +0+0 1"));
    herd_table_destroy(&t);
}

/* A report this server makes again (same time, origin, position; a new skew)
 * is SAME for the client path, though the total order would take its line. */
static void test_report_resend(void **state)
{
    (void) state;
    herd_table_t *t = herd_table_new();
    const herd_record_t *r = NULL;
    assert_int_equal(herd_table_update_report(t, "k", 1, tm(5, 0), "AT A +0.1 k +1+1 5", 18, 10, 4, &r),
                     HERD_UPDATE_NEWER);
    assert_int_equal(herd_table_update_report(t, "k", 1, tm(5, 0), "AT A +0.9 k +1+1 5", 18, 10, 4, NULL),
                     HERD_UPDATE_SAME);
    assert_string_equal(herd_table_find(t, "k", 1)->at, "AT A +0.1 k +1+1 5");
    /* A greater position at the same time still ranks above. */
    assert_int_equal(herd_table_update_report(t, "k", 1, tm(5, 0), "AT A +0.9 k +2+1 5", 18, 10, 4, NULL),
                     HERD_UPDATE_NEWER);
    /* From a neighbour, the same three keys with a greater line win the last tie-break. */
    assert_int_equal(herd_table_update(t, "k", 1, tm(5, 0), "AT A +1.0 k +2+1 5", 18, 10, 4, NULL),
                     HERD_UPDATE_NEWER);
    assert_string_equal(herd_table_find(t, "k", 1)->at, "AT A +1.0 k +2+1 5");
    herd_table_destroy(&t);
}

/* Removal keeps every other record findable (backward-shift deletion), and
 * the digests follow. */
static void test_remove(void **state)
{
    (void) state;
    enum { N = 20000 };
    herd_table_t *t = herd_table_new(), *ref = herd_table_new();
    char id[64];
    for (size_t i = 0; i < N; i++) {
        many_id(id, sizeof id, i);
        offer(t, id, tm(100 + (int64_t) i, 0), "A", NULL);
        if (i % 3 != 0)
            offer(ref, id, tm(100 + (int64_t) i, 0), "A", NULL);
    }
    for (size_t i = 0; i < N; i += 3) {
        many_id(id, sizeof id, i);
        assert_true(herd_table_remove(t, id, strlen(id)));
        assert_false(herd_table_remove(t, id, strlen(id)));
    }
    assert_int_equal(herd_table_size(t), herd_table_size(ref));
    assert_true(herd_table_digest(t) == herd_table_digest(ref));
    assert_memory_equal(herd_table_group_digests(t), herd_table_group_digests(ref),
                        HERD_TABLE_GROUPS * sizeof(uint64_t));
    assert_memory_equal(herd_table_bucket_digests(t), herd_table_bucket_digests(ref),
                        HERD_TABLE_BUCKETS * sizeof(uint64_t));
    for (size_t i = 0; i < N; i++) {
        many_id(id, sizeof id, i);
        const herd_record_t *r = herd_table_find(t, id, strlen(id));
        if (i % 3 == 0)
            assert_null(r);
        else
            check_record(r, id, tm(100 + (int64_t) i, 0), "A");
    }
    assert_int_equal(herd_table_dropped(t), 0);
    herd_table_destroy(&t);
    herd_table_destroy(&ref);
}

/* Buckets: the same id falls in the same bucket everywhere; a bucket lists
 * exactly its records; bucket, group and table digests agree. */
static void test_buckets(void **state)
{
    (void) state;
    enum { N = 30000 };
    herd_table_t *t = herd_table_new();
    char id[64];
    for (size_t i = 0; i < N; i++) {
        many_id(id, sizeof id, i);
        offer(t, id, tm(100 + (int64_t) i, 0), i % 2 ? "A" : "B", NULL);
    }
    assert_int_equal(herd_table_bucket_of("kiwi.cs.ucla.edu", 16), herd_table_bucket_of("kiwi.cs.ucla.edu", 16));
    const uint64_t *bd = herd_table_bucket_digests(t), *gd = herd_table_group_digests(t);
    uint64_t all = 0;
    size_t listed = 0;
    for (uint32_t g = 0; g < HERD_TABLE_GROUPS; g++) {
        uint64_t x = 0;
        for (uint32_t b = g * HERD_TABLE_GROUP_SIZE; b < (g + 1) * HERD_TABLE_GROUP_SIZE; b++) {
            uint64_t y = 0;
            const void *cur = NULL;
            const herd_record_t *r;
            while ((r = herd_table_bucket_next(t, b, &cur)) != NULL) {
                assert_int_equal(herd_table_bucket_of(r->id, r->id_len), b);
                assert_true(r->digest == herd_record_fingerprint(r->at, r->at_len));
                y ^= r->digest;
                listed++;
            }
            assert_true(y == bd[b]);
            x ^= y;
        }
        assert_true(x == gd[g]);
        all ^= x;
    }
    assert_int_equal(listed, N);
    assert_true(all == herd_table_digest(t));
    /* Fingerprints are fixed across processes: a known value. */
    assert_true(herd_record_fingerprint("", 0) != 0);
    assert_true(herd_record_fingerprint("AT A +0 x +0+0 1", 16) != herd_record_fingerprint("AT A +0 x +0+0 2", 16));
    herd_table_destroy(&t);
}

static uint64_t drops_seen;
static int64_t last_drop_sec;
static void on_drop(void *arg, const herd_record_t *r)
{
    (void) arg;
    drops_seen++;
    last_drop_sec = r->time.sec;
}

/* max_records drops the lowest-ranked record; a new record that would be
 * the lowest of a full table is refused; the ttl drops old records; the
 * same offers in any order leave the same records. */
static void test_bounds(void **state)
{
    (void) state;
    herd_table_t *t = herd_table_new();
    drops_seen = 0;
    assert_int_equal(herd_table_set_limits(t, 3, 0, on_drop, NULL), 0);
    assert_int_equal(offer(t, "a", tm(10, 0), "A", NULL), HERD_UPDATE_NEWER);
    assert_int_equal(offer(t, "b", tm(30, 0), "A", NULL), HERD_UPDATE_NEWER);
    assert_int_equal(offer(t, "c", tm(20, 0), "A", NULL), HERD_UPDATE_NEWER);
    assert_int_equal(offer(t, "d", tm(40, 0), "A", NULL), HERD_UPDATE_NEWER);
    assert_int_equal(herd_table_size(t), 3);
    assert_null(herd_table_find(t, "a", 1)); /* the oldest went */
    assert_int_equal(drops_seen, 1);
    assert_int_equal(last_drop_sec, 10);
    /* Lower than everything held: refused, nothing dropped. */
    assert_int_equal(offer(t, "e", tm(5, 0), "A", NULL), HERD_UPDATE_REFUSED);
    assert_null(herd_table_find(t, "e", 1));
    assert_int_equal(herd_table_size(t), 3);
    /* An update of a held client never drops anyone. */
    assert_int_equal(offer(t, "c", tm(50, 0), "A", NULL), HERD_UPDATE_NEWER);
    assert_int_equal(herd_table_size(t), 3);
    assert_int_equal(drops_seen, 1);
    /* Now b (30) is the lowest. */
    assert_int_equal(offer(t, "f", tm(35, 0), "A", NULL), HERD_UPDATE_NEWER);
    assert_null(herd_table_find(t, "b", 1));
    assert_non_null(herd_table_find(t, "c", 1));
    assert_non_null(herd_table_find(t, "d", 1));
    assert_non_null(herd_table_find(t, "f", 1));
    assert_int_equal(herd_table_dropped(t), 2);
    /* Lowering the bound drops at once. */
    assert_int_equal(herd_table_set_limits(t, 1, 0, on_drop, NULL), 0);
    assert_int_equal(herd_table_size(t), 1);
    assert_non_null(herd_table_find(t, "c", 1));
    herd_table_destroy(&t);

    /* ttl */
    t = herd_table_new();
    assert_int_equal(herd_table_set_limits(t, 0, 100, on_drop, NULL), 0);
    for (int i = 0; i < 50; i++) {
        char id[16];
        snprintf(id, sizeof id, "t%d", i);
        assert_int_equal(offer(t, id, tm(1000 + i * 10, 0), "A", NULL), HERD_UPDATE_NEWER);
    }
    /* At 1300, records older than 1200 go: t0..t19. */
    assert_int_equal(herd_table_expire(t, 1300), 20);
    assert_int_equal(herd_table_size(t), 30);
    assert_null(herd_table_find(t, "t19", 3));
    assert_non_null(herd_table_find(t, "t20", 3));
    assert_int_equal(offer(t, "late", tm(1100, 0), "A", NULL), HERD_UPDATE_REFUSED);
    herd_table_destroy(&t);

    /* Order independence at the bound: 2000 offers, bound 500, two orders. */
    herd_table_t *x = herd_table_new(), *y = herd_table_new();
    herd_table_set_limits(x, 500, 0, NULL, NULL);
    herd_table_set_limits(y, 500, 0, NULL, NULL);
    char id[64];
    for (size_t i = 0; i < 2000; i++) {
        size_t j = (i * 7919) % 2000;
        many_id(id, sizeof id, i % 1300);
        offer(x, id, tm((int64_t) ((i * 31) % 997), 0), "A", NULL);
        many_id(id, sizeof id, j % 1300);
        offer(y, id, tm((int64_t) ((j * 31) % 997), 0), "A", NULL);
    }
    assert_int_equal(herd_table_size(x), 500);
    assert_int_equal(herd_table_size(y), 500);
    assert_true(herd_table_digest(x) == herd_table_digest(y));
    herd_table_destroy(&x);
    herd_table_destroy(&y);
}


/* Issue 18: a client dating its reports a day ahead cannot push real records
 * out of a full table. 1,000 future-dated reports fill a 1,000-record table;
 * real reports received later are all stored, and the future-dated ones go
 * first (their receive time is earlier, whatever their client time). */
static void on_future_drop(void *arg, const herd_record_t *r)
{
    size_t *n = arg;
    /* Only future-dated clients ("f...") may go while any is held. */
    assert_true(r->id_len > 0 && r->id[0] == 'f');
    (*n)++;
}

/* Offers the AT line a server named `server` makes at `recv` for a client
 * report at `client` (herd_time_format_diff gives the skew). */
static herd_update_t offer_at(herd_table_t *t, const char *id, herd_time_t client, herd_time_t recv,
                              const char *server, bool own)
{
    char skew[HERD_TIME_DIFF_MAX], at[512];
    herd_time_format_diff(recv, client, skew, sizeof skew);
    const char *pos = "+34.068930-118.445127";
    int n = snprintf(at, sizeof at, "AT %s %s %s %s %lld.%09d", server, skew, id, pos, (long long) client.sec,
                     (int) client.nsec);
    assert_true(n > 0 && (size_t) n < sizeof at);
    size_t pos_off = (size_t) (strstr(at + 3 + strlen(server) + strlen(skew), pos) - at);
    return (own ? herd_table_update_report : herd_table_update)(t, id, strlen(id), client, at, (size_t) n,
                                                                 pos_off, strlen(pos), NULL);
}

static void test_evict_by_receive_time(void **state)
{
    (void) state;
    enum { N = 1000 };
    const int64_t now = 1700000000;
    herd_table_t *t = herd_table_new();
    size_t drops = 0;
    assert_int_equal(herd_table_set_limits(t, N, 0, on_future_drop, &drops), 0);
    char id[64];
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof id, "f%d", i);
        /* Received at now + i ms, dated a day (less a minute) ahead. */
        herd_time_t recv = tm(now, i * 1000000);
        assert_int_equal(offer_at(t, id, tm(now + 86340, i), recv, "Bailey", true), HERD_UPDATE_NEWER);
    }
    assert_int_equal(herd_table_size(t), N);
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof id, "r%d", i);
        /* Real reports, received a second later, sent 0.1 s before that. */
        herd_time_t recv = tm(now + 1, i * 1000000);
        assert_int_equal(offer_at(t, id, tm(now, 900000000 + i * 1000), recv, i % 2 ? "Clark" : "Bailey",
                                  i % 3 == 0),
                         HERD_UPDATE_NEWER);
        /* The future-dated clients went in the order they were received. */
        snprintf(id, sizeof id, "f%d", i);
        assert_null(herd_table_find(t, id, strlen(id)));
        if (i + 1 < N) {
            snprintf(id, sizeof id, "f%d", i + 1);
            assert_non_null(herd_table_find(t, id, strlen(id)));
        }
    }
    assert_int_equal(drops, N);
    assert_int_equal(herd_table_size(t), N);
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof id, "r%d", i);
        assert_non_null(herd_table_find(t, id, strlen(id)));
    }

    /* A neighbour's copy of a report received before everything held is the
     * first to go: refused, as on every server, and nothing dropped. */
    herd_table_set_limits(t, N, 0, NULL, NULL);
    assert_int_equal(offer_at(t, "late", tm(now + 86000, 0), tm(now, 999000000), "Jaquez", false),
                     HERD_UPDATE_REFUSED);
    assert_null(herd_table_find(t, "late", 4));
    /* Received after the first real report: admitted, and that one goes. */
    assert_int_equal(offer_at(t, "late", tm(now, 0), tm(now + 1, 500), "Jaquez", false), HERD_UPDATE_NEWER);
    assert_null(herd_table_find(t, "r0", 2));
    assert_non_null(herd_table_find(t, "r1", 2));
    /* Our own new report is always admitted, even one "received" before
     * everything held (our clock behind the others'): the record first in
     * the order makes room for it. */
    assert_int_equal(offer_at(t, "mine", tm(now - 5, 0), tm(now - 1, 0), "Bailey", true), HERD_UPDATE_NEWER);
    assert_non_null(herd_table_find(t, "mine", 4));
    assert_null(herd_table_find(t, "late", 4));
    assert_int_equal(herd_table_size(t), N);
    /* ... and is the next to go. */
    assert_int_equal(offer_at(t, "next", tm(now + 2, 0), tm(now + 2, 0), "Clark", false), HERD_UPDATE_NEWER);
    assert_null(herd_table_find(t, "mine", 4));
    assert_non_null(herd_table_find(t, "r1", 2));

    /* The ttl goes by receive time too: a record dated ahead but received
     * long ago expires; one dated long ago but received now does not. */
    herd_table_t *u = herd_table_new();
    assert_int_equal(herd_table_set_limits(u, 0, 60, NULL, NULL), 0);
    assert_int_equal(offer_at(u, "ahead", tm(now + 3600, 0), tm(now - 120, 0), "A", false), HERD_UPDATE_NEWER);
    assert_int_equal(offer_at(u, "behind", tm(now - 3600, 0), tm(now - 10, 0), "A", false), HERD_UPDATE_NEWER);
    assert_int_equal(herd_table_expire(u, now), 1);
    assert_null(herd_table_find(u, "ahead", 5));
    assert_non_null(herd_table_find(u, "behind", 6));
    assert_int_equal(offer_at(u, "ahead", tm(now + 3600, 0), tm(now - 61, 0), "A", false), HERD_UPDATE_REFUSED);
    assert_int_equal(offer_at(u, "ahead", tm(now + 3600, 0), tm(now - 60, 0), "A", false), HERD_UPDATE_NEWER);
    herd_table_destroy(&u);
    herd_table_destroy(&t);
}

/* ---- a model of the bounds, checked against the table at random ---- */

#define MODEL_IDS 40
typedef struct {
    char id[16];
    size_t id_len;
    bool held;
    herd_time_t time, recv;
    char at[200];
    size_t at_len, pos_off, pos_len;
} mrec_t;

/* The eviction order of PROTOCOL section 6 as the contract states it:
 * receive time, then the section 3 rank, then the id. */
static int model_cmp(const mrec_t *a, const mrec_t *b)
{
    int c = herd_time_cmp(a->recv, b->recv);
    if (c != 0)
        return c;
    c = herd_rank_cmp(a->time, (herd_span_t) {a->at, a->at_len}, (herd_span_t) {a->at + a->pos_off, a->pos_len},
                      b->time, (herd_span_t) {b->at, b->at_len}, (herd_span_t) {b->at + b->pos_off, b->pos_len});
    if (c != 0)
        return c;
    c = memcmp(a->id, b->id, a->id_len < b->id_len ? a->id_len : b->id_len);
    return c != 0 ? c : (a->id_len > b->id_len) - (a->id_len < b->id_len);
}

static uint64_t rnd_state;
static uint64_t rnd(uint64_t n)
{
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 7;
    rnd_state ^= rnd_state << 17;
    return rnd_state % n;
}

/* Random records (times, skews of either sign, origins, positions of any
 * length so records outgrow their room) offered to a bounded table and to
 * the model; after every step both hold the same records, the drops agree,
 * and the digests equal those of a fresh table holding the same records. */
static void test_bounds_model(void **state)
{
    (void) state;
    static mrec_t model[MODEL_IDS];
    static const char *origins[] = {"A", "Bb", "Clark"};
    for (int variant = 0; variant < 4; variant++) {
        const size_t max = variant % 2 ? 16 : 0;
        const int64_t ttl = variant >= 2 ? 40 : 0;
        rnd_state = 0x12345678u + (uint64_t) variant;
        herd_table_t *t = herd_table_new();
        assert_int_equal(herd_table_set_limits(t, max, ttl, NULL, NULL), 0);
        memset(model, 0, sizeof model);
        size_t held = 0;
        uint64_t drops = 0;
        int64_t floor = INT64_MIN, now = 1000;
        for (int step = 0; step < 6000; step++) {
            if (ttl && rnd(50) == 0) {
                now += (int64_t) rnd(10);
                floor = now - ttl;
                size_t gone = 0;
                for (int k = 0; k < MODEL_IDS; k++)
                    if (model[k].held && model[k].recv.sec < floor) {
                        model[k].held = false;
                        gone++;
                    }
                assert_int_equal(herd_table_expire(t, now), gone);
                held -= gone;
                drops += gone;
            }
            mrec_t m;
            int k = (int) rnd(MODEL_IDS);
            m.id_len = (size_t) snprintf(m.id, sizeof m.id, "id%d", k);
            m.time = tm(now - 30 + (int64_t) rnd(60), (int32_t) rnd(3));
            char skew[40], pos[80];
            snprintf(skew, sizeof skew, "%c%d.%09d", rnd(3) ? '+' : '-', (int) rnd(30), (int) rnd(3) * 7);
            size_t digits = 1 + rnd(60);
            pos[0] = '+';
            for (size_t d = 0; d < digits; d++)
                pos[1 + d] = (char) ('0' + rnd(2));
            strcpy(pos + 1 + digits, "-1");
            const char *origin = origins[rnd(3)];
            m.at_len = (size_t) snprintf(m.at, sizeof m.at, "AT %s %s %s %s %lld.%09d", origin, skew, m.id, pos,
                                         (long long) m.time.sec, (int) m.time.nsec);
            m.pos_off = 3 + strlen(origin) + 1 + strlen(skew) + 1 + m.id_len + 1;
            m.pos_len = strlen(pos);
            m.recv = herd_record_receive_time(m.at, m.at_len, m.time);
            m.held = true;

            herd_update_t want;
            int victim = -1;
            mrec_t *cur = &model[k];
            if (cur->held) {
                int c = herd_rank_cmp(m.time, (herd_span_t) {m.at, m.at_len},
                                      (herd_span_t) {m.at + m.pos_off, m.pos_len}, cur->time,
                                      (herd_span_t) {cur->at, cur->at_len},
                                      (herd_span_t) {cur->at + cur->pos_off, cur->pos_len});
                want = c == 0 ? HERD_UPDATE_SAME : c < 0 ? HERD_UPDATE_OLDER : HERD_UPDATE_NEWER;
                if (want == HERD_UPDATE_NEWER && m.recv.sec < floor)
                    want = HERD_UPDATE_REFUSED;
            } else if (m.recv.sec < floor) {
                want = HERD_UPDATE_REFUSED;
            } else {
                want = HERD_UPDATE_NEWER;
                if (max && held >= max) {
                    for (int j = 0; j < MODEL_IDS; j++)
                        if (model[j].held && (victim < 0 || model_cmp(&model[j], &model[victim]) < 0))
                            victim = j;
                    if (model_cmp(&m, &model[victim]) < 0) {
                        want = HERD_UPDATE_REFUSED;
                        victim = -1;
                    }
                }
            }
            const herd_record_t *r = NULL;
            herd_update_t got = herd_table_update(t, m.id, m.id_len, m.time, m.at, m.at_len, m.pos_off, m.pos_len,
                                                  &r);
            assert_int_equal(got, want);
            if (want == HERD_UPDATE_NEWER) {
                assert_string_equal(r->at, m.at);
                if (!cur->held)
                    held++;
                *cur = m;
                if (victim >= 0) {
                    model[victim].held = false;
                    held--;
                    drops++;
                }
            }
            assert_int_equal(herd_table_size(t), held);
            assert_int_equal(herd_table_dropped(t), drops);
            if (step % 100 == 0 || step == 5999) {
                herd_table_t *fresh = herd_table_new();
                for (int j = 0; j < MODEL_IDS; j++) {
                    char id[16];
                    int n = snprintf(id, sizeof id, "id%d", j);
                    const herd_record_t *got_r = herd_table_find(t, id, (size_t) n);
                    if (!model[j].held) {
                        assert_null(got_r);
                        continue;
                    }
                    assert_non_null(got_r);
                    assert_string_equal(got_r->at, model[j].at);
                    assert_int_equal(got_r->pos_off, model[j].pos_off);
                    assert_int_equal(got_r->digest, herd_record_fingerprint(model[j].at, model[j].at_len));
                    herd_table_update(fresh, id, (size_t) n, model[j].time, model[j].at, model[j].at_len,
                                      model[j].pos_off, model[j].pos_len, NULL);
                }
                assert_true(herd_table_digest(fresh) == herd_table_digest(t));
                assert_memory_equal(herd_table_bucket_digests(fresh), herd_table_bucket_digests(t),
                                    HERD_TABLE_BUCKETS * sizeof(uint64_t));
                assert_memory_equal(herd_table_group_digests(fresh), herd_table_group_digests(t),
                                    HERD_TABLE_GROUPS * sizeof(uint64_t));
                /* Every record is listed in its bucket exactly once. */
                size_t listed = 0;
                for (int j = 0; j < MODEL_IDS; j++) {
                    if (!model[j].held)
                        continue;
                    const void *bc = NULL;
                    const herd_record_t *br;
                    uint32_t b = herd_table_bucket_of(model[j].id, model[j].id_len);
                    while ((br = herd_table_bucket_next(t, b, &bc)) != NULL)
                        if (br->id_len == model[j].id_len && !memcmp(br->id, model[j].id, br->id_len))
                            listed++;
                }
                assert_int_equal(listed, held);
                herd_table_destroy(&fresh);
            }
        }
        herd_table_destroy(&t);
    }
}

/* A record that is the newest received is never refused by max_records,
 * whatever its client time, its origin or the table holds. */
static void test_newest_received_admitted(void **state)
{
    (void) state;
    rnd_state = 0xfeedu;
    herd_table_t *t = herd_table_new();
    assert_int_equal(herd_table_set_limits(t, 50, 0, NULL, NULL), 0);
    herd_time_t newest = tm(0, 0);
    char id[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(id, sizeof id, "n%d", (int) rnd(200));
        herd_time_t client = tm(1000 + (int64_t) rnd(100000), (int32_t) rnd(1000000000));
        herd_time_t recv = tm(1000 + (int64_t) rnd(100000), (int32_t) rnd(1000000000));
        bool is_newest = herd_time_cmp(recv, newest) > 0;
        herd_update_t u = offer_at(t, id, client, recv, rnd(2) ? "A" : "B", false);
        if (is_newest) {
            assert_int_not_equal(u, HERD_UPDATE_REFUSED);
            newest = recv;
        }
        assert_true(herd_table_size(t) <= 50);
    }
    herd_table_destroy(&t);
}

/* herd_table_update_checked asks its accept only of a record it would
 * store; a refusal leaves the table (and its digest) as it was. */
typedef struct {
    int asked;   /* times accept was called */
    bool answer; /* what it says */
} accept_t;

static bool accept_count(void *arg)
{
    accept_t *a = arg;
    a->asked++;
    return a->answer;
}

static herd_update_t offer_checked(herd_table_t *t, const char *id, herd_time_t time, accept_t *a)
{
    char at[512];
    const char *pos = "+34.068930-118.445127";
    int n = snprintf(at, sizeof at, "AT Bailey +0.000000001 %s %s %lld.%09d", id, pos, (long long) time.sec,
                     (int) time.nsec);
    size_t pos_off = (size_t) (strstr(at, pos) - at);
    return herd_table_update_checked(t, id, strlen(id), time, at, (size_t) n, pos_off, strlen(pos), accept_count, a,
                                     NULL);
}

static void test_update_checked(void **state)
{
    (void) state;
    herd_table_t *t = herd_table_new();
    assert_non_null(t);
    accept_t a = {.answer = false};
    /* A new client, refused: not stored. */
    assert_int_equal(offer_checked(t, "c1", tm(100, 0), &a), HERD_UPDATE_REJECTED);
    assert_int_equal(a.asked, 1);
    assert_int_equal(herd_table_size(t), 0);
    assert_int_equal(herd_table_digest(t), 0);
    /* Accepted: stored. */
    a.answer = true;
    assert_int_equal(offer_checked(t, "c1", tm(100, 0), &a), HERD_UPDATE_NEWER);
    assert_int_equal(a.asked, 2);
    uint64_t digest = herd_table_digest(t);
    /* The same record again, and an older one: not asked. */
    assert_int_equal(offer_checked(t, "c1", tm(100, 0), &a), HERD_UPDATE_SAME);
    assert_int_equal(offer_checked(t, "c1", tm(99, 0), &a), HERD_UPDATE_OLDER);
    assert_int_equal(a.asked, 2);
    /* A newer one, refused: the held record and the digest stay. */
    a.answer = false;
    assert_int_equal(offer_checked(t, "c1", tm(101, 0), &a), HERD_UPDATE_REJECTED);
    assert_int_equal(a.asked, 3);
    assert_int_equal(herd_table_digest(t), digest);
    const herd_record_t *r = herd_table_find(t, "c1", 2);
    check_record(r, "c1", tm(100, 0), "Bailey");
    herd_table_destroy(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),           cmocka_unit_test(test_merge_rule),
        cmocka_unit_test(test_ids_are_bytes),   cmocka_unit_test(test_long_ids_and_bad_lengths),
        cmocka_unit_test(test_many_clients),    cmocka_unit_test(test_digest),
        cmocka_unit_test(test_ties),            cmocka_unit_test(test_remove),
        cmocka_unit_test(test_report_resend),
        cmocka_unit_test(test_buckets),         cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_reserve),
        cmocka_unit_test(test_evict_by_receive_time),
        cmocka_unit_test(test_bounds_model),
        cmocka_unit_test(test_newest_received_admitted),
        cmocka_unit_test(test_update_checked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
