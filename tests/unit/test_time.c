/* Unit tests for herd_time: exact parsing, ordering and the skew text.
 *
 * Every expectation is written out as literal text or integers; nothing is
 * derived from the code under test. A failing row names itself. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "herd_time.h"

/* A literal and its length, so rows may hold NUL bytes. */
#define L(lit) lit, sizeof(lit) - 1

/* Makes a printable copy of bytes for failure messages. */
static const char *esc(const char *p, size_t n)
{
    static char out[512];
    size_t o = 0;
    for (size_t i = 0; i < n && o + 5 < sizeof out; i++) {
        unsigned char c = (unsigned char) p[i];
        if (c >= 0x20 && c < 0x7f && c != '\\')
            out[o++] = (char) c;
        else
            o += (size_t) snprintf(out + o, sizeof out - o, "\\x%02x", c);
    }
    out[o] = '\0';
    return out;
}

/* ---------------------------------------------------------------------- */
/* herd_time_parse: accepted texts and the exact values they stand for. */

struct parse_ok {
    const char *text;
    size_t len;
    int64_t sec;
    int32_t nsec;
};

static const struct parse_ok parse_ok_rows[] = {
    /* 0, 7, 9 and 12 fraction digits (the contract's own examples) */
    { L("1621464827"), 1621464827, 0 },
    { L("1621464827.9594985"), 1621464827, 959498500 },
    { L("1621464827.959498503"), 1621464827, 959498503 },
    { L("1621464827.959498503999"), 1621464827, 959498503 }, /* truncated, not rounded */
    { L("1621464827.999999999999"), 1621464827, 999999999 }, /* no carry into seconds */
    { L("0"), 0, 0 },
    { L("0.0"), 0, 0 },
    { L("0.000000001"), 0, 1 },
    { L("0.0000000009"), 0, 0 }, /* tenth digit only: below resolution */
    { L("5.5"), 5, 500000000 },
    { L("1.000000000"), 1, 0 },
    { L("12.05"), 12, 50000000 },
    { L("0001621464827.5"), 1621464827, 500000000 }, /* leading zeros */
    { L("000000000000000000000000000000000000000001"), 1, 0 },
    { L("999999999999999999"), 999999999999999999LL, 0 }, /* HERD_TIME_MAX_SEC */
    { L("999999999999999999.999999999"), 999999999999999999LL, 999999999 },
    { L("0000999999999999999999.5"), 999999999999999999LL, 500000000 },
    { L("123456789012345678"), 123456789012345678LL, 0 },
};

static void test_parse_valid(void **state)
{
    (void) state;
    for (size_t i = 0; i < sizeof parse_ok_rows / sizeof parse_ok_rows[0]; i++) {
        const struct parse_ok *r = &parse_ok_rows[i];
        herd_time_t t = { -7, -7 };
        if (herd_time_parse(r->text, r->len, &t) != 0)
            fail_msg("row %zu \"%s\": rejected", i, esc(r->text, r->len));
        if (t.sec != r->sec || t.nsec != r->nsec)
            fail_msg("row %zu \"%s\": got %lld.%09d", i, esc(r->text, r->len),
                     (long long) t.sec, (int) t.nsec);
    }
}

/* Texts that are not `D+[.D+]` or exceed HERD_TIME_MAX_SEC. */
struct parse_bad {
    const char *text;
    size_t len;
};

static const struct parse_bad parse_bad_rows[] = {
    { L("") },
    { L(".5") },
    { L("5.") },
    { L("+5") },
    { L("-5") },
    { L("1e9") },
    { L("1E9") },
    { L("1.5e3") },
    { L(" 5") },
    { L("5 ") },
    { L("5\t") },
    { L("1 2") },
    { L("1.2.3") },
    { L("1..2") },
    { L(".") },
    { L("0x10") },
    { L("1,5") },
    { L("5\0") },     /* NUL counted in the length */
    { L("\0" "5") },
    { L("5\xff") },   /* high byte */
    { L("1.5x") },
    { L("1.+5") },
    { L("1000000000000000000") },       /* HERD_TIME_MAX_SEC + 1 */
    { L("1000000000000000000.0") },
    { L("0001000000000000000000") },    /* too big even after leading zeros */
    { L("9999999999999999999") },       /* 19 nines: one digit too many */
    { L("18446744073709551617") },      /* wraps a uint64_t to 1 */
    { L("99999999999999999999999999999999999999999") },
};

