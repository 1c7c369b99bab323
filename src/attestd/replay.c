/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nitride-attestd replay: re-judges the evidence log against a candidate policy and prints the
 * VMs whose verdict would change, and why, before the operator rolls the policy out.
 * Authenticity is re-checked at each record's own verification time with the certificates it
 * came with (or the KDS cache, never the network); revocation is not re-checked (it is a
 * property of now, not of the policy).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attestd/attestd.h"
#include "core/encoding.h"
#include "core/log.h"

typedef struct ReplayCtx {
    Attestd *a;
    const NtPolicy *policy;
    const char *policy_id; /* only records appraised against this id; NULL: all */
    bool json;
    json_t *changes;
    size_t n_records, n_changed, n_now_refused, n_now_accepted, n_skipped;
} ReplayCtx;

static int bundle_from_json(const char *text, NtCertBundle *b) {
    json_t *arr = json_loads(text, 0, NULL), *e;
    size_t i;
    int r = 0;

    if (!json_is_array(arr)) {
        json_decref(arr);
        return -EBADMSG;
    }
    json_array_foreach(arr, i, e) {
        const char *role = json_string_value(json_object_get(e, "role"));
        const char *der = json_string_value(json_object_get(e, "der"));
        _cleanup_free_ uint8_t *raw = NULL;
        size_t len = 0;
        NtCertRole rr = _NT_CERT_ROLE_INVALID;
        if (!der || base64url_decode_alloc(der, strlen(der), &raw, &len) < 0) {
            r = -EBADMSG;
            break;
        }
        for (int k = 0; role && k < _NT_CERT_ROLE_MAX; k++)
            if (streq(role, nt_cert_role_to_string((NtCertRole)k)))
                rr = (NtCertRole)k;
        r = nt_cert_bundle_add(b, raw, len, rr, "evidence log");
        if (r < 0)
            break;
    }
    json_decref(arr);
    return r;
}

static const char *status_word(NtVerdictStatus s) {
    return s == NT_VERDICT_OK ? "ok" : s == NT_VERDICT_POLICY ? "policy" : "invalid";
}

static int replay_one(void *ud, const EvlogRecord *rec) {
    ReplayCtx *c = ud;
    _cleanup_(nt_cert_bundle_freep) NtCertBundle *b = NULL;
    _cleanup_(nt_verdict_freep) NtVerdict *v = NULL;
    NtVerifyOptions opts = NT_VERIFY_OPTIONS_INIT;
    const char *now_word;
    int r;

    if (c->policy_id && !streq(rec->policy_id, c->policy_id))
        return 0;
    /* Refusals before appraisal (the report did not bind its runtime data) cannot change. */
    if (streq(rec->check, "report_data")) {
        c->n_skipped++;
        return 0;
    }
    c->n_records++;
    b = nt_cert_bundle_new();
    if (!b)
        return -ENOMEM;
    if (bundle_from_json(rec->certs_json, b) < 0) {
        log_warning("Evidence log record %" PRId64 ": unreadable certificates, skipped", rec->id);
        c->n_skipped++;
        return 0;
    }
    opts.at = (time_t)rec->at;
    opts.policy = c->policy;
    r = nt_verifier_verify(c->a->verifier, rec->report, rec->report_len, b, &opts, &v);
    if (r < 0)
        return r;
    now_word = status_word(nt_verdict_status(v));
    if (streq(now_word, rec->verdict))
        return 0;

    const NtCheck *f = nt_verdict_first_failure(v);
    char at[32], mhex[97] = "";
    nt_format_time((time_t)rec->at, at);
    if (v->have_report)
        hex_encode(v->report.measurement, 48, mhex);
    c->n_changed++;
    if (streq(now_word, "ok"))
        c->n_now_accepted++;
    else
        c->n_now_refused++;
    if (c->json) {
        json_array_append_new(
            c->changes,
            json_pack("{sI ss ss ss ss ss ss s{ss* ss* ss* ss*}}", "record", (json_int_t)rec->id,
                      "at", at, "client", rec->client, "policy_id", rec->policy_id, "measurement",
                      mhex, "was", rec->verdict, "now", now_word, "reason", "check",
                      f ? f->name : NULL, "expected", f ? f->expected : NULL, "found",
                      f ? f->found : NULL, "detail", f ? f->detail : NULL));
    } else {
        printf("record %" PRId64 " (%s, client %s, policy %s, measurement %.16s...): %s -> %s",
               rec->id, at, rec->client, rec->policy_id, mhex, rec->verdict, now_word);
        if (f)
            printf(": %s: %s%s%s%s%s", f->name, f->detail, f->expected ? " (expected " : "",
                   f->expected ? f->expected : "", f->found ? ", found " : "",
                   f->found ? f->found : "");
        if (f && f->expected)
            printf(")");
        printf("\n");
    }
    return 0;
}

int attestd_replay(Attestd *a, const char *policy_path, const char *policy_id, int64_t since,
                   bool json) {
    _cleanup_(nt_policy_freep) NtPolicy *p = NULL;
    _cleanup_free_ char *perr = NULL;
    int r;

    if (!a->evlog) {
        log_error("The configuration has no evidence_log: nothing was recorded to replay.");
        return -ENOENT;
    }
    r = nt_policy_load(policy_path, &p, &perr);
    if (r < 0) {
        log_error("Candidate policy %s: %s", policy_path, perr ? perr : strerror(-r));
        return r;
    }
    attestd_policy_defaults(p); /* judged as the service would judge it */
    ReplayCtx c = {.a = a, .policy = p, .policy_id = policy_id, .json = json};
    if (json) {
        c.changes = json_array();
        if (!c.changes)
            return -ENOMEM;
    }
    r = evlog_foreach(a->evlog, since, replay_one, &c);
    if (r < 0) {
        json_decref(c.changes);
        return r;
    }
    if (json) {
        json_t *out = json_pack(
            "{sI sI sI sI sI so}", "records", (json_int_t)c.n_records, "changed",
            (json_int_t)c.n_changed, "now_refused", (json_int_t)c.n_now_refused, "now_accepted",
            (json_int_t)c.n_now_accepted, "skipped", (json_int_t)c.n_skipped, "changes", c.changes);
        if (!out)
            return -ENOMEM;
        json_dumpf(out, stdout, JSON_INDENT(2));
        printf("\n");
        json_decref(out);
    } else
        printf("%zu records replayed against %s: %zu would change verdict (%zu newly refused, "
               "%zu newly accepted), %zu skipped\n",
               c.n_records, policy_path, c.n_changed, c.n_now_refused, c.n_now_accepted,
               c.n_skipped);
    return 0;
}
