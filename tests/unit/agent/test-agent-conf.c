/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The `nitride agent` configuration (src/agent/agent-conf.c): defaults, the top-level services
 * copied into each secret unless it has its own, and every refusal naming its member: unknown
 * members at each level, wrong types, ranges, duplicate keys, keys outside kms/, secret ids,
 * UUIDs, control characters, missing services. docs/agent-example.json must parse.
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

#include <jansson.h>

#include "agent/agent-conf.h"

static const char *example_path;

#define SVC "{\"url\":\"https://a.example\",\"ca\":\"/etc/ca.pem\"}"
#define BASE "\"attestd\":" SVC ",\"kms\":{\"url\":\"https://k.example\"}"

/* Parses text; returns the result, err filled. */
static int parse(const char *text, AgentConf *c, char err[static 512]) {
    json_error_t je;
    json_t *doc = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    int r;
    if (!doc)
        fail_msg("test JSON does not parse: %s: %s", je.text, text);
    r = agent_conf_parse(doc, c, err);
    json_decref(doc);
    return r;
}

static void expect_error(const char *text, const char *needle) {
    AgentConf c = {};
    char err[512] = "";
    int r = parse(text, &c, err);
    if (r != -EINVAL || !strstr(err, needle))
        fail_msg("expected -EINVAL with \"%s\", got %d \"%s\" for %s", needle, r, err, text);
    assert_null(c.secrets);
}

static void test_defaults_and_inheritance(void **state) {
    AgentConf c = {};
    char err[512] = "";
    (void)state;
    assert_int_equal(parse("{" BASE ",\"secrets\":[{\"key\":\"kms/a\",\"secret_id\":\"a\"},"
                           "{\"key\":\"kms/b.c:d@e-f\",\"secret_id\":\"b\",\"prefetch\":true,"
                           "\"volume_uuid\":\"0F8FAD5B-D9CB-469F-A165-70867728950E\","
                           "\"kms\":{\"url\":\"http://127.0.0.1:8\"}}]}",
                           &c, err),
                     0);
    assert_int_equal(c.deadline_s, AGENT_DEFAULT_DEADLINE_S);
    assert_int_equal(c.initial_ms, AGENT_DEFAULT_INITIAL_MS);
    assert_int_equal(c.max_ms, AGENT_DEFAULT_MAX_MS);
    assert_int_equal(c.refresh_before_s, AGENT_DEFAULT_REFRESH_BEFORE_S);
    assert_null(c.vhsm_socket);
    assert_int_equal(c.n_secrets, 2);
    assert_string_equal(c.secrets[0].key, "kms/a");
    assert_false(c.secrets[0].prefetch);
    assert_null(c.secrets[0].volume_uuid);
    assert_string_equal(c.secrets[0].attestd.url, "https://a.example");
    assert_string_equal(c.secrets[0].attestd.ca, "/etc/ca.pem");
    assert_string_equal(c.secrets[0].kms.url, "https://k.example");
    assert_null(c.secrets[0].kms.ca);
    assert_true(c.secrets[1].prefetch);
    assert_string_equal(c.secrets[1].kms.url, "http://127.0.0.1:8"); /* its own */
    assert_string_equal(c.secrets[1].attestd.url, "https://a.example");
    assert_string_equal(c.secrets[1].volume_uuid, "0F8FAD5B-D9CB-469F-A165-70867728950E");
    agent_conf_clear(&c);
    assert_null(c.secrets);

    /* No top-level services: every secret brings its own. */
    assert_int_equal(parse("{\"retry\":{\"deadline_s\":1,\"initial_ms\":5,\"max_ms\":5},"
                           "\"refresh_before_s\":0,\"vhsm_socket\":\"/run/x.sock\","
                           "\"secrets\":[{\"key\":\"kms/a\",\"secret_id\":\"a\",\"attestd\":" SVC
                           ",\"kms\":" SVC "}]}",
                           &c, err),
                     0);
    assert_int_equal(c.deadline_s, 1);
    assert_int_equal(c.initial_ms, 5);
    assert_int_equal(c.max_ms, 5);
    assert_int_equal(c.refresh_before_s, 0);
    assert_string_equal(c.vhsm_socket, "/run/x.sock");
    agent_conf_clear(&c);
}