static void test_parse_invalid(void **state)
{
    (void) state;
    for (size_t i = 0; i < sizeof parse_bad_rows / sizeof parse_bad_rows[0]; i++) {
        const struct parse_bad *r = &parse_bad_rows[i];
        herd_time_t t = { 0, 0 };
        if (herd_time_parse(r->text, r->len, &t) != -1)
            fail_msg("row %zu \"%s\": accepted as %lld.%09d", i, esc(r->text, r->len),
                     (long long) t.sec, (int) t.nsec);
    }
}

/* Ten thousand digits: judged by length, never accumulated. */
static void test_parse_huge_texts(void **state)
{
    (void) state;
    enum { N = 10000 };
    char *s = malloc(N + 16);
    assert_non_null(s);
    herd_time_t t;

    memset(s, '9', N);
    assert_int_equal(herd_time_parse(s, N, &t), -1);

    /* 1 followed by zeros: wraps to 0 in any fixed-width accumulator */
    s[0] = '1';
    memset(s + 1, '0', N - 1);
    assert_int_equal(herd_time_parse(s, N, &t), -1);

    /* 9,990 zeros then a small number: a valid time */
    memset(s, '0', N);
    memcpy(s + N - 10, "1621464827", 10);
    assert_int_equal(herd_time_parse(s, N, &t), 0);
    assert_int_equal(t.sec, 1621464827);
    assert_int_equal(t.nsec, 0);

    /* a 10,000-digit fraction keeps its first nine digits */
    memcpy(s, "42.", 3);
    memset(s + 3, '7', N - 3);
    assert_int_equal(herd_time_parse(s, N, &t), 0);
    assert_int_equal(t.sec, 42);
    assert_int_equal(t.nsec, 777777777);

    /* the same, with one stray byte at the very end */
    s[N - 1] = 'x';
    assert_int_equal(herd_time_parse(s, N, &t), -1);
    free(s);
}

/* Only `len` bytes are read: the text need not be NUL-terminated. */
static void test_parse_respects_length(void **state)
{
    (void) state;
    herd_time_t t;
    assert_int_equal(herd_time_parse("1621464827.959498503 junk", 20, &t), 0);
    assert_int_equal(t.sec, 1621464827);
    assert_int_equal(t.nsec, 959498503);
    assert_int_equal(herd_time_parse("12345", 2, &t), 0);
    assert_int_equal(t.sec, 12);
    assert_int_equal(t.nsec, 0);
    assert_int_equal(herd_time_parse("1.5", 2, &t), -1); /* "1." */
    assert_int_equal(herd_time_parse(NULL, 0, &t), -1);
}

/* ---------------------------------------------------------------------- */
/* herd_time_cmp */

/* A reference parser written from the contract's words alone: digits, an
 * optional '.' and digits, whole seconds of at most 18 significant digits,
 * the fraction cut (not rounded) at nine digits. Byte by byte, no tricks. */
static int ref_parse(const char *s, size_t n, long long *sec, long *nsec)
{
    size_t i = 0, sig = 0;
    long long whole = 0;
    bool lead = true;
    for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
        if (lead && s[i] == '0')
            continue;
        lead = false;
        if (++sig > 18)
            return -1;
        whole = whole * 10 + (s[i] - '0');
    }
    if (i == 0)
        return -1;
    long frac = 0;
    int digits = 0;
    if (i < n) {
        if (s[i] != '.' || i + 1 == n)
            return -1;
        for (i++; i < n; i++) {
            if (s[i] < '0' || s[i] > '9')
                return -1;
            if (digits < 9) {
                frac = frac * 10 + (s[i] - '0');
                digits++;
            }
        }
    }
    for (; digits < 9; digits++)
        frac *= 10;
    *sec = whole;
    *nsec = frac;
    return 0;
}

/* Texts near the usual `DDDDDDDDDD.DDDDDDDDD` (where the parser takes its
 * eight-bytes-a-step path) and around it, each byte now and then one of the
 * bytes that sit next to the digits or wrap when 6 is added to them: the
 * parser and the reference must agree on every one. */
