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

static void test_reply_round_trip(void **state)
{
    (void)state;
    const char json[] = "{\"results\": [], \"status\": \"ZERO_RESULTS\"}\0tail";
    herd_places_reply_t r = {.req_id = 9, .json = (char *)json, .json_len = sizeof json - 1, .note = "a note",
                             .shared = true, .upstream_ms = 12.5};
    size_t len = 0;
    char *frame = herd_places_msg_encode_reply(&r, &len);
    assert_non_null(frame);
    herd_places_reply_t d;
    assert_int_equal(herd_places_msg_decode_reply(frame, len, &d), 0);
    assert_int_equal(d.req_id, 9);
    assert_int_equal(d.json_len, sizeof json - 1); /* a NUL byte inside is kept */
    assert_memory_equal(d.json, json, d.json_len);
    assert_int_equal(d.json[d.json_len], '\0');
    assert_string_equal(d.note, "a note");
    assert_false(d.cache_hit);
    assert_true(d.shared);
    assert_false(d.upstream);
    assert_true(d.upstream_ms == 12.5);
    herd_places_reply_free(&d);
    free(frame);

    r.note = NULL;
    frame = herd_places_msg_encode_reply(&r, &len);
    assert_int_equal(herd_places_msg_decode_reply(frame, len, &d), 0);
    assert_null(d.note);
    herd_places_reply_free(&d);
    free(frame);
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

static void fill_bad_reply(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 7);
    msgpack_pack_uint64(pk, 88);
    msgpack_pack_nil(pk); /* json must be a string */
    msgpack_pack_nil(pk);
    msgpack_pack_false(pk);
    msgpack_pack_false(pk);
    msgpack_pack_false(pk);
    msgpack_pack_double(pk, 0);
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

    herd_places_reply_t r;
    f = pack(&len, fill_bad_reply);
    assert_int_equal(herd_places_msg_decode_reply(f, len, &r), -1);
    assert_int_equal(r.req_id, 88);
    assert_null(r.json);
    assert_null(r.note);
    free(f);

    assert_int_equal(herd_places_msg_decode_to_worker("\xc1", 1, &d, &id), -1);
    assert_int_equal(id, 0);
    assert_int_equal(herd_places_msg_decode_reply("", 0, &r), -1);
    assert_int_equal(r.req_id, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_round_trip),
        cmocka_unit_test(test_cancel_round_trip),
        cmocka_unit_test(test_reply_round_trip),
        cmocka_unit_test(test_malformed_keeps_the_id),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
