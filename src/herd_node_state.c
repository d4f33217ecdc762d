/* herd_node_state: the node's durable state (state_dir): the load at start
 * (the index sized first), the group commit of each turn and the replies
 * held until it. See herd_journal.h. */
#define _GNU_SOURCE /* asprintf */
#include "herd_node_int.h"
#include "herd_hash.h"

#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <zmq.h>

/* The journal's group commit is done: a held IAMAT reply goes out, its AT
 * line when the update is on disk, "?" when it is not (its write failed,
 * or the disk hung: PROTOCOL section 9, never an AT reply for an update
 * that is not on disk). The table keeps such an update: it was stored and
 * flooded, so neighbours hold it anyway, and the journal still retries it
 * (or writes the whole table again); a "?" promises nothing either way. */
static void release_reply(void *arg, herd_ticket_t t, const char *data, size_t len, bool ok)
{
    herd_node_t *node = arg;
    held_reply_t h;
    if (len != sizeof h)
        return;
    memcpy(&h, data, sizeof h);
    if (!ok) {
        node->n.iamat_refused++;
        node->n.invalid++;
    }
    node_iamat_to_fe(node, h.fe, t, h.handle, ok ? HERD_MSG_STORED : HERD_MSG_REFUSED);
}

/* One record read from state_dir at start: at most once a second, the
 * progress goes to the log and to /readyz. */
static void load_progress(herd_node_t *node)
{
    /* The clock is read once per 4096 records, not per record. */
    if ((++node->load_records & 4095) != 0)
        return;
    int64_t now = herd_clock_ms();
    if (now - node->load_said_ms < 1000)
        return;
    node->load_said_ms = now;
    char what[160];
    double secs = (double)(now - node->load_start_ms) / 1000.0;
    if (node->load_expect >= node->load_records)
        snprintf(what, sizeof what, "loading the state: %" PRIu64 " records of about %zu read in %.1f s",
                 node->load_records, node->load_expect, secs);
    else
        snprintf(what, sizeof what, "loading the state: %" PRIu64 " records read in %.1f s", node->load_records,
                 secs);
    herd_admin_progress(node->admin, what);
    /* Flushed around: the line gets a time stamp of its own, and so does
     * the next one. */
    herd_log_flush(node->log);
    herd_log_event(node->log, "state: %s", what);
    herd_log_flush(node->log);
}

/* The id stored at offset `off` of the drops' buffer, and its length. */
static const char *drops_id(const load_drops_t *d, size_t off, size_t *id_len)
{
    uint16_t len;
    memcpy(&len, d->ids + off, sizeof len);
    *id_len = len;
    return d->ids + off + sizeof len;
}

#define DROPS_SEED 0x6c6f616464726f70ull /* any fixed value: the set lives for one load */

/* Doubles the set's slots (or makes the first ones), rehashing the ids
 * kept. Returns false when out of memory (the set is unchanged). */
static bool drops_grow_slots(load_drops_t *d)
{
    size_t cap = d->slots ? 2 * (d->mask + 1) : 1024;
    uint64_t *slots = calloc(cap, sizeof *slots);
    if (!slots)
        return false;
    for (size_t off = 0; off < d->len;) {
        size_t len;
        const char *id = drops_id(d, off, &len);
        size_t i = (size_t)herd_hash_fixed(DROPS_SEED, id, len) & (cap - 1);
        while (slots[i])
            i = (i + 1) & (cap - 1);
        slots[i] = off + 1;
        off += sizeof(uint16_t) + len;
    }
    free(d->slots);
    d->slots = slots;
    d->mask = cap - 1;
    return true;
}

/* A client the table dropped while no journal was open: kept (once) for a
 * DROP at the end of the load (herd_node_int.h). Out of memory, it is not
 * kept, and the end of the load says so in the log. */
void node_state_load_dropped(herd_node_t *node, const char *id, size_t id_len)
{
    load_drops_t *d = &node->load_drops;
    /* An id longer than a table's cannot have been held, so it never comes
     * here; the check keeps the length prefix exact. */
    if (!node->loading || d->failed || id_len > UINT16_MAX)
        return;
    if ((d->n + 1) * 4 > (d->slots ? d->mask + 1 : 0) * 3 && !drops_grow_slots(d)) {
        d->failed = true;
        return;
    }
    size_t i = (size_t)herd_hash_fixed(DROPS_SEED, id, id_len) & d->mask;
    for (; d->slots[i]; i = (i + 1) & d->mask) {
        size_t len;
        const char *kept = drops_id(d, d->slots[i] - 1, &len);
        if (len == id_len && memcmp(kept, id, len) == 0)
            return; /* dropped before in this load: once is enough */
    }
    size_t need = sizeof(uint16_t) + id_len;
    if (d->cap - d->len < need) {
        size_t cap = d->cap ? 2 * d->cap : 64 * 1024;
        while (cap - d->len < need)
            cap *= 2;
        char *ids = realloc(d->ids, cap);
        if (!ids) {
            d->failed = true;
            return;
        }
        d->ids = ids;
        d->cap = cap;
    }
    uint16_t len = (uint16_t)id_len;
    memcpy(d->ids + d->len, &len, sizeof len);
    memcpy(d->ids + d->len + sizeof len, id, id_len);
    d->slots[i] = d->len + 1;
    d->len += need;
    d->n++;
}

/* The end of the load, the journal open: a DROP for each client the load
 * refused or dropped that it does not hold at the end. The journal replays
 * a DROP as "remove the client", and compaction keeps a client's last
 * frame, so a DROP written after everything the load read is exact for a
 * client the table does not hold, and none is written for one a later
 * record of the load stored again. Without them the records would come
 * back at the next start without the limit, and compaction would copy
 * them into every snapshot. */
