/* herd_proto: the client text protocol (PROTOCOL.md sections 2 to 5).
 *
 * Numbers are judged on their decimal text, never converted to binary
 * floating point: "+90.0000000000000000001" must be out of range and
 * "50.0000" in range however many digits the client writes. Every function
 * works on (pointer, length) so NUL and high bytes are ordinary data. */
#include "herd_proto.h"

#include <assert.h>
#include <string.h>

#include "herd_scan.h"

/* An unsigned decimal `D+[.D+]` split into its two digit runs. */
typedef struct {
    herd_span_t ip; /* integer digits, at least one */
    herd_span_t fp; /* fraction digits, empty when there is no point */
} decimal_t;

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static bool is_sign(unsigned char c)
{
    return c == '+' || c == '-';
}

static bool span_is(herd_span_t s, const char *word)
{
    size_t n = strlen(word);
    return s.len == n && memcmp(s.p, word, n) == 0;
}

/* Scans the longest `D+[.D+]` at the start of s[0..len). Returns the bytes it
 * covers, or 0 when s does not start with a digit. A point not followed by a
 * digit is left unconsumed, so the caller sees it as a stray byte. */
static size_t scan_decimal(const char *s, size_t len, decimal_t *d)
{
    size_t i = 0;
    while (i < len && is_digit((unsigned char) s[i]))
        i++;
    if (i == 0)
        return 0;
    d->ip = (herd_span_t){ s, i };
    d->fp = (herd_span_t){ s + i, 0 };
    if (i + 1 < len && s[i] == '.' && is_digit((unsigned char) s[i + 1])) {
        size_t f = i + 1;
        while (f < len && is_digit((unsigned char) s[f]))
            f++;
        d->fp = (herd_span_t){ s + i + 1, f - i - 1 };
        i = f;
    }
    return i;
}

/* True when the whole span is one `D+[.D+]`. */
static bool whole_decimal(herd_span_t s, decimal_t *d)
{
    return s.len > 0 && scan_decimal(s.p, s.len, d) == s.len;
}

/* Compares the exact value of d with a small integer limit: <0, 0 or >0.
 * Only the significant integer digits are ever accumulated, and at most
 * nine of them, so no digit string can overflow. */
static int decimal_cmp(const decimal_t *d, uint32_t limit)
{
    size_t i = 0;
    while (i < d->ip.len && d->ip.p[i] == '0')
        i++;
    if (d->ip.len - i > 9)
        return 1;
    uint64_t v = 0;
    for (; i < d->ip.len; i++)
        v = v * 10 + (uint64_t) (d->ip.p[i] - '0');
    if (v != limit)
        return v < limit ? -1 : 1;
    for (size_t k = 0; k < d->fp.len; k++)
        if (d->fp.p[k] != '0')
            return 1;
    return 0;
}

/* ---------------------------------------------------------------------- */
/* The six white-space bytes of PROTOCOL.md section 2, nothing locale-bound. */
bool herd_proto_is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
}

/* ---------------------------------------------------------------------- */
/* Splits on runs of white space; see herd_proto.h. */
size_t herd_proto_split(const char *line, size_t len, herd_span_t *fields, size_t max)
{
    assert(line || len == 0);
    size_t n = 0;
    size_t i = 0;
    for (;;) {
        while (i < len && herd_proto_is_space((unsigned char) line[i]))
            i++;
        if (i >= len)
            break;
        size_t start = i;
        /* The next byte at or below ' ' ends the field when it is white
         * space; any other control byte belongs to the field. */
        while ((i = herd_scan_low(line, i, len)) < len && !herd_proto_is_space((unsigned char) line[i]))
            i++;
        /* The caller only needs to know "too many"; stop scanning there. */
        if (n == max)
            return max + 1;
        fields[n++] = (herd_span_t){ line + start, i - start };
    }
    return n;
}

/* ---------------------------------------------------------------------- */
/* Checks `[+-]D+[.D+][+-]D+[.D+]` and the latitude/longitude ranges. */
int herd_proto_parse_position(herd_span_t pos, herd_span_t *lat, herd_span_t *lng)
{
    const char *s = pos.p;
    size_t len = pos.len;
    decimal_t d;

    if (len < 2 || !is_sign((unsigned char) s[0]))
        return -1;
    size_t n = scan_decimal(s + 1, len - 1, &d);
    if (n == 0 || decimal_cmp(&d, 90) > 0)
        return -1;
    size_t lat_len = 1 + n;

    if (lat_len + 1 >= len || !is_sign((unsigned char) s[lat_len]))
        return -1;
    n = scan_decimal(s + lat_len + 1, len - lat_len - 1, &d);
    if (n == 0 || lat_len + 1 + n != len || decimal_cmp(&d, 180) > 0)
        return -1;

    if (lat)
        *lat = (herd_span_t){ s, lat_len };
    if (lng)
        *lng = (herd_span_t){ s + lat_len, len - lat_len };
    return 0;
}

/* ---------------------------------------------------------------------- */
/* The blank-line rule; see herd_proto.h. */
bool herd_proto_is_blank(const char *line, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!herd_proto_is_space((unsigned char) line[i]))
            return false;
    return true;
}

/* Radius in km: `D+[.D+]`, above 0 and at most 50. */
static bool radius_ok(herd_span_t s)
{
    decimal_t d;
    return whole_decimal(s, &d) && decimal_cmp(&d, 0) > 0
           && decimal_cmp(&d, HERD_MAX_RADIUS_KM) <= 0;
}

