/* SPDX-License-Identifier: Apache-2.0 */
/*
 * RSA-PSS and RSA-OAEP with the caller's parameters and HMAC with a chosen hash and tag length
 * (vault-par.h). Each operation takes a reference on the key's latest version through
 * vault_acquire() (ACL, login rule, usage flags, attestation) and runs outside every lock.
 */
#include "vhsm/vault-par.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rsa.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/openssl-util.h"
#include "vhsm/client/proto.h"
#include "vhsm/vault-private.h"

static const EVP_MD *md_by_name(const char *name) {
    if (!name)
        return NULL;
    if (strcmp(name, "sha1") == 0)
        return EVP_sha1();
    if (strcmp(name, "sha224") == 0)
        return EVP_sha224();
    if (strcmp(name, "sha256") == 0)
        return EVP_sha256();
    if (strcmp(name, "sha384") == 0)
        return EVP_sha384();
    if (strcmp(name, "sha512") == 0)
        return EVP_sha512();
    return NULL;
}

static bool type_is_rsa(VaultKeyType t) {
    return t == VAULT_KEY_RSA2048 || t == VAULT_KEY_RSA3072 || t == VAULT_KEY_RSA4096;
}

static bool type_is_hmac(VaultKeyType t) {
    return t == VAULT_KEY_HMAC_SHA256 || t == VAULT_KEY_HMAC_SHA384;
}

int vault_rsa_pss(Vault *v, const VaultPeer *peer, const char *name, bool sign, const char *hash,
                  const char *mgf_hash, uint32_t salt_len, const uint8_t *in, size_t in_len,
                  const uint8_t *sig, size_t sig_len, uint8_t **ret_sig, size_t *ret_sig_len) {
    _cleanup_(key_version_unrefp) KeyVersion *kv = NULL;
    _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *ctx = NULL;
    _cleanup_free_ uint8_t *out = NULL;
    const EVP_MD *md = md_by_name(hash), *mgf = mgf_hash ? md_by_name(mgf_hash) : md;
    VaultKeyType type;
    size_t n = 0, em_len, max_salt;
    int r, ok;

    if (!md || !mgf || !in || in_len != (size_t)EVP_MD_get_size(md))
        return -EINVAL;
    if (sign ? (!ret_sig || !ret_sig_len) : !sig)
        return -EINVAL;
    if ((r = vault_acquire(v, peer, name, sign, sign ? VAULT_OBJ_SIGN : VAULT_OBJ_VERIFY, &type,
                           &kv)) < 0)
        return r;
    if (!type_is_rsa(type))
        return -EOPNOTSUPP;
    if (!kv->pkey)
        return -ENOMEM;
    /* RFC 8017 9.1.1: emLen = ceil((modBits - 1) / 8) >= hLen + sLen + 2 */
    em_len = ((size_t)EVP_PKEY_get_bits(kv->pkey) - 1 + 7) / 8;
    max_salt = em_len - (size_t)EVP_MD_get_size(md) - 2;
    if (salt_len > max_salt)
        return -EINVAL;
    ctx = EVP_PKEY_CTX_new(kv->pkey, NULL);
    if (!ctx || (sign ? EVP_PKEY_sign_init(ctx) : EVP_PKEY_verify_init(ctx)) != 1 ||
        EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PSS_PADDING) != 1 ||
        EVP_PKEY_CTX_set_signature_md(ctx, md) != 1 ||
        EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, mgf) != 1 ||
        EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, (int)salt_len) != 1)
        return nt_openssl_error(-EIO, "PSS init");
    if (!sign) {
        ok = EVP_PKEY_verify(ctx, sig, sig_len, in, in_len);
        ERR_clear_error();
        return ok == 1 ? 0 : -EKEYREJECTED;
    }
    if (EVP_PKEY_sign(ctx, NULL, &n, in, in_len) != 1)
        return nt_openssl_error(-EIO, "PSS sign size");
    out = nt_malloc(n);
    if (!out)
        return -ENOMEM;
    if (EVP_PKEY_sign(ctx, out, &n, in, in_len) != 1)
        return nt_openssl_error(-EIO, "PSS sign");
    *ret_sig = TAKE_PTR(out);
    *ret_sig_len = n;
    return 0;
}

