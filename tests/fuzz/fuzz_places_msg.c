/* fuzz_places_msg: the Places worker's pipe codec (herd_places_msg) on
 * arbitrary bytes, both directions.
 *
 * Checks, besides the sanitizers:
 * - a frame the decoder accepts encodes again to a frame that decodes to the
 *   same message (requests, cancels and replies);
 * - decoded request spans lie inside the input bytes;
 * - a refused frame leaves nothing owned (no ids, body or note). */
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
    if (m.kind == HERD_PLACES_MSG_CONFIG)
        FUZZ_CHECK(m.timeout_ms == m2.timeout_ms && m.cache_ttl_ms == m2.cache_ttl_ms &&
                       m.max_in_flight == m2.max_in_flight && m.max_queued == m2.max_queued,
                   "config fields changed");
    free(again);
}

static void answer(const uint8_t *data, size_t size)
{
    herd_places_answer_t a;
    uint64_t first = 0;
    if (herd_places_msg_decode_answer((const char *)data, size, &a, &first) != 0) {
        FUZZ_CHECK(!a.ids && !a.body && !a.note, "a refused answer owns memory");
        return;
    }
    FUZZ_CHECK(a.n_ids >= 1 && a.ids[0] == first, "ids and first id disagree");
    FUZZ_CHECK(a.body && a.body->refs == 1 && a.body->text[a.body->len] == '\0' && a.json.p == a.body->text,
               "body not NUL-terminated or not the text");
    size_t len = 0;
    char *again = herd_places_msg_encode_answer(&a, &len);
    if (again) {
        herd_places_answer_t a2;
        FUZZ_CHECK(herd_places_msg_decode_answer(again, len, &a2, NULL) == 0, "re-encoded answer refused");
        FUZZ_CHECK(a2.n_ids == a.n_ids && memcmp(a2.ids, a.ids, a.n_ids * sizeof *a.ids) == 0, "ids changed");
        FUZZ_CHECK(a2.json.len == a.json.len && memcmp(a2.json.p, a.json.p, a.json.len) == 0, "json changed");
        /* A note with a NUL byte is cut there by the encoder (it is a C string). */
        FUZZ_CHECK((a.note == NULL) == (a2.note == NULL), "note appeared or vanished");
        FUZZ_CHECK(a2.cache_hit == a.cache_hit && a2.shared == a.shared && a2.upstream == a.upstream &&
                       a2.refused == a.refused,
                   "flags changed");
        herd_places_answer_free(&a2);
        free(again);
    }
    herd_places_answer_free(&a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    to_worker(data, size);
    answer(data, size);
    return 0;
}
