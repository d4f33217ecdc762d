/* herd_time: exact client times and the signed nine-digit skew.
 *
 * Everything is integer arithmetic on (seconds, nanoseconds). The parser
 * never accumulates more digits than it has checked will fit, so a time
 * text of any length is judged without overflow. */
#include "herd_time.h"

#include <assert.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define NSEC_PER_SEC 1000000000

/* Decimal digits of HERD_TIME_MAX_SEC: any run of at most this many
 * significant digits is within the limit, any longer run is beyond it. */
#define MAX_SEC_DIGITS 18

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
/* Whether the eight bytes at p are all decimal digits, and their value
 * (the first the most significant). A byte b is a digit when both b and
 * b + 6 have 3 as their high nibble; a carry out of a byte only comes from
 * a byte that fails that test already. The value: pairs, then fours, then
 * the eight, each step one multiply-add on all lanes at once. */
static bool eight_digits(const char *p, uint64_t *value)
{
    uint64_t v;
    memcpy(&v, p, 8);
    const uint64_t hi = 0xF0F0F0F0F0F0F0F0ULL;
    if (((v & hi) | (((v + 0x0606060606060606ULL) & hi) >> 4)) != 0x3333333333333333ULL)
        return false;
    v -= 0x3030303030303030ULL;
    v = (v * 10 + (v >> 8)) & 0x00FF00FF00FF00FFULL;
    v = (v * 100 + (v >> 16)) & 0x0000FFFF0000FFFFULL;
    *value = (v * 10000 + (v >> 32)) & 0xFFFFFFFFULL;
    return true;
}

/* The usual shape, `DDDDDDDDDD.DDDDDDDDD` (a clock's seconds and
 * nanoseconds, as clients send them): two eight-byte steps and a few bytes
 * instead of a loop over twenty. Returns false for any other text, which
 * the general parser then judges. */
static bool parse_usual(const char *text, size_t len, herd_time_t *out)
{
    uint64_t a, b;
    if (len != 20 || text[10] != '.' || !is_digit(text[8]) || !is_digit(text[9]) || !is_digit(text[19])
        || !eight_digits(text, &a) || !eight_digits(text + 11, &b))
        return false;
    out->sec = (int64_t) (a * 100 + (uint64_t) (text[8] - '0') * 10 + (uint64_t) (text[9] - '0'));
    out->nsec = (int32_t) (b * 10 + (uint64_t) (text[19] - '0'));
    return true;
}
#endif

/* ---------------------------------------------------------------------- */
/* Parses `D+[.D+]`; see herd_time.h. */
int herd_time_parse(const char *text, size_t len, herd_time_t *out)
{
    assert(out);
    if (len == 0 || !text)
        return -1;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (parse_usual(text, len, out))
        return 0;
#endif

    size_t i = 0;
    while (i < len && is_digit(text[i]))
        i++;
    size_t int_end = i;
    if (int_end == 0)
        return -1;

    /* Leading zeros carry no value; only what follows them counts
     * against the 18-digit limit. */
    size_t first = 0;
    while (first < int_end && text[first] == '0')
        first++;
    if (int_end - first > MAX_SEC_DIGITS)
        return -1;

    int64_t sec = 0;
    for (size_t k = first; k < int_end; k++)
        sec = sec * 10 + (text[k] - '0');

    int32_t nsec = 0;
    if (i < len) {
        if (text[i] != '.')
            return -1;
        i++;
        size_t frac_start = i;
        while (i < len && is_digit(text[i]))
            i++;
        if (i == frac_start || i != len)
            return -1;
        /* Past the ninth digit the fraction is below our resolution:
         * truncated, because rounding could carry into the seconds and
         * make a time look newer than the client said. */
        for (size_t k = 0; k < 9; k++) {
            int d = frac_start + k < len ? text[frac_start + k] - '0' : 0;
            nsec = nsec * 10 + d;
        }
    }

    out->sec = sec;
    out->nsec = nsec;
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Orders two times exactly. */
int herd_time_cmp(herd_time_t a, herd_time_t b)
{
    if (a.sec != b.sec)
        return a.sec < b.sec ? -1 : 1;
    if (a.nsec != b.nsec)
        return a.nsec < b.nsec ? -1 : 1;
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Reads the wall clock; skews are against the client's wall clock too. */
herd_time_t herd_time_now(void)
{
    struct timespec ts;
    int rc = clock_gettime(CLOCK_REALTIME, &ts);
    assert(rc == 0); /* CLOCK_REALTIME always exists */
    (void) rc;
    herd_time_t t = { .sec = (int64_t) ts.tv_sec, .nsec = (int32_t) ts.tv_nsec };
    return t;
}

/* ---------------------------------------------------------------------- */
/* Formats now - then as "[+-]S.NNNNNNNNN". */
size_t herd_time_format_diff(herd_time_t now, herd_time_t then, char *buf, size_t cap)
{
    (void) cap; /* checked by the asserts only */
    assert(buf && cap >= HERD_TIME_DIFF_MAX);
    assert(now.nsec >= 0 && now.nsec < NSEC_PER_SEC);
    assert(then.nsec >= 0 && then.nsec < NSEC_PER_SEC);
    assert(now.sec >= 0 && now.sec <= HERD_TIME_MAX_SEC);
    assert(then.sec >= 0 && then.sec <= HERD_TIME_MAX_SEC);

    /* Both parts within range, so neither subtraction can overflow. */
    int64_t ds = now.sec - then.sec;
    int64_t dn = (int64_t) now.nsec - then.nsec;

    /* Give both parts the same sign, so the magnitude is |ds|.|dn|. */
    if (ds > 0 && dn < 0) {
        ds -= 1;
        dn += NSEC_PER_SEC;
    } else if (ds < 0 && dn > 0) {
        ds += 1;
        dn -= NSEC_PER_SEC;
    }
    char sign = (ds < 0 || dn < 0) ? '-' : '+';
    if (ds < 0)
        ds = -ds;
    if (dn < 0)
        dn = -dn;

    /* Digits by hand: this runs for every IAMAT, and snprintf cost more
     * than the rest of the formatting. */
    char digits[20];
    size_t nd = 0;
    do {
        digits[nd++] = (char) ('0' + ds % 10);
        ds /= 10;
    } while (ds > 0);
    size_t n = 0;
    buf[n++] = sign;
    while (nd > 0)
        buf[n++] = digits[--nd];
    buf[n++] = '.';
    for (int i = 8; i >= 0; i--) {
        buf[n + (size_t) i] = (char) ('0' + dn % 10);
        dn /= 10;
    }
    n += 9;
    buf[n] = '\0';
    assert(n < cap);
    return n;
}
