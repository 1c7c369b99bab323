/* SPDX-License-Identifier: Apache-2.0 */
/*
 * EAR attestation result tokens (draft-ietf-rats-ear, the -02 claim names that deployed verifiers,
 * Veraison and Trustee, use): issue from a verdict of src/verify, verify against a JWKS.
 *
 * Token: JWS compact, header {"alg","kid","typ":"JWT"}, claims
 *   eat_profile "tag:github.com,2023:veraison/ear", iat, exp, iss, [aud], jti,
 *   ear.verifier-id {"developer": "nitride", "build": "nitride-attestd <version>"},
 *   submods {"cpu0": {ear.status, ear.trustworthiness-vector, ear.appraisal-policy-id,
 *                     ear.veraison.annotated-evidence}},
 *   cnf {"jwk": tee-pubkey (public members only)} (RFC 7800).
 *
 * Trustworthiness vector (AR4SI, draft-ietf-rats-ar4si): each claim is an integer tier,
 *   0 no claim, 1 verifier malfunction, 2..31 affirming, 32..95 warning, 96..127 contraindicated
 * (negative values: the same tiers, 'cryptographic validation failed'; not produced here). Status
 * is the worst tier present: any claim 96..127 -> contraindicated, else any 32..95 -> warning, else
 * affirming. Mapping from a verdict (only OK and POLICY verdicts, i.e. authentic reports, are
 * accepted; INVALID -> -EINVAL), by src/verify check names:
 *   instance-identity  2  report signed by a VCEK/VLEK chaining to a trusted ARK, hwID checked;
 *                      96 a failed identity check: "vmpl", "allowed_signing_key",
 *                      "chip_id_masked", "id_key_digest", "author_key_digest", "report_data"
 *   hardware           2  genuine AMD part and TCB at or above the policy minimum (or none);
 *                      32 tcb_below_recommended (warning: above minimum, below recommended);
 *                      96 a failed "min_tcb", "min_firmware", "allowed_product",
 *                      "min_report_version"
 *   executables        2  "measurement" passed; 33 policy applied without a measurement check
 *                      (unrecognised executables: warning); 0 no policy applied; 96 failed
 *   configuration      2  every other policy check passed; 0 no policy applied; 96 a failed
 *                      "host_data", "min_abi", "min_guest_svn", "single_socket", "debug",
 *                      "migrate_ma", "smt" or any policy check not named above
 *   runtime-opaque     2  guest policy forbids debugging (memory encrypted, host cannot read it);
 *                      32 debugging allowed by the guest policy (memory visible to the host)
 *   file-system, storage-opaque, sourced-data: 0 (no claim; SNP evidence says nothing on them)
 * A failed policy check not named above makes configuration 96. Any failure thus gives
 * contraindicated; a token is still issued for it (marked so) and relying parties refuse it with
 * min_status.
 */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <jansson.h>

#include "token/keys.h"
#include "verify/verdict.h"

#define NT_EAR_PROFILE "tag:github.com,2023:veraison/ear"
#define NT_EAR_DEFAULT_LIFETIME_S 300
#define NT_EAR_DEFAULT_SKEW_S 60
#define NT_EAR_MAX_TOKEN_SIZE 16384
#define NT_EAR_SUBMOD "cpu0"

typedef enum NtEarStatus {
    NT_EAR_AFFIRMING,
    NT_EAR_WARNING,
    NT_EAR_CONTRAINDICATED,
    _NT_EAR_STATUS_MAX,
    _NT_EAR_STATUS_INVALID = -EINVAL,
} NtEarStatus;

const char *nt_ear_status_to_string(NtEarStatus s); /* "affirming", "warning", "contraindicated" */
int nt_ear_status_from_string(const char *s);       /* NtEarStatus, or -EINVAL */

typedef struct NtEarInput {
    const NtVerdict *verdict;   /* OK or POLICY verdict from src/verify (authentic report) */
    const json_t *runtime_data; /* {"nonce", "tee-pubkey": JWK, ...} */
    const char *policy_id;      /* ear.appraisal-policy-id */
    const char *issuer;         /* iss */
    const char *audience;       /* aud, optional */
    int64_t lifetime_s;         /* exp - iat, 0 = NT_EAR_DEFAULT_LIFETIME_S */
    time_t now;                 /* 0 = time(NULL) */
    bool tcb_below_recommended; /* warning: hardware claim in the warning range */
} NtEarInput;

