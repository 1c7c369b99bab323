/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The HTTP server and client against each other on 127.0.0.1 (port 0): routing, errors, limits,
 * TLS (a CA and server certificate made with the openssl CLI), metrics, and a flood of slowloris
 * and garbage connections that must not delay a valid request.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/macro.h"
#include "web/client.h"
#include "web/metrics.h"
#include "web/server.h"

static char tmpdir[] = "/tmp/nt-web-test-XXXXXX";

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* --- handlers --- */

static int h_hello(void *userdata, const NtWebRequest *req, NtWebReply *reply) {
    const char *name = nt_web_request_query(req, "name");
    const char *hdr = nt_web_request_header(req, "x-test");
    json_t *j = json_pack("{s:s, s:s, s:s}", "hello", name ? name : "world", "header",
                          hdr ? hdr : "", "client", req->client_addr);
    assert_non_null(j);
    return nt_web_reply_json(reply, 200, j);
}

static int h_echo(void *userdata, const NtWebRequest *req, NtWebReply *reply) {
    json_t *j = NULL;
    char err[200];
    int r = nt_web_request_json(req, &j, err);
    if (r < 0)
        return nt_web_reply_error(reply, 400, err, "body", NULL, NULL);
    reply->result = "echoed";
    assert_int_equal(req->body[req->body_len], 0);
    return nt_web_reply_json(reply, 200,
                             json_pack("{s:o, s:I}", "got", j, "len", (json_int_t)req->body_len));
}

static int h_fail(void *userdata, const NtWebRequest *req, NtWebReply *reply) {
    return -EIO;
}

static int h_big(void *userdata, const NtWebRequest *req, NtWebReply *reply) {
    const char *n_s = nt_web_request_query(req, "n");
    size_t n = n_s ? strtoul(n_s, NULL, 10) : 10;
    _cleanup_free_ char *s = malloc(n + 1);
    assert_non_null(s);
    memset(s, 'x', n);
    s[n] = 0;
    return nt_web_reply_text(reply, 200, "text/plain", s);
}

static int h_busy(void *userdata, const NtWebRequest *req, NtWebReply *reply) {
    const char *ra = nt_web_request_query(req, "ra");
    int r = nt_web_reply_error(reply, 503, "busy", NULL, NULL, NULL);
    if (r < 0)
        return r;
    return nt_web_reply_header(reply, "Retry-After", ra ? ra : "7");
}

static unsigned slow_started; /* handlers of /slow entered (atomic) */

static int h_slow(void *userdata, const NtWebRequest *req, NtWebReply *reply) {
    const char *n_s = nt_web_request_query(req, "n");
    __atomic_add_fetch(&slow_started, 1, __ATOMIC_SEQ_CST);
    usleep(1500 * 1000);
    if (!n_s)
        return nt_web_reply_text(reply, 200, NULL, "slow");
    /* A reply large enough that writing it takes MHD several rounds. */
    size_t n = strtoul(n_s, NULL, 10);
    _cleanup_free_ char *body = malloc(n + 1);
    assert_non_null(body);
    memset(body, 's', n);
    body[n] = 0;
    return nt_web_reply_text(reply, 200, "text/plain", body);
}

/* The path (prefix routes) and the client certificate's subject or the error. */
static int h_whoami(void *userdata, const NtWebRequest *req, NtWebReply *reply) {
    char subject[256];
    int r = nt_web_request_client_cert(req, subject, sizeof(subject));
    return nt_web_reply_json(
        reply, 200,
        json_pack("{s:s, s:s, s:i}", "path", req->path, "subject", r == 0 ? subject : "", "r", r));
}

static int h_auth(void *userdata, const NtWebRequest *req, NtWebReply *reply) {
    const char *a = nt_web_request_header(req, "Authorization");
    return nt_web_reply_json(reply, 200, json_pack("{s:s}", "authorization", a ? a : ""));
}

static NtWebServer *server_start(NtWebConfig *cfg) {
    NtWebServer *s = NULL;
    _cleanup_free_ char *error = NULL;
    int r = nt_web_server_new(cfg, &s, &error);
    if (r < 0)
        fail_msg("nt_web_server_new: %s", error ? error : strerror(-r));
    assert_int_equal(nt_web_server_route(s, "GET", "/hello", "hello", h_hello, NULL), 0);
    assert_int_equal(nt_web_server_route(s, "POST", "/hello", "hello", h_hello, NULL), 0);
    assert_int_equal(nt_web_server_route(s, "GET", "/hello", "hello", h_hello, NULL), -EEXIST);
    assert_int_equal(nt_web_server_route(s, "POST", "/echo", "echo", h_echo, NULL), 0);
    assert_int_equal(nt_web_server_route(s, "GET", "/fail", "fail", h_fail, NULL), 0);
    assert_int_equal(nt_web_server_route(s, "GET", "/big", "big", h_big, NULL), 0);
    assert_int_equal(nt_web_server_route(s, "GET", "/busy", "busy", h_busy, NULL), 0);
    assert_int_equal(nt_web_server_route(s, "GET", "/slow", "slow", h_slow, NULL), 0);
    assert_int_equal(nt_web_server_route(s, "GET", "/who", "who", h_whoami, NULL), 0);
    assert_int_equal(nt_web_server_route(s, "GET", "/auth", "auth", h_auth, NULL), 0);
    assert_int_equal(nt_web_server_route(s, "GET", "/items/*", "items", h_whoami, NULL), 0);
    assert_int_equal(nt_web_server_route(s, "DELETE", "/items/*", "items", h_whoami, NULL), 0);
    assert_int_equal(nt_web_server_route(s, "GET", "/items/exact", "exact", h_hello, NULL), 0);
    r = nt_web_server_start(s, &error);
    if (r < 0)
        fail_msg("nt_web_server_start: %s", error ? error : strerror(-r));
    assert_int_not_equal(nt_web_server_port(s), 0);
    assert_int_equal(nt_web_server_route(s, "GET", "/late", "late", h_hello, NULL), -EBUSY);
    return s;
}

static NtWebServer *plain_server(void) {
    NtWebConfig cfg = {.listen = "127.0.0.1:0", .plain_http = true, .threads = 2};
    return server_start(&cfg);
}

static char *url(NtWebServer *s, const char *scheme, const char *path) {
    char *u;
    assert_true(asprintf(&u, "%s://127.0.0.1:%u%s", scheme, nt_web_server_port(s), path) > 0);
    return u;
}

/* --- raw sockets --- */

