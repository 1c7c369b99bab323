/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kmsd release policies (see policy.h, docs/kmsd-policy.md): a strict parser into a list of typed
 * rules, and their evaluation over the claims nitride-attestd puts in an EAR token
 * (src/token/ear.c: nt_ear_annotated_evidence).
 *
 * Invariants: a parsed policy holds the rules in evaluation order, the implicit defaults
 * (min_status "affirming", debug_allowed false) first when the document omits them; every value
 * is normalised at parse time (hex decoded to bytes, names to one spelling, UUIDs lowercase), so
 * evaluation compares bytes and canonical strings only. Every rule reads its claim and refuses
 * when it is absent or malformed: no rule is ever skipped.
 */
#include "kmsd/policy.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/alloc.h"
#include "core/encoding.h"
#include "snp/report.h"
#include "token/ear.h"

typedef enum RuleKind {
    RULE_MEASUREMENT_IN,
    RULE_HOST_DATA_EQ,
    RULE_MIN_TCB,
    RULE_DEBUG_ALLOWED,
    RULE_CHIP_ID_SHA256_IN,
    RULE_SIGNING_KEY_IN,
    RULE_CSP_ID_IN,
    RULE_MIN_STATUS,
    RULE_PRODUCT_IN,
    RULE_VMPL_IN,
    RULE_VOLUME_UUID_EQ,
    _RULE_MAX,
    _RULE_INVALID = -EINVAL,
} RuleKind;

static const char *const rule_names[_RULE_MAX] = {
    [RULE_MEASUREMENT_IN] = "measurement_in",
    [RULE_HOST_DATA_EQ] = "host_data_eq",
    [RULE_MIN_TCB] = "min_tcb",
    [RULE_DEBUG_ALLOWED] = "debug_allowed",
    [RULE_CHIP_ID_SHA256_IN] = "chip_id_sha256_in",
    [RULE_SIGNING_KEY_IN] = "signing_key_in",
    [RULE_CSP_ID_IN] = "csp_id_in",
    [RULE_MIN_STATUS] = "min_status",
    [RULE_PRODUCT_IN] = "product_in",
    [RULE_VMPL_IN] = "vmpl_in",
    [RULE_VOLUME_UUID_EQ] = "volume_uuid_eq",
};

/* Byte lengths of the hex values, and the claim each rule reads. */
#define MEASUREMENT_LEN 48
#define HOST_DATA_LEN 32
#define CHIP_ID_SHA256_LEN 32
#define UUID_LEN 36

/* min_tcb components, in the order they are printed and serialised. */
enum { TCB_BOOTLOADER, TCB_TEE, TCB_SNP, TCB_MICROCODE, TCB_FMC, _TCB_MAX };
static const char *const tcb_names[_TCB_MAX] = {"bootloader", "tee", "snp", "microcode", "fmc"};

/* signing_key_in names; bit i of Rule.mask. */
static const char *const signing_key_names[] = {"VCEK", "VLEK"};

typedef struct Rule {
    RuleKind kind;
    bool implicit; /* a default the document did not state (not serialised) */
    uint8_t *hex;  /* measurement_in, chip_id_sha256_in, host_data_eq (n = 1): n * hex_len */
    size_t hex_len;
    char **strs;   /* csp_id_in */
    size_t n;      /* entries of hex or strs */
    unsigned mask; /* signing_key_in (bit per signing_key_names), product_in (bit per
                      SnpProduct), vmpl_in (bit per VMPL) */
    bool allow;    /* debug_allowed */
    NtEarStatus min_status;
    unsigned tcb_set; /* bit per TCB_* component named */
    uint8_t tcb_min[_TCB_MAX];
    char uuid[UUID_LEN + 1]; /* volume_uuid_eq, lowercase */
} Rule;

struct KmsPolicy {
    Rule *rules; /* evaluation order */
    size_t n;
};

static void perr_set(char *err, const char *fmt, ...) _printf_(2, 3);
/* Every parse error is -EBADMSG, spelled out in the macro so that the compiler, like the reader,
 * sees that an error path never returns 0 (as src/verify/policy.c). */
#define perr(err, ...) (perr_set(err, __VA_ARGS__), -EBADMSG)
static void perr_set(char *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(err, 256, fmt, ap);
    va_end(ap);
}

