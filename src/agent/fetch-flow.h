/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The release part of `nitride fetch`, shared with the `nitride agent` daemon (cmd-agent.c):
 * after attest_obtain_token(), ask kmsd for the secret's release with the token, then hand the
 * sealed release and the token to vhsmd (IMPORT_RELEASE). Only public data passes through here:
 * the token and the release sealed to vhsmd's transfer key.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "attest-flow.h"

#define FETCH_MAX_RELEASE (64u * 1024u)

typedef struct FetchArgs {
    const char *secret_id;
    const char *as_name;     /* NULL, or the vHSM name (kms/NAME or NAME) the release must carry */
    const char *volume_uuid; /* NULL, or sent in the release request's body */
    const char *purpose; /* NULL, or sent in the body: why (audited by kmsd, e.g. luks-reseal) */
    const char *release_out; /* cmd-fetch.c only */
    const char *kms_ca;      /* NULL: the run's CA (run->args->ca_file) */
    char *kms_base;          /* kmsd's URL without trailing '/' (attest_check_url) */
} FetchArgs;

/* The release, retried with backoff within the run's deadline for network failures, 429 and 5xx
 * (with the same token: nothing was released). NT_EXIT_OK with the release, its vHSM name and
 * version (malloc'd), NT_EXIT_REFUSED for kmsd's 401/403 (reason logged), NT_EXIT_UNAVAILABLE when
 * the deadline ran out on transient failures, or another exit code (logged). */
int fetch_release(AttestRun *run, const FetchArgs *f, const char *token, char **ret_release,
                  char **ret_name, int64_t *ret_version);

/* --as / the agent's configured key: true if name (kmsd's, "kms/NAME") is as_name. */
bool fetch_name_matches(const char *as_name, const char *name);

/* IMPORT_RELEASE with the token. 0 with vhsmd's reply ({"name","version"}, malloc'd, may be
 * NULL) or the libvhsm error (negative errno; vhsm_last_error() holds vhsmd's message, which
 * the caller logs): -EEXIST / -ESTALE mean this or a newer version is in vhsmd already. */
int fetch_import_release(AttestRun *run, const char *release, const char *token, char **ret_reply);