static void test_refusals(void **state) {
    (void)state;
    expect_error("[]", "must be a JSON object");
    expect_error("{" BASE ",\"secrets\":[{\"key\":\"kms/a\",\"secret_id\":\"a\"}],\"x\":1}",
                 "unknown member \"x\"");
    expect_error("{" BASE ",\"secrets\":[{\"key\":\"kms/a\",\"secret_id\":\"a\",\"y\":1}]}",
                 "secrets[0]: unknown member \"y\"");
    expect_error("{\"attestd\":{\"url\":\"https://a\",\"z\":1},\"secrets\":[]}",
                 "attestd: unknown member \"z\"");
    expect_error("{" BASE ",\"retry\":{\"tries\":3},\"secrets\":[]}",
                 "retry: unknown member \"tries\"");
    expect_error("{" BASE ",\"secrets\":[]}", "\"secrets\" must be a non-empty array");
    expect_error("{" BASE "}", "\"secrets\" must be a non-empty array");
    expect_error("{" BASE ",\"secrets\":[{\"key\":\"kms/a\",\"secret_id\":\"a\"},"
                 "{\"key\":\"kms/a\",\"secret_id\":\"b\"}]}",
                 "secrets[1]: key 'kms/a' is configured twice");
    expect_error("{" BASE ",\"secrets\":[{\"key\":\"1000/a\",\"secret_id\":\"a\"}]}",
                 "not a key name in kms/");
    expect_error("{" BASE ",\"secrets\":[{\"key\":\"kms/.a\",\"secret_id\":\"a\"}]}",
                 "not a key name in kms/");
    expect_error("{" BASE ",\"secrets\":[{\"key\":\"kms/a b\",\"secret_id\":\"a\"}]}",
                 "not a key name in kms/");
    expect_error("{" BASE ",\"secrets\":[{\"key\":\"kms/\",\"secret_id\":\"a\"}]}",
                 "not a key name in kms/");
    expect_error("{" BASE ",\"secrets\":[{\"key\":\"kms/a\",\"secret_id\":\"A\"}]}",
                 "not a kmsd secret id");
    expect_error("{" BASE ",\"secrets\":[{\"key\":\"kms/a\"}]}", "\"secret_id\" is required");
    expect_error("{" BASE ",\"secrets\":[{\"key\":\"kms/a\",\"secret_id\":\"a\","
                 "\"volume_uuid\":\"0f8fad5b-d9cb-469f-a165-70867728950x\"}]}",
                 "not a UUID");
    expect_error("{" BASE ",\"secrets\":[{\"key\":\"kms/a\",\"secret_id\":\"a\","
                 "\"prefetch\":1}]}",
                 "\"prefetch\" must be true or false");
    expect_error("{\"kms\":" SVC ",\"secrets\":[{\"key\":\"kms/a\",\"secret_id\":\"a\"}]}",
                 "no \"attestd\"");
    expect_error("{\"attestd\":" SVC ",\"secrets\":[{\"key\":\"kms/a\",\"secret_id\":\"a\"}]}",
                 "no \"kms\"");
    expect_error("{\"attestd\":{\"url\":\"ftp://a\"},\"secrets\":[]}", "https:// URL");
    expect_error("{\"attestd\":{\"ca\":\"/x\"},\"secrets\":[]}", "\"url\" is required");
    expect_error("{\"attestd\":{\"url\":\"https://a\\nb\"},\"secrets\":[]}", "control character");
    expect_error("{\"attestd\":{\"url\":\"\"},\"secrets\":[]}", "1 to 2048 characters");
    expect_error("{" BASE ",\"retry\":{\"deadline_s\":0},\"secrets\":[]}",
                 "\"deadline_s\" must be 1 to 3600");
    expect_error("{" BASE ",\"retry\":{\"deadline_s\":\"5\"},\"secrets\":[]}",
                 "\"deadline_s\" must be an integer");
    expect_error("{" BASE ",\"retry\":{\"initial_ms\":500,\"max_ms\":100},\"secrets\":[]}",
                 "below \"initial_ms\"");
    expect_error("{" BASE ",\"refresh_before_s\":-1,\"secrets\":[]}",
                 "\"refresh_before_s\" must be 0 to 86400");
    expect_error("{" BASE ",\"vhsm_socket\":5,\"secrets\":[]}", "must be a string");
}

static void test_limits(void **state) {
    json_t *doc = json_object(), *arr = json_array();
    AgentConf c = {};
    char err[512] = "", key[32];
    (void)state;
    assert_int_equal(json_object_set_new(doc, "attestd", json_pack("{ss}", "url", "https://a")), 0);
    assert_int_equal(json_object_set_new(doc, "kms", json_pack("{ss}", "url", "https://k")), 0);
    for (int i = 0; i < AGENT_MAX_SECRETS + 1; i++) {
        snprintf(key, sizeof key, "kms/k%d", i);
        assert_int_equal(
            json_array_append_new(arr, json_pack("{ss ss}", "key", key, "secret_id", "s")), 0);
    }
    assert_int_equal(json_object_set(doc, "secrets", arr), 0);
    assert_int_equal(agent_conf_parse(doc, &c, err), -EINVAL);
    assert_non_null(strstr(err, "at most 256"));
    assert_int_equal(json_array_remove(arr, 0), 0);
    assert_int_equal(agent_conf_parse(doc, &c, err), 0);
    assert_int_equal(c.n_secrets, AGENT_MAX_SECRETS);
    agent_conf_clear(&c);
    json_decref(arr);
    json_decref(doc);
}

static void test_example(void **state) {
    AgentConf c = {};
    char err[512] = "";
    (void)state;
    if (!example_path)
        skip();
    if (agent_conf_load(example_path, &c, err) != 0)
        fail_msg("%s: %s", example_path, err);
    assert_true(c.n_secrets >= 1);
    agent_conf_clear(&c);
    assert_int_equal(agent_conf_load("/nonexistent/agent.json", &c, err), -EINVAL);
}

int main(int argc, char **argv) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_and_inheritance),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_example),
    };
    example_path = argc > 1 ? argv[1] : NULL;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
