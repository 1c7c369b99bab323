/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The SQLite backend of kmsd's store (store.h, store-private.h): one file, WAL mode,
 * synchronous=FULL (a committed write survives a power cut, not only a crash of kmsd),
 * secure_delete=ON, foreign keys on; one connection per store, serialised by a mutex; every write
 * is one BEGIN IMMEDIATE transaction that also appends its audit row, so the audit chain stays
 * linear even when several processes share the file (the write lock is taken before the chain
 * head is read).
 * Group commit: release attempts (kms_store_audit) that arrive while another one is committing
 * wait, and the next of them appends all the waiting rows, in their order of arrival, in one
 * transaction (one fsync for all); each caller returns only once the COMMIT holding its row is
 * done, so a row is durable before the release it records is sent. A row that fails rolls back
 * to its own savepoint: the others of its batch are kept.
 *
 * Schema (version 1, in schema_version):
 *   meta(key, value)                       'kek_check': the KEK check value
 *   secrets(id, name, type, version, attributes, policy, created, updated, mac)
 *   secret_versions(secret_id, version, sealed, created)   all versions of each value
 *   deleted_secrets(id, last_version)      so a re-created id continues its version numbers
 *   audit(seq, time, action, ..., prev_hash, hash)          append-only (triggers refuse
 *                                                           UPDATE and DELETE)
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "core/alloc.h"
#include "core/log.h"
#include "kmsd/store-private.h"

typedef enum Query {
    Q_SECRET_GET,
    Q_SECRET_LIST,
    Q_SECRET_VERSION,
    Q_SECRET_INSERT,
    Q_SECRET_UPDATE,
    Q_SECRET_DELETE,
    Q_VERSION_GET,
    Q_VERSION_INSERT,
    Q_VERSIONS_DELETE,
    Q_TOMBSTONE_GET,
    Q_TOMBSTONE_SET,
    Q_TOMBSTONE_DELETE,
    Q_AUDIT_HEAD,
    Q_AUDIT_INSERT,
    Q_AUDIT_ROWS,
    _Q_MAX,
} Query;

#define META_COLUMNS "id, name, type, version, attributes, policy, created, updated, mac"
#define AUDIT_COLUMNS                                                                              \
    "seq, time, action, actor, secret_id, version, token_jti, measurement, chip_id, result, "      \
    "rule, detail, prev_hash, hash"

static const char *const queries[_Q_MAX] = {
    [Q_SECRET_GET] = "SELECT " META_COLUMNS " FROM secrets WHERE id = ?1",
    [Q_SECRET_LIST] = "SELECT " META_COLUMNS " FROM secrets WHERE id > ?1 ORDER BY id LIMIT ?2",
    [Q_SECRET_VERSION] = "SELECT version FROM secrets WHERE id = ?1",
    [Q_SECRET_INSERT] =
        "INSERT INTO secrets (" META_COLUMNS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    [Q_SECRET_UPDATE] = "UPDATE secrets SET version = ?2, policy = ?3, updated = ?4, mac = ?5 "
                        "WHERE id = ?1",
    [Q_SECRET_DELETE] = "DELETE FROM secrets WHERE id = ?1",
    [Q_VERSION_GET] = "SELECT sealed FROM secret_versions WHERE secret_id = ?1 AND version = ?2",
    [Q_VERSION_INSERT] = "INSERT INTO secret_versions (secret_id, version, sealed, created) "
                         "VALUES (?1, ?2, ?3, ?4)",
    [Q_VERSIONS_DELETE] = "DELETE FROM secret_versions WHERE secret_id = ?1",
    [Q_TOMBSTONE_GET] = "SELECT last_version FROM deleted_secrets WHERE id = ?1",
    [Q_TOMBSTONE_SET] = "INSERT OR REPLACE INTO deleted_secrets (id, last_version) VALUES (?1, ?2)",
    [Q_TOMBSTONE_DELETE] = "DELETE FROM deleted_secrets WHERE id = ?1",
    [Q_AUDIT_HEAD] = "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
    [Q_AUDIT_INSERT] = "INSERT INTO audit (" AUDIT_COLUMNS
                       ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    [Q_AUDIT_ROWS] = "SELECT " AUDIT_COLUMNS " FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2",
};

static const char schema_v1[] =
    "CREATE TABLE schema_version (version INTEGER NOT NULL);"
    "CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL);"
    "CREATE TABLE secrets ("
    " id TEXT PRIMARY KEY NOT NULL,"
    " name TEXT NOT NULL,"
    " type TEXT NOT NULL,"
    " version INTEGER NOT NULL CHECK (version >= 1),"
    " attributes TEXT NOT NULL,"
    " policy TEXT NOT NULL,"
    " created INTEGER NOT NULL,"
    " updated INTEGER NOT NULL,"
    " mac BLOB NOT NULL);"
    "CREATE TABLE secret_versions ("
    " secret_id TEXT NOT NULL REFERENCES secrets(id) ON DELETE CASCADE,"
    " version INTEGER NOT NULL CHECK (version >= 1),"
    " sealed BLOB NOT NULL,"
    " created INTEGER NOT NULL,"
    " PRIMARY KEY (secret_id, version)) WITHOUT ROWID;"
    "CREATE TABLE deleted_secrets (id TEXT PRIMARY KEY NOT NULL, last_version INTEGER NOT NULL);"
    "CREATE TABLE audit ("
    " seq INTEGER PRIMARY KEY NOT NULL,"
    " time INTEGER NOT NULL,"
    " action TEXT NOT NULL,"
    " actor TEXT NOT NULL,"
    " secret_id TEXT,"
    " version INTEGER,"
    " token_jti TEXT,"
    " measurement TEXT,"
    " chip_id TEXT,"
    " result TEXT NOT NULL,"
    " rule TEXT,"
    " detail TEXT,"
    " prev_hash TEXT NOT NULL,"
    " hash TEXT NOT NULL);"
    "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit"
    " BEGIN SELECT RAISE(ABORT, 'audit rows are append-only'); END;"
    "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit"
    " BEGIN SELECT RAISE(ABORT, 'audit rows are append-only'); END;"
    "INSERT INTO schema_version (version) VALUES (1);";

