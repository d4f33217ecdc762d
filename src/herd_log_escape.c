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

/* The end of the run of plain bytes from data[i]: eight bytes at a time
 * while none of them is below 0x20, 0x7f or above, '"' or '\\' (bit tricks:
 * (x - 0x01..) & ~x has the top bit of a byte set where x had a zero byte,
 * exactly when there is one), then byte by byte. Client lines are mostly
 * plain, and scanning them was the largest cost of a logged line. */
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
        /* Copy the run of plain bytes in one go: most log data is plain. */
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
