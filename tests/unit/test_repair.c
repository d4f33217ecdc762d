/* Unit tests for herd_repair: whole anti-entropy exchanges between two
 * tables in one process.
 *
 * A fake link stands for the ZeroMQ pair: each side's sends are queued, in
 * order, for the other side, which decodes them with herd_wire_decode and
 * hands them to the herd_repair step the message calls for, as herd_links
 * does (DIGEST -> on_digest, 1 => SYNC_END; GROUPS -> on_groups; BUCKETS ->
 * on_buckets; FPRINTS -> on_fprints; WANT -> on_want, SYNC_END after the
 * last; UPDATES -> herd_table_update with the fields herd_record_parse
 * finds). Side A always opens, once: every case checks that this one round
 * leaves both tables with the same digest and the same records, each the
 * higher-ranked of the two sides' records for its client, and that a second
 * round then finds nothing to do. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "herd_proto.h"
#include "herd_record.h"
#include "herd_repair.h"
#include "herd_table.h"
#include "herd_wire.h"

/* ------------------------------------------------------- the fake link */

typedef struct qmsg {
    char *data;        /* an encoded message (owned) */
    size_t len;
    struct qmsg *next;
} qmsg_t;

/* One end of the link: a table and the messages queued for it. */
typedef struct {
    const char *name;
    herd_table_t *t;
    qmsg_t *head, *tail;          /* messages sent to this side, oldest first */
    uint64_t msgs_in[HERD_MSG_RECORDS + 1];  /* messages received, by type */
    uint64_t bytes_in[HERD_MSG_RECORDS + 1]; /* their bytes, by type */
    uint64_t stored;              /* UPDATES lines that replaced or added a record */
    uint64_t not_stored;          /* UPDATES lines that did not (SAME or OLDER) */
    uint64_t sync_ends;           /* SYNC_END received */
    uint64_t nothing_differs;     /* on_groups found no group differing */
    bool queue_fails;             /* make sends fail (the link's queue is full) */
    /* With maps on, each side keeps what its exchange asked about and what
     * its answer offered, as herd_links does (herd_repair_io_t.buckets). */
    uint8_t ask[HERD_REPAIR_BITMAP_BYTES], offer[HERD_REPAIR_BITMAP_BYTES];
} side_t;

static bool maps; /* the cases run with the maps when true */

typedef struct {
    side_t a, b;
} link_t;

/* The send callback: queues data for the side `arg`. */
static int link_send(void *arg, char *data, size_t len)
{
    side_t *to = arg;
    if (to->queue_fails) {
        free(data);
        return -1;
    }
    qmsg_t *q = malloc(sizeof *q);
    assert_non_null(q);
    *q = (qmsg_t){data, len, NULL};
    if (to->tail)
        to->tail->next = q;
    else
        to->head = q;
    to->tail = q;
    return 0;
}

static void link_init(link_t *l)
{
    memset(l, 0, sizeof *l);
    l->a.name = "A";
    l->b.name = "B";
    l->a.t = herd_table_new();
    l->b.t = herd_table_new();
    assert_true(l->a.t != NULL && l->b.t != NULL);
}

static void link_reset_counts(link_t *l)
{
    side_t *s[2] = {&l->a, &l->b};
    for (int i = 0; i < 2; i++) {
        memset(s[i]->msgs_in, 0, sizeof s[i]->msgs_in);
        memset(s[i]->bytes_in, 0, sizeof s[i]->bytes_in);
        s[i]->stored = s[i]->not_stored = s[i]->sync_ends = s[i]->nothing_differs = 0;
    }
}

static void link_free(link_t *l)
{
    side_t *s[2] = {&l->a, &l->b};
    for (int i = 0; i < 2; i++) {
        while (s[i]->head) {
            qmsg_t *q = s[i]->head;
            s[i]->head = q->next;
            free(q->data);
            free(q);
        }
        herd_table_destroy(&s[i]->t);
    }
}

