/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target for snp_cert_table_parse() (untrusted: the host fills the extended-report
 * certificate buffer). Checks the parser's invariants on every accepted table: each entry lies
 * inside the buffer after the entry array, is non-empty, and rebuilding a table from the known
 * kinds parses back to the same certificates.
 */
#include <stdlib.h>
#include <string.h>

#include "snp/certtable.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    SnpCertTable t;
    SnpCertKind kinds[SNP_CERT_TABLE_MAX_ENTRIES];
    const uint8_t *ders[SNP_CERT_TABLE_MAX_ENTRIES];
    size_t lens[SNP_CERT_TABLE_MAX_ENTRIES], n = 0;
    uint8_t *tab = NULL;
    size_t tab_len = 0;

    if (snp_cert_table_parse(data, size, &t) < 0)
        return 0;
    if (t.n_entries > SNP_CERT_TABLE_MAX_ENTRIES)
        abort();
    for (size_t i = 0; i < t.n_entries; i++) {
        const SnpCertEntry *e = t.entries + i;
        if (e->der_len == 0 || e->der < data + (t.n_entries + 1) * 24 ||
            e->der_len > (size_t)(data + size - e->der))
            abort();
        if (snp_cert_kind_to_string(e->kind) == NULL)
            abort();
        if (e->kind != SNP_CERT_OTHER) {
            if (snp_cert_table_find(&t, e->kind) != e)
                abort(); /* GUIDs are unique, so the first of a kind is this one */
            kinds[n] = e->kind;
            ders[n] = e->der;
            lens[n] = e->der_len;
            n++;
        }
    }
    if (snp_cert_table_build(kinds, ders, lens, n, &tab, &tab_len) == 0) {
        SnpCertTable back;
        if (snp_cert_table_parse(tab, tab_len, &back) < 0 || back.n_entries != n)
            abort();
        for (size_t i = 0; i < n; i++)
            if (back.entries[i].kind != kinds[i] || back.entries[i].der_len != lens[i] ||
                memcmp(back.entries[i].der, ders[i], lens[i]) != 0)
                abort();
        free(tab);
    } else
        abort();
    return 0;
}
