/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Object flags and attributes in the vault (vault.h "Object attributes"): defaults and the
 * read-only flags by origin, usage flags enforced on every operation, PKCS#11's one-way rules
 * and MODIFIABLE, attribute caps and reserved types, quota charge, describe/list output, and
 * the keystore round trip (format 3) with strict parsing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

#include "vhsm/keystore.h"
#include "vhsm/vault.h"
#include "vault-test-util.h"

#define CKA_LABEL 0x003u
#define CKA_ID 0x102u
#define CKA_VALUE 0x011u

static Vault *new_vault(void) {
    Vault *v = NULL;
    assert_int_equal(vault_new(&v), 0);
    return v;
}

static json_t *describe(Vault *v, const char *name) {
    json_t *j = NULL;
    assert_int_equal(vault_key_describe(v, &alice, name, &j), 0);
    return j;
}

static uint32_t flags_of(Vault *v, const char *name) {
    json_t *j = describe(v, name);
    uint32_t f = (uint32_t)json_integer_value(json_object_get(j, "flags"));
    json_decref(j);
    return f;
}

static void test_defaults(void **state) {
    Vault *v = new_vault();
    json_t *j;
    (void)state;
    assert_int_equal(
        vault_key_generate(v, &alice, "ec", &(VaultKeySpec){.type = VAULT_KEY_EC_P256}), 0);
    assert_int_equal(flags_of(v, "ec"),
                     vault_obj_flags_history(VAULT_OBJ_DEFAULT | VAULT_OBJ_LOCAL |
                                             VAULT_OBJ_ALWAYS_SENSITIVE |
                                             VAULT_OBJ_NEVER_EXTRACTABLE));
    j = describe(v, "ec");
    assert_int_equal(json_integer_value(json_object_get(j, "bits")), 256);
    /* SPKI DER of a P-256 key: 91 bytes, hex */
    assert_int_equal(strlen(json_string_value(json_object_get(j, "spki"))), 182);
    assert_int_equal(json_array_size(json_object_get(j, "attrs")), 0);
    json_decref(j);
    /* An extractable, not sensitive key is neither always sensitive nor never extractable. */
    assert_int_equal(
        vault_key_generate(v, &alice, "x",
                           &(VaultKeySpec){.type = VAULT_KEY_AES256,
                                           .obj_flags = VAULT_OBJ_ENCRYPT | VAULT_OBJ_EXTRACTABLE}),
        0);
    assert_int_equal(flags_of(v, "x"), VAULT_OBJ_ENCRYPT | VAULT_OBJ_EXTRACTABLE | VAULT_OBJ_LOCAL |
                                           VAULT_OBJ_HAD_CIPHER);
    /* Read-only bits cannot be chosen. */
    assert_int_equal(
        vault_key_generate(v, &alice, "y",
                           &(VaultKeySpec){.type = VAULT_KEY_AES256, .obj_flags = VAULT_OBJ_LOCAL}),
        -EINVAL);
    vault_free(v);
}

static void test_usage_enforced(void **state) {
    Vault *v = new_vault();
    VaultOp gcm = {.alg = VAULT_ALG_AES256_GCM}, kw = {.alg = VAULT_ALG_AES256_KWP};
    VaultOp ecdsa = {.alg = VAULT_ALG_ECDSA};
    uint8_t *out = NULL, *sig = NULL;
    size_t n, sn;
    Secret *pt = NULL;
    (void)state;
    assert_int_equal(vault_key_generate(
                         v, &alice, "enc",
                         &(VaultKeySpec){.type = VAULT_KEY_AES256, .obj_flags = VAULT_OBJ_ENCRYPT}),
                     0);
    assert_int_equal(vault_encrypt(v, &alice, "enc", &gcm, (const uint8_t *)"hi", 2, &out, &n), 0);
    assert_int_equal(vault_decrypt(v, &alice, "enc", &gcm, out, n, &pt), -EPERM);
    free(out);
    assert_int_equal(
        vault_encrypt(v, &alice, "enc", &kw, (const uint8_t *)"0123456789abcdef", 16, &out, &n),
        -EPERM); /* wrapping needs WRAP */
    assert_int_equal(
        vault_key_generate(v, &alice, "ver",
                           &(VaultKeySpec){.type = VAULT_KEY_EC_P256,
                                           .obj_flags = VAULT_OBJ_VERIFY | VAULT_OBJ_MODIFIABLE}),
        0);
    assert_int_equal(vault_sign(v, &alice, "ver", &ecdsa, (const uint8_t *)"m", 1, &sig, &sn),
                     -EPERM);
    /* The flag can be turned on (modifiable) and the key then signs. */
    assert_int_equal(vault_key_set_object(v, &alice, "ver", VAULT_OBJ_SIGN, 0, NULL, 0), 0);
    assert_int_equal(vault_sign(v, &alice, "ver", &ecdsa, (const uint8_t *)"m", 1, &sig, &sn), 0);
    assert_int_equal(vault_verify(v, &alice, "ver", &ecdsa, (const uint8_t *)"m", 1, sig, sn), 0);
    /* and off again: the same valid signature is refused */
    assert_int_equal(vault_key_set_object(v, &alice, "ver", 0, VAULT_OBJ_VERIFY, NULL, 0), 0);
    assert_int_equal(vault_verify(v, &alice, "ver", &ecdsa, (const uint8_t *)"m", 1, sig, sn),
                     -EPERM);
    free(sig);
    vault_free(v);
}

