/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nitride-kmsd: the provisioning service (docs/kmsd.md). Releases secrets, sealed to a vhsmd
 * transfer key and signed, to VMs whose attestd token satisfies the secret's policy.
 *
 *   nitride-kmsd [serve] --config FILE [--listen ADDR] [--plain-http] [--port-file FILE]
 *   nitride-kmsd check-config --config FILE
 *   nitride-kmsd keys rotate --config FILE
 *
 * SIGTERM/SIGINT stop the server after the requests in flight.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "core/fileio.h"
#include "core/log.h"
#include "core/secret.h"
#include "kmsd/kmsd.h"

enum { EXIT_USAGE = 3, EXIT_CONFIG = 4, EXIT_RUNTIME = 5 };

static void help(FILE *f) {
    fprintf(f,
            "Usage: nitride-kmsd [COMMAND] --config FILE [OPTIONS]\n"
            "The Nitride provisioning service: releases secrets, sealed and signed, to attested "
            "VMs.\n\n"
            "Commands:\n"
            "  serve (default)   run the HTTP service\n"
            "  check-config      parse the configuration, check its files, then exit\n"
            "  keys rotate       add a release key (published now, signing after rotate_lead)\n\n"
            "Options:\n"
            "  --config FILE     configuration (docs/kmsd.md)\n"
            "  --listen ADDR     override 'listen' (e.g. 127.0.0.1:0)\n"
            "  --plain-http      serve plain HTTP (only for tests behind TLS termination)\n"
            "  --port-file FILE  write the port actually bound (serve)\n"
            "  --threads N       override 'threads'\n"
            "  -v, --verbose     debug logging\n\n"
            "Exit codes: 0, 3 usage, 4 configuration, 5 runtime error.\n");
}

/* jansson's free gets no size: every json_t string (request bodies with secret values, private
 * JWK members of libjose) is wiped before it returns to the heap. */
static void *zero_malloc(size_t n) {
    return malloc(n);
}

static void zero_free(void *p) {
    if (!p)
        return;
    explicit_bzero(p, malloc_usable_size(p));
    free(p);
}

static int serve(Kmsd *k, const char *port_file) {
    KmsdConfig *cfg = k->cfg;
    _cleanup_free_ char *err = NULL;
    sigset_t mask;
    int r, sig;

    NtWebConfig wc = {
        .listen = cfg->listen,
        .tls_cert_file = cfg->tls_cert,
        .tls_key_file = cfg->tls_key,
        .tls_client_ca_file = cfg->admin_client_ca,
        .plain_http = cfg->plain_http,
        .threads = cfg->threads,
        .max_body = cfg->max_body,
        .timeout_s = cfg->timeout_s,
        .max_connections = cfg->max_connections,
        .per_ip_connections = cfg->per_ip_connections,
        .rate_per_s = cfg->rate_per_s,
        .rate_burst = cfg->rate_burst,
        .metrics = k->metrics,
        .metrics_prefix = "nitride_kmsd",
    };
    r = nt_web_server_new(&wc, &k->web, &err);
    if (r < 0) {
        log_error("%s", err ? err : strerror(-r));
        return EXIT_CONFIG;
    }
    r = kmsd_routes(k);
    if (r < 0) {
        log_error_errno(r, "Setting up routes failed: %m");
        return EXIT_RUNTIME;
    }

    /* Signals are taken by sigwait() below; the server's threads inherit the mask. */
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);

    free(err);
    err = NULL;
    r = nt_web_server_start(k->web, &err);
    if (r < 0) {
        log_error("%s", err ? err : strerror(-r));
        return EXIT_CONFIG;
    }
    if (port_file) {
        char buf[16];
        int n = snprintf(buf, sizeof buf, "%u\n", nt_web_server_port(k->web));
        r = write_file_atomic(port_file, buf, (size_t)n, 0644);
        if (r < 0) {
            log_error_errno(r, "Writing %s failed: %m", port_file);
            return EXIT_RUNTIME;
        }
    }
    log_info("nitride-kmsd %s ready on port %u (database %s, attestd keys from %s, admin: %s%s%s)",
             NT_VERSION, nt_web_server_port(k->web), cfg->database,
             cfg->jwks_url ? cfg->jwks_url : cfg->jwks_file,
             cfg->admin_token_file ? "bearer token" : "",
             cfg->admin_token_file && cfg->admin_client_ca ? " and " : "",
             cfg->admin_client_ca ? "client certificates" : "");

    for (;;) {
        if (sigwait(&mask, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            log_info("SIGHUP: nothing to reload (policies live in the database); ignoring.");
            continue;
        }
        log_info("Signal %d: stopping", sig);
        break;
    }
    nt_web_server_stop(k->web);
    return 0;
}

