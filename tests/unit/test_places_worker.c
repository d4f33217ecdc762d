/* The Places worker driven directly, against the Places stand-in
 * (tests/integration/places_standin.py, started here as a child process and
 * driven over its HTTP control API). Checks reply bytes, the missing key,
 * timeouts, HTTP failures, key scrubbing, sharing of identical calls, the
 * cache, concurrency and that the worker never blocks on its pipe. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <jansson.h>
#include <zmq.h>

#include "herd_places.h"

#ifndef HERD_TEST_DATA
#error "HERD_TEST_DATA must name the tests/data folder"
#endif

#define KEY "test-key/with+special&chars"
#define KEY_ESCAPED "test-key%2Fwith%2Bspecial%26chars"
#define NEARBY_PATH "/maps/api/place/nearbysearch/json"

static pid_t standin_pid = -1;
static int standin_port;
static char standin_url[128];  /* the Nearby Search URL */
static char standin_base[64];  /* http://127.0.0.1:PORT */
static herd_places_t *places;  /* the worker of the running test */

/* ---------------------------------------------------------------------- */
/* Time and small helpers */

static int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* A short pause between checks of a condition that has its own deadline. */
static void brief_pause(void)
{
    poll(NULL, 0, 10);
}

static herd_span_t span(const char *s)
{
    herd_span_t v = {s, strlen(s)};
    return v;
}

static char *read_data(const char *name, size_t *len)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/places/%s", HERD_TEST_DATA, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    buf[n] = '\0';
    *len = (size_t)n;
    return buf;
}

/* ---------------------------------------------------------------------- */
/* The stand-in process */

static void standin_kill(void)
{
    if (standin_pid <= 0)
        return;
    kill(standin_pid, SIGTERM);
    int64_t deadline = now_ms() + 5000;
    for (;;) {
        pid_t r = waitpid(standin_pid, NULL, WNOHANG);
        if (r == standin_pid || (r < 0 && errno != EINTR))
            break;
        if (now_ms() > deadline) {
            kill(standin_pid, SIGKILL);
            waitpid(standin_pid, NULL, 0);
            break;
        }
        brief_pause();
    }
    standin_pid = -1;
}

static int group_setup(void **state)
{
    (void)state;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    char script[1024];
    snprintf(script, sizeof script, "%s/../integration/places_standin.py", HERD_TEST_DATA);
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        /* The stand-in must not outlive this test, however it ends. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        execlp("python3", "python3", script, (char *)NULL);
        _exit(127);
    }
    standin_pid = pid;
    atexit(standin_kill);
    close(fds[1]);

    /* Wait for "LISTENING <port>\n" with a deadline. */
    char line[128];
    size_t n = 0;
    int64_t deadline = now_ms() + 15000;
    while (n < sizeof line - 1 && !memchr(line, '\n', n)) {
        int64_t left = deadline - now_ms();
        struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
            break;
        ssize_t got = read(fds[0], line + n, sizeof line - 1 - n);
        if (got <= 0)
            break;
        n += (size_t)got;
    }
    close(fds[0]);
    line[n] = '\0';
    if (sscanf(line, "LISTENING %d", &standin_port) != 1) {
        fprintf(stderr, "places stand-in did not start (%s): got \"%s\"\n", script, line);
        standin_kill();
        return -1;
    }
    snprintf(standin_base, sizeof standin_base, "http://127.0.0.1:%d", standin_port);
    snprintf(standin_url, sizeof standin_url, "%s%s", standin_base, NEARBY_PATH);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    standin_kill();
    curl_global_cleanup();
    return 0;
}

typedef struct {
    char *p;
    size_t len;
} text_t;

static size_t collect_text(char *data, size_t size, size_t nmemb, void *userp)
{
    text_t *t = userp;
    size_t n = size * nmemb;
    char *p = realloc(t->p, t->len + n + 1);
    if (!p)
        return 0;
    memcpy(p + t->len, data, n);
    t->p = p;
    t->len += n;
    t->p[t->len] = '\0';
    return n;
}

/* Calls the stand-in's control API; POST when body is not NULL. Returns the
 * answer (malloc'd) and fails the test unless it is HTTP 200. */
static char *control(const char *path, const char *body)
{
    char url[256];
    snprintf(url, sizeof url, "%s/__control/%s", standin_base, path);
    CURL *c = curl_easy_init();
    assert_non_null(c);
    text_t t = {0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect_text);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);
    if (body)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    CURLcode rc = curl_easy_perform(c);
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(c);
    if (rc != CURLE_OK || code != 200)
        fail_msg("stand-in control %s failed: %s, HTTP %ld, %s", path, curl_easy_strerror(rc), code,
                 t.p ? t.p : "");
    return t.p ? t.p : strdup("");
}