static void test_set_rules(void **state) {
    Vault *v = new_vault();
    const VaultAttr label = {CKA_LABEL, (const uint8_t *)"lbl", 3};
    const VaultAttr id = {CKA_ID, (const uint8_t *)"\x01\x02", 2};
    json_t *j;
    (void)state;
    assert_int_equal(
        vault_key_generate(v, &alice, "k",
                           &(VaultKeySpec){.type = VAULT_KEY_AES256,
                                           .obj_flags = VAULT_OBJ_DEFAULT | VAULT_OBJ_EXTRACTABLE,
                                           .attrs = &label,
                                           .n_attrs = 1}),
        0);
    assert_false(flags_of(v, "k") & VAULT_OBJ_NEVER_EXTRACTABLE);
    /* one-way: SENSITIVE stays on, EXTRACTABLE may go off but never back on */
    assert_int_equal(vault_key_set_object(v, &alice, "k", 0, VAULT_OBJ_SENSITIVE, NULL, 0), -EPERM);
    assert_int_equal(vault_key_set_object(v, &alice, "k", 0, VAULT_OBJ_EXTRACTABLE, NULL, 0), 0);
    assert_int_equal(vault_key_set_object(v, &alice, "k", VAULT_OBJ_EXTRACTABLE, 0, NULL, 0),
                     -EPERM);
    assert_int_equal(vault_key_set_object(v, &alice, "k", VAULT_OBJ_TRUSTED, 0, NULL, 0), -EPERM);
    assert_int_equal(vault_key_set_object(v, &alice, "k", VAULT_OBJ_LOCAL, 0, NULL, 0), -EINVAL);
    /* attributes: add, replace, remove; refusals change nothing */
    assert_int_equal(vault_key_set_object(v, &alice, "k", 0, 0, &id, 1), 0);
    assert_int_equal(vault_key_set_object(v, &alice, "k", 0, 0,
                                          &(VaultAttr){CKA_LABEL, (const uint8_t *)"second", 6}, 1),
                     0);
    assert_int_equal(vault_key_set_object(v, &alice, "k", 0, 0,
                                          &(VaultAttr){CKA_VALUE, (const uint8_t *)"k", 1}, 1),
                     -EINVAL);
    {
        VaultAttr two[2] = {id, id};
        assert_int_equal(vault_key_set_object(v, &alice, "k", 0, 0, two, 2), -EINVAL);
    }
    {
        static uint8_t big[VAULT_ATTR_VALUE_MAX + 1];
        VaultAttr many[VAULT_ATTR_MAX + 1];
        assert_int_equal(vault_key_set_object(v, &alice, "k", 0, 0,
                                              &(VaultAttr){0x80000001u, big, sizeof big}, 1),
                         -E2BIG);
        for (size_t i = 0; i < VAULT_ATTR_MAX + 1; i++)
            many[i] = (VaultAttr){0x80000000u + (uint32_t)i, big, 1};
        assert_int_equal(vault_key_set_object(v, &alice, "k", 0, 0, many, VAULT_ATTR_MAX + 1),
                         -E2BIG);
        /* 5 x 1000 bytes: over the 4096-byte total */
        for (size_t i = 0; i < 5; i++)
            many[i] = (VaultAttr){0x80000000u + (uint32_t)i, big, 1000};
        assert_int_equal(vault_key_set_object(v, &alice, "k", 0, 0, many, 5), -E2BIG);
    }
    j = describe(v, "k");
    {
        json_t *a = json_object_get(j, "attrs");
        assert_int_equal(json_array_size(a), 2);
        assert_int_equal(json_integer_value(json_object_get(json_array_get(a, 0), "type")),
                         CKA_LABEL);
        assert_string_equal(json_string_value(json_object_get(json_array_get(a, 0), "value")),
                            "7365636f6e64");
        assert_string_equal(json_string_value(json_object_get(json_array_get(a, 1), "value")),
                            "0102");
    }
    json_decref(j);
    assert_int_equal(vault_key_set_object(v, &alice, "k", 0, 0, &(VaultAttr){CKA_ID, NULL, 0}, 1),
                     0); /* removed */
    j = describe(v, "k");
    assert_int_equal(json_array_size(json_object_get(j, "attrs")), 1);
    json_decref(j);
    /* only an administrator; and nothing on a key that is not modifiable */
    assert_int_equal(vault_key_set_object(v, &bob, "1000/k", 0, 0, &id, 1), -EPERM);
    assert_int_equal(vault_key_generate(
                         v, &alice, "fixed",
                         &(VaultKeySpec){.type = VAULT_KEY_AES256, .obj_flags = VAULT_OBJ_ENCRYPT}),
                     0);
    assert_int_equal(vault_key_set_object(v, &alice, "fixed", 0, 0, &id, 1), -EPERM);
    assert_int_equal(vault_key_set_object(v, &alice, "fixed", VAULT_OBJ_DECRYPT, 0, NULL, 0),
                     -EPERM);
    vault_free(v);
}

