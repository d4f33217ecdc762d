/* Unit tests for herd_wire: exact encodings, round trips, every rejection,
 * every truncation of a valid frame, and a deterministic mutation fuzz loop.
 * Every input handed to the decoder lives in a malloc'd buffer of exactly its
 * size, so that AddressSanitizer sees any read past the end. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

#include "herd_proto.h"
#include "herd_wire.h"
#include "wire_check.h"

/* ------------------------------------------------------------- helpers */

/* A msgpack buffer under construction. */
typedef struct {
    msgpack_sbuffer sb; /* the bytes */
    msgpack_packer pk;  /* writes into sb */
} pk_t;

static void pk_init(pk_t *b)
{
    msgpack_sbuffer_init(&b->sb);
    msgpack_packer_init(&b->pk, &b->sb, msgpack_sbuffer_write);
}

static void pk_str(pk_t *b, const char *s, size_t len)
{
    assert_int_equal(msgpack_pack_str(&b->pk, len), 0);
    assert_int_equal(msgpack_pack_str_body(&b->pk, s, len), 0);
}

static void pk_bin(pk_t *b, const char *s, size_t len)
{
    assert_int_equal(msgpack_pack_bin(&b->pk, len), 0);
    assert_int_equal(msgpack_pack_bin_body(&b->pk, s, len), 0);
}

static void pk_uint(pk_t *b, uint64_t v)
{
    assert_int_equal(msgpack_pack_uint64(&b->pk, v), 0);
}

static void pk_array(pk_t *b, size_t n)
{
    assert_int_equal(msgpack_pack_array(&b->pk, n), 0);
}

static void pk_free(pk_t *b)
{
    msgpack_sbuffer_destroy(&b->sb);
}

static void expect_reject_pk(pk_t *b, const char *want)
{
    expect_reject(b->sb.data, b->sb.size, want);
    pk_free(b);
}

/* Decodes data (copied into an exact-size buffer) that must be accepted and
 * checks that every span points inside that buffer. The caller frees *buf. */
static void expect_accept(const void *data, size_t len, herd_msg_t *m, char **buf)
{
    *buf = dup_exact(data, len);
    char err[256] = "";
    if (herd_wire_decode(*buf, len, m, err, sizeof err) != 0)
        fail_msg("rejected: %s", err);
    const char *lo = *buf, *hi = *buf + len;
    if (m->type == HERD_MSG_HELLO)
        assert_true(m->name.p >= lo && m->name.p + m->name.len <= hi);
    for (size_t i = 0; i < m->n_updates; i++)
        assert_true(m->updates[i].p >= lo && m->updates[i].p + m->updates[i].len <= hi);
}

/* Checks that `got` starts with the bytes of `want`. */
static void assert_prefix(const char *got, const void *want, size_t want_len)
{
    assert_memory_equal(got, want, want_len);
}

static void assert_bytes(const char *got, size_t got_len, const void *want, size_t want_len)
{
    assert_int_equal(got_len, want_len);
    assert_memory_equal(got, want, want_len);
}

#define RAW(...) ((const unsigned char[]){__VA_ARGS__}), sizeof((const unsigned char[]){__VA_ARGS__})

/* ----------------------------------------------------- exact encodings */

static void test_encode_hello_bytes(void **state)
{
    (void)state;
    char *out;
    size_t len;
    assert_int_equal(herd_wire_encode_hello("Bona", 0, 0, 0, &out, &len), 0);
    assert_bytes(out, len, RAW(0x96, 0x01, 0x01, 0xa4, 'B', 'o', 'n', 'a', 0x00, 0x00, 0x00));
    free(out);

    assert_int_equal(herd_wire_encode_hello("Clark", UINT64_MAX, 300, 70000, &out, &len), 0);
    assert_bytes(out, len,
                 RAW(0x96, 0x01, 0x01, 0xa5, 'C', 'l', 'a', 'r', 'k', 0xcf, 0xff, 0xff, 0xff, 0xff,
                     0xff, 0xff, 0xff, 0xff, 0xcd, 0x01, 0x2c, 0xce, 0x00, 0x01, 0x11, 0x70));
    free(out);
}

static void test_encode_sync_end_bytes(void **state)
{
    (void)state;
    char *out;
    size_t len;
    assert_int_equal(herd_wire_encode_sync_end(5, 0, &out, &len), 0);
    assert_bytes(out, len, RAW(0x94, 0x01, 0x03, 0x05, 0x00));
    free(out);
    assert_int_equal(herd_wire_encode_sync_end(128, 65536, &out, &len), 0);
    assert_bytes(out, len, RAW(0x94, 0x01, 0x03, 0xcc, 0x80, 0xce, 0x00, 0x01, 0x00, 0x00));
    free(out);
}

static void test_encode_updates_bytes(void **state)
{
    (void)state;
    char *out;
    size_t len;
    assert_int_equal(herd_wire_encode_updates(NULL, 0, &out, &len), 0);
    assert_bytes(out, len, RAW(0x93, 0x01, 0x02, 0x90));
    free(out);

    herd_span_t one = {"AT x", 4};
    assert_int_equal(herd_wire_encode_updates(&one, 1, &out, &len), 0);
    assert_bytes(out, len, RAW(0x93, 0x01, 0x02, 0x91, 0xa4, 'A', 'T', ' ', 'x'));
    free(out);

    /* Header forms: str 8 from 32 bytes, str 16 from 256, array 16 from 16. */
    char line[300];
    memset(line, 'a', sizeof line);
    herd_span_t many[16];
    for (size_t i = 0; i < 16; i++)
        many[i] = (herd_span_t){line, i == 0 ? 32 : i == 1 ? 256 : 1};
    assert_int_equal(herd_wire_encode_updates(many, 16, &out, &len), 0);
    assert_int_equal(len, 3 + 3 + (2 + 32) + (3 + 256) + 14 * 2);
    assert_prefix(out, RAW(0x93, 0x01, 0x02, 0xdc, 0x00, 0x10, 0xd9, 0x20));
    assert_prefix(out + 8 + 32, RAW(0xda, 0x01, 0x00));
    assert_prefix(out + 8 + 32 + 3 + 256, RAW(0xa1, 'a'));
    free(out);
}

