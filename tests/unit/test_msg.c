/* Unit tests for herd_msg: the front end <-> node batches round trip item
 * by item in both directions, many items make one frame, and malformed or
 * truncated frames are refused without reading past their end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "herd_msg.h"

static herd_span_t span(const char *s)
{
    return (herd_span_t){s, strlen(s)};
}

static void assert_span(herd_span_t s, const char *want)
{
    assert_int_equal(s.len, strlen(want));
    assert_memory_equal(s.p, want, s.len);
}

static const char AT[] = "AT Bailey +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503";

static void test_to_node_round_trip(void **state)
{
    (void)state;
    herd_msg_buf_t b = {0};
    herd_msg_header_t h = {.dir = HERD_MSG_TO_NODE, .fe = 3};
    herd_msg_begin(&b, &h);
    herd_msg_item_t ia = {.kind = HERD_MSG_IAMAT, .conn = (7ull << 32) | 12, .seq = 300, .handle = 65536,
                          .time = {1621464827, 959498503}, .at = span(AT), .id_off = 23, .id_len = 16,
                          .pos_off = 40, .pos_len = 21};
    herd_msg_put(&b, HERD_MSG_TO_NODE, &ia);
    herd_msg_item_t wa = {.kind = HERD_MSG_WHATSAT, .conn = 1, .seq = 0, .handle = 0,
                          .id = span("kiwi.cs.ucla.edu"), .radius = span("10.5"), .bound = 20};
    herd_msg_put(&b, HERD_MSG_TO_NODE, &wa);
    herd_msg_item_t cl = {.kind = HERD_MSG_CLOSED, .conn = UINT64_MAX, .outcome = 1};
    herd_msg_put(&b, HERD_MSG_TO_NODE, &cl);
    assert_false(b.oom);
    assert_int_equal(b.items, 3);
    h.invalid = 70000; /* counts known at the end of the batch */
    h.drain = 5;
    herd_msg_set_header(&b, &h);

    herd_msg_reader_t r;
    herd_msg_header_t g;
    assert_int_equal(herd_msg_open(&r, b.p, b.len, &g), 0);
    assert_int_equal(g.dir, HERD_MSG_TO_NODE);
    assert_int_equal(g.fe, 3);
    assert_int_equal(g.invalid, 70000);
    assert_int_equal(g.drain, 5);
    herd_msg_item_t it;
    assert_int_equal(herd_msg_next(&r, &it), 1);
    assert_int_equal(it.kind, HERD_MSG_IAMAT);
    assert_int_equal(it.conn, ia.conn);
    assert_int_equal(it.seq, 300);
    assert_int_equal(it.handle, 65536);
    assert_int_equal(it.time.sec, 1621464827);
    assert_int_equal(it.time.nsec, 959498503);
    assert_span(it.at, AT);
    assert_memory_equal(it.at.p + it.id_off, "kiwi.cs.ucla.edu", it.id_len);
    assert_memory_equal(it.at.p + it.pos_off, "+34.068930-118.445127", it.pos_len);
    assert_int_equal(herd_msg_next(&r, &it), 1);
    assert_int_equal(it.kind, HERD_MSG_WHATSAT);
    assert_span(it.id, "kiwi.cs.ucla.edu");
    assert_span(it.radius, "10.5");
    assert_int_equal(it.bound, 20);
    assert_int_equal(herd_msg_next(&r, &it), 1);
    assert_int_equal(it.kind, HERD_MSG_CLOSED);
    assert_int_equal(it.conn, UINT64_MAX);
    assert_int_equal(it.outcome, 1);
    assert_int_equal(herd_msg_next(&r, &it), 0);
    herd_msg_buf_free(&b);
}

