/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kmsd's storage interface: secrets (metadata, release policy, every value version) and the
 * audit chain, behind one backend-neutral API (a vtable; SQLite now, PostgreSQL can follow).
 *
 * Invariants, whatever the backend:
 *  - values are stored only as AES-256-GCM ciphertext under the key-encryption key (KEK, never
 *    stored), AAD "nitride-kms-v1|<id>|<version>", a fresh random 12-byte nonce per value; a value
 *    that does not decrypt (edited, or moved to another id or version) reads as -EBADMSG;
 *  - the store remembers an AES-GCM check value made with the KEK (AAD "nitride-kms-kek-check"),
 *    so a wrong KEK is refused at open (-EKEYREJECTED), before anything is written;
 *  - every write appends its audit row in the same transaction: both or neither;
 *  - all versions of a value are kept until the secret is deleted; a secret re-created under a
 *    deleted id continues its version numbers (no (id, version) pair is ever reused, and vHSMs
 *    that imported an older version accept the new one);
 *  - plaintext values exist only in Secret buffers.
 * All functions are thread-safe. Arguments are checked first: bad input changes nothing.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "core/macro.h"
#include "core/secret.h"
#include "kmsd/audit.h"

typedef struct KmsStore KmsStore; /* vtable inside; SQLite backend now */

typedef struct KmsSecretMeta {
    char *id;           /* [a-z0-9][a-z0-9._-]{0,63}, chosen by the admin */
    char *name;         /* vHSM name without the kms/ prefix */
    char *type;         /* aes256 hmac-sha256 hmac-sha384 ec-p256 ec-p384 rsa2048 rsa3072 rsa4096
                           ed25519 raw */
    uint32_t version;   /* latest */
    json_t *attributes; /* {"policy":"local"|"attested","max_age":N,"label":..,"acl":{...}} */
    json_t *policy;     /* release policy (src/kmsd/policy.h), validated before storing */
    int64_t created, updated;
} KmsSecretMeta;

/* Frees the members and zeroes *m; accepts NULL. */
void kms_secret_meta_clear(KmsSecretMeta *m);
/* Clears n metas and frees the array (from kms_store_list()); accepts NULL. */
void kms_secret_meta_array_free(KmsSecretMeta *a, size_t n);

#define KMS_KEK_SIZE 32u
#define KMS_SECRET_ID_MAX 64u
#define KMS_SECRET_NAME_MAX 128u /* as vhsmd's plain key names */
#define KMS_VALUE_MAX 8192u      /* bytes of a value (rsa4096 PKCS#8 is ~2.4 KiB) */
#define KMS_JSON_MAX 65536u      /* bytes of the compact attributes or policy JSON */
#define KMS_STORE_LIST_MAX 1000u /* rows per kms_store_list() / kms_store_audit_rows() call */
#define KMS_STORE_SCHEMA_VERSION 1

/* Loads the KEK from path: a regular file of mode 0600 or stricter (any group/other permission
 * bit is refused), owned by the caller or root, holding exactly 32 bytes, or 64 hex characters
 * with an optional final newline. Returns 0 and the key in a new Secret; -EPERM (mode or owner),
 * -EBADMSG (wrong length or bad hex), -EINVAL (not a regular file), -ENOMEM, or the open/read
 * errno; *ret_error (may be NULL) gets a malloc'd message on failure. */
int kms_kek_load(const char *path, Secret **ret, char **ret_error);

/* Validation shared by every backend (the store calls them too, so callers may skip them; the
 * service calls them first for a precise message). err gets the reason on failure. */
bool kms_secret_id_is_valid(const char *id);
bool kms_secret_name_is_valid(const char *name);
bool kms_secret_type_is_valid(const char *type);
/* The value fits the type: aes256 32 bytes, hmac-sha256 32, hmac-sha384 48, raw 1..4096, the
 * others a PKCS#8 PrivateKeyInfo DER of that key (curve, RSA size), nothing after it.
 * Returns 0, -EINVAL (unknown type), -EBADMSG (value does not fit). */
int kms_secret_value_check(const char *type, const Secret *value, char err[static 256]);
/* attributes for the vHSM: an object with "policy" ("local" or "attested"), "max_age" (attested
 * only and then required, 1..604800), "label" (optional, printable ASCII, <= 128 bytes), "acl"
 * (optional object of use_uid/use_gid/admin_uid/admin_gid: arrays of ids 0..4294967294, and
 * use_cgroup/admin_cgroup: arrays of absolute cgroup paths; <= 64 entries in all), nothing else.
 * Returns 0 or -EINVAL. */
