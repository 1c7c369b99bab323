/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Branch par tests of libvhsm-pkcs11.so, included by pkcs11-test.c (they use its helpers and its
 * vhsmd): SHA-224/512 variants, RSA-PSS and RSA-OAEP with free parameters (an OAEP label), HMAC
 * with any hash and _GENERAL lengths, each checked by plain OpenSSL; C_SetPIN keeping the login
 * of the application's other connections.
 */

#ifndef ELEMENTSOF
#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))
#endif

/* An RSA-2048 key made by OpenSSL, imported (so OpenSSL holds the private key too): *priv and
 * *pub its two objects. */
static EVP_PKEY *import_rsa(CK_SESSION_HANDLE s, const char *label, CK_OBJECT_HANDLE *priv,
                            CK_OBJECT_HANDLE *pub) {
    EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    assert_non_null(pk);
    static const char *const names[8] = {
        OSSL_PKEY_PARAM_RSA_N,         OSSL_PKEY_PARAM_RSA_E,
        OSSL_PKEY_PARAM_RSA_D,         OSSL_PKEY_PARAM_RSA_FACTOR1,
        OSSL_PKEY_PARAM_RSA_FACTOR2,   OSSL_PKEY_PARAM_RSA_EXPONENT1,
        OSSL_PKEY_PARAM_RSA_EXPONENT2, OSSL_PKEY_PARAM_RSA_COEFFICIENT1};
    static const CK_ATTRIBUTE_TYPE types[8] = {
        CKA_MODULUS, CKA_PUBLIC_EXPONENT, CKA_PRIVATE_EXPONENT, CKA_PRIME_1,
        CKA_PRIME_2, CKA_EXPONENT_1,      CKA_EXPONENT_2,       CKA_COEFFICIENT};
    uint8_t comp[8][256];
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY, pcls = CKO_PUBLIC_KEY;
    CK_KEY_TYPE kt = CKK_RSA;
    CK_BBOOL yes = CK_TRUE;
    CK_ATTRIBUTE t[13] = {{CKA_CLASS, &cls, sizeof(cls)},
                          {CKA_KEY_TYPE, &kt, sizeof(kt)},
                          {CKA_SIGN, &yes, sizeof(yes)},
                          {CKA_DECRYPT, &yes, sizeof(yes)},
                          {CKA_LABEL, (void *)label, strlen(label)}};
    for (int i = 0; i < 8; i++) {
        BIGNUM *bn = NULL;
        assert_int_equal(EVP_PKEY_get_bn_param(pk, names[i], &bn), 1);
        int n = BN_bn2bin(bn, comp[i]);
        assert_true(n > 0 && n <= 256);
        BN_clear_free(bn);
        t[5 + i] = (CK_ATTRIBUTE){types[i], comp[i], (CK_ULONG)n};
    }
    assert_int_equal(F->C_CreateObject(s, t, 13, priv), CKR_OK);
    CK_ATTRIBUTE ft[] = {{CKA_CLASS, &pcls, sizeof(pcls)},
                         {CKA_LABEL, (void *)label, strlen(label)}};
    CK_ULONG n = 0;
    assert_int_equal(F->C_FindObjectsInit(s, ft, 2), CKR_OK);
    assert_int_equal(F->C_FindObjects(s, pub, 1, &n), CKR_OK);
    assert_int_equal(F->C_FindObjectsFinal(s), CKR_OK);
    assert_int_equal(n, 1);
    return pk;
}

static void mech_info(CK_MECHANISM_TYPE t, CK_ULONG min, CK_ULONG max, CK_FLAGS flags) {
    CK_MECHANISM_INFO mi;
    assert_int_equal(F->C_GetMechanismInfo(0, t, &mi), CKR_OK);
    assert_int_equal(mi.ulMinKeySize, min);
    assert_int_equal(mi.ulMaxKeySize, max);
    assert_int_equal(mi.flags, flags);
}

static bool mech_listed(CK_MECHANISM_TYPE t) {
    CK_MECHANISM_TYPE mt[128];
    CK_ULONG n = 128;
    assert_int_equal(F->C_GetMechanismList(0, mt, &n), CKR_OK);
    for (CK_ULONG i = 0; i < n; i++)
        if (mt[i] == t)
            return true;
    return false;
}

/* Signs msg with mech (single or multi-part), then checks the signature with C_Verify (and a
 * flipped bit with it); returns the length. */
