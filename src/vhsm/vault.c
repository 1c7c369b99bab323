/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The vault engine: key table, versions, ACL decisions, and the cryptographic operations.
 *
 * Invariants: key material is in Secret buffers (AES/HMAC) or EVP_PKEYs from the secure heap;
 * operations run on a referenced KeyVersion outside the table lock; every mutation is persisted
 * through the keystore while the write lock is held, and undone if that fails, so the file and
 * the table never disagree and destructive steps (wiping a deleted key or a retired version)
 * happen only after the new state is on disk.
 */
#include "vault.h"

#include <ctype.h>
#include <malloc.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ecdsa.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/encoding.h"
#include "core/log.h"
#include "core/openssl-util.h"
#include "vhsm/keystore.h"
#include "vhsm/pkcs8.h"
#include "vhsm/transfer.h"
#include "vhsm/vault-private.h"

#define VAULT_DEFAULT_SECURE_HEAP (2u * 1024u * 1024u)
#define VAULT_LABEL_MAX 128
#define ENVELOPE_MAGIC "NTVE"
#define ENVELOPE_FORMAT 1
#define ECDH_INFO_PREFIX "nitride-vault-ecdh"

/* ---- names ---- */

static const char *const key_type_table[_VAULT_KEY_TYPE_MAX] = {
    [VAULT_KEY_AES256] = "aes256",
    [VAULT_KEY_HMAC_SHA256] = "hmac-sha256",
    [VAULT_KEY_HMAC_SHA384] = "hmac-sha384",
    [VAULT_KEY_EC_P256] = "ec-p256",
    [VAULT_KEY_EC_P384] = "ec-p384",
    [VAULT_KEY_ED25519] = "ed25519",
    [VAULT_KEY_RSA2048] = "rsa2048",
    [VAULT_KEY_RSA3072] = "rsa3072",
    [VAULT_KEY_RSA4096] = "rsa4096",
    [VAULT_KEY_RAW] = "raw",
    [VAULT_KEY_DATA] = "data",
    [VAULT_KEY_CERT] = "cert",
    [VAULT_KEY_PUBLIC] = "public",
    [VAULT_KEY_AES128] = "aes128",
    [VAULT_KEY_AES192] = "aes192",
    [VAULT_KEY_GENERIC_SECRET] = "generic-secret",
};

static const char *const alg_table[_VAULT_ALG_MAX] = {
    [VAULT_ALG_AES256_GCM] = "aes256-gcm",
    [VAULT_ALG_AES256_KW] = "aes256-kw",
    [VAULT_ALG_AES256_KWP] = "aes256-kwp",
    [VAULT_ALG_HMAC] = "hmac",
    [VAULT_ALG_ECDSA] = "ecdsa",
    [VAULT_ALG_ED25519] = "ed25519",
    [VAULT_ALG_RSA_PSS_SHA256] = "rsa-pss-sha256",
    [VAULT_ALG_RSA_PSS_SHA384] = "rsa-pss-sha384",
    [VAULT_ALG_RSA_PKCS1_SHA256] = "rsa-pkcs1-sha256",
    [VAULT_ALG_RSA_PKCS1_SHA384] = "rsa-pkcs1-sha384",
    [VAULT_ALG_RSA_OAEP_SHA256] = "rsa-oaep-sha256",
    [VAULT_ALG_RSA_OAEP_SHA1] = "rsa-oaep-sha1",
};

static const char *const policy_table[_VAULT_POLICY_MAX] = {
    [VAULT_POLICY_LOCAL] = "local",
    [VAULT_POLICY_ATTESTED] = "attested",
};

static const char *const origin_table[_VAULT_ORIGIN_MAX] = {
    [VAULT_ORIGIN_GENERATED] = "generated",
    [VAULT_ORIGIN_IMPORTED] = "imported",
    [VAULT_ORIGIN_DERIVED] = "derived",
};

static int table_lookup(const char *const *table, size_t n, const char *s) {
    if (!s)
        return -EINVAL;
    for (size_t i = 0; i < n; i++)
        if (table[i] && streq(table[i], s))
            return (int)i;
    return -EINVAL;
}

const char *vault_key_type_to_string(VaultKeyType t) {
    return t >= 0 && t < _VAULT_KEY_TYPE_MAX ? key_type_table[t] : NULL;
}
VaultKeyType vault_key_type_from_string(const char *s) {
    return (VaultKeyType)table_lookup(key_type_table, _VAULT_KEY_TYPE_MAX, s);
}
const char *vault_alg_to_string(VaultAlg a) {
    return a > 0 && a < _VAULT_ALG_MAX ? alg_table[a] : NULL;
}
VaultAlg vault_alg_from_string(const char *s) {
    return (VaultAlg)table_lookup(alg_table, _VAULT_ALG_MAX, s);
}
const char *vault_policy_kind_to_string(VaultPolicyKind k) {
    return k >= 0 && k < _VAULT_POLICY_MAX ? policy_table[k] : NULL;
}
VaultPolicyKind vault_policy_kind_from_string(const char *s) {
    return (VaultPolicyKind)table_lookup(policy_table, _VAULT_POLICY_MAX, s);
}

bool vault_key_type_is_asymmetric(VaultKeyType t) {
    return t >= VAULT_KEY_EC_P256 && t <= VAULT_KEY_RSA4096;
}

size_t vault_key_type_secret_size(VaultKeyType t) {
    switch (t) {
    case VAULT_KEY_AES128:
        return 16;
    case VAULT_KEY_AES192:
        return 24;
    case VAULT_KEY_AES256:
    case VAULT_KEY_HMAC_SHA256:
        return 32;
    case VAULT_KEY_HMAC_SHA384:
        return 48;
    default:
        return 0;
    }
}

static bool plain_name_is_valid(const char *name, size_t n) {
    if (n == 0 || n > VAULT_PLAIN_NAME_MAX || name[0] == '.' || name[0] == '-')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!(isascii((unsigned char)c) && isalnum((unsigned char)c)) && !strchr("._:@-", c))
            return false;
    }
    return true;
}

/* A namespace: "kms" (root's) or a uid in canonical decimal (no sign, no leading zero, below
 * (uid_t)-1, which means "no uid"). */
static bool ns_parse(const char *ns, size_t n, uid_t *ret) {
    uint64_t x = 0;
    if (n == strlen(VAULT_NS_KMS) && memcmp(ns, VAULT_NS_KMS, n) == 0) {
        *ret = 0;
        return true;
    }
    if (n == 0 || n > 10 || (ns[0] == '0' && n > 1))
        return false;
    for (size_t i = 0; i < n; i++) {
        if (ns[i] < '0' || ns[i] > '9')
            return false;
        x = x * 10 + (uint64_t)(ns[i] - '0');
    }
    if (x >= (uint64_t)(uid_t)-1)
        return false;
    *ret = (uid_t)x;
    return true;
}

static bool full_name_split(const char *name, uid_t *ret_owner) {
    const char *slash = strchr(name, '/');
    uid_t owner;
    if (!slash || !ns_parse(name, (size_t)(slash - name), &owner) ||
        !plain_name_is_valid(slash + 1, strlen(slash + 1)))
        return false;
    if (ret_owner)
        *ret_owner = owner;
    return true;
}

bool vault_key_name_is_valid(const char *name) {
    if (!name)
        return false;
    if (strchr(name, '/'))
        return full_name_split(name, NULL);
    return plain_name_is_valid(name, strlen(name));
}

int vault_name_resolve(const VaultPeer *peer, const char *name,
                       char ret[static VAULT_FULL_NAME_MAX + 1]) {
    if (!peer || !name)
        return -EINVAL;
    if (strchr(name, '/')) {
        if (!full_name_split(name, NULL))
            return -EINVAL;
        memcpy(ret, name, strlen(name) + 1);
        return 0;
    }
    if (!plain_name_is_valid(name, strlen(name)))
        return -EINVAL;
    (void)snprintf(ret, VAULT_FULL_NAME_MAX + 1, "%u/%s", (unsigned)peer->uid, name);
    return 0;
}

int vault_name_owner(const char *full_name, uid_t *ret) {
    uid_t owner;
    if (!full_name || !full_name_split(full_name, &owner))
        return -EINVAL;
    *ret = owner;
    return 0;
}

/* Whether a full name lies in the import-only "kms" namespace. */
static bool name_is_kms(const char *full_name) {
    return strncmp(full_name, VAULT_NS_KMS "/", strlen(VAULT_NS_KMS) + 1) == 0;
}

/* Resolves `name` into the local buffer `full`, or returns -EINVAL from the enclosing function. */
#define RESOLVE(peer, name, full)                                                                  \
    char full[VAULT_FULL_NAME_MAX + 1];                                                            \
    do {                                                                                           \
        int r_resolve_ = vault_name_resolve((peer), (name), full);                                 \
        if (r_resolve_ < 0)                                                                        \
            return r_resolve_;                                                                     \
    } while (0)

/* ---- ACL ---- */

static void acl_list_done(VaultAclList *l) {
    free(l->uids);
    free(l->gids);
    for (size_t i = 0; i < l->n_cgroups; i++)
        free(l->cgroups[i]);
    free(l->cgroups);
    *l = (VaultAclList){0};
}

void vault_acl_done(VaultAcl *acl) {
    if (!acl)
        return;
    acl_list_done(&acl->use);
    acl_list_done(&acl->admin);
}

static void vault_acl_donep(VaultAcl *acl) {
    vault_acl_done(acl);
}

/* uid_t and gid_t are both unsigned int in glibc: one append serves both lists (the compiler
 * rejects the calls below if that ever changes). */
_Static_assert(sizeof(uid_t) == sizeof(unsigned) && sizeof(gid_t) == sizeof(unsigned),
               "uid_t/gid_t are unsigned int");

static int acl_id_append(unsigned **ids, size_t *n_ids, unsigned id) {
    unsigned *n;
    if (*n_ids >= VAULT_ACL_MAX_ENTRIES)
        return -E2BIG;
    if (nt_alloc_should_fail())
        return -ENOMEM;
    n = reallocarray(*ids, *n_ids + 1, sizeof(unsigned));
    if (!n)
        return -ENOMEM;
    n[(*n_ids)++] = id;
    *ids = n;
    return 0;
}

int vault_acl_list_add_uid(VaultAclList *l, uid_t uid) {
    return acl_id_append(&l->uids, &l->n_uids, uid);
}

int vault_acl_list_add_gid(VaultAclList *l, gid_t gid) {
    return acl_id_append(&l->gids, &l->n_gids, gid);
}

static bool cgroup_prefix_is_valid(const char *p) {
    size_t n;
    if (!p || p[0] != '/')
        return false;
    n = strlen(p);
    if (n >= VAULT_CGROUP_MAX)
        return false;
    if (strstr(p, "/../") || strstr(p, "/./") || strstr(p, "//"))
        return false;
    if ((n >= 3 && streq(p + n - 3, "/..")) || (n >= 2 && streq(p + n - 2, "/.")))
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f)
            return false;
    return true;
}

int vault_acl_list_add_cgroup(VaultAclList *l, const char *prefix) {
    _cleanup_free_ char *copy = NULL;
    char **n;
    size_t len;
    if (!cgroup_prefix_is_valid(prefix))
        return -EINVAL;
    if (l->n_cgroups >= VAULT_ACL_MAX_ENTRIES)
        return -E2BIG;
    copy = nt_strdup(prefix);
    if (!copy)
        return -ENOMEM;
    /* Normalise a trailing slash ("/a/" == "/a"), except for the root "/". */
    len = strlen(copy);
    if (len > 1 && copy[len - 1] == '/')
        copy[len - 1] = 0;
    if (nt_alloc_should_fail())
        return -ENOMEM;
    n = reallocarray(l->cgroups, l->n_cgroups + 1, sizeof(char *));
    if (!n)
        return -ENOMEM;
    n[l->n_cgroups++] = TAKE_PTR(copy);
    l->cgroups = n;
    return 0;
}

static int acl_list_copy(const VaultAclList *src, VaultAclList *dst) {
    int r;
    for (size_t i = 0; i < src->n_uids; i++)
        if ((r = vault_acl_list_add_uid(dst, src->uids[i])) < 0)
            return r;
    for (size_t i = 0; i < src->n_gids; i++)
        if ((r = vault_acl_list_add_gid(dst, src->gids[i])) < 0)
            return r;
    for (size_t i = 0; i < src->n_cgroups; i++)
        if ((r = vault_acl_list_add_cgroup(dst, src->cgroups[i])) < 0)
            return r;
    return 0;
}

int vault_acl_copy(const VaultAcl *acl, VaultAcl *ret) {
    _cleanup_(vault_acl_donep) VaultAcl c = {0};
    int r;
    if (!acl || !ret)
        return -EINVAL;
    if ((r = acl_list_copy(&acl->use, &c.use)) < 0 ||
        (r = acl_list_copy(&acl->admin, &c.admin)) < 0)
        return r;
    *ret = c;
    c = (VaultAcl){0};
    return 0;
}

static json_t *acl_list_to_json(const VaultAclList *l) {
    json_auto_t *o = json_object(), *u = json_array(), *g = json_array(), *c = json_array();
    if (!o || !u || !g || !c)
        return NULL;
    for (size_t i = 0; i < l->n_uids; i++)
        if (json_array_append_new(u, json_integer(l->uids[i])) < 0)
            return NULL;
    for (size_t i = 0; i < l->n_gids; i++)
        if (json_array_append_new(g, json_integer(l->gids[i])) < 0)
            return NULL;
    for (size_t i = 0; i < l->n_cgroups; i++)
        if (json_array_append_new(c, json_string(l->cgroups[i])) < 0)
            return NULL;
    if (json_object_set(o, "uids", u) < 0 || json_object_set(o, "gids", g) < 0 ||
        json_object_set(o, "cgroups", c) < 0)
        return NULL;
    return json_incref(o);
}

json_t *vault_acl_to_json(const VaultAcl *acl) {
    json_auto_t *o = json_object();
    if (!o || json_object_set_new(o, "use", acl_list_to_json(&acl->use)) < 0 ||
        json_object_set_new(o, "admin", acl_list_to_json(&acl->admin)) < 0)
        return NULL;
    return json_incref(o);
}

static int acl_list_from_json(const json_t *j, VaultAclList *l) {
    const char *k;
    json_t *val, *e;
    size_t i;
    int r;
    if (!json_is_object(j))
        return -EBADMSG;
    json_object_foreach((json_t *)j, k, val) {
        if (!json_is_array(val))
            return -EBADMSG;
        if (!streq(k, "uids") && !streq(k, "gids") && !streq(k, "cgroups"))
            return -EBADMSG;
        json_array_foreach(val, i, e) {
            if (streq(k, "cgroups")) {
                if (!json_is_string(e))
                    return -EBADMSG;
                r = vault_acl_list_add_cgroup(l, json_string_value(e));
            } else {
                json_int_t id = json_is_integer(e) ? json_integer_value(e) : -1;
                if (id < 0 || id >= (json_int_t)UINT32_MAX)
                    return -EBADMSG;
                r = streq(k, "uids") ? vault_acl_list_add_uid(l, (uid_t)id)
                                     : vault_acl_list_add_gid(l, (gid_t)id);
            }
            if (r < 0)
                return r;
        }
    }
    return 0;
}

int vault_acl_from_json(const json_t *j, VaultAcl *ret) {
    _cleanup_(vault_acl_donep) VaultAcl acl = {0};
    const char *k;
    json_t *val;
    int r;
    if (!json_is_object(j) || !ret)
        return -EBADMSG;
    json_object_foreach((json_t *)j, k, val) {
        if (streq(k, "use"))
            r = acl_list_from_json(val, &acl.use);
        else if (streq(k, "admin"))
            r = acl_list_from_json(val, &acl.admin);
        else
            r = -EBADMSG;
        if (r < 0)
            return r;
    }
    *ret = acl;
    acl = (VaultAcl){0};
    return 0;
}

static bool cgroup_matches(const char *prefix, const char *cgroup) {
    size_t n = strlen(prefix);
    if (streq(prefix, "/"))
        return cgroup[0] == '/';
    return strncmp(prefix, cgroup, n) == 0 && (cgroup[n] == 0 || cgroup[n] == '/');
}

static bool acl_list_match(const VaultAclList *l, const VaultPeer *peer) {
    for (size_t i = 0; i < l->n_uids; i++)
        if (l->uids[i] == peer->uid)
            return true;
    for (size_t i = 0; i < l->n_gids; i++) {
        if (l->gids[i] == peer->gid)
            return true;
        for (size_t j = 0; j < peer->n_groups; j++)
            if (l->gids[i] == peer->groups[j])
                return true;
    }
    if (peer->cgroup && cgroup_prefix_is_valid(peer->cgroup))
        for (size_t i = 0; i < l->n_cgroups; i++)
            if (cgroup_matches(l->cgroups[i], peer->cgroup))
                return true;
    return false;
}

bool vault_acl_check(const VaultAcl *acl, const VaultPeer *peer, VaultRight right) {
    if (!acl || !peer)
        return false;
    switch (right) {
    case VAULT_RIGHT_ADMIN:
        return peer->uid == 0 || acl_list_match(&acl->admin, peer);
    case VAULT_RIGHT_USE:
        return acl_list_match(&acl->use, peer);
    default:
        return false;
    }
}

static int acl_validate(const VaultAcl *acl) {
    const VaultAclList *ls[2] = {&acl->use, &acl->admin};
    for (size_t i = 0; i < 2; i++) {
        if (ls[i]->n_uids > VAULT_ACL_MAX_ENTRIES || ls[i]->n_gids > VAULT_ACL_MAX_ENTRIES ||
            ls[i]->n_cgroups > VAULT_ACL_MAX_ENTRIES)
            return -EINVAL;
        for (size_t j = 0; j < ls[i]->n_cgroups; j++)
            if (!cgroup_prefix_is_valid(ls[i]->cgroups[j]))
                return -EINVAL;
    }
    return 0;
}

/* The whole-ACL caps (VAULT_ACL_MAX_TOTAL, VAULT_ACL_MAX_CGROUP_BYTES) and the cgroup-root rule,
 * for ACLs a peer sets (not for keys loaded from the keystore). */
int vault_acl_check_caps(const VaultAcl *acl, const VaultPeer *peer) {
    const VaultAclList *ls[2] = {&acl->use, &acl->admin};
    size_t entries = 0, bytes = 0;
    for (size_t i = 0; i < 2; i++) {
        entries += ls[i]->n_uids + ls[i]->n_gids + ls[i]->n_cgroups;
        for (size_t j = 0; j < ls[i]->n_cgroups; j++) {
            bytes += strlen(ls[i]->cgroups[j]);
            if (peer->uid != 0 && streq(ls[i]->cgroups[j], "/"))
                return -EPERM;
        }
    }
    if (entries > VAULT_ACL_MAX_TOTAL || bytes > VAULT_ACL_MAX_CGROUP_BYTES)
        return -E2BIG;
    return 0;
}

/* ---- quotas ---- */

#define QUOTA_DEFAULT_KEYS 1024u
#define QUOTA_DEFAULT_VERSIONS 4096u
#define QUOTA_DEFAULT_BYTES ((uint64_t)4 << 20)
#define QUOTA_DEFAULT_TOTAL ((uint64_t)64 << 20)
#define QUOTA_DEFAULT_ROOT ((uint64_t)32 << 20)
#define QUOTA_HEAP_HEADROOM ((size_t)8 << 20) /* operations in flight (secure BIGNUMs) */
#define KEY_META_BASE 512u                    /* VaultKey, arrays, allocator overhead */

/* Bytes charged per retained version. Upper bounds, measured with OpenSSL 3.0 on x86-64 (and
 * checked by test-vault's test_cost_table): secure heap bytes (CRYPTO_secure_used) at most a
 * quarter of the cost, so that a secure heap of a quarter of the chargeable bytes holds every
 * key; heap bytes of the EVP_PKEY (locked too, under mlockall) and the KeyVersion with its
 * cached contexts within the cost; the keystore material at most half of it. */
uint64_t vault_version_cost(VaultKeyType t) {
    switch (t) {
    case VAULT_KEY_AES128:
    case VAULT_KEY_AES192:
    case VAULT_KEY_AES256:
    case VAULT_KEY_HMAC_SHA256:
    case VAULT_KEY_HMAC_SHA384:
    case VAULT_KEY_GENERIC_SECRET:
        return 4096; /* packed 64-byte slot, KeyVersion, up to 4 cached GCM/HMAC contexts */
    case VAULT_KEY_ED25519:
        return 2048;
    case VAULT_KEY_DATA: /* a page secret of up to 4 KiB + header, twice the keystore bytes */
        return 16384;
    case VAULT_KEY_CERT:
        return 24576;
    case VAULT_KEY_PUBLIC: /* the value and an EVP_PKEY of the public key */
        return 8192;
    case VAULT_KEY_EC_P256:
    case VAULT_KEY_EC_P384:
    case VAULT_KEY_RSA2048:
        return 8192;
    case VAULT_KEY_RSA3072:
    case VAULT_KEY_RSA4096:
        return 16384;
    default:
        return 16384;
    }
}

