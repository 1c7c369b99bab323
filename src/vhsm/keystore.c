/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The sealed keystore: serialization of the vault's keys into a Secret, sealing with
 * AES-256-GCM under a key derived from the SNP derived key, and the file's two slots (the older
 * one overwritten in place and fdatasynced at each save; keystore.h, docs/vault.md).
 *
 * Sealing key = HKDF-SHA256(ikm = SNP derived key (MSG_KEY_REQ with the configured parameters,
 * which the header records and must repeat exactly: a file never chooses its own derivation),
 * salt = "", info = "nitride-vhsm-keystore-v1"), so the keystore never shares a key with other
 * users of the same derived key (the sealed LUKS key). The whole 64-byte header is GCM AAD.
 *
 * Content (all integers big-endian; docs/vault.md):
 *   "NTKC" | u32 format (2) | u32 n_keys | n_keys * key
 *   key:  u16 name_len | full name ("<namespace>/<name>") | u8 type | u8 origin | u8 policy | u8 0
 * | u32 max_age | u16 label_len | label | u32 latest | u32 min_version | acl(use) | acl(admin) |
 *         (latest - min_version + 1) * { u32 number | u64 created | u32 len | material }
 *   acl:  u16 n | n * u32 uid | u16 n | n * u32 gid | u16 n | n * { u16 len | cgroup }
 *   material: raw key bytes (aes256, hmac-*, raw); asymmetric: the OpenSSL key parameters as
 *   { u32 len | bytes } per field (vault_pkey_export_material(), docs/vault.md).
 *   An absent version (a KMS release skipped it: never delivered to this vault) is a frame
 *   with created 0 and length 0 (no material of any type is empty); the latest never is.
 * The parser is strict: exact lengths, consecutive versions, no trailing bytes, every key
 * re-validated as if generated (names, ACL, policy, key material vs type).
 * Format 1 (before namespaces) stored plain names; it is read with each name moved into the
 * namespace of the key's first non-root administrator (root's "0/" if none), and the next save
 * writes format 2.
 * An asymmetric version that would not fit in the secure heap (leaving the operations headroom)
 * is kept as its sealed material, "dormant": the daemon starts, says so, and saves it unchanged.
 */
#include "keystore.h"

#include <inttypes.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/bytes.h"
#include "core/fileio.h"
#include "core/log.h"
#include "core/openssl-util.h"
#include "vhsm/freshness.h"
#include "vhsm/vault-private.h"

#define CONTENT_MAGIC "NTKC"
#define CONTENT_FORMAT 3u             /* 3: format 2 followed by the tokens */
#define CONTENT_FORMAT_NO_TOKENS 2u   /* still read: no tokens */
#define CONTENT_FORMAT_PLAIN_NAMES 1u /* still read: plain names, no tokens */
#define FILE_MAGIC "NTKS"
#define FILE_FORMAT 2u /* 2: u64 generation at 48; 1 (still read): none, generation 0 */
#define FILE_FORMAT_V1 1u
#define FILE_HEADER_SIZE 64u
#define FILE_NONCE_OFFSET 36u
#define FILE_NONCE_SIZE 12u
#define FILE_GENERATION_OFFSET 48u
#define FILE_TAG_SIZE 16u
#define SEAL_INFO "nitride-vhsm-keystore-v1"
/* The two-slot file (docs/vault.md "Keystore file"): "NTKD" | u16 format (1) | u16 header size
 * (16) | u32 slot capacity C | u32 reserved (0), then two slots of u32 length L (0: empty) |
 * sealed image [L] | zeros [C - L]. A save overwrites the slot not holding the current image in
 * place and fdatasyncs it (one flush, no rename, no directory sync); a torn write spoils only
 * that slot, and the other one still holds the previous, acknowledged generation. */
#define SLOTS_MAGIC "NTKD"
#define SLOTS_FORMAT 1u
#define SLOTS_HEADER_SIZE 16u
#define SLOTS_MIN_CAPACITY 4096u
#define ANCHOR_INFO "nitride-vhsm-freshness-anchor-v1"
#define MAX_KEYS 100000u
#define IN_SET(x, a, b, c, d) ((x) == (a) || (x) == (b) || (x) == (c) || (x) == (d))

struct Keystore {
    SnpProvider *provider;
    char *path;
    KeystoreSealParams params;
    bool opened; /* load returned 0 or -ENOENT: saving may replace the file */
    /* Freshness (docs/vault.md "Freshness and rollback"). save_lock serialises generation, file
     * and anchor: saves run under the vault's read lock too (keystore_save). */
    pthread_mutex_t save_lock;
    uint64_t generation; /* of the file on disk as far as we know; the next save writes +1 */
    FreshnessAnchor *anchor;
    bool accept_set;
    uint64_t accept_generation;
    KeystoreFreshness fresh;
    /* The two-slot file as loaded or last written (slots false: none yet, or a single-image
     * file of before: the next save writes a new two-slot file atomically). */
    bool slots;
    unsigned active; /* slot of the current image */
    size_t capacity; /* C */
};

void keystore_seal_params_default(KeystoreSealParams *ret) {
    *ret = (KeystoreSealParams){
        .root_key_select = SNP_KEY_ROOT_VCEK,
        .guest_field_select = KEYSTORE_DEFAULT_GFS,
    };
}

int keystore_new(SnpProvider *provider, const char *path, const KeystoreSealParams *params,
                 Keystore **ret) {
    Keystore *ks;
    if (!provider || !path || !path[0] || !ret)
        return -EINVAL;
    if (params && (params->root_key_select > SNP_KEY_ROOT_VMRK || params->vmpl > 3 ||
                   (params->guest_field_select & ~(uint64_t)0x7f)))
        return -EINVAL;
    ks = nt_calloc(1, sizeof(Keystore));
    if (!ks)
        return -ENOMEM;
    ks->path = nt_strdup(path);
    if (!ks->path) {
        free(ks);
        return -ENOMEM;
    }
    ks->provider = provider;
    (void)pthread_mutex_init(&ks->save_lock, NULL);
    if (params)
        ks->params = *params;
    else
        keystore_seal_params_default(&ks->params);
    *ret = ks;
    return 0;
}

Keystore *keystore_free(Keystore *ks) {
    if (!ks)
        return NULL;
    (void)pthread_mutex_destroy(&ks->save_lock);
    free(ks->path);
    free(ks);
    return NULL;
}

void keystore_set_anchor(Keystore *ks, FreshnessAnchor *anchor) {
    ks->anchor = anchor;
}

void keystore_accept_rollback(Keystore *ks, uint64_t generation) {
    ks->accept_set = true;
    ks->accept_generation = generation;
}

void keystore_get_freshness(const Keystore *ks, KeystoreFreshness *ret) {
    *ret = ks->fresh;
}

/* ---- writer (two passes: count with data == NULL, then write) ---- */

typedef struct Writer {
    uint8_t *data;
    size_t size, off;
} Writer;

