/* herd_places_msg: the Places worker's pipe messages. See herd_places_msg.h. */
#include "herd_places_msg.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#define REQUEST_FIELDS 6
#define CANCEL_FIELDS  2
#define CONFIG_FIELDS  5
#define ANSWER_FIELDS  8
#define ID_BYTES       8 /* one request id in an answer's ids */

static int pack_span(msgpack_packer *pk, herd_span_t s)
{
    return msgpack_pack_str(pk, s.len) | msgpack_pack_str_body(pk, s.p ? s.p : "", s.len);
}

/* Hands the packed bytes over (NULL when packing ran out of memory: the
 * sbuffer then holds a truncated frame). */
static char *take(msgpack_sbuffer *sb, bool ok, size_t *len)
{
    if (!ok || !sb->data) {
        msgpack_sbuffer_destroy(sb);
        return NULL;
    }
    *len = sb->size;
    return msgpack_sbuffer_release(sb);
}

char *herd_places_msg_encode_to_worker(const herd_places_msg_t *m, size_t *len)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int bad = 0;
    if (m->kind == HERD_PLACES_MSG_CANCEL) {
        bad |= msgpack_pack_array(&pk, CANCEL_FIELDS);
        bad |= msgpack_pack_uint8(&pk, HERD_PLACES_MSG_CANCEL);
        bad |= msgpack_pack_uint64(&pk, m->req_id);
    } else if (m->kind == HERD_PLACES_MSG_CONFIG) {
        bad |= msgpack_pack_array(&pk, CONFIG_FIELDS);
        bad |= msgpack_pack_uint8(&pk, HERD_PLACES_MSG_CONFIG);
        bad |= msgpack_pack_int64(&pk, m->timeout_ms);
        bad |= msgpack_pack_int64(&pk, m->cache_ttl_ms);
        bad |= msgpack_pack_int64(&pk, m->max_in_flight);
        bad |= msgpack_pack_int64(&pk, m->max_queued);
    } else {
        bad |= msgpack_pack_array(&pk, REQUEST_FIELDS);
        bad |= msgpack_pack_uint8(&pk, HERD_PLACES_MSG_REQUEST);
        bad |= msgpack_pack_uint64(&pk, m->req_id);
        bad |= pack_span(&pk, m->lat);
        bad |= pack_span(&pk, m->lng);
        bad |= pack_span(&pk, m->radius_km);
        bad |= msgpack_pack_uint32(&pk, m->bound);
    }
    return take(&sb, bad == 0, len);
}

static uint64_t be(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* Whether a frame is one small array of scalars and nothing else, checked
 * before msgpack-c sees it: msgpack-c allocates room for a container's
 * declared size before it looks for its elements, so a few bytes announcing
 * 2^32 entries would make it ask for tens of gigabytes. */
static bool flat_frame(const uint8_t *p, size_t len)
{
    if (len == 0 || p[0] < 0x90 || p[0] > 0x9f)
        return false;
    size_t n = p[0] & 0x0f, off = 1;
    for (size_t i = 0; i < n; i++) {
        if (off >= len)
            return false;
        uint8_t b = p[off];
        uint64_t size; /* bytes of the element, header included */
        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
            size = 1;
        else if (b >= 0xa0 && b <= 0xbf)
            size = 1u + (b & 0x1f);
        else if (b >= 0xcc && b <= 0xd3) /* uint and int 8..64 */
            size = 1u + (1u << ((b - 0xcc) & 3));
        else if (b == 0xca || b == 0xcb)
            size = b == 0xca ? 5 : 9;
        else if (b >= 0xd4 && b <= 0xd8) /* fixext 1..16 */
            size = 2u + (1u << (b - 0xd4));
        else if (b == 0xc4 || b == 0xd9 || b == 0xc5 || b == 0xda || b == 0xc6 || b == 0xdb) {
            size_t w = (b == 0xc4 || b == 0xd9) ? 1 : (b == 0xc5 || b == 0xda) ? 2 : 4;
            if (len - off < 1 + w)
                return false;
            size = 1 + w + be(p + off + 1, w);
        } else if (b >= 0xc7 && b <= 0xc9) { /* ext 8/16/32: length, type, data */
            size_t w = (size_t)1 << (b - 0xc7);
            if (len - off < 1 + w)
                return false;
            size = 2 + w + be(p + off + 1, w);
        } else
            return false; /* a container, or 0xc1 */
        if (size > len - off)
            return false;
        off += (size_t)size;
    }
    return off == len;
}

static herd_span_t obj_span(const msgpack_object *o)
{
    herd_span_t s = {o->via.str.ptr, o->via.str.size};
    return s;
}

static bool is_id(const msgpack_object *o)
{
    return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER;
}

/* An integer setting (msgpack packs a non-negative int64 as unsigned). */
static bool get_int(const msgpack_object *o, int64_t *v)
{
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        *v = o->via.i64;
    else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX)
        *v = (int64_t)o->via.u64;
    else
        return false;
    return true;
}