static uint64_t bytes_total(const side_t *s)
{
    uint64_t n = 0;
    for (int t = 0; t <= HERD_MSG_RECORDS; t++)
        n += s->bytes_in[t];
    return n;
}

/* Stores one AT line received in UPDATES, as the node does. */
static void apply_line(side_t *me, const char *line, size_t len)
{
    herd_at_t at;
    if (herd_record_parse(line, len, &at) != 0)
        fail_msg("%s got an AT line that does not parse: %.*s", me->name, (int)len, line);
    herd_update_t u = herd_table_update(me->t, at.id.p, at.id.len, at.time, line, len, (size_t)(at.pos.p - line),
                                        at.pos.len, NULL);
    assert_true(u == HERD_UPDATE_NEWER || u == HERD_UPDATE_SAME || u == HERD_UPDATE_OLDER);
    if (u == HERD_UPDATE_NEWER)
        me->stored++;
    else
        me->not_stored++;
}

/* Delivers the oldest message queued for `me` (which answers to `peer`). */
static void deliver_one(side_t *me, side_t *peer)
{
    qmsg_t *q = me->head;
    me->head = q->next;
    if (me->head == NULL)
        me->tail = NULL;
    herd_msg_t m;
    char err[256];
    if (herd_wire_decode(q->data, q->len, &m, err, sizeof err) != 0)
        fail_msg("%s got a message it cannot decode: %s", me->name, err);
    me->msgs_in[m.type]++;
    me->bytes_in[m.type] += q->len;
    herd_repair_io_t io = {.send = link_send, .arg = peer};
    char *out;
    size_t len;
    switch (m.type) {
    case HERD_MSG_HELLO: /* a rejoin opens with HELLO: answered like DIGEST */
    case HERD_MSG_DIGEST: {
        int rc = herd_repair_on_digest(me->t, m.count, m.digest, &io);
        assert_int_not_equal(rc, -1);
        if (rc == 1) {
            assert_int_equal(herd_wire_encode_sync_end(0, 0, &out, &len), 0);
            assert_int_equal(link_send(peer, out, len), 0);
        }
        break;
    }
    case HERD_MSG_GROUPS: {
        if (maps) {
            memset(me->ask, 0, sizeof me->ask);
            io.buckets = me->ask;
        }
        int rc = herd_repair_on_groups(me->t, &m, &io);
        assert_int_not_equal(rc, -1);
        if (rc == 1)
            me->nothing_differs++;
        break;
    }
    case HERD_MSG_BUCKETS:
        if (maps) {
            memset(me->offer, 0, sizeof me->offer);
            io.buckets = me->offer;
        }
        assert_int_equal(herd_repair_on_buckets(me->t, &m, &io), 0);
        break;
    case HERD_MSG_FPRINTS:
        io.buckets = maps ? me->ask : NULL;
        assert_int_equal(herd_repair_on_fprints(me->t, &m, &io), 0);
        assert_int_equal(io.skipped, 0);
        break;
    case HERD_MSG_WANT:
        io.buckets = maps ? me->offer : NULL;
        assert_int_equal(herd_repair_on_want(me->t, &m, &io), 0);
        assert_int_equal(io.skipped, 0);
        if (m.last) {
            assert_int_equal(herd_wire_encode_sync_end(0, io.records, &out, &len), 0);
            assert_int_equal(link_send(peer, out, len), 0);
        }
        break;
    case HERD_MSG_UPDATES:
    case HERD_MSG_RECORDS:
        for (size_t i = 0; i < m.n_updates; i++)
            apply_line(me, m.updates[i].p, m.updates[i].len);
        break;
    case HERD_MSG_SYNC_END:
        me->sync_ends++;
        break;
    }
    assert_false(io.failed);
    herd_wire_msg_free(&m);
    free(q->data);
    free(q);
}

/* One round: A opens (with DIGEST, or with HELLO as after a restart), then
 * the messages flow, one to each side in turn, until neither has any
 * waiting. */