static void w_bytes(Writer *w, const void *p, size_t n) {
    if (w->data && w->off + n <= w->size && n > 0)
        memcpy(w->data + w->off, p, n);
    w->off += n;
}
static void w_u8(Writer *w, uint8_t x) {
    w_bytes(w, &x, 1);
}
static void w_u16(Writer *w, uint16_t x) {
    uint8_t b[2];
    bytes_put_be16(b, x);
    w_bytes(w, b, sizeof b);
}
static void w_u32(Writer *w, uint32_t x) {
    uint8_t b[4];
    bytes_put_be32(b, x);
    w_bytes(w, b, sizeof b);
}
static void w_u64(Writer *w, uint64_t x) {
    uint8_t b[8];
    bytes_put_be64(b, x);
    w_bytes(w, b, sizeof b);
}

static void w_acl_list(Writer *w, const VaultAclList *l) {
    w_u16(w, (uint16_t)l->n_uids);
    for (size_t i = 0; i < l->n_uids; i++)
        w_u32(w, (uint32_t)l->uids[i]);
    w_u16(w, (uint16_t)l->n_gids);
    for (size_t i = 0; i < l->n_gids; i++)
        w_u32(w, (uint32_t)l->gids[i]);
    w_u16(w, (uint16_t)l->n_cgroups);
    for (size_t i = 0; i < l->n_cgroups; i++) {
        size_t n = strlen(l->cgroups[i]);
        w_u16(w, (uint16_t)n);
        w_bytes(w, l->cgroups[i], n);
    }
}

/* The keystore form of an asymmetric version's material: exported on first use and kept (in
 * locked memory, packed when small) for every later save. Safe under the read lock: concurrent
 * first uses race on an atomic exchange, and the loser frees its copy. */
static int version_material(VaultKeyType type, KeyVersion *kv, const Secret **ret) {
    _cleanup_(secret_freep) Secret *m = NULL;
    Secret *expected = NULL;
    size_t len = 0;
    int r;
    if (kv->dormant) {
        *ret = kv->dormant;
        return 0;
    }
    if ((*ret = atomic_load(&kv->material)))
        return 0;
    if ((r = vault_pkey_export_material(kv->pkey, type, NULL, 0, &len)) < 0 ||
        (r = secret_new_packed(len, &m)) < 0 ||
        (r = vault_pkey_export_material(kv->pkey, type, secret_data(m), len, &len)) < 0)
        return r;
    if (len != secret_size(m))
        return -EIO;
    if (atomic_compare_exchange_strong(&kv->material, &expected, m))
        *ret = TAKE_PTR(m);
    else
        *ret = expected; /* another thread was first: same bytes */
    return 0;
}

static int w_version(Writer *w, VaultKeyType type, KeyVersion *kv) {
    const Secret *m = kv->secret;
    int r;
    w_u32(w, kv->number);
    w_u64(w, kv->created);
    if (!m && (r = version_material(type, kv, &m)) < 0)
        return r;
    w_u32(w, (uint32_t)secret_size(m));
    w_bytes(w, secret_const_data(m), secret_size(m));
    return 0;
}

/* An absent version: its frame with no material (length 0, which no key type has). */
static void w_absent(Writer *w, uint32_t number) {
    w_u32(w, number);
    w_u64(w, 0);
    w_u32(w, 0);
}

static void w_pin(Writer *w, const VaultPinHash *h) {
    w_u8(w, h->alg);
    if (h->alg == VAULT_PIN_ALG_NONE)
        return;
    w_u32(w, h->iterations);
    w_bytes(w, h->salt, sizeof h->salt);
    w_bytes(w, h->hash, sizeof h->hash);
}

/* Format 3: u32 n | token * n (initialised tokens, sorted by uid). */
static void w_tokens(Writer *w, Vault *v) {
    uint32_t n = 0;
    for (size_t i = 0; i < v->n_tokens; i++)
        n += v->tokens[i].so.alg != VAULT_PIN_ALG_NONE;
    w_u32(w, n);
    for (size_t i = 0; i < v->n_tokens; i++) {
        const VaultToken *t = &v->tokens[i];
        if (t->so.alg == VAULT_PIN_ALG_NONE)
            continue;
        w_u32(w, t->uid);
        w_u8(w, t->label_len);
        w_bytes(w, t->label, t->label_len);
        w_bytes(w, t->serial, sizeof t->serial);
        w_pin(w, &t->so);
        w_pin(w, &t->user);
        w_u32(w, t->so_failures);
        w_u32(w, t->user_failures);
    }
}

static int serialize_pass(Vault *v, Writer *w) {
    uint32_t n = 0;
    int r;
    for (size_t i = 0; i < v->n_keys; i++)
        if (!v->keys[i]->pending_delete && !v->keys[i]->session_conn)
            n++;
    w_bytes(w, CONTENT_MAGIC, 4);
    w_u32(w, CONTENT_FORMAT);
    w_u32(w, n);
    for (size_t i = 0; i < v->n_keys; i++) {
        const VaultKey *k = v->keys[i];
        size_t ln = k->label ? strlen(k->label) : 0, nn = strlen(k->name);
        if (k->pending_delete || k->session_conn) /* session objects are never saved */
            continue;
        w_u16(w, (uint16_t)nn);
        w_bytes(w, k->name, nn);
        w_u8(w, (uint8_t)k->type);
        w_u8(w, (uint8_t)k->origin);
        w_u8(w, (uint8_t)k->policy.kind);
        w_u8(w, 0);
        w_u32(w, k->policy.max_age_sec);
        w_u16(w, (uint16_t)ln);
        w_bytes(w, k->label, ln);
        w_u32(w, k->latest + (k->pending_kv ? k->pending_gap + 1 : 0));
        w_u32(w, k->min_version);
        w_acl_list(w, &k->acl.use);
        w_acl_list(w, &k->acl.admin);
        w_u32(w, k->obj_flags);
        w_u16(w, (uint16_t)k->n_attrs);
        for (size_t a = 0; a < k->n_attrs; a++) {
            w_u32(w, k->attrs[a].type);
            w_u16(w, (uint16_t)k->attrs[a].len);
            w_bytes(w, k->attrs[a].value, k->attrs[a].len);
        }
        for (uint32_t ver = k->min_version; ver <= k->latest; ver++) {
            KeyVersion *kv = k->versions[ver - 1];
            if (!kv)
                w_absent(w, ver); /* never delivered to this vault (a skipped release) */
            else if ((r = w_version(w, k->type, kv)) < 0)
                return r;
        }
        for (uint32_t g = 0; k->pending_kv && g < k->pending_gap; g++)
            w_absent(w, k->latest + 1 + g);
        if (k->pending_kv && (r = w_version(w, k->type, k->pending_kv)) < 0)
            return r;
    }
    w_tokens(w, v);
    return 0;
}