/* Reads the elements of a decoded array into out: 0, or -1. Sets *id
 * (never NULL) whenever the first request id can be read, even when the
 * rest is malformed, so that the request can still be answered. */
typedef int(array_fill_fn)(const msgpack_object *a, uint32_t n, void *out, uint64_t *id);

/* Decodes a frame that must be, whole, one flat array of at least `min`
 * elements, by fill. Returns fill's result, or -1. */
static int decode_array(const char *data, size_t len, uint32_t min, array_fill_fn *fill, void *out, uint64_t *id)
{
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    uint64_t unused = 0;
    int rc = -1;
    if (flat_frame((const uint8_t *)data, len) &&
        msgpack_unpack_next(&u, data, len, &off) == MSGPACK_UNPACK_SUCCESS && off == len &&
        u.data.type == MSGPACK_OBJECT_ARRAY && u.data.via.array.size >= min)
        rc = fill(u.data.via.array.ptr, u.data.via.array.size, out, id ? id : &unused);
    msgpack_unpacked_destroy(&u);
    return rc;
}

/* A node -> worker message's fields (strings stay in the frame's bytes:
 * msgpack_unpack_next leaves them there). */
static int fill_to_worker(const msgpack_object *a, uint32_t n, void *o, uint64_t *id)
{
    herd_places_msg_t *out = o;
    bool kind_ok = a[0].type == MSGPACK_OBJECT_POSITIVE_INTEGER;
    bool config = kind_ok && a[0].via.u64 == HERD_PLACES_MSG_CONFIG;
    if (kind_ok && !config && is_id(&a[1]))
        *id = a[1].via.u64;
    if (config && n == CONFIG_FIELDS && get_int(&a[1], &out->timeout_ms) && get_int(&a[2], &out->cache_ttl_ms) &&
        get_int(&a[3], &out->max_in_flight) && get_int(&a[4], &out->max_queued)) {
        out->kind = HERD_PLACES_MSG_CONFIG;
        return 0;
    }
    if (kind_ok && a[0].via.u64 == HERD_PLACES_MSG_CANCEL && n == CANCEL_FIELDS && is_id(&a[1])) {
        out->kind = HERD_PLACES_MSG_CANCEL;
        out->req_id = a[1].via.u64;
        return 0;
    }
    if (kind_ok && a[0].via.u64 == HERD_PLACES_MSG_REQUEST && n == REQUEST_FIELDS && is_id(&a[1]) &&
        a[2].type == MSGPACK_OBJECT_STR && a[3].type == MSGPACK_OBJECT_STR && a[4].type == MSGPACK_OBJECT_STR &&
        a[5].type == MSGPACK_OBJECT_POSITIVE_INTEGER && a[5].via.u64 <= UINT32_MAX) {
        out->kind = HERD_PLACES_MSG_REQUEST;
        out->req_id = a[1].via.u64;
        out->lat = obj_span(&a[2]);
        out->lng = obj_span(&a[3]);
        out->radius_km = obj_span(&a[4]);
        out->bound = (uint32_t)a[5].via.u64;
        return 0;
    }
    return -1;
}

int herd_places_msg_decode_to_worker(const char *data, size_t len, herd_places_msg_t *out, uint64_t *req_id_out)
{
    memset(out, 0, sizeof *out);
    if (req_id_out)
        *req_id_out = 0;
    int rc = decode_array(data, len, 2, fill_to_worker, out, req_id_out);
    if (rc != 0)
        memset(out, 0, sizeof *out);
    return rc;
}
herd_places_body_t *herd_places_body_new(const char *text, size_t len)
{
    herd_places_body_t *b = malloc(sizeof *b + len + 1);
    if (!b)
        return NULL;
    b->refs = 1;
    b->len = len;
    if (len)
        memcpy(b->text, text, len);
    b->text[len] = '\0';
    return b;
}

herd_places_body_t *herd_places_body_ref(herd_places_body_t *b)
{
    b->refs++;
    return b;
}

void herd_places_body_unref(herd_places_body_t **b)
{
    if (!b || !*b)
        return;
    if (--(*b)->refs == 0)
        free(*b);
    *b = NULL;
}

