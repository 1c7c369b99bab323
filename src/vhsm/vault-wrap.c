/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Key wrapping (RFC 3394 / RFC 5649) and ECDH derivation into new objects: vault-wrap.h.
 *
 * Invariants: plaintext key material exists only in Secret buffers (locked, wiped) or in
 * OpenSSL's key objects; the wrapped output is the only thing that leaves, and only encrypted;
 * a new key is inserted (and persisted) only after every check passed, so a failure creates
 * nothing.
 */
#include "vault-wrap.h"

#include <openssl/core_names.h>
#include <openssl/encoder.h>
#include <openssl/err.h>
#include <openssl/kdf.h>
#include <openssl/param_build.h>
#include <string.h>

#include "core/alloc.h"
#include "core/openssl-util.h"
#include "vhsm/vault-private.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(OSSL_ENCODER_CTX *, OSSL_ENCODER_CTX_free);

bool vault_peer_is_so(const VaultPeer *peer) {
    uint32_t user;
    return peer && vault_session_live(peer->session, &user) && user == VAULT_USER_SO;
}

static bool type_is_aes(VaultKeyType t) {
    return t == VAULT_KEY_AES128 || t == VAULT_KEY_AES192 || t == VAULT_KEY_AES256;
}

static const EVP_CIPHER *kw_cipher(bool pad, size_t key_len) {
    switch (key_len) {
    case 16:
        return pad ? EVP_aes_128_wrap_pad() : EVP_aes_128_wrap();
    case 24:
        return pad ? EVP_aes_192_wrap_pad() : EVP_aes_192_wrap();
    case 32:
        return pad ? EVP_aes_256_wrap_pad() : EVP_aes_256_wrap();
    default:
        return NULL;
    }
}

/* Length of the wrapped form of n plaintext bytes, or 0 if RFC 3394 cannot wrap n bytes. */
static size_t kw_wrapped_len(bool pad, size_t n) {
    if (pad)
        return n == 0 ? 0 : (n + 7) / 8 * 8 + 8;
    return n >= 16 && n % 8 == 0 ? n + 8 : 0;
}