int kms_secret_attributes_check(const json_t *attributes, char err[static 256]);
/* Everything a create needs: id, name, type, attributes (as above), policy (a JSON object of at
 * most KMS_JSON_MAX bytes; its language is checked by src/kmsd/policy.h, not here).
 * Returns 0 or -EINVAL. */
int kms_secret_meta_check(const KmsSecretMeta *m, char err[static 256]);

/* Opens (creating if missing, mode 0600) the SQLite store at path with kek (copied; the caller
 * keeps its own). Returns 0; -EKEYREJECTED (the database was made with another KEK),
 * -EPROTONOSUPPORT (schema newer than this program), -EBADMSG (not a kmsd database / corrupt),
 * -EINVAL (kek not 32 bytes), -ENOMEM, -EIO; *ret_error (may be NULL) gets a malloc'd message on
 * failure. */
int kms_store_open_sqlite(const char *path, const Secret *kek, KmsStore **ret, char **ret_error);
/* Closes the store and wipes its KEK copy; accepts NULL; returns NULL. */
KmsStore *kms_store_free(KmsStore *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(KmsStore *, kms_store_free);
/* The backend's name ("sqlite"). */
const char *kms_store_backend(const KmsStore *s);

/* Writes. Each appends ev to the audit chain in the same transaction (all or nothing); for these
 * the row's secret_id and version are the ones written (ev's are ignored). Errors common to all:
 * -EINVAL (bad arguments, event or metadata), -EBUSY (database locked past the busy timeout),
 * -ENOSPC, -EIO, -ENOMEM.
 * create: m's id, name, type, attributes and policy (version/created/updated ignored); the value
 * must fit the type. -EEXIST if the id exists. The version written is 1, or the deleted id's last
 * version + 1 (a re-created id continues its version numbers): kms_store_create_version() returns
 * it in *ret_version (if not NULL). */
int kms_store_create(KmsStore *s, const KmsSecretMeta *m, const Secret *value,
                     const KmsAuditEvent *ev);
int kms_store_create_version(KmsStore *s, const KmsSecretMeta *m, const Secret *value,
                             const KmsAuditEvent *ev, uint32_t *ret_version);
/* Adds a new version (latest + 1, returned in *ret_version if not NULL). -ENOENT, -EBADMSG
 * (value does not fit the secret's type), -EOVERFLOW (no version number left). */
int kms_store_replace(KmsStore *s, const char *id, const Secret *value, const KmsAuditEvent *ev,
                      uint32_t *ret_version);
/* Replaces the release policy (a JSON object). -ENOENT. */
int kms_store_set_policy(KmsStore *s, const char *id, const json_t *policy,
                         const KmsAuditEvent *ev);
/* Deletes the secret and every version of its value (secure_delete wipes them). -ENOENT. */
int kms_store_delete(KmsStore *s, const char *id, const KmsAuditEvent *ev);

/* Reads the metadata and, if ret_value is not NULL, the latest value. Returns 0, -ENOENT,
 * -EBADMSG (the stored value or metadata does not decrypt/parse: edited database), -EINVAL,
 * -ENOMEM, -EIO. ret_meta may be NULL (then ret_value must not be). */
int kms_store_get(KmsStore *s, const char *id, KmsSecretMeta *ret_meta, Secret **ret_value);
/* Reads one version's value. Same returns; -ENOENT also for a version that does not exist. */
int kms_store_get_version(KmsStore *s, const char *id, uint32_t version, Secret **ret_value);
/* Up to limit (0 or more than KMS_STORE_LIST_MAX: KMS_STORE_LIST_MAX) secrets with id > after_id
 * (NULL: from the start), by id. Returns 0 and a malloc'd array (free with
 * kms_secret_meta_array_free(); NULL when *ret_n is 0), -EBADMSG, -ENOMEM, -EIO. */
int kms_store_list(KmsStore *s, const char *after_id, size_t limit, KmsSecretMeta **ret,
                   size_t *ret_n);

/* Appends an event that changes no secret (release attempts, policy tests, denied admin
 * requests). Returns 0, -EINVAL, -EBUSY, -ENOSPC, -EIO, -ENOMEM. */
int kms_store_audit(KmsStore *s, const KmsAuditEvent *ev);
/* Up to limit rows (0 or too many: KMS_STORE_LIST_MAX) with seq > after_seq, oldest first, as
 * JSON objects (audit.h) in a new array. Returns 0, -EINVAL, -ENOMEM, -EIO. */
int kms_store_audit_rows(KmsStore *s, int64_t after_seq, size_t limit, json_t **ret_rows);
/* The newest row's seq and hash (0 and the genesis hash when there is none). Returns 0 or -EIO. */
int kms_store_audit_head(KmsStore *s, int64_t *ret_seq, char ret_hash_hex[65]);
