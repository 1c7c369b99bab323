/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The release and import steps shared by `nitride fetch` and `nitride agent` (fetch-flow.h).
 * kmsd's CA may differ from attestd's: the release request runs with the run's arguments copied
 * and their CA replaced, so the deadline and backoff stay the run's.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "agent.h"
#include "attest-flow.h"
#include "core/log.h"
#include "core/macro.h"
#include "fetch-flow.h"
#include "token/release.h"
#include "vhsm/client/vhsm-client.h"

/* One release request. STEP_OK with the release, kmsd's name and version; STEP_RETRY /
 * STEP_RETRY_SAME for transient failures; or an exit code (logged). */
static int post_release(AttestRun *run, const FetchArgs *f, const char *token, char **ret_release,
                        char **ret_name, int64_t *ret_version) {
    _cleanup_free_ char *path = NULL, *rel = NULL, *nm = NULL;
    json_auto_t *req = NULL, *reply = NULL;
    const char *release, *name, *error;
    long status = 0;
    int r;

    if (asprintf(&path, "/v1/secrets/%s/release", f->secret_id) < 0) {
        path = NULL;
        log_oom();
        return NT_EXIT_IO;
    }
    if (f->volume_uuid || f->purpose) {
        req = json_object();
        if (!req ||
            (f->volume_uuid &&
             json_object_set_new(req, "volume_uuid", json_string(f->volume_uuid)) < 0) ||
            (f->purpose && json_object_set_new(req, "purpose", json_string(f->purpose)) < 0)) {
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
    /* vhsmd imports the release under the name its signed header gives, not under the answer's
     * "name": that one is what the callers check, so the two must agree. */
    r = nt_release_peek_name(release, &nm);
    if (r == -ENOMEM) {
        log_oom();
        return NT_EXIT_IO;
    }
    if (r < 0) {
        log_error("Release: kmsd's \"release\" is not a release naming a kms/ key.");
        return NT_EXIT_INVALID;
    }
    if (!streq(nm, name)) {
        log_error("Release: kmsd's answer names '%.255s' but its release is for '%s'; not "
                  "imported.",
                  name, nm);
        return NT_EXIT_INVALID;
    }
    rel = strdup(release);
    if (!rel) {
        log_oom();
        return NT_EXIT_IO;
    }
    *ret_release = TAKE_PTR(rel);
    *ret_name = TAKE_PTR(nm);
    *ret_version = (int64_t)json_integer_value(json_object_get(reply, "version"));
    return STEP_OK;
}

int fetch_release(AttestRun *run, const FetchArgs *f, const char *token, char **ret_release,
                  char **ret_name, int64_t *ret_version) {
    const AttestArgs *saved = run->args;
    AttestArgs ka = *run->args;
    int r;

    if (f->kms_ca)
        ka.ca_file = f->kms_ca;
    run->args = &ka;
    /* Nothing is released until kmsd answers 200: a failed request is sent again with the same
     * token (and the same transfer key). */
    nt_backoff_reset(&run->backoff);
    do
        r = post_release(run, f, token, ret_release, ret_name, ret_version);
    while (attest_again(run, &r, false));
    run->args = saved;
    if (r == STEP_OK)
        return NT_EXIT_OK;
    if (r < 0)
        r = NT_EXIT_IO;
    return r == NT_EXIT_IO && run->gave_up ? NT_EXIT_UNAVAILABLE : r;
}

/* The name comes from kmsd's signed header and vhsmd uses that one, so a mismatch is refused
 * before the import rather than imported under another name. */
bool fetch_name_matches(const char *as_name, const char *name) {
    if (streq(as_name, name))
        return true;
    return strncmp(name, "kms/", 4) == 0 && streq(as_name, name + 4);
}

int fetch_import_release(AttestRun *run, const char *release, const char *token, char **ret_reply) {
    VhsmClient *c = NULL;
    char *reply = NULL;
    int r;

    r = attest_vhsm(run, &c); /* the connection that made the transfer key */
    if (r < 0)
        return r;
    r = vhsm_import_release(c, release, token, &reply);
    if (r < 0) {
        attest_vhsm_close(run); /* the next use starts afresh */
        return r;
    }
    *ret_reply = reply;
    return 0;
}