static void load_drops_write(herd_node_t *node)
{
    load_drops_t *d = &node->load_drops;
    size_t written = 0;
    for (size_t off = 0; off < d->len;) {
        size_t len;
        const char *id = drops_id(d, off, &len);
        if (!herd_table_find(node->table, id, len)) {
            herd_journal_drop(node->journal, id, len);
            written++;
        }
        off += sizeof(uint16_t) + len;
    }
    if (written)
        herd_log_event(node->log,
                       "state: %zu clients refused or dropped at load by limits.max_records or "
                       "limits.record_ttl_s: DROP records written, so they do not come back",
                       written);
    if (d->failed)
        herd_log_event(node->log,
                       "state: out of memory keeping the clients dropped at load: some may come back at "
                       "the next start");
}

static void load_drops_free(herd_node_t *node)
{
    free(node->load_drops.ids);
    free(node->load_drops.slots);
    memset(&node->load_drops, 0, sizeof node->load_drops);
    node->loading = false;
}

/* A record found on disk at start: offered to the table like any update
 * (its ranking makes replay idempotent), or removed for a DROP. One the
 * table refuses by its limits (past the ttl, or first to go from a full
 * table) is kept for a DROP, like one it evicts (on_drop). */
static void load_record(void *arg, const herd_journal_rec_t *rec)
{
    herd_node_t *node = arg;
    load_progress(node);
    if (rec->kind == 'D') {
        herd_table_remove(node->table, rec->id, rec->id_len);
        return;
    }
    if (herd_table_update(node->table, rec->id, rec->id_len, rec->time, rec->at, rec->at_len, rec->pos_off,
                          rec->pos_len, NULL) == HERD_UPDATE_REFUSED)
        node_state_load_dropped(node, rec->id, rec->id_len);
}

/* End of every turn: this turn's records go to the writer in one batch
 * (after the whole table, when records were lost and writes succeed
 * again). */
void node_state_commit(herd_node_t *node)
{
    if (!node->journal)
        return;
    if (herd_journal_wants_table(node->journal))
        herd_journal_put_table(node->journal, node->table);
    herd_journal_commit(node->journal, herd_table_size(node->table));
}

/* The writer's reports: held replies whose records are on disk go out. */
static void journal_ready(herd_loop_t *loop, void *arg)
{
    (void)loop;
    herd_node_t *node = arg;
    herd_journal_recv(node->journal, release_reply, node);
}

/* About how many clients the state folder holds, for sizing the index: the
 * snapshot's bytes plus the journals' over RECORD_BYTES, the size of a
 * typical record on disk (a typical AT line framed). Compaction keeps the journals under twice the table, so this is
 * exact for a fresh journal or a fresh snapshot and at most about three
 * times the clients otherwise; journals piled up by failed compactions are
 * counted up to twice the snapshot (or 2^22 records without one), so that
 * they cannot make a small table reserve a huge index. */
#define RESERVE_JOURNAL_ONLY (1ull << 22)
#define RECORD_BYTES 83
static size_t records_on_disk(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    uint64_t snapshot = 0, journals = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        bool snap = strcmp(e->d_name, "snapshot") == 0;
        if ((snap || strncmp(e->d_name, "journal.", 8) == 0) && fstatat(dirfd(d), e->d_name, &st, 0) == 0 &&
            S_ISREG(st.st_mode))
            *(snap ? &snapshot : &journals) += (uint64_t)st.st_size;
    }
    closedir(d);
    uint64_t records = snapshot / RECORD_BYTES, journal_records = journals / RECORD_BYTES;
    uint64_t bound = snapshot ? 2 * records : RESERVE_JOURNAL_ONLY;
    records += journal_records < bound ? journal_records : bound;
    return records > SIZE_MAX ? SIZE_MAX : (size_t)records;
}

/* Loads state_dir/NAME into the table and starts the writer. */
int node_open_journal(herd_node_t *node, const herd_topology_t *topo, char *err, size_t errlen)
{
    char *dir = NULL;
    if (asprintf(&dir, "%s/%s", topo->state_dir, node->name) < 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    /* The index at its final size at once, rather than doubled over and
     * over while the records load (a large share of the load time). A
     * failure only means the index grows as it goes. */
    size_t expect = records_on_disk(dir);
    if (topo->max_records > 0 && expect > (size_t)topo->max_records)
        expect = (size_t)topo->max_records;
    (void)herd_table_reserve(node->table, expect);
    node->load_expect = expect;
    node->load_start_ms = node->load_said_ms = herd_clock_ms();
    herd_journal_conf_t jc = {.dir = dir,
                              .fsync = topo->fsync,
                              .load = load_record,
                              .release = release_reply,
                              .arg = node,
                              .loop = node->loop};
    /* limits.record_ttl_s before the first record: the table refuses a
     * record already past it, so a stale one is not held even for the
     * first second (the expiry timer's first sweep). */
    herd_table_expire(node->table, herd_time_now().sec);
    node->loading = true;
    node->journal = herd_journal_open(&jc, node->log, err, errlen);
    free(dir);
    if (node->journal)
        load_drops_write(node);
    load_drops_free(node);
    if (!node->journal)
        return -1;
    /* And after it, for records that loading let in (a DROP is written). */
    herd_table_expire(node->table, herd_time_now().sec);
    if (herd_loop_add_zmq(node->loop, herd_journal_sock(node->journal), journal_ready, node) != 0) {
        snprintf(err, errlen, "cannot watch the state writer");
        return -1;
    }
    return 0;
}
