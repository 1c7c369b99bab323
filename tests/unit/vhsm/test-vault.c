/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Vault engine tests: generation and description of every key type, every operation checked
 * against OpenSSL directly (signatures verified with the exported public key, OAEP ciphertexts
 * made in the test, ECDH-derived keys recomputed in the test), envelope tamper checks, versions
 * and rotation, ACL decisions and the root rule, the attested policy, concurrent use and delete,
 * and OOM over the create+encrypt path.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <openssl/ecdsa.h>
#include <openssl/kdf.h>
#include <openssl/rsa.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "vhsm/transfer.h"
#include "vhsm/vault.h"
#include "vault-test-util.h"

static time_t fake_now = 1700000000;
static time_t fake_clock(void *u) {
    return fake_now;
}

static Vault *new_vault(void) {
    Vault *v = NULL;
    assert_int_equal(vault_new(&v), 0);
    return v;
}

static void gen(Vault *v, const char *name, VaultKeyType t) {
    VaultKeySpec spec = {.type = t};
    assert_int_equal(vault_key_generate(v, &alice, name, &spec), 0);
}

static EVP_PKEY *export_pkey(Vault *v, const char *name, uint32_t version) {
    _cleanup_free_ char *pem = NULL;
    assert_int_equal(vault_key_export_public(v, &alice, name, version, VAULT_PUB_PEM, &pem), 0);
    EVP_PKEY *k = pem_to_pkey(pem);
    assert_non_null(k);
    return k;
}

static void test_names_and_strings(void **state) {
    assert_true(vault_key_name_is_valid("app.key-1@x:y_z"));
    assert_false(vault_key_name_is_valid(""));
    assert_false(vault_key_name_is_valid(".hidden"));
    assert_false(vault_key_name_is_valid("-x"));
    assert_false(vault_key_name_is_valid("a/b")); /* "a" is not a namespace */
    assert_true(vault_key_name_is_valid("1000/b"));
    assert_true(vault_key_name_is_valid("0/b"));
    assert_true(vault_key_name_is_valid("kms/b"));
    assert_true(vault_key_name_is_valid("4294967294/b"));
    assert_false(vault_key_name_is_valid("4294967295/b")); /* (uid_t)-1 */
    assert_false(vault_key_name_is_valid("01000/b"));      /* not canonical */
    assert_false(vault_key_name_is_valid("1000/"));
    assert_false(vault_key_name_is_valid("/b"));
    assert_false(vault_key_name_is_valid("1000/a/b"));
    assert_false(vault_key_name_is_valid("1000/.b"));
    assert_false(vault_key_name_is_valid("a b"));
    for (int t = 0; t < _VAULT_KEY_TYPE_MAX; t++)
        assert_int_equal(vault_key_type_from_string(vault_key_type_to_string(t)), t);
    for (int a = 1; a < _VAULT_ALG_MAX; a++)
        assert_int_equal(vault_alg_from_string(vault_alg_to_string(a)), a);
    assert_int_equal(vault_key_type_from_string("aes128"), VAULT_KEY_AES128); /* hard-wrap */
    assert_int_equal(vault_key_type_from_string("aes512"), -EINVAL);
    assert_int_equal(vault_policy_kind_from_string("attested"), VAULT_POLICY_ATTESTED);
}

static void test_generate_describe_list(void **state) {
    _cleanup_(vault_freep) Vault *v = new_vault();
    json_auto_t *d = NULL, *l = NULL;
    VaultKeySpec spec = {.type = VAULT_KEY_EC_P256, .label = "signing key"};

    for (int t = 0; t < _VAULT_KEY_TYPE_MAX; t++) {
        char name[32];
        snprintf(name, sizeof name, "k-%s", vault_key_type_to_string(t));
        if (t == VAULT_KEY_RAW || t == VAULT_KEY_GENERIC_SECRET || vault_key_type_is_object(t)) {
            /* raw keys come only from KMS releases, data/cert/public objects from a value;
             * generic secrets are unwrapped or imported */
            VaultKeySpec raw = {.type = t};
            assert_int_equal(vault_key_generate(v, &alice, name, &raw), -EOPNOTSUPP);
            continue;
        }
        gen(v, name, t);
    }
    assert_int_equal(vault_key_count(v), _VAULT_KEY_TYPE_MAX - 5);
    assert_int_equal(vault_key_generate(v, &alice, "k-aes256", &spec), -EEXIST);
    assert_int_equal(vault_key_generate(v, &alice, "bad name", &spec), -EINVAL);
    spec.type = _VAULT_KEY_TYPE_MAX;
    assert_int_equal(vault_key_generate(v, &alice, "x", &spec), -EINVAL);
    spec = (VaultKeySpec){.type = VAULT_KEY_AES256, .policy = {VAULT_POLICY_ATTESTED, 0}};
    assert_int_equal(vault_key_generate(v, &alice, "x", &spec), -EINVAL);
    spec = (VaultKeySpec){.type = VAULT_KEY_AES256, .label = "bad\nlabel"};
    assert_int_equal(vault_key_generate(v, &alice, "x", &spec), -EINVAL);
    assert_int_equal(vault_key_count(v), _VAULT_KEY_TYPE_MAX - 5);

    spec = (VaultKeySpec){.type = VAULT_KEY_EC_P256, .label = "signing key"};
    assert_int_equal(vault_key_generate(v, &alice, "labelled", &spec), 0);
    assert_int_equal(vault_key_describe(v, &alice, "labelled", &d), 0);
    assert_string_equal(json_string_value(json_object_get(d, "name")), "1000/labelled");
    assert_string_equal(json_string_value(json_object_get(d, "type")), "ec-p256");
    assert_string_equal(json_string_value(json_object_get(d, "label")), "signing key");
    assert_string_equal(json_string_value(json_object_get(d, "origin")), "generated");
    assert_true(json_is_false(json_object_get(d, "extractable")));
    assert_int_equal(json_integer_value(json_object_get(d, "latest_version")), 1);
    assert_int_equal(json_array_size(json_object_get(d, "versions")), 1);
    assert_int_equal(
        json_integer_value(json_array_get(
            json_object_get(json_object_get(json_object_get(d, "acl"), "use"), "uids"), 0)),
        1000);
    {
        /* The fingerprint is the RFC 7638 thumbprint: recompute it from the exported JWK. */
        _cleanup_free_ char *jwk_s = NULL;
        json_auto_t *jwk = NULL;
        char *canon = NULL, *thp = NULL;
        uint8_t dg[32];
        assert_int_equal(vault_key_export_public(v, &alice, "labelled", 0, VAULT_PUB_JWK, &jwk_s),
                         0);
        jwk = json_loads(jwk_s, 0, NULL);
        assert_null(json_object_get(jwk, "d"));
        assert_true(asprintf(&canon, "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}",
                             json_string_value(json_object_get(jwk, "x")),
                             json_string_value(json_object_get(jwk, "y"))) > 0);
        SHA256((uint8_t *)canon, strlen(canon), dg);
        thp = b64u(dg, 32);
        assert_string_equal(json_string_value(json_object_get(jwk, "kid")), thp);
        assert_string_equal(json_string_value(json_object_get(d, "fingerprint")), thp);
        free(canon);
        free(thp);
    }
    {
        char *s = NULL;
        assert_int_equal(vault_key_export_public(v, &alice, "k-aes256", 0, VAULT_PUB_PEM, &s),
                         -EOPNOTSUPP);
        assert_int_equal(vault_key_export_public(v, &alice, "nope", 0, VAULT_PUB_PEM, &s), -ENOKEY);
        assert_int_equal(vault_key_export_public(v, &bob, "1000/labelled", 0, VAULT_PUB_PEM, &s),
                         -EPERM);
        assert_null(s);
    }

    assert_int_equal(vault_key_list(v, &alice, &l), 0);
    assert_int_equal(json_array_size(l), _VAULT_KEY_TYPE_MAX - 4);
    assert_string_equal(json_string_value(json_array_get(l, 0)), "1000/k-aes128"); /* sorted */
    json_decref(l);
    assert_int_equal(vault_key_list(v, &bob, &l), 0);
    assert_int_equal(json_array_size(l), 0);
    json_decref(l);
    assert_int_equal(vault_key_list(v, &root_peer, &l), 0); /* root administers all */
    assert_int_equal(json_array_size(l), _VAULT_KEY_TYPE_MAX - 4);
}

