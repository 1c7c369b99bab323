/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Signing keys: first start generates one key (file 0600, named by its RFC 7638 thumbprint) and a
 * reopen finds the same; unsafe modes are refused; rotation publishes the new key before it signs
 * and keeps the old one until its last token expired, then refresh removes it; two key sets on one
 * directory see each other's rotation after refresh; operator PEM and JWK files (first signs, the
 * others are only published); keys of the wrong curve are refused; ES256 works end to end.
 */
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/stat.h>
#include <cmocka.h>

#include <jose/jwk.h>
#include <openssl/pem.h>

#include "core/fileio.h"
#include "core/openssl-util.h"
#include "token/keys.h"

static char tmpdir[] = "/tmp/nt-test-keys-XXXXXX";

static int setup(void **state) {
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state) {
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static void path(char *buf, const char *a, const char *b) {
    snprintf(buf, PATH_MAX, "%s/%s%s%s", tmpdir, a, b ? "/" : "", b ? b : "");
}

static size_t n_keys(const json_t *jwks) {
    return json_array_size(json_object_get(jwks, "keys"));
}

static bool has_kid(const json_t *jwks, const char *kid) {
    size_t i;
    json_t *k;
    json_array_foreach(json_object_get(jwks, "keys"), i, k) {
        if (streq(json_string_value(json_object_get(k, "kid")), kid))
            return true;
    }
    return false;
}

static size_t count_files(const char *dir) {
    char cmd[PATH_MAX + 64];
    snprintf(cmd, sizeof cmd, "test $(ls '%s' | grep -c '^key-.*\\.json$') -eq", dir);
    for (size_t n = 0; n < 10; n++) {
        char c[PATH_MAX + 80];
        snprintf(c, sizeof c, "%s %zu", cmd, n);
        if (system(c) == 0)
            return n;
    }
    return SIZE_MAX;
}

static void test_first_start(void **state) {
    char dir[PATH_MAX], file[PATH_MAX + 128], *err = NULL;
    _cleanup_(nt_signing_keys_freep) NtSigningKeys *k = NULL, *k2 = NULL;
    struct stat st;
    path(dir, "first", NULL);

    assert_int_equal(nt_signing_keys_open_dir(dir, NT_JWS_ES384, &k, &err), 0);
    _cleanup_free_ char *kid = nt_signing_keys_current_kid(k, 0);
    json_auto_t *jwks = nt_signing_keys_jwks(k, 0);
    assert_non_null(kid);
    assert_int_equal(n_keys(jwks), 1);
    json_t *pub = json_array_get(json_object_get(jwks, "keys"), 0);
    assert_string_equal(json_string_value(json_object_get(pub, "kid")), kid);
    assert_string_equal(json_string_value(json_object_get(pub, "alg")), "ES384");
    assert_string_equal(json_string_value(json_object_get(pub, "use")), "sig");
    assert_string_equal(json_string_value(json_object_get(pub, "crv")), "P-384");
    assert_null(json_object_get(pub, "d"));
    /* kid is the RFC 7638 thumbprint of the public key. */
    json_auto_t *thp = jose_jwk_thp(NULL, pub, "S256");
    assert_string_equal(json_string_value(thp), kid);

    snprintf(file, sizeof file, "%s/key-%s.json", dir, kid);
    assert_int_equal(stat(file, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(count_files(dir), 1);

    /* A second start finds the key rather than making another. */
    assert_int_equal(nt_signing_keys_open_dir(dir, NT_JWS_ES384, &k2, &err), 0);
    _cleanup_free_ char *kid2 = nt_signing_keys_current_kid(k2, 0);
    assert_string_equal(kid, kid2);
    assert_int_equal(count_files(dir), 1);
    nt_signing_keys_free(TAKE_PTR(k2));

    /* Wrong algorithm for the stored key. */
    assert_int_equal(nt_signing_keys_open_dir(dir, NT_JWS_ES256, &k2, &err), -EOPNOTSUPP);
    free(TAKE_PTR(err));

    /* Group-readable key file refused, naming the file. */
    assert_int_equal(chmod(file, 0640), 0);
    assert_int_equal(nt_signing_keys_open_dir(dir, NT_JWS_ES384, &k2, &err), -EPERM);
    assert_non_null(err);
    assert_non_null(strstr(err, kid));
    free(TAKE_PTR(err));
    assert_int_equal(chmod(file, 0604), 0);
    assert_int_equal(nt_signing_keys_open_dir(dir, NT_JWS_ES384, &k2, &err), -EPERM);
    free(TAKE_PTR(err));
    assert_int_equal(chmod(file, 0600), 0);
    /* Refresh refuses too and keeps the old set. */
    assert_int_equal(chmod(file, 0644), 0);
    assert_int_equal(nt_signing_keys_refresh(k, 0), -EPERM);
    _cleanup_free_ char *kid3 = nt_signing_keys_current_kid(k, 0);
    assert_string_equal(kid, kid3);
    assert_int_equal(chmod(file, 0600), 0);

    /* A key file renamed to another kid is refused. */
    char other[PATH_MAX + 128];
    snprintf(other, sizeof other, "%s/key-x%s.json", dir, kid);
    assert_int_equal(rename(file, other), 0);
    assert_int_equal(nt_signing_keys_open_dir(dir, NT_JWS_ES384, &k2, &err), -EBADMSG);
    free(TAKE_PTR(err));
    assert_int_equal(rename(other, file), 0);

    /* A group-writable directory is refused. */
    assert_int_equal(chmod(dir, 0770), 0);
    assert_int_equal(nt_signing_keys_open_dir(dir, NT_JWS_ES384, &k2, &err), -EPERM);
    free(TAKE_PTR(err));
    assert_int_equal(chmod(dir, 0700), 0);
}

static void test_rotation(void **state) {
    char dir[PATH_MAX], *err = NULL;
    _cleanup_(nt_signing_keys_freep) NtSigningKeys *a = NULL, *b = NULL;
    path(dir, "rot", NULL);
    const int64_t lead = 600, life = 300;

    assert_int_equal(nt_signing_keys_open_dir(dir, NT_JWS_ES384, &a, &err), 0);
    assert_int_equal(nt_signing_keys_open_dir(dir, NT_JWS_ES384, &b, &err), 0);
    time_t t0 = time(NULL) + 10;
    _cleanup_free_ char *old = nt_signing_keys_current_kid(a, t0), *new = NULL;
    assert_int_equal(nt_signing_keys_rotate_at(dir, NT_JWS_ES384, lead, life, t0, &new), 0);
    assert_string_not_equal(old, new);
    assert_int_equal(count_files(dir), 2);

    /* b has not refreshed yet: it knows only the old key. */
    {
        json_auto_t *j = nt_signing_keys_jwks(b, t0);
        assert_int_equal(n_keys(j), 1);
    }
    assert_int_equal(nt_signing_keys_refresh(a, t0), 0);
    assert_int_equal(nt_signing_keys_refresh(b, t0), 0);
    for (int i = 0; i < 2; i++) {
        NtSigningKeys *k = i ? b : a;
        /* Published at once, but the old key keeps signing until t0 + lead. */
        json_auto_t *j0 = nt_signing_keys_jwks(k, t0);
        assert_int_equal(n_keys(j0), 2);
        assert_true(has_kid(j0, new) && has_kid(j0, old));
        _cleanup_free_ char *s0 = nt_signing_keys_current_kid(k, t0);
        _cleanup_free_ char *s1 = nt_signing_keys_current_kid(k, t0 + lead - 1);
        _cleanup_free_ char *s2 = nt_signing_keys_current_kid(k, t0 + lead);
        assert_string_equal(s0, old);
        assert_string_equal(s1, old);
        assert_string_equal(s2, new);
        /* The old key stays published until its last token expired. */
        json_auto_t *j1 = nt_signing_keys_jwks(k, t0 + lead + life - 1);
        json_auto_t *j2 = nt_signing_keys_jwks(k, t0 + lead + life);
        assert_int_equal(n_keys(j1), 2);
        assert_int_equal(n_keys(j2), 1);
        assert_true(has_kid(j2, new));
    }
    /* A token signed by the new key at the switch verifies against b's JWKS (JWS by libjose). */
    {
        _cleanup_free_ char *jws = NULL, *kid = NULL;
        assert_int_equal(nt_signing_keys_sign(a, t0 + lead, "{}", 2, &jws, &kid), 0);
        assert_string_equal(kid, new);
    }
    /* Refresh after the end of publication drops the old key and removes its file. */
    assert_int_equal(nt_signing_keys_refresh(a, t0 + lead + life - 1), 0);
    assert_int_equal(count_files(dir), 2);
    assert_int_equal(nt_signing_keys_refresh(a, t0 + lead + life), 0);
    assert_int_equal(count_files(dir), 1);
    {
        json_auto_t *j = nt_signing_keys_jwks(a, t0);
        assert_int_equal(n_keys(j), 1);
        assert_true(has_kid(j, new));
    }
    /* b still has it until its own refresh, which tolerates the missing file. */
    assert_int_equal(nt_signing_keys_refresh(b, t0 + lead + life), 0);
    {
        json_auto_t *j = nt_signing_keys_jwks(b, t0);
        assert_int_equal(n_keys(j), 1);
    }
    /* A second rotation from b is seen by a. */
    _cleanup_free_ char *third = NULL;
    assert_int_equal(nt_signing_keys_rotate_at(dir, NT_JWS_ES384, 0, life, t0 + 2000, &third), 0);
    assert_int_equal(nt_signing_keys_refresh(a, t0 + 2000), 0);
    _cleanup_free_ char *s3 = nt_signing_keys_current_kid(a, t0 + 2000);
    assert_string_equal(s3, third);

    /* Rotation in an empty directory: nothing to wait for, the new key signs at once. */
    char empty[PATH_MAX];
    _cleanup_free_ char *fresh = NULL;
    _cleanup_(nt_signing_keys_freep) NtSigningKeys *c = NULL;
    path(empty, "rot-empty", NULL);
    assert_int_equal(mkdir(empty, 0700), 0);
    assert_int_equal(nt_signing_keys_rotate_at(empty, NT_JWS_ES384, lead, life, t0, &fresh), 0);
    assert_int_equal(nt_signing_keys_open_dir(empty, NT_JWS_ES384, &c, &err), 0);
    _cleanup_free_ char *s4 = nt_signing_keys_current_kid(c, t0);
    assert_non_null(s4);
    assert_string_equal(s4, fresh);
}

static void write_pem(const char *file, const char *curve, mode_t mode) {
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *pk = EVP_EC_gen(curve);
    _cleanup_fclose_ FILE *f = NULL;
    assert_non_null(pk);
    f = fopen(file, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL), 1);
    assert_int_equal(chmod(file, mode), 0);
}

static void test_files(void **state) {
    char pem[PATH_MAX], jwkf[PATH_MAX], p256[PATH_MAX], *err = NULL;
    _cleanup_(nt_signing_keys_freep) NtSigningKeys *k = NULL;
    path(pem, "op1.pem", NULL);
    path(jwkf, "op2.jwk", NULL);
    path(p256, "op3.pem", NULL);
    write_pem(pem, "P-384", 0600);
    write_pem(p256, "P-256", 0600);
    json_auto_t *jwk = json_pack("{s:s}", "alg", "ES384");
    assert_true(jose_jwk_gen(NULL, jwk));
    _cleanup_free_ char *text = json_dumps(jwk, 0);
    assert_int_equal(write_file_atomic(jwkf, text, strlen(text), 0600), 0);

    char *paths[] = {pem, jwkf};
    assert_int_equal(nt_signing_keys_load_files(paths, 2, NT_JWS_ES384, &k, &err), 0);
    json_auto_t *jwks = nt_signing_keys_jwks(k, 0);
    assert_int_equal(n_keys(jwks), 2);
    json_auto_t *thp = jose_jwk_thp(NULL, jwk, "S256");
    assert_true(has_kid(jwks, json_string_value(thp)));
    /* The first file signs, at any time; the second is only published. */
    _cleanup_free_ char *kid = nt_signing_keys_current_kid(k, 0);
    _cleanup_free_ char *kid_late = nt_signing_keys_current_kid(k, 4000000000);
    assert_string_not_equal(kid, json_string_value(thp));
    assert_string_equal(kid, kid_late);
    assert_int_equal(nt_signing_keys_refresh(k, 0), 0);
    nt_signing_keys_free(TAKE_PTR(k));

    /* Wrong curve, unsafe mode, garbage. */
    char *p3[] = {p256};
    assert_int_equal(nt_signing_keys_load_files(p3, 1, NT_JWS_ES384, &k, &err), -EOPNOTSUPP);
    free(TAKE_PTR(err));
    assert_int_equal(nt_signing_keys_load_files(p3, 1, NT_JWS_ES256, &k, &err), 0);
    nt_signing_keys_free(TAKE_PTR(k));
    assert_int_equal(chmod(pem, 0640), 0);
    assert_int_equal(nt_signing_keys_load_files(paths, 2, NT_JWS_ES384, &k, &err), -EPERM);
    assert_non_null(strstr(err, "op1.pem"));
    free(TAKE_PTR(err));
    assert_int_equal(write_file_atomic(pem, "hello", 5, 0600), 0);
    assert_int_equal(nt_signing_keys_load_files(paths, 2, NT_JWS_ES384, &k, &err), -EBADMSG);
    free(TAKE_PTR(err));
    /* A public JWK is not a signing key. */
    assert_true(jose_jwk_pub(NULL, jwk));
    _cleanup_free_ char *pubtext = json_dumps(jwk, 0);
    assert_int_equal(write_file_atomic(jwkf, pubtext, strlen(pubtext), 0600), 0);
    char *p2[] = {jwkf};
    assert_int_equal(nt_signing_keys_load_files(p2, 1, NT_JWS_ES384, &k, &err), -EBADMSG);
    free(TAKE_PTR(err));
}

typedef struct Signer {
    NtSigningKeys *k;
    int ok, failed;
} Signer;

static void *sign_loop(void *arg) {
    Signer *s = arg;
    for (int i = 0; i < 200; i++) {
        char *jws = NULL;
        if (nt_signing_keys_sign(s->k, 0, "{\"n\":1}", 7, &jws, NULL) == 0 && jws)
            s->ok++;
        else
            s->failed++;
        free(jws);
    }
    return NULL;
}

/* Signing threads keep signing while the set is rotated and refreshed under them (run under ASan
 * to catch a key freed while in use). */
static void test_concurrent_refresh(void **state) {
    char dir[PATH_MAX], *err = NULL;
    _cleanup_(nt_signing_keys_freep) NtSigningKeys *k = NULL;
    Signer s[3] = {};
    pthread_t t[3];
    path(dir, "conc", NULL);
    assert_int_equal(nt_signing_keys_open_dir(dir, NT_JWS_ES256, &k, &err), 0);
    for (int i = 0; i < 3; i++) {
        s[i].k = k;
        assert_int_equal(pthread_create(&t[i], NULL, sign_loop, &s[i]), 0);
    }
    for (int i = 0; i < 15; i++) {
        assert_int_equal(nt_signing_keys_rotate(dir, NT_JWS_ES256, 0, 0, NULL), 0);
        assert_int_equal(nt_signing_keys_refresh(k, 0), 0);
    }
    for (int i = 0; i < 3; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        assert_int_equal(s[i].failed, 0);
        assert_int_equal(s[i].ok, 200);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_start),
        cmocka_unit_test(test_rotation),
        cmocka_unit_test(test_files),
        cmocka_unit_test(test_concurrent_refresh),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
