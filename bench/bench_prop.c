/* herd-bench prop: how long an IAMAT accepted by one server takes to be
 * visible at every other server, under a given update rate.
 *
 * The source server A gets IAMATs at --rate (or flat out, closed loop), each
 * for a client id never used before. Every --sample-every'th update is
 * watched: the moment its IAMAT is written, each other server gets a
 * WHATSAT for that new id, and again each time it answers "? ..." (the id is
 * unknown there), until it answers with the update's AT line. Because only a
 * sample is polled, the probes add little load to the servers being timed,
 * and a negative answer costs a server only a table miss.
 *
 * Each server's visibility time V is bracketed, from the IAMAT's write:
 *   lo: the write of the last poll that was answered "?" (V came after it
 *       was processed, so after it was written); the IAMAT's write when the
 *       first poll already hit;
 *   hi: the arrival of the first positive answer (V came before that poll
 *       was processed, so before its answer arrived).
 * Polls go back to back, so the positive poll is written when the last
 * negative answer arrives, and V - lo is at most one negative round trip
 * (reported as negrtt) plus the positive poll's way in. hi is looser: a
 * positive WHATSAT also waits for the Places worker before it is answered.
 * "Visible everywhere" is the largest lo (and hi) over the servers.
 *
 * With --verify, every update (not only the samples) is then looked up at
 * every other server and compared byte for byte with A's AT line: any
 * update missing there was lost. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "herd_bench.h"

#define MAX_PROBES 32
#define MAX_SRC    256
#define PROBE_TAG  1000 /* conn->idx of probe p is PROBE_TAG + p */
#define POOL       64   /* connections per probed server at most */

typedef struct {
    uint64_t seq;                     /* the update (client key) */
    uint64_t t_sent;                  /* IAMAT written */
    uint64_t seen[MAX_PROBES];        /* first positive answer (hi), 0 until then */
    uint64_t lo[MAX_PROBES];          /* the lower bound, once seen */
    uint64_t last_neg[MAX_PROBES];    /* write time of the last negative poll */
    uint64_t poll_due[MAX_PROBES];    /* next poll (with a gap), 0 = none waiting */
    uint32_t polls[MAX_PROBES];       /* polls made */
    int remaining;                    /* probes that have not seen it */
    bool lost;                        /* some probe never saw it in time */
} sample_t;

typedef struct {
    const hb_opts_t *o;
    int epfd;
    const char *src_host;
    int src_port;
    hb_conn_t *src[MAX_SRC];
    int nsrc;
    const char *pname[MAX_PROBES];
    const char *phost[MAX_PROBES];
    int pport[MAX_PROBES];
    hb_conn_t *pool[MAX_PROBES][POOL]; /* connections to each probed server */
    int npool[MAX_PROBES];
    int np;
    sample_t *samples;
    size_t nsamples, cap_samples;
    size_t *active;                   /* samples not yet seen everywhere */
    size_t nactive;
    char **ats;                       /* --verify: A's AT line of each update */
    uint64_t limit, issued, acked, errors, lost_samples, polls;
    uint64_t t0, t_end, t_last_ack, period_ns;
    int rr;
    hb_hist_t *all_lo, *all_hi;       /* visible at every probe */
    hb_hist_t *lo[MAX_PROBES], *hi[MAX_PROBES]; /* visible at probe p */
    hb_hist_t *negrtt;                /* round trip of a negative poll */
    hb_hist_t *ack;                   /* A's IAMAT latency */
} prop_t;

static void send_poll(prop_t *P, size_t si, int p, uint64_t now)
{
    sample_t *s = &P->samples[si];
    char cmd[512];
    hb_req_t rq = {.t_ns = now, .key = s->seq, .kind = HB_WHATSAT, .tag = (uint32_t)si};
    size_t len = hb_fmt_whatsat(P->o, s->seq, cmd, sizeof cmd);
    /* Each poll gets a connection of its own: behind another sample's
     * positive poll (which waits for the Places worker) it would be
     * answered late, and the bracket would widen. */
    hb_conn_t *c = NULL;
    for (int i = 0; i < P->npool[p] && !c; i++)
        if (!P->pool[p][i]->dead && P->pool[p][i]->qn == 0)
            c = P->pool[p][i];
    if (!c && P->npool[p] < POOL) {
        int fd = hb_connect(P->phost[p], P->pport[p]);
        if (fd >= 0)
            c = P->pool[p][P->npool[p]++] = hb_conn_new(P->epfd, fd, PROBE_TAG + p);
    }
    for (int i = 0; i < P->npool[p] && !c; i++) /* all busy: share the least loaded */
        if (!P->pool[p][i]->dead && (!c || P->pool[p][i]->qn < c->qn))
            c = P->pool[p][i];
    if (!c) {
        fprintf(stderr, "herd-bench: no connection to %s\n", P->pname[p]);
        exit(1);
    }
    if (c->qn == 0 && P->npool[p] > 1)
        rq.t_ns = hb_now_ns(); /* a connect may just have been made */
    hb_conn_send(c, cmd, len, &rq);
    hb_conn_flush(P->epfd, c);
    s->polls[p]++;
    s->poll_due[p] = 0;
    P->polls++;
}

