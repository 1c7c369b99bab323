/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vhsmd's logging policy on top of core/log.h (issue 8, finding 6): lines a client can provoke at
 * will (denied requests, connection limits, refused frames) are rate-limited per peer uid and
 * globally, so that one uid cannot flood the journal and make journald's own rate limit drop
 * other lines, audit lines among them. Audit lines (key created, deleted, ACL replaced, ...) go
 * through log_audit: prefixed "AUDIT: " and never rate-limited (their number is bounded by the
 * vault's quotas, not by how fast a client sends requests).
 *
 * Limits: per uid VLOG_UID_BURST lines per VLOG_INTERVAL_MS, all uids together VLOG_GLOBAL_BURST;
 * what is refused is reported as one summary line with its count per interval (per uid while the
 * global budget allows, else in the global summary). vlog_tick() (called every second by the
 * server) emits summaries whose interval is over. Thread-safe.
 */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

#include "core/log.h"

#define VLOG_INTERVAL_MS 10000
#define VLOG_UID_BURST 5
#define VLOG_GLOBAL_BURST 60
#define VLOG_KEY_SERVER ((uid_t)-1) /* lines about the server itself (e.g. accept failures) */

/* An audit line: level notice, "AUDIT: " prefix, never rate-limited. No %m. */
void vlog_audit(const char *file, int line, const char *func, const char *format, ...)
    _printf_(4, 5);
#define log_audit(...) vlog_audit(__FILE__, __LINE__, __func__, __VA_ARGS__)

/* An audit line about an action of uid. Root's (the agent's) are never limited. A non-root
 * uid's are itemised up to VLOG_AUDIT_UID_BURST per VLOG_INTERVAL_MS, on a budget of their own
 * (the lines above never take from it, nor it from them); beyond that they are counted, and one
 * "AUDIT:" summary line per interval gives the exact number, so that one uid's key churn cannot
 * push the journal over its rate limit while every action stays accounted for. */
#define VLOG_AUDIT_UID_BURST 60
void vlog_audit_uid(uid_t uid, const char *file, int line, const char *func, const char *format,
                    ...) _printf_(5, 6);
#define log_audit_uid(uid, ...) vlog_audit_uid((uid), __FILE__, __LINE__, __func__, __VA_ARGS__)

/* A line about peer uid (or VLOG_KEY_SERVER), emitted if the rate limits allow. Returns error, as
 * log_internal does. Lines above the log level take nothing from the limits. */
int vlog_limited(int level, int error, uid_t uid, const char *file, int line, const char *func,
                 const char *format, ...) _printf_(7, 8);
#define log_uid_full_errno(level, error, uid, ...)                                                 \
    vlog_limited((level), (error), (uid), __FILE__, __LINE__, __func__, __VA_ARGS__)
#define log_uid_notice(uid, ...) log_uid_full_errno(LOG_NOTICE, 0, (uid), __VA_ARGS__)
#define log_uid_warning(uid, ...) log_uid_full_errno(LOG_WARNING, 0, (uid), __VA_ARGS__)
#define log_uid_warning_errno(uid, e, ...) log_uid_full_errno(LOG_WARNING, (e), (uid), __VA_ARGS__)

/* Emits the summaries of intervals that are over. Call about once a second. */
void vlog_tick(void);
