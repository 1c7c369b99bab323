/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The report verifier: authenticity of an SEV-SNP attestation report (certificate chain to a
 * trusted AMD ARK, report signature, the endorsement certificate's TCB/hwID/product against
 * the report) and, with a policy, its appraisal. Used by `nitride verify` and by the attestation
 * service.
 *
 * An NtVerifier holds the trust anchors (AMD's built in, plus ARKs added explicitly) and a cache
 * of verified chains, keyed by the SHA-256 of the certificates supplied with the evidence; an
 * entry keeps the endorsement key's parsed public key and extensions and is used only for
 * verification times inside the validity window of every certificate in the chain. A cached
 * verification costs one ECDSA P-384 verify, a hash of the supplied certificates and a few
 * comparisons. nt_verifier_verify() is thread-safe; add anchors and set the source before
 * sharing the verifier between threads (those calls are serialised too, but a verify racing
 * with an anchor addition may or may not see the new anchor).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/evp.h>

#include "core/macro.h"
#include "snp/report.h"
#include "verify/chain.h"
#include "verify/policy.h"
#include "verify/verdict.h"

typedef struct NtVerifier NtVerifier;

/* ---- Revocation (AMD's CRL per product, check "revocation") ---- */
typedef enum NtRevocationMode {
    NT_REVOCATION_OFF,         /* no check (the default): "revocation" is not recorded */
    NT_REVOCATION_BEST_EFFORT, /* no CRL available: "revocation" skipped with the reason */
    NT_REVOCATION_REQUIRE,     /* no CRL available: "revocation" fails */
} NtRevocationMode;

typedef struct NtRevocationSource {
    const char *name;
    /* The product's AMD CRL (DER) and when it was fetched. 0, -ENOENT, or -errno (e.g. -EAGAIN,
     * -EHOSTUNREACH). Thread-safe. malloc'd *ret_der. */
    int (*get_crl)(void *userdata, SnpProduct p, uint8_t **ret_der, size_t *ret_len,
                   time_t *ret_fetched_at);
    /* Optional, for NtVerifyOptions.local_only: as get_crl, from what is at hand (memory, local
     * files) without going to the network or waiting for another thread's fetch; -EREMOTE where
     * get_crl would have to (e.g. the cached CRL is due for a refresh). NULL: every
     * local_only verification that checks revocation is -EREMOTE. */
    int (*get_crl_local)(void *userdata, SnpProduct p, uint8_t **ret_der, size_t *ret_len,
                         time_t *ret_fetched_at);
    void *userdata;
    NtRevocationMode mode;
    int64_t max_staleness_s; /* a CRL whose nextUpdate is more than this in the past is refused
                              * (0: nextUpdate itself) */
} NtRevocationSource;

typedef struct NtVerifyOptions {
    time_t at;              /* verification time; 0 = now */
    SnpProduct product;     /* pinned product (needed by nobody, checked if set), or INVALID */
    const NtPolicy *policy; /* NULL: authenticity only, no appraisal */
    /* Never block: the certificate and CRL sources are asked in their local mode (fetch_local,
     * get_crl_local), and where one would need the network nt_verifier_verify() returns -EREMOTE
     * and no verdict, having changed nothing but caches of verified data: verify again without
     * local_only where blocking is fine. For a server's event thread. */
    bool local_only;
} NtVerifyOptions;

#define NT_VERIFY_OPTIONS_INIT                                                                     \
    { .at = 0, .product = _SNP_PRODUCT_INVALID, .policy = NULL, .local_only = false }

/* Creates a verifier with the built-in AMD anchors. Returns 0, -ENOMEM, or -EBADMSG if a
 * built-in anchor fails its self-check. */
int nt_verifier_new(NtVerifier **ret);
NtVerifier *nt_verifier_free(NtVerifier *v);
DEFINE_TRIVIAL_CLEANUP_FUNC(NtVerifier *, nt_verifier_free);

/* Trusts an additional ARK (PEM or DER), e.g. a simulated chip's ark.pem. See
 * nt_anchor_set_add_ark() for the errors. */
int nt_verifier_add_trust_anchor(NtVerifier *v, const uint8_t *data, size_t len, const char *label);
int nt_verifier_add_trust_anchor_file(NtVerifier *v, const char *path);
/* Installs a source for endorsement certificates missing from the evidence (copied; NULL
 * removes it). */
void nt_verifier_set_vcek_source(NtVerifier *v, const NtVcekSource *src);
/* Installs the CRL source (copied; NULL or mode OFF removes the check). A CRL present but bad
 * (signature not by the chain's ARK, issuer, scheme, thisUpdate in the future, nextUpdate older
 * than the staleness limit) fails "revocation" in every mode; a revoked ASK, ASVK, VCEK or VLEK
 * fails it with -EKEYREVOKED. Each distinct CRL is parsed and checked once (cached by the
 * SHA-256 of its DER); the check also runs on cached-chain hits. */
void nt_verifier_set_revocation_source(NtVerifier *v, const NtRevocationSource *src);
/* Cache statistics since creation. */
void nt_verifier_cache_stats(NtVerifier *v, uint64_t *ret_hits, uint64_t *ret_misses);
/* Drops every cached chain. */
void nt_verifier_cache_flush(NtVerifier *v);

/* Verifies report (raw bytes, untrusted) with the certificates in certs (may be NULL when a
 * VcekSource supplies them). Always produces a verdict unless resources fail: returns 0 and
 * *ret (inspect nt_verdict_status()), or -ENOMEM/-EIO; with opts->local_only also -EREMOTE (a
 * source would need the network). opts may be NULL (defaults). */
int nt_verifier_verify(NtVerifier *v, const uint8_t *report, size_t report_len,
                       const NtCertBundle *certs, const NtVerifyOptions *opts, NtVerdict **ret);

/* The ECDSA P-384 report signature alone: r and s little-endian 72-byte fields, each must be
 * 1..n-1 with zero padding beyond 48 bytes. Returns 0, -EBADMSG (malformed signature) or
 * -EKEYREJECTED. Exposed for the benchmark and tests. */
int nt_report_check_signature(const uint8_t report[SNP_REPORT_SIZE], EVP_PKEY *vcek,
                              const EVP_MD *sha384);
