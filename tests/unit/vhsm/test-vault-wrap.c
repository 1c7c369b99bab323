/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Key wrapping and ECDH derivation into objects in the vault itself (vault-wrap.h), without the
 * PKCS#11 module's own early checks: every refusal is the vault's, and a refusal creates
 * nothing. The wrapped bytes are checked against OpenSSL's RFC 3394/5649 with a known KEK.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <fcntl.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>

#include "core/secret.h"
#include "vhsm/keystore.h"
#include "vhsm/vault-wrap.h"
#include "vhsm/vault.h"
#include "vault-test-util.h"

static Vault *new_vault(void) {
    Vault *v = NULL;
    assert_int_equal(vault_new(&v), 0);
    return v;
}

static uint32_t flags_of(Vault *v, const char *name) {
    json_t *j = NULL;
    assert_int_equal(vault_key_describe(v, &alice, name, &j), 0);
    uint32_t f = (uint32_t)json_integer_value(json_object_get(j, "flags"));
    json_decref(j);
    return f;
}

static void gen(Vault *v, const char *name, VaultKeyType t, uint32_t flags) {
    assert_int_equal(
        vault_key_generate(v, &alice, name, &(VaultKeySpec){.type = t, .obj_flags = flags}), 0);
}

#define KEK_FLAGS (VAULT_OBJ_WRAP | VAULT_OBJ_UNWRAP | VAULT_OBJ_SENSITIVE)
#define EXTRACTABLE (VAULT_OBJ_ENCRYPT | VAULT_OBJ_DECRYPT | VAULT_OBJ_EXTRACTABLE)

static void test_wrap_rules(void **state) {
    Vault *v = new_vault();
    uint8_t *out = NULL;
    size_t n = 0;
    (void)state;
    gen(v, "kek", VAULT_KEY_AES256, KEK_FLAGS);
    gen(v, "nowrap", VAULT_KEY_AES256, VAULT_OBJ_UNWRAP);
    gen(v, "t", VAULT_KEY_AES128, EXTRACTABLE);
    gen(v, "fixed", VAULT_KEY_AES256, VAULT_OBJ_ENCRYPT);
    gen(v, "wwt", VAULT_KEY_AES256, EXTRACTABLE | VAULT_OBJ_WRAP_WITH_TRUSTED);
    gen(v, "ec", VAULT_KEY_EC_P256, VAULT_OBJ_SIGN | VAULT_OBJ_EXTRACTABLE | VAULT_OBJ_DERIVE);

    assert_int_equal(vault_key_wrap(v, &alice, "kek", false, "t", true, &out, &n), 0);
    assert_null(out);
    assert_int_equal(n, 24);
    assert_int_equal(vault_key_wrap(v, &alice, "kek", false, "fixed", false, &out, &n), -ENOEXEC);
    assert_int_equal(vault_key_wrap(v, &alice, "kek", false, "wwt", false, &out, &n), -EBADSLT);
    assert_int_equal(vault_key_wrap(v, &alice, "nowrap", false, "t", false, &out, &n), -EPERM);
    assert_int_equal(vault_key_wrap(v, &alice, "ec", false, "t", false, &out, &n), -EPERM);
    assert_int_equal(vault_key_wrap(v, &bob, "1000/kek", false, "1000/t", false, &out, &n), -EPERM);
    assert_int_equal(vault_key_wrap(v, &alice, "kek", false, "none", false, &out, &n), -ENOKEY);
    /* the private key as PKCS#8 with RFC 5649 (RFC 3394 only if its length is a multiple of 8) */
    assert_int_equal(vault_key_wrap(v, &alice, "kek", true, "ec", false, &out, &n), 0);
    assert_true(n > 100 && n % 8 == 0);
    free(out);
    out = NULL;
    /* CKA_TRUSTED is the SO's: alice (no SO login) can neither create nor set it */
    assert_int_equal(
        vault_key_generate(
            v, &alice, "tr",
            &(VaultKeySpec){.type = VAULT_KEY_AES256, .obj_flags = KEK_FLAGS | VAULT_OBJ_TRUSTED}),
        -EPERM);
    assert_int_equal(vault_key_set_object(v, &alice, "kek", VAULT_OBJ_TRUSTED, 0, NULL, 0), -EPERM);
    assert_false(flags_of(v, "kek") & VAULT_OBJ_TRUSTED);
    vault_free(v);
}