static void test_aes_gcm(void **state) {
    _cleanup_(vault_freep) Vault *v = new_vault();
    static const uint8_t msg[] = "attack at dawn", aad[] = "context";
    VaultOp op = {.alg = VAULT_ALG_AES256_GCM, .aad = aad, .aad_len = sizeof aad};
    _cleanup_free_ uint8_t *ct = NULL;
    _cleanup_(secret_freep) Secret *pt = NULL;
    size_t ct_len = 0;

    gen(v, "aes", VAULT_KEY_AES256);
    assert_int_equal(vault_encrypt(v, &alice, "aes", &op, msg, sizeof msg, &ct, &ct_len), 0);
    assert_int_equal(ct_len, 12 + 12 + 16 + sizeof msg);
    assert_memory_equal(ct, "NTVE\x01", 5);
    assert_int_equal(ct[5], VAULT_ALG_AES256_GCM);
    assert_int_equal(ct[11], 1); /* version 1 */
    assert_int_equal(vault_decrypt(v, &alice, "aes", &op, ct, ct_len, &pt), 0);
    assert_int_equal(secret_size(pt), sizeof msg);
    assert_memory_equal(secret_data(pt), msg, sizeof msg);
    pt = secret_free(pt);

    /* Every byte is authenticated: header, iv, tag, ciphertext. */
    for (size_t i = 0; i < ct_len; i++) {
        int r;
        ct[i] ^= 0x01;
        r = vault_decrypt(v, &alice, "aes", &op, ct, ct_len, &pt);
        assert_true(r == -EKEYREJECTED || r == -EBADMSG || r == -ENOKEY || r == -EOPNOTSUPP);
        assert_null(pt);
        ct[i] ^= 0x01;
    }
    op.aad_len--;
    assert_int_equal(vault_decrypt(v, &alice, "aes", &op, ct, ct_len, &pt), -EKEYREJECTED);
    op.aad_len++;
    assert_int_equal(vault_decrypt(v, &alice, "aes", &op, ct, 20, &pt), -EBADMSG);
    assert_int_equal(vault_decrypt(v, &bob, "1000/aes", &op, ct, ct_len, &pt), -EPERM);
    op.flags = VAULT_OP_RAW;
    assert_int_equal(vault_decrypt(v, &alice, "aes", &op, ct, ct_len, &pt), -EINVAL);
    op = (VaultOp){.alg = VAULT_ALG_ECDSA};
    assert_int_equal(vault_decrypt(v, &alice, "aes", &op, ct, ct_len, &pt), -EOPNOTSUPP);
    op = (VaultOp){.alg = VAULT_ALG_RSA_OAEP_SHA256};
    assert_int_equal(vault_decrypt(v, &alice, "aes", &op, ct, ct_len, &pt), -EBADMSG);
}

