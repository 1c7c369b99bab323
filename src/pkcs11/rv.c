/* SPDX-License-Identifier: Apache-2.0 */
/*
 * errno -> CK_RV, one table (STYLE.md "Translate codes only at the edges"). A row gives the
 * code for every context; 0 in a context column means "same as the generic column".
 */
#include <errno.h>
#include <stddef.h>

#include "core/macro.h"
#include "rv.h"

typedef struct RvRow {
    int err; /* positive errno */
    CK_RV rv[_P11_CTX_MAX];
} RvRow;

#define ROW(e, generic, object, key, verify, decrypt, unwrap, create, pin)                         \
    {                                                                                              \
        (e), {                                                                                     \
            (generic), (object), (key), (verify), (decrypt), (unwrap), (create), (pin)             \
        }                                                                                          \
    }

/* clang-format off */
static const RvRow table[] = {
    /*  columns: errno, generic, object, key, verify, decrypt, unwrap, create, pin */
    /*  errno          generic                           object                       key                              verify                   decrypt                         unwrap                       create */
    /* not-found: the key behind a handle went away (deleted by another client) */
    ROW(ENOKEY,        CKR_OBJECT_HANDLE_INVALID,        0,                           CKR_KEY_HANDLE_INVALID,          CKR_KEY_HANDLE_INVALID,  CKR_KEY_HANDLE_INVALID,         CKR_UNWRAPPING_KEY_HANDLE_INVALID, 0, 0),
    ROW(ENOENT,        CKR_OBJECT_HANDLE_INVALID,        0,                           CKR_KEY_HANDLE_INVALID,          CKR_KEY_HANDLE_INVALID,  CKR_KEY_HANDLE_INVALID,         CKR_UNWRAPPING_KEY_HANDLE_INVALID, 0, 0),
    /* permission-denied: the key's ACL refuses this process */
    ROW(EACCES,        CKR_ACTION_PROHIBITED,            CKR_ACTION_PROHIBITED,       CKR_KEY_FUNCTION_NOT_PERMITTED,  0,                       0,                              0,                           CKR_ACTION_PROHIBITED, 0),
    ROW(EPERM,         CKR_ACTION_PROHIBITED,            CKR_ACTION_PROHIBITED,       CKR_KEY_FUNCTION_NOT_PERMITTED,  0,                       0,                              0,                           CKR_ACTION_PROHIBITED, 0),
    /* attestation-required: a key with the attested policy and no current verdict */
    ROW(EKEYEXPIRED,   CKR_FUNCTION_REJECTED,            0,                           CKR_KEY_FUNCTION_NOT_PERMITTED,  0,                       0,                              0,                           0, 0),
    /* verify-failed */
    ROW(EKEYREJECTED,  CKR_FUNCTION_REJECTED,            0,                           0,                               CKR_SIGNATURE_INVALID,   CKR_ENCRYPTED_DATA_INVALID,     CKR_WRAPPED_KEY_INVALID,     0, 0),
    /* unsupported: operation or algorithm not valid for the key */
    ROW(EOPNOTSUPP,    CKR_FUNCTION_NOT_SUPPORTED,       0,                           CKR_KEY_TYPE_INCONSISTENT,       0,                       0,                              0,                           CKR_TEMPLATE_INCONSISTENT, 0),
    /* retired key version */
    ROW(EKEYREVOKED,   CKR_KEY_FUNCTION_NOT_PERMITTED,   0,                           0,                               0,                       0,                              0,                           0, 0),
    /* quota-exceeded */
    ROW(EDQUOT,        CKR_DEVICE_MEMORY,                0,                           0,                               0,                       0,                              0,                           0, 0),
    /* not-owner: a name in another owner's namespace; exists: the name is taken */
    ROW(ENOTUNIQ,      CKR_ATTRIBUTE_VALUE_INVALID,      0,                           0,                               0,                       0,                              0,                           0, 0),
    ROW(EEXIST,        CKR_ATTRIBUTE_VALUE_INVALID,      0,                           0,                               0,                       0,                              0,                           0, 0),
    ROW(ESTALE,        CKR_ATTRIBUTE_VALUE_INVALID,      0,                           0,                               0,                       0,                              0,                           0, 0),
    /* invalid-argument / bad-request: the data given to the operation */
    ROW(EINVAL,        CKR_ARGUMENTS_BAD,                0,                           CKR_DATA_INVALID,                CKR_DATA_INVALID,        CKR_ENCRYPTED_DATA_INVALID,     CKR_WRAPPED_KEY_INVALID,     CKR_TEMPLATE_INCONSISTENT, 0),
    ROW(ERANGE,        CKR_ARGUMENTS_BAD,                0,                           CKR_DATA_LEN_RANGE,              CKR_DATA_LEN_RANGE,      CKR_ENCRYPTED_DATA_LEN_RANGE,   CKR_WRAPPED_KEY_LEN_RANGE,   CKR_TEMPLATE_INCONSISTENT, CKR_PIN_LEN_RANGE),
    ROW(EBADMSG,       CKR_DATA_INVALID,                 0,                           0,                               0,                       CKR_ENCRYPTED_DATA_INVALID,     CKR_WRAPPED_KEY_INVALID,     CKR_TEMPLATE_INCONSISTENT, 0),
    /* too-large */
    ROW(EMSGSIZE,      CKR_DATA_LEN_RANGE,               0,                           0,                               0,                       CKR_ENCRYPTED_DATA_LEN_RANGE,   CKR_WRAPPED_KEY_LEN_RANGE,   CKR_TEMPLATE_INCONSISTENT, 0),
    ROW(E2BIG,         CKR_DATA_LEN_RANGE,               0,                           0,                               0,                       CKR_ENCRYPTED_DATA_LEN_RANGE,   CKR_WRAPPED_KEY_LEN_RANGE,   CKR_TEMPLATE_INCONSISTENT, 0),
    ROW(ENAMETOOLONG,  CKR_ATTRIBUTE_VALUE_INVALID,      0,                           0,                               0,                       0,                              0,                           0, 0),
    /* unknown opcode: a vhsmd too old for the operation */
    ROW(EBADRQC,       CKR_FUNCTION_NOT_SUPPORTED,       0,                           0,                               0,                       0,                              0,                           0, 0),
    /* busy, no-memory */
    ROW(EAGAIN,        CKR_FUNCTION_FAILED,              0,                           0,                               0,                       0,                              0,                           0, 0),
    ROW(EBUSY,         CKR_FUNCTION_FAILED,              0,                           0,                               0,                       0,                              0,                           0, 0),
    ROW(ENOMEM,        CKR_HOST_MEMORY,                  0,                           0,                               0,                       0,                              0,                           0, 0),
    /* services behind vhsmd (the agent channel) */
    ROW(EREMOTEIO,     CKR_FUNCTION_REJECTED,            0,                           0,                               0,                       0,                              0,                           0, 0),
    ROW(EHOSTUNREACH,  CKR_DEVICE_ERROR,                 0,                           0,                               0,                       0,                              0,                           0, 0),
    /* tokens, PINs and logins (protocol revision 2, statuses 22-26) */
    ROW(EBADE,         CKR_PIN_INCORRECT,                0,                           0,                               0,                       0,                              0,                           0, 0),
    ROW(ENOLCK,        CKR_PIN_LOCKED,                   0,                           0,                               0,                       0,                              0,                           0, 0),
    ROW(EBADR,         CKR_USER_NOT_LOGGED_IN,           0,                           0,                               0,                       0,                              0,                           0, 0),
    ROW(EALREADY,      CKR_USER_ALREADY_LOGGED_IN,       0,                           0,                               0,                       0,                              0,                           0, 0),
    ROW(EISCONN,       CKR_USER_ANOTHER_ALREADY_LOGGED_IN, 0,                         0,                               0,                       0,                              0,                           0, 0),
    ROW(ENOMEDIUM,     CKR_USER_PIN_NOT_INITIALIZED,     0,                           0,                               0,                       0,                              0,                           0, 0),
    ROW(ENODATA,       CKR_USER_PIN_NOT_INITIALIZED,     0,                           0,                               0,                       0,                              0,                           0, 0),
    /* re-initialising a token that still holds objects: vhsmd refuses rather than destroying
     * keys other programs may use */
    ROW(ENOTEMPTY,     CKR_FUNCTION_FAILED,              0,                           0,                               0,                       0,                              0,                           0, 0),
    /* hard-wrap: why a key is not wrapped, and an unwrapped key not of the template's type */
    ROW(ENOEXEC,       CKR_KEY_UNEXTRACTABLE,            0,                           0,                               0,                       0,                              0,                           0, 0),
    ROW(EBADSLT,       CKR_KEY_NOT_WRAPPABLE,            0,                           0,                               0,                       0,                              0,                           0, 0),
    ROW(EMEDIUMTYPE,   CKR_TEMPLATE_INCONSISTENT,        0,                           0,                               0,                       0,                              0,                           0, 0),
    /* transport: the daemon went away (stopped, restarted, connection lost) */
    ROW(ECONNREFUSED,  CKR_DEVICE_REMOVED,               0,                           0,                               0,                       0,                              0,                           0, 0),
    ROW(ECONNRESET,    CKR_DEVICE_REMOVED,               0,                           0,                               0,                       0,                              0,                           0, 0),
    ROW(ECONNABORTED,  CKR_DEVICE_REMOVED,               0,                           0,                               0,                       0,                              0,                           0, 0),
    ROW(EPIPE,         CKR_DEVICE_REMOVED,               0,                           0,                               0,                       0,                              0,                           0, 0),
    ROW(ENOTCONN,      CKR_DEVICE_REMOVED,               0,                           0,                               0,                       0,                              0,                           0, 0),
    ROW(ESHUTDOWN,     CKR_DEVICE_REMOVED,               0,                           0,                               0,                       0,                              0,                           0, 0),
    /* a reply that did not come in time, or was malformed: the device misbehaved */
    ROW(ETIMEDOUT,     CKR_DEVICE_ERROR,                 0,                           0,                               0,                       0,                              0,                           0, 0),
    ROW(EPROTO,        CKR_DEVICE_ERROR,                 0,                           0,                               0,                       0,                              0,                           0, 0),
    ROW(EPROTONOSUPPORT, CKR_DEVICE_ERROR,               0,                           0,                               0,                       0,                              0,                           0, 0),
    ROW(EIO,           CKR_DEVICE_ERROR,                 0,                           0,                               0,                       0,                              0,                           0, 0),
};
/* clang-format on */