static void rule_done(Rule *r) {
    free(r->hex);
    for (size_t i = 0; r->strs && i < r->n; i++)
        free(r->strs[i]);
    free(r->strs);
    *r = (Rule){0};
}

KmsPolicy *kms_policy_free(KmsPolicy *p) {
    if (!p)
        return NULL;
    for (size_t i = 0; i < p->n; i++)
        rule_done(&p->rules[i]);
    free(p->rules);
    free(p);
    return NULL;
}

/* ---- parsing ---------------------------------------------------------------------------- */

/* A JSON string without embedded NUL (a json_t built in memory may hold one). */
static const char *plain_string(const json_t *v) {
    const char *s = json_string_value(v);
    return s && strlen(s) == json_string_length(v) ? s : NULL;
}

static int parse_hex(const json_t *v, const char *key, uint8_t *out, size_t n, char *err) {
    const char *s = plain_string(v);
    if (!s)
        return perr(err, "%s: expected a string of %zu hex characters (%zu bytes)", key, 2 * n, n);
    int r = strlen(s) == 2 * n ? hex_decode_exact(s, out, n) : -EBADMSG;
    if (r == -ENOMEM)
        return r;
    if (r < 0)
        return perr(err, "%s: expected %zu hex characters (%zu bytes), got %s", key, 2 * n, n,
                    strlen(s) != 2 * n ? "another length" : "a non-hex character");
    return 0;
}

/* Shared checks of list rules: a non-empty array of at most KMS_POLICY_LIST_MAX entries. */
static int check_list(const json_t *v, const char *rule, const char *what, char *err) {
    if (!json_is_array(v))
        return perr(err, "%s: expected an array of %s", rule, what);
    if (json_array_size(v) == 0)
        return perr(err, "%s: must not be empty (omit the rule to not check it)", rule);
    if (json_array_size(v) > KMS_POLICY_LIST_MAX)
        return perr(err, "%s: more than %u entries", rule, KMS_POLICY_LIST_MAX);
    return 0;
}

static int parse_hex_list(const json_t *v, const char *rule, size_t len, Rule *r, char *err) {
    char what[64];
    int q;

    (void)snprintf(what, sizeof what, "hex strings of %zu bytes", len);
    if ((q = check_list(v, rule, what, err)) < 0)
        return q;
    size_t n = json_array_size(v);
    r->hex = nt_calloc(n, len);
    if (!r->hex)
        return -ENOMEM;
    r->hex_len = len;
    for (size_t i = 0; i < n; i++) {
        char key[64];
        (void)snprintf(key, sizeof key, "%s[%zu]", rule, i);
        if ((q = parse_hex(json_array_get(v, i), key, r->hex + i * len, len, err)) < 0)
            return q;
        for (size_t j = 0; j < i; j++)
            if (memcmp(r->hex + j * len, r->hex + i * len, len) == 0)
                return perr(err, "%s: duplicate of %s[%zu]", key, rule, j);
        r->n = i + 1;
    }
    return 0;
}

/* A list of names matched case-insensitively against names[0..n_names); sets bit i per name. */
static int parse_name_list(const json_t *v, const char *rule, const char *const *names,
                           size_t n_names, unsigned *ret_mask, char *err) {
    char known[64] = "";
    unsigned mask = 0;
    const json_t *e;
    size_t i;
    int q;

    for (size_t k = 0; k < n_names; k++)
        (void)snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", k ? ", " : "",
                       names[k]);
    if ((q = check_list(v, rule, "strings", err)) < 0)
        return q;
    json_array_foreach(v, i, e) {
        const char *s = plain_string(e);
        size_t k;
        if (!s)
            return perr(err, "%s[%zu]: expected a string (%s)", rule, i, known);
        for (k = 0; k < n_names; k++)
            if (strcasecmp(s, names[k]) == 0)
                break;
        if (k == n_names)
            return perr(err, "%s[%zu]: unknown value '%.40s' (%s)", rule, i, s, known);
        if (mask & (1u << k))
            return perr(err, "%s[%zu]: duplicate '%s'", rule, i, names[k]);
        mask |= 1u << k;
    }
    *ret_mask = mask;
    return 0;
}

static bool printable_ascii(const char *s) {
    for (; *s; s++)
        if (*s < 0x20 || *s > 0x7e)
            return false;
    return true;
}

