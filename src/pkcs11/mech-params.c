/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Mechanism parameters for vhsmd (mech-params.h): parsed and checked here, so that a bad
 * parameter is CKR_MECHANISM_PARAM_INVALID at C_*Init, before anything reaches vhsmd, which
 * checks them again.
 */
#include "mech-params.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#define OAEP_LABEL_MAX 65536u

const char *p11_md_name(const EVP_MD *md) {
    if (md == EVP_sha1())
        return "sha1";
    if (md == EVP_sha224())
        return "sha224";
    if (md == EVP_sha256())
        return "sha256";
    if (md == EVP_sha384())
        return "sha384";
    if (md == EVP_sha512())
        return "sha512";
    return NULL;
}

static const EVP_MD *md_of_mech(CK_MECHANISM_TYPE t) {
    switch (t) {
    case CKM_SHA_1:
        return EVP_sha1();
    case CKM_SHA224:
        return EVP_sha224();
    case CKM_SHA256:
        return EVP_sha256();
    case CKM_SHA384:
        return EVP_sha384();
    case CKM_SHA512:
        return EVP_sha512();
    default:
        return NULL;
    }
}

static const EVP_MD *md_of_mgf(CK_RSA_PKCS_MGF_TYPE t) {
    switch (t) {
    case CKG_MGF1_SHA1:
        return EVP_sha1();
    case CKG_MGF1_SHA224:
        return EVP_sha224();
    case CKG_MGF1_SHA256:
        return EVP_sha256();
    case CKG_MGF1_SHA384:
        return EVP_sha384();
    case CKG_MGF1_SHA512:
        return EVP_sha512();
    default:
        return NULL;
    }
}

CK_RV p11_pss_params(const CK_MECHANISM *m, const EVP_MD *want, CK_ULONG key_bits,
                     P11ParParams *ret) {
    CK_RSA_PKCS_PSS_PARAMS p;
    if (!m->pParameter || m->ulParameterLen != sizeof(p) || key_bits < 1024)
        return CKR_MECHANISM_PARAM_INVALID;
    memcpy(&p, m->pParameter, sizeof(p));
    const EVP_MD *md = md_of_mech(p.hashAlg), *mgf = md_of_mgf(p.mgf);
    if (!md || !mgf || (want && md != want))
        return CKR_MECHANISM_PARAM_INVALID;
    /* RFC 8017 9.1.1: emLen = ceil((modBits - 1) / 8) >= hLen + sLen + 2 */
    CK_ULONG em_len = (key_bits - 1 + 7) / 8, h_len = (CK_ULONG)EVP_MD_get_size(md);
    if (p.sLen > em_len - h_len - 2)
        return CKR_MECHANISM_PARAM_INVALID;
    *ret = (P11ParParams){
        .on = true,
        .md = md,
        .mgf = mgf,
        .hash = p11_md_name(md),
        .mgf_hash = p11_md_name(mgf),
        .salt_len = (uint32_t)p.sLen,
    };
    return CKR_OK;
}

CK_RV p11_oaep_params(const CK_MECHANISM *m, P11ParParams *ret) {
    CK_RSA_PKCS_OAEP_PARAMS p;
    if (!m->pParameter || m->ulParameterLen != sizeof(p))
        return CKR_MECHANISM_PARAM_INVALID;
    memcpy(&p, m->pParameter, sizeof(p));
    const EVP_MD *md = md_of_mech(p.hashAlg), *mgf = md_of_mgf(p.mgf);
    if (!md || !mgf || (p.source != 0 && p.source != CKZ_DATA_SPECIFIED) ||
        (p.source == 0 && p.ulSourceDataLen != 0) || (p.ulSourceDataLen && !p.pSourceData) ||
        p.ulSourceDataLen > OAEP_LABEL_MAX)
        return CKR_MECHANISM_PARAM_INVALID;
    uint8_t *label = NULL;
    if (p.ulSourceDataLen) {
        label = malloc(p.ulSourceDataLen);
        if (!label)
            return CKR_HOST_MEMORY;
        memcpy(label, p.pSourceData, p.ulSourceDataLen);
    }
    *ret = (P11ParParams){
        .on = true,
        .md = md,
        .mgf = mgf,
        .hash = p11_md_name(md),
        .mgf_hash = p11_md_name(mgf),
        .label = label,
        .label_len = p.ulSourceDataLen,
    };
    return CKR_OK;
}

bool p11_mech_is_hmac(CK_MECHANISM_TYPE t) {
    switch (t) {
    case CKM_SHA224_HMAC:
    case CKM_SHA256_HMAC:
    case CKM_SHA384_HMAC:
    case CKM_SHA512_HMAC:
    case CKM_SHA224_HMAC_GENERAL:
    case CKM_SHA256_HMAC_GENERAL:
    case CKM_SHA384_HMAC_GENERAL:
    case CKM_SHA512_HMAC_GENERAL:
        return true;
    default:
        return false;
    }
}

CK_RV p11_hmac_params(const CK_MECHANISM *m, P11ParParams *ret) {
    const EVP_MD *md;
    bool general = false;
    switch (m->mechanism) {
    case CKM_SHA224_HMAC_GENERAL:
        general = true;
        /* fall through */
    case CKM_SHA224_HMAC:
        md = EVP_sha224();
        break;
    case CKM_SHA256_HMAC_GENERAL:
        general = true;
        /* fall through */
    case CKM_SHA256_HMAC:
        md = EVP_sha256();
        break;
    case CKM_SHA384_HMAC_GENERAL:
        general = true;
        /* fall through */
    case CKM_SHA384_HMAC:
        md = EVP_sha384();
        break;
    case CKM_SHA512_HMAC_GENERAL:
        general = true;
        /* fall through */
    case CKM_SHA512_HMAC:
        md = EVP_sha512();
        break;
    default:
        return CKR_MECHANISM_INVALID;
    }
    CK_ULONG len = (CK_ULONG)EVP_MD_get_size(md);
    if (general) {
        CK_ULONG want;
        if (!m->pParameter || m->ulParameterLen != sizeof(want))
            return CKR_MECHANISM_PARAM_INVALID;
        memcpy(&want, m->pParameter, sizeof(want));
        if (want < 1 || want > len)
            return CKR_MECHANISM_PARAM_INVALID;
        len = want;
    } else if (m->pParameter || m->ulParameterLen)
        return CKR_MECHANISM_PARAM_INVALID;
    *ret = (P11ParParams){
        .on = true,
        .md = md,
        .hash = p11_md_name(md),
        .mac_len = (uint32_t)len,
    };
    return CKR_OK;
}

void p11_par_done(P11ParParams *p) {
    if (p->label) {
        OPENSSL_cleanse(p->label, p->label_len);
        free(p->label);
    }
    *p = (P11ParParams){0};
}

const uint8_t *p11_digestinfo_prefix(const EVP_MD *md, size_t *ret_len) {
    /* SEQUENCE { SEQUENCE { OID, NULL }, OCTET STRING hLen } */
    static const uint8_t p224[] = {0x30, 0x2d, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                                   0x65, 0x03, 0x04, 0x02, 0x04, 0x05, 0x00, 0x04, 0x1c};
    static const uint8_t p256[] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                                   0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20};
    static const uint8_t p384[] = {0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                                   0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30};
    static const uint8_t p512[] = {0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                                   0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40};
    const uint8_t *p = md == EVP_sha224()   ? p224
                       : md == EVP_sha256() ? p256
                       : md == EVP_sha384() ? p384
                       : md == EVP_sha512() ? p512
                                            : NULL;
    *ret_len = p ? sizeof(p256) : 0;
    return p;
}