char *herd_places_msg_encode_answer(const herd_places_answer_t *a, size_t *len)
{
    if (!a->n_ids || a->n_ids > SIZE_MAX / ID_BYTES || a->n_ids * ID_BYTES > UINT32_MAX)
        return NULL;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int bad = 0;
    bad |= msgpack_pack_array(&pk, ANSWER_FIELDS);
    bad |= msgpack_pack_bin(&pk, a->n_ids * ID_BYTES);
    for (size_t i = 0; i < a->n_ids && !bad; i++) {
        uint8_t be8[ID_BYTES];
        for (size_t k = 0; k < ID_BYTES; k++)
            be8[k] = (uint8_t)(a->ids[i] >> (8 * (ID_BYTES - 1 - k)));
        bad |= msgpack_pack_bin_body(&pk, be8, ID_BYTES);
    }
    bad |= pack_span(&pk, a->json);
    if (a->note)
        bad |= pack_span(&pk, (herd_span_t){a->note, strlen(a->note)});
    else
        bad |= msgpack_pack_nil(&pk);
    bad |= a->cache_hit ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk);
    bad |= a->shared ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk);
    bad |= a->upstream ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk);
    bad |= msgpack_pack_double(&pk, a->upstream_ms);
    bad |= a->refused ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk);
    return take(&sb, bad == 0, len);
}

static char *dup_bytes(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        if (n)
            memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

static bool is_bool(const msgpack_object *o)
{
    return o->type == MSGPACK_OBJECT_BOOLEAN;
}

/* A worker -> node answer's fields: the ids, a copy of the body, the note
 * and the flags. */
static int fill_answer(const msgpack_object *a, uint32_t n, void *o, uint64_t *first_id)
{
    herd_places_answer_t *out = o;
    if (a[0].type != MSGPACK_OBJECT_BIN)
        return -1;
    const uint8_t *idb = (const uint8_t *)a[0].via.bin.ptr;
    size_t idlen = a[0].via.bin.size;
    if (idlen >= ID_BYTES)
        *first_id = be(idb, ID_BYTES);
    bool shape = idlen >= ID_BYTES && idlen % ID_BYTES == 0 && n == ANSWER_FIELDS && a[1].type == MSGPACK_OBJECT_STR &&
                 (a[2].type == MSGPACK_OBJECT_STR || a[2].type == MSGPACK_OBJECT_NIL) && is_bool(&a[3]) &&
                 is_bool(&a[4]) && is_bool(&a[5]) &&
                 (a[6].type == MSGPACK_OBJECT_FLOAT64 || a[6].type == MSGPACK_OBJECT_FLOAT32) && is_bool(&a[7]);
    if (!shape)
        return -1;
    out->n_ids = idlen / ID_BYTES;
    out->ids = malloc(out->n_ids * sizeof *out->ids);
    for (size_t i = 0; out->ids && i < out->n_ids; i++)
        out->ids[i] = be(idb + i * ID_BYTES, ID_BYTES);
    out->body = herd_places_body_new(a[1].via.str.ptr, a[1].via.str.size);
    if (out->body)
        out->json = (herd_span_t){out->body->text, out->body->len};
    if (a[2].type == MSGPACK_OBJECT_STR)
        out->note = dup_bytes(a[2].via.str.ptr, a[2].via.str.size);
    out->cache_hit = a[3].via.boolean;
    out->shared = a[4].via.boolean;
    out->upstream = a[5].via.boolean;
    out->upstream_ms = a[6].via.f64;
    out->refused = a[7].via.boolean;
    return out->ids && out->body && (a[2].type == MSGPACK_OBJECT_NIL || out->note) ? 0 : -1;
}

int herd_places_msg_decode_answer(const char *data, size_t len, herd_places_answer_t *out, uint64_t *first_id)
{
    memset(out, 0, sizeof *out);
    if (first_id)
        *first_id = 0;
    int rc = decode_array(data, len, 1, fill_answer, out, first_id);
    if (rc != 0) {
        herd_places_answer_free(out);
        memset(out, 0, sizeof *out);
    }
    return rc;
}

void herd_places_answer_free(herd_places_answer_t *a)
{
    if (!a)
        return;
    free(a->ids);
    a->ids = NULL;
    a->n_ids = 0;
    herd_places_body_unref(&a->body);
    a->json = (herd_span_t){NULL, 0};
    free(a->note);
    a->note = NULL;
}

void herd_places_reply_free(herd_places_reply_t *r)
{
    if (!r)
        return;
    herd_places_body_unref(&r->body);
    free(r->note);
    r->json = NULL;
    r->note = NULL;
    r->json_len = 0;
}