static void test_keywrap(void **state) {
    _cleanup_(vault_freep) Vault *v = new_vault();
    uint8_t data[32];
    VaultOp op = {.alg = VAULT_ALG_AES256_KW};
    gen(v, "kek", VAULT_KEY_AES256);
    RAND_bytes(data, sizeof data);
    for (int pad = 0; pad < 2; pad++) {
        _cleanup_free_ uint8_t *w = NULL;
        _cleanup_(secret_freep) Secret *u = NULL;
        size_t wl = 0, n = pad ? 13 : 32;
        op.alg = pad ? VAULT_ALG_AES256_KWP : VAULT_ALG_AES256_KW;
        assert_int_equal(vault_encrypt(v, &alice, "kek", &op, data, n, &w, &wl), 0);
        assert_int_equal(wl, 12 + (pad ? 24 : 40));
        assert_int_equal(vault_decrypt(v, &alice, "kek", &op, w, wl, &u), 0);
        assert_int_equal(secret_size(u), n);
        assert_memory_equal(secret_data(u), data, n);
        u = secret_free(u);
        w[wl - 1] ^= 1;
        assert_int_equal(vault_decrypt(v, &alice, "kek", &op, w, wl, &u), -EKEYREJECTED);
    }
    {
        uint8_t *w = NULL;
        size_t wl = 0;
        op.alg = VAULT_ALG_AES256_KW;
        assert_int_equal(vault_encrypt(v, &alice, "kek", &op, data, 12, &w, &wl), -EINVAL);
        assert_int_equal(vault_encrypt(v, &alice, "kek", &op, data, 8, &w, &wl), -EINVAL);
        op.alg = VAULT_ALG_AES256_KWP;
        assert_int_equal(vault_encrypt(v, &alice, "kek", &op, data, 0, &w, &wl), -EINVAL);
        assert_null(w);
    }
}

static void test_hmac(void **state) {
    _cleanup_(vault_freep) Vault *v = new_vault();
    static const uint8_t msg[] = "hello";
    VaultOp op = {.alg = VAULT_ALG_HMAC};
    for (int t = VAULT_KEY_HMAC_SHA256; t <= VAULT_KEY_HMAC_SHA384; t++) {
        _cleanup_free_ uint8_t *mac = NULL;
        size_t ml = 0;
        const char *name = t == VAULT_KEY_HMAC_SHA256 ? "h256" : "h384";
        gen(v, name, t);
        op.flags = 0;
        assert_int_equal(vault_sign(v, &alice, name, &op, msg, 5, &mac, &ml), 0);
        assert_int_equal(ml, 12 + (t == VAULT_KEY_HMAC_SHA256 ? 32 : 48));
        assert_int_equal(vault_verify(v, &alice, name, &op, msg, 5, mac, ml), 0);
        assert_int_equal(vault_verify(v, &alice, name, &op, msg, 4, mac, ml), -EKEYREJECTED);
        assert_int_equal(vault_verify(v, &alice, name, &op, msg, 5, mac, ml - 1), -EKEYREJECTED);
        mac[ml - 1] ^= 0x80;
        assert_int_equal(vault_verify(v, &alice, name, &op, msg, 5, mac, ml), -EKEYREJECTED);
        op.flags = VAULT_OP_PREHASHED;
        free(mac);
        mac = NULL;
        assert_int_equal(vault_sign(v, &alice, name, &op, msg, 5, &mac, &ml), -EOPNOTSUPP);
    }
}

/* Signs with the vault and verifies with OpenSSL (and the vault), message and digest modes. */
static void check_sign(Vault *v, const char *name, VaultAlg alg, const EVP_MD *md, int pad,
                       unsigned extra_flags) {
    static const uint8_t msg[] = "the quick brown fox";
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *pub = export_pkey(v, name, 0);
    uint8_t dg[EVP_MAX_MD_SIZE];
    unsigned dl = 0;

    if (md)
        EVP_Digest(msg, sizeof msg, dg, &dl, md, NULL);
    for (int prehash = 0; prehash < (md ? 2 : 1); prehash++) {
        VaultOp op = {.alg = alg,
                      .flags = VAULT_OP_RAW | extra_flags | (prehash ? VAULT_OP_PREHASHED : 0)};
        _cleanup_free_ uint8_t *sig = NULL, *env = NULL;
        _cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *c = EVP_MD_CTX_new();
        EVP_PKEY_CTX *pc = NULL;
        size_t sl = 0, el = 0;
        const uint8_t *in = prehash ? dg : msg;
        size_t in_len = prehash ? dl : sizeof msg;
        uint8_t *der = NULL;
        size_t der_len;

        assert_int_equal(vault_sign(v, &alice, name, &op, in, in_len, &sig, &sl), 0);
        der = sig;
        der_len = sl;
        if (extra_flags & VAULT_OP_SIG_RAW_RS) {
            size_t fs = sl / 2;
            ECDSA_SIG *es = ECDSA_SIG_new();
            assert_int_equal(sl, EVP_PKEY_get_bits(pub) == 256 ? 64 : 96);
            ECDSA_SIG_set0(es, BN_bin2bn(sig, (int)fs, NULL), BN_bin2bn(sig + fs, (int)fs, NULL));
            der = NULL;
            der_len = (size_t)i2d_ECDSA_SIG(es, &der);
            ECDSA_SIG_free(es);
        }
        assert_int_equal(EVP_DigestVerifyInit(c, &pc, md, NULL, pub), 1);
        if (pad == RSA_PKCS1_PSS_PADDING) {
            EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PSS_PADDING);
            /* The verifier insists on salt == digest length. */
            EVP_PKEY_CTX_set_rsa_pss_saltlen(pc, EVP_MD_get_size(md));
            EVP_PKEY_CTX_set_rsa_mgf1_md(pc, md);
        } else if (pad)
            EVP_PKEY_CTX_set_rsa_padding(pc, pad);
        assert_int_equal(EVP_DigestVerify(c, der, der_len, msg, sizeof msg), 1);
        if (der != sig)
            OPENSSL_free(der);

        assert_int_equal(vault_verify(v, &alice, name, &op, in, in_len, sig, sl), 0);
        sig[sl / 2] ^= 0x04;
        assert_int_equal(vault_verify(v, &alice, name, &op, in, in_len, sig, sl), -EKEYREJECTED);

        /* Envelope form names version 1 and verifies the same way. */
        op.flags &= ~VAULT_OP_RAW;
        assert_int_equal(vault_sign(v, &alice, name, &op, in, in_len, &env, &el), 0);
        assert_memory_equal(env, "NTVE", 4);
        assert_int_equal(env[11], 1);
        assert_int_equal(vault_verify(v, &alice, name, &op, in, in_len, env, el), 0);
        {
            uint8_t other[EVP_MAX_MD_SIZE + sizeof msg];
            memcpy(other, in, in_len);
            other[0] ^= 1;
            assert_int_equal(vault_verify(v, &alice, name, &op, other, in_len, env, el),
                             -EKEYREJECTED);
        }
        {
            char full[64];
            (void)snprintf(full, sizeof full, "1000/%s", name);
            assert_int_equal(vault_verify(v, &bob, full, &op, in, in_len, env, el), -EPERM);
        }
    }
}

