/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A minimal DER reader for PKCS#8 private keys (see pkcs8.h for the accepted subset). The input
 * is only read, never copied, except for the private components, which are converted into a
 * Secret (OpenSSL's native little-endian integers) and passed to EVP_PKEY_fromdata().
 */
#include "pkcs8.h"

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <string.h>

#include "core/openssl-util.h"
#include "core/secret.h"

typedef struct Der {
    const uint8_t *p;
    size_t left;
} Der;

#define TAG_INTEGER 0x02
#define TAG_BIT_STRING 0x03
#define TAG_OCTET_STRING 0x04
#define TAG_NULL 0x05
#define TAG_OID 0x06
#define TAG_SEQUENCE 0x30
#define TAG_CTX0 0xa0
#define TAG_CTX1 0xa1
#define TAG_CTX0_PRIM 0x80
#define TAG_CTX1_PRIM 0x81

static const uint8_t oid_ec[] = {0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01};
static const uint8_t oid_p256[] = {0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
static const uint8_t oid_p384[] = {0x2b, 0x81, 0x04, 0x00, 0x22};
static const uint8_t oid_ed25519[] = {0x2b, 0x65, 0x70};
static const uint8_t oid_rsa[] = {0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01};

/* Reads one TLV with the given tag; *ret is its content. Definite lengths only, at most 3
 * length bytes, minimal long form. */
static int der_read(Der *d, uint8_t tag, Der *ret) {
    size_t len;
    if (d->left < 2 || d->p[0] != tag)
        return -EBADMSG;
    len = d->p[1];
    d->p += 2;
    d->left -= 2;
    if (len & 0x80) {
        size_t n = len & 0x7f;
        if (n == 0 || n > 3 || d->left < n || d->p[0] == 0)
            return -EBADMSG;
        len = 0;
        for (size_t i = 0; i < n; i++)
            len = len << 8 | d->p[i];
        if (len < 0x80)
            return -EBADMSG;
        d->p += n;
        d->left -= n;
    }
    if (len > d->left)
        return -EBADMSG;
    *ret = (Der){.p = d->p, .left = len};
    d->p += len;
    d->left -= len;
    return 0;
}

static bool der_peek(const Der *d, uint8_t tag) {
    return d->left > 0 && d->p[0] == tag;
}

static bool der_is(const Der *d, const uint8_t *v, size_t n) {
    return d->left == n && memcmp(d->p, v, n) == 0;
}

/* A positive INTEGER: returns its magnitude without the sign byte. */
static int der_uint(Der *d, Der *ret) {
    Der v;
    int r = der_read(d, TAG_INTEGER, &v);
    if (r < 0)
        return r;
    if (v.left == 0 || (v.p[0] & 0x80))
        return -EBADMSG;
    if (v.p[0] == 0 && v.left > 1) {
        if (!(v.p[1] & 0x80))
            return -EBADMSG; /* not minimal */
        v.p++;
        v.left--;
    }
    *ret = v;
    return 0;
}

static int der_small_int(Der *d, unsigned *ret) {
    Der v;
    int r = der_uint(d, &v);
    if (r < 0)
        return r;
    if (v.left != 1)
        return -EBADMSG;
    *ret = v.p[0];
    return 0;
}

/* Big-endian magnitude -> little-endian into out (n bytes). */
static void to_native(const Der *v, uint8_t *out) {
    for (size_t i = 0; i < v->left; i++)
        out[i] = v->p[v->left - 1 - i];
}

static int fromdata(const char *alg, OSSL_PARAM *params, EVP_PKEY **ret) {
    _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, alg, NULL);
    EVP_PKEY *pkey = NULL;
    if (!ctx)
        return nt_openssl_error(-ENOMEM, "EVP_PKEY_CTX_new_from_name");
    if (EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_KEYPAIR, params) != 1) {
        ERR_clear_error();
        return -EBADMSG;
    }
    *ret = pkey;
    return 0;
}

