/* Unit tests for herd_proto: splitting, command validation, AT lines and the
 * radius in metres (PROTOCOL.md sections 2 to 5 and 10).
 *
 * Tables of literal lines and literal expected bytes; a failing row names
 * its index and its (escaped) text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herd_places.h"
#include "herd_proto.h"
#include "herd_record.h"

/* A literal and its length, so rows may hold NUL bytes. */
#define L(lit) lit, sizeof(lit) - 1
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Printable copy of bytes for failure messages (two rotating buffers so a
 * message can show two values). */
static const char *esc(const char *p, size_t n)
{
    static char bufs[2][1024];
    static int which;
    char *out = bufs[which ^= 1];
    size_t o = 0;
    for (size_t i = 0; i < n && o + 5 < sizeof bufs[0]; i++) {
        unsigned char c = (unsigned char) p[i];
        if (c >= 0x20 && c < 0x7f && c != '\\')
            out[o++] = (char) c;
        else
            o += (size_t) snprintf(out + o, sizeof bufs[0] - o, "\\x%02x", c);
    }
    out[o] = '\0';
    return out;
}

/* Fails unless span s holds exactly the bytes want[0..want_len). */
static void expect_span(herd_span_t s, const char *want, size_t want_len, const char *what,
                        size_t row)
{
    if (s.len != want_len || (want_len && memcmp(s.p, want, want_len) != 0))
        fail_msg("row %zu %s: got \"%s\", want \"%s\"", row, what, esc(s.p, s.len),
                 esc(want, want_len));
}

/* Fails unless a command is entirely zero apart from its kind. */
static void expect_no_fields(const herd_cmd_t *c, size_t row)
{
    if (c->id.len || c->pos.len || c->time_txt.len || c->radius.len || c->bound
        || c->time.sec || c->time.nsec || c->id.p || c->pos.p || c->time_txt.p || c->radius.p)
        fail_msg("row %zu: a rejected command left fields set", row);
}

/* ---------------------------------------------------------------------- */
/* White space */

static void test_is_space(void **state)
{
    (void) state;
    for (int c = 0; c < 256; c++) {
        bool want = c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
        if (herd_proto_is_space((unsigned char) c) != want)
            fail_msg("byte 0x%02x: got %d", c, !want);
    }
}

/* The blank-line rule: nothing but the six white-space bytes. */
static void test_is_blank(void **state)
{
    (void) state;
    assert_true(herd_proto_is_blank(NULL, 0));
    assert_true(herd_proto_is_blank(L(" \t\r\n\f\v ")));
    assert_false(herd_proto_is_blank(L(" x ")));
    assert_false(herd_proto_is_blank(L("\0")));
    assert_false(herd_proto_is_blank(L(" \xa0")));
}

/* A coordinate loses its '+' only. */
static void test_strip_plus(void **state)
{
    (void) state;
    herd_span_t s = herd_places_coord((herd_span_t){"+34.1", 5});
    assert_int_equal(s.len, 4);
    assert_memory_equal(s.p, "34.1", 4);
    s = herd_places_coord((herd_span_t){"-118.4", 6});
    assert_int_equal(s.len, 6);
    s = herd_places_coord((herd_span_t){"++1", 3});
    assert_int_equal(s.len, 2);
    s = herd_places_coord((herd_span_t){NULL, 0});
    assert_int_equal(s.len, 0);
}

/* ---------------------------------------------------------------------- */
/* herd_proto_split */

static void test_split(void **state)
{
    (void) state;
    static const struct {
        const char *line;
        size_t len;
        size_t n;             /* return value with max = 4 */
        const char *want[4];  /* the fields, as C strings */
    } rows[] = {
        { L(""), 0, { NULL } }, { L(" "), 0, { NULL } }, { L(" \t\r\n\f\v "), 0, { NULL } },
        { L("a"), 1, { "a" } }, { L("  a  "), 1, { "a" } },
        { L("a b"), 2, { "a", "b" } }, { L("a  \t b"), 2, { "a", "b" } },
        { L("\ta\rb\fc\vd\n"), 4, { "a", "b", "c", "d" } },
        { L("one two three four"), 4, { "one", "two", "three", "four" } },
        { L("one two three four five"), 5, { "one", "two", "three", "four" } },
        { L("a b c d e f g"), 5, { "a", "b", "c", "d" } },
        /* bytes that some locales call space are field bytes here */
        { L("\xa0 \x85"), 2, { "\xa0", "\x85" } }, { L("x\x01y z"), 2, { "x\x01y", "z" } },
    };
    for (size_t i = 0; i < COUNT(rows); i++) {
        herd_span_t f[4];
        memset(f, 0, sizeof f);
        size_t n = herd_proto_split(rows[i].line, rows[i].len, f, 4);
        if (n != rows[i].n)
            fail_msg("row %zu \"%s\": %zu fields, want %zu", i,
                     esc(rows[i].line, rows[i].len), n, rows[i].n);
        for (size_t k = 0; k < n && k < 4; k++)
            expect_span(f[k], rows[i].want[k], strlen(rows[i].want[k]), "field", i);
    }

    /* NUL is a field byte, not a terminator */
    herd_span_t f[3];
    assert_int_equal(herd_proto_split(L("a\0b c"), f, 3), 2);
    expect_span(f[0], L("a\0b"), "NUL field", 0);
    expect_span(f[1], L("c"), "NUL field", 1);

    /* only `max` spans are written; the count says one more */
    herd_span_t g[3] = { { "sentinel", 8 }, { "sentinel", 8 }, { "sentinel", 8 } };
    assert_int_equal(herd_proto_split(L("a b c"), g, 2), 3);
    expect_span(g[0], L("a"), "max", 0);
    expect_span(g[1], L("b"), "max", 1);
    expect_span(g[2], L("sentinel"), "untouched", 2);
    assert_int_equal(herd_proto_split(L("a"), NULL, 0), 1);
    assert_int_equal(herd_proto_split(L("  "), NULL, 0), 0);
    assert_int_equal(herd_proto_split(NULL, 0, NULL, 0), 0);
}

