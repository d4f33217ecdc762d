/* herd_links_repair: the exchange protocol of one link (which exchange to
 * open and when, which answers to accept, rate limits, liveness), driving
 * the pure steps of herd_repair. It sits below the link manager
 * (herd_links.c), which owns the sockets: its inputs are the messages a
 * neighbour sent and the time, its outputs messages handed to the manager's
 * links_net_t (send, flush, writable) and the state of the neighbour it
 * reads and marks (up, synced, a redial due). See herd_links.h and
 * herd_repair.h. */
#include "herd_links_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "herd_repair.h"
#include "herd_wire.h"

#define LIVENESS_MS     5000               /* a link whose neighbour answers no exchange this long is redialled */
#define HELLO_QUIET_MS  1000               /* a HELLO is answered with ours unless we sent one this recently */
#define CHECK_MS        1000               /* an exchange with each neighbour at least this often */
#define ROUND_MS        5000               /* an exchange not ended by then is given up (and retried) */
#define ANSWER_WAIT_MS  300                /* ... and one whose first message got no answer by then */
#define ANSWER_MS       6000               /* how long its WANTs are accepted after our FPRINTS (> ROUND_MS) */
#define HEAVY_PER_SEC   4                  /* BUCKETS requests answered per neighbour per second */
#define LIGHT_PER_SEC   20                 /* HELLO and DIGEST answered (and logged) per neighbour per second */
#define FPRINTS_PER_SEC 64                 /* FPRINTS taken per neighbour per second (a big one comes in chunks) */
#define ANSWER_RECORDS_PER_MS 16           /* after an answer of n records, the next BUCKETS waits n / this ms */

/* The send callback of an exchange: one message to one neighbour. */
static int repair_send(void *arg, char *data, size_t len)
{
    neighbour_t *nb = arg;
    nb->repair_bytes_out += len;
    return nb->links->net->send(nb->links, nb, data, len);
}

/* HELLO: our name, incarnation and table digest (opens a rejoin exchange). */
static void send_hello(herd_links_t *links, neighbour_t *nb)
{
    char *data;
    size_t len;
    nb->hello_ms = herd_loop_now_ms(links->loop);
    if (herd_wire_encode_hello(links->self_name, links->incarnation, herd_table_size(links->table),
                               herd_table_digest(links->table), &data, &len) == 0)
        links->net->send(links, nb, data, len);
}

/* SYNC_END: the end of our answer to its exchange, with the records sent. */
static void send_sync_end(herd_links_t *links, neighbour_t *nb, uint64_t sent)
{
    char *data;
    size_t len;
    if (herd_wire_encode_sync_end(links->incarnation, sent, &data, &len) == 0)
        links->net->send(links, nb, data, len);
}

static herd_repair_io_t repair_io(neighbour_t *nb)
{
    return (herd_repair_io_t){.send = repair_send, .arg = nb};
}

/* One of nb's two bitmaps (what our open exchange asked about, what our
 * answer to its exchange offered), cleared; NULL without memory (the step
 * then answers nothing: the next exchange tries again). */
static uint8_t *bitmap(neighbour_t *nb, bool answer)
{
    if (!nb->offered && !(nb->offered = calloc(2, HERD_REPAIR_BITMAP_BYTES)))
        return NULL;
    uint8_t *map = nb->offered + (answer ? HERD_REPAIR_BITMAP_BYTES : 0);
    memset(map, 0, HERD_REPAIR_BITMAP_BYTES);
    return map;
}

/* The same bitmap, as it is (NULL when none was made: nothing is offered). */
static uint8_t *bitmap_kept(neighbour_t *nb, bool answer)
{
    return nb->offered ? nb->offered + (answer ? HERD_REPAIR_BITMAP_BYTES : 0) : NULL;
}

/* A time on the wall clock, in seconds, for the metrics. */
static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* An exchange with nb ended: the tables hold the same now (as far as that
 * exchange could tell). */
static void exchange_success(neighbour_t *nb)
{
    nb->success_s = wall_now();
}

/* Notes a request sent to nb: its answer is awaited (liveness) and accepted. */
static void asked(neighbour_t *nb, int64_t now)
{
    nb->asked_ms = now;
    if (!nb->waiting_ms)
        nb->waiting_ms = now;
}

/* Opens an exchange with a neighbour: HELLO the first time after its link
 * came up (it is logged, and tells our incarnation), DIGEST after that. */
