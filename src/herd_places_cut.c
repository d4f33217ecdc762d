/* herd_places_cut: the pure half of the Places worker (PROTOCOL.md sections
 * 4 and 10): the results cut with newline collapsing, the error object and
 * the request URL.
 *
 * The cut has to keep every byte of the upstream body except the ones it
 * removes, so it cannot go through a JSON library (jansson re-serialises and
 * gives no byte offsets). Instead a hand-written scanner validates the whole
 * body and records where the top-level "results" entries end. It keeps its
 * container stack on the heap, so a body of any depth is scanned in linear
 * time without recursion. */
#include "herd_places_cut.h"
#include "herd_proto.h"

#include <curl/curl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------- */
/* UTF-8 */

/* Length of the well-formed UTF-8 sequence at s (at most n bytes), or 0 when
 * it is not one (overlong forms, surrogates and code points past U+10FFFF
 * are rejected, as RFC 3629 says). */
static size_t utf8_seq_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF)
        need = 1;
    else if (c == 0xE0) {
        need = 2;
        lo = 0xA0;
    } else if (c >= 0xE1 && c <= 0xEC)
        need = 2;
    else if (c == 0xED) {
        need = 2;
        hi = 0x9F;
    } else if (c >= 0xEE && c <= 0xEF)
        need = 2;
    else if (c == 0xF0) {
        need = 3;
        lo = 0x90;
    } else if (c >= 0xF1 && c <= 0xF3)
        need = 3;
    else if (c == 0xF4) {
        need = 3;
        hi = 0x8F;
    } else
        return 0;
    if (n < need + 1)
        return 0;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i <= need; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return need + 1;
}

/* ---------------------------------------------------------------------- */
/* The validating scanner */

enum { CT_OBJECT = 'o', CT_ARRAY = 'a' };

/* Which top-level key the value being scanned belongs to. */
enum { KEY_OTHER, KEY_RESULTS, KEY_STATUS };

typedef struct {
    size_t from, to; /* bytes [from, to) of the body are dropped */
} cut_range_t;

typedef struct {
    const unsigned char *s; /* the body */
    size_t len;             /* its length */
    size_t pos;             /* next byte to look at */
    unsigned char *stack;   /* open containers, CT_OBJECT or CT_ARRAY; heap so depth is unbounded */
    size_t depth;           /* number of open containers */
    size_t stack_cap;       /* allocated size of stack */
    uint32_t bound;         /* entries of "results" to keep */
    int key_kind;           /* KEY_* of the last key read in the top-level object */
    size_t results_depth;   /* depth of the open top-level results array, 0 when none is open */
    uint32_t count;         /* entries seen so far in that array */
    size_t cut_from;        /* end of entry number `bound` */
    size_t last_end;        /* end of the latest entry */
    cut_range_t *cuts;      /* one range per top-level results array that is too long */
    size_t ncuts, cuts_cap; /* used and allocated cut ranges */
    bool status_ok;         /* the (last) top-level "status" is the string "OK" */
    char *err;              /* caller's error buffer */
    size_t errlen;          /* its size */
} scan_t;

