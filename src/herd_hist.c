/* herd_hist: see herd_hist.h. */
#include "herd_hist.h"

#include <inttypes.h>

static const uint64_t bounds_ns[HERD_HIST_BUCKETS] = {
    10000ULL,      25000ULL,      50000ULL,      100000ULL,     250000ULL,     500000ULL,     1000000ULL,
    2500000ULL,    5000000ULL,    10000000ULL,   25000000ULL,   50000000ULL,   100000000ULL,  250000000ULL,
    500000000ULL,  1000000000ULL, 2500000000ULL, 5000000000ULL, 10000000000ULL,
};

uint64_t herd_hist_bound_ns(int i)
{
    return bounds_ns[i];
}

void herd_hist_observe(herd_hist_t *h, int64_t ns)
{
    uint64_t v = ns < 0 ? 0 : (uint64_t)ns;
    h->count++;
    h->sum_ns += v;
    for (int i = 0; i < HERD_HIST_BUCKETS; i++)
        if (v <= bounds_ns[i]) {
            h->bucket[i]++;
            return;
        }
}

void herd_hist_merge(herd_hist_t *dst, const herd_hist_t *src)
{
    for (int i = 0; i < HERD_HIST_BUCKETS; i++)
        dst->bucket[i] += src->bucket[i];
    dst->count += src->count;
    dst->sum_ns += src->sum_ns;
}

void herd_hist_render(const herd_hist_t *h, FILE *f, const char *name, const char *labels)
{
    const char *sep = labels[0] ? "," : "";
    uint64_t cum = 0;
    for (int i = 0; i < HERD_HIST_BUCKETS; i++) {
        cum += h->bucket[i];
        fprintf(f, "%s_bucket{%s%sle=\"%" PRIu64 ".%09" PRIu64 "\"} %" PRIu64 "\n", name, labels, sep,
                bounds_ns[i] / (uint64_t)1000000000, bounds_ns[i] % (uint64_t)1000000000, cum);
    }
    fprintf(f, "%s_bucket{%s%sle=\"+Inf\"} %" PRIu64 "\n", name, labels, sep, h->count);
    const char *open = labels[0] ? "{" : "", *close = labels[0] ? "}" : "";
    fprintf(f, "%s_sum%s%s%s %" PRIu64 ".%09" PRIu64 "\n", name, open, labels, close, h->sum_ns / (uint64_t)1000000000,
            h->sum_ns % (uint64_t)1000000000);
    fprintf(f, "%s_count%s%s%s %" PRIu64 "\n", name, open, labels, close, h->count);
}
