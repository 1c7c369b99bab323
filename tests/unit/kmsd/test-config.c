/* SPDX-License-Identifier: Apache-2.0 */
/* nitride-kmsd's configuration: defaults, relative paths, and errors that name the key. */
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

#include "core/macro.h"
#include "token/keys.h"
#include "kmsd/conf.h"
#include "../token/alg-keys-util.h"

#define DBK "\"database\": \"kms.db\", \"kek_file\": \"kek\""
#define REL "\"release\": {\"keys_dir\": \"rk\"}"
#define ATT                                                                                        \
    "\"attestd\": {\"jwks_url\": \"https://att.example/.well-known/jwks.json\", \"issuer\": "      \
    "\"https://att.example\"}"
#define ADM "\"admin\": {\"bearer_token_file\": \"admin.token\"}"
#define BASE DBK ", " REL ", " ATT ", " ADM
#define NO_REL DBK ", " ATT ", " ADM
#define NO_ATT DBK ", " REL ", " ADM
#define NO_ADM DBK ", " REL ", " ATT

static void expect_error(const char *text, const char *needle) {
    KmsdConfig *c = NULL;
    char *err = NULL;
    assert_int_equal(kmsd_config_parse(text, strlen(text), "/etc/nt", &c, &err), -EBADMSG);
    assert_null(c);
    assert_non_null(err);
    if (!strstr(err, needle))
        fail_msg("error '%s' does not mention '%s'", err, needle);
    free(err);
}

static void test_minimal_defaults(void **state) {
    _cleanup_(kmsd_config_freep) KmsdConfig *c = NULL;
    char *err = NULL;
    const char *t = "{" BASE "}";

    assert_int_equal(kmsd_config_parse(t, strlen(t), "/etc/nt", &c, &err), 0);
    assert_string_equal(c->listen, "127.0.0.1:8444");
    assert_string_equal(c->database, "/etc/nt/kms.db");
    assert_string_equal(c->kek_file, "/etc/nt/kek");
    assert_string_equal(c->release_keys_dir, "/etc/nt/rk");
    assert_string_equal(c->admin_token_file, "/etc/nt/admin.token");
    assert_string_equal(c->release_alg, "ES256"); /* the default since issue 10 */
    assert_int_equal(c->release_lifetime, 300);
    assert_int_equal(c->jwks_ttl, 300);
    assert_int_equal(c->jwks_min_refresh, 10);
    assert_int_equal(c->skew, 60);
    assert_null(c->audience);
    assert_null(c->admin_client_ca);
    assert_int_equal(c->denied_audit_per_minute, 60);
    assert_int_equal(c->max_body, 64 * 1024);
}

static void test_full(void **state) {
    _cleanup_(kmsd_config_freep) KmsdConfig *c = NULL;
    char *err = NULL;
    const char *t =
        "{\"listen\": \"0.0.0.0:9000\", \"tls\": {\"cert\": \"/x/c.pem\", \"key\": \"k.pem\"},"
        " \"database\": \"/var/lib/k.db\", \"kek_file\": \"kek\","
        " \"release\": {\"key_files\": [\"r1.pem\", \"/r2.pem\"], \"alg\": \"ES384\","
        "               \"lifetime\": 60},"
        " \"attestd\": {\"jwks_file\": \"jwks.json\", \"issuer\": \"i\", \"audience\": \"kms\","
        "               \"skew\": 5, \"cache_ttl\": 60},"
        " \"admin\": {\"client_ca\": \"ca.pem\", \"allowed_subjects\": [\"CN=a\", \"CN=b\"],"
        "             \"denied_audit_per_minute\": 0},"
        " \"rate_limit\": {\"per_second\": 0, \"burst\": 1}, \"log_level\": \"debug\"}";

    assert_int_equal(kmsd_config_parse(t, strlen(t), "/etc/nt", &c, &err), 0);
    assert_string_equal(c->tls_key, "/etc/nt/k.pem");
    assert_int_equal(c->n_release_key_files, 2);
    assert_string_equal(c->release_key_files[0], "/etc/nt/r1.pem");
    assert_string_equal(c->release_alg, "ES384");
    assert_string_equal(c->jwks_file, "/etc/nt/jwks.json");
    assert_null(c->jwks_url);
    assert_string_equal(c->audience, "kms");
    assert_int_equal(c->n_admin_subjects, 2);
    assert_string_equal(c->admin_subjects[1], "CN=b");
    assert_null(c->admin_token_file);
    assert_int_equal(c->denied_audit_per_minute, 0);
    assert_true(c->rate_per_s == 0);
}