static void test_keystore_round_trip(void **state) {
    Vault *v = new_vault(), *w = new_vault();
    const VaultAttr attrs[2] = {{CKA_LABEL, (const uint8_t *)"my key", 6},
                                {CKA_ID, (const uint8_t *)"\xaa", 1}};
    Secret *content = NULL;
    json_t *a, *b;
    (void)state;
    assert_int_equal(
        vault_key_generate(
            v, &alice, "k",
            &(VaultKeySpec){.type = VAULT_KEY_ED25519,
                            .obj_flags = VAULT_OBJ_SIGN | VAULT_OBJ_VERIFY | VAULT_OBJ_SENSITIVE,
                            .attrs = attrs,
                            .n_attrs = 2}),
        0);
    assert_int_equal(keystore_serialize(v, &content), 0);
    assert_int_equal(keystore_deserialize(w, secret_const_data(content), secret_size(content)), 0);
    a = describe(v, "k");
    b = describe(w, "k");
    assert_true(json_equal(json_object_get(a, "attrs"), json_object_get(b, "attrs")));
    assert_true(json_equal(json_object_get(a, "flags"), json_object_get(b, "flags")));
    assert_true(json_equal(json_object_get(a, "spki"), json_object_get(b, "spki")));
    json_decref(a);
    json_decref(b);
    /* every truncation is refused */
    for (size_t n = 0; n < secret_size(content); n++) {
        Vault *x = new_vault();
        assert_int_not_equal(keystore_deserialize(x, secret_const_data(content), n), 0);
        vault_free(x);
    }
    secret_free(content);
    vault_free(w);
    vault_free(v);
}

/* A vault holding "1000/kat", an AES-256 key of known bytes, through the keystore content
 * (format 3, no attributes): the vault has no plaintext import yet. */