static int parse_ec(VaultKeyType type, Der *priv, EVP_PKEY **ret) {
    _cleanup_(EC_GROUP_freep) EC_GROUP *group = NULL;
    _cleanup_(EC_POINT_freep) EC_POINT *pub = NULL;
    _cleanup_(BN_clear_freep) BIGNUM *d = NULL;
    _cleanup_(secret_freep) Secret *le = NULL;
    const uint8_t *curve_oid = type == VAULT_KEY_EC_P256 ? oid_p256 : oid_p384;
    size_t curve_len = type == VAULT_KEY_EC_P256 ? sizeof oid_p256 : sizeof oid_p384;
    size_t fs = type == VAULT_KEY_EC_P256 ? 32 : 48;
    uint8_t point[1 + 2 * 48];
    Der seq, key, opt;
    unsigned version;
    OSSL_PARAM params[4];
    int r;

    if ((r = der_read(priv, TAG_SEQUENCE, &seq)) < 0 || priv->left != 0)
        return -EBADMSG;
    if ((r = der_small_int(&seq, &version)) < 0 || version != 1)
        return -EBADMSG;
    if ((r = der_read(&seq, TAG_OCTET_STRING, &key)) < 0 || key.left == 0 || key.left > fs)
        return -EBADMSG;
    if (der_peek(&seq, TAG_CTX0)) {
        Der oid;
        if (der_read(&seq, TAG_CTX0, &opt) < 0 || der_read(&opt, TAG_OID, &oid) < 0 ||
            opt.left != 0 || !der_is(&oid, curve_oid, curve_len))
            return -EBADMSG;
    }
    Der given_pub = {0};
    if (der_peek(&seq, TAG_CTX1)) {
        if (der_read(&seq, TAG_CTX1, &opt) < 0 || der_read(&opt, TAG_BIT_STRING, &given_pub) < 0 ||
            opt.left != 0 || given_pub.left < 1 || given_pub.p[0] != 0)
            return -EBADMSG;
        given_pub.p++;
        given_pub.left--;
    }
    if (seq.left != 0)
        return -EBADMSG;

    /* The public key is computed from d (OpenSSL's import does not derive it); a given public
     * key must match it. */
    group = EC_GROUP_new_by_curve_name(type == VAULT_KEY_EC_P256 ? NID_X9_62_prime256v1
                                                                 : NID_secp384r1);
    d = BN_secure_new();
    pub = group ? EC_POINT_new(group) : NULL;
    if (!group || !d || !pub)
        return -ENOMEM;
    if (!BN_bin2bn(key.p, (int)key.left, d))
        return -ENOMEM;
    if (BN_is_zero(d) || BN_cmp(d, EC_GROUP_get0_order(group)) >= 0)
        return -EBADMSG;
    if (EC_POINT_mul(group, pub, d, NULL, NULL, NULL) != 1 ||
        EC_POINT_point2oct(group, pub, POINT_CONVERSION_UNCOMPRESSED, point, sizeof point, NULL) !=
            1 + 2 * fs)
        return nt_openssl_error(-EIO, "EC public key");
    if (given_pub.p && !der_is(&given_pub, point, 1 + 2 * fs))
        return -EBADMSG;

    if ((r = secret_new(key.left, &le)) < 0)
        return r;
    to_native(&key, secret_data(le));
    params[0] = OSSL_PARAM_construct_utf8_string(
        OSSL_PKEY_PARAM_GROUP_NAME, (char *)(type == VAULT_KEY_EC_P256 ? "P-256" : "P-384"), 0);
    params[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, point, 1 + 2 * fs);
    params[2] = OSSL_PARAM_construct_BN(OSSL_PKEY_PARAM_PRIV_KEY, secret_data(le), key.left);
    params[3] = OSSL_PARAM_construct_end();
    return fromdata("EC", params, ret);
}

static int parse_ed25519(Der *priv, EVP_PKEY **ret) {
    OSSL_PARAM params[2];
    Der key;
    if (der_read(priv, TAG_OCTET_STRING, &key) < 0 || priv->left != 0 || key.left != 32)
        return -EBADMSG;
    params[0] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PRIV_KEY, (void *)key.p, 32);
    params[1] = OSSL_PARAM_construct_end();
    return fromdata("ED25519", params, ret);
}

