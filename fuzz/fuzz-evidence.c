/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target for the evidence path of the verifier: a report followed by an extended-report
 * certificate table (report || table), or, for inputs shorter than a report, a certificate
 * bundle (PEM or DER). Exercises the certificate role detection, AMD extension parser, the
 * RFC 5280 profile and CA checks (time encodings, duplicate and malformed extensions), PSS
 * parameter checks, chain building against the built-in anchors, the chain cache and the verdict
 * serialisation. Contract checked: verification never fails for any reason but resources, a
 * verdict for unparseable certificates is never "pass", and a pass requires every evidence check.
 */
#include <stdlib.h>
#include <string.h>

#include "verify/verify.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static NtVerifier *verifier;

static void poke_certs(const NtCertBundle *b) {
    for (size_t i = 0; i < b->n_entries; i++) {
        X509 *x = NULL;
        NtAmdExt e;
        if (nt_cert_from_der(b->entries[i].der, b->entries[i].der_len, &x) < 0)
            continue;
        (void)nt_cert_role_detect(x);
        (void)nt_cert_ca_product(x);
        (void)nt_cert_amd_ext(x, &e);
        (void)nt_cert_check_sig_scheme(x);
        {
            char why[128] = "";
            NtCertRole role = nt_cert_role_detect(x);
            if (nt_cert_check_profile(x, role >= 0 ? role : b->entries[i].role, why, sizeof why) <
                    0 &&
                !why[0])
                abort(); /* a refusal always says why */
            (void)nt_cert_check_ca(x, why, sizeof why);
            (void)nt_asn1_time_check_rfc5280(X509_get0_notBefore(x));
        }
        X509_free(x);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    NtCertBundle *b;
    NtVerdict *v = NULL;
    int r;

    if (size > 64 * 1024)
        return 0;
    if (!verifier && nt_verifier_new(&verifier) < 0)
        abort();
    b = nt_cert_bundle_new();
    if (!b)
        return 0;
    if (size < SNP_REPORT_SIZE) {
        if (nt_cert_bundle_add(b, data, size, _NT_CERT_ROLE_INVALID, "fuzz") >= 0)
            poke_certs(b);
        nt_cert_bundle_free(b);
        return 0;
    }
    (void)nt_cert_bundle_add_table(b, data + SNP_REPORT_SIZE, size - SNP_REPORT_SIZE);
    poke_certs(b);
    r = nt_verifier_verify(verifier, data, SNP_REPORT_SIZE, b, NULL, &v);
    if (r < 0 && r != -ENOMEM)
        abort();
    if (r >= 0) {
        if (nt_verdict_status(v) == NT_VERDICT_OK) {
            static const char *const must[] = {
                "report_format", "signing_key",      "certificates", "ark",        "cert_chain",
                "cert_validity", "report_signature", "product",      "tcb_vs_cert"};
            for (size_t i = 0; i < sizeof must / sizeof must[0]; i++) {
                const NtCheck *c = nt_verdict_find(v, must[i]);
                if (!c || c->result != NT_CHECK_PASS)
                    abort();
            }
        }
        json_t *j = nt_verdict_to_json(v);
        json_decref(j);
        nt_verdict_free(v);
    }
    nt_cert_bundle_free(b);
    return 0;
}