/* Splitting random lines of letters, the six white-space bytes, other
 * control bytes and high bytes agrees with a byte-by-byte split written
 * here from section 2 alone (the split reads eight bytes at a step). */
static bool ref_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

static void test_split_matches_reference(void **state)
{
    (void) state;
    static const unsigned char bytes[] = {'a', 'b', 'Z', '0', '.', '+', '!', ' ', ' ', ' ', '\t', '\n', '\v', '\f',
                                          '\r', 0x00, 0x01, 0x08, 0x0e, 0x1f, 0x20, 0x21, 0x7f, 0x80, 0xa0, 0xff};
    srand(4711);
    char line[80];
    for (int k = 0; k < 200000; k++) {
        size_t n = (size_t) (rand() % 70);
        int plain = rand() % 3; /* mostly letters, so fields run long enough for the 8-byte steps */
        for (size_t i = 0; i < n; i++)
            line[i] = (char) (plain && rand() % 6 ? 'a' + rand() % 26 : bytes[(size_t) rand() % sizeof bytes]);
        size_t max = 2 + (size_t) (rand() % 6);
        herd_span_t want[8], got[8];
        size_t wn = 0, i = 0;
        for (;;) {
            while (i < n && ref_space((unsigned char) line[i]))
                i++;
            if (i >= n)
                break;
            size_t start = i;
            while (i < n && !ref_space((unsigned char) line[i]))
                i++;
            if (wn == max) {
                wn = max + 1;
                break;
            }
            want[wn++] = (herd_span_t) {line + start, i - start};
        }
        size_t gn = herd_proto_split(line, n, got, max);
        assert_int_equal(gn, wn);
        for (size_t f = 0; f < wn && f < max; f++) {
            assert_ptr_equal(got[f].p, want[f].p);
            assert_int_equal(got[f].len, want[f].len);
        }
    }
}

/* ---------------------------------------------------------------------- */
/* herd_proto_parse: valid IAMAT */

static void test_parse_iamat_valid(void **state)
{
    (void) state;
    static const struct {
        const char *line;
        size_t len;
        const char *id, *pos, *time;
        int64_t sec;
        int32_t nsec;
    } rows[] = {
        /* the contract's example */
        { L("IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503"),
          "kiwi.cs.ucla.edu", "+34.068930-118.445127", "1621464827.959498503",
          1621464827, 959498503 },
        /* the other time forms of section 3 */
        { L("IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827"),
          "kiwi.cs.ucla.edu", "+34.068930-118.445127", "1621464827", 1621464827, 0 },
        { L("IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.9594985"),
          "kiwi.cs.ucla.edu", "+34.068930-118.445127", "1621464827.9594985",
          1621464827, 959498500 },
        { L("IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503777"),
          "kiwi.cs.ucla.edu", "+34.068930-118.445127", "1621464827.959498503777",
          1621464827, 959498503 },
        /* every white-space byte as a separator, and around the line */
        { L("IAMAT\tkiwi\t+1+2\t3"), "kiwi", "+1+2", "3", 3, 0 },
        { L("IAMAT\rkiwi\r+1+2\r3"), "kiwi", "+1+2", "3", 3, 0 },
        { L("IAMAT\fkiwi\f+1+2\f3"), "kiwi", "+1+2", "3", 3, 0 },
        { L("IAMAT\vkiwi\v+1+2\v3"), "kiwi", "+1+2", "3", 3, 0 },
        { L("IAMAT\nkiwi\n+1+2\n3"), "kiwi", "+1+2", "3", 3, 0 },
        { L(" \t IAMAT \t\r\f\v kiwi  +1+2   3 \r"), "kiwi", "+1+2", "3", 3, 0 },
        /* ids: any non-white-space bytes */
        { L("IAMAT k +0+0 0"), "k", "+0+0", "0", 0, 0 },
        { L("IAMAT \xc3\xa9t\xc3\xa9\xff\x01 +0+0 1"), "\xc3\xa9t\xc3\xa9\xff\x01", "+0+0",
          "1", 1, 0 },
        { L("IAMAT IAMAT +0+0 1"), "IAMAT", "+0+0", "1", 1, 0 },
        { L("IAMAT ?<>\"'{}[],;:= +0+0 1"), "?<>\"'{}[],;:=", "+0+0", "1", 1, 0 },
        /* positions at their limits, leading zeros in the time */
        { L("IAMAT a +90.000000000000000000000+180.0 0001621464827.5"), "a",
          "+90.000000000000000000000+180.0", "0001621464827.5", 1621464827, 500000000 },
        { L("IAMAT a -90-180 1"), "a", "-90-180", "1", 1, 0 },
        { L("IAMAT a +0090+0180 1"), "a", "+0090+0180", "1", 1, 0 },
    };
    for (size_t i = 0; i < COUNT(rows); i++) {
        herd_cmd_t c;
        herd_proto_parse(rows[i].line, rows[i].len, &c);
        if (c.kind != HERD_CMD_IAMAT)
            fail_msg("row %zu \"%s\": kind %d", i, esc(rows[i].line, rows[i].len), c.kind);
        expect_span(c.id, rows[i].id, strlen(rows[i].id), "id", i);
        expect_span(c.pos, rows[i].pos, strlen(rows[i].pos), "pos", i);
        expect_span(c.time_txt, rows[i].time, strlen(rows[i].time), "time", i);
        if (c.time.sec != rows[i].sec || c.time.nsec != rows[i].nsec)
            fail_msg("row %zu: time %lld.%09d", i, (long long) c.time.sec, (int) c.time.nsec);
        /* spans point into the caller's line */
        assert_true(c.id.p > rows[i].line && c.id.p < rows[i].line + rows[i].len);
        assert_int_equal(c.radius.len, 0);
        assert_int_equal(c.bound, 0);
    }
}

/* ---------------------------------------------------------------------- */
/* herd_proto_parse: valid WHATSAT */

