/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "attestd/challenge.h"
#include "core/encoding.h"
#include "core/macro.h"
#include "core/secret.h"

static const uint8_t secret_a[32] = "0123456789abcdef0123456789abcdef";
static const uint8_t secret_b[32] = "fedcba9876543210fedcba9876543210";

static void test_roundtrip_once(void **state) {
    _cleanup_(nt_challenger_freep) NtChallenger *c = NULL;
    _cleanup_free_ char *n = NULL;
    time_t exp = 0, got = 0;

    assert_int_equal(nt_challenger_new(secret_a, 32, 60, 64, &c), 0);
    assert_int_equal(nt_challenge_issue(c, 1000, &n, &exp), 0);
    assert_int_equal(exp, 1060);
    /* Checking without consuming does not spend it. */
    assert_int_equal(nt_challenge_check(c, n, 1001, false, &got), NT_CHALLENGE_OK);
    assert_int_equal(got, 1060);
    assert_int_equal(nt_challenge_check(c, n, 1001, true, NULL), NT_CHALLENGE_OK);
    assert_int_equal(nt_challenge_check(c, n, 1002, true, NULL), NT_CHALLENGE_REPLAYED);
    assert_int_equal(nt_challenge_check(c, n, 1002, false, NULL), NT_CHALLENGE_REPLAYED);
    assert_int_equal(nt_challenger_replay_size(c, 1002), 1);
    /* After expiry it is refused as expired, and its replay entry is gone. */
    assert_int_equal(nt_challenge_check(c, n, 1060, true, NULL), NT_CHALLENGE_EXPIRED);
    assert_int_equal(nt_challenger_replay_size(c, 1060), 0);
}

static void test_expired_and_future(void **state) {
    _cleanup_(nt_challenger_freep) NtChallenger *c = NULL, *long_lived = NULL;
    _cleanup_free_ char *n = NULL, *m = NULL;

    assert_int_equal(nt_challenger_new(secret_a, 32, 60, 64, &c), 0);
    assert_int_equal(nt_challenge_issue(c, 1000, &n, NULL), 0);
    assert_int_equal(nt_challenge_check(c, n, 1059, false, NULL), NT_CHALLENGE_OK);
    assert_int_equal(nt_challenge_check(c, n, 1060, true, NULL), NT_CHALLENGE_EXPIRED);
    assert_int_equal(nt_challenge_check(c, n, 5000, true, NULL), NT_CHALLENGE_EXPIRED);
    /* A replica with the same secret but a much longer lifetime cannot hand out nonces that
     * this one keeps for longer than its own lifetime (plus clock skew). */
    assert_int_equal(nt_challenger_new(secret_a, 32, 3600, 64, &long_lived), 0);
    assert_int_equal(nt_challenge_issue(long_lived, 1000, &m, NULL), 0);
    assert_int_equal(nt_challenge_check(c, m, 1000, true, NULL), NT_CHALLENGE_EXPIRED);
}

static void test_forged_and_malformed(void **state) {
    _cleanup_(nt_challenger_freep) NtChallenger *a = NULL, *b = NULL;
    _cleanup_free_ char *n = NULL, *flipped = NULL, *raw_b64 = NULL;
    _cleanup_free_ uint8_t *raw = NULL;
    size_t len = 0;

    assert_int_equal(nt_challenger_new(secret_a, 32, 60, 64, &a), 0);
    assert_int_equal(nt_challenger_new(secret_b, 32, 60, 64, &b), 0);
    assert_int_equal(nt_challenge_issue(a, 1000, &n, NULL), 0);
    /* Another service's secret. */
    assert_int_equal(nt_challenge_check(b, n, 1001, true, NULL), NT_CHALLENGE_FORGED);
    /* An extended expiry with the old MAC. */
    assert_int_equal(base64url_decode_alloc(n, strlen(n), &raw, &len), 0);
    assert_int_equal(len, NT_CHALLENGE_RAW_SIZE);
    raw[NT_CHALLENGE_RANDOM_SIZE + 7] ^= 0x10;
    assert_int_equal(base64url_encode_alloc(raw, len, &flipped), 0);
    assert_int_equal(nt_challenge_check(a, flipped, 1001, true, NULL), NT_CHALLENGE_FORGED);
    /* Self-made nonce of the right shape. */
    memset(raw, 0x41, len);
    assert_int_equal(base64url_encode_alloc(raw, len, &raw_b64), 0);
    assert_int_equal(nt_challenge_check(a, raw_b64, 1001, true, NULL), NT_CHALLENGE_FORGED);
    assert_int_equal(nt_challenge_check(a, "", 1001, true, NULL), NT_CHALLENGE_MALFORMED);
    assert_int_equal(nt_challenge_check(a, "!!!", 1001, true, NULL), NT_CHALLENGE_MALFORMED);
    assert_int_equal(nt_challenge_check(a, "QUJD", 1001, true, NULL), NT_CHALLENGE_MALFORMED);
    assert_int_equal(nt_challenge_check(a, NULL, 1001, true, NULL), NT_CHALLENGE_MALFORMED);
    /* The genuine one still works after all that. */
    assert_int_equal(nt_challenge_check(a, n, 1001, true, NULL), NT_CHALLENGE_OK);
}

