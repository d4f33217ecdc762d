/* Unit tests for herd_fethread: the front end's side of the msgpack
 * boundary. The test plays the node: it hands the thread one end of a
 * socket pair (ADOPT), writes text as a client, reads the batches the front
 * end sends (the parsed commands, the AT line it made, the "?" count), and
 * answers them with herd_msg items, checking the bytes the client gets. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <poll.h>
#include <unistd.h>

#include <cmocka.h>
#include <zmq.h>

#include "herd_fethread.h"
#include "herd_msg.h"

typedef struct {
    char dir[64];
    herd_log_t *log;
    herd_fethread_t *t;
    int client; /* the test's end of the connection */
} fx_t;

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof *fx);
    snprintf(fx->dir, sizeof fx->dir, "/tmp/herd-test-fethread-XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    char path[128], err[256];
    snprintf(path, sizeof path, "%s/t.log", fx->dir);
    fx->log = herd_log_open(path, err, sizeof err);
    assert_non_null(fx->log);
    herd_fethread_conf_t c = {.index = 2, .server = "Test", .idle_timeout_ms = 60000, .max_output_bytes = 1 << 20};
    fx->t = herd_fethread_new(&c, fx->log, err, sizeof err);
    assert_non_null(fx->t);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    fx->client = sv[0];
    /* The node's hand-off of an accepted connection. */
    herd_msg_buf_t b = {0};
    herd_msg_header_t h = {.dir = HERD_MSG_TO_FE, .fe = 2};
    herd_msg_begin(&b, &h);
    herd_msg_item_t adopt = {.kind = HERD_MSG_ADOPT, .fd = sv[1], .serial = 41, .peer = {"test:1", 6}};
    herd_msg_put(&b, HERD_MSG_TO_FE, &adopt);
    assert_int_equal(zmq_send(herd_fethread_sock(fx->t), b.p, b.len, 0), (int)b.len);
    herd_msg_buf_free(&b);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    herd_fethread_destroy(&fx->t);
    assert_null(fx->t);
    herd_log_close(&fx->log);
    close(fx->client);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", fx->dir);
    assert_int_equal(system(cmd), 0);
    free(fx);
    return 0;
}

/* The next frame from the front end (waits up to 5 s). */
static void recv_frame(fx_t *fx, zmq_msg_t *m)
{
    zmq_pollitem_t pi = {herd_fethread_sock(fx->t), 0, ZMQ_POLLIN, 0};
    assert_int_equal(zmq_poll(&pi, 1, 5000), 1);
    zmq_msg_init(m);
    assert_true(zmq_msg_recv(m, herd_fethread_sock(fx->t), 0) >= 0);
}

static void send_all(int fd, const char *s)
{
    size_t len = strlen(s);
    assert_int_equal(write(fd, s, len), (ssize_t)len);
}

/* Reads from the client's end until `want` bytes came (waits up to 5 s). */
static void expect_bytes(int fd, const char *want)
{
    char buf[4096];
    size_t got = 0, len = strlen(want);
    while (got < len) {
        struct pollfd p = {fd, POLLIN, 0};
        assert_int_equal(poll(&p, 1, 5000), 1);
        ssize_t n = read(fd, buf + got, sizeof buf - got);
        assert_true(n > 0);
        got += (size_t)n;
    }
    assert_int_equal(got, len);
    assert_memory_equal(buf, want, len);
}

static void put_answer(herd_msg_buf_t *b, herd_msg_item_t *it)
{
    herd_msg_put(b, HERD_MSG_TO_FE, it);
}