static void test_parse_whatsat_valid(void **state)
{
    (void) state;
    static const struct {
        const char *line;
        size_t len;
        const char *id, *radius;
        uint32_t bound;
    } rows[] = {
        /* the contract's example */
        { L("WHATSAT kiwi.cs.ucla.edu 10 5"), "kiwi.cs.ucla.edu", "10", 5 },
        { L("\tWHATSAT\v\vkiwi\f10\r5\r"), "kiwi", "10", 5 },
        /* radius edges */
        { L("WHATSAT a 50 1"), "a", "50", 1 },
        { L("WHATSAT a 50.0000 1"), "a", "50.0000", 1 },
        { L("WHATSAT a 050.000000000000000000000 1"), "a", "050.000000000000000000000", 1 },
        { L("WHATSAT a 0.0001 1"), "a", "0.0001", 1 },
        { L("WHATSAT a 0.000000000000000000000000001 1"), "a",
          "0.000000000000000000000000001", 1 },
        { L("WHATSAT a 49.99999999999999999999999 1"), "a", "49.99999999999999999999999", 1 },
        { L("WHATSAT a 007.25000 1"), "a", "007.25000", 1 },
        { L("WHATSAT a 1 1"), "a", "1", 1 },
        { L("WHATSAT a 00000000000000000000000000000000001 1"), "a",
          "00000000000000000000000000000000001", 1 },
        /* bound edges */
        { L("WHATSAT a 10 20"), "a", "10", 20 },
        { L("WHATSAT a 10 007"), "a", "10", 7 },
        { L("WHATSAT a 10 0020"), "a", "10", 20 },
        { L("WHATSAT a 10 000000000000000000000000000000000000000019"), "a", "10", 19 },
        { L("WHATSAT a 10 10"), "a", "10", 10 },
        /* an id may look like anything */
        { L("WHATSAT WHATSAT 1 1"), "WHATSAT", "1", 1 },
    };
    for (size_t i = 0; i < COUNT(rows); i++) {
        herd_cmd_t c;
        herd_proto_parse(rows[i].line, rows[i].len, &c);
        if (c.kind != HERD_CMD_WHATSAT)
            fail_msg("row %zu \"%s\": kind %d", i, esc(rows[i].line, rows[i].len), c.kind);
        expect_span(c.id, rows[i].id, strlen(rows[i].id), "id", i);
        expect_span(c.radius, rows[i].radius, strlen(rows[i].radius), "radius", i);
        if (c.bound != rows[i].bound)
            fail_msg("row %zu: bound %u, want %u", i, c.bound, rows[i].bound);
        assert_int_equal(c.pos.len, 0);
        assert_int_equal(c.time_txt.len, 0);
    }
}

/* ---------------------------------------------------------------------- */
/* herd_proto_parse: empty and invalid lines */

static void test_parse_empty(void **state)
{
    (void) state;
    static const struct {
        const char *line;
        size_t len;
    } rows[] = {
        { L("") }, { L(" ") }, { L("\t") }, { L("\r") }, { L("\n") }, { L("\f") }, { L("\v") },
        { L(" \t\r\n\f\v  \t") },
    };
    for (size_t i = 0; i < COUNT(rows); i++) {
        herd_cmd_t c;
        memset(&c, 0x5a, sizeof c);
        herd_proto_parse(rows[i].line, rows[i].len, &c);
        if (c.kind != HERD_CMD_EMPTY)
            fail_msg("row %zu \"%s\": kind %d", i, esc(rows[i].line, rows[i].len), c.kind);
        expect_no_fields(&c, i);
    }
    herd_cmd_t c;
    herd_proto_parse(NULL, 0, &c);
    assert_int_equal(c.kind, HERD_CMD_EMPTY);
}

static const struct {
    const char *line;
    size_t len;
} invalid_rows[] = {
    /* section 5's example: radius out of range */
    { L("WHATSAT kiwi.cs.ucla.edu 51 5") },
    /* unknown, lower-case or mixed-case words; AT is for servers only */
    { L("AT Clark +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503") },
    { L("AT kiwi +0+0 1") }, { L("iamat kiwi +0+0 1") }, { L("Iamat kiwi +0+0 1") },
    { L("IAMAt kiwi +0+0 1") }, { L("whatsat kiwi 10 5") }, { L("WhatsAt kiwi 10 5") },
    { L("IAMATX kiwi +0+0 1") }, { L("XIAMAT kiwi +0+0 1") }, { L("IAMA kiwi +0+0 1") },
    { L("WHATSA kiwi 10 5") }, { L("WHATSAT\0 kiwi 10 5") },
    { L("IAMAT\xa0kiwi +0+0 1") }, /* NBSP is not white space: 3 fields */
    { L("HELLO") }, { L("?") }, { L("? WHATSAT kiwi.cs.ucla.edu 51 5") }, { L("\0") },
    { L("\xff\xfe") },
    /* wrong field counts */
    { L("IAMAT") }, { L("IAMAT kiwi") }, { L("IAMAT kiwi +34.068930-118.445127") },
    { L("IAMAT kiwi +34.068930-118.445127 1621464827.959498503 extra") },
    { L("IAMAT kiwi +34.068930 -118.445127 1621464827.959498503") },
    { L("IAMAT kiwi +34.068930-118.445127 1621464827 .959498503") }, { L("WHATSAT") },
    { L("WHATSAT kiwi") }, { L("WHATSAT kiwi 10") }, { L("WHATSAT kiwi 10 5 5") },
    { L("WHATSAT kiwi 10 5 \t x") },
    /* bad positions inside an otherwise good IAMAT */
    { L("IAMAT kiwi 34.068930-118.445127 1621464827") },
    { L("IAMAT kiwi +34.068930 1621464827") }, { L("IAMAT kiwi +91+0 1621464827") },
    { L("IAMAT kiwi +90.0000000000000000001+0 1621464827") },
    { L("IAMAT kiwi +34.-118 1621464827") },
    /* bad times */
    { L("IAMAT kiwi +0+0 -1621464827") }, { L("IAMAT kiwi +0+0 +1621464827") },
    { L("IAMAT kiwi +0+0 1621464827.") }, { L("IAMAT kiwi +0+0 .5") },
    { L("IAMAT kiwi +0+0 1.6e9") }, { L("IAMAT kiwi +0+0 1000000000000000000") },
    { L("IAMAT kiwi +0+0 1621464827,5") },
    /* bad radii */
    { L("WHATSAT kiwi 0 5") }, { L("WHATSAT kiwi 0.000 5") }, { L("WHATSAT kiwi 000 5") },
    { L("WHATSAT kiwi 50.00001 5") }, { L("WHATSAT kiwi 50.0000000000000000000000001 5") },
    { L("WHATSAT kiwi 51 5") }, { L("WHATSAT kiwi 100 5") },
    { L("WHATSAT kiwi 99999999999999999999999999999999 5") },
    { L("WHATSAT kiwi 18446744073709551666 5") }, /* wraps a uint64_t to 50 */
    { L("WHATSAT kiwi 4294967346 5") },           /* wraps a uint32_t to 50 */
    { L("WHATSAT kiwi -1 5") }, { L("WHATSAT kiwi +10 5") }, { L("WHATSAT kiwi 10. 5") },
    { L("WHATSAT kiwi .5 5") }, { L("WHATSAT kiwi 1e1 5") }, { L("WHATSAT kiwi 10km 5") },
    { L("WHATSAT kiwi 1.2.3 5") }, { L("WHATSAT kiwi 0x10 5") },
    /* bad bounds */
    { L("WHATSAT kiwi 10 0") }, { L("WHATSAT kiwi 10 00") }, { L("WHATSAT kiwi 10 21") },
    { L("WHATSAT kiwi 10 021") }, { L("WHATSAT kiwi 10 100") }, { L("WHATSAT kiwi 10 1.0") },
    { L("WHATSAT kiwi 10 5.") }, { L("WHATSAT kiwi 10 +1") }, { L("WHATSAT kiwi 10 -1") },
    { L("WHATSAT kiwi 10 1e1") }, { L("WHATSAT kiwi 10 x") },
    { L("WHATSAT kiwi 10 99999999999999999999999999999999999999") },
    { L("WHATSAT kiwi 10 18446744073709551621") }, /* wraps a uint64_t to 5 */
    { L("WHATSAT kiwi 10 4294967301") },           /* wraps a uint32_t to 5 */
};

