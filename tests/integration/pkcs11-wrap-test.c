/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cmocka tests of the module's wrapping and derivation (hard-wrap): C_WrapKey / C_UnwrapKey with
 * CKM_AES_KEY_WRAP (RFC 3394) and CKM_AES_KEY_WRAP_PAD (RFC 5649), C_DeriveKey with
 * CKM_ECDH1_DERIVE, on a real vhsmd this test starts. Results are checked independently with
 * plain OpenSSL in the test (unwrapping the module's blobs with the known KEK, computing the
 * ECDH secret and the X9.63 KDF, verifying signatures with the original public keys) and
 * against the RFC 3394 known-answer vectors.
 *
 * Environment (set by pkcs11.sh): P11T_MODULE, P11T_VHSMD, P11T_DIR (see pkcs11-test.c).
 */
#include <dlfcn.h>
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <p11-kit/pkcs11.h>

#include "p11.h"

#include "p11-harness.h"

/* ---- helpers -------------------------------------------------------------------------------- */

#define SO_PIN "so-secret-1"

static CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
static CK_OBJECT_CLASS cls_secret = CKO_SECRET_KEY, cls_private = CKO_PRIVATE_KEY;
static CK_KEY_TYPE kt_aes = CKK_AES, kt_generic = CKK_GENERIC_SECRET, kt_ec = CKK_EC,
                   kt_rsa = CKK_RSA;
static const uint8_t oid_p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
static const uint8_t oid_p384[] = {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22};

static CK_SESSION_HANDLE open_rw(void) {
    CK_C_INITIALIZE_ARGS a = {.flags = CKF_OS_LOCKING_OK};
    CK_SESSION_HANDLE h = 0;
    assert_int_equal(F->C_Initialize(&a), CKR_OK);
    assert_int_equal(F->C_OpenSession(0, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &h),
                     CKR_OK);
    return h;
}

static size_t unhex(const char *h, uint8_t *out, size_t cap) {
    size_t n = strlen(h) / 2;
    assert_true(n <= cap);
    for (size_t i = 0; i < n; i++) {
        unsigned v = 0;
        assert_int_equal(sscanf(h + 2 * i, "%2x", &v), 1);
        out[i] = (uint8_t)v;
    }
    return n;
}

/* An AES key of len bytes, generated in vhsmd, with usage and extractability as given. */
static CK_OBJECT_HANDLE gen_aes(CK_SESSION_HANDLE s, CK_ULONG len, bool extractable, bool wrap,
                                bool unwrap) {
    CK_MECHANISM m = {CKM_AES_KEY_GEN, NULL, 0};
    CK_OBJECT_HANDLE h = 0;
    CK_ATTRIBUTE t[] = {{CKA_VALUE_LEN, &len, sizeof(len)},
                        {CKA_TOKEN, &yes, sizeof(yes)},
                        {CKA_EXTRACTABLE, extractable ? &yes : &no, sizeof(yes)},
                        {CKA_WRAP, wrap ? &yes : &no, sizeof(yes)},
                        {CKA_UNWRAP, unwrap ? &yes : &no, sizeof(yes)},
                        /* a key wraps keys or encrypts data, never both (vhsmd refuses to wrap
                         * with a key that has been a data cipher) */
                        {CKA_ENCRYPT, wrap || unwrap ? &no : &yes, sizeof(yes)},
                        {CKA_DECRYPT, wrap || unwrap ? &no : &yes, sizeof(yes)}};
    assert_int_equal(F->C_GenerateKey(s, &m, t, 7, &h), CKR_OK);
    return h;
}

/* An AES key imported from its value (a KEK the test knows). */
static CK_OBJECT_HANDLE import_aes(CK_SESSION_HANDLE s, const uint8_t *key, size_t n,
                                   bool extractable) {
    CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls_secret, sizeof(cls_secret)},
                        {CKA_KEY_TYPE, &kt_aes, sizeof(kt_aes)},
                        {CKA_TOKEN, &yes, sizeof(yes)},
                        {CKA_WRAP, &yes, sizeof(yes)},
                        {CKA_UNWRAP, &yes, sizeof(yes)},
                        {CKA_ENCRYPT, &no, sizeof(no)},
                        {CKA_DECRYPT, &no, sizeof(no)},
                        {CKA_EXTRACTABLE, extractable ? &yes : &no, sizeof(yes)},
                        {CKA_VALUE, (void *)key, n}};
    CK_OBJECT_HANDLE h = 0;
    assert_int_equal(F->C_CreateObject(s, t, 9, &h), CKR_OK);
    return h;
}

static CK_BBOOL bool_attr(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE type) {
    CK_BBOOL b = 2;
    CK_ATTRIBUTE a = {type, &b, sizeof(b)};
    assert_int_equal(F->C_GetAttributeValue(s, h, &a, 1), CKR_OK);
    return b;
}

static CK_ULONG ulong_attr(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE type) {
    CK_ULONG v = 0;
    CK_ATTRIBUTE a = {type, &v, sizeof(v)};
    assert_int_equal(F->C_GetAttributeValue(s, h, &a, 1), CKR_OK);
    return v;
}

/* Objects the session sees (to show that a failed unwrap or derive created nothing). */
static CK_ULONG count_objects(CK_SESSION_HANDLE s) {
    CK_OBJECT_HANDLE h[256];
    CK_ULONG n = 0;
    assert_int_equal(F->C_FindObjectsInit(s, NULL, 0), CKR_OK);
    assert_int_equal(F->C_FindObjects(s, h, 256, &n), CKR_OK);
    assert_int_equal(F->C_FindObjectsFinal(s), CKR_OK);
    return n;
}

static CK_RV wrap(CK_SESSION_HANDLE s, CK_MECHANISM_TYPE mech, CK_OBJECT_HANDLE kek,
                  CK_OBJECT_HANDLE k, uint8_t *out, CK_ULONG *len) {
    CK_MECHANISM m = {mech, NULL, 0};
    return F->C_WrapKey(s, &m, kek, k, out, len);
}

static CK_RV unwrap_secret(CK_SESSION_HANDLE s, CK_MECHANISM_TYPE mech, CK_OBJECT_HANDLE kek,
                           const uint8_t *in, CK_ULONG n, CK_KEY_TYPE *kt, CK_ULONG value_len,
                           CK_OBJECT_HANDLE *ret) {
    CK_MECHANISM m = {mech, NULL, 0};
    CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls_secret, sizeof(cls_secret)},
                        {CKA_KEY_TYPE, kt, sizeof(*kt)},
                        {CKA_TOKEN, &yes, sizeof(yes)},
                        {CKA_EXTRACTABLE, &yes, sizeof(yes)},
                        {CKA_LABEL, "unwrapped", 9},
                        {CKA_VALUE_LEN, &value_len, sizeof(value_len)}};
    return F->C_UnwrapKey(s, &m, kek, (CK_BYTE_PTR)in, n, t, value_len ? 6 : 5, ret);
}