int vault_rsa_oaep(Vault *v, const VaultPeer *peer, const char *name, bool encrypt,
                   const char *hash, const char *mgf_hash, const uint8_t *label, size_t label_len,
                   const uint8_t *in, size_t in_len, uint8_t *out, size_t out_size,
                   size_t *ret_len) {
    _cleanup_(key_version_unrefp) KeyVersion *kv = NULL;
    _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *ctx = NULL;
    const EVP_MD *md = md_by_name(hash), *mgf = mgf_hash ? md_by_name(mgf_hash) : md;
    VaultKeyType type;
    size_t k, n;
    int r;

    if (!md || !mgf || (in_len > 0 && !in) || !out || !ret_len || label_len > VHSM_OAEP_LABEL_MAX ||
        (label_len > 0 && !label))
        return -EINVAL;
    if ((r = vault_acquire(v, peer, name, !encrypt, encrypt ? VAULT_OBJ_ENCRYPT : VAULT_OBJ_DECRYPT,
                           &type, &kv)) < 0)
        return r;
    if (!type_is_rsa(type))
        return -EOPNOTSUPP;
    if (!kv->pkey)
        return -ENOMEM;
    k = (size_t)EVP_PKEY_get_size(kv->pkey);
    if (out_size < k)
        return -EINVAL;
    /* encrypt: at most k - 2 hLen - 2 bytes; decrypt: exactly k */
    if (encrypt ? in_len + 2 * (size_t)EVP_MD_get_size(md) + 2 > k : in_len != k)
        return -EINVAL;
    ctx = EVP_PKEY_CTX_new(kv->pkey, NULL);
    if (!ctx || (encrypt ? EVP_PKEY_encrypt_init(ctx) : EVP_PKEY_decrypt_init(ctx)) != 1 ||
        EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) != 1 ||
        EVP_PKEY_CTX_set_rsa_oaep_md(ctx, md) != 1 || EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, mgf) != 1)
        return nt_openssl_error(-EIO, "OAEP init");
    if (label_len > 0) {
        void *l = OPENSSL_memdup(label, label_len);
        if (!l)
            return -ENOMEM;
        if (EVP_PKEY_CTX_set0_rsa_oaep_label(ctx, l, (int)label_len) != 1) {
            OPENSSL_free(l);
            return nt_openssl_error(-EIO, "OAEP label");
        }
    }
    n = out_size;
    if (encrypt) {
        if (EVP_PKEY_encrypt(ctx, out, &n, in ? in : (const uint8_t *)"", in_len) != 1)
            return nt_openssl_error(-EIO, "OAEP encrypt");
    } else if (EVP_PKEY_decrypt(ctx, out, &n, in, in_len) != 1) {
        /* one answer for every failure (padding, label, hash): no oracle */
        ERR_clear_error();
        explicit_bzero(out, out_size);
        return -EKEYREJECTED;
    }
    *ret_len = n;
    return 0;
}

int vault_hmac_ex(Vault *v, const VaultPeer *peer, const char *name, const char *hash,
                  uint32_t mac_len, const uint8_t *in, size_t in_len, const uint8_t *tag,
                  size_t tag_len, uint8_t *out, size_t *ret_len) {
    _cleanup_(key_version_unrefp) KeyVersion *kv = NULL;
    _cleanup_(EVP_MAC_freep) EVP_MAC *mac = NULL;
    _cleanup_(EVP_MAC_CTX_freep) EVP_MAC_CTX *ctx = NULL;
    const EVP_MD *md = md_by_name(hash);
    uint8_t full[EVP_MAX_MD_SIZE];
    size_t full_len = 0, want;
    VaultKeyType type;
    int r = 0, ok;

    if (!md || (in_len > 0 && !in) || (!tag && (!out || !ret_len)))
        return -EINVAL;
    want = mac_len ? mac_len : (size_t)EVP_MD_get_size(md);
    if (want > (size_t)EVP_MD_get_size(md))
        return -EINVAL;
    if ((r = vault_acquire(v, peer, name, true, tag ? VAULT_OBJ_VERIFY : VAULT_OBJ_SIGN, &type,
                           &kv)) < 0)
        return r;
    if (!type_is_hmac(type) || !kv->secret)
        return -EOPNOTSUPP;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)EVP_MD_get0_name(md), 0),
        OSSL_PARAM_construct_end(),
    };
    mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
    if (!ctx)
        return nt_openssl_error(-ENOMEM, "HMAC context");
    if (EVP_MAC_init(ctx, secret_const_data(kv->secret), secret_size(kv->secret), params) != 1 ||
        EVP_MAC_update(ctx, in ? in : (const uint8_t *)"", in_len) != 1 ||
        EVP_MAC_final(ctx, full, &full_len, sizeof full) != 1 || full_len < want) {
        explicit_bzero(full, sizeof full);
        return nt_openssl_error(-EIO, "HMAC");
    }
    if (tag) {
        /* the length is public (the caller's mechanism); the bytes compared in constant time */
        ok = tag_len == want && CRYPTO_memcmp(full, tag, want) == 0;
        explicit_bzero(full, sizeof full);
        return ok ? 0 : -EKEYREJECTED;
    }
    memcpy(out, full, want);
    explicit_bzero(full, sizeof full);
    *ret_len = want;
    return 0;
}
