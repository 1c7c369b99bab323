/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nitride-kmsd: the service object shared by the HTTP handlers (service.c) and the program
 * (kmsd.c).
 */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <time.h>

#include "core/ratelimit.h"
#include "kmsd/auth.h"
#include "kmsd/conf.h"
#include "kmsd/jwks.h"
#include "kmsd/store.h"
#include "token/keys.h"
#include "web/metrics.h"
#include "web/server.h"
#include "web/svc-main.h"

#define KMSD_AUDIT_HEAD_TYP "nitride-audit-head+jws"

typedef struct Kmsd {
    KmsdConfig *cfg;
    KmsStore *store;
    NtSigningKeys *keys; /* release keys: sign releases and the audit head */
    KmsdJwks *jwks;
    KmsdAuth *auth;
    NtMetrics *metrics;
    NtWebServer *web;

    SvcKeysRefresh keys_refresh; /* keys rotated by another process */

    pthread_mutex_t denied_lock;
    RateLimit denied_rl; /* refused admin requests written to the audit chain */
    unsigned denied_suppressed;
} Kmsd;

/* Takes ownership of cfg on success (freed by kmsd_free()). Opens the KEK, the database, the
 * release keys, the admin credentials and the JWKS source (serve), or only what check-config
 * needs (the files are still read and checked). Returns 0 or -errno with *ret_error. */
int kmsd_new(KmsdConfig *cfg, bool serve, Kmsd **ret, char **ret_error);
Kmsd *kmsd_free(Kmsd *k);
DEFINE_TRIVIAL_CLEANUP_FUNC(Kmsd *, kmsd_free);

/* Registers the routes on k->web. */
int kmsd_routes(Kmsd *k);