static int parse_csp_list(const json_t *v, const char *rule, Rule *r, char *err) {
    int q;
    if ((q = check_list(v, rule, "strings", err)) < 0)
        return q;
    size_t n = json_array_size(v);
    r->strs = nt_calloc(n, sizeof(char *));
    if (!r->strs)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const char *s = plain_string(json_array_get(v, i));
        if (!s || !*s || strlen(s) > KMS_POLICY_CSP_ID_MAX || !printable_ascii(s))
            return perr(err, "%s[%zu]: expected a string of 1..%u printable ASCII characters", rule,
                        i, KMS_POLICY_CSP_ID_MAX);
        for (size_t j = 0; j < i; j++)
            if (streq(r->strs[j], s))
                return perr(err, "%s[%zu]: duplicate of %s[%zu]", rule, i, rule, j);
        r->strs[i] = nt_strdup(s);
        if (!r->strs[i])
            return -ENOMEM;
        r->n = i + 1;
    }
    return 0;
}

static int parse_vmpl_list(const json_t *v, const char *rule, Rule *r, char *err) {
    const json_t *e;
    size_t i;
    int q;
    if ((q = check_list(v, rule, "integers 0..3", err)) < 0)
        return q;
    json_array_foreach(v, i, e) {
        if (!json_is_integer(e) || json_integer_value(e) < 0 || json_integer_value(e) > 3)
            return perr(err, "%s[%zu]: expected an integer 0..3", rule, i);
        unsigned bit = 1u << json_integer_value(e);
        if (r->mask & bit)
            return perr(err, "%s[%zu]: duplicate %lld", rule, i, (long long)json_integer_value(e));
        r->mask |= bit;
    }
    return 0;
}

static int parse_min_tcb(const json_t *v, const char *rule, Rule *r, char *err) {
    const char *k;
    json_t *c;

    if (!json_is_object(v))
        return perr(err,
                    "%s: expected an object {\"bootloader\", \"tee\", \"snp\", \"microcode\", "
                    "\"fmc\": 0..255}",
                    rule);
    if (json_object_size(v) == 0)
        return perr(err, "%s: must name at least one component", rule);
    json_object_foreach((json_t *)v, k, c) {
        size_t i;
        for (i = 0; i < _TCB_MAX; i++)
            if (streq(k, tcb_names[i]))
                break;
        if (i == _TCB_MAX)
            return perr(err, "%s: unknown component '%.40s' (bootloader, tee, snp, microcode, fmc)",
                        rule, k);
        if (!json_is_integer(c) || json_integer_value(c) < 0 || json_integer_value(c) > 255)
            return perr(err, "%s.%s: expected an integer 0..255", rule, k);
        r->tcb_min[i] = (uint8_t)json_integer_value(c);
        r->tcb_set |= 1u << i;
    }
    return 0;
}

/* Canonical 8-4-4-4-12 form, hex digits in either case. Writes the lowercase form. */
static bool uuid_normalise(const char *s, char out[static UUID_LEN + 1]) {
    if (!s || strlen(s) != UUID_LEN)
        return false;
    for (size_t i = 0; i < UUID_LEN; i++) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return false;
        } else if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))
            ;
        else if (c >= 'A' && c <= 'F')
            c = (char)(c - 'A' + 'a');
        else
            return false;
        out[i] = c;
    }
    out[UUID_LEN] = 0;
    return true;
}