/* ---------------------------------------------------------- round trips */

static void test_round_trip_hello(void **state)
{
    (void)state;
    char name64[HERD_MAX_NAME + 1];
    for (size_t i = 0; i < HERD_MAX_NAME; i++)
        name64[i] = "Az09_-"[i % 6];
    name64[HERD_MAX_NAME] = '\0';
    const char *names[] = {"B", "Bailey", "jaquez_2-x", name64};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        char *out, *buf;
        size_t len;
        uint64_t inc = UINT64_MAX - k, count = k * 1000003u, digest = 0x0123456789abcdefu ^ k;
        assert_int_equal(herd_wire_encode_hello(names[k], inc, count, digest, &out, &len), 0);
        herd_msg_t m;
        expect_accept(out, len, &m, &buf);
        assert_int_equal(m.type, HERD_MSG_HELLO);
        assert_int_equal(m.name.len, strlen(names[k]));
        assert_memory_equal(m.name.p, names[k], m.name.len);
        assert_true(m.incarnation == inc);
        assert_true(m.count == count);
        assert_true(m.digest == digest);
        assert_null(m.updates);
        assert_int_equal(m.n_updates, 0);
        herd_wire_msg_free(&m);
        free(buf);
        free(out);
    }
}

static void test_round_trip_sync_end(void **state)
{
    (void)state;
    const uint64_t vals[][2] = {{0, 0}, {1, 127}, {255, 256}, {UINT64_MAX, UINT64_MAX}};
    for (size_t k = 0; k < 4; k++) {
        char *out, *buf;
        size_t len;
        assert_int_equal(herd_wire_encode_sync_end(vals[k][0], vals[k][1], &out, &len), 0);
        herd_msg_t m;
        expect_accept(out, len, &m, &buf);
        assert_int_equal(m.type, HERD_MSG_SYNC_END);
        assert_true(m.incarnation == vals[k][0]);
        assert_true(m.count == vals[k][1]);
        assert_int_equal(m.name.len, 0);
        assert_null(m.updates);
        herd_wire_msg_free(&m);
        free(buf);
        free(out);
    }
}

/* Encodes n lines, decodes them and checks every byte came back. */
static void round_trip_updates(const herd_span_t *ats, size_t n)
{
    char *out, *buf;
    size_t len;
    assert_int_equal(herd_wire_encode_updates(ats, n, &out, &len), 0);
    herd_msg_t m;
    expect_accept(out, len, &m, &buf);
    assert_int_equal(m.type, HERD_MSG_UPDATES);
    assert_int_equal(m.n_updates, n);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(m.updates[i].len, ats[i].len);
        assert_memory_equal(m.updates[i].p, ats[i].p, ats[i].len);
    }
    herd_wire_msg_free(&m);
    free(buf);
    free(out);
}

static void test_round_trip_updates(void **state)
{
    (void)state;
    round_trip_updates(NULL, 0);

    const char *at = "AT Clark +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 "
                     "1621464827.959498503";
    herd_span_t one = {at, strlen(at)};
    round_trip_updates(&one, 1);

    /* Every byte value, NUL and invalid UTF-8 included. */
    char bytes[256];
    for (int i = 0; i < 256; i++)
        bytes[i] = (char)i;
    herd_span_t bin = {bytes, sizeof bytes};
    round_trip_updates(&bin, 1);

    /* The longest line allowed, and a mix of lengths around the header sizes. */
    char *longest = malloc(HERD_AT_MAX);
    assert_non_null(longest);
    for (size_t i = 0; i < HERD_AT_MAX; i++)
        longest[i] = (char)(i * 7 + 3);
    herd_span_t big = {longest, HERD_AT_MAX};
    round_trip_updates(&big, 1);

    herd_span_t mix[300];
    for (size_t i = 0; i < 300; i++) {
        size_t l = (i * 37) % HERD_AT_MAX + 1;
        mix[i] = (herd_span_t){longest + (HERD_AT_MAX - l), l};
    }
    round_trip_updates(mix, 300);
    free(longest);
}

static void test_round_trip_max_updates(void **state)
{
    (void)state;
    herd_span_t *ats = malloc(HERD_WIRE_MAX_UPDATES * sizeof *ats);
    assert_non_null(ats);
    const char *text = "AT a +0.000000000 c +1+1 1.5";
    for (size_t i = 0; i < HERD_WIRE_MAX_UPDATES; i++)
        ats[i] = (herd_span_t){text, 1 + i % strlen(text)};
    round_trip_updates(ats, HERD_WIRE_MAX_UPDATES);
    free(ats);
}

/* A frame written by some other msgpack encoder: non-negative values in
 * signed and over-long encodings, and AT lines as bin. */
static void test_decode_other_encodings(void **state)
{
    (void)state;
    herd_msg_t m;
    char *buf;
    expect_accept(RAW(0x96, 0xd0, 0x01, 0xd1, 0x00, 0x01, 0xd9, 0x04, 'B', 'o', 'n', 'a', 0xd3, 0x00,
                      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0xd2, 0x00, 0x00, 0x00, 0x07, 0xcf,
                      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00),
                  &m, &buf);
    assert_int_equal(m.type, HERD_MSG_HELLO);
    assert_int_equal(m.name.len, 4);
    assert_memory_equal(m.name.p, "Bona", 4);
    assert_true(m.incarnation == 5 && m.count == 7 && m.digest == 0);
    herd_wire_msg_free(&m);
    free(buf);

    expect_accept(RAW(0xdc, 0x00, 0x03, 0xcc, 0x01, 0xcd, 0x00, 0x02, 0xdd, 0x00, 0x00, 0x00, 0x02,
                      0xc4, 0x02, 'A', 0x00, 0xdb, 0x00, 0x00, 0x00, 0x01, 'B'),
                  &m, &buf);
    assert_int_equal(m.type, HERD_MSG_UPDATES);
    assert_int_equal(m.n_updates, 2);
    assert_int_equal(m.updates[0].len, 2);
    assert_memory_equal(m.updates[0].p, "A\0", 2);
    assert_int_equal(m.updates[1].len, 1);
    assert_memory_equal(m.updates[1].p, "B", 1);
    /* Zero copy: the spans are the frame's own bytes. */
    assert_ptr_equal(m.updates[0].p, buf + 15);
    assert_ptr_equal(m.updates[1].p, buf + 22);
    herd_wire_msg_free(&m);
    free(buf);
}

