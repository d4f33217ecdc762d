/* fuzz_proto: the client text protocol (herd_proto, herd_time) on arbitrary
 * bytes.
 *
 * The input is one command line. Everything herd_proto decides about it is
 * checked against a second, deliberately naive reading of PROTOCOL.md
 * sections 2 to 4 written here (find the point, then check the digits;
 * compare numbers as digit strings; do the skew in 128-bit nanoseconds), so
 * the fuzzer finds wrong answers as well as crashes:
 *
 * - herd_proto_split and herd_proto_parse agree with the reference on the
 *   kind, the fields and the values, and an invalid line has no fields;
 * - herd_time_parse, herd_proto_parse_position and herd_proto_radius_metres
 *   agree with the reference on the whole input and on every field of it;
 * - herd_record_parse accepts exactly what the reference accepts;
 * - a valid IAMAT formatted with herd_proto_format_at (for several clocks)
 *   parses back with herd_record_parse to the same id, position and time
 *   bytes and the reference skew, and format_at honours its capacity. */
#include "fuzz_target.h"

#include <stdbool.h>
#include <string.h>

#include "herd_proto.h"
#include "herd_record.h"
#include "herd_time.h"

/* ---------------------------------------------------------------------- */
/* The reference reading */

static bool ref_is_space(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
}