static void run_round_with(link_t *l, bool hello)
{
    herd_repair_io_t io = {.send = link_send, .arg = &l->b};
    if (hello) {
        char *out;
        size_t len;
        assert_int_equal(herd_wire_encode_hello("Alfa", 7, herd_table_size(l->a.t), herd_table_digest(l->a.t), &out,
                                                &len),
                         0);
        assert_int_equal(link_send(&l->b, out, len), 0);
    } else {
        assert_int_equal(herd_repair_start(l->a.t, &io), 0);
    }
    while (l->a.head || l->b.head) {
        if (l->b.head)
            deliver_one(&l->b, &l->a);
        if (l->a.head)
            deliver_one(&l->a, &l->b);
    }
    /* The round ended as the protocol says: B answered A's one DIGEST,
     * and the exchange closed with one SYNC_END (or A found nothing). */
    assert_int_equal(l->b.msgs_in[hello ? HERD_MSG_HELLO : HERD_MSG_DIGEST], 1);
    assert_int_equal(l->b.msgs_in[HERD_MSG_DIGEST] + l->b.msgs_in[HERD_MSG_HELLO], 1);
    assert_int_equal(l->a.msgs_in[HERD_MSG_DIGEST] + l->a.msgs_in[HERD_MSG_HELLO], 0);
    assert_int_equal(l->b.sync_ends, 0);
    assert_int_equal(l->a.sync_ends + l->a.nothing_differs, 1);
}

static void run_round(link_t *l)
{
    run_round_with(l, false);
}

/* ------------------------------------------------------ records */

/* Writes an AT line like the ones servers make (~85 bytes). */
static size_t format_at(char *buf, size_t cap, const char *origin, const char *id, const char *pos, int64_t sec,
                        long nsec, long skew_ns)
{
    int n = snprintf(buf, cap, "AT %s +%ld.%09ld %s %s %lld.%09ld", origin, skew_ns / 1000000000, skew_ns % 1000000000,
                     id, pos, (long long)sec, nsec);
    assert_true(n > 0 && (size_t)n < cap);
    return (size_t)n;
}

/* Offers an AT line to a table the way apply_line does; returns the result. */
static herd_update_t put(herd_table_t *t, const char *origin, const char *id, const char *pos, int64_t sec,
                         long nsec, long skew_ns)
{
    char line[HERD_AT_MAX];
    size_t len = format_at(line, sizeof line, origin, id, pos, sec, nsec, skew_ns);
    herd_at_t at;
    assert_int_equal(herd_record_parse(line, len, &at), 0);
    return herd_table_update(t, at.id.p, at.id.len, at.time, line, len, (size_t)(at.pos.p - line), at.pos.len,
                             NULL);
}

static void client_id(char *buf, size_t cap, uint64_t i)
{
    snprintf(buf, cap, "client-%07llu", (unsigned long long)i);
}

/* Client i's record, number `version` (a later version has a later time). */
static void put_client(herd_table_t *t, uint64_t i, int version)
{
    char id[32], pos[48];
    client_id(id, sizeof id, i);
    snprintf(pos, sizeof pos, "+%02u.%06u-%03u.%06u", (unsigned)(i % 90), (unsigned)(i * 7 % 1000000),
             (unsigned)(i % 180), (unsigned)(i * 13 % 1000000));
    assert_int_equal(put(t, i % 2 ? "Clark" : "Bailey", id, pos, 1621464827 + version, (long)(i % 1000000000),
                         263873386),
                     HERD_UPDATE_NEWER);
}

