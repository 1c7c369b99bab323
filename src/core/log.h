/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Logging. Libraries (core, snp, verify) log only at debug level through this API; programs set
 * the level and decide where lines go (stderr by default, syslog for daemons). Never pass a
 * secret, PIN, token, private JWK or raw request body to these functions.
 */
#pragma once

#include <stdarg.h>
#include <syslog.h>

#include "macro.h"

typedef void (*LogSink)(int level, const char *msg, void *userdata);

/* Sets the maximum level that is emitted (LOG_ERR .. LOG_DEBUG). Default LOG_INFO, or
 * LOG_DEBUG when $NT_LOG_LEVEL=debug. */
void log_set_max_level(int level);
int log_get_max_level(void);
/* Routes log lines to syslog (daemons) instead of stderr. */
void log_open_syslog(const char *ident);
/* Replaces the sink (tests, embedding). NULL restores stderr. */
void log_set_sink(LogSink sink, void *userdata);
/* Sets a program name prefix for stderr lines. */
void log_set_prefix(const char *prefix);

/* Emits a line; if error is a negative errno, %m in format expands to its message.
 * Always returns error, so that "return log_error_errno(r, ...)" works. */
int log_internal(int level, int error, const char *file, int line, const char *func,
                 const char *format, ...) _printf_(6, 7);
/* The same with a va_list (for wrappers such as rate-limited or audit logging). */
int log_internalv(int level, int error, const char *file, int line, const char *func,
                  const char *format, va_list ap) _printf_(6, 0);

#define log_full_errno(level, error, ...)                                                          \
    log_internal((level), (error), __FILE__, __LINE__, __func__, __VA_ARGS__)
#define log_debug(...) log_full_errno(LOG_DEBUG, 0, __VA_ARGS__)
#define log_info(...) log_full_errno(LOG_INFO, 0, __VA_ARGS__)
#define log_notice(...) log_full_errno(LOG_NOTICE, 0, __VA_ARGS__)
#define log_warning(...) log_full_errno(LOG_WARNING, 0, __VA_ARGS__)
#define log_error(...) log_full_errno(LOG_ERR, 0, __VA_ARGS__)
#define log_debug_errno(e, ...) log_full_errno(LOG_DEBUG, (e), __VA_ARGS__)
#define log_info_errno(e, ...) log_full_errno(LOG_INFO, (e), __VA_ARGS__)
#define log_warning_errno(e, ...) log_full_errno(LOG_WARNING, (e), __VA_ARGS__)
#define log_error_errno(e, ...) log_full_errno(LOG_ERR, (e), __VA_ARGS__)
#define log_oom() log_error_errno(-ENOMEM, "Out of memory.")