static bool ref_all_digits(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

static bool span_eq(herd_span_t a, const uint8_t *p, size_t n)
{
    return a.len == n && (n == 0 || memcmp(a.p, p, n) == 0);
}

/* A whole `D+[.D+]`, found by locating the point first. */
typedef struct {
    const uint8_t *ip, *fp; /* integer and fraction digits */
    size_t ilen, flen;      /* their lengths (flen 0: no point) */
} ref_dec_t;

static bool ref_decimal(const uint8_t *s, size_t n, ref_dec_t *d)
{
    const uint8_t *dot = n ? memchr(s, '.', n) : NULL;
    size_t ilen = dot ? (size_t) (dot - s) : n;
    d->ip = s;
    d->ilen = ilen;
    d->fp = s + ilen + (dot ? 1 : 0);
    d->flen = dot ? n - ilen - 1 : 0;
    if (ilen == 0 || !ref_all_digits(d->ip, d->ilen))
        return false;
    if (dot && (d->flen == 0 || !ref_all_digits(d->fp, d->flen)))
        return false;
    return true;
}

/* The value of d against an integer limit, compared as digit strings with
 * the insignificant zeros taken away: <0, 0, >0. */
static int ref_dec_cmp(const ref_dec_t *d, unsigned limit)
{
    const uint8_t *ip = d->ip;
    size_t ilen = d->ilen, flen = d->flen;
    while (ilen > 0 && ip[0] == '0') {
        ip++;
        ilen--;
    }
    while (flen > 0 && d->fp[flen - 1] == '0')
        flen--;
    char lim[16];
    int llen = snprintf(lim, sizeof lim, "%u", limit);
    if (limit == 0)
        llen = 0; /* zero has no significant integer digits */
    if (ilen != (size_t) llen)
        return ilen < (size_t) llen ? -1 : 1;
    int c = ilen ? memcmp(ip, lim, ilen) : 0;
    if (c != 0)
        return c;
    return flen > 0 ? 1 : 0;
}

/* `D+[.D+]`, at most 18 significant integer digits; exact value. */
static bool ref_time(const uint8_t *s, size_t n, herd_time_t *t)
{
    ref_dec_t d;
    if (!ref_decimal(s, n, &d))
        return false;
    size_t z = 0;
    while (z < d.ilen && d.ip[z] == '0')
        z++;
    if (d.ilen - z > 18)
        return false;
    uint64_t sec = 0;
    for (size_t i = z; i < d.ilen; i++)
        sec = sec * 10 + (uint64_t) (d.ip[i] - '0');
    uint32_t ns = 0;
    for (size_t i = 0; i < 9; i++)
        ns = ns * 10 + (i < d.flen ? (uint32_t) (d.fp[i] - '0') : 0);
    t->sec = (int64_t) sec;
    t->nsec = (int32_t) ns;
    return true;
}

/* `[+-]dec[+-]dec`: the longitude starts at the second sign. */
static bool ref_position(const uint8_t *s, size_t n, size_t *lat_len)
{
    if (n == 0 || (s[0] != '+' && s[0] != '-'))
        return false;
    size_t k = 1;
    while (k < n && s[k] != '+' && s[k] != '-')
        k++;
    if (k == n)
        return false;
    ref_dec_t lat, lng;
    if (!ref_decimal(s + 1, k - 1, &lat) || !ref_decimal(s + k + 1, n - k - 1, &lng))
        return false;
    if (ref_dec_cmp(&lat, 90) > 0 || ref_dec_cmp(&lng, 180) > 0)
        return false;
    *lat_len = k;
    return true;
}

static bool ref_radius(const uint8_t *s, size_t n)
{
    ref_dec_t d;
    return ref_decimal(s, n, &d) && ref_dec_cmp(&d, 0) > 0 && ref_dec_cmp(&d, 50) <= 0;
}

static bool ref_bound(const uint8_t *s, size_t n, uint32_t *bound)
{
    if (n == 0 || !ref_all_digits(s, n))
        return false;
    while (n > 1 && s[0] == '0') {
        s++;
        n--;
    }
    if (n > 2)
        return false;
    uint32_t v = n == 1 ? (uint32_t) (s[0] - '0') : (uint32_t) ((s[0] - '0') * 10 + (s[1] - '0'));
    *bound = v;
    return v >= 1 && v <= 20;
}

/* Kilometres to metres: the digits with the point three places further
 * right, insignificant zeros dropped. Returns the length written to out,
 * which has room for ilen + flen + 8 bytes. */
static size_t ref_metres(const ref_dec_t *d, char *out)
{
    size_t nd = d->ilen + d->flen, point = d->ilen + 3, w = 0;
    char *digits = malloc(nd + 4);
    FUZZ_CHECK(digits != NULL, "out of memory");
    memcpy(digits, d->ip, d->ilen);
    if (d->flen)
        memcpy(digits + d->ilen, d->fp, d->flen);
    while (nd < point)
        digits[nd++] = '0';
    size_t i = 0;
    while (i + 1 < point && digits[i] == '0')
        i++;
    memcpy(out, digits + i, point - i);
    w = point - i;
    size_t end = nd;
    while (end > point && digits[end - 1] == '0')
        end--;
    if (end > point) {
        out[w++] = '.';
        memcpy(out + w, digits + point, end - point);
        w += end - point;
    }
    free(digits);
    return w;
}

/* `[+-]D+.DDDDDDDDD`, shorter than HERD_TIME_DIFF_MAX. */
static bool ref_skew(const uint8_t *s, size_t n)
{
    if (n < 12 || n > HERD_TIME_DIFF_MAX - 1 || (s[0] != '+' && s[0] != '-'))
        return false;
    return s[n - 10] == '.' && ref_all_digits(s + 1, n - 11) && ref_all_digits(s + n - 9, 9);
}

/* Exactly six non-empty fields separated by single spaces, no other white
 * space, each field valid. */
static bool ref_at(const uint8_t *s, size_t n, herd_span_t f[6], herd_time_t *t)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && ref_is_space(s[i]))
            return false;
    size_t k = 0, start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && s[i] != ' ')
            continue;
        if (k == 6 || i == start)
            return false;
        f[k++] = (herd_span_t){ (const char *) s + start, i - start };
        start = i + 1;
    }
    size_t lat_len;
    const uint8_t *p[6];
    for (size_t i = 0; i < 6 && i < k; i++)
        p[i] = (const uint8_t *) f[i].p;
    return k == 6 && span_eq(f[0], (const uint8_t *) "AT", 2) && fuzz_ref_name(p[1], f[1].len)
           && ref_skew(p[2], f[2].len) && f[3].len <= HERD_MAX_CLIENT_ID
           && ref_position(p[4], f[4].len, &lat_len) && ref_time(p[5], f[5].len, t);
}

