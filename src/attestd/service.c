/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The attestation service's HTTP API (docs/attestd.md):
 *   POST /v1/challenge          -> {"nonce", "expires", "version"}
 *   POST /v1/attest             -> {"token", "status", "version"} or an error naming the check
 *   GET  /.well-known/jwks.json -> the published signing keys
 *   GET  /healthz, GET /metrics
 * Errors are {"error", "check", "expected", "found"}: 400 malformed, 401 evidence or policy
 * rejected, 429 rate limited (the web layer), 503 KDS unavailable with nothing cached.
 *
 * Every route is inline (web/server.h): its handler runs on the HTTP event thread that read the
 * request when that thread serves no other live connection, saving the hand-off to a worker
 * thread and back (else it runs on a worker as any handler). /v1/attest verifies there in local
 * mode (certificates and CRL from the evidence, memory, the KDS cache or the offline bundle);
 * when verification would need AMD KDS (a certificate not cached, a CRL due for a refresh) it
 * returns NT_WEB_REQUEUE before anything is spent or recorded (the nonce is only checked, not
 * consumed), and a worker runs the whole request again, allowed to fetch.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "attestd/attestd.h"
#include "core/encoding.h"
#include "core/log.h"
#include "web/svc-main.h"
#include "snp/certtable.h"

/* ---- policies ---- */

void attestd_policy_set_free(AttestdPolicySet *s) {
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++) {
        free(s->items[i].id);
        nt_policy_free(s->items[i].policy);
        nt_policy_free(s->items[i].recommended);
    }
    free(s->items);
    free(s->default_id);
    for (size_t i = 0; i < s->n_client_ids; i++)
        free(s->client_ids[i]);
    free(s->client_ids);
    free(s);
}

void attestd_policy_defaults(NtPolicy *p) {
    /* A policy that does not list VMPLs accepts VMPL 0 only here: a report requested from a
     * less privileged level (e.g. a guest kernel under an SVSM) does not speak for the VM. */
    if (p->vmpls == 0)
        p->vmpls = 1u << 0;
}

int attestd_policy_set_load(const AttestdConfig *cfg, AttestdPolicySet **ret, char **ret_error) {
    AttestdPolicySet *s;
    int r = 0;

    s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->refs = 1;
    s->items = calloc(cfg->n_policies, sizeof(AttestdPolicy));
    s->client_ids = calloc(cfg->n_client_policy_ids + 1, sizeof(char *));
    s->default_id = strdup(cfg->default_policy);
    if (!s->items || !s->client_ids || !s->default_id) {
        attestd_policy_set_free(s);
        return -ENOMEM;
    }
    for (size_t i = 0; i < cfg->n_policies; i++) {
        const AttestdPolicyRef *ref = &cfg->policies[i];
        AttestdPolicy *p = &s->items[s->n++];
        char *perr = NULL;

        p->id = strdup(ref->id);
        if (!p->id) {
            r = -ENOMEM;
            break;
        }
        r = nt_policy_load(ref->file, &p->policy, &perr);
        if (r >= 0)
            attestd_policy_defaults(p->policy);
        if (r >= 0 && ref->recommended_tcb_json)
            r = nt_policy_parse(ref->recommended_tcb_json, strlen(ref->recommended_tcb_json),
                                &p->recommended, &perr);
        if (r < 0) {
            if (ret_error && asprintf(ret_error, "policy '%s' (%s): %s", ref->id, ref->file,
                                      perr ? perr : strerror(-r)) < 0)
                *ret_error = NULL;
            free(perr);
            break;
        }
    }
    for (size_t i = 0; r >= 0 && i < cfg->n_client_policy_ids; i++) {
        s->client_ids[i] = strdup(cfg->client_policy_ids[i]);
        if (!s->client_ids[i])
            r = -ENOMEM;
        else
            s->n_client_ids++;
    }
    if (r < 0) {
        attestd_policy_set_free(s);
        return r;
    }
    *ret = s;
    return 0;
}

AttestdPolicySet *attestd_policy_set_ref(Attestd *a) {
    AttestdPolicySet *s;
    pthread_mutex_lock(&a->policy_lock);
    s = a->policies;
    s->refs++;
    pthread_mutex_unlock(&a->policy_lock);
    return s;
}