static int raw_connect(uint16_t port) {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

/* Reads what arrives within timeout_ms or until EOF. */
static size_t raw_read(int fd, char *buf, size_t size, int timeout_ms) {
    size_t len = 0;
    uint64_t end = now_ms() + (uint64_t)timeout_ms;
    while (len + 1 < size) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int left = (int)(end > now_ms() ? end - now_ms() : 0);
        if (poll(&p, 1, left) <= 0)
            break;
        ssize_t n = recv(fd, buf + len, size - len - 1, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    buf[len] = 0;
    return len;
}

static char *raw_exchange(uint16_t port, const char *request) {
    _cleanup_close_ int fd = raw_connect(port);
    char *buf = malloc(65536);
    assert_non_null(buf);
    assert_int_equal(send(fd, request, strlen(request), MSG_NOSIGNAL), (ssize_t)strlen(request));
    raw_read(fd, buf, 65536, 3000);
    return buf;
}

/* --- tests --- */

static void test_routes(void **state) {
    _cleanup_(nt_web_server_freep) NtWebServer *s = plain_server();
    _cleanup_free_ char *u = url(s, "http", "/hello?name=n%20t"), *raw = NULL;
    NtHttpResponse resp;
    json_auto_t *j = NULL;

    assert_int_equal(nt_http_request(NULL, "GET", u, NULL, NULL, 0, &resp), 0);
    assert_int_equal(resp.status, 200);
    assert_string_equal(resp.content_type, "application/json");
    j = json_loadb((char *)resp.body, resp.body_len, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "hello")), "n t");
    assert_string_equal(json_string_value(json_object_get(j, "client")), "127.0.0.1");
    nt_http_response_clear(&resp);

    /* Headers, 404, 405 with Allow; every reply has Content-Type and Cache-Control: no-store. */
    raw =
        raw_exchange(nt_web_server_port(s),
                     "GET /hello HTTP/1.1\r\nHost: x\r\nX-Test: hdr\r\nConnection: close\r\n\r\n");
    assert_non_null(strstr(raw, "HTTP/1.1 200"));
    assert_non_null(strstr(raw, "\"header\":\"hdr\""));
    assert_non_null(strcasestr(raw, "\r\nCache-Control: no-store\r\n"));
    free(raw);
    raw = raw_exchange(nt_web_server_port(s),
                       "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_non_null(strstr(raw, "HTTP/1.1 404"));
    assert_non_null(strcasestr(raw, "\r\nContent-Type: application/json\r\n"));
    assert_non_null(strcasestr(raw, "\r\nCache-Control: no-store\r\n"));
    assert_non_null(strstr(raw, "\r\n\r\n{\"error\":\"not found\"}"));
    free(raw);
    raw = raw_exchange(nt_web_server_port(s),
                       "DELETE /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_non_null(strstr(raw, "HTTP/1.1 405"));
    assert_non_null(strcasestr(raw, "\r\nAllow: GET, POST\r\n"));
    assert_non_null(strcasestr(raw, "\r\nContent-Type: application/json\r\n"));
    assert_non_null(strcasestr(raw, "\r\nCache-Control: no-store\r\n"));
    assert_non_null(strstr(raw, "{\"error\":\"method not allowed\"}"));
    free(raw);
    raw = raw_exchange(nt_web_server_port(s),
                       "GET /big?n=3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_non_null(strcasestr(raw, "\r\nContent-Type: text/plain\r\n"));
    assert_non_null(strcasestr(raw, "\r\nCache-Control: no-store\r\n"));
    assert_non_null(strstr(raw, "\r\n\r\nxxx"));

    /* A failing handler: 500 with a JSON error, not a bare 500. */
    free(u);
    u = url(s, "http", "/fail");
    assert_int_equal(nt_http_request(NULL, "GET", u, NULL, NULL, 0, &resp), 0);
    assert_int_equal(resp.status, 500);
    assert_string_equal((char *)resp.body, "{\"error\":\"internal error\"}");
    nt_http_response_clear(&resp);
}

/* GET path; the reply's JSON member "key" as a string (malloc'd), or NULL; *ret_status. */
static char *get_member(const NtHttpOptions *o, NtWebServer *s, const char *scheme,
                        const char *path, const char *key, long *ret_status, int *ret_r) {
    _cleanup_free_ char *u = url(s, scheme, path);
    NtHttpResponse resp;
    json_auto_t *j = NULL;
    char *v = NULL;

    if (nt_http_request(o, "GET", u, NULL, NULL, 0, &resp) < 0)
        fail_msg("GET %s: %s", u, resp.error);
    *ret_status = resp.status;
    j = resp.body ? json_loadb((char *)resp.body, resp.body_len, 0, NULL) : NULL;
    if (json_is_string(json_object_get(j, key)))
        v = strdup(json_string_value(json_object_get(j, key)));
    if (ret_r)
        *ret_r = (int)json_integer_value(json_object_get(j, "r"));
    nt_http_response_clear(&resp);
    return v;
}

static void test_prefix_routes(void **state) {
    _cleanup_(nt_web_server_freep) NtWebServer *s = plain_server();
    long st;
    int r;
    char *v;

    v = get_member(NULL, s, "http", "/items/a1/b", "path", &st, &r);
    assert_int_equal(st, 200);
    assert_string_equal(v, "/items/a1/b");
    free(v);
    /* No client certificates over plain HTTP, and none configured. */
    assert_int_equal(r, -EOPNOTSUPP);
    /* An exact route wins over the prefix. */
    v = get_member(NULL, s, "http", "/items/exact", "hello", &st, NULL);
    assert_int_equal(st, 200);
    assert_string_equal(v, "world");
    free(v);
    /* The prefix itself, or less, is no match. */
    free(get_member(NULL, s, "http", "/items/", "path", &st, NULL));
    assert_int_equal(st, 404);
    free(get_member(NULL, s, "http", "/items", "path", &st, NULL));
    assert_int_equal(st, 404);
    free(get_member(NULL, s, "http", "/itemsx/y", "path", &st, NULL));
    assert_int_equal(st, 404);
    /* The client's bearer token option. */
    NtHttpOptions bo = {.bearer_token = "tok.en-1"};
    v = get_member(&bo, s, "http", "/auth", "authorization", &st, NULL);
    assert_string_equal(v, "Bearer tok.en-1");
    free(v);
    v = get_member(NULL, s, "http", "/auth", "authorization", &st, NULL);
    assert_string_equal(v, "");
    free(v);
    NtHttpOptions bad = {.bearer_token = "a\r\nX-Evil: 1"};
    NtHttpResponse resp;
    _cleanup_free_ char *ua = url(s, "http", "/auth");
    assert_int_equal(nt_http_request(&bad, "GET", ua, NULL, NULL, 0, &resp), -EINVAL);
    nt_http_response_clear(&resp);
    /* Methods of a prefix route: 405 with Allow. */
    _cleanup_free_ char *raw = raw_exchange(
        nt_web_server_port(s), "POST /items/z HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_non_null(strstr(raw, "HTTP/1.1 405"));
    assert_non_null(strcasestr(raw, "\r\nAllow: GET, DELETE\r\n"));
}

static void post_echo(NtWebServer *s, const char *body, long want_status, const char *want_error) {
    _cleanup_free_ char *u = url(s, "http", "/echo");
    NtHttpResponse resp;
    json_auto_t *j = NULL;

    assert_int_equal(
        nt_http_request(NULL, "POST", u, "application/json", body, strlen(body), &resp), 0);
    assert_int_equal(resp.status, want_status);
    assert_string_equal(resp.content_type, "application/json");
    j = json_loadb((char *)resp.body, resp.body_len, 0, NULL);
    assert_non_null(j);
    if (want_error) {
        const char *e = json_string_value(json_object_get(j, "error"));
        assert_non_null(e);
        if (!strstr(e, want_error))
            fail_msg("error '%s' lacks '%s'", e, want_error);
        assert_string_equal(json_string_value(json_object_get(j, "check")), "body");
    }
    nt_http_response_clear(&resp);
}

static void test_json(void **state) {
    _cleanup_(nt_web_server_freep) NtWebServer *s = plain_server();
    _cleanup_free_ char *deep = malloc(20001);
    long status = 0;
    json_auto_t *reply = NULL, *req = json_pack("{s:i}", "a", 1);
    char err[256];

    post_echo(s, "{\"a\":[1,2,{\"b\":\"[[[[\"}]}", 200, NULL);
    post_echo(s, "{\"a\":", 400, "body is not JSON: line 1");
    post_echo(s, "[1,2]", 400, "body must be a JSON object");
    post_echo(s, "{\"a\":1,\"a\":2}", 400, "body is not JSON");
    post_echo(s, "", 400, "empty");
    post_echo(s, "\x01\xff garbage", 400, "body is not JSON");
    /* Deep nesting is refused before jansson recurses into it. */
    assert_non_null(deep);
    /* Valid JSON 1000 levels deep (jansson itself would accept it: its limit is 2048). */
    strcpy(deep, "{\"a\":");
    memset(deep + 5, '[', 1000);
    memset(deep + 1005, ']', 1000);
    strcpy(deep + 2005, "}");
    post_echo(s, deep, 400, "nested too deeply");
    char ok_deep[2 * NT_WEB_JSON_MAX_DEPTH + 16] = "{\"a\":";
    for (int i = 1; i < NT_WEB_JSON_MAX_DEPTH; i++)
        strcat(ok_deep, "[");
    for (int i = 1; i < NT_WEB_JSON_MAX_DEPTH; i++)
        strcat(ok_deep, "]");
    strcat(ok_deep, "}");
    post_echo(s, ok_deep, 200, NULL);

    /* nt_http_post_json: the reply object, error replies too. */
    _cleanup_free_ char *u = url(s, "http", "/echo"), *u404 = url(s, "http", "/nope"),
                        *ubig = url(s, "http", "/big");
    assert_int_equal(nt_http_post_json(NULL, u, req, &status, &reply, err), 0);
    assert_int_equal(status, 200);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(reply, "got"), "a")), 1);
    json_decref(TAKE_PTR(reply));
    assert_int_equal(nt_http_post_json(NULL, u404, req, &status, &reply, err), 0);
    assert_int_equal(status, 404);
    assert_string_equal(json_string_value(json_object_get(reply, "error")), "not found");
    json_decref(TAKE_PTR(reply));
    /* 405 on a GET-only path; a non-JSON reply is -EBADMSG with the status. */
    assert_int_equal(nt_http_post_json(NULL, ubig, req, &status, &reply, err), 0);
    assert_int_equal(status, 405);
    json_decref(TAKE_PTR(reply));
}

static void test_body_cap(void **state) {
    NtWebConfig cfg = {.listen = "127.0.0.1:0", .plain_http = true, .max_body = 1024};
    _cleanup_(nt_web_server_freep) NtWebServer *s = server_start(&cfg);
    _cleanup_free_ char *u = url(s, "http", "/echo"), *big = malloc(4096), *raw = NULL;
    NtHttpResponse resp;
    char buf[4096];

    memset(big, ' ', 4096);
    big[0] = '{';
    big[1023] = '}';
    /* Exactly max_body passes. */
    assert_int_equal(nt_http_request(NULL, "POST", u, "application/json", big, 1024, &resp), 0);
    assert_int_equal(resp.status, 200);
    nt_http_response_clear(&resp);
    big[1023] = ' ';
    big[1024] = '}';
    assert_int_equal(nt_http_request(NULL, "POST", u, "application/json", big, 1025, &resp), 0);
    assert_int_equal(resp.status, 413);
    assert_string_equal((char *)resp.body, "{\"error\":\"request body too large\"}");
    nt_http_response_clear(&resp);

    /* Content-Length announces 100 MB and nothing follows: answered at once. */
    uint64_t t0 = now_ms();
    raw = raw_exchange(nt_web_server_port(s), "POST /echo HTTP/1.1\r\nHost: x\r\n"
                                              "Content-Length: 100000000\r\n\r\n{");
    assert_non_null(strstr(raw, "HTTP/1.1 413"));
    assert_non_null(strcasestr(raw, "\r\nCache-Control: no-store\r\n"));
    assert_true(now_ms() - t0 < 2000);
    free(TAKE_PTR(raw));
    raw = raw_exchange(nt_web_server_port(s), "POST /echo HTTP/1.1\r\nHost: x\r\n"
                                              "Content-Length: 99999999999999999999999\r\n\r\n");
    assert_non_null(strstr(raw, "HTTP/1.1 413"));

    /* Chunked, 8 KiB in 4 KiB chunks: not stored, answered 413 once it is complete. */
    {
        _cleanup_close_ int fd = raw_connect(nt_web_server_port(s));
        const char *head = "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
        char chunk[4096 + 16];
        int n = snprintf(chunk, sizeof(chunk), "1000\r\n");
        memset(chunk + n, 'a', 4096);
        memcpy(chunk + n + 4096, "\r\n", 2);
        assert_true(send(fd, head, strlen(head), MSG_NOSIGNAL) > 0);
        for (int i = 0; i < 2; i++)
            assert_true(send(fd, chunk, (size_t)n + 4096 + 2, MSG_NOSIGNAL) > 0);
        assert_true(send(fd, "0\r\n\r\n", 5, MSG_NOSIGNAL) == 5);
        raw_read(fd, buf, sizeof(buf), 3000);
        assert_non_null(strstr(buf, "HTTP/1.1 413"));
        assert_non_null(strcasestr(buf, "\r\nCache-Control: no-store\r\n"));
        assert_non_null(strstr(buf, "{\"error\":\"request body too large\"}"));
    }
    /* Chunked without end: the server stops reading (closes) after about 1 MiB, it does not
     * take in 100 MiB. */
    {
        _cleanup_close_ int fd = raw_connect(nt_web_server_port(s));
        const char *head = "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
        char chunk[4096 + 16];
        int n = snprintf(chunk, sizeof(chunk), "1000\r\n");
        size_t sent = 0;
        bool closed = false;
        memset(chunk + n, 'a', 4096);
        memcpy(chunk + n + 4096, "\r\n", 2);
        assert_true(send(fd, head, strlen(head), MSG_NOSIGNAL) > 0);
        uint64_t t1 = now_ms();
        while (sent < 100 * 1024 * 1024 && now_ms() - t1 < 10000) {
            if (send(fd, chunk, (size_t)n + 4096 + 2, MSG_NOSIGNAL | MSG_DONTWAIT) >= 0) {
                sent += 4096;
                continue;
            }
            if (errno != EAGAIN)
                break; /* EPIPE, ECONNRESET: closed */
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            if (poll(&p, 1, 1000) <= 0)
                break; /* the server does not read on */
            if (p.revents & (POLLERR | POLLHUP))
                break;
        }
        /* The server closed: EOF or a reset, not a stall. */
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 3000) > 0) {
            ssize_t r = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
            closed = r == 0 || (r < 0 && errno == ECONNRESET);
        }
        assert_true(closed);
        assert_true(sent < 8 * 1024 * 1024); /* 1 MiB read, the rest sits in socket buffers */
    }
}