static size_t acl_list_bytes(const VaultAclList *l) {
    size_t n = 6 + 4 * (l->n_uids + l->n_gids);
    for (size_t i = 0; i < l->n_cgroups; i++)
        n += 2 + strlen(l->cgroups[i]);
    return n;
}

/* A key's metadata cost: a base plus twice its keystore bytes (name, label, ACL, fields). */
static uint64_t key_meta_cost(const VaultKey *k) {
    size_t ser = 24 + strlen(k->name) + (k->label ? strlen(k->label) : 0) +
                 acl_list_bytes(&k->acl.use) + acl_list_bytes(&k->acl.admin) + 6;
    for (size_t i = 0; i < k->n_attrs; i++)
        ser += 6 + k->attrs[i].len;
    return KEY_META_BASE + 2 * (uint64_t)ser;
}

/* Versions held (absent ones, never delivered to this vault, are not charged). */
static uint32_t key_retained(const VaultKey *k) {
    uint32_t n =
        k->latest >= k->min_version && k->min_version > 0 ? k->latest - k->min_version + 1 : 0;
    return n - MIN(n, k->n_absent);
}

static VaultUsage key_usage(const VaultKey *k) {
    uint32_t n = key_retained(k);
    return (VaultUsage){
        .keys = 1,
        .versions = n,
        .bytes = key_meta_cost(k) + (uint64_t)n * vault_version_cost(k->type),
    };
}

int vault_quota_normalize(VaultQuota *q) {
    if (!q)
        return -EINVAL;
    if (q->max_keys == 0)
        q->max_keys = QUOTA_DEFAULT_KEYS;
    if (q->max_versions == 0)
        q->max_versions = QUOTA_DEFAULT_VERSIONS;
    if (q->max_bytes == 0)
        q->max_bytes = QUOTA_DEFAULT_BYTES;
    if (q->total_bytes == 0)
        q->total_bytes = MAX(QUOTA_DEFAULT_TOTAL, q->max_bytes);
    if (q->root_reserve == 0)
        q->root_reserve = QUOTA_DEFAULT_ROOT;
    if (q->max_bytes > q->total_bytes || q->total_bytes > ((uint64_t)1 << 40) ||
        q->root_reserve > ((uint64_t)1 << 40))
        return -EINVAL;
    /* Keystore bytes are at most half the charged bytes: keep that under the file cap (with
     * room for the header, the per-key framing and the seal). */
    if ((q->total_bytes + q->root_reserve) / 2 > (uint64_t)KEYSTORE_MAX_FILE - ((uint64_t)1 << 20))
        return -EINVAL;
    return 0;
}

size_t vault_quota_secure_heap_size(const VaultQuota *q) {
    VaultQuota n = *q;
    size_t want, heap = (size_t)1 << 20;
    if (vault_quota_normalize(&n) < 0)
        return 0;
    want = (size_t)((n.total_bytes + n.root_reserve) / 4) + QUOTA_HEAP_HEADROOM;
    while (heap < want)
        heap <<= 1;
    return heap;
}

/* The usage entry of uid; create: add a zero entry if missing (NULL on OOM). Lock held. */
static OwnerUsage *usage_find_locked(Vault *v, uid_t uid, bool create) {
    size_t lo = 0, hi = v->n_usage;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v->usage[mid].uid < uid)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < v->n_usage && v->usage[lo].uid == uid)
        return &v->usage[lo];
    if (!create)
        return NULL;
    if (v->n_usage >= v->n_usage_alloc) {
        size_t n = v->n_usage_alloc ? v->n_usage_alloc * 2 : 16;
        OwnerUsage *a;
        if (nt_alloc_should_fail())
            return NULL;
        a = reallocarray(v->usage, n, sizeof(OwnerUsage));
        if (!a)
            return NULL;
        v->usage = a;
        v->n_usage_alloc = n;
    }
    memmove(v->usage + lo + 1, v->usage + lo, (v->n_usage - lo) * sizeof(OwnerUsage));
    v->usage[lo] = (OwnerUsage){.uid = uid};
    v->n_usage++;
    return &v->usage[lo];
}

static void usage_add(VaultUsage *u, const VaultUsage *d, int sign) {
    if (sign > 0) {
        u->keys += d->keys;
        u->versions += d->versions;
        u->bytes += d->bytes;
    } else {
        u->keys -= MIN(u->keys, d->keys);
        u->versions -= MIN(u->versions, d->versions);
        u->bytes -= MIN(u->bytes, d->bytes);
    }
}

static uid_t key_owner(const VaultKey *k) {
    uid_t owner = 0;
    (void)vault_name_owner(k->name, &owner);
    return owner;
}

/* Whether peer may add d to owner's usage. Lock held. */
static int quota_check_locked(Vault *v, const VaultPeer *peer, uid_t owner, const VaultUsage *d) {
    const VaultQuota *q = &v->quota;
    if (v->all.bytes + d->bytes > q->total_bytes + q->root_reserve)
        return -EDQUOT;
    if (peer->uid == 0)
        return 0;
    {
        const OwnerUsage *o = usage_find_locked(v, owner, false);
        VaultUsage u = o ? o->u : (VaultUsage){0};
        if (u.keys + d->keys > q->max_keys || u.versions + d->versions > q->max_versions ||
            u.bytes + d->bytes > q->max_bytes)
            return -EDQUOT;
    }
    if (owner != 0 && v->nonroot.bytes + d->bytes > q->total_bytes)
        return -EDQUOT;
    return 0;
}

/* Charges (sign > 0) or releases d for owner. Charging can fail only on OOM (a new entry). */
static int usage_apply_locked(Vault *v, uid_t owner, const VaultUsage *d, int sign) {
    OwnerUsage *o = usage_find_locked(v, owner, sign > 0);
    if (!o)
        return sign > 0 ? -ENOMEM : 0;
    usage_add(&o->u, d, sign);
    usage_add(&v->all, d, sign);
    if (owner != 0)
        usage_add(&v->nonroot, d, sign);
    return 0;
}

/* ---- process set-up ---- */

static void *zero_malloc(size_t n) {
    return malloc(n);
}

/* jansson's free gets no size: ask the allocator, so every json_t string (libjose's private
 * JWK members, CEKs, plaintexts) is wiped before it returns to the heap. */
static void zero_free(void *p) {
    if (!p)
        return;
    explicit_bzero(p, malloc_usable_size(p));
    free(p);
}

static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
static bool init_done;
static size_t secure_heap_total; /* 0: not ours (set up before vault_init) */

bool vault_secure_heap_has_room(VaultKeyType t) {
    size_t need, headroom;
    if (secure_heap_total == 0 || !CRYPTO_secure_malloc_initialized())
        return true;
    need = (size_t)(vault_version_cost(t) / 4);
    headroom = MIN(QUOTA_HEAP_HEADROOM, secure_heap_total / 4);
    return CRYPTO_secure_used() + need + headroom <= secure_heap_total;
}

int vault_init(size_t secure_heap_size) {
    int r;
    pthread_mutex_lock(&init_lock);
    if (init_done) {
        pthread_mutex_unlock(&init_lock);
        return 0;
    }
    if (secure_heap_size == 0)
        secure_heap_size = VAULT_DEFAULT_SECURE_HEAP;
    if (!CRYPTO_secure_malloc_initialized()) {
        r = CRYPTO_secure_malloc_init(secure_heap_size, 32);
        if (r == 0) {
            pthread_mutex_unlock(&init_lock);
            return nt_openssl_error(-ENOMEM, "CRYPTO_secure_malloc_init (check RLIMIT_MEMLOCK)");
        }
        if (r == 2)
            log_debug("vault: secure heap created but could not be locked (RLIMIT_MEMLOCK?)");
        secure_heap_total = secure_heap_size;
    }
    json_set_alloc_funcs(zero_malloc, zero_free);
    init_done = true;
    pthread_mutex_unlock(&init_lock);
    return 0;
}

/* ---- locks ---- */

static pthread_rwlock_t *rdlock(pthread_rwlock_t *l) {
    (void)pthread_rwlock_rdlock(l);
    return l;
}
static void rwlock_unlockp(pthread_rwlock_t **l) {
    if (*l)
        (void)pthread_rwlock_unlock(*l);
}
#define READ_LOCKED(v)                                                                             \
    _cleanup_(rwlock_unlockp) _unused_ pthread_rwlock_t *lock_guard_ = rdlock(&(v)->lock)
static Vault *mutate_begin(Vault *v) {
    (void)pthread_mutex_lock(&v->mutate_lock);
    (void)pthread_rwlock_wrlock(&v->lock);
    return v;
}
static void mutate_endp(Vault **v) {
    if (!*v)
        return;
    (void)pthread_rwlock_unlock(&(*v)->lock);
    (void)pthread_mutex_unlock(&(*v)->mutate_lock);
}
/* A mutation: the mutation lock, then the table's write lock (persist_locked() drops the latter
 * while the file is written). */
#define WRITE_LOCKED(v) _cleanup_(mutate_endp) _unused_ Vault *lock_guard_ = mutate_begin(v)

/* ---- objects ---- */

int vault_new(Vault **ret) {
    Vault *v;
    if (!ret)
        return -EINVAL;
    v = nt_calloc(1, sizeof(Vault));
    if (!v)
        return -ENOMEM;
    if (pthread_rwlock_init(&v->lock, NULL) != 0) {
        free(v);
        return -ENOMEM;
    }
    if (pthread_mutex_init(&v->transfer_lock, NULL) != 0) {
        (void)pthread_rwlock_destroy(&v->lock);
        free(v);
        return -ENOMEM;
    }
    if (pthread_mutex_init(&v->mutate_lock, NULL) != 0) {
        (void)pthread_mutex_destroy(&v->transfer_lock);
        (void)pthread_rwlock_destroy(&v->lock);
        free(v);
        return -ENOMEM;
    }
    if (pthread_mutex_init(&v->session_lock, NULL) != 0) {
        (void)pthread_mutex_destroy(&v->mutate_lock);
        (void)pthread_mutex_destroy(&v->transfer_lock);
        (void)pthread_rwlock_destroy(&v->lock);
        free(v);
        return -ENOMEM;
    }
    v->pin_max_tries = VAULT_PIN_MAX_TRIES_DEFAULT;
    v->pin_iterations = VAULT_PIN_ITERATIONS_DEFAULT;
    atomic_init(&v->attestation_time, 0);
    atomic_init(&v->attestation_expires, 0);
    (void)vault_quota_normalize(&v->quota);
    *ret = v;
    return 0;
}

Vault *vault_free(Vault *v) {
    if (!v)
        return NULL;
    for (size_t i = 0; i < v->n_keys; i++)
        vault_key_free(v->keys[i]);
    free(v->keys);
    free(v->usage);
    vault_transfer_free_all(v);
    vault_tokens_free(v);
    (void)pthread_mutex_destroy(&v->session_lock);
    (void)pthread_mutex_destroy(&v->transfer_lock);
    (void)pthread_mutex_destroy(&v->mutate_lock);
    (void)pthread_rwlock_destroy(&v->lock);
    free(v);
    return NULL;
}

int vault_set_quota(Vault *v, const VaultQuota *q) {
    VaultQuota n;
    if (!v || !q)
        return -EINVAL;
    n = *q;
    if (vault_quota_normalize(&n) < 0)
        return -EINVAL;
    WRITE_LOCKED(v);
    v->quota = n;
    return 0;
}

void vault_get_quota(Vault *v, VaultQuota *ret) {
    READ_LOCKED(v);
    *ret = v->quota;
}

void vault_usage(Vault *v, uid_t uid, VaultUsage *ret) {
    READ_LOCKED(v);
    const OwnerUsage *o = usage_find_locked(v, uid, false);
    *ret = o ? o->u : (VaultUsage){0};
}

void vault_usage_total(Vault *v, VaultUsage *ret_all, VaultUsage *ret_nonroot) {
    READ_LOCKED(v);
    if (ret_all)
        *ret_all = v->all;
    if (ret_nonroot)
        *ret_nonroot = v->nonroot;
}

size_t vault_dormant_count(Vault *v) {
    READ_LOCKED(v);
    return v->n_dormant;
}

void vault_set_keystore(Vault *v, Keystore *ks) {
    WRITE_LOCKED(v);
    v->keystore = ks;
}

void vault_set_attestation(Vault *v, time_t verdict_time, time_t expires) {
    /* Expiry first: a reader that sees the new time never pairs it with an older, later
     * expiry (two stores are not one atomic step; the other mix, old time with new expiry,
     * is at most as permissive as the old verdict was). */
    atomic_store(&v->attestation_expires, (long long)(verdict_time ? expires : 0));
    atomic_store(&v->attestation_time, (long long)verdict_time);
}

void vault_set_clock(Vault *v, time_t (*now)(void *userdata), void *userdata) {
    WRITE_LOCKED(v);
    v->now = now;
    v->now_userdata = userdata;
}

time_t vault_now(Vault *v) {
    return v->now ? v->now(v->now_userdata) : time(NULL);
}

size_t vault_key_count(Vault *v) {
    size_t n = 0;
    READ_LOCKED(v);
    for (size_t i = 0; i < v->n_keys; i++)
        if (vault_key_live(v->keys[i]))
            n++;
    return n;
}

KeyVersion *key_version_new(uint32_t number, uint64_t created) {
    KeyVersion *kv = nt_calloc(1, sizeof(KeyVersion));
    if (!kv)
        return NULL;
    atomic_init(&kv->refs, 1);
    kv->number = number;
    kv->created = created;
    return kv;
}

KeyVersion *key_version_ref(KeyVersion *kv) {
    if (kv)
        atomic_fetch_add(&kv->refs, 1);
    return kv;
}

KeyVersion *key_version_unref(KeyVersion *kv) {
    if (!kv)
        return NULL;
    if (atomic_fetch_sub(&kv->refs, 1) != 1)
        return NULL;
    secret_free(kv->secret);
    secret_free(kv->dormant);
    secret_free(atomic_exchange(&kv->material, NULL));
    for (size_t i = 0; i < KEY_VERSION_GCM_CACHE; i++) {
        EVP_CIPHER_CTX_free(atomic_exchange(&kv->gcm_cache[i], NULL)); /* wipes the key schedule */
        EVP_MAC_CTX_free(atomic_exchange(&kv->hmac_cache[i], NULL));   /* wipes the key pads */
        EVP_PKEY_CTX_free(atomic_exchange(&kv->sign_cache[i], NULL));  /* drops its pkey ref */
    }
    EVP_PKEY_free(kv->pkey);
    explicit_bzero(kv, sizeof(*kv));
    free(kv);
    return NULL;
}

VaultKey *vault_key_free(VaultKey *k) {
    if (!k)
        return NULL;
    for (size_t i = 0; i < k->latest && i < k->n_versions_alloc; i++)
        key_version_unref(k->versions[i]);
    free(k->versions);
    free(k->name);
    free(k->label);
    vault_acl_done(&k->acl);
    for (size_t i = 0; i < k->n_attrs; i++)
        free(k->attrs[i].value);
    free(k->attrs);
    free(k);
    return NULL;
}

static bool label_is_valid(const char *label) {
    size_t n = strlen(label);
    if (n > VAULT_LABEL_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)label[i] < 0x20 || (unsigned char)label[i] >= 0x7f)
            return false;
    return true;
}

static int spec_validate(const VaultKeySpec *spec) {
    if (!spec || spec->type < 0 || spec->type >= _VAULT_KEY_TYPE_MAX)
        return -EINVAL;
    if (spec->policy.kind == VAULT_POLICY_LOCAL) {
        if (spec->policy.max_age_sec != 0)
            return -EINVAL;
    } else if (spec->policy.kind == VAULT_POLICY_ATTESTED) {
        if (spec->policy.max_age_sec == 0 || spec->policy.max_age_sec > VAULT_MAX_ATTESTATION_AGE)
            return -EINVAL;
    } else
        return -EINVAL;
    if (spec->label && !label_is_valid(spec->label))
        return -EINVAL;
    if (spec->acl && acl_validate(spec->acl) < 0)
        return -EINVAL;
    if (spec->obj_flags & ~VAULT_OBJ_SETTABLE)
        return -EINVAL;
    if (spec->n_attrs > 0 && !spec->attrs)
        return -EINVAL;
    return 0;
}

bool vault_attr_type_reserved(uint32_t type) {
    switch (type) {
    case 0x000: /* CKA_CLASS */
    case 0x001: /* CKA_TOKEN */
    case 0x002: /* CKA_PRIVATE */
    case 0x011: /* CKA_VALUE */
    case 0x100: /* CKA_KEY_TYPE */
    case 0x103: /* CKA_SENSITIVE */
    case 0x104: /* CKA_ENCRYPT */
    case 0x105: /* CKA_DECRYPT */
    case 0x106: /* CKA_WRAP */
    case 0x107: /* CKA_UNWRAP */
    case 0x108: /* CKA_SIGN */
    case 0x109: /* CKA_SIGN_RECOVER */
    case 0x10A: /* CKA_VERIFY */
    case 0x10B: /* CKA_VERIFY_RECOVER */
    case 0x10C: /* CKA_DERIVE */
    case 0x120: /* CKA_MODULUS */
    case 0x121: /* CKA_MODULUS_BITS */
    case 0x122: /* CKA_PUBLIC_EXPONENT */
    case 0x123: /* CKA_PRIVATE_EXPONENT */
    case 0x124: /* CKA_PRIME_1 */
    case 0x125: /* CKA_PRIME_2 */
    case 0x126: /* CKA_EXPONENT_1 */
    case 0x127: /* CKA_EXPONENT_2 */
    case 0x128: /* CKA_COEFFICIENT */
    case 0x129: /* CKA_PUBLIC_KEY_INFO */
    case 0x161: /* CKA_VALUE_LEN */
    case 0x162: /* CKA_EXTRACTABLE */
    case 0x163: /* CKA_LOCAL */
    case 0x164: /* CKA_NEVER_EXTRACTABLE */
    case 0x165: /* CKA_ALWAYS_SENSITIVE */
    case 0x166: /* CKA_KEY_GEN_MECHANISM */
    case 0x170: /* CKA_MODIFIABLE */
    case 0x171: /* CKA_COPYABLE */
    case 0x172: /* CKA_DESTROYABLE */
    case 0x180: /* CKA_EC_PARAMS */
    case 0x181: /* CKA_EC_POINT */
    case 0x086: /* CKA_TRUSTED */
    case 0x210: /* CKA_WRAP_WITH_TRUSTED */
        return true;
    default:
        return false;
    }
}

static int attr_cmp(const void *a, const void *b) {
    const VaultKeyAttr *x = a, *y = b;
    return x->type < y->type ? -1 : x->type > y->type;
}

/* Merges attrs into a copy of (old, n_old): a value replaces its type's, len 0 removes it.
 * Checks the caps, reserved and duplicate types. *ret / *ret_n: a new sorted array. */
static int attrs_merge(const VaultKeyAttr *old, size_t n_old, const VaultAttr *attrs, size_t n,
                       VaultKeyAttr **ret, size_t *ret_n) {
    VaultKeyAttr *a;
    size_t m = 0, total = 0;
    int r = -EINVAL;
    if (n > VAULT_ATTR_MAX)
        return -E2BIG;
    for (size_t i = 0; i < n; i++) {
        if (vault_attr_type_reserved(attrs[i].type) || (attrs[i].len > 0 && !attrs[i].value))
            return -EINVAL;
        if (attrs[i].len > VAULT_ATTR_VALUE_MAX)
            return -E2BIG;
        for (size_t j = 0; j < i; j++)
            if (attrs[j].type == attrs[i].type)
                return -EINVAL;
    }
    a = calloc(n_old + n + 1, sizeof *a);
    if (!a)
        return -ENOMEM;
    for (size_t i = 0; i < n_old; i++) {
        bool replaced = false;
        for (size_t j = 0; j < n; j++)
            replaced |= attrs[j].type == old[i].type;
        if (replaced)
            continue;
        a[m].type = old[i].type;
        a[m].len = old[i].len;
        if (!(a[m].value = malloc(old[i].len ? old[i].len : 1)))
            goto oom;
        memcpy(a[m].value, old[i].value, old[i].len);
        m++;
    }
    for (size_t j = 0; j < n; j++) {
        if (attrs[j].len == 0)
            continue;
        a[m].type = attrs[j].type;
        a[m].len = attrs[j].len;
        if (!(a[m].value = malloc(attrs[j].len)))
            goto oom;
        memcpy(a[m].value, attrs[j].value, attrs[j].len);
        m++;
    }
    for (size_t i = 0; i < m; i++)
        total += a[i].len;
    if (m > VAULT_ATTR_MAX || total > VAULT_ATTR_TOTAL_MAX) {
        r = -E2BIG;
        goto fail;
    }
    qsort(a, m, sizeof *a, attr_cmp);
    *ret = a;
    *ret_n = m;
    return 0;
oom:
    r = -ENOMEM;
fail:
    for (size_t i = 0; i < m; i++)
        free(a[i].value);
    free(a);
    return r;
}

