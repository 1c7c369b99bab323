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
#include <openssl/err.h>
#include <openssl/kdf.h>
#include <openssl/param_build.h>
#include <string.h>

#include "core/alloc.h"
#include "core/openssl-util.h"
#include "vhsm/vault-private.h"

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

/* ---- PKCS#8 PrivateKeyInfo DER of a vault key, written here ----
 *
 * Not with OpenSSL's encoders: those leave copies of the private key in freed heap memory
 * (docs/vault.md, measured). The components come from EVP_PKEY_todata() (private parts in the
 * secure heap, cleared on free) and are written straight into a Secret. The output is what
 * src/vhsm/pkcs8.c accepts: EC with the namedCurve and the public key ([1]), Ed25519, RSA with
 * two primes. */

static const uint8_t oid_ec[] = {0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01};
static const uint8_t oid_p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
static const uint8_t oid_p384[] = {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22};
static const uint8_t oid_ed25519[] = {0x06, 0x03, 0x2b, 0x65, 0x70};
static const uint8_t oid_rsa[] = {0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7,
                                  0x0d, 0x01, 0x01, 0x01, 0x05, 0x00}; /* + NULL */

static size_t tlv_len(size_t n) {
    return 1 + (n < 0x80 ? 1 : n < 0x100 ? 2 : 3) + n;
}

static uint8_t *put_hdr(uint8_t *p, uint8_t tag, size_t n) {
    *p++ = tag;
    if (n < 0x80)
        *p++ = (uint8_t)n;
    else if (n < 0x100)
        *p++ = 0x81, *p++ = (uint8_t)n;
    else
        *p++ = 0x82, *p++ = (uint8_t)(n >> 8), *p++ = (uint8_t)n;
    return p;
}

static uint8_t *put_bytes(uint8_t *p, const void *v, size_t n) {
    memcpy(p, v, n);
    return p + n;
}

/* A big-endian unsigned integer as DER INTEGER content: no leading zeros, a 0 byte if the top
 * bit is set. */
typedef struct DerInt {
    const uint8_t *be;
    size_t n;
    bool pad;
} DerInt;

static DerInt der_int(const uint8_t *be, size_t n) {
    while (n > 1 && be[0] == 0)
        be++, n--;
    return (DerInt){be, n, n > 0 && (be[0] & 0x80)};
}

static size_t int_tlv_len(DerInt i) {
    return tlv_len(i.n + i.pad);
}

static uint8_t *put_int(uint8_t *p, DerInt i) {
    p = put_hdr(p, 0x02, i.n + i.pad);
    if (i.pad)
        *p++ = 0;
    return put_bytes(p, i.be, i.n);
}

/* The bytes of an unsigned-integer parameter, big-endian, at out (room for p->data_size). */
static size_t param_be(const OSSL_PARAM *p, uint8_t *out) {
    const uint8_t *d = p->data;
    const uint16_t one = 1;
    bool le = *(const uint8_t *)&one == 1;
    for (size_t i = 0; i < p->data_size; i++)
        out[i] = le ? d[p->data_size - 1 - i] : d[i];
    return p->data_size;
}

static void params_freep(OSSL_PARAM **p) {
    OSSL_PARAM_free(*p); /* clears the secure (private) part */
}

