/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Parsing of attestd's requests (untrusted network input; fuzzed by fuzz/fuzz-attest-request.c).
 * Every refusal fills an AttestdError: the HTTP status, the check it concerns, a message and,
 * where it helps, what was expected and what was found.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <stdint.h>

#include <jansson.h>

#include "verify/chain.h"

/* The request protocol: every 1.x request is accepted (a newer minor's extra fields are
 * ignored); other majors are refused with the supported range. */
#define ATTESTD_PROTO_MAJOR 1
#define ATTESTD_PROTO_MINOR 0
#define ATTESTD_MAX_CERTS_IN_REQUEST 8
#define ATTESTD_MAX_JSON_DEPTH 16
/* Compact JSON size of runtime_data (a P-521 or RSA-4096 tee-pubkey and a nonce fit). */
#define ATTESTD_MAX_RUNTIME_DATA 1536

typedef struct AttestdError {
    unsigned status;    /* 400, 401, ... */
    const char *result; /* metrics label: "malformed", "version", ... */
    const char *check;  /* "request", "nonce", "report_format", "certificates", ... */
    char error[256];
    char expected[160]; /* "" if none */
    char found[160];    /* "" if none */
} AttestdError;

typedef struct AttestdAttestRequest {
    json_t *body;          /* owns everything below that is borrowed */
    bool lenient;          /* a newer 1.x minor: unknown members were ignored */
    const char *nonce;     /* body.nonce */
    json_t *runtime_data;  /* body.runtime_data (borrowed) */
    const char *policy_id; /* NULL: the default */
    uint8_t *report;       /* SNP_REPORT_SIZE bytes */
    size_t report_len;
    NtCertBundle *certs; /* what the evidence supplied (may be empty) */
} AttestdAttestRequest;

/* Parses a POST /v1/attest body. Returns 0, -EBADMSG (e filled), -ENOMEM. Checks shape, types,
 * the version, unknown members, the report's length, the certificates' encoding and that the
 * tee-pubkey is a public JWK OpenSSL accepts; not the nonce's authenticity (challenge.c), the
 * binding or the evidence. */
int attestd_attest_request_parse(const uint8_t *body, size_t len, AttestdAttestRequest *ret,
                                 AttestdError *e);
void attestd_attest_request_done(AttestdAttestRequest *r);

/* Parses an optional POST /v1/challenge body (len 0 is fine). */
int attestd_challenge_request_parse(const uint8_t *body, size_t len, AttestdError *e);

/* REPORT_DATA that binds runtime_data: SHA-384 of its RFC 8785 form, zero-padded to 64 bytes.
 * Returns 0, -EDOM/-EINVAL (cannot be canonicalised) or -ENOMEM/-EIO. */
int attestd_runtime_binding(const json_t *runtime_data, uint8_t out[64]);

/* The certificates of an evidence object ({"cert_table"} or {"certs"}) into a bundle. Returns 0
 * or -EBADMSG with a message. */
int attestd_evidence_certs(const json_t *evidence, NtCertBundle *bundle, char err[static 200]);
