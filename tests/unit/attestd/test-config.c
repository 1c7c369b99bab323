/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "attestd/conf.h"
#include "core/macro.h"
#include "token/keys.h"
#include "../token/alg-keys-util.h"

#define BASE                                                                                       \
    "\"challenge\": {\"secret\": \"ch.key\"}, \"token\": {\"keys_dir\": \"keys\"}, "               \
    "\"policies\": {\"default\": {\"file\": \"p.json\"}}"

static void expect_error(const char *text, const char *needle) {
    AttestdConfig *c = NULL;
    char *err = NULL;
    assert_int_equal(attestd_config_parse(text, strlen(text), "/etc/nt", &c, &err), -EBADMSG);
    assert_null(c);
    assert_non_null(err);
    if (!strstr(err, needle))
        fail_msg("error '%s' does not mention '%s'", err, needle);
    free(err);
}

static void test_minimal_defaults(void **state) {
    _cleanup_(attestd_config_freep) AttestdConfig *c = NULL;
    char *err = NULL;
    const char *t = "{" BASE "}";

    assert_int_equal(attestd_config_parse(t, strlen(t), "/etc/nt", &c, &err), 0);
    assert_string_equal(c->listen, "127.0.0.1:8443");
    assert_string_equal(c->challenge_secret, "/etc/nt/ch.key");
    assert_string_equal(c->keys_dir, "/etc/nt/keys");
    assert_string_equal(c->policies[0].file, "/etc/nt/p.json");
    assert_string_equal(c->default_policy, "default");
    assert_string_equal(c->token_alg, "ES256"); /* the default since issue 10 */
    assert_int_equal(c->token_lifetime, 300);
    assert_int_equal(c->challenge_lifetime, 60);
    assert_string_equal(c->revocation_mode, "off");
    assert_int_equal(c->n_client_policy_ids, 0);
    assert_int_equal(c->kds_negative_ttl_s, 600);
    assert_int_equal(c->kds_max_concurrent_fetches, 2);
    assert_true(c->kds_max_fetches_per_s == 5);
}

static void test_full(void **state) {
    _cleanup_(attestd_config_freep) AttestdConfig *c = NULL;
    char *err = NULL;
    const char *t =
        "{\"listen\": \"[::1]:0\", \"tls\": {\"cert\": \"/x/c.pem\", \"key\": \"k.pem\"},"
        " \"threads\": 8, \"rate_limit\": {\"per_second\": 2.5, \"burst\": 10},"
        " \"challenge\": {\"secret\": \"s\", \"lifetime\": 30, \"replay_capacity\": 1000},"
        " \"token\": {\"key_files\": [\"a.pem\", \"/b.pem\"], \"alg\": \"ES384\", \"lifetime\": 60,"
        " \"issuer\": \"https://a.example\", \"audience\": \"kms\"},"
        " \"trust_anchors\": [\"ark.pem\"],"
        " \"policies\": {\"prod\": {\"file\": \"prod.json\", \"recommended_tcb\": {\"snp\": 9}},"
        "                \"dev\": {\"file\": \"dev.json\"}},"
        " \"default_policy\": \"prod\", \"client_policy_ids\": [\"dev\"],"
        " \"kds\": {\"url\": \"https://kds.example\", \"cache_dir\": \"cache\","
        "          \"negative_ttl\": 30, \"max_concurrent_fetches\": 4, \"max_fetches_per_s\": "
        "0.5},"
        " \"revocation\": {\"mode\": \"best-effort\", \"max_age\": 600},"
        " \"evidence_log\": {\"path\": \"ev.db\", \"max_records\": 10}}";

    assert_int_equal(attestd_config_parse(t, strlen(t), "/etc/nt", &c, &err), 0);
    assert_string_equal(c->tls_key, "/etc/nt/k.pem");
    assert_string_equal(c->tls_cert, "/x/c.pem");
    assert_int_equal(c->threads, 8);
    assert_true(c->rate_per_s == 2.5);
    assert_int_equal(c->n_key_files, 2);
    assert_string_equal(c->key_files[1], "/b.pem");
    assert_string_equal(c->token_alg, "ES384");
    assert_non_null(attestd_config_policy(c, "dev"));
    assert_non_null(attestd_config_policy(c, "prod")->recommended_tcb_json);
    assert_null(attestd_config_policy(c, "dev")->recommended_tcb_json);
    assert_string_equal(c->revocation_mode, "best-effort");
    assert_string_equal(c->evidence_log, "/etc/nt/ev.db");
    assert_int_equal(c->kds_negative_ttl_s, 30);
    assert_int_equal(c->kds_max_concurrent_fetches, 4);
    assert_true(c->kds_max_fetches_per_s == 0.5);
}

