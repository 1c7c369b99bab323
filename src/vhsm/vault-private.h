/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Internals shared by the vault engine modules (vault.c, transfer.c, keystore.c). Not part of
 * the API: the daemon includes vault.h, transfer.h and keystore.h only.
 *
 * Locking: Vault.lock (rwlock) guards the key table (kept sorted by name) and every field of
 * VaultKey. KeyVersion is immutable after creation (but for its lock-free cache of cipher
 * contexts) and reference counted: an operation takes a reference under the read lock and uses
 * the version outside it; the last unref wipes and frees it.
 */
#pragma once

#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>

#include "vhsm/keystore.h"
#include "vhsm/transfer.h"
#include "vhsm/vault.h"

typedef enum VaultOrigin {
    VAULT_ORIGIN_GENERATED,
    VAULT_ORIGIN_IMPORTED,
    VAULT_ORIGIN_DERIVED,
    _VAULT_ORIGIN_MAX,
    _VAULT_ORIGIN_INVALID = -EINVAL,
} VaultOrigin;

#define VAULT_MAX_VERSIONS 65536u /* versions per key (rotations + 1) */
#define VAULT_THUMBPRINT_LEN 43   /* base64url of SHA-256, unpadded */

#define KEY_VERSION_GCM_CACHE 4 /* cached contexts per version: about one per worker */

typedef struct KeyVersion {
    atomic_uint refs;
    uint32_t number;
    uint64_t created;
    Secret *secret;  /* AES / HMAC raw key */
    EVP_PKEY *pkey;  /* asymmetric key pair */
    Secret *dormant; /* asymmetric material (keystore form) not loaded: the secure heap was full
                      * at start. pkey is NULL; operations fail; the keystore saves it as is. */
    /* Asymmetric: the keystore form of the key material, exported once (at the first save after
     * creation or load) and reused by every later save, so that a save under the table lock is
     * a copy rather than an OpenSSL export per version. Set once (atomic exchange); immutable. */
    _Atomic(Secret *) material;
    char thumbprint[VAULT_THUMBPRINT_LEN + 1]; /* asymmetric only, else "" */
    /* AES keys: AES-256-GCM contexts with this key set, reused by operations (only the IV is
     * set per operation): an operation takes one (atomic exchange), puts it back when done, and
     * key_version_unref frees (wipes) them with the version. HMAC keys: the same with HMAC
     * contexts (key and digest set; the state is reset per operation). */
    _Atomic(void *) gcm_cache[KEY_VERSION_GCM_CACHE];  /* EVP_CIPHER_CTX * */
    _Atomic(void *) hmac_cache[KEY_VERSION_GCM_CACHE]; /* EVP_MAC_CTX *, for HMAC keys */
    /* EC keys: EVP_PKEY_CTX initialised for raw ECDSA signing (vault_sign_raw), reused the same
     * way: a new context costs a provider fetch under a lock per request. */
    _Atomic(void *) sign_cache[KEY_VERSION_GCM_CACHE]; /* EVP_PKEY_CTX * */
} KeyVersion;

/* A stored opaque attribute (its value in the ordinary heap: attributes are not secret). */
typedef struct VaultKeyAttr {
    uint32_t type;
    uint8_t *value;
    size_t len;
} VaultKeyAttr;

typedef struct VaultKey {
    char *name;
    VaultKeyType type;
    uint32_t obj_flags;  /* VAULT_OBJ_* */
    VaultKeyAttr *attrs; /* sorted by type, unique */
    size_t n_attrs;
    VaultOrigin origin;
    VaultPolicy policy;
    VaultAcl acl;
    char *label;
    uint32_t latest;
    uint32_t min_version;
    KeyVersion **versions; /* versions[n - 1] for version n; NULL once retired */
    size_t n_versions_alloc;
    bool pending_delete; /* set while a delete is being persisted */
    /* A key change is invisible until durable (persist_locked() lets readers in while the file
     * is written; a change that then fails to persist must never have been used): */
    bool pending_insert;    /* a new key being persisted: saved, but not found by lookups */
    KeyVersion *pending_kv; /* a rotation or import being persisted: saved as version
                             * latest + pending_gap + 1 */
    uint32_t pending_gap;   /* absent versions saved before pending_kv (an import) */
    uint32_t n_absent;      /* NULL versions in [min_version, latest]: never delivered here (a
                             * KMS release that skipped versions); not charged, not usable */
    uint64_t session_conn;  /* a session object (VAULT_OBJ_SESSION): the connection it lives
                             * with (never saved, visible to that connection only); 0 otherwise */
} VaultKey;

