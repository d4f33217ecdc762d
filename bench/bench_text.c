/* herd-bench: clock, latency histogram, command text and reply checks. */
#define _GNU_SOURCE /* memmem */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "herd_bench.h"

/* ---- clock ---- */

uint64_t hb_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void hb_sleep_ns(uint64_t ns)
{
    struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000u), .tv_nsec = (long)(ns % 1000000000u)};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* ---- histogram ---- */

hb_hist_t *hb_hist_new(void)
{
    hb_hist_t *h = calloc(1, sizeof *h);
    if (!h) {
        fprintf(stderr, "herd-bench: out of memory\n");
        exit(1);
    }
    h->min = UINT64_MAX;
    return h;
}

void hb_hist_free(hb_hist_t **h)
{
    free(*h);
    *h = NULL;
}

/* Bucket of v: exact below HB_SUB, else the power of two and the next
 * HB_SUB_BITS bits below the top one. */
static size_t bucket_of(uint64_t v)
{
    if (v < HB_SUB)
        return (size_t)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v); /* >= HB_SUB_BITS */
    unsigned shift = e - HB_SUB_BITS;
    size_t sub = (size_t)((v >> shift) & (HB_SUB - 1));
    return (size_t)(e - HB_SUB_BITS + 1) * HB_SUB + sub;
}

/* The largest value that falls into bucket b. */
static uint64_t bucket_top(size_t b)
{
    if (b < HB_SUB)
        return b;
    unsigned e = (unsigned)(b / HB_SUB) + HB_SUB_BITS - 1;
    uint64_t sub = b % HB_SUB;
    unsigned shift = e - HB_SUB_BITS;
    uint64_t base = ((uint64_t)1 << e) | (sub << shift);
    return base + (((uint64_t)1 << shift) - 1);
}

void hb_hist_add(hb_hist_t *h, uint64_t v)
{
    h->counts[bucket_of(v)]++;
    h->n++;
    h->sum += (double)v;
    if (v > h->max)
        h->max = v;
    if (v < h->min)
        h->min = v;
}

uint64_t hb_hist_quantile(const hb_hist_t *h, double q)
{
    if (!h->n)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)h->n + 0.999999); /* the ceil(q*n)-th value */
    if (rank < 1)
        rank = 1;
    if (rank > h->n)
        rank = h->n;
    uint64_t seen = 0;
    for (size_t b = 0; b < HB_BUCKETS; b++) {
        seen += h->counts[b];
        if (seen >= rank) {
            uint64_t top = bucket_top(b);
            return top > h->max ? h->max : top;
        }
    }
    return h->max;
}

void hb_hist_kv(const hb_hist_t *h, const char *name, char *buf, size_t cap)
{
    size_t n = strlen(buf);
    snprintf(buf + n, cap - n, " %s_p50_us=%.1f %s_p99_us=%.1f %s_p999_us=%.1f %s_max_us=%.1f", name,
             (double)hb_hist_quantile(h, 0.50) / 1e3, name, (double)hb_hist_quantile(h, 0.99) / 1e3, name,
             (double)hb_hist_quantile(h, 0.999) / 1e3, name, (double)h->max / 1e3);
}

/* ---- command text ---- */

/* Decimal digits of v at p; returns the count. (snprintf costs several
 * times more, and the client formats a command for every one it sends.) */
static size_t put_u64(char *p, uint64_t v)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        p[i] = tmp[n - 1 - i];
    return n;
}

/* Exactly `width` digits, zero-padded. */
static void put_fixed(char *p, uint64_t v, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        p[i] = (char)('0' + v % 10);
        v /= 10;
    }
}

size_t hb_fmt_id(const hb_opts_t *o, uint64_t key, char *buf, size_t cap)
{
    size_t pl = strlen(o->prefix);
    if (pl + 21 > cap)
        return 0;
    memcpy(buf, o->prefix, pl);
    size_t n = pl + put_u64(buf + pl, key);
    buf[n] = '\0';
    return n;
}

/* splitmix64: a good spread from consecutive keys. */
static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* A signed decimal with six fraction digits, from millionths. */
static size_t put_micro(char *p, int64_t micro)
{
    p[0] = micro < 0 ? '-' : '+';
    uint64_t a = (uint64_t)(micro < 0 ? -micro : micro);
    size_t n = 1 + put_u64(p + 1, a / 1000000u);
    p[n++] = '.';
    put_fixed(p + n, a % 1000000u, 6);
    return n + 6;
}

size_t hb_fmt_pos(const hb_opts_t *o, uint64_t key, char *buf, size_t cap)
{
    if (cap < 40)
        return 0;
    uint64_t h = mix(mix(o->seed) ^ (o->fixed_pos ? 0 : key));
    int64_t lat = (int64_t)(h % 179999999u) - 89999999;          /* within (-90, 90) */
    int64_t lng = (int64_t)((h >> 28) % 359999999u) - 179999999; /* within (-180, 180) */
    size_t n = put_micro(buf, lat);
    n += put_micro(buf + n, lng);
    buf[n] = '\0';
    return n;
}

size_t hb_fmt_time(herd_time_t t, char *buf, size_t cap)
{
    if (cap < 32)
        return 0;
    size_t n = put_u64(buf, (uint64_t)t.sec);
    buf[n++] = '.';
    put_fixed(buf + n, (uint64_t)t.nsec, 9);
    n += 9;
    buf[n] = '\0';
    return n;
}

herd_time_t hb_next_time(void)
{
    static herd_time_t last;
    herd_time_t t = herd_time_now();
    if (herd_time_cmp(t, last) <= 0) {
        t = last;
        if (++t.nsec == 1000000000) {
            t.nsec = 0;
            t.sec++;
        }
    }
    last = t;
    return t;
}