static CK_ULONG sign_both(CK_SESSION_HANDLE s, CK_MECHANISM *m, CK_OBJECT_HANDLE priv,
                          CK_OBJECT_HANDLE pub, const uint8_t *msg, size_t ml, bool multi,
                          uint8_t *sig) {
    CK_ULONG sl = 0;
    assert_int_equal(F->C_SignInit(s, m, priv), CKR_OK);
    if (multi) {
        assert_int_equal(F->C_SignUpdate(s, (CK_BYTE_PTR)msg, 3), CKR_OK);
        assert_int_equal(F->C_SignUpdate(s, (CK_BYTE_PTR)msg + 3, ml - 3), CKR_OK);
        assert_int_equal(F->C_SignFinal(s, NULL, &sl), CKR_OK);
        assert_int_equal(F->C_SignFinal(s, sig, &sl), CKR_OK);
    } else {
        assert_int_equal(F->C_Sign(s, (CK_BYTE_PTR)msg, ml, NULL, &sl), CKR_OK);
        assert_int_equal(F->C_Sign(s, (CK_BYTE_PTR)msg, ml, sig, &sl), CKR_OK);
    }
    assert_int_equal(F->C_VerifyInit(s, m, pub), CKR_OK);
    if (multi) {
        assert_int_equal(F->C_VerifyUpdate(s, (CK_BYTE_PTR)msg, 1), CKR_OK);
        assert_int_equal(F->C_VerifyUpdate(s, (CK_BYTE_PTR)msg + 1, ml - 1), CKR_OK);
        assert_int_equal(F->C_VerifyFinal(s, sig, sl), CKR_OK);
    } else
        assert_int_equal(F->C_Verify(s, (CK_BYTE_PTR)msg, ml, sig, sl), CKR_OK);
    sig[sl / 2] ^= 0x40;
    assert_int_equal(F->C_VerifyInit(s, m, pub), CKR_OK);
    assert_int_equal(F->C_Verify(s, (CK_BYTE_PTR)msg, ml, sig, sl), CKR_SIGNATURE_INVALID);
    sig[sl / 2] ^= 0x40;
    return sl;
}

/* ECDSA r||s (field size each) checked by OpenSSL over md(data). */
static void check_ecdsa_md(EVP_PKEY *k, const EVP_MD *md, const uint8_t *data, size_t n,
                           const uint8_t *sig, size_t siglen) {
    ECDSA_SIG *es = ECDSA_SIG_new();
    int h = (int)siglen / 2;
    ECDSA_SIG_set0(es, BN_bin2bn(sig, h, NULL), BN_bin2bn(sig + h, h, NULL));
    uint8_t *der = NULL;
    int dl = i2d_ECDSA_SIG(es, &der);
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestVerifyInit(c, NULL, md, NULL, k), 1);
    assert_int_equal(EVP_DigestVerify(c, der, (size_t)dl, data, n), 1);
    EVP_MD_CTX_free(c);
    OPENSSL_free(der);
    ECDSA_SIG_free(es);
}

static void test_par_sha512_variants(void **state) {
    assert_int_equal(init_default(), CKR_OK);
    CK_SESSION_HANDLE s = open_rw();
    const CK_FLAGS sv = CKF_HW | CKF_SIGN | CKF_VERIFY;
    const CK_FLAGS ec = CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS;
    mech_info(CKM_ECDSA_SHA512, 256, 384, sv | ec);
    mech_info(CKM_ECDSA_SHA224, 256, 384, sv | ec);
    mech_info(CKM_SHA512_RSA_PKCS, 2048, 4096, sv);
    mech_info(CKM_SHA224_RSA_PKCS, 2048, 4096, sv);
    assert_true(mech_listed(CKM_ECDSA_SHA512));
    assert_true(mech_listed(CKM_SHA512_RSA_PKCS));
    static const uint8_t msg[] = "a message for the SHA-2 variants";
    const size_t ml = sizeof(msg) - 1;
    uint8_t sig[512];

    /* ECDSA with SHA-512 / SHA-224 on P-256 (the hash is truncated to the order, FIPS 186) and
     * P-384: hashed in the module, signed by vhsmd (ecdsa-raw) */
    static const uint8_t oid_p384[] = {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22};
    for (int curve = 0; curve < 2; curve++) {
        CK_OBJECT_HANDLE pub, priv;
        CK_MECHANISM gm = {CKM_EC_KEY_PAIR_GEN, NULL, 0};
        CK_BBOOL yes = CK_TRUE;
        CK_ATTRIBUTE pt[] = {{CKA_TOKEN, &yes, sizeof(yes)},
                             {CKA_EC_PARAMS, curve ? (void *)oid_p384 : (void *)oid_p256,
                              curve ? sizeof(oid_p384) : sizeof(oid_p256)}};
        CK_ATTRIBUTE vt[] = {{CKA_TOKEN, &yes, sizeof(yes)}, {CKA_SIGN, &yes, sizeof(yes)}};
        assert_int_equal(F->C_GenerateKeyPair(s, &gm, pt, 2, vt, 2, &pub, &priv), CKR_OK);
        EVP_PKEY *k = pub_of(s, pub);
        const CK_MECHANISM_TYPE mt[] = {CKM_ECDSA_SHA512, CKM_ECDSA_SHA224};
        const EVP_MD *md[] = {EVP_sha512(), EVP_sha224()};
        for (int i = 0; i < 2; i++)
            for (int multi = 0; multi < 2; multi++) {
                CK_MECHANISM m = {mt[i], NULL, 0};
                CK_ULONG sl = sign_both(s, &m, priv, pub, msg, ml, multi, sig);
                assert_int_equal(sl, curve ? 96 : 64);
                check_ecdsa_md(k, md[i], msg, ml, sig, sl);
            }
        EVP_PKEY_free(k);
    }

    /* RSA PKCS#1 v1.5 with SHA-512 / SHA-224 (DigestInfo built here, vhsmd's rsa-pkcs1-raw) */
    CK_OBJECT_HANDLE rpub, rpriv;
    gen_pair(s, CKM_RSA_PKCS_KEY_PAIR_GEN, "par-rsa512", &rpub, &rpriv);
    EVP_PKEY *k = pub_of(s, rpub);
    const CK_MECHANISM_TYPE mt[] = {CKM_SHA512_RSA_PKCS, CKM_SHA224_RSA_PKCS};
    const EVP_MD *md[] = {EVP_sha512(), EVP_sha224()};
    for (int i = 0; i < 2; i++)
        for (int multi = 0; multi < 2; multi++) {
            CK_MECHANISM m = {mt[i], NULL, 0};
            CK_ULONG sl = sign_both(s, &m, rpriv, rpub, msg, ml, multi, sig);
            assert_int_equal(sl, 256);
            EVP_MD_CTX *c = EVP_MD_CTX_new();
            assert_int_equal(EVP_DigestVerifyInit(c, NULL, md[i], NULL, k), 1);
            assert_int_equal(EVP_DigestVerify(c, sig, sl, msg, ml), 1);
            EVP_MD_CTX_free(c);
        }
    CK_MECHANISM withpar = {CKM_SHA512_RSA_PKCS, (void *)"x", 1};
    assert_int_equal(F->C_SignInit(s, &withpar, rpriv), CKR_MECHANISM_PARAM_INVALID);
    CK_MECHANISM ecm = {CKM_ECDSA_SHA512, NULL, 0};
    assert_int_equal(F->C_SignInit(s, &ecm, rpriv), CKR_KEY_TYPE_INCONSISTENT);
    EVP_PKEY_free(k);
    assert_int_equal(F->C_Finalize(NULL), CKR_OK);
}