static void test_msg_free(void **state)
{
    (void)state;
    herd_wire_msg_free(NULL);
    herd_span_t one = {"AT y", 4};
    char *out, *buf;
    size_t len;
    assert_int_equal(herd_wire_encode_updates(&one, 1, &out, &len), 0);
    herd_msg_t m;
    expect_accept(out, len, &m, &buf);
    herd_wire_msg_free(&m);
    assert_true(msg_is_zero(&m));
    herd_wire_msg_free(&m);
    herd_wire_msg_free(&m);
    free(buf);
    free(out);
}

/* ---------------------------------------------------- encoder refusals */

static void test_encode_refusals(void **state)
{
    (void)state;
    char *out = (char *)&out;
    size_t len = 99;
    char name65[HERD_MAX_NAME + 2];
    memset(name65, 'a', HERD_MAX_NAME + 1);
    name65[HERD_MAX_NAME + 1] = '\0';
    const char *bad_names[] = {NULL, "", name65, "Bo na", "Bo.na", "Bon\xc3\xa9", "a\n"};
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
        assert_int_equal(herd_wire_encode_hello(bad_names[i], 1, 2, 3, &out, &len), -1);
        assert_null(out);
        assert_int_equal(len, 0);
    }

    herd_span_t empty = {"", 0};
    assert_int_equal(herd_wire_encode_updates(&empty, 1, &out, &len), -1);
    assert_null(out);
    herd_span_t null_p = {NULL, 3};
    assert_int_equal(herd_wire_encode_updates(&null_p, 1, &out, &len), -1);

    char *longer = calloc(1, HERD_AT_MAX + 1);
    assert_non_null(longer);
    herd_span_t too_long = {longer, HERD_AT_MAX + 1};
    assert_int_equal(herd_wire_encode_updates(&too_long, 1, &out, &len), -1);

    /* Too many lines, and lines whose total passes the frame limit. */
    herd_span_t *ats = malloc((HERD_WIRE_MAX_UPDATES + 1) * sizeof *ats);
    assert_non_null(ats);
    for (size_t i = 0; i <= HERD_WIRE_MAX_UPDATES; i++)
        ats[i] = (herd_span_t){longer, 1};
    assert_int_equal(herd_wire_encode_updates(ats, HERD_WIRE_MAX_UPDATES + 1, &out, &len), -1);
    assert_null(out);
    for (size_t i = 0; i < HERD_WIRE_MAX_UPDATES; i++)
        ats[i] = (herd_span_t){longer, HERD_AT_MAX};
    assert_int_equal(herd_wire_encode_updates(ats, HERD_WIRE_MAX_UPDATES, &out, &len), -1);
    assert_null(out);
    assert_int_equal(len, 0);
    free(ats);
    free(longer);
}

/* ---------------------------------------------------- decoder rejections */

static void test_reject_empty_and_not_array(void **state)
{
    (void)state;
    herd_msg_t m;
    char err[128];
    assert_int_equal(herd_wire_decode(NULL, 0, &m, err, sizeof err), -1);
    assert_string_equal(err, "empty message");
    expect_reject("", 0, "empty message");
    expect_reject(RAW(0x01), "not an array");
    expect_reject(RAW(0x80), "not an array");
    expect_reject(RAW(0xa3, 'a', 'b', 'c'), "not an array");
    expect_reject(RAW(0xc0), "not an array");
    expect_reject(RAW(0xc1), "not an array");
    expect_reject(RAW(0xdf, 0x00, 0x00, 0x00, 0x00), "not an array");
}

static void test_reject_truncated_and_trailing(void **state)
{
    (void)state;
    expect_reject(RAW(0x94, 0x01, 0x03, 0x05), "truncated");
    expect_reject(RAW(0xdd, 0x00, 0x00, 0x00), "truncated");
    expect_reject(RAW(0x93, 0x01, 0x02, 0x91, 0xa5, 'A'), "truncated");
    expect_reject(RAW(0x93, 0x01, 0x02, 0x91, 0xda, 0x01), "truncated");
    expect_reject(RAW(0x94, 0x01, 0x03, 0xcf, 0x00, 0x00), "truncated");

    expect_reject(RAW(0x94, 0x01, 0x03, 0x05, 0x00, 0x00), "1 trailing bytes");
    expect_reject(RAW(0x94, 0x01, 0x03, 0x05, 0x00, 0x94, 0x01, 0x03, 0x05, 0x00),
                  "5 trailing bytes");
}

static void test_reject_counts(void **state)
{
    (void)state;
    expect_reject(RAW(0x90), "0 elements, too few");
    expect_reject(RAW(0x91, 0x01), "1 elements, too few");
    expect_reject(RAW(0x95, 0x01, 0x01, 0xa1, 'B', 0x00, 0x00), "HELLO has 5 elements, expected 6");
    expect_reject(RAW(0x97, 0x01, 0x01, 0xa1, 'B', 0x00, 0x00, 0x00, 0x00),
                  "HELLO has 7 elements, expected 6");
    expect_reject(RAW(0x92, 0x01, 0x02), "UPDATES has 2 elements, expected 3");
    expect_reject(RAW(0x94, 0x01, 0x02, 0x90, 0x90), "UPDATES has 4 elements, expected 3");
    expect_reject(RAW(0x93, 0x01, 0x03, 0x00), "SYNC_END has 3 elements, expected 4");
    expect_reject(RAW(0x95, 0x01, 0x03, 0x00, 0x00, 0x00), "SYNC_END has 5 elements, expected 4");
}

