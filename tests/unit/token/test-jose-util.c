/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The compact-serialisation helpers that EAR tokens and signed releases share (token/jose-util.h):
 * the three-part split and its refusals, base64url decoding with its size cap, JSON-object parts
 * (duplicates refused), kid lookup, and the error helpers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jose/b64.h>
#include <jose/jwk.h>
#include <jose/jws.h>

#include "token/jose-util.h"

static int split(const char *s, NtJoseJwsParts *p) {
    return nt_jose_split_jws(s, strlen(s), p);
}

static void test_split(void **state) {
    NtJoseJwsParts p = {};
    const char *s = "eyJh.cGF5-_.c2ln";

    assert_int_equal(split(s, &p), 0);
    assert_ptr_equal(p.header, s);
    assert_int_equal(p.header_len, 4);
    assert_ptr_equal(p.payload, s + 5);
    assert_int_equal(p.payload_len, 6);
    assert_ptr_equal(p.signature, s + 12);
    assert_int_equal(p.signature_len, 4);

    /* Not three parts. */
    NtJoseJwsParts untouched = {.header = "x"};
    assert_int_equal(split("abc", &untouched), -EBADMSG);
    assert_string_equal(untouched.header, "x"); /* written only on success */
    assert_int_equal(split("a.b", &p), -EBADMSG);
    assert_int_equal(split("a.b.c.d", &p), -EBADMSG);
    assert_int_equal(split("a.b.c.d.e", &p), -EBADMSG); /* a JWE is not a JWS */
    /* Three parts, but one empty or with a character outside base64url. */
    assert_int_equal(split("..", &p), -EILSEQ);
    assert_int_equal(split("a..c", &p), -EILSEQ);
    assert_int_equal(split("a.b.", &p), -EILSEQ);
    assert_int_equal(split(".b.c", &p), -EILSEQ);
    assert_int_equal(split("a=.b.c", &p), -EILSEQ);
    assert_int_equal(split("a.b+.c", &p), -EILSEQ);
    assert_int_equal(split("a.b.c/", &p), -EILSEQ);
    assert_int_equal(split("a.b. c", &p), -EILSEQ);
    /* Only len counts: a split within a longer string. */
    assert_int_equal(nt_jose_split_jws("a.b.c.d", 5, &p), 0);
    assert_int_equal(p.signature_len, 1);

    json_t *o = nt_jose_jws_object(&(NtJoseJwsParts){
        .header = "hh.pp.ss",
        .header_len = 2,
        .payload = "pp.ss",
        .payload_len = 2,
        .signature = "ss",
        .signature_len = 2,
    });
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "protected")), "hh");
    assert_string_equal(json_string_value(json_object_get(o, "payload")), "pp");
    assert_string_equal(json_string_value(json_object_get(o, "signature")), "ss");
    assert_int_equal(json_object_size(o), 3);
    json_decref(o);
}

static void test_b64url_chars(void **state) {
    assert_true(nt_jose_b64url_chars("AZaz09-_", 8));
    assert_true(nt_jose_b64url_chars("", 0));
    assert_false(nt_jose_b64url_chars("ab=", 3));
    assert_false(nt_jose_b64url_chars("a+b", 3));
    assert_false(nt_jose_b64url_chars("a/b", 3));
    assert_false(nt_jose_b64url_chars("a\0b", 3));
    assert_true(nt_jose_b64url_chars("ab=", 2));
}

static void test_decode(void **state) {
    char *buf = (char *)"sentinel";
    size_t len = 99;

    /* "hello" */
    assert_int_equal(nt_jose_b64_decode("aGVsbG8", 7, 5, &buf, &len), 0);
    assert_int_equal(len, 5);
    assert_string_equal(buf, "hello"); /* NUL-terminated */
    free(buf);
    buf = (char *)"sentinel";
    /* One byte over the cap. */
    assert_int_equal(nt_jose_b64_decode("aGVsbG8", 7, 4, &buf, &len), -EBADMSG);
    assert_string_equal(buf, "sentinel");
    assert_int_equal(nt_jose_b64_decode("a", 1, 100, &buf, &len), -EBADMSG);

    /* {"a":1} and friends */
    json_t *o = nt_jose_decode_object("eyJhIjoxfQ", 10, 100);
    assert_non_null(o);
    assert_int_equal(json_integer_value(json_object_get(o, "a")), 1);
    json_decref(o);
    assert_null(nt_jose_decode_object("eyJhIjoxfQ", 10, 6));           /* 7 bytes, cap 6 */
    assert_null(nt_jose_decode_object("WzFd", 4, 100));                /* [1] */
    assert_null(nt_jose_decode_object("eyJhIjoxLCJhIjoyfQ", 18, 100)); /* {"a":1,"a":2} */
    assert_null(nt_jose_decode_object("eyJh", 4, 100));                /* {"a */
    assert_null(nt_jose_decode_object("eyJhIjoxfQ==", 12, 100));       /* padding */
}