void links_round_open(herd_links_t *links, neighbour_t *nb, bool hello)
{
    int64_t now = herd_loop_now_ms(links->loop);
    nb->round_ms = now;
    asked(nb, now);
    nb->round_answered = false;
    nb->round_records = 0;
    nb->rounds++;
    links->net->flush(links); /* updates queued before go first */
    if (hello) {
        send_hello(links, nb);
        return;
    }
    herd_repair_io_t io = repair_io(nb);
    herd_repair_start(links->table, &io);
}

void links_round_close(herd_links_t *links, neighbour_t *nb)
{
    nb->round_ms = 0;
    nb->round_end_ms = herd_loop_now_ms(links->loop);
}

/* Marks our link to nb up on an answer to our own request: our DEALER's
 * connection works even if its handshake event never reached us. */
static void answered(herd_links_t *links, neighbour_t *nb)
{
    nb->waiting_ms = 0;
    if (!nb->up && links->net->writable(nb)) { /* a late answer after a disconnect proves nothing */
        nb->up = true;
        nb->drop_logged = false;
        herd_log_event(links->log, "link to %s up", nb->name);
    }
}

/* Our exchange with nb is done: we hold what it holds. */
static void round_done(herd_links_t *links, neighbour_t *nb, uint64_t received)
{
    answered(links, nb);
    exchange_success(nb);
    if (!nb->synced || received)
        herd_log_event(links->log, "repair: exchange with %s done (%" PRIu64 " records sent to us)", nb->name,
                       received);
    nb->synced = true;
    links_round_close(links, nb);
}

/* Whether one more request fits a per-second budget (a fixed one-second
 * window per neighbour and kind). */
static bool within_rate(herd_links_t *links, int64_t *window_ms, unsigned *count, unsigned per_sec)
{
    int64_t now = herd_loop_now_ms(links->loop);
    if (now - *window_ms >= 1000) {
        *window_ms = now;
        *count = 0;
    }
    return ++*count <= per_sec;
}

static void refuse(herd_links_t *links, neighbour_t *nb, const char *what)
{
    nb->repair_refused++;
    uint64_t left;
    char more[64];
    if (links_log_ok(links, LINKS_LOG_REPAIR, &left))
        herd_log_event(links->log, "repair: refused %s from %s (%" PRIu64 " refused so far)%s", what, nb->name,
                       nb->repair_refused, links_left_out(more, sizeof more, left));
}

/* Adds the records a step sent (io) to nb's totals and to the exchange's
 * (*total); after the exchange's last message, logs what it sent in all. */
static void records_sent(herd_links_t *links, neighbour_t *nb, const herd_repair_io_t *io, uint64_t *total, bool last)
{
    nb->repair_records_out += io->records;
    *total += io->records;
    if (last && *total)
        herd_log_event(links->log, "repair: sent %" PRIu64 " records to %s%s", *total, nb->name,
                       io->failed ? " (some were dropped: queue full; the next exchange repairs them)" : "");
}

/* Answers a FPRINTS (our exchange) or a WANT (our answer to its exchange)
 * with `step`, within what our side asked about or offered (the bitmap kept
 * for that exchange). Returns false when there is none (nothing is sent). */
static bool answer_offered(herd_links_t *links, neighbour_t *nb, const herd_msg_t *msg, herd_repair_io_t *io,
                           int (*step)(const herd_table_t *, const herd_msg_t *, herd_repair_io_t *),
                           uint64_t *total)
{
    bool want = msg->type == HERD_MSG_WANT;
    io->buckets = bitmap_kept(nb, want);
    if (!io->buckets)
        return false;
    step(links->table, msg, io);
    if (io->skipped)
        refuse(links, nb, want ? "WANT for records we did not offer" : "FPRINTS for buckets we did not ask about");
    records_sent(links, nb, io, total, msg->last);
    return true;
}

/* Our answer to nb's exchange is over (at `when`): the next BUCKETS waits
 * in proportion to what this one sent, and nothing it sends shortens that. */
static void answer_end(neighbour_t *nb, int64_t when)
{
    nb->answering_ms = 0;
    nb->answer_end_ms = when;
    nb->answer_gap_ms = (int64_t)(nb->answer_records / ANSWER_RECORDS_PER_MS);
    if (nb->answer_gap_ms > ANSWER_MS)
        nb->answer_gap_ms = ANSWER_MS;
    if (nb->offered) /* what it offered is answered or given up */
        memset(nb->offered + HERD_REPAIR_BITMAP_BYTES, 0, HERD_REPAIR_BITMAP_BYTES);
}