/* Both tables hold the same records, byte for byte, and the same digests. */
static void assert_tables_equal(const herd_table_t *x, const herd_table_t *y)
{
    assert_int_equal(herd_table_size(x), herd_table_size(y));
    assert_true(herd_table_digest(x) == herd_table_digest(y));
    assert_memory_equal(herd_table_group_digests(x), herd_table_group_digests(y),
                        HERD_TABLE_GROUPS * sizeof(uint64_t));
    assert_memory_equal(herd_table_bucket_digests(x), herd_table_bucket_digests(y),
                        HERD_TABLE_BUCKETS * sizeof(uint64_t));
    size_t cur = 0;
    const herd_record_t *r;
    while ((r = herd_table_next(x, &cur)) != NULL) {
        const herd_record_t *o = herd_table_find(y, r->id, r->id_len);
        if (o == NULL)
            fail_msg("client %.*s is missing", (int)r->id_len, r->id);
        assert_int_equal(o->at_len, r->at_len);
        assert_memory_equal(o->at, r->at, r->at_len);
    }
}

/* The table every exchange should end with: the higher-ranked record of
 * each client from both sides, offered to a fresh table in any order. */
static herd_table_t *merged(const herd_table_t *x, const herd_table_t *y)
{
    herd_table_t *m = herd_table_new();
    assert_non_null(m);
    const herd_table_t *src[2] = {y, x};
    for (int k = 0; k < 2; k++) {
        size_t cur = 0;
        const herd_record_t *r;
        while ((r = herd_table_next(src[k], &cur)) != NULL)
            assert_int_not_equal(herd_table_update(m, r->id, r->id_len, r->time, r->at, r->at_len, r->pos_off,
                                                   r->pos_len, NULL),
                                 HERD_UPDATE_ERROR);
    }
    return m;
}

/* Runs one round and checks that both tables now equal the merge of what
 * they held. */
static void first_round(link_t *l)
{
    herd_table_t *want = merged(l->a.t, l->b.t);
    run_round(l);
    assert_tables_equal(l->a.t, want);
    assert_tables_equal(l->b.t, want);
    herd_table_destroy(&want);
}

/* A round after a repair: only DIGEST and SYNC_END. */
static void second_round(link_t *l)
{
    link_reset_counts(l);
    run_round(l);
    assert_int_equal(l->a.sync_ends, 1);
    assert_int_equal(l->b.msgs_in[HERD_MSG_DIGEST] + l->a.msgs_in[HERD_MSG_SYNC_END], 2);
    assert_int_equal(l->a.msgs_in[HERD_MSG_UPDATES] + l->b.msgs_in[HERD_MSG_UPDATES], 0);
    assert_int_equal(l->a.msgs_in[HERD_MSG_RECORDS] + l->b.msgs_in[HERD_MSG_RECORDS], 0);
    assert_int_equal(l->b.msgs_in[HERD_MSG_BUCKETS] + l->a.msgs_in[HERD_MSG_GROUPS], 0);
}

/* One round, checked, then a second one that finds nothing to do. */
static void exchange_and_check(link_t *l)
{
    first_round(l);
    second_round(l);
}

/* --------------------------------------------------------------- cases */

static void test_equal_tables(void **state)
{
    (void)state;
    link_t l;
    link_init(&l);
    run_round(&l); /* two empty tables */
    assert_int_equal(l.a.sync_ends, 1);
    for (uint64_t i = 0; i < 5000; i++) {
        put_client(l.a.t, i, 1);
        put_client(l.b.t, 4999 - i, 1); /* another order: the digests do not care */
    }
    link_reset_counts(&l);
    run_round(&l);
    /* Only DIGEST one way and SYNC_END the other: a few dozen bytes. */
    assert_int_equal(l.b.msgs_in[HERD_MSG_DIGEST], 1);
    assert_int_equal(l.a.msgs_in[HERD_MSG_SYNC_END], 1);
    uint64_t total = bytes_total(&l.a) + bytes_total(&l.b);
    assert_int_equal(total, l.b.bytes_in[HERD_MSG_DIGEST] + l.a.bytes_in[HERD_MSG_SYNC_END]);
    assert_true(total <= 30);
    print_message("equal tables of 5000: %llu bytes in all (DIGEST %llu, SYNC_END %llu)\n",
                  (unsigned long long)total, (unsigned long long)l.b.bytes_in[HERD_MSG_DIGEST],
                  (unsigned long long)l.a.bytes_in[HERD_MSG_SYNC_END]);
    assert_int_equal(l.a.stored + l.b.stored, 0);
    assert_tables_equal(l.a.t, l.b.t);
    link_free(&l);
}

