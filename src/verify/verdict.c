/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Verdicts (see verdict.h): an append-only list of checks in a single allocation. Strings for
 * failures are heap copies; passing checks only format their short detail into the inline
 * buffer.
 */
#include "verify/verdict.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/log.h"

NtVerdict *nt_verdict_new(void) {
    NtVerdict *v = nt_calloc(1, sizeof(NtVerdict));
    if (!v)
        return NULL;
    v->product = _SNP_PRODUCT_INVALID;
    v->signing_role = _NT_CERT_ROLE_INVALID;
    return v;
}

NtVerdict *nt_verdict_free(NtVerdict *v) {
    if (!v)
        return NULL;
    for (size_t i = 0; i < v->n_checks; i++) {
        free(v->checks[i].expected);
        free(v->checks[i].found);
    }
    free(v);
    return NULL;
}

static NtCheck *add(NtVerdict *v, const char *name, NtCheckClass cls, NtCheckResult res,
                    const char *fmt, va_list ap) {
    if (v->n_checks >= NT_VERDICT_MAX_CHECKS) {
        log_debug("Verdict full, dropping check '%s'.", name);
        return NULL;
    }
    NtCheck *c = &v->checks[v->n_checks++];
    c->name = name;
    c->cls = cls;
    c->result = res;
    c->error = 0;
    c->expected = c->found = NULL;
    c->detail[0] = 0;
    if (fmt)
        (void)vsnprintf(c->detail, sizeof c->detail, fmt, ap);
    return c;
}

void nt_verdict_pass(NtVerdict *v, const char *name, NtCheckClass cls, const char *detail, ...) {
    va_list ap;
    va_start(ap, detail);
    (void)add(v, name, cls, NT_CHECK_PASS, detail, ap);
    va_end(ap);
}

void nt_verdict_skip(NtVerdict *v, const char *name, NtCheckClass cls, const char *detail, ...) {
    va_list ap;
    va_start(ap, detail);
    (void)add(v, name, cls, NT_CHECK_SKIP, detail, ap);
    va_end(ap);
}

void nt_verdict_fail(NtVerdict *v, const char *name, NtCheckClass cls, int error,
                     const char *expected, const char *found, const char *detail, ...) {
    va_list ap;
    va_start(ap, detail);
    NtCheck *c = add(v, name, cls, NT_CHECK_FAIL, detail, ap);
    va_end(ap);
    if (!c) {
        /* Never lose a failure: overwrite the last slot so the status stays right. */
        c = &v->checks[NT_VERDICT_MAX_CHECKS - 1];
        free(c->expected);
        free(c->found);
        *c = (NtCheck){.name = name, .cls = cls, .result = NT_CHECK_FAIL};
    }
    c->error = error < 0 ? error : -EKEYREJECTED;
    if (expected && !(c->expected = nt_strdup(expected)))
        v->alloc_failed = true;
    if (found && !(c->found = nt_strdup(found)))
        v->alloc_failed = true;
}

NtVerdictStatus nt_verdict_status(const NtVerdict *v) {
    bool policy = false;
    for (size_t i = 0; i < v->n_checks; i++)
        if (v->checks[i].result == NT_CHECK_FAIL) {
            if (v->checks[i].cls == NT_CHECK_EVIDENCE)
                return NT_VERDICT_INVALID;
            policy = true;
        }
    return policy ? NT_VERDICT_POLICY : NT_VERDICT_OK;
}

const NtCheck *nt_verdict_first_failure(const NtVerdict *v) {
    for (size_t i = 0; i < v->n_checks; i++)
        if (v->checks[i].result == NT_CHECK_FAIL)
            return &v->checks[i];
    return NULL;
}

const NtCheck *nt_verdict_find(const NtVerdict *v, const char *name) {
    for (size_t i = 0; i < v->n_checks; i++)
        if (streq(v->checks[i].name, name))
            return &v->checks[i];
    return NULL;
}

const char *nt_verdict_status_to_string(NtVerdictStatus s) {
    switch (s) {
    case NT_VERDICT_OK:
        return "pass";
    case NT_VERDICT_INVALID:
        return "invalid";
    case NT_VERDICT_POLICY:
        return "policy";
    default:
        return "unknown";
    }
}

