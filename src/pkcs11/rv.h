/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The one translation table of the PKCS#11 edge: the project's negative errno codes (libvhsm's
 * results, which carry vhsmd's status table) to CK_RV. Some codes mean different things
 * depending on what was being done (a bad tag is CKR_ENCRYPTED_DATA_INVALID when decrypting and
 * CKR_SIGNATURE_INVALID when verifying), so the caller names the context.
 */
#pragma once

#include <stdbool.h>

#include <p11-kit/pkcs11.h>

typedef enum P11Ctx {
    P11_CTX_GENERIC, /* token-level calls: random, find, login */
    P11_CTX_OBJECT,  /* an object handle is involved (attributes, destroy) */
    P11_CTX_KEY,     /* a key is used by a cryptographic operation (sign, encrypt, ...) */
    P11_CTX_VERIFY,  /* verification: a rejection is an invalid signature */
    P11_CTX_DECRYPT, /* decryption: a rejection is invalid ciphertext */
    P11_CTX_UNWRAP,  /* unwrapping: a rejection is an invalid wrapped key */
    P11_CTX_CREATE,  /* creating keys and objects */
    P11_CTX_PIN,     /* PINs and logins: C_Login, C_InitToken, C_InitPIN, C_SetPIN */
    P11_CTX_SETATTR, /* C_SetAttributeValue */
    _P11_CTX_MAX,
    _P11_CTX_INVALID = -22,
} P11Ctx;

/* CK_RV for r (a negative errno, or 0 = CKR_OK) in context ctx. Never fails: unknown codes are
 * CKR_DEVICE_ERROR (anything else vhsmd calls internal). */
CK_RV p11_rv_from_errno(int r, P11Ctx ctx);

/* True if r means the connection to vhsmd is gone (daemon stopped, restarted, connection
 * lost): the token has been removed from its slot. */
bool p11_errno_is_transport(int r);