/* out: in_len + 16 bytes. enc false: -EKEYREJECTED if the integrity check fails. */
static int kw_run(bool enc, bool pad, const Secret *key, const uint8_t *in, size_t in_len,
                  uint8_t *out, size_t *ret_len) {
    _cleanup_(EVP_CIPHER_CTX_freep) EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    const EVP_CIPHER *c = kw_cipher(pad, secret_size(key));
    int len = 0, fin = 0;
    if (!ctx)
        return -ENOMEM;
    if (!c)
        return -EOPNOTSUPP;
    EVP_CIPHER_CTX_set_flags(ctx, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
    if (EVP_CipherInit_ex(ctx, c, NULL, secret_const_data(key), NULL, enc) != 1)
        return nt_openssl_error(-EIO, "AES key wrap init");
    if (EVP_CipherUpdate(ctx, out, &len, in, (int)in_len) != 1 || len < 0 ||
        EVP_CipherFinal_ex(ctx, out + len, &fin) != 1) {
        ERR_clear_error();
        explicit_bzero(out, in_len + 16);
        return enc ? -EIO : -EKEYREJECTED;
    }
    *ret_len = (size_t)len + (size_t)fin;
    return 0;
}

/* The wrapped form of a key version: raw secret, or PKCS#8 PrivateKeyInfo DER. */
static int key_plain_form(VaultKeyType type, const KeyVersion *kv, Secret **ret) {
    if (type == VAULT_KEY_RAW)
        return -EOPNOTSUPP; /* KMS material: not a PKCS#11 key */
    if (kv->secret)
        return secret_new_copy(secret_const_data(kv->secret), secret_size(kv->secret), ret);
    if (!kv->pkey)
        return -ENOMEM; /* dormant */
    _cleanup_(OSSL_ENCODER_CTX_freep) OSSL_ENCODER_CTX *ectx = OSSL_ENCODER_CTX_new_for_pkey(
        kv->pkey, OSSL_KEYMGMT_SELECT_KEYPAIR, "DER", "PrivateKeyInfo", NULL);
    unsigned char *der = NULL;
    size_t len = 0;
    int r;
    if (!ectx || OSSL_ENCODER_to_data(ectx, &der, &len) != 1 || !der)
        return nt_openssl_error(-EIO, "PKCS#8 encoding");
    r = secret_new_copy(der, len, ret);
    OPENSSL_clear_free(der, len);
    return r;
}

int vault_key_wrap(Vault *v, const VaultPeer *peer, const char *wrapping, bool pad,
                   const char *target, bool length_only, uint8_t **ret, size_t *ret_len) {
    _cleanup_(key_version_unrefp) KeyVersion *wkv = NULL, *tkv = NULL;
    _cleanup_(secret_freep) Secret *plain = NULL;
    _cleanup_free_ uint8_t *out = NULL;
    VaultKeyType wtype, ttype;
    uint32_t wflags, tflags;
    size_t n, out_len = 0;
    int r;

    if (!v || !peer || !wrapping || !target || !ret || !ret_len)
        return -EINVAL;
    if ((r = vault_acquire_ex(v, peer, wrapping, true, VAULT_OBJ_WRAP, 0, &wtype, &wflags, &wkv)) <
        0)
        return r;
    if (!type_is_aes(wtype))
        return -EOPNOTSUPP;
    /* The target's material is used (encrypted under the wrapping key): USE right and login,
     * no usage flag of its own; EXTRACTABLE and WRAP_WITH_TRUSTED decide. */
    if ((r = vault_acquire_ex(v, peer, target, true, 0, 0, &ttype, &tflags, &tkv)) < 0)
        return r;
    if (!(tflags & VAULT_OBJ_EXTRACTABLE))
        return -ENOEXEC;
    if ((tflags & VAULT_OBJ_WRAP_WITH_TRUSTED) && !(wflags & VAULT_OBJ_TRUSTED))
        return -EBADSLT;
    if ((r = key_plain_form(ttype, tkv, &plain)) < 0)
        return r;
    n = kw_wrapped_len(pad, secret_size(plain));
    if (n == 0)
        return -ERANGE;
    if (n > VAULT_WRAP_MAX)
        return -E2BIG;
    if (length_only) {
        *ret = NULL;
        *ret_len = n;
        return 0;
    }
    out = nt_malloc(secret_size(plain) + 16);
    if (!out)
        return -ENOMEM;
    if ((r = kw_run(true, pad, wkv->secret, secret_const_data(plain), secret_size(plain), out,
                    &out_len)) < 0)
        return r;
    if (out_len != n)
        return -EIO;
    *ret = TAKE_PTR(out);
    *ret_len = out_len;
    return 0;
}

/* The type of a PKCS#8 PrivateKeyInfo, or -EKEYREJECTED if it is none we hold. */
static int pkcs8_type(const uint8_t *der, size_t len, VaultKeyType *ret) {
    const uint8_t *p = der;
    PKCS8_PRIV_KEY_INFO *p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &p, (long)len);
    EVP_PKEY *pk = NULL;
    int r = -EKEYREJECTED;
    if (p8 && p == der + len)
        pk = EVP_PKCS82PKEY(p8);
    PKCS8_PRIV_KEY_INFO_free(p8);
    if (!pk) {
        ERR_clear_error();
        return -EKEYREJECTED;
    }
    if (EVP_PKEY_is_a(pk, "ED25519"))
        *ret = VAULT_KEY_ED25519, r = 0;
    else if (EVP_PKEY_is_a(pk, "RSA")) {
        int bits = EVP_PKEY_get_bits(pk);
        if (bits == 2048 || bits == 3072 || bits == 4096) {
            *ret = bits == 2048   ? VAULT_KEY_RSA2048
                   : bits == 3072 ? VAULT_KEY_RSA3072
                                  : VAULT_KEY_RSA4096;
            r = 0;
        }
    } else if (EVP_PKEY_is_a(pk, "EC")) {
        char group[64];
        if (EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
                                           NULL)) {
            if (streq(group, "prime256v1") || streq(group, "P-256"))
                *ret = VAULT_KEY_EC_P256, r = 0;
            else if (streq(group, "secp384r1") || streq(group, "P-384"))
                *ret = VAULT_KEY_EC_P384, r = 0;
        }
    }
    EVP_PKEY_free(pk);
    ERR_clear_error();
    return r;
}