/* AES-GCM with the module (encrypt = true) or decrypt. */
static CK_RV gcm(CK_SESSION_HANDLE s, bool enc, CK_OBJECT_HANDLE k, const uint8_t *in, CK_ULONG n,
                 uint8_t *out, CK_ULONG *ol) {
    static uint8_t iv[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    CK_GCM_PARAMS gp = {iv, 12, 96, NULL, 0, 128};
    CK_MECHANISM m = {CKM_AES_GCM, &gp, sizeof(gp)};
    CK_RV rv = enc ? F->C_EncryptInit(s, &m, k) : F->C_DecryptInit(s, &m, k);
    if (rv != CKR_OK)
        return rv;
    return enc ? F->C_Encrypt(s, (CK_BYTE_PTR)in, n, out, ol)
               : F->C_Decrypt(s, (CK_BYTE_PTR)in, n, out, ol);
}

/* The same GCM decryption with OpenSSL and a raw key (the independent check). */
static void openssl_gcm_decrypt(const uint8_t *key, size_t kn, const uint8_t *ct, size_t n,
                                uint8_t *pt) {
    static uint8_t iv[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    const EVP_CIPHER *c = kn == 16   ? EVP_aes_128_gcm()
                          : kn == 24 ? EVP_aes_192_gcm()
                                     : EVP_aes_256_gcm();
    EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new();
    int l = 0, f = 0;
    assert_int_equal(EVP_DecryptInit_ex(x, c, NULL, key, iv), 1);
    assert_int_equal(EVP_DecryptUpdate(x, pt, &l, ct, (int)(n - 16)), 1);
    assert_int_equal(EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_GCM_SET_TAG, 16, (void *)(ct + n - 16)), 1);
    assert_int_equal(EVP_DecryptFinal_ex(x, pt + l, &f), 1);
    EVP_CIPHER_CTX_free(x);
}

/* RFC 3394 / 5649 with OpenSSL (enc or dec); returns the output length, 0 on failure. */
static size_t openssl_kw(bool enc, bool pad, const uint8_t *kek, size_t kn, const uint8_t *in,
                         size_t n, uint8_t *out) {
    const EVP_CIPHER *c = kn == 16   ? (pad ? EVP_aes_128_wrap_pad() : EVP_aes_128_wrap())
                          : kn == 24 ? (pad ? EVP_aes_192_wrap_pad() : EVP_aes_192_wrap())
                                     : (pad ? EVP_aes_256_wrap_pad() : EVP_aes_256_wrap());
    EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new();
    int l = 0, f = 0;
    EVP_CIPHER_CTX_set_flags(x, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
    size_t r = 0;
    if (EVP_CipherInit_ex(x, c, NULL, kek, NULL, enc) == 1 &&
        EVP_CipherUpdate(x, out, &l, in, (int)n) == 1 && EVP_CipherFinal_ex(x, out + l, &f) == 1)
        r = (size_t)(l + f);
    EVP_CIPHER_CTX_free(x);
    return r;
}

static void gen_pair(CK_SESSION_HANDLE s, CK_MECHANISM_TYPE mech, const uint8_t *oid, size_t on,
                     bool extractable, bool derive, CK_OBJECT_HANDLE *pub, CK_OBJECT_HANDLE *priv) {
    CK_MECHANISM m = {mech, NULL, 0};
    CK_ULONG bits = 2048;
    CK_ATTRIBUTE pt[2] = {{CKA_TOKEN, &yes, sizeof(yes)}};
    if (mech == CKM_EC_KEY_PAIR_GEN)
        pt[1] = (CK_ATTRIBUTE){CKA_EC_PARAMS, (void *)oid, on};
    else
        pt[1] = (CK_ATTRIBUTE){CKA_MODULUS_BITS, &bits, sizeof(bits)};
    CK_ATTRIBUTE vt[] = {{CKA_TOKEN, &yes, sizeof(yes)},
                         {CKA_SIGN, &yes, sizeof(yes)},
                         {CKA_EXTRACTABLE, extractable ? &yes : &no, sizeof(yes)},
                         {CKA_DERIVE, derive ? &yes : &no, sizeof(yes)}};
    assert_int_equal(
        F->C_GenerateKeyPair(s, &m, pt, 2, vt, mech == CKM_EC_KEY_PAIR_GEN ? 4 : 3, pub, priv),
        CKR_OK);
}

static EVP_PKEY *pub_of(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h) {
    uint8_t buf[2048];
    CK_ATTRIBUTE a = {CKA_PUBLIC_KEY_INFO, buf, sizeof(buf)};
    assert_int_equal(F->C_GetAttributeValue(s, h, &a, 1), CKR_OK);
    const uint8_t *p = buf;
    EVP_PKEY *k = d2i_PUBKEY(NULL, &p, (long)a.ulValueLen);
    assert_non_null(k);
    return k;
}

/* Signs data with the module (mech) and verifies with OpenSSL against pk. */
static void sign_check(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE priv, EVP_PKEY *pk, bool ec) {
    static const uint8_t data[] = "signed by an unwrapped key";
    bool p384 = ec && EVP_PKEY_get_bits(pk) == 384;
    CK_MECHANISM m = {ec ? (p384 ? CKM_ECDSA_SHA384 : CKM_ECDSA_SHA256) : CKM_SHA256_RSA_PKCS, NULL,
                      0};
    uint8_t sig[512], der[600];
    CK_ULONG sl = sizeof(sig);
    assert_int_equal(F->C_SignInit(s, &m, priv), CKR_OK);
    assert_int_equal(F->C_Sign(s, (CK_BYTE_PTR)data, sizeof(data), sig, &sl), CKR_OK);
    const uint8_t *vsig = sig;
    size_t vl = sl;
    if (ec) { /* r||s -> DER for OpenSSL */
        ECDSA_SIG *es = ECDSA_SIG_new();
        ECDSA_SIG_set0(es, BN_bin2bn(sig, (int)sl / 2, NULL),
                       BN_bin2bn(sig + sl / 2, (int)sl / 2, NULL));
        uint8_t *p = der;
        vl = (size_t)i2d_ECDSA_SIG(es, &p);
        vsig = der;
        ECDSA_SIG_free(es);
    }
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestVerifyInit(c, NULL, p384 ? EVP_sha384() : EVP_sha256(), NULL, pk),
                     1);
    assert_int_equal(EVP_DigestVerify(c, vsig, vl, data, sizeof(data)), 1);
    EVP_MD_CTX_free(c);
}

/* ---- tests ---------------------------------------------------------------------------------- */

/* The mechanisms tell the truth about what they do. */
static void test_mechanism_info(void **state) {
    CK_SESSION_HANDLE s = open_rw();
    (void)s;
    CK_MECHANISM_INFO mi;
    assert_int_equal(F->C_GetMechanismInfo(0, CKM_AES_KEY_WRAP, &mi), CKR_OK);
    assert_int_equal(mi.flags & (CKF_WRAP | CKF_UNWRAP | CKF_ENCRYPT), CKF_WRAP | CKF_UNWRAP);
    assert_int_equal(mi.ulMinKeySize, 16);
    assert_int_equal(mi.ulMaxKeySize, 32);
    assert_int_equal(F->C_GetMechanismInfo(0, CKM_AES_KEY_WRAP_PAD, &mi), CKR_OK);
    assert_int_equal(mi.flags & (CKF_WRAP | CKF_UNWRAP), CKF_WRAP | CKF_UNWRAP);
    assert_int_equal(F->C_GetMechanismInfo(0, CKM_ECDH1_DERIVE, &mi), CKR_OK);
    assert_true(mi.flags & CKF_DERIVE);
    assert_int_equal(mi.ulMinKeySize, 256);
    assert_int_equal(mi.ulMaxKeySize, 384);
    assert_int_equal(F->C_GetMechanismInfo(0, CKM_AES_KEY_GEN, &mi), CKR_OK);
    assert_int_equal(mi.ulMinKeySize, 16);
    /* AES-128 and AES-192 keys are generated and usable */
    for (CK_ULONG len = 16; len <= 32; len += 8) {
        CK_OBJECT_HANDLE k = gen_aes(s, len, false, false, false);
        assert_int_equal(ulong_attr(s, k, CKA_VALUE_LEN), len);
        uint8_t pt[40] = "sixteen byte blocks and a tail", ct[64], back[64];
        CK_ULONG cl = sizeof(ct), bl = sizeof(back);
        assert_int_equal(gcm(s, true, k, pt, sizeof(pt), ct, &cl), CKR_OK);
        assert_int_equal(gcm(s, false, k, ct, cl, back, &bl), CKR_OK);
        assert_memory_equal(back, pt, sizeof(pt));
        assert_int_equal(F->C_DestroyObject(s, k), CKR_OK);
    }
}

/* Secret keys of every AES size wrapped and unwrapped with both mechanisms: the length query
 * gives the exact size, a short buffer gets CKR_BUFFER_TOO_SMALL and the length and the call
 * then succeeds, the unwrapped key decrypts what the original encrypted, and the blob unwraps
 * under OpenSSL with the known KEK to a key that decrypts it too. */
static void test_wrap_secret_round_trip(void **state) {
    CK_SESSION_HANDLE s = open_rw();
    uint8_t kekv[32];
    for (size_t i = 0; i < sizeof(kekv); i++)
        kekv[i] = (uint8_t)(0x40 + 3 * i);
    CK_OBJECT_HANDLE kek = import_aes(s, kekv, sizeof(kekv), false);
    static const uint8_t pt[48] = "the quick brown fox jumps over the lazy dog...";
    for (CK_ULONG len = 16; len <= 32; len += 8) {
        for (int pad = 0; pad < 2; pad++) {
            CK_MECHANISM_TYPE mech = pad ? CKM_AES_KEY_WRAP_PAD : CKM_AES_KEY_WRAP;
            CK_OBJECT_HANDLE k = gen_aes(s, len, true, false, false);
            uint8_t ct[80], back[80], blob[64], blob2[64], raw[64];
            CK_ULONG cl = sizeof(ct), bl = sizeof(back);
            assert_int_equal(gcm(s, true, k, pt, sizeof(pt), ct, &cl), CKR_OK);

            CK_ULONG n = 0;
            assert_int_equal(wrap(s, mech, kek, k, NULL, &n), CKR_OK);
            assert_int_equal(n, len + 8);
            CK_ULONG small = n - 1;
            assert_int_equal(wrap(s, mech, kek, k, blob, &small), CKR_BUFFER_TOO_SMALL);
            assert_int_equal(small, n);
            CK_ULONG got = sizeof(blob);
            assert_int_equal(wrap(s, mech, kek, k, blob, &got), CKR_OK);
            assert_int_equal(got, n);
            got = sizeof(blob2);
            assert_int_equal(wrap(s, mech, kek, k, blob2, &got), CKR_OK);
            assert_memory_equal(blob, blob2, n); /* deterministic: the same key, the same blob */

            /* independent: OpenSSL unwraps it to the key, which decrypts the module's GCM */
            assert_int_equal(openssl_kw(false, pad, kekv, sizeof(kekv), blob, n, raw), len);
            uint8_t opt[48];
            openssl_gcm_decrypt(raw, len, ct, cl, opt);
            assert_memory_equal(opt, pt, sizeof(pt));

            CK_OBJECT_HANDLE u = 0;
            assert_int_equal(unwrap_secret(s, mech, kek, blob, n, &kt_aes, 0, &u), CKR_OK);
            assert_int_equal(ulong_attr(s, u, CKA_VALUE_LEN), len);
            assert_int_equal(bool_attr(s, u, CKA_LOCAL), CK_FALSE);
            assert_int_equal(bool_attr(s, u, CKA_ALWAYS_SENSITIVE), CK_FALSE);
            assert_int_equal(bool_attr(s, u, CKA_NEVER_EXTRACTABLE), CK_FALSE);
            uint8_t v[64];
            CK_ATTRIBUTE va = {CKA_VALUE, v, sizeof(v)};
            assert_int_equal(F->C_GetAttributeValue(s, u, &va, 1), CKR_ATTRIBUTE_SENSITIVE);
            assert_int_equal(gcm(s, false, u, ct, cl, back, &bl), CKR_OK);
            assert_int_equal(bl, sizeof(pt));
            assert_memory_equal(back, pt, sizeof(pt));
            assert_int_equal(F->C_DestroyObject(s, u), CKR_OK);
            assert_int_equal(F->C_DestroyObject(s, k), CKR_OK);
        }
    }
    /* an HMAC key (generic secret, 48 bytes) too: the unwrapped key gives the same MAC */
    CK_MECHANISM gm = {CKM_GENERIC_SECRET_KEY_GEN, NULL, 0};
    CK_ULONG hl = 48;
    CK_ATTRIBUTE ht[] = {{CKA_VALUE_LEN, &hl, sizeof(hl)},
                         {CKA_EXTRACTABLE, &yes, sizeof(yes)},
                         {CKA_SIGN, &yes, sizeof(yes)}};
    CK_OBJECT_HANDLE h = 0, hu = 0;
    assert_int_equal(F->C_GenerateKey(s, &gm, ht, 3, &h), CKR_OK);
    uint8_t blob[64], mac1[48], mac2[48];
    CK_ULONG n = sizeof(blob), m1 = sizeof(mac1), m2 = sizeof(mac2);
    assert_int_equal(wrap(s, CKM_AES_KEY_WRAP, kek, h, blob, &n), CKR_OK);
    assert_int_equal(n, 56);
    assert_int_equal(unwrap_secret(s, CKM_AES_KEY_WRAP, kek, blob, n, &kt_generic, 48, &hu),
                     CKR_OK);
    CK_MECHANISM hm = {CKM_SHA384_HMAC, NULL, 0};
    assert_int_equal(F->C_SignInit(s, &hm, h), CKR_OK);
    assert_int_equal(F->C_Sign(s, (CK_BYTE_PTR)pt, sizeof(pt), mac1, &m1), CKR_OK);
    assert_int_equal(F->C_SignInit(s, &hm, hu), CKR_OK);
    assert_int_equal(F->C_Sign(s, (CK_BYTE_PTR)pt, sizeof(pt), mac2, &m2), CKR_OK);
    assert_int_equal(m1, 48);
    assert_memory_equal(mac1, mac2, 48);
    assert_int_equal(F->C_DestroyObject(s, hu), CKR_OK);
    assert_int_equal(F->C_DestroyObject(s, h), CKR_OK);
    assert_int_equal(F->C_DestroyObject(s, kek), CKR_OK);
}

/* EC P-256/P-384 and RSA-2048 private keys wrapped (PKCS#8 inside RFC 5649) and unwrapped: the
 * unwrapped key signs what the original's public key verifies (OpenSSL). */
static void test_wrap_private_keys(void **state) {
    CK_SESSION_HANDLE s = open_rw();
    CK_OBJECT_HANDLE kek = gen_aes(s, 32, false, true, true);
    struct {
        CK_MECHANISM_TYPE gen;
        const uint8_t *oid;
        size_t on;
        CK_KEY_TYPE *kt;
    } cases[] = {
        {CKM_EC_KEY_PAIR_GEN, oid_p256, sizeof(oid_p256), &kt_ec},
        {CKM_EC_KEY_PAIR_GEN, oid_p384, sizeof(oid_p384), &kt_ec},
        {CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0, &kt_rsa},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        CK_OBJECT_HANDLE pub = 0, priv = 0, u = 0;
        gen_pair(s, cases[i].gen, cases[i].oid, cases[i].on, true, false, &pub, &priv);
        CK_ULONG n = 0;
        assert_int_equal(wrap(s, CKM_AES_KEY_WRAP_PAD, kek, priv, NULL, &n), CKR_OK);
        assert_true(n > 40 && n % 8 == 0);
        uint8_t *blob = malloc(n);
        CK_ULONG got = n - 8;
        assert_int_equal(wrap(s, CKM_AES_KEY_WRAP_PAD, kek, priv, blob, &got),
                         CKR_BUFFER_TOO_SMALL);
        assert_int_equal(got, n);
        assert_int_equal(wrap(s, CKM_AES_KEY_WRAP_PAD, kek, priv, blob, &got), CKR_OK);
        assert_int_equal(got, n);
        /* the public key object is not wrapped */
        CK_ULONG pn = 0;
        assert_int_equal(wrap(s, CKM_AES_KEY_WRAP_PAD, kek, pub, NULL, &pn), CKR_KEY_NOT_WRAPPABLE);

        CK_MECHANISM m = {CKM_AES_KEY_WRAP_PAD, NULL, 0};
        CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls_private, sizeof(cls_private)},
                            {CKA_KEY_TYPE, cases[i].kt, sizeof(CK_KEY_TYPE)},
                            {CKA_TOKEN, &yes, sizeof(yes)},
                            {CKA_SIGN, &yes, sizeof(yes)},
                            {CKA_LABEL, "unwrapped-private", 17}};
        /* the wrong key type for what is inside: refused, nothing created */
        CK_ULONG before = count_objects(s);
        CK_KEY_TYPE other = *cases[i].kt == CKK_EC ? CKK_RSA : CKK_EC;
        CK_ATTRIBUTE bad[] = {t[0], {CKA_KEY_TYPE, &other, sizeof(other)}, t[2]};
        assert_int_equal(F->C_UnwrapKey(s, &m, kek, blob, n, bad, 3, &u),
                         CKR_TEMPLATE_INCONSISTENT);
        assert_int_equal(count_objects(s), before);

        assert_int_equal(F->C_UnwrapKey(s, &m, kek, blob, n, t, 5, &u), CKR_OK);
        assert_int_equal(bool_attr(s, u, CKA_LOCAL), CK_FALSE);
        EVP_PKEY *pk = pub_of(s, pub);
        sign_check(s, u, pk, *cases[i].kt == CKK_EC);
        /* and the unwrapped key's own public key is the original's */
        EVP_PKEY *upk = pub_of(s, u);
        assert_int_equal(EVP_PKEY_eq(pk, upk), 1);
        EVP_PKEY_free(upk);
        EVP_PKEY_free(pk);
        free(blob);
        assert_int_equal(F->C_DestroyObject(s, u), CKR_OK);
        assert_int_equal(F->C_DestroyObject(s, priv), CKR_OK);
    }
    assert_int_equal(F->C_DestroyObject(s, kek), CKR_OK);
}

