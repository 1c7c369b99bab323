/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Template and CKA_EC_PARAMS parsing (see template.h). Bounded by the lengths the application
 * gives; nothing is allocated.
 */
#include <errno.h>
#include <string.h>

#include "core/macro.h"
#include "template.h"

static const uint8_t oid_p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
static const uint8_t oid_p384[] = {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22};
static const uint8_t oid_ed25519[] = {0x06, 0x03, 0x2b, 0x65, 0x70};
static const uint8_t str_ed25519[] = {0x13, 0x0c, 'e', 'd', 'w', 'a', 'r',
                                      'd',  's',  '2', '5', '5', '1', '9'};

int p11_curve_from_ec_params(const void *p, size_t n) {
    const uint8_t *b = p;
    if (!p || n < 2 || (b[0] != 0x06 && b[0] != 0x13) || b[1] >= 0x80 || (size_t)b[1] + 2 != n)
        return -EBADMSG;
    if (n == sizeof(oid_p256) && memcmp(b, oid_p256, n) == 0)
        return P11_CURVE_P256;
    if (n == sizeof(oid_p384) && memcmp(b, oid_p384, n) == 0)
        return P11_CURVE_P384;
    if ((n == sizeof(oid_ed25519) && memcmp(b, oid_ed25519, n) == 0) ||
        (n == sizeof(str_ed25519) && memcmp(b, str_ed25519, n) == 0))
        return P11_CURVE_ED25519;
    return -EOPNOTSUPP;
}

const uint8_t *p11_curve_ec_params(P11Curve c, size_t *ret_len) {
    switch (c) {
    case P11_CURVE_P256:
        *ret_len = sizeof(oid_p256);
        return oid_p256;
    case P11_CURVE_P384:
        *ret_len = sizeof(oid_p384);
        return oid_p384;
    case P11_CURVE_ED25519:
        *ret_len = sizeof(oid_ed25519);
        return oid_ed25519;
    default:
        return NULL;
    }
}

CK_RV p11_template_check(const CK_ATTRIBUTE *t, CK_ULONG n) {
    if (!t && n > 0)
        return CKR_ARGUMENTS_BAD;
    for (CK_ULONG i = 0; i < n; i++)
        if (!t[i].pValue && t[i].ulValueLen > 0)
            return CKR_ATTRIBUTE_VALUE_INVALID;
    return CKR_OK;
}

static CK_RV get_bool(const CK_ATTRIBUTE *a, P11Tri *v) {
    if (a->ulValueLen != sizeof(CK_BBOOL) || !a->pValue)
        return CKR_ATTRIBUTE_VALUE_INVALID;
    CK_BBOOL b = *(const CK_BBOOL *)a->pValue;
    if (b != CK_TRUE && b != CK_FALSE)
        return CKR_ATTRIBUTE_VALUE_INVALID;
    P11Tri nv = b ? P11_TRI_TRUE : P11_TRI_FALSE;
    if (*v != P11_TRI_ABSENT && *v != nv)
        return CKR_TEMPLATE_INCONSISTENT;
    *v = nv;
    return CKR_OK;
}

static CK_RV get_ulong(const CK_ATTRIBUTE *a, CK_ULONG *v) {
    if (a->ulValueLen != sizeof(CK_ULONG) || !a->pValue)
        return CKR_ATTRIBUTE_VALUE_INVALID;
    CK_ULONG x;
    memcpy(&x, a->pValue, sizeof(x));
    *v = x;
    return CKR_OK;
}