/* A release attempt's audit row waiting for the group commit. */
typedef struct AuditWaiter {
    const KmsAuditEvent *ev;
    int64_t now;
    int r;
    bool done;
    struct AuditWaiter *next;
} AuditWaiter;

typedef struct SqliteStore {
    KmsStore base;
    sqlite3 *db;
    sqlite3_stmt *stmts[_Q_MAX];
    pthread_mutex_t lock;
    bool lock_init;
    /* Group commit of audit rows: the queue (oldest first) and whether a leader is committing,
     * under audit_lock; audit_cond wakes the waiters. */
    pthread_mutex_t audit_lock;
    pthread_cond_t audit_cond;
    bool audit_sync_init;
    AuditWaiter *audit_head, **audit_tail;
    bool audit_leader;
    uint64_t audit_commits; /* transactions of the group commit (for tests) */
} SqliteStore;

static void sqlite3_finalize_p(sqlite3_stmt **st) {
    if (*st)
        (void)sqlite3_finalize(*st);
}
static sqlite3_stmt *stmt_finalize(sqlite3_stmt *st) {
    (void)sqlite3_finalize(st);
    return NULL;
}

static inline SqliteStore *SQL(KmsStore *s) {
    return (SqliteStore *)s;
}

/* Maps a SQLite result code to a negative errno and logs the database's message. */
static int sql_error(SqliteStore *s, int rc, const char *what) {
    int r;
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        r = -EBUSY;
        break;
    case SQLITE_FULL:
        r = -ENOSPC;
        break;
    case SQLITE_NOMEM:
        r = -ENOMEM;
        break;
    case SQLITE_READONLY:
        r = -EROFS;
        break;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        r = -EBADMSG;
        break;
    default:
        r = -EIO;
    }
    log_warning("kms store: %s: %s", what, s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
    return r;
}

/* ---- lock, statements, transactions (all cleanup-guarded) ---- */

static void unlockp(pthread_mutex_t **m) {
    if (*m)
        (void)pthread_mutex_unlock(*m);
}
static pthread_mutex_t *lock_take(pthread_mutex_t *m) {
    (void)pthread_mutex_lock(m);
    return m;
}
#define LOCKED(s) _cleanup_(unlockp) _unused_ pthread_mutex_t *lock_guard_ = lock_take(&(s)->lock)

static void stmt_resetp(sqlite3_stmt **st) {
    if (*st) {
        (void)sqlite3_reset(*st);
        (void)sqlite3_clear_bindings(*st);
    }
}
#define _cleanup_stmt_ _cleanup_(stmt_resetp)

/* The cached statement for q (prepared on first use). Returns 0 or a negative errno. */
static int stmt(SqliteStore *s, Query q, sqlite3_stmt **ret) {
    int rc;
    if (!s->stmts[q]) {
        rc = sqlite3_prepare_v3(s->db, queries[q], -1, SQLITE_PREPARE_PERSISTENT, &s->stmts[q],
                                NULL);
        if (rc != SQLITE_OK)
            return sql_error(s, rc, "prepare");
    }
    *ret = s->stmts[q];
    return 0;
}

typedef struct Txn {
    SqliteStore *s;
    bool active;
} Txn;
static void txn_rollbackp(Txn *t) {
    /* Also after a failed COMMIT; "no transaction is active" (SQLite already rolled back) is
     * harmless. */
    if (t->active)
        (void)sqlite3_exec(t->s->db, "ROLLBACK", NULL, NULL, NULL);
}
#define _cleanup_txn_ _cleanup_(txn_rollbackp)

static int txn_begin(SqliteStore *s, Txn *t) {
    int rc = sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return sql_error(s, rc, "begin");
    t->s = s;
    t->active = true;
    return 0;
}

static int txn_commit(Txn *t) {
    int rc = sqlite3_exec(t->s->db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return sql_error(t->s, rc, "commit");
    t->active = false;
    return 0;
}

static int bind_text(sqlite3_stmt *st, int i, const char *v) {
    return v ? sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT) : sqlite3_bind_null(st, i);
}

static const char *col_text(sqlite3_stmt *st, int i) {
    return (const char *)sqlite3_column_text(st, i);
}

/* Runs a statement that returns no row. */
static int step_done(SqliteStore *s, sqlite3_stmt *st, const char *what) {
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE)
        return sql_error(s, rc, what);
    return 0;
}

/* ---- audit ---- */