static int parse_rule(RuleKind kind, const json_t *v, Rule *r, char *err) {
    const char *name = rule_names[kind];
    const char *s;
    int st;

    r->kind = kind;
    switch (kind) {
    case RULE_MEASUREMENT_IN:
        return parse_hex_list(v, name, MEASUREMENT_LEN, r, err);
    case RULE_CHIP_ID_SHA256_IN:
        return parse_hex_list(v, name, CHIP_ID_SHA256_LEN, r, err);
    case RULE_HOST_DATA_EQ:
        r->hex = nt_calloc(1, HOST_DATA_LEN);
        if (!r->hex)
            return -ENOMEM;
        r->hex_len = HOST_DATA_LEN;
        r->n = 1;
        return parse_hex(v, name, r->hex, HOST_DATA_LEN, err);
    case RULE_MIN_TCB:
        return parse_min_tcb(v, name, r, err);
    case RULE_DEBUG_ALLOWED:
        if (!json_is_boolean(v))
            return perr(err, "%s: expected true or false", name);
        r->allow = json_is_true(v);
        return 0;
    case RULE_SIGNING_KEY_IN:
        return parse_name_list(v, name, signing_key_names, ELEMENTSOF(signing_key_names), &r->mask,
                               err);
    case RULE_PRODUCT_IN: {
        const char *products[_SNP_PRODUCT_MAX];
        for (int k = 0; k < _SNP_PRODUCT_MAX; k++)
            products[k] = snp_product_to_string((SnpProduct)k);
        return parse_name_list(v, name, products, _SNP_PRODUCT_MAX, &r->mask, err);
    }
    case RULE_CSP_ID_IN:
        return parse_csp_list(v, name, r, err);
    case RULE_MIN_STATUS:
        s = plain_string(v);
        st = s ? nt_ear_status_from_string(s) : -EINVAL;
        if (st == NT_EAR_CONTRAINDICATED)
            return perr(err,
                        "%s: \"contraindicated\" would release to VMs attestd found at fault "
                        "(expected \"affirming\" or \"warning\")",
                        name);
        if (st < 0)
            return perr(err, "%s: expected \"affirming\" or \"warning\"", name);
        r->min_status = (NtEarStatus)st;
        return 0;
    case RULE_VMPL_IN:
        return parse_vmpl_list(v, name, r, err);
    case RULE_VOLUME_UUID_EQ:
        if (!uuid_normalise(plain_string(v), r->uuid))
            return perr(
                err, "%s: expected a UUID string xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx (hex)", name);
        return 0;
    default:
        return -EINVAL;
    }
}

static RuleKind rule_kind_from_string(const char *s) {
    for (int k = 0; k < _RULE_MAX; k++)
        if (streq(s, rule_names[k]))
            return (RuleKind)k;
    return _RULE_INVALID;
}

int kms_policy_parse(const json_t *doc, KmsPolicy **ret, char err[static 256]) {
    _cleanup_(kms_policy_freep) KmsPolicy *p = NULL;
    const json_t *version, *rules;
    bool have[_RULE_MAX] = {};
    const char *k;
    json_t *v;
    int q;

    err[0] = 0;
    if (!doc || !ret)
        return -EINVAL;
    if (!json_is_object(doc))
        return perr(err, "expected a JSON object {\"version\": 1, \"rules\": {...}}");
    json_object_foreach((json_t *)doc, k,
                        v) if (!streq(k, "version") &&
                               !streq(k, "rules")) return perr(err,
                                                               "unknown member '%.64s' (a policy "
                                                               "has \"version\" and \"rules\")",
                                                               k);
    version = json_object_get(doc, "version");
    if (!version)
        return perr(err, "version: missing (expected %d)", KMS_POLICY_VERSION);
    if (!json_is_integer(version) || json_integer_value(version) != KMS_POLICY_VERSION)
        return perr(err, "version: expected %d", KMS_POLICY_VERSION);
    rules = json_object_get(doc, "rules");
    if (!rules)
        return perr(err, "rules: missing (expected an object of rules)");
    if (!json_is_object(rules))
        return perr(err, "rules: expected an object of rules");
    if (json_object_size(rules) == 0)
        return perr(err, "rules: empty (name at least one rule, e.g. measurement_in)");

    json_object_foreach((json_t *)rules, k, v) {
        RuleKind kind = rule_kind_from_string(k);
        if (kind < 0)
            return perr(err,
                        "unknown rule '%.40s' (measurement_in, host_data_eq, min_tcb, "
                        "debug_allowed, chip_id_sha256_in, signing_key_in, csp_id_in, min_status, "
                        "product_in, vmpl_in, volume_uuid_eq)",
                        k);
        have[kind] = true;
    }

    p = nt_calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    p->rules = nt_calloc(json_object_size(rules) + 2, sizeof(Rule));
    if (!p->rules)
        return -ENOMEM;
    /* The defaults a document did not state come first. */
    if (!have[RULE_MIN_STATUS])
        p->rules[p->n++] =
            (Rule){.kind = RULE_MIN_STATUS, .implicit = true, .min_status = NT_EAR_AFFIRMING};
    if (!have[RULE_DEBUG_ALLOWED])
        p->rules[p->n++] = (Rule){.kind = RULE_DEBUG_ALLOWED, .implicit = true, .allow = false};
    json_object_foreach((json_t *)rules, k, v) {
        Rule *r = &p->rules[p->n++];
        if ((q = parse_rule(rule_kind_from_string(k), v, r, err)) < 0)
            return q;
    }
    *ret = TAKE_PTR(p);
    return 0;
}

