/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Cleanup functions for every OpenSSL 3 type the project uses, and the error-queue helper.
 * On an OpenSSL failure: call nt_openssl_error(), which drains the ERR queue to the debug log and
 * returns the mapped negative errno (-EIO by default).
 */
#pragma once

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"
#include "secret.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_PKEY *, EVP_PKEY_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_PKEY_CTX *, EVP_PKEY_CTX_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_MD_CTX *, EVP_MD_CTX_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_CIPHER_CTX *, EVP_CIPHER_CTX_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_CIPHER *, EVP_CIPHER_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_MD *, EVP_MD_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_MAC *, EVP_MAC_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_MAC_CTX *, EVP_MAC_CTX_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_KDF *, EVP_KDF_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_KDF_CTX *, EVP_KDF_CTX_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(X509 *, X509_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(X509_NAME *, X509_NAME_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(X509_EXTENSION *, X509_EXTENSION_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(X509_STORE *, X509_STORE_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(X509_STORE_CTX *, X509_STORE_CTX_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(X509_VERIFY_PARAM *, X509_VERIFY_PARAM_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(BIO *, BIO_free_all);
DEFINE_TRIVIAL_CLEANUP_FUNC(BIGNUM *, BN_clear_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(BN_CTX *, BN_CTX_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(ECDSA_SIG *, ECDSA_SIG_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(ASN1_OBJECT *, ASN1_OBJECT_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(ASN1_OCTET_STRING *, ASN1_OCTET_STRING_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(ASN1_INTEGER *, ASN1_INTEGER_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(ASN1_IA5STRING *, ASN1_IA5STRING_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(ASN1_TIME *, ASN1_TIME_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(OSSL_PARAM_BLD *, OSSL_PARAM_BLD_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(OSSL_PARAM *, OSSL_PARAM_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(EC_GROUP *, EC_GROUP_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(EC_POINT *, EC_POINT_free);

/* clang-format misreads the STACK_OF() macro as a multiplication. */
/* clang-format off */
static inline void sk_X509_pop_freep(STACK_OF(X509) **sk) {
    if (*sk)
        sk_X509_pop_free(*sk, X509_free);
}
/* clang-format on */

/* Drains the OpenSSL error queue to the debug log (prefixed with what, may be NULL) and returns
 * fallback (a negative errno, typically -EIO). */
int nt_openssl_error(int fallback, const char *what);

/* HKDF-SHA256 (no salt) of ikm with info as the HKDF info, out_len bytes into out. -EIO on an
 * OpenSSL failure. */
int nt_hkdf_sha256(const void *ikm, size_t ikm_len, const char *info, void *out, size_t out_len);

/* AES-256-GCM in one pass: enc seals in (len bytes) to out and writes the tag (tag_len bytes);
 * !enc opens in to out, checking tag. aad (aad_len bytes) is authenticated, not encrypted. key is
 * 32 bytes. A tag or AAD mismatch gives -EKEYREJECTED; what prefixes the debug log on other
 * OpenSSL failures. */
int nt_aes256gcm(bool enc, const Secret *key, const uint8_t *nonce, size_t nonce_len,
                 const uint8_t *aad, size_t aad_len, const uint8_t *in, size_t len, uint8_t *out,
                 uint8_t *tag, size_t tag_len, const char *what);
