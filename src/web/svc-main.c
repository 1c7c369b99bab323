/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The daemon skeleton of the HTTP services (svc-main.h): options, the serve loop with its
 * signals, `keys rotate`, the signing-key refresh and /metrics.
 */
#include "web/svc-main.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fileio.h"
#include "core/log.h"
#include "core/secret.h"

void svc_args_command(SvcArgs *args, int *argc, char ***argv, const char *const *with_sub) {
    args->cmd = "serve";
    args->sub = NULL;
    if (*argc <= 1 || (*argv)[1][0] == '-')
        return;
    args->cmd = (*argv)[1];
    (*argc)--;
    (*argv)++;
    for (size_t i = 0; with_sub && with_sub[i]; i++)
        if (streq(args->cmd, with_sub[i]) && *argc > 1 && (*argv)[1][0] != '-') {
            args->sub = (*argv)[1];
            (*argc)--;
            (*argv)++;
            break;
        }
}

int svc_args_option(SvcArgs *args, int c, const char *arg) {
    switch (c) {
    case 'v':
        args->verbose = true;
        return 1;
    case SVC_ARG_CONFIG:
        args->config = arg;
        return 1;
    case SVC_ARG_LISTEN:
        args->listen = arg;
        return 1;
    case SVC_ARG_PLAIN:
        args->plain = true;
        return 1;
    case SVC_ARG_PORT_FILE:
        args->port_file = arg;
        return 1;
    case SVC_ARG_THREADS:
        if (sscanf(arg, "%u", &args->threads) != 1 || args->threads < 1 || args->threads > 256) {
            log_error("--threads: expected 1..256");
            return -EINVAL;
        }
        return 1;
    default:
        return 0;
    }
}

int svc_args_check(const SvcArgs *args, int argc, char **argv) {
    if (optind < argc) {
        log_error("Unexpected argument '%s'. Try --help.", argv[optind]);
        return SVC_EXIT_USAGE;
    }
    if (!args->config) {
        log_error("--config FILE is required. Try --help.");
        return SVC_EXIT_USAGE;
    }
    return 0;
}

int svc_args_apply(const SvcArgs *args, SvcConfig *c) {
    if (args->listen) {
        free(c->listen);
        c->listen = strdup(args->listen);
        if (!c->listen)
            return SVC_EXIT_RUNTIME;
    }
    if (args->plain) {
        if (c->tls_cert) {
            log_error("--plain-http: the configuration has tls; remove it to serve plain HTTP");
            return SVC_EXIT_USAGE;
        }
        c->plain_http = true;
    }
    if (args->threads)
        c->threads = args->threads;
    return 0;
}

int svc_args_parse(SvcArgs *args, int argc, char **argv, const struct option *options,
                   const char *const *with_sub, void (*help)(FILE *f), SvcOptionFn *option,
                   void *userdata) {
    int c, r;

    svc_args_command(args, &argc, &argv, with_sub);
    while ((c = getopt_long(argc, argv, "hv", options, NULL)) >= 0) {
        if (c == 'h') {
            help(stdout);
            return 0;
        }
        r = svc_args_option(args, c, optarg);
        if (r < 0)
            return SVC_EXIT_USAGE;
        if (r > 0)
            continue;
        if (c == '?' || !option || option(c, optarg, userdata) < 0)
            return SVC_EXIT_USAGE;
    }
    r = svc_args_check(args, argc, argv);
    return r != 0 ? r : -1;
}

void svc_harden(void) {
    int r = nt_harden_process();
    if (r < 0)
        log_warning_errno(r, "Process hardening incomplete: %m");
}

int svc_fail(int r, const char *err, int exit_code) {
    log_error("%s", err ? err : strerror(-r));
    return exit_code;
}

static int write_port_file(const char *port_file, unsigned port) {
    char buf[16];
    int n = snprintf(buf, sizeof buf, "%u\n", port);
    int r = write_file_atomic(port_file, buf, (size_t)n, 0644);
    if (r < 0) {
        log_error_errno(r, "Writing %s failed: %m", port_file);
        return SVC_EXIT_RUNTIME;
    }
    return 0;
}

