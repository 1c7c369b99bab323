/* SPDX-License-Identifier: Apache-2.0 */
#include "openssl-util.h"

#include <errno.h>
#include <openssl/core_names.h>
#include <stdio.h>
#include <string.h>

#include "log.h"

int nt_openssl_error(int fallback, const char *what) {
    unsigned long e;
    const char *file, *data;
    int line, flags;
    char buf[256];

    while ((e = ERR_get_error_all(&file, &line, NULL, &data, &flags)) != 0) {
        ERR_error_string_n(e, buf, sizeof buf);
        log_debug("OpenSSL%s%s: %s%s%s", what ? " " : "", what ? what : "", buf,
                  (flags & ERR_TXT_STRING) && data ? ": " : "",
                  (flags & ERR_TXT_STRING) && data ? data : "");
    }
    return fallback;
}

int nt_hkdf_sha256(const void *ikm, size_t ikm_len, const char *info, void *out, size_t out_len) {
    _cleanup_(EVP_KDF_freep) EVP_KDF *kdf = NULL;
    _cleanup_(EVP_KDF_CTX_freep) EVP_KDF_CTX *ctx = NULL;
    OSSL_PARAM params[4];

    if (!ikm || !info || !out)
        return -EINVAL;
    kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    ctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
    if (!ctx)
        return nt_openssl_error(-EIO, "HKDF");
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
    params[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)ikm, ikm_len);
    params[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (char *)info, strlen(info));
    params[3] = OSSL_PARAM_construct_end();
    if (EVP_KDF_derive(ctx, out, out_len, params) != 1)
        return nt_openssl_error(-EIO, "HKDF derive");
    return 0;
}

int nt_aes256gcm(bool enc, const Secret *key, const uint8_t *nonce, size_t nonce_len,
                 const uint8_t *aad, size_t aad_len, const uint8_t *in, size_t len, uint8_t *out,
                 uint8_t *tag, size_t tag_len, const char *what) {
    _cleanup_(EVP_CIPHER_CTX_freep) EVP_CIPHER_CTX *ctx = NULL;
    char msg[128];
    int n = 0;

    if (!key || secret_size(key) != 32 || nonce_len > INT32_MAX || aad_len > INT32_MAX ||
        tag_len > 16)
        return -EINVAL;
    if (len > INT32_MAX)
        return -EFBIG;
    if (!(ctx = EVP_CIPHER_CTX_new()))
        return -ENOMEM;
    snprintf(msg, sizeof msg, "%s AES-GCM", what);
    if (EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL, enc) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, (int)nonce_len, NULL) != 1 ||
        EVP_CipherInit_ex(ctx, NULL, NULL, secret_const_data(key), nonce, enc) != 1 ||
        EVP_CipherUpdate(ctx, NULL, &n, aad, (int)aad_len) != 1 ||
        (len > 0 && EVP_CipherUpdate(ctx, out, &n, in, (int)len) != 1))
        return nt_openssl_error(-EIO, msg);
    if (enc) {
        if (EVP_CipherFinal_ex(ctx, out + n, &n) != 1 ||
            EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, (int)tag_len, tag) != 1)
            return nt_openssl_error(-EIO, strcat(msg, " final"));
        return 0;
    }
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, (int)tag_len, tag) != 1)
        return nt_openssl_error(-EIO, strcat(msg, " tag"));
    if (EVP_CipherFinal_ex(ctx, out + n, &n) != 1) {
        ERR_clear_error();
        return -EKEYREJECTED;
    }
    return 0;
}