static void test_parse_invalid(void **state)
{
    (void) state;
    for (size_t i = 0; i < COUNT(invalid_rows); i++) {
        herd_cmd_t c;
        memset(&c, 0x5a, sizeof c);
        herd_proto_parse(invalid_rows[i].line, invalid_rows[i].len, &c);
        if (c.kind != HERD_CMD_INVALID)
            fail_msg("row %zu \"%s\": kind %d", i,
                     esc(invalid_rows[i].line, invalid_rows[i].len), c.kind);
        expect_no_fields(&c, i);
    }
}

/* ---------------------------------------------------------------------- */
/* Client ids: 255 bytes is the limit; NUL bytes are ordinary. */

static void test_client_id_length_and_nul(void **state)
{
    (void) state;
    char line[600];
    herd_cmd_t c;

    for (size_t id_len = 254; id_len <= 257; id_len++) {
        memcpy(line, "IAMAT ", 6);
        memset(line + 6, 'x', id_len);
        memcpy(line + 6 + id_len, " +0+0 1", 7);
        herd_proto_parse(line, 6 + id_len + 7, &c);
        assert_int_equal(c.kind, id_len <= 255 ? HERD_CMD_IAMAT : HERD_CMD_INVALID);
        if (c.kind == HERD_CMD_IAMAT)
            assert_int_equal(c.id.len, id_len);

        memcpy(line, "WHATSAT ", 8);
        memset(line + 8, 'y', id_len);
        memcpy(line + 8 + id_len, " 10 5", 5);
        herd_proto_parse(line, 8 + id_len + 5, &c);
        assert_int_equal(c.kind, id_len <= 255 ? HERD_CMD_WHATSAT : HERD_CMD_INVALID);
        if (c.kind == HERD_CMD_WHATSAT)
            assert_int_equal(c.id.len, id_len);
    }

    /* a NUL in the middle, at the start and at the end of an id */
    herd_proto_parse(L("IAMAT ki\0wi +1-2 3.25"), &c);
    assert_int_equal(c.kind, HERD_CMD_IAMAT);
    expect_span(c.id, L("ki\0wi"), "NUL id", 0);
    expect_span(c.pos, L("+1-2"), "NUL id pos", 0);
    herd_proto_parse(L("IAMAT \0kiwi +1-2 3"), &c);
    assert_int_equal(c.kind, HERD_CMD_IAMAT);
    expect_span(c.id, L("\0kiwi"), "NUL id", 1);
    herd_proto_parse(L("WHATSAT kiwi\0 1 1"), &c);
    assert_int_equal(c.kind, HERD_CMD_WHATSAT);
    expect_span(c.id, L("kiwi\0"), "NUL id", 2);
    herd_proto_parse(L("IAMAT \0 +0+0 0"), &c);
    assert_int_equal(c.kind, HERD_CMD_IAMAT);
    expect_span(c.id, L("\0"), "NUL id", 3);
}

/* ---------------------------------------------------------------------- */
/* herd_proto_parse_position */

