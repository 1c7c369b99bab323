/* SPDX-License-Identifier: Apache-2.0 */
/*
 * PKCS#11 objects that are not keys (issue 12): data objects (CKO_DATA), X.509 certificates
 * (CKO_CERTIFICATE) and public keys on their own (CKO_PUBLIC_KEY from a template). They are
 * vault keys of the types "data", "cert" and "public": same names, namespaces, ACLs, quotas,
 * attributes and keystore, one version holding the value (as a raw key holds its bytes). The
 * value is checked here, by OpenSSL for certificates and public keys, before anything is stored.
 */
#include <errno.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "core/log.h"
#include "vhsm/vault-private.h"

bool vault_key_type_is_object(VaultKeyType t) {
    return t == VAULT_KEY_DATA || t == VAULT_KEY_CERT || t == VAULT_KEY_PUBLIC;
}

static size_t object_max(VaultKeyType t) {
    switch (t) {
    case VAULT_KEY_DATA:
        return VAULT_DATA_MAX;
    case VAULT_KEY_CERT:
        return VAULT_CERT_MAX;
    case VAULT_KEY_PUBLIC:
        return VAULT_PUBLIC_MAX;
    default:
        return 0;
    }
}

/* One DER certificate, nothing after it. */
static int cert_check(const uint8_t *der, size_t len) {
    const unsigned char *p = der;
    X509 *x = d2i_X509(NULL, &p, (long)len);
    if (!x) {
        ERR_clear_error();
        return -EBADMSG;
    }
    X509_free(x);
    return p == der + len ? 0 : -EBADMSG;
}

/* A SubjectPublicKeyInfo of a type the vault knows, in canonical DER (re-encoding gives the same
 * bytes). */
static int public_parse(const uint8_t *der, size_t len, EVP_PKEY **ret) {
    const unsigned char *p = der;
    EVP_PKEY *pkey = d2i_PUBKEY(NULL, &p, (long)len);
    unsigned char *re = NULL;
    int n, r = -EBADMSG;

    if (!pkey || p != der + len)
        goto out;
    if (EVP_PKEY_is_a(pkey, "EC")) {
        char curve[32];
        if (!EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, curve, sizeof curve,
                                            NULL) ||
            (strcmp(curve, "prime256v1") != 0 && strcmp(curve, "secp384r1") != 0))
            goto out;
    } else if (EVP_PKEY_is_a(pkey, "RSA")) {
        BIGNUM *e = NULL;
        int bits = EVP_PKEY_get_bits(pkey);
        bool ok = EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_E, &e) && BN_is_word(e, 65537);
        BN_free(e);
        if (!ok || (bits != 2048 && bits != 3072 && bits != 4096))
            goto out;
    } else if (!EVP_PKEY_is_a(pkey, "ED25519"))
        goto out;
    n = i2d_PUBKEY(pkey, &re);
    if (n <= 0 || (size_t)n != len || memcmp(re, der, len) != 0)
        goto out;
    *ret = pkey;
    pkey = NULL;
    r = 0;
out:
    OPENSSL_free(re);
    EVP_PKEY_free(pkey);
    ERR_clear_error();
    return r;
}

int vault_object_value_load(VaultKeyType type, const uint8_t *value, size_t len, KeyVersion *kv) {
    size_t max = object_max(type);
    int r;
    if (max == 0)
        return -EINVAL;
    if (!value || len == 0)
        return -EBADMSG;
    if (len > max)
        return -E2BIG;
    if (type == VAULT_KEY_CERT && (r = cert_check(value, len)) < 0)
        return r;
    if (type == VAULT_KEY_PUBLIC) {
        if ((r = public_parse(value, len, &kv->pkey)) < 0)
            return r;
        if ((r = key_version_set_thumbprint(kv)) < 0)
            return r;
    }
    return secret_new_packed_copy(value, len, &kv->secret);
}

uint32_t vault_object_flags(VaultKeyType type, uint32_t flags) {
    uint32_t keep = VAULT_OBJ_PRIVATE | VAULT_OBJ_MODIFIABLE | VAULT_OBJ_COPYABLE |
                    VAULT_OBJ_DESTROYABLE | VAULT_OBJ_SESSION;
    if (type == VAULT_KEY_CERT || type == VAULT_KEY_PUBLIC)
        keep |= VAULT_OBJ_TRUSTED;
    if (type == VAULT_KEY_PUBLIC)
        keep |= VAULT_OBJ_VERIFY | VAULT_OBJ_ENCRYPT | VAULT_OBJ_WRAP | VAULT_OBJ_DERIVE;
    if (flags == 0) {
        flags = VAULT_OBJ_MODIFIABLE | VAULT_OBJ_COPYABLE | VAULT_OBJ_DESTROYABLE;
        if (type == VAULT_KEY_PUBLIC)
            flags |= VAULT_OBJ_VERIFY | VAULT_OBJ_ENCRYPT;
    }
    return flags & keep;
}

int vault_object_login_check_locked(Vault *v, const VaultPeer *peer, const VaultKey *k) {
    uint32_t user;
    bool so = peer->session && vault_session_live(peer->session, &user) && user == VAULT_USER_SO;
    if (k->obj_flags & VAULT_OBJ_TRUSTED)
        return so ? 0 : -EPERM; /* PKCS#11: CKA_TRUSTED is set by the SO only */
    if (so && vault_key_type_is_object(k->type) && !(k->obj_flags & VAULT_OBJ_PRIVATE))
        return 0; /* the SO may create public objects (a trusted CA next to its children) */
    return vault_login_check_locked(v, peer);
}

int vault_object_create(Vault *v, const VaultPeer *peer, const char *name, const VaultKeySpec *spec,
                        const uint8_t *value, size_t len) {
    _cleanup_(vault_key_freep) VaultKey *k = NULL;
    _cleanup_(key_version_unrefp) KeyVersion *kv = NULL;
    char full[VAULT_FULL_NAME_MAX + 1];
    VaultKeySpec s;
    int r;

    if (!v || !peer || !name || !spec || !vault_key_type_is_object(spec->type))
        return -EINVAL;
    if (vault_name_resolve(peer, name, full) < 0)
        return -EINVAL;
    if (spec->obj_flags & ~VAULT_OBJ_SETTABLE)
        return -EINVAL;
    s = *spec;
    s.obj_flags = vault_object_flags(spec->type, spec->obj_flags);
    if ((r = vault_key_new(full, &s, peer, VAULT_ORIGIN_IMPORTED, &k)) < 0)
        return r;
    k->obj_flags = s.obj_flags; /* exactly these (vault_key_new reads 0 as the key default) */
    kv = key_version_new(1, (uint64_t)vault_now(v));
    if (!kv)
        return -ENOMEM;
    if ((r = vault_object_value_load(spec->type, value, len, kv)) < 0)
        return r;
    if ((r = vault_key_add_version(k, kv)) < 0)
        return r;
    kv = NULL;
    if ((r = vault_insert_key(v, peer, k)) < 0)
        return r;
    k = NULL;
    return 0;
}