static void issue(prop_t *P, hb_conn_t *c, uint64_t due, uint64_t now)
{
    const hb_opts_t *o = P->o;
    char cmd[512];
    hb_req_t rq = {.t_ns = due ? due : now, .key = P->issued, .kind = HB_IAMAT, .tm = hb_next_time()};
    size_t len = hb_fmt_iamat(o, rq.key, rq.tm, cmd, sizeof cmd);
    hb_conn_send(c, cmd, len, &rq);
    if (P->issued % o->sample_every == 0) {
        hb_conn_flush(P->epfd, c); /* the IAMAT goes out before its polls */
        if (P->nsamples == P->cap_samples) {
            P->cap_samples = P->cap_samples ? P->cap_samples * 2 : 1024;
            P->samples = realloc(P->samples, P->cap_samples * sizeof *P->samples);
            P->active = realloc(P->active, P->cap_samples * sizeof *P->active);
        }
        size_t si = P->nsamples++;
        sample_t *s = &P->samples[si];
        memset(s, 0, sizeof *s);
        s->seq = rq.key;
        s->t_sent = hb_now_ns();
        s->remaining = P->np;
        P->active[P->nactive++] = si;
        for (int p = 0; p < P->np; p++)
            send_poll(P, si, p, s->t_sent);
    }
    P->issued++;
}

static void refill(prop_t *P, uint64_t now)
{
    if (P->o->rate > 0) {
        while (P->issued < P->limit) {
            uint64_t due = P->t0 + P->issued * P->period_ns;
            if (due > now || due >= P->t_end)
                break;
            hb_conn_t *c = NULL;
            for (int k = 0; k < P->nsrc && !c; k++) {
                hb_conn_t *x = P->src[(P->rr + k) % P->nsrc];
                if (!x->dead && x->qn < (size_t)P->o->depth) {
                    c = x;
                    P->rr = (P->rr + k + 1) % P->nsrc;
                }
            }
            if (!c)
                break;
            issue(P, c, due, now);
        }
    } else {
        for (int i = 0; i < P->nsrc; i++)
            while (!P->src[i]->dead && P->src[i]->qn < (size_t)P->o->depth && P->issued < P->limit && now < P->t_end)
                issue(P, P->src[i], 0, now);
    }
}

/* A's answer to an IAMAT. */
static void on_ack(prop_t *P, const hb_req_t *rq, const char *cmd, size_t cmd_len, const char *r, size_t len,
                   uint64_t now)
{
    char status[8];
    if (!hb_check_reply(P->o, cmd, cmd_len, r, len, status, sizeof status)) {
        if (P->errors++ < 5)
            fprintf(stderr, "herd-bench: unexpected IAMAT reply: %.*s", (int)len, r);
        return;
    }
    hb_hist_add(P->ack, now - rq->t_ns);
    if (P->ats)
        P->ats[rq->key] = strndup(r, len - 1);
    P->acked++;
    P->t_last_ack = now;
}

static void finish_sample(prop_t *P, size_t si)
{
    sample_t *s = &P->samples[si];
    if (!s->lost) {
        uint64_t worst_hi = 0, worst_lo = 0;
        for (int p = 0; p < P->np; p++) {
            worst_hi = s->seen[p] > worst_hi ? s->seen[p] : worst_hi;
            worst_lo = s->lo[p] > worst_lo ? s->lo[p] : worst_lo;
        }
        hb_hist_add(P->all_hi, worst_hi - s->t_sent);
        hb_hist_add(P->all_lo, worst_lo - s->t_sent);
    } else {
        P->lost_samples++;
    }
    for (size_t k = 0; k < P->nactive; k++)
        if (P->active[k] == si) {
            P->active[k] = P->active[--P->nactive];
            break;
        }
}

