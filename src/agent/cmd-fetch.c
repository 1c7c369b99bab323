/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nitride fetch SECRET_ID --attestd URL --kms URL: brings a secret from nitride-kmsd into vhsmd
 * without any other process seeing it in the clear.
 *
 *   1-4. as `nitride attest` (attest-flow.c): challenge, a transfer key in vhsmd, the report
 *      binding it, the EAR token from attestd checked against attestd's JWKS
 *   5. POST KMS/v1/secrets/ID/release with "Authorization: Bearer <token>" (body
 *      {"volume_uuid"} only with --volume-uuid): kmsd answers with a signed release, the secret
 *      sealed to the transfer key
 *   6. vhsm_import_release(release, token): vhsmd checks the release's signature against its
 *      pinned kmsd keys, unwraps it with the transfer key and stores the key under the signed name
 *
 * The agent handles public keys, the token and the sealed release only: never the secret.
 * Network failures and 5xx/429 are retried with backoff within the total deadline (--timeout);
 * the release is asked again with the same token (nothing was released). A refusal by kmsd (403
 * policy: its rule, expected and found are printed; 401 token) or by attestd's appraisal policy is
 * final: exit 13, as `vhsm` for a service's refusal. Services that stay unreachable until the
 * deadline: exit 14. Other exit codes as agent.h.
 */
#include <errno.h>
#include <inttypes.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "agent.h"
#include "attest-flow.h"
#include "core/fileio.h"
#include "fetch-flow.h"
#include "core/log.h"
#include "core/macro.h"
#include "kmsd/store.h"
#include "snp/provider.h"
#include "vhsm/client/vhsm-client.h"

static void help(FILE *f) {
    fprintf(f,
            "Usage: nitride fetch SECRET_ID --attestd URL --kms URL [OPTIONS]\n"
            "Attest this VM, obtain the secret's release from nitride-kmsd and import it into\n"
            "vhsmd (the secret is never in the clear outside vhsmd).\n\n"
            "Services:\n"
            "  --attestd URL         the attestation service\n"
            "  --kms URL             the provisioning service (nitride-kmsd)\n"
            "  --ca FILE             trust these CA certificates for TLS (default: system store)\n"
            "  --timeout SECONDS     total deadline, retries included (default %d)\n"
            "Secret:\n"
            "  --as NAME             require that the release is for vHSM key NAME (kms/NAME)\n"
            "  --volume-uuid UUID    the LUKS volume the secret is for (policy volume rule)\n"
            "Evidence and key:\n"
            "  --provider P          auto, sev-guest, tsm or sim (default auto)\n"
            "  --sim DIR             the simulated chip in DIR (implies --provider sim)\n"
            "  --socket PATH         vhsmd's socket (default $VHSM_SOCKET or %s)\n"
            "Output:\n"
            "  --token-out FILE      also write the token to FILE (mode 0600)\n"
            "  --release-out FILE    also write the sealed release to FILE (mode 0600)\n"
            "  -q, --quiet           print nothing on success\n\n"
            "Exit codes: 0 imported, 1 invalid answer or refused by vhsmd, 3 usage, 4 network,\n"
            "TLS or local error, 5 no evidence provider, 13 refused by a service's policy (kmsd's\n"
            "rule, or attestd's appraisal), 14 a service unavailable within the deadline.\n",
            ATTEST_DEFAULT_TIMEOUT_S, VHSM_DEFAULT_SOCKET);
}

/* What the attestation part's exit code becomes for fetch. */
static int attest_exit(const AttestRun *run, int r) {
    if (r == NT_EXIT_POLICY)
        return NT_EXIT_REFUSED;
    if (r == NT_EXIT_IO && run->gave_up)
        return NT_EXIT_UNAVAILABLE;
    return r;
}

static int import_release(AttestRun *run, const char *release, const char *token) {
    _cleanup_free_ char *reply = NULL;
    json_auto_t *j = NULL;
    int r;

    r = fetch_import_release(run, release, token, &reply);
    if (r < 0) {
        log_error_errno(r, "vhsmd refused the release: %s (%m)",
                        vhsm_last_error()[0] ? vhsm_last_error() : "no detail");
        return r == -ECONNRESET || r == -EPIPE || r == -ETIMEDOUT || r == -ENOENT ||
                       r == -ECONNREFUSED
                   ? NT_EXIT_IO
                   : NT_EXIT_INVALID;
    }
    j = reply ? json_loads(reply, 0, NULL) : NULL;
    if (!run->args->quiet)
        printf("imported %s version %" JSON_INTEGER_FORMAT "\n", attest_jstr(j, "name") ?: "?",
               json_integer_value(json_object_get(j, "version")));
    if (fflush(stdout) != 0 || ferror(stdout)) {
        log_error("Failed to write to standard output.");
        return NT_EXIT_IO;
    }
    return NT_EXIT_OK;
}

