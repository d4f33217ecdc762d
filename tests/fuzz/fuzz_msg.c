/* fuzz_msg: the front end <-> node batch codec (herd_msg) on arbitrary
 * bytes.
 *
 * Checks, besides the sanitizers:
 * - every span of a decoded item lies inside the input, and an IAMAT's id
 *   and position spans inside its AT line;
 * - the items read encode again to a frame that decodes to the same items. */
#include "fuzz_target.h"

#include <string.h>

#include "herd_msg.h"

static bool span_in(herd_span_t s, const uint8_t *data, size_t size)
{
    return s.len == 0 || ((const uint8_t *)s.p >= data && (const uint8_t *)s.p + s.len <= data + size);
}

static bool span_eq(herd_span_t a, herd_span_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

static bool same(const herd_msg_item_t *a, const herd_msg_item_t *b)
{
    return a->kind == b->kind && a->conn == b->conn && a->seq == b->seq && a->handle == b->handle &&
           a->time.sec == b->time.sec && a->time.nsec == b->time.nsec && span_eq(a->at, b->at) &&
           a->id_off == b->id_off && a->id_len == b->id_len && a->pos_off == b->pos_off &&
           a->pos_len == b->pos_len && span_eq(a->id, b->id) && span_eq(a->radius, b->radius) &&
           a->bound == b->bound && a->outcome == b->outcome && span_eq(a->json, b->json) && a->fd == b->fd &&
           a->serial == b->serial && span_eq(a->peer, b->peer) && a->idle_timeout_ms == b->idle_timeout_ms &&
           a->max_output_bytes == b->max_output_bytes;
}

#define MAX_ITEMS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    herd_msg_reader_t r;
    herd_msg_header_t h;
    if (herd_msg_open(&r, (const char *)data, size, &h) != 0)
        return 0;
    static herd_msg_item_t items[MAX_ITEMS];
    size_t n = 0;
    herd_msg_item_t it;
    while (n < MAX_ITEMS && herd_msg_next(&r, &it) == 1) {
        FUZZ_CHECK(span_in(it.at, data, size) && span_in(it.id, data, size) && span_in(it.radius, data, size) &&
                       span_in(it.json, data, size) && span_in(it.peer, data, size),
                   "a span outside the input");
        if (it.kind == HERD_MSG_IAMAT && h.dir == HERD_MSG_TO_NODE)
            FUZZ_CHECK((uint64_t)it.id_off + it.id_len <= it.at.len && (uint64_t)it.pos_off + it.pos_len <= it.at.len,
                       "an IAMAT span outside its AT line");
        items[n++] = it;
    }
    herd_msg_buf_t b = {0};
    herd_msg_begin(&b, &h);
    for (size_t i = 0; i < n; i++)
        herd_msg_put(&b, h.dir, &items[i]);
    if (!b.oom) {
        herd_msg_reader_t r2;
        herd_msg_header_t h2;
        FUZZ_CHECK(herd_msg_open(&r2, b.p, b.len, &h2) == 0, "re-encoded header refused");
        FUZZ_CHECK(h2.dir == h.dir && h2.fe == h.fe && h2.invalid == h.invalid && h2.drain == h.drain,
                   "header changed");
        for (size_t i = 0; i < n; i++) {
            FUZZ_CHECK(herd_msg_next(&r2, &it) == 1, "re-encoded item %zu refused", i);
            FUZZ_CHECK(same(&it, &items[i]), "item %zu changed", i);
        }
        FUZZ_CHECK(herd_msg_next(&r2, &it) == 0, "re-encoded frame longer");
    }
    herd_msg_buf_free(&b);
    return 0;
}
