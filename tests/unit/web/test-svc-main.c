/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The HTTP services' shared daemon skeleton (web/svc-main.h), with real parts: svc_serve() runs a
 * real server on 127.0.0.1 in a thread, is asked for /metrics over a socket, and is driven by
 * SIGHUP/SIGTERM sent to that thread; bad TLS files, a bad listen address and an unwritable port
 * file give their exit codes; keys are rotated into and refreshed from a real directory; and the
 * common options are parsed and applied as both services do.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/fileio.h"
#include "core/log.h"
#include "web/svc-main.h"

/* ---- log capture ---- */

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char log_text[8192];

static void log_capture(int level, const char *msg, void *userdata) {
    pthread_mutex_lock(&log_lock);
    size_t n = strlen(log_text);
    snprintf(log_text + n, sizeof log_text - n, "%s\n", msg);
    pthread_mutex_unlock(&log_lock);
}

static bool log_has(const char *needle) {
    pthread_mutex_lock(&log_lock);
    bool r = strstr(log_text, needle) != NULL;
    pthread_mutex_unlock(&log_lock);
    return r;
}

static void log_reset(void) {
    pthread_mutex_lock(&log_lock);
    log_text[0] = 0;
    pthread_mutex_unlock(&log_lock);
}

/* ---- a service for svc_serve() ---- */

typedef struct TestSvc {
    SvcConfig cfg;
    NtMetrics *metrics;
    NtWebServer *web;
    const char *port_file;
    unsigned routes_calls, reloads;
    unsigned port; /* set by ready() */
    int result;
    bool done;
    pthread_mutex_t lock;
} TestSvc;

static int h_metrics(void *userdata, const NtWebRequest *req, NtWebReply *reply) {
    TestSvc *t = userdata;
    return svc_reply_metrics(t->metrics, reply);
}

static int t_routes(void *userdata) {
    TestSvc *t = userdata;
    t->routes_calls++;
    return nt_web_server_route_inline(t->web, "GET", "/metrics", "metrics", h_metrics, t);
}

static void t_ready(void *userdata, unsigned port) {
    TestSvc *t = userdata;
    pthread_mutex_lock(&t->lock);
    t->port = port;
    pthread_mutex_unlock(&t->lock);
}

static void t_reload(void *userdata) {
    TestSvc *t = userdata;
    pthread_mutex_lock(&t->lock);
    t->reloads++;
    pthread_mutex_unlock(&t->lock);
}

static int t_serve(TestSvc *t) {
    SvcServe s = {
        .metrics_prefix = "nitride_test",
        .metrics = t->metrics,
        .web = &t->web,
        .routes = t_routes,
        .ready = t_ready,
        .reload = t_reload,
        .userdata = t,
    };
    return svc_serve(&t->cfg, &s, t->port_file);
}