static void test_errors(void **state) {
    expect_error("{" BASE ", \"databse\": \"x\"}", "databse: unknown key");
    expect_error("{" NO_ATT ", \"attestd\": {\"jwks_ur\": \"x\", \"issuer\": \"i\"}}",
                 "attestd.jwks_ur: unknown key");
    expect_error("{\"kek_file\": \"k\", \"release\": {\"keys_dir\": \"r\"}, \"attestd\": "
                 "{\"jwks_file\": \"j\", \"issuer\": \"i\"}, \"admin\": {\"bearer_token_file\": "
                 "\"t\"}}",
                 "database: missing");
    expect_error("{" REL ", " ATT ", " ADM ", \"database\": \"d\", \"kek_file\": 3}",
                 "kek_file: expected a non-empty string");
    expect_error("{" NO_REL ", \"release\": {\"keys_dir\": \"r\", \"key_files\": [\"a\"]}}",
                 "exclude each other");
    expect_error("{" NO_REL ", \"release\": {\"alg\": \"RS256\", \"keys_dir\": \"r\"}}",
                 "release.alg");
    expect_error("{" NO_REL ", \"release\": {\"keys_dir\": \"r\", \"lifetime\": 5}}",
                 "release.lifetime: expected an integer 30..3600");
    expect_error("{" NO_ATT ", \"attestd\": {\"jwks_url\": \"http://att.example/j\", "
                 "\"issuer\": \"i\"}}",
                 "https://");
    expect_error("{" NO_ATT ", \"attestd\": {\"jwks_url\": \"https://a/j\", \"jwks_file\": \"f\","
                 " \"issuer\": \"i\"}}",
                 "exactly one");
    expect_error("{" NO_ATT ", \"attestd\": {\"jwks_url\": \"https://a/j\"}}", "attestd.issuer");
    expect_error("{" NO_ADM ", \"admin\": {}}", "bearer_token_file");
    expect_error("{" NO_ADM ", \"admin\": {\"client_ca\": \"ca.pem\"}}", "need tls");
    expect_error("{" NO_ADM ", \"admin\": {\"bearer_token_file\": \"t\", \"allowed_subjects\": "
                 "[\"CN=a\"]}}",
                 "only with admin.client_ca");
    expect_error("{" BASE ", \"tls\": {\"cert\": \"c\"}}", "both");
    expect_error("{" BASE ", \"log_level\": \"loud\"}", "log_level");
    expect_error("{" NO_ADM ", \"database\": \"a\"}", "duplicate");
    expect_error("[]", "expected an object");
}

static void test_loopback_http(void **state) {
    _cleanup_(kmsd_config_freep) KmsdConfig *c = NULL;
    char *err = NULL;
    const char *t = "{" NO_ATT ", \"attestd\": {\"jwks_url\": \"http://127.0.0.1:8443/j\", "
                    "\"issuer\": \"i\"}}";
    assert_int_equal(kmsd_config_parse(t, strlen(t), NULL, &c, &err), 0);
    expect_error("{" NO_ATT ", \"attestd\": {\"jwks_url\": \"http://127.0.0.1.evil.example/j\", "
                 "\"issuer\": \"i\"}}",
                 "https://");
}

/* The configured or inferred alg and keys_dir, for alg_keys_check(). */
static int kmsd_alg(const char *text, const char *dir, char **ret_alg, char **ret_keys_dir) {
    _cleanup_(kmsd_config_freep) KmsdConfig *c = NULL;
    char *err = NULL;
    int r = kmsd_config_parse(text, strlen(text), dir, &c, &err);
    free(err);
    if (r < 0)
        return r;
    *ret_alg = strdup(c->release_alg);
    *ret_keys_dir = strdup(c->release_keys_dir);
    return 0;
}

/* Upgrade from the ES384 default: without "alg", a keys_dir holding P-384 keys keeps ES384 (and
 * the keys load); an empty or missing one gets ES256; a configured alg that contradicts the keys
 * stays an error when they are loaded. */
static void test_alg_from_keys(void **state) {
    alg_keys_check(kmsd_alg, "{" DBK ", \"release\": {\"keys_dir\": \"keys\"}, " ATT ", " ADM "}",
                   "{" DBK ", \"release\": {\"keys_dir\": \"keys\", \"alg\": \"ES256\"}, " ATT
                   ", " ADM "}");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_minimal_defaults), cmocka_unit_test(test_full),
        cmocka_unit_test(test_errors),           cmocka_unit_test(test_loopback_http),
        cmocka_unit_test(test_alg_from_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
