/* SPDX-License-Identifier: Apache-2.0 */
/* C_CreateObject templates of data objects, certificates and public keys (objects.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>

#include "objects.h"
#include "template.h"
#include "vhsm/client/vhsm-client.h"

static CK_RV tri_bool(const CK_ATTRIBUTE *a, P11Tri *v) {
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

static CK_RV one_ulong(const CK_ATTRIBUTE *a, bool *have, CK_ULONG *v) {
    if (a->ulValueLen != sizeof(CK_ULONG) || !a->pValue)
        return CKR_ATTRIBUTE_VALUE_INVALID;
    CK_ULONG x;
    memcpy(&x, a->pValue, sizeof x);
    if (*have && *v != x)
        return CKR_TEMPLATE_INCONSISTENT;
    *have = true;
    *v = x;
    return CKR_OK;
}

CK_RV p11_template_class(const CK_ATTRIBUTE *t, CK_ULONG n, CK_OBJECT_CLASS *ret) {
    bool have = false;
    CK_ULONG c = 0;
    CK_RV rv = p11_template_check(t, n);
    if (rv != CKR_OK)
        return rv;
    for (CK_ULONG i = 0; i < n; i++)
        if (t[i].type == CKA_CLASS && (rv = one_ulong(&t[i], &have, &c)) != CKR_OK)
            return rv;
    if (!have)
        return CKR_TEMPLATE_INCOMPLETE;
    *ret = c;
    return CKR_OK;
}

/* The one value of a byte attribute (given twice: must be equal). */
static CK_RV one_bytes(const CK_ATTRIBUTE *a, const CK_ATTRIBUTE **slot) {
    if (*slot && ((*slot)->ulValueLen != a->ulValueLen ||
                  (a->ulValueLen && memcmp((*slot)->pValue, a->pValue, a->ulValueLen) != 0)))
        return CKR_TEMPLATE_INCONSISTENT;
    *slot = a;
    return CKR_OK;
}

static CK_RV add_attr(P11ObjTemplate *o, CK_ATTRIBUTE_TYPE type, const void *p, size_t n) {
    for (size_t i = 0; i < o->n_attrs; i++)
        if (o->attrs[i].type == type) {
            if (o->attrs[i].len != n || (n && memcmp(o->attrs[i].value, p, n) != 0))
                return CKR_TEMPLATE_INCONSISTENT;
            return CKR_OK;
        }
    if (o->n_attrs == P11_OBJ_ATTRS_MAX)
        return CKR_TEMPLATE_INCONSISTENT;
    if (n > VHSM_ATTR_VALUE_MAX)
        return CKR_ATTRIBUTE_VALUE_INVALID;
    o->attrs[o->n_attrs++] = (P11ObjAttr){type, p, n};
    return CKR_OK;
}

static bool has_attr(const P11ObjTemplate *o, CK_ATTRIBUTE_TYPE type) {
    for (size_t i = 0; i < o->n_attrs; i++)
        if (o->attrs[i].type == type)
            return true;
    return false;
}

static uint8_t *own(P11ObjTemplate *o, uint8_t *p) {
    for (size_t i = 0; i < sizeof o->owned / sizeof o->owned[0]; i++)
        if (!o->owned[i])
            return o->owned[i] = p;
    OPENSSL_free(p);
    return NULL;
}

/* A certificate's subject, issuer and serial number (DER) as attributes, where the template did
 * not give them. */