/* now - then, exactly, in the skew format. */
static size_t ref_diff(herd_time_t now, herd_time_t then, char *out, size_t cap)
{
    __int128 a = (__int128) now.sec * 1000000000 + now.nsec;
    __int128 b = (__int128) then.sec * 1000000000 + then.nsec;
    __int128 d = a - b;
    char sign = d < 0 ? '-' : '+';
    if (d < 0)
        d = -d;
    unsigned long long sec = (unsigned long long) (d / 1000000000);
    unsigned ns = (unsigned) (d % 1000000000);
    return (size_t) snprintf(out, cap, "%c%llu.%09u", sign, sec, ns);
}

/* ---------------------------------------------------------------------- */
/* Checks on one piece of text (the whole input, or one field of it) */

static void check_numbers(const uint8_t *s, size_t n)
{
    herd_span_t span = { (const char *) s, n };

    herd_time_t got = { -1, -1 }, want;
    int rc = herd_time_parse(span.p, n, &got);
    bool ok = ref_time(s, n, &want);
    FUZZ_CHECK((rc == 0) == ok, "herd_time_parse returned %d, reference %d", rc, ok);
    if (ok)
        FUZZ_CHECK(got.sec == want.sec && got.nsec == want.nsec, "time %lld.%09d, reference %lld.%09d",
                   (long long) got.sec, (int) got.nsec, (long long) want.sec, (int) want.nsec);

    herd_span_t lat = { 0 }, lng = { 0 };
    size_t lat_len = 0;
    rc = herd_proto_parse_position(span, &lat, &lng);
    ok = ref_position(s, n, &lat_len);
    FUZZ_CHECK((rc == 0) == ok, "herd_proto_parse_position returned %d, reference %d", rc, ok);
    if (ok)
        FUZZ_CHECK(lat.p == span.p && lat.len == lat_len && lng.p == span.p + lat_len
                       && lng.len == n - lat_len,
                   "position split at %zu, reference at %zu", lat.len, lat_len);

    /* The metres, into a heap buffer of the exact size asked for, so a
     * write past cap is an AddressSanitizer report. */
    ref_dec_t d;
    bool dec = ref_decimal(s, n, &d);
    size_t cap = n + 8;
    char *want_m = malloc(cap), *got_m = malloc(cap);
    FUZZ_CHECK(want_m && got_m, "out of memory");
    size_t wlen = dec ? ref_metres(&d, want_m) : 0;
    size_t glen = herd_proto_radius_metres(span, got_m, cap);
    FUZZ_CHECK(glen == wlen && got_m[glen] == '\0' && memcmp(got_m, want_m, wlen) == 0,
               "radius_metres gave %zu bytes, reference %zu", glen, wlen);
    free(got_m);
    if (dec) {
        char *exact = malloc(wlen + 1);
        FUZZ_CHECK(exact != NULL, "out of memory");
        FUZZ_CHECK(herd_proto_radius_metres(span, exact, wlen + 1) == wlen
                       && memcmp(exact, want_m, wlen) == 0 && exact[wlen] == '\0',
                   "radius_metres with exact room");
        FUZZ_CHECK(herd_proto_radius_metres(span, exact, wlen) == 0 && (wlen == 0 || exact[0] == '\0'),
                   "radius_metres with one byte too few must give 0 and an empty string");
        free(exact);
    }
    free(want_m);
}

/* ---------------------------------------------------------------------- */
/* herd_proto_parse against the reference */

