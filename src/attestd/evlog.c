/* SPDX-License-Identifier: Apache-2.0 */
#include "attestd/evlog.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "core/log.h"

struct AttestdEvlog {
    sqlite3 *db;
    sqlite3_stmt *insert;
    pthread_mutex_t lock;
    int64_t max_records;
    unsigned since_trim;
};

static const char schema[] = "CREATE TABLE IF NOT EXISTS evidence ("
                             " id INTEGER PRIMARY KEY AUTOINCREMENT,"
                             " at INTEGER NOT NULL,"
                             " client TEXT NOT NULL,"
                             " policy_id TEXT NOT NULL,"
                             " report BLOB NOT NULL,"
                             " certs TEXT NOT NULL,"
                             " runtime_data TEXT NOT NULL,"
                             " verdict TEXT NOT NULL,"
                             " failed_check TEXT NOT NULL,"
                             " detail TEXT NOT NULL);"
                             "CREATE INDEX IF NOT EXISTS evidence_at ON evidence(at);";

static int seterr(char **ret_error, sqlite3 *db, const char *path, const char *what) {
    if (ret_error && asprintf(ret_error, "evidence log %s: %s: %s", path, what,
                              db ? sqlite3_errmsg(db) : "out of memory") < 0)
        *ret_error = NULL;
    return -EIO;
}

int evlog_open(const char *path, int64_t max_records, bool read_only, AttestdEvlog **ret,
               char **ret_error) {
    AttestdEvlog *l;
    int r;

    l = calloc(1, sizeof *l);
    if (!l)
        return -ENOMEM;
    pthread_mutex_init(&l->lock, NULL);
    l->max_records = max_records > 0 ? max_records : 100000;
    r = sqlite3_open_v2(
        path, &l->db,
        (read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) |
            SQLITE_OPEN_FULLMUTEX,
        NULL);
    if (r != SQLITE_OK) {
        r = seterr(ret_error, l->db, path, "open");
        evlog_close(l);
        return r;
    }
    sqlite3_busy_timeout(l->db, 5000);
    if (!read_only &&
        (sqlite3_exec(l->db,
                      "PRAGMA auto_vacuum=INCREMENTAL; PRAGMA journal_mode=WAL; "
                      "PRAGMA synchronous=NORMAL;",
                      NULL, NULL, NULL) != SQLITE_OK ||
         sqlite3_exec(l->db, schema, NULL, NULL, NULL) != SQLITE_OK ||
         sqlite3_prepare_v2(l->db,
                            "INSERT INTO evidence (at, client, policy_id, report, certs, "
                            "runtime_data, verdict, failed_check, detail) VALUES "
                            "(?,?,?,?,?,?,?,?,?)",
                            -1, &l->insert, NULL) != SQLITE_OK)) {
        r = seterr(ret_error, l->db, path, "schema");
        evlog_close(l);
        return r;
    }
    *ret = l;
    return 0;
}

AttestdEvlog *evlog_close(AttestdEvlog *l) {
    if (!l)
        return NULL;
    sqlite3_finalize(l->insert);
    sqlite3_close_v2(l->db);
    pthread_mutex_destroy(&l->lock);
    free(l);
    return NULL;
}

static void trim(AttestdEvlog *l) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(l->db,
                           "DELETE FROM evidence WHERE id <= (SELECT MAX(id) FROM evidence) - ?",
                           -1, &st, NULL) != SQLITE_OK)
        return;
    sqlite3_bind_int64(st, 1, l->max_records);
    if (sqlite3_step(st) != SQLITE_DONE)
        log_warning("Evidence log: trimming failed: %s", sqlite3_errmsg(l->db));
    sqlite3_finalize(st);
    /* Give the freed pages back, so that the file stays bounded too. */
    (void)sqlite3_exec(l->db, "PRAGMA incremental_vacuum;", NULL, NULL, NULL);
}

int evlog_append(AttestdEvlog *l, const EvlogRecord *rec) {
    sqlite3_stmt *st = l->insert;
    int r = 0;

    if (!st)
        return -EROFS;
    pthread_mutex_lock(&l->lock);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    sqlite3_bind_int64(st, 1, rec->at);
    sqlite3_bind_text(st, 2, rec->client ? rec->client : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, rec->policy_id ? rec->policy_id : "", -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 4, rec->report, (int)rec->report_len, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, rec->certs_json ? rec->certs_json : "[]", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, rec->runtime_data ? rec->runtime_data : "{}", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, rec->verdict ? rec->verdict : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 8, rec->check ? rec->check : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 9, rec->detail ? rec->detail : "", -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE) {
        log_warning("Evidence log: insert failed: %s", sqlite3_errmsg(l->db));
        r = -EIO;
    } else if (++l->since_trim >= 64) {
        l->since_trim = 0;
        trim(l);
    }
    sqlite3_reset(st);
    pthread_mutex_unlock(&l->lock);
    return r;
}

static const char *col_text(sqlite3_stmt *st, int i) {
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? (const char *)t : "";
}

int evlog_foreach(AttestdEvlog *l, int64_t since, int (*cb)(void *ud, const EvlogRecord *r),
                  void *ud) {
    sqlite3_stmt *st = NULL;
    int r = 0, s;

    if (sqlite3_prepare_v2(l->db,
                           "SELECT id, at, client, policy_id, report, certs, runtime_data, "
                           "verdict, failed_check, detail FROM evidence WHERE at >= ? ORDER BY id",
                           -1, &st, NULL) != SQLITE_OK) {
        log_error("Evidence log: %s", sqlite3_errmsg(l->db));
        return -EIO;
    }
    sqlite3_bind_int64(st, 1, since);
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        EvlogRecord rec = {
            .id = sqlite3_column_int64(st, 0),
            .at = sqlite3_column_int64(st, 1),
            .client = col_text(st, 2),
            .policy_id = col_text(st, 3),
            .report = sqlite3_column_blob(st, 4),
            .report_len = (size_t)sqlite3_column_bytes(st, 4),
            .certs_json = col_text(st, 5),
            .runtime_data = col_text(st, 6),
            .verdict = col_text(st, 7),
            .check = col_text(st, 8),
            .detail = col_text(st, 9),
        };
        r = cb(ud, &rec);
        if (r < 0)
            break;
    }
    if (r >= 0 && s != SQLITE_DONE) {
        log_error("Evidence log: %s", sqlite3_errmsg(l->db));
        r = -EIO;
    }
    sqlite3_finalize(st);
    return r < 0 ? r : 0;
}

int64_t evlog_count(AttestdEvlog *l) {
    sqlite3_stmt *st = NULL;
    int64_t n = -1;
    if (sqlite3_prepare_v2(l->db, "SELECT COUNT(*) FROM evidence", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n;
}