/* Reads the chain head (inside the caller's transaction, or under the lock). */
static int audit_head_locked(SqliteStore *s, int64_t *ret_seq, char ret_hash[static 65]) {
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    const char *h;
    int rc, r;

    if ((r = stmt(s, Q_AUDIT_HEAD, &st)) < 0)
        return r;
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        *ret_seq = 0;
        memcpy(ret_hash, KMS_AUDIT_GENESIS_HEX, 65);
        return 0;
    }
    if (rc != SQLITE_ROW)
        return sql_error(s, rc, "audit head");
    h = col_text(st, 1);
    if (!h || strlen(h) != 64) {
        log_warning("kms store: the newest audit row holds a malformed hash");
        return -EBADMSG;
    }
    *ret_seq = sqlite3_column_int64(st, 0);
    memcpy(ret_hash, h, 65);
    return 0;
}

/* Appends ev (inside the caller's write transaction). */
static int audit_append(SqliteStore *s, const KmsAuditEvent *ev, int64_t now) {
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    json_auto_t *row = NULL;
    char prev[65], hash[65];
    int64_t seq = 0;
    json_t *v;
    int r;

    if ((r = audit_head_locked(s, &seq, prev)) < 0)
        return r;
    if ((r = kms_audit_row_build(seq + 1, now, ev, prev, &row)) < 0)
        return r;
    if ((r = kms_audit_row_hash(row, hash)) < 0)
        return r;
    if ((r = stmt(s, Q_AUDIT_INSERT, &st)) < 0)
        return r;
    /* Insert exactly the (sanitised) text that was hashed. */
    sqlite3_bind_int64(st, 1, seq + 1);
    sqlite3_bind_int64(st, 2, now);
    static const char *const text_members[] = {"action",    "actor",       "secret_id", NULL,
                                               "token_jti", "measurement", "chip_id",   "result",
                                               "rule",      "detail",      "prev_hash"};
    for (size_t i = 0; i < ELEMENTSOF(text_members); i++) {
        if (!text_members[i])
            continue;
        bind_text(st, (int)i + 3, json_string_value(json_object_get(row, text_members[i])));
    }
    v = json_object_get(row, "version");
    if (json_is_integer(v))
        sqlite3_bind_int64(st, 6, json_integer_value(v));
    else
        sqlite3_bind_null(st, 6);
    bind_text(st, 14, hash);
    return step_done(s, st, "audit insert");
}

/* A text column as a JSON string: as stored when it is valid UTF-8, else sanitised (an edited
 * row then fails its hash, as it should, instead of breaking the JSON). */
static json_t *col_json_text(sqlite3_stmt *st, int i) {
    _cleanup_free_ char *clean = NULL;
    const char *t = col_text(st, i);
    json_t *j;
    if (sqlite3_column_type(st, i) == SQLITE_NULL || !t)
        return json_null();
    j = json_stringn(t, (size_t)sqlite3_column_bytes(st, i));
    if (j)
        return j;
    if (kms_audit_text_sanitize(t, SIZE_MAX, &clean) < 0)
        return NULL;
    return json_string(clean);
}

static int audit_row_from_stmt(sqlite3_stmt *st, json_t **ret) {
    static const char *const names[] = {
        "seq",         "time",    "action", "actor", "secret_id", "version",   "token_jti",
        "measurement", "chip_id", "result", "rule",  "detail",    "prev_hash", "hash",
    };
    json_auto_t *row = json_object();
    if (!row)
        return -ENOMEM;
    for (int i = 0; i < (int)ELEMENTSOF(names); i++) {
        json_t *v;
        if (i == 0 || i == 1 || i == 5)
            v = sqlite3_column_type(st, i) == SQLITE_NULL
                    ? json_null()
                    : json_integer(sqlite3_column_int64(st, i));
        else
            v = col_json_text(st, i);
        if (json_object_set_new(row, names[i], v) < 0)
            return -ENOMEM;
    }
    *ret = TAKE_PTR(row);
    return 0;
}

/* ---- secrets ---- */

/* Reads the metadata row at the current step of st (META_COLUMNS), checking its MAC. */
static int meta_from_stmt(SqliteStore *s, sqlite3_stmt *st, KmsSecretMeta *ret) {
    _cleanup_(kms_secret_meta_clear) KmsSecretMeta m = {};
    int64_t version = sqlite3_column_int64(st, 3);
    KmsMetaRecord rec = {
        .id = col_text(st, 0),
        .name = col_text(st, 1),
        .type = col_text(st, 2),
        .attributes = col_text(st, 4),
        .policy = col_text(st, 5),
        .created = sqlite3_column_int64(st, 6),
        .updated = sqlite3_column_int64(st, 7),
    };
    int r;

    if (!rec.id || !rec.name || !rec.type || !rec.attributes || !rec.policy || version < 1 ||
        version > UINT32_MAX)
        return -EBADMSG;
    rec.version = (uint32_t)version;
    r = kms_store_meta_mac_verify(&s->base, &rec, sqlite3_column_blob(st, 8),
                                  (size_t)sqlite3_column_bytes(st, 8));
    if (r == -EBADMSG)
        log_warning("kms store: the metadata of secret '%s' fails its MAC (edited database?)",
                    rec.id);
    if (r < 0)
        return r;
    if (!ret)
        return 0;
    m.id = nt_strdup(rec.id);
    m.name = nt_strdup(rec.name);
    m.type = nt_strdup(rec.type);
    if (!m.id || !m.name || !m.type)
        return -ENOMEM;
    m.version = rec.version;
    m.created = rec.created;
    m.updated = rec.updated;
    if ((r = kms_store_json_object_parse(rec.attributes, &m.attributes)) < 0 ||
        (r = kms_store_json_object_parse(rec.policy, &m.policy)) < 0)
        return r;
    *ret = m;
    m = (KmsSecretMeta){};
    return 0;
}

