/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The HTTP services' shared configuration skeleton (web/svc-conf.h): strict parsing (unknown
 * keys, types, ranges, list sizes, duplicate keys), relative paths, the common members' defaults
 * and checks, loading a file, and the URL rule. A service-like struct of its own is parsed, so
 * that these fail when the shared helpers misbehave whatever attestd and kmsd configure.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/macro.h"
#include "web/svc-conf.h"

typedef struct TestConfig {
    SVC_CONFIG_HEAD;
    char *name;
    char *dir;
    int64_t count;
    double ratio;
    bool flag;
    char **paths;
    size_t n_paths;
    char **tags;
    size_t n_tags;
    char *custom;
    unsigned custom_calls;
} TestConfig;

#define O(m) offsetof(TestConfig, m)

/* A member parsed by hand, as attestd's "policies": only strings starting with "x". */
static int parse_custom(json_t *v, const char *key, const char *base_dir, void *conf,
                        char **ret_error) {
    TestConfig *c = conf;
    c->custom_calls++;
    if (!json_is_string(v) || json_string_value(v)[0] != 'x')
        return svc_conf_error(ret_error, "%s: expected a string starting with x", key);
    free(c->custom);
    c->custom = strdup(json_string_value(v));
    return c->custom ? 0 : -ENOMEM;
}

static const SvcField sub_fields[] = {
    {"count", SVC_F_INT64, O(count), 0, -5, 5, NULL, NULL},
    {"dir", SVC_F_PATH, O(dir), 0, 0, 0, NULL, NULL},
    {NULL, 0, 0, 0, 0, 0, NULL, NULL},
};
static const SvcField top_fields[] = {
    SVC_CONFIG_HTTP_FIELDS(8192),
    {"name", SVC_F_STR, O(name), 0, 0, 0, NULL, NULL},
    {"ratio", SVC_F_DOUBLE, O(ratio), 0, 0.5, 2, NULL, NULL},
    {"flag", SVC_F_BOOL, O(flag), 0, 0, 0, NULL, NULL},
    {"paths", SVC_F_PATHLIST, O(paths), O(n_paths), 0, 3, NULL, NULL},
    {"tags", SVC_F_STRLIST, O(tags), O(n_tags), 0, 0, NULL, NULL},
    {"sub", SVC_F_OBJECT, 0, 0, 0, 0, sub_fields, NULL},
    {"custom", SVC_F_OBJECT, 0, 0, 0, 0, NULL, parse_custom},
    {NULL, 0, 0, 0, 0, 0, NULL, NULL},
};

static void test_config_done(TestConfig *c) {
    svc_conf_done(&c->svc);
    free(c->name);
    free(c->dir);
    free(c->custom);
    svc_strv_free(c->paths, c->n_paths);
    svc_strv_free(c->tags, c->n_tags);
    *c = (TestConfig){};
}

/* Parses text (base /etc/nt) and runs the common check; returns the result, error in *ret_error. */
static int parse(const char *text, TestConfig *c, char **ret_error) {
    int r;
    *c = (TestConfig){};
    svc_conf_init(&c->svc);
    r = svc_conf_parse_text(text, strlen(text), top_fields, "/etc/nt", c, ret_error);
    if (r < 0)
        return r;
    return svc_conf_check(&c->svc, "127.0.0.1:9999", ret_error);
}

static void expect_error(const char *text, const char *needle) {
    _cleanup_(test_config_done) TestConfig c = {};
    char *err = NULL;
    assert_int_equal(parse(text, &c, &err), -EBADMSG);
    assert_non_null(err);
    if (!strstr(err, needle))
        fail_msg("error '%s' for %s does not mention '%s'", err, text, needle);
    free(err);
}

static void test_defaults(void **state) {
    _cleanup_(test_config_done) TestConfig c = {};
    char *err = NULL;

    assert_int_equal(parse("{}", &c, &err), 0);
    assert_null(err);
    assert_string_equal(c.listen, "127.0.0.1:9999");
    assert_string_equal(c.svc.listen, "127.0.0.1:9999"); /* the two views are one storage */
    assert_ptr_equal(c.listen, c.svc.listen);
    assert_null(c.tls_cert);
    assert_false(c.plain_http);
    assert_int_equal(c.threads, 4);
    assert_int_equal(c.max_body, 64 * 1024);
    assert_int_equal(c.timeout_s, 10);
    assert_int_equal(c.max_connections, 1024);
    assert_int_equal(c.per_ip_connections, 64);
    assert_true(c.rate_per_s == 50);
    assert_int_equal(c.rate_burst, 100);
    assert_int_equal(c.custom_calls, 0);
}