static void test_one_side_empty(void **state)
{
    (void)state;
    for (int opener_empty = 0; opener_empty < 2; opener_empty++) {
        link_t l;
        link_init(&l);
        herd_table_t *full = opener_empty ? l.b.t : l.a.t;
        for (uint64_t i = 0; i < 5000; i++)
            put_client(full, i, 1);
        exchange_and_check(&l);
        assert_int_equal(herd_table_size(l.a.t), 5000);
        link_free(&l);
    }
}

static void test_disjoint(void **state)
{
    (void)state;
    link_t l;
    link_init(&l);
    for (uint64_t i = 0; i < 3000; i++) {
        put_client(l.a.t, i, 1);
        put_client(l.b.t, 100000 + i, 1);
    }
    exchange_and_check(&l);
    assert_int_equal(herd_table_size(l.a.t), 6000);
    link_free(&l);
}

/* 20000 clients; A lacks 1% of them, or B does, or each lacks another 1%:
 * each side receives exactly the records it lacks, and nothing else. */
static void test_one_percent_missing(void **state)
{
    (void)state;
    const uint64_t n = 20000;
    for (int mode = 0; mode < 3; mode++) { /* 0: A lacks, 1: B lacks, 2: both */
        link_t l;
        link_init(&l);
        uint64_t a_lacks = 0, b_lacks = 0;
        for (uint64_t i = 0; i < n; i++) {
            uint64_t h = i * 0x9e3779b97f4a7c15u >> 32;
            if (mode != 1 && h % 100 == 0)
                a_lacks++;
            else
                put_client(l.a.t, i, 1);
            if (mode != 0 && h % 100 == 1)
                b_lacks++;
            else
                put_client(l.b.t, i, 1);
        }
        assert_true(mode == 1 || a_lacks > 100);
        assert_true(mode == 0 || b_lacks > 100);
        first_round(&l);
        assert_int_equal(herd_table_size(l.a.t), n);
        assert_int_equal(l.a.stored, a_lacks);
        assert_int_equal(l.b.stored, b_lacks);
        assert_int_equal(l.a.not_stored + l.b.not_stored, 0); /* not one record sent for nothing */
        print_message("1%% missing (%s) of %llu: %llu bytes to A, %llu to B\n",
                      mode == 0 ? "A" : mode == 1 ? "B" : "both", (unsigned long long)n,
                      (unsigned long long)bytes_total(&l.a), (unsigned long long)bytes_total(&l.b));
        second_round(&l);
        link_free(&l);
    }
}

/* A rejoining server opens with HELLO (its count and digest) instead of
 * DIGEST; the answer and the repair are the same. */
static void test_hello_opens(void **state)
{
    (void)state;
    link_t l;
    link_init(&l);
    for (uint64_t i = 0; i < 3000; i++) {
        if (i % 7 != 0)
            put_client(l.a.t, i, 1);
        if (i % 11 != 0)
            put_client(l.b.t, i, i % 13 == 0 ? 2 : 1);
    }
    herd_table_t *want = merged(l.a.t, l.b.t);
    run_round_with(&l, true);
    assert_tables_equal(l.a.t, want);
    assert_tables_equal(l.b.t, want);
    herd_table_destroy(&want);
    /* And HELLO between equal tables is answered with SYNC_END alone. */
    link_reset_counts(&l);
    run_round_with(&l, true);
    assert_int_equal(l.a.sync_ends, 1);
    assert_int_equal(l.a.msgs_in[HERD_MSG_GROUPS], 0);
    link_free(&l);
}