static int parse_rsa(Der *priv, size_t total, EVP_PKEY **ret) {
    static const char *const names[8] = {
        OSSL_PKEY_PARAM_RSA_N,         OSSL_PKEY_PARAM_RSA_E,
        OSSL_PKEY_PARAM_RSA_D,         OSSL_PKEY_PARAM_RSA_FACTOR1,
        OSSL_PKEY_PARAM_RSA_FACTOR2,   OSSL_PKEY_PARAM_RSA_EXPONENT1,
        OSSL_PKEY_PARAM_RSA_EXPONENT2, OSSL_PKEY_PARAM_RSA_COEFFICIENT1,
    };
    _cleanup_(secret_freep) Secret *le = NULL;
    OSSL_PARAM params[9];
    Der seq;
    unsigned version;
    size_t off = 0;
    int r;

    if (der_read(priv, TAG_SEQUENCE, &seq) < 0 || priv->left != 0)
        return -EBADMSG;
    if (der_small_int(&seq, &version) < 0 || version != 0)
        return -EBADMSG; /* version 1 = multi-prime: refused */
    if ((r = secret_new(total, &le)) < 0)
        return r;
    for (size_t i = 0; i < 8; i++) {
        Der v;
        if (der_uint(&seq, &v) < 0 || off + v.left > total)
            return -EBADMSG;
        to_native(&v, secret_data(le) + off);
        params[i] = OSSL_PARAM_construct_BN(names[i], secret_data(le) + off, v.left);
        off += v.left;
    }
    if (seq.left != 0)
        return -EBADMSG;
    params[8] = OSSL_PARAM_construct_end();
    return fromdata("RSA", params, ret);
}

int pkcs8_parse_private_key(VaultKeyType type, const uint8_t *der, size_t len, EVP_PKEY **ret) {
    Der in = {.p = der, .left = len}, pki, alg, oid, priv;
    unsigned version;

    if (!der || !ret)
        return -EBADMSG;
    if (der_read(&in, TAG_SEQUENCE, &pki) < 0 || in.left != 0)
        return -EBADMSG;
    if (der_small_int(&pki, &version) < 0 || version > 1)
        return -EBADMSG;
    if (der_read(&pki, TAG_SEQUENCE, &alg) < 0 || der_read(&alg, TAG_OID, &oid) < 0)
        return -EBADMSG;
    if (der_read(&pki, TAG_OCTET_STRING, &priv) < 0)
        return -EBADMSG;
    if (der_peek(&pki, TAG_CTX0)) {
        Der attrs;
        if (der_read(&pki, TAG_CTX0, &attrs) < 0)
            return -EBADMSG;
    }
    if (der_peek(&pki, TAG_CTX1_PRIM)) {
        Der pub;
        if (version != 1 || der_read(&pki, TAG_CTX1_PRIM, &pub) < 0)
            return -EBADMSG;
    }
    if (pki.left != 0)
        return -EBADMSG;

    switch (type) {
    case VAULT_KEY_EC_P256:
    case VAULT_KEY_EC_P384: {
        Der curve;
        const uint8_t *want = type == VAULT_KEY_EC_P256 ? oid_p256 : oid_p384;
        size_t want_len = type == VAULT_KEY_EC_P256 ? sizeof oid_p256 : sizeof oid_p384;
        if (!der_is(&oid, oid_ec, sizeof oid_ec) || der_read(&alg, TAG_OID, &curve) < 0 ||
            alg.left != 0 || !der_is(&curve, want, want_len))
            return -EBADMSG;
        return parse_ec(type, &priv, ret);
    }
    case VAULT_KEY_ED25519:
        if (!der_is(&oid, oid_ed25519, sizeof oid_ed25519) || alg.left != 0)
            return -EBADMSG;
        return parse_ed25519(&priv, ret);
    case VAULT_KEY_RSA2048:
    case VAULT_KEY_RSA3072:
    case VAULT_KEY_RSA4096:
        if (!der_is(&oid, oid_rsa, sizeof oid_rsa))
            return -EBADMSG;
        if (alg.left != 0) {
            Der null;
            if (der_read(&alg, TAG_NULL, &null) < 0 || null.left != 0 || alg.left != 0)
                return -EBADMSG;
        }
        return parse_rsa(&priv, len, ret);
    default:
        return -EBADMSG;
    }
}