static void test_members(void **state) {
    _cleanup_(test_config_done) TestConfig c = {};
    char *err = NULL;
    const char *t =
        "{\"listen\": \"[::1]:0\", \"tls\": {\"cert\": \"c.pem\", \"key\": \"/abs/k.pem\"},"
        " \"threads\": 256, \"max_body\": 8192, \"timeout\": 3600, \"max_connections\": 1,"
        " \"per_ip_connections\": 65536, \"rate_limit\": {\"per_second\": 0.25, \"burst\": 7},"
        " \"name\": \"svc\", \"ratio\": 2, \"flag\": true, \"paths\": [\"a\", \"/b\", \"c/d\"],"
        " \"tags\": [\"t1\", \"t2\"], \"sub\": {\"count\": -5, \"dir\": \"sub/dir\"},"
        " \"custom\": \"xyz\"}";

    assert_int_equal(parse(t, &c, &err), 0);
    assert_string_equal(c.listen, "[::1]:0");
    assert_string_equal(c.tls_cert, "/etc/nt/c.pem");
    assert_string_equal(c.tls_key, "/abs/k.pem");
    assert_int_equal(c.threads, 256);
    assert_int_equal(c.max_body, 8192);
    assert_int_equal(c.timeout_s, 3600);
    assert_int_equal(c.max_connections, 1);
    assert_int_equal(c.per_ip_connections, 65536);
    assert_true(c.rate_per_s == 0.25);
    assert_int_equal(c.rate_burst, 7);
    assert_string_equal(c.name, "svc");
    assert_true(c.ratio == 2);
    assert_true(c.flag);
    assert_int_equal(c.n_paths, 3);
    assert_string_equal(c.paths[0], "/etc/nt/a");
    assert_string_equal(c.paths[1], "/b");
    assert_string_equal(c.paths[2], "/etc/nt/c/d");
    assert_null(c.paths[3]);
    assert_int_equal(c.n_tags, 2);
    assert_string_equal(c.tags[1], "t2"); /* strings are not paths */
    assert_int_equal(c.count, -5);
    assert_string_equal(c.dir, "/etc/nt/sub/dir");
    assert_string_equal(c.custom, "xyz");
    assert_int_equal(c.custom_calls, 1);
}

static void test_unknown_keys(void **state) {
    /* Top level, with the known keys listed in table order (the common ones first). */
    expect_error("{\"listn\": \"x\"}",
                 "listn: unknown key (known: listen, tls, plain_http, threads, max_body, timeout, "
                 "max_connections, per_ip_connections, rate_limit, name, ratio, flag, paths, tags, "
                 "sub, custom)");
    /* Nested tables name the member with its path. */
    expect_error("{\"tls\": {\"cert\": \"c\", \"key\": \"k\", \"chain\": \"x\"}}",
                 "tls.chain: unknown key (known: cert, key)");
    expect_error("{\"rate_limit\": {\"rate\": 1}}", "rate_limit.rate: unknown key (known: "
                                                    "per_second, burst)");
    expect_error("{\"sub\": {\"count\": 1, \"Dir\": \"x\"}}", "sub.Dir: unknown key");
}