static void control_post(const char *path, const char *body)
{
    free(control(path, body));
}

/* Sets the stand-in's default mode to answer with a fixture body. */
static void mode_fixture(const char *name, const char *extra)
{
    size_t len;
    char *body = read_data(name, &len);
    json_t *m = json_pack("{s:s, s:s%}", "mode", "body", "body", body, len);
    assert_non_null(m);
    if (extra) {
        json_t *e = json_loads(extra, 0, NULL);
        assert_non_null(e);
        json_object_update(m, e);
        json_decref(e);
    }
    char *text = json_dumps(m, JSON_COMPACT);
    control_post("mode", text);
    free(text);
    json_decref(m);
    free(body);
}

/* The requests the stand-in has seen, as JSON (caller decrefs). */
static json_t *standin_requests(void)
{
    char *text = control("requests", NULL);
    json_error_t e;
    json_t *j = json_loads(text, 0, &e);
    free(text);
    assert_non_null(j);
    return j;
}

static size_t standin_count(void)
{
    json_t *j = standin_requests();
    size_t n = (size_t)json_integer_value(json_object_get(j, "count"));
    json_decref(j);
    return n;
}

/* Waits until the stand-in has seen at least n requests. */
static void wait_count(size_t n, int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    size_t got;
    while ((got = standin_count()) < n) {
        if (now_ms() > deadline)
            fail_msg("stand-in saw %zu requests, expected %zu", got, n);
        brief_pause();
    }
}

/* ---------------------------------------------------------------------- */
/* The worker */

static void start_bounded_worker(const char *url, const char *key, long timeout_ms, long ttl_ms, size_t cache_max,
                                 long max_in_flight, long max_queued)
{
    herd_places_conf_t conf = {.url = url,
                               .key = key,
                               .timeout_ms = timeout_ms,
                               .cache_ttl_ms = ttl_ms,
                               .cache_max_entries = cache_max,
                               .max_in_flight = max_in_flight,
                               .max_queued = max_queued};
    char err[256] = "";
    places = herd_places_new(&conf, err, sizeof err);
    if (!places)
        fail_msg("herd_places_new: %s", err);
}

/* A worker with the default bounds (64 calls, 4096 waiting). */
static void start_worker(const char *url, const char *key, long timeout_ms, long ttl_ms, size_t cache_max)
{
    start_bounded_worker(url, key, timeout_ms, ttl_ms, cache_max, 0, -1);
}

static void request(uint64_t id, const char *lat, const char *lng, const char *radius, uint32_t bound)
{
    assert_int_equal(herd_places_request(places, id, span(lat), span(lng), span(radius), bound), 0);
}

/* Collects n replies (in arrival order) within the deadline. */
static size_t collect(herd_places_reply_t *out, size_t n, int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    size_t got = 0;
    void *sock = zsock_resolve(herd_places_sock(places));
    while (got < n) {
        int r = herd_places_recv(places, &out[got]);
        assert_int_not_equal(r, -1);
        if (r == 1) {
            got++;
            continue;
        }
        int64_t left = deadline - now_ms();
        if (left <= 0)
            break;
        zmq_pollitem_t it = {.socket = sock, .events = ZMQ_POLLIN};
        zmq_poll(&it, 1, (long)left);
    }
    return got;
}

static void one_reply(herd_places_reply_t *r, int timeout_ms)
{
    if (collect(r, 1, timeout_ms) != 1)
        fail_msg("no reply from the worker within %d ms", timeout_ms);
}

/* The reply and its note never carry the API key, raw or escaped. */
static void assert_no_key(const herd_places_reply_t *r, const char *key, const char *escaped)
{
    assert_null(strstr(r->json, key));
    assert_null(strstr(r->json, escaped));
    if (r->note) {
        assert_null(strstr(r->note, key));
        assert_null(strstr(r->note, escaped));
    }
}

static char *error_json(const char *status, const char *message)
{
    char *j = herd_places_error_json(status, message);
    assert_non_null(j);
    return j;
}

static void assert_error_reply(const herd_places_reply_t *r, uint64_t id, const char *status, const char *message)
{
    char *want = error_json(status, message);
    assert_int_equal(r->req_id, id);
    assert_string_equal(r->json, want);
    assert_int_equal(r->json_len, strlen(want));
    assert_non_null(r->note);
    assert_non_null(strstr(r->note, message));
    assert_no_key(r, KEY, KEY_ESCAPED);
    free(want);
}