static void attrs_free(VaultKeyAttr *a, size_t n) {
    for (size_t i = 0; i < n; i++)
        free(a[i].value);
    free(a);
}

/* The read-only flags a new object gets from its origin and chosen flags. */
static uint32_t flags_for_origin(uint32_t flags, VaultOrigin origin) {
    flags = vault_obj_flags_history(flags & VAULT_OBJ_SETTABLE);
    if (origin == VAULT_ORIGIN_IMPORTED)
        return flags; /* not local, never "always sensitive" or "never extractable" */
    flags |= VAULT_OBJ_LOCAL;
    if (flags & VAULT_OBJ_SENSITIVE)
        flags |= VAULT_OBJ_ALWAYS_SENSITIVE;
    if (!(flags & VAULT_OBJ_EXTRACTABLE))
        flags |= VAULT_OBJ_NEVER_EXTRACTABLE;
    return flags;
}

int vault_key_new(const char *name, const VaultKeySpec *spec, const VaultPeer *peer,
                  VaultOrigin origin, VaultKey **ret) {
    _cleanup_(vault_key_freep) VaultKey *k = NULL;
    int r;
    if (!vault_key_name_is_valid(name) || !peer)
        return -EINVAL;
    if ((r = spec_validate(spec)) < 0)
        return r;
    k = nt_calloc(1, sizeof(VaultKey));
    if (!k)
        return -ENOMEM;
    k->name = nt_strdup(name);
    if (!k->name)
        return -ENOMEM;
    if (spec->label && spec->label[0]) {
        k->label = nt_strdup(spec->label);
        if (!k->label)
            return -ENOMEM;
    }
    k->type = spec->type;
    k->origin = origin;
    k->policy = spec->policy;
    k->obj_flags = flags_for_origin(spec->obj_flags ? spec->obj_flags : VAULT_OBJ_DEFAULT, origin);
    if (k->obj_flags & VAULT_OBJ_SESSION) {
        if (peer->conn_id == 0)
            return -EINVAL; /* a session object needs a connection to live with */
        k->session_conn = peer->conn_id;
    }
    if (spec->n_attrs > 0 &&
        (r = attrs_merge(NULL, 0, spec->attrs, spec->n_attrs, &k->attrs, &k->n_attrs)) < 0)
        return r;
    if (spec->acl)
        r = vault_acl_copy(spec->acl, &k->acl);
    else if ((r = vault_acl_list_add_uid(&k->acl.use, peer->uid)) >= 0)
        r = vault_acl_list_add_uid(&k->acl.admin, peer->uid);
    if (r < 0)
        return r;
    *ret = TAKE_PTR(k);
    return 0;
}

/* Room for versions up to number `upto`. */
static int key_versions_reserve(VaultKey *k, uint32_t upto) {
    size_t n = k->n_versions_alloc ? k->n_versions_alloc : 4;
    KeyVersion **a;
    if (upto > VAULT_MAX_VERSIONS)
        return -E2BIG;
    if (upto <= k->n_versions_alloc)
        return 0;
    while (n < upto)
        n *= 2;
    if (nt_alloc_should_fail())
        return -ENOMEM;
    a = reallocarray(k->versions, n, sizeof(KeyVersion *));
    if (!a)
        return -ENOMEM;
    memset(a + k->n_versions_alloc, 0, (n - k->n_versions_alloc) * sizeof(KeyVersion *));
    k->versions = a;
    k->n_versions_alloc = n;
    return 0;
}

int vault_key_add_version(VaultKey *k, KeyVersion *kv) {
    int r;
    if (kv->number != k->latest + 1)
        return -EINVAL;
    if ((r = key_versions_reserve(k, kv->number)) < 0)
        return r;
    k->versions[k->latest++] = kv;
    if (k->min_version == 0)
        k->min_version = 1;
    return 0;
}

int vault_key_add_absent(VaultKey *k) {
    int r;
    if ((r = key_versions_reserve(k, k->latest + 1)) < 0)
        return r;
    k->versions[k->latest++] = NULL;
    if (k->min_version == 0)
        k->min_version = 1;
    k->n_absent++;
    return 0;
}

/* v->keys is sorted by name (strcmp): lookups are a binary search, whatever the number of keys
 * and whatever names local users choose. */
static size_t lower_bound_locked(Vault *v, const char *name) {
    size_t lo = 0, hi = v->n_keys;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(v->keys[mid]->name, name) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static VaultKey *find_any_locked(Vault *v, const char *name, size_t *ret_idx) {
    size_t i = lower_bound_locked(v, name);
    if (i >= v->n_keys || !streq(v->keys[i]->name, name))
        return NULL;
    if (ret_idx)
        *ret_idx = i;
    return v->keys[i];
}

VaultKey *vault_find_locked(Vault *v, const char *name) {
    VaultKey *k;
    if (!name)
        return NULL;
    k = find_any_locked(v, name, NULL);
    return k && vault_key_live(k) ? k : NULL;
}

static size_t key_dormant(const VaultKey *k) {
    size_t n = 0;
    for (uint32_t ver = k->min_version; ver > 0 && ver <= k->latest; ver++)
        n += k->versions[ver - 1] && k->versions[ver - 1]->dormant;
    return n;
}

int vault_insert_key_locked(Vault *v, VaultKey *k) {
    size_t i = lower_bound_locked(v, k->name);
    VaultUsage d = key_usage(k);
    int r;
    if (i < v->n_keys && streq(v->keys[i]->name, k->name))
        return -EEXIST;
    if ((r = usage_apply_locked(v, key_owner(k), &d, +1)) < 0)
        return r;
    if (v->n_keys >= v->n_keys_alloc) {
        size_t n = v->n_keys_alloc ? v->n_keys_alloc * 2 : 16;
        VaultKey **a;
        a = nt_alloc_should_fail() ? NULL : reallocarray(v->keys, n, sizeof(VaultKey *));
        if (!a) {
            (void)usage_apply_locked(v, key_owner(k), &d, -1);
            return -ENOMEM;
        }
        v->keys = a;
        v->n_keys_alloc = n;
    }
    memmove(v->keys + i + 1, v->keys + i, (v->n_keys - i) * sizeof(VaultKey *));
    v->keys[i] = k;
    v->n_keys++;
    v->n_dormant += key_dormant(k);
    return 0;
}

/* Removes the key at idx from the table and releases its charge. */
static void remove_at_locked(Vault *v, size_t idx) {
    VaultKey *k = v->keys[idx];
    VaultUsage d = key_usage(k);
    (void)usage_apply_locked(v, key_owner(k), &d, -1);
    v->n_dormant -= MIN(v->n_dormant, key_dormant(k));
    memmove(v->keys + idx, v->keys + idx + 1, (v->n_keys - idx - 1) * sizeof(VaultKey *));
    v->n_keys--;
}

void vault_clear_table_locked(Vault *v) {
    v->n_keys = 0;
    v->n_usage = 0;
    v->all = v->nonroot = (VaultUsage){0};
    v->n_dormant = 0;
}

int vault_may_create_locked(Vault *v, const VaultPeer *peer, const char *full_name,
                            VaultKeyType type, VaultOrigin origin) {
    uid_t owner;
    VaultUsage d;
    if (vault_name_owner(full_name, &owner) < 0)
        return -EINVAL;
    /* "kms" is import-only, for root too: a name the agent will import into cannot be squatted,
     * and nothing but a verified release decides what a kms/ key is. */
    if (name_is_kms(full_name) && origin != VAULT_ORIGIN_IMPORTED)
        return -ENOTUNIQ;
    /* Only in one's own namespace ("kms" is root's); root anywhere. Checked before existence,
     * so that "taken" (-EEXIST) always means taken in the caller's own namespace. */
    if (peer->uid != 0 && (owner != peer->uid || !isdigit((unsigned char)full_name[0])))
        return -ENOTUNIQ;
    if (find_any_locked(v, full_name, NULL))
        return -EEXIST;
    d = (VaultUsage){.keys = 1,
                     .versions = 1,
                     .bytes =
                         KEY_META_BASE + 2 * (24 + strlen(full_name)) + vault_version_cost(type)};
    return quota_check_locked(v, peer, owner, &d);
}

/* Makes the table's state durable; called inside WRITE_LOCKED. The state is serialized under
 * the write lock (a copy: each version's keystore form is kept), then the write lock is dropped
 * while the file is sealed, written and fsync'ed, so that other users' operations and lookups
 * do not wait for the disk; mutate_lock stays held, so no other mutation runs before the caller
 * has seen the result (and undone its change on failure). Readers may see the new state just
 * before it is durable; the mutating caller is answered only after. */
static int persist_locked(Vault *v) {
    _cleanup_(secret_freep) Secret *content = NULL;
    int r;
    if (!v->keystore)
        return 0;
    if ((r = keystore_serialize_locked(v, &content)) < 0)
        return r;
    (void)pthread_rwlock_unlock(&v->lock);
    r = keystore_write_content(v->keystore, content);
    (void)pthread_rwlock_wrlock(&v->lock);
    return r;
}

int vault_persist_locked(Vault *v) {
    return persist_locked(v);
}

/* vault_insert_key() inside WRITE_LOCKED. */
static int insert_key_persist_locked(Vault *v, const VaultPeer *peer, VaultKey *k) {
    VaultUsage d = key_usage(k);
    int r;
    if ((r = vault_may_create_locked(v, peer, k->name, k->type, k->origin)) < 0 ||
        (r = quota_check_locked(v, peer, key_owner(k), &d)) < 0)
        return r;
    r = vault_insert_key_locked(v, k);
    if (r < 0)
        return r;
    if (k->session_conn)
        return 0;             /* a session object is never saved */
    k->pending_insert = true; /* invisible until durable (persist_locked) */
    r = persist_locked(v);
    k->pending_insert = false;
    if (r < 0) {
        /* Undo: the caller still owns k. */
        size_t idx;
        if (find_any_locked(v, k->name, &idx))
            remove_at_locked(v, idx);
        return r;
    }
    return 0;
}

int vault_insert_key(Vault *v, const VaultPeer *peer, VaultKey *k) {
    int r;
    if (!peer)
        return -EINVAL;
    if ((r = vault_acl_check_caps(&k->acl, peer)) < 0)
        return r;
    WRITE_LOCKED(v);
    if ((r = vault_object_login_check_locked(v, peer, k)) < 0)
        return r;
    return insert_key_persist_locked(v, peer, k);
}

/* What importing `version` of a key of `type` into name would do, read lock held: 0 (a new key
 * or a newer version), or the refusal. */
static int import_check_locked(Vault *v, const VaultPeer *peer, const char *name, VaultKeyType type,
                               uint32_t version) {
    VaultKey *k = vault_find_locked(v, name);
    if (version == 0)
        return -EINVAL;
    if (version > VAULT_MAX_VERSIONS)
        return -E2BIG;
    if (!k)
        return vault_may_create_locked(v, peer, name, type, VAULT_ORIGIN_IMPORTED);
    if (k->type != type)
        return -EMEDIUMTYPE;
    if (version == k->latest)
        return -EEXIST;
    if (version < k->latest)
        return -ESTALE;
    return 0;
}

int vault_import_check(Vault *v, const VaultPeer *peer, const char *name, VaultKeyType type,
                       uint32_t version) {
    READ_LOCKED(v);
    return import_check_locked(v, peer, name, type, version);
}

static void key_meta_swap(VaultKey *a, VaultKey *b) {
    VaultPolicy p = a->policy;
    VaultAcl acl = a->acl;
    char *label = a->label;
    a->policy = b->policy;
    a->acl = b->acl;
    a->label = b->label;
    b->policy = p;
    b->acl = acl;
    b->label = label;
}

int vault_import_version(Vault *v, const VaultPeer *peer, VaultKey **tmpl, KeyVersion **kv) {
    VaultKey *t = *tmpl, *k;
    KeyVersion *nv = *kv;
    uint32_t ver = nv->number, gap;
    VaultUsage old_u, new_u, d;
    int r;

    if (!peer || t->n_versions_alloc != 0 || t->latest != 0)
        return -EINVAL;
    if ((r = vault_acl_check_caps(&t->acl, peer)) < 0)
        return r;
    WRITE_LOCKED(v);
    if ((r = import_check_locked(v, peer, t->name, t->type, ver)) < 0)
        return r;
    k = vault_find_locked(v, t->name);
    if (!k) {
        /* A new key: the versions before this one were never delivered here. */
        t->latest = ver - 1;
        t->min_version = ver;
        if ((r = vault_key_add_version(t, nv)) < 0) {
            t->latest = 0;
            t->min_version = 0;
            return r;
        }
        r = insert_key_persist_locked(v, peer, t);
        if (r == -ESTALE)
            r = -EIO; /* the keystore's "not opened", not this import's "older version" */
        if (r < 0) {
            t->versions[ver - 1] = NULL; /* the caller keeps nv */
            t->latest = 0;
            t->min_version = 0;
            return r;
        }
        *tmpl = NULL;
        *kv = NULL;
        return 0;
    }
    /* A newer version of an existing key. Versions between the latest and this one (a release
     * skipped while this VM was away) are absent: never delivered, never usable here. The
     * key's policy, label and ACL become the release's: the KMS decides them. */
    gap = ver - k->latest - 1;
    if ((r = key_versions_reserve(k, ver)) < 0)
        return r;
    old_u = key_usage(k);
    key_meta_swap(k, t);
    new_u = key_usage(k);
    new_u.versions += 1;
    new_u.bytes += vault_version_cost(k->type);
    d = (VaultUsage){.versions = 1,
                     .bytes = new_u.bytes > old_u.bytes ? new_u.bytes - old_u.bytes : 0};
    if ((r = quota_check_locked(v, peer, key_owner(k), &d)) < 0 ||
        (r = usage_apply_locked(v, key_owner(k), &new_u, +1)) < 0) {
        key_meta_swap(k, t);
        return r;
    }
    (void)usage_apply_locked(v, key_owner(k), &old_u, -1);
    /* Invisible until durable, as a rotation (the serializer writes the gap and pending_kv). */
    k->pending_kv = nv;
    k->pending_gap = gap;
    r = persist_locked(v);
    k->pending_kv = NULL;
    k->pending_gap = 0;
    if (r == -ESTALE)
        r = -EIO; /* the keystore's "not opened", not this import's "older version" */
    if (r < 0) {
        (void)usage_apply_locked(v, key_owner(k), &old_u, +1);
        (void)usage_apply_locked(v, key_owner(k), &new_u, -1);
        key_meta_swap(k, t);
        return r;
    }
    for (uint32_t i = 0; i < gap; i++)
        k->versions[k->latest++] = NULL;
    k->n_absent += gap;
    k->versions[k->latest++] = nv;
    *kv = NULL; /* *tmpl holds the old metadata: the caller frees it */
    return 0;
}

/* ---- public keys: JWK and RFC 7638 thumbprint ---- */

static int b64url(const uint8_t *p, size_t n, char **ret) {
    return base64url_encode_alloc(p, n, ret);
}

static int bn_param_b64url(EVP_PKEY *pkey, const char *param, size_t pad, char **ret) {
    _cleanup_(BN_clear_freep) BIGNUM *bn = NULL;
    _cleanup_free_ uint8_t *buf = NULL;
    int n;
    if (!EVP_PKEY_get_bn_param(pkey, param, &bn))
        return nt_openssl_error(-EIO, "EVP_PKEY_get_bn_param");
    n = pad ? (int)pad : BN_num_bytes(bn);
    if (n <= 0 || (size_t)BN_num_bytes(bn) > (size_t)n)
        return -EIO;
    buf = nt_malloc((size_t)n);
    if (!buf)
        return -ENOMEM;
    if (BN_bn2binpad(bn, buf, n) != n)
        return -EIO;
    n = b64url(buf, (size_t)n, ret);
    explicit_bzero(buf, pad ? pad : 1);
    return n;
}

static size_t ec_field_size(EVP_PKEY *pkey) {
    return (size_t)(EVP_PKEY_get_bits(pkey) + 7) / 8;
}

static int ec_curve_name(EVP_PKEY *pkey, const char **ret) {
    char group[64];
    if (!EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
                                        NULL))
        return -EIO;
    if (streq(group, "prime256v1") || streq(group, "P-256"))
        *ret = "P-256";
    else if (streq(group, "secp384r1") || streq(group, "P-384"))
        *ret = "P-384";
    else
        return -EOPNOTSUPP;
    return 0;
}

static void free_wiped_string(char **p) {
    if (*p) {
        explicit_bzero(*p, strlen(*p));
        free(*p);
    }
}

int vault_pkey_to_jwk(EVP_PKEY *pkey, bool include_private, json_t **ret) {
    _cleanup_free_ char *x = NULL, *y = NULL, *n = NULL, *e = NULL, *thp_in = NULL;
    _cleanup_(free_wiped_string) char *d = NULL;
    _cleanup_free_ char *kid = NULL;
    json_auto_t *jwk = NULL;
    uint8_t digest[SHA256_DIGEST_LENGTH];
    int r;

    if (EVP_PKEY_is_a(pkey, "EC")) {
        uint8_t pt[1 + 2 * 66];
        size_t len = 0, fs = ec_field_size(pkey);
        const char *crv;
        if ((r = ec_curve_name(pkey, &crv)) < 0)
            return r;
        if (!EVP_PKEY_get_octet_string_param(pkey, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, pt,
                                             sizeof pt, &len) ||
            len != 1 + 2 * fs || pt[0] != 0x04)
            return nt_openssl_error(-EIO, "EC public point");
        if ((r = b64url(pt + 1, fs, &x)) < 0 || (r = b64url(pt + 1 + fs, fs, &y)) < 0)
            return r;
        if (include_private && (r = bn_param_b64url(pkey, OSSL_PKEY_PARAM_PRIV_KEY, fs, &d)) < 0)
            return r;
        if (asprintf(&thp_in, "{\"crv\":\"%s\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", crv, x,
                     y) < 0)
            return -ENOMEM;
        jwk = json_pack("{s:s,s:s,s:s,s:s}", "kty", "EC", "crv", crv, "x", x, "y", y);
    } else if (EVP_PKEY_is_a(pkey, "RSA")) {
        if ((r = bn_param_b64url(pkey, OSSL_PKEY_PARAM_RSA_N, 0, &n)) < 0 ||
            (r = bn_param_b64url(pkey, OSSL_PKEY_PARAM_RSA_E, 0, &e)) < 0)
            return r;
        if (include_private)
            return -EOPNOTSUPP;
        if (asprintf(&thp_in, "{\"e\":\"%s\",\"kty\":\"RSA\",\"n\":\"%s\"}", e, n) < 0)
            return -ENOMEM;
        jwk = json_pack("{s:s,s:s,s:s}", "kty", "RSA", "n", n, "e", e);
    } else if (EVP_PKEY_is_a(pkey, "ED25519")) {
        uint8_t pub[32];
        size_t len = sizeof pub;
        if (include_private)
            return -EOPNOTSUPP;
        if (!EVP_PKEY_get_raw_public_key(pkey, pub, &len) || len != sizeof pub)
            return nt_openssl_error(-EIO, "Ed25519 public key");
        if ((r = b64url(pub, len, &x)) < 0)
            return r;
        if (asprintf(&thp_in, "{\"crv\":\"Ed25519\",\"kty\":\"OKP\",\"x\":\"%s\"}", x) < 0)
            return -ENOMEM;
        jwk = json_pack("{s:s,s:s,s:s}", "kty", "OKP", "crv", "Ed25519", "x", x);
    } else
        return -EOPNOTSUPP;
    if (!jwk)
        return -ENOMEM;

    if (!SHA256((const uint8_t *)thp_in, strlen(thp_in), digest))
        return -EIO;
    if ((r = b64url(digest, sizeof digest, &kid)) < 0)
        return r;
    if (json_object_set_new(jwk, "kid", json_string(kid)) < 0)
        return -ENOMEM;
    if (d && json_object_set_new(jwk, "d", json_string(d)) < 0)
        return -ENOMEM;
    *ret = TAKE_PTR(jwk);
    return 0;
}