static void test_position_valid(void **state)
{
    (void) state;
    static const struct {
        const char *pos, *lat, *lng;
    } rows[] = {
        { "+34.068930-118.445127", "+34.068930", "-118.445127" },
        { "+90.000000000000000000000+180.0", "+90.000000000000000000000", "+180.0" },
        { "+0090+0180", "+0090", "+0180" },
        { "-90-180", "-90", "-180" },
        { "+90+180", "+90", "+180" },
        { "-90.0-180.000", "-90.0", "-180.000" },
        { "+0+0", "+0", "+0" },
        { "-0-0", "-0", "-0" },
        { "+0.0+0.0", "+0.0", "+0.0" },
        { "+1.5-2.25", "+1.5", "-2.25" },
        { "+89.99999999999999999999999999+179.9999999999999999999999999",
          "+89.99999999999999999999999999", "+179.9999999999999999999999999" },
        { "-00000000000000000000000000000090+00000000000000000000000000000180",
          "-00000000000000000000000000000090", "+00000000000000000000000000000180" },
        { "+9-9", "+9", "-9" },
        { "-45.5+99", "-45.5", "+99" },
        { "+90.0-180.00000000000000000000000000000000", "+90.0",
          "-180.00000000000000000000000000000000" },
    };
    for (size_t i = 0; i < COUNT(rows); i++) {
        herd_span_t pos = { rows[i].pos, strlen(rows[i].pos) };
        herd_span_t lat = { NULL, 0 }, lng = { NULL, 0 };
        if (herd_proto_parse_position(pos, &lat, &lng) != 0)
            fail_msg("row %zu \"%s\": rejected", i, rows[i].pos);
        expect_span(lat, rows[i].lat, strlen(rows[i].lat), "lat", i);
        expect_span(lng, rows[i].lng, strlen(rows[i].lng), "lng", i);

        /* the same position inside an IAMAT */
        char line[256];
        int n = snprintf(line, sizeof line, "IAMAT id %s 1621464827", rows[i].pos);
        herd_cmd_t c;
        herd_proto_parse(line, (size_t) n, &c);
        if (c.kind != HERD_CMD_IAMAT)
            fail_msg("row %zu \"%s\": rejected in IAMAT", i, rows[i].pos);
        expect_span(c.pos, rows[i].pos, strlen(rows[i].pos), "IAMAT pos", i);
    }
    /* lat and lng are optional outputs */
    herd_span_t pos = { L("+1+1") };
    assert_int_equal(herd_proto_parse_position(pos, NULL, NULL), 0);
}

static void test_position_invalid(void **state)
{
    (void) state;
    static const struct {
        const char *pos;
        size_t len;
    } rows[] = {
        /* out of range, by any margin */
        { L("+90.0000000000000000001+0") },
        { L("+91+0") },
        { L("-91+0") },
        { L("+90.1+0") },
        { L("-90.000000001+0") },
        { L("+0+181") },
        { L("+0-181") },
        { L("+0+180.0000000001") },
        { L("+0-180.00000000000000000000000001") },
        { L("+100+0") },
        { L("+0+1000") },
        { L("+99999999999999999999999999999999+0") },
        { L("+0+99999999999999999999999999999999") },
        { L("+18446744073709551706+0") }, /* wraps a uint64_t to 90 */
        { L("+4294967386+0") },           /* wraps a uint32_t to 90 */
        { L("+0+4294967476") },           /* wraps a uint32_t to 180 */
        /* signs */
        { L("34.068930-118.445127") },   /* missing lat sign */
        { L("+34.068930118.445127") },   /* missing lng sign */
        { L("++34-118") },
        { L("+34--118") },
        { L("+34+-118") },
        { L("+-34-118") },
        /* missing parts */
        { L("") },
        { L("+") },
        { L("-") },
        { L("+34.068930") },   /* missing lng */
        { L("+34.068930-") },  /* lng sign without digits */
        { L("+-118") },        /* lat sign without digits */
        { L("+34") },
        /* fractions */
        { L("+34.-118") },      /* empty lat fraction */
        { L("+34-118.") },      /* empty lng fraction */
        { L("+34.0.1-118") },
        { L("+34-118.0.1") },
        { L("+.5+1") },
        { L("+1+.5") },
        { L("+34..0-118") },
        /* foreign bytes */
        { L("+34 -118") },
        { L("+ 34-118") },
        { L("+34-118 ") },
        { L("+34-118x") },
        { L("x+34-118") },
        { L("+34,5-118") },
        { L("+1e1+0") },
        { L("+34-118\0") },
        { L("+3\0" "4-118") },
        { L("+34\xa0-118") },
        { L("+34-118-1") },     /* a third number */
    };
    for (size_t i = 0; i < COUNT(rows); i++) {
        herd_span_t pos = { rows[i].pos, rows[i].len };
        herd_span_t lat = { "untouched", 9 }, lng = { "untouched", 9 };
        if (herd_proto_parse_position(pos, &lat, &lng) != -1)
            fail_msg("row %zu \"%s\": accepted", i, esc(rows[i].pos, rows[i].len));
        expect_span(lat, L("untouched"), "lat", i);
        expect_span(lng, L("untouched"), "lng", i);
    }
}

/* ---------------------------------------------------------------------- */
/* herd_proto_format_at */

/* Parses a known-good IAMAT for the format tests. */
static herd_cmd_t iamat(const char *line, size_t len)
{
    herd_cmd_t c;
    herd_proto_parse(line, len, &c);
    if (c.kind != HERD_CMD_IAMAT)
        fail_msg("\"%s\": not a valid IAMAT", esc(line, len));
    return c;
}

