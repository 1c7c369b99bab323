/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Transfer keys and the import of KMS releases. JWEs are built in the test by an independent
 * ECDH-ES+A256KW implementation (vault-test-util.h); imported key values are known, so every
 * operation on them is checked against OpenSSL directly, including the RFC 3394 section 4.6
 * known answer. Hostile JWEs: wrong alg/enc, zip, crit, extra or missing members (the unsigned
 * JWE of the removed IMPORT_JWE included), missing/unknown kid, a kid that is not the release's
 * recipient, tampered parts, expired and reused transfer keys, payloads that do not match the
 * type. Versions (replays, older, skipped versions absent, attributes from the latest release),
 * raw keys, the import-only kms/ namespace, and transfer keys known for token binding.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <openssl/rsa.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "vhsm/keystore.h"
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
    vault_set_clock(v, fake_clock, NULL);
    return v;
}

static void test_transfer_key(void **state) {
    _cleanup_(vault_freep) Vault *v = new_vault();
    json_auto_t *jwk = NULL;
    json_t *j = NULL;
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *pk = NULL;

    assert_int_equal(vault_transfer_key_create(v, 0, &j), -EINVAL);
    assert_int_equal(vault_transfer_key_create(v, VAULT_TRANSFER_MAX_LIFETIME + 1, &j), -EINVAL);
    assert_int_equal(vault_transfer_key_create(v, 60, &jwk), 0);
    assert_string_equal(json_string_value(json_object_get(jwk, "kty")), "EC");
    assert_string_equal(json_string_value(json_object_get(jwk, "crv")), "P-256"); /* default */
    assert_string_equal(json_string_value(json_object_get(jwk, "alg")), "ECDH-ES+A256KW");
    assert_null(json_object_get(jwk, "d"));
    assert_int_equal(strlen(json_string_value(json_object_get(jwk, "kid"))), 43);
    pk = ec_jwk_to_pkey(jwk);
    assert_non_null(pk);
    assert_int_equal(vault_transfer_key_count(v), 1);
    fake_now += 61;
    assert_int_equal(vault_transfer_key_count(v), 0);
    for (unsigned i = 0; i < VAULT_TRANSFER_MAX_KEYS; i++) {
        assert_int_equal(vault_transfer_key_create(v, 10, &j), 0);
        json_decref(j);
    }
    assert_int_equal(vault_transfer_key_create(v, 10, &j), -EUSERS);
}

/* P-256 (the default since issue 10) and --transfer-curve P-384: transfer keys on the chosen
 * curve; releases to P-256 ones import (the key value is the
 * one sealed: AES-KW known answer of RFC 3394 4.3), and a JWE whose epk is on another curve than
 * its transfer key is refused like a bad header (the key is not spent). */
static void test_transfer_curve(void **state) {
    _cleanup_(vault_freep) Vault *v = new_vault();
    static const uint8_t kek[32] = {0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07,
                                    0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F,
                                    0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17,
                                    0x18, 0x19, 0x1A, 0x1B, 0x1C, 0x1D, 0x1E, 0x1F};
    static const uint8_t data[16] = {0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
                                     0x88, 0x99, 0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0xFF};
    static const uint8_t expect[24] = {0x64, 0xE8, 0xC3, 0xF9, 0xCE, 0x0F, 0x5B, 0xA2,
                                       0x63, 0xE9, 0x77, 0x79, 0x05, 0x81, 0x8A, 0x2A,
                                       0x93, 0xC8, 0x19, 0x1E, 0x7D, 0x6E, 0x8A, 0xE7};
    VaultKeySpec spec = {.type = VAULT_KEY_AES256};
    VaultOp op = {.alg = VAULT_ALG_AES256_KW, .flags = VAULT_OP_RAW};
    _cleanup_free_ uint8_t *w = NULL;
    size_t wl = 0;
    json_auto_t *jwk = NULL, *other = NULL, *x = NULL;
    _cleanup_free_ char *jwe = NULL;

    assert_int_equal(vault_set_transfer_curve(v, "P-521"), -EINVAL);
    assert_int_equal(vault_set_transfer_curve(v, NULL), -EINVAL);
    {
        json_auto_t *d = NULL;
        assert_int_equal(vault_transfer_key_create(v, 60, &d), 0);
        assert_string_equal(json_string_value(json_object_get(d, "crv")), "P-256"); /* default */
    }
    assert_int_equal(vault_set_transfer_curve(v, "P-384"), 0);
    assert_int_equal(vault_transfer_key_create(v, 60, &other), 0);
    assert_string_equal(json_string_value(json_object_get(other, "crv")), "P-384");
    assert_int_equal(vault_set_transfer_curve(v, "P-256"), 0);
    assert_int_equal(vault_transfer_key_create(v, 60, &jwk), 0);
    assert_string_equal(json_string_value(json_object_get(jwk, "crv")), "P-256");
    json_decref(TAKE_PTR(jwk));

    /* RFC 3394's 256-bit KEK imported through a P-256 transfer key: wrapping 128 bits with it
     * gives RFC 3394 4.3's answer. */
    assert_int_equal(import_material(v, &alice, "kms/p256", &spec, kek, sizeof kek), 0);
    assert_int_equal(vault_encrypt(v, &alice, "kms/p256", &op, data, sizeof data, &w, &wl), 0);
    assert_int_equal(wl, sizeof expect);
    assert_memory_equal(w, expect, sizeof expect);

    /* A P-256 transfer key, and a JWE naming it whose epk is the P-384 key's public half. */
    assert_int_equal(vault_transfer_key_create(v, 60, &jwk), 0);
    x = release_extra();
    assert_int_equal(json_object_set_new(x, "epk",
                                         json_pack("{s:s,s:s,s:O,s:O}", "kty", "EC", "crv", "P-384",
                                                   "x", json_object_get(other, "x"), "y",
                                                   json_object_get(other, "y"))),
                     0);
    jwe = make_jwe(jwk, NULL, x, kek, sizeof kek);
    assert_non_null(jwe);
    VaultRelease rel = {.name = "kms/mixed",
                        .spec = spec,
                        .version = 1,
                        .recipient_kid = json_string_value(json_object_get(jwk, "kid"))};
    size_t before = vault_transfer_key_count(v);
    assert_int_equal(vault_transfer_import_release(v, &test_root, jwe, &rel), -EBADMSG);
    assert_int_equal(vault_transfer_key_count(v), before); /* not spent */
}

