/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The audit chain on its own (audit.c): event checks, text sanitising, the row hash against a
 * hash computed here from the canonical JSON written out by hand (RFC 8785 member order and
 * number format), and the verifier on chains built in memory: edited, deleted, reordered,
 * duplicated, re-hashed and truncated rows, and malformed input.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/encoding.h"
#include "core/macro.h"
#include "kmsd/audit.h"

static void test_event_check(void **state) {
    KmsAuditEvent ok = {.action = "policy-test", .actor = "admin:bearer", .result = "refused"};
    KmsAuditEvent e;
    assert_int_equal(kms_audit_event_check(&ok), 0);
    assert_int_equal(kms_audit_event_check(NULL), -EINVAL);
    e = ok, e.action = NULL;
    assert_int_equal(kms_audit_event_check(&e), -EINVAL);
    e = ok, e.action = "Create";
    assert_int_equal(kms_audit_event_check(&e), -EINVAL);
    e = ok, e.action = "-x";
    assert_int_equal(kms_audit_event_check(&e), -EINVAL);
    e = ok, e.action = "abcdefghijklmnopqrstuvwxyzabcdefg"; /* 33 */
    assert_int_equal(kms_audit_event_check(&e), -EINVAL);
    e = ok, e.action = "abcdefghijklmnopqrstuvwxyzabcdef"; /* 32 */
    assert_int_equal(kms_audit_event_check(&e), 0);
    e = ok, e.actor = "";
    assert_int_equal(kms_audit_event_check(&e), -EINVAL);
    e = ok, e.actor = NULL;
    assert_int_equal(kms_audit_event_check(&e), -EINVAL);
    e = ok, e.result = "maybe";
    assert_int_equal(kms_audit_event_check(&e), -EINVAL);
    e = ok, e.result = NULL;
    assert_int_equal(kms_audit_event_check(&e), -EINVAL);
}

static void check_sanitize(const char *in, size_t max, const char *want) {
    _cleanup_free_ char *out = NULL, *again = NULL;
    assert_int_equal(kms_audit_text_sanitize(in, max, &out), 0);
    assert_string_equal(out, want);
    assert_int_equal(kms_audit_text_sanitize(out, max, &again), 0);
    assert_string_equal(again, out); /* idempotent */
}

static void test_sanitize(void **state) {
    char *out = (char *)0x1;
    check_sanitize("plain text", 100, "plain text");
    check_sanitize("a\nb\tc\x7f", 100, "a?b?c?");
    check_sanitize("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\x91", 100,
                   "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\x91");
    check_sanitize("bad \xff\xfe end", 100, "bad ?? end");
    check_sanitize("overlong \xc0\xaf", 100, "overlong ??");
    check_sanitize("surrogate \xed\xa0\x80", 100, "surrogate ???");
    check_sanitize("cut \xe2\x82", 100, "cut ??");
    check_sanitize("abcdef", 4, "abcd");
    /* Never cut inside a character. */
    check_sanitize("ab\xc3\xa9", 3, "ab");
    check_sanitize("\xf0\x9f\x94\x91x", 3, "");
    assert_int_equal(kms_audit_text_sanitize(NULL, 10, &out), 0);
    assert_null(out);
}

static const KmsAuditEvent release_ev = {
    .action = "release",
    .actor = "token:jti-1",
    .secret_id = "db-key",
    .version = 3,
    .token_jti = "jti-1",
    .measurement = "abcd",
    .chip_id = NULL,
    .result = "refused",
    .rule = "measurement_in",
    .detail = "line1\nline2 \xc3\xa9",
};

/* The canonical JSON of that event's row at seq 7, time 1700000000 (members sorted, no spaces,
 * null for absent text, the newline sanitised to '?', UTF-8 kept raw), written out by hand. */
#define PREV7 "1111111111111111111111111111111111111111111111111111111111111111"
static const char row7_jcs[] =
    "{\"action\":\"release\",\"actor\":\"token:jti-1\",\"chip_id\":null,"
    "\"detail\":\"line1?line2 \xc3\xa9\",\"measurement\":\"abcd\",\"prev_hash\":\"" PREV7 "\","
    "\"result\":\"refused\",\"rule\":\"measurement_in\",\"secret_id\":\"db-key\",\"seq\":7,"
    "\"time\":1700000000,\"token_jti\":\"jti-1\",\"version\":3}";

