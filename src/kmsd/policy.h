/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kmsd release policies: which verified EAR tokens (src/token/ear.h) may receive a secret. A JSON
 * document {"version": 1, "rules": {...}}, documented in docs/kmsd-policy.md.
 *
 * Parsing is strict, at write time: an unknown member or rule, a wrong type, an empty list, a
 * duplicate list entry, hex of the wrong length or a malformed UUID is an error naming the rule
 * ("measurement_in[1]: expected 96 hex characters (48 bytes)"). Values are normalised (hex and
 * UUIDs compared case-insensitively, product and signing key names in any case).
 *
 * Evaluation never matches by default: each rule reads its claim, and a claim missing from the
 * token (or malformed) is a refusal naming the rule with found "absent" (or "invalid: ..."). Two
 * rules apply even when the document omits them: min_status "affirming" and debug_allowed false
 * (debug VMs are refused unless a policy says otherwise); they are evaluated first, then the
 * document's rules in document order. The first failing rule is reported. A parsed KmsPolicy is
 * immutable and may be shared between threads.
 */
#pragma once

#include <errno.h>
#include <stddef.h>

#include <jansson.h>

#include "core/macro.h"

#define KMS_POLICY_VERSION 1
#define KMS_POLICY_LIST_MAX 1024u          /* entries per list rule */
#define KMS_POLICY_TEXT_MAX (256u * 1024u) /* kms_policy_parse_text input */
#define KMS_POLICY_CSP_ID_MAX 127u         /* bytes, as the VLEK cspID (src/verify) */

typedef struct KmsPolicy KmsPolicy;

/* Parses and validates a policy document strictly. Returns 0 and *ret (owned by the caller), or
 * -EBADMSG (invalid policy; err names the rule or member and the reason), -EINVAL (doc or ret
 * NULL), -ENOMEM. err is always NUL-terminated ("" on success); *ret is written only on success. */
int kms_policy_parse(const json_t *doc, KmsPolicy **ret, char err[static 256]);

/* The same from JSON text (untrusted; at most KMS_POLICY_TEXT_MAX bytes, duplicate members
 * rejected). Same returns as kms_policy_parse (-EBADMSG also for invalid JSON). */
int kms_policy_parse_text(const char *text, size_t len, KmsPolicy **ret, char err[static 256]);

/* Accepts and returns NULL. */
KmsPolicy *kms_policy_free(KmsPolicy *p);
DEFINE_TRIVIAL_CLEANUP_FUNC(KmsPolicy *, kms_policy_free);

/* The normalised document (lowercase hex and UUID, "VCEK"/"VLEK", "Milan"/"Genoa"/"Turin",
 * min_tcb components in the order bootloader, tee, snp, microcode, fmc), rules in document order,
 * defaults not added. Parsing it gives the same policy. New reference, NULL on OOM. */
json_t *kms_policy_to_json(const KmsPolicy *p);

typedef struct KmsPolicyRefusal {
    char rule[64];      /* the rule's name as in the document ("measurement_in", ...) */
    char expected[256]; /* what the rule wants, e.g. "one of [5fee...]", "snp>=9 microcode>=10" */
    char found[256];    /* the token's value, "absent" or "invalid: <why>" */
} KmsPolicyRefusal;

/* Evaluates over verified EAR claims (the whole claims object, read from
 * submods.cpu0["ear.veraison.annotated-evidence"] and submods.cpu0["ear.status"]) and the request
 * context (volume_uuid: the volume the agent declares, may be NULL). Returns 0 (allowed),
 * -EACCES with *ret_refusal filled (the first failing rule), -EINVAL (p, claims or ret_refusal
 * NULL, claims not an object) or -ENOMEM (*ret_refusal untouched: neither is a verdict). */
int kms_policy_eval(const KmsPolicy *p, const json_t *claims, const char *volume_uuid,
                    KmsPolicyRefusal *ret_refusal);