/* A probe's answer to a poll. */
static void on_poll(prop_t *P, int p, const hb_req_t *rq, const char *cmd, size_t cmd_len, const char *r,
                    size_t len, uint64_t now)
{
    const hb_opts_t *o = P->o;
    sample_t *s = &P->samples[rq->tag];
    if (s->seen[p])
        return;
    const char *id;
    size_t idl = hb_cmd_id(cmd, cmd_len, &id);
    const char *nl = memchr(r, '\n', len);
    size_t ll = (size_t)(nl - r);
    if (len > 3 && !memcmp(r, "AT ", 3) && hb_check_at(r, ll, NULL, id, idl)) {
        s->seen[p] = now;
        s->lo[p] = s->last_neg[p] ? s->last_neg[p] : s->t_sent;
        hb_hist_add(P->hi[p], now - s->t_sent);
        hb_hist_add(P->lo[p], s->lo[p] - s->t_sent);
        if (--s->remaining == 0)
            finish_sample(P, rq->tag);
        return;
    }
    if (len < 2 || memcmp(r, "? ", 2) != 0) {
        if (P->errors++ < 5)
            fprintf(stderr, "herd-bench: unexpected poll reply from %s: %.*s", P->pname[p], (int)len, r);
    }
    s->last_neg[p] = rq->t_ns;
    hb_hist_add(P->negrtt, now - rq->t_ns);
    if (now - s->t_sent > (uint64_t)(o->timeout * 1e9)) {
        s->seen[p] = UINT64_MAX;
        s->lost = true;
        fprintf(stderr, "herd-bench: update %" PRIu64 " not seen at %s after %.1f s\n", s->seq, P->pname[p],
                o->timeout);
        if (--s->remaining == 0)
            finish_sample(P, rq->tag);
        return;
    }
    if (o->poll_gap_us > 0)
        s->poll_due[p] = now + (uint64_t)(o->poll_gap_us * 1e3);
    else
        send_poll(P, rq->tag, p, now);
}

/* Polls whose gap has passed; returns the wait until the next one (-1: none). */
static int64_t due_polls(prop_t *P, uint64_t now)
{
    int64_t wait = -1;
    for (size_t k = 0; k < P->nactive; k++) {
        sample_t *s = &P->samples[P->active[k]];
        for (int p = 0; p < P->np; p++) {
            if (!s->poll_due[p])
                continue;
            if (s->poll_due[p] <= now)
                send_poll(P, P->active[k], p, now);
            else if (wait < 0 || (int64_t)(s->poll_due[p] - now) < wait)
                wait = (int64_t)(s->poll_due[p] - now);
        }
    }
    return wait;
}

static size_t src_outstanding(const prop_t *P)
{
    size_t n = 0;
    for (int i = 0; i < P->nsrc; i++)
        n += P->src[i]->dead ? 0 : P->src[i]->qn;
    return n;
}