void attestd_policy_set_unref(Attestd *a, AttestdPolicySet *s) {
    bool last;
    if (!s)
        return;
    pthread_mutex_lock(&a->policy_lock);
    last = --s->refs == 0;
    pthread_mutex_unlock(&a->policy_lock);
    if (last)
        attestd_policy_set_free(s);
}

const AttestdPolicy *attestd_policy_set_find(const AttestdPolicySet *s, const char *id) {
    for (size_t i = 0; i < s->n; i++)
        if (streq(s->items[i].id, id))
            return &s->items[i];
    return NULL;
}

int attestd_reload(Attestd *a, char **ret_error) {
    _cleanup_(attestd_config_freep) AttestdConfig *cfg = NULL;
    AttestdPolicySet *s = NULL, *old;
    int r;

    r = attestd_config_load(a->cfg->path, &cfg, ret_error);
    if (r < 0)
        return r;
    r = attestd_policy_set_load(cfg, &s, ret_error);
    if (r < 0)
        return r;
    pthread_mutex_lock(&a->policy_lock);
    old = a->policies;
    a->policies = s;
    pthread_mutex_unlock(&a->policy_lock);
    attestd_policy_set_unref(a, old);
    return 0;
}

/* ---- set-up ---- */

static void kds_count(void *ud, const char *event) {
    Attestd *a = ud;
    char labels[96];
    snprintf(labels, sizeof labels, "event=\"%s\"", event);
    nt_metrics_add(a->metrics, "nitride_attestd_kds_events_total", labels, 1);
}

static int crl_source(void *ud, SnpProduct p, uint8_t **ret_der, size_t *ret_len,
                      time_t *ret_fetched_at) {
    Attestd *a = ud;
    return nt_kds_get_crl(a->kds, p, a->cfg->crl_max_age_s, ret_der, ret_len, ret_fetched_at);
}

static int crl_source_local(void *ud, SnpProduct p, uint8_t **ret_der, size_t *ret_len,
                            time_t *ret_fetched_at) {
    Attestd *a = ud;
    return nt_kds_get_crl_local(a->kds, p, a->cfg->crl_max_age_s, ret_der, ret_len, ret_fetched_at);
}

static int declare_metrics(NtMetrics *m) {
    static const SvcMetricFamily fams[] = {
        {"nitride_attestd_failures_total", "counter",
         "Attestations refused, by the check that failed"},
        {"nitride_attestd_tokens_total", "counter", "Tokens issued, by EAR status"},
        {"nitride_attestd_nonces_total", "counter", "Nonces presented, by result"},
        {"nitride_attestd_kds_events_total", "counter",
         "AMD KDS client: fetch, cache_hit, http_429, http_error, backoff, negative_hit, "
         "fetch_refused"},
        {"nitride_attestd_chain_cache_total", "counter", "Verified-chain cache hits and misses"},
    };
    return svc_metrics_declare(m, fams, ELEMENTSOF(fams));
}

/* On failure the configuration stays the caller's. */
static void attestd_abandon(Attestd **a) {
    if (*a) {
        (*a)->cfg = NULL;
        attestd_free(*a);
    }
}