static void test_to_fe_round_trip(void **state)
{
    (void)state;
    herd_msg_buf_t b = {0};
    herd_msg_header_t h = {.dir = HERD_MSG_TO_FE, .fe = 0};
    herd_msg_begin(&b, &h);
    char json[70000];
    memset(json, 'x', sizeof json);
    herd_msg_item_t items[] = {
        {.kind = HERD_MSG_IAMAT, .conn = 9, .seq = 1, .handle = 2, .outcome = HERD_MSG_REFUSED},
        {.kind = HERD_MSG_WHATSAT, .conn = 9, .seq = 2, .handle = 3, .outcome = HERD_MSG_ANSWERED, .at = span(AT),
         .json = {json, sizeof json}},
        {.kind = HERD_MSG_ADOPT, .fd = 1023, .serial = 1ull << 40, .peer = span("[::1]:5000")},
        {.kind = HERD_MSG_LIMITS, .idle_timeout_ms = 30000, .max_output_bytes = 1 << 20},
        {.kind = HERD_MSG_DRAIN},
        {.kind = HERD_MSG_STOP},
    };
    for (size_t i = 0; i < sizeof items / sizeof items[0]; i++)
        herd_msg_put(&b, HERD_MSG_TO_FE, &items[i]);
    herd_msg_reader_t r;
    herd_msg_header_t g;
    assert_int_equal(herd_msg_open(&r, b.p, b.len, &g), 0);
    assert_int_equal(g.dir, HERD_MSG_TO_FE);
    herd_msg_item_t it;
    assert_int_equal(herd_msg_next(&r, &it), 1);
    assert_int_equal(it.kind, HERD_MSG_IAMAT);
    assert_int_equal(it.outcome, HERD_MSG_REFUSED);
    assert_int_equal(it.handle, 2);
    assert_int_equal(herd_msg_next(&r, &it), 1);
    assert_int_equal(it.kind, HERD_MSG_WHATSAT);
    assert_span(it.at, AT);
    assert_int_equal(it.json.len, sizeof json);
    assert_int_equal(herd_msg_next(&r, &it), 1);
    assert_int_equal(it.kind, HERD_MSG_ADOPT);
    assert_int_equal(it.fd, 1023);
    assert_int_equal(it.serial, 1ull << 40);
    assert_span(it.peer, "[::1]:5000");
    assert_int_equal(herd_msg_next(&r, &it), 1);
    assert_int_equal(it.kind, HERD_MSG_LIMITS);
    assert_int_equal(it.idle_timeout_ms, 30000);
    assert_int_equal(it.max_output_bytes, 1 << 20);
    assert_int_equal(herd_msg_next(&r, &it), 1);
    assert_int_equal(it.kind, HERD_MSG_DRAIN);
    assert_int_equal(herd_msg_next(&r, &it), 1);
    assert_int_equal(it.kind, HERD_MSG_STOP);
    assert_int_equal(herd_msg_next(&r, &it), 0);
    herd_msg_buf_free(&b);
}

/* Every cut of a valid frame either ends cleanly between items or is
 * refused; nothing is read past the cut (ASan watches the copy). */
static void test_truncated(void **state)
{
    (void)state;
    herd_msg_buf_t b = {0};
    herd_msg_header_t h = {.dir = HERD_MSG_TO_NODE, .fe = 1};
    herd_msg_begin(&b, &h);
    herd_msg_item_t ia = {.kind = HERD_MSG_IAMAT, .conn = 1, .seq = 2, .handle = 3, .time = {5, 6},
                          .at = span(AT), .id_off = 23, .id_len = 16, .pos_off = 40, .pos_len = 21};
    herd_msg_put(&b, HERD_MSG_TO_NODE, &ia);
    size_t whole = b.len;
    for (size_t cut = 0; cut < whole; cut++) {
        char *copy = malloc(cut ? cut : 1);
        memcpy(copy, b.p, cut);
        herd_msg_reader_t r;
        herd_msg_header_t g;
        herd_msg_item_t it;
        if (herd_msg_open(&r, copy, cut, &g) == 0)
            assert_true(herd_msg_next(&r, &it) <= 0);
        free(copy);
    }
    herd_msg_buf_free(&b);
}

static void test_malformed(void **state)
{
    (void)state;
    herd_msg_reader_t r;
    herd_msg_header_t g;
    herd_msg_item_t it;
    /* a wrong direction */
    assert_int_equal(herd_msg_open(&r, "\x03\x00\x00\x00", 4, &g), -1);
    /* an unknown kind */
    assert_int_equal(herd_msg_open(&r, "\x01\x00\x00\x00\x09", 5, &g), 0);
    assert_int_equal(herd_msg_next(&r, &it), -1);
    assert_int_equal(herd_msg_next(&r, &it), 0);
    /* ADOPT sent to the node */
    assert_int_equal(herd_msg_open(&r, "\x01\x00\x00\x00\x04\x05\x01\xa0", 8, &g), 0);
    assert_int_equal(herd_msg_next(&r, &it), -1);
    /* a WHATSAT bound of 21 */
    assert_int_equal(herd_msg_open(&r, "\x01\x00\x00\x00\x02\x01\x01\x01\xa1x\xa1\x31\x15", 13, &g), 0);
    assert_int_equal(herd_msg_next(&r, &it), -1);
    /* an IAMAT whose position lies outside its AT line */
    assert_int_equal(herd_msg_open(&r, "\x01\x00\x00\x00\x01\x01\x01\x01\x05\x06\x00\x01\x02\x05\xa4" "AT x", 19, &g),
                     0);
    assert_int_equal(herd_msg_next(&r, &it), -1);
    /* a string announcing more bytes than the frame holds */
    assert_int_equal(herd_msg_open(&r, "\x02\x00\x00\x00\x02\x01\x01\x01\x00\xdb\xff\xff\xff\xff", 14, &g), 0);
    assert_int_equal(herd_msg_next(&r, &it), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_to_node_round_trip),
        cmocka_unit_test(test_to_fe_round_trip),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