int keystore_serialize_locked(Vault *v, Secret **ret) {
    _cleanup_(secret_freep) Secret *s = NULL;
    Writer w = {0};
    int r;
    if ((r = serialize_pass(v, &w)) < 0)
        return r;
    if ((r = secret_new(w.off, &s)) < 0)
        return r;
    w = (Writer){.data = secret_data(s), .size = secret_size(s)};
    if ((r = serialize_pass(v, &w)) < 0)
        return r;
    if (w.off != secret_size(s))
        return -EIO;
    *ret = TAKE_PTR(s);
    return 0;
}

int keystore_serialize(Vault *v, Secret **ret) {
    int r;
    if (!v || !ret)
        return -EINVAL;
    (void)pthread_rwlock_rdlock(&v->lock);
    r = keystore_serialize_locked(v, ret);
    (void)pthread_rwlock_unlock(&v->lock);
    return r;
}

/* ---- reader ---- */

typedef struct Reader {
    const uint8_t *p;
    size_t left;
} Reader;

static int r_bytes(Reader *rd, size_t n, const uint8_t **ret) {
    if (n > rd->left)
        return -EBADMSG;
    *ret = rd->p;
    rd->p += n;
    rd->left -= n;
    return 0;
}
static int r_u8(Reader *rd, uint8_t *x) {
    const uint8_t *b;
    int r = r_bytes(rd, 1, &b);
    if (r >= 0)
        *x = b[0];
    return r;
}
static int r_u16(Reader *rd, uint16_t *x) {
    const uint8_t *b;
    int r = r_bytes(rd, 2, &b);
    if (r >= 0)
        *x = bytes_get_be16(b);
    return r;
}
static int r_u32(Reader *rd, uint32_t *x) {
    const uint8_t *b;
    int r = r_bytes(rd, 4, &b);
    if (r >= 0)
        *x = bytes_get_be32(b);
    return r;
}
static int r_u64(Reader *rd, uint64_t *x) {
    const uint8_t *b;
    int r = r_bytes(rd, 8, &b);
    if (r >= 0)
        *x = bytes_get_be64(b);
    return r;
}

/* Reads a length-prefixed string into a NUL-terminated malloc'd copy; refuses embedded NULs. */
static int r_string(Reader *rd, size_t max, char **ret) {
    const uint8_t *b;
    uint16_t n;
    char *s;
    int r;
    if ((r = r_u16(rd, &n)) < 0 || n > max || (r = r_bytes(rd, n, &b)) < 0)
        return -EBADMSG;
    if (memchr(b, 0, n))
        return -EBADMSG;
    s = nt_malloc((size_t)n + 1);
    if (!s)
        return -ENOMEM;
    memcpy(s, b, n);
    s[n] = 0;
    *ret = s;
    return 0;
}

static void vault_acl_donep(VaultAcl *a) {
    vault_acl_done(a);
}

static int r_acl_list(Reader *rd, VaultAclList *l) {
    uint16_t n;
    uint32_t id;
    int r;
    if ((r = r_u16(rd, &n)) < 0 || n > VAULT_ACL_MAX_ENTRIES)
        return -EBADMSG;
    for (uint16_t i = 0; i < n; i++)
        if ((r = r_u32(rd, &id)) < 0 || (r = vault_acl_list_add_uid(l, (uid_t)id)) < 0)
            return r == -E2BIG ? -EBADMSG : r;
    if ((r = r_u16(rd, &n)) < 0 || n > VAULT_ACL_MAX_ENTRIES)
        return -EBADMSG;
    for (uint16_t i = 0; i < n; i++)
        if ((r = r_u32(rd, &id)) < 0 || (r = vault_acl_list_add_gid(l, (gid_t)id)) < 0)
            return r == -E2BIG ? -EBADMSG : r;
    if ((r = r_u16(rd, &n)) < 0 || n > VAULT_ACL_MAX_ENTRIES)
        return -EBADMSG;
    for (uint16_t i = 0; i < n; i++) {
        _cleanup_free_ char *cg = NULL;
        if ((r = r_string(rd, VAULT_CGROUP_MAX - 1, &cg)) < 0)
            return r;
        if ((r = vault_acl_list_add_cgroup(l, cg)) < 0)
            return r == -ENOMEM ? r : -EBADMSG;
    }
    return 0;
}

/* Format 1 names were global. A key moves into the namespace of its one non-root administrator
 * when nobody else but root could use or administer it; any other key (shared, or administered
 * by several uids, whose list order its creator chose) goes to root's "0/", so that a squatted
 * name never becomes a key of its victim's own namespace. vhsmd logs the move. */
static int migrate_name(const char *plain, const VaultAcl *acl, char **ret) {
    uid_t owner = 0;
    bool sole = true;
    char *full;
    if (strchr(plain, '/'))
        return -EBADMSG;
    for (size_t i = 0; i < acl->admin.n_uids; i++)
        if (acl->admin.uids[i] != 0) {
            if (owner != 0 && owner != acl->admin.uids[i])
                sole = false;
            owner = acl->admin.uids[i];
        }
    for (size_t i = 0; i < acl->use.n_uids; i++)
        if (acl->use.uids[i] != 0 && acl->use.uids[i] != owner)
            sole = false;
    if (acl->admin.n_gids || acl->admin.n_cgroups || acl->use.n_gids || acl->use.n_cgroups)
        sole = false;
    if (!sole)
        owner = 0;
    if (asprintf(&full, "%u/%s", (unsigned)owner, plain) < 0)
        return -ENOMEM;
    *ret = full;
    return 0;
}

/* One version's frame: u32 number (must be ver) | u64 created | u32 len | material. */
static int r_version_frame(Reader *rd, uint32_t ver, uint64_t *ret_created, const uint8_t **ret_mat,
                           uint32_t *ret_len) {
    uint32_t number;
    int r;
    if ((r = r_u32(rd, &number)) < 0 || (r = r_u64(rd, ret_created)) < 0 ||
        (r = r_u32(rd, ret_len)) < 0 || (r = r_bytes(rd, *ret_len, ret_mat)) < 0)
        return r;
    return number == ver ? 0 : -EBADMSG;
}

/* Parses one key. Keys load in two passes over the content, root's (0/ and kms/: the agent's,
 * e.g. the KMS-released LUKS keys) first, so that when the secure heap cannot hold every private
 * key it is other users' that stay dormant. A key of the other pass is checked and skipped
 * (*ret = NULL). */