static void test_format_at(void **state)
{
    (void) state;
    static const struct {
        const char *line;
        size_t line_len;
        const char *server;
        herd_time_t now;
        const char *want;
        size_t want_len;
    } rows[] = {
        /* the contract's example */
        { L("IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503"), "Clark",
          { 1621464828, 223371889 },
          L("AT Clark +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 "
            "1621464827.959498503") },
        /* zero skew */
        { L("IAMAT kiwi +0+0 1621464827.5"), "Bailey", { 1621464827, 500000000 },
          L("AT Bailey +0.000000000 kiwi +0+0 1621464827.5") },
        /* negative skew; the client's fields byte for byte, however written */
        { L("  IAMAT\tkiwi\v+0034.50-000118.0000  0001621464828.50000000000000\r"), "Jaquez",
          { 1621464827, 0 },
          L("AT Jaquez -1.500000000 kiwi +0034.50-000118.0000 0001621464828.50000000000000") },
        /* borrow across the second */
        { L("IAMAT a -90-180 9.999999999"), "Bona", { 10, 100 },
          L("AT Bona +0.000000101 a -90-180 9.999999999") },
        /* NUL and high bytes in the id */
        { L("IAMAT k\0\xff +1+1 1"), "Campbell", { 2, 0 },
          L("AT Campbell +1.000000000 k\0\xff +1+1 1") },
        /* the longest server name */
        { L("IAMAT a +0+0 0"), "S234567890123456789012345678901234567890123456789012345678901234",
          { 0, 1 },
          L("AT S234567890123456789012345678901234567890123456789012345678901234 +0.000000001 "
            "a +0+0 0") },
    };
    for (size_t i = 0; i < COUNT(rows); i++) {
        herd_cmd_t c = iamat(rows[i].line, rows[i].line_len);
        char buf[HERD_AT_MAX];
        memset(buf, '#', sizeof buf);
        size_t n = herd_proto_format_at(buf, sizeof buf, rows[i].server, strlen(rows[i].server),
                                        rows[i].now, &c);
        if (n != rows[i].want_len || memcmp(buf, rows[i].want, n) != 0)
            fail_msg("row %zu: got \"%s\", want \"%s\"", i, esc(buf, n),
                     esc(rows[i].want, rows[i].want_len));
        assert_int_equal(buf[n], '\0');
    }
}

/* Too small a buffer gives 0; the exact size (line plus NUL) is enough. */
static void test_format_at_capacity(void **state)
{
    (void) state;
    herd_cmd_t c = iamat(L("IAMAT kiwi +1+1 5"));
    const char want[] = "AT Clark +1.000000000 kiwi +1+1 5";
    size_t want_len = sizeof want - 1;
    herd_time_t now = { 6, 0 };
    char buf[64];

    memset(buf, '#', sizeof buf);
    assert_int_equal(herd_proto_format_at(buf, want_len + 1, "Clark", 5, now, &c), want_len);
    assert_memory_equal(buf, want, want_len + 1);
    assert_int_equal(buf[want_len + 1], '#');

    memset(buf, '#', sizeof buf);
    assert_int_equal(herd_proto_format_at(buf, want_len, "Clark", 5, now, &c), 0);
    assert_int_equal(herd_proto_format_at(buf, 1, "Clark", 5, now, &c), 0);
    assert_int_equal(buf[want_len], '#'); /* nothing written past cap */
}

/* The longest possible IAMAT (4096 bytes), the longest server name and the
 * widest skew together still fit in HERD_AT_MAX. */
static void test_format_at_max(void **state)
{
    (void) state;
    char line[HERD_MAX_LINE];
    size_t n = 0;
    memcpy(line, "IAMAT ", 6);
    n = 6;
    memset(line + n, 'i', HERD_MAX_CLIENT_ID);
    n += HERD_MAX_CLIENT_ID;
    const char *pos = " -90.000000000000000000000000000000-180.000000000000000000000000000000 ";
    memcpy(line + n, pos, strlen(pos));
    n += strlen(pos);
    /* the time fills the rest: leading zeros then a real time */
    size_t time_len = HERD_MAX_LINE - n;
    memset(line + n, '0', time_len);
    memcpy(line + HERD_MAX_LINE - 12, "99999999.999", 12);
    n = HERD_MAX_LINE;

    herd_cmd_t c = iamat(line, n);
    assert_int_equal(c.time.sec, 99999999);
    const char *server = "S234567890123456789012345678901234567890123456789012345678901234";
    assert_int_equal(strlen(server), HERD_MAX_NAME);
    herd_time_t now = { HERD_TIME_MAX_SEC, 999999999 };

    static char buf[HERD_AT_MAX];
    size_t len = herd_proto_format_at(buf, sizeof buf, server, HERD_MAX_NAME, now, &c);
    assert_true(len > 0);
    assert_true(len < HERD_AT_MAX);
    /* "AT " server " " skew " " then the IAMAT's last three fields;
     * skew = 999999999999999999.999999999 - 99999999.999 */
    char head[128];
    int hn = snprintf(head, sizeof head, "AT %s +999999999900000000.000999999 ", server);
    assert_memory_equal(buf, head, (size_t) hn);
    assert_memory_equal(buf + hn, line + 6, HERD_MAX_LINE - 6);
    assert_int_equal(len, (size_t) hn + HERD_MAX_LINE - 6);

    /* and it parses back */
    herd_at_t at;
    assert_int_equal(herd_record_parse(buf, len, &at), 0);
    assert_int_equal(at.id.len, HERD_MAX_CLIENT_ID);
    assert_int_equal(at.time.sec, 99999999);
    assert_int_equal(at.time.nsec, 999000000);
}

/* ---------------------------------------------------------------------- */
/* herd_record_parse */

/* format_at then parse_at gives back every field, byte for byte. */
static void test_at_round_trip(void **state)
{
    (void) state;
    static const struct {
        const char *line;
        size_t len;
        const char *server;
        herd_time_t now;
        const char *skew;
    } rows[] = {
        { L("IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503"), "Clark",
          { 1621464828, 223371889 }, "+0.263873386" },
        { L("IAMAT kiwi +0+0 1621464828.5"), "Bailey", { 1621464827, 0 }, "-1.500000000" },
        { L("IAMAT kiwi +0+0 1621464827"), "a_b-C9", { 1621464827, 0 }, "+0.000000000" },
        { L("IAMAT k\0\x80\xff +0090+0180 000.1234567891234"), "Bona", { 0, 123456788 },
          "-0.000000001" },
        { L("IAMAT x -89.5-180 999999999999999999.999999999"), "Jaquez", { 0, 0 },
          "-999999999999999999.999999999" },
    };
    for (size_t i = 0; i < COUNT(rows); i++) {
        herd_cmd_t c = iamat(rows[i].line, rows[i].len);
        char buf[HERD_AT_MAX];
        size_t n = herd_proto_format_at(buf, sizeof buf, rows[i].server, strlen(rows[i].server),
                                        rows[i].now, &c);
        assert_true(n > 0);
        herd_at_t at;
        if (herd_record_parse(buf, n, &at) != 0)
            fail_msg("row %zu \"%s\": rejected", i, esc(buf, n));
        expect_span(at.server, rows[i].server, strlen(rows[i].server), "server", i);
        expect_span(at.skew, rows[i].skew, strlen(rows[i].skew), "skew", i);
        expect_span(at.id, c.id.p, c.id.len, "id", i);
        expect_span(at.pos, c.pos.p, c.pos.len, "pos", i);
        expect_span(at.time_txt, c.time_txt.p, c.time_txt.len, "time", i);
        assert_int_equal(herd_time_cmp(at.time, c.time), 0);
        /* spans point into the AT line itself */
        assert_ptr_equal(at.server.p, buf + 3);
        assert_ptr_equal(at.time_txt.p + at.time_txt.len, buf + n);
    }
}