/* RFC 3394 section 4 known answers: the KEK imported, the RFC's ciphertext unwrapped into a key
 * that wraps again to the same ciphertext and encrypts like the RFC's key data under OpenSSL. */
static void test_rfc3394_vectors(void **state) {
    CK_SESSION_HANDLE s = open_rw();
    static const struct {
        const char *kek, *data, *ct;
    } v[] = {
        /* 4.1 128-bit KEK, 128-bit key data */
        {"000102030405060708090A0B0C0D0E0F", "00112233445566778899AABBCCDDEEFF",
         "1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5"},
        /* 4.2 192-bit KEK, 128-bit key data */
        {"000102030405060708090A0B0C0D0E0F1011121314151617", "00112233445566778899AABBCCDDEEFF",
         "96778B25AE6CA435F92B5B97C050AED2468AB8A17AD84E5D"},
        /* 4.3 256-bit KEK, 128-bit key data */
        {"000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
         "00112233445566778899AABBCCDDEEFF", "64E8C3F9CE0F5BA263E9777905818A2A93C8191E7D6E8AE7"},
        /* 4.4 192-bit KEK, 192-bit key data */
        {"000102030405060708090A0B0C0D0E0F1011121314151617",
         "00112233445566778899AABBCCDDEEFF0001020304050607",
         "031D33264E15D33268F24EC260743EDCE1C6C7DDEE725A936BA814915C6762D2"},
        /* 4.6 256-bit KEK, 256-bit key data */
        {"000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
         "00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F",
         "28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21"},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        uint8_t kek[32], data[32], ct[40], again[40], enc[80], dec[80];
        size_t kn = unhex(v[i].kek, kek, sizeof(kek)), dn = unhex(v[i].data, data, sizeof(data));
        size_t cn = unhex(v[i].ct, ct, sizeof(ct));
        CK_OBJECT_HANDLE k = import_aes(s, kek, kn, false), u = 0;
        assert_int_equal(unwrap_secret(s, CKM_AES_KEY_WRAP, k, ct, cn, &kt_aes, dn, &u), CKR_OK);
        assert_int_equal(ulong_attr(s, u, CKA_VALUE_LEN), dn);
        CK_ULONG an = sizeof(again);
        assert_int_equal(wrap(s, CKM_AES_KEY_WRAP, k, u, again, &an), CKR_OK);
        assert_int_equal(an, cn);
        assert_memory_equal(again, ct, cn);
        static const uint8_t pt[32] = "RFC 3394 key data, used for GCM";
        CK_ULONG en = sizeof(enc);
        assert_int_equal(gcm(s, true, u, pt, sizeof(pt), enc, &en), CKR_OK);
        openssl_gcm_decrypt(data, dn, enc, en, dec);
        assert_memory_equal(dec, pt, sizeof(pt));
        assert_int_equal(F->C_DestroyObject(s, u), CKR_OK);
        assert_int_equal(F->C_DestroyObject(s, k), CKR_OK);
    }
}