/* Whether peer's connection may see k at all (a session object is its creator's alone). */
static inline bool vault_key_seen_by(const VaultKey *k, const VaultPeer *peer) {
    return k->session_conn == 0 || k->session_conn == peer->conn_id;
}

/* vault-object.c: checks value for a non-key object type and keeps it in kv (secret: the bytes;
 * a public key also as kv->pkey). 0, -EBADMSG, -E2BIG, -ENOMEM. */
int vault_object_value_load(VaultKeyType type, const uint8_t *value, size_t len, KeyVersion *kv);
/* The flags a non-key object of type keeps from the requested ones (0: its defaults). */
uint32_t vault_object_flags(VaultKeyType type, uint32_t flags);
/* The login rule of a new object (table lock held): 0, -EBADR, -EPERM (TRUSTED without the SO). */
int vault_object_login_check_locked(Vault *v, const VaultPeer *peer, const VaultKey *k);

/* Whether lookups, listing and counts see the key. */
static inline bool vault_key_live(const VaultKey *k) {
    return !k->pending_delete && !k->pending_insert;
}

typedef struct TransferKey TransferKey;
/* A spent transfer key, remembered for vault_transfer_key_known() (transfer.h). */
typedef struct TransferSpent {
    char kid[VAULT_THUMBPRINT_LEN + 1];
    time_t expires;
} TransferSpent;

typedef struct OwnerUsage {
    uid_t uid;
    VaultUsage u;
} OwnerUsage;

/* A PIN hash (vault-token.c): PBKDF2-HMAC-SHA256(pin, salt, iterations) -> 32 bytes. */
#define VAULT_PIN_SALT_SIZE 16u
#define VAULT_PIN_HASH_SIZE 32u
#define VAULT_PIN_ALG_NONE 0u
#define VAULT_PIN_ALG_PBKDF2_SHA256 1u
typedef struct VaultPinHash {
    uint8_t alg; /* VAULT_PIN_ALG_* */
    uint32_t iterations;
    uint8_t salt[VAULT_PIN_SALT_SIZE];
    uint8_t hash[VAULT_PIN_HASH_SIZE];
} VaultPinHash;

/* One token: the state of a uid namespace (persisted in the keystore, format 3). */
typedef struct VaultToken {
    uid_t uid;
    uint8_t label[VAULT_TOKEN_LABEL_MAX];
    uint8_t label_len;
    uint8_t serial[8];
    VaultPinHash so, user;
    uint32_t so_failures, user_failures;
    uint64_t generation; /* in memory: bumped at every PIN change (a check in flight retries) */
} VaultToken;

struct Vault {
    pthread_rwlock_t lock;
    /* Serialises mutations (taken before the write lock, held until the mutation is durable or
     * undone): a mutation drops the write lock while its keystore file is sealed and written, so
     * that other users' operations do not wait for the disk, and no other mutation can run
     * before its undo. Also taken by keystore_save(). */
    pthread_mutex_t mutate_lock;
    VaultKey **keys;
    size_t n_keys, n_keys_alloc;
    Keystore *keystore;

    atomic_llong attestation_time;
    atomic_llong attestation_expires; /* 0: none */
    time_t (*now)(void *userdata);
    void *now_userdata;

    VaultQuota quota;  /* normalised; guarded by lock */
    OwnerUsage *usage; /* sorted by uid; guarded by lock */
    size_t n_usage, n_usage_alloc;
    VaultUsage all, nonroot;
    size_t n_dormant;