static void test_par_pss(void **state) {
    assert_int_equal(init_default(), CKR_OK);
    CK_SESSION_HANDLE s = open_rw();
    const CK_FLAGS sv = CKF_HW | CKF_SIGN | CKF_VERIFY;
    mech_info(CKM_RSA_PKCS_PSS, 2048, 4096, sv);
    mech_info(CKM_SHA512_RSA_PKCS_PSS, 2048, 4096, sv);
    mech_info(CKM_SHA224_RSA_PKCS_PSS, 2048, 4096, sv);
    CK_OBJECT_HANDLE pub, priv;
    gen_pair(s, CKM_RSA_PKCS_KEY_PAIR_GEN, "par-pss", &pub, &priv);
    EVP_PKEY *k = pub_of(s, pub);
    static const uint8_t msg[] = "PSS with the caller's parameters";
    const size_t ml = sizeof(msg) - 1;
    uint8_t sig[512];
    /* emLen 256: the largest salt is 256 - hLen - 2 */
    static const struct {
        CK_MECHANISM_TYPE mech, hash;
        CK_RSA_PKCS_MGF_TYPE mgf;
        CK_ULONG salt;
    } cases[] = {
        {CKM_SHA512_RSA_PKCS_PSS, CKM_SHA512, CKG_MGF1_SHA512, 64},
        {CKM_SHA512_RSA_PKCS_PSS, CKM_SHA512, CKG_MGF1_SHA1, 0},
        {CKM_SHA512_RSA_PKCS_PSS, CKM_SHA512, CKG_MGF1_SHA256, 256 - 64 - 2},
        {CKM_SHA256_RSA_PKCS_PSS, CKM_SHA256, CKG_MGF1_SHA384, 20},
        {CKM_SHA384_RSA_PKCS_PSS, CKM_SHA384, CKG_MGF1_SHA224, 0},
        {CKM_SHA224_RSA_PKCS_PSS, CKM_SHA224, CKG_MGF1_SHA224, 28},
        {CKM_RSA_PKCS_PSS, CKM_SHA512, CKG_MGF1_SHA512, 64},
        {CKM_RSA_PKCS_PSS, CKM_SHA_1, CKG_MGF1_SHA1, 20},
        {CKM_RSA_PKCS_PSS, CKM_SHA384, CKG_MGF1_SHA256, 256 - 48 - 2},
    };
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        const EVP_MD *md = cases[i].hash == CKM_SHA512   ? EVP_sha512()
                           : cases[i].hash == CKM_SHA384 ? EVP_sha384()
                           : cases[i].hash == CKM_SHA256 ? EVP_sha256()
                           : cases[i].hash == CKM_SHA224 ? EVP_sha224()
                                                         : EVP_sha1();
        const EVP_MD *mgf = cases[i].mgf == CKG_MGF1_SHA512   ? EVP_sha512()
                            : cases[i].mgf == CKG_MGF1_SHA384 ? EVP_sha384()
                            : cases[i].mgf == CKG_MGF1_SHA256 ? EVP_sha256()
                            : cases[i].mgf == CKG_MGF1_SHA224 ? EVP_sha224()
                                                              : EVP_sha1();
        CK_RSA_PKCS_PSS_PARAMS p = {cases[i].hash, cases[i].mgf, cases[i].salt};
        CK_MECHANISM m = {cases[i].mech, &p, sizeof(p)};
        bool prehashed = cases[i].mech == CKM_RSA_PKCS_PSS;
        uint8_t dg[64];
        unsigned dl = 0;
        assert_int_equal(EVP_Digest(msg, ml, dg, &dl, md, NULL), 1);
        for (int multi = 0; multi < (prehashed ? 1 : 2); multi++) {
            CK_ULONG sl = prehashed ? sign_both(s, &m, priv, pub, dg, dl, false, sig)
                                    : sign_both(s, &m, priv, pub, msg, ml, multi, sig);
            assert_int_equal(sl, 256);
            /* plain OpenSSL, same parameters, the exported public key */
            EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(k, NULL);
            assert_int_equal(EVP_PKEY_verify_init(c), 1);
            assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PSS_PADDING), 1);
            assert_int_equal(EVP_PKEY_CTX_set_signature_md(c, md), 1);
            assert_int_equal(EVP_PKEY_CTX_set_rsa_mgf1_md(c, mgf), 1);
            assert_int_equal(EVP_PKEY_CTX_set_rsa_pss_saltlen(c, (int)cases[i].salt), 1);
            assert_int_equal(EVP_PKEY_verify(c, sig, sl, dg, dl), 1);
            EVP_PKEY_CTX_free(c);
        }
    }
    /* parameters: hashAlg not the mechanism's, a salt one byte too long, an unknown MGF */
    CK_RSA_PKCS_PSS_PARAMS bad[] = {{CKM_SHA256, CKG_MGF1_SHA512, 32},
                                    {CKM_SHA512, CKG_MGF1_SHA512, 256 - 64 - 1},
                                    {CKM_SHA512, 0x99, 32},
                                    {CKM_MD5, CKG_MGF1_SHA512, 16}};
    for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
        CK_MECHANISM m = {CKM_SHA512_RSA_PKCS_PSS, &bad[i], sizeof(bad[i])};
        assert_int_equal(F->C_SignInit(s, &m, priv), CKR_MECHANISM_PARAM_INVALID);
        assert_int_equal(F->C_VerifyInit(s, &m, pub), CKR_MECHANISM_PARAM_INVALID);
    }
    CK_RSA_PKCS_PSS_PARAMS big = {CKM_SHA384, CKG_MGF1_SHA1, 256 - 48 - 1};
    CK_MECHANISM bm = {CKM_RSA_PKCS_PSS, &big, sizeof(big)};
    assert_int_equal(F->C_SignInit(s, &bm, priv), CKR_MECHANISM_PARAM_INVALID);
    CK_MECHANISM shortp = {CKM_RSA_PKCS_PSS, &big, sizeof(big) - 1};
    assert_int_equal(F->C_SignInit(s, &shortp, priv), CKR_MECHANISM_PARAM_INVALID);
    /* CKM_RSA_PKCS_PSS takes a digest of hashAlg's size, single-part */
    CK_RSA_PKCS_PSS_PARAMS p512 = {CKM_SHA512, CKG_MGF1_SHA512, 64};
    CK_MECHANISM raw = {CKM_RSA_PKCS_PSS, &p512, sizeof(p512)};
    CK_ULONG sl = sizeof(sig);
    assert_int_equal(F->C_SignInit(s, &raw, priv), CKR_OK);
    assert_int_equal(F->C_Sign(s, (CK_BYTE_PTR)msg, 32, sig, &sl), CKR_DATA_LEN_RANGE);
    assert_int_equal(F->C_SignInit(s, &raw, priv), CKR_OK);
    assert_int_equal(F->C_SignUpdate(s, (CK_BYTE_PTR)msg, 32), CKR_FUNCTION_NOT_SUPPORTED);
    EVP_PKEY_free(k);
    assert_int_equal(F->C_Finalize(NULL), CKR_OK);
}