/* The type a secret of n bytes gets in a family (or the exact type asked), -EMEDIUMTYPE if it
 * does not fit. */
static int secret_type(const char *type, size_t n, VaultKeyType *ret) {
    VaultKeyType t;
    if (streq(type, "aes"))
        t = n == 16 ? VAULT_KEY_AES128 : n == 24 ? VAULT_KEY_AES192 : VAULT_KEY_AES256;
    else if (streq(type, "generic-secret")) /* the HMAC keys' lengths give HMAC keys */
        t = n == 48   ? VAULT_KEY_HMAC_SHA384
            : n == 32 ? VAULT_KEY_HMAC_SHA256
                      : VAULT_KEY_GENERIC_SECRET;
    else
        t = vault_key_type_from_string(type);
    if (t == VAULT_KEY_GENERIC_SECRET) {
        if (n == 0 || n > VAULT_GENERIC_SECRET_MAX)
            return -EMEDIUMTYPE;
    } else if (t < 0 || vault_key_type_is_asymmetric(t) || vault_key_type_secret_size(t) != n)
        return -EMEDIUMTYPE;
    *ret = t;
    return 0;
}

static bool type_is_secret_name(const char *type) {
    VaultKeyType t;
    if (streq(type, "aes") || streq(type, "generic-secret"))
        return true;
    t = vault_key_type_from_string(type);
    return t >= 0 && (vault_key_type_secret_size(t) > 0 || t == VAULT_KEY_GENERIC_SECRET);
}

static bool type_name_known(const char *type) {
    VaultKeyType t;
    if (streq(type, "aes") || streq(type, "generic-secret") || streq(type, "ec") ||
        streq(type, "rsa"))
        return true;
    t = vault_key_type_from_string(type);
    return t >= 0 && t != VAULT_KEY_RAW;
}

/* Inserts a new key of type with one version holding kv's material; flags adjusted by fix. */
static int insert_new(Vault *v, const VaultPeer *peer, const char *full, const VaultKeySpec *spec,
                      VaultKeyType type, VaultOrigin origin, uint32_t set_ro, KeyVersion **kv) {
    _cleanup_(vault_key_freep) VaultKey *k = NULL;
    VaultKeySpec s = *spec;
    int r;
    s.type = type;
    if ((r = vault_key_new(full, &s, peer, origin, &k)) < 0)
        return r;
    if (origin != VAULT_ORIGIN_IMPORTED) /* derived: never LOCAL; the rest as PKCS#11 says */
        k->obj_flags = (k->obj_flags & VAULT_OBJ_SETTABLE) | set_ro;
    if ((r = vault_acl_check_caps(&k->acl, peer)) < 0)
        return r;
    if ((r = vault_key_add_version(k, *kv)) < 0)
        return r;
    *kv = NULL;
    if ((r = vault_insert_key(v, peer, k)) < 0)
        return r;
    k = NULL;
    return 0;
}

/* Early checks of a creation (name, quota, login): nothing expensive is done for a request
 * that cannot succeed. */
static int may_create(Vault *v, const VaultPeer *peer, const char *full, VaultKeyType type,
                      VaultOrigin origin) {
    int r;
    if ((r = vault_login_check(v, peer)) < 0)
        return r;
    (void)pthread_rwlock_rdlock(&v->lock);
    r = vault_may_create_locked(v, peer, full, type, origin);
    (void)pthread_rwlock_unlock(&v->lock);
    return r;
}