static void test_import_aes_known_answers(void **state) {
    _cleanup_(vault_freep) Vault *v = new_vault();
    /* RFC 3394 section 4.6: 256 bits of key data with a 256-bit KEK. */
    static const uint8_t kek[32] = {0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07,
                                    0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F,
                                    0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17,
                                    0x18, 0x19, 0x1A, 0x1B, 0x1C, 0x1D, 0x1E, 0x1F};
    static const uint8_t data[32] = {0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
                                     0x88, 0x99, 0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0xFF,
                                     0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07,
                                     0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F};
    static const uint8_t expect[40] = {0x28, 0xC9, 0xF4, 0x04, 0xC4, 0xB8, 0x10, 0xF4, 0xCB, 0xCC,
                                       0xB3, 0x5C, 0xFB, 0x87, 0xF8, 0x26, 0x3F, 0x57, 0x86, 0xE2,
                                       0xD8, 0x0E, 0xD3, 0x26, 0xCB, 0xC7, 0xF0, 0xE7, 0x1A, 0x99,
                                       0xF4, 0x3B, 0xFB, 0x98, 0x8B, 0x9B, 0x7A, 0x02, 0xDD, 0x21};
    VaultKeySpec spec = {.type = VAULT_KEY_AES256, .label = "imported kek"};
    VaultOp op = {.alg = VAULT_ALG_AES256_KW, .flags = VAULT_OP_RAW};
    _cleanup_free_ uint8_t *w = NULL, *w2 = NULL, *ct = NULL;
    _cleanup_(secret_freep) Secret *pt = NULL;
    size_t wl = 0, wl2 = 0, cl = 0;
    json_auto_t *d = NULL;

    assert_int_equal(import_material(v, &alice, "kms/kek", &spec, kek, sizeof kek), 0);
    assert_int_equal(vault_transfer_key_count(v), 0); /* spent */
    assert_int_equal(vault_key_describe(v, &alice, "kms/kek", &d), 0);
    assert_string_equal(json_string_value(json_object_get(d, "origin")), "imported");

    assert_int_equal(vault_encrypt(v, &alice, "kms/kek", &op, data, sizeof data, &w, &wl), 0);
    assert_int_equal(wl, sizeof expect);
    assert_memory_equal(w, expect, sizeof expect);
    assert_int_equal(vault_decrypt(v, &alice, "kms/kek", &op, expect, sizeof expect, &pt), 0);
    assert_memory_equal(secret_data(pt), data, sizeof data);
    pt = secret_free(pt);

    /* RFC 5649 with padding: compared with OpenSSL's EVP_aes_256_wrap_pad. */
    {
        uint8_t ref[32];
        int n = 0, fin = 0;
        EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
        EVP_CIPHER_CTX_set_flags(c, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
        assert_int_equal(EVP_EncryptInit_ex(c, EVP_aes_256_wrap_pad(), NULL, kek, NULL), 1);
        assert_int_equal(EVP_EncryptUpdate(c, ref, &n, data, 20), 1);
        assert_int_equal(EVP_EncryptFinal_ex(c, ref + n, &fin), 1);
        EVP_CIPHER_CTX_free(c);
        op.alg = VAULT_ALG_AES256_KWP;
        assert_int_equal(vault_encrypt(v, &alice, "kms/kek", &op, data, 20, &w2, &wl2), 0);
        assert_int_equal(wl2, (size_t)(n + fin));
        assert_memory_equal(w2, ref, wl2);
    }

    /* AES-GCM envelope decrypted by the test with the known key (header as AAD). */
    {
        static const uint8_t msg[] = "gcm payload", aad[] = "aad";
        uint8_t out[sizeof msg];
        int n = 0;
        EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
        VaultOp gop = {.alg = VAULT_ALG_AES256_GCM, .aad = aad, .aad_len = 3};
        assert_int_equal(vault_encrypt(v, &alice, "kms/kek", &gop, msg, sizeof msg, &ct, &cl), 0);
        assert_int_equal(EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, kek, ct + 12), 1);
        assert_int_equal(EVP_DecryptUpdate(c, NULL, &n, ct, 12), 1);
        assert_int_equal(EVP_DecryptUpdate(c, NULL, &n, aad, 3), 1);
        assert_int_equal(EVP_DecryptUpdate(c, out, &n, ct + 40, (int)(cl - 40)), 1);
        assert_int_equal(EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16, ct + 24), 1);
        assert_int_equal(EVP_DecryptFinal_ex(c, out + n, &n), 1);
        EVP_CIPHER_CTX_free(c);
        assert_memory_equal(out, msg, sizeof msg);

        /* And the other way: an envelope made by the test decrypts in the vault. */
        c = EVP_CIPHER_CTX_new();
        RAND_bytes(ct + 12, 12);
        assert_int_equal(EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, kek, ct + 12), 1);
        assert_int_equal(EVP_EncryptUpdate(c, NULL, &n, ct, 12), 1);
        assert_int_equal(EVP_EncryptUpdate(c, NULL, &n, aad, 3), 1);
        assert_int_equal(EVP_EncryptUpdate(c, ct + 40, &n, (const uint8_t *)"other text!!", 12), 1);
        assert_int_equal(EVP_EncryptFinal_ex(c, ct + 40 + n, &n), 1);
        assert_int_equal(EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, ct + 24), 1);
        EVP_CIPHER_CTX_free(c);
        assert_int_equal(vault_decrypt(v, &alice, "kms/kek", &gop, ct, 52, &pt), 0);
        assert_memory_equal(secret_data(pt), "other text!!", 12);
    }
}

static void test_import_hmac(void **state) {
    _cleanup_(vault_freep) Vault *v = new_vault();
    uint8_t key[48];
    static const uint8_t msg[] = "mac me";
    RAND_bytes(key, sizeof key);
    for (int t = VAULT_KEY_HMAC_SHA256; t <= VAULT_KEY_HMAC_SHA384; t++) {
        VaultKeySpec spec = {.type = t};
        VaultOp op = {.alg = VAULT_ALG_HMAC, .flags = VAULT_OP_RAW};
        size_t kl = t == VAULT_KEY_HMAC_SHA256 ? 32 : 48, ml = 0, rl = 0;
        const char *name = t == VAULT_KEY_HMAC_SHA256 ? "kms/h256" : "kms/h384";
        _cleanup_free_ uint8_t *mac = NULL;
        uint8_t ref[64];
        EVP_MAC *m = EVP_MAC_fetch(NULL, "HMAC", NULL);
        EVP_MAC_CTX *c = EVP_MAC_CTX_new(m);
        OSSL_PARAM ps[] = {
            OSSL_PARAM_construct_utf8_string("digest", (char *)(kl == 32 ? "SHA256" : "SHA384"), 0),
            OSSL_PARAM_construct_end()};
        /* A wrong-size payload is refused and burns the transfer key. */
        assert_int_equal(import_material(v, &alice, name, &spec, key, kl - 1), -EBADMSG);
        assert_int_equal(vault_key_count(v), (size_t)(t - VAULT_KEY_HMAC_SHA256));
        assert_int_equal(import_material(v, &alice, name, &spec, key, kl), 0);
        assert_int_equal(vault_sign(v, &alice, name, &op, msg, sizeof msg, &mac, &ml), 0);
        assert_int_equal(EVP_MAC_init(c, key, kl, ps), 1);
        assert_int_equal(EVP_MAC_update(c, msg, sizeof msg), 1);
        assert_int_equal(EVP_MAC_final(c, ref, &rl, sizeof ref), 1);
        EVP_MAC_CTX_free(c);
        EVP_MAC_free(m);
        assert_int_equal(ml, rl);
        assert_memory_equal(mac, ref, rl);
    }
}

