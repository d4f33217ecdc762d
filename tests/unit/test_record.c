/* Unit tests for herd_record: the AT line read strictly and quickly, its
 * fields as spans, the server-name rule and the receive time, exactly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "herd_proto.h"
#include "herd_record.h"

#define L(lit) lit, sizeof(lit) - 1
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static herd_time_t tm(int64_t sec, int32_t nsec)
{
    return (herd_time_t) {sec, nsec};
}

static void expect_span(herd_span_t s, const char *want, size_t n, const char *what, size_t row)
{
    if (s.len != n || (n && memcmp(s.p, want, n) != 0))
        fail_msg("row %zu: %s is \"%.*s\", not \"%.*s\"", row, what, (int) s.len, s.p, (int) n, want);
}

/* herd_record: the fields and the receive time, exactly. */
static void test_record_fields(void **state)
{
    (void) state;
    const char *at = "AT Clark +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503";
    herd_span_t o = herd_record_origin(at, strlen(at)), s = herd_record_skew(at, strlen(at));
    assert_int_equal(o.len, 5);
    assert_memory_equal(o.p, "Clark", 5);
    assert_int_equal(s.len, 12);
    assert_memory_equal(s.p, "+0.263873386", 12);
    herd_time_t r = herd_record_receive_time(at, strlen(at), tm(1621464827, 959498503));
    assert_int_equal(r.sec, 1621464828);
    assert_int_equal(r.nsec, 223371889);
    assert_int_equal(herd_record_origin("AT", 2).len, 0);
    assert_int_equal(herd_record_origin("AT Alone", 8).len, 5);
    assert_int_equal(herd_record_skew("AT Alone", 8).len, 0);
    assert_int_equal(herd_record_skew("AT A +1", 7).len, 2);
}

/* The receive time, exactly: the contract's examples, and the edges of the
 * skew: signs, borrows and carries across the second, exactly nine digits,
 * longer and shorter fractions, text that is no skew. */