int main(int argc, char **argv) {
    enum {
        ARG_CONFIG = 0x100,
        ARG_LISTEN,
        ARG_PLAIN,
        ARG_PORT_FILE,
        ARG_THREADS,
    };
    static const struct option options[] = {
        {"help", no_argument, NULL, 'h'},
        {"verbose", no_argument, NULL, 'v'},
        {"config", required_argument, NULL, ARG_CONFIG},
        {"listen", required_argument, NULL, ARG_LISTEN},
        {"plain-http", no_argument, NULL, ARG_PLAIN},
        {"port-file", required_argument, NULL, ARG_PORT_FILE},
        {"threads", required_argument, NULL, ARG_THREADS},
        {},
    };
    const char *config = NULL, *listen = NULL, *port_file = NULL;
    bool plain = false, verbose = false;
    unsigned threads = 0;
    _cleanup_(kmsd_config_freep) KmsdConfig *cfg = NULL;
    _cleanup_(kmsd_freep) Kmsd *k = NULL;
    _cleanup_free_ char *err = NULL;
    const char *cmd = "serve", *sub = NULL;
    int c, r;

    log_set_prefix("nitride-kmsd");
    json_set_alloc_funcs(zero_malloc, zero_free);
    if (argc > 1 && argv[1][0] != '-') {
        cmd = argv[1];
        argc--;
        argv++;
        if (streq(cmd, "keys") && argc > 1 && argv[1][0] != '-') {
            sub = argv[1];
            argc--;
            argv++;
        }
    }
    while ((c = getopt_long(argc, argv, "hv", options, NULL)) >= 0)
        switch (c) {
        case 'h':
            help(stdout);
            return 0;
        case 'v':
            verbose = true;
            break;
        case ARG_CONFIG:
            config = optarg;
            break;
        case ARG_LISTEN:
            listen = optarg;
            break;
        case ARG_PLAIN:
            plain = true;
            break;
        case ARG_PORT_FILE:
            port_file = optarg;
            break;
        case ARG_THREADS:
            if (sscanf(optarg, "%u", &threads) != 1 || threads < 1 || threads > 256) {
                log_error("--threads: expected 1..256");
                return EXIT_USAGE;
            }
            break;
        default:
            return EXIT_USAGE;
        }
    if (optind < argc) {
        log_error("Unexpected argument '%s'. Try --help.", argv[optind]);
        return EXIT_USAGE;
    }
    if (!config) {
        log_error("--config FILE is required. Try --help.");
        return EXIT_USAGE;
    }
    r = kmsd_config_load(config, &cfg, &err);
    if (r < 0) {
        log_error("%s", err ? err : strerror(-r));
        return EXIT_CONFIG;
    }
    if (verbose || streq(cfg->log_level, "debug"))
        log_set_max_level(LOG_DEBUG);
    if (listen) {
        free(cfg->listen);
        cfg->listen = strdup(listen);
        if (!cfg->listen)
            return EXIT_RUNTIME;
    }
    if (plain) {
        if (cfg->tls_cert) {
            log_error("--plain-http: the configuration has tls; remove it to serve plain HTTP");
            return EXIT_USAGE;
        }
        if (cfg->admin_client_ca) {
            log_error("--plain-http: admin.client_ca needs TLS");
            return EXIT_USAGE;
        }
        cfg->plain_http = true;
    }
    if (threads)
        cfg->threads = threads;

    if (streq(cmd, "serve")) {
        r = nt_harden_process();
        if (r < 0)
            log_warning_errno(r, "Process hardening incomplete: %m");
        r = kmsd_new(cfg, true, &k, &err);
        if (r < 0) {
            log_error("%s", err ? err : strerror(-r));
            return EXIT_CONFIG;
        }
        TAKE_PTR(cfg);
        return serve(k, port_file);
    }
    if (streq(cmd, "check-config")) {
        r = kmsd_new(cfg, false, &k, &err);
        if (r < 0) {
            log_error("%s", err ? err : strerror(-r));
            return EXIT_CONFIG;
        }
        TAKE_PTR(cfg);
        printf("%s: ok\n", config);
        return 0;
    }
    if (streq(cmd, "keys")) {
        _cleanup_free_ char *kid = NULL;
        if (!sub || !streq(sub, "rotate")) {
            log_error("Usage: nitride-kmsd keys rotate --config FILE");
            return EXIT_USAGE;
        }
        if (!cfg->release_keys_dir) {
            log_error("keys rotate needs release.keys_dir (keys given as files are rotated by "
                      "replacing the files)");
            return EXIT_USAGE;
        }
        r = mkdir_p(cfg->release_keys_dir, 0700);
        if (r >= 0)
            r = nt_signing_keys_rotate(cfg->release_keys_dir,
                                       streq(cfg->release_alg, "ES256") ? NT_JWS_ES256
                                                                        : NT_JWS_ES384,
                                       cfg->rotate_lead, cfg->release_lifetime, &kid);
        if (r < 0) {
            log_error_errno(r, "Rotating the release key in %s failed: %m", cfg->release_keys_dir);
            return EXIT_RUNTIME;
        }
        printf("new release key %s: published now, signs from %" PRId64 " s from now\n", kid,
               cfg->rotate_lead);
        return 0;
    }
    log_error("Unknown command '%s'. Try --help.", cmd);
    return EXIT_USAGE;
}