CK_RV p11_key_template_parse(const CK_ATTRIBUTE *t, CK_ULONG n, P11KeyTemplate *ret) {
    P11KeyTemplate k = {
        .token = P11_TRI_ABSENT,
        .private_ = P11_TRI_ABSENT,
        .sensitive = P11_TRI_ABSENT,
        .extractable = P11_TRI_ABSENT,
        .modifiable = P11_TRI_ABSENT,
        .copyable = P11_TRI_ABSENT,
        .trusted = P11_TRI_ABSENT,
        .wrap_with_trusted = P11_TRI_ABSENT,
        .sign = P11_TRI_ABSENT,
        .verify = P11_TRI_ABSENT,
        .encrypt = P11_TRI_ABSENT,
        .decrypt = P11_TRI_ABSENT,
        .wrap = P11_TRI_ABSENT,
        .unwrap = P11_TRI_ABSENT,
        .derive = P11_TRI_ABSENT,
        .curve = -1,
    };
    CK_RV rv = p11_template_check(t, n);
    if (rv != CKR_OK)
        return rv;
    for (CK_ULONG i = 0; i < n; i++) {
        const CK_ATTRIBUTE *a = &t[i];
        CK_ULONG u = 0;
        switch (a->type) {
        case CKA_CLASS:
            if ((rv = get_ulong(a, &u)) != CKR_OK)
                return rv;
            if (k.has_class && k.cls != u)
                return CKR_TEMPLATE_INCONSISTENT;
            k.has_class = true, k.cls = u;
            break;
        case CKA_KEY_TYPE:
            if ((rv = get_ulong(a, &u)) != CKR_OK)
                return rv;
            if (k.has_key_type && k.key_type != u)
                return CKR_TEMPLATE_INCONSISTENT;
            k.has_key_type = true, k.key_type = u;
            break;
        case CKA_LABEL:
            if (a->ulValueLen > P11_LABEL_MAX)
                return CKR_ATTRIBUTE_VALUE_INVALID;
            for (CK_ULONG j = 0; j < a->ulValueLen; j++) {
                uint8_t c = ((const uint8_t *)a->pValue)[j];
                if (c < 0x20 || c > 0x7e)
                    return CKR_ATTRIBUTE_VALUE_INVALID;
            }
            if (a->ulValueLen > 0)
                memcpy(k.label, a->pValue, a->ulValueLen);
            k.label[a->ulValueLen] = 0;
            k.has_label = true;
            break;
        case CKA_ID:
            if (a->ulValueLen > P11_ID_MAX)
                return CKR_ATTRIBUTE_VALUE_INVALID;
            if (a->ulValueLen > 0)
                memcpy(k.id, a->pValue, a->ulValueLen);
            k.id_len = a->ulValueLen;
            k.has_id = true;
            break;
        case CKA_TOKEN:
            rv = get_bool(a, &k.token);
            break;
        case CKA_PRIVATE:
            rv = get_bool(a, &k.private_);
            break;
        case CKA_SENSITIVE:
            rv = get_bool(a, &k.sensitive);
            break;
        case CKA_EXTRACTABLE:
            rv = get_bool(a, &k.extractable);
            break;
        case CKA_MODIFIABLE:
            rv = get_bool(a, &k.modifiable);
            break;
        case CKA_SIGN:
            rv = get_bool(a, &k.sign);
            break;
        case CKA_VERIFY:
            rv = get_bool(a, &k.verify);
            break;
        case CKA_ENCRYPT:
            rv = get_bool(a, &k.encrypt);
            break;
        case CKA_DECRYPT:
            rv = get_bool(a, &k.decrypt);
            break;
        case CKA_WRAP:
            rv = get_bool(a, &k.wrap);
            break;
        case CKA_UNWRAP:
            rv = get_bool(a, &k.unwrap);
            break;
        case CKA_DERIVE:
            rv = get_bool(a, &k.derive);
            break;
        case CKA_MODULUS:
        case CKA_PRIVATE_EXPONENT:
        case CKA_PRIME_1:
        case CKA_PRIME_2:
        case CKA_EXPONENT_1:
        case CKA_EXPONENT_2:
        case CKA_COEFFICIENT: {
            int ci = a->type == CKA_MODULUS ? 0 : 2 + (int)(a->type - CKA_PRIVATE_EXPONENT);
            if (!a->pValue || a->ulValueLen == 0 || a->ulValueLen > 1024)
                return CKR_ATTRIBUTE_VALUE_INVALID;
            if (k.rsa[ci] && (k.rsa[ci]->ulValueLen != a->ulValueLen ||
                              memcmp(k.rsa[ci]->pValue, a->pValue, a->ulValueLen) != 0))
                return CKR_TEMPLATE_INCONSISTENT;
            k.rsa[ci] = a;
            break;
        }
        case CKA_VALUE:
            if (!a->pValue || a->ulValueLen == 0)
                return CKR_ATTRIBUTE_VALUE_INVALID;
            if (k.value &&
                (k.value_size != a->ulValueLen || memcmp(k.value, a->pValue, a->ulValueLen) != 0))
                return CKR_TEMPLATE_INCONSISTENT;
            k.value = a->pValue;
            k.value_size = a->ulValueLen;
            break;
        case CKA_VALUE_LEN:
            if ((rv = get_ulong(a, &u)) != CKR_OK)
                return rv;
            if (u == 0)
                return CKR_ATTRIBUTE_VALUE_INVALID;
            k.value_len = u;
            break;
        case CKA_MODULUS_BITS:
            if ((rv = get_ulong(a, &u)) != CKR_OK)
                return rv;
            if (u == 0)
                return CKR_ATTRIBUTE_VALUE_INVALID;
            k.modulus_bits = u;
            break;
        case CKA_PUBLIC_EXPONENT: {
            /* big-endian, leading zeros allowed */
            const uint8_t *b = a->pValue;
            CK_ULONG j = 0;
            while (j < a->ulValueLen && b[j] == 0)
                j++;
            k.has_public_exponent = true;
            k.rsa[1] = a->ulValueLen > 0 ? a : NULL;
            k.public_exponent_f4 =
                a->ulValueLen - j == 3 && b[j] == 1 && b[j + 1] == 0 && b[j + 2] == 1;
            break;
        }
        case CKA_EC_PARAMS: {
            int c = p11_curve_from_ec_params(a->pValue, a->ulValueLen);
            if (c == -EOPNOTSUPP)
                return CKR_CURVE_NOT_SUPPORTED;
            if (c < 0)
                return CKR_ATTRIBUTE_VALUE_INVALID;
            if (k.curve >= 0 && k.curve != c)
                return CKR_TEMPLATE_INCONSISTENT;
            k.curve = c;
            break;
        }
        case CKA_SUBJECT:
        case CKA_START_DATE:
        case CKA_END_DATE:
        case CKA_SIGN_RECOVER:
        case CKA_VERIFY_RECOVER:
        case CKA_COPYABLE:
            rv = get_bool(a, &k.copyable);
            if (rv != CKR_OK)
                return rv;
            break;
        case CKA_DESTROYABLE:
        case CKA_ALWAYS_AUTHENTICATE:
            /* accepted and checked by the caller where the value matters */
            break;
        case CKA_WRAP_WITH_TRUSTED:
            rv = get_bool(a, &k.wrap_with_trusted);
            break;
        case CKA_TRUSTED:
            rv = get_bool(a, &k.trusted);
            break;
        case CKA_LOCAL:
        case CKA_ALWAYS_SENSITIVE:
        case CKA_NEVER_EXTRACTABLE:
        case CKA_KEY_GEN_MECHANISM:
        case CKA_EC_POINT:
        case CKA_PUBLIC_KEY_INFO:
            return CKR_ATTRIBUTE_READ_ONLY;
        default:
            return CKR_ATTRIBUTE_TYPE_INVALID;
        }
        if (rv != CKR_OK)
            return rv;
    }
    *ret = k;
    return CKR_OK;
}
