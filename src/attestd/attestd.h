/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nitride-attestd: the service object shared by the HTTP handlers (service.c), the program
 * (attestd.c) and the replay command (replay.c).
 */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "attestd/challenge.h"
#include "attestd/conf.h"
#include "attestd/evlog.h"
#include "attestd/request.h"
#include "token/ear.h"
#include "token/keys.h"
#include "verify/kds.h"
#include "verify/verify.h"
#include "web/metrics.h"
#include "web/server.h"
#include "web/svc-main.h"

typedef struct AttestdPolicy {
    char *id;
    NtPolicy *policy;
    NtPolicy *recommended; /* only min_tcb is used; NULL if none */
} AttestdPolicy;

/* An immutable set of policies; replaced as a whole on SIGHUP. */
typedef struct AttestdPolicySet {
    unsigned refs; /* under Attestd.policy_lock */
    AttestdPolicy *items;
    size_t n;
    char *default_id;
    char **client_ids;
    size_t n_client_ids;
} AttestdPolicySet;

typedef struct Attestd {
    AttestdConfig *cfg;
    NtChallenger *challenger;
    NtVerifier *verifier;
    NtKds *kds;
    NtSigningKeys *keys;
    NtMetrics *metrics;
    AttestdEvlog *evlog;
    NtWebServer *web;

    pthread_mutex_t policy_lock;
    AttestdPolicySet *policies;

    SvcKeysRefresh keys_refresh; /* keys rotated by another process */
} Attestd;

/* attestd's defaults on top of an appraisal policy's (the service and replay both apply them):
 * VMPL 0 only unless the policy lists vmpls. */
void attestd_policy_defaults(NtPolicy *p);

/* Builds a policy set from the configuration (reads the policy files). Returns 0, or -EBADMSG /
 * -errno with a message naming the policy and the file. */
int attestd_policy_set_load(const AttestdConfig *cfg, AttestdPolicySet **ret, char **ret_error);
void attestd_policy_set_unref(Attestd *a, AttestdPolicySet *s);
AttestdPolicySet *attestd_policy_set_ref(Attestd *a);
const AttestdPolicy *attestd_policy_set_find(const AttestdPolicySet *s, const char *id);
void attestd_policy_set_free(AttestdPolicySet *s);

/* Takes ownership of cfg on success (freed by attestd_free()). Everything but the HTTP server:
 * verifier (anchors, KDS, revocation), keys, challenger, evidence log, metrics, policies. serve:
 * also open the challenge secret and the keys. */
int attestd_new(AttestdConfig *cfg, bool serve, Attestd **ret, char **ret_error);
Attestd *attestd_free(Attestd *a);
DEFINE_TRIVIAL_CLEANUP_FUNC(Attestd *, attestd_free);

/* Registers the routes on a.web. */
int attestd_routes(Attestd *a);

/* Re-reads the configuration file's policies; on any error the old set stays in force. */
int attestd_reload(Attestd *a, char **ret_error);

/* `nitride-attestd replay` (replay.c). */
int attestd_replay(Attestd *a, const char *policy_path, const char *policy_id, int64_t since,
                   bool json);