static void test_reject_version_and_type(void **state)
{
    (void)state;
    herd_msg_t m;
    char err[128];
    char *buf = dup_exact(RAW(0x94, 0x07, 0x03, 0x00, 0x00));
    assert_int_equal(herd_wire_decode(buf, 5, &m, err, sizeof err), -1);
    assert_string_equal(err, "unknown wire version 7");
    free(buf);
    expect_reject(RAW(0x92, 0x00, 0x01), "unknown wire version 0");
    expect_reject(RAW(0x92, 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01),
                  "unknown wire version 18446744073709551615");
    expect_reject(RAW(0x92, 0xff, 0x01), "wire version is a negative integer");
    expect_reject(RAW(0x92, 0xa1, '1', 0x01), "wire version is a string");
    expect_reject(RAW(0x92, 0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0, 0x01), "wire version is a float");
    expect_reject(RAW(0x92, 0x91, 0x01, 0x01), "wire version is an array");

    /* Types 1 to 9 are known (the anti-entropy ones 4 to 8 are tested in
     * test_wire_repair.c; 9, RECORDS, has the layout of UPDATES); 0 and
     * everything from 10 up is not. */
    expect_reject(RAW(0x92, 0x01, 0x00), "unknown message type 0");
    expect_reject(RAW(0x94, 0x01, 0x0a, 0x00, 0x00), "unknown message type 10");
    expect_reject(RAW(0x94, 0x01, 0x63, 0x00, 0x00), "unknown message type 99");
    expect_reject(RAW(0x92, 0x01, 0xcd, 0x01, 0x04), "unknown message type 260"); /* 4 + 256 */
    expect_reject(RAW(0x92, 0x01, 0xcf, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x04),
                  "unknown message type 4294967300"); /* 4 + 2^32: no truncation to 32 bits */
    expect_reject(RAW(0x92, 0x01, 0xc0), "message type is nil");
    expect_reject(RAW(0x92, 0x01, 0xc3), "message type is a boolean");
}

static void test_reject_element_types(void **state)
{
    (void)state;
    /* HELLO fields, each wrong in turn. */
    expect_reject(RAW(0x96, 0x01, 0x01, 0x05, 0x00, 0x00, 0x00),
                  "HELLO name is an unsigned integer, expected a string");
    expect_reject(RAW(0x96, 0x01, 0x01, 0xc4, 0x01, 'B', 0x00, 0x00, 0x00),
                  "HELLO name is a binary, expected a string");
    expect_reject(RAW(0x96, 0x01, 0x01, 0x91, 0xa1, 'B', 0x00, 0x00, 0x00),
                  "HELLO name is an array, expected a string");
    expect_reject(RAW(0x96, 0x01, 0x01, 0x81, 0xa1, 'B', 0x01, 0x00, 0x00, 0x00),
                  "HELLO name is a map");
    expect_reject(RAW(0x96, 0x01, 0x01, 0xa1, 'B', 0xa1, '1', 0x00, 0x00),
                  "HELLO incarnation is a string, expected an unsigned integer");
    expect_reject(RAW(0x96, 0x01, 0x01, 0xa1, 'B', 0x00, 0xc2, 0x00), "HELLO count is a boolean");
    expect_reject(RAW(0x96, 0x01, 0x01, 0xa1, 'B', 0x00, 0x00, 0xd0, 0x80),
                  "HELLO digest is a negative integer");
    expect_reject(RAW(0x96, 0x01, 0x01, 0xa1, 'B', 0x00, 0x00, 0xd4, 0x01, 0x00),
                  "HELLO digest is an ext");

    /* UPDATES: the list itself, then a line. */
    expect_reject(RAW(0x93, 0x01, 0x02, 0xa1, 'x'), "UPDATES lines are a string, expected an array");
    expect_reject(RAW(0x93, 0x01, 0x02, 0x80), "UPDATES lines are a map");
    expect_reject(RAW(0x93, 0x01, 0x02, 0xc0), "UPDATES lines are nil");
    expect_reject(RAW(0x93, 0x01, 0x02, 0x92, 0xa1, 'x', 0x07),
                  "UPDATES line 1 is an unsigned integer, expected a string");
    expect_reject(RAW(0x93, 0x01, 0x02, 0x92, 0xa1, 'x', 0x91, 0xa1, 'y'),
                  "UPDATES line 1 is an array, expected a string");
    expect_reject(RAW(0x93, 0x01, 0x02, 0x91, 0xc0), "UPDATES line 0 is nil");
    expect_reject(RAW(0x93, 0x01, 0x02, 0x91, 0xca, 0, 0, 0, 0), "UPDATES line 0 is a float");

    /* SYNC_END fields. */
    expect_reject(RAW(0x94, 0x01, 0x03, 0x90, 0x00), "SYNC_END incarnation is an array");
    expect_reject(RAW(0x94, 0x01, 0x03, 0x00, 0xcb, 0, 0, 0, 0, 0, 0, 0, 0),
                  "SYNC_END sent is a float");
    expect_reject(RAW(0x94, 0x01, 0x03, 0x00, 0xff), "SYNC_END sent is a negative integer");
}

static void hello_with_name(const char *name, size_t len, const char *want)
{
    pk_t b;
    pk_init(&b);
    pk_array(&b, 6);
    pk_uint(&b, 1);
    pk_uint(&b, HERD_MSG_HELLO);
    pk_str(&b, name, len);
    pk_uint(&b, 1);
    pk_uint(&b, 2);
    pk_uint(&b, 3);
    expect_reject_pk(&b, want);
}

static void test_reject_names(void **state)
{
    (void)state;
    char name65[HERD_MAX_NAME + 1];
    memset(name65, 'a', sizeof name65);
    hello_with_name("", 0, "HELLO name is empty");
    hello_with_name(name65, sizeof name65, "HELLO name is 65 bytes, longer than 64");
    hello_with_name("Bo na", 5, "HELLO name has byte 0x20 at 2");
    hello_with_name("Bona.", 5, "HELLO name has byte 0x2e at 4");
    hello_with_name("B\0na", 4, "HELLO name has byte 0x00 at 1");
    hello_with_name("\xff", 1, "HELLO name has byte 0xff at 0");
    hello_with_name("Bon\xc3\xa9", 5, "HELLO name has byte 0xc3 at 3");
}