static int run_fetch(AttestRun *run, const FetchArgs *f) {
    _cleanup_free_ char *token = NULL, *release = NULL, *name = NULL;
    json_auto_t *claims = NULL;
    int64_t version = 0;
    int r;

    r = attest_obtain_token(run, &token, &claims);
    if (r != NT_EXIT_OK)
        return attest_exit(run, r);
    if (run->args->token_out &&
        (r = write_file_atomic(run->args->token_out, token, strlen(token), 0600)) < 0) {
        log_error_errno(r, "Failed to write the token to '%s': %m", run->args->token_out);
        return NT_EXIT_IO;
    }

    r = fetch_release(run, f, token, &release, &name, &version);
    if (r != NT_EXIT_OK)
        return r;
    if (f->as_name && !fetch_name_matches(f->as_name, name)) {
        log_error("kmsd released secret '%s' as '%s', not as the requested '%s'; not imported.",
                  f->secret_id, name, f->as_name);
        return NT_EXIT_INVALID;
    }
    if (f->release_out &&
        (r = write_file_atomic(f->release_out, release, strlen(release), 0600)) < 0) {
        log_error_errno(r, "Failed to write the release to '%s': %m", f->release_out);
        return NT_EXIT_IO;
    }
    if (!run->args->quiet)
        log_info("kmsd released %s version %" PRId64 "; importing into vhsmd.", name, version);
    return import_release(run, release, token);
}

int cmd_fetch(int argc, char **argv) {
    enum {
        ARG_KMS = 0x100,
        ARG_AS,
        ARG_VOLUME_UUID,
        ARG_RELEASE_OUT,
    };
    static const struct option options[] = {
        {"kms", required_argument, NULL, ARG_KMS},
        {"as", required_argument, NULL, ARG_AS},
        {"volume-uuid", required_argument, NULL, ARG_VOLUME_UUID},
        ATTEST_COMMON_OPTIONS,
        {"release-out", required_argument, NULL, ARG_RELEASE_OUT},
        {"help", no_argument, NULL, 'h'},
        {},
    };
    AttestArgs a = {.timeout_s = ATTEST_DEFAULT_TIMEOUT_S};
    FetchArgs f = {};
    AttestRun run = ATTEST_RUN_INIT(&a);
    const char *kms_url = NULL;
    int c, r;

    optind = 0;
    while ((c = attest_getopt(argc, argv, options, &a)) >= 0) {
        switch (c) {
        case ATTEST_OPT_INVALID:
            return NT_EXIT_USAGE;
        case ARG_KMS:
            kms_url = optarg;
            break;
        case ARG_AS:
            if (!optarg[0] || strlen(optarg) > 128 || strpbrk(optarg, " \t\r\n")) {
                log_error("Invalid --as '%.128s': a vHSM key name (kms/NAME or NAME).", optarg);
                return NT_EXIT_USAGE;
            }
            f.as_name = optarg;
            break;
        case ARG_VOLUME_UUID:
            if (!attest_text_option_ok("--volume-uuid", optarg, 64))
                return NT_EXIT_USAGE;
            f.volume_uuid = optarg;
            break;
        case ARG_RELEASE_OUT:
            f.release_out = optarg;
            break;
        case 'h':
            help(stdout);
            return NT_EXIT_OK;
        default:
            help(stderr);
            return NT_EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        log_error("'nitride fetch' needs a SECRET_ID.");
        return NT_EXIT_USAGE;
    }
    if (argc - optind > 1) {
        log_error("Unexpected argument '%s'.", argv[optind + 1]);
        return NT_EXIT_USAGE;
    }
    f.secret_id = argv[optind];
    if (!kms_secret_id_is_valid(f.secret_id)) {
        log_error("Invalid SECRET_ID '%.128s': not a kmsd secret id.", f.secret_id);
        return NT_EXIT_USAGE;
    }
    if (!a.attestd_url || !kms_url) {
        log_error("'nitride fetch' needs --attestd URL and --kms URL.");
        return NT_EXIT_USAGE;
    }
    r = attest_check_url(kms_url, "--kms", &f.kms_base);
    if (r == NT_EXIT_OK)
        r = attest_run_start(&run, &a);
    if (r == NT_EXIT_OK)
        r = run_fetch(&run, &f);
    attest_run_done(&run, &a);
    free(f.kms_base);
    return r;
}