static int test_setup(void **state)
{
    (void)state;
    places = NULL;
    control_post("reset", "{}");
    return 0;
}

static int test_teardown(void **state)
{
    (void)state;
    herd_places_destroy(&places);
    assert_null(places);
    control_post("reset", "{}"); /* also releases anything held */
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Tests */

/* A fixture body comes back cut, byte for byte; the URL is PROTOCOL §10's. */
static void test_reply_bytes_and_url(void **state)
{
    (void)state;
    mode_fixture("nearby_ok.json", NULL);
    start_worker(standin_url, KEY, 5000, 0, 0);
    herd_places_reply_t r;
    assert_int_equal(herd_places_recv(places, &r), 0);

    request(7, "+34.068930", "-118.445127", "10", 3);
    one_reply(&r, 5000);
    size_t elen;
    char *expect = read_data("nearby_ok.cut3.json", &elen);
    assert_int_equal(r.req_id, 7);
    assert_int_equal(r.json_len, elen);
    assert_memory_equal(r.json, expect, elen);
    assert_null(r.note);
    assert_true(r.upstream);
    assert_false(r.shared);
    assert_false(r.cache_hit);
    assert_true(r.upstream_ms > 0);
    herd_places_reply_free(&r);
    free(expect);

    json_t *reqs = standin_requests();
    assert_int_equal(json_integer_value(json_object_get(reqs, "count")), 1);
    json_t *q = json_array_get(json_object_get(reqs, "requests"), 0);
    assert_string_equal(json_string_value(json_object_get(q, "path")), NEARBY_PATH);
    assert_string_equal(json_string_value(json_object_get(q, "raw_query")),
                        "location=34.068930,-118.445127&radius=10000&key=" KEY_ESCAPED);
    assert_string_equal(json_string_value(json_object_get(json_object_get(q, "query"), "key")), KEY);
    json_decref(reqs);

    /* A base URL with its own query, a fractional radius. */
    herd_places_destroy(&places);
    char url[256];
    snprintf(url, sizeof url, "%s?language=en", standin_url);
    start_worker(url, KEY, 5000, 0, 0);
    request(8, "-33.8670522", "+151.1957362", "1.5", 1);
    one_reply(&r, 5000);
    expect = read_data("nearby_ok.cut1.json", &elen);
    assert_int_equal(r.json_len, elen);
    assert_memory_equal(r.json, expect, elen);
    herd_places_reply_free(&r);
    free(expect);
    reqs = standin_requests();
    q = json_array_get(json_object_get(reqs, "requests"), 1);
    assert_string_equal(json_string_value(json_object_get(q, "raw_query")),
                        "language=en&location=-33.8670522,151.1957362&radius=1500&key=" KEY_ESCAPED);
    json_decref(reqs);
}

/* The stand-in's own Google-shaped answer, cut to each bound. */
static void test_normal_mode(void **state)
{
    (void)state;
    control_post("mode", "{\"mode\": \"normal\", \"results\": 7}");
    start_worker(standin_url, KEY, 5000, 0, 0);
    uint32_t bounds[] = {1, 5, 7, 20};
    for (size_t i = 0; i < 4; i++) {
        herd_places_reply_t r;
        request(i, "+34.068930", "-118.445127", "10", bounds[i]);
        one_reply(&r, 5000);
        assert_null(r.note);
        assert_null(strstr(r.json, "\n\n"));
        assert_true(r.json[0] == '{' && r.json[r.json_len - 1] == '}');
        assert_memory_equal(r.json, "{\n   \"html_attributions\" : [],\n   \"results\" : [\n      {\n", 51);
        json_t *j = json_loads(r.json, 0, NULL);
        assert_non_null(j);
        size_t want = bounds[i] < 7 ? bounds[i] : 7;
        assert_int_equal(json_array_size(json_object_get(j, "results")), want);
        assert_string_equal(json_string_value(json_object_get(j, "status")), "OK");
        json_decref(j);
        herd_places_reply_free(&r);
    }
}

/* No key: REQUEST_DENIED at once, and no upstream call at all. */
static void test_no_key(void **state)
{
    (void)state;
    const char *keys[] = {NULL, ""};
    for (size_t k = 0; k < 2; k++) {
        start_worker(standin_url, keys[k], 5000, 60000, 0);
        herd_places_reply_t r;
        request(41, "+34.068930", "-118.445127", "10", 5);
        one_reply(&r, 5000);
        assert_string_equal(r.json, "{\"html_attributions\": [], \"results\": [], \"status\": \"REQUEST_DENIED\", "
                                    "\"error_message\": \"no Places API key is configured\"}");
        assert_int_equal(r.req_id, 41);
        assert_non_null(r.note);
        assert_non_null(strstr(r.note, "no Places API key is configured"));
        assert_false(r.upstream || r.shared || r.cache_hit);
        herd_places_reply_free(&r);
        herd_places_destroy(&places);
    }
    assert_int_equal(standin_count(), 0);
}

/* A call past its deadline ends with UNKNOWN_ERROR promptly. */
static void test_timeout(void **state)
{
    (void)state;
    control_post("mode", "{\"mode\": \"slow\", \"delay\": 5}");
    start_worker(standin_url, KEY, 300, 60000, 0);
    herd_places_reply_t r;
    int64_t t0 = now_ms();
    request(5, "+34.068930", "-118.445127", "10", 5);
    one_reply(&r, 3000);
    int64_t took = now_ms() - t0;
    assert_error_reply(&r, 5, "UNKNOWN_ERROR", "Places request timed out after 300 ms");
    assert_true(r.upstream);
    assert_true(took >= 250 && took < 1500);
    herd_places_reply_free(&r);
}

/* Each way the call can fail gives its own clear error object. */
static void test_upstream_failures(void **state)
{
    (void)state;
    start_worker(standin_url, KEY, 5000, 60000, 0);
    herd_places_reply_t r;

    control_post("push", "{\"mode\": \"http_error\", \"status\": 503}");
    request(1, "+1", "+1", "1", 5);
    one_reply(&r, 5000);
    assert_error_reply(&r, 1, "UNKNOWN_ERROR", "Places service answered with HTTP status 503");
    herd_places_reply_free(&r);

    /* A redirect is an error, never followed (one request only). */
    control_post("push", "{\"mode\": \"http_error\", \"status\": 302}");
    request(2, "+2", "+2", "2", 5);
    one_reply(&r, 5000);
    assert_error_reply(&r, 2, "UNKNOWN_ERROR", "Places service answered with HTTP status 302");
    herd_places_reply_free(&r);
    assert_int_equal(standin_count(), 2);

    control_post("push", "{\"mode\": \"not_json\"}");
    request(3, "+3", "+3", "3", 5);
    one_reply(&r, 5000);
    assert_error_reply(&r, 3, "UNKNOWN_ERROR",
                       "Places service sent a body that is not a JSON object (unexpected '<' at byte 0 (expected '{'))");
    herd_places_reply_free(&r);

    control_post("push", "{\"mode\": \"body\", \"body\": \"[{\\\"results\\\": []}]\"}");
    request(4, "+4", "+4", "4", 5);
    one_reply(&r, 5000);
    assert_error_reply(&r, 4, "UNKNOWN_ERROR",
                       "Places service sent a body that is not a JSON object (the body is a JSON array, not an object)");
    herd_places_reply_free(&r);

    control_post("push", "{\"mode\": \"body\", \"body\": \"{\\\"results\\\": [1, 2\"}");
    request(5, "+5", "+5", "5", 5);
    one_reply(&r, 5000);
    assert_error_reply(&r, 5, "UNKNOWN_ERROR",
                       "Places service sent a body that is not a JSON object (unexpected end of the body at byte 17 "
                       "(expected ',' or ']'))");
    herd_places_reply_free(&r);

    /* For a location, not one-shot: libcurl retries once on a fresh
     * connection when a reused one closes without an answer. */
    control_post("location", "{\"location\": \"6,6\", \"mode\": \"drop\"}");
    request(6, "+6", "+6", "6", 5);
    one_reply(&r, 5000);
    assert_int_equal(r.req_id, 6);
    assert_non_null(strstr(r.json, "\"status\": \"UNKNOWN_ERROR\", \"error_message\": \"Places request failed: "));
    assert_non_null(r.note);
    assert_no_key(&r, KEY, KEY_ESCAPED);
    herd_places_reply_free(&r);

    /* Errors are not cached: the same request goes upstream again. */
    size_t before = standin_count();
    request(7, "+1", "+1", "1", 5);
    one_reply(&r, 5000);
    assert_null(r.note);
    assert_true(r.upstream);
    herd_places_reply_free(&r);
    assert_int_equal(standin_count(), before + 1);
}

/* Nothing listening: a network error. */
static void test_connection_refused(void **state)
{
    (void)state;
    /* Port 1 is privileged and, on a test machine, closed. */
    start_worker("http://127.0.0.1:1/nearby", KEY, 5000, 0, 0);
    herd_places_reply_t r;
    request(9, "+1", "+1", "1", 5);
    one_reply(&r, 5000);
    assert_non_null(strstr(r.json, "\"error_message\": \"Places request failed: "));
    assert_non_null(strstr(r.note, "Places request failed: "));
    assert_no_key(&r, KEY, KEY_ESCAPED);
    assert_true(r.upstream);
    herd_places_reply_free(&r);
}

/* A key that happens to be a word of an error text is scrubbed from it. */
static void test_key_scrubbed(void **state)
{
    (void)state;
    control_post("mode", "{\"mode\": \"slow\", \"delay\": 5}");
    start_worker(standin_url, "timed", 200, 0, 0);
    herd_places_reply_t r;
    request(1, "+1", "+1", "1", 5);
    one_reply(&r, 3000);
    assert_string_equal(r.json, "{\"html_attributions\": [], \"results\": [], \"status\": \"UNKNOWN_ERROR\", "
                                "\"error_message\": \"Places request *** out after 200 ms\"}");
    assert_null(strstr(r.note, "timed"));
    assert_non_null(strstr(r.note, "Places request *** out after 200 ms"));
    herd_places_reply_free(&r);
    herd_places_destroy(&places);

    start_worker("http://127.0.0.1:1/nearby", "connect", 5000, 0, 0);
    request(2, "+1", "+1", "1", 5);
    one_reply(&r, 5000);
    assert_null(strstr(r.json, "connect"));
    assert_null(strstr(r.note, "connect"));
    assert_non_null(strstr(r.json, "***"));
    herd_places_reply_free(&r);
}

/* Ten identical requests in flight together share one upstream call, and
 * each gets its own cut. */
static void test_identical_requests_share_a_call(void **state)
{
    (void)state;
    mode_fixture("nearby_ok.json", "{\"hold\": true}");
    start_worker(standin_url, KEY, 10000, 0, 0);
    for (uint32_t i = 0; i < 10; i++)
        request(100 + i, "+34.068930", "-118.445127", "10", i + 1);
    wait_count(1, 5000);
    control_post("release", "{}");

    herd_places_reply_t r[10];
    assert_int_equal(collect(r, 10, 5000), 10);
    size_t len1, len3, lenall;
    char *cut1 = read_data("nearby_ok.cut1.json", &len1);
    char *cut3 = read_data("nearby_ok.cut3.json", &len3);
    char *all = read_data("nearby_ok.json", &lenall);
    lenall--; /* the trailing LF goes */
    int upstream = 0, shared = 0;
    bool seen[10] = {false};
    for (size_t i = 0; i < 10; i++) {
        assert_true(r[i].req_id >= 100 && r[i].req_id < 110);
        uint32_t bound = (uint32_t)(r[i].req_id - 100) + 1;
        seen[bound - 1] = true;
        assert_null(r[i].note);
        assert_false(r[i].cache_hit);
        upstream += r[i].upstream;
        shared += r[i].shared;
        assert_true(r[i].upstream != r[i].shared);
        if (bound == 1) {
            assert_int_equal(r[i].json_len, len1);
            assert_memory_equal(r[i].json, cut1, len1);
        } else if (bound == 3) {
            assert_int_equal(r[i].json_len, len3);
            assert_memory_equal(r[i].json, cut3, len3);
        } else if (bound >= 5) {
            assert_int_equal(r[i].json_len, lenall);
            assert_memory_equal(r[i].json, all, lenall);
        } else {
            json_t *j = json_loads(r[i].json, 0, NULL);
            assert_int_equal(json_array_size(json_object_get(j, "results")), bound);
            json_decref(j);
        }
        herd_places_reply_free(&r[i]);
    }
    for (size_t i = 0; i < 10; i++)
        assert_true(seen[i]);
    assert_int_equal(upstream, 1);
    assert_int_equal(shared, 9);
    assert_int_equal(standin_count(), 1);
    free(cut1);
    free(cut3);
    free(all);
}

/* A repeat within the TTL is answered from the cache, cut to its own bound. */
static void test_cache_hit(void **state)
{
    (void)state;
    mode_fixture("nearby_ok.json", NULL);
    start_worker(standin_url, KEY, 5000, 60000, 0);
    herd_places_reply_t r;
    request(1, "+34.068930", "-118.445127", "10", 3);
    one_reply(&r, 5000);
    assert_true(r.upstream);
    herd_places_reply_free(&r);

    request(2, "+34.068930", "-118.445127", "10", 1);
    one_reply(&r, 5000);
    size_t len1;
    char *cut1 = read_data("nearby_ok.cut1.json", &len1);
    assert_true(r.cache_hit);
    assert_false(r.upstream || r.shared);
    assert_int_equal(r.json_len, len1);
    assert_memory_equal(r.json, cut1, len1);
    herd_places_reply_free(&r);
    free(cut1);
    assert_int_equal(standin_count(), 1);

    /* Another radius (in metres) is another request. "10.000" is the same. */
    request(3, "+34.068930", "-118.445127", "10.000", 3);
    one_reply(&r, 5000);
    assert_true(r.cache_hit);
    herd_places_reply_free(&r);
    request(4, "+34.068930", "-118.445127", "11", 3);
    one_reply(&r, 5000);
    assert_true(r.upstream);
    herd_places_reply_free(&r);
    assert_int_equal(standin_count(), 2);

    /* A body whose status is not OK is not cached. */
    mode_fixture("nearby_zero.json", NULL);
    for (uint64_t id = 5; id < 7; id++) {
        request(id, "+1.5", "-2.5", "10", 3);
        one_reply(&r, 5000);
        assert_true(r.upstream);
        assert_string_equal(r.json, "{\n   \"html_attributions\" : [],\n   \"results\" : [],\n"
                                    "   \"status\" : \"ZERO_RESULTS\"\n}");
        herd_places_reply_free(&r);
    }
    assert_int_equal(standin_count(), 4);
}

/* Entries expire after the TTL, and the oldest go when the cache is full. */
static void test_cache_expiry_and_bound(void **state)
{
    (void)state;
    mode_fixture("nearby_ok.json", NULL);
    start_worker(standin_url, KEY, 5000, 300, 0);
    herd_places_reply_t r;
    int64_t t0 = now_ms();
    request(1, "+1", "+1", "1", 1);
    one_reply(&r, 5000);
    herd_places_reply_free(&r);
    /* Ask again until the answer comes from upstream: the entry expired. */
    uint64_t id = 2;
    for (;;) {
        request(id++, "+1", "+1", "1", 1);
        one_reply(&r, 5000);
        bool up = r.upstream;
        herd_places_reply_free(&r);
        if (up)
            break;
        assert_true(now_ms() - t0 < 3000);
        brief_pause();
    }
    assert_true(now_ms() - t0 >= 300);
    assert_int_equal(standin_count(), 2);
    herd_places_destroy(&places);

    control_post("reset", "{}");
    mode_fixture("nearby_ok.json", NULL);
    start_worker(standin_url, KEY, 5000, 60000, 2);
    const char *lats[] = {"+1", "+2", "+3", "+1", "+3"};
    bool expect_hit[] = {false, false, false, false, true};
    for (size_t i = 0; i < 5; i++) {
        request(i, lats[i], "+0", "1", 1);
        one_reply(&r, 5000);
        assert_int_equal(r.cache_hit, expect_hit[i]);
        herd_places_reply_free(&r);
    }
    assert_int_equal(standin_count(), 4);
}

/* With the cache off, every request goes upstream. */
static void test_cache_off(void **state)
{
    (void)state;
    mode_fixture("nearby_ok.json", NULL);
    start_worker(standin_url, KEY, 5000, 0, 0);
    herd_places_reply_t r;
    for (uint64_t id = 0; id < 3; id++) {
        request(id, "+34.068930", "-118.445127", "10", 3);
        one_reply(&r, 5000);
        assert_true(r.upstream);
        assert_false(r.cache_hit);
        herd_places_reply_free(&r);
    }
    assert_int_equal(standin_count(), 3);
}

/* Twenty different slow calls run together: about one delay in all. */
static void test_concurrent_slow_calls(void **state)
{
    (void)state;
    control_post("mode", "{\"mode\": \"slow\", \"delay\": 1.0}");
    start_worker(standin_url, KEY, 10000, 0, 0);
    int64_t t0 = now_ms();
    char lat[32];
    for (uint32_t i = 0; i < 20; i++) {
        snprintf(lat, sizeof lat, "+%u.5", i);
        request(i, lat, "-118.445127", "10", 2);
    }
    herd_places_reply_t r[20];
    assert_int_equal(collect(r, 20, 5000), 20);
    int64_t took = now_ms() - t0;
    for (size_t i = 0; i < 20; i++) {
        assert_null(r[i].note);
        assert_true(r[i].upstream);
        herd_places_reply_free(&r[i]);
    }
    assert_int_equal(standin_count(), 20);
    assert_true(took >= 1000);
    assert_true(took < 2000); /* one after the other would take 20 s */
}

/* The node may leave replies unread for a while: the worker keeps taking
 * requests (it queues what the pipe does not take) and loses nothing. */
static void test_worker_never_blocks_on_the_pipe(void **state)
{
    (void)state;
    start_worker(standin_url, NULL, 5000, 0, 0);
    const uint64_t n = 5000; /* well past the pipe's high-water marks */
    int64_t deadline = now_ms() + 20000;
    for (uint64_t id = 0; id < n;) {
        if (herd_places_request(places, id, span("+1"), span("+1"), span("1"), 1) == 0)
            id++;
        else if (now_ms() > deadline)
            fail_msg("the worker stopped taking requests after %llu", (unsigned long long)id);
        else
            brief_pause();
    }
    for (uint64_t id = 0; id < n; id++) {
        herd_places_reply_t r;
        one_reply(&r, 5000);
        assert_int_equal(r.req_id, id);
        herd_places_reply_free(&r);
    }
    herd_places_reply_t r;
    assert_int_equal(herd_places_recv(places, &r), 0);
}

/* Destroy with calls in flight and replies unread returns at once. */
static void test_destroy_with_calls_in_flight(void **state)
{
    (void)state;
    control_post("mode", "{\"mode\": \"hold\"}");
    start_worker(standin_url, KEY, 30000, 0, 0);
    request(1, "+1", "+1", "1", 1);
    request(2, "+2", "+2", "2", 1);
    wait_count(2, 5000);
    for (uint64_t id = 3; id < 1500; id++) /* unread replies: "invalid radius" */
        herd_places_request(places, id, span("+1"), span("+1"), span("x"), 1);
    int64_t t0 = now_ms();
    herd_places_destroy(&places);
    assert_null(places);
    assert_true(now_ms() - t0 < 1000);
}

/* Two calls at once, two requests waiting, the rest refused at once; a
 * cancel stops a running call (a queued one takes its slot) or takes a
 * request out of the queue, and a cancelled request gets no reply. */
static void test_bounds_and_cancels(void **state)
{
    (void)state;
    control_post("mode", "{\"mode\": \"hold\"}");
    start_bounded_worker(standin_url, KEY, 30000, 0, 0, 2, 2);
    for (uint64_t id = 1; id <= 6; id++) {
        char radius[8];
        snprintf(radius, sizeof radius, "%u", (unsigned)id);
        request(id, "+1", "+1", radius, 1);
    }
    herd_places_reply_t r[2];
    assert_int_equal(collect(r, 2, 5000), 2);
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(r[i].req_id, 5 + i);
        assert_non_null(strstr(r[i].json, "places.max_queued is 2"));
        assert_false(r[i].upstream);
        herd_places_reply_free(&r[i]);
    }
    wait_count(2, 5000);
    assert_int_equal(herd_places_cancel(places, 1), 0); /* running: stopped, 3 starts */
    wait_count(3, 5000);
    assert_int_equal(herd_places_cancel(places, 4), 0); /* queued: never called */
    assert_int_equal(herd_places_cancel(places, 99), 0); /* unknown: ignored */
    herd_places_reply_t got[2];
    size_t n = 0;
    int64_t deadline = now_ms() + 5000;
    while (n < 2 && now_ms() < deadline) {
        control_post("release", "{}");
        n += collect(got + n, 2 - n, 50);
    }
    assert_int_equal(n, 2);
    uint64_t ids = 0;
    for (size_t i = 0; i < 2; i++) {
        assert_null(got[i].note);
        ids |= 1u << got[i].req_id;
        herd_places_reply_free(&got[i]);
    }
    assert_int_equal(ids, (1u << 2) | (1u << 3));
    /* A barrier: the next reply is this one's, not one for 1 or 4. */
    request(8, "+1", "+1", "ten", 1);
    one_reply(&r[0], 5000);
    assert_int_equal(r[0].req_id, 8);
    herd_places_reply_free(&r[0]);
    assert_int_equal(standin_count(), 3);
}

