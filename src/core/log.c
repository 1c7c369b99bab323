/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Logging implementation: a process-wide level and sink guarded by a mutex so that
 * multi-threaded daemons produce whole lines. %m is expanded from the explicit error argument,
 * never from a stale errno.
 */
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errno-util.h"

static int max_level = -1;
static LogSink sink;
static void *sink_userdata;
static int use_syslog;
static const char *prefix;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static int level_default(void) {
    const char *e = getenv("NT_LOG_LEVEL");
    if (e && streq(e, "debug"))
        return LOG_DEBUG;
    if (e && streq(e, "warning"))
        return LOG_WARNING;
    if (e && streq(e, "error"))
        return LOG_ERR;
    return LOG_INFO;
}

void log_set_max_level(int level) {
    max_level = level;
}

int log_get_max_level(void) {
    if (max_level < 0)
        max_level = level_default();
    return max_level;
}

void log_open_syslog(const char *ident) {
    openlog(ident, LOG_PID | LOG_NDELAY, LOG_DAEMON);
    use_syslog = 1;
}

void log_set_sink(LogSink s, void *userdata) {
    sink = s;
    sink_userdata = userdata;
}

void log_set_prefix(const char *p) {
    prefix = p;
}

/* Copies format into out, replacing %m with the message for error. */
static void expand_m(char *out, size_t n, const char *format, int error) {
    const char *msg = error < 0 ? nt_strerror(error) : strerror(errno);
    size_t o = 0;
    for (const char *f = format; *f && o + 1 < n; f++) {
        if (f[0] == '%' && f[1] == '%') {
            if (o + 2 < n) {
                out[o++] = '%';
                out[o++] = '%';
            }
            f++;
        } else if (f[0] == '%' && f[1] == 'm') {
            for (const char *m = msg; *m && o + 2 < n; m++) {
                if (*m == '%')
                    out[o++] = '%';
                out[o++] = *m;
            }
            f++;
        } else
            out[o++] = *f;
    }
    out[o] = 0;
}

int log_internal(int level, int error, const char *file, int line, const char *func,
                 const char *format, ...) {
    va_list ap;
    int r;

    va_start(ap, format);
    r = log_internalv(level, error, file, line, func, format, ap);
    va_end(ap);
    return r;
}

int log_internalv(int level, int error, const char *file, int line, const char *func,
                  const char *format, va_list ap) {
    char fmt[1024], buf[2048];
    int saved = errno;

    if (level > log_get_max_level())
        return error;

    expand_m(fmt, sizeof fmt, format, error);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    (void)vsnprintf(buf, sizeof buf, fmt, ap);
#pragma GCC diagnostic pop

    pthread_mutex_lock(&log_lock);
    if (sink)
        sink(level, buf, sink_userdata);
    else if (use_syslog)
        syslog(level, "%s", buf);
    else if (level >= LOG_DEBUG)
        fprintf(stderr, "%s%s%s:%d: %s\n", prefix ? prefix : "", prefix ? ": " : "", file, line,
                buf);
    else
        fprintf(stderr, "%s%s%s\n", prefix ? prefix : "", prefix ? ": " : "", buf);
    pthread_mutex_unlock(&log_lock);
    (void)func;
    errno = saved;
    return error;
}

const char *nt_strerror(int e) {
    switch (-e) {
    case EBADMSG:
        return "malformed input";
    case EKEYREJECTED:
        return "rejected (bad signature, MAC or policy)";
    case EKEYEXPIRED:
        return "expired";
    case EKEYREVOKED:
        return "revoked";
    case ENOKEY:
        return "no such key";
    case EOPNOTSUPP:
        return "unsupported algorithm or version";
    case EPROTO:
        return "protocol error";
    default:
        return strerror(-e);
    }
}
