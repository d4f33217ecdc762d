/* fuzz_places_msg: the Places worker's pipe codec (herd_places_msg) on
 * arbitrary bytes, both directions.
 *
 * Checks, besides the sanitizers:
 * - a frame the decoder accepts encodes again to a frame that decodes to the
 *   same message (requests, cancels and replies);
 * - decoded request spans lie inside the input bytes;
 * - a refused frame leaves nothing owned (no json, no note). */
#include "fuzz_target.h"

#include <string.h>

#include "herd_places_msg.h"

static bool span_in(herd_span_t s, const uint8_t *data, size_t size)
{
    return s.len == 0 || ((const uint8_t *)s.p >= data && (const uint8_t *)s.p + s.len <= data + size);
}

static bool span_eq(herd_span_t a, herd_span_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

static void to_worker(const uint8_t *data, size_t size)
{
    herd_places_msg_t m;
    uint64_t id = 0;
    if (herd_places_msg_decode_to_worker((const char *)data, size, &m, &id) != 0)
        return;
    FUZZ_CHECK(id == m.req_id, "id %llu vs %llu", (unsigned long long)id, (unsigned long long)m.req_id);
    if (m.kind == HERD_PLACES_MSG_REQUEST)
        FUZZ_CHECK(span_in(m.lat, data, size) && span_in(m.lng, data, size) && span_in(m.radius_km, data, size),
                   "a span outside the input");
    size_t len = 0;
    char *again = herd_places_msg_encode_to_worker(&m, &len);
    if (!again)
        return;
    herd_places_msg_t m2;
    FUZZ_CHECK(herd_places_msg_decode_to_worker(again, len, &m2, NULL) == 0, "re-encoded message refused");
    FUZZ_CHECK(m2.kind == m.kind && m2.req_id == m.req_id, "kind or id changed");
    if (m.kind == HERD_PLACES_MSG_REQUEST)
        FUZZ_CHECK(span_eq(m.lat, m2.lat) && span_eq(m.lng, m2.lng) && span_eq(m.radius_km, m2.radius_km) &&
                       m.bound == m2.bound,
                   "request fields changed");
    free(again);
}

static void reply(const uint8_t *data, size_t size)
{
    herd_places_reply_t r;
    if (herd_places_msg_decode_reply((const char *)data, size, &r) != 0) {
        FUZZ_CHECK(!r.json && !r.note, "a refused reply owns memory");
        return;
    }
    FUZZ_CHECK(r.json && r.json[r.json_len] == '\0', "json not NUL-terminated");
    size_t len = 0;
    char *again = herd_places_msg_encode_reply(&r, &len);
    if (again) {
        herd_places_reply_t r2;
        FUZZ_CHECK(herd_places_msg_decode_reply(again, len, &r2) == 0, "re-encoded reply refused");
        FUZZ_CHECK(r2.req_id == r.req_id && r2.json_len == r.json_len && memcmp(r2.json, r.json, r.json_len) == 0,
                   "reply changed");
        /* A note with a NUL byte is cut there by the encoder (it is a C string). */
        FUZZ_CHECK((r.note == NULL) == (r2.note == NULL), "note appeared or vanished");
        FUZZ_CHECK(r2.cache_hit == r.cache_hit && r2.shared == r.shared && r2.upstream == r.upstream,
                   "flags changed");
        herd_places_reply_free(&r2);
        free(again);
    }
    herd_places_reply_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    to_worker(data, size);
    reply(data, size);
    return 0;
}
