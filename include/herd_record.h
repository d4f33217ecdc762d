/* herd_record: the AT line as the record (PROTOCOL.md sections 3 and 6).
 *
 * An AT line is "AT <origin> <skew> <client id> <position> <client time>".
 * These pure functions read its fields where they lie, without copying or
 * allocating: the origin server's name and the skew as spans, and the
 * origin's receive time (the client's time plus the skew, exactly, in
 * seconds and nanoseconds). Every server reads the same bytes the same way,
 * so every server computes the same receive time for a record. */
#ifndef HERD_RECORD_H
#define HERD_RECORD_H

#include <stddef.h>

#include "herd_types.h"
#include "herd_time.h"

/* The origin server's name: the bytes from offset 3 to the next space (the
 * whole rest of the line when there is none; empty when the line is shorter
 * than "AT "). Points into `at`. */
herd_span_t herd_record_origin(const char *at, size_t at_len);

/* The skew: the field after the origin, up to the next space or the end
 * (empty when the line has no such field). Points into `at`. */
herd_span_t herd_record_skew(const char *at, size_t at_len);

/* The origin's receive time: `client_time` plus the AT line's skew, exact to
 * the nanosecond, for a skew `[+-]D+[.D+]` (fraction digits past the ninth
 * ignored, whole seconds past HERD_TIME_MAX_SEC taken as HERD_TIME_MAX_SEC).
 * A line whose skew is not of that form, or a client time outside the
 * range herd_time_parse gives, is taken as received at the client's time
 * (it is returned unchanged). Otherwise the result's seconds may be
 * negative or exceed HERD_TIME_MAX_SEC (never by more than it); its
 * nanoseconds are always a valid herd_time_t's, so herd_time_cmp orders
 * receive times exactly. */
herd_time_t herd_record_receive_time(const char *at, size_t at_len, herd_time_t client_time);

#endif