/* The metadata of id with its stored texts (for a write that updates the row). */
typedef struct MetaRow {
    char *name, *type, *attributes, *policy;
    uint32_t version;
    int64_t created;
} MetaRow;
static void meta_row_done(MetaRow *m) {
    free(m->name);
    free(m->type);
    free(m->attributes);
    free(m->policy);
}

static int meta_row_read(SqliteStore *s, const char *id, MetaRow *ret) {
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int rc, r;

    if ((r = stmt(s, Q_SECRET_GET, &st)) < 0)
        return r;
    bind_text(st, 1, id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        return -ENOENT;
    if (rc != SQLITE_ROW)
        return sql_error(s, rc, "read secret");
    if ((r = meta_from_stmt(s, st, NULL)) < 0) /* checks the MAC before anything is rewritten */
        return r;
    MetaRow m = {
        .name = nt_strdup(col_text(st, 1)),
        .type = nt_strdup(col_text(st, 2)),
        .attributes = nt_strdup(col_text(st, 4)),
        .policy = nt_strdup(col_text(st, 5)),
        .version = (uint32_t)sqlite3_column_int64(st, 3),
        .created = sqlite3_column_int64(st, 6),
    };
    if (!m.name || !m.type || !m.attributes || !m.policy) {
        meta_row_done(&m);
        return -ENOMEM;
    }
    *ret = m;
    return 0;
}

static int version_insert(SqliteStore *s, const char *id, uint32_t version, const Secret *value,
                          int64_t now) {
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    _cleanup_free_ uint8_t *sealed = NULL;
    size_t sealed_len = 0;
    int r;

    if ((r = kms_store_seal_value(&s->base, id, version, value, &sealed, &sealed_len)) < 0)
        return r;
    if ((r = stmt(s, Q_VERSION_INSERT, &st)) < 0)
        return r;
    bind_text(st, 1, id);
    sqlite3_bind_int64(st, 2, version);
    sqlite3_bind_blob(st, 3, sealed, (int)sealed_len, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 4, now);
    return step_done(s, st, "insert value");
}

/* Simple one-id statements. */
static int exec_id(SqliteStore *s, Query q, const char *id, const char *what) {
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r;
    if ((r = stmt(s, q, &st)) < 0)
        return r;
    bind_text(st, 1, id);
    return step_done(s, st, what);
}

/* 1 and the value of the first column if the query for id returns a row, 0 if none. */
static int query_id_int(SqliteStore *s, Query q, const char *id, int64_t *ret) {
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int rc, r;
    if ((r = stmt(s, q, &st)) < 0)
        return r;
    bind_text(st, 1, id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        return 0;
    if (rc != SQLITE_ROW)
        return sql_error(s, rc, "query");
    if (ret)
        *ret = sqlite3_column_int64(st, 0);
    return 1;
}

static int secret_update(SqliteStore *s, const char *id, const MetaRow *m, uint32_t version,
                         const char *policy, int64_t now) {
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    uint8_t mac[KMS_META_MAC_SIZE];
    KmsMetaRecord rec = {
        .id = id,
        .name = m->name,
        .type = m->type,
        .version = version,
        .attributes = m->attributes,
        .policy = policy,
        .created = m->created,
        .updated = now,
    };
    int r;

    if ((r = kms_store_meta_mac(&s->base, &rec, mac)) < 0)
        return r;
    if ((r = stmt(s, Q_SECRET_UPDATE, &st)) < 0)
        return r;
    bind_text(st, 1, id);
    sqlite3_bind_int64(st, 2, version);
    bind_text(st, 3, policy);
    sqlite3_bind_int64(st, 4, now);
    sqlite3_bind_blob(st, 5, mac, sizeof mac, SQLITE_TRANSIENT);
    return step_done(s, st, "update secret");
}

static int sqlite_create(KmsStore *base, const KmsSecretMeta *m, const char *attributes,
                         const char *policy, const Secret *value, const KmsAuditEvent *ev,
                         int64_t now, uint32_t *ret_version) {
    SqliteStore *s = SQL(base);
    LOCKED(s);
    _cleanup_txn_ Txn txn = {};
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    uint8_t mac[KMS_META_MAC_SIZE];
    KmsAuditEvent e = *ev;
    int64_t last = 0;
    uint32_t version = 1;
    int r;

    if ((r = txn_begin(s, &txn)) < 0)
        return r;
    if ((r = query_id_int(s, Q_SECRET_VERSION, m->id, NULL)) != 0)
        return r < 0 ? r : -EEXIST;
    if ((r = query_id_int(s, Q_TOMBSTONE_GET, m->id, &last)) < 0)
        return r;
    if (r > 0) {
        if (last < 0 || last >= UINT32_MAX)
            return -EOVERFLOW;
        version = (uint32_t)last + 1;
        if ((r = exec_id(s, Q_TOMBSTONE_DELETE, m->id, "tombstone")) < 0)
            return r;
    }
    KmsMetaRecord rec = {
        .id = m->id,
        .name = m->name,
        .type = m->type,
        .version = version,
        .attributes = attributes,
        .policy = policy,
        .created = now,
        .updated = now,
    };
    if ((r = kms_store_meta_mac(base, &rec, mac)) < 0)
        return r;
    if ((r = stmt(s, Q_SECRET_INSERT, &st)) < 0)
        return r;
    bind_text(st, 1, m->id);
    bind_text(st, 2, m->name);
    bind_text(st, 3, m->type);
    sqlite3_bind_int64(st, 4, version);
    bind_text(st, 5, attributes);
    bind_text(st, 6, policy);
    sqlite3_bind_int64(st, 7, now);
    sqlite3_bind_int64(st, 8, now);
    sqlite3_bind_blob(st, 9, mac, sizeof mac, SQLITE_TRANSIENT);
    r = step_done(s, st, "insert secret");
    stmt_resetp(&st);
    if (r < 0)
        return r;
    if ((r = version_insert(s, m->id, version, value, now)) < 0)
        return r;
    e.secret_id = m->id;
    e.version = version;
    if ((r = audit_append(s, &e, now)) < 0 || (r = txn_commit(&txn)) < 0)
        return r;
    if (ret_version)
        *ret_version = version;
    return 0;
}

static int sqlite_replace(KmsStore *base, const char *id, const Secret *value,
                          const KmsAuditEvent *ev, int64_t now, uint32_t *ret_version) {
    SqliteStore *s = SQL(base);
    LOCKED(s);
    _cleanup_txn_ Txn txn = {};
    _cleanup_(meta_row_done) MetaRow m = {};
    KmsAuditEvent e = *ev;
    char err[256];
    uint32_t version;
    int r;

    if ((r = txn_begin(s, &txn)) < 0)
        return r;
    if ((r = meta_row_read(s, id, &m)) < 0)
        return r;
    if ((r = kms_secret_value_check(m.type, value, err)) < 0)
        return r;
    if (m.version == UINT32_MAX)
        return -EOVERFLOW;
    version = m.version + 1;
    if ((r = version_insert(s, id, version, value, now)) < 0 ||
        (r = secret_update(s, id, &m, version, m.policy, now)) < 0)
        return r;
    e.secret_id = id;
    e.version = version;
    if ((r = audit_append(s, &e, now)) < 0 || (r = txn_commit(&txn)) < 0)
        return r;
    if (ret_version)
        *ret_version = version;
    return 0;
}

static int sqlite_set_policy(KmsStore *base, const char *id, const char *policy,
                             const KmsAuditEvent *ev, int64_t now) {
    SqliteStore *s = SQL(base);
    LOCKED(s);
    _cleanup_txn_ Txn txn = {};
    _cleanup_(meta_row_done) MetaRow m = {};
    KmsAuditEvent e = *ev;
    int r;

    if ((r = txn_begin(s, &txn)) < 0)
        return r;
    if ((r = meta_row_read(s, id, &m)) < 0)
        return r;
    if ((r = secret_update(s, id, &m, m.version, policy, now)) < 0)
        return r;
    e.secret_id = id;
    e.version = m.version;
    if ((r = audit_append(s, &e, now)) < 0)
        return r;
    return txn_commit(&txn);
}

static int sqlite_delete(KmsStore *base, const char *id, const KmsAuditEvent *ev, int64_t now) {
    SqliteStore *s = SQL(base);
    LOCKED(s);
    _cleanup_txn_ Txn txn = {};
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    KmsAuditEvent e = *ev;
    int64_t version = 0;
    int r;

    if ((r = txn_begin(s, &txn)) < 0)
        return r;
    /* No MAC check: deleting an edited row is how an operator gets rid of it. */
    if ((r = query_id_int(s, Q_SECRET_VERSION, id, &version)) <= 0)
        return r < 0 ? r : -ENOENT;
    if ((r = exec_id(s, Q_VERSIONS_DELETE, id, "delete values")) < 0 ||
        (r = exec_id(s, Q_SECRET_DELETE, id, "delete secret")) < 0)
        return r;
    if (version >= 1 && version <= UINT32_MAX) {
        if ((r = stmt(s, Q_TOMBSTONE_SET, &st)) < 0)
            return r;
        bind_text(st, 1, id);
        sqlite3_bind_int64(st, 2, version);
        r = step_done(s, st, "tombstone");
        stmt_resetp(&st);
        if (r < 0)
            return r;
    }
    e.secret_id = id;
    e.version = version >= 1 && version <= UINT32_MAX ? (uint32_t)version : 0;
    if ((r = audit_append(s, &e, now)) < 0)
        return r;
    return txn_commit(&txn);
}

static int value_read(SqliteStore *s, const char *id, uint32_t version, Secret **ret) {
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int rc, r;

    if ((r = stmt(s, Q_VERSION_GET, &st)) < 0)
        return r;
    bind_text(st, 1, id);
    sqlite3_bind_int64(st, 2, version);
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        return -ENOENT;
    if (rc != SQLITE_ROW)
        return sql_error(s, rc, "read value");
    r = kms_store_open_value(&s->base, id, version, sqlite3_column_blob(st, 0),
                             (size_t)sqlite3_column_bytes(st, 0), ret);
    if (r == -EBADMSG)
        log_warning("kms store: value version %" PRIu32
                    " of secret '%s' does not decrypt (edited or moved in the database)",
                    version, id);
    return r;
}

static int sqlite_get(KmsStore *base, const char *id, uint32_t version, KmsSecretMeta *ret_meta,
                      Secret **ret_value) {
    SqliteStore *s = SQL(base);
    LOCKED(s);
    _cleanup_txn_ Txn txn = {};
    _cleanup_(kms_secret_meta_clear) KmsSecretMeta m = {};
    _cleanup_(secret_freep) Secret *value = NULL;
    int rc, r;

    /* One read transaction: the metadata and the value are from the same snapshot. */
    rc = sqlite3_exec(s->db, "BEGIN DEFERRED", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return sql_error(s, rc, "begin");
    txn = (Txn){.s = s, .active = true};
    {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        if ((r = stmt(s, Q_SECRET_GET, &st)) < 0)
            return r;
        bind_text(st, 1, id);
        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
            return -ENOENT;
        if (rc != SQLITE_ROW)
            return sql_error(s, rc, "read secret");
        if ((r = meta_from_stmt(s, st, &m)) < 0)
            return r;
    }
    if (version > m.version)
        return -ENOENT;
    if (ret_value) {
        r = value_read(s, id, version ? version : m.version, &value);
        if (r == -ENOENT && version == 0) {
            log_warning("kms store: the latest value of secret '%s' is missing", id);
            return -EBADMSG;
        }
        if (r < 0)
            return r;
    }
    if (ret_meta) {
        *ret_meta = m;
        m = (KmsSecretMeta){};
    }
    if (ret_value)
        *ret_value = TAKE_PTR(value);
    return 0;
}

static int sqlite_list(KmsStore *base, const char *after_id, size_t limit, KmsSecretMeta **ret,
                       size_t *ret_n) {
    SqliteStore *s = SQL(base);
    LOCKED(s);
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    KmsSecretMeta *a = NULL;
    size_t n = 0;
    int rc, r;

    if ((r = stmt(s, Q_SECRET_LIST, &st)) < 0)
        return r;
    bind_text(st, 1, after_id ? after_id : "");
    sqlite3_bind_int64(st, 2, (int64_t)limit);
    a = nt_calloc(limit, sizeof *a);
    if (!a)
        return -ENOMEM;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && n < limit) {
        if ((r = meta_from_stmt(s, st, &a[n])) < 0) {
            kms_secret_meta_array_free(a, n);
            return r;
        }
        n++;
    }
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        kms_secret_meta_array_free(a, n);
        return sql_error(s, rc, "list secrets");
    }
    if (n == 0) {
        free(a);
        a = NULL;
    }
    *ret = a;
    *ret_n = n;
    return 0;
}

/* Appends the rows of batch (in order) in one transaction; each waiter's r is its result. */
static void audit_commit_batch(SqliteStore *s, AuditWaiter *batch) {
    LOCKED(s);
    _cleanup_txn_ Txn txn = {};
    size_t ok = 0;
    int r;

    if ((r = txn_begin(s, &txn)) < 0) {
        for (AuditWaiter *w = batch; w; w = w->next)
            w->r = r;
        return;
    }
    for (AuditWaiter *w = batch; w; w = w->next) {
        if (!w->next && w == batch) {
            w->r = audit_append(s, w->ev, w->now); /* alone: no savepoint needed */
        } else {
            int rc = sqlite3_exec(s->db, "SAVEPOINT audit_row", NULL, NULL, NULL);
            w->r = rc == SQLITE_OK ? audit_append(s, w->ev, w->now) : sql_error(s, rc, "savepoint");
            if (w->r < 0 && rc == SQLITE_OK)
                (void)sqlite3_exec(s->db, "ROLLBACK TO audit_row", NULL, NULL, NULL);
            if (rc == SQLITE_OK)
                (void)sqlite3_exec(s->db, "RELEASE audit_row", NULL, NULL, NULL);
        }
        ok += w->r == 0;
    }
    if (ok == 0)
        return; /* rolled back */
    r = txn_commit(&txn);
    s->audit_commits++;
    if (r < 0)
        for (AuditWaiter *w = batch; w; w = w->next)
            if (w->r == 0)
                w->r = r;
}

static int sqlite_audit(KmsStore *base, const KmsAuditEvent *ev, int64_t now) {
    SqliteStore *s = SQL(base);
    AuditWaiter me = {.ev = ev, .now = now};

    (void)pthread_mutex_lock(&s->audit_lock);
    *s->audit_tail = &me;
    s->audit_tail = &me.next;
    while (!me.done) {
        if (s->audit_leader) {
            (void)pthread_cond_wait(&s->audit_cond, &s->audit_lock);
            continue;
        }
        /* Lead: take every waiting row (ours among them) and commit them together. */
        AuditWaiter *batch = s->audit_head;
        s->audit_head = NULL;
        s->audit_tail = &s->audit_head;
        s->audit_leader = true;
        (void)pthread_mutex_unlock(&s->audit_lock);
        audit_commit_batch(s, batch);
        (void)pthread_mutex_lock(&s->audit_lock);
        for (AuditWaiter *w = batch, *next; w; w = next) {
            next = w->next; /* w may return (and go away) once done is set */
            w->done = true;
        }
        s->audit_leader = false;
        (void)pthread_cond_broadcast(&s->audit_cond);
    }
    (void)pthread_mutex_unlock(&s->audit_lock);
    return me.r;
}

uint64_t kms_store_sqlite_audit_commits(KmsStore *base) {
    SqliteStore *s = SQL(base);
    (void)pthread_mutex_lock(&s->audit_lock);
    uint64_t n = s->audit_commits;
    (void)pthread_mutex_unlock(&s->audit_lock);
    return n;
}

static int sqlite_audit_rows(KmsStore *base, int64_t after_seq, size_t limit, json_t **ret_rows) {
    SqliteStore *s = SQL(base);
    LOCKED(s);
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    json_auto_t *rows = json_array();
    int rc, r;

    if (!rows)
        return -ENOMEM;
    if ((r = stmt(s, Q_AUDIT_ROWS, &st)) < 0)
        return r;
    sqlite3_bind_int64(st, 1, after_seq);
    sqlite3_bind_int64(st, 2, (int64_t)limit);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *row = NULL;
        if ((r = audit_row_from_stmt(st, &row)) < 0)
            return r;
        if (json_array_append_new(rows, row) < 0)
            return -ENOMEM;
    }
    if (rc != SQLITE_DONE)
        return sql_error(s, rc, "audit rows");
    *ret_rows = TAKE_PTR(rows);
    return 0;
}

