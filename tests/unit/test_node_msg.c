/* Unit tests for the node's side of the msgpack boundary: herd_msg
 * batches fed to a real node (one server, no neighbours, its loop not
 * running), and the answers it queues for the front end, decoded. No text
 * protocol is involved: the AT lines are made here, as a front end would. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "herd_log.h"
#include "herd_loop.h"
#include "herd_msg.h"
#include "herd_node.h"
#include "../../src/herd_node_int.h" /* herd_node_feed, herd_node_take_answers: hooks for tests */
#include "herd_topology.h"

typedef struct {
    char dir[64];
    herd_log_t *log;
    herd_loop_t *loop;
    herd_topology_t *topo;
    herd_node_t *node;
} fx_t;

static int free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&a, &l), 0);
    close(s);
    return ntohs(a.sin_port);
}

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof *fx);
    snprintf(fx->dir, sizeof fx->dir, "/tmp/herd-test-node-XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    char path[128], err[512];
    snprintf(path, sizeof path, "%s/topology.json", fx->dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f,
            "{\"servers\": {\"Test\": {\"host\": \"127.0.0.1\", \"client_port\": %d, \"peer_port\": %d}},"
            " \"links\": [], \"frontend_threads\": 2,"
            " \"places\": {\"url\": \"http://127.0.0.1:9/x\", \"key_env\": \"HERD_TEST_NO_SUCH_KEY\"}}",
            free_port(), free_port());
    fclose(f);
    fx->topo = herd_topology_load(path, err, sizeof err);
    assert_non_null(fx->topo);
    snprintf(path, sizeof path, "%s/Test.log", fx->dir);
    fx->log = herd_log_open(path, err, sizeof err);
    assert_non_null(fx->log);
    fx->loop = herd_loop_new();
    fx->node = herd_node_new(fx->loop, fx->log, fx->topo, 0, err, sizeof err);
    if (!fx->node)
        fail_msg("%s", err);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    herd_node_destroy(&fx->node);
    herd_loop_destroy(&fx->loop);
    herd_log_close(&fx->log);
    herd_topology_destroy(&fx->topo);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", fx->dir);
    assert_int_equal(system(cmd), 0);
    free(fx);
    return 0;
}

/* An IAMAT item as a front end makes it, for id at time sec.nsec. */
static herd_msg_item_t iamat(char *buf, size_t cap, const char *id, int64_t sec, uint64_t seq)
{
    const char *pos = "+34.068930-118.445127";
    int n = snprintf(buf, cap, "AT Test +0.000000001 %s %s %lld.000000000", id, pos, (long long)sec);
    herd_msg_item_t it = {.kind = HERD_MSG_IAMAT, .conn = 5, .seq = seq, .handle = (uint32_t)seq + 100,
                          .time = {sec, 0}, .at = {buf, (size_t)n}};
    it.id_off = 21;
    it.id_len = (uint32_t)strlen(id);
    it.pos_off = it.id_off + it.id_len + 1;
    it.pos_len = (uint32_t)strlen(pos);
    return it;
}

/* Feeds one batch from front end fe and returns the decoded answers. */
static size_t exchange_fe(fx_t *fx, uint32_t fe, const herd_msg_item_t *items, size_t n, uint64_t invalid,
                          herd_msg_item_t *out, char **frame)
{
    herd_msg_buf_t b = {0};
    herd_msg_header_t h = {.dir = HERD_MSG_TO_NODE, .fe = fe, .invalid = invalid};
    herd_msg_begin(&b, &h);
    for (size_t i = 0; i < n; i++)
        herd_msg_put(&b, HERD_MSG_TO_NODE, &items[i]);
    assert_int_equal(herd_node_feed(fx->node, fe, b.p, b.len), 0);
    herd_msg_buf_free(&b);
    size_t len = 0;
    *frame = herd_node_take_answers(fx->node, fe, &len);
    assert_non_null(*frame);
    herd_msg_reader_t r;
    herd_msg_header_t g;
    assert_int_equal(herd_msg_open(&r, *frame, len, &g), 0);
    assert_int_equal(g.dir, HERD_MSG_TO_FE);
    assert_int_equal(g.fe, fe);
    size_t k = 0;
    while (k < 16 && herd_msg_next(&r, &out[k]) == 1)
        k++;
    return k;
}

/* Feeds one batch from front end 1 and returns the decoded answers. */
static size_t exchange(fx_t *fx, const herd_msg_item_t *items, size_t n, uint64_t invalid, herd_msg_item_t *out,
                       char **frame)
{
    return exchange_fe(fx, 1, items, n, invalid, out, frame);
}

static void test_iamat_outcomes(void **state)
{
    fx_t *fx = *state;
    char a[4][160];
    int64_t now = (int64_t)time(NULL);
    herd_msg_item_t in[4] = {
        iamat(a[0], sizeof a[0], "kiwi", now - 10, 0),        /* new: stored */
        iamat(a[1], sizeof a[1], "kiwi", now - 20, 1),        /* older: not newer */
        iamat(a[2], sizeof a[2], "kiwi", now - 10, 2),        /* the same report again: not newer */
        iamat(a[3], sizeof a[3], "kiwi", now + 3 * 86400, 3), /* past limits.max_future_s: refused */
    };
    herd_msg_item_t out[16];
    char *frame;
    size_t n = exchange(fx, in, 4, 0, out, &frame);
    assert_int_equal(n, 4);
    const uint32_t want[4] = {HERD_MSG_STORED, HERD_MSG_NOT_NEWER, HERD_MSG_NOT_NEWER, HERD_MSG_REFUSED};
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(out[i].kind, HERD_MSG_IAMAT);
        assert_int_equal(out[i].conn, 5);
        assert_int_equal(out[i].seq, i);
        assert_int_equal(out[i].handle, i + 100);
        assert_int_equal(out[i].outcome, want[i]);
    }
    free(frame);
}

