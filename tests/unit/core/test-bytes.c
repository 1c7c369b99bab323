/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "core/bytes.h"
#include "core/macro.h"

/* Known byte images, independent of the host's byte order. */
static const uint8_t seq[8] = {0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef};

static void test_get_le(void **state) {
    assert_int_equal(bytes_get_le16(seq), 0x2301);
    assert_int_equal(bytes_get_le32(seq), 0x67452301u);
    assert_true(bytes_get_le64(seq) == UINT64_C(0xefcdab8967452301));
}

static void test_get_be(void **state) {
    assert_int_equal(bytes_get_be16(seq), 0x0123);
    assert_int_equal(bytes_get_be32(seq), 0x01234567u);
    assert_true(bytes_get_be64(seq) == UINT64_C(0x0123456789abcdef));
}

/* Each store writes exactly its width, in the documented order, and touches no other byte. */
static void test_put(void **state) {
    uint8_t b[10];

    memset(b, 0xee, sizeof b);
    bytes_put_le16(b + 1, 0x2301);
    assert_memory_equal(b + 1, seq, 2);
    assert_int_equal(b[0], 0xee);
    assert_int_equal(b[3], 0xee);

    memset(b, 0xee, sizeof b);
    bytes_put_be16(b + 1, 0x0123);
    assert_memory_equal(b + 1, seq, 2);
    assert_int_equal(b[0], 0xee);
    assert_int_equal(b[3], 0xee);

    memset(b, 0xee, sizeof b);
    bytes_put_le32(b + 1, 0x67452301u);
    assert_memory_equal(b + 1, seq, 4);
    assert_int_equal(b[0], 0xee);
    assert_int_equal(b[5], 0xee);

    memset(b, 0xee, sizeof b);
    bytes_put_be32(b + 1, 0x01234567u);
    assert_memory_equal(b + 1, seq, 4);
    assert_int_equal(b[0], 0xee);
    assert_int_equal(b[5], 0xee);

    memset(b, 0xee, sizeof b);
    bytes_put_le64(b + 1, UINT64_C(0xefcdab8967452301));
    assert_memory_equal(b + 1, seq, 8);
    assert_int_equal(b[0], 0xee);
    assert_int_equal(b[9], 0xee);

    memset(b, 0xee, sizeof b);
    bytes_put_be64(b + 1, UINT64_C(0x0123456789abcdef));
    assert_memory_equal(b + 1, seq, 8);
    assert_int_equal(b[0], 0xee);
    assert_int_equal(b[9], 0xee);
}

/* Round trips at every misalignment (ASan/UBSan builds would flag a cast-pointer access), with
 * values that have the top bit set in every byte so sign extension or a lost shift shows. */
static void test_roundtrip_unaligned(void **state) {
    uint8_t buf[16];
    const uint16_t v16 = 0x80ff;
    const uint32_t v32 = 0x80c0e0ffu;
    const uint64_t v64 = UINT64_C(0x8091a2b3c4d5e6f7);

    for (size_t off = 0; off < 8; off++) {
        bytes_put_le16(buf + off, v16);
        assert_int_equal(bytes_get_le16(buf + off), v16);
        assert_int_equal(bytes_get_be16(buf + off), (uint16_t)(v16 >> 8 | v16 << 8));
        bytes_put_be16(buf + off, v16);
        assert_int_equal(bytes_get_be16(buf + off), v16);

        bytes_put_le32(buf + off, v32);
        assert_int_equal(bytes_get_le32(buf + off), v32);
        assert_int_equal(bytes_get_be32(buf + off), 0xffe0c080u);
        bytes_put_be32(buf + off, v32);
        assert_int_equal(bytes_get_be32(buf + off), v32);

        bytes_put_le64(buf + off, v64);
        assert_true(bytes_get_le64(buf + off) == v64);
        assert_true(bytes_get_be64(buf + off) == UINT64_C(0xf7e6d5c4b3a29180));
        bytes_put_be64(buf + off, v64);
        assert_true(bytes_get_be64(buf + off) == v64);
    }
}

/* Byte-compatible with the shift-based encoders the keystore used before (on-disk format). */
static void test_be_matches_shifts(void **state) {
    const uint64_t v = UINT64_C(0xfedcba9876543210);
    uint8_t a[8], b[8];

    for (size_t i = 0; i < 8; i++)
        a[i] = (uint8_t)(v >> (56 - 8 * i));
    bytes_put_be64(b, v);
    assert_memory_equal(a, b, 8);
}

static void test_is_zero(void **state) {
    uint8_t b[64] = {0};

    assert_true(bytes_is_zero(b, 0));
    assert_true(bytes_is_zero(NULL, 0));
    assert_true(bytes_is_zero(b, sizeof b));
    /* A single set bit anywhere, including the first and last byte, is seen. */
    for (size_t i = 0; i < sizeof b; i++) {
        b[i] = 0x80;
        assert_false(bytes_is_zero(b, sizeof b));
        assert_true(bytes_is_zero(b, i));
        assert_true(bytes_is_zero(b + i + 1, sizeof b - i - 1));
        b[i] = 0x01;
        assert_false(bytes_is_zero(b + i, 1));
        b[i] = 0;
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_le),
        cmocka_unit_test(test_get_be),
        cmocka_unit_test(test_put),
        cmocka_unit_test(test_roundtrip_unaligned),
        cmocka_unit_test(test_be_matches_shifts),
        cmocka_unit_test(test_is_zero),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