static void test_row_hash_known_answer(void **state) {
    json_auto_t *row = NULL;
    uint8_t prev[32], md[32];
    unsigned md_len = 0;
    char want[65], got[65];
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();

    assert_int_equal(kms_audit_row_build(7, 1700000000, &release_ev, PREV7, &row), 0);
    assert_int_equal(hex_decode_exact(PREV7, prev, 32), 0);
    assert_non_null(ctx);
    assert_int_equal(EVP_DigestInit_ex(ctx, EVP_sha256(), NULL), 1);
    assert_int_equal(EVP_DigestUpdate(ctx, prev, 32), 1);
    assert_int_equal(EVP_DigestUpdate(ctx, row7_jcs, strlen(row7_jcs)), 1);
    assert_int_equal(EVP_DigestFinal_ex(ctx, md, &md_len), 1);
    EVP_MD_CTX_free(ctx);
    hex_encode(md, 32, want);
    assert_int_equal(kms_audit_row_hash(row, got), 0);
    assert_string_equal(got, want);
    /* A "hash" member is not part of what is hashed. */
    assert_int_equal(json_object_set_new(row, "hash", json_string(want)), 0);
    assert_int_equal(kms_audit_row_hash(row, got), 0);
    assert_string_equal(got, want);
    /* Any change is. */
    assert_int_equal(json_object_set_new(row, "time", json_integer(1700000001)), 0);
    assert_int_equal(kms_audit_row_hash(row, got), 0);
    assert_string_not_equal(got, want);

    /* Build refuses bad arguments. */
    json_t *r2 = NULL;
    assert_int_equal(kms_audit_row_build(0, 1, &release_ev, PREV7, &r2), -EINVAL);
    assert_int_equal(kms_audit_row_build(1, -1, &release_ev, PREV7, &r2), -EINVAL);
    assert_int_equal(kms_audit_row_build(1, 1, &release_ev, "11", &r2), -EINVAL);
    assert_int_equal(kms_audit_row_build(1, 1, &release_ev, KMS_AUDIT_GENESIS_HEX "0", &r2),
                     -EINVAL);
    assert_null(r2);
    /* Hash refuses rows it cannot canonicalise. */
    json_auto_t *big = NULL;
    assert_int_equal(kms_audit_row_build(1, 1, &release_ev, PREV7, &big), 0);
    assert_int_equal(json_object_set_new(big, "seq", json_integer((json_int_t)1 << 60)), 0);
    assert_int_equal(kms_audit_row_hash(big, got), -EBADMSG);
    assert_int_equal(json_object_set_new(big, "prev_hash", json_string("xyz")), 0);
    assert_int_equal(kms_audit_row_hash(big, got), -EBADMSG);
}

/* A valid chain of n rows; the head hash in head. */
static json_t *chain_make(size_t n, char head[static 65]) {
    json_t *rows = json_array();
    char prev[65] = KMS_AUDIT_GENESIS_HEX, h[65];
    assert_non_null(rows);
    for (size_t i = 0; i < n; i++) {
        char detail[32];
        KmsAuditEvent e = release_ev;
        json_t *row = NULL;
        snprintf(detail, sizeof detail, "event %zu", i + 1);
        e.detail = detail;
        e.version = i % 2 ? 0 : (uint32_t)i + 1;
        assert_int_equal(
            kms_audit_row_build((int64_t)i + 1, 1700000000 + (int64_t)i, &e, prev, &row), 0);
        assert_int_equal(kms_audit_row_hash(row, h), 0);
        assert_int_equal(json_object_set_new(row, "hash", json_string(h)), 0);
        assert_int_equal(json_array_append_new(rows, row), 0);
        memcpy(prev, h, 65);
    }
    memcpy(head, prev, 65);
    return rows;
}

static void expect_broken(json_t *rows, const char *head, int want_r, const char *want_msg) {
    char err[256];
    int r = kms_audit_chain_verify(rows, head, err);
    if (r != want_r || !strstr(err, want_msg))
        fail_msg("verify: got %d \"%s\", want %d containing \"%s\"", r, err, want_r, want_msg);
}

