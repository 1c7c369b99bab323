/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The contract between store.c (backend-neutral: argument checks, value encryption, the KEK
 * check) and a storage backend (store-sqlite.c; a PostgreSQL one can follow). Not for callers of
 * the store.
 *
 * A backend embeds `KmsStore base` as the first member of its own struct and fills base.ops.
 * store.c has checked every argument before an op is called (ids, metadata, values against the
 * type, events, limits), and passes the time to record. A backend must:
 *  - run each write as one transaction that also appends the audit row (kms_audit_row_build()
 *    with the effective event: secret_id = the id written, version = the version written,
 *    chained to the newest row read inside the same transaction, hashed with
 *    kms_audit_row_hash()); serialise writers (other processes included) so the chain stays
 *    linear;
 *  - store values only as kms_store_seal_value() output and read them with
 *    kms_store_open_value() (the same (id, version) as when sealed);
 *  - at open, keep a kms_store_kek_check_make() value and refuse a KEK that
 *    kms_store_kek_check_verify() rejects.
 */
#pragma once

#include "kmsd/store.h"

typedef struct KmsStoreOps {
    const char *name;
    /* Releases the backend's resources and frees the struct (base.kek is already freed). */
    void (*free)(KmsStore *s);
    int (*create)(KmsStore *s, const KmsSecretMeta *m, const char *attributes_json,
                  const char *policy_json, const Secret *value, const KmsAuditEvent *ev,
                  int64_t now, uint32_t *ret_version);
    int (*replace)(KmsStore *s, const char *id, const Secret *value, const KmsAuditEvent *ev,
                   int64_t now, uint32_t *ret_version);
    int (*set_policy)(KmsStore *s, const char *id, const char *policy_json, const KmsAuditEvent *ev,
                      int64_t now);
    int (*delete_secret)(KmsStore *s, const char *id, const KmsAuditEvent *ev, int64_t now);
    /* version 0 = latest; ret_meta and/or ret_value may be NULL. */
    int (*get)(KmsStore *s, const char *id, uint32_t version, KmsSecretMeta *ret_meta,
               Secret **ret_value);
    int (*list)(KmsStore *s, const char *after_id, size_t limit, KmsSecretMeta **ret,
                size_t *ret_n);
    int (*audit)(KmsStore *s, const KmsAuditEvent *ev, int64_t now);
    int (*audit_rows)(KmsStore *s, int64_t after_seq, size_t limit, json_t **ret_rows);
    int (*audit_head)(KmsStore *s, int64_t *ret_seq, char ret_hash_hex[65]);
} KmsStoreOps;

struct KmsStore {
    const KmsStoreOps *ops;
    Secret *kek;     /* KMS_KEK_SIZE bytes */
    Secret *mac_key; /* HKDF-SHA256(kek, info "nitride-kms-v1 metadata mac"), 32 bytes */
};

/* Fills base: ops, a copy of kek, the metadata MAC key. Returns 0, -EINVAL (kek not 32 bytes),
 * -ENOMEM, -EIO. On failure the caller frees what was set with kms_store_free() semantics. */
int kms_store_base_init(KmsStore *base, const KmsStoreOps *ops, const Secret *kek);

/* A secret's metadata row as stored (attributes and policy as their stored compact JSON text).
 * The row carries HMAC-SHA256 under mac_key over all of it, so that a database writer without the
 * KEK cannot relax a release policy, change a type or name, roll the version back or move a row
 * to another id unnoticed (restoring an older, complete row remains possible: no database
 * protects against its own rollback without external state). */
typedef struct KmsMetaRecord {
    const char *id, *name, *type;
    uint32_t version;
    const char *attributes, *policy;
    int64_t created, updated;
} KmsMetaRecord;
#define KMS_META_MAC_SIZE 32u
int kms_store_meta_mac(const KmsStore *s, const KmsMetaRecord *r,
                       uint8_t ret[static KMS_META_MAC_SIZE]);
/* 0, or -EBADMSG if mac is not the record's MAC; -ENOMEM, -EIO. */
int kms_store_meta_mac_verify(const KmsStore *s, const KmsMetaRecord *r, const void *mac,
                              size_t mac_len);

/* nonce (12) || ciphertext || tag (16) */
#define KMS_SEALED_OVERHEAD (12u + 16u)

/* Encrypts value for (id, version). Returns 0 and a malloc'd blob (not secret), -ENOMEM, -EIO. */
int kms_store_seal_value(const KmsStore *s, const char *id, uint32_t version, const Secret *value,
                         uint8_t **ret, size_t *ret_len);
/* Decrypts a blob sealed for (id, version) into a new Secret. -EBADMSG when it does not
 * authenticate (edited, truncated, sealed for another id/version, or another KEK). */
int kms_store_open_value(const KmsStore *s, const char *id, uint32_t version, const uint8_t *blob,
                         size_t len, Secret **ret);
/* The KEK check value (a fresh nonce each time), and its verification: 0, -EKEYREJECTED
 * (another KEK, or the check value was changed), -ENOMEM, -EIO. */
int kms_store_kek_check_make(const Secret *kek, uint8_t **ret, size_t *ret_len);
int kms_store_kek_check_verify(const Secret *kek, const uint8_t *blob, size_t len);
/* Parses a stored JSON object (attributes, policy): -EBADMSG if it is not one. */
int kms_store_json_object_parse(const char *text, json_t **ret);

/* The SQLite backend's count of group-commit transactions of audit rows (kms_store_audit), for
 * tests: fewer than the rows appended when concurrent release attempts were batched. */
uint64_t kms_store_sqlite_audit_commits(KmsStore *s);
