/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The PKCS#11 module's template parsing (src/pkcs11/template.c): an application's CK_ATTRIBUTE
 * array for key generation, and CKA_EC_PARAMS. The input is read as a sequence of attributes,
 * each `u32 type (little endian) | u8 flags | u8 len | len bytes`: flags bit 0 gives a NULL
 * value with the length, bit 1 a length of sizeof(CK_ULONG) over the bytes that follow. The
 * whole input is also tried as CKA_EC_PARAMS, as the public data of CK_ECDH1_DERIVE_PARAMS
 * (both field sizes, two KDFs) and as a key wrap mechanism's IV. The same attributes are also
 * parsed as a C_CreateObject template of a data object, certificate or public key (objects.c).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "objects.h"
#include "template.h"
#include "wrap.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    CK_ATTRIBUTE attrs[64];
    uint8_t *values[64];
    CK_ULONG n = 0;
    size_t off = 0;
    (void)p11_curve_from_ec_params(data, size);
    {
        uint8_t *pub = malloc(size ? size : 1);
        if (!pub)
            return 0;
        memcpy(pub, data, size);
        CK_ECDH1_DERIVE_PARAMS ep = {CKD_NULL, 0, NULL, size, size ? pub : NULL};
        CK_MECHANISM m = {CKM_ECDH1_DERIVE, &ep, sizeof(ep)};
        for (size_t i = 0, fs = 32; i < 4; i++, fs = fs == 32 ? 48 : 32) {
            ep.kdf = i < 2 ? CKD_NULL : CKD_SHA256_KDF;
            P11EcdhParams p;
            if (p11_ecdh_params_parse(&m, fs, &p) != CKR_OK)
                continue;
            if (p.point < pub || p.point + p.point_len > pub + size ||
                (p.point_len != 2 * fs + 1 && p.point_len != fs + 1) || p.shared_len != 0)
                abort();
        }
        CK_MECHANISM kw = {size % 2 ? CKM_AES_KEY_WRAP : CKM_AES_KEY_WRAP_PAD, pub, size};
        (void)p11_kw_params_check(&kw);
        free(pub);
    }
    while (n < 64 && off + 6 <= size) {
        uint32_t type;
        memcpy(&type, data + off, 4);
        uint8_t flags = data[off + 4], len = data[off + 5];
        off += 6;
        if (len > size - off)
            len = (uint8_t)(size - off);
        /* an exact-size copy, so that reading past the length is caught by ASan */
        values[n] = malloc(len ? len : 1);
        if (!values[n])
            break;
        memcpy(values[n], data + off, len);
        off += len;
        attrs[n] = (CK_ATTRIBUTE){type, (flags & 1) ? NULL : values[n], len};
        if ((flags & 2) && len >= sizeof(CK_ULONG))
            attrs[n].ulValueLen = sizeof(CK_ULONG);
        n++;
    }
    P11KeyTemplate t;
    (void)p11_template_check(attrs, n);
    if (p11_key_template_parse(attrs, n, &t) == CKR_OK && t.curve >= 0) {
        size_t l = 0;
        const uint8_t *p = p11_curve_ec_params((P11Curve)t.curve, &l);
        if (!p || p11_curve_from_ec_params(p, l) != t.curve)
            abort();
    }
    /* C_CreateObject templates of data objects, certificates and public keys (objects.c) */
    P11ObjTemplate o;
    if (p11_obj_template_parse(attrs, n, &o) == CKR_OK) {
        if (!o.value || o.value_len == 0 || !o.vtype || o.n_attrs > P11_OBJ_ATTRS_MAX)
            abort();
        p11_obj_template_done(&o);
    }
    for (CK_ULONG i = 0; i < n; i++)
        free(values[i]);
    return 0;
}