static void test_chain_ok(void **state) {
    char head[65], err[256];
    json_auto_t *rows = chain_make(6, head), *empty = json_array();
    assert_int_equal(kms_audit_chain_verify(rows, head, err), 0);
    assert_string_equal(err, "");
    assert_int_equal(kms_audit_chain_verify(rows, NULL, err), 0);
    assert_int_equal(kms_audit_chain_verify(empty, KMS_AUDIT_GENESIS_HEX, err), 0);
    assert_int_equal(kms_audit_chain_verify(empty, NULL, err), 0);
    /* The empty chain against a real head: everything was deleted. */
    expect_broken(empty, head, -EKEYREJECTED, "truncated");
    expect_broken(rows, "xyz", -EINVAL, "head");
}

static void test_chain_edited(void **state) {
    char head[65], h[65];
    json_auto_t *rows = chain_make(6, head);
    json_t *r3 = json_array_get(rows, 2);

    json_object_set_new(r3, "detail", json_string("event 3, edited"));
    expect_broken(rows, head, -EKEYREJECTED, "at seq 3: hash mismatch (row edited)");
    /* The editor re-hashes the edited row: the next row no longer links to it. */
    assert_int_equal(kms_audit_row_hash(r3, h), 0);
    json_object_set_new(r3, "hash", json_string(h));
    expect_broken(rows, head, -EKEYREJECTED, "at seq 4: prev_hash");
    /* The editor re-hashes everything after it too: only the head tells. */
    for (size_t i = 3; i < 6; i++) {
        json_t *r = json_array_get(rows, i);
        json_object_set_new(r, "prev_hash", json_string(h));
        assert_int_equal(kms_audit_row_hash(r, h), 0);
        json_object_set_new(r, "hash", json_string(h));
    }
    char err[256];
    assert_int_equal(kms_audit_chain_verify(rows, NULL, err), 0);
    expect_broken(rows, head, -EKEYREJECTED, "ends at seq 6");
    /* Edits of other members: result, time, seq, the hash itself. */
    json_decref(rows);
    rows = chain_make(6, head);
    json_object_set_new(json_array_get(rows, 0), "result", json_string("ok"));
    expect_broken(rows, head, -EKEYREJECTED, "at seq 1: hash mismatch");
    json_decref(rows);
    rows = chain_make(6, head);
    json_object_set_new(
        json_array_get(rows, 5), "hash",
        json_string("00000000000000000000000000000000000000000000000000000000000000ff"));
    expect_broken(rows, head, -EKEYREJECTED, "at seq 6: hash mismatch");
    json_decref(rows);
    rows = chain_make(6, head);
    json_object_set_new(json_array_get(rows, 1), "version", json_integer(5));
    expect_broken(rows, NULL, -EKEYREJECTED, "at seq 2: hash mismatch");
}

static void test_chain_deleted_reordered(void **state) {
    char head[65];
    json_auto_t *rows = chain_make(6, head);

    json_array_remove(rows, 2);
    expect_broken(rows, head, -EKEYREJECTED, "row seq 4 follows seq 2");
    json_decref(rows);
    rows = chain_make(6, head);
    json_array_remove(rows, 0);
    expect_broken(rows, head, -EKEYREJECTED, "row seq 2 follows seq 0");
    /* Swapped rows. */
    json_decref(rows);
    rows = chain_make(6, head);
    json_t *a = json_incref(json_array_get(rows, 2)), *b = json_incref(json_array_get(rows, 3));
    json_array_set_new(rows, 2, b);
    json_array_set_new(rows, 3, a);
    expect_broken(rows, head, -EKEYREJECTED, "rows deleted or reordered");
    /* A duplicated row. */
    json_decref(rows);
    rows = chain_make(6, head);
    json_array_insert(rows, 3, json_array_get(rows, 2));
    expect_broken(rows, head, -EKEYREJECTED, "row seq 3 where seq 4 was expected");
    /* Renumbered rows after a deletion: the prev link breaks. */
    json_decref(rows);
    rows = chain_make(6, head);
    json_array_remove(rows, 2);
    for (size_t i = 2; i < json_array_size(rows); i++)
        json_object_set_new(json_array_get(rows, i), "seq", json_integer((json_int_t)i + 1));
    expect_broken(rows, head, -EKEYREJECTED, "at seq 3: prev_hash");
    /* Truncated tail: only the head shows it. */
    json_decref(rows);
    rows = chain_make(6, head);
    json_array_remove(rows, 5);
    json_array_remove(rows, 4);
    char err[256];
    assert_int_equal(kms_audit_chain_verify(rows, NULL, err), 0);
    expect_broken(rows, head, -EKEYREJECTED, "ends at seq 4");
    expect_broken(rows, head, -EKEYREJECTED, "truncated");
}

