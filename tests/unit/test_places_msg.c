/* Unit tests for herd_places_msg: the Places worker's pipe messages round
 * trip, and malformed frames are refused with the id when it can be read. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

#include "herd_places_msg.h"

static herd_span_t span(const char *s)
{
    return (herd_span_t){s, strlen(s)};
}

static void assert_span(herd_span_t s, const char *want)
{
    assert_int_equal(s.len, strlen(want));
    assert_memory_equal(s.p, want, s.len);
}

static void test_request_round_trip(void **state)
{
    (void)state;
    herd_places_msg_t m = {.kind = HERD_PLACES_MSG_REQUEST, .req_id = UINT64_MAX, .lat = span("+34.068930"),
                           .lng = span("-118.445127"), .radius_km = span("10.000"), .bound = 20};
    size_t len = 0;
    char *frame = herd_places_msg_encode_to_worker(&m, &len);
    assert_non_null(frame);
    herd_places_msg_t d;
    uint64_t id = 7;
    assert_int_equal(herd_places_msg_decode_to_worker(frame, len, &d, &id), 0);
    assert_int_equal(id, UINT64_MAX);
    assert_int_equal(d.kind, HERD_PLACES_MSG_REQUEST);
    assert_int_equal(d.req_id, UINT64_MAX);
    assert_span(d.lat, "+34.068930");
    assert_span(d.lng, "-118.445127");
    assert_span(d.radius_km, "10.000");
    assert_int_equal(d.bound, 20);
    /* The spans point into the frame itself. */
    assert_true(d.lat.p >= frame && d.lat.p + d.lat.len <= frame + len);
    free(frame);
}

static void test_cancel_round_trip(void **state)
{
    (void)state;
    herd_places_msg_t m = {.kind = HERD_PLACES_MSG_CANCEL, .req_id = 42};
    size_t len = 0;
    char *frame = herd_places_msg_encode_to_worker(&m, &len);
    assert_non_null(frame);
    herd_places_msg_t d;
    assert_int_equal(herd_places_msg_decode_to_worker(frame, len, &d, NULL), 0);
    assert_int_equal(d.kind, HERD_PLACES_MSG_CANCEL);
    assert_int_equal(d.req_id, 42);
    /* A truncated frame is refused. */
    assert_int_equal(herd_places_msg_decode_to_worker(frame, len - 1, &d, NULL), -1);
    free(frame);
}

static void test_config_round_trip(void **state)
{
    (void)state;
    herd_places_msg_t m = {.kind = HERD_PLACES_MSG_CONFIG, .timeout_ms = 200, .cache_ttl_ms = 0,
                           .max_in_flight = 64, .max_queued = -1};
    size_t len = 0;
    char *frame = herd_places_msg_encode_to_worker(&m, &len);
    assert_non_null(frame);
    herd_places_msg_t d;
    uint64_t id = 7;
    assert_int_equal(herd_places_msg_decode_to_worker(frame, len, &d, &id), 0);
    assert_int_equal(id, 0); /* a config carries no request id */
    assert_int_equal(d.kind, HERD_PLACES_MSG_CONFIG);
    assert_int_equal(d.timeout_ms, 200);
    assert_int_equal(d.cache_ttl_ms, 0);
    assert_int_equal(d.max_in_flight, 64);
    assert_int_equal(d.max_queued, -1);
    assert_int_equal(herd_places_msg_decode_to_worker(frame, len - 1, &d, NULL), -1);
    free(frame);
}

static void test_answer_round_trip(void **state)
{
    (void)state;
    const char json[] = "{\"results\": [], \"status\": \"ZERO_RESULTS\"}\0tail";
    uint64_t ids[] = {9, UINT64_MAX, 1};
    herd_places_answer_t a = {.ids = ids, .n_ids = 3, .json = {json, sizeof json - 1}, .note = "a note",
                              .shared = true, .upstream = true, .upstream_ms = 12.5};
    size_t len = 0;
    char *frame = herd_places_msg_encode_answer(&a, &len);
    assert_non_null(frame);
    herd_places_answer_t d;
    uint64_t first = 0;
    assert_int_equal(herd_places_msg_decode_answer(frame, len, &d, &first), 0);
    assert_int_equal(first, 9);
    assert_int_equal(d.n_ids, 3);
    assert_int_equal(d.ids[0], 9);
    assert_true(d.ids[1] == UINT64_MAX);
    assert_int_equal(d.ids[2], 1);
    assert_int_equal(d.json.len, sizeof json - 1); /* a NUL byte inside is kept */
    assert_memory_equal(d.json.p, json, d.json.len);
    assert_non_null(d.body);
    assert_int_equal(d.body->refs, 1);
    assert_int_equal(d.body->text[d.body->len], '\0');
    assert_string_equal(d.note, "a note");
    assert_false(d.cache_hit);
    assert_true(d.shared);
    assert_true(d.upstream);
    assert_false(d.refused);
    assert_true(d.upstream_ms == 12.5);
    /* The body is shared by reference, not copied. */
    herd_places_body_t *b = herd_places_body_ref(d.body);
    assert_int_equal(b->refs, 2);
    herd_places_answer_free(&d);
    assert_null(d.body);
    assert_int_equal(b->refs, 1);
    herd_places_body_unref(&b);
    assert_null(b);
    free(frame);

    a.note = NULL;
    a.n_ids = 1;
    a.refused = true;
    frame = herd_places_msg_encode_answer(&a, &len);
    assert_int_equal(herd_places_msg_decode_answer(frame, len, &d, NULL), 0);
    assert_null(d.note);
    assert_true(d.refused);
    assert_int_equal(d.n_ids, 1);
    herd_places_answer_free(&d);
    free(frame);

    /* An answer for nobody is not made. */
    a.n_ids = 0;
    assert_null(herd_places_msg_encode_answer(&a, &len));
}

