/* SPDX-License-Identifier: Apache-2.0 */
/*
 * AMD SEV-SNP certificates: roles, AMD's VCEK/VLEK extensions, signature-scheme checks, and the
 * bundle of certificates that arrives with (or is found for) a report.
 *
 * Invariants: nothing here trusts a certificate. Role detection and extension parsing only
 * describe what a certificate claims; trust comes from verify.c, which chains every endorsement
 * key to a configured anchor. All certificate signatures must be RSASSA-PSS with SHA-384,
 * MGF1-SHA-384 and a 48-byte salt, exactly as AMD issues them; any other scheme is refused.
 * A bundle keeps DER bytes only and parses lazily, so that a verifier with a cached chain never
 * re-parses certificates on its hot path.
 */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/x509.h>

#include "core/macro.h"
#include "snp/certtable.h"
#include "snp/report.h"

typedef enum NtCertRole {
    NT_CERT_ROLE_ARK,  /* AMD Root Key, self-signed */
    NT_CERT_ROLE_ASK,  /* AMD SEV Key, signs VCEKs */
    NT_CERT_ROLE_ASVK, /* AMD SEV VLEK Key, signs VLEKs */
    NT_CERT_ROLE_VCEK, /* chip endorsement key */
    NT_CERT_ROLE_VLEK, /* cloud-provider (CSP) endorsement key */
    _NT_CERT_ROLE_MAX,
    _NT_CERT_ROLE_INVALID = -EINVAL, /* also "unknown: detect it" when adding to a bundle */
} NtCertRole;

const char *nt_cert_role_to_string(NtCertRole r); /* "ARK", "ASK", "ASVK", "VCEK", "VLEK" */

/* AMD's extensions under 1.3.6.1.4.1.3704.1 on a VCEK or VLEK. */
typedef struct NtAmdExt {
    int struct_version;    /* .1, -1 if absent */
    char product_name[32]; /* .2, "" if absent, e.g. "Milan-B0" */
    bool has_bl, has_tee, has_snp, has_ucode, has_fmc;
    SnpTcb spl;       /* .3.1 bl, .3.2 tee, .3.3 snp, .3.8 ucode, .3.9 fmc */
    uint8_t hwid[64]; /* .4 */
    size_t hwid_len;  /* 0 if absent */
    char csp_id[128]; /* .5 (VLEK), "" if absent */
} NtAmdExt;

/* Parses AMD's extensions of a certificate. Returns 0, or -EBADMSG if an extension is present
 * but malformed (an SPL outside 0..255, a product name that is not an IA5String, a hwID other
 * than 8 or 64 raw bytes or those bytes in one DER OCTET STRING, duplicates). Absent extensions are
 * reported as absent, not as errors. */
int nt_cert_amd_ext(X509 *x, NtAmdExt *ret);

/* Detects the role a certificate claims from its subject CN and AMD's extensions, which must
 * agree: "SEV-VCEK" with a hwID and no cspID, "SEV-VLEK" with a cspID and no hwID; "ARK-<product>",
 * "SEV-VLEK-<product>", "SEV-<product>" (product exactly Milan, Genoa or Turin) with neither.
 * Returns the role or _NT_CERT_ROLE_INVALID. */
NtCertRole nt_cert_role_detect(X509 *x);
/* The product an ARK/ASK/ASVK names in its subject CN (suffix after "ARK-", "SEV-",
 * "SEV-VLEK-"), or _SNP_PRODUCT_INVALID. */
SnpProduct nt_cert_ca_product(X509 *x);

/* RFC 5280 4.1.2.5 encoding of a validity time: UTCTime YYMMDDHHMMSSZ for years before 2050,
 * GeneralizedTime YYYYMMDDHHMMSSZ from 2050 (seconds present, no fraction, no offset), and a real
 * date. Returns 0 or -EBADMSG. */