static void test_receive_time_edges(void **state)
{
    (void) state;
    struct {
        const char *line;
        herd_time_t client, want;
    } cases[] = {
        /* the examples of the contract and the skew's longer forms */
        {"AT A -0.959498504 x +1+1 5", tm(1621464827, 959498503), tm(1621464826, 999999999)},
        {"AT A -86400.000000000 x +1+1 5", tm(1700086400, 5), tm(1700000000, 5)},
        {"AT A +0.1 x +1+1 5", tm(10, 950000000), tm(11, 50000000)},
        {"AT A +2.0000000019 x +1+1 5", tm(10, 0), tm(12, 1)},
        {"AT A -20.5 x +1+1 5", tm(10, 0), tm(-11, 500000000)},
        {"AT A +99999999999999999999.000000000 x +1+1 5", tm(999999999999999999LL, 0),
         tm(1999999999999999998LL, 0)},
        {"AT A +5 x", tm(7, 0), tm(12, 0)},
        {"AT A 5.0 x", tm(7, 0), tm(7, 0)},
        {"AT A +5. x", tm(7, 0), tm(7, 0)},
        {"AT A +.5 x", tm(7, 0), tm(7, 0)},
        {"AT A +5.x x", tm(7, 0), tm(7, 0)},
        {"AT A", tm(7, 0), tm(7, 0)},
        {"AT A ", tm(7, 0), tm(7, 0)},
        {"AT", tm(7, 0), tm(7, 0)},
        {"", tm(7, 0), tm(7, 0)},
        {"AT A +1.0 x", tm(-1, 0), tm(-1, 0)},
        /* zero either way */
        {"AT A +0.000000000 x +1+1 5", tm(5, 7), tm(5, 7)},
        {"AT A -0.000000000 x +1+1 5", tm(5, 7), tm(5, 7)},
        /* a nanosecond each way, with and without crossing the second */
        {"AT A +0.000000001 x +1+1 5", tm(5, 999999999), tm(6, 0)},
        {"AT A -0.000000001 x +1+1 5", tm(5, 0), tm(4, 999999999)},
        {"AT A +0.000000001 x +1+1 5", tm(5, 7), tm(5, 8)},
        {"AT A -0.000000001 x +1+1 5", tm(5, 7), tm(5, 6)},
        /* the largest fraction each way */
        {"AT A +0.999999999 x +1+1 5", tm(5, 1), tm(6, 0)},
        {"AT A -0.999999999 x +1+1 5", tm(5, 999999999), tm(5, 0)},
        {"AT A -0.999999999 x +1+1 5", tm(5, 0), tm(4, 1)},
        /* below zero: the seconds go negative, the nanoseconds stay valid */
        {"AT A -6.000000000 x +1+1 5", tm(5, 0), tm(-1, 0)},
        {"AT A -5.000000001 x +1+1 5", tm(5, 0), tm(-1, 999999999)},
        /* fraction digits past the ninth are ignored, fewer are padded */
        {"AT A +1.123456789999 x +1+1 5", tm(0, 0), tm(1, 123456789)},
        {"AT A -1.1234567891 x +1+1 5", tm(2, 0), tm(0, 876543211)},
        {"AT A +1.5 x +1+1 5", tm(0, 600000000), tm(2, 100000000)},
        {"AT A +7 x +1+1 5", tm(1, 1), tm(8, 1)},
        /* leading zeros */
        {"AT A +0007.000000000 x +1+1 5", tm(1, 0), tm(8, 0)},
        /* not a skew: the client's time unchanged */
        {"AT A ++1.000000000 x +1+1 5", tm(1, 2), tm(1, 2)},
        {"AT A +-1.000000000 x +1+1 5", tm(1, 2), tm(1, 2)},
        {"AT A + x +1+1 5", tm(1, 2), tm(1, 2)},
        {"AT A - x +1+1 5", tm(1, 2), tm(1, 2)},
        {"AT A +1.0.0 x +1+1 5", tm(1, 2), tm(1, 2)},
        {"AT A +1e9 x +1+1 5", tm(1, 2), tm(1, 2)},
        /* a client time outside herd_time_parse's range */
        {"AT A +1.000000000 x +1+1 5", tm(1, 1000000000), tm(1, 1000000000)},
        {"AT A +1.000000000 x +1+1 5", tm(1, -1), tm(1, -1)},
        {"AT A +1.000000000 x +1+1 5", tm(HERD_TIME_MAX_SEC + 1, 0), tm(HERD_TIME_MAX_SEC + 1, 0)},
    };
    for (size_t i = 0; i < COUNT(cases); i++) {
        herd_time_t r = herd_record_receive_time(cases[i].line, strlen(cases[i].line), cases[i].client);
        if (r.sec != cases[i].want.sec || r.nsec != cases[i].want.nsec)
            fail_msg("row %zu \"%s\": %lld.%09d", i, cases[i].line, (long long) r.sec, (int) r.nsec);
    }
    /* whole seconds saturate: the largest skew on the largest time */
    char line[128];
    int n = snprintf(line, sizeof line, "AT A +%s.999999999 x +1+1 5", "99999999999999999999999999");
    herd_time_t r = herd_record_receive_time(line, (size_t) n, tm(HERD_TIME_MAX_SEC, 999999999));
    assert_true(r.sec == 2 * HERD_TIME_MAX_SEC + 1);
    assert_int_equal(r.nsec, 999999998);
    n = snprintf(line, sizeof line, "AT A -%s.999999999 x +1+1 5", "99999999999999999999999999");
    r = herd_record_receive_time(line, (size_t) n, tm(0, 0));
    assert_true(r.sec == -HERD_TIME_MAX_SEC - 1);
    assert_int_equal(r.nsec, 1);
}

/* Server names: 1..HERD_MAX_NAME bytes of letters, digits, '_' and '-';
 * every other byte value refused, alone and inside a name. */