int kms_policy_parse_text(const char *text, size_t len, KmsPolicy **ret, char err[static 256]) {
    json_auto_t *doc = NULL;
    json_error_t jerr;

    err[0] = 0;
    if (!text || !ret)
        return -EINVAL;
    if (len > KMS_POLICY_TEXT_MAX)
        return perr(err, "policy larger than %u bytes", KMS_POLICY_TEXT_MAX);
    doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc)
        return perr(err, "not valid JSON: %.120s (line %d, column %d)", jerr.text, jerr.line,
                    jerr.column);
    return kms_policy_parse(doc, ret, err);
}

/* ---- serialisation ---------------------------------------------------------------------- */

static json_t *hex_array(const Rule *r) {
    json_auto_t *a = json_array();
    char buf[2 * 64 + 1];
    if (!a)
        return NULL;
    for (size_t i = 0; i < r->n; i++) {
        hex_encode(r->hex + i * r->hex_len, r->hex_len, buf);
        if (json_array_append_new(a, json_string(buf)) < 0)
            return NULL;
    }
    return json_incref(a);
}

static json_t *mask_array(unsigned mask, const char *const *names, size_t n) {
    json_auto_t *a = json_array();
    if (!a)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if ((mask & (1u << i)) && json_array_append_new(a, names ? json_string(names[i])
                                                                 : json_integer((json_int_t)i)) < 0)
            return NULL;
    return json_incref(a);
}

static json_t *rule_to_json(const Rule *r) {
    char buf[2 * 64 + 1];
    switch (r->kind) {
    case RULE_MEASUREMENT_IN:
    case RULE_CHIP_ID_SHA256_IN:
        return hex_array(r);
    case RULE_HOST_DATA_EQ:
        hex_encode(r->hex, r->hex_len, buf);
        return json_string(buf);
    case RULE_MIN_TCB: {
        json_auto_t *o = json_object();
        if (!o)
            return NULL;
        for (int i = 0; i < _TCB_MAX; i++)
            if ((r->tcb_set & (1u << i)) &&
                json_object_set_new(o, tcb_names[i], json_integer(r->tcb_min[i])) < 0)
                return NULL;
        return json_incref(o);
    }
    case RULE_DEBUG_ALLOWED:
        return json_boolean(r->allow);
    case RULE_SIGNING_KEY_IN:
        return mask_array(r->mask, signing_key_names, ELEMENTSOF(signing_key_names));
    case RULE_PRODUCT_IN: {
        const char *products[_SNP_PRODUCT_MAX];
        for (int k = 0; k < _SNP_PRODUCT_MAX; k++)
            products[k] = snp_product_to_string((SnpProduct)k);
        return mask_array(r->mask, products, _SNP_PRODUCT_MAX);
    }
    case RULE_CSP_ID_IN: {
        json_auto_t *a = json_array();
        if (!a)
            return NULL;
        for (size_t i = 0; i < r->n; i++)
            if (json_array_append_new(a, json_string(r->strs[i])) < 0)
                return NULL;
        return json_incref(a);
    }
    case RULE_MIN_STATUS:
        return json_string(nt_ear_status_to_string(r->min_status));
    case RULE_VMPL_IN:
        return mask_array(r->mask, NULL, 4);
    case RULE_VOLUME_UUID_EQ:
        return json_string(r->uuid);
    default:
        return NULL;
    }
}

json_t *kms_policy_to_json(const KmsPolicy *p) {
    json_auto_t *rules = json_object();
    if (!p || !rules)
        return NULL;
    for (size_t i = 0; i < p->n; i++) {
        const Rule *r = &p->rules[i];
        if (r->implicit)
            continue;
        if (json_object_set_new(rules, rule_names[r->kind], rule_to_json(r)) < 0)
            return NULL;
    }
    return json_pack("{s:i,s:O}", "version", KMS_POLICY_VERSION, "rules", rules);
}