int vault_key_unwrap(Vault *v, const VaultPeer *peer, const char *unwrapping, bool pad,
                     const uint8_t *in, size_t in_len, const char *type, size_t want_len,
                     const char *new_name, const VaultKeySpec *spec, bool local_kek_only,
                     VaultKeyType *ret_type) {
    _cleanup_(key_version_unrefp) KeyVersion *ukv = NULL, *nkv = NULL;
    _cleanup_(secret_freep) Secret *plain = NULL;
    char full[VAULT_FULL_NAME_MAX + 1];
    VaultKeyType utype, t;
    uint32_t uflags = 0;
    size_t len = 0;
    int r;

    if (!v || !peer || !unwrapping || !in || !type || !new_name || !spec || !type_name_known(type))
        return -EINVAL;
    if (in_len < 16 || in_len > VAULT_WRAP_MAX || in_len % 8 != 0)
        return -EKEYREJECTED; /* no AES key wrap output has that length */
    if ((spec->obj_flags & VAULT_OBJ_TRUSTED) && !vault_peer_is_so(peer))
        return -EPERM;
    if ((r = vault_name_resolve(peer, new_name, full)) < 0)
        return r;
    if ((r = may_create(v, peer, full, VAULT_KEY_AES256, VAULT_ORIGIN_IMPORTED)) < 0)
        return r;
    if ((r = vault_acquire_ex(v, peer, unwrapping, true, VAULT_OBJ_UNWRAP, 0, &utype, &uflags,
                              &ukv)) < 0)
        return r;
    if (!type_is_aes(utype))
        return -EOPNOTSUPP;
    /* A key whose value may be known outside vhsmd (imported, derived, ever extractable) would
     * let a client bring in plaintext of its choice wrapped under it. */
    if (local_kek_only && (uflags & (VAULT_OBJ_LOCAL | VAULT_OBJ_NEVER_EXTRACTABLE)) !=
                              (VAULT_OBJ_LOCAL | VAULT_OBJ_NEVER_EXTRACTABLE))
        return -EPERM;
    if ((r = secret_new(in_len + 16, &plain)) < 0)
        return r;
    if ((r = kw_run(false, pad, ukv->secret, in, in_len, secret_data(plain), &len)) < 0)
        return r;
    secret_truncate(plain, len);

    nkv = key_version_new(1, (uint64_t)vault_now(v));
    if (!nkv)
        return -ENOMEM;
    if (type_is_secret_name(type)) {
        if ((r = secret_type(type, len, &t)) < 0)
            return r;
        if (want_len && want_len != len)
            return -EMEDIUMTYPE;
        if ((r = secret_new_packed_copy(secret_const_data(plain), len, &nkv->secret)) < 0)
            return r;
    } else {
        VaultKeyType want;
        if ((r = pkcs8_type(secret_const_data(plain), len, &t)) < 0)
            return r;
        if (streq(type, "ec"))
            want = t == VAULT_KEY_EC_P256 || t == VAULT_KEY_EC_P384 ? t : _VAULT_KEY_TYPE_INVALID;
        else if (streq(type, "rsa"))
            want = t >= VAULT_KEY_RSA2048 && t <= VAULT_KEY_RSA4096 ? t : _VAULT_KEY_TYPE_INVALID;
        else
            want = vault_key_type_from_string(type);
        if (want != t || want_len)
            return -EMEDIUMTYPE;
        /* strict parse and OpenSSL's pairwise check, as for a plaintext import */
        if ((r = vault_pkey_from_pkcs8(t, secret_const_data(plain), len, true, &nkv->pkey)) < 0)
            return -EKEYREJECTED;
        if ((r = key_version_set_thumbprint(nkv)) < 0)
            return r;
    }
    if ((r = insert_new(v, peer, full, spec, t, VAULT_ORIGIN_IMPORTED, 0, &nkv)) < 0)
        return r;
    if (ret_type)
        *ret_type = t;
    return 0;
}