/* RFC 3394/5649 output equals OpenSSL's for a known KEK; unwrap refuses corrupted blobs and
 * types that do not match, creating nothing; the unwrapped key is marked imported. */
static void test_unwrap_rules(void **state) {
    Vault *v = new_vault();
    uint8_t kekv[24], key[32], blob[48], plain[48], *out = NULL;
    size_t n = 0;
    VaultKeyType got;
    int l = 0, f = 0;
    (void)state;
    for (size_t i = 0; i < sizeof(kekv); i++)
        kekv[i] = (uint8_t)(i * 11);
    for (size_t i = 0; i < sizeof(key); i++)
        key[i] = (uint8_t)(200 - i);
    assert_int_equal(
        vault_key_import_plain(v, &alice, "kek",
                               &(VaultKeySpec){.type = VAULT_KEY_AES192, .obj_flags = KEK_FLAGS},
                               kekv, sizeof(kekv)),
        0);
    /* OpenSSL wraps key under the KEK (RFC 5649); the vault unwraps it */
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    EVP_CIPHER_CTX_set_flags(c, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
    assert_int_equal(EVP_EncryptInit_ex(c, EVP_aes_192_wrap_pad(), NULL, kekv, NULL), 1);
    assert_int_equal(EVP_EncryptUpdate(c, blob, &l, key, sizeof(key)), 1);
    assert_int_equal(EVP_EncryptFinal_ex(c, blob + l, &f), 1);
    EVP_CIPHER_CTX_free(c);
    assert_int_equal(l + f, 40);
    size_t before = vault_key_count(v);
    const VaultKeySpec spec = {.obj_flags = EXTRACTABLE};
    uint8_t bad[40];
    memcpy(bad, blob, 40);
    bad[3] ^= 0x80;
    assert_int_equal(
        vault_key_unwrap(v, &alice, "kek", true, bad, 40, "aes", 0, "u", &spec, false, &got),
        -EKEYREJECTED);
    assert_int_equal(
        vault_key_unwrap(v, &alice, "kek", false, blob, 40, "aes", 0, "u", &spec, false, &got),
        -EKEYREJECTED); /* RFC 3394 on an RFC 5649 blob */
    assert_int_equal(
        vault_key_unwrap(v, &alice, "kek", true, blob, 39, "aes", 0, "u", &spec, false, &got),
        -EKEYREJECTED);
    assert_int_equal(
        vault_key_unwrap(v, &alice, "kek", true, blob, 40, "aes", 16, "u", &spec, false, &got),
        -EMEDIUMTYPE);
    assert_int_equal(
        vault_key_unwrap(v, &alice, "kek", true, blob, 40, "ec", 0, "u", &spec, false, &got),
        -EKEYREJECTED); /* 32 bytes are no PKCS#8 */
    assert_int_equal(
        vault_key_unwrap(v, &alice, "kek", true, blob, 40, "aes128", 0, "u", &spec, false, &got),
        -EMEDIUMTYPE);
    /* --no-plaintext-import: an imported KEK may not bring keys in */
    assert_int_equal(
        vault_key_unwrap(v, &alice, "kek", true, blob, 40, "aes", 0, "u", &spec, true, &got),
        -EPERM);
    assert_int_equal(vault_key_count(v), before);
    assert_int_equal(
        vault_key_unwrap(v, &alice, "kek", true, blob, 40, "aes", 32, "u", &spec, false, &got), 0);
    assert_int_equal(got, VAULT_KEY_AES256);
    assert_int_equal(flags_of(v, "u") & (VAULT_OBJ_LOCAL | VAULT_OBJ_ALWAYS_SENSITIVE |
                                         VAULT_OBJ_NEVER_EXTRACTABLE),
                     0);
    /* the vault wraps it back to OpenSSL's bytes */
    assert_int_equal(vault_key_wrap(v, &alice, "kek", true, "u", false, &out, &n), 0);
    assert_int_equal(n, 40);
    assert_memory_equal(out, blob, 40);
    free(out);
    /* and RFC 3394 of the same key unwraps with OpenSSL to it */
    assert_int_equal(vault_key_wrap(v, &alice, "kek", false, "u", false, &out, &n), 0);
    c = EVP_CIPHER_CTX_new();
    EVP_CIPHER_CTX_set_flags(c, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
    assert_int_equal(EVP_DecryptInit_ex(c, EVP_aes_192_wrap(), NULL, kekv, NULL), 1);
    assert_int_equal(EVP_DecryptUpdate(c, plain, &l, out, (int)n), 1);
    assert_int_equal(EVP_DecryptFinal_ex(c, plain + l, &f), 1);
    EVP_CIPHER_CTX_free(c);
    assert_int_equal(l + f, 32);
    assert_memory_equal(plain, key, 32);
    free(out);
    /* a local, never extractable KEK unwraps under --no-plaintext-import */
    gen(v, "local", VAULT_KEY_AES256, KEK_FLAGS);
    assert_int_equal(vault_key_wrap(v, &alice, "local", true, "u", false, &out, &n), 0);
    assert_int_equal(
        vault_key_unwrap(v, &alice, "local", true, out, n, "aes256", 0, "u2", &spec, true, &got),
        0);
    free(out);
    vault_free(v);
}

static void test_derive_rules(void **state) {
    Vault *v = new_vault();
    VaultKeyType got;
    uint8_t pt[65], bad[65];
    size_t pn = 0;
    json_t *j = NULL;
    (void)state;
    gen(v, "a", VAULT_KEY_EC_P256, VAULT_OBJ_DERIVE | VAULT_OBJ_SENSITIVE);
    gen(v, "nod", VAULT_KEY_EC_P256, VAULT_OBJ_SIGN);
    EVP_PKEY *peer = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    assert_int_equal(
        EVP_PKEY_get_octet_string_param(peer, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof(pt), &pn), 1);
    memcpy(bad, pt, sizeof(bad));
    bad[40] ^= 1;
    const VaultKeySpec spec = {.obj_flags = VAULT_OBJ_ENCRYPT | VAULT_OBJ_SENSITIVE};
    size_t before = vault_key_count(v);
    assert_int_equal(vault_key_derive_ecdh1(v, &alice, "a", bad, pn, "null", NULL, 0, "aes", 32,
                                            "d", &spec, &got),
                     -EBADMSG);
    assert_int_equal(vault_key_derive_ecdh1(v, &alice, "nod", pt, pn, "null", NULL, 0, "aes", 32,
                                            "d", &spec, &got),
                     -EPERM);
    assert_int_equal(vault_key_derive_ecdh1(v, &alice, "a", pt, pn, "null", (uint8_t *)"x", 1,
                                            "aes", 32, "d", &spec, &got),
                     -EINVAL);
    assert_int_equal(
        vault_key_derive_ecdh1(v, &alice, "a", pt, pn, "md5", NULL, 0, "aes", 32, "d", &spec, &got),
        -EINVAL);
    assert_int_equal(vault_key_derive_ecdh1(v, &alice, "a", pt, pn, "null", NULL, 0, "aes", 20, "d",
                                            &spec, &got),
                     -EMEDIUMTYPE);
    assert_int_equal(vault_key_derive_ecdh1(v, &alice, "a", pt, 33, "null", NULL, 0, "aes", 32, "d",
                                            &spec, &got),
                     -EBADMSG);
    assert_int_equal(vault_key_count(v), before);
    assert_int_equal(vault_key_derive_ecdh1(v, &alice, "a", pt, pn, "sha256", (uint8_t *)"x", 1,
                                            "aes", 16, "d", &spec, &got),
                     0);
    assert_int_equal(got, VAULT_KEY_AES128);
    /* derived: not local; always sensitive and never extractable, as the base key */
    assert_int_equal(flags_of(v, "d") &
                         (VAULT_OBJ_READONLY & ~(VAULT_OBJ_HAD_CIPHER | VAULT_OBJ_HAD_WRAPPER)),
                     VAULT_OBJ_ALWAYS_SENSITIVE | VAULT_OBJ_NEVER_EXTRACTABLE);
    assert_int_equal(vault_key_describe(v, &alice, "d", &j), 0);
    assert_string_equal(json_string_value(json_object_get(j, "origin")), "derived");
    json_decref(j);
    EVP_PKEY_free(peer);
    vault_free(v);
}

/* The vault writes PKCS#8 itself (not with OpenSSL's encoder): OpenSSL unwraps the blob with
 * the known KEK and parses the PKCS#8 into the same key pair (public keys compared), for every
 * asymmetric type. */
static void test_pkcs8_against_openssl(void **state) {
    Vault *v = new_vault();
    uint8_t kekv[32];
    static const VaultKeyType types[] = {VAULT_KEY_EC_P256, VAULT_KEY_EC_P384, VAULT_KEY_ED25519,
                                         VAULT_KEY_RSA2048};
    (void)state;
    for (size_t i = 0; i < sizeof(kekv); i++)
        kekv[i] = (uint8_t)(i ^ 0x5a);
    assert_int_equal(
        vault_key_import_plain(v, &alice, "kek",
                               &(VaultKeySpec){.type = VAULT_KEY_AES256, .obj_flags = KEK_FLAGS},
                               kekv, sizeof(kekv)),
        0);
    for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
        char name[16];
        uint8_t *blob = NULL, *plain = NULL;
        size_t n = 0;
        char *pem = NULL;
        int l = 0, f = 0;
        snprintf(name, sizeof name, "k%zu", t);
        gen(v, name, types[t], VAULT_OBJ_SIGN | VAULT_OBJ_EXTRACTABLE);
        assert_int_equal(vault_key_wrap(v, &alice, "kek", true, name, false, &blob, &n), 0);
        plain = malloc(n);
        EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
        EVP_CIPHER_CTX_set_flags(c, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
        assert_int_equal(EVP_DecryptInit_ex(c, EVP_aes_256_wrap_pad(), NULL, kekv, NULL), 1);
        assert_int_equal(EVP_DecryptUpdate(c, plain, &l, blob, (int)n), 1);
        assert_int_equal(EVP_DecryptFinal_ex(c, plain + l, &f), 1);
        EVP_CIPHER_CTX_free(c);
        const uint8_t *q = plain;
        PKCS8_PRIV_KEY_INFO *p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &q, l + f);
        assert_non_null(p8);
        assert_ptr_equal(q, plain + l + f); /* exactly one DER object */
        EVP_PKEY *pk = EVP_PKCS82PKEY(p8);
        assert_non_null(pk);
        assert_int_equal(vault_key_export_public(v, &alice, name, 0, VAULT_PUB_PEM, &pem), 0);
        EVP_PKEY *pub = pem_to_pkey(pem);
        assert_non_null(pub);
        assert_int_equal(EVP_PKEY_eq(pk, pub), 1);
        EVP_PKEY_free(pub);
        EVP_PKEY_free(pk);
        PKCS8_PRIV_KEY_INFO_free(p8);
        free(pem);
        free(plain);
        free(blob);
    }
    vault_free(v);
}

/* Generic secrets (1..64 bytes) and AES-128/192 keys survive the keystore: the restored vault
 * wraps them to the same bytes. */
static void test_keystore_round_trip(void **state) {
    Vault *v = new_vault(), *w = new_vault();
    static const uint8_t seven[7] = {'F', 'o', 'r', 'P', 'a', 's', 'i'};
    const VaultKeySpec gs = {.type = VAULT_KEY_GENERIC_SECRET, .obj_flags = EXTRACTABLE};
    const char *const names[] = {"g", "a128", "a192"};
    Secret *content = NULL;
    (void)state;
    gen(v, "kek", VAULT_KEY_AES256, KEK_FLAGS);
    assert_int_equal(vault_key_import_plain(v, &alice, "g", &gs, seven, sizeof(seven)), 0);
    assert_int_equal(vault_key_import_plain(v, &alice, "g0", &gs, seven, 0), -EINVAL);
    uint8_t big[65] = {0};
    assert_int_equal(vault_key_import_plain(v, &alice, "g65", &gs, big, sizeof(big)), -EBADMSG);
    assert_int_equal(vault_key_generate(v, &alice, "g2", &gs), -EOPNOTSUPP);
    gen(v, "a128", VAULT_KEY_AES128, EXTRACTABLE);
    gen(v, "a192", VAULT_KEY_AES192, EXTRACTABLE);
    json_t *d = NULL;
    assert_int_equal(vault_key_describe(v, &alice, "g", &d), 0);
    assert_int_equal(json_integer_value(json_object_get(d, "bits")), 56);
    json_decref(d);
    assert_int_equal(keystore_serialize(v, &content), 0);
    assert_int_equal(keystore_deserialize(w, secret_const_data(content), secret_size(content)), 0);
    for (size_t i = 0; i < 3; i++) {
        uint8_t *a = NULL, *b = NULL;
        size_t an = 0, bn = 0;
        assert_int_equal(vault_key_wrap(v, &alice, "kek", true, names[i], false, &a, &an), 0);
        assert_int_equal(vault_key_wrap(w, &alice, "kek", true, names[i], false, &b, &bn), 0);
        assert_int_equal(an, bn);
        assert_memory_equal(a, b, an);
        free(a);
        free(b);
    }
    secret_free(content);
    vault_free(w);
    vault_free(v);
}

/* The PKCS#11 wrap/decrypt attack (found in review, stop 21): a key that has ever been a data
 * cipher never wraps (AES-CBC decryption with a zero IV would undo RFC 3394 and reveal the
 * wrapped key), and under --no-plaintext-import never unwraps (AES-CBC encryption would forge
 * a wrapped blob of any value). The history survives clearing the flag, copies and the
 * keystore. */
static void test_cipher_history(void **state) {
    Vault *v = new_vault(), *w = new_vault();
    uint8_t *out = NULL;
    size_t n = 0;
    VaultKeyType got;
    Secret *content = NULL;
    (void)state;
    const uint32_t mod = KEK_FLAGS | VAULT_OBJ_MODIFIABLE | VAULT_OBJ_COPYABLE;
    gen(v, "t", VAULT_KEY_AES128, EXTRACTABLE);
    /* a wrap-only KEK wraps; once DECRYPT is added (even if removed again) it never does */
    gen(v, "kek", VAULT_KEY_AES256, mod);
    assert_false(flags_of(v, "kek") & VAULT_OBJ_HAD_CIPHER);
    assert_true(flags_of(v, "kek") & VAULT_OBJ_HAD_WRAPPER);
    assert_int_equal(vault_key_wrap(v, &alice, "kek", false, "t", true, &out, &n), 0);
    assert_int_equal(vault_key_set_object(v, &alice, "kek", VAULT_OBJ_DECRYPT, 0, NULL, 0), 0);
    assert_int_equal(vault_key_wrap(v, &alice, "kek", false, "t", false, &out, &n), -EPERM);
    assert_int_equal(vault_key_set_object(v, &alice, "kek", 0, VAULT_OBJ_DECRYPT, NULL, 0), 0);
    assert_true(flags_of(v, "kek") & VAULT_OBJ_HAD_CIPHER);
    assert_int_equal(vault_key_wrap(v, &alice, "kek", false, "t", false, &out, &n), -EPERM);
    /* a copy inherits the history */
    assert_int_equal(vault_object_copy(v, &alice, "kek", "kek2", 0, 0, NULL, 0), 0);
    assert_true(flags_of(v, "kek2") & VAULT_OBJ_HAD_CIPHER);
    assert_int_equal(vault_key_wrap(v, &alice, "kek2", false, "t", false, &out, &n), -EPERM);
    /* a key born with both roles (the default of keys made without flags) never wraps */
    gen(v, "both", VAULT_KEY_AES256, 0);
    assert_int_equal(vault_key_wrap(v, &alice, "both", false, "t", false, &out, &n), -EPERM);
    /* unwrap: an UNWRAP key that once had ENCRYPT is refused under --no-plaintext-import only */
    gen(v, "ukek", VAULT_KEY_AES256, mod);
    assert_int_equal(vault_key_wrap(v, &alice, "ukek", false, "t", false, &out, &n), 0);
    assert_int_equal(n, 24);
    const VaultKeySpec spec = {.obj_flags = EXTRACTABLE};
    assert_int_equal(
        vault_key_unwrap(v, &alice, "ukek", false, out, n, "aes", 0, "u1", &spec, true, &got), 0);
    assert_int_equal(vault_key_set_object(v, &alice, "ukek", VAULT_OBJ_ENCRYPT, 0, NULL, 0), 0);
    assert_int_equal(vault_key_set_object(v, &alice, "ukek", 0, VAULT_OBJ_ENCRYPT, NULL, 0), 0);
    size_t before = vault_key_count(v);
    assert_int_equal(
        vault_key_unwrap(v, &alice, "ukek", false, out, n, "aes", 0, "u2", &spec, true, &got),
        -EPERM);
    assert_int_equal(vault_key_count(v), before);
    assert_int_equal(
        vault_key_unwrap(v, &alice, "ukek", false, out, n, "aes", 0, "u3", &spec, false, &got), 0);
    free(out);
    out = NULL;
    /* the history is kept by the keystore */
    assert_int_equal(keystore_serialize(v, &content), 0);
    assert_int_equal(keystore_deserialize(w, secret_const_data(content), secret_size(content)), 0);
    assert_true(flags_of(w, "kek") & VAULT_OBJ_HAD_CIPHER);
    assert_false(flags_of(w, "kek") & VAULT_OBJ_DECRYPT);
    assert_int_equal(vault_key_wrap(w, &alice, "kek", false, "t", false, &out, &n), -EPERM);
    secret_free(content);
    vault_free(w);
    vault_free(v);
}

/* Counts occurrences of a 32-byte pattern (given XOR 0x5a, so that the pattern itself is not
 * in memory) in every readable mapping of this process (as test-transfer.c does). */
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
            size_t want = hi - a < sizeof buf ? hi - a : sizeof buf;
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

/* An EC P-256 key wrapped (the vault writes its PKCS#8) and unwrapped into a second key, both
 * deleted: no copy of the private scalar may remain in memory, big-endian or in BIGNUM limb
 * order. This is why the vault does not use OpenSSL's PKCS#8 encoder and decoders here. */
static void test_no_residue(void **state) {
    Vault *v = new_vault();
    uint8_t be[32], le[32], *blob = NULL;
    size_t n = 0;
    VaultKeyType got;
    (void)state;
    gen(v, "kek", VAULT_KEY_AES256, KEK_FLAGS);
    {
        /* PKCS#8 built by hand around a random scalar, in a Secret (see test-transfer.c) */
        static const uint8_t prefix[] = {0x30, 0x41, 0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07,
                                         0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
                                         0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x04,
                                         0x27, 0x30, 0x25, 0x02, 0x01, 0x01, 0x04, 0x20};
        Secret *der = NULL;
        assert_int_equal(secret_new(sizeof prefix + 32, &der), 0);
        memcpy(secret_data(der), prefix, sizeof prefix);
        uint8_t *d = secret_data(der) + sizeof prefix;
        assert_int_equal(RAND_bytes(d, 32), 1);
        d[0] = (uint8_t)((d[0] & 0x7f) | 0x10);
        for (size_t i = 0; i < 32; i++) {
            be[i] = d[i] ^ 0x5a;
            le[i] = d[31 - i] ^ 0x5a;
        }
        assert_int_equal(vault_key_import_plain(
                             v, &alice, "ec",
                             &(VaultKeySpec){.type = VAULT_KEY_EC_P256,
                                             .obj_flags = VAULT_OBJ_SIGN | VAULT_OBJ_EXTRACTABLE},
                             secret_data(der), secret_size(der)),
                         0);
        secret_free(der);
    }
    for (int i = 0; i < 3; i++) {
        free(blob);
        blob = NULL;
        assert_int_equal(vault_key_wrap(v, &alice, "kek", true, "ec", false, &blob, &n), 0);
    }
    assert_int_equal(vault_key_unwrap(v, &alice, "kek", true, blob, n, "ec", 0, "ec2",
                                      &(VaultKeySpec){.obj_flags = VAULT_OBJ_SIGN}, false, &got),
                     0);
    assert_int_equal(got, VAULT_KEY_EC_P256);
    free(blob);
    assert_int_equal(vault_key_delete(v, &alice, "ec"), 0);
    assert_int_equal(vault_key_delete(v, &alice, "ec2"), 0);
    assert_int_equal(count_in_memory(be), 0);
    assert_int_equal(count_in_memory(le), 0);
    vault_free(v);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wrap_rules),     cmocka_unit_test(test_unwrap_rules),
        cmocka_unit_test(test_derive_rules),   cmocka_unit_test(test_keystore_round_trip),
        cmocka_unit_test(test_cipher_history), cmocka_unit_test(test_pkcs8_against_openssl),
        cmocka_unit_test(test_no_residue),
    };
    secret_set_allow_unlocked(true);
    if (vault_init(0) < 0)
        return 1;
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    OPENSSL_cleanup(); /* see test-vault-object.c: LeakSanitizer under ASan */
    return r;
}