static int run(prop_t *P)
{
    const hb_opts_t *o = P->o;
    struct epoll_event ev[512];
    uint64_t now = hb_now_ns(), stop_at = 0;
    P->t0 = now;
    P->t_end = o->duration > 0 ? now + (uint64_t)(o->duration * 1e9) : UINT64_MAX;
    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0); /* pace and poll to the microsecond */
    if (o->rate > 0)
        P->period_ns = (uint64_t)(1e9 / o->rate) ? (uint64_t)(1e9 / o->rate) : 1;
    for (;;) {
        now = hb_now_ns();
        refill(P, now);
        int64_t wait = due_polls(P, now);
        for (int i = 0; i < P->nsrc; i++)
            hb_conn_flush(P->epfd, P->src[i]);
        for (int p = 0; p < P->np; p++)
            for (int i = 0; i < P->npool[p]; i++)
                if (P->pool[p][i]->out.len)
                    hb_conn_flush(P->epfd, P->pool[p][i]);
        bool issuing = P->issued < P->limit && now < P->t_end;
        if (!issuing) {
            if (!src_outstanding(P) && !P->nactive)
                break;
            if (!stop_at)
                stop_at = now + (uint64_t)(o->timeout * 1e9) + 1000000000u;
            if (now > stop_at) {
                fprintf(stderr, "herd-bench: gave up waiting for %zu replies and %zu samples\n", src_outstanding(P),
                        P->nactive);
                P->errors += src_outstanding(P);
                P->lost_samples += P->nactive;
                break;
            }
        }
        if (issuing && o->rate > 0) {
            uint64_t due = P->t0 + P->issued * P->period_ns;
            int64_t w = due > now ? (int64_t)(due - now) : 0;
            wait = wait < 0 || w < wait ? w : wait;
        } else if (issuing && P->t_end != UINT64_MAX) {
            int64_t w = (int64_t)(P->t_end - now);
            wait = wait < 0 || w < wait ? w : wait;
        } else if (!issuing) {
            int64_t w = 100000000; /* re-check the give-up time */
            wait = wait < 0 || w < wait ? w : wait;
        }
        int n = hb_wait(P->epfd, ev, 512, wait);
        if (n < 0 && errno != EINTR)
            return -1;
        now = hb_now_ns();
        for (int i = 0; i < n; i++) {
            hb_conn_t *c = ev[i].data.ptr;
            if (c->dead)
                continue;
            ssize_t r;
            while ((r = hb_conn_read(c)) > 0) {
                const char *rep, *cmd;
                size_t len, cmd_len;
                while (hb_conn_reply(c, &rep, &len, &cmd, &cmd_len)) {
                    hb_req_t rq = *hb_conn_head(c);
                    if (c->idx >= PROBE_TAG)
                        on_poll(P, c->idx - PROBE_TAG, &rq, cmd, cmd_len, rep, len, now);
                    else
                        on_ack(P, &rq, cmd, cmd_len, rep, len, now);
                    hb_conn_pop(c, len);
                }
            }
            if (r == 0 || r == -1) {
                fprintf(stderr, "herd-bench: a server closed a connection\n");
                P->errors += c->qn;
                c->qn = 0;
                c->dead = true;
                epoll_ctl(P->epfd, EPOLL_CTL_DEL, c->fd, NULL);
                if (c->idx >= PROBE_TAG)
                    return -1;
            }
        }
    }
    return 0;
}

/* Every update at every probe, byte for byte; returns the total missing. */
static uint64_t verify(prop_t *P, char *kv, size_t cap)
{
    const hb_opts_t *o = P->o;
    uint64_t n = P->issued, total = 0;
    uint64_t *keys = malloc(n * sizeof *keys);
    bool *found = malloc(n);
    for (uint64_t i = 0; i < n; i++)
        keys[i] = i;
    for (int p = 0; p < P->np; p++) {
        memset(found, 0, n);
        uint64_t t = hb_now_ns();
        long miss = hb_check_keys(o, P->phost[p], P->pport[p], keys, n, P->ats, found, NULL);
        /* Anything still missing gets two more looks, a second apart. */
        for (int again = 0; again < 2 && miss > 0; again++) {
            hb_sleep_ns(1000000000u);
            miss = hb_check_keys(o, P->phost[p], P->pport[p], keys, n, P->ats, found, NULL);
        }
        hb_say(o, "verify %s: %" PRIu64 " updates checked in %.2f s, %ld missing", P->pname[p], n,
               (double)(hb_now_ns() - t) / 1e9, miss);
        size_t k = strlen(kv);
        snprintf(kv + k, cap - k, " lost_%s=%ld", P->pname[p], miss);
        total += miss < 0 ? n : (uint64_t)miss;
    }
    free(keys);
    free(found);
    return total;
}

