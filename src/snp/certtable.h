/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The certificate table returned with an extended report (SNP_GET_EXT_REPORT certs buffer,
 * configfs-tsm auxblob, GHCB spec "Certificate table"): entries {guid[16], u32 offset,
 * u32 length} ending with an all-zero entry; offsets are from the start of the table.
 * Parsing is strict: a missing terminator, an entry pointing outside the buffer, overlapping the
 * entry array, or a duplicate GUID is -EBADMSG.
 */
#pragma once

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

typedef enum SnpCertKind {
    SNP_CERT_ARK,
    SNP_CERT_ASK,
    SNP_CERT_VCEK,
    SNP_CERT_VLEK,
    SNP_CERT_OTHER,
    _SNP_CERT_KIND_MAX,
    _SNP_CERT_KIND_INVALID = -EINVAL,
} SnpCertKind;

typedef struct SnpCertEntry {
    uint8_t guid[16];
    SnpCertKind kind;
    const uint8_t *der; /* points into the table buffer */
    size_t der_len;
} SnpCertEntry;

#define SNP_CERT_TABLE_MAX_ENTRIES 64

typedef struct SnpCertTable {
    SnpCertEntry entries[SNP_CERT_TABLE_MAX_ENTRIES];
    size_t n_entries;
} SnpCertTable;

/* Parses buf (untrusted). Entries point into buf, which must outlive the table.
 * Returns 0, -EBADMSG (no terminator, a non-zero terminator, an empty certificate, a certificate
 * outside buf or overlapping the entry array or another certificate, a duplicate GUID), or
 * -E2BIG (more than SNP_CERT_TABLE_MAX_ENTRIES entries). *ret is written only on success.
 * GUIDs are in RFC 4122 byte order; unknown GUIDs get kind SNP_CERT_OTHER. */
int snp_cert_table_parse(const uint8_t *buf, size_t len, SnpCertTable *ret);
/* Finds the first entry of a kind, or NULL. */
const SnpCertEntry *snp_cert_table_find(const SnpCertTable *t, SnpCertKind kind);
/* Builds a table (terminator included) from DER certs; kinds[i] gives the GUID. Returns 0 and a
 * malloc'd buffer, or -EINVAL (kind OTHER or invalid, a kind twice, an empty cert), -E2BIG (too
 * many), -EOVERFLOW (over 4 GiB), -ENOMEM. */
int snp_cert_table_build(const SnpCertKind *kinds, const uint8_t *const *ders,
                         const size_t *der_lens, size_t n, uint8_t **ret, size_t *ret_len);
const char *snp_cert_kind_to_string(SnpCertKind k);