static void test_import_asymmetric(void **state) {
    _cleanup_(vault_freep) Vault *v = new_vault();
    static const struct {
        VaultKeyType type;
        const char *alg, *arg;
        VaultAlg op;
    } cases[] = {
        {VAULT_KEY_EC_P256, "EC", "P-256", VAULT_ALG_ECDSA},
        {VAULT_KEY_EC_P384, "EC", "P-384", VAULT_ALG_ECDSA},
        {VAULT_KEY_ED25519, "ED25519", NULL, VAULT_ALG_ED25519},
        {VAULT_KEY_RSA2048, "RSA", NULL, VAULT_ALG_RSA_PSS_SHA256},
    };
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = NULL;
        _cleanup_free_ uint8_t *der = NULL, *sig = NULL;
        _cleanup_free_ char *pem = NULL, *jwk_s = NULL;
        _cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *c = EVP_MD_CTX_new();
        EVP_PKEY_CTX *pc = NULL;
        size_t dl = 0, sl = 0;
        char name[16];
        VaultKeySpec spec = {.type = cases[i].type};
        VaultOp op = {.alg = cases[i].op, .flags = VAULT_OP_RAW};
        const EVP_MD *md = cases[i].type == VAULT_KEY_EC_P384   ? EVP_sha384()
                           : cases[i].type == VAULT_KEY_ED25519 ? NULL
                                                                : EVP_sha256();
        if (cases[i].type == VAULT_KEY_RSA2048)
            k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
        else if (cases[i].arg)
            k = EVP_PKEY_Q_keygen(NULL, NULL, cases[i].alg, cases[i].arg);
        else
            k = EVP_PKEY_Q_keygen(NULL, NULL, cases[i].alg);
        assert_non_null(k);
        assert_int_equal(pkey_to_pkcs8_der(k, &der, &dl), 0);
        snprintf(name, sizeof name, "kms/a%zu", i);

        /* Declared as another type, with trailing garbage, or truncated: refused. */
        spec.type = cases[i].type == VAULT_KEY_EC_P256 ? VAULT_KEY_EC_P384 : VAULT_KEY_EC_P256;
        assert_int_equal(import_material(v, &alice, name, &spec, der, dl), -EBADMSG);
        spec.type = cases[i].type;
        assert_int_equal(import_material(v, &alice, name, &spec, der, dl - 1), -EBADMSG);
        {
            uint8_t *longer = malloc(dl + 1);
            memcpy(longer, der, dl);
            longer[dl] = 0;
            assert_int_equal(import_material(v, &alice, name, &spec, longer, dl + 1), -EBADMSG);
            free(longer);
        }
        assert_int_equal(vault_key_count(v), i);

        assert_int_equal(import_material(v, &alice, name, &spec, der, dl), 0);
        assert_int_equal(vault_sign(v, &alice, name, &op, (const uint8_t *)"msg", 3, &sig, &sl), 0);
        assert_int_equal(EVP_DigestVerifyInit(c, &pc, md, NULL, k), 1);
        if (cases[i].op == VAULT_ALG_RSA_PSS_SHA256) {
            EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PSS_PADDING);
            EVP_PKEY_CTX_set_rsa_pss_saltlen(pc, 32);
        }
        assert_int_equal(EVP_DigestVerify(c, sig, sl, (const uint8_t *)"msg", 3), 1);
        /* The exported public key is the imported one. */
        assert_int_equal(vault_key_export_public(v, &alice, name, 0, VAULT_PUB_PEM, &pem), 0);
        {
            _cleanup_(EVP_PKEY_freep) EVP_PKEY *pub = pem_to_pkey(pem);
            assert_int_equal(EVP_PKEY_eq(pub, k), 1);
        }
        assert_int_equal(vault_key_export_public(v, &alice, name, 0, VAULT_PUB_JWK, &jwk_s), 0);
        assert_null(strstr(jwk_s, "\"d\""));
    }
}

static void test_import_rsa_oaep_decrypt(void **state) {
    _cleanup_(vault_freep) Vault *v = new_vault();
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)3072);
    _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, k, NULL);
    _cleanup_free_ uint8_t *der = NULL;
    _cleanup_(secret_freep) Secret *pt = NULL;
    uint8_t ct[384];
    size_t dl = 0, cl = sizeof ct;
    VaultKeySpec spec = {.type = VAULT_KEY_RSA3072};
    VaultOp op = {.alg = VAULT_ALG_RSA_OAEP_SHA256, .flags = VAULT_OP_RAW};

    assert_int_equal(pkey_to_pkcs8_der(k, &der, &dl), 0);
    spec.type = VAULT_KEY_RSA2048;
    assert_int_equal(import_material(v, &alice, "kms/rsa", &spec, der, dl), -EBADMSG);
    spec.type = VAULT_KEY_RSA3072;
    assert_int_equal(import_material(v, &alice, "kms/rsa", &spec, der, dl), 0);
    assert_int_equal(EVP_PKEY_encrypt_init(c), 1);
    EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_OAEP_PADDING);
    EVP_PKEY_CTX_set_rsa_oaep_md(c, EVP_sha256());
    EVP_PKEY_CTX_set_rsa_mgf1_md(c, EVP_sha256());
    assert_int_equal(EVP_PKEY_encrypt(c, ct, &cl, (const uint8_t *)"secret", 6), 1);
    assert_int_equal(vault_decrypt(v, &alice, "kms/rsa", &op, ct, cl, &pt), 0);
    assert_int_equal(secret_size(pt), 6);
    assert_memory_equal(secret_data(pt), "secret", 6);
}

/* Rebuilds a compact JWE with a modified protected header (the header check runs first). */
static char *with_header(const char *jwe, const char *member, json_t *value) {
    const char *dot = strchr(jwe, '.');
    uint8_t *raw = NULL;
    size_t rl = 0;
    json_t *h;
    char *hs, *enc, *out = NULL;
    assert_int_equal(base64url_decode_alloc(jwe, (size_t)(dot - jwe), &raw, &rl), 0);
    h = json_loadb((const char *)raw, rl, 0, NULL);
    free(raw);
    assert_non_null(h);
    if (value)
        json_object_set_new(h, member, value);
    else
        json_object_del(h, member);
    hs = json_dumps(h, JSON_COMPACT);
    enc = b64u(hs, strlen(hs));
    assert_true(asprintf(&out, "%s%s", enc, dot) > 0);
    free(enc);
    free(hs);
    json_decref(h);
    return out;
}

/* A release of key kms/k (aes256, version ver) for transfer key jwk. */
static VaultRelease rel_for(const json_t *jwk, uint32_t ver) {
    return (VaultRelease){.name = "kms/k",
                          .spec = {.type = VAULT_KEY_AES256},
                          .version = ver,
                          .recipient_kid = json_string_value(json_object_get(jwk, "kid"))};
}