/* Bound: `D+`, 1..20. Fills *out when valid. */
static bool bound_ok(herd_span_t s, uint32_t *out)
{
    decimal_t d;
    if (!whole_decimal(s, &d) || d.fp.len != 0)
        return false;
    if (decimal_cmp(&d, 1) < 0 || decimal_cmp(&d, HERD_MAX_BOUND) > 0)
        return false;
    /* Now known to be 1..20: leading zeros add nothing, so this cannot
     * overflow however long the text is. */
    uint32_t v = 0;
    for (size_t i = 0; i < s.len; i++)
        v = v * 10 + (uint32_t) (s.p[i] - '0');
    *out = v;
    return true;
}

static bool client_id_ok(herd_span_t id)
{
    return id.len >= 1 && id.len <= HERD_MAX_CLIENT_ID;
}

/* ---------------------------------------------------------------------- */
/* Parses one command line; see herd_proto.h. */
void herd_proto_parse(const char *line, size_t len, herd_cmd_t *cmd)
{
    assert(cmd);
    herd_cmd_t c;
    memset(&c, 0, sizeof c);
    memset(cmd, 0, sizeof *cmd);

    if (herd_proto_is_blank(line, len)) {
        cmd->kind = HERD_CMD_EMPTY;
        return;
    }
    herd_span_t f[4];
    size_t n = herd_proto_split(line, len, f, 4);
    /* Whatever fails below leaves every field zeroed: no partial command. */
    cmd->kind = HERD_CMD_INVALID;
    if (n != 4)
        return;

    if (span_is(f[0], "IAMAT")) {
        if (!client_id_ok(f[1]) || herd_proto_parse_position(f[2], NULL, NULL) != 0
            || herd_time_parse(f[3].p, f[3].len, &c.time) != 0)
            return;
        c.kind = HERD_CMD_IAMAT;
        c.id = f[1];
        c.pos = f[2];
        c.time_txt = f[3];
    } else if (span_is(f[0], "WHATSAT")) {
        if (!client_id_ok(f[1]) || !radius_ok(f[2]) || !bound_ok(f[3], &c.bound))
            return;
        c.kind = HERD_CMD_WHATSAT;
        c.id = f[1];
        c.radius = f[2];
    } else {
        return;
    }
    *cmd = c;
}

/* Appends n bytes at *at; the caller has checked the room. */
static void put(char *buf, size_t *at, const void *src, size_t n)
{
    if (n) {
        memcpy(buf + *at, src, n);
        *at += n;
    }
}

/* ---------------------------------------------------------------------- */
/* Makes the AT reply for a valid IAMAT; see herd_proto.h. */
size_t herd_proto_format_at(char *buf, size_t cap, const char *server, size_t server_len,
                            herd_time_t now, const herd_cmd_t *cmd)
{
    assert(buf && server && cmd);
    assert(cmd->kind == HERD_CMD_IAMAT);
    assert(server_len >= 1 && server_len <= HERD_MAX_NAME);

    char skew[HERD_TIME_DIFF_MAX];
    size_t skew_len = herd_time_format_diff(now, cmd->time, skew, sizeof skew);

    size_t need = 3 + server_len + 1 + skew_len + 1 + cmd->id.len + 1 + cmd->pos.len + 1
                  + cmd->time_txt.len;
    /* One more for the NUL, so callers may also treat it as a C string. */
    if (need + 1 > cap)
        return 0;

    size_t at = 0;
    put(buf, &at, "AT ", 3);
    put(buf, &at, server, server_len);
    put(buf, &at, " ", 1);
    put(buf, &at, skew, skew_len);
    put(buf, &at, " ", 1);
    put(buf, &at, cmd->id.p, cmd->id.len);
    put(buf, &at, " ", 1);
    put(buf, &at, cmd->pos.p, cmd->pos.len);
    put(buf, &at, " ", 1);
    put(buf, &at, cmd->time_txt.p, cmd->time_txt.len);
    assert(at == need);
    buf[at] = '\0';
    return at;
}

/* Emits one byte if there is room for it and a final NUL. */
static bool emit(char *buf, size_t cap, size_t *n, char c)
{
    if (*n + 1 >= cap)
        return false;
    buf[(*n)++] = c;
    return true;
}

/* ---------------------------------------------------------------------- */
/* Kilometres to metres by moving the decimal point three places right. */
size_t herd_proto_radius_metres(herd_span_t radius_km, char *buf, size_t cap)
{
    assert(buf);
    if (cap > 0)
        buf[0] = '\0';
    decimal_t d;
    if (!whole_decimal(radius_km, &d))
        return 0;

    size_t n = 0;
    bool started = false;
    /* Integer digits of the result: the km integer part, then the first
     * three fraction digits (zeros where the fraction is shorter). */
    size_t int_digits = d.ip.len + 3;
    for (size_t i = 0; i < int_digits; i++) {
        char c;
        if (i < d.ip.len)
            c = d.ip.p[i];
        else if (i - d.ip.len < d.fp.len)
            c = d.fp.p[i - d.ip.len];
        else
            c = '0';
        if (!started && c == '0')
            continue;
        started = true;
        if (!emit(buf, cap, &n, c))
            goto too_small;
    }
    if (!started && !emit(buf, cap, &n, '0'))
        goto too_small;

    /* What is left of the fraction, without its trailing zeros. */
    size_t frac_from = d.fp.len > 3 ? 3 : d.fp.len;
    size_t frac_to = d.fp.len;
    while (frac_to > frac_from && d.fp.p[frac_to - 1] == '0')
        frac_to--;
    if (frac_to > frac_from) {
        if (!emit(buf, cap, &n, '.'))
            goto too_small;
        for (size_t i = frac_from; i < frac_to; i++)
            if (!emit(buf, cap, &n, d.fp.p[i]))
                goto too_small;
    }
    buf[n] = '\0';
    return n;

too_small:
    if (cap > 0)
        buf[0] = '\0';
    return 0;
}
