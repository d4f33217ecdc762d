/* herd_log_escape: how client and peer bytes are written in the log
 * (quoted, any byte value safe). Pure; see herd_log_escape.h. */
#include "herd_log_escape.h"

#include <stdint.h>
#include <string.h>

/* For each byte: 0 when it is written as is, else the letter of its
 * two-character escape, or 'x' for \xNN. */
static const char escape_kind[256] = {
    [0 ... 8] = 'x', ['\t'] = 't', ['\n'] = 'n', [11 ... 12] = 'x', ['\r'] = 'r', [14 ... 31] = 'x',
    ['"'] = '"', ['\\'] = '\\', [127 ... 255] = 'x',
};

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* The end of the run of plain bytes from data[i]: eight bytes at a time
 * while none of them is below 0x20, 0x7f or above, '"' or '\\' (bit tricks:
 * (x - 0x01..) & ~x has the top bit of a byte set where x had a zero byte,
 * exactly when there is one), then byte by byte. */
static size_t plain_run(const char *data, size_t i, size_t len)
{
    const uint64_t ones = 0x0101010101010101ull, tops = 0x8080808080808080ull;
    while (i + 8 <= len) {
        uint64_t v;
        memcpy(&v, data + i, 8);
        uint64_t quote = v ^ (ones * '"'), slash = v ^ (ones * '\\'), del = v ^ (ones * 0x7f);
        uint64_t hit = ((v - ones * 0x20) & ~v) | ((quote - ones) & ~quote) | ((slash - ones) & ~slash) |
                       ((del - ones) & ~del) | v;
        if (hit & tops)
            break;
        i += 8;
    }
    while (i < len && !escape_kind[(unsigned char)data[i]])
        i++;
    return i;
}

/* Copies plain bytes from data[*i] to buf[*o] while 16 of them fit both
 * ways, sixteen at a step: each step stores the sixteen bytes whole and
 * moves past the plain ones among them (a byte is plain when, signed, it is
 * at least 0x20 and it is none of 0x7f, '"' and '\\'). Client lines are
 * mostly plain, and scanning then copying them was the largest cost of a
 * logged line; this does both in one pass. */
static void plain_copy(char *buf, size_t cap, size_t *o, const char *data, size_t len, size_t *i)
{
#if defined(__SSE2__)
    const __m128i space = _mm_set1_epi8(0x20), del = _mm_set1_epi8(0x7f), quote = _mm_set1_epi8('"'),
                  slash = _mm_set1_epi8('\\');
    while (*i + 16 <= len && *o + 16 <= cap) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(data + *i));
        __m128i bad = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, del), _mm_cmpeq_epi8(v, quote)),
                                   _mm_cmpeq_epi8(v, slash));
        unsigned mask = (unsigned)_mm_movemask_epi8(_mm_or_si128(bad, _mm_cmpgt_epi8(space, v)));
        _mm_storeu_si128((__m128i *)(void *)(buf + *o), v);
        unsigned n = mask ? (unsigned)__builtin_ctz(mask) : 16;
        *i += n;
        *o += n;
        if (mask)
            return;
    }
    /* The last 1..15 bytes of a line of 16 or more: judged by one load of
     * the line's last sixteen (which ends where the line does), its mask
     * shifted past the bytes already taken, instead of byte by byte. */
    size_t r = len - *i;
    if (r > 0 && r < 16 && len >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(data + len - 16));
        __m128i bad = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, del), _mm_cmpeq_epi8(v, quote)),
                                   _mm_cmpeq_epi8(v, slash));
        unsigned mask = (unsigned)_mm_movemask_epi8(_mm_or_si128(bad, _mm_cmpgt_epi8(space, v))) >> (16 - r);
        size_t n = mask ? (size_t)__builtin_ctz(mask) : r;
        if (n > cap - *o)
            n = cap - *o;
        memcpy(buf + *o, data + *i, n);
        *i += n;
        *o += n;
    }
#else
    (void)buf;
    (void)cap;
    (void)o;
    (void)data;
    (void)len;
    (void)i;
#endif
}

size_t herd_log_escape(char *buf, size_t cap, const char *data, size_t len)
{
    size_t used;
    return herd_log_escape_prefix(buf, cap, data, len, &used);
}

size_t herd_log_escape_prefix(char *buf, size_t cap, const char *data, size_t len, size_t *used)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0, i = 0;
    while (i < len) {
        plain_copy(buf, cap, &o, data, len, &i);
        if (i == len)
            break;
        /* Copy the rest of the run of plain bytes in one go. */
        size_t run = plain_run(data, i, len);
        size_t n = run - i;
        if (n > cap - o)
            n = cap - o;
        memcpy(buf + o, data + i, n);
        o += n;
        i += n;
        if (i < run || i == len)
            break; /* out of room, or done */
        unsigned char c = (unsigned char)data[i];
        char e = escape_kind[c];
        if (e != 'x') {
            if (o + 2 > cap)
                break;
            buf[o++] = '\\';
            buf[o++] = e;
        } else {
            if (o + 4 > cap)
                break;
            buf[o++] = '\\';
            buf[o++] = 'x';
            buf[o++] = hex[c >> 4];
            buf[o++] = hex[c & 15];
        }
        i++;
    }
    *used = i;
    return o;
}