static void test_rate_limit(void **state) {
    _cleanup_(nt_metrics_freep) NtMetrics *m = NULL;
    assert_int_equal(nt_metrics_new(&m), 0);
    NtWebConfig cfg = {.listen = "127.0.0.1:0",
                       .plain_http = true,
                       .rate_per_s = 0.5,
                       .rate_burst = 3,
                       .metrics = m,
                       .metrics_prefix = "t"};
    _cleanup_(nt_web_server_freep) NtWebServer *s = server_start(&cfg);
    _cleanup_free_ char *u = url(s, "http", "/hello");
    NtHttpResponse resp;

    for (int i = 0; i < 3; i++) {
        assert_int_equal(nt_http_request(NULL, "GET", u, NULL, NULL, 0, &resp), 0);
        assert_int_equal(resp.status, 200);
        assert_int_equal(resp.retry_after_s, -1);
        nt_http_response_clear(&resp);
    }
    assert_int_equal(nt_http_request(NULL, "GET", u, NULL, NULL, 0, &resp), 0);
    assert_int_equal(resp.status, 429);
    assert_string_equal(resp.content_type, "application/json");
    assert_string_equal((char *)resp.body, "{\"error\":\"too many requests\"}");
    assert_true(resp.retry_after_s >= 1 && resp.retry_after_s <= 2);
    nt_http_response_clear(&resp);
    assert_int_equal(nt_metrics_get(m, "t_http_requests_total",
                                    "endpoint=\"rate_limited\",result=\"rate_limited\""),
                     1);
    assert_int_equal(nt_metrics_get(m, "t_http_requests_total", "endpoint=\"hello\",result=\"ok\""),
                     3);
}

static void test_server_metrics(void **state) {
    _cleanup_(nt_metrics_freep) NtMetrics *m = NULL;
    _cleanup_free_ char *text = NULL;
    assert_int_equal(nt_metrics_new(&m), 0);
    NtWebConfig cfg = {.listen = "127.0.0.1:0",
                       .plain_http = true,
                       .metrics = m,
                       .metrics_prefix = "nitride_test"};
    _cleanup_(nt_web_server_freep) NtWebServer *s = server_start(&cfg);
    NtHttpResponse resp;

    for (int i = 0; i < 5; i++) {
        _cleanup_free_ char *u = url(s, "http", "/hello");
        assert_int_equal(nt_http_request(NULL, "GET", u, NULL, NULL, 0, &resp), 0);
        nt_http_response_clear(&resp);
    }
    /* Distinct unknown paths share one label set: the path is never a label. */
    for (int i = 0; i < 20; i++) {
        char path[64];
        (void)snprintf(path, sizeof(path), "/evil/%d", i);
        _cleanup_free_ char *u = url(s, "http", path);
        assert_int_equal(nt_http_request(NULL, "GET", u, NULL, NULL, 0, &resp), 0);
        assert_int_equal(resp.status, 404);
        nt_http_response_clear(&resp);
    }
    _cleanup_free_ char *ue = url(s, "http", "/echo");
    assert_int_equal(nt_http_request(NULL, "POST", ue, NULL, "{}", 2, &resp), 0);
    nt_http_response_clear(&resp);
    assert_int_equal(nt_http_request(NULL, "POST", ue, NULL, "{", 1, &resp), 0);
    nt_http_response_clear(&resp);

    assert_int_equal(
        nt_metrics_get(m, "nitride_test_http_requests_total", "endpoint=\"hello\",result=\"ok\""),
        5);
    assert_int_equal(nt_metrics_get(m, "nitride_test_http_requests_total",
                                    "endpoint=\"unknown\",result=\"not_found\""),
                     20);
    /* The handler's own result label wins; the default comes from the status. */
    assert_int_equal(nt_metrics_get(m, "nitride_test_http_requests_total",
                                    "endpoint=\"echo\",result=\"echoed\""),
                     1);
    assert_int_equal(nt_metrics_get(m, "nitride_test_http_requests_total",
                                    "endpoint=\"echo\",result=\"malformed\""),
                     1);
    assert_int_equal(
        nt_metrics_get(m, "nitride_test_http_request_duration_seconds", "endpoint=\"hello\""), 5);
    assert_int_equal(nt_metrics_render(m, &text), 0);
    assert_non_null(strstr(text, "# TYPE nitride_test_http_requests_total counter\n"));
    assert_non_null(
        strstr(text, "\nnitride_test_http_requests_total{endpoint=\"hello\",result=\"ok\"} 5\n"));
    assert_non_null(strstr(text, "# TYPE nitride_test_http_request_duration_seconds histogram\n"));
    assert_non_null(strstr(
        text,
        "\nnitride_test_http_request_duration_seconds_bucket{endpoint=\"hello\",le=\"+Inf\"} 5\n"));
    assert_non_null(
        strstr(text, "\nnitride_test_http_request_duration_seconds_count{endpoint=\"hello\"} 5\n"));
}

static void test_config(void **state) {
    NtWebServer *s = NULL;
    char *error = NULL;
    NtWebConfig cfg = {.listen = "127.0.0.1:0"};

    /* Plain HTTP only when asked for. */
    assert_int_equal(nt_web_server_new(&cfg, &s, &error), -EINVAL);
    assert_null(s);
    assert_non_null(strstr(error, "plain HTTP not explicitly enabled"));
    free(error);
    cfg.tls_cert_file = "/nonexistent.pem";
    assert_int_equal(nt_web_server_new(&cfg, &s, &error), -EINVAL); /* no key */
    free(error);
    cfg.tls_key_file = "/nonexistent.key";
    assert_int_equal(nt_web_server_new(&cfg, &s, &error), -ENOENT);
    free(error);
    const char *bad[] = {"127.0.0.1", "127.0.0.1:99999", "localhost:80",
                         "[::1]80",   "::1:80",          "1.2.3.4:-1",
                         "",          "127.0.0.1:"};
    for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
        NtWebConfig c = {.listen = bad[i], .plain_http = true};
        assert_int_equal(nt_web_server_new(&c, &s, &error), -EINVAL);
        free(error);
    }
    /* Address in use. */
    NtWebConfig c = {.listen = "127.0.0.1:0", .plain_http = true};
    _cleanup_(nt_web_server_freep) NtWebServer *a = server_start(&c), *b = NULL;
    char addr[64];
    (void)snprintf(addr, sizeof(addr), "127.0.0.1:%u", nt_web_server_port(a));
    c.listen = addr;
    assert_int_equal(nt_web_server_new(&c, &b, NULL), 0);
    assert_int_equal(nt_web_server_start(b, &error), -EADDRINUSE);
    free(error);
}

static void test_ipv6(void **state) {
    NtWebConfig cfg = {.listen = "[::1]:0", .plain_http = true, .rate_per_s = 0.1, .rate_burst = 2};
    NtWebServer *s = NULL;
    NtHttpResponse resp;
    char u[64];
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        if (fd >= 0)
            close(fd);
        skip();
    }
    close(fd);
    assert_int_equal(nt_web_server_new(&cfg, &s, NULL), 0);
    assert_int_equal(nt_web_server_route(s, "GET", "/hello", "hello", h_hello, NULL), 0);
    assert_int_equal(nt_web_server_start(s, NULL), 0);
    (void)snprintf(u, sizeof(u), "http://[::1]:%u/hello", nt_web_server_port(s));
    assert_int_equal(nt_http_request(NULL, "GET", u, NULL, NULL, 0, &resp), 0);
    assert_int_equal(resp.status, 200);
    assert_non_null(strstr((char *)resp.body, "\"client\":\"::1\""));
    nt_http_response_clear(&resp);
    /* The bucket of ::1's /64 allows 2 requests. */
    assert_int_equal(nt_http_request(NULL, "GET", u, NULL, NULL, 0, &resp), 0);
    assert_int_equal(resp.status, 200);
    nt_http_response_clear(&resp);
    assert_int_equal(nt_http_request(NULL, "GET", u, NULL, NULL, 0, &resp), 0);
    assert_int_equal(resp.status, 429);
    assert_true(resp.retry_after_s >= 1 && resp.retry_after_s <= 10);
    nt_http_response_clear(&resp);
    nt_web_server_free(s);
}

static int sh(const char *cmd) {
    char full[2048];
    (void)snprintf(full, sizeof(full), "cd %s && (%s) >/dev/null 2>&1", tmpdir, cmd);
    return system(full);
}

static void make_ca(const char *name) {
    char cmd[1024];
    (void)snprintf(cmd, sizeof(cmd),
                   "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
                   "-keyout %s.key -out %s.pem -days 2 -subj /CN=%s "
                   "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=keyCertSign",
                   name, name, name);
    assert_int_equal(sh(cmd), 0);
}

