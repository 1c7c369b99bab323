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
    assert_int_equal(flags_of(v, "ec"), VAULT_OBJ_DEFAULT | VAULT_OBJ_LOCAL |
                                            VAULT_OBJ_ALWAYS_SENSITIVE |
                                            VAULT_OBJ_NEVER_EXTRACTABLE);
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
    assert_int_equal(flags_of(v, "x"), VAULT_OBJ_ENCRYPT | VAULT_OBJ_EXTRACTABLE | VAULT_OBJ_LOCAL);
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_usage_enforced),
        cmocka_unit_test(test_set_rules),
        cmocka_unit_test(test_keystore_round_trip),
    };
    secret_set_allow_unlocked(true);
    if (vault_init(0) < 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
