/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nitride-attestd: the attestation service (docs/attestd.md).
 *
 *   nitride-attestd [serve] --config FILE [--listen ADDR] [--plain-http] [--port-file FILE]
 *   nitride-attestd check-config --config FILE
 *   nitride-attestd keys rotate --config FILE
 *   nitride-attestd kds prefetch --config FILE (--report FILE | --product P --hwid HEX --tcb T)
 *   nitride-attestd replay --config FILE --policy NEW.json [--policy-id ID] [--since T] [--json]
 *
 * SIGHUP re-reads the policies (a bad file is refused and the old set stays); SIGTERM/SIGINT
 * stop the server after the requests in flight.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "attestd/attestd.h"
#include "config.h"
#include "core/encoding.h"
#include "core/fileio.h"
#include "core/log.h"
#include "core/secret.h"
#include "web/svc-main.h"

enum {
    EXIT_USAGE = SVC_EXIT_USAGE,
    EXIT_CONFIG = SVC_EXIT_CONFIG,
    EXIT_RUNTIME = SVC_EXIT_RUNTIME
};

static void help(FILE *f) {
    fprintf(f,
            "Usage: nitride-attestd [COMMAND] --config FILE [OPTIONS]\n"
            "The Nitride attestation service: verifies SEV-SNP evidence and issues EAR tokens.\n\n"
            "Commands:\n"
            "  serve (default)   run the HTTP service\n"
            "  check-config      parse the configuration and its policies, then exit\n"
            "  keys rotate       add a signing key (published now, signing after rotate_lead)\n"
            "  kds prefetch      fill the KDS certificate cache for a chip and TCB\n"
            "  replay            re-judge the evidence log against a candidate policy\n\n"
            "Options:\n"
            "  --config FILE     configuration (docs/attestd.md)\n"
            "  --listen ADDR     override 'listen' (e.g. 127.0.0.1:0)\n"
            "  --plain-http      serve plain HTTP (only for tests behind TLS termination)\n"
            "  --port-file FILE  write the port actually bound (serve)\n"
            "  --threads N       override 'threads'\n"
            "  --report FILE     (kds prefetch) take product, chip id and TCB from a report\n"
            "  --product P --hwid HEX --tcb bl=N,tee=N,snp=N,ucode=N[,fmc=N]  (kds prefetch)\n"
            "  --policy FILE     (replay) the candidate policy\n"
            "  --policy-id ID    (replay) only records appraised against this policy id\n"
            "  --since TIME      (replay) only records from TIME (2026-01-01T00:00:00Z)\n"
            "  --json            (replay) machine-readable output\n"
            "  -v, --verbose     debug logging\n");
}

static int parse_tcb(const char *s, SnpProduct p, SnpTcb *t) {
    _cleanup_free_ char *copy = strdup(s);
    char *save = NULL;
    unsigned seen = 0;
    if (!copy)
        return -ENOMEM;
    memset(t, 0, sizeof *t);
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char name[16];
        unsigned v;
        char extra;
        if (sscanf(tok, "%15[a-z]=%u%c", name, &v, &extra) != 2 || v > 255)
            return -EINVAL;
        if (streq(name, "bl"))
            t->bootloader = (uint8_t)v, seen |= 1;
        else if (streq(name, "tee"))
            t->tee = (uint8_t)v, seen |= 2;
        else if (streq(name, "snp"))
            t->snp = (uint8_t)v, seen |= 4;
        else if (streq(name, "ucode"))
            t->microcode = (uint8_t)v, seen |= 8;
        else if (streq(name, "fmc"))
            t->fmc = (uint8_t)v, seen |= 16;
        else
            return -EINVAL;
    }
    return (seen & 15) == 15 && (p == SNP_PRODUCT_TURIN) == !!(seen & 16) ? 0 : -EINVAL;
}

static int serve_routes(void *userdata) {
    return attestd_routes(userdata);
}

static void serve_ready(void *userdata, unsigned port) {
    Attestd *a = userdata;
    log_info("nitride-attestd %s ready on port %u (policies: %zu, default '%s', KDS %s, "
             "revocation %s, evidence log %s)",
             NT_VERSION, port, a->policies->n, a->policies->default_id,
             a->cfg->kds_url ? a->cfg->kds_url : "off (cache/offline only)",
             a->cfg->revocation_mode, a->cfg->evidence_log ? a->cfg->evidence_log : "off");
}