/* Same client and time on both sides but another origin, position or skew:
 * both sides end with the higher-ranked record, whichever side held it. */
static void test_ties(void **state)
{
    (void)state;
    link_t l;
    link_init(&l);
    char id[32];
    const int64_t t0 = 1700000000;
    for (uint64_t i = 0; i < 600; i++) {
        client_id(id, sizeof id, i);
        herd_table_t *hi = i % 2 ? l.a.t : l.b.t, *lo = i % 2 ? l.b.t : l.a.t;
        switch (i % 6 / 2) {
        case 0: /* origin: "Bona" > "Alfa" */
            put(hi, "Bona", id, "+10.000000+010.000000", t0, 5, 1000);
            put(lo, "Alfa", id, "+10.000000+010.000000", t0, 5, 1000);
            break;
        case 1: /* same origin, position "+20..." > "+10..." */
            put(hi, "Clark", id, "+20.000000+010.000000", t0, 5, 1000);
            put(lo, "Clark", id, "+10.000000+090.000000", t0, 5, 1000);
            break;
        default: /* same origin and position, the skew differs: the line decides */
            put(hi, "Clark", id, "+10.000000+010.000000", t0, 5, 9000);
            put(lo, "Clark", id, "+10.000000+010.000000", t0, 5, 1000);
            break;
        }
    }
    exchange_and_check(&l);
    for (uint64_t i = 0; i < 600; i++) {
        client_id(id, sizeof id, i);
        const herd_record_t *r = herd_table_find(l.a.t, id, strlen(id));
        assert_non_null(r);
        const char *want = i % 6 / 2 == 0 ? "AT Bona " : i % 6 / 2 == 1 ? "+20.000000" : "+0.000009000";
        if (strstr(r->at, want) == NULL)
            fail_msg("client %s ended with %s, wanted the line with %s", id, r->at, want);
    }
    link_free(&l);
}

/* Both sides updated some of the same clients: each client ends with its
 * latest record, wherever that was. */
static void test_updates_on_both_sides(void **state)
{
    (void)state;
    link_t l;
    link_init(&l);
    for (uint64_t i = 0; i < 4000; i++) {
        put_client(l.a.t, i, 1);
        put_client(l.b.t, i, 1);
    }
    for (uint64_t i = 0; i < 4000; i += 3) {
        put_client(i % 2 ? l.a.t : l.b.t, i, 2);                 /* one side has version 2 */
        if (i % 9 == 0)
            put_client(i % 2 ? l.b.t : l.a.t, i, 3);             /* the other then version 3 */
    }
    exchange_and_check(&l);
    for (uint64_t i = 0; i < 4000; i++) {
        char id[32];
        client_id(id, sizeof id, i);
        const herd_record_t *r = herd_table_find(l.b.t, id, strlen(id));
        int64_t version = i % 9 == 0 ? 3 : i % 3 == 0 ? 2 : 1;
        assert_int_equal(r->time.sec, 1621464827 + version);
    }
    link_free(&l);
}

/* Many clients in one bucket (ids found by brute force): hundreds of
 * fingerprints in one FPRINTS bucket, and records both missing and newer on
 * each side within it. */