/* ---- evaluation ------------------------------------------------------------------------- */

/* Appends to a fixed buffer; truncates (never overflows). */
static void bappend(char *buf, size_t size, const char *fmt, ...) _printf_(3, 4);
static void bappend(char *buf, size_t size, const char *fmt, ...) {
    size_t l = strnlen(buf, size);
    va_list ap;
    if (l + 1 >= size)
        return;
    va_start(ap, fmt);
    (void)vsnprintf(buf + l, size - l, fmt, ap);
    va_end(ap);
}

/* A claim's text as shown in a refusal: printable ASCII only ('?' for anything else), at most
 * max characters, "..." marking a cut. */
static void claim_text(char *dst, size_t size, const char *s, size_t max) {
    size_t n = 0, i;
    if (max + 4 > size)
        max = size - 4;
    for (i = 0; s[i] && n < max; i++)
        dst[n++] = s[i] >= 0x20 && s[i] <= 0x7e ? s[i] : '?';
    if (s[i])
        dst[n++] = '.', dst[n++] = '.', dst[n++] = '.';
    dst[n] = 0;
}

typedef struct Eval {
    const json_t *claims;
    const json_t *evidence; /* submods.cpu0["ear.veraison.annotated-evidence"], may be NULL */
    const char *volume_uuid;
    KmsPolicyRefusal *f; /* filled when a rule fails */
} Eval;

static int refuse(Eval *e, const Rule *r, const char *expected, const char *found) {
    (void)snprintf(e->f->rule, sizeof e->f->rule, "%s", rule_names[r->kind]);
    (void)snprintf(e->f->expected, sizeof e->f->expected, "%s", expected);
    (void)snprintf(e->f->found, sizeof e->f->found, "%s", found);
    return -EACCES;
}

/* The expected text of a list rule: "one of [a, b, ... N more]", as many entries as fit. */
static void expected_list(char *buf, size_t size, const Rule *r) {
    size_t n =
        r->kind == RULE_VMPL_IN || r->kind == RULE_SIGNING_KEY_IN || r->kind == RULE_PRODUCT_IN
            ? 32
            : r->n;
    size_t shown = 0, total = 0;
    char item[2 * 64 + 1];

    (void)snprintf(buf, size, "one of [");
    for (size_t i = 0; i < n; i++) {
        if (r->kind == RULE_VMPL_IN || r->kind == RULE_SIGNING_KEY_IN ||
            r->kind == RULE_PRODUCT_IN) {
            if (!(r->mask & (1u << i)))
                continue;
            if (r->kind == RULE_VMPL_IN)
                (void)snprintf(item, sizeof item, "%zu", i);
            else
                (void)snprintf(item, sizeof item, "%s",
                               r->kind == RULE_SIGNING_KEY_IN
                                   ? signing_key_names[i]
                                   : snp_product_to_string((SnpProduct)i));
        } else if (r->strs)
            claim_text(item, sizeof item, r->strs[i], sizeof item - 4);
        else
            hex_encode(r->hex + i * r->hex_len, r->hex_len, item);
        total++;
        /* Room for this item, its separator and a ", ... NNNN more]" tail. */
        if (shown == total - 1 && strlen(buf) + strlen(item) + 2 + 20 < size) {
            bappend(buf, size, "%s%s", shown ? ", " : "", item);
            shown++;
        }
    }
    if (shown < total)
        bappend(buf, size, ", ... %zu more", total - shown);
    bappend(buf, size, "]");
}

/* A hex claim of len bytes: 1 and the bytes, 0 with found set ("absent", "invalid: ..."), or
 * -ENOMEM. */
static int claim_hex(const json_t *v, size_t len, uint8_t *out, char found[static 256]) {
    const char *s = plain_string(v);
    char shown[120];
    int r;
    if (!v) {
        (void)snprintf(found, 256, "absent");
        return 0;
    }
    if (!s) {
        (void)snprintf(found, 256, "invalid: not a string");
        return 0;
    }
    r = strlen(s) == 2 * len ? hex_decode_exact(s, out, len) : -EBADMSG;
    if (r == -ENOMEM)
        return r;
    if (r < 0) {
        claim_text(shown, sizeof shown, s, 100);
        (void)snprintf(found, 256, "invalid: '%s' is not %zu bytes of hex", shown, len);
        return 0;
    }
    return 1;
}

