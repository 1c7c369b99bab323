/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Admin authentication by bearer token (a real HTTP server on 127.0.0.1 and the libcurl client):
 * the right token passes, a wrong one, a prefix of it, one with an extra character or none do
 * not; the token file must be 0600 and hold 32..1024 printable characters.
 */
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

#include "core/macro.h"
#include "kmsd/auth.h"
#include "web/client.h"
#include "web/server.h"

static char tmpdir[] = "/tmp/nt-kmsd-auth-XXXXXX";
#define TOKEN "0123456789abcdefghijklmnopqrstuvwxyzABCDEF_-"

static char *write_file(const char *name, const char *content, mode_t mode) {
    char *p = NULL;
    int fd;
    assert_true(asprintf(&p, "%s/%s", tmpdir, name) > 0);
    (void)unlink(p);
    fd = open(p, O_CREAT | O_WRONLY | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
    close(fd);
    assert_int_equal(chmod(p, mode), 0);
    return p;
}

static int h_admin(void *userdata, const NtWebRequest *req, NtWebReply *reply) {
    char actor[KMSD_ACTOR_MAX], reason[KMSD_AUTH_REASON_MAX];
    int r = kmsd_auth_admin(userdata, req, actor, reason);
    return nt_web_reply_json(reply, r == 0 ? 200 : 401,
                             json_pack("{s:s, s:s}", "actor", actor, "reason", reason));
}

/* GET /admin with the bearer token (NULL: none): the status, the actor in *ret_actor. */
static long get(NtWebServer *s, const char *token, char **ret_actor) {
    char url[64];
    NtHttpOptions o = {.bearer_token = token};
    NtHttpResponse resp;
    json_t *j;
    long st;

    snprintf(url, sizeof url, "http://127.0.0.1:%u/admin", nt_web_server_port(s));
    assert_int_equal(nt_http_request(&o, "GET", url, NULL, NULL, 0, &resp), 0);
    st = resp.status;
    j = json_loadb((char *)resp.body, resp.body_len, 0, NULL);
    assert_non_null(j);
    *ret_actor = strdup(json_string_value(json_object_get(j, "actor")));
    json_decref(j);
    nt_http_response_clear(&resp);
    return st;
}

static void test_bearer(void **state) {
    _cleanup_free_ char *file = write_file("token", TOKEN "\n", 0600);
    _cleanup_(kmsd_auth_freep) KmsdAuth *a = NULL;
    _cleanup_(nt_web_server_freep) NtWebServer *s = NULL;
    NtWebConfig cfg = {.listen = "127.0.0.1:0", .plain_http = true, .threads = 2};
    char *err = NULL, *actor = NULL;

    assert_int_equal(kmsd_auth_new(file, false, NULL, 0, &a, &err), 0);
    assert_int_equal(nt_web_server_new(&cfg, &s, &err), 0);
    assert_int_equal(nt_web_server_route(s, "GET", "/admin", "admin", h_admin, a), 0);
    assert_int_equal(nt_web_server_start(s, &err), 0);

    assert_int_equal(get(s, TOKEN, &actor), 200);
    assert_string_equal(actor, "admin:bearer");
    free(actor);
    static const char *const wrong[] = {
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEF_",   /* a prefix */
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEF_-x", /* longer */
        "1123456789abcdefghijklmnopqrstuvwxyzABCDEF_-",  /* first byte */
        "x",
    };
    for (size_t i = 0; i < ELEMENTSOF(wrong); i++) {
        assert_int_equal(get(s, wrong[i], &actor), 401);
        assert_string_equal(actor, "bearer:wrong");
        free(actor);
    }
    assert_int_equal(get(s, NULL, &actor), 401);
    assert_string_equal(actor, "anonymous");
    free(actor);
    /* No client CA configured: certificates play no part. */
}

static void test_token_file(void **state) {
    KmsdAuth *a = NULL;
    char *err = NULL;
    _cleanup_free_ char *loose = write_file("loose", TOKEN, 0640);
    _cleanup_free_ char *shortf = write_file("short", "abc\n", 0600);
    _cleanup_free_ char *spaces =
        write_file("spaces", "0123456789 abcdefghijklmnopqrstuvwxyz", 0600);

    assert_int_equal(kmsd_auth_new(loose, false, NULL, 0, &a, &err), -EPERM);
    assert_non_null(strstr(err, "0600"));
    free(err);
    err = NULL;
    assert_int_equal(kmsd_auth_new(shortf, false, NULL, 0, &a, &err), -EBADMSG);
    free(err);
    err = NULL;
    assert_int_equal(kmsd_auth_new(spaces, false, NULL, 0, &a, &err), -EBADMSG);
    assert_non_null(strstr(err, "printable"));
    free(err);
    err = NULL;
    assert_int_equal(kmsd_auth_new("/nonexistent/token", false, NULL, 0, &a, &err), -ENOENT);
    free(err);
    assert_null(a);
}

static int setup(void **state) {
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bearer),
        cmocka_unit_test(test_token_file),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