/* SIGHUP re-reads the policies. */
static void serve_reload(void *userdata) {
    Attestd *a = userdata;
    _cleanup_free_ char *rerr = NULL;
    int r = attestd_reload(a, &rerr);
    if (r < 0)
        log_error("Reload refused, the previous policies stay in force: %s",
                  rerr ? rerr : strerror(-r));
    else
        log_info("Reloaded policies from %s (%zu policies, default '%s')", a->cfg->path,
                 a->policies->n, a->policies->default_id);
}

static int serve(Attestd *a, const char *port_file) {
    SvcServe s = {
        .metrics_prefix = "nitride_attestd",
        .metrics = a->metrics,
        .web = &a->web,
        .routes = serve_routes,
        .ready = serve_ready,
        .reload = serve_reload,
        .userdata = a,
    };
    return svc_serve(&a->cfg->svc, &s, port_file);
}

/* The options of the kds and replay commands. */
enum {
    ARG_REPORT = _SVC_ARG_MAX,
    ARG_PRODUCT,
    ARG_HWID,
    ARG_TCB,
    ARG_POLICY,
    ARG_POLICY_ID,
    ARG_SINCE,
    ARG_JSON,
};

typedef struct Opts {
    const char *report, *product, *hwid, *tcb, *policy, *policy_id, *since;
    bool json;
} Opts;

static int take_option(int c, const char *arg, void *userdata) {
    Opts *o = userdata;
    switch (c) {
    case ARG_REPORT:
        o->report = arg;
        return 0;
    case ARG_PRODUCT:
        o->product = arg;
        return 0;
    case ARG_HWID:
        o->hwid = arg;
        return 0;
    case ARG_TCB:
        o->tcb = arg;
        return 0;
    case ARG_POLICY:
        o->policy = arg;
        return 0;
    case ARG_POLICY_ID:
        o->policy_id = arg;
        return 0;
    case ARG_SINCE:
        o->since = arg;
        return 0;
    case ARG_JSON:
        o->json = true;
        return 0;
    default:
        return -EINVAL;
    }
}