/* Changing attributes: vhsmd refuses a change the object's policy forbids (not modifiable, a
 * one-way flag back, CKA_TRUSTED by a non-SO) with EPERM, an attribute it owns with EINVAL. */
static const struct {
    int err;
    CK_RV rv;
} setattr[] = {
    {EPERM, CKR_ATTRIBUTE_READ_ONLY},        {EACCES, CKR_ACTION_PROHIBITED},
    {EINVAL, CKR_ATTRIBUTE_TYPE_INVALID},    {ERANGE, CKR_ATTRIBUTE_VALUE_INVALID},
    {EMSGSIZE, CKR_ATTRIBUTE_VALUE_INVALID}, {E2BIG, CKR_TEMPLATE_INCONSISTENT},
};

CK_RV p11_rv_from_errno(int r, P11Ctx ctx) {
    if (r >= 0)
        return CKR_OK;
    if (ctx < 0 || ctx >= _P11_CTX_MAX)
        ctx = P11_CTX_GENERIC;
    if (ctx == P11_CTX_SETATTR) {
        for (size_t i = 0; i < ELEMENTSOF(setattr); i++)
            if (setattr[i].err == -r)
                return setattr[i].rv;
        ctx = P11_CTX_OBJECT;
    }
    for (size_t i = 0; i < ELEMENTSOF(table); i++)
        if (table[i].err == -r)
            return table[i].rv[ctx] != 0 ? table[i].rv[ctx] : table[i].rv[P11_CTX_GENERIC];
    return CKR_DEVICE_ERROR;
}

bool p11_errno_is_transport(int r) {
    return p11_rv_from_errno(r, P11_CTX_GENERIC) == CKR_DEVICE_REMOVED;
}
