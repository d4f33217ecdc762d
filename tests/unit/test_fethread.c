/* Unit tests for herd_fethread: the front end's side of the msgpack
 * boundary. The test plays the node: it hands the front end one end of a
 * socket pair (ADOPT), writes text as a client, reads the batches the front
 * end sends (the parsed commands, the AT line it made, the "?" count), and
 * answers them with herd_msg items, checking the bytes the client gets.
 *
 * Every case runs twice: with the front end on a thread of its own (the
 * test talks to its PAIR socket), and in-line (frontend_threads 0) on a
 * loop the test runs on a thread of its own, standing for the node's. The
 * in-line front end has no socket, so the test gives it one: its batches
 * (deliver, unencoded items) are encoded and forwarded from the loop's
 * thread over a PAIR pair, and the frames the test sends on that pair are
 * handed over on the loop's thread, the only thread that may touch the
 * front end or the loop, as the node hands them: the IAMAT answers as they
 * are (herd_fethread_take_iamats), the rest as a frame. The test's code is
 * the same either way: it talks to fx->sock. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
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
#include "herd_loop.h"
#include "herd_msg.h"

typedef struct {
    char dir[64];
    herd_log_t *log;
    herd_fethread_t *t;
    int client;          /* the test's end of the connection */
    void *sock;          /* the node's end toward the front end: the thread's PAIR, or the test's own in-line */
    /* In-line only. The loop's thread owns the loop, the front end and
     * loop_side from pthread_create to pthread_join; the test thread uses
     * only sock (and the counters below after the join). */
    bool in_line;
    void *ctx;           /* the context of the test's PAIR pair */
    void *loop_side;     /* the loop thread's end of it */
    herd_loop_t *loop;
    pthread_t loop_thread;
    bool loop_started;
    int loop_rc;         /* herd_loop_run's result */
    int lost;            /* batches that could not be forwarded (the test would only see a timeout) */
} fx_t;

/* In-line: a batch for the node, on the loop's thread. A late one (from the
 * end of the turn) goes the same way, and both cases here need it: the
 * CLOSED of a client that left comes late. No herd_loop_again as the
 * node's has: the test's answers come on loop_side, which wakes the loop. */
static void deliver(void *arg, const herd_fethread_batch_t *batch, bool late)
{
    (void)late;
    fx_t *fx = arg;
    herd_msg_buf_t b = {0};
    herd_msg_header_t h = {.dir = HERD_MSG_TO_NODE, .fe = 2, .invalid = batch->invalid, .drain = batch->drain};
    herd_msg_begin(&b, &h);
    for (size_t i = 0; i < batch->n; i++)
        herd_msg_put(&b, HERD_MSG_TO_NODE, &batch->items[i]);
    while (b.oom || zmq_send(fx->loop_side, b.p, b.len, 0) < 0)
        if (b.oom || errno != EINTR) {
            fx->lost++;
            break;
        }
    herd_msg_buf_free(&b);
}

/* In-line: a frame from the test handed over as the node hands its
 * answers: the IAMAT answers as they are, then a frame of the rest. */
static void hand_over(fx_t *fx, const void *data, size_t len)
{
    herd_msg_reader_t r;
    herd_msg_header_t h;
    herd_msg_item_t it;
    herd_fethread_iamat_t iamats[64];
    size_t n = 0;
    herd_msg_buf_t rest = {0};
    int rc = herd_msg_open(&r, data, len, &h);
    herd_msg_begin(&rest, &h);
    while (rc == 0 && herd_msg_next(&r, &it) == 1) {
        if (it.kind == HERD_MSG_IAMAT && n < sizeof iamats / sizeof *iamats)
            iamats[n++] = (herd_fethread_iamat_t){it.conn, it.seq, it.handle, it.outcome};
        else
            herd_msg_put(&rest, HERD_MSG_TO_FE, &it);
    }
    if (rc != 0 || rest.oom) {
        fx->lost++;
    } else {
        herd_fethread_take_iamats(fx->t, iamats, n);
        herd_fethread_take(fx->t, rest.p, rest.len);
    }
    herd_msg_buf_free(&rest);
}

/* In-line: frames from the test, on the loop's thread. An empty frame (no
 * herd_msg frame is empty) stops the loop: the front end's own STOP means
 * nothing in-line, where it has no thread to end. */
static void from_test(herd_loop_t *loop, void *arg)
{
    fx_t *fx = arg;
    for (;;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, fx->loop_side, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            if (errno == EINTR)
                continue;
            return;
        }
        if (zmq_msg_size(&m) == 0)
            herd_loop_stop(loop);
        else
            hand_over(fx, zmq_msg_data(&m), zmq_msg_size(&m));
        zmq_msg_close(&m);
    }
}

static void *loop_main(void *arg)
{
    fx_t *fx = arg;
    fx->loop_rc = herd_loop_run(fx->loop);
    return NULL;
}

/* The test's PAIR pair, the loop, the in-line front end on it, and the
 * loop's thread, started last: until then this thread may still set up the
 * loop (which is not thread-safe). */