static void test_par_oaep(void **state) {
    assert_int_equal(init_default(), CKR_OK);
    CK_SESSION_HANDLE s = open_rw();
    mech_info(CKM_RSA_PKCS_OAEP, 2048, 4096, CKF_HW | CKF_ENCRYPT | CKF_DECRYPT);
    CK_OBJECT_HANDLE priv, pub;
    EVP_PKEY *pk = import_rsa(s, "par-oaep", &priv, &pub);
    static const uint8_t pt[] = "a wrapped data key";
    const size_t pl = sizeof(pt) - 1;
    static const char label[] = "context: volume 7";
    static const struct {
        CK_MECHANISM_TYPE hash;
        CK_RSA_PKCS_MGF_TYPE mgf;
        const char *label;
    } cases[] = {
        {CKM_SHA256, CKG_MGF1_SHA256, label}, {CKM_SHA_1, CKG_MGF1_SHA1, label},
        {CKM_SHA384, CKG_MGF1_SHA384, NULL},  {CKM_SHA512, CKG_MGF1_SHA512, label},
        {CKM_SHA512, CKG_MGF1_SHA1, label},   {CKM_SHA256, CKG_MGF1_SHA512, label},
        {CKM_SHA224, CKG_MGF1_SHA224, label},
    };
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        const EVP_MD *md = cases[i].hash == CKM_SHA512   ? EVP_sha512()
                           : cases[i].hash == CKM_SHA384 ? EVP_sha384()
                           : cases[i].hash == CKM_SHA256 ? EVP_sha256()
                           : cases[i].hash == CKM_SHA224 ? EVP_sha224()
                                                         : EVP_sha1();
        const EVP_MD *mgf = cases[i].mgf == CKG_MGF1_SHA512   ? EVP_sha512()
                            : cases[i].mgf == CKG_MGF1_SHA384 ? EVP_sha384()
                            : cases[i].mgf == CKG_MGF1_SHA256 ? EVP_sha256()
                            : cases[i].mgf == CKG_MGF1_SHA224 ? EVP_sha224()
                                                              : EVP_sha1();
        size_t ll = cases[i].label ? strlen(cases[i].label) : 0;
        CK_RSA_PKCS_OAEP_PARAMS p = {cases[i].hash, cases[i].mgf, CKZ_DATA_SPECIFIED,
                                     (void *)cases[i].label, ll};
        CK_MECHANISM m = {CKM_RSA_PKCS_OAEP, &p, sizeof(p)};
        uint8_t ct[256], out[256];
        size_t cl = sizeof(ct), ol = sizeof(out);
        CK_ULONG ckl = sizeof(ct), ckol = sizeof(out);

        /* OpenSSL encrypts, vhsmd decrypts (and checks the label) */
        EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(pk, NULL);
        assert_int_equal(EVP_PKEY_encrypt_init(c), 1);
        assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_OAEP_PADDING), 1);
        assert_int_equal(EVP_PKEY_CTX_set_rsa_oaep_md(c, md), 1);
        assert_int_equal(EVP_PKEY_CTX_set_rsa_mgf1_md(c, mgf), 1);
        if (ll)
            assert_int_equal(
                EVP_PKEY_CTX_set0_rsa_oaep_label(c, OPENSSL_memdup(cases[i].label, ll), (int)ll),
                1);
        assert_int_equal(EVP_PKEY_encrypt(c, ct, &cl, pt, pl), 1);
        EVP_PKEY_CTX_free(c);
        assert_int_equal(F->C_DecryptInit(s, &m, priv), CKR_OK);
        assert_int_equal(F->C_Decrypt(s, ct, (CK_ULONG)cl, out, &ckol), CKR_OK);
        assert_int_equal(ckol, pl);
        assert_memory_equal(out, pt, pl);
        /* a wrong label (or none instead of one) fails in vhsmd */
        CK_RSA_PKCS_OAEP_PARAMS wrong = p;
        wrong.pSourceData = ll ? (void *)"context: volume 8" : (void *)"x";
        wrong.ulSourceDataLen = ll ? ll : 1;
        CK_MECHANISM wm = {CKM_RSA_PKCS_OAEP, &wrong, sizeof(wrong)};
        ckol = sizeof(out);
        assert_int_equal(F->C_DecryptInit(s, &wm, priv), CKR_OK);
        assert_int_equal(F->C_Decrypt(s, ct, (CK_ULONG)cl, out, &ckol), CKR_ENCRYPTED_DATA_INVALID);

        /* the module encrypts (public key), OpenSSL decrypts with the private key */
        assert_int_equal(F->C_EncryptInit(s, &m, pub), CKR_OK);
        assert_int_equal(F->C_Encrypt(s, (CK_BYTE_PTR)pt, pl, ct, &ckl), CKR_OK);
        assert_int_equal(ckl, 256);
        c = EVP_PKEY_CTX_new(pk, NULL);
        assert_int_equal(EVP_PKEY_decrypt_init(c), 1);
        assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_OAEP_PADDING), 1);
        assert_int_equal(EVP_PKEY_CTX_set_rsa_oaep_md(c, md), 1);
        assert_int_equal(EVP_PKEY_CTX_set_rsa_mgf1_md(c, mgf), 1);
        if (ll)
            assert_int_equal(
                EVP_PKEY_CTX_set0_rsa_oaep_label(c, OPENSSL_memdup(cases[i].label, ll), (int)ll),
                1);
        assert_int_equal(EVP_PKEY_decrypt(c, out, &ol, ct, ckl), 1);
        EVP_PKEY_CTX_free(c);
        assert_int_equal(ol, pl);
        assert_memory_equal(out, pt, pl);
    }
    /* parameters */
    CK_RSA_PKCS_OAEP_PARAMS bad[] = {
        {CKM_MD5, CKG_MGF1_SHA256, CKZ_DATA_SPECIFIED, NULL, 0},
        {CKM_SHA256, 0x77, CKZ_DATA_SPECIFIED, NULL, 0},
        {CKM_SHA256, CKG_MGF1_SHA256, 2, NULL, 0},
        {CKM_SHA256, CKG_MGF1_SHA256, CKZ_DATA_SPECIFIED, NULL, 4},
    };
    for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
        CK_MECHANISM m = {CKM_RSA_PKCS_OAEP, &bad[i], sizeof(bad[i])};
        assert_int_equal(F->C_DecryptInit(s, &m, priv), CKR_MECHANISM_PARAM_INVALID);
        assert_int_equal(F->C_EncryptInit(s, &m, pub), CKR_MECHANISM_PARAM_INVALID);
    }
    /* the plaintext bound follows the hash: k - 2 hLen - 2 */
    CK_RSA_PKCS_OAEP_PARAMS p512 = {CKM_SHA512, CKG_MGF1_SHA256, CKZ_DATA_SPECIFIED, NULL, 0};
    CK_MECHANISM m512 = {CKM_RSA_PKCS_OAEP, &p512, sizeof(p512)};
    uint8_t big[200] = {0}, ct[256];
    CK_ULONG cl = sizeof(ct);
    assert_int_equal(F->C_EncryptInit(s, &m512, pub), CKR_OK);
    assert_int_equal(F->C_Encrypt(s, big, 256 - 128 - 1, ct, &cl), CKR_DATA_LEN_RANGE);
    assert_int_equal(F->C_EncryptInit(s, &m512, pub), CKR_OK);
    cl = sizeof(ct);
    assert_int_equal(F->C_Encrypt(s, big, 256 - 128 - 2, ct, &cl), CKR_OK);
    EVP_PKEY_free(pk);
    assert_int_equal(F->C_DestroyObject(s, priv), CKR_OK);
    assert_int_equal(F->C_Finalize(NULL), CKR_OK);
}

