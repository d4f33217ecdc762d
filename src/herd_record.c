/* herd_record: the fields of an AT line where they lie; see herd_record.h. */
#include "herd_record.h"

#include <stdbool.h>
#include <string.h>

#define NSEC_PER_SEC 1000000000

/*  --------------------------------------------------------------------------
 *  The origin name: from byte 3 to the next space. */
herd_span_t herd_record_origin(const char *at, size_t at_len)
{
    if (at_len < 3)
        return (herd_span_t){at, 0};
    const char *sp = memchr(at + 3, ' ', at_len - 3);
    return (herd_span_t){at + 3, sp ? (size_t)(sp - at - 3) : at_len - 3};
}

/*  --------------------------------------------------------------------------
 *  The skew: the field after the origin. */
herd_span_t herd_record_skew(const char *at, size_t at_len)
{
    herd_span_t o = herd_record_origin(at, at_len);
    size_t start = 3 + o.len + 1;
    if (at_len < start)
        return (herd_span_t){NULL, 0};
    const char *sp = memchr(at + start, ' ', at_len - start);
    return (herd_span_t){at + start, sp ? (size_t)(sp - at - start) : at_len - start};
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Parses `[+-]D+[.D+]` into a sign and a magnitude (whole seconds saturated
 * at HERD_TIME_MAX_SEC, nanoseconds from the first nine fraction digits).
 * Returns false when the text is not of that form. */
static bool parse_skew(herd_span_t s, bool *negative, int64_t *sec, int32_t *nsec)
{
    if (s.len < 2 || (s.p[0] != '+' && s.p[0] != '-'))
        return false;
    size_t i = 1;
    int64_t whole = 0;
    if (!is_digit(s.p[i]))
        return false;
    for (; i < s.len && is_digit(s.p[i]); i++)
        whole = whole > (HERD_TIME_MAX_SEC - 9) / 10 ? HERD_TIME_MAX_SEC : whole * 10 + (s.p[i] - '0');
    int32_t frac = 0;
    if (i < s.len) {
        if (s.p[i] != '.' || i + 1 == s.len)
            return false;
        int digits = 0;
        for (i++; i < s.len; i++) {
            if (!is_digit(s.p[i]))
                return false;
            if (digits < 9) {
                frac = frac * 10 + (s.p[i] - '0');
                digits++;
            }
        }
        for (; digits < 9; digits++)
            frac *= 10;
    }
    *negative = s.p[0] == '-';
    *sec = whole;
    *nsec = frac;
    return true;
}

/*  --------------------------------------------------------------------------
 *  The client's time plus the skew, exactly. */
herd_time_t herd_record_receive_time(const char *at, size_t at_len, herd_time_t client_time)
{
    bool negative;
    int64_t sec;
    int32_t nsec;
    if (client_time.sec < 0 || client_time.sec > HERD_TIME_MAX_SEC || client_time.nsec < 0
        || client_time.nsec >= NSEC_PER_SEC
        || !parse_skew(herd_record_skew(at, at_len), &negative, &sec, &nsec))
        return client_time; /* no client time herd_time_parse makes: nothing to add to */
    /* Both magnitudes are at most HERD_TIME_MAX_SEC (a client time's seconds
     * are too), so neither sum nor difference can overflow an int64_t. */
    herd_time_t r = client_time;
    if (negative) {
        r.sec -= sec;
        r.nsec -= nsec;
        if (r.nsec < 0) {
            r.nsec += NSEC_PER_SEC;
            r.sec--;
        }
    } else {
        r.sec += sec;
        r.nsec += nsec;
        if (r.nsec >= NSEC_PER_SEC) {
            r.nsec -= NSEC_PER_SEC;
            r.sec++;
        }
    }
    return r;
}