/* B's side: answers a DIGEST or HELLO with SYNC_END or GROUPS. */
static void answer_digest(herd_links_t *links, neighbour_t *nb, uint64_t count, uint64_t digest, bool hello)
{
    herd_repair_io_t io = repair_io(nb);
    links->net->flush(links);
    int rc = herd_repair_on_digest(links->table, count, digest, &io);
    nb->differ = rc != 1;
    if (rc == 1) {
        send_sync_end(links, nb, 0);
        exchange_success(nb);
    } else if (rc == 0) {
        nb->groups_ms = herd_loop_now_ms(links->loop); /* its BUCKETS may answer this, once */
    }
    if (rc == 1 && hello)
        herd_log_event(links->log, "rejoin: %s already holds what we hold", nb->name);
}

/* Each tick, for one neighbour: opens an exchange when it had none for
 * CHECK_MS (or its open one is overdue), and marks a link whose neighbour
 * answers nothing for a redial. */
void links_exchange_tick(herd_links_t *links, neighbour_t *nb, int64_t now)
{
    /* Its answer can be lost (its link to us not up yet when it answered):
     * an unanswered exchange is opened again soon, a stuck one later. */
    if (nb->up && nb->waiting_ms && now - nb->waiting_ms > LIVENESS_MS) {
        /* Connected but silent (a frozen process, a cut path): the DEALER
         * is made anew, so a fresh connection replaces the dead one. */
        herd_log_event(links->log, "link to %s: no answer for %lld ms: making the link anew", nb->name,
                       (long long)(now - nb->waiting_ms));
        herd_log_event(links->log, "link to %s down", nb->name);
        nb->waiting_ms = 0;
        nb->up = false;
        links_round_close(links, nb);
        nb->redial_at_ms = now;
        return;
    }
    if (nb->round_ms && now - nb->round_ms < (nb->round_answered ? ROUND_MS : ANSWER_WAIT_MS))
        return;
    if (nb->answering_ms && now - nb->answering_ms < 2 * CHECK_MS)
        return; /* its exchange with us is under way: that one repairs both sides */
    if (!nb->round_ms && now - nb->round_end_ms < CHECK_MS)
        return;
    /* Up by the monitor, or able to take a message (the handshake event
     * can be missed); the answer marks the link up. */
    if (!links->net->writable(nb))
        return;
    links_round_open(links, nb, !nb->up);
}

