/* Unit tests of the pure Places helpers: the results cut with newline
 * collapsing (exact output bytes for a table of bodies, fixtures and a 5 MB
 * body), the error object and the request URL. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "herd_places.h"

#ifndef HERD_TEST_DATA
#error "HERD_TEST_DATA must name the tests/data folder"
#endif

/* A literal with its exact length, so bodies may hold NUL bytes. */
#define LIT(s) s, sizeof(s) - 1

typedef struct {
    const char *name;    /* what the case shows */
    const char *body;    /* input bytes */
    size_t len;          /* input length */
    uint32_t bound;      /* entries to keep */
    const char *expect;  /* exact output, or NULL when the body must be rejected */
    size_t expect_len;   /* its length */
    bool status_ok;      /* expected status_ok on success */
    const char *err_has; /* on rejection: a piece the error message must contain */
} cut_case_t;

#define OK_CASE(n, b, bound, e, st) {n, LIT(b), bound, LIT(e), st, NULL}
#define BAD_CASE(n, b, msg) {n, LIT(b), 5, NULL, 0, false, msg}

static const cut_case_t cut_cases[] = {
    OK_CASE("google style, bound 2 of 3",
            "{\n   \"html_attributions\" : [],\n   \"results\" : [\n      {\n         \"name\" : \"A\"\n      },\n"
            "      {\n         \"name\" : \"B\"\n      },\n      {\n         \"name\" : \"C\"\n      }\n   ],\n"
            "   \"status\" : \"OK\"\n}\n",
            2,
            "{\n   \"html_attributions\" : [],\n   \"results\" : [\n      {\n         \"name\" : \"A\"\n      },\n"
            "      {\n         \"name\" : \"B\"\n      }\n   ],\n   \"status\" : \"OK\"\n}",
            true),
    OK_CASE("bound 1", "{\"results\" : [ {\"a\":1}, {\"a\":2}, {\"a\":3} ], \"status\":\"OK\"}", 1,
            "{\"results\" : [ {\"a\":1} ], \"status\":\"OK\"}", true),
    OK_CASE("bound equal to the count", "{\"results\":[1,2,3]}", 3, "{\"results\":[1,2,3]}", false),
    OK_CASE("bound larger than the count", "{\"results\":[1,2,3]}\n", 20, "{\"results\":[1,2,3]}", false),
    OK_CASE("bound 20 of 21",
            "{\"results\":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21]}", 20,
            "{\"results\":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20]}", false),
    OK_CASE("compact, nothing between entries", "{\"results\":[1,2,3],\"status\":\"OK\"}", 1,
            "{\"results\":[1],\"status\":\"OK\"}", true),
    OK_CASE("what stands before ] stays", "{\"results\" : [1 , 2 , 3  ] }", 1,
            "{\"results\" : [1  ] }", false),
    OK_CASE("results empty", "{\"results\" : [], \"status\" : \"ZERO_RESULTS\"}", 1,
            "{\"results\" : [], \"status\" : \"ZERO_RESULTS\"}", false),
    OK_CASE("results empty with white space", "{\"results\" : [\n   ]}", 1, "{\"results\" : [\n   ]}", false),
    OK_CASE("no results key", "{\"status\" : \"OK\"}", 1, "{\"status\" : \"OK\"}", true),
    OK_CASE("empty object", "{}", 1, "{}", false),
    OK_CASE("results is an object: left alone", "{\"results\" : {\"a\" : [1, 2, 3]}}", 1,
            "{\"results\" : {\"a\" : [1, 2, 3]}}", false),
    OK_CASE("results is null", "{\"results\" : null, \"x\" : [1, 2]}", 1, "{\"results\" : null, \"x\" : [1, 2]}",
            false),
    OK_CASE("results is a string", "{\"results\" : \"[1, 2, 3]\"}", 1, "{\"results\" : \"[1, 2, 3]\"}", false),
    OK_CASE("nested results is not cut",
            "{\"a\" : {\"results\" : [1, 2, 3]}, \"results\" : [4, 5, 6], \"b\" : [{\"results\" : [7, 8]}]}", 1,
            "{\"a\" : {\"results\" : [1, 2, 3]}, \"results\" : [4], \"b\" : [{\"results\" : [7, 8]}]}", false),
    OK_CASE("results as the first key", "{\"results\":[1,2],\"html_attributions\":[]}", 1,
            "{\"results\":[1],\"html_attributions\":[]}", false),
    OK_CASE("results as the last key", "{\"html_attributions\":[],\"status\":\"OK\",\"results\":[1,2]}", 1,
            "{\"html_attributions\":[],\"status\":\"OK\",\"results\":[1]}", true),
    OK_CASE("results key written with an escape", "{\"r\\u0065sults\":[1,2]}", 1, "{\"r\\u0065sults\":[1]}",
            false),
    OK_CASE("a longer key is not results", "{\"resultsx\":[1,2],\"result\":[1,2]}", 1,
            "{\"resultsx\":[1,2],\"result\":[1,2]}", false),
    OK_CASE("duplicate top-level results: both cut", "{\"results\":[1,2],\"results\":[3,4]}", 1,
            "{\"results\":[1],\"results\":[3]}", false),
    OK_CASE("strings full of brackets, braces, commas and escapes",
            "{\"results\" : [\"a],[}{,\\\"x\\\\\", \"\\u005d]\\\"\", \"\\/\\b\\f\\n\\r\\t\"]}", 2,
            "{\"results\" : [\"a],[}{,\\\"x\\\\\", \"\\u005d]\\\"\"]}", false),
    OK_CASE("nested arrays and objects in results",
            "{\"results\":[[1,[2,3]],{\"a\":[{\"b\":{}}],\"c\":\"]\"},3,{\"d\":[[[]]]}]}", 2,
            "{\"results\":[[1,[2,3]],{\"a\":[{\"b\":{}}],\"c\":\"]\"}]}", false),
    OK_CASE("all JSON value kinds in results",
            "{\"results\":[true,false,null,-0.5e+10,0,\"s\",[],{}]}", 7,
            "{\"results\":[true,false,null,-0.5e+10,0,\"s\",[]]}", false),
    OK_CASE("UTF-8 in strings", "{\"results\":[\"caf\xc3\xa9\",\"\xe6\x9d\xb1\",\"\xf0\x9f\x98\x80\"]}", 2,
            "{\"results\":[\"caf\xc3\xa9\",\"\xe6\x9d\xb1\"]}", false),
    OK_CASE("status not OK", "{\"status\" : \"ZERO_RESULTS\"}", 1, "{\"status\" : \"ZERO_RESULTS\"}", false),
    OK_CASE("status OK written with an escape", "{\"status\":\"O\\u004b\"}", 1, "{\"status\":\"O\\u004b\"}", true),
    OK_CASE("status OKAY is not OK", "{\"status\":\"OKAY\"}", 1, "{\"status\":\"OKAY\"}", false),
    OK_CASE("status not a string", "{\"status\":1}", 1, "{\"status\":1}", false),
    OK_CASE("nested status does not count", "{\"a\":{\"status\":\"OK\"}}", 1, "{\"a\":{\"status\":\"OK\"}}", false),
    OK_CASE("last status wins", "{\"status\":\"OK\",\"status\":\"DENIED\"}", 1,
            "{\"status\":\"OK\",\"status\":\"DENIED\"}", false),
    OK_CASE("leading and trailing LFs removed", "\n\n\n{\"a\" : 1}\n\n\n", 1, "{\"a\" : 1}", false),
    OK_CASE("runs of LFs collapsed", "{\n\n\n\"a\"\n\n:\n1\n}\n", 1, "{\n\"a\"\n:\n1\n}", false),
    OK_CASE("LF runs brought together by the cut",
            "{\"results\" : [\n\n   1,\n\n   2,\n\n   3\n\n],\n\n\"status\" : \"OK\"}", 1,
            "{\"results\" : [\n   1\n],\n\"status\" : \"OK\"}", true),
    OK_CASE("CRLF body",
            "{\r\n   \"results\" : [\r\n      1,\r\n      2\r\n   ],\r\n\r\n   \"status\" : \"OK\"\r\n}\r\n", 1,
            "{\r\n   \"results\" : [\r\n      1\r\n   ],\r\n   \"status\" : \"OK\"\r\n}", true),
    OK_CASE("CRLF leading and trailing line ends", "\r\n\n\r\n{}\r\n\r\n", 1, "{}", false),
    OK_CASE("a lone CR is white space, not a line end", "{\r\"a\"\r\r:1}\r", 1, "{\r\"a\"\r\r:1}\r", false),
    OK_CASE("mixed run keeps its first line end", "{\n\r\n\"a\":1\r\n\n}", 1, "{\n\"a\":1\r\n}", false),
    OK_CASE("spaces around the object are kept", "  {}  ", 1, "  {}  ", false),
    OK_CASE("a line of spaces is not a line end", "{}\n  \n", 1, "{}\n  ", false),
    OK_CASE("bound 0 empties the array", "{\"results\" : [ 1, 2 ]}", 0, "{\"results\" : [ ]}", false),

    BAD_CASE("empty body", "", "empty"),
    BAD_CASE("only white space", " \n\r\t ", "empty"),
    BAD_CASE("top-level array", "[{\"results\":[]}]", "array"),
    BAD_CASE("top-level string", "\"x\"", "unexpected '\"' at byte 0"),
    BAD_CASE("top-level number", "42", "unexpected '4' at byte 0"),
    BAD_CASE("HTML error page", "<html>Bad Gateway</html>", "unexpected '<' at byte 0"),
    BAD_CASE("truncated in an array", "{\"results\":[1,2", "end of the body at byte 15"),
    BAD_CASE("truncated after a key", "{\"a\"", "end of the body"),
    BAD_CASE("truncated after the colon", "{\"a\": ", "end of the body"),
    BAD_CASE("truncated object", "{\"a\":1", "end of the body"),
    BAD_CASE("trailing garbage", "{\"a\":1} x", "after the end of the JSON object at byte 8"),
    BAD_CASE("two objects", "{}{}", "after the end of the JSON object at byte 2"),
    BAD_CASE("bad escape", "{\"a\":\"\\x\"}", "invalid escape at byte 6"),
    BAD_CASE("bad unicode escape", "{\"a\":\"\\u12G4\"}", "invalid \\u escape"),
    BAD_CASE("short unicode escape at the end", "{\"a\":\"\\u12", "invalid \\u escape"),
    BAD_CASE("control byte in a string", "{\"a\":\"x\x01y\"}", "control byte 0x01 inside a string at byte 7"),
    BAD_CASE("raw LF in a string", "{\"a\":\"x\ny\"}", "control byte 0x0a"),
    BAD_CASE("NUL in a string", "{\"a\":\"x\0y\"}", "control byte 0x00"),
    BAD_CASE("NUL between values", "{\"a\":1,\0\"b\":2}", "unexpected byte 0x00 at byte 7"),
    BAD_CASE("unterminated string", "{\"a\":\"abc", "unterminated string starting at byte 5"),
    BAD_CASE("unterminated string after a backslash", "{\"a\":\"abc\\", "unterminated string"),
    BAD_CASE("unterminated key", "{\"ab", "unterminated string starting at byte 1"),
    BAD_CASE("invalid UTF-8", "{\"a\":\"\xff\"}", "invalid UTF-8"),
    BAD_CASE("overlong UTF-8", "{\"a\":\"\xc0\xaf\"}", "invalid UTF-8"),
    BAD_CASE("UTF-8 surrogate", "{\"a\":\"\xed\xa0\x80\"}", "invalid UTF-8"),
    BAD_CASE("truncated UTF-8", "{\"a\":\"\xe6\x9d", "invalid UTF-8"),
    BAD_CASE("missing colon", "{\"a\" 1}", "expected ':'"),
    BAD_CASE("missing comma", "{\"a\":1 \"b\":2}", "expected ',' or '}'"),
    BAD_CASE("missing comma in array", "{\"a\":[1 2]}", "expected ',' or ']'"),
    BAD_CASE("trailing comma in object", "{\"a\":1,}", "expected a string key"),
    BAD_CASE("trailing comma in array", "{\"a\":[1,]}", "expected a JSON value"),
    BAD_CASE("non-string key", "{1:2}", "expected a string key"),
    BAD_CASE("single quotes", "{'a':1}", "unexpected '''"),
    BAD_CASE("leading zero", "{\"a\":01}", "expected ',' or '}'"),
    BAD_CASE("bare minus", "{\"a\":-}", "invalid number"),
    BAD_CASE("fraction without digits", "{\"a\":1.}", "invalid number"),
    BAD_CASE("exponent without digits", "{\"a\":1e+}", "invalid number"),
    BAD_CASE("bad literal", "{\"a\":tru}", "expected a JSON value"),
    BAD_CASE("NaN", "{\"a\":NaN}", "unexpected 'N'"),
    BAD_CASE("mismatched close", "{\"a\":[1}", "expected ',' or ']'"),
    BAD_CASE("close too many", "{\"a\":1}}", "after the end of the JSON object"),
    BAD_CASE("form feed is not JSON white space", "{\f}", "unexpected byte 0x0c"),
};

