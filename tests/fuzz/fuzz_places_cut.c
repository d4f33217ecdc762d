/* fuzz_places_cut: the Places body cut (herd_places_cut) and the error
 * object (herd_places_error_json) on arbitrary bytes.
 *
 * The first byte is the bound (0xff stands for "no limit", UINT32_MAX); the
 * rest is the body. Checks, besides the sanitizers:
 * - the output is never longer than the body, is NUL-terminated, holds no
 *   "\n\n" and neither starts nor ends with a line end;
 * - the verdict does not depend on the bound, and with no limit the output
 *   is the body with only its line-end runs collapsed (checked against a
 *   reference collapse written here);
 * - when jansson reads the body as an object (duplicate keys refused; bodies
 *   with a NUL byte left out, see check_json), the cut accepts it, jansson
 *   reads the output as an object too, every member but "results" is
 *   unchanged, "results" keeps exactly its first min(n, bound) entries, and
 *   status_ok says whether "status" is "OK";
 * - a refusal leaves no output, status_ok false and a one-line reason;
 * - herd_places_error_json always makes an object jansson reads back, with
 *   the message itself when it is valid UTF-8. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include "fuzz_target.h"

#include <jansson.h>
#include <stdbool.h>
#include <string.h>

#include "herd_places.h"

/* Length of the line end at b[i]: LF, or CR LF (the CR belongs to it, as in
 * herd_places_cut), else 0. */
static size_t line_end(const uint8_t *b, size_t n, size_t i)
{
    if (b[i] == '\n')
        return 1;
    return b[i] == '\r' && i + 1 < n && b[i + 1] == '\n' ? 2 : 0;
}

/* Copies b to out with every run of line ends replaced by its first one,
 * and runs at the very start or end dropped. Returns the length. */
static size_t ref_collapse(const uint8_t *b, size_t n, uint8_t *out)
{
    size_t w = 0;
    for (size_t i = 0; i < n;) {
        size_t first = line_end(b, n, i);
        if (first == 0) {
            out[w++] = b[i++];
            continue;
        }
        size_t run_start = i;
        while (i < n && line_end(b, n, i) != 0)
            i += line_end(b, n, i);
        if (run_start != 0 && i != n) {
            memcpy(out + w, b + run_start, first);
            w += first;
        }
    }
    return w;
}

/* Runs the cut and checks what holds for every input. Returns rc. */
static int cut(const char *body, size_t len, uint32_t bound, char **out, size_t *out_len,
               bool *status_ok)
{
    char err[256];
    memset(err, 'x', sizeof err);
    *status_ok = true;
    int rc = herd_places_cut(body, len, bound, out, out_len, status_ok, err, sizeof err);
    if (rc != 0) {
        FUZZ_CHECK(rc == -1 && *out == NULL && *out_len == 0 && !*status_ok,
                   "a refusal leaves no output");
        FUZZ_CHECK(memchr(err, '\0', sizeof err) != NULL && err[0] != '\0'
                       && strchr(err, '\n') == NULL,
                   "a refusal needs a one-line reason");
        return rc;
    }
    const char *o = *out;
    size_t n = *out_len;
    FUZZ_CHECK(o != NULL && o[n] == '\0', "output must be NUL-terminated");
    FUZZ_CHECK(n <= len, "output of %zu bytes from a body of %zu", n, len);
    FUZZ_CHECK(memmem(o, n, "\n\n", 2) == NULL, "output holds \\n\\n");
    FUZZ_CHECK(n == 0 || (o[0] != '\n' && o[n - 1] != '\n'), "output starts or ends with LF");
    FUZZ_CHECK(n < 2 || memcmp(o, "\r\n", 2) != 0, "output starts with CR LF");

    /* The optional arguments are optional. */
    char *o2;
    size_t n2;
    FUZZ_CHECK(herd_places_cut(body, len, bound, &o2, &n2, NULL, NULL, 0) == 0 && n2 == n
                   && memcmp(o2, o, n) == 0,
               "the cut must not depend on status_ok or err");
    free(o2);
    return rc;
}