static void test_two_replicas(void **state) {
    _cleanup_(nt_challenger_freep) NtChallenger *a = NULL, *b = NULL;
    _cleanup_free_ char *n = NULL;

    assert_int_equal(nt_challenger_new(secret_a, 32, 60, 64, &a), 0);
    assert_int_equal(nt_challenger_new(secret_a, 32, 60, 64, &b), 0);
    assert_int_equal(nt_challenge_issue(a, 1000, &n, NULL), 0);
    assert_int_equal(nt_challenge_check(b, n, 1001, true, NULL), NT_CHALLENGE_OK);
    assert_int_equal(nt_challenge_check(b, n, 1001, true, NULL), NT_CHALLENGE_REPLAYED);
}

static void test_replay_table_bounded(void **state) {
    _cleanup_(nt_challenger_freep) NtChallenger *c = NULL;
    size_t ok = 0, busy = 0;

    /* 16 entries -> 32 slots. Fill with live nonces until refusals start. */
    assert_int_equal(nt_challenger_new(secret_a, 32, 60, 16, &c), 0);
    for (int i = 0; i < 100; i++) {
        _cleanup_free_ char *n = NULL;
        assert_int_equal(nt_challenge_issue(c, 1000, &n, NULL), 0);
        NtChallengeResult r = nt_challenge_check(c, n, 1000, true, NULL);
        assert_true(r == NT_CHALLENGE_OK || r == NT_CHALLENGE_BUSY);
        ok += r == NT_CHALLENGE_OK;
        busy += r == NT_CHALLENGE_BUSY;
    }
    assert_true(ok <= 32);
    assert_true(ok >= 16);
    assert_true(busy > 0);
    /* Once they expire, the table is usable again. */
    _cleanup_free_ char *later = NULL;
    assert_int_equal(nt_challenge_issue(c, 1100, &later, NULL), 0);
    assert_int_equal(nt_challenge_check(c, later, 1100, true, NULL), NT_CHALLENGE_OK);
}

static void test_secret_file(void **state) {
    char dir[] = "/tmp/nt-challenge-XXXXXX", path[64], *err = NULL;
    NtChallenger *c = NULL;
    int fd;

    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/secret", dir);
    fd = open(path, O_CREAT | O_WRONLY, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, secret_a, 32), 32);
    close(fd);
    assert_int_equal(chmod(path, 0644), 0);
    assert_int_equal(nt_challenger_new_from_file(path, 60, 64, &c, &err), -EPERM);
    assert_non_null(strstr(err, "0600"));
    free(err);
    err = NULL;
    assert_int_equal(chmod(path, 0600), 0);
    assert_int_equal(nt_challenger_new_from_file(path, 60, 64, &c, &err), 0);
    nt_challenger_free(c);
    assert_int_equal(truncate(path, 16), 0);
    assert_int_equal(nt_challenger_new_from_file(path, 60, 64, &c, &err), -EINVAL);
    assert_non_null(strstr(err, "at least 32"));
    free(err);
    unlink(path);
    rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_once),       cmocka_unit_test(test_expired_and_future),
        cmocka_unit_test(test_forged_and_malformed), cmocka_unit_test(test_two_replicas),
        cmocka_unit_test(test_replay_table_bounded), cmocka_unit_test(test_secret_file),
    };
    secret_set_allow_unlocked(true);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
