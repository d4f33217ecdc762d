/* herd_msg: the front end <-> node batches. See herd_msg.h.
 *
 * The msgpack is written and read here by hand: a frame only holds unsigned
 * integers and strings, and a hot path that packs a few hundred thousand
 * commands a second should not allocate per value nor build an object tree
 * to read them back. The bytes are standard msgpack (any msgpack reader can
 * dump a frame as a sequence of values). */
#include "herd_msg.h"
#include "herd_proto.h"

#include <stdlib.h>
#include <string.h>

/* ---- writing ---- */

static bool reserve(herd_msg_buf_t *b, size_t n)
{
    if (b->oom)
        return false;
    if (b->len + n <= b->cap)
        return true;
    size_t ncap = b->cap ? b->cap : 4096;
    while (ncap < b->len + n)
        ncap *= 2;
    char *p = realloc(b->p, ncap);
    if (!p) {
        b->oom = true;
        return false;
    }
    b->p = p;
    b->cap = ncap;
    return true;
}

static void put_be(uint8_t *o, uint64_t v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        o[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
}

/* The most bytes put_uint and put_str write (the string's own bytes aside). */
#define UINT_MAX_BYTES 9
#define STR_HEAD_MAX_BYTES 5

/* Writes an unsigned integer at o (room checked by the caller); returns the
 * end. */
static uint8_t *put_uint(uint8_t *o, uint64_t v)
{
    if (v < 0x80) {
        *o = (uint8_t)v;
        return o + 1;
    }
    if (v <= 0xff) {
        o[0] = 0xcc;
        o[1] = (uint8_t)v;
        return o + 2;
    }
    if (v <= 0xffff) {
        o[0] = 0xcd;
        put_be(o + 1, v, 2);
        return o + 3;
    }
    if (v <= 0xffffffffu) {
        o[0] = 0xce;
        put_be(o + 1, v, 4);
        return o + 5;
    }
    o[0] = 0xcf;
    put_be(o + 1, v, 8);
    return o + 9;
}

/* Writes a string at o (room checked by the caller); returns the end. */
static uint8_t *put_str(uint8_t *o, herd_span_t s)
{
    size_t h;
    if (s.len < 32) {
        o[0] = (uint8_t)(0xa0 | s.len);
        h = 1;
    } else if (s.len <= 0xff) {
        o[0] = 0xd9;
        o[1] = (uint8_t)s.len;
        h = 2;
    } else if (s.len <= 0xffff) {
        o[0] = 0xda;
        put_be(o + 1, s.len, 2);
        h = 3;
    } else {
        o[0] = 0xdb;
        put_be(o + 1, s.len, 4);
        h = 5;
    }
    if (s.len)
        memcpy(o + h, s.p, s.len);
    return o + h + s.len;
}

/* The header's four values are written as uint 64 (9 bytes each), so that
 * herd_msg_set_header can fill in counts known only when the batch ends. */
#define HEADER_BYTES 36

static void put_header(uint8_t *o, const herd_msg_header_t *h)
{
    const uint64_t v[4] = {(uint64_t)h->dir, h->fe, h->invalid, h->drain};
    for (size_t i = 0; i < 4; i++) {
        o[9 * i] = 0xcf;
        put_be(o + 9 * i + 1, v[i], 8);
    }
}

void herd_msg_begin(herd_msg_buf_t *b, const herd_msg_header_t *h)
{
    b->len = 0;
    b->oom = false;
    b->items = 0;
    if (!reserve(b, HEADER_BYTES))
        return;
    put_header((uint8_t *)b->p, h);
    b->len = HEADER_BYTES;
}

void herd_msg_set_header(herd_msg_buf_t *b, const herd_msg_header_t *h)
{
    if (b->len >= HEADER_BYTES)
        put_header((uint8_t *)b->p, h);
}

void herd_msg_put(herd_msg_buf_t *b, herd_msg_dir_t dir, const herd_msg_item_t *it)
{
    /* Room for the largest form of every field, reserved once an item. */
    size_t strings = 0;
    bool to_node = dir == HERD_MSG_TO_NODE;
    if (it->kind == HERD_MSG_IAMAT && to_node)
        strings = it->at.len;
    else if (it->kind == HERD_MSG_WHATSAT)
        strings = to_node ? it->id.len + it->radius.len : it->at.len + it->json.len;
    else if (it->kind == HERD_MSG_ADOPT)
        strings = it->peer.len;
    if (!reserve(b, 11 * UINT_MAX_BYTES + 2 * STR_HEAD_MAX_BYTES + strings))
        return;
    uint8_t *o = (uint8_t *)b->p + b->len;
    o = put_uint(o, (uint64_t)it->kind);
    b->items++;
    switch (it->kind) {
    case HERD_MSG_IAMAT:
    case HERD_MSG_WHATSAT:
        o = put_uint(o, it->conn);
        o = put_uint(o, it->seq);
        o = put_uint(o, it->handle);
        if (to_node && it->kind == HERD_MSG_IAMAT) {
            o = put_uint(o, (uint64_t)it->time.sec);
            o = put_uint(o, (uint64_t)it->time.nsec);
            o = put_uint(o, it->id_off);
            o = put_uint(o, it->id_len);
            o = put_uint(o, it->pos_off);
            o = put_uint(o, it->pos_len);
            o = put_str(o, it->at);
        } else if (to_node) {
            o = put_str(o, it->id);
            o = put_str(o, it->radius);
            o = put_uint(o, it->bound);
        } else {
            o = put_uint(o, it->outcome);
            if (it->kind == HERD_MSG_WHATSAT) {
                o = put_str(o, it->at);
                o = put_str(o, it->json);
            }
        }
        break;
    case HERD_MSG_CLOSED:
        o = put_uint(o, it->conn);
        o = put_uint(o, it->outcome ? 1 : 0);
        break;
    case HERD_MSG_ADOPT:
        o = put_uint(o, (uint64_t)it->fd);
        o = put_uint(o, it->serial);
        o = put_str(o, it->peer);
        break;
    case HERD_MSG_LIMITS:
        o = put_uint(o, (uint64_t)it->idle_timeout_ms);
        o = put_uint(o, (uint64_t)it->max_output_bytes);
        o = put_uint(o, it->max_output_total_bytes > 0 ? (uint64_t)it->max_output_total_bytes : 0);
        o = put_uint(o, it->log_commands ? 1 : 0);
        break;
    case HERD_MSG_DRAIN:
    case HERD_MSG_STOP:
    default:
        break;
    }
    b->len = (size_t)(o - (uint8_t *)b->p);
}

void herd_msg_buf_free(herd_msg_buf_t *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* ---- reading ---- */

static uint64_t get_be(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* Reads an unsigned integer; false (and the reader spent) when the next
 * value is not one. */
static bool get_uint(herd_msg_reader_t *r, uint64_t *v)
{
    if (r->p >= r->end)
        return false;
    uint8_t b = *r->p;
    size_t n;
    if (b < 0x80) {
        *v = b;
        r->p++;
        return true;
    }
    if (b >= 0xcc && b <= 0xcf)
        n = (size_t)1 << (b - 0xcc);
    else
        return false;
    if ((size_t)(r->end - r->p) < 1 + n)
        return false;
    *v = get_be(r->p + 1, n);
    r->p += 1 + n;
    return true;
}

static bool get_u32(herd_msg_reader_t *r, uint32_t *v)
{
    uint64_t x;
    if (!get_uint(r, &x) || x > UINT32_MAX)
        return false;
    *v = (uint32_t)x;
    return true;
}

static bool get_str(herd_msg_reader_t *r, herd_span_t *s)
{
    if (r->p >= r->end)
        return false;
    uint8_t b = *r->p;
    size_t h, n;
    if (b >= 0xa0 && b <= 0xbf) {
        h = 1;
        n = b & 0x1f;
    } else if (b >= 0xd9 && b <= 0xdb) {
        size_t w = (size_t)1 << (b - 0xd9);
        if ((size_t)(r->end - r->p) < 1 + w)
            return false;
        h = 1 + w;
        n = (size_t)get_be(r->p + 1, w);
    } else
        return false;
    if ((size_t)(r->end - r->p) - h < n)
        return false;
    s->p = (const char *)r->p + h;
    s->len = n;
    r->p += h + n;
    return true;
}

int herd_msg_open(herd_msg_reader_t *r, const char *data, size_t len, herd_msg_header_t *h)
{
    r->p = (const uint8_t *)data;
    r->end = r->p + len;
    uint64_t dir, fe;
    memset(h, 0, sizeof *h);
    if (!get_uint(r, &dir) || (dir != HERD_MSG_TO_NODE && dir != HERD_MSG_TO_FE) || !get_uint(r, &fe) ||
        fe > UINT32_MAX || !get_uint(r, &h->invalid) || !get_uint(r, &h->drain)) {
        r->p = r->end;
        return -1;
    }
    h->dir = r->dir = (herd_msg_dir_t)dir;
    h->fe = (uint32_t)fe;
    return 0;
}

static bool within(uint32_t off, uint32_t len, size_t total)
{
    return (uint64_t)off + len <= total;
}

/* The fields of one item after its kind; false when malformed. */
static bool get_fields(herd_msg_reader_t *r, herd_msg_item_t *it)
{
    bool to_node = r->dir == HERD_MSG_TO_NODE;
    uint64_t a, b;
    switch (it->kind) {
    case HERD_MSG_IAMAT:
    case HERD_MSG_WHATSAT:
        if (!get_uint(r, &it->conn) || !get_uint(r, &it->seq) || !get_u32(r, &it->handle))
            return false;
        if (to_node && it->kind == HERD_MSG_IAMAT) {
            if (!get_uint(r, &a) || a > INT64_MAX || !get_uint(r, &b) || b >= 1000000000u ||
                !get_u32(r, &it->id_off) || !get_u32(r, &it->id_len) || !get_u32(r, &it->pos_off) ||
                !get_u32(r, &it->pos_len) || !get_str(r, &it->at))
                return false;
            it->time.sec = (int64_t)a;
            it->time.nsec = (int32_t)b;
            return it->id_len > 0 && it->pos_len > 0 && within(it->id_off, it->id_len, it->at.len) &&
                   within(it->pos_off, it->pos_len, it->at.len);
        }
        if (to_node)
            return get_str(r, &it->id) && get_str(r, &it->radius) && get_u32(r, &it->bound) && it->bound >= 1 &&
                   it->bound <= HERD_MAX_BOUND && it->id.len > 0;
        if (!get_u32(r, &it->outcome) || it->outcome > 2)
            return false;
        return it->kind == HERD_MSG_IAMAT || (get_str(r, &it->at) && get_str(r, &it->json));
    case HERD_MSG_CLOSED:
        if (!to_node || !get_uint(r, &it->conn) || !get_u32(r, &it->outcome) || it->outcome > 1)
            return false;
        return true;
    case HERD_MSG_ADOPT:
        if (to_node || !get_uint(r, &a) || a > INT32_MAX || !get_uint(r, &it->serial) || !get_str(r, &it->peer))
            return false;
        it->fd = (int64_t)a;
        return true;
    case HERD_MSG_LIMITS:
        if (to_node || !get_uint(r, &a) || a > INT64_MAX || !get_uint(r, &b) || b > INT64_MAX)
            return false;
        it->idle_timeout_ms = (int64_t)a;
        it->max_output_bytes = (int64_t)b;
        if (!get_uint(r, &a) || a > INT64_MAX || !get_u32(r, &it->log_commands) || it->log_commands > 1)
            return false;
        it->max_output_total_bytes = (int64_t)a;
        return true;
    case HERD_MSG_DRAIN:
    case HERD_MSG_STOP:
        return !to_node;
    default:
        return false;
    }
}

int herd_msg_next(herd_msg_reader_t *r, herd_msg_item_t *it)
{
    if (r->p >= r->end)
        return 0;
    memset(it, 0, sizeof *it);
    uint64_t kind;
    if (!get_uint(r, &kind) || kind < HERD_MSG_IAMAT || kind > HERD_MSG_STOP) {
        r->p = r->end;
        return -1;
    }
    it->kind = (herd_msg_kind_t)kind;
    if (!get_fields(r, it)) {
        r->p = r->end;
        return -1;
    }
    return 1;
}
