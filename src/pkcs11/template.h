/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Parsing of application templates (CK_ATTRIBUTE arrays) for key generation and object search,
 * and of CKA_EC_PARAMS. Everything here reads application memory only within the lengths the
 * application gave, copies what it keeps, and holds no key material. Fuzzed by
 * fuzz/fuzz-pkcs11-template.c.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <p11-kit/pkcs11.h>

typedef enum P11Curve {
    P11_CURVE_P256,
    P11_CURVE_P384,
    P11_CURVE_ED25519,
    _P11_CURVE_MAX,
    _P11_CURVE_INVALID = -22,
} P11Curve;

/* The curve named by DER CKA_EC_PARAMS (an OID, or for Ed25519 also the PrintableString
 * "edwards25519" of PKCS#11 3.0). -EBADMSG: not DER of either form; -EOPNOTSUPP: another
 * curve. */
int p11_curve_from_ec_params(const void *p, size_t n);
/* The canonical CKA_EC_PARAMS (the OID) of a curve; NULL for an invalid curve. */
const uint8_t *p11_curve_ec_params(P11Curve c, size_t *ret_len);

/* A tri-state boolean of a template: absent, false, true. */
typedef enum P11Tri { P11_TRI_ABSENT = -1, P11_TRI_FALSE = 0, P11_TRI_TRUE = 1 } P11Tri;

#define P11_LABEL_MAX 128
#define P11_ID_MAX 128

#define P11_RSA_N_COMPONENTS 8

/* What a key generation template asks for. */
typedef struct P11KeyTemplate {
    bool has_class, has_key_type;
    CK_OBJECT_CLASS cls;
    CK_KEY_TYPE key_type;
    bool has_label, has_id;
    char label[P11_LABEL_MAX + 1];
    uint8_t id[P11_ID_MAX];
    size_t id_len;
    P11Tri token, private_, sensitive, extractable, modifiable;
    P11Tri copyable; /* branch obj: C_CopyObject */
    P11Tri sign, verify, encrypt, decrypt, wrap, unwrap, derive;
    CK_ULONG value_len;    /* 0 = absent */
    CK_ULONG modulus_bits; /* 0 = absent */
    bool has_public_exponent;
    bool public_exponent_f4; /* the exponent given is 65537 */
    int curve;               /* P11Curve, or -1 = absent */
    /* CKA_VALUE (C_CreateObject): points into the application's template, not copied; only
     * for the duration of the call. NULL = absent. */
    const void *value;
    size_t value_size;
    /* RSA components (C_CreateObject), pointing into the template likewise: CKA_MODULUS,
     * PUBLIC_EXPONENT, PRIVATE_EXPONENT, PRIME_1, PRIME_2, EXPONENT_1, EXPONENT_2, COEFFICIENT.
     * NULL = absent. A generation template with CKA_MODULUS is refused by its caller. */
    const CK_ATTRIBUTE *rsa[P11_RSA_N_COMPONENTS];
    P11Tri trusted, wrap_with_trusted; /* hard-wrap: CKA_TRUSTED, CKA_WRAP_WITH_TRUSTED */
} P11KeyTemplate;

/* Parses a generation template (for a secret key, or one half of a key pair) into *ret.
 * CKR_ARGUMENTS_BAD (NULL array with a count), CKR_ATTRIBUTE_TYPE_INVALID (an attribute a key
 * does not have), CKR_ATTRIBUTE_READ_ONLY (one only the token sets: CKA_LOCAL, CKA_MODULUS, ...),
 * CKR_ATTRIBUTE_VALUE_INVALID (wrong size, NULL value, a label that is not printable, an ID
 * over 128 bytes), CKR_TEMPLATE_INCONSISTENT (an attribute given twice with different values),
 * CKR_CURVE_NOT_SUPPORTED (CKA_EC_PARAMS naming another curve). */
CK_RV p11_key_template_parse(const CK_ATTRIBUTE *t, CK_ULONG n, P11KeyTemplate *ret);

/* Checks that a template array is readable as given: CKR_ARGUMENTS_BAD for a NULL array with a
 * count, CKR_ATTRIBUTE_VALUE_INVALID for a NULL value with a length. */
CK_RV p11_template_check(const CK_ATTRIBUTE *t, CK_ULONG n);
