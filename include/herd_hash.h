/* herd_hash: the small 64-bit hashing steps that must give the same answer
 * on every server (the record's fingerprint, the table's digest buckets)
 * and the keyed SipHash of the indexes of client ids. Header-only:
 * each step is a few instructions on a hot path. */
#ifndef HERD_HASH_H
#define HERD_HASH_H

#include <stddef.h>
#include <stdint.h>

/* A bijective 64-bit finaliser: every input bit affects every output bit. */
static inline uint64_t herd_hash_mix64(uint64_t x)
{
    x ^= x >> 31;
    x *= 0x9e3779b97f4a7c15ULL;
    x ^= x >> 29;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 32;
    return x;
}

/* x rotated left by r bits (0 < r < 64). */
static inline uint64_t herd_hash_rotl64(uint64_t x, unsigned r)
{
    return (x << r) | (x >> (64 - r));
}

/* Eight bytes little-endian, whatever the machine's byte order, so that the
 * unseeded hashes agree between servers. */
static inline uint64_t herd_hash_load_le64(const char *p)
{
    const unsigned char *u = (const unsigned char *) p;
    return (uint64_t) u[0] | (uint64_t) u[1] << 8 | (uint64_t) u[2] << 16 | (uint64_t) u[3] << 24
           | (uint64_t) u[4] << 32 | (uint64_t) u[5] << 40 | (uint64_t) u[6] << 48 | (uint64_t) u[7] << 56;
}

/* A 64-bit hash of n bytes, eight a step, with a fixed seed: the same on
 * every server for the same bytes and seed. */
static inline uint64_t herd_hash_fixed(uint64_t seed, const char *p, size_t n)
{
    const uint64_t k1 = 0x87c37b91114253d5ULL, k2 = 0xff51afd7ed558ccdULL;
    uint64_t h = seed ^ ((uint64_t) n * k2);
    while (n >= 8) {
        h = herd_hash_rotl64(h ^ (herd_hash_load_le64(p) * k1), 31) * k2;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    for (size_t i = 0; i < n; i++)
        w |= (uint64_t) (unsigned char) p[i] << (8 * i);
    h = herd_hash_rotl64(h ^ (w * k1), 31) * k2;
    return herd_hash_mix64(h ^ seed);
}

/* SipHash-1-3 (Aumasson and Bernstein's keyed hash, with the round counts
 * Redis uses for its dictionaries) of n bytes under the 128-bit key
 * (k0, k1): for indexes of ids that clients choose (the table's, the
 * journal compactor's), each keyed at random so that ids cannot be aimed
 * at one probe chain. */
#define HERD_SIP_ROUND(v0, v1, v2, v3)                                                                             \
    do {                                                                                                           \
        v0 += v1;                                                                                                  \
        v1 = herd_hash_rotl64(v1, 13);                                                                             \
        v1 ^= v0;                                                                                                  \
        v0 = herd_hash_rotl64(v0, 32);                                                                             \
        v2 += v3;                                                                                                  \
        v3 = herd_hash_rotl64(v3, 16);                                                                             \
        v3 ^= v2;                                                                                                  \
        v0 += v3;                                                                                                  \
        v3 = herd_hash_rotl64(v3, 21);                                                                             \
        v3 ^= v0;                                                                                                  \
        v2 += v1;                                                                                                  \
        v1 = herd_hash_rotl64(v1, 17);                                                                             \
        v1 ^= v2;                                                                                                  \
        v2 = herd_hash_rotl64(v2, 32);                                                                             \
    } while (0)

static inline uint64_t herd_hash_siphash13(uint64_t k0, uint64_t k1, const char *p, size_t n)
{
    uint64_t v0 = 0x736f6d6570736575ULL ^ k0, v1 = 0x646f72616e646f6dULL ^ k1;
    uint64_t v2 = 0x6c7967656e657261ULL ^ k0, v3 = 0x7465646279746573ULL ^ k1;
    uint64_t b = (uint64_t) n << 56;
    while (n >= 8) {
        uint64_t m = herd_hash_load_le64(p);
        v3 ^= m;
        HERD_SIP_ROUND(v0, v1, v2, v3);
        v0 ^= m;
        p += 8;
        n -= 8;
    }
    for (size_t i = 0; i < n; i++)
        b |= (uint64_t) (unsigned char) p[i] << (8 * i);
    v3 ^= b;
    HERD_SIP_ROUND(v0, v1, v2, v3);
    v0 ^= b;
    v2 ^= 0xff;
    HERD_SIP_ROUND(v0, v1, v2, v3);
    HERD_SIP_ROUND(v0, v1, v2, v3);
    HERD_SIP_ROUND(v0, v1, v2, v3);
    return v0 ^ v1 ^ v2 ^ v3;
}

#endif