static void test_cut_table(void **state)
{
    (void)state;
    size_t failures = 0;
    for (size_t i = 0; i < sizeof cut_cases / sizeof cut_cases[0]; i++) {
        const cut_case_t *c = &cut_cases[i];
        char *out = (char *)"sentinel";
        size_t out_len = 12345;
        bool st = !c->status_ok;
        char err[256] = "sentinel";
        int rc = herd_places_cut(c->body, c->len, c->bound, &out, &out_len, &st, err, sizeof err);
        bool pass;
        if (c->expect) {
            pass = rc == 0 && out && out_len == c->expect_len && memcmp(out, c->expect, out_len) == 0 &&
                   out[out_len] == '\0' && st == c->status_ok && err[0] == '\0';
        } else {
            pass = rc == -1 && out == NULL && out_len == 0 && !st && strstr(err, c->err_has) != NULL;
        }
        if (!pass) {
            failures++;
            print_error("case %zu \"%s\": rc %d, err \"%s\", status_ok %d, output (%zu bytes):\n%.*s\n", i,
                        c->name, rc, err, st, out ? out_len : 0, out ? (int)out_len : 0, out ? out : "");
        }
        if (rc == 0)
            free(out);
    }
    assert_int_equal(failures, 0);
}

/* The cut works without the optional outputs. */
static void test_cut_optional_args(void **state)
{
    (void)state;
    char *out = NULL;
    size_t len = 0;
    assert_int_equal(herd_places_cut(LIT("{\"results\":[1,2]}"), 1, &out, &len, NULL, NULL, 0), 0);
    assert_string_equal(out, "{\"results\":[1]}");
    free(out);
    assert_int_equal(herd_places_cut(LIT("[1]"), 1, &out, &len, NULL, NULL, 0), -1);
    assert_null(out);
    assert_int_equal(herd_places_cut(NULL, 0, 1, &out, &len, NULL, NULL, 0), -1);
}

