/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kmsd's audit chain: every release attempt and admin action is one row, and each row carries
 * hash = SHA-256(prev_hash_bytes || JCS(row without "hash")) (RFC 8785, core/jcs.h), where
 * prev_hash is the previous row's hash (32 zero bytes for seq 1). Editing, deleting or
 * reordering a row breaks the chain at that row; deleting the newest rows is detected against a
 * head published elsewhere (kmsd signs it: GET /v1/audit/head).
 *
 * A row as JSON has exactly these members (strings may be null when the event has none; version
 * is null when 0):
 *   {"seq":int>=1, "time":int, "action":str, "actor":str, "secret_id":str|null,
 *    "version":int|null, "token_jti":str|null, "measurement":str|null, "chip_id":str|null,
 *    "result":str, "rule":str|null, "detail":str|null, "prev_hash":hex64, "hash":hex64}
 * Text from events is stored sanitised (kms_audit_text_sanitize()): bounded length, invalid UTF-8
 * and control characters replaced by '?', so that a row is always hashable and printable.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* One audit row as the store receives it (borrowed strings; NULL = none). */
typedef struct KmsAuditEvent {
    const char *action; /* "release", "create", "replace", "delete", "policy-set", "policy-test",
                           "admin-denied" ([a-z][a-z0-9-]{0,31}) */
    const char *actor;  /* "token:<jti>" or "admin:<cert subject|bearer>" (non-empty) */
    const char *secret_id;
    uint32_t version;                              /* 0 = none */
    const char *token_jti, *measurement, *chip_id; /* release attempts */
    const char *result;                            /* "ok", "refused", "error" */
    const char *rule;                              /* failed rule, or NULL */
    const char *detail;                            /* short text, never a secret */
} KmsAuditEvent;

/* Hash of the (virtual) row before seq 1. */
#define KMS_AUDIT_GENESIS_HEX "0000000000000000000000000000000000000000000000000000000000000000"
/* Longest stored text of detail, and of every other text member (bytes, after sanitising). */
#define KMS_AUDIT_DETAIL_MAX 1024u
#define KMS_AUDIT_FIELD_MAX 256u

/* Checks an event's shape: action matches [a-z][a-z0-9-]{0,31}, actor non-empty, result one of
 * "ok", "refused", "error". Returns 0 or -EINVAL. */
int kms_audit_event_check(const KmsAuditEvent *ev);

/* A sanitised copy of s (NULL -> NULL with 0): at most max bytes (cut at a character boundary),
 * bytes that are not valid UTF-8 and control characters (< 0x20, 0x7f) replaced by '?'.
 * Idempotent. Returns 0 and a malloc'd string in *ret (NULL when s is NULL), or -ENOMEM. */
int kms_audit_text_sanitize(const char *s, size_t max, char **ret);

/* Builds the row for ev at seq (>= 1) and time, chained to prev_hash_hex (64 lowercase hex),
 * sanitising the text, without "hash". Returns 0 and a new object, -EINVAL (bad event or
 * arguments), -ENOMEM. */
int kms_audit_row_build(int64_t seq, int64_t time, const KmsAuditEvent *ev,
                        const char *prev_hash_hex, json_t **ret_row);

/* Computes the row's hash: SHA-256(bytes of row.prev_hash || JCS(row without "hash")) as 64
 * lowercase hex chars. Any "hash" member of row is ignored. The row's shape is not checked
 * beyond prev_hash. Returns 0, -EBADMSG (no valid prev_hash, or not canonicalisable: e.g. an
 * integer beyond 2^53), -ENOMEM, -EIO. */
int kms_audit_row_hash(const json_t *row, char ret_hash_hex[static 65]);

/* Verifies an ordered array of rows (as kms_store_audit_rows() returns them, the first with seq
 * 1): each row's shape (exact members and types), consecutive seq numbers, each prev_hash equal
 * to the previous row's hash (the genesis hash for seq 1), each hash recomputed; then, if
 * expected_head_hex is not NULL, that the last hash (the genesis hash for no rows) equals it.
 * Returns 0; -EBADMSG (not an array, a malformed row), -EKEYREJECTED (chain broken: an edited,
 * deleted, reordered or added row, or a tail missing against the head), -EINVAL
 * (expected_head_hex not 64 hex chars), -ENOMEM. On failure err names the row and the check. */
int kms_audit_chain_verify(json_t *rows, const char *expected_head_hex, char err[static 256]);