    pthread_mutex_t transfer_lock;
    TransferKey **transfer;
    size_t n_transfer;
    TransferSpent transfer_spent[VAULT_TRANSFER_RECENT]; /* a ring, guarded by transfer_lock */
    size_t n_transfer_spent;                             /* spent in all (ring index) */
    const char *transfer_curve; /* "P-384" (default) or "P-256", set before use */

    /* Tokens (vault-token.c), sorted by uid; guarded by lock, changed under mutate_lock. */
    VaultToken *tokens;
    size_t n_tokens;
    uint32_t pin_max_tries, pin_iterations;
    /* Live login sessions (for tickets and revocation); guarded by session_lock. */
    pthread_mutex_t session_lock;
    VaultSession **sessions;
    size_t n_sessions;
};

/* vault-token.c: the token of uid (NULL: none); table lock held. */
VaultToken *vault_token_find_locked(Vault *v, uid_t uid);
/* Replaces the token table (keystore load; takes ownership of tokens); write lock held. */
void vault_tokens_set_locked(Vault *v, VaultToken *tokens, size_t n);
/* Token state for vault_free(). */
void vault_tokens_free(Vault *v);
/* The login rule with the table lock held: 0 or -EBADR. */
int vault_login_check_locked(Vault *v, const VaultPeer *peer);
/* Makes the table's state durable inside a mutation (vault.c persist_locked). */
int vault_persist_locked(Vault *v);

time_t vault_now(Vault *v);

KeyVersion *key_version_new(uint32_t number, uint64_t created);
KeyVersion *key_version_ref(KeyVersion *kv);
KeyVersion *key_version_unref(KeyVersion *kv);
DEFINE_TRIVIAL_CLEANUP_FUNC(KeyVersion *, key_version_unref);
/* Fills kv->thumbprint from kv->pkey. Returns 0 or negative errno. */
int key_version_set_thumbprint(KeyVersion *kv);

VaultKey *vault_key_free(VaultKey *k);
DEFINE_TRIVIAL_CLEANUP_FUNC(VaultKey *, vault_key_free);
/* A new key object with name, type, spec copies; no versions. peer gives the default ACL. */
int vault_key_new(const char *name, const VaultKeySpec *spec, const VaultPeer *peer,
                  VaultOrigin origin, VaultKey **ret);
/* Appends a version (takes ownership of kv; its number must be latest + 1). */
int vault_key_add_version(VaultKey *k, KeyVersion *kv);
/* Appends an absent version (a NULL slot: never delivered to this vault). 0, -E2BIG, -ENOMEM. */
int vault_key_add_absent(VaultKey *k);

/* Looks up a live key; table lock held. */
VaultKey *vault_find_locked(Vault *v, const char *name);
/* Inserts k (takes ownership on success) and persists; undoes on failure. Takes the write
 * lock. peer creates it: -ENOTUNIQ if k's namespace is not the peer's (root: any), -EEXIST if
 * the name is taken, -EDQUOT over the peer's quotas. */
int vault_insert_key(Vault *v, const VaultPeer *peer, VaultKey *k);
/* The checks of vault_insert_key() that need no table change, for a cheap early refusal
 * before expensive work (key generation, spending a transfer key). Read lock held. */
int vault_may_create_locked(Vault *v, const VaultPeer *peer, const char *full_name,
                            VaultKeyType type, VaultOrigin origin);
/* Imports a version from the KMS (transfer.c). *tmpl: a key object made by vault_key_new()
 * with the release's name (in kms/), type, policy, label and ACL, origin imported, no versions;
 * *kv: the key material, numbered with the release's version. A new name: the key is created
 * from *tmpl with that one version (versions before it absent). An existing key of the same
 * type with a lower latest version: *kv becomes its latest (versions in between absent), and
 * its policy, label and ACL become *tmpl's. Persisted before it is visible; on failure nothing
 * changed. Consumed pointers are set to NULL (the caller frees what is left). Returns 0,
 * -EEXIST (that version is the latest already: imported before), -ESTALE (older than the
 * latest), -EMEDIUMTYPE (the existing key has another type), -E2BIG (version above
 * VAULT_MAX_VERSIONS), -EDQUOT, -ENOTUNIQ (not in kms/ for a non-root peer...), -ENOMEM, or the
 * keystore's error. */