int key_version_set_thumbprint(KeyVersion *kv) {
    json_auto_t *jwk = NULL;
    const char *kid;
    int r = vault_pkey_to_jwk(kv->pkey, false, &jwk);
    if (r < 0)
        return r;
    kid = json_string_value(json_object_get(jwk, "kid"));
    if (!kid || strlen(kid) != VAULT_THUMBPRINT_LEN)
        return -EIO;
    memcpy(kv->thumbprint, kid, VAULT_THUMBPRINT_LEN + 1);
    return 0;
}

/* ---- PKCS#8 ---- */

static int pkey_check_type(VaultKeyType type, EVP_PKEY *pkey) {
    const char *crv;
    switch (type) {
    case VAULT_KEY_EC_P256:
    case VAULT_KEY_EC_P384:
        if (EVP_PKEY_get_base_id(pkey) != EVP_PKEY_EC || ec_curve_name(pkey, &crv) < 0)
            return -EBADMSG;
        if (!streq(crv, type == VAULT_KEY_EC_P256 ? "P-256" : "P-384"))
            return -EBADMSG;
        return 0;
    case VAULT_KEY_ED25519:
        return EVP_PKEY_get_base_id(pkey) == EVP_PKEY_ED25519 ? 0 : -EBADMSG;
    case VAULT_KEY_RSA2048:
    case VAULT_KEY_RSA3072:
    case VAULT_KEY_RSA4096: {
        static const int bits[] = {2048, 3072, 4096};
        _cleanup_(BN_clear_freep) BIGNUM *e = NULL;
        if (EVP_PKEY_get_base_id(pkey) != EVP_PKEY_RSA)
            return -EBADMSG;
        if (EVP_PKEY_get_bits(pkey) != bits[type - VAULT_KEY_RSA2048])
            return -EBADMSG;
        if (!EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_E, &e) || !BN_is_word(e, 65537))
            return -EBADMSG;
        return 0;
    }
    default:
        return -EBADMSG;
    }
}

/* Keystore material of asymmetric keys: the key's OpenSSL parameters, exported with
 * EVP_PKEY_todata() and imported with EVP_PKEY_fromdata(), as a fixed list per type of
 * { u32 length (BE) | bytes }. Integers are OpenSSL's native unsigned encoding (little-endian
 * on x86-64, the only SEV-SNP guest architecture). Unlike PKCS#8 encoding and decoding, this
 * path leaves no copy of the private key in freed heap memory: OpenSSL keeps the private
 * parameters in the secure heap and clears them on free, and import reads straight from the
 * caller's (Secret) buffer. */
typedef struct MaterialField {
    const char *name;
    unsigned type;
} MaterialField;

static const MaterialField ec_fields[] = {
    {OSSL_PKEY_PARAM_GROUP_NAME, OSSL_PARAM_UTF8_STRING},
    {OSSL_PKEY_PARAM_PUB_KEY, OSSL_PARAM_OCTET_STRING},
    {OSSL_PKEY_PARAM_PRIV_KEY, OSSL_PARAM_UNSIGNED_INTEGER},
};
static const MaterialField ed_fields[] = {
    {OSSL_PKEY_PARAM_PUB_KEY, OSSL_PARAM_OCTET_STRING},
    {OSSL_PKEY_PARAM_PRIV_KEY, OSSL_PARAM_OCTET_STRING},
};
static const MaterialField rsa_fields[] = {
    {OSSL_PKEY_PARAM_RSA_N, OSSL_PARAM_UNSIGNED_INTEGER},
    {OSSL_PKEY_PARAM_RSA_E, OSSL_PARAM_UNSIGNED_INTEGER},
    {OSSL_PKEY_PARAM_RSA_D, OSSL_PARAM_UNSIGNED_INTEGER},
    {OSSL_PKEY_PARAM_RSA_FACTOR1, OSSL_PARAM_UNSIGNED_INTEGER},
    {OSSL_PKEY_PARAM_RSA_FACTOR2, OSSL_PARAM_UNSIGNED_INTEGER},
    {OSSL_PKEY_PARAM_RSA_EXPONENT1, OSSL_PARAM_UNSIGNED_INTEGER},
    {OSSL_PKEY_PARAM_RSA_EXPONENT2, OSSL_PARAM_UNSIGNED_INTEGER},
    {OSSL_PKEY_PARAM_RSA_COEFFICIENT1, OSSL_PARAM_UNSIGNED_INTEGER},
};
#define MATERIAL_MAX_FIELDS 8

static int material_fields(VaultKeyType type, const MaterialField **ret, size_t *ret_n,
                           const char **ret_alg) {
    switch (type) {
    case VAULT_KEY_EC_P256:
    case VAULT_KEY_EC_P384:
        *ret = ec_fields;
        *ret_n = ELEMENTSOF(ec_fields);
        *ret_alg = "EC";
        return 0;
    case VAULT_KEY_ED25519:
        *ret = ed_fields;
        *ret_n = ELEMENTSOF(ed_fields);
        *ret_alg = "ED25519";
        return 0;
    case VAULT_KEY_RSA2048:
    case VAULT_KEY_RSA3072:
    case VAULT_KEY_RSA4096:
        *ret = rsa_fields;
        *ret_n = ELEMENTSOF(rsa_fields);
        *ret_alg = "RSA";
        return 0;
    default:
        return -EINVAL;
    }
}

static void osslparam_freep(OSSL_PARAM **p) {
    OSSL_PARAM_free(*p); /* clears the secure (private) part */
}

int vault_pkey_export_material(EVP_PKEY *pkey, VaultKeyType type, uint8_t *out, size_t out_size,
                               size_t *ret_len) {
    _cleanup_(osslparam_freep) OSSL_PARAM *params = NULL;
    const MaterialField *f;
    const char *alg;
    size_t n, off = 0;
    int r;

    if ((r = material_fields(type, &f, &n, &alg)) < 0)
        return r;
    if (EVP_PKEY_todata(pkey, EVP_PKEY_KEYPAIR, &params) != 1)
        return nt_openssl_error(-EIO, "EVP_PKEY_todata");
    for (size_t i = 0; i < n; i++) {
        const OSSL_PARAM *p = OSSL_PARAM_locate_const(params, f[i].name);
        size_t len;
        if (!p || p->data_type != f[i].type)
            return -EIO;
        len = p->data_type == OSSL_PARAM_UTF8_STRING ? strlen(p->data) : p->data_size;
        if (len > UINT32_MAX)
            return -EIO;
        if (out) {
            if (off + 4 + len > out_size)
                return -ENOBUFS;
            out[off] = (uint8_t)(len >> 24);
            out[off + 1] = (uint8_t)(len >> 16);
            out[off + 2] = (uint8_t)(len >> 8);
            out[off + 3] = (uint8_t)len;
            memcpy(out + off + 4, p->data, len);
        }
        off += 4 + len;
    }
    *ret_len = off;
    return 0;
}

int vault_pkey_import_material(VaultKeyType type, const uint8_t *in, size_t len, EVP_PKEY **ret) {
    _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *ctx = NULL;
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *pkey = NULL;
    OSSL_PARAM params[MATERIAL_MAX_FIELDS + 1];
    char group[32];
    const MaterialField *f;
    const char *alg;
    size_t n, off = 0;
    int r;

    if ((r = material_fields(type, &f, &n, &alg)) < 0 || !in)
        return -EBADMSG;
    for (size_t i = 0; i < n; i++) {
        size_t fl;
        if (len - off < 4)
            return -EBADMSG;
        fl = (size_t)in[off] << 24 | (size_t)in[off + 1] << 16 | (size_t)in[off + 2] << 8 |
             in[off + 3];
        off += 4;
        if (fl == 0 || fl > len - off || fl > 1024)
            return -EBADMSG;
        switch (f[i].type) {
        case OSSL_PARAM_UTF8_STRING:
            if (fl >= sizeof group || memchr(in + off, 0, fl))
                return -EBADMSG;
            memcpy(group, in + off, fl);
            group[fl] = 0;
            if (!streq(group, type == VAULT_KEY_EC_P256 ? "prime256v1" : "secp384r1"))
                return -EBADMSG;
            params[i] = OSSL_PARAM_construct_utf8_string(f[i].name, group, 0);
            break;
        case OSSL_PARAM_OCTET_STRING:
            params[i] = OSSL_PARAM_construct_octet_string(f[i].name, (void *)(in + off), fl);
            break;
        default:
            params[i] = OSSL_PARAM_construct_BN(f[i].name, (unsigned char *)(in + off), fl);
            break;
        }
        off += fl;
    }
    if (off != len)
        return -EBADMSG;
    params[n] = OSSL_PARAM_construct_end();
    ctx = EVP_PKEY_CTX_new_from_name(NULL, alg, NULL);
    if (!ctx)
        return nt_openssl_error(-ENOMEM, "EVP_PKEY_CTX_new_from_name");
    if (EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_KEYPAIR, params) != 1) {
        ERR_clear_error();
        return -EBADMSG;
    }
    if ((r = pkey_check_type(type, pkey)) < 0) {
        ERR_clear_error();
        return r;
    }
    *ret = TAKE_PTR(pkey);
    return 0;
}

int vault_pkey_from_pkcs8(VaultKeyType type, const uint8_t *der, size_t len, bool pairwise,
                          EVP_PKEY **ret) {
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *pkey = NULL;
    _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *ctx = NULL;
    int r;

    if (!vault_key_type_is_asymmetric(type) || !der || len == 0 || len > 16384)
        return -EBADMSG;
    /* Our own DER reader, not OpenSSL's decoders: those leave copies of the private key in
     * freed heap memory (pkcs8.h). */
    if ((r = pkcs8_parse_private_key(type, der, len, &pkey)) < 0)
        return r;
    if ((r = pkey_check_type(type, pkey)) < 0) {
        ERR_clear_error();
        return r;
    }
    if (!pairwise) {
        *ret = TAKE_PTR(pkey);
        return 0;
    }
    ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    if (!ctx)
        return nt_openssl_error(-ENOMEM, "EVP_PKEY_CTX_new_from_pkey");
    /* The private and public halves must belong together (a mismatched PKCS#8 would make
     * signatures that the exported public key does not verify). */
    if (EVP_PKEY_pairwise_check(ctx) != 1) {
        ERR_clear_error();
        return -EBADMSG;
    }
    *ret = TAKE_PTR(pkey);
    return 0;
}

/* ---- generation ---- */

static int generate_material(VaultKeyType type, KeyVersion *kv) {
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *pkey = NULL;
    size_t n = vault_key_type_secret_size(type);
    int r;

    if (n > 0) {
        _cleanup_(secret_freep) Secret *s = NULL;
        if ((r = secret_new_packed(n, &s)) < 0)
            return r;
        if (RAND_priv_bytes(secret_data(s), (int)n) != 1)
            return nt_openssl_error(-EIO, "RAND_priv_bytes");
        kv->secret = TAKE_PTR(s);
        return 0;
    }
    switch (type) {
    case VAULT_KEY_EC_P256:
        pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
        break;
    case VAULT_KEY_EC_P384:
        pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
        break;
    case VAULT_KEY_ED25519:
        pkey = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
        break;
    case VAULT_KEY_RSA2048:
        pkey = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
        break;
    case VAULT_KEY_RSA3072:
        pkey = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)3072);
        break;
    case VAULT_KEY_RSA4096:
        pkey = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)4096);
        break;
    case VAULT_KEY_RAW:
        return -EOPNOTSUPP; /* imported only */
    default:
        return -EINVAL;
    }
    if (!pkey)
        return nt_openssl_error(-EIO, "EVP_PKEY_Q_keygen");
    kv->pkey = TAKE_PTR(pkey);
    return key_version_set_thumbprint(kv);
}

static int new_version(Vault *v, VaultKeyType type, uint32_t number, KeyVersion **ret) {
    _cleanup_(key_version_unrefp) KeyVersion *kv = key_version_new(number, (uint64_t)vault_now(v));
    int r;
    if (!kv)
        return -ENOMEM;
    if ((r = generate_material(type, kv)) < 0)
        return r;
    *ret = TAKE_PTR(kv);
    return 0;
}

int vault_key_generate(Vault *v, const VaultPeer *peer, const char *name,
                       const VaultKeySpec *spec) {
    _cleanup_(vault_key_freep) VaultKey *k = NULL;
    _cleanup_(key_version_unrefp) KeyVersion *kv = NULL;
    int r;

    if (!v || !peer)
        return -EINVAL;
    RESOLVE(peer, name, full);
    if ((spec->obj_flags & VAULT_OBJ_TRUSTED) && !vault_peer_is_so(peer))
        return -EPERM; /* CKA_TRUSTED: the SO's to set */
    if ((r = vault_key_new(full, spec, peer, VAULT_ORIGIN_GENERATED, &k)) < 0)
        return r;
    if (spec->type == VAULT_KEY_RAW || spec->type == VAULT_KEY_GENERIC_SECRET ||
        vault_key_type_is_object(spec->type))
        return -EOPNOTSUPP; /* raw keys are imported only; objects are made from their value;
                             * generic secrets: unwrapped or imported (no length to make) */
    if ((r = vault_acl_check_caps(&k->acl, peer)) < 0)
        return r;
    {
        /* Cheap early checks so that a taken name or a full quota does not cost an RSA key
         * generation. */
        READ_LOCKED(v);
        if ((r = vault_login_check_locked(v, peer)) < 0 ||
            (r = vault_may_create_locked(v, peer, full, spec->type, VAULT_ORIGIN_GENERATED)) < 0)
            return r;
    }
    if ((r = new_version(v, spec->type, 1, &kv)) < 0)
        return r;
    if ((r = vault_key_add_version(k, kv)) < 0)
        return r;
    kv = NULL;
    if ((r = vault_insert_key(v, peer, k)) < 0)
        return r;
    k = NULL;
    return 0;
}

/* Plaintext import (OBJECT_CREATE with a VALUE): raw secret bytes of the type's exact size, or
 * a PKCS#8 PrivateKeyInfo for the asymmetric types (pairwise-checked). Origin imported. */
static int material_from_value(VaultKeyType type, const uint8_t *value, size_t len,
                               KeyVersion *kv) {
    size_t n = vault_key_type_secret_size(type);
    int r;
    if (type == VAULT_KEY_RAW || vault_key_type_is_object(type))
        return -EOPNOTSUPP; /* raw keys come only from the KMS; objects: vault_object_create */
    if (type == VAULT_KEY_GENERIC_SECRET) {
        if (len == 0 || len > VAULT_GENERIC_SECRET_MAX)
            return -EBADMSG;
        return secret_new_packed_copy(value, len, &kv->secret);
    }
    if (n > 0) {
        if (len != n)
            return -EBADMSG;
        return secret_new_packed_copy(value, n, &kv->secret);
    }
    if ((r = vault_pkey_from_pkcs8(type, value, len, true, &kv->pkey)) < 0)
        return r;
    return key_version_set_thumbprint(kv);
}

int vault_key_import_plain(Vault *v, const VaultPeer *peer, const char *name,
                           const VaultKeySpec *spec, const uint8_t *value, size_t len) {
    _cleanup_(vault_key_freep) VaultKey *k = NULL;
    _cleanup_(key_version_unrefp) KeyVersion *kv = NULL;
    int r;

    if (!v || !peer || !spec || !value || len == 0)
        return -EINVAL;
    RESOLVE(peer, name, full);
    if ((spec->obj_flags & VAULT_OBJ_TRUSTED) && !vault_peer_is_so(peer))
        return -EPERM; /* CKA_TRUSTED: the SO's to set */
    if ((r = vault_key_new(full, spec, peer, VAULT_ORIGIN_IMPORTED, &k)) < 0)
        return r;
    if ((r = vault_acl_check_caps(&k->acl, peer)) < 0)
        return r;
    {
        READ_LOCKED(v);
        if ((r = vault_login_check_locked(v, peer)) < 0 ||
            (r = vault_may_create_locked(v, peer, full, spec->type, VAULT_ORIGIN_IMPORTED)) < 0)
            return r;
    }
    kv = key_version_new(1, (uint64_t)vault_now(v));
    if (!kv)
        return -ENOMEM;
    if ((r = material_from_value(spec->type, value, len, kv)) < 0)
        return r;
    if ((r = vault_key_add_version(k, kv)) < 0)
        return r;
    kv = NULL;
    if ((r = vault_insert_key(v, peer, k)) < 0)
        return r;
    k = NULL;
    return 0;
}

/* ---- administration ---- */

/* name: a full name (resolved by the caller). */
/* The error for a name that finds no key: -ENOKEY in the peer's own namespace (and for root),
 * but -EPERM in another owner's, exactly as for a key the peer may not use, so that nobody
 * learns whether someone else's key exists. */
static int absent_error(const VaultPeer *peer, const char *full_name) {
    uid_t owner;
    if (peer->uid == 0 || (vault_name_owner(full_name, &owner) == 0 && owner == peer->uid &&
                           isdigit((unsigned char)full_name[0])))
        return -ENOKEY;
    return -EPERM;
}

static int admin_lookup_locked(Vault *v, const VaultPeer *peer, const char *name, VaultKey **ret) {
    VaultKey *k;
    if (!peer || !name)
        return -EINVAL;
    k = vault_find_locked(v, name);
    if (!k || !vault_key_seen_by(k, peer))
        return absent_error(peer, name);
    if (!vault_acl_check(&k->acl, peer, VAULT_RIGHT_ADMIN))
        return -EPERM;
    if (vault_login_check_locked(v, peer) < 0)
        return -EBADR; /* the peer's token needs a user login for key changes */
    *ret = k;
    return 0;
}

int vault_key_rotate(Vault *v, const VaultPeer *peer, const char *name, uint32_t *ret_version) {
    _cleanup_(key_version_unrefp) KeyVersion *kv = NULL;
    VaultUsage d;
    VaultKeyType type;
    uint32_t next;
    VaultKey *k;
    int r;

    if (!v)
        return -EINVAL;
    RESOLVE(peer, name, full);
    name = full;
    {
        READ_LOCKED(v);
        if ((r = admin_lookup_locked(v, peer, name, &k)) < 0)
            return r;
        /* A kms/ key gets new versions only from the KMS (a verified release). */
        if (name_is_kms(name))
            return -EPERM;
        if (k->type == VAULT_KEY_RAW || vault_key_type_is_object(k->type) || k->session_conn)
            return -EOPNOTSUPP;
        type = k->type;
        next = k->latest + 1;
        if (next > VAULT_MAX_VERSIONS)
            return -E2BIG;
        d = (VaultUsage){.versions = 1, .bytes = vault_version_cost(type)};
        if ((r = quota_check_locked(v, peer, key_owner(k), &d)) < 0)
            return r;
    }
    /* Generate outside the lock (RSA-4096 takes a while); then re-check under the write lock
     * that the key is still the same and nobody rotated in between. */
    if ((r = new_version(v, type, next, &kv)) < 0)
        return r;

    WRITE_LOCKED(v);
    if ((r = admin_lookup_locked(v, peer, name, &k)) < 0)
        return r;
    if (k->type != type || k->latest + 1 != next)
        return -EAGAIN;
    if ((r = quota_check_locked(v, peer, key_owner(k), &d)) < 0 ||
        (r = usage_apply_locked(v, key_owner(k), &d, +1)) < 0)
        return r;
    /* Grow the array now (so that nothing can fail after the write), but keep the version
     * invisible until it is durable: a ciphertext made under a version that then fails to
     * persist could never be decrypted again. */
    if ((r = vault_key_add_version(k, kv)) < 0) {
        (void)usage_apply_locked(v, key_owner(k), &d, -1);
        return r;
    }
    k->versions[--k->latest] = NULL;
    k->pending_kv = kv;
    r = persist_locked(v);
    k->pending_kv = NULL;
    if (r < 0) {
        (void)usage_apply_locked(v, key_owner(k), &d, -1);
        return r; /* kv still owned by us: freed on return */
    }
    k->versions[k->latest++] = TAKE_PTR(kv);
    if (ret_version)
        *ret_version = next;
    return 0;
}