static void test_tls(void **state) {
    char cert[256], key[256], ca[256], other_ca[256];
    NtHttpResponse resp;
    int r;

    if (sh("command -v openssl") != 0)
        skip();
    make_ca("ca");
    make_ca("other");
    assert_int_equal(sh("printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n"
                        "basicConstraints=CA:FALSE\\nextendedKeyUsage=serverAuth\\n' > ext && "
                        "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
                        "-keyout srv.key -out srv.csr -subj /CN=localhost && "
                        "openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
                        "-days 2 -out srv.pem -extfile ext"),
                     0);
    (void)snprintf(cert, sizeof(cert), "%s/srv.pem", tmpdir);
    (void)snprintf(key, sizeof(key), "%s/srv.key", tmpdir);
    (void)snprintf(ca, sizeof(ca), "%s/ca.pem", tmpdir);
    (void)snprintf(other_ca, sizeof(other_ca), "%s/other.pem", tmpdir);

    NtWebConfig cfg = {.listen = "127.0.0.1:0", .tls_cert_file = cert, .tls_key_file = key};
    _cleanup_(nt_web_server_freep) NtWebServer *s = server_start(&cfg);
    _cleanup_free_ char *u = url(s, "https", "/hello"), *uplain = url(s, "http", "/hello");

    NtHttpOptions o = {.ca_file = ca};
    r = nt_http_request(&o, "GET", u, NULL, NULL, 0, &resp);
    if (r < 0)
        fail_msg("TLS request: %s", resp.error);
    assert_int_equal(resp.status, 200);
    assert_non_null(strstr((char *)resp.body, "\"hello\":\"world\""));
    nt_http_response_clear(&resp);

    /* TLS 1.2 and 1.3 only (the client side allows 1.1 here, so only the server refuses). */
    char cmd[256];
    (void)snprintf(cmd, sizeof(cmd),
                   "echo | openssl s_client -%s -cipher DEFAULT@SECLEVEL=0 -connect 127.0.0.1:%u",
                   "tls1_2", nt_web_server_port(s));
    assert_int_equal(sh(cmd), 0);
    (void)snprintf(cmd, sizeof(cmd),
                   "echo | openssl s_client -%s -cipher DEFAULT@SECLEVEL=0 -connect 127.0.0.1:%u",
                   "tls1_1", nt_web_server_port(s));
    assert_int_not_equal(sh(cmd), 0);

    /* A CA that did not sign the server certificate: -EPROTO, with curl's reason. */
    NtHttpOptions wrong = {.ca_file = other_ca};
    assert_int_equal(nt_http_request(&wrong, "GET", u, NULL, NULL, 0, &resp), -EPROTO);
    assert_true(strlen(resp.error) > 0);
    nt_http_response_clear(&resp);
    /* The system store does not know our CA either. */
    assert_int_equal(nt_http_request(NULL, "GET", u, NULL, NULL, 0, &resp), -EPROTO);
    nt_http_response_clear(&resp);
    /* The name is checked: localhost is in the certificate; a certificate from our CA for
     * another name is refused. */
    char ul[64];
    (void)snprintf(ul, sizeof(ul), "https://localhost:%u/hello", nt_web_server_port(s));
    r = nt_http_request(&o, "GET", ul, NULL, NULL, 0, &resp);
    assert_true(r == 0 || r == -ECONNREFUSED); /* localhost may resolve to ::1 only */
    nt_http_response_clear(&resp);
    assert_int_equal(sh("printf 'subjectAltName=DNS:other.example\\n' > ext2 && "
                        "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
                        "-keyout oth.key -out oth.csr -subj /CN=other.example && "
                        "openssl x509 -req -in oth.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
                        "-days 2 -out oth.pem -extfile ext2"),
                     0);
    {
        char c2[256], k2[256];
        (void)snprintf(c2, sizeof(c2), "%s/oth.pem", tmpdir);
        (void)snprintf(k2, sizeof(k2), "%s/oth.key", tmpdir);
        NtWebConfig cfg2 = {.listen = "127.0.0.1:0", .tls_cert_file = c2, .tls_key_file = k2};
        _cleanup_(nt_web_server_freep) NtWebServer *s2 = server_start(&cfg2);
        _cleanup_free_ char *u2 = url(s2, "https", "/hello");
        assert_int_equal(nt_http_request(&o, "GET", u2, NULL, NULL, 0, &resp), -EPROTO);
        nt_http_response_clear(&resp);
    }
    /* Plain HTTP to the TLS port is no HTTP exchange. */
    r = nt_http_request(&o, "GET", uplain, NULL, NULL, 0, &resp);
    assert_true(r < 0 || resp.status >= 400);
    nt_http_response_clear(&resp);

    /* A bad key file fails at start with a message, not later. */
    (void)snprintf(key, sizeof(key), "%s/other.pem", tmpdir);
    NtWebConfig bad = {.listen = "127.0.0.1:0", .tls_cert_file = cert, .tls_key_file = key};
    NtWebServer *b = NULL;
    char *error = NULL;
    assert_int_equal(nt_web_server_new(&bad, &b, NULL), 0);
    assert_int_equal(nt_web_server_start(b, &error), -EIO);
    assert_non_null(error);
    free(error);
    nt_web_server_free(b);
}

static void test_client_certs(void **state) {
    char cert[256], key[256], ca[256], cli[256], clikey[256], oth[256], othkey[256], srvonly[256];
    long st;
    int r;

    if (sh("command -v openssl") != 0)
        skip();
    make_ca("cca");
    make_ca("rogue");
    assert_int_equal(
        sh("printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > sext && "
           "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout s2.key "
           "-out s2.csr -subj /CN=127.0.0.1 && openssl x509 -req -in s2.csr -CA cca.pem "
           "-CAkey cca.key -CAcreateserial -days 2 -out s2.pem -extfile sext && "
           "printf 'extendedKeyUsage=clientAuth\\n' > cext && "
           "printf 'extendedKeyUsage=serverAuth\\n' > soext && "
           "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout adm.key "
           "-out adm.csr -subj '/O=Nitride/CN=admin' && openssl x509 -req -in adm.csr "
           "-CA cca.pem -CAkey cca.key -CAcreateserial -days 2 -out adm.pem -extfile cext && "
           "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout rog.key "
           "-out rog.csr -subj /CN=admin && openssl x509 -req -in rog.csr -CA rogue.pem "
           "-CAkey rogue.key -CAcreateserial -days 2 -out rog.pem -extfile cext && "
           "openssl x509 -req -in rog.csr -CA cca.pem -CAkey cca.key -CAcreateserial -days 2 "
           "-out so.pem -extfile soext"),
        0);
    (void)snprintf(cert, sizeof(cert), "%s/s2.pem", tmpdir);
    (void)snprintf(key, sizeof(key), "%s/s2.key", tmpdir);
    (void)snprintf(ca, sizeof(ca), "%s/cca.pem", tmpdir);
    (void)snprintf(cli, sizeof(cli), "%s/adm.pem", tmpdir);
    (void)snprintf(clikey, sizeof(clikey), "%s/adm.key", tmpdir);
    (void)snprintf(oth, sizeof(oth), "%s/rog.pem", tmpdir);
    (void)snprintf(othkey, sizeof(othkey), "%s/rog.key", tmpdir);
    (void)snprintf(srvonly, sizeof(srvonly), "%s/so.pem", tmpdir);

    NtWebConfig cfg = {.listen = "127.0.0.1:0",
                       .tls_cert_file = cert,
                       .tls_key_file = key,
                       .tls_client_ca_file = ca};
    _cleanup_(nt_web_server_freep) NtWebServer *s = server_start(&cfg);
    char *v;

    /* A certificate from the client CA: its subject. */
    NtHttpOptions o = {.ca_file = ca, .client_cert = cli, .client_key = clikey};
    v = get_member(&o, s, "https", "/who", "subject", &st, &r);
    assert_int_equal(st, 200);
    assert_int_equal(r, 0);
    assert_string_equal(v, "CN=admin,O=Nitride");
    free(v);
    /* No certificate: the handshake still succeeds (requested, not required). */
    NtHttpOptions none = {.ca_file = ca};
    free(get_member(&none, s, "https", "/who", "subject", &st, &r));
    assert_int_equal(st, 200);
    assert_int_equal(r, -ENOENT);
    /* A certificate of another CA with the same subject, and one of the right CA without the
     * clientAuth purpose: refused. */
    NtHttpOptions rogue = {.ca_file = ca, .client_cert = oth, .client_key = othkey};
    free(get_member(&rogue, s, "https", "/who", "subject", &st, &r));
    assert_int_equal(st, 200);
    assert_int_equal(r, -EKEYREJECTED);
    NtHttpOptions so = {.ca_file = ca, .client_cert = srvonly, .client_key = othkey};
    free(get_member(&so, s, "https", "/who", "subject", &st, &r));
    assert_int_equal(st, 200);
    assert_int_equal(r, -EKEYREJECTED);

    /* Configuration: a client CA needs TLS, and must hold a certificate. */
    NtWebServer *b = NULL;
    char *error = NULL;
    NtWebConfig plain = {.listen = "127.0.0.1:0", .plain_http = true, .tls_client_ca_file = ca};
    assert_int_equal(nt_web_server_new(&plain, &b, &error), -EINVAL);
    assert_non_null(strstr(error, "TLS"));
    free(error);
    error = NULL;
    NtWebConfig noca = {.listen = "127.0.0.1:0",
                        .tls_cert_file = cert,
                        .tls_key_file = key,
                        .tls_client_ca_file = key};
    assert_int_equal(nt_web_server_new(&noca, &b, &error), -EBADMSG);
    assert_non_null(strstr(error, "client CA"));
    free(error);
}

static void test_client_errors(void **state) {
    NtHttpResponse resp;
    char u[64];
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof(sa);

    /* A port that was bound and is now closed: refused. */
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    (void)snprintf(u, sizeof(u), "http://127.0.0.1:%u/", ntohs(sa.sin_port));
    assert_int_equal(nt_http_request(NULL, "GET", u, NULL, NULL, 0, &resp), -ECONNREFUSED);
    assert_true(strlen(resp.error) > 0);
    nt_http_response_clear(&resp);
    assert_int_equal(nt_http_request(NULL, "GET", "file:///etc/passwd", NULL, NULL, 0, &resp),
                     -EINVAL);
    nt_http_response_clear(&resp);
    assert_int_equal(nt_http_request(NULL, "GET", "ftp://127.0.0.1/", NULL, NULL, 0, &resp),
                     -EINVAL);
    nt_http_response_clear(&resp);
    assert_int_equal(
        nt_http_request(NULL, "GET", "http://nonexistent.invalid/", NULL, NULL, 0, &resp),
        -EHOSTUNREACH);
    nt_http_response_clear(&resp);

    _cleanup_(nt_web_server_freep) NtWebServer *s = plain_server();
    _cleanup_free_ char *slow = url(s, "http", "/slow"), *big = url(s, "http", "/big?n=2000000"),
                        *small = url(s, "http", "/big?n=1000"), *busy = url(s, "http", "/busy"),
                        *busy_date =
                            url(s, "http", "/busy?ra=Fri,%2031%20Dec%202100%2023:59:59%20GMT");
    NtHttpOptions o = {.timeout_ms = 300};
    uint64_t t0 = now_ms();
    assert_int_equal(nt_http_request(&o, "GET", slow, NULL, NULL, 0, &resp), -ETIMEDOUT);
    assert_true(now_ms() - t0 < 1200);
    nt_http_response_clear(&resp);

    /* Response size: default 1 MiB, and an explicit cap. */
    assert_int_equal(nt_http_request(NULL, "GET", big, NULL, NULL, 0, &resp), -EFBIG);
    assert_null(resp.body);
    nt_http_response_clear(&resp);
    NtHttpOptions cap = {.max_response = 999};
    assert_int_equal(nt_http_request(&cap, "GET", small, NULL, NULL, 0, &resp), -EFBIG);
    nt_http_response_clear(&resp);
    cap.max_response = 1000;
    assert_int_equal(nt_http_request(&cap, "GET", small, NULL, NULL, 0, &resp), 0);
    assert_int_equal(resp.body_len, 1000);
    nt_http_response_clear(&resp);

    /* Retry-After from a reply: delta seconds and an HTTP date. */
    assert_int_equal(nt_http_request(NULL, "GET", busy, NULL, NULL, 0, &resp), 0);
    assert_int_equal(resp.status, 503);
    assert_int_equal(resp.retry_after_s, 7);
    nt_http_response_clear(&resp);
    assert_int_equal(nt_http_request(NULL, "GET", busy_date, NULL, NULL, 0, &resp), 0);
    assert_int_equal(resp.status, 503);
    long expect = (long)(4133980799 - time(NULL)); /* 2100-12-31T23:59:59Z */
    assert_true(resp.retry_after_s >= expect - 5 && resp.retry_after_s <= expect + 5);
    nt_http_response_clear(&resp);
}

