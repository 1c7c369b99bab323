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
#include "web/svc-main.h"

enum {
    EXIT_USAGE = SVC_EXIT_USAGE,
    EXIT_CONFIG = SVC_EXIT_CONFIG,
    EXIT_RUNTIME = SVC_EXIT_RUNTIME
};

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

static int serve_routes(void *userdata) {
    return kmsd_routes(userdata);
}

static void serve_ready(void *userdata, unsigned port) {
    Kmsd *k = userdata;
    KmsdConfig *cfg = k->cfg;
    log_info("nitride-kmsd %s ready on port %u (database %s, attestd keys from %s, admin: %s%s%s)",
             NT_VERSION, port, cfg->database, cfg->jwks_url ? cfg->jwks_url : cfg->jwks_file,
             cfg->admin_token_file ? "bearer token" : "",
             cfg->admin_token_file && cfg->admin_client_ca ? " and " : "",
             cfg->admin_client_ca ? "client certificates" : "");
}

static void serve_reload(void *userdata) {
    log_info("SIGHUP: nothing to reload (policies live in the database); ignoring.");
}

static int serve(Kmsd *k, const char *port_file) {
    SvcServe s = {
        .metrics_prefix = "nitride_kmsd",
        .tls_client_ca = k->cfg->admin_client_ca,
        .metrics = k->metrics,
        .web = &k->web,
        .routes = serve_routes,
        .ready = serve_ready,
        .reload = serve_reload,
        .userdata = k,
    };
    return svc_serve(&k->cfg->svc, &s, port_file);
}

int main(int argc, char **argv) {
    static const struct option options[] = {
        SVC_OPTIONS,
        {},
    };
    static const char *const with_sub[] = {"keys", NULL};
    SvcArgs args = {};
    _cleanup_(kmsd_config_freep) KmsdConfig *cfg = NULL;
    _cleanup_(kmsd_freep) Kmsd *k = NULL;
    _cleanup_free_ char *err = NULL;
    const char *cmd;
    int r;

    log_set_prefix("nitride-kmsd");
    json_set_alloc_funcs(zero_malloc, zero_free);
    r = svc_args_parse(&args, argc, argv, options, with_sub, help, NULL, NULL);
    if (r >= 0)
        return r;
    cmd = args.cmd;
    r = kmsd_config_load(args.config, &cfg, &err);
    if (r < 0)
        return svc_fail(r, err, EXIT_CONFIG);
    if (args.verbose || streq(cfg->log_level, "debug"))
        log_set_max_level(LOG_DEBUG);
    r = svc_args_apply(&args, &cfg->svc);
    if (r != 0)
        return r;
    if (args.plain && cfg->admin_client_ca) {
        log_error("--plain-http: admin.client_ca needs TLS");
        return EXIT_USAGE;
    }

    if (streq(cmd, "serve")) {
        svc_harden();
        r = kmsd_new(cfg, true, &k, &err);
        if (r < 0)
            return svc_fail(r, err, EXIT_CONFIG);
        TAKE_PTR(cfg);
        return serve(k, args.port_file);
    }
    if (streq(cmd, "check-config")) {
        r = kmsd_new(cfg, false, &k, &err);
        if (r < 0)
            return svc_fail(r, err, EXIT_CONFIG);
        TAKE_PTR(cfg);
        printf("%s: ok\n", args.config);
        return 0;
    }
    if (streq(cmd, "keys"))
        return svc_keys_rotate("nitride-kmsd", &args, cfg->release_keys_dir, "release.keys_dir",
                               "release", true, cfg->release_alg, cfg->rotate_lead,
                               cfg->release_lifetime);
    log_error("Unknown command '%s'. Try --help.", cmd);
    return EXIT_USAGE;
}