int vault_key_set_min_version(Vault *v, const VaultPeer *peer, const char *name,
                              uint32_t min_version) {
    uint32_t old;
    VaultKey *k;
    int r;

    if (!v)
        return -EINVAL;
    RESOLVE(peer, name, full);
    WRITE_LOCKED(v);
    if ((r = admin_lookup_locked(v, peer, full, &k)) < 0)
        return r;
    if (min_version < k->min_version || min_version > k->latest)
        return -EINVAL;
    if (min_version == k->min_version)
        return 0;
    old = k->min_version;
    k->min_version = min_version; /* the serializer skips versions below the minimum */
    r = persist_locked(v);
    if (r < 0) {
        k->min_version = old;
        return r;
    }
    for (uint32_t i = old; i < min_version; i++) {
        VaultUsage d = {.versions = 1, .bytes = vault_version_cost(k->type)};
        if (!k->versions[i - 1]) { /* absent: never charged */
            k->n_absent -= MIN(k->n_absent, 1);
            continue;
        }
        (void)usage_apply_locked(v, key_owner(k), &d, -1);
        if (k->versions[i - 1] && k->versions[i - 1]->dormant)
            v->n_dormant -= MIN(v->n_dormant, 1);
        k->versions[i - 1] = key_version_unref(k->versions[i - 1]);
    }
    return 0;
}

int vault_key_set_acl(Vault *v, const VaultPeer *peer, const char *name, const VaultAcl *acl) {
    _cleanup_(vault_acl_donep) VaultAcl copy = {0};
    uint64_t before, after;
    VaultUsage d;
    VaultAcl old;
    VaultKey *k;
    int r;

    if (!v || !acl || !peer)
        return -EINVAL;
    RESOLVE(peer, name, full);
    if (acl_validate(acl) < 0)
        return -EINVAL;
    if ((r = vault_acl_check_caps(acl, peer)) < 0)
        return r;
    if ((r = vault_acl_copy(acl, &copy)) < 0)
        return r;
    WRITE_LOCKED(v);
    if ((r = admin_lookup_locked(v, peer, full, &k)) < 0)
        return r;
    before = key_meta_cost(k);
    old = k->acl;
    k->acl = copy;
    after = key_meta_cost(k);
    if (after > before) {
        d = (VaultUsage){.bytes = after - before};
        if ((r = quota_check_locked(v, peer, key_owner(k), &d)) >= 0)
            r = usage_apply_locked(v, key_owner(k), &d, +1);
    } else {
        d = (VaultUsage){.bytes = before - after};
        r = usage_apply_locked(v, key_owner(k), &d, -1);
    }
    if (r < 0) {
        k->acl = old;
        return r;
    }
    r = persist_locked(v);
    if (r < 0) {
        k->acl = old; /* copy still holds the new lists and frees them */
        (void)usage_apply_locked(v, key_owner(k), &d, after > before ? -1 : +1);
        return r;
    }
    copy = old; /* free the previous lists */
    return 0;
}

int vault_key_set_object(Vault *v, const VaultPeer *peer, const char *name, uint32_t flags_set,
                         uint32_t flags_clear, const VaultAttr *attrs, size_t n_attrs) {
    VaultKeyAttr *na = NULL, *oa;
    size_t nn = 0, on;
    uint32_t of, nf;
    uint64_t before, after;
    VaultUsage d;
    VaultKey *k;
    int r;

    if (!v || !peer || (n_attrs > 0 && !attrs))
        return -EINVAL;
    if ((flags_set | flags_clear) & ~VAULT_OBJ_SETTABLE || (flags_set & flags_clear))
        return -EINVAL;
    RESOLVE(peer, name, full);
    /* CKA_TRUSTED is the SO's (hard-wrap): an SO login may change it, and only it, on a key it
     * administers (the SO has no user login, so the login rule does not apply to that change). */
    bool so_trust = (flags_set | flags_clear) & VAULT_OBJ_TRUSTED;
    if (so_trust &&
        (!vault_peer_is_so(peer) || (flags_set | flags_clear) != VAULT_OBJ_TRUSTED || n_attrs > 0))
        return -EPERM;
    WRITE_LOCKED(v);
    if (so_trust) {
        k = vault_find_locked(v, full);
        if (!k || !vault_key_seen_by(k, peer)) /* another connection's session object */
            return absent_error(peer, full);
        if (!vault_acl_check(&k->acl, peer, VAULT_RIGHT_ADMIN))
            return -EPERM;
    } else if ((r = admin_lookup_locked(v, peer, full, &k)) < 0)
        return r;
    of = k->obj_flags;
    nf = (of | flags_set) & ~flags_clear;
    if (nf != of || n_attrs > 0) {
        /* PKCS#11's one-way rules, then MODIFIABLE. */
        if ((of & VAULT_OBJ_SENSITIVE) && !(nf & VAULT_OBJ_SENSITIVE))
            return -EPERM;
        if (!(of & VAULT_OBJ_EXTRACTABLE) && (nf & VAULT_OBJ_EXTRACTABLE))
            return -EPERM;
        if ((of ^ nf) & ((so_trust ? 0 : VAULT_OBJ_TRUSTED) | VAULT_OBJ_PRIVATE |
                         VAULT_OBJ_MODIFIABLE | VAULT_OBJ_COPYABLE | VAULT_OBJ_DESTROYABLE |
                         VAULT_OBJ_WRAP_WITH_TRUSTED | VAULT_OBJ_SESSION))
            return -EPERM; /* fixed at creation (TRUSTED: the SO's, above) */
        if (!(of & VAULT_OBJ_MODIFIABLE))
            return -EPERM;
    }
    if ((r = attrs_merge(k->attrs, k->n_attrs, attrs, n_attrs, &na, &nn)) < 0)
        return r;
    before = key_meta_cost(k);
    oa = k->attrs;
    on = k->n_attrs;
    k->attrs = na;
    k->n_attrs = nn;
    k->obj_flags = vault_obj_flags_history(nf); /* history only grows */
    after = key_meta_cost(k);
    if (after > before) {
        d = (VaultUsage){.bytes = after - before};
        if ((r = quota_check_locked(v, peer, key_owner(k), &d)) >= 0)
            r = usage_apply_locked(v, key_owner(k), &d, +1);
    } else {
        d = (VaultUsage){.bytes = before - after};
        r = usage_apply_locked(v, key_owner(k), &d, -1);
    }
    if (r >= 0 && !k->session_conn) {
        r = persist_locked(v);
        if (r < 0)
            (void)usage_apply_locked(v, key_owner(k), &d, after > before ? -1 : +1);
    }
    if (r < 0) {
        k->attrs = oa;
        k->n_attrs = on;
        k->obj_flags = of;
        attrs_free(na, nn);
        return r;
    }
    attrs_free(oa, on); /* ALWAYS_SENSITIVE stays as it was: set only at creation */
    return 0;
}

int vault_key_delete(Vault *v, const VaultPeer *peer, const char *name) {
    VaultKey *k;
    size_t idx;
    int r;

    if (!v)
        return -EINVAL;
    RESOLVE(peer, name, full);
    name = full;
    WRITE_LOCKED(v);
    if ((r = admin_lookup_locked(v, peer, name, &k)) < 0)
        return r;
    if (vault_key_type_is_object(k->type) && !(k->obj_flags & VAULT_OBJ_DESTROYABLE))
        return -EPERM; /* CKA_DESTROYABLE false */
    k->pending_delete = true;
    r = k->session_conn ? 0 : persist_locked(v);
    if (r < 0) {
        k->pending_delete = false;
        return r;
    }
    if (!find_any_locked(v, name, &idx))
        return -ENOKEY;
    remove_at_locked(v, idx);
    /* Versions still used by in-flight operations are wiped by their last unref. */
    vault_key_free(k);
    return 0;
}

/* ---- describe / list / export ---- */

/* At most this many versions (the newest) in a description: a reply stays far below the
 * frame limit whatever the number of versions ("versions_omitted" counts the rest). */
#define DESCRIBE_MAX_VERSIONS 1000u

static char *hex_of(const uint8_t *p, size_t n) {
    static const char digits[] = "0123456789abcdef";
    char *s = malloc(2 * n + 1);
    if (!s)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        s[2 * i] = digits[p[i] >> 4];
        s[2 * i + 1] = digits[p[i] & 15];
    }
    s[2 * n] = 0;
    return s;
}

/* Key size in bits (AES/HMAC secret length, RSA modulus, EC field; Ed25519 255). */
static uint32_t key_bits(VaultKeyType t) {
    switch (t) {
    case VAULT_KEY_AES128:
        return 128;
    case VAULT_KEY_AES192:
        return 192;
    case VAULT_KEY_AES256:
    case VAULT_KEY_HMAC_SHA256:
        return 256;
    case VAULT_KEY_HMAC_SHA384:
        return 384;
    case VAULT_KEY_EC_P256:
        return 256;
    case VAULT_KEY_EC_P384:
        return 384;
    case VAULT_KEY_ED25519:
        return 255;
    case VAULT_KEY_RSA2048:
        return 2048;
    case VAULT_KEY_RSA3072:
        return 3072;
    case VAULT_KEY_RSA4096:
        return 4096;
    default:
        return 0;
    }
}

/* The object members of a description: "flags", "bits", "attrs" [{"type","value" (hex)}],
 * "spki" (hex DER SubjectPublicKeyInfo of the latest version, asymmetric keys). */
static int key_object_json(const VaultKey *k, const KeyVersion *latest, bool show_private,
                           json_t *o) {
    json_t *a = json_array();
    uint32_t bits = key_bits(k->type);
    if (k->type == VAULT_KEY_GENERIC_SECRET && latest && latest->secret)
        bits = (uint32_t)secret_size(latest->secret) * 8;
    if (k->type == VAULT_KEY_PUBLIC && latest && latest->pkey)
        bits = EVP_PKEY_is_a(latest->pkey, "ED25519") ? 255
                                                      : (uint32_t)EVP_PKEY_get_bits(latest->pkey);
    if (!a || json_object_set_new(o, "attrs", a) < 0 ||
        json_object_set_new(o, "flags", json_integer(k->obj_flags)) < 0 ||
        json_object_set_new(o, "bits", json_integer(bits)) < 0)
        return -ENOMEM;
    /* The value of a data object (unless PRIVATE and the peer's token wants a login it lacks),
     * a certificate, a public key: not secret. */
    if (vault_key_type_is_object(k->type) && latest && latest->secret &&
        (k->type != VAULT_KEY_DATA || !(k->obj_flags & VAULT_OBJ_PRIVATE) || show_private)) {
        char *h = hex_of(secret_const_data(latest->secret), secret_size(latest->secret));
        if (!h || json_object_set_new(o, "value", json_string(h)) < 0) {
            free(h);
            return -ENOMEM;
        }
        free(h);
    }
    if (k->session_conn && json_object_set_new(o, "session", json_true()) < 0)
        return -ENOMEM;
    for (size_t i = 0; i < k->n_attrs; i++) {
        char *h = hex_of(k->attrs[i].value, k->attrs[i].len);
        json_t *e =
            h ? json_pack("{s:I,s:s}", "type", (json_int_t)k->attrs[i].type, "value", h) : NULL;
        free(h);
        if (!e || json_array_append_new(a, e) < 0)
            return -ENOMEM;
    }
    if (latest && latest->pkey) {
        unsigned char *der = NULL;
        int n = i2d_PUBKEY(latest->pkey, &der);
        char *h;
        if (n <= 0)
            return -EIO;
        h = hex_of(der, (size_t)n);
        OPENSSL_free(der);
        if (!h || json_object_set_new(o, "spki", json_string(h)) < 0) {
            free(h);
            return -ENOMEM;
        }
        free(h);
    }
    return 0;
}

/* with_versions: the "versions" array (describe); a list summary has none. */
static int key_to_json_locked(const VaultKey *k, bool with_versions, bool show_private,
                              json_t **ret) {
    json_auto_t *o = NULL, *versions = json_array(), *policy = NULL;
    const KeyVersion *latest = k->versions[k->latest - 1];
    uint32_t first = k->min_version, omitted = 0;

    if (!versions)
        return -ENOMEM;
    if (k->latest - k->min_version + 1 > DESCRIBE_MAX_VERSIONS) {
        first = k->latest - DESCRIBE_MAX_VERSIONS + 1;
        omitted = first - k->min_version;
    }
    for (uint32_t n = first; with_versions && n <= k->latest; n++) {
        const KeyVersion *kv = k->versions[n - 1];
        json_t *e;
        if (!kv)
            continue;
        e = json_pack("{s:I,s:I}", "version", (json_int_t)kv->number, "created",
                      (json_int_t)kv->created);
        if (!e ||
            (kv->thumbprint[0] &&
             json_object_set_new(e, "fingerprint", json_string(kv->thumbprint)) < 0) ||
            (kv->dormant && json_object_set_new(e, "loaded", json_false()) < 0) ||
            json_array_append_new(versions, e) < 0)
            return -ENOMEM;
    }
    policy = json_pack("{s:s}", "kind", vault_policy_kind_to_string(k->policy.kind));
    if (!policy ||
        (k->policy.kind == VAULT_POLICY_ATTESTED &&
         json_object_set_new(policy, "max_age", json_integer(k->policy.max_age_sec)) < 0))
        return -ENOMEM;
    o = json_pack("{s:s,s:s,s:O,s:s,s:b,s:I,s:I,s:o}", "name", k->name, "type",
                  vault_key_type_to_string(k->type), "policy", policy, "origin",
                  origin_table[k->origin], "extractable", 0, "latest_version",
                  (json_int_t)k->latest, "min_version", (json_int_t)k->min_version, "acl",
                  vault_acl_to_json(&k->acl));
    if (!o)
        return -ENOMEM;
    if (with_versions &&
        (json_object_set(o, "versions", versions) < 0 ||
         (omitted > 0 && json_object_set_new(o, "versions_omitted", json_integer(omitted)) < 0)))
        return -ENOMEM;
    if (k->label && json_object_set_new(o, "label", json_string(k->label)) < 0)
        return -ENOMEM;
    if (key_object_json(k, latest, show_private, o) < 0)
        return -ENOMEM;
    if (latest && latest->thumbprint[0] &&
        json_object_set_new(o, "fingerprint", json_string(latest->thumbprint)) < 0)
        return -ENOMEM;
    *ret = TAKE_PTR(o);
    return 0;
}

static bool visible_to(const VaultKey *k, const VaultPeer *peer) {
    return vault_key_seen_by(k, peer) && (vault_acl_check(&k->acl, peer, VAULT_RIGHT_USE) ||
                                          vault_acl_check(&k->acl, peer, VAULT_RIGHT_ADMIN));
}

/* The key name if peer may see it (use or admin right). Read lock held. name: full. */
static int visible_lookup_locked(Vault *v, const VaultPeer *peer, const char *name,
                                 VaultKey **ret) {
    VaultKey *k = vault_find_locked(v, name);
    if (!k || !vault_key_seen_by(k, peer))
        return absent_error(peer, name);
    if (!vault_acl_check(&k->acl, peer, VAULT_RIGHT_USE) &&
        !vault_acl_check(&k->acl, peer, VAULT_RIGHT_ADMIN))
        return -EPERM;
    *ret = k;
    return 0;
}

int vault_key_describe(Vault *v, const VaultPeer *peer, const char *name, json_t **ret) {
    VaultKey *k;
    int r;
    if (!v || !peer || !ret)
        return -EINVAL;
    RESOLVE(peer, name, full);
    READ_LOCKED(v);
    if ((r = visible_lookup_locked(v, peer, full, &k)) < 0)
        return r;
    return key_to_json_locked(k, true, vault_login_check_locked(v, peer) == 0, ret);
}

bool vault_kms_key_exists(Vault *v, const char *full_name) {
    if (!v || !full_name || !name_is_kms(full_name))
        return false;
    READ_LOCKED(v);
    return vault_find_locked(v, full_name) != NULL;
}

int vault_key_type(Vault *v, const VaultPeer *peer, const char *name, VaultKeyType *ret) {
    VaultKey *k;
    int r;
    if (!v || !peer || !ret)
        return -EINVAL;
    RESOLVE(peer, name, full);
    READ_LOCKED(v);
    if ((r = visible_lookup_locked(v, peer, full, &k)) < 0)
        return r;
    *ret = k->type;
    return 0;
}

int vault_key_list(Vault *v, const VaultPeer *peer, json_t **ret) {
    json_auto_t *a = json_array();

    if (!v || !peer || !ret)
        return -EINVAL;
    if (!a)
        return -ENOMEM;
    READ_LOCKED(v);
    /* v->keys is sorted by full name. */
    for (size_t i = 0; i < v->n_keys; i++) {
        const VaultKey *k = v->keys[i];
        if (vault_key_live(k) && visible_to(k, peer) &&
            json_array_append_new(a, json_string(k->name)) < 0)
            return -ENOMEM;
    }
    *ret = TAKE_PTR(a);
    return 0;
}

int vault_key_list_page(Vault *v, const VaultPeer *peer, const char *after, size_t limit,
                        size_t max_bytes, json_t **ret) {
    json_auto_t *keys = json_array(), *page = NULL;
    const char *next = NULL;
    size_t bytes = 0;
    bool show_private;

    if (!v || !peer || !ret || limit == 0)
        return -EINVAL;
    if (!keys)
        return -ENOMEM;
    READ_LOCKED(v);
    show_private = vault_login_check_locked(v, peer) == 0;
    for (size_t i = after && after[0] ? lower_bound_locked(v, after) : 0; i < v->n_keys; i++) {
        const VaultKey *k = v->keys[i];
        json_auto_t *e = NULL;
        _cleanup_free_ char *txt = NULL;
        int r;
        if (!vault_key_live(k) || (after && streq(k->name, after)) || !visible_to(k, peer))
            continue;
        if (json_array_size(keys) >= limit) {
            next = json_string_value(
                json_object_get(json_array_get(keys, json_array_size(keys) - 1), "name"));
            break;
        }
        if ((r = key_to_json_locked(k, false, show_private, &e)) < 0)
            return r;
        txt = json_dumps(e, JSON_COMPACT);
        if (!txt)
            return -ENOMEM;
        if (json_array_size(keys) > 0 && bytes + strlen(txt) + 1 > max_bytes) {
            next = json_string_value(
                json_object_get(json_array_get(keys, json_array_size(keys) - 1), "name"));
            break;
        }
        bytes += strlen(txt) + 1;
        if (json_array_append(keys, e) < 0)
            return -ENOMEM;
    }
    page = json_pack("{s:O,s:s?}", "keys", keys, "next", next);
    if (!page)
        return -ENOMEM;
    if (!next && json_object_set_new(page, "next", json_null()) < 0)
        return -ENOMEM;
    *ret = TAKE_PTR(page);
    return 0;
}

/* The usage flag an encrypt (or decrypt) operation needs: key wrap algorithms WRAP / UNWRAP. */
static uint32_t op_usage(const VaultOp *op, bool encrypt) {
    bool kw = op->alg == VAULT_ALG_AES256_KW || op->alg == VAULT_ALG_AES256_KWP;
    if (encrypt)
        return kw ? VAULT_OBJ_WRAP : VAULT_OBJ_ENCRYPT;
    return kw ? VAULT_OBJ_UNWRAP : VAULT_OBJ_DECRYPT;
}

/* Takes a reference on the version an operation uses. need_attest: the operation uses secret
 * or private material, so an `attested` policy applies. version 0 = latest. */
int vault_acquire_ex(Vault *v, const VaultPeer *peer, const char *name, bool need_attest,
                     uint32_t usage, uint32_t version, VaultKeyType *ret_type, uint32_t *ret_flags,
                     KeyVersion **ret) {
    VaultKey *k;
    KeyVersion *kv;

    if (!v || !peer || !name)
        return -EINVAL;
    RESOLVE(peer, name, full);
    READ_LOCKED(v);
    k = vault_find_locked(v, full);
    if (!k || !vault_key_seen_by(k, peer))
        return absent_error(peer, full);
    if (!vault_acl_check(&k->acl, peer, VAULT_RIGHT_USE))
        return -EPERM;
    /* Data objects, certificates and lone public keys have no operation in vhsmd (the module
     * verifies with a public key itself); only PUBKEY (usage 0) reads a public key. */
    if (vault_key_type_is_object(k->type) && (usage != 0 || k->type != VAULT_KEY_PUBLIC))
        return -EOPNOTSUPP;
    /* Secret or private material: the peer's token may need a user login (on top of the ACL). */
    if (need_attest && vault_login_check_locked(v, peer) < 0)
        return -EBADR;
    /* The object's usage flags (CKA_SIGN, CKA_DECRYPT, ...). */
    if ((k->obj_flags & usage) != usage)
        return -EPERM;
    if (need_attest && k->policy.kind == VAULT_POLICY_ATTESTED) {
        long long at = atomic_load(&v->attestation_time);
        long long exp = atomic_load(&v->attestation_expires);
        long long now = (long long)vault_now(v);
        if (at <= 0 || now < at || now - at >= (long long)k->policy.max_age_sec ||
            (exp > 0 && now >= exp))
            return -EKEYEXPIRED;
    }
    if (version == 0)
        version = k->latest;
    if (version > k->latest)
        return -ENOKEY;
    if (version < k->min_version)
        return -EKEYREVOKED; /* retired: wiped, never to be used again */
    kv = k->versions[version - 1];
    if (!kv)
        return -ENOKEY; /* absent: that version was never delivered to this vault */
    if (kv->dormant && !kv->pkey)
        return -ENOMEM; /* not loaded: the secure heap was full at start */
    *ret_type = k->type;
    if (ret_flags)
        *ret_flags = k->obj_flags;
    *ret = key_version_ref(kv);
    return 0;
}