/* --- redirects, proxies, framing --- */

static int h_count(void *userdata, const NtWebRequest *req, NtWebReply *reply) {
    __atomic_add_fetch((unsigned *)userdata, 1, __ATOMIC_SEQ_CST);
    return nt_web_reply_json(reply, 200, json_pack("{s:b}", "counted", 1));
}

static int h_redirect(void *userdata, const NtWebRequest *req, NtWebReply *reply) {
    int r = nt_web_reply_text(reply, 307, "text/plain", "moved");
    if (r < 0)
        return r;
    return nt_web_reply_header(reply, "Location", userdata);
}

/* A plain server on 127.0.0.1 with GET and POST /count (counting into *count) and, if
 * location is set, GET and POST /redir answering 307 to it. */
static NtWebServer *count_server(unsigned *count, const char *location) {
    NtWebConfig cfg = {.listen = "127.0.0.1:0", .plain_http = true, .threads = 2};
    NtWebServer *s = NULL;
    _cleanup_free_ char *error = NULL;
    assert_int_equal(nt_web_server_new(&cfg, &s, &error), 0);
    assert_int_equal(nt_web_server_route(s, "GET", "/count", "count", h_count, count), 0);
    assert_int_equal(nt_web_server_route(s, "POST", "/count", "count", h_count, count), 0);
    if (location) {
        assert_int_equal(
            nt_web_server_route(s, "GET", "/redir", "redir", h_redirect, (void *)location), 0);
        assert_int_equal(
            nt_web_server_route(s, "POST", "/redir", "redir", h_redirect, (void *)location), 0);
    }
    assert_int_equal(nt_web_server_start(s, &error), 0);
    return s;
}

/* A 307 to another host (or port) is the answer, not followed: a caller that allows plain
 * http only to loopback checked the URL it asked for, not the Location. With follow_redirects
 * only the same scheme, host and port is followed. */
static void test_redirects(void **state) {
    unsigned other_count = 0, own_count = 0, same_count = 0;
    _cleanup_(nt_web_server_freep) NtWebServer *other = count_server(&other_count, NULL);
    _cleanup_free_ char *elsewhere = url(other, "http", "/count"), *elsewhere_name = NULL;
    assert_true(asprintf(&elsewhere_name, "http://localhost:%u/count", nt_web_server_port(other)) >
                0);
    _cleanup_(nt_web_server_freep) NtWebServer *s = count_server(&own_count, elsewhere);
    _cleanup_(nt_web_server_freep) NtWebServer *s_name = count_server(&own_count, elsewhere_name);
    _cleanup_(nt_web_server_freep) NtWebServer *same = count_server(&same_count, "/count");
    _cleanup_free_ char *redir = url(s, "http", "/redir"),
                        *redir_name = url(s_name, "http", "/redir"),
                        *redir_same = url(same, "http", "/redir");
    NtHttpOptions follow = {.follow_redirects = true};
    NtHttpResponse resp;

    for (int f = 0; f < 2; f++) {
        const NtHttpOptions *o = f ? &follow : NULL;
        assert_int_equal(nt_http_request(o, "GET", redir, NULL, NULL, 0, &resp), 0);
        assert_int_equal(resp.status, 307);
        assert_string_equal((char *)resp.body, "moved");
        nt_http_response_clear(&resp);
        assert_int_equal(nt_http_request(o, "POST", redir, "application/json", "{}", 2, &resp), 0);
        assert_int_equal(resp.status, 307);
        nt_http_response_clear(&resp);
        assert_int_equal(nt_http_request(o, "GET", redir_name, NULL, NULL, 0, &resp), 0);
        assert_int_equal(resp.status, 307);
        nt_http_response_clear(&resp);
    }
    assert_int_equal(__atomic_load_n(&other_count, __ATOMIC_SEQ_CST), 0);
    assert_int_equal(own_count, 0);

    /* Same origin: followed only when asked for (method and body kept for a 307). */
    assert_int_equal(nt_http_request(NULL, "GET", redir_same, NULL, NULL, 0, &resp), 0);
    assert_int_equal(resp.status, 307);
    nt_http_response_clear(&resp);
    assert_int_equal(__atomic_load_n(&same_count, __ATOMIC_SEQ_CST), 0);
    assert_int_equal(nt_http_request(&follow, "GET", redir_same, NULL, NULL, 0, &resp), 0);
    assert_int_equal(resp.status, 200);
    assert_string_equal((char *)resp.body, "{\"counted\":true}");
    nt_http_response_clear(&resp);
    assert_int_equal(
        nt_http_request(&follow, "POST", redir_same, "application/json", "{}", 2, &resp), 0);
    assert_int_equal(resp.status, 200);
    nt_http_response_clear(&resp);
    assert_int_equal(__atomic_load_n(&same_count, __ATOMIC_SEQ_CST), 2);
    assert_int_equal(__atomic_load_n(&other_count, __ATOMIC_SEQ_CST), 0);
}

/* http_proxy in the environment must not see plain http to loopback: a listening "proxy" on
 * 127.0.0.3 gets no connection, the request reaches the server on 127.0.0.1. */
static void test_no_proxy_for_loopback(void **state) {
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof(sa);
    _cleanup_close_ int proxy = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    char proxy_url[64];
    NtHttpOptions o = {.timeout_ms = 2000};
    NtHttpResponse resp;
    struct pollfd p;

    assert_true(proxy >= 0);
    sa.sin_addr.s_addr = htonl(0x7f000003); /* 127.0.0.3 */
    assert_int_equal(bind(proxy, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(proxy, (struct sockaddr *)&sa, &len), 0);
    assert_int_equal(listen(proxy, 16), 0);
    (void)snprintf(proxy_url, sizeof(proxy_url), "http://127.0.0.3:%u/", ntohs(sa.sin_port));

    _cleanup_(nt_web_server_freep) NtWebServer *s = plain_server();
    _cleanup_free_ char *u = url(s, "http", "/hello");
    assert_int_equal(setenv("http_proxy", proxy_url, 1), 0);
    assert_int_equal(unsetenv("no_proxy"), 0);
    assert_int_equal(unsetenv("NO_PROXY"), 0);
    int r = nt_http_request(&o, "GET", u, NULL, NULL, 0, &resp);
    assert_int_equal(unsetenv("http_proxy"), 0);
    p = (struct pollfd){.fd = proxy, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 0), 0); /* no connection waiting at the proxy */
    assert_int_equal(r, 0);
    assert_int_equal(resp.status, 200);
    nt_http_response_clear(&resp);
}

/* Request smuggling: two Content-Length headers, or Transfer-Encoding with Content-Length,
 * get 400 (whichever the server would pick, a proxy in front may pick the other), and the
 * connection is closed (what follows the headers is not parsed as a next request). */