int vault_import_version(Vault *v, const VaultPeer *peer, VaultKey **tmpl, KeyVersion **kv);
/* The checks of vault_import_version() alone (read lock), before a transfer key is spent. */
int vault_import_check(Vault *v, const VaultPeer *peer, const char *name, VaultKeyType type,
                       uint32_t version);
/* Inserts without persisting or quota checks, charging k's owner (keystore load); write lock
 * held by caller or single-threaded. */
int vault_insert_key_locked(Vault *v, VaultKey *k);
/* Forgets every key without freeing them and clears the usage (undo of a failed load). */
void vault_clear_table_locked(Vault *v);

/* PKCS#8 PrivateKeyInfo DER (the JWE import payload) -> EVP_PKEY with strict type checks
 * (algorithm, curve, modulus size, e = 65537, no trailing bytes) and, if pairwise, OpenSSL's
 * private/public consistency check. */
int vault_pkey_from_pkcs8(VaultKeyType type, const uint8_t *der, size_t len, bool pairwise,
                          EVP_PKEY **ret);
/* Keystore material of an asymmetric key (its OpenSSL parameters; see vault.c): export into out
 * (NULL: only *ret_len; returns 0, -EIO, -ENOBUFS); import returns 0 or -EBADMSG. */
int vault_pkey_export_material(EVP_PKEY *pkey, VaultKeyType type, uint8_t *out, size_t out_size,
                               size_t *ret_len);
int vault_pkey_import_material(VaultKeyType type, const uint8_t *in, size_t len, EVP_PKEY **ret);
/* Raw symmetric key size of a type (32/32/48) or 0 for asymmetric types. */
size_t vault_key_type_secret_size(VaultKeyType t);

/* Public JWK of pkey (no private members), with kid; include_private adds "d" (transfer.c
 * only, for libjose: the caller frees it within the same function). */
int vault_pkey_to_jwk(EVP_PKEY *pkey, bool include_private, json_t **ret);

/* hard-wrap (vault-wrap.c and its helpers in vault.c). The reference an operation takes on a
 * key version (ACL, login rule, usage flags, attestation policy), with the key's VAULT_OBJ_*
 * flags at that moment (ret_flags may be NULL). */
int vault_acquire_ex(Vault *v, const VaultPeer *peer, const char *name, bool need_attest,
                     uint32_t usage, uint32_t version, VaultKeyType *ret_type, uint32_t *ret_flags,
                     KeyVersion **ret);
/* The cipher of an AES mode for a key of key_len bytes (16, 24, 32), or NULL. */
const EVP_CIPHER *vault_aes_cipher(VaultAesMode mode, size_t key_len);
/* Whether the peer's connection holds a live SO login (CKA_TRUSTED is the SO's to set). */
bool vault_peer_is_so(const VaultPeer *peer);

/* keystore.c: serialization of the table, lock held. */
int keystore_serialize_locked(Vault *v, Secret **ret);
int keystore_save_locked(Keystore *ks, Vault *v);
/* Seals content as the next generation and replaces the file, then the anchor; needs no table
 * lock (the caller holds mutate_lock). */
int keystore_write_content(Keystore *ks, const Secret *content);

/* transfer.c: frees all transfer keys (vault_free). */
void vault_transfer_free_all(Vault *v);

/* The latest version of name for an operation (vault.c's acquire(): resolution, ACL, the login
 * rule when need_attest, usage flags, attestation policy), referenced: key_version_unref(). */
int vault_acquire(Vault *v, const VaultPeer *peer, const char *name, bool need_attest,
                  uint32_t usage, VaultKeyType *ret_type, KeyVersion **ret);
