/* SPDX-License-Identifier: Apache-2.0 */
/*
 * For tests/integration/token-jwcrypto.sh: issues an EAR token from a simulated chip's verdict and
 * writes it with the JWKS, so that an independent JOSE implementation can verify it.
 * Usage: ear-issue-tool OUTDIR milan|genoa|turin vcek|vlek es256|es384
 * Writes OUTDIR/token, OUTDIR/jwks.json, OUTDIR/runtime-data.json, OUTDIR/claims.json.
 */
#include <stdio.h>

#include "token/ear.h"
#include "tt-util.h"

static int write_text(const char *dir, const char *name, const char *text) {
    char p[PATH_MAX + 64];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0)
        return -EIO;
    return 0;
}

static int write_json(const char *dir, const char *name, const json_t *j) {
    _cleanup_free_ char *t = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
    return t ? write_text(dir, name, t) : -ENOMEM;
}

int main(int argc, char **argv) {
    _cleanup_(nt_signing_keys_freep) NtSigningKeys *keys = NULL;
    _cleanup_(nt_verdict_freep) NtVerdict *v = NULL;
    _cleanup_free_ char *token = NULL, *err = NULL;
    json_auto_t *rd = NULL, *claims = NULL, *jwks = NULL;
    char kd[PATH_MAX + 16];
    int r;

    if (argc != 5) {
        fprintf(stderr, "usage: %s OUTDIR milan|genoa|turin vcek|vlek es256|es384\n", argv[0]);
        return 2;
    }
    const char *out = argv[1];
    TtChip chip = {.name = "chip",
                   .product = snp_product_from_string(argv[2]),
                   .vlek = streq(argv[3], "vlek")};
    NtJwsAlg alg = streq(argv[4], "es256") ? NT_JWS_ES256 : NT_JWS_ES384;
    if (chip.product < 0)
        return 2;
    if ((r = tt_chip_init(&chip, out)) < 0) {
        fprintf(stderr, "sim_chip_init: %s\n", strerror(-r));
        return 1;
    }
    rd = tt_runtime_data("jwcrypto-nonce", "P-384");
    if ((r = tt_verdict(&chip, rd, NULL, true, &v)) < 0 || nt_verdict_status(v) != NT_VERDICT_OK) {
        fprintf(stderr, "verdict failed\n");
        return 1;
    }
    snprintf(kd, sizeof kd, "%s/keys", out);
    if ((r = nt_signing_keys_open_dir(kd, alg, &keys, &err)) < 0) {
        fprintf(stderr, "keys: %s\n", err ? err : strerror(-r));
        return 1;
    }
    NtEarInput in = {.verdict = v,
                     .runtime_data = rd,
                     .policy_id = "default",
                     .issuer = "https://attestd.test",
                     .audience = "kmsd"};
    if ((r = nt_ear_issue(keys, &in, &token, &claims)) < 0) {
        fprintf(stderr, "issue: %s\n", strerror(-r));
        return 1;
    }
    jwks = nt_signing_keys_jwks(keys, 0);
    if (!jwks || write_text(out, "token", token) < 0 || write_json(out, "jwks.json", jwks) < 0 ||
        write_json(out, "runtime-data.json", rd) < 0 || write_json(out, "claims.json", claims) < 0)
        return 1;
    return 0;
}
