/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The project's fixed error vocabulary: functions return >= 0 on success and -Exxx on failure.
 * These names document which errno stands for which failure class, so that every edge
 * (CLI exit codes, HTTP status, PKCS#11 CK_RV, vhsmd wire status) can translate one table.
 */
#pragma once

#include <errno.h>

#define NT_E_MALFORMED EBADMSG      /* malformed input */
#define NT_E_REJECTED EKEYREJECTED  /* bad signature, MAC or policy */
#define NT_E_EXPIRED EKEYEXPIRED    /* expired certificate, token, transfer key */
#define NT_E_REVOKED EKEYREVOKED    /* revoked */
#define NT_E_NOKEY ENOKEY           /* unknown key */
#define NT_E_UNSUPPORTED EOPNOTSUPP /* unsupported algorithm or version */
#define NT_E_PROTOCOL EPROTO        /* peer protocol error */

/* Returns a short, stable description of a negative errno from the list above, or strerror(). */
const char *nt_strerror(int negative_errno);
