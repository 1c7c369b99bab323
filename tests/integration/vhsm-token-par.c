/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Branch par steps of vhsm-token-test (included by vhsm-token-test.c):
 *   mech SOCK      as a uid without a token PIN: rsa-pss, rsa-oaep (label) and hmac with
 *                  parameters over the wire; PSS signatures checked by OpenSSL with the PEM
 *                  public key; parameter errors
 *   so-lock SOCK   as uid 4646: a token with a user PIN and a key; the SO PIN locked by wrong
 *                  tries; a reset by this uid is refused (-EPERM)
 *   so-reset SOCK  after root's `vhsm token reset-so-pin --uid 4646`: the SO PIN is the new one
 *                  and unlocked, the user PIN and the key unchanged
 */
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

static EVP_PKEY *pubkey_of(VhsmClient *c, const char *name) {
    char *pem = NULL;
    EXPECT(vhsm_pubkey(c, name, "pem", 0, &pem), 0);
    BIO *b = BIO_new_mem_buf(pem, -1);
    EVP_PKEY *k = b ? PEM_read_bio_PUBKEY(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    free(pem);
    CHECK(k, "PEM public key of %s", name);
    return k;
}

static void step_mech(const char *sock) {
    VhsmClient *c = conn(sock);
    VhsmKeySpec rsa = {.type = "rsa2048"}, hm = {.type = "hmac-sha384"};
    uint32_t feat = 0;
    uint8_t dg[64], *sig = NULL, *out = NULL, *pt = NULL, *t1 = NULL, *t2 = NULL;
    size_t sl = 0, ol = 0, pl = 0, l1 = 0, l2 = 0;
    unsigned dl = 0;

    EXPECT(vhsm_features(c, &feat), 0);
    CHECK((feat & (VHSM_FEATURE_MECH_PARAMS | VHSM_FEATURE_SO_PIN_RESET)) ==
              (VHSM_FEATURE_MECH_PARAMS | VHSM_FEATURE_SO_PIN_RESET),
          "features 0x%x", feat);
    EXPECT(vhsm_key_create(c, "r", &rsa), 0);
    EXPECT(vhsm_key_create(c, "h", &hm), 0);
    EVP_PKEY *k = pubkey_of(c, "r");

    /* PSS: SHA-512 digest, MGF1-SHA-1, salt 0 / the maximum (256 - 64 - 2) */
    CHECK(EVP_Digest("msg", 3, dg, &dl, EVP_sha512(), NULL) == 1, "digest");
    static const uint32_t salts[] = {0, 190};
    for (size_t i = 0; i < 2; i++) {
        VhsmParams p = {.hash = "sha512", .mgf_hash = "sha1", .salt_len = salts[i]};
        EXPECT(vhsm_sign_ex(c, "r", "rsa-pss", 0, &p, dg, dl, &sig, &sl), 0);
        CHECK(sl == 256, "PSS signature length %zu", sl);
        EXPECT(vhsm_verify_ex(c, "r", "rsa-pss", 0, &p, dg, dl, sig, sl), 0);
        EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new(k, NULL);
        CHECK(pc && EVP_PKEY_verify_init(pc) == 1 &&
                  EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PSS_PADDING) == 1 &&
                  EVP_PKEY_CTX_set_signature_md(pc, EVP_sha512()) == 1 &&
                  EVP_PKEY_CTX_set_rsa_mgf1_md(pc, EVP_sha1()) == 1 &&
                  EVP_PKEY_CTX_set_rsa_pss_saltlen(pc, (int)salts[i]) == 1 &&
                  EVP_PKEY_verify(pc, sig, sl, dg, dl) == 1,
              "OpenSSL verifies vhsmd's PSS signature (salt %u)", salts[i]);
        EVP_PKEY_CTX_free(pc);
        sig[7] ^= 1;
        EXPECT(vhsm_verify_ex(c, "r", "rsa-pss", 0, &p, dg, dl, sig, sl), -EKEYREJECTED);
        free(sig);
        sig = NULL;
    }
    VhsmParams big = {.hash = "sha512", .salt_len = 191}, md5 = {.hash = "md5"};
    EXPECT(vhsm_sign_ex(c, "r", "rsa-pss", 0, &big, dg, dl, &sig, &sl), -EINVAL);
    EXPECT(vhsm_sign_ex(c, "r", "rsa-pss", 0, &md5, dg, 16, &sig, &sl), -EINVAL);
    VhsmParams p256 = {.hash = "sha256", .salt_len = 32};
    EXPECT(vhsm_sign_ex(c, "r", "rsa-pss", 0, &p256, dg, dl, &sig, &sl), -EINVAL); /* 64 != 32 */
    EXPECT(vhsm_sign_ex(c, "h", "rsa-pss", 0, &p256, dg, 32, &sig, &sl), -EOPNOTSUPP);

    /* OAEP with a label, through vhsmd both ways; the wrong label fails */
    VhsmParams op = {
        .hash = "sha384", .mgf_hash = "sha256", .label = (const uint8_t *)"lbl", .label_len = 3};
    EXPECT(vhsm_encrypt_ex(c, "r", "rsa-oaep", &op, "secret", 6, &out, &ol), 0);
    CHECK(ol == 256, "OAEP ciphertext %zu", ol);
    EXPECT(vhsm_decrypt_ex(c, "r", "rsa-oaep", &op, out, ol, &pt, &pl), 0);
    CHECK(pl == 6 && !memcmp(pt, "secret", 6), "OAEP round trip");
    vhsm_free_secret(pt, pl);
    VhsmParams wrong = op;
    wrong.label = (const uint8_t *)"lbm";
    EXPECT(vhsm_decrypt_ex(c, "r", "rsa-oaep", &wrong, out, ol, &pt, &pl), -EKEYREJECTED);
    wrong.label_len = 0;
    EXPECT(vhsm_decrypt_ex(c, "r", "rsa-oaep", &wrong, out, ol, &pt, &pl), -EKEYREJECTED);
    EXPECT(vhsm_decrypt_ex(c, "r", "rsa-oaep", &op, out, 100, &pt, &pl), -EINVAL);
    free(out);
    out = NULL;
    /* OpenSSL encrypts with the exported key, vhsmd decrypts */
    {
        uint8_t ct[256];
        size_t cl = sizeof ct;
        EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new(k, NULL);
        CHECK(pc && EVP_PKEY_encrypt_init(pc) == 1 &&
                  EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_OAEP_PADDING) == 1 &&
                  EVP_PKEY_CTX_set_rsa_oaep_md(pc, EVP_sha384()) == 1 &&
                  EVP_PKEY_CTX_set_rsa_mgf1_md(pc, EVP_sha256()) == 1 &&
                  EVP_PKEY_CTX_set0_rsa_oaep_label(pc, OPENSSL_memdup("lbl", 3), 3) == 1 &&
                  EVP_PKEY_encrypt(pc, ct, &cl, (const uint8_t *)"from openssl", 12) == 1,
              "OpenSSL OAEP encryption");
        EVP_PKEY_CTX_free(pc);
        EXPECT(vhsm_decrypt_ex(c, "r", "rsa-oaep", &op, ct, cl, &pt, &pl), 0);
        CHECK(pl == 12 && !memcmp(pt, "from openssl", 12), "OpenSSL -> vhsmd OAEP");
        vhsm_free_secret(pt, pl);
    }

    /* HMAC: SHA-512 over a SHA-384 key, truncated to 20 bytes = the first 20 of the full tag */
    VhsmParams h512 = {.hash = "sha512"}, h512t = {.hash = "sha512", .tag_bits = 160};
    EXPECT(vhsm_sign_ex(c, "h", "hmac", 0, &h512, "data", 4, &t1, &l1), 0);
    EXPECT(vhsm_sign_ex(c, "h", "hmac", 0, &h512t, "data", 4, &t2, &l2), 0);
    CHECK(l1 == 64 && l2 == 20 && !memcmp(t1, t2, 20), "HMAC-SHA512 %zu / %zu", l1, l2);
    EXPECT(vhsm_verify_ex(c, "h", "hmac", 0, &h512t, "data", 4, t2, 20), 0);
    EXPECT(vhsm_verify_ex(c, "h", "hmac", 0, &h512t, "data", 4, t1, 64), -EKEYREJECTED);
    t2[19] ^= 1;
    EXPECT(vhsm_verify_ex(c, "h", "hmac", 0, &h512t, "data", 4, t2, 20), -EKEYREJECTED);
    free(t1);
    free(t2);
    EXPECT(vhsm_sign_ex(c, "h", "hmac", 0, &h512, "", 0, &t1, &l1), 0); /* empty message */
    free(t1);
    VhsmParams over = {.hash = "sha256", .tag_bits = 33 * 8};
    EXPECT(vhsm_sign_ex(c, "h", "hmac", 0, &over, "data", 4, &t1, &l1), -EINVAL);
    EXPECT(vhsm_sign_ex(c, "r", "hmac", 0, &h512, "data", 4, &t1, &l1), -EOPNOTSUPP);
    EVP_PKEY_free(k);
    EXPECT(vhsm_key_delete(c, "r"), 0);
    EXPECT(vhsm_key_delete(c, "h"), 0);
    vhsm_disconnect(c);
}