__attribute__((format(printf, 2, 3))) static int scan_fail(scan_t *sc, const char *fmt, ...)
{
    if (sc->err && sc->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(sc->err, sc->errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* Describes the byte at sc->pos (or the end) in an error message. */
static int scan_unexpected(scan_t *sc, const char *wanted)
{
    if (sc->pos >= sc->len)
        return scan_fail(sc, "unexpected end of the body at byte %zu (expected %s)", sc->pos, wanted);
    unsigned char c = sc->s[sc->pos];
    if (c > 0x20 && c < 0x7f)
        return scan_fail(sc, "unexpected '%c' at byte %zu (expected %s)", c, sc->pos, wanted);
    return scan_fail(sc, "unexpected byte 0x%02x at byte %zu (expected %s)", c, sc->pos, wanted);
}

static void skip_ws(scan_t *sc)
{
    while (sc->pos < sc->len) {
        unsigned char c = sc->s[sc->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        sc->pos++;
    }
}

static int push(scan_t *sc, unsigned char kind)
{
    if (sc->depth == sc->stack_cap) {
        size_t cap = sc->stack_cap ? sc->stack_cap * 2 : 64;
        unsigned char *p = realloc(sc->stack, cap);
        if (!p)
            return scan_fail(sc, "out of memory");
        sc->stack = p;
        sc->stack_cap = cap;
    }
    sc->stack[sc->depth++] = kind;
    return 0;
}

static int add_cut(scan_t *sc, size_t from, size_t to)
{
    if (sc->ncuts == sc->cuts_cap) {
        size_t cap = sc->cuts_cap ? sc->cuts_cap * 2 : 4;
        cut_range_t *p = realloc(sc->cuts, cap * sizeof *p);
        if (!p)
            return scan_fail(sc, "out of memory");
        sc->cuts = p;
        sc->cuts_cap = cap;
    }
    sc->cuts[sc->ncuts].from = from;
    sc->cuts[sc->ncuts].to = to;
    sc->ncuts++;
    return 0;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Scans a string starting at the '"' at sc->pos and leaves sc->pos after the
 * closing quote. When `want` is not NULL, *match tells whether the decoded
 * string equals `want` (an ASCII word): escapes count, so "r\u0065sults" is
 * the key "results" as any JSON reader would see it. */
static int scan_string(scan_t *sc, const char *want, bool *match)
{
    size_t start = sc->pos;
    size_t wlen = want ? strlen(want) : 0;
    size_t got = 0;   /* decoded bytes compared so far */
    bool same = true; /* the decoded prefix still equals want */
    sc->pos++;
    for (;;) {
        if (sc->pos >= sc->len)
            return scan_fail(sc, "unterminated string starting at byte %zu", start);
        unsigned char c = sc->s[sc->pos];
        int decoded; /* the decoded ASCII byte, or -1 for anything else */
        if (c == '"') {
            sc->pos++;
            break;
        }
        if (c < 0x20)
            return scan_fail(sc, "control byte 0x%02x inside a string at byte %zu", c, sc->pos);
        if (c == '\\') {
            if (sc->pos + 1 >= sc->len)
                return scan_fail(sc, "unterminated string starting at byte %zu", start);
            unsigned char e = sc->s[sc->pos + 1];
            switch (e) {
            case '"': case '\\': case '/':
                decoded = e;
                break;
            case 'b': decoded = '\b'; break;
            case 'f': decoded = '\f'; break;
            case 'n': decoded = '\n'; break;
            case 'r': decoded = '\r'; break;
            case 't': decoded = '\t'; break;
            case 'u': {
                unsigned cp = 0;
                for (size_t i = 0; i < 4; i++) {
                    size_t at = sc->pos + 2 + i;
                    int h = at < sc->len ? hexval(sc->s[at]) : -1;
                    if (h < 0)
                        return scan_fail(sc, "invalid \\u escape at byte %zu", sc->pos);
                    cp = cp * 16 + (unsigned)h;
                }
                decoded = cp < 0x80 ? (int)cp : -1;
                sc->pos += 4;
                break;
            }
            default:
                return scan_fail(sc, "invalid escape at byte %zu", sc->pos);
            }
            sc->pos += 2;
        } else if (c >= 0x80) {
            size_t n = utf8_seq_len(sc->s + sc->pos, sc->len - sc->pos);
            if (n == 0)
                return scan_fail(sc, "invalid UTF-8 inside a string at byte %zu", sc->pos);
            sc->pos += n;
            decoded = -1;
        } else {
            decoded = c;
            sc->pos++;
        }
        if (want && same) {
            if (got >= wlen || decoded < 0 || (unsigned char)want[got] != decoded)
                same = false;
            got++;
        }
    }
    if (match)
        *match = want && same && got == wlen;
    return 0;
}

/* Scans an object key, the white space after it and the ':'. */
static int scan_key(scan_t *sc)
{
    if (sc->pos >= sc->len || sc->s[sc->pos] != '"')
        return scan_unexpected(sc, "a string key");
    if (sc->depth == 1) {
        /* Only the top-level object's keys matter; decode just enough to
         * tell the two interesting ones apart. */
        bool is_results = false, is_status = false;
        size_t at = sc->pos;
        if (scan_string(sc, "results", &is_results) < 0)
            return -1;
        if (!is_results) {
            sc->pos = at;
            if (scan_string(sc, "status", &is_status) < 0)
                return -1;
        }
        sc->key_kind = is_results ? KEY_RESULTS : is_status ? KEY_STATUS : KEY_OTHER;
    } else if (scan_string(sc, NULL, NULL) < 0)
        return -1;
    skip_ws(sc);
    if (sc->pos >= sc->len || sc->s[sc->pos] != ':')
        return scan_unexpected(sc, "':'");
    sc->pos++;
    return 0;
}

static int scan_number(scan_t *sc)
{
    const unsigned char *s = sc->s;
    size_t n = sc->len, p = sc->pos;
    if (p < n && s[p] == '-')
        p++;
    if (p < n && s[p] == '0')
        p++;
    else if (p < n && s[p] >= '1' && s[p] <= '9')
        while (p < n && s[p] >= '0' && s[p] <= '9')
            p++;
    else
        return scan_fail(sc, "invalid number at byte %zu", sc->pos);
    if (p < n && s[p] == '.') {
        p++;
        if (p >= n || s[p] < '0' || s[p] > '9')
            return scan_fail(sc, "invalid number at byte %zu", sc->pos);
        while (p < n && s[p] >= '0' && s[p] <= '9')
            p++;
    }
    if (p < n && (s[p] == 'e' || s[p] == 'E')) {
        p++;
        if (p < n && (s[p] == '+' || s[p] == '-'))
            p++;
        if (p >= n || s[p] < '0' || s[p] > '9')
            return scan_fail(sc, "invalid number at byte %zu", sc->pos);
        while (p < n && s[p] >= '0' && s[p] <= '9')
            p++;
    }
    sc->pos = p;
    return 0;
}

static int scan_literal(scan_t *sc, const char *word)
{
    size_t wlen = strlen(word);
    if (sc->len - sc->pos < wlen || memcmp(sc->s + sc->pos, word, wlen) != 0)
        return scan_unexpected(sc, "a JSON value");
    sc->pos += wlen;
    return 0;
}

/* Called when an array closes at sc->pos (the ']'): a too long top-level
 * results array gets its cut. */
static int close_array(scan_t *sc)
{
    if (sc->results_depth && sc->depth == sc->results_depth) {
        if (sc->count > sc->bound && add_cut(sc, sc->cut_from, sc->last_end) < 0)
            return -1;
        sc->results_depth = 0;
    }
    sc->depth--;
    return 0;
}

/* Validates the whole body as one JSON object and records the cuts. */
static int scan_body(scan_t *sc)
{
    skip_ws(sc);
    if (sc->pos >= sc->len)
        return scan_fail(sc, "the body is empty");
    if (sc->s[sc->pos] == '[')
        return scan_fail(sc, "the body is a JSON array, not an object");
    if (sc->s[sc->pos] != '{')
        return scan_unexpected(sc, "'{'");

    bool want_value = true; /* else a value has just ended at sc->pos */
    for (;;) {
        if (want_value) {
            skip_ws(sc);
            if (sc->pos >= sc->len)
                return scan_unexpected(sc, "a JSON value");
            /* In value position at depth 1 we are inside the top-level
             * object, right after a key: its kind says what this value is. */
            int kind = sc->depth == 1 ? sc->key_kind : KEY_OTHER;
            unsigned char c = sc->s[sc->pos];
            if (kind == KEY_STATUS)
                sc->status_ok = false;
            switch (c) {
            case '{':
                if (push(sc, CT_OBJECT) < 0)
                    return -1;
                sc->pos++;
                skip_ws(sc);
                if (sc->pos < sc->len && sc->s[sc->pos] == '}') {
                    sc->pos++;
                    sc->depth--;
                    want_value = false;
                } else if (scan_key(sc) < 0)
                    return -1;
                continue;
            case '[':
                if (push(sc, CT_ARRAY) < 0)
                    return -1;
                sc->pos++;
                if (kind == KEY_RESULTS) {
                    sc->results_depth = sc->depth;
                    sc->count = 0;
                    sc->cut_from = sc->pos; /* only used when bound is 0 */
                    sc->last_end = sc->pos;
                }
                skip_ws(sc);
                if (sc->pos < sc->len && sc->s[sc->pos] == ']') {
                    if (close_array(sc) < 0)
                        return -1;
                    sc->pos++;
                    want_value = false;
                }
                continue;
            case '"': {
                bool ok = false;
                if (scan_string(sc, kind == KEY_STATUS ? "OK" : NULL, &ok) < 0)
                    return -1;
                if (kind == KEY_STATUS)
                    sc->status_ok = ok;
                break;
            }
            case 't':
                if (scan_literal(sc, "true") < 0)
                    return -1;
                break;
            case 'f':
                if (scan_literal(sc, "false") < 0)
                    return -1;
                break;
            case 'n':
                if (scan_literal(sc, "null") < 0)
                    return -1;
                break;
            default:
                if (c == '-' || (c >= '0' && c <= '9')) {
                    if (scan_number(sc) < 0)
                        return -1;
                } else
                    return scan_unexpected(sc, "a JSON value");
            }
            want_value = false;
            continue;
        }

        /* A value ended at sc->pos. */
        if (sc->depth == 0)
            break;
        if (sc->results_depth && sc->depth == sc->results_depth) {
            sc->count++;
            if (sc->count == sc->bound)
                sc->cut_from = sc->pos;
            sc->last_end = sc->pos;
        }
        skip_ws(sc);
        if (sc->pos >= sc->len)
            return scan_unexpected(sc, sc->stack[sc->depth - 1] == CT_ARRAY ? "',' or ']'" : "',' or '}'");
        unsigned char c = sc->s[sc->pos];
        if (c == ',') {
            sc->pos++;
            if (sc->stack[sc->depth - 1] == CT_OBJECT) {
                skip_ws(sc);
                if (scan_key(sc) < 0)
                    return -1;
            }
            want_value = true;
        } else if (sc->stack[sc->depth - 1] == CT_ARRAY && c == ']') {
            if (close_array(sc) < 0)
                return -1;
            sc->pos++;
        } else if (sc->stack[sc->depth - 1] == CT_OBJECT && c == '}') {
            sc->depth--;
            sc->pos++;
        } else
            return scan_unexpected(sc, sc->stack[sc->depth - 1] == CT_ARRAY ? "',' or ']'" : "',' or '}'");
    }
    skip_ws(sc);
    if (sc->pos < sc->len)
        return scan_fail(sc, "bytes after the end of the JSON object at byte %zu", sc->pos);
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Newlines */

/* Length of the line end at b[i] (LF, or CR LF: a CR just before an LF
 * belongs to the line end, as in PROTOCOL.md section 2), or 0. */
static size_t line_end_at(const char *b, size_t n, size_t i)
{
    if (b[i] == '\n')
        return 1;
    if (b[i] == '\r' && i + 1 < n && b[i + 1] == '\n')
        return 2;
    return 0;
}

/* Collapses runs of line ends in place: a run at the start or the end is
 * removed, a run inside becomes its first line end. Returns the new length. */
static size_t collapse_newlines(char *b, size_t n)
{
    size_t r = 0, w = 0, le;
    while (r < n && (le = line_end_at(b, n, r)) != 0)
        r += le;
    while (r < n) {
        le = line_end_at(b, n, r);
        if (le == 0) {
            b[w++] = b[r++];
            continue;
        }
        size_t first = r;
        r += le;
        while (r < n && (le = line_end_at(b, n, r)) != 0)
            r += le;
        if (r == n)
            break;
        /* w <= first, so this forward copy never overwrites a byte before
         * reading it; the length is taken before the copy starts. */
        size_t keep = line_end_at(b, n, first);
        for (size_t i = first; i < first + keep; i++)
            b[w++] = b[i];
    }
    return w;
}

/* ---------------------------------------------------------------------- */
/* Public functions */

int herd_places_cut(const char *body, size_t len, uint32_t bound, char **out, size_t *out_len,
                    bool *status_ok, char *err, size_t errlen)
{
    scan_t sc = {
        .s = (const unsigned char *)body,
        .len = len,
        .bound = bound,
        .err = err,
        .errlen = errlen,
    };
    if (err && errlen)
        err[0] = '\0';
    *out = NULL;
    *out_len = 0;
    if (status_ok)
        *status_ok = false;
    if (len > 0 && !body)
        return scan_fail(&sc, "no body");

    int rc = scan_body(&sc);
    char *buf = NULL;
    if (rc == 0) {
        buf = malloc(len + 1);
        if (!buf)
            rc = scan_fail(&sc, "out of memory");
    }
    if (rc == 0) {
        size_t w = 0, r = 0;
        for (size_t i = 0; i < sc.ncuts; i++) {
            memcpy(buf + w, body + r, sc.cuts[i].from - r);
            w += sc.cuts[i].from - r;
            r = sc.cuts[i].to;
        }
        memcpy(buf + w, body + r, len - r);
        w += len - r;
        w = collapse_newlines(buf, w);
        buf[w] = '\0';
        *out = buf;
        *out_len = w;
        if (status_ok)
            *status_ok = sc.status_ok;
    }
    free(sc.stack);
    free(sc.cuts);
    return rc;
}

/* Appends s to the buffer as the inside of a JSON string: quote, backslash
 * and control bytes escaped, malformed UTF-8 replaced by '?', so the result
 * is always valid JSON. `buf` has room for 6 bytes per input byte. */
static size_t json_escape_into(char *buf, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s), w = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        if (c == '"' || c == '\\') {
            buf[w++] = '\\';
            buf[w++] = (char)c;
        } else if (c == '\n') {
            buf[w++] = '\\';
            buf[w++] = 'n';
        } else if (c == '\r') {
            buf[w++] = '\\';
            buf[w++] = 'r';
        } else if (c == '\t') {
            buf[w++] = '\\';
            buf[w++] = 't';
        } else if (c < 0x20) {
            memcpy(buf + w, "\\u00", 4);
            w += 4;
            buf[w++] = hex[c >> 4];
            buf[w++] = hex[c & 15];
        } else if (c >= 0x80) {
            size_t k = utf8_seq_len(p + i, n - i);
            if (k == 0) {
                buf[w++] = '?';
                i++;
            } else {
                memcpy(buf + w, p + i, k);
                w += k;
                i += k;
            }
            continue;
        } else
            buf[w++] = (char)c;
        i++;
    }
    return w;
}

char *herd_places_error_json(const char *status, const char *message)
{
    static const char a[] = "{\"html_attributions\": [], \"results\": [], \"status\": \"";
    static const char b[] = "\", \"error_message\": \"";
    static const char c[] = "\"}";
    if (!status)
        status = "UNKNOWN_ERROR";
    if (!message)
        message = "";
    size_t cap = sizeof a + sizeof b + sizeof c + 6 * (strlen(status) + strlen(message)) + 1;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    size_t w = 0;
    memcpy(out + w, a, sizeof a - 1);
    w += sizeof a - 1;
    w += json_escape_into(out + w, status);
    memcpy(out + w, b, sizeof b - 1);
    w += sizeof b - 1;
    w += json_escape_into(out + w, message);
    memcpy(out + w, c, sizeof c - 1);
    w += sizeof c - 1;
    out[w] = '\0';
    return out;
}

herd_span_t herd_places_coord(herd_span_t v)
{
    if (v.len > 0 && v.p[0] == '+') {
        v.p++;
        v.len--;
    }
    return v;
}

/* The percent-encoded form of n bytes at p (curl_free), or NULL. libcurl
 * escapes every byte but RFC 3986's unreserved characters, in upper-case
 * hex: the form PROTOCOL §10's URL is compared in, byte for byte. Only
 * the values are escaped: the ',' between lat and lng is written as the
 * protocol writes it. */
static char *url_escape(const char *p, size_t n)
{
    if (n > INT_MAX)
        return NULL;
    return curl_easy_escape(NULL, n ? p : "", (int)n); /* a length of 0 would mean strlen(p) */
}

char *herd_places_url(const char *base, herd_span_t lat, herd_span_t lng, herd_span_t radius_km,
                      const char *key)
{
    if (!base)
        return NULL;
    if (!key)
        key = "";
    size_t mcap = radius_km.len + 16; /* times 1000 adds at most three digits */
    char *metres = malloc(mcap);
    if (!metres)
        return NULL;
    size_t mlen = herd_proto_radius_metres(radius_km, metres, mcap);
    if (mlen == 0) {
        free(metres);
        return NULL;
    }
    lat = herd_places_coord(lat);
    lng = herd_places_coord(lng);
    size_t blen = strlen(base);
    const char *sep = "?";
    if (memchr(base, '?', blen))
        sep = (base[blen - 1] == '?' || base[blen - 1] == '&') ? "" : "&";
    char *la = url_escape(lat.p, lat.len), *lo = url_escape(lng.p, lng.len);
    char *m = url_escape(metres, mlen), *k = url_escape(key, strlen(key));
    char *url = NULL;
    if (la && lo && m && k) {
        size_t cap = blen + strlen(la) + strlen(lo) + strlen(m) + strlen(k) + 32;
        url = malloc(cap);
        if (url)
            snprintf(url, cap, "%s%slocation=%s,%s&radius=%s&key=%s", base, sep, la, lo, m, k);
    }
    curl_free(la);
    curl_free(lo);
    curl_free(m);
    curl_free(k);
    free(metres);
    return url;
}