static int sqlite_audit_head(KmsStore *base, int64_t *ret_seq, char ret_hash_hex[65]) {
    SqliteStore *s = SQL(base);
    LOCKED(s);
    return audit_head_locked(s, ret_seq, ret_hash_hex);
}

static void sqlite_free(KmsStore *base) {
    SqliteStore *s = SQL(base);
    for (size_t i = 0; i < _Q_MAX; i++)
        (void)sqlite3_finalize(s->stmts[i]);
    if (s->db)
        (void)sqlite3_close_v2(s->db);
    if (s->lock_init)
        (void)pthread_mutex_destroy(&s->lock);
    if (s->audit_sync_init) {
        (void)pthread_mutex_destroy(&s->audit_lock);
        (void)pthread_cond_destroy(&s->audit_cond);
    }
    free(s);
}

static const KmsStoreOps sqlite_ops = {
    .name = "sqlite",
    .free = sqlite_free,
    .create = sqlite_create,
    .replace = sqlite_replace,
    .set_policy = sqlite_set_policy,
    .delete_secret = sqlite_delete,
    .get = sqlite_get,
    .list = sqlite_list,
    .audit = sqlite_audit,
    .audit_rows = sqlite_audit_rows,
    .audit_head = sqlite_audit_head,
};

/* ---- open ---- */

