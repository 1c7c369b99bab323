/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Private to src/snp: what each evidence provider implements, and the constructor the
 * implementations share. A provider owns its impl and frees it with ops->done.
 */
#pragma once

#include "snp/provider.h"

typedef struct SnpProviderOps {
    /* ret_certs == NULL: a plain report; else an extended report with the certificate table. */
    int (*get_report)(void *impl, const uint8_t report_data[64], uint32_t vmpl,
                      uint8_t **ret_report, size_t *ret_report_len, uint8_t **ret_certs,
                      size_t *ret_certs_len);
    /* NULL when the provider cannot derive keys. */
    int (*get_derived_key)(void *impl, const SnpDerivedKeyRequest *req, Secret **ret_key);
    void (*done)(void *impl);
} SnpProviderOps;

/* Takes ownership of impl (also on failure: ops->done is called). */
int snp_provider_new(const char *name, const char *detail, const SnpProviderOps *ops, void *impl,
                     SnpProvider **ret);
