/* Unit tests for the anti-entropy messages of herd_wire (DIGEST, GROUPS,
 * BUCKETS, FPRINTS, WANT; herd_wire.h gives their layouts): exact encodings,
 * round trips at the edges of every count, every rejection, every
 * truncation, and encoders that never make a frame the decoder refuses.
 * test_wire.c covers HELLO, UPDATES, SYNC_END, the msgpack pre-scan and a
 * mutation loop over all types. Every input handed to the decoder lives in a
 * malloc'd buffer of exactly its size, so AddressSanitizer sees any read
 * past the end. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

#include "herd_wire.h"
#include "wire_check.h"

/* ------------------------------------------------------------- helpers */

/* A msgpack buffer under construction. */
typedef struct {
    msgpack_sbuffer sb; /* the bytes */
    msgpack_packer pk;  /* writes into sb */
} pk_t;

static void pk_init(pk_t *b, size_t elems, uint64_t type)
{
    msgpack_sbuffer_init(&b->sb);
    msgpack_packer_init(&b->pk, &b->sb, msgpack_sbuffer_write);
    assert_int_equal(msgpack_pack_array(&b->pk, elems), 0);
    assert_int_equal(msgpack_pack_uint64(&b->pk, HERD_WIRE_VERSION), 0);
    assert_int_equal(msgpack_pack_uint64(&b->pk, type), 0);
}

static void pk_uint(pk_t *b, uint64_t v)
{
    assert_int_equal(msgpack_pack_uint64(&b->pk, v), 0);
}

/* A bin of n bytes, each (i * 31 + 7) unless data is given. */
static void pk_bin(pk_t *b, const void *data, size_t n)
{
    assert_int_equal(msgpack_pack_bin(&b->pk, n), 0);
    if (data != NULL) {
        assert_int_equal(msgpack_pack_bin_body(&b->pk, data, n), 0);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)(i * 31 + 7);
        assert_int_equal(msgpack_pack_bin_body(&b->pk, &c, 1), 0);
    }
}

/* n little-endian integers of `width` bytes, from vals (uint16_t, uint32_t
 * or uint64_t), as the bytes of a bin. The caller frees the result. */
static unsigned char *le_bytes(const void *vals, size_t n, unsigned width)
{
    unsigned char *p = malloc(n * width + 1);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++) {
        uint64_t v = width == 2 ? ((const uint16_t *)vals)[i]
                     : width == 4 ? ((const uint32_t *)vals)[i]
                                  : ((const uint64_t *)vals)[i];
        for (unsigned k = 0; k < width; k++)
            p[i * width + k] = (unsigned char)(v >> (8 * k));
    }
    return p;
}

static void expect_reject_pk(pk_t *b, const char *want)
{
    expect_reject(b->sb.data, b->sb.size, want);
    msgpack_sbuffer_destroy(&b->sb);
}

/* Decodes data (copied into *buf, exact size; the caller frees it) that
 * must be accepted, and checks that every binary array lies inside *buf. */
