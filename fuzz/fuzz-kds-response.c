/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target for the validation of AMD KDS response bodies (verify/kds.h): a VCEK (DER), a
 * cert_chain (PEM) and a CRL (DER) come from the network and must be refused unless they are
 * exactly what was asked for. Input: byte 0 selects the check (0 VCEK, 1 VCEK cert_chain,
 * 2 VLEK cert_chain, 3 CRL), byte 1 the product, bytes 2..65 the requested hwID, 66..70 the
 * requested TCB (fmc, bl, tee, snp, ucode), the rest is the body. Invariants: an accepted VCEK
 * really carries the requested hwID and TCB; an accepted body stays accepted when checked again
 * (the cache re-validates what it reads back).
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>

#include "verify/kds.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *hwid, *body;
    SnpProduct p;
    SnpTcb tcb;
    size_t len;
    int r;

    if (size < 71)
        return 0;
    p = (SnpProduct)(data[1] % _SNP_PRODUCT_MAX);
    hwid = data + 2;
    tcb = (SnpTcb){.fmc = data[66],
                   .bootloader = data[67],
                   .tee = data[68],
                   .snp = data[69],
                   .microcode = data[70]};
    body = data + 71;
    len = size - 71;

    switch (data[0] % 4) {
    case 0:
        r = nt_kds_check_vcek(body, len, p, hwid, 64, &tcb);
        if (r == 0) {
            const unsigned char *q = body;
            X509 *x = d2i_X509(NULL, &q, (long)len);
            NtAmdExt e;
            size_t hl = p == SNP_PRODUCT_TURIN ? 8 : 64;
            if (!x || nt_cert_amd_ext(x, &e) < 0 || e.hwid_len < hl ||
                memcmp(e.hwid, hwid, hl) != 0 || e.spl.bootloader != tcb.bootloader ||
                e.spl.tee != tcb.tee || e.spl.snp != tcb.snp || e.spl.microcode != tcb.microcode ||
                nt_cert_role_detect(x) != NT_CERT_ROLE_VCEK)
                abort();
            X509_free(x);
            if (nt_kds_check_vcek(body, len, p, hwid, 64, &tcb) != 0)
                abort();
        } else if (r != -EBADMSG)
            abort();
        break;
    case 1:
    case 2:
        r = nt_kds_check_chain(body, len, p, data[0] % 4 == 2);
        if (r != 0 && r != -EBADMSG && r != -ENOMEM)
            abort();
        if (r == 0 && nt_kds_check_chain(body, len, p, data[0] % 4 == 2) != 0)
            abort();
        break;
    default:
        r = nt_kds_check_crl(body, len);
        if (r != 0 && r != -EBADMSG)
            abort();
        break;
    }
    return 0;
}
