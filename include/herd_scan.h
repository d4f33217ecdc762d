/* herd_scan: finding the end of a field in a line, eight bytes a step.
 *
 * Both the client protocol's split (herd_proto) and the AT record's
 * (herd_record) look for the next separator many times a command; the
 * fields are a few to a few dozen bytes long, where memchr's set-up costs
 * more than the scan. These read eight bytes at a time where the machine
 * is little-endian (byte by byte elsewhere) and never past len. */
#ifndef HERD_SCAN_H
#define HERD_SCAN_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The first byte from i on that is at most ' ' (a space, other white space
 * or a control byte), or len. In (w - 0x21..) & ~w & 0x80.., the lowest
 * flagged byte is always one below 0x21 (a borrow only flags bytes above a
 * true match). */
static inline size_t herd_scan_low(const char *line, size_t i, size_t len)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    while (i + 8 <= len) {
        uint64_t w;
        memcpy(&w, line + i, 8);
        uint64_t m = (w - 0x2121212121212121ULL) & ~w & 0x8080808080808080ULL;
        if (m)
            return i + ((size_t) __builtin_ctzll(m) >> 3);
        i += 8;
    }
#endif
    while (i < len && (unsigned char) line[i] > ' ')
        i++;
    return i;
}

/* The first space (0x20) from i on, or len: a zero byte of w ^ 0x20..
 * marks a space; the lowest flag is always a true one. */
static inline size_t herd_scan_space(const char *line, size_t i, size_t len)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    while (i + 8 <= len) {
        uint64_t w;
        memcpy(&w, line + i, 8);
        w ^= 0x2020202020202020ULL;
        uint64_t m = (w - 0x0101010101010101ULL) & ~w & 0x8080808080808080ULL;
        if (m)
            return i + ((size_t) __builtin_ctzll(m) >> 3);
        i += 8;
    }
#endif
    while (i < len && line[i] != ' ')
        i++;
    return i;
}

#endif
