/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "core/alloc.h"
#include "core/encoding.h"
#include "core/macro.h"

static void test_hex_roundtrip(void **state) {
    const uint8_t in[] = {0x00, 0x01, 0xab, 0xff};
    char out[9];
    uint8_t back[4] = {0};
    hex_encode(in, sizeof in, out);
    assert_string_equal(out, "0001abff");
    assert_int_equal(hex_decode_exact("0001ABff", back, 4), 0);
    assert_memory_equal(in, back, 4);
}

static void test_hex_rejects(void **state) {
    uint8_t b[2] = {0x55, 0x55};
    assert_int_equal(hex_decode_exact("001", b, 2), -EBADMSG);
    assert_int_equal(hex_decode_exact("00zz", b, 2), -EBADMSG);
    /* nothing written on failure */
    assert_int_equal(b[0], 0x55);
    assert_int_equal(b[1], 0x55);
}

/* RFC 4648 section 10 vectors. */
static void test_base64_rfc4648(void **state) {
    static const char *plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *enc[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (size_t i = 0; i < ELEMENTSOF(plain); i++) {
        _cleanup_free_ char *e = NULL;
        _cleanup_free_ uint8_t *d = NULL;
        size_t dl = 0;
        assert_int_equal(base64_encode_alloc((const uint8_t *)plain[i], strlen(plain[i]), &e), 0);
        assert_string_equal(e, enc[i]);
        assert_int_equal(base64_decode_alloc(enc[i], strlen(enc[i]), &d, &dl), 0);
        assert_int_equal(dl, strlen(plain[i]));
        assert_memory_equal(d, plain[i], dl);
    }
}

static void test_base64_rejects(void **state) {
    uint8_t *d = NULL;
    size_t dl = 0;
    assert_int_equal(base64_decode_alloc("Zm9", 3, &d, &dl), -EBADMSG);
    assert_int_equal(base64_decode_alloc("Zm=v", 4, &d, &dl), -EBADMSG);
    assert_int_equal(base64_decode_alloc("Zm9v!A==", 8, &d, &dl), -EBADMSG);
    assert_null(d);
}

static void test_base64url(void **state) {
    const uint8_t in[] = {0xfb, 0xff, 0xfe};
    _cleanup_free_ char *e = NULL;
    _cleanup_free_ uint8_t *d = NULL;
    size_t dl;
    assert_int_equal(base64url_encode_alloc(in, 3, &e), 0);
    assert_string_equal(e, "-__-");
    assert_int_equal(base64url_decode_alloc("-__-", 4, &d, &dl), 0);
    assert_int_equal(dl, 3);
    assert_memory_equal(d, in, 3);
    free(TAKE_PTR(d));
    assert_int_equal(base64url_decode_alloc("AQ", 2, &d, &dl), 0);
    assert_int_equal(dl, 1);
    assert_int_equal(d[0], 1);
    free(TAKE_PTR(d));
    assert_int_equal(base64url_decode_alloc("+/==", 4, &d, &dl), -EBADMSG);
}

static void test_oom_loop(void **state) {
    /* Every allocation of the operation fails in turn; each failure must be clean. */
    for (long n = 0;; n++) {
        char *e = NULL;
        int r;
        nt_alloc_fail_after(n);
        r = base64url_encode_alloc((const uint8_t *)"abc", 3, &e);
        nt_alloc_fail_after(-1);
        if (r == 0) {
            assert_string_equal(e, "YWJj");
            free(e);
            break;
        }
        assert_int_equal(r, -ENOMEM);
        assert_null(e);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hex_roundtrip),  cmocka_unit_test(test_hex_rejects),
        cmocka_unit_test(test_base64_rfc4648), cmocka_unit_test(test_base64_rejects),
        cmocka_unit_test(test_base64url),      cmocka_unit_test(test_oom_loop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