static int acquire(Vault *v, const VaultPeer *peer, const char *name, bool need_attest,
                   uint32_t usage, uint32_t version, VaultKeyType *ret_type, KeyVersion **ret) {
    return vault_acquire_ex(v, peer, name, need_attest, usage, version, ret_type, NULL, ret);
}

/* acquire() for the other vault modules (vault-par.c). */
int vault_acquire(Vault *v, const VaultPeer *peer, const char *name, bool need_attest,
                  uint32_t usage, VaultKeyType *ret_type, KeyVersion **ret) {
    return acquire(v, peer, name, need_attest, usage, 0, ret_type, ret);
}

int vault_key_export_public(Vault *v, const VaultPeer *peer, const char *name, uint32_t version,
                            VaultPubFormat format, char **ret) {
    _cleanup_(key_version_unrefp) KeyVersion *kv = NULL;
    VaultKeyType type;
    int r;

    if (!ret || format < 0 || format >= _VAULT_PUB_FORMAT_MAX)
        return -EINVAL;
    if ((r = acquire(v, peer, name, false, 0, version, &type, &kv)) < 0)
        return r;
    if (!kv->pkey)
        return -EOPNOTSUPP;
    if (format == VAULT_PUB_JWK) {
        json_auto_t *jwk = NULL;
        char *s;
        if ((r = vault_pkey_to_jwk(kv->pkey, false, &jwk)) < 0)
            return r;
        s = json_dumps(jwk, JSON_COMPACT | JSON_SORT_KEYS);
        if (!s)
            return -ENOMEM;
        *ret = s;
        return 0;
    } else {
        _cleanup_(BIO_free_allp) BIO *b = BIO_new(BIO_s_mem());
        char *data = NULL, *s;
        long n;
        if (!b || PEM_write_bio_PUBKEY(b, kv->pkey) != 1)
            return nt_openssl_error(-EIO, "PEM_write_bio_PUBKEY");
        n = BIO_get_mem_data(b, &data);
        if (n <= 0)
            return -EIO;
        s = nt_malloc((size_t)n + 1);
        if (!s)
            return -ENOMEM;
        memcpy(s, data, (size_t)n);
        s[n] = 0;
        *ret = s;
        return 0;
    }
}

/* ---- envelope ---- */

static void envelope_header(uint8_t h[VAULT_ENVELOPE_HEADER_SIZE], VaultAlg alg, uint32_t ver) {
    memcpy(h, ENVELOPE_MAGIC, 4);
    h[4] = ENVELOPE_FORMAT;
    h[5] = (uint8_t)alg;
    h[6] = h[7] = 0;
    h[8] = (uint8_t)(ver >> 24);
    h[9] = (uint8_t)(ver >> 16);
    h[10] = (uint8_t)(ver >> 8);
    h[11] = (uint8_t)ver;
}

static int envelope_parse(const uint8_t *in, size_t len, VaultAlg alg, uint32_t *ret_version) {
    uint32_t ver;
    if (len < VAULT_ENVELOPE_HEADER_SIZE || memcmp(in, ENVELOPE_MAGIC, 4) != 0)
        return -EBADMSG;
    if (in[4] != ENVELOPE_FORMAT)
        return -EOPNOTSUPP;
    if (in[5] != (uint8_t)alg || in[6] != 0 || in[7] != 0)
        return -EBADMSG;
    ver = (uint32_t)in[8] << 24 | (uint32_t)in[9] << 16 | (uint32_t)in[10] << 8 | in[11];
    if (ver == 0)
        return -EBADMSG;
    *ret_version = ver;
    return 0;
}

/* Finds the version to use for decrypt/verify: from the envelope, or op->version when RAW. */
static int input_version(const VaultOp *op, const uint8_t **in, size_t *in_len,
                         uint32_t *ret_version) {
    int r;
    if (op->flags & VAULT_OP_RAW) {
        *ret_version = op->version;
        return 0;
    }
    if ((r = envelope_parse(*in, *in_len, op->alg, ret_version)) < 0)
        return r;
    *in += VAULT_ENVELOPE_HEADER_SIZE;
    *in_len -= VAULT_ENVELOPE_HEADER_SIZE;
    return 0;
}

/* Prepends the envelope header (unless RAW) to body; takes body. */
static int wrap_output(const VaultOp *op, uint32_t version, uint8_t *body, size_t body_len,
                       uint8_t **ret, size_t *ret_len) {
    uint8_t *out;
    if (op->flags & VAULT_OP_RAW) {
        *ret = body;
        *ret_len = body_len;
        return 0;
    }
    out = nt_malloc(body_len + VAULT_ENVELOPE_HEADER_SIZE);
    if (!out) {
        free(body);
        return -ENOMEM;
    }
    envelope_header(out, op->alg, version);
    memcpy(out + VAULT_ENVELOPE_HEADER_SIZE, body, body_len);
    free(body);
    *ret = out;
    *ret_len = body_len + VAULT_ENVELOPE_HEADER_SIZE;
    return 0;
}

/* ---- algorithm table ---- */

static bool alg_fits(VaultKeyType t, VaultAlg a) {
    switch (a) {
    case VAULT_ALG_AES256_GCM:
    case VAULT_ALG_AES256_KW:
    case VAULT_ALG_AES256_KWP:
        return t == VAULT_KEY_AES256;
    case VAULT_ALG_HMAC:
        return t == VAULT_KEY_HMAC_SHA256 || t == VAULT_KEY_HMAC_SHA384;
    case VAULT_ALG_ECDSA:
        return t == VAULT_KEY_EC_P256 || t == VAULT_KEY_EC_P384;
    case VAULT_ALG_ED25519:
        return t == VAULT_KEY_ED25519;
    case VAULT_ALG_RSA_PSS_SHA256:
    case VAULT_ALG_RSA_PSS_SHA384:
    case VAULT_ALG_RSA_PKCS1_SHA256:
    case VAULT_ALG_RSA_PKCS1_SHA384:
    case VAULT_ALG_RSA_OAEP_SHA256:
    case VAULT_ALG_RSA_OAEP_SHA1:
        return t >= VAULT_KEY_RSA2048 && t <= VAULT_KEY_RSA4096;
    default:
        return false;
    }
}

/* Digests fetched once per process (never freed), like the hot symmetric algorithms below: the
 * constants EVP_sha256() etc. make every EVP_DigestSignInit() fetch the implementation again (a
 * provider lookup under a lock per request). NULL if the fetch failed: then the constant. */
static pthread_once_t hot_mds_once = PTHREAD_ONCE_INIT;
static EVP_MD *hot_sha1, *hot_sha256, *hot_sha384;

static void hot_mds_fetch(void) {
    hot_sha1 = EVP_MD_fetch(NULL, "SHA1", NULL);
    hot_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    hot_sha384 = EVP_MD_fetch(NULL, "SHA384", NULL);
    ERR_clear_error();
}

static const EVP_MD *md_sha(unsigned bits) {
    (void)pthread_once(&hot_mds_once, hot_mds_fetch);
    switch (bits) {
    case 1:
        return hot_sha1 ?: EVP_sha1();
    case 384:
        return hot_sha384 ?: EVP_sha384();
    default:
        return hot_sha256 ?: EVP_sha256();
    }
}

static const EVP_MD *alg_md(VaultKeyType t, VaultAlg a) {
    switch (a) {
    case VAULT_ALG_HMAC:
        return md_sha(t == VAULT_KEY_HMAC_SHA384 ? 384 : 256);
    case VAULT_ALG_ECDSA:
        return md_sha(t == VAULT_KEY_EC_P384 ? 384 : 256);
    case VAULT_ALG_RSA_PSS_SHA256:
    case VAULT_ALG_RSA_PKCS1_SHA256:
    case VAULT_ALG_RSA_OAEP_SHA256:
        return md_sha(256);
    case VAULT_ALG_RSA_PSS_SHA384:
    case VAULT_ALG_RSA_PKCS1_SHA384:
        return md_sha(384);
    case VAULT_ALG_RSA_OAEP_SHA1:
        return md_sha(1);
    default:
        return NULL;
    }
}

static bool alg_is_cipher(VaultAlg a) {
    return a == VAULT_ALG_AES256_GCM || a == VAULT_ALG_AES256_KW || a == VAULT_ALG_AES256_KWP ||
           a == VAULT_ALG_RSA_OAEP_SHA256 || a == VAULT_ALG_RSA_OAEP_SHA1;
}

static int op_validate(const VaultOp *op, bool cipher, const uint8_t *in, size_t in_len) {
    unsigned allowed = VAULT_OP_RAW | (cipher ? 0 : VAULT_OP_PREHASHED | VAULT_OP_SIG_RAW_RS);
    if (!op || op->alg <= 0 || op->alg >= _VAULT_ALG_MAX)
        return -EINVAL;
    if (alg_is_cipher(op->alg) != cipher)
        return -EOPNOTSUPP;
    if (op->flags & ~allowed)
        return -EINVAL;
    if ((op->flags & VAULT_OP_RAW) && op->alg == VAULT_ALG_AES256_GCM)
        return -EINVAL;
    if ((op->flags & VAULT_OP_SIG_RAW_RS) && op->alg != VAULT_ALG_ECDSA)
        return -EINVAL;
    if (op->aad_len > 0 && (op->alg != VAULT_ALG_AES256_GCM || !op->aad))
        return -EINVAL;
    if (op->aad_len > VAULT_MAX_INPUT || in_len > VAULT_MAX_INPUT || (!in && in_len > 0))
        return -EINVAL;
    return 0;
}

/* ---- symmetric primitives ---- */

/* Hot-path algorithm implementations, fetched once per process (never freed): a fetch per
 * operation (explicit, or implicit through EVP_aes_256_gcm() in OpenSSL 3) costs a provider
 * lookup under a lock on every request. */
static pthread_once_t hot_algs_once = PTHREAD_ONCE_INIT;
static EVP_MAC *hot_hmac;
static EVP_CIPHER *hot_gcm, *hot_cbc, *hot_ctr;

static void hot_algs_fetch(void) {
    hot_hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    hot_gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    hot_cbc = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL);
    hot_ctr = EVP_CIPHER_fetch(NULL, "AES-256-CTR", NULL);
    ERR_clear_error();
}

static EVP_MAC *hmac_alg(void) {
    (void)pthread_once(&hot_algs_once, hot_algs_fetch);
    return hot_hmac;
}

static EVP_CIPHER *gcm_alg(void) {
    (void)pthread_once(&hot_algs_once, hot_algs_fetch);
    return hot_gcm;
}

/* Random GCM IVs, drawn from the DRBG 64 at a time per thread: RAND_bytes() in OpenSSL 3 costs a
 * cipher re-initialisation of the DRBG per call, as much as the 4 KiB encryption itself. Each IV
 * is still 96 random bits (SP 800-38D 8.2.2); IVs are not secret. A forked child never reuses
 * the parent's pool (iv_fork_generation, bumped in the child by pthread_atfork). */
#define IV_POOL 64
static atomic_uint iv_fork_generation;
static pthread_once_t iv_atfork_once = PTHREAD_ONCE_INIT;
static __thread struct {
    uint8_t buf[IV_POOL * VAULT_GCM_IV_SIZE];
    size_t left; /* IVs not handed out yet, at the end of buf */
    unsigned generation;
} iv_pool;

static void iv_atfork_child(void) {
    atomic_fetch_add(&iv_fork_generation, 1);
}

static void iv_atfork_register(void) {
    (void)pthread_atfork(NULL, NULL, iv_atfork_child);
}

static int gcm_random_iv(uint8_t iv[VAULT_GCM_IV_SIZE]) {
    unsigned gen;
    (void)pthread_once(&iv_atfork_once, iv_atfork_register);
    gen = atomic_load(&iv_fork_generation);
    if (iv_pool.left == 0 || iv_pool.generation != gen) {
        if (RAND_bytes(iv_pool.buf, sizeof iv_pool.buf) != 1) {
            iv_pool.left = 0;
            return nt_openssl_error(-EIO, "RAND_bytes");
        }
        iv_pool.left = IV_POOL;
        iv_pool.generation = gen;
    }
    iv_pool.left--;
    memcpy(iv, iv_pool.buf + iv_pool.left * VAULT_GCM_IV_SIZE, VAULT_GCM_IV_SIZE);
    explicit_bzero(iv_pool.buf + iv_pool.left * VAULT_GCM_IV_SIZE, VAULT_GCM_IV_SIZE);
    return 0;
}

/* A GCM context with kv's key set: one from kv's cache, else a new one (key schedule computed). */
static atomic_bool context_cache = true;

void vault_set_context_cache(bool on) {
    atomic_store(&context_cache, on);
}

/* A key version's context cache (KeyVersion.gcm_cache / hmac_cache): take claims a context
 * exclusively (NULL if none); put returns one, false if the cache is full or off (then the
 * caller frees it). */
static void *cache_take(_Atomic(void *) slots[KEY_VERSION_GCM_CACHE]) {
    void *p = NULL;
    for (size_t i = 0; i < KEY_VERSION_GCM_CACHE && !p; i++)
        p = atomic_exchange(&slots[i], NULL);
    return p;
}

static bool cache_put(_Atomic(void *) slots[KEY_VERSION_GCM_CACHE], void *p) {
    for (size_t i = 0; i < KEY_VERSION_GCM_CACHE && atomic_load(&context_cache); i++) {
        void *expected = NULL;
        if (atomic_compare_exchange_strong(&slots[i], &expected, p))
            return true;
    }
    return false;
}

/* A GCM context with kv's key set: one from kv's cache, else a new one (key schedule computed). */
static EVP_CIPHER_CTX *gcm_ctx_take(KeyVersion *kv) {
    EVP_CIPHER *cipher = gcm_alg();
    EVP_CIPHER_CTX *ctx = cache_take(kv->gcm_cache);
    if (ctx)
        return ctx;
    if (!cipher) {
        (void)nt_openssl_error(-EIO, "AES-256-GCM fetch");
        return NULL;
    }
    ctx = EVP_CIPHER_CTX_new();
    /* VAULT_GCM_IV_SIZE is GCM's default IV length (12). */
    if (!ctx || EVP_CIPHER_get_iv_length(cipher) != VAULT_GCM_IV_SIZE ||
        EVP_CipherInit_ex(ctx, cipher, NULL, secret_const_data(kv->secret), NULL, 1) != 1) {
        (void)nt_openssl_error(-EIO, "AES-GCM init");
        EVP_CIPHER_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* Returns ctx to kv's cache (or frees it if the cache is full or off). */
static void gcm_ctx_put(KeyVersion *kv, EVP_CIPHER_CTX *ctx) {
    if (!cache_put(kv->gcm_cache, ctx))
        EVP_CIPHER_CTX_free(ctx);
}

static int gcm_crypt(bool enc, KeyVersion *kv, const uint8_t *hdr, const VaultOp *op,
                     const uint8_t iv[VAULT_GCM_IV_SIZE], uint8_t tag[VAULT_GCM_TAG_SIZE],
                     const uint8_t *in, size_t in_len, uint8_t *out) {
    EVP_CIPHER_CTX *ctx = gcm_ctx_take(kv);
    int len = 0, r = 0;
    if (!ctx)
        return -EIO;
    /* Only the IV and the direction change; the key schedule stays (EVP_CipherInit_ex(3)). */
    if (EVP_CipherInit_ex(ctx, NULL, NULL, NULL, iv, enc) != 1) {
        r = nt_openssl_error(-EIO, "AES-GCM init");
        goto out;
    }
    if (EVP_CipherUpdate(ctx, NULL, &len, hdr, VAULT_ENVELOPE_HEADER_SIZE) != 1 ||
        (op->aad_len > 0 && EVP_CipherUpdate(ctx, NULL, &len, op->aad, (int)op->aad_len) != 1)) {
        r = nt_openssl_error(-EIO, "AES-GCM AAD");
        goto out;
    }
    if (in_len > 0 && EVP_CipherUpdate(ctx, out, &len, in, (int)in_len) != 1) {
        r = nt_openssl_error(-EIO, "AES-GCM update");
        goto out;
    }
    if (enc) {
        if (EVP_CipherFinal_ex(ctx, out + len, &len) != 1 ||
            EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, VAULT_GCM_TAG_SIZE, tag) != 1)
            r = nt_openssl_error(-EIO, "AES-GCM final");
    } else {
        if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, VAULT_GCM_TAG_SIZE, tag) != 1)
            r = nt_openssl_error(-EIO, "AES-GCM tag");
        else if (EVP_CipherFinal_ex(ctx, out + len, &len) != 1) {
            ERR_clear_error();
            r = -EKEYREJECTED;
        }
    }
out:
    if (r == 0 || r == -EKEYREJECTED)
        gcm_ctx_put(kv, ctx);
    else
        EVP_CIPHER_CTX_free(ctx); /* in an unknown state: never reused */
    return r;
}

/* RFC 3394 / RFC 5649 wrap or unwrap. out must hold in_len + 16 bytes. */
static int kw_crypt(bool enc, bool pad, const Secret *key, const uint8_t *in, size_t in_len,
                    uint8_t *out, size_t *ret_len) {
    _cleanup_(EVP_CIPHER_CTX_freep) EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int len = 0, fin = 0;
    if (!ctx)
        return -ENOMEM;
    EVP_CIPHER_CTX_set_flags(ctx, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
    if (EVP_CipherInit_ex(ctx, pad ? EVP_aes_256_wrap_pad() : EVP_aes_256_wrap(), NULL,
                          secret_const_data(key), NULL, enc) != 1)
        return nt_openssl_error(-EIO, "AES key wrap init");
    if (EVP_CipherUpdate(ctx, out, &len, in, (int)in_len) != 1 ||
        EVP_CipherFinal_ex(ctx, out + len, &fin) != 1) {
        if (enc)
            return nt_openssl_error(-EIO, "AES key wrap");
        ERR_clear_error();
        return -EKEYREJECTED;
    }
    *ret_len = (size_t)len + (size_t)fin;
    return 0;
}

static int oaep_ctx(EVP_PKEY *pkey, const EVP_MD *md, bool enc, EVP_PKEY_CTX **ret) {
    _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    if (!ctx)
        return -ENOMEM;
    if ((enc ? EVP_PKEY_encrypt_init(ctx) : EVP_PKEY_decrypt_init(ctx)) != 1 ||
        EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) != 1 ||
        EVP_PKEY_CTX_set_rsa_oaep_md(ctx, md) != 1 || EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, md) != 1)
        return nt_openssl_error(-EIO, "RSA-OAEP init");
    *ret = TAKE_PTR(ctx);
    return 0;
}

/* header | IV | tag | ciphertext, into out (VAULT_GCM_ENVELOPE_SIZE(in_len) bytes). */
static int gcm_encrypt_envelope(KeyVersion *kv, const VaultOp *op, const uint8_t *in, size_t in_len,
                                uint8_t *out) {
    uint8_t *iv = out + VAULT_ENVELOPE_HEADER_SIZE, *tag = iv + VAULT_GCM_IV_SIZE;
    int r;
    envelope_header(out, op->alg, kv->number);
    r = gcm_random_iv(iv);
    if (r < 0)
        return r;
    return gcm_crypt(true, kv, out, op, iv, tag, in, in_len, tag + VAULT_GCM_TAG_SIZE);
}

int vault_encrypt_into(Vault *v, const VaultPeer *peer, const char *name, const VaultOp *op,
                       const uint8_t *in, size_t in_len, uint8_t *out, size_t out_size,
                       size_t *ret_len) {
    _cleanup_(key_version_unrefp) KeyVersion *kv = NULL;
    _cleanup_free_ uint8_t *o = NULL;
    size_t n = 0;
    VaultKeyType type;
    int r;

    if (!out || !ret_len || !op)
        return -EINVAL;
    if (op->alg != VAULT_ALG_AES256_GCM) {
        r = vault_encrypt(v, peer, name, op, in, in_len, &o, &n);
        if (r < 0)
            return r;
        if (n > out_size)
            return -EINVAL;
        memcpy(out, o, n);
        *ret_len = n;
        return 0;
    }
    if ((r = op_validate(op, true, in, in_len)) < 0)
        return r;
    if (out_size < VAULT_GCM_ENVELOPE_SIZE(in_len))
        return -EINVAL;
    if ((r = acquire(v, peer, name, true, op_usage(op, true), 0, &type, &kv)) < 0)
        return r;
    if (!alg_fits(type, op->alg))
        return -EOPNOTSUPP;
    r = gcm_encrypt_envelope(kv, op, in, in_len, out);
    if (r < 0)
        return r;
    *ret_len = VAULT_GCM_ENVELOPE_SIZE(in_len);
    return 0;
}