static void test_parse_at_valid(void **state)
{
    (void) state;
    herd_at_t at;
    assert_int_equal(
        herd_record_parse(L("AT Clark +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 "
                              "1621464827.959498503"), &at), 0);
    expect_span(at.server, L("Clark"), "server", 0);
    expect_span(at.skew, L("+0.263873386"), "skew", 0);
    expect_span(at.id, L("kiwi.cs.ucla.edu"), "id", 0);
    expect_span(at.pos, L("+34.068930-118.445127"), "pos", 0);
    expect_span(at.time_txt, L("1621464827.959498503"), "time", 0);
    assert_int_equal(at.time.sec, 1621464827);
    assert_int_equal(at.time.nsec, 959498503);

    /* the widest skew a server can write is 29 bytes; up to 31 accepted */
    assert_int_equal(herd_record_parse(L("AT S -99999999999999999999.000000000 k +0+0 1"), &at),
                     0);
    expect_span(at.skew, L("-99999999999999999999.000000000"), "long skew", 1);
    assert_int_equal(herd_record_parse(L("AT S +00.000000000 k +0+0 1"), &at), 0);
    expect_span(at.skew, L("+00.000000000"), "zero skew", 2);
    /* a 255-byte id, a 64-byte name */
    char line[512];
    int n = snprintf(line, sizeof line, "AT %.64s +0.000000000 %.255s +0+0 1",
                     "NNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNN",
                     "iiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiii"
                     "iiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiii"
                     "iiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiii"
                     "iiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiii");
    assert_int_equal(herd_record_parse(line, (size_t) n, &at), 0);
    assert_int_equal(at.server.len, 64);
    assert_int_equal(at.id.len, 255);
}

static void test_parse_at_invalid(void **state)
{
    (void) state;
    static const struct {
        const char *line;
        size_t len;
    } rows[] = {
        /* the shape: six fields, single spaces; the good line is
         * "AT S +1.000000000 k +0-0 1" */
        { L("") }, { L("AT") }, { L("AT ") }, { L("AT S +1.000000000 k +0-0") },
        { L("AT S +1.000000000 k +0-0 1 x") }, { L("AT S +1.000000000 k +0-0 1 ") },
        { L(" AT S +1.000000000 k +0-0 1") }, { L("AT  S +1.000000000 k +0-0 1") },
        { L("AT S +1.000000000  k +0-0 1") }, { L("AT\tS +1.000000000 k +0-0 1") },
        { L("AT S +1.000000000 k +0-0\t1") }, { L("AT S +1.000000000 k +0-0 1\n") },
        { L("AT S +1.000000000 k +0-0 1\r") }, { L("AT S\v+1.000000000 k +0-0 1") },
        { L("AT S +1.000000000 k\f+0-0 1") }, { L("AT S +1.000000000 k\rk +0-0 1") },
        /* first word */
        { L("at S +1.000000000 k +0-0 1") }, { L("ATX S +1.000000000 k +0-0 1") },
        { L("IAMAT S +1.000000000 k +0-0 1") }, { L("A S +1.000000000 k +0-0 1") },
        /* server names: 1..64 of [A-Za-z0-9_-] */
        { L("AT S.x +1.000000000 k +0-0 1") }, { L("AT S\0x +1.000000000 k +0-0 1") },
        { L("AT S\xe9 +1.000000000 k +0-0 1") }, { L("AT S/x +1.000000000 k +0-0 1") },
        { L("AT S2345678901234567890123456789012345678901234567890123456789012345 "
            "+1.000000000 k +0-0 1") }, /* 65 bytes */
        /* skews: [+-]D+.DDDDDDDDD, at most 31 bytes */
        { L("AT S 1.000000000 k +0-0 1") }, { L("AT S +1.00000000 k +0-0 1") },
        { L("AT S +1.0000000000 k +0-0 1") }, { L("AT S +1000000000 k +0-0 1") },
        { L("AT S +.000000000 k +0-0 1") }, { L("AT S +1,000000000 k +0-0 1") },
        { L("AT S +1.00000000x k +0-0 1") }, { L("AT S +x.000000000 k +0-0 1") },
        { L("AT S ++1.000000000 k +0-0 1") }, { L("AT S +1.000.00000 k +0-0 1") },
        { L("AT S + k +0-0 1") }, { L("AT S -1.000000000e0 k +0-0 1") },
        { L("AT S +999999999999999999999.000000000 k +0-0 1") }, /* 32 bytes */
        /* positions */
        { L("AT S +1.000000000 k 0-0 1") }, { L("AT S +1.000000000 k +91-0 1") },
        { L("AT S +1.000000000 k +0.-0 1") }, { L("AT S +1.000000000 k +0 1") },
        { L("AT S +1.000000000 k +0-181 1") }, { L("AT S +1.000000000 k +0-0x 1") },
        /* times */
        { L("AT S +1.000000000 k +0-0 -1") }, { L("AT S +1.000000000 k +0-0 1.") },
        { L("AT S +1.000000000 k +0-0 1e9") }, { L("AT S +1.000000000 k +0-0 .5") },
        { L("AT S +1.000000000 k +0-0 1000000000000000000") },
        { L("AT S +1.000000000 k +0-0 1\0") },
    };
    for (size_t i = 0; i < COUNT(rows); i++) {
        herd_at_t at;
        memset(&at, 0x5a, sizeof at);
        herd_at_t before = at;
        if (herd_record_parse(rows[i].line, rows[i].len, &at) != -1)
            fail_msg("row %zu \"%s\": accepted", i, esc(rows[i].line, rows[i].len));
        if (memcmp(&at, &before, sizeof at) != 0)
            fail_msg("row %zu: *at changed on failure", i);
    }
    herd_at_t at;
    assert_int_equal(herd_record_parse(NULL, 0, &at), -1);

    /* a 256-byte id; one byte less is accepted */
    char line[512];
    memcpy(line, "AT S +1.000000000 ", 18);
    memset(line + 18, 'i', 256);
    memcpy(line + 18 + 256, " +0-0 1", 7);
    assert_int_equal(herd_record_parse(line, 18 + 256 + 7, &at), -1);
    memmove(line + 18 + 255, line + 18 + 256, 7);
    assert_int_equal(herd_record_parse(line, 18 + 255 + 7, &at), 0);
    assert_int_equal(at.id.len, 255);
}

