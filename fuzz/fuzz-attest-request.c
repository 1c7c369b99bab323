/* SPDX-License-Identifier: Apache-2.0 */
/* attestd's request parsing: POST /v1/attest and /v1/challenge bodies (untrusted network input),
 * then what the service derives from a parsed request before verification: the runtime-data
 * binding (RFC 8785) and the certificate bundle. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "attestd/request.h"
#include "core/log.h"
#include "snp/report.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    AttestdAttestRequest r;
    AttestdError e;
    uint8_t binding[64];

    log_set_max_level(LOG_CRIT);
    (void)attestd_challenge_request_parse(data, size, &e);
    if (attestd_attest_request_parse(data, size, &r, &e) == 0) {
        SnpReport rep;
        const char *err = NULL;
        /* Everything the parser accepted is well formed. */
        if (r.report_len != SNP_REPORT_SIZE || !r.nonce || !r.runtime_data || !r.certs)
            __builtin_trap();
        (void)attestd_runtime_binding(r.runtime_data, binding);
        (void)snp_report_parse(r.report, r.report_len, &rep, &err);
        attestd_attest_request_done(&r);
    } else if (e.status < 400 || e.status > 499 || !e.check || !e.error[0])
        __builtin_trap(); /* every refusal says what failed */
    return 0;
}