/* Identical requests that join a running call count against max_queued
 * like queued ones: one call, max_queued waiting, the rest refused at once
 * (flagged so). Those with one bound share one body: the same text, not a
 * copy each. */
static void test_shared_requests_are_bounded_and_share_a_body(void **state)
{
    (void)state;
    mode_fixture("nearby_ok.json", "{\"hold\": true}");
    start_bounded_worker(standin_url, KEY, 30000, 0, 0, 4, 3);
    for (uint64_t id = 1; id <= 6; id++)
        request(id, "+34.068930", "-118.445127", "10", id == 4 ? 3 : 1);
    herd_places_reply_t r[4];
    assert_int_equal(collect(r, 2, 5000), 2);
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(r[i].req_id, 5 + i);
        assert_true(r[i].refused);
        assert_non_null(strstr(r[i].json, "places.max_queued is 3"));
        herd_places_reply_free(&r[i]);
    }
    wait_count(1, 5000);
    control_post("release", "{}");
    assert_int_equal(collect(r, 4, 5000), 4);
    size_t len1, len3;
    char *cut1 = read_data("nearby_ok.cut1.json", &len1);
    char *cut3 = read_data("nearby_ok.cut3.json", &len3);
    herd_places_body_t *one = NULL;
    for (size_t i = 0; i < 4; i++) {
        assert_false(r[i].refused);
        assert_true(r[i].req_id >= 1 && r[i].req_id <= 4);
        assert_int_equal(r[i].upstream, r[i].req_id == 1);
        assert_int_equal(r[i].shared, r[i].req_id != 1);
        if (r[i].req_id == 4) {
            assert_int_equal(r[i].json_len, len3);
            assert_memory_equal(r[i].json, cut3, len3);
            continue;
        }
        assert_int_equal(r[i].json_len, len1);
        assert_memory_equal(r[i].json, cut1, len1);
        if (!one)
            one = r[i].body;
        assert_ptr_equal(r[i].body, one); /* bound 1: one body for ids 1, 2 and 3 */
    }
    assert_int_equal(one->refs, 3);
    for (size_t i = 0; i < 4; i++)
        herd_places_reply_free(&r[i]);
    assert_int_equal(standin_count(), 1);
    free(cut1);
    free(cut3);
}