size_t hb_fmt_iamat(const hb_opts_t *o, uint64_t key, herd_time_t t, char *buf, size_t cap)
{
    size_t pl = strlen(o->prefix);
    if (pl + 6 + 21 + 1 + 40 + 1 + 32 + 1 > cap)
        return 0;
    memcpy(buf, "IAMAT ", 6);
    size_t n = 6 + hb_fmt_id(o, key, buf + 6, cap - 6);
    buf[n++] = ' ';
    n += hb_fmt_pos(o, key, buf + n, cap - n);
    buf[n++] = ' ';
    n += hb_fmt_time(t, buf + n, cap - n);
    buf[n++] = '\n';
    return n;
}

size_t hb_fmt_whatsat(const hb_opts_t *o, uint64_t key, char *buf, size_t cap)
{
    char id[300];
    hb_fmt_id(o, key, id, sizeof id);
    int n = snprintf(buf, cap, "WHATSAT %s %s %d\n", id, o->radius, o->bound);
    return n < 0 ? 0 : (size_t)n;
}

size_t hb_cmd_id(const char *cmd, size_t len, const char **id)
{
    const char *sp = memchr(cmd, ' ', len);
    if (!sp) {
        *id = cmd;
        return 0;
    }
    *id = sp + 1;
    const char *end = memchr(*id, ' ', len - (size_t)(*id - cmd));
    return end ? (size_t)(end - *id) : 0;
}

/* ---- replies ---- */

size_t hb_reply_len(const char *buf, size_t len, int kind)
{
    const char *nl = memchr(buf, '\n', len);
    if (!nl)
        return 0;
    size_t first = (size_t)(nl - buf) + 1;
    if (kind != HB_WHATSAT || len < 3 || memcmp(buf, "AT ", 3) != 0)
        return first;
    /* The JSON never holds a blank line, so the first "\n\n" after the AT
     * line's own LF ends the reply (an empty body gives "\n\n" at once). */
    const char *end = memmem(buf + first, len - first, "\n\n", 2);
    return end ? (size_t)(end - buf) + 2 : 0;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool name_ok(const char *p, size_t n)
{
    if (n < 1 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || is_digit(c) || c == '_' || c == '-'))
            return false;
    }
    return true;
}

static bool skew_ok(const char *p, size_t n)
{
    if (n < 12 || (p[0] != '+' && p[0] != '-') || p[n - 10] != '.')
        return false;
    for (size_t i = 1; i < n; i++)
        if (i != n - 10 && !is_digit(p[i]))
            return false;
    return true;
}

bool hb_check_at(const char *line, size_t len, const char *expect_name, const char *id, size_t id_len)
{
    const char *f[7];
    size_t fl[7], nf = 0, i = 0;
    while (i < len) {
        size_t j = i;
        while (j < len && line[j] != ' ')
            j++;
        if (j == i || nf == 7)
            return false; /* double space or too many fields */
        f[nf] = line + i;
        fl[nf++] = j - i;
        i = j + 1;
        if (j < len && i == len)
            return false; /* trailing space */
    }
    if (nf != 6 || fl[0] != 2 || memcmp(f[0], "AT", 2) != 0 || !name_ok(f[1], fl[1]) || !skew_ok(f[2], fl[2]))
        return false;
    if (expect_name && (strlen(expect_name) != fl[1] || memcmp(expect_name, f[1], fl[1]) != 0))
        return false;
    return fl[3] == id_len && memcmp(f[3], id, id_len) == 0;
}

bool hb_check_whatsat(const char *r, size_t len, const char *expect_name, const char *id, size_t id_len,
                      char *status, size_t status_cap)
{
    status[0] = '\0';
    const char *nl = memchr(r, '\n', len);
    if (!nl || len < 3 || r[len - 1] != '\n' || r[len - 2] != '\n')
        return false;
    size_t at_len = (size_t)(nl - r);
    if (!hb_check_at(r, at_len, expect_name, id, id_len))
        return false;
    const char *json = nl + 1;
    size_t jlen = len - at_len - 1 - 2;
    if (jlen < 2 || json[0] != '{' || json[jlen - 1] != '}')
        return false;
    const char *s = memmem(json, jlen, "\"status\"", 8);
    if (s) {
        const char *end = json + jlen;
        s += 8;
        while (s < end && (*s == ' ' || *s == ':' || *s == '\n' || *s == '\t'))
            s++;
        if (s < end && *s == '"') {
            s++;
            size_t k = 0;
            while (s < end && *s != '"' && k + 1 < status_cap)
                status[k++] = *s++;
            status[k] = '\0';
        }
    }
    return true;
}

bool hb_check_reply(const hb_opts_t *o, const char *cmd, size_t cmd_len, const char *r, size_t len, char *status,
                    size_t status_cap)
{
    const char *id;
    size_t idl = hb_cmd_id(cmd, cmd_len, &id);
    status[0] = '\0';
    if (cmd_len > 6 && !memcmp(cmd, "IAMAT ", 6)) {
        /* The AT line must end with " <id> <pos> <time>", the command's own
         * bytes after "IAMAT" (without its LF). */
        const char *tail = cmd + 5;
        size_t tl = cmd_len - 6;
        return len > tl + 1 && r[len - 1] == '\n' && !memcmp(r + len - 1 - tl, tail, tl) &&
               hb_check_at(r, len - 1, o->expect_name, id, idl);
    }
    return hb_check_whatsat(r, len, o->expect_name, id, idl, status, status_cap);
}
