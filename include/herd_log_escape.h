/* herd_log_escape: how client and peer bytes are written in the log
 * (quoted, any byte value safe). Pure: no state, no log handle, so it stands
 * below herd_log, which uses it for every escaped field. */
#ifndef HERD_LOG_ESCAPE_H
#define HERD_LOG_ESCAPE_H

#include <stddef.h>

/* Appends `data` escaped as in herd_log_data to buf (no quotes); returns the
 * number of bytes written, at most cap. Exposed for tests. */
size_t herd_log_escape(char *buf, size_t cap, const char *data, size_t len);

/* herd_log_escape that stops whole at cap (never half an escape) and sets
 * *used to the bytes of data it wrote out. */
size_t herd_log_escape_prefix(char *buf, size_t cap, const char *data, size_t len, size_t *used);

#endif