int attestd_new(AttestdConfig *cfg, bool serve, Attestd **ret, char **ret_error) {
    _cleanup_(attestd_abandon) Attestd *a = NULL;
    int r;

    a = calloc(1, sizeof *a);
    if (!a)
        return -ENOMEM;
    pthread_mutex_init(&a->policy_lock, NULL);
    svc_keys_refresh_init(&a->keys_refresh, 0);
    a->cfg = cfg;

    r = nt_metrics_new(&a->metrics);
    if (r < 0)
        return r;
    r = declare_metrics(a->metrics);
    if (r < 0)
        return r;

    r = attestd_policy_set_load(cfg, &a->policies, ret_error);
    if (r < 0)
        return r;

    r = nt_verifier_new(&a->verifier);
    if (r < 0)
        return svc_errf(ret_error, r, "verifier: %s", strerror(-r));
    for (size_t i = 0; i < cfg->n_trust_anchors; i++) {
        r = nt_verifier_add_trust_anchor_file(a->verifier, cfg->trust_anchors[i]);
        if (r < 0)
            return svc_errf(ret_error, r, "trust_anchors[%zu] %s: %s", i, cfg->trust_anchors[i],
                            strerror(-r));
    }

    if (cfg->kds_url || cfg->kds_cache_dir || cfg->kds_offline_dir) {
        NtKdsConfig kc = {
            .base_url = cfg->kds_url,
            .cache_dir = cfg->kds_cache_dir,
            .offline_dir = cfg->kds_offline_dir,
            .ca_file = cfg->kds_ca_file,
            .timeout_ms = cfg->kds_timeout_s * 1000,
            .backoff_base_ms = 1000,
            .backoff_max_ms = (unsigned)(cfg->kds_backoff_max_s * 1000),
            .negative_ttl_s = cfg->kds_negative_ttl_s > 0 ? cfg->kds_negative_ttl_s : -1,
            .max_concurrent_fetches = cfg->kds_max_concurrent_fetches,
            .max_fetches_per_s = cfg->kds_max_fetches_per_s,
            .count = kds_count,
            .count_ud = a,
        };
        NtVcekSource src;
        r = nt_kds_new(&kc, &a->kds);
        if (r < 0)
            return svc_errf(ret_error, r, "kds: %s", strerror(-r));
        nt_kds_vcek_source(a->kds, &src);
        nt_verifier_set_vcek_source(a->verifier, &src);
    }
    if (!streq(cfg->revocation_mode, "off")) {
        if (!a->kds)
            return svc_errf(
                ret_error, -EINVAL,
                "revocation.mode %s needs a kds section (url, cache_dir or offline_dir) "
                "to obtain AMD's CRL",
                cfg->revocation_mode);
        NtRevocationSource rs = {
            .name = "AMD KDS CRL",
            .get_crl = crl_source,
            .get_crl_local = crl_source_local,
            .userdata = a,
            .mode = streq(cfg->revocation_mode, "require") ? NT_REVOCATION_REQUIRE
                                                           : NT_REVOCATION_BEST_EFFORT,
            .max_staleness_s = cfg->crl_max_staleness_s,
        };
        nt_verifier_set_revocation_source(a->verifier, &rs);
    }

    /* Serving writes the log; the other commands read it when it exists. */
    if (cfg->evidence_log && (serve || access(cfg->evidence_log, F_OK) == 0)) {
        r = evlog_open(cfg->evidence_log, cfg->evidence_log_max, !serve, &a->evlog, ret_error);
        if (r < 0)
            return r;
    }

    if (serve) {
        NtJwsAlg alg = streq(cfg->token_alg, "ES256") ? NT_JWS_ES256 : NT_JWS_ES384;
        r = nt_challenger_new_from_file(cfg->challenge_secret, cfg->challenge_lifetime,
                                        cfg->replay_capacity, &a->challenger, ret_error);
        if (r < 0)
            return r;
        if (cfg->n_key_files > 0)
            r = nt_signing_keys_load_files(cfg->key_files, cfg->n_key_files, alg, &a->keys,
                                           ret_error);
        else
            r = nt_signing_keys_open_dir(cfg->keys_dir, alg, &a->keys, ret_error);
        if (r < 0)
            return r;
        a->keys_refresh.last = time(NULL);
    }
    *ret = TAKE_PTR(a);
    return 0;
}

Attestd *attestd_free(Attestd *a) {
    if (!a)
        return NULL;
    nt_web_server_free(a->web);
    nt_challenger_free(a->challenger);
    nt_verifier_free(a->verifier);
    nt_kds_free(a->kds);
    nt_signing_keys_free(a->keys);
    evlog_close(a->evlog);
    attestd_policy_set_free(a->policies);
    nt_metrics_free(a->metrics);
    attestd_config_free(a->cfg);
    pthread_mutex_destroy(&a->policy_lock);
    svc_keys_refresh_done(&a->keys_refresh);
    free(a);
    return NULL;
}

/* Keys rotated by another process (or `keys rotate`) show up within 10 seconds. */
static void keys_maybe_refresh(Attestd *a, time_t now) {
    (void)svc_keys_refresh_maybe(&a->keys_refresh, a->keys,
                                 a->cfg->n_key_files == 0 ? a->cfg->keys_dir : NULL, "signing",
                                 now);
}

/* ---- request helpers ---- */