static void test_par_hmac(void **state) {
    assert_int_equal(init_default(), CKR_OK);
    CK_SESSION_HANDLE s = open_rw();
    for (CK_MECHANISM_TYPE t = CKM_SHA256_HMAC; t <= CKM_SHA256_HMAC_GENERAL; t++)
        mech_info(t, 32, 48, CKF_HW | CKF_SIGN | CKF_VERIFY);
    mech_info(CKM_SHA512_HMAC, 32, 48, CKF_HW | CKF_SIGN | CKF_VERIFY);
    mech_info(CKM_SHA512_HMAC_GENERAL, 32, 48, CKF_HW | CKF_SIGN | CKF_VERIFY);
    mech_info(CKM_SHA384_HMAC_GENERAL, 32, 48, CKF_HW | CKF_SIGN | CKF_VERIFY);
    mech_info(CKM_SHA224_HMAC, 32, 48, CKF_HW | CKF_SIGN | CKF_VERIFY);
    for (int size = 32; size <= 48; size += 16) {
        uint8_t key[48];
        for (size_t i = 0; i < sizeof(key); i++)
            key[i] = (uint8_t)(0x31 * i + size);
        CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
        CK_KEY_TYPE kt = CKK_GENERIC_SECRET;
        CK_BBOOL yes = CK_TRUE;
        CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof(cls)},
                            {CKA_KEY_TYPE, &kt, sizeof(kt)},
                            {CKA_SIGN, &yes, sizeof(yes)},
                            {CKA_VERIFY, &yes, sizeof(yes)},
                            {CKA_VALUE, key, (CK_ULONG)size}};
        CK_OBJECT_HANDLE k = 0;
        assert_int_equal(F->C_CreateObject(s, t, 5, &k), CKR_OK);
        static const struct {
            CK_MECHANISM_TYPE mech;
            CK_ULONG general; /* 0: the full tag */
        } cases[] = {
            {CKM_SHA512_HMAC, 0},          {CKM_SHA384_HMAC, 0},
            {CKM_SHA256_HMAC, 0},          {CKM_SHA224_HMAC, 0},
            {CKM_SHA512_HMAC_GENERAL, 64}, {CKM_SHA512_HMAC_GENERAL, 20},
            {CKM_SHA384_HMAC_GENERAL, 1},  {CKM_SHA256_HMAC_GENERAL, 16},
            {CKM_SHA224_HMAC_GENERAL, 28},
        };
        static const char msg[] = "HMAC with every hash, checked by OpenSSL";
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
            CK_MECHANISM_TYPE mt = cases[i].mech;
            const EVP_MD *md =
                mt == CKM_SHA512_HMAC || mt == CKM_SHA512_HMAC_GENERAL   ? EVP_sha512()
                : mt == CKM_SHA384_HMAC || mt == CKM_SHA384_HMAC_GENERAL ? EVP_sha384()
                : mt == CKM_SHA256_HMAC || mt == CKM_SHA256_HMAC_GENERAL ? EVP_sha256()
                                                                         : EVP_sha224();
            CK_ULONG glen = cases[i].general;
            CK_MECHANISM m = {mt, glen ? &glen : NULL, glen ? sizeof(glen) : 0};
            CK_ULONG want = glen ? glen : (CK_ULONG)EVP_MD_get_size(md);
            for (int empty = 0; empty < 2; empty++) {
                size_t ml = empty ? 0 : strlen(msg);
                uint8_t ref[64], tag[64];
                unsigned rl = 0;
                assert_non_null(HMAC(md, key, size, (const uint8_t *)msg, ml, ref, &rl));
                for (int multi = 0; multi < 2; multi++) {
                    CK_ULONG tl = 0;
                    assert_int_equal(F->C_SignInit(s, &m, k), CKR_OK);
                    if (multi && ml) {
                        assert_int_equal(F->C_SignUpdate(s, (CK_BYTE_PTR)msg, 5), CKR_OK);
                        assert_int_equal(F->C_SignUpdate(s, (CK_BYTE_PTR)msg + 5, ml - 5), CKR_OK);
                        assert_int_equal(F->C_SignFinal(s, NULL, &tl), CKR_OK);
                        assert_int_equal(tl, want);
                        assert_int_equal(F->C_SignFinal(s, tag, &tl), CKR_OK);
                    } else {
                        assert_int_equal(F->C_Sign(s, (CK_BYTE_PTR)msg, ml, NULL, &tl), CKR_OK);
                        assert_int_equal(tl, want);
                        assert_int_equal(F->C_Sign(s, (CK_BYTE_PTR)msg, ml, tag, &tl), CKR_OK);
                    }
                    assert_int_equal(tl, want);
                    assert_memory_equal(tag, ref, want); /* the truncated HMAC */
                    /* verification inside vhsmd */
                    assert_int_equal(F->C_VerifyInit(s, &m, k), CKR_OK);
                    if (multi && ml) {
                        assert_int_equal(F->C_VerifyUpdate(s, (CK_BYTE_PTR)msg, ml), CKR_OK);
                        assert_int_equal(F->C_VerifyFinal(s, tag, tl), CKR_OK);
                    } else
                        assert_int_equal(F->C_Verify(s, (CK_BYTE_PTR)msg, ml, tag, tl), CKR_OK);
                    tag[tl - 1] ^= 1;
                    assert_int_equal(F->C_VerifyInit(s, &m, k), CKR_OK);
                    assert_int_equal(F->C_Verify(s, (CK_BYTE_PTR)msg, ml, tag, tl),
                                     CKR_SIGNATURE_INVALID);
                    assert_int_equal(F->C_VerifyInit(s, &m, k), CKR_OK);
                    assert_int_equal(
                        F->C_Verify(s, (CK_BYTE_PTR)msg, ml, ref, want > 1 ? want - 1 : 2),
                        CKR_SIGNATURE_LEN_RANGE);
                }
            }
        }
        /* _GENERAL lengths: 1..hLen */
        CK_ULONG zero = 0, over = 65, over256 = 33;
        CK_MECHANISM g0 = {CKM_SHA512_HMAC_GENERAL, &zero, sizeof(zero)};
        CK_MECHANISM g1 = {CKM_SHA512_HMAC_GENERAL, &over, sizeof(over)};
        CK_MECHANISM g2 = {CKM_SHA256_HMAC_GENERAL, &over256, sizeof(over256)};
        CK_MECHANISM g3 = {CKM_SHA256_HMAC_GENERAL, NULL, 0};
        CK_MECHANISM g4 = {CKM_SHA256_HMAC, &zero, sizeof(zero)};
        assert_int_equal(F->C_SignInit(s, &g0, k), CKR_MECHANISM_PARAM_INVALID);
        assert_int_equal(F->C_SignInit(s, &g1, k), CKR_MECHANISM_PARAM_INVALID);
        assert_int_equal(F->C_VerifyInit(s, &g2, k), CKR_MECHANISM_PARAM_INVALID);
        assert_int_equal(F->C_SignInit(s, &g3, k), CKR_MECHANISM_PARAM_INVALID);
        assert_int_equal(F->C_SignInit(s, &g4, k), CKR_MECHANISM_PARAM_INVALID);
        assert_int_equal(F->C_DestroyObject(s, k), CKR_OK);
    }
    /* an HMAC mechanism on an RSA key */
    CK_OBJECT_HANDLE pub, priv;
    gen_pair(s, CKM_RSA_PKCS_KEY_PAIR_GEN, "par-hmac-rsa", &pub, &priv);
    CK_MECHANISM m = {CKM_SHA512_HMAC, NULL, 0};
    assert_int_equal(F->C_SignInit(s, &m, priv), CKR_KEY_TYPE_INCONSISTENT);
    assert_int_equal(F->C_Finalize(NULL), CKR_OK);
}