/* RFC 5649 section 6 known answers (AES-192 KEK; a 20-byte and a 7-byte key): the RFC's
 * ciphertexts unwrap into generic secrets of those lengths, which wrap again to the same bytes;
 * RFC 3394 cannot wrap them (CKR_KEY_SIZE_RANGE). */
static void test_rfc5649_vectors(void **state) {
    CK_SESSION_HANDLE s = open_rw();
    static const struct {
        const char *key, *ct;
    } v[] = {
        {"c37b7e6492584340bed12207808941155068f738",
         "138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a"},
        {"466f7250617369", "afbeb0f07dfbf5419200f2ccb50bb24f"},
    };
    uint8_t kek[24];
    unhex("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8", kek, sizeof(kek));
    CK_OBJECT_HANDLE k = import_aes(s, kek, sizeof(kek), false);
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        uint8_t key[32], ct[40], again[40];
        size_t kn = unhex(v[i].key, key, sizeof(key)), cn = unhex(v[i].ct, ct, sizeof(ct));
        CK_OBJECT_HANDLE u = 0;
        assert_int_equal(unwrap_secret(s, CKM_AES_KEY_WRAP_PAD, k, ct, cn, &kt_generic, kn + 1, &u),
                         CKR_TEMPLATE_INCONSISTENT); /* CKA_VALUE_LEN is checked */
        assert_int_equal(unwrap_secret(s, CKM_AES_KEY_WRAP_PAD, k, ct, cn, &kt_generic, kn, &u),
                         CKR_OK);
        assert_int_equal(ulong_attr(s, u, CKA_VALUE_LEN), kn);
        CK_KEY_TYPE kt = 0;
        CK_ATTRIBUTE ka = {CKA_KEY_TYPE, &kt, sizeof(kt)};
        assert_int_equal(F->C_GetAttributeValue(s, u, &ka, 1), CKR_OK);
        assert_int_equal(kt, CKK_GENERIC_SECRET);
        CK_ULONG an = 0;
        assert_int_equal(wrap(s, CKM_AES_KEY_WRAP_PAD, k, u, NULL, &an), CKR_OK);
        assert_int_equal(an, cn);
        assert_int_equal(wrap(s, CKM_AES_KEY_WRAP_PAD, k, u, again, &an), CKR_OK);
        assert_memory_equal(again, ct, cn);
        assert_int_equal(wrap(s, CKM_AES_KEY_WRAP, k, u, NULL, &an), CKR_KEY_SIZE_RANGE);
        assert_int_equal(F->C_DestroyObject(s, u), CKR_OK);
    }
    assert_int_equal(F->C_DestroyObject(s, k), CKR_OK);
}

/* Blobs made by OpenSSL's RFC 5649 implementation under a known KEK unwrap in the module, and
 * the module's wrap of the key is byte-identical to OpenSSL's (both directions, AES-192 KEK as
 * in RFC 5649's examples). */