static Vault *vault_with_key(const uint8_t key[32], uint32_t flags) {
    static const char name[] = "1000/kat";
    uint8_t c[256], *p = c;
    Vault *v = new_vault();
#define BE32(x)                                                                                    \
    (*p++ = (uint8_t)((x) >> 24), *p++ = (uint8_t)((x) >> 16), *p++ = (uint8_t)((x) >> 8),         \
     *p++ = (uint8_t)(x))
#define BE16(x) (*p++ = (uint8_t)((x) >> 8), *p++ = (uint8_t)(x))
    memcpy(p, "NTKC", 4);
    p += 4;
    BE32(3);
    BE32(1);
    BE16(sizeof name - 1);
    memcpy(p, name, sizeof name - 1);
    p += sizeof name - 1;
    *p++ = 0; /* aes256 */
    *p++ = 0; /* generated */
    *p++ = 0; /* local */
    *p++ = 0;
    BE32(0); /* max age */
    BE16(0); /* label */
    BE32(1); /* latest */
    BE32(1); /* min */
    BE16(1); /* use: uid 1000 */
    BE32(1000);
    BE16(0);
    BE16(0);
    BE16(1); /* admin: uid 1000 */
    BE32(1000);
    BE16(0);
    BE16(0);
    BE32(flags);
    BE16(0); /* attrs */
    BE32(1); /* version 1 */
    BE32(0);
    BE32(1700000000);
    BE32(32);
    memcpy(p, key, 32);
    p += 32;
    BE32(0); /* tokens */
#undef BE32
#undef BE16
    assert_int_equal(keystore_deserialize(v, c, (size_t)(p - c)), 0);
    return v;
}

static size_t unhex(const char *h, uint8_t *out) {
    size_t n = strlen(h) / 2;
    for (size_t i = 0; i < n; i++)
        assert_int_equal(sscanf(h + 2 * i, "%2hhx", &out[i]), 1);
    return n;
}

static void crypt_kat(Vault *v, VaultAesMode mode, const char *iv, const char *aad,
                      unsigned tag_bits, const char *pt, const char *ct) {
    uint8_t ivb[128], aadb[128], ptb[256], ctb[256], out[512], back[512];
    size_t ivl = unhex(iv, ivb), aadl = unhex(aad, aadb), ptl = unhex(pt, ptb),
           ctl = unhex(ct, ctb), n = 0, m = 0;
    VaultAesParams p = {
        .mode = mode, .iv = ivb, .iv_len = ivl, .aad = aadb, .aad_len = aadl, .tag_bits = tag_bits};
    assert_int_equal(vault_aes_crypt(v, &alice, "kat", &p, true, ptb, ptl, out, sizeof out, &n), 0);
    assert_int_equal(n, ctl);
    assert_memory_equal(out, ctb, ctl);
    assert_int_equal(vault_aes_crypt(v, &alice, "kat", &p, false, out, n, back, sizeof back, &m),
                     0);
    assert_int_equal(m, ptl);
    assert_memory_equal(back, ptb, ptl);
    if (mode == VAULT_AES_GCM) {
        /* a flipped tag bit: refused, output wiped */
        out[n - 1] ^= 1;
        memset(back, 0xee, sizeof back);
        assert_int_equal(
            vault_aes_crypt(v, &alice, "kat", &p, false, out, n, back, sizeof back, &m),
            -EKEYREJECTED);
        for (size_t i = 0; i < sizeof back; i++)
            assert_int_equal(back[i], 0);
    }
}