int vault_encrypt(Vault *v, const VaultPeer *peer, const char *name, const VaultOp *op,
                  const uint8_t *in, size_t in_len, uint8_t **ret_out, size_t *ret_out_len) {
    _cleanup_(key_version_unrefp) KeyVersion *kv = NULL;
    _cleanup_free_ uint8_t *body = NULL;
    size_t body_len = 0;
    VaultKeyType type;
    bool is_rsa;
    int r;

    if (!ret_out || !ret_out_len)
        return -EINVAL;
    if ((r = op_validate(op, true, in, in_len)) < 0)
        return r;
    is_rsa = op->alg == VAULT_ALG_RSA_OAEP_SHA256 || op->alg == VAULT_ALG_RSA_OAEP_SHA1;
    /* OAEP encryption uses only the public key: no attestation needed. */
    if ((r = acquire(v, peer, name, !is_rsa, op_usage(op, true), 0, &type, &kv)) < 0)
        return r;
    if (!alg_fits(type, op->alg))
        return -EOPNOTSUPP;

    switch (op->alg) {
    case VAULT_ALG_AES256_GCM: {
        size_t n = VAULT_GCM_ENVELOPE_SIZE(in_len);
        uint8_t *out = nt_malloc(n);
        if (!out)
            return -ENOMEM;
        r = gcm_encrypt_envelope(kv, op, in, in_len, out);
        if (r < 0) {
            free(out);
            return r;
        }
        *ret_out = out;
        *ret_out_len = n;
        return 0;
    }
    case VAULT_ALG_AES256_KW:
    case VAULT_ALG_AES256_KWP:
        if (op->alg == VAULT_ALG_AES256_KW ? (in_len < 16 || in_len % 8 != 0) : in_len == 0)
            return -EINVAL;
        body = nt_malloc(in_len + 16);
        if (!body)
            return -ENOMEM;
        if ((r = kw_crypt(true, op->alg == VAULT_ALG_AES256_KWP, kv->secret, in, in_len, body,
                          &body_len)) < 0)
            return r;
        break;
    default: { /* OAEP */
        _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *ctx = NULL;
        if ((r = oaep_ctx(kv->pkey, alg_md(type, op->alg), true, &ctx)) < 0)
            return r;
        if (EVP_PKEY_encrypt(ctx, NULL, &body_len, in, in_len) != 1)
            return nt_openssl_error(-EIO, "RSA-OAEP size");
        body = nt_malloc(body_len);
        if (!body)
            return -ENOMEM;
        if (EVP_PKEY_encrypt(ctx, body, &body_len, in, in_len) != 1) {
            ERR_clear_error();
            return -EINVAL; /* too long for this modulus and digest */
        }
        break;
    }
    }
    return wrap_output(op, kv->number, TAKE_PTR(body), body_len, ret_out, ret_out_len);
}

int vault_decrypt_into(Vault *v, const VaultPeer *peer, const char *name, const VaultOp *op,
                       const uint8_t *in, size_t in_len, uint8_t *out, size_t out_size,
                       size_t *ret_len) {
    _cleanup_(key_version_unrefp) KeyVersion *kv = NULL;
    const uint8_t *hdr = in, *body = in;
    size_t body_len = in_len, out_len = 0;
    uint32_t version;
    VaultKeyType type;
    int r;

    if (!out || !ret_len)
        return -EINVAL;
    if ((r = op_validate(op, true, in, in_len)) < 0) /* bounds in_len */
        return r;
    if (out_size < VAULT_DECRYPT_MAX(in_len))
        return -EINVAL;
    if ((r = input_version(op, &body, &body_len, &version)) < 0)
        return r;
    if ((r = acquire(v, peer, name, true, op_usage(op, false), version, &type, &kv)) < 0)
        return r;
    if (!alg_fits(type, op->alg))
        return -EOPNOTSUPP;

    switch (op->alg) {
    case VAULT_ALG_AES256_GCM: {
        uint8_t tag[VAULT_GCM_TAG_SIZE];
        if (body_len < VAULT_GCM_IV_SIZE + VAULT_GCM_TAG_SIZE)
            return -EBADMSG;
        memcpy(tag, body + VAULT_GCM_IV_SIZE, VAULT_GCM_TAG_SIZE);
        out_len = body_len - VAULT_GCM_IV_SIZE - VAULT_GCM_TAG_SIZE;
        r = gcm_crypt(false, kv, hdr, op, body, tag, body + VAULT_GCM_IV_SIZE + VAULT_GCM_TAG_SIZE,
                      out_len, out);
        break;
    }
    case VAULT_ALG_AES256_KW:
    case VAULT_ALG_AES256_KWP:
        if (body_len < 16 || body_len % 8 != 0)
            return -EBADMSG;
        r = kw_crypt(false, op->alg == VAULT_ALG_AES256_KWP, kv->secret, body, body_len, out,
                     &out_len);
        break;
    default: {
        _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *ctx = NULL;
        if (body_len != (size_t)EVP_PKEY_get_size(kv->pkey))
            return -EBADMSG;
        if ((r = oaep_ctx(kv->pkey, alg_md(type, op->alg), false, &ctx)) < 0)
            return r;
        out_len = body_len;
        r = 0;
        if (EVP_PKEY_decrypt(ctx, out, &out_len, body, body_len) != 1) {
            ERR_clear_error();
            r = -EKEYREJECTED;
        }
        break;
    }
    }
    if (r < 0) {
        /* Unauthenticated or partial plaintext must not stay behind. */
        explicit_bzero(out, out_size);
        return r;
    }
    *ret_len = out_len;
    return 0;
}

int vault_decrypt(Vault *v, const VaultPeer *peer, const char *name, const VaultOp *op,
                  const uint8_t *in, size_t in_len, Secret **ret_plaintext) {
    _cleanup_(secret_freep) Secret *pt = NULL;
    size_t out_len = 0;
    int r;

    if (!ret_plaintext || in_len > VAULT_MAX_INPUT)
        return -EINVAL;
    if ((r = secret_new(VAULT_DECRYPT_MAX(in_len), &pt)) < 0)
        return r;
    if ((r = vault_decrypt_into(v, peer, name, op, in, in_len, secret_data(pt), secret_size(pt),
                                &out_len)) < 0)
        return r;
    secret_truncate(pt, out_len);
    *ret_plaintext = TAKE_PTR(pt);
    return 0;
}

/* ---- signatures ---- */

static int config_rsa_padding(EVP_PKEY_CTX *pctx, VaultAlg alg, const EVP_MD *md) {
    if (alg == VAULT_ALG_RSA_PSS_SHA256 || alg == VAULT_ALG_RSA_PSS_SHA384) {
        if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
            EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1 ||
            EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, md) != 1)
            return nt_openssl_error(-EIO, "RSA-PSS parameters");
    } else if (alg == VAULT_ALG_RSA_PKCS1_SHA256 || alg == VAULT_ALG_RSA_PKCS1_SHA384) {
        if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) != 1)
            return nt_openssl_error(-EIO, "RSA PKCS#1 parameters");
    }
    return 0;
}

static int ecdsa_der_to_rs(const uint8_t *der, size_t len, size_t fs, uint8_t **ret,
                           size_t *ret_len) {
    _cleanup_(ECDSA_SIG_freep) ECDSA_SIG *sig = NULL;
    const uint8_t *p = der;
    const BIGNUM *r, *s;
    uint8_t *out;
    sig = d2i_ECDSA_SIG(NULL, &p, (long)len);
    if (!sig || p != der + len)
        return -EIO;
    ECDSA_SIG_get0(sig, &r, &s);
    out = nt_malloc(2 * fs);
    if (!out)
        return -ENOMEM;
    if (BN_bn2binpad(r, out, (int)fs) != (int)fs || BN_bn2binpad(s, out + fs, (int)fs) != (int)fs) {
        free(out);
        return -EIO;
    }
    *ret = out;
    *ret_len = 2 * fs;
    return 0;
}

static int ecdsa_rs_to_der(const uint8_t *rs, size_t len, size_t fs, uint8_t **ret,
                           size_t *ret_len) {
    _cleanup_(ECDSA_SIG_freep) ECDSA_SIG *sig = ECDSA_SIG_new();
    BIGNUM *r = NULL, *s = NULL;
    uint8_t *der = NULL;
    int n;
    if (len != 2 * fs)
        return -EKEYREJECTED;
    if (!sig)
        return -ENOMEM;
    r = BN_bin2bn(rs, (int)fs, NULL);
    s = BN_bin2bn(rs + fs, (int)fs, NULL);
    if (!r || !s || ECDSA_SIG_set0(sig, r, s) != 1) {
        BN_free(r);
        BN_free(s);
        return -ENOMEM;
    }
    n = i2d_ECDSA_SIG(sig, &der);
    if (n <= 0)
        return nt_openssl_error(-EIO, "i2d_ECDSA_SIG");
    *ret = der; /* OPENSSL_malloc == malloc in this build; freed with OPENSSL_free by caller */
    *ret_len = (size_t)n;
    return 0;
}

/* HMAC with kv's key and md: a context from kv's cache (its state reset, key kept), else a new
 * one; put back afterwards, so the key pads are not recomputed per operation. */
static int hmac_compute(KeyVersion *kv, const EVP_MD *md, const uint8_t *in, size_t in_len,
                        uint8_t *out, size_t *ret_len) {
    EVP_MAC_CTX *ctx = cache_take(kv->hmac_cache);
    int r = 0;

    if (ctx) {
        if (EVP_MAC_init(ctx, NULL, 0, NULL) != 1) /* same key and digest: reset the state */
            r = nt_openssl_error(-EIO, "HMAC init");
    } else {
        EVP_MAC *mac = hmac_alg();
        OSSL_PARAM params[] = {
            OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)EVP_MD_get0_name(md),
                                             0),
            OSSL_PARAM_construct_end(),
        };
        if (!mac)
            return nt_openssl_error(-EIO, "EVP_MAC_fetch");
        ctx = EVP_MAC_CTX_new(mac);
        if (!ctx)
            return -ENOMEM;
        if (EVP_MAC_init(ctx, secret_const_data(kv->secret), secret_size(kv->secret), params) != 1)
            r = nt_openssl_error(-EIO, "HMAC init");
    }
    if (r == 0 && (EVP_MAC_update(ctx, in, in_len) != 1 ||
                   EVP_MAC_final(ctx, out, ret_len, EVP_MAX_MD_SIZE) != 1))
        r = nt_openssl_error(-EIO, "HMAC");
    /* A context in an unknown state (after a failure) is never reused. */
    if (r < 0 || !cache_put(kv->hmac_cache, ctx))
        EVP_MAC_CTX_free(ctx);
    return r;
}

static int sign_init(KeyVersion *kv, VaultKeyType type, const VaultOp *op, size_t in_len,
                     EVP_MD_CTX **ret_md, EVP_PKEY_CTX **ret_pctx, bool verify) {
    _cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *mdctx = NULL;
    _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *pctx = NULL;
    const EVP_MD *md = alg_md(type, op->alg);
    EVP_PKEY_CTX *inner = NULL;
    int r;

    if (op->flags & VAULT_OP_PREHASHED) {
        if (op->alg == VAULT_ALG_ED25519)
            return -EOPNOTSUPP;
        if (in_len != (size_t)EVP_MD_get_size(md))
            return -EINVAL;
        pctx = EVP_PKEY_CTX_new_from_pkey(NULL, kv->pkey, NULL);
        if (!pctx)
            return -ENOMEM;
        if ((verify ? EVP_PKEY_verify_init(pctx) : EVP_PKEY_sign_init(pctx)) != 1 ||
            EVP_PKEY_CTX_set_signature_md(pctx, md) != 1)
            return nt_openssl_error(-EIO, "sign init");
        if ((r = config_rsa_padding(pctx, op->alg, md)) < 0)
            return r;
        *ret_pctx = TAKE_PTR(pctx);
        return 0;
    }
    mdctx = EVP_MD_CTX_new();
    if (!mdctx)
        return -ENOMEM;
    if (op->alg == VAULT_ALG_ED25519)
        md = NULL;
    if ((verify ? EVP_DigestVerifyInit(mdctx, &inner, md, NULL, kv->pkey)
                : EVP_DigestSignInit(mdctx, &inner, md, NULL, kv->pkey)) != 1)
        return nt_openssl_error(-EIO, "digest sign init");
    if ((r = config_rsa_padding(inner, op->alg, md)) < 0)
        return r;
    *ret_md = TAKE_PTR(mdctx);
    return 0;
}

int vault_sign(Vault *v, const VaultPeer *peer, const char *name, const VaultOp *op,
               const uint8_t *in, size_t in_len, uint8_t **ret_sig, size_t *ret_sig_len) {
    _cleanup_(key_version_unrefp) KeyVersion *kv = NULL;
    _cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *mdctx = NULL;
    _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *pctx = NULL;
    _cleanup_free_ uint8_t *sig = NULL;
    size_t sig_len = 0;
    VaultKeyType type;
    int r;

    if (!ret_sig || !ret_sig_len)
        return -EINVAL;
    if ((r = op_validate(op, false, in, in_len)) < 0)
        return r;
    if ((r = acquire(v, peer, name, true, VAULT_OBJ_SIGN, 0, &type, &kv)) < 0)
        return r;
    if (!alg_fits(type, op->alg))
        return -EOPNOTSUPP;

    if (op->alg == VAULT_ALG_HMAC) {
        if (op->flags & VAULT_OP_PREHASHED)
            return -EOPNOTSUPP;
        sig = nt_malloc(EVP_MAX_MD_SIZE);
        if (!sig)
            return -ENOMEM;
        if ((r = hmac_compute(kv, alg_md(type, op->alg), in, in_len, sig, &sig_len)) < 0)
            return r;
        return wrap_output(op, kv->number, TAKE_PTR(sig), sig_len, ret_sig, ret_sig_len);
    }

    if ((r = sign_init(kv, type, op, in_len, &mdctx, &pctx, false)) < 0)
        return r;
    if (pctx) {
        if (EVP_PKEY_sign(pctx, NULL, &sig_len, in, in_len) != 1)
            return nt_openssl_error(-EIO, "EVP_PKEY_sign");
        sig = nt_malloc(sig_len);
        if (!sig)
            return -ENOMEM;
        if (EVP_PKEY_sign(pctx, sig, &sig_len, in, in_len) != 1)
            return nt_openssl_error(-EIO, "EVP_PKEY_sign");
    } else {
        if (EVP_DigestSign(mdctx, NULL, &sig_len, in, in_len) != 1)
            return nt_openssl_error(-EIO, "EVP_DigestSign");
        sig = nt_malloc(sig_len);
        if (!sig)
            return -ENOMEM;
        if (EVP_DigestSign(mdctx, sig, &sig_len, in, in_len) != 1)
            return nt_openssl_error(-EIO, "EVP_DigestSign");
    }
    if (op->flags & VAULT_OP_SIG_RAW_RS) {
        uint8_t *rs = NULL;
        size_t rs_len = 0;
        if ((r = ecdsa_der_to_rs(sig, sig_len, ec_field_size(kv->pkey), &rs, &rs_len)) < 0)
            return r;
        free(sig);
        sig = rs;
        sig_len = rs_len;
    }
    return wrap_output(op, kv->number, TAKE_PTR(sig), sig_len, ret_sig, ret_sig_len);
}

int vault_verify(Vault *v, const VaultPeer *peer, const char *name, const VaultOp *op,
                 const uint8_t *in, size_t in_len, const uint8_t *sig, size_t sig_len) {
    _cleanup_(key_version_unrefp) KeyVersion *kv = NULL;
    _cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *mdctx = NULL;
    _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *pctx = NULL;
    _cleanup_free_ uint8_t *der = NULL;
    uint32_t version;
    VaultKeyType type;
    int r, ok;

    if ((r = op_validate(op, false, in, in_len)) < 0)
        return r;
    if (!sig || sig_len > VAULT_MAX_INPUT)
        return -EINVAL;
    if ((r = input_version(op, &sig, &sig_len, &version)) < 0)
        return r;
    /* HMAC verification uses the secret key: attestation applies; public-key verification
     * needs only the public half. */
    if ((r = acquire(v, peer, name, op->alg == VAULT_ALG_HMAC, VAULT_OBJ_VERIFY, version, &type,
                     &kv)) < 0)
        return r;
    if (!alg_fits(type, op->alg))
        return -EOPNOTSUPP;

    if (op->alg == VAULT_ALG_HMAC) {
        uint8_t mac[EVP_MAX_MD_SIZE];
        size_t mac_len = 0;
        if (op->flags & VAULT_OP_PREHASHED)
            return -EOPNOTSUPP;
        if ((r = hmac_compute(kv, alg_md(type, op->alg), in, in_len, mac, &mac_len)) < 0)
            return r;
        ok = sig_len == mac_len && CRYPTO_memcmp(mac, sig, mac_len) == 0;
        explicit_bzero(mac, sizeof mac);
        return ok ? 0 : -EKEYREJECTED;
    }
    if (op->flags & VAULT_OP_SIG_RAW_RS) {
        size_t der_len = 0;
        if ((r = ecdsa_rs_to_der(sig, sig_len, ec_field_size(kv->pkey), &der, &der_len)) < 0)
            return r;
        sig = der;
        sig_len = der_len;
    }
    if ((r = sign_init(kv, type, op, in_len, &mdctx, &pctx, true)) < 0)
        return r;
    ok = pctx ? EVP_PKEY_verify(pctx, sig, sig_len, in, in_len)
              : EVP_DigestVerify(mdctx, sig, sig_len, in, in_len);
    ERR_clear_error();
    return ok == 1 ? 0 : -EKEYREJECTED;
}

/* ---- ECDH derive ---- */

static int parse_public_key(const uint8_t *in, size_t len, EVP_PKEY **ret) {
    EVP_PKEY *pkey = NULL;
    if (!in || len == 0 || len > 16384)
        return -EBADMSG;
    if (len > 10 && memcmp(in, "-----BEGIN", 10) == 0) {
        _cleanup_(BIO_free_allp) BIO *b = BIO_new_mem_buf(in, (int)len);
        if (!b)
            return -ENOMEM;
        pkey = PEM_read_bio_PUBKEY(b, NULL, NULL, NULL);
    } else {
        const uint8_t *p = in;
        pkey = d2i_PUBKEY(NULL, &p, (long)len);
        if (pkey && p != in + len) {
            EVP_PKEY_free(pkey);
            pkey = NULL;
        }
    }
    if (!pkey) {
        ERR_clear_error();
        return -EBADMSG;
    }
    *ret = pkey;
    return 0;
}