static void test_kwp_against_openssl(void **state) {
    CK_SESSION_HANDLE s = open_rw();
    uint8_t kek[24], key[32], blob[48], mine[48];
    unhex("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8", kek, sizeof(kek)); /* RFC 5649 */
    CK_OBJECT_HANDLE k = import_aes(s, kek, sizeof(kek), false);
    for (size_t kl = 16; kl <= 32; kl += 8) {
        for (size_t i = 0; i < kl; i++)
            key[i] = (uint8_t)(i * 7 + kl);
        size_t bn = openssl_kw(true, true, kek, sizeof(kek), key, kl, blob);
        assert_int_equal(bn, kl + 8);
        CK_OBJECT_HANDLE u = 0;
        assert_int_equal(unwrap_secret(s, CKM_AES_KEY_WRAP_PAD, k, blob, bn, &kt_aes, 0, &u),
                         CKR_OK);
        CK_ULONG mn = sizeof(mine);
        assert_int_equal(wrap(s, CKM_AES_KEY_WRAP_PAD, k, u, mine, &mn), CKR_OK);
        assert_int_equal(mn, bn);
        assert_memory_equal(mine, blob, bn);
        assert_int_equal(F->C_DestroyObject(s, u), CKR_OK);
    }
    assert_int_equal(F->C_DestroyObject(s, k), CKR_OK);
}

/* Every refusal of C_WrapKey / C_UnwrapKey, and that a refused unwrap creates nothing. */
static void test_wrap_refusals(void **state) {
    CK_SESSION_HANDLE s = open_rw();
    CK_OBJECT_HANDLE kek = gen_aes(s, 32, false, true, true);
    CK_OBJECT_HANDLE nowrap = gen_aes(s, 32, false, false, false);
    CK_OBJECT_HANDLE target = gen_aes(s, 32, true, false, false);
    CK_OBJECT_HANDLE fixed = gen_aes(s, 32, false, false, false);
    CK_ULONG n = 0;
    uint8_t blob[64];

    assert_int_equal(wrap(s, CKM_AES_KEY_WRAP, kek, fixed, NULL, &n), CKR_KEY_UNEXTRACTABLE);
    assert_int_equal(wrap(s, CKM_AES_KEY_WRAP, nowrap, target, NULL, &n),
                     CKR_KEY_FUNCTION_NOT_PERMITTED);
    assert_int_equal(wrap(s, CKM_AES_KEY_WRAP, target, target, NULL, &n),
                     CKR_KEY_FUNCTION_NOT_PERMITTED); /* CKA_WRAP false on the target */
    assert_int_equal(wrap(s, CKM_AES_GCM, kek, target, NULL, &n), CKR_MECHANISM_INVALID);
    assert_int_equal(wrap(s, CKM_AES_KEY_WRAP, 0x7777, target, NULL, &n),
                     CKR_WRAPPING_KEY_HANDLE_INVALID);
    assert_int_equal(wrap(s, CKM_AES_KEY_WRAP, kek, 0x7777, NULL, &n), CKR_KEY_HANDLE_INVALID);
    CK_OBJECT_HANDLE ecpub = 0, ecpriv = 0;
    gen_pair(s, CKM_EC_KEY_PAIR_GEN, oid_p256, sizeof(oid_p256), true, true, &ecpub, &ecpriv);
    assert_int_equal(wrap(s, CKM_AES_KEY_WRAP_PAD, ecpriv, target, NULL, &n),
                     CKR_WRAPPING_KEY_TYPE_INCONSISTENT);
    uint8_t iv[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    CK_MECHANISM badiv = {CKM_AES_KEY_WRAP, iv, sizeof(iv)};
    assert_int_equal(F->C_WrapKey(s, &badiv, kek, target, NULL, &n), CKR_MECHANISM_PARAM_INVALID);
    assert_int_equal(F->C_WrapKey(s, NULL, kek, target, NULL, &n), CKR_ARGUMENTS_BAD);

    n = sizeof(blob);
    assert_int_equal(wrap(s, CKM_AES_KEY_WRAP, kek, target, blob, &n), CKR_OK);
    CK_ULONG before = count_objects(s);
    CK_OBJECT_HANDLE u = 0;
    /* unwrap: usage, type and handle of the unwrapping key */
    assert_int_equal(unwrap_secret(s, CKM_AES_KEY_WRAP, nowrap, blob, n, &kt_aes, 0, &u),
                     CKR_KEY_FUNCTION_NOT_PERMITTED);
    assert_int_equal(unwrap_secret(s, CKM_AES_KEY_WRAP, ecpriv, blob, n, &kt_aes, 0, &u),
                     CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT);
    assert_int_equal(unwrap_secret(s, CKM_AES_KEY_WRAP, 0x7777, blob, n, &kt_aes, 0, &u),
                     CKR_UNWRAPPING_KEY_HANDLE_INVALID);
    /* corrupted blob, wrong mechanism for it, wrong length */
    uint8_t bad[64];
    memcpy(bad, blob, n);
    bad[n - 1] ^= 0x01;
    assert_int_equal(unwrap_secret(s, CKM_AES_KEY_WRAP, kek, bad, n, &kt_aes, 0, &u),
                     CKR_WRAPPED_KEY_INVALID);
    assert_int_equal(unwrap_secret(s, CKM_AES_KEY_WRAP_PAD, kek, blob, n, &kt_aes, 0, &u),
                     CKR_WRAPPED_KEY_INVALID);
    assert_int_equal(unwrap_secret(s, CKM_AES_KEY_WRAP, kek, blob, n - 1, &kt_aes, 0, &u),
                     CKR_WRAPPED_KEY_LEN_RANGE);
    assert_int_equal(unwrap_secret(s, CKM_AES_KEY_WRAP, kek, blob, 8, &kt_aes, 0, &u),
                     CKR_WRAPPED_KEY_LEN_RANGE);
    /* template: a length that is not the key's, a value, a missing class, a public key */
    assert_int_equal(unwrap_secret(s, CKM_AES_KEY_WRAP, kek, blob, n, &kt_aes, 16, &u),
                     CKR_TEMPLATE_INCONSISTENT);
    CK_MECHANISM m = {CKM_AES_KEY_WRAP, NULL, 0};
    uint8_t val[32] = {0};
    CK_ATTRIBUTE withval[] = {{CKA_CLASS, &cls_secret, sizeof(cls_secret)},
                              {CKA_KEY_TYPE, &kt_aes, sizeof(kt_aes)},
                              {CKA_VALUE, val, sizeof(val)}};
    assert_int_equal(F->C_UnwrapKey(s, &m, kek, blob, n, withval, 3, &u),
                     CKR_TEMPLATE_INCONSISTENT);
    assert_int_equal(F->C_UnwrapKey(s, &m, kek, blob, n, withval + 1, 1, &u),
                     CKR_TEMPLATE_INCOMPLETE);
    CK_OBJECT_CLASS pubcls = CKO_PUBLIC_KEY;
    CK_ATTRIBUTE pubt[] = {{CKA_CLASS, &pubcls, sizeof(pubcls)},
                           {CKA_KEY_TYPE, &kt_ec, sizeof(kt_ec)}};
    assert_int_equal(F->C_UnwrapKey(s, &m, kek, blob, n, pubt, 2, &u), CKR_TEMPLATE_INCONSISTENT);
    CK_ATTRIBUTE session[] = {{CKA_CLASS, &cls_secret, sizeof(cls_secret)},
                              {CKA_KEY_TYPE, &kt_aes, sizeof(kt_aes)},
                              {CKA_TOKEN, &no, sizeof(no)}};
    /* a session object (CKA_TOKEN false): made in vhsmd as one, gone when destroyed */
    assert_int_equal(F->C_UnwrapKey(s, &m, kek, blob, n, session, 3, &u), CKR_OK);
    {
        CK_BBOOL tok = CK_TRUE;
        CK_ATTRIBUTE ta = {CKA_TOKEN, &tok, sizeof(tok)};
        assert_int_equal(F->C_GetAttributeValue(s, u, &ta, 1), CKR_OK);
        assert_int_equal(tok, CK_FALSE);
        assert_int_equal(count_objects(s), before + 1);
        assert_int_equal(F->C_DestroyObject(s, u), CKR_OK);
    }
    assert_int_equal(count_objects(s), before);
    /* a read-only session cannot create the key */
    CK_SESSION_HANDLE ro = 0;
    assert_int_equal(F->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &ro), CKR_OK);
    assert_int_equal(unwrap_secret(ro, CKM_AES_KEY_WRAP, kek, blob, n, &kt_aes, 0, &u),
                     CKR_SESSION_READ_ONLY);
    /* the blob still unwraps after all of that */
    assert_int_equal(unwrap_secret(s, CKM_AES_KEY_WRAP, kek, blob, n, &kt_aes, 32, &u), CKR_OK);
    assert_int_equal(count_objects(s), before + 1);
    CK_OBJECT_HANDLE all[] = {u, kek, nowrap, target, fixed, ecpriv};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        assert_int_equal(F->C_DestroyObject(s, all[i]), CKR_OK);
}