/* ---------------------------------------------------------------------- */
/* herd_proto_radius_metres */

static void test_radius_metres(void **state)
{
    (void) state;
    static const struct {
        const char *km, *m;
    } rows[] = {
        { "10", "10000" }, { "1.5", "1500" }, { "0.0001", "0.1" }, { "0.5", "500" },
        { "007.25000", "7250" }, { "50", "50000" }, { "1.23456", "1234.56" },
        { "50.0000", "50000" }, { "0.001", "1" }, { "0.01", "10" }, { "0.0100", "10" },
        { "0.05", "50" }, { "1", "1000" }, { "1.000", "1000" }, { "1.0001", "1000.1" },
        { "1.0000", "1000" }, { "12.3456789", "12345.6789" }, { "000.000100", "0.1" },
        { "0.000000001", "0.000001" }, { "0.0000001000", "0.0001" }, { "49.9999", "49999.9" },
        { "00000000000000000000000000001", "1000" }, { "0.1", "100" }, { "0.123", "123" },
        { "0.1234", "123.4" }, { "0.0012", "1.2" }, { "0.00012", "0.12" }, { "0", "0" },
        { "0.000", "0" }, { "100", "100000" },
    };
    for (size_t i = 0; i < COUNT(rows); i++) {
        herd_span_t km = { rows[i].km, strlen(rows[i].km) };
        char buf[64];
        memset(buf, '#', sizeof buf);
        size_t n = herd_proto_radius_metres(km, buf, sizeof buf);
        if (n != strlen(rows[i].m) || strcmp(buf, rows[i].m) != 0)
            fail_msg("row %zu \"%s\": got \"%s\" (%zu), want \"%s\"", i, rows[i].km,
                     esc(buf, n), n, rows[i].m);
    }
}

/* The radius of a parsed WHATSAT, straight into metres. */
static void test_radius_metres_from_whatsat(void **state)
{
    (void) state;
    herd_cmd_t c;
    herd_proto_parse(L("WHATSAT kiwi.cs.ucla.edu 10 5"), &c);
    assert_int_equal(c.kind, HERD_CMD_WHATSAT);
    char buf[32];
    assert_int_equal(herd_proto_radius_metres(c.radius, buf, sizeof buf), 5);
    assert_string_equal(buf, "10000");
}

static void test_radius_metres_capacity_and_junk(void **state)
{
    (void) state;
    char buf[16];
    herd_span_t ten = { L("10") };
    assert_int_equal(herd_proto_radius_metres(ten, buf, 6), 5); /* "10000" + NUL */
    assert_string_equal(buf, "10000");
    memset(buf, '#', sizeof buf);
    assert_int_equal(herd_proto_radius_metres(ten, buf, 5), 0);
    assert_int_equal(buf[0], '\0');
    assert_int_equal(buf[5], '#');

    herd_span_t frac = { L("1.23456") };
    assert_int_equal(herd_proto_radius_metres(frac, buf, 8), 7); /* "1234.56" */
    assert_string_equal(buf, "1234.56");
    assert_int_equal(herd_proto_radius_metres(frac, buf, 7), 0);
    assert_int_equal(buf[0], '\0');

    static const struct {
        const char *km;
        size_t len;
    } junk[] = {
        { L("") }, { L("-1") }, { L("+1") }, { L("1.") }, { L(".5") }, { L("1e1") },
        { L("1.2.3") }, { L("10 ") }, { L("1\0") },
    };
    for (size_t i = 0; i < COUNT(junk); i++) {
        herd_span_t km = { junk[i].km, junk[i].len };
        memset(buf, '#', sizeof buf);
        if (herd_proto_radius_metres(km, buf, sizeof buf) != 0)
            fail_msg("row %zu \"%s\": converted", i, esc(junk[i].km, junk[i].len));
        assert_int_equal(buf[0], '\0');
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_is_space),
        cmocka_unit_test(test_is_blank),
        cmocka_unit_test(test_strip_plus),
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_split_matches_reference),
        cmocka_unit_test(test_parse_iamat_valid),
        cmocka_unit_test(test_parse_whatsat_valid),
        cmocka_unit_test(test_parse_empty),
        cmocka_unit_test(test_parse_invalid),
        cmocka_unit_test(test_client_id_length_and_nul),
        cmocka_unit_test(test_position_valid),
        cmocka_unit_test(test_position_invalid),
        cmocka_unit_test(test_format_at),
        cmocka_unit_test(test_format_at_capacity),
        cmocka_unit_test(test_format_at_max),
        cmocka_unit_test(test_at_round_trip),
        cmocka_unit_test(test_parse_at_valid),
        cmocka_unit_test(test_parse_at_invalid),
        cmocka_unit_test(test_radius_metres),
        cmocka_unit_test(test_radius_metres_from_whatsat),
        cmocka_unit_test(test_radius_metres_capacity_and_junk),
    };
    return cmocka_run_group_tests_name("herd_proto", tests, NULL, NULL);
}
