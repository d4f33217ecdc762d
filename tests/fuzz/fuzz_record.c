/* fuzz_record: the AT line (herd_record) on arbitrary bytes.
 *
 * Checks, besides the sanitizers:
 * - herd_record_valid_name on the whole input agrees with the reference
 *   reading of a server name in fuzz_target.h;
 * - every line herd_record_parse takes, herd_record_parse_quick takes too,
 *   with the same spans and time; a taken line has a name the reference
 *   takes and a skew of the form `[+-]D+.DDDDDDDDD`;
 * - the spans of a line either parser takes lie in the input, in order, and
 *   "AT" and the five spans joined by single spaces are the input; the
 *   server and skew spans are herd_record_origin's and herd_record_skew's;
 * - a refusal leaves *at alone;
 * - herd_record_receive_time is the client's time plus the skew, computed
 *   here again in 128-bit nanoseconds, for several client times, and its
 *   nanoseconds are always valid. */
#include "fuzz_target.h"

#include <string.h>

#include "herd_record.h"

#define NSEC 1000000000

static bool ref_digit(uint8_t c)
{
    return c >= '0' && c <= '9';
}

/* `[+-]D+.DDDDDDDDD`: the skew a server writes. */
static bool ref_strict_skew(herd_span_t s)
{
    const uint8_t *p = (const uint8_t *) s.p;
    if (s.len < 12 || (p[0] != '+' && p[0] != '-') || p[s.len - 10] != '.')
        return false;
    for (size_t i = 1; i < s.len; i++)
        if (i != s.len - 10 && !ref_digit(p[i]))
            return false;
    return true;
}

/* The receive time as herd_record.h promises it, in nanoseconds: the skew
 * `[+-]D+[.D+]` (whole seconds saturated, fraction cut at nine digits)
 * added to the client's time; false when the skew is not of that form. */
static bool ref_receive(herd_span_t s, herd_time_t t, __int128 *out)
{
    const uint8_t *p = (const uint8_t *) s.p;
    if (s.len < 2 || (p[0] != '+' && p[0] != '-') || !ref_digit(p[1]))
        return false;
    size_t i = 1;
    __int128 whole = 0;
    for (; i < s.len && ref_digit(p[i]); i++)
        if (whole <= HERD_TIME_MAX_SEC)
            whole = whole * 10 + (p[i] - '0');
    if (whole > HERD_TIME_MAX_SEC)
        whole = HERD_TIME_MAX_SEC;
    __int128 frac = 0;
    if (i < s.len) {
        if (p[i] != '.' || i + 1 == s.len)
            return false;
        int digits = 0;
        for (i++; i < s.len; i++) {
            if (!ref_digit(p[i]))
                return false;
            if (digits < 9) {
                frac = frac * 10 + (p[i] - '0');
                digits++;
            }
        }
        for (; digits < 9; digits++)
            frac *= 10;
    }
    __int128 skew = whole * NSEC + frac;
    *out = (__int128) t.sec * NSEC + t.nsec + (p[0] == '-' ? -skew : skew);
    return true;
}

static void check_receive(const char *line, size_t len, herd_time_t t)
{
    herd_time_t r = herd_record_receive_time(line, len, t);
    __int128 want;
    if (!ref_receive(herd_record_skew(line, len), t, &want))
        want = (__int128) t.sec * NSEC + t.nsec;
    FUZZ_CHECK(r.nsec >= 0 && r.nsec < NSEC, "receive time nanoseconds %d", (int) r.nsec);
    FUZZ_CHECK((__int128) r.sec * NSEC + r.nsec == want, "receive time %lld.%09d is not the reference's",
               (long long) r.sec, (int) r.nsec);
}

static bool span_eq(herd_span_t a, herd_span_t b)
{
    return a.p == b.p && a.len == b.len;
}

/* "AT" and the five spans, single spaces between, make up the line. */
static void check_spans(const char *line, size_t len, const herd_at_t *at)
{
    const herd_span_t f[5] = {at->server, at->skew, at->id, at->pos, at->time_txt};
    const char *want = line + 3;
    FUZZ_CHECK(len >= 3 && memcmp(line, "AT ", 3) == 0, "a parsed line starts with \"AT \"");
    for (size_t k = 0; k < 5; k++) {
        FUZZ_CHECK(f[k].p == want, "field %zu is not where the line puts it", k);
        want += f[k].len;
        if (k < 4) {
            FUZZ_CHECK(want < line + len && *want == ' ', "field %zu is not followed by one space", k);
            want++;
        }
    }
    FUZZ_CHECK(want == line + len, "the fields do not end the line");
    FUZZ_CHECK(span_eq(at->server, herd_record_origin(line, len)), "server span is not herd_record_origin");
    FUZZ_CHECK(span_eq(at->skew, herd_record_skew(line, len)), "skew span is not herd_record_skew");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *line = (const char *) data;
    FUZZ_CHECK(herd_record_valid_name(line, size) == fuzz_ref_name(data, size), "name judged unlike the reference");

    herd_at_t s, q;
    memset(&s, 0x5a, sizeof s);
    memset(&q, 0x5a, sizeof q);
    herd_at_t untouched = s;
    int rs = herd_record_parse(line, size, &s);
    int rq = herd_record_parse_quick(line, size, &q);
    FUZZ_CHECK(rs == 0 || rs == -1, "strict parse returned %d", rs);
    FUZZ_CHECK(rq == 0 || rq == -1, "quick parse returned %d", rq);
    if (rs != 0)
        FUZZ_CHECK(memcmp(&s, &untouched, sizeof s) == 0, "a strict refusal changed *at");
    if (rq != 0)
        FUZZ_CHECK(memcmp(&q, &untouched, sizeof q) == 0, "a quick refusal changed *at");
    if (rs == 0) {
        FUZZ_CHECK(rq == 0, "a strictly valid line is refused quickly");
        FUZZ_CHECK(fuzz_ref_name((const uint8_t *) s.server.p, s.server.len), "strict parse took a bad name");
        FUZZ_CHECK(ref_strict_skew(s.skew), "strict parse took a bad skew");
        FUZZ_CHECK(s.id.len >= 1 && s.id.len <= HERD_MAX_CLIENT_ID, "strict parse took an id of %zu bytes",
                   s.id.len);
        FUZZ_CHECK(span_eq(s.server, q.server) && span_eq(s.skew, q.skew) && span_eq(s.id, q.id)
                       && span_eq(s.pos, q.pos) && span_eq(s.time_txt, q.time_txt)
                       && herd_time_cmp(s.time, q.time) == 0,
                   "strict and quick parses differ");
        check_spans(line, size, &s);
    }
    if (rq == 0) {
        FUZZ_CHECK(q.id.len > 0 && q.pos.len > 0, "quick parse took an empty id or position");
        check_spans(line, size, &q);
        check_receive(line, size, q.time);
    }
    const herd_time_t clocks[] = {{0, 0}, {1, 999999999}, {HERD_TIME_MAX_SEC, 999999999}, {1621464827, 5}};
    for (size_t i = 0; i < sizeof clocks / sizeof clocks[0]; i++)
        check_receive(line, size, clocks[i]);
    return 0;
}