/* Reloaded settings reach the worker: a shorter timeout cuts a running call
 * at the new deadline counted from its start, and a smaller max_queued
 * refuses sooner. */
static void test_reconfigure(void **state)
{
    (void)state;
    mode_fixture("nearby_ok.json", "{\"delay\": 3.0}");
    start_bounded_worker(standin_url, KEY, 10000, 0, 0, 1, 8);
    request(1, "+1", "+1", "1", 1);
    wait_count(1, 5000);
    herd_places_conf_t conf = {.timeout_ms = 200, .cache_ttl_ms = 0, .max_in_flight = 1, .max_queued = 1};
    int64_t t0 = now_ms();
    assert_int_equal(herd_places_reconfigure(places, &conf), 0);
    herd_places_reply_t r;
    one_reply(&r, 5000);
    assert_true(now_ms() - t0 < 1000);
    assert_error_reply(&r, 1, "UNKNOWN_ERROR", "Places request timed out after 200 ms");
    herd_places_reply_free(&r);

    /* One call runs, one waits, the third is refused. */
    control_post("mode", "{\"mode\": \"hold\"}");
    request(2, "+1", "+1", "2", 1);
    request(3, "+1", "+1", "3", 1);
    request(4, "+1", "+1", "4", 1);
    one_reply(&r, 5000);
    assert_int_equal(r.req_id, 4);
    assert_true(r.refused);
    assert_non_null(strstr(r.json, "places.max_queued is 1"));
    herd_places_reply_free(&r);
}

