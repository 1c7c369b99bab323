/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of the vhsmd wire protocol codec (proto.c) and of the peer-identity parser
 * (peer.c): byte-exact encodings, every decoder refusal, the errno/status table, and the
 * /proc/PID/cgroup parser on hostile input (peer_identify itself: test-peer.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "vhsm/client/proto.h"
#include "vhsm/peer.h"

static void test_header_roundtrip(void **state) {
    VhsmHeader h = {.version = VHSM_PROTO_VERSION,
                    .kind = VHSM_KIND_REQUEST,
                    .code = VHSM_OP_SIGN,
                    .id = 0x01020304,
                    .body_len = 0x00000A0B};
    static const uint8_t want[16] = {'V', 'H', 'S', 'M', 1, 1, 0x00, 0x22,
                                     1,   2,   3,   4,   0, 0, 0x0A, 0x0B};
    uint8_t buf[16];
    VhsmHeader d;

    vhsm_header_encode(&h, buf);
    assert_memory_equal(buf, want, 16);
    assert_int_equal(vhsm_header_decode(buf, &d), 0);
    assert_int_equal(d.version, 1);
    assert_int_equal(d.kind, VHSM_KIND_REQUEST);
    assert_int_equal(d.code, VHSM_OP_SIGN);
    assert_int_equal(d.id, 0x01020304);
    assert_int_equal(d.body_len, 0xA0B);
}

static void test_header_refusals(void **state) {
    uint8_t buf[16];
    VhsmHeader h = {.version = 1, .kind = 1, .code = 1, .id = 77, .body_len = 0}, d = {0};

    vhsm_header_encode(&h, buf);
    buf[0] = 'X';
    assert_int_equal(vhsm_header_decode(buf, &d), -EBADMSG);
    vhsm_header_encode(&h, buf);
    buf[5] = 3; /* kind */
    assert_int_equal(vhsm_header_decode(buf, &d), -EBADMSG);
    vhsm_header_encode(&h, buf);
    buf[4] = 2; /* version */
    assert_int_equal(vhsm_header_decode(buf, &d), -EPROTONOSUPPORT);
    assert_int_equal(d.id, 77); /* filled so that the error reply echoes it */
    h.body_len = VHSM_MAX_BODY + 1;
    vhsm_header_encode(&h, buf);
    assert_int_equal(vhsm_header_decode(buf, &d), -EMSGSIZE);
    h.body_len = VHSM_MAX_BODY;
    vhsm_header_encode(&h, buf);
    assert_int_equal(vhsm_header_decode(buf, &d), 0);
}

static void test_build_and_parse(void **state) {
    VhsmBuf b = VHSM_BUF_INIT;
    VhsmHeader h;
    const uint8_t *v, *body;
    size_t n, off = 0;
    uint32_t u32;
    uint64_t u64;
    uint8_t u8;
    char s[16];
    uint8_t *p;
    VhsmTlv t;
    int count = 0;

    vhsm_buf_begin(&b, VHSM_KIND_RESPONSE, VHSM_STATUS_OK, 9);
    vhsm_buf_put_str(&b, VHSM_TAG_KEY_NAME, "k1");
    vhsm_buf_put_u32(&b, VHSM_TAG_KEY_VERSION, 0xDEADBEEF);
    vhsm_buf_put_u64(&b, VHSM_TAG_TIMESTAMP, 0x0102030405060708ull);
    vhsm_buf_put_u8(&b, VHSM_TAG_FLAGS, 7);
    p = vhsm_buf_put_reserve(&b, VHSM_TAG_OUTPUT, 100);
    assert_non_null(p);
    memcpy(p, "xyz", 3);
    vhsm_buf_commit(&b, 3);
    vhsm_buf_put(&b, VHSM_TAG_DATA, NULL, 0);
    assert_int_equal(vhsm_buf_end(&b), 0);

    /* 16 header + (6+2) + (6+4) + (6+8) + (6+1) + (6+3) + 6 */
    assert_int_equal(b.len, 16 + 8 + 10 + 14 + 7 + 9 + 6);
    assert_int_equal(vhsm_header_decode(b.data, &h), 0);
    assert_int_equal(h.body_len, b.len - 16);
    body = b.data + 16;
    assert_int_equal(vhsm_body_validate(body, h.body_len), 0);
    /* exact TLV bytes of the first field */
    assert_memory_equal(body, "\x00\x01\x00\x00\x00\x02k1", 8);

    assert_int_equal(vhsm_body_get_str(body, h.body_len, VHSM_TAG_KEY_NAME, 15, s, sizeof s), 0);
    assert_string_equal(s, "k1");
    assert_int_equal(vhsm_body_get_u32(body, h.body_len, VHSM_TAG_KEY_VERSION, &u32), 0);
    assert_int_equal(u32, 0xDEADBEEF);
    assert_int_equal(vhsm_body_get_u64(body, h.body_len, VHSM_TAG_TIMESTAMP, &u64), 0);
    assert_true(u64 == 0x0102030405060708ull);
    assert_int_equal(vhsm_body_get_u8(body, h.body_len, VHSM_TAG_FLAGS, &u8), 0);
    assert_int_equal(u8, 7);
    assert_int_equal(vhsm_body_get(body, h.body_len, VHSM_TAG_OUTPUT, &v, &n), 0);
    assert_int_equal(n, 3);
    assert_memory_equal(v, "xyz", 3);
    assert_int_equal(vhsm_body_get(body, h.body_len, VHSM_TAG_DATA, &v, &n), 0);
    assert_int_equal(n, 0);
    /* wrong sizes and absent tags */
    u32 = 1;
    assert_int_equal(vhsm_body_get_u32(body, h.body_len, VHSM_TAG_TIMESTAMP, &u32), -EBADMSG);
    assert_int_equal(u32, 1);
    assert_int_equal(vhsm_body_get_u64(body, h.body_len, VHSM_TAG_KEY_VERSION, &u64), -EBADMSG);
    assert_int_equal(vhsm_body_get(body, h.body_len, VHSM_TAG_JWE, &v, &n), -ENOENT);
    assert_int_equal(vhsm_body_get_str(body, h.body_len, VHSM_TAG_KEY_NAME, 1, s, sizeof s),
                     -ENAMETOOLONG);
    while (vhsm_tlv_next(body, h.body_len, &off, &t) > 0)
        count++;
    assert_int_equal(count, 6);
    vhsm_buf_done(&b);
    assert_null(b.data);
}

static void test_two_frames_and_abort(void **state) {
    VhsmBuf b = VHSM_BUF_INIT;
    VhsmHeader h;
    size_t first;

    vhsm_buf_begin(&b, VHSM_KIND_RESPONSE, 0, 1);
    vhsm_buf_put_str(&b, VHSM_TAG_JSON, "{}");
    assert_int_equal(vhsm_buf_end(&b), 0);
    first = b.len;
    vhsm_buf_begin(&b, VHSM_KIND_RESPONSE, 0, 2);
    vhsm_buf_put_str(&b, VHSM_TAG_OUTPUT, "secret plaintext");
    vhsm_buf_abort(&b);
    assert_int_equal(b.len, first);
    /* the aborted bytes were wiped */
    assert_null(memmem(b.data, b.cap, "secret plaintext", 16));
    vhsm_buf_begin(&b, VHSM_KIND_RESPONSE, 5, 3);
    assert_int_equal(vhsm_buf_end(&b), 0);
    assert_int_equal(b.len, first + 16);
    assert_int_equal(vhsm_header_decode(b.data + first, &h), 0);
    assert_int_equal(h.id, 3);
    assert_int_equal(h.code, 5);
    assert_int_equal(h.body_len, 0);
    vhsm_buf_done(&b);
}

static void test_oversized_body(void **state) {
    VhsmBuf b = VHSM_BUF_INIT;
    vhsm_buf_begin(&b, VHSM_KIND_REQUEST, VHSM_OP_ENCRYPT, 1);
    assert_null(vhsm_buf_put_reserve(&b, VHSM_TAG_DATA, VHSM_MAX_BODY + 1));
    assert_int_equal(vhsm_buf_end(&b), -EMSGSIZE);
    assert_int_equal(b.len, 0);
    vhsm_buf_begin(&b, VHSM_KIND_REQUEST, VHSM_OP_ENCRYPT, 1);
    assert_non_null(vhsm_buf_put_reserve(&b, VHSM_TAG_DATA, VHSM_MAX_BODY - 6));
    vhsm_buf_commit(&b, VHSM_MAX_BODY - 6);
    assert_int_equal(vhsm_buf_end(&b), 0); /* exactly the limit */
    vhsm_buf_reset(&b);
    vhsm_buf_begin(&b, VHSM_KIND_REQUEST, VHSM_OP_ENCRYPT, 1);
    assert_non_null(vhsm_buf_put_reserve(&b, VHSM_TAG_DATA, VHSM_MAX_BODY - 5));
    vhsm_buf_commit(&b, VHSM_MAX_BODY - 5);
    assert_int_equal(vhsm_buf_end(&b), -EMSGSIZE); /* one byte over */
    assert_int_equal(b.len, 0);
    vhsm_buf_done(&b);
}

static void test_body_refusals(void **state) {
    /* TLV value overruns the body */
    static const uint8_t overrun[] = {0, 1, 0, 0, 0, 5, 'a', 'b'};
    /* truncated TLV header */
    static const uint8_t trunc[] = {0, 1, 0, 0, 0};
    /* length near 2^32 */
    static const uint8_t huge[] = {0, 1, 0xFF, 0xFF, 0xFF, 0xFF, 'x'};
    static const uint8_t nul_in_str[] = {0, 1, 0, 0, 0, 3, 'a', 0, 'b'};
    uint8_t *many;
    const uint8_t *v;
    size_t n, off = 0;
    char s[8];
    VhsmTlv t;

    assert_int_equal(vhsm_body_validate(overrun, sizeof overrun), -EBADMSG);
    assert_int_equal(vhsm_body_validate(trunc, sizeof trunc), -EBADMSG);
    assert_int_equal(vhsm_body_validate(huge, sizeof huge), -EBADMSG);
    assert_int_equal(vhsm_body_get(overrun, sizeof overrun, 1, &v, &n), -EBADMSG);
    assert_int_equal(vhsm_tlv_next(huge, sizeof huge, &off, &t), -EBADMSG);
    assert_int_equal(off, 0);
    assert_int_equal(vhsm_body_validate(nul_in_str, sizeof nul_in_str), 0);
    assert_int_equal(vhsm_body_get_str(nul_in_str, sizeof nul_in_str, 1, 7, s, sizeof s), -EBADMSG);
    assert_int_equal(vhsm_body_validate(NULL, 0), 0);

    /* more TLVs than allowed */
    many = calloc(VHSM_MAX_TLVS + 1, VHSM_TLV_HEADER_SIZE);
    assert_non_null(many);
    assert_int_equal(vhsm_body_validate(many, VHSM_MAX_TLVS * VHSM_TLV_HEADER_SIZE), 0);
    assert_int_equal(vhsm_body_validate(many, (VHSM_MAX_TLVS + 1) * VHSM_TLV_HEADER_SIZE), -E2BIG);
    free(many);
}

static void test_status_table(void **state) {
    assert_int_equal(vhsm_status_from_errno(0), VHSM_STATUS_OK);
    assert_int_equal(vhsm_status_from_errno(-EACCES), VHSM_STATUS_PERMISSION_DENIED);
    assert_int_equal(vhsm_status_from_errno(-EPERM), VHSM_STATUS_PERMISSION_DENIED);
    assert_int_equal(vhsm_status_from_errno(-ENOKEY), VHSM_STATUS_NOT_FOUND);
    assert_int_equal(vhsm_status_from_errno(-EKEYEXPIRED), VHSM_STATUS_ATTESTATION_REQUIRED);
    assert_int_equal(vhsm_status_from_errno(-EKEYREJECTED), VHSM_STATUS_VERIFY_FAILED);
    assert_int_equal(vhsm_status_from_errno(-EXDEV), VHSM_STATUS_INTERNAL);
    assert_int_equal(vhsm_status_to_errno(VHSM_STATUS_OK), 0);
    assert_int_equal(vhsm_status_to_errno(VHSM_STATUS_NOT_FOUND), -ENOKEY);
    assert_int_equal(vhsm_status_to_errno(VHSM_STATUS_ATTESTATION_REQUIRED), -EKEYEXPIRED);
    assert_int_equal(vhsm_status_to_errno(999), -EIO);
    /* the statuses for services behind vhsmd (the agent channel), fixed on the wire */
    assert_int_equal(VHSM_STATUS_REFUSED, 19);
    assert_int_equal(VHSM_STATUS_SERVICE_UNAVAILABLE, 20);
    assert_int_equal(VHSM_STATUS_TIMEOUT, 21);
    assert_int_equal(vhsm_status_from_errno(-EREMOTEIO), VHSM_STATUS_REFUSED);
    assert_int_equal(vhsm_status_from_errno(-EHOSTUNREACH), VHSM_STATUS_SERVICE_UNAVAILABLE);
    assert_int_equal(vhsm_status_from_errno(-ETIMEDOUT), VHSM_STATUS_TIMEOUT);
    assert_string_equal(vhsm_status_to_string(VHSM_STATUS_REFUSED), "refused");
    assert_string_equal(vhsm_status_to_string(VHSM_STATUS_SERVICE_UNAVAILABLE),
                        "service-unavailable");
    assert_string_equal(vhsm_status_to_string(VHSM_STATUS_TIMEOUT), "timeout");
    /* a newer version imported already: "exists", as the same version */
    assert_int_equal(vhsm_status_from_errno(-ESTALE), VHSM_STATUS_EXISTS);
    assert_int_equal(vhsm_status_to_errno(VHSM_STATUS_EXISTS), -EEXIST);
    /* IMPORT_JWE is gone, IMPORT_RELEASE changes keys */
    assert_string_equal(vhsm_opcode_to_string(0x0031), "unknown");
    assert_string_equal(vhsm_opcode_to_string(VHSM_OP_IMPORT_RELEASE), "import-release");
    assert_true(vhsm_opcode_changes_keys(VHSM_OP_IMPORT_RELEASE));
    /* every status maps back to an errno that maps to the same status, and has a name */
    for (uint16_t st = 1; st < _VHSM_STATUS_MAX; st++) {
        assert_int_equal(vhsm_status_from_errno(vhsm_status_to_errno(st)), st);
        assert_string_not_equal(vhsm_status_to_string(st), "unknown");
    }
    assert_string_equal(vhsm_status_to_string(999), "unknown");
}

static void test_peer_cgroup(void **state) {
    char *cg = NULL;
    assert_int_equal(peer_parse_cgroup("0::/system.slice/app.service\n", &cg), 0);
    assert_string_equal(cg, "/system.slice/app.service");
    free(cg);
    cg = NULL;
    /* hybrid hierarchy: the v2 line is picked */
    assert_int_equal(peer_parse_cgroup("12:cpu:/x\n1:name=systemd:/y\n0::/user.slice/u\n", &cg), 0);
    assert_string_equal(cg, "/user.slice/u");
    free(cg);
    cg = NULL;
    assert_int_equal(peer_parse_cgroup("0::/\n", &cg), 0);
    assert_string_equal(cg, "/");
    free(cg);
    cg = NULL;
    assert_int_equal(peer_parse_cgroup("12:cpu:/x\n", &cg), -ENOENT);
    assert_int_equal(peer_parse_cgroup("0::relative\n", &cg), -EBADMSG);
    assert_int_equal(peer_parse_cgroup("0::\n", &cg), -EBADMSG);
    assert_int_equal(peer_parse_cgroup("", &cg), -ENOENT);
    assert_null(cg);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_roundtrip), cmocka_unit_test(test_header_refusals),
        cmocka_unit_test(test_build_and_parse),  cmocka_unit_test(test_two_frames_and_abort),
        cmocka_unit_test(test_oversized_body),   cmocka_unit_test(test_body_refusals),
        cmocka_unit_test(test_status_table),     cmocka_unit_test(test_peer_cgroup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