static void test_chain_malformed(void **state) {
    char head[65];
    json_auto_t *rows = NULL, *obj = json_object(), *notobj = json_pack("[i]", 1);

    expect_broken(obj, NULL, -EBADMSG, "not a JSON array");
    expect_broken(notobj, NULL, -EBADMSG, "#0 is not a JSON object");
    static const struct {
        const char *member;
        json_t *(*value)(void);
        const char *msg;
    } cases[] = {
        {"seq", json_null, "\"seq\" has a wrong type"},
        {"time", json_true, "\"time\" has a wrong type"},
        {"action", json_null, "\"action\" has a wrong type"},
        {"secret_id", json_false, "\"secret_id\" has a wrong type"},
        {"hash", json_null, "\"hash\" has a wrong type"},
        {"prev_hash", json_object, "\"prev_hash\" has a wrong type"},
        {"extra", json_null, "unknown member \"extra\""},
    };
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        rows = chain_make(3, head);
        json_object_set_new(json_array_get(rows, 1), cases[i].member, cases[i].value());
        expect_broken(rows, head, -EBADMSG, cases[i].msg);
        json_decref(TAKE_PTR(rows));
    }
    struct {
        const char *member;
        json_t *value;
    } values[] = {
        {"seq", json_integer(0)},
        {"seq", json_integer((json_int_t)1 << 53)},
        {"version", json_integer(0)},
        {"version", json_integer((json_int_t)UINT32_MAX + 1)},
        {"time", json_integer(-1)},
        {"time", json_real(1.5)},
        {"hash", json_string("ABCDEF0000000000000000000000000000000000000000000000000000000000")},
        {"prev_hash", json_string("00")},
    };
    for (size_t i = 0; i < ELEMENTSOF(values); i++) {
        rows = chain_make(3, head);
        json_object_set_new(json_array_get(rows, 2), values[i].member, values[i].value);
        expect_broken(rows, head, -EBADMSG, "wrong type or value");
        json_decref(TAKE_PTR(rows));
    }
    rows = chain_make(3, head);
    json_object_del(json_array_get(rows, 0), "rule");
    expect_broken(rows, head, -EBADMSG, "\"rule\" missing");
}

/* A chain computed by another implementation (tests/vectors/kmsd-audit-chain.json, Python). */
static void test_vector_chain(void **state) {
    const char *dir = getenv("NT_VECTORS");
    char path[1024], err[256];
    json_auto_t *doc = NULL;
    json_t *rows, *r2;
    const char *head;

    if (!dir)
        skip();
    snprintf(path, sizeof path, "%s/kmsd-audit-chain.json", dir);
    doc = json_load_file(path, 0, NULL);
    assert_non_null(doc);
    rows = json_object_get(doc, "rows");
    head = json_string_value(json_object_get(doc, "head"));
    assert_int_equal(json_array_size(rows), 4);
    assert_int_equal(kms_audit_chain_verify(rows, head, err), 0);
    /* Each row re-hashes to the stored hash. */
    for (size_t i = 0; i < 4; i++) {
        char h[65];
        json_t *row = json_array_get(rows, i);
        assert_int_equal(kms_audit_row_hash(row, h), 0);
        assert_string_equal(h, json_string_value(json_object_get(row, "hash")));
    }
    r2 = json_array_get(rows, 1);
    json_object_set_new(r2, "rule", json_null());
    expect_broken(rows, head, -EKEYREJECTED, "at seq 2: hash mismatch");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_event_check),
        cmocka_unit_test(test_sanitize),
        cmocka_unit_test(test_row_hash_known_answer),
        cmocka_unit_test(test_chain_ok),
        cmocka_unit_test(test_chain_edited),
        cmocka_unit_test(test_chain_deleted_reordered),
        cmocka_unit_test(test_chain_malformed),
        cmocka_unit_test(test_vector_chain),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
