/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Helpers shared by the kmsd store tests: a temp directory, KEKs, metadata and events, and raw
 * SQLite access to the store's file (to play the attacker who can write the database).
 */
#pragma once

#include <ftw.h>
#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/secret.h"
#include "kmsd/store.h"

static char tmpdir[256];

static inline char *mfree_str(char *p) {
    free(p);
    return NULL;
}

static inline int rm_one_(const char *p, const struct stat *st, int flag, struct FTW *f) {
    return remove(p);
}

static inline int tmpdir_setup(void **state) {
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/kmsd-test-XXXXXX", base && base[0] ? base : "/tmp");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static inline int tmpdir_teardown(void **state) {
    return nftw(tmpdir, rm_one_, 16, FTW_DEPTH | FTW_PHYS);
}

/* A path inside the temp dir (static buffer rotation: up to 4 live at once). */
static inline const char *tpath(const char *name) {
    static char bufs[4][512];
    static unsigned i;
    char *b = bufs[i++ % 4];
    snprintf(b, 512, "%s/%s", tmpdir, name);
    return b;
}

static inline Secret *kek_fill(uint8_t byte) {
    Secret *k = NULL;
    if (secret_new(KMS_KEK_SIZE, &k) < 0)
        abort();
    memset(secret_data(k), byte, KMS_KEK_SIZE);
    return k;
}

static inline Secret *value_fill(size_t n, uint8_t byte) {
    Secret *v = NULL;
    if (secret_new(n, &v) < 0)
        abort();
    for (size_t i = 0; i < n; i++)
        secret_data(v)[i] = (uint8_t)(byte + i);
    return v;
}

static inline bool secret_eq(const Secret *a, const Secret *b) {
    return a && b && secret_size(a) == secret_size(b) &&
           memcmp(secret_const_data(a), secret_const_data(b), secret_size(a)) == 0;
}

/* Metadata for an aes256 secret `id` (attributes and policy owned by the caller's meta; free
 * with kms_secret_meta_clear()). */
static inline KmsSecretMeta meta_make(const char *id, const char *type) {
    KmsSecretMeta m = {
        .id = strdup(id),
        .name = strdup(id),
        .type = strdup(type ? type : "aes256"),
        .attributes =
            json_pack("{s:s,s:i,s:s}", "policy", "attested", "max_age", 3600, "label", "test key"),
        .policy = json_pack("{s:i,s:{s:[s]}}", "version", 1, "rules", "measurement_in",
                            "aa00aa00aa00aa00aa00aa00aa00aa00aa00aa00aa00aa00aa00aa00aa00aa00"
                            "aa00aa00aa00aa00aa00aa00aa00aa00"),
    };
    if (!m.id || !m.name || !m.type || !m.attributes || !m.policy)
        abort();
    return m;
}

static const KmsAuditEvent admin_ev = {
    .action = "create", .actor = "admin:bearer", .result = "ok", .detail = "test"};

static inline KmsAuditEvent ev_action(const char *action) {
    KmsAuditEvent e = admin_ev;
    e.action = action;
    return e;
}

/* Runs SQL on the store's file through a separate connection (the attacker's). Returns the
 * SQLite result code. */
static inline int raw_sql(const char *db_path, const char *sql) {
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READWRITE, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(db, 5000);
        rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    }
    sqlite3_close(db);
    return rc;
}

/* The first column of the first row of a query, as an integer (-1 if none). */
static inline long long raw_int(const char *db_path, const char *sql) {
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    long long v = -1;
    if (sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

/* Verifies the store's whole chain against its head; returns kms_audit_chain_verify()'s result
 * and the message in err. */
static inline int store_chain_verify(KmsStore *s, char err[static 256]) {
    json_t *all = json_array();
    int64_t after = 0, head_seq = 0;
    char head[65];
    int r;
    for (;;) {
        json_t *rows = NULL;
        size_t n;
        if ((r = kms_store_audit_rows(s, after, 0, &rows)) < 0) {
            json_decref(all);
            return r;
        }
        n = json_array_size(rows);
        if (n > 0)
            after = json_integer_value(json_object_get(json_array_get(rows, n - 1), "seq"));
        json_array_extend(all, rows);
        json_decref(rows);
        if (n == 0)
            break;
    }
    if ((r = kms_store_audit_head(s, &head_seq, head)) < 0) {
        json_decref(all);
        return r;
    }
    r = kms_audit_chain_verify(all, head, err);
    json_decref(all);
    return r;
}