static void test_import_hostile(void **state) {
    _cleanup_(vault_freep) Vault *v = new_vault();
    json_auto_t *jwk = NULL, *jwk2 = NULL;
    _cleanup_free_ char *good = NULL;
    uint8_t key[32];
    VaultRelease rel;
    struct {
        const char *member;
        json_t *value;
    } bad[] = {
        {"alg", json_string("ECDH-ES")},
        {"alg", json_string("RSA-OAEP-256")},
        {"enc", json_string("A128GCM")},
        {"enc", json_string("A256CBC-HS512")},
        {"zip", json_string("DEF")},
        {"crit", json_pack("[s]", "exp")},
        {"jku", json_string("https://evil.example/")},
        {"apu", json_string("QUJD")},
        {"typ", json_string("JWE")},
        {"kid", NULL},
        {"kid", json_integer(1)},
        {"epk", json_pack("{s:s,s:s,s:s,s:s}", "kty", "EC", "crv", "P-384", "x", "AA", "y", "AA")},
        {"epk", NULL},
        {"cty", NULL},
        {"cty", json_string("JWT")},
        {"nitride", NULL},
        {"nitride", json_string("kms/k")},
    };

    RAND_bytes(key, sizeof key);
    assert_int_equal(vault_transfer_key_create(v, 60, &jwk), 0);
    rel = rel_for(jwk, 1);
    good = make_release_jwe(jwk, key, sizeof key);
    assert_non_null(good);

    for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
        _cleanup_free_ char *j = with_header(good, bad[i].member, bad[i].value);
        assert_int_equal(vault_transfer_import_release(v, &test_root, j, &rel), -EBADMSG);
    }
    /* An unsigned JWE of the removed IMPORT_JWE format (no cty, no nitride): refused. */
    {
        _cleanup_free_ char *j = make_jwe(jwk, NULL, NULL, key, sizeof key);
        assert_int_equal(vault_transfer_import_release(v, &test_root, j, &rel), -EBADMSG);
    }
    /* Structural garbage. */
    assert_int_equal(vault_transfer_import_release(v, &test_root, "a.b.c.d", &rel), -EBADMSG);
    assert_int_equal(vault_transfer_import_release(v, &test_root, "a.b.c.d.e.f", &rel), -EBADMSG);
    assert_int_equal(vault_transfer_import_release(v, &test_root, "e30.b.c.d.e", &rel), -EBADMSG);
    assert_int_equal(vault_transfer_import_release(v, &test_root, "e30..c.d.e", &rel), -EBADMSG);
    assert_int_equal(vault_transfer_import_release(v, &test_root, "!!!.b.c.d.e", &rel), -EBADMSG);
    /* The JWE names another transfer key than the release's recipient. */
    {
        VaultRelease r2 = rel;
        r2.recipient_kid = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        assert_int_equal(vault_transfer_import_release(v, &test_root, good, &r2), -EBADMSG);
    }
    /* Not in kms/, a bad name, version 0, an invalid spec: refused. */
    {
        VaultRelease r2 = rel;
        r2.name = "0/k";
        assert_int_equal(vault_transfer_import_release(v, &test_root, good, &r2), -EINVAL);
        r2.name = "kms/bad name";
        assert_int_equal(vault_transfer_import_release(v, &test_root, good, &r2), -EINVAL);
        r2 = rel;
        r2.version = 0;
        assert_int_equal(vault_transfer_import_release(v, &test_root, good, &r2), -EINVAL);
        r2 = rel;
        r2.spec.policy = (VaultPolicy){VAULT_POLICY_ATTESTED, 0};
        assert_int_equal(vault_transfer_import_release(v, &test_root, good, &r2), -EINVAL);
    }
    /* Header and name refusals do not spend the transfer key. */
    assert_int_equal(vault_transfer_key_count(v), 1);
    /* Unknown kid (well-formed). */
    {
        json_auto_t *x = release_extra();
        _cleanup_free_ char *j =
            make_jwe(jwk, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", x, key, sizeof key);
        VaultRelease r2 = rel;
        r2.recipient_kid = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        assert_int_equal(vault_transfer_import_release(v, &test_root, j, &r2), -ENOKEY);
    }

    /* Tampered ciphertext: authentication fails, the key is spent, nothing stored. */
    {
        _cleanup_free_ char *t = strdup(good);
        char *p = strrchr(t, '.') - 2;
        *p = *p == 'A' ? 'B' : 'A';
        assert_int_equal(vault_transfer_import_release(v, &test_root, t, &rel), -EKEYREJECTED);
        assert_int_equal(vault_transfer_key_count(v), 0);
        assert_int_equal(vault_key_count(v), 0);
        assert_int_equal(vault_transfer_import_release(v, &test_root, good, &rel), -ENOKEY);
    }

    /* Encrypted to another transfer key but naming this one: rejected. */
    assert_int_equal(vault_transfer_key_create(v, 60, &jwk2), 0);
    {
        json_auto_t *other = json_deep_copy(jwk2), *x = release_extra();
        json_t *tmp = NULL;
        _cleanup_free_ char *j = NULL;
        assert_int_equal(vault_transfer_key_create(v, 60, &tmp), 0);
        json_object_set(other, "x", json_object_get(tmp, "x"));
        json_object_set(other, "y", json_object_get(tmp, "y"));
        json_decref(tmp);
        j = make_jwe(other, json_string_value(json_object_get(jwk2, "kid")), x, key, sizeof key);
        rel = rel_for(jwk2, 1);
        assert_int_equal(vault_transfer_import_release(v, &test_root, j, &rel), -EKEYREJECTED);
    }

    /* Expired. */
    {
        json_auto_t *j3 = NULL;
        _cleanup_free_ char *j = NULL;
        assert_int_equal(vault_transfer_key_create(v, 30, &j3), 0);
        j = make_release_jwe(j3, key, sizeof key);
        rel = rel_for(j3, 1);
        fake_now += 31;
        assert_int_equal(vault_transfer_import_release(v, &test_root, j, &rel), -EKEYEXPIRED);
        assert_int_equal(vault_transfer_import_release(v, &test_root, j, &rel), -ENOKEY);
    }

    /* Replay: the first import succeeds, the same release again is refused as imported (before
     * anything is spent), an older version as stale, another type as a mismatch. */
    {
        json_auto_t *j4 = NULL, *j5 = NULL;
        _cleanup_free_ char *j = NULL, *jb = NULL;
        assert_int_equal(vault_transfer_key_create(v, 30, &j4), 0);
        j = make_release_jwe(j4, key, sizeof key);
        rel = rel_for(j4, 2);
        assert_int_equal(vault_transfer_import_release(v, &test_root, j, &rel), 0);
        assert_int_equal(vault_transfer_import_release(v, &test_root, j, &rel), -EEXIST);
        assert_int_equal(vault_transfer_key_create(v, 30, &j5), 0);
        jb = make_release_jwe(j5, key, sizeof key);
        rel = rel_for(j5, 1);
        assert_int_equal(vault_transfer_import_release(v, &test_root, jb, &rel), -ESTALE);
        rel = rel_for(j5, 3);
        rel.spec.type = VAULT_KEY_HMAC_SHA256;
        assert_int_equal(vault_transfer_import_release(v, &test_root, jb, &rel), -EMEDIUMTYPE);
        assert_int_equal(vault_transfer_key_count(v), 2); /* j5 unspent; jwk2 */
    }
    assert_int_equal(vault_key_count(v), 1);
}

/* Versions: a newer release adds a version (older ciphertexts still decrypt), a release that
 * skips versions leaves them absent (unusable, not charged), the release's policy, label and
 * ACL replace the key's, a first release above version 1 makes a key whose history starts
 * there, and all of it survives the keystore. */