static void test_kds_limits(void **state) {
    _cleanup_(attestd_config_freep) AttestdConfig *c = NULL;
    char *err = NULL;
    /* 0 turns the negative cache off. */
    const char *t = "{" BASE ", \"kds\": {\"negative_ttl\": 0, \"max_concurrent_fetches\": 64,"
                    " \"max_fetches_per_s\": 1000}}";

    assert_int_equal(attestd_config_parse(t, strlen(t), "/etc/nt", &c, &err), 0);
    assert_int_equal(c->kds_negative_ttl_s, 0);
    assert_int_equal(c->kds_max_concurrent_fetches, 64);
    assert_true(c->kds_max_fetches_per_s == 1000);

    expect_error("{" BASE ", \"kds\": {\"negative_ttl\": -1}}",
                 "kds.negative_ttl: expected an integer 0..86400");
    expect_error("{" BASE ", \"kds\": {\"negative_ttl\": 86401}}", "kds.negative_ttl");
    expect_error("{" BASE ", \"kds\": {\"negative_ttl\": \"600\"}}",
                 "kds.negative_ttl: expected an integer");
    expect_error("{" BASE ", \"kds\": {\"negative_ttl\": 1.5}}",
                 "kds.negative_ttl: expected an integer");
    expect_error("{" BASE ", \"kds\": {\"max_concurrent_fetches\": 0}}",
                 "kds.max_concurrent_fetches: expected an integer 1..64");
    expect_error("{" BASE ", \"kds\": {\"max_concurrent_fetches\": 65}}",
                 "kds.max_concurrent_fetches");
    expect_error("{" BASE ", \"kds\": {\"max_concurrent_fetches\": true}}",
                 "kds.max_concurrent_fetches");
    expect_error("{" BASE ", \"kds\": {\"max_fetches_per_s\": 0}}",
                 "kds.max_fetches_per_s: expected a number 0.01..1000");
    expect_error("{" BASE ", \"kds\": {\"max_fetches_per_s\": 1001}}", "kds.max_fetches_per_s");
    expect_error("{" BASE ", \"kds\": {\"max_fetches_per_s\": \"5\"}}", "kds.max_fetches_per_s");
    expect_error("{" BASE ", \"kds\": {\"max_fetches_per_sec\": 5}}",
                 "kds.max_fetches_per_sec: unknown key");
}