static int r_key(Reader *rd, uint32_t format, bool root_pass, VaultKey **ret) {
    _cleanup_(vault_key_freep) VaultKey *k = NULL;
    _cleanup_(vault_acl_donep) VaultAcl acl = {0};
    _cleanup_free_ char *name = NULL, *label = NULL;
    uint8_t type, origin, policy, pad;
    uint32_t max_age, latest, min, obj_flags = 0;
    VaultAttr attrs[VAULT_ATTR_MAX];
    size_t n_attrs = 0;
    VaultKeySpec spec;
    int r;

    if ((r = r_string(
             rd, format != CONTENT_FORMAT_PLAIN_NAMES ? VAULT_FULL_NAME_MAX : VAULT_PLAIN_NAME_MAX,
             &name)) < 0 ||
        (r = r_u8(rd, &type)) < 0 || (r = r_u8(rd, &origin)) < 0 || (r = r_u8(rd, &policy)) < 0 ||
        (r = r_u8(rd, &pad)) < 0 || (r = r_u32(rd, &max_age)) < 0 ||
        (r = r_string(rd, 128, &label)) < 0 || (r = r_u32(rd, &latest)) < 0 ||
        (r = r_u32(rd, &min)) < 0)
        return r;
    if (pad != 0 || type >= _VAULT_KEY_TYPE_MAX || origin >= _VAULT_ORIGIN_MAX ||
        policy >= _VAULT_POLICY_MAX)
        return -EBADMSG;
    if (latest == 0 || latest > VAULT_MAX_VERSIONS || min == 0 || min > latest)
        return -EBADMSG;
    if ((r = r_acl_list(rd, &acl.use)) < 0 || (r = r_acl_list(rd, &acl.admin)) < 0)
        return r;
    if (format == CONTENT_FORMAT) {
        uint16_t n;
        if ((r = r_u32(rd, &obj_flags)) < 0 || (r = r_u16(rd, &n)) < 0)
            return r;
        if (obj_flags & ~(VAULT_OBJ_SETTABLE | VAULT_OBJ_READONLY) || n > VAULT_ATTR_MAX)
            return -EBADMSG;
        for (uint16_t i = 0; i < n; i++) {
            uint32_t t;
            uint16_t len;
            if ((r = r_u32(rd, &t)) < 0 || (r = r_u16(rd, &len)) < 0 || len == 0 ||
                (r = r_bytes(rd, len, &attrs[i].value)) < 0)
                return r < 0 ? r : -EBADMSG;
            if (i > 0 && t <= attrs[i - 1].type)
                return -EBADMSG; /* sorted, unique */
            attrs[i].type = t;
            attrs[i].len = len;
        }
        n_attrs = n;
    }
    if (format == CONTENT_FORMAT_PLAIN_NAMES) {
        char *full = NULL;
        if ((r = migrate_name(name, &acl, &full)) < 0)
            return r;
        free(name);
        name = full;
    } else if (!strchr(name, '/'))
        return -EBADMSG; /* format 2 stores full names only */
    {
        uid_t owner = 0;
        if (vault_name_owner(name, &owner) < 0)
            return -EBADMSG;
        if ((owner == 0) != root_pass) { /* the other pass's key: check its framing, skip it */
            for (uint32_t ver = min; ver <= latest; ver++) {
                const uint8_t *mat;
                uint32_t len;
                uint64_t created;
                if ((r = r_version_frame(rd, ver, &created, &mat, &len)) < 0)
                    return r;
            }
            *ret = NULL;
            return 0;
        }
    }
    spec = (VaultKeySpec){
        .type = (VaultKeyType)type,
        .acl = &acl,
        .policy = {.kind = (VaultPolicyKind)policy, .max_age_sec = max_age},
        .label = label,
        .attrs = attrs,
        .n_attrs = n_attrs,
    };
    r = vault_key_new(name, &spec, &(VaultPeer){0}, (VaultOrigin)origin, &k);
    if (r < 0)
        return r == -ENOMEM ? r : -EBADMSG;
    if (format == CONTENT_FORMAT)
        /* keys of older keystores: the usage history from their usage (objects have none) */
        k->obj_flags =
            vault_key_type_is_object(k->type) ? obj_flags : vault_obj_flags_history(obj_flags);
    k->latest = min - 1;
    k->min_version = min;
    for (uint32_t ver = min; ver <= latest; ver++) {
        _cleanup_(key_version_unrefp) KeyVersion *kv = NULL;
        const uint8_t *mat;
        uint32_t len;
        uint64_t created;
        if ((r = r_version_frame(rd, ver, &created, &mat, &len)) < 0)
            return r;
        if (len == 0) {
            /* Absent (never delivered here); the latest version is always present. */
            if (ver == latest || (r = vault_key_add_absent(k)) < 0)
                return ver == latest ? -EBADMSG : r;
            continue;
        }
        kv = key_version_new(ver, created);
        if (!kv)
            return -ENOMEM;
        if (vault_key_type_is_asymmetric(k->type) && !vault_secure_heap_has_room(k->type)) {
            /* Never refuse to start on a full heap: keep the sealed material, unusable until a
             * restart with a larger secure heap (vhsmd says how many at start). */
            if (len == 0 || len > 65536)
                return -EBADMSG;
            if ((r = secret_new_packed_copy(mat, len, &kv->dormant)) < 0)
                return r;
        } else if (vault_key_type_is_asymmetric(k->type)) {
            Secret *m = NULL;
            if ((r = vault_pkey_import_material(k->type, mat, len, &kv->pkey)) < 0)
                return r;
            if ((r = key_version_set_thumbprint(kv)) < 0)
                return r;
            /* the keystore form is at hand: the next save copies it (version_material) */
            if ((r = secret_new_packed_copy(mat, len, &m)) < 0)
                return r;
            atomic_store(&kv->material, m);
        } else if (vault_key_type_is_object(k->type)) {
            /* data, certificate, public key: checked again as when created */
            if ((r = vault_object_value_load(k->type, mat, len, kv)) < 0)
                return r == -ENOMEM ? r : -EBADMSG;
        } else if (k->type == VAULT_KEY_RAW || k->type == VAULT_KEY_GENERIC_SECRET) {
            if (len > (k->type == VAULT_KEY_RAW ? VAULT_RAW_MAX : VAULT_GENERIC_SECRET_MAX) ||
                (k->type == VAULT_KEY_GENERIC_SECRET && len == 0))
                return -EBADMSG;
            if ((r = secret_new_packed_copy(mat, len, &kv->secret)) < 0)
                return r;
        } else {
            if (len != vault_key_type_secret_size(k->type))
                return -EBADMSG;
            if ((r = secret_new_packed_copy(mat, len, &kv->secret)) < 0)
                return r;
        }
        if ((r = vault_key_add_version(k, kv)) < 0)
            return r;
        kv = NULL;
    }
    if (format == CONTENT_FORMAT_PLAIN_NAMES)
        log_notice("AUDIT: keystore format 1: key now named '%s'%s.", k->name,
                   k->name[0] == '0' ? " (shared or without a sole non-root administrator: "
                                       "root's namespace)"
                                     : "");
    *ret = TAKE_PTR(k);
    return 0;
}