static void test_release_versions(void **state) {
    _cleanup_(vault_freep) Vault *v = new_vault(), *v2 = NULL;
    uint8_t k1[32], k2[32], k5[32];
    VaultKeySpec spec = {.type = VAULT_KEY_AES256, .label = "first"};
    VaultOp op = {.alg = VAULT_ALG_AES256_GCM};
    _cleanup_free_ uint8_t *c1 = NULL, *c5 = NULL;
    size_t l1 = 0, l5 = 0;
    json_auto_t *d = NULL;
    VaultUsage u1, u2;

    RAND_bytes(k1, 32);
    RAND_bytes(k2, 32);
    RAND_bytes(k5, 32);
    assert_int_equal(import_version(v, &alice, "kms/db", &spec, 1, k1, 32), 0);
    assert_int_equal(vault_encrypt(v, &alice, "kms/db", &op, (const uint8_t *)"one", 3, &c1, &l1),
                     0);
    vault_usage(v, 0, &u1);
    assert_int_equal(import_version(v, &alice, "kms/db", &spec, 2, k2, 32), 0);
    spec.label = "fifth";
    spec.policy = (VaultPolicy){VAULT_POLICY_ATTESTED, 60};
    assert_int_equal(import_version(v, &alice, "kms/db", &spec, 5, k5, 32), 0);
    vault_usage(v, 0, &u2);
    assert_int_equal(u2.versions, u1.versions + 2); /* 2 and 5; 3 and 4 are absent */
    assert_int_equal(vault_key_describe(v, &alice, "kms/db", &d), 0);
    assert_int_equal(json_integer_value(json_object_get(d, "latest_version")), 5);
    assert_int_equal(json_array_size(json_object_get(d, "versions")), 3);
    assert_string_equal(json_string_value(json_object_get(d, "label")), "fifth");
    assert_string_equal(json_string_value(json_object_get(json_object_get(d, "policy"), "kind")),
                        "attested");
    /* attested now: no verdict, no use; with one, the latest version is k5 */
    assert_int_equal(vault_encrypt(v, &alice, "kms/db", &op, (const uint8_t *)"5", 1, &c5, &l5),
                     -EKEYEXPIRED);
    vault_set_attestation(v, fake_now, fake_now + 30);
    assert_int_equal(vault_encrypt(v, &alice, "kms/db", &op, (const uint8_t *)"five", 4, &c5, &l5),
                     0);
    assert_int_equal(c5[11], 5); /* the envelope names version 5 */
    {
        _cleanup_(secret_freep) Secret *pt = NULL;
        assert_int_equal(vault_decrypt(v, &alice, "kms/db", &op, c1, l1, &pt), 0);
        assert_memory_equal(secret_data(pt), "one", 3);
    }
    {
        /* an envelope naming absent version 3 */
        _cleanup_(secret_freep) Secret *pt = NULL;
        c1[11] = 3;
        assert_int_equal(vault_decrypt(v, &alice, "kms/db", &op, c1, l1, &pt), -ENOKEY);
        c1[11] = 1;
    }
    /* Replays and older releases change nothing. */
    assert_int_equal(import_version(v, &alice, "kms/db", &spec, 5, k1, 32), -EEXIST);
    assert_int_equal(import_version(v, &alice, "kms/db", &spec, 4, k1, 32), -ESTALE);
    /* The keystore keeps the absent versions absent and the latest. */
    {
        _cleanup_(secret_freep) Secret *content = NULL, *again = NULL;
        json_auto_t *d2 = NULL;
        _cleanup_(secret_freep) Secret *pt = NULL;
        assert_int_equal(keystore_serialize(v, &content), 0);
        assert_int_equal(vault_new(&v2), 0);
        vault_set_clock(v2, fake_clock, NULL);
        assert_int_equal(keystore_deserialize(v2, secret_const_data(content), secret_size(content)),
                         0);
        assert_int_equal(vault_key_describe(v2, &alice, "kms/db", &d2), 0);
        assert_true(json_equal(d, d2));
        vault_set_attestation(v2, fake_now, fake_now + 30);
        assert_int_equal(vault_decrypt(v2, &alice, "kms/db", &op, c5, l5, &pt), 0);
        assert_memory_equal(secret_data(pt), "five", 4);
        assert_int_equal(keystore_serialize(v2, &again), 0);
        assert_int_equal(secret_size(again), secret_size(content));
        assert_memory_equal(secret_data(again), secret_data(content), secret_size(content));
    }
    /* Retiring below an absent version and then the absent ones. */
    assert_int_equal(vault_key_set_min_version(v, &alice, "kms/db", 4), 0);
    vault_usage(v, 0, &u2);
    assert_int_equal(u2.versions, u1.versions); /* only 5 is held */
    /* A first release at version 3: the key's history starts there. */
    {
        json_auto_t *d3 = NULL;
        spec = (VaultKeySpec){.type = VAULT_KEY_HMAC_SHA256};
        assert_int_equal(import_version(v, &alice, "kms/late", &spec, 3, k1, 32), 0);
        assert_int_equal(vault_key_describe(v, &alice, "kms/late", &d3), 0);
        assert_int_equal(json_integer_value(json_object_get(d3, "min_version")), 3);
        assert_int_equal(json_integer_value(json_object_get(d3, "latest_version")), 3);
    }
    /* A version of an existing key with a new ACL: the old users lose it. */
    {
        VaultAcl acl = {0};
        _cleanup_free_ uint8_t *c = NULL;
        size_t cl = 0;
        assert_int_equal(vault_acl_list_add_uid(&acl.use, bob.uid), 0);
        spec = (VaultKeySpec){.type = VAULT_KEY_HMAC_SHA256, .acl = &acl};
        assert_int_equal(import_version(v, &alice, "kms/late", &spec, 4, k2, 32), 0);
        vault_acl_done(&acl);
        VaultOp mop = {.alg = VAULT_ALG_HMAC};
        assert_int_equal(vault_sign(v, &alice, "kms/late", &mop, k1, 3, &c, &cl), -EPERM);
        assert_int_equal(vault_sign(v, &bob, "kms/late", &mop, k1, 3, &c, &cl), 0);
    }
}

/* Raw keys: opaque bytes from a release (1..4096), no operation, never generated or rotated,
 * kept by the keystore. */
static void test_raw(void **state) {
    _cleanup_(vault_freep) Vault *v = new_vault(), *v2 = NULL;
    static uint8_t big[VAULT_RAW_MAX + 1];
    VaultKeySpec spec = {.type = VAULT_KEY_RAW};
    VaultOp op = {.alg = VAULT_ALG_AES256_GCM};
    _cleanup_free_ uint8_t *out = NULL;
    size_t n = 0;
    json_auto_t *d = NULL;

    RAND_bytes(big, sizeof big);
    assert_int_equal(import_material(v, &alice, "kms/luks", &spec, big, 1), 0);
    assert_int_equal(import_material(v, &alice, "kms/pass", &spec, big, VAULT_RAW_MAX), 0);
    assert_int_equal(import_material(v, &alice, "kms/huge", &spec, big, VAULT_RAW_MAX + 1),
                     -EBADMSG);
    assert_int_equal(vault_key_describe(v, &alice, "kms/pass", &d), 0);
    assert_string_equal(json_string_value(json_object_get(d, "type")), "raw");
    for (int a = 1; a < _VAULT_ALG_MAX; a++) {
        op.alg = (VaultAlg)a;
        op.flags = a == VAULT_ALG_AES256_GCM ? 0 : VAULT_OP_RAW;
        assert_int_equal(vault_encrypt(v, &alice, "kms/pass", &op, big, 16, &out, &n), -EOPNOTSUPP);
        assert_int_equal(vault_sign(v, &alice, "kms/pass", &op, big, 16, &out, &n), -EOPNOTSUPP);
    }
    assert_int_equal(
        vault_key_export_public(v, &alice, "kms/pass", 0, VAULT_PUB_PEM, (char **)&out),
        -EOPNOTSUPP);
    assert_int_equal(vault_key_rotate(v, &test_root, "kms/pass", NULL), -EPERM);
    {
        VaultKeySpec g = {.type = VAULT_KEY_RAW};
        assert_int_equal(vault_key_generate(v, &alice, "mine", &g), -EOPNOTSUPP);
        assert_int_equal(vault_key_generate(v, &test_root, "0/mine", &g), -EOPNOTSUPP);
    }
    {
        _cleanup_(secret_freep) Secret *content = NULL, *again = NULL;
        assert_int_equal(keystore_serialize(v, &content), 0);
        assert_int_equal(vault_new(&v2), 0);
        assert_int_equal(keystore_deserialize(v2, secret_const_data(content), secret_size(content)),
                         0);
        assert_int_equal(vault_key_count(v2), 2);
        assert_int_equal(keystore_serialize(v2, &again), 0);
        assert_int_equal(secret_size(again), secret_size(content));
        assert_memory_equal(secret_data(again), secret_data(content), secret_size(content));
    }
}