static void test_aes_modes(void **state) {
    uint8_t key[32], zero[32] = {0}, out[64];
    size_t n;
    Vault *v;
    (void)state;
    /* NIST SP 800-38A F.2.5 (CBC-AES256) and F.5.5 (CTR-AES256), two blocks each */
    unhex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4", key);
    v = vault_with_key(key, VAULT_OBJ_DEFAULT);
    crypt_kat(v, VAULT_AES_CBC, "000102030405060708090a0b0c0d0e0f", "", 0,
              "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51",
              "f58c4c04d6e5f1ba779eabfb5f7bfbd69cfc4e967edb808d679f777bc6702c7d");
    crypt_kat(v, VAULT_AES_CTR, "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff", "", 0,
              "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51",
              "601ec313775789a5b7a7f504bbf3d228f443e3ca4d62b59aca84e990cacaf5c5");
    /* CBC-PAD: one block of data gains a full block of padding (first block as CBC) */
    {
        uint8_t iv[16], pt[16];
        VaultAesParams p = {.mode = VAULT_AES_CBC_PAD, .iv = iv, .iv_len = 16};
        unhex("000102030405060708090a0b0c0d0e0f", iv);
        unhex("6bc1bee22e409f96e93d7e117393172a", pt);
        assert_int_equal(vault_aes_crypt(v, &alice, "kat", &p, true, pt, 16, out, sizeof out, &n),
                         0);
        assert_int_equal(n, 32);
        unhex("f58c4c04d6e5f1ba779eabfb5f7bfbd6", pt);
        assert_memory_equal(out, pt, 16);
        /* a tampered last block: bad padding */
        out[31] ^= 0x55;
        assert_int_equal(vault_aes_crypt(v, &alice, "kat", &p, false, out, 32, out, sizeof out, &n),
                         -EBADMSG);
    }
    /* parameter refusals */
    {
        uint8_t iv[16] = {0}, d[20] = {0};
        VaultAesParams p = {.mode = VAULT_AES_CBC, .iv = iv, .iv_len = 16};
        assert_int_equal(vault_aes_crypt(v, &alice, "kat", &p, true, d, 20, out, sizeof out, &n),
                         -EINVAL); /* not a multiple of 16 */
        p.iv_len = 8;
        assert_int_equal(vault_aes_crypt(v, &alice, "kat", &p, true, d, 16, out, sizeof out, &n),
                         -EINVAL);
        /* CTR: 8 counter bits at 0xff leave one block */
        p = (VaultAesParams){.mode = VAULT_AES_CTR, .iv = iv, .iv_len = 16, .counter_bits = 8};
        iv[15] = 0xff;
        assert_int_equal(vault_aes_crypt(v, &alice, "kat", &p, true, d, 16, out, sizeof out, &n),
                         0);
        assert_int_equal(vault_aes_crypt(v, &alice, "kat", &p, true, d, 17, out, sizeof out, &n),
                         -EINVAL);
        p = (VaultAesParams){.mode = VAULT_AES_GCM, .iv = iv, .iv_len = 12, .tag_bits = 64};
        assert_int_equal(vault_aes_crypt(v, &alice, "kat", &p, true, d, 16, out, sizeof out, &n),
                         -EINVAL);
        /* another uid: the ACL */
        p.tag_bits = 0;
        assert_int_equal(vault_aes_crypt(v, &bob, "1000/kat", &p, true, d, 16, out, sizeof out, &n),
                         -EPERM);
    }
    vault_free(v);
    /* GCM, McGrew-Viega test cases 13 and 14 (AES-256, zero key, zero 96-bit IV) */
    v = vault_with_key(zero, VAULT_OBJ_DEFAULT);
    crypt_kat(v, VAULT_AES_GCM, "000000000000000000000000", "", 0, "",
              "530f8afbc74536b9a963b4f1c4cb738b");
    crypt_kat(v, VAULT_AES_GCM, "000000000000000000000000", "", 0,
              "00000000000000000000000000000000",
              "cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919");
    /* a 96-bit tag is the first 12 bytes of the full tag */
    crypt_kat(v, VAULT_AES_GCM, "000000000000000000000000", "", 96,
              "00000000000000000000000000000000",
              "cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5");
    vault_free(v);
    /* without the ENCRYPT flag: refused */
    v = vault_with_key(zero, VAULT_OBJ_DECRYPT);
    {
        uint8_t iv[12] = {0};
        VaultAesParams p = {.mode = VAULT_AES_GCM, .iv = iv, .iv_len = 12};
        assert_int_equal(vault_aes_crypt(v, &alice, "kat", &p, true, zero, 16, out, sizeof out, &n),
                         -EPERM);
    }
    vault_free(v);
}

/* Independent check with OpenSSL: DigestVerify of msg with SHA-256 against the exported key. */
static bool openssl_verifies(Vault *v, const char *name, const uint8_t *msg, size_t msg_len,
                             const uint8_t *der_sig, size_t sig_len) {
    char *pem = NULL;
    EVP_PKEY *pk;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    bool ok;
    assert_int_equal(vault_key_export_public(v, &alice, name, 0, VAULT_PUB_PEM, &pem), 0);
    pk = pem_to_pkey(pem);
    free(pem);
    assert_non_null(pk);
    ok = EVP_DigestVerifyInit(c, NULL, EVP_sha256(), NULL, pk) == 1 &&
         EVP_DigestVerify(c, der_sig, sig_len, msg, msg_len) == 1;
    EVP_MD_CTX_free(c);
    EVP_PKEY_free(pk);
    return ok;
}

/* Plaintext import (vault_key_import_plain, OBJECT_CREATE with a VALUE): origin imported, so no
 * LOCAL / ALWAYS_SENSITIVE / NEVER_EXTRACTABLE; the material is the caller's (a GCM known
 * answer, an ECDSA signature verified with the caller's own key); wrong sizes, wrong PKCS#8
 * types and taken names refused without a key. */