/* CKA_WRAP_WITH_TRUSTED: such a key is wrapped only under a CKA_TRUSTED key, and only the SO
 * makes a key trusted. */
static void test_wrap_with_trusted(void **state) {
    CK_SESSION_HANDLE s = open_rw();
    CK_OBJECT_HANDLE kek = gen_aes(s, 32, false, true, true);
    CK_MECHANISM gm = {CKM_AES_KEY_GEN, NULL, 0};
    CK_ULONG len = 32;
    CK_ATTRIBUTE tt[] = {{CKA_VALUE_LEN, &len, sizeof(len)},
                         {CKA_EXTRACTABLE, &yes, sizeof(yes)},
                         {CKA_WRAP_WITH_TRUSTED, &yes, sizeof(yes)}};
    CK_OBJECT_HANDLE target = 0, t2 = 0;
    assert_int_equal(F->C_GenerateKey(s, &gm, tt, 3, &target), CKR_OK);
    assert_int_equal(bool_attr(s, target, CKA_WRAP_WITH_TRUSTED), CK_TRUE);
    CK_ULONG n = 0;
    assert_int_equal(wrap(s, CKM_AES_KEY_WRAP, kek, target, NULL, &n), CKR_KEY_NOT_WRAPPABLE);
    /* not the SO: CKA_TRUSTED can be neither asked for nor set */
    CK_ATTRIBUTE trusted[] = {{CKA_VALUE_LEN, &len, sizeof(len)}, {CKA_TRUSTED, &yes, sizeof(yes)}};
    assert_int_equal(F->C_GenerateKey(s, &gm, trusted, 2, &t2), CKR_ATTRIBUTE_READ_ONLY);
    CK_ATTRIBUTE set = {CKA_TRUSTED, &yes, sizeof(yes)};
    assert_int_equal(F->C_SetAttributeValue(s, kek, &set, 1), CKR_ATTRIBUTE_READ_ONLY);
    assert_int_equal(bool_attr(s, kek, CKA_TRUSTED), CK_FALSE);
    /* the SO sets it */
    assert_int_equal(F->C_Login(s, CKU_SO, (CK_UTF8CHAR_PTR)SO_PIN, strlen(SO_PIN)), CKR_OK);
    assert_int_equal(F->C_SetAttributeValue(s, kek, &set, 1), CKR_OK);
    assert_int_equal(F->C_Logout(s), CKR_OK);
    assert_int_equal(bool_attr(s, kek, CKA_TRUSTED), CK_TRUE);
    uint8_t blob[48];
    n = sizeof(blob);
    assert_int_equal(wrap(s, CKM_AES_KEY_WRAP, kek, target, blob, &n), CKR_OK);
    assert_int_equal(n, 40);
    assert_int_equal(F->C_DestroyObject(s, target), CKR_OK);
    assert_int_equal(F->C_DestroyObject(s, kek), CKR_OK);
}

/* The peer's public point: CKA_EC_POINT (a DER OCTET STRING) of a public key object. */
static size_t ec_point(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE pub, uint8_t *out, size_t cap) {
    CK_ATTRIBUTE a = {CKA_EC_POINT, out, cap};
    assert_int_equal(F->C_GetAttributeValue(s, pub, &a, 1), CKR_OK);
    return a.ulValueLen;
}

static CK_BBOOL *derive_token = &yes; /* CKA_TOKEN of derive()'s new key */

static CK_RV derive(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE base, CK_ULONG kdf, const uint8_t *shared,
                    size_t sn, const uint8_t *point, size_t pn, CK_KEY_TYPE *kt, CK_ULONG value_len,
                    CK_OBJECT_HANDLE *ret) {
    CK_ECDH1_DERIVE_PARAMS p = {kdf, sn, (CK_BYTE_PTR)shared, pn, (CK_BYTE_PTR)point};
    CK_MECHANISM m = {CKM_ECDH1_DERIVE, &p, sizeof(p)};
    CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls_secret, sizeof(cls_secret)},
                        {CKA_KEY_TYPE, kt, sizeof(*kt)},
                        {CKA_TOKEN, derive_token, sizeof(yes)},
                        {CKA_ENCRYPT, &yes, sizeof(yes)},
                        {CKA_DECRYPT, &yes, sizeof(yes)},
                        {CKA_VALUE_LEN, &value_len, sizeof(value_len)}};
    return F->C_DeriveKey(s, &m, base, t, value_len ? 6 : 5, ret);
}

/* ECDH on both sides of two P-256 keys gives interoperable AES keys (raw and DER-wrapped
 * public data); a derive with a peer key OpenSSL holds matches OpenSSL's ECDH and X9.63
 * SHA-256 KDF, and a P-384 CKD_NULL generic secret is the shared secret (HMAC-SHA384 check). */