/* A radius that is not a number gets an error object, and no call. */
static void test_invalid_radius(void **state)
{
    (void)state;
    start_worker(standin_url, KEY, 5000, 0, 0);
    herd_places_reply_t r;
    request(3, "+1", "+1", "ten", 1);
    one_reply(&r, 5000);
    assert_error_reply(&r, 3, "UNKNOWN_ERROR", "invalid radius");
    herd_places_reply_free(&r);
    assert_int_equal(standin_count(), 0);
}

static void test_new_rejects_missing_url(void **state)
{
    (void)state;
    herd_places_conf_t conf = {.url = NULL, .key = KEY, .timeout_ms = 1000};
    char err[128] = "";
    assert_null(herd_places_new(&conf, err, sizeof err));
    assert_non_null(strstr(err, "URL"));
    conf.url = "";
    assert_null(herd_places_new(&conf, err, sizeof err));
    herd_places_destroy(NULL);
    herd_places_t *none = NULL;
    herd_places_destroy(&none);
}

#define T(f) cmocka_unit_test_setup_teardown(f, test_setup, test_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_reply_bytes_and_url),
        T(test_normal_mode),
        T(test_no_key),
        T(test_timeout),
        T(test_upstream_failures),
        T(test_connection_refused),
        T(test_key_scrubbed),
        T(test_identical_requests_share_a_call),
        T(test_cache_hit),
        T(test_cache_expiry_and_bound),
        T(test_cache_off),
        T(test_concurrent_slow_calls),
        T(test_worker_never_blocks_on_the_pipe),
        T(test_destroy_with_calls_in_flight),
        T(test_invalid_radius),
        T(test_bounds_and_cancels),
        T(test_shared_requests_are_bounded_and_share_a_body),
        T(test_reconfigure),
        T(test_new_rejects_missing_url),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
