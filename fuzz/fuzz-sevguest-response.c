/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target for the sev-guest provider's handling of what the host and firmware hand back
 * (untrusted: a malicious hypervisor controls the certificate buffer, the VMM error and the
 * length it asks for). Input layout: byte 0 selects the request (report, extended report,
 * derived key); bytes 1..4 are the vmm_error/fw_error/needed-length knobs of the first answer;
 * the rest fills the response message and then the certificate buffer. The provider must either
 * fail cleanly or return a report of exactly SNP_REPORT_SIZE bytes and a certificate table that
 * parses.
 */
#include <stdlib.h>
#include <string.h>

#include "snp/certtable.h"
#include "snp/provider-sevguest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct Input {
    const uint8_t *data;
    size_t size;
    unsigned calls;
} Input;

static int transport(void *userdata, unsigned long request, struct snp_guest_request_ioctl *io) {
    Input *in = userdata;
    size_t resp_size = request == SNP_GET_DERIVED_KEY ? 64 : 4000, n;
    uint8_t knob = in->size > 1 ? in->data[1] : 0;

    in->calls++;
    n = in->size > 5 ? in->size - 5 : 0;
    memset((void *)(uintptr_t)io->resp_data, 0, resp_size);
    memcpy((void *)(uintptr_t)io->resp_data, in->data + 5, n < resp_size ? n : resp_size);
    if (request == SNP_GET_EXT_REPORT) {
        struct snp_ext_report_req *ext = (struct snp_ext_report_req *)(uintptr_t)io->req_data;
        if (in->calls == 1 && (knob & 1)) {
            /* "invalid length": ask for a host-chosen size */
            uint32_t need = in->size > 4 ? (uint32_t)in->data[2] << 16 |
                                               (uint32_t)in->data[3] << 8 | in->data[4]
                                         : 0;
            ext->certs_len = need;
            io->vmm_error = SNP_GUEST_VMM_ERR_INVALID_LEN;
            return -EIO;
        }
        if (n > resp_size) {
            size_t c = n - resp_size;
            memcpy((void *)(uintptr_t)ext->certs_address, in->data + 5 + resp_size,
                   c < ext->certs_len ? c : ext->certs_len);
        }
    }
    if (knob & 2) {
        io->fw_error = in->size > 2 ? in->data[2] : 0;
        io->vmm_error = (knob >> 2) & 3;
        if (io->vmm_error == SNP_GUEST_VMM_ERR_BUSY)
            io->vmm_error = 3; /* keep the fuzzer off the sleeping retry path */
        return -EIO;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Input in = {data, size, 0};
    SnpProvider *p = NULL;
    uint8_t rd[64] = {0}, *rep = NULL, *certs = NULL;
    size_t rep_len = 0, certs_len = 0;
    Secret *key = NULL;
    int r;

    if (size < 1)
        return 0;
    if (snp_provider_sevguest_new(transport, &in, &p) < 0)
        abort();
    switch (data[0] % 3) {
    case 0:
        r = snp_provider_get_report(p, rd, 0, &rep, &rep_len);
        if (r >= 0 && rep_len != SNP_REPORT_SIZE)
            abort();
        break;
    case 1:
        r = snp_provider_get_ext_report(p, rd, 0, &rep, &rep_len, &certs, &certs_len);
        if (r >= 0) {
            SnpCertTable t;
            if (rep_len != SNP_REPORT_SIZE)
                abort();
            if (certs && snp_cert_table_parse(certs, certs_len, &t) < 0)
                abort();
        }
        break;
    default: {
        SnpDerivedKeyRequest req = {.guest_field_select = SNP_GFS_MEASUREMENT};
        r = snp_provider_get_derived_key(p, &req, &key);
        if (r >= 0 && secret_size(key) != 32)
            abort();
        break;
    }
    }
    free(rep);
    free(certs);
    secret_free(key);
    snp_provider_free(p);
    return 0;
}
