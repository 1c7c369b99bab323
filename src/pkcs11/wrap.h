/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Wrapping and derivation in the module (hard-wrap): parsing of the mechanism parameters of
 * CKM_AES_KEY_WRAP(_PAD) and CKM_ECDH1_DERIVE, and the wrapped-length arithmetic. Reads
 * application memory only within the lengths given; holds no key material (the ECDH public
 * data is public). Fuzzed by fuzz/fuzz-pkcs11-template.c.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <p11-kit/pkcs11.h>

/* vhsmd's algorithm name of a key wrap mechanism ("aes-kw", "aes-kwp"), NULL for others. */
const char *p11_kw_alg(CK_MECHANISM_TYPE m);
/* CKR_OK if the mechanism's parameter is acceptable: none, or for CKM_AES_KEY_WRAP the default
 * IV of RFC 3394 (A6A6A6A6A6A6A6A6), for CKM_AES_KEY_WRAP_PAD the 4-byte default of RFC 5649
 * (A65959A6); anything else CKR_MECHANISM_PARAM_INVALID. */
CK_RV p11_kw_params_check(const CK_MECHANISM *m);
/* Length of the wrapped form of n bytes; 0 if RFC 3394 (pad false) cannot wrap n bytes. */
size_t p11_kw_wrapped_len(bool pad, size_t n);

typedef struct P11EcdhParams {
    const char *kdf;       /* vhsmd's name: "null", "sha1", ..., "sha512" */
    const uint8_t *shared; /* into the application's parameter */
    size_t shared_len;
    const uint8_t *point; /* the raw SEC1 point, into the application's parameter */
    size_t point_len;
} P11EcdhParams;

/* CK_ECDH1_DERIVE_PARAMS for a base key on a curve of field_size bytes (32, 48): the public data
 * as a raw SEC1 point (uncompressed or compressed) or that point in a DER OCTET STRING (as
 * pkcs11-tool --derive-pass-der and some applications send it). CKR_MECHANISM_PARAM_INVALID for
 * a wrong size, an unknown KDF, shared data with CKD_NULL, or public data that is neither. */
CK_RV p11_ecdh_params_parse(const CK_MECHANISM *m, size_t field_size, P11EcdhParams *ret);