static int r_pin(Reader *rd, VaultPinHash *h) {
    const uint8_t *p;
    int r;
    *h = (VaultPinHash){0};
    if ((r = r_u8(rd, &h->alg)) < 0)
        return r;
    if (h->alg == VAULT_PIN_ALG_NONE)
        return 0;
    if (h->alg != VAULT_PIN_ALG_PBKDF2_SHA256)
        return -EBADMSG;
    if ((r = r_u32(rd, &h->iterations)) < 0)
        return r;
    if (h->iterations < 1000 || h->iterations > 100000000u)
        return -EBADMSG;
    if ((r = r_bytes(rd, sizeof h->salt, &p)) < 0)
        return r;
    memcpy(h->salt, p, sizeof h->salt);
    if ((r = r_bytes(rd, sizeof h->hash, &p)) < 0)
        return r;
    memcpy(h->hash, p, sizeof h->hash);
    return 0;
}

/* The token section of format 3 into a new sorted array (strictly increasing uids, each with an
 * SO PIN, label without NUL, at most VAULT_TOKENS_MAX). */
static int r_tokens(Reader *rd, VaultToken **ret, size_t *ret_n) {
    VaultToken *t = NULL;
    uint32_t n;
    int r;
    if ((r = r_u32(rd, &n)) < 0)
        return r;
    /* Each token needs at least 4 + 1 + 8 + 53 + 1 + 8 bytes. */
    if (n > VAULT_TOKENS_MAX || n > rd->left / 75)
        return -EBADMSG;
    if (n > 0 && !(t = calloc(n, sizeof(VaultToken))))
        return -ENOMEM;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *p;
        uint32_t uid;
        if ((r = r_u32(rd, &uid)) < 0 || (r = r_u8(rd, &t[i].label_len)) < 0)
            goto fail;
        t[i].uid = uid;
        r = -EBADMSG;
        if (uid == UINT32_MAX || (i > 0 && uid <= t[i - 1].uid) ||
            t[i].label_len > VAULT_TOKEN_LABEL_MAX)
            goto fail;
        if ((r = r_bytes(rd, t[i].label_len, &p)) < 0)
            goto fail;
        memcpy(t[i].label, p, t[i].label_len);
        if (memchr(t[i].label, 0, t[i].label_len)) {
            r = -EBADMSG;
            goto fail;
        }
        if ((r = r_bytes(rd, sizeof t[i].serial, &p)) < 0)
            goto fail;
        memcpy(t[i].serial, p, sizeof t[i].serial);
        if ((r = r_pin(rd, &t[i].so)) < 0 || (r = r_pin(rd, &t[i].user)) < 0 ||
            (r = r_u32(rd, &t[i].so_failures)) < 0 || (r = r_u32(rd, &t[i].user_failures)) < 0)
            goto fail;
        if (t[i].so.alg == VAULT_PIN_ALG_NONE) {
            r = -EBADMSG;
            goto fail;
        }
    }
    *ret = t;
    *ret_n = n;
    return 0;
fail:
    if (t) {
        explicit_bzero(t, n * sizeof(VaultToken));
        free(t);
    }
    return r < 0 ? r : -EBADMSG;
}

static void tokens_free(VaultToken *t, size_t n) {
    if (t) {
        explicit_bzero(t, n * sizeof(VaultToken));
        free(t);
    }
}

int keystore_deserialize(Vault *v, const uint8_t *data, size_t len) {
    Reader rd = {.p = data, .left = len};
    VaultToken *tokens = NULL;
    size_t n_tokens = 0;
    VaultKey **keys = NULL;
    const uint8_t *magic;
    uint32_t format, n;
    size_t got = 0;
    int r;

    if (!v || (!data && len > 0))
        return -EINVAL;
    if ((r = r_bytes(&rd, 4, &magic)) < 0 || memcmp(magic, CONTENT_MAGIC, 4) != 0 ||
        (r = r_u32(&rd, &format)) < 0 || (r = r_u32(&rd, &n)) < 0)
        return -EBADMSG;
    if (format != CONTENT_FORMAT && format != CONTENT_FORMAT_NO_TOKENS &&
        format != CONTENT_FORMAT_PLAIN_NAMES)
        return -EOPNOTSUPP;
    /* Each key needs at least 36 bytes: refuse counts the input cannot hold before allocating. */
    if (n > MAX_KEYS || n > rd.left / 36 + 1)
        return -EBADMSG;
    keys = nt_calloc((size_t)n + 1, sizeof(VaultKey *));
    if (!keys)
        return -ENOMEM;
    {
        const Reader start = rd;
        for (int pass = 0; pass < 2; pass++) { /* root's keys first (r_key) */
            rd = start;
            for (uint32_t i = 0; i < n; i++) {
                VaultKey *k = NULL;
                if ((r = r_key(&rd, format, pass == 0, &k)) < 0)
                    goto fail;
                if (!k)
                    continue;
                keys[got++] = k; /* at most n: each key is taken in exactly one pass */
                for (size_t j = 0; j + 1 < got; j++)
                    if (streq(keys[j]->name, k->name)) {
                        r = -EBADMSG;
                        goto fail;
                    }
            }
            if (format == CONTENT_FORMAT) {
                tokens_free(tokens, n_tokens);
                tokens = NULL;
                n_tokens = 0;
                if ((r = r_tokens(&rd, &tokens, &n_tokens)) < 0)
                    goto fail;
            }
            if (rd.left != 0) {
                r = -EBADMSG;
                goto fail;
            }
        }
    }
    if (got != n) {
        r = -EBADMSG;
        goto fail;
    }

    (void)pthread_rwlock_wrlock(&v->lock);
    if (v->n_keys != 0 || v->n_tokens != 0) {
        (void)pthread_rwlock_unlock(&v->lock);
        r = -EBUSY;
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        r = vault_insert_key_locked(v, keys[i]);
        if (r < 0) {
            /* Undo: v must stay empty (the keys are freed below). */
            vault_clear_table_locked(v);
            (void)pthread_rwlock_unlock(&v->lock);
            goto fail;
        }
    }
    vault_tokens_set_locked(v, tokens, n_tokens);
    (void)pthread_rwlock_unlock(&v->lock);
    free(keys);
    return 0;

fail:
    for (size_t i = 0; i < got; i++)
        vault_key_free(keys[i]);
    free(keys);
    tokens_free(tokens, n_tokens);
    return r;
}

/* ---- sealing ---- */

/* Header layout: 0 magic[4] | 4 u16 format | 6 u16 header size | 8 u32 root_key_select |
 * 12 u64 guest_field_select | 20 u32 vmpl | 24 u32 guest_svn | 28 u64 tcb_version |
 * 36 nonce[12] | 48 u64 generation | 56 reserved[8]; format 1: 48 reserved[16], generation 0.
 * The generation is authenticated with the rest of the header (GCM AAD). */
