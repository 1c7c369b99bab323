/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The vault engine: named keys generated inside the process (or imported through the sealed
 * transfer path, transfer.h), their versions, ACLs and policies, and every operation on them.
 * No sockets here: vhsmd authenticates the peer (VaultPeer) and calls this API from many threads.
 *
 * Invariants:
 *   - Private and secret key material never leaves through any function of this API. Raw
 *     AES/HMAC keys live in core Secret buffers, private keys in EVP_PKEYs whose BIGNUMs come
 *     from OpenSSL's secure heap (vault_init()). Deleting a key or retiring a version wipes it
 *     as soon as the last in-flight operation on it ends.
 *   - Thread safety: one rwlock guards the key table; operations take a reference on the key
 *     version they use and run outside the lock, so a concurrent delete/retire is safe.
 *   - Every mutation (generate, import, derive, rotate, min-version, ACL, delete) is persisted
 *     through the attached keystore (vault_set_keystore()) before it becomes visible; if
 *     persisting fails, the mutation is undone and the error returned.
 *   - Access: each key has a USE list and an ADMIN list (uids, gids, cgroup path prefixes).
 *     Default for both: the creator's uid. Root (uid 0) may ADMINISTER every key (rotate,
 *     delete, change the ACL: it can recover) but gets USE rights only when listed (it cannot
 *     silently use keys; it must first change the ACL, which is a visible, persisted action).
 *
 * Errors (negative errno, core/errno-util.h): -ENOKEY unknown key or version, -EPERM the peer
 * is not allowed, -EKEYEXPIRED attestation required (policy `attested` and no fresh verdict),
 * -EOPNOTSUPP algorithm not valid for the key type, -EBADMSG malformed input,
 * -EKEYREJECTED authentication failed (bad tag, signature, MAC), -EINVAL bad arguments,
 * -EEXIST name taken (in the caller's own namespace), -ENOTUNIQ the name lies in a namespace
 * owned by someone else, -EDQUOT quota exceeded, -EKEYREVOKED version retired (below the
 * minimum), -ENOMEM.
 *
 * Names and namespaces: every key has a full name "<namespace>/<name>". A namespace is the
 * decimal uid of its owner ("1000/db-key") or "kms" (root's: keys released by the KMS). A plain
 * name ("db-key") given by a peer resolves inside the peer's own namespace; a key shared with
 * others is addressed by its full name. A peer creates keys only in its own namespace (root in
 * any uid's); whoever creates there is charged to the namespace owner's quota. "kms" is
 * import-only: its keys are created and get new versions only by a verified KMS release
 * (transfer.h, vault_transfer_import_release()); generating, deriving or rotating there is
 * refused even for root (-ENOTUNIQ for a new name, -EPERM for a rotation).
 */
#pragma once

#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "core/macro.h"
#include "core/secret.h"

typedef struct Vault Vault;
typedef struct Keystore Keystore;
typedef struct VaultSession VaultSession; /* a PIN login (vault_login); see "Tokens" below */

typedef enum VaultKeyType {
    VAULT_KEY_AES256,      /* "aes256" */
    VAULT_KEY_HMAC_SHA256, /* "hmac-sha256": 32-byte key */
    VAULT_KEY_HMAC_SHA384, /* "hmac-sha384": 48-byte key */
    VAULT_KEY_EC_P256,     /* "ec-p256" */
    VAULT_KEY_EC_P384,     /* "ec-p384" */
    VAULT_KEY_ED25519,     /* "ed25519" */
    VAULT_KEY_RSA2048,     /* "rsa2048" */
    VAULT_KEY_RSA3072,     /* "rsa3072" */
    VAULT_KEY_RSA4096,     /* "rsa4096" */
    VAULT_KEY_RAW,         /* "raw": opaque bytes (1..VAULT_RAW_MAX), e.g. a LUKS key or a
                            * passphrase; imported only (never generated or rotated), no
                            * cryptographic operation */
    /* PKCS#11 objects that are not keys (issue 12, vault-object.c): a value stored with the
     * object's attributes, created only from a value (vault_object_create), never rotated. */
    VAULT_KEY_DATA,   /* "data": CKO_DATA, 1..VAULT_DATA_MAX bytes */
    VAULT_KEY_CERT,   /* "cert": CKO_CERTIFICATE X.509, DER 1..VAULT_CERT_MAX bytes */
    VAULT_KEY_PUBLIC, /* "public": CKO_PUBLIC_KEY alone, SubjectPublicKeyInfo DER (EC P-256/P-384,
                       * Ed25519, RSA 2048..4096) */
    VAULT_KEY_AES128, /* "aes128" (PKCS#11 AES keys of 16 and 24 bytes) */
    VAULT_KEY_AES192, /* "aes192" */
    VAULT_KEY_GENERIC_SECRET, /* "generic-secret": 1..VAULT_GENERIC_SECRET_MAX bytes (PKCS#11
                               * CKK_GENERIC_SECRET of lengths other than the HMAC keys' 32
                               * and 48); unwrapped or imported only, no operation of its own:
                               * wrapped, or used as the value of another key */
    _VAULT_KEY_TYPE_MAX,
    _VAULT_KEY_TYPE_INVALID = -EINVAL,
} VaultKeyType;

/* Algorithms of vault_encrypt/decrypt/sign/verify. Which apply to which key type:
 *   AES256:        AES256_GCM, AES256_KW (RFC 3394), AES256_KWP (RFC 5649)
 *   HMAC_*:        HMAC (the key type fixes the digest)
 *   EC_P256/P384:  ECDSA (P-256 with SHA-256, P-384 with SHA-384)
 *   ED25519:       ED25519 (pure; no pre-hashed variant)
 *   RSA*:          RSA_PSS_SHA256/384 (salt = digest length), RSA_PKCS1_SHA256/384,
 *                  RSA_OAEP_SHA256, RSA_OAEP_SHA1 (MGF1 with the same digest, empty label) */
typedef enum VaultAlg {
    VAULT_ALG_AES256_GCM = 1,
    VAULT_ALG_AES256_KW,
    VAULT_ALG_AES256_KWP,
    VAULT_ALG_HMAC,
    VAULT_ALG_ECDSA,
    VAULT_ALG_ED25519,
    VAULT_ALG_RSA_PSS_SHA256,
    VAULT_ALG_RSA_PSS_SHA384,
    VAULT_ALG_RSA_PKCS1_SHA256,
    VAULT_ALG_RSA_PKCS1_SHA384,
    VAULT_ALG_RSA_OAEP_SHA256,
    VAULT_ALG_RSA_OAEP_SHA1,
    _VAULT_ALG_MAX,
    _VAULT_ALG_INVALID = -EINVAL,
} VaultAlg;

typedef enum VaultPolicyKind {
    VAULT_POLICY_LOCAL,    /* "local": the ACL suffices */
    VAULT_POLICY_ATTESTED, /* "attested": also needs an attestation verdict younger than max_age */
    _VAULT_POLICY_MAX,
    _VAULT_POLICY_INVALID = -EINVAL,
} VaultPolicyKind;

typedef struct VaultPolicy {
    VaultPolicyKind kind;
    uint32_t max_age_sec; /* ATTESTED only: 1..VAULT_MAX_ATTESTATION_AGE */
} VaultPolicy;

#define VAULT_MAX_ATTESTATION_AGE (7u * 24u * 3600u)
#define VAULT_RAW_MAX 4096u          /* bytes of a raw key */
#define VAULT_DATA_MAX 4096u         /* bytes of a data object's value */
#define VAULT_CERT_MAX 8192u         /* bytes of a certificate (DER) */
#define VAULT_PUBLIC_MAX 2048u       /* bytes of a public key object's SubjectPublicKeyInfo */
#define VAULT_GENERIC_SECRET_MAX 64u /* bytes of a generic-secret key */

/* The authenticated peer, as established by the daemon (SO_PEERCRED, /proc/PID/cgroup).
 * cgroup may be NULL (unknown): then no cgroup ACL entry can match. */
typedef struct VaultPeer {
    uid_t uid;
    gid_t gid;           /* primary gid */
    const gid_t *groups; /* supplementary gids (may be NULL) */
    size_t n_groups;
    pid_t pid;
    const char *cgroup;    /* e.g. "/system.slice/app.service" (cgroup v2 path) */
    VaultSession *session; /* the connection's login (vault_login), or NULL */
    uint64_t conn_id;      /* the connection (session objects are bound to it); 0 = none */
} VaultPeer;

/* One access list. A peer matches if its uid is listed, or its primary gid or one of its
 * supplementary gids is listed, or its cgroup
 * equals a listed prefix or lies below it ("/a/b" matches "/a/b" and "/a/b/c", not "/a/bc"). */
typedef struct VaultAclList {
    uid_t *uids;
    size_t n_uids;
    gid_t *gids;
    size_t n_gids;
    char **cgroups;
    size_t n_cgroups;
} VaultAclList;

typedef struct VaultAcl {
    VaultAclList use;   /* encrypt, decrypt, sign, verify, wrap, derive, export public */
    VaultAclList admin; /* rotate, set min version, set ACL, delete, describe */
} VaultAcl;

#define VAULT_ACL_MAX_ENTRIES 64 /* per list and kind */
#define VAULT_CGROUP_MAX 512     /* bytes of one cgroup prefix, NUL included */
/* Caps on one key's whole ACL (both lists, all kinds), enforced when a key is created or its ACL
 * set (a describe stays small, a KEY_LIST page holds many keys, the keystore stays bounded):
 * entries in all, and bytes of cgroup prefixes in all. A non-root peer may not list the cgroup
 * root "/" (every process on the machine) in either list. */
#define VAULT_ACL_MAX_TOTAL 64
#define VAULT_ACL_MAX_CGROUP_BYTES 2048
/* The whole-ACL caps and the cgroup-root rule for an ACL that peer sets: 0, -E2BIG, -EPERM. */
int vault_acl_check_caps(const VaultAcl *acl, const VaultPeer *peer);

/* Frees the arrays of an ACL and zeroes it; accepts a zeroed ACL. */
void vault_acl_done(VaultAcl *acl);
/* Append one entry. Return 0, -E2BIG (list full), -EINVAL (cgroup not absolute, too long, with
 * "..", or empty), -ENOMEM. */
int vault_acl_list_add_uid(VaultAclList *l, uid_t uid);
int vault_acl_list_add_gid(VaultAclList *l, gid_t gid);
int vault_acl_list_add_cgroup(VaultAclList *l, const char *prefix);
/* Deep copy into *ret (written only on success). Returns 0 or -ENOMEM. */
int vault_acl_copy(const VaultAcl *acl, VaultAcl *ret);
/* JSON form {"use":{"uids":[..],"gids":[..],"cgroups":[..]},"admin":{...}} (as in describe).
 * from_json: returns 0, -EBADMSG on a malformed object, or the add_* errors. */
json_t *vault_acl_to_json(const VaultAcl *acl);
int vault_acl_from_json(const json_t *j, VaultAcl *ret);

typedef enum VaultRight {
    VAULT_RIGHT_USE,
    VAULT_RIGHT_ADMIN,
    _VAULT_RIGHT_MAX,
    _VAULT_RIGHT_INVALID = -EINVAL,
} VaultRight;

/* The one access decision: true if peer may exercise right under acl (root rule included:
 * uid 0 always has ADMIN, never implicit USE). */
bool vault_acl_check(const VaultAcl *acl, const VaultPeer *peer, VaultRight right);

const char *vault_key_type_to_string(VaultKeyType t);
VaultKeyType vault_key_type_from_string(const char *s);
const char *vault_alg_to_string(VaultAlg a); /* "aes256-gcm", "aes256-kw", "aes256-kwp", "hmac",
                                                 "ecdsa", "ed25519", "rsa-pss-sha256", ... */
VaultAlg vault_alg_from_string(const char *s);
const char *vault_policy_kind_to_string(VaultPolicyKind k); /* "local", "attested" */
VaultPolicyKind vault_policy_kind_from_string(const char *s);
bool vault_key_type_is_asymmetric(VaultKeyType t);

/* Valid key names: a plain name (1..128 chars of [A-Za-z0-9._:@-], not starting with '.' or
 * '-') or a full name "<namespace>/<plain name>" (namespace: "kms" or a uid in canonical
 * decimal, 0..4294967294). */
bool vault_key_name_is_valid(const char *name);
#define VAULT_PLAIN_NAME_MAX 128u
#define VAULT_FULL_NAME_MAX (10u + 1u + VAULT_PLAIN_NAME_MAX) /* bytes, excluding NUL */
#define VAULT_NS_KMS "kms"
/* Resolves name (plain or full) for peer into its full name. Returns 0 or -EINVAL. */
int vault_name_resolve(const VaultPeer *peer, const char *name,
                       char ret[static VAULT_FULL_NAME_MAX + 1]);
/* The uid owning the namespace of a full name ("kms" is root's). Returns 0 or -EINVAL. */
int vault_name_owner(const char *full_name, uid_t *ret);

/* Quotas (docs/vault.md "Quotas"). Every key and retained version is charged, in bytes, to the
 * uid owning its namespace: a fixed cost per version by key type (an upper bound of the locked
 * memory it pins: OpenSSL secure heap, packed locked pages, heap under mlockall, and at least
 * twice its keystore bytes) plus its metadata (name, label, ACL). Non-root peers are held to
 * the per-uid limits and, all non-root owners together, to total_bytes; root (the agent) may
 * also use root_reserve beyond it. A mutation over a limit fails with -EDQUOT and changes
 * nothing. Keys loaded from the keystore are charged without limits (a restart never loses a
 * key). 0 in a field = its default. */
typedef struct VaultQuota {
    uint32_t max_keys;     /* per non-root uid (default 1024) */
    uint32_t max_versions; /* per non-root uid, retained versions (default 4096) */
    uint64_t max_bytes;    /* per non-root uid (default 4 MiB) */
    uint64_t total_bytes;  /* all non-root uids together (default 64 MiB) */
    uint64_t root_reserve; /* beyond total_bytes, root only (default 32 MiB) */
} VaultQuota;
typedef struct VaultUsage {
    uint32_t keys, versions;
    uint64_t bytes;
} VaultUsage;
/* Fills defaults into q's zero fields; -EINVAL if a limit is inconsistent (max_bytes >
 * total_bytes, or the keystore bound (total_bytes + root_reserve) / 2 over its file cap). */
int vault_quota_normalize(VaultQuota *q);
/* The secure heap size (power of two) the quotas need: a quarter of every chargeable byte (the
 * cost table charges at least four times a version's secure-heap bytes) plus headroom for
 * operations in flight. */
size_t vault_quota_secure_heap_size(const VaultQuota *q);
/* Sets the limits (normalised copy). Returns 0 or -EINVAL. */
int vault_set_quota(Vault *v, const VaultQuota *q);
void vault_get_quota(Vault *v, VaultQuota *ret);
/* What uid's namespace is charged now (zeroes if nothing), and all owners together. */
void vault_usage(Vault *v, uid_t uid, VaultUsage *ret);
void vault_usage_total(Vault *v, VaultUsage *ret_all, VaultUsage *ret_nonroot);
/* Bytes charged per version of a key type (the cost table). */
uint64_t vault_version_cost(VaultKeyType t);
/* Key versions that could not be loaded into the secure heap at start (kept as sealed
 * material, saved unchanged, unusable until a restart with a larger heap). */
size_t vault_dormant_count(Vault *v);
/* Whether one more version of type t fits in the secure heap set up by vault_init() while
 * leaving the operations headroom (a quarter of the heap, at most 8 MiB) free. */
bool vault_secure_heap_has_room(VaultKeyType t);

/* Process-wide set-up, call once from main() before threads start: OpenSSL secure heap
 * (secure_heap_size bytes, power of two; 0 = 2 MiB, so private BIGNUMs live in mlocked,
 * MADV_DONTDUMP, guard-paged memory) and a zeroising jansson allocator (json_set_alloc_funcs),
 * so that libjose's private JWKs and CEKs are wiped when freed.
 * Returns 0, or -ENOMEM if the secure heap cannot be created (e.g. RLIMIT_MEMLOCK too low:
 * the message names the limit). Idempotent. */
int vault_init(size_t secure_heap_size);

/* A new, empty vault. Returns 0 or -ENOMEM. Free with vault_free() (wipes all keys). */
int vault_new(Vault **ret);
Vault *vault_free(Vault *v);
DEFINE_TRIVIAL_CLEANUP_FUNC(Vault *, vault_free);

/* Attaches a keystore (borrowed; must outlive the vault or be detached with NULL). From now on
 * every mutation is saved through keystore_save() before it is acknowledged. */
void vault_set_keystore(Vault *v, Keystore *ks);

/* Records the latest attestation verdict (CLOCK_REALTIME seconds): when it was made (the
 * token's iat) and until when it holds (the token's exp; 0 = no expiry, tests only). 0 clears it
 * (no verdict). Keys with an `attested` policy are usable while
 * verdict_time <= now < min(expires, verdict_time + max_age). */
void vault_set_attestation(Vault *v, time_t verdict_time, time_t expires);
/* Tests only: replaces the clock (CLOCK_REALTIME seconds). NULL restores time(NULL). */
void vault_set_clock(Vault *v, time_t (*now)(void *userdata), void *userdata);

/* What to create. acl NULL = the default (the creator's uid in both lists). label optional
 * (<= 128 printable chars), shown by describe. */
/* Object attributes (issue 12, the PKCS#11 module; docs/vault.md "Object attributes"): policy
 * flags the vault enforces, and opaque attributes it stores for the module (CKA_LABEL, CKA_ID,
 * ...). Same bit values as libvhsm's VHSM_OBJ_*. */
#define VAULT_OBJ_SIGN (1u << 0)
#define VAULT_OBJ_VERIFY (1u << 1)
#define VAULT_OBJ_ENCRYPT (1u << 2)
#define VAULT_OBJ_DECRYPT (1u << 3)
#define VAULT_OBJ_WRAP (1u << 4)
#define VAULT_OBJ_UNWRAP (1u << 5)
#define VAULT_OBJ_DERIVE (1u << 6)
#define VAULT_OBJ_EXTRACTABLE (1u << 7)
#define VAULT_OBJ_SENSITIVE (1u << 8)
#define VAULT_OBJ_TRUSTED (1u << 9)
#define VAULT_OBJ_WRAP_WITH_TRUSTED (1u << 10)
#define VAULT_OBJ_PRIVATE (1u << 11)
#define VAULT_OBJ_MODIFIABLE (1u << 12)
#define VAULT_OBJ_COPYABLE (1u << 13)
#define VAULT_OBJ_DESTROYABLE (1u << 14)
#define VAULT_OBJ_SESSION (1u << 15) /* CKA_TOKEN false: bound to the creating connection */
#define VAULT_OBJ_LOCAL (1u << 16)   /* read-only, set by the vault */
#define VAULT_OBJ_ALWAYS_SENSITIVE (1u << 17)
#define VAULT_OBJ_NEVER_EXTRACTABLE (1u << 18)
/* Usage history (read-only, kept by the vault, persisted, inherited by copies): the key has had
 * ENCRYPT or DECRYPT (a data cipher), WRAP or UNWRAP (a key wrapper) at some time. A key that was
 * ever a data cipher never wraps and, under --no-plaintext-import, never unwraps: otherwise
 * AES-CBC with a zero IV would undo or forge RFC 3394 wrapping (the PKCS#11 wrap/decrypt attack),
 * revealing a sensitive key or importing a chosen value. */
#define VAULT_OBJ_HAD_CIPHER (1u << 19)
#define VAULT_OBJ_HAD_WRAPPER (1u << 20)
#define VAULT_OBJ_USAGE                                                                            \
    (VAULT_OBJ_SIGN | VAULT_OBJ_VERIFY | VAULT_OBJ_ENCRYPT | VAULT_OBJ_DECRYPT | VAULT_OBJ_WRAP |  \
     VAULT_OBJ_UNWRAP | VAULT_OBJ_DERIVE)
#define VAULT_OBJ_SETTABLE ((1u << 16) - 1u) /* bits a creator may choose (SESSION included) */
#define VAULT_OBJ_READONLY                                                                         \
    (VAULT_OBJ_LOCAL | VAULT_OBJ_ALWAYS_SENSITIVE | VAULT_OBJ_NEVER_EXTRACTABLE |                  \
     VAULT_OBJ_HAD_CIPHER | VAULT_OBJ_HAD_WRAPPER)
/* flags with the usage history of their usage bits added */
static inline uint32_t vault_obj_flags_history(uint32_t f) {
    if (f & (VAULT_OBJ_ENCRYPT | VAULT_OBJ_DECRYPT))
        f |= VAULT_OBJ_HAD_CIPHER;
    if (f & (VAULT_OBJ_WRAP | VAULT_OBJ_UNWRAP))
        f |= VAULT_OBJ_HAD_WRAPPER;
    return f;
}
/* Default for a key created without flags (and for keys from before attributes): every usage,
 * sensitive, private, modifiable, destroyable; not extractable. */
#define VAULT_OBJ_DEFAULT                                                                          \
    (VAULT_OBJ_USAGE | VAULT_OBJ_SENSITIVE | VAULT_OBJ_PRIVATE | VAULT_OBJ_MODIFIABLE |            \
     VAULT_OBJ_DESTROYABLE)

typedef struct VaultAttr {
    uint32_t type;        /* a CKA_* number, stored verbatim */
    const uint8_t *value; /* len bytes (may be NULL when len is 0) */
    size_t len;
} VaultAttr;
#define VAULT_ATTR_MAX 32          /* per object */
#define VAULT_ATTR_VALUE_MAX 1024u /* bytes of one value */
#define VAULT_ATTR_TOTAL_MAX 4096u /* bytes of all values of an object */
/* Whether the vault refuses a type as an opaque attribute: the ones it owns itself (CKA_CLASS,
 * CKA_TOKEN, CKA_PRIVATE, CKA_VALUE, CKA_KEY_TYPE, the flag attributes, key components, ...). */
bool vault_attr_type_reserved(uint32_t type);

typedef struct VaultKeySpec {
    VaultKeyType type;
    const VaultAcl *acl;
    VaultPolicy policy;
    const char *label;
    uint32_t obj_flags; /* VAULT_OBJ_* settable bits; 0 = VAULT_OBJ_DEFAULT */
    const VaultAttr *attrs;
    size_t n_attrs;
} VaultKeySpec;

/* Generates key `name` (version 1) inside the vault. Any peer that reached the daemon may
 * create keys; the daemon decides who reaches it. Returns 0, -EINVAL (bad name, type, policy,
 * label or ACL), -EEXIST, -ENOMEM, -EIO (OpenSSL), or the keystore's error (nothing created). */
int vault_key_generate(Vault *v, const VaultPeer *peer, const char *name, const VaultKeySpec *spec);
/* Creates a key from plaintext material (value: raw secret bytes of the type's exact size, or a
 * PKCS#8 PrivateKeyInfo DER for EC, Ed25519 and RSA types), origin imported: its object lacks
 * LOCAL, ALWAYS_SENSITIVE and NEVER_EXTRACTABLE. The caller wipes value. Returns 0, the errors of
 * vault_key_generate(), -EBADMSG (wrong size, bad PKCS#8 or another key type), -EOPNOTSUPP (raw).
 */
int vault_key_import_plain(Vault *v, const VaultPeer *peer, const char *name,
                           const VaultKeySpec *spec, const uint8_t *value, size_t len);

/* ADMIN operations. Return 0, -ENOKEY, -EPERM, -EINVAL, or the keystore's error (then nothing
 * changed). rotate writes the new version number to *ret_version (may be NULL); it generates
 * the new version outside the lock and returns -EAGAIN if another rotation won the race.
 * set_min_version(n): decrypt/verify refuse versions < n and those versions are wiped
 * (irreversible); n must be <= the latest version and >= the current minimum (-EINVAL). */
int vault_key_rotate(Vault *v, const VaultPeer *peer, const char *name, uint32_t *ret_version);
int vault_key_set_min_version(Vault *v, const VaultPeer *peer, const char *name,
                              uint32_t min_version);
int vault_key_set_acl(Vault *v, const VaultPeer *peer, const char *name, const VaultAcl *acl);
int vault_key_delete(Vault *v, const VaultPeer *peer, const char *name);

/* PKCS#11 objects that are not keys (vault-object.c; docs/vault.md "Object attributes").
 * vault_object_create: spec->type VAULT_KEY_DATA (any bytes), VAULT_KEY_CERT (one X.509
 * certificate, DER, parsed by OpenSSL, nothing trailing) or VAULT_KEY_PUBLIC (a
 * SubjectPublicKeyInfo of EC P-256/P-384, Ed25519 or RSA 2048..4096 with e = 65537, canonical DER).
 * Flags: only PRIVATE, MODIFIABLE, COPYABLE, DESTROYABLE, SESSION and (cert and public key)
 * TRUSTED; a public key also VERIFY, ENCRYPT, WRAP, DERIVE (others are dropped); 0 = modifiable,
 * copyable, destroyable (and verify/encrypt for a public key). TRUSTED needs the SO logged in on
 * the connection (-EPERM otherwise); other objects need the user logged in when the token has a
 * user PIN, except that the SO may create objects that are not PRIVATE. Returns 0, -EBADMSG (the
 * value is not of the type, or empty), -E2BIG (over VAULT_DATA_MAX / _CERT_MAX / _PUBLIC_MAX),
 * the errors of vault_key_generate(), -EBADR, -EPERM. */
int vault_object_create(Vault *v, const VaultPeer *peer, const char *name, const VaultKeySpec *spec,
                        const uint8_t *value, size_t len);
/* Whether a type is one of the non-key object types above. */
bool vault_key_type_is_object(VaultKeyType t);
/* C_CopyObject: a new object new_name (in the caller's namespace) with src's type, value or key
 * versions (shared, immutable), policy, label, ACL and origin flags; flags_set / flags_clear and
 * attrs as for vault_key_set_object, except that PRIVATE, MODIFIABLE, DESTROYABLE, COPYABLE and
 * SESSION may change too (SENSITIVE only on, EXTRACTABLE only off; TRUSTED never). src must be
 * COPYABLE (-EPERM). Returns 0, -ENOKEY, -EPERM, -EINVAL, -EEXIST, -EDQUOT, -EBADR, -ENOMEM. */
int vault_object_copy(Vault *v, const VaultPeer *peer, const char *name, const char *new_name,
                      uint32_t flags_set, uint32_t flags_clear, const VaultAttr *attrs,
                      size_t n_attrs);
/* Destroys the session objects of connection conn_id (it closed). */
void vault_session_objects_drop(Vault *v, uint64_t conn_id);
/* Number of session objects in the vault (tests). */
size_t vault_session_object_count(Vault *v);

/* Describe (USE or ADMIN right): a new JSON object
 *   {"name", "type", "label"?, "policy":{"kind","max_age"?}, "origin":"generated"|"imported"|
 *    "derived", "extractable":false, "latest_version", "min_version",
 *    "versions":[{"version","created"(unix s),"fingerprint"?}], "acl":{...},
 *    "fingerprint"? (RFC 7638 SHA-256 thumbprint, base64url, of the latest public key)}
 * Returns 0, -ENOKEY, -EPERM, -ENOMEM. */
int vault_key_describe(Vault *v, const VaultPeer *peer, const char *name, json_t **ret);
/* The key's type, with the same checks as vault_key_describe() (USE or ADMIN right) but without
 * building the description (which computes a thumbprint): for resolving a request's default
 * algorithm on every operation. Returns 0, -ENOKEY, -EPERM, -EINVAL. */
int vault_key_type(Vault *v, const VaultPeer *peer, const char *name, VaultKeyType *ret);
/* Whether a key of this full name exists in the KMS namespace (kms/...), whoever may use it: the
 * agent channel parks requests of any uid for an absent kms/ key (docs/protocol.md "Agent
 * channel"). false for names outside kms/. */
bool vault_kms_key_exists(Vault *v, const char *full_name);
/* Names of the keys the peer may use or administer (root: all), sorted, as a JSON array of
 * strings. Returns 0 or -ENOMEM. */
int vault_key_list(Vault *v, const VaultPeer *peer, json_t **ret);
/* One page of that list: at most `limit` summaries (describe without the versions array) of
 * keys whose full name sorts after `after` (NULL or "": from the start), the page ending early
 * once its JSON reaches max_bytes. *ret is {"keys":[...], "next": name or null}: pass "next"
 * as `after` for the following page. Returns 0, -EINVAL, -ENOMEM. */
int vault_key_list_page(Vault *v, const VaultPeer *peer, const char *after, size_t limit,
                        size_t max_bytes, json_t **ret);

typedef enum VaultPubFormat {
    VAULT_PUB_PEM, /* SubjectPublicKeyInfo PEM */
    VAULT_PUB_JWK, /* JWK (public members only) with "kid" = RFC 7638 thumbprint */
    _VAULT_PUB_FORMAT_MAX,
    _VAULT_PUB_FORMAT_INVALID = -EINVAL,
} VaultPubFormat;

/* Public key export (USE right) of version (0 = latest) as a NUL-terminated malloc'd string.
 * Returns 0, -ENOKEY (no such key or version), -EPERM, -EKEYEXPIRED, -EOPNOTSUPP (symmetric). */
int vault_key_export_public(Vault *v, const VaultPeer *peer, const char *name, uint32_t version,
                            VaultPubFormat format, char **ret);

/* Flags of VaultOp. */
#define VAULT_OP_RAW (1u << 0)        /* bare output/input, no vault envelope (see below) */
#define VAULT_OP_PREHASHED (1u << 1)  /* sign/verify input is a digest of the algorithm's hash */
#define VAULT_OP_SIG_RAW_RS (1u << 2) /* ECDSA: r||s (fixed size each) instead of DER */

typedef struct VaultOp {
    VaultAlg alg;
    unsigned flags;
    uint32_t version;   /* RAW input to decrypt/verify: the key version (0 = latest) */
    const uint8_t *aad; /* AES256_GCM only; may be NULL */
    size_t aad_len;
} VaultOp;

/* Envelope ("vault format", docs/vault.md): every ciphertext and signature the vault makes
 * starts with a 12-byte header, so it names its key version:
 *   "NTVE" | u8 format (1) | u8 alg (VaultAlg) | u16 reserved (0) | u32 key version (BE)
 * followed by: AES256_GCM: iv[12] | tag[16] | ciphertext (GCM AAD = header | op->aad);
 * every other algorithm: the algorithm's own output (wrapped key, OAEP ciphertext, signature,
 * MAC). VAULT_OP_RAW drops the header (not allowed with AES256_GCM). */
#define VAULT_ENVELOPE_HEADER_SIZE 12u
#define VAULT_GCM_IV_SIZE 12u
#define VAULT_GCM_TAG_SIZE 16u
#define VAULT_MAX_INPUT (16u * 1024u * 1024u)

/* Attestation (policy `attested`) applies to operations that use secret or private material:
 * symmetric encrypt/decrypt, sign, HMAC verify, private-key decrypt, derive. Public-key
 * operations (RSA-OAEP encrypt, signature verify, export) need only the ACL.
 *
 * Encrypt (USE right) with the latest version: AES256_GCM, AES256_KW (in: multiple of 8,
 * >= 16 bytes), AES256_KWP (>= 1 byte), RSA_OAEP_* (public-key encryption, in <= the OAEP
 * limit). *ret_out is malloc'd. Returns 0, -ENOKEY, -EPERM, -EKEYEXPIRED, -EOPNOTSUPP,
 * -EINVAL (bad length or flags), -ENOMEM, -EIO. */
/* Whether AES-GCM and HMAC contexts (holding key schedules, in OpenSSL's ordinary heap) are
 * cached per key version between operations (default: yes). vhsmd turns it off when it runs
 * without locked memory. Process-wide; call before serving. */
void vault_set_context_cache(bool on);

int vault_encrypt(Vault *v, const VaultPeer *peer, const char *name, const VaultOp *op,
                  const uint8_t *in, size_t in_len, uint8_t **ret_out, size_t *ret_out_len);
/* The same, writing the output to out and its length to *ret_len: for a caller whose buffer is
 * locked memory already (vhsmd's reply buffer). out_size >= VAULT_ENCRYPT_MAX(in_len), else
 * -EINVAL. AES-256-GCM is encrypted in place (the hot path); other algorithms are copied. */
#define VAULT_GCM_ENVELOPE_SIZE(in_len)                                                            \
    (VAULT_ENVELOPE_HEADER_SIZE + VAULT_GCM_IV_SIZE + VAULT_GCM_TAG_SIZE + (in_len))
#define VAULT_ENCRYPT_MAX(in_len) (VAULT_ENVELOPE_HEADER_SIZE + 32u + MAX((size_t)(in_len), 512u))
int vault_encrypt_into(Vault *v, const VaultPeer *peer, const char *name, const VaultOp *op,
                       const uint8_t *in, size_t in_len, uint8_t *out, size_t out_size,
                       size_t *ret_len);
/* Decrypt / unwrap (USE right) with the version named by the envelope (or op->version with
 * VAULT_OP_RAW), which must be retained (>= min version): else -ENOKEY. Plaintext in a Secret.
 * Returns 0, -EBADMSG (malformed envelope, alg mismatch), -EKEYREJECTED (authentication or
 * integrity check failed), or the encrypt errors. */
int vault_decrypt(Vault *v, const VaultPeer *peer, const char *name, const VaultOp *op,
                  const uint8_t *in, size_t in_len, Secret **ret_plaintext);
/* The same, writing the plaintext to out (out_size >= VAULT_DECRYPT_MAX(in_len), else -EINVAL)
 * and its length to *ret_len: for a caller whose buffer is locked memory already (vhsmd's reply
 * buffer), which saves a Secret (mmap + mlock + munmap) per request. On failure out is wiped. */
#define VAULT_DECRYPT_MAX(in_len) (in_len) /* plaintext is never longer than its input */
int vault_decrypt_into(Vault *v, const VaultPeer *peer, const char *name, const VaultOp *op,
                       const uint8_t *in, size_t in_len, uint8_t *out, size_t out_size,
                       size_t *ret_len);
/* Sign or MAC (USE right) with the latest version; *ret_sig malloc'd (envelope unless RAW).
 * PREHASHED: in is the digest (32 bytes for *_SHA256 / P-256, 48 for *_SHA384 / P-384;
 * -EINVAL otherwise; -EOPNOTSUPP for Ed25519 and HMAC). */
int vault_sign(Vault *v, const VaultPeer *peer, const char *name, const VaultOp *op,
               const uint8_t *in, size_t in_len, uint8_t **ret_sig, size_t *ret_sig_len);
/* Verify (USE right). Returns 0 if valid, -EKEYREJECTED if not (MACs compared in constant
 * time), -EBADMSG malformed envelope, -ENOKEY version not retained, or the sign errors. */
int vault_verify(Vault *v, const VaultPeer *peer, const char *name, const VaultOp *op,
                 const uint8_t *in, size_t in_len, const uint8_t *sig, size_t sig_len);

/* ECDH (USE right on `name`, an EC P-256/P-384 key; latest version) with a peer public key
 * (SubjectPublicKeyInfo, DER or PEM, same curve), then HKDF-SHA256(salt empty, ikm = shared
 * secret, info = "nitride-vault-ecdh" || info) -> 32 bytes, stored as the NEW AES-256 key
 * new_name (spec->type must be VAULT_KEY_AES256; origin "derived"). The shared secret never
 * leaves. Returns 0, -EBADMSG (bad public key, wrong curve), or the generate/ use errors. */
int vault_key_derive_ecdh(Vault *v, const VaultPeer *peer, const char *name,
                          const uint8_t *peer_public, size_t peer_public_len, const uint8_t *info,
                          size_t info_len, const char *new_name, const VaultKeySpec *spec);

#define VAULT_RANDOM_MAX 65536u
/* n (1..VAULT_RANDOM_MAX) bytes from the OpenSSL DRBG into a malloc'd buffer. Returns 0,
 * -EINVAL, -ENOMEM, -EIO. */
int vault_random(size_t n, uint8_t **ret);

/* Changes an object's attributes (ADMIN right, and the login rule): flags_set / flags_clear
 * among the settable bits, with PKCS#11's rules: SENSITIVE may only be set, EXTRACTABLE only
 * cleared, TRUSTED only by... nobody yet (-EPERM), and nothing else changes on an object
 * without MODIFIABLE (-EPERM). attrs replace the stored values of their types (len 0 removes
 * one). Returns 0, -ENOKEY, -EPERM, -EBADR, -EINVAL (a reserved or duplicate type, a read-only
 * bit), -E2BIG (over the attribute caps), -EDQUOT, or the keystore's error (nothing changed). */
int vault_key_set_object(Vault *v, const VaultPeer *peer, const char *name, uint32_t flags_set,
                         uint32_t flags_clear, const VaultAttr *attrs, size_t n_attrs);

/* AES modes with the caller's parameters, for the PKCS#11 module (raw output, no envelope):
 * CBC (IV 16, data a multiple of 16), CBC with PKCS#7 padding, CTR (IV = the 16-byte counter
 * block; counter_bits 1..128, 0 = 128; an operation that would wrap them is refused), GCM (IV
 * 1..128 bytes, AAD, tag_bits 96..128 in steps of 8, 0 = 128; encrypt output ct || tag, decrypt
 * input ct || tag). USE right, the login rule, ENCRYPT / DECRYPT usage; AES keys only
 * (-EOPNOTSUPP). out_size >= in_len + 16. Returns 0, -EINVAL (parameters, lengths),
 * -EKEYREJECTED (GCM tag), -EBADMSG (CBC padding), or the acquire errors; out is wiped on a
 * decryption failure. */
typedef enum VaultAesMode {
    VAULT_AES_CBC,
    VAULT_AES_CBC_PAD,
    VAULT_AES_CTR,
    VAULT_AES_GCM,
    _VAULT_AES_MODE_MAX,
    _VAULT_AES_MODE_INVALID = -EINVAL,
} VaultAesMode;
typedef struct VaultAesParams {
    VaultAesMode mode;
    const uint8_t *iv;
    size_t iv_len;
    const uint8_t *aad;
    size_t aad_len;
    unsigned tag_bits;
    unsigned counter_bits;
} VaultAesParams;
int vault_aes_crypt(Vault *v, const VaultPeer *peer, const char *name, const VaultAesParams *p,
                    bool encrypt, const uint8_t *in, size_t in_len, uint8_t *out, size_t out_size,
                    size_t *ret_len);

/* Raw signatures for the PKCS#11 module: CKM_ECDSA (in: a hash of 1..64 bytes, any hash; the
 * signature is r || s, fixed size) and CKM_RSA_PKCS (in: the DigestInfo or other data to pad,
 * at most k - 11 bytes; PKCS#1 v1.5 signature). Latest version. sign: USE right, the login rule,
 * SIGN flag; verify: USE right and the VERIFY flag only (public key). Returns 0, -EINVAL
 * (lengths), -EOPNOTSUPP (key type), -EKEYREJECTED (verify: bad signature), or the acquire
 * errors. */
typedef enum VaultRawSig {
    VAULT_RAW_SIG_ECDSA,
    VAULT_RAW_SIG_RSA_PKCS1,
    _VAULT_RAW_SIG_MAX,
    _VAULT_RAW_SIG_INVALID = -EINVAL,
} VaultRawSig;
int vault_sign_raw(Vault *v, const VaultPeer *peer, const char *name, VaultRawSig alg,
                   const uint8_t *in, size_t in_len, uint8_t **ret_sig, size_t *ret_sig_len);
int vault_verify_raw(Vault *v, const VaultPeer *peer, const char *name, VaultRawSig alg,
                     const uint8_t *in, size_t in_len, const uint8_t *sig, size_t sig_len);

/* Number of keys in the table (tests, status). */
size_t vault_key_count(Vault *v);

/* ---- Tokens and PINs (docs/vault.md "Tokens and PINs") ----
 *
 * Every uid namespace "<uid>/" is a token, whose state lives in the sealed keystore: label,
 * serial, SO PIN and user PIN (each a salted PBKDF2-HMAC-SHA256 hash, iterations recorded) and
 * the consecutive failure counters of both. A failed PIN check is counted and persisted before
 * it is answered; max_tries failures lock that PIN (the SO unlocks the user PIN with
 * vault_init_pin()). A login (VaultSession) authorises a connection; when the peer's token has
 * a user PIN, every use of secret or private material and every key change by that peer needs a
 * live USER session of the same uid in VaultPeer.session (else -EBADR), on top of the ACL.
 *
 * Errors: -EBADE wrong PIN (counted), -ENOLCK locked, -ENOMEDIUM token not initialised,
 * -ENODATA user PIN not set, -ENOTEMPTY re-initialising a token whose namespace holds keys,
 * -ERANGE PIN length, -EINVAL, -EALREADY / -EISCONN (this / the other user type logged in),
 * -EBUSY (the PIN changed during the check: retry), -ENOMEM, the keystore's errors. */
#define VAULT_USER_SO 0u
#define VAULT_USER_USER 1u
#define VAULT_USER_NONE 0xFFFFFFFFu
#define VAULT_PIN_MIN 4u
#define VAULT_PIN_MAX 64u
#define VAULT_TOKEN_LABEL_MAX 32u
#define VAULT_TICKET_SIZE 32u
#define VAULT_PIN_MAX_TRIES_DEFAULT 10u
#define VAULT_PIN_ITERATIONS_DEFAULT 100000u
#define VAULT_TOKENS_MAX 65536u

/* Token flags (libvhsm's VHSM_TOKEN_*). */
#define VAULT_TOKEN_INITIALIZED (1u << 0)
#define VAULT_TOKEN_USER_PIN_INITIALIZED (1u << 1)
#define VAULT_TOKEN_LOGIN_REQUIRED (1u << 2)
#define VAULT_TOKEN_USER_PIN_COUNT_LOW (1u << 3)
#define VAULT_TOKEN_USER_PIN_FINAL_TRY (1u << 4)
#define VAULT_TOKEN_USER_PIN_LOCKED (1u << 5)
#define VAULT_TOKEN_SO_PIN_COUNT_LOW (1u << 6)
#define VAULT_TOKEN_SO_PIN_FINAL_TRY (1u << 7)
#define VAULT_TOKEN_SO_PIN_LOCKED (1u << 8)

typedef struct VaultTokenInfo {
    uid_t uid;
    uint8_t label[VAULT_TOKEN_LABEL_MAX];
    size_t label_len;
    char serial[17];
    uint32_t flags;
    uint32_t user_failures, so_failures, max_tries;
    uint32_t login; /* the peer's session: VAULT_USER_* */
} VaultTokenInfo;

/* max_tries 1..100 (0: default 10), iterations >= 1000 for new hashes (0: default). Call before
 * serving. Returns 0 or -EINVAL. */
int vault_set_pin_policy(Vault *v, uint32_t max_tries, uint32_t iterations);
/* The peer's own token (an uninitialised token: flags 0). */
int vault_token_info(Vault *v, const VaultPeer *peer, VaultTokenInfo *ret);
/* C_InitToken on the peer's token (see the error list above). */
int vault_token_init(Vault *v, const VaultPeer *peer, const uint8_t *so_pin, size_t so_pin_len,
                     const uint8_t *label, size_t label_len);
/* Checks the PIN of user (VAULT_USER_SO / _USER) and on success returns a new session (owned by
 * the caller: vault_session_unref()) and its ticket (random, VAULT_TICKET_SIZE bytes). The
 * peer's current session (VaultPeer.session, may be NULL or revoked) decides -EALREADY/-EISCONN. */
int vault_login(Vault *v, const VaultPeer *peer, uint32_t user, const uint8_t *pin, size_t pin_len,
                VaultSession **ret, uint8_t ret_ticket[VAULT_TICKET_SIZE]);
/* Another reference to the live session of ticket, if it belongs to the peer's uid and pid:
 * 0, -EBADE (no such live session; nothing is counted), -EALREADY/-EISCONN. */
int vault_login_ticket(Vault *v, const VaultPeer *peer, const uint8_t ticket[VAULT_TICKET_SIZE],
                       VaultSession **ret);
/* Revokes s: every connection holding it is logged out. Accepts NULL. */
void vault_logout(VaultSession *s);
/* True while s is a live (not revoked) session; *ret_user its user type. */
bool vault_session_live(const VaultSession *s, uint32_t *ret_user);
VaultSession *vault_session_unref(VaultSession *s);
/* C_InitPIN: peer's session must be a live SO session (-EBADR); sets the user PIN, clears its
 * failure counter and revokes the token's USER sessions. */
int vault_init_pin(Vault *v, const VaultPeer *peer, const uint8_t *pin, size_t pin_len);
/* C_SetPIN: changes the PIN of the user logged in on the peer's session (SO or USER), or the
 * user PIN if none; old_pin must match (counted). */
int vault_set_pin(Vault *v, const VaultPeer *peer, const uint8_t *old_pin, size_t old_len,
                  const uint8_t *new_pin, size_t new_len);
/* 0 if the peer may use private material / change keys under its token's login rule, else
 * -EBADR. Takes the table lock (read). */
int vault_login_check(Vault *v, const VaultPeer *peer);
