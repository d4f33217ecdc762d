/* herd_places_msg: the Places worker's pipe messages. See herd_places_msg.h. */
#include "herd_places_msg.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#define REQUEST_FIELDS 6
#define CANCEL_FIELDS  2
#define REPLY_FIELDS   7

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

int herd_places_msg_decode_to_worker(const char *data, size_t len, herd_places_msg_t *out, uint64_t *req_id_out)
{
    memset(out, 0, sizeof *out);
    if (req_id_out)
        *req_id_out = 0;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    int rc = -1;
    if (flat_frame((const uint8_t *)data, len) &&
        msgpack_unpack_next(&u, data, len, &off) == MSGPACK_UNPACK_SUCCESS && off == len &&
        u.data.type == MSGPACK_OBJECT_ARRAY && u.data.via.array.size >= 2) {
        const msgpack_object *a = u.data.via.array.ptr;
        uint32_t n = u.data.via.array.size;
        bool kind_ok = a[0].type == MSGPACK_OBJECT_POSITIVE_INTEGER;
        if (kind_ok && is_id(&a[1]) && req_id_out)
            *req_id_out = a[1].via.u64;
        if (kind_ok && a[0].via.u64 == HERD_PLACES_MSG_CANCEL && n == CANCEL_FIELDS && is_id(&a[1])) {
            out->kind = HERD_PLACES_MSG_CANCEL;
            out->req_id = a[1].via.u64;
            rc = 0;
        } else if (kind_ok && a[0].via.u64 == HERD_PLACES_MSG_REQUEST && n == REQUEST_FIELDS && is_id(&a[1]) &&
                   a[2].type == MSGPACK_OBJECT_STR && a[3].type == MSGPACK_OBJECT_STR &&
                   a[4].type == MSGPACK_OBJECT_STR && a[5].type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
                   a[5].via.u64 <= UINT32_MAX) {
            out->kind = HERD_PLACES_MSG_REQUEST;
            out->req_id = a[1].via.u64;
            /* msgpack_unpack_next leaves strings in the input bytes. */
            out->lat = obj_span(&a[2]);
            out->lng = obj_span(&a[3]);
            out->radius_km = obj_span(&a[4]);
            out->bound = (uint32_t)a[5].via.u64;
            rc = 0;
        }
    }
    msgpack_unpacked_destroy(&u);
    if (rc != 0)
        memset(out, 0, sizeof *out);
    return rc;
}

char *herd_places_msg_encode_reply(const herd_places_reply_t *r, size_t *len)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int bad = 0;
    bad |= msgpack_pack_array(&pk, REPLY_FIELDS);
    bad |= msgpack_pack_uint64(&pk, r->req_id);
    bad |= pack_span(&pk, (herd_span_t){r->json, r->json_len});
    if (r->note)
        bad |= pack_span(&pk, (herd_span_t){r->note, strlen(r->note)});
    else
        bad |= msgpack_pack_nil(&pk);
    bad |= r->cache_hit ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk);
    bad |= r->shared ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk);
    bad |= r->upstream ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk);
    bad |= msgpack_pack_double(&pk, r->upstream_ms);
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

int herd_places_msg_decode_reply(const char *data, size_t len, herd_places_reply_t *out)
{
    memset(out, 0, sizeof *out);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    int rc = -1;
    if (flat_frame((const uint8_t *)data, len) &&
        msgpack_unpack_next(&u, data, len, &off) == MSGPACK_UNPACK_SUCCESS && off == len &&
        u.data.type == MSGPACK_OBJECT_ARRAY && u.data.via.array.size >= 1 && is_id(&u.data.via.array.ptr[0])) {
        const msgpack_object *a = u.data.via.array.ptr;
        out->req_id = a[0].via.u64;
        bool shape = u.data.via.array.size == REPLY_FIELDS && a[1].type == MSGPACK_OBJECT_STR &&
                     (a[2].type == MSGPACK_OBJECT_STR || a[2].type == MSGPACK_OBJECT_NIL) &&
                     a[3].type == MSGPACK_OBJECT_BOOLEAN && a[4].type == MSGPACK_OBJECT_BOOLEAN &&
                     a[5].type == MSGPACK_OBJECT_BOOLEAN &&
                     (a[6].type == MSGPACK_OBJECT_FLOAT64 || a[6].type == MSGPACK_OBJECT_FLOAT32);
        if (shape) {
            out->json = dup_bytes(a[1].via.str.ptr, a[1].via.str.size);
            out->json_len = a[1].via.str.size;
            if (a[2].type == MSGPACK_OBJECT_STR)
                out->note = dup_bytes(a[2].via.str.ptr, a[2].via.str.size);
            out->cache_hit = a[3].via.boolean;
            out->shared = a[4].via.boolean;
            out->upstream = a[5].via.boolean;
            out->upstream_ms = a[6].via.f64;
            if (out->json && (a[2].type == MSGPACK_OBJECT_NIL || out->note))
                rc = 0;
        }
    }
    msgpack_unpacked_destroy(&u);
    if (rc != 0) {
        uint64_t id = out->req_id;
        herd_places_reply_free(out);
        memset(out, 0, sizeof *out);
        out->req_id = id;
    }
    return rc;
}

void herd_places_reply_free(herd_places_reply_t *r)
{
    if (!r)
        return;
    free(r->json);
    free(r->note);
    r->json = NULL;
    r->note = NULL;
    r->json_len = 0;
}
