/* SPDX-License-Identifier: Apache-2.0 */
/* Mechanism parameters of key wrapping and ECDH derivation: wrap.h. */
#include "wrap.h"

#include <string.h>

const char *p11_kw_alg(CK_MECHANISM_TYPE m) {
    switch (m) {
    case CKM_AES_KEY_WRAP:
        return "aes-kw";
    case CKM_AES_KEY_WRAP_PAD:
        return "aes-kwp";
    default:
        return NULL;
    }
}

CK_RV p11_kw_params_check(const CK_MECHANISM *m) {
    static const uint8_t iv_kw[8] = {0xA6, 0xA6, 0xA6, 0xA6, 0xA6, 0xA6, 0xA6, 0xA6};
    static const uint8_t iv_kwp[4] = {0xA6, 0x59, 0x59, 0xA6};
    if (!m->pParameter && m->ulParameterLen == 0)
        return CKR_OK;
    if (!m->pParameter)
        return CKR_MECHANISM_PARAM_INVALID;
    if (m->mechanism == CKM_AES_KEY_WRAP && m->ulParameterLen == sizeof iv_kw &&
        memcmp(m->pParameter, iv_kw, sizeof iv_kw) == 0)
        return CKR_OK;
    if (m->mechanism == CKM_AES_KEY_WRAP_PAD && m->ulParameterLen == sizeof iv_kwp &&
        memcmp(m->pParameter, iv_kwp, sizeof iv_kwp) == 0)
        return CKR_OK;
    return CKR_MECHANISM_PARAM_INVALID; /* another IV: OpenSSL's ciphers use the defaults */
}

size_t p11_kw_wrapped_len(bool pad, size_t n) {
    if (pad)
        return n == 0 ? 0 : (n + 7) / 8 * 8 + 8;
    return n >= 16 && n % 8 == 0 ? n + 8 : 0;
}

static bool point_ok(const uint8_t *p, size_t n, size_t fs) {
    return (n == 2 * fs + 1 && p[0] == 0x04) || (n == fs + 1 && (p[0] == 0x02 || p[0] == 0x03));
}

CK_RV p11_ecdh_params_parse(const CK_MECHANISM *m, size_t field_size, P11EcdhParams *ret) {
    CK_ECDH1_DERIVE_PARAMS p;
    const uint8_t *d;
    size_t n;
    if (!m->pParameter || m->ulParameterLen != sizeof p)
        return CKR_MECHANISM_PARAM_INVALID;
    memcpy(&p, m->pParameter, sizeof p);
    switch (p.kdf) {
    case CKD_NULL:
        ret->kdf = "null";
        break;
    case CKD_SHA1_KDF:
        ret->kdf = "sha1";
        break;
    case CKD_SHA224_KDF:
        ret->kdf = "sha224";
        break;
    case CKD_SHA256_KDF:
        ret->kdf = "sha256";
        break;
    case CKD_SHA384_KDF:
        ret->kdf = "sha384";
        break;
    case CKD_SHA512_KDF:
        ret->kdf = "sha512";
        break;
    default:
        return CKR_MECHANISM_PARAM_INVALID;
    }
    if ((p.ulSharedDataLen > 0 && !p.pSharedData) || p.ulSharedDataLen > 1024 ||
        (p.kdf == CKD_NULL && p.ulSharedDataLen > 0))
        return CKR_MECHANISM_PARAM_INVALID;
    if (!p.pPublicData || p.ulPublicDataLen == 0 || p.ulPublicDataLen > 1024)
        return CKR_MECHANISM_PARAM_INVALID;
    d = p.pPublicData;
    n = p.ulPublicDataLen;
    if (!point_ok(d, n, field_size)) {
        /* DER OCTET STRING: 04 len point, the length in short or one/two-byte long form */
        size_t hdr, len;
        if (n < 2 || d[0] != 0x04)
            return CKR_MECHANISM_PARAM_INVALID;
        if (d[1] < 0x80)
            hdr = 2, len = d[1];
        else if (d[1] == 0x81 && n >= 3 && d[2] >= 0x80)
            hdr = 3, len = d[2];
        else
            return CKR_MECHANISM_PARAM_INVALID;
        if (hdr + len != n || !point_ok(d + hdr, len, field_size))
            return CKR_MECHANISM_PARAM_INVALID;
        d += hdr;
        n = len;
    }
    ret->point = d;
    ret->point_len = n;
    ret->shared = p.pSharedData;
    ret->shared_len = p.ulSharedDataLen;
    return CKR_OK;
}
