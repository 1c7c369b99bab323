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
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "agent.h"
#include "attest-flow.h"
#include "core/fileio.h"
#include "core/log.h"
#include "core/macro.h"
#include "kmsd/store.h"
#include "snp/provider.h"
#include "vhsm/client/vhsm-client.h"

#define FETCH_MAX_RELEASE (64u * 1024u)

typedef struct FetchArgs {
    const char *secret_id, *as_name, *volume_uuid, *release_out;
    char *kms_base;
} FetchArgs;

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

/* One release request. STEP_OK with the release, kmsd's name and version; STEP_RETRY /
 * STEP_RETRY_SAME for transient failures; or an exit code (logged). */
static int post_release(AttestRun *run, const FetchArgs *f, const char *token, char **ret_release,
                        char **ret_name, json_int_t *ret_version) {
    _cleanup_free_ char *path = NULL;
    json_auto_t *req = NULL, *reply = NULL;
    const char *release, *name, *error;
    long status = 0;
    int r;

    if (asprintf(&path, "/v1/secrets/%s/release", f->secret_id) < 0) {
        path = NULL;
        log_oom();
        return NT_EXIT_IO;
    }
    if (f->volume_uuid) {
        req = json_pack("{ss}", "volume_uuid", f->volume_uuid);
        if (!req) {
            log_oom();
            return NT_EXIT_IO;
        }
    }
    r = attest_exchange_at(run, f->kms_base, token, "Release", "POST", path, req, &status, &reply);
    if (r != STEP_OK)
        return r;
    error = attest_jstr(reply, "error");
    if (status == 429 || status == 500 || status == 502 || status == 503 || status == 504) {
        snprintf(run->last_error, sizeof run->last_error, "Release: HTTP %ld from kmsd%s%s", status,
                 error ? ": " : "", error ? error : "");
        return status == 429 ? STEP_RETRY_SAME : STEP_RETRY;
    }
    if (status == 401 || status == 403) {
        attest_print_refusal("kmsd", "Release", status, reply);
        return NT_EXIT_REFUSED;
    }
    if (status == 404) {
        log_error("kmsd has no secret '%s'.", f->secret_id);
        return NT_EXIT_INVALID;
    }
    if (status != 200) {
        attest_print_refusal("kmsd", "Release", status, reply);
        return status == 400 ? NT_EXIT_INVALID : NT_EXIT_IO;
    }
    release = attest_jstr(reply, "release");
    name = attest_jstr(reply, "name");
    if (!release || !release[0] || strlen(release) > FETCH_MAX_RELEASE || !name ||
        !json_is_integer(json_object_get(reply, "version"))) {
        log_error("Release: kmsd's answer has no valid \"release\", \"name\" and \"version\".");
        return NT_EXIT_INVALID;
    }
    *ret_release = strdup(release);
    *ret_name = strdup(name);
    if (!*ret_release || !*ret_name) {
        log_oom();
        return NT_EXIT_IO;
    }
    *ret_version = json_integer_value(json_object_get(reply, "version"));
    return STEP_OK;
}

/* --as NAME: the release must be for kms/NAME (the name comes from kmsd's signed header; vhsmd
 * uses that one, so a mismatch is refused here rather than imported under another name). */
static bool name_matches(const char *as_name, const char *name) {
    if (streq(as_name, name))
        return true;
    return strncmp(name, "kms/", 4) == 0 && streq(as_name, name + 4);
}

static int import_release(AttestRun *run, const char *release, const char *token) {
    VhsmClient *c = NULL;
    _cleanup_free_ char *reply = NULL;
    json_auto_t *j = NULL;
    int r;

    r = vhsm_connect(run->args->vhsm_socket, &c);
    if (r < 0) {
        log_error_errno(r, "Failed to connect to vhsmd to import the release: %m");
        return NT_EXIT_IO;
    }
    (void)vhsm_set_timeout(c, (unsigned)MIN(MAX(attest_remaining_ms(run), (int64_t)1000), 120000));
    r = vhsm_import_release(c, release, token, &reply);
    (void)vhsm_disconnect(c);
    if (r < 0) {
        log_error_errno(r, "vhsmd refused the release: %s (%m)",
                        vhsm_last_error()[0] ? vhsm_last_error() : "no detail");
        return r == -ECONNRESET || r == -EPIPE || r == -ETIMEDOUT ? NT_EXIT_IO : NT_EXIT_INVALID;
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
    json_int_t version = 0;
    int r;

    r = attest_obtain_token(run, &token, &claims);
    if (r != NT_EXIT_OK)
        return attest_exit(run, r);
    if (run->args->token_out &&
        (r = write_file_atomic(run->args->token_out, token, strlen(token), 0600)) < 0) {
        log_error_errno(r, "Failed to write the token to '%s': %m", run->args->token_out);
        return NT_EXIT_IO;
    }

    /* Nothing is released until kmsd answers 200: a failed request is sent again with the same
     * token (and the same transfer key). */
    nt_backoff_reset(&run->backoff);
    do
        r = post_release(run, f, token, &release, &name, &version);
    while (attest_again(run, &r, false));
    if (r != STEP_OK)
        return attest_exit(run, r < 0 ? NT_EXIT_IO : r);
    if (f->as_name && !name_matches(f->as_name, name)) {
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
        log_info("kmsd released %s version %" JSON_INTEGER_FORMAT "; importing into vhsmd.", name,
                 version);
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