static void fail_metric(Attestd *a, const char *check) {
    char esc[96], labels[128];
    if (nt_metrics_label_escape(check, esc, sizeof esc) < 0)
        snprintf(esc, sizeof esc, "other");
    snprintf(labels, sizeof labels, "check=\"%s\"", esc);
    nt_metrics_add(a->metrics, "nitride_attestd_failures_total", labels, 1);
}

static int reply_fail(Attestd *a, NtWebReply *reply, unsigned status, const char *result,
                      const char *error, const char *check, const char *expected,
                      const char *found) {
    fail_metric(a, check ? check : "request");
    reply->result = result;
    /* {"error", "check", "expected", "found", "verdict"}: verdict says what kind of refusal it is
     * (malformed, version, nonce, invalid, policy, busy, unavailable), so that clients need not
     * parse the message. */
    json_t *j = json_pack("{ss ss* ss* ss* ss}", "error", error ? error : "refused", "check", check,
                          "expected", expected, "found", found, "verdict", result);
    if (!j)
        return -ENOMEM;
    return nt_web_reply_json(reply, status, j);
}

static int reply_error(Attestd *a, NtWebReply *reply, const AttestdError *e) {
    return reply_fail(a, reply, e->status, e->result, e->error, e->check,
                      e->expected[0] ? e->expected : NULL, e->found[0] ? e->found : NULL);
}

static json_t *version_json(void) {
    char v[16];
    snprintf(v, sizeof v, "%d.%d", ATTESTD_PROTO_MAJOR, ATTESTD_PROTO_MINOR);
    return json_string(v);
}

/* ---- POST /v1/challenge ---- */

static int handle_challenge(void *ud, const NtWebRequest *req, NtWebReply *reply) {
    Attestd *a = ud;
    _cleanup_free_ char *nonce = NULL;
    AttestdError e;
    time_t now = time(NULL), expires;
    char t[32];
    int r;

    r = attestd_challenge_request_parse(req->body, req->body_len, &e);
    if (r == -EBADMSG)
        return reply_error(a, reply, &e);
    if (r < 0)
        return r;
    r = nt_challenge_issue(a->challenger, now, &nonce, &expires);
    if (r < 0)
        return r;
    nt_format_time(expires, t);
    reply->result = "ok";
    return nt_web_reply_json(reply, 200,
                             json_pack("{ss ss sI so}", "nonce", nonce, "expires", t,
                                       "expires_unix", (json_int_t)expires, "version",
                                       version_json()));
}

/* ---- POST /v1/attest ---- */

static char *certs_to_json(const NtCertBundle *b) {
    json_t *arr = json_array();
    char *s = NULL;
    for (size_t i = 0; arr && i < b->n_entries; i++) {
        _cleanup_free_ char *der = NULL;
        if (base64url_encode_alloc(b->entries[i].der, b->entries[i].der_len, &der) < 0)
            break;
        json_array_append_new(
            arr,
            json_pack("{ss ss}", "role", nt_cert_role_to_string(b->entries[i].role), "der", der));
    }
    if (arr)
        s = json_dumps(arr, JSON_COMPACT);
    json_decref(arr);
    return s;
}

static void nonce_metric(Attestd *a, NtChallengeResult cr) {
    char labels[64];
    snprintf(labels, sizeof labels, "result=\"%s\"", nt_challenge_result_to_string(cr));
    nt_metrics_add(a->metrics, "nitride_attestd_nonces_total", labels, 1);
}

static bool errno_unavailable(int e) {
    return e == -EAGAIN || e == -EHOSTUNREACH || e == -ETIMEDOUT || e == -ECONNREFUSED ||
           e == -ENETUNREACH || e == -EBUSY;
}

typedef struct AttestCtx {
    Attestd *a;
    const NtWebRequest *req;
    AttestdPolicySet *ps;
    const AttestdPolicy *policy;
    AttestdAttestRequest r;
    NtVerdict *verdict;
    bool nonce_ok; /* the nonce checked out: counted when the request is done */
    bool requeued; /* handed to a worker: this run counts nothing */
} AttestCtx;

static void attest_ctx_done(AttestCtx *c) {
    if (c->nonce_ok && !c->requeued)
        nonce_metric(c->a, NT_CHALLENGE_OK);
    attestd_policy_set_unref(c->a, c->ps);
    attestd_attest_request_done(&c->r);
    nt_verdict_free(c->verdict);
}