static void header_build(uint8_t h[FILE_HEADER_SIZE], const KeystoreSealParams *p,
                         uint64_t generation, const uint8_t nonce[FILE_NONCE_SIZE]) {
    memset(h, 0, FILE_HEADER_SIZE);
    memcpy(h, FILE_MAGIC, 4);
    bytes_put_be16(h + 4, FILE_FORMAT);
    bytes_put_be16(h + 6, FILE_HEADER_SIZE);
    bytes_put_be32(h + 8, p->root_key_select);
    bytes_put_be64(h + 12, p->guest_field_select);
    bytes_put_be32(h + 20, p->vmpl);
    bytes_put_be32(h + 24, p->guest_svn);
    bytes_put_be64(h + 28, p->tcb_version);
    memcpy(h + FILE_NONCE_OFFSET, nonce, FILE_NONCE_SIZE);
    bytes_put_be64(h + FILE_GENERATION_OFFSET, generation);
}

static int header_parse(const uint8_t *h, size_t len, KeystoreSealParams *ret,
                        uint64_t *ret_generation) {
    static const uint8_t zero[FILE_HEADER_SIZE - FILE_GENERATION_OFFSET];
    size_t reserved = FILE_GENERATION_OFFSET; /* format 1: all of 48..63 */
    uint16_t format;
    if (len < FILE_HEADER_SIZE + FILE_TAG_SIZE || memcmp(h, FILE_MAGIC, 4) != 0)
        return -EBADMSG;
    format = bytes_get_be16(h + 4);
    if (format != FILE_FORMAT && format != FILE_FORMAT_V1)
        return -EOPNOTSUPP;
    if (format == FILE_FORMAT)
        reserved = FILE_GENERATION_OFFSET + 8;
    if (bytes_get_be16(h + 6) != FILE_HEADER_SIZE ||
        memcmp(h + reserved, zero, FILE_HEADER_SIZE - reserved) != 0)
        return -EBADMSG;
    *ret_generation = format == FILE_FORMAT ? bytes_get_be64(h + FILE_GENERATION_OFFSET) : 0;
    *ret = (KeystoreSealParams){
        .root_key_select = bytes_get_be32(h + 8),
        .guest_field_select = bytes_get_be64(h + 12),
        .vmpl = bytes_get_be32(h + 20),
        .guest_svn = bytes_get_be32(h + 24),
        .tcb_version = bytes_get_be64(h + 28),
    };
    if (ret->root_key_select > SNP_KEY_ROOT_VMRK || ret->vmpl > 3 ||
        (ret->guest_field_select & ~(uint64_t)0x7f))
        return -EBADMSG;
    return 0;
}

/* HKDF-SHA256(SNP derived key with p, info): the sealing key (SEAL_INFO) or the freshness
 * anchor's MAC key (ANCHOR_INFO). */
static int sealing_key(SnpProvider *provider, const KeystoreSealParams *p, const char *info,
                       Secret **ret) {
    SnpDerivedKeyRequest req = {
        .root_key_select = p->root_key_select,
        .guest_field_select = p->guest_field_select,
        .vmpl = p->vmpl,
        .guest_svn = p->guest_svn,
        .tcb_version = p->tcb_version,
    };
    return snp_provider_sealing_key(provider, &req, info, ret);
}

static int gcm(bool enc, const Secret *key, const uint8_t *hdr, const uint8_t *in, size_t len,
               uint8_t *out, uint8_t *tag) {
    return nt_aes256gcm(enc, key, hdr + FILE_NONCE_OFFSET, FILE_NONCE_SIZE, hdr, FILE_HEADER_SIZE,
                        in, len, out, tag, FILE_TAG_SIZE, "keystore");
}

int keystore_seal(SnpProvider *provider, const KeystoreSealParams *params, uint64_t generation,
                  const Secret *content, uint8_t **ret, size_t *ret_len) {
    _cleanup_(secret_freep) Secret *key = NULL;
    _cleanup_free_ uint8_t *out = NULL;
    uint8_t nonce[FILE_NONCE_SIZE];
    size_t n;
    int r;

    if (!provider || !params || !content || !ret || !ret_len)
        return -EINVAL;
    n = FILE_HEADER_SIZE + secret_size(content) + FILE_TAG_SIZE;
    if (n > KEYSTORE_MAX_FILE)
        return -EFBIG;
    if ((r = sealing_key(provider, params, SEAL_INFO, &key)) < 0)
        return r;
    if (RAND_bytes(nonce, sizeof nonce) != 1)
        return nt_openssl_error(-EIO, "RAND_bytes");
    out = nt_malloc(n);
    if (!out)
        return -ENOMEM;
    header_build(out, params, generation, nonce);
    if ((r = gcm(true, key, out, secret_const_data(content), secret_size(content),
                 out + FILE_HEADER_SIZE, out + n - FILE_TAG_SIZE)) < 0)
        return r;
    *ret = TAKE_PTR(out);
    *ret_len = n;
    return 0;
}

int keystore_unseal(SnpProvider *provider, const KeystoreSealParams *expected, const uint8_t *file,
                    size_t len, Secret **ret_content, uint64_t *ret_generation) {
    _cleanup_(secret_freep) Secret *key = NULL, *pt = NULL;
    KeystoreSealParams params;
    uint64_t generation = 0;
    uint8_t tag[FILE_TAG_SIZE];
    size_t n;
    int r;

    if (!provider || !expected || !file || !ret_content)
        return -EINVAL;
    if ((r = header_parse(file, len, &params, &generation)) < 0)
        return r;
    /* The header is not authenticated until GCM has checked it, and the key that checks it is
     * derived from these very parameters: whoever writes the file could pick a weaker derivation
     * (e.g. guest_field_select 0, a key any VM on the chip can derive, or a lower SVN/TCB) and
     * seal keys of their choosing. So the derivation is never taken from the file: it must be
     * exactly the configured one. */
    if (params.root_key_select != expected->root_key_select ||
        params.guest_field_select != expected->guest_field_select ||
        params.vmpl != expected->vmpl || params.guest_svn != expected->guest_svn ||
        params.tcb_version != expected->tcb_version) {
        log_debug("keystore: sealed with other derivation parameters than configured "
                  "(root %u gfs 0x%" PRIx64 " vmpl %u svn %u tcb 0x%" PRIx64 "), refusing",
                  params.root_key_select, params.guest_field_select, params.vmpl, params.guest_svn,
                  params.tcb_version);
        return -EKEYREJECTED;
    }
    n = len - FILE_HEADER_SIZE - FILE_TAG_SIZE;
    r = sealing_key(provider, &params, SEAL_INFO, &key);
    if (IN_SET(r, -EINVAL, -EPERM, -ERANGE, -EOVERFLOW)) {
        /* The firmware refused the request parameters of the (not yet authenticated) header:
         * a file sealed for another VMPL, a higher guest SVN or TCB, or a tampered header.
         * Either way this VM cannot authenticate it. */
        log_debug_errno(r, "keystore: derived key request of the header refused: %m");
        return -EKEYREJECTED;
    }
    if (r < 0)
        return r;
    if ((r = secret_new(n, &pt)) < 0)
        return r;
    memcpy(tag, file + len - FILE_TAG_SIZE, FILE_TAG_SIZE);
    if ((r = gcm(false, key, file, file + FILE_HEADER_SIZE, n, secret_data(pt), tag)) < 0)
        return r;
    *ret_content = TAKE_PTR(pt);
    if (ret_generation)
        *ret_generation = generation; /* authenticated: part of the AAD */
    return 0;
}