static void test_parse_matches_reference(void **state)
{
    (void) state;
    static const unsigned char odd[] = {'/', ':', '.', ' ', '+', '-', 0x00, 0x29, 0x2f, 0x3a, 0x3f,
                                        0x40, 0x70, 0x79, 0xb0, 0xb9, 0xf0, 0xf9, 0xfa, 0xff};
    srand(2212);
    char s[32];
    for (int k = 0; k < 300000; k++) {
        size_t n = 17 + (size_t) (rand() % 7); /* 17..23, 20 most of the time */
        if (rand() % 2)
            n = 20;
        for (size_t i = 0; i < n; i++)
            s[i] = (char) ('0' + rand() % 10);
        if (rand() % 4)
            s[10 < n ? 10 : n - 1] = '.';
        int flips = rand() % 3;
        for (int f = 0; f < flips; f++)
            s[(size_t) rand() % n] = (char) odd[(size_t) rand() % sizeof odd];
        if (rand() % 8 == 0)
            s[0] = '0';
        long long rs = 0;
        long rn = 0;
        int want = ref_parse(s, n, &rs, &rn);
        herd_time_t t = {-1, -1};
        int got = herd_time_parse(s, n, &t);
        if (got != want || (want == 0 && (t.sec != rs || t.nsec != rn)))
            fail_msg("\"%s\": parser %d (%lld.%09ld), reference %d (%lld.%09ld)", esc(s, n), got,
                     (long long) t.sec, (long) t.nsec, want, rs, rn);
    }
}

static void test_cmp(void **state)
{
    (void) state;
    static const struct {
        herd_time_t a, b;
        int want; /* sign only */
    } rows[] = {
        { { 0, 0 }, { 0, 0 }, 0 },
        { { 1621464827, 959498503 }, { 1621464827, 959498503 }, 0 },
        { { 1621464827, 959498503 }, { 1621464827, 959498504 }, -1 }, /* ninth digit */
        { { 1621464827, 959498504 }, { 1621464827, 959498503 }, 1 },
        { { 1, 0 }, { 0, 999999999 }, 1 },
        { { 0, 999999999 }, { 1, 0 }, -1 },
        { { 2, 1 }, { 3, 0 }, -1 },
        { { 999999999999999999LL, 999999999 }, { 999999999999999999LL, 999999998 }, 1 },
        { { 0, 0 }, { 999999999999999999LL, 999999999 }, -1 },
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        int got = herd_time_cmp(rows[i].a, rows[i].b);
        int sign = (got > 0) - (got < 0);
        if (sign != rows[i].want)
            fail_msg("row %zu: got %d, want sign %d", i, got, rows[i].want);
    }
}

/* Two texts differing only in the ninth fraction digit parse to different,
 * correctly ordered times one nanosecond apart, while a tenth digit makes
 * no difference at all. */
static void test_ninth_digit(void **state)
{
    (void) state;
    herd_time_t a, b, c;
    assert_int_equal(herd_time_parse(L("1621464827.959498503"), &a), 0);
    assert_int_equal(herd_time_parse(L("1621464827.959498504"), &b), 0);
    assert_int_equal(herd_time_parse(L("1621464827.9594985039"), &c), 0);
    assert_true(herd_time_cmp(a, b) < 0);
    assert_true(herd_time_cmp(b, a) > 0);
    assert_int_equal(herd_time_cmp(a, c), 0);

    char buf[HERD_TIME_DIFF_MAX];
    assert_int_equal(herd_time_format_diff(b, a, buf, sizeof buf), 12);
    assert_string_equal(buf, "+0.000000001");
    assert_int_equal(herd_time_format_diff(a, b, buf, sizeof buf), 12);
    assert_string_equal(buf, "-0.000000001");
    assert_int_equal(herd_time_format_diff(a, c, buf, sizeof buf), 12);
    assert_string_equal(buf, "+0.000000000");
}

/* ---------------------------------------------------------------------- */
/* herd_time_format_diff: now - then */

