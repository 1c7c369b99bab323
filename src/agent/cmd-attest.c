/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nitride attest --attestd URL: proves this VM to nitride-attestd and obtains an EAR token.
 *
 *   1. POST URL/v1/challenge                 -> nonce
 *   2. a transfer key: a P-384 key in vhsmd (vhsm_transfer_key_create), or with --no-vhsm an
 *      ephemeral key made here for diagnostics (its private half is dropped at once: nothing can
 *      ever be released to it)
 *   3. runtime_data {"nonce", "tee-pubkey": public JWK}; REPORT_DATA = SHA-384 of its RFC 8785
 *      canonical form, zero-padded to 64 bytes (Trustee's KBS binding); the evidence provider's
 *      extended report for it
 *   4. POST URL/v1/attest; GET URL/.well-known/jwks.json; the token is verified against the JWKS
 *      and must name our key (cnf.jwk) and our nonce before its claims are printed
 *   5. with vhsmd: the token is handed to it as its attestation verdict (ATTESTATION_SET; vhsmd
 *      checks it against its own pinned attestd keys; a refusal is a warning, not a failure)
 *
 * Network failures (connection refused, timeouts, 5xx, 429) are retried with exponential backoff
 * (Retry-After when the service gives one) until the total deadline (--timeout); each retry of the
 * attestation starts from a fresh challenge, since the service may have used the nonce up. A
 * refusal (400 malformed, 401 evidence or policy) is final and printed with the service's check,
 * expected and found values. TLS is always verified (--ca or the system store); plain http:// is
 * accepted for loopback addresses only.
 *
 * Exit codes (agent.h): 0 token obtained; 1 evidence refused or malformed, or a token that does
 * not verify or bind our key; 2 policy refusal; 3 usage; 4 network/TLS error, service unavailable,
 * deadline exhausted, local I/O; 5 no evidence provider. The token itself is never printed or
 * logged: --token-out writes it (0600).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <jose/jose.h>

#include "agent.h"
#include "attest-flow.h"
#include "core/fileio.h"
#include "core/log.h"
#include "core/macro.h"
#include "snp/provider.h"
#include "token/ear.h"
#include "vhsm/client/vhsm-client.h"

static void help(FILE *f) {
    fprintf(f,
            "Usage: nitride attest --attestd URL [OPTIONS]\n"
            "Attest this VM to nitride-attestd and obtain an EAR attestation token.\n\n"
            "Service:\n"
            "  --attestd URL         the service (https://; http:// only for 127.0.0.1, ::1,\n"
            "                        localhost)\n"
            "  --ca FILE             trust these CA certificates for TLS (default: system store)\n"
            "  --policy-id ID        ask to be appraised against this policy\n"
            "  --timeout SECONDS     total deadline, retries included (default %d)\n"
            "Evidence and key:\n"
            "  --provider P          auto, sev-guest, tsm or sim (default auto)\n"
            "  --sim DIR             the simulated chip in DIR (implies --provider sim)\n"
            "  --vhsm-socket PATH    vhsmd's socket (default $VHSM_SOCKET or %s)\n"
            "  --no-vhsm             bind an ephemeral key made here instead of a vhsmd\n"
            "                        transfer key (diagnostics: nothing can be released to it)\n"
            "Output:\n"
            "  --json                print the token's claims as JSON\n"
            "  --token-out FILE      write the token to FILE (mode 0600)\n"
            "  -q, --quiet           print no claims; the exit code tells\n\n"
            "Exit codes: 0 token obtained, 1 evidence refused or bad token, 2 policy refusal,\n"
            "3 usage, 4 network, TLS, service unavailable or deadline, 5 no evidence provider.\n",
            ATTEST_DEFAULT_TIMEOUT_S, VHSM_DEFAULT_SOCKET);
}

static void print_scalar(FILE *f, const json_t *v) {
    if (json_is_string(v))
        fputs(json_string_value(v), f);
    else if (json_is_integer(v))
        fprintf(f, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    else if (json_is_true(v) || json_is_false(v))
        fputs(json_is_true(v) ? "yes" : "no", f);
    else
        fputs("-", f);
}

static void print_claims(const AttestRun *run, const json_t *claims, FILE *f) {
    const json_t *cpu0 = attest_cpu0_of(claims), *ae = attest_annotated_evidence_of(claims),
                 *tcb = json_object_get(ae, "reported_tcb"),
                 *cnf = json_object_get(json_object_get(claims, "cnf"), "jwk");
    json_auto_t *thp = cnf ? jose_jwk_thp(NULL, cnf, "S256") : NULL;
    json_int_t exp = json_integer_value(json_object_get(claims, "exp"));
    char when[64] = "-";
    const char *k;
    json_t *v;
    bool first = true;

    if (exp > 0) {
        time_t t = (time_t)exp;
        struct tm tm;
        if (gmtime_r(&t, &tm))
            strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    }
    fprintf(f, "status:       %s\n", attest_jstr(cpu0, "ear.status") ?: "-");
    fprintf(f, "policy:       %s\n", attest_jstr(cpu0, "ear.appraisal-policy-id") ?: "-");
    fprintf(f, "issuer:       %s\n", attest_jstr(claims, "iss") ?: "-");
    fprintf(f, "expires:      %s (in %lld s)\n", when,
            exp > 0 ? (long long)(exp - (json_int_t)time(NULL)) : 0LL);
    fprintf(f, "measurement:  %s\n", attest_jstr(ae, "measurement") ?: "-");
    fprintf(f, "product:      %s\n", attest_jstr(ae, "product") ?: "-");
    fprintf(f, "signing key:  %s\n", attest_jstr(ae, "signing_key") ?: "-");
    fputs("TCB:          ", f);
    json_object_foreach((json_t *)tcb, k, v) {
        fprintf(f, "%s%s ", first ? "" : ", ", k);
        print_scalar(f, v);
        first = false;
    }
    fputs(first ? "-\n" : "\n", f);
    fprintf(f, "tee-pubkey:   kid %s, thumbprint (SHA-256) %s%s\n", attest_jstr(cnf, "kid") ?: "-",
            json_is_string(thp) ? json_string_value(thp) : "-",
            run->args->no_vhsm ? " [ephemeral agent key, --no-vhsm: diagnostics only]"
                               : " [vhsmd transfer key]");
}

static int output(const AttestRun *run, const char *token, const json_t *claims) {
    const AttestArgs *a = run->args;
    int r;

    if (a->token_out) {
        r = write_file_atomic(a->token_out, token, strlen(token), 0600);
        if (r < 0) {
            log_error_errno(r, "Failed to write the token to '%s': %m", a->token_out);
            return NT_EXIT_IO;
        }
    }
    if (a->quiet)
        return NT_EXIT_OK;
    if (a->json) {
        if (json_dumpf(claims, stdout, JSON_INDENT(2)) < 0) {
            log_error("Failed to write to standard output.");
            return NT_EXIT_IO;
        }
        fputc('\n', stdout);
    } else
        print_claims(run, claims, stdout);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        log_error("Failed to write to standard output.");
        return NT_EXIT_IO;
    }
    return NT_EXIT_OK;
}

static int run_attest(AttestRun *run) {
    _cleanup_free_ char *token = NULL;
    json_auto_t *claims = NULL;
    int r = attest_obtain_token(run, &token, &claims);

    if (r != NT_EXIT_OK)
        return r;
    if (!run->args->no_vhsm)
        attest_record_verdict_vhsm(run, token);
    return output(run, token, claims);
}

int cmd_attest(int argc, char **argv) {
    enum {
        ARG_POLICY_ID = 0x100,
        ARG_NO_VHSM,
        ARG_JSON,
    };
    static const struct option options[] = {
        {"policy-id", required_argument, NULL, ARG_POLICY_ID},
        {"no-vhsm", no_argument, NULL, ARG_NO_VHSM},
        ATTEST_COMMON_OPTIONS,
        {"json", no_argument, NULL, ARG_JSON},
        {"help", no_argument, NULL, 'h'},
        {},
    };
    AttestArgs a = {.timeout_s = ATTEST_DEFAULT_TIMEOUT_S};
    AttestRun run = ATTEST_RUN_INIT(&a);
    int c, r;

    optind = 0;
    while ((c = attest_getopt(argc, argv, options, &a)) >= 0) {
        switch (c) {
        case ATTEST_OPT_INVALID:
            return NT_EXIT_USAGE;
        case ARG_POLICY_ID:
            if (!attest_text_option_ok("--policy-id", optarg, 64))
                return NT_EXIT_USAGE;
            a.policy_id = optarg;
            break;
        case ARG_NO_VHSM:
            a.no_vhsm = true;
            break;
        case ARG_JSON:
            a.json = true;
            break;
        case 'h':
            help(stdout);
            return NT_EXIT_OK;
        default:
            help(stderr);
            return NT_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        log_error("Unexpected argument '%s'.", argv[optind]);
        return NT_EXIT_USAGE;
    }
    if (!a.attestd_url) {
        log_error("'nitride attest' needs --attestd URL.");
        return NT_EXIT_USAGE;
    }
    if (a.no_vhsm && a.vhsm_socket) {
        log_error("--no-vhsm and --vhsm-socket exclude each other.");
        return NT_EXIT_USAGE;
    }
    r = attest_run_start(&run, &a);
    if (r == NT_EXIT_OK)
        r = run_attest(&run);
    attest_run_done(&run, &a);
    return r;
}