static void test_limits(void **state) {
    expect_error("{\"threads\": 0}", "threads: expected an integer 1..256");
    expect_error("{\"threads\": 257}", "threads: expected an integer 1..256");
    expect_error("{\"threads\": 4.0}", "threads: expected an integer 1..256");
    expect_error("{\"threads\": \"4\"}", "threads: expected an integer 1..256");
    /* The service's own minimum for max_body (SVC_CONFIG_HTTP_FIELDS' argument). */
    expect_error("{\"max_body\": 8191}", "max_body: expected an integer 8192..16777216");
    expect_error("{\"max_body\": 16777217}", "max_body: expected an integer 8192..16777216");
    expect_error("{\"timeout\": 0}", "timeout: expected an integer 1..3600");
    expect_error("{\"per_ip_connections\": 65537}", "per_ip_connections: expected an integer");
    expect_error("{\"max_connections\": -1}", "max_connections: expected an integer 1..65536");
    expect_error("{\"rate_limit\": {\"per_second\": -0.1}}",
                 "rate_limit.per_second: expected a number 0..1e+06");
    expect_error("{\"rate_limit\": {\"burst\": 0}}", "rate_limit.burst: expected an integer");
    expect_error("{\"ratio\": 0.49}", "ratio: expected a number 0.5..2");
    expect_error("{\"ratio\": true}", "ratio: expected a number 0.5..2");
    expect_error("{\"sub\": {\"count\": 6}}", "sub.count: expected an integer -5..5");
    expect_error("{\"sub\": {\"count\": -6}}", "sub.count: expected an integer -5..5");
    /* A value above what the member can hold must not wrap into range. */
    expect_error("{\"threads\": 4294967297}", "threads: expected an integer 1..256");
}

static void test_types(void **state) {
    expect_error("[]", "configuration: expected an object");
    expect_error("{\"tls\": \"c.pem\"}", "tls: expected an object");
    expect_error("{\"listen\": 8443}", "listen: expected a non-empty string");
    expect_error("{\"listen\": \"\"}", "listen: expected a non-empty string");
    expect_error("{\"tls\": {\"cert\": null}}", "tls.cert: expected a non-empty string");
    expect_error("{\"plain_http\": 1}", "plain_http: expected true or false");
    expect_error("{\"paths\": \"a\"}", "paths: expected an array of strings");
    expect_error("{\"paths\": [\"a\", \"\"]}", "paths[1]: expected a non-empty string");
    expect_error("{\"tags\": [\"a\", 2]}", "tags[1]: expected a non-empty string");
    expect_error("{\"paths\": [\"a\", \"b\", \"c\", \"d\"]}", "paths: at most 3 entries");
    expect_error("{\"custom\": \"abc\"}", "custom: expected a string starting with x");
    expect_error("{\"name\": \"a\", \"name\": \"b\"}", "line 1: duplicate object key");
    expect_error("{\"name\": ", "line 1:");
}

static void test_checks(void **state) {
    expect_error("{\"tls\": {\"cert\": \"c.pem\"}}", "tls: both 'cert' and 'key' are needed");
    expect_error("{\"tls\": {\"key\": \"k.pem\"}}", "tls: both 'cert' and 'key' are needed");
    expect_error("{\"plain_http\": true, \"tls\": {\"cert\": \"c\", \"key\": \"k\"}}",
                 "plain_http: true together with tls; choose one");

    _cleanup_(test_config_done) TestConfig c = {};
    char *err = NULL;
    assert_int_equal(parse("{\"plain_http\": true, \"listen\": \"0.0.0.0:80\"}", &c, &err), 0);
    assert_true(c.plain_http);
    assert_string_equal(c.listen, "0.0.0.0:80"); /* a given listen is not replaced */
}

/* A later member replaces an earlier one of the same table without leaking (ASan checks). */
static void test_replace(void **state) {
    _cleanup_(test_config_done) TestConfig c = {};
    char *err = NULL;
    svc_conf_init(&c.svc);
    const char *a = "{\"paths\": [\"a\", \"b\"], \"name\": \"one\"}";
    const char *b = "{\"paths\": [\"z\"], \"name\": \"two\"}";
    assert_int_equal(svc_conf_parse_text(a, strlen(a), top_fields, NULL, &c, &err), 0);
    assert_int_equal(svc_conf_parse_text(b, strlen(b), top_fields, NULL, &c, &err), 0);
    assert_int_equal(c.n_paths, 1);
    assert_string_equal(c.paths[0], "z"); /* no base_dir: kept as given */
    assert_string_equal(c.name, "two");
}