static void test_format_diff(void **state)
{
    (void) state;
    static const struct {
        herd_time_t now, then;
        const char *want;
    } rows[] = {
        /* the contract's AT example: +0.263873386 */
        { { 1621464828, 223371889 }, { 1621464827, 959498503 }, "+0.263873386" },
        /* zero skew */
        { { 0, 0 }, { 0, 0 }, "+0.000000000" },
        { { 1621464827, 959498503 }, { 1621464827, 959498503 }, "+0.000000000" },
        /* negative skew: the client's clock is ahead */
        { { 10, 0 }, { 11, 500000000 }, "-1.500000000" },
        { { 1621464827, 0 }, { 1621464828, 500000000 }, "-1.500000000" },
        { { 5, 0 }, { 5, 1 }, "-0.000000001" },
        { { 5, 999999999 }, { 6, 0 }, "-0.000000001" },
        { { 0, 0 }, { 3, 0 }, "-3.000000000" },
        /* positive, whole and fractional */
        { { 3, 0 }, { 0, 0 }, "+3.000000000" },
        { { 11, 500000000 }, { 10, 0 }, "+1.500000000" },
        { { 5, 1 }, { 5, 0 }, "+0.000000001" },
        /* borrow across the second, both ways */
        { { 10, 100 }, { 9, 999999999 }, "+0.000000101" },
        { { 9, 999999999 }, { 10, 100 }, "-0.000000101" },
        { { 100, 0 }, { 98, 999999999 }, "+1.000000001" },
        { { 98, 999999999 }, { 100, 0 }, "-1.000000001" },
        { { 10, 0 }, { 9, 999999999 }, "+0.000000001" },
        /* nanoseconds of opposite sign to seconds, no borrow needed */
        { { 10, 5 }, { 8, 3 }, "+2.000000002" },
        { { 8, 3 }, { 10, 5 }, "-2.000000002" },
        /* the widest values: the longest text the buffer must hold */
        { { 999999999999999999LL, 999999999 }, { 0, 0 }, "+999999999999999999.999999999" },
        { { 0, 0 }, { 999999999999999999LL, 999999999 }, "-999999999999999999.999999999" },
        { { 999999999999999999LL, 0 }, { 0, 999999999 }, "+999999999999999998.000000001" },
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char buf[HERD_TIME_DIFF_MAX];
        memset(buf, '#', sizeof buf);
        size_t n = herd_time_format_diff(rows[i].now, rows[i].then, buf, sizeof buf);
        if (n != strlen(rows[i].want) || strcmp(buf, rows[i].want) != 0)
            fail_msg("row %zu: got \"%s\" (%zu), want \"%s\"", i, buf, n, rows[i].want);
    }
}

/* Parse then diff: the whole path a server takes for the skew. */
static void test_parse_then_diff(void **state)
{
    (void) state;
    static const struct {
        const char *now, *then, *want;
    } rows[] = {
        { "1621464828.223371889", "1621464827.959498503", "+0.263873386" },
        { "1621464827.959498503", "1621464827.959498503999", "+0.000000000" },
        { "1621464827", "1621464828.5", "-1.500000000" },
        { "1621464828", "1621464827.9594985", "+0.040501500" },
        { "1621464828.000000001", "1621464827.999999999999", "+0.000000002" },
        { "0", "0000.0000", "+0.000000000" },
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        herd_time_t now, then;
        assert_int_equal(herd_time_parse(rows[i].now, strlen(rows[i].now), &now), 0);
        assert_int_equal(herd_time_parse(rows[i].then, strlen(rows[i].then), &then), 0);
        char buf[HERD_TIME_DIFF_MAX];
        herd_time_format_diff(now, then, buf, sizeof buf);
        if (strcmp(buf, rows[i].want) != 0)
            fail_msg("row %zu: got \"%s\", want \"%s\"", i, buf, rows[i].want);
    }
}

/* ---------------------------------------------------------------------- */
/* herd_time_now: lies between two direct readings of the same clock. */

static void test_now(void **state)
{
    (void) state;
    struct timespec before, after;
    assert_int_equal(clock_gettime(CLOCK_REALTIME, &before), 0);
    herd_time_t now = herd_time_now();
    assert_int_equal(clock_gettime(CLOCK_REALTIME, &after), 0);

    herd_time_t b = { before.tv_sec, (int32_t) before.tv_nsec };
    herd_time_t a = { after.tv_sec, (int32_t) after.tv_nsec };
    assert_in_range(now.nsec, 0, 999999999);
    assert_true(now.sec > 1600000000); /* after September 2020 */
    assert_true(herd_time_cmp(b, now) <= 0);
    assert_true(herd_time_cmp(now, a) <= 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_valid),
        cmocka_unit_test(test_parse_invalid),
        cmocka_unit_test(test_parse_huge_texts),
        cmocka_unit_test(test_parse_respects_length),
        cmocka_unit_test(test_parse_matches_reference),
        cmocka_unit_test(test_cmp),
        cmocka_unit_test(test_ninth_digit),
        cmocka_unit_test(test_format_diff),
        cmocka_unit_test(test_parse_then_diff),
        cmocka_unit_test(test_now),
    };
    return cmocka_run_group_tests_name("herd_time", tests, NULL, NULL);
}