static void test_valid_name(void **state)
{
    (void) state;
    assert_true(herd_record_valid_name("a", 1));
    assert_true(herd_record_valid_name("Clark", 5));
    assert_true(herd_record_valid_name("a_b-C9", 6));
    assert_true(herd_record_valid_name("-", 1));
    assert_false(herd_record_valid_name("", 0));
    assert_false(herd_record_valid_name(NULL, 0));
    char name[HERD_MAX_NAME + 2];
    memset(name, 'N', sizeof name);
    assert_true(herd_record_valid_name(name, HERD_MAX_NAME));
    assert_false(herd_record_valid_name(name, HERD_MAX_NAME + 1));
    for (int c = 0; c < 256; c++) {
        bool want = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
        char in[3] = {'a', (char) c, 'b'};
        if (herd_record_name_byte((unsigned char) c) != want || herd_record_valid_name(in, 3) != want
            || herd_record_valid_name(in + 1, 1) != want)
            fail_msg("byte %d judged wrongly", c);
    }
}

/* A line and what a parser must return for it. */
typedef struct {
    const char *line;
    size_t len;
    int want;
} row_t;

/* Runs `parse` on each row: the answer is the row's; a refusal leaves *at
 * alone; a line taken has the server and skew spans herd_record_origin and
 * herd_record_skew find. */
static void check_rows(const row_t *rows, size_t n, int (*parse)(const char *, size_t, herd_at_t *))
{
    for (size_t i = 0; i < n; i++) {
        herd_at_t at;
        memset(&at, 0x5a, sizeof at);
        herd_at_t before = at;
        int rc = parse(rows[i].line, rows[i].len, &at);
        if (rc != rows[i].want)
            fail_msg("row %zu \"%.*s\": not %d", i, (int) rows[i].len, rows[i].line, rows[i].want);
        if (rc != 0 && memcmp(&at, &before, sizeof at) != 0)
            fail_msg("row %zu: *at changed on failure", i);
        if (rc == 0) {
            herd_span_t o = herd_record_origin(rows[i].line, rows[i].len);
            herd_span_t k = herd_record_skew(rows[i].line, rows[i].len);
            expect_span(at.server, o.p, o.len, "server", i);
            expect_span(at.skew, k.p, k.len, "skew", i);
        }
    }
}

/* Strict parsing: the skew's exactly nine fraction digits, its widest
 * form, and the name's length, at their edges. */
static void test_parse_strict_edges(void **state)
{
    (void) state;
    static const row_t rows[] = {
        {L("AT S +1.000000000 k +0-0 1"), 0},
        {L("AT S -1.000000000 k +0-0 1"), 0},
        {L("AT S -0.000000000 k +0-0 1"), 0},
        {L("AT S +1.00000000 k +0-0 1"), -1},
        {L("AT S +1.0000000000 k +0-0 1"), -1},
        {L("AT S +1 k +0-0 1"), -1},
        {L("AT S 1.000000000 k +0-0 1"), -1},
        {L("AT S +1.000000000x k +0-0 1"), -1},
        /* 31 bytes is the longest skew taken, 32 is refused */
        {L("AT S +9999999999999999999.000000000 k +0-0 1"), 0},
        {L("AT S +99999999999999999999.000000000 k +0-0 1"), 0},
        {L("AT S +999999999999999999999.000000000 k +0-0 1"), -1},
        /* names */
        {L("AT - +1.000000000 k +0-0 1"), 0},
        {L("AT S.x +1.000000000 k +0-0 1"), -1},
        {L("AT S:x +1.000000000 k +0-0 1"), -1},
        {L("AT S\xff +1.000000000 k +0-0 1"), -1},
        {L("AT S234567890123456789012345678901234567890123456789012345678901234 +1.000000000 k +0-0 1"), 0},
        {L("AT S2345678901234567890123456789012345678901234567890123456789012345 +1.000000000 k +0-0 1"), -1},
        /* id, position, time */
        {L("AT S +1.000000000 k\x80 +0-0 1"), 0},
        {L("AT S +1.000000000 k +90-180 1"), 0},
        {L("AT S +1.000000000 k +90.1-180 1"), -1},
        {L("AT S +1.000000000 k +0-0 999999999999999999.999999999"), 0},
        {L("AT S +1.000000000 k +0-0 1000000000000000000"), -1},
    };
    check_rows(rows, COUNT(rows), herd_record_parse);
}