static void test_whatsat_unknown_and_closed(void **state)
{
    fx_t *fx = *state;
    herd_msg_item_t in[2] = {
        {.kind = HERD_MSG_WHATSAT, .conn = 9, .seq = 4, .handle = 7, .id = {"nobody", 6}, .radius = {"10", 2},
         .bound = 5},
        {.kind = HERD_MSG_CLOSED, .conn = 9, .outcome = 0},
    };
    herd_msg_item_t out[16];
    char *frame;
    size_t n = exchange(fx, in, 2, 3, out, &frame);
    assert_int_equal(n, 1);
    assert_int_equal(out[0].kind, HERD_MSG_WHATSAT);
    assert_int_equal(out[0].seq, 4);
    assert_int_equal(out[0].handle, 7);
    assert_int_equal(out[0].outcome, HERD_MSG_UNKNOWN);
    free(frame);
    /* A malformed batch changes nothing and queues nothing. */
    assert_int_equal(herd_node_feed(fx->node, 1, "\x01\x01\x00\x00\x09", 5), 0);
    size_t len = 0;
    frame = herd_node_take_answers(fx->node, 1, &len);
    herd_msg_reader_t r;
    herd_msg_header_t g;
    herd_msg_item_t it;
    assert_int_equal(herd_msg_open(&r, frame, len, &g), 0);
    assert_int_equal(herd_msg_next(&r, &it), 0);
    free(frame);
    assert_int_equal(herd_node_feed(fx->node, 2, "", 0), -1); /* no third front end */
}

static herd_msg_item_t whatsat(uint64_t conn, uint64_t seq)
{
    herd_msg_item_t it = {.kind = HERD_MSG_WHATSAT, .conn = conn, .seq = seq, .handle = (uint32_t)(conn * 10 + seq),
                          .id = {"kiwi", 4}, .radius = {"10", 2}, .bound = 5};
    return it;
}

/* A connection that closes while owed answers gives up its own pending
 * WHATSATs, and only those: not another connection's, nor the same
 * connection number on another front end. While any waits, the stop has a
 * Places deadline to wait for. */
static void test_closed_connection_drops_only_its_own(void **state)
{
    fx_t *fx = *state;
    char a[160];
    herd_msg_item_t out[16];
    char *frame;
    herd_msg_item_t stored = iamat(a, sizeof a, "kiwi", (int64_t)time(NULL) - 10, 0);
    assert_int_equal(exchange(fx, &stored, 1, 0, out, &frame), 1);
    free(frame);
    assert_int_equal(herd_node_places_deadline_ms(fx->node), 0);

    herd_msg_item_t in[4] = {whatsat(10, 0), whatsat(11, 0), whatsat(11, 1), whatsat(12, 0)};
    assert_int_equal(exchange(fx, in, 4, 0, out, &frame), 0); /* all wait on the worker */
    free(frame);
    herd_msg_item_t other = whatsat(11, 0);
    assert_int_equal(exchange_fe(fx, 0, &other, 1, 0, out, &frame), 0);
    free(frame);
    int64_t until = herd_node_places_deadline_ms(fx->node);
    assert_true(until >= herd_loop_now_ms(fx->loop) + fx->topo->places_timeout_ms);

    herd_msg_item_t closed = {.kind = HERD_MSG_CLOSED, .conn = 11, .outcome = 1};
    size_t n = exchange(fx, &closed, 1, 0, out, &frame);
    assert_int_equal(n, 2);
    bool seen[2] = {false, false};
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(out[i].kind, HERD_MSG_WHATSAT);
        assert_int_equal(out[i].conn, 11);
        assert_int_equal(out[i].outcome, HERD_MSG_DROPPED);
        assert_true(out[i].seq < 2);
        assert_int_equal(out[i].handle, 110 + out[i].seq);
        seen[out[i].seq] = true;
    }
    assert_true(seen[0] && seen[1]);
    free(frame);
    /* Closing it again finds nothing. */
    assert_int_equal(exchange(fx, &closed, 1, 0, out, &frame), 0);
    free(frame);

    herd_msg_item_t rest[2] = {{.kind = HERD_MSG_CLOSED, .conn = 10, .outcome = 1},
                               {.kind = HERD_MSG_CLOSED, .conn = 12, .outcome = 1}};
    assert_int_equal(exchange(fx, rest, 2, 0, out, &frame), 2);
    free(frame);
    assert_true(herd_node_places_deadline_ms(fx->node) > 0); /* front end 0's conn 11 still waits */
    assert_int_equal(exchange_fe(fx, 0, &closed, 1, 0, out, &frame), 1);
    assert_int_equal(out[0].conn, 11);
    assert_int_equal(out[0].outcome, HERD_MSG_DROPPED);
    free(frame);
    assert_int_equal(herd_node_places_deadline_ms(fx->node), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_iamat_outcomes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_whatsat_unknown_and_closed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_closed_connection_drops_only_its_own, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
