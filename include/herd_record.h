/* herd_record: the AT line as the record (PROTOCOL.md sections 3 and 6).
 *
 * An AT line is "AT <origin> <skew> <client id> <position> <client time>",
 * the unit every server stores, floods, journals and compares. This module
 * owns its layout: everyone else reads a line through these pure functions,
 * which work where the bytes lie, without copying or allocating. A line
 * from outside (a client's reply made here, a neighbour's flood or
 * exchange) is read with herd_record_parse, which checks every field; a
 * line this server wrote itself (its journal and snapshot) with
 * herd_record_parse_quick, which only finds the fields. Every server reads
 * the same bytes the same way, so every server computes the same receive
 * time for a record. */
#ifndef HERD_RECORD_H
#define HERD_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "herd_time.h"
#include "herd_types.h"

/* The fields of an AT line, as spans into it, and its client time. */
typedef struct {
    herd_span_t server;   /* the origin server's name */
    herd_span_t skew;     /* its receive time minus the client's time, as sent */
    herd_span_t id;       /* the client id */
    herd_span_t pos;      /* the position text, e.g. "+34.068930-118.445127" */
    herd_span_t time_txt; /* the client's time text as sent */
    herd_time_t time;     /* that time, exactly */
} herd_at_t;

/* Parses and validates an AT line from outside (PROTOCOL.md section 3):
 * exactly six fields joined by single spaces, "AT", a valid server name
 * (herd_record_valid_name), a skew `[+-]D+.DDDDDDDDD` no longer than
 * herd_time_format_diff writes, a client id of 1..HERD_MAX_CLIENT_ID bytes,
 * a position herd_proto_parse_position takes and a time herd_time_parse
 * takes. Returns 0 and fills *at, or -1 and leaves *at alone. */
int herd_record_parse(const char *line, size_t len, herd_at_t *at);

/* Finds the fields of an AT line this server wrote itself (its journal, its
 * snapshot), or one about to be parsed strictly: six fields joined by single
 * spaces, "AT" first, a non-empty id and position and a time herd_time_parse
 * takes. The name and skew are not checked. Returns 0 and fills *at, or -1
 * and leaves *at alone. */
int herd_record_parse_quick(const char *line, size_t len, herd_at_t *at);

/* Whether the fields herd_record_parse_quick found pass the rest of
 * herd_record_parse's checks (the name, the skew, the id's length and
 * bytes, the position): parse_quick then check is parse, for a caller that
 * wants the cheap part first. */
bool herd_record_check(const herd_at_t *at);

/* True when [p, p+len) is a server name (PROTOCOL.md section 9): 1 to
 * HERD_MAX_NAME bytes, each herd_record_name_byte. */
bool herd_record_valid_name(const char *p, size_t len);

/* True for the bytes a server name may hold: letters, digits, '_', '-'. */
bool herd_record_name_byte(unsigned char c);

/* The fingerprint of an AT line (herd_record_t.digest in the table): a
 * 64-bit hash of its bytes with a fixed seed, so every server computes the
 * same one, and never 0, which means "empty" in a digest exchange. */
uint64_t herd_record_fingerprint(const char *at, size_t at_len);

/* The origin server's name: the bytes from offset 3 to the next space (the
 * whole rest of the line when there is none; empty when the line is shorter
 * than "AT "). Points into `at`. */
herd_span_t herd_record_origin(const char *at, size_t at_len);

/* The skew: the field after the origin, up to the next space or the end
 * (empty when the line has no such field). Points into `at`. */
herd_span_t herd_record_skew(const char *at, size_t at_len);

/* The client id: the field after the skew, up to the next space or the end
 * (empty when the line has no such field). Points into `at`. For a
 * look-ahead before the line is parsed; herd_record_parse finds it too. */
herd_span_t herd_record_id(const char *at, size_t at_len);

/* The origin's receive time: `client_time` plus the AT line's skew, exact to
 * the nanosecond, for a skew `[+-]D+[.D+]` (fraction digits past the ninth
 * ignored, whole seconds past HERD_TIME_MAX_SEC taken as HERD_TIME_MAX_SEC).
 * A line whose skew is not of that form, or a client time outside the
 * range herd_time_parse gives, is taken as received at the client's time
 * (it is returned unchanged). Otherwise the result's seconds may be
 * negative or exceed HERD_TIME_MAX_SEC, by at most HERD_TIME_MAX_SEC + 1
 * either way, so they never overflow an int64_t; its
 * nanoseconds are always a valid herd_time_t's, so herd_time_cmp orders
 * receive times exactly. */
herd_time_t herd_record_receive_time(const char *at, size_t at_len, herd_time_t client_time);

/* The same from the skew field as found already (herd_at_t.skew). */
herd_time_t herd_record_receive_time_of(herd_span_t skew, herd_time_t client_time);

#endif