/* Packs an arbitrary array of small objects for the malformed cases. */
static char *pack(size_t *len, void (*fill)(msgpack_packer *))
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    fill(&pk);
    *len = sb.size;
    return msgpack_sbuffer_release(&sb);
}

static void fill_bad_request(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 6);
    msgpack_pack_uint8(pk, HERD_PLACES_MSG_REQUEST);
    msgpack_pack_uint64(pk, 77);
    msgpack_pack_str_with_body(pk, "+1", 2);
    msgpack_pack_int(pk, 5); /* not a string */
    msgpack_pack_str_with_body(pk, "1", 1);
    msgpack_pack_uint32(pk, 1);
}

static void fill_bad_answer(msgpack_packer *pk)
{
    static const char id88[8] = {0, 0, 0, 0, 0, 0, 0, 88};
    msgpack_pack_array(pk, 8);
    msgpack_pack_bin_with_body(pk, id88, 8);
    msgpack_pack_nil(pk); /* json must be a string */
    msgpack_pack_nil(pk);
    msgpack_pack_false(pk);
    msgpack_pack_false(pk);
    msgpack_pack_false(pk);
    msgpack_pack_double(pk, 0);
    msgpack_pack_false(pk);
}

static void fill_ragged_ids(msgpack_packer *pk)
{
    static const char ids[12] = {0, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4};
    msgpack_pack_array(pk, 8);
    msgpack_pack_bin_with_body(pk, ids, 12); /* not a whole number of ids */
    msgpack_pack_str_with_body(pk, "{}", 2);
    msgpack_pack_nil(pk);
    msgpack_pack_false(pk);
    msgpack_pack_false(pk);
    msgpack_pack_false(pk);
    msgpack_pack_double(pk, 0);
    msgpack_pack_false(pk);
}

static void fill_unknown_kind(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 2);
    msgpack_pack_uint8(pk, 9);
    msgpack_pack_uint64(pk, 5);
}

static void test_malformed_keeps_the_id(void **state)
{
    (void)state;
    size_t len;
    herd_places_msg_t d;
    uint64_t id = 0;
    char *f = pack(&len, fill_bad_request);
    assert_int_equal(herd_places_msg_decode_to_worker(f, len, &d, &id), -1);
    assert_int_equal(id, 77);
    free(f);

    f = pack(&len, fill_unknown_kind);
    assert_int_equal(herd_places_msg_decode_to_worker(f, len, &d, &id), -1);
    assert_int_equal(id, 5);
    free(f);

    herd_places_answer_t a;
    uint64_t first = 0;
    f = pack(&len, fill_bad_answer);
    assert_int_equal(herd_places_msg_decode_answer(f, len, &a, &first), -1);
    assert_int_equal(first, 88);
    assert_null(a.ids);
    assert_null(a.body);
    assert_null(a.note);
    free(f);

    f = pack(&len, fill_ragged_ids);
    assert_int_equal(herd_places_msg_decode_answer(f, len, &a, &first), -1);
    assert_int_equal(first, 5);
    assert_null(a.ids);
    free(f);

    assert_int_equal(herd_places_msg_decode_to_worker("\xc1", 1, &d, &id), -1);
    assert_int_equal(id, 0);
    assert_int_equal(herd_places_msg_decode_answer("", 0, &a, &first), -1);
    assert_int_equal(first, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_round_trip),
        cmocka_unit_test(test_cancel_round_trip),
        cmocka_unit_test(test_config_round_trip),
        cmocka_unit_test(test_answer_round_trip),
        cmocka_unit_test(test_malformed_keeps_the_id),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