static void test_signatures(void **state) {
    _cleanup_(vault_freep) Vault *v = new_vault();
    gen(v, "p256", VAULT_KEY_EC_P256);
    gen(v, "p384", VAULT_KEY_EC_P384);
    gen(v, "ed", VAULT_KEY_ED25519);
    gen(v, "rsa", VAULT_KEY_RSA2048);
    check_sign(v, "p256", VAULT_ALG_ECDSA, EVP_sha256(), 0, 0);
    check_sign(v, "p256", VAULT_ALG_ECDSA, EVP_sha256(), 0, VAULT_OP_SIG_RAW_RS);
    check_sign(v, "p384", VAULT_ALG_ECDSA, EVP_sha384(), 0, 0);
    check_sign(v, "p384", VAULT_ALG_ECDSA, EVP_sha384(), 0, VAULT_OP_SIG_RAW_RS);
    check_sign(v, "ed", VAULT_ALG_ED25519, NULL, 0, 0);
    check_sign(v, "rsa", VAULT_ALG_RSA_PSS_SHA256, EVP_sha256(), RSA_PKCS1_PSS_PADDING, 0);
    check_sign(v, "rsa", VAULT_ALG_RSA_PSS_SHA384, EVP_sha384(), RSA_PKCS1_PSS_PADDING, 0);
    check_sign(v, "rsa", VAULT_ALG_RSA_PKCS1_SHA256, EVP_sha256(), RSA_PKCS1_PADDING, 0);
    check_sign(v, "rsa", VAULT_ALG_RSA_PKCS1_SHA384, EVP_sha384(), RSA_PKCS1_PADDING, 0);
    {
        VaultOp op = {.alg = VAULT_ALG_ED25519, .flags = VAULT_OP_PREHASHED};
        uint8_t dg[32] = {0}, *sig = NULL;
        size_t sl = 0;
        assert_int_equal(vault_sign(v, &alice, "ed", &op, dg, 32, &sig, &sl), -EOPNOTSUPP);
        op = (VaultOp){.alg = VAULT_ALG_ECDSA, .flags = VAULT_OP_PREHASHED};
        assert_int_equal(vault_sign(v, &alice, "p256", &op, dg, 31, &sig, &sl), -EINVAL);
        op = (VaultOp){.alg = VAULT_ALG_RSA_PSS_SHA256};
        assert_int_equal(vault_sign(v, &alice, "p256", &op, dg, 32, &sig, &sl), -EOPNOTSUPP);
        op = (VaultOp){.alg = VAULT_ALG_ECDSA, .flags = VAULT_OP_SIG_RAW_RS | VAULT_OP_RAW};
        assert_int_equal(vault_verify(v, &alice, "p256", &op, dg, 32, dg, 32), -EKEYREJECTED);
        op = (VaultOp){.alg = VAULT_ALG_AES256_GCM};
        assert_int_equal(vault_sign(v, &alice, "p256", &op, dg, 32, &sig, &sl), -EOPNOTSUPP);
        assert_null(sig);
    }
}

static void test_rsa_oaep(void **state) {
    _cleanup_(vault_freep) Vault *v = new_vault();
    static const uint8_t msg[] = "a data encryption key 0123456789";
    gen(v, "rsa", VAULT_KEY_RSA2048);
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *pub = export_pkey(v, "rsa", 0);
    const EVP_MD *mds[2] = {EVP_sha256(), EVP_sha1()};
    const VaultAlg algs[2] = {VAULT_ALG_RSA_OAEP_SHA256, VAULT_ALG_RSA_OAEP_SHA1};

    for (int i = 0; i < 2; i++) {
        _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, pub, NULL);
        _cleanup_(secret_freep) Secret *pt = NULL;
        _cleanup_free_ uint8_t *ct2 = NULL;
        uint8_t ct[256];
        size_t cl = sizeof ct, cl2 = 0;
        VaultOp op = {.alg = algs[i], .flags = VAULT_OP_RAW};
        assert_int_equal(EVP_PKEY_encrypt_init(c), 1);
        EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_OAEP_PADDING);
        EVP_PKEY_CTX_set_rsa_oaep_md(c, mds[i]);
        EVP_PKEY_CTX_set_rsa_mgf1_md(c, mds[i]);
        assert_int_equal(EVP_PKEY_encrypt(c, ct, &cl, msg, sizeof msg), 1);
        assert_int_equal(vault_decrypt(v, &alice, "rsa", &op, ct, cl, &pt), 0);
        assert_int_equal(secret_size(pt), sizeof msg);
        assert_memory_equal(secret_data(pt), msg, sizeof msg);
        pt = secret_free(pt);
        /* Wrong digest: rejected. */
        op.alg = algs[1 - i];
        assert_int_equal(vault_decrypt(v, &alice, "rsa", &op, ct, cl, &pt), -EKEYREJECTED);
        op.alg = algs[i];
        ct[10] ^= 1;
        assert_int_equal(vault_decrypt(v, &alice, "rsa", &op, ct, cl, &pt), -EKEYREJECTED);
        assert_int_equal(vault_decrypt(v, &alice, "rsa", &op, ct, cl - 1, &pt), -EBADMSG);
        /* Vault encryption (public key) in the envelope, decrypted by the vault. */
        op.flags = 0;
        assert_int_equal(vault_encrypt(v, &alice, "rsa", &op, msg, sizeof msg, &ct2, &cl2), 0);
        assert_int_equal(cl2, 12 + 256);
        assert_int_equal(vault_decrypt(v, &alice, "rsa", &op, ct2, cl2, &pt), 0);
        assert_memory_equal(secret_data(pt), msg, sizeof msg);
    }
    {
        uint8_t big[300] = {0}, *ct = NULL;
        size_t cl = 0;
        VaultOp op = {.alg = VAULT_ALG_RSA_OAEP_SHA256};
        assert_int_equal(vault_encrypt(v, &alice, "rsa", &op, big, sizeof big, &ct, &cl), -EINVAL);
    }
}