static void record(AttestCtx *c, const char *verdict, const char *check, const char *detail) {
    _cleanup_free_ char *certs = NULL, *rd = NULL;
    if (!c->a->evlog || !c->r.report)
        return;
    certs = c->r.certs ? certs_to_json(c->r.certs) : NULL;
    rd = c->r.runtime_data ? json_dumps(c->r.runtime_data, JSON_COMPACT) : NULL;
    EvlogRecord rec = {
        .at = c->verdict ? (int64_t)c->verdict->at : (int64_t)time(NULL),
        .client = c->req->client_addr,
        .policy_id = c->policy ? c->policy->id : "",
        .report = c->r.report,
        .report_len = c->r.report_len,
        .certs_json = certs,
        .runtime_data = rd,
        .verdict = verdict,
        .check = check,
        .detail = detail,
    };
    (void)evlog_append(c->a->evlog, &rec);
}

static int handle_attest(void *ud, const NtWebRequest *req, NtWebReply *reply) {
    Attestd *a = ud;
    _cleanup_(attest_ctx_done) AttestCtx c = {.a = a, .req = req};
    AttestdError e;
    const char *policy_id;
    uint8_t want[64];
    time_t now = time(NULL);
    int r;

    r = attestd_attest_request_parse(req->body, req->body_len, &c.r, &e);
    if (r == -EBADMSG)
        return reply_error(a, reply, &e);
    if (r < 0)
        return r;

    /* The policy: the default, or one the configuration lets requests name. */
    c.ps = attestd_policy_set_ref(a);
    policy_id = c.ps->default_id;
    if (c.r.policy_id) {
        bool allowed = false;
        for (size_t i = 0; i < c.ps->n_client_ids && !allowed; i++)
            allowed = streq(c.ps->client_ids[i], c.r.policy_id);
        if (!allowed) {
            _cleanup_free_ char *list = NULL;
            size_t n = 0;
            FILE *f = open_memstream(&list, &n);
            if (!f)
                return -ENOMEM;
            for (size_t i = 0; i < c.ps->n_client_ids; i++)
                fprintf(f, "%s%s", i ? ", " : "", c.ps->client_ids[i]);
            if (c.ps->n_client_ids == 0)
                fputs("(requests may not choose a policy)", f);
            fclose(f);
            return reply_fail(a, reply, 400, "malformed",
                              "policy_id: this policy may not be requested", "policy_id", list,
                              c.r.policy_id);
        }
        policy_id = c.r.policy_id;
    }
    c.policy = attestd_policy_set_find(c.ps, policy_id);
    if (!c.policy)
        return -ENOENT; /* the set is validated at load: cannot happen */

    /* Freshness: the challenge must be ours, live and unused; runtime_data must carry it. It is
     * only checked here; it is spent once the evidence has proved authentic, so that requests
     * without genuine evidence cannot fill the replay table. */
    NtChallengeResult cr = nt_challenge_check(a->challenger, c.r.nonce, now, false, NULL);
    if (cr != NT_CHALLENGE_OK)
        nonce_metric(a, cr);
    switch (cr) {
    case NT_CHALLENGE_OK:
        c.nonce_ok = true;
        break;
    case NT_CHALLENGE_MALFORMED:
        return reply_fail(a, reply, 400, "malformed", "nonce: not a nonce of this service", "nonce",
                          NULL, NULL);
    case NT_CHALLENGE_FORGED:
        return reply_fail(a, reply, 401, "nonce",
                          "nonce: not issued by this service (authentication failed)", "nonce",
                          "a nonce from POST /v1/challenge", "a nonce with an invalid MAC");
    case NT_CHALLENGE_EXPIRED:
        return reply_fail(a, reply, 401, "nonce", "nonce: expired; request a new challenge",
                          "nonce", NULL, NULL);
    case NT_CHALLENGE_REPLAYED:
        return reply_fail(a, reply, 401, "nonce", "nonce: already used", "nonce", NULL, NULL);
    case NT_CHALLENGE_BUSY:
        nt_web_reply_header(reply, "Retry-After", "1");
        return reply_fail(a, reply, 429, "busy", "too many attestations in flight; retry", "nonce",
                          NULL, NULL);
    }
    const char *rd_nonce = json_string_value(json_object_get(c.r.runtime_data, "nonce"));
    if (!streq(rd_nonce, c.r.nonce))
        return reply_fail(a, reply, 401, "nonce", "runtime_data.nonce differs from the nonce",
                          "nonce", c.r.nonce, rd_nonce);

    /* REPORT_DATA binds runtime_data (and so the nonce and the tee-pubkey). */
    r = attestd_runtime_binding(c.r.runtime_data, want);
    if (r == -EDOM || r == -EINVAL || r == -EBADMSG || r == -ELOOP || r == -E2BIG)
        return reply_fail(a, reply, 400, "malformed",
                          "runtime_data: cannot be canonicalised (RFC 8785)", "report_data", NULL,
                          NULL);
    if (r < 0)
        return r;
    {
        SnpReport parsed;
        const char *perr = NULL;
        if (snp_report_parse(c.r.report, c.r.report_len, &parsed, &perr) < 0)
            return reply_fail(a, reply, 401, "invalid",
                              perr ? perr : "evidence.report: malformed report", "report_format",
                              NULL, NULL);
        if (memcmp(parsed.report_data, want, 64) != 0) {
            char ex[129], f[129];
            hex_encode(want, 64, ex);
            hex_encode(parsed.report_data, 64, f);
            return reply_fail(a, reply, 401, "invalid",
                              "REPORT_DATA is not SHA-384 of the canonical runtime_data",
                              "report_data", ex, f);
        }
    }

    NtVerifyOptions opts = NT_VERIFY_OPTIONS_INIT;
    opts.at = now;
    opts.policy = c.policy->policy;
    /* On the event thread: only what is at hand; KDS is for a worker. Nothing has been spent or
     * recorded yet, so the worker's run starts from the same state. */
    opts.local_only = req->inline_run;
    r = nt_verifier_verify(a->verifier, c.r.report, c.r.report_len, c.r.certs, &opts, &c.verdict);
    if (r == -EREMOTE && req->inline_run) {
        c.requeued = true;
        return NT_WEB_REQUEUE;
    }
    if (r < 0)
        return r;
    nt_metrics_add(a->metrics, "nitride_attestd_chain_cache_total",
                   c.verdict->chain_cached ? "result=\"hit\"" : "result=\"miss\"", 1);
    if (nt_verdict_status(c.verdict) != NT_VERDICT_INVALID) {
        /* Authentic evidence: spend the nonce now (atomically: of two racing copies of one
         * request, one gets this far). */
        cr = nt_challenge_check(a->challenger, c.r.nonce, now, true, NULL);
        if (cr != NT_CHALLENGE_OK) {
            nonce_metric(a, cr);
            if (cr == NT_CHALLENGE_BUSY) {
                nt_web_reply_header(reply, "Retry-After", "1");
                return reply_fail(a, reply, 429, "busy", "too many attestations in flight; retry",
                                  "nonce", NULL, NULL);
            }
            return reply_fail(a, reply, 401, "nonce", "nonce: already used", "nonce", NULL, NULL);
        }
    }
    if (nt_verdict_status(c.verdict) != NT_VERDICT_OK) {
        const NtCheck *f = nt_verdict_first_failure(c.verdict);
        bool policy = nt_verdict_status(c.verdict) == NT_VERDICT_POLICY;
        char msg[300];
        snprintf(msg, sizeof msg, "%s rejected: %s: %s", policy ? "policy" : "evidence",
                 f ? f->name : "?", f && f->detail[0] ? f->detail : "failed");
        /* Only authentic evidence is recorded: forged or junk evidence costs no disk. */
        if (policy)
            record(&c, "policy", f ? f->name : "", msg);
        if (f && (streq(f->name, "certificates") || streq(f->name, "revocation")) &&
            errno_unavailable(f->error)) {
            nt_web_reply_header(reply, "Retry-After", "30");
            return reply_fail(a, reply, 503, "unavailable", msg, f->name, f->expected, f->found);
        }
        return reply_fail(a, reply, 401, policy ? "policy" : "invalid", msg,
                          f ? f->name : "unknown", f ? f->expected : NULL, f ? f->found : NULL);
    }

    /* A TCB below the recommended (but at least the policy's minimum) is a warning. */
    bool below = false;
    if (c.policy->recommended && c.policy->recommended->min_tcb_set) {
        SnpTcb t;
        const char *comp = NULL;
        if (snp_tcb_decode(c.verdict->report.reported_tcb, c.verdict->product, &t) == 0 &&
            !nt_tcb_meets(&t, &c.policy->recommended->min_tcb, c.policy->recommended->min_tcb_set,
                          c.verdict->product, &comp))
            below = true;
    }

    keys_maybe_refresh(a, now);
    NtEarInput in = {
        .verdict = c.verdict,
        .runtime_data = c.r.runtime_data,
        .policy_id = c.policy->id,
        .issuer = a->cfg->issuer,
        .audience = a->cfg->audience,
        .lifetime_s = a->cfg->token_lifetime,
        .now = now,
        .tcb_below_recommended = below,
    };
    _cleanup_free_ char *token = NULL;
    json_t *claims = NULL;
    r = nt_ear_issue(a->keys, &in, &token, &claims);
    if (r < 0) {
        log_error_errno(r, "Issuing a token failed: %m");
        return r;
    }
    const char *status = json_string_value(
        json_object_get(json_object_get(json_object_get(claims, "submods"), "cpu0"), "ear.status"));
    if (!status)
        status = "affirming";
    {
        char labels[64];
        snprintf(labels, sizeof labels, "status=\"%s\"", status);
        nt_metrics_add(a->metrics, "nitride_attestd_tokens_total", labels, 1);
    }
    record(&c, "ok", "", status);
    reply->result = "ok";
    json_t *out = json_pack("{ss ss sO* so}", "token", token, "status", status, "expires",
                            json_object_get(claims, "exp"), "version", version_json());
    json_decref(claims);
    return nt_web_reply_json(reply, 200, out);
}

