/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nt_jwe_decrypt_secret on JWEs made by libjose (ECDH-ES+A256KW, A256GCM, P-256 and P-384, as
 * kmsd's releases are): the plaintext comes back in a Secret of the ciphertext's size; another
 * recipient key, a tampered tag, a tampered ciphertext and a ciphertext of the wrong length are
 * refused with -EKEYREJECTED and no Secret.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jose/jose.h>

#include "core/jwe.h"
#include "core/macro.h"

static json_t *gen_key(const char *crv) {
    json_t *jwk = json_pack("{s:s,s:s}", "kty", "EC", "crv", crv);
    assert_non_null(jwk);
    assert_true(jose_jwk_gen(NULL, jwk));
    assert_int_equal(json_object_set_new(jwk, "alg", json_string("ECDH-ES+A256KW")), 0);
    return jwk;
}

/* A JWE of pt for jwk's public half, and its decoded ciphertext. */
static json_t *encrypt(const json_t *jwk, const uint8_t *pt, size_t n, uint8_t **ret_ct,
                       size_t *ret_len) {
    json_auto_t *pub = json_deep_copy(jwk);
    json_t *jwe = json_pack("{s:{s:s}}", "protected", "enc", "A256GCM");
    assert_non_null(pub);
    assert_true(jose_jwk_pub(NULL, pub));
    assert_non_null(jwe);
    assert_true(jose_jwe_enc(NULL, jwe, NULL, pub, pt, n));
    const json_t *c = json_object_get(jwe, "ciphertext");
    size_t len = jose_b64_dec(c, NULL, 0);
    assert_int_not_equal(len, SIZE_MAX);
    *ret_ct = malloc(len + 1);
    assert_int_equal(jose_b64_dec(c, *ret_ct, len), len);
    *ret_len = len;
    return jwe;
}

static void test_roundtrip_and_refusals(void **state) {
    static const char *const curves[] = {"P-256", "P-384"};
    uint8_t pt[32];
    for (size_t i = 0; i < sizeof pt; i++)
        pt[i] = (uint8_t)(i * 7 + 1);
    for (size_t c = 0; c < ELEMENTSOF(curves); c++) {
        json_auto_t *jwk = gen_key(curves[c]), *other = gen_key(curves[c]), *jwe = NULL,
                    *bad = NULL;
        _cleanup_free_ uint8_t *ct = NULL;
        size_t ct_len = 0;
        Secret *s = NULL;
        char *tag;

        jwe = encrypt(jwk, pt, sizeof pt, &ct, &ct_len);
        assert_int_equal(ct_len, sizeof pt);
        assert_int_equal(nt_jwe_decrypt_secret(jwe, jwk, ct, ct_len, &s), 0);
        assert_int_equal(secret_size(s), sizeof pt);
        assert_memory_equal(secret_const_data(s), pt, sizeof pt);
        s = secret_free(s);
        /* the caller's key is not changed */
        assert_non_null(json_object_get(jwk, "d"));

        assert_int_equal(nt_jwe_decrypt_secret(jwe, other, ct, ct_len, &s), -EKEYREJECTED);
        assert_null(s);
        ct[3] ^= 1;
        assert_int_equal(nt_jwe_decrypt_secret(jwe, jwk, ct, ct_len, &s), -EKEYREJECTED);
        assert_null(s);
        ct[3] ^= 1;
        assert_int_equal(nt_jwe_decrypt_secret(jwe, jwk, ct, ct_len - 1, &s), -EKEYREJECTED);
        assert_null(s);
        bad = json_deep_copy(jwe);
        tag = strdup(json_string_value(json_object_get(bad, "tag")));
        tag[2] = tag[2] == 'A' ? 'B' : 'A';
        json_object_set_new(bad, "tag", json_string(tag));
        free(tag);
        assert_int_equal(nt_jwe_decrypt_secret(bad, jwk, ct, ct_len, &s), -EKEYREJECTED);
        assert_null(s);
        assert_int_equal(nt_jwe_decrypt_secret(jwe, jwk, ct, ct_len, NULL), -EINVAL);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_and_refusals),
    };
    secret_set_allow_unlocked(true);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