int main(int argc, char **argv) {
    static const struct option options[] = {
        SVC_OPTIONS,
        {"report", required_argument, NULL, ARG_REPORT},
        {"product", required_argument, NULL, ARG_PRODUCT},
        {"hwid", required_argument, NULL, ARG_HWID},
        {"tcb", required_argument, NULL, ARG_TCB},
        {"policy", required_argument, NULL, ARG_POLICY},
        {"policy-id", required_argument, NULL, ARG_POLICY_ID},
        {"since", required_argument, NULL, ARG_SINCE},
        {"json", no_argument, NULL, ARG_JSON},
        {},
    };
    static const char *const with_sub[] = {"keys", "kds", NULL};
    Opts o = {};
    SvcArgs args = {};
    _cleanup_(attestd_config_freep) AttestdConfig *cfg = NULL;
    _cleanup_(attestd_freep) Attestd *a = NULL;
    _cleanup_free_ char *err = NULL;
    const char *cmd;
    int r;

    log_set_prefix("nitride-attestd");
    r = svc_args_parse(&args, argc, argv, options, with_sub, help, take_option, &o);
    if (r >= 0)
        return r;
    cmd = args.cmd;
    if (args.verbose)
        log_set_max_level(LOG_DEBUG);
    r = attestd_config_load(args.config, &cfg, &err);
    if (r < 0)
        return svc_fail(r, err, EXIT_CONFIG);
    r = svc_args_apply(&args, &cfg->svc);
    if (r != 0)
        return r;

    if (streq(cmd, "serve")) {
        svc_harden();
        r = attestd_new(cfg, true, &a, &err);
        if (r < 0)
            return svc_fail(r, err, EXIT_CONFIG);
        TAKE_PTR(cfg);
        return serve(a, args.port_file);
    }
    if (streq(cmd, "check-config")) {
        r = attestd_new(cfg, false, &a, &err);
        if (r < 0)
            return svc_fail(r, err, EXIT_CONFIG);
        TAKE_PTR(cfg);
        printf("%s: ok (%zu policies, default '%s')\n", args.config, a->policies->n,
               a->policies->default_id);
        return 0;
    }
    if (streq(cmd, "keys"))
        return svc_keys_rotate("nitride-attestd", &args, cfg->keys_dir, "token.keys_dir", "signing",
                               false, cfg->token_alg, cfg->rotate_lead, cfg->token_lifetime);
    if (streq(cmd, "kds")) {
        SnpProduct p;
        SnpTcb t;
        uint8_t id[64];
        size_t id_len;
        if (!args.sub || !streq(args.sub, "prefetch")) {
            log_error("Usage: nitride-attestd kds prefetch --config FILE (--report FILE | "
                      "--product P --hwid HEX --tcb SPEC)");
            return EXIT_USAGE;
        }
        r = attestd_new(cfg, false, &a, &err);
        if (r < 0)
            return svc_fail(r, err, EXIT_CONFIG);
        TAKE_PTR(cfg);
        if (!a->kds) {
            log_error("The configuration has no kds section.");
            return EXIT_CONFIG;
        }
        if (o.report) {
            _cleanup_free_ uint8_t *raw = NULL;
            size_t len = 0;
            SnpReport rep;
            const char *perr = NULL;
            r = read_full_file(o.report, 65536, &raw, &len);
            if (r < 0 || snp_report_parse(raw, len, &rep, &perr) < 0) {
                log_error("%s: %s", o.report, r < 0 ? strerror(-r) : perr);
                return EXIT_USAGE;
            }
            p = snp_product_from_cpuid(rep.cpuid_fam_id, rep.cpuid_mod_id);
            if (o.product)
                p = snp_product_from_string(o.product);
            if (p < 0) {
                log_error("%s: the report does not name its product (version 2); give --product",
                          o.report);
                return EXIT_USAGE;
            }
            if (snp_tcb_decode(rep.reported_tcb, p, &t) < 0) {
                log_error("%s: reported TCB does not decode for %s", o.report,
                          snp_product_to_string(p));
                return EXIT_USAGE;
            }
            id_len = p == SNP_PRODUCT_TURIN ? 8 : 64;
            memcpy(id, rep.chip_id, id_len);
        } else {
            if (!o.product || !o.hwid || !o.tcb) {
                log_error("kds prefetch: give --report FILE, or --product, --hwid and --tcb");
                return EXIT_USAGE;
            }
            p = snp_product_from_string(o.product);
            id_len = p == SNP_PRODUCT_TURIN ? 8 : 64;
            if (p < 0 || hex_decode_exact(o.hwid, id, id_len) < 0 || parse_tcb(o.tcb, p, &t) < 0) {
                log_error("kds prefetch: bad --product (milan, genoa, turin), --hwid (%zu bytes "
                          "hex) or --tcb (bl=N,tee=N,snp=N,ucode=N[,fmc=N on Turin])",
                          id_len);
                return EXIT_USAGE;
            }
        }
        r = nt_kds_prefetch(a->kds, p, id, id_len, &t);
        if (r < 0) {
            log_error_errno(r, "Prefetch for %s failed: %m", snp_product_to_string(p));
            return EXIT_RUNTIME;
        }
        printf("cached VCEK, chain and CRL for %s\n", snp_product_to_string(p));
        return 0;
    }
    if (streq(cmd, "replay")) {
        int64_t since_t = 0;
        if (!o.policy) {
            log_error("replay: --policy FILE (the candidate policy) is required");
            return EXIT_USAGE;
        }
        if (o.since) {
            time_t t;
            if (nt_parse_time(o.since, &t) < 0) {
                log_error("--since: expected YYYY-MM-DDTHH:MM:SSZ");
                return EXIT_USAGE;
            }
            since_t = (int64_t)t;
        }
        /* Replay never goes to the network and judges policy, not today's revocations. */
        free(cfg->kds_url);
        cfg->kds_url = NULL;
        free(cfg->revocation_mode);
        cfg->revocation_mode = strdup("off");
        if (!cfg->revocation_mode)
            return EXIT_RUNTIME;
        r = attestd_new(cfg, false, &a, &err);
        if (r < 0)
            return svc_fail(r, err, EXIT_CONFIG);
        TAKE_PTR(cfg);
        r = attestd_replay(a, o.policy, o.policy_id, since_t, o.json);
        return r < 0 ? EXIT_RUNTIME : 0;
    }
    log_error("Unknown command '%s'. Try --help.", cmd);
    return EXIT_USAGE;
}