/* ---- GET endpoints ---- */

static int handle_jwks(void *ud, const NtWebRequest *req, NtWebReply *reply) {
    Attestd *a = ud;
    time_t now = time(NULL);
    keys_maybe_refresh(a, now);
    json_t *jwks = nt_signing_keys_jwks(a->keys, now);
    if (!jwks)
        return -ENOMEM;
    reply->result = "ok";
    nt_web_reply_header(reply, "Cache-Control", "max-age=60");
    return nt_web_reply_json(reply, 200, jwks);
}

static int handle_healthz(void *ud, const NtWebRequest *req, NtWebReply *reply) {
    Attestd *a = ud;
    AttestdPolicySet *ps = attestd_policy_set_ref(a);
    json_t *j = json_pack("{ss si ss}", "status", "ok", "policies", (int)ps->n, "default_policy",
                          ps->default_id);
    attestd_policy_set_unref(a, ps);
    reply->result = "ok";
    return nt_web_reply_json(reply, 200, j);
}

static int handle_metrics(void *ud, const NtWebRequest *req, NtWebReply *reply) {
    Attestd *a = ud;
    nt_metrics_set(a->metrics, "nitride_attestd_replay_cache_entries", NULL,
                   (double)nt_challenger_replay_size(a->challenger, time(NULL)));
    return svc_reply_metrics(a->metrics, reply);
}

int attestd_routes(Attestd *a) {
    int r;
    r = nt_metrics_declare(a->metrics, "nitride_attestd_replay_cache_entries", "gauge",
                           "Nonces remembered by this replica", NULL, 0);
    if (r < 0)
        return r;
    /* All inline: none of them waits for anything but /v1/attest on KDS, and that one asks for a
     * worker then (NT_WEB_REQUEUE). */
    if ((r = nt_web_server_route_inline(a->web, "POST", "/v1/challenge", "challenge",
                                        handle_challenge, a)) < 0 ||
        (r = nt_web_server_route_inline(a->web, "POST", "/v1/attest", "attest", handle_attest, a)) <
            0 ||
        (r = nt_web_server_route_inline(a->web, "GET", "/.well-known/jwks.json", "jwks",
                                        handle_jwks, a)) < 0 ||
        (r = nt_web_server_route_inline(a->web, "GET", "/healthz", "healthz", handle_healthz, a)) <
            0 ||
        (r = nt_web_server_route_inline(a->web, "GET", "/metrics", "metrics", handle_metrics, a)) <
            0)
        return r;
    return 0;
}