static void test_ecdh_derive(void **state) {
    _cleanup_(vault_freep) Vault *v = new_vault();
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *mine = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *other = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *vpub = NULL;
    _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *c = NULL;
    _cleanup_(EVP_KDF_CTX_freep) EVP_KDF_CTX *kc = NULL;
    _cleanup_free_ uint8_t *der = NULL, *w = NULL;
    uint8_t *p, z[48], key[32], info[64], expect[40];
    size_t zl = sizeof z, wl = 0;
    int n, fin;
    VaultKeySpec spec = {.type = VAULT_KEY_AES256};
    static const uint8_t data[16] = "0123456789abcdef";
    VaultOp op = {.alg = VAULT_ALG_AES256_KW, .flags = VAULT_OP_RAW};

    gen(v, "ecdh", VAULT_KEY_EC_P384);
    n = i2d_PUBKEY(mine, NULL);
    der = malloc((size_t)n);
    p = der;
    i2d_PUBKEY(mine, &p);
    assert_int_equal(vault_key_derive_ecdh(v, &alice, "ecdh", der, (size_t)n,
                                           (const uint8_t *)"app", 3, "derived", &spec),
                     0);
    /* Recompute in the test: ECDH with the vault's public key, HKDF-SHA256. */
    vpub = export_pkey(v, "ecdh", 0);
    c = EVP_PKEY_CTX_new_from_pkey(NULL, mine, NULL);
    assert_int_equal(EVP_PKEY_derive_init(c), 1);
    assert_int_equal(EVP_PKEY_derive_set_peer(c, vpub), 1);
    assert_int_equal(EVP_PKEY_derive(c, z, &zl), 1);
    memcpy(info, "nitride-vault-ecdhapp", 21);
    {
        EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
        OSSL_PARAM ps[] = {OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0),
                           OSSL_PARAM_construct_octet_string("key", z, zl),
                           OSSL_PARAM_construct_octet_string("info", info, 21),
                           OSSL_PARAM_construct_end()};
        kc = EVP_KDF_CTX_new(kdf);
        EVP_KDF_free(kdf);
        assert_int_equal(EVP_KDF_derive(kc, key, 32, ps), 1);
    }
    /* The derived key wraps exactly as the recomputed one. */
    assert_int_equal(vault_encrypt(v, &alice, "derived", &op, data, 16, &w, &wl), 0);
    {
        EVP_CIPHER_CTX *cc = EVP_CIPHER_CTX_new();
        EVP_CIPHER_CTX_set_flags(cc, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
        EVP_EncryptInit_ex(cc, EVP_aes_256_wrap(), NULL, key, NULL);
        EVP_EncryptUpdate(cc, expect, &n, data, 16);
        EVP_EncryptFinal_ex(cc, expect + n, &fin);
        EVP_CIPHER_CTX_free(cc);
    }
    assert_int_equal(wl, 24);
    assert_memory_equal(w, expect, 24);
    {
        json_auto_t *d = NULL;
        assert_int_equal(vault_key_describe(v, &alice, "derived", &d), 0);
        assert_string_equal(json_string_value(json_object_get(d, "origin")), "derived");
    }
    /* Wrong curve, garbage, wrong source type, existing name: nothing stored. */
    free(der);
    n = i2d_PUBKEY(other, NULL);
    der = malloc((size_t)n);
    p = der;
    i2d_PUBKEY(other, &p);
    assert_int_equal(vault_key_derive_ecdh(v, &alice, "ecdh", der, (size_t)n, NULL, 0, "d2", &spec),
                     -EBADMSG);
    assert_int_equal(vault_key_derive_ecdh(v, &alice, "ecdh", der, 10, NULL, 0, "d2", &spec),
                     -EBADMSG);
    gen(v, "rsa", VAULT_KEY_ED25519);
    assert_int_equal(vault_key_derive_ecdh(v, &alice, "rsa", der, (size_t)n, NULL, 0, "d2", &spec),
                     -EOPNOTSUPP);
    assert_int_equal(
        vault_key_derive_ecdh(v, &bob, "1000/ecdh", der, (size_t)n, NULL, 0, "d2", &spec), -EPERM);
    spec.type = VAULT_KEY_HMAC_SHA256;
    assert_int_equal(vault_key_derive_ecdh(v, &alice, "ecdh", der, (size_t)n, NULL, 0, "d2", &spec),
                     -EINVAL);
    assert_int_equal(vault_key_count(v), 3);
}