/* The peer's point on the base key's curve, checked (on the curve, not infinity). */
static int peer_point_key(EVP_PKEY *base, const uint8_t *point, size_t len, EVP_PKEY **ret) {
    _cleanup_(OSSL_PARAM_BLD_freep) OSSL_PARAM_BLD *b = OSSL_PARAM_BLD_new();
    _cleanup_(OSSL_PARAM_freep) OSSL_PARAM *params = NULL;
    _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *ctx = NULL, *chk = NULL;
    char group[64];
    size_t fs = (size_t)(EVP_PKEY_get_bits(base) + 7) / 8;
    EVP_PKEY *pk = NULL;

    if (!point || (len != 2 * fs + 1 && len != fs + 1) || (len == 2 * fs + 1 && point[0] != 0x04) ||
        (len == fs + 1 && point[0] != 0x02 && point[0] != 0x03))
        return -EBADMSG;
    if (!EVP_PKEY_get_utf8_string_param(base, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
                                        NULL))
        return -EIO;
    ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    if (!b || !ctx || !OSSL_PARAM_BLD_push_utf8_string(b, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) ||
        !OSSL_PARAM_BLD_push_octet_string(b, OSSL_PKEY_PARAM_PUB_KEY, point, len) ||
        !(params = OSSL_PARAM_BLD_to_param(b)) || EVP_PKEY_fromdata_init(ctx) != 1)
        return -ENOMEM;
    if (EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, params) != 1 || !pk) {
        ERR_clear_error();
        return -EBADMSG; /* not a point of this curve */
    }
    chk = EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL);
    if (!chk || EVP_PKEY_public_check(chk) != 1) {
        ERR_clear_error();
        EVP_PKEY_free(pk);
        return -EBADMSG;
    }
    *ret = pk;
    return 0;
}

static const char *kdf_digest(const char *kdf) {
    static const struct {
        const char *name, *md;
    } t[] = {{"sha1", "SHA1"},
             {"sha224", "SHA224"},
             {"sha256", "SHA256"},
             {"sha384", "SHA384"},
             {"sha512", "SHA512"}};
    for (size_t i = 0; i < ELEMENTSOF(t); i++)
        if (streq(kdf, t[i].name))
            return t[i].md;
    return NULL;
}

