/* SPDX-License-Identifier: Apache-2.0 */
/*
 * RFC 8785 JCS: the RFC's examples (3.2.2 normalisation, 3.2.3 sorting with a non-BMP key, the
 * Appendix B number table), escaping, integers at and beyond 2^53, invalid UTF-8.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "core/jcs.h"
#include "core/macro.h"

static void expect_json(const char *in, const char *want) {
    json_error_t e;
    json_auto_t *v = json_loads(in, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    _cleanup_free_ char *out = NULL;
    size_t len = 0;
    if (!v)
        fail_msg("parse: %s: %s", in, e.text);
    assert_int_equal(nt_jcs_dump(v, &out, &len), 0);
    assert_int_equal(len, strlen(out));
    if (!streq(out, want))
        fail_msg("got  %s\nwant %s", out, want);
}

static void test_rfc_example(void **state) {
    expect_json("{\n  \"numbers\": [333333333.33333329, 1E30, 4.50, 2e-3, "
                "0.000000000000000000000000001],\n"
                "  \"string\": \"\\u20ac$\\u000F\\u000aA'\\u0042\\u0022\\u005c\\\\\\\"\\/\",\n"
                "  \"literals\": [null, true, false]\n}",
                "{\"literals\":[null,true,false],\"numbers\":[333333333.3333333,1e+30,4.5,0.002,"
                "1e-27],\"string\":\"\xe2\x82\xac$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}");
}

/* 3.2.3: UTF-16 order puts U+1F600 (D83D DE00) before U+FB33, UTF-8 byte order would not. */
static void test_rfc_sorting(void **state) {
    expect_json("{\"\\u20ac\": \"Euro Sign\", \"\\r\": \"Carriage Return\", \"\\ufb33\": \"Hebrew "
                "Letter Dalet With Dagesh\", \"1\": \"One\", \"\\ud83d\\ude00\": \"Emoji: "
                "Grinning Face\", \"\\u0080\": \"Control\", \"\\u00f6\": \"Latin Small Letter O "
                "With Diaeresis\"}",
                "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\xc2\x80\":\"Control\","
                "\"\xc3\xb6\":\"Latin Small Letter O With Diaeresis\",\"\xe2\x82\xac\":\"Euro "
                "Sign\",\"\xf0\x9f\x98\x80\":\"Emoji: Grinning Face\",\"\xef\xac\xb3\":\"Hebrew "
                "Letter Dalet With Dagesh\"}");
    /* Nested objects are sorted too; arrays keep their order. */
    expect_json("{\"b\":[3,{\"z\":1,\"a\":2}],\"a\":{}}", "{\"a\":{},\"b\":[3,{\"a\":2,\"z\":1}]}");
    /* U+FFFF sorts after U+10000 in UTF-16 (but before it in UTF-8). */
    expect_json("{\"\\uffff\":1,\"\\ud800\\udc00\":2}",
                "{\"\xf0\x90\x80\x80\":2,\"\xef\xbf\xbf\":1}");
}

static void expect_double(uint64_t bits, const char *want) {
    double d;
    memcpy(&d, &bits, sizeof d);
    json_auto_t *v = json_real(d);
    _cleanup_free_ char *out = NULL;
    assert_non_null(v);
    assert_int_equal(nt_jcs_dump(v, &out, NULL), 0);
    if (!streq(out, want))
        fail_msg("%016llx: got %s want %s", (unsigned long long)bits, out, want);
}

