/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The signing algorithm a service infers from the keys already in its keys_dir (attestd's token
 * keys, kmsd's release keys: nt_signing_keys_dir_alg), checked the same way for both: no or an
 * empty keys_dir gives the ES256 default, ES384 keys from the old default give ES384 and load, a
 * configured alg that contradicts the keys fails the load naming a key file, and keys of both
 * curves are not inferred. The caller's parse callback reads its service's configuration.
 */
#pragma once

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "token/keys.h"

/* Parses the configuration text with relative paths under dir. Returns parse's result and, on
 * success, the configured or inferred alg and the keys_dir (malloc'd). */
typedef int (*AlgKeysParse)(const char *text, const char *dir, char **ret_alg, char **ret_keys_dir);

/* noalg names keys_dir "keys" and no alg; es256 the same keys_dir with alg ES256. */
static inline void alg_keys_check(AlgKeysParse parse, const char *noalg, const char *es256) {
    char dir[] = "/tmp/nt-test-alg-XXXXXX", keys[64], cmd[192];
    NtSigningKeys *k = NULL;
    NtJwsAlg alg;
    char *err = NULL, *a = NULL, *kd = NULL;

    assert_non_null(mkdtemp(dir));
    snprintf(keys, sizeof keys, "%s/keys", dir);
    for (int round = 0; round < 2; round++) {
        /* round 0: no keys_dir yet; round 1: an empty one */
        assert_int_equal(nt_signing_keys_dir_alg(keys, &alg), 0);
        assert_int_equal(parse(noalg, dir, &a, &kd), 0);
        assert_string_equal(a, "ES256");
        free(a);
        free(kd);
        assert_int_equal(mkdir(keys, 0700), round == 0 ? 0 : -1);
    }
    /* the old default's keys */
    assert_int_equal(nt_signing_keys_open_dir(keys, NT_JWS_ES384, &k, NULL), 0);
    k = nt_signing_keys_free(k);
    assert_int_equal(nt_signing_keys_dir_alg(keys, &alg), 1);
    assert_int_equal(alg, NT_JWS_ES384);
    assert_int_equal(parse(noalg, dir, &a, &kd), 0);
    assert_string_equal(a, "ES384");
    assert_int_equal(nt_signing_keys_open_dir(kd, nt_jws_alg_from_string(a), &k, &err), 0);
    k = nt_signing_keys_free(k);
    free(a);
    free(kd);
    assert_int_equal(parse(es256, dir, &a, &kd), 0);
    assert_string_equal(a, "ES256"); /* as configured */
    assert_int_equal(nt_signing_keys_open_dir(kd, nt_jws_alg_from_string(a), &k, &err),
                     -EOPNOTSUPP);
    assert_null(k);
    assert_non_null(strstr(err, "key-"));
    free(err);
    free(a);
    free(kd);
    /* keys of both curves: not inferred (the load names the odd file) */
    snprintf(cmd, sizeof cmd, "%s/p256", dir);
    assert_int_equal(mkdir(cmd, 0700), 0);
    assert_int_equal(nt_signing_keys_open_dir(cmd, NT_JWS_ES256, &k, NULL), 0);
    k = nt_signing_keys_free(k);
    snprintf(cmd, sizeof cmd, "cp -p '%s'/p256/key-*.json '%s'", dir, keys);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(nt_signing_keys_dir_alg(keys, &alg), -EOPNOTSUPP);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}