static void updates_with_line(bool as_bin, size_t len, const char *want)
{
    char *line = malloc(len ? len : 1);
    assert_non_null(line);
    memset(line, 'z', len);
    pk_t b;
    pk_init(&b);
    pk_array(&b, 3);
    pk_uint(&b, 1);
    pk_uint(&b, HERD_MSG_UPDATES);
    pk_array(&b, 2);
    pk_str(&b, "AT ok", 5);
    if (as_bin)
        pk_bin(&b, line, len);
    else
        pk_str(&b, line, len);
    expect_reject_pk(&b, want);
    free(line);
}

static void test_reject_lines(void **state)
{
    (void)state;
    updates_with_line(false, 0, "UPDATES line 1 is empty");
    updates_with_line(true, 0, "UPDATES line 1 is empty");
    updates_with_line(false, HERD_AT_MAX + 1, "UPDATES line 1 is 4205 bytes, longer than 4204");
    updates_with_line(true, HERD_AT_MAX + 1, "UPDATES line 1 is 4205 bytes, longer than 4204");
    updates_with_line(false, 100000, "UPDATES line 1 is 100000 bytes");

    /* One line more than allowed, each a valid one-byte line. */
    pk_t b;
    pk_init(&b);
    pk_array(&b, 3);
    pk_uint(&b, 1);
    pk_uint(&b, HERD_MSG_UPDATES);
    pk_array(&b, HERD_WIRE_MAX_UPDATES + 1);
    for (size_t i = 0; i <= HERD_WIRE_MAX_UPDATES; i++)
        pk_str(&b, "a", 1);
    char want[80];
    snprintf(want, sizeof want, "UPDATES has %u lines, more than %u", HERD_WIRE_MAX_UPDATES + 1,
             HERD_WIRE_MAX_UPDATES);
    expect_reject_pk(&b, want);
}

static void test_reject_frame_size(void **state)
{
    (void)state;
    /* One byte over the limit is refused before anything is parsed. */
    char *big = calloc(1, (size_t)HERD_WIRE_MAX_FRAME + 1);
    assert_non_null(big);
    big[0] = (char)0x93;
    herd_msg_t m;
    char err[128];
    assert_int_equal(herd_wire_decode(big, (size_t)HERD_WIRE_MAX_FRAME + 1, &m, err, sizeof err), -1);
    char want[96];
    snprintf(want, sizeof want, "%u bytes is larger than %u", HERD_WIRE_MAX_FRAME + 1, HERD_WIRE_MAX_FRAME);
    assert_non_null(strstr(err, want));
    assert_true(msg_is_zero(&m));

    /* Exactly at the limit it is parsed, and fails only on the long line. */
    size_t line = HERD_WIRE_MAX_FRAME - 9;
    memcpy(big, RAW(0x93, 0x01, 0x02, 0x91, 0xc6, (unsigned char)(line >> 24),
                    (unsigned char)(line >> 16), (unsigned char)(line >> 8), (unsigned char)line));
    assert_int_equal(herd_wire_decode(big, HERD_WIRE_MAX_FRAME, &m, err, sizeof err), -1);
    snprintf(want, sizeof want, "UPDATES line 0 is %zu bytes, longer than 4204", line);
    assert_string_equal(err, want);
    free(big);
}

static void test_reject_nesting_and_huge_counts(void **state)
{
    (void)state;
    /* Counts that the remaining bytes cannot hold fail at once, before
     * msgpack-c could allocate slots for them (under ASan, its 128 GB request
     * would abort the test). */
    expect_reject(RAW(0xdd, 0xff, 0xff, 0xff, 0xff), "truncated");
    expect_reject(RAW(0x93, 0x01, 0x02, 0xdd, 0xff, 0xff, 0xff, 0xff), "truncated");
    expect_reject(RAW(0x93, 0x01, 0x02, 0xdf, 0xff, 0xff, 0xff, 0xff), "truncated");
    expect_reject(RAW(0x93, 0x01, 0x02, 0x91, 0xdb, 0xff, 0xff, 0xff, 0xff), "truncated");
    expect_reject(RAW(0x93, 0x01, 0x02, 0x91, 0xc6, 0xff, 0xff, 0xff, 0xff), "truncated");
    expect_reject(RAW(0x93, 0x01, 0x02, 0x91, 0xc9, 0xff, 0xff, 0xff, 0xff, 0x01), "truncated");
    expect_reject(RAW(0x93, 0x01, 0x02, 0xdc, 0xff, 0xff, 0xa1, 'x'), "truncated");

    /* Counts backed by real bytes but more objects than any valid message. */
    size_t n = 70000, len = 5 + n;
    unsigned char *many = malloc(8 + n);
    assert_non_null(many);
    memcpy(many, RAW(0xdd, 0x00, 0x01, 0x11, 0x70));
    memset(many + 5, 0xc0, n);
    char objects[64];
    snprintf(objects, sizeof objects, "more than %u objects", HERD_WIRE_MAX_UPDATES + 16);
    expect_reject(many, len, objects);
    /* The same inside a map: pairs count twice. */
    many[0] = 0x93;
    many[1] = 0x01;
    many[2] = 0x02;
    memcpy(many + 3, RAW(0xdf, 0x00, 0x00, 0x88, 0xb8)); /* 35000 pairs */
    memset(many + 8, 0xc0, n);
    expect_reject(many, 8 + n, objects);
    free(many);

    /* Deep nesting: far beyond the limit, then in a field just within and
     * just beyond it (the top array is level 1). */
    size_t depth = 200000;
    unsigned char *deep = malloc(depth + 1);
    assert_non_null(deep);
    memset(deep, 0x91, depth);
    deep[depth] = 0x01;
    expect_reject(deep, depth + 1, "nested deeper than 8 levels");
    memcpy(deep, RAW(0x96, 0x01, 0x01));
    expect_reject(deep, depth + 1, "nested deeper than 8 levels");
    free(deep);
    expect_reject(RAW(0x96, 0x01, 0x01, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x90, 0x00, 0x00, 0x00),
                  "HELLO name is an array");
    expect_reject(RAW(0x96, 0x01, 0x01, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x90, 0x00, 0x00,
                      0x00),
                  "nested deeper than 8 levels");

    /* The reserved byte, anywhere. */
    expect_reject(RAW(0x94, 0x01, 0x03, 0xc1, 0x00), "invalid msgpack type byte 0xc1 at byte 3");
}