static CK_RV cert_fill(P11ObjTemplate *o) {
    const unsigned char *p = o->value;
    X509 *x = d2i_X509(NULL, &p, (long)o->value_len);
    CK_RV rv = CKR_OK;
    if (!x || p != o->value + o->value_len) {
        X509_free(x);
        ERR_clear_error();
        return CKR_ATTRIBUTE_VALUE_INVALID;
    }
    for (int i = 0; i < 3 && rv == CKR_OK; i++) {
        static const CK_ATTRIBUTE_TYPE types[3] = {CKA_SUBJECT, CKA_ISSUER, CKA_SERIAL_NUMBER};
        unsigned char *der = NULL;
        int n = i == 0   ? i2d_X509_NAME(X509_get_subject_name(x), &der)
                : i == 1 ? i2d_X509_NAME(X509_get_issuer_name(x), &der)
                         : i2d_ASN1_INTEGER(X509_get0_serialNumber(x), &der);
        if (has_attr(o, types[i])) {
            OPENSSL_free(der);
            continue;
        }
        if (n <= 0 || !own(o, der))
            rv = n <= 0 ? CKR_ATTRIBUTE_VALUE_INVALID : CKR_HOST_MEMORY;
        else
            rv = add_attr(o, types[i], der, (size_t)n);
    }
    X509_free(x);
    return rv;
}

/* The EC point of CKA_EC_POINT: a DER OCTET STRING around it (as PKCS#11 says), or the bare
 * point (as some applications send it). */
static bool ec_point(const CK_ATTRIBUTE *a, const uint8_t **ret, size_t *ret_len) {
    const uint8_t *p = a->pValue;
    size_t n = a->ulValueLen;
    if (n >= 2 && p[0] == 0x04 && p[1] < 0x80 && (size_t)p[1] + 2 == n) {
        *ret = p + 2;
        *ret_len = n - 2;
        return true;
    }
    if (n >= 3 && p[0] == 0x04 && p[1] == 0x81 && (size_t)p[2] + 3 == n) {
        *ret = p + 3;
        *ret_len = n - 3;
        return true;
    }
    *ret = p;
    *ret_len = n;
    return n > 0;
}

/* SubjectPublicKeyInfo DER of the public key the template gives. */
static CK_RV public_spki(P11ObjTemplate *o, const CK_ATTRIBUTE *params, const CK_ATTRIBUTE *point,
                         const CK_ATTRIBUTE *mod, const CK_ATTRIBUTE *exp) {
    EVP_PKEY_CTX *ctx = NULL;
    EVP_PKEY *pk = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *prm = NULL;
    BIGNUM *n = NULL, *e = NULL;
    unsigned char *der = NULL;
    const char *alg;
    CK_RV rv = CKR_ATTRIBUTE_VALUE_INVALID;
    int len;

    if (o->key_type == CKK_EC || o->key_type == CKK_EC_EDWARDS) {
        const uint8_t *pt;
        size_t pl;
        if (!params || !point)
            return CKR_TEMPLATE_INCOMPLETE;
        if (mod || exp)
            return CKR_TEMPLATE_INCONSISTENT;
        int c = p11_curve_from_ec_params(params->pValue, params->ulValueLen);
        if (c == -EOPNOTSUPP)
            return CKR_CURVE_NOT_SUPPORTED;
        if (c < 0)
            return CKR_ATTRIBUTE_VALUE_INVALID;
        if ((c == P11_CURVE_ED25519) != (o->key_type == CKK_EC_EDWARDS))
            return CKR_TEMPLATE_INCONSISTENT;
        if (!ec_point(point, &pt, &pl))
            return CKR_ATTRIBUTE_VALUE_INVALID;
        if (c == P11_CURVE_ED25519) {
            if (pl != 32)
                return CKR_ATTRIBUTE_VALUE_INVALID;
            pk = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pt, pl);
            goto encode;
        }
        alg = "EC";
        bld = OSSL_PARAM_BLD_new();
        if (!bld ||
            !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME,
                                             c == P11_CURVE_P256 ? "P-256" : "P-384", 0) ||
            !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pt, pl))
            goto out;
    } else if (o->key_type == CKK_RSA) {
        if (!mod || !exp)
            return CKR_TEMPLATE_INCOMPLETE;
        if (params || point)
            return CKR_TEMPLATE_INCONSISTENT;
        alg = "RSA";
        n = BN_bin2bn(mod->pValue, (int)mod->ulValueLen, NULL);
        e = BN_bin2bn(exp->pValue, (int)exp->ulValueLen, NULL);
        if (!n || !e || !BN_is_word(e, 65537) ||
            (BN_num_bits(n) != 2048 && BN_num_bits(n) != 3072 && BN_num_bits(n) != 4096))
            goto out;
        bld = OSSL_PARAM_BLD_new();
        if (!bld || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
            !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e))
            goto out;
    } else
        return CKR_ATTRIBUTE_VALUE_INVALID;
    prm = OSSL_PARAM_BLD_to_param(bld);
    ctx = EVP_PKEY_CTX_new_from_name(NULL, alg, NULL);
    if (!prm || !ctx || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, prm) != 1)
        goto out;
    if (o->key_type == CKK_EC) {
        /* the point must be on the curve */
        EVP_PKEY_CTX *chk = EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL);
        bool ok = chk && EVP_PKEY_public_check(chk) == 1;
        EVP_PKEY_CTX_free(chk);
        if (!ok)
            goto out;
    }
