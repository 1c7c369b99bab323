/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Rate-limited and audit logging for vhsmd (design in vlog.h). One process-wide RateLimitTable
 * keyed by uid, guarded by a mutex; summaries are logged while it is held (lock order: vlog, then
 * log.c's own lock; log.c never calls back here).
 */
#include "vlog.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "core/ratelimit.h"

static pthread_mutex_t vlog_lock = PTHREAD_MUTEX_INITIALIZER;
static RateLimitTable table, audit_table;
static bool table_ready;

static uint64_t mono_ms(void) {
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void vlog_unlock(pthread_mutex_t **m) {
    (void)pthread_mutex_unlock(*m);
}
#define VLOG_LOCKED()                                                                              \
    _cleanup_(vlog_unlock) _unused_ pthread_mutex_t *vlog_guard_ = ({                              \
        (void)pthread_mutex_lock(&vlog_lock);                                                      \
        if (!table_ready) {                                                                        \
            ratelimit_table_init(&table, VLOG_INTERVAL_MS, VLOG_UID_BURST, VLOG_GLOBAL_BURST);     \
            ratelimit_table_init(&audit_table, VLOG_INTERVAL_MS, VLOG_AUDIT_UID_BURST,             \
                                 RATELIMIT_SLOTS *VLOG_AUDIT_UID_BURST);                           \
            table_ready = true;                                                                    \
        }                                                                                          \
        &vlog_lock;                                                                                \
    })

static void report(uint32_t key, bool global, unsigned suppressed, void *userdata) {
    const unsigned secs = VLOG_INTERVAL_MS / 1000;
    if (global)
        log_notice("%u log lines suppressed in the last %u s (budget %u lines per %u s).",
                   suppressed, secs, VLOG_GLOBAL_BURST, secs);
    else if ((uid_t)key == VLOG_KEY_SERVER)
        log_notice("%u similar server log lines suppressed in the last %u s.", suppressed, secs);
    else
        log_notice("%u similar log lines about uid %u suppressed in the last %u s.", suppressed,
                   (unsigned)key, secs);
}

void vlog_audit(const char *file, int line, const char *func, const char *format, ...) {
    char buf[1536];
    va_list ap;

    va_start(ap, format);
    (void)vsnprintf(buf, sizeof buf, format, ap);
    va_end(ap);
    (void)log_internal(LOG_NOTICE, 0, file, line, func, "AUDIT: %s", buf);
}

static void report_audit(uint32_t key, bool global, unsigned suppressed, void *userdata) {
    const unsigned secs = VLOG_INTERVAL_MS / 1000;
    if (global)
        log_notice("AUDIT: %u further actions of non-root uids in the last %u s, not itemised.",
                   suppressed, secs);
    else
        log_notice("AUDIT: %u further actions of uid %u in the last %u s, not itemised (at most "
                   "%u itemised per %u s).",
                   suppressed, (unsigned)key, secs, VLOG_AUDIT_UID_BURST, secs);
}

void vlog_audit_uid(uid_t uid, const char *file, int line, const char *func, const char *format,
                    ...) {
    char buf[1536];
    va_list ap;

    if (uid != 0) {
        VLOG_LOCKED();
        if (!ratelimit_table_check(&audit_table, (uint32_t)uid, mono_ms(), report_audit, NULL))
            return;
    }
    va_start(ap, format);
    (void)vsnprintf(buf, sizeof buf, format, ap);
    va_end(ap);
    (void)log_internal(LOG_NOTICE, 0, file, line, func, "AUDIT: %s", buf);
}

int vlog_limited(int level, int error, uid_t uid, const char *file, int line, const char *func,
                 const char *format, ...) {
    va_list ap;

    if (level > log_get_max_level())
        return error;
    {
        VLOG_LOCKED();
        if (!ratelimit_table_check(&table, (uint32_t)uid, mono_ms(), report, NULL))
            return error;
    }
    va_start(ap, format);
    (void)log_internalv(level, error, file, line, func, format, ap);
    va_end(ap);
    return error;
}

void vlog_tick(void) {
    VLOG_LOCKED();
    ratelimit_table_flush(&table, mono_ms(), report, NULL);
    ratelimit_table_flush(&audit_table, mono_ms(), report_audit, NULL);
}