static void test_err_buffer_edges(void **state)
{
    (void)state;
    herd_msg_t m;
    char *buf = dup_exact(RAW(0x94, 0x07, 0x03, 0x00, 0x00));
    assert_int_equal(herd_wire_decode(buf, 5, &m, NULL, 0), -1);
    char small[8];
    memset(small, 'x', sizeof small);
    assert_int_equal(herd_wire_decode(buf, 5, &m, small, sizeof small), -1);
    assert_string_equal(small, "unknown");
    free(buf);
}

/* Every strict prefix of a valid UPDATES frame is rejected. */
static void test_every_prefix_rejected(void **state)
{
    (void)state;
    char text[HERD_AT_MAX];
    for (size_t i = 0; i < sizeof text; i++)
        text[i] = (char)(i ^ 0x5a);
    const size_t lens[] = {1, 31, 32, 255, 256, 1000, HERD_AT_MAX, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
    herd_span_t ats[17];
    for (size_t i = 0; i < 17; i++)
        ats[i] = (herd_span_t){text, lens[i]};
    char *out;
    size_t len;
    assert_int_equal(herd_wire_encode_updates(ats, 17, &out, &len), 0);
    assert_int_equal((unsigned char)out[3], 0xdc); /* array 16 for the lines */
    for (size_t cut = 0; cut < len; cut++)
        expect_reject(out, cut, cut == 0 ? "empty message" : "truncated");
    herd_msg_t m;
    char *buf;
    expect_accept(out, len, &m, &buf);
    assert_int_equal(m.n_updates, 17);
    herd_wire_msg_free(&m);
    free(buf);
    free(out);
}

/* ------------------------------------------------------------------ fuzz */

static uint64_t xorshift64(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* The n little-endian integers of width w at p as a malloc'd array of
 * uint16_t, uint32_t or uint64_t, for the public encoders. */
static void *le_array(const unsigned char *p, size_t n, size_t w)
{
    void *a = malloc(n ? n * w : 1);
    assert_non_null(a);
    for (size_t i = 0; i < n; i++) {
        if (w == 2)
            ((uint16_t *)a)[i] = herd_wire_u16(p, i);
        else if (w == 4)
            ((uint32_t *)a)[i] = herd_wire_u32(p, i);
        else
            ((uint64_t *)a)[i] = herd_wire_u64(p, i);
    }
    return a;
}

/* A binary array of n bytes of a decoded message lies inside the frame. */
static void assert_bin_inside(const unsigned char *p, size_t n, const char *buf, size_t len)
{
    if (n == 0)
        return;
    const unsigned char *lo = (const unsigned char *)buf;
    assert_true(p != NULL && n <= len && p >= lo && p + n <= lo + len);
}

static void assert_same_bin(const unsigned char *a, const unsigned char *b, size_t n)
{
    if (n > 0)
        assert_memory_equal(a, b, n);
}

/* Encodes a decoded message again with the public encoders. */
static void reencode(const herd_msg_t *m, char **out, size_t *olen)
{
    void *a1 = NULL, *a2 = NULL, *a3 = NULL;
    int rc = -1;
    switch (m->type) {
    case HERD_MSG_HELLO: {
        char name[HERD_MAX_NAME + 1];
        memcpy(name, m->name.p, m->name.len);
        name[m->name.len] = '\0';
        rc = herd_wire_encode_hello(name, m->incarnation, m->count, m->digest, out, olen);
        break;
    }
    case HERD_MSG_UPDATES: rc = herd_wire_encode_updates(m->updates, m->n_updates, out, olen); break;
    case HERD_MSG_RECORDS: rc = herd_wire_encode_records(m->updates, m->n_updates, out, olen); break;
    case HERD_MSG_SYNC_END: rc = herd_wire_encode_sync_end(m->incarnation, m->count, out, olen); break;
    case HERD_MSG_DIGEST: rc = herd_wire_encode_digest(m->count, m->digest, out, olen); break;
    case HERD_MSG_GROUPS:
        a1 = le_array(m->digests, 256, 8);
        rc = herd_wire_encode_groups(a1, out, olen);
        break;
    case HERD_MSG_BUCKETS:
        a1 = le_array(m->digests, m->n_items * 256, 8);
        rc = herd_wire_encode_buckets(m->groups, m->n_items, a1, out, olen);
        break;
    case HERD_MSG_FPRINTS:
        a1 = le_array(m->buckets, m->n_items, 2);
        a2 = le_array(m->counts, m->n_items, 4);
        a3 = le_array(m->fps, m->n_fps, 8);
        rc = herd_wire_encode_fprints(m->last, a1, a2, m->n_items, a3, m->n_fps, out, olen);
        break;
    case HERD_MSG_WANT:
        a1 = le_array(m->buckets, m->n_items, 2);
        a3 = le_array(m->fps, m->n_items, 8);
        rc = herd_wire_encode_want(m->last, a1, a3, m->n_items, out, olen);
        break;
    }
    assert_int_equal(rc, 0);
    free(a1);
    free(a2);
    free(a3);
}

/* Checks a message the decoder accepted: limits hold, spans and binary
 * arrays lie in the frame, and encoding it again gives a frame that decodes
 * to the same message. */
static void check_accepted(const herd_msg_t *m, const char *buf, size_t len)
{
    const char *hi = buf + len;
    assert_true(m->type >= HERD_MSG_HELLO && m->type <= HERD_MSG_RECORDS);
    if (m->type == HERD_MSG_HELLO) {
        assert_true(m->name.len >= 1 && m->name.len <= HERD_MAX_NAME);
        assert_true(m->name.p >= buf && m->name.p + m->name.len <= hi);
    } else if (m->type == HERD_MSG_UPDATES || m->type == HERD_MSG_RECORDS) {
        assert_true(m->n_updates <= HERD_WIRE_MAX_UPDATES);
        for (size_t i = 0; i < m->n_updates; i++) {
            assert_true(m->updates[i].len >= 1 && m->updates[i].len <= HERD_AT_MAX);
            assert_true(m->updates[i].p >= buf && m->updates[i].p + m->updates[i].len <= hi);
        }
    }
    /* The binary arrays: inside the frame, and what the layouts promise. */
    size_t g_bytes = m->type == HERD_MSG_GROUPS ? 256 * 8 : m->n_items * 256 * 8;
    if (m->type == HERD_MSG_GROUPS || m->type == HERD_MSG_BUCKETS)
        assert_bin_inside(m->digests, g_bytes, buf, len);
    if (m->type == HERD_MSG_BUCKETS) {
        assert_bin_inside(m->groups, m->n_items, buf, len);
        for (size_t i = 1; i < m->n_items; i++)
            assert_true(m->groups[i] > m->groups[i - 1]);
    }
    if (m->type == HERD_MSG_FPRINTS) {
        assert_bin_inside(m->buckets, m->n_items * 2, buf, len);
        assert_bin_inside(m->counts, m->n_items * 4, buf, len);
        assert_bin_inside(m->fps, m->n_fps * 8, buf, len);
        uint64_t sum = 0;
        for (size_t i = 0; i < m->n_items; i++) {
            assert_true(i == 0 || herd_wire_u16(m->buckets, i) > herd_wire_u16(m->buckets, i - 1));
            sum += herd_wire_u32(m->counts, i);
        }
        assert_true(sum == m->n_fps);
    }
    if (m->type == HERD_MSG_WANT) {
        assert_bin_inside(m->buckets, m->n_items * 2, buf, len);
        assert_bin_inside(m->fps, m->n_items * 8, buf, len);
    }

    char *out;
    size_t olen;
    reencode(m, &out, &olen);
    herd_msg_t again;
    char err[256];
    assert_int_equal(herd_wire_decode(out, olen, &again, err, sizeof err), 0);
    assert_int_equal(again.type, m->type);
    assert_true(again.incarnation == m->incarnation && again.count == m->count &&
                again.digest == m->digest && again.last == m->last);
    assert_int_equal(again.name.len, m->name.len);
    if (m->name.len)
        assert_memory_equal(again.name.p, m->name.p, m->name.len);
    assert_int_equal(again.n_updates, m->n_updates);
    for (size_t i = 0; i < m->n_updates; i++) {
        assert_int_equal(again.updates[i].len, m->updates[i].len);
        assert_memory_equal(again.updates[i].p, m->updates[i].p, m->updates[i].len);
    }
    assert_int_equal(again.n_items, m->n_items);
    assert_int_equal(again.n_fps, m->n_fps);
    if (m->type == HERD_MSG_GROUPS || m->type == HERD_MSG_BUCKETS)
        assert_same_bin(again.digests, m->digests, g_bytes);
    if (m->type == HERD_MSG_BUCKETS)
        assert_same_bin(again.groups, m->groups, m->n_items);
    if (m->type == HERD_MSG_FPRINTS || m->type == HERD_MSG_WANT)
        assert_same_bin(again.buckets, m->buckets, m->n_items * 2);
    if (m->type == HERD_MSG_FPRINTS) {
        assert_same_bin(again.counts, m->counts, m->n_items * 4);
        assert_same_bin(again.fps, m->fps, m->n_fps * 8);
    }
    if (m->type == HERD_MSG_WANT)
        assert_same_bin(again.fps, m->fps, m->n_items * 8);
    herd_wire_msg_free(&again);
    free(out);
}

#define FUZZ_ITERATIONS 200000
#define FUZZ_MAX        4096 /* room for a BUCKETS of one group */

static void test_fuzz_mutations(void **state)
{
    (void)state;
    /* The seeds: one of each type, the layouts other encoders may use. */
    char *seeds[16];
    size_t seed_len[16];
    size_t n_seeds = 0;
    herd_span_t ats[4] = {{"AT Clark +0.263873386 kiwi +34.06-118.44 1621464827.959498503", 61},
                          {"\x00\x01\xff", 3},
                          {"AT a b c d e", 12},
                          {"0123456789012345678901234567890123456789", 40}};
    assert_int_equal(herd_wire_encode_hello("Campbell", 77, 3, 0xdeadbeefu, &seeds[n_seeds],
                                            &seed_len[n_seeds]),
                     0);
    n_seeds++;
    assert_int_equal(herd_wire_encode_updates(ats, 4, &seeds[n_seeds], &seed_len[n_seeds]), 0);
    n_seeds++;
    assert_int_equal(herd_wire_encode_updates(ats, 1, &seeds[n_seeds], &seed_len[n_seeds]), 0);
    n_seeds++;
    assert_int_equal(herd_wire_encode_updates(NULL, 0, &seeds[n_seeds], &seed_len[n_seeds]), 0);
    n_seeds++;
    assert_int_equal(herd_wire_encode_sync_end(1u << 20, 12, &seeds[n_seeds], &seed_len[n_seeds]), 0);
    n_seeds++;
    const unsigned char odd[] = {0xdc, 0x00, 0x03, 0xd0, 0x01, 0xd1, 0x00, 0x02, 0xdd, 0x00,
                                 0x00, 0x00, 0x02, 0xc4, 0x02, 'A', 0x00, 0xdb, 0x00, 0x00,
                                 0x00, 0x01, 'B'};
    seeds[n_seeds] = dup_exact(odd, sizeof odd);
    seed_len[n_seeds++] = sizeof odd;
    /* The anti-entropy messages, small enough for FUZZ_MAX. */
    uint64_t digs[256];
    for (size_t i = 0; i < 256; i++)
        digs[i] = i * 0x0101010101010101u;
    const uint16_t buckets[3] = {1, 0x1ff, 0xffff};
    const uint32_t counts[3] = {2, 0, 1};
    const uint64_t fps[3] = {7, UINT64_MAX, 1u << 20};
    assert_int_equal(herd_wire_encode_digest(1000, 0xfeedu, &seeds[n_seeds], &seed_len[n_seeds]), 0);
    n_seeds++;
    assert_int_equal(herd_wire_encode_groups(digs, &seeds[n_seeds], &seed_len[n_seeds]), 0);
    n_seeds++;
    assert_int_equal(herd_wire_encode_buckets((const uint8_t[]){4}, 0, NULL, &seeds[n_seeds],
                                              &seed_len[n_seeds]),
                     0);
    n_seeds++;
    uint64_t group_digs[256] = {[0] = 1, [255] = UINT64_MAX};
    assert_int_equal(herd_wire_encode_buckets((const uint8_t[]){200}, 1, group_digs, &seeds[n_seeds],
                                              &seed_len[n_seeds]),
                     0);
    n_seeds++;
    assert_int_equal(herd_wire_encode_fprints(true, buckets, counts, 3, fps, 3, &seeds[n_seeds],
                                              &seed_len[n_seeds]),
                     0);
    n_seeds++;
    assert_int_equal(herd_wire_encode_want(false, buckets, fps, 3, &seeds[n_seeds], &seed_len[n_seeds]),
                     0);
    n_seeds++;

    static const unsigned char interesting[] = {0x00, 0x01, 0x02, 0x03, 0x7f, 0x80, 0x8f, 0x90,
                                                0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc4, 0xc6, 0xc9,
                                                0xcc, 0xcf, 0xd0, 0xd3, 0xd4, 0xd8, 0xd9, 0xdb,
                                                0xdc, 0xdd, 0xde, 0xdf, 0xe0, 0xff};
    uint64_t rng = 0x9e3779b97f4a7c15u;
    unsigned char work[FUZZ_MAX];
    size_t accepted = 0, rejected = 0;
    size_t accepted_type[HERD_MSG_RECORDS + 1] = {0}; /* by message type */
    for (size_t iter = 0; iter < FUZZ_ITERATIONS; iter++) {
        size_t s = xorshift64(&rng) % n_seeds;
        size_t len = seed_len[s];
        memcpy(work, seeds[s], len);
        size_t ops = 1 + xorshift64(&rng) % 4;
        for (size_t k = 0; k < ops; k++) {
            uint64_t r = xorshift64(&rng);
            size_t pos = len ? (size_t)(r >> 8) % len : 0;
            switch (r % 8) {
            case 0:
                if (len)
                    work[pos] ^= (unsigned char)(1u << ((r >> 40) % 8));
                break;
            case 1:
                if (len)
                    work[pos] = (unsigned char)(r >> 48);
                break;
            case 2:
                if (len)
                    work[pos] = interesting[(r >> 40) % sizeof interesting];
                break;
            case 3:
                if (len < FUZZ_MAX) {
                    memmove(work + pos + 1, work + pos, len - pos);
                    work[pos] = (unsigned char)(r >> 48);
                    len++;
                }
                break;
            case 4:
                if (len) {
                    memmove(work + pos, work + pos + 1, len - pos - 1);
                    len--;
                }
                break;
            case 5:
                len = pos;
                break;
            case 6: { /* repeat a chunk at another place */
                size_t from = len ? (size_t)(r >> 24) % len : 0;
                size_t n = 1 + (size_t)(r >> 32) % 16;
                if (n > len - from)
                    n = len - from;
                if (len + n <= FUZZ_MAX && n > 0) {
                    unsigned char chunk[16];
                    memcpy(chunk, work + from, n);
                    memmove(work + pos + n, work + pos, len - pos);
                    memcpy(work + pos, chunk, n);
                    len += n;
                }
                break;
            }
            default:
                for (size_t i = 0; i < 4 && pos + i < len; i++)
                    work[pos + i] = 0xff;
                break;
            }
        }
        char *buf = dup_exact(work, len);
        herd_msg_t m;
        char err[256] = "";
        if (herd_wire_decode(buf, len, &m, err, sizeof err) == 0) {
            check_accepted(&m, buf, len);
            accepted++;
            accepted_type[m.type]++;
        } else {
            assert_true(err[0] != '\0');
            assert_null(strchr(err, '\n'));
            assert_true(msg_is_zero(&m));
            rejected++;
        }
        herd_wire_msg_free(&m);
        free(buf);
    }
    /* Both paths must have been exercised for the loop to mean anything. */
    assert_true(accepted > 1000);
    assert_true(rejected > 100000);
    for (int t = HERD_MSG_HELLO; t <= HERD_MSG_WANT; t++)
        if (accepted_type[t] == 0)
            fail_msg("no mutation of type %d was accepted", t);
    for (size_t i = 0; i < n_seeds; i++)
        free(seeds[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_hello_bytes),
        cmocka_unit_test(test_encode_sync_end_bytes),
        cmocka_unit_test(test_encode_updates_bytes),
        cmocka_unit_test(test_round_trip_hello),
        cmocka_unit_test(test_round_trip_sync_end),
        cmocka_unit_test(test_round_trip_updates),
        cmocka_unit_test(test_round_trip_max_updates),
        cmocka_unit_test(test_decode_other_encodings),
        cmocka_unit_test(test_msg_free),
        cmocka_unit_test(test_encode_refusals),
        cmocka_unit_test(test_reject_empty_and_not_array),
        cmocka_unit_test(test_reject_truncated_and_trailing),
        cmocka_unit_test(test_reject_counts),
        cmocka_unit_test(test_reject_version_and_type),
        cmocka_unit_test(test_reject_element_types),
        cmocka_unit_test(test_reject_names),
        cmocka_unit_test(test_reject_lines),
        cmocka_unit_test(test_reject_frame_size),
        cmocka_unit_test(test_reject_nesting_and_huge_counts),
        cmocka_unit_test(test_err_buffer_edges),
        cmocka_unit_test(test_every_prefix_rejected),
        cmocka_unit_test(test_fuzz_mutations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
