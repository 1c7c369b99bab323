/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Trust anchors: AMD's real ARKs (Milan, Genoa, Turin) built in, with their ASKs and the Milan
 * ASVK as known intermediates, plus ARKs the operator adds explicitly (a simulated chip's ark.pem).
 *
 * Invariants: an ARK is accepted as an anchor only if it is self-signed with RSASSA-PSS SHA-384
 * (checked on load), and a built-in intermediate only if its built-in ARK signed it. Nothing that
 * arrives with evidence ever becomes an anchor: an ARK in a certificate bundle is only compared
 * against this set. An anchor set is read-only after setup; verify.c serialises additions.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/x509.h>

#include "verify/chain.h"

/* The generated table (anchors-data.c). */
typedef struct NtBuiltinCert {
    SnpProduct product;
    NtCertRole role;
    const char *pem;
} NtBuiltinCert;
extern const NtBuiltinCert nt_builtin_certs[];
extern const size_t nt_builtin_certs_count;

typedef struct NtAnchor {
    X509 *cert;
    uint8_t *der;
    size_t der_len;
    SnpProduct product;
    NtCertRole role; /* ARK (a trust anchor) or ASK/ASVK (a known intermediate) */
    bool builtin;
    char label[96]; /* "ARK-Milan (built-in)", "ARK-Milan (/path/ark.pem)" */
    /* nt_cert_check_profile() and nt_cert_check_ca() passed; else what failed. A chain ending
     * in (or passing through) an anchor that fails them fails "cert_chain". */
    bool profile_ok;
    char profile_why[128];
} NtAnchor;

#define NT_ANCHORS_MAX 32

typedef struct NtAnchorSet {
    NtAnchor items[NT_ANCHORS_MAX];
    size_t n_items;
} NtAnchorSet;

/* Loads the built-in anchors into an empty set, checking each as described above (once per
 * process: later calls add references to the certificates checked then).
 * Returns 0, or -EBADMSG/-EKEYREJECTED if a built-in certificate fails its check (a build
 * defect), -ENOMEM. */
int nt_anchor_set_load_builtin(NtAnchorSet *s);
/* Adds an ARK given as PEM or DER (one certificate) as a trust anchor. label names its origin.
 * Returns 0, -EBADMSG (not a certificate, or not an ARK: CN must be "ARK-<product>"),
 * -EOPNOTSUPP (not RSASSA-PSS SHA-384 / RSA-4096), -EKEYREJECTED (not self-signed), -E2BIG,
 * -ENOMEM. Adding an anchor already present is a no-op. */
int nt_anchor_set_add_ark(NtAnchorSet *s, const uint8_t *data, size_t len, const char *label);
/* Frees every anchor; the set is empty afterwards. */
void nt_anchor_set_clear(NtAnchorSet *s);
/* The trust anchor (an ARK) with exactly these DER bytes; NULL if none. */
const NtAnchor *nt_anchor_set_find_ark_der(const NtAnchorSet *s, const uint8_t *der, size_t len);
/* The trust anchor (an ARK) with x's public key; NULL if none. */
const NtAnchor *nt_anchor_set_find_ark_key(const NtAnchorSet *s, X509 *x);
/* The trust anchor (an ARK) equal to x, by DER bytes or by public key; NULL if none. */
const NtAnchor *nt_anchor_set_find_ark(const NtAnchorSet *s, X509 *x);