static void test_ambiguous_framing(void **state) {
    _cleanup_(nt_web_server_freep) NtWebServer *s = plain_server();
    static const char *const requests[] = {
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 40\r\n\r\n{}",
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n"
        "\r\n2\r\n{}\r\n0\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n"
        "\r\n2\r\n{}\r\n0\r\n\r\n",
    };
    for (size_t i = 0; i < ELEMENTSOF(requests); i++) {
        uint64_t t0 = now_ms();
        _cleanup_free_ char *raw = raw_exchange(nt_web_server_port(s), requests[i]);
        assert_true(now_ms() - t0 < 2000); /* the connection is closed, not kept alive */
        assert_non_null(strstr(raw, "HTTP/1.1 400"));
        assert_non_null(strstr(raw, "\r\n\r\n{\"error\":\"ambiguous request framing\"}"));
        assert_null(strstr(raw, "echoed"));
    }
    /* Each alone is fine. */
    _cleanup_free_ char *raw = raw_exchange(
        nt_web_server_port(s), "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                               "Connection: close\r\n\r\n{}");
    assert_non_null(strstr(raw, "HTTP/1.1 200"));
    free(TAKE_PTR(raw));
    raw = raw_exchange(nt_web_server_port(s),
                       "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                       "Connection: close\r\n\r\n2\r\n{}\r\n0\r\n\r\n");
    assert_non_null(strstr(raw, "HTTP/1.1 200"));
}

/* 200 slowloris connections (a partial request line, held) and 200 garbage connections, all
 * open while a valid request is made: it must complete in < 2 s. MHD's event loop spends a
 * socket, not a thread, on each; with a thread per connection (or a small connection limit)
 * the valid request would wait for the 10 s timeout or be refused. */
static void test_flood(void **state) {
    NtWebConfig cfg = {.listen = "127.0.0.1:0",
                       .plain_http = true,
                       .threads = 2,
                       .per_ip_connections = 1000,
                       .timeout_s = 30};
    _cleanup_(nt_web_server_freep) NtWebServer *s = server_start(&cfg);
    _cleanup_free_ char *u = url(s, "http", "/hello");
    int fds[400];
    NtHttpResponse resp;
    struct rlimit rl;

    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur < 2048) {
        rl.rlim_cur = MIN(rl.rlim_max, (rlim_t)2048);
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
    srandom(42);
    for (size_t i = 0; i < ELEMENTSOF(fds); i++) {
        fds[i] = raw_connect(nt_web_server_port(s));
        if (i % 2 == 0) {
            const char *partial = "GET /hello HT";
            assert_true(send(fds[i], partial, strlen(partial), MSG_NOSIGNAL) > 0);
        } else {
            char junk[512];
            for (size_t k = 0; k < sizeof(junk); k++)
                junk[k] = (char)(random() & 0xff);
            assert_true(send(fds[i], junk, sizeof(junk), MSG_NOSIGNAL) > 0);
        }
    }
    usleep(200 * 1000); /* let the server take them all in */
    uint64_t t0 = now_ms();
    NtHttpOptions o = {.timeout_ms = 5000};
    assert_int_equal(nt_http_request(&o, "GET", u, NULL, NULL, 0, &resp), 0);
    uint64_t dt = now_ms() - t0;
    assert_int_equal(resp.status, 200);
    nt_http_response_clear(&resp);
    print_message("valid request with 400 hostile connections open: %" PRIu64 " ms\n", dt);
    assert_true(dt < 2000);
    /* The slowloris connections are still open (not simply closed by the server). */
    unsigned open = 0;
    for (size_t i = 0; i < ELEMENTSOF(fds); i += 2) {
        struct pollfd p = {.fd = fds[i], .events = POLLIN};
        if (poll(&p, 1, 0) == 0)
            open++;
    }
    assert_true(open >= 190);
    for (size_t i = 0; i < ELEMENTSOF(fds); i++)
        close(fds[i]);
}

static unsigned count_fds(void) {
    unsigned n = 0;
    for (int fd = 0; fd < 4096; fd++)
        if (fcntl(fd, F_GETFD) >= 0)
            n++;
    return n;
}

/* The listening socket and MHD's epoll fds are released by stop/free. */
static void test_lifecycle(void **state) {
    unsigned before = count_fds();
    for (int i = 0; i < 3; i++) {
        NtWebServer *s = plain_server();
        NtHttpResponse resp;
        _cleanup_free_ char *u = url(s, "http", "/hello");
        assert_int_equal(nt_http_request(NULL, "GET", u, NULL, NULL, 0, &resp), 0);
        nt_http_response_clear(&resp);
        nt_web_server_stop(s);
        nt_web_server_stop(s); /* idempotent */
        assert_int_equal(nt_web_server_port(s), 0);
        assert_null(nt_web_server_free(s));
    }
    assert_int_equal(count_fds(), before);
}

/* Idle connections are closed after timeout_s; more than per_ip_connections from one address
 * are refused while the others are open. */
static void test_connection_limits(void **state) {
    NtWebConfig cfg = {
        .listen = "127.0.0.1:0", .plain_http = true, .timeout_s = 1, .per_ip_connections = 3};
    _cleanup_(nt_web_server_freep) NtWebServer *s = server_start(&cfg);
    _cleanup_free_ char *u = url(s, "http", "/hello");
    NtHttpResponse resp;
    char buf[256];
    int fds[3];

    for (size_t i = 0; i < ELEMENTSOF(fds); i++) {
        fds[i] = raw_connect(nt_web_server_port(s));
        assert_true(send(fds[i], "GET /hel", 8, MSG_NOSIGNAL) == 8);
    }
    usleep(100 * 1000);
    assert_true(nt_http_request(NULL, "GET", u, NULL, NULL, 0, &resp) < 0);
    nt_http_response_clear(&resp);
    /* Within about 1 s (MHD checks timeouts at most once a second) the idle ones are gone. */
    uint64_t t0 = now_ms();
    for (size_t i = 0; i < ELEMENTSOF(fds); i++) {
        assert_int_equal(raw_read(fds[i], buf, sizeof(buf), 4000), 0);
        close(fds[i]);
    }
    assert_true(now_ms() - t0 < 3500);
    assert_int_equal(nt_http_request(NULL, "GET", u, NULL, NULL, 0, &resp), 0);
    assert_int_equal(resp.status, 200);
    nt_http_response_clear(&resp);
}

typedef struct SlowArg {
    const char *url;
    size_t max_response; /* 0: the client's default */
    int r;
    long status;
} SlowArg;

static void *slow_client(void *p) {
    SlowArg *a = p;
    NtHttpOptions o = {.max_response = a->max_response};
    NtHttpResponse resp;
    a->r = nt_http_request(&o, "GET", a->url, NULL, NULL, 0, &resp);
    a->status = resp.status;
    nt_http_response_clear(&resp);
    return NULL;
}

/* Handlers run on the pool threads concurrently: 4 requests of 1.5 s on 4 threads take about
 * 1.5 s, not 6. */
static void test_concurrency(void **state) {
    NtWebConfig cfg = {.listen = "127.0.0.1:0", .plain_http = true, .threads = 4};
    _cleanup_(nt_web_server_freep) NtWebServer *s = server_start(&cfg);
    _cleanup_free_ char *u = url(s, "http", "/slow");
    pthread_t t[4];
    SlowArg a[4];

    uint64_t t0 = now_ms();
    for (int i = 0; i < 4; i++) {
        a[i] = (SlowArg){.url = u};
        assert_int_equal(pthread_create(&t[i], NULL, slow_client, &a[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        assert_int_equal(a[i].r, 0);
        assert_int_equal(a[i].status, 200);
    }
    uint64_t dt = now_ms() - t0;
    print_message("4 x 1.5 s handlers on 4 threads: %" PRIu64 " ms\n", dt);
    assert_true(dt < 2500);
}

/* --- inline routes and NT_WEB_REQUEUE --- */

static unsigned inline_runs, worker_runs; /* runs of h_inline (atomic) */
static unsigned inline_slow_started;      /* h_inline_slow entered on the event thread */

/* POST /inline: echoes the body as it arrived and where it ran. {"requeue": true} asks for a
 * worker from the inline run (after scribbling in the reply, which must be dropped);
 * "worker_sleep_ms" sleeps on the worker; {"requeue_again": true} asks again on the worker (a
 * handler bug: 500). */
static int h_inline(void *userdata, const NtWebRequest *req, NtWebReply *reply) {
    json_t *j = NULL;
    char err[200];
    int r = nt_web_request_json(req, &j, err);
    if (r < 0)
        return nt_web_reply_error(reply, 400, err, "body", NULL, NULL);
    bool requeue = json_is_true(json_object_get(j, "requeue"));
    bool again = json_is_true(json_object_get(j, "requeue_again"));
    json_int_t sleep_ms = json_integer_value(json_object_get(j, "worker_sleep_ms"));
    json_decref(j);
    __atomic_add_fetch(req->inline_run ? &inline_runs : &worker_runs, 1, __ATOMIC_SEQ_CST);
    if (req->inline_run && requeue) {
        (void)nt_web_reply_text(reply, 202, NULL, "left over from the inline run");
        (void)nt_web_reply_header(reply, "X-Inline", "1");
        return NT_WEB_REQUEUE;
    }
    if (!req->inline_run && sleep_ms > 0)
        usleep((useconds_t)sleep_ms * 1000);
    if (!req->inline_run && again)
        return NT_WEB_REQUEUE;
    reply->result = req->inline_run ? "inline" : "worker";
    return nt_web_reply_json(reply, 200,
                             json_pack("{s:b, s:s%}", "inline", req->inline_run, "body",
                                       (const char *)req->body, req->body_len));
}

/* GET /inline-slow: 1.5 s on the event thread, then a reply of n bytes; with requeue=1 it asks
 * for a worker after the wait instead, and replies from there without waiting. */
static int h_inline_slow(void *userdata, const NtWebRequest *req, NtWebReply *reply) {
    const char *n_s = nt_web_request_query(req, "n");
    bool requeue = nt_web_request_query(req, "requeue") != NULL;
    if (req->inline_run) {
        __atomic_add_fetch(&inline_slow_started, 1, __ATOMIC_SEQ_CST);
        usleep(1500 * 1000);
        if (requeue)
            return NT_WEB_REQUEUE;
    }
    size_t n = n_s ? strtoul(n_s, NULL, 10) : 4;
    _cleanup_free_ char *body = malloc(n + 1);
    assert_non_null(body);
    memset(body, req->inline_run ? 'i' : 'w', n);
    body[n] = 0;
    return nt_web_reply_text(reply, 200, "text/plain", body);
}

static NtWebServer *inline_server(unsigned threads, NtMetrics *m) {
    NtWebConfig cfg = {.listen = "127.0.0.1:0",
                       .plain_http = true,
                       .threads = threads,
                       .per_ip_connections = 256,
                       .metrics = m,
                       .metrics_prefix = "t"};
    NtWebServer *s = NULL;
    _cleanup_free_ char *error = NULL;
    assert_int_equal(nt_web_server_new(&cfg, &s, &error), 0);
    assert_int_equal(nt_web_server_route_inline(s, "POST", "/inline", "inline", h_inline, NULL), 0);
    assert_int_equal(nt_web_server_route_inline(s, "POST", "/inline", "inline", h_inline, NULL),
                     -EEXIST);
    assert_int_equal(
        nt_web_server_route_inline(s, "GET", "/inline-slow", "inline_slow", h_inline_slow, NULL),
        0);
    assert_int_equal(nt_web_server_route(s, "GET", "/slow", "slow", h_slow, NULL), 0);
    assert_int_equal(nt_web_server_route(s, "POST", "/echo", "echo", h_echo, NULL), 0);
    assert_int_equal(nt_web_server_start(s, &error), 0);
    assert_int_equal(nt_web_server_route_inline(s, "GET", "/late", "late", h_hello, NULL), -EBUSY);
    return s;
}

/* POSTs body to /inline and checks the reply: 200, the body echoed, made inline or on a worker
 * as wanted. Returns NULL or what was wrong (static; no cmocka assertion: threads use it). */
static const char *post_inline_check(NtWebServer *s, const char *body, bool want_inline) {
    _cleanup_free_ char *u = url(s, "http", "/inline");
    NtHttpResponse resp;
    json_t *j = NULL;
    const char *bad = NULL;

    if (nt_http_request(NULL, "POST", u, "application/json", body, strlen(body), &resp) < 0)
        bad = "no reply";
    else if (resp.status != 200)
        bad = "status not 200";
    else if (!resp.content_type || strcmp(resp.content_type, "application/json") != 0)
        bad = "not JSON";
    else if (!(j = json_loadb((char *)resp.body, resp.body_len, 0, NULL)))
        bad = "unparsable reply";
    else if (json_is_true(json_object_get(j, "inline")) != want_inline)
        bad = want_inline ? "made on a worker" : "made inline";
    else if (!json_is_string(json_object_get(j, "body")) ||
             strcmp(json_string_value(json_object_get(j, "body")), body) != 0)
        bad = "body not echoed as sent";
    json_decref(j);
    nt_http_response_clear(&resp);
    return bad;
}

static void post_inline(NtWebServer *s, const char *body, bool want_inline) {
    const char *bad = post_inline_check(s, body, want_inline);
    if (bad)
        fail_msg("POST /inline %.80s: %s", body, bad);
}

typedef struct PostArg {
    NtWebServer *s;
    const char *body;
    bool want_inline;
    const char *bad;
} PostArg;

static void *post_inline_thread(void *p) {
    PostArg *a = p;
    a->bad = post_inline_check(a->s, a->body, a->want_inline);
    return NULL;
}

/* An inline route answers on the event thread: while the only worker is busy (a 1.5 s handler
 * of a normal route), it answers at once. A requeued request goes to a worker with its body;
 * the inline run's reply (status, body, headers) is dropped; a request requeued to a busy worker
 * waits for it, and meanwhile the event thread keeps answering inline requests. */
static void test_inline(void **state) {
    _cleanup_(nt_metrics_freep) NtMetrics *m = NULL;
    assert_int_equal(nt_metrics_new(&m), 0);
    _cleanup_(nt_web_server_freep) NtWebServer *s = inline_server(1, m);
    _cleanup_free_ char *slow = url(s, "http", "/slow"), *inl = url(s, "http", "/inline");
    unsigned in0 = __atomic_load_n(&inline_runs, __ATOMIC_SEQ_CST),
             wk0 = __atomic_load_n(&worker_runs, __ATOMIC_SEQ_CST);
    NtHttpResponse resp;

    post_inline(s, "{\"a\":1}", true);
    post_inline(s, "{\"requeue\":true,\"a\":[1,2,3]}", false);
    assert_int_equal(__atomic_load_n(&inline_runs, __ATOMIC_SEQ_CST) - in0, 2);
    assert_int_equal(__atomic_load_n(&worker_runs, __ATOMIC_SEQ_CST) - wk0, 1);
    assert_int_equal(nt_metrics_get(m, "t_http_requeued_total", "endpoint=\"inline\""), 1);
    assert_int_equal(
        nt_metrics_get(m, "t_http_requests_total", "endpoint=\"inline\",result=\"inline\""), 1);
    assert_int_equal(
        nt_metrics_get(m, "t_http_requests_total", "endpoint=\"inline\",result=\"worker\""), 1);
    /* Nothing of the inline run's reply survives: no header, no status. */
    {
        const char *body = "{\"requeue\":true}";
        _cleanup_free_ char *raw = NULL, *req = NULL;
        assert_true(asprintf(&req,
                             "POST /inline HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n"
                             "Connection: close\r\n\r\n%s",
                             strlen(body), body) > 0);
        raw = raw_exchange(nt_web_server_port(s), req);
        assert_non_null(strstr(raw, "HTTP/1.1 200"));
        assert_null(strcasestr(raw, "X-Inline"));
        assert_null(strstr(raw, "left over"));
        assert_non_null(strstr(raw, "\"inline\":false"));
    }
    /* A handler that asks for a worker on the worker gets a 500, not a loop. */
    const char *twice = "{\"requeue\":true,\"requeue_again\":true}";
    assert_int_equal(
        nt_http_request(NULL, "POST", inl, "application/json", twice, strlen(twice), &resp), 0);
    assert_int_equal(resp.status, 500);
    assert_string_equal((char *)resp.body, "{\"error\":\"internal error\"}");
    nt_http_response_clear(&resp);

    /* The only worker busy for 1.5 s: inline requests are answered meanwhile. */
    {
        SlowArg a = {.url = slow};
        pthread_t t;
        unsigned before = __atomic_load_n(&slow_started, __ATOMIC_SEQ_CST);
        assert_int_equal(pthread_create(&t, NULL, slow_client, &a), 0);
        for (int i = 0; i < 500 && __atomic_load_n(&slow_started, __ATOMIC_SEQ_CST) == before; i++)
            usleep(10 * 1000);
        uint64_t t0 = now_ms();
        post_inline(s, "{\"while\":\"the worker sleeps\"}", true);
        uint64_t dt = now_ms() - t0;
        print_message("inline request while the only worker is busy: %" PRIu64 " ms\n", dt);
        assert_true(dt < 1000);
        assert_int_equal(pthread_join(t, NULL), 0);
        assert_int_equal(a.r, 0);
        assert_int_equal(a.status, 200);
    }
    /* A requeued request sleeping 1.5 s on the worker does not hold the event thread. */
    {
        PostArg a = {.s = s, .body = "{\"requeue\":true,\"worker_sleep_ms\":1500}"};
        pthread_t t;
        unsigned before = __atomic_load_n(&worker_runs, __ATOMIC_SEQ_CST);
        assert_int_equal(pthread_create(&t, NULL, post_inline_thread, &a), 0);
        for (int i = 0; i < 500 && __atomic_load_n(&worker_runs, __ATOMIC_SEQ_CST) == before; i++)
            usleep(10 * 1000);
        uint64_t t0 = now_ms();
        post_inline(s, "{\"b\":2}", true);
        uint64_t dt = now_ms() - t0;
        print_message("inline request while a requeued one holds the worker: %" PRIu64 " ms\n", dt);
        assert_true(dt < 1000);
        assert_int_equal(pthread_join(t, NULL), 0);
        if (a.bad)
            fail_msg("requeued request: %s", a.bad);
    }
}

/* Requeue under load: 8 clients on 4 event threads, 40 requests each, half of them asking to be
 * requeued, with bodies up to 40 KB (several pieces each as MHD reads them): every reply is the
 * echo of its own body; a request asking for a worker is answered from one. Whether a request
 * runs inline at all depends on what else its event thread serves at that moment (see
 * test_inline_alone), so the counts are checked against each other, and some must have been
 * requeued. */
typedef struct LoadArg {
    NtWebServer *s;
    unsigned id;
    unsigned requeue_asked;
    char bad[160];
} LoadArg;

static void *load_client(void *p) {
    LoadArg *a = p;
    unsigned seed = a->id * 7919u + 1;
    for (unsigned i = 0; i < 40 && !a->bad[0]; i++) {
        bool requeue = (i + a->id) % 2 == 0;
        size_t pad = (size_t)(rand_r(&seed) % 40000);
        _cleanup_free_ char *body = NULL, *fill = malloc(pad + 1);
        if (!fill) {
            snprintf(a->bad, sizeof a->bad, "malloc");
            break;
        }
        for (size_t k = 0; k < pad; k++)
            fill[k] = (char)('a' + (k + i + a->id) % 26);
        fill[pad] = 0;
        if (asprintf(&body, "{\"requeue\":%s,\"client\":%u,\"n\":%u,\"pad\":\"%s\"}",
                     requeue ? "true" : "false", a->id, i, fill) < 0) {
            snprintf(a->bad, sizeof a->bad, "asprintf");
            break;
        }
        /* A requeue request must come back from a worker; the others from either. */
        const char *bad = post_inline_check(a->s, body, false);
        if (bad && (requeue || strcmp(bad, "made inline") != 0))
            snprintf(a->bad, sizeof a->bad, "client %u request %u (%zu bytes%s): %s", a->id, i,
                     strlen(body), requeue ? ", requeue" : "", bad);
        a->requeue_asked += requeue;
    }
    return NULL;
}

static void test_requeue_load(void **state) {
    _cleanup_(nt_metrics_freep) NtMetrics *m = NULL;
    assert_int_equal(nt_metrics_new(&m), 0);
    _cleanup_(nt_web_server_freep) NtWebServer *s = inline_server(4, m);
    unsigned in0 = __atomic_load_n(&inline_runs, __ATOMIC_SEQ_CST),
             wk0 = __atomic_load_n(&worker_runs, __ATOMIC_SEQ_CST), asked = 0;
    LoadArg a[8];
    pthread_t t[8];

    for (unsigned i = 0; i < ELEMENTSOF(a); i++) {
        a[i] = (LoadArg){.s = s, .id = i};
        assert_int_equal(pthread_create(&t[i], NULL, load_client, &a[i]), 0);
    }
    for (unsigned i = 0; i < ELEMENTSOF(a); i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        if (a[i].bad[0])
            fail_msg("%s", a[i].bad);
        asked += a[i].requeue_asked;
    }
    unsigned in = __atomic_load_n(&inline_runs, __ATOMIC_SEQ_CST) - in0,
             wk = __atomic_load_n(&worker_runs, __ATOMIC_SEQ_CST) - wk0;
    unsigned requeued = (unsigned)nt_metrics_get(m, "t_http_requeued_total", "endpoint=\"inline\"");
    unsigned answered_inline = (unsigned)nt_metrics_get(m, "t_http_requests_total",
                                                        "endpoint=\"inline\",result=\"inline\""),
             answered_worker = (unsigned)nt_metrics_get(m, "t_http_requests_total",
                                                        "endpoint=\"inline\",result=\"worker\"");
    print_message("320 requests (%u asking for a worker): %u run inline, %u of them requeued, %u "
                  "answered inline, %u on a worker\n",
                  asked, in, requeued, answered_inline, answered_worker);
    assert_int_equal(asked, 8 * 40 / 2);
    assert_int_equal(answered_inline + answered_worker, 8 * 40);
    assert_int_equal(in, answered_inline + requeued); /* every inline run answered or requeued */
    assert_int_equal(wk, answered_worker);
    assert_true(requeued <= asked);
    assert_true(requeued > 0);
}

/* An inline handler runs only when its event thread serves no other live connection: with one
 * event thread, an idle keep-alive connection open next to the request sends it to a worker (the
 * idle client could send a request at any moment and must not wait for a handler), a suspended
 * connection (waiting for a worker) does not count, and once the other connection is closed the
 * request runs inline again. */
static void test_inline_alone(void **state) {
    _cleanup_(nt_web_server_freep) NtWebServer *s = inline_server(1, NULL);
    post_inline(s, "{\"n\":1}", true);
    int idle = raw_connect(nt_web_server_port(s));
    usleep(100 * 1000); /* MHD has accepted it */
    post_inline(s, "{\"n\":2}", false);
    post_inline(s, "{\"n\":3}", false);
    close(idle);
    /* MHD notices the close on its next round. */
    const char *bad = NULL;
    for (int i = 0; i < 50; i++) {
        bad = post_inline_check(s, "{\"n\":4}", true);
        if (!bad)
            break;
        usleep(20 * 1000);
    }
    if (bad)
        fail_msg("after the other connection closed: %s", bad);
}

/* Stopping while an inline handler runs on its event thread: the stop waits for it, its large
 * reply arrives whole, and the stop does not hang. Then the same with a handler that asks for a
 * worker once the stop has begun: it runs again on its event thread, and is answered too. */
static void stop_inline_one(const char *path) {
    NtWebServer *s = inline_server(2, NULL);
    _cleanup_free_ char *u = url(s, "http", path);
    SlowArg a = {.url = u, .max_response = 64000000};
    pthread_t t;

    unsigned before = __atomic_load_n(&inline_slow_started, __ATOMIC_SEQ_CST);
    assert_int_equal(pthread_create(&t, NULL, slow_client, &a), 0);
    for (int i = 0; i < 1000 && __atomic_load_n(&inline_slow_started, __ATOMIC_SEQ_CST) == before;
         i++)
        usleep(10 * 1000);
    assert_true(__atomic_load_n(&inline_slow_started, __ATOMIC_SEQ_CST) > before);
    uint64_t t0 = now_ms();
    nt_web_server_free(s);
    assert_true(now_ms() - t0 < 5000);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(a.r, 0);
    assert_int_equal(a.status, 200);
}

static void test_stop_inline(void **state) {
    stop_inline_one("/inline-slow?n=32000000");
    stop_inline_one("/inline-slow?n=32000000&requeue=1");
}

/* Stopping with a handler in flight waits for it, sends its reply, and does not hang. */
static void test_stop_inflight(void **state) {
    NtWebServer *s = plain_server();
    /* Large replies: their writing is still under way when the handlers have returned, which
     * is when a stop used to cut the connections. */
    _cleanup_free_ char *u = url(s, "http", "/slow?n=8000000");
    SlowArg a[2] = {{.url = u, .max_response = 16000000}, {.url = u, .max_response = 16000000}};
    pthread_t t[2];

    unsigned before = __atomic_load_n(&slow_started, __ATOMIC_SEQ_CST);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, slow_client, &a[i]), 0);
    /* Stop only once both handlers run (a fixed sleep raced with a loaded machine). */
    for (int i = 0; i < 1000 && __atomic_load_n(&slow_started, __ATOMIC_SEQ_CST) < before + 2; i++)
        usleep(10 * 1000);
    assert_true(__atomic_load_n(&slow_started, __ATOMIC_SEQ_CST) >= before + 2);
    uint64_t t0 = now_ms();
    nt_web_server_free(s);
    assert_true(now_ms() - t0 < 5000);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        assert_int_equal(a[i].r, 0);
        assert_int_equal(a[i].status, 200);
    }
}

/* --- keep_alive: a raw HTTP/1.1 server that counts the connections it accepts and closes --- */

typedef struct RawServer {
    int lfd;
    uint16_t port;
    pthread_t t;
    unsigned accepted, closed; /* atomic */
    int stop_pipe[2];
} RawServer;

/* Answers each GET with {"auth":"<Authorization header>"}, keeping the connection open. */
static void raw_answer(int fd, const char *req) {
    char auth[256] = "", body[320], out[512];
    const char *a = strcasestr(req, "\r\nAuthorization: ");
    if (a) {
        a += strlen("\r\nAuthorization: ");
        (void)snprintf(auth, sizeof auth, "%.*s", (int)strcspn(a, "\r\n"), a);
    }
    int bl = snprintf(body, sizeof body, "{\"auth\":\"%s\"}", auth);
    int ol = snprintf(out, sizeof out,
                      "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                      "%d\r\n\r\n%s",
                      bl, body);
    assert_int_equal(write(fd, out, (size_t)ol), ol);
}

static void *raw_server_main(void *p) {
    RawServer *rs = p;
    struct pollfd fds[16];
    char buf[16][2048];
    size_t len[16] = {0};
    nfds_t n = 2;
    fds[0] = (struct pollfd){.fd = rs->lfd, .events = POLLIN};
    fds[1] = (struct pollfd){.fd = rs->stop_pipe[0], .events = POLLIN};
    for (;;) {
        assert_true(poll(fds, n, 10000) > 0);
        if (fds[1].revents)
            break;
        if (fds[0].revents & POLLIN) {
            int c = accept4(rs->lfd, NULL, NULL, SOCK_CLOEXEC);
            assert_true(c >= 0 && n < 16);
            __atomic_add_fetch(&rs->accepted, 1, __ATOMIC_SEQ_CST);
            len[n] = 0;
            fds[n++] = (struct pollfd){.fd = c, .events = POLLIN};
        }
        for (nfds_t i = 2; i < n; i++) {
            if (!fds[i].revents)
                continue;
            ssize_t k = read(fds[i].fd, buf[i] + len[i], sizeof buf[i] - 1 - len[i]);
            if (k <= 0) {
                close(fds[i].fd);
                __atomic_add_fetch(&rs->closed, 1, __ATOMIC_SEQ_CST);
                fds[i] = fds[n - 1];
                memcpy(buf[i], buf[n - 1], len[n - 1]);
                len[i] = len[n - 1];
                n--;
                i--;
                continue;
            }
            len[i] += (size_t)k;
            buf[i][len[i]] = 0;
            char *end = strstr(buf[i], "\r\n\r\n");
            if (end) {
                raw_answer(fds[i].fd, buf[i]);
                len[i] = 0;
            }
        }
    }
    for (nfds_t i = 2; i < n; i++)
        close(fds[i].fd);
    return NULL;
}

static void raw_server_start(RawServer *rs) {
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t sl = sizeof sa;
    *rs = (RawServer){.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_true(rs->lfd >= 0);
    assert_int_equal(bind(rs->lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(rs->lfd, 16), 0);
    assert_int_equal(getsockname(rs->lfd, (struct sockaddr *)&sa, &sl), 0);
    rs->port = ntohs(sa.sin_port);
    assert_int_equal(pipe2(rs->stop_pipe, O_CLOEXEC), 0);
    assert_int_equal(pthread_create(&rs->t, NULL, raw_server_main, rs), 0);
}

static void raw_server_stop(RawServer *rs) {
    assert_int_equal(write(rs->stop_pipe[1], "x", 1), 1);
    assert_int_equal(pthread_join(rs->t, NULL), 0);
    close(rs->stop_pipe[0]);
    close(rs->stop_pipe[1]);
    close(rs->lfd);
}

/* GET http://127.0.0.1:port/ and returns the "auth" the server saw (malloc'd). */
static char *raw_get(uint16_t port, bool keep_alive, const char *bearer) {
    NtHttpOptions o = {.keep_alive = keep_alive, .bearer_token = bearer};
    NtHttpResponse resp;
    char u[64];
    (void)snprintf(u, sizeof u, "http://127.0.0.1:%u/", port);
    assert_int_equal(nt_http_request(&o, "GET", u, NULL, NULL, 0, &resp), 0);
    assert_int_equal(resp.status, 200);
    json_t *j = json_loadb((const char *)resp.body, resp.body_len, 0, NULL);
    assert_non_null(j);
    char *auth = strdup(json_string_value(json_object_get(j, "auth")));
    json_decref(j);
    nt_http_response_clear(&resp);
    return auth;
}

static void *keep_alive_thread(void *p) {
    free(raw_get(*(uint16_t *)p, true, NULL));
    return NULL; /* the thread's kept connection is closed as it exits */
}

static unsigned raw_count(unsigned *c) {
    return __atomic_load_n(c, __ATOMIC_SEQ_CST);
}

/* keep_alive requests of one thread share one connection, carry nothing of the previous
 * request over (the bearer token), and the connection is closed when the thread exits;
 * requests without keep_alive get a connection each. */
static void test_keep_alive(void **state) {
    RawServer rs;
    pthread_t t;
    char *a;
    raw_server_start(&rs);

    a = raw_get(rs.port, true, "tok-1");
    assert_string_equal(a, "Bearer tok-1");
    free(a);
    assert_int_equal(raw_count(&rs.accepted), 1);
    a = raw_get(rs.port, true, NULL);
    assert_string_equal(a, ""); /* the token did not carry over */
    free(a);
    assert_int_equal(raw_count(&rs.accepted), 1); /* the same connection */
    free(raw_get(rs.port, false, NULL));
    assert_int_equal(raw_count(&rs.accepted), 2); /* its own */
    free(raw_get(rs.port, true, "tok-2"));
    assert_int_equal(raw_count(&rs.accepted), 2); /* the kept one again */

    assert_int_equal(pthread_create(&t, NULL, keep_alive_thread, &rs.port), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(raw_count(&rs.accepted), 3);
    /* Closed: the non-keep-alive one, and the other thread's kept one at its exit. */
    for (int i = 0; i < 200 && raw_count(&rs.closed) < 2; i++)
        usleep(10000);
    assert_int_equal(raw_count(&rs.closed), 2);
    raw_server_stop(&rs);
}

static int setup(void **state) {
    log_set_max_level(getenv("NT_LOG_LEVEL") ? LOG_DEBUG : LOG_WARNING);
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state) {
    char cmd[256];
    (void)snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routes),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_body_cap),
        cmocka_unit_test(test_rate_limit),
        cmocka_unit_test(test_server_metrics),
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_ipv6),
        cmocka_unit_test(test_tls),
        cmocka_unit_test(test_prefix_routes),
        cmocka_unit_test(test_client_certs),
        cmocka_unit_test(test_client_errors),
        cmocka_unit_test(test_redirects),
        cmocka_unit_test(test_no_proxy_for_loopback),
        cmocka_unit_test(test_ambiguous_framing),
        cmocka_unit_test(test_flood),
        cmocka_unit_test(test_lifecycle),
        cmocka_unit_test(test_connection_limits),
        cmocka_unit_test(test_concurrency),
        cmocka_unit_test(test_keep_alive),
        cmocka_unit_test(test_stop_inflight),
        cmocka_unit_test(test_inline),
        cmocka_unit_test(test_requeue_load),
        cmocka_unit_test(test_inline_alone),
        cmocka_unit_test(test_stop_inline),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