static void test_huge_bucket(void **state)
{
    (void)state;
    enum { N = 800 };
    char (*ids)[24] = malloc(N * sizeof *ids);
    assert_non_null(ids);
    /* Ids "huge-" and 8 letters counting up (no snprintf: it would cost
     * more than the hash over the ~N * 65536 tries). */
    char id[24] = "huge-aaaaaaaa";
    const size_t id_len = strlen(id);
    const uint32_t target = herd_table_bucket_of(id, id_len);
    size_t found = 0;
    while (found < N) {
        if (herd_table_bucket_of(id, id_len) == target)
            memcpy(ids[found++], id, sizeof id);
        for (size_t p = id_len - 1; p >= 5; p--) { /* the next id */
            if (id[p] != 'z') {
                id[p]++;
                break;
            }
            id[p] = 'a';
        }
    }
    link_t l;
    link_init(&l);
    for (size_t i = 0; i < N; i++) {
        const char *pos = "+34.068930-118.445127";
        if (i % 5 != 0)
            put(l.a.t, "Clark", ids[i], pos, 1621464827 + (i % 7 == 0), 1, 1000);
        if (i % 5 != 1)
            put(l.b.t, "Bailey", ids[i], pos, 1621464827 + (i % 11 == 0), 1, 1000);
    }
    /* And ordinary clients elsewhere, some missing on each side. */
    for (uint64_t i = 0; i < 2000; i++) {
        if (i % 50 != 0)
            put_client(l.a.t, i, 1);
        if (i % 50 != 25)
            put_client(l.b.t, i, 1);
    }
    exchange_and_check(&l);
    size_t in_bucket = 0;
    const void *cur = NULL;
    while (herd_table_bucket_next(l.a.t, target, &cur) != NULL)
        in_bucket++;
    assert_true(in_bucket >= N);
    link_free(&l);
    free(ids);
}

/* Every record differs (B holds a later version of each of 270000
 * clients): more fingerprints than one FPRINTS carries and more pairs than
 * one WANT carries, so both come in several messages, only the last marked
 * last, and the round still ends with one SYNC_END; with the maps of
 * herd_links on, so each bucket is answered once. */
static void test_chunked_messages(void **state)
{
    (void)state;
    maps = true; /* as herd_links runs it: a WANT cut at a bucket's end loses nothing */
    link_t l;
    link_init(&l);
    const uint64_t n = 270000;
    for (uint64_t i = 0; i < n; i++) {
        put_client(l.a.t, i, 1);
        put_client(l.b.t, i, 2);
    }
    run_round(&l); /* no merged table to compare with: the counts below say the same, cheaper */
    assert_true(l.a.msgs_in[HERD_MSG_FPRINTS] >= 2);
    assert_true(l.b.msgs_in[HERD_MSG_WANT] >= 2);
    assert_int_equal(l.a.stored, n);
    assert_int_equal(l.b.not_stored, n); /* A's older records, sent because B did not list them */
    assert_int_equal(l.b.stored, 0);
    assert_tables_equal(l.a.t, l.b.t);
    second_round(&l);
    link_free(&l);
    maps = false;
}

/* Random tables from a common past: each side drops, adds and updates at
 * random; one round always brings both to the merge. */
static void test_random_divergence(void **state)
{
    (void)state;
    uint64_t rng = 0x1234567u;
    for (int round = 0; round < 12; round++) {
        link_t l;
        link_init(&l);
        uint64_t n = 200 + (rng = rng * 6364136223846793005u + 1442695040888963407u) % 3000;
        for (uint64_t i = 0; i < n; i++) {
            uint64_t r = (rng = rng * 6364136223846793005u + 1442695040888963407u) >> 33;
            if (r % 10 != 0)
                put_client(l.a.t, i, 1 + (int)(r >> 8) % 3);
            if (r % 10 != 1)
                put_client(l.b.t, i, 1 + (int)(r >> 12) % 3);
        }
        exchange_and_check(&l);
        link_free(&l);
    }
}

/* A link whose queue refuses a message: the step says so in io.failed and
 * returns -1, and a later round (queue working again) still repairs. */
static void test_send_failure(void **state)
{
    (void)state;
    link_t l;
    link_init(&l);
    for (uint64_t i = 0; i < 1000; i++)
        put_client(l.b.t, i, 1);
    l.b.queue_fails = true;
    herd_repair_io_t io = {.send = link_send, .arg = &l.b};
    assert_int_equal(herd_repair_start(l.a.t, &io), -1);
    assert_true(io.failed);
    l.b.queue_fails = false;
    exchange_and_check(&l);
    assert_int_equal(herd_table_size(l.a.t), 1000);
    link_free(&l);
}