static void test_find_kid(void **state) {
    json_t *jwks = json_pack("{s:[{s:s,s:i},{s:i},{s:s,s:i}]}", "keys", "kid", "one", "n", 1, "kid",
                             5, "kid", "two", "n", 2);
    assert_non_null(jwks);
    assert_int_equal(json_integer_value(json_object_get(nt_jose_find_kid(jwks, "two"), "n")), 2);
    assert_int_equal(json_integer_value(json_object_get(nt_jose_find_kid(jwks, "one"), "n")), 1);
    assert_null(nt_jose_find_kid(jwks, "three"));
    assert_null(nt_jose_find_kid(jwks, "tw"));
    json_t *none = json_object();
    assert_null(nt_jose_find_kid(none, "one"));
    json_decref(none);
    json_decref(jwks);
}

static void test_errors(void **state) {
    char err[256];
    char *e = NULL;
    char big[400];

    assert_int_equal(nt_jose_fail(err, -EKEYREJECTED, "key '%s'", "k"), -EKEYREJECTED);
    assert_string_equal(err, "key 'k'");
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    assert_int_equal(nt_jose_fail(err, -EBADMSG, "%s", big), -EBADMSG);
    assert_int_equal(strlen(err), 255); /* truncated to the 256-byte buffer */

    nt_jose_set_error(&e, "first %d", 1);
    assert_string_equal(e, "first 1");
    nt_jose_set_error(&e, "second"); /* replaces (and frees) the first */
    assert_string_equal(e, "second");
    free(e);
    nt_jose_set_error(NULL, "ignored");
}

/* A compact JWS over payload "hi", signed by a fresh key for alg; its public JWK in *ret_pub. */
static char *sign_compact(const char *alg, json_t **ret_pub) {
    json_auto_t *jwk = json_pack("{s:s}", "alg", alg), *jws = NULL;
    char *compact = NULL;
    assert_non_null(jwk);
    assert_true(jose_jwk_gen(NULL, jwk));
    jws = json_pack("{s:o}", "payload", jose_b64_enc("hi", 2));
    assert_non_null(jws);
    assert_true(jose_jws_sig(NULL, jws, NULL, jwk));
    assert_true(asprintf(&compact, "%s.%s.%s", json_string_value(json_object_get(jws, "protected")),
                         json_string_value(json_object_get(jws, "payload")),
                         json_string_value(json_object_get(jws, "signature"))) > 0);
    *ret_pub = json_deep_copy(jwk);
    assert_true(jose_jwk_pub(NULL, *ret_pub));
    return compact;
}

static void test_verify(void **state) {
    json_auto_t *pub = NULL, *pub384 = NULL;
    _cleanup_free_ char *c256 = sign_compact("ES256", &pub);
    _cleanup_free_ char *c384 = sign_compact("ES384", &pub384);
    NtJoseJwsParts p;

    assert_null(json_object_get(pub, "d"));
    assert_true(nt_jose_key_fits_alg(pub, "ES256"));
    assert_false(nt_jose_key_fits_alg(pub, "ES384"));
    assert_true(nt_jose_key_fits_alg(pub384, "ES384"));
    assert_false(nt_jose_key_fits_alg(pub384, "ES256"));
    assert_false(nt_jose_key_fits_alg(pub, "HS256"));
    assert_false(nt_jose_key_fits_alg(pub, "none"));

    assert_int_equal(split(c256, &p), 0);
    assert_int_equal(nt_jose_jws_verify(&p, pub), 0);
    assert_int_equal(nt_jose_jws_verify(&p, pub384), -EKEYREJECTED);
    /* Another payload under the same signature. */
    NtJoseJwsParts q = p;
    q.payload = "aGo";
    q.payload_len = 3;
    assert_int_equal(nt_jose_jws_verify(&q, pub), -EKEYREJECTED);
    /* A flipped signature character. */
    c256[strlen(c256) - 5] = c256[strlen(c256) - 5] == 'A' ? 'B' : 'A';
    assert_int_equal(split(c256, &p), 0);
    assert_int_equal(nt_jose_jws_verify(&p, pub), -EKEYREJECTED);
    assert_int_equal(split(c384, &p), 0);
    assert_int_equal(nt_jose_jws_verify(&p, pub384), 0);

    /* An "alg" member on the key must agree. */
    json_t *k = json_deep_copy(pub);
    json_object_set_new(k, "alg", json_string("ES384"));
    assert_false(nt_jose_key_fits_alg(k, "ES256"));
    json_object_set_new(k, "alg", json_string("ES256"));
    assert_true(nt_jose_key_fits_alg(k, "ES256"));
    json_object_set_new(k, "kty", json_string("RSA"));
    assert_false(nt_jose_key_fits_alg(k, "ES256"));
    json_decref(k);
}

static void test_wipe_free(void **state) {
    json_t *jwk = json_pack("{s:s,s:s}", "kty", "oct", "k", "c2VjcmV0");
    assert_non_null(jwk);
    /* Someone else still holds it: not wiped, just one reference less. */
    json_incref(jwk);
    nt_jose_jwk_wipe_free(jwk);
    assert_int_equal(jwk->refcount, 1);
    assert_string_equal(json_string_value(json_object_get(jwk, "k")), "c2VjcmV0");
    { _cleanup_(nt_jose_jwk_wipe_freep) json_t *last = jwk; /* the last one: wiped and freed */ }
    nt_jose_jwk_wipe_free(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split),     cmocka_unit_test(test_b64url_chars),
        cmocka_unit_test(test_decode),    cmocka_unit_test(test_find_kid),
        cmocka_unit_test(test_errors),    cmocka_unit_test(test_verify),
        cmocka_unit_test(test_wipe_free),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