static void test_strict(void **state) {
    expect_error("{" BASE ", \"lissen\": \"x\"}", "lissen: unknown key");
    expect_error("{" BASE ", \"kds\": {\"urll\": \"x\"}}", "kds.urll: unknown key");
    expect_error("{" BASE ", \"threads\": \"4\"}", "threads: expected an integer");
    expect_error("{" BASE ", \"threads\": 0}", "threads: expected an integer 1..256");
    expect_error("{" BASE ", \"plain_http\": 1}", "plain_http: expected true or false");
    expect_error("{\"challenge\": {\"secret\": \"s\"}, \"policies\": {\"d\": {\"file\": \"f\"}},"
                 " \"token\": {\"keys_dir\": \"k\", \"alg\": \"HS256\"}}",
                 "token.alg");
    expect_error("{" BASE ", \"revocation\": {\"mode\": \"maybe\"}}", "revocation.mode");
    expect_error("{" BASE ", \"tls\": {\"cert\": \"c\"}}", "both 'cert' and 'key'");
    expect_error("{" BASE ", \"client_policy_ids\": [\"nope\"]}", "'nope' is not in policies");
    expect_error("{" BASE ", \"default_policy\": \"nope\"}", "'nope' is not in policies");
    expect_error("{\"token\": {\"keys_dir\": \"k\"}, \"policies\": {\"d\": {\"file\": \"f\"}}}",
                 "challenge.secret: missing");
    expect_error("{\"challenge\": {\"secret\": \"s\"}, \"policies\": {\"d\": {\"file\": \"f\"}}}",
                 "token: give 'keys_dir'");
    expect_error("{\"challenge\": {\"secret\": \"s\"}, \"token\": {\"keys_dir\": \"k\"}}",
                 "policies: at least one");
    expect_error("{\"challenge\": {\"secret\": \"s\"}, \"token\": {\"keys_dir\": \"k\"},"
                 " \"policies\": {\"a\": {\"file\": \"f\"}, \"b\": {\"file\": \"g\"}}}",
                 "default_policy: missing");
    expect_error("{\"challenge\": {\"secret\": \"s\"}, \"token\": {\"keys_dir\": \"k\"},"
                 " \"policies\": {\"a\": {\"file\": \"f\", \"extra\": 1}}}",
                 "policies.a: unknown key 'extra'");
    expect_error("{\"challenge\": {\"secret\": \"s\"}, \"token\": {\"keys_dir\": \"k\"},"
                 " \"policies\": {\"a\": {\"file\": \"f\", \"recommended_tcb\": {\"snpp\": 1}}}}",
                 "policies.a.recommended_tcb");
    expect_error("{\"challenge\": {\"secret\": \"s\"}, \"token\": {\"keys_dir\": \"k\"},"
                 " \"policies\": {\"a b\": {\"file\": \"f\"}}}",
                 "must be 1-64");
    expect_error("{" BASE ", \"kds\": {\"url\": \"ftp://x\"}}", "kds.url");
    expect_error("{" BASE ", \"kds\": {\"url\": \"http://kds.example\"}}", "kds.url");
    expect_error("{" BASE ", \"kds\": {\"url\": \"http://127.0.0.1.evil.example\"}}", "kds.url");
    expect_error("{" BASE ", \"kds\": {\"url\": \"http://127.0.0.1@evil.example\"}}", "kds.url");
    expect_error("{" BASE ", \"threads\": 4, \"threads\": 5}", "duplicate");
    expect_error("[]", "configuration: expected an object");
    expect_error("{", "line 1");
}

/* The configured or inferred alg and keys_dir, for alg_keys_check(). */
static int attestd_alg(const char *text, const char *dir, char **ret_alg, char **ret_keys_dir) {
    _cleanup_(attestd_config_freep) AttestdConfig *c = NULL;
    char *err = NULL;
    int r = attestd_config_parse(text, strlen(text), dir, &c, &err);
    free(err);
    if (r < 0)
        return r;
    *ret_alg = strdup(c->token_alg);
    *ret_keys_dir = strdup(c->keys_dir);
    return 0;
}

/* Upgrade from the ES384 default: without "alg", a keys_dir holding P-384 keys keeps ES384 (and
 * the keys load); an empty or missing one gets ES256; a configured alg that contradicts the keys
 * stays an error when they are loaded. */
static void test_alg_from_keys(void **state) {
    alg_keys_check(attestd_alg, "{" BASE "}",
                   "{"
                   "\"challenge\": {\"secret\": \"ch.key\"}, \"token\": {\"keys_dir\": \"keys\", "
                   "\"alg\": \"ES256\"}, \"policies\": {\"default\": {\"file\": \"p.json\"}}"
                   "}");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_minimal_defaults), cmocka_unit_test(test_full),
        cmocka_unit_test(test_strict),           cmocka_unit_test(test_kds_limits),
        cmocka_unit_test(test_alg_from_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