encode:
    if (!pk)
        goto out;
    len = i2d_PUBKEY(pk, &der);
    if (len <= 0)
        goto out;
    o->value = malloc((size_t)len);
    if (!o->value) {
        rv = CKR_HOST_MEMORY;
        goto out;
    }
    memcpy(o->value, der, (size_t)len);
    o->value_len = (size_t)len;
    rv = CKR_OK;
out:
    OPENSSL_free(der);
    OSSL_PARAM_free(prm);
    OSSL_PARAM_BLD_free(bld);
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(pk);
    BN_free(n);
    BN_free(e);
    ERR_clear_error();
    return rv;
}

static uint32_t tri_flag(uint32_t f, P11Tri t, uint32_t bit) {
    return t == P11_TRI_TRUE ? f | bit : t == P11_TRI_FALSE ? f & ~bit : f;
}

CK_RV p11_obj_template_parse(const CK_ATTRIBUTE *t, CK_ULONG n, P11ObjTemplate *ret) {
    P11ObjTemplate o = {0};
    P11Tri token = P11_TRI_ABSENT, priv = P11_TRI_ABSENT, modif = P11_TRI_ABSENT,
           copy = P11_TRI_ABSENT, destr = P11_TRI_ABSENT, trusted = P11_TRI_ABSENT,
           verify = P11_TRI_ABSENT, encrypt = P11_TRI_ABSENT, wrap = P11_TRI_ABSENT,
           derive = P11_TRI_ABSENT, no = P11_TRI_ABSENT;
    const CK_ATTRIBUTE *value = NULL, *params = NULL, *point = NULL, *mod = NULL, *exp = NULL,
                       *label = NULL;
    bool have_kt = false, have_ct = false;
    CK_ULONG ct = 0;
    CK_RV rv = p11_template_class(t, n, &o.cls);

    if (rv != CKR_OK)
        return rv;
    bool data = o.cls == CKO_DATA, cert = o.cls == CKO_CERTIFICATE, pub = o.cls == CKO_PUBLIC_KEY;
    if (!data && !cert && !pub)
        return CKR_ATTRIBUTE_VALUE_INVALID;
    o.vtype = data ? "data" : cert ? "cert" : "public";
    for (CK_ULONG i = 0; i < n && rv == CKR_OK; i++) {
        const CK_ATTRIBUTE *a = &t[i];
        switch (a->type) {
        case CKA_CLASS:
            break;
        case CKA_TOKEN:
            rv = tri_bool(a, &token);
            break;
        case CKA_PRIVATE:
            rv = tri_bool(a, &priv);
            break;
        case CKA_MODIFIABLE:
            rv = tri_bool(a, &modif);
            break;
        case CKA_COPYABLE:
            rv = tri_bool(a, &copy);
            break;
        case CKA_DESTROYABLE:
            rv = tri_bool(a, &destr);
            break;
        case CKA_LABEL:
            if ((rv = one_bytes(a, &label)) == CKR_OK)
                rv = a->ulValueLen > P11_LABEL_MAX
                         ? CKR_ATTRIBUTE_VALUE_INVALID
                         : add_attr(&o, a->type, a->pValue, a->ulValueLen);
            break;
        case CKA_VALUE:
            rv = pub ? CKR_ATTRIBUTE_TYPE_INVALID : one_bytes(a, &value);
            break;
        case CKA_APPLICATION:
        case CKA_OBJECT_ID:
            rv =
                data ? add_attr(&o, a->type, a->pValue, a->ulValueLen) : CKR_ATTRIBUTE_TYPE_INVALID;
            break;
        case CKA_ID:
        case CKA_SUBJECT:
        case CKA_START_DATE:
        case CKA_END_DATE:
            rv =
                data ? CKR_ATTRIBUTE_TYPE_INVALID : add_attr(&o, a->type, a->pValue, a->ulValueLen);
            break;
        case CKA_ISSUER:
        case CKA_SERIAL_NUMBER:
        case CKA_CERTIFICATE_CATEGORY:
        case CKA_URL:
        case CKA_HASH_OF_SUBJECT_PUBLIC_KEY:
        case CKA_HASH_OF_ISSUER_PUBLIC_KEY:
        case CKA_JAVA_MIDP_SECURITY_DOMAIN:
            rv =
                cert ? add_attr(&o, a->type, a->pValue, a->ulValueLen) : CKR_ATTRIBUTE_TYPE_INVALID;
            break;
        case CKA_CERTIFICATE_TYPE:
            rv = cert ? one_ulong(a, &have_ct, &ct) : CKR_ATTRIBUTE_TYPE_INVALID;
            break;
        case CKA_TRUSTED:
            rv = data ? CKR_ATTRIBUTE_TYPE_INVALID : tri_bool(a, &trusted);
            break;
        case CKA_KEY_TYPE:
            rv = pub ? one_ulong(a, &have_kt, &o.key_type) : CKR_ATTRIBUTE_TYPE_INVALID;
            break;
        case CKA_EC_PARAMS:
            rv = pub ? one_bytes(a, &params) : CKR_ATTRIBUTE_TYPE_INVALID;
            break;
        case CKA_EC_POINT:
            rv = pub ? one_bytes(a, &point) : CKR_ATTRIBUTE_TYPE_INVALID;
            break;
        case CKA_MODULUS:
            rv = pub ? one_bytes(a, &mod) : CKR_ATTRIBUTE_TYPE_INVALID;
            break;
        case CKA_PUBLIC_EXPONENT:
            rv = pub ? one_bytes(a, &exp) : CKR_ATTRIBUTE_TYPE_INVALID;
            break;
        case CKA_VERIFY:
            rv = pub ? tri_bool(a, &verify) : CKR_ATTRIBUTE_TYPE_INVALID;
            break;
        case CKA_ENCRYPT:
            rv = pub ? tri_bool(a, &encrypt) : CKR_ATTRIBUTE_TYPE_INVALID;
            break;
        case CKA_WRAP:
            rv = pub ? tri_bool(a, &wrap) : CKR_ATTRIBUTE_TYPE_INVALID;
            break;
        case CKA_DERIVE:
            rv = pub ? tri_bool(a, &derive) : CKR_ATTRIBUTE_TYPE_INVALID;
            break;
        case CKA_VERIFY_RECOVER:
            /* false is what the token has anyway */
            if (!pub)
                rv = CKR_ATTRIBUTE_TYPE_INVALID;
            else if ((rv = tri_bool(a, &no)) == CKR_OK && no == P11_TRI_TRUE)
                rv = CKR_ATTRIBUTE_VALUE_INVALID;
            no = P11_TRI_ABSENT;
            break;
        case CKA_SIGN:
        case CKA_DECRYPT:
        case CKA_UNWRAP:
        case CKA_SIGN_RECOVER:
        case CKA_PRIVATE_EXPONENT:
        case CKA_PRIME_1:
        case CKA_PRIME_2:
        case CKA_EXPONENT_1:
        case CKA_EXPONENT_2:
        case CKA_COEFFICIENT:
            rv = pub ? CKR_TEMPLATE_INCONSISTENT : CKR_ATTRIBUTE_TYPE_INVALID;
            break;
        case CKA_LOCAL:
        case CKA_KEY_GEN_MECHANISM:
        case CKA_MODULUS_BITS:
        case CKA_PUBLIC_KEY_INFO:
        case CKA_CHECK_VALUE:
        case CKA_ALWAYS_SENSITIVE:
        case CKA_NEVER_EXTRACTABLE:
            rv = CKR_ATTRIBUTE_READ_ONLY;
            break;
        default:
            rv = CKR_ATTRIBUTE_TYPE_INVALID;
        }
    }
    if (rv != CKR_OK)
        goto fail;
    if (have_ct && ct != CKC_X_509) {
        rv = CKR_ATTRIBUTE_VALUE_INVALID;
        goto fail;
    }
    if (pub && !have_kt) {
        rv = CKR_TEMPLATE_INCOMPLETE;
        goto fail;
    }
    if ((data || cert) && !value) {
        rv = CKR_TEMPLATE_INCOMPLETE;
        goto fail;
    }
    if (label) {
        char *l = malloc(label->ulValueLen + 1);
        if (!l) {
            rv = CKR_HOST_MEMORY;
            goto fail;
        }
        memcpy(l, label->pValue, label->ulValueLen);
        l[label->ulValueLen] = 0;
        o.label = l;
        if (strlen(l) != label->ulValueLen) { /* a NUL inside */
            rv = CKR_ATTRIBUTE_VALUE_INVALID;
            goto fail;
        }
    }
    if (pub)
        rv = public_spki(&o, params, point, mod, exp);
    else if (value->ulValueLen == 0 ||
             value->ulValueLen > (data ? P11_OBJ_DATA_MAX : P11_OBJ_CERT_MAX))
        rv = CKR_ATTRIBUTE_VALUE_INVALID;
    else if (!(o.value = malloc(value->ulValueLen)))
        rv = CKR_HOST_MEMORY;
    else {
        memcpy(o.value, value->pValue, value->ulValueLen);
        o.value_len = value->ulValueLen;
        if (cert)
            rv = cert_fill(&o);
    }
    if (rv != CKR_OK)
        goto fail;
    /* PKCS#11 defaults: a token object only if asked; private false for these classes;
     * modifiable, copyable, destroyable true. */
    o.session = token != P11_TRI_TRUE;
    o.trusted = trusted == P11_TRI_TRUE;
    uint32_t f = VHSM_OBJ_MODIFIABLE | VHSM_OBJ_COPYABLE | VHSM_OBJ_DESTROYABLE;
    if (pub)
        f |= VHSM_OBJ_VERIFY | (o.key_type == CKK_RSA ? VHSM_OBJ_ENCRYPT : 0);
    f = tri_flag(f, priv, VHSM_OBJ_PRIVATE);
    f = tri_flag(f, modif, VHSM_OBJ_MODIFIABLE);
    f = tri_flag(f, copy, VHSM_OBJ_COPYABLE);
    f = tri_flag(f, destr, VHSM_OBJ_DESTROYABLE);
    f = tri_flag(f, trusted, VHSM_OBJ_TRUSTED);
    f = tri_flag(f, verify, VHSM_OBJ_VERIFY);
    f = tri_flag(f, encrypt, VHSM_OBJ_ENCRYPT);
    f = tri_flag(f, wrap, VHSM_OBJ_WRAP);
    f = tri_flag(f, derive, VHSM_OBJ_DERIVE);
    if (o.session)
        f |= VHSM_OBJ_SESSION;
    o.flags = f;
    *ret = o;
    return CKR_OK;
fail:
    p11_obj_template_done(&o);
    return rv;
}

void p11_obj_template_done(P11ObjTemplate *t) {
    if (!t)
        return;
    free(t->value);
    free((void *)t->label);
    for (size_t i = 0; i < sizeof t->owned / sizeof t->owned[0]; i++)
        OPENSSL_free(t->owned[i]);
    *t = (P11ObjTemplate){0};
}