/* Compares the cut output with the body as jansson reads them. */
static void check_json(const char *body, size_t len, uint32_t bound, const char *out,
                       size_t out_len, bool status_ok)
{
    /* jansson 2.14's json_loadb skips a NUL byte that follows a number or a
     * literal ({"a":1<NUL>} loads), so it is no reference for such bodies;
     * the cut rightly refuses them. */
    if (len > 0 && memchr(body, '\0', len) != NULL)
        return;
    json_error_t e;
    json_t *in = json_loadb(body, len, JSON_REJECT_DUPLICATES, &e);
    if (in == NULL)
        return;
    if (!json_is_object(in)) {
        json_decref(in);
        return;
    }
    FUZZ_CHECK(out != NULL, "jansson reads the body as an object, the cut refused it");
    json_t *o = json_loadb(out, out_len, JSON_REJECT_DUPLICATES, &e);
    FUZZ_CHECK(o != NULL && json_is_object(o), "the output is not JSON: %s at %d:%d", e.text,
               e.line, e.column);
    FUZZ_CHECK(json_object_size(o) == json_object_size(in), "member count changed");

    const char *key;
    json_t *v;
    json_object_foreach(in, key, v) {
        json_t *w = json_object_get(o, key);
        FUZZ_CHECK(w != NULL, "member \"%s\" lost", key);
        if (strcmp(key, "results") == 0 && json_is_array(v)) {
            size_t n = json_array_size(v), keep = n < bound ? n : bound;
            FUZZ_CHECK(json_is_array(w) && json_array_size(w) == keep,
                       "results has %zu entries, want %zu", json_array_size(w), keep);
            for (size_t i = 0; i < keep; i++)
                FUZZ_CHECK(json_equal(json_array_get(v, i), json_array_get(w, i)),
                           "results entry %zu changed", i);
        } else {
            FUZZ_CHECK(json_equal(v, w), "member \"%s\" changed", key);
        }
    }

    json_t *st = json_object_get(in, "status");
    bool ok = json_is_string(st) && json_string_length(st) == 2
              && memcmp(json_string_value(st), "OK", 2) == 0;
    FUZZ_CHECK(status_ok == ok, "status_ok %d, jansson says %d", status_ok, ok);
    json_decref(o);
    json_decref(in);
}

static void check_error_json(const uint8_t *data, size_t size)
{
    char *msg = malloc(size + 1);
    FUZZ_CHECK(msg != NULL, "out of memory");
    memcpy(msg, data, size);
    msg[size] = '\0';
    char *j = herd_places_error_json("UNKNOWN_ERROR", msg);
    FUZZ_CHECK(j != NULL, "error_json failed");
    json_error_t e;
    json_t *o = json_loads(j, 0, &e);
    FUZZ_CHECK(o != NULL && json_is_object(o), "error object is not JSON: %s", e.text);
    FUZZ_CHECK(json_is_string(json_object_get(o, "status"))
                   && strcmp(json_string_value(json_object_get(o, "status")), "UNKNOWN_ERROR") == 0,
               "status differs");
    json_t *m = json_object_get(o, "error_message");
    FUZZ_CHECK(json_is_string(m), "error_message missing");
    json_t *valid = json_string(msg); /* NULL when msg is not valid UTF-8 */
    if (valid != NULL) {
        FUZZ_CHECK(json_equal(valid, m), "error_message must be the message itself");
        json_decref(valid);
    }
    FUZZ_CHECK(json_is_array(json_object_get(o, "results"))
                   && json_array_size(json_object_get(o, "results")) == 0,
               "results must be empty");
    json_decref(o);
    free(j);
    free(msg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    uint32_t bound = data[0] == 0xff ? UINT32_MAX : data[0];
    const char *body = (const char *) data + 1;
    size_t len = size - 1;

    char *out = NULL, *all = NULL;
    size_t out_len = 0, all_len = 0;
    bool status_ok, all_status;
    int rc = cut(body, len, bound, &out, &out_len, &status_ok);
    int rc_all = cut(body, len, UINT32_MAX, &all, &all_len, &all_status);
    FUZZ_CHECK(rc == rc_all, "the verdict changed with the bound");
    if (rc == 0) {
        FUZZ_CHECK(status_ok == all_status, "status_ok changed with the bound");
        FUZZ_CHECK(out_len <= all_len, "cutting made the output longer");
        uint8_t *want = malloc(len ? len : 1);
        FUZZ_CHECK(want != NULL, "out of memory");
        size_t want_len = ref_collapse((const uint8_t *) body, len, want);
        FUZZ_CHECK(all_len == want_len && memcmp(all, want, want_len) == 0,
                   "with no limit only line ends may change");
        free(want);
    }
    check_json(body, len, bound, out, out_len, status_ok);
    free(out);
    free(all);

    check_error_json(data + 1, len);
    return 0;
}