static void check_parse(const uint8_t *s, size_t n, herd_cmd_t *cmd)
{
    herd_proto_parse((const char *) s, n, cmd);

    /* Reference fields, all of them. */
    herd_span_t f[5];
    size_t nf = 0;
    for (size_t i = 0; i < n;) {
        while (i < n && ref_is_space(s[i]))
            i++;
        if (i == n)
            break;
        size_t start = i;
        while (i < n && !ref_is_space(s[i]))
            i++;
        if (nf < 5)
            f[nf] = (herd_span_t){ (const char *) s + start, i - start };
        nf++;
    }

    herd_span_t g[4];
    size_t ng = herd_proto_split((const char *) s, n, g, 4);
    FUZZ_CHECK(ng == (nf > 4 ? 5 : nf), "split found %zu fields, reference %zu", ng, nf);
    for (size_t i = 0; i < ng && i < 4; i++)
        FUZZ_CHECK(g[i].p == f[i].p && g[i].len == f[i].len, "split field %zu differs", i);

    herd_cmd_kind_t want = nf == 0 ? HERD_CMD_EMPTY : HERD_CMD_INVALID;
    herd_time_t t = { 0, 0 };
    uint32_t bound = 0;
    size_t lat_len;
    if (nf == 4 && f[1].len <= HERD_MAX_CLIENT_ID) {
        const uint8_t *p2 = (const uint8_t *) f[2].p, *p3 = (const uint8_t *) f[3].p;
        if (span_eq(f[0], (const uint8_t *) "IAMAT", 5) && ref_position(p2, f[2].len, &lat_len)
            && ref_time(p3, f[3].len, &t))
            want = HERD_CMD_IAMAT;
        if (span_eq(f[0], (const uint8_t *) "WHATSAT", 7) && ref_radius(p2, f[2].len)
            && ref_bound(p3, f[3].len, &bound))
            want = HERD_CMD_WHATSAT;
    }
    FUZZ_CHECK(cmd->kind == want, "parse gave kind %d, reference %d", (int) cmd->kind, (int) want);

    switch (want) {
    case HERD_CMD_EMPTY:
    case HERD_CMD_INVALID:
        FUZZ_CHECK(cmd->id.len == 0 && cmd->pos.len == 0 && cmd->time_txt.len == 0
                       && cmd->radius.len == 0 && cmd->bound == 0 && cmd->time.sec == 0
                       && cmd->time.nsec == 0,
                   "a rejected line must leave no partial command");
        break;
    case HERD_CMD_IAMAT:
        FUZZ_CHECK(cmd->id.p == f[1].p && cmd->id.len == f[1].len && cmd->pos.p == f[2].p
                       && cmd->pos.len == f[2].len && cmd->time_txt.p == f[3].p
                       && cmd->time_txt.len == f[3].len,
                   "IAMAT spans must be the fields");
        FUZZ_CHECK(cmd->time.sec == t.sec && cmd->time.nsec == t.nsec, "IAMAT time differs");
        break;
    case HERD_CMD_WHATSAT:
        FUZZ_CHECK(cmd->id.p == f[1].p && cmd->id.len == f[1].len && cmd->radius.p == f[2].p
                       && cmd->radius.len == f[2].len && cmd->bound == bound,
                   "WHATSAT fields differ (bound %u, reference %u)", cmd->bound, bound);
        break;
    }
}

/* ---------------------------------------------------------------------- */
/* AT lines */

static void check_parse_at(const uint8_t *s, size_t n)
{
    herd_at_t at;
    memset(&at, 0, sizeof at);
    herd_span_t f[6];
    herd_time_t t = { 0, 0 };
    int rc = herd_record_parse((const char *) s, n, &at);
    bool ok = ref_at(s, n, f, &t);
    FUZZ_CHECK((rc == 0) == ok, "parse_at returned %d, reference %d", rc, ok);
    if (!ok)
        return;
    FUZZ_CHECK(at.server.p == f[1].p && at.server.len == f[1].len && at.skew.p == f[2].p
                   && at.skew.len == f[2].len && at.id.p == f[3].p && at.id.len == f[3].len
                   && at.pos.p == f[4].p && at.pos.len == f[4].len && at.time_txt.p == f[5].p
                   && at.time_txt.len == f[5].len,
               "parse_at spans differ from the reference fields");
    FUZZ_CHECK(at.time.sec == t.sec && at.time.nsec == t.nsec, "parse_at time differs");
}