/* ---- C_SetPIN keeps the application's login (design note, "Requests from P2", item 1) ---- */

typedef struct SignJob {
    CK_OBJECT_HANDLE key;
    CK_RV rv;
} SignJob;

/* A new session of its own (so the module takes or opens another pooled connection, attached
 * with the login's ticket) signs 5 times. */
static void *sign_job(void *p) {
    SignJob *j = p;
    CK_SESSION_HANDLE h = 0;
    CK_MECHANISM m = {CKM_ECDSA_SHA256, NULL, 0};
    uint8_t sig[128];
    j->rv = F->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &h);
    for (int i = 0; i < 5 && j->rv == CKR_OK; i++) {
        CK_ULONG sl = sizeof(sig);
        j->rv = F->C_SignInit(h, &m, j->key);
        if (j->rv == CKR_OK)
            j->rv = F->C_Sign(h, (CK_BYTE_PTR) "x", 1, sig, &sl);
    }
    if (h)
        (void)F->C_CloseSession(h);
    return NULL;
}

static void sign_in_threads(CK_OBJECT_HANDLE key, CK_RV want) {
    pthread_t t[6];
    SignJob j[6];
    for (int i = 0; i < 6; i++) {
        j[i] = (SignJob){.key = key};
        assert_int_equal(pthread_create(&t[i], NULL, sign_job, &j[i]), 0);
    }
    for (int i = 0; i < 6; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        assert_int_equal(j[i].rv, want);
    }
}