int vault_key_derive_ecdh1(Vault *v, const VaultPeer *peer, const char *base, const uint8_t *point,
                           size_t point_len, const char *kdf, const uint8_t *shared_data,
                           size_t shared_len, const char *type, size_t value_len,
                           const char *new_name, const VaultKeySpec *spec, VaultKeyType *ret_type) {
    _cleanup_(key_version_unrefp) KeyVersion *bkv = NULL, *nkv = NULL;
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *pub = NULL;
    _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *ctx = NULL;
    _cleanup_(secret_freep) Secret *z = NULL, *okm = NULL;
    char full[VAULT_FULL_NAME_MAX + 1];
    const char *md = NULL;
    VaultKeyType btype, t;
    uint32_t bflags, set_ro = 0;
    size_t z_len = 0;
    int r;

    if (!v || !peer || !base || !kdf || !type || !new_name || !spec ||
        (shared_len > 0 && !shared_data) || shared_len > 1024 || value_len == 0 || value_len > 64)
        return -EINVAL;
    if (!streq(kdf, "null") && !(md = kdf_digest(kdf)))
        return -EINVAL;
    if (!md && shared_len > 0)
        return -EINVAL; /* CKD_NULL takes no shared data */
    if ((r = secret_type(type, value_len, &t)) < 0)
        return r;
    if ((spec->obj_flags & VAULT_OBJ_TRUSTED) && !vault_peer_is_so(peer))
        return -EPERM;
    if ((r = vault_name_resolve(peer, new_name, full)) < 0)
        return r;
    if ((r = may_create(v, peer, full, t, VAULT_ORIGIN_DERIVED)) < 0)
        return r;
    if ((r = vault_acquire_ex(v, peer, base, true, VAULT_OBJ_DERIVE, 0, &btype, &bflags, &bkv)) < 0)
        return r;
    if (btype != VAULT_KEY_EC_P256 && btype != VAULT_KEY_EC_P384)
        return -EOPNOTSUPP;
    if ((r = peer_point_key(bkv->pkey, point, point_len, &pub)) < 0)
        return r;

    ctx = EVP_PKEY_CTX_new_from_pkey(NULL, bkv->pkey, NULL);
    if (!ctx)
        return -ENOMEM;
    if (EVP_PKEY_derive_init(ctx) != 1)
        return nt_openssl_error(-EIO, "EVP_PKEY_derive_init");
    if (EVP_PKEY_derive_set_peer_ex(ctx, pub, 1) != 1) {
        ERR_clear_error();
        return -EBADMSG;
    }
    if (EVP_PKEY_derive(ctx, NULL, &z_len) != 1)
        return nt_openssl_error(-EIO, "EVP_PKEY_derive");
    if ((r = secret_new(z_len, &z)) < 0)
        return r;
    if (EVP_PKEY_derive(ctx, secret_data(z), &z_len) != 1)
        return nt_openssl_error(-EIO, "EVP_PKEY_derive");
    secret_truncate(z, z_len);

    if ((r = secret_new_packed(value_len, &okm)) < 0)
        return r;
    if (!md) {
        if (value_len > z_len)
            return -ERANGE;
        /* CKD_NULL: the shared secret, truncated to the key length from the leading end (as
         * SoftHSM2 does) */
        memcpy(secret_data(okm), secret_const_data(z) + (z_len - value_len), value_len);
    } else {
        _cleanup_(EVP_KDF_freep) EVP_KDF *k = EVP_KDF_fetch(NULL, "X963KDF", NULL);
        _cleanup_(EVP_KDF_CTX_freep) EVP_KDF_CTX *kctx = k ? EVP_KDF_CTX_new(k) : NULL;
        OSSL_PARAM p[4];
        size_t np = 0;
        if (!kctx)
            return nt_openssl_error(-EIO, "X963KDF");
        p[np++] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)md, 0);
        p[np++] =
            OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, secret_data(z), secret_size(z));
        if (shared_len > 0)
            p[np++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)shared_data,
                                                        shared_len);
        p[np] = OSSL_PARAM_construct_end();
        if (EVP_KDF_derive(kctx, secret_data(okm), value_len, p) != 1)
            return nt_openssl_error(-EIO, "X963KDF derive");
    }

    nkv = key_version_new(1, (uint64_t)vault_now(v));
    if (!nkv)
        return -ENOMEM;
    nkv->secret = TAKE_PTR(okm);
    /* PKCS#11: ALWAYS_SENSITIVE if the base key was and the new key is sensitive;
     * NEVER_EXTRACTABLE if the base key was never extractable and the new key is not. */
    {
        uint32_t nf = spec->obj_flags ? spec->obj_flags : VAULT_OBJ_DEFAULT;
        if ((bflags & VAULT_OBJ_ALWAYS_SENSITIVE) && (nf & VAULT_OBJ_SENSITIVE))
            set_ro |= VAULT_OBJ_ALWAYS_SENSITIVE;
        if ((bflags & VAULT_OBJ_NEVER_EXTRACTABLE) && !(nf & VAULT_OBJ_EXTRACTABLE))
            set_ro |= VAULT_OBJ_NEVER_EXTRACTABLE;
    }
    if ((r = insert_new(v, peer, full, spec, t, VAULT_ORIGIN_DERIVED, set_ro, &nkv)) < 0)
        return r;
    if (ret_type)
        *ret_type = t;
    return 0;
}
