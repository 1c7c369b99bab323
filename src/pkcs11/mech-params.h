/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Mechanism parameters the module hands to vhsmd (branch par): RSA-PSS and RSA-OAEP with free
 * CK_RSA_PKCS_PSS_PARAMS / CK_RSA_PKCS_OAEP_PARAMS (OAEP label), HMAC with any hash and the
 * _GENERAL tag lengths, and the DigestInfo prefixes of CKM_SHA224/512_RSA_PKCS (signed by vhsmd's
 * "rsa-pkcs1-raw"). Needs a vhsmd with VHSM_FEATURE_MECH_PARAMS (the PSS/OAEP/HMAC parts).
 */
#pragma once

#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "p11.h"

typedef struct P11ParParams {
    bool on;                     /* the operation goes to vhsmd with these parameters */
    const EVP_MD *md, *mgf;      /* PSS/OAEP: hash and MGF1 hash; HMAC: the hash */
    const char *hash, *mgf_hash; /* their vhsmd names */
    uint32_t salt_len;           /* PSS */
    uint32_t mac_len;            /* HMAC: tag bytes */
    uint8_t *label;              /* OAEP label (a copy; p11_par_done frees it) */
    size_t label_len;
} P11ParParams;

/* vhsmd's name of md ("sha1" ... "sha512"), NULL for others. */
const char *p11_md_name(const EVP_MD *md);

/* CK_RSA_PKCS_PSS_PARAMS: hashAlg SHA-1/224/256/384/512 (want: the one the mechanism implies, or
 * NULL for CKM_RSA_PKCS_PSS), MGF1 with any of them, sLen up to emLen - hLen - 2 for a modulus of
 * key_bits. CKR_MECHANISM_PARAM_INVALID otherwise. */
CK_RV p11_pss_params(const CK_MECHANISM *m, const EVP_MD *want, CK_ULONG key_bits,
                     P11ParParams *ret);
/* CK_RSA_PKCS_OAEP_PARAMS: hashAlg and MGF1 SHA-1/224/256/384/512 (mixed allowed), source 0 or
 * CKZ_DATA_SPECIFIED with a label of up to 65536 bytes (copied). */
CK_RV p11_oaep_params(const CK_MECHANISM *m, P11ParParams *ret);
/* CKM_SHA{224,256,384,512}_HMAC (no parameter) and _HMAC_GENERAL (CK_MAC_GENERAL_PARAMS: 1..hLen).
 * Returns CKR_MECHANISM_INVALID for other mechanisms. */
CK_RV p11_hmac_params(const CK_MECHANISM *m, P11ParParams *ret);
bool p11_mech_is_hmac(CK_MECHANISM_TYPE t);
void p11_par_done(P11ParParams *p);

/* The DER DigestInfo prefix of a SHA-224/256/384/512 digest (RFC 8017 9.2 note 1). */
const uint8_t *p11_digestinfo_prefix(const EVP_MD *md, size_t *ret_len);