/* kms/ is import-only: nobody, root included, generates, derives or rotates there. */
static void test_kms_import_only(void **state) {
    _cleanup_(vault_freep) Vault *v = new_vault();
    VaultKeySpec spec = {.type = VAULT_KEY_EC_P256};
    uint8_t k[32] = {1};
    _cleanup_free_ char *pem = NULL;

    assert_int_equal(vault_key_generate(v, &test_root, "kms/x", &spec), -ENOTUNIQ);
    assert_int_equal(vault_key_generate(v, &alice, "kms/x", &spec), -ENOTUNIQ);
    assert_int_equal(vault_key_generate(v, &test_root, "0/ec", &spec), 0);
    assert_int_equal(vault_key_export_public(v, &test_root, "0/ec", 0, VAULT_PUB_PEM, &pem), 0);
    {
        /* ECDH derive into kms/ (root may use its own key once listed). */
        VaultAcl acl = {0};
        VaultKeySpec s2 = {.type = VAULT_KEY_EC_P256, .acl = &acl};
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *peer = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
        _cleanup_free_ uint8_t *der = NULL;
        int dl;
        VaultKeySpec aes = {.type = VAULT_KEY_AES256};
        assert_int_equal(vault_acl_list_add_uid(&acl.use, 0), 0);
        assert_int_equal(vault_acl_list_add_uid(&acl.admin, 0), 0);
        assert_int_equal(vault_key_generate(v, &test_root, "0/ec2", &s2), 0);
        vault_acl_done(&acl);
        dl = i2d_PUBKEY(peer, &der);
        assert_true(dl > 0);
        assert_int_equal(vault_key_derive_ecdh(v, &test_root, "0/ec2", der, (size_t)dl, NULL, 0,
                                               "kms/derived", &aes),
                         -ENOTUNIQ);
        assert_int_equal(vault_key_derive_ecdh(v, &test_root, "0/ec2", der, (size_t)dl, NULL, 0,
                                               "0/derived", &aes),
                         0);
    }
    spec.type = VAULT_KEY_AES256;
    assert_int_equal(import_material(v, &alice, "kms/x", &spec, k, 32), 0);
    assert_int_equal(vault_key_rotate(v, &test_root, "kms/x", NULL), -EPERM);
    assert_int_equal(vault_key_rotate(v, &alice, "kms/x", NULL), -EPERM);
    /* root still administers it: deletes it (and a release brings it back). */
    assert_int_equal(vault_key_delete(v, &test_root, "kms/x"), 0);
    assert_int_equal(import_material(v, &alice, "kms/x", &spec, k, 32), 0);
}

/* Transfer keys known for token binding: live ones, and spent ones until they would have
 * expired; the memory of spent keys is bounded. */
static void test_transfer_key_known(void **state) {
    _cleanup_(vault_freep) Vault *v = new_vault();
    json_auto_t *live = NULL, *spent = NULL;
    uint8_t k[32] = {2};
    VaultKeySpec spec = {.type = VAULT_KEY_AES256};
    char kid_spent[64];

    assert_false(vault_transfer_key_known(v, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"));
    assert_false(vault_transfer_key_known(v, "short"));
    assert_int_equal(vault_transfer_key_create(v, 100, &live), 0);
    assert_true(vault_transfer_key_known(v, json_string_value(json_object_get(live, "kid"))));
    assert_int_equal(vault_transfer_key_create(v, 50, &spent), 0);
    snprintf(kid_spent, sizeof kid_spent, "%s", json_string_value(json_object_get(spent, "kid")));
    {
        _cleanup_free_ char *j = make_release_jwe(spent, k, 32);
        VaultRelease rel = {
            .name = "kms/t", .spec = spec, .version = 1, .recipient_kid = kid_spent};
        assert_int_equal(vault_transfer_import_release(v, &test_root, j, &rel), 0);
    }
    assert_int_equal(vault_transfer_key_count(v), 1);
    assert_true(vault_transfer_key_known(v, kid_spent));
    fake_now += 49;
    assert_true(vault_transfer_key_known(v, kid_spent));
    fake_now += 1;
    assert_false(vault_transfer_key_known(v, kid_spent)); /* would have expired now */
    assert_true(vault_transfer_key_known(v, json_string_value(json_object_get(live, "kid"))));
    fake_now += 50;
    assert_false(vault_transfer_key_known(v, json_string_value(json_object_get(live, "kid"))));
    /* The ring holds the last VAULT_TRANSFER_RECENT spent keys. */
    {
        char first[64];
        for (unsigned i = 0; i < VAULT_TRANSFER_RECENT + 1; i++) {
            json_auto_t *t = NULL;
            _cleanup_free_ char *j = NULL;
            char name[32];
            assert_int_equal(vault_transfer_key_create(v, 1000, &t), 0);
            if (i == 0)
                snprintf(first, sizeof first, "%s", json_string_value(json_object_get(t, "kid")));
            j = make_release_jwe(t, k, 31); /* refused payload: spent all the same */
            snprintf(name, sizeof name, "kms/r%u", i);
            VaultRelease rel = {.name = name,
                                .spec = spec,
                                .version = 1,
                                .recipient_kid = json_string_value(json_object_get(t, "kid"))};
            assert_int_equal(vault_transfer_import_release(v, &test_root, j, &rel), -EBADMSG);
            if (i == 0)
                assert_true(vault_transfer_key_known(v, first));
        }
        assert_false(vault_transfer_key_known(v, first));
    }
}

/* Imports a random AES key as "k" through the transfer path; masked receives key ^ 0x5a (so the
 * test's own copy is not what the memory scans find). */
static void import_masked_aes(Vault *v, uint8_t masked[32]) {
    _cleanup_(secret_freep) Secret *key = NULL;
    VaultKeySpec spec = {.type = VAULT_KEY_AES256};
    assert_int_equal(secret_new(32, &key), 0);
    assert_int_equal(RAND_bytes(secret_data(key), 32), 1);
    for (size_t i = 0; i < 32; i++)
        masked[i] = secret_data(key)[i] ^ 0x5a;
    assert_int_equal(import_material(v, &alice, "kms/k", &spec, secret_data(key), 32), 0);
}

/* A few GCM round trips with "k". */
static void use_aes(Vault *v) {
    VaultOp op = {.alg = VAULT_ALG_AES256_GCM};
    for (int i = 0; i < 3; i++) {
        _cleanup_free_ uint8_t *ct = NULL;
        _cleanup_(secret_freep) Secret *pt = NULL;
        size_t cl = 0;
        assert_int_equal(vault_encrypt(v, &alice, "kms/k", &op, (const uint8_t *)"x", 1, &ct, &cl),
                         0);
        assert_int_equal(vault_decrypt(v, &alice, "kms/k", &op, ct, cl, &pt), 0);
    }
}

/* Counts occurrences of the 32-byte key (given XOR 0x5a, so the pattern itself is not in memory)
 * in every readable mapping of this process, read through /proc/self/mem. */
static int count_in_memory(const uint8_t masked[32]) {
    FILE *maps = fopen("/proc/self/maps", "re");
    int fd = open("/proc/self/mem", O_RDONLY | O_CLOEXEC), hits = 0;
    static uint8_t buf[1 << 20];
    char line[512];
    assert_non_null(maps);
    assert_true(fd >= 0);
    while (fgets(line, sizeof line, maps)) {
        unsigned long lo, hi;
        char perms[8];
        if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) != 3 || perms[0] != 'r')
            continue;
        if (strstr(line, "[vvar]") || strstr(line, "[vsyscall]") || hi - lo > (256ul << 20))
            continue;
        for (unsigned long a = lo; a < hi; a += sizeof buf - 31) {
            size_t want = MIN(sizeof buf, hi - a);
            ssize_t n = pread(fd, buf, want, (off_t)a);
            if (n < 32)
                break;
            for (ssize_t i = 0; i + 32 <= n; i++) {
                if ((uint8_t)(buf[i] ^ 0x5a) != masked[0])
                    continue;
                size_t j = 1;
                while (j < 32 && (uint8_t)(buf[i + j] ^ 0x5a) == masked[j])
                    j++;
                if (j == 32)
                    hits++;
            }
            if ((size_t)n < want)
                break;
        }
    }
    explicit_bzero(buf, sizeof buf);
    fclose(maps);
    close(fd);
    return hits;
}