static void test_commands_and_answers(void **state)
{
    fx_t *fx = *state;
    /* Three commands and an invalid line, pipelined in one write. */
    send_all(fx->client, "IAMAT kiwi +34.068930-118.445127 1621464827.959498503\r\n"
                         "bad line\n"
                         "WHATSAT kiwi 10 5\n"
                         "IAMAT far +1+1 1.5\n");
    herd_msg_item_t got[3];
    size_t n = 0;
    uint64_t invalid = 0;
    while (n < 3) {
        zmq_msg_t m;
        recv_frame(fx, &m);
        herd_msg_reader_t r;
        herd_msg_header_t h;
        assert_int_equal(herd_msg_open(&r, zmq_msg_data(&m), zmq_msg_size(&m), &h), 0);
        assert_int_equal(h.dir, HERD_MSG_TO_NODE);
        assert_int_equal(h.fe, 2);
        invalid += h.invalid;
        herd_msg_item_t it;
        int rc;
        while ((rc = herd_msg_next(&r, &it)) == 1) {
            assert_true(n < 3);
            /* The spans point into the frame: keep copies of what is checked below. */
            got[n] = it;
            if (it.kind == HERD_MSG_IAMAT) {
                char *at = malloc(it.at.len);
                memcpy(at, it.at.p, it.at.len);
                got[n].at.p = at;
            }
            n++;
        }
        assert_int_equal(rc, 0);
        zmq_msg_close(&m);
    }
    assert_int_equal(invalid, 1);
    assert_int_equal(got[0].kind, HERD_MSG_IAMAT);
    assert_int_equal(got[0].seq, 0);
    assert_true(got[0].at.len > 20 && !memcmp(got[0].at.p, "AT Test ", 8));
    assert_memory_equal(got[0].at.p + got[0].id_off, "kiwi", got[0].id_len);
    assert_memory_equal(got[0].at.p + got[0].pos_off, "+34.068930-118.445127", got[0].pos_len);
    assert_int_equal(got[0].time.sec, 1621464827);
    assert_int_equal(got[0].time.nsec, 959498503);
    assert_int_equal(got[1].kind, HERD_MSG_WHATSAT);
    assert_int_equal(got[1].seq, 2);
    assert_int_equal(got[1].bound, 5);
    assert_int_equal(got[2].kind, HERD_MSG_IAMAT);
    assert_int_equal(got[2].seq, 3);

    /* The node answers out of order: the WHATSAT first, then the two IAMATs
     * (stored, refused); the client still gets them in command order. */
    herd_msg_buf_t b = {0};
    herd_msg_header_t h = {.dir = HERD_MSG_TO_FE, .fe = 2};
    herd_msg_begin(&b, &h);
    herd_msg_item_t w = {.kind = HERD_MSG_WHATSAT, .conn = got[1].conn, .seq = 2, .handle = got[1].handle,
                         .outcome = HERD_MSG_ANSWERED, .at = {"AT Other x", 10}, .json = {"{}", 2}};
    put_answer(&b, &w);
    herd_msg_item_t a0 = {.kind = HERD_MSG_IAMAT, .conn = got[0].conn, .seq = 0, .handle = got[0].handle,
                          .outcome = HERD_MSG_STORED};
    herd_msg_item_t a2 = {.kind = HERD_MSG_IAMAT, .conn = got[2].conn, .seq = 3, .handle = got[2].handle,
                          .outcome = HERD_MSG_REFUSED};
    /* An answer naming a wrong ticket for a slot is ignored. */
    herd_msg_item_t wrong = a0;
    wrong.seq = 99;
    put_answer(&b, &wrong);
    put_answer(&b, &a2);
    put_answer(&b, &a0);
    assert_int_equal(zmq_send(herd_fethread_sock(fx->t), b.p, b.len, 0), (int)b.len);
    herd_msg_buf_free(&b);
    char want[512];
    snprintf(want, sizeof want, "%.*s\n? bad line\nAT Other x\n{}\n\n? IAMAT far +1+1 1.5\n", (int)got[0].at.len,
             got[0].at.p);
    expect_bytes(fx->client, want);
    free((void *)got[0].at.p);
    free((void *)got[2].at.p);

    /* The client leaves: the node is told, with nothing owed. */
    close(fx->client);
    fx->client = -1;
    zmq_msg_t m;
    recv_frame(fx, &m);
    herd_msg_reader_t r;
    herd_msg_header_t g;
    herd_msg_item_t it;
    assert_int_equal(herd_msg_open(&r, zmq_msg_data(&m), zmq_msg_size(&m), &g), 0);
    assert_int_equal(herd_msg_next(&r, &it), 1);
    assert_int_equal(it.kind, HERD_MSG_CLOSED);
    assert_int_equal(it.conn, got[0].conn);
    assert_int_equal(it.outcome, 0);
    zmq_msg_close(&m);
}

/* A client that leaves while owed a WHATSAT answer: the node is told it
 * was owed (so it can give up the Places call), and the late answer is
 * dropped without harm. Draining then reports no busy connection. */
static void test_closed_owed_and_drain(void **state)
{
    fx_t *fx = *state;
    send_all(fx->client, "WHATSAT kiwi 1 1\n");
    zmq_msg_t m;
    recv_frame(fx, &m);
    herd_msg_reader_t r;
    herd_msg_header_t h;
    herd_msg_item_t w;
    assert_int_equal(herd_msg_open(&r, zmq_msg_data(&m), zmq_msg_size(&m), &h), 0);
    assert_int_equal(herd_msg_next(&r, &w), 1);
    assert_int_equal(w.kind, HERD_MSG_WHATSAT);
    zmq_msg_close(&m);
    close(fx->client);
    fx->client = -1;
    recv_frame(fx, &m);
    herd_msg_item_t c;
    assert_int_equal(herd_msg_open(&r, zmq_msg_data(&m), zmq_msg_size(&m), &h), 0);
    assert_int_equal(herd_msg_next(&r, &c), 1);
    assert_int_equal(c.kind, HERD_MSG_CLOSED);
    assert_int_equal(c.outcome, 1);
    zmq_msg_close(&m);

    herd_msg_buf_t b = {0};
    herd_msg_header_t o = {.dir = HERD_MSG_TO_FE, .fe = 2};
    herd_msg_begin(&b, &o);
    herd_msg_item_t d = {.kind = HERD_MSG_WHATSAT, .conn = w.conn, .seq = w.seq, .handle = w.handle,
                         .outcome = HERD_MSG_DROPPED};
    herd_msg_put(&b, HERD_MSG_TO_FE, &d);
    herd_msg_item_t drain = {.kind = HERD_MSG_DRAIN};
    herd_msg_put(&b, HERD_MSG_TO_FE, &drain);
    assert_int_equal(zmq_send(herd_fethread_sock(fx->t), b.p, b.len, 0), (int)b.len);
    herd_msg_buf_free(&b);
    recv_frame(fx, &m);
    assert_int_equal(herd_msg_open(&r, zmq_msg_data(&m), zmq_msg_size(&m), &h), 0);
    assert_int_equal(h.drain, 1); /* draining, no connection busy */
    zmq_msg_close(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_commands_and_answers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_closed_owed_and_drain, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