#define NEW_PIN "changed-pin-9"

/* The child: another process of the same uid with its own login (made with the old PIN). It
 * keeps it across the parent's C_SetPIN (vhsmd revokes no login on a PIN change), and then only
 * the new PIN logs in. Exit code: the step that failed. */
static int setpin_child(int rfd, int wfd, CK_OBJECT_HANDLE key_unused) {
    (void)key_unused;
    CK_SESSION_HANDLE h = 0;
    CK_MECHANISM m = {CKM_ECDSA_SHA256, NULL, 0};
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_LABEL, "par-setpin", 10}};
    CK_OBJECT_HANDLE k = 0;
    CK_ULONG n = 0, sl;
    uint8_t sig[128];
    char c;
    alarm(60); /* never outlive a failed parent */
    if (init_default() != CKR_OK || F->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &h))
        return 10;
    if (F->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR)USER_PIN, strlen(USER_PIN)) != CKR_OK)
        return 11;
    if (F->C_FindObjectsInit(h, t, 2) || F->C_FindObjects(h, &k, 1, &n) ||
        F->C_FindObjectsFinal(h) || n != 1)
        return 12;
    if (write(wfd, "a", 1) != 1 || read(rfd, &c, 1) != 1)
        return 13;
    sl = sizeof(sig);
    if (F->C_SignInit(h, &m, k) || F->C_Sign(h, (CK_BYTE_PTR) "y", 1, sig, &sl) != CKR_OK)
        return 14; /* the login of this process survived the other's PIN change */
    if (F->C_Logout(h) != CKR_OK)
        return 15;
    if (F->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR)USER_PIN, strlen(USER_PIN)) != CKR_PIN_INCORRECT)
        return 16;
    if (F->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR)NEW_PIN, strlen(NEW_PIN)) != CKR_OK)
        return 17;
    sl = sizeof(sig);
    if (F->C_SignInit(h, &m, k) || F->C_Sign(h, (CK_BYTE_PTR) "y", 1, sig, &sl) != CKR_OK)
        return 18;
    (void)F->C_Finalize(NULL);
    return 0;
}

