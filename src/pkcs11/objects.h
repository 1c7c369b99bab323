/* SPDX-License-Identifier: Apache-2.0 */
/*
 * C_CreateObject templates of objects that are not private or secret keys (branch obj): data
 * objects (CKO_DATA), X.509 certificates (CKO_CERTIFICATE) and public keys (CKO_PUBLIC_KEY of
 * EC P-256/P-384, Ed25519, RSA). The template becomes what vhsmd stores: a type ("data",
 * "cert", "public"), a value (the data, the certificate's DER, the public key's
 * SubjectPublicKeyInfo DER built with OpenSSL), VHSM_OBJ_* flags and opaque attributes
 * (CKA_LABEL, CKA_ID, CKA_APPLICATION, CKA_SUBJECT, ...). A certificate's CKA_SUBJECT, CKA_ISSUER
 * and CKA_SERIAL_NUMBER, when the template lacks them, are taken from its DER. No key material
 * is involved. Fuzzed by fuzz/fuzz-pkcs11-template.c.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <p11-kit/pkcs11.h>

#define P11_OBJ_ATTRS_MAX 16
#define P11_OBJ_DATA_MAX 4096u /* vhsmd's caps (VAULT_DATA_MAX, ...) */
#define P11_OBJ_CERT_MAX 8192u

typedef struct P11ObjAttr {
    CK_ATTRIBUTE_TYPE type;
    const void *value; /* into the template or into owned[] */
    size_t len;
} P11ObjAttr;

typedef struct P11ObjTemplate {
    CK_OBJECT_CLASS cls;
    const char *vtype; /* "data", "cert", "public" */
    uint8_t *value;    /* malloc'd */
    size_t value_len;
    uint32_t flags;       /* VHSM_OBJ_* */
    bool session;         /* CKA_TOKEN false */
    bool trusted;         /* CKA_TRUSTED true (the SO's to set) */
    const char *label;    /* CKA_LABEL as a C string (owned), NULL if absent */
    CK_KEY_TYPE key_type; /* public keys */
    P11ObjAttr attrs[P11_OBJ_ATTRS_MAX];
    size_t n_attrs;
    uint8_t *owned[4];
} P11ObjTemplate;

/* The CKA_CLASS of a template: CKR_OK and *ret, CKR_TEMPLATE_INCOMPLETE if absent,
 * CKR_ATTRIBUTE_VALUE_INVALID if malformed, CKR_TEMPLATE_INCONSISTENT if given twice with
 * different values. */
CK_RV p11_template_class(const CK_ATTRIBUTE *t, CK_ULONG n, CK_OBJECT_CLASS *ret);

/* Parses a C_CreateObject template of class CKO_DATA, CKO_CERTIFICATE or CKO_PUBLIC_KEY.
 * CKR_TEMPLATE_INCOMPLETE (no CKA_VALUE for data/cert; a public key without its key type or
 * components), CKR_ATTRIBUTE_VALUE_INVALID (a value of the wrong size or form: not one DER
 * certificate, an EC point not on the curve, an RSA key outside 2048..4096 bits or e != 65537,
 * another curve: CKR_CURVE_NOT_SUPPORTED), CKR_ATTRIBUTE_TYPE_INVALID (an attribute the class
 * does not have), CKR_ATTRIBUTE_READ_ONLY (one only the token sets), CKR_TEMPLATE_INCONSISTENT
 * (given twice differently; CKA_SIGN/CKA_DECRYPT on a public key; a certificate type other than
 * X.509: CKR_ATTRIBUTE_VALUE_INVALID). On success free with p11_obj_template_done(). */
CK_RV p11_obj_template_parse(const CK_ATTRIBUTE *t, CK_ULONG n, P11ObjTemplate *ret);
void p11_obj_template_done(P11ObjTemplate *t);