static void *serve_thread(void *userdata) {
    TestSvc *t = userdata;
    int r = t_serve(t);
    pthread_mutex_lock(&t->lock);
    t->result = r;
    t->done = true;
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

static void test_svc_init(TestSvc *t, const char *listen) {
    static const SvcMetricFamily fams[] = {
        {"nitride_test_events_total", "counter", "Events seen by the test service"},
        {"nitride_test_level", "gauge", "A level"},
    };
    *t = (TestSvc){};
    pthread_mutex_init(&t->lock, NULL);
    svc_conf_init(&t->cfg);
    t->cfg.listen = (char *)listen;
    t->cfg.plain_http = true;
    t->cfg.threads = 2;
    assert_int_equal(nt_metrics_new(&t->metrics), 0);
    assert_int_equal(svc_metrics_declare(t->metrics, fams, ELEMENTSOF(fams)), 0);
    assert_int_equal(svc_metrics_declare(t->metrics, fams, 1), -EEXIST);
}

static void test_svc_done(TestSvc *t) {
    t->web = nt_web_server_free(t->web);
    nt_metrics_free(t->metrics);
    pthread_mutex_destroy(&t->lock);
}

/* Waits up to 10 s for cond(t). */
static bool wait_for(TestSvc *t, bool (*cond)(TestSvc *t)) {
    for (int i = 0; i < 1000; i++) {
        pthread_mutex_lock(&t->lock);
        bool ok = cond(t);
        pthread_mutex_unlock(&t->lock);
        if (ok)
            return true;
        usleep(10 * 1000);
    }
    return false;
}

static bool is_ready(TestSvc *t) {
    return t->port != 0 || t->done;
}
static bool reloaded_once(TestSvc *t) {
    return t->reloads >= 1;
}
static bool is_done(TestSvc *t) {
    return t->done;
}

static char *http_get(unsigned port, const char *path) {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    char req[256], *buf = calloc(1, 65536);
    size_t len = 0;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    assert_non_null(buf);
    assert_true(fd >= 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
    assert_int_equal(send(fd, req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 5000) <= 0)
            break;
        ssize_t n = recv(fd, buf + len, 65535 - len, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    return buf;
}

static void test_serve(void **state) {
    char dir[] = "/tmp/nt-svc-main-XXXXXX", port_file[256];
    _cleanup_free_ uint8_t *port_text = NULL;
    size_t port_len = 0;
    TestSvc t;
    pthread_t th;

    assert_non_null(mkdtemp(dir));
    snprintf(port_file, sizeof port_file, "%s/port", dir);
    test_svc_init(&t, "127.0.0.1:0");
    t.port_file = port_file;
    nt_metrics_add(t.metrics, "nitride_test_events_total", NULL, 3);

    assert_int_equal(pthread_create(&th, NULL, serve_thread, &t), 0);
    assert_true(wait_for(&t, is_ready));
    assert_false(t.done);
    assert_int_equal(t.routes_calls, 1);
    assert_true(t.port > 0);

    /* The port file holds the port bound. */
    assert_int_equal(read_full_file(port_file, 64, &port_text, &port_len), 0);
    char want[16];
    snprintf(want, sizeof want, "%u\n", t.port);
    assert_int_equal(port_len, strlen(want));
    assert_memory_equal(port_text, want, port_len);

    /* The routes are served; the metrics include the service's own families. */
    _cleanup_free_ char *reply = http_get(t.port, "/metrics");
    assert_non_null(strstr(reply, " 200 OK\r\n"));
    assert_non_null(strstr(reply, "text/plain; version=0.0.4"));
    assert_non_null(strstr(reply, "# HELP nitride_test_events_total Events seen by the test "
                                  "service"));
    assert_non_null(strstr(reply, "nitride_test_events_total 3"));

    /* SIGHUP reloads and keeps serving; SIGTERM stops. */
    assert_int_equal(pthread_kill(th, SIGHUP), 0);
    assert_true(wait_for(&t, reloaded_once));
    assert_false(t.done);
    free(reply);
    reply = http_get(t.port, "/metrics");
    assert_non_null(strstr(reply, "nitride_test_events_total 3"));
    assert_int_equal(pthread_kill(th, SIGTERM), 0);
    assert_true(wait_for(&t, is_done));
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(t.result, 0);
    assert_int_equal(t.reloads, 1);
    assert_true(log_has("stopping"));

    test_svc_done(&t);
    unlink(port_file);
    rmdir(dir);
}

/* Runs svc_serve() in a thread and expects it to return on its own with want. */
static void expect_serve_fails(TestSvc *t, int want, const char *log_needle) {
    pthread_t th;
    log_reset();
    assert_int_equal(pthread_create(&th, NULL, serve_thread, t), 0);
    assert_true(wait_for(t, is_done));
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(t->result, want);
    if (!log_has(log_needle))
        fail_msg("log '%s' does not mention '%s'", log_text, log_needle);
}

static void test_serve_errors(void **state) {
    char dir[] = "/tmp/nt-svc-main-XXXXXX", path[256], junk[256], key[256];
    TestSvc t;

    assert_non_null(mkdtemp(dir));

    /* A TLS file that does not exist: a configuration error naming the file, no routes. */
    snprintf(path, sizeof path, "%s/missing-cert.pem", dir);
    snprintf(key, sizeof key, "%s/missing-key.pem", dir);
    test_svc_init(&t, "127.0.0.1:0");
    t.cfg.plain_http = false;
    t.cfg.tls_cert = path;
    t.cfg.tls_key = key;
    expect_serve_fails(&t, SVC_EXIT_CONFIG, "missing-cert.pem");
    assert_int_equal(t.routes_calls, 0);
    test_svc_done(&t);

    /* TLS files that are not PEM: a configuration error too, before anything is served. */
    snprintf(junk, sizeof junk, "%s/junk.pem", dir);
    assert_int_equal(write_file_atomic(junk, "not a certificate\n", 18, 0600), 0);
    test_svc_init(&t, "127.0.0.1:0");
    t.cfg.plain_http = false;
    t.cfg.tls_cert = junk;
    t.cfg.tls_key = junk;
    expect_serve_fails(&t, SVC_EXIT_CONFIG, "");
    assert_int_equal(t.port, 0);
    test_svc_done(&t);

    /* A listen address that does not parse. */
    test_svc_init(&t, "nowhere:http");
    expect_serve_fails(&t, SVC_EXIT_CONFIG, "");
    assert_int_equal(t.routes_calls, 0);
    test_svc_done(&t);

    /* A port file that cannot be written: a runtime error naming it, and no "ready". */
    snprintf(path, sizeof path, "%s/no-such-dir/port", dir);
    test_svc_init(&t, "127.0.0.1:0");
    t.port_file = path;
    expect_serve_fails(&t, SVC_EXIT_RUNTIME, "no-such-dir/port");
    assert_int_equal(t.port, 0);
    test_svc_done(&t);

    unlink(junk);
    rmdir(dir);
}

static void test_args(void **state) {
    static const char *const with_sub[] = {"keys", "kds", NULL};
    SvcArgs a = {};
    char *v1[] = {"prog", "keys", "rotate", "--config", "x", NULL};
    char *v2[] = {"prog", "check-config", "rotate", NULL};
    char *v3[] = {"prog", "--config", "x", NULL};
    char **argv = v1;
    int argc = 5;

    svc_args_command(&a, &argc, &argv, with_sub);
    assert_string_equal(a.cmd, "keys");
    assert_string_equal(a.sub, "rotate");
    assert_int_equal(argc, 3);
    assert_string_equal(argv[1], "--config");

    /* A command without subcommands leaves the next word as an argument. */
    argv = v2;
    argc = 3;
    svc_args_command(&a, &argc, &argv, with_sub);
    assert_string_equal(a.cmd, "check-config");
    assert_null(a.sub);
    assert_int_equal(argc, 2);
    optind = 1;
    assert_int_equal(svc_args_check(&a, argc, argv), SVC_EXIT_USAGE); /* "rotate" is left over */

    argv = v3;
    argc = 3;
    a = (SvcArgs){};
    svc_args_command(&a, &argc, &argv, with_sub);
    assert_string_equal(a.cmd, "serve");
    assert_int_equal(argc, 3);
    optind = 3;
    assert_int_equal(svc_args_check(&a, argc, argv), SVC_EXIT_USAGE); /* no --config yet */

    assert_int_equal(svc_args_option(&a, SVC_ARG_CONFIG, "c.json"), 1);
    assert_int_equal(svc_args_option(&a, SVC_ARG_LISTEN, "127.0.0.1:0"), 1);
    assert_int_equal(svc_args_option(&a, SVC_ARG_PORT_FILE, "pf"), 1);
    assert_int_equal(svc_args_option(&a, SVC_ARG_PLAIN, NULL), 1);
    assert_int_equal(svc_args_option(&a, 'v', NULL), 1);
    assert_int_equal(svc_args_option(&a, 'h', NULL), 0); /* the service's own help */
    assert_int_equal(svc_args_option(&a, _SVC_ARG_MAX, "x"), 0);
    assert_int_equal(svc_args_option(&a, SVC_ARG_THREADS, "0"), -EINVAL);
    assert_int_equal(svc_args_option(&a, SVC_ARG_THREADS, "257"), -EINVAL);
    assert_int_equal(svc_args_option(&a, SVC_ARG_THREADS, "x"), -EINVAL);
    assert_int_equal(svc_args_option(&a, SVC_ARG_THREADS, "12"), 1);
    assert_string_equal(a.config, "c.json");
    assert_string_equal(a.port_file, "pf");
    assert_true(a.plain && a.verbose);
    assert_int_equal(a.threads, 12);
    assert_int_equal(svc_args_check(&a, argc, argv), 0);

    /* Applied to a configuration: --plain-http is refused when it has tls. */
    SvcConfig c = {};
    svc_conf_init(&c);
    c.listen = strdup("0.0.0.0:443");
    assert_int_equal(svc_args_apply(&a, &c), 0);
    assert_string_equal(c.listen, "127.0.0.1:0");
    assert_true(c.plain_http);
    assert_int_equal(c.threads, 12);
    c.plain_http = false;
    c.tls_cert = strdup("c.pem");
    c.tls_key = strdup("k.pem");
    log_reset();
    assert_int_equal(svc_args_apply(&a, &c), SVC_EXIT_USAGE);
    assert_false(c.plain_http);
    assert_true(log_has("--plain-http: the configuration has tls"));
    svc_conf_done(&c);
    assert_null(c.listen);
}

enum { ARG_EXTRA = _SVC_ARG_MAX, ARG_FLAG };

static int extra_option(int c, const char *arg, void *userdata) {
    const char **extra = userdata;
    if (c != ARG_EXTRA)
        return -EINVAL;
    *extra = arg;
    return 0;
}

static unsigned help_calls;
static void count_help(FILE *f) {
    help_calls++;
}

/* Runs svc_args_parse() over the words (NULL-terminated) from a fresh getopt state. */
static int run_parse(SvcArgs *a, const char **extra, char **words) {
    static const struct option options[] = {
        SVC_OPTIONS,
        {"extra", required_argument, NULL, ARG_EXTRA},
        {"flag", no_argument, NULL, ARG_FLAG}, /* in the table, but refused by the service */
        {},
    };
    static const char *const with_sub[] = {"keys", NULL};
    int argc = 0;
    while (words[argc])
        argc++;
    *a = (SvcArgs){};
    *extra = NULL;
    optind = 0; /* glibc: start over */
    opterr = 0;
    return svc_args_parse(a, argc, words, options, with_sub, count_help, extra_option,
                          (void *)extra);
}

static void test_args_parse(void **state) {
    char *ok[] = {"prog", "keys",      "rotate", "--config",    "c.json", "-v", "--extra",
                  "E",    "--threads", "3",      "--port-file", "pf",     NULL};
    char *help[] = {"prog", "--config", "c.json", "-h", "--bogus", NULL};
    char *bogus[] = {"prog", "--config", "c.json", "--bogus", NULL};
    char *refused[] = {"prog", "--config", "c.json", "--flag", NULL};
    char *threads[] = {"prog", "--config", "c.json", "--threads", "0", NULL};
    char *left[] = {"prog", "serve", "--config", "c.json", "extra-word", NULL};
    char *noconf[] = {"prog", "--listen", "127.0.0.1:0", NULL};
    const char *extra;
    SvcArgs a;

    assert_int_equal(run_parse(&a, &extra, ok), -1);
    assert_string_equal(a.cmd, "keys");
    assert_string_equal(a.sub, "rotate");
    assert_string_equal(a.config, "c.json");
    assert_string_equal(a.port_file, "pf");
    assert_true(a.verbose);
    assert_int_equal(a.threads, 3);
    assert_string_equal(extra, "E");

    help_calls = 0;
    assert_int_equal(run_parse(&a, &extra, help), 0); /* help, before the bad option */
    assert_int_equal(help_calls, 1);
    assert_int_equal(run_parse(&a, &extra, bogus), SVC_EXIT_USAGE);
    assert_int_equal(run_parse(&a, &extra, refused), SVC_EXIT_USAGE);
    assert_int_equal(run_parse(&a, &extra, threads), SVC_EXIT_USAGE);
    assert_int_equal(run_parse(&a, &extra, left), SVC_EXIT_USAGE);
    assert_int_equal(run_parse(&a, &extra, noconf), SVC_EXIT_USAGE);
    assert_int_equal(help_calls, 1);

    /* A service without options of its own refuses any. */
    char *plain[] = {"prog", "--config", "c.json", "--extra", "E", NULL};
    static const struct option common[] = {
        SVC_OPTIONS, {"extra", required_argument, NULL, ARG_EXTRA}, {}};
    optind = 0;
    a = (SvcArgs){};
    assert_int_equal(svc_args_parse(&a, 5, plain, common, NULL, count_help, NULL, NULL),
                     SVC_EXIT_USAGE);
    optind = 0;
    opterr = 1;
}

static size_t count_files(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *de;
    size_t n = 0;
    assert_non_null(d);
    while ((de = readdir(d)))
        if (de->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

static size_t jwks_size(NtSigningKeys *k, time_t now) {
    json_t *j = nt_signing_keys_jwks(k, now);
    assert_non_null(j);
    size_t n = json_array_size(json_object_get(j, "keys"));
    json_decref(j);
    return n;
}

static void test_keys(void **state) {
    char dir[] = "/tmp/nt-svc-keys-XXXXXX", keys[256];
    SvcArgs rotate = {.sub = "rotate"}, other = {.sub = "list"};
    _cleanup_(nt_signing_keys_freep) NtSigningKeys *k = NULL;
    SvcKeysRefresh kr;
    time_t now = time(NULL);
    char *err = NULL;

    assert_non_null(mkdtemp(dir));
    snprintf(keys, sizeof keys, "%s/keys", dir);

    assert_int_equal(
        svc_keys_rotate("svc", &other, keys, "x.keys_dir", "signing", true, "ES384", 600, 300),
        SVC_EXIT_USAGE);
    assert_int_equal(
        svc_keys_rotate("svc", &rotate, NULL, "x.keys_dir", "signing", true, "ES384", 600, 300),
        SVC_EXIT_USAGE);
    assert_true(log_has("keys rotate needs x.keys_dir"));
    /* mkdir: the directory is created 0700. */
    assert_int_equal(
        svc_keys_rotate("svc", &rotate, keys, "x.keys_dir", "release", true, "ES256", 15, 300), 0);
    struct stat st;
    assert_int_equal(stat(keys, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    assert_int_equal(count_files(keys), 1);

    assert_int_equal(nt_signing_keys_open_dir(keys, NT_JWS_ES256, &k, &err), 0);
    assert_int_equal(jwks_size(k, now), 1);

    /* A rotation by "another process" shows up at the first refresh 10 s on, not before. */
    assert_int_equal(
        svc_keys_rotate("svc", &rotate, keys, "x.keys_dir", "release", false, "ES256", 15, 300), 0);
    svc_keys_refresh_init(&kr, now);
    assert_false(svc_keys_refresh_maybe(&kr, k, keys, "release", now + 9));
    assert_int_equal(jwks_size(k, now + 9), 1);
    assert_true(svc_keys_refresh_maybe(&kr, k, keys, "release", now + 10));
    assert_int_equal(jwks_size(k, now + 10), 2);
    assert_false(svc_keys_refresh_maybe(&kr, k, keys, "release", now + 15));
    /* A clock that went back refreshes at once; keys from files (dir NULL) are not refreshed. */
    assert_true(svc_keys_refresh_maybe(&kr, k, keys, "release", now - 100));
    assert_false(svc_keys_refresh_maybe(&kr, NULL, NULL, "release", now + 1000));
    /* ... but the 10 s still count from that call. */
    assert_false(svc_keys_refresh_maybe(&kr, k, keys, "release", now + 1009));
    assert_true(svc_keys_refresh_maybe(&kr, k, keys, "release", now + 1010));
    svc_keys_refresh_done(&kr);

    /* The key directory is not ours: remove what rotation wrote. */
    DIR *d = opendir(keys);
    struct dirent *de;
    while ((de = readdir(d)))
        if (de->d_name[0] != '.') {
            char p[512];
            snprintf(p, sizeof p, "%s/%s", keys, de->d_name);
            unlink(p);
        }
    closedir(d);
    rmdir(keys);
    rmdir(dir);
}

static void test_fail(void **state) {
    log_reset();
    assert_int_equal(svc_fail(-ENOENT, NULL, SVC_EXIT_CONFIG), SVC_EXIT_CONFIG);
    assert_true(log_has("No such file or directory"));
    assert_int_equal(svc_fail(-ENOENT, "conf.json: threads: bad", SVC_EXIT_USAGE), SVC_EXIT_USAGE);
    assert_true(log_has("conf.json: threads: bad"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_serve), cmocka_unit_test(test_serve_errors),
        cmocka_unit_test(test_args),  cmocka_unit_test(test_args_parse),
        cmocka_unit_test(test_keys),  cmocka_unit_test(test_fail),
    };
    log_set_sink(log_capture, NULL);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