/* Handles one exchange message from nb (anything but UPDATES and RECORDS). */
void links_exchange(herd_links_t *links, neighbour_t *nb, const herd_msg_t *msg)
{
    int64_t now = herd_loop_now_ms(links->loop);
    herd_repair_io_t io = repair_io(nb);
    /* HELLO and DIGEST cost an answer (and HELLO a log line): a neighbour
     * that sends them faster than any exchange needs is not answered. */
    if ((msg->type == HERD_MSG_HELLO || msg->type == HERD_MSG_DIGEST) &&
        !within_rate(links, &nb->light_window_ms, &nb->light_count, LIGHT_PER_SEC)) {
        refuse(links, nb, msg->type == HERD_MSG_HELLO ? "HELLO past the rate limit" : "DIGEST past the rate limit");
        return;
    }
    if (msg->type == HERD_MSG_HELLO) {
        if (msg->name.len != strlen(nb->name) || memcmp(msg->name.p, nb->name, msg->name.len) != 0) {
            links->rejected++;
            uint64_t left;
            char more[64], prefix[128];
            if (links_log_ok(links, LINKS_LOG_NAME, &left)) {
                snprintf(prefix, sizeof prefix, "peer: dropped a HELLO whose name does not match its link%s: ",
                         links_left_out(more, sizeof more, left));
                herd_log_data(links->log, prefix, msg->name.p, msg->name.len);
            }
            return;
        }
        herd_log_event(links->log, "rejoin: HELLO from %s (incarnation %016" PRIx64 ", %" PRIu64 " clients)",
                       nb->name, msg->incarnation, msg->count);
    }
    /* An answer to our own request proves the neighbour alive even when we
     * cannot go on with the exchange now. */
    if ((msg->type == HERD_MSG_GROUPS || msg->type == HERD_MSG_FPRINTS) && now - nb->asked_ms <= ROUND_MS)
        nb->waiting_ms = 0;
    /* An exchange message we cannot answer now (our link to it is not up
     * yet, or its queue is full) is left unanswered: its sender opens the
     * exchange again soon. */
    if (msg->type != HERD_MSG_SYNC_END && !links->net->writable(nb))
        return;
    switch (msg->type) {
    case HERD_MSG_HELLO:
        answer_digest(links, nb, msg->count, msg->digest, true);
        /* Its exchange repairs both sides; ours waits until that one is
         * done (answering_ms), unless our link has not said HELLO yet. */
        if (!nb->hello_ms || (now - nb->hello_ms > HELLO_QUIET_MS && !nb->round_ms))
            if (links->net->writable(nb))
                links_round_open(links, nb, true);
        break;
    case HERD_MSG_DIGEST:
        answer_digest(links, nb, msg->count, msg->digest, false);
        break;
    case HERD_MSG_GROUPS:
        if (now - nb->asked_ms > ROUND_MS) {
            refuse(links, nb, "GROUPS we did not ask for");
            break;
        }
        answered(links, nb);
        nb->round_answered = true;
        nb->differ = true;
        io.buckets = bitmap(nb, false);
        if (!io.buckets)
            break;
        if (herd_repair_on_groups(links->table, msg, &io) == 1)
            round_done(links, nb, 0);
        else
            asked(nb, now);
        break;
    case HERD_MSG_BUCKETS:
        if (!within_rate(links, &nb->heavy_window_ms, &nb->heavy_count, HEAVY_PER_SEC)) {
            refuse(links, nb, "BUCKETS past the rate limit");
            break;
        }
        if (!nb->groups_ms || now - nb->groups_ms > ROUND_MS) {
            /* BUCKETS answers our GROUPS, once. */
            refuse(links, nb, "BUCKETS we did not ask for");
            break;
        }
        if (nb->answering_ms && now - nb->answering_ms >= ANSWER_MS)
            answer_end(nb, nb->answering_ms + ANSWER_MS); /* it never sent its last WANT */
        if (nb->answering_ms) {
            /* Our answer to its last BUCKETS is still under way: one at a
             * time, so that no neighbour can have the table sent over and over. */
            refuse(links, nb, "BUCKETS while our answer to the last one is under way");
            break;
        }
        if (now < nb->answer_end_ms + nb->answer_gap_ms) {
            /* Nothing it sends ends this wait early: a big answer is not
             * made again at once, whatever the neighbour says. */
            refuse(links, nb, "BUCKETS too soon after a large answer");
            break;
        }
        io.buckets = bitmap(nb, true);
        if (!io.buckets)
            break;
        links->net->flush(links);
        nb->groups_ms = 0;
        nb->answering_ms = now;
        nb->answer_records = 0;
        herd_repair_on_buckets(links->table, msg, &io);
        records_sent(links, nb, &io, &nb->answer_records, false);
        break;
    case HERD_MSG_FPRINTS:
        if (now - nb->asked_ms > ROUND_MS || !nb->round_ms) {
            refuse(links, nb, "FPRINTS we did not ask for");
            break;
        }
        if (!within_rate(links, &nb->fprints_window_ms, &nb->fprints_count, FPRINTS_PER_SEC)) {
            refuse(links, nb, "FPRINTS past the rate limit");
            break;
        }
        answered(links, nb);
        if (answer_offered(links, nb, msg, &io, herd_repair_on_fprints, &nb->round_records) && msg->last &&
            !nb->waiting_ms)
            nb->waiting_ms = now; /* its SYNC_END closes the exchange */
        break;
    case HERD_MSG_WANT:
        if (!nb->answering_ms || now - nb->answering_ms > ANSWER_MS) {
            refuse(links, nb, "WANT we did not offer");
            break;
        }
        if (answer_offered(links, nb, msg, &io, herd_repair_on_want, &nb->answer_records) && msg->last) {
            answer_end(nb, now);
            send_sync_end(links, nb, nb->answer_records);
            exchange_success(nb);
        }
        break;
    case HERD_MSG_SYNC_END:
        /* It answers our HELLO or DIGEST: the exchange is over. */
        if (!nb->round_answered)
            nb->differ = false; /* it found our tables equal at once */
        round_done(links, nb, msg->count);
        break;
    case HERD_MSG_UPDATES: /* handled by the caller */
    case HERD_MSG_RECORDS:
        break;
    }
}
