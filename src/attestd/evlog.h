/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The evidence log: optionally every attestation's evidence (report, certificates supplied,
 * runtime data) and verdict, in SQLite (WAL, bounded to max_records: the oldest go first), so
 * that `nitride-attestd replay` can re-judge recorded evidence against a candidate policy before
 * it is rolled out. Several attestd processes may share one file.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/macro.h"

typedef struct AttestdEvlog AttestdEvlog;

typedef struct EvlogRecord {
    int64_t id; /* set by the log */
    int64_t at; /* unix seconds of the verification */
    const char *client;
    const char *policy_id;
    const uint8_t *report;
    size_t report_len;
    const char *certs_json; /* [{"role","der"(base64url)}] of the certificates supplied, or "[]" */
    const char *runtime_data; /* JSON text */
    const char *verdict;      /* "ok", "invalid", "policy" */
    const char *check;        /* first failed check, or "" */
    const char *detail;       /* its detail, or the token status when ok */
} EvlogRecord;

int evlog_open(const char *path, int64_t max_records, bool read_only, AttestdEvlog **ret,
               char **ret_error);
AttestdEvlog *evlog_close(AttestdEvlog *l);
DEFINE_TRIVIAL_CLEANUP_FUNC(AttestdEvlog *, evlog_close);
/* Appends (thread-safe). Returns 0 or -EIO (logged by the caller; attestation goes on). */
int evlog_append(AttestdEvlog *l, const EvlogRecord *r);
/* Calls cb for every record with at >= since, oldest first; stops at a negative return. */
int evlog_foreach(AttestdEvlog *l, int64_t since, int (*cb)(void *ud, const EvlogRecord *r),
                  void *ud);
int64_t evlog_count(AttestdEvlog *l);