static void start_in_line(fx_t *fx, herd_fethread_conf_t *c)
{
    char endpoint[64], err[256];
    snprintf(endpoint, sizeof endpoint, "inproc://test-fethread-%p", (void *)fx);
    fx->ctx = zmq_ctx_new();
    assert_non_null(fx->ctx);
    fx->sock = zmq_socket(fx->ctx, ZMQ_PAIR);
    fx->loop_side = zmq_socket(fx->ctx, ZMQ_PAIR);
    assert_non_null(fx->sock);
    assert_non_null(fx->loop_side);
    /* As the thread's own pair: nothing dropped, no send ever blocks the loop. */
    int zero = 0;
    for (int k = 0; k < 2; k++) {
        void *s = k ? fx->loop_side : fx->sock;
        assert_int_equal(zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero), 0);
        assert_int_equal(zmq_setsockopt(s, ZMQ_SNDHWM, &zero, sizeof zero), 0);
        assert_int_equal(zmq_setsockopt(s, ZMQ_RCVHWM, &zero, sizeof zero), 0);
    }
    assert_int_equal(zmq_bind(fx->sock, endpoint), 0);
    assert_int_equal(zmq_connect(fx->loop_side, endpoint), 0);
    fx->loop = herd_loop_new();
    assert_non_null(fx->loop);
    c->loop = fx->loop;
    c->deliver = deliver;
    c->deliver_arg = fx;
    fx->t = herd_fethread_new(c, fx->log, err, sizeof err);
    assert_non_null(fx->t);
    assert_null(herd_fethread_sock(fx->t));
    assert_int_equal(herd_loop_add_zmq(fx->loop, fx->loop_side, from_test, fx), 0);
    assert_int_equal(pthread_create(&fx->loop_thread, NULL, loop_main, fx), 0);
    fx->loop_started = true;
}

static int setup_mode(void **state, bool in_line)
{
    fx_t *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    fx->client = -1;
    fx->in_line = in_line;
    snprintf(fx->dir, sizeof fx->dir, "/tmp/herd-test-fethread-XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    char path[128], err[256];
    snprintf(path, sizeof path, "%s/t.log", fx->dir);
    fx->log = herd_log_open(path, err, sizeof err);
    assert_non_null(fx->log);
    herd_fethread_conf_t c = {.index = 2, .server = "Test", .idle_timeout_ms = 60000, .max_output_bytes = 1 << 20};
    if (in_line) {
        start_in_line(fx, &c);
    } else {
        fx->t = herd_fethread_new(&c, fx->log, err, sizeof err);
        assert_non_null(fx->t);
        fx->sock = herd_fethread_sock(fx->t);
    }
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    fx->client = sv[0];
    /* The node's hand-off of an accepted connection. */
    herd_msg_buf_t b = {0};
    herd_msg_header_t h = {.dir = HERD_MSG_TO_FE, .fe = 2};
    herd_msg_begin(&b, &h);
    herd_msg_item_t adopt = {.kind = HERD_MSG_ADOPT, .fd = sv[1], .serial = 41, .peer = {"test:1", 6}};
    herd_msg_put(&b, HERD_MSG_TO_FE, &adopt);
    assert_int_equal(zmq_send(fx->sock, b.p, b.len, 0), (int)b.len);
    herd_msg_buf_free(&b);
    *state = fx;
    return 0;
}

/* The front end on a thread of its own. */
static int setup(void **state)
{
    return setup_mode(state, false);
}

/* The front end in-line, on the test's loop thread. */
static int setup_in_line(void **state)
{
    return setup_mode(state, true);
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    if (fx->loop_started) {
        /* The loop's thread ends before anything it owns is freed. */
        assert_int_equal(zmq_send(fx->sock, "", 0, 0), 0);
        assert_int_equal(pthread_join(fx->loop_thread, NULL), 0);
    }
    herd_fethread_destroy(&fx->t);
    assert_null(fx->t);
    if (fx->in_line) {
        if (fx->loop_side) {
            if (fx->loop)
                herd_loop_remove_zmq(fx->loop, fx->loop_side);
            zmq_close(fx->loop_side);
        }
        if (fx->sock)
            zmq_close(fx->sock);
        herd_loop_destroy(&fx->loop);
        if (fx->ctx)
            assert_int_equal(zmq_ctx_term(fx->ctx), 0);
    }
    herd_log_close(&fx->log);
    if (fx->client >= 0)
        close(fx->client);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", fx->dir);
    assert_int_equal(system(cmd), 0);
    int loop_rc = fx->loop_rc, lost = fx->lost;
    free(fx);
    assert_int_equal(loop_rc, 0);
    assert_int_equal(lost, 0);
    return 0;
}

/* The next frame from the front end (waits up to 5 s). */
static void recv_frame(fx_t *fx, zmq_msg_t *m)
{
    zmq_pollitem_t pi = {fx->sock, 0, ZMQ_POLLIN, 0};
    assert_int_equal(zmq_poll(&pi, 1, 5000), 1);
    zmq_msg_init(m);
    assert_true(zmq_msg_recv(m, fx->sock, 0) >= 0);
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
    assert_int_equal(zmq_send(fx->sock, b.p, b.len, 0), (int)b.len);
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
    assert_int_equal(zmq_send(fx->sock, b.p, b.len, 0), (int)b.len);
    herd_msg_buf_free(&b);
    recv_frame(fx, &m);
    assert_int_equal(herd_msg_open(&r, zmq_msg_data(&m), zmq_msg_size(&m), &h), 0);
    assert_int_equal(h.drain, 1); /* draining, no connection busy */
    zmq_msg_close(&m);
}

/* Each case once more with the front end in-line, named so in the output. */
#define in_line_test(f) {.name = #f "_in_line", .test_func = f, .setup_func = setup_in_line, .teardown_func = teardown}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_commands_and_answers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_closed_owed_and_drain, setup, teardown),
        in_line_test(test_commands_and_answers),
        in_line_test(test_closed_owed_and_drain),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