static int open_error(char **ret_error, int r, const char *path, const char *fmt, ...)
    _printf_(4, 5);
static int open_error(char **ret_error, int r, const char *path, const char *fmt, ...) {
    _cleanup_free_ char *msg = NULL;
    va_list ap;
    if (!ret_error)
        return r;
    va_start(ap, fmt);
    if (vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    va_end(ap);
    if (asprintf(ret_error, "kms store %s: %s", path, msg ? msg : "out of memory") < 0)
        *ret_error = NULL;
    return r;
}

static int pragma(SqliteStore *s, const char *sql, const char *expect) {
    _cleanup_(sqlite3_finalize_p) sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        return rc;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const char *v = col_text(st, 0);
        if (expect && (!v || strcasecmp(v, expect) != 0))
            return SQLITE_ERROR;
        rc = SQLITE_DONE;
    }
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Creates the schema if the database is empty, else checks its version; keeps the KEK check
 * value (made on creation) in *ret_check. One write transaction, so that two processes opening a
 * new file at once create it once. */
static int schema_init(SqliteStore *s, const char *path, char **ret_error) {
    _cleanup_txn_ Txn txn = {};
    _cleanup_(sqlite3_finalize_p) sqlite3_stmt *st = NULL;
    int64_t tables = 0, version = 0;
    int rc, r;

    if ((r = txn_begin(s, &txn)) < 0)
        return open_error(ret_error, r, path, "cannot start a transaction: %s",
                          sqlite3_errmsg(s->db));
    rc = sqlite3_prepare_v2(s->db,
                            "SELECT COUNT(*), SUM(name = 'schema_version') FROM sqlite_master "
                            "WHERE type = 'table'",
                            -1, &st, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        tables = sqlite3_column_int64(st, 0);
        version = sqlite3_column_int64(st, 1);
        rc = SQLITE_OK;
    }
    st = stmt_finalize(st);
    if (rc != SQLITE_OK)
        return open_error(ret_error, sql_error(s, rc, "schema"), path, "cannot read the schema: %s",
                          sqlite3_errmsg(s->db));
    if (tables == 0) {
        _cleanup_free_ uint8_t *check = NULL;
        size_t check_len = 0;
        rc = sqlite3_exec(s->db, schema_v1, NULL, NULL, NULL);
        if (rc != SQLITE_OK)
            return open_error(ret_error, sql_error(s, rc, "schema"), path,
                              "cannot create the schema: %s", sqlite3_errmsg(s->db));
        if ((r = kms_store_kek_check_make(s->base.kek, &check, &check_len)) < 0)
            return open_error(ret_error, r, path, "cannot make the KEK check value");
        rc = sqlite3_prepare_v2(s->db, "INSERT INTO meta (key, value) VALUES ('kek_check', ?1)", -1,
                                &st, NULL);
        if (rc == SQLITE_OK) {
            sqlite3_bind_blob(st, 1, check, (int)check_len, SQLITE_TRANSIENT);
            rc = sqlite3_step(st);
            rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
        }
        if (rc != SQLITE_OK)
            return open_error(ret_error, sql_error(s, rc, "schema"), path,
                              "cannot store the KEK check value: %s", sqlite3_errmsg(s->db));
    } else if (version == 0)
        return open_error(ret_error, -EBADMSG, path,
                          "not a kmsd database (it has tables but no schema_version)");
    else {
        rc = sqlite3_prepare_v2(s->db, "SELECT MAX(version), COUNT(*) FROM schema_version", -1, &st,
                                NULL);
        if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
            version = sqlite3_column_int64(st, 0);
            rc = sqlite3_column_int64(st, 1) == 1 ? SQLITE_OK : SQLITE_CORRUPT;
        }
        st = stmt_finalize(st);
        if (rc != SQLITE_OK)
            return open_error(ret_error, -EBADMSG, path, "unreadable schema version");
        if (version > KMS_STORE_SCHEMA_VERSION)
            return open_error(ret_error, -EPROTONOSUPPORT, path,
                              "schema version %" PRId64
                              " is newer than this kmsd supports (%d): upgrade kmsd",
                              version, KMS_STORE_SCHEMA_VERSION);
        if (version < 1)
            return open_error(ret_error, -EBADMSG, path, "invalid schema version %" PRId64,
                              version);
    }
    if ((r = txn_commit(&txn)) < 0)
        return open_error(ret_error, r, path, "cannot commit the schema: %s",
                          sqlite3_errmsg(s->db));
    return 0;
}