int nt_asn1_time_check_rfc5280(const ASN1_TIME *t);
/* The structural profile of an AMD certificate claiming role (RFC 5280 and AMD's issuance):
 * X.509 v3 with extensions, RFC 5280 validity encodings, no extension twice (any OID), every
 * extension OpenSSL knows decoding strictly as DER, AMD's extensions well-formed, the subject CN
 * agreeing with the extensions for role (nt_cert_role_detect()), and productName present on a
 * VCEK/VLEK. Signatures, issuers and validity periods are checked elsewhere. Returns 0 or
 * -EBADMSG with what is wrong in why. */
int nt_cert_check_profile(X509 *x, NtCertRole role, char *why, size_t why_size);
/* nt_cert_check_profile() for x, whose DER is der, remembered for the certificates seen last
 * (by the SHA-256 of der and role): a certificate is checked in full the first time only.
 * Thread-safe. */
int nt_cert_check_profile_memo(const uint8_t *der, size_t der_len, X509 *x, NtCertRole role,
                               char *why, size_t why_size);
/* CA constraints of an ARK/ASK/ASVK (RFC 5280 6.1.4 (k), (n)): basicConstraints critical with
 * CA:TRUE and keyUsage with keyCertSign. Returns 0 or -EKEYREJECTED with what is missing in why. */
int nt_cert_check_ca(X509 *x, char *why, size_t why_size);

/* Checks that an AlgorithmIdentifier is RSASSA-PSS with SHA-384, MGF1 with SHA-384, salt length
 * 48 and trailer field 1 (explicit or default). Returns 0 or -EOPNOTSUPP. */
int nt_sig_algor_check_pss(const X509_ALGOR *alg);
/* Checks that the certificate's signature algorithm (outer and TBS) is RSASSA-PSS with SHA-384,
 * MGF1 with SHA-384, salt length 48 and trailer field 1. Returns 0 or -EOPNOTSUPP. */
int nt_cert_check_sig_scheme(X509 *x);
/* Checks the scheme and verifies that issuer's public key (RSA, 4096 bits) signed x, and that
 * x's issuer name equals issuer's subject. Returns 0, -EOPNOTSUPP (scheme, key type/size) or
 * -EKEYREJECTED (wrong issuer or bad signature). */
int nt_cert_verify_signed_by(X509 *x, X509 *issuer);
/* Validity at time at: 0, -EKEYEXPIRED (after notAfter) or -EKEYREJECTED (before notBefore). */
int nt_cert_check_time(X509 *x, time_t at);
/* notBefore / notAfter as time_t. Returns 0 or -EBADMSG. */
int nt_cert_validity(X509 *x, time_t *ret_not_before, time_t *ret_not_after);
/* An ASN.1 UTCTime/GeneralizedTime as time_t. Returns 0 or -EBADMSG. */
int nt_asn1_time_to_time_t(const ASN1_TIME *a, time_t *ret);
/* Formats t as "2025-12-10T22:14:21Z" into buf (size >= 21). */
void nt_format_time(time_t t, char buf[static 32]);
/* Parses "YYYY-MM-DDTHH:MM:SSZ" (or with +00:00, or a bare "@<unix seconds>"). Returns 0 or
 * -EINVAL. */
int nt_parse_time(const char *s, time_t *ret);

/* Parses one DER certificate (untrusted). Returns 0 or -EBADMSG (also for trailing bytes). */
int nt_cert_from_der(const uint8_t *der, size_t len, X509 **ret);

/* ---- The certificate bundle ---- */

#define NT_CERT_BUNDLE_MAX 16

typedef struct NtCertBundleEntry {
    NtCertRole role; /* declared role (file name, table GUID, or detected when added) */
    uint8_t *der;
    size_t der_len;
    char origin[128]; /* "vcek.pem", "cert table entry 0 (VCEK)", ... for messages */
} NtCertBundleEntry;