static void expect_accept(const void *data, size_t len, herd_msg_t *m, char **buf)
{
    *buf = dup_exact(data, len);
    char err[256] = "";
    if (herd_wire_decode(*buf, len, m, err, sizeof err) != 0)
        fail_msg("rejected: %s", err);
    const unsigned char *lo = (const unsigned char *)*buf, *hi = lo + len;
    size_t digest_bytes = m->type == HERD_MSG_GROUPS ? 2048 : m->n_items * 2048;
    size_t fp_count = m->type == HERD_MSG_FPRINTS ? m->n_fps : m->n_items;
    const struct {
        const unsigned char *p;
        size_t n;
        bool used;
    } bins[] = {
        {m->groups, m->n_items, m->type == HERD_MSG_BUCKETS},
        {m->digests, digest_bytes, m->type == HERD_MSG_GROUPS || m->type == HERD_MSG_BUCKETS},
        {m->buckets, m->n_items * 2, m->type == HERD_MSG_FPRINTS || m->type == HERD_MSG_WANT},
        {m->counts, m->n_items * 4, m->type == HERD_MSG_FPRINTS},
        {m->fps, fp_count * 8, m->type == HERD_MSG_FPRINTS || m->type == HERD_MSG_WANT},
    };
    for (size_t i = 0; i < sizeof bins / sizeof bins[0]; i++)
        if (bins[i].used && bins[i].n > 0)
            assert_true(bins[i].p >= lo && bins[i].p + bins[i].n <= hi);
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

static uint64_t xorshift64(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* ----------------------------------------------------- exact encodings */

static void test_encode_bytes(void **state)
{
    (void)state;
    char *out;
    size_t len;
    assert_int_equal(herd_wire_encode_digest(5, 0, &out, &len), 0);
    assert_bytes(out, len, RAW(0x94, 0x01, 0x04, 0x05, 0x00));
    free(out);
    assert_int_equal(herd_wire_encode_digest(300, UINT64_MAX, &out, &len), 0);
    assert_bytes(out, len,
                 RAW(0x94, 0x01, 0x04, 0xcd, 0x01, 0x2c, 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                     0xff));
    free(out);

    /* GROUPS: a bin 16 of 2048 bytes, little-endian digests. */
    uint64_t d[256];
    for (size_t i = 0; i < 256; i++)
        d[i] = 0x0102030405060700u + i;
    assert_int_equal(herd_wire_encode_groups(d, &out, &len), 0);
    assert_int_equal(len, 6 + 2048);
    assert_prefix(out, RAW(0x93, 0x01, 0x05, 0xc5, 0x08, 0x00));
    assert_prefix(out + 6, RAW(0x00, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01));
    assert_prefix(out + 6 + 8 * 255, RAW(0xff, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01));
    free(out);

    /* BUCKETS: empty, then one group. */
    assert_int_equal(herd_wire_encode_buckets(NULL, 0, NULL, &out, &len), 0);
    assert_bytes(out, len, RAW(0x94, 0x01, 0x06, 0xc4, 0x00, 0xc4, 0x00));
    free(out);
    const uint8_t g7 = 7;
    assert_int_equal(herd_wire_encode_buckets(&g7, 1, d, &out, &len), 0);
    assert_int_equal(len, 9 + 2048);
    assert_prefix(out, RAW(0x94, 0x01, 0x06, 0xc4, 0x01, 0x07, 0xc5, 0x08, 0x00));
    assert_prefix(out + 9 + 8, RAW(0x01, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01));
    free(out);

    const uint16_t b[1] = {0x0102};
    const uint32_t c[1] = {1};
    const uint64_t f[1] = {0x1122334455667788u};
    assert_int_equal(herd_wire_encode_fprints(true, b, c, 1, f, 1, &out, &len), 0);
    assert_bytes(out, len,
                 RAW(0x96, 0x01, 0x07, 0x01, 0xc4, 0x02, 0x02, 0x01, 0xc4, 0x04, 0x01, 0x00, 0x00, 0x00,
                     0xc4, 0x08, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11));
    free(out);
    assert_int_equal(herd_wire_encode_fprints(false, NULL, NULL, 0, NULL, 0, &out, &len), 0);
    assert_bytes(out, len, RAW(0x96, 0x01, 0x07, 0x00, 0xc4, 0x00, 0xc4, 0x00, 0xc4, 0x00));
    free(out);

    const uint16_t wb[1] = {0xabcd};
    const uint64_t wf[1] = {1};
    assert_int_equal(herd_wire_encode_want(false, wb, wf, 1, &out, &len), 0);
    assert_bytes(out, len,
                 RAW(0x95, 0x01, 0x08, 0x00, 0xc4, 0x02, 0xcd, 0xab, 0xc4, 0x08, 0x01, 0x00, 0x00, 0x00,
                     0x00, 0x00, 0x00, 0x00));
    free(out);
    assert_int_equal(herd_wire_encode_want(true, NULL, NULL, 0, &out, &len), 0);
    assert_bytes(out, len, RAW(0x95, 0x01, 0x08, 0x01, 0xc4, 0x00, 0xc4, 0x00));
    free(out);
}

/* ---------------------------------------------------------- round trips */

static void test_round_trip_digest(void **state)
{
    (void)state;
    const uint64_t vals[][2] = {{0, 0}, {1, 127}, {1000000, 0x0123456789abcdefu}, {UINT64_MAX, UINT64_MAX}};
    for (size_t k = 0; k < 4; k++) {
        char *out, *buf;
        size_t len;
        assert_int_equal(herd_wire_encode_digest(vals[k][0], vals[k][1], &out, &len), 0);
        herd_msg_t m;
        expect_accept(out, len, &m, &buf);
        assert_int_equal(m.type, HERD_MSG_DIGEST);
        assert_true(m.count == vals[k][0] && m.digest == vals[k][1]);
        assert_true(m.incarnation == 0 && m.name.len == 0 && m.n_items == 0);
        herd_wire_msg_free(&m);
        free(buf);
        free(out);
    }
}

static void test_round_trip_groups(void **state)
{
    (void)state;
    uint64_t rng = 42, d[256];
    for (size_t i = 0; i < 256; i++)
        d[i] = i == 0 ? 0 : i == 255 ? UINT64_MAX : xorshift64(&rng);
    char *out, *buf;
    size_t len;
    assert_int_equal(herd_wire_encode_groups(d, &out, &len), 0);
    herd_msg_t m;
    expect_accept(out, len, &m, &buf);
    assert_int_equal(m.type, HERD_MSG_GROUPS);
    for (size_t i = 0; i < 256; i++)
        assert_true(herd_wire_u64(m.digests, i) == d[i]);
    assert_ptr_equal(m.digests, (const unsigned char *)buf + 6); /* zero copy */
    herd_wire_msg_free(&m);
    free(buf);
    free(out);
}

/* Encodes the groups 0, step, 2*step, ... (n of them) with random bucket
 * digests, decodes, and compares. */
static void round_trip_buckets(size_t n, size_t step)
{
    uint8_t groups[256];
    uint64_t *d = malloc((n ? n : 1) * 256 * sizeof *d), rng = n + 1;
    assert_non_null(d);
    for (size_t i = 0; i < n; i++)
        groups[i] = (uint8_t)(i * step);
    for (size_t i = 0; i < n * 256; i++)
        d[i] = xorshift64(&rng);
    char *out, *buf;
    size_t len;
    assert_int_equal(herd_wire_encode_buckets(groups, n, d, &out, &len), 0);
    herd_msg_t m;
    expect_accept(out, len, &m, &buf);
    assert_int_equal(m.type, HERD_MSG_BUCKETS);
    assert_int_equal(m.n_items, n);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(m.groups[i], groups[i]);
    for (size_t i = 0; i < n * 256; i++)
        assert_true(herd_wire_u64(m.digests, i) == d[i]);
    herd_wire_msg_free(&m);
    free(buf);
    free(out);
    free(d);
}

static void test_round_trip_buckets(void **state)
{
    (void)state;
    round_trip_buckets(0, 1);
    round_trip_buckets(1, 1);
    round_trip_buckets(3, 85);  /* 0, 85, 170 */
    round_trip_buckets(256, 1); /* every group: 512 KiB, a bin 32 */
}

/* FPRINTS with k buckets (spread over 0..65535), counts from count_of(i),
 * random fingerprints; decoded and compared. */
static void round_trip_fprints(bool last, size_t k, uint32_t (*count_of)(size_t))
{
    uint16_t *b = malloc((k + 1) * sizeof *b);
    uint32_t *c = malloc((k + 1) * sizeof *c);
    assert_true(b != NULL && c != NULL);
    size_t n = 0;
    for (size_t i = 0; i < k; i++) {
        b[i] = (uint16_t)(k == 65536 ? i : i * (65535 / (k > 1 ? k - 1 : 1)));
        c[i] = count_of(i);
        n += c[i];
    }
    uint64_t *f = malloc((n + 1) * sizeof *f), rng = k * 7 + 1;
    assert_non_null(f);
    for (size_t i = 0; i < n; i++)
        f[i] = xorshift64(&rng);
    char *out, *buf;
    size_t len;
    assert_int_equal(herd_wire_encode_fprints(last, b, c, k, f, n, &out, &len), 0);
    herd_msg_t m;
    expect_accept(out, len, &m, &buf);
    assert_int_equal(m.type, HERD_MSG_FPRINTS);
    assert_true(m.last == last);
    assert_int_equal(m.n_items, k);
    assert_int_equal(m.n_fps, n);
    for (size_t i = 0; i < k; i++) {
        assert_int_equal(herd_wire_u16(m.buckets, i), b[i]);
        assert_int_equal(herd_wire_u32(m.counts, i), c[i]);
    }
    for (size_t i = 0; i < n; i++)
        assert_true(herd_wire_u64(m.fps, i) == f[i]);
    herd_wire_msg_free(&m);
    free(buf);
    free(out);
    free(b);
    free(c);
    free(f);
}

static uint32_t count_zero(size_t i)
{
    (void)i;
    return 0;
}

static uint32_t count_mixed(size_t i)
{
    return (uint32_t)(i % 5 == 0 ? 0 : i % 7 + 1);
}

static uint32_t count_one_big(size_t i)
{
    return i == 1 ? 100000u : 1u;
}

static void test_round_trip_fprints(void **state)
{
    (void)state;
    round_trip_fprints(true, 0, count_zero);
    round_trip_fprints(false, 0, count_zero);
    round_trip_fprints(true, 1, count_mixed);  /* one bucket, no fingerprint */
    round_trip_fprints(false, 2, count_one_big); /* buckets 0 and 65535, one huge */
    round_trip_fprints(true, 300, count_mixed);
    round_trip_fprints(true, 65536, count_zero); /* every bucket, the most allowed */
    round_trip_fprints(false, 65536, count_mixed);
}

static void test_round_trip_want(void **state)
{
    (void)state;
    const size_t sizes[] = {0, 1, 2, 1000, 100000};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t n = sizes[s];
        uint16_t *b = malloc((n + 1) * sizeof *b);
        uint64_t *f = malloc((n + 1) * sizeof *f), rng = n + 3;
        assert_true(b != NULL && f != NULL);
        for (size_t i = 0; i < n; i++) {
            b[i] = (uint16_t)xorshift64(&rng); /* any order, repeats allowed */
            f[i] = i == 0 ? UINT64_MAX : xorshift64(&rng);
        }
        char *out, *buf;
        size_t len;
        assert_int_equal(herd_wire_encode_want(s % 2 == 0, b, f, n, &out, &len), 0);
        herd_msg_t m;
        expect_accept(out, len, &m, &buf);
        assert_int_equal(m.type, HERD_MSG_WANT);
        assert_true(m.last == (s % 2 == 0));
        assert_int_equal(m.n_items, n);
        assert_int_equal(m.n_fps, 0);
        for (size_t i = 0; i < n; i++) {
            assert_int_equal(herd_wire_u16(m.buckets, i), b[i]);
            assert_true(herd_wire_u64(m.fps, i) == f[i]);
        }
        herd_wire_msg_free(&m);
        free(buf);
        free(out);
        free(b);
        free(f);
    }
}

/* Another encoder's forms: signed integers, bin 32 for a short array. */
static void test_decode_other_encodings(void **state)
{
    (void)state;
    herd_msg_t m;
    char *buf;
    expect_accept(RAW(0x95, 0xd0, 0x01, 0xd1, 0x00, 0x08, 0xd3, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xc6, 0, 0, 0,
                      0x02, 0x05, 0x00, 0xc5, 0x00, 0x08, 1, 2, 3, 4, 5, 6, 7, 8),
                  &m, &buf);
    assert_int_equal(m.type, HERD_MSG_WANT);
    assert_true(m.last);
    assert_int_equal(m.n_items, 1);
    assert_int_equal(herd_wire_u16(m.buckets, 0), 5);
    assert_true(herd_wire_u64(m.fps, 0) == 0x0807060504030201u);
    herd_wire_msg_free(&m);
    free(buf);
}

/* ---------------------------------------------------- decoder rejections */

static void test_reject_element_counts(void **state)
{
    (void)state;
    expect_reject(RAW(0x93, 0x01, 0x04, 0x00), "DIGEST has 3 elements, expected 4");
    expect_reject(RAW(0x95, 0x01, 0x04, 0x00, 0x00, 0x00), "DIGEST has 5 elements, expected 4");
    expect_reject(RAW(0x92, 0x01, 0x05), "GROUPS has 2 elements, expected 3");
    expect_reject(RAW(0x94, 0x01, 0x05, 0xc4, 0x00, 0xc4, 0x00), "GROUPS has 4 elements, expected 3");
    expect_reject(RAW(0x93, 0x01, 0x06, 0xc4, 0x00), "BUCKETS has 3 elements, expected 4");
    expect_reject(RAW(0x95, 0x01, 0x06, 0xc4, 0x00, 0xc4, 0x00, 0xc4, 0x00),
                  "BUCKETS has 5 elements, expected 4");
    expect_reject(RAW(0x95, 0x01, 0x07, 0x01, 0xc4, 0x00, 0xc4, 0x00), "FPRINTS has 5 elements, expected 6");
    expect_reject(RAW(0x97, 0x01, 0x07, 0x01, 0xc4, 0x00, 0xc4, 0x00, 0xc4, 0x00, 0xc4, 0x00),
                  "FPRINTS has 7 elements, expected 6");
    expect_reject(RAW(0x94, 0x01, 0x08, 0x01, 0xc4, 0x00), "WANT has 4 elements, expected 5");
    expect_reject(RAW(0x96, 0x01, 0x08, 0x01, 0xc4, 0x00, 0xc4, 0x00, 0x00), "WANT has 6 elements, expected 5");
    /* Right count, wrong shape: each type is read by its own layout. */
    expect_reject(RAW(0x93, 0x01, 0x05, 0x00), "GROUPS digests is an unsigned integer, expected bin");
}

static void test_reject_element_types(void **state)
{
    (void)state;
    expect_reject(RAW(0x94, 0x01, 0x04, 0xa1, '1', 0x00), "DIGEST count is a string, expected an unsigned integer");
    expect_reject(RAW(0x94, 0x01, 0x04, 0x00, 0xff), "DIGEST digest is a negative integer");
    expect_reject(RAW(0x94, 0x01, 0x04, 0x00, 0xc4, 0x00), "DIGEST digest is a binary");

    /* GROUPS as a string of the right size, an array, nil. */
    pk_t b;
    pk_init(&b, 3, HERD_MSG_GROUPS);
    assert_int_equal(msgpack_pack_str(&b.pk, 2048), 0);
    char zeros[2048] = {0};
    assert_int_equal(msgpack_pack_str_body(&b.pk, zeros, sizeof zeros), 0);
    expect_reject_pk(&b, "GROUPS digests is a string, expected bin");
    expect_reject(RAW(0x93, 0x01, 0x05, 0x90), "GROUPS digests is an array, expected bin");
    expect_reject(RAW(0x93, 0x01, 0x05, 0xc0), "GROUPS digests is nil");

    expect_reject(RAW(0x94, 0x01, 0x06, 0xa0, 0xc4, 0x00), "BUCKETS groups is a string, expected bin");
    expect_reject(RAW(0x94, 0x01, 0x06, 0xc4, 0x00, 0x90), "BUCKETS digests is an array, expected bin");

    expect_reject(RAW(0x96, 0x01, 0x07, 0xa1, '1', 0xc4, 0x00, 0xc4, 0x00, 0xc4, 0x00),
                  "FPRINTS last is a string");
    expect_reject(RAW(0x96, 0x01, 0x07, 0xc3, 0xc4, 0x00, 0xc4, 0x00, 0xc4, 0x00), "FPRINTS last is a boolean");
    expect_reject(RAW(0x96, 0x01, 0x07, 0xff, 0xc4, 0x00, 0xc4, 0x00, 0xc4, 0x00),
                  "FPRINTS last is a negative integer");
    expect_reject(RAW(0x96, 0x01, 0x07, 0x01, 0xa0, 0xc4, 0x00, 0xc4, 0x00), "FPRINTS buckets is a string");
    expect_reject(RAW(0x96, 0x01, 0x07, 0x01, 0xc4, 0x00, 0x00, 0xc4, 0x00),
                  "FPRINTS counts is an unsigned integer");
    expect_reject(RAW(0x96, 0x01, 0x07, 0x01, 0xc4, 0x00, 0xc4, 0x00, 0xc0), "FPRINTS fingerprints is nil");

    expect_reject(RAW(0x95, 0x01, 0x08, 0xca, 0, 0, 0, 0, 0xc4, 0x00, 0xc4, 0x00), "WANT last is a float");
    expect_reject(RAW(0x95, 0x01, 0x08, 0x01, 0xa0, 0xc4, 0x00), "WANT buckets is a string");
    expect_reject(RAW(0x95, 0x01, 0x08, 0x01, 0xc4, 0x00, 0x90), "WANT fingerprints is an array");
}

static void groups_of(size_t n, const char *want)
{
    pk_t b;
    pk_init(&b, 3, HERD_MSG_GROUPS);
    pk_bin(&b, NULL, n);
    expect_reject_pk(&b, want);
}

static void test_reject_groups(void **state)
{
    (void)state;
    groups_of(0, "GROUPS digests are 0 bytes, expected 2048");
    groups_of(8, "GROUPS digests are 8 bytes, expected 2048");
    groups_of(2040, "GROUPS digests are 2040 bytes, expected 2048");
    groups_of(2047, "GROUPS digests are 2047 bytes, expected 2048");
    groups_of(2049, "GROUPS digests are 2049 bytes, expected 2048");
    groups_of(2056, "GROUPS digests are 2056 bytes, expected 2048");
    groups_of(4096, "GROUPS digests are 4096 bytes, expected 2048");
}

static void buckets_of(const uint8_t *groups, size_t n, size_t digest_bytes, const char *want)
{
    pk_t b;
    pk_init(&b, 4, HERD_MSG_BUCKETS);
    pk_bin(&b, groups, n);
    pk_bin(&b, NULL, digest_bytes);
    expect_reject_pk(&b, want);
}

static void test_reject_buckets(void **state)
{
    (void)state;
    const uint8_t g[4] = {1, 2, 9, 200};
    buckets_of(g, 1, 0, "BUCKETS has 1 groups and 0 digest bytes");
    buckets_of(g, 1, 2040, "BUCKETS has 1 groups and 2040 digest bytes");
    buckets_of(g, 1, 2049, "BUCKETS has 1 groups and 2049 digest bytes");
    buckets_of(g, 2, 2048, "BUCKETS has 2 groups and 2048 digest bytes");
    buckets_of(g, 0, 2048, "BUCKETS has 0 groups and 2048 digest bytes");
    buckets_of(g, 4, 5 * 2048, "BUCKETS has 4 groups and 10240 digest bytes");

    /* Groups must strictly increase: equal, falling, falling late. */
    buckets_of((const uint8_t[]){3, 3}, 2, 2 * 2048, "BUCKETS groups are not increasing at 1");
    buckets_of((const uint8_t[]){4, 3}, 2, 2 * 2048, "BUCKETS groups are not increasing at 1");
    buckets_of((const uint8_t[]){0, 1, 255, 0}, 4, 4 * 2048, "BUCKETS groups are not increasing at 3");
    buckets_of((const uint8_t[]){255, 255}, 2, 2 * 2048, "BUCKETS groups are not increasing at 1");

    /* 257 groups (never increasing, but refused by their number first). */
    uint8_t many[257];
    for (size_t i = 0; i < 257; i++)
        many[i] = (uint8_t)i;
    buckets_of(many, 257, 257 * 2048, "BUCKETS has 257 groups and 526336 digest bytes");
    /* Every group, the last one wrapped round to 0. */
    many[255] = 0;
    buckets_of(many, 256, 256 * 2048, "BUCKETS groups are not increasing at 255");
}

/* FPRINTS with the given arrays as raw bytes (NULL arrays: pattern bytes). */
static void fprints_raw(uint64_t last, const void *b, size_t nb, const void *c, size_t nc, size_t nf,
                        const char *want)
{
    pk_t p;
    pk_init(&p, 6, HERD_MSG_FPRINTS);
    pk_uint(&p, last);
    pk_bin(&p, b, nb);
    pk_bin(&p, c, nc);
    pk_bin(&p, NULL, nf);
    expect_reject_pk(&p, want);
}

/* FPRINTS with k buckets and counts as integers, nf fingerprint bytes. */
static void fprints_of(const uint16_t *b, const uint32_t *c, size_t k, size_t nf, const char *want)
{
    unsigned char *bb = le_bytes(b, k, 2), *cb = le_bytes(c, k, 4);
    fprints_raw(1, bb, 2 * k, cb, 4 * k, nf, want);
    free(bb);
    free(cb);
}

static void test_reject_fprints(void **state)
{
    (void)state;
    fprints_raw(2, NULL, 0, NULL, 0, 0, "FPRINTS last is 2, expected 0 or 1");
    fprints_raw(255, NULL, 0, NULL, 0, 0, "FPRINTS last is 255, expected 0 or 1");
    fprints_raw(UINT64_MAX, NULL, 0, NULL, 0, 0, "FPRINTS last is 18446744073709551615, expected 0 or 1");

    /* Byte lengths that do not fit the layout. */
    fprints_raw(1, NULL, 1, NULL, 2, 0, "FPRINTS has 1 bucket, 2 count and 0 fingerprint bytes");
    fprints_raw(1, NULL, 2, NULL, 2, 0, "FPRINTS has 2 bucket, 2 count and 0 fingerprint bytes");
    fprints_raw(1, NULL, 2, NULL, 8, 0, "FPRINTS has 2 bucket, 8 count and 0 fingerprint bytes");
    fprints_raw(1, NULL, 0, NULL, 4, 0, "FPRINTS has 0 bucket, 4 count and 0 fingerprint bytes");
    fprints_raw(1, NULL, 0, NULL, 0, 8, "FPRINTS counts add up to 0 but 1 fingerprints follow");
    const uint16_t b1[1] = {9};
    const uint32_t c1[1] = {1};
    fprints_of(b1, c1, 1, 7, "FPRINTS has 2 bucket, 4 count and 7 fingerprint bytes");
    fprints_of(b1, c1, 1, 9, "FPRINTS has 2 bucket, 4 count and 9 fingerprint bytes");

    /* More buckets than there are. */
    size_t k = 65537;
    uint16_t *bk = malloc(k * sizeof *bk);
    uint32_t *ck = calloc(k, sizeof *ck);
    assert_true(bk != NULL && ck != NULL);
    for (size_t i = 0; i < k; i++)
        bk[i] = (uint16_t)i;
    fprints_of(bk, ck, k, 0, "FPRINTS has 131074 bucket, 262148 count and 0 fingerprint bytes");

    /* Buckets must strictly increase. */
    fprints_of((const uint16_t[]){4, 4}, (const uint32_t[]){0, 0}, 2, 0, "FPRINTS buckets are not increasing at 1");
    fprints_of((const uint16_t[]){5, 4}, (const uint32_t[]){0, 0}, 2, 0, "FPRINTS buckets are not increasing at 1");
    fprints_of((const uint16_t[]){0, 0xffff, 0}, (const uint32_t[]){0, 0, 0}, 3, 0,
               "FPRINTS buckets are not increasing at 2");
    /* Read as u16 little-endian, not byte by byte: 0x0100 > 0x00ff. */
    fprints_of((const uint16_t[]){0x00ff, 0x0100}, (const uint32_t[]){0, 1}, 2, 0,
               "FPRINTS counts add up to 1 but 0 fingerprints follow");

    /* Counts that do not add up, including sums past 32 bits that would
     * wrap to the right number in a 32-bit sum. */
    fprints_of((const uint16_t[]){1, 2}, (const uint32_t[]){1, 1}, 2, 8,
               "FPRINTS counts add up to 2 but 1 fingerprints follow");
    fprints_of((const uint16_t[]){1, 2}, (const uint32_t[]){1, 0}, 2, 16,
               "FPRINTS counts add up to 1 but 2 fingerprints follow");
    fprints_of((const uint16_t[]){1, 2}, (const uint32_t[]){UINT32_MAX, 1}, 2, 0,
               "FPRINTS counts add up to 4294967296 but 0 fingerprints follow");
    fprints_of((const uint16_t[]){1, 2}, (const uint32_t[]){UINT32_MAX, 2}, 2, 8,
               "FPRINTS counts add up to 4294967297 but 1 fingerprints follow");
    for (size_t i = 0; i < k; i++)
        ck[i] = UINT32_MAX;
    fprints_of(bk, ck, 65536, 0, "FPRINTS counts add up to 281474976645120 but 0 fingerprints follow");
    free(bk);
    free(ck);
}

static void want_raw(uint64_t last, size_t nb, size_t nf, const char *want)
{
    pk_t p;
    pk_init(&p, 5, HERD_MSG_WANT);
    pk_uint(&p, last);
    pk_bin(&p, NULL, nb);
    pk_bin(&p, NULL, nf);
    expect_reject_pk(&p, want);
}

static void test_reject_want(void **state)
{
    (void)state;
    want_raw(2, 0, 0, "WANT last is 2, expected 0 or 1");
    want_raw(1, 1, 4, "WANT has 1 bucket and 4 fingerprint bytes");
    want_raw(1, 2, 0, "WANT has 2 bucket and 0 fingerprint bytes");
    want_raw(1, 2, 7, "WANT has 2 bucket and 7 fingerprint bytes");
    want_raw(1, 2, 16, "WANT has 2 bucket and 16 fingerprint bytes");
    want_raw(1, 0, 8, "WANT has 0 bucket and 8 fingerprint bytes");
    want_raw(0, 200, 808, "WANT has 200 bucket and 808 fingerprint bytes");
}

/* Every strict prefix of each message is refused, and so is one byte more. */
static void test_every_prefix_rejected(void **state)
{
    (void)state;
    uint64_t d[512];
    for (size_t i = 0; i < 512; i++)
        d[i] = i * 0x9e3779b97f4a7c15u;
    const uint8_t g[2] = {0, 77};
    const uint16_t b[3] = {3, 300, 30000};
    const uint32_t c[3] = {1, 0, 2};
    char *msgs[6];
    size_t lens[6];
    assert_int_equal(herd_wire_encode_digest(1u << 20, UINT64_MAX / 3, &msgs[0], &lens[0]), 0);
    assert_int_equal(herd_wire_encode_groups(d, &msgs[1], &lens[1]), 0);
    assert_int_equal(herd_wire_encode_buckets(g, 2, d, &msgs[2], &lens[2]), 0);
    assert_int_equal(herd_wire_encode_fprints(true, b, c, 3, d, 3, &msgs[3], &lens[3]), 0);
    assert_int_equal(herd_wire_encode_want(false, b, d, 3, &msgs[4], &lens[4]), 0);
    assert_int_equal(herd_wire_encode_fprints(false, NULL, NULL, 0, NULL, 0, &msgs[5], &lens[5]), 0);
    for (size_t k = 0; k < 6; k++) {
        for (size_t cut = 0; cut < lens[k]; cut++)
            expect_reject(msgs[k], cut, cut == 0 ? "empty message" : "truncated");
        char *longer = malloc(lens[k] + 1);
        assert_non_null(longer);
        memcpy(longer, msgs[k], lens[k]);
        longer[lens[k]] = 0x00;
        expect_reject(longer, lens[k] + 1, "1 trailing bytes");
        free(longer);
        herd_msg_t m;
        char *buf;
        expect_accept(msgs[k], lens[k], &m, &buf);
        herd_wire_msg_free(&m);
        free(buf);
        free(msgs[k]);
    }
}

/* ---------------------------------------------------- encoder refusals */

static void test_encode_refusals(void **state)
{
    (void)state;
    char *out = NULL;
    size_t len = 0;
    /* Counts past the layouts are refused before any array is read. */
    assert_int_equal(herd_wire_encode_buckets(NULL, 257, NULL, &out, &len), -1);
    assert_int_equal(herd_wire_encode_fprints(true, NULL, NULL, 65537, NULL, 0, &out, &len), -1);
    assert_int_equal(herd_wire_encode_fprints(true, NULL, NULL, 0, NULL, HERD_WIRE_MAX_FRAME / 8 + 1, &out, &len),
                     -1);
    assert_int_equal(herd_wire_encode_want(true, NULL, NULL, HERD_WIRE_MAX_FRAME / 10 + 1, &out, &len), -1);
    assert_null(out);
}

/* An encoder either refuses or makes a frame the decoder takes: a WANT or
 * FPRINTS just past HERD_WIRE_MAX_FRAME must be refused, one exactly at it
 * accepted. (The WANT is 14 bytes of heads and 10 bytes a pair.) */
static void test_encode_at_frame_limit(void **state)
{
    (void)state;
    size_t fit = (HERD_WIRE_MAX_FRAME - 14) / 10; /* 14 + 10 * fit == HERD_WIRE_MAX_FRAME */
    assert_int_equal(14 + 10 * fit, HERD_WIRE_MAX_FRAME);
    uint16_t *b = calloc(fit + 1, sizeof *b);
    uint64_t *f = calloc(fit + 1, sizeof *f);
    assert_true(b != NULL && f != NULL);
    char *out = NULL;
    size_t len = 0;
    herd_msg_t m;
    char err[256];
    assert_int_equal(herd_wire_encode_want(true, b, f, fit, &out, &len), 0);
    assert_int_equal(len, HERD_WIRE_MAX_FRAME);
    assert_int_equal(herd_wire_decode(out, len, &m, err, sizeof err), 0);
    assert_int_equal(m.n_items, fit);
    herd_wire_msg_free(&m);
    free(out);
    out = NULL;
    int rc = herd_wire_encode_want(true, b, f, fit + 1, &out, &len);
    if (rc == 0) {
        int drc = herd_wire_decode(out, len, &m, err, sizeof err);
        free(out);
        fail_msg("a WANT of %zu pairs encodes to %zu bytes, which the decoder %s", fit + 1, len,
                 drc == 0 ? "takes" : "refuses");
    }
    free(b);
    free(f);

    /* FPRINTS with one bucket: 19 bytes of heads and arrays, then 8 bytes a
     * fingerprint; nf - 1 fit, nf do not. */
    size_t nf = (HERD_WIRE_MAX_FRAME - 19) / 8 + 1;
    uint64_t *fps = calloc(nf, sizeof *fps);
    assert_non_null(fps);
    const uint16_t one = 5;
    uint32_t count = (uint32_t)nf;
    rc = herd_wire_encode_fprints(false, &one, &count, 1, fps, nf, &out, &len);
    if (rc == 0) {
        int drc = herd_wire_decode(out, len, &m, err, sizeof err);
        free(out);
        fail_msg("an FPRINTS of %zu fingerprints encodes to %zu bytes, which the decoder %s", nf, len,
                 drc == 0 ? "takes" : "refuses");
    }
    count = (uint32_t)(nf - 1);
    assert_int_equal(herd_wire_encode_fprints(false, &one, &count, 1, fps, nf - 1, &out, &len), 0);
    assert_int_equal(herd_wire_decode(out, len, &m, err, sizeof err), 0);
    assert_int_equal(m.n_fps, nf - 1);
    herd_wire_msg_free(&m);
    free(out);
    free(fps);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_bytes),
        cmocka_unit_test(test_round_trip_digest),
        cmocka_unit_test(test_round_trip_groups),
        cmocka_unit_test(test_round_trip_buckets),
        cmocka_unit_test(test_round_trip_fprints),
        cmocka_unit_test(test_round_trip_want),
        cmocka_unit_test(test_decode_other_encodings),
        cmocka_unit_test(test_reject_element_counts),
        cmocka_unit_test(test_reject_element_types),
        cmocka_unit_test(test_reject_groups),
        cmocka_unit_test(test_reject_buckets),
        cmocka_unit_test(test_reject_fprints),
        cmocka_unit_test(test_reject_want),
        cmocka_unit_test(test_every_prefix_rejected),
        cmocka_unit_test(test_encode_refusals),
        cmocka_unit_test(test_encode_at_frame_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