static char *read_data(const char *name, size_t *len)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/places/%s", HERD_TEST_DATA, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? cap * 2 : 4096;
            buf = realloc(buf, cap + 1);
            assert_non_null(buf);
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
}

static void expect_cut_file(const char *body_name, uint32_t bound, const char *expect_name)
{
    size_t blen, elen, olen;
    char *body = read_data(body_name, &blen);
    char *expect = read_data(expect_name, &elen);
    char *out = NULL;
    bool st = false;
    char err[256];
    assert_int_equal(herd_places_cut(body, blen, bound, &out, &olen, &st, err, sizeof err), 0);
    assert_true(st);
    assert_int_equal(olen, elen);
    assert_memory_equal(out, expect, elen);
    free(out);
    free(body);
    free(expect);
}

/* A Google-shaped body with nested objects, photos, escapes and UTF-8,
 * against expected files made by construction. */
static void test_cut_fixture(void **state)
{
    (void)state;
    expect_cut_file("nearby_ok.json", 1, "nearby_ok.cut1.json");
    expect_cut_file("nearby_ok.json", 3, "nearby_ok.cut3.json");

    /* Bound 5 and 20 keep all five: only the trailing LF goes. */
    size_t blen, olen;
    char *body = read_data("nearby_ok.json", &blen);
    for (uint32_t bound = 5; bound <= 20; bound += 15) {
        char *out = NULL;
        assert_int_equal(herd_places_cut(body, blen, bound, &out, &olen, NULL, NULL, 0), 0);
        assert_int_equal(olen, blen - 1);
        assert_memory_equal(out, body, olen);
        free(out);
    }
    free(body);

    bool st = true;
    char *out = NULL;
    body = read_data("nearby_zero.json", &blen);
    assert_int_equal(herd_places_cut(body, blen, 3, &out, &olen, &st, NULL, 0), 0);
    assert_false(st);
    assert_int_equal(olen, blen - 1);
    assert_memory_equal(out, body, olen);
    free(out);
    free(body);
}