typedef struct NtCertBundle {
    NtCertBundleEntry entries[NT_CERT_BUNDLE_MAX];
    size_t n_entries;
} NtCertBundle;

/* Allocates an empty bundle. Returns NULL on OOM. */
NtCertBundle *nt_cert_bundle_new(void);
NtCertBundle *nt_cert_bundle_free(NtCertBundle *b);
DEFINE_TRIVIAL_CLEANUP_FUNC(NtCertBundle *, nt_cert_bundle_free);

/* Adds a certificate given as DER or PEM (one certificate; several PEM blocks add several).
 * role may be _NT_CERT_ROLE_INVALID: the role is then detected from the certificate (parsed
 * once, here). origin (may be NULL) names the source in messages. Returns 0, -EBADMSG
 * (unparseable or, for an unknown role, unrecognisable certificate), -E2BIG (bundle full),
 * -ENOMEM. On failure the bundle is unchanged. */
int nt_cert_bundle_add(NtCertBundle *b, const uint8_t *data, size_t len, NtCertRole role,
                       const char *origin);
/* Adds every entry of an extended-report certificate table (certtable.h). VCEK, VLEK and ARK
 * GUIDs declare the role; ASK-GUID entries (which carry an ASVK in VLEK tables) and unknown GUIDs
 * are detected from the certificate, and an unknown-GUID entry that is not an AMD certificate is
 * ignored (hosts may add their own). Returns 0, -ENOENT (no certificates), -EBADMSG (malformed
 * table or an AMD-GUID entry that is not a certificate) or -ENOMEM; the bundle is unchanged on
 * failure. */
int nt_cert_bundle_add_table(NtCertBundle *b, const uint8_t *table, size_t len);
/* Adds ark, ask, asvk, vcek, vlek from dir, each as NAME.pem, NAME.der, NAME.crt or NAME.cer
 * (PEM or DER). Returns 0 (at least one found), -ENOENT (none), or a negative errno. */
int nt_cert_bundle_add_dir(NtCertBundle *b, const char *dir);
/* Adds a file holding one or more certificates; roles are detected. */
int nt_cert_bundle_add_file(NtCertBundle *b, const char *path);
/* First entry with the given declared role, or NULL. */
const NtCertBundleEntry *nt_cert_bundle_find(const NtCertBundle *b, NtCertRole role);

/* ---- Where missing endorsement-key certificates come from ----
 * A VcekSource supplies the VCEK/VLEK (and optionally its intermediate) for a report when the
 * evidence did not carry it. None is built in: nitride never goes to the network. The
 * attestation service can install one that fetches from AMD KDS
 * (/vcek/v1/{product}/{hwid}?blSPL=..) through an on-disk cache. */
typedef struct NtVcekSource {
    const char *name;
    /* Adds the certificates for report r (product p, role VCEK or VLEK) to bundle: the
     * endorsement key and, if it has it, its ASK/ASVK (and ARK). Called when the evidence lacks
     * the endorsement key, and also when it has it without its intermediate (a supplied
     * duplicate of the endorsement key is then ignored). Returns 0, -ENOENT (has none), or a
     * negative errno (-EAGAIN, -EHOSTUNREACH, -ETIMEDOUT, ...): when the chain cannot be built
     * without the source, "certificates" fails with that errno, naming the source. Must be
     * thread-safe. */
    int (*fetch)(void *userdata, const SnpReport *r, SnpProduct p, NtCertRole role,
                 NtCertBundle *bundle);
    /* Optional, for NtVerifyOptions.local_only: as fetch, from what is at hand (memory, local
     * files) without going to the network or waiting for another thread's fetch; -EREMOTE where
     * fetch would have to. NULL: a local_only verification that needs the source is -EREMOTE. */
    int (*fetch_local)(void *userdata, const SnpReport *r, SnpProduct p, NtCertRole role,
                       NtCertBundle *bundle);
    void *userdata;
} NtVcekSource;