static void test_import_plain(void **state) {
    uint8_t key[32];
    Vault *v = new_vault();
    VaultKeySpec aes = {.type = VAULT_KEY_AES256};
    (void)state;
    /* GCM spec (McGrew and Viega) test case 16: AES-256, 96-bit IV, 60-byte plaintext */
    unhex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308", key);
    assert_int_equal(vault_key_import_plain(v, &alice, "kat", &aes, key, 31), -EBADMSG);
    assert_int_equal(vault_key_import_plain(v, &alice, "kat", &aes, key, 33), -EBADMSG);
    assert_int_equal(vault_key_import_plain(v, &alice, "kat", &aes, key, 32), 0);
    assert_int_equal(flags_of(v, "kat"), vault_obj_flags_history(VAULT_OBJ_DEFAULT));
    assert_int_equal(vault_key_import_plain(v, &alice, "kat", &aes, key, 32), -EEXIST);
    crypt_kat(v, VAULT_AES_GCM, "cafebabefacedbaddecaf888",
              "feedfacedeadbeeffeedfacedeadbeefabaddad2", 128,
              "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
              "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
              "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
              "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"
              "76fc6ece0f4e1768cddf8853bb2d551b");
    {
        json_t *j = describe(v, "kat");
        assert_string_equal(json_string_value(json_object_get(j, "origin")), "imported");
        json_decref(j);
    }
    /* EC P-256 from PKCS#8: the vault's signature verifies under the importer's key */
    {
        static const uint8_t msg[] = "imported";
        uint8_t digest[32], *p8der = NULL, *sig = NULL, *der = NULL;
        unsigned dl = 0;
        size_t sl;
        EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
        PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(pk);
        int p8len = i2d_PKCS8_PRIV_KEY_INFO(p8, &p8der);
        assert_true(p8len > 0);
        assert_int_equal(vault_key_import_plain(v, &alice, "ed",
                                                &(VaultKeySpec){.type = VAULT_KEY_ED25519}, p8der,
                                                (size_t)p8len),
                         -EBADMSG);
        assert_int_equal(vault_key_import_plain(v, &alice, "ec",
                                                &(VaultKeySpec){.type = VAULT_KEY_EC_P256}, p8der,
                                                (size_t)p8len - 1),
                         -EBADMSG);
        assert_int_equal(vault_key_import_plain(v, &alice, "ec",
                                                &(VaultKeySpec){.type = VAULT_KEY_EC_P256}, p8der,
                                                (size_t)p8len),
                         0);
        assert_int_equal(EVP_Digest(msg, sizeof msg - 1, digest, &dl, EVP_sha256(), NULL), 1);
        assert_int_equal(
            vault_sign_raw(v, &alice, "ec", VAULT_RAW_SIG_ECDSA, digest, 32, &sig, &sl), 0);
        assert_int_equal(sl, 64);
        ECDSA_SIG *es = ECDSA_SIG_new();
        assert_int_equal(
            ECDSA_SIG_set0(es, BN_bin2bn(sig, 32, NULL), BN_bin2bn(sig + 32, 32, NULL)), 1);
        int n = i2d_ECDSA_SIG(es, &der);
        assert_true(n > 0);
        EVP_MD_CTX *c = EVP_MD_CTX_new();
        assert_int_equal(EVP_DigestVerifyInit(c, NULL, EVP_sha256(), NULL, pk), 1);
        assert_int_equal(EVP_DigestVerify(c, der, (size_t)n, msg, sizeof msg - 1), 1);
        EVP_MD_CTX_free(c);
        OPENSSL_free(der);
        ECDSA_SIG_free(es);
        free(sig);
        OPENSSL_clear_free(p8der, (size_t)p8len);
        PKCS8_PRIV_KEY_INFO_free(p8);
        EVP_PKEY_free(pk);
    }
    /* nothing made of the refusals */
    assert_int_equal(vault_key_describe(v, &alice, "ed", &(json_t *){NULL}), -ENOKEY);
    vault_free(v);
}

