/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Helpers shared by the token tests and ear-issue-tool: a simulated chip, runtime data with a
 * fresh tee-pubkey, and a verdict for a report that binds that runtime data (REPORT_DATA =
 * SHA-384 of its RFC 8785 canonical form, zero-padded), verified with the chip's ARK trusted.
 */
#pragma once

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jose/jwk.h>
#include <openssl/sha.h>

#include "core/jcs.h"
#include "snp/sim.h"
#include "verify/verify.h"

typedef struct TtChip {
    const char *name;
    SnpProduct product;
    bool vlek; /* created with a VLEK and signs with it */
    char dir[PATH_MAX];
} TtChip;

static inline int tt_chip_init(TtChip *c, const char *base) {
    SimInitOptions o = {.product = c->product, .with_vlek = c->vlek};
    snprintf(c->dir, sizeof c->dir, "%s/%s", base, c->name);
    return sim_chip_init(c->dir, &o);
}

/* {"nonce": nonce, "tee-pubkey": a fresh public JWK of curve crv}. */
static inline json_t *tt_runtime_data(const char *nonce, const char *crv) {
    json_t *jwk = json_pack("{s:s,s:s}", "kty", "EC", "crv", crv);
    if (!jwk || !jose_jwk_gen(NULL, jwk) || !jose_jwk_pub(NULL, jwk))
        abort();
    (void)json_object_del(jwk, "key_ops");
    (void)json_object_del(jwk, "alg");
    return json_pack("{s:s,s:o}", "nonce", nonce, "tee-pubkey", jwk);
}

/* Verdict for a fresh report binding rd. policy_json may be NULL (authenticity only);
 * trust = false leaves the chip's ARK untrusted (INVALID verdict). Returns 0 or a negative errno.
 */
static inline int tt_verdict(const TtChip *c, const json_t *rd, const char *policy_json, bool trust,
                             NtVerdict **ret) {
    _cleanup_(sim_chip_freep) SimChip *s = NULL;
    _cleanup_(nt_verifier_freep) NtVerifier *v = NULL;
    _cleanup_(nt_cert_bundle_freep) NtCertBundle *b = NULL;
    _cleanup_(nt_policy_freep) NtPolicy *p = NULL;
    _cleanup_free_ char *canon = NULL;
    NtVerifyOptions o = NT_VERIFY_OPTIONS_INIT;
    uint8_t report_data[64] = {}, rep[SNP_REPORT_SIZE];
    char path[PATH_MAX + 16];
    size_t len = 0;
    int r;

    r = nt_jcs_dump(rd, &canon, &len);
    if (r < 0)
        return r;
    SHA384((const uint8_t *)canon, len, report_data);
    r = sim_chip_load(c->dir, &s);
    if (r < 0)
        return r;
    if (c->vlek && (r = sim_chip_set_signing_key(s, SNP_SIGNING_KEY_VLEK)) < 0)
        return r;
    r = sim_chip_get_report(s, report_data, sim_chip_launch(s)->vmpl, rep);
    if (r < 0)
        return r;
    if ((r = nt_verifier_new(&v)) < 0)
        return r;
    snprintf(path, sizeof path, "%s/ark.pem", c->dir);
    if (trust && (r = nt_verifier_add_trust_anchor_file(v, path)) < 0)
        return r;
    b = nt_cert_bundle_new();
    if (!b)
        return -ENOMEM;
    if ((r = nt_cert_bundle_add_dir(b, c->dir)) < 0)
        return r;
    if (policy_json) {
        r = nt_policy_parse(policy_json, strlen(policy_json), &p, NULL);
        if (r < 0)
            return r;
        o.policy = p;
    }
    return nt_verifier_verify(v, rep, sizeof rep, b, &o, ret);
}

static inline char *tt_measurement_hex(const TtChip *c) {
    _cleanup_(sim_chip_freep) SimChip *s = NULL;
    char *hex = malloc(97);
    if (!hex || sim_chip_load(c->dir, &s) < 0)
        abort();
    for (size_t i = 0; i < 48; i++)
        sprintf(hex + 2 * i, "%02x", sim_chip_launch(s)->measurement[i]);
    return hex;
}