static void test_rotation_versions(void **state) {
    _cleanup_(vault_freep) Vault *v = new_vault();
    _cleanup_free_ uint8_t *c1 = NULL, *c2 = NULL, *s1 = NULL;
    _cleanup_(secret_freep) Secret *pt = NULL;
    size_t l1 = 0, l2 = 0, sl = 0;
    uint32_t ver = 0;
    VaultOp op = {.alg = VAULT_ALG_AES256_GCM}, sop = {.alg = VAULT_ALG_ECDSA};
    json_auto_t *d = NULL;

    gen(v, "k", VAULT_KEY_AES256);
    gen(v, "s", VAULT_KEY_EC_P256);
    assert_int_equal(vault_encrypt(v, &alice, "k", &op, (const uint8_t *)"v1", 2, &c1, &l1), 0);
    assert_int_equal(vault_sign(v, &alice, "s", &sop, (const uint8_t *)"m", 1, &s1, &sl), 0);
    assert_int_equal(vault_key_rotate(v, &alice, "k", &ver), 0);
    assert_int_equal(ver, 2);
    assert_int_equal(vault_key_rotate(v, &alice, "s", &ver), 0);
    assert_int_equal(vault_key_rotate(v, &bob, "1000/k", &ver), -EPERM);
    assert_int_equal(vault_key_rotate(v, &alice, "nope", &ver), -ENOKEY);
    assert_int_equal(vault_encrypt(v, &alice, "k", &op, (const uint8_t *)"v2", 2, &c2, &l2), 0);
    assert_int_equal(c2[11], 2);
    assert_int_equal(vault_decrypt(v, &alice, "k", &op, c1, l1, &pt), 0);
    assert_memory_equal(secret_data(pt), "v1", 2);
    pt = secret_free(pt);
    assert_int_equal(vault_decrypt(v, &alice, "k", &op, c2, l2, &pt), 0);
    pt = secret_free(pt);
    /* A ciphertext relabelled as version 2 does not decrypt (the header is AAD and the key
     * differs). */
    c1[11] = 2;
    assert_int_equal(vault_decrypt(v, &alice, "k", &op, c1, l1, &pt), -EKEYREJECTED);
    c1[11] = 1;
    c1[11] = 9;
    assert_int_equal(vault_decrypt(v, &alice, "k", &op, c1, l1, &pt), -ENOKEY);
    c1[11] = 1;
    /* Old signatures still verify; both public versions are exportable and differ. */
    assert_int_equal(vault_verify(v, &alice, "s", &sop, (const uint8_t *)"m", 1, s1, sl), 0);
    {
        _cleanup_free_ char *a = NULL, *b = NULL;
        assert_int_equal(vault_key_export_public(v, &alice, "s", 1, VAULT_PUB_PEM, &a), 0);
        assert_int_equal(vault_key_export_public(v, &alice, "s", 2, VAULT_PUB_PEM, &b), 0);
        assert_string_not_equal(a, b);
    }

    /* Retire version 1. */
    assert_int_equal(vault_key_set_min_version(v, &bob, "1000/k", 2), -EPERM);
    assert_int_equal(vault_key_set_min_version(v, &alice, "k", 3), -EINVAL);
    assert_int_equal(vault_key_set_min_version(v, &alice, "k", 2), 0);
    assert_int_equal(vault_key_set_min_version(v, &alice, "k", 1), -EINVAL);
    /* Finding 7: a retired version says so (status "retired"), not "not found". */
    assert_int_equal(vault_decrypt(v, &alice, "k", &op, c1, l1, &pt), -EKEYREVOKED);
    assert_int_equal(vault_decrypt(v, &alice, "k", &op, c2, l2, &pt), 0);
    assert_int_equal(vault_key_set_min_version(v, &alice, "s", 2), 0);
    assert_int_equal(vault_verify(v, &alice, "s", &sop, (const uint8_t *)"m", 1, s1, sl),
                     -EKEYREVOKED);
    {
        char *a = NULL;
        assert_int_equal(vault_key_export_public(v, &alice, "s", 1, VAULT_PUB_PEM, &a),
                         -EKEYREVOKED);
    }
    assert_int_equal(vault_key_describe(v, &alice, "k", &d), 0);
    assert_int_equal(json_integer_value(json_object_get(d, "min_version")), 2);
    assert_int_equal(json_integer_value(json_object_get(d, "latest_version")), 2);
    assert_int_equal(json_array_size(json_object_get(d, "versions")), 1);
}