static void test_ecdh_derive(void **state) {
    CK_SESSION_HANDLE s = open_rw();
    CK_OBJECT_HANDLE apub, apriv, bpub, bpriv, ka = 0, kb = 0;
    gen_pair(s, CKM_EC_KEY_PAIR_GEN, oid_p256, sizeof(oid_p256), false, true, &apub, &apriv);
    gen_pair(s, CKM_EC_KEY_PAIR_GEN, oid_p256, sizeof(oid_p256), false, true, &bpub, &bpriv);
    uint8_t pa[100], pb[100];
    size_t na = ec_point(s, apub, pa, sizeof(pa)), nb = ec_point(s, bpub, pb, sizeof(pb));
    assert_int_equal(na, 67); /* 04 41 | 04 X Y */
    assert_int_equal(derive(s, apriv, CKD_NULL, NULL, 0, pb + 2, nb - 2, &kt_aes, 32, &ka), CKR_OK);
    derive_token = &no; /* the other side's key a session object */
    assert_int_equal(derive(s, bpriv, CKD_NULL, NULL, 0, pa, na, &kt_aes, 32, &kb), CKR_OK);
    derive_token = &yes;
    assert_int_equal(bool_attr(s, kb, CKA_TOKEN), CK_FALSE);
    assert_int_equal(bool_attr(s, ka, CKA_TOKEN), CK_TRUE);
    static const uint8_t pt[32] = "agreed on both sides of curves";
    uint8_t ct[64], back[64];
    CK_ULONG cl = sizeof(ct), bl = sizeof(back);
    assert_int_equal(gcm(s, true, ka, pt, sizeof(pt), ct, &cl), CKR_OK);
    assert_int_equal(gcm(s, false, kb, ct, cl, back, &bl), CKR_OK);
    assert_memory_equal(back, pt, sizeof(pt));
    /* derived: not local, never shown */
    assert_int_equal(bool_attr(s, ka, CKA_LOCAL), CK_FALSE);
    assert_int_equal(bool_attr(s, ka, CKA_SENSITIVE), CK_TRUE);
    uint8_t v[64];
    CK_ATTRIBUTE va = {CKA_VALUE, v, sizeof(v)};
    assert_int_equal(F->C_GetAttributeValue(s, ka, &va, 1), CKR_ATTRIBUTE_SENSITIVE);

    /* independent: OpenSSL's own key C; ECDH(C, A) and X9.63-SHA256 computed here */
    EVP_PKEY *c = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    assert_non_null(c);
    uint8_t cpt[65], z[32], shared[] = "shared info", kdf_in[32 + 4 + sizeof(shared)], k[32];
    size_t cpn = 0, zl = sizeof(z);
    assert_int_equal(
        EVP_PKEY_get_octet_string_param(c, OSSL_PKEY_PARAM_PUB_KEY, cpt, sizeof(cpt), &cpn), 1);
    EVP_PKEY *apk = pub_of(s, apub);
    EVP_PKEY_CTX *dc = EVP_PKEY_CTX_new(c, NULL);
    assert_int_equal(EVP_PKEY_derive_init(dc), 1);
    assert_int_equal(EVP_PKEY_derive_set_peer(dc, apk), 1);
    assert_int_equal(EVP_PKEY_derive(dc, z, &zl), 1);
    EVP_PKEY_CTX_free(dc);
    memcpy(kdf_in, z, 32);
    memcpy(kdf_in + 32, "\0\0\0\1", 4);
    memcpy(kdf_in + 36, shared, sizeof(shared));
    unsigned kl = 0;
    assert_int_equal(EVP_Digest(kdf_in, sizeof(kdf_in), k, &kl, EVP_sha256(), NULL), 1);
    CK_OBJECT_HANDLE kc = 0;
    assert_int_equal(
        derive(s, apriv, CKD_SHA256_KDF, shared, sizeof(shared), cpt, cpn, &kt_aes, 32, &kc),
        CKR_OK);
    cl = sizeof(ct);
    assert_int_equal(gcm(s, true, kc, pt, sizeof(pt), ct, &cl), CKR_OK);
    uint8_t opt[32];
    openssl_gcm_decrypt(k, 32, ct, cl, opt);
    assert_memory_equal(opt, pt, sizeof(pt));
    /* AES-128 from the same agreement: the first 16 bytes of the X9.63 output */
    CK_OBJECT_HANDLE k16 = 0;
    assert_int_equal(
        derive(s, apriv, CKD_SHA256_KDF, shared, sizeof(shared), cpt, cpn, &kt_aes, 16, &k16),
        CKR_OK);
    cl = sizeof(ct);
    assert_int_equal(gcm(s, true, k16, pt, sizeof(pt), ct, &cl), CKR_OK);
    openssl_gcm_decrypt(k, 16, ct, cl, opt);
    assert_memory_equal(opt, pt, sizeof(pt));

    /* CKD_NULL into AES-128: the shared secret's last 16 bytes (the leading end dropped, as
     * SoftHSM2 does) */
    CK_OBJECT_HANDLE kn16 = 0;
    assert_int_equal(derive(s, apriv, CKD_NULL, NULL, 0, cpt, cpn, &kt_aes, 16, &kn16), CKR_OK);
    cl = sizeof(ct);
    assert_int_equal(gcm(s, true, kn16, pt, sizeof(pt), ct, &cl), CKR_OK);
    openssl_gcm_decrypt(z + 16, 16, ct, cl, opt);
    assert_memory_equal(opt, pt, sizeof(pt));
    assert_int_equal(F->C_DestroyObject(s, kn16), CKR_OK);

    /* P-384, CKD_NULL, a generic secret of the field size: HMAC-SHA384 keyed with Z */
    CK_OBJECT_HANDLE p384pub, p384priv, kg = 0;
    gen_pair(s, CKM_EC_KEY_PAIR_GEN, oid_p384, sizeof(oid_p384), false, true, &p384pub, &p384priv);
    EVP_PKEY *c384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    uint8_t c384pt[97], z384[48], mac[48], want[48];
    size_t c384n = 0, z384l = sizeof(z384);
    assert_int_equal(EVP_PKEY_get_octet_string_param(c384, OSSL_PKEY_PARAM_PUB_KEY, c384pt,
                                                     sizeof(c384pt), &c384n),
                     1);
    EVP_PKEY *p384 = pub_of(s, p384pub);
    dc = EVP_PKEY_CTX_new(c384, NULL);
    assert_int_equal(EVP_PKEY_derive_init(dc), 1);
    assert_int_equal(EVP_PKEY_derive_set_peer(dc, p384), 1);
    assert_int_equal(EVP_PKEY_derive(dc, z384, &z384l), 1);
    EVP_PKEY_CTX_free(dc);
    CK_ECDH1_DERIVE_PARAMS gp = {CKD_NULL, 0, NULL, c384n, c384pt};
    CK_MECHANISM gm = {CKM_ECDH1_DERIVE, &gp, sizeof(gp)};
    CK_ATTRIBUTE gt[] = {{CKA_CLASS, &cls_secret, sizeof(cls_secret)},
                         {CKA_KEY_TYPE, &kt_generic, sizeof(kt_generic)},
                         {CKA_SIGN, &yes, sizeof(yes)}};
    assert_int_equal(F->C_DeriveKey(s, &gm, p384priv, gt, 3, &kg), CKR_OK);
    assert_int_equal(ulong_attr(s, kg, CKA_VALUE_LEN), 48);
    CK_MECHANISM hm = {CKM_SHA384_HMAC, NULL, 0};
    CK_ULONG ml = sizeof(mac);
    unsigned wl = 0;
    assert_int_equal(F->C_SignInit(s, &hm, kg), CKR_OK);
    assert_int_equal(F->C_Sign(s, (CK_BYTE_PTR)pt, sizeof(pt), mac, &ml), CKR_OK);
    assert_non_null(HMAC(EVP_sha384(), z384, 48, pt, sizeof(pt), want, &wl));
    assert_int_equal(ml, 48);
    assert_memory_equal(mac, want, 48);

    /* refusals, none of which creates a key */
    CK_ULONG before = count_objects(s);
    CK_OBJECT_HANDLE x = 0;
    uint8_t off[65];
    memcpy(off, cpt, 65);
    off[64] ^= 0x01; /* no longer on the curve */
    assert_int_equal(derive(s, apriv, CKD_NULL, NULL, 0, off, 65, &kt_aes, 32, &x),
                     CKR_MECHANISM_PARAM_INVALID);
    assert_int_equal(derive(s, apriv, CKD_NULL, NULL, 0, c384pt, c384n, &kt_aes, 32, &x),
                     CKR_MECHANISM_PARAM_INVALID); /* a P-384 point for a P-256 key */
    assert_int_equal(derive(s, apriv, CKD_NULL, shared, sizeof(shared), cpt, cpn, &kt_aes, 32, &x),
                     CKR_MECHANISM_PARAM_INVALID); /* CKD_NULL takes no shared data */
    assert_int_equal(derive(s, apriv, 0x77, NULL, 0, cpt, cpn, &kt_aes, 32, &x),
                     CKR_MECHANISM_PARAM_INVALID);
    assert_int_equal(derive(s, apriv, CKD_NULL, NULL, 0, cpt, cpn, &kt_aes, 0, &x),
                     CKR_TEMPLATE_INCOMPLETE); /* AES: CKA_VALUE_LEN needed */
    assert_int_equal(derive(s, apriv, CKD_NULL, NULL, 0, cpt, cpn, &kt_aes, 20, &x),
                     CKR_TEMPLATE_INCONSISTENT);
    assert_int_equal(derive(s, apub, CKD_NULL, NULL, 0, cpt, cpn, &kt_aes, 32, &x),
                     CKR_KEY_TYPE_INCONSISTENT);
    assert_int_equal(derive(s, ka, CKD_NULL, NULL, 0, cpt, cpn, &kt_aes, 32, &x),
                     CKR_KEY_TYPE_INCONSISTENT);
    CK_OBJECT_HANDLE npub, npriv;
    gen_pair(s, CKM_EC_KEY_PAIR_GEN, oid_p256, sizeof(oid_p256), false, false, &npub, &npriv);
    before += 2;
    assert_int_equal(derive(s, npriv, CKD_NULL, NULL, 0, cpt, cpn, &kt_aes, 32, &x),
                     CKR_KEY_FUNCTION_NOT_PERMITTED);
    assert_int_equal(count_objects(s), before);

    EVP_PKEY_free(p384);
    EVP_PKEY_free(c384);
    EVP_PKEY_free(apk);
    EVP_PKEY_free(c);
    CK_OBJECT_HANDLE all[] = {ka, kb, kc, k16, kg, apriv, bpriv, p384priv, npriv};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        assert_int_equal(F->C_DestroyObject(s, all[i]), CKR_OK);
}

