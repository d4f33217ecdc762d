/* herd_hist: a latency histogram in Prometheus's form (PROTOCOL §9's
 * /metrics): fixed buckets from 10 us to 10 s, three per decade (1, 2.5, 5),
 * counted in nanoseconds so that an observation costs a few compares and two
 * additions and no floating point. Plain data: the owner thread observes,
 * and renders or copies it out; there is no lock. */
#ifndef HERD_HIST_H
#define HERD_HIST_H

#include <stdint.h>
#include <stdio.h>

#define HERD_HIST_BUCKETS 19 /* finite upper bounds, 10 us .. 10 s; +Inf is count */

typedef struct {
    uint64_t bucket[HERD_HIST_BUCKETS]; /* observations <= bound i (not cumulative) */
    uint64_t count;                     /* all observations, the +Inf bucket */
    uint64_t sum_ns;                    /* their sum, in nanoseconds */
} herd_hist_t;

/* Upper bound of bucket i in nanoseconds (i < HERD_HIST_BUCKETS). */
uint64_t herd_hist_bound_ns(int i);

/* Counts one observation of ns nanoseconds (negative values count as 0). */
void herd_hist_observe(herd_hist_t *h, int64_t ns);

/* Adds every count of src into dst (to merge per-thread histograms). */
void herd_hist_merge(herd_hist_t *dst, const herd_hist_t *src);

/* Writes the _bucket, _sum and _count lines of metric `name` in seconds.
 * `labels` is the text inside the braces without them (such as
 * `command="IAMAT"`), or "" for none. HELP and TYPE lines are the caller's,
 * written once per family. */
void herd_hist_render(const herd_hist_t *h, FILE *f, const char *name, const char *labels);

#endif
