/* herd_time: exact client times and the signed nine-digit skew.
 *
 * A client time is kept as whole seconds plus nanoseconds, parsed from the
 * decimal text the client sent. No binary floating point is involved anywhere:
 * a double cannot tell 1621464827.959498503 from 1621464827.959498504. */
#ifndef HERD_TIME_H
#define HERD_TIME_H

#include <stddef.h>
#include <stdint.h>

/* Largest whole-seconds value accepted (18 nines): big enough for any real
 * clock, small enough that every difference still fits in an int64_t. */
#define HERD_TIME_MAX_SEC 999999999999999999LL

/* Room for the longest skew text, "-999999999999999999.999999999", plus NUL. */
#define HERD_TIME_DIFF_MAX 32

typedef struct {
    int64_t sec;  /* whole seconds since the epoch, 0..HERD_TIME_MAX_SEC */
    int32_t nsec; /* nanoseconds, 0..999999999 */
} herd_time_t;

/* Parses the POSIX time text `D+[.D+]` (no sign, no exponent, any number of
 * fraction digits; digits past the ninth are ignored, never rounded).
 * Leading zeros are allowed. Returns 0 and fills *out, or -1 when the text is
 * not of that form or the whole seconds exceed HERD_TIME_MAX_SEC. */
int herd_time_parse(const char *text, size_t len, herd_time_t *out);

/* Compares two times exactly: <0, 0 or >0 as a is older, equal or newer. */
int herd_time_cmp(herd_time_t a, herd_time_t b);

/* The current wall-clock time (CLOCK_REALTIME) at nanosecond resolution. */
herd_time_t herd_time_now(void);

/* Writes `now - then` as an explicit sign ('+' for zero and positive, '-' for
 * negative), the whole seconds, '.', and exactly nine fraction digits, then a
 * NUL. Returns the length written (without the NUL). `cap` must be at least
 * HERD_TIME_DIFF_MAX. */
size_t herd_time_format_diff(herd_time_t now, herd_time_t then, char *buf, size_t cap);

#endif
