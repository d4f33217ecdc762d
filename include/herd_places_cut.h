/* herd_places_cut: the pure half of the Places worker (PROTOCOL.md sections
 * 4 and 10): cutting a body, the error object, the request URL. No state and
 * no thread, so it stands below herd_places, which includes it; also used by
 * tests and fuzzers. */
#ifndef HERD_PLACES_CUT_H
#define HERD_PLACES_CUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "herd_types.h"

/* Cuts a Places body as PROTOCOL.md section 4 says: keeps at most `bound`
 * entries of the top-level "results" array (removing the bytes from the end of
 * entry `bound` to the end of the last entry), then turns every run of two or
 * more line ends (LF, or CR LF) into the first one and drops leading and
 * trailing ones. Every other byte is
 * kept. Returns 0 and a malloc'd *out (NUL-terminated), or -1 when the body
 * is not one valid JSON object (with a reason in err). When status_ok is not
 * NULL it is set to whether the top-level "status" is the string "OK". */
int herd_places_cut(const char *body, size_t len, uint32_t bound, char **out, size_t *out_len,
                    bool *status_ok, char *err, size_t errlen);

/* Formats the error object of PROTOCOL.md section 4 with the given status
 * ("REQUEST_DENIED", "UNKNOWN_ERROR") and message (JSON-escaped here).
 * Returns a malloc'd NUL-terminated string, or NULL when out of memory. */
char *herd_places_error_json(const char *status, const char *message);

/* A coordinate as the Places request and its cache key write it: its
 * decimal text without a leading '+' (PROTOCOL §10). */
herd_span_t herd_places_coord(herd_span_t v);

/* Builds the request URL of PROTOCOL.md section 10 (lat/lng without a leading
 * '+', radius in metres, the key URL-escaped). Returns a malloc'd string. */
char *herd_places_url(const char *base, herd_span_t lat, herd_span_t lng, herd_span_t radius_km,
                      const char *key);

#endif