static void test_no_residue_after_delete(void **state) {
    _cleanup_(vault_freep) Vault *v = new_vault();
    uint8_t masked[32];
    int before;

    import_masked_aes(v, masked);
    use_aes(v);
    before = count_in_memory(masked);
    assert_true(before >= 1); /* the scanner finds the live key (in its Secret) */
    assert_int_equal(vault_key_delete(v, &alice, "kms/k"), 0);
    assert_int_equal(count_in_memory(masked), 0);
}

/* The context cache keeps an AES key schedule (which begins with the key) beside the key's
 * Secret; turned off (vhsmd without locked memory), only the Secret holds the key between
 * operations. Deleting the key removes every copy either way. */
static void test_context_cache_switch(void **state) {
    _cleanup_(vault_freep) Vault *v = new_vault();
    uint8_t masked[32];

    import_masked_aes(v, masked);
    for (int on = 0; on < 2; on++) {
        vault_set_context_cache(on);
        use_aes(v);
        if (on)
            assert_true(count_in_memory(masked) >= 2); /* Secret + cached schedule */
        else
            assert_int_equal(count_in_memory(masked), 1); /* the Secret only */
    }
    assert_int_equal(vault_key_delete(v, &alice, "kms/k"), 0);
    assert_int_equal(count_in_memory(masked), 0);
}

/* An EC P-256 private scalar imported as PKCS#8, used, serialized for the keystore (as on every
 * save) and deleted: no copy may remain, searched big-endian and in BIGNUM limb order
 * (little-endian here). The vault parses PKCS#8 itself because OpenSSL 3.0's decoders leave
 * copies in freed heap memory (pkcs8.h). */
static void test_no_residue_ec(void **state) {
    _cleanup_(vault_freep) Vault *v = new_vault();
    uint8_t be[32], le[32];
    int residue;
    VaultKeySpec spec = {.type = VAULT_KEY_EC_P256};
    VaultOp op = {.alg = VAULT_ALG_ECDSA};

    {
        /* PKCS#8 built by hand around a random scalar, so the test itself leaves no copies
         * (OpenSSL's own PKCS#8 encoder does). ECPrivateKey without the optional public key:
         * the decoder recomputes it. */
        static const uint8_t prefix[] = {0x30, 0x41, 0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07,
                                         0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
                                         0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x04,
                                         0x27, 0x30, 0x25, 0x02, 0x01, 0x01, 0x04, 0x20};
        _cleanup_(secret_freep) Secret *der = NULL;
        uint8_t *d;
        assert_int_equal(secret_new(sizeof prefix + 32, &der), 0);
        memcpy(secret_data(der), prefix, sizeof prefix);
        d = secret_data(der) + sizeof prefix;
        assert_int_equal(RAND_bytes(d, 32), 1);
        d[0] = (uint8_t)((d[0] & 0x7f) | 0x10); /* below the group order, not zero */
        for (size_t i = 0; i < 32; i++) {
            be[i] = d[i] ^ 0x5a;
            le[i] = d[31 - i] ^ 0x5a;
        }
        assert_int_equal(
            import_material(v, &alice, "kms/ec", &spec, secret_data(der), secret_size(der)), 0);
    }
    residue = count_in_memory(be);
    assert_int_equal(residue, 0);
    {
        _cleanup_free_ uint8_t *sig = NULL;
        size_t sl = 0;
        assert_int_equal(vault_sign(v, &alice, "kms/ec", &op, (const uint8_t *)"m", 1, &sig, &sl),
                         0);
    }
    for (int i = 0; i < 3; i++) {
        /* Keystore serializations (as on every save) must not leave copies behind either. */
        _cleanup_(secret_freep) Secret *content = NULL;
        assert_int_equal(keystore_serialize(v, &content), 0);
    }
    assert_true(count_in_memory(le) >= 1); /* the live key, found by the scanner */
    assert_int_equal(count_in_memory(be), 0);
    assert_int_equal(vault_key_delete(v, &alice, "kms/ec"), 0);
    assert_int_equal(count_in_memory(be), 0);
    assert_int_equal(count_in_memory(le), 0);
}

/* ---- cached cipher / MAC contexts and pooled IVs, checked with a known key ---- */

/* Decrypts a vault GCM envelope (header | IV | tag | ct) with OpenSSL directly. */
static bool ref_gcm_open(const uint8_t key[32], const uint8_t *env, size_t env_len,
                         const uint8_t *aad, size_t aad_len, uint8_t *out) {
    _cleanup_(EVP_CIPHER_CTX_freep) EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int n = 0;
    return c && env_len >= 40 &&
           EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, key, env + 12) == 1 &&
           EVP_DecryptUpdate(c, NULL, &n, env, 12) == 1 &&
           (aad_len == 0 || EVP_DecryptUpdate(c, NULL, &n, aad, (int)aad_len) == 1) &&
           (env_len == 40 || EVP_DecryptUpdate(c, out, &n, env + 40, (int)(env_len - 40)) == 1) &&
           EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16, (void *)(env + 24)) == 1 &&
           EVP_DecryptFinal_ex(c, out + n, &n) == 1;
}

