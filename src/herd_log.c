/* herd_log: buffered, timestamped event log. See herd_log.h. */
#include "herd_log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define LOG_BUF_CAP   (256u * 1024u) /* flush early once this much is pending */
#define LOG_STAMP_LEN 27             /* "2026-11-26T05:31:50.123456Z" */

struct herd_log_t {
    char *path;         /* the file name, kept for reopen */
    int fd;             /* append-only descriptor */
    char *buf;          /* pending bytes */
    size_t cap;         /* bytes allocated for buf */
    size_t len;         /* bytes pending in buf */
    time_t stamp_sec;   /* second the cached stamp prefix is for */
    char stamp[LOG_STAMP_LEN + 1]; /* cached "YYYY-MM-DDTHH:MM:SS" prefix, rest filled per event */
    bool write_failed;  /* a write error was already reported on stderr */
};

/* Makes every missing folder on the way to `dir` (like mkdir -p). */
static int make_dirs(const char *dir)
{
    char *copy = strdup(dir);
    if (!copy)
        return -1;
    for (char *p = copy + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(copy, 0755) != 0 && errno != EEXIST) {
            free(copy);
            return -1;
        }
        *p = '/';
    }
    int rc = (mkdir(copy, 0755) != 0 && errno != EEXIST) ? -1 : 0;
    free(copy);
    return rc;
}

static int open_file(const char *path)
{
    return open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

herd_log_t *herd_log_open(const char *path, char *err, size_t errlen)
{
    char *dir = strdup(path);
    if (!dir) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        if (make_dirs(dir) != 0) {
            snprintf(err, errlen, "cannot make log folder %s: %s", dir, strerror(errno));
            free(dir);
            return NULL;
        }
    }
    free(dir);

    herd_log_t *log = calloc(1, sizeof *log);
    if (!log || !(log->path = strdup(path)) || !(log->buf = malloc(LOG_BUF_CAP))) {
        snprintf(err, errlen, "out of memory");
        if (log) {
            free(log->path);
            free(log);
        }
        return NULL;
    }
    log->fd = open_file(path);
    if (log->fd < 0) {
        snprintf(err, errlen, "cannot open log file %s: %s", path, strerror(errno));
        free(log->buf);
        free(log->path);
        free(log);
        return NULL;
    }
    log->cap = LOG_BUF_CAP;
    log->stamp_sec = (time_t)-1;
    return log;
}

void herd_log_close(herd_log_t **p)
{
    if (!p || !*p)
        return;
    herd_log_t *log = *p;
    herd_log_flush(log);
    close(log->fd);
    free(log->buf);
    free(log->path);
    free(log);
    *p = NULL;
}

int herd_log_flush(herd_log_t *log)
{
    size_t off = 0;
    while (off < log->len) {
        ssize_t n = write(log->fd, log->buf + off, log->len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (!log->write_failed)
                fprintf(stderr, "herd: cannot write log %s: %s\n", log->path, strerror(errno));
            log->write_failed = true;
            log->len = 0; /* drop rather than grow without bound */
            return -1;
        }
        off += (size_t)n;
    }
    log->len = 0;
    return 0;
}

int herd_log_reopen(herd_log_t *log)
{
    herd_log_flush(log);
    int fd = open_file(log->path);
    if (fd < 0)
        return -1;
    close(log->fd);
    log->fd = fd;
    log->write_failed = false;
    return 0;
}

/* Makes room for `need` more bytes, flushing first when the buffer is full.
 * A single event larger than the buffer (a multi-megabyte Places reply)
 * grows it; it shrinks back once written. */
static char *reserve(herd_log_t *log, size_t need)
{
    if (log->len + need > log->cap)
        herd_log_flush(log);
    if (need > log->cap) {
        char *grown = realloc(log->buf, need);
        if (!grown)
            return NULL;
        log->buf = grown;
        log->cap = need;
    } else if (log->len == 0 && log->cap > LOG_BUF_CAP && need <= LOG_BUF_CAP) {
        char *shrunk = realloc(log->buf, LOG_BUF_CAP);
        if (shrunk) {
            log->buf = shrunk;
            log->cap = LOG_BUF_CAP;
        }
    }
    return log->buf + log->len;
}

/* Appends "YYYY-MM-DDTHH:MM:SS.uuuuuuZ " to the buffer (28 bytes). The date
 * part is formatted once per second; only the microseconds are per event. */
static void put_stamp(herd_log_t *log)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec != log->stamp_sec) {
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        strftime(log->stamp, sizeof log->stamp, "%Y-%m-%dT%H:%M:%S", &tm);
        log->stamp_sec = ts.tv_sec;
    }
    char *p = log->buf + log->len;
    memcpy(p, log->stamp, 19);
    long us = ts.tv_nsec / 1000;
    p[19] = '.';
    for (int i = 25; i >= 20; i--) {
        p[i] = (char)('0' + us % 10);
        us /= 10;
    }
    p[26] = 'Z';
    p[27] = ' ';
    log->len += 28;
}

void herd_log_event(herd_log_t *log, const char *fmt, ...)
{
    if (!reserve(log, 28 + 1024))
        return;
    put_stamp(log);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(log->buf + log->len, 1023, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if (n > 1022)
        n = 1022; /* an over-long event is cut, never overflows */
    log->len += (size_t)n;
    log->buf[log->len++] = '\n';
}

/* For each byte: 0 when it is written as is, else the letter of its
 * two-character escape, or 'x' for \xNN. */
static const char escape_kind[256] = {
    [0 ... 8] = 'x', ['\t'] = 't', ['\n'] = 'n', [11 ... 12] = 'x', ['\r'] = 'r', [14 ... 31] = 'x',
    ['"'] = '"', ['\\'] = '\\', [127 ... 255] = 'x',
};

size_t herd_log_escape(char *buf, size_t cap, const char *data, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0, i = 0;
    while (i < len) {
        /* Copy the run of plain bytes in one go: most log data is plain. */
        size_t run = i;
        while (run < len && !escape_kind[(unsigned char)data[run]])
            run++;
        size_t n = run - i;
        if (n > cap - o)
            n = cap - o;
        memcpy(buf + o, data + i, n);
        o += n;
        i += n;
        if (i < run || i == len)
            break; /* out of room, or done */
        unsigned char c = (unsigned char)data[i];
        char e = escape_kind[c];
        if (e != 'x') {
            if (o + 2 > cap)
                break;
            buf[o++] = '\\';
            buf[o++] = e;
        } else {
            if (o + 4 > cap)
                break;
            buf[o++] = '\\';
            buf[o++] = 'x';
            buf[o++] = hex[c >> 4];
            buf[o++] = hex[c & 15];
        }
        i++;
    }
    return o;
}

void herd_log_data(herd_log_t *log, const char *prefix, const char *data, size_t len)
{
    size_t plen = strlen(prefix);
    size_t need = 28 + plen + 3 + 4 * len + 1;
    if (!reserve(log, need))
        return;
    put_stamp(log);
    memcpy(log->buf + log->len, prefix, plen);
    log->len += plen;
    log->buf[log->len++] = '"';
    log->len += herd_log_escape(log->buf + log->len, 4 * len, data, len);
    log->buf[log->len++] = '"';
    log->buf[log->len++] = '\n';
}
