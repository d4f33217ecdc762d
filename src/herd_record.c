/* herd_record: the fields of an AT line where they lie; see herd_record.h. */
#include "herd_record.h"

#include <assert.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "herd_hash.h"
#include "herd_proto.h"
#include "herd_scan.h"

#define NSEC_PER_SEC 1000000000

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/*  --------------------------------------------------------------------------
 *  The server-name charset, the one place it is written. */
bool herd_record_name_byte(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || is_digit((char) c) || c == '_' || c == '-';
}

/*  --------------------------------------------------------------------------
 *  A server name: 1..HERD_MAX_NAME bytes of the charset. */
bool herd_record_valid_name(const char *p, size_t len)
{
    if (len < 1 || len > HERD_MAX_NAME)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!herd_record_name_byte((unsigned char) p[i]))
            return false;
    return true;
}

#if defined(__SSE2__)
/* The positions of the spaces of a line of 16 bytes or more, sixteen
 * bytes a step (the last step loads the line's last sixteen, its mask
 * shifted past the bytes already seen). Returns how many there are, or 6
 * as soon as there are more than five. */
static size_t spaces_of(const char *line, size_t len, size_t at[5])
{
    const __m128i space = _mm_set1_epi8(' ');
    size_t n = 0, i = 0;
    for (;; i += 16) {
        unsigned m;
        if (i + 16 <= len) {
            m = (unsigned) _mm_movemask_epi8(
                _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *) (const void *) (line + i)), space));
        } else if (i < len) {
            size_t r = len - i;
            m = (unsigned) _mm_movemask_epi8(
                    _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *) (const void *) (line + len - 16)), space))
                >> (16 - r);
        } else {
            return n;
        }
        for (; m; m &= m - 1) {
            if (n == 5)
                return 6;
            at[n++] = i + (size_t) __builtin_ctz(m);
        }
    }
}
#endif

/* Splits a line into exactly six fields joined by single spaces, finding
 * only the spaces (the fields' own checks, herd_record_check, judge the
 * rest). Returns 0, or -1 when there are not six such fields. */
static int split_six(const char *line, size_t len, herd_span_t f[6])
{
#if defined(__SSE2__)
    if (len >= 16) {
        size_t sp[5];
        if (spaces_of(line, len, sp) != 5)
            return -1;
        size_t start = 0;
        for (size_t k = 0; k < 5; k++) {
            f[k] = (herd_span_t){line + start, sp[k] - start};
            start = sp[k] + 1;
        }
        f[5] = (herd_span_t){line + start, len - start};
        return 0;
    }
#endif
    size_t start = 0;
    for (size_t k = 0; k < 6; k++) {
        size_t e = herd_scan_low(line, start, len);
        while (e < len && line[e] != ' ')
            e = herd_scan_low(line, e + 1, len);
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

/* Fills *at from six fields whose first is "AT" and whose last is a time;
 * returns -1 (leaving *at alone) when they are not. */
static int fill(const herd_span_t f[6], herd_at_t *at)
{
    herd_at_t a;
    if (f[0].len != 2 || memcmp(f[0].p, "AT", 2) != 0 || herd_time_parse(f[5].p, f[5].len, &a.time) != 0)
        return -1;
    a.server = f[1];
    a.skew = f[2];
    a.id = f[3];
    a.pos = f[4];
    a.time_txt = f[5];
    *at = a;
    return 0;
}

/* `[+-]D+.DDDDDDDDD`, and no longer than herd_time_format_diff can write, so
 * a receiver may keep it in a HERD_TIME_DIFF_MAX buffer. */
static bool skew_ok(herd_span_t s)
{
    if (s.len < 1 + 1 + 1 + 9 || s.len >= HERD_TIME_DIFF_MAX)
        return false;
    if (s.p[0] != '+' && s.p[0] != '-')
        return false;
    size_t point = s.len - 10;
    if (s.p[point] != '.')
        return false;
    for (size_t i = 1; i < s.len; i++)
        if (i != point && !is_digit(s.p[i]))
            return false;
    return true;
}

/*  --------------------------------------------------------------------------
 *  The checks herd_record_parse adds to herd_record_parse_quick. */
bool herd_record_check(const herd_at_t *at)
{
    if (!herd_record_valid_name(at->server.p, at->server.len) || !skew_ok(at->skew) || at->id.len > HERD_MAX_CLIENT_ID
        || herd_proto_parse_position(at->pos, NULL, NULL) != 0)
        return false;
    /* Every field but the id is of a charset without white space; the id
     * may hold any other byte. */
    for (size_t i = 0; i < at->id.len; i++)
        if (herd_proto_is_space((unsigned char) at->id.p[i]))
            return false;
    return true;
}

/*  --------------------------------------------------------------------------
 *  An AT line from outside, every field checked. */
int herd_record_parse(const char *line, size_t len, herd_at_t *at)
{
    assert(at);
    herd_at_t a;
    if (herd_record_parse_quick(line, len, &a) != 0 || !herd_record_check(&a))
        return -1;
    *at = a;
    return 0;
}

/*  --------------------------------------------------------------------------
 *  An AT line of our own: its fields found, not judged. */
int herd_record_parse_quick(const char *line, size_t len, herd_at_t *at)
{
    assert(at);
    assert(line || len == 0);
    herd_span_t f[6];
    if (split_six(line, len, f) != 0 || f[3].len == 0 || f[4].len == 0)
        return -1;
    return fill(f, at);
}

#define FINGERPRINT_SEED 0x6865726466707231ULL /* fixed: every server must agree */

/*  --------------------------------------------------------------------------
 *  A hash of the whole line, the same on every server. */
uint64_t herd_record_fingerprint(const char *at, size_t at_len)
{
    uint64_t h = herd_hash_fixed(FINGERPRINT_SEED, at, at_len);
    return h ? h : 1;
}

/*  --------------------------------------------------------------------------
 *  The origin name: from byte 3 to the next space. */
herd_span_t herd_record_origin(const char *at, size_t at_len)
{
    if (at_len < 3)
        return (herd_span_t){at, 0};
    return (herd_span_t){at + 3, herd_scan_space(at, 3, at_len) - 3};
}

/*  --------------------------------------------------------------------------
 *  The skew: the field after the origin. */
herd_span_t herd_record_skew(const char *at, size_t at_len)
{
    herd_span_t o = herd_record_origin(at, at_len);
    size_t start = 3 + o.len + 1;
    if (at_len < start)
        return (herd_span_t){NULL, 0};
    return (herd_span_t){at + start, herd_scan_space(at, start, at_len) - start};
}

herd_span_t herd_record_id(const char *at, size_t at_len)
{
    herd_span_t k = herd_record_skew(at, at_len);
    if (!k.p)
        return k;
    size_t start = (size_t) (k.p - at) + k.len + 1;
    if (at_len < start)
        return (herd_span_t){NULL, 0};
    return (herd_span_t){at + start, herd_scan_space(at, start, at_len) - start};
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
    return herd_record_receive_time_of(herd_record_skew(at, at_len), client_time);
}

herd_time_t herd_record_receive_time_of(herd_span_t skew, herd_time_t client_time)
{
    bool negative;
    int64_t sec;
    int32_t nsec;
    if (client_time.sec < 0 || client_time.sec > HERD_TIME_MAX_SEC || client_time.nsec < 0
        || client_time.nsec >= NSEC_PER_SEC || !parse_skew(skew, &negative, &sec, &nsec))
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