static int kek_check(SqliteStore *s, const char *path, char **ret_error) {
    _cleanup_(sqlite3_finalize_p) sqlite3_stmt *st = NULL;
    int rc, r;

    rc = sqlite3_prepare_v2(s->db, "SELECT value FROM meta WHERE key = 'kek_check'", -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        return open_error(ret_error, -EBADMSG, path,
                          "the database has no key-encryption key check value");
    if (rc != SQLITE_ROW)
        return open_error(ret_error, sql_error(s, rc, "kek check"), path,
                          "cannot read the KEK check value: %s", sqlite3_errmsg(s->db));
    r = kms_store_kek_check_verify(s->base.kek, sqlite3_column_blob(st, 0),
                                   (size_t)sqlite3_column_bytes(st, 0));
    if (r == -EKEYREJECTED)
        return open_error(ret_error, r, path,
                          "wrong key-encryption key: this database was created with another KEK "
                          "(check kek_file), nothing was read or written");
    if (r < 0)
        return open_error(ret_error, r, path, "cannot check the key-encryption key");
    return 0;
}

int kms_store_open_sqlite(const char *path, const Secret *kek, KmsStore **ret, char **ret_error) {
    _cleanup_(kms_store_freep) KmsStore *store = NULL;
    SqliteStore *s;
    int fd, rc, r;

    if (!path || !path[0] || !kek || !ret)
        return -EINVAL;
    if (secret_size(kek) != KMS_KEK_SIZE)
        return open_error(ret_error, -EINVAL, path, "the key-encryption key must be %u bytes",
                          KMS_KEK_SIZE);
    s = nt_calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->base.ops = &sqlite_ops;
    store = &s->base;
    if (pthread_mutex_init(&s->lock, NULL) != 0)
        return -ENOMEM;
    s->lock_init = true;
    if (pthread_mutex_init(&s->audit_lock, NULL) != 0)
        return -ENOMEM;
    if (pthread_cond_init(&s->audit_cond, NULL) != 0) {
        (void)pthread_mutex_destroy(&s->audit_lock);
        return -ENOMEM;
    }
    s->audit_sync_init = true;
    s->audit_tail = &s->audit_head;
    if ((r = kms_store_base_init(&s->base, &sqlite_ops, kek)) < 0)
        return open_error(ret_error, r, path, "cannot set up the key-encryption key");

    /* Create the file 0600 ourselves: SQLite would apply the umask (and gives the -wal and -shm
     * files the database's mode). */
    fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd >= 0)
        (void)close(fd);
    else if (errno != EEXIST) {
        r = negative_errno();
        return open_error(ret_error, r, path, "cannot create: %s", strerror(-r));
    }

    rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX, NULL);
    if (rc != SQLITE_OK)
        return open_error(ret_error, sql_error(s, rc, "open"), path, "cannot open: %s",
                          s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
    (void)sqlite3_extended_result_codes(s->db, 1);
    (void)sqlite3_busy_timeout(s->db, 5000);
    /* journal_mode is the first statement that reads the file: a file that is not a database
     * fails here. */
    rc = pragma(s, "PRAGMA journal_mode=WAL", "wal");
    if ((rc & 0xff) == SQLITE_NOTADB || (rc & 0xff) == SQLITE_CORRUPT)
        return open_error(ret_error, -EBADMSG, path, "not a kmsd database: %s",
                          sqlite3_errmsg(s->db));
    if (rc != SQLITE_OK)
        return open_error(ret_error, rc == SQLITE_ERROR ? -EIO : sql_error(s, rc, "wal"), path,
                          "cannot switch to WAL mode: %s", sqlite3_errmsg(s->db));
    if ((rc = pragma(s, "PRAGMA synchronous=FULL", NULL)) != SQLITE_OK ||
        (rc = pragma(s, "PRAGMA secure_delete=ON", "1")) != SQLITE_OK ||
        (rc = pragma(s, "PRAGMA foreign_keys=ON", NULL)) != SQLITE_OK ||
        (rc = pragma(s, "PRAGMA trusted_schema=OFF", NULL)) != SQLITE_OK ||
        (rc = pragma(s, "PRAGMA cell_size_check=ON", NULL)) != SQLITE_OK)
        return open_error(ret_error, -EIO, path, "cannot configure SQLite: %s",
                          sqlite3_errmsg(s->db));
    if ((r = schema_init(s, path, ret_error)) < 0)
        return r;
    if ((r = kek_check(s, path, ret_error)) < 0)
        return r;
    *ret = TAKE_PTR(store);
    return 0;
}