int hb_mode_prop(const hb_opts_t *o)
{
    static prop_t P;
    P.o = o;
    P.src_port = hb_server_port(o, o->server, &P.src_host);
    if (P.src_port < 0)
        return 1;
    P.np = (int)hb_other_servers(o, o->server, P.pname, P.pport, MAX_PROBES);
    if (P.np == 0) {
        fprintf(stderr, "herd-bench: prop needs a topology with more than one server\n");
        return 1;
    }
    P.epfd = epoll_create1(EPOLL_CLOEXEC);
    P.nsrc = o->conns > MAX_SRC ? MAX_SRC : o->conns;
    for (int i = 0; i < P.nsrc; i++) {
        int fd = hb_connect(P.src_host, P.src_port);
        if (fd < 0) {
            fprintf(stderr, "herd-bench: connect %s: %s\n", o->server, strerror(errno));
            return 1;
        }
        P.src[i] = hb_conn_new(P.epfd, fd, i);
    }
    for (int p = 0; p < P.np; p++) {
        hb_server_port(o, P.pname[p], &P.phost[p]);
        int fd = hb_connect(P.phost[p], P.pport[p]);
        if (fd < 0) {
            fprintf(stderr, "herd-bench: connect %s: %s\n", P.pname[p], strerror(errno));
            return 1;
        }
        P.pool[p][P.npool[p]++] = hb_conn_new(P.epfd, fd, PROBE_TAG + p);
        P.lo[p] = hb_hist_new();
        P.hi[p] = hb_hist_new();
    }
    P.limit = o->count ? o->count : UINT64_MAX;
    if (o->verify) {
        uint64_t cap = o->count ? o->count : (uint64_t)((o->rate > 0 ? o->rate : 500000) * o->duration * 1.1) + 1024;
        P.ats = calloc(cap, sizeof *P.ats);
        if (P.limit > cap)
            P.limit = cap;
    }
    P.all_lo = hb_hist_new();
    P.all_hi = hb_hist_new();
    P.negrtt = hb_hist_new();
    P.ack = hb_hist_new();
    if (run(&P) != 0) {
        fprintf(stderr, "herd-bench: prop run failed\n");
        return 1;
    }
    double secs = (double)((P.t_last_ack > P.t0 ? P.t_last_ack : P.t0) - P.t0) / 1e9;
    double per_poll = P.nsamples ? (double)P.polls / (double)P.nsamples : 0;
    char kv[4096];
    snprintf(kv, sizeof kv,
             "from=%s rate=%.0f updates=%" PRIu64 " secs=%.3f achieved_rate=%.1f samples=%zu lost_samples=%" PRIu64
             " errors=%" PRIu64 " polls_per_sample=%.1f",
             o->server, o->rate, P.acked, secs, secs > 0 ? (double)P.acked / secs : 0, P.nsamples, P.lost_samples,
             P.errors, per_poll);
    hb_hist_kv(P.all_lo, "all_lo", kv, sizeof kv);
    hb_hist_kv(P.all_hi, "all_hi", kv, sizeof kv);
    hb_hist_kv(P.negrtt, "negrtt", kv, sizeof kv);
    hb_hist_kv(P.ack, "ack", kv, sizeof kv);
    for (int p = 0; p < P.np; p++) {
        size_t k = strlen(kv);
        snprintf(kv + k, sizeof kv - k, " %s_lo_p50_us=%.1f %s_lo_p99_us=%.1f %s_hi_p50_us=%.1f %s_hi_p99_us=%.1f",
                 P.pname[p], (double)hb_hist_quantile(P.lo[p], 0.5) / 1e3, P.pname[p],
                 (double)hb_hist_quantile(P.lo[p], 0.99) / 1e3, P.pname[p],
                 (double)hb_hist_quantile(P.hi[p], 0.5) / 1e3, P.pname[p],
                 (double)hb_hist_quantile(P.hi[p], 0.99) / 1e3);
    }
    hb_say(o, "%" PRIu64 " updates to %s at %.0f/s; %zu watched, %" PRIu64 " never seen; visible everywhere after",
           P.acked, o->server, secs > 0 ? (double)P.acked / secs : 0, P.nsamples, P.lost_samples);
    hb_say(o, "  p50 %.1f..%.1f us, p99 %.1f..%.1f us, max %.1f..%.1f us (negative poll round trip p50 %.1f us)",
           hb_hist_quantile(P.all_lo, 0.5) / 1e3, hb_hist_quantile(P.all_hi, 0.5) / 1e3,
           hb_hist_quantile(P.all_lo, 0.99) / 1e3, hb_hist_quantile(P.all_hi, 0.99) / 1e3, P.all_lo->max / 1e3,
           P.all_hi->max / 1e3, hb_hist_quantile(P.negrtt, 0.5) / 1e3);
    uint64_t lost = 0;
    if (o->verify) {
        lost = verify(&P, kv, sizeof kv);
        size_t k = strlen(kv);
        snprintf(kv + k, sizeof kv - k, " lost_total=%" PRIu64, lost);
    }
    hb_result(o, kv);
    for (int i = 0; i < P.nsrc; i++)
        hb_conn_free(P.epfd, &P.src[i]);
    for (int p = 0; p < P.np; p++) {
        for (int i = 0; i < P.npool[p]; i++)
            hb_conn_free(P.epfd, &P.pool[p][i]);
        hb_hist_free(&P.lo[p]);
        hb_hist_free(&P.hi[p]);
    }
    if (P.ats)
        for (uint64_t i = 0; i < P.issued; i++)
            free(P.ats[i]);
    free(P.ats);
    free(P.samples);
    free(P.active);
    hb_hist_free(&P.all_lo);
    hb_hist_free(&P.all_hi);
    hb_hist_free(&P.negrtt);
    hb_hist_free(&P.ack);
    close(P.epfd);
    return (P.errors || P.lost_samples || lost) ? 3 : 0;
}