/* Quick parsing finds the same fields strict parsing does, and checks only
 * the shape, the first word, a non-empty id and position and the time. */
static void test_parse_quick(void **state)
{
    (void) state;
    const char *good = "AT Clark +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503";
    herd_at_t s, q;
    assert_int_equal(herd_record_parse(good, strlen(good), &s), 0);
    assert_int_equal(herd_record_parse_quick(good, strlen(good), &q), 0);
    assert_ptr_equal(q.server.p, s.server.p);
    assert_int_equal(q.server.len, s.server.len);
    assert_ptr_equal(q.skew.p, s.skew.p);
    assert_int_equal(q.skew.len, s.skew.len);
    assert_ptr_equal(q.id.p, s.id.p);
    assert_int_equal(q.id.len, s.id.len);
    assert_ptr_equal(q.pos.p, s.pos.p);
    assert_int_equal(q.pos.len, s.pos.len);
    assert_ptr_equal(q.time_txt.p, s.time_txt.p);
    assert_int_equal(q.time_txt.len, s.time_txt.len);
    assert_int_equal(herd_time_cmp(q.time, s.time), 0);

    static const row_t rows[] = {
        /* not judged quickly: the name, the skew, the position's form */
        {L("AT S.x junk k pos 1"), 0},
        {L("AT  +1 k +0-0 1"), 0},
        {L("AT S  k +0-0 1"), 0},
        {L("AT S\t+1 x k +0-0 1"), 0},
        /* the shape */
        {L(""), -1},
        {L("AT"), -1},
        {L("AT S +1 k +0-0"), -1},
        {L("AT S +1 k +0-0 1 "), -1},
        {L("AT S +1 k +0-0 1 x"), -1},
        {L(" AT S +1 k +0-0 1"), -1},
        /* the first word, the id, the position, the time */
        {L("at S +1 k +0-0 1"), -1},
        {L("ATS S +1 k +0-0 1"), -1},
        {L("AT S +1  +0-0 1"), -1},
        {L("AT S +1 k  1"), -1},
        {L("AT S +1 k +0-0 "), -1},
        {L("AT S +1 k +0-0 x"), -1},
        {L("AT S +1 k +0-0 1\n"), -1},
    };
    check_rows(rows, COUNT(rows), herd_record_parse_quick);
    herd_at_t at;
    assert_int_equal(herd_record_parse_quick(NULL, 0, &at), -1);
}

/* The split as a plain byte loop (how it was written before it scanned
 * eight bytes a step): the six fields of a line joined by single spaces;
 * strictly, no empty field and no other white space. */
static int ref_split(const char *line, size_t len, herd_span_t f[6], bool strict)
{
    size_t start = 0;
    for (size_t k = 0; k < 6; k++) {
        size_t e = start;
        while (e < len && line[e] != ' ') {
            if (strict && herd_proto_is_space((unsigned char) line[e]))
                return -1;
            e++;
        }
        if (strict && e == start)
            return -1;
        f[k] = (herd_span_t){line + start, e - start};
        if (k < 5) {
            if (e >= len)
                return -1;
            start = e + 1;
        } else if (e != len) {
            return -1;
        }
    }
    return 0;
}

/* Random lines, mostly well formed, with every kind of byte put at every
 * distance from an eight-byte boundary: the word-at-a-time split finds the
 * same fields as the byte loop, and parse is parse_quick plus check. */
