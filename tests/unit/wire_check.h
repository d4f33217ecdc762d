/* wire_check.h: what test_wire.c and test_wire_repair.c both need to hand
 * the decoder exact-size buffers and check its refusals. Include after
 * <cmocka.h> and "herd_wire.h". */
#ifndef HERD_WIRE_CHECK_H
#define HERD_WIRE_CHECK_H

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* A copy of data in a buffer of exactly len bytes (len 0 gives a 1-byte
 * allocation so the pointer is valid but nothing may be read): ASan sees
 * any read past the end. */
static char *dup_exact(const void *data, size_t len)
{
    char *p = malloc(len ? len : 1);
    assert_non_null(p);
    if (len)
        memcpy(p, data, len);
    return p;
}

/* Whether a decoded message is all empty (what a refusal must leave). */
static bool msg_is_zero(const herd_msg_t *m)
{
    return m->type == 0 && m->name.p == NULL && m->name.len == 0 && m->incarnation == 0 &&
           m->count == 0 && m->digest == 0 && m->updates == NULL && m->n_updates == 0 && !m->last &&
           m->groups == NULL && m->buckets == NULL && m->counts == NULL && m->digests == NULL &&
           m->fps == NULL && m->n_items == 0 && m->n_fps == 0;
}

/* Decodes data (copied into an exact-size buffer) and checks that it is
 * rejected with a one-line reason containing `want`, leaving an empty
 * message. */
static void expect_reject(const void *data, size_t len, const char *want)
{
    char *buf = dup_exact(data, len);
    herd_msg_t m;
    char err[256];
    memset(&m, 0xA5, sizeof m); /* the decoder must not rely on a zeroed message */
    int rc = herd_wire_decode(buf, len, &m, err, sizeof err);
    if (rc == 0 || strstr(err, want) == NULL)
        fail_msg("len %zu: rc %d, err \"%s\", wanted \"%s\"", len, rc, rc ? err : "", want);
    assert_true(err[0] != '\0');
    assert_null(strchr(err, '\n'));
    assert_true(msg_is_zero(&m));
    herd_wire_msg_free(&m);
    free(buf);
}

#endif