/* ---- the two-slot file ---- */

static size_t slots_file_size(size_t capacity) {
    return SLOTS_HEADER_SIZE + 2 * (4 + capacity);
}

int keystore_slots_parse(const uint8_t *file, size_t len, const uint8_t *ret_image[2],
                         size_t ret_len[2], int ret_err[2], size_t *ret_capacity) {
    size_t cap;
    if (!file || !ret_image || !ret_len || !ret_err || !ret_capacity)
        return -EINVAL;
    if (len < SLOTS_HEADER_SIZE || memcmp(file, SLOTS_MAGIC, 4) != 0)
        return -EBADMSG;
    if (bytes_get_be16(file + 4) != SLOTS_FORMAT)
        return -EOPNOTSUPP;
    cap = bytes_get_be32(file + 8);
    if (bytes_get_be16(file + 6) != SLOTS_HEADER_SIZE || bytes_get_be32(file + 12) != 0 ||
        cap < SLOTS_MIN_CAPACITY || cap > KEYSTORE_MAX_FILE || len != slots_file_size(cap))
        return -EBADMSG;
    for (unsigned i = 0; i < 2; i++) {
        const uint8_t *slot = file + SLOTS_HEADER_SIZE + i * (4 + cap);
        size_t n = bytes_get_be32(slot);
        ret_image[i] = NULL;
        ret_len[i] = 0;
        ret_err[i] = 0;
        if (n > cap) {
            ret_err[i] = -EBADMSG;
            continue;
        }
        for (size_t j = 4 + n; j < 4 + cap; j++)
            if (slot[j] != 0) {
                ret_err[i] = -EBADMSG;
                break;
            }
        if (ret_err[i] == 0 && n > 0) {
            ret_image[i] = slot + 4;
            ret_len[i] = n;
        }
    }
    *ret_capacity = cap;
    return 0;
}

/* Writes image (a sealed generation) durably: into the slot not holding the current image, in
 * place, with one fdatasync, when the file is the two-slot file we loaded or wrote and it has
 * room; else a new two-slot file (image in slot 0, slot 1 empty) replaces the file atomically. */
static int slots_write(Keystore *ks, const uint8_t *image, size_t len) {
    _cleanup_free_ uint8_t *buf = NULL;
    int r;
    if (ks->slots && len <= ks->capacity) {
        _cleanup_close_ int fd = -EBADF;
        unsigned target = 1 - ks->active;
        struct stat st;
        fd = open(ks->path, O_WRONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW);
        if (fd < 0)
            return negative_errno();
        if (fstat(fd, &st) < 0)
            return negative_errno();
        if (S_ISREG(st.st_mode) && (size_t)st.st_size == slots_file_size(ks->capacity)) {
            size_t n = 4 + ks->capacity;
            off_t off = (off_t)(SLOTS_HEADER_SIZE + target * n);
            buf = nt_calloc(1, n);
            if (!buf)
                return -ENOMEM;
            bytes_put_be32(buf, (uint32_t)len);
            memcpy(buf + 4, image, len);
            for (size_t done = 0; done < n;) {
                ssize_t w = pwrite(fd, buf + done, n - done, off + (off_t)done);
                if (w < 0 && errno == EINTR)
                    continue;
                if (w <= 0)
                    return w < 0 ? negative_errno() : -EIO;
                done += (size_t)w;
            }
            if (fdatasync(fd) < 0)
                return negative_errno();
            ks->active = target;
            return 0;
        }
        /* Not the file we wrote (replaced or resized behind our back): a new one. */
    }
    {
        size_t cap = len + len / 2 + 4, total;
        cap = (cap + SLOTS_MIN_CAPACITY - 1) / SLOTS_MIN_CAPACITY * SLOTS_MIN_CAPACITY;
        if (cap > KEYSTORE_MAX_FILE)
            cap = KEYSTORE_MAX_FILE;
        if (len > cap)
            return -EFBIG;
        total = slots_file_size(cap);
        buf = nt_calloc(1, total);
        if (!buf)
            return -ENOMEM;
        memcpy(buf, SLOTS_MAGIC, 4);
        bytes_put_be16(buf + 4, SLOTS_FORMAT);
        bytes_put_be16(buf + 6, SLOTS_HEADER_SIZE);
        bytes_put_be32(buf + 8, (uint32_t)cap);
        bytes_put_be32(buf + SLOTS_HEADER_SIZE, (uint32_t)len);
        memcpy(buf + SLOTS_HEADER_SIZE + 4, image, len);
        /* Every byte written (no holes): the in-place writes that follow allocate nothing. */
        if ((r = write_file_atomic(ks->path, buf, total, 0600)) < 0) {
            ks->slots = false;
            return r;
        }
        ks->slots = true;
        ks->active = 0;
        ks->capacity = cap;
        return 0;
    }
}

/* Opens a keystore file: a single sealed image (the file before the two slots), or the newest
 * valid slot of a two-slot file. A spoiled or unauthentic slot next to a valid one is skipped: a
 * torn write leaves this, and the other slot holds the previous, acknowledged generation (a
 * host that spoils the newer slot on purpose only brings back the previous generation, which
 * the anchor refuses). Returns 0, or the first slot's error when none opens. */
static int open_file(Keystore *ks, const uint8_t *file, size_t len, Secret **ret_content,
                     uint64_t *ret_generation) {
    const uint8_t *img[2];
    size_t n[2], cap = 0;
    int err[2], r, best = -1;
    Secret *content[2] = {NULL, NULL};
    uint64_t gen[2] = {0, 0};

    ks->slots = false;
    if (len < 4 || memcmp(file, SLOTS_MAGIC, 4) != 0)
        return keystore_unseal(ks->provider, &ks->params, file, len, ret_content, ret_generation);
    if ((r = keystore_slots_parse(file, len, img, n, err, &cap)) < 0)
        return r;
    for (unsigned i = 0; i < 2; i++) {
        if (err[i] == 0 && !img[i])
            err[i] = -ENOENT;
        if (err[i] == 0)
            err[i] = keystore_unseal(ks->provider, &ks->params, img[i], n[i], &content[i], &gen[i]);
        if (err[i] < 0 && !IN_SET(err[i], -ENOENT, -EBADMSG, -EKEYREJECTED, -EOPNOTSUPP)) {
            r = err[i]; /* the provider's or memory: not the file's fault */
            goto out;
        }
        if (err[i] == 0 && (best < 0 || gen[i] > gen[best]))
            best = (int)i;
    }
    if (best < 0) {
        r = err[0] != -ENOENT ? err[0] : err[1] != -ENOENT ? err[1] : -EBADMSG;
        goto out;
    }
    if (content[0] && content[1] && gen[0] == gen[1]) {
        r = -EBADMSG; /* never written so */
        goto out;
    }
    if (err[1 - best] != 0 && err[1 - best] != -ENOENT)
        log_notice("keystore: slot %d of %s does not open (%s); using slot %d, generation %" PRIu64
                   " (an interrupted write leaves this)",
                   2 - best, ks->path, strerror(-err[1 - best]), best + 1, gen[best]);
    ks->slots = true;
    ks->active = (unsigned)best;
    ks->capacity = cap;
    *ret_content = TAKE_PTR(content[best]);
    *ret_generation = gen[best];
    r = 0;
out:
    secret_free(content[0]);
    secret_free(content[1]);
    return r;
}