/* Appends to a growing buffer (test helper). */
typedef struct {
    char *p;
    size_t len, cap;
} buf_t;

static void buf_add(buf_t *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_str(buf_t *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

/* A 5 MB body: 20000 entries; the output is built from the same pieces. */
static void test_cut_large_body(void **state)
{
    (void)state;
    const char *head = "{\n   \"html_attributions\" : [],\n   \"results\" : [\n";
    const char *tail = "\n   ],\n   \"status\" : \"OK\"\n}\n";
    buf_t body = {0}, expect = {0};
    buf_str(&body, head);
    buf_str(&expect, head);
    char entry[1024];
    size_t n_entries = 20000;
    for (size_t i = 0; i < n_entries; i++) {
        int n = snprintf(entry, sizeof entry,
                         "%s      {\n         \"name\" : \"Place %zu, \\\"quoted\\\" ]}[{\",\n"
                         "         \"geometry\" : { \"location\" : { \"lat\" : 34.%06zu, \"lng\" : -118.%06zu } },\n"
                         "         \"types\" : [ \"a\", \"b\", [ 1, 2, { \"c\" : [] } ] ],\n"
                         "         \"vicinity\" : \"%0120zu\"\n      }",
                         i ? ",\n" : "", i, i, i, i);
        assert_true(n > 0 && (size_t)n < sizeof entry);
        buf_add(&body, entry, (size_t)n);
        if (i < 3)
            buf_add(&expect, entry, (size_t)n);
    }
    buf_str(&body, tail);
    buf_add(&expect, tail, strlen(tail) - 1);
    assert_true(body.len > 5 * 1000 * 1000);

    char *out = NULL;
    size_t olen;
    bool st = false;
    char err[256];
    assert_int_equal(herd_places_cut(body.p, body.len, 3, &out, &olen, &st, err, sizeof err), 0);
    assert_true(st);
    assert_int_equal(olen, expect.len);
    assert_memory_equal(out, expect.p, olen);
    free(out);

    /* Bound larger than the count on the same body: all kept. */
    assert_int_equal(herd_places_cut(body.p, body.len, 20, &out, &olen, &st, err, sizeof err), 0);
    free(out);

    /* The same body cut short is rejected. */
    assert_int_equal(herd_places_cut(body.p, body.len - strlen(tail), 3, &out, &olen, &st, err, sizeof err), -1);
    assert_non_null(strstr(err, "end of the body"));
    assert_int_equal(herd_places_cut(body.p, body.len / 2, 3, &out, &olen, &st, err, sizeof err), -1);
    assert_null(out);
    free(body.p);
    free(expect.p);
}

/* A 5 MB string and 2.5 million levels of nesting: no recursion to overflow. */
static void test_cut_deep_and_long(void **state)
{
    (void)state;
    size_t depth = 2500000;
    buf_t b = {0};
    buf_str(&b, "{\"results\":[");
    for (size_t i = 0; i < depth; i++)
        buf_add(&b, "[", 1);
    for (size_t i = 0; i < depth; i++)
        buf_add(&b, "]", 1);
    buf_str(&b, ",1,{\"deep\":true}]}");
    char *out = NULL;
    size_t olen;
    char err[256];
    assert_int_equal(herd_places_cut(b.p, b.len, 1, &out, &olen, NULL, err, sizeof err), 0);
    assert_int_equal(olen, b.len - strlen(",1,{\"deep\":true}"));
    assert_memory_equal(out, b.p, olen - 2);
    assert_memory_equal(out + olen - 2, "]}", 2);
    free(out);

    /* Unbalanced deep nesting is an error, not a crash. */
    b.len = strlen("{\"results\":[") + depth;
    assert_int_equal(herd_places_cut(b.p, b.len, 1, &out, &olen, NULL, err, sizeof err), -1);
    free(b.p);

    buf_t s = {0};
    buf_str(&s, "{\"results\":[\"");
    for (size_t i = 0; i < 5 * 1000 * 1000 / 8; i++)
        buf_add(&s, "\\\"[{,\\\\b", 8);
    buf_str(&s, "\\\\\",2],\"status\":\"OK\"}");
    bool st = false;
    assert_int_equal(herd_places_cut(s.p, s.len, 1, &out, &olen, &st, err, sizeof err), 0);
    assert_true(st);
    assert_int_equal(olen, s.len - 2);
    free(out);
    free(s.p);
}

static void test_error_json(void **state)
{
    (void)state;
    char *j = herd_places_error_json("REQUEST_DENIED", "no Places API key is configured");
    assert_string_equal(j, "{\"html_attributions\": [], \"results\": [], \"status\": \"REQUEST_DENIED\", "
                           "\"error_message\": \"no Places API key is configured\"}");
    free(j);

    j = herd_places_error_json("UNKNOWN_ERROR", "Places service answered with HTTP status 503");
    assert_string_equal(j, "{\"html_attributions\": [], \"results\": [], \"status\": \"UNKNOWN_ERROR\", "
                           "\"error_message\": \"Places service answered with HTTP status 503\"}");
    free(j);

    /* Escapes: quote, backslash, control bytes; UTF-8 kept; bad UTF-8 replaced. */
    j = herd_places_error_json("UNKNOWN_ERROR", "a\"b\\c\nd\re\tf\x01g\x1fh caf\xc3\xa9 \xff!");
    assert_string_equal(j, "{\"html_attributions\": [], \"results\": [], \"status\": \"UNKNOWN_ERROR\", "
                           "\"error_message\": \"a\\\"b\\\\c\\nd\\re\\tf\\u0001g\\u001fh caf\xc3\xa9 ?!\"}");
    /* The error object is itself a valid JSON object for the cut. */
    char *out = NULL;
    size_t olen;
    assert_int_equal(herd_places_cut(j, strlen(j), 1, &out, &olen, NULL, NULL, 0), 0);
    assert_string_equal(out, j);
    free(out);
    free(j);

    j = herd_places_error_json("UNKNOWN_ERROR", "");
    assert_string_equal(j, "{\"html_attributions\": [], \"results\": [], \"status\": \"UNKNOWN_ERROR\", "
                           "\"error_message\": \"\"}");
    free(j);
}

static herd_span_t span(const char *s)
{
    herd_span_t v = {s, strlen(s)};
    return v;
}

static void expect_url(const char *base, const char *lat, const char *lng, const char *radius, const char *key,
                       const char *expect)
{
    char *u = herd_places_url(base, span(lat), span(lng), span(radius), key);
    assert_non_null(u);
    assert_string_equal(u, expect);
    free(u);
}

static void test_url(void **state)
{
    (void)state;
    const char *g = "https://maps.googleapis.com/maps/api/place/nearbysearch/json";
    expect_url(g, "+34.068930", "-118.445127", "10", "AIzaSyExampleKey_1-2",
               "https://maps.googleapis.com/maps/api/place/nearbysearch/json"
               "?location=34.068930,-118.445127&radius=10000&key=AIzaSyExampleKey_1-2");
    expect_url("http://127.0.0.1:8080/p", "-33.8670522", "+151.1957362", "1.5", "k",
               "http://127.0.0.1:8080/p?location=-33.8670522,151.1957362&radius=1500&key=k");
    expect_url("http://h/p", "+0", "+0", "0.0001", "k", "http://h/p?location=0,0&radius=0.1&key=k");
    expect_url("http://h/p", "+90", "-180", "50", "k", "http://h/p?location=90,-180&radius=50000&key=k");
    expect_url("http://h/p", "+1", "+2", "007.250", "k", "http://h/p?location=1,2&radius=7250&key=k");
    /* A base that already has a query. */
    expect_url("http://h/p?lang=en", "+1", "+2", "3", "k", "http://h/p?lang=en&location=1,2&radius=3000&key=k");
    expect_url("http://h/p?", "+1", "+2", "3", "k", "http://h/p?location=1,2&radius=3000&key=k");
    expect_url("http://h/p?a=b&", "+1", "+2", "3", "k", "http://h/p?a=b&location=1,2&radius=3000&key=k");
    /* The key is percent-encoded (RFC 3986 unreserved bytes kept). */
    expect_url("http://h/p", "+1", "+2", "3", "a b&c=d/\xc3\xa9+%~._",
               "http://h/p?location=1,2&radius=3000&key=a%20b%26c%3Dd%2F%C3%A9%2B%25~._");
    expect_url("http://h/p", "+1", "+2", "3", "", "http://h/p?location=1,2&radius=3000&key=");
    expect_url("http://h/p", "+1", "+2", "3", NULL, "http://h/p?location=1,2&radius=3000&key=");
    /* Only one leading '+' is dropped; a '-' stays. */
    expect_url("http://h/p", "-0.5", "-0.25", "3", "k", "http://h/p?location=-0.5,-0.25&radius=3000&key=k");

    assert_null(herd_places_url(NULL, span("+1"), span("+2"), span("3"), "k"));
    assert_null(herd_places_url("http://h/p", span("+1"), span("+2"), span("x"), "k"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cut_table),        cmocka_unit_test(test_cut_optional_args),
        cmocka_unit_test(test_cut_fixture),      cmocka_unit_test(test_cut_large_body),
        cmocka_unit_test(test_cut_deep_and_long), cmocka_unit_test(test_error_json),
        cmocka_unit_test(test_url),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
