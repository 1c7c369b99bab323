/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target for snp_report_parse() (untrusted: any report a guest, host or network peer hands
 * us). For every accepted input it also checks the parser's contract: serialize(parse(b)) == b,
 * and the printers and TCB decoders run over every product without crashing. The version field
 * is nudged to a supported value half of the time so that inputs get past the version check and
 * reach the field checks.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "snp/report.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const uint8_t *buf, size_t len) {
    SnpReport r;
    const char *err = NULL;
    uint8_t out[SNP_REPORT_SIZE];

    if (snp_report_parse(buf, len, &r, &err) < 0) {
        if (!err)
            abort(); /* every failure names its reason */
        return;
    }
    snp_report_serialize(&r, out);
    if (memcmp(out, buf, SNP_REPORT_SIZE) != 0)
        abort();

    FILE *null = fopen("/dev/null", "we");
    if (null) {
        snp_report_print(&r, _SNP_PRODUCT_INVALID, null);
        snp_report_print(&r, SNP_PRODUCT_TURIN, null);
        (void)fclose(null);
    }
    for (SnpProduct p = 0; p < _SNP_PRODUCT_MAX; p++) {
        json_t *j = snp_report_to_json(&r, p);
        SnpTcb t;
        json_decref(j);
        if (snp_tcb_decode(r.reported_tcb, p, &t) == 0 && snp_tcb_encode(&t, p) != r.reported_tcb)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    check(data, size);
    if (size == SNP_REPORT_SIZE) {
        static const uint32_t versions[] = {2, 3, 5};
        uint8_t buf[SNP_REPORT_SIZE];
        memcpy(buf, data, size);
        buf[0] = (uint8_t)versions[data[1] % 3];
        buf[1] = buf[2] = buf[3] = 0;
        check(buf, size);
    }
    return 0;
}