/* The anchor's MAC key, derived once: same SNP derived key as the seal, other HKDF info. */
static int anchor_prepare(Keystore *ks) {
    _cleanup_(secret_freep) Secret *key = NULL;
    int r;
    if (freshness_anchor_has_key(ks->anchor))
        return 0;
    if ((r = sealing_key(ks->provider, &ks->params, ANCHOR_INFO, &key)) < 0)
        return r;
    return freshness_anchor_set_key(ks->anchor, &key);
}

/* Compares the authenticated generation of the file (0: no file, or format 1) with the anchor.
 * Returns 0 (fresh), 1 (stale or anchor unusable, but accepted by the operator's override of
 * exactly this generation), -EKEYREVOKED (older than the anchor), the anchor's error
 * (-EKEYREJECTED forged or tampered, -EBADMSG, -EOPNOTSUPP) without the override, or a read
 * error (never overridden: the anchor may be fine). */
static int freshness_check(Keystore *ks, uint64_t generation) {
    uint64_t anchor_gen = 0;
    int r;
    if ((r = anchor_prepare(ks)) < 0)
        return r;
    r = freshness_anchor_read(ks->anchor, &anchor_gen);
    ks->fresh.anchor_read = r;
    ks->fresh.anchor_generation = r == 0 ? anchor_gen : 0;
    if (r == -ENOENT || (r == 0 && generation >= anchor_gen))
        return 0;
    if (r < 0 && r != -EKEYREJECTED && r != -EBADMSG && r != -EOPNOTSUPP)
        return r;
    if (!ks->accept_set || ks->accept_generation != generation)
        return r < 0 ? r : -EKEYREVOKED;
    ks->fresh.rollback_accepted = true;
    return 1;
}

/* Writes content sealed as generation, then the anchor (file first: a crash in between leaves
 * the anchor one generation behind, never ahead of the file). Lock held. */
static int write_generation(Keystore *ks, const Secret *content, uint64_t generation) {
    _cleanup_free_ uint8_t *file = NULL;
    size_t len = 0;
    int r;
    if ((r = keystore_seal(ks->provider, &ks->params, generation, content, &file, &len)) < 0)
        return r;
    if ((r = slots_write(ks, file, len)) < 0)
        return r;
    if (ks->anchor && (r = freshness_anchor_write(ks->anchor, generation)) < 0)
        return ks->fresh.anchor_write = r;
    ks->fresh.generation = generation;
    ks->fresh.anchor_write = 0;
    return 0;
}

int keystore_load(Keystore *ks, Vault *v) {
    _cleanup_free_ uint8_t *file = NULL;
    _cleanup_(secret_freep) Secret *content = NULL;
    uint64_t generation = 0, floor;
    size_t len = 0;
    bool have_file;
    int r, accepted = 0;

    if (!ks || !v)
        return -EINVAL;
    if (vault_key_count(v) != 0)
        return -EBUSY;
    ks->fresh = (KeystoreFreshness){.anchored = ks->anchor != NULL, .anchor_read = -ENOENT};
    ks->slots = false; /* until a two-slot file is opened or written */
    r = read_full_file(ks->path, slots_file_size(KEYSTORE_MAX_FILE), &file, &len);
    if (r < 0 && r != -ENOENT)
        return r;
    have_file = r >= 0;
    if (have_file && (r = open_file(ks, file, len, &content, &generation)) < 0)
        return r;
    ks->fresh.generation = generation;
    floor = generation;
    if (ks->anchor) {
        /* A missing file counts as generation 0: deleting the keystore is a rollback too. */
        if ((accepted = freshness_check(ks, generation)) < 0)
            return accepted;
        /* Generations never go back: after an accepted rollback, writes continue above the
         * anchor, so the newer files the host may still hold stay refused. */
        if (accepted && ks->fresh.anchor_read == 0 && ks->fresh.anchor_generation > floor)
            floor = ks->fresh.anchor_generation;
        if (accepted && have_file) {
            if (floor == UINT64_MAX)
                return -EOVERFLOW;
            if ((r = write_generation(ks, content, floor + 1)) < 0)
                return r;
            floor++;
            ks->fresh.resealed_generation = floor;
        } else if (ks->fresh.anchor_read != 0 || ks->fresh.anchor_generation != floor) {
            if ((r = freshness_anchor_write(ks->anchor, floor)) < 0)
                return ks->fresh.anchor_write = r;
        }
    }
    if (have_file &&
        (r = keystore_deserialize(v, secret_const_data(content), secret_size(content))) < 0)
        return r;
    ks->generation = floor;
    ks->opened = true;
    return have_file ? 0 : -ENOENT;
}

int keystore_save_locked(Keystore *ks, Vault *v) {
    _cleanup_(secret_freep) Secret *content = NULL;
    int r;

    if (!ks->opened)
        return -ESTALE;
    if ((r = keystore_serialize_locked(v, &content)) < 0)
        return r;
    return keystore_write_content(ks, content);
}

int keystore_write_content(Keystore *ks, const Secret *content) {
    int r;
    if (!ks->opened)
        return -ESTALE;
    (void)pthread_mutex_lock(&ks->save_lock);
    if (ks->generation == UINT64_MAX) {
        r = -EOVERFLOW;
    } else {
        /* Consumed even if the write fails: a file that reached the disk despite an error
         * (directory fsync) never shares its generation with a later, different one. */
        ks->generation++;
        r = write_generation(ks, content, ks->generation);
    }
    (void)pthread_mutex_unlock(&ks->save_lock);
    return r;
}

int keystore_save(Keystore *ks, Vault *v) {
    int r;
    if (!ks || !v)
        return -EINVAL;
    (void)pthread_mutex_lock(&v->mutate_lock);
    (void)pthread_rwlock_rdlock(&v->lock);
    r = keystore_save_locked(ks, v);
    (void)pthread_rwlock_unlock(&v->lock);
    (void)pthread_mutex_unlock(&v->mutate_lock);
    return r;
}