static void test_par_setpin_keeps_login(void **state) {
    assert_int_equal(init_default(), CKR_OK);
    CK_SESSION_HANDLE s = open_rw(); /* logged in as the user */
    CK_OBJECT_HANDLE pub, priv;
    gen_pair(s, CKM_EC_KEY_PAIR_GEN, "par-setpin", &pub, &priv);
    /* several sessions and pooled connections, all attached to the login */
    sign_in_threads(priv, CKR_OK);
    int p2c[2], c2p[2];
    assert_int_equal(pipe(p2c), 0);
    assert_int_equal(pipe(c2p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(setpin_child(p2c[0], c2p[1], priv));
    char c;
    assert_int_equal(read(c2p[0], &c, 1), 1); /* the child is logged in */
    assert_int_equal(F->C_SetPIN(s, (CK_UTF8CHAR_PTR)USER_PIN, strlen(USER_PIN),
                                 (CK_UTF8CHAR_PTR)NEW_PIN, strlen(NEW_PIN)),
                     CKR_OK);
    /* still logged in: this session, the pooled connections (old and new), other threads */
    CK_SESSION_INFO si;
    assert_int_equal(F->C_GetSessionInfo(s, &si), CKR_OK);
    assert_int_equal(si.state, CKS_RW_USER_FUNCTIONS);
    sign_in_threads(priv, CKR_OK);
    CK_MECHANISM m = {CKM_ECDSA_SHA256, NULL, 0};
    uint8_t sig[128];
    CK_ULONG sl = sizeof(sig);
    assert_int_equal(F->C_SignInit(s, &m, priv), CKR_OK);
    assert_int_equal(F->C_Sign(s, (CK_BYTE_PTR) "z", 1, sig, &sl), CKR_OK);
    assert_int_equal(write(p2c[1], "b", 1), 1);
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    /* a logout still ends the login everywhere; the new PIN logs in again */
    assert_int_equal(F->C_Logout(s), CKR_OK);
    sign_in_threads(priv, CKR_USER_NOT_LOGGED_IN);
    assert_int_equal(F->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)NEW_PIN, strlen(NEW_PIN)), CKR_OK);
    sign_in_threads(priv, CKR_OK);
    /* back to the PIN the other tests use */
    assert_int_equal(F->C_SetPIN(s, (CK_UTF8CHAR_PTR)NEW_PIN, strlen(NEW_PIN),
                                 (CK_UTF8CHAR_PTR)USER_PIN, strlen(USER_PIN)),
                     CKR_OK);
    sign_in_threads(priv, CKR_OK);
    assert_int_equal(F->C_DestroyObject(s, priv), CKR_OK);
    close(p2c[0]);
    close(p2c[1]);
    close(c2p[0]);
    close(c2p[1]);
    assert_int_equal(F->C_Finalize(NULL), CKR_OK);
}