static int parse_file(const char *text, size_t len, const char *base_dir, void **ret,
                      char **ret_error) {
    TestConfig *c = calloc(1, sizeof *c);
    int r;
    if (!c)
        return -ENOMEM;
    svc_conf_init(&c->svc);
    r = svc_conf_parse_text(text, len, top_fields, base_dir, c, ret_error);
    if (r >= 0)
        r = svc_conf_check(&c->svc, "127.0.0.1:1", ret_error);
    if (r < 0) {
        test_config_done(c);
        free(c);
        return r;
    }
    *ret = c;
    return 0;
}

static void free_file(void *c) {
    test_config_done(c);
    free(c);
}

static void test_load(void **state) {
    char dir[] = "/tmp/nt-svc-conf-XXXXXX", path[256], bad[256];
    void *v = NULL;
    char *err = NULL;
    FILE *f;

    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/svc.json", dir);
    snprintf(bad, sizeof bad, "%s/bad.json", dir);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"tls\": {\"cert\": \"tls/c.pem\", \"key\": \"tls/k.pem\"}}", f);
    fclose(f);
    f = fopen(bad, "w");
    assert_non_null(f);
    fputs("{\"threads\": 999}", f);
    fclose(f);

    assert_int_equal(svc_conf_load(path, parse_file, free_file, &v, &err), 0);
    TestConfig *c = v;
    assert_string_equal(c->path, path);
    assert_string_equal(c->svc.path, path);
    char want[300];
    snprintf(want, sizeof want, "%s/tls/c.pem", dir); /* relative to the file's directory */
    assert_string_equal(c->tls_cert, want);
    assert_string_equal(c->listen, "127.0.0.1:1");
    free_file(c);

    /* Errors name the file, then the key. */
    v = NULL;
    assert_int_equal(svc_conf_load(bad, parse_file, free_file, &v, &err), -EBADMSG);
    assert_null(v);
    char want_err[400];
    snprintf(want_err, sizeof want_err, "%s: threads: expected an integer 1..256", bad);
    assert_string_equal(err, want_err);
    free(err);
    err = NULL;

    char missing[300];
    snprintf(missing, sizeof missing, "%s/none.json", dir);
    assert_int_equal(svc_conf_load(missing, parse_file, free_file, &v, &err), -ENOENT);
    assert_null(v);
    assert_non_null(strstr(err, "none.json: No such file or directory"));
    free(err);

    unlink(path);
    unlink(bad);
    rmdir(dir);
}

static void test_url_allowed(void **state) {
    assert_true(svc_conf_url_allowed("https://kds.example/vcek"));
    assert_true(svc_conf_url_allowed("http://127.0.0.1:8080/x"));
    assert_true(svc_conf_url_allowed("http://127.9.9.9"));
    assert_true(svc_conf_url_allowed("http://localhost/x"));
    assert_true(svc_conf_url_allowed("http://[::1]:80/jwks.json"));
    assert_false(svc_conf_url_allowed("http://example.com/"));
    assert_false(svc_conf_url_allowed("http://128.0.0.1/"));
    assert_false(svc_conf_url_allowed("http://127.0.0.1.evil.example/"));
    assert_false(svc_conf_url_allowed("http://user@127.0.0.1/"));
    assert_false(svc_conf_url_allowed("http://[::2]/"));
    assert_false(svc_conf_url_allowed("http:///x"));
    assert_false(svc_conf_url_allowed("ftp://127.0.0.1/"));
    assert_false(svc_conf_url_allowed("HTTPS://x/"));
}

static void test_errf(void **state) {
    char *err = NULL;
    assert_int_equal(svc_errf(&err, -ENOKEY, "key %s: %d", "k", 7), -ENOKEY);
    assert_string_equal(err, "key k: 7");
    free(err);
    assert_int_equal(svc_errf(NULL, -EIO, "ignored"), -EIO);
    assert_int_equal(svc_conf_error(NULL, "x"), -EBADMSG);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),     cmocka_unit_test(test_members),
        cmocka_unit_test(test_unknown_keys), cmocka_unit_test(test_limits),
        cmocka_unit_test(test_types),        cmocka_unit_test(test_checks),
        cmocka_unit_test(test_replace),      cmocka_unit_test(test_load),
        cmocka_unit_test(test_url_allowed),  cmocka_unit_test(test_errf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