int vault_key_derive_ecdh(Vault *v, const VaultPeer *peer, const char *name,
                          const uint8_t *peer_public, size_t peer_public_len, const uint8_t *info,
                          size_t info_len, const char *new_name, const VaultKeySpec *spec) {
    _cleanup_(key_version_unrefp) KeyVersion *kv = NULL, *nkv = NULL;
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *pub = NULL;
    _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *ctx = NULL;
    _cleanup_(EVP_KDF_freep) EVP_KDF *kdf = NULL;
    _cleanup_(EVP_KDF_CTX_freep) EVP_KDF_CTX *kctx = NULL;
    _cleanup_(secret_freep) Secret *shared = NULL, *okm = NULL, *full_info = NULL;
    _cleanup_(vault_key_freep) VaultKey *k = NULL;
    const char *crv_ours, *crv_theirs;
    VaultKeyType type;
    size_t shared_len = 0;
    OSSL_PARAM params[4];
    int r;

    if (!spec || spec->type != VAULT_KEY_AES256 || (!info && info_len > 0) || info_len > 1024)
        return -EINVAL;
    if (!peer)
        return -EINVAL;
    RESOLVE(peer, new_name, full_new);
    if ((r = vault_key_new(full_new, spec, peer, VAULT_ORIGIN_DERIVED, &k)) < 0)
        return r;
    if ((r = vault_acl_check_caps(&k->acl, peer)) < 0)
        return r;
    {
        READ_LOCKED(v);
        if ((r = vault_may_create_locked(v, peer, full_new, spec->type, VAULT_ORIGIN_DERIVED)) < 0)
            return r;
    }
    if ((r = acquire(v, peer, name, true, VAULT_OBJ_DERIVE, 0, &type, &kv)) < 0)
        return r;
    if (type != VAULT_KEY_EC_P256 && type != VAULT_KEY_EC_P384)
        return -EOPNOTSUPP;
    if ((r = parse_public_key(peer_public, peer_public_len, &pub)) < 0)
        return r;
    if (!EVP_PKEY_is_a(pub, "EC") || ec_curve_name(pub, &crv_theirs) < 0 ||
        ec_curve_name(kv->pkey, &crv_ours) < 0 || !streq(crv_ours, crv_theirs))
        return -EBADMSG;

    ctx = EVP_PKEY_CTX_new_from_pkey(NULL, kv->pkey, NULL);
    if (!ctx)
        return -ENOMEM;
    if (EVP_PKEY_derive_init(ctx) != 1)
        return nt_openssl_error(-EIO, "EVP_PKEY_derive_init");
    if (EVP_PKEY_derive_set_peer_ex(ctx, pub, 1) != 1) {
        ERR_clear_error();
        return -EBADMSG; /* not on the curve, or the point at infinity */
    }
    if (EVP_PKEY_derive(ctx, NULL, &shared_len) != 1)
        return nt_openssl_error(-EIO, "EVP_PKEY_derive");
    if ((r = secret_new(shared_len, &shared)) < 0)
        return r;
    if (EVP_PKEY_derive(ctx, secret_data(shared), &shared_len) != 1)
        return nt_openssl_error(-EIO, "EVP_PKEY_derive");
    secret_truncate(shared, shared_len);

    if ((r = secret_new(STRLEN(ECDH_INFO_PREFIX) + info_len, &full_info)) < 0)
        return r;
    memcpy(secret_data(full_info), ECDH_INFO_PREFIX, STRLEN(ECDH_INFO_PREFIX));
    if (info_len > 0)
        memcpy(secret_data(full_info) + STRLEN(ECDH_INFO_PREFIX), info, info_len);
    if ((r = secret_new_packed(32, &okm)) < 0)
        return r;
    kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    kctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
    if (!kctx)
        return nt_openssl_error(-EIO, "HKDF");
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
    params[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, secret_data(shared),
                                                  secret_size(shared));
    params[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, secret_data(full_info),
                                                  secret_size(full_info));
    params[3] = OSSL_PARAM_construct_end();
    if (EVP_KDF_derive(kctx, secret_data(okm), 32, params) != 1)
        return nt_openssl_error(-EIO, "HKDF derive");

    nkv = key_version_new(1, (uint64_t)vault_now(v));
    if (!nkv)
        return -ENOMEM;
    nkv->secret = TAKE_PTR(okm);
    if ((r = vault_key_add_version(k, nkv)) < 0)
        return r;
    nkv = NULL;
    if ((r = vault_insert_key(v, peer, k)) < 0)
        return r;
    k = NULL;
    return 0;
}

int vault_random(size_t n, uint8_t **ret) {
    _cleanup_free_ uint8_t *buf = NULL;
    if (!ret || n == 0 || n > VAULT_RANDOM_MAX)
        return -EINVAL;
    buf = nt_malloc(n);
    if (!buf)
        return -ENOMEM;
    if (RAND_bytes(buf, (int)n) != 1)
        return nt_openssl_error(-EIO, "RAND_bytes");
    *ret = TAKE_PTR(buf);
    return 0;
}

/* ---- AES modes with caller parameters (revision 2, the PKCS#11 module) ---- */

/* The cipher of a mode for an AES key of key_len bytes (16, 24, 32), or NULL. */
const EVP_CIPHER *vault_aes_cipher(VaultAesMode mode, size_t key_len) {
    static const EVP_CIPHER *(*const t[_VAULT_AES_MODE_MAX][3])(void) = {
        [VAULT_AES_CBC] = {EVP_aes_128_cbc, EVP_aes_192_cbc, EVP_aes_256_cbc},
        [VAULT_AES_CBC_PAD] = {EVP_aes_128_cbc, EVP_aes_192_cbc, EVP_aes_256_cbc},
        [VAULT_AES_CTR] = {EVP_aes_128_ctr, EVP_aes_192_ctr, EVP_aes_256_ctr},
        [VAULT_AES_GCM] = {EVP_aes_128_gcm, EVP_aes_192_gcm, EVP_aes_256_gcm},
    };
    if (mode < 0 || mode >= _VAULT_AES_MODE_MAX ||
        (key_len != 16 && key_len != 24 && key_len != 32))
        return NULL;
    return t[mode][(key_len - 16) / 8]();
}

/* The mode's cipher, fetched once (hot_algs_fetch); the constant if that fetch failed. */
static const EVP_CIPHER *aes_mode_cipher(VaultAesMode mode) {
    (void)pthread_once(&hot_algs_once, hot_algs_fetch);
    switch (mode) {
    case VAULT_AES_CBC:
    case VAULT_AES_CBC_PAD:
        return hot_cbc ?: EVP_aes_256_cbc();
    case VAULT_AES_CTR:
        return hot_ctr ?: EVP_aes_256_ctr();
    case VAULT_AES_GCM:
        return hot_gcm ?: EVP_aes_256_gcm();
    default:
        return NULL;
    }
}

/* CTR: refuses an operation that would wrap the low counter_bits of the counter block (PKCS#11
 * counts only those bits; OpenSSL increments all 128, which agrees as long as they do not wrap). */
static int ctr_check(const uint8_t iv[16], unsigned counter_bits, size_t in_len) {
    uint64_t blocks = (in_len + 15) / 16, avail;
    unsigned __int128 ctr = 0, max;
    if (counter_bits == 0 || counter_bits > 128)
        return -EINVAL;
    for (size_t i = 0; i < 16; i++)
        ctr = ctr << 8 | iv[i];
    if (counter_bits == 128)
        return 0;
    max = ((unsigned __int128)1 << counter_bits) - 1;
    ctr &= max;
    avail = (max - ctr) > UINT64_MAX ? UINT64_MAX : (uint64_t)(max - ctr) + 1;
    return blocks <= avail ? 0 : -EINVAL;
}

int vault_aes_crypt(Vault *v, const VaultPeer *peer, const char *name, const VaultAesParams *p,
                    bool encrypt, const uint8_t *in, size_t in_len, uint8_t *out, size_t out_size,
                    size_t *ret_len) {
    _cleanup_(key_version_unrefp) KeyVersion *kv = NULL;
    _cleanup_(EVP_CIPHER_CTX_freep) EVP_CIPHER_CTX *ctx = NULL;
    const EVP_CIPHER *cipher;
    size_t tag_len = 0, body_len = in_len;
    VaultKeyType type;
    bool cached;
    int n = 0, fin = 0, r;

    if (!p || !out || !ret_len || (in_len > 0 && !in) || in_len > VAULT_MAX_INPUT ||
        !(cipher = aes_mode_cipher(p->mode)) || (p->iv_len > 0 && !p->iv) ||
        (p->aad_len > 0 && !p->aad) || out_size < in_len + 16)
        return -EINVAL;
    switch (p->mode) {
    case VAULT_AES_CBC:
        if (p->iv_len != 16 || in_len % 16 != 0)
            return -EINVAL;
        break;
    case VAULT_AES_CBC_PAD:
        if (p->iv_len != 16 || (!encrypt && (in_len == 0 || in_len % 16 != 0)))
            return -EINVAL;
        break;
    case VAULT_AES_CTR:
        if (p->iv_len != 16 ||
            ctr_check(p->iv, p->counter_bits ? p->counter_bits : 128, in_len) < 0)
            return -EINVAL;
        break;
    case VAULT_AES_GCM:
        tag_len = p->tag_bits ? p->tag_bits / 8 : 16;
        if (p->iv_len < 1 || p->iv_len > 128 ||
            (p->tag_bits && (p->tag_bits % 8 != 0 || p->tag_bits < 96 || p->tag_bits > 128)))
            return -EINVAL;
        if (!encrypt) {
            if (in_len < tag_len)
                return -EINVAL;
            body_len = in_len - tag_len;
        }
        break;
    default:
        return -EINVAL;
    }
    if ((r = acquire(v, peer, name, true, encrypt ? VAULT_OBJ_ENCRYPT : VAULT_OBJ_DECRYPT, 0, &type,
                     &kv)) < 0)
        return r;
    if (type != VAULT_KEY_AES256 && type != VAULT_KEY_AES128 && type != VAULT_KEY_AES192)
        return -EOPNOTSUPP;
    if (type != VAULT_KEY_AES256 &&
        !(cipher = vault_aes_cipher(p->mode, vault_key_type_secret_size(type))))
        return -EOPNOTSUPP;
    /* GCM with a 96-bit IV (PKCS#11 applications' usual choice): a context from the version's
     * cache (key schedule kept, only the IV and the direction set here), as for the envelope. */
    cached = type == VAULT_KEY_AES256 && p->mode == VAULT_AES_GCM && p->iv_len == VAULT_GCM_IV_SIZE;
    if (cached) {
        ctx = gcm_ctx_take(kv);
        if (!ctx)
            return -EIO;
        if (EVP_CipherInit_ex(ctx, NULL, NULL, NULL, p->iv, encrypt) != 1)
            return nt_openssl_error(-EIO, "AES init");
    } else {
        ctx = EVP_CIPHER_CTX_new();
        if (!ctx || EVP_CipherInit_ex(ctx, cipher, NULL, NULL, NULL, encrypt) != 1)
            return -ENOMEM;
        if (p->mode == VAULT_AES_GCM &&
            EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, (int)p->iv_len, NULL) != 1)
            return nt_openssl_error(-EIO, "GCM IV length");
        if (EVP_CipherInit_ex(ctx, NULL, NULL, secret_const_data(kv->secret), p->iv, encrypt) !=
                1 ||
            EVP_CIPHER_CTX_set_padding(ctx, p->mode == VAULT_AES_CBC_PAD) != 1)
            return nt_openssl_error(-EIO, "AES init");
    }
    if (p->mode == VAULT_AES_GCM && p->aad_len > 0 &&
        EVP_CipherUpdate(ctx, NULL, &n, p->aad, (int)p->aad_len) != 1)
        return nt_openssl_error(-EIO, "GCM AAD");
    if (p->mode == VAULT_AES_GCM && !encrypt &&
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, (int)tag_len, (void *)(in + body_len)) != 1)
        return nt_openssl_error(-EIO, "GCM tag");
    n = 0;
    if ((body_len > 0 && EVP_CipherUpdate(ctx, out, &n, in, (int)body_len) != 1)) {
        explicit_bzero(out, out_size);
        return nt_openssl_error(-EIO, "AES update");
    }
    if (EVP_CipherFinal_ex(ctx, out + n, &fin) != 1) {
        ERR_clear_error();
        explicit_bzero(out, out_size);
        if (cached) /* a tag that did not verify leaves the context reusable (gcm_crypt) */
            gcm_ctx_put(kv, TAKE_PTR(ctx));
        /* GCM: the tag did not verify; CBC-PAD: bad padding */
        return p->mode == VAULT_AES_GCM ? -EKEYREJECTED : -EBADMSG;
    }
    n += fin;
    if (p->mode == VAULT_AES_GCM && encrypt) {
        if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, (int)tag_len, out + n) != 1)
            return nt_openssl_error(-EIO, "GCM tag");
        n += (int)tag_len;
    }
    if (cached)
        gcm_ctx_put(kv, TAKE_PTR(ctx));
    *ret_len = (size_t)n;
    return 0;
}

/* ---- raw signatures (revision 2): CKM_ECDSA on a caller's hash, CKM_RSA_PKCS on DigestInfo ----
 */

static size_t raw_ec_size(VaultKeyType t) {
    return t == VAULT_KEY_EC_P256 ? 32 : t == VAULT_KEY_EC_P384 ? 48 : 0;
}

int vault_sign_raw(Vault *v, const VaultPeer *peer, const char *name, VaultRawSig alg,
                   const uint8_t *in, size_t in_len, uint8_t **ret_sig, size_t *ret_sig_len) {
    _cleanup_(key_version_unrefp) KeyVersion *kv = NULL;
    _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *ctx = NULL;
    _cleanup_free_ uint8_t *sig = NULL;
    VaultKeyType type;
    size_t n = 0;
    int r;

    if (!in || in_len == 0 || !ret_sig || !ret_sig_len ||
        (alg != VAULT_RAW_SIG_ECDSA && alg != VAULT_RAW_SIG_RSA_PKCS1))
        return -EINVAL;
    if ((r = acquire(v, peer, name, true, VAULT_OBJ_SIGN, 0, &type, &kv)) < 0)
        return r;
    if (alg == VAULT_RAW_SIG_ECDSA ? raw_ec_size(type) == 0
                                   : !(type == VAULT_KEY_RSA2048 || type == VAULT_KEY_RSA3072 ||
                                       type == VAULT_KEY_RSA4096))
        return -EOPNOTSUPP;
    if (!kv->pkey)
        return -ENOMEM;
    /* CKM_ECDSA: a hash of up to 64 bytes (FIPS 186 truncates it to the order's length);
     * CKM_RSA_PKCS: a DigestInfo of at most k - 11 bytes (the caller's padding input). */
    if (alg == VAULT_RAW_SIG_ECDSA && in_len > 64)
        return -EINVAL;
    if (alg == VAULT_RAW_SIG_RSA_PKCS1 && in_len > (size_t)EVP_PKEY_get_size(kv->pkey) - 11)
        return -EINVAL;
    /* ECDSA: a context from the version's cache (initialised for signing, nothing else set; a
     * fresh nonce is drawn per signature), put back after a success. */
    if (alg == VAULT_RAW_SIG_ECDSA)
        ctx = cache_take(kv->sign_cache);
    if (!ctx) {
        ctx = EVP_PKEY_CTX_new(kv->pkey, NULL);
        if (!ctx || EVP_PKEY_sign_init(ctx) != 1)
            return nt_openssl_error(-EIO, "sign init");
        if (alg == VAULT_RAW_SIG_RSA_PKCS1 &&
            EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) != 1)
            return nt_openssl_error(-EIO, "RSA padding");
    }
    /* the DER signature's bound: no size query (a second call into the provider) */
    n = (size_t)EVP_PKEY_get_size(kv->pkey);
    sig = nt_malloc(n);
    if (!sig)
        return -ENOMEM;
    if (EVP_PKEY_sign(ctx, sig, &n, in, in_len) != 1)
        return nt_openssl_error(-EIO, "raw sign");
    if (alg == VAULT_RAW_SIG_ECDSA) {
        if (cache_put(kv->sign_cache, ctx))
            ctx = NULL;
        return ecdsa_der_to_rs(sig, n, raw_ec_size(type), ret_sig, ret_sig_len);
    }
    *ret_sig = TAKE_PTR(sig);
    *ret_sig_len = n;
    return 0;
}

int vault_verify_raw(Vault *v, const VaultPeer *peer, const char *name, VaultRawSig alg,
                     const uint8_t *in, size_t in_len, const uint8_t *sig, size_t sig_len) {
    _cleanup_(key_version_unrefp) KeyVersion *kv = NULL;
    _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *ctx = NULL;
    uint8_t *der = NULL;
    size_t der_len = 0;
    VaultKeyType type;
    int r, ok;

    if (!in || in_len == 0 || !sig ||
        (alg != VAULT_RAW_SIG_ECDSA && alg != VAULT_RAW_SIG_RSA_PKCS1))
        return -EINVAL;
    /* verification uses only the public key: no login, no attestation */
    if ((r = acquire(v, peer, name, false, VAULT_OBJ_VERIFY, 0, &type, &kv)) < 0)
        return r;
    if (alg == VAULT_RAW_SIG_ECDSA ? raw_ec_size(type) == 0
                                   : !(type == VAULT_KEY_RSA2048 || type == VAULT_KEY_RSA3072 ||
                                       type == VAULT_KEY_RSA4096))
        return -EOPNOTSUPP;
    if (!kv->pkey)
        return -ENOMEM;
    if (in_len > 512)
        return -EINVAL;
    ctx = EVP_PKEY_CTX_new(kv->pkey, NULL);
    if (!ctx || EVP_PKEY_verify_init(ctx) != 1)
        return nt_openssl_error(-EIO, "verify init");
    if (alg == VAULT_RAW_SIG_RSA_PKCS1 && EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) != 1)
        return nt_openssl_error(-EIO, "RSA padding");
    if (alg == VAULT_RAW_SIG_ECDSA) {
        if ((r = ecdsa_rs_to_der(sig, sig_len, raw_ec_size(type), &der, &der_len)) < 0)
            return r;
        ok = EVP_PKEY_verify(ctx, der, der_len, in, in_len);
        OPENSSL_free(der);
    } else
        ok = EVP_PKEY_verify(ctx, sig, sig_len, in, in_len);
    ERR_clear_error();
    return ok == 1 ? 0 : -EKEYREJECTED;
}

/* ---- C_CopyObject and session objects (issue 12, branch obj) ---- */

int vault_object_copy(Vault *v, const VaultPeer *peer, const char *name, const char *new_name,
                      uint32_t flags_set, uint32_t flags_clear, const VaultAttr *attrs,
                      size_t n_attrs) {
    _cleanup_(vault_key_freep) VaultKey *k = NULL;
    char nfull[VAULT_FULL_NAME_MAX + 1];
    VaultKeyAttr *na = NULL;
    size_t nn = 0;
    int r;

    if (!v || !peer || !new_name || (n_attrs > 0 && !attrs))
        return -EINVAL;
    if ((flags_set | flags_clear) & ~VAULT_OBJ_SETTABLE || (flags_set & flags_clear))
        return -EINVAL;
    RESOLVE(peer, name, full);
    if (vault_name_resolve(peer, new_name, nfull) < 0)
        return -EINVAL;
    {
        READ_LOCKED(v);
        VaultKey *src;
        uint32_t of, nf;
        VaultKeySpec spec;
        if ((r = admin_lookup_locked(v, peer, full, &src)) < 0)
            return r;
        of = src->obj_flags;
        nf = (of | flags_set) & ~flags_clear;
        if (!(of & VAULT_OBJ_COPYABLE))
            return -EPERM; /* CKA_COPYABLE false */
        if ((of & VAULT_OBJ_SENSITIVE) && !(nf & VAULT_OBJ_SENSITIVE))
            return -EPERM;
        if (!(of & VAULT_OBJ_EXTRACTABLE) && (nf & VAULT_OBJ_EXTRACTABLE))
            return -EPERM;
        if ((of ^ nf) & (VAULT_OBJ_TRUSTED | VAULT_OBJ_WRAP_WITH_TRUSTED))
            return -EPERM;
        if (((of ^ nf) & VAULT_OBJ_USAGE) && !(of & VAULT_OBJ_MODIFIABLE))
            return -EPERM;
        if (vault_key_type_is_object(src->type))
            nf = vault_object_flags(src->type, nf) | (nf & VAULT_OBJ_SESSION);
        spec = (VaultKeySpec){.type = src->type,
                              .acl = &src->acl,
                              .policy = src->policy,
                              .label = src->label,
                              .obj_flags = (nf & VAULT_OBJ_SETTABLE) | VAULT_OBJ_DESTROYABLE};
        if ((r = vault_key_new(nfull, &spec, peer, src->origin, &k)) < 0)
            return r;
        k->obj_flags =
            vault_obj_flags_history((nf & VAULT_OBJ_SETTABLE) | (of & VAULT_OBJ_READONLY));
        if ((r = attrs_merge(src->attrs, src->n_attrs, attrs, n_attrs, &na, &nn)) < 0)
            return r;
        k->attrs = na;
        k->n_attrs = nn;
        k->latest = src->min_version > 0 ? src->min_version - 1 : 0;
        k->min_version = src->min_version;
        for (uint32_t ver = src->min_version; ver > 0 && ver <= src->latest; ver++) {
            KeyVersion *kv = src->versions[ver - 1];
            if (!kv)
                r = vault_key_add_absent(k);
            else if ((r = vault_key_add_version(k, key_version_ref(kv))) < 0)
                key_version_unref(kv);
            if (r < 0)
                return r;
        }
    }
    if ((r = vault_insert_key(v, peer, k)) < 0)
        return r;
    k = NULL;
    return 0;
}

void vault_session_objects_drop(Vault *v, uint64_t conn_id) {
    if (!v || conn_id == 0)
        return;
    WRITE_LOCKED(v);
    for (size_t i = v->n_keys; i-- > 0;) {
        VaultKey *k = v->keys[i];
        if (k->session_conn != conn_id || k->pending_delete)
            continue;
        remove_at_locked(v, i);
        vault_key_free(k); /* versions in use by operations in flight: freed by their unref */
    }
}

size_t vault_session_object_count(Vault *v) {
    size_t n = 0;
    if (!v)
        return 0;
    READ_LOCKED(v);
    for (size_t i = 0; i < v->n_keys; i++)
        n += v->keys[i]->session_conn != 0;
    return n;
}
