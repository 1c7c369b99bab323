/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The verdict of one verification: every check that ran, in order, with its result, and for a
 * failure what was expected and what was found. Human form and JSON.
 *
 * Check names are stable (docs/verify.md lists them): evidence checks ("report_format",
 * "signing_key", "certificates", "ark", "cert_chain", "cert_validity", "revocation",
 * "report_signature", "product", "tcb_vs_cert", "hwid") and policy checks (docs/policy.md). A
 * failed evidence check makes the verdict INVALID (the report is not authentic, so nothing in it
 * is appraised); a failed policy check makes it POLICY (authentic, but not acceptable).
 * Passing checks allocate nothing, so a verdict costs one allocation on the hot path.
 */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <time.h>

#include <jansson.h>

#include "core/macro.h"
#include "snp/report.h"
#include "verify/chain.h"

typedef enum NtCheckResult {
    NT_CHECK_PASS,
    NT_CHECK_FAIL,
    NT_CHECK_SKIP,
    _NT_CHECK_RESULT_MAX,
    _NT_CHECK_RESULT_INVALID = -EINVAL,
} NtCheckResult;

typedef enum NtCheckClass {
    NT_CHECK_EVIDENCE,
    NT_CHECK_POLICY,
    _NT_CHECK_CLASS_MAX,
    _NT_CHECK_CLASS_INVALID = -EINVAL,
} NtCheckClass;

typedef enum NtVerdictStatus {
    NT_VERDICT_OK,      /* authentic and, if a policy was given, acceptable */
    NT_VERDICT_INVALID, /* an evidence check failed */
    NT_VERDICT_POLICY,  /* authentic, but a policy check failed */
    _NT_VERDICT_STATUS_MAX,
    _NT_VERDICT_STATUS_INVALID = -EINVAL,
} NtVerdictStatus;

typedef struct NtCheck {
    const char *name; /* static */
    NtCheckClass cls;
    NtCheckResult result;
    int error;      /* negative errno class of a failure (-EKEYREJECTED, -EKEYEXPIRED, ...) */
    char *expected; /* failures only, may be NULL */
    char *found;    /* failures only, may be NULL */
    char detail[200];
} NtCheck;

#define NT_VERDICT_MAX_CHECKS 40

typedef struct NtVerdict {
    NtCheck checks[NT_VERDICT_MAX_CHECKS];
    size_t n_checks;
    bool alloc_failed; /* a failure's strings could not be allocated: result still correct */

    /* What was established (valid when the corresponding flag is set). */
    bool have_report; /* report parsed; authentic only if status is not INVALID */
    SnpReport report;
    SnpProduct product;      /* _SNP_PRODUCT_INVALID until known */
    NtCertRole signing_role; /* VCEK or VLEK, _NT_CERT_ROLE_INVALID until known */
    char csp_id[128];        /* VLEK cspID, "" otherwise */
    char anchor[96];         /* label of the trust anchor the chain ends in */
    time_t at;               /* verification time */
    bool chain_cached;       /* chain came from the verifier's cache */
    bool policy_applied;
} NtVerdict;

NtVerdict *nt_verdict_new(void); /* NULL on OOM */
NtVerdict *nt_verdict_free(NtVerdict *v);
DEFINE_TRIVIAL_CLEANUP_FUNC(NtVerdict *, nt_verdict_free);

/* Record checks. detail (printf format, may be NULL) is truncated to fit. expected and found
 * are copied. Silently ignores checks beyond NT_VERDICT_MAX_CHECKS (a programming error, logged
 * at debug level). */
void nt_verdict_pass(NtVerdict *v, const char *name, NtCheckClass cls, const char *detail, ...)
    _printf_(4, 5);
void nt_verdict_skip(NtVerdict *v, const char *name, NtCheckClass cls, const char *detail, ...)
    _printf_(4, 5);
void nt_verdict_fail(NtVerdict *v, const char *name, NtCheckClass cls, int error,
                     const char *expected, const char *found, const char *detail, ...)
    _printf_(7, 8);

NtVerdictStatus nt_verdict_status(const NtVerdict *v);
/* The first failed check, or NULL. */
const NtCheck *nt_verdict_first_failure(const NtVerdict *v);
/* The check with this name, or NULL. */
const NtCheck *nt_verdict_find(const NtVerdict *v, const char *name);
const char *nt_verdict_status_to_string(NtVerdictStatus s); /* "pass", "invalid", "policy" */
const char *nt_check_result_to_string(NtCheckResult r);     /* "pass", "fail", "skip" */

/* JSON: {"verdict", "product", "signing_key", "csp_id", "anchor", "verified_at",
 * "chain_cached", "policy_applied", "checks":[{"check","class","result","expected","found",
 * "detail"}], "report": {...}} ("report" only when authentic). NULL on OOM. */
json_t *nt_verdict_to_json(const NtVerdict *v);
/* Human form: one line per check, then a summary line. */
void nt_verdict_print(const NtVerdict *v, FILE *f);