/* A string claim: 1 and its value, or 0 with found set. */
static int claim_string(const json_t *v, const char **ret, char found[static 256]) {
    const char *s = plain_string(v);
    if (!v) {
        (void)snprintf(found, 256, "absent");
        return 0;
    }
    if (!s) {
        (void)snprintf(found, 256, "invalid: not a string");
        return 0;
    }
    *ret = s;
    return 1;
}

static int eval_hex(Eval *e, const Rule *r, const char *claim) {
    uint8_t value[64];
    char expected[256], found[256];

    int q = claim_hex(json_object_get(e->evidence, claim), r->hex_len, value, found);
    if (q < 0)
        return q;
    if (q > 0) {
        for (size_t i = 0; i < r->n; i++)
            if (memcmp(r->hex + i * r->hex_len, value, r->hex_len) == 0)
                return 0;
        hex_encode(value, r->hex_len, found);
    }
    if (r->kind == RULE_HOST_DATA_EQ)
        hex_encode(r->hex, r->hex_len, expected);
    else
        expected_list(expected, sizeof expected, r);
    return refuse(e, r, expected, found);
}

/* product_in, signing_key_in: the claim matched case-insensitively against the allowed names. */
static int eval_names(Eval *e, const Rule *r, const char *claim, const char *const *names,
                      size_t n_names) {
    char expected[256], found[256];
    const char *s;

    if (claim_string(json_object_get(e->evidence, claim), &s, found)) {
        for (size_t i = 0; i < n_names; i++)
            if ((r->mask & (1u << i)) && strcasecmp(s, names[i]) == 0)
                return 0;
        claim_text(found, sizeof found, s, 120);
    }
    expected_list(expected, sizeof expected, r);
    return refuse(e, r, expected, found);
}

static int eval_csp(Eval *e, const Rule *r) {
    char expected[256], found[256];
    const char *s;

    if (claim_string(json_object_get(e->evidence, "csp_id"), &s, found)) {
        for (size_t i = 0; i < r->n; i++)
            if (streq(r->strs[i], s))
                return 0;
        claim_text(found, sizeof found, s, 130);
    }
    expected_list(expected, sizeof expected, r);
    return refuse(e, r, expected, found);
}

static int eval_min_tcb(Eval *e, const Rule *r) {
    const json_t *tcb = json_object_get(e->evidence, "reported_tcb");
    char expected[256] = "", found[256] = "";
    bool ok = true;

    for (int i = 0; i < _TCB_MAX; i++)
        if (r->tcb_set & (1u << i))
            bappend(expected, sizeof expected, "%s%s>=%u", expected[0] ? " " : "", tcb_names[i],
                    r->tcb_min[i]);
    if (!json_is_object(tcb))
        return refuse(e, r, expected, tcb ? "invalid: reported_tcb is not an object" : "absent");
    for (int i = 0; i < _TCB_MAX; i++) {
        if (!(r->tcb_set & (1u << i)))
            continue;
        const json_t *c = json_object_get(tcb, tcb_names[i]);
        const char *sep = found[0] ? " " : "";
        if (!c) {
            bappend(found, sizeof found, "%s%s=absent", sep, tcb_names[i]);
            ok = false;
        } else if (!json_is_integer(c) || json_integer_value(c) < 0 ||
                   json_integer_value(c) > 255) {
            bappend(found, sizeof found, "%s%s=invalid", sep, tcb_names[i]);
            ok = false;
        } else {
            bappend(found, sizeof found, "%s%s=%lld", sep, tcb_names[i],
                    (long long)json_integer_value(c));
            if (json_integer_value(c) < r->tcb_min[i])
                ok = false;
        }
    }
    return ok ? 0 : refuse(e, r, expected, found);
}

static int eval_debug(Eval *e, const Rule *r) {
    const json_t *d = json_object_get(json_object_get(e->evidence, "policy"), "debug");
    const char *expected = r->allow ? "debug on or off" : "debug off";
    if (!d)
        return refuse(e, r, expected, "absent");
    if (!json_is_boolean(d))
        return refuse(e, r, expected, "invalid: policy.debug is not a boolean");
    if (json_is_true(d) && !r->allow)
        return refuse(e, r, expected, "debug on");
    return 0;
}