static void test_split_matches_bytewise(void **state)
{
    (void) state;
    static const char odd[] = {' ', '\t', '\n', '\r', '\v', '\f', '\0', '\x01', '\x1f', '!', '\x7f', '\x80', '\xff'};
    const char *good[] = {"AT", "Bailey", "+0.263873386", "kiwi.cs.ucla.edu", "+34.068930-118.445127",
                          "1621464827.959498503"};
    uint64_t seed = 0x243f6a8885a308d3ULL;
    unsigned quick_ok = 0, strict_ok = 0;
    for (int round = 0; round < 200000; round++) {
        char line[200];
        size_t len = 0;
        for (int k = 0; k < 6; k++) {
            seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
            size_t pad = (seed >> 33) % 12; /* moves the fields across word boundaries */
            const char *g = good[k];
            if (k == 3) {
                for (size_t i = 0; i < pad; i++)
                    line[len++] = (char) ('a' + i);
            }
            memcpy(line + len, g, strlen(g));
            len += strlen(g);
            if (k < 5)
                line[len++] = ' ';
        }
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        int changes = (int) ((seed >> 60) % 3);
        for (int c = 0; c < changes; c++) {
            seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
            line[(seed >> 20) % len] = odd[(seed >> 40) % sizeof odd];
        }
        herd_span_t a[6], b[6];
        herd_at_t at, at2;
        /* The field finders, against a byte loop: the k-th field after "AT ". */
        size_t from = len < 3 ? len : 3;
        herd_span_t found[3] = {herd_record_origin(line, len), herd_record_skew(line, len), herd_record_id(line, len)};
        for (int k = 0; k < 3; k++) {
            size_t e = from;
            while (e < len && line[e] != ' ')
                e++;
            if (k > 0 && found[k].p == NULL) {
                assert_true(from > len);
                break;
            }
            assert_ptr_equal(found[k].p, line + from);
            assert_int_equal(found[k].len, e - from);
            from = e + 1;
        }
        int want_quick = ref_split(line, len, a, false);
        int got_quick = herd_record_parse_quick(line, len, &at);
        if (want_quick == 0 && a[3].len > 0 && a[4].len > 0 && a[0].len == 2 && !memcmp(a[0].p, "AT", 2)) {
            herd_time_t t;
            if (herd_time_parse(a[5].p, a[5].len, &t) == 0) {
                assert_int_equal(got_quick, 0);
                assert_ptr_equal(at.server.p, a[1].p);
                assert_int_equal(at.skew.len, a[2].len);
                assert_ptr_equal(at.id.p, a[3].p);
                assert_int_equal(at.id.len, a[3].len);
                assert_ptr_equal(at.pos.p, a[4].p);
                assert_int_equal(at.time_txt.len, a[5].len);
                quick_ok++;
            } else {
                assert_int_equal(got_quick, -1);
            }
        } else {
            assert_int_equal(got_quick, -1);
        }
        bool want_strict = ref_split(line, len, b, true) == 0 && got_quick == 0
                           && herd_record_valid_name(b[1].p, b[1].len) && b[3].len <= HERD_MAX_CLIENT_ID
                           && herd_proto_parse_position(b[4], NULL, NULL) == 0;
        int got_strict = herd_record_parse(line, len, &at2);
        /* The skew's own form is checked by test_parse_strict_edges; here
         * the skew bytes are only ever the good one or one changed byte. */
        if (got_strict == 0) {
            assert_true(want_strict);
            strict_ok++;
        } else if (want_strict) {
            assert_true(b[2].len != strlen(good[2]) || memcmp(b[2].p, good[2], b[2].len) != 0);
        }
    }
    assert_true(quick_ok > 1000);
    assert_true(strict_ok > 1000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_record_fields),   cmocka_unit_test(test_receive_time_edges),
        cmocka_unit_test(test_valid_name),      cmocka_unit_test(test_parse_strict_edges),
        cmocka_unit_test(test_parse_quick),
        cmocka_unit_test(test_split_matches_bytewise),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