int svc_serve(const SvcConfig *c, const SvcServe *s, const char *port_file) {
    _cleanup_free_ char *err = NULL, *start_err = NULL;
    sigset_t mask;
    int r, sig;

    NtWebConfig wc = {
        .listen = c->listen,
        .tls_cert_file = c->tls_cert,
        .tls_key_file = c->tls_key,
        .tls_client_ca_file = s->tls_client_ca,
        .plain_http = c->plain_http,
        .threads = c->threads,
        .max_body = c->max_body,
        .timeout_s = c->timeout_s,
        .max_connections = c->max_connections,
        .per_ip_connections = c->per_ip_connections,
        .rate_per_s = c->rate_per_s,
        .rate_burst = c->rate_burst,
        .metrics = s->metrics,
        .metrics_prefix = s->metrics_prefix,
    };
    r = nt_web_server_new(&wc, s->web, &err);
    if (r < 0)
        return svc_fail(r, err, SVC_EXIT_CONFIG);
    r = s->routes(s->userdata);
    if (r < 0) {
        log_error_errno(r, "Setting up routes failed: %m");
        return SVC_EXIT_RUNTIME;
    }

    /* Signals are taken by sigwait() below; the server's threads inherit the mask. */
    sigemptyset(&mask);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    pthread_sigmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);

    r = nt_web_server_start(*s->web, &start_err);
    if (r < 0)
        return svc_fail(r, start_err, SVC_EXIT_CONFIG);
    if (port_file) {
        r = write_port_file(port_file, nt_web_server_port(*s->web));
        if (r != 0)
            return r;
    }
    s->ready(s->userdata, nt_web_server_port(*s->web));

    for (;;) {
        if (sigwait(&mask, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            s->reload(s->userdata);
            continue;
        }
        log_info("Signal %d: stopping", sig);
        break;
    }
    nt_web_server_stop(*s->web);
    return 0;
}

int svc_keys_rotate(const char *name, const SvcArgs *args, const char *dir, const char *dir_key,
                    const char *what, bool mkdir, const char *alg, int64_t lead, int64_t lifetime) {
    _cleanup_free_ char *kid = NULL;
    int r = 0;

    if (!args->sub || !streq(args->sub, "rotate")) {
        log_error("Usage: %s keys rotate --config FILE", name);
        return SVC_EXIT_USAGE;
    }
    if (!dir) {
        log_error("keys rotate needs %s (keys given as files are rotated by replacing the files)",
                  dir_key);
        return SVC_EXIT_USAGE;
    }
    if (mkdir)
        r = mkdir_p(dir, 0700);
    if (r >= 0)
        r = nt_signing_keys_rotate(dir, streq(alg, "ES256") ? NT_JWS_ES256 : NT_JWS_ES384, lead,
                                   lifetime, &kid);
    if (r < 0) {
        log_error_errno(r, "Rotating the %s key in %s failed: %m", what, dir);
        return SVC_EXIT_RUNTIME;
    }
    printf("new %s key %s: published now, signs from %" PRId64 " s from now\n", what, kid, lead);
    return 0;
}

void svc_keys_refresh_init(SvcKeysRefresh *k, time_t now) {
    pthread_mutex_init(&k->lock, NULL);
    k->last = now;
}

void svc_keys_refresh_done(SvcKeysRefresh *k) {
    pthread_mutex_destroy(&k->lock);
}

bool svc_keys_refresh_maybe(SvcKeysRefresh *k, NtSigningKeys *keys, const char *dir,
                            const char *what, time_t now) {
    bool due;

    pthread_mutex_lock(&k->lock);
    due = now - k->last >= 10 || now < k->last;
    if (due)
        k->last = now;
    pthread_mutex_unlock(&k->lock);
    if (!due || !dir)
        return false;
    int r = nt_signing_keys_refresh(keys, now);
    if (r < 0)
        log_warning_errno(r, "Refreshing %s keys from %s failed, keeping the current ones: %m",
                          what, dir);
    return true;
}

int svc_metrics_declare(NtMetrics *m, const SvcMetricFamily *fams, size_t n) {
    for (size_t i = 0; i < n; i++) {
        int r = nt_metrics_declare(m, fams[i].name, fams[i].type, fams[i].help, NULL, 0);
        if (r < 0)
            return r;
    }
    return 0;
}

int svc_reply_metrics(NtMetrics *m, NtWebReply *reply) {
    _cleanup_free_ char *text = NULL;
    int r = nt_metrics_render(m, &text);
    if (r < 0)
        return r;
    reply->result = "ok";
    return nt_web_reply_text(reply, 200, "text/plain; version=0.0.4; charset=utf-8", text);
}