const char *nt_check_result_to_string(NtCheckResult r) {
    switch (r) {
    case NT_CHECK_PASS:
        return "pass";
    case NT_CHECK_FAIL:
        return "fail";
    case NT_CHECK_SKIP:
        return "skip";
    default:
        return "unknown";
    }
}

static int set_str(json_t *o, const char *k, const char *s) {
    return json_object_set_new(o, k, json_string(s));
}

json_t *nt_verdict_to_json(const NtVerdict *v) {
    json_auto_t *o = json_object();
    json_t *checks = json_array();
    char at[32];
    NtVerdictStatus st = nt_verdict_status(v);

    if (!o || !checks || json_object_set_new(o, "checks", checks) < 0)
        return NULL;
    nt_format_time(v->at, at);
    if (set_str(o, "verdict", nt_verdict_status_to_string(st)) < 0 ||
        json_object_set_new(o, "product",
                            v->product >= 0 ? json_string(snp_product_to_string(v->product))
                                            : json_null()) < 0 ||
        json_object_set_new(o, "signing_key",
                            v->signing_role >= 0
                                ? json_string(nt_cert_role_to_string(v->signing_role))
                                : json_null()) < 0 ||
        json_object_set_new(o, "csp_id", v->csp_id[0] ? json_string(v->csp_id) : json_null()) < 0 ||
        json_object_set_new(o, "anchor", v->anchor[0] ? json_string(v->anchor) : json_null()) < 0 ||
        set_str(o, "verified_at", at) < 0 ||
        json_object_set_new(o, "chain_cached", json_boolean(v->chain_cached)) < 0 ||
        json_object_set_new(o, "policy_applied", json_boolean(v->policy_applied)) < 0)
        return NULL;
    for (size_t i = 0; i < v->n_checks; i++) {
        const NtCheck *c = &v->checks[i];
        json_t *j = json_object();
        if (!j || json_array_append_new(checks, j) < 0)
            return NULL;
        if (set_str(j, "check", c->name) < 0 ||
            set_str(j, "class", c->cls == NT_CHECK_EVIDENCE ? "evidence" : "policy") < 0 ||
            set_str(j, "result", nt_check_result_to_string(c->result)) < 0)
            return NULL;
        if (c->expected && set_str(j, "expected", c->expected) < 0)
            return NULL;
        if (c->found && set_str(j, "found", c->found) < 0)
            return NULL;
        if (c->detail[0] && set_str(j, "detail", c->detail) < 0)
            return NULL;
    }
    if (v->have_report && st != NT_VERDICT_INVALID) {
        json_t *r = snp_report_to_json(&v->report, v->product);
        if (!r || json_object_set_new(o, "report", r) < 0)
            return NULL;
    }
    return TAKE_PTR(o);
}

void nt_verdict_print(const NtVerdict *v, FILE *f) {
    static const char *const mark[] = {"PASS", "FAIL", "skip"};
    char at[32];

    for (size_t i = 0; i < v->n_checks; i++) {
        const NtCheck *c = &v->checks[i];
        fprintf(f, "  %s  %-20s", mark[c->result], c->name);
        if (c->detail[0])
            fprintf(f, " %s", c->detail);
        if (c->result == NT_CHECK_FAIL && (c->expected || c->found))
            fprintf(f, "%sexpected %s, found %s", c->detail[0] ? ": " : " ",
                    c->expected ? c->expected : "(n/a)", c->found ? c->found : "(n/a)");
        fputc('\n', f);
    }
    nt_format_time(v->at, at);
    NtVerdictStatus st = nt_verdict_status(v);
    fprintf(f, "Verdict: %s",
            st == NT_VERDICT_OK        ? "PASS"
            : st == NT_VERDICT_INVALID ? "INVALID EVIDENCE"
                                       : "POLICY MISMATCH");
    if (v->product >= 0)
        fprintf(f, " (%s, %s", snp_product_to_string(v->product),
                nt_cert_role_to_string(v->signing_role));
    if (v->product >= 0 && v->csp_id[0])
        fprintf(f, " cspID '%s'", v->csp_id);
    if (v->product >= 0)
        fprintf(f, ", anchor %s)", v->anchor);
    fprintf(f, " at %s%s\n", at, v->policy_applied ? "" : "; no policy: authenticity only");
}
