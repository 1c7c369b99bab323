/* SPDX-License-Identifier: Apache-2.0 */
/*
 * AMD's certificate revocation lists (KDS /vcek/v1/{product}/crl): an X.509 CRL per product,
 * issued and signed by the product's ARK with RSASSA-PSS SHA-384 (the scheme of AMD's
 * certificates, see chain.h).
 *
 * Invariants: a CRL is untrusted input until nt_crl_verify_signed_by() has checked it against
 * the ARK the chain ends in. Parsing is strict (no trailing bytes, nextUpdate required, no
 * critical extension anywhere, serials non-negative and at most NT_SERIAL_MAX bytes) and done
 * once: an NtCrl keeps the revoked serials sorted so that a revocation check is a binary search.
 * An NtCrl is read-only after nt_crl_parse() and may be shared between threads.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/x509.h>

#include "core/macro.h"

#define NT_CRL_MAX_SIZE (4u * 1024u * 1024u)
#define NT_SERIAL_MAX 32

/* A certificate serial number: the big-endian magnitude without leading zero bytes (serial 0
 * has len 0). */
typedef struct NtSerial {
    uint8_t len;
    uint8_t b[NT_SERIAL_MAX];
} NtSerial;

/* Converts a serial number. Returns 0, or -EBADMSG (negative, or longer than NT_SERIAL_MAX). */
int nt_serial_from_asn1(const ASN1_INTEGER *i, NtSerial *ret);
/* "0x010001", "0x00" for serial 0. buf of size >= 2 * NT_SERIAL_MAX + 3. */
void nt_serial_format(const NtSerial *s, char *buf, size_t size);

typedef struct NtCrlEntry {
    NtSerial serial;
    time_t revoked_at;
} NtCrlEntry;

typedef struct NtCrl {
    X509_CRL *crl;
    time_t this_update, next_update;
    NtCrlEntry *revoked; /* sorted by serial; duplicates kept (the earliest date is found) */
    size_t n_revoked;
    char issuer_cn[64]; /* for messages */
} NtCrl;

/* Parses a DER CRL (untrusted). Returns 0 and a new NtCrl, -EBADMSG (malformed, trailing bytes,
 * larger than NT_CRL_MAX_SIZE, no nextUpdate, a critical extension, a bad serial or date) or
 * -ENOMEM. */
int nt_crl_parse(const uint8_t *der, size_t len, NtCrl **ret);
NtCrl *nt_crl_free(NtCrl *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(NtCrl *, nt_crl_free);

/* The CRL's signature algorithm (outer and TBS, which must be equal) is RSASSA-PSS SHA-384,
 * MGF1-SHA-384, salt 48 (nt_sig_algor_check_pss()). Returns 0 or -EOPNOTSUPP. */
int nt_crl_check_sig_scheme(const NtCrl *c);
/* Checks the scheme, that the CRL's issuer equals ark's subject and that ark's key (RSA-4096)
 * signed it. Returns 0, -EOPNOTSUPP (scheme, key) or -EKEYREJECTED (issuer, signature). */
int nt_crl_verify_signed_by(const NtCrl *c, X509 *ark);
/* Freshness at time at: 0, -EKEYREJECTED (thisUpdate after at) or -EKEYEXPIRED (at is more
 * than max_staleness_s after nextUpdate; max_staleness_s < 0 counts as 0). */
int nt_crl_check_time(const NtCrl *c, time_t at, int64_t max_staleness_s);
/* The entry revoking serial s, or NULL. */
const NtCrlEntry *nt_crl_find(const NtCrl *c, const NtSerial *s);
