/* SPDX-License-Identifier: Apache-2.0 */
/*
 * SEV-SNP ID blocks and ID_AUTH_INFO (layout in idblock.h). Every ECDSA operation goes through
 * OpenSSL; this file only converts between OpenSSL's big-endian integers / DER signatures and
 * the firmware's little-endian 72-byte fields.
 */
#include <errno.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/param_build.h>
#include <stdio.h>
#include <string.h>

#include "core/macro.h"
#include "core/openssl-util.h"
#include "snp/idblock.h"

#define COMPONENT 72u /* r, s, qx, qy fields: 576 bits */
#define P384_BYTES 48u

static void put_le32(uint8_t *p, uint32_t v) {
    for (unsigned i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_le64(uint8_t *p, uint64_t v) {
    for (unsigned i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_le64(const uint8_t *p) {
    return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

/* Big-endian n bytes -> little-endian, zero-padded to COMPONENT bytes. */
static void be_to_le72(const uint8_t *be, size_t n, uint8_t out[COMPONENT]) {
    memset(out, 0, COMPONENT);
    for (size_t i = 0; i < n; i++)
        out[i] = be[n - 1 - i];
}

void snp_id_block_serialize(const SnpIdBlock *b, uint8_t out[SNP_ID_BLOCK_SIZE]) {
    memcpy(out, b->ld, 48);
    memcpy(out + 0x30, b->family_id, 16);
    memcpy(out + 0x40, b->image_id, 16);
    put_le32(out + 0x50, b->version);
    put_le32(out + 0x54, b->guest_svn);
    put_le64(out + 0x58, b->policy);
}

void snp_id_block_parse(const uint8_t in[SNP_ID_BLOCK_SIZE], SnpIdBlock *ret) {
    memcpy(ret->ld, in, 48);
    memcpy(ret->family_id, in + 0x30, 16);
    memcpy(ret->image_id, in + 0x40, 16);
    ret->version = get_le32(in + 0x50);
    ret->guest_svn = get_le32(in + 0x54);
    ret->policy = get_le64(in + 0x58);
}

static bool is_p384(EVP_PKEY *pkey) {
    char group[64];
    size_t len = 0;

    if (!pkey || EVP_PKEY_get_base_id(pkey) != EVP_PKEY_EC)
        return false;
    if (EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
                                       &len) != 1)
        return false;
    return streq(group, "secp384r1") || streq(group, "P-384");
}

int snp_id_sign_pkey(void *userdata, const uint8_t *msg, size_t len, uint8_t ret_rs[96]) {
    EVP_PKEY *key = userdata;
    _cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *md = EVP_MD_CTX_new();
    _cleanup_(ECDSA_SIG_freep) ECDSA_SIG *sig = NULL;
    uint8_t der[160];
    size_t der_len = sizeof der;
    const uint8_t *p = der;
    const BIGNUM *r, *s;

    if (!md)
        return -ENOMEM;
    if (!is_p384(key))
        return -EOPNOTSUPP;
    if (EVP_DigestSignInit_ex(md, NULL, "SHA384", NULL, NULL, key, NULL) != 1 ||
        EVP_DigestSign(md, der, &der_len, msg, len) != 1)
        return nt_openssl_error(-EIO, "ID block signature");
    sig = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
    if (!sig)
        return nt_openssl_error(-EIO, "d2i_ECDSA_SIG");
    ECDSA_SIG_get0(sig, &r, &s);
    if (BN_bn2binpad(r, ret_rs, P384_BYTES) < 0 || BN_bn2binpad(s, ret_rs + 48, P384_BYTES) < 0)
        return -EIO;
    return 0;
}

int snp_id_pubkey_encode(EVP_PKEY *pub, uint8_t out[SNP_ID_PUBKEY_SIZE]) {
    uint8_t point[1 + 2 * P384_BYTES];
    size_t len = 0;

    if (!is_p384(pub))
        return -EOPNOTSUPP;
    if (EVP_PKEY_get_octet_string_param(pub, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, point,
                                        sizeof point, &len) != 1)
        return nt_openssl_error(-EIO, "EC public key");
    /* OpenSSL's default point format is uncompressed: 04 | X | Y. */
    if (len != sizeof point || point[0] != 0x04)
        return -EIO;
    memset(out, 0, SNP_ID_PUBKEY_SIZE);
    put_le32(out, SNP_ID_CURVE_P384);
    be_to_le72(point + 1, P384_BYTES, out + 4);
    be_to_le72(point + 1 + P384_BYTES, P384_BYTES, out + 4 + COMPONENT);
    return 0;
}

/* A little-endian 72-byte field as a big-endian 48-byte integer; false if it does not fit. */
static bool le72_to_be48(const uint8_t in[COMPONENT], uint8_t out[P384_BYTES]) {
    for (size_t i = P384_BYTES; i < COMPONENT; i++)
        if (in[i] != 0)
            return false;
    for (size_t i = 0; i < P384_BYTES; i++)
        out[i] = in[P384_BYTES - 1 - i];
    return true;
}

int snp_id_pubkey_decode(const uint8_t in[SNP_ID_PUBKEY_SIZE], EVP_PKEY **ret) {
    _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *ctx = NULL;
    _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *check = NULL;
    uint8_t point[1 + 2 * P384_BYTES];
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM params[3];

    if (get_le32(in) != SNP_ID_CURVE_P384)
        return -EOPNOTSUPP;
    point[0] = 0x04;
    if (!le72_to_be48(in + 4, point + 1) || !le72_to_be48(in + 4 + COMPONENT, point + 49))
        return -EBADMSG;
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)"P-384", 0);
    params[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, point, sizeof point);
    params[2] = OSSL_PARAM_construct_end();
    ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    if (!ctx)
        return -ENOMEM;
    /* fromdata refuses a point that is not on the curve. */
    if (EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1) {
        (void)nt_openssl_error(-EBADMSG, "ID key point");
        return -EBADMSG;
    }
    check = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    if (!check || EVP_PKEY_public_check(check) != 1) {
        EVP_PKEY_free(pkey);
        (void)nt_openssl_error(-EBADMSG, "ID key check");
        return -EBADMSG;
    }
    *ret = pkey;
    return 0;
}

int snp_id_key_digest(const uint8_t pubkey[SNP_ID_PUBKEY_SIZE], uint8_t out[SNP_ID_DIGEST_SIZE]) {
    unsigned len = 0;
    if (EVP_Digest(pubkey, SNP_ID_PUBKEY_SIZE, out, &len, EVP_sha384(), NULL) != 1 ||
        len != SNP_ID_DIGEST_SIZE)
        return nt_openssl_error(-EIO, "SHA-384");
    return 0;
}

/* Signs msg and writes AMD's signature structure (R, S little-endian in 72-byte fields). */
static int sign_into(const SnpIdSigner *s, const uint8_t *msg, size_t len,
                     uint8_t out[SNP_ID_SIG_SIZE]) {
    uint8_t rs[96];
    int r = s->sign(s->userdata, msg, len, rs);
    if (r < 0)
        return r;
    memset(out, 0, SNP_ID_SIG_SIZE);
    be_to_le72(rs, P384_BYTES, out);
    be_to_le72(rs + P384_BYTES, P384_BYTES, out + COMPONENT);
    return 0;
}

/* Verifies AMD's signature structure over msg with pub (ECDSA P-384, SHA-384). Returns 1 valid,
 * 0 invalid, negative errno on an internal failure. */
static int verify_sig(EVP_PKEY *pub, const uint8_t *msg, size_t len,
                      const uint8_t sig[SNP_ID_SIG_SIZE]) {
    _cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *md = EVP_MD_CTX_new();
    _cleanup_(ECDSA_SIG_freep) ECDSA_SIG *es = ECDSA_SIG_new();
    uint8_t r_be[P384_BYTES], s_be[P384_BYTES];
    uint8_t *der = NULL;
    BIGNUM *r, *s;
    int der_len, v;

    if (!md || !es)
        return -ENOMEM;
    /* r and s are below the group order, so their upper 24 bytes are zero in a valid
     * signature. */
    if (!le72_to_be48(sig, r_be) || !le72_to_be48(sig + COMPONENT, s_be))
        return 0;
    r = BN_bin2bn(r_be, P384_BYTES, NULL);
    s = BN_bin2bn(s_be, P384_BYTES, NULL);
    if (!r || !s || ECDSA_SIG_set0(es, r, s) != 1) {
        BN_free(r);
        BN_free(s);
        return -ENOMEM;
    }
    der_len = i2d_ECDSA_SIG(es, &der);
    if (der_len <= 0)
        return nt_openssl_error(-EIO, "i2d_ECDSA_SIG");
    if (EVP_DigestVerifyInit_ex(md, NULL, "SHA384", NULL, NULL, pub, NULL) != 1) {
        OPENSSL_free(der);
        return nt_openssl_error(-EIO, "EVP_DigestVerifyInit");
    }
    v = EVP_DigestVerify(md, der, (size_t)der_len, msg, len);
    OPENSSL_free(der);
    if (v != 1)
        (void)nt_openssl_error(0, "ID block signature check");
    return v == 1;
}

int snp_id_auth_create(const uint8_t id_block[SNP_ID_BLOCK_SIZE], const SnpIdSigner *id,
                       const SnpIdSigner *author, uint8_t out[SNP_ID_AUTH_SIZE]) {
    _cleanup_free_ uint8_t *a = calloc(1, SNP_ID_AUTH_SIZE);
    int r;

    if (!id_block || !id || !id->sign || !out)
        return -EINVAL;
    if (!a)
        return -ENOMEM;
    put_le32(a + 0x000, SNP_ID_ALGO_ECDSA_P384_SHA384);
    r = snp_id_pubkey_encode(id->pub, a + SNP_ID_AUTH_OFF_ID_KEY);
    if (r < 0)
        return r;
    r = sign_into(id, id_block, SNP_ID_BLOCK_SIZE, a + SNP_ID_AUTH_OFF_ID_BLOCK_SIG);
    if (r < 0)
        return r;
    if (author) {
        if (!author->sign)
            return -EINVAL;
        put_le32(a + 0x004, SNP_ID_ALGO_ECDSA_P384_SHA384);
        r = snp_id_pubkey_encode(author->pub, a + SNP_ID_AUTH_OFF_AUTHOR_KEY);
        if (r < 0)
            return r;
        r = sign_into(author, a + SNP_ID_AUTH_OFF_ID_KEY, SNP_ID_PUBKEY_SIZE,
                      a + SNP_ID_AUTH_OFF_ID_KEY_SIG);
        if (r < 0)
            return r;
    }
    /* Each signature must verify with the key placed next to it: a signer that signed with
     * another key than the one it named (a vhsmd key rotated in between) is caught here. */
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *check = NULL;
    r = snp_id_pubkey_decode(a + SNP_ID_AUTH_OFF_ID_KEY, &check);
    if (r < 0)
        return r;
    r = verify_sig(check, id_block, SNP_ID_BLOCK_SIZE, a + SNP_ID_AUTH_OFF_ID_BLOCK_SIG);
    if (r <= 0)
        return r < 0 ? r : -EKEYREJECTED;
    if (author) {
        EVP_PKEY_free(TAKE_PTR(check));
        r = snp_id_pubkey_decode(a + SNP_ID_AUTH_OFF_AUTHOR_KEY, &check);
        if (r < 0)
            return r;
        r = verify_sig(check, a + SNP_ID_AUTH_OFF_ID_KEY, SNP_ID_PUBKEY_SIZE,
                       a + SNP_ID_AUTH_OFF_ID_KEY_SIG);
        if (r <= 0)
            return r < 0 ? r : -EKEYREJECTED;
    }
    memcpy(out, a, SNP_ID_AUTH_SIZE);
    return 0;
}

static int check_key(const uint8_t *auth, uint32_t algo_off, uint32_t key_off, const char *what,
                     EVP_PKEY **ret, char *err) {
    uint32_t algo = get_le32(auth + algo_off);
    int r;

    if (algo != SNP_ID_ALGO_ECDSA_P384_SHA384) {
        snprintf(err, SNP_ID_ERR_MAX, "%s algorithm %u is not ECDSA P-384 with SHA-384 (1)", what,
                 algo);
        return SNP_FW_INVALID_PARAM;
    }
    r = snp_id_pubkey_decode(auth + key_off, ret);
    if (r == -EOPNOTSUPP) {
        snprintf(err, SNP_ID_ERR_MAX, "%s curve %u is not P-384 (2)", what,
                 get_le32(auth + key_off));
        return SNP_FW_INVALID_PARAM;
    }
    if (r == -EBADMSG) {
        snprintf(err, SNP_ID_ERR_MAX, "%s is not a point on P-384", what);
        return SNP_FW_INVALID_PARAM;
    }
    return r;
}

int snp_id_launch_check(const uint8_t id_block[SNP_ID_BLOCK_SIZE],
                        const uint8_t id_auth[SNP_ID_AUTH_SIZE], bool author_key_en,
                        const uint8_t launch_digest[48], uint64_t policy, SnpIdLaunch *ret,
                        char *err) {
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *id_key = NULL, *author_key = NULL;
    SnpIdLaunch out = {.author_key_en = author_key_en};
    int r;

    err[0] = 0;
    snp_id_block_parse(id_block, &out.block);
    if (out.block.version != SNP_ID_BLOCK_VERSION) {
        snprintf(err, SNP_ID_ERR_MAX, "ID block version %u is not 1", out.block.version);
        return SNP_FW_INVALID_PARAM;
    }
    r = check_key(id_auth, 0x000, SNP_ID_AUTH_OFF_ID_KEY, "ID key", &id_key, err);
    if (r != 0)
        return r;
    r = verify_sig(id_key, id_block, SNP_ID_BLOCK_SIZE, id_auth + SNP_ID_AUTH_OFF_ID_BLOCK_SIG);
    if (r < 0)
        return r;
    if (r == 0) {
        snprintf(err, SNP_ID_ERR_MAX, "the ID block signature does not verify with the ID key");
        return SNP_FW_BAD_SIGNATURE;
    }
    if (author_key_en) {
        r = check_key(id_auth, 0x004, SNP_ID_AUTH_OFF_AUTHOR_KEY, "author key", &author_key, err);
        if (r != 0)
            return r;
        r = verify_sig(author_key, id_auth + SNP_ID_AUTH_OFF_ID_KEY, SNP_ID_PUBKEY_SIZE,
                       id_auth + SNP_ID_AUTH_OFF_ID_KEY_SIG);
        if (r < 0)
            return r;
        if (r == 0) {
            snprintf(err, SNP_ID_ERR_MAX,
                     "the ID key signature does not verify with the author key");
            return SNP_FW_BAD_SIGNATURE;
        }
    }
    if (CRYPTO_memcmp(out.block.ld, launch_digest, 48) != 0) {
        snprintf(err, SNP_ID_ERR_MAX,
                 "the ID block's launch digest is not this launch's measurement");
        return SNP_FW_BAD_MEASUREMENT;
    }
    if (out.block.policy != policy) {
        snprintf(err, SNP_ID_ERR_MAX, "the ID block's policy 0x%llx is not the guest policy 0x%llx",
                 (unsigned long long)out.block.policy, (unsigned long long)policy);
        return SNP_FW_POLICY_FAILURE;
    }
    r = snp_id_key_digest(id_auth + SNP_ID_AUTH_OFF_ID_KEY, out.id_key_digest);
    if (r >= 0 && author_key_en)
        r = snp_id_key_digest(id_auth + SNP_ID_AUTH_OFF_AUTHOR_KEY, out.author_key_digest);
    if (r < 0)
        return r;
    *ret = out;
    return SNP_FW_SUCCESS;
}

const char *snp_fw_status_to_string(int status) {
    switch (status) {
    case SNP_FW_SUCCESS:
        return "SUCCESS";
    case SNP_FW_POLICY_FAILURE:
        return "POLICY_FAILURE";
    case SNP_FW_BAD_SIGNATURE:
        return "BAD_SIGNATURE";
    case SNP_FW_BAD_MEASUREMENT:
        return "BAD_MEASUREMENT";
    case SNP_FW_UNSUPPORTED:
        return "UNSUPPORTED";
    case SNP_FW_INVALID_PARAM:
        return "INVALID_PARAM";
    default:
        return "UNKNOWN";
    }
}