static void test_acl(void **state) {
    _cleanup_(vault_freep) Vault *v = new_vault();
    _cleanup_free_ uint8_t *ct = NULL;
    size_t cl = 0;
    VaultOp op = {.alg = VAULT_ALG_AES256_GCM};
    VaultAcl acl = {0};
    VaultPeer svc = {.uid = 2000, .gid = 2000, .cgroup = "/system.slice/app.service"};
    VaultPeer svc_child = {.uid = 2001, .gid = 5, .cgroup = "/system.slice/app.service/sub"};
    VaultPeer svc_lookalike = {.uid = 2002, .gid = 5, .cgroup = "/system.slice/app.servicex"};
    VaultPeer grp = {.uid = 3000, .gid = 77};
    VaultPeer nocg = {.uid = 3001, .gid = 1, .cgroup = NULL};

    gen(v, "k", VAULT_KEY_AES256);
    /* Default: the creator only; root administers but does not use. */
    assert_true(vault_acl_check(&(VaultAcl){0}, &root_peer, VAULT_RIGHT_ADMIN));
    assert_false(vault_acl_check(&(VaultAcl){0}, &root_peer, VAULT_RIGHT_USE));
    assert_int_equal(vault_encrypt(v, &root_peer, "1000/k", &op, (const uint8_t *)"x", 1, &ct, &cl),
                     -EPERM);
    assert_int_equal(vault_encrypt(v, &bob, "1000/k", &op, (const uint8_t *)"x", 1, &ct, &cl),
                     -EPERM);
    assert_int_equal(vault_key_delete(v, &bob, "1000/k"), -EPERM);
    assert_int_equal(vault_key_rotate(v, &root_peer, "1000/k", NULL), 0);

    /* Root recovers: it sets an ACL that lists itself, a visible persisted action. */
    assert_int_equal(vault_acl_list_add_uid(&acl.use, 0), 0);
    assert_int_equal(vault_acl_list_add_gid(&acl.use, 77), 0);
    assert_int_equal(vault_acl_list_add_cgroup(&acl.use, "/system.slice/app.service/"), 0);
    assert_int_equal(vault_acl_list_add_cgroup(&acl.use, "relative"), -EINVAL);
    assert_int_equal(vault_acl_list_add_cgroup(&acl.use, "/a/../b"), -EINVAL);
    assert_int_equal(vault_acl_list_add_uid(&acl.admin, 1001), 0);
    assert_int_equal(vault_key_set_acl(v, &bob, "1000/k", &acl), -EPERM);
    assert_int_equal(vault_key_set_acl(v, &root_peer, "1000/k", &acl), 0);
    assert_int_equal(vault_encrypt(v, &root_peer, "1000/k", &op, (const uint8_t *)"x", 1, &ct, &cl),
                     0);
    free(ct);
    ct = NULL;
    assert_true(vault_acl_check(&acl, &svc, VAULT_RIGHT_USE));
    assert_true(vault_acl_check(&acl, &svc_child, VAULT_RIGHT_USE));
    assert_false(vault_acl_check(&acl, &svc_lookalike, VAULT_RIGHT_USE));
    assert_true(vault_acl_check(&acl, &grp, VAULT_RIGHT_USE));
    assert_false(vault_acl_check(&acl, &grp, VAULT_RIGHT_ADMIN));
    { /* supplementary groups count like the primary gid */
        static const gid_t in[] = {10, 77, 99}, out[] = {10, 99};
        VaultPeer supp = {.uid = 3002, .gid = 3002, .groups = in, .n_groups = 3};
        VaultPeer other = {.uid = 3003, .gid = 3003, .groups = out, .n_groups = 2};
        assert_true(vault_acl_check(&acl, &supp, VAULT_RIGHT_USE));
        assert_false(vault_acl_check(&acl, &supp, VAULT_RIGHT_ADMIN));
        assert_false(vault_acl_check(&acl, &other, VAULT_RIGHT_USE));
    }
    assert_false(vault_acl_check(&acl, &nocg, VAULT_RIGHT_USE));
    assert_int_equal(vault_encrypt(v, &svc_child, "1000/k", &op, (const uint8_t *)"x", 1, &ct, &cl),
                     0);
    /* alice (the creator) lost both rights; bob administers now. */
    assert_int_equal(vault_key_rotate(v, &alice, "k", NULL), -EPERM);
    assert_int_equal(vault_key_rotate(v, &bob, "1000/k", NULL), 0);
    {
        json_auto_t *j = vault_acl_to_json(&acl);
        VaultAcl back = {0};
        json_auto_t *j2 = NULL;
        assert_int_equal(vault_acl_from_json(j, &back), 0);
        j2 = vault_acl_to_json(&back);
        assert_true(json_equal(j, j2));
        vault_acl_done(&back);
        json_auto_t *bad = json_pack("{s:{s:[i]}}", "use", "uids", -1);
        assert_int_equal(vault_acl_from_json(bad, &back), -EBADMSG);
        json_auto_t *bad2 = json_pack("{s:{}}", "owner");
        assert_int_equal(vault_acl_from_json(bad2, &back), -EBADMSG);
    }
    for (int i = 0; i < VAULT_ACL_MAX_ENTRIES - 1; i++)
        assert_int_equal(vault_acl_list_add_uid(&acl.use, (uid_t)(5000 + i)), 0);
    assert_int_equal(vault_acl_list_add_uid(&acl.use, 9999), -E2BIG);
    vault_acl_done(&acl);
    assert_int_equal(vault_key_delete(v, &root_peer, "1000/k"), 0);
    assert_int_equal(vault_key_count(v), 0);
    assert_int_equal(vault_key_delete(v, &root_peer, "1000/k"), -ENOKEY);
}

static void test_attested_policy(void **state) {
    _cleanup_(vault_freep) Vault *v = new_vault();
    _cleanup_free_ uint8_t *sig = NULL;
    _cleanup_free_ char *pem = NULL;
    size_t sl = 0;
    VaultKeySpec spec = {.type = VAULT_KEY_EC_P256, .policy = {VAULT_POLICY_ATTESTED, 300}};
    VaultOp op = {.alg = VAULT_ALG_ECDSA};

    vault_set_clock(v, fake_clock, NULL);
    assert_int_equal(vault_key_generate(v, &alice, "att", &spec), 0);
    assert_int_equal(vault_sign(v, &alice, "att", &op, (const uint8_t *)"m", 1, &sig, &sl),
                     -EKEYEXPIRED);
    vault_set_attestation(v, fake_now - 10, 0);
    assert_int_equal(vault_sign(v, &alice, "att", &op, (const uint8_t *)"m", 1, &sig, &sl), 0);
    fake_now += 291; /* 301 s old */
    assert_int_equal(vault_verify(v, &alice, "att", &op, (const uint8_t *)"m", 1, sig, sl), 0);
    free(sig);
    sig = NULL;
    assert_int_equal(vault_sign(v, &alice, "att", &op, (const uint8_t *)"m", 1, &sig, &sl),
                     -EKEYEXPIRED);
    /* Public operations need no attestation; ACL still comes first. */
    assert_int_equal(vault_key_export_public(v, &alice, "att", 0, VAULT_PUB_PEM, &pem), 0);
    assert_int_equal(vault_sign(v, &bob, "1000/att", &op, (const uint8_t *)"m", 1, &sig, &sl),
                     -EPERM);
    vault_set_attestation(v, fake_now, 0);
    assert_int_equal(vault_sign(v, &alice, "att", &op, (const uint8_t *)"m", 1, &sig, &sl), 0);
    vault_set_attestation(v, 0, 0);
    free(sig);
    sig = NULL;
    assert_int_equal(vault_sign(v, &alice, "att", &op, (const uint8_t *)"m", 1, &sig, &sl),
                     -EKEYEXPIRED);
    /* A verdict that expires (a token's exp) before max_age: usable until the expiry. */
    vault_set_attestation(v, fake_now, fake_now + 20);
    assert_int_equal(vault_sign(v, &alice, "att", &op, (const uint8_t *)"m", 1, &sig, &sl), 0);
    free(sig);
    sig = NULL;
    fake_now += 19;
    assert_int_equal(vault_sign(v, &alice, "att", &op, (const uint8_t *)"m", 1, &sig, &sl), 0);
    free(sig);
    sig = NULL;
    fake_now += 1;
    assert_int_equal(vault_sign(v, &alice, "att", &op, (const uint8_t *)"m", 1, &sig, &sl),
                     -EKEYEXPIRED);
    /* ... and one that outlives max_age: usable until max_age. */
    vault_set_attestation(v, fake_now, fake_now + 3600);
    fake_now += 299;
    assert_int_equal(vault_sign(v, &alice, "att", &op, (const uint8_t *)"m", 1, &sig, &sl), 0);
    free(sig);
    sig = NULL;
    fake_now += 1;
    assert_int_equal(vault_sign(v, &alice, "att", &op, (const uint8_t *)"m", 1, &sig, &sl),
                     -EKEYEXPIRED);
}