/* vhsmd --no-plaintext-import: unwrapping is a way in for plaintext only under a KEK whose value
 * may be known outside (imported, derived, ever extractable), so only such KEKs are refused; a
 * KEK generated in vhsmd and never extractable still unwraps what vhsmd wrapped with it. */
static void test_unwrap_no_plaintext_import(void **state) {
    CK_SESSION_HANDLE s = open_rw();
    uint8_t kekv[32] = {9, 8, 7};
    CK_OBJECT_HANDLE imported = import_aes(s, kekv, sizeof(kekv), false);
    CK_OBJECT_HANDLE local = gen_aes(s, 32, false, true, true);
    CK_OBJECT_HANDLE target = gen_aes(s, 24, true, false, false);
    CK_ATTRIBUTE lab = {CKA_LABEL, "npi-kek", 7}, tlab = {CKA_LABEL, "npi-target", 10};
    assert_int_equal(F->C_SetAttributeValue(s, imported, &lab, 1), CKR_OK);
    assert_int_equal(F->C_SetAttributeValue(s, local, &lab, 1), CKR_OK);
    assert_int_equal(F->C_SetAttributeValue(s, target, &tlab, 1), CKR_OK);
    uint8_t b1[40], b2[40];
    CK_ULONG n1 = sizeof(b1), n2 = sizeof(b2);
    assert_int_equal(wrap(s, CKM_AES_KEY_WRAP, imported, target, b1, &n1), CKR_OK);
    assert_int_equal(wrap(s, CKM_AES_KEY_WRAP, local, target, b2, &n2), CKR_OK);
    assert_int_equal(F->C_Finalize(NULL), CKR_OK);
    vhsmd_stop();
    vhsmd_extra_arg = "--no-plaintext-import";
    vhsmd_start();
    vhsmd_extra_arg = NULL;
    s = open_rw();
    /* handles are per module instance: find the two KEKs again by their label */
    CK_ATTRIBUTE q[] = {{CKA_LABEL, "npi-kek", 7}};
    CK_OBJECT_HANDLE h[8];
    CK_ULONG nh = 0;
    assert_int_equal(F->C_FindObjectsInit(s, q, 1), CKR_OK);
    assert_int_equal(F->C_FindObjects(s, h, 8, &nh), CKR_OK);
    assert_int_equal(F->C_FindObjectsFinal(s), CKR_OK);
    assert_int_equal(nh, 2);
    int ok = 0, refused = 0;
    CK_OBJECT_HANDLE kl = 0;
    for (CK_ULONG i = 0; i < nh; i++) {
        CK_OBJECT_HANDLE u = 0;
        bool is_local = bool_attr(s, h[i], CKA_LOCAL) == CK_TRUE;
        CK_RV rv = unwrap_secret(s, CKM_AES_KEY_WRAP, h[i], is_local ? b2 : b1, is_local ? n2 : n1,
                                 &kt_aes, 0, &u);
        if (is_local) {
            assert_int_equal(rv, CKR_OK);
            assert_int_equal(F->C_DestroyObject(s, u), CKR_OK);
            ok++;
        } else {
            assert_int_equal(rv, CKR_KEY_FUNCTION_NOT_PERMITTED);
            refused++;
        }
        if (is_local)
            kl = h[i];
        else
            assert_int_equal(F->C_DestroyObject(s, h[i]), CKR_OK);
    }
    assert_int_equal(ok, 1);
    assert_int_equal(refused, 1);
    /* the AES-192 target came back from the keystore as it was: the local KEK wraps it to the
     * same bytes as before the restart */
    CK_OBJECT_HANDLE tg = 0;
    CK_ULONG nk = 0;
    assert_int_equal(F->C_FindObjectsInit(s, &tlab, 1), CKR_OK);
    assert_int_equal(F->C_FindObjects(s, &tg, 1, &nk), CKR_OK);
    assert_int_equal(F->C_FindObjectsFinal(s), CKR_OK);
    assert_int_equal(nk, 1);
    assert_int_equal(ulong_attr(s, tg, CKA_VALUE_LEN), 24);
    uint8_t b3[40];
    CK_ULONG n3 = sizeof(b3);
    assert_int_equal(wrap(s, CKM_AES_KEY_WRAP, kl, tg, b3, &n3), CKR_OK);
    assert_int_equal(n3, n2);
    assert_memory_equal(b3, b2, n2);
    assert_int_equal(F->C_DestroyObject(s, kl), CKR_OK);
    assert_int_equal(F->C_DestroyObject(s, tg), CKR_OK);
    assert_int_equal(F->C_Finalize(NULL), CKR_OK);
    vhsmd_stop();
    vhsmd_start();
}

/* ---- main ----------------------------------------------------------------------------------- */

static int finalize(void **state) {
    (void)F->C_Finalize(NULL);
    return 0;
}

static int setup(void **state) {
    vhsmd_start();
    /* a token with an SO PIN and no user PIN: keys need no login, the SO can log in */
    CK_C_INITIALIZE_ARGS a = {.flags = CKF_OS_LOCKING_OK};
    static CK_UTF8CHAR label[33] = "wrap test token                 ";
    if (F->C_Initialize(&a) != CKR_OK ||
        F->C_InitToken(0, (CK_UTF8CHAR_PTR)SO_PIN, strlen(SO_PIN), label) != CKR_OK)
        return -1;
    (void)F->C_Finalize(NULL);
    return 0;
}

static int teardown(void **state) {
    vhsmd_stop();
    return 0;
}

int main(void) {
    const char *path = getenv("P11T_MODULE");
    if (!path || !getenv("P11T_VHSMD") || !getenv("P11T_DIR")) {
        fprintf(stderr, "P11T_MODULE, P11T_VHSMD and P11T_DIR must be set\n");
        return 2;
    }
    char env[600];
    snprintf(env, sizeof(env), "%s/vhsm.sock", getenv("P11T_DIR"));
    setenv("VHSM_PKCS11_SOCKETS", env, 1);
    void *module = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!module) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 1;
    }
    CK_RV (*gfl)(CK_FUNCTION_LIST_PTR_PTR) = (void *)dlsym(module, "C_GetFunctionList");
    if (!gfl || gfl(&F) != CKR_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_mechanism_info, finalize),
        cmocka_unit_test_teardown(test_wrap_secret_round_trip, finalize),
        cmocka_unit_test_teardown(test_wrap_private_keys, finalize),
        cmocka_unit_test_teardown(test_rfc3394_vectors, finalize),
        cmocka_unit_test_teardown(test_rfc5649_vectors, finalize),
        cmocka_unit_test_teardown(test_kwp_against_openssl, finalize),
        cmocka_unit_test_teardown(test_wrap_refusals, finalize),
        cmocka_unit_test_teardown(test_wrap_with_trusted, finalize),
        cmocka_unit_test_teardown(test_ecdh_derive, finalize),
        cmocka_unit_test_teardown(test_unwrap_no_plaintext_import, finalize),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