static void test_raw_signatures(void **state) {
    static const uint8_t msg[] = "the message";
    static const uint8_t sha256_prefix[] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60,
                                            0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                                            0x01, 0x05, 0x00, 0x04, 0x20};
    uint8_t digest[32], info[sizeof sha256_prefix + 32], *sig = NULL, *der = NULL;
    unsigned dl = 0;
    size_t sl;
    Vault *v = new_vault();
    (void)state;
    assert_int_equal(EVP_Digest(msg, sizeof msg - 1, digest, &dl, EVP_sha256(), NULL), 1);
    assert_int_equal(
        vault_key_generate(v, &alice, "ec", &(VaultKeySpec){.type = VAULT_KEY_EC_P256}), 0);
    assert_int_equal(
        vault_key_generate(v, &alice, "rsa", &(VaultKeySpec){.type = VAULT_KEY_RSA2048}), 0);
    /* CKM_ECDSA over a SHA-256 digest: r || s of 64 bytes, valid for OpenSSL as ECDSA-SHA256 */
    assert_int_equal(vault_sign_raw(v, &alice, "ec", VAULT_RAW_SIG_ECDSA, digest, 32, &sig, &sl),
                     0);
    assert_int_equal(sl, 64);
    {
        ECDSA_SIG *es = ECDSA_SIG_new();
        int n;
        assert_int_equal(
            ECDSA_SIG_set0(es, BN_bin2bn(sig, 32, NULL), BN_bin2bn(sig + 32, 32, NULL)), 1);
        n = i2d_ECDSA_SIG(es, &der);
        assert_true(n > 0);
        assert_true(openssl_verifies(v, "ec", msg, sizeof msg - 1, der, (size_t)n));
        OPENSSL_free(der);
        ECDSA_SIG_free(es);
    }
    assert_int_equal(vault_verify_raw(v, &alice, "ec", VAULT_RAW_SIG_ECDSA, digest, 32, sig, sl),
                     0);
    sig[5] ^= 1;
    assert_int_equal(vault_verify_raw(v, &alice, "ec", VAULT_RAW_SIG_ECDSA, digest, 32, sig, sl),
                     -EKEYREJECTED);
    free(sig);
    /* any hash length up to 64 (a SHA-512-sized input), none beyond */
    {
        uint8_t h[65] = {1};
        assert_int_equal(vault_sign_raw(v, &alice, "ec", VAULT_RAW_SIG_ECDSA, h, 64, &sig, &sl), 0);
        assert_int_equal(vault_verify_raw(v, &alice, "ec", VAULT_RAW_SIG_ECDSA, h, 64, sig, sl), 0);
        free(sig);
        assert_int_equal(vault_sign_raw(v, &alice, "ec", VAULT_RAW_SIG_ECDSA, h, 65, &sig, &sl),
                         -EINVAL);
    }
    /* CKM_RSA_PKCS over a SHA-256 DigestInfo = RSA PKCS#1 v1.5 with SHA-256 for OpenSSL */
    memcpy(info, sha256_prefix, sizeof sha256_prefix);
    memcpy(info + sizeof sha256_prefix, digest, 32);
    assert_int_equal(
        vault_sign_raw(v, &alice, "rsa", VAULT_RAW_SIG_RSA_PKCS1, info, sizeof info, &sig, &sl), 0);
    assert_int_equal(sl, 256);
    assert_true(openssl_verifies(v, "rsa", msg, sizeof msg - 1, sig, sl));
    assert_int_equal(
        vault_verify_raw(v, &alice, "rsa", VAULT_RAW_SIG_RSA_PKCS1, info, sizeof info, sig, sl), 0);
    free(sig);
    {
        uint8_t big[246] = {0};
        assert_int_equal(
            vault_sign_raw(v, &alice, "rsa", VAULT_RAW_SIG_RSA_PKCS1, big, 246, &sig, &sl),
            -EINVAL);
    }
    /* the wrong key type, another uid */
    assert_int_equal(vault_sign_raw(v, &alice, "rsa", VAULT_RAW_SIG_ECDSA, digest, 32, &sig, &sl),
                     -EOPNOTSUPP);
    assert_int_equal(vault_sign_raw(v, &bob, "1000/ec", VAULT_RAW_SIG_ECDSA, digest, 32, &sig, &sl),
                     -EPERM);
    vault_free(v);
}

/* Contexts reused from a key version's cache (spd: GCM with a 96-bit caller IV, raw ECDSA): GCM
 * results equal OpenSSL's own computation and the uncached path's, also right after a refused tag
 * left a context behind; every cached-context ECDSA signature verifies and draws its own nonce. */