static uint8_t gcm_key[32];

/* One GCM encryption through the vault (alternating the two entry points), checked by OpenSSL;
 * returns the IV in iv. */
static void gcm_round(Vault *v, int i, uint8_t iv[12]) {
    uint8_t msg[300], aad[16], env[300 + 64], back[300];
    size_t len = (size_t)(i * 37) % sizeof msg, el = 0;
    VaultOp op = {.alg = VAULT_ALG_AES256_GCM, .aad = aad, .aad_len = (size_t)(i % 3) * 8};
    RAND_bytes(msg, sizeof msg);
    RAND_bytes(aad, sizeof aad);
    if (i % 2) {
        assert_int_equal(
            vault_encrypt_into(v, &alice, "kms/gk", &op, msg, len, env, sizeof env, &el), 0);
    } else {
        _cleanup_free_ uint8_t *ct = NULL;
        assert_int_equal(vault_encrypt(v, &alice, "kms/gk", &op, msg, len, &ct, &el), 0);
        memcpy(env, ct, el);
    }
    assert_int_equal(el, 40 + len);
    assert_true(ref_gcm_open(gcm_key, env, el, aad, op.aad_len, back));
    assert_memory_equal(back, msg, len);
    memcpy(iv, env + 12, 12);
    if (i % 5 == 0) { /* a tampered envelope fails, and the context it used stays good */
        _cleanup_(secret_freep) Secret *pt = NULL;
        env[24 + (size_t)i % (el - 24)] ^= 0x40; /* tag or ciphertext */
        assert_int_equal(vault_decrypt(v, &alice, "kms/gk", &op, env, el, &pt), -EKEYREJECTED);
        env[24 + (size_t)i % (el - 24)] ^= 0x40;
        assert_int_equal(vault_decrypt(v, &alice, "kms/gk", &op, env, el, &pt), 0);
        assert_int_equal(secret_size(pt), len);
        assert_memory_equal(secret_data(pt), msg, len);
    }
}

static int cmp_iv(const void *a, const void *b) {
    return memcmp(a, b, 12);
}

static void *gcm_thread(void *userdata) {
    Vault *v = userdata;
    uint8_t iv[12];
    for (int i = 0; i < 150; i++)
        gcm_round(v, i, iv);
    return NULL;
}

static void test_gcm_context_reuse(void **state) {
    _cleanup_(vault_freep) Vault *v = new_vault();
    VaultKeySpec spec = {.type = VAULT_KEY_AES256};
    static uint8_t ivs[400][12];
    pthread_t t[4];
    int p[2];
    pid_t pid;
    uint8_t child_iv[12], parent_iv[12];

    RAND_bytes(gcm_key, sizeof gcm_key);
    assert_int_equal(import_material(v, &alice, "kms/gk", &spec, gcm_key, sizeof gcm_key), 0);
    /* Many operations on one key: every envelope opens with the key, tampering in between does
     * not poison the cached contexts, and no IV repeats (pooled draws, 64 per refill). */
    for (int i = 0; i < 400; i++)
        gcm_round(v, i, ivs[i]);
    qsort(ivs, 400, 12, cmp_iv);
    for (int i = 1; i < 400; i++)
        assert_true(memcmp(ivs[i - 1], ivs[i], 12) != 0);
    /* Several threads share the key's cached contexts. */
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, gcm_thread, v), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    /* A forked child never draws the IVs its parent will use from the copied pool. */
    gcm_round(v, 1, parent_iv); /* the pool is mid-way */
    assert_int_equal(pipe(p), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        gcm_round(v, 1, child_iv);
        _exit(write(p[1], child_iv, 12) == 12 ? 0 : 1);
    }
    assert_int_equal(read(p[0], child_iv, 12), 12);
    assert_int_equal(waitpid(pid, NULL, 0), pid);
    close(p[0]);
    close(p[1]);
    gcm_round(v, 1, parent_iv);
    assert_true(memcmp(child_iv, parent_iv, 12) != 0);
}

/* HMAC contexts are cached per key version: interleaved keys and messages stay correct. */
static void test_hmac_context_reuse(void **state) {
    _cleanup_(vault_freep) Vault *v = new_vault();
    uint8_t k256[32], k384[48];
    VaultKeySpec s256 = {.type = VAULT_KEY_HMAC_SHA256}, s384 = {.type = VAULT_KEY_HMAC_SHA384};
    RAND_bytes(k256, sizeof k256);
    RAND_bytes(k384, sizeof k384);
    assert_int_equal(import_material(v, &alice, "kms/m256", &s256, k256, sizeof k256), 0);
    assert_int_equal(import_material(v, &alice, "kms/m384", &s384, k384, sizeof k384), 0);
    for (int i = 0; i < 200; i++) {
        bool big = i % 2;
        const char *name = big ? "kms/m384" : "kms/m256";
        uint8_t msg[200], ref[64];
        size_t len = (size_t)(i * 13) % sizeof msg, ml = 0, rl = 0;
        _cleanup_free_ uint8_t *mac = NULL;
        VaultOp op = {.alg = VAULT_ALG_HMAC, .flags = VAULT_OP_RAW};
        RAND_bytes(msg, sizeof msg);
        assert_int_equal(vault_sign(v, &alice, name, &op, msg, len, &mac, &ml), 0);
        assert_non_null(EVP_Q_mac(NULL, "HMAC", NULL, big ? "SHA384" : "SHA256", NULL,
                                  big ? k384 : k256, big ? 48 : 32, msg, len, ref, sizeof ref,
                                  &rl));
        assert_int_equal(ml, rl);
        assert_memory_equal(mac, ref, rl);
        if (i % 7 == 0) {
            mac[0] ^= 1;
            assert_int_equal(vault_verify(v, &alice, name, &op, msg, len, mac, ml), -EKEYREJECTED);
            mac[0] ^= 1;
        }
        assert_int_equal(vault_verify(v, &alice, name, &op, msg, len, mac, ml), 0);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_transfer_key),
        cmocka_unit_test(test_transfer_curve),
        cmocka_unit_test(test_import_aes_known_answers),
        cmocka_unit_test(test_import_hmac),
        cmocka_unit_test(test_gcm_context_reuse),
        cmocka_unit_test(test_hmac_context_reuse),
        cmocka_unit_test(test_import_asymmetric),
        cmocka_unit_test(test_import_rsa_oaep_decrypt),
        cmocka_unit_test(test_import_hostile),
        cmocka_unit_test(test_release_versions),
        cmocka_unit_test(test_raw),
        cmocka_unit_test(test_kms_import_only),
        cmocka_unit_test(test_transfer_key_known),
        cmocka_unit_test(test_no_residue_after_delete),
        cmocka_unit_test(test_context_cache_switch),
        cmocka_unit_test(test_no_residue_ec),
    };
    if (vault_init(0) < 0)
        return 1;
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    /* libjose initialises OpenSSL from a library constructor, so OpenSSL's atexit cleanup is
     * not registered and LeakSanitizer would report its global DRBGs: clean up explicitly. */
    OPENSSL_cleanup();
    return r;
}
