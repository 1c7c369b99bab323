/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target for the appraisal policy parser (nt_policy_parse: JSON from a file or, in the
 * attestation service, from a tenant). Checks the parser's contract: a failure returns -EBADMSG
 * (or -ENOMEM) with a message and writes no policy; an accepted policy can be applied to a report
 * of every product and signer, and the verdict serialises to JSON.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "verify/policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    NtPolicy *p = (NtPolicy *)0x1;
    char *err = NULL;
    int r;

    if (size > 256 * 1024)
        return 0;
    r = nt_policy_parse((const char *)data, size, &p, &err);
    if (r < 0) {
        if (p != (NtPolicy *)0x1)
            abort(); /* written on failure */
        if (r != -EBADMSG && r != -ENOMEM)
            abort();
        if (r == -EBADMSG && !err)
            abort(); /* every rejection names its reason */
        free(err);
        return 0;
    }
    if (err || !p)
        abort();

    SnpReport rep;
    memset(&rep, 0, sizeof rep);
    rep.version = 3;
    rep.policy = SNP_POLICY_RESERVED_1 | SNP_POLICY_SMT | SNP_POLICY_DEBUG;
    rep.flags = SNP_FLAG_MASK_CHIP_KEY;
    memset(rep.measurement, 0xa1, sizeof rep.measurement);
    rep.reported_tcb = 0x7308000000000003ull;
    for (int prod = 0; prod < _SNP_PRODUCT_MAX; prod++)
        for (int role = NT_CERT_ROLE_VCEK; role <= NT_CERT_ROLE_VLEK; role++) {
            NtVerdict *v = nt_verdict_new();
            if (!v)
                break;
            nt_policy_apply(p, &rep, (SnpProduct)prod, (NtCertRole)role, v);
            if (v->n_checks == 0 || nt_verdict_status(v) == NT_VERDICT_INVALID)
                abort(); /* policy checks never classify evidence as invalid */
            json_t *j = nt_verdict_to_json(v);
            json_decref(j);
            nt_verdict_free(v);
        }
    nt_policy_free(p);
    return 0;
}