static int eval_status(Eval *e, const Rule *r) {
    const json_t *submod = json_object_get(json_object_get(e->claims, "submods"), NT_EAR_SUBMOD);
    const char *expected = r->min_status == NT_EAR_AFFIRMING ? "affirming" : "warning or affirming";
    char found[256];
    const char *s;

    if (!claim_string(json_object_get(submod, "ear.status"), &s, found))
        return refuse(e, r, expected, found);
    int st = nt_ear_status_from_string(s);
    if (st < 0) {
        char shown[120];
        claim_text(shown, sizeof shown, s, 100);
        (void)snprintf(found, sizeof found, "invalid: unknown status '%s'", shown);
        return refuse(e, r, expected, found);
    }
    return st <= (int)r->min_status ? 0 : refuse(e, r, expected, s);
}

static int eval_vmpl(Eval *e, const Rule *r) {
    const json_t *v = json_object_get(e->evidence, "vmpl");
    char expected[256], found[256];

    expected_list(expected, sizeof expected, r);
    if (!v)
        return refuse(e, r, expected, "absent");
    if (!json_is_integer(v))
        return refuse(e, r, expected, "invalid: not an integer");
    json_int_t n = json_integer_value(v);
    if (n >= 0 && n <= 3 && (r->mask & (1u << n)))
        return 0;
    (void)snprintf(found, sizeof found, "%lld", (long long)n);
    return refuse(e, r, expected, found);
}

static int eval_volume(Eval *e, const Rule *r) {
    char uuid[UUID_LEN + 1], shown[120], found[256];
    if (!e->volume_uuid)
        return refuse(e, r, r->uuid, "absent");
    if (!uuid_normalise(e->volume_uuid, uuid)) {
        claim_text(shown, sizeof shown, e->volume_uuid, 100);
        (void)snprintf(found, sizeof found, "invalid: '%s' is not a UUID", shown);
        return refuse(e, r, r->uuid, found);
    }
    return streq(uuid, r->uuid) ? 0 : refuse(e, r, r->uuid, uuid);
}

static int eval_rule(Eval *e, const Rule *r) {
    switch (r->kind) {
    case RULE_MEASUREMENT_IN:
        return eval_hex(e, r, "measurement");
    case RULE_HOST_DATA_EQ:
        return eval_hex(e, r, "host_data");
    case RULE_CHIP_ID_SHA256_IN:
        return eval_hex(e, r, "chip_id_sha256");
    case RULE_MIN_TCB:
        return eval_min_tcb(e, r);
    case RULE_DEBUG_ALLOWED:
        return eval_debug(e, r);
    case RULE_SIGNING_KEY_IN:
        return eval_names(e, r, "signing_key", signing_key_names, ELEMENTSOF(signing_key_names));
    case RULE_PRODUCT_IN: {
        const char *products[_SNP_PRODUCT_MAX];
        for (int k = 0; k < _SNP_PRODUCT_MAX; k++)
            products[k] = snp_product_to_string((SnpProduct)k);
        return eval_names(e, r, "product", products, _SNP_PRODUCT_MAX);
    }
    case RULE_CSP_ID_IN:
        return eval_csp(e, r);
    case RULE_MIN_STATUS:
        return eval_status(e, r);
    case RULE_VMPL_IN:
        return eval_vmpl(e, r);
    case RULE_VOLUME_UUID_EQ:
        return eval_volume(e, r);
    default:
        return refuse(e, r, "a known rule", "invalid: unknown rule");
    }
}

int kms_policy_eval(const KmsPolicy *p, const json_t *claims, const char *volume_uuid,
                    KmsPolicyRefusal *ret_refusal) {
    KmsPolicyRefusal f = {};
    Eval e = {.claims = claims, .volume_uuid = volume_uuid, .f = &f};

    if (!p || !json_is_object(claims) || !ret_refusal)
        return -EINVAL;
    e.evidence = json_object_get(json_object_get(json_object_get(claims, "submods"), NT_EAR_SUBMOD),
                                 "ear.veraison.annotated-evidence");
    for (size_t i = 0; i < p->n; i++) {
        int r = eval_rule(&e, &p->rules[i]);
        if (r == -EACCES)
            *ret_refusal = f;
        if (r < 0)
            return r;
    }
    return 0;
}