static void gcm_ref(const uint8_t key[32], const uint8_t iv[12], const uint8_t *aad, size_t aad_len,
                    const uint8_t *pt, size_t n, size_t tag_len, uint8_t *out) {
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int l = 0;
    assert_non_null(c);
    assert_int_equal(EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, key, iv), 1);
    if (aad_len)
        assert_int_equal(EVP_EncryptUpdate(c, NULL, &l, aad, (int)aad_len), 1);
    assert_int_equal(EVP_EncryptUpdate(c, out, &l, pt, (int)n), 1);
    assert_int_equal(EVP_EncryptFinal_ex(c, out + l, &l), 1);
    assert_int_equal(EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, (int)tag_len, out + n), 1);
    EVP_CIPHER_CTX_free(c);
}

static void test_context_reuse(void **state) {
    static const uint8_t aad[] = "header";
    uint8_t key[32], iv[12], pt[100], out[2][4][160], ref[160], back[160], digest[32] = {7};
    uint8_t r[16][32], *sig = NULL;
    size_t n, m, sl;
    Vault *v;
    (void)state;
    memset(key, 0x42, sizeof key);
    memset(out, 0, sizeof out);
    v = vault_with_key(key, VAULT_OBJ_DEFAULT);
    for (int pass = 0; pass < 2; pass++) {
        vault_set_context_cache(pass == 0);
        for (int i = 0; i < 4; i++) {
            size_t tag = i == 3 ? 12 : 16;
            VaultAesParams p = {.mode = VAULT_AES_GCM,
                                .iv = iv,
                                .iv_len = 12,
                                .aad = i % 2 ? aad : NULL,
                                .aad_len = i % 2 ? sizeof aad : 0,
                                .tag_bits = (unsigned)tag * 8};
            memset(iv, i + 1, sizeof iv);
            memset(pt, 'a' + i, sizeof pt);
            assert_int_equal(vault_aes_crypt(v, &alice, "kat", &p, true, pt, sizeof pt,
                                             out[pass][i], sizeof out[pass][i], &n),
                             0);
            assert_int_equal(n, sizeof pt + tag);
            gcm_ref(key, iv, p.aad, p.aad_len, pt, sizeof pt, tag, ref);
            assert_memory_equal(out[pass][i], ref, n);
            out[pass][i][0] ^= 1; /* refused, and the context goes back to the cache */
            assert_int_equal(vault_aes_crypt(v, &alice, "kat", &p, false, out[pass][i], n, back,
                                             sizeof back, &m),
                             -EKEYREJECTED);
            out[pass][i][0] ^= 1;
            assert_int_equal(vault_aes_crypt(v, &alice, "kat", &p, false, out[pass][i], n, back,
                                             sizeof back, &m),
                             0);
            assert_int_equal(m, sizeof pt);
            assert_memory_equal(back, pt, sizeof pt);
        }
    }
    vault_set_context_cache(true);
    assert_memory_equal(out[0], out[1], sizeof out[0]);
    vault_free(v);

    v = new_vault();
    assert_int_equal(
        vault_key_generate(v, &alice, "ec", &(VaultKeySpec){.type = VAULT_KEY_EC_P256}), 0);
    for (int i = 0; i < 16; i++) {
        assert_int_equal(
            vault_sign_raw(v, &alice, "ec", VAULT_RAW_SIG_ECDSA, digest, 32, &sig, &sl), 0);
        assert_int_equal(sl, 64);
        assert_int_equal(
            vault_verify_raw(v, &alice, "ec", VAULT_RAW_SIG_ECDSA, digest, 32, sig, sl), 0);
        memcpy(r[i], sig, 32);
        for (int j = 0; j < i; j++)
            assert_memory_not_equal(r[i], r[j], 32);
        free(sig);
        sig = NULL;
    }
    vault_free(v);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),     cmocka_unit_test(test_usage_enforced),
        cmocka_unit_test(test_set_rules),    cmocka_unit_test(test_keystore_round_trip),
        cmocka_unit_test(test_aes_modes),    cmocka_unit_test(test_raw_signatures),
        cmocka_unit_test(test_import_plain), cmocka_unit_test(test_context_reuse),
    };
    secret_set_allow_unlocked(true);
    if (vault_init(0) < 0)
        return 1;
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    /* libjose initialises OpenSSL from a library constructor, so OpenSSL's atexit cleanup is
     * not run in time for LeakSanitizer: clean up explicitly. */
    OPENSSL_cleanup();
    return r;
}
