/* herd_proto: the client text protocol (PROTOCOL.md sections 2 to 5) as pure
 * functions. Nothing here allocates, does I/O or knows about the table: the
 * front end frames lines, this module splits and validates them, and formats
 * the replies. */
#ifndef HERD_PROTO_H
#define HERD_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "herd_time.h"
#include "herd_types.h"

#define HERD_MAX_LINE      4096 /* bytes of a command before its line end */
#define HERD_MAX_CLIENT_ID 255  /* bytes of a client id */
#define HERD_MAX_NAME      64   /* bytes of a server name */
#define HERD_MAX_BOUND     20   /* WHATSAT: most places asked for */
#define HERD_MAX_RADIUS_KM 50   /* WHATSAT: widest radius */


typedef enum {
    HERD_CMD_EMPTY,   /* only white space: ignored, no reply */
    HERD_CMD_INVALID, /* answered with "? <line>" */
    HERD_CMD_IAMAT,
    HERD_CMD_WHATSAT,
} herd_cmd_kind_t;

/* One parsed command. Spans point into the line given to herd_proto_parse. */
typedef struct {
    herd_cmd_kind_t kind;
    herd_span_t id;       /* IAMAT, WHATSAT: the client id */
    herd_span_t pos;      /* IAMAT: the whole position text, e.g. "+34.068930-118.445127" */
    herd_span_t time_txt; /* IAMAT: the time text as sent */
    herd_time_t time;     /* IAMAT: the time, exactly */
    herd_span_t radius;   /* WHATSAT: the radius text in kilometres as sent */
    uint32_t bound;       /* WHATSAT: 1..20 */
} herd_cmd_t;

/* True for the protocol's white space: space, tab, CR, LF, FF, VT. */
bool herd_proto_is_space(unsigned char c);

/* Splits `line` (the bytes of one command without its LF or CR LF) into at
 * most `max` white-space separated fields. Returns the number of fields found;
 * when there are more than `max` it returns max + 1 (only `max` are stored). */
size_t herd_proto_split(const char *line, size_t len, herd_span_t *fields, size_t max);

/* Parses and fully validates one command line (without its line end).
 * Any line that is not a valid IAMAT or WHATSAT, and is not empty, comes back
 * as HERD_CMD_INVALID. Whether the WHATSAT client is known is for the caller. */
void herd_proto_parse(const char *line, size_t len, herd_cmd_t *cmd);

/* Splits an ISO 6709 position `[+-]D+[.D+][+-]D+[.D+]` into latitude and
 * longitude (each with its sign) and checks the ranges [-90,90] and
 * [-180,180] exactly, for any number of digits. Returns 0 or -1. */
int herd_proto_parse_position(herd_span_t pos, herd_span_t *lat, herd_span_t *lng);

/* Writes "AT <server> <skew> <id> <pos> <time>" (no newline) into buf, where
 * skew is herd_time_format_diff(now, cmd->time) and the last three fields
 * are the client's bytes. Returns the length, or 0 when cap is too small.
 * HERD_AT_MAX bytes are always enough. */
#define HERD_AT_MAX (3 + HERD_MAX_NAME + 1 + HERD_TIME_DIFF_MAX + HERD_MAX_LINE + 8)
size_t herd_proto_format_at(char *buf, size_t cap, const char *server, size_t server_len,
                            herd_time_t now, const herd_cmd_t *cmd);


/* True when the line is empty or only white space (herd_proto_is_space):
 * such a line is ignored, with no reply (PROTOCOL.md section 2). */
bool herd_proto_is_blank(const char *line, size_t len);

/* Converts a validated radius in kilometres (`D+[.D+]`) into metres as
 * decimal text: times 1000, no leading zeros, and no fraction when whole
 * ("10" -> "10000", "1.5" -> "1500", "0.0001" -> "0.1"). Writes a NUL.
 * Returns the length or 0 when cap is too small. */
size_t herd_proto_radius_metres(herd_span_t radius_km, char *buf, size_t cap);

#endif
