/* SPDX-License-Identifier: Apache-2.0 */
/*
 * RFC 8785 JSON Canonicalization Scheme (JCS) for jansson values. jansson's JSON_SORT_KEYS sorts
 * by bytes (UTF-8 order, which differs from UTF-16 code-unit order for non-BMP characters) and
 * prints reals in its own format, so it cannot produce canonical JSON. Used for the REPORT_DATA
 * binding (SHA-384 of the canonical runtime data, as Trustee's KBS protocol).
 */
#pragma once

#include <stddef.h>

#include <jansson.h>

/* Maximum nesting depth accepted (deeper input: -ELOOP). */
#define NT_JCS_MAX_DEPTH 64

/* RFC 8785 canonical JSON of v: keys sorted by UTF-16 code units, minimal string escaping (\b \f
 * \n \r \t \" \\ and \u00xx lowercase for other controls, everything else raw UTF-8), ES6 number
 * serialisation (integers exactly; reals shortest round-trip, -0 -> 0; non-finite -> -EDOM).
 * Integers: jansson integers are 64-bit; those with |i| > 2^53 cannot be represented exactly by an
 * IEEE double (an I-JSON number), so they are refused with -EDOM rather than silently rounded.
 * Strings must be valid UTF-8 (-EBADMSG otherwise; jansson guarantees it for parsed input).
 * Returns 0 and a malloc'd NUL-terminated string (length in *ret_len if not NULL), -ENOMEM,
 * -EDOM, -EBADMSG, -ELOOP (nesting deeper than NT_JCS_MAX_DEPTH) or -EINVAL (v NULL). */
int nt_jcs_dump(const json_t *v, char **ret, size_t *ret_len);
