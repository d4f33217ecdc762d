/* herd_log: the per-server event log, NAME.log.
 *
 * One event per line, prefixed with a UTC timestamp with microseconds.
 * Output is buffered and written in large chunks; callers flush once per
 * reactor turn and at exit. Client bytes are written escaped, so any byte
 * value (NUL, CR, invalid UTF-8) is safe in the log. */
#ifndef HERD_LOG_H
#define HERD_LOG_H

#include <stddef.h>

typedef struct herd_log_t herd_log_t;

/* Opens (appends to) `path`, making its folder if missing. Returns NULL and
 * fills err on failure. */
herd_log_t *herd_log_open(const char *path, char *err, size_t errlen);

/* Flushes and closes; sets *p to NULL. NULL-safe. */
void herd_log_close(herd_log_t **p);

/* Logs one event: timestamp, a space, the formatted text, a newline. */
void herd_log_event(herd_log_t *log, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Logs `prefix` followed by the bytes `data` quoted and escaped
 * ("..." with \\, \", \t, \r, \n and \xNN for other non-printable bytes). */
void herd_log_data(herd_log_t *log, const char *prefix, const char *data, size_t len);

/* Writes out everything buffered. Returns 0 or -1 (the error is reported
 * on stderr once). */
int herd_log_flush(herd_log_t *log);

/* Reopens the file by name (after logrotate moved it). Returns 0 or -1. */
int herd_log_reopen(herd_log_t *log);

/* Appends `data` escaped as in herd_log_data to buf (no quotes); returns the
 * number of bytes written, at most cap. Exposed for tests. */
size_t herd_log_escape(char *buf, size_t cap, const char *data, size_t len);

#endif