/* With the maps herd_links keeps, the legitimate exchanges of the cases
 * above still end in one round: every FPRINTS answers buckets that were
 * asked about, every WANT buckets that were offered, each once. */
static void test_with_offered_maps(void **state)
{
    maps = true;
    test_one_percent_missing(state);
    test_random_divergence(state);
    maps = false;
}

/* B answers only what it offered: a WANT for a bucket its last FPRINTS did
 * not list sends nothing, and a bucket is answered once. */
static void test_want_only_what_was_offered(void **state)
{
    (void)state;
    herd_table_t *t = herd_table_new();
    assert_non_null(t);
    for (uint64_t i = 0; i < 500; i++)
        put_client(t, i, 1);
    /* Every record of ours, wanted by (bucket, fingerprint). */
    uint16_t *buckets = malloc(500 * sizeof *buckets);
    uint64_t *fps = malloc(500 * sizeof *fps);
    assert_non_null(buckets);
    assert_non_null(fps);
    size_t m = 0;
    for (uint32_t b = 0; b < HERD_TABLE_BUCKETS && m < 500; b++) {
        const void *cur = NULL;
        const herd_record_t *r;
        while ((r = herd_table_bucket_next(t, b, &cur)) != NULL) {
            buckets[m] = (uint16_t)b;
            fps[m++] = r->digest;
        }
    }
    assert_int_equal(m, 500);
    char *data;
    size_t len;
    assert_int_equal(herd_wire_encode_want(true, buckets, fps, m, &data, &len), 0);
    herd_msg_t msg;
    char err[128];
    assert_int_equal(herd_wire_decode(data, len, &msg, err, sizeof err), 0);
    side_t sink;
    memset(&sink, 0, sizeof sink);
    uint8_t offered[HERD_REPAIR_BITMAP_BYTES] = {0};
    herd_repair_io_t io = {.send = link_send, .arg = &sink, .buckets = offered};
    assert_int_equal(herd_repair_on_want(t, &msg, &io), 0);
    assert_int_equal(io.records, 0); /* nothing was offered */
    assert_true(io.skipped > 0);
    /* One bucket offered: its records go, once. */
    offered[buckets[0] >> 3] |= (uint8_t)(1u << (buckets[0] & 7));
    size_t in_first = 0;
    while (in_first < m && buckets[in_first] == buckets[0])
        in_first++;
    io = (herd_repair_io_t){.send = link_send, .arg = &sink, .buckets = offered};
    assert_int_equal(herd_repair_on_want(t, &msg, &io), 0);
    assert_int_equal(io.records, in_first);
    io = (herd_repair_io_t){.send = link_send, .arg = &sink, .buckets = offered};
    assert_int_equal(herd_repair_on_want(t, &msg, &io), 0);
    assert_int_equal(io.records, 0);
    while (sink.head) {
        qmsg_t *q = sink.head;
        sink.head = q->next;
        free(q->data);
        free(q);
    }
    herd_wire_msg_free(&msg);
    free(data);
    free(buckets);
    free(fps);
    herd_table_destroy(&t);
}

int main(int argc, char **argv)
{
    if (argc > 1)
        cmocka_set_test_filter(argv[1]); /* run one case: test_repair test_ties */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_equal_tables),
        cmocka_unit_test(test_one_side_empty),
        cmocka_unit_test(test_disjoint),
        cmocka_unit_test(test_one_percent_missing),
        cmocka_unit_test(test_hello_opens),
        cmocka_unit_test(test_ties),
        cmocka_unit_test(test_updates_on_both_sides),
        cmocka_unit_test(test_huge_bucket),
        cmocka_unit_test(test_chunked_messages),
        cmocka_unit_test(test_random_divergence),
        cmocka_unit_test(test_send_failure),
        cmocka_unit_test(test_with_offered_maps),
        cmocka_unit_test(test_want_only_what_was_offered),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