/* Computes the AR4SI trustworthiness vector ({"instance-identity": 2, ...}, claims with value 0
 * omitted) and status from the verdict, as in the table above. Returns 0, -EINVAL (no verdict or
 * an INVALID verdict), -ENOMEM. */
int nt_ear_appraise(const NtEarInput *in, json_t **ret_vector, NtEarStatus *ret_status);

/* The annotated evidence object of a verdict (see nt_ear_issue); runtime_data may be NULL.
 * NULL on OOM or when the verdict has no report. */
json_t *nt_ear_annotated_evidence(const NtVerdict *v, const json_t *runtime_data);

/* Issues the token (claims above). annotated-evidence: product, signing_key VCEK/VLEK, csp_id
 * (VLEK), measurement, host_data, report_data (hex), policy {"value": hex, debug, migrate_ma,
 * smt, single_socket, abi "major.minor"}, vmpl, guest_svn, reported_tcb {bootloader, tee, snp,
 * microcode[, fmc]}, chip_id_sha256 (hex, not the 64-byte id), report_version,
 * id_key_digest/author_key_digest when non-zero, runtime_data_claims (the runtime_data). Compact:
 * no report, no certificates. cnf.jwk is runtime_data's "tee-pubkey", which must be an EC, OKP or
 * RSA public JWK: "d" or other private members (p, q, dp, dq, qi, oth, k) -> -EINVAL.
 * Returns 0, the token (malloc'd) and the claims (if ret_claims is not NULL), or -EINVAL (bad
 * input), -ENOKEY (no key signs now), -ENOMEM, -EIO. */
int nt_ear_issue(NtSigningKeys *k, const NtEarInput *in, char **ret_token, json_t **ret_claims);

typedef struct NtEarVerifyOptions {
    time_t now;           /* 0 = time(NULL) */
    int64_t skew_s;       /* 0 = NT_EAR_DEFAULT_SKEW_S; negative = no skew */
    const char *issuer;   /* required iss, optional */
    const char *audience; /* required aud (string or member of an array), optional */
    int min_status;       /* NtEarStatus the token must at least have (affirming > warning >
                             contraindicated), -1 = any */
} NtEarVerifyOptions;

#define NT_EAR_VERIFY_OPTIONS_INIT                                                                 \
    { .now = 0, .skew_s = 0, .issuer = NULL, .audience = NULL, .min_status = -1 }

/* Verifies signature against jwks ({"keys":[...]}; the header's kid selects; alg must match the
 * key and be ES256/ES384; "none" and HMAC algs refused), exp (now < exp + skew), iat not in the
 * future beyond skew, iss, aud, eat_profile, and submods.cpu0's status against min_status.
 * Returns 0 and the claims (if ret_claims is not NULL), or -EKEYREJECTED (signature/unknown kid/
 * refused alg), -EKEYEXPIRED (exp), -EBADMSG (malformed, too large, iat in the future), -EACCES
 * (iss/aud/status/profile), -ENOMEM, with a specific message in err (always NUL-terminated). Token
 * size capped at NT_EAR_MAX_TOKEN_SIZE. */
int nt_ear_verify(const char *token, const json_t *jwks, const NtEarVerifyOptions *o,
                  json_t **ret_claims, char err[static 256]);

/* What nt_ear_verify_ex() found, also when it fails: a caller that audits refusals or refreshes
 * its key set needs no second decoding of the token. */
typedef struct NtEarVerifyResult {
    json_t *claims;   /* the payload once the signature verified (owned: json_decref), also when
                       * a later check (exp, iat, iss, aud, profile, status) failed; NULL when the
                       * signature did not verify: unauthenticated claims are never handed out */
    bool unknown_kid; /* -EKEYREJECTED because the header's kid is not in jwks */
} NtEarVerifyResult;

/* nt_ear_verify() with the same checks and returns; *ret is always written (claims NULL and
 * unknown_kid false unless as described above). -EINVAL when ret is NULL. */
int nt_ear_verify_ex(const char *token, const json_t *jwks, const NtEarVerifyOptions *o,
                     NtEarVerifyResult *ret, char err[static 256]);