static int pkcs8_write(VaultKeyType type, EVP_PKEY *pkey, Secret **ret) {
    static const char *const rsa_names[8] = {
        OSSL_PKEY_PARAM_RSA_N,         OSSL_PKEY_PARAM_RSA_E,
        OSSL_PKEY_PARAM_RSA_D,         OSSL_PKEY_PARAM_RSA_FACTOR1,
        OSSL_PKEY_PARAM_RSA_FACTOR2,   OSSL_PKEY_PARAM_RSA_EXPONENT1,
        OSSL_PKEY_PARAM_RSA_EXPONENT2, OSSL_PKEY_PARAM_RSA_COEFFICIENT1};
    _cleanup_(params_freep) OSSL_PARAM *params = NULL;
    _cleanup_(secret_freep) Secret *comp = NULL, *out = NULL;
    const OSSL_PARAM *pp[8];
    size_t n_comp = 0, total = 0, inner, alg_len, off = 0;
    DerInt ints[9];
    uint8_t *p;
    int r;

    if (EVP_PKEY_todata(pkey, EVP_PKEY_KEYPAIR, &params) != 1)
        return nt_openssl_error(-EIO, "EVP_PKEY_todata");
    if (type == VAULT_KEY_RSA2048 || type == VAULT_KEY_RSA3072 || type == VAULT_KEY_RSA4096) {
        for (size_t i = 0; i < 8; i++) {
            pp[i] = OSSL_PARAM_locate_const(params, rsa_names[i]);
            if (!pp[i] || pp[i]->data_type != OSSL_PARAM_UNSIGNED_INTEGER ||
                pp[i]->data_size == 0 || pp[i]->data_size > 1024)
                return -EIO;
            total += pp[i]->data_size;
        }
        n_comp = 8;
    } else if (type == VAULT_KEY_EC_P256 || type == VAULT_KEY_EC_P384) {
        pp[0] = OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_PRIV_KEY);
        pp[1] = OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_PUB_KEY);
        if (!pp[0] || pp[0]->data_type != OSSL_PARAM_UNSIGNED_INTEGER || !pp[1] ||
            pp[1]->data_type != OSSL_PARAM_OCTET_STRING || pp[0]->data_size > 1024 ||
            pp[1]->data_size > 1024)
            return -EIO;
        total = pp[0]->data_size + 48;
        n_comp = 2;
    } else if (type == VAULT_KEY_ED25519) {
        pp[0] = OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_PRIV_KEY);
        if (!pp[0] || pp[0]->data_type != OSSL_PARAM_OCTET_STRING || pp[0]->data_size != 32)
            return -EIO;
        total = 32;
        n_comp = 1;
    } else
        return -EOPNOTSUPP;
    /* the private components, big-endian, in a Secret */
    if ((r = secret_new(total, &comp)) < 0)
        return r;
    if (n_comp == 8) {
        for (size_t i = 0; i < 8; i++) {
            size_t n = param_be(pp[i], secret_data(comp) + off);
            ints[i + 1] = der_int(secret_data(comp) + off, n);
            off += n;
        }
        static const uint8_t zero = 0;
        ints[0] = der_int(&zero, 1);
        inner = 0;
        for (size_t i = 0; i < 9; i++)
            inner += int_tlv_len(ints[i]);
        inner = tlv_len(inner); /* RSAPrivateKey SEQUENCE */
        alg_len = tlv_len(sizeof oid_rsa);
    } else if (n_comp == 2) {
        size_t fs = type == VAULT_KEY_EC_P256 ? 32 : 48, n;
        if (pp[0]->data_size > fs + 16)
            return -EIO;
        /* d as a fixed-size octet string of the field size (RFC 5915) */
        uint8_t *d = secret_data(comp);
        n = param_be(pp[0], d + 48); /* scratch after the fixed field */
        const uint8_t *dv = d + 48;
        while (n > fs && *dv == 0)
            dv++, n--;
        if (n > fs)
            return -EIO;
        memset(d, 0, fs - n);
        memcpy(d + fs - n, dv, n);
        explicit_bzero(d + 48, pp[0]->data_size);
        inner = tlv_len(tlv_len(1) + tlv_len(fs) + tlv_len(tlv_len(pp[1]->data_size + 1)));
        alg_len = tlv_len(sizeof oid_ec + (fs == 32 ? sizeof oid_p256 : sizeof oid_p384));
    } else {
        memcpy(secret_data(comp), pp[0]->data, 32);
        inner = tlv_len(32);
        alg_len = tlv_len(sizeof oid_ed25519);
    }
    size_t body = tlv_len(1) + alg_len + tlv_len(inner);
    if ((r = secret_new(tlv_len(body), &out)) < 0)
        return r;
    p = secret_data(out);
    p = put_hdr(p, 0x30, body);
    p = put_hdr(p, 0x02, 1), *p++ = 0; /* version 0 */
    if (n_comp == 8) {
        p = put_hdr(p, 0x30, sizeof oid_rsa);
        p = put_bytes(p, oid_rsa, sizeof oid_rsa);
        p = put_hdr(p, 0x04, inner);
        size_t seq = 0;
        for (size_t i = 0; i < 9; i++)
            seq += int_tlv_len(ints[i]);
        p = put_hdr(p, 0x30, seq);
        for (size_t i = 0; i < 9; i++)
            p = put_int(p, ints[i]);
    } else if (n_comp == 2) {
        size_t fs = type == VAULT_KEY_EC_P256 ? 32 : 48;
        const uint8_t *curve = fs == 32 ? oid_p256 : oid_p384;
        size_t cl = fs == 32 ? sizeof oid_p256 : sizeof oid_p384;
        p = put_hdr(p, 0x30, sizeof oid_ec + cl);
        p = put_bytes(p, oid_ec, sizeof oid_ec);
        p = put_bytes(p, curve, cl);
        p = put_hdr(p, 0x04, inner);
        p = put_hdr(p, 0x30, tlv_len(1) + tlv_len(fs) + tlv_len(tlv_len(pp[1]->data_size + 1)));
        p = put_hdr(p, 0x02, 1), *p++ = 1; /* ECPrivateKey version 1 */
        p = put_hdr(p, 0x04, fs);
        p = put_bytes(p, secret_const_data(comp), fs);
        p = put_hdr(p, 0xa1, tlv_len(pp[1]->data_size + 1));
        p = put_hdr(p, 0x03, pp[1]->data_size + 1), *p++ = 0; /* no unused bits */
        p = put_bytes(p, pp[1]->data, pp[1]->data_size);
    } else {
        p = put_hdr(p, 0x30, sizeof oid_ed25519);
        p = put_bytes(p, oid_ed25519, sizeof oid_ed25519);
        p = put_hdr(p, 0x04, inner);
        p = put_hdr(p, 0x04, 32);
        p = put_bytes(p, secret_const_data(comp), 32);
    }
    if ((size_t)(p - secret_data(out)) != secret_size(out))
        return -EIO;
    *ret = TAKE_PTR(out);
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
    return pkcs8_write(type, kv->pkey, ret);
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
    /* A key that has been a data cipher never wraps: AES-CBC decryption with a zero IV under
     * the same key would undo RFC 3394 wrapping and reveal the wrapped key (the PKCS#11
     * wrap/decrypt attack); the history survives clearing the flags, copies and restarts. */
    if (wflags & VAULT_OBJ_HAD_CIPHER)
        return -EPERM;
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