#define SO2 "so-pin-0002"

static void step_so_lock(const char *sock) {
    VhsmClient *c = conn(sock);
    VhsmKeySpec spec = {.type = "p256"};
    EXPECT(vhsm_token_init(c, SO, strlen(SO), "so-reset", 8), 0);
    EXPECT(vhsm_login(c, VHSM_USER_SO, SO, strlen(SO), NULL), 0);
    EXPECT(vhsm_init_pin(c, UPIN, strlen(UPIN)), 0);
    EXPECT(vhsm_logout(c), 0);
    EXPECT(vhsm_login(c, VHSM_USER_USER, UPIN, strlen(UPIN), NULL), 0);
    EXPECT(vhsm_key_create(c, "kept", &spec), 0);
    EXPECT(vhsm_logout(c), 0);
    for (int i = 0; i < 3; i++)
        EXPECT(vhsm_login(c, VHSM_USER_SO, "wrong-so", 8, NULL), -EBADE);
    CHECK(flags(c) & VHSM_TOKEN_SO_PIN_LOCKED, "SO PIN locked");
    EXPECT(vhsm_login(c, VHSM_USER_SO, SO, strlen(SO), NULL), -ENOLCK);
    /* only root recovers it */
    EXPECT(vhsm_token_reset_so_pin(c, 4646, SO2, strlen(SO2)), -EPERM);
    EXPECT(vhsm_token_reset_so_pin(c, 4646, "ab", 2), -ERANGE);
    CHECK(flags(c) & VHSM_TOKEN_SO_PIN_LOCKED, "still locked");
    vhsm_disconnect(c);
}

static void step_so_reset(const char *sock) {
    VhsmClient *c = conn(sock);
    VhsmTokenInfo ti;
    EXPECT(vhsm_token_info(c, &ti), 0);
    CHECK(!(ti.flags & (VHSM_TOKEN_SO_PIN_LOCKED | VHSM_TOKEN_SO_PIN_COUNT_LOW)) &&
              ti.so_failures == 0 && (ti.flags & VHSM_TOKEN_USER_PIN_INITIALIZED) &&
              ti.label_len == 8 && !memcmp(ti.label, "so-reset", 8),
          "after the reset: flags 0x%x so failures %u", ti.flags, ti.so_failures);
    EXPECT(vhsm_login(c, VHSM_USER_SO, SO, strlen(SO), NULL), -EBADE); /* the old one */
    EXPECT(vhsm_login(c, VHSM_USER_SO, SO2, strlen(SO2), NULL), 0);
    EXPECT(vhsm_logout(c), 0);
    /* the user PIN and the key are untouched */
    EXPECT(vhsm_login(c, VHSM_USER_USER, UPIN, strlen(UPIN), NULL), 0);
    EXPECT(sign(c, "kept"), 0);
    EXPECT(vhsm_logout(c), 0);
    vhsm_disconnect(c);
}