/* Formats the AT reply of a valid IAMAT and reads it back. */
static void check_round_trip(const herd_cmd_t *cmd, herd_time_t now)
{
    static const char server[] = "Clark";
    char *buf = malloc(HERD_AT_MAX);
    FUZZ_CHECK(buf != NULL, "out of memory");
    size_t n = herd_proto_format_at(buf, HERD_AT_MAX, server, strlen(server), now, cmd);
    FUZZ_CHECK(n > 0 && n < HERD_AT_MAX && buf[n] == '\0', "format_at gave %zu", n);

    char want_skew[64];
    size_t wlen = ref_diff(now, cmd->time, want_skew, sizeof want_skew);
    char skew[HERD_TIME_DIFF_MAX];
    size_t slen = herd_time_format_diff(now, cmd->time, skew, sizeof skew);
    FUZZ_CHECK(slen == wlen && memcmp(skew, want_skew, wlen) == 0, "skew %s, reference %s", skew,
               want_skew);

    herd_at_t at;
    FUZZ_CHECK(herd_record_parse(buf, n, &at) == 0, "our own AT line must parse: %s", buf);
    FUZZ_CHECK(span_eq(at.server, (const uint8_t *) server, strlen(server)), "server differs");
    FUZZ_CHECK(span_eq(at.skew, (const uint8_t *) want_skew, wlen), "skew field differs");
    FUZZ_CHECK(span_eq(at.id, (const uint8_t *) cmd->id.p, cmd->id.len), "id differs");
    FUZZ_CHECK(span_eq(at.pos, (const uint8_t *) cmd->pos.p, cmd->pos.len), "position differs");
    FUZZ_CHECK(span_eq(at.time_txt, (const uint8_t *) cmd->time_txt.p, cmd->time_txt.len),
               "time text differs");
    FUZZ_CHECK(at.time.sec == cmd->time.sec && at.time.nsec == cmd->time.nsec, "time differs");

    /* Capacity: exactly n + 1 bytes are enough, n are not. */
    char *exact = malloc(n + 1);
    FUZZ_CHECK(exact != NULL, "out of memory");
    FUZZ_CHECK(herd_proto_format_at(exact, n + 1, server, strlen(server), now, cmd) == n
                   && memcmp(exact, buf, n + 1) == 0,
               "format_at with exact room");
    FUZZ_CHECK(herd_proto_format_at(exact, n, server, strlen(server), now, cmd) == 0,
               "format_at with one byte too few must give 0");
    free(exact);
    free(buf);
}

/* ---------------------------------------------------------------------- */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    herd_cmd_t cmd;
    check_parse(data, size, &cmd);
    check_parse_at(data, size);
    check_numbers(data, size);

    /* Every field on its own, as a time, a position and a radius. */
    size_t fields = 0;
    for (size_t i = 0; i < size && fields < 8;) {
        while (i < size && ref_is_space(data[i]))
            i++;
        size_t start = i;
        while (i < size && !ref_is_space(data[i]))
            i++;
        if (i > start) {
            check_numbers(data + start, i - start);
            fields++;
        }
    }

    /* Lines longer than HERD_MAX_LINE never reach the formatter (the front
     * end refuses them), so HERD_AT_MAX need not hold them. */
    if (cmd.kind == HERD_CMD_IAMAT && size <= HERD_MAX_LINE) {
        const herd_time_t nows[] = {
            { 0, 0 },
            cmd.time,
            { cmd.time.sec, cmd.time.nsec == 0 ? 1 : 0 },
            { 1621464827, 959498503 },
            { HERD_TIME_MAX_SEC, 999999999 },
        };
        for (size_t i = 0; i < sizeof nows / sizeof nows[0]; i++)
            check_round_trip(&cmd, nows[i]);
    }
    return 0;
}