static void test_random(void **state) {
    uint8_t *a = NULL, *b = NULL;
    assert_int_equal(vault_random(0, &a), -EINVAL);
    assert_int_equal(vault_random(VAULT_RANDOM_MAX + 1, &a), -EINVAL);
    assert_int_equal(vault_random(32, &a), 0);
    assert_int_equal(vault_random(32, &b), 0);
    assert_memory_not_equal(a, b, 32);
    free(a);
    free(b);
}

typedef struct Worker {
    Vault *v;
    int ok, gone;
} Worker;

static void *sign_loop(void *p) {
    Worker *w = p;
    VaultOp op = {.alg = VAULT_ALG_ECDSA};
    for (int i = 0; i < 400; i++) {
        uint8_t *sig = NULL;
        size_t sl = 0;
        int r = vault_sign(w->v, &alice, "shared", &op, (const uint8_t *)"m", 1, &sig, &sl);
        if (r == 0) {
            w->ok++;
            free(sig);
        } else if (r == -ENOKEY)
            w->gone++;
        else
            fail_msg("unexpected %d", r);
    }
    return NULL;
}

static void test_concurrent_delete(void **state) {
    _cleanup_(vault_freep) Vault *v = new_vault();
    pthread_t t[4];
    Worker w[4] = {{0}};
    gen(v, "shared", VAULT_KEY_EC_P256);
    for (int i = 0; i < 4; i++) {
        w[i].v = v;
        assert_int_equal(pthread_create(&t[i], NULL, sign_loop, &w[i]), 0);
    }
    for (int i = 0; i < 20; i++)
        (void)vault_key_rotate(v, &alice, "shared", NULL);
    assert_int_equal(vault_key_delete(v, &alice, "shared"), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(w[i].ok + w[i].gone, 400);
    assert_int_equal(vault_key_count(v), 0);
}

/* The key table is kept sorted for binary search: many keys created in scrambled order, some
 * deleted, every lookup still finds exactly its key and a deleted name can be reused. */
static void test_many_keys(void **state) {
    _cleanup_(vault_freep) Vault *v = new_vault();
    json_t *l = NULL;
    char name[32];
    for (int i = 0; i < 300; i++) {
        (void)snprintf(name, sizeof name, "k%03d", (i * 7919) % 300);
        gen(v, name, VAULT_KEY_HMAC_SHA256);
    }
    for (int i = 0; i < 300; i += 3) {
        (void)snprintf(name, sizeof name, "k%03d", i);
        assert_int_equal(vault_key_delete(v, &alice, name), 0);
    }
    assert_int_equal(vault_key_count(v), 200);
    for (int i = 0; i < 300; i++) {
        json_t *d = NULL;
        (void)snprintf(name, sizeof name, "k%03d", i);
        assert_int_equal(vault_key_describe(v, &alice, name, &d), i % 3 == 0 ? -ENOKEY : 0);
        if (d) {
            char full[40];
            (void)snprintf(full, sizeof full, "1000/%.26s", name);
            assert_string_equal(json_string_value(json_object_get(d, "name")), full);
        }
        json_decref(d);
    }
    assert_int_equal(vault_key_list(v, &alice, &l), 0);
    assert_int_equal(json_array_size(l), 200);
    for (size_t i = 1; i < json_array_size(l); i++)
        assert_true(strcmp(json_string_value(json_array_get(l, i - 1)),
                           json_string_value(json_array_get(l, i))) < 0);
    json_decref(l);
    gen(v, "k000", VAULT_KEY_AES256); /* a deleted name is free again */
    {
        VaultKeySpec spec = {.type = VAULT_KEY_AES256};
        assert_int_equal(vault_key_generate(v, &alice, "k001", &spec), -EEXIST);
    }
}

static void test_oom(void **state) {
    bool succeeded = false;
    for (long n = 0; n < 200 && !succeeded; n++) {
        _cleanup_(vault_freep) Vault *v = NULL;
        uint8_t *ct = NULL;
        size_t cl = 0;
        VaultOp op = {.alg = VAULT_ALG_AES256_GCM};
        VaultKeySpec spec = {.type = VAULT_KEY_AES256};
        int r;
        nt_alloc_fail_after(n);
        r = vault_new(&v);
        if (r == 0)
            r = vault_key_generate(v, &alice, "k", &spec);
        if (r == 0)
            r = vault_encrypt(v, &alice, "k", &op, (const uint8_t *)"abc", 3, &ct, &cl);
        nt_alloc_fail_after(-1);
        if (r == 0) {
            succeeded = true;
            free(ct);
        } else {
            assert_int_equal(r, -ENOMEM);
            assert_null(ct);
            /* A failed generate leaves nothing behind. */
            if (v)
                assert_true(vault_key_count(v) <= 1);
        }
    }
    assert_true(succeeded);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_and_strings),
        cmocka_unit_test(test_generate_describe_list),
        cmocka_unit_test(test_aes_gcm),
        cmocka_unit_test(test_keywrap),
        cmocka_unit_test(test_hmac),
        cmocka_unit_test(test_signatures),
        cmocka_unit_test(test_rsa_oaep),
        cmocka_unit_test(test_ecdh_derive),
        cmocka_unit_test(test_rotation_versions),
        cmocka_unit_test(test_acl),
        cmocka_unit_test(test_attested_policy),
        cmocka_unit_test(test_random),
        cmocka_unit_test(test_concurrent_delete),
        cmocka_unit_test(test_many_keys),
        cmocka_unit_test(test_oom),
    };
    if (vault_init(0) < 0)
        return 1;
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    /* libjose initialises OpenSSL from a library constructor, so OpenSSL's atexit cleanup is
     * not registered and LeakSanitizer would report its global DRBGs: clean up explicitly. */
    OPENSSL_cleanup();
    return r;
}