/* RFC 8785 Appendix B (NaN and Infinity are not representable in jansson: json_real refuses). */
static void test_rfc_numbers(void **state) {
    expect_double(0x0000000000000000ull, "0");
    expect_double(0x8000000000000000ull, "0");
    expect_double(0x0000000000000001ull, "5e-324");
    expect_double(0x8000000000000001ull, "-5e-324");
    expect_double(0x7fefffffffffffffull, "1.7976931348623157e+308");
    expect_double(0xffefffffffffffffull, "-1.7976931348623157e+308");
    expect_double(0x4340000000000000ull, "9007199254740992");
    expect_double(0xc340000000000000ull, "-9007199254740992");
    expect_double(0x4430000000000000ull, "295147905179352830000");
    expect_double(0x44b52d02c7e14af5ull, "9.999999999999997e+22");
    expect_double(0x44b52d02c7e14af6ull, "1e+23");
    expect_double(0x44b52d02c7e14af7ull, "1.0000000000000001e+23");
    expect_double(0x444b1ae4d6e2ef4eull, "999999999999999700000");
    expect_double(0x444b1ae4d6e2ef4full, "999999999999999900000");
    expect_double(0x444b1ae4d6e2ef50ull, "1e+21");
    expect_double(0x3eb0c6f7a0b5ed8cull, "9.999999999999997e-7");
    expect_double(0x3eb0c6f7a0b5ed8dull, "0.000001");
    expect_double(0x41b3de4355555553ull, "333333333.3333332");
    expect_double(0x41b3de4355555554ull, "333333333.33333325");
    expect_double(0x41b3de4355555555ull, "333333333.3333333");
    expect_double(0x41b3de4355555556ull, "333333333.3333334");
    expect_double(0x41b3de4355555557ull, "333333333.33333343");
    expect_double(0xbecbf647612f3696ull, "-0.0000033333333333333333");
    expect_double(0x43143ff3c1cb0959ull, "1424953923781206.2");
    assert_null(json_real(NAN));
    assert_null(json_real(INFINITY));
}

/* Integers are exact up to 2^53; beyond, an I-JSON number would be rounded, so -EDOM. */
static void test_integers(void **state) {
    char *out = NULL;
    expect_json("[0,-1,42,9007199254740992,-9007199254740992]",
                "[0,-1,42,9007199254740992,-9007199254740992]");
    json_auto_t *big = json_integer(((json_int_t)1 << 53) + 1);
    json_auto_t *neg = json_integer(INT64_MIN);
    assert_int_equal(nt_jcs_dump(big, &out, NULL), -EDOM);
    assert_int_equal(nt_jcs_dump(neg, &out, NULL), -EDOM);
    assert_null(out);
}

static void test_escapes(void **state) {
    expect_json("\"\\u0000\\u0001\\b\\t\\n\\u000b\\f\\r\\u001f \\u007f/\\u2028\"",
                "\"\\u0000\\u0001\\b\\t\\n\\u000b\\f\\r\\u001f \x7f/\xe2\x80\xa8\"");
    expect_json("[1.5,-0.0,1e-7,123e18,0.1]", "[1.5,0,1e-7,123000000000000000000,0.1]");
}

static void test_invalid(void **state) {
    char *out = NULL;
    json_auto_t *bad = json_stringn_nocheck("\xc0\x80", 2);
    json_auto_t *badkey = json_object();
    json_auto_t *deep = json_array();
    json_t *cur = deep;
    assert_int_equal(nt_jcs_dump(bad, &out, NULL), -EBADMSG);
    assert_int_equal(json_object_set_new_nocheck(badkey, "\xed\xa0\x80", json_null()), 0);
    assert_int_equal(json_object_set_new(badkey, "a", json_null()), 0);
    assert_int_equal(nt_jcs_dump(badkey, &out, NULL), -EBADMSG);
    for (int i = 0; i < NT_JCS_MAX_DEPTH + 2; i++) {
        json_t *n = json_array();
        assert_int_equal(json_array_append_new(cur, n), 0);
        cur = n;
    }
    assert_int_equal(nt_jcs_dump(deep, &out, NULL), -ELOOP);
#if JANSSON_VERSION_HEX >= 0x020e00
    /* A key with a NUL byte is written whole, escaped, and sorted by its full length. */
    {
        json_auto_t *o = json_object();
        _cleanup_free_ char *s = NULL;
        assert_int_equal(json_object_setn_new_nocheck(o, "a\0b", 3, json_integer(1)), 0);
        assert_int_equal(json_object_set_new(o, "a", json_integer(2)), 0);
        assert_int_equal(nt_jcs_dump(o, &s, NULL), 0);
        assert_string_equal(s, "{\"a\":2,\"a\\u0000b\":1}");
    }
#endif
    assert_int_equal(nt_jcs_dump(NULL, &out, NULL), -EINVAL);
    assert_null(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc_example), cmocka_unit_test(test_rfc_sorting),
        cmocka_unit_test(test_rfc_numbers), cmocka_unit_test(test_integers),
        cmocka_unit_test(test_escapes),     cmocka_unit_test(test_invalid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