/* The type of a PKCS#8 PrivateKeyInfo, or -EKEYREJECTED if it is none we hold. Parsed with the
 * vault's own DER reader (vault_pkey_from_pkcs8: OpenSSL's decoders would leave copies of the
 * private key in freed heap memory), trying each asymmetric type. */
static int pkcs8_type(const uint8_t *der, size_t len, VaultKeyType *ret) {
    static const VaultKeyType types[] = {VAULT_KEY_EC_P256, VAULT_KEY_EC_P384, VAULT_KEY_ED25519,
                                         VAULT_KEY_RSA2048, VAULT_KEY_RSA3072, VAULT_KEY_RSA4096};
    for (size_t i = 0; i < ELEMENTSOF(types); i++) {
        EVP_PKEY *pk = NULL;
        if (vault_pkey_from_pkcs8(types[i], der, len, false, &pk) == 0) {
            EVP_PKEY_free(pk);
            *ret = types[i];
            return 0;
        }
    }
    ERR_clear_error();
    return -EKEYREJECTED;
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
        k->obj_flags = vault_obj_flags_history((k->obj_flags & VAULT_OBJ_SETTABLE) | set_ro);
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
    /* Nor one that has been a data cipher: AES-CBC encryption with a zero IV under it forges
     * RFC 3394 wrapping of any value, which unwrapping would import. */
    if (local_kek_only && (uflags & VAULT_OBJ_HAD_CIPHER))
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
